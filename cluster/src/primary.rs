//! The service's log: one writer at a time, the *primary*, fenced on the
//! whole stream; every node follows the log from its start to rebuild its
//! local store.
//!
//! This is how `sugang serve --nats` uses the foundation: the primary holds
//! the lease `primary` in the lease bucket and writes its journal's commit
//! groups to the stream: a part of a group that holds one course's batches
//! only on that course's subject, `sugang.log.course.<id>` (so a course's
//! history reads on its own, [`Cluster::follow_course`]), the rest on
//! `sugang.log.commit`. Each message is published with
//! `Nats-Expected-Last-Sequence` (the stream's last sequence as this writer
//! knows it) and a `Nats-Msg-Id`; the parts of one group are sent one after
//! the other, each once the one before it is stored (and, before a
//! writer's first course part, a message saying course subjects follow,
//! which the releases before them refuse).
//! A node that takes the lease over first
//! writes a takeover marker on `sugang.log.primary` the same way, so once
//! it is stored every later append of an earlier primary is refused by the
//! server: a paused or partitioned primary can never commit again.
//!
//! Owns the primary lease's name, the commit and marker subjects, and the
//! [`LogWriter`]'s fence. Must not decode what a commit holds: the storage
//! crate's replicated journal does.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::layout::{Cluster, LOG_SUBJECTS, course_of_subject, course_subject};
use crate::lease::{AcquireError, Lease, LeaseInfo};
use crate::owner::{EPOCH, KIND, NODE, header_str, header_u64};
use crate::replay::ReplayError;

/// The lease that makes a node the primary (stored as the key `primary`).
pub(crate) const PRIMARY_LEASE: u64 = 0;
/// The subject of the primary's commit groups.
pub const COMMIT_SUBJECT: &str = "sugang.log.commit";
/// The subject of takeover markers.
pub const MARKER_SUBJECT: &str = "sugang.log.primary";
const MSG_ID: &str = "Nats-Msg-Id";
/// The kind of the message on the commit subject that says course subjects
/// follow (skipped by this release, refused by the ones before it).
const COURSE_SUBJECTS_KIND: &str = "course-subjects";
/// Header on every commit: the layout of its payload, [`COMMIT_FORMAT`].
const FORMAT: &str = "Sugang-Format";
/// The layout of the commits this release writes and reads (the storage
/// crate's replicated `WireGroup`, whose test pins its bytes): bumped with
/// it, so that a node of an earlier release stops at a later one's commit
/// ([`ReplayError::Malformed`]) instead of misreading it. A commit without
/// the header is of this layout: the releases before the header wrote it.
pub const COMMIT_FORMAT: u64 = 1;

/// The primary's writer of the log (see the module doc).
pub struct LogWriter {
    cluster: Cluster,
    /// The fencing epoch: the primary lease's acquiring revision.
    epoch: u64,
    /// The stream's last sequence as this writer knows it: the next append
    /// expects exactly this.
    last: u64,
    /// The marker's sequence.
    marker: u64,
    appends: u64,
    /// Why this writer appends no more, after a part left in doubt.
    doubt: Option<String>,
    /// Whether it has said, in the log, that it files commits under course
    /// subjects ([`LogWriter::announce_course_subjects`]).
    announced: bool,
    fenced: bool,
}

/// One message of an append ([`LogWriter::append_all`]): a commit group,
/// and the course whose history it is (`None`: several courses' batches,
/// or none's).
#[derive(Clone, Debug)]
pub struct LogPart {
    /// The course all its batches belong to, if one does.
    pub course: Option<u64>,
    /// The group, encoded by the storage crate.
    pub payload: Bytes,
}

/// What [`LogWriter::append_all`] stored.
#[derive(Debug)]
pub struct LogAppended {
    /// The positions of the parts stored, in order: always the first
    /// parts, and the stream holds them right after one another.
    pub positions: Vec<u64>,
    /// Why the parts after those were not stored (`None`: all were). After
    /// [`LogAppendError::Unavailable`] the next part may be stored anyway;
    /// after the others, none of the rest is.
    pub error: Option<LogAppendError>,
}

/// An append the log did not take.
#[derive(Debug, thiserror::Error)]
pub enum LogAppendError {
    /// Another writer appended after this one's last write: a newer primary
    /// took over. Nothing of this part, nor of any after it, is stored (the
    /// parts before it, [`LogAppended::positions`], are); stop writing.
    #[error("log append fenced: the stream moved past {expected} (another node is the primary)")]
    Fenced {
        /// The sequence this writer expected to be last.
        expected: u64,
    },
    /// No acknowledgement within the append timeout: the append may or may
    /// not be stored. A writer that met one appends no more: every later
    /// append gets this too, with nothing sent.
    #[error("log append not acknowledged after {waited:?}: {source}")]
    Unavailable {
        /// How long it kept trying.
        waited: Duration,
        /// The last error.
        source: async_nats::Error,
    },
    /// The message was refused for what it is (too large).
    #[error("log append refused: {0}")]
    Invalid(String),
}

/// One message of the log as a node follows it.
#[derive(Clone, Debug)]
pub struct LogMessage {
    /// Its stream sequence: the log position.
    pub position: u64,
    /// A commit group (`false`: a takeover marker, the announcement that
    /// course subjects follow, or a message another client published on the
    /// log's subjects; none holds a group).
    pub commit: bool,
    /// The course whose history it is: a commit on a course's subject.
    pub course: Option<u64>,
    /// The node that wrote it.
    pub node: String,
    /// The primary lease epoch it was written under.
    pub epoch: u64,
    /// What it holds (empty for a marker).
    pub payload: Bytes,
}

/// The whole log in order from a position, waiting at its end.
pub struct LogFollower {
    messages: pull::Ordered,
}

impl Cluster {
    /// Takes the primary lease if nobody holds a live one.
    pub async fn acquire_primary(&self) -> Result<Lease, AcquireError> {
        self.acquire(PRIMARY_LEASE).await
    }

    /// The live primary lease, if any: who is the primary, since when.
    pub async fn primary(&self) -> Result<Option<LeaseInfo>, async_nats::Error> {
        self.lease_of(PRIMARY_LEASE).await
    }

    /// Becomes the log's writer under `lease`: appends a takeover marker
    /// after the stream's last message, retrying while an earlier primary
    /// still slips appends in. Once this returns, every append of an earlier
    /// writer is refused; the caller applies the log up to
    /// [`LogWriter::marker`] before it writes.
    pub async fn take_over_log(&self, lease: &Lease) -> Result<LogWriter, LogAppendError> {
        let started = tokio::time::Instant::now();
        loop {
            // Read again until the append timeout: the stream may have no
            // leader for a few seconds (a NATS server was lost).
            let last = match self.log_last_seq().await {
                Ok(last) => last,
                Err(source) if started.elapsed() >= self.config.append_timeout => {
                    return Err(LogAppendError::Unavailable { waited: started.elapsed(), source });
                }
                Err(error) => {
                    tracing::debug!(%error, "reading the log's last position failed; trying again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let msg_id = format!("primary-{}-marker-{last}", lease.epoch());
            match self.publish_after(MARKER_SUBJECT, "marker", lease.epoch(), &msg_id, last, Bytes::new()).await {
                Ok(marker) => {
                    tracing::info!(node = %self.config.node, epoch = lease.epoch(), marker, "took over the log");
                    return Ok(LogWriter {
                        cluster: self.clone(),
                        epoch: lease.epoch(),
                        last: marker,
                        marker,
                        appends: 0,
                        doubt: None,
                        announced: false,
                        fenced: false,
                    });
                }
                Err(LogAppendError::Fenced { expected }) if started.elapsed() < self.config.append_timeout => {
                    tracing::info!(expected, "the previous primary appended meanwhile; marking again");
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// What tells this log from any other: its first message's id and
    /// time, which nothing rewrites. A stream deleted and created again,
    /// or another cluster's, has another. `None` while the log is empty or
    /// if its first message was removed.
    pub async fn log_identity(&self) -> Result<Option<String>, async_nats::Error> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        match self.log.get_raw_message(1).await {
            Ok(first) => {
                let id = header_str(&first.headers, MSG_ID).unwrap_or_default();
                Ok(Some(format!("{id}@{}", first.time.unix_timestamp_nanos())))
            }
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Follows the whole log from position `from` (1: all of it).
    pub async fn follow_log(&self, from: u64) -> Result<LogFollower, ReplayError> {
        let messages = self.ordered(LOG_SUBJECTS.to_string(), from.max(1)).await?;
        Ok(LogFollower { messages })
    }

    /// Follows one course's history from position `from`: the parts of
    /// the primary's commits that hold its batches only (its subject), in
    /// log order. A part of a commit shared with other courses is not in it.
    pub async fn follow_course(&self, course: u64, from: u64) -> Result<LogFollower, ReplayError> {
        let messages = self.ordered(course_subject(course), from.max(1)).await?;
        Ok(LogFollower { messages })
    }

    /// The headers of a message of the log.
    fn log_headers(&self, kind: &str, epoch: u64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(KIND, kind);
        headers.insert(NODE, self.config.node.as_str());
        headers.insert(EPOCH, epoch.to_string().as_str());
        if kind == "commit" {
            headers.insert(FORMAT, COMMIT_FORMAT.to_string().as_str());
        }
        headers
    }

    /// Publishes one message expecting `expected` as the stream's last
    /// sequence; retries ambiguous failures with the same message id until
    /// the append timeout.
    async fn publish_after(
        &self,
        subject: &str,
        kind: &str,
        epoch: u64,
        msg_id: &str,
        expected: u64,
        payload: Bytes,
    ) -> Result<u64, LogAppendError> {
        let headers = self.log_headers(kind, epoch);
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(25);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let message = PublishMessage::build()
                .payload(payload.clone())
                .headers(headers.clone())
                .message_id(msg_id)
                .expected_last_sequence(expected);
            let outcome = match self.js.send_publish(subject.to_string(), message).await {
                Ok(ack) => ack.await,
                Err(err) => Err(err),
            };
            let err = match outcome {
                Ok(ack) => return Ok(ack.sequence),
                Err(err) => err,
            };
            match err.kind() {
                PublishErrorKind::WrongLastSequence if attempts == 1 => {
                    return Err(LogAppendError::Fenced { expected });
                }
                PublishErrorKind::WrongLastSequence => {
                    // An earlier attempt may have been stored before its ack
                    // was lost: then it is the message right after `expected`.
                    return match self.log.get_raw_message(expected + 1).await {
                        Ok(stored) if header_str(&stored.headers, MSG_ID).as_deref() == Some(msg_id) => {
                            Ok(stored.sequence)
                        }
                        Ok(_) => Err(LogAppendError::Fenced { expected }),
                        Err(source) => {
                            Err(LogAppendError::Unavailable { waited: started.elapsed(), source: source.into() })
                        }
                    };
                }
                PublishErrorKind::MaxPayloadExceeded => return Err(LogAppendError::Invalid(err.to_string())),
                _ if started.elapsed() >= self.config.append_timeout => {
                    return Err(LogAppendError::Unavailable { waited: started.elapsed(), source: err.into() });
                }
                _ => {
                    tracing::debug!(attempts, error = %err, "log append not acknowledged, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }
}

impl LogWriter {
    /// Appends one commit group after this writer's last write, fenced, on
    /// the shared commit subject. Returns its position once the stream's
    /// replicas stored it. After [`LogAppendError::Fenced`] or
    /// [`LogAppendError::Unavailable`] every later append is refused too.
    pub async fn append(&mut self, payload: Vec<u8>) -> Result<u64, LogAppendError> {
        let appended = self.append_all(vec![LogPart { course: None, payload: payload.into() }]).await;
        match (appended.positions.first(), appended.error) {
            (_, Some(err)) => Err(err),
            (Some(&position), None) => Ok(position),
            (None, None) => unreachable!("append_all stores its part or says why not"),
        }
    }

    /// Appends `parts`, in order, right after this writer's last write,
    /// each on its course's subject (or the commit subject), one after the
    /// other, each fenced as a lone append is: it expects the stream's last
    /// sequence to be this writer's last write, and is sent once the one
    /// before it is acknowledged. After [`LogAppendError::Fenced`] every
    /// later append is refused too, and after
    /// [`LogAppendError::Unavailable`] as well (a part in doubt: its id must
    /// not be reused).
    ///
    /// Not pipelined, though one round trip for all would be cheaper: part
    /// `i` expecting "last write + i" is stored after another primary's
    /// marker whenever part `i - 1` is refused for that marker, which takes
    /// exactly the slot it expected (test
    /// `a_primarys_parts_are_stored_in_order_on_their_courses_subjects_and_fenced`);
    /// and `Nats-Expected-Last-Msg-Id`, which would chain them, is not kept
    /// alike on every replica by NATS 2.9 (empty after a restart past the
    /// duplicate window, not set by a catch-up), so a replica could refuse
    /// what the others store.
    pub async fn append_all(&mut self, parts: Vec<LogPart>) -> LogAppended {
        let mut appended = LogAppended { positions: Vec::with_capacity(parts.len()), error: None };
        if let Some(error) = self.refusal() {
            appended.error = Some(error);
            return appended;
        }
        if parts.iter().any(|part| part.course.is_some())
            && !self.announced
            && let Err(error) = self.announce_course_subjects().await
        {
            appended.error = Some(error);
            return appended;
        }
        for part in parts {
            let subject = part.course.map_or_else(|| COMMIT_SUBJECT.to_string(), course_subject);
            let msg_id = format!("primary-{}-{}", self.epoch, self.appends + 1);
            match self.cluster.publish_after(&subject, "commit", self.epoch, &msg_id, self.last, part.payload).await {
                Ok(position) => {
                    self.appends += 1;
                    self.last = position;
                    appended.positions.push(position);
                }
                Err(LogAppendError::Fenced { expected }) => {
                    self.fence();
                    appended.error = Some(LogAppendError::Fenced { expected });
                    break;
                }
                Err(LogAppendError::Unavailable { waited, source }) => {
                    appended.error = Some(self.in_doubt(waited, source));
                    break;
                }
                Err(err) => {
                    appended.error = Some(err);
                    break;
                }
            }
        }
        appended
    }

    /// Why this writer appends nothing more, if it does not.
    fn refusal(&self) -> Option<LogAppendError> {
        if self.fenced {
            return Some(LogAppendError::Fenced { expected: self.last });
        }
        self.doubt.as_ref().map(|reason| LogAppendError::Unavailable {
            waited: Duration::ZERO,
            source: format!("an earlier append is in doubt ({reason}): this writer appends no more").into(),
        })
    }

    /// A part may or may not be stored: this writer appends no more (a
    /// later part would reuse its id, or expect a position it may not have).
    fn in_doubt(&mut self, waited: Duration, source: async_nats::Error) -> LogAppendError {
        tracing::error!(epoch = self.epoch, last = self.last, ?waited, error = %source, "a log append is in doubt: this writer appends no more");
        self.doubt = Some(source.to_string());
        LogAppendError::Unavailable { waited, source }
    }

    /// Before this writer's first part on a course's subject: a message
    /// on the commit subject of a kind the releases before course subjects
    /// refuse as malformed (they stop there), where they would otherwise
    /// skip every course's commits as another client's messages and
    /// diverge in silence. This release skips it.
    async fn announce_course_subjects(&mut self) -> Result<(), LogAppendError> {
        let msg_id = format!("primary-{}-course-subjects", self.epoch);
        let outcome = self
            .cluster
            .publish_after(COMMIT_SUBJECT, COURSE_SUBJECTS_KIND, self.epoch, &msg_id, self.last, Bytes::new())
            .await;
        match outcome {
            Ok(position) => {
                self.last = position;
                self.announced = true;
                Ok(())
            }
            Err(LogAppendError::Fenced { expected }) => {
                self.fence();
                Err(LogAppendError::Fenced { expected })
            }
            Err(LogAppendError::Unavailable { waited, source }) => Err(self.in_doubt(waited, source)),
            Err(err) => Err(err),
        }
    }

    /// Another writer appended after this one: it never writes again.
    fn fence(&mut self) {
        tracing::error!(epoch = self.epoch, expected = self.last, "log append fenced: another node is the primary");
        self.fenced = true;
    }

    /// The takeover marker's position: apply the log up to it before writing.
    pub fn marker(&self) -> u64 {
        self.marker
    }

    /// The fencing epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl LogFollower {
    /// The next message of the log, waiting for one at its end; `None` if
    /// the connection closed.
    pub async fn next(&mut self) -> Option<Result<LogMessage, ReplayError>> {
        let message = match self.messages.next().await? {
            Ok(message) => message,
            Err(err) => return Some(Err(ReplayError::Nats(err.into()))),
        };
        let info = match message.info() {
            Ok(info) => info,
            Err(err) => return Some(Err(ReplayError::Nats(err))),
        };
        let position = info.stream_sequence;
        let subject = message.subject.to_string();
        let headers = message.headers.clone().unwrap_or_default();
        let kind = header_str(&headers, KIND).unwrap_or_default();
        let node = header_str(&headers, NODE).unwrap_or_default();
        let format = header_str(&headers, FORMAT);
        let course = course_of_subject(&subject);
        let commit = match (subject.as_str(), kind.as_str(), format) {
            (COMMIT_SUBJECT, "commit", None) => true,
            // A course's part always carries its format (the foundation's
            // per-course API writes commits of another shape there, with
            // none: skipped below, like any other client's message).
            (_, "commit", Some(format)) if subject == COMMIT_SUBJECT || course.is_some() => {
                if format.parse() != Ok(COMMIT_FORMAT) {
                    return Some(Err(ReplayError::Malformed {
                        seq: position,
                        subject,
                        reason: format!(
                            "a commit in log format {format:?}, this release reads format {COMMIT_FORMAT} \
                             (written by a node of a later release?)"
                        ),
                    }));
                }
                true
            }
            (MARKER_SUBJECT, "marker", _) | (COMMIT_SUBJECT, COURSE_SUBJECTS_KIND, _) => false,
            // Another client published on the log's subjects (`nats pub`,
            // the foundation's per-course API on the same stream): it holds
            // no group, and every node skips it alike, so seqs stay the
            // same everywhere. It fenced the primary of the moment (which
            // fail-stops); the next one's marker goes after it. Stopping
            // here instead would stop every node at it for good.
            (other, _, _) if other != COMMIT_SUBJECT && other != MARKER_SUBJECT => {
                tracing::warn!(
                    position,
                    subject = other,
                    node = %node,
                    "a message on the log's subjects that is not the primary's: skipped"
                );
                false
            }
            _ => {
                return Some(Err(ReplayError::Malformed {
                    seq: position,
                    subject,
                    reason: format!("not a commit or marker of the primary's log (kind {kind:?})"),
                }));
            }
        };
        let epoch = header_u64(&headers, EPOCH).unwrap_or(0);
        let course = course.filter(|_| commit);
        Some(Ok(LogMessage { position, commit, course, node, epoch, payload: message.payload.clone() }))
    }
}
