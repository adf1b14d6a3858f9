//! The bus: how fast the three subscribers (delivery, my-page, notifier) get
//! through a backlog with durable offsets, and how far they lag behind a
//! sustained enrollment load.
//!
//! - "fanout/catch-up/W" (criterion): with every subscriber down, a backlog
//!   of 2,000 enrollments over 20 new courses is made (not timed); the time
//!   measured runs from starting the three subscribers until each has
//!   applied the whole log, including the `DeliveryStarted` events delivery
//!   appends as it goes. The throughput is in log events (8,040 per
//!   iteration: 20 CourseRegistered and 20 CourseOpened, and per enrollment
//!   SeatReserved, EnrollmentCompleted, PaymentApproved and DeliveryStarted),
//!   each of which goes through all three subscribers, each committing its
//!   effects with its offset (`Durability::Fsync`, the default). `W` is the
//!   number of workers of delivery and my-page (the notifier is always one).
//! - "fanout/lag" (a plain function, printed once after criterion's groups):
//!   64 concurrent students enroll for 5 seconds while `subscribers()` is
//!   sampled every 50 ms; it prints the enrollment and event rates, each
//!   subscriber's maximum and mean lag (events behind the log), and how long
//!   they took to drain once the load stopped. A lag distribution sampled
//!   during one run is not a duration of repeated runs, so it does not fit
//!   criterion's model.
//!
//! One system per benchmark, in its own temporary directory, with the
//! default configuration except the read-your-writes bound (raised so a
//! wait covers a whole backlog) and the payment bulkhead. Run with
//! `cargo bench --bench fanout`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use sugang_actors::{
    Config, CourseDetails, CourseId, CourseName, EnrollRequest, Fee, MinStudents, PayMethod, StudentName, Sugang,
    TeacherName,
};
use tokio::runtime::Runtime;

const SUBSCRIBERS: [&str; 3] = ["delivery", "mypage", "notifier"];
const BACKLOG: u64 = 2_000;
const COURSES: u64 = 20;
const STUDENTS: u64 = 64;
const LOAD_FOR: Duration = Duration::from_secs(5);
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Gives every enrollment a student of its own, across iterations.
static NEXT_STUDENT: AtomicU64 = AtomicU64::new(0);
/// Gives every course a name of its own, across iterations.
static NEXT_COURSE: AtomicU64 = AtomicU64::new(0);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime")
}

/// A started system over a fresh directory; the directory lives as long as it.
struct Running {
    system: Sugang,
    _dir: tempfile::TempDir,
}

async fn start(workers: u64) -> Running {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = Config::new(dir.path());
    config.payment.bulkhead = config.payment.bulkhead.max(STUDENTS as usize);
    config.bus.max_wait = Duration::from_secs(120);
    for name in ["delivery", "mypage"] {
        config.bus.workers.insert(name.into(), workers);
    }
    let system = Sugang::start(config).await.expect("the system starts");
    Running { system, _dir: dir }
}

/// Registers `n` new courses of unlimited capacity that open with their
/// first student.
async fn courses(system: &Sugang, n: u64) -> Arc<Vec<CourseId>> {
    let teacher = TeacherName::parse("Hong").expect("a teacher name");
    let mut ids = Vec::new();
    for _ in 0..n {
        let details = CourseDetails {
            name: CourseName::parse(&format!("course {}", NEXT_COURSE.fetch_add(1, Ordering::Relaxed)))
                .expect("a course name"),
            fee: Fee::parse(10_000).expect("a fee"),
            text_book: Some(sugang_actors::TextBook::parse("the reader").expect("a textbook")),
            capacity: None,
            min_students: MinStudents::default(),
        };
        ids.push(system.register_course(teacher.clone(), details).await.expect("the course registers").value.id);
    }
    Arc::new(ids)
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

/// `count` enrollments by `STUDENTS` concurrent students, or as many as fit
/// before `until`; courses round-robin. Returns how many completed.
async fn enroll(system: &Sugang, courses: &Arc<Vec<CourseId>>, count: u64, until: Option<Instant>) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let students: Vec<_> = (0..STUDENTS)
        .map(|_| {
            let (system, courses, next) = (system.clone(), courses.clone(), next.clone());
            tokio::spawn(async move {
                let mut done = 0;
                while until.is_none_or(|until| Instant::now() < until) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let course = courses[(i % courses.len() as u64) as usize];
                    system.enroll(request(course)).await.expect("the enrollment completes");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut done = 0;
    for student in students {
        done += student.await.expect("a student task");
    }
    done
}

async fn set_down(system: &Sugang, down: bool) {
    for name in SUBSCRIBERS {
        assert_eq!(system.set_subscriber_down(name, down).await, Ok(true), "switch {name}");
    }
}

/// Waits until every subscriber has applied the whole log and the log has
/// stopped growing (delivery appends its own events).
async fn caught_up(system: &Sugang) {
    loop {
        let last = system.last_seq();
        for name in SUBSCRIBERS {
            assert!(system.wait_for(name, last).await, "{name} did not reach seq {last}");
        }
        if system.last_seq() == last {
            return;
        }
    }
}

/// One iteration: a backlog made with the subscribers down (not timed),
/// then the time they take to apply it once started.
async fn catch_up(system: &Sugang, backlog: u64) -> Duration {
    set_down(system, true).await;
    let before = system.last_seq();
    let ids = courses(system, COURSES).await;
    assert_eq!(enroll(system, &ids, backlog, None).await, backlog);
    let started = Instant::now();
    set_down(system, false).await;
    caught_up(system).await;
    let took = started.elapsed();
    assert_eq!(system.last_seq() - before, events_per_backlog(backlog), "the events of one backlog");
    took
}

fn events_per_backlog(backlog: u64) -> u64 {
    2 * COURSES + 4 * backlog
}

/// Whether criterion runs the benchmarks once as tests (`cargo test --benches`).
fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn catch_up_group(c: &mut Criterion) {
    let runtime = runtime();
    let backlog = if test_mode() { 50 } else { BACKLOG };
    let mut group = c.benchmark_group("fanout");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(events_per_backlog(backlog)));
    for workers in [1, 4] {
        let running = runtime.block_on(start(workers));
        group.bench_with_input(BenchmarkId::new("catch-up", workers), &workers, |b, _| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += catch_up(&running.system, backlog).await;
                    }
                    total
                })
            });
        });
        runtime.block_on(running.system.shutdown());
    }
    group.finish();
}

criterion_group!(benches, catch_up_group);

/// Lag per subscriber, sampled under a sustained enrollment load.
async fn lag_under_load(load_for: Duration) {
    let running = start(1).await;
    let system = &running.system;
    let ids = courses(system, COURSES).await;
    let first = system.last_seq();
    let started = Instant::now();
    let until = started + load_for;
    let load = {
        let (system, ids) = (system.clone(), ids.clone());
        tokio::spawn(async move { enroll(&system, &ids, u64::MAX, Some(until)).await })
    };
    let mut lags: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    while Instant::now() < until {
        for status in system.subscribers().await {
            lags.entry(status.name).or_default().push(status.lag);
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let enrolled = load.await.expect("the load task");
    let loaded = started.elapsed();
    let events = system.last_seq() - first;
    let drain = Instant::now();
    caught_up(system).await;
    let drained = drain.elapsed();

    println!("fanout/lag: {STUDENTS} concurrent students for {loaded:.1?}, samples every {SAMPLE_EVERY:?}");
    println!(
        "  {enrolled} enrollments ({:.0}/s), {events} events logged ({:.0}/s)",
        enrolled as f64 / loaded.as_secs_f64(),
        events as f64 / loaded.as_secs_f64()
    );
    for (name, samples) in &lags {
        let max = samples.iter().copied().max().unwrap_or(0);
        let mean = samples.iter().sum::<u64>() as f64 / samples.len().max(1) as f64;
        println!("  {name:<9} lag: max {max} events, mean {mean:.1} events over {} samples", samples.len());
    }
    println!("  drained {drained:.1?} after the load stopped");
    running.system.shutdown().await;
}

fn main() {
    benches();
    // Positional arguments filter benchmarks by name, as criterion does.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if !std::env::args().any(|a| a == "--list")
        && (filters.is_empty() || filters.iter().any(|f| "fanout/lag".contains(f.as_str())))
    {
        let load_for = if test_mode() { Duration::from_millis(200) } else { LOAD_FOR };
        runtime().block_on(lag_under_load(load_for));
    }
    Criterion::default().configure_from_args().final_summary();
}
