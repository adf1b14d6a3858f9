//! The course queries of the facade, beside the table they read, and what
//! they need kept with the courses: the count of live courses and the index
//! of a teacher's courses, written by the course actor in the batch that
//! registers or deletes a course ([`index_events`]).

use sugang_storage::{Batch, Count, EncodeError, StorageError, Store, Table};

use crate::Sugang;
use crate::event::Event;
use crate::model::CourseId;
use crate::paging::{PageRequest, Paged, RECOUNT_CHUNK, RecountError, count, counted_page, id_page, index_page};
use crate::tables::{COURSES, CourseRecord, Indexed};

/// `"all"`: courses registered and not deleted.
pub(crate) const COURSE_COUNTS: Table<String, Count> = Table::new("course_counts");
/// (teacher, course id) of every live course.
pub(crate) const COURSES_BY_TEACHER: Table<(String, u64), Indexed> = Table::new("courses_by_teacher");

/// What the course lists need kept, for the events of one course batch: the
/// course actor calls it once per batch it writes (its one writer).
pub(crate) fn index_events(batch: &mut Batch, events: &[Event]) -> Result<(), EncodeError> {
    for event in events {
        match event {
            Event::CourseRegistered { course_id, teacher, .. } => {
                batch.put(&COURSES_BY_TEACHER, &(teacher.as_str().to_owned(), course_id.get()), &Indexed)?;
                batch.add(&COURSE_COUNTS, &"all".to_owned(), 1);
            }
            Event::CourseDeleted { course_id, teacher, .. } => {
                batch.delete(&COURSES_BY_TEACHER, &(teacher.as_str().to_owned(), course_id.get()));
                batch.add(&COURSE_COUNTS, &"all".to_owned(), -1);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Rebuilds the count and the index from the table (see `paging::backfill`).
pub(crate) fn recount(store: &Store, batch: &mut Batch, full: &mut Vec<Batch>) -> Result<(), RecountError> {
    let mut live = 0;
    for item in store.scan(&COURSES) {
        let (id, course) = item?;
        if course.deleted {
            continue;
        }
        live += 1;
        batch.put(&COURSES_BY_TEACHER, &(course.teacher.as_str().to_owned(), id), &Indexed)?;
        if batch.key_count() >= RECOUNT_CHUNK {
            full.push(std::mem::take(batch));
        }
    }
    crate::paging::set_count(batch, &COURSE_COUNTS, "all", live)
}

impl Sugang {
    /// A course, unless unknown or deleted.
    pub fn course(&self, id: CourseId) -> Result<Option<CourseRecord>, StorageError> {
        Ok(self.store().get(&COURSES, &id.get())?.filter(|c| !c.deleted))
    }

    /// Courses, optionally of one teacher, in id order.
    pub fn courses(&self, teacher: Option<&str>, page: PageRequest) -> Result<Paged<CourseRecord>, StorageError> {
        let store = self.store();
        if let Some(teacher) = teacher {
            return index_page(store, &COURSES_BY_TEACHER, &teacher.to_owned(), &COURSES, page);
        }
        let total = count(store, &COURSE_COUNTS, "all")?;
        // Ids are dense: unless a course was deleted (its tombstone stays),
        // the page's ids are known.
        let last = store.scan(&COURSES).keys().next_back().transpose()?;
        if last == Some(total) {
            return id_page(store, &COURSES, total, page);
        }
        let live = store.scan(&COURSES).filter_map(|item| match item {
            Ok((_, c)) if c.deleted => None,
            Ok((_, c)) => Some(Ok(c)),
            Err(e) => Some(Err(e)),
        });
        counted_page(live, total, page)
    }
}
