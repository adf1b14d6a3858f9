//! Subscriber units: the parts of the subscribers' work (one worker of a
//! subscriber: `mypage#1`, `notifier`), each run by one node at a time
//! under a lease in the lease bucket, so the work is shared across nodes.
//! A lease is liveness, not safety (two nodes can both take one that just
//! came free on NATS 2.9, nats-server#4320): exactly-once is the guards'.
//!
//! Owns the unit lease keys (`unit.<subscriber>` or
//! `unit.<subscriber>.<part>`; the records are the `lease` module's). A
//! lease only says who should run a unit: what makes a stale holder's
//! writes harmless is the service's, a compare-and-set on the unit's holder
//! record and offset checked by the log's writer (see the actors' bus).
//! Must not write the log.

use async_nats::jetstream::kv;

use crate::layout::Cluster;
use crate::lease::{AcquireError, Lease, datetime_ms, unix_ms};

const UNIT_PREFIX: &str = "unit.";

/// The lease key of `unit` (`mypage#1` → `unit.mypage.1`: `#` is not a
/// key character).
pub(crate) fn unit_key(unit: &str) -> String {
    format!("{UNIT_PREFIX}{}", unit.replace('#', "."))
}

/// The unit of a lease key, `None` for a key that is not a unit's.
pub(crate) fn unit_of_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix(UNIT_PREFIX)?;
    Some(match rest.rsplit_once('.') {
        Some((name, part)) => format!("{name}#{part}"),
        None => rest.to_owned(),
    })
}

/// A live unit lease as read from the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitLease {
    /// The unit (`mypage#1`).
    pub unit: String,
    /// The node that runs it.
    pub node: String,
    /// The lease's fencing epoch.
    pub epoch: u64,
    /// How long since the lease was last written, ms.
    pub renewed_ms_ago: u64,
}

impl Cluster {
    /// Acquires `unit`'s lease for this node: succeeds only if nobody holds
    /// a live one. Renew and release it like a course lease.
    pub async fn acquire_unit(&self, unit: &str) -> Result<Lease, AcquireError> {
        self.acquire_key(0, unit_key(unit)).await
    }

    /// Every live unit lease, by unit.
    pub async fn unit_leases(&self) -> Result<Vec<UnitLease>, async_nats::Error> {
        let now = unix_ms();
        let keys = crate::layout::bucket_keys(&self.leases).await?;
        let mut out = Vec::new();
        for (key, unit) in keys.into_iter().filter_map(|key| unit_of_key(&key).map(|unit| (key, unit))) {
            let Some(entry) = self.leases.entry(key).await? else { continue };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let record: crate::lease::LeaseRecord = serde_json::from_slice(&entry.value)?;
            let epoch = if record.epoch == 0 { entry.revision } else { record.epoch };
            out.push(UnitLease {
                unit,
                node: record.node,
                epoch,
                renewed_ms_ago: now.saturating_sub(datetime_ms(entry)),
            });
        }
        out.sort_by(|a, b| a.unit.cmp(&b.unit));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_round_trip_through_lease_keys() {
        for unit in ["mypage#1", "notifier", "delivery#12", "waitlist#0"] {
            let key = unit_key(unit);
            assert!(!key.contains('#'), "{key}");
            assert_eq!(unit_of_key(&key).as_deref(), Some(unit));
        }
        assert_eq!(unit_of_key("course.5"), None);
        assert_eq!(unit_of_key("primary"), None);
    }
}
