//! sugang's storage engine: sled underneath, a record codec, the journal that
//! is the store's only writer, the durable event log and subscriber offsets.
//!
//! Nothing here knows about courses or enrollments: the crates above declare
//! their own [`Table`]s and event types, and this crate makes their writes
//! atomic, ordered and durable. sled stays behind this crate's API so another
//! engine could replace it.
//!
//! # Layout
//!
//! - `codec`: the [`Record`] trait (postcard behind a schema-version byte),
//!   the order-preserving [`Key`] encoding, typed [`Table`]s, decode errors.
//! - `store`: opening a data directory ([`Store::open`]: lock, format check),
//!   typed reads and scans, subscriber offsets.
//! - `journal`: the single writer with group commit ([`Journal`], [`Batch`],
//!   [`Receipt`]), event seq assignment, injected disk faults, retention.
//! - `log`: reading the event log ([`EventLog`]) and waiting for new events.
//!
//! # Durability
//!
//! With [`Durability::Fsync`] (the default) a [`Journal::commit`] returns only
//! after sled's blocking `flush()` has returned for a group containing the
//! batch. Readers of the store may see a group's writes a few milliseconds
//! before its flush completes (sled applies in memory first); nothing that
//! acknowledges a client may depend on such a read, which is why commands go
//! through the actors that own their state and answer after the receipt.

mod codec;
mod journal;
mod log;
mod store;

pub use codec::{DecodeError, DecodeErrorKind, EncodeError, Key, Record, Table};
pub use journal::{
    AlreadyStarted, Batch, CommitError, DiskFaults, Journal, JournalOptions, Pending, Receipt, StreamId, TrimError,
};
pub use log::{Committed, EventLog};
pub use store::{Closing, Durability, OpenError, Records, StorageError, Store, StoreOptions};
