//! My-page: the CQRS read models, kept only from events.
//!
//! The student view (one per enrollment: course, applyStatus, payStatus,
//! deliveryStatus), the instructor view (one per course: fee, textbook,
//! openYn, studentCount) and the course schedules (one per course: openYn,
//! studentCount). Per-enrollment effects belong to the worker owning the
//! enrollment id, per-course effects to the worker owning the course id, so
//! any number of workers never write the same record.
//!
//! Lean by layout: a completed enrollment costs my-page one student view and
//! its index entry, and its course's one instructor view. The schedule is
//! served from the instructor view (it is a subset of it), and the delivery
//! status from the delivery read model's record of the same enrollment, read
//! with the page (`?after=` waits for delivery's reactions first, see
//! `bus::Bus::wait_for`), so neither costs a write. The only other table its
//! queries read is that one.

use serde::{Deserialize, Serialize};
use sugang_storage::{Batch, Committed, Count, Record, StorageError, Store, Table};

use crate::bus::{Part, Projection, ProjectionError};
use crate::delivery::DeliveryStatus;
use crate::enrollment::EnrollStatus;
use crate::event::Event;
use crate::model::{CourseId, CourseName, EnrollmentId, Fee, MinStudents, StudentName, TeacherName, TextBook};
use crate::paging::{
    PageRequest, Paged, RECOUNT_CHUNK, RecountError, count, id_page, index_page, present_page, set_count,
};
use crate::payment::PayStatus;
use crate::tables::{ENROLLMENTS_BY_STUDENT, Indexed};

/// A student's view of one enrollment (`/inquiryMypages`). Its id is the
/// enrollment's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudentView {
    pub id: u64,
    pub apply_id: EnrollmentId,
    pub course_id: CourseId,
    pub course_name: CourseName,
    pub student: StudentName,
    pub apply_status: EnrollStatus,
    pub pay_status: Option<PayStatus>,
    pub delivery_status: Option<DeliveryStatus>,
}

impl Record for StudentView {}

/// An instructor's view of one course (`/mypages`). Its id is the course's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructorView {
    pub id: u64,
    pub course_id: CourseId,
    pub course_name: CourseName,
    pub teacher: TeacherName,
    pub fee: Fee,
    pub text_book: Option<TextBook>,
    /// Kept to derive `open` when enrollments move studentCount.
    pub min_students: MinStudents,
    pub open: bool,
    pub student_count: u32,
}

impl Record for InstructorView {}

/// A course's schedule (`/courseSchedules`). Its id is the course's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: u64,
    pub course_id: CourseId,
    pub course_name: CourseName,
    pub teacher: TeacherName,
    pub open: bool,
    pub student_count: u32,
}

impl Record for Schedule {}

pub(crate) const STUDENT_VIEWS: Table<u64, StudentView> = Table::new("mypage_students");
pub(crate) const INSTRUCTOR_VIEWS: Table<u64, InstructorView> = Table::new("mypage_instructors");
pub(crate) const INSTRUCTOR_VIEWS_BY_TEACHER: Table<(String, u64), Indexed> =
    Table::new("mypage_instructors_by_teacher");
/// Where schedules were stored before they were served from the instructor
/// views; emptied by the one-time rebuild (`paging::backfill`).
const SCHEDULES: Table<u64, Schedule> = Table::new("course_schedules");
/// `"students"`: student views; `"instructors"`: instructor views (live
/// courses). Added to in the batch that creates or deletes a view.
pub(crate) const MYPAGE_COUNTS: Table<String, Count> = Table::new("mypage_counts");

impl From<InstructorView> for Schedule {
    fn from(view: InstructorView) -> Self {
        Schedule {
            id: view.id,
            course_id: view.course_id,
            course_name: view.course_name,
            teacher: view.teacher,
            open: view.open,
            student_count: view.student_count,
        }
    }
}

/// Rebuilds the counts from the tables and drops the schedules stored
/// before they were served from the instructor views (see `paging::backfill`).
pub(crate) fn recount(store: &Store, batch: &mut Batch, full: &mut Vec<Batch>) -> Result<(), RecountError> {
    let (mut students, mut instructors) = (0, 0);
    for key in store.scan(&STUDENT_VIEWS).keys() {
        key?;
        students += 1;
    }
    for key in store.scan(&INSTRUCTOR_VIEWS).keys() {
        key?;
        instructors += 1;
    }
    for key in store.scan(&SCHEDULES).keys() {
        batch.delete(&SCHEDULES, &key?);
        if batch.key_count() >= RECOUNT_CHUNK {
            full.push(std::mem::take(batch));
        }
    }
    set_count(batch, &MYPAGE_COUNTS, "students", students)?;
    set_count(batch, &MYPAGE_COUNTS, "instructors", instructors)
}

/// Fills in the delivery status of student views from the delivery read
/// model (see the module doc).
fn with_delivery(store: &Store, mut views: Vec<StudentView>) -> Result<Vec<StudentView>, StorageError> {
    for view in &mut views {
        view.delivery_status = store.get(&crate::delivery::DELIVERIES, &view.id)?.map(|d| d.status);
    }
    Ok(views)
}

pub(crate) struct MyPageProjection;

impl MyPageProjection {
    /// Updates the instructor view and the schedule of a course.
    fn course(
        store: &Store,
        batch: &mut Batch,
        course_id: CourseId,
        change: impl FnOnce(&mut InstructorView),
    ) -> Result<u64, ProjectionError> {
        let id = course_id.get();
        let Some(mut view) = store.read_through(batch, &INSTRUCTOR_VIEWS, &id)? else { return Ok(0) };
        change(&mut view);
        view.open = view.student_count >= view.min_students.get();
        write_course(batch, &view)?;
        Ok(1)
    }

    /// Updates the student view of an enrollment.
    fn enrollment(
        store: &Store,
        batch: &mut Batch,
        enrollment_id: EnrollmentId,
        change: impl FnOnce(&mut StudentView),
    ) -> Result<u64, ProjectionError> {
        let id = enrollment_id.get();
        let Some(mut view) = store.read_through(batch, &STUDENT_VIEWS, &id)? else { return Ok(0) };
        change(&mut view);
        batch.put(&STUDENT_VIEWS, &id, &view)?;
        Ok(1)
    }
}

fn write_course(batch: &mut Batch, view: &InstructorView) -> Result<(), ProjectionError> {
    batch.put(&INSTRUCTOR_VIEWS, &view.id, view)?;
    Ok(())
}

impl Projection for MyPageProjection {
    fn name(&self) -> &'static str {
        "mypage"
    }

    fn apply(
        &self,
        store: &Store,
        event: &Committed<Event>,
        part: Part,
        batch: &mut Batch,
    ) -> Result<u64, ProjectionError> {
        let owns_course = |course: &CourseId| part.owns(course.get());
        let owns_enrollment = |enrollment: &EnrollmentId| part.owns(enrollment.get());
        Ok(match &event.event {
            Event::CourseRegistered { course_id, teacher, details, .. } if owns_course(course_id) => {
                let id = course_id.get();
                if store.read_through(batch, &INSTRUCTOR_VIEWS, &id)?.is_some() {
                    return Ok(0);
                }
                let view = InstructorView {
                    id,
                    course_id: *course_id,
                    course_name: details.name.clone(),
                    teacher: teacher.clone(),
                    fee: details.fee,
                    text_book: details.text_book.clone(),
                    min_students: details.min_students,
                    open: false,
                    student_count: 0,
                };
                write_course(batch, &view)?;
                batch.put(&INSTRUCTOR_VIEWS_BY_TEACHER, &(teacher.as_str().to_owned(), id), &Indexed)?;
                batch.add(&MYPAGE_COUNTS, &"instructors".to_owned(), 1);
                1
            }
            Event::CourseModified { course_id, after, .. } if owns_course(course_id) => {
                Self::course(store, batch, *course_id, |view| {
                    view.course_name = after.name.clone();
                    view.fee = after.fee;
                    view.text_book = after.text_book.clone();
                    view.min_students = after.min_students;
                })?
            }
            Event::CourseDeleted { course_id, teacher, .. } if owns_course(course_id) => {
                let id = course_id.get();
                if store.read_through(batch, &INSTRUCTOR_VIEWS, &id)?.is_none() {
                    return Ok(0);
                }
                batch.delete(&INSTRUCTOR_VIEWS, &id);
                batch.delete(&INSTRUCTOR_VIEWS_BY_TEACHER, &(teacher.as_str().to_owned(), id));
                batch.add(&MYPAGE_COUNTS, &"instructors".to_owned(), -1);
                1
            }
            Event::CourseOpened { course_id, student_count, .. }
            | Event::CourseClosed { course_id, student_count, .. }
                if owns_course(course_id) =>
            {
                Self::course(store, batch, *course_id, |view| view.student_count = *student_count)?
            }
            Event::EnrollmentCompleted { enrollment_id, course_id, course_name, student, student_count, .. } => {
                let mut effects = 0;
                if owns_course(course_id) {
                    effects += Self::course(store, batch, *course_id, |view| view.student_count = *student_count)?;
                }
                let id = enrollment_id.get();
                if owns_enrollment(enrollment_id) && store.read_through(batch, &STUDENT_VIEWS, &id)?.is_none() {
                    let view = StudentView {
                        id,
                        apply_id: *enrollment_id,
                        course_id: *course_id,
                        course_name: course_name.clone(),
                        student: student.clone(),
                        apply_status: EnrollStatus::Completed,
                        pay_status: None,
                        delivery_status: None,
                    };
                    batch.put(&STUDENT_VIEWS, &id, &view)?;
                    batch.add(&MYPAGE_COUNTS, &"students".to_owned(), 1);
                    effects += 1;
                }
                effects
            }
            Event::EnrollmentCanceled { enrollment_id, course_id, student_count, .. } => {
                let mut effects = 0;
                if owns_course(course_id) {
                    effects += Self::course(store, batch, *course_id, |view| view.student_count = *student_count)?;
                }
                if owns_enrollment(enrollment_id) {
                    effects +=
                        Self::enrollment(store, batch, *enrollment_id, |v| v.apply_status = EnrollStatus::Canceled)?;
                }
                effects
            }
            Event::PaymentApproved { enrollment_id, .. } if owns_enrollment(enrollment_id) => {
                Self::enrollment(store, batch, *enrollment_id, |v| v.pay_status = Some(PayStatus::Approved))?
            }
            Event::PaymentCancelRequested { enrollment_id, .. } if owns_enrollment(enrollment_id) => {
                Self::enrollment(store, batch, *enrollment_id, |v| v.pay_status = Some(PayStatus::CancelPending))?
            }
            Event::PaymentCanceled { enrollment_id, .. } if owns_enrollment(enrollment_id) => {
                Self::enrollment(store, batch, *enrollment_id, |v| v.pay_status = Some(PayStatus::Canceled))?
            }
            // The delivery status is read from the delivery read model with
            // the page (see the module doc): nothing to write.
            _ => 0,
        })
    }
}

// ---- queries (the facade's, beside the tables they read) ---------------

impl crate::Sugang {
    /// Students' views, optionally of one student.
    pub fn student_views(&self, student: Option<&str>, page: PageRequest) -> Result<Paged<StudentView>, StorageError> {
        let store = self.store();
        let paged = match student {
            // A student's views are their enrollments' (same ids).
            Some(student) => present_page(store, &ENROLLMENTS_BY_STUDENT, &student.to_owned(), &STUDENT_VIEWS, page)?,
            None => id_page(store, &STUDENT_VIEWS, count(store, &MYPAGE_COUNTS, "students")?, page)?,
        };
        Ok(Paged { items: with_delivery(store, paged.items)?, total: paged.total })
    }

    /// Instructors' views, optionally of one teacher.
    pub fn instructor_views(
        &self,
        teacher: Option<&str>,
        page: PageRequest,
    ) -> Result<Paged<InstructorView>, StorageError> {
        let store = self.store();
        match teacher {
            Some(teacher) => {
                index_page(store, &INSTRUCTOR_VIEWS_BY_TEACHER, &teacher.to_owned(), &INSTRUCTOR_VIEWS, page)
            }
            None => id_page(store, &INSTRUCTOR_VIEWS, count(store, &MYPAGE_COUNTS, "instructors")?, page),
        }
    }

    /// Course schedules.
    pub fn schedules(&self, page: PageRequest) -> Result<Paged<Schedule>, StorageError> {
        let views = self.instructor_views(None, page)?;
        Ok(Paged { items: views.items.into_iter().map(Schedule::from).collect(), total: views.total })
    }

    /// A course's schedule (its id is the course's).
    pub fn schedule(&self, id: u64) -> Result<Option<Schedule>, StorageError> {
        Ok(self.instructor_view(id)?.map(Schedule::from))
    }

    /// An instructor's view of a course (its id is the course's).
    pub fn instructor_view(&self, id: u64) -> Result<Option<InstructorView>, StorageError> {
        self.store().get(&INSTRUCTOR_VIEWS, &id)
    }

    /// A student's view of an enrollment (its id is the enrollment's).
    pub fn student_view(&self, id: u64) -> Result<Option<StudentView>, StorageError> {
        let store = self.store();
        Ok(with_delivery(store, store.get(&STUDENT_VIEWS, &id)?.into_iter().collect())?.pop())
    }
}
