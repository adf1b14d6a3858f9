//! Acceptance tests of the actor system (issue 3), driven through the
//! [`Sugang`] facade over a real store in a temporary directory: the race for
//! the last seats, supervision (restart, restart intensity, hold-down),
//! passivation, the payment breaker and the void of a timed-out charge, and
//! saga crash recovery with a child process that aborts mid-saga.
//!
//! Every wait is a poll of a condition with a deadline, never a bare sleep.

mod common;
use common::{config, details, request};

use std::future::Future;
use std::time::Duration;

use sugang_actors::{
    BreakerConfig, CommandError, Config, CourseId, EnrollStatus, EnrollmentFilter, GatewayFaults, PageRequest,
    PayStatus, SagaStep, Sugang, SupervisorSnapshot, TeacherName,
};
use sugang_storage::Durability;
use tokio::time::Instant;

const ALL: PageRequest = PageRequest { number: 0, size: 100_000 };

async fn register(system: &Sugang, name: &str, fee: i64, capacity: Option<i64>) -> CourseId {
    let teacher = TeacherName::parse("Hong").unwrap();
    system.register_course(teacher, details(name, fee, capacity)).await.expect("register course").value.id
}

fn student_count(system: &Sugang, course: CourseId) -> u32 {
    system.course(course).unwrap().expect("course exists").student_count
}

fn completed_in(system: &Sugang, course: CourseId) -> usize {
    let filter =
        EnrollmentFilter { course_id: Some(course.get()), status: Some(EnrollStatus::Completed), ..Default::default() };
    system.enrollments(&filter, ALL).unwrap().total
}

fn supervisor(system: &Sugang, name: &str) -> SupervisorSnapshot {
    let tree = system.tree();
    let node = tree.children.into_iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no {name} in the tree"));
    node.supervisor.unwrap_or_else(|| panic!("{name} is not a supervisor"))
}

/// Polls `condition` every 20 ms until it holds; fails the test after `limit`.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- 1. the race for the last seats -------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_students_race_for_a_hundred_seats() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.courses.max_pending = 4096;
    config.enrollments.max_pending = 4096;
    let system = Sugang::start(config).await.unwrap();
    let fee = 1_000;
    let course = register(&system, "korean", fee, Some(100)).await;

    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let system = system.clone();
            tokio::spawn(async move { system.enroll(request(course, &format!("student{i:04}"))).await })
        })
        .collect();
    let (mut completed, mut full, mut other) = (0, 0, Vec::new());
    for task in tasks {
        match task.await.unwrap() {
            Ok(done) => {
                assert_eq!(done.value.status, EnrollStatus::Completed);
                completed += 1;
            }
            Err(CommandError::Conflict(message)) if message.contains("full") => full += 1,
            Err(e) => other.push(e),
        }
    }
    assert!(other.is_empty(), "unexpected refusals ({}): {:?}", other.len(), &other[..other.len().min(5)]);
    assert_eq!((completed, full), (100, 900));
    assert_eq!(student_count(&system, course), 100);
    assert_eq!(completed_in(&system, course), 100);

    let payments = system.payments(None, ALL).unwrap();
    assert_eq!(payments.total, 100, "one payment per completed enrollment");
    assert!(payments.items.iter().all(|p| p.status == PayStatus::Approved), "every payment approved");
    let ledger = system.gateway().ledger();
    assert_eq!(ledger.charged, 100, "nothing charged for a refusal: {ledger:?}");
    assert_eq!(ledger.charged_amount, 100 * fee as u64);
    assert_eq!(ledger.refunded + ledger.voided, 0, "no charge to take back: {ledger:?}");
    system.shutdown().await;
}

// ---- 2. supervision -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_course_restarts_and_one_that_keeps_panicking_is_held_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.courses.restart.max_restarts = 3;
    config.courses.restart.within = Duration::from_secs(10);
    config.courses.restart.backoff = Duration::from_secs(1);
    let system = Sugang::start(config).await.unwrap();

    let a = register(&system, "panicky", 1_000, Some(50)).await;
    for student in ["Kim", "Lee"] {
        system.enroll(request(a, student)).await.expect("enroll into A before the fault");
    }
    let others: Vec<CourseId> = {
        let mut others = Vec::new();
        for i in 0..10 {
            others.push(register(&system, &format!("steady{i}"), 1_000, None).await);
        }
        others
    };

    system.faults().panic_course_once(a.get());
    let into_others: Vec<_> = (0..200)
        .map(|i| {
            let (system, course) = (system.clone(), others[i % others.len()]);
            tokio::spawn(async move { system.enroll(request(course, &format!("other{i:03}"))).await })
        })
        .collect();
    let into_a: Vec<_> = (0..3)
        .map(|i| {
            let system = system.clone();
            tokio::spawn(async move { system.enroll(request(a, &format!("during{i}"))).await })
        })
        .collect();
    for task in into_others {
        let done = task.await.unwrap().expect("an enrollment into another course");
        assert_eq!(done.value.status, EnrollStatus::Completed);
    }
    for task in into_a {
        // The ask that met the panic is redelivered to the restarted actor;
        // whatever the outcome, it must leave the books straight (checked below).
        if let Err(e) = task.await.unwrap() {
            assert!(matches!(e, CommandError::Unavailable { .. }), "{e:?}");
        }
    }
    for course in &others {
        assert_eq!(student_count(&system, *course), 20);
    }
    let courses = supervisor(&system, "courses");
    assert!(courses.restarts_total >= 1, "the restart of A is counted: {courses:?}");
    let count = student_count(&system, a);
    assert!(count >= 2, "A's earlier enrollments survive the restart");
    assert_eq!(count as usize, completed_in(&system, a), "A's studentCount matches its completed enrollments");
    let again = system.enroll(request(a, "Kim")).await.unwrap_err();
    assert!(matches!(&again, CommandError::Conflict(m) if m.contains("already")), "A remembers its holders: {again:?}");
    system.enroll(request(a, "Park")).await.expect("A accepts enrollments again");
    assert_eq!(student_count(&system, a), count + 1);

    // A course that panics on every message stops being restarted.
    let b = register(&system, "doomed", 1_000, None).await;
    let restarts_before = supervisor(&system, "courses").restarts_total;
    system.faults().panic_course_always(b.get());
    let mut held_down = None;
    for attempt in 0..20 {
        match system.enroll(request(b, &format!("victim{attempt}"))).await {
            Err(CommandError::Unavailable { reason, retry_after }) if reason.contains("held down") => {
                held_down = Some(retry_after);
                break;
            }
            Err(CommandError::Unavailable { .. }) => {}
            other => panic!("an ask to a panicking course: {other:?}"),
        }
    }
    let retry_after = held_down.expect("B is held down after its restart intensity");
    assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1), "{retry_after:?}");
    let courses = supervisor(&system, "courses");
    let restarts = courses.restarts_total - restarts_before;
    assert!(restarts <= 3 + 1, "B restarted {restarts} times, beyond the limit of 3 (+1)");
    assert!(courses.held_down.iter().any(|h| h.id == b.get()), "B is listed as held down: {courses:?}");
    let refused = system.enroll(request(b, "impatient")).await.unwrap_err();
    assert!(matches!(refused, CommandError::Unavailable { .. }), "{refused:?}");
    assert_eq!(supervisor(&system, "courses").restarts_total - restarts_before, restarts, "no restart while held down");
    assert_eq!(student_count(&system, b), 0, "no seat held in B");

    system.faults().heal_course(b.get());
    wait_until("B's backoff to elapse", Duration::from_secs(5), || {
        let listed = supervisor(&system, "courses").held_down.iter().any(|h| h.id == b.get());
        async move { !listed }
    })
    .await;
    let done = system.enroll(request(b, "finally")).await.expect("B works again after heal and backoff");
    assert_eq!(done.value.status, EnrollStatus::Completed);
    assert_eq!(student_count(&system, b), 1);
    system.shutdown().await;
}

// ---- 3. passivation -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_passivate_and_reactivate_with_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.courses.idle = Duration::from_millis(200);
    config.enrollments.idle = Duration::from_millis(200);
    let system = Sugang::start(config).await.unwrap();

    let course = register(&system, "history", 2_000, Some(3)).await;
    let kim = system.enroll(request(course, "Kim")).await.unwrap().value.id;
    let lee = system.enroll(request(course, "Lee")).await.unwrap().value.id;
    system.cancel(lee).await.unwrap();
    system.enroll(request(course, "Park")).await.unwrap();
    assert_eq!(student_count(&system, course), 2);

    wait_until("every course and enrollment actor to passivate", Duration::from_secs(5), || {
        let (courses, classes) = (supervisor(&system, "courses"), supervisor(&system, "classes"));
        async move { courses.live + courses.passivating + classes.live + classes.passivating == 0 }
    })
    .await;
    let passivated = supervisor(&system, "courses").passivations_total;
    assert!(passivated >= 1, "the course actor passivated");

    // The next requests reactivate both kinds from storage.
    let again = system.enroll(request(course, "Kim")).await.unwrap_err();
    assert!(matches!(&again, CommandError::Conflict(m) if m.contains("already")), "{again:?}");
    system.enroll(request(course, "Choi")).await.expect("a third seat");
    let full = system.enroll(request(course, "Jung")).await.unwrap_err();
    assert!(matches!(&full, CommandError::Conflict(m) if m.contains("full")), "capacity 3 remembered: {full:?}");
    assert_eq!(student_count(&system, course), 3);
    let canceled = system.cancel(kim).await.expect("the reactivated enrollment cancels");
    assert_eq!(canceled.value.status, EnrollStatus::Canceled);
    assert_eq!(student_count(&system, course), 2);
    assert_eq!(completed_in(&system, course), 2);
    assert!(supervisor(&system, "courses").activations_total >= 2, "the course actor was activated again");
    system.shutdown().await;
}

// ---- 4. the payment breaker and the void of a timed-out charge ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_a_down_gateway_fails_fast_and_closes_after_heal() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.payment.timeout = Duration::from_millis(300);
    config.payment.breaker = BreakerConfig {
        failure_threshold: 3,
        reset_timeout: Duration::from_millis(500),
        max_reset_timeout: Duration::from_secs(2),
    };
    let system = Sugang::start(config).await.unwrap();
    let course = register(&system, "math", 3_000, Some(10)).await;

    system.set_gateway_faults(GatewayFaults { latency_ms: 0, failure_rate: 0.0, down: true });
    for i in 0..3 {
        let e = system.enroll(request(course, &format!("early{i}"))).await.unwrap_err();
        assert!(matches!(e, CommandError::Unavailable { .. }), "{e:?}");
    }
    let snapshot = system.payment_snapshot().await.unwrap();
    assert_eq!(snapshot.state, "open", "{snapshot:?}");
    let seq_when_open = system.last_seq();

    for i in 0..5 {
        let started = Instant::now();
        let e = system.enroll(request(course, &format!("late{i}"))).await.unwrap_err();
        let took = started.elapsed();
        let CommandError::Unavailable { retry_after, .. } = e else { panic!("{e:?}") };
        assert!(took < Duration::from_millis(50), "fail fast while open, took {took:?}");
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(2), "{retry_after:?}");
    }
    assert_eq!(student_count(&system, course), 0, "a refused enrollment holds no seat");
    let reserved_while_open = system
        .store()
        .events()
        .read::<sugang_actors::Event>(seq_when_open + 1, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.event, sugang_actors::Event::SeatReserved { .. }))
        .count();
    assert_eq!(reserved_while_open, 0, "while the breaker is open, no seat is even reserved");
    assert_eq!(system.payments(None, ALL).unwrap().total, 0, "no payment for a refused enrollment");
    assert_eq!(system.enrollments(&EnrollmentFilter::default(), ALL).unwrap().total, 0);
    assert_eq!(system.gateway().ledger().charged, 0);

    system.set_gateway_faults(GatewayFaults::default());
    let mut attempt = 0;
    wait_until("an enrollment to go through after the reset timeout", Duration::from_secs(10), || {
        attempt += 1;
        let (system, student) = (system.clone(), format!("after{attempt}"));
        async move { system.enroll(request(course, &student)).await.is_ok() }
    })
    .await;
    assert_eq!(system.payment_snapshot().await.unwrap().state, "closed");
    assert_eq!(student_count(&system, course), 1);
    assert_eq!(system.gateway().ledger().charged, 1);
    system.shutdown().await;
}

/// A failed charge and the void that compensates it are one failure of one
/// enrollment: with a threshold of 5, four failed enrollments (whose voids
/// fail and are retried meanwhile) leave the breaker closed, the fifth opens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_counts_each_failed_enrollment_once_not_its_void() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.payment.breaker = BreakerConfig {
        failure_threshold: 5,
        reset_timeout: Duration::from_secs(30),
        max_reset_timeout: Duration::from_secs(60),
    };
    config.payment.refund_backoff = Duration::from_millis(20);
    config.payment.refund_backoff_max = Duration::from_millis(50);
    let system = Sugang::start(config).await.unwrap();
    let course = register(&system, "statistics", 3_000, None).await;

    system.set_gateway_faults(GatewayFaults { latency_ms: 0, failure_rate: 0.0, down: true });
    for i in 0..4 {
        let e = system.enroll(request(course, &format!("failed{i}"))).await.unwrap_err();
        assert!(
            matches!(&e, CommandError::Unavailable { reason, .. } if !reason.contains("circuit breaker is open")),
            "enrollment {i} reached the gateway: {e:?}"
        );
    }
    // Every void is owed and being retried against the down gateway; for a
    // while (several retry rounds), the breaker stays closed at 4 failures.
    wait_until("the four voids to be owed", Duration::from_secs(5), || {
        let system = system.clone();
        async move { system.payment_snapshot().await.is_ok_and(|s| s.refunds_owed == 4) }
    })
    .await;
    let watch_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < watch_until {
        let snapshot = system.payment_snapshot().await.unwrap();
        assert_eq!((snapshot.state, snapshot.failures), ("closed", 4), "{snapshot:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let e = system.enroll(request(course, "fifth")).await.unwrap_err();
    assert!(matches!(e, CommandError::Unavailable { .. }), "{e:?}");
    let snapshot = system.payment_snapshot().await.unwrap();
    assert_eq!((snapshot.state, snapshot.failures), ("open", 5), "the fifth failed enrollment opens it: {snapshot:?}");
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_that_answers_too_late_is_voided() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.payment.timeout = Duration::from_millis(200);
    config.payment.refund_backoff = Duration::from_millis(100);
    config.payment.refund_backoff_max = Duration::from_millis(400);
    let system = Sugang::start(config).await.unwrap();
    let course = register(&system, "science", 5_000, None).await;

    system.set_gateway_faults(GatewayFaults { latency_ms: 600, failure_rate: 0.0, down: false });
    let e = system.enroll(request(course, "Kim")).await.unwrap_err();
    assert!(matches!(e, CommandError::Unavailable { .. }), "{e:?}");
    assert_eq!(student_count(&system, course), 0, "the seat is given back");
    assert_eq!(system.payments(None, ALL).unwrap().total, 0, "no payment recorded");
    let gateway = system.gateway().clone();
    wait_until("the late charge to be taken back at the gateway", Duration::from_secs(10), || {
        let ledger = gateway.ledger();
        async move { ledger.charged == 0 && ledger.refunded + ledger.voided == 1 }
    })
    .await;
    // The gateway knows the charge by the saga's reservation key; the first
    // in a fresh directory is 2^48 (the refused enrollment took no id).
    let status = format!("{:?}", gateway.charge_of(1 << 48));
    assert!(status.contains("Refunded") || status.contains("Voided"), "{status}");

    system.set_gateway_faults(GatewayFaults::default());
    wait_until("the owed void to be settled", Duration::from_secs(10), || {
        let system = system.clone();
        async move { system.payment_snapshot().await.is_ok_and(|s| s.refunds_owed == 0) }
    })
    .await;
    system.enroll(request(course, "Lee")).await.expect("a healthy gateway charges again");
    let ledger = gateway.ledger();
    assert_eq!((ledger.charged, ledger.charged_amount), (1, 5_000), "{ledger:?}");
    system.shutdown().await;
}

/// A course's seats are the index of its enrollments (layout 2): its
/// listing, filtered by status or not, and its pages' totals count its
/// canceled enrollments (their seats kept as canceled) and never the seat a
/// saga holds while its fee is being charged (a hold sorts above them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_course_listing_counts_its_canceled_enrollments_and_never_a_hold_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.payment.timeout = Duration::from_secs(30);
    let system = Sugang::start(config).await.unwrap();
    let course = register(&system, "history", 100, None).await;
    let mut ids = Vec::new();
    for student in ["a", "b", "c"] {
        ids.push(system.enroll(request(course, student)).await.unwrap().value.id);
    }
    system.cancel(ids[1]).await.unwrap();

    // d's saga holds a seat while the gateway takes its time.
    system.set_gateway_faults(GatewayFaults { latency_ms: 3_000, failure_rate: 0.0, down: false });
    let holding = tokio::spawn({
        let system = system.clone();
        async move { system.enroll(request(course, "d")).await }
    });
    wait_until("d's seat to be held", Duration::from_secs(10), || {
        let counts = system.seat_counts(course).unwrap();
        async move { counts.pending == 1 }
    })
    .await;

    let listed = |status: Option<EnrollStatus>, page: PageRequest| {
        let filter = EnrollmentFilter { course_id: Some(course.get()), status, ..Default::default() };
        let paged = system.enrollments(&filter, page).unwrap();
        (paged.items.iter().map(|e| e.id).collect::<Vec<_>>(), paged.total)
    };
    assert_eq!(listed(None, ALL), (ids.clone(), 3));
    assert_eq!(listed(Some(EnrollStatus::Completed), ALL), (vec![ids[0], ids[2]], 2));
    assert_eq!(listed(Some(EnrollStatus::Canceled), ALL), (vec![ids[1]], 1));
    let second = PageRequest { number: 1, size: 1 };
    assert_eq!(listed(None, second), (vec![ids[1]], 3));
    assert_eq!(listed(Some(EnrollStatus::Completed), second), (vec![ids[2]], 2));
    let last = PageRequest { number: 3, size: 1 };
    assert_eq!(listed(None, last), (vec![], 3), "the hold is no page of the listing");

    system.set_gateway_faults(GatewayFaults::default());
    let d = holding.await.unwrap().expect("d is enrolled once the gateway answers");
    let mut all = ids.clone();
    all.push(d.value.id);
    assert_eq!(listed(None, ALL), (all, 4));
    system.shutdown().await;
}

/// Two cancellations of one enrollment at once: both answer CANCELED, the
/// fee is refunded once, the seat is given back once (the student may
/// enroll again, and the course lists both enrollments).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_canceled_twice_at_once_is_refunded_and_released_once() {
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(config(dir.path())).await.unwrap();
    let course = register(&system, "music", 700, Some(1)).await;
    let first = system.enroll(request(course, "a")).await.unwrap().value.id;
    let cancels: Vec<_> = (0..2)
        .map(|_| {
            let system = system.clone();
            tokio::spawn(async move { system.cancel(first).await })
        })
        .collect();
    for cancel in cancels {
        let done = cancel.await.unwrap().expect("a cancellation is answered");
        assert_eq!(done.value.status, EnrollStatus::Canceled);
    }
    assert_eq!(student_count(&system, course), 0);
    let gateway = system.gateway().clone();
    wait_until("the refund", Duration::from_secs(10), || {
        let ledger = gateway.ledger();
        async move { ledger.refunded == 1 }
    })
    .await;
    let ledger = gateway.ledger();
    assert_eq!((ledger.charged, ledger.refunded, ledger.voided, ledger.charged_amount), (0, 1, 0, 0), "{ledger:?}");
    assert_eq!(system.payment(first).unwrap().map(|p| p.status), Some(PayStatus::Canceled));
    let again = system.enroll(request(course, "a")).await.expect("the one seat is free again").value.id;
    let filter = EnrollmentFilter { course_id: Some(course.get()), ..Default::default() };
    let listed = system.enrollments(&filter, ALL).unwrap();
    assert_eq!((listed.items.iter().map(|e| e.id).collect::<Vec<_>>(), listed.total), (vec![first, again], 2));
    system.shutdown().await;
}

/// A saga whose compensation the course cannot take at that moment (its
/// actor keeps failing) still gives its seat back once the course recovers,
/// without waiting for the next start: the seat it holds is its marker, and
/// its actor, kept live by it, retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_the_course_refuses_for_a_while_is_retried_until_the_seat_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.payment.timeout = Duration::from_secs(30);
    config.ask_timeout = Duration::from_millis(500);
    config.courses.restart.backoff = Duration::from_millis(100);
    let system = Sugang::start(config).await.unwrap();
    let course = register(&system, "drama", 100, Some(1)).await;

    // The gateway is slow, then refuses: the saga compensates (releases its
    // seat) while its course panics on every message.
    system.set_gateway_faults(GatewayFaults { latency_ms: 1_000, failure_rate: 0.0, down: true });
    let saga = tokio::spawn({
        let system = system.clone();
        async move { system.enroll(request(course, "a")).await }
    });
    wait_until("a's seat to be held", Duration::from_secs(10), || {
        let counts = system.seat_counts(course).unwrap();
        async move { counts.pending == 1 }
    })
    .await;
    system.faults().panic_course_always(course.get());
    let refused = saga.await.unwrap();
    assert!(refused.is_err(), "{refused:?}");
    system.faults().heal_course(course.get());
    system.set_gateway_faults(GatewayFaults::default());

    wait_until("the held seat to be given back", Duration::from_secs(20), || {
        let counts = system.seat_counts(course).unwrap();
        async move { counts.pending == 0 }
    })
    .await;
    wait_until("the course to take a new student", Duration::from_secs(20), || {
        let system = system.clone();
        async move { system.enroll(request(course, "b")).await.is_ok() }
    })
    .await;
    system.shutdown().await;
}

/// A student's shipments and my-page views are found through their
/// enrollments (layout 2): while the read models lag behind a new
/// enrollment, every page's total is the records the pages can show (the
/// one not written yet is in neither), and it joins both once written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_students_shipments_and_views_page_consistently_while_the_read_models_lag() {
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(config(dir.path())).await.unwrap();
    let mut courses = Vec::new();
    for i in 0..4 {
        courses.push(register(&system, &format!("course{i}"), 100, None).await);
    }
    for course in &courses[..3] {
        system.enroll(request(*course, "s")).await.unwrap();
    }
    system.enroll(request(courses[0], "t")).await.unwrap();
    let seq = system.last_seq();
    for name in ["delivery", "mypage"] {
        assert!(system.wait_for(name, seq).await);
    }
    for name in ["delivery", "mypage"] {
        system.faults().slow_subscriber(name, Duration::from_secs(3));
    }
    let late = system.enroll(request(courses[3], "s")).await.unwrap().value.id;
    let pages = |size: usize| {
        let mut shown = (Vec::new(), Vec::new());
        let mut totals = (Vec::new(), Vec::new());
        for number in 0..4 {
            let page = PageRequest { number, size };
            let d = system.deliveries(None, Some("s"), page).unwrap();
            let v = system.student_views(Some("s"), page).unwrap();
            totals.0.push(d.total);
            totals.1.push(v.total);
            shown.0.extend(d.items.into_iter().map(|d| d.student.as_str().to_owned()));
            shown.1.extend(v.items.into_iter().map(|v| v.student.as_str().to_owned()));
        }
        (shown.0.len(), shown.1.len(), totals)
    };
    let (deliveries, views, totals) = pages(2);
    if system.delivery(late.get()).unwrap().is_none() {
        assert_eq!(deliveries, 3);
        assert!(totals.0.iter().all(|t| *t == 3), "{totals:?}");
    }
    assert!(totals.0.iter().all(|t| *t == deliveries), "every page's total is what the pages show: {totals:?}");
    assert!(totals.1.iter().all(|t| *t == views), "every page's total is what the pages show: {totals:?}");
    for name in ["delivery", "mypage"] {
        system.faults().slow_subscriber(name, Duration::ZERO);
    }
    let seq = system.last_seq();
    for name in ["delivery", "mypage"] {
        assert!(system.wait_for(name, seq).await);
    }
    let (deliveries, views, totals) = pages(3);
    assert_eq!((deliveries, views), (4, 4));
    assert_eq!(totals, (vec![4; 4], vec![4; 4]));
    system.shutdown().await;
}

// ---- 5. saga crash recovery ---------------------------------------------

const CRASH_DIR: &str = "SUGANG_TEST_CRASH_DIR";
const CRASH_STEP: &str = "SUGANG_TEST_CRASH_STEP";

fn step_name(step: SagaStep) -> &'static str {
    match step {
        SagaStep::SeatReserved => "seatReserved",
        SagaStep::PaymentApproved => "paymentApproved",
        SagaStep::Completed => "completed",
        SagaStep::CancelCommitted => "cancelCommitted",
        SagaStep::PromotionReserved => "promotionReserved",
        SagaStep::PromotionCharged => "promotionCharged",
    }
}

/// The child half of the crash tests: a no-op unless a parent set the
/// environment. Enrolls into a course of one seat (after completing one
/// enrollment, for a crash during its cancel) and must abort at the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let (Ok(dir), Ok(step)) = (std::env::var(CRASH_DIR), std::env::var(CRASH_STEP)) else { return };
    let step = SagaStep::parse(&step).expect("a saga step");
    let system = Sugang::start(Config::new(dir)).await.unwrap();
    let course = register(&system, "crash", 7_000, Some(1)).await;
    if step == SagaStep::CancelCommitted {
        let done = system.enroll(request(course, "Kim")).await.unwrap();
        system.faults().crash_after(Some(step));
        let _ = system.cancel(done.value.id).await;
    } else {
        system.faults().crash_after(Some(step));
        let _ = system.enroll(request(course, "Kim")).await;
    }
    panic!("the child was to abort at {step:?}");
}

async fn crash_and_recover(step: SagaStep) {
    use std::os::unix::process::ExitStatusExt;

    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR, dir.path())
        .env(CRASH_STEP, step_name(step))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run the child");
    assert_eq!(status.signal(), Some(6), "the child aborts (SIGABRT) at {step:?}: {status:?}");

    let system = Sugang::start(config(dir.path())).await.expect("restart after the crash");
    let course = CourseId::parse(1).unwrap();
    let completed = completed_in(&system, course);
    assert_eq!(student_count(&system, course) as usize, completed, "studentCount matches completed enrollments");
    let payments = system.payments(None, ALL).unwrap();
    for payment in payments.items.iter().filter(|p| p.status == PayStatus::Approved) {
        let enrollment = system.enrollment(payment.enrollment_id).unwrap();
        assert_eq!(
            enrollment.map(|e| e.status),
            Some(EnrollStatus::Completed),
            "an approved payment without a completed enrollment: {payment:?}"
        );
    }
    let enrollments = system.enrollments(&EnrollmentFilter::default(), ALL).unwrap().items;
    match step {
        SagaStep::SeatReserved | SagaStep::PaymentApproved => {
            assert!(enrollments.is_empty(), "an interrupted enrollment leaves no resource: {enrollments:?}");
            assert_eq!(payments.total, 0, "and no payment");
        }
        SagaStep::Completed => {
            assert_eq!(enrollments.len(), 1, "the committed enrollment survives");
            assert_eq!(enrollments[0].status, EnrollStatus::Completed);
            assert_eq!(system.payment(enrollments[0].id).unwrap().map(|p| p.status), Some(PayStatus::Approved));
        }
        SagaStep::CancelCommitted => {
            assert_eq!(enrollments.len(), 1);
            assert_eq!(enrollments[0].status, EnrollStatus::Canceled);
            let id = enrollments[0].id;
            wait_until("the owed refund to resume and finish", Duration::from_secs(10), || {
                let status = system.payment(id).unwrap().map(|p| p.status);
                async move { status == Some(PayStatus::Canceled) }
            })
            .await;
        }
        SagaStep::PromotionReserved | SagaStep::PromotionCharged => {
            unreachable!("promotions crash in actors/tests/waitlist.rs")
        }
    }
    // No orphan seat: the one seat is free unless an enrollment holds it.
    let next = system.enroll(request(course, "Lee")).await;
    if completed == 1 {
        let e = next.unwrap_err();
        assert!(matches!(&e, CommandError::Conflict(m) if m.contains("full")), "{e:?}");
    } else {
        let next = next.expect("the seat is free again").value;
        assert_eq!(next.status, EnrollStatus::Completed);
        let expected = enrollments.len() as u64 + 1;
        assert_eq!(next.id.get(), expected, "the interrupted saga took no enrollment id");
    }
    for (i, e) in enrollments.iter().enumerate() {
        assert_eq!(e.id.get(), i as u64 + 1, "enrollment ids are dense after a crash: {enrollments:?}");
    }
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_seat_is_reserved_is_compensated() {
    crash_and_recover(SagaStep::SeatReserved).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_charge_is_compensated() {
    crash_and_recover(SagaStep::PaymentApproved).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_completion_keeps_the_enrollment() {
    crash_and_recover(SagaStep::Completed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_cancel_commits_still_refunds() {
    crash_and_recover(SagaStep::CancelCommitted).await;
}

/// Fail-stop: after a failed commit the state on disk is unknown, so the
/// command is refused, the store says why it stopped, and every later write is
/// refused too (the service then drains and exits to restart from disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_refuses_the_command_and_stops_every_later_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.durability = Durability::Fsync;
    let system = Sugang::start(config).await.unwrap();
    let course = register(&system, "korean", 10_000, Some(5)).await;
    for student in ["Kim", "Lee"] {
        system.enroll(request(course, student)).await.unwrap();
    }
    let mut failure = system.store().failure();
    assert!(failure.borrow_and_update().is_none());

    system.disk_faults().fail_next_writes(1);
    let refused = system.enroll(request(course, "Park")).await.unwrap_err();
    assert!(matches!(refused, CommandError::Internal(_) | CommandError::Unavailable { .. }), "{refused:?}");
    let reason = failure.borrow_and_update().clone().expect("the store says why it stopped");
    assert!(reason.contains("injected write fault"), "{reason}");

    // Nothing commits any more, on this course or another.
    let other = system.enroll(request(course, "Choi")).await.unwrap_err();
    assert!(matches!(other, CommandError::Internal(_) | CommandError::Unavailable { .. }), "{other:?}");
    let mut failed_register = false;
    for _ in 0..3 {
        let teacher = TeacherName::parse("Hong").unwrap();
        if system.register_course(teacher, details("math", 1_000, None)).await.is_err() {
            failed_register = true;
            break;
        }
    }
    assert!(failed_register, "a new course was registered after the store stopped");
    assert_eq!(completed_in(&system, course), 2);
}

/// Once `shutdown` returns, the data directory is free: a next start opens
/// it at once, even right after enrollments whose subscribers and
/// background tasks were still winding down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_the_directory_opens_again_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let system = Sugang::start(config(dir.path())).await.expect("starts on the directory just released");
        let course = register(&system, &format!("course {round}"), 1_000, None).await;
        let enrolled: Vec<_> = (0..20)
            .map(|i| {
                let system = system.clone();
                tokio::spawn(async move { system.enroll(request(course, &format!("s{round}-{i}"))).await })
            })
            .collect();
        for handle in enrolled {
            handle.await.unwrap().expect("enrolled");
        }
        system.shutdown().await;
    }
}

/// A confirmation whose commit outlasts the course ask (a storage stall:
/// a slow disk, or a cluster's log electing a leader) still commits: the
/// saga asks again and answers with the enrollment, instead of telling the
/// student it failed while it completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_slower_than_the_ask_is_asked_again_and_answered() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.ask_timeout = Duration::from_millis(400);
    let system = Sugang::start(config).await.unwrap();
    let course = register(&system, "korean", 100, Some(10)).await;
    // The charge takes 300 ms; meanwhile the disk turns slow for a moment.
    system.set_gateway_faults(GatewayFaults { latency_ms: 300, failure_rate: 0.0, down: false });
    let enrolling = {
        let system = system.clone();
        tokio::spawn(async move { system.enroll(request(course, "kim")).await })
    };
    // The confirmation's group starts its flush at ~300 ms and is durable
    // at ~1.3 s, after the first ask (400 ms) and the second (800 ms) ran
    // out; later flushes are quick again, so the third ask is answered.
    tokio::time::sleep(Duration::from_millis(150)).await;
    system.disk_faults().slow_flushes(Duration::from_millis(1000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    system.disk_faults().slow_flushes(Duration::ZERO);
    let enrolled = enrolling.await.unwrap().expect("the enrollment completed: its answer says so");
    assert_eq!(enrolled.value.status, EnrollStatus::Completed);
    assert_eq!(student_count(&system, course), 1);
    system.shutdown().await;
}
