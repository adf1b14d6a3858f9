//! The catalogue of the metric families the actors and the store record:
//! each one's name, type and the `# HELP` text `/metrics` shows, written
//! once here. [`describe`] hands them to whichever recorder is installed
//! (the HTTP front's Prometheus recorder calls it once, when it installs
//! its own).
//!
//! Owns the descriptions only: every series is still recorded where it
//! happens (`entity.rs`, `bus/`, `enrollment/`, `payment/`, `faults.rs`,
//! `system/`, and `sugang-storage`'s journal, which this crate opens and
//! whose families are described here so that one list covers the store
//! too). A family recorded without an entry here shows on `/metrics`
//! without `# HELP`; the API tests fail on that.

/// How a family is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    /// Rendered as a Prometheus summary unless the recorder is given buckets for it.
    Histogram,
}

/// One metric family: what `/metrics` calls it and says of it.
#[derive(Clone, Copy, Debug)]
pub struct MetricFamily {
    pub name: &'static str,
    pub kind: MetricKind,
    /// The `# HELP` text: what one unit is and which labels split it.
    pub help: &'static str,
}

const fn family(name: &'static str, kind: MetricKind, help: &'static str) -> MetricFamily {
    MetricFamily { name, kind, help }
}

use MetricKind::{Counter, Gauge, Histogram};

/// Every family recorded by `sugang-actors` and `sugang-storage`.
pub const METRIC_FAMILIES: &[MetricFamily] = &[
    // Enrollment saga.
    family(
        "sugang_enrollments_total",
        Counter,
        "Enrollment sagas that ended, by outcome: completed, rejected (the seat released again after a failed payment), canceled",
    ),
    family(
        "sugang_saga_step_seconds",
        Histogram,
        "Time one enrollment saga step took, in seconds, by step: reserve (the seat), charge (the payment), confirm",
    ),
    // Truthful "full".
    family(
        "sugang_seat_waits_total",
        Counter,
        "Seat requests that found every free seat held by a payment in progress and waited at their course, by outcome: seated, refused (full once every held seat completed, or another refusal), timeout, shed (too many waiting)",
    ),
    family(
        "sugang_waitlist_promotions_total",
        Counter,
        "Waitlist entries given a freed seat, by outcome: promoted (the seat given, in the batch that freed it), enrolled (paid with the stored account), failed (declined or unavailable: the seat passed on)",
    ),
    // Payment.
    family(
        "sugang_payments_total",
        Counter,
        "Payment attempts answered, by outcome: approved, declined, unavailable (gateway failed or timed out)",
    ),
    family(
        "sugang_refunds_total",
        Counter,
        "Refund attempts, by outcome: refunded, retrying (the gateway failed; tried again)",
    ),
    family(
        "sugang_payment_rejected_total",
        Counter,
        "Payments refused before reaching the gateway, by reason: bulkhead (too many calls in flight), breaker_open",
    ),
    family("sugang_payment_in_flight", Gauge, "Payment gateway calls in flight now (bounded by the bulkhead)"),
    family("sugang_payment_call_seconds", Histogram, "Time a payment gateway call took, in seconds, by op"),
    family(
        "sugang_gateway_calls_total",
        Counter,
        "Calls the payment gateway decided, by op (approve, refund) and outcome, including answers that reached no caller",
    ),
    family("sugang_breaker_state", Gauge, "The payment circuit breaker's state: 0 closed, 1 open, 2 half-open"),
    family("sugang_breaker_transitions_total", Counter, "Payment breaker state changes, by from and to"),
    // Supervision of entity actors.
    family("sugang_live_entities", Gauge, "Entity actors active in memory now (not passivated), by kind"),
    family("sugang_actor_restarts_total", Counter, "Actors restarted by their supervisor after a crash, by kind"),
    family(
        "sugang_actor_held_down_total",
        Counter,
        "Supervised actors (entities, payment, subscriber workers) held down after exceeding their restart intensity, by kind (asks answer 503 until the backoff ends)",
    ),
    family(
        "sugang_asks_shed_total",
        Counter,
        "Asks refused with 503 because one entity already had its maximum outstanding, by kind",
    ),
    family("sugang_faults_injected_total", Counter, "Faults injected through /admin/faults, by fault"),
    // Event bus and read models.
    family(
        "sugang_subscriber_lag",
        Gauge,
        "Events in the log a subscriber has not yet applied, by subscriber (sampled when /metrics is scraped)",
    ),
    family(
        "sugang_subscriber_events_total",
        Counter,
        "Events a subscriber applied and committed its offset for, by subscriber",
    ),
    family(
        "sugang_subscriber_effects_total",
        Counter,
        "Read-model writes and notifications a subscriber made, by subscriber",
    ),
    // The waiting room.
    family("sugang_gate_waiting", Gauge, "Tickets in the waiting room not yet admitted (early ones included)"),
    family("sugang_gate_admitted_total", Counter, "Tickets the waiting room admitted"),
    family(
        "sugang_gate_admitted_per_second",
        Gauge,
        "Admissions per second over the last two seconds, as of the gate's last tick",
    ),
    family(
        "sugang_gate_wait_seconds",
        Histogram,
        "Time from taking a ticket to its admission, in seconds (early tickets wait for the opening too)",
    ),
    family(
        "sugang_gate_refused_total",
        Counter,
        "Enrollments refused with 428 while the waiting room is on, by reason: missing, invalid, not_yours, expired (recorded by the HTTP front)",
    ),
    // The journal (recorded by sugang-storage).
    family(
        "sugang_journal_batches_total",
        Counter,
        "Callers' write batches the journal committed, refused or failed, by outcome (committed; conflict: a guard did not hold; refused; failed; a group commit holds several)",
    ),
    family("sugang_journal_group_size", Histogram, "Callers' batches written together in one journal group commit"),
    family(
        "sugang_journal_group_parts",
        Histogram,
        "Log messages a cluster journal's group commit was stored in (a course's batches on its own subject)",
    ),
    family(
        "sugang_journal_commit_seconds",
        Histogram,
        "Time one journal group commit took from its first batch to its outcome, in seconds (flush included)",
    ),
    family(
        "sugang_journal_apply_seconds",
        Histogram,
        "Time writing one journal group into the store (one atomic fjall batch) took, in seconds",
    ),
    family(
        "sugang_journal_flush_seconds",
        Histogram,
        "Time persisting one journal group (fjall's journal written out, fdatasync for fsync durability) took, in seconds",
    ),
    family("sugang_journal_last_seq", Gauge, "The seq of the last event the journal committed"),
    family(
        "sugang_journal_keys_total",
        Counter,
        "Keys the journal wrote (puts, deletes, offsets, events, trimmed events) in committed groups",
    ),
    family(
        "sugang_storage_failed",
        Gauge,
        "1 once a journal write or persist failed: the store takes no more writes and the process must restart",
    ),
    family(
        "sugang_events_trimmed_total",
        Counter,
        "Events removed from the log by retention, below every subscriber's offset",
    ),
    // Cluster mode (sugang serve --nats).
    family(
        "sugang_log_applied_total",
        Counter,
        "Commit groups of the cluster's log applied to this node's store (every node applies every one)",
    ),
    family("sugang_log_applied_position", Gauge, "The last position of the cluster's log this node has applied"),
    family(
        "sugang_cluster_appends_total",
        Counter,
        "Log messages (commit group parts) the primary appended to the cluster's log, by outcome (stored; too_large: split and sent again; fenced: another node is the primary, nothing stored; failed: unanswered, in doubt)",
    ),
    family(
        "sugang_cluster_append_bytes_total",
        Counter,
        "Bytes of the log messages (commit group parts) the primary appended to the cluster's log",
    ),
    family(
        "sugang_cluster_append_seconds",
        Histogram,
        "Time from handing a commit group's messages to JetStream to their acknowledgements, stored or not (a replicated NATS round trip per message)",
    ),
    family(
        "sugang_cluster_append_parts",
        Histogram,
        "Log messages one commit group took: one per run of one course's batches, one per run of the others",
    ),
    family(
        "sugang_cluster_refollows_total",
        Counter,
        "Times this node followed the cluster's log again after its consumer went silent while the log moved on",
    ),
    family(
        "sugang_cluster_takeovers_total",
        Counter,
        "Times this node became the primary (won the lease, fenced the log, started the actors)",
    ),
    family(
        "sugang_cluster_primary_retaken_total",
        Counter,
        "Times this node, the primary, took its lease back after it lapsed unrenewed (NATS slow to elect the lease bucket's leader) instead of stopping",
    ),
    family(
        "sugang_cluster_forwarded_commits_total",
        Counter,
        "Batches of this node's subscriber units committed through the primary, by outcome (committed; conflict: a guard refused it; refused: no primary took it; failed: in doubt)",
    ),
    family(
        "sugang_cluster_forwarded_commit_seconds",
        Histogram,
        "Time from sending a subscriber unit's batch to the primary to its commit there (two NATS round trips, replicated)",
    ),
    family(
        "sugang_cluster_units_total",
        Counter,
        "Subscriber units this node took (acquired), gave up to another node (released) or lost (its lease expired), by event",
    ),
    family("sugang_cluster_units_held", Gauge, "Subscriber units whose worker runs on this node"),
];

/// Describes every family of [`METRIC_FAMILIES`] to the installed recorder.
/// Call it once the recorder is installed; calling it again is harmless.
pub fn describe() {
    for family in METRIC_FAMILIES {
        match family.kind {
            Counter => metrics::describe_counter!(family.name, family.help),
            Gauge => metrics::describe_gauge!(family.name, family.help),
            Histogram => metrics::describe_histogram!(family.name, family.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_is_listed_once_with_a_prometheus_name_and_help() {
        let mut names: Vec<&str> = METRIC_FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let listed = names.len();
        names.dedup();
        assert_eq!(names.len(), listed, "a family listed twice");
        for family in METRIC_FAMILIES {
            assert!(family.name.starts_with("sugang_"), "{}", family.name);
            assert!(family.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert_eq!(
                family.kind == Counter,
                family.name.ends_with("_total"),
                "{}: counters end in _total",
                family.name
            );
            assert!(!family.help.is_empty() && !family.help.contains('\n'), "{}", family.name);
        }
    }
}
