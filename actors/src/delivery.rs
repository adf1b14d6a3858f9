//! Delivery: textbook shipments, a subscriber of the event log.
//!
//! Starts a shipment when an enrollment completes and cancels it when the
//! enrollment is canceled, recording `DeliveryStarted` / `DeliveryCanceled`.
//! Knows events, never the aggregates' tables; owns only its own.

use serde::{Deserialize, Serialize};
use sugang_storage::{Batch, Committed, Count, Record, StorageError, Store, Table};

use crate::bus::{Part, Projection, ProjectionError};
use crate::event::Event;
use crate::model::{CourseId, EnrollmentId, StudentName, TextBook};
use crate::paging::{PageRequest, Paged, RecountError, count, id_page, paginate, present_page, set_count};
use crate::tables::ENROLLMENTS_BY_STUDENT;

/// The API's `deliveryStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    Started,
    Canceled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Started => "STARTED",
            DeliveryStatus::Canceled => "CANCELED",
        }
    }
}

/// A textbook shipment. Its id is its enrollment's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub apply_id: EnrollmentId,
    pub course_id: CourseId,
    pub student: StudentName,
    pub addr: Option<String>,
    pub text_book: Option<TextBook>,
    pub status: DeliveryStatus,
}

impl Record for Delivery {}

pub(crate) const DELIVERIES: Table<u64, Delivery> = Table::new("deliveries");

/// `"all"`: shipments recorded (a canceled one stays), added to in the batch
/// that records one.
pub(crate) const DELIVERY_COUNTS: Table<String, Count> = Table::new("delivery_counts");

/// Rebuilds the count from the table (see `paging::backfill`).
pub(crate) fn recount(store: &Store, batch: &mut Batch) -> Result<(), RecountError> {
    let mut n = 0;
    for key in store.scan(&DELIVERIES).keys() {
        key?;
        n += 1;
    }
    set_count(batch, &DELIVERY_COUNTS, "all", n)
}

pub(crate) struct DeliveryProjection;

impl Projection for DeliveryProjection {
    fn name(&self) -> &'static str {
        "delivery"
    }

    fn reacts(&self) -> bool {
        true
    }

    fn apply(
        &self,
        store: &Store,
        event: &Committed<Event>,
        part: Part,
        batch: &mut Batch,
    ) -> Result<u64, ProjectionError> {
        match &event.event {
            Event::EnrollmentCompleted { enrollment_id, course_id, student, addr, text_book, at_ms, .. }
                if part.owns(enrollment_id.get()) =>
            {
                let id = enrollment_id.get();
                if store.read_through(batch, &DELIVERIES, &id)?.is_some() {
                    return Ok(0);
                }
                let delivery = Delivery {
                    id,
                    apply_id: *enrollment_id,
                    course_id: *course_id,
                    student: student.clone(),
                    addr: addr.clone(),
                    text_book: text_book.clone(),
                    status: DeliveryStatus::Started,
                };
                batch.put(&DELIVERIES, &id, &delivery)?;
                batch.add(&DELIVERY_COUNTS, &"all".to_owned(), 1);
                let started = Event::DeliveryStarted {
                    enrollment_id: *enrollment_id,
                    course_id: *course_id,
                    student: student.clone(),
                    addr: addr.clone(),
                    text_book: text_book.clone(),
                    at_ms: *at_ms,
                };
                batch.append(started.partition_key(), &started)?;
                tracing::debug!(enrollment_id = id, course_id = course_id.get(), "shipment started");
                Ok(1)
            }
            Event::EnrollmentCanceled { enrollment_id, course_id, student, at_ms, .. }
                if part.owns(enrollment_id.get()) =>
            {
                let id = enrollment_id.get();
                let Some(mut delivery) = store.read_through(batch, &DELIVERIES, &id)? else { return Ok(0) };
                if delivery.status == DeliveryStatus::Canceled {
                    return Ok(0);
                }
                delivery.status = DeliveryStatus::Canceled;
                batch.put(&DELIVERIES, &id, &delivery)?;
                let canceled = Event::DeliveryCanceled {
                    enrollment_id: *enrollment_id,
                    course_id: *course_id,
                    student: student.clone(),
                    at_ms: *at_ms,
                };
                batch.append(canceled.partition_key(), &canceled)?;
                tracing::debug!(enrollment_id = id, course_id = course_id.get(), "shipment canceled");
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

// ---- queries (the facade's, beside the tables they read) ---------------

impl crate::Sugang {
    /// A shipment (its id is its enrollment's).
    pub fn delivery(&self, id: u64) -> Result<Option<Delivery>, StorageError> {
        self.store().get(&DELIVERIES, &id)
    }

    /// Shipments, by enrollment and/or student.
    pub fn deliveries(
        &self,
        apply_id: Option<u64>,
        student: Option<&str>,
        page: PageRequest,
    ) -> Result<Paged<Delivery>, StorageError> {
        let store = self.store();
        let keep = |d: &Delivery| student.is_none_or(|s| d.student.as_str() == s);
        match (apply_id, student) {
            (Some(id), _) => paginate(store.get(&DELIVERIES, &id)?.into_iter().filter(keep).map(Ok), page),
            // A student's shipments are their enrollments' (same ids).
            (None, Some(student)) => {
                present_page(store, &ENROLLMENTS_BY_STUDENT, &student.to_owned(), &DELIVERIES, page)
            }
            (None, None) => id_page(store, &DELIVERIES, count(store, &DELIVERY_COUNTS, "all")?, page),
        }
    }
}
