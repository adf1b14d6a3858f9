//! Opening a data directory, checking it, and reading from it.
//!
//! Owns the fjall database, the directory lock, the key space layout and the
//! checks that refuse a damaged store. Two keyspaces, both written by every
//! group the journal commits (a keyspace written rarely would pin fjall's
//! journal fragments, fjall #261, #288):
//!
//! - `records`: tables under `t`, subscriber offsets under `o`, store
//!   metadata under `m`;
//! - `events`: the event log, keyed by the big-endian seq.
//!
//! Reads go straight to fjall; every write goes through the
//! [`Journal`](crate::Journal), the only writer, and nothing here writes except
//! the one-time format marker of a new store, before any journal exists.
//!
//! # Damage
//!
//! fjall checksums its journal and its table blocks. At open, fjall replays
//! its journal (a torn last batch, which was never acknowledged, is dropped;
//! any other checksum failure refuses the open), and this module then checks
//! the store against the watermark the journal keeps beside it
//! (`sugang.watermark`, the highest seq known durable, rewritten at most every
//! [`WATERMARK_EVERY`]): a store that recovers to an older seq has lost
//! acknowledged batches and is refused. [`Store::verify`] reads every block.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::watch;

use crate::codec::{Count, DecodeError, DecodeErrorKind, Key, Record, Table, decode_value, render_key};
use crate::log::{EventLog, Tail};

/// The on-disk layout this release reads and writes (1 was sled's).
const FORMAT_VERSION: u8 = 2;
pub(crate) const META_FORMAT: &[u8] = b"mformat";
pub(crate) const META_LAST_SEQ: &[u8] = b"mlast_seq";
/// In a cluster node's store: the last position of the replicated log applied.
pub(crate) const META_LOG_POSITION: &[u8] = b"mlog_position";
pub(crate) const OFFSET_PREFIX: &[u8] = b"o";
/// fjall's directory inside the data directory.
const ENGINE_DIR: &str = "fjall";
/// The watermark file: the highest seq the journal knows durable.
const WATERMARK_FILE: &str = "sugang.watermark";
/// How often, at most, the journal rewrites the watermark (one fdatasync of
/// 16 bytes): a store that lost batches acknowledged longer ago than this
/// before a crash is refused at open.
pub const WATERMARK_EVERY: Duration = Duration::from_millis(250);
/// Each keyspace's memtable (fjall's default is 64 MiB): flushed to a table
/// once this full, so its journal can go and a restart replays less.
const MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;
/// fjall's journal cap: the most journal a restart replays. fjall's default
/// (512 MiB) made a reopen after a kill take 4.8 s; 64 MiB (its minimum) 0.64 s.
const MAX_JOURNALING_BYTES: u64 = 64 * 1024 * 1024;

/// When a commit counts as durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// The journal persists fjall's journal with fdatasync once per group
    /// before it answers anyone in the group.
    #[default]
    Fsync,
    /// The journal answers once fjall's journal is written to the OS (it
    /// survives a crash of the process, not of the machine); an fdatasync
    /// follows at most every `flush_every_ms`. For benchmarks and tests.
    Relaxed {
        /// How often, at most, a group also fdatasyncs.
        flush_every_ms: u64,
    },
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// When a commit is acknowledged.
    pub durability: Durability,
    /// fjall's block cache, in bytes: the main lever on resident memory.
    pub cache_capacity: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { durability: Durability::Fsync, cache_capacity: 32 * 1024 * 1024 }
    }
}

/// The data directory could not be opened. Each variant names the path and
/// says what an operator can do about it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The path exists and is a file, or one of its parents is.
    #[error("{path}: not a directory")]
    NotADirectory { path: PathBuf },
    /// The directory cannot be created, listed or written.
    #[error("{path}: cannot use the data directory: {source}")]
    Unusable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another running sugang holds the directory.
    #[error("{path}: held by another running sugang{}", holder.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Locked { path: PathBuf, holder: Option<String> },
    /// Written by a newer release, or not a sugang store at all.
    #[error("{path}: store format {found} is not the format {FORMAT_VERSION} this release reads")]
    IncompatibleFormat { path: PathBuf, found: u8 },
    /// Written by the sled release of sugang, whose files this one cannot read.
    #[error(
        "{path}: this store was written by the sled release of sugang (format 1); this release stores on fjall \
         (format {FORMAT_VERSION}) and cannot read it: start it with the release that wrote it, or on a new data directory"
    )]
    SledStore { path: PathBuf },
    /// The files fail their checks: refused rather than opened at an older state.
    #[error("{path}: the store is damaged: {what}")]
    Damaged { path: PathBuf, what: String },
}

/// A read or a low-level write failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A stored record does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// fjall reported an I/O error or corruption.
    #[error("storage engine: {0}")]
    Engine(String),
}

impl From<fjall::Error> for StorageError {
    fn from(e: fjall::Error) -> Self {
        StorageError::Engine(e.to_string())
    }
}

/// An open data directory. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    /// After a storage fault a handle of it is leaked on drop, so that the
    /// engine is never closed and nothing written after the fault is
    /// persisted on the way out.
    db: Database,
    pub(crate) records: Keyspace,
    pub(crate) events: Keyspace,
    pub(crate) options: StoreOptions,
    pub(crate) dir: PathBuf,
    /// The last committed event seq; the journal publishes, subscribers watch.
    pub(crate) last_seq: watch::Sender<u64>,
    /// The last durable events, in memory, for the subscribers that follow
    /// the log (see [`Tail`]).
    pub(crate) tail: Tail,
    /// Why the store stopped accepting writes, once a persist failed
    /// (fail-stop): the journal sets it, the service watches it.
    pub(crate) failure: watch::Sender<Option<Arc<str>>>,
    /// Set once a journal runs, so a second one cannot be started.
    pub(crate) journal_started: AtomicBool,
    /// The watermark file, rewritten by the journal.
    pub(crate) watermark: Mutex<File>,
    /// Keys the journal wrote since open, by what they belong to (see
    /// [`Store::keys_written`]).
    written: Mutex<Vec<(String, u64)>>,
    /// Held for the life of the store: our own lock, so that a second sugang
    /// gets a clear error naming the holder.
    _lock: File,
}

impl Shared {
    pub(crate) fn db(&self) -> &Database {
        &self.db
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.failure.borrow().is_some() {
            // Fail-stop: the state after the fault is unknown; persisting
            // what is in memory could make an unacknowledged batch durable.
            std::mem::forget(self.db.clone());
        } else if let Err(e) = self.db.persist(PersistMode::SyncAll) {
            tracing::error!(error = %e, dir = %self.dir.display(), "closing the store: the last persist failed");
        }
    }
}

/// Tells when a store has closed: every handle dropped, fjall closed and the
/// directory's lock released, so that it can be opened again. Does not keep
/// the store open itself.
pub struct Closing(Weak<Shared>);

impl Closing {
    /// Whether every handle of the store is gone.
    pub fn is_closed(&self) -> bool {
        self.0.strong_count() == 0
    }

    /// Waits until the store has closed, at most `within`; says whether it did.
    pub async fn closed(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.is_closed() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }
}

/// What [`Store::verify`] found in a healthy store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Records read (tables, offsets, metadata), every block checked.
    pub records: u64,
    /// Events read and decoded.
    pub events: u64,
    /// The lowest and the last seq in the log.
    pub first_seq: Option<u64>,
    pub last_seq: u64,
    /// Bytes the store takes on disk.
    pub disk_bytes: u64,
}

impl Store {
    /// A way to wait for this store to close once its handles are dropped.
    pub fn closing(&self) -> Closing {
        Closing(Arc::downgrade(&self.shared))
    }

    /// Opens (creating if missing) the data directory at `dir`, refusing a
    /// store that fails its checks (see the module doc).
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store, OpenError> {
        let dir = dir.as_ref().to_path_buf();
        prepare_dir(&dir)?;
        let lock = take_lock(&dir)?;
        refuse_sled(&dir)?;
        let engine_dir = dir.join(ENGINE_DIR);

        let db = Database::builder(&engine_dir)
            .cache_size(options.cache_capacity)
            .max_journaling_size(MAX_JOURNALING_BYTES)
            // Only the journal persists, once per group.
            .manual_journal_persist(true)
            .open()
            .map_err(|e| engine_open_error(&engine_dir, e))?;
        let damaged = |what: String| OpenError::Damaged { path: engine_dir.clone(), what };
        let keyspace = || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        let records = db.keyspace("records", keyspace).map_err(|e| damaged(format!("keyspace records: {e}")))?;
        let events = db.keyspace("events", keyspace).map_err(|e| damaged(format!("keyspace events: {e}")))?;

        match records.get(META_FORMAT).map_err(|e| damaged(format!("format marker: {e}")))? {
            Some(found) if found.as_ref() != [FORMAT_VERSION] => {
                let found = found.first().copied().unwrap_or(0);
                return Err(OpenError::IncompatibleFormat { path: dir, found });
            }
            Some(_) => {}
            // New, or killed before its marker was persisted: nothing in it.
            None if records.is_empty().map_err(|e| damaged(e.to_string()))?
                && events.is_empty().map_err(|e| damaged(e.to_string()))? =>
            {
                records.insert(META_FORMAT, [FORMAT_VERSION]).map_err(|e| damaged(e.to_string()))?;
                db.persist(PersistMode::SyncAll).map_err(|e| damaged(e.to_string()))?;
            }
            None => {
                return Err(damaged(
                    "the format marker is missing: not a sugang store, or its records were lost".into(),
                ));
            }
        }
        let last_seq = match records.get(META_LAST_SEQ).map_err(|e| damaged(format!("last seq: {e}")))? {
            Some(raw) => u64::from_be_bytes(
                raw.as_ref().try_into().map_err(|_| damaged("the last seq record is malformed".into()))?,
            ),
            None => 0,
        };
        let (watermark, durable) = open_watermark(&dir)?;
        if durable == 0 && last_seq > 0 {
            // Killed between a store's first durable group and its first
            // watermark, or the file was lost: nothing to check against.
            tracing::warn!(
                dir = %dir.display(),
                last_seq,
                "sugang.watermark is empty: this open cannot tell whether acknowledged batches were lost"
            );
        }
        if durable > last_seq {
            return Err(OpenError::Damaged {
                path: engine_dir,
                what: format!(
                    "events up to seq {durable} were acknowledged (per {WATERMARK_FILE}), but the store recovers only \
                     to seq {last_seq}: a journal file was cut short, damaged or removed"
                ),
            });
        }
        tracing::info!(dir = %dir.display(), last_seq, "store opened");
        Ok(Store {
            shared: Arc::new(Shared {
                db,
                records,
                events,
                options,
                dir,
                last_seq: watch::Sender::new(last_seq),
                tail: Tail::default(),
                failure: watch::Sender::new(None),
                journal_started: AtomicBool::new(false),
                watermark: Mutex::new(watermark),
                written: Mutex::new(Vec::new()),
                _lock: lock,
            }),
        })
    }

    /// The data directory this store was opened on.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The options it was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.shared.options
    }

    /// Why the store stopped taking writes, once a persist failed: after a
    /// storage fault the state on disk is unknown, so the journal refuses
    /// everything and the process should drain and exit for its supervisor to
    /// restart it from disk. A receiver sees the change.
    pub fn failure(&self) -> watch::Receiver<Option<Arc<str>>> {
        self.shared.failure.subscribe()
    }

    /// Reads one record.
    pub fn get<K: Key, V: Record>(&self, table: &Table<K, V>, key: &K) -> Result<Option<V>, StorageError> {
        let raw_key = table.key_bytes(key);
        match self.shared.records.get(&raw_key)? {
            Some(raw) => Ok(Some(decode_in(table, &raw_key, &raw)?)),
            None => Ok(None),
        }
    }

    /// Reads one record as it will be once `batch` commits: the batch's own
    /// last write for the key if it has one, else the store's. For writers
    /// that build one batch from many events (subscribers).
    pub fn read_through<K: Key, V: Record>(
        &self,
        batch: &crate::Batch,
        table: &Table<K, V>,
        key: &K,
    ) -> Result<Option<V>, StorageError> {
        let raw_key = table.key_bytes(key);
        match batch.staged(&raw_key) {
            Some(Some(raw)) => Ok(Some(decode_in(table, &raw_key, raw)?)),
            Some(None) => Ok(None),
            None => self.get(table, key),
        }
    }

    /// Whether a record exists, without decoding it.
    pub fn contains<K: Key, V: Record>(&self, table: &Table<K, V>, key: &K) -> Result<bool, StorageError> {
        Ok(self.shared.records.contains_key(table.key_bytes(key))?)
    }

    /// Every record of a table, in key order.
    pub fn scan<K: Key, V: Record>(&self, table: &Table<K, V>) -> Records<K, V> {
        Records { table: *table, inner: self.shared.records.prefix(table.prefix()) }
    }

    /// The records whose key starts with `part` (the leading fields of a
    /// composite key, e.g. the student of a `(student, id)` key), in key order.
    pub fn scan_prefix<K: Key, V: Record, P: Key>(&self, table: &Table<K, V>, part: &P) -> Records<K, V> {
        Records { table: *table, inner: self.shared.records.prefix(table.prefix_bytes(part)) }
    }

    /// The records with key `>= from`, in key order.
    pub fn scan_from<K: Key, V: Record>(&self, table: &Table<K, V>, from: &K) -> Records<K, V> {
        let mut end = table.prefix();
        // The byte after the table's NUL terminator bounds the table.
        if let Some(last) = end.last_mut() {
            *last = 1;
        }
        Records { table: *table, inner: self.shared.records.range(table.key_bytes(from)..end) }
    }

    /// The records whose key starts with `part` and is `>= from`, in key
    /// order: a page of an index seeks to its first key with this.
    pub fn scan_prefix_from<K: Key, V: Record, P: Key>(
        &self,
        table: &Table<K, V>,
        part: &P,
        from: &K,
    ) -> Records<K, V> {
        let prefix = table.prefix_bytes(part);
        let start = table.key_bytes(from).max(prefix.clone());
        let inner = match prefix_end(&prefix) {
            Some(end) => self.shared.records.range(start..end),
            None => self.shared.records.range(start..),
        };
        Records { table: *table, inner }
    }

    /// A count kept with the data ([`Batch::add`](crate::Batch::add)); zero
    /// when nothing was ever added.
    pub fn count<K: Key>(&self, table: &Table<K, Count>, key: &K) -> Result<u64, StorageError> {
        Ok(self.get(table, key)?.map_or(0, |c| c.0))
    }

    /// How many keys the journal wrote since this store was opened, by what
    /// they belong to: a table's name, `offsets`, `events`, `counts:<table>`
    /// (counts), `meta`. Keys a group's batches share count once. For tests
    /// and benchmarks that keep the write path lean.
    pub fn keys_written(&self) -> Vec<(String, u64)> {
        let mut out = lock(&self.shared.written).clone();
        out.sort();
        out
    }

    pub(crate) fn count_written(&self, tally: Vec<(String, u64)>) {
        let mut written = lock(&self.shared.written);
        for (name, n) in tally {
            match written.iter_mut().find(|(w, _)| *w == name) {
                Some((_, total)) => *total += n,
                None => written.push((name, n)),
            }
        }
    }

    /// The record with the greatest key.
    pub fn last<K: Key, V: Record>(&self, table: &Table<K, V>) -> Result<Option<(K, V)>, StorageError> {
        self.scan(table).next_back().transpose()
    }

    /// The event log.
    pub fn events(&self) -> EventLog {
        EventLog { store: self.clone() }
    }

    /// A subscriber's stored offset: the seq of the last event whose effect
    /// it committed. `None` if it never registered.
    pub fn offset(&self, subscriber: &str) -> Result<Option<u64>, StorageError> {
        match self.shared.records.get(offset_key(subscriber))? {
            Some(raw) => Ok(Some(decode_offset(&raw, subscriber)?)),
            None => Ok(None),
        }
    }

    /// Every registered subscriber and its offset.
    pub fn offsets(&self) -> Result<Vec<(String, u64)>, StorageError> {
        let mut out = Vec::new();
        for item in self.shared.records.prefix(OFFSET_PREFIX) {
            let (key, raw) = item.into_inner()?;
            let name = String::from_utf8_lossy(&key[OFFSET_PREFIX.len()..]).into_owned();
            let offset = decode_offset(&raw, &name)?;
            out.push((name, offset));
        }
        Ok(out)
    }

    /// Reads every record and every event (so every block's checksum is
    /// checked) and checks the log: gap-free from its first seq to the last,
    /// every event decodable, no subscriber past the last seq.
    pub fn verify(&self) -> Result<Verified, StorageError> {
        let mut found = Verified { last_seq: self.events().last_seq(), ..Verified::default() };
        for item in self.shared.records.iter() {
            let (key, value) = item.into_inner()?;
            if key.first() == Some(&b't') && value.is_empty() {
                return Err(StorageError::Engine(format!("record {} is empty", render_key(&key))));
            }
            found.records += 1;
        }
        let mut expected = None;
        for item in self.shared.events.iter() {
            let (key, value) = item.into_inner()?;
            let seq = crate::log::seq_of(&key)
                .ok_or_else(|| StorageError::Engine(format!("event key {} is malformed", render_key(&key))))?;
            if let Some(expected) = expected
                && seq != expected
            {
                return Err(StorageError::Engine(format!(
                    "the event log has a gap: seq {seq} follows {}",
                    expected - 1
                )));
            }
            crate::log::decode_envelope(&key, &value)?;
            found.first_seq.get_or_insert(seq);
            expected = Some(seq + 1);
            found.events += 1;
        }
        if let Some(next) = expected
            && next - 1 != found.last_seq
        {
            return Err(StorageError::Engine(format!(
                "the event log ends at seq {} but the store says it reached {}",
                next - 1,
                found.last_seq
            )));
        }
        for (name, offset) in self.offsets()? {
            if offset > found.last_seq {
                return Err(StorageError::Engine(format!(
                    "subscriber {name} is at seq {offset}, past the log's last seq {}",
                    found.last_seq
                )));
            }
        }
        found.disk_bytes = self.shared.db.disk_space()?;
        Ok(found)
    }

    /// Writes a consistent copy of a store that no journal writes to (a
    /// stopped store, opened by `sugang store backup`) into `to`: see
    /// [`Store::backup_snapshot`]. A running store is copied through
    /// [`Journal::backup`](crate::Journal::backup), which takes the snapshot
    /// between two groups, once everything before it is durable.
    pub fn backup(&self, to: &Path) -> Result<Verified, BackupError> {
        if self.shared.journal_started.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(BackupError::Running);
        }
        self.backup_snapshot(self.shared.db.snapshot(), to)
    }

    /// Writes `snapshot` (of every record and event) into `to`, a new or
    /// empty directory outside the data directory, as a store of its own that
    /// [`Store::open`] accepts. The copy is written beside `to` under a
    /// `.partial` name, made durable, its watermark written last, and only
    /// then renamed to `to`: a copy cut short never looks like a backup.
    pub(crate) fn backup_snapshot(&self, snapshot: fjall::Snapshot, to: &Path) -> Result<Verified, BackupError> {
        if let Some(reason) = self.shared.failure.borrow().clone() {
            return Err(BackupError::Failed(reason.to_string()));
        }
        let to = std::path::absolute(to).map_err(BackupError::Io)?;
        let data = std::path::absolute(&self.shared.dir).map_err(BackupError::Io)?;
        if to.starts_with(&data) || data.starts_with(&to) {
            return Err(BackupError::Overlaps(to));
        }
        match std::fs::symlink_metadata(&to) {
            Ok(meta) if !meta.is_dir() => return Err(BackupError::NotEmpty(to)),
            Ok(_) if std::fs::read_dir(&to).map_err(BackupError::Io)?.next().is_some() => {
                return Err(BackupError::NotEmpty(to));
            }
            Ok(_) => std::fs::remove_dir(&to).map_err(BackupError::Io)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackupError::Io(e)),
        }
        let name = to.file_name().ok_or_else(|| BackupError::NotEmpty(to.clone()))?.to_string_lossy().into_owned();
        let parent = to.parent().ok_or_else(|| BackupError::NotEmpty(to.clone()))?.to_path_buf();
        std::fs::create_dir_all(&parent).map_err(BackupError::Io)?;
        let room = BackupRoom {
            store_bytes: self.shared.db.disk_space().map_err(StorageError::from)?,
            available: free_bytes(&parent).map_err(BackupError::Io)?,
            beside_data: same_filesystem(&parent, &data).map_err(BackupError::Io)?,
        };
        room.check(&to)?;
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        // A new directory of our own: fails rather than reuse what is there.
        std::fs::create_dir(&staging).map_err(BackupError::Io)?;
        let copied = self.write_copy(snapshot, &staging).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&staging);
        })?;
        std::fs::rename(&staging, &to).map_err(BackupError::Io)?;
        File::open(&parent).and_then(|dir| dir.sync_all()).map_err(BackupError::Io)?;
        Ok(copied)
    }

    fn write_copy(&self, snapshot: fjall::Snapshot, into_dir: &Path) -> Result<Verified, BackupError> {
        let copy =
            Store::open(into_dir, StoreOptions { durability: Durability::Fsync, cache_capacity: 8 * 1024 * 1024 })?;
        let mut copied = Verified::default();
        for (from, into, count) in [
            (&self.shared.records, &copy.shared.records, &mut copied.records),
            (&self.shared.events, &copy.shared.events, &mut copied.events),
        ] {
            let mut batch = copy.shared.db.batch();
            for item in fjall::Readable::iter(&snapshot, from) {
                let (key, value) = item.into_inner().map_err(StorageError::from)?;
                batch.insert(into, key, value);
                *count += 1;
                if batch.len() >= 10_000 {
                    std::mem::replace(&mut batch, copy.shared.db.batch()).commit().map_err(StorageError::from)?;
                }
            }
            batch.commit().map_err(StorageError::from)?;
        }
        copy.shared.db.persist(PersistMode::SyncAll).map_err(StorageError::from)?;
        let seq = copy
            .shared
            .records
            .get(META_LAST_SEQ)
            .map_err(StorageError::from)?
            .and_then(|raw| <[u8; 8]>::try_from(raw.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        copied.last_seq = seq;
        write_watermark(&mut lock(&copy.shared.watermark), seq).map_err(BackupError::Io)?;
        File::open(into_dir).and_then(|dir| dir.sync_all()).map_err(BackupError::Io)?;
        Ok(copied)
    }

    /// A snapshot of everything the engine holds now (the journal takes it
    /// between groups, when that is exactly what is durable).
    pub(crate) fn snapshot(&self) -> fjall::Snapshot {
        self.shared.db.snapshot()
    }
}

/// What a backup needs of the disk it goes to, and what it finds there.
#[derive(Clone, Copy, Debug)]
struct BackupRoom {
    /// The store's files now.
    store_bytes: u64,
    /// Free space where the copy goes, for an unprivileged writer.
    available: u64,
    /// The copy goes to the data directory's filesystem.
    beside_data: bool,
}

impl BackupRoom {
    /// Room for the copy while it is written: its journal and its tables
    /// can both hold the data before the journal is trimmed.
    const COPY_FACTOR: u64 = 2;
    /// Slack for the engine's fixed files and estimates off by a little.
    const SLACK: u64 = 64 << 20;
    /// What a copy beside the data directory must leave free: the running
    /// service writes there too, and a full disk stops it (fail-stop).
    const DATA_HEADROOM: u64 = 1 << 30;

    fn needed(self) -> u64 {
        let copy = self.store_bytes.saturating_mul(Self::COPY_FACTOR).saturating_add(Self::SLACK);
        if self.beside_data { copy.saturating_add(Self::DATA_HEADROOM) } else { copy }
    }

    /// Refuses a backup that would fill the disk, before a byte is written.
    fn check(self, to: &Path) -> Result<(), BackupError> {
        let needed = self.needed();
        if self.available < needed {
            return Err(BackupError::NoSpace {
                to: to.to_path_buf(),
                needed,
                available: self.available,
                beside_data: self.beside_data,
            });
        }
        Ok(())
    }
}

/// Free bytes on the filesystem holding `dir`, as an unprivileged writer
/// may use them (`statvfs`'s `f_bavail`).
fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call and
    // `stat` is a plain struct statvfs fills in; nothing is kept.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Whether `a` and `b` lie on one filesystem.
fn same_filesystem(a: &Path, b: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(a)?.dev() == std::fs::metadata(b)?.dev())
}

/// A backup could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The disk the copy goes to has too little room for it (and, beside
    /// the data directory, for the running service after it).
    #[error(
        "{to}: {available} bytes free, a backup of this store needs {needed}{}; free some space or back up to another disk",
        if *beside_data { " (with 1 GiB left for the running service, as the copy shares its disk)" } else { "" }
    )]
    NoSpace { to: PathBuf, needed: u64, available: u64, beside_data: bool },
    /// The target holds files already, or is a file.
    #[error("{0}: not empty; a backup goes into a new directory")]
    NotEmpty(PathBuf),
    /// The target is inside the data directory, or holds it.
    #[error("{0}: inside the data directory, or holding it; a backup goes elsewhere")]
    Overlaps(PathBuf),
    /// The store stopped after a storage fault: what it holds is unknown.
    #[error("the store stopped after a storage fault ({0}); back up the restarted one")]
    Failed(String),
    /// A journal writes to this store: copy it through the journal.
    #[error("the store is in use by its journal: back it up through the running service")]
    Running,
    /// Another backup is being written.
    #[error("another backup is being written; try again when it is done")]
    Busy,
    /// The target could not be created or opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Reading the store or writing the copy failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The target's files could not be written.
    #[error("writing the backup: {0}")]
    Io(io::Error),
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn offset_key(subscriber: &str) -> Vec<u8> {
    let mut key = OFFSET_PREFIX.to_vec();
    key.extend_from_slice(subscriber.as_bytes());
    key
}

fn decode_offset(raw: &[u8], subscriber: &str) -> Result<u64, DecodeError> {
    let bytes: [u8; 8] = raw.try_into().map_err(|_| DecodeError {
        table: "offsets",
        key: subscriber.to_owned(),
        kind: DecodeErrorKind::MalformedKey,
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_in<K: Key, V: Record>(table: &Table<K, V>, raw_key: &[u8], raw: &[u8]) -> Result<V, DecodeError> {
    decode_value(raw).map_err(|kind| DecodeError { table: table.name(), key: render_key(raw_key), kind })
}

/// Creates `dir` if it is missing and checks that it is a usable directory.
fn prepare_dir(dir: &Path) -> Result<(), OpenError> {
    let unusable = |source: io::Error| OpenError::Unusable { path: dir.to_path_buf(), source };
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => return Err(OpenError::NotADirectory { path: dir.to_path_buf() }),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| match e.kind() {
                io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists => {
                    OpenError::NotADirectory { path: dir.to_path_buf() }
                }
                _ => unusable(e),
            })?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(OpenError::NotADirectory { path: dir.to_path_buf() });
        }
        Err(e) => return Err(unusable(e)),
    }
    std::fs::read_dir(dir).map_err(unusable)?;
    Ok(())
}

/// The sled release kept its database in `db/` (files `conf`, `db`, `snap.*`).
fn refuse_sled(dir: &Path) -> Result<(), OpenError> {
    let sled_dir = dir.join("db");
    if sled_dir.join("conf").exists() || sled_dir.join("db").exists() {
        return Err(OpenError::SledStore { path: dir.to_path_buf() });
    }
    Ok(())
}

fn engine_open_error(path: &Path, error: fjall::Error) -> OpenError {
    let path = path.to_path_buf();
    match error {
        fjall::Error::Io(source) if source.kind() == io::ErrorKind::PermissionDenied => {
            OpenError::Unusable { path, source }
        }
        fjall::Error::Locked => OpenError::Locked { path, holder: None },
        fjall::Error::InvalidVersion(found) => OpenError::Damaged {
            path,
            what: format!("fjall's version marker is not one this release reads ({found:?})"),
        },
        fjall::Error::JournalRecovery(e) => {
            OpenError::Damaged { path, what: format!("a journal file fails its checks ({e:?})") }
        }
        other => OpenError::Damaged { path, what: format!("{other:?}") },
    }
}

/// The watermark's 16 bytes: the seq, then the seq xor a constant, so that a
/// zeroed or torn file is told from a real one.
const WATERMARK_CHECK: u64 = 0x5355_4741_4e47_5741; // "SUGANGWA"

/// Opens (creating if missing) the watermark file and reads the seq in it.
fn open_watermark(dir: &Path) -> Result<(File, u64), OpenError> {
    let path = dir.join(WATERMARK_FILE);
    let unusable = |source| OpenError::Unusable { path: path.clone(), source };
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(unusable)?;
    let mut raw = Vec::with_capacity(16);
    file.read_to_end(&mut raw).map_err(unusable)?;
    let seq = match raw.len() {
        0 => 0,
        16 => {
            let seq = u64::from_be_bytes(raw[..8].try_into().unwrap_or_default());
            let check = u64::from_be_bytes(raw[8..].try_into().unwrap_or_default());
            if seq ^ WATERMARK_CHECK != check {
                return Err(OpenError::Damaged { path, what: "the watermark fails its check".into() });
            }
            seq
        }
        n => return Err(OpenError::Damaged { path, what: format!("the watermark is {n} bytes, not 16") }),
    };
    Ok((file, seq))
}

/// Rewrites the watermark in place (16 bytes at offset 0, one sector) and
/// makes it durable.
pub(crate) fn write_watermark(file: &mut File, seq: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&seq.to_be_bytes());
    raw[8..].copy_from_slice(&(seq ^ WATERMARK_CHECK).to_be_bytes());
    file.write_all_at(&raw, 0)?;
    file.sync_data()
}

/// Takes `dir/sugang.lock` (an advisory lock, released when the process
/// exits, even on SIGKILL) and writes our pid into it for the next one's error.
fn take_lock(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join("sugang.lock");
    let unusable = |source| OpenError::Unusable { path: path.clone(), source };
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(unusable)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
            return Err(OpenError::Locked { path: dir.to_path_buf(), holder });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(unusable(e)),
    }
    file.set_len(0).map_err(unusable)?;
    write!(file, "pid {}", std::process::id()).map_err(unusable)?;
    Ok(file)
}

/// The first key after every key that starts with `prefix`, if there is one.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// An iterator over a table's records, decoded.
pub struct Records<K, V> {
    table: Table<K, V>,
    inner: fjall::Iter,
}

impl<K: Key, V: Record> Records<K, V> {
    fn decode(&self, item: fjall::Guard) -> Result<(K, V), StorageError> {
        let (raw_key, raw) = item.into_inner()?;
        let key = self.table.decode_key(&raw_key)?;
        let value = decode_in(&self.table, &raw_key, &raw)?;
        Ok((key, value))
    }

    /// Only the keys, without decoding values.
    pub fn keys(self) -> impl DoubleEndedIterator<Item = Result<K, StorageError>> {
        let table = self.table;
        self.inner.map(move |item| Ok(table.decode_key(&item.key()?)?))
    }
}

impl<K: Key, V: Record> Iterator for Records<K, V> {
    type Item = Result<(K, V), StorageError>;
    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next()?;
        Some(self.decode(item))
    }
}

impl<K: Key, V: Record> DoubleEndedIterator for Records<K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let item = self.inner.next_back()?;
        Some(self.decode(item))
    }
}

#[cfg(test)]
mod backup_room_tests {
    use super::*;

    #[test]
    fn a_backup_needs_twice_the_store_and_leaves_the_service_a_gibibyte_beside_it() {
        let gib = 1u64 << 30;
        let to = Path::new("/backups/b");
        let elsewhere = BackupRoom { store_bytes: gib, available: 2 * gib + (64 << 20), beside_data: false };
        assert!(elsewhere.check(to).is_ok(), "exactly enough on another disk");
        let short = BackupRoom { available: 2 * gib, ..elsewhere };
        assert!(matches!(short.check(to), Err(BackupError::NoSpace { .. })), "64 MiB short");
        let beside = BackupRoom { beside_data: true, ..elsewhere };
        let Err(refused) = beside.check(to) else { panic!("the copy would leave the service no room") };
        assert!(refused.to_string().contains("1 GiB left for the running service"), "{refused}");
        assert!(BackupRoom { available: 3 * gib + (64 << 20), ..beside }.check(to).is_ok());
        let huge = BackupRoom { store_bytes: u64::MAX, available: u64::MAX - 1, beside_data: true };
        assert!(huge.check(to).is_err(), "sizes saturate rather than wrap");
    }

    #[test]
    fn free_space_and_filesystems_are_read_from_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
        assert!(same_filesystem(dir.path(), dir.path()).unwrap());
        if Path::new("/proc").exists() {
            assert!(!same_filesystem(dir.path(), Path::new("/proc")).unwrap(), "procfs is a filesystem of its own");
        }
    }
}
