//! Entity actors: activation on demand, passivation when idle, restarts under
//! a bounded intensity, and load shedding at each entity's mailbox.
//!
//! Owns the registry of live entity actors of one kind (courses, or
//! enrollments) and their supervisor. Asks go straight from a caller to the
//! entity's actor (one hop; the registry is a sharded map read under a
//! short lock); only failures and terminations pass through the supervisor.
//! Must not know what an entity does: kinds plug in through [`EntityKind`].
//!
//! Passivation never loses a message: an idle actor marks its slot
//! `Passivating` (from then on no caller sends to it) and then sends itself a
//! stop *message*, queued behind everything already sent, so it handles those
//! first. A message that still lands on a stopped actor was never handled, and
//! an idempotent ask is sent again to the next activation.
//!
//! Restarts follow the one policy of [`crate::supervision`], per entity: at
//! most `max_restarts` in `within`; beyond that the entity is held down (with
//! a growing, capped backoff) and asks for it are answered
//! [`AskError::HeldDown`] (a 503 with Retry-After at the edge); an entity that
//! keeps failing after its hold-downs fails this supervisor, which escalates
//! to the root.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, Message, RpcReplyPort, SupervisionEvent,
};
use serde::Serialize;
use tokio::time::Instant;

use crate::supervision::{self, Decision, RestartHistory, RestartPolicy};

/// The tick that makes an idle entity actor consider passivating.
pub(crate) struct IdleCheck;

/// Sends `myself` an [`IdleCheck`] after `after`.
pub(crate) fn schedule_idle_check<M>(myself: &ActorRef<M>, after: Duration)
where
    M: Message + From<IdleCheck>,
{
    myself.send_after(after, || M::from(IdleCheck));
}

/// A kind of entity actor the registry can activate.
pub(crate) trait EntityKind: Send + Sync + 'static {
    /// The actor behaviour.
    type Actor: Actor<Msg = Self::Msg, Arguments = EntityArgs<Self::Ctx>>;
    /// Its message type.
    type Msg: Message;
    /// What every actor of the kind shares (handles, store, config).
    type Ctx: Send + Sync + 'static;
    /// `"course"`, `"enrollment"`: for logs, metrics and the admin tree.
    const KIND: &'static str;
    fn behaviour() -> Self::Actor;
}

/// What an entity actor is started with.
pub(crate) struct EntityArgs<C> {
    pub(crate) id: u64,
    pub(crate) ctx: Arc<C>,
    /// The registry, so the actor can passivate itself.
    pub(crate) registry: Arc<Registry>,
    /// Whether this start is a restart after a failure.
    pub(crate) restarted: bool,
}

/// Supervision settings of one kind.
#[derive(Clone, Debug)]
pub struct SupervisionConfig {
    /// An actor with no message for this long passivates.
    pub idle: Duration,
    /// How often one entity may fail before it is held down, and for how long.
    pub restart: RestartPolicy,
    /// Asks an entity may have outstanding before new ones are shed.
    pub max_pending: usize,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig { idle: Duration::from_secs(120), restart: RestartPolicy::default(), max_pending: 1024 }
    }
}

/// Why an ask did not get an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// Too many asks outstanding for this entity: shed, not queued.
    #[error("{kind} {id} is overloaded")]
    Overloaded { kind: &'static str, id: u64 },
    /// The entity exceeded its restart intensity and is held down.
    #[error("{kind} {id} is held down after repeated failures")]
    HeldDown { kind: &'static str, id: u64, retry_after: Duration },
    /// The actor did not answer in time, failed while handling the ask, or
    /// could not be started.
    #[error("{kind} {id} is unavailable: {reason}")]
    Unavailable { kind: &'static str, id: u64, reason: String },
}

enum Slot {
    /// Someone is spawning it; wait.
    Activating,
    Live {
        actor: ActorCell,
        pending: Arc<AtomicUsize>,
    },
    /// It has stopped taking asks and will stop after its queue; wait.
    Passivating {
        actor: ActorId,
    },
    /// Held down until then.
    Down {
        until: Instant,
    },
}

const SHARDS: usize = 32;

/// The live entities of one kind, and the statistics of their supervisor.
pub(crate) struct Registry {
    kind: &'static str,
    shards: Vec<Mutex<HashMap<u64, Slot>>>,
    hasher: std::collections::hash_map::RandomState,
    /// Which entity each live actor is, for supervision events.
    actors: Mutex<HashMap<ActorId, u64>>,
    pub(crate) config: SupervisionConfig,
    restarts_total: AtomicU64,
    activations_total: AtomicU64,
    passivations_total: AtomicU64,
    /// The failures of each entity that failed lately, for the restart
    /// policy and the admin tree; forgotten once the entity is quiet.
    history: Mutex<HashMap<u64, RestartHistory>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A snapshot of one supervisor, for `/admin/actors` and `/metrics`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorSnapshot {
    pub kind: &'static str,
    pub live: usize,
    pub passivating: usize,
    pub held_down: Vec<HeldDown>,
    pub restarts_total: u64,
    pub activations_total: u64,
    pub passivations_total: u64,
    /// Entities restarted within the intensity window, with their count.
    pub recent_restarts: Vec<RecentRestarts>,
    pub max_restarts: usize,
    pub within_ms: u64,
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub idle_ms: u64,
    pub max_pending: usize,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldDown {
    pub id: u64,
    pub retry_after_ms: u64,
    /// Until when, in unix ms (as for the payment actor and subscribers).
    pub held_down_until: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentRestarts {
    pub id: u64,
    pub restarts: usize,
}

impl Registry {
    fn new(kind: &'static str, config: SupervisionConfig) -> Self {
        Registry {
            kind,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            actors: Mutex::new(HashMap::new()),
            config,
            restarts_total: AtomicU64::new(0),
            activations_total: AtomicU64::new(0),
            passivations_total: AtomicU64::new(0),
            history: Mutex::new(HashMap::new()),
        }
    }

    fn shard(&self, id: u64) -> MutexGuard<'_, HashMap<u64, Slot>> {
        lock(&self.shards[self.hasher.hash_one(id) as usize % SHARDS])
    }

    /// Called by an idle actor: stop taking asks. Returns false if the slot
    /// is no longer this actor's (nothing to do).
    pub(crate) fn begin_passivation(&self, id: u64, actor: ActorId) -> bool {
        let mut shard = self.shard(id);
        match shard.get(&id) {
            Some(Slot::Live { actor: live, .. }) if live.get_id() == actor => {
                shard.insert(id, Slot::Passivating { actor });
                true
            }
            _ => false,
        }
    }

    /// An entity actor's idle tick: true when it has been quiet for the idle
    /// time, is not `busy`, and its slot is now `Passivating` (the actor then
    /// sends itself its stop message); otherwise the next tick is scheduled.
    pub(crate) fn idle_check<M>(&self, id: u64, myself: &ActorRef<M>, last_active: Instant, busy: bool) -> bool
    where
        M: Message + From<IdleCheck>,
    {
        let quiet = last_active.elapsed();
        if !busy && quiet >= self.config.idle && self.begin_passivation(id, myself.get_id()) {
            return true;
        }
        schedule_idle_check(myself, self.config.idle.saturating_sub(quiet).max(Duration::from_millis(10)));
        false
    }

    pub(crate) fn snapshot(&self) -> SupervisorSnapshot {
        let (now, now_ms) = (Instant::now(), crate::faults::now_ms());
        let (mut live, mut passivating, mut held_down) = (0, 0, Vec::new());
        for shard in &self.shards {
            for (id, slot) in lock(shard).iter() {
                match slot {
                    Slot::Live { .. } | Slot::Activating => live += 1,
                    Slot::Passivating { .. } => passivating += 1,
                    Slot::Down { until } if *until > now => {
                        let retry_after_ms = (*until - now).as_millis() as u64;
                        held_down.push(HeldDown { id: *id, retry_after_ms, held_down_until: now_ms + retry_after_ms })
                    }
                    Slot::Down { .. } => {}
                }
            }
        }
        held_down.sort_by_key(|h| h.id);
        let policy = &self.config.restart;
        let mut recent_restarts: Vec<_> = lock(&self.history)
            .iter()
            .map(|(id, history)| RecentRestarts { id: *id, restarts: history.recent_restarts(policy, now) })
            .filter(|r| r.restarts > 0)
            .collect();
        recent_restarts.sort_by_key(|r| r.id);
        SupervisorSnapshot {
            kind: self.kind,
            live,
            passivating,
            held_down,
            restarts_total: self.restarts_total.load(Ordering::Relaxed),
            activations_total: self.activations_total.load(Ordering::Relaxed),
            passivations_total: self.passivations_total.load(Ordering::Relaxed),
            recent_restarts,
            max_restarts: policy.max_restarts,
            within_ms: policy.within.as_millis() as u64,
            backoff_ms: policy.backoff.as_millis() as u64,
            max_backoff_ms: policy.max_backoff.as_millis() as u64,
            idle_ms: self.config.idle.as_millis() as u64,
            max_pending: self.config.max_pending,
        }
    }

    /// Counts a restart of one of this kind's entities.
    fn count_restart(&self) {
        self.restarts_total.fetch_add(1, Ordering::Relaxed);
        supervision::count_restart(self.kind);
    }

    fn live_gauge(&self) {
        let live: usize = self.shards.iter().map(|s| lock(s).len()).sum();
        metrics::gauge!("sugang_live_entities", "kind" => self.kind).set(live as f64);
    }
}

/// The handle callers use to ask entities of one kind. Cheap to clone.
pub(crate) struct Entities<K: EntityKind> {
    registry: Arc<Registry>,
    ctx: Arc<K::Ctx>,
    supervisor: ActorRef<SupervisorMsg>,
}

impl<K: EntityKind> Clone for Entities<K> {
    fn clone(&self) -> Self {
        Entities { registry: self.registry.clone(), ctx: self.ctx.clone(), supervisor: self.supervisor.clone() }
    }
}

/// Whether an ask may be sent again when its actor stopped without answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Redelivery {
    /// The command is idempotent: send it to the next activation.
    Idempotent,
    /// Send it again only if it was certainly never delivered.
    AtMostOnce,
}

const WAIT_STEP: Duration = Duration::from_millis(1);
const WAIT_LIMIT: Duration = Duration::from_secs(5);
const ATTEMPTS: usize = 4;

impl<K: EntityKind> Entities<K> {
    /// Starts the supervisor of this kind under `parent`.
    pub(crate) async fn start(
        ctx: Arc<K::Ctx>,
        config: SupervisionConfig,
        parent: ActorCell,
    ) -> Result<(Self, ActorRef<SupervisorMsg>), ractor::SpawnErr> {
        let registry = Arc::new(Registry::new(K::KIND, config));
        let behaviour = EntitySupervisor::<K> { registry: registry.clone(), ctx: ctx.clone() };
        let (supervisor, _) = Actor::spawn_linked(None, behaviour, (), parent).await?;
        Ok((Entities { registry, ctx, supervisor: supervisor.clone() }, supervisor))
    }

    pub(crate) fn supervisor_cell(&self) -> ActorCell {
        self.supervisor.get_cell()
    }

    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Asks entity `id`, activating it if it has no live actor. `make` builds
    /// the message around a fresh reply port (it may be called again for a
    /// redelivery).
    pub(crate) async fn ask<R: Send + 'static>(
        &self,
        id: u64,
        make: impl Fn(RpcReplyPort<R>) -> K::Msg,
        timeout: Duration,
        redelivery: Redelivery,
    ) -> Result<R, AskError> {
        let unavailable = |reason: &str| AskError::Unavailable { kind: K::KIND, id, reason: reason.to_owned() };
        for _ in 0..ATTEMPTS {
            let (actor, pending) = self.resolve(id).await?;
            if pending.fetch_add(1, Ordering::SeqCst) >= self.registry.config.max_pending {
                pending.fetch_sub(1, Ordering::SeqCst);
                metrics::counter!("sugang_asks_shed_total", "kind" => K::KIND).increment(1);
                return Err(AskError::Overloaded { kind: K::KIND, id });
            }
            let _outstanding = Outstanding(pending);
            let (tx, rx) = ractor::concurrency::oneshot();
            if actor.send_message(make(tx.into())).is_err() {
                // Never delivered: safe to send again whatever the command.
                tokio::time::sleep(WAIT_STEP).await;
                continue;
            }
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(_)) if redelivery == Redelivery::Idempotent => {
                    tokio::time::sleep(WAIT_STEP).await;
                }
                Ok(Err(_)) => return Err(unavailable("the actor stopped before answering")),
                Err(_) => return Err(unavailable("no answer in time")),
            }
        }
        Err(unavailable("the actor kept stopping"))
    }

    /// The live actor of `id`, activated if need be.
    async fn resolve(&self, id: u64) -> Result<(ActorRef<K::Msg>, Arc<AtomicUsize>), AskError> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let now = Instant::now();
            let mut restart = false;
            let activate = {
                let mut shard = self.registry.shard(id);
                match shard.get(&id) {
                    Some(Slot::Live { actor, pending }) => {
                        if matches!(actor.get_status(), ActorStatus::Stopping | ActorStatus::Stopped) {
                            false
                        } else {
                            return Ok((ActorRef::from(actor.clone()), pending.clone()));
                        }
                    }
                    Some(Slot::Down { until }) if *until > now => {
                        return Err(AskError::HeldDown { kind: K::KIND, id, retry_after: *until - now });
                    }
                    Some(Slot::Activating | Slot::Passivating { .. }) => false,
                    Some(Slot::Down { .. }) => {
                        // Its hold-down is over: this start is its restart.
                        shard.insert(id, Slot::Activating);
                        restart = true;
                        true
                    }
                    None => {
                        shard.insert(id, Slot::Activating);
                        true
                    }
                }
            };
            if activate {
                if restart {
                    self.registry.count_restart();
                }
                self.activate(id, restart).await?;
                continue;
            }
            if now >= deadline {
                return Err(AskError::Unavailable { kind: K::KIND, id, reason: "activation did not finish".into() });
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }

    /// Spawns the actor of `id` (its slot is `Activating`) under the supervisor.
    async fn activate(&self, id: u64, restarted: bool) -> Result<(), AskError> {
        spawn_entity::<K>(&self.registry, &self.ctx, self.supervisor.get_cell(), id, restarted)
            .await
            .map_err(|reason| AskError::Unavailable { kind: K::KIND, id, reason })
    }
}

/// Decrements an entity's outstanding-ask count when the ask ends.
struct Outstanding(Arc<AtomicUsize>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn spawn_entity<K: EntityKind>(
    registry: &Arc<Registry>,
    ctx: &Arc<K::Ctx>,
    supervisor: ActorCell,
    id: u64,
    restarted: bool,
) -> Result<(), String> {
    let args = EntityArgs { id, ctx: ctx.clone(), registry: registry.clone(), restarted };
    match Actor::spawn_linked(None, K::behaviour(), args, supervisor).await {
        Ok((actor, _)) => {
            lock(&registry.actors).insert(actor.get_id(), id);
            registry
                .shard(id)
                .insert(id, Slot::Live { actor: actor.get_cell(), pending: Arc::new(AtomicUsize::new(0)) });
            registry.activations_total.fetch_add(1, Ordering::Relaxed);
            registry.live_gauge();
            Ok(())
        }
        Err(e) => {
            let until = Instant::now() + registry.config.restart.backoff;
            registry.shard(id).insert(id, Slot::Down { until });
            tracing::error!(kind = K::KIND, id, error = %e, "entity actor failed to start; held down");
            Err(format!("it failed to start: {e}"))
        }
    }
}

/// Messages of an entity supervisor: only supervision events reach it.
pub(crate) enum SupervisorMsg {}

/// The supervisor of one kind of entity actors.
struct EntitySupervisor<K: EntityKind> {
    registry: Arc<Registry>,
    ctx: Arc<K::Ctx>,
}

impl<K: EntityKind> Actor for EntitySupervisor<K> {
    type Msg = SupervisorMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let Some(id) = lock(&self.registry.actors).remove(&cell.get_id()) else { return Ok(()) };
                let mut shard = self.registry.shard(id);
                let mine = match shard.get(&id) {
                    Some(Slot::Live { actor, .. }) => actor.get_id() == cell.get_id(),
                    Some(Slot::Passivating { actor }) => *actor == cell.get_id(),
                    _ => false,
                };
                if mine {
                    shard.remove(&id);
                }
                drop(shard);
                self.registry.passivations_total.fetch_add(1, Ordering::Relaxed);
                self.registry.live_gauge();
                tracing::debug!(kind = K::KIND, id, reason = reason.as_deref().unwrap_or(""), "entity actor stopped");
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(id) = lock(&self.registry.actors).remove(&cell.get_id()) else { return Ok(()) };
                self.restart(myself.get_cell(), id, cell.get_id(), &error.to_string()).await?;
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => {}
        }
        Ok(())
    }
}

impl<K: EntityKind> EntitySupervisor<K> {
    /// Carries out the restart policy for a failed entity: restarts it from
    /// its state in sled, holds it down, or (it kept failing after its
    /// hold-downs) fails this supervisor so the root escalates.
    async fn restart(
        &self,
        myself: ActorCell,
        id: u64,
        failed: ActorId,
        error: &str,
    ) -> Result<(), ActorProcessingErr> {
        let policy = &self.registry.config.restart;
        let now = Instant::now();
        let decision = {
            let mut shard = self.registry.shard(id);
            let mine = matches!(shard.get(&id), Some(Slot::Live { actor, .. }) if actor.get_id() == failed)
                || matches!(shard.get(&id), Some(Slot::Passivating { actor }) if *actor == failed);
            if !mine {
                return Ok(());
            }
            let decision = {
                let mut history = lock(&self.registry.history);
                history.retain(|other, h| *other == id || !h.is_quiet(policy, now));
                let history = history.entry(id).or_default();
                let decision = history.on_failure(policy, now);
                supervision::report(K::KIND, Some(id), error, history, decision);
                decision
            };
            match decision {
                Decision::Restart => shard.insert(id, Slot::Activating),
                Decision::HoldDown { until, .. } => shard.insert(id, Slot::Down { until }),
                Decision::Escalate => shard.insert(id, Slot::Down { until: now + policy.max_backoff }),
            };
            decision
        };
        match decision {
            Decision::Restart => {
                self.registry.count_restart();
                // A spawn failure is logged and held down inside.
                let _ = spawn_entity::<K>(&self.registry, &self.ctx, myself, id, true).await;
                Ok(())
            }
            Decision::HoldDown { .. } => {
                self.registry.live_gauge();
                Ok(())
            }
            Decision::Escalate => Err(format!("{} {id} kept failing after its hold-downs: {error}", K::KIND).into()),
        }
    }
}
