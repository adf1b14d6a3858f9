//! Paging: a page request, a page and the total it is a page of, and the
//! helpers every list query uses to serve a page by seeking, never by reading
//! every match.
//!
//! A list's `totalElements` comes from a count kept with the data
//! ([`sugang_storage::Batch::add`], written by the records' one writer in the
//! batch that writes them), or, for a filter by a person or a course, from
//! walking the keys (never the values) of that one prefix of an index. The
//! page itself is a seek: straight to its first id when a table's ids are
//! dense (1..=count, no gaps: the common case, the ids being assigned densely),
//! else a walk over keys to the page's first one; only the page's values are
//! read. Counts of tables written before they were kept are rebuilt once at
//! start-up ([`backfill`]).

use sugang_storage::{Batch, Count, Key, Record, StorageError, Store, Table};

use crate::tables::{COUNTERS, Counter};

/// A page request: 0-based `number`, `size` items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub number: usize,
    pub size: usize,
}

impl PageRequest {
    /// How many items come before the page.
    pub(crate) fn skip(&self) -> usize {
        self.number.saturating_mul(self.size)
    }
}

/// One page of a listing and the total it is a page of.
#[derive(Clone, Debug, PartialEq)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub total: usize,
}

/// A page of `items` counted to the end: for the small sets only (one
/// person's or one course's entries, read through its index prefix), where a
/// filter on values leaves no count to read.
pub(crate) fn paginate<T>(
    items: impl Iterator<Item = Result<T, StorageError>>,
    page: PageRequest,
) -> Result<Paged<T>, StorageError> {
    let skip = page.skip();
    let mut out = Vec::with_capacity(page.size.min(1000));
    let mut total = 0;
    for item in items {
        let item = item?;
        if total >= skip && out.len() < page.size {
            out.push(item);
        }
        total += 1;
    }
    Ok(Paged { items: out, total })
}

/// The records of `table` whose keys an index yields, in index order.
pub(crate) fn lookup<'a, V: Record + 'a>(
    store: &'a Store,
    table: &'a Table<u64, V>,
    ids: impl Iterator<Item = Result<u64, StorageError>> + 'a,
) -> impl Iterator<Item = Result<V, StorageError>> + 'a {
    ids.filter_map(move |id| match id.and_then(|id| store.get(table, &id)) {
        Ok(Some(v)) => Some(Ok(v)),
        Ok(None) => None,
        Err(e) => Some(Err(e)),
    })
}

/// A page of a table keyed by id, `total` being its kept count of records:
/// when its ids are exactly 1..=total (the last key is the count) the page's
/// ids are computed, else the keys before the page are walked (not read).
pub(crate) fn id_page<V: Record>(
    store: &Store,
    table: &Table<u64, V>,
    total: u64,
    page: PageRequest,
) -> Result<Paged<V>, StorageError> {
    let skip = page.skip() as u64;
    let last = store.scan(table).keys().next_back().transpose()?;
    let ids: Vec<u64> = if last == Some(total) {
        (skip.saturating_add(1)..=total.min(skip.saturating_add(page.size as u64))).collect()
    } else {
        store.scan(table).keys().skip(skip as usize).take(page.size).collect::<Result<_, _>>()?
    };
    let items = lookup(store, table, ids.into_iter().map(Ok)).collect::<Result<_, _>>()?;
    Ok(Paged { items, total: total as usize })
}

/// A page of the records an index prefix names (`(part, id)` keys): the
/// total is the number of keys under the prefix, walked without reading a
/// value; only the page's records are read.
pub(crate) fn index_page<P: Key + Clone, V: Record>(
    store: &Store,
    index: &Table<(P, u64), crate::tables::Indexed>,
    part: &P,
    table: &Table<u64, V>,
    page: PageRequest,
) -> Result<Paged<V>, StorageError> {
    walked_page(store, store.scan_prefix(index, part).keys().map(|key| key.map(|(_, id)| id)), table, page)
}

/// A page of the records of `table` whose ids `ids` yields, in its order:
/// the total is how many it yields, walked (keys, no value); only the page's
/// records are read.
pub(crate) fn walked_page<V: Record>(
    store: &Store,
    ids: impl Iterator<Item = Result<u64, StorageError>>,
    table: &Table<u64, V>,
    page: PageRequest,
) -> Result<Paged<V>, StorageError> {
    let (skip, mut total, mut chosen) = (page.skip(), 0usize, Vec::with_capacity(page.size.min(1000)));
    for id in ids {
        let id = id?;
        if total >= skip && chosen.len() < page.size {
            chosen.push(id);
        }
        total += 1;
    }
    let items = lookup(store, table, chosen.into_iter().map(Ok)).collect::<Result<_, _>>()?;
    Ok(Paged { items, total })
}

/// A page of the records of `table` that exist under the ids another
/// aggregate's index names (a read model found through the write side's
/// index, e.g. a student's shipments through their enrollments): every id
/// under the prefix is looked up, since a read model may not hold one (yet),
/// so this suits prefixes that stay small (one student's enrollments).
pub(crate) fn present_page<P: Key + Clone, V: Record>(
    store: &Store,
    index: &Table<(P, u64), crate::tables::Indexed>,
    part: &P,
    table: &Table<u64, V>,
    page: PageRequest,
) -> Result<Paged<V>, StorageError> {
    let (skip, mut total, mut items) = (page.skip(), 0usize, Vec::with_capacity(page.size.min(1000)));
    for key in store.scan_prefix(index, part).keys() {
        let (_, id) = key?;
        if total >= skip && items.len() < page.size {
            let Some(record) = store.get(table, &id)? else { continue };
            items.push(record);
        } else if !store.contains(table, &id)? {
            continue;
        }
        total += 1;
    }
    Ok(Paged { items, total })
}

/// A page of `items` (already in order and filtered) whose total is known:
/// stops reading once the page is full.
pub(crate) fn counted_page<T>(
    items: impl Iterator<Item = Result<T, StorageError>>,
    total: u64,
    page: PageRequest,
) -> Result<Paged<T>, StorageError> {
    let items = items.skip(page.skip()).take(page.size).collect::<Result<_, _>>()?;
    Ok(Paged { items, total: total as usize })
}

/// A kept count (zero when never written).
pub(crate) fn count(store: &Store, table: &Table<String, Count>, key: &str) -> Result<u64, StorageError> {
    store.count(table, &key.to_owned())
}

/// The marker that says the counts are kept (rebuilt once from the tables if
/// the store was written before they were).
const COUNTS_KEPT: &str = "counts_kept";

/// Rebuilds every kept count from the tables once, for a store written before
/// counts were kept (a new store just gets the marker). Runs at start-up,
/// before anything else writes.
pub(crate) async fn backfill(store: &Store, journal: &sugang_storage::Journal) -> Result<(), crate::StartError> {
    if store.get(&COUNTERS, &COUNTS_KEPT.to_owned())?.is_some() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut batches = Vec::new();
    let mut batch = Batch::new();
    let write = |e: sugang_storage::EncodeError| crate::StartError::Spawn(format!("rebuilding counts: {e}"));
    crate::course::queries::recount(store, &mut batch, &mut batches).map_err(|e| e.into_start())?;
    crate::enrollment::queries::recount(store, &mut batch, &mut batches).map_err(|e| e.into_start())?;
    crate::delivery::recount(store, &mut batch).map_err(|e| e.into_start())?;
    crate::mypage::recount(store, &mut batch, &mut batches).map_err(|e| e.into_start())?;
    crate::notifier::queries::recount(store, &mut batch, &mut batches).map_err(|e| e.into_start())?;
    crate::waitlist::view::recount(store, &mut batch).map_err(|e| e.into_start())?;
    batch.put(&COUNTERS, &COUNTS_KEPT.to_owned(), &Counter(1)).map_err(write)?;
    batches.push(batch);
    for batch in batches {
        journal.commit(batch).await.map_err(|e| crate::StartError::Spawn(format!("rebuilding counts: {e}")))?;
    }
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "list counts rebuilt from the tables");
    Ok(())
}

/// Writing a count while rebuilding: reading failed, or encoding did.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecountError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Encode(#[from] sugang_storage::EncodeError),
}

impl RecountError {
    fn into_start(self) -> crate::StartError {
        match self {
            RecountError::Storage(e) => crate::StartError::Storage(e),
            RecountError::Encode(e) => crate::StartError::Spawn(format!("rebuilding counts: {e}")),
        }
    }
}

/// Index entries a rebuild writes per batch.
pub(crate) const RECOUNT_CHUNK: usize = 10_000;

/// Sets a count to `n` (rebuilds only; kept counts are added to).
pub(crate) fn set_count(
    batch: &mut Batch,
    table: &Table<String, Count>,
    key: &str,
    n: u64,
) -> Result<(), RecountError> {
    batch.put(table, &key.to_owned(), &Count(n))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sugang_storage::{Journal, JournalOptions, StoreOptions};

    use super::*;
    use crate::Sugang;
    use crate::course::queries::COURSE_COUNTS;
    use crate::delivery::DELIVERY_COUNTS;
    use crate::enrollment::queries::ENROLLMENT_COUNTS;
    use crate::mypage::MYPAGE_COUNTS;
    use crate::notifier::queries::NOTIFICATION_COUNTS;
    use crate::testing::{config, korean, request};

    /// Every kept count, as (table, key, value).
    fn counts(store: &Store) -> Vec<(&'static str, &'static str, u64)> {
        let tables: [(&Table<String, Count>, &[&'static str]); 5] = [
            (&COURSE_COUNTS, &["all"]),
            (&ENROLLMENT_COUNTS, &["COMPLETED", "CANCELED"]),
            (&DELIVERY_COUNTS, &["all"]),
            (&MYPAGE_COUNTS, &["students", "instructors"]),
            (&NOTIFICATION_COUNTS, &["student", "instructor"]),
        ];
        let mut out = Vec::new();
        for (table, keys) in tables {
            for key in keys {
                out.push((table.name(), *key, count(store, table, key).unwrap()));
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_are_kept_with_the_records_and_rebuilt_for_a_store_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let system = Sugang::start(config.clone()).await.unwrap();
        let course = korean(&system).await;
        let mut ids = Vec::new();
        for student in ["a", "b", "c"] {
            ids.push(system.enroll(request(course, student)).await.unwrap().value.id);
        }
        let seq = system.cancel(ids[1]).await.unwrap().seq;
        for name in ["delivery", "mypage", "notifier"] {
            assert!(system.wait_for(name, seq).await);
        }
        let notified = system.notifications(None, None, PageRequest { number: 0, size: 1000 }).unwrap().items.len();
        let expected_counts = |notifications_to_students: u64| {
            vec![
                ("course_counts", "all", 1),
                ("enrollment_counts", "COMPLETED", 2),
                ("enrollment_counts", "CANCELED", 1),
                ("delivery_counts", "all", 3),
                ("mypage_counts", "students", 3),
                ("mypage_counts", "instructors", 1),
                ("notification_counts", "student", notifications_to_students),
                ("notification_counts", "instructor", notified as u64 - notifications_to_students),
            ]
        };
        let kept = counts(system.store());
        let to_students = kept.iter().find(|(t, k, _)| *t == "notification_counts" && *k == "student").unwrap().2;
        assert_eq!(kept, expected_counts(to_students), "kept as the records were written");
        assert!(to_students > 0 && (to_students as usize) < notified, "both roles were notified");
        system.shutdown().await;

        // A store written before counts were kept: no marker, no counts.
        {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let (journal, task) = Journal::start(&store, JournalOptions::default()).unwrap();
            let mut batch = Batch::new();
            batch.delete(&COUNTERS, &COUNTS_KEPT.to_owned());
            for (table, key) in [(&ENROLLMENT_COUNTS, "COMPLETED"), (&COURSE_COUNTS, "all")] {
                batch.delete(table, &key.to_owned());
            }
            batch.add(&DELIVERY_COUNTS, &"all".to_owned(), 40);
            journal.commit(batch).await.unwrap();
            drop(journal);
            tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
        }
        let system = Sugang::start(config).await.unwrap();
        assert_eq!(counts(system.store()), expected_counts(to_students), "rebuilt from the tables");
        let classes = system.enrollments(&Default::default(), PageRequest { number: 0, size: 20 }).unwrap();
        assert_eq!((classes.total, classes.items.len()), (3, 3));
        system.shutdown().await;
    }
}
