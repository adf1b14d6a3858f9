//! The payment gateway port ([`PaymentGateway`]) and the simulated gateway
//! sugang runs with by default ([`SimulatedGateway`]).
//!
//! The port is what the payment actor calls to move money: approve a fee,
//! refund it. Both are idempotent by enrollment id, because a caller's timeout
//! does not cancel the gateway: an ask that timed out may still have charged,
//! and the caller's only safe move is to ask again or refund, either of which
//! must be harmless if repeated.
//!
//! The simulated gateway keeps its ledger in process memory, where a real
//! gateway's ledger lives at the gateway: it is the other party's record, not
//! sugang's (sugang's record of payments is the payment actor's, in the
//! store), and it is lost when the process exits. Its fault knobs
//! ([`GatewayFaults`]: latency, failure rate, down) can be turned at run time
//! from any thread, so the timeouts, the breaker and the saga compensations
//! can be exercised on a running service.
//!
//! Must not touch the store, the actors, the breaker or HTTP: what a failure
//! means for the breaker or for an enrollment is the payment actor's call.
//! Holds no lock across an await.
//!
//! # How a simulated call plays out
//!
//! A call takes effect when its future is first polled: the gateway reads the
//! fault knobs, decides, and applies the outcome to its ledger at once; the
//! answer then takes `latency_ms` to come back. So a caller whose timeout is
//! shorter than the latency gets no answer although the charge happened: the
//! lost answer that makes idempotency matter. A future dropped before its
//! first poll did nothing. In order, a call is:
//!
//! 1. `down` → [`GatewayError::Unavailable`], ledger untouched;
//! 2. with probability `failure_rate` → `Unavailable`, ledger untouched;
//! 3. for approve: an enrollment already charged gets its original receipt
//!    and is charged nothing more; an enrollment already refunded (or voided)
//!    is [`GatewayError::Declined`]; the test card [`DECLINED_ACCOUNT`] is
//!    `Declined` and charges nothing; anything else is charged once;
//! 4. for refund: a charged enrollment is refunded; one already refunded or
//!    voided is left alone; one never charged is voided: nothing moves, but a
//!    later approve of it is declined, so an approve that reaches the gateway
//!    after its compensating refund can never leave a fee charged.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The card number that is always declined: the card-test convention, so a
/// test or a demo can provoke a declined payment on purpose.
pub const DECLINED_ACCOUNT: &str = "4000000000000002";

/// The longest latency [`GatewayFaults::validate`] accepts, in milliseconds.
/// A minute outlasts any caller's timeout; a slower gateway is simply down.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// A request to charge an enrollment's fee.
#[derive(Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// The enrollment paying: the idempotency key of the charge.
    pub enrollment_id: u64,
    /// The fee, in won.
    pub amount: u64,
    /// How the student pays (card, transfer, ...), as the gateway names it.
    pub pay_method: String,
    /// The card or account number, if the method needs one. Masked in
    /// `Debug` output so it stays out of logs.
    pub pay_account: Option<String>,
}

impl fmt::Debug for ChargeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pay_account = self.pay_account.as_deref().map(masked);
        f.debug_struct("ChargeRequest")
            .field("enrollment_id", &self.enrollment_id)
            .field("amount", &self.amount)
            .field("pay_method", &self.pay_method)
            .field("pay_account", &pay_account)
            .finish()
    }
}

/// `account` with all but its last four characters hidden.
fn masked(account: &str) -> String {
    let shown = account.chars().count().saturating_sub(4);
    account.chars().enumerate().map(|(i, c)| if i < shown { '*' } else { c }).collect()
}

/// The gateway's proof that an enrollment was charged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeReceipt {
    /// The enrollment charged.
    pub enrollment_id: u64,
    /// What was charged, in won: the amount of the first approve, whatever a
    /// repeat asked for.
    pub amount: u64,
    /// The gateway's own reference for the charge, for reconciliation with
    /// the gateway's records.
    pub gateway_ref: String,
}

/// Why a gateway call did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// A business answer: the gateway works and refused the payment (card
    /// declined, enrollment already refunded). Nothing was charged. Not a
    /// failure for the breaker.
    #[error("payment declined: {reason}")]
    Declined {
        /// Why, in the gateway's words, for the student.
        reason: String,
    },
    /// A fault: the gateway could not answer. Counts against the breaker.
    #[error("payment gateway unavailable: {reason}")]
    Unavailable {
        /// What went wrong, for the operator.
        reason: String,
    },
}

impl GatewayError {
    /// Whether this is a fault of the gateway (which the breaker counts)
    /// rather than a business answer.
    pub fn is_fault(&self) -> bool {
        matches!(self, GatewayError::Unavailable { .. })
    }
}

/// What a gateway call returns: boxed, so [`PaymentGateway`] can be used as a
/// trait object, and `'static`, so the caller can run it on its own task.
pub type GatewayFuture<T> = Pin<Box<dyn Future<Output = Result<T, GatewayError>> + Send + 'static>>;

/// A payment gateway: where enrollment fees are charged and refunded.
pub trait PaymentGateway: Send + Sync + 'static {
    /// Charges `request.amount` for the enrollment.
    ///
    /// Idempotent by enrollment id: approving an enrollment that is already
    /// charged returns the same receipt and charges nothing more. An
    /// enrollment that was refunded cannot be charged again: approving it is
    /// declined.
    fn approve(&self, request: ChargeRequest) -> GatewayFuture<ChargeReceipt>;

    /// Refunds the enrollment's fee.
    ///
    /// Idempotent by enrollment id: refunding an enrollment that was never
    /// charged, or is already refunded, succeeds and moves no money.
    fn refund(&self, enrollment_id: u64) -> GatewayFuture<()>;
}

/// The simulated gateway's fault knobs, set at run time through the admin
/// API (hence camelCase JSON; a missing field is its default, an unknown
/// one is an error).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayFaults {
    /// How long every answer takes, in milliseconds: exercises the caller's
    /// timeout.
    pub latency_ms: u64,
    /// The share of calls, from 0.0 to 1.0, that fail as unavailable:
    /// exercises the breaker on a flaky gateway.
    pub failure_rate: f64,
    /// Whether every call fails as unavailable: exercises the breaker on a
    /// dead gateway.
    pub down: bool,
}

impl GatewayFaults {
    /// Checks that the knobs make sense, naming the JSON field that does not.
    ///
    /// # Errors
    ///
    /// [`InvalidFaults`] if `failureRate` is not within 0.0..=1.0 (NaN
    /// included) or `latencyMs` is above [`MAX_LATENCY_MS`].
    pub fn validate(&self) -> Result<(), InvalidFaults> {
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(InvalidFaults {
                field: "failureRate",
                reason: format!("must be between 0.0 and 1.0, got {}", self.failure_rate),
            });
        }
        if self.latency_ms > MAX_LATENCY_MS {
            return Err(InvalidFaults {
                field: "latencyMs",
                reason: format!("must be at most {MAX_LATENCY_MS}, got {}", self.latency_ms),
            });
        }
        Ok(())
    }

    /// The injected fault for one call, if any. A `failure_rate` that was
    /// never validated fails no call if below 0.0 or NaN, every call if above
    /// 1.0.
    fn fault(&self) -> Option<GatewayError> {
        if self.down {
            return Some(GatewayError::Unavailable { reason: "gateway is down (injected fault)".to_owned() });
        }
        if fastrand::f64() < self.failure_rate {
            return Some(GatewayError::Unavailable { reason: "gateway failed (injected fault)".to_owned() });
        }
        None
    }
}

/// Fault knobs that were refused, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidFaults {
    /// The JSON name of the field that was wrong, for the problem response.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// The simulated gateway's ledger in numbers, for the admin API and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerSummary {
    /// Enrollments charged and not refunded.
    pub charged: u64,
    /// Enrollments charged and then refunded.
    pub refunded: u64,
    /// Enrollments refunded before any charge, which can no longer be
    /// charged: compensations that overtook their approve.
    pub voided: u64,
    /// What the gateway holds, in won: the sum of the charges not refunded.
    pub charged_amount: u64,
}

/// Where one enrollment stands in the simulated gateway's ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeStatus {
    /// Its fee is charged.
    Charged {
        /// The fee charged, in won.
        amount: u64,
        /// The reference its receipt carries.
        gateway_ref: String,
    },
    /// Its fee was charged and then refunded.
    Refunded {
        /// The fee refunded, in won.
        amount: u64,
        /// The reference of the charge that was refunded.
        gateway_ref: String,
    },
    /// It was refunded before it was ever charged; it cannot be charged.
    Voided,
}

/// A payment gateway simulated in process memory, with fault knobs. Cheap to
/// clone: clones share the ledger and the knobs.
#[derive(Clone, Debug, Default)]
pub struct SimulatedGateway {
    /// Shared by every clone, so the admin edge and the payment actor see one
    /// gateway.
    shared: Arc<Shared>,
}

/// What the clones of one simulated gateway share.
#[derive(Debug, Default)]
struct Shared {
    /// The knobs, read once at the start of each call.
    faults: Mutex<GatewayFaults>,
    /// The ledger; locked only for the instant a call applies its outcome.
    ledger: Mutex<Ledger>,
}

/// The gateway side's record of every enrollment it has seen.
#[derive(Debug, Default)]
struct Ledger {
    /// Every charge made, refunded or not, by enrollment id.
    charges: HashMap<u64, Charge>,
    /// Enrollments refunded before any charge: approving them is declined.
    voided: HashSet<u64>,
    /// Kept up to date with every change, so reading it costs nothing.
    summary: LedgerSummary,
    /// The number of charges made so far, for the next gateway reference.
    charges_made: u64,
}

/// One charge in the ledger: 24 bytes and no allocation of its own, since
/// the ledger holds one per enrollment ever charged (a million after
/// `bench/million.sh`).
#[derive(Debug)]
struct Charge {
    /// The fee charged, in won.
    amount: u64,
    /// Which charge it was: the reference on the receipt ([`Charge::gateway_ref`]),
    /// returned again on a repeat.
    number: u64,
    /// Whether the fee has been given back.
    refunded: bool,
}

impl Charge {
    /// The reference given on the receipt.
    fn gateway_ref(&self) -> String {
        format!("sim-{:08}", self.number)
    }
}

impl SimulatedGateway {
    /// A healthy gateway with an empty ledger.
    pub fn new() -> Self {
        SimulatedGateway::default()
    }

    /// A gateway with an empty ledger and the given fault knobs.
    pub fn with_faults(faults: GatewayFaults) -> Self {
        let gateway = SimulatedGateway::new();
        gateway.set_faults(faults);
        gateway
    }

    /// The fault knobs in force.
    pub fn faults(&self) -> GatewayFaults {
        *lock(&self.shared.faults)
    }

    /// Sets the fault knobs; calls that start from now on obey them. Validate
    /// them first ([`GatewayFaults::validate`]).
    pub fn set_faults(&self, faults: GatewayFaults) {
        *lock(&self.shared.faults) = faults;
        tracing::info!(
            latency_ms = faults.latency_ms,
            failure_rate = faults.failure_rate,
            down = faults.down,
            "simulated payment gateway faults set"
        );
    }

    /// The ledger in numbers.
    pub fn ledger(&self) -> LedgerSummary {
        lock(&self.shared.ledger).summary
    }

    /// Where the enrollment stands in the ledger; `None` if the gateway has
    /// never charged or refunded it.
    pub fn charge_of(&self, enrollment_id: u64) -> Option<ChargeStatus> {
        let ledger = lock(&self.shared.ledger);
        if let Some(charge) = ledger.charges.get(&enrollment_id) {
            let amount = charge.amount;
            let gateway_ref = charge.gateway_ref();
            return Some(if charge.refunded {
                ChargeStatus::Refunded { amount, gateway_ref }
            } else {
                ChargeStatus::Charged { amount, gateway_ref }
            });
        }
        ledger.voided.contains(&enrollment_id).then_some(ChargeStatus::Voided)
    }
}

impl PaymentGateway for SimulatedGateway {
    fn approve(&self, request: ChargeRequest) -> GatewayFuture<ChargeReceipt> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let faults = *lock(&shared.faults);
            let answer = match faults.fault() {
                Some(fault) => Err(fault),
                None => lock(&shared.ledger).approve(&request),
            };
            let outcome = match &answer {
                Ok(_) => "approved",
                Err(GatewayError::Declined { .. }) => "declined",
                Err(GatewayError::Unavailable { .. }) => "unavailable",
            };
            count_call("approve", outcome);
            tracing::debug!(
                enrollment_id = request.enrollment_id,
                amount = request.amount,
                pay_method = %request.pay_method,
                outcome,
                "simulated payment gateway approve"
            );
            answer_after(faults, answer).await
        })
    }

    fn refund(&self, enrollment_id: u64) -> GatewayFuture<()> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let faults = *lock(&shared.faults);
            let answer = match faults.fault() {
                Some(fault) => Err(fault),
                None => {
                    lock(&shared.ledger).refund(enrollment_id);
                    Ok(())
                }
            };
            let outcome = if answer.is_ok() { "refunded" } else { "unavailable" };
            count_call("refund", outcome);
            tracing::debug!(enrollment_id, outcome, "simulated payment gateway refund");
            answer_after(faults, answer).await
        })
    }
}

impl Ledger {
    /// Applies an approve that passed the fault knobs.
    fn approve(&mut self, request: &ChargeRequest) -> Result<ChargeReceipt, GatewayError> {
        let enrollment_id = request.enrollment_id;
        if let Some(charge) = self.charges.get(&enrollment_id) {
            if charge.refunded {
                return Err(refunded_already(enrollment_id));
            }
            return Ok(ChargeReceipt { enrollment_id, amount: charge.amount, gateway_ref: charge.gateway_ref() });
        }
        if self.voided.contains(&enrollment_id) {
            return Err(refunded_already(enrollment_id));
        }
        if request.pay_account.as_deref() == Some(DECLINED_ACCOUNT) {
            return Err(GatewayError::Declined { reason: "card declined".to_owned() });
        }
        self.charges_made += 1;
        let charge = Charge { amount: request.amount, number: self.charges_made, refunded: false };
        let gateway_ref = charge.gateway_ref();
        self.charges.insert(enrollment_id, charge);
        self.summary.charged += 1;
        self.summary.charged_amount = self.summary.charged_amount.saturating_add(request.amount);
        Ok(ChargeReceipt { enrollment_id, amount: request.amount, gateway_ref })
    }

    /// Applies a refund that passed the fault knobs.
    fn refund(&mut self, enrollment_id: u64) {
        match self.charges.get_mut(&enrollment_id) {
            Some(charge) if !charge.refunded => {
                charge.refunded = true;
                self.summary.charged = self.summary.charged.saturating_sub(1);
                self.summary.refunded += 1;
                self.summary.charged_amount = self.summary.charged_amount.saturating_sub(charge.amount);
            }
            Some(_) => {}
            None => {
                if self.voided.insert(enrollment_id) {
                    self.summary.voided += 1;
                }
            }
        }
    }
}

/// The answer to approving an enrollment that has been refunded.
fn refunded_already(enrollment_id: u64) -> GatewayError {
    GatewayError::Declined { reason: format!("enrollment {enrollment_id} was refunded and cannot be charged again") }
}

/// Delivers `answer` once the injected latency has passed.
async fn answer_after<T>(faults: GatewayFaults, answer: Result<T, GatewayError>) -> Result<T, GatewayError> {
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    answer
}

/// Counts one call in `sugang_gateway_calls_total`, when the gateway decides
/// (so a call whose answer never reached its caller is counted too).
fn count_call(op: &'static str, outcome: &'static str) {
    metrics::counter!("sugang_gateway_calls_total", "op" => op, "outcome" => outcome).increment(1);
}

/// Locks `mutex`, recovering it if a thread panicked while holding it: every
/// critical section here leaves the data consistent before it can panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    const FEE: u64 = 150_000;

    fn request(enrollment_id: u64) -> ChargeRequest {
        ChargeRequest {
            enrollment_id,
            amount: FEE,
            pay_method: "card".to_owned(),
            pay_account: Some("4111111111111111".to_owned()),
        }
    }

    fn declined_card(enrollment_id: u64) -> ChargeRequest {
        ChargeRequest { pay_account: Some(DECLINED_ACCOUNT.to_owned()), ..request(enrollment_id) }
    }

    fn assert_unavailable<T: fmt::Debug>(answer: &Result<T, GatewayError>) {
        assert!(matches!(answer, Err(GatewayError::Unavailable { .. })), "expected unavailable, got {answer:?}");
    }

    fn summary(charged: u64, refunded: u64, voided: u64, charged_amount: u64) -> LedgerSummary {
        LedgerSummary { charged, refunded, voided, charged_amount }
    }

    #[tokio::test]
    async fn approve_charges_once_and_repeats_return_the_same_receipt() {
        let gateway = SimulatedGateway::new();
        let first = gateway.approve(request(7)).await.expect("approved");
        assert_eq!(first.enrollment_id, 7);
        assert_eq!(first.amount, FEE);
        assert_eq!(first.gateway_ref, "sim-00000001");

        let repeat = gateway.approve(request(7)).await.expect("approved");
        assert_eq!(repeat, first);
        let other_amount = ChargeRequest { amount: 1, ..request(7) };
        assert_eq!(gateway.approve(other_amount).await, Ok(first.clone()));

        assert_eq!(gateway.ledger(), summary(1, 0, 0, FEE));
        assert_eq!(gateway.charge_of(7), Some(ChargeStatus::Charged { amount: FEE, gateway_ref: first.gateway_ref }));
    }

    #[tokio::test]
    async fn each_enrollment_is_charged_separately() {
        let gateway = SimulatedGateway::new();
        let first = gateway.approve(request(1)).await.expect("approved");
        let second = gateway.approve(request(2)).await.expect("approved");
        assert_ne!(first.gateway_ref, second.gateway_ref);
        assert_eq!(gateway.ledger(), summary(2, 0, 0, 2 * FEE));
    }

    #[tokio::test]
    async fn refund_gives_the_fee_back_once() {
        let gateway = SimulatedGateway::new();
        let receipt = gateway.approve(request(7)).await.expect("approved");
        assert_eq!(gateway.refund(7).await, Ok(()));
        assert_eq!(gateway.ledger(), summary(0, 1, 0, 0));

        assert_eq!(gateway.refund(7).await, Ok(()));
        assert_eq!(gateway.ledger(), summary(0, 1, 0, 0));
        assert_eq!(
            gateway.charge_of(7),
            Some(ChargeStatus::Refunded { amount: FEE, gateway_ref: receipt.gateway_ref })
        );
    }

    #[tokio::test]
    async fn a_refunded_enrollment_cannot_be_charged_again() {
        let gateway = SimulatedGateway::new();
        gateway.approve(request(7)).await.expect("approved");
        gateway.refund(7).await.expect("refunded");

        let again = gateway.approve(request(7)).await;
        assert!(matches!(again, Err(GatewayError::Declined { .. })), "{again:?}");
        assert_eq!(gateway.ledger(), summary(0, 1, 0, 0));
    }

    #[tokio::test]
    async fn refund_of_an_unknown_enrollment_succeeds_and_moves_nothing() {
        let gateway = SimulatedGateway::new();
        assert_eq!(gateway.refund(9).await, Ok(()));
        assert_eq!(gateway.refund(9).await, Ok(()));
        assert_eq!(gateway.ledger(), summary(0, 0, 1, 0));
        assert_eq!(gateway.charge_of(9), Some(ChargeStatus::Voided));

        // The approve that the refund compensated for arrives late.
        let late = gateway.approve(request(9)).await;
        assert!(matches!(late, Err(GatewayError::Declined { .. })), "{late:?}");
        assert_eq!(gateway.ledger(), summary(0, 0, 1, 0));
        assert_eq!(gateway.charge_of(9), Some(ChargeStatus::Voided));
    }

    #[tokio::test]
    async fn a_declined_card_charges_nothing() {
        let gateway = SimulatedGateway::new();
        let answer = gateway.approve(declined_card(3)).await;
        assert_eq!(answer, Err(GatewayError::Declined { reason: "card declined".to_owned() }));
        assert!(answer.as_ref().is_err_and(|error| !error.is_fault()));
        assert_eq!(gateway.ledger(), LedgerSummary::default());
        assert_eq!(gateway.charge_of(3), None);

        // A declined card leaves the enrollment free to pay another way.
        gateway.approve(request(3)).await.expect("approved");
        assert_eq!(gateway.ledger(), summary(1, 0, 0, FEE));
    }

    #[tokio::test]
    async fn a_down_gateway_is_unavailable_and_touches_nothing() {
        let gateway = SimulatedGateway::new();
        gateway.approve(request(1)).await.expect("approved");
        gateway.set_faults(GatewayFaults { down: true, ..GatewayFaults::default() });

        let approve = gateway.approve(request(2)).await;
        assert_unavailable(&approve);
        assert!(approve.is_err_and(|error| error.is_fault()));
        assert_unavailable(&gateway.refund(1).await);
        assert_eq!(gateway.ledger(), summary(1, 0, 0, FEE));
        assert_eq!(gateway.charge_of(2), None);

        gateway.set_faults(GatewayFaults::default());
        assert_eq!(gateway.refund(1).await, Ok(()));
        assert_eq!(gateway.ledger(), summary(0, 1, 0, 0));
    }

    #[tokio::test]
    async fn a_failure_rate_of_one_always_fails() {
        let gateway = SimulatedGateway::with_faults(GatewayFaults { failure_rate: 1.0, ..GatewayFaults::default() });
        for id in 0..200 {
            assert_unavailable(&gateway.approve(request(id)).await);
            assert_unavailable(&gateway.refund(id).await);
        }
        assert_eq!(gateway.ledger(), LedgerSummary::default());
    }

    #[tokio::test]
    async fn a_failure_rate_of_zero_never_fails() {
        let gateway = SimulatedGateway::with_faults(GatewayFaults { failure_rate: 0.0, ..GatewayFaults::default() });
        for id in 0..200 {
            gateway.approve(request(id)).await.expect("approved");
        }
        assert_eq!(gateway.ledger(), summary(200, 0, 0, 200 * FEE));
    }

    #[tokio::test]
    async fn a_failure_rate_between_fails_some_calls() {
        let gateway = SimulatedGateway::with_faults(GatewayFaults { failure_rate: 0.5, ..GatewayFaults::default() });
        let mut failed = 0;
        for id in 0..1_000 {
            if gateway.approve(request(id)).await.is_err() {
                failed += 1;
            }
        }
        // Binomial(1000, 0.5): outside 350..=650 is a ten-sigma event.
        assert!((350..=650).contains(&failed), "{failed} of 1000 failed");
        assert_eq!(gateway.ledger().charged, 1_000 - failed);
    }

    #[tokio::test(start_paused = true)]
    async fn every_answer_takes_the_injected_latency() {
        let gateway = SimulatedGateway::with_faults(GatewayFaults { latency_ms: 250, ..GatewayFaults::default() });
        let latency = Duration::from_millis(250);

        let start = Instant::now();
        gateway.approve(request(1)).await.expect("approved");
        assert_eq!(start.elapsed(), latency);

        let start = Instant::now();
        gateway.refund(1).await.expect("refunded");
        assert_eq!(start.elapsed(), latency);

        gateway.set_faults(GatewayFaults { latency_ms: 250, down: true, ..GatewayFaults::default() });
        let start = Instant::now();
        assert_unavailable(&gateway.approve(request(2)).await);
        assert_eq!(start.elapsed(), latency);
    }

    #[tokio::test(start_paused = true)]
    async fn no_latency_answers_at_once() {
        let gateway = SimulatedGateway::new();
        let start = Instant::now();
        gateway.approve(request(1)).await.expect("approved");
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_approve_may_have_charged_and_a_refund_voids_it() {
        let gateway = SimulatedGateway::with_faults(GatewayFaults { latency_ms: 1_000, ..GatewayFaults::default() });
        let start = Instant::now();
        let answer = tokio::time::timeout(Duration::from_millis(100), gateway.approve(request(5))).await;
        assert!(answer.is_err(), "the caller gave up: {answer:?}");
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(gateway.ledger(), summary(1, 0, 0, FEE));
        assert!(matches!(gateway.charge_of(5), Some(ChargeStatus::Charged { amount: FEE, .. })));

        gateway.refund(5).await.expect("refunded");
        assert_eq!(gateway.ledger(), summary(0, 1, 0, 0));
        assert!(matches!(gateway.charge_of(5), Some(ChargeStatus::Refunded { amount: FEE, .. })));
    }

    #[tokio::test]
    async fn a_call_never_polled_does_nothing() {
        let gateway = SimulatedGateway::new();
        drop(gateway.approve(request(5)));
        drop(gateway.refund(6));
        assert_eq!(gateway.ledger(), LedgerSummary::default());
        assert_eq!(gateway.charge_of(5), None);
        assert_eq!(gateway.charge_of(6), None);
    }

    #[tokio::test]
    async fn faults_set_from_another_thread_apply_to_every_clone() {
        let gateway = SimulatedGateway::new();
        let admin = gateway.clone();
        let faults = GatewayFaults { latency_ms: 0, failure_rate: 0.25, down: true };
        std::thread::spawn(move || admin.set_faults(faults)).join().expect("admin thread");
        assert_eq!(gateway.faults(), faults);
        assert_unavailable(&gateway.approve(request(1)).await);
    }

    #[test]
    fn default_faults_are_none() {
        assert_eq!(GatewayFaults::default(), GatewayFaults { latency_ms: 0, failure_rate: 0.0, down: false });
        assert_eq!(SimulatedGateway::new().faults(), GatewayFaults::default());
    }

    #[test]
    fn validate_accepts_rates_from_zero_to_one() {
        for failure_rate in [0.0, 0.5, 1.0] {
            let faults = GatewayFaults { failure_rate, latency_ms: MAX_LATENCY_MS, down: true };
            assert_eq!(faults.validate(), Ok(()), "{failure_rate}");
        }
    }

    #[test]
    fn validate_rejects_rates_outside_zero_to_one() {
        for failure_rate in [-0.1, 1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let faults = GatewayFaults { failure_rate, ..GatewayFaults::default() };
            let error = faults.validate().expect_err("rejected");
            assert_eq!(error.field, "failureRate", "{failure_rate}");
        }
        let error = GatewayFaults { failure_rate: 1.5, ..GatewayFaults::default() }.validate().expect_err("rejected");
        assert_eq!(error.to_string(), "failureRate must be between 0.0 and 1.0, got 1.5");
    }

    #[test]
    fn validate_rejects_latency_beyond_a_minute() {
        let error = GatewayFaults { latency_ms: MAX_LATENCY_MS + 1, ..GatewayFaults::default() }
            .validate()
            .expect_err("rejected");
        assert_eq!(error.field, "latencyMs");
    }

    #[test]
    fn debug_output_masks_the_account() {
        let debug = format!("{:?}", request(1));
        assert!(debug.contains("************1111"), "{debug}");
        assert!(!debug.contains("4111111111111111"), "{debug}");
    }
}
