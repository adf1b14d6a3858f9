//! The enrollment's lifecycle, tested on `decide` and `apply` alone.

use super::*;

fn id() -> EnrollmentId {
    EnrollmentId::assigned(11)
}

fn course_id() -> CourseId {
    CourseId::assigned(7)
}

fn completed(enrollment_id: EnrollmentId, at_ms: u64) -> Event {
    Event::EnrollmentCompleted {
        enrollment_id,
        course_id: course_id(),
        course_name: CourseName::parse("Rust").unwrap(),
        teacher: TeacherName::parse("Lee").unwrap(),
        student: StudentName::parse("Kim").unwrap(),
        fee: Fee::parse(50_000).unwrap(),
        text_book: Some(TextBook::parse("The Book").unwrap()),
        pay_method: PayMethod::parse(Some("bank")).unwrap(),
        addr: Some("Seoul".into()),
        telephone: Some("010-0000-0000".into()),
        student_count: 3,
        at_ms,
    }
}

fn canceled(enrollment_id: EnrollmentId, at_ms: u64) -> Event {
    Event::EnrollmentCanceled {
        enrollment_id,
        course_id: course_id(),
        course_name: CourseName::parse("Rust").unwrap(),
        teacher: TeacherName::parse("Lee").unwrap(),
        student: StudentName::parse("Kim").unwrap(),
        fee: Fee::parse(50_000).unwrap(),
        student_count: 2,
        at_ms,
    }
}

fn expected_record(status: EnrollStatus, canceled_at_ms: Option<u64>) -> EnrollmentState {
    EnrollmentState::Recorded(Box::new(Enrollment {
        id: id(),
        course_id: course_id(),
        course_name: CourseName::parse("Rust").unwrap(),
        teacher: TeacherName::parse("Lee").unwrap(),
        student: StudentName::parse("Kim").unwrap(),
        fee: Fee::parse(50_000).unwrap(),
        text_book: Some(TextBook::parse("The Book").unwrap()),
        pay_method: PayMethod::parse(Some("bank")).unwrap(),
        addr: Some("Seoul".into()),
        telephone: Some("010-0000-0000".into()),
        status,
        created_at_ms: 100,
        canceled_at_ms,
    }))
}

fn absent() -> EnrollmentState {
    EnrollmentState::Absent { id: id() }
}

#[test]
fn canceling_an_absent_enrollment_is_not_found() {
    assert_eq!(decide(&absent(), EnrollmentCommand::Cancel), Err(EnrollmentRejection::NotFound(id())));
}

#[test]
fn completion_records_the_enrollment_from_its_event() {
    assert_eq!(apply(absent(), &completed(id(), 100)), expected_record(EnrollStatus::Completed, None));
}

#[test]
fn canceling_a_completed_enrollment_releases_its_seat() {
    let state = apply(absent(), &completed(id(), 100));
    assert_eq!(decide(&state, EnrollmentCommand::Cancel), Ok(Decision::Release { course_id: course_id() }));
}

#[test]
fn cancellation_marks_the_enrollment_canceled_once() {
    let state = apply(apply(absent(), &completed(id(), 100)), &canceled(id(), 200));
    assert_eq!(state, expected_record(EnrollStatus::Canceled, Some(200)));
    assert_eq!(decide(&state, EnrollmentCommand::Cancel), Ok(Decision::Nothing));
    // A replayed cancellation keeps the first cancellation time.
    assert_eq!(apply(state, &canceled(id(), 300)), expected_record(EnrollStatus::Canceled, Some(200)));
}

#[test]
fn a_second_completion_does_not_overwrite_the_record() {
    let state = apply(absent(), &completed(id(), 100));
    assert_eq!(apply(state, &completed(id(), 999)), expected_record(EnrollStatus::Completed, None));
}

#[test]
fn events_of_another_enrollment_leave_it_unchanged() {
    let other = EnrollmentId::assigned(12);
    assert_eq!(apply(absent(), &completed(other, 100)), absent());
    assert_eq!(apply(absent(), &canceled(other, 100)), absent());
    let recorded = apply(absent(), &completed(id(), 100));
    assert_eq!(apply(recorded.clone(), &completed(other, 150)), recorded);
    assert_eq!(apply(recorded.clone(), &canceled(other, 200)), recorded);
}

#[test]
fn a_cancellation_before_completion_is_ignored() {
    assert_eq!(apply(absent(), &canceled(id(), 200)), absent());
}

#[test]
fn enrolling_records_the_completion_under_its_id() {
    let EnrollmentState::Recorded(record) = expected_record(EnrollStatus::Completed, None) else { unreachable!() };
    assert_eq!(
        decide(&absent(), EnrollmentCommand::Enroll(Box::new(completed(id(), 100)))),
        Ok(Decision::Record(record))
    );
}

#[test]
fn enrolling_refuses_what_is_not_this_enrollments_completion() {
    let other = EnrollmentId::assigned(12);
    assert_eq!(
        decide(&absent(), EnrollmentCommand::Enroll(Box::new(completed(other, 100)))),
        Err(EnrollmentRejection::NotACompletion(id()))
    );
    assert_eq!(
        decide(&absent(), EnrollmentCommand::Enroll(Box::new(canceled(id(), 100)))),
        Err(EnrollmentRejection::NotACompletion(id()))
    );
}

#[test]
fn enrolling_again_is_a_repeat_when_identical_and_refused_otherwise() {
    let state = apply(absent(), &completed(id(), 100));
    assert_eq!(decide(&state, EnrollmentCommand::Enroll(Box::new(completed(id(), 100)))), Ok(Decision::Nothing));
    // The same id recorded again with other facts would overwrite an
    // acknowledged enrollment: refused.
    assert_eq!(
        decide(&state, EnrollmentCommand::Enroll(Box::new(completed(id(), 999)))),
        Err(EnrollmentRejection::AlreadyRecorded(id()))
    );
}
