//! The payment queries of the facade, beside the table they read. The count
//! of payments is the count of enrollments (completed and canceled): each
//! records its payment in the batch that records it, and both stay.

use sugang_storage::StorageError;

use super::Payment;
use crate::Sugang;
use crate::enrollment::EnrollStatus;
use crate::enrollment::queries::ENROLLMENT_COUNTS;
use crate::model::EnrollmentId;
use crate::paging::{PageRequest, Paged, count, id_page, paginate};
use crate::tables::PAYMENTS;

impl Sugang {
    /// A payment (its id is its enrollment's).
    pub fn payment(&self, id: EnrollmentId) -> Result<Option<Payment>, StorageError> {
        self.store().get(&PAYMENTS, &id.get())
    }

    /// Payments, optionally of one enrollment, in id order.
    pub fn payments(&self, apply_id: Option<u64>, page: PageRequest) -> Result<Paged<Payment>, StorageError> {
        match apply_id {
            Some(id) => paginate(self.store().get(&PAYMENTS, &id)?.into_iter().map(Ok), page),
            None => {
                // Every enrollment recorded its payment in the same batch,
                // and both stay: their counts are one.
                let store = self.store();
                let completed = count(store, &ENROLLMENT_COUNTS, EnrollStatus::Completed.as_str())?;
                let canceled = count(store, &ENROLLMENT_COUNTS, EnrollStatus::Canceled.as_str())?;
                id_page(store, &PAYMENTS, completed + canceled, page)
            }
        }
    }
}
