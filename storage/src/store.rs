//! Opening a data directory, and reading from it.
//!
//! Owns the sled database, the directory lock and the key space layout
//! (tables under `t`, events under `e`, subscriber offsets under `o`, store
//! metadata under `m`). Reads go straight to sled; every write goes through
//! the [`Journal`](crate::Journal), the only writer, and nothing here writes
//! except the one-time format marker at open, before any journal exists.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::codec::{DecodeError, DecodeErrorKind, Key, Record, Table, decode_value, render_key};
use crate::log::EventLog;

/// The on-disk layout this release reads and writes.
const FORMAT_VERSION: u8 = 1;
pub(crate) const META_FORMAT: &[u8] = b"mformat";
pub(crate) const META_LAST_SEQ: &[u8] = b"mlast_seq";
pub(crate) const OFFSET_PREFIX: &[u8] = b"o";
pub(crate) const EVENT_PREFIX: &[u8] = b"e";

/// When a commit counts as durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// The journal calls sled's blocking `flush()` (an fsync) once per group
    /// before it answers anyone in the group.
    #[default]
    Fsync,
    /// The journal answers once sled has applied the batch; sled's background
    /// flusher writes it out within `flush_every_ms`. For benchmarks and tests.
    Relaxed {
        /// How often sled's background thread flushes.
        flush_every_ms: u64,
    },
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// When a commit is acknowledged.
    pub durability: Durability,
    /// sled's page cache, in bytes: the main lever on resident memory.
    pub cache_capacity: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { durability: Durability::Fsync, cache_capacity: 64 * 1024 * 1024 }
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
    /// sled refused to open or recover the files.
    #[error("{path}: cannot open the store: {source}")]
    Engine {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
}

/// A read or a low-level write failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A stored record does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// sled reported an I/O error or corruption.
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
}

/// An open data directory. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) db: sled::Db,
    pub(crate) options: StoreOptions,
    pub(crate) dir: PathBuf,
    /// The last committed event seq; the journal publishes, subscribers watch.
    pub(crate) last_seq: watch::Sender<u64>,
    /// Set once a journal runs, so a second one cannot be started.
    pub(crate) journal_started: AtomicBool,
    /// sled's data file, which the journal fdatasyncs after each flush.
    pub(crate) data_file: File,
    /// Held for the life of the store: our own lock, so that a second sugang
    /// gets a clear error naming the holder instead of sled's io error.
    _lock: File,
}

/// Tells when a store has closed: every handle dropped, sled closed and the
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

impl Store {
    /// A way to wait for this store to close once its handles are dropped.
    pub fn closing(&self) -> Closing {
        Closing(Arc::downgrade(&self.shared))
    }

    /// Opens (creating if missing) the data directory at `dir`.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store, OpenError> {
        let dir = dir.as_ref().to_path_buf();
        let unusable = |source: io::Error| OpenError::Unusable { path: dir.clone(), source };
        match std::fs::metadata(&dir) {
            Ok(meta) if !meta.is_dir() => return Err(OpenError::NotADirectory { path: dir }),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir).map_err(|e| match e.kind() {
                    io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists => {
                        OpenError::NotADirectory { path: dir.clone() }
                    }
                    _ => unusable(e),
                })?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                return Err(OpenError::NotADirectory { path: dir });
            }
            Err(e) => return Err(unusable(e)),
        }
        std::fs::read_dir(&dir).map_err(unusable)?;
        let lock = take_lock(&dir)?;

        let mut config = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(options.cache_capacity)
            .mode(sled::Mode::HighThroughput);
        config = match options.durability {
            // Only the journal flushes: sled's own flusher thread stays off.
            Durability::Fsync => config.flush_every_ms(None),
            Durability::Relaxed { flush_every_ms } => config.flush_every_ms(Some(flush_every_ms)),
        };
        let db = open_engine(&config).map_err(|source| OpenError::Engine { path: dir.clone(), source })?;
        let engine = |source| OpenError::Engine { path: dir.clone(), source };

        match db.get(META_FORMAT).map_err(engine)? {
            Some(found) if found.as_ref() != [FORMAT_VERSION] => {
                let found = found.first().copied().unwrap_or(0);
                return Err(OpenError::IncompatibleFormat { path: dir, found });
            }
            Some(_) => {}
            None if db.is_empty() => {
                db.insert(META_FORMAT, &[FORMAT_VERSION]).map_err(engine)?;
                db.flush().map_err(engine)?;
            }
            None => return Err(OpenError::IncompatibleFormat { path: dir, found: 0 }),
        }
        let last_seq = match db.get(META_LAST_SEQ).map_err(engine)? {
            Some(raw) => {
                let bytes: [u8; 8] =
                    raw.as_ref().try_into().map_err(|_| engine(sled::Error::Corruption { at: None, bt: () }))?;
                u64::from_be_bytes(bytes)
            }
            None => 0,
        };
        let data_file = File::open(dir.join("db").join("db")).map_err(unusable)?;
        tracing::info!(dir = %dir.display(), last_seq, "store opened");
        Ok(Store {
            shared: Arc::new(Shared {
                db,
                options,
                dir,
                last_seq: watch::Sender::new(last_seq),
                journal_started: AtomicBool::new(false),
                data_file,
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

    /// Reads one record.
    pub fn get<K: Key, V: Record>(&self, table: &Table<K, V>, key: &K) -> Result<Option<V>, StorageError> {
        let raw_key = table.key_bytes(key);
        match self.shared.db.get(&raw_key)? {
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
        Ok(self.shared.db.contains_key(table.key_bytes(key))?)
    }

    /// Every record of a table, in key order.
    pub fn scan<K: Key, V: Record>(&self, table: &Table<K, V>) -> Records<K, V> {
        Records { table: *table, inner: self.shared.db.scan_prefix(table.prefix()) }
    }

    /// The records whose key starts with `part` (the leading fields of a
    /// composite key, e.g. the student of a `(student, id)` key), in key order.
    pub fn scan_prefix<K: Key, V: Record, P: Key>(&self, table: &Table<K, V>, part: &P) -> Records<K, V> {
        Records { table: *table, inner: self.shared.db.scan_prefix(table.prefix_bytes(part)) }
    }

    /// The records with key `>= from`, in key order.
    pub fn scan_from<K: Key, V: Record>(&self, table: &Table<K, V>, from: &K) -> Records<K, V> {
        let prefix = table.prefix();
        let mut end = prefix.clone();
        // The byte after the table's NUL terminator bounds the table.
        if let Some(last) = end.last_mut() {
            *last = 1;
        }
        Records { table: *table, inner: self.shared.db.range(table.key_bytes(from)..end) }
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
        match self.shared.db.get(offset_key(subscriber))? {
            Some(raw) => Ok(Some(decode_offset(&raw, subscriber)?)),
            None => Ok(None),
        }
    }

    /// Every registered subscriber and its offset.
    pub fn offsets(&self) -> Result<Vec<(String, u64)>, StorageError> {
        let mut out = Vec::new();
        for item in self.shared.db.scan_prefix(OFFSET_PREFIX) {
            let (key, raw) = item?;
            let name = String::from_utf8_lossy(&key[OFFSET_PREFIX.len()..]).into_owned();
            let offset = decode_offset(&raw, &name)?;
            out.push((name, offset));
        }
        Ok(out)
    }
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

/// Opens sled, waiting out its lock on `db/db` if it lingers: sled 0.34 lets
/// go of that lock only once its background threads drop the file, a moment
/// after the last handle of a closed store (sled #1234, #1289), so reopening
/// a directory in the same process can race it. We hold `sugang.lock`, so no
/// other sugang is using the directory and the refusal can only be that
/// moment; a bound keeps a foreign holder from making us wait forever.
fn open_engine(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            opened => return opened,
        }
    }
}

/// An iterator over a table's records, decoded.
pub struct Records<K, V> {
    table: Table<K, V>,
    inner: sled::Iter,
}

impl<K: Key, V: Record> Records<K, V> {
    fn decode(&self, item: sled::Result<(sled::IVec, sled::IVec)>) -> Result<(K, V), StorageError> {
        let (raw_key, raw) = item?;
        let key = self.table.decode_key(&raw_key)?;
        let value = decode_in(&self.table, &raw_key, &raw)?;
        Ok((key, value))
    }

    /// Only the keys, without decoding values.
    pub fn keys(self) -> impl DoubleEndedIterator<Item = Result<K, StorageError>> {
        let table = self.table;
        self.inner.keys().map(move |k| Ok(table.decode_key(&k?)?))
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
