//! The enrollment saga end to end, in process, over a real store.

mod common;
use common::{details, paying as request};

use std::time::Duration;

use sugang_actors::{
    CommandError, Config, EnrollStatus, EnrollmentFilter, PageRequest, PayStatus, Sugang, TeacherName,
};

async fn start(dir: &std::path::Path) -> Sugang {
    Sugang::start(Config::new(dir)).await.expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_pay_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let system = start(dir.path()).await;
    let teacher = TeacherName::parse("Hong").unwrap();
    let course = system.register_course(teacher, details("korean", 10_000, Some(2))).await.unwrap();
    let course_id = course.value.id;
    assert!(course.seq >= 1);

    let done = system.enroll(request(course_id, "Kim", None)).await.unwrap();
    assert_eq!(done.value.status, EnrollStatus::Completed);
    assert_eq!(done.value.fee.won(), 10_000);
    assert_eq!(system.course(course_id).unwrap().unwrap().student_count, 1);
    assert_eq!(system.payment(done.value.id).unwrap().unwrap().status, PayStatus::Approved);

    let again = system.enroll(request(course_id, "Kim", None)).await.unwrap_err();
    assert!(matches!(again, CommandError::Conflict(_)), "{again:?}");
    let declined = system.enroll(request(course_id, "Lee", Some("4000000000000002"))).await.unwrap_err();
    assert!(matches!(declined, CommandError::PaymentDeclined(_)), "{declined:?}");
    assert_eq!(system.course(course_id).unwrap().unwrap().student_count, 1, "a declined payment holds no seat");

    let canceled = system.cancel(done.value.id).await.unwrap();
    assert_eq!(canceled.value.status, EnrollStatus::Canceled);
    assert_eq!(system.payment(done.value.id).unwrap().unwrap().status, PayStatus::Canceled);
    assert_eq!(system.course(course_id).unwrap().unwrap().student_count, 0);
    let repeat = system.cancel(done.value.id).await.unwrap();
    assert_eq!(repeat.value.status, EnrollStatus::Canceled);

    let listed = system
        .enrollments(
            &EnrollmentFilter { student: Some("Kim".into()), ..Default::default() },
            PageRequest { number: 0, size: 20 },
        )
        .unwrap();
    assert_eq!(listed.total, 1);
    system.shutdown().await;

    // Everything acknowledged is there after a restart.
    let system = start(dir.path()).await;
    assert_eq!(system.enrollment(done.value.id).unwrap().unwrap().status, EnrollStatus::Canceled);
    assert_eq!(system.course(course_id).unwrap().unwrap().student_count, 0);
    tokio::time::sleep(Duration::from_millis(1)).await;
    system.shutdown().await;
}
