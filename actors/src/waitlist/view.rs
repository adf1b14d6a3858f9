//! The waitlist read model (`GET /waitlists`): a subscriber of the event
//! log, like mypage and delivery. Knows the waitlist events, never the
//! course's tables; owns only its own. Positions are counted at read time
//! over the live entries of the course (at most its waitlist capacity).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use sugang_storage::{Batch, Committed, Count, Record, StorageError, Store, Table};

use super::{WaitStatus, WaitlistEntry};
use crate::bus::{Part, Projection, ProjectionError};
use crate::event::Event;
use crate::model::{CourseId, EnrollmentId, StudentName};
use crate::paging::{PageRequest, Paged, RecountError, count, counted_page, id_page, set_count};
use crate::tables::Indexed;

/// An entry as the read model keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WaitlistView {
    id: u64,
    course_id: CourseId,
    student: StudentName,
    status: WaitStatus,
    class_id: Option<EnrollmentId>,
    created_at_ms: u64,
}

impl Record for WaitlistView {}

pub(crate) const WAITLIST_VIEWS: Table<u64, WaitlistView> = Table::new("waitlist_views");
/// (course id, entry id) of the entries still `WAITING`: positions.
pub(crate) const WAITLIST_VIEWS_WAITING: Table<(u64, u64), Indexed> = Table::new("waitlist_views_waiting");
/// (student, entry id).
pub(crate) const WAITLIST_VIEWS_BY_STUDENT: Table<(String, u64), Indexed> = Table::new("waitlist_views_by_student");
/// (course id, entry id).
pub(crate) const WAITLIST_VIEWS_BY_COURSE: Table<(u64, u64), Indexed> = Table::new("waitlist_views_by_course");

/// `"all"`: entries recorded; `"WAITING"`, `"ENROLLED"` …: entries in that
/// status. Added to in the batch that records or ends an entry, so a page of
/// `GET /waitlists` never counts the table.
pub(crate) const WAITLIST_COUNTS: Table<String, Count> = Table::new("waitlist_counts");

const ALL: &str = "all";

/// Rebuilds the counts from the views (see `paging::backfill`).
pub(crate) fn recount(store: &Store, batch: &mut Batch) -> Result<(), RecountError> {
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for item in store.scan(&WAITLIST_VIEWS) {
        let (_, view) = item?;
        *counts.entry(ALL).or_default() += 1;
        *counts.entry(view.status.as_str()).or_default() += 1;
    }
    for status in
        [WaitStatus::Waiting, WaitStatus::Enrolled, WaitStatus::Failed, WaitStatus::Left, WaitStatus::Canceled]
    {
        set_count(batch, &WAITLIST_COUNTS, status.as_str(), counts.get(status.as_str()).copied().unwrap_or(0))?;
    }
    set_count(batch, &WAITLIST_COUNTS, ALL, counts.get(ALL).copied().unwrap_or(0))
}

/// Filters of `GET /waitlists`.
#[derive(Clone, Debug, Default)]
pub struct WaitlistFilter {
    pub course_id: Option<u64>,
    pub student: Option<String>,
    pub status: Option<WaitStatus>,
}

pub(crate) struct WaitlistProjection;

impl WaitlistProjection {
    /// Ends a live entry with `status`.
    fn end(
        store: &Store,
        batch: &mut Batch,
        entry_id: u64,
        status: WaitStatus,
        class_id: Option<EnrollmentId>,
    ) -> Result<u64, ProjectionError> {
        let Some(mut view) = store.read_through(batch, &WAITLIST_VIEWS, &entry_id)? else { return Ok(0) };
        if view.status != WaitStatus::Waiting {
            return Ok(0);
        }
        view.status = status;
        view.class_id = class_id;
        batch.put(&WAITLIST_VIEWS, &entry_id, &view)?;
        batch.delete(&WAITLIST_VIEWS_WAITING, &(view.course_id.get(), entry_id));
        batch.add(&WAITLIST_COUNTS, &WaitStatus::Waiting.as_str().to_owned(), -1);
        batch.add(&WAITLIST_COUNTS, &status.as_str().to_owned(), 1);
        Ok(1)
    }
}

impl Projection for WaitlistProjection {
    fn name(&self) -> &'static str {
        "waitlist"
    }

    /// One worker: positions count the entries of a course across keys.
    fn single_worker(&self) -> bool {
        true
    }

    fn apply(
        &self,
        store: &Store,
        event: &Committed<Event>,
        _part: Part,
        batch: &mut Batch,
    ) -> Result<u64, ProjectionError> {
        match &event.event {
            Event::WaitlistJoined { entry_id, course_id, student, at_ms, .. } => {
                if store.read_through(batch, &WAITLIST_VIEWS, entry_id)?.is_some() {
                    return Ok(0);
                }
                let view = WaitlistView {
                    id: *entry_id,
                    course_id: *course_id,
                    student: student.clone(),
                    status: WaitStatus::Waiting,
                    class_id: None,
                    created_at_ms: *at_ms,
                };
                batch.put(&WAITLIST_VIEWS, entry_id, &view)?;
                batch.put(&WAITLIST_VIEWS_WAITING, &(course_id.get(), *entry_id), &Indexed)?;
                batch.put(&WAITLIST_VIEWS_BY_STUDENT, &(student.as_str().to_owned(), *entry_id), &Indexed)?;
                batch.put(&WAITLIST_VIEWS_BY_COURSE, &(course_id.get(), *entry_id), &Indexed)?;
                batch.add(&WAITLIST_COUNTS, &ALL.to_owned(), 1);
                batch.add(&WAITLIST_COUNTS, &WaitStatus::Waiting.as_str().to_owned(), 1);
                Ok(1)
            }
            Event::WaitlistEnrolled { entry_id, enrollment_id, .. } => {
                Self::end(store, batch, *entry_id, WaitStatus::Enrolled, Some(*enrollment_id))
            }
            Event::WaitlistFailed { entry_id, .. } => Self::end(store, batch, *entry_id, WaitStatus::Failed, None),
            Event::WaitlistLeft { entry_id, .. } => Self::end(store, batch, *entry_id, WaitStatus::Left, None),
            Event::WaitlistCanceled { entry_id, .. } => Self::end(store, batch, *entry_id, WaitStatus::Canceled, None),
            _ => Ok(0),
        }
    }
}

/// The positions of the `WAITING` entries among `views`: one pass per
/// course over its waiting entries, up to the last one asked about (a page
/// costs the length of the waitlist ahead of it, not that per entry).
fn positions(store: &Store, views: &[WaitlistView]) -> Result<HashMap<u64, u32>, StorageError> {
    let mut wanted: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for view in views.iter().filter(|v| v.status == WaitStatus::Waiting) {
        wanted.entry(view.course_id.get()).or_default().insert(view.id);
    }
    let mut found = HashMap::new();
    for (course, ids) in wanted {
        let Some(&last) = ids.last() else { continue };
        let mut rank = 0u32;
        for key in store.scan_prefix(&WAITLIST_VIEWS_WAITING, &course).keys() {
            let (_, id) = key?;
            rank += 1;
            if ids.contains(&id) {
                found.insert(id, rank);
            }
            if id >= last {
                break;
            }
        }
    }
    Ok(found)
}

fn shown(view: WaitlistView, positions: &HashMap<u64, u32>) -> WaitlistEntry {
    WaitlistEntry {
        id: view.id,
        course_id: view.course_id,
        student: view.student,
        position: positions.get(&view.id).copied(),
        status: view.status,
        class_id: view.class_id,
        created_at_ms: view.created_at_ms,
    }
}

/// Entries matching `filter`, in id order.
pub(crate) fn query(
    store: &Store,
    filter: &WaitlistFilter,
    page: PageRequest,
) -> Result<Paged<WaitlistEntry>, StorageError> {
    let by_ids = |ids: Box<dyn Iterator<Item = Result<u64, StorageError>>>| {
        ids.filter_map(move |id| match id.and_then(|id| store.get(&WAITLIST_VIEWS, &id)) {
            Ok(Some(v)) => Some(Ok(v)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        })
    };
    // Neither a student nor a course: the kept counts give the total, and
    // the page is sought (all) or read up to its end (a status), never the
    // whole table.
    if filter.student.is_none() && filter.course_id.is_none() {
        let page = match filter.status {
            None => id_page(store, &WAITLIST_VIEWS, count(store, &WAITLIST_COUNTS, ALL)?, page)?,
            Some(status) => counted_page(
                store.scan(&WAITLIST_VIEWS).map(|item| item.map(|(_, v)| v)).filter(|v| match v {
                    Ok(v) => v.status == status,
                    Err(_) => true,
                }),
                count(store, &WAITLIST_COUNTS, status.as_str())?,
                page,
            )?,
        };
        let positions = positions(store, &page.items)?;
        return Ok(Paged {
            items: page.items.into_iter().map(|view| shown(view, &positions)).collect(),
            total: page.total,
        });
    }
    let views: Box<dyn Iterator<Item = Result<WaitlistView, StorageError>>> = match (&filter.student, filter.course_id)
    {
        (Some(student), _) => Box::new(by_ids(Box::new(
            store.scan_prefix(&WAITLIST_VIEWS_BY_STUDENT, &student.clone()).keys().map(|k| k.map(|(_, id)| id)),
        ))),
        (None, Some(course)) if filter.status == Some(WaitStatus::Waiting) => Box::new(by_ids(Box::new(
            store.scan_prefix(&WAITLIST_VIEWS_WAITING, &course).keys().map(|k| k.map(|(_, id)| id)),
        ))),
        (None, Some(course)) => Box::new(by_ids(Box::new(
            store.scan_prefix(&WAITLIST_VIEWS_BY_COURSE, &course).keys().map(|k| k.map(|(_, id)| id)),
        ))),
        // Answered above from the kept counts.
        (None, None) => Box::new(std::iter::empty()),
    };
    let matches = |v: &WaitlistView| {
        filter.status.is_none_or(|s| v.status == s)
            && filter.course_id.is_none_or(|c| v.course_id.get() == c)
            && filter.student.as_deref().is_none_or(|s| v.student.as_str() == s)
    };
    let skip = page.number.saturating_mul(page.size);
    let (mut kept, mut total) = (Vec::new(), 0usize);
    for view in views {
        let view = view?;
        if !matches(&view) {
            continue;
        }
        if total >= skip && kept.len() < page.size {
            kept.push(view);
        }
        total += 1;
    }
    let positions = positions(store, &kept)?;
    Ok(Paged { items: kept.into_iter().map(|view| shown(view, &positions)).collect(), total })
}
