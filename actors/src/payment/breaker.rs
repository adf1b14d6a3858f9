//! The payment circuit breaker: closed → open → half-open, as a pure state
//! machine.
//!
//! Ours, not a library's, because it is the product: failing fast when the
//! payment gateway is sick (DESIGN rule 6) is a promise sugang makes to its
//! clients, and the rules below are that promise. The payment actor owns one
//! [`Breaker`] and calls it from its single task, passing the time in (a
//! [`tokio::time::Instant`], so tests run on a paused clock). The breaker does
//! no I/O, spawns nothing, takes no lock and reads no clock; its only effects
//! besides its own state are a metric and a log line per transition.
//!
//! Must not know what it guards nor decide what a failure is: the caller
//! reports each admitted call with [`Breaker::on_success`] or
//! [`Breaker::on_failure`]. Faults and timeouts are failures; a business
//! answer such as a declined card is a success (the gateway is healthy).
//!
//! # What counts
//!
//! Each admitted gateway call is reported once, as a success or a failure:
//!
//! - A **failure** is a fault of the gateway: it was down, answered with an
//!   error that is not a business answer, or gave no answer within the
//!   payment timeout. Approves and refunds (a cancellation's refund, and the
//!   void that takes back a charge that may have happened) alike.
//! - A **success** is any answer of a healthy gateway: a charge approved or
//!   declined, a refund made or refused as a business answer, and a refund
//!   the gateway made whose recording failed (our disk, not the gateway).
//! - Failures count **once per enrollment**: the payment actor tags each
//!   permit with its enrollment id ([`Permit::for_enrollment`]), and while
//!   closed a failure of an enrollment that already counted in the current
//!   run of failures is not counted again. So a failed charge and the void
//!   that compensates it are one failure, and so are the retries of one
//!   refund; `failure_threshold` failed *enrollments* in a row open the
//!   breaker. A failure of an untagged permit always counts. The run (and
//!   the enrollments it counted) ends with a success or a transition; a
//!   half-open probe's failure always reopens the breaker.
//!
//! # Rules
//!
//! - **Closed**: every call is admitted. `failure_threshold` consecutive
//!   failures (counted as above) open the breaker; a success resets the
//!   count.
//! - **Open**: calls fail fast with [`BreakerOpen`], whose `retry_after` is the
//!   time left until `opened_at + reset timeout`. The state stays `Open` (in
//!   [`Breaker::state`], the snapshot and the gauge) after that time has
//!   passed, until a call arrives: only calls move the breaker, never the
//!   clock. That call moves it to half-open and becomes the probe.
//! - **HalfOpen**: exactly one probe is out. Other calls fail fast with
//!   `retry_after` = the time left until the probe would be presumed lost (see
//!   below): the latest moment the breaker admits a call again even if the
//!   probe never answers. A probe success closes the breaker, clears the
//!   failure count and puts the reset timeout back to its base; a probe
//!   failure reopens it with the reset timeout doubled, up to
//!   `max_reset_timeout`.
//! - A probe whose permit has not come back within the current reset timeout
//!   (its caller was cancelled and dropped it) is presumed lost: the next call
//!   becomes a new probe, so the breaker cannot stay half-open forever.
//!
//! # Permits and generations
//!
//! Every admitted call gets a [`Permit`] stamped with the breaker's
//! generation, which grows on every transition and when a lost probe is
//! replaced. A permit counts only if it comes back in the generation that
//! issued it; any other permit is stale and ignored. So a slow call admitted
//! while closed that ends after the breaker opened can neither close it nor
//! prolong the open; the late answer of a replaced probe cannot decide the
//! half-open; and failures of calls admitted before a probe proved the
//! gateway healthy do not count against the breaker it closed.

use std::time::Duration;

use tokio::time::Instant;

/// The smallest `retry_after` a refusal carries, so a caller never hears
/// "retry in zero time" from a breaker that is about to admit a call.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(1);

/// When the breaker opens and how long it stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker: one failure is noise,
    /// a run of them is a sick gateway. 0 is treated as 1.
    pub failure_threshold: u32,
    /// How long the breaker stays open the first time, before it lets a probe
    /// through: long enough for a sick gateway to recover.
    pub reset_timeout: Duration,
    /// The cap on the reset timeout, which doubles after each failed probe so a
    /// gateway that stays down is probed less and less often. A value below
    /// `reset_timeout` is treated as equal to it.
    pub max_reset_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            reset_timeout: Duration::from_secs(5),
            max_reset_timeout: Duration::from_secs(60),
        }
    }
}

/// Where the breaker is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls fail fast until the reset timeout has passed.
    Open,
    /// One probe call is out to find out whether the gateway has recovered.
    HalfOpen,
}

impl BreakerState {
    /// The state's name in logs, metrics labels and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "halfOpen",
        }
    }

    /// The value of the `sugang_breaker_state` gauge.
    fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

/// The fail-fast answer: the breaker did not admit the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("payment breaker open; retry after {retry_after:?}")]
pub struct BreakerOpen {
    /// How long until the breaker admits a call again at the latest (at least
    /// 1 ms): the `Retry-After` a client is told.
    pub retry_after: Duration,
}

/// Proof that a call was admitted. Hand it back to [`Breaker::on_success`] or
/// [`Breaker::on_failure`] when the call ends; it is not `Clone`, so a call
/// is reported at most once.
#[derive(Debug)]
#[must_use = "report the call's outcome with Breaker::on_success or Breaker::on_failure"]
pub struct Permit {
    /// The breaker generation that admitted the call: the outcome counts only
    /// if the breaker is still in it.
    generation: u64,
    /// The enrollment the call is for, if tagged: its failures count once
    /// per run of failures.
    enrollment: Option<u64>,
}

impl Permit {
    /// Tags the permit with the enrollment its call is for, so that call's
    /// failure and the failures of that enrollment's other calls (its void,
    /// a refund's retries) count once.
    pub fn for_enrollment(self, enrollment_id: u64) -> Permit {
        Permit { enrollment: Some(enrollment_id), ..self }
    }
}

/// What the breaker looks like at one instant, for the admin API and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSnapshot {
    /// The state, as [`Breaker::state`] reports it.
    pub state: BreakerState,
    /// Failures in a row since the last success (probe failures included):
    /// how close a closed breaker is to opening.
    pub consecutive_failures: u32,
    /// When the breaker last opened, while it is open or half-open; `None`
    /// when closed.
    pub opened_at: Option<Instant>,
    /// What a call made at this instant would be told: `Some` if it would be
    /// refused (the `retry_after` of its [`BreakerOpen`]), `None` if it would
    /// be admitted (closed, or open with its timeout elapsed).
    pub retry_after: Option<Duration>,
    /// The reset timeout in force: how long the next (or current) opening
    /// lasts, and how long a probe may stay out.
    pub reset_timeout: Duration,
    /// State changes since the breaker was created.
    pub transitions: u64,
}

/// The breaker's phase, with the instants its timing depends on.
#[derive(Clone, Copy, Debug)]
enum Phase {
    Closed,
    Open { opened_at: Instant },
    HalfOpen { opened_at: Instant, probe_admitted_at: Instant },
}

/// The circuit breaker in front of the payment gateway. See the module doc
/// for its rules.
#[derive(Debug)]
pub struct Breaker {
    /// The configuration, with the threshold and cap already made sane.
    config: BreakerConfig,
    /// Where the breaker is and since when.
    phase: Phase,
    /// Failures in a row since the last success; opens the breaker at the
    /// threshold.
    consecutive_failures: u32,
    /// The enrollments whose failure counted in the current run (at most
    /// the threshold of them), so each counts once.
    counted: Vec<u64>,
    /// The reset timeout in force: the base, doubled by each failed probe.
    reset_timeout: Duration,
    /// Stamped on every permit; bumped on every transition (and probe
    /// replacement) so that permits of an earlier generation are ignored.
    generation: u64,
    /// State changes so far, for the snapshot.
    transitions: u64,
}

impl Breaker {
    /// A closed breaker with no failures.
    pub fn new(config: BreakerConfig) -> Self {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            reset_timeout: config.reset_timeout,
            max_reset_timeout: config.max_reset_timeout.max(config.reset_timeout),
        };
        metrics::gauge!("sugang_breaker_state").set(BreakerState::Closed.gauge_value());
        Breaker {
            config,
            phase: Phase::Closed,
            consecutive_failures: 0,
            counted: Vec::new(),
            reset_timeout: config.reset_timeout,
            generation: 0,
            transitions: 0,
        }
    }

    /// Asks to make a call at `now`: a [`Permit`] if the call may go ahead, or
    /// [`BreakerOpen`] if it must fail fast. An open breaker whose timeout has
    /// passed turns half-open here and admits this call as its probe.
    ///
    /// # Errors
    ///
    /// [`BreakerOpen`] while open, and while half-open with the probe out.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, BreakerOpen> {
        if let Some(retry_after) = self.refusal(now) {
            return Err(BreakerOpen { retry_after });
        }
        match self.phase {
            Phase::Closed => {}
            Phase::Open { opened_at } => {
                self.transition(Phase::HalfOpen { opened_at, probe_admitted_at: now }, now);
            }
            Phase::HalfOpen { opened_at, .. } => {
                tracing::warn!(
                    reset_timeout_ms = duration_ms(self.reset_timeout),
                    "payment breaker probe presumed lost; admitting a new probe"
                );
                self.generation += 1;
                self.phase = Phase::HalfOpen { opened_at, probe_admitted_at: now };
            }
        }
        Ok(Permit { generation: self.generation, enrollment: None })
    }

    /// Reports that the call behind `permit` succeeded. Closes a half-open
    /// breaker; resets the failure count of a closed one. Ignored if the
    /// permit is stale.
    pub fn on_success(&mut self, permit: Permit, now: Instant) {
        if !self.is_current(&permit, "success") {
            return;
        }
        self.consecutive_failures = 0;
        self.counted.clear();
        match self.phase {
            Phase::Closed => {}
            Phase::HalfOpen { .. } => {
                self.reset_timeout = self.config.reset_timeout;
                self.transition(Phase::Closed, now);
            }
            // Opening starts a new generation and an open breaker admits
            // nothing, so no current permit exists while open.
            Phase::Open { .. } => {}
        }
    }

    /// Reports that the call behind `permit` failed or timed out. Opens a
    /// closed breaker at the threshold; reopens a half-open one with the reset
    /// timeout doubled. Ignored if the permit is stale, and while closed if
    /// its enrollment already counted a failure in this run.
    pub fn on_failure(&mut self, permit: Permit, now: Instant) {
        if !self.is_current(&permit, "failure") {
            return;
        }
        if let (Phase::Closed, Some(enrollment)) = (self.phase, permit.enrollment) {
            if self.counted.contains(&enrollment) {
                tracing::debug!(
                    enrollment_id = enrollment,
                    "payment breaker: this enrollment's failure counted already"
                );
                return;
            }
            self.counted.push(enrollment);
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.phase {
            Phase::Closed => {
                if self.consecutive_failures >= self.config.failure_threshold {
                    self.transition(Phase::Open { opened_at: now }, now);
                }
            }
            Phase::HalfOpen { .. } => {
                self.reset_timeout = self.reset_timeout.saturating_mul(2).min(self.config.max_reset_timeout);
                self.transition(Phase::Open { opened_at: now }, now);
            }
            // As in `on_success`: no current permit exists while open.
            Phase::Open { .. } => {}
        }
    }

    /// The breaker's state. It changes only when calls are admitted or
    /// reported, never by the passing of time: an open breaker whose timeout
    /// has elapsed is still `Open` until the next call is admitted as its
    /// probe (the snapshot's `retry_after` is then `None`).
    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// The breaker's state and timing as seen at `now`.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let opened_at = match self.phase {
            Phase::Closed => None,
            Phase::Open { opened_at } | Phase::HalfOpen { opened_at, .. } => Some(opened_at),
        };
        BreakerSnapshot {
            state: self.state(),
            consecutive_failures: self.consecutive_failures,
            opened_at,
            retry_after: self.refusal(now),
            reset_timeout: self.reset_timeout,
            transitions: self.transitions,
        }
    }

    /// How long a call made at `now` would be told to wait, or `None` if it
    /// would be admitted. The one rule `try_acquire` and `snapshot` share.
    fn refusal(&self, now: Instant) -> Option<Duration> {
        match self.phase {
            Phase::Closed => None,
            Phase::Open { opened_at } => time_left(opened_at, self.reset_timeout, now),
            Phase::HalfOpen { probe_admitted_at, .. } => time_left(probe_admitted_at, self.reset_timeout, now),
        }
    }

    /// Whether `permit` was issued in the current generation; logs the ones
    /// that were not.
    fn is_current(&self, permit: &Permit, outcome: &'static str) -> bool {
        let current = permit.generation == self.generation;
        if !current {
            tracing::debug!(
                outcome,
                permit_generation = permit.generation,
                generation = self.generation,
                state = self.state().as_str(),
                "payment breaker ignored a stale permit"
            );
        }
        current
    }

    /// Moves to `to` at `now`, starting a new generation, and tells metrics
    /// and logs (with how long ago the breaker opened, when it was open: on
    /// closing, that is the length of the outage).
    fn transition(&mut self, to: Phase, now: Instant) {
        let from = self.state();
        let since_opened_ms = match self.phase {
            Phase::Closed => None,
            Phase::Open { opened_at } | Phase::HalfOpen { opened_at, .. } => {
                Some(duration_ms(now.saturating_duration_since(opened_at)))
            }
        };
        self.phase = to;
        self.generation += 1;
        self.transitions += 1;
        self.counted.clear();
        let to = self.state();
        metrics::counter!(
            "sugang_breaker_transitions_total",
            "from" => from.as_str(),
            "to" => to.as_str()
        )
        .increment(1);
        metrics::gauge!("sugang_breaker_state").set(to.gauge_value());
        let failures = self.consecutive_failures;
        let reset_timeout_ms = duration_ms(self.reset_timeout);
        if to == BreakerState::Open {
            tracing::warn!(
                from = from.as_str(),
                to = to.as_str(),
                failures,
                reset_timeout_ms,
                since_opened_ms,
                "payment breaker opened"
            );
        } else {
            tracing::info!(
                from = from.as_str(),
                to = to.as_str(),
                failures,
                reset_timeout_ms,
                since_opened_ms,
                "payment breaker changed state"
            );
        }
    }
}

/// The time left at `now` of a `timeout` that started at `since` (at least
/// [`MIN_RETRY_AFTER`]), or `None` once it has run out.
fn time_left(since: Instant, timeout: Duration, now: Instant) -> Option<Duration> {
    let elapsed = now.saturating_duration_since(since);
    timeout.checked_sub(elapsed).filter(|left| !left.is_zero()).map(|left| left.max(MIN_RETRY_AFTER))
}

/// A duration as whole milliseconds, for log fields.
fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};

    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig::default())
    }

    fn admit(breaker: &mut Breaker, now: Instant) -> Permit {
        match breaker.try_acquire(now) {
            Ok(permit) => permit,
            Err(refusal) => panic!("call at {now:?} refused: {refusal:?}"),
        }
    }

    fn refused(breaker: &mut Breaker, now: Instant) -> Duration {
        match breaker.try_acquire(now) {
            Ok(permit) => panic!("call at {now:?} admitted: {permit:?}"),
            Err(refusal) => refusal.retry_after,
        }
    }

    fn fail(breaker: &mut Breaker, times: u32, now: Instant) {
        for _ in 0..times {
            let permit = admit(breaker, now);
            breaker.on_failure(permit, now);
        }
    }

    /// A breaker opened at `t0` by the default threshold of failures.
    fn opened_at(t0: Instant) -> Breaker {
        let mut breaker = breaker();
        fail(&mut breaker, 5, t0);
        assert_eq!(breaker.state(), BreakerState::Open);
        breaker
    }

    #[test]
    fn state_names_are_the_api_names() {
        assert_eq!(BreakerState::Closed.as_str(), "closed");
        assert_eq!(BreakerState::Open.as_str(), "open");
        assert_eq!(BreakerState::HalfOpen.as_str(), "halfOpen");
    }

    #[test]
    fn default_config_is_five_failures_five_seconds_capped_at_a_minute() {
        let config = BreakerConfig::default();
        assert_eq!(config.failure_threshold, 5);
        assert_eq!(config.reset_timeout, 5 * SECOND);
        assert_eq!(config.max_reset_timeout, 60 * SECOND);
    }

    #[test]
    fn a_new_breaker_is_closed_and_admits() {
        let t0 = Instant::now();
        let mut breaker = breaker();
        assert_eq!(
            breaker.snapshot(t0),
            BreakerSnapshot {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: None,
                retry_after: None,
                reset_timeout: 5 * SECOND,
                transitions: 0,
            }
        );
        let permit = admit(&mut breaker, t0);
        breaker.on_success(permit, t0);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn opens_exactly_at_the_threshold_not_before() {
        let t0 = Instant::now();
        let mut breaker = breaker();
        fail(&mut breaker, 4, t0);
        let snapshot = breaker.snapshot(t0);
        assert_eq!(snapshot.state, BreakerState::Closed);
        assert_eq!(snapshot.consecutive_failures, 4);
        assert_eq!(snapshot.transitions, 0);

        let t1 = t0 + SECOND;
        fail(&mut breaker, 1, t1);
        assert_eq!(
            breaker.snapshot(t1),
            BreakerSnapshot {
                state: BreakerState::Open,
                consecutive_failures: 5,
                opened_at: Some(t1),
                retry_after: Some(5 * SECOND),
                reset_timeout: 5 * SECOND,
                transitions: 1,
            }
        );
    }

    #[test]
    fn an_enrollment_fails_once_however_many_of_its_calls_fail() {
        let t0 = Instant::now();
        let mut breaker = breaker();
        for enrollment in 1..=4 {
            // Its charge, its void, and two retries of the void.
            for _ in 0..4 {
                let permit = admit(&mut breaker, t0).for_enrollment(enrollment);
                breaker.on_failure(permit, t0);
            }
        }
        let snapshot = breaker.snapshot(t0);
        assert_eq!((snapshot.state, snapshot.consecutive_failures), (BreakerState::Closed, 4));
        let permit = admit(&mut breaker, t0).for_enrollment(5);
        breaker.on_failure(permit, t0);
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn a_success_in_between_resets_the_count() {
        let t0 = Instant::now();
        let mut breaker = breaker();
        fail(&mut breaker, 4, t0);
        let permit = admit(&mut breaker, t0);
        breaker.on_success(permit, t0);
        assert_eq!(breaker.snapshot(t0).consecutive_failures, 0);

        fail(&mut breaker, 4, t0);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.snapshot(t0).consecutive_failures, 4);
        fail(&mut breaker, 1, t0);
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn a_threshold_of_zero_opens_on_the_first_failure() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(BreakerConfig { failure_threshold: 0, ..BreakerConfig::default() });
        let permit = admit(&mut breaker, t0);
        breaker.on_success(permit, t0);
        assert_eq!(breaker.state(), BreakerState::Closed);
        fail(&mut breaker, 1, t0);
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn fails_fast_while_open_with_a_retry_after_that_shrinks() {
        let t0 = Instant::now();
        let mut breaker = opened_at(t0);
        assert_eq!(refused(&mut breaker, Instant::now()), 5 * SECOND);

        tokio::time::advance(2 * SECOND).await;
        assert_eq!(refused(&mut breaker, Instant::now()), 3 * SECOND);

        tokio::time::advance(Duration::from_millis(2_990)).await;
        assert_eq!(refused(&mut breaker, Instant::now()), Duration::from_millis(10));
        assert_eq!(breaker.snapshot(Instant::now()).retry_after, Some(Duration::from_millis(10)));

        // Refusals change nothing.
        let snapshot = breaker.snapshot(Instant::now());
        assert_eq!(snapshot.state, BreakerState::Open);
        assert_eq!(snapshot.opened_at, Some(t0));
        assert_eq!(snapshot.transitions, 1);
    }

    #[test]
    fn retry_after_is_never_below_one_millisecond() {
        let t0 = Instant::now();
        let mut breaker = opened_at(t0);
        let almost = t0 + 5 * SECOND - Duration::from_micros(1);
        assert_eq!(refused(&mut breaker, almost), Duration::from_millis(1));
    }

    #[test]
    fn stays_open_after_the_timeout_until_a_call_arrives() {
        let t0 = Instant::now();
        let mut breaker = opened_at(t0);
        let later = t0 + 30 * SECOND;
        let snapshot = breaker.snapshot(later);
        assert_eq!(snapshot.state, BreakerState::Open);
        assert_eq!(snapshot.retry_after, None);
        assert_eq!(snapshot.transitions, 1);
        assert_eq!(breaker.state(), BreakerState::Open);

        let _probe = admit(&mut breaker, later);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn half_open_admits_exactly_one_probe() {
        let t0 = Instant::now();
        let mut breaker = opened_at(t0);
        let t1 = t0 + 5 * SECOND;
        let _probe = admit(&mut breaker, t1);
        let snapshot = breaker.snapshot(t1);
        assert_eq!(snapshot.state, BreakerState::HalfOpen);
        assert_eq!(snapshot.opened_at, Some(t0));
        assert_eq!(snapshot.transitions, 2);

        // Others wait for the probe: at most until it would be presumed lost.
        assert_eq!(refused(&mut breaker, t1), 5 * SECOND);
        assert_eq!(refused(&mut breaker, t1 + SECOND), 4 * SECOND);
        assert_eq!(breaker.snapshot(t1 + SECOND).retry_after, Some(4 * SECOND));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn probe_success_closes_and_resets_the_timeout() {
        let t0 = Instant::now();
        let mut breaker = opened_at(t0);
        // One failed probe first, so there is a doubled timeout to reset.
        let t1 = t0 + 5 * SECOND;
        let probe = admit(&mut breaker, t1);
        breaker.on_failure(probe, t1);
        assert_eq!(breaker.snapshot(t1).reset_timeout, 10 * SECOND);
        assert_eq!(breaker.snapshot(t1).consecutive_failures, 6);

        let t2 = t1 + 10 * SECOND;
        let probe = admit(&mut breaker, t2);
        breaker.on_success(probe, t2);
        assert_eq!(
            breaker.snapshot(t2),
            BreakerSnapshot {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: None,
                retry_after: None,
                reset_timeout: 5 * SECOND,
                transitions: 5,
            }
        );

        // Closed for real: it takes a full threshold again, and the next
        // opening lasts the base timeout.
        fail(&mut breaker, 4, t2);
        assert_eq!(breaker.state(), BreakerState::Closed);
        fail(&mut breaker, 1, t2);
        assert_eq!(refused(&mut breaker, t2), 5 * SECOND);
    }

    #[test]
    fn probe_failure_reopens_with_the_timeout_doubled_up_to_the_cap() {
        let t0 = Instant::now();
        let mut breaker = opened_at(t0);
        let mut opened = t0;
        let mut timeouts = vec![breaker.snapshot(t0).reset_timeout.as_secs()];
        for _ in 0..5 {
            let timeout = breaker.snapshot(opened).reset_timeout;
            // Not a moment before the timeout...
            let just_before = opened + timeout - Duration::from_millis(1);
            assert_eq!(refused(&mut breaker, just_before), Duration::from_millis(1));
            // ...then exactly one probe, which fails.
            let probe_time = opened + timeout;
            let probe = admit(&mut breaker, probe_time);
            breaker.on_failure(probe, probe_time);
            opened = probe_time;
            let snapshot = breaker.snapshot(opened);
            assert_eq!(snapshot.state, BreakerState::Open);
            assert_eq!(snapshot.opened_at, Some(opened));
            assert_eq!(snapshot.retry_after, Some(snapshot.reset_timeout));
            timeouts.push(snapshot.reset_timeout.as_secs());
        }
        assert_eq!(timeouts, [5, 10, 20, 40, 60, 60]);
        assert_eq!(breaker.snapshot(opened).transitions, 11);
    }

    #[test]
    fn a_cap_below_the_base_timeout_is_the_base() {
        let t0 = Instant::now();
        let mut breaker =
            Breaker::new(BreakerConfig { failure_threshold: 1, reset_timeout: 5 * SECOND, max_reset_timeout: SECOND });
        fail(&mut breaker, 1, t0);
        assert_eq!(refused(&mut breaker, t0), 5 * SECOND);
        let t1 = t0 + 5 * SECOND;
        let probe = admit(&mut breaker, t1);
        breaker.on_failure(probe, t1);
        assert_eq!(refused(&mut breaker, t1), 5 * SECOND);
    }

    #[test]
    fn a_stale_permit_cannot_close_an_open_breaker() {
        let t0 = Instant::now();
        let mut breaker = breaker();
        let slow_call = admit(&mut breaker, t0);
        fail(&mut breaker, 5, t0);
        let before = breaker.snapshot(t0 + SECOND);

        breaker.on_success(slow_call, t0 + SECOND);
        assert_eq!(breaker.snapshot(t0 + SECOND), before);
        assert_eq!(before.state, BreakerState::Open);
        assert_eq!(before.retry_after, Some(4 * SECOND));
    }

    #[test]
    fn a_stale_permit_cannot_prolong_an_open_breaker() {
        let t0 = Instant::now();
        let mut breaker = breaker();
        let slow_call = admit(&mut breaker, t0);
        fail(&mut breaker, 5, t0);
        let before = breaker.snapshot(t0 + SECOND);

        breaker.on_failure(slow_call, t0 + SECOND);
        assert_eq!(breaker.snapshot(t0 + SECOND), before);
        assert_eq!(before.consecutive_failures, 5);
    }

    #[test]
    fn a_stale_permit_cannot_decide_the_half_open() {
        let t0 = Instant::now();
        let mut breaker = breaker();
        let slow_success = admit(&mut breaker, t0);
        let slow_failure = admit(&mut breaker, t0);
        fail(&mut breaker, 5, t0);
        let t1 = t0 + 5 * SECOND;
        let probe = admit(&mut breaker, t1);

        breaker.on_success(slow_success, t1);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.on_failure(slow_failure, t1);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(breaker.snapshot(t1).reset_timeout, 5 * SECOND);

        breaker.on_success(probe, t1);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn failures_from_before_the_breaker_closed_do_not_count() {
        let t0 = Instant::now();
        let mut breaker = breaker();
        let old_calls: Vec<Permit> = (0..5).map(|_| admit(&mut breaker, t0)).collect();
        fail(&mut breaker, 5, t0);
        let t1 = t0 + 5 * SECOND;
        let probe = admit(&mut breaker, t1);
        breaker.on_success(probe, t1);

        for permit in old_calls {
            breaker.on_failure(permit, t1);
        }
        let snapshot = breaker.snapshot(t1);
        assert_eq!(snapshot.state, BreakerState::Closed);
        assert_eq!(snapshot.consecutive_failures, 0);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_the_reset_timeout() {
        let t0 = Instant::now();
        let mut breaker = opened_at(t0);
        let t1 = t0 + 5 * SECOND;
        let lost_probe = admit(&mut breaker, t1);
        assert_eq!(refused(&mut breaker, t1 + 5 * SECOND - Duration::from_millis(1)), Duration::from_millis(1));

        let t2 = t1 + 5 * SECOND;
        let new_probe = admit(&mut breaker, t2);
        let snapshot = breaker.snapshot(t2);
        assert_eq!(snapshot.state, BreakerState::HalfOpen);
        assert_eq!(snapshot.transitions, 2);
        assert_eq!(refused(&mut breaker, t2), 5 * SECOND);

        // The lost probe's late answer is stale; the new probe decides.
        breaker.on_success(lost_probe, t2);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.on_failure(new_probe, t2);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(refused(&mut breaker, t2), 10 * SECOND);
    }

    #[test]
    fn transitions_are_counted_and_exported() {
        let recorder = TestRecorder::default();
        let t0 = Instant::now();
        let t1 = t0 + 5 * SECOND;
        let t2 = t1 + 10 * SECOND;
        let mut gauge_after_each = Vec::new();
        let breaker = metrics::with_local_recorder(&recorder, || {
            let mut breaker = breaker();
            gauge_after_each.push(recorder.gauge("sugang_breaker_state"));
            fail(&mut breaker, 5, t0);
            gauge_after_each.push(recorder.gauge("sugang_breaker_state"));
            let probe = admit(&mut breaker, t1);
            gauge_after_each.push(recorder.gauge("sugang_breaker_state"));
            breaker.on_failure(probe, t1);
            gauge_after_each.push(recorder.gauge("sugang_breaker_state"));
            let probe = admit(&mut breaker, t2);
            breaker.on_success(probe, t2);
            gauge_after_each.push(recorder.gauge("sugang_breaker_state"));
            breaker
        });

        assert_eq!(breaker.snapshot(t2).transitions, 5);
        assert_eq!(gauge_after_each, [Some(0.0), Some(1.0), Some(2.0), Some(1.0), Some(0.0)]);
        let transitions = "sugang_breaker_transitions_total";
        assert_eq!(recorder.counter(transitions, "closed", "open"), 1);
        assert_eq!(recorder.counter(transitions, "open", "halfOpen"), 2);
        assert_eq!(recorder.counter(transitions, "halfOpen", "open"), 1);
        assert_eq!(recorder.counter(transitions, "halfOpen", "closed"), 1);
        assert_eq!(recorder.counter(transitions, "closed", "halfOpen"), 0);
    }

    /// Captures counters and gauges by name and labels, so a test can read
    /// what the breaker exported.
    #[derive(Default)]
    struct TestRecorder {
        values: Mutex<HashMap<String, Arc<AtomicU64>>>,
    }

    impl TestRecorder {
        fn handle(&self, key: &Key) -> Arc<AtomicU64> {
            let mut labels: Vec<String> =
                key.labels().map(|label| format!("{}={}", label.key(), label.value())).collect();
            labels.sort();
            let id = format!("{}{{{}}}", key.name(), labels.join(","));
            let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(values.entry(id).or_default())
        }

        fn value(&self, id: &str) -> Option<u64> {
            let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
            values.get(id).map(|value| value.load(Ordering::Acquire))
        }

        fn counter(&self, name: &str, from: &str, to: &str) -> u64 {
            self.value(&format!("{name}{{from={from},to={to}}}")).unwrap_or(0)
        }

        fn gauge(&self, name: &str) -> Option<f64> {
            self.value(&format!("{name}{{}}")).map(f64::from_bits)
        }
    }

    impl metrics::Recorder for TestRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.handle(key))
        }

        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.handle(key))
        }

        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
}
