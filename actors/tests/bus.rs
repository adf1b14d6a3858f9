//! Acceptance tests of the durable pub/sub (issue 4), driven through the
//! [`Sugang`] facade over a real store in a temporary directory:
//!
//! 1. delivery stopped while enrollments complete and are canceled, then
//!    started: shipments match the enrollments one for one;
//! 2. the subscribers SIGKILLed (a child process) while they catch up, again
//!    and again: every view equals what the events imply, and every
//!    notification exists exactly once, in the table and in
//!    `notifications.log`;
//! 3. delivery and my-page as 4 workers: every event handled once per worker
//!    (counted through the metrics, in a child process of its own), every
//!    effect applied once, per-enrollment order kept;
//! 4. a property test: after a random workload the views equal a
//!    recomputation from the aggregates' own records;
//! 5. retention trims the log below every subscriber's offset, and a stopped
//!    subscriber holds the log until it has caught up.
//!
//! Every wait is a poll of a condition with a deadline, never a bare sleep
//! (the one exception, in the retention test, says why).

mod common;
use common::{config, request};

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use sugang_actors::{
    CommandError, Config, CourseDetails, CourseId, CourseName, CoursePatch, Delivery, DeliveryStatus, EnrollStatus,
    EnrollmentFilter, EnrollmentId, Event, Fee, InstructorView, MinStudents, Notification, PageRequest, PayStatus,
    Payment, Schedule, StudentName, StudentView, Sugang, TeacherName, TextBook,
};
use sugang_storage::{Committed, Store, StoreOptions};
use tokio::time::Instant;

const ALL: PageRequest = PageRequest { number: 0, size: 1_000_000 };
const SUBSCRIBERS: [&str; 3] = ["delivery", "mypage", "notifier"];
/// The simulated gateway always declines this card.
const DECLINED_CARD: &str = "4000000000000002";

// ---- helpers ------------------------------------------------------------

fn details(name: &str, fee: i64, min_students: i64) -> CourseDetails {
    CourseDetails {
        name: CourseName::parse(name).unwrap(),
        fee: Fee::parse(fee).unwrap(),
        text_book: Some(TextBook::parse(&format!("{name} reader")).unwrap()),
        capacity: None,
        min_students: MinStudents::parse(min_students).unwrap(),
    }
}

async fn register(system: &Sugang, name: &str, fee: i64, min_students: i64) -> CourseId {
    let teacher = TeacherName::parse("Hong").unwrap();
    system.register_course(teacher, details(name, fee, min_students)).await.expect("register course").value.id
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

/// Runs `job(i)` for every `i` below `count`, at most `concurrency` at a
/// time, and returns the results in `i` order.
async fn run_all<T, F, Fut>(count: usize, concurrency: usize, job: F) -> Vec<T>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (job, next) = (job.clone(), next.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return done;
                    }
                    done.push((i, job(i).await));
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, result)| result).collect()
}

/// Enrolls `count` students round-robin over `courses` (student `i` is
/// `{prefix}{i}`); every enrollment must complete.
async fn enroll_all(system: &Sugang, courses: &[CourseId], prefix: &str, count: usize) -> Vec<EnrollmentId> {
    let (system, courses, prefix) = (system.clone(), courses.to_vec(), prefix.to_owned());
    run_all(count, 32, move |i| {
        let (system, course, student) = (system.clone(), courses[i % courses.len()], format!("{prefix}{i}"));
        async move {
            let done = system.enroll(request(course, &student)).await.unwrap_or_else(|e| panic!("{student}: {e}"));
            assert_eq!(done.value.status, EnrollStatus::Completed);
            done.value.id
        }
    })
    .await
}

async fn cancel_all(system: &Sugang, ids: &[EnrollmentId]) {
    let (system, ids) = (system.clone(), ids.to_vec());
    run_all(ids.len(), 32, move |i| {
        let (system, id) = (system.clone(), ids[i]);
        async move {
            let done = system.cancel(id).await.unwrap_or_else(|e| panic!("cancel {id}: {e}"));
            assert_eq!(done.value.status, EnrollStatus::Canceled);
        }
    })
    .await;
}

/// Waits until `names` have applied the whole log and the log has stopped
/// growing (delivery appends events of its own as it goes).
async fn caught_up_with(system: &Sugang, names: &[&str], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let last = system.last_seq();
        let mut all = true;
        for name in names {
            all &= system.wait_for(name, last).await;
        }
        if all && system.last_seq() == last {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up with seq {last} after {limit:?}: {:?}",
            system.subscribers().await
        );
    }
}

async fn caught_up(system: &Sugang, limit: Duration) {
    caught_up_with(system, &SUBSCRIBERS, limit).await;
}

/// Waits until every owed refund is confirmed, so payments are final.
async fn refunds_settled(system: &Sugang) {
    wait_until("every refund to be confirmed", Duration::from_secs(20), || {
        let system = system.clone();
        async move { system.payment_snapshot().await.is_ok_and(|s| s.refunds_owed == 0) }
    })
    .await;
}

fn all_events(store: &Store) -> Vec<Committed<Event>> {
    store.events().read::<Event>(0, usize::MAX).expect("the log reads")
}

fn count_events(events: &[Committed<Event>], name: &str) -> usize {
    events.iter().filter(|e| e.event.name() == name).count()
}

fn by_id<T>(items: Vec<T>, id: impl Fn(&T) -> u64) -> HashMap<u64, T> {
    items.into_iter().map(|item| (id(&item), item)).collect()
}

/// Compares every read model with what the aggregates' own records imply:
/// the instructor view and schedule of every course, the student view and
/// the shipment of every enrollment, and nothing else.
fn check_views(system: &Sugang) -> Result<(), String> {
    let fail = |e: sugang_storage::StorageError| e.to_string();
    let courses = system.courses(None, ALL).map_err(fail)?.items;
    let instructors = by_id(system.instructor_views(None, ALL).map_err(fail)?.items, |v: &InstructorView| v.id);
    let schedules = by_id(system.schedules(ALL).map_err(fail)?.items, |s: &Schedule| s.id);
    if instructors.len() != courses.len() || schedules.len() != courses.len() {
        return Err(format!(
            "{} courses, {} instructor views, {} schedules",
            courses.len(),
            instructors.len(),
            schedules.len()
        ));
    }
    for course in &courses {
        let id = course.id.get();
        let open = course.student_count >= course.details.min_students.get();
        let expected = InstructorView {
            id,
            course_id: course.id,
            course_name: course.details.name.clone(),
            teacher: course.teacher.clone(),
            fee: course.details.fee,
            text_book: course.details.text_book.clone(),
            min_students: course.details.min_students,
            open,
            student_count: course.student_count,
        };
        if instructors.get(&id) != Some(&expected) {
            return Err(format!("instructor view of course {id}: {:?}, expected {expected:?}", instructors.get(&id)));
        }
        let expected = Schedule {
            id,
            course_id: course.id,
            course_name: course.details.name.clone(),
            teacher: course.teacher.clone(),
            open,
            student_count: course.student_count,
        };
        if schedules.get(&id) != Some(&expected) {
            return Err(format!("schedule of course {id}: {:?}, expected {expected:?}", schedules.get(&id)));
        }
    }

    let enrollments = system.enrollments(&EnrollmentFilter::default(), ALL).map_err(fail)?.items;
    let payments = by_id(system.payments(None, ALL).map_err(fail)?.items, |p: &Payment| p.enrollment_id.get());
    let students = by_id(system.student_views(None, ALL).map_err(fail)?.items, |v: &StudentView| v.id);
    let deliveries = by_id(system.deliveries(None, None, ALL).map_err(fail)?.items, |d: &Delivery| d.id);
    if students.len() != enrollments.len() || deliveries.len() != enrollments.len() {
        return Err(format!(
            "{} enrollments, {} student views, {} deliveries",
            enrollments.len(),
            students.len(),
            deliveries.len()
        ));
    }
    for e in &enrollments {
        let id = e.id.get();
        let shipment = match e.status {
            EnrollStatus::Completed => DeliveryStatus::Started,
            EnrollStatus::Canceled => DeliveryStatus::Canceled,
        };
        let expected = StudentView {
            id,
            apply_id: e.id,
            course_id: e.course_id,
            course_name: e.course_name.clone(),
            student: e.student.clone(),
            apply_status: e.status,
            pay_status: payments.get(&id).map(|p| p.status),
            delivery_status: Some(shipment),
        };
        if students.get(&id) != Some(&expected) {
            return Err(format!("student view of enrollment {id}: {:?}, expected {expected:?}", students.get(&id)));
        }
        let expected = Delivery {
            id,
            apply_id: e.id,
            course_id: e.course_id,
            student: e.student.clone(),
            addr: e.addr.clone(),
            text_book: e.text_book.clone(),
            status: shipment,
        };
        if deliveries.get(&id) != Some(&expected) {
            return Err(format!("delivery of enrollment {id}: {:?}, expected {expected:?}", deliveries.get(&id)));
        }
    }
    Ok(())
}

/// The notification an event implies, as (kind, recipient, enrollment, course).
type Notice = (&'static str, String, Option<u64>, Option<u64>);

fn implied_notice(event: &Event) -> Option<Notice> {
    let enrollment = |kind, student: &StudentName, id: &EnrollmentId, course: Option<&CourseId>| {
        Some((kind, student.as_str().to_owned(), Some(id.get()), course.map(|c| c.get())))
    };
    match event {
        Event::EnrollmentCompleted { enrollment_id, course_id, student, .. } => {
            enrollment("ENROLLMENT_COMPLETED", student, enrollment_id, Some(course_id))
        }
        Event::EnrollmentCanceled { enrollment_id, course_id, student, .. } => {
            enrollment("ENROLLMENT_CANCELED", student, enrollment_id, Some(course_id))
        }
        Event::PaymentApproved { enrollment_id, course_id, student, .. } => {
            enrollment("PAYMENT_APPROVED", student, enrollment_id, Some(course_id))
        }
        Event::PaymentCanceled { enrollment_id, student, .. } => {
            enrollment("PAYMENT_CANCELED", student, enrollment_id, None)
        }
        Event::DeliveryStarted { enrollment_id, course_id, student, .. } => {
            enrollment("DELIVERY_STARTED", student, enrollment_id, Some(course_id))
        }
        Event::DeliveryCanceled { enrollment_id, course_id, student, .. } => {
            enrollment("DELIVERY_CANCELED", student, enrollment_id, Some(course_id))
        }
        Event::CourseOpened { course_id, teacher, .. } => {
            Some(("COURSE_OPENED", teacher.as_str().to_owned(), None, Some(course_id.get())))
        }
        Event::CourseClosed { course_id, teacher, .. } => {
            Some(("COURSE_CLOSED", teacher.as_str().to_owned(), None, Some(course_id.get())))
        }
        _ => None,
    }
}

/// How many of each notice, keyed by the notice.
fn tally<'a>(notices: impl Iterator<Item = (&'a str, String, Option<u64>, Option<u64>)>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (kind, recipient, enrollment, course) in notices {
        *counts.entry(format!("{kind} to {recipient} for {enrollment:?}/{course:?}")).or_default() += 1;
    }
    counts
}

fn kinds(notifications: &[Notification]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for n in notifications {
        *counts.entry(n.kind.as_str()).or_default() += 1;
    }
    counts
}

/// Every notification the log implies exists exactly once in the table, and
/// `notifications.log` holds exactly the table's notifications, once each.
fn check_notifications(system: &Sugang, dir: &Path) -> Vec<Notification> {
    let stored = system.notifications(None, None, ALL).unwrap().items;
    let events = all_events(system.store());
    assert_eq!(events.first().map(|e| e.seq), Some(1), "the whole log is kept (no retention here)");
    let implied = tally(events.iter().filter_map(|e| implied_notice(&e.event)));
    let actual = tally(stored.iter().map(|n| (n.kind.as_str(), n.recipient.clone(), n.apply_id, n.course_id)));
    assert_eq!(actual, implied, "notifications differ from what the events imply");

    let file = std::fs::read_to_string(dir.join("notifications.log")).expect("notifications.log exists");
    let mut written: Vec<Notification> = file
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("a torn or bad line {line:?}: {e}")))
        .collect();
    let lines = written.len();
    written.sort_by_key(|n| n.id);
    written.dedup_by_key(|n| n.id);
    assert_eq!(written.len(), lines, "notifications.log repeats a notification");
    let mut stored_sorted = stored.clone();
    stored_sorted.sort_by_key(|n| n.id);
    assert_eq!(written, stored_sorted, "notifications.log and the table differ");
    stored
}

// ---- 1. delivery stopped while enrollments happen -----------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipments_match_enrollments_after_delivery_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.courses.max_pending = 4096;
    config.enrollments.max_pending = 4096;
    let system = Sugang::start(config).await.unwrap();
    assert_eq!(system.set_subscriber_down("delivery", true).await, Ok(true));
    assert_eq!(system.set_subscriber_down("postman", true).await, Ok(false), "an unknown subscriber");

    let mut courses = Vec::new();
    for c in 0..20 {
        courses.push(register(&system, &format!("course {c}"), 1_000 * (c + 1), 1).await);
    }
    let ids = enroll_all(&system, &courses, "student", 1000).await;
    let canceled: Vec<EnrollmentId> = ids.iter().copied().step_by(5).collect();
    assert_eq!(canceled.len(), 200);
    cancel_all(&system, &canceled).await;

    caught_up_with(&system, &["mypage", "notifier"], Duration::from_secs(60)).await;
    assert_eq!(system.deliveries(None, None, ALL).unwrap().total, 0, "no shipment while delivery is down");
    let status = system.subscribers().await;
    let delivery = status.iter().find(|s| s.name == "delivery").expect("delivery is listed");
    assert!(delivery.down && delivery.lag > 0, "delivery is down and behind: {delivery:?}");

    assert_eq!(system.set_subscriber_down("delivery", false).await, Ok(true));
    refunds_settled(&system).await;
    caught_up(&system, Duration::from_secs(60)).await;

    let deliveries = by_id(system.deliveries(None, None, ALL).unwrap().items, |d: &Delivery| d.id);
    assert_eq!(deliveries.len(), 1000, "one shipment per enrollment");
    for id in &ids {
        let enrollment = system.enrollment(*id).unwrap().expect("the enrollment exists");
        let delivery = deliveries.get(&id.get()).unwrap_or_else(|| panic!("no shipment for enrollment {id}"));
        let status = if canceled.contains(id) { DeliveryStatus::Canceled } else { DeliveryStatus::Started };
        assert_eq!(
            (delivery.apply_id, delivery.course_id, &delivery.student, &delivery.addr, &delivery.text_book),
            (enrollment.id, enrollment.course_id, &enrollment.student, &enrollment.addr, &enrollment.text_book),
            "shipment {id}"
        );
        assert_eq!(delivery.status, status, "shipment {id}");
    }
    let started = deliveries.values().filter(|d| d.status == DeliveryStatus::Started).count();
    assert_eq!((started, deliveries.len() - started), (800, 200));
    let events = all_events(system.store());
    assert_eq!(count_events(&events, "DeliveryStarted"), 1000, "each shipment started once");
    assert_eq!(count_events(&events, "DeliveryCanceled"), 200, "each canceled shipment canceled once");
    check_views(&system).unwrap();
    system.shutdown().await;
}

// ---- 2. SIGKILL while catching up ---------------------------------------

const CATCH_UP_DIR: &str = "SUGANG_TEST_CATCH_UP_DIR";

/// The child half of the kill test: a no-op unless a parent set the
/// environment. Starts the system on the parent's backlog (the subscribers
/// start and catch up) and reports their offsets every millisecond until it
/// is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_child() {
    let Ok(dir) = std::env::var(CATCH_UP_DIR) else { return };
    // Fsync: a commit the child acknowledged is on disk when it is killed.
    let system = Sugang::start(Config::new(dir)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let offsets: Vec<String> =
            system.subscribers().await.iter().map(|s| format!("{}={}", s.name, s.offset)).collect();
        println!("progress {} {}", system.last_seq(), offsets.join(" "));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the child was to be killed");
}

/// A progress line of the child: the last seq and each subscriber's offset.
fn parse_progress(line: &str) -> Option<(u64, HashMap<String, u64>)> {
    let mut words = line.strip_prefix("progress ")?.split(' ');
    let last = words.next()?.parse().ok()?;
    let offsets = words
        .filter_map(|w| w.split_once('='))
        .filter_map(|(name, offset)| Some((name.to_owned(), offset.parse().ok()?)))
        .collect();
    Some((last, offsets))
}

/// The durable offsets and last seq of a stopped system's directory.
fn durable_offsets(dir: &Path) -> (u64, Vec<u64>) {
    let store = Store::open(dir, StoreOptions::default()).expect("the store opens after the kill");
    let offsets = SUBSCRIBERS.iter().map(|name| store.offset(name).unwrap().unwrap_or(0)).collect();
    (store.events().last_seq(), offsets)
}

/// Runs the child on `dir` and SIGKILLs it once subscriber `who` has
/// applied a `fraction` of what it had left, or when the child stops
/// reporting (it finished or died).
fn kill_child_midway(dir: &Path, who: &str, fraction: f64) {
    use std::os::unix::process::ExitStatusExt;

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["catch_up_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CATCH_UP_DIR, dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run the child");
    let stdout = child.stdout.take().expect("the child's stdout");
    let mut target = None;
    for line in BufReader::new(stdout).lines() {
        let Some((last, offsets)) = line.ok().as_deref().and_then(parse_progress) else { continue };
        let offset = offsets.get(who).copied().unwrap_or(0);
        let target = *target.get_or_insert(offset + ((last.saturating_sub(offset)) as f64 * fraction) as u64);
        if offset >= target || offsets.values().all(|o| *o >= last) {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert_eq!(status.signal(), Some(9), "the child dies of SIGKILL: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_killed_while_catching_up_apply_every_event_exactly_once() {
    const COURSES: usize = 5;
    const ENROLLMENTS: usize = 500;
    const CANCELED: usize = 50;
    let dir = tempfile::tempdir().unwrap();

    // The backlog: everything happens with the subscribers down.
    let system = Sugang::start(config(dir.path())).await.unwrap();
    for name in SUBSCRIBERS {
        assert_eq!(system.set_subscriber_down(name, true).await, Ok(true));
    }
    let mut courses = Vec::new();
    for c in 0..COURSES {
        courses.push(register(&system, &format!("course {c}"), 5_000, 1).await);
    }
    let ids = enroll_all(&system, &courses, "student", ENROLLMENTS).await;
    let canceled: Vec<EnrollmentId> = ids.iter().copied().step_by(ENROLLMENTS / CANCELED).collect();
    cancel_all(&system, &canceled).await;
    refunds_settled(&system).await;
    let backlog = system.last_seq();
    system.shutdown().await;

    // Kill the catching-up child at random points until the backlog is done.
    let path = dir.path().to_owned();
    let (kills, midway) = tokio::task::spawn_blocking(move || {
        let (mut kills, mut midway) = (0, 0);
        let mut before = durable_offsets(&path).1;
        assert_eq!(before, vec![0, 0, 0], "nothing applied before the first child");
        while kills < 12 {
            let who = SUBSCRIBERS[fastrand::usize(..SUBSCRIBERS.len())];
            kill_child_midway(&path, who, fastrand::f64() * 0.4);
            kills += 1;
            let (last, after) = durable_offsets(&path);
            assert!(after.iter().zip(&before).all(|(a, b)| a >= b), "an offset went back: {before:?} -> {after:?}");
            assert!(after.iter().all(|o| *o <= last), "an offset past the log: {after:?} > {last}");
            before = after;
            if before.iter().all(|o| *o == last) {
                break;
            }
            midway += 1;
        }
        (kills, midway)
    })
    .await
    .unwrap();
    assert!(midway >= 1, "no kill landed while the subscribers were catching up ({kills} kills)");
    eprintln!("{kills} kills, {midway} of them with a subscriber still catching up");

    let system = Sugang::start(config(dir.path())).await.expect("the system starts after the kills");
    caught_up(&system, Duration::from_secs(60)).await;
    assert!(system.last_seq() > backlog, "delivery's events were appended");

    let events = all_events(system.store());
    let completed = ENROLLMENTS;
    assert_eq!(count_events(&events, "DeliveryStarted"), completed, "each shipment started exactly once");
    assert_eq!(count_events(&events, "DeliveryCanceled"), CANCELED, "each shipment canceled exactly once");
    check_views(&system).unwrap();
    let notifications = check_notifications(&system, dir.path());
    let expected: BTreeMap<&str, usize> = [
        ("COURSE_OPENED", COURSES),
        ("DELIVERY_CANCELED", CANCELED),
        ("DELIVERY_STARTED", completed),
        ("ENROLLMENT_CANCELED", CANCELED),
        ("ENROLLMENT_COMPLETED", completed),
        ("PAYMENT_APPROVED", completed),
        ("PAYMENT_CANCELED", CANCELED),
    ]
    .into();
    assert_eq!(kinds(&notifications), expected);
    assert_eq!(notifications.len(), 3 * completed + 3 * CANCELED + COURSES);
    system.shutdown().await;
}

// ---- 3. my-page (and delivery) as 4 workers ------------------------------

const WORKERS_CHILD: &str = "SUGANG_TEST_WORKERS_CHILD";

/// Counts every counter, by name and labels. Installed only in the child
/// process of the 4-worker test, where no other test shares the process.
#[derive(Default)]
struct Counters(Mutex<HashMap<String, Arc<Tally>>>);

#[derive(Default)]
struct Tally(AtomicU64);

impl metrics::CounterFn for Tally {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

fn counter_name(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

impl Counters {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let counters = self.0.lock().unwrap();
        counters.get(&counter_name(name, labels)).map_or(0, |t| t.0.load(Ordering::Relaxed))
    }
}

impl metrics::Recorder for Counters {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
        let name = counter_name(key.name(), &labels);
        metrics::Counter::from_arc(self.0.lock().unwrap().entry(name).or_default().clone())
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(Counters::default);

/// The effects my-page applies for an event, across all its workers: each
/// is owned by exactly one worker (by enrollment id or by course id).
fn mypage_effects(event: &Event) -> u64 {
    match event {
        Event::EnrollmentCompleted { .. } | Event::EnrollmentCanceled { .. } => 2,
        Event::CourseRegistered { .. }
        | Event::CourseModified { .. }
        | Event::CourseDeleted { .. }
        | Event::CourseOpened { .. }
        | Event::CourseClosed { .. }
        | Event::PaymentApproved { .. }
        | Event::PaymentCancelRequested { .. }
        | Event::PaymentCanceled { .. } => 1,
        // The student view's delivery status is read from the delivery read
        // model with the page: a shipment costs my-page no write.
        Event::DeliveryStarted { .. } | Event::DeliveryCanceled { .. } => 0,
        Event::SeatReserved { .. } | Event::SeatReleased { .. } | Event::EnrollmentRejected { .. } => 0,
        Event::WaitlistCapacitySet { .. }
        | Event::WaitlistJoined { .. }
        | Event::WaitlistPromoted { .. }
        | Event::WaitlistEnrolled { .. }
        | Event::WaitlistFailed { .. }
        | Event::WaitlistLeft { .. }
        | Event::WaitlistCanceled { .. } => 0,
    }
}

/// The child half of the 4-worker test: a no-op unless the parent set the
/// environment. Runs the whole scenario with a counting metrics recorder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_child() {
    if std::env::var(WORKERS_CHILD).is_err() {
        return;
    }
    metrics::set_global_recorder(&*COUNTERS).expect("the only recorder in this process");
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.bus.workers.insert("mypage".into(), 4);
    config.bus.workers.insert("delivery".into(), 4);
    config.bus.workers.insert("notifier".into(), 4);
    let system = Sugang::start(config).await.unwrap();
    let status = system.subscribers().await;
    let workers: Vec<(&str, u64)> = status.iter().map(|s| (s.name, s.workers)).collect();
    assert_eq!(
        workers,
        [("delivery", 4), ("mypage", 4), ("notifier", 1), ("waitlist", 1)],
        "the notifier (and the waitlist read model) stay one worker"
    );

    // Half the workload while my-page is down (the workers catch up from
    // the log), half while it follows live.
    assert_eq!(system.set_subscriber_down("mypage", true).await, Ok(true));
    let mut courses = Vec::new();
    for c in 0..8 {
        courses.push(register(&system, &format!("course {c}"), 10_000, 10).await);
    }
    let first = enroll_all(&system, &courses, "early", 200).await;
    let first_canceled: Vec<_> = first.iter().copied().step_by(4).collect();
    cancel_all(&system, &first_canceled).await;
    for course in &courses[..4] {
        let patch = CoursePatch { fee: Some(Fee::parse(12_000).unwrap()), ..Default::default() };
        system.modify_course(*course, patch).await.unwrap();
    }
    assert_eq!(system.set_subscriber_down("mypage", false).await, Ok(true));
    let second = enroll_all(&system, &courses, "late", 200).await;
    let second_canceled: Vec<_> = second.iter().copied().step_by(4).collect();
    cancel_all(&system, &second_canceled).await;
    for course in &courses[4..] {
        let patch = CoursePatch { min_students: Some(MinStudents::parse(60).unwrap()), ..Default::default() };
        system.modify_course(*course, patch).await.unwrap();
    }
    refunds_settled(&system).await;
    caught_up(&system, Duration::from_secs(60)).await;

    let last = system.last_seq();
    for name in ["mypage", "delivery"] {
        for part in 0..4 {
            let offset = system.store().offset(&format!("{name}#{part}")).unwrap();
            assert_eq!(offset, Some(last), "{name}#{part} has applied the whole log");
        }
    }
    let events = all_events(system.store());
    assert_eq!(events.len() as u64, last);
    let counter = |name, subscriber| COUNTERS.get(name, &[("subscriber", subscriber)]);
    for subscriber in ["mypage", "delivery"] {
        assert_eq!(
            counter("sugang_subscriber_events_total", subscriber),
            4 * last,
            "each of the 4 {subscriber} workers reads each event once"
        );
    }
    assert_eq!(counter("sugang_subscriber_events_total", "notifier"), last);
    assert_eq!(
        counter("sugang_subscriber_effects_total", "mypage"),
        events.iter().map(|e| mypage_effects(&e.event)).sum::<u64>(),
        "each my-page effect applied exactly once"
    );
    let (completed, canceled) = (400, first_canceled.len() + second_canceled.len());
    assert_eq!(counter("sugang_subscriber_effects_total", "delivery"), (completed + canceled) as u64);
    assert_eq!(count_events(&events, "DeliveryStarted"), completed);
    assert_eq!(count_events(&events, "DeliveryCanceled"), canceled);
    assert!(count_events(&events, "CourseClosed") >= 1, "the workload closes a course again");

    // Per-enrollment order: a canceled and refunded enrollment whose events
    // were applied out of order would keep a stale status somewhere.
    for id in first_canceled.iter().chain(&second_canceled) {
        let view = system.student_views(None, ALL).unwrap().items.into_iter().find(|v| v.apply_id == *id);
        let view = view.unwrap_or_else(|| panic!("no student view of {id}"));
        assert_eq!(
            (view.apply_status, view.pay_status, view.delivery_status),
            (EnrollStatus::Canceled, Some(PayStatus::Canceled), Some(DeliveryStatus::Canceled)),
            "enrollment {id}"
        );
    }
    check_views(&system).unwrap();
    system.shutdown().await;
    println!("four workers: checked");
}

#[test]
fn mypage_and_delivery_as_four_workers_apply_each_event_once_in_order() {
    // The effect counts come from the metrics, whose recorder is global to a
    // process: the scenario runs in a child process of its own.
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["four_workers_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(WORKERS_CHILD, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("four workers: checked"),
        "the 4-worker child failed: {:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---- 4. property: views equal a recomputation from the aggregates --------

#[derive(Clone, Debug)]
enum Op {
    Register {
        fee: i64,
        min_students: i64,
    },
    Enroll {
        course: usize,
        student: u8,
        declined: bool,
    },
    Cancel {
        enrollment: usize,
    },
    Modify {
        course: usize,
        fee: Option<i64>,
        min_students: Option<i64>,
    },
    /// Stops or starts a subscriber, so events arrive both live and by
    /// catching up.
    Switch {
        subscriber: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0i64..5, 1i64..4).prop_map(|(fee, min_students)| Op::Register { fee: fee * 1_000, min_students }),
        6 => (any::<usize>(), 0u8..8, proptest::bool::weighted(0.2))
            .prop_map(|(course, student, declined)| Op::Enroll { course, student, declined }),
        2 => any::<usize>().prop_map(|enrollment| Op::Cancel { enrollment }),
        1 => (any::<usize>(), proptest::option::of(0i64..5), proptest::option::of(1i64..4)).prop_map(
            |(course, fee, min_students)| Op::Modify { course, fee: fee.map(|f| f * 1_000), min_students }
        ),
        1 => (0..SUBSCRIBERS.len()).prop_map(|subscriber| Op::Switch { subscriber }),
    ]
}

async fn run_workload(ops: Vec<Op>) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let system = Sugang::start(config(dir.path())).await.map_err(|e| e.to_string())?;
    let mut courses = vec![register(&system, "first", 3_000, 2).await];
    let mut enrollments: Vec<EnrollmentId> = Vec::new();
    let mut down = [false; SUBSCRIBERS.len()];
    for op in ops {
        match op {
            Op::Register { fee, min_students } => {
                let name = format!("course {}", courses.len());
                courses.push(register(&system, &name, fee, min_students).await);
            }
            Op::Enroll { course, student, declined } => {
                let mut request = request(courses[course % courses.len()], &format!("s{student}"));
                if declined {
                    request.pay_account = Some(DECLINED_CARD.to_owned());
                }
                match system.enroll(request).await {
                    Ok(done) => enrollments.push(done.value.id),
                    Err(CommandError::Conflict(_) | CommandError::PaymentDeclined(_)) => {}
                    Err(e) => return Err(format!("enroll: {e}")),
                }
            }
            Op::Cancel { enrollment } if !enrollments.is_empty() => {
                let id = enrollments[enrollment % enrollments.len()];
                system.cancel(id).await.map_err(|e| format!("cancel {id}: {e}"))?;
            }
            Op::Cancel { .. } => {}
            Op::Modify { course, fee, min_students } => {
                let patch = CoursePatch {
                    fee: fee.map(|f| Fee::parse(f).unwrap()),
                    min_students: min_students.map(|m| MinStudents::parse(m).unwrap()),
                    ..Default::default()
                };
                let id = courses[course % courses.len()];
                system.modify_course(id, patch).await.map_err(|e| format!("modify {id}: {e}"))?;
            }
            Op::Switch { subscriber } => {
                down[subscriber] = !down[subscriber];
                system
                    .set_subscriber_down(SUBSCRIBERS[subscriber], down[subscriber])
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    for name in SUBSCRIBERS {
        system.set_subscriber_down(name, false).await.map_err(|e| e.to_string())?;
    }
    refunds_settled(&system).await;
    caught_up(&system, Duration::from_secs(30)).await;
    let checked = check_views(&system);
    system.shutdown().await;
    checked
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 8,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn views_equal_a_recomputation_from_the_aggregates(ops in proptest::collection::vec(op(), 10..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        if let Err(mismatch) = runtime.block_on(run_workload(ops)) {
            prop_assert!(false, "{}", mismatch);
        }
    }
}

// ---- 5. retention ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_below_every_offset_and_a_stopped_subscriber_holds_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.bus.retention = Duration::ZERO;
    config.bus.retention_every = Duration::from_millis(100);
    let system = Sugang::start(config).await.unwrap();
    let first_seq = |system: &Sugang| system.store().events().first_seq().unwrap();
    let notifier_offset = |system: Sugang| async move {
        system.subscribers().await.into_iter().find(|s| s.name == "notifier").map(|s| s.offset)
    };

    // The notifier is down from the start: it holds the whole log.
    assert_eq!(system.set_subscriber_down("notifier", true).await, Ok(true));
    let courses = [register(&system, "law", 1_000, 1).await, register(&system, "art", 2_000, 1).await];
    enroll_all(&system, &courses, "early", 20).await;
    caught_up_with(&system, &["delivery", "mypage"], Duration::from_secs(30)).await;
    assert_eq!(notifier_offset(system.clone()).await, Some(0));
    // Retention runs every 100 ms; holding means that over several of its
    // rounds nothing goes. No condition marks a round that removed nothing,
    // so this one check watches the clock.
    hold_for(&system, 0, Duration::from_millis(500)).await;

    // Started, it catches up, and everything below every offset goes.
    assert_eq!(system.set_subscriber_down("notifier", false).await, Ok(true));
    caught_up(&system, Duration::from_secs(30)).await;
    let last = system.last_seq();
    wait_until("retention to trim the applied log", Duration::from_secs(10), || {
        let first = first_seq(&system);
        async move { first.is_none_or(|f| f > last) }
    })
    .await;
    assert_eq!(system.notifications(None, None, ALL).unwrap().total, 20 * 3 + 2, "no event missed while it was down");

    // Stopped again at offset O: events above O stay while the others move on.
    assert_eq!(system.set_subscriber_down("notifier", true).await, Ok(true));
    let held = notifier_offset(system.clone()).await.expect("the notifier is listed");
    let late = enroll_all(&system, &courses, "late", 20).await;
    cancel_all(&system, &late[..5]).await;
    refunds_settled(&system).await;
    caught_up_with(&system, &["delivery", "mypage"], Duration::from_secs(30)).await;
    hold_for(&system, held, Duration::from_millis(500)).await;

    assert_eq!(system.set_subscriber_down("notifier", false).await, Ok(true));
    caught_up(&system, Duration::from_secs(30)).await;
    assert_eq!(
        system.notifications(None, None, ALL).unwrap().total,
        40 * 3 + 2 + 5 * 3,
        "the notifier applied every held event"
    );
    let last = system.last_seq();
    wait_until("retention to trim what the notifier applied", Duration::from_secs(10), || {
        let first = first_seq(&system);
        async move { first.is_none_or(|f| f > last) }
    })
    .await;
    check_views(&system).unwrap();
    system.shutdown().await;
}

/// Checks, for `period`, that every event after `offset` stays in the log
/// (and that everything at or below it has gone).
async fn hold_for(system: &Sugang, offset: u64, period: Duration) {
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        let last = system.last_seq();
        let kept = system.store().events().read::<Event>(0, usize::MAX).unwrap();
        let seqs: Vec<u64> = kept.iter().map(|e| e.seq).collect();
        let expected: Vec<u64> = (offset + 1..=last).collect();
        assert!(seqs.ends_with(&expected), "an event above the held offset {offset} was trimmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = system.store().events().first_seq().unwrap();
    assert_eq!(first, Some(offset + 1), "everything up to the held offset {offset} is trimmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_worker_count_carries_offsets_over_and_frees_retention() {
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(config(dir.path())).await.unwrap();
    let courses = vec![register(&system, "korean", 10_000, 1).await];
    enroll_all(&system, &courses, "one", 20).await;
    caught_up(&system, Duration::from_secs(20)).await;
    system.shutdown().await;

    let mut scaled = config(dir.path());
    scaled.bus.workers.insert("mypage".into(), 3);
    let system = Sugang::start(scaled).await.unwrap();
    let names: Vec<String> = system.store().offsets().unwrap().into_iter().map(|(name, _)| name).collect();
    assert!(!names.contains(&"mypage".to_owned()), "the single worker's offset is gone: {names:?}");
    for part in 0..3 {
        assert!(names.contains(&format!("mypage#{part}")), "mypage#{part} registered: {names:?}");
    }
    enroll_all(&system, &courses, "three", 10).await;
    caught_up(&system, Duration::from_secs(20)).await;
    check_views(&system).unwrap();
    assert_eq!(system.student_views(None, ALL).unwrap().total, 30);
    system.shutdown().await;
}
