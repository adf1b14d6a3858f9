//! Forwarding commands to a course's owner over NATS request-reply.
//!
//! Owns the command subjects (`sugang.cmd.<node>.course.<course>`) and the
//! reply protocol: a reply with the header `Sugang-Status: not-owner` means
//! the addressed node does not own the course (any more); any other reply is
//! the owner's answer, opaque here. A node serves all its courses with one
//! subscription ([`Cluster::serve_commands`]), and answers for each request
//! whether it owns the course, so two nodes never both answer one command.
//! [`Cluster::forward`] finds the owner from the lease bucket and sends the
//! request: typed errors tell the caller to retry after a lease lookup
//! ([`ForwardError::retry_after_lookup`]). Must not decide who owns a course:
//! the lease does.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::layout::{Cluster, command_subject, node_commands};

/// Reply header carrying a refusal.
const STATUS: &str = "Sugang-Status";
/// The refusal of a node that does not own the course.
const NOT_OWNER: &str = "not-owner";

/// Why a forwarded command got no answer from the owner.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No node holds the course's lease: someone must acquire it first.
    #[error("course {course} has no owner")]
    NoOwner {
        /// The course.
        course: u64,
    },
    /// The node the lease named answered that it does not own the course
    /// (it just lost or gave up the lease).
    #[error("node {node} does not own course {course}")]
    NotOwner {
        /// The course.
        course: u64,
        /// The node addressed.
        node: String,
    },
    /// Nobody listens on the owner's command subject: the owner is gone but
    /// its lease has not expired yet.
    #[error("owner {node} of course {course} is unreachable")]
    Unreachable {
        /// The course.
        course: u64,
        /// The node addressed.
        node: String,
    },
    /// The owner did not answer within the forward timeout. The command may
    /// or may not have been carried out.
    #[error("owner {node} of course {course} did not answer within {waited:?}")]
    TimedOut {
        /// The course.
        course: u64,
        /// The node addressed.
        node: String,
        /// The timeout.
        waited: Duration,
    },
    /// NATS failed.
    #[error("forwarding a command of course {course}: {source}")]
    Nats {
        /// The course.
        course: u64,
        /// The client's error.
        source: async_nats::Error,
    },
}

impl ForwardError {
    /// True when the owner may have changed: look the lease up and retry
    /// (after a pause while there is no owner). A timeout is not: the command
    /// may have been carried out.
    pub fn retry_after_lookup(&self) -> bool {
        matches!(self, ForwardError::NoOwner { .. } | ForwardError::NotOwner { .. } | ForwardError::Unreachable { .. })
    }
}

/// A command forwarded to this node.
pub struct CommandRequest {
    /// The course it is for.
    course: u64,
    /// The command, opaque here.
    payload: Bytes,
    /// Where the answer goes.
    reply: Option<async_nats::Subject>,
    /// The client that answers.
    client: async_nats::Client,
}

impl CommandRequest {
    /// The course the command is for.
    pub fn course(&self) -> u64 {
        self.course
    }

    /// The command.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Answers the command.
    pub async fn respond(self, answer: Bytes) -> Result<(), async_nats::Error> {
        if let Some(reply) = self.reply {
            self.client.publish(reply, answer).await?;
        }
        Ok(())
    }

    /// Answers that this node does not own the course: the caller looks the
    /// lease up again.
    pub async fn not_owner(self) -> Result<(), async_nats::Error> {
        if let Some(reply) = self.reply {
            let mut headers = HeaderMap::new();
            headers.insert(STATUS, NOT_OWNER);
            self.client.publish_with_headers(reply, headers, Bytes::new()).await?;
        }
        Ok(())
    }
}

/// The commands forwarded to this node, for every course (see
/// [`Cluster::serve_commands`]).
pub struct Commands {
    /// The subscription on `sugang.cmd.<node>.course.*`.
    subscription: async_nats::Subscriber,
    /// The client that answers.
    client: async_nats::Client,
}

impl Commands {
    /// The next command; `None` once unsubscribed or disconnected for good.
    /// Subjects that name no course are skipped.
    pub async fn next(&mut self) -> Option<CommandRequest> {
        loop {
            let message = self.subscription.next().await?;
            let Some(course) = message.subject.rsplit('.').next().and_then(|c| c.parse().ok()) else {
                tracing::warn!(subject = %message.subject, "command on a subject without a course, ignored");
                continue;
            };
            return Some(CommandRequest {
                course,
                payload: message.payload,
                reply: message.reply,
                client: self.client.clone(),
            });
        }
    }

    /// Stops receiving commands.
    pub async fn stop(mut self) -> Result<(), async_nats::Error> {
        self.subscription.unsubscribe().await?;
        Ok(())
    }
}

impl Cluster {
    /// Subscribes to the commands forwarded to this node, for every course.
    /// The server answers each with [`CommandRequest::respond`], or with
    /// [`CommandRequest::not_owner`] for a course it does not own. Flushed:
    /// once this returns, forwards reach it.
    pub async fn serve_commands(&self) -> Result<Commands, async_nats::Error> {
        let subscription = self.client.subscribe(node_commands(&self.config.node)).await?;
        self.client.flush().await?;
        Ok(Commands { subscription, client: self.client.clone() })
    }

    /// Sends `command` to `course`'s owner, found from the lease bucket, and
    /// waits for its answer: two round trips (the lease read, the request).
    /// A caller that caches the owner uses [`Cluster::forward_to`].
    pub async fn forward(&self, course: u64, command: Bytes) -> Result<Bytes, ForwardError> {
        let owner = match self.lease_of(course).await {
            Ok(Some(lease)) => lease.record.node,
            Ok(None) => return Err(ForwardError::NoOwner { course }),
            Err(source) => return Err(ForwardError::Nats { course, source }),
        };
        self.forward_to(&owner, course, command).await
    }

    /// Sends `command` for `course` to `node`: one round trip.
    pub async fn forward_to(&self, node: &str, course: u64, command: Bytes) -> Result<Bytes, ForwardError> {
        use async_nats::RequestErrorKind;
        let waited = self.config.forward_timeout;
        let request = async_nats::Request::new().payload(command).timeout(Some(waited));
        match self.client.send_request(command_subject(node, course), request).await {
            Ok(reply) => {
                let refused = reply.headers.as_ref().and_then(|h| h.get(STATUS)).map(|v| v.as_str() == NOT_OWNER);
                if refused == Some(true) {
                    Err(ForwardError::NotOwner { course, node: node.to_string() })
                } else {
                    Ok(reply.payload)
                }
            }
            Err(err) => match err.kind() {
                RequestErrorKind::NoResponders => Err(ForwardError::Unreachable { course, node: node.to_string() }),
                RequestErrorKind::TimedOut => Err(ForwardError::TimedOut { course, node: node.to_string(), waited }),
                _ => Err(ForwardError::Nats { course, source: err.into() }),
            },
        }
    }
}
