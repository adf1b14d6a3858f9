//! Paging: a page request, a page and the total it is a page of, and the
//! helpers the list queries share.

use sugang_storage::{StorageError, Store};

/// A page request: 0-based `number`, `size` items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub number: usize,
    pub size: usize,
}

/// One page of a listing and the total it is a page of.
#[derive(Clone, Debug, PartialEq)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub total: usize,
}

pub(crate) fn paginate<T>(
    items: impl Iterator<Item = Result<T, StorageError>>,
    page: PageRequest,
) -> Result<Paged<T>, StorageError> {
    let skip = page.number.saturating_mul(page.size);
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
pub(crate) fn lookup<'a, V: sugang_storage::Record + 'a>(
    store: &'a Store,
    table: &'a sugang_storage::Table<u64, V>,
    ids: impl Iterator<Item = Result<u64, StorageError>> + 'a,
) -> impl Iterator<Item = Result<V, StorageError>> + 'a {
    ids.filter_map(move |id| match id.and_then(|id| store.get(table, &id)) {
        Ok(Some(v)) => Some(Ok(v)),
        Ok(None) => None,
        Err(e) => Some(Err(e)),
    })
}
