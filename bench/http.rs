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
use sugang_actors::{Config, Sugang};
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

fn stop(runtime: &Runtime, served: Arc<Served>) {
    match Arc::try_unwrap(served) {
        Ok(served) => runtime.block_on(served.stop()),
        Err(_) => panic!("a client task still holds the server"),
    }
}

criterion_group!(benches, http_group);
criterion_main!(benches);
