//! Fault injection: the knobs that break sugang on purpose, so supervisors,
//! breakers and saga recovery can be watched at work and tested.
//!
//! Owns only flags; the actors check them at the points they name. The
//! payment gateway's knobs live with the simulated gateway.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

/// A point in the enrollment saga where a crash can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SagaStep {
    /// The seat is reserved (durably); the gateway has not been called.
    SeatReserved,
    /// The gateway charged; the completion is not yet committed.
    PaymentApproved,
    /// The enrollment is completed and committed; the reply is not yet sent.
    Completed,
    /// A cancellation is committed; the refund has not been asked for.
    CancelCommitted,
    /// A waitlist entry's promoted seat is durable (in the batch that freed
    /// it); its stored account has not been charged.
    PromotionReserved,
    /// A promoted entry's account was charged; its completion is not yet
    /// committed.
    PromotionCharged,
}

impl SagaStep {
    /// Parses the names used by `SUGANG_CRASH_AFTER` and the crash tests.
    pub fn parse(raw: &str) -> Option<SagaStep> {
        match raw {
            "seatReserved" | "seat_reserved" => Some(SagaStep::SeatReserved),
            "paymentApproved" | "payment_approved" => Some(SagaStep::PaymentApproved),
            "completed" => Some(SagaStep::Completed),
            "cancelCommitted" | "cancel_committed" => Some(SagaStep::CancelCommitted),
            "promotionReserved" | "promotion_reserved" => Some(SagaStep::PromotionReserved),
            "promotionCharged" | "promotion_charged" => Some(SagaStep::PromotionCharged),
            _ => None,
        }
    }
}

/// The injected faults of one running system.
#[derive(Debug, Default)]
pub struct Faults {
    /// Courses whose actor panics on its next message.
    panic_courses: Mutex<HashSet<u64>>,
    /// Courses whose actor panics on every message (to exhaust the restart
    /// intensity).
    always_panic_courses: Mutex<HashSet<u64>>,
    /// The saga step after which the process aborts, as if killed.
    crash_after: Mutex<Option<SagaStep>>,
    /// Messages on which the payment actor still panics (to crash-loop it).
    payment_panics: AtomicU32,
    /// Events on which each subscriber's projection still panics, by
    /// subscriber name (to crash-loop its workers).
    subscriber_panics: Mutex<HashMap<String, u32>>,
    /// How long each subscriber waits before committing a batch, by name
    /// (a slow subscriber, to test read-your-writes against it).
    subscriber_delays: Mutex<HashMap<String, std::time::Duration>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Faults {
    /// The course's actor panics on its next message.
    pub fn panic_course_once(&self, course_id: u64) {
        tracing::warn!(course_id, "fault injected: course actor panics on its next message");
        metrics::counter!("sugang_faults_injected_total", "fault" => "course_panic").increment(1);
        lock(&self.panic_courses).insert(course_id);
    }

    /// The course's actor panics on every message until [`Faults::heal_course`].
    pub fn panic_course_always(&self, course_id: u64) {
        tracing::warn!(course_id, "fault injected: course actor panics on every message");
        metrics::counter!("sugang_faults_injected_total", "fault" => "course_panic_always").increment(1);
        lock(&self.always_panic_courses).insert(course_id);
    }

    pub fn heal_course(&self, course_id: u64) {
        lock(&self.always_panic_courses).remove(&course_id);
        lock(&self.panic_courses).remove(&course_id);
    }

    /// Whether the course's actor must panic now (consumes a one-shot fault).
    pub(crate) fn course_must_panic(&self, course_id: u64) -> bool {
        lock(&self.panic_courses).remove(&course_id) || lock(&self.always_panic_courses).contains(&course_id)
    }

    /// The payment actor panics on each of its next `times` messages (its own
    /// start-up message included, so a restarted actor fails again at once
    /// while any are left). 0 heals it.
    pub fn panic_payment(&self, times: u32) {
        tracing::warn!(times, "fault injected: payment actor panics on its next messages");
        metrics::counter!("sugang_faults_injected_total", "fault" => "payment_panic").increment(1);
        self.payment_panics.store(times, Ordering::SeqCst);
    }

    /// Whether the payment actor must panic now (consumes one).
    pub(crate) fn payment_must_panic(&self) -> bool {
        self.payment_panics.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1)).is_ok()
    }

    /// Subscriber `name`'s projection panics on each of its next `times`
    /// events (a restarted worker meets the same event again, so each
    /// restart consumes one). 0 heals it.
    pub fn panic_subscriber(&self, name: &str, times: u32) {
        tracing::warn!(subscriber = name, times, "fault injected: subscriber panics on its next events");
        metrics::counter!("sugang_faults_injected_total", "fault" => "subscriber_panic").increment(1);
        lock(&self.subscriber_panics).insert(name.to_owned(), times);
    }

    /// Whether subscriber `name` must panic on the event it is applying
    /// (consumes one).
    pub(crate) fn subscriber_must_panic(&self, name: &str) -> bool {
        let mut panics = lock(&self.subscriber_panics);
        match panics.get_mut(name) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Subscriber `name` waits `delay` before committing each batch (zero:
    /// no more), as a slow read model does.
    pub fn slow_subscriber(&self, name: &str, delay: std::time::Duration) {
        tracing::warn!(subscriber = name, delay_ms = delay.as_millis() as u64, "fault injected: subscriber slowed");
        metrics::counter!("sugang_faults_injected_total", "fault" => "subscriber_slow").increment(1);
        let mut delays = lock(&self.subscriber_delays);
        if delay.is_zero() {
            delays.remove(name);
        } else {
            delays.insert(name.to_owned(), delay);
        }
    }

    /// How long subscriber `name` must wait before its next commit, if at all.
    pub(crate) fn subscriber_delay(&self, name: &str) -> Option<std::time::Duration> {
        lock(&self.subscriber_delays).get(name).copied()
    }

    /// Abort the process right after `step` (crash tests and the crash demo).
    pub fn crash_after(&self, step: Option<SagaStep>) {
        *lock(&self.crash_after) = step;
    }

    /// Called by the saga at each step: aborts if a crash is injected there.
    pub(crate) fn reached(&self, step: SagaStep, enrollment_id: u64) {
        if *lock(&self.crash_after) == Some(step) {
            tracing::error!(enrollment_id, ?step, "fault injected: process aborts now");
            std::process::abort();
        }
    }
}

/// Now, in unix milliseconds: read once per command by the actor handling it.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
