//! The root supervisor: restarts or holds down the payment actor, and
//! fail-stops the process when a child supervisor fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::faults::now_ms;
use crate::payment::actor::{PaymentActor, PaymentArgs, PaymentMsg};
use crate::supervision::{self, Decision, RestartHistory, RestartPolicy};

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
    pub(super) fn new(actor: ActorRef<PaymentMsg>) -> Self {
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

    pub(super) fn held_down_until_ms(&self) -> Option<u64> {
        self.0.held_until.lock().unwrap_or_else(|e| e.into_inner()).map(|(_, ms)| ms)
    }

    pub(super) fn restarts(&self) -> u64 {
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
pub(super) struct RootSupervisor;

#[derive(Default)]
pub(super) struct RootState {
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
