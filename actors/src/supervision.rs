//! The one restart policy of every supervised child: entity actors (courses,
//! enrollments), the payment actor under the root, and subscriber workers
//! under the bus. Written once so a crash loop is bounded, counted and logged
//! the same way wherever it happens.
//!
//! Owns the policy's settings ([`RestartPolicy`]), the per-child bookkeeping
//! ([`RestartHistory`]), the decision ([`Decision`]) and the one place that
//! counts and logs a failure ([`report`]). Must not spawn, stop or hold down
//! anything itself: each supervisor carries out the decision its own way,
//! and reads no clock here (the caller passes `now`, so the policy tests run
//! on injected instants).
//!
//! # The policy
//!
//! - **Intensity.** A child that fails is restarted at once, up to
//!   `max_restarts` times within `within` (OTP's intensity and period).
//! - **Hold-down.** The failure beyond that holds the child down: it is not
//!   running and its callers are refused at once with a retry-after (the
//!   edge's 503 + `Retry-After`). The first hold-down lasts `backoff`; each
//!   further hold-down *in a row* doubles it, capped at `max_backoff`. When
//!   the hold-down ends the child is started again with a fresh intensity
//!   window.
//! - **Quiet period.** A child that runs for `within` without failing —
//!   counted from its last failure, or from the end of its last hold-down,
//!   whichever is later — is quiet again: its hold-downs in a row go back to
//!   0 and its next hold-down lasts `backoff` again.
//! - **Escalation.** A child whose intensity is exceeded again after
//!   `escalate_after` hold-downs in a row (no quiet period between them) is
//!   not held down again: the failure is escalated to the supervisor's
//!   parent, up to the root supervisor, which fail-stops the process with
//!   the reason logged (exit code 70), so the service manager restarts it
//!   from disk and the crash loop is visible from outside. `None` never
//!   escalates (the child is held down at the cap for as long as it fails).
//!
//! # Counted and logged alike
//!
//! Every failure of a supervised child is one ERROR line with `kind`, `id`
//! (the entity id or the worker's part; absent for the payment actor),
//! `restarts` (restarts within the window, this one included), `decision`
//! (`restart`, `hold down` or `escalate`) and, for a hold-down,
//! `retry_after_ms` and `hold_downs`. Every restart — at once after a
//! `restart` decision, or the start that ends a hold-down — adds 1 to
//! `sugang_actor_restarts_total{kind}` ([`count_restart`]), so the count stops
//! growing while a child is held down; a `hold down` adds 1 to
//! `sugang_actor_held_down_total{kind}`; an `escalate` is the cause in the
//! root's fail-stop line.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How often a child may fail before it is held down, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// At most this many restarts of one child …
    pub max_restarts: usize,
    /// … within this window; the failure beyond holds the child down. Also
    /// the quiet period that clears a child's hold-downs in a row.
    pub within: Duration,
    /// How long the first hold-down in a row lasts.
    pub backoff: Duration,
    /// The cap of the hold-down, which doubles with each hold-down in a row.
    /// A value below `backoff` is treated as equal to it.
    pub max_backoff: Duration,
    /// Hold-downs in a row after which the next excess escalates to the
    /// parent (and the root fail-stops the process); `None`: never.
    pub escalate_after: Option<u32>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            within: Duration::from_secs(10),
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            escalate_after: Some(5),
        }
    }
}

impl RestartPolicy {
    /// The length of the `n`th hold-down in a row (1-based).
    fn hold_down_for(&self, n: u32) -> Duration {
        let doubled = self.backoff.saturating_mul(1u32 << n.saturating_sub(1).min(20));
        doubled.min(self.max_backoff.max(self.backoff))
    }
}

/// What a supervisor does with a child that just failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Start it again now.
    Restart,
    /// Keep it down until `until`, then start it again.
    HoldDown { until: Instant, retry_after: Duration },
    /// Do not restart it: fail the supervisor, up to the root.
    Escalate,
}

impl Decision {
    /// The decision's name in logs.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Decision::Restart => "restart",
            Decision::HoldDown { .. } => "hold down",
            Decision::Escalate => "escalate",
        }
    }
}

/// The failures of one child: what the policy decides from.
#[derive(Clone, Debug, Default)]
pub(crate) struct RestartHistory {
    /// Restarts within the current window, oldest first.
    restarts: VecDeque<Instant>,
    /// Hold-downs in a row, without a quiet period between them.
    hold_downs: u32,
    /// When the child last failed.
    last_failure: Option<Instant>,
    /// Until when the child is (or was last) held down.
    held_until: Option<Instant>,
    /// Restarts within the window when the last decision was taken (the
    /// `restarts` of the log line).
    counted: usize,
}

impl RestartHistory {
    /// Records a failure at `now` and decides what to do with the child.
    pub(crate) fn on_failure(&mut self, policy: &RestartPolicy, now: Instant) -> Decision {
        let quiet_since = match (self.last_failure, self.held_until) {
            (Some(failed), Some(held)) => Some(failed.max(held)),
            (failed, held) => failed.or(held),
        };
        if quiet_since.is_some_and(|since| now.saturating_duration_since(since) >= policy.within) {
            self.hold_downs = 0;
        }
        self.last_failure = Some(now);
        while self.restarts.front().is_some_and(|t| now.saturating_duration_since(*t) > policy.within) {
            self.restarts.pop_front();
        }
        if self.restarts.len() < policy.max_restarts {
            self.restarts.push_back(now);
            self.counted = self.restarts.len();
            return Decision::Restart;
        }
        self.counted = self.restarts.len();
        if policy.escalate_after.is_some_and(|k| self.hold_downs >= k) {
            return Decision::Escalate;
        }
        self.hold_downs += 1;
        self.restarts.clear();
        let retry_after = policy.hold_down_for(self.hold_downs);
        let until = now + retry_after;
        self.held_until = Some(until);
        Decision::HoldDown { until, retry_after }
    }

    /// Restarts within the window ending at `now`.
    pub(crate) fn recent_restarts(&self, policy: &RestartPolicy, now: Instant) -> usize {
        self.restarts.iter().filter(|t| now.saturating_duration_since(**t) <= policy.within).count()
    }

    /// Hold-downs in a row so far.
    #[cfg(test)]
    pub(crate) fn hold_downs(&self) -> u32 {
        self.hold_downs
    }

    /// How long the child is still held down at `now`, if it is.
    #[cfg(test)]
    pub(crate) fn held_down_for(&self, now: Instant) -> Option<Duration> {
        self.held_until.filter(|until| *until > now).map(|until| until - now)
    }

    /// Whether the child has been quiet for a whole window at `now`, so its
    /// history can be forgotten.
    pub(crate) fn is_quiet(&self, policy: &RestartPolicy, now: Instant) -> bool {
        let since = [self.last_failure, self.held_until].into_iter().flatten().max();
        since.is_none_or(|since| now.saturating_duration_since(since) >= policy.within)
    }
}

/// Counts and logs one failure of a supervised child and the decision taken,
/// the same way for every kind (see the module doc).
pub(crate) fn report(kind: &'static str, id: Option<u64>, error: &str, history: &RestartHistory, decision: Decision) {
    let (policy_restarts, hold_downs) = (history.counted, history.hold_downs);
    match decision {
        Decision::Restart => {
            tracing::error!(
                kind, id, restarts = policy_restarts, decision = decision.as_str(), %error,
                "supervised actor failed; restarting it"
            );
        }
        Decision::HoldDown { retry_after, .. } => {
            metrics::counter!("sugang_actor_held_down_total", "kind" => kind).increment(1);
            tracing::error!(
                kind, id, restarts = policy_restarts, decision = decision.as_str(), hold_downs,
                retry_after_ms = retry_after.as_millis() as u64, %error,
                "supervised actor exceeded its restart intensity; held down"
            );
        }
        Decision::Escalate => {
            tracing::error!(
                kind, id, restarts = policy_restarts, decision = decision.as_str(), hold_downs, %error,
                "supervised actor kept failing after its hold-downs; escalating"
            );
        }
    }
}

/// Counts one restart of a child of `kind` (see the module doc).
pub(crate) fn count_restart(kind: &'static str) {
    metrics::counter!("sugang_actor_restarts_total", "kind" => kind).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            within: Duration::from_secs(10),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3),
            escalate_after: Some(3),
        }
    }

    /// Fails the child `times` times, `every` apart from `start`; the decisions.
    fn fail(history: &mut RestartHistory, at: &mut Instant, times: usize, every: Duration) -> Vec<Decision> {
        (0..times)
            .map(|_| {
                let d = history.on_failure(&policy(), *at);
                *at += every;
                d
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn n_restarts_in_the_window_then_a_hold_down() {
        let (mut history, mut now) = (RestartHistory::default(), Instant::now());
        let decisions = fail(&mut history, &mut now, 3, Duration::from_millis(10));
        assert_eq!(decisions, vec![Decision::Restart; 3]);
        assert_eq!(history.recent_restarts(&policy(), now), 3);
        let held = history.on_failure(&policy(), now);
        assert_eq!(
            held,
            Decision::HoldDown { until: now + Duration::from_secs(1), retry_after: Duration::from_secs(1) }
        );
        assert_eq!(history.held_down_for(now), Some(Duration::from_secs(1)));
        assert_eq!(history.held_down_for(now + Duration::from_secs(1)), None);
        assert_eq!(history.hold_downs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_spread_beyond_the_window_are_restarted_forever() {
        let (mut history, mut now) = (RestartHistory::default(), Instant::now());
        let decisions = fail(&mut history, &mut now, 50, Duration::from_secs(4));
        assert!(decisions.iter().all(|d| *d == Decision::Restart), "{decisions:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn hold_downs_in_a_row_double_up_to_the_cap_then_escalate() {
        let (mut history, mut now) = (RestartHistory::default(), Instant::now());
        let mut holds = Vec::new();
        for _ in 0..3 {
            assert_eq!(fail(&mut history, &mut now, 3, Duration::ZERO), vec![Decision::Restart; 3]);
            match history.on_failure(&policy(), now) {
                Decision::HoldDown { until, retry_after } => {
                    holds.push(retry_after);
                    // Released, it fails again at once.
                    now = until;
                }
                other => panic!("expected a hold-down, got {other:?}"),
            }
        }
        assert_eq!(holds, vec![Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(3)]);
        assert_eq!(fail(&mut history, &mut now, 3, Duration::ZERO), vec![Decision::Restart; 3]);
        assert_eq!(history.on_failure(&policy(), now), Decision::Escalate);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_window_after_the_hold_down_clears_the_streak() {
        let (mut history, mut now) = (RestartHistory::default(), Instant::now());
        for _ in 0..3 {
            fail(&mut history, &mut now, 3, Duration::ZERO);
            let Decision::HoldDown { until, .. } = history.on_failure(&policy(), now) else { panic!("held down") };
            // Released, it runs a whole window before failing again.
            now = until + policy().within;
        }
        assert_eq!(history.hold_downs(), 1, "each hold-down followed a quiet window");
        fail(&mut history, &mut now, 3, Duration::ZERO);
        let again = history.on_failure(&policy(), now);
        assert_eq!(
            again,
            Decision::HoldDown { until: now + Duration::from_secs(1), retry_after: Duration::from_secs(1) }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_hold_down_itself_is_not_a_quiet_period() {
        let policy =
            RestartPolicy { backoff: Duration::from_secs(20), max_backoff: Duration::from_secs(20), ..policy() };
        let (mut history, mut now) = (RestartHistory::default(), Instant::now());
        for round in 1..=3 {
            for _ in 0..3 {
                assert_eq!(history.on_failure(&policy, now), Decision::Restart);
            }
            let Decision::HoldDown { until, .. } = history.on_failure(&policy, now) else { panic!("held down") };
            assert_eq!(history.hold_downs(), round);
            now = until;
        }
        for _ in 0..3 {
            history.on_failure(&policy, now);
        }
        assert_eq!(history.on_failure(&policy, now), Decision::Escalate);
    }

    #[tokio::test(start_paused = true)]
    async fn without_escalation_the_child_is_held_down_at_the_cap() {
        let policy = RestartPolicy { escalate_after: None, ..policy() };
        let (mut history, mut now) = (RestartHistory::default(), Instant::now());
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            for _ in 0..3 {
                history.on_failure(&policy, now);
            }
            let Decision::HoldDown { until, retry_after } = history.on_failure(&policy, now) else {
                panic!("held down")
            };
            last = retry_after;
            now = until;
        }
        assert_eq!(last, Duration::from_secs(3));
    }
}
