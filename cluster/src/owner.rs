//! The owner of a course and its fenced appends: how a lease becomes the
//! right to write the course's log, and how a stale owner is refused.
//!
//! Owns the log messages (commit batches and takeover markers) and their
//! headers. The fence is JetStream's, not ours: every message on a course's
//! subject is published with `Nats-Expected-Last-Subject-Sequence` set to the
//! last sequence its writer knows on that subject, so the subject's messages
//! form one chain and a writer that missed a message cannot add to it. A new
//! owner first appends a takeover marker (after checking no later epoch
//! wrote), and from then on the previous owner's appends carry a stale
//! expected sequence and are refused by the server, however long that owner
//! was paused. Everything before the marker is history the new owner replays.
//!
//! An append is one message (NATS 2.9 has no atomic multi-message publish):
//! the state writes and the events of one commit group, so they are stored
//! together or not at all. One round trip: the publish and its ack, sent
//! after the stream's replicas stored it. An ambiguous failure (timeout, a
//! server died, no stream leader) is retried with the same `Nats-Msg-Id`, so
//! a message stored before the failure is not stored twice; a refusal after
//! such a retry is checked against what follows the expected sequence.
//!
//! Must not read or write the lease bucket (the `lease` module does).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use serde::{Deserialize, Serialize};

use crate::layout::{Cluster, course_subject};
use crate::lease::{Lease, LeaseError};

/// Header: `commit` or `takeover`.
pub(crate) const KIND: &str = "Sugang-Kind";
/// Header: the writing node.
pub(crate) const NODE: &str = "Sugang-Node";
/// Header: the writer's lease epoch.
pub(crate) const EPOCH: &str = "Sugang-Epoch";
/// Header: the subject sequence the writer expected to follow (the chain).
pub(crate) const PREV: &str = "Sugang-Prev";
/// Header: the enrollment ids (events' partition keys) a commit touches.
pub(crate) const ENROLLMENTS: &str = "Sugang-Enrollments";
/// NATS's de-duplication header.
const MSG_ID: &str = "Nats-Msg-Id";

/// One state write of a commit batch: a raw key and its new value (`None`
/// deletes it). The storage crate's tables give the bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The record's key.
    pub key: Vec<u8>,
    /// The new value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// One event of a commit batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its partition key: the enrollment id it belongs to.
    pub key: u64,
    /// The encoded event.
    pub payload: Vec<u8>,
}

/// What one commit group of a course's owner stores: its state writes and its
/// events, in one log message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitBatch {
    /// State writes, in order (a later write to a key wins).
    pub writes: Vec<Write>,
    /// Events, in order.
    pub events: Vec<Event>,
}

impl CommitBatch {
    /// The batch as a log message payload (postcard).
    pub(crate) fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(self)
    }

    /// Decodes a log message payload.
    pub(crate) fn decode(bytes: &[u8]) -> Result<CommitBatch, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// Why an append (or a takeover marker) was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The course's subject moved past the sequence this writer expected:
    /// another owner took the course over. Nothing was stored; stop serving
    /// the course.
    #[error("append to course {course} refused: fenced (expected subject seq {expected})")]
    Fenced {
        /// The course.
        course: u64,
        /// The subject sequence this writer expected to follow.
        expected: u64,
    },
    /// JetStream did not store it within the append timeout (no leader, no
    /// quorum, no server). It may or may not be stored: a retry of the same
    /// append by the same owner is de-duplicated.
    #[error("append to course {course} not acknowledged within {waited:?}: {source}")]
    Unavailable {
        /// The course.
        course: u64,
        /// How long it was retried.
        waited: Duration,
        /// The last error seen.
        source: async_nats::Error,
    },
    /// The batch is larger than the server accepts, or does not encode.
    #[error("append to course {course} cannot be sent: {reason}")]
    Invalid {
        /// The course.
        course: u64,
        /// Why.
        reason: String,
    },
}

/// Why a takeover did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    /// The course's log already holds a write of a later epoch: this lease
    /// is stale (it expired while this node was paused).
    #[error("takeover of course {course} superseded: epoch {found} wrote after ours ({ours})")]
    Superseded {
        /// The course.
        course: u64,
        /// Our epoch.
        ours: u64,
        /// The later epoch found.
        found: u64,
    },
    /// The marker could not be appended.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The course's log could not be read.
    #[error("takeover of course {course}: reading its log: {source}")]
    Read {
        /// The course.
        course: u64,
        /// The client's error.
        source: async_nats::Error,
    },
}

/// Why [`Cluster::own`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OwnError {
    /// The lease could not be acquired.
    #[error(transparent)]
    Acquire(#[from] crate::lease::AcquireError),
    /// The lease was acquired but the takeover failed (the lease is released).
    #[error(transparent)]
    Takeover(#[from] TakeoverError),
}

/// The last message on a course's subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tail {
    /// Its stream sequence (the course subject's last sequence).
    pub seq: u64,
    /// The epoch that wrote it.
    pub epoch: u64,
    /// The node that wrote it.
    pub node: String,
}

/// The appended message: where it is in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Its stream sequence: the global seq of the batch.
    pub seq: u64,
    /// Publishes it took (1 unless a failure was retried): the round trips.
    pub attempts: u32,
}

/// This node's ownership of one course: its lease and its place in the
/// course's chain. Appends go through it; once fenced it refuses everything.
pub struct CourseOwner {
    /// The connection.
    cluster: Cluster,
    /// The lease held; its epoch marks every append.
    lease: Lease,
    /// The course's log subject.
    subject: String,
    /// The sequence of our takeover marker: history before it is the state
    /// we took over.
    takeover_seq: u64,
    /// The last sequence on the course's subject, as we wrote it: what the
    /// next append expects.
    last_seq: u64,
    /// Appends made so far (message ids are unique per epoch and count).
    appends: u64,
    /// Set once an append was fenced: the course belongs to someone else.
    fenced: bool,
}

impl Cluster {
    /// The last message on `course`'s subject (`None` if it has none), read
    /// from the stream leader.
    pub async fn course_tail(&self, course: u64) -> Result<Option<Tail>, async_nats::Error> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        match self.log.get_last_raw_message_by_subject(&course_subject(course)).await {
            Ok(message) => Ok(Some(Tail {
                seq: message.sequence,
                epoch: header_u64(&message.headers, EPOCH).unwrap_or(0),
                node: header_str(&message.headers, NODE).unwrap_or_default(),
            })),
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Makes `lease` the writer of its course: checks that no later epoch
    /// wrote the course's log, then appends a takeover marker after its last
    /// message, which fences every earlier owner out. Replay the course's
    /// history up to [`CourseOwner::takeover_seq`] before serving it.
    #[tracing::instrument(skip(self, lease), fields(node = %self.config.node, course = lease.course, epoch = lease.epoch))]
    pub async fn take_over(&self, lease: Lease) -> Result<CourseOwner, TakeoverError> {
        let course = lease.course;
        let subject = course_subject(course);
        let payload = serde_json::to_vec(&serde_json::json!({ "node": self.config.node, "epoch": lease.epoch }))
            .map_err(|err| AppendError::Invalid { course, reason: err.to_string() })?;
        // A message can land between reading the tail and the marker (the
        // old owner still appending): the marker is refused, read again.
        for _ in 0..100 {
            let tail = self.course_tail(course).await.map_err(|source| TakeoverError::Read { course, source })?;
            let expected = tail.as_ref().map_or(0, |t| t.seq);
            if let Some(tail) = &tail
                && tail.epoch > lease.epoch
            {
                return Err(TakeoverError::Superseded { course, ours: lease.epoch, found: tail.epoch });
            }
            let msg_id = format!("c{course}-e{}-takeover", lease.epoch);
            match self
                .publish_fenced(course, &subject, "takeover", lease.epoch, &msg_id, expected, payload.clone(), &[])
                .await
            {
                Ok(appended) => {
                    tracing::info!(course, epoch = lease.epoch, seq = appended.seq, "took the course over");
                    return Ok(CourseOwner {
                        cluster: self.clone(),
                        lease,
                        subject,
                        takeover_seq: appended.seq,
                        last_seq: appended.seq,
                        appends: 0,
                        fenced: false,
                    });
                }
                Err(AppendError::Fenced { .. }) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(AppendError::Fenced { course, expected: 0 }.into())
    }

    /// Acquires `course`'s lease and takes the course over
    /// ([`Cluster::acquire`] then [`Cluster::take_over`]); a failed takeover
    /// releases the lease.
    pub async fn own(&self, course: u64) -> Result<CourseOwner, OwnError> {
        let lease = self.acquire(course).await?;
        let held = lease.clone();
        match self.take_over(lease).await {
            Ok(owner) => Ok(owner),
            Err(err) => {
                if let Err(release) = self.release(held).await {
                    tracing::warn!(course, error = %release, "could not release the lease after a failed takeover");
                }
                Err(err.into())
            }
        }
    }

    /// The low-level fenced append: stores `batch` on `course`'s subject only
    /// if the subject's last sequence is `expected` (0: the subject is
    /// empty). [`CourseOwner::append`] is the way owners write; this is for
    /// callers that manage the chain themselves (and for showing a would-be
    /// writer with a stale view is refused).
    pub async fn append_after(
        &self,
        course: u64,
        expected: u64,
        epoch: u64,
        msg_id: &str,
        batch: &CommitBatch,
    ) -> Result<Appended, AppendError> {
        let payload = batch.encode().map_err(|err| AppendError::Invalid { course, reason: err.to_string() })?;
        let mut enrollments: Vec<u64> = batch.events.iter().map(|e| e.key).collect();
        enrollments.sort_unstable();
        enrollments.dedup();
        self.publish_fenced(course, &course_subject(course), "commit", epoch, msg_id, expected, payload, &enrollments)
            .await
    }

    /// Publishes one message on a course subject, expecting `expected` as the
    /// subject's last sequence; retries ambiguous failures with the same
    /// message id until the append timeout.
    #[allow(clippy::too_many_arguments)]
    async fn publish_fenced(
        &self,
        course: u64,
        subject: &str,
        kind: &str,
        epoch: u64,
        msg_id: &str,
        expected: u64,
        payload: Vec<u8>,
        enrollments: &[u64],
    ) -> Result<Appended, AppendError> {
        let mut headers = HeaderMap::new();
        headers.insert(KIND, kind);
        headers.insert(NODE, self.config.node.as_str());
        headers.insert(EPOCH, epoch.to_string().as_str());
        headers.insert(PREV, expected.to_string().as_str());
        if !enrollments.is_empty() {
            let ids: Vec<String> = enrollments.iter().map(u64::to_string).collect();
            headers.insert(ENROLLMENTS, ids.join(",").as_str());
        }
        let payload = bytes::Bytes::from(payload);
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(25);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let message = PublishMessage::build()
                .payload(payload.clone())
                .headers(headers.clone())
                .message_id(msg_id)
                .expected_last_subject_sequence(expected);
            let outcome = match self.js.send_publish(subject.to_string(), message).await {
                Ok(ack) => ack.await,
                Err(err) => Err(err),
            };
            let err = match outcome {
                Ok(ack) => return Ok(Appended { seq: ack.sequence, attempts }),
                Err(err) => err,
            };
            match err.kind() {
                PublishErrorKind::WrongLastSequence if attempts == 1 => {
                    return Err(AppendError::Fenced { course, expected });
                }
                PublishErrorKind::WrongLastSequence => {
                    // An earlier attempt may have been stored before its ack
                    // was lost: then it is the message right after `expected`.
                    return match self.next_after(subject, expected).await {
                        Ok(Some((seq, id))) if id == msg_id => Ok(Appended { seq, attempts }),
                        Ok(_) => Err(AppendError::Fenced { course, expected }),
                        Err(source) => Err(AppendError::Unavailable { course, waited: started.elapsed(), source }),
                    };
                }
                PublishErrorKind::MaxPayloadExceeded => {
                    return Err(AppendError::Invalid { course, reason: err.to_string() });
                }
                _ if started.elapsed() >= self.config.append_timeout => {
                    return Err(AppendError::Unavailable { course, waited: started.elapsed(), source: err.into() });
                }
                _ => {
                    tracing::debug!(course, attempts, error = %err, "append not acknowledged, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// The sequence and message id of the first message on `subject` after
    /// `seq`, from the stream leader.
    async fn next_after(&self, subject: &str, seq: u64) -> Result<Option<(u64, String)>, async_nats::Error> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        match self.log.raw_message_builder().sequence(seq + 1).next_by_subject(subject.to_string()).send().await {
            Ok(message) => Ok(Some((message.sequence, header_str(&message.headers, MSG_ID).unwrap_or_default()))),
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

impl CourseOwner {
    /// The course owned.
    pub fn course(&self) -> u64 {
        self.lease.course
    }

    /// The lease held.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The sequence of this owner's takeover marker: replay the course's
    /// history up to it to rebuild the state taken over.
    pub fn takeover_seq(&self) -> u64 {
        self.takeover_seq
    }

    /// The last sequence this owner wrote on the course's subject.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// True once an append was fenced: another node owns the course.
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// Appends one commit batch to the course's log, fenced: it is stored
    /// only if nothing was written on the course's subject since this
    /// owner's last write. Returns the batch's stream sequence once the
    /// stream's replicas stored it. After [`AppendError::Fenced`] every
    /// later append is refused too.
    pub async fn append(&mut self, batch: &CommitBatch) -> Result<Appended, AppendError> {
        let course = self.lease.course;
        if self.fenced {
            return Err(AppendError::Fenced { course, expected: self.last_seq });
        }
        let msg_id = format!("c{course}-e{}-n{}", self.lease.epoch, self.appends + 1);
        match self.cluster.append_after(course, self.last_seq, self.lease.epoch, &msg_id, batch).await {
            Ok(appended) => {
                self.appends += 1;
                self.last_seq = appended.seq;
                Ok(appended)
            }
            Err(err) => {
                if let AppendError::Fenced { .. } = err {
                    tracing::warn!(course, epoch = self.lease.epoch, expected = self.last_seq, subject = %self.subject, "append fenced: the course was taken over");
                    self.fenced = true;
                }
                Err(err)
            }
        }
    }

    /// Renews the lease (see [`Cluster::renew`]).
    pub async fn renew(&mut self) -> Result<(), LeaseError> {
        self.cluster.renew(&mut self.lease).await
    }

    /// Gives the course up: releases the lease so another node can take it
    /// over at once.
    pub async fn release(self) -> Result<(), LeaseError> {
        self.cluster.release(self.lease).await
    }
}

pub(crate) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.as_str().to_string())
}

pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name).and_then(|v| v.as_str().parse().ok())
}
