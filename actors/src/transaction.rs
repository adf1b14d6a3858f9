//! The enrollment transactions: the saga steps that change more than one
//! aggregate at once, and so commit as one journal batch, through the course
//! actor that decides the seat change they rest on.
//!
//! A transaction is data, not a closure. The course decides its own part
//! (the seat); then each other part is decided by its aggregate's own
//! `decide`, on the course's events; a part that refuses refuses the whole
//! command, before anything is applied in memory or written. Each part's
//! records are written by the module that owns them (`enrollment::write_*`,
//! `payment::write_*`), so every record keeps one writer.
//!
//! | transaction | course (its `decide`) | enrollment | payment |
//! | --- | --- | --- | --- |
//! | [`Transaction::Enroll`] | `ConfirmSeat`: the seat confirmed under the next enrollment id (`EnrollmentCompleted`) | `Enroll`: the record and its student index | `Approve`: `APPROVED`, with the key the fee was charged under (`PaymentApproved`) |
//! | [`Transaction::Cancel`] | `CancelSeat`: the seat released (`EnrollmentCanceled`) | `Cancel`: `CANCELED` | `RequestCancel`: `CANCEL_PENDING` (`PaymentCancelRequested`), and the refund owed |
//! | [`Transaction::Void`] | `ReleaseSeat`: the pending seat released (`SeatReleased`) | – | the void of whatever the gateway may have charged, owed under the reservation key |
//!
//! A command whose course part changes nothing (an idempotent repeat) has no
//! other part either: the transaction is not consulted.

use sugang_storage::{Batch, EncodeError};

use crate::enrollment::{self, Decision, Enrollment, EnrollmentCommand, EnrollmentRejection, EnrollmentState};
use crate::event::Event;
use crate::model::{EnrollmentId, PayMethod};
use crate::payment::{self, PaymentCommand, PaymentRejection, PaymentState};
use crate::tables::{RefundOwed, RefundPurpose};

/// The parts of a saga step besides the course's.
#[derive(Clone, Debug)]
pub(crate) enum Transaction {
    /// Saga step 3: the fee is paid. The enrollment is recorded and its
    /// payment approved with the seat's confirmation.
    Enroll {
        /// The key the gateway charged the fee under (the saga's
        /// reservation key): a later refund names it.
        charge_key: EnrollmentId,
        pay_method: PayMethod,
    },
    /// A completed enrollment is canceled: the enrollment, as it is now, and
    /// its payment, as it is now (their owners' state, read by the saga).
    Cancel { enrollment: Box<Enrollment>, payment: PaymentState },
    /// A saga that may have been charged gives its pending seat back: the
    /// gateway owes back whatever it charged under `reservation`.
    Void { reservation: EnrollmentId, since_ms: u64 },
}

/// Why a part other than the course's refused: the command is refused as a
/// whole. A reply, never a fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransactionRejection {
    #[error(transparent)]
    Enrollment(#[from] EnrollmentRejection),
    #[error(transparent)]
    Payment(#[from] PaymentRejection),
}

/// What the other parts decided: their writes, their events appended after
/// the course's (the same batch).
pub(crate) struct Decided {
    pub(crate) batch: Batch,
}

/// Decided, or refused; a record that cannot be encoded is a fault.
pub(crate) type Outcome = Result<Result<Decided, TransactionRejection>, EncodeError>;

impl Transaction {
    /// Decides the other parts on the events the course decided, and writes
    /// them.
    pub(crate) fn decide(&self, course_events: &[Event], at_ms: u64) -> Outcome {
        match self {
            Transaction::Enroll { charge_key, pay_method } => enroll(*charge_key, pay_method, course_events, at_ms),
            Transaction::Cancel { enrollment, payment } => cancel(enrollment, payment, course_events, at_ms),
            Transaction::Void { reservation, since_ms } => {
                let mut batch = Batch::new();
                let released = course_events.iter().any(|e| matches!(e, Event::SeatReleased { .. }));
                if released {
                    let owed = RefundOwed { purpose: RefundPurpose::Void, since_ms: *since_ms };
                    payment::write_refund_owed(&mut batch, *reservation, &owed)?;
                }
                Ok(Ok(Decided { batch }))
            }
        }
    }
}

fn enroll(charge_key: EnrollmentId, pay_method: &PayMethod, course_events: &[Event], at_ms: u64) -> Outcome {
    let mut batch = Batch::new();
    let Some(completed) = course_events.iter().find(|e| matches!(e, Event::EnrollmentCompleted { .. })) else {
        return Ok(Ok(Decided { batch }));
    };
    let Event::EnrollmentCompleted { enrollment_id: id, course_id, student, fee, .. } = completed else {
        unreachable!("matched above");
    };
    // The id was taken from the counter just now: nothing is recorded
    // under it (see `course::actor::EnrollmentIds`).
    let state = EnrollmentState::Absent { id: *id };
    let record = match enrollment::decide(&state, EnrollmentCommand::Enroll(Box::new(completed.clone()))) {
        Ok(Decision::Record(record)) => record,
        Ok(_) => return Ok(Ok(Decided { batch })),
        Err(rejection) => return Ok(Err(rejection.into())),
    };
    let payment = PaymentState::None { enrollment_id: *id };
    let approve = PaymentCommand::Approve {
        course_id: *course_id,
        student: student.clone(),
        amount: *fee,
        pay_method: pay_method.clone(),
        charge_key: charge_key.get(),
    };
    let events = match payment::decide(&payment, approve, at_ms) {
        Ok(events) => events,
        Err(rejection) => return Ok(Err(rejection.into())),
    };
    enrollment::write_recorded(&mut batch, &record, course_events)?;
    payment::write_events(&mut batch, payment, &events, Some(charge_key.get()))?;
    Ok(Ok(Decided { batch }))
}

fn cancel(enrollment: &Enrollment, payment: &PaymentState, course_events: &[Event], at_ms: u64) -> Outcome {
    let mut batch = Batch::new();
    let Some(canceled) = course_events.iter().find(|e| matches!(e, Event::EnrollmentCanceled { .. })) else {
        return Ok(Ok(Decided { batch }));
    };
    let state = EnrollmentState::Recorded(Box::new(enrollment.clone()));
    match enrollment::decide(&state, EnrollmentCommand::Cancel) {
        Ok(Decision::Release { .. }) => {}
        Ok(_) => return Ok(Ok(Decided { batch })),
        Err(rejection) => return Ok(Err(rejection.into())),
    }
    let events = match payment::decide(payment, PaymentCommand::RequestCancel, at_ms) {
        Ok(events) => events,
        Err(rejection) => return Ok(Err(rejection.into())),
    };
    let EnrollmentState::Recorded(record) = enrollment::apply(state, canceled) else {
        return Ok(Ok(Decided { batch }));
    };
    enrollment::write_recorded(&mut batch, &record, course_events)?;
    let owed = RefundOwed { purpose: RefundPurpose::Cancel, since_ms: record.canceled_at_ms.unwrap_or(at_ms) };
    payment::write_refund_owed(&mut batch, record.id, &owed)?;
    payment::write_events(&mut batch, payment.clone(), &events, None)?;
    Ok(Ok(Decided { batch }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sugang_storage::{Journal, JournalOptions, Store, StoreOptions};

    use super::*;
    use crate::enrollment::EnrollStatus;
    use crate::event::RejectReason;
    use crate::model::{CourseId, CourseName, Fee, StudentName, TeacherName};
    use crate::payment::PayStatus;
    use crate::tables::{ENROLLMENTS, ENROLLMENTS_BY_STUDENT, PAYMENTS, REFUNDS};

    const RESERVATION: u64 = (1 << 48) + 5;

    fn completed(id: u64) -> Event {
        Event::EnrollmentCompleted {
            enrollment_id: EnrollmentId::assigned(id),
            course_id: CourseId::assigned(3),
            course_name: CourseName::parse("Rust").unwrap(),
            teacher: TeacherName::parse("Lee").unwrap(),
            student: StudentName::parse("Kim").unwrap(),
            fee: Fee::parse(50_000).unwrap(),
            text_book: None,
            pay_method: PayMethod::parse(None).unwrap(),
            addr: None,
            telephone: None,
            student_count: 1,
            at_ms: 100,
        }
    }

    fn canceled(id: u64) -> Event {
        Event::EnrollmentCanceled {
            enrollment_id: EnrollmentId::assigned(id),
            course_id: CourseId::assigned(3),
            course_name: CourseName::parse("Rust").unwrap(),
            teacher: TeacherName::parse("Lee").unwrap(),
            student: StudentName::parse("Kim").unwrap(),
            fee: Fee::parse(50_000).unwrap(),
            student_count: 0,
            at_ms: 200,
        }
    }

    fn enroll() -> Transaction {
        Transaction::Enroll {
            charge_key: EnrollmentId::assigned(RESERVATION),
            pay_method: PayMethod::parse(None).unwrap(),
        }
    }

    fn decided(outcome: Outcome) -> Batch {
        outcome.expect("encodes").expect("not refused").batch
    }

    /// Commits `batch` to a new store and hands it back.
    async fn committed(batch: Batch) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let (journal, task) = Journal::start(&store, JournalOptions::default()).unwrap();
        journal.commit(batch).await.unwrap();
        drop(journal);
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn enrolling_records_the_enrollment_and_its_approved_payment_with_the_charge_key() {
        let batch = decided(enroll().decide(&[completed(9)], 100));
        // The enrollment, its student index, its count; the payment; its
        // event (by course, the course's seat indexes it).
        assert_eq!((batch.key_count(), batch.event_count()), (5, 1));
        let (_dir, store) = committed(batch).await;
        let enrollment = store.get(&ENROLLMENTS, &9).unwrap().unwrap();
        assert_eq!(enrollment.status, EnrollStatus::Completed);
        assert!(store.contains(&ENROLLMENTS_BY_STUDENT, &("Kim".to_owned(), 9)).unwrap());
        let payment = store.get(&PAYMENTS, &9).unwrap().unwrap();
        assert_eq!(
            (payment.status, payment.charge_key, payment.amount.won()),
            (PayStatus::Approved, RESERVATION, 50_000)
        );
    }

    #[test]
    fn a_step_without_a_completion_writes_nothing_else() {
        let released = Event::SeatReleased {
            course_id: CourseId::assigned(3),
            enrollment_id: EnrollmentId::assigned(RESERVATION),
            student: StudentName::parse("Kim").unwrap(),
            reason: RejectReason::PaymentDeclined,
            at_ms: 100,
        };
        assert!(decided(enroll().decide(std::slice::from_ref(&released), 100)).is_empty());
        // A void is owed only for a seat actually released.
        let void = Transaction::Void { reservation: EnrollmentId::assigned(RESERVATION), since_ms: 1 };
        assert!(decided(void.decide(&[], 100)).is_empty());
        assert_eq!(decided(void.decide(&[released], 100)).key_count(), 1);
    }

    #[test]
    fn a_cancellation_whose_payment_is_missing_is_refused_as_a_whole() {
        let EnrollmentState::Recorded(enrollment) =
            enrollment::apply(EnrollmentState::Absent { id: EnrollmentId::assigned(9) }, &completed(9))
        else {
            unreachable!()
        };
        let canceled = canceled(9);
        let missing = PaymentState::None { enrollment_id: EnrollmentId::assigned(9) };
        let cancel = Transaction::Cancel { enrollment: enrollment.clone(), payment: missing };
        let refused = cancel.decide(std::slice::from_ref(&canceled), 200).expect("encodes").err();
        assert_eq!(refused, Some(TransactionRejection::Payment(PaymentRejection::NotFound(EnrollmentId::assigned(9)))));
    }

    #[tokio::test]
    async fn a_cancellation_records_the_enrollment_canceled_and_the_refund_owed() {
        let enrolled = decided(enroll().decide(&[completed(9)], 100));
        let (_dir, store) = committed(enrolled).await;
        let enrollment = store.get(&ENROLLMENTS, &9).unwrap().unwrap();
        let payment = PaymentState::Recorded(store.get(&PAYMENTS, &9).unwrap().unwrap());
        let canceled = canceled(9);
        let cancel = Transaction::Cancel { enrollment: Box::new(enrollment), payment };
        let (_dir, store) = committed(decided(cancel.decide(&[canceled], 200))).await;
        assert_eq!(store.get(&ENROLLMENTS, &9).unwrap().unwrap().status, EnrollStatus::Canceled);
        let payment = store.get(&PAYMENTS, &9).unwrap().unwrap();
        assert_eq!((payment.status, payment.charge_key), (PayStatus::CancelPending, RESERVATION));
        assert!(store.contains(&REFUNDS, &9).unwrap());
    }
}

#[cfg(test)]
mod in_the_system {
    use sugang_storage::Batch;

    use crate::tables::PAYMENTS;
    use crate::testing::{config, korean, request};
    use crate::{CommandError, EnrollStatus, Sugang};

    /// A part that refuses refuses the whole step: the course keeps the
    /// seat, the enrollment stays completed. (Before the transaction was
    /// named, the payment's rejection was dropped and the seat released.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancellation_the_payment_refuses_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let system = Sugang::start(config(dir.path())).await.unwrap();
        let course = korean(&system).await;
        let id = system.enroll(request(course, "Kim")).await.unwrap().value.id;
        // The payment record is gone (as if lost): its part cannot decide.
        let mut batch = Batch::new();
        batch.delete(&PAYMENTS, &id.get());
        system.journal().commit(batch).await.unwrap();

        let refused = system.cancel(id).await.unwrap_err();
        assert!(matches!(&refused, CommandError::Conflict(m) if m.contains("no payment")), "{refused:?}");
        assert_eq!(system.enrollment(id).unwrap().map(|e| e.status), Some(EnrollStatus::Completed));
        let seats = system.seat_counts(course).unwrap();
        assert_eq!((seats.confirmed, seats.pending), (1, 0), "the seat is still taken");
        system.shutdown().await;
    }
}
