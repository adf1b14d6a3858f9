//! The enrollment (class) queries of the facade, beside the tables they read.

use sugang_storage::StorageError;

use super::{EnrollStatus, Enrollment};
use crate::Sugang;
use crate::model::EnrollmentId;
use crate::paging::{PageRequest, Paged, paginate};
use crate::tables::{ENROLLMENTS, ENROLLMENTS_BY_COURSE, ENROLLMENTS_BY_STUDENT};

/// Filters of `GET /classes`.
#[derive(Clone, Debug, Default)]
pub struct EnrollmentFilter {
    pub student: Option<String>,
    pub course_id: Option<u64>,
    pub status: Option<EnrollStatus>,
}

impl Sugang {
    /// A completed or canceled enrollment.
    pub fn enrollment(&self, id: EnrollmentId) -> Result<Option<Enrollment>, StorageError> {
        self.store().get(&ENROLLMENTS, &id.get())
    }

    /// Enrollments matching `filter`, in id order.
    pub fn enrollments(&self, filter: &EnrollmentFilter, page: PageRequest) -> Result<Paged<Enrollment>, StorageError> {
        let store = &self.store();
        let status = filter.status;
        let keep = move |e: &Enrollment| status.is_none_or(|s| e.status == s);
        let by_ids = |ids: Box<dyn Iterator<Item = Result<u64, StorageError>>>| {
            ids.filter_map(move |id| match id.and_then(|id| store.get(&ENROLLMENTS, &id)) {
                Ok(Some(e)) => Some(Ok(e)),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            })
        };
        let student_filter = filter.student.clone();
        let course_filter = filter.course_id;
        let matches = move |e: &Enrollment| {
            keep(e)
                && student_filter.as_deref().is_none_or(|s| e.student.as_str() == s)
                && course_filter.is_none_or(|c| e.course_id.get() == c)
        };
        let items: Box<dyn Iterator<Item = Result<Enrollment, StorageError>>> =
            match (&filter.student, filter.course_id) {
                (Some(student), _) => Box::new(by_ids(Box::new(
                    store.scan_prefix(&ENROLLMENTS_BY_STUDENT, &student.clone()).keys().map(|k| k.map(|(_, id)| id)),
                ))),
                (None, Some(course)) => Box::new(by_ids(Box::new(
                    store.scan_prefix(&ENROLLMENTS_BY_COURSE, &course).keys().map(|k| k.map(|(_, id)| id)),
                ))),
                (None, None) => Box::new(store.scan(&ENROLLMENTS).map(|item| item.map(|(_, e)| e))),
            };
        // Every source is in id order already (the table by its key, the
        // indexes by (student|course, id)), so a page streams: nothing but
        // the page is held in memory, however many enrollments there are.
        paginate(items.filter(|e| e.as_ref().map_or(true, &matches)), page)
    }
}
