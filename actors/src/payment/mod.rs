//! The Payment aggregate (one per enrollment: the payment id is the
//! enrollment id), and the parts of the payment context: the gateway port,
//! the breaker, and the actor that calls the gateway.
//!
//! `decide` and `apply` are pure: no I/O, no clock, no actor types. The
//! gateway is the outside world; this module only records what it answered.

pub(crate) mod actor;
pub mod breaker;
pub mod gateway;
pub(crate) mod queries;

use serde::{Deserialize, Serialize};
use sugang_storage::{Batch, EncodeError, Record};

use crate::event::Event;
use crate::model::{CourseId, EnrollmentId, Fee, PayMethod, StudentName};
use crate::tables::{PAYMENTS, REFUNDS, RefundOwed};

/// The API's `payStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayStatus {
    Approved,
    /// The enrollment is canceled; the refund is owed and being retried.
    CancelPending,
    Canceled,
}

impl PayStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PayStatus::Approved => "APPROVED",
            PayStatus::CancelPending => "CANCEL_PENDING",
            PayStatus::Canceled => "CANCELED",
        }
    }
}

/// A recorded payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub enrollment_id: EnrollmentId,
    pub course_id: CourseId,
    pub student: StudentName,
    pub amount: Fee,
    pub pay_method: PayMethod,
    pub status: PayStatus,
    pub approved_at_ms: u64,
    /// The key the gateway charged the fee under (the saga's reservation
    /// key): what a refund names.
    pub charge_key: u64,
}

/// A payment as version 1 stored it: its charge key was a record of its
/// own (`charge_keys`, folded in by the layout upgrade of `system::layout`).
#[derive(Serialize, Deserialize)]
pub(crate) struct PaymentV1 {
    pub(crate) enrollment_id: EnrollmentId,
    pub(crate) course_id: CourseId,
    pub(crate) student: StudentName,
    pub(crate) amount: Fee,
    pub(crate) pay_method: PayMethod,
    pub(crate) status: PayStatus,
    pub(crate) approved_at_ms: u64,
}

/// Written only by tests, to make a store as version 1 left it.
impl Record for PaymentV1 {}

impl Record for Payment {
    /// 2: `charge_key` added.
    const VERSION: u8 = 2;

    /// Version 1 had no charge key: until the layout upgrade sets it, the
    /// enrollment id, which is what enrollments from before reservation
    /// keys were charged under.
    fn upgrade(version: u8, body: &[u8]) -> Option<Result<Self, postcard::Error>> {
        (version == 1).then(|| {
            postcard::from_bytes::<PaymentV1>(body).map(|v1| Payment {
                charge_key: v1.enrollment_id.get(),
                enrollment_id: v1.enrollment_id,
                course_id: v1.course_id,
                student: v1.student,
                amount: v1.amount,
                pay_method: v1.pay_method,
                status: v1.status,
                approved_at_ms: v1.approved_at_ms,
            })
        })
    }
}

/// Writes what `events` do to the payment in `state`, and appends them: the
/// payment's one writer (through `transaction` for approvals and refund
/// requests, through its actor for confirmed refunds). An approval keeps
/// `charge_key` on the record (the events do not carry it).
pub(crate) fn write_events(
    batch: &mut Batch,
    state: PaymentState,
    events: &[Event],
    charge_key: Option<u64>,
) -> Result<(), EncodeError> {
    if let PaymentState::Recorded(mut payment) = events.iter().fold(state, apply) {
        if let Some(key) = charge_key {
            payment.charge_key = key;
        }
        batch.put(&PAYMENTS, &payment.enrollment_id.get(), &payment)?;
    }
    for event in events {
        batch.append(event.partition_key(), event)?;
    }
    Ok(())
}

/// Records that the gateway owes `id` a refund (retried until it succeeds).
pub(crate) fn write_refund_owed(batch: &mut Batch, id: EnrollmentId, owed: &RefundOwed) -> Result<(), EncodeError> {
    batch.put(&REFUNDS, &id.get(), owed)?;
    Ok(())
}

/// A payment's lifecycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentState {
    /// No payment recorded for this enrollment.
    None {
        enrollment_id: EnrollmentId,
    },
    Recorded(Payment),
}

/// What can happen to a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentCommand {
    /// The gateway approved the charge.
    Approve { course_id: CourseId, student: StudentName, amount: Fee, pay_method: PayMethod, charge_key: u64 },
    /// The enrollment was canceled: the fee is owed back.
    RequestCancel,
    /// The gateway confirmed the refund.
    ConfirmCancel,
}

/// Why a payment command is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaymentRejection {
    #[error("no payment for enrollment {0}")]
    NotFound(EnrollmentId),
    #[error("the payment of enrollment {0} was canceled; it cannot be approved again")]
    AlreadyCanceled(EnrollmentId),
}

/// Decides what a payment command means. Repeats are idempotent.
pub fn decide(state: &PaymentState, command: PaymentCommand, at_ms: u64) -> Result<Vec<Event>, PaymentRejection> {
    match (state, command) {
        (
            PaymentState::None { enrollment_id },
            PaymentCommand::Approve { course_id, student, amount, pay_method, .. },
        ) => Ok(vec![Event::PaymentApproved {
            enrollment_id: *enrollment_id,
            course_id,
            student,
            amount,
            pay_method,
            at_ms,
        }]),
        (PaymentState::None { enrollment_id }, _) => Err(PaymentRejection::NotFound(*enrollment_id)),
        (PaymentState::Recorded(payment), PaymentCommand::Approve { .. }) => match payment.status {
            PayStatus::Approved => Ok(vec![]),
            _ => Err(PaymentRejection::AlreadyCanceled(payment.enrollment_id)),
        },
        (PaymentState::Recorded(payment), PaymentCommand::RequestCancel) => match payment.status {
            PayStatus::Approved => Ok(vec![Event::PaymentCancelRequested {
                enrollment_id: payment.enrollment_id,
                student: payment.student.clone(),
                amount: payment.amount,
                at_ms,
            }]),
            _ => Ok(vec![]),
        },
        (PaymentState::Recorded(payment), PaymentCommand::ConfirmCancel) => match payment.status {
            PayStatus::Canceled => Ok(vec![]),
            _ => Ok(vec![Event::PaymentCanceled {
                enrollment_id: payment.enrollment_id,
                student: payment.student.clone(),
                amount: payment.amount,
                at_ms,
            }]),
        },
    }
}

/// Applies an event. Total: other events leave the payment as it is.
pub fn apply(state: PaymentState, event: &Event) -> PaymentState {
    match (state, event) {
        (
            PaymentState::None { enrollment_id },
            Event::PaymentApproved { enrollment_id: id, course_id, student, amount, pay_method, at_ms },
        ) if enrollment_id == *id => PaymentState::Recorded(Payment {
            enrollment_id,
            course_id: *course_id,
            student: student.clone(),
            amount: *amount,
            pay_method: pay_method.clone(),
            status: PayStatus::Approved,
            approved_at_ms: *at_ms,
            // The approval's writer sets the key the charge was made under.
            charge_key: enrollment_id.get(),
        }),
        (PaymentState::Recorded(mut payment), Event::PaymentCancelRequested { enrollment_id, .. })
            if payment.enrollment_id == *enrollment_id && payment.status == PayStatus::Approved =>
        {
            payment.status = PayStatus::CancelPending;
            PaymentState::Recorded(payment)
        }
        (PaymentState::Recorded(mut payment), Event::PaymentCanceled { enrollment_id, .. })
            if payment.enrollment_id == *enrollment_id =>
        {
            payment.status = PayStatus::Canceled;
            PaymentState::Recorded(payment)
        }
        (state, _) => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approve() -> PaymentCommand {
        PaymentCommand::Approve {
            course_id: CourseId::assigned(1),
            student: StudentName::parse("Kim").unwrap(),
            amount: Fee::parse(10_000).unwrap(),
            pay_method: PayMethod::parse(None).unwrap(),
            charge_key: 1 << 48,
        }
    }

    fn run(state: PaymentState, command: PaymentCommand) -> (PaymentState, usize) {
        let events = decide(&state, command, 7).unwrap();
        let n = events.len();
        (events.iter().fold(state, apply), n)
    }

    #[test]
    fn a_payment_is_approved_canceled_and_refunded_once() {
        let state = PaymentState::None { enrollment_id: EnrollmentId::assigned(3) };
        let (state, n) = run(state, approve());
        assert_eq!(n, 1);
        let (state, n) = run(state, approve());
        assert_eq!(n, 0, "a repeated approval records nothing");
        let (state, n) = run(state, PaymentCommand::RequestCancel);
        assert_eq!(n, 1);
        let PaymentState::Recorded(p) = &state else { panic!("recorded") };
        assert_eq!(p.status, PayStatus::CancelPending);
        let (state, n) = run(state, PaymentCommand::RequestCancel);
        assert_eq!(n, 0);
        let (state, n) = run(state, PaymentCommand::ConfirmCancel);
        assert_eq!(n, 1);
        let (state, n) = run(state, PaymentCommand::ConfirmCancel);
        assert_eq!(n, 0);
        let PaymentState::Recorded(p) = &state else { panic!("recorded") };
        assert_eq!(p.status, PayStatus::Canceled);
        assert_eq!(decide(&state, approve(), 8), Err(PaymentRejection::AlreadyCanceled(EnrollmentId::assigned(3))));
    }

    #[test]
    fn nothing_to_cancel_without_a_payment() {
        let state = PaymentState::None { enrollment_id: EnrollmentId::assigned(4) };
        assert_eq!(
            decide(&state, PaymentCommand::RequestCancel, 1),
            Err(PaymentRejection::NotFound(EnrollmentId::assigned(4)))
        );
    }
}
