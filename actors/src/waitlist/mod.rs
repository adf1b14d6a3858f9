//! Waitlists and the truth about seats: what the facade answers about a
//! course's seats (held by completed enrollments, or by payments in
//! progress).
//!
//! Reads the course's own tables; writes nothing.

use sugang_storage::StorageError;

use crate::model::CourseId;
use crate::system::Sugang;
use crate::tables::SEATS;

/// A course's held seats, as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeatCounts {
    /// Seats of completed enrollments (the API's studentCount).
    pub confirmed: u32,
    /// Seats held by payments in progress (pending sagas or promotions).
    pub pending: u32,
}

impl Sugang {
    /// The seats of course `id` as stored now: for invariant checks, demos
    /// and tests (a full scan of the course's seats).
    pub fn seat_counts(&self, id: CourseId) -> Result<SeatCounts, StorageError> {
        let mut counts = SeatCounts::default();
        for item in self.store().scan_prefix(&SEATS, &id.get()) {
            let (_, seat) = item?;
            if seat.confirmed {
                counts.confirmed += 1;
            } else {
                counts.pending += 1;
            }
        }
        Ok(counts)
    }
}
