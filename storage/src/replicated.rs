//! The journal of a cluster node: the durable point is a replicated log (a
//! JetStream stream, behind [`Replicator`]) instead of the local fsync, and
//! the local store is what every node rebuilds by applying that log in
//! order ([`Applier`]).
//!
//! A node that writes (the primary) hands each group to the replicator,
//! which answers once the log has stored it; the group is then applied like
//! any other message, by the node's [`Applier`], and only then are its
//! callers answered. Every node, the primary included, applies every
//! message of the log in log order, so event seqs, counts and records come
//! out the same on every node: a seq a command answered with on one node
//! means the same on all (`?after=` keeps its meaning), and a node that
//! takes over finds exactly the state the log holds.
//!
//! # Histories
//!
//! A batch may say which history it belongs to ([`Batch::in_history`]: a
//! course's). A replicator that files messages by history
//! ([`Replicator::splits_by_history`]) gets each group as parts, one per
//! run of neighbouring batches of one history (or of none), in the
//! journal's order ([`Replicator::append_parts`]); each part
//! is applied as a group of its own, and the callers of the parts stored
//! are answered whatever became of the parts after them. Only neighbours
//! are merged, never reordered: the log holds the batches in the order the
//! journal took them, so a writer that stops at a failed part leaves
//! exactly the batches before it stored (ids taken in order stay dense).
//!
//! The local store is a cache of the log: applied groups are persisted
//! without waiting (fdatasync about once a second), each with the log
//! position it applies, so after a crash the node resumes applying after
//! the last position it kept, and loses nothing the log has.
//!
//! # Forwarding
//!
//! A node that does not write the log ([`Replicator::writes`] is false)
//! does not group: its journal sends each batch, encoded, to the node that
//! writes ([`Replicator::forward`]), where that node's journal commits it
//! (its guards checked there), and answers the caller once this node's
//! applier has applied the log up to the position the writer gave: a caller
//! then reads its own writes locally. Batches are forwarded as they come,
//! each on its own, and may commit in any order (a caller whose batches
//! depend on each other waits for an answer before sending the next, or
//! guards them): one whose answer is slow holds up no other. A refusal
//! ([`ReplicateError::Refused`], [`ReplicateError::TooLarge`]) stored
//! nothing: its caller gets [`CommitError::Stopped`]. A conflict is the
//! writer's [`CommitError::Conflict`]. A failure ([`ReplicateError::Failed`],
//! or the position not applied here within `APPLY_TIMEOUT`) leaves the batch
//! in doubt: its caller alone gets [`CommitError::Write`], and unlike a
//! failed append of its own the journal goes on, since the log was written
//! elsewhere and this node's store is still a faithful copy of it. A batch
//! in doubt is its caller's to settle: it guards its batches (its unit's
//! holder and stored offset) and retries from the offset it finds stored.
//!
//! Must not know NATS: the cluster glue implements [`Replicator`] and feeds
//! [`Applier::apply`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::codec::{Record, decode_value};
use crate::journal::{
    AlreadyStarted, CommitError, DiskFaults, Group, Journal, JournalOptions, Persist, Receipt, Submission, TailEvents,
    now_ms, refuse_conflicts, write,
};
use crate::log::{TailEvent, encode_envelope};
use crate::store::{META_LOG_POSITION, StorageError, Store, WATERMARK_EVERY};

/// A boxed future, for [`Replicator`]'s object-safe method.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a cluster node's journal stores its groups.
pub trait Replicator: Send + Sync + 'static {
    /// Stores one encoded group in the replicated log, answering with its
    /// position once the log holds it durably.
    fn append(&self, group: Vec<u8>) -> BoxFuture<'_, Result<u64, ReplicateError>>;

    /// Stores the encoded parts of one group in the replicated log, in
    /// order, one message each, answering once the log holds them durably:
    /// the positions of the parts stored (the first ones, one right after
    /// the other), and why the rest were not. By default one
    /// [`Replicator::append`] after the other; a log that files them under
    /// their histories' own subjects does so.
    fn append_parts(&self, parts: Vec<LogPart>) -> BoxFuture<'_, Appended> {
        Box::pin(async move {
            let mut appended = Appended { positions: Vec::with_capacity(parts.len()), error: None };
            for part in parts {
                match self.append(part.payload).await {
                    Ok(position) => appended.positions.push(position),
                    Err(error) => {
                        appended.error = Some(error);
                        break;
                    }
                }
            }
            appended
        })
    }

    /// Whether the journal stores each run of one history's batches as a
    /// message of its own ([`Replicator::append_parts`]), for a log that
    /// files them under their history; when false (the default) a group is
    /// one message, whatever its batches' histories.
    fn splits_by_history(&self) -> bool {
        false
    }

    /// Whether this node writes the log now. When false, the journal does
    /// not group: it sends each batch to the writer through
    /// [`Replicator::forward`] and answers once this node has applied it.
    fn writes(&self) -> bool {
        true
    }

    /// Commits one encoded batch ([`Batch::encode`](crate::Batch::encode))
    /// through the node that writes the log: its receipt there and a log
    /// position at or past the group holding it.
    fn forward(&self, batch: Vec<u8>) -> BoxFuture<'_, Result<Forwarded, ReplicateError>> {
        drop(batch);
        Box::pin(async { Err(ReplicateError::Refused("this node forwards nothing".into())) })
    }
}

/// One message of a group in the log: the batches of one history (see
/// [`Batch::in_history`](crate::Batch::in_history)) that were next to each
/// other in the journal's queue, or of none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPart {
    /// The history all its batches belong to, if one.
    pub history: Option<u64>,
    /// The part, encoded.
    pub payload: Vec<u8>,
}

/// What [`Replicator::append_parts`] stored.
#[derive(Debug)]
pub struct Appended {
    /// The positions of the parts stored: the first ones, in order.
    pub positions: Vec<u64>,
    /// Why the others were not (`None`: every part was stored).
    pub error: Option<ReplicateError>,
}

/// A batch committed by the node that writes the log, for the node that
/// forwarded it ([`Replicator::forward`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    /// What the writer's journal answered.
    pub receipt: Receipt,
    /// A log position at or past the group holding the batch (the writer's
    /// applied position once its commit returned): the forwarding node
    /// answers its caller once it has applied this far.
    pub position: u64,
}

/// A group the replicated log did not take.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ReplicateError {
    /// Nothing was stored and nothing is in doubt (this node may not write:
    /// it is not the primary): the callers are refused, the journal goes on.
    #[error("the log refused the write: {0}")]
    Refused(String),
    /// The write may or may not be in the log (no answer in time), or this
    /// node's writes are fenced off (another node took over): fail-stop.
    #[error("the log write failed: {0}")]
    Failed(String),
    /// The log takes no message this large (a NATS server's max payload):
    /// nothing was stored. The journal stores the group in smaller parts;
    /// a single batch too large is refused alone, and the journal goes on.
    #[error("the log refused the group for its size: {0}")]
    TooLarge(String),
    /// Another node writes the log now (a newer primary fenced this one):
    /// nothing of the group was stored, for certain, and this node may
    /// never write again. Fail-stop like [`ReplicateError::Failed`], but
    /// the callers are told nothing was done ([`CommitError::Stopped`]).
    #[error("the log refused the write: {0}")]
    Fenced(String),
    /// The writer's journal refused a forwarded batch: a guard did not hold
    /// ([`CommitError::Conflict`], with its key). Nothing was stored.
    #[error("the writer refused a batch: expected value of key {0} did not hold")]
    Conflict(String),
}

/// Why a group was not stored: the log's answer, or the journal's own
/// failure to encode it (nothing was sent; its callers are refused).
enum Unstored {
    Log(ReplicateError),
    Encode(String),
}

/// What [`ReplicatedWriter::replicate`] did with a group.
struct Replicated {
    /// The parts stored and applied, in order: how many batches each held,
    /// and the seq its first event got.
    stored: Vec<(usize, u64)>,
    /// Why the batches after those were not stored (or are in doubt).
    error: Option<Unstored>,
}

/// How many batches at the front of `queue` are one log message: those of
/// one history next to each other (or of none). Only neighbours are merged:
/// the journal's order is the log's, so that when a part fails (and the
/// writer stops), the batches stored are exactly those before it.
fn history_run(queue: &[Submission]) -> usize {
    let Some(first) = queue.first() else { return 0 };
    queue.iter().take_while(|s| s.batch.history == first.batch.history).count()
}

/// One group as it travels through the log.
#[derive(Serialize, Deserialize)]
struct WireGroup {
    /// The writing journal's incarnation (random per start), so that only
    /// it answers its callers when the group comes back.
    writer: u64,
    /// The group's number within that incarnation.
    id: u64,
    /// When it was committed, unix ms: its events' time, the same on every node.
    at_ms: u64,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    events: Vec<(u64, Vec<u8>)>,
    trimmed: Vec<u64>,
    adds: Vec<(Vec<u8>, i64)>,
}

/// The events of one message of a cluster's log, in order, decoded as `E`:
/// for a reader of the log outside the nodes (a course's history, read on
/// its own subject), not for applying it ([`Applier`] does that). Their
/// seqs are not in the message: every node assigns them as it applies.
pub fn log_events<E: Record>(payload: &[u8]) -> Result<Vec<E>, String> {
    let wire: WireGroup = postcard::from_bytes(payload).map_err(|e| format!("not a commit group: {e}"))?;
    wire.events
        .iter()
        .enumerate()
        .map(|(i, (_, event))| decode_value(event).map_err(|e| format!("event {i} of the group: {e}")))
        .collect()
}

/// [`WireGroup`] as the writer sends it: the same fields in the same
/// order (postcard encodes a reference as what it refers to), borrowed
/// from the submissions so that a group the log refuses for its size can
/// be sent again in parts.
#[derive(Serialize)]
struct WireGroupOut<'a> {
    writer: u64,
    id: u64,
    at_ms: u64,
    writes: Vec<&'a (Vec<u8>, Option<Vec<u8>>)>,
    events: Vec<&'a (u64, Vec<u8>)>,
    trimmed: Vec<&'a u64>,
    adds: Vec<&'a (Vec<u8>, i64)>,
}

/// Callers waiting for their group to come back from the log: group id →
/// the seq its first event got (or the log's seq before it).
type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<u64>>>>;

/// Applies the replicated log to the local store, in log order. One per
/// node; the cluster glue calls [`Applier::apply`] for every message.
pub struct Applier {
    store: Store,
    writer: u64,
    waiting: Waiting,
    state: Mutex<ApplyState>,
    position: watch::Sender<u64>,
}

struct ApplyState {
    next_seq: u64,
    last_sync: Instant,
    last_watermark: Option<Instant>,
    faults: Arc<DiskFaults>,
}

/// A message of the log could not be applied: the node's store is no longer
/// a faithful copy of the log and takes no more writes.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("log message {position} does not decode: {reason}")]
    Decode { position: u64, reason: String },
    /// The log's positions are consecutive (markers included): a message
    /// that skips some means they were removed from the stream (a purge, a
    /// limit an operator set on it), and this store can no longer be a copy.
    #[error(
        "log message {position} arrived after {applied}: the messages between are missing from the log (deleted or \
         purged), so this node cannot rebuild it"
    )]
    OutOfOrder { position: u64, applied: u64 },
    #[error("applying log message {position}: {source}")]
    Commit { position: u64, source: CommitError },
}

/// How often an applier fdatasyncs what it applied.
const SYNC_EVERY: Duration = Duration::from_secs(1);

impl Journal {
    /// Starts a cluster node's journal on `store`: every commit goes to
    /// `replicator`, and is answered once the returned [`Applier`] has
    /// applied it from the log. The store must be empty or a copy of this
    /// log ([`Store::log_position`]).
    pub fn start_replicated(
        store: &Store,
        options: JournalOptions,
        replicator: Arc<dyn Replicator>,
    ) -> Result<(Journal, Arc<Applier>, JoinHandle<()>), AlreadyStarted> {
        if store.shared.journal_started.swap(true, Ordering::SeqCst) {
            return Err(AlreadyStarted);
        }
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let faults = Arc::new(DiskFaults::default());
        let writer = fastrand::u64(..);
        let waiting: Waiting = Arc::default();
        let position = store.log_position().unwrap_or(0);
        let applier = Arc::new(Applier {
            store: store.clone(),
            writer,
            waiting: waiting.clone(),
            state: Mutex::new(ApplyState {
                next_seq: store.events().last_seq() + 1,
                last_sync: Instant::now(),
                last_watermark: None,
                faults: faults.clone(),
            }),
            position: watch::Sender::new(position),
        });
        let applied = applier.watch();
        let task = tokio::spawn(
            ReplicatedWriter {
                store: store.clone(),
                writer,
                waiting,
                replicator,
                applied,
                next_id: 0,
                failed: None,
                forwards: JoinSet::new(),
            }
            .run(rx, options.max_group.max(1)),
        );
        Ok((Journal { tx, faults, backups: Arc::new(tokio::sync::Mutex::new(())) }, applier, task))
    }
}

/// The identity of the replicated log a cluster node's store copies.
const META_LOG_IDENTITY: &[u8] = b"mlog_identity";

/// A store that copies another log than the one its node joined.
#[derive(Debug, thiserror::Error)]
pub enum BindLogError {
    #[error("the store copies the log {bound:?}, not the cluster's log {log:?}")]
    Other { bound: String, log: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Store {
    /// Ties this store to the log named `log` (see the cluster's
    /// `log_identity`): recorded, durably, the first time; refused if the
    /// store already copies another log. Positions alone cannot tell two
    /// logs apart: a node whose directory was another cluster's (or from
    /// before its stream was created again) would apply the new log from
    /// its old position on, and diverge without a sign.
    pub fn bind_log(&self, log: &str) -> Result<(), BindLogError> {
        let records = &self.shared.records;
        match records.get(META_LOG_IDENTITY).map_err(StorageError::from)? {
            Some(bound) if bound.as_ref() == log.as_bytes() => Ok(()),
            Some(bound) => {
                Err(BindLogError::Other { bound: String::from_utf8_lossy(&bound).into_owned(), log: log.to_owned() })
            }
            None => {
                records.insert(META_LOG_IDENTITY, log.as_bytes()).map_err(StorageError::from)?;
                self.shared.db().persist(fjall::PersistMode::SyncData).map_err(StorageError::from)?;
                Ok(())
            }
        }
    }

    /// The log this store is tied to ([`Store::bind_log`]), if it is yet.
    pub fn log_identity(&self) -> Option<String> {
        let raw = self.shared.records.get(META_LOG_IDENTITY).ok()??;
        Some(String::from_utf8_lossy(&raw).into_owned())
    }

    /// The last position of the replicated log this store applied; `None`
    /// for a store that never applied one (empty, or an embedded store).
    pub fn log_position(&self) -> Option<u64> {
        let raw = self.shared.records.get(META_LOG_POSITION).ok()??;
        Some(u64::from_be_bytes(raw.as_ref().try_into().ok()?))
    }
}

impl Applier {
    /// The last log position applied (or skipped).
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    /// Watches the position applied.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.position.subscribe()
    }

    /// Waits until the position applied reaches `position`; false after `within`.
    pub async fn reached(&self, position: u64, within: Duration) -> bool {
        let mut watch = self.watch();
        tokio::time::timeout(within, watch.wait_for(|p| *p >= position)).await.is_ok_and(|r| r.is_ok())
    }

    /// Marks a message of the log that holds no group (a takeover marker)
    /// as applied: nothing is written locally. Like [`Applier::apply`], a
    /// message after a gap fails the store.
    pub fn skip(&self, position: u64) -> Result<(), ApplyError> {
        let applied = self.position();
        if position <= applied {
            return Ok(());
        }
        if position != applied + 1 {
            return Err(self.fail(position, ApplyError::OutOfOrder { position, applied }));
        }
        self.position.send_replace(position);
        Ok(())
    }

    /// Applies the group at `position` of the log to the local store (a
    /// blocking fjall write: call it from a blocking thread). Messages at or
    /// below the position already applied are skipped (a redelivery); one
    /// beyond the next is a gap in the log. On an error the store is
    /// failed: it takes no more writes.
    pub fn apply(&self, position: u64, payload: &[u8]) -> Result<(), ApplyError> {
        let applied = self.position();
        if position <= applied {
            return Ok(());
        }
        if position != applied + 1 {
            return Err(self.fail(position, ApplyError::OutOfOrder { position, applied }));
        }
        self.apply_inner(position, payload).map_err(|error| self.fail(position, error))
    }

    /// Fails the store at `position` of the log, a message the follower
    /// could not read as the primary's (`reason`): this node can no longer
    /// copy the log, and going on past it would diverge.
    pub fn reject(&self, position: u64, reason: String) -> ApplyError {
        self.fail(position, ApplyError::Decode { position, reason })
    }

    /// Fails the store: it is no longer a faithful copy of the log.
    fn fail(&self, position: u64, error: ApplyError) -> ApplyError {
        let reason: Arc<str> = error.to_string().into();
        self.store.shared.failure.send_replace(Some(reason));
        metrics::gauge!("sugang_storage_failed").set(1.0);
        tracing::error!(%error, position, "the replicated log could not be applied: the store takes no more writes");
        error
    }

    fn apply_inner(&self, position: u64, payload: &[u8]) -> Result<(), ApplyError> {
        let wire: WireGroup =
            postcard::from_bytes(payload).map_err(|e| ApplyError::Decode { position, reason: e.to_string() })?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let first_seq = state.next_seq;
        let mut seq = first_seq;
        let mut tail: TailEvents = Vec::with_capacity(wire.events.len());
        let mut events = Vec::with_capacity(wire.events.len());
        for (key, payload) in wire.events {
            let envelope = encode_envelope(wire.at_ms, key, &payload)
                .map_err(|e| ApplyError::Decode { position, reason: e.to_string() })?;
            events.push((seq, envelope));
            tail.push(TailEvent { seq, at_ms: wire.at_ms, key, payload: Arc::new(payload) });
            seq += 1;
        }
        let trimmed_through = wire.trimmed.iter().max().copied();
        let mut group = Group {
            writes: wire.writes,
            events,
            trimmed: wire.trimmed,
            adds: wire.adds,
            last_seq: (seq != first_seq).then_some(seq - 1),
            position: Some(position),
        };
        group.coalesce();
        let keys = group.writes.len() + group.events.len() + group.trimmed.len() + group.adds.len();
        let tally = group.tally();
        let sync = state.last_sync.elapsed() >= SYNC_EVERY;
        let due = state.last_watermark.is_none_or(|at| at.elapsed() >= WATERMARK_EVERY);
        let persist = Persist { sync, watermark: (sync && due && seq > 1).then_some(seq - 1) };
        let started = Instant::now();
        write(&self.store, &state.faults, group, persist).map_err(|source| ApplyError::Commit { position, source })?;
        state.next_seq = seq;
        if sync {
            state.last_sync = started;
        }
        if persist.watermark.is_some() {
            state.last_watermark = Some(started);
        }
        drop(state);
        if let Some(through) = trimmed_through {
            self.store.shared.tail.trim_through(through);
        }
        if !tail.is_empty() {
            self.store.shared.tail.push(tail);
        }
        self.store.shared.last_seq.send_if_modified(|last| std::mem::replace(last, seq - 1) != seq - 1);
        metrics::counter!("sugang_log_applied_total").increment(1);
        metrics::counter!("sugang_journal_keys_total").increment(keys as u64);
        metrics::gauge!("sugang_journal_last_seq").set((seq - 1) as f64);
        metrics::gauge!("sugang_log_applied_position").set(position as f64);
        self.store.count_written(tally);
        self.position.send_replace(position);
        if wire.writer == self.writer
            && let Some(waiter) = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&wire.id)
        {
            let _ = waiter.send(first_seq);
        }
        Ok(())
    }
}

/// The journal task of a cluster node.
struct ReplicatedWriter {
    store: Store,
    writer: u64,
    waiting: Waiting,
    replicator: Arc<dyn Replicator>,
    /// The position this node's applier reached: a forwarded batch is
    /// answered once it passes the batch's.
    applied: watch::Receiver<u64>,
    next_id: u64,
    failed: Option<Arc<str>>,
    /// The batches forwarded and not answered yet, each on its own: one
    /// whose answer is slow (in doubt, up to the forward's patience) holds
    /// up no other.
    forwards: JoinSet<()>,
}

/// How long a group stored in the log may take to come back through the
/// node's applier before the node gives up on its store.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

impl ReplicatedWriter {
    async fn run(mut self, mut rx: mpsc::Receiver<Submission>, max_group: usize) {
        let mut pending = Vec::with_capacity(max_group);
        loop {
            tokio::select! {
                received = rx.recv_many(&mut pending, max_group) => {
                    if received == 0 {
                        break;
                    }
                    self.commit_group(&mut pending).await;
                }
                Some(joined) = self.forwards.join_next() => reap(joined),
            }
        }
        // Every forward in flight answers its caller before the task ends
        // (one aborted with the task tells its caller the journal closed).
        while let Some(joined) = self.forwards.join_next().await {
            reap(joined);
        }
        tracing::info!("replicated journal stopped");
    }

    /// Stores `pending` in the log, in order, and answers each caller. A
    /// group the log refuses for its size ([`ReplicateError::TooLarge`]:
    /// a group of up to `max_group` batches can pass a NATS server's max
    /// payload under a rush) is split in halves, each stored on its own;
    /// a single batch too large is refused alone. A node that does not
    /// write the log forwards the batches instead ([`Self::forward_group`]).
    async fn commit_group(&mut self, pending: &mut Vec<Submission>) {
        while !pending.is_empty() {
            if let Some(reason) = &self.failed {
                for submission in pending.drain(..) {
                    let _ = submission.reply.send(Err(CommitError::Stopped(reason.clone())));
                }
                return;
            }
            if !self.replicator.writes() {
                self.forward_group(pending);
                return;
            }
            // The writer is serial: each part is applied by this node's
            // applier before the next is checked, and a node writes only
            // once it has applied the log up to its takeover, so the store
            // holds everything a guard must see but this part. Checked
            // again after a split: a part refused by the log stored nothing.
            refuse_conflicts(&self.store, pending);
            if pending.is_empty() {
                return;
            }
            let mut take = pending.len();
            loop {
                let replicated = self.replicate(&pending[..take]).await;
                // The parts stored are answered whatever became of the rest.
                for &(batches, first_seq) in &replicated.stored {
                    let part: Vec<Submission> = pending.drain(..batches).collect();
                    take -= batches;
                    self.answer(part, Ok(first_seq));
                }
                match replicated.error {
                    None => break,
                    // Not a part of this attempt: nothing left to blame.
                    Some(_) if take == 0 => break,
                    // The first part not stored is too large for one log
                    // message: stored in halves, or refused alone.
                    Some(Unstored::Log(ReplicateError::TooLarge(reason))) => {
                        let run =
                            if self.replicator.splits_by_history() { history_run(&pending[..take]) } else { take };
                        if run > 1 {
                            tracing::info!(%reason, batches = run, "a group part too large for the log: storing it in two");
                            take = run / 2;
                            continue;
                        }
                        let part: Vec<Submission> = pending.drain(..1).collect();
                        self.answer(part, Err(Unstored::Log(ReplicateError::TooLarge(reason))));
                        break;
                    }
                    Some(error) => {
                        let part: Vec<Submission> = pending.drain(..take).collect();
                        self.answer(part, Err(error));
                        break;
                    }
                }
            }
        }
    }

    /// Stores the batches of `group` in the log, one message per run of
    /// batches of one history ([`history_run`]), and waits for this node's
    /// applier to apply the parts stored: how many batches each held and
    /// the seq its first event got, and why the rest were not stored.
    async fn replicate(&mut self, group: &[Submission]) -> Replicated {
        let started = Instant::now();
        let at_ms = now_ms();
        let mut runs = Vec::new();
        let mut parts = Vec::new();
        let splits = self.replicator.splits_by_history();
        let mut rest = group;
        while !rest.is_empty() {
            let (run, after) = rest.split_at(if splits { history_run(rest) } else { rest.len() });
            rest = after;
            self.next_id += 1;
            let wire = WireGroupOut {
                writer: self.writer,
                id: self.next_id,
                at_ms,
                writes: run.iter().flat_map(|s| &s.batch.writes).collect(),
                events: run.iter().flat_map(|s| &s.batch.events).collect(),
                trimmed: run.iter().flat_map(|s| &s.batch.trimmed).collect(),
                adds: run.iter().flat_map(|s| &s.batch.adds).collect(),
            };
            match postcard::to_allocvec(&wire) {
                Ok(payload) => parts.push(LogPart { history: run[0].batch.history.filter(|_| splits), payload }),
                Err(e) => {
                    tracing::error!(error = %e, batches = group.len(), "journal group could not be encoded");
                    return Replicated { stored: Vec::new(), error: Some(Unstored::Encode(e.to_string())) };
                }
            }
            runs.push((run.len(), self.next_id));
        }
        let mut runs: Vec<_> = runs
            .into_iter()
            .map(|(batches, id)| {
                let (back, came_back) = oneshot::channel();
                self.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(id, back);
                (batches, id, came_back)
            })
            .collect();
        let appended = self.replicator.append_parts(parts).await;
        let mut replicated = Replicated {
            stored: Vec::with_capacity(appended.positions.len()),
            error: appended.error.map(Unstored::Log),
        };
        if replicated.error.is_none() && appended.positions.len() < runs.len() {
            replicated.error = Some(Unstored::Log(ReplicateError::Failed(format!(
                "the log answered {} positions for {} parts",
                appended.positions.len(),
                runs.len()
            ))));
        }
        for (&position, (batches, _, came_back)) in appended.positions.iter().zip(runs.iter_mut()) {
            match tokio::time::timeout(APPLY_TIMEOUT, came_back).await {
                Ok(Ok(first_seq)) => replicated.stored.push((*batches, first_seq)),
                Ok(Err(_)) | Err(_) => {
                    replicated.error = Some(Unstored::Log(ReplicateError::Failed(format!(
                        "group part stored at log position {position} was not applied locally within {APPLY_TIMEOUT:?}"
                    ))));
                    break;
                }
            }
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        for (_, id, _) in &runs {
            waiting.remove(id);
        }
        drop(waiting);
        metrics::histogram!("sugang_journal_group_size").record(group.len() as f64);
        metrics::histogram!("sugang_journal_group_parts").record(runs.len() as f64);
        metrics::histogram!("sugang_journal_commit_seconds").record(started.elapsed().as_secs_f64());
        replicated
    }

    /// Forwards every batch of `pending` to the node that writes the log,
    /// each on its own, answered when its answer comes (see the module
    /// doc); returns at once, for the next batches.
    fn forward_group(&mut self, pending: &mut Vec<Submission>) {
        for submission in pending.drain(..) {
            let (replicator, applied, store) = (self.replicator.clone(), self.applied.clone(), self.store.clone());
            self.forwards.spawn(forward(replicator, applied, store, submission));
        }
    }

    /// Stops this node's writes for good after a group the log did not
    /// take: `fenced`, it stored nothing (its callers are told so, as
    /// `Stopped`); otherwise it may be stored (`Write`: in doubt).
    fn stop_writing(&mut self, part: Vec<Submission>, reason: String, fenced: bool) {
        let size = part.len();
        let reason: Arc<str> = reason.into();
        self.failed = Some(reason.clone());
        self.store.shared.failure.send_replace(Some(reason.clone()));
        let outcome = if fenced { "refused" } else { "failed" };
        metrics::counter!("sugang_journal_batches_total", "outcome" => outcome).increment(size as u64);
        metrics::gauge!("sugang_storage_failed").set(1.0);
        tracing::error!(%reason, batches = size, fenced, "a log write failed: this node takes no more writes and must restart");
        for submission in part {
            let error =
                if fenced { CommitError::Stopped(reason.clone()) } else { CommitError::Write(reason.to_string()) };
            let _ = submission.reply.send(Err(error));
        }
    }

    /// Answers the callers of a group stored (or not) by [`Self::replicate`].
    fn answer(&mut self, part: Vec<Submission>, outcome: Result<u64, Unstored>) {
        let size = part.len();
        match outcome {
            Ok(first_seq) => {
                metrics::counter!("sugang_journal_batches_total", "outcome" => "committed").increment(size as u64);
                let mut seq = first_seq;
                for submission in part {
                    let events = submission.batch.events.len() as u64;
                    let receipt = Receipt { first_seq: (events > 0).then_some(seq), seq: seq + events - 1 };
                    seq += events;
                    if let Some(taken) = submission.snapshot {
                        let _ = taken.send(self.store.snapshot());
                    }
                    let _ = submission.reply.send(Ok(receipt));
                }
            }
            Err(Unstored::Encode(reason)) => {
                for submission in part {
                    let _ = submission.reply.send(Err(CommitError::Write(reason.clone())));
                }
            }
            Err(Unstored::Log(ReplicateError::Refused(reason) | ReplicateError::TooLarge(reason))) => {
                metrics::counter!("sugang_journal_batches_total", "outcome" => "refused").increment(size as u64);
                let reason: Arc<str> = reason.into();
                for submission in part {
                    let _ = submission.reply.send(Err(CommitError::Stopped(reason.clone())));
                }
            }
            Err(Unstored::Log(ReplicateError::Conflict(key))) => {
                // Not an answer the log gives to an append; nothing was
                // stored, so the callers are told as a refusal would be.
                for submission in part {
                    let _ = submission.reply.send(Err(CommitError::Conflict(key.clone())));
                }
            }
            Err(Unstored::Log(ReplicateError::Fenced(reason))) => self.stop_writing(part, reason, true),
            Err(Unstored::Log(ReplicateError::Failed(reason))) => self.stop_writing(part, reason, false),
        }
    }
}

/// A forward that panicked dropped its caller's reply: the caller is told
/// the journal closed; this says why.
fn reap(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        tracing::error!(error = %e, "forwarding a batch failed");
    }
}

/// Commits one batch through the node that writes the log and answers its
/// caller once this node has applied the log that far (see the module doc).
async fn forward(
    replicator: Arc<dyn Replicator>,
    mut applied: watch::Receiver<u64>,
    store: Store,
    submission: Submission,
) {
    let outcome = match submission.batch.encode() {
        Ok(payload) => match replicator.forward(payload).await {
            Ok(Forwarded { receipt, position }) => {
                match tokio::time::timeout(APPLY_TIMEOUT, applied.wait_for(|at| *at >= position)).await {
                    Ok(Ok(_)) => Ok(receipt),
                    Ok(Err(_)) | Err(_) => Err(CommitError::Write(format!(
                        "batch committed by the writer up to log position {position} was not applied locally \
                         within {APPLY_TIMEOUT:?}"
                    ))),
                }
            }
            Err(
                ReplicateError::Refused(reason) | ReplicateError::TooLarge(reason) | ReplicateError::Fenced(reason),
            ) => Err(CommitError::Stopped(reason.into())),
            Err(ReplicateError::Conflict(key)) => Err(CommitError::Conflict(key)),
            Err(ReplicateError::Failed(reason)) => Err(CommitError::Write(reason)),
        },
        Err(e) => Err(CommitError::Write(e.to_string())),
    };
    match &outcome {
        Ok(_) => metrics::counter!("sugang_journal_batches_total", "outcome" => "committed").increment(1),
        Err(CommitError::Stopped(_)) => {
            metrics::counter!("sugang_journal_batches_total", "outcome" => "refused").increment(1)
        }
        Err(CommitError::Write(reason)) => {
            tracing::warn!(%reason, "a forwarded batch is in doubt: its caller is told, the journal goes on")
        }
        Err(_) => {}
    }
    if outcome.is_ok()
        && let Some(taken) = submission.snapshot
    {
        let _ = taken.send(store.snapshot());
    }
    let _ = submission.reply.send(outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of a commit in the log, pinned. Every node decodes every
    /// other node's commits, the releases before this one's included: if
    /// this test fails, the layout changed, and `COMMIT_FORMAT`
    /// (cluster/src/primary.rs) must be bumped, the applier taught to read
    /// the old layout, and these bytes updated.
    #[test]
    fn the_layout_of_a_commit_is_pinned() {
        let write = (vec![1, 2], Some(vec![3]));
        let delete = (vec![4], None);
        let event = (7u64, vec![8, 9]);
        let (trim, add) = (5u64, (vec![6], -2i64));
        let out = WireGroupOut {
            writer: 300,
            id: 2,
            at_ms: 1_000,
            writes: vec![&write, &delete],
            events: vec![&event],
            trimmed: vec![&trim],
            adds: vec![&add],
        };
        let bytes = postcard::to_allocvec(&out).expect("encode");
        assert_eq!(
            bytes,
            [
                0xac, 0x02, // writer 300 (varint)
                0x02, // id
                0xe8, 0x07, // at_ms 1000
                0x02, 0x02, 1, 2, 0x01, 0x01, 3, 0x01, 4, 0x00, // writes: [1,2]=[3], [4] deleted
                0x01, 0x07, 0x02, 8, 9, // events: key 7, payload [8,9]
                0x01, 0x05, // trimmed: 5
                0x01, 0x01, 6, 0x03, // adds: [6] by -2 (zigzag)
            ],
            "the log's commit layout changed: see this test's doc"
        );
        // What a node reads is what the writer sent.
        let read: WireGroup = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!((read.writer, read.id, read.at_ms), (300, 2, 1_000));
        assert_eq!(read.writes, vec![write, delete]);
        assert_eq!(read.events, vec![event]);
        assert_eq!((read.trimmed, read.adds), (vec![trim], vec![add]));
    }
}
