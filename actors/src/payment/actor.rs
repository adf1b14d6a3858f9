//! The payment actor: the one door to the payment gateway.
//!
//! Owns the breaker (fail fast while the gateway is sick), the bulkhead (a
//! bound on gateway calls in flight) and the per-call timeout. Calls run in
//! tasks of their own so a slow gateway never blocks the mailbox; their
//! outcome comes back as a message, which is where the breaker learns. Owns
//! refunds end to end: it commits a payment's `CANCELED` once the gateway
//! confirms, and retries owed refunds with backoff until they succeed, across
//! restarts (they are in the `refunds_owed` table). Approve and refund are
//! idempotent at the gateway by the saga's reservation key (never reused),
//! so a timed-out call is never charged twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use sugang_storage::{Batch, Journal, Store};
use tokio::time::Instant;

use super::breaker::{Breaker, BreakerConfig, BreakerSnapshot, Permit};
use super::gateway::{ChargeReceipt, ChargeRequest, GatewayError, PaymentGateway};
use super::{PaymentCommand, PaymentState, decide};
use crate::faults::now_ms;
use crate::model::EnrollmentId;
use crate::tables::{PAYMENTS, REFUNDS, RefundPurpose};

/// Payment settings.
#[derive(Clone, Debug)]
pub struct PaymentConfig {
    /// How long one gateway call may take before it counts as failed.
    pub timeout: Duration,
    pub breaker: BreakerConfig,
    /// The most gateway calls in flight; beyond it calls fail at once.
    pub bulkhead: usize,
    /// The first wait before retrying a failed refund (doubles, capped).
    pub refund_backoff: Duration,
    pub refund_backoff_max: Duration,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        PaymentConfig {
            timeout: Duration::from_millis(1000),
            breaker: BreakerConfig::default(),
            bulkhead: 256,
            refund_backoff: Duration::from_millis(500),
            refund_backoff_max: Duration::from_secs(30),
        }
    }
}

/// Why a payment did not go through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaymentFailure {
    /// The gateway refused the charge: a business answer (402).
    #[error("payment declined: {reason}")]
    Declined { reason: String },
    /// The gateway could not be used; nothing was or will be charged for it
    /// (a timed-out charge is voided). `retry_after` when known (breaker).
    #[error("payment unavailable: {reason}")]
    Unavailable { reason: String, retry_after: Option<Duration>, may_have_charged: bool },
}

pub(crate) enum PaymentMsg {
    Approve {
        request: ChargeRequest,
        reply: RpcReplyPort<Result<ChargeReceipt, PaymentFailure>>,
    },
    /// Refund an enrollment; with a reply port, answer once the refund is
    /// committed or failed (it is retried in the background either way).
    Refund {
        enrollment_id: EnrollmentId,
        purpose: RefundPurpose,
        reply: Option<RpcReplyPort<Result<u64, PaymentFailure>>>,
    },
    /// Retry every refund owed (at start-up).
    RetryOwed,
    /// The backoff of a failed refund elapsed: try it again.
    RetryRefund {
        enrollment_id: EnrollmentId,
        purpose: RefundPurpose,
        attempt: u32,
    },
    Settled {
        permit: Permit,
        outcome: Settlement,
    },
    Snapshot {
        reply: RpcReplyPort<PaymentSnapshot>,
    },
}

pub(crate) enum Settlement {
    Approve {
        result: Result<ChargeReceipt, GatewayError>,
        reply: RpcReplyPort<Result<ChargeReceipt, PaymentFailure>>,
    },
    Refund {
        enrollment_id: EnrollmentId,
        purpose: RefundPurpose,
        result: Result<u64, RefundError>,
        attempt: u32,
        reply: Option<RpcReplyPort<Result<u64, PaymentFailure>>>,
    },
}

pub(crate) enum RefundError {
    Gateway(GatewayError),
    /// The gateway refunded but recording it failed; retried like a failure
    /// (the gateway's refund is idempotent).
    Storage(String),
}

/// The breaker and bulkhead as `/admin/breaker` shows them.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentSnapshot {
    pub state: &'static str,
    pub failures: u32,
    /// Unix ms when the breaker last opened, while it is open or half-open.
    pub opened_at: Option<u64>,
    pub retry_after_ms: Option<u64>,
    pub reset_timeout_ms: u64,
    pub transitions: u64,
    pub in_flight: usize,
    pub bulkhead: usize,
    pub refunds_owed: usize,
    pub timeout_ms: u64,
}

/// The breaker's verdict, published for callers that want to fail fast
/// before they start work that would only be undone: while the breaker is
/// open, an enrollment is refused before it reserves a seat.
#[derive(Debug)]
pub(crate) struct BreakerGate {
    epoch: std::time::Instant,
    /// Milliseconds since `epoch` until which the breaker refuses calls; 0
    /// when it admits them.
    open_until_ms: std::sync::atomic::AtomicU64,
}

impl BreakerGate {
    pub(crate) fn new() -> Self {
        BreakerGate { epoch: std::time::Instant::now(), open_until_ms: std::sync::atomic::AtomicU64::new(0) }
    }

    /// How long the breaker still refuses calls, if it does.
    pub(crate) fn refusing_for(&self) -> Option<Duration> {
        let until = self.open_until_ms.load(std::sync::atomic::Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        (until > now).then(|| Duration::from_millis(until - now))
    }

    fn publish(&self, retry_after: Option<Duration>) {
        let until = retry_after.map_or(0, |after| (self.epoch.elapsed() + after).as_millis() as u64);
        self.open_until_ms.store(until, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(crate) struct PaymentArgs {
    /// Where the breaker's state is published for fail-fast callers.
    pub(crate) gate: Arc<BreakerGate>,
    pub(crate) store: Store,
    pub(crate) journal: Journal,
    pub(crate) gateway: Arc<dyn PaymentGateway>,
    pub(crate) config: PaymentConfig,
    /// Fault injection: the knob that makes this actor panic.
    pub(crate) faults: Arc<crate::faults::Faults>,
}

pub(crate) struct PaymentActor;

pub(crate) struct PaymentActorState {
    args: PaymentArgs,
    breaker: Breaker,
    in_flight: usize,
    /// Refunds being attempted or waiting for their retry, so each enrollment
    /// has one refund loop at a time.
    refunding: HashSet<EnrollmentId>,
}

impl Actor for PaymentActor {
    type Msg = PaymentMsg;
    type State = PaymentActorState;
    type Arguments = PaymentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PaymentMsg>,
        args: PaymentArgs,
    ) -> Result<PaymentActorState, ActorProcessingErr> {
        myself.send_message(PaymentMsg::RetryOwed)?;
        let breaker = Breaker::new(args.config.breaker);
        Ok(PaymentActorState { args, breaker, in_flight: 0, refunding: HashSet::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<PaymentMsg>,
        message: PaymentMsg,
        state: &mut PaymentActorState,
    ) -> Result<(), ActorProcessingErr> {
        if state.args.faults.payment_must_panic() {
            panic!("fault injected: the payment actor panics");
        }
        match message {
            PaymentMsg::Approve { request, reply } => state.approve(&myself, request, reply),
            PaymentMsg::Refund { enrollment_id, purpose, reply } => {
                if state.refunding.insert(enrollment_id) {
                    state.refund(&myself, enrollment_id, purpose, 0, reply);
                } else if let Some(reply) = reply {
                    let _ = reply.send(Err(PaymentFailure::Unavailable {
                        reason: "a refund for this enrollment is already being retried".into(),
                        retry_after: Some(state.args.config.refund_backoff),
                        may_have_charged: false,
                    }));
                }
            }
            PaymentMsg::RetryOwed => {
                let owed: Vec<_> = state.args.store.scan(&REFUNDS).collect::<Result<_, _>>()?;
                if !owed.is_empty() {
                    tracing::info!(count = owed.len(), "resuming owed refunds");
                }
                for (enrollment, refund) in owed {
                    let enrollment_id = EnrollmentId::assigned(enrollment);
                    if state.refunding.insert(enrollment_id) {
                        state.refund(&myself, enrollment_id, refund.purpose, 0, None);
                    }
                }
            }
            PaymentMsg::RetryRefund { enrollment_id, purpose, attempt } => {
                state.refund(&myself, enrollment_id, purpose, attempt, None);
            }
            PaymentMsg::Settled { permit, outcome } => state.settle(&myself, permit, outcome),
            PaymentMsg::Snapshot { reply } => {
                let _ = reply.send(state.snapshot());
            }
        }
        Ok(())
    }
}

impl PaymentActorState {
    /// Admits a gateway call for `enrollment_id` through the bulkhead and
    /// the breaker (whose permit is tagged with the enrollment, so its calls
    /// fail once between them: see the breaker's "What counts").
    fn admit(&mut self, enrollment_id: EnrollmentId) -> Result<Permit, PaymentFailure> {
        if self.in_flight >= self.args.config.bulkhead {
            metrics::counter!("sugang_payment_rejected_total", "reason" => "bulkhead").increment(1);
            return Err(PaymentFailure::Unavailable {
                reason: "too many payments in flight".into(),
                retry_after: Some(Duration::from_secs(1)),
                may_have_charged: false,
            });
        }
        let acquired = self.breaker.try_acquire(Instant::now());
        self.publish_gate();
        let permit = acquired.map(|permit| permit.for_enrollment(enrollment_id.get())).map_err(|open| {
            metrics::counter!("sugang_payment_rejected_total", "reason" => "breaker_open").increment(1);
            PaymentFailure::Unavailable {
                reason: "the payment gateway is failing; the circuit breaker is open".into(),
                retry_after: Some(open.retry_after),
                may_have_charged: false,
            }
        })?;
        self.in_flight += 1;
        metrics::gauge!("sugang_payment_in_flight").set(self.in_flight as f64);
        Ok(permit)
    }

    fn approve(
        &mut self,
        myself: &ActorRef<PaymentMsg>,
        request: ChargeRequest,
        reply: RpcReplyPort<Result<ChargeReceipt, PaymentFailure>>,
    ) {
        let permit = match self.admit(EnrollmentId::assigned(request.enrollment_id)) {
            Ok(permit) => permit,
            Err(failure) => {
                let _ = reply.send(Err(failure));
                return;
            }
        };
        let gateway = self.args.gateway.clone();
        let timeout = self.args.config.timeout;
        let myself = myself.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, gateway.approve(request)).await {
                Ok(result) => result,
                Err(_) => {
                    Err(GatewayError::Unavailable { reason: format!("no answer within {} ms", timeout.as_millis()) })
                }
            };
            metrics::histogram!("sugang_payment_call_seconds", "op" => "approve")
                .record(started.elapsed().as_secs_f64());
            let _ = myself.send_message(PaymentMsg::Settled { permit, outcome: Settlement::Approve { result, reply } });
        });
    }

    fn refund(
        &mut self,
        myself: &ActorRef<PaymentMsg>,
        enrollment_id: EnrollmentId,
        purpose: RefundPurpose,
        attempt: u32,
        reply: Option<RpcReplyPort<Result<u64, PaymentFailure>>>,
    ) {
        let permit = match self.admit(enrollment_id) {
            Ok(permit) => permit,
            Err(failure) => {
                let retry_after = match &failure {
                    PaymentFailure::Unavailable { retry_after: Some(after), .. } => *after,
                    _ => self.backoff(attempt),
                };
                self.retry_refund_later(myself, enrollment_id, purpose, attempt, retry_after);
                if let Some(reply) = reply {
                    let _ = reply.send(Err(failure));
                }
                return;
            }
        };
        let gateway = self.args.gateway.clone();
        let timeout = self.args.config.timeout;
        let store = self.args.store.clone();
        let journal = self.args.journal.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = match charge_key(&store, enrollment_id, purpose) {
                Ok(key) => {
                    let refunded = match tokio::time::timeout(timeout, gateway.refund(key)).await {
                        Ok(result) => result,
                        Err(_) => Err(GatewayError::Unavailable {
                            reason: format!("no answer within {} ms", timeout.as_millis()),
                        }),
                    };
                    match refunded {
                        Ok(()) => {
                            record_refund(&store, &journal, enrollment_id, purpose).await.map_err(RefundError::Storage)
                        }
                        Err(e) => Err(RefundError::Gateway(e)),
                    }
                }
                Err(e) => Err(RefundError::Storage(e.to_string())),
            };
            let outcome = Settlement::Refund { enrollment_id, purpose, result, attempt, reply };
            let _ = myself.send_message(PaymentMsg::Settled { permit, outcome });
        });
    }

    /// Publishes whether the breaker refuses calls now, and for how long.
    fn publish_gate(&self) {
        let snapshot = self.breaker.snapshot(Instant::now());
        let refusing = (snapshot.state == super::breaker::BreakerState::Open).then_some(snapshot.retry_after).flatten();
        self.args.gate.publish(refusing);
    }

    fn settle(&mut self, myself: &ActorRef<PaymentMsg>, permit: Permit, outcome: Settlement) {
        self.settle_outcome(myself, permit, outcome);
        self.publish_gate();
    }

    fn settle_outcome(&mut self, myself: &ActorRef<PaymentMsg>, permit: Permit, outcome: Settlement) {
        self.in_flight -= 1;
        metrics::gauge!("sugang_payment_in_flight").set(self.in_flight as f64);
        let now = Instant::now();
        match outcome {
            Settlement::Approve { result, reply } => {
                let answer = match result {
                    Ok(receipt) => {
                        self.breaker.on_success(permit, now);
                        metrics::counter!("sugang_payments_total", "outcome" => "approved").increment(1);
                        Ok(receipt)
                    }
                    Err(GatewayError::Declined { reason }) => {
                        self.breaker.on_success(permit, now);
                        metrics::counter!("sugang_payments_total", "outcome" => "declined").increment(1);
                        Err(PaymentFailure::Declined { reason })
                    }
                    Err(GatewayError::Unavailable { reason }) => {
                        self.breaker.on_failure(permit, now);
                        metrics::counter!("sugang_payments_total", "outcome" => "unavailable").increment(1);
                        Err(PaymentFailure::Unavailable { reason, retry_after: None, may_have_charged: true })
                    }
                };
                let _ = reply.send(answer);
            }
            Settlement::Refund { enrollment_id, purpose, result, attempt, reply } => match result {
                Ok(seq) => {
                    self.breaker.on_success(permit, now);
                    self.refunding.remove(&enrollment_id);
                    metrics::counter!("sugang_refunds_total", "outcome" => "refunded").increment(1);
                    tracing::info!(enrollment_id = enrollment_id.get(), ?purpose, attempt, "refund confirmed");
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(seq));
                    }
                }
                Err(error) => {
                    let reason = match error {
                        RefundError::Gateway(e) => {
                            if e.is_fault() {
                                self.breaker.on_failure(permit, now);
                            } else {
                                self.breaker.on_success(permit, now);
                            }
                            e.to_string()
                        }
                        RefundError::Storage(e) => {
                            self.breaker.on_success(permit, now);
                            e
                        }
                    };
                    metrics::counter!("sugang_refunds_total", "outcome" => "retrying").increment(1);
                    let after = self.backoff(attempt);
                    tracing::warn!(
                        enrollment_id = enrollment_id.get(), ?purpose, attempt, %reason,
                        retry_in_ms = after.as_millis() as u64, "refund failed; will retry"
                    );
                    self.retry_refund_later(myself, enrollment_id, purpose, attempt, after);
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(PaymentFailure::Unavailable {
                            reason,
                            retry_after: Some(after),
                            may_have_charged: false,
                        }));
                    }
                }
            },
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.args.config.refund_backoff;
        base.saturating_mul(1 << attempt.min(16)).min(self.args.config.refund_backoff_max)
    }

    fn retry_refund_later(
        &self,
        myself: &ActorRef<PaymentMsg>,
        enrollment_id: EnrollmentId,
        purpose: RefundPurpose,
        attempt: u32,
        after: Duration,
    ) {
        myself.send_after(after, move || PaymentMsg::RetryRefund { enrollment_id, purpose, attempt: attempt + 1 });
    }

    fn snapshot(&self) -> PaymentSnapshot {
        let now = Instant::now();
        let snap: BreakerSnapshot = self.breaker.snapshot(now);
        let opened_at = snap.opened_at.map(|at| now_ms().saturating_sub((now - at).as_millis() as u64));
        PaymentSnapshot {
            state: snap.state.as_str(),
            failures: snap.consecutive_failures,
            opened_at,
            retry_after_ms: snap.retry_after.map(|d| d.as_millis() as u64),
            reset_timeout_ms: snap.reset_timeout.as_millis() as u64,
            transitions: snap.transitions,
            in_flight: self.in_flight,
            bulkhead: self.args.config.bulkhead,
            refunds_owed: self.refunding.len(),
            timeout_ms: self.args.config.timeout.as_millis() as u64,
        }
    }
}

/// The key the gateway knows the charge by: a void is owed under the saga's
/// reservation key itself; a canceled enrollment's charge was made under its
/// saga's reservation key, recorded at completion (older enrollments were
/// charged under their own id).
fn charge_key(store: &Store, owed: EnrollmentId, purpose: RefundPurpose) -> Result<u64, sugang_storage::StorageError> {
    Ok(match purpose {
        RefundPurpose::Void => owed.get(),
        RefundPurpose::Cancel => store.get(&PAYMENTS, &owed.get())?.map_or(owed.get(), |payment| payment.charge_key),
    })
}

/// Commits a confirmed refund: the payment becomes `CANCELED` (for a
/// cancellation) and the owed refund is struck off.
async fn record_refund(
    store: &Store,
    journal: &Journal,
    enrollment_id: EnrollmentId,
    purpose: RefundPurpose,
) -> Result<u64, String> {
    let mut batch = Batch::new();
    batch.delete(&REFUNDS, &enrollment_id.get());
    if purpose == RefundPurpose::Cancel {
        let state = match store.get(&PAYMENTS, &enrollment_id.get()).map_err(|e| e.to_string())? {
            Some(payment) => PaymentState::Recorded(payment),
            None => PaymentState::None { enrollment_id },
        };
        let events = decide(&state, PaymentCommand::ConfirmCancel, now_ms()).map_err(|e| e.to_string())?;
        super::write_events(&mut batch, state, &events, None).map_err(|e| e.to_string())?;
    }
    journal.commit(batch).await.map(|receipt| receipt.seq).map_err(|e| e.to_string())
}
