//! The tables the actors own, and the records stored in them.
//!
//! Owns the storage layout of the domain: which table holds what, keyed how,
//! and which secondary indexes exist. Only the actor that owns a record writes
//! it (through the journal); the facade reads them for queries.

use serde::{Deserialize, Serialize};
use sugang_storage::{Record, Table};

use crate::course::Seat;
use crate::enrollment::Enrollment;
use crate::event::CourseDetails;
use crate::model::{CourseId, Fee, StudentName, TeacherName};
use crate::payment::Payment;

/// A course as stored: its details and its studentCount (the seats are
/// in [`SEATS`], one record each, so a seat change writes one small record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourseRecord {
    pub id: CourseId,
    pub teacher: TeacherName,
    pub details: CourseDetails,
    pub student_count: u32,
    pub registered_at_ms: u64,
    /// Deleted courses stay as tombstones so their id is never reused.
    pub deleted: bool,
}

impl Record for CourseRecord {}

/// Where a stored seat stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeatState {
    /// Held by a saga that has not finished (under its reservation key).
    Held,
    /// A completed enrollment's (under its enrollment id).
    Confirmed,
    /// A canceled enrollment's, kept (it holds no seat): a course's seats
    /// are also the index of its enrollments (`GET /classes?courseId=`).
    Canceled,
}

/// A seat as stored in [`SEATS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSeat {
    pub student: StudentName,
    pub fee: Fee,
    pub state: SeatState,
}

impl StoredSeat {
    pub(crate) fn new(seat: &Seat) -> Self {
        let state = if seat.confirmed { SeatState::Confirmed } else { SeatState::Held };
        StoredSeat { student: seat.student.clone(), fee: seat.fee, state }
    }
}

impl Record for StoredSeat {
    /// 2: a canceled enrollment's seat is kept, so the state replaces the
    /// `confirmed` flag.
    const VERSION: u8 = 2;

    /// Version 1 was the course's `Seat` itself (held or confirmed).
    fn upgrade(version: u8, body: &[u8]) -> Option<Result<Self, postcard::Error>> {
        (version == 1).then(|| postcard::from_bytes::<Seat>(body).map(|seat| StoredSeat::new(&seat)))
    }
}

/// Why the gateway owes a refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundPurpose {
    /// A completed enrollment was canceled: its payment is `CANCEL_PENDING`.
    Cancel,
    /// A saga failed after the gateway may have charged (a timeout): void
    /// whatever it charged. There is no payment resource to update.
    Void,
}

/// A refund the gateway owes, retried until it succeeds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundOwed {
    pub purpose: RefundPurpose,
    pub since_ms: u64,
}

impl Record for RefundOwed {}

/// An index entry: the key says it all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indexed;

impl Record for Indexed {}

/// The key a completed enrollment's fee was charged under at the gateway
/// (its saga's reservation key), for the refund of a cancellation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeKey(pub u64);

impl Record for ChargeKey {}

/// A durable counter (the reservation key high-water mark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter(pub u64);

impl Record for Counter {}

/// Who runs a subscriber unit in a cluster: the node and the epoch of the
/// lease it took the unit under. A unit's worker commits only while the
/// record still names it (a guard checked by the log's writer), and a
/// record is only ever replaced by one of a later epoch (see
/// `Sugang::hold_unit`), so a holder that lost its lease, paused or cut
/// off, commits nothing once the next holder has written its record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitHolder {
    pub node: String,
    pub epoch: u64,
}

impl Record for UnitHolder {}

pub(crate) const COURSES: Table<u64, CourseRecord> = Table::new("courses");
/// (course id, saga key or enrollment id) → seat: the holds of unfinished
/// sagas (from `RESERVATION_BASE`), and below them the seats of the course's
/// enrollments, canceled ones included: the index of its enrollments.
pub(crate) const SEATS: Table<(u64, u64), StoredSeat> = Table::new("seats");
pub(crate) const ENROLLMENTS: Table<u64, Enrollment> = Table::new("enrollments");
/// (student, enrollment id).
pub(crate) const ENROLLMENTS_BY_STUDENT: Table<(String, u64), Indexed> = Table::new("enrollments_by_student");
/// enrollment id (= payment id) → payment.
pub(crate) const PAYMENTS: Table<u64, Payment> = Table::new("payments");
/// enrollment id → the refund the gateway owes it.
pub(crate) const REFUNDS: Table<u64, RefundOwed> = Table::new("refunds_owed");
pub(crate) const COUNTERS: Table<String, Counter> = Table::new("counters");
/// subscriber unit (`mypage#1`) → who runs it (cluster nodes only).
pub(crate) const UNIT_HOLDERS: Table<String, UnitHolder> = Table::new("unit_holders");
/// enrollment id → the key its fee was charged under: layout 1 only (now
/// on the payment), read by the layout upgrade (`system::layout`).
pub(crate) const CHARGE_KEYS: Table<u64, ChargeKey> = Table::new("charge_keys");
