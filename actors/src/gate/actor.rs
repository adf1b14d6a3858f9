//! The gate actor and its supervisor: the one writer of the waiting room's
//! records (`gate`, `gate_tickets`).
//!
//! The actor keeps the queue in memory (rebuilt from the stored tickets at
//! every start, so a restart keeps every place) and changes it only with a
//! journal batch: a ticket taken, the early tickets placed by the shuffle,
//! admissions, new settings. It pipelines like the course actor: a batch is
//! handed to the journal in order and the actor goes on; every reply waits
//! until everything submitted before it is durable. A failed batch poisons
//! the actor, and its supervisor restarts it from disk under the one restart
//! policy ([`crate::supervision`]).
//!
//! A ticker message every [`TICK`] drives the opening's shuffle and the
//! admissions ([`super::Ticker`]): smooth at any rate, whatever the queue's
//! length, and the rate is read at every tick, so it changes live.
//!
//! Admission tokens are checked without the actor ([`GateShared`]): the key
//! and whether the gate is on are shared, read-only, with the facade.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use sugang_storage::{Batch, EncodeError, Journal, Store};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{
    AdmissionKey, GATE, GATE_KEY, GateRecord, GateRejection, GateSettings, GateStatus, Queue, TICKETS, Ticker,
    TicketView, new_key, shuffle,
};
use crate::faults::now_ms;
use crate::model::StudentName;
use crate::supervision::{self, Decision, RestartHistory, RestartPolicy};

/// How often the ticker runs: admissions leave in batches of a hundredth
/// of a second's worth.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// How far back `admittedPerSecond` looks.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// What the facade and the edge read without asking the actor.
pub(crate) struct GateShared {
    /// Whether admissions are required (the stored setting, as last written).
    pub(crate) enabled: AtomicBool,
    /// Signs and checks admission tokens: drawn when the gate is created,
    /// and again each time it is turned on (see [`GateState::set`]); stored.
    pub(crate) key: RwLock<AdmissionKey>,
    /// How far the queue has moved, published once durable: ticket streams
    /// wait on it instead of asking the actor.
    pub(crate) progress: watch::Sender<Progress>,
}

impl GateShared {
    /// The key admission tokens are signed and checked with now.
    pub(crate) fn admission_key(&self) -> std::sync::RwLockReadGuard<'_, AdmissionKey> {
        self.key.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The queue's movement, for ticket streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The highest place admitted.
    pub admitted_through: u64,
    /// Bumped each time early tickets are placed by a shuffle.
    pub shuffles: u64,
    /// Bumped when the settings change.
    pub settings: u64,
    /// The admission rate set (for ETAs computed from the movement).
    pub admit_per_second: u32,
}

pub(crate) enum GateMsg {
    /// Take (or find again) the student's ticket: `true` if new.
    Take {
        student: StudentName,
        reply: RpcReplyPort<Result<(TicketView, bool), GateFailure>>,
    },
    Get {
        id: u64,
        reply: RpcReplyPort<Result<Option<TicketView>, GateFailure>>,
    },
    Status {
        reply: RpcReplyPort<Result<GateStatus, GateFailure>>,
    },
    Set {
        settings: GateSettings,
        reply: RpcReplyPort<Result<GateStatus, GateFailure>>,
    },
    /// Change the settings as they are when the message is handled (a
    /// field left out of an operator's change keeps its latest value).
    Update {
        change: Box<dyn FnOnce(GateSettings) -> GateSettings + Send>,
        reply: RpcReplyPort<Result<GateStatus, GateFailure>>,
    },
    Tick,
    /// A batch failed: the in-memory queue is ahead of the disk.
    Poisoned(String),
}

#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum GateFailure {
    #[error(transparent)]
    Rejected(#[from] GateRejection),
    #[error("storage: {0}")]
    Storage(String),
}

impl From<EncodeError> for GateFailure {
    fn from(e: EncodeError) -> Self {
        GateFailure::Storage(e.to_string())
    }
}

/// What the gate actor starts from.
#[derive(Clone)]
pub(crate) struct GateArgs {
    pub(crate) store: Store,
    pub(crate) journal: Journal,
    pub(crate) shared: Arc<GateShared>,
}

pub(crate) struct GateActor;

pub(crate) struct GateState {
    record: GateRecord,
    queue: Queue,
    ticker: Ticker,
    journal: Journal,
    shared: Arc<GateShared>,
    /// Batches submitted by this incarnation.
    submitted: u64,
    /// Batches durable: replies wait until it reaches what was submitted
    /// before them.
    durable: Arc<watch::Sender<u64>>,
    /// Admissions of the last seconds (when, how many), for the live rate.
    recent: VecDeque<(Instant, u64)>,
}

/// Loads the gate's record, or stores a new one (with a fresh key) if this
/// store has none yet.
pub(crate) async fn load_or_create(store: &Store, journal: &Journal) -> Result<GateRecord, String> {
    if let Some(record) = store.get(&GATE, &GATE_KEY.to_owned()).map_err(|e| e.to_string())? {
        return Ok(record);
    }
    let key = new_key().map_err(|_| "the operating system's random source failed".to_owned())?;
    let record = GateRecord { settings: GateSettings::default(), key };
    let mut batch = Batch::new();
    batch.put(&GATE, &GATE_KEY.to_owned(), &record).map_err(|e| e.to_string())?;
    journal.commit(batch).await.map_err(|e| e.to_string())?;
    Ok(record)
}

impl Actor for GateActor {
    type Msg = GateMsg;
    type State = GateState;
    type Arguments = GateArgs;

    async fn pre_start(&self, myself: ActorRef<GateMsg>, args: GateArgs) -> Result<GateState, ActorProcessingErr> {
        let record = load_or_create(&args.store, &args.journal).await?;
        let tickets = args.store.scan(&TICKETS).map(|item| item.map(|(_, t)| t)).collect::<Result<Vec<_>, _>>()?;
        let queue = Queue::from_tickets(tickets);
        args.shared.enabled.store(record.settings.enabled, Ordering::SeqCst);
        args.shared.progress.send_modify(|p| {
            p.admitted_through = queue.admitted_through();
            p.shuffles += 1;
            p.settings += 1;
            p.admit_per_second = record.settings.admit_per_second;
        });
        tracing::info!(
            tickets = queue.admitted_total() + queue.waiting_count(),
            waiting = queue.waiting_count(),
            "gate started"
        );
        myself.send_interval(TICK, || GateMsg::Tick);
        Ok(GateState {
            record,
            queue,
            ticker: Ticker::new(Instant::now()),
            journal: args.journal,
            shared: args.shared,
            submitted: 0,
            durable: Arc::new(watch::Sender::new(0)),
            recent: VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<GateMsg>,
        message: GateMsg,
        state: &mut GateState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GateMsg::Take { student, reply } => state.take(&myself, student, reply).await,
            GateMsg::Get { id, reply } => {
                let now = now_ms();
                let view = state.queue.get(id).map(|t| state.view(t, now));
                state.answer(reply, view);
                Ok(())
            }
            GateMsg::Status { reply } => {
                let status = state.status();
                state.answer(reply, status);
                Ok(())
            }
            GateMsg::Set { settings, reply } => state.set(&myself, settings, reply).await,
            GateMsg::Update { change, reply } => {
                let settings = change(state.record.settings.clone());
                state.set(&myself, settings, reply).await
            }
            GateMsg::Tick => state.tick(&myself).await,
            GateMsg::Poisoned(reason) => Err(format!("a gate batch failed: {reason}").into()),
        }
    }
}

impl GateState {
    fn view(&self, ticket: &super::Ticket, now_ms: u64) -> TicketView {
        self.queue.view(ticket, now_ms, self.record.settings.admit_per_second, &self.shared.admission_key())
    }

    /// Replies with `value` once every batch submitted so far is durable.
    fn answer<T: Send + 'static>(&self, reply: RpcReplyPort<Result<T, GateFailure>>, value: T) {
        let target = self.submitted;
        let mut durable = self.durable.subscribe();
        if *durable.borrow() >= target {
            let _ = reply.send(Ok(value));
            return;
        }
        tokio::spawn(async move {
            let answer = match durable.wait_for(|d| *d >= target).await {
                Ok(_) => Ok(value),
                Err(_) => Err(GateFailure::Storage("the gate restarted before its write was durable".into())),
            };
            let _ = reply.send(answer);
        });
    }

    /// Hands `batch` to the journal; once durable, marks it so and runs
    /// `then` (publishing what it made visible). A failure poisons the actor.
    async fn persist(
        &mut self,
        myself: &ActorRef<GateMsg>,
        batch: Batch,
        then: impl FnOnce() + Send + 'static,
    ) -> Result<(), ActorProcessingErr> {
        let pending = self.journal.submit(batch).await?;
        self.submitted += 1;
        let (n, durable, myself) = (self.submitted, self.durable.clone(), myself.clone());
        tokio::spawn(async move {
            match pending.durable().await {
                Ok(_) => {
                    durable.send_if_modified(|d| {
                        let moved = n > *d;
                        *d = (*d).max(n);
                        moved
                    });
                    then();
                }
                Err(e) => {
                    tracing::error!(error = %e, "a gate batch failed; the gate restarts from disk");
                    let _ = myself.send_message(GateMsg::Poisoned(e.to_string()));
                }
            }
        });
        Ok(())
    }

    async fn take(
        &mut self,
        myself: &ActorRef<GateMsg>,
        student: StudentName,
        reply: RpcReplyPort<Result<(TicketView, bool), GateFailure>>,
    ) -> Result<(), ActorProcessingErr> {
        let now = now_ms();
        if let Some(ticket) = self.queue.live_ticket_of(&student, now) {
            let view = self.view(ticket, now);
            self.answer(reply, (view, false));
            return Ok(());
        }
        // The early tickets go in first if the opening has passed since
        // the last tick.
        self.open_if_due(myself, now).await?;
        let settings = self.record.settings.clone();
        let ticket = self.queue.take(student, now, settings.is_open(now));
        let mut batch = Batch::new();
        if let Err(e) = batch.put(&TICKETS, &ticket.id, &ticket) {
            let _ = reply.send(Err(e.into()));
            return Err("a ticket could not be encoded".into());
        }
        // A gate that is off lets everyone in: admitted in the same batch.
        let admitted = if settings.enabled { Vec::new() } else { self.admit_now(u64::MAX, &mut batch)? };
        tracing::debug!(ticket_id = ticket.id, student = %ticket.student, place = ?ticket.place, "ticket taken");
        let progress = self.progress_after(&admitted);
        self.persist(myself, batch, progress).await?;
        let ticket = self.queue.get(ticket.id).cloned().unwrap_or(ticket);
        let view = self.view(&ticket, now);
        self.answer(reply, (view, true));
        Ok(())
    }

    async fn set(
        &mut self,
        myself: &ActorRef<GateMsg>,
        settings: GateSettings,
        reply: RpcReplyPort<Result<GateStatus, GateFailure>>,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(rejection) = settings.validate() {
            let _ = reply.send(Err(rejection.into()));
            return Ok(());
        }
        let mut record = self.record.clone();
        // Turning the gate on starts a new waiting room: an admission given
        // while it was off (at once, to anyone who asked) must not let its
        // student past the queue. A new key voids every token signed before,
        // and the admitted tickets expire so their students can queue anew.
        let turned_on = settings.enabled && !record.settings.enabled;
        let mut batch = Batch::new();
        if turned_on {
            record.key = new_key().map_err(|_| "the operating system's random source failed".to_owned())?;
            let expired = self.queue.expire_admitted(now_ms());
            for ticket in &expired {
                batch.put(&TICKETS, &ticket.id, ticket)?;
            }
            tracing::warn!(expired = expired.len(), "gate turned on: admissions given while it was off are void");
        }
        record.settings = settings;
        batch.put(&GATE, &GATE_KEY.to_owned(), &record)?;
        tracing::warn!(settings = ?record.settings, "gate settings changed");
        self.shared.enabled.store(record.settings.enabled, Ordering::SeqCst);
        self.record = record;
        let (shared, rate) = (self.shared.clone(), self.record.settings.admit_per_second);
        let new_key = turned_on.then_some(self.record.key);
        let published = move || {
            if let Some(key) = new_key {
                *shared.key.write().unwrap_or_else(std::sync::PoisonError::into_inner) = AdmissionKey::new(&key);
            }
            shared.progress.send_modify(|p| {
                p.settings += 1;
                p.admit_per_second = rate;
            })
        };
        self.persist(myself, batch, published).await?;
        let status = self.status();
        self.answer(reply, status);
        Ok(())
    }

    /// Admits up to `n` placed tickets into `batch`.
    fn admit_now(&mut self, n: u64, batch: &mut Batch) -> Result<Vec<super::Ticket>, ActorProcessingErr> {
        let now = now_ms();
        let ttl = Duration::from_secs(u64::from(self.record.settings.admission_ttl_secs));
        let admitted = self.queue.admit(n, now, ttl);
        for t in &admitted {
            batch.put(&TICKETS, &t.id, t)?;
        }
        if !admitted.is_empty() {
            self.recent.push_back((Instant::now(), admitted.len() as u64));
        }
        Ok(admitted)
    }

    /// What to publish once a batch with these admissions is durable.
    fn progress_after(&self, admitted: &[super::Ticket]) -> impl FnOnce() + Send + 'static {
        let shared = self.shared.clone();
        let through = self.queue.admitted_through();
        let waits: Vec<f64> = admitted
            .iter()
            .filter_map(|t| t.admitted.map(|a| a.at_ms.saturating_sub(t.taken_at_ms) as f64 / 1000.0))
            .collect();
        let waiting = self.queue.waiting_count();
        move || {
            if !waits.is_empty() {
                metrics::counter!("sugang_gate_admitted_total").increment(waits.len() as u64);
                for w in &waits {
                    metrics::histogram!("sugang_gate_wait_seconds").record(*w);
                }
            }
            metrics::gauge!("sugang_gate_waiting").set(waiting as f64);
            shared.progress.send_if_modified(|p| {
                let moved = through > p.admitted_through;
                p.admitted_through = p.admitted_through.max(through);
                moved
            });
        }
    }

    /// Once the opening has passed, shuffles the early tickets into the
    /// queue (one batch). Run by every tick, and before a ticket is taken:
    /// a ticket taken after the opening but before the next tick must
    /// queue behind every early one, not ahead of them.
    async fn open_if_due(&mut self, myself: &ActorRef<GateMsg>, now_ms: u64) -> Result<(), ActorProcessingErr> {
        if self.queue.early().is_empty() || !self.record.settings.is_open(now_ms) {
            return Ok(());
        }
        let order = shuffle(self.queue.early().to_vec()).map_err(|_| "the random source failed")?;
        let placed = self.queue.place_early(order);
        let mut batch = Batch::new();
        for t in &placed {
            batch.put(&TICKETS, &t.id, t)?;
        }
        tracing::info!(tickets = placed.len(), "gate opened: early tickets shuffled into the queue");
        let shared = self.shared.clone();
        self.persist(myself, batch, move || shared.progress.send_modify(|p| p.shuffles += 1)).await
    }

    async fn tick(&mut self, myself: &ActorRef<GateMsg>) -> Result<(), ActorProcessingErr> {
        let (now, now_ms) = (Instant::now(), now_ms());
        let settings = self.record.settings.clone();
        self.open_if_due(myself, now_ms).await?;
        let waiting = self.queue.placed_waiting();
        let n = if settings.enabled {
            self.ticker.admit(now, settings.admit_per_second, waiting)
        } else {
            self.ticker = Ticker::new(now);
            waiting
        };
        if n > 0 {
            let mut batch = Batch::new();
            let admitted = self.admit_now(n, &mut batch)?;
            let progress = self.progress_after(&admitted);
            self.persist(myself, batch, progress).await?;
        }
        while self.recent.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > RATE_WINDOW) {
            self.recent.pop_front();
        }
        metrics::gauge!("sugang_gate_admitted_per_second").set(self.admitted_per_second());
        Ok(())
    }

    /// Admissions per second over the last [`RATE_WINDOW`].
    fn admitted_per_second(&self) -> f64 {
        let admitted_recently: u64 = self.recent.iter().map(|(_, n)| n).sum();
        admitted_recently as f64 / RATE_WINDOW.as_secs_f64()
    }

    fn status(&self) -> GateStatus {
        let now = now_ms();
        GateStatus {
            settings: self.record.settings.clone(),
            waiting: self.queue.waiting_count(),
            admitted_total: self.queue.admitted_total(),
            admitted_per_second: self.admitted_per_second(),
            oldest_wait_ms: self.queue.oldest_taken_at_ms().map_or(0, |t| now.saturating_sub(t)),
        }
    }
}

// ---- supervision ----------------------------------------------------------

/// The gate actor's current incarnation, shared with the facade: the
/// supervisor swaps it on a restart and marks it held down.
#[derive(Clone)]
pub(crate) struct GateHandle(Arc<GateSlot>);

struct GateSlot {
    actor: RwLock<Option<ActorRef<GateMsg>>>,
    shared: Arc<GateShared>,
    /// While held down by the restart policy: until when.
    held_until: std::sync::Mutex<Option<Instant>>,
    restarts: AtomicU64,
    supervisor: RwLock<Option<ActorCell>>,
}

impl GateHandle {
    /// Loads (or creates) the gate's record and starts the gate under its
    /// own supervisor, linked to `parent`.
    pub(crate) async fn start(
        store: Store,
        journal: Journal,
        policy: RestartPolicy,
        parent: ActorCell,
    ) -> Result<GateHandle, String> {
        let record = load_or_create(&store, &journal).await?;
        let shared = Arc::new(GateShared {
            enabled: AtomicBool::new(record.settings.enabled),
            key: RwLock::new(AdmissionKey::new(&record.key)),
            progress: watch::Sender::new(Progress::default()),
        });
        let handle = GateHandle(Arc::new(GateSlot {
            actor: RwLock::new(None),
            shared: shared.clone(),
            held_until: std::sync::Mutex::new(None),
            restarts: AtomicU64::new(0),
            supervisor: RwLock::new(None),
        }));
        let args = GateArgs { store, journal, shared };
        let supervisor_args = SupervisorArgs { args, policy, handle: handle.clone() };
        let (supervisor, _) = Actor::spawn_linked(None, GateSupervisor, supervisor_args, parent)
            .await
            .map_err(|e| format!("starting the gate: {e}"))?;
        *handle.0.supervisor.write().unwrap_or_else(|e| e.into_inner()) = Some(supervisor.get_cell());
        Ok(handle)
    }

    pub(crate) fn shared(&self) -> &Arc<GateShared> {
        &self.0.shared
    }

    /// The running actor, or how long until it runs again.
    pub(crate) fn actor(&self) -> Result<ActorRef<GateMsg>, Duration> {
        if let Some(until) = *self.0.held_until.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
        }
        self.0.actor.read().unwrap_or_else(|e| e.into_inner()).clone().ok_or(Duration::from_secs(1))
    }

    pub(crate) fn restarts(&self) -> u64 {
        self.0.restarts.load(Ordering::Relaxed)
    }

    pub(crate) fn supervisor_cell(&self) -> Option<ActorCell> {
        self.0.supervisor.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, actor: Option<ActorRef<GateMsg>>) {
        *self.0.actor.write().unwrap_or_else(|e| e.into_inner()) = actor;
        *self.0.held_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

struct SupervisorArgs {
    args: GateArgs,
    policy: RestartPolicy,
    handle: GateHandle,
}

/// Restarts the gate actor from disk under the one restart policy; holds
/// it down past its intensity (ticket requests answer 503 meanwhile) and
/// escalates to the root after its hold-downs.
struct GateSupervisor;

struct SupervisorState {
    args: GateArgs,
    policy: RestartPolicy,
    handle: GateHandle,
    history: RestartHistory,
}

enum SupervisorMsg {
    /// The hold-down is over: start the gate again.
    Release,
}

impl GateSupervisor {
    async fn start_child(myself: &ActorRef<SupervisorMsg>, state: &SupervisorState) -> Result<(), ActorProcessingErr> {
        let (actor, _) = Actor::spawn_linked(None, GateActor, state.args.clone(), myself.get_cell()).await?;
        state.handle.set(Some(actor));
        Ok(())
    }
}

impl Actor for GateSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    /// Starts the gate actor before the supervisor is running, so the
    /// handle has an actor as soon as start-up returns.
    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let state = SupervisorState {
            args: args.args,
            policy: args.policy,
            handle: args.handle,
            history: RestartHistory::default(),
        };
        Self::start_child(&myself, &state).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Release => {
                tracing::warn!(kind = "gate", "the gate's hold-down is over; starting it again");
                state.handle.0.restarts.fetch_add(1, Ordering::Relaxed);
                supervision::count_restart("gate");
                Self::start_child(&myself, state).await
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(_, error) = event else { return Ok(()) };
        let error = format!("{error}; the queue is reloaded from storage on restart");
        let decision = state.history.on_failure(&state.policy, Instant::now());
        supervision::report("gate", None, &error, &state.history, decision);
        match decision {
            Decision::Restart => {
                state.handle.0.restarts.fetch_add(1, Ordering::Relaxed);
                supervision::count_restart("gate");
                Self::start_child(&myself, state).await
            }
            Decision::HoldDown { until, retry_after } => {
                state.handle.set(None);
                *state.handle.0.held_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
                myself.send_after(retry_after, || SupervisorMsg::Release);
                Ok(())
            }
            Decision::Escalate => Err(format!("the gate kept failing after its hold-downs: {error}").into()),
        }
    }
}
