//! The notification queries of the facade, beside the tables they read.

use sugang_storage::StorageError;

use super::{NOTIFICATIONS, NOTIFICATIONS_BY_RECIPIENT, Notification, RecipientRole};
use crate::Sugang;
use crate::paging::{PageRequest, Paged, lookup, paginate};

impl Sugang {
    /// Notifications, optionally of one recipient name and/or role.
    pub fn notifications(
        &self,
        recipient: Option<&str>,
        role: Option<RecipientRole>,
        page: PageRequest,
    ) -> Result<Paged<Notification>, StorageError> {
        let store = &self.store();
        let of_role = |n: &Result<Notification, StorageError>| match (n, role) {
            (Ok(n), Some(role)) => n.recipient_role == role,
            _ => true,
        };
        match recipient {
            Some(recipient) => paginate(
                lookup(
                    store,
                    &NOTIFICATIONS,
                    store
                        .scan_prefix(&NOTIFICATIONS_BY_RECIPIENT, &recipient.to_owned())
                        .keys()
                        .map(|k| k.map(|(_, id)| id)),
                )
                .filter(of_role),
                page,
            ),
            None => paginate(store.scan(&NOTIFICATIONS).map(|i| i.map(|(_, v)| v)).filter(of_role), page),
        }
    }

    /// A notification.
    pub fn notification(&self, id: u64) -> Result<Option<Notification>, StorageError> {
        self.store().get(&NOTIFICATIONS, &id)
    }
}
