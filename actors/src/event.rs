//! The event catalogue: every fact sugang records, self-contained.
//!
//! Each event carries its entity ids, its correlation id (the enrollment id,
//! where there is one; a refused or unfinished saga has none yet, so its seat
//! events carry the saga's reservation key in `enrollment_id`), the time its
//! command was handled, and the values a projection needs (names, fees, counts,
//! old values), so that read models never read another context's tables. Owns
//! only the shapes; aggregates decide when to emit them, projections decide
//! what to do with them.
//!
//! | event | emitted by | consumed by |
//! | --- | --- | --- |
//! | `CourseRegistered` | course | mypage (instructor view, schedules) |
//! | `CourseModified` | course | mypage |
//! | `CourseDeleted` | course | mypage |
//! | `CourseOpened`, `CourseClosed` | course (studentCount crosses minStudents) | mypage, notifier |
//! | `SeatReserved` | course (saga step 1, under the saga's reservation key) | (audit) |
//! | `SeatReleased` | course (saga refused, or interrupted; reservation key) | (audit) |
//! | `EnrollmentCompleted` | course, confirming the seat of the saga under the enrollment's new id (same batch as the enrollment record) | delivery, mypage, notifier |
//! | `EnrollmentRejected` | course, releasing the seat of a refused or interrupted saga (reservation key) | (audit) |
//! | `EnrollmentCanceled` | course, releasing the seat of a cancellation | delivery, mypage, notifier |
//! | `PaymentApproved` | payment, in the completion's batch | mypage, notifier |
//! | `PaymentCancelRequested` | payment, in the cancellation's batch | mypage |
//! | `PaymentCanceled` | payment (refund confirmed by the gateway) | mypage, notifier |
//! | `DeliveryStarted` | delivery (on `EnrollmentCompleted`) | mypage, notifier |
//! | `DeliveryCanceled` | delivery (on `EnrollmentCanceled`) | mypage, notifier |
//! | `WaitlistCapacitySet` | course (registered with, or changed to, a waitlist capacity) | waitlist |
//! | `WaitlistJoined` | course (a request found the course full and joined) | waitlist, notifier |
//! | `WaitlistPromoted` | course, in the batch that frees a seat, with the `SeatReserved` of the entry's saga | waitlist |
//! | `WaitlistEnrolled` | course, confirming a promoted entry's seat (same batch as its `EnrollmentCompleted`) | waitlist, notifier |
//! | `WaitlistFailed` | course, releasing a promoted entry's seat (declined or unavailable payment) | waitlist, notifier |
//! | `WaitlistLeft` | course (the student left) | waitlist |
//! | `WaitlistCanceled` | course (deleted with entries waiting) | waitlist, notifier |

use serde::{Deserialize, Serialize};
use sugang_storage::Record;

use crate::model::{
    Capacity, CourseId, CourseName, EnrollmentId, Fee, MinStudents, PayMethod, StudentName, TeacherName, TextBook,
};

/// A course's editable details, as events carry them (before and after).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourseDetails {
    pub name: CourseName,
    pub fee: Fee,
    pub text_book: Option<TextBook>,
    pub capacity: Option<Capacity>,
    pub min_students: MinStudents,
}

/// Why an enrollment ended without completing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The gateway declined the payment.
    PaymentDeclined,
    /// The gateway did not answer in time or failed.
    PaymentUnavailable,
    /// The breaker or the bulkhead refused the call before it was made.
    PaymentRefused,
    /// The process stopped mid-saga; recovery compensated at start-up.
    Interrupted,
}

/// Every fact sugang records. `at_ms` is unix milliseconds, read once by the
/// actor that handled the command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    CourseRegistered {
        course_id: CourseId,
        teacher: TeacherName,
        details: CourseDetails,
        at_ms: u64,
    },
    CourseModified {
        course_id: CourseId,
        teacher: TeacherName,
        before: CourseDetails,
        after: CourseDetails,
        student_count: u32,
        at_ms: u64,
    },
    CourseDeleted {
        course_id: CourseId,
        teacher: TeacherName,
        name: CourseName,
        at_ms: u64,
    },
    CourseOpened {
        course_id: CourseId,
        teacher: TeacherName,
        name: CourseName,
        student_count: u32,
        at_ms: u64,
    },
    CourseClosed {
        course_id: CourseId,
        teacher: TeacherName,
        name: CourseName,
        student_count: u32,
        at_ms: u64,
    },
    SeatReserved {
        course_id: CourseId,
        enrollment_id: EnrollmentId,
        student: StudentName,
        fee: Fee,
        at_ms: u64,
    },
    SeatReleased {
        course_id: CourseId,
        enrollment_id: EnrollmentId,
        student: StudentName,
        reason: RejectReason,
        at_ms: u64,
    },
    EnrollmentCompleted {
        enrollment_id: EnrollmentId,
        course_id: CourseId,
        course_name: CourseName,
        teacher: TeacherName,
        student: StudentName,
        fee: Fee,
        text_book: Option<TextBook>,
        pay_method: PayMethod,
        addr: Option<String>,
        telephone: Option<String>,
        /// The course's studentCount with this enrollment counted.
        student_count: u32,
        at_ms: u64,
    },
    EnrollmentRejected {
        enrollment_id: EnrollmentId,
        course_id: CourseId,
        student: StudentName,
        reason: RejectReason,
        at_ms: u64,
    },
    EnrollmentCanceled {
        enrollment_id: EnrollmentId,
        course_id: CourseId,
        course_name: CourseName,
        teacher: TeacherName,
        student: StudentName,
        fee: Fee,
        /// The course's studentCount with this enrollment no longer counted.
        student_count: u32,
        at_ms: u64,
    },
    PaymentApproved {
        enrollment_id: EnrollmentId,
        course_id: CourseId,
        student: StudentName,
        amount: Fee,
        pay_method: PayMethod,
        at_ms: u64,
    },
    PaymentCancelRequested {
        enrollment_id: EnrollmentId,
        student: StudentName,
        amount: Fee,
        at_ms: u64,
    },
    PaymentCanceled {
        enrollment_id: EnrollmentId,
        student: StudentName,
        amount: Fee,
        at_ms: u64,
    },
    DeliveryStarted {
        enrollment_id: EnrollmentId,
        course_id: CourseId,
        student: StudentName,
        addr: Option<String>,
        text_book: Option<TextBook>,
        at_ms: u64,
    },
    DeliveryCanceled {
        enrollment_id: EnrollmentId,
        course_id: CourseId,
        student: StudentName,
        at_ms: u64,
    },
    WaitlistCapacitySet {
        course_id: CourseId,
        before: u32,
        after: u32,
        at_ms: u64,
    },
    WaitlistJoined {
        entry_id: u64,
        course_id: CourseId,
        course_name: CourseName,
        student: StudentName,
        /// Its place among the entries waiting, from 1.
        position: u32,
        at_ms: u64,
    },
    /// A freed seat is given to the entry: its saga holds the seat under
    /// `reservation` (see `course::promotion_key`).
    WaitlistPromoted {
        entry_id: u64,
        course_id: CourseId,
        student: StudentName,
        reservation: EnrollmentId,
        at_ms: u64,
    },
    WaitlistEnrolled {
        entry_id: u64,
        course_id: CourseId,
        course_name: CourseName,
        student: StudentName,
        enrollment_id: EnrollmentId,
        at_ms: u64,
    },
    WaitlistFailed {
        entry_id: u64,
        course_id: CourseId,
        course_name: CourseName,
        student: StudentName,
        reason: RejectReason,
        at_ms: u64,
    },
    WaitlistLeft {
        entry_id: u64,
        course_id: CourseId,
        student: StudentName,
        at_ms: u64,
    },
    WaitlistCanceled {
        entry_id: u64,
        course_id: CourseId,
        course_name: CourseName,
        student: StudentName,
        at_ms: u64,
    },
}

impl Record for Event {}

impl Event {
    /// The partition key subscribers split the log by: the enrollment id for
    /// enrollment-scoped events, the course id for course events.
    pub fn partition_key(&self) -> u64 {
        match self {
            Event::CourseRegistered { course_id, .. }
            | Event::CourseModified { course_id, .. }
            | Event::CourseDeleted { course_id, .. }
            | Event::CourseOpened { course_id, .. }
            | Event::CourseClosed { course_id, .. } => course_id.get(),
            Event::SeatReserved { enrollment_id, .. }
            | Event::SeatReleased { enrollment_id, .. }
            | Event::EnrollmentCompleted { enrollment_id, .. }
            | Event::EnrollmentRejected { enrollment_id, .. }
            | Event::EnrollmentCanceled { enrollment_id, .. }
            | Event::PaymentApproved { enrollment_id, .. }
            | Event::PaymentCancelRequested { enrollment_id, .. }
            | Event::PaymentCanceled { enrollment_id, .. }
            | Event::DeliveryStarted { enrollment_id, .. }
            | Event::DeliveryCanceled { enrollment_id, .. } => enrollment_id.get(),
            Event::WaitlistCapacitySet { course_id, .. } => course_id.get(),
            Event::WaitlistJoined { entry_id, .. }
            | Event::WaitlistPromoted { entry_id, .. }
            | Event::WaitlistEnrolled { entry_id, .. }
            | Event::WaitlistFailed { entry_id, .. }
            | Event::WaitlistLeft { entry_id, .. }
            | Event::WaitlistCanceled { entry_id, .. } => *entry_id,
        }
    }

    /// The event's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Event::CourseRegistered { .. } => "CourseRegistered",
            Event::CourseModified { .. } => "CourseModified",
            Event::CourseDeleted { .. } => "CourseDeleted",
            Event::CourseOpened { .. } => "CourseOpened",
            Event::CourseClosed { .. } => "CourseClosed",
            Event::SeatReserved { .. } => "SeatReserved",
            Event::SeatReleased { .. } => "SeatReleased",
            Event::EnrollmentCompleted { .. } => "EnrollmentCompleted",
            Event::EnrollmentRejected { .. } => "EnrollmentRejected",
            Event::EnrollmentCanceled { .. } => "EnrollmentCanceled",
            Event::PaymentApproved { .. } => "PaymentApproved",
            Event::PaymentCancelRequested { .. } => "PaymentCancelRequested",
            Event::PaymentCanceled { .. } => "PaymentCanceled",
            Event::DeliveryStarted { .. } => "DeliveryStarted",
            Event::DeliveryCanceled { .. } => "DeliveryCanceled",
            Event::WaitlistCapacitySet { .. } => "WaitlistCapacitySet",
            Event::WaitlistJoined { .. } => "WaitlistJoined",
            Event::WaitlistPromoted { .. } => "WaitlistPromoted",
            Event::WaitlistEnrolled { .. } => "WaitlistEnrolled",
            Event::WaitlistFailed { .. } => "WaitlistFailed",
            Event::WaitlistLeft { .. } => "WaitlistLeft",
            Event::WaitlistCanceled { .. } => "WaitlistCanceled",
        }
    }
}
