//! The notification queries of the facade, beside the tables they read, and
//! what they need kept: a count per recipient role, and an index of the
//! notifications to instructors (few: one per course opened or closed, next
//! to three per enrollment for students), so a page by role is a seek
//! either way. Written by the notifier in the batch that records the
//! notification ([`count_recorded`]).

use sugang_storage::{Batch, Count, StorageError, Store, Table};

use super::{NOTIFICATIONS, NOTIFICATIONS_BY_RECIPIENT, Notification, RecipientRole};
use crate::Sugang;
use crate::paging::{
    PageRequest, Paged, RECOUNT_CHUNK, RecountError, count, counted_page, id_page, index_page, lookup, paginate,
    set_count,
};
use crate::tables::Indexed;

/// Per recipient role (`"student"`, `"instructor"`); all is their sum.
pub(crate) const NOTIFICATION_COUNTS: Table<String, Count> = Table::new("notification_counts");
/// (role, notification id) of the notifications to any role but students.
pub(crate) const NOTIFICATIONS_BY_ROLE: Table<(String, u64), Indexed> = Table::new("notifications_by_role");

const ROLES: [RecipientRole; 2] = [RecipientRole::Student, RecipientRole::Instructor];

fn role_key(role: RecipientRole) -> &'static str {
    match role {
        RecipientRole::Student => "student",
        RecipientRole::Instructor => "instructor",
    }
}

/// Notification `id` to `role` is recorded in this batch.
pub(crate) fn count_recorded(
    batch: &mut Batch,
    id: u64,
    role: RecipientRole,
) -> Result<(), sugang_storage::EncodeError> {
    batch.add(&NOTIFICATION_COUNTS, &role_key(role).to_owned(), 1);
    if role != RecipientRole::Student {
        batch.put(&NOTIFICATIONS_BY_ROLE, &(role_key(role).to_owned(), id), &Indexed)?;
    }
    Ok(())
}

/// Rebuilds the counts and the role index from the table (see
/// `paging::backfill`).
pub(crate) fn recount(store: &Store, batch: &mut Batch, full: &mut Vec<Batch>) -> Result<(), RecountError> {
    let mut counts = [0u64; 2];
    for item in store.scan(&NOTIFICATIONS) {
        let (id, notification) = item?;
        let role = notification.recipient_role;
        counts[ROLES.iter().position(|r| *r == role).unwrap_or(0)] += 1;
        if role != RecipientRole::Student {
            batch.put(&NOTIFICATIONS_BY_ROLE, &(role_key(role).to_owned(), id), &Indexed)?;
            if batch.key_count() >= RECOUNT_CHUNK {
                full.push(std::mem::take(batch));
            }
        }
    }
    for (role, n) in ROLES.iter().zip(counts) {
        set_count(batch, &NOTIFICATION_COUNTS, role_key(*role), n)?;
    }
    Ok(())
}

impl Sugang {
    /// Notifications, optionally of one recipient name and/or role.
    pub fn notifications(
        &self,
        recipient: Option<&str>,
        role: Option<RecipientRole>,
        page: PageRequest,
    ) -> Result<Paged<Notification>, StorageError> {
        let store = self.store();
        let of_role = |n: &Result<Notification, StorageError>| match (n, role) {
            (Ok(n), Some(role)) => n.recipient_role == role,
            _ => true,
        };
        match (recipient, role) {
            (Some(recipient), None) => {
                index_page(store, &NOTIFICATIONS_BY_RECIPIENT, &recipient.to_owned(), &NOTIFICATIONS, page)
            }
            // One person's notifications: few, read to filter.
            (Some(recipient), Some(_)) => {
                let ids = store
                    .scan_prefix(&NOTIFICATIONS_BY_RECIPIENT, &recipient.to_owned())
                    .keys()
                    .map(|k| k.map(|(_, id)| id));
                paginate(lookup(store, &NOTIFICATIONS, ids).filter(of_role), page)
            }
            // Students get nearly all of them: the table, skipping the few others.
            (None, Some(RecipientRole::Student)) => {
                let total = count(store, &NOTIFICATION_COUNTS, role_key(RecipientRole::Student))?;
                counted_page(store.scan(&NOTIFICATIONS).map(|i| i.map(|(_, n)| n)).filter(of_role), total, page)
            }
            (None, Some(role)) => {
                index_page(store, &NOTIFICATIONS_BY_ROLE, &role_key(role).to_owned(), &NOTIFICATIONS, page)
            }
            (None, None) => {
                let mut total = 0;
                for role in ROLES {
                    total += count(store, &NOTIFICATION_COUNTS, role_key(role))?;
                }
                id_page(store, &NOTIFICATIONS, total, page)
            }
        }
    }

    /// A notification.
    pub fn notification(&self, id: u64) -> Result<Option<Notification>, StorageError> {
        self.store().get(&NOTIFICATIONS, &id)
    }
}
