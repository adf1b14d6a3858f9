//! The HTTP front through the real router: the real server
//! (`sugang_http::serve`, the whole tower stack) on a loopback port, driven
//! by reqwest with keep-alive connections.
//!
//! One group, "http", counting requests per second:
//! - `enroll/N`: `POST /classes` by N concurrent clients (1 and 64), each
//!   request a new student, courses round-robin over 100 unlimited ones. The
//!   answer comes once the saga completed and every step is fsync'd
//!   (`Durability::Fsync`, the default).
//! - `course/N`: `GET /courses/{id}` by N concurrent clients: the same
//!   stack, a read of one course record and its rendering, nothing written.
//!
//! The difference between the two is what an enrollment costs beyond HTTP.
//!
//! A second group, "pages", times the web pages of issue 15 over a catalog
//! of 10,000 courses (target: a catalog page in under 200 ms on the server):
//! - `catalog/first`, `catalog/last`: `GET /` and `GET /?page=199`, a page of
//!   50 courses rendered as HTML;
//! - `catalog/search`: `GET /?q=…`, a search by name or teacher;
//! - `live/enroll`: from the moment an enrollment is answered until the seat
//!   count it changed arrives on an open `GET /events/courses` stream, what
//!   an open catalog page waits for (target: within a second).
//!
//! `bench/load.sh` measures the same route with wrk and 100 connections
//! against a bare axum server. The payment bulkhead is raised so that no
//! enrollment is shed; everything else is the default configuration. Run
//! with `cargo bench --bench http`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use reqwest::StatusCode;
use serde_json::json;
use sugang_actors::{Capacity, Config, CourseDetails, CourseName, Fee, MinStudents, Sugang, TeacherName};
use sugang_http::{Auth, ServeConfig, ServeError};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const CLIENTS: [u64; 2] = [1, 64];
const COURSES: u64 = 100;

/// Gives every enrollment a student of its own, across tasks and samples.
static NEXT_STUDENT: AtomicU64 = AtomicU64::new(0);

/// A served system over a fresh directory; stopping it drains and flushes.
struct Served {
    addr: SocketAddr,
    client: reqwest::Client,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), ServeError>>,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = Config::new(dir.path().join("data"));
        config.payment.bulkhead = config.payment.bulkhead.max(1024);
        let sugang = Sugang::start(config).await.expect("the system starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(sugang_http::serve(listener, sugang, ServeConfig::new(Auth::open()), async move {
            let _ = stopped.await;
        }));
        Served { addr, client: reqwest::Client::new(), stop, server, _dir: dir }
    }

    /// A served system with `n` courses registered through the facade, on
    /// a relaxed journal: the pages group times reads, not the disk.
    async fn with_catalog(n: u64) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = Config::new(dir.path().join("data"));
        config.durability = sugang_storage::Durability::Relaxed { flush_every_ms: 50 };
        let sugang = Sugang::start(config).await.expect("the system starts");
        for i in 0..n {
            let teacher = TeacherName::parse(&format!("teacher-{}", i % 500)).expect("a teacher");
            let details = CourseDetails {
                name: CourseName::parse(&format!("course {i}")).expect("a name"),
                fee: Fee::parse(10_000).expect("a fee"),
                text_book: None,
                capacity: Some(Capacity::parse(40).expect("a capacity")),
                min_students: MinStudents::default(),
            };
            sugang.register_course(teacher, details).await.expect("a course");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(sugang_http::serve(listener, sugang, ServeConfig::new(Auth::open()), async move {
            let _ = stopped.await;
        }));
        Served { addr, client: reqwest::Client::new(), stop, server, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn courses(&self, n: u64) -> Vec<u64> {
        let mut ids = Vec::new();
        for i in 0..n {
            let body = json!({"name": format!("course {i}"), "teacher": "Hong", "fee": 10000, "textBook": "book"});
            let response = self.client.post(self.url("/courses")).json(&body).send().await.expect("an answer");
            assert_eq!(response.status(), StatusCode::CREATED);
            let course: serde_json::Value = response.json().await.expect("a course");
            ids.push(course["id"].as_u64().expect("an id"));
        }
        ids
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.expect("the server task").expect("the server stops cleanly");
    }
}

/// How many of `iters` requests client `who` of `n` sends.
fn share(iters: u64, n: u64, who: u64) -> u64 {
    iters / n + u64::from(who < iters % n)
}

/// What one request is.
#[derive(Clone, Copy)]
enum Route {
    Enroll,
    Course,
}

async fn one(served: &Arc<Served>, route: Route, course: u64) {
    let response = match route {
        Route::Enroll => {
            let student = NEXT_STUDENT.fetch_add(1, Ordering::Relaxed);
            let body = json!({"courseId": course, "student": format!("student-{student}"), "addr": "Seoul"});
            served.client.post(served.url("/classes")).json(&body).send().await
        }
        Route::Course => served.client.get(served.url(&format!("/courses/{course}"))).send().await,
    };
    let response = response.expect("the server answers");
    let status = response.status();
    response.bytes().await.expect("a body");
    assert!(status.is_success(), "{status}");
}

/// `iters` requests by `n` concurrent clients.
async fn drive(served: &Arc<Served>, courses: &Arc<Vec<u64>>, route: Route, n: u64, iters: u64) -> Duration {
    let started = Instant::now();
    let clients: Vec<_> = (0..n)
        .map(|who| {
            let (served, courses) = (served.clone(), courses.clone());
            tokio::spawn(async move {
                for i in 0..share(iters, n, who) {
                    one(&served, route, courses[((who + i * n) % courses.len() as u64) as usize]).await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("a client task");
    }
    started.elapsed()
}

fn http_group(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let mut group = c.benchmark_group("http");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for (name, route) in [("enroll", Route::Enroll), ("course", Route::Course)] {
        for n in CLIENTS {
            let served = Arc::new(runtime.block_on(Served::start()));
            let courses = Arc::new(runtime.block_on(served.courses(COURSES)));
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.iter_custom(|iters| runtime.block_on(drive(&served, &courses, route, n, iters)));
            });
            stop(&runtime, served);
        }
    }
    group.finish();
}

/// How many courses the pages group serves.
const CATALOG: u64 = 10_000;

/// `iters` sequential GETs of `path`, each answered 200 with the whole body read.
async fn get_pages(served: &Served, path: &str, iters: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..iters {
        let response = served.client.get(served.url(path)).send().await.expect("the server answers");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.bytes().await.expect("a body");
    }
    started.elapsed()
}

/// `iters` enrollments, each timed from its answer to the moment the seat
/// count it changed arrives on the open seat stream.
async fn live_updates(served: &Served, stream: &mut reqwest::Response, iters: u64) -> Duration {
    let mut waited = Duration::ZERO;
    let mut pending = String::new();
    for _ in 0..iters {
        let student = NEXT_STUDENT.fetch_add(1, Ordering::Relaxed);
        let course = 1 + student % CATALOG;
        let body = json!({"courseId": course, "student": format!("student-{student}")});
        let response = served.client.post(served.url("/classes")).json(&body).send().await.expect("an answer");
        assert_eq!(response.status(), StatusCode::CREATED);
        let answered = Instant::now();
        let wanted = format!("\"id\":{course},");
        loop {
            if let Some(at) = pending.find(&wanted) {
                pending.drain(..at + wanted.len());
                break;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
                .await
                .expect("the seat count arrives within 5 s")
                .expect("the stream reads")
                .expect("the stream stays open");
            pending.push_str(&String::from_utf8_lossy(&chunk));
        }
        waited += answered.elapsed();
    }
    waited
}

fn pages_group(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let mut group = c.benchmark_group("pages");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    let served = runtime.block_on(Served::with_catalog(CATALOG));
    for (name, path) in
        [("catalog/first", "/"), ("catalog/last", "/?page=199"), ("catalog/search", "/?q=course%209999")]
    {
        group.bench_function(name, |b| b.iter_custom(|iters| runtime.block_on(get_pages(&served, path, iters))));
    }
    let mut stream = runtime.block_on(async {
        let stream = served.client.get(served.url("/events/courses")).send().await.expect("the stream opens");
        assert_eq!(stream.status(), StatusCode::OK);
        stream
    });
    group.bench_function("live/enroll", |b| {
        b.iter_custom(|iters| runtime.block_on(live_updates(&served, &mut stream, iters)))
    });
    group.finish();
    drop(stream);
    runtime.block_on(served.stop());
}

fn stop(runtime: &Runtime, served: Arc<Served>) {
    match Arc::try_unwrap(served) {
        Ok(served) => runtime.block_on(served.stop()),
        Err(_) => panic!("a client task still holds the server"),
    }
}

criterion_group!(benches, http_group, pages_group);
criterion_main!(benches);
