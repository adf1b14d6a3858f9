//! Fault injection: the knobs that break sugang on purpose, so supervisors,
//! breakers and saga recovery can be watched at work and tested.
//!
//! Owns only flags; the actors check them at the points they name. The
//! payment gateway's knobs live with the simulated gateway.

use std::collections::HashSet;
use std::sync::Mutex;

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
}

impl SagaStep {
    /// Parses the names used by `SUGANG_CRASH_AFTER` and the crash tests.
    pub fn parse(raw: &str) -> Option<SagaStep> {
        match raw {
            "seatReserved" | "seat_reserved" => Some(SagaStep::SeatReserved),
            "paymentApproved" | "payment_approved" => Some(SagaStep::PaymentApproved),
            "completed" => Some(SagaStep::Completed),
            "cancelCommitted" | "cancel_committed" => Some(SagaStep::CancelCommitted),
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
