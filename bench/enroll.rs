//! The enrollment saga's throughput, and what an ask to a course actor costs.
//!
//! Two groups:
//! - "enroll": `N/…` completed enrollments per second with N concurrent
//!   students (1, 64, 1,024) over 100 unlimited courses, durable
//!   (`Durability::Fsync`, the default). Each enrollment is the whole saga:
//!   seat reserved, payment approved by the simulated gateway (no latency),
//!   seat confirmed, each step committed before it is answered. Every student
//!   is new (one enrollment each), and courses are taken round-robin.
//! - "ask": one caller, one ask at a time. `course` is the facade's
//!   `modify_course` with an empty patch: an existence read, the registry
//!   lookup, the ask, a `decide` that yields no events (so nothing is
//!   written), and the record read back. `bare` is ractor's `call_t!` to an
//!   actor that answers at once. The target: `course` at most 2x
//!   `bare`.
//!
//! The payment bulkhead is raised to 1,024 so that no enrollment is shed;
//! everything else is the default configuration.
//!
//! One system per benchmark, in its own temporary directory, started before
//! measuring and shut down after. Run with `cargo bench --bench enroll`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sugang_actors::{
    Config, CourseDetails, CourseId, CourseName, CoursePatch, EnrollRequest, Fee, MinStudents, PayMethod, StudentName,
    Sugang, TeacherName,
};
use tokio::runtime::Runtime;

const STUDENTS: [u64; 3] = [1, 64, MOST_STUDENTS];
const MOST_STUDENTS: u64 = 1024;
const COURSES: u64 = 100;

/// Gives every enrollment a student of its own, across tasks and samples.
static NEXT_STUDENT: AtomicU64 = AtomicU64::new(0);

/// How many of `iters` enrollments student `who` of `n` does.
fn share(iters: u64, n: u64, who: u64) -> u64 {
    iters / n + u64::from(who < iters % n)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime")
}

/// A started system over a fresh directory; the directory lives as long as it.
struct Running {
    system: Sugang,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = Config::new(dir.path());
    // The default bulkhead (256 gateway calls in flight) sheds at 1,024
    // concurrent students, which would measure fail-fast, not enrollment.
    config.payment.bulkhead = config.payment.bulkhead.max(MOST_STUDENTS as usize);
    let system = Sugang::start(config).await.expect("the system starts");
    Running { system, _dir: dir }
}

/// Registers `n` courses of unlimited capacity.
async fn courses(system: &Sugang, n: u64) -> Vec<CourseId> {
    let teacher = TeacherName::parse("Hong").expect("a teacher name");
    let mut ids = Vec::new();
    for i in 0..n {
        let details = CourseDetails {
            name: CourseName::parse(&format!("course {i}")).expect("a course name"),
            fee: Fee::parse(10_000).expect("a fee"),
            text_book: None,
            capacity: None,
            min_students: MinStudents::default(),
        };
        ids.push(system.register_course(teacher.clone(), details).await.expect("the course registers").value.id);
    }
    ids
}

fn request(course_id: CourseId) -> EnrollRequest {
    let student = NEXT_STUDENT.fetch_add(1, Ordering::Relaxed);
    EnrollRequest {
        course_id,
        student: StudentName::parse(&format!("student-{student}")).expect("a student name"),
        expected_fee: None,
        pay_method: PayMethod::parse(None).expect("the default pay method"),
        pay_account: None,
        addr: Some("Seoul".into()),
        telephone: None,
    }
}

/// `iters` enrollments by `n` concurrent students, courses round-robin.
async fn enroll(system: &Sugang, courses: &Arc<Vec<CourseId>>, n: u64, iters: u64) -> Duration {
    let started = Instant::now();
    let students: Vec<_> = (0..n)
        .map(|who| {
            let (system, courses) = (system.clone(), courses.clone());
            tokio::spawn(async move {
                for i in 0..share(iters, n, who) {
                    let course = courses[((who + i * n) % courses.len() as u64) as usize];
                    system.enroll(request(course)).await.expect("the enrollment completes");
                }
            })
        })
        .collect();
    for student in students {
        student.await.expect("a student task");
    }
    started.elapsed()
}

fn enroll_group(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("enroll");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for n in STUDENTS {
        let running = runtime.block_on(start());
        let ids = Arc::new(runtime.block_on(courses(&running.system, COURSES)));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| runtime.block_on(enroll(&running.system, &ids, n, iters)));
        });
        runtime.block_on(running.system.shutdown());
    }
    group.finish();
}

/// The bare ractor baseline: an actor that answers at once.
struct Echo;

enum EchoMsg {
    Echo(u64, RpcReplyPort<u64>),
}

impl Actor for Echo {
    type Msg = EchoMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<EchoMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<EchoMsg>, message: EchoMsg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        match message {
            EchoMsg::Echo(x, reply) => {
                // The caller gave up only if the benchmark is already failing.
                let _ = reply.send(x);
            }
        }
        Ok(())
    }
}

async fn course_asks(system: &Sugang, id: CourseId, iters: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..iters {
        system.modify_course(id, CoursePatch::default()).await.expect("the course answers");
    }
    started.elapsed()
}

async fn bare_asks(echo: &ActorRef<EchoMsg>, iters: u64) -> Duration {
    let started = Instant::now();
    for x in 0..iters {
        let answer = ractor::call_t!(echo, EchoMsg::Echo, 1000, x).expect("the echo answers");
        assert_eq!(answer, x);
    }
    started.elapsed()
}

fn ask_group(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("ask");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));

    let running = runtime.block_on(start());
    let id = runtime.block_on(courses(&running.system, 1))[0];
    group.bench_function("course", |b| {
        b.iter_custom(|iters| runtime.block_on(course_asks(&running.system, id, iters)));
    });
    runtime.block_on(running.system.shutdown());

    let (echo, handle) = runtime.block_on(Actor::spawn(None, Echo, ())).expect("the echo actor starts");
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| runtime.block_on(bare_asks(&echo, iters)));
    });
    echo.stop(None);
    runtime.block_on(handle).expect("the echo actor stops");
    group.finish();
}

criterion_group!(benches, enroll_group, ask_group);
criterion_main!(benches);
