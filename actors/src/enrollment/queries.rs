//! The enrollment (class) queries of the facade, beside the tables they read,
//! and what they need kept with the enrollments: counts (all, per status) and
//! the index of canceled enrollments, written by the saga in the batch that
//! completes or cancels an enrollment ([`count_events`], its one call in each).

use sugang_storage::{Batch, Count, EncodeError, StorageError, Store, Table};

use super::{EnrollStatus, Enrollment};
use crate::Sugang;
use crate::event::Event;
use crate::model::EnrollmentId;
use crate::paging::{
    PageRequest, Paged, RECOUNT_CHUNK, RecountError, count, id_page, index_page, lookup, paginate, set_count,
    walked_page,
};
use crate::system::RESERVATION_BASE;
use crate::tables::{ENROLLMENTS, ENROLLMENTS_BY_STUDENT, Indexed, SEATS};

/// Per status (`"COMPLETED"`, `"CANCELED"`); all is their sum.
pub(crate) const ENROLLMENT_COUNTS: Table<String, Count> = Table::new("enrollment_counts");
/// The ids of canceled enrollments (few next to the completed ones), so that
/// either status is a seek: canceled through this index, completed through
/// the table's keys minus these.
pub(crate) const ENROLLMENTS_CANCELED: Table<u64, Indexed> = Table::new("enrollments_canceled");

/// Filters of `GET /classes`.
#[derive(Clone, Debug, Default)]
pub struct EnrollmentFilter {
    pub student: Option<String>,
    pub course_id: Option<u64>,
    pub status: Option<EnrollStatus>,
}

/// What the class (and so the payment) lists need kept, for the events one
/// saga batch commits (a completion, or a cancellation): the enrollment's
/// writer calls it once per batch, so the counts move with the records.
pub(crate) fn count_events<'a>(
    batch: &mut Batch,
    events: impl IntoIterator<Item = &'a Event>,
) -> Result<(), EncodeError> {
    for event in events {
        match event {
            Event::EnrollmentCompleted { .. } => {
                batch.add(&ENROLLMENT_COUNTS, &EnrollStatus::Completed.as_str().to_owned(), 1);
            }
            Event::EnrollmentCanceled { enrollment_id, .. } => {
                batch.add(&ENROLLMENT_COUNTS, &EnrollStatus::Completed.as_str().to_owned(), -1);
                batch.add(&ENROLLMENT_COUNTS, &EnrollStatus::Canceled.as_str().to_owned(), 1);
                batch.put(&ENROLLMENTS_CANCELED, &enrollment_id.get(), &Indexed)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Rebuilds the counts and the canceled index from the table (see
/// `paging::backfill`); the payments' count is theirs.
pub(crate) fn recount(store: &Store, batch: &mut Batch, full: &mut Vec<Batch>) -> Result<(), RecountError> {
    let (mut all, mut canceled) = (0, 0);
    for item in store.scan(&ENROLLMENTS) {
        let (id, enrollment) = item?;
        all += 1;
        if enrollment.status == EnrollStatus::Canceled {
            canceled += 1;
            batch.put(&ENROLLMENTS_CANCELED, &id, &Indexed)?;
            if batch.key_count() >= RECOUNT_CHUNK {
                full.push(std::mem::take(batch));
            }
        }
    }
    set_count(batch, &ENROLLMENT_COUNTS, EnrollStatus::Completed.as_str(), all - canceled)?;
    set_count(batch, &ENROLLMENT_COUNTS, EnrollStatus::Canceled.as_str(), canceled)
}

/// The ids of completed enrollments from the `skip`th, at most `take`: the
/// table's keys minus the canceled index, both walked in id order, no value
/// read.
fn completed_ids(store: &Store, skip: usize, take: usize) -> Result<Vec<u64>, StorageError> {
    let mut canceled = store.scan(&ENROLLMENTS_CANCELED).keys();
    let mut next_canceled = canceled.next().transpose()?;
    let (mut seen, mut ids) = (0usize, Vec::with_capacity(take.min(1000)));
    for id in store.scan(&ENROLLMENTS).keys() {
        if ids.len() >= take {
            break;
        }
        let id = id?;
        while next_canceled.is_some_and(|c| c < id) {
            next_canceled = canceled.next().transpose()?;
        }
        if next_canceled == Some(id) {
            continue;
        }
        if seen >= skip {
            ids.push(id);
        }
        seen += 1;
    }
    Ok(ids)
}

/// The ids of course `course`'s enrollments, completed or canceled, in
/// order: its seats' keys below the holds of unfinished sagas (see
/// `tables::SEATS`), walked without reading a value.
fn of_course(store: &Store, course: u64) -> impl Iterator<Item = Result<u64, StorageError>> + '_ {
    store
        .scan_prefix(&SEATS, &course)
        .keys()
        .map(|key| key.map(|(_, id)| id))
        .take_while(|id| id.as_ref().map_or(true, |id| *id < RESERVATION_BASE))
}

impl Sugang {
    /// A completed or canceled enrollment.
    pub fn enrollment(&self, id: EnrollmentId) -> Result<Option<Enrollment>, StorageError> {
        self.store().get(&ENROLLMENTS, &id.get())
    }

    /// Enrollments matching `filter`, in id order. A page is a seek (see
    /// `paging`): by student or course through that prefix of its index
    /// (one person's or one course's enrollments; a status filter on top reads
    /// those few values), by status through the canceled index, else by id.
    pub fn enrollments(&self, filter: &EnrollmentFilter, page: PageRequest) -> Result<Paged<Enrollment>, StorageError> {
        let store = self.store();
        let status = filter.status;
        let student_filter = filter.student.clone();
        let course_filter = filter.course_id;
        let matches = move |e: &Enrollment| {
            status.is_none_or(|s| e.status == s)
                && student_filter.as_deref().is_none_or(|s| e.student.as_str() == s)
                && course_filter.is_none_or(|c| e.course_id.get() == c)
        };
        match (&filter.student, filter.course_id, status) {
            (Some(student), None, None) => index_page(store, &ENROLLMENTS_BY_STUDENT, student, &ENROLLMENTS, page),
            (None, Some(course), None) => walked_page(store, of_course(store, course), &ENROLLMENTS, page),
            (Some(student), _, _) => {
                let ids =
                    store.scan_prefix(&ENROLLMENTS_BY_STUDENT, &student.clone()).keys().map(|k| k.map(|(_, id)| id));
                paginate(lookup(store, &ENROLLMENTS, ids).filter(|e| e.as_ref().map_or(true, &matches)), page)
            }
            (None, Some(course), _) => paginate(
                lookup(store, &ENROLLMENTS, of_course(store, course)).filter(|e| e.as_ref().map_or(true, &matches)),
                page,
            ),
            (None, None, Some(EnrollStatus::Canceled)) => {
                let total = count(store, &ENROLLMENT_COUNTS, EnrollStatus::Canceled.as_str())?;
                let ids = store.scan(&ENROLLMENTS_CANCELED).keys().skip(page.skip()).take(page.size);
                let items = lookup(store, &ENROLLMENTS, ids).collect::<Result<_, _>>()?;
                Ok(Paged { items, total: total as usize })
            }
            (None, None, Some(EnrollStatus::Completed)) => {
                let total = count(store, &ENROLLMENT_COUNTS, EnrollStatus::Completed.as_str())?;
                let ids = completed_ids(store, page.skip(), page.size)?;
                let items = lookup(store, &ENROLLMENTS, ids.into_iter().map(Ok)).collect::<Result<_, _>>()?;
                Ok(Paged { items, total: total as usize })
            }
            (None, None, None) => {
                let total = count(store, &ENROLLMENT_COUNTS, EnrollStatus::Completed.as_str())?
                    + count(store, &ENROLLMENT_COUNTS, EnrollStatus::Canceled.as_str())?;
                id_page(store, &ENROLLMENTS, total, page)
            }
        }
    }
}
