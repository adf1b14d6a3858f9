//! The Enrollment aggregate ("class" in the API): the record of a completed
//! or canceled enrollment, and the rules of its lifecycle.
//!
//! An enrollment becomes a resource only when its saga completes; until then
//! its seat (held by the course) is the saga's durable marker. The saga
//! itself lives in `actor.rs`. No I/O, no clock, no actor types here.

pub(crate) mod actor;
pub(crate) mod queries;

use serde::{Deserialize, Serialize};
use sugang_storage::{Batch, EncodeError, Record};

use crate::event::Event;
use crate::model::{CourseId, CourseName, EnrollmentId, Fee, PayMethod, StudentName, TeacherName, TextBook};
use crate::tables::{ENROLLMENTS, ENROLLMENTS_BY_STUDENT, Indexed};

/// The API's `status` of a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollStatus {
    Completed,
    Canceled,
}

impl EnrollStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollStatus::Completed => "COMPLETED",
            EnrollStatus::Canceled => "CANCELED",
        }
    }
}

/// A completed (or since canceled) enrollment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub id: EnrollmentId,
    pub course_id: CourseId,
    pub course_name: CourseName,
    /// The course's owner: who sees the enrollment on their my-page.
    pub teacher: TeacherName,
    pub student: StudentName,
    /// What was paid: the course's fee when the seat was taken.
    pub fee: Fee,
    pub text_book: Option<TextBook>,
    pub pay_method: PayMethod,
    pub addr: Option<String>,
    pub telephone: Option<String>,
    pub status: EnrollStatus,
    pub created_at_ms: u64,
    pub canceled_at_ms: Option<u64>,
}

impl Record for Enrollment {}

/// An enrollment's lifecycle, as far as it is a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnrollmentState {
    /// No completed enrollment under this id (none yet, or it was refused).
    Absent {
        id: EnrollmentId,
    },
    Recorded(Box<Enrollment>),
}

/// What can be asked of an enrollment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnrollmentCommand {
    /// Record the enrollment whose seat its course confirmed: the course's
    /// `EnrollmentCompleted` (saga step 3, see `transaction`).
    Enroll(Box<Event>),
    Cancel,
}

/// What a command means for an enrollment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Enroll: this is the new record.
    Record(Box<Enrollment>),
    /// Cancel: give the seat back in this course and refund the fee.
    Release { course_id: CourseId },
    /// An idempotent repeat: nothing to do.
    Nothing,
}

/// Why an enrollment refuses a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentRejection {
    #[error("enrollment {0} does not exist")]
    NotFound(EnrollmentId),
    /// An enrollment is recorded once, under an id never used before.
    #[error("enrollment {0} is already recorded")]
    AlreadyRecorded(EnrollmentId),
    /// What was to be recorded is not a completed enrollment under this id.
    #[error("enrollment {0} cannot be recorded from this event")]
    NotACompletion(EnrollmentId),
}

/// Decides what a command means for the enrollment. The events come from
/// the course (it confirms or releases the seat) and the payment; the
/// enrollment says whether they may be recorded (see `transaction`).
pub fn decide(state: &EnrollmentState, command: EnrollmentCommand) -> Result<Decision, EnrollmentRejection> {
    match (state, command) {
        (EnrollmentState::Absent { id }, EnrollmentCommand::Enroll(completed)) => {
            match apply(EnrollmentState::Absent { id: *id }, &completed) {
                EnrollmentState::Recorded(record) => Ok(Decision::Record(record)),
                EnrollmentState::Absent { id } => Err(EnrollmentRejection::NotACompletion(id)),
            }
        }
        (EnrollmentState::Recorded(e), EnrollmentCommand::Enroll(completed)) => {
            match apply(EnrollmentState::Absent { id: e.id }, &completed) {
                EnrollmentState::Recorded(again) if again == *e => Ok(Decision::Nothing),
                _ => Err(EnrollmentRejection::AlreadyRecorded(e.id)),
            }
        }
        (EnrollmentState::Absent { id }, EnrollmentCommand::Cancel) => Err(EnrollmentRejection::NotFound(*id)),
        (EnrollmentState::Recorded(e), EnrollmentCommand::Cancel) => match e.status {
            EnrollStatus::Completed => Ok(Decision::Release { course_id: e.course_id }),
            EnrollStatus::Canceled => Ok(Decision::Nothing),
        },
    }
}

/// Writes an enrollment as `record` now is, with what its lists keep: the
/// student index for a new one, the counts for the `events` of its batch.
/// The enrollment's one writer (through `transaction`).
pub(crate) fn write_recorded(batch: &mut Batch, record: &Enrollment, events: &[Event]) -> Result<(), EncodeError> {
    let id = record.id.get();
    batch.put(&ENROLLMENTS, &id, record)?;
    if events
        .iter()
        .any(|e| matches!(e, Event::EnrollmentCompleted { enrollment_id, .. } if *enrollment_id == record.id))
    {
        // By course, the course's seats index it (see `tables::SEATS`).
        batch.put(&ENROLLMENTS_BY_STUDENT, &(record.student.as_str().to_owned(), id), &Indexed)?;
    }
    queries::count_events(batch, events)
}

/// Applies an event. Total: other events leave the enrollment as it is.
pub fn apply(state: EnrollmentState, event: &Event) -> EnrollmentState {
    match (state, event) {
        (
            EnrollmentState::Absent { id },
            Event::EnrollmentCompleted {
                enrollment_id,
                course_id,
                course_name,
                teacher,
                student,
                fee,
                text_book,
                pay_method,
                addr,
                telephone,
                at_ms,
                ..
            },
        ) if id == *enrollment_id => EnrollmentState::Recorded(Box::new(Enrollment {
            id,
            course_id: *course_id,
            course_name: course_name.clone(),
            teacher: teacher.clone(),
            student: student.clone(),
            fee: *fee,
            text_book: text_book.clone(),
            pay_method: pay_method.clone(),
            addr: addr.clone(),
            telephone: telephone.clone(),
            status: EnrollStatus::Completed,
            created_at_ms: *at_ms,
            canceled_at_ms: None,
        })),
        (EnrollmentState::Recorded(mut e), Event::EnrollmentCanceled { enrollment_id, at_ms, .. })
            if e.id == *enrollment_id && e.status == EnrollStatus::Completed =>
        {
            e.status = EnrollStatus::Canceled;
            e.canceled_at_ms = Some(*at_ms);
            EnrollmentState::Recorded(e)
        }
        (state, _) => state,
    }
}

#[cfg(test)]
mod tests;
