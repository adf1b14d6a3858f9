//! The running system and its facade ([`Sugang`]): what it is configured
//! with, the errors a client can act on, and the handle every HTTP handler
//! shares.
//!
//! The facade's jobs live beside what they touch:
//! - `start`: building the supervision tree, start-up recovery, shutdown;
//! - `root`: the root supervisor and the payment actor's handle;
//! - `commands`: the commands the HTTP front calls (id allocation included:
//!   course ids, saga reservation keys; enrollment ids are assigned densely
//!   at completion by the course actors, see `course::actor`);
//! - `ops`: the operations views (supervision tree, breaker, subscribers);
//! - the queries next to the tables they read: `course::queries`,
//!   `enrollment::queries`, `payment::queries`, `delivery`, `mypage`,
//!   `notifier::queries`. Queries read storage directly (never live actors),
//!   so listing a million enrollments wakes no actor.
//!
//! Owns the mapping of every internal failure onto the few outcomes a client
//! can act on ([`CommandError`]).

mod commands;
pub(crate) mod layout;
mod ops;
mod root;
mod start;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use sugang_storage::{Durability, Journal, OpenError, StorageError, Store, StoreOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, BusConfig};
use crate::course::CourseRejection;
use crate::course::actor::{CourseFailure, CourseKind};
use crate::enrollment::actor::{EnrollmentKind, SagaFailure};
use crate::entity::{AskError, Entities, SupervisionConfig};
use crate::faults::Faults;
use crate::gate::actor::GateHandle;
use crate::payment::actor::{BreakerGate, PaymentConfig};
use crate::payment::gateway::{GatewayFaults, SimulatedGateway};
use crate::supervision::RestartPolicy;

pub(crate) use commands::{RESERVATION_BASE, Reservations};
pub use ops::{TreeNode, TreeSnapshot};
pub(crate) use root::{PaymentHandle, RootMsg};

/// Everything a running system is configured with.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// sled's page cache, bytes.
    pub cache_capacity: u64,
    pub courses: SupervisionConfig,
    pub enrollments: SupervisionConfig,
    /// The restart policy of the root's payment actor and of the bus's
    /// subscriber workers (entities have theirs in `courses`/`enrollments`).
    pub restart: RestartPolicy,
    pub payment: PaymentConfig,
    /// The simulated gateway's behaviour at start.
    pub gateway_faults: GatewayFaults,
    /// How long to wait for a course actor's answer.
    pub ask_timeout: Duration,
    /// Subscribers: workers, retention, read-your-writes bound.
    pub bus: BusConfig,
    /// How many seat requests may wait per course for payments in progress
    /// (truthful "full"); more are shed with 503.
    pub park_limit: usize,
}

impl Config {
    /// The defaults, over `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            durability: Durability::Fsync,
            cache_capacity: StoreOptions::default().cache_capacity,
            courses: SupervisionConfig::default(),
            enrollments: SupervisionConfig::default(),
            restart: RestartPolicy::default(),
            payment: PaymentConfig::default(),
            gateway_faults: GatewayFaults::default(),
            ask_timeout: Duration::from_secs(5),
            bus: BusConfig::default(),
            park_limit: 1024,
        }
    }
}

/// The system could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("reading the store: {0}")]
    Storage(#[from] StorageError),
    #[error("starting the actors: {0}")]
    Spawn(String),
    /// The store is a cluster node's copy of the replicated log: written
    /// here on its own, it would diverge from the log (seqs, records) and
    /// be taken back into the cluster as if it were a faithful copy.
    #[error(
        "it holds a cluster node's copy of the log (applied through position {position}): start it as that node \
         with --nats, or use another directory"
    )]
    ClusterStore { position: u64 },
}

/// A command's result and the event seq it reached (`X-Sugang-Seq`).
#[derive(Clone, Debug, PartialEq)]
pub struct Done<T> {
    pub value: T,
    pub seq: u64,
}

/// What a refused or failed command means to a client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// 404.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: u64 },
    /// 409: the state of the course forbids it (full, already enrolled,
    /// stale fee, capacity below studentCount, active enrollments).
    #[error("{0}")]
    Conflict(String),
    /// 402.
    #[error("payment declined: {0}")]
    PaymentDeclined(String),
    /// 503 with Retry-After: payment unavailable, a participant held down or
    /// timed out.
    #[error("unavailable: {reason}")]
    Unavailable { reason: String, retry_after: Duration },
    /// 503 with Retry-After: load shed.
    #[error("overloaded: {reason}")]
    Overloaded { reason: String, retry_after: Duration },
    /// 500: storage failed; logged with its cause.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<AskError> for CommandError {
    fn from(e: AskError) -> Self {
        match e {
            AskError::Overloaded { .. } => {
                CommandError::Overloaded { reason: e.to_string(), retry_after: Duration::from_secs(1) }
            }
            AskError::HeldDown { retry_after, .. } => CommandError::Unavailable { reason: e.to_string(), retry_after },
            AskError::Unavailable { .. } => {
                CommandError::Unavailable { reason: e.to_string(), retry_after: Duration::from_secs(1) }
            }
        }
    }
}

impl From<CourseRejection> for CommandError {
    fn from(r: CourseRejection) -> Self {
        match r {
            CourseRejection::NotFound(id) => CommandError::NotFound { what: "course", id: id.get() },
            CourseRejection::NoSeat { enrollment, .. } => {
                CommandError::NotFound { what: "enrollment", id: enrollment.get() }
            }
            other => CommandError::Conflict(other.to_string()),
        }
    }
}

impl From<SagaFailure> for CommandError {
    fn from(f: SagaFailure) -> Self {
        match f {
            SagaFailure::Course(r) => r.into(),
            SagaFailure::Enrollment(crate::enrollment::EnrollmentRejection::NotFound(id)) => {
                CommandError::NotFound { what: "enrollment", id: id.get() }
            }
            SagaFailure::Enrollment(r) => CommandError::Conflict(r.to_string()),
            SagaFailure::Payment(r) => CommandError::Conflict(r.to_string()),
            SagaFailure::PaymentDeclined { reason } => CommandError::PaymentDeclined(reason),
            SagaFailure::PaymentUnavailable { reason, retry_after } => CommandError::Unavailable {
                reason: format!("payment unavailable: {reason}"),
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            },
            SagaFailure::Unavailable(e) => e.into(),
            SagaFailure::Storage(e) => CommandError::Internal(e),
            SagaFailure::Stopped(e) => stopped(e),
            SagaFailure::Waitlisted { entry_id, .. } => {
                CommandError::Internal(format!("an enrollment joined waitlist entry {entry_id} unasked"))
            }
        }
    }
}

impl From<CourseFailure> for CommandError {
    fn from(f: CourseFailure) -> Self {
        match f {
            CourseFailure::Rejected(r) => r.into(),
            CourseFailure::Transaction(r) => CommandError::Conflict(r.to_string()),
            CourseFailure::Storage(e) => CommandError::Internal(e),
            CourseFailure::Stopped(e) => stopped(e),
            CourseFailure::Busy(e) => e.into(),
        }
    }
}

struct Inner {
    store: Store,
    journal: Journal,
    gateway: SimulatedGateway,
    faults: Arc<Faults>,
    config: Config,
    journal_task: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// The actors, once started: at once in embedded mode; in a cluster,
    /// only on the node that is the primary (a replica serves reads from
    /// its copy of the log and has none).
    live: std::sync::OnceLock<Live>,
    /// A cluster node's subscribers (every node, primary or not), once
    /// [`Sugang::share_subscribers`] started them: each worker runs while
    /// this node holds its unit.
    units: std::sync::OnceLock<Units>,
    /// Held while the actors start, so they start once.
    starting: tokio::sync::Mutex<()>,
    /// Cancelled by [`Sugang::shutdown`] once the actors have stopped: the
    /// cluster node's own tasks (following the log, the lease) stop then,
    /// after the last write of the actors is applied.
    stopping: CancellationToken,
}

/// The supervision tree and what the commands share.
struct Live {
    courses: Entities<CourseKind>,
    classes: Entities<EnrollmentKind>,
    payment: PaymentHandle,
    root: ActorRef<RootMsg>,
    /// The breaker's published state: enrollments fail fast while it is open.
    gate: Arc<BreakerGate>,
    /// The waiting room (the gate actor under its supervisor).
    waiting_room: GateHandle,
    /// The next course id; held while a registration is asked, so a refused
    /// one takes no id.
    next_course_id: tokio::sync::Mutex<u64>,
    reservations: tokio::sync::Mutex<Reservations>,
    bus: Bus,
    /// Stops the bus's publisher and retention tasks.
    stop: CancellationToken,
}

/// A cluster node's bus, under a root of its own (a replica has no other).
struct Units {
    bus: Bus,
    root: ActorRef<RootMsg>,
    /// Stops the bus's publisher (and retention, on the primary).
    stop: CancellationToken,
}

/// A [`Sugang`] that may have stopped (see [`Sugang::downgrade`]).
#[derive(Clone)]
pub struct WeakSugang(std::sync::Weak<Inner>);

impl WeakSugang {
    /// The system, unless it has been shut down and dropped.
    pub fn upgrade(&self) -> Option<Sugang> {
        self.0.upgrade().map(|inner| Sugang { inner })
    }
}

/// The running sugang: cheap to clone, shared by every HTTP handler.
#[derive(Clone)]
pub struct Sugang {
    inner: Arc<Inner>,
}

impl Sugang {
    /// The actors, or why there are none: this node is a cluster replica
    /// (commands go to the primary).
    fn live(&self) -> Result<&Live, CommandError> {
        self.inner.live.get().ok_or_else(|| CommandError::Unavailable {
            reason: "this node is a replica: commands are served by the cluster's primary".into(),
            retry_after: Duration::from_secs(1),
        })
    }

    /// Cancelled once [`Sugang::shutdown`] has stopped the actors: what a
    /// cluster node's own tasks wait on to stop and let the store close.
    pub fn stopping(&self) -> CancellationToken {
        self.inner.stopping.clone()
    }

    /// A handle that does not keep the system alive (nor its store open).
    pub fn downgrade(&self) -> WeakSugang {
        WeakSugang(Arc::downgrade(&self.inner))
    }

    /// Whether this node runs the actors (always in embedded mode; the
    /// primary in a cluster).
    pub fn is_live(&self) -> bool {
        self.inner.live.get().is_some()
    }

    /// The bus: a cluster node's (with the units it holds), or the
    /// embedded service's; `None` on a replica that runs no subscribers.
    fn bus(&self) -> Option<&Bus> {
        match self.inner.units.get() {
            Some(units) => Some(&units.bus),
            None => self.inner.live.get().map(|live| &live.bus),
        }
    }

    /// The waiting room (its facade methods are in `gate::facade`); `None`
    /// on a cluster replica.
    pub(crate) fn waiting_room(&self) -> Option<&GateHandle> {
        self.inner.live.get().map(|live| &live.waiting_room)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The journal, for the crate's tests to change the store under a
    /// running system.
    #[cfg(test)]
    pub(crate) fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    /// Writes a consistent copy of the running store into `to`: exactly the
    /// acknowledged batches (the journal takes the snapshot between groups).
    pub async fn backup(&self, to: &std::path::Path) -> Result<sugang_storage::Verified, sugang_storage::BackupError> {
        self.inner.journal.backup(&self.inner.store, to).await
    }

    /// The journal's injected disk faults (tests and demos).
    pub fn disk_faults(&self) -> &Arc<sugang_storage::DiskFaults> {
        self.inner.journal.faults()
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.inner.faults
    }

    pub fn gateway(&self) -> &SimulatedGateway {
        &self.inner.gateway
    }

    pub fn set_gateway_faults(&self, faults: GatewayFaults) {
        tracing::warn!(?faults, "payment gateway faults set");
        metrics::counter!("sugang_faults_injected_total", "fault" => "payment_gateway").increment(1);
        self.inner.gateway.set_faults(faults);
    }
}

/// A command whose write the store refused without storing it (it takes no
/// more writes: a storage fault before, or a cluster node fenced): this
/// node is going down and the command did not complete; a saga step it had
/// begun (a seat held, a fee charged) is undone by the recovery of the node
/// that takes over, or of this one's restart. Another node can take it.
fn stopped(reason: String) -> CommandError {
    tracing::warn!(%reason, "a command refused: the store takes no more writes");
    CommandError::Unavailable {
        reason: format!(
            "this node takes no more writes ({reason}): the command did not complete, and whatever it began is \
             undone by the node that takes over"
        ),
        retry_after: Duration::from_secs(1),
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> CommandError {
    tracing::error!(error = %e, "internal error");
    CommandError::Internal(e.to_string())
}
