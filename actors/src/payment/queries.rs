//! The payment queries of the facade, beside the table they read, and the
//! count they need kept: payments recorded, added to in the batch that
//! records a payment (the completion's, see `enrollment::queries::count_events`).

use sugang_storage::{Batch, Count, StorageError, Store, Table};

use super::Payment;
use crate::Sugang;
use crate::model::EnrollmentId;
use crate::paging::{PageRequest, Paged, RecountError, count, id_page, paginate, set_count};
use crate::tables::PAYMENTS;

/// `"all"`: payments recorded (a payment stays, whatever its status).
pub(crate) const PAYMENT_COUNTS: Table<String, Count> = Table::new("payment_counts");

/// A payment was recorded in this batch.
pub(crate) fn count_recorded(batch: &mut Batch) {
    batch.add(&PAYMENT_COUNTS, &"all".to_owned(), 1);
}

/// Rebuilds the count from the table (see `paging::backfill`).
pub(crate) fn recount(store: &Store, batch: &mut Batch) -> Result<(), RecountError> {
    let mut n = 0;
    for key in store.scan(&PAYMENTS).keys() {
        key?;
        n += 1;
    }
    set_count(batch, &PAYMENT_COUNTS, "all", n)
}

impl Sugang {
    /// A payment (its id is its enrollment's).
    pub fn payment(&self, id: EnrollmentId) -> Result<Option<Payment>, StorageError> {
        self.store().get(&PAYMENTS, &id.get())
    }

    /// Payments, optionally of one enrollment, in id order.
    pub fn payments(&self, apply_id: Option<u64>, page: PageRequest) -> Result<Paged<Payment>, StorageError> {
        match apply_id {
            Some(id) => paginate(self.store().get(&PAYMENTS, &id)?.into_iter().map(Ok), page),
            None => id_page(self.store(), &PAYMENTS, count(self.store(), &PAYMENT_COUNTS, "all")?, page),
        }
    }
}
