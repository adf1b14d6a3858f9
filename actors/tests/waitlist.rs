//! Registration day in process: "full" is the truth (a request waits for a
//! payment in progress instead of being told the course is full), and
//! waitlists hand a freed seat to the first in line.

use std::time::Duration;

use sugang_actors::{
    Capacity, CommandError, Config, CourseDetails, CourseId, CourseName, EnrollRequest, Fee, GatewayFaults,
    MinStudents, PayMethod, StudentName, Sugang, TeacherName,
};

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

fn request(course: CourseId, student: &str, account: Option<&str>) -> EnrollRequest {
    EnrollRequest {
        course_id: course,
        student: StudentName::parse(student).unwrap(),
        expected_fee: None,
        pay_method: PayMethod::parse(None).unwrap(),
        pay_account: account.map(str::to_owned),
        addr: Some("Seoul".into()),
        telephone: None,
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
