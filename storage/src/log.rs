//! The durable event log: reading committed events in sequence order and
//! being told when new ones commit.
//!
//! Owns the event keyspace (keys are big-endian seqs) and the envelope each
//! event is stored in. Appending is the journal's job (events commit in the
//! same batch as the state that emitted them); trimming is too. This module
//! must not write.
//!
//! The newest events also stay in memory ([`Tail`], filled by the journal once
//! they are durable), so that the subscribers following the live log read
//! them without a range scan of fjall and an envelope decode each: together
//! 7.5 % of the server's CPU under `bench/load.sh` before (bench/PROFILE.md).

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::codec::{DecodeError, DecodeErrorKind, EncodeError, Record, decode_value, render_key};
use crate::store::{StorageError, Store};

/// How an event is stored: the caller's record, plus what the journal knows.
#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// Commit time, unix milliseconds: what retention by age looks at.
    pub(crate) at_ms: u64,
    /// The partition key (the correlation id): what scaled-out subscribers
    /// split the log by.
    pub(crate) key: u64,
    /// The event itself, already encoded with its own version byte.
    pub(crate) payload: Vec<u8>,
}

impl Record for Envelope {}

/// An [`Envelope`] the journal encodes without copying the payload first:
/// the same bytes on disk (serde writes a `Vec<u8>` and a `&[u8]` alike).
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    at_ms: u64,
    key: u64,
    payload: &'a [u8],
}

/// Encodes an event's [`Envelope`], version byte first, as `encode_value`
/// would, borrowing the payload.
pub(crate) fn encode_envelope(at_ms: u64, key: u64, payload: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(payload.len() + 24);
    out.push(Envelope::VERSION);
    postcard::to_io(&EnvelopeRef { at_ms, key, payload }, &mut out)
        .map_err(|source| EncodeError { table: "events", source })?;
    Ok(out)
}

/// How many of the newest durable events [`Tail`] keeps: a few times what
/// the subscribers lag behind under load (at most a few hundred events in
/// `cargo bench --bench fanout`), and well under a megabyte.
pub(crate) const TAIL_EVENTS: usize = 4096;

/// One event in the [`Tail`]: what [`EventLog::read`] would decode from disk.
#[derive(Clone)]
pub(crate) struct TailEvent {
    pub(crate) seq: u64,
    pub(crate) at_ms: u64,
    pub(crate) key: u64,
    pub(crate) payload: Arc<Vec<u8>>,
}

/// The newest durable events, in seq order without gaps: the journal pushes
/// a group's events once the group is durable (before it publishes the new
/// last seq) and drops the ones retention removes; [`EventLog::read`] serves
/// from it what it holds and reads fjall for the rest.
#[derive(Default)]
pub(crate) struct Tail(RwLock<VecDeque<TailEvent>>);

impl Tail {
    /// Appends durable events (consecutive, right after the last one held;
    /// otherwise what was held is dropped first, so the tail never has a gap).
    pub(crate) fn push(&self, events: impl IntoIterator<Item = TailEvent>) {
        let Ok(mut tail) = self.0.write() else { return };
        for event in events {
            if tail.back().is_some_and(|last| last.seq + 1 != event.seq) {
                tail.clear();
            }
            if tail.len() == TAIL_EVENTS {
                tail.pop_front();
            }
            tail.push_back(event);
        }
    }

    /// Drops every event up to `seq` (retention removed them).
    pub(crate) fn trim_through(&self, seq: u64) {
        let Ok(mut tail) = self.0.write() else { return };
        while tail.front().is_some_and(|first| first.seq <= seq) {
            tail.pop_front();
        }
    }

    /// The events from `from` through `last`, at most `limit`, if the tail
    /// holds `from`; `None` if `from` is older than what it holds.
    fn read(&self, from: u64, last: u64, limit: usize) -> Option<Vec<TailEvent>> {
        let tail = self.0.read().ok()?;
        let first = tail.front()?.seq;
        if from < first {
            return None;
        }
        let skip = usize::try_from(from - first).ok()?;
        Some(tail.iter().skip(skip).take_while(|e| e.seq <= last).take(limit).cloned().collect())
    }
}

pub(crate) fn event_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The seq of an event key; `None` if the key is not 8 bytes.
pub(crate) fn seq_of(raw_key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(raw_key.try_into().ok()?))
}

/// Decodes a stored envelope, naming the event's key if it is malformed.
pub(crate) fn decode_envelope(raw_key: &[u8], raw: &[u8]) -> Result<Envelope, DecodeError> {
    decode_value(raw).map_err(|kind| DecodeError { table: "events", key: render_key(raw_key), kind })
}

/// One committed event.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed<E> {
    /// Its place in the log: gap-free and strictly increasing in commit order.
    pub seq: u64,
    /// When the journal committed it, unix milliseconds.
    pub at_ms: u64,
    /// The partition key it was appended with.
    pub key: u64,
    /// The event.
    pub event: E,
}

/// Read access to the event log. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    pub(crate) store: Store,
}

impl EventLog {
    /// The seq of the last committed event (0 when none ever was).
    pub fn last_seq(&self) -> u64 {
        *self.store.shared.last_seq.borrow()
    }

    /// A receiver that sees `last_seq` change whenever a batch with events
    /// commits, so readers can wait instead of polling.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.store.shared.last_seq.subscribe()
    }

    /// The lowest seq still in the log (retention removes older ones), or
    /// `None` when the log is empty.
    pub fn first_seq(&self) -> Result<Option<u64>, StorageError> {
        match self.store.shared.events.first_key_value() {
            Some(item) => Ok(seq_of(&item.key()?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` durable events with seq `>= from`, in order: never one
    /// past [`EventLog::last_seq`], though the journal may have applied
    /// later ones to fjall while their persist runs.
    pub fn read<E: Record>(&self, from: u64, limit: usize) -> Result<Vec<Committed<E>>, StorageError> {
        let last = self.last_seq();
        if from > last {
            return Ok(Vec::new());
        }
        if let Some(held) = self.store.shared.tail.read(from, last, limit) {
            let mut out = Vec::with_capacity(held.len());
            for TailEvent { seq, at_ms, key, payload } in held {
                let event = decode_value(&payload).map_err(|kind| DecodeError {
                    table: "events",
                    key: render_key(&event_key(seq)),
                    kind,
                })?;
                out.push(Committed { seq, at_ms, key, event });
            }
            return Ok(out);
        }
        // Sized to what is there, not to `limit`: a subscriber following the
        // live log reads a few events per commit, thousands of times a second.
        let available = usize::try_from(last - from + 1).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(limit.min(available).min(1024));
        for item in self.store.shared.events.range(event_key(from)..=event_key(last)).take(limit) {
            let (raw_key, raw) = item.into_inner()?;
            let fail = |kind| DecodeError { table: "events", key: render_key(&raw_key), kind };
            let seq = seq_of(&raw_key).ok_or_else(|| fail(DecodeErrorKind::MalformedKey))?;
            let envelope = decode_envelope(&raw_key, &raw)?;
            let event = decode_value(&envelope.payload).map_err(fail)?;
            out.push(Committed { seq, at_ms: envelope.at_ms, key: envelope.key, event });
        }
        Ok(out)
    }

    /// The keys of events with seq `< below` and commit time `< older_than_ms`,
    /// at most `limit` of them: what retention may remove.
    pub(crate) fn expired(&self, below: u64, older_than_ms: u64, limit: usize) -> Result<Vec<u64>, StorageError> {
        let mut out = Vec::new();
        for item in self.store.shared.events.range(event_key(0)..event_key(below)).take(limit) {
            let (raw_key, raw) = item.into_inner()?;
            let envelope = decode_envelope(&raw_key, &raw)?;
            if envelope.at_ms >= older_than_ms {
                break;
            }
            let seq = seq_of(&raw_key).ok_or_else(|| DecodeError {
                table: "events",
                key: render_key(&raw_key),
                kind: DecodeErrorKind::MalformedKey,
            })?;
            out.push(seq);
        }
        Ok(out)
    }
}
