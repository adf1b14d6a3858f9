//! sugang's storage engine: fjall underneath, a record codec, the journal that
//! is the store's only writer, the durable event log and subscriber offsets.
//!
//! Nothing here knows about courses or enrollments: the crates above declare
//! their own [`Table`]s and event types, and this crate makes their writes
//! atomic, ordered and durable. The engine stays behind this crate's API (the
//! journal, the event log and the tables are the seams a cluster backend
//! uses).
//!
//! # Why fjall
//!
//! The first release stored on sled 0.34.7, unmaintained since 2021, with open
//! reports of corruption after an abrupt stop and a `sync_file_range` flush.
//! Measured on this project's 2-core machine with sugang's write pattern
//! (group-committed batches of ~10 keys, 64–256 committers; `bench/engines.rs`
//! re-checks it): fjall 3 with its journal capped at 64 MiB ~33 K durable
//! enrollments/s, 139 MB resident after a million, 0.64 s to reopen after a
//! kill; sled 0.34 as used ~8 K/s, 304 MB, 9.5 s; redb 4 ~14 K/s, 81 MB. fjall
//! is an LSM tree with its own checksummed journal, atomic batches across
//! keyspaces, checksummed blocks, and a persist that poisons the database on
//! failure, which suits fail-stop.
//!
//! # Layout
//!
//! - `codec`: the [`Record`] trait (postcard behind a schema-version byte),
//!   the order-preserving [`Key`] encoding, typed [`Table`]s, [`Count`]s,
//!   decode errors.
//! - `store`: opening a data directory ([`Store::open`]: lock, format and
//!   damage checks), typed reads, scans and seeks ([`Store::scan_prefix_from`]),
//!   counts ([`Store::count`]), subscriber offsets, [`Store::verify`],
//!   [`Store::backup`].
//! - `journal`: the single writer with group commit ([`Journal`], [`Batch`],
//!   [`Receipt`]), guards (compare-and-set batches), event seq assignment,
//!   fail-stop, injected disk faults, retention.
//! - `log`: reading the event log ([`EventLog`]) and waiting for new events.
//! - `replicated`: a cluster node's journal, whose durable point is a
//!   replicated log ([`Replicator`]), and the [`Applier`] that rebuilds the
//!   local store from that log in order; a node that does not write the
//!   log forwards its batches to the one that does ([`Forwarded`]).
//!
//! # Durability
//!
//! With [`Durability::Fsync`] (the default) a [`Journal::commit`] returns only
//! after fjall's journal has been fdatasynced for a group containing the
//! batch. Readers of the store may see a group's writes a moment before its
//! persist completes (fjall applies to its memtables first); nothing that
//! acknowledges a client may depend on such a read, which is why commands go
//! through the actors that own their state and answer after the receipt, and
//! why the event log is read only up to the last durable seq.

mod codec;
mod journal;
mod log;
mod replicated;
mod store;

pub use codec::{Count, DecodeError, DecodeErrorKind, EncodeError, Key, Record, Table};
pub use journal::{
    AlreadyStarted, Batch, BatchDecodeError, CommitError, DiskFaults, Journal, JournalOptions, Pending, Receipt,
    TrimError,
};
pub use log::{Committed, EventLog};
pub use replicated::{
    Appended, Applier, ApplyError, BindLogError, BoxFuture, Forwarded, LogPart, ReplicateError, Replicator, log_events,
};
pub use store::{
    BackupError, Closing, Durability, OpenError, Records, StorageError, Store, StoreOptions, Verified, WATERMARK_EVERY,
};
