//! The enrollment actor: runs one enrollment's saga and owns its record.
//!
//! Enroll: reserve a seat (course) → charge the fee (payment) → confirm the
//! seat, which commits the completed enrollment and its approved payment in
//! the same batch (course, with `transaction::Transaction::Enroll`). A
//! refusal at any step releases the seat; a charge that may have happened (a
//! timeout) is voided through an owed refund (`Transaction::Void`).
//! Cancel: release the seat, committing the canceled enrollment and the
//! payment's `CANCEL_PENDING` together (course, `Transaction::Cancel`) →
//! refund (payment), retried until it succeeds.
//!
//! The pending seat is the saga's durable marker: an actor that starts and
//! finds one for its id (a restart, or start-up recovery) compensates it.
//!
//! # Promotions
//!
//! A waitlist entry given a freed seat has its seat reserved by the course
//! under the entry's promotion key (`course::promotion_key`); the actor of
//! that key runs the rest of the saga: charge the account stored with the
//! entry → confirm (the entry `ENROLLED`), or release the seat (the entry
//! `FAILED`, the seat passing to the next entry). Its pending seat is its
//! marker too, but it is resumed rather than compensated: joining was
//! consent to be charged, and the charge is idempotent by key.
//!
//! # Two keys
//!
//! A saga runs under its *reservation* key (never reused, from a range of
//! its own above every enrollment id: see `system`): its actor, its pending
//! seat, the gateway's charge (whose ledger outlives a refused attempt) and
//! the void of a charge it may have made are keyed by it. The public
//! enrollment id is assigned only when the course confirms the seat, after
//! the charge is approved, in the batch that records the enrollment (see
//! `course::actor`'s "Dense enrollment ids"); so a refused enrollment
//! (course full, declined card, stale fee, payment unavailable) takes no
//! id. From then on everything (the enrollment, its payment, shipment and
//! views, its cancellation) is keyed by the enrollment id; the reservation
//! key is kept on the payment (`charge_key`) for the refund of a cancellation.
//!
//! Crash recovery is unchanged: until the completion commits, the pending
//! seat under the reservation key says the saga is unfinished and start-up
//! compensates it (seat released, charge voided); once it commits, the
//! enrollment, its payment and the seat under its id are durable together,
//! and no id was handed out for anything that did not commit.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sugang_storage::Store;
use tokio::time::Instant;

use super::{Decision, Enrollment, EnrollmentCommand, EnrollmentRejection, EnrollmentState, apply, decide};
use crate::course::actor::{CourseFailure, CourseKind, CourseMsg, CourseReply};
use crate::course::{Completion, CourseCommand, CourseRejection, Joining, StoredPayment, promoted_entry};
use crate::entity::{AskError, Entities, EntityArgs, EntityKind, IdleCheck, Redelivery, Registry, schedule_idle_check};
use crate::event::{Event, RejectReason};
use crate::faults::{Faults, SagaStep, now_ms};
use crate::model::{CourseId, EnrollmentId, Fee, PayMethod, StudentName};
use crate::payment::actor::{PaymentFailure, PaymentMsg};
use crate::payment::gateway::{ChargeReceipt, ChargeRequest};
use crate::payment::{PaymentRejection, PaymentState};
use crate::system::RESERVATION_BASE;
use crate::tables::{ENROLLMENTS, PAYMENTS, REFUNDS, RefundPurpose, SEATS};
use crate::transaction::{Transaction, TransactionRejection};
use crate::waitlist::WAITLIST_ENTRIES;

/// How many more times a saga asks for its seat's confirmation after an ask
/// that went unanswered (see `enroll`).
pub(crate) const CONFIRM_RETRIES: u32 = 2;

/// What a student asks for, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollRequest {
    pub course_id: CourseId,
    pub student: StudentName,
    /// The fee the client saw, if it sent one (a legacy field).
    pub expected_fee: Option<Fee>,
    pub pay_method: PayMethod,
    pub pay_account: Option<String>,
    pub addr: Option<String>,
    pub telephone: Option<String>,
}

/// Why an enrollment or a cancellation did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SagaFailure {
    #[error(transparent)]
    Course(#[from] CourseRejection),
    #[error(transparent)]
    Enrollment(#[from] EnrollmentRejection),
    /// The payment refused its part of a saga step (see `transaction`).
    #[error(transparent)]
    Payment(#[from] PaymentRejection),
    #[error("payment declined: {reason}")]
    PaymentDeclined { reason: String },
    /// The payment could not be made: timeout, breaker open, bulkhead full.
    #[error("payment unavailable: {reason}")]
    PaymentUnavailable { reason: String, retry_after: Option<Duration> },
    /// A participant is overloaded, held down or failing.
    #[error(transparent)]
    Unavailable(#[from] AskError),
    #[error("storage: {0}")]
    Storage(String),
    /// The store takes no more writes: nothing of this step was stored.
    #[error("storage stopped: {0}")]
    Stopped(String),
    /// Not a failure: the course was full and the request joined its
    /// waitlist (`new`), or had joined it before.
    #[error("waitlisted as entry {entry_id}")]
    Waitlisted { entry_id: u64, new: bool, seq: u64 },
}

/// What enrollment actors share.
pub(crate) struct EnrollmentCtx {
    pub(crate) store: Store,
    pub(crate) courses: Entities<CourseKind>,
    pub(crate) payment: crate::system::PaymentHandle,
    pub(crate) faults: Arc<Faults>,
    /// How long to wait for a course's answer.
    pub(crate) ask_timeout: Duration,
    /// How long to wait for the payment actor (its own timeout, plus slack).
    pub(crate) payment_ask_timeout: Duration,
}

pub(crate) enum EnrollmentMsg {
    Enroll {
        request: EnrollRequest,
        /// Join the course's waitlist if it is full.
        join: bool,
        reply: RpcReplyPort<Result<(Enrollment, u64), SagaFailure>>,
    },
    Cancel {
        reply: RpcReplyPort<Result<(Enrollment, u64), SagaFailure>>,
    },
    /// Resume (a promotion) or compensate a saga this id left unfinished,
    /// holding a seat in `course` if start-up recovery found one (nothing
    /// if there is none).
    Recover {
        course: Option<CourseId>,
        reply: Option<RpcReplyPort<Result<(), SagaFailure>>>,
    },
    IdleCheck,
    Stop,
}

impl From<IdleCheck> for EnrollmentMsg {
    fn from(_: IdleCheck) -> Self {
        EnrollmentMsg::IdleCheck
    }
}

pub(crate) struct EnrollmentKind;

impl EntityKind for EnrollmentKind {
    type Actor = EnrollmentActor;
    type Msg = EnrollmentMsg;
    type Ctx = EnrollmentCtx;
    const KIND: &'static str = "enrollment";
    fn behaviour() -> EnrollmentActor {
        EnrollmentActor
    }
}

pub(crate) struct EnrollmentActor;

pub(crate) struct EnrollmentActorState {
    id: EnrollmentId,
    enrollment: EnrollmentState,
    ctx: Arc<EnrollmentCtx>,
    registry: Arc<Registry>,
    last_active: Instant,
    /// The course whose seat this unfinished saga holds: until it confirms
    /// or releases it, the actor stays live and compensation is due.
    held: Option<CourseId>,
}

impl Actor for EnrollmentActor {
    type Msg = EnrollmentMsg;
    type State = EnrollmentActorState;
    type Arguments = EntityArgs<EnrollmentCtx>;

    async fn pre_start(
        &self,
        myself: ActorRef<EnrollmentMsg>,
        args: EntityArgs<EnrollmentCtx>,
    ) -> Result<EnrollmentActorState, ActorProcessingErr> {
        let id = EnrollmentId::assigned(args.id);
        // A saga's key (from `RESERVATION_BASE`) names no enrollment record,
        // and an enrollment id no pending seat: nothing is read that cannot
        // be there. A saga key's actor that starts afresh either runs a new
        // saga (its key was never used) or is told to `Recover`; one that
        // restarts after a failure looks for the seat its saga left.
        let saga = id.get() >= RESERVATION_BASE;
        let enrollment = match saga {
            true => None,
            false => args.ctx.store.get(&ENROLLMENTS, &id.get())?,
        };
        let enrollment = match enrollment {
            Some(record) => EnrollmentState::Recorded(Box::new(record)),
            None => EnrollmentState::Absent { id },
        };
        let held = match saga && args.restarted {
            true => crate::course::actor::hold_of(&args.ctx.store, id)?,
            false => None,
        };
        if held.is_some() {
            myself.send_message(EnrollmentMsg::Recover { course: None, reply: None })?;
        }
        schedule_idle_check(&myself, args.registry.config.idle);
        Ok(EnrollmentActorState {
            id,
            enrollment,
            ctx: args.ctx,
            registry: args.registry,
            last_active: Instant::now(),
            held,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<EnrollmentMsg>,
        message: EnrollmentMsg,
        state: &mut EnrollmentActorState,
    ) -> Result<(), ActorProcessingErr> {
        // The idle tick itself is not activity: counting it would keep the
        // actor awake forever.
        if !matches!(message, EnrollmentMsg::IdleCheck) {
            state.last_active = Instant::now();
        }
        match message {
            EnrollmentMsg::Enroll { request, join, reply } => {
                let answer = state.enroll(request, join).await;
                if let Err(failure) = &answer {
                    tracing::debug!(enrollment_id = state.id.get(), %failure, "enrollment refused");
                }
                let _ = reply.send(answer);
                // The saga is over and everything it did is in storage: free
                // the memory now rather than after the idle time.
                if state.held.is_none() && state.registry.begin_passivation(state.id.get(), myself.get_id()) {
                    myself.send_message(EnrollmentMsg::Stop)?;
                }
                // A saga that ended still holding its seat (its compensation
                // failed: the course did not answer) retries it, as a
                // recovered one does, rather than keep the seat until the
                // next start.
                if state.held.is_some() {
                    tracing::warn!(enrollment_id = state.id.get(), course_id = ?state.held.map(|c| c.get()), "the saga still holds its seat; compensating again");
                    myself.send_after(Duration::from_secs(1), || EnrollmentMsg::Recover { course: None, reply: None });
                }
            }
            EnrollmentMsg::Cancel { reply } => {
                let answer = state.cancel().await;
                let _ = reply.send(answer);
            }
            EnrollmentMsg::Recover { course, reply } => {
                if course.is_some() {
                    state.held = course;
                }
                let answer = match promoted_entry(state.id) {
                    Some(entry_id) => state.promote(entry_id).await,
                    None => state.compensate(RejectReason::Interrupted, true).await,
                };
                if let Err(e) = &answer {
                    tracing::warn!(enrollment_id = state.id.get(), error = %e, "compensation failed; retrying");
                    myself.send_after(Duration::from_secs(1), || EnrollmentMsg::Recover { course: None, reply: None });
                }
                if let Some(reply) = reply {
                    let _ = reply.send(answer);
                }
            }
            EnrollmentMsg::IdleCheck => {
                // A saga holding a seat stays live until it is compensated.
                if state.registry.idle_check(state.id.get(), &myself, state.last_active, state.held.is_some()) {
                    myself.send_message(EnrollmentMsg::Stop)?;
                }
            }
            EnrollmentMsg::Stop => myself.stop(Some("passivated".into())),
        }
        Ok(())
    }
}

impl EnrollmentActorState {
    async fn ask_course(
        &self,
        course_id: CourseId,
        command: CourseCommand,
        transaction: Option<Transaction>,
    ) -> Result<CourseReply, SagaFailure> {
        let reply = self
            .ctx
            .courses
            .ask(
                course_id.get(),
                |reply| CourseMsg::Command { command: command.clone(), transaction: transaction.clone(), reply },
                self.ctx.ask_timeout,
                Redelivery::Idempotent,
            )
            .await?;
        reply.map_err(SagaFailure::from)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(enrollment_id = self.id.get(), course_id = request.course_id.get()))]
    async fn enroll(&mut self, request: EnrollRequest, join: bool) -> Result<(Enrollment, u64), SagaFailure> {
        let id = self.id;
        let course_id = request.course_id;
        // Step 1: a seat (or, if the course is full and the student asked,
        // a place on its waitlist).
        let reserve = CourseCommand::ReserveSeat {
            enrollment_id: id,
            student: request.student.clone(),
            expected_fee: request.expected_fee,
            join: join.then(|| Joining {
                entry_id: 0,
                payment: StoredPayment {
                    pay_method: request.pay_method.clone(),
                    pay_account: request.pay_account.clone(),
                    addr: request.addr.clone(),
                    telephone: request.telephone.clone(),
                },
            }),
        };
        let step = Instant::now();
        let reserved = self.ask_course(course_id, reserve, None).await?;
        if let Some(entry_id) = reserved.waitlisted {
            let new = reserved.events.iter().any(|e| matches!(e, Event::WaitlistJoined { .. }));
            return Err(SagaFailure::Waitlisted { entry_id, new, seq: reserved.seq });
        }
        metrics::histogram!("sugang_saga_step_seconds", "step" => "reserve").record(step.elapsed().as_secs_f64());
        self.held = Some(course_id);
        self.ctx.faults.reached(SagaStep::SeatReserved, id.get());
        let fee = reserved
            .seat
            .as_ref()
            .map(|seat| seat.fee)
            .ok_or_else(|| SagaFailure::Storage("the reserved seat is missing from the course".into()))?;

        // Step 2: the fee.
        let charge = ChargeRequest {
            enrollment_id: id.get(),
            amount: fee.won(),
            pay_method: request.pay_method.as_str().to_owned(),
            pay_account: request.pay_account.clone(),
        };
        let step = Instant::now();
        let paid = self.charge(charge).await;
        metrics::histogram!("sugang_saga_step_seconds", "step" => "charge").record(step.elapsed().as_secs_f64());
        let receipt = match paid {
            Ok(receipt) => receipt,
            Err(PaymentFailure::Declined { reason }) => {
                self.compensate(RejectReason::PaymentDeclined, false).await?;
                return Err(SagaFailure::PaymentDeclined { reason });
            }
            Err(PaymentFailure::Unavailable { reason, retry_after, may_have_charged }) => {
                let why =
                    if may_have_charged { RejectReason::PaymentUnavailable } else { RejectReason::PaymentRefused };
                self.compensate(why, may_have_charged).await?;
                return Err(SagaFailure::PaymentUnavailable { reason, retry_after });
            }
        };
        self.ctx.faults.reached(SagaStep::PaymentApproved, id.get());
        tracing::debug!(enrollment_id = id.get(), gateway_ref = %receipt.gateway_ref, "fee charged");

        // Step 3: the seat is confirmed, the enrollment and its payment
        // recorded; the course assigns the enrollment its public id.
        let completion = Completion {
            pay_method: request.pay_method.clone(),
            addr: request.addr.clone(),
            telephone: request.telephone.clone(),
        };
        let step = Instant::now();
        let mut confirmed = self.complete(course_id, &request, completion.clone()).await;
        // A confirmation the course did not answer in time may still commit
        // (its write was slow, not refused): ask again, which the course
        // answers with the enrollment if it did, before giving the seat
        // back and telling the student it failed while it did not.
        for _ in 0..CONFIRM_RETRIES {
            if !matches!(confirmed, Err(SagaFailure::Unavailable(_))) {
                break;
            }
            tracing::warn!(
                enrollment_id = id.get(),
                course_id = course_id.get(),
                "the seat's confirmation went unanswered; asking again"
            );
            confirmed = self.complete(course_id, &request, completion.clone()).await;
        }
        metrics::histogram!("sugang_saga_step_seconds", "step" => "confirm").record(step.elapsed().as_secs_f64());
        let confirmed = match confirmed {
            Ok(confirmed) => confirmed,
            Err(failure) => {
                tracing::error!(enrollment_id = id.get(), course_id = course_id.get(), %failure, "confirming the seat failed; compensating");
                self.compensate(RejectReason::PaymentUnavailable, true).await?;
                return Err(failure);
            }
        };
        self.held = None;
        let enrollment_id =
            confirmed.seat_id.ok_or_else(|| SagaFailure::Storage("the confirmed seat has no enrollment id".into()))?;
        let recorded = match confirmed.events.iter().fold(EnrollmentState::Absent { id: enrollment_id }, apply) {
            EnrollmentState::Recorded(e) => Some(*e),
            // A repeated confirmation: the enrollment is already stored.
            EnrollmentState::Absent { .. } => self
                .ctx
                .store
                .get(&ENROLLMENTS, &enrollment_id.get())
                .map_err(|e| SagaFailure::Storage(e.to_string()))?,
        };
        self.ctx.faults.reached(SagaStep::Completed, id.get());
        match recorded {
            Some(enrollment) => {
                metrics::counter!("sugang_enrollments_total", "outcome" => "completed").increment(1);
                tracing::debug!(reservation = id.get(), enrollment_id = enrollment_id.get(), "enrollment completed");
                Ok((enrollment, confirmed.seq))
            }
            None => Err(SagaFailure::Storage("the completion was not recorded".into())),
        }
    }

    /// Runs a promoted waitlist entry's saga from its reserved seat: charges
    /// the account stored with the entry, then confirms the seat (the entry
    /// `ENROLLED`) or releases it (`FAILED`, the seat passes on). Resumed
    /// the same way after a crash: nothing here is charged twice under one
    /// key, and a seat no longer pending means it is over.
    #[tracing::instrument(level = "debug", skip_all, fields(reservation = self.id.get(), entry_id))]
    async fn promote(&mut self, entry_id: u64) -> Result<(), SagaFailure> {
        let id = self.id;
        let storage = |e: sugang_storage::StorageError| SagaFailure::Storage(e.to_string());
        let entry = self
            .ctx
            .store
            .get(&WAITLIST_ENTRIES, &entry_id)
            .map_err(storage)?
            .ok_or_else(|| SagaFailure::Storage(format!("waitlist entry {entry_id} is missing")))?;
        let course_id = entry.course_id;
        // The seat held under this key is the promotion's marker: once it is
        // confirmed (moved to its enrollment id) or released, it is over.
        let Some(seat) = self.ctx.store.get(&SEATS, &(course_id.get(), id.get())).map_err(storage)? else {
            self.held = None;
            return Ok(());
        };
        let fee = seat.fee;
        self.held = Some(course_id);
        self.ctx.faults.reached(SagaStep::PromotionReserved, id.get());
        let request = EnrollRequest {
            course_id,
            student: entry.student.clone(),
            expected_fee: None,
            pay_method: entry.payment.pay_method.clone(),
            pay_account: entry.payment.pay_account.clone(),
            addr: entry.payment.addr.clone(),
            telephone: entry.payment.telephone.clone(),
        };
        let charge = ChargeRequest {
            enrollment_id: id.get(),
            amount: fee.won(),
            pay_method: request.pay_method.as_str().to_owned(),
            pay_account: request.pay_account.clone(),
        };
        match self.charge(charge).await {
            Ok(_) => {}
            Err(PaymentFailure::Declined { reason }) => {
                tracing::info!(reservation = id.get(), entry_id, %reason, "promoted entry's payment declined; the seat passes on");
                return self.compensate(RejectReason::PaymentDeclined, false).await;
            }
            Err(PaymentFailure::Unavailable { reason, may_have_charged, .. }) => {
                tracing::info!(reservation = id.get(), entry_id, %reason, "promoted entry's payment unavailable; the seat passes on");
                let why =
                    if may_have_charged { RejectReason::PaymentUnavailable } else { RejectReason::PaymentRefused };
                return self.compensate(why, may_have_charged).await;
            }
        }
        self.ctx.faults.reached(SagaStep::PromotionCharged, id.get());
        let completion = Completion {
            pay_method: request.pay_method.clone(),
            addr: request.addr.clone(),
            telephone: request.telephone.clone(),
        };
        match self.complete(course_id, &request, completion).await {
            Ok(confirmed) => {
                self.held = None;
                metrics::counter!("sugang_enrollments_total", "outcome" => "completed").increment(1);
                tracing::info!(reservation = id.get(), entry_id, enrollment_id = ?confirmed.seat_id.map(|e| e.get()), "promoted entry enrolled");
                Ok(())
            }
            Err(failure) => {
                tracing::error!(reservation = id.get(), entry_id, %failure, "confirming a promoted seat failed; compensating");
                self.compensate(RejectReason::PaymentUnavailable, true).await
            }
        }
    }

    /// Asks the course to confirm this saga's seat under the next enrollment
    /// id, committing the enrollment and its payment in the same batch.
    async fn complete(
        &self,
        course_id: CourseId,
        request: &EnrollRequest,
        completion: Completion,
    ) -> Result<CourseReply, SagaFailure> {
        let reservation = self.id;
        let transaction = Transaction::Enroll { charge_key: reservation, pay_method: request.pay_method.clone() };
        let reply = self
            .ctx
            .courses
            .ask(
                course_id.get(),
                |reply| CourseMsg::Complete {
                    reservation,
                    student: request.student.clone(),
                    completion: completion.clone(),
                    transaction: Some(transaction.clone()),
                    reply,
                },
                self.ctx.ask_timeout,
                Redelivery::Idempotent,
            )
            .await?;
        reply.map_err(SagaFailure::from)
    }

    async fn charge(&self, request: ChargeRequest) -> Result<ChargeReceipt, PaymentFailure> {
        if let Some(retry_after) = self.ctx.payment.held_down_for() {
            // Nothing was sent, so nothing can have been charged.
            return Err(PaymentFailure::Unavailable {
                reason: "the payment actor is held down after repeated failures".into(),
                retry_after: Some(retry_after),
                may_have_charged: false,
            });
        }
        let asked = ractor::call_t!(
            self.ctx.payment.get(),
            |reply| PaymentMsg::Approve { request, reply },
            self.ctx.payment_ask_timeout.as_millis() as u64
        );
        match asked {
            Ok(answer) => answer,
            Err(e) => Err(PaymentFailure::Unavailable {
                reason: format!("the payment actor did not answer: {e}"),
                retry_after: None,
                may_have_charged: true,
            }),
        }
    }

    /// Gives back the seat this saga holds; with `void`, also records that
    /// the gateway owes back whatever it may have charged, and asks for it.
    async fn compensate(&mut self, reason: RejectReason, void: bool) -> Result<(), SagaFailure> {
        let id = self.id;
        let Some(course_id) = self.held else {
            return Ok(());
        };
        let release = CourseCommand::ReleaseSeat { enrollment_id: id, reason };
        let transaction = void.then(|| Transaction::Void { reservation: id, since_ms: now_ms() });
        let released = self.ask_course(course_id, release, transaction).await?;
        self.held = None;
        if released.events.is_empty() {
            // No seat under the reservation any more: released before, or
            // confirmed by a completion that committed after all (a timed-out
            // confirmation). Only a void owed durably is pursued: never the
            // charge of an enrollment that completed.
            tracing::info!(reservation = id.get(), course_id = course_id.get(), "no seat left to release");
        } else {
            metrics::counter!("sugang_enrollments_total", "outcome" => "rejected").increment(1);
            tracing::info!(reservation = id.get(), course_id = course_id.get(), ?reason, void, "seat released");
        }
        if void && self.ctx.store.contains(&REFUNDS, &id.get()).map_err(|e| SagaFailure::Storage(e.to_string()))? {
            let _ = self.ctx.payment.get().send_message(PaymentMsg::Refund {
                enrollment_id: id,
                purpose: RefundPurpose::Void,
                reply: None,
            });
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(enrollment_id = self.id.get()))]
    async fn cancel(&mut self) -> Result<(Enrollment, u64), SagaFailure> {
        let id = self.id;
        let plan = decide(&self.enrollment, EnrollmentCommand::Cancel)?;
        let EnrollmentState::Recorded(current) = &self.enrollment else {
            return Err(EnrollmentRejection::NotFound(id).into());
        };
        let course_id = match plan {
            Decision::Nothing | Decision::Record(_) => {
                // An idempotent repeat: nothing is written, but a refund still
                // owed is nudged along.
                let owed =
                    self.ctx.store.contains(&REFUNDS, &id.get()).map_err(|e| SagaFailure::Storage(e.to_string()))?;
                if owed {
                    let _ = self.ctx.payment.get().send_message(PaymentMsg::Refund {
                        enrollment_id: id,
                        purpose: RefundPurpose::Cancel,
                        reply: None,
                    });
                }
                return Ok((current.as_ref().clone(), self.ctx.store.events().last_seq()));
            }
            Decision::Release { course_id } => course_id,
        };
        let payment = match self.ctx.store.get(&PAYMENTS, &id.get()).map_err(|e| SagaFailure::Storage(e.to_string()))? {
            Some(payment) => PaymentState::Recorded(payment),
            None => PaymentState::None { enrollment_id: id },
        };
        let transaction = Transaction::Cancel { enrollment: current.clone(), payment };
        let released =
            self.ask_course(course_id, CourseCommand::CancelSeat { enrollment_id: id }, Some(transaction)).await?;
        self.enrollment = released.events.iter().fold(self.enrollment.clone(), apply);
        self.ctx.faults.reached(SagaStep::CancelCommitted, id.get());
        metrics::counter!("sugang_enrollments_total", "outcome" => "canceled").increment(1);
        let refunded = ractor::call_t!(
            self.ctx.payment.get(),
            |reply| PaymentMsg::Refund { enrollment_id: id, purpose: RefundPurpose::Cancel, reply: Some(reply) },
            self.ctx.payment_ask_timeout.as_millis() as u64
        );
        let seq = match refunded {
            Ok(Ok(seq)) => seq,
            Ok(Err(failure)) => {
                tracing::warn!(enrollment_id = id.get(), %failure, "refund not confirmed yet; it is retried until it succeeds");
                released.seq
            }
            Err(e) => {
                tracing::warn!(enrollment_id = id.get(), error = %e, "refund not confirmed yet; it is retried until it succeeds");
                released.seq
            }
        };
        match &self.enrollment {
            EnrollmentState::Recorded(e) => Ok((e.as_ref().clone(), seq)),
            EnrollmentState::Absent { .. } => Err(EnrollmentRejection::NotFound(id).into()),
        }
    }
}

impl From<CourseFailure> for SagaFailure {
    fn from(failure: CourseFailure) -> Self {
        match failure {
            CourseFailure::Rejected(rejection) => SagaFailure::Course(rejection),
            CourseFailure::Transaction(TransactionRejection::Enrollment(rejection)) => {
                SagaFailure::Enrollment(rejection)
            }
            CourseFailure::Transaction(TransactionRejection::Payment(rejection)) => SagaFailure::Payment(rejection),
            CourseFailure::Storage(e) => SagaFailure::Storage(e),
            CourseFailure::Stopped(e) => SagaFailure::Stopped(e),
            CourseFailure::Busy(e) => SagaFailure::Unavailable(e),
        }
    }
}
