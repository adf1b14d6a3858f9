//! Filling a store for the page benchmarks (`bench/pages.rs`): not part of
//! the service. Writes the records the saga and the subscribers would have
//! written for `enrollments` completed enrollments over `courses` courses
//! (tables and indexes, not the counts, which the next start rebuilds, see
//! `paging::backfill`), far faster than running the saga a million times.

use std::path::Path;

use sugang_storage::{Batch, Durability, Journal, JournalOptions, Store, StoreOptions};

use crate::delivery::{DELIVERIES, Delivery, DeliveryStatus};
use crate::enrollment::{EnrollStatus, Enrollment};
use crate::event::CourseDetails;
use crate::model::{CourseId, CourseName, EnrollmentId, Fee, MinStudents, PayMethod, StudentName, TeacherName};
use crate::mypage::{INSTRUCTOR_VIEWS, INSTRUCTOR_VIEWS_BY_TEACHER, InstructorView, STUDENT_VIEWS, StudentView};
use crate::notifier::{NOTIFICATIONS, NOTIFICATIONS_BY_RECIPIENT, Notification, RecipientRole};
use crate::payment::{PayStatus, Payment};
use crate::tables::{
    COURSES, CourseRecord, ENROLLMENTS, ENROLLMENTS_BY_STUDENT, Indexed, PAYMENTS, SEATS, SeatState, StoredSeat,
};

/// The student of enrollment `i` (1-based): two enrollments each.
pub fn student_of(i: u64) -> String {
    format!("student-{}", (i - 1) / 2)
}

/// The teacher of course `c` (1-based): ten courses each.
pub fn teacher_of(c: u64) -> String {
    format!("teacher-{}", (c - 1) / 10)
}

/// The course of enrollment `i` (1-based).
pub fn course_of(i: u64, courses: u64) -> u64 {
    (i - 1) % courses + 1
}

/// Whether enrollment `i` is canceled: one in a hundred.
pub fn canceled(i: u64) -> bool {
    i.is_multiple_of(100)
}

/// Fills the store at `dir` (new) and closes it.
pub async fn fill(dir: &Path, courses: u64, enrollments: u64) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(
        dir,
        StoreOptions { durability: Durability::Relaxed { flush_every_ms: 1000 }, ..StoreOptions::default() },
    )?;
    let (journal, task) = Journal::start(&store, JournalOptions::default())?;
    let name = CourseName::parse("course")?;
    let fee = Fee::parse(10_000)?;
    let pay_method = PayMethod::parse(None)?;
    let mut batch = Batch::new();
    for c in 1..=courses {
        let teacher = TeacherName::parse(&teacher_of(c))?;
        let details = CourseDetails {
            name: name.clone(),
            fee,
            text_book: None,
            capacity: None,
            min_students: MinStudents::parse(1)?,
        };
        let record = CourseRecord {
            id: CourseId::assigned(c),
            teacher: teacher.clone(),
            details,
            student_count: 0,
            registered_at_ms: 0,
            deleted: false,
        };
        batch.put(&COURSES, &c, &record)?;
        batch.put(&INSTRUCTOR_VIEWS_BY_TEACHER, &(teacher.as_str().to_owned(), c), &Indexed)?;
        let view = InstructorView {
            id: c,
            course_id: CourseId::assigned(c),
            course_name: name.clone(),
            teacher,
            fee,
            text_book: None,
            min_students: MinStudents::parse(1)?,
            open: true,
            student_count: (enrollments / courses) as u32,
        };
        batch.put(&INSTRUCTOR_VIEWS, &c, &view)?;
    }
    crate::system::layout::mark_current(&mut batch)?;
    journal.commit(std::mem::take(&mut batch)).await?;
    for i in 1..=enrollments {
        let c = course_of(i, courses);
        let student = StudentName::parse(&student_of(i))?;
        let status = if canceled(i) { EnrollStatus::Canceled } else { EnrollStatus::Completed };
        let enrollment = Enrollment {
            id: EnrollmentId::assigned(i),
            course_id: CourseId::assigned(c),
            course_name: name.clone(),
            teacher: TeacherName::parse(&teacher_of(c))?,
            student: student.clone(),
            fee,
            text_book: None,
            pay_method: pay_method.clone(),
            addr: Some("addr".into()),
            telephone: None,
            status,
            created_at_ms: i,
            canceled_at_ms: canceled(i).then_some(i),
        };
        batch.put(&ENROLLMENTS, &i, &enrollment)?;
        batch.put(&ENROLLMENTS_BY_STUDENT, &(student.as_str().to_owned(), i), &Indexed)?;
        let state = if canceled(i) { SeatState::Canceled } else { SeatState::Confirmed };
        batch.put(&SEATS, &(c, i), &StoredSeat { student: student.clone(), fee, state })?;
        let payment = Payment {
            enrollment_id: EnrollmentId::assigned(i),
            course_id: CourseId::assigned(c),
            student: student.clone(),
            amount: fee,
            pay_method: pay_method.clone(),
            status: if canceled(i) { PayStatus::Canceled } else { PayStatus::Approved },
            approved_at_ms: i,
            charge_key: i,
        };
        batch.put(&PAYMENTS, &i, &payment)?;
        let delivery = Delivery {
            id: i,
            apply_id: EnrollmentId::assigned(i),
            course_id: CourseId::assigned(c),
            student: student.clone(),
            addr: Some("addr".into()),
            text_book: None,
            status: if canceled(i) { DeliveryStatus::Canceled } else { DeliveryStatus::Started },
        };
        batch.put(&DELIVERIES, &i, &delivery)?;
        let view = StudentView {
            id: i,
            apply_id: EnrollmentId::assigned(i),
            course_id: CourseId::assigned(c),
            course_name: name.clone(),
            student: student.clone(),
            apply_status: status,
            pay_status: Some(payment.status),
            delivery_status: None,
        };
        batch.put(&STUDENT_VIEWS, &i, &view)?;
        let notification = Notification {
            id: i,
            recipient: student.as_str().to_owned(),
            recipient_role: RecipientRole::Student,
            kind: "ENROLLED".into(),
            apply_id: Some(i),
            course_id: Some(c),
            message: "enrolled".into(),
            created_at_ms: i,
        };
        batch.put(&NOTIFICATIONS, &i, &notification)?;
        batch.put(&NOTIFICATIONS_BY_RECIPIENT, &(student.as_str().to_owned(), i), &Indexed)?;
        if i.is_multiple_of(2_000) {
            journal.commit(std::mem::take(&mut batch)).await?;
        }
    }
    journal.commit(batch).await?;
    drop(journal);
    task.await?;
    let closing = store.closing();
    drop(store);
    closing.closed(std::time::Duration::from_secs(30)).await;
    Ok(())
}
