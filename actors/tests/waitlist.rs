//! Registration day in process: "full" is the truth (a request waits for a
//! payment in progress instead of being told the course is full), and
//! waitlists hand a freed seat to the first in line.

mod common;
use common::paying as request;

use std::time::Duration;

use sugang_actors::{
    Capacity, CommandError, Config, CourseDetails, CourseId, CourseName, CoursePatch, EnrollStatus, Enrolled,
    EnrollmentFilter, Event, Fee, GatewayFaults, MinStudents, PageRequest, PayStatus, SagaStep, Sugang, TeacherName,
    WaitStatus, WaitlistEntry, WaitlistFilter,
};

const ALL: PageRequest = PageRequest { number: 0, size: 1000 };

const DECLINED: &str = "4000000000000002";

fn details(capacity: Option<i64>) -> CourseDetails {
    CourseDetails {
        name: CourseName::parse("korean").unwrap(),
        fee: Fee::parse(10_000).unwrap(),
        text_book: None,
        capacity: capacity.map(|c| Capacity::parse(c).unwrap()),
        min_students: MinStudents::default(),
    }
}

async fn start(dir: &std::path::Path) -> Sugang {
    Sugang::start(Config::new(dir)).await.expect("start")
}

/// Waits until `check` holds, or fails the test after 10 s.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_pending_payment_gives_the_seat_to_the_next_request_and_nobody_is_told_full() {
    let dir = tempfile::tempdir().unwrap();
    let system = start(dir.path()).await;
    let teacher = TeacherName::parse("Hong").unwrap();
    let course = system.register_course(teacher, details(Some(1))).await.unwrap().value.id;
    system.set_gateway_faults(GatewayFaults { latency_ms: 300, ..GatewayFaults::default() });

    // Kim's declined card holds the only seat while the gateway thinks.
    let kim = tokio::spawn({
        let system = system.clone();
        async move { system.enroll(request(course, "Kim", Some(DECLINED))).await }
    });
    until("Kim's payment holds the seat", || system.seat_counts(course).unwrap().pending == 1).await;
    // Lee and Park ask while it is held: neither is told "full".
    let lee = tokio::spawn({
        let system = system.clone();
        async move { system.enroll(request(course, "Lee", None)).await }
    });
    let park = tokio::spawn({
        let system = system.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            system.enroll(request(course, "Park", None)).await
        }
    });

    let kim = kim.await.unwrap();
    assert!(matches!(kim, Err(CommandError::PaymentDeclined(_))), "{kim:?}");
    let lee = lee.await.unwrap();
    assert!(lee.is_ok(), "Lee waited for Kim's payment and took the seat it released: {lee:?}");
    // Park waited behind Lee's payment, which completed: now, and only now,
    // the course is full.
    let park = park.await.unwrap();
    assert!(matches!(&park, Err(CommandError::Conflict(why)) if why.contains("full")), "{park:?}");
    let seats = system.seat_counts(course).unwrap();
    assert_eq!((seats.confirmed, seats.pending), (1, 0));
    assert_eq!(system.course(course).unwrap().unwrap().student_count, 1);
    system.shutdown().await;
}

async fn waitlisted_course(system: &Sugang, capacity: i64, waitlist: u32) -> CourseId {
    let teacher = TeacherName::parse("Hong").unwrap();
    system.register_course_with_waitlist(teacher, details(Some(capacity)), waitlist).await.unwrap().value.id
}

/// Joins (or enrolls): the entry, and whether it is new.
async fn join(system: &Sugang, course: CourseId, student: &str, account: Option<&str>) -> (WaitlistEntry, bool) {
    match system.enroll_or_join(request(course, student, account)).await.unwrap().value {
        Enrolled::Waitlisted { entry, new } => (entry, new),
        Enrolled::Completed(e) => panic!("{student} was enrolled, not waitlisted: {e:?}"),
    }
}

async fn entry_becomes(system: &Sugang, id: u64, status: WaitStatus) -> WaitlistEntry {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let entry = system.waitlist_entry(id).unwrap().expect("the entry exists");
        if entry.status == status {
            return entry;
        }
        assert!(tokio::time::Instant::now() < deadline, "entry {id} never became {status:?}: {entry:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_gives_the_seat_to_the_first_in_line_who_is_enrolled_with_the_stored_account() {
    let dir = tempfile::tempdir().unwrap();
    let system = start(dir.path()).await;
    let course = waitlisted_course(&system, 1, 2).await;
    let kim = system.enroll_or_join(request(course, "Kim", None)).await.unwrap().value;
    let Enrolled::Completed(kim) = kim else { panic!("a free seat enrolls: {kim:?}") };

    let (lee, new) = join(&system, course, "Lee", None).await;
    assert!(new);
    assert_eq!((lee.status, lee.position, lee.class_id), (WaitStatus::Waiting, Some(1), None));
    let (again, new) = join(&system, course, "Lee", None).await;
    assert!(!new, "joining again answers the same entry");
    assert_eq!(again.id, lee.id);
    let (park, _) = join(&system, course, "Park", None).await;
    assert_eq!((park.id, park.position), (lee.id + 1, Some(2)), "dense ids, first come first served");
    let full = system.enroll_or_join(request(course, "Choi", None)).await.unwrap_err();
    assert!(matches!(&full, CommandError::Conflict(why) if why.contains("waitlist")), "{full:?}");
    let held = system.enroll_or_join(request(course, "Kim", None)).await.unwrap_err();
    assert!(matches!(&held, CommandError::Conflict(why) if why.contains("already")), "{held:?}");
    assert_eq!(system.course_waitlist(course).unwrap().length, 2);

    // The cancellation's own commit hands the seat to Lee: at no moment
    // after it is the seat free.
    system.cancel(kim.id).await.unwrap();
    let seats = system.seat_counts(course).unwrap();
    assert_eq!(seats.confirmed + seats.pending, 1, "the freed seat went to Lee in the cancellation's batch: {seats:?}");
    let lee = entry_becomes(&system, lee.id, WaitStatus::Enrolled).await;
    let class = lee.class_id.expect("an enrolled entry names its enrollment");
    let enrollment = system.enrollment(class).unwrap().unwrap();
    assert_eq!((enrollment.student.as_str(), enrollment.status), ("Lee", EnrollStatus::Completed));
    assert_eq!(system.payment(class).unwrap().map(|p| p.status), Some(PayStatus::Approved));
    assert_eq!(system.waitlist_entry(park.id).unwrap().unwrap().position, Some(1), "Park moved up");
    assert_eq!(system.course_waitlist(course).unwrap().length, 1);

    // The read model follows, positions and all. Lee's entry is readable a
    // moment before the log's last seq counts the event that enrolled it
    // (the journal moves it once the write returns): wait for the event,
    // then for the view to have applied it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let enrolled_at = loop {
        let log = system.store().events().read::<Event>(1, 10_000).unwrap();
        let enrolled =
            log.iter().find(|e| matches!(e.event, Event::WaitlistEnrolled { entry_id, .. } if entry_id == lee.id));
        if let Some(event) = enrolled {
            break event.seq;
        }
        assert!(tokio::time::Instant::now() < deadline, "no WaitlistEnrolled event for entry {}", lee.id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(system.wait_for("waitlist", enrolled_at).await);
    let listed = system
        .waitlist_entries(&WaitlistFilter { course_id: Some(course.get()), ..WaitlistFilter::default() }, ALL)
        .unwrap();
    let shown: Vec<_> = listed.items.iter().map(|e| (e.student.as_str().to_owned(), e.status, e.position)).collect();
    assert_eq!(
        shown,
        [("Lee".to_owned(), WaitStatus::Enrolled, None), ("Park".to_owned(), WaitStatus::Waiting, Some(1))]
    );
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_promotion_fails_and_the_seat_passes_to_the_next_in_line() {
    let dir = tempfile::tempdir().unwrap();
    let system = start(dir.path()).await;
    let course = waitlisted_course(&system, 1, 5).await;
    let kim = system.enroll(request(course, "Kim", None)).await.unwrap().value;
    let (lee, _) = join(&system, course, "Lee", Some(DECLINED)).await;
    let (park, _) = join(&system, course, "Park", None).await;

    system.cancel(kim.id).await.unwrap();
    entry_becomes(&system, lee.id, WaitStatus::Failed).await;
    let park = entry_becomes(&system, park.id, WaitStatus::Enrolled).await;
    let enrollments = system
        .enrollments(&EnrollmentFilter { course_id: Some(course.get()), ..EnrollmentFilter::default() }, ALL)
        .unwrap()
        .items;
    let completed: Vec<_> =
        enrollments.iter().filter(|e| e.status == EnrollStatus::Completed).map(|e| e.student.as_str()).collect();
    assert_eq!(completed, ["Park"]);
    assert_eq!(park.class_id.map(|id| id.get()), enrollments.last().map(|e| e.id.get()));
    assert_eq!(system.course(course).unwrap().unwrap().student_count, 1);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_and_a_capacity_raise_that_promotes_the_first_still_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let system = start(dir.path()).await;
    let course = waitlisted_course(&system, 1, 5).await;
    system.enroll(request(course, "Kim", None)).await.unwrap();
    let (lee, _) = join(&system, course, "Lee", None).await;
    let (park, _) = join(&system, course, "Park", None).await;
    let (choi, _) = join(&system, course, "Choi", None).await;

    let left = system.leave_waitlist(lee.id).await.unwrap().value;
    assert_eq!((left.status, left.position), (WaitStatus::Left, None));
    let again = system.leave_waitlist(lee.id).await.unwrap().value;
    assert_eq!(again.status, WaitStatus::Left, "leaving again changes nothing");
    assert_eq!(system.waitlist_entry(park.id).unwrap().unwrap().position, Some(1));
    assert!(matches!(system.leave_waitlist(999).await, Err(CommandError::NotFound { .. })));

    // A raise of one seat goes to the first still waiting, in its commit.
    let raise = CoursePatch { capacity: Some(Some(Capacity::parse(2).unwrap())), ..CoursePatch::default() };
    system.modify_course(course, raise).await.unwrap();
    let seats = system.seat_counts(course).unwrap();
    assert_eq!(seats.confirmed + seats.pending, 2, "{seats:?}");
    entry_becomes(&system, park.id, WaitStatus::Enrolled).await;
    assert_eq!(system.waitlist_entry(choi.id).unwrap().unwrap().position, Some(1));
    // Unlimited: everyone waiting gets a seat.
    system.modify_course(course, CoursePatch { capacity: Some(None), ..CoursePatch::default() }).await.unwrap();
    entry_becomes(&system, choi.id, WaitStatus::Enrolled).await;
    assert_eq!(system.course(course).unwrap().unwrap().student_count, 3);
    assert_eq!(system.course_waitlist(course).unwrap().length, 0);
    system.shutdown().await;
}

// ---- crashes between a seat's release and the promoted student's charge ----

const CRASH_DIR: &str = "SUGANG_TEST_WAITLIST_CRASH_DIR";
const CRASH_STEP: &str = "SUGANG_TEST_WAITLIST_CRASH_STEP";

/// The child half of the crash tests: a no-op unless a parent set the
/// environment. Kim holds the one seat, Lee waits; Kim cancels and the
/// process aborts in Lee's promotion at the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_crash_child() {
    let (Ok(dir), Ok(step)) = (std::env::var(CRASH_DIR), std::env::var(CRASH_STEP)) else { return };
    let step = SagaStep::parse(&step).expect("a saga step");
    let system = start(std::path::Path::new(&dir)).await;
    let course = waitlisted_course(&system, 1, 2).await;
    let kim = system.enroll(request(course, "Kim", None)).await.unwrap().value;
    join(&system, course, "Lee", None).await;
    system.faults().crash_after(Some(step));
    system.cancel(kim.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    panic!("the child was to abort at {step:?}");
}

async fn promotion_crash_and_recover(step: &str) {
    use std::os::unix::process::ExitStatusExt;

    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["promotion_crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR, dir.path())
        .env(CRASH_STEP, step)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run the child");
    assert_eq!(status.signal(), Some(6), "the child aborts (SIGABRT) at {step}: {status:?}");

    // Start-up recovery resumes Lee's promotion: charged with the stored
    // account, enrolled, exactly once.
    let system = start(dir.path()).await;
    let course = CourseId::parse(1).unwrap();
    let lee = entry_becomes(&system, 1, WaitStatus::Enrolled).await;
    let enrollments = system.enrollments(&EnrollmentFilter::default(), ALL).unwrap().items;
    let shown: Vec<_> = enrollments.iter().map(|e| (e.id.get(), e.student.as_str(), e.status)).collect();
    assert_eq!(shown, [(1, "Kim", EnrollStatus::Canceled), (2, "Lee", EnrollStatus::Completed)]);
    assert_eq!(lee.class_id.map(|id| id.get()), Some(2));
    let payments = system.payments(None, ALL).unwrap().items;
    let approved: Vec<_> =
        payments.iter().filter(|p| p.status == PayStatus::Approved).map(|p| p.enrollment_id.get()).collect();
    assert_eq!(approved, [2], "one approved payment, Lee's: {payments:?}");
    let seats = system.seat_counts(course).unwrap();
    assert_eq!((seats.confirmed, seats.pending), (1, 0));
    assert_eq!(system.course(course).unwrap().unwrap().student_count, 1);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_seat_release_and_the_promoted_charge_resumes_the_promotion() {
    promotion_crash_and_recover("promotionReserved").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_promoted_charge_resumes_the_promotion_without_a_second_payment() {
    promotion_crash_and_recover("promotionCharged").await;
}
