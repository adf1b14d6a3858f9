//! The journal: the single writer of the store, with group commit.
//!
//! Ours, not a library's, because it is the product: every acknowledgement
//! sugang gives rests on it. Callers submit a [`Batch`] (puts and deletes
//! across tables, events, subscriber offsets) and await a [`Receipt`]. The
//! journal task takes whatever batches are waiting, writes them as one atomic
//! fjall batch across the store's keyspaces, persists fjall's journal once
//! (fdatasync, on a blocking thread), and only then answers every caller of
//! the group. Events get gap-free, strictly increasing seqs in commit order.
//!
//! A group writes each key once: the last write to a key wins (as it would
//! anyway), and the counts batches add to ([`Batch::add`]: the sizes a page's
//! `totalElements` reads) are summed per key and applied by the journal, their
//! one writer, so concurrent committers never lose an increment and a count
//! shared by a whole group costs one key. [`Store::keys_written`] tallies what
//! was written, per table.
//!
//! # Guards
//!
//! A batch may carry guards ([`Batch::expect`], [`Batch::expect_offset`]):
//! raw keys and the values they must hold when the batch's turn comes. The
//! journal checks them against the store plus the writes of the batches
//! before it in its group, and commits the batch only if every one holds;
//! otherwise nothing of it is stored and its caller gets
//! [`CommitError::Conflict`]. It is a compare-and-set that fences a stale
//! writer: a subscriber unit leased to one node at a time guards its batch
//! with its holder key and its stored offset, so a node that lost the unit
//! (or replays from an old offset) writes nothing. Guards read the stored
//! bytes, not the counts the group is adding to ([`Batch::add`]).
//!
//! # Fail-stop
//!
//! After a failed write or persist the state on disk is unknown (a failed
//! fsync may have dropped pages the kernel said it held: PostgreSQL's
//! "fsyncgate"), so there is no rollback and no retry. The journal answers
//! every caller of the failed group, and every later one, with a typed
//! [`CommitError`], and sets the store's failure ([`Store::failure`]) so the
//! service turns unready, drains and exits for its supervisor to restart it
//! from disk. The store is then never closed cleanly (see `store`), so nothing
//! unacknowledged is persisted on the way out.
//!
//! Must not know what the tables mean; must not be bypassed: nothing else in
//! sugang writes to fjall.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::codec::{Count, EncodeError, Key, Record, Table, decode_value, encode_value};
use crate::log::{TailEvent, encode_envelope, event_key};
use crate::store::{
    BackupError, Durability, META_LAST_SEQ, META_LOG_POSITION, StorageError, Store, Verified, WATERMARK_EVERY, lock,
    offset_key, write_watermark,
};

/// A set of writes that commit together or not at all.
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Batch {
    pub(crate) writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// (partition key, encoded event), in the order they were appended.
    pub(crate) events: Vec<(u64, Vec<u8>)>,
    /// Event seqs that retention removes.
    pub(crate) trimmed: Vec<u64>,
    /// Counter deltas (raw key, delta), applied by the journal: see [`Batch::add`].
    pub(crate) adds: Vec<(Vec<u8>, i64)>,
    /// (raw key, expected raw value; `None`: absent) that must hold for the
    /// batch to commit: see [`Batch::expect`].
    pub(crate) guards: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The history it belongs to, if one ([`Batch::in_history`]). Not sent
    /// with a forwarded batch: the writer stores those on the shared subject.
    #[serde(skip)]
    pub(crate) history: Option<u64>,
}

/// The format byte in front of an encoded [`Batch`] ([`Batch::encode`]), so
/// that a node never reads a batch of another layout as its own.
const BATCH_FORMAT: u8 = 1;

/// An encoded batch ([`Batch::decode`]) that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BatchDecodeError {
    /// Not even the format byte.
    #[error("an encoded batch is empty")]
    Empty,
    /// Encoded by a release with another batch layout.
    #[error("an encoded batch has the unknown format {0}")]
    UnknownFormat(u8),
    /// The body does not decode as a batch, or bytes are left over.
    #[error("an encoded batch is malformed: {0}")]
    Malformed(#[source] postcard::Error),
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Writes `value` under `key`, replacing what was there.
    pub fn put<K: Key, V: Record>(
        &mut self,
        table: &Table<K, V>,
        key: &K,
        value: &V,
    ) -> Result<&mut Self, EncodeError> {
        let raw = encode_value(table.name(), value)?;
        self.writes.push((table.key_bytes(key), Some(raw)));
        Ok(self)
    }

    /// Removes `key` (a no-op if absent).
    pub fn delete<K: Key, V: Record>(&mut self, table: &Table<K, V>, key: &K) -> &mut Self {
        self.writes.push((table.key_bytes(key), None));
        self
    }

    /// Adds `delta` to the count under `key` (a count below zero stays at
    /// zero). The journal, the store's one writer, reads the count and writes
    /// the sum in the group that commits this batch, so concurrent batches
    /// never lose each other's increments, and every batch of a group that
    /// touches the same count costs one key write in all. Read it with
    /// [`Store::count`](crate::Store::count). Put it in the batch that writes
    /// the records it counts.
    pub fn add<K: Key>(&mut self, table: &Table<K, Count>, key: &K, delta: i64) -> &mut Self {
        if delta != 0 {
            self.adds.push((table.key_bytes(key), delta));
        }
        self
    }

    /// Appends an event to the log, with `partition_key` (its correlation
    /// id) for subscribers that split the log. Its seq is assigned at commit.
    pub fn append<E: Record>(&mut self, partition_key: u64, event: &E) -> Result<&mut Self, EncodeError> {
        self.events.push((partition_key, encode_value("events", event)?));
        Ok(self)
    }

    /// Stores `subscriber`'s offset: it has applied every event up to `seq`.
    /// Put it in the same batch as the effects of those events.
    pub fn set_offset(&mut self, subscriber: &str, seq: u64) -> &mut Self {
        self.writes.push((offset_key(subscriber), Some(seq.to_be_bytes().to_vec())));
        self
    }

    /// Unregisters `subscriber`: its offset no longer holds back retention.
    pub fn remove_offset(&mut self, subscriber: &str) -> &mut Self {
        self.writes.push((offset_key(subscriber), None));
        self
    }

    /// Commits this batch only if `key` of `table` holds `expected` (None:
    /// absent) when its turn comes: after the batches committed before it,
    /// those earlier in its own group included. Otherwise nothing of it is
    /// stored and its caller gets [`CommitError::Conflict`]. The value is
    /// compared as encoded, byte for byte (see the module doc).
    pub fn expect<K: Key, V: Record>(
        &mut self,
        table: &Table<K, V>,
        key: &K,
        expected: Option<&V>,
    ) -> Result<&mut Self, EncodeError> {
        let raw = expected.map(|value| encode_value(table.name(), value)).transpose()?;
        self.guards.push((table.key_bytes(key), raw));
        Ok(self)
    }

    /// The same as [`Batch::expect`] for a subscriber's stored offset (see
    /// [`Batch::set_offset`]): `None` expects no offset stored.
    pub fn expect_offset(&mut self, subscriber: &str, expected: Option<u64>) -> &mut Self {
        self.guards.push((offset_key(subscriber), expected.map(|seq| seq.to_be_bytes().to_vec())));
        self
    }

    /// Says which history the batch belongs to: an aggregate's (a course's
    /// id), whose changes a reader of the log may want on their own. The
    /// embedded journal ignores it; a cluster's stores the batch in a log
    /// message of that history only, with the batches of the same history
    /// next to it in the journal's queue.
    pub fn in_history(&mut self, key: u64) -> &mut Self {
        self.history = Some(key);
        self
    }

    /// Moves everything of `other` into this batch, after what it holds,
    /// its guards included: the whole commits only if all of them hold. The
    /// whole belongs to a history only if both parts do (or one is empty).
    pub fn extend(&mut self, other: Batch) -> &mut Self {
        self.history = match (self.history, other.history) {
            (mine, theirs) if mine == theirs => mine,
            (None, theirs) if self.is_empty() => theirs,
            (mine, None) if other.is_empty() => mine,
            _ => None,
        };
        self.writes.extend(other.writes);
        self.events.extend(other.events);
        self.trimmed.extend(other.trimmed);
        self.adds.extend(other.adds);
        self.guards.extend(other.guards);
        self
    }

    /// Whether the batch would write nothing. Guards are not writes: a batch
    /// holding only guards is empty (committing it would store nothing; it
    /// would only tell whether they hold).
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.events.is_empty() && self.trimmed.is_empty() && self.adds.is_empty()
    }

    /// How many keys it writes at most (puts and deletes, offsets, events,
    /// counts); a group writes a key its batches share once.
    pub fn key_count(&self) -> usize {
        self.writes.len() + self.events.len() + self.trimmed.len() + self.adds.len()
    }

    /// How many events it appends.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// The batch as bytes, guards included, for a node that forwards it to
    /// the node that writes the log ([`Batch::decode`] reads it back there).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        postcard::to_extend(self, vec![BATCH_FORMAT]).map_err(|source| EncodeError { table: "batch", source })
    }

    /// Reads a batch [`Batch::encode`] wrote. Any other input, truncated or
    /// garbage, is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Batch, BatchDecodeError> {
        let (&format, body) = bytes.split_first().ok_or(BatchDecodeError::Empty)?;
        if format != BATCH_FORMAT {
            return Err(BatchDecodeError::UnknownFormat(format));
        }
        let (batch, rest) = postcard::take_from_bytes(body).map_err(BatchDecodeError::Malformed)?;
        if !rest.is_empty() {
            return Err(BatchDecodeError::Malformed(postcard::Error::DeserializeBadEncoding));
        }
        Ok(batch)
    }

    /// The last write this batch holds for a raw key: `Some(None)` for a
    /// delete, `None` if the batch does not touch the key.
    pub(crate) fn staged(&self, raw_key: &[u8]) -> Option<Option<&[u8]>> {
        self.writes.iter().rev().find(|(key, _)| key == raw_key).map(|(_, value)| value.as_deref())
    }
}

/// The answer to a committed batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The seq of the batch's first event, if it had any.
    pub first_seq: Option<u64>,
    /// The seq the log had reached once the batch was durable: the batch's
    /// last event's, or for a batch without events the last one before it.
    /// A reader that has seen this seq has seen the batch's effects.
    pub seq: u64,
}

/// A batch was not acknowledged. After `Write` or `Flush` its state on disk
/// is unknown, and the store takes no more writes (fail-stop).
#[derive(Clone, Debug, thiserror::Error)]
pub enum CommitError {
    /// fjall refused the group's write.
    #[error("journal write failed: {0}")]
    Write(String),
    /// Persisting the group to disk failed.
    #[error("journal persist failed: {0}")]
    Flush(String),
    /// The journal has stopped (shutdown, or its task died).
    #[error("journal is closed")]
    Closed,
    /// An earlier group failed: the store takes no more writes until the
    /// process restarts from disk.
    #[error("the store stopped taking writes after a storage fault: {0}")]
    Stopped(Arc<str>),
    /// A guard of the batch did not hold ([`Batch::expect`]): nothing of it
    /// was stored, and the journal goes on. Holds the key, printable.
    #[error("journal refused a batch: expected value of key {0} did not hold")]
    Conflict(String),
}

/// Tuning for the journal task.
#[derive(Clone, Debug)]
pub struct JournalOptions {
    /// The most batches taken into one group (one fjall batch, one persist).
    pub max_group: usize,
    /// How many submitted batches may wait; beyond it `commit` waits for room.
    pub queue: usize,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions { max_group: 1024, queue: 16 * 1024 }
    }
}

/// Injected disk faults, for tests and demos: each counter fails that many of
/// the next groups at that step.
#[derive(Default, Debug)]
pub struct DiskFaults {
    fail_writes: AtomicU32,
    fail_flushes: AtomicU32,
    /// Milliseconds every flush waits before it starts: a slow disk.
    slow_flushes_ms: AtomicU64,
}

impl DiskFaults {
    /// The next `n` groups fail before they are applied.
    pub fn fail_next_writes(&self, n: u32) {
        self.fail_writes.store(n, Ordering::SeqCst);
    }

    /// The next `n` groups are applied, then their flush fails.
    pub fn fail_next_flushes(&self, n: u32) {
        self.fail_flushes.store(n, Ordering::SeqCst);
    }

    /// Every flush waits `delay` before it starts (zero: none), as on a
    /// slow disk: the window in which a group is applied but not durable.
    pub fn slow_flushes(&self, delay: Duration) {
        self.slow_flushes_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn take(counter: &AtomicU32) -> bool {
        counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

pub(crate) struct Submission {
    pub(crate) batch: Batch,
    pub(crate) reply: oneshot::Sender<Result<Receipt, CommitError>>,
    /// Asks for a snapshot of the store taken once this (empty) batch's
    /// group is durable and before any later group is written: exactly
    /// what is durable, for a backup.
    pub(crate) snapshot: Option<oneshot::Sender<fjall::Snapshot>>,
}

/// A handle to the journal task. Cheap to clone; the task stops (after a last
/// flush) once every handle is dropped.
#[derive(Clone)]
pub struct Journal {
    pub(crate) tx: mpsc::Sender<Submission>,
    pub(crate) faults: Arc<DiskFaults>,
    /// Held while a backup is written: one at a time.
    pub(crate) backups: Arc<tokio::sync::Mutex<()>>,
}

/// A batch the journal has taken in order, not yet durable.
#[must_use = "a submitted batch is acknowledged only once durable() returns"]
pub struct Pending(oneshot::Receiver<Result<Receipt, CommitError>>);

impl Pending {
    /// Waits until the batch is durable (or failed).
    pub async fn durable(self) -> Result<Receipt, CommitError> {
        self.0.await.map_err(|_| CommitError::Closed)?
    }
}

/// The journal could not be started.
#[derive(Debug, thiserror::Error)]
#[error("a journal is already running on this store")]
pub struct AlreadyStarted;

impl Journal {
    /// Starts the journal task on `store`: the one writer it will ever have.
    /// Must be called inside a tokio runtime. The returned task ends once
    /// every `Journal` handle is dropped and the last group is flushed.
    pub fn start(store: &Store, options: JournalOptions) -> Result<(Journal, JoinHandle<()>), AlreadyStarted> {
        if store.shared.journal_started.swap(true, Ordering::SeqCst) {
            return Err(AlreadyStarted);
        }
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let faults = Arc::new(DiskFaults::default());
        let writer = Writer {
            store: store.clone(),
            faults: faults.clone(),
            next_seq: store.events().last_seq() + 1,
            failed: None,
            last_sync: Instant::now(),
            last_watermark: None,
        };
        let task = tokio::spawn(writer.run(rx, options.max_group.max(1)));
        Ok((Journal { tx, faults, backups: Arc::new(tokio::sync::Mutex::new(())) }, task))
    }

    /// Commits `batch`, answering only once it is durable (per the store's
    /// [`Durability`]). An empty batch still waits for everything submitted
    /// before it, which makes it a barrier.
    pub async fn commit(&self, batch: Batch) -> Result<Receipt, CommitError> {
        self.submit(batch).await?.durable().await
    }

    /// Hands `batch` to the journal and returns once it is queued, before it
    /// is durable: batches are committed in the order they are submitted, so
    /// a writer can go on deciding while earlier batches are being persisted
    /// and acknowledge each once [`Pending::durable`] returns. A failure stops
    /// every later batch (fail-stop), so none that rests on a failed one
    /// commits.
    pub async fn submit(&self, batch: Batch) -> Result<Pending, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Submission { batch, reply, snapshot: None }).await.map_err(|_| CommitError::Closed)?;
        Ok(Pending(answer))
    }

    /// Writes a consistent copy of the running `store` into `to` (see
    /// [`Store::backup_snapshot`]): the snapshot is taken by the journal
    /// between two groups, once everything committed before the call is
    /// durable, so the copy holds exactly acknowledged batches. One backup at
    /// a time.
    pub async fn backup(&self, store: &Store, to: &Path) -> Result<Verified, BackupError> {
        let _one = self.backups.try_lock().map_err(|_| BackupError::Busy)?;
        let (reply, answer) = oneshot::channel();
        let (taken, snapshot) = oneshot::channel();
        let submission = Submission { batch: Batch::new(), reply, snapshot: Some(taken) };
        self.tx.send(submission).await.map_err(|_| BackupError::Failed("the journal is closed".into()))?;
        answer
            .await
            .map_err(|_| BackupError::Failed("the journal is closed".into()))?
            .map_err(|e| BackupError::Failed(e.to_string()))?;
        let snapshot = snapshot.await.map_err(|_| BackupError::Failed("the journal is closed".into()))?;
        let (store, to) = (store.clone(), to.to_path_buf());
        tokio::task::spawn_blocking(move || store.backup_snapshot(snapshot, &to))
            .await
            .map_err(|e| BackupError::Io(std::io::Error::other(e.to_string())))?
    }

    /// The disk-fault knobs of this journal (a handle that does not keep
    /// the journal or the store alive).
    pub fn faults(&self) -> &Arc<DiskFaults> {
        &self.faults
    }

    /// How many batches wait to be taken into a group.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Removes events that every registered subscriber has applied and that
    /// committed more than `max_age` ago, committing the removal through the
    /// journal like any write. With no subscriber registered, only age counts.
    /// Returns how many events were removed.
    pub async fn trim(&self, store: &Store, max_age: Duration) -> Result<u64, TrimError> {
        let log = store.events();
        let below = match store.offsets()?.iter().map(|(_, seq)| *seq).min() {
            Some(lowest) => lowest + 1,
            None => log.last_seq() + 1,
        };
        let older_than_ms = now_ms().saturating_sub(max_age.as_millis() as u64);
        let mut removed = 0;
        loop {
            let keys = log.expired(below, older_than_ms, 4096)?;
            if keys.is_empty() {
                break;
            }
            let mut batch = Batch::new();
            batch.trimmed = keys.clone();
            self.commit(batch).await?;
            removed += keys.len() as u64;
        }
        if removed > 0 {
            metrics::counter!("sugang_events_trimmed_total").increment(removed);
            tracing::info!(removed, below, "event log trimmed");
        }
        Ok(removed)
    }
}

/// Retention could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrimError {
    /// Reading the log or the offsets failed.
    #[error(transparent)]
    Read(#[from] StorageError),
    /// Committing the removal failed.
    #[error(transparent)]
    Commit(#[from] CommitError),
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A raw key as text: its printable bytes as they are, the others escaped.
pub(crate) fn printable(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

/// Answers with [`CommitError::Conflict`] and removes from `pending` every
/// submission whose guards do not hold, each checked in order against the
/// store plus the writes of the submissions before it that remain. The
/// caller must be the store's one writer, between two groups: everything
/// committed before is in the store, so what is read is what the batch
/// would follow. A group without guards costs one look at each batch.
pub(crate) fn refuse_conflicts(store: &Store, pending: &mut Vec<Submission>) {
    let Some(last_guarded) = pending.iter().rposition(|s| !s.batch.guards.is_empty()) else {
        return;
    };
    let mut verdicts = Vec::with_capacity(last_guarded + 1);
    {
        // The last write to each key among the submissions that remain.
        let mut staged: HashMap<&[u8], Option<&[u8]>> = HashMap::new();
        for submission in &pending[..=last_guarded] {
            let verdict = check_guards(store, &staged, &submission.batch.guards);
            if verdict.is_none() {
                for (key, value) in &submission.batch.writes {
                    staged.insert(key, value.as_deref());
                }
            }
            verdicts.push(verdict);
        }
    }
    let mut verdicts = verdicts.into_iter();
    let mut kept = Vec::with_capacity(pending.len());
    for submission in pending.drain(..) {
        match verdicts.next().flatten() {
            Some(refusal) => {
                tracing::debug!(%refusal, "a batch's guard did not hold: nothing of it is stored");
                metrics::counter!("sugang_journal_batches_total", "outcome" => "conflict").increment(1);
                let _ = submission.reply.send(Err(refusal));
            }
            None => kept.push(submission),
        }
    }
    *pending = kept;
}

/// Why one batch's guards do not hold, if they do not: the first that
/// fails, or a read that failed (the batch is refused; nothing was written).
fn check_guards(
    store: &Store,
    staged: &HashMap<&[u8], Option<&[u8]>>,
    guards: &[(Vec<u8>, Option<Vec<u8>>)],
) -> Option<CommitError> {
    for (key, expected) in guards {
        let holds = match staged.get(key.as_slice()) {
            Some(value) => *value == expected.as_deref(),
            None => match store.shared.records.get(key) {
                Ok(value) => value.as_deref() == expected.as_deref(),
                Err(e) => return Some(CommitError::Write(format!("reading guarded key {}: {e}", printable(key)))),
            },
        };
        if !holds {
            return Some(CommitError::Conflict(printable(key)));
        }
    }
    None
}

/// The journal task's state.
struct Writer {
    store: Store,
    faults: Arc<DiskFaults>,
    /// The seq the next committed event gets.
    next_seq: u64,
    /// Why the store stopped taking writes, once a group failed.
    failed: Option<Arc<str>>,
    /// When fjall's journal was last fdatasynced (for relaxed durability).
    last_sync: Instant,
    /// When the watermark was last rewritten; `None` before the first time.
    last_watermark: Option<Instant>,
}

/// One group, ready for the blocking thread.
pub(crate) struct Group {
    /// The table and offset writes, in submission order (the last write to
    /// a key wins).
    pub(crate) writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The events it appends: (seq, encoded envelope).
    pub(crate) events: Vec<(u64, Vec<u8>)>,
    /// The event seqs retention removes.
    pub(crate) trimmed: Vec<u64>,
    /// Counter deltas, summed per key.
    pub(crate) adds: Vec<(Vec<u8>, i64)>,
    /// The last seq after it, when it appends events.
    pub(crate) last_seq: Option<u64>,
    /// In a cluster: the position in the replicated log of the message
    /// this group applies, stored with it (see `replicated`).
    pub(crate) position: Option<u64>,
}

/// What a group appends, kept for the log's in-memory tail once durable.
pub(crate) type TailEvents = Vec<TailEvent>;

impl Group {
    /// Keeps only the last write to each key (in submission order, the one
    /// that would win anyway), and sums the counter deltas per key: a key the
    /// group's batches share is written once.
    pub(crate) fn coalesce(&mut self) {
        if self.writes.len() > 1 {
            let mut last = std::collections::HashMap::with_capacity(self.writes.len());
            for (i, (key, _)) in self.writes.iter().enumerate() {
                last.insert(key.as_slice(), i);
            }
            if last.len() < self.writes.len() {
                let keep: Vec<bool> = (0..self.writes.len()).map(|i| last[self.writes[i].0.as_slice()] == i).collect();
                let mut i = 0;
                self.writes.retain(|_| {
                    i += 1;
                    keep[i - 1]
                });
            }
        }
        if self.adds.len() > 1 {
            let mut sums: std::collections::HashMap<Vec<u8>, i64> = std::collections::HashMap::new();
            let mut order = Vec::new();
            for (key, delta) in self.adds.drain(..) {
                match sums.get_mut(&key) {
                    Some(sum) => *sum += delta,
                    None => {
                        order.push(key.clone());
                        sums.insert(key, delta);
                    }
                }
            }
            self.adds = order
                .into_iter()
                .map(|key| {
                    let delta = sums.get(&key).copied().unwrap_or(0);
                    (key, delta)
                })
                .collect();
        }
    }

    /// How many keys the group writes, by what they belong to: a table's
    /// name, `offsets`, `events`, `counts:<table>`.
    pub(crate) fn tally(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Vec::new();
        let mut bump = |what: &[u8], counts: bool| {
            let name = match what.first() {
                Some(b't') => {
                    let end = what.iter().position(|&b| b == 0).unwrap_or(what.len());
                    String::from_utf8_lossy(&what[1..end]).into_owned()
                }
                Some(b'o') => "offsets".to_owned(),
                _ => "meta".to_owned(),
            };
            let name = if counts { format!("counts:{name}") } else { name };
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, n)) => *n += 1,
                None => out.push((name, 1)),
            }
        };
        for (key, _) in &self.writes {
            bump(key, false);
        }
        for (key, _) in &self.adds {
            bump(key, true);
        }
        if !self.events.is_empty() {
            out.push(("events".to_owned(), self.events.len() as u64));
        }
        if !self.trimmed.is_empty() {
            out.push(("events trimmed".to_owned(), self.trimmed.len() as u64));
        }
        out
    }

    /// The one atomic fjall batch that applies the group. Reads the counts
    /// it adds to: the journal is their one writer, so what it reads is what
    /// the last group left.
    fn into_batch(self, store: &Store) -> Result<fjall::OwnedWriteBatch, CommitError> {
        let shared = &store.shared;
        let mut batch = fjall::OwnedWriteBatch::with_capacity(
            shared.db().clone(),
            self.writes.len() + self.events.len() + self.trimmed.len() + self.adds.len() + 1,
        );
        for (key, delta) in self.adds {
            let read = shared.records.get(&key).map_err(|e| CommitError::Write(format!("reading a count: {e}")))?;
            let current = match read {
                Some(raw) => {
                    decode_value::<Count>(&raw)
                        .map_err(|e| CommitError::Write(format!("a count does not decode: {e:?}")))?
                        .0
                }
                None => 0,
            };
            let next = Count(current.saturating_add_signed(delta));
            let raw = encode_value("counts", &next).map_err(|e| CommitError::Write(e.to_string()))?;
            batch.insert(&shared.records, key, raw);
        }
        for (key, value) in self.writes {
            match value {
                Some(value) => batch.insert(&shared.records, key, value),
                None => batch.remove(&shared.records, key),
            }
        }
        for (seq, value) in self.events {
            batch.insert(&shared.events, event_key(seq), value);
        }
        for seq in self.trimmed {
            batch.remove(&shared.events, event_key(seq));
        }
        if let Some(seq) = self.last_seq {
            batch.insert(&shared.records, META_LAST_SEQ, seq.to_be_bytes());
        }
        if let Some(position) = self.position {
            batch.insert(&shared.records, META_LOG_POSITION, position.to_be_bytes());
        }
        Ok(batch)
    }
}

/// What the blocking thread asks of one group.
#[derive(Clone, Copy)]
pub(crate) struct Persist {
    /// fdatasync fjall's journal before answering.
    pub(crate) sync: bool,
    /// Also rewrite the watermark with this seq.
    pub(crate) watermark: Option<u64>,
}

impl Writer {
    /// The writer's loop: waits for submissions and commits each group, its
    /// write and persist on tokio's blocking pool, until every handle is
    /// dropped.
    async fn run(mut self, mut rx: mpsc::Receiver<Submission>, max_group: usize) {
        let mut pending = Vec::with_capacity(max_group);
        while rx.recv_many(&mut pending, max_group).await > 0 {
            self.commit_group(&mut pending).await;
        }
        // Every handle is gone: make what was written durable, then stop.
        if self.failed.is_none() {
            let store = self.store.clone();
            let last = self.next_seq - 1;
            let persisted = tokio::task::spawn_blocking(move || {
                store.shared.db().persist(fjall::PersistMode::SyncAll).map_err(|e| e.to_string())?;
                write_watermark(&mut lock(&store.shared.watermark), last).map_err(|e| e.to_string())
            })
            .await;
            if let Ok(Err(e)) = persisted {
                tracing::error!(error = %e, "final journal persist failed");
            }
        }
        tracing::info!(last_seq = self.next_seq - 1, "journal stopped");
    }

    async fn commit_group(&mut self, pending: &mut Vec<Submission>) {
        if let Some(reason) = &self.failed {
            for submission in pending.drain(..) {
                let _ = submission.reply.send(Err(CommitError::Stopped(reason.clone())));
            }
            return;
        }
        // The journal is serial: the group before this one is written (and
        // in fjall's memtables, durable or not) before this one is taken, so
        // the store holds everything a guard must see but this group.
        refuse_conflicts(&self.store, pending);
        if pending.is_empty() {
            return;
        }
        let started = Instant::now();
        let at_ms = now_ms();
        let mut group = Group {
            writes: Vec::new(),
            events: Vec::new(),
            trimmed: Vec::new(),
            adds: Vec::new(),
            last_seq: None,
            position: None,
        };
        let mut receipts = Vec::with_capacity(pending.len());
        let mut seq = self.next_seq;
        let mut encode_failure = None;
        let mut tail: TailEvents = Vec::new();
        for submission in pending.iter_mut() {
            let batch = std::mem::take(&mut submission.batch);
            let first_seq = (!batch.events.is_empty()).then_some(seq);
            group.writes.extend(batch.writes);
            group.trimmed.extend(batch.trimmed);
            group.adds.extend(batch.adds);
            for (partition_key, payload) in batch.events {
                match encode_envelope(at_ms, partition_key, &payload) {
                    Ok(value) => group.events.push((seq, value)),
                    Err(e) => encode_failure = Some(e.to_string()),
                }
                tail.push(TailEvent { seq, at_ms, key: partition_key, payload: Arc::new(payload) });
                seq += 1;
            }
            receipts.push(Receipt { first_seq, seq: seq - 1 });
        }
        if seq != self.next_seq {
            group.last_seq = Some(seq - 1);
        }
        group.coalesce();
        let keys = group.writes.len() + group.events.len() + group.trimmed.len() + group.adds.len();
        let tally = group.tally();
        if let Some(reason) = encode_failure {
            // A programming error in one batch's encoding, caught before
            // anything was written: only this group's callers are told.
            tracing::error!(%reason, batches = pending.len(), "journal group could not be encoded");
            for submission in pending.drain(..) {
                let _ = submission.reply.send(Err(CommitError::Write(reason.clone())));
            }
            return;
        }

        let trimmed_through = group.trimmed.iter().max().copied();
        let persist = self.persist_for(seq - 1);
        let (store, faults) = (self.store.clone(), self.faults.clone());
        let outcome = tokio::task::spawn_blocking(move || write(&store, &faults, group, persist))
            .await
            .unwrap_or_else(|e| Err(CommitError::Write(format!("journal writer thread failed: {e}"))));
        let size = pending.len();
        metrics::histogram!("sugang_journal_group_size").record(size as f64);
        metrics::histogram!("sugang_journal_commit_seconds").record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(()) => {
                self.next_seq = seq;
                if persist.sync {
                    self.last_sync = started;
                }
                if persist.watermark.is_some() {
                    self.last_watermark = Some(started);
                }
                // Durable: the log's readers may have them from memory.
                if let Some(through) = trimmed_through {
                    self.store.shared.tail.trim_through(through);
                }
                if !tail.is_empty() {
                    self.store.shared.tail.push(tail);
                }
                // Only a group with events moves the log; waking subscribers
                // for the others (offset commits, mostly) would be spurious.
                self.store.shared.last_seq.send_if_modified(|last| std::mem::replace(last, seq - 1) != seq - 1);
                metrics::counter!("sugang_journal_batches_total", "outcome" => "committed").increment(size as u64);
                metrics::counter!("sugang_journal_keys_total").increment(keys as u64);
                self.store.count_written(tally);
                metrics::gauge!("sugang_journal_last_seq").set((seq - 1) as f64);
                for (submission, receipt) in pending.drain(..).zip(receipts) {
                    if let Some(taken) = submission.snapshot {
                        // Between groups: exactly what is durable.
                        let _ = taken.send(self.store.snapshot());
                    }
                    let _ = submission.reply.send(Ok(receipt));
                }
            }
            Err(error) => {
                let reason: Arc<str> = error.to_string().into();
                self.failed = Some(reason.clone());
                self.store.shared.failure.send_replace(Some(reason));
                metrics::counter!("sugang_journal_batches_total", "outcome" => "failed").increment(size as u64);
                metrics::gauge!("sugang_storage_failed").set(1.0);
                tracing::error!(
                    %error,
                    batches = size,
                    "journal group failed: the store takes no more writes; the process must restart from disk"
                );
                for submission in pending.drain(..) {
                    let _ = submission.reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Whether this group fdatasyncs, and whether it rewrites the watermark.
    fn persist_for(&self, last_seq: u64) -> Persist {
        let sync = match self.store.shared.options.durability {
            Durability::Fsync => true,
            Durability::Relaxed { flush_every_ms } => self.last_sync.elapsed() >= Duration::from_millis(flush_every_ms),
        };
        let due = self.last_watermark.is_none_or(|at| at.elapsed() >= WATERMARK_EVERY);
        Persist { sync, watermark: (sync && due && last_seq >= self.next_seq).then_some(last_seq) }
    }
}

/// Writes and persists one group (on a blocking thread).
pub(crate) fn write(store: &Store, faults: &DiskFaults, group: Group, persist: Persist) -> Result<(), CommitError> {
    {
        if DiskFaults::take(&faults.fail_writes) {
            return Err(CommitError::Write("injected write fault".into()));
        }
        let started = Instant::now();
        group.into_batch(store)?.commit().map_err(|e| CommitError::Write(e.to_string()))?;
        metrics::histogram!("sugang_journal_apply_seconds").record(started.elapsed().as_secs_f64());
        match faults.slow_flushes_ms.load(Ordering::SeqCst) {
            0 => {}
            ms => std::thread::sleep(Duration::from_millis(ms)),
        }
        if DiskFaults::take(&faults.fail_flushes) {
            return Err(CommitError::Flush("injected persist fault".into()));
        }
        let started = Instant::now();
        let mode = if persist.sync { fjall::PersistMode::SyncData } else { fjall::PersistMode::Buffer };
        store.shared.db().persist(mode).map_err(|e| CommitError::Flush(e.to_string()))?;
        if let Some(seq) = persist.watermark {
            write_watermark(&mut lock(&store.shared.watermark), seq)
                .map_err(|e| CommitError::Flush(format!("watermark: {e}")))?;
        }
        metrics::histogram!("sugang_journal_flush_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }
}
