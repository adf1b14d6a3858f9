//! The bus: durable pub/sub over the event log.
//!
//! The event log is the source of truth; the bus only makes following it
//! cheap. One publisher task wakes when the journal commits events, reads them
//! from the log once, decodes them once, and fans the batch out to every
//! subscriber worker through a `ractor::pg` group (never an `OutputPort`,
//! which drops under load). A worker handles events strictly in seq order: a
//! batch that does not start right after its offset (it was down, or started
//! late) sends it back to the log to catch up. It stores its new offset in
//! the same journal batch as its effects, so every effect happens exactly
//! once across crashes and restarts.
//!
//! A subscriber may run as K workers; worker `i` owns the effects whose key
//! (the enrollment id for per-enrollment views, the course id for per-course
//! views) is `i` modulo K, and every worker reads every event, so order per
//! key is kept and nothing is handled twice.
//!
//! In a cluster every node runs a bus, but a worker runs only on the node
//! that holds its *unit* (the worker's offset name, `mypage#1`): the node
//! leases it (the cluster glue) and writes itself into the unit's holder
//! record ([`crate::tables::UNIT_HOLDERS`]). Every commit of a worker is
//! guarded by that record and by the offset it started from, and the log's
//! one writer checks both. A record is only replaced by one of a later lease
//! (`Sugang::hold_unit`), so a node that lost a unit (paused past its lease,
//! cut off) commits nothing for it once the next holder has taken over, and
//! a commit whose answer was lost cannot be applied twice: each event still
//! takes effect exactly once, whichever node's worker handles it.
//!
//! A failing worker is restarted from its stored offset under the one restart
//! policy ([`crate::supervision`]), per worker: held down when it fails too
//! often (its read model lags meanwhile and catches up once it runs again),
//! escalated to the root when it keeps failing after its hold-downs.
//!
//! Owns the publisher, the subscriber supervisor, progress for
//! read-your-writes (which covers the events reacting subscribers emit), and
//! retention. Must not know what a projection does.

pub(crate) mod subscriber;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::Serialize;
use sugang_storage::{Batch, Committed, Journal, StorageError, Store};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::faults::{Faults, now_ms};
use crate::supervision::{self, Decision, RestartHistory, RestartPolicy};
use crate::tables::UnitHolder;
use subscriber::{SubscriberActor, SubscriberArgs, SubscriberMsg};

/// Which share of the work a worker has: `index` of `of`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) index: u64,
    pub(crate) of: u64,
}

impl Part {
    /// Whether this worker owns the effects keyed by `key`.
    pub(crate) fn owns(&self, key: u64) -> bool {
        key % self.of == self.index
    }
}

/// Something the projection could not do; the worker fails and is restarted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProjectionError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Encode(#[from] sugang_storage::EncodeError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A read side or a reaction, fed events in order.
pub(crate) trait Projection: Send + Sync + 'static {
    /// Its name: `delivery`, `mypage`, `notifier`.
    fn name(&self) -> &'static str;
    /// Adds the effects of `event` that belong to `part` to `batch` (reading
    /// through it, since one batch carries many events). Returns how many
    /// effects it added.
    fn apply(
        &self,
        store: &Store,
        event: &Committed<Event>,
        part: Part,
        batch: &mut Batch,
    ) -> Result<u64, ProjectionError>;
    /// Called once a batch of this worker is durable (the notifier appends
    /// to its log file here).
    fn committed(&self, _store: &Store, _part: Part, _through_seq: u64) -> Result<(), ProjectionError> {
        Ok(())
    }
    /// Whether it must run as one worker whatever the configuration says.
    fn single_worker(&self) -> bool {
        false
    }
    /// Whether its effects include events: reactions that other read models
    /// show, which read-your-writes waits for (see [`Bus::wait_for`]).
    fn reacts(&self) -> bool {
        false
    }
    /// Called when a worker starts, before it catches up.
    fn starting(&self, _store: &Store, _part: Part) -> Result<(), ProjectionError> {
        Ok(())
    }
}

/// Bus settings.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// Workers per subscriber, by name (absent: one).
    pub workers: HashMap<String, u64>,
    /// Events older than this, and applied by every subscriber, are trimmed.
    pub retention: Duration,
    /// How often retention runs.
    pub retention_every: Duration,
    /// The longest a read-your-writes query waits for a read model.
    pub max_wait: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            workers: HashMap::new(),
            retention: Duration::from_secs(7 * 24 * 3600),
            retention_every: Duration::from_secs(600),
            max_wait: Duration::from_secs(5),
        }
    }
}

/// One subscriber as `/admin` and `/metrics` show it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriberStatus {
    pub name: &'static str,
    pub down: bool,
    pub workers: u64,
    /// The lowest offset of its workers.
    pub offset: u64,
    /// How many events it is behind the log.
    pub lag: u64,
    pub restarts: u64,
    /// While a worker of it is held down by its restart policy: until when
    /// (the latest of its held-down workers), in unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_down_until: Option<u64>,
    /// While a worker of it is held down: how long until it runs again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

static SCOPES: AtomicU64 = AtomicU64::new(0);
const GROUP: &str = "events";

/// A worker's identity and its progress channel.
struct Worker {
    projection: Arc<dyn Projection>,
    part: Part,
    progress: watch::Sender<u64>,
    /// The seq of the last event it emitted (reacting projections only),
    /// set before `progress` moves past the events it reacted to.
    emitted: Arc<AtomicU64>,
    /// Switched off by the fault knob: its reactions are not waited for.
    off: Arc<AtomicBool>,
    /// In a cluster, this node's entry in the unit's holder record while it
    /// holds the unit (`None`: the worker does not run here).
    holder: std::sync::Mutex<Option<UnitHolder>>,
}

impl Worker {
    fn offset_name(&self) -> String {
        offset_name(self.projection.name(), self.part)
    }

    fn holder(&self) -> Option<UnitHolder> {
        self.holder.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_holder(&self, token: Option<UnitHolder>) {
        *self.holder.lock().unwrap_or_else(|e| e.into_inner()) = token;
    }
}

/// Where a bus runs its workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BusMode {
    /// All of them, here (the embedded service); retention runs here.
    Embedded,
    /// Only those whose unit this node holds ([`Bus::hold`]); retention runs
    /// on the primary only ([`Bus::retain_here`]).
    Cluster,
}

pub(crate) fn offset_name(name: &str, part: Part) -> String {
    if part.of == 1 { name.to_owned() } else { format!("{name}#{}", part.index) }
}

/// A worker of a subscriber that reacts with events of its own, as
/// read-your-writes waits for it.
struct Reactor {
    name: &'static str,
    progress: watch::Receiver<u64>,
    /// The seq of the last event it emitted.
    emitted: Arc<AtomicU64>,
    /// Switched off: nothing to wait for until it runs again.
    off: Arc<AtomicBool>,
}

/// The handle to the bus. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Bus {
    supervisor: ActorRef<BusMsg>,
    progress: Arc<HashMap<&'static str, Vec<watch::Receiver<u64>>>>,
    /// The workers of the subscribers that react with events of their own.
    reactors: Arc<Vec<Reactor>>,
    store: Store,
    max_wait: Duration,
    workers: Arc<Vec<Arc<Worker>>>,
    journal: Journal,
    config: BusConfig,
}

impl Bus {
    /// Starts the subscriber supervisor under `parent`, its workers (each
    /// restarted under `policy`; in a cluster, none until held), the
    /// publisher, and retention (embedded only). Everything stops when
    /// `stop` is cancelled.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start(
        store: Store,
        journal: Journal,
        projections: Vec<Arc<dyn Projection>>,
        config: BusConfig,
        policy: RestartPolicy,
        faults: Arc<Faults>,
        parent: ActorCell,
        stop: CancellationToken,
        mode: BusMode,
    ) -> Result<Bus, ractor::SpawnErr> {
        let scope = format!("sugang-bus-{}", SCOPES.fetch_add(1, Ordering::Relaxed));
        let mut workers = Vec::new();
        let mut progress: HashMap<&'static str, Vec<watch::Receiver<u64>>> = HashMap::new();
        let mut reactors = Vec::new();
        for projection in projections {
            let wanted = config.workers.get(projection.name()).copied().unwrap_or(1).max(1);
            let of = if projection.single_worker() { 1 } else { wanted };
            for index in 0..of {
                let (tx, rx) = watch::channel(0);
                let (emitted, off) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
                if projection.reacts() {
                    reactors.push(Reactor {
                        name: projection.name(),
                        progress: rx.clone(),
                        emitted: emitted.clone(),
                        off: off.clone(),
                    });
                }
                progress.entry(projection.name()).or_default().push(rx);
                workers.push(Arc::new(Worker {
                    projection: projection.clone(),
                    part: Part { index, of },
                    progress: tx,
                    emitted,
                    off,
                    holder: std::sync::Mutex::new(None),
                }));
            }
        }
        // In a cluster the worker counts are every node's configuration,
        // not one node's to reconcile: change them with the cluster stopped.
        if mode == BusMode::Embedded {
            reconcile_offsets(&store, &journal, &workers).await?;
        }
        let state = BusState {
            store: store.clone(),
            journal: journal.clone(),
            scope: scope.clone(),
            histories: vec![RestartHistory::default(); workers.len()],
            workers: workers.clone(),
            mode,
            live: HashMap::new(),
            down: HashMap::new(),
            restarts: HashMap::new(),
            held: HashMap::new(),
            policy,
            faults,
        };
        let (supervisor, _) = Actor::spawn_linked(None, BusSupervisor, state, parent).await?;
        tokio::spawn(publish(store.clone(), scope, stop.clone()));
        let bus = Bus {
            supervisor,
            progress: Arc::new(progress),
            reactors: Arc::new(reactors),
            store,
            max_wait: config.max_wait,
            workers: Arc::new(workers),
            journal,
            config,
        };
        if mode == BusMode::Embedded {
            bus.retain_here(stop);
        }
        Ok(bus)
    }

    /// Runs retention from this node until `stop` (in a cluster: the
    /// primary's, once it is; it writes for every node).
    pub(crate) fn retain_here(&self, stop: CancellationToken) {
        tokio::spawn(retain(self.store.clone(), self.journal.clone(), self.config.clone(), stop));
    }

    /// The subscribers that react with events of their own (delivery).
    pub(crate) fn reactor_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.reactors.iter().map(|r| r.name).collect();
        names.dedup();
        names
    }

    /// Every unit: each worker's offset name (`delivery`, `mypage#1`).
    pub(crate) fn units(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.offset_name()).collect()
    }

    /// The units this node holds (in a cluster).
    pub(crate) fn held(&self) -> Vec<String> {
        self.workers.iter().filter(|w| w.holder().is_some()).map(|w| w.offset_name()).collect()
    }

    /// Runs `unit`'s worker here under holder `token` (already stored in
    /// its holder record), or stops it (`None`) and waits until it has. False
    /// for an unknown unit.
    pub(crate) async fn hold(&self, unit: String, token: Option<UnitHolder>) -> Result<bool, String> {
        ractor::call_t!(self.supervisor, |reply| BusMsg::Hold { unit, token, reply }, 15_000).map_err(|e| e.to_string())
    }

    pub(crate) fn supervisor_cell(&self) -> ActorCell {
        self.supervisor.get_cell()
    }

    /// Waits until subscriber `name` reflects every consequence of the
    /// events up to `seq`, at most the configured bound. False if it did not
    /// get there.
    ///
    /// A consequence is an event a reacting subscriber (delivery) emitted in
    /// reaction to one of them (`DeliveryStarted` for `EnrollmentCompleted`):
    /// it commits with the reactor's offset, so once every reactor has passed
    /// `seq`, its reactions to those events are in the log at or below the
    /// last event it emitted. The read model is then waited for up to the
    /// highest of those seqs. One level is enough: no subscriber reacts to
    /// another subscriber's events (delivery reacts to the course's only).
    ///
    /// A reactor switched off by the fault knob is not waited for: its
    /// reactions have not happened and will not until it is switched on, so
    /// the read model already reflects every consequence there is (a
    /// crash-looping reactor, by contrast, is waited for: 503 after the
    /// bound). Nor is the asked subscriber itself: its reactions commit with
    /// its own effects.
    pub(crate) async fn wait_for(&self, name: &str, seq: u64) -> bool {
        let Some(workers) = self.progress.get(name) else { return false };
        let deadline = tokio::time::Instant::now() + self.max_wait;
        let mut through = seq;
        for reactor in self.reactors.iter().filter(|r| r.name != name) {
            if reactor.off.load(Ordering::SeqCst) {
                continue;
            }
            if !reach(&reactor.progress, seq, deadline).await {
                return false;
            }
            through = through.max(reactor.emitted.load(Ordering::SeqCst));
        }
        for worker in workers {
            if !reach(worker, through, deadline).await {
                return false;
            }
        }
        true
    }

    /// Stops (`down`) or starts a subscriber's workers; started, they catch up.
    pub(crate) async fn set_down(&self, name: String, down: bool) -> Result<bool, String> {
        ractor::call_t!(self.supervisor, |reply| BusMsg::SetDown { name, down, reply }, 5000).map_err(|e| e.to_string())
    }

    pub(crate) async fn status(&self) -> Vec<SubscriberStatus> {
        let last = self.store.events().last_seq();
        match ractor::call_t!(self.supervisor, |reply| BusMsg::Status { reply }, 5000) {
            Ok(mut status) => {
                for s in &mut status {
                    s.lag = last.saturating_sub(s.offset);
                    metrics::gauge!("sugang_subscriber_lag", "subscriber" => s.name).set(s.lag as f64);
                }
                status
            }
            Err(_) => Vec::new(),
        }
    }
}

/// Waits until a worker's offset is at least `seq`, until `deadline`.
async fn reach(progress: &watch::Receiver<u64>, seq: u64, deadline: tokio::time::Instant) -> bool {
    let mut progress = progress.clone();
    let reached = tokio::time::timeout_at(deadline, progress.wait_for(|offset| *offset >= seq)).await;
    matches!(reached, Ok(Ok(_)))
}

/// When a subscriber's worker count changed since the last run, its old
/// workers' offsets (`name`, `name#k`) are replaced: every new worker without
/// an offset starts from the lowest old one (re-applying a few events, which
/// the projections' set-based effects absorb), and the stale offsets are
/// removed so they no longer hold back retention.
async fn reconcile_offsets(store: &Store, journal: &Journal, workers: &[Arc<Worker>]) -> Result<(), ractor::SpawnErr> {
    let failed = |e: String| ractor::SpawnErr::StartupFailed(e.into());
    let stored = store.offsets().map_err(|e| failed(e.to_string()))?;
    let mut batch = Batch::new();
    let mut names: Vec<&'static str> = workers.iter().map(|w| w.projection.name()).collect();
    names.dedup();
    for name in names {
        let current: Vec<String> =
            workers.iter().filter(|w| w.projection.name() == name).map(|w| w.offset_name()).collect();
        let belongs =
            |stored: &str| stored == name || stored.strip_prefix(name).is_some_and(|rest| rest.starts_with('#'));
        let stale: Vec<&(String, u64)> = stored.iter().filter(|(n, _)| belongs(n) && !current.contains(n)).collect();
        let Some(lowest) = stale.iter().map(|(_, offset)| *offset).min() else { continue };
        for worker in &current {
            if !stored.iter().any(|(n, _)| n == worker) {
                batch.set_offset(worker, lowest);
            }
        }
        for (stale, _) in &stale {
            batch.remove_offset(stale);
        }
        tracing::warn!(
            subscriber = name,
            workers = current.len(),
            from = lowest,
            "worker count changed; offsets carried over"
        );
    }
    if !batch.is_empty() {
        journal.commit(batch).await.map_err(|e| failed(e.to_string()))?;
    }
    Ok(())
}

/// Wakes on every commit with events, reads them from the log once and fans
/// them out to the group, in order.
async fn publish(store: Store, scope: String, stop: CancellationToken) {
    let log = store.events();
    let mut commits = log.watch();
    let mut published = log.last_seq();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = commits.changed() => if changed.is_err() { return },
        }
        let last = *commits.borrow_and_update();
        while published < last {
            let events = match log.read::<Event>(published + 1, 1024) {
                Ok(events) if !events.is_empty() => events,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, from = published + 1, "publisher cannot read the log; subscribers catch up from it");
                    break;
                }
            };
            published = events.last().map_or(published, |e| e.seq);
            let batch = Arc::new(events);
            for member in ractor::pg::get_scoped_local_members(&scope, &GROUP.to_owned()) {
                let _ = member.send_message(SubscriberMsg::Live(batch.clone()));
            }
        }
    }
}

/// Trims the log below every subscriber's offset, once events are old enough.
async fn retain(store: Store, journal: Journal, config: BusConfig, stop: CancellationToken) {
    let mut every = tokio::time::interval(config.retention_every);
    every.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Err(e) = journal.trim(&store, config.retention).await {
            tracing::warn!(error = %e, "retention failed; it runs again later");
        }
    }
}

pub(crate) enum BusMsg {
    SetDown {
        name: String,
        down: bool,
        reply: RpcReplyPort<bool>,
    },
    Status {
        reply: RpcReplyPort<Vec<SubscriberStatus>>,
    },
    /// Runs a unit's worker here under a holder token, or stops it.
    Hold {
        unit: String,
        token: Option<UnitHolder>,
        reply: RpcReplyPort<bool>,
    },
    /// A worker's hold-down is over: start it again.
    Release {
        worker: usize,
    },
}

struct BusSupervisor;

struct BusState {
    store: Store,
    journal: Journal,
    scope: String,
    workers: Vec<Arc<Worker>>,
    mode: BusMode,
    /// Live worker actors, by actor id: which worker they are.
    live: HashMap<ractor::ActorId, usize>,
    down: HashMap<&'static str, bool>,
    /// Restarts per subscriber (all its workers).
    restarts: HashMap<&'static str, u64>,
    /// The failures of each worker, by index, for the restart policy.
    histories: Vec<RestartHistory>,
    /// Held-down workers, by index: until when (and the same in unix ms).
    held: HashMap<usize, (tokio::time::Instant, u64)>,
    policy: RestartPolicy,
    /// Fault injection, handed to every worker.
    faults: Arc<Faults>,
}

impl BusState {
    /// Whether worker `index` has a live actor (so it is never run twice).
    fn is_live(&self, index: usize) -> bool {
        self.live.values().any(|&live| live == index)
    }

    /// Whether worker `index` may run here: always embedded; in a cluster
    /// while this node holds its unit.
    fn runs_here(&self, index: usize) -> bool {
        self.mode == BusMode::Embedded || self.workers[index].holder().is_some()
    }

    async fn spawn(&mut self, myself: &ActorRef<BusMsg>, index: usize) -> Result<(), ActorProcessingErr> {
        let worker = self.workers[index].clone();
        if !self.runs_here(index) {
            return Ok(());
        }
        let args = SubscriberArgs {
            holder: worker.holder(),
            projection: worker.projection.clone(),
            part: worker.part,
            offset_name: worker.offset_name(),
            store: self.store.clone(),
            journal: self.journal.clone(),
            scope: self.scope.clone(),
            group: GROUP.to_owned(),
            progress: worker.progress.clone(),
            emitted: worker.emitted.clone(),
            faults: self.faults.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, SubscriberActor, args, myself.get_cell()).await?;
        self.live.insert(actor.get_id(), index);
        Ok(())
    }

    /// Counts a restart of one of subscriber `name`'s workers.
    fn count_restart(&mut self, name: &'static str) {
        *self.restarts.entry(name).or_default() += 1;
        supervision::count_restart(name);
    }

    /// Stops worker `index`'s actor, if it runs, and waits until it has.
    async fn stop_worker(&mut self, myself: &ActorRef<BusMsg>, index: usize, reason: &str) {
        let cells: Vec<ActorCell> =
            myself.get_children().into_iter().filter(|cell| self.live.get(&cell.get_id()) == Some(&index)).collect();
        for cell in cells {
            if cell.stop_and_wait(Some(reason.into()), Some(Duration::from_secs(10))).await.is_err() {
                tracing::error!(worker = index, "a subscriber worker did not stop within 10 s");
            }
            self.live.remove(&cell.get_id());
        }
    }

    /// In a cluster: whether this node still holds worker `index`'s unit,
    /// as its holder record says. A worker whose unit another node took
    /// (its commits are refused) stops here for good; the glue sees the
    /// lease gone too.
    fn still_holds(&self, index: usize) -> bool {
        let worker = &self.workers[index];
        let Some(token) = worker.holder() else { return false };
        let unit = worker.offset_name();
        match self.store.get(&crate::tables::UNIT_HOLDERS, &unit) {
            Ok(Some(holder)) if holder == token => true,
            Ok(holder) => {
                tracing::warn!(
                    unit = %unit,
                    token = ?token,
                    holder = ?holder,
                    "another node holds this subscriber unit now: its worker stops here"
                );
                worker.set_holder(None);
                false
            }
            Err(e) => {
                tracing::error!(unit = %unit, error = %e, "reading a unit's holder failed");
                true
            }
        }
    }

    /// Carries out the restart policy for worker `index`, which failed with
    /// `error`: restarts it from its offset, holds it down, or escalates (an
    /// `Err`, which fails the bus supervisor and so reaches the root). A
    /// restart that fails to start counts as the next failure.
    async fn failed(
        &mut self,
        myself: &ActorRef<BusMsg>,
        index: usize,
        error: String,
    ) -> Result<(), ActorProcessingErr> {
        let name = self.workers[index].projection.name();
        let part = self.workers[index].part.index;
        if self.mode == BusMode::Cluster && !self.still_holds(index) {
            return Ok(());
        }
        let mut error = error;
        loop {
            let history = &mut self.histories[index];
            let decision = history.on_failure(&self.policy, tokio::time::Instant::now());
            supervision::report(name, Some(part), &error, history, decision);
            match decision {
                Decision::Restart => {
                    if self.down.get(name).copied().unwrap_or(false) || self.is_live(index) {
                        return Ok(());
                    }
                    self.count_restart(name);
                    match self.spawn(myself, index).await {
                        Ok(()) => return Ok(()),
                        Err(e) => error = format!("restarting it failed: {e}"),
                    }
                }
                Decision::HoldDown { until, retry_after } => {
                    self.held.insert(index, (until, now_ms() + retry_after.as_millis() as u64));
                    myself.send_after(retry_after, move || BusMsg::Release { worker: index });
                    return Ok(());
                }
                Decision::Escalate => {
                    return Err(
                        format!("subscriber {name} part {part} kept failing after its hold-downs: {error}").into()
                    );
                }
            }
        }
    }
}

impl Actor for BusSupervisor {
    type Msg = BusMsg;
    type State = BusState;
    type Arguments = BusState;

    async fn pre_start(&self, myself: ActorRef<BusMsg>, mut state: BusState) -> Result<BusState, ActorProcessingErr> {
        // In a cluster nothing is held yet: `spawn` starts none.
        for index in 0..state.workers.len() {
            state.spawn(&myself, index).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<BusMsg>,
        message: BusMsg,
        state: &mut BusState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BusMsg::SetDown { name, down, reply } => {
                let Some(&known) = state.workers.iter().map(|w| w.projection.name()).find(|n| *n == name).as_ref()
                else {
                    let _ = reply.send(false);
                    return Ok(());
                };
                let was = state.down.insert(known, down).unwrap_or(false);
                for worker in state.workers.iter().filter(|w| w.projection.name() == known) {
                    worker.off.store(down, Ordering::SeqCst);
                }
                tracing::warn!(subscriber = known, down, "subscriber switched by the fault knob");
                metrics::counter!("sugang_faults_injected_total", "fault" => "subscriber").increment(1);
                if down && !was {
                    let cells: Vec<_> = myself.get_children();
                    for cell in cells {
                        if let Some(&index) = state.live.get(&cell.get_id())
                            && state.workers[index].projection.name() == known
                        {
                            cell.stop_and_wait(Some("switched off".into()), Some(Duration::from_secs(5))).await.ok();
                        }
                    }
                } else if !down && was {
                    for index in 0..state.workers.len() {
                        // A held-down worker starts when its hold-down ends.
                        if state.workers[index].projection.name() == known
                            && !state.is_live(index)
                            && !state.held.contains_key(&index)
                        {
                            state.spawn(&myself, index).await?;
                        }
                    }
                }
                let _ = reply.send(true);
            }
            BusMsg::Status { reply } => {
                let mut by_name: Vec<SubscriberStatus> = Vec::new();
                let now = tokio::time::Instant::now();
                for (index, worker) in state.workers.iter().enumerate() {
                    let name = worker.projection.name();
                    // In a cluster a unit may run on another node: its
                    // offset is the one stored (from the log).
                    let offset = match state.mode {
                        BusMode::Embedded => *worker.progress.borrow(),
                        BusMode::Cluster => state.store.offset(&worker.offset_name()).ok().flatten().unwrap_or(0),
                    };
                    let status = match by_name.iter().position(|s| s.name == name) {
                        Some(at) => {
                            by_name[at].offset = by_name[at].offset.min(offset);
                            &mut by_name[at]
                        }
                        None => {
                            by_name.push(SubscriberStatus {
                                name,
                                down: state.down.get(name).copied().unwrap_or(false),
                                workers: worker.part.of,
                                offset,
                                lag: 0,
                                restarts: state.restarts.get(name).copied().unwrap_or(0),
                                held_down_until: None,
                                retry_after_ms: None,
                            });
                            by_name.last_mut().expect("just pushed")
                        }
                    };
                    if let Some((until, until_ms)) = state.held.get(&index) {
                        let left = until.saturating_duration_since(now).as_millis() as u64;
                        status.held_down_until = status.held_down_until.max(Some(*until_ms));
                        status.retry_after_ms = status.retry_after_ms.max(Some(left));
                    }
                }
                let _ = reply.send(by_name);
            }
            BusMsg::Hold { unit, token, reply } => {
                let Some(index) = state.workers.iter().position(|w| w.offset_name() == unit) else {
                    let _ = reply.send(false);
                    return Ok(());
                };
                let name = state.workers[index].projection.name();
                let previous = state.workers[index].holder();
                state.workers[index].set_holder(token.clone());
                if token.is_some() && previous.is_some() && previous != token {
                    // Held again under a newer lease: the running worker
                    // commits under the old one; it starts again.
                    state.stop_worker(&myself, index, "held under a newer lease").await;
                }
                if token.is_some() {
                    state.histories[index] = RestartHistory::default();
                    state.held.remove(&index);
                    tracing::info!(unit = %unit, "holding a subscriber unit: its worker runs here");
                    if !state.down.get(name).copied().unwrap_or(false)
                        && !state.is_live(index)
                        && let Err(e) = state.spawn(&myself, index).await
                    {
                        state.failed(&myself, index, format!("starting it failed: {e}")).await?;
                    }
                } else {
                    state.stop_worker(&myself, index, "unit released").await;
                    tracing::info!(unit = %unit, "released a subscriber unit: its worker stopped here");
                }
                let _ = reply.send(true);
            }
            BusMsg::Release { worker } => {
                if state.held.remove(&worker).is_none() {
                    return Ok(());
                }
                let name = state.workers[worker].projection.name();
                tracing::warn!(
                    kind = name,
                    id = state.workers[worker].part.index,
                    "subscriber worker's hold-down is over; starting it again"
                );
                if !state.down.get(name).copied().unwrap_or(false) && !state.is_live(worker) && state.runs_here(worker)
                {
                    state.count_restart(name);
                    if let Err(e) = state.spawn(&myself, worker).await {
                        state.failed(&myself, worker, format!("starting it after its hold-down failed: {e}")).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<BusMsg>,
        event: SupervisionEvent,
        state: &mut BusState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.live.remove(&cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(index) = state.live.remove(&cell.get_id()) else { return Ok(()) };
                state.failed(&myself, index, format!("{error}; it restarts from its offset")).await?;
            }
            _ => {}
        }
        Ok(())
    }
}
