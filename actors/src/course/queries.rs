//! The course queries of the facade, beside the table they read.

use sugang_storage::StorageError;

use crate::Sugang;
use crate::model::CourseId;
use crate::paging::{PageRequest, Paged, paginate};
use crate::tables::{COURSES, CourseRecord};

impl Sugang {
    /// A course, unless unknown or deleted.
    pub fn course(&self, id: CourseId) -> Result<Option<CourseRecord>, StorageError> {
        Ok(self.store().get(&COURSES, &id.get())?.filter(|c| !c.deleted))
    }

    /// Courses, optionally of one teacher, in id order.
    pub fn courses(&self, teacher: Option<&str>, page: PageRequest) -> Result<Paged<CourseRecord>, StorageError> {
        let items = self.store().scan(&COURSES).filter_map(|item| match item {
            Ok((_, c)) if c.deleted || teacher.is_some_and(|t| c.teacher.as_str() != t) => None,
            Ok((_, c)) => Some(Ok(c)),
            Err(e) => Some(Err(e)),
        });
        paginate(items, page)
    }
}
