//! Course ownership leases: one live owner per course, in the `sugang_leases`
//! key-value bucket whose max age is the lease duration.
//!
//! Owns the lease records (key `course.<id>`, a JSON [`LeaseRecord`]).
//! [`Cluster::acquire`] creates the key, which succeeds only if it holds no
//! live value (never written, expired by the bucket's max age, or released);
//! [`Cluster::renew`] rewrites it by compare-and-set on the revision held, so
//! a lease that expired and was taken by another node cannot be renewed;
//! [`Cluster::release`] deletes it by compare-and-set too. The revision of the
//! acquiring write is the lease's *epoch*: KV revisions are the bucket
//! stream's sequence, so a later owner always has a higher epoch.
//!
//! A lease alone never makes a write safe (a paused owner does not know its
//! lease lapsed): the fence in `owner` does. Must not write the log.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::layout::{Cluster, course_of_lease_key, lease_key};

/// What a lease key holds (JSON, readable with `nats kv get`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LeaseRecord {
    /// The owning node.
    pub node: String,
    /// The revision of the write that acquired it: the fencing epoch.
    /// 0 in the acquiring write itself (its revision is not known before),
    /// set by the first renewal.
    pub epoch: u64,
    /// When it was acquired, unix milliseconds (the owner's clock).
    pub acquired_at_ms: u64,
}

/// A course lease this node holds (or held: see [`Lease::lapsed`]).
#[derive(Clone, Debug)]
pub struct Lease {
    /// The course (0 for a lease that is not a course's).
    pub(crate) course: u64,
    /// Its key in the lease bucket.
    pub(crate) key: String,
    /// The revision of the acquiring write: the fencing epoch every append
    /// carries.
    pub(crate) epoch: u64,
    /// The revision of the last write (acquire or renew): what the next
    /// renewal compares against.
    pub(crate) revision: u64,
    /// When this node sent the acquiring write, unix ms.
    pub(crate) acquired_at_ms: u64,
    /// When this node sent the last successful write: the bucket expires the
    /// key at least a TTL after it (the server stamps it later).
    pub(crate) renewed_at: Instant,
    /// The bucket's max age.
    pub(crate) ttl: Duration,
}

impl Lease {
    /// The course it is for.
    pub fn course(&self) -> u64 {
        self.course
    }

    /// The fencing epoch (the acquiring write's revision).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The revision the next renewal compares against.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// True once a TTL has passed since the last successful write, by this
    /// node's monotonic clock: another node may own the course by now.
    pub fn lapsed(&self) -> bool {
        self.renewed_at.elapsed() >= self.ttl
    }
}

/// Why a lease could not be acquired.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// Another node (or this one, earlier) holds a live lease.
    #[error("lease {lease} is held by {owner:?}")]
    Held {
        /// The lease's key (`course.<id>`, `primary`, `unit.<name>`).
        lease: String,
        /// The live owner, when its record could be read.
        owner: Option<String>,
    },
    /// NATS did not answer or failed.
    #[error("lease {lease}: {source}")]
    Nats {
        /// The lease's key.
        lease: String,
        /// The client's error.
        source: async_nats::Error,
    },
}

/// Why a lease could not be renewed or released.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The key is no longer at the revision held: the lease expired and may
    /// be someone else's. Stop serving the course.
    #[error("lease {lease} lost (revision {revision} is no longer current)")]
    Lost {
        /// The lease's key.
        lease: String,
        /// The revision this node held.
        revision: u64,
    },
    /// NATS did not answer or failed; the lease may still be held.
    #[error("lease {lease}: {source}")]
    Nats {
        /// The lease's key.
        lease: String,
        /// The client's error.
        source: async_nats::Error,
    },
}

/// How [`Cluster::keep`] kept a lease.
#[derive(Debug)]
pub enum Kept {
    /// Renewed at the revision held.
    Renewed,
    /// It had been lost or had lapsed, and nobody else held it: taken back
    /// ([`Cluster::retake`]).
    TakenBack,
    /// NATS did not answer the renewal, but the lease has not lapsed: it is
    /// still held until its TTL runs out; try again at the next tick.
    Unanswered(LeaseError),
}

/// A live lease as read from the bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseInfo {
    /// The course.
    pub course: u64,
    /// What the lease key holds.
    pub record: LeaseRecord,
    /// The key's current revision.
    pub revision: u64,
    /// When the key was last written (acquired or renewed), unix ms, by the
    /// server's clock.
    pub written_at_ms: u64,
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn datetime_ms(entry: kv::Entry) -> u64 {
    (entry.created.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

impl Cluster {
    /// Acquires `course`'s lease for this node: succeeds only if nobody holds
    /// a live one. The lease then lives for the configured TTL unless
    /// [renewed](Cluster::renew).
    #[tracing::instrument(skip(self), fields(node = %self.config.node))]
    pub async fn acquire(&self, course: u64) -> Result<Lease, AcquireError> {
        self.acquire_key(course, lease_key(course)).await
    }

    /// Acquires the lease stored under `key` (`course` is what
    /// [`Lease::course`] answers: 0 for a lease that is not a course's).
    pub(crate) async fn acquire_key(&self, course: u64, key: String) -> Result<Lease, AcquireError> {
        let sent = Instant::now();
        let acquired_at_ms = unix_ms();
        let record = LeaseRecord { node: self.config.node.clone(), epoch: 0, acquired_at_ms };
        let body =
            serde_json::to_vec(&record).map_err(|err| AcquireError::Nats { lease: key.clone(), source: err.into() })?;
        match self.leases.create(key.as_str(), body.into()).await {
            Ok(revision) => Ok(Lease {
                course,
                key,
                epoch: revision,
                revision,
                acquired_at_ms,
                renewed_at: sent,
                ttl: self.config.lease_ttl,
            }),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                let owner = self.lease_at(&key).await.ok().flatten().map(|info| info.record.node);
                Err(AcquireError::Held { lease: key, owner })
            }
            Err(err) => Err(AcquireError::Nats { lease: key, source: err.into() }),
        }
    }

    /// Renews `lease` by compare-and-set on the revision held: it lives a
    /// full TTL from now. Renew every third of the TTL or so, so one slow
    /// renewal does not lose the course. Fails with [`LeaseError::Lost`] if
    /// the key moved on (the lease expired; another node may own the course).
    pub async fn renew(&self, lease: &mut Lease) -> Result<(), LeaseError> {
        let key = lease.key.clone();
        let sent = Instant::now();
        let record =
            LeaseRecord { node: self.config.node.clone(), epoch: lease.epoch, acquired_at_ms: lease.acquired_at_ms };
        let body =
            serde_json::to_vec(&record).map_err(|err| LeaseError::Nats { lease: key.clone(), source: err.into() })?;
        match self.leases.update(key.as_str(), body.into(), lease.revision).await {
            Ok(revision) => {
                lease.revision = revision;
                lease.renewed_at = sent;
                Ok(())
            }
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(lease = %key, revision = lease.revision, node = %self.config.node, "lease lost at renewal");
                Err(LeaseError::Lost { lease: key, revision: lease.revision })
            }
            Err(err) => Err(LeaseError::Nats { lease: key, source: err.into() }),
        }
    }

    /// Takes `lease` back after a renewal failed with [`LeaseError::Lost`]
    /// or left it lapsed (the bucket's stream had no leader for longer than
    /// a TTL, say, while the NATS servers elected one). If the key holds
    /// this node's own record of the same epoch (a renewal stored, its
    /// answer lost), the lease goes on at that revision; if the key is free
    /// (it expired and nobody took it), it is acquired again, with a new
    /// epoch. [`LeaseError::Lost`] if another node holds it;
    /// [`LeaseError::Nats`] if NATS did not answer (try again).
    ///
    /// Only for a holder whose writes are fenced by something besides the
    /// lease (the log's last sequence for the primary, the holder record in
    /// the log for a subscriber unit): another node may have held the lease
    /// meanwhile, and its writes must already have made this node's refused.
    pub async fn retake(&self, lease: &mut Lease) -> Result<(), LeaseError> {
        let key = lease.key.clone();
        // The write first: the first write the bucket takes after an
        // election wins, and a read can fail while writes already pass.
        match self.acquire_key(lease.course, key.clone()).await {
            Ok(fresh) => {
                tracing::info!(lease = %key, epoch = fresh.epoch, "took an expired lease back");
                *lease = fresh;
                return Ok(());
            }
            Err(AcquireError::Held { .. }) => {}
            Err(AcquireError::Nats { source, .. }) => return Err(LeaseError::Nats { lease: key, source }),
        }
        match self.lease_at(&key).await.map_err(|source| LeaseError::Nats { lease: key.clone(), source })? {
            Some(info) if info.record.node == self.config.node && info.record.epoch == lease.epoch => {
                tracing::info!(lease = %key, revision = info.revision, "the lease holds this node's last renewal: going on from it");
                lease.revision = info.revision;
                self.renew(lease).await
            }
            Some(_) => Err(LeaseError::Lost { lease: key, revision: lease.revision }),
            // Expired between the two: the next call acquires it.
            None => Err(LeaseError::Nats { lease: key, source: "the lease expired while it was read".into() }),
        }
    }

    /// Keeps `lease` for one more TTL: renews it, or (lost, or lapsed
    /// while NATS did not answer) takes it back unless another node holds
    /// it ([`Cluster::retake`], whose caveat holds here too: only for a
    /// holder fenced by something besides the lease).
    /// [`LeaseError::Lost`] if another node holds it; [`LeaseError::Nats`]
    /// if the renewal failed (lost, or unanswered past the lease's TTL) and
    /// the retake was not answered either (try again).
    pub async fn keep(&self, lease: &mut Lease) -> Result<Kept, LeaseError> {
        match self.renew(lease).await {
            Ok(()) => Ok(Kept::Renewed),
            Err(error @ LeaseError::Nats { .. }) if !lease.lapsed() => Ok(Kept::Unanswered(error)),
            Err(_) => self.retake(lease).await.map(|()| Kept::TakenBack),
        }
    }

    /// Gives `lease` up (a delete by compare-and-set on the revision held),
    /// so another node can acquire it at once.
    pub async fn release(&self, lease: Lease) -> Result<(), LeaseError> {
        let key = lease.key;
        match self.leases.delete_expect_revision(key.as_str(), Some(lease.revision)).await {
            Ok(()) => Ok(()),
            // A delete whose revision moved on is the lease already lost.
            Err(err) => match self.lease_at(&key).await {
                Ok(Some(info)) if info.revision == lease.revision => {
                    Err(LeaseError::Nats { lease: key, source: err.into() })
                }
                Ok(_) => Err(LeaseError::Lost { lease: key, revision: lease.revision }),
                Err(_) => Err(LeaseError::Nats { lease: key, source: err.into() }),
            },
        }
    }

    /// The live lease of `course`, if any.
    pub async fn lease_of(&self, course: u64) -> Result<Option<LeaseInfo>, async_nats::Error> {
        let mut info = self.lease_at(&lease_key(course)).await?;
        if let Some(info) = info.as_mut() {
            info.course = course;
        }
        Ok(info)
    }

    /// The live lease stored under `key`, if any (its `course` is 0).
    pub(crate) async fn lease_at(&self, key: &str) -> Result<Option<LeaseInfo>, async_nats::Error> {
        match self.leases.entry(key).await? {
            Some(entry) if entry.operation == kv::Operation::Put => Ok(Some(lease_info(0, entry)?)),
            _ => Ok(None),
        }
    }

    /// Every live lease (one read of the bucket).
    pub async fn leases(&self) -> Result<Vec<LeaseInfo>, async_nats::Error> {
        let mut out = Vec::new();
        for key in crate::layout::bucket_keys(&self.leases).await? {
            let Some(course) = course_of_lease_key(&key) else { continue };
            if let Some(entry) = self.leases.entry(key).await?
                && entry.operation == kv::Operation::Put
            {
                out.push(lease_info(course, entry)?);
            }
        }
        out.sort_by_key(|info| info.course);
        Ok(out)
    }
}

fn lease_info(course: u64, entry: kv::Entry) -> Result<LeaseInfo, async_nats::Error> {
    let mut record: LeaseRecord = serde_json::from_slice(&entry.value)?;
    let revision = entry.revision;
    if record.epoch == 0 {
        // Not renewed yet: the acquiring write is the current one.
        record.epoch = revision;
    }
    let written_at_ms = datetime_ms(entry);
    Ok(LeaseInfo { course, record, revision, written_at_ms })
}
