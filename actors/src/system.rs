//! The running system and its facade: building the supervision tree, start-up
//! recovery, the commands the HTTP front calls, and the queries it reads.
//!
//! Owns the root supervisor (courses, enrollments, payment), id allocation
//! (course ids, saga reservation keys; enrollment ids are assigned densely
//! at completion by the course actors, see `course::actor`),
//! and the mapping of every internal failure onto the few outcomes a client
//! can act on ([`CommandError`]). Queries read sled directly (never live
//! actors), so listing a million enrollments wakes no actor.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde::Serialize;
use sugang_storage::{Batch, Durability, Journal, JournalOptions, OpenError, StorageError, Store, StoreOptions};
use tokio::task::JoinHandle;

use crate::bus::{Bus, BusConfig, Projection, SubscriberStatus};
use crate::course::actor::{CourseCtx, CourseFailure, CourseKind, CourseMsg, EnrollmentIds};
use crate::course::{CourseCommand, CoursePatch, CourseRejection};
use crate::delivery::{DELIVERIES, DELIVERIES_BY_STUDENT, Delivery, DeliveryProjection};
use crate::enrollment::actor::{EnrollRequest, EnrollmentCtx, EnrollmentKind, EnrollmentMsg, SagaFailure};
use crate::enrollment::{EnrollStatus, Enrollment};
use crate::entity::{AskError, Entities, Redelivery, SupervisionConfig, SupervisorSnapshot};
use crate::event::CourseDetails;
use crate::faults::{Faults, now_ms};
use crate::gate::actor::GateHandle;
use crate::model::{CourseId, EnrollmentId, TeacherName};
use crate::mypage::{
    INSTRUCTOR_VIEWS, INSTRUCTOR_VIEWS_BY_TEACHER, InstructorView, MyPageProjection, SCHEDULES, STUDENT_VIEWS,
    STUDENT_VIEWS_BY_STUDENT, Schedule, StudentView,
};
use crate::notifier::{NOTIFICATIONS, NOTIFICATIONS_BY_RECIPIENT, Notification, NotifierProjection, RecipientRole};
use crate::payment::Payment;
use crate::payment::actor::{BreakerGate, PaymentActor, PaymentArgs, PaymentConfig, PaymentMsg, PaymentSnapshot};
use crate::payment::gateway::{GatewayFaults, PaymentGateway, SimulatedGateway};
use crate::supervision::{self, Decision, RestartHistory, RestartPolicy};
use crate::tables::{
    COUNTERS, COURSES, Counter, CourseRecord, ENROLLMENTS, ENROLLMENTS_BY_COURSE, ENROLLMENTS_BY_STUDENT, PAYMENTS,
    PENDING, REFUNDS,
};
use tokio_util::sync::CancellationToken;

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
            SagaFailure::PaymentDeclined { reason } => CommandError::PaymentDeclined(reason),
            SagaFailure::PaymentUnavailable { reason, retry_after } => CommandError::Unavailable {
                reason: format!("payment unavailable: {reason}"),
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            },
            SagaFailure::Unavailable(e) => e.into(),
            SagaFailure::Storage(e) => CommandError::Internal(e),
        }
    }
}

impl From<CourseFailure> for CommandError {
    fn from(f: CourseFailure) -> Self {
        match f {
            CourseFailure::Rejected(r) => r.into(),
            CourseFailure::Storage(e) => CommandError::Internal(e),
        }
    }
}

/// A page request: 0-based `number`, `size` items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub number: usize,
    pub size: usize,
}

/// One page of a listing and the total it is a page of.
#[derive(Clone, Debug, PartialEq)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub total: usize,
}

fn paginate<T>(
    items: impl Iterator<Item = Result<T, StorageError>>,
    page: PageRequest,
) -> Result<Paged<T>, StorageError> {
    let skip = page.number.saturating_mul(page.size);
    let mut out = Vec::with_capacity(page.size.min(1000));
    let mut total = 0;
    for item in items {
        let item = item?;
        if total >= skip && out.len() < page.size {
            out.push(item);
        }
        total += 1;
    }
    Ok(Paged { items: out, total })
}

/// Filters of `GET /classes`.
#[derive(Clone, Debug, Default)]
pub struct EnrollmentFilter {
    pub student: Option<String>,
    pub course_id: Option<u64>,
    pub status: Option<EnrollStatus>,
}

/// The supervision tree, for `/admin/actors`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeSnapshot {
    pub root: &'static str,
    pub children: Vec<TreeNode>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeNode {
    pub name: &'static str,
    pub alive: bool,
    pub restarts: u64,
    /// While the child is held down by its restart policy: until when, in
    /// unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_down_until: Option<u64>,
    /// While the child is held down: how long until it is started again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<SupervisorSnapshot>,
}

impl TreeNode {
    /// A child with no restarts, not held down, not a supervisor.
    fn plain(name: &'static str, alive: bool) -> Self {
        TreeNode { name, alive, restarts: 0, held_down_until: None, retry_after_ms: None, supervisor: None }
    }
}

const RESERVATION_BLOCK: u64 = 1024;
/// The counter that holds the highest reservation key durably reserved.
const RESERVATIONS_COUNTER: &str = "reservations";

/// Where reservation keys start: above every enrollment id there will ever
/// be, so a saga's key and an enrollment id never name the same thing in the
/// tables and registries both use (seats, owed refunds, enrollment actors).
/// Below 2^53, so it survives a JSON number.
const RESERVATION_BASE: u64 = 1 << 48;

/// Hands out saga reservation keys in order, never twice, even across
/// restarts: the gateway's ledger knows charges by them and outlives a
/// refused enrollment. Reserved durably in blocks, so a restart may skip
/// some: they are never shown to a client (the public enrollment id is
/// assigned densely at completion, see `course::actor`).
struct Reservations {
    next: u64,
    /// The highest key durably reserved.
    limit: u64,
}

struct Inner {
    store: Store,
    journal: Journal,
    courses: Entities<CourseKind>,
    classes: Entities<EnrollmentKind>,
    payment: PaymentHandle,
    gateway: SimulatedGateway,
    faults: Arc<Faults>,
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
    config: Config,
    journal_task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// The running sugang: cheap to clone, shared by every HTTP handler.
#[derive(Clone)]
pub struct Sugang {
    inner: Arc<Inner>,
}

impl Sugang {
    /// Opens the data directory, starts the journal and the supervision tree,
    /// and resumes or compensates every saga a previous run left unfinished.
    pub async fn start(config: Config) -> Result<Sugang, StartError> {
        let store = Store::open(
            &config.data_dir,
            StoreOptions { durability: config.durability, cache_capacity: config.cache_capacity },
        )?;
        let (journal, journal_task) =
            Journal::start(&store, JournalOptions::default()).map_err(|e| StartError::Spawn(e.to_string()))?;
        let faults = Arc::new(Faults::default());
        let gateway = SimulatedGateway::with_faults(config.gateway_faults);
        let gate = Arc::new(BreakerGate::new());
        let payment_args = {
            let (store, journal, config, gate) = (store.clone(), journal.clone(), config.payment.clone(), gate.clone());
            let gateway: Arc<dyn PaymentGateway> = Arc::new(gateway.clone());
            let faults = faults.clone();
            move || PaymentArgs {
                gate: gate.clone(),
                store: store.clone(),
                journal: journal.clone(),
                gateway: gateway.clone(),
                config: config.clone(),
                faults: faults.clone(),
            }
        };
        let spawn_err = |e: ractor::SpawnErr| StartError::Spawn(e.to_string());
        let (root, _) = Actor::spawn(None, RootSupervisor, ()).await.map_err(spawn_err)?;
        let (payment_ref, _) =
            Actor::spawn_linked(None, PaymentActor, payment_args(), root.get_cell()).await.map_err(spawn_err)?;
        let payment = PaymentHandle::new(payment_ref);
        root.send_message(RootMsg::Adopt(RootChild::Payment {
            handle: payment.clone(),
            args: Box::new(payment_args),
            policy: config.restart,
            history: RestartHistory::default(),
        }))
        .map_err(|e| StartError::Spawn(e.to_string()))?;
        let highest_enrollment = store.scan(&ENROLLMENTS).keys().next_back().transpose()?.unwrap_or(0);
        let course_ctx = Arc::new(CourseCtx {
            store: store.clone(),
            journal: journal.clone(),
            faults: faults.clone(),
            enrollment_ids: Arc::new(EnrollmentIds::after(highest_enrollment)),
        });
        let (courses, _) = Entities::<CourseKind>::start(course_ctx, config.courses.clone(), root.get_cell())
            .await
            .map_err(spawn_err)?;
        let enrollment_ctx = Arc::new(EnrollmentCtx {
            store: store.clone(),
            courses: courses.clone(),
            payment: payment.clone(),
            faults: faults.clone(),
            ask_timeout: config.ask_timeout,
            payment_ask_timeout: config.payment.timeout + Duration::from_secs(5),
        });
        let (classes, _) =
            Entities::<EnrollmentKind>::start(enrollment_ctx, config.enrollments.clone(), root.get_cell())
                .await
                .map_err(spawn_err)?;

        let stop = CancellationToken::new();
        let projections: Vec<Arc<dyn Projection>> = vec![
            Arc::new(DeliveryProjection),
            Arc::new(MyPageProjection),
            Arc::new(NotifierProjection::new(&config.data_dir)),
        ];
        let bus = Bus::start(
            store.clone(),
            journal.clone(),
            projections,
            config.bus.clone(),
            config.restart,
            faults.clone(),
            root.get_cell(),
            stop.clone(),
        )
        .await
        .map_err(spawn_err)?;

        let waiting_room = GateHandle::start(store.clone(), journal.clone(), config.restart, root.get_cell())
            .await
            .map_err(StartError::Spawn)?;

        let next_course_id = store.scan(&COURSES).keys().next_back().transpose()?.unwrap_or(0) + 1;
        let high_water = [
            store.get(&COUNTERS, &RESERVATIONS_COUNTER.to_owned())?.map(|c| c.0),
            store.scan(&PENDING).keys().next_back().transpose()?,
            store.scan(&REFUNDS).keys().next_back().transpose()?,
        ]
        .into_iter()
        .flatten()
        .fold(RESERVATION_BASE - 1, u64::max);

        let system = Sugang {
            inner: Arc::new(Inner {
                store,
                journal,
                courses,
                classes,
                payment: payment.clone(),
                gateway,
                faults,
                root,
                gate,
                waiting_room,
                next_course_id: tokio::sync::Mutex::new(next_course_id),
                reservations: tokio::sync::Mutex::new(Reservations { next: high_water + 1, limit: high_water }),
                bus,
                stop,
                config,
                journal_task: std::sync::Mutex::new(Some(journal_task)),
            }),
        };
        system.recover().await?;
        Ok(system)
    }

    /// Rule 4: every saga that was in flight is compensated (its seat given
    /// back, whatever may have been charged voided); owed refunds resume in
    /// the payment actor on its own.
    async fn recover(&self) -> Result<(), StartError> {
        let pending: Vec<u64> = self.inner.store.scan(&PENDING).keys().collect::<Result<_, _>>()?;
        if pending.is_empty() {
            return Ok(());
        }
        tracing::warn!(count = pending.len(), "compensating sagas interrupted by the last stop");
        for id in pending {
            // Activation finds the pending seat and compensates it.
            let resumed = self
                .inner
                .classes
                .ask(
                    id,
                    |reply| EnrollmentMsg::Recover { reply: Some(reply) },
                    self.inner.config.ask_timeout,
                    Redelivery::Idempotent,
                )
                .await;
            match resumed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(enrollment_id = id, error = %e, "compensating an interrupted saga failed; it retries on its own")
                }
                Err(e) => {
                    tracing::warn!(enrollment_id = id, error = %e, "activating an interrupted saga failed; the next start retries")
                }
            }
        }
        Ok(())
    }

    /// Stops the tree (entity actors first, then their supervisors and the
    /// payment actor), then the journal, whose last act is a flush. Every
    /// acknowledged write is on disk before this returns, and the data
    /// directory is free for the next start.
    pub async fn shutdown(self) {
        let wait = Some(Duration::from_secs(10));
        self.inner.stop.cancel();
        for supervisor in [
            self.inner.courses.supervisor_cell(),
            self.inner.classes.supervisor_cell(),
            self.inner.bus.supervisor_cell(),
        ] {
            supervisor.stop_children_and_wait(Some("shutdown".into()), wait).await;
        }
        if let Some(gate) = self.inner.waiting_room.supervisor_cell() {
            gate.stop_children_and_wait(Some("shutdown".into()), wait).await;
        }
        self.inner.root.stop_children_and_wait(Some("shutdown".into()), wait).await;
        let _ = self.inner.root.stop_and_wait(Some("shutdown".into()), wait).await;
        let task = self.inner.journal_task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let closing = self.inner.store.closing();
        drop(self);
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(10), &mut task).await.is_err()
        {
            tracing::error!("the journal did not stop: a handle is still held somewhere");
            task.abort();
        }
        // Background tasks drop their store handles as they wind down after
        // the cancel: return once the last is gone, so the directory can be
        // opened again at once (its lock released) by whoever comes next.
        if !closing.closed(Duration::from_secs(10)).await {
            tracing::error!("the store is still open after shutdown: a handle is held somewhere");
        }
    }

    /// The waiting room (its facade methods are in `gate::facade`).
    pub(crate) fn waiting_room(&self) -> &GateHandle {
        &self.inner.waiting_room
    }

    /// How long to wait for an actor's answer.
    pub(crate) fn ask_timeout(&self) -> Duration {
        self.inner.config.ask_timeout
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
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

    // ---- commands -------------------------------------------------------

    async fn ask_course(
        &self,
        id: CourseId,
        command: CourseCommand,
    ) -> Result<crate::course::actor::CourseReply, CommandError> {
        let reply = self
            .inner
            .courses
            .ask(
                id.get(),
                |reply| CourseMsg::Command { command: command.clone(), also: None, reply },
                self.inner.config.ask_timeout,
                Redelivery::Idempotent,
            )
            .await?;
        Ok(reply?)
    }

    fn course_exists(&self, id: CourseId) -> Result<(), CommandError> {
        match self.inner.store.get(&COURSES, &id.get()).map_err(internal)? {
            Some(record) if !record.deleted => Ok(()),
            _ => Err(CommandError::NotFound { what: "course", id: id.get() }),
        }
    }

    /// Registers a course for `teacher`.
    #[tracing::instrument(skip_all, fields(teacher = %teacher))]
    pub async fn register_course(
        &self,
        teacher: TeacherName,
        details: CourseDetails,
    ) -> Result<Done<CourseRecord>, CommandError> {
        // Ids are dense: the id is taken only if the course is registered, or
        // may have been (a timeout, a storage fault): a registration refused
        // before the course actor took it (load shed) leaves it for the next.
        let mut next = self.inner.next_course_id.lock().await;
        let id = CourseId::assigned(*next);
        let asked = self.ask_course(id, CourseCommand::Register { id, teacher, details }).await;
        if !matches!(asked, Err(CommandError::Overloaded { .. })) {
            *next += 1;
        }
        drop(next);
        let reply = asked?;
        let record =
            self.course(id).map_err(internal)?.ok_or(CommandError::Internal("registered course missing".into()))?;
        tracing::info!(course_id = id.get(), "course registered");
        Ok(Done { value: record, seq: reply.seq })
    }

    /// Changes a course's details.
    #[tracing::instrument(skip_all, fields(course_id = id.get()))]
    pub async fn modify_course(&self, id: CourseId, patch: CoursePatch) -> Result<Done<CourseRecord>, CommandError> {
        self.course_exists(id)?;
        let reply = self.ask_course(id, CourseCommand::Modify(patch)).await?;
        let record =
            self.course(id).map_err(internal)?.ok_or(CommandError::NotFound { what: "course", id: id.get() })?;
        Ok(Done { value: record, seq: reply.seq })
    }

    /// Deletes a course without enrollments.
    #[tracing::instrument(skip_all, fields(course_id = id.get()))]
    pub async fn delete_course(&self, id: CourseId) -> Result<Done<()>, CommandError> {
        self.course_exists(id)?;
        let reply = self.ask_course(id, CourseCommand::Delete).await?;
        Ok(Done { value: (), seq: reply.seq })
    }

    /// The key of a new saga (not its enrollment id: see [`Reservations`]).
    async fn next_reservation(&self) -> Result<EnrollmentId, CommandError> {
        let mut keys = self.inner.reservations.lock().await;
        if keys.next > keys.limit {
            let limit = keys.next + RESERVATION_BLOCK - 1;
            let mut batch = Batch::new();
            batch.put(&COUNTERS, &RESERVATIONS_COUNTER.to_owned(), &Counter(limit)).map_err(internal)?;
            self.inner.journal.commit(batch).await.map_err(internal)?;
            keys.limit = limit;
        }
        let key = keys.next;
        keys.next += 1;
        Ok(EnrollmentId::assigned(key))
    }

    /// Enrolls a student and charges the fee: answers once the enrollment is
    /// completed and durable, or refused with nothing held and nothing charged.
    #[tracing::instrument(skip_all, fields(course_id = request.course_id.get(), student = %request.student))]
    pub async fn enroll(&self, request: EnrollRequest) -> Result<Done<Enrollment>, CommandError> {
        self.course_exists(request.course_id)?;
        // While the breaker is open the charge would be refused anyway:
        // refuse before a seat is reserved and released for nothing.
        if let Some(retry_after) = self.inner.payment.held_down_for() {
            metrics::counter!("sugang_payment_rejected_total", "reason" => "held_down").increment(1);
            return Err(CommandError::Unavailable {
                reason: "payment unavailable: the payment actor is held down after repeated failures".into(),
                retry_after,
            });
        }
        if let Some(retry_after) = self.inner.gate.refusing_for() {
            metrics::counter!("sugang_payment_rejected_total", "reason" => "breaker_open").increment(1);
            return Err(CommandError::Unavailable {
                reason: "payment unavailable: the payment gateway is failing; the circuit breaker is open".into(),
                retry_after,
            });
        }
        let reservation = self.next_reservation().await?;
        let timeout = self.inner.config.payment.timeout + self.inner.config.ask_timeout * 3;
        let reply = self
            .inner
            .classes
            .ask(
                reservation.get(),
                |reply| EnrollmentMsg::Enroll { request: request.clone(), reply },
                timeout,
                Redelivery::AtMostOnce,
            )
            .await?;
        let (enrollment, seq) = reply?;
        Ok(Done { value: enrollment, seq })
    }

    /// Cancels an enrollment: the seat is released and the fee refunded
    /// (retried until the gateway confirms). Repeats change nothing.
    #[tracing::instrument(skip_all, fields(enrollment_id = id.get()))]
    pub async fn cancel(&self, id: EnrollmentId) -> Result<Done<Enrollment>, CommandError> {
        if !self.inner.store.contains(&ENROLLMENTS, &id.get()).map_err(internal)? {
            return Err(CommandError::NotFound { what: "enrollment", id: id.get() });
        }
        let timeout = self.inner.config.payment.timeout + self.inner.config.ask_timeout * 3;
        let reply = self
            .inner
            .classes
            .ask(id.get(), |reply| EnrollmentMsg::Cancel { reply }, timeout, Redelivery::Idempotent)
            .await?;
        let (enrollment, seq) = reply?;
        Ok(Done { value: enrollment, seq })
    }

    // ---- queries (straight from storage) --------------------------------

    /// A course, unless unknown or deleted.
    pub fn course(&self, id: CourseId) -> Result<Option<CourseRecord>, StorageError> {
        Ok(self.inner.store.get(&COURSES, &id.get())?.filter(|c| !c.deleted))
    }

    /// Courses, optionally of one teacher, in id order.
    pub fn courses(&self, teacher: Option<&str>, page: PageRequest) -> Result<Paged<CourseRecord>, StorageError> {
        let items = self.inner.store.scan(&COURSES).filter_map(|item| match item {
            Ok((_, c)) if c.deleted || teacher.is_some_and(|t| c.teacher.as_str() != t) => None,
            Ok((_, c)) => Some(Ok(c)),
            Err(e) => Some(Err(e)),
        });
        paginate(items, page)
    }

    /// A completed or canceled enrollment.
    pub fn enrollment(&self, id: EnrollmentId) -> Result<Option<Enrollment>, StorageError> {
        self.inner.store.get(&ENROLLMENTS, &id.get())
    }

    /// Enrollments matching `filter`, in id order.
    pub fn enrollments(&self, filter: &EnrollmentFilter, page: PageRequest) -> Result<Paged<Enrollment>, StorageError> {
        let store = &self.inner.store;
        let status = filter.status;
        let keep = move |e: &Enrollment| status.is_none_or(|s| e.status == s);
        let by_ids = |ids: Box<dyn Iterator<Item = Result<u64, StorageError>>>| {
            ids.filter_map(move |id| match id.and_then(|id| store.get(&ENROLLMENTS, &id)) {
                Ok(Some(e)) => Some(Ok(e)),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            })
        };
        let student_filter = filter.student.clone();
        let course_filter = filter.course_id;
        let matches = move |e: &Enrollment| {
            keep(e)
                && student_filter.as_deref().is_none_or(|s| e.student.as_str() == s)
                && course_filter.is_none_or(|c| e.course_id.get() == c)
        };
        let items: Box<dyn Iterator<Item = Result<Enrollment, StorageError>>> =
            match (&filter.student, filter.course_id) {
                (Some(student), _) => Box::new(by_ids(Box::new(
                    store.scan_prefix(&ENROLLMENTS_BY_STUDENT, &student.clone()).keys().map(|k| k.map(|(_, id)| id)),
                ))),
                (None, Some(course)) => Box::new(by_ids(Box::new(
                    store.scan_prefix(&ENROLLMENTS_BY_COURSE, &course).keys().map(|k| k.map(|(_, id)| id)),
                ))),
                (None, None) => Box::new(store.scan(&ENROLLMENTS).map(|item| item.map(|(_, e)| e))),
            };
        // Every source is in id order already (the table by its key, the
        // indexes by (student|course, id)), so a page streams: nothing but
        // the page is held in memory, however many enrollments there are.
        paginate(items.filter(|e| e.as_ref().map_or(true, &matches)), page)
    }

    /// A payment (its id is its enrollment's).
    pub fn payment(&self, id: EnrollmentId) -> Result<Option<Payment>, StorageError> {
        self.inner.store.get(&PAYMENTS, &id.get())
    }

    /// Payments, optionally of one enrollment, in id order.
    pub fn payments(&self, apply_id: Option<u64>, page: PageRequest) -> Result<Paged<Payment>, StorageError> {
        match apply_id {
            Some(id) => paginate(self.inner.store.get(&PAYMENTS, &id)?.into_iter().map(Ok), page),
            None => paginate(self.inner.store.scan(&PAYMENTS).map(|item| item.map(|(_, p)| p)), page),
        }
    }

    // ---- read models (kept by the subscribers) ---------------------------

    /// Waits (bounded) until read model `subscriber` has applied every event
    /// up to `seq`. False when it did not catch up in time.
    pub async fn wait_for(&self, subscriber: &str, seq: u64) -> bool {
        self.inner.bus.wait_for(subscriber, seq).await
    }

    /// A shipment (its id is its enrollment's).
    pub fn delivery(&self, id: u64) -> Result<Option<Delivery>, StorageError> {
        self.inner.store.get(&DELIVERIES, &id)
    }

    /// Shipments, by enrollment and/or student.
    pub fn deliveries(
        &self,
        apply_id: Option<u64>,
        student: Option<&str>,
        page: PageRequest,
    ) -> Result<Paged<Delivery>, StorageError> {
        let store = &self.inner.store;
        let keep = |d: &Delivery| student.is_none_or(|s| d.student.as_str() == s);
        match (apply_id, student) {
            (Some(id), _) => paginate(store.get(&DELIVERIES, &id)?.into_iter().filter(keep).map(Ok), page),
            (None, Some(student)) => paginate(
                lookup(
                    store,
                    &DELIVERIES,
                    store.scan_prefix(&DELIVERIES_BY_STUDENT, &student.to_owned()).keys().map(|k| k.map(|(_, id)| id)),
                ),
                page,
            ),
            (None, None) => paginate(store.scan(&DELIVERIES).map(|i| i.map(|(_, d)| d)), page),
        }
    }

    /// Students' views, optionally of one student.
    pub fn student_views(&self, student: Option<&str>, page: PageRequest) -> Result<Paged<StudentView>, StorageError> {
        let store = &self.inner.store;
        match student {
            Some(student) => paginate(
                lookup(
                    store,
                    &STUDENT_VIEWS,
                    store
                        .scan_prefix(&STUDENT_VIEWS_BY_STUDENT, &student.to_owned())
                        .keys()
                        .map(|k| k.map(|(_, id)| id)),
                ),
                page,
            ),
            None => paginate(store.scan(&STUDENT_VIEWS).map(|i| i.map(|(_, v)| v)), page),
        }
    }

    /// Instructors' views, optionally of one teacher.
    pub fn instructor_views(
        &self,
        teacher: Option<&str>,
        page: PageRequest,
    ) -> Result<Paged<InstructorView>, StorageError> {
        let store = &self.inner.store;
        match teacher {
            Some(teacher) => paginate(
                lookup(
                    store,
                    &INSTRUCTOR_VIEWS,
                    store
                        .scan_prefix(&INSTRUCTOR_VIEWS_BY_TEACHER, &teacher.to_owned())
                        .keys()
                        .map(|k| k.map(|(_, id)| id)),
                ),
                page,
            ),
            None => paginate(store.scan(&INSTRUCTOR_VIEWS).map(|i| i.map(|(_, v)| v)), page),
        }
    }

    /// Course schedules.
    pub fn schedules(&self, page: PageRequest) -> Result<Paged<Schedule>, StorageError> {
        paginate(self.inner.store.scan(&SCHEDULES).map(|i| i.map(|(_, v)| v)), page)
    }

    /// Notifications, optionally of one recipient name and/or role.
    pub fn notifications(
        &self,
        recipient: Option<&str>,
        role: Option<RecipientRole>,
        page: PageRequest,
    ) -> Result<Paged<Notification>, StorageError> {
        let store = &self.inner.store;
        let of_role = |n: &Result<Notification, StorageError>| match (n, role) {
            (Ok(n), Some(role)) => n.recipient_role == role,
            _ => true,
        };
        match recipient {
            Some(recipient) => paginate(
                lookup(
                    store,
                    &NOTIFICATIONS,
                    store
                        .scan_prefix(&NOTIFICATIONS_BY_RECIPIENT, &recipient.to_owned())
                        .keys()
                        .map(|k| k.map(|(_, id)| id)),
                )
                .filter(of_role),
                page,
            ),
            None => paginate(store.scan(&NOTIFICATIONS).map(|i| i.map(|(_, v)| v)).filter(of_role), page),
        }
    }

    /// A course's schedule (its id is the course's).
    pub fn schedule(&self, id: u64) -> Result<Option<Schedule>, StorageError> {
        self.inner.store.get(&SCHEDULES, &id)
    }

    /// An instructor's view of a course (its id is the course's).
    pub fn instructor_view(&self, id: u64) -> Result<Option<InstructorView>, StorageError> {
        self.inner.store.get(&INSTRUCTOR_VIEWS, &id)
    }

    /// A student's view of an enrollment (its id is the enrollment's).
    pub fn student_view(&self, id: u64) -> Result<Option<StudentView>, StorageError> {
        self.inner.store.get(&STUDENT_VIEWS, &id)
    }

    /// A notification.
    pub fn notification(&self, id: u64) -> Result<Option<Notification>, StorageError> {
        self.inner.store.get(&NOTIFICATIONS, &id)
    }

    /// Stops or starts a subscriber (`delivery`, `mypage`, `notifier`).
    /// False for an unknown name.
    pub async fn set_subscriber_down(&self, name: &str, down: bool) -> Result<bool, CommandError> {
        self.inner
            .bus
            .set_down(name.to_owned(), down)
            .await
            .map_err(|reason| CommandError::Unavailable { reason, retry_after: Duration::from_secs(1) })
    }

    /// The subscribers, their offsets and lag.
    pub async fn subscribers(&self) -> Vec<SubscriberStatus> {
        self.inner.bus.status().await
    }

    /// The event seq the log has reached.
    pub fn last_seq(&self) -> u64 {
        self.inner.store.events().last_seq()
    }

    // ---- operations -----------------------------------------------------

    /// The breaker and bulkhead.
    pub async fn payment_snapshot(&self) -> Result<PaymentSnapshot, CommandError> {
        let payment = self.inner.payment.get();
        ractor::call_t!(payment, |reply| PaymentMsg::Snapshot { reply }, 2000).map_err(|e| CommandError::Unavailable {
            reason: format!("payment actor: {e}"),
            retry_after: Duration::from_secs(1),
        })
    }

    /// The supervision tree.
    pub fn tree(&self) -> TreeSnapshot {
        let running = |cell: ActorCell| cell.get_status() == ractor::ActorStatus::Running;
        let journal_alive =
            self.inner.journal_task.lock().map(|t| t.as_ref().is_some_and(|t| !t.is_finished())).unwrap_or(false);
        TreeSnapshot {
            root: "root",
            children: vec![
                TreeNode::plain("journal", journal_alive),
                TreeNode {
                    supervisor: Some(self.inner.courses.registry().snapshot()),
                    ..TreeNode::plain("courses", running(self.inner.courses.supervisor_cell()))
                },
                TreeNode {
                    supervisor: Some(self.inner.classes.registry().snapshot()),
                    ..TreeNode::plain("classes", running(self.inner.classes.supervisor_cell()))
                },
                TreeNode::plain("bus", running(self.inner.bus.supervisor_cell())),
                TreeNode {
                    restarts: self.inner.payment.restarts(),
                    held_down_until: self.inner.payment.held_down_until_ms(),
                    retry_after_ms: self.inner.payment.held_down_for().map(|d| d.as_millis() as u64),
                    ..TreeNode::plain("payment", running(self.inner.payment.get().get_cell()))
                },
                TreeNode {
                    restarts: self.inner.waiting_room.restarts(),
                    ..TreeNode::plain("gate", self.inner.waiting_room.actor().is_ok())
                },
            ],
        }
    }
}

/// The records of `table` whose keys an index yields, in index order.
fn lookup<'a, V: sugang_storage::Record + 'a>(
    store: &'a Store,
    table: &'a sugang_storage::Table<u64, V>,
    ids: impl Iterator<Item = Result<u64, StorageError>> + 'a,
) -> impl Iterator<Item = Result<V, StorageError>> + 'a {
    ids.filter_map(move |id| match id.and_then(|id| store.get(table, &id)) {
        Ok(Some(v)) => Some(Ok(v)),
        Ok(None) => None,
        Err(e) => Some(Err(e)),
    })
}

fn internal(e: impl std::fmt::Display) -> CommandError {
    tracing::error!(error = %e, "internal error");
    CommandError::Internal(e.to_string())
}

// ---- the root supervisor ------------------------------------------------

/// The payment actor's current incarnation and its supervision state: the
/// root supervisor swaps the actor on a restart and marks it held down, and
/// every caller reads both per call.
#[derive(Clone)]
pub(crate) struct PaymentHandle(Arc<PaymentSlot>);

struct PaymentSlot {
    actor: std::sync::RwLock<ActorRef<PaymentMsg>>,
    /// While held down: until when (and the same in unix ms, for the admin
    /// tree). Callers are refused at once until then.
    held_until: std::sync::Mutex<Option<(tokio::time::Instant, u64)>>,
    /// Restarts so far (the admin tree's `restarts`).
    restarts: AtomicU64,
}

impl PaymentHandle {
    fn new(actor: ActorRef<PaymentMsg>) -> Self {
        PaymentHandle(Arc::new(PaymentSlot {
            actor: std::sync::RwLock::new(actor),
            held_until: std::sync::Mutex::new(None),
            restarts: AtomicU64::new(0),
        }))
    }

    pub(crate) fn get(&self) -> ActorRef<PaymentMsg> {
        self.0.actor.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A new incarnation is running: callers use it, and it is not held down.
    fn set(&self, actor: ActorRef<PaymentMsg>) {
        *self.0.actor.write().unwrap_or_else(|e| e.into_inner()) = actor;
        *self.0.held_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn hold_down(&self, until: tokio::time::Instant, retry_after: Duration) {
        let until_ms = now_ms() + retry_after.as_millis() as u64;
        *self.0.held_until.lock().unwrap_or_else(|e| e.into_inner()) = Some((until, until_ms));
    }

    /// How long the payment actor is still held down, if it is: callers
    /// answer "unavailable, retry after" instead of asking a stopped actor.
    pub(crate) fn held_down_for(&self) -> Option<Duration> {
        let held = *self.0.held_until.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        // Past its end but not restarted yet: the restart is imminent.
        held.map(|(until, _)| until.saturating_duration_since(now).max(Duration::from_millis(1)))
    }

    fn held_down_until_ms(&self) -> Option<u64> {
        self.0.held_until.lock().unwrap_or_else(|e| e.into_inner()).map(|(_, ms)| ms)
    }

    fn restarts(&self) -> u64 {
        self.0.restarts.load(Ordering::Relaxed)
    }
}

pub(crate) enum RootChild {
    /// The payment actor, how to start it again, and its restart policy.
    Payment {
        handle: PaymentHandle,
        args: Box<dyn Fn() -> PaymentArgs + Send + Sync>,
        policy: RestartPolicy,
        history: RestartHistory,
    },
}

pub(crate) enum RootMsg {
    Adopt(RootChild),
    /// The payment actor's hold-down is over: start it again.
    ReleasePayment,
}

/// The root of the tree. Restarts the payment actor under the one restart
/// policy ([`crate::supervision`]); holds it down when it exceeds its
/// intensity (enrollments are refused with a retry-after meanwhile). A
/// failure that reaches the root — the payment actor escalated after its
/// hold-downs, or a child supervisor failed (which is how the entity and
/// bus supervisors escalate) — fail-stops the process: one ERROR line with
/// the reason, then exit code 70, so the service manager restarts sugang
/// from disk (every acknowledged write is durable) and the crash loop is
/// visible from outside instead of hidden inside.
struct RootSupervisor;

#[derive(Default)]
struct RootState {
    payment: Option<RootChild>,
}

/// The root's last word: the process stops.
fn fail_stop(reason: &str) -> ! {
    tracing::error!(reason, decision = "fail-stop", "the root supervisor stops the process");
    std::process::exit(70)
}

impl RootSupervisor {
    /// Starts the payment actor again (after a failure or its hold-down):
    /// a restart, counted.
    async fn start_payment(myself: &ActorRef<RootMsg>, child: &RootChild) {
        let RootChild::Payment { handle, args, .. } = child;
        handle.0.restarts.fetch_add(1, Ordering::Relaxed);
        supervision::count_restart("payment");
        match Actor::spawn_linked(None, PaymentActor, args(), myself.get_cell()).await {
            Ok((actor, _)) => handle.set(actor),
            Err(e) => fail_stop(&format!("the payment actor could not be started again: {e}")),
        }
    }
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<RootMsg>, _args: ()) -> Result<RootState, ActorProcessingErr> {
        Ok(RootState::default())
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        message: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMsg::Adopt(child @ RootChild::Payment { .. }) => state.payment = Some(child),
            RootMsg::ReleasePayment => {
                if let Some(child @ RootChild::Payment { handle, .. }) = &state.payment
                    && handle.held_down_for().is_some()
                {
                    tracing::warn!(kind = "payment", "payment actor's hold-down is over; starting it again");
                    Self::start_payment(&myself, child).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else { return Ok(()) };
        match &mut state.payment {
            Some(RootChild::Payment { handle, policy, history, .. }) if handle.get().get_id() == cell.get_id() => {
                let error = format!("{error}; owed refunds resume from storage on restart");
                let decision = history.on_failure(policy, tokio::time::Instant::now());
                supervision::report("payment", None, &error, history, decision);
                match decision {
                    Decision::Restart => {
                        if let Some(child) = &state.payment {
                            Self::start_payment(&myself, child).await;
                        }
                    }
                    Decision::HoldDown { until, retry_after } => {
                        handle.hold_down(until, retry_after);
                        myself.send_after(retry_after, || RootMsg::ReleasePayment);
                    }
                    Decision::Escalate => {
                        fail_stop(&format!("the payment actor kept failing after its hold-downs: {error}"))
                    }
                }
                Ok(())
            }
            _ => fail_stop(&format!("supervisor {} failed: {error}", cell.get_id())),
        }
    }
}
