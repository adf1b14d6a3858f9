//! Dense ids and complete read-your-writes (issue 14), through the
//! [`Sugang`] facade over a real store in a temporary directory:
//!
//! 1. a refused enrollment (stale fee, declined card, full course) takes no
//!    id: enrollment, payment and delivery ids count 1, 2, 3;
//! 2. ids continue at max + 1 across a restart (enrollments and courses);
//! 3. notification ids count 1, 2, 3 … with no gap across a restart, and a
//!    `notifications.log` ahead of the table is cut back to it;
//! 4. `wait_for(read model, seq)` covers the events other subscribers emit
//!    in reaction: with the delivery subscriber slowed down, my-page shows
//!    the started delivery as soon as the wait answers.
//!
//! Every wait is a poll of a condition with a deadline, never a bare sleep.

mod common;
use common::{config, details, request};

use std::time::Duration;

use sugang_actors::{CommandError, CourseId, EnrollRequest, EnrollmentFilter, Fee, PageRequest, Sugang, TeacherName};
use tokio::time::Instant;

const ALL: PageRequest = PageRequest { number: 0, size: 100_000 };
/// The simulated gateway declines this card.
const DECLINED_CARD: &str = "4000000000000002";

async fn register(system: &Sugang, name: &str, fee: i64, capacity: Option<i64>) -> CourseId {
    let teacher = TeacherName::parse("Hong").unwrap();
    system.register_course(teacher, details(name, fee, capacity)).await.expect("register course").value.id
}

async fn enroll(system: &Sugang, course: CourseId, student: &str) -> u64 {
    system.enroll(request(course, student)).await.expect("enrolled").value.id.get()
}

/// Polls `condition` every 20 ms until it holds; fails the test after 10 s.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_enrollment_takes_no_id() {
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(config(dir.path())).await.unwrap();
    let korean = register(&system, "korean", 12_000, Some(1)).await;
    let math = register(&system, "math", 8_000, None).await;

    // The seed's scenario: a client that saw the old fee is refused …
    let stale = EnrollRequest { expected_fee: Some(Fee::parse(10_000).unwrap()), ..request(korean, "Kim") };
    let refused = system.enroll(stale).await.unwrap_err();
    assert!(matches!(&refused, CommandError::Conflict(m) if m.contains("fee")), "{refused:?}");
    // … and the next enrollment is 1.
    assert_eq!(enroll(&system, korean, "Kim").await, 1);

    let declined = EnrollRequest { pay_account: Some(DECLINED_CARD.into()), ..request(math, "Lee") };
    let refused = system.enroll(declined).await.unwrap_err();
    assert!(matches!(refused, CommandError::PaymentDeclined(_)), "{refused:?}");
    assert_eq!(enroll(&system, math, "Lee").await, 2);

    let full = system.enroll(request(korean, "Park")).await.unwrap_err();
    assert!(matches!(&full, CommandError::Conflict(m) if m.contains("full")), "{full:?}");
    assert_eq!(enroll(&system, math, "Park").await, 3);

    let enrollments: Vec<u64> =
        system.enrollments(&EnrollmentFilter::default(), ALL).unwrap().items.iter().map(|e| e.id.get()).collect();
    assert_eq!(enrollments, [1, 2, 3]);
    let payments: Vec<u64> = system.payments(None, ALL).unwrap().items.iter().map(|p| p.enrollment_id.get()).collect();
    assert_eq!(payments, [1, 2, 3], "a payment carries its enrollment's id");
    wait_until("three deliveries", || system.deliveries(None, None, ALL).unwrap().total == 3).await;
    let deliveries: Vec<u64> = system.deliveries(None, None, ALL).unwrap().items.iter().map(|d| d.id).collect();
    assert_eq!(deliveries, [1, 2, 3], "a delivery carries its enrollment's id");

    // The enrollment the seed then cancels is 1, and its refund goes through.
    let canceled = system.cancel(sugang_actors::EnrollmentId::parse(1).unwrap()).await.unwrap();
    assert_eq!(canceled.value.student.as_str(), "Kim");
    let gateway = system.gateway().clone();
    wait_until("the refund of enrollment 1", || gateway.ledger().refunded == 1).await;
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_continue_at_max_plus_one_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(config(dir.path())).await.unwrap();
    let course = register(&system, "korean", 10_000, None).await;
    assert_eq!(course.get(), 1);
    for (i, student) in ["Kim", "Lee", "Park"].into_iter().enumerate() {
        assert_eq!(enroll(&system, course, student).await, i as u64 + 1);
    }
    system.shutdown().await;

    let system = Sugang::start(config(dir.path())).await.unwrap();
    assert_eq!(enroll(&system, course, "Choi").await, 4, "enrollment ids do not jump across a restart");
    assert_eq!(register(&system, "math", 1_000, None).await.get(), 2, "course ids do not jump either");
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_ids_count_from_one_without_gaps_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(config(dir.path())).await.unwrap();
    let course = register(&system, "korean", 10_000, None).await;
    for student in ["Kim", "Lee"] {
        enroll(&system, course, student).await;
    }
    let first = system.cancel(sugang_actors::EnrollmentId::parse(1).unwrap()).await.unwrap();
    assert!(system.wait_for("notifier", first.seq).await);
    system.shutdown().await;

    let system = Sugang::start(config(dir.path())).await.unwrap();
    let mut last = 0;
    for student in ["Park", "Choi", "Jung"] {
        let done = system.enroll(request(course, student)).await.unwrap();
        last = done.seq;
    }
    assert!(system.wait_for("notifier", last).await);
    // 5 enrollments × (completed, payment approved, delivery started), the
    // course opening, and a cancellation × (canceled, delivery canceled,
    // payment refunded).
    wait_until("every notification", || system.notifications(None, None, ALL).unwrap().total == 5 * 3 + 1 + 3).await;

    let notifications = system.notifications(None, None, ALL).unwrap().items;
    let ids: Vec<u64> = notifications.iter().map(|n| n.id).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "notification ids are 1..N: {notifications:#?}");
    let file = std::fs::read_to_string(dir.path().join("notifications.log")).unwrap();
    let logged: Vec<u64> = file
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["id"].as_u64().unwrap())
        .collect();
    assert_eq!(logged, ids, "notifications.log holds each notification once, in order");
    system.shutdown().await;
}

/// `?after=` covers consequences: my-page answers only once the delivery
/// subscriber's `DeliveryStarted` for the enrollment is in it, even when the
/// delivery subscriber is slow (a fault knob makes it so, deterministically).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_waits_for_the_delivery_a_subscriber_started() {
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(config(dir.path())).await.unwrap();
    let course = register(&system, "korean", 10_000, None).await;
    system.faults().slow_subscriber("delivery", Duration::from_millis(300));
    for i in 0..5 {
        let student = format!("student{i}");
        let done = system.enroll(request(course, &student)).await.unwrap();
        assert!(system.wait_for("mypage", done.seq).await, "my-page caught up within the bound");
        let view = system.student_view(done.value.id.get()).unwrap().expect("the student's view exists");
        assert_eq!(
            view.delivery_status.map(|s| s.as_str()),
            Some("STARTED"),
            "my-page answered before the delivery it reflects: {view:?}"
        );
        let notified = system.wait_for("notifier", done.seq).await;
        assert!(notified);
        let kinds: Vec<String> =
            system.notifications(Some(&student), None, ALL).unwrap().items.into_iter().map(|n| n.kind).collect();
        assert!(kinds.iter().any(|k| k == "DELIVERY_STARTED"), "the delivery's notification is there too: {kinds:?}");
    }
    system.faults().slow_subscriber("delivery", Duration::ZERO);
    system.shutdown().await;
}

/// A `notifications.log` ahead of the table (a crash lost the table's last
/// commits, under relaxed durability, while the file kept their lines) is
/// cut back at start: the ids given again are written again, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifications_log_ahead_of_the_table_is_cut_back() {
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(config(dir.path())).await.unwrap();
    let course = register(&system, "korean", 10_000, None).await;
    let done = system.enroll(request(course, "Kim")).await.unwrap();
    assert!(system.wait_for("notifier", done.seq).await);
    let highest = system.notifications(None, None, ALL).unwrap().items.last().expect("notifications").id;
    system.shutdown().await;

    let path = dir.path().join("notifications.log");
    let mut file = std::fs::read_to_string(&path).unwrap();
    let last: serde_json::Value = serde_json::from_str(file.lines().last().unwrap()).unwrap();
    for id in highest + 1..=highest + 3 {
        let mut lost = last.clone();
        lost["id"] = id.into();
        lost["message"] = "a notification the table lost".into();
        file.push_str(&format!("{lost}\n"));
    }
    std::fs::write(&path, file).unwrap();

    let system = Sugang::start(config(dir.path())).await.unwrap();
    let mut last = 0;
    for student in ["Lee", "Park"] {
        last = system.enroll(request(course, student)).await.unwrap().seq;
    }
    assert!(system.wait_for("notifier", last).await);
    let stored = system.notifications(None, None, ALL).unwrap().items;
    let logged: Vec<serde_json::Value> =
        std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let stored: Vec<serde_json::Value> = stored.iter().map(|n| serde_json::to_value(n).unwrap()).collect();
    assert_eq!(logged, stored, "notifications.log holds exactly the table's notifications");
    system.shutdown().await;
}
