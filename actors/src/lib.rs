//! sugang's domain and the actors that own it: courses and enrollments as
//! supervised entity actors, the enrollment saga, the payment actor with its
//! timeout, breaker and bulkhead, fault injection, and the facade the HTTP
//! front calls.
//!
//! Knows nothing of HTTP. Stores through `sugang-storage` only: every state
//! change and its events commit in one journal batch before any reply.
//!
//! # Layout
//!
//! - `model`: domain newtypes parsed once (`CourseId`, `Fee`, `Capacity`, …).
//! - `event`: the event catalogue (every event, who emits it, who consumes it).
//! - `course`: the Course aggregate (`decide`/`apply`) and its actor.
//! - `enrollment`: the Enrollment aggregate and its actor, which runs the saga.
//! - `payment`: the Payment aggregate, the gateway port and the simulated
//!   gateway, the breaker, and the payment actor.
//! - `entity`: activation on demand, passivation, restarts and load
//!   shedding for entity actors of any kind.
//! - `supervision`: the one restart policy of every supervised child
//!   (intensity, hold-down with backoff, escalation), counted and logged alike.
//! - `tables`: the tables the actors own and the records in them.
//! - `bus`: durable pub/sub over the event log: the publisher, subscriber
//!   workers (offsets committed with effects, scale-out by key), retention.
//! - `delivery`, `mypage`, `notifier`: the subscribers (projections).
//! - `gate`: the waiting room: tickets, the shuffle at the opening,
//!   admission at a set rate, admission tokens; its actor and supervisor.
//! - `faults`: the fault-injection knobs.
//! - `metrics`: the name, type and help text of every metric family recorded
//!   here and in the store.
//! - `waitlist`: course waitlists (entries, their read model) and the
//!   facade's answers about seats.
//! - `paging`: page requests, pages, and the seeks every list query uses
//!   (totals from counts kept with the data, rebuilt once for an older store).
//! - `system`: the facade ([`Sugang`]) split by job: supervision and
//!   start/stop (+ recovery), the root supervisor, commands, operations
//!   views. Each read-model query sits beside the tables it reads
//!   (`course::queries`, `enrollment::queries`, `payment::queries`,
//!   `delivery`, `mypage`, `notifier::queries`).
//! - `bench_support` (hidden): fills a store for `bench/pages.rs`.

#[doc(hidden)]
pub mod bench_support;
mod bus;
mod course;
mod delivery;
mod enrollment;
mod entity;
mod event;
mod faults;
mod gate;
mod metrics;
mod model;
mod mypage;
mod notifier;
mod paging;
mod payment;
mod supervision;
mod system;
mod tables;
#[cfg(test)]
mod testing;
mod transaction;
mod waitlist;

pub use bus::{BusConfig, SubscriberStatus};
pub use course::{Course, CoursePatch, CourseRejection, CourseState, Seat};
pub use delivery::{Delivery, DeliveryStatus};
pub use enrollment::actor::{EnrollRequest, SagaFailure};
pub use enrollment::queries::EnrollmentFilter;
pub use enrollment::{EnrollStatus, Enrollment};
pub use entity::{AskError, SupervisionConfig, SupervisorSnapshot};
pub use event::{CourseDetails, Event, RejectReason};
pub use faults::{Faults, SagaStep};
pub use gate::actor::Progress as GateProgress;
pub use gate::{
    AdmissionError, Admitted, GateRejection, GateSettings, GateStatus, MAX_ADMISSION_TTL_SECS, MAX_ADMIT_PER_SECOND,
    Ticket, TicketStatus, TicketView,
};
pub use metrics::{METRIC_FAMILIES, MetricFamily, MetricKind, describe as describe_metrics};
pub use model::{
    Capacity, CourseId, CourseName, EnrollmentId, Fee, FieldError, MinStudents, PayMethod, StudentName, TeacherName,
    TextBook, parse_optional,
};
pub use mypage::{InstructorView, Schedule, StudentView};
pub use notifier::{Notification, RecipientRole};
pub use paging::{PageRequest, Paged};
pub use payment::actor::{PaymentConfig, PaymentFailure, PaymentSnapshot};
pub use payment::breaker::{BreakerConfig, BreakerState};
pub use payment::gateway::{GatewayFaults, InvalidFaults, LedgerSummary, SimulatedGateway};
pub use payment::{PayStatus, Payment};
pub use supervision::RestartPolicy;
pub use system::{CommandError, Config, Done, StartError, Sugang, TreeNode, TreeSnapshot, WeakSugang};
pub use tables::CourseRecord;
pub use waitlist::{Enrolled, SeatCounts, WaitStatus, WaitlistEntry, WaitlistFilter, WaitlistSettings};
