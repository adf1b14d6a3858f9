//! Acceptance tests of the one restart policy (issue 12) outside the entity
//! supervisors, driven through the [`Sugang`] facade over a real store:
//!
//! 1. the payment actor crash-loops (it panics on its next messages): it is
//!    restarted up to the intensity, then held down — no restart meanwhile,
//!    enrollments refused at once with a retry-after, the admin tree says
//!    until when — and after the backoff it runs and serves again;
//! 2. a subscriber worker crash-loops (its projection panics on its next
//!    events): likewise held down while its read model lags, then it
//!    catches up with every event exactly once;
//! 3. a child that keeps failing after its hold-downs escalates, and the root
//!    fail-stops the process (exit code 70): run in a child process.
//!
//! Every wait is a poll of a condition with a deadline; the polls during a
//! hold-down check at each step that nothing moved.

mod common;
use common::request;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use sugang_actors::{
    CommandError, Config, CourseDetails, CourseId, CourseName, EnrollStatus, EnrollmentFilter, Fee, MinStudents,
    Notification, PageRequest, RestartPolicy, SubscriberStatus, Sugang, TeacherName, TreeNode,
};
use sugang_storage::Durability;
use tokio::time::Instant;

const ALL: PageRequest = PageRequest { number: 0, size: 100_000 };
const MAX_RESTARTS: usize = 3;
const BACKOFF: Duration = Duration::from_secs(2);

/// Relaxed durability (these tests are about supervision) and a restart
/// policy small enough to watch: 3 restarts in 10 s, then 2 s down.
fn config(dir: &Path) -> Config {
    let mut config = Config::new(dir);
    config.durability = Durability::Relaxed { flush_every_ms: 100 };
    config.restart = RestartPolicy {
        max_restarts: MAX_RESTARTS,
        within: Duration::from_secs(10),
        backoff: BACKOFF,
        max_backoff: Duration::from_secs(5),
        escalate_after: Some(5),
    };
    config
}

async fn register(system: &Sugang, name: &str) -> CourseId {
    let details = CourseDetails {
        name: CourseName::parse(name).unwrap(),
        fee: Fee::parse(1_000).unwrap(),
        text_book: None,
        capacity: None,
        min_students: MinStudents::default(),
    };
    let teacher = TeacherName::parse("Hong").unwrap();
    system.register_course(teacher, details).await.expect("register course").value.id
}

fn payment_node(system: &Sugang) -> TreeNode {
    system.tree().children.into_iter().find(|n| n.name == "payment").expect("payment in the tree")
}

async fn subscriber(system: &Sugang, name: &str) -> SubscriberStatus {
    system.subscribers().await.into_iter().find(|s| s.name == name).expect("a known subscriber")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_payment_actor_is_held_down_refuses_at_once_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(config(dir.path())).await.unwrap();
    let course = register(&system, "economics").await;
    system.enroll(request(course, "before")).await.expect("enrollments work before the fault");

    // Each incarnation panics on its first message (a restarted one sends
    // itself one at start): one panic more than the intensity allows.
    system.faults().panic_payment(MAX_RESTARTS as u32 + 1);
    assert!(system.payment_snapshot().await.is_err(), "the payment actor panics on the snapshot ask");
    wait_until("the payment actor to be held down", Duration::from_secs(5), || {
        let held = payment_node(&system).retry_after_ms.is_some();
        async move { held }
    })
    .await;
    let node = payment_node(&system);
    assert_eq!(node.restarts, MAX_RESTARTS as u64, "restarted up to the intensity, then held down: {node:?}");
    assert!(!node.alive, "held down, it is not running: {node:?}");
    assert!(node.held_down_until.is_some(), "the tree says until when: {node:?}");

    // While it is held down: no restart, and every enrollment is refused at
    // once with the time left, before anything is reserved or charged.
    let mut refused = 0;
    while payment_node(&system).retry_after_ms.is_some() {
        let started = Instant::now();
        match system.enroll(request(course, &format!("held{refused}"))).await {
            Err(CommandError::Unavailable { reason, retry_after }) => {
                assert!(reason.contains("held down"), "{reason}");
                assert!(retry_after > Duration::ZERO && retry_after <= BACKOFF, "{retry_after:?}");
            }
            // The hold-down ended between the check and the ask.
            Ok(_) if payment_node(&system).retry_after_ms.is_none() => break,
            other => panic!("an enrollment while payment is held down: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_millis(200), "refused at once, took {:?}", started.elapsed());
        refused += 1;
        let node = payment_node(&system);
        assert!(
            node.restarts == MAX_RESTARTS as u64 || node.retry_after_ms.is_none(),
            "no restart during the hold-down: {node:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused >= 5, "the hold-down lasted a while ({refused} refusals)");
    assert_eq!(system.gateway().ledger().charged, 1, "nothing charged while held down");

    // After the backoff it runs again and serves.
    let mut attempt = 0;
    wait_until("an enrollment to go through after the hold-down", Duration::from_secs(5), || {
        attempt += 1;
        let (system, student) = (system.clone(), format!("after{attempt}"));
        async move { system.enroll(request(course, &student)).await.is_ok() }
    })
    .await;
    let node = payment_node(&system);
    assert!(node.alive && node.retry_after_ms.is_none() && node.held_down_until.is_none(), "{node:?}");
    assert_eq!(node.restarts, MAX_RESTARTS as u64 + 1, "the start that ended the hold-down is its one more restart");
    let snapshot = system.payment_snapshot().await.expect("the payment actor answers again");
    assert_eq!(snapshot.state, "closed");
    assert_eq!(system.gateway().ledger().charged, 2);
    let completed = EnrollmentFilter { status: Some(EnrollStatus::Completed), ..Default::default() };
    assert_eq!(system.enrollments(&completed, ALL).unwrap().total, 2);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_subscriber_is_held_down_lags_and_catches_up_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(config(dir.path())).await.unwrap();
    let course = register(&system, "poetry").await;
    for i in 0..3 {
        system.enroll(request(course, &format!("early{i}"))).await.unwrap();
    }
    assert!(system.wait_for("notifier", system.last_seq()).await, "the notifier keeps up before the fault");

    system.faults().panic_subscriber("notifier", MAX_RESTARTS as u32 + 1);
    system.enroll(request(course, "trigger")).await.unwrap();
    wait_until("the notifier's worker to be held down", Duration::from_secs(5), || {
        let system = system.clone();
        async move { subscriber(&system, "notifier").await.retry_after_ms.is_some() }
    })
    .await;
    let held = subscriber(&system, "notifier").await;
    assert_eq!(held.restarts, MAX_RESTARTS as u64, "restarted up to the intensity, then held down: {held:?}");
    assert!(held.held_down_until.is_some(), "{held:?}");

    // While it is held down its read model lags; nothing restarts it, and
    // the other read models keep up.
    for i in 0..5 {
        system.enroll(request(course, &format!("later{i}"))).await.unwrap();
    }
    let last = system.last_seq();
    assert!(system.wait_for("mypage", last).await, "mypage keeps up");
    let status = subscriber(&system, "notifier").await;
    assert!(status.retry_after_ms.is_some(), "still held down after the later enrollments: {status:?}");
    assert!(status.offset < last, "the notifier lags: {status:?}");
    loop {
        let status = subscriber(&system, "notifier").await;
        if status.retry_after_ms.is_none() {
            break;
        }
        assert_eq!(status.restarts, MAX_RESTARTS as u64, "no restart during the hold-down: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // After the backoff it catches up, every event exactly once.
    wait_until("the notifier to catch up", Duration::from_secs(10), || {
        let system = system.clone();
        async move { system.wait_for("notifier", system.last_seq()).await }
    })
    .await;
    let status = subscriber(&system, "notifier").await;
    assert_eq!(status.restarts, MAX_RESTARTS as u64 + 1, "{status:?}");
    assert!(status.held_down_until.is_none() && status.retry_after_ms.is_none(), "{status:?}");

    let completed: Vec<u64> = system
        .enrollments(&EnrollmentFilter { status: Some(EnrollStatus::Completed), ..Default::default() }, ALL)
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.id.get())
        .collect();
    assert_eq!(completed.len(), 3 + 1 + 5);
    let stored = system.notifications(None, None, ALL).unwrap().items;
    let mut per_enrollment: HashMap<u64, usize> = HashMap::new();
    for n in stored.iter().filter(|n| n.kind == "ENROLLMENT_COMPLETED") {
        *per_enrollment.entry(n.apply_id.expect("an enrollment's notification")).or_default() += 1;
    }
    for id in &completed {
        assert_eq!(per_enrollment.get(id), Some(&1), "enrollment {id} notified exactly once: {per_enrollment:?}");
    }
    let file = std::fs::read_to_string(dir.path().join("notifications.log")).expect("notifications.log exists");
    let mut written: Vec<Notification> = file.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let lines = written.len();
    written.sort_by_key(|n| n.id);
    written.dedup_by_key(|n| n.id);
    assert_eq!(written.len(), lines, "notifications.log repeats a notification");
    assert_eq!(lines, stored.len(), "notifications.log holds every stored notification");
    system.shutdown().await;
}

const ESCALATE_DIR: &str = "SUGANG_TEST_ESCALATE_DIR";
const ESCALATE_WHO: &str = "SUGANG_TEST_ESCALATE_WHO";

/// The child half of the escalation tests: a no-op unless a parent set the
/// environment. Makes the payment actor, a course or the notifier fail for
/// good under a policy that escalates after one hold-down, and must not
/// outlive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_child() {
    let (Ok(dir), Ok(who)) = (std::env::var(ESCALATE_DIR), std::env::var(ESCALATE_WHO)) else { return };
    let mut config = config(Path::new(&dir));
    config.restart = RestartPolicy {
        max_restarts: 2,
        within: Duration::from_secs(10),
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(200),
        escalate_after: Some(1),
    };
    config.courses.restart = config.restart;
    let system = Sugang::start(config).await.unwrap();
    let course = register(&system, "doomed").await;
    match who.as_str() {
        "payment" => {
            system.faults().panic_payment(u32::MAX);
            let _ = system.payment_snapshot().await;
        }
        "course" => {
            system.faults().panic_course_always(course.get());
            // A held-down course restarts on the next ask after its hold-down.
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut i = 0;
            while Instant::now() < deadline {
                let _ = system.enroll(request(course, &format!("victim{i}"))).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                i += 1;
            }
        }
        name => {
            system.faults().panic_subscriber(name, u32::MAX);
            system.enroll(request(course, "trigger")).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    panic!("the process outlived the escalation of {who}");
}

fn escalates(who: &str) {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["escalation_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(ESCALATE_DIR, dir.path())
        .env(ESCALATE_WHO, who)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run the child");
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child's status") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(40) {
            let _ = child.kill();
            panic!("the child did not stop within 40 s after {who} kept failing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(70), "the root fail-stops the process when {who} escalates: {status:?}");
    // 2 restarts, a 100 ms hold-down, 2 restarts more, then the escalation.
    assert!(started.elapsed() < Duration::from_secs(15), "it escalated in {:?}", started.elapsed());
}

#[test]
fn a_payment_actor_failing_after_its_hold_downs_stops_the_process() {
    escalates("payment");
}

#[test]
fn a_course_failing_after_its_hold_downs_stops_the_process() {
    escalates("course");
}

#[test]
fn a_subscriber_failing_after_its_hold_downs_stops_the_process() {
    escalates("notifier");
}
