//! The payment queries of the facade, beside the table they read.

use sugang_storage::StorageError;

use super::Payment;
use crate::Sugang;
use crate::model::EnrollmentId;
use crate::paging::{PageRequest, Paged, paginate};
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
            None => paginate(self.store().scan(&PAYMENTS).map(|item| item.map(|(_, p)| p)), page),
        }
    }
}
