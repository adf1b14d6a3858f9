//! Reading the log back: one course's history (what a new owner replays to
//! rebuild the course, from a snapshot's seq if it has one) and the whole
//! log in order (what every node projects for its read models).
//!
//! Owns decoding log messages into [`LogEntry`]s and checking each course's
//! chain (every message names the subject sequence it followed, and must
//! follow the one before it). Reads through JetStream ordered consumers
//! (ephemeral, flow-controlled, recreated by the client on a gap); the
//! stream sequence is the global seq. Must not write.

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures_util::StreamExt;

use crate::layout::{Cluster, LOG_SUBJECTS, course_of_subject, course_subject};
use crate::owner::{CommitBatch, EPOCH, KIND, NODE, PREV, header_str, header_u64};

/// What a log message is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A commit batch of the course's owner.
    Commit(CommitBatch),
    /// A new owner's takeover marker: writes of earlier epochs end here.
    Takeover,
}

/// One message of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Its stream sequence: the global seq, increasing across courses.
    pub seq: u64,
    /// The course whose subject it is on.
    pub course: u64,
    /// The node that wrote it.
    pub node: String,
    /// The lease epoch it was written under.
    pub epoch: u64,
    /// The course subject's sequence it was appended after (0: first).
    pub prev: u64,
    /// When the stream stored it, unix ms (the server's clock).
    pub at_ms: u64,
    /// A commit or a takeover.
    pub kind: EntryKind,
}

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// NATS failed or did not answer.
    #[error("reading the log: {0}")]
    Nats(#[from] async_nats::Error),
    /// A message is not one of ours, or its payload does not decode.
    #[error("log message {seq} on {subject}: {reason}")]
    Malformed {
        /// Its stream sequence.
        seq: u64,
        /// Its subject.
        subject: String,
        /// What is wrong.
        reason: String,
    },
    /// A course's chain is broken: a message does not follow the one before
    /// it on the subject (a fence that did not hold, or messages lost).
    #[error("course {course}: message {seq} follows {prev}, but the one before it is {before}")]
    BrokenChain {
        /// The course.
        course: u64,
        /// The message.
        seq: u64,
        /// What it says it follows.
        prev: u64,
        /// What precedes it on the subject.
        before: u64,
    },
}

fn decode(message: &async_nats::jetstream::Message) -> Result<LogEntry, ReplayError> {
    let info = message.info().map_err(ReplayError::Nats)?;
    let seq = info.stream_sequence;
    let at_ms = (info.published.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    let subject = message.subject.to_string();
    let malformed = |reason: String| ReplayError::Malformed { seq, subject: subject.clone(), reason };
    let course = course_of_subject(&subject).ok_or_else(|| malformed("not a course subject".into()))?;
    let headers = message.headers.clone().unwrap_or_default();
    let kind = match header_str(&headers, KIND).as_deref() {
        Some("commit") => {
            EntryKind::Commit(CommitBatch::decode(&message.payload).map_err(|err| malformed(err.to_string()))?)
        }
        Some("takeover") => EntryKind::Takeover,
        other => return Err(malformed(format!("kind {other:?}"))),
    };
    Ok(LogEntry {
        seq,
        course,
        node: header_str(&headers, NODE).unwrap_or_default(),
        epoch: header_u64(&headers, EPOCH).ok_or_else(|| malformed("no epoch".into()))?,
        prev: header_u64(&headers, PREV).ok_or_else(|| malformed("no prev".into()))?,
        at_ms,
        kind,
    })
}

impl Cluster {
    /// An ordered consumer's messages on `filter` from stream sequence
    /// `from`. Its creation is retried for up to the append timeout: right
    /// after a NATS server died, the first attempt can time out while the
    /// cluster notices.
    pub(crate) async fn ordered(&self, filter: String, from: u64) -> Result<pull::Ordered, ReplayError> {
        let started = tokio::time::Instant::now();
        loop {
            let created = self
                .log
                .create_consumer(pull::OrderedConfig {
                    filter_subject: filter.clone(),
                    deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: from },
                    ..Default::default()
                })
                .await;
            let err: async_nats::Error = match created {
                Ok(consumer) => match consumer.messages().await {
                    Ok(messages) => return Ok(messages),
                    Err(err) => err.into(),
                },
                Err(err) => err.into(),
            };
            if started.elapsed() >= self.config.append_timeout {
                return Err(ReplayError::Nats(err));
            }
            tracing::debug!(filter, error = %err, "could not create an ordered consumer, retrying");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// `course`'s history from stream sequence `from` (1 for all of it, or
    /// the seq after a snapshot's) up to and including `up_to` (`None`: its
    /// last message now), in order, with its chain checked from the first
    /// message read on.
    pub async fn course_history(
        &self,
        course: u64,
        from: u64,
        up_to: Option<u64>,
    ) -> Result<Vec<LogEntry>, ReplayError> {
        let up_to = match up_to {
            Some(seq) => seq,
            None => match self.course_tail(course).await? {
                Some(tail) => tail.seq,
                None => return Ok(Vec::new()),
            },
        };
        let from = from.max(1);
        if up_to < from {
            return Ok(Vec::new());
        }
        let mut messages = self.ordered(course_subject(course), from).await?;
        let mut out: Vec<LogEntry> = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.map_err(|err| ReplayError::Nats(err.into()))?;
            let entry = decode(&message)?;
            let pending = message.info().map_err(ReplayError::Nats)?.pending;
            if entry.seq > up_to {
                break;
            }
            if let Some(before) = out.last()
                && entry.prev != before.seq
            {
                return Err(ReplayError::BrokenChain { course, seq: entry.seq, prev: entry.prev, before: before.seq });
            }
            let last = entry.seq == up_to;
            out.push(entry);
            if last || pending == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// The whole log in order from stream sequence `from`, every course
    /// interleaved as committed, waiting for new messages at the end.
    pub async fn log_reader(&self, from: u64) -> Result<LogReader, ReplayError> {
        let messages = self.ordered(LOG_SUBJECTS.to_string(), from.max(1)).await?;
        Ok(LogReader { messages, last: std::collections::HashMap::new() })
    }
}

/// The whole log in order (see [`Cluster::log_reader`]).
pub struct LogReader {
    /// The ordered consumer's messages.
    messages: pull::Ordered,
    /// Each course's last sequence read, to check its chain.
    last: std::collections::HashMap<u64, u64>,
}

impl LogReader {
    /// The next message of the log, waiting for one if none is there yet;
    /// `None` if the connection closed.
    pub async fn next(&mut self) -> Option<Result<LogEntry, ReplayError>> {
        let message = match self.messages.next().await? {
            Ok(message) => message,
            Err(err) => return Some(Err(ReplayError::Nats(err.into()))),
        };
        let entry = match decode(&message) {
            Ok(entry) => entry,
            Err(err) => return Some(Err(err)),
        };
        if let Some(&before) = self.last.get(&entry.course)
            && entry.prev != before
        {
            return Some(Err(ReplayError::BrokenChain {
                course: entry.course,
                seq: entry.seq,
                prev: entry.prev,
                before,
            }));
        }
        self.last.insert(entry.course, entry.seq);
        Some(Ok(entry))
    }
}
