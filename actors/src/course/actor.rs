//! The course actor: owns one course's state, serialises its commands
//! (seat reservation above all), persists state and events together through
//! the journal, then replies.
//!
//! It pipelines: a command's batch is handed to the journal in order and the
//! actor goes on to the next command while the batch is flushed; the reply
//! leaves only once that batch is durable. So a popular course is bounded by
//! how fast it decides, not by one fsync per command. Its batches share one
//! journal stream: if one fails, every later one fails too, and the actor
//! restarts from what is on disk. It passivates only with nothing in flight.
//!
//! Must not call other actors: the enrollment saga calls it, never the
//! reverse, so asks cannot deadlock.
//!
//! # Truthful "full"
//!
//! A seat request that finds every free seat held by a payment in progress
//! ([`CourseRejection::AwaitingPayments`]) is parked here, first come first
//! served, bounded in number ([`Parking::limit`], beyond which it is shed)
//! and in time ([`Parking::timeout`], the payment timeout). After every
//! command the front of the queue is decided again: a released seat goes to
//! the request that waited longest, and once every held seat is confirmed
//! the waiting requests are told the course is full.
//!
//! # Dense enrollment ids
//!
//! A saga reserves and charges under its reservation key; the public
//! enrollment id is assigned only when a course confirms the seat
//! ([`CourseMsg::Complete`]), from [`EnrollmentIds`]: the course actor takes
//! its lock, decides with the next id, hands the batch to the journal and
//! advances the counter only if the batch carries the completion. The journal
//! commits batches in submission order and stops at its first failure
//! (fail-stop), so the stored ids are always 1..=max with no hole, and a
//! restart continues at max + 1. A refused enrollment never reaches this
//! step and takes no id.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::atomic::{AtomicUsize, Ordering};

use sugang_storage::{Batch, EncodeError, Journal, Pending, Store};

use crate::transaction::{Transaction, TransactionRejection};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Completion, Course, CourseCommand, CourseRejection, CourseState, Seat, StoredPayment, WaitEntry, Waitlist, apply,
    decide,
};
use crate::entity::{AskError, EntityArgs, EntityKind, IdleCheck, Registry, schedule_idle_check};
use crate::event::Event;
use crate::faults::{Faults, now_ms};
use crate::model::{CourseId, EnrollmentId, StudentName};
use crate::system::RESERVATION_BASE;
use crate::tables::{COURSES, CourseRecord, Indexed, SEATS, SeatState, StoredSeat};
use crate::waitlist::{
    COURSE_WAITLISTS, EntryRecord, EntryState, WAITLIST_ENTRIES, WAITLIST_LIVE, WAITLIST_STATUS, WaitStatus,
    WaitlistSettings,
};

/// What course actors share.
pub(crate) struct CourseCtx {
    pub(crate) store: Store,
    pub(crate) journal: Journal,
    pub(crate) faults: Arc<Faults>,
    /// The next public enrollment id, shared by every course.
    pub(crate) enrollment_ids: Arc<EnrollmentIds>,
    /// How seat requests wait for payments in progress.
    pub(crate) parking: Parking,
    /// The next waitlist entry id, shared by every course (dense, like
    /// enrollment ids).
    pub(crate) waitlist_ids: Arc<EnrollmentIds>,
    /// Where the saga keys of promoted waitlist entries go once the batch
    /// that promoted them is durable (see `waitlist::run_promotions`).
    pub(crate) promotions: tokio::sync::mpsc::UnboundedSender<EnrollmentId>,
}

/// The bounds on seat requests waiting for payments in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Parking {
    /// At most this many wait per course; more are shed (503).
    pub(crate) limit: usize,
    /// How long one waits at most: a payment in progress ends by then.
    pub(crate) timeout: Duration,
}

/// A seat request waiting for a payment in progress to end.
struct Parked {
    command: CourseCommand,
    reply: RpcReplyPort<Result<CourseReply, CourseFailure>>,
    deadline: Instant,
}

/// The next public enrollment id (or waitlist entry id). Held (a lock) from
/// the moment a completion (a join) takes the id until its batch is queued in
/// the journal, so ids reach the journal, and so the disk, in order.
pub(crate) struct EnrollmentIds(tokio::sync::Mutex<u64>);

impl EnrollmentIds {
    /// Continues after `highest`, the highest enrollment id stored.
    pub(crate) fn after(highest: u64) -> Self {
        EnrollmentIds(tokio::sync::Mutex::new(highest + 1))
    }
}

pub(crate) enum CourseMsg {
    Command {
        command: CourseCommand,
        /// The parts of a saga step other aggregates own, committed with
        /// the course's in one batch (see `transaction`).
        transaction: Option<Transaction>,
        reply: RpcReplyPort<Result<CourseReply, CourseFailure>>,
    },
    /// Saga step 3: confirm the seat held under `reservation` as a completed
    /// enrollment under the next enrollment id (a repeat answers with the id
    /// it already got).
    Complete {
        reservation: EnrollmentId,
        student: StudentName,
        completion: Completion,
        transaction: Option<Transaction>,
        reply: RpcReplyPort<Result<CourseReply, CourseFailure>>,
    },
    IdleCheck,
    /// A parked seat request may have waited its time out.
    ParkingExpired,
    Stop,
    /// A batch of this actor failed: its in-memory state is ahead of the
    /// disk, so it fails and is restarted from storage.
    Poisoned(String),
}

/// What a command did, and the seq its events reached.
#[derive(Clone, Debug)]
pub(crate) struct CourseReply {
    /// The seat the command's enrollment holds after it, if any: what the
    /// saga needs of the course (the fee), not the whole course, whose seat
    /// map grows with every enrollment.
    pub(crate) seat: Option<Seat>,
    /// The id `seat` is held under: the reservation key while pending, the
    /// enrollment id once confirmed.
    pub(crate) seat_id: Option<EnrollmentId>,
    /// A seat request that joined the waitlist (or had joined before): its
    /// entry.
    pub(crate) waitlisted: Option<u64>,
    pub(crate) events: Vec<Event>,
    pub(crate) seq: u64,
}

#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum CourseFailure {
    #[error(transparent)]
    Rejected(#[from] CourseRejection),
    /// Another part of the saga step's transaction refused.
    #[error(transparent)]
    Transaction(#[from] TransactionRejection),
    #[error("storage: {0}")]
    Storage(String),
    /// The store takes no more writes (a storage fault before, or this
    /// cluster node's log writes were fenced): nothing of this request was
    /// stored.
    #[error("storage stopped: {0}")]
    Stopped(String),
    /// The seat request could not wait for a payment in progress: too many
    /// wait already, or the wait timed out.
    #[error(transparent)]
    Busy(AskError),
}

pub(crate) struct CourseKind;

impl EntityKind for CourseKind {
    type Actor = CourseActor;
    type Msg = CourseMsg;
    type Ctx = CourseCtx;
    const KIND: &'static str = "course";
    fn behaviour() -> CourseActor {
        CourseActor
    }
}

pub(crate) struct CourseActor;

pub(crate) struct CourseActorState {
    id: CourseId,
    course: CourseState,
    ctx: Arc<CourseCtx>,
    registry: Arc<Registry>,
    last_active: Instant,
    /// Batches submitted and not yet durable.
    in_flight: Arc<AtomicUsize>,
    /// Woken when `in_flight` drops to zero.
    drained: Arc<Notify>,
    /// Seat requests waiting for a payment in progress, oldest first.
    parked: VecDeque<Parked>,
}

/// What a command led to, before its batch is durable.
enum Decided {
    /// Refused: nothing to write, answer at once.
    Refused(CourseFailure),
    /// An idempotent repeat with nothing in flight: answer at once.
    Unchanged(CourseReply),
    /// The batch is with the journal; answer once it is durable.
    Submitted {
        pending: Pending,
        seat: Option<Seat>,
        seat_id: Option<EnrollmentId>,
        waitlisted: Option<u64>,
        events: Vec<Event>,
    },
    /// The events are applied in memory but their batch could not be handed
    /// to the journal: refuse, and fail the actor before it decides again.
    AheadOfDisk(String),
}

/// The seats held by unfinished sagas, in every course. A hold is a seat
/// under a saga's reservation key (from `RESERVATION_BASE`, promotions'
/// keys above), which sorts after every enrollment id among its course's
/// seats: each course costs one seek. The hold is the saga's durable marker,
/// written and removed with the seat itself: what start-up recovery resumes
/// or compensates.
pub(crate) fn holds(store: &Store) -> Result<Vec<(CourseId, EnrollmentId)>, sugang_storage::StorageError> {
    let mut holds = Vec::new();
    for course in store.scan(&COURSES).keys() {
        let course = course?;
        for key in store.scan_prefix_from(&SEATS, &course, &(course, RESERVATION_BASE)).keys() {
            let (_, key) = key?;
            holds.push((CourseId::assigned(course), EnrollmentId::assigned(key)));
        }
    }
    Ok(holds)
}

/// The course whose seat the saga of `key` holds, if any: a walk of every
/// course's holds, for the rare saga actor restarted after a failure.
pub(crate) fn hold_of(store: &Store, key: EnrollmentId) -> Result<Option<CourseId>, sugang_storage::StorageError> {
    Ok(holds(store)?.into_iter().find_map(|(course, held)| (held == key).then_some(course)))
}

/// Loads a course and its seats from the store.
pub(crate) fn load(store: &Store, id: CourseId) -> Result<CourseState, sugang_storage::StorageError> {
    let Some(record) = store.get(&COURSES, &id.get())? else {
        return Ok(CourseState::Unregistered { id });
    };
    let mut course = Course {
        id,
        teacher: record.teacher,
        details: record.details,
        seats: Default::default(),
        student_count: 0,
        holders: Default::default(),
        registered_at_ms: record.registered_at_ms,
        waitlist: Waitlist::default(),
    };
    course.waitlist.capacity = store.get(&COURSE_WAITLISTS, &id.get())?.unwrap_or_default().capacity;
    for key in store.scan_prefix(&WAITLIST_LIVE, &id.get()).keys() {
        let (_, entry_id) = key?;
        let (Some(entry), Some(state)) =
            (store.get(&WAITLIST_ENTRIES, &entry_id)?, store.get(&WAITLIST_STATUS, &entry_id)?)
        else {
            continue;
        };
        let promoted = state.promoted.then(|| super::promotion_key(entry_id));
        course.waitlist.insert(entry_id, WaitEntry { student: entry.student, promoted });
    }
    for item in store.scan_prefix(&SEATS, &id.get()) {
        let ((_, enrollment), seat) = item?;
        let confirmed = match seat.state {
            SeatState::Held => false,
            SeatState::Confirmed => true,
            SeatState::Canceled => continue,
        };
        let enrollment = crate::model::EnrollmentId::assigned(enrollment);
        course.holders.insert(seat.student.clone(), enrollment);
        course.student_count += u32::from(confirmed);
        course.seats.insert(enrollment, Seat { student: seat.student, fee: seat.fee, confirmed });
    }
    Ok(if record.deleted { CourseState::Deleted(course) } else { CourseState::Active(course) })
}

impl Actor for CourseActor {
    type Msg = CourseMsg;
    type State = CourseActorState;
    type Arguments = EntityArgs<CourseCtx>;

    async fn pre_start(
        &self,
        myself: ActorRef<CourseMsg>,
        args: EntityArgs<CourseCtx>,
    ) -> Result<CourseActorState, ActorProcessingErr> {
        let id = CourseId::assigned(args.id);
        if args.restarted {
            // The failed incarnation may have batches still in the journal:
            // this barrier returns once all of them are durable or failed, so
            // the state loaded next is the whole truth.
            args.ctx.journal.commit(Batch::new()).await?;
            tracing::info!(course_id = id.get(), "course actor restarted from storage");
        }
        let course = load(&args.ctx.store, id)?;
        schedule_idle_check(&myself, args.registry.config.idle);
        Ok(CourseActorState {
            id,
            course,
            ctx: args.ctx,
            registry: args.registry,
            last_active: Instant::now(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            drained: Arc::new(Notify::new()),
            parked: VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<CourseMsg>,
        message: CourseMsg,
        state: &mut CourseActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CourseMsg::Command { command, transaction, reply } => {
                state.last_active = Instant::now();
                if state.ctx.faults.course_must_panic(state.id.get()) {
                    panic!("injected fault: course {} panics", state.id);
                }
                let retry = matches!(command, CourseCommand::ReserveSeat { .. }).then(|| command.clone());
                let decided = match retry {
                    Some(_) => state.reserve(command).await,
                    None => state.execute(command, transaction).await,
                };
                match (decided, retry) {
                    (
                        Decided::Refused(CourseFailure::Rejected(CourseRejection::AwaitingPayments { .. })),
                        Some(command),
                    ) => state.park(&myself, command, reply),
                    (decided, _) => state.answer(&myself, decided, reply)?,
                }
                state.serve_parked(&myself).await?;
            }
            CourseMsg::Complete { reservation, student, completion, transaction, reply } => {
                state.last_active = Instant::now();
                if state.ctx.faults.course_must_panic(state.id.get()) {
                    panic!("injected fault: course {} panics", state.id);
                }
                let decided = state.complete(reservation, &student, completion, transaction).await;
                state.answer(&myself, decided, reply)?;
                state.serve_parked(&myself).await?;
            }
            CourseMsg::ParkingExpired => state.serve_parked(&myself).await?,
            CourseMsg::Poisoned(reason) => {
                return Err(format!("a commit of course {} failed: {reason}", state.id).into());
            }
            CourseMsg::IdleCheck => {
                let busy = state.in_flight.load(Ordering::SeqCst) > 0 || !state.parked.is_empty();
                if state.registry.idle_check(state.id.get(), &myself, state.last_active, busy) {
                    myself.send_message(CourseMsg::Stop)?;
                }
            }
            CourseMsg::Stop => {
                // Commands queued before the stop may have batches in flight:
                // a next activation must not load state older than they are.
                loop {
                    let drained = state.drained.notified();
                    tokio::pin!(drained);
                    drained.as_mut().enable();
                    if state.in_flight.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    drained.await;
                }
                myself.stop(Some("passivated".into()));
            }
        }
        Ok(())
    }
}

impl From<IdleCheck> for CourseMsg {
    fn from(_: IdleCheck) -> Self {
        CourseMsg::IdleCheck
    }
}

impl CourseActorState {
    /// Parks a seat request behind the payments in progress, or sheds it
    /// when too many wait already.
    fn park(
        &mut self,
        myself: &ActorRef<CourseMsg>,
        command: CourseCommand,
        reply: RpcReplyPort<Result<CourseReply, CourseFailure>>,
    ) {
        let parking = self.ctx.parking;
        if self.parked.len() >= parking.limit {
            metrics::counter!("sugang_seat_waits_total", "outcome" => "shed").increment(1);
            let reservation = command.enrollment_id().map(|id| id.get());
            tracing::info!(
                course_id = self.id.get(),
                reservation,
                waiting = self.parked.len(),
                "seat request shed: too many wait behind payments in progress (503)"
            );
            let _ = reply.send(Err(CourseFailure::Busy(AskError::Overloaded { kind: "course", id: self.id.get() })));
            return;
        }
        self.parked.push_back(Parked { command, reply, deadline: Instant::now() + parking.timeout });
        myself.send_after(parking.timeout, || CourseMsg::ParkingExpired);
    }

    /// Decides the parked seat requests again, oldest first, until one still
    /// has to wait: a seat released since goes to the request that waited
    /// longest; once every seat is confirmed they are told the course is
    /// full. Requests past their deadline are answered 503.
    async fn serve_parked(&mut self, myself: &ActorRef<CourseMsg>) -> Result<(), ActorProcessingErr> {
        while let Some(front) = self.parked.front() {
            if front.deadline <= Instant::now() {
                if let Some(parked) = self.parked.pop_front() {
                    metrics::counter!("sugang_seat_waits_total", "outcome" => "timeout").increment(1);
                    if let CourseCommand::ReserveSeat { enrollment_id, student, .. } = &parked.command {
                        tracing::info!(
                            course_id = self.id.get(),
                            reservation = enrollment_id.get(),
                            student = %student,
                            "a parked seat request timed out behind payments in progress (503)"
                        );
                    }
                    let reason = "every seat is still held by a payment in progress".to_owned();
                    let busy = AskError::Unavailable { kind: "course", id: self.id.get(), reason };
                    let _ = parked.reply.send(Err(CourseFailure::Busy(busy)));
                }
                continue;
            }
            let decided = self.reserve(front.command.clone()).await;
            if matches!(decided, Decided::Refused(CourseFailure::Rejected(CourseRejection::AwaitingPayments { .. }))) {
                break;
            }
            let outcome = if matches!(decided, Decided::Refused(_)) { "refused" } else { "seated" };
            metrics::counter!("sugang_seat_waits_total", "outcome" => outcome).increment(1);
            if let Some(parked) = self.parked.pop_front() {
                self.answer(myself, decided, parked.reply)?;
            }
        }
        Ok(())
    }

    /// Replies to a decided command: at once, or once its batch is durable.
    /// A batch that could not be handed to the journal fails the actor.
    fn answer(
        &self,
        myself: &ActorRef<CourseMsg>,
        decided: Decided,
        reply: RpcReplyPort<Result<CourseReply, CourseFailure>>,
    ) -> Result<(), ActorProcessingErr> {
        match decided {
            Decided::Refused(failure) => {
                let _ = reply.send(Err(failure));
            }
            Decided::Unchanged(answer) => {
                let _ = reply.send(Ok(answer));
            }
            Decided::Submitted { pending, seat, seat_id, waitlisted, events } => self.answer_when_durable(
                myself,
                pending,
                CourseReply { seat, seat_id, waitlisted, events, seq: 0 },
                reply,
            ),
            Decided::AheadOfDisk(reason) => {
                tracing::error!(course_id = self.id.get(), error = %reason, "course commit failed; restarting from storage");
                let _ = reply.send(Err(CourseFailure::Storage(reason.clone())));
                return Err(format!("a commit of course {} failed: {reason}", self.id).into());
            }
        }
        Ok(())
    }

    /// Decides a seat request; one that may join the waitlist takes the
    /// next entry id under its lock (dense ids, as for enrollments).
    async fn reserve(&mut self, mut command: CourseCommand) -> Decided {
        if !matches!(&command, CourseCommand::ReserveSeat { join: Some(_), .. }) {
            return self.execute(command, None).await;
        }
        let ids = self.ctx.waitlist_ids.clone();
        let mut next = ids.0.lock().await;
        if let CourseCommand::ReserveSeat { join: Some(joining), .. } = &mut command {
            joining.entry_id = *next;
        }
        let decided = self.execute(command, None).await;
        let joined = |events: &[Event]| events.iter().any(|e| matches!(e, Event::WaitlistJoined { .. }));
        if matches!(&decided, Decided::Submitted { events, .. } if joined(events)) {
            *next += 1;
        }
        decided
    }

    /// Confirms a saga's seat under the next enrollment id (see the module
    /// doc), or answers a repeat with the id the seat already got.
    async fn complete(
        &mut self,
        reservation: EnrollmentId,
        student: &StudentName,
        completion: Completion,
        transaction: Option<Transaction>,
    ) -> Decided {
        let done = match &self.course {
            CourseState::Active(course) | CourseState::Deleted(course) => course.completed_as(reservation, student),
            CourseState::Unregistered { .. } => None,
        };
        if let Some(enrollment_id) = done {
            let repeat = CourseCommand::ConfirmSeat { reservation: enrollment_id, enrollment_id, completion };
            return self.execute(repeat, None).await;
        }
        let ids = self.ctx.enrollment_ids.clone();
        let mut next = ids.0.lock().await;
        let enrollment_id = EnrollmentId::assigned(*next);
        let confirm = CourseCommand::ConfirmSeat { reservation, enrollment_id, completion };
        let decided = self.execute(confirm, transaction).await;
        let completes = |events: &[Event]| events.iter().any(|e| matches!(e, Event::EnrollmentCompleted { .. }));
        if matches!(&decided, Decided::Submitted { events, .. } if completes(events)) {
            *next += 1;
        }
        decided
    }

    /// Decides a command, applies it in memory and hands its batch to the
    /// journal. A command that changes nothing still waits for this actor's
    /// batches in flight (an empty batch in its stream), so its answer never
    /// runs ahead of the disk.
    ///
    /// The events are applied to the state in place (moved through `apply`,
    /// never cloned: a course's seat map grows with every enrollment, so a
    /// clone per command would make each command O(seats)). If their batch
    /// then cannot be handed to the journal, the state is ahead of the disk
    /// and the actor fails at once, to restart from storage.
    #[tracing::instrument(level = "debug", skip_all, fields(course_id = self.id.get()))]
    async fn execute(&mut self, command: CourseCommand, transaction: Option<Transaction>) -> Decided {
        let enrollment = command.enrollment_id();
        let (joining, joiner) = match &command {
            CourseCommand::ReserveSeat { join: Some(joining), student, .. } => {
                (Some(joining.payment.clone()), Some(student.clone()))
            }
            _ => (None, None),
        };
        // A confirmation moves the seat from the saga's reservation key to
        // the enrollment id: the reservation's records go.
        let moved = match &command {
            CourseCommand::ConfirmSeat { reservation, enrollment_id, .. } if reservation != enrollment_id => {
                Some(*reservation)
            }
            _ => None,
        };
        let at_ms = now_ms();
        let events = match decide(&self.course, command, at_ms) {
            Ok(events) => events,
            Err(rejection) => {
                let rejection = match rejection {
                    CourseRejection::NotFound(_) => CourseRejection::NotFound(self.id),
                    other => other,
                };
                tracing::debug!(course_id = self.id.get(), %rejection, "course command rejected");
                return Decided::Refused(rejection.into());
            }
        };
        if events.is_empty() && self.in_flight.load(Ordering::SeqCst) == 0 {
            let seq = self.ctx.store.events().last_seq();
            let waitlisted = self.waitlisted(joiner.as_ref(), enrollment);
            return Decided::Unchanged(CourseReply {
                seat: self.seat(enrollment),
                seat_id: enrollment,
                waitlisted,
                events,
                seq,
            });
        }
        // The other parts of a transaction decide before anything is
        // applied: one that refuses refuses the command as a whole.
        let joined = match transaction.filter(|_| !events.is_empty()).map(|t| t.decide(&events, at_ms)) {
            None => None,
            Some(Ok(Ok(joined))) => Some(joined),
            Some(Ok(Err(rejection))) => {
                tracing::warn!(course_id = self.id.get(), enrollment_id = ?enrollment.map(|e| e.get()), %rejection, "a saga step's transaction refused");
                return Decided::Refused(rejection.into());
            }
            Some(Err(e)) => return Decided::Refused(CourseFailure::Storage(e.to_string())),
        };
        let mut batch = Batch::new();
        if !events.is_empty() {
            let before = std::mem::replace(&mut self.course, CourseState::Unregistered { id: self.id });
            self.course = events.iter().fold(before, apply);
            let written = persist(&self.course, &events, moved, joining).map(|mut batch| {
                if let Some(joined) = joined {
                    batch.extend(joined.batch);
                }
                batch
            });
            batch = match written {
                Ok(batch) => batch,
                Err(e) => return Decided::AheadOfDisk(e.to_string()),
            };
        }
        // The course's history: in a cluster, its own subject of the log.
        batch.in_history(self.id.get());
        let waitlisted = self.waitlisted(joiner.as_ref(), enrollment);
        match self.ctx.journal.submit(batch).await {
            Ok(pending) => {
                Decided::Submitted { pending, seat: self.seat(enrollment), seat_id: enrollment, waitlisted, events }
            }
            Err(e) => Decided::AheadOfDisk(e.to_string()),
        }
    }

    /// The waitlist entry a seat request that may join holds after it: none
    /// if it got a seat.
    fn waitlisted(&self, joiner: Option<&StudentName>, enrollment: Option<EnrollmentId>) -> Option<u64> {
        let joiner = joiner?;
        if self.seat(enrollment).is_some() {
            return None;
        }
        match &self.course {
            CourseState::Active(course) => course.waitlist.entry_of(joiner),
            _ => None,
        }
    }

    /// Replies once `pending` is durable, from a task of its own so the
    /// actor goes on; a failed batch poisons the actor. Entries promoted
    /// by the batch are handed to their sagas once it is durable.
    fn answer_when_durable(
        &self,
        myself: &ActorRef<CourseMsg>,
        pending: Pending,
        mut answer: CourseReply,
        reply: RpcReplyPort<Result<CourseReply, CourseFailure>>,
    ) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let (in_flight, drained, myself, id) = (self.in_flight.clone(), self.drained.clone(), myself.clone(), self.id);
        let promotions = self.ctx.promotions.clone();
        tokio::spawn(async move {
            let answer = match pending.durable().await {
                Ok(receipt) => {
                    for event in &answer.events {
                        match event {
                            Event::WaitlistPromoted { reservation, entry_id, .. } => {
                                metrics::counter!("sugang_waitlist_promotions_total", "outcome" => "promoted")
                                    .increment(1);
                                tracing::info!(
                                    course_id = id.get(),
                                    entry_id,
                                    reservation = reservation.get(),
                                    "seat given to the first in line"
                                );
                                let _ = promotions.send(*reservation);
                            }
                            Event::WaitlistEnrolled { .. } => {
                                metrics::counter!("sugang_waitlist_promotions_total", "outcome" => "enrolled")
                                    .increment(1);
                            }
                            Event::WaitlistFailed { .. } => {
                                metrics::counter!("sugang_waitlist_promotions_total", "outcome" => "failed")
                                    .increment(1);
                            }
                            _ => {}
                        }
                    }
                    answer.seq = receipt.seq;
                    Ok(answer)
                }
                Err(e) => {
                    tracing::error!(course_id = id.get(), error = %e, "course commit failed; restarting from storage");
                    let _ = myself.send_message(CourseMsg::Poisoned(e.to_string()));
                    Err(match e {
                        sugang_storage::CommitError::Stopped(reason) => CourseFailure::Stopped(reason.to_string()),
                        e => CourseFailure::Storage(e.to_string()),
                    })
                }
            };
            let _ = reply.send(answer);
            if in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                drained.notify_waiters();
            }
        });
    }

    /// The seat `enrollment` holds in the course, if any.
    fn seat(&self, enrollment: Option<EnrollmentId>) -> Option<Seat> {
        match (&self.course, enrollment) {
            (CourseState::Active(course) | CourseState::Deleted(course), Some(enrollment)) => {
                course.seats.get(&enrollment).cloned()
            }
            _ => None,
        }
    }
}

/// The writes that make a course's new state and its events durable;
/// `moved` is the reservation key a confirmed seat was held under.
fn persist(
    next: &CourseState,
    events: &[Event],
    moved: Option<EnrollmentId>,
    joining: Option<StoredPayment>,
) -> Result<Batch, EncodeError> {
    let mut batch = Batch::new();
    let (course, deleted) = match next {
        CourseState::Active(course) => (course, false),
        CourseState::Deleted(course) => (course, true),
        CourseState::Unregistered { .. } => return Ok(batch),
    };
    let id = course.id.get();
    // Holding or releasing a pending seat leaves the record (details,
    // studentCount, deleted) as it was: rewriting it would cost the journal a
    // write and a pre-image read for nothing.
    let seat_only = |event: &Event| {
        matches!(
            event,
            Event::SeatReserved { .. }
                | Event::SeatReleased { .. }
                | Event::EnrollmentRejected { .. }
                | Event::WaitlistCapacitySet { .. }
                | Event::WaitlistJoined { .. }
                | Event::WaitlistPromoted { .. }
                | Event::WaitlistEnrolled { .. }
                | Event::WaitlistFailed { .. }
                | Event::WaitlistLeft { .. }
                | Event::WaitlistCanceled { .. }
        )
    };
    if !events.iter().all(seat_only) {
        batch.put(
            &COURSES,
            &id,
            &CourseRecord {
                id: course.id,
                teacher: course.teacher.clone(),
                details: course.details.clone(),
                student_count: course.student_count,
                registered_at_ms: course.registered_at_ms,
                deleted,
            },
        )?;
    }
    for event in events {
        match event {
            Event::SeatReserved { enrollment_id, student, fee, .. } => {
                // The hold is also the saga's durable marker (see `holds`).
                let seat = StoredSeat { student: student.clone(), fee: *fee, state: SeatState::Held };
                batch.put(&SEATS, &(id, enrollment_id.get()), &seat)?;
            }
            Event::EnrollmentCompleted { enrollment_id, .. } => {
                if let Some(seat) = course.seats.get(enrollment_id) {
                    batch.put(&SEATS, &(id, enrollment_id.get()), &StoredSeat::new(seat))?;
                }
                let reservation = moved.unwrap_or(*enrollment_id);
                if reservation != *enrollment_id {
                    batch.delete(&SEATS, &(id, reservation.get()));
                }
            }
            Event::SeatReleased { enrollment_id, .. } => {
                batch.delete(&SEATS, &(id, enrollment_id.get()));
            }
            Event::EnrollmentCanceled { enrollment_id, student, fee, .. } => {
                // Kept, canceled: the course's seats index its enrollments.
                let seat = StoredSeat { student: student.clone(), fee: *fee, state: SeatState::Canceled };
                batch.put(&SEATS, &(id, enrollment_id.get()), &seat)?;
            }
            Event::WaitlistJoined { entry_id, student, at_ms, .. } => {
                if let Some(payment) = &joining {
                    let record = EntryRecord {
                        id: *entry_id,
                        course_id: course.id,
                        student: student.clone(),
                        payment: payment.clone(),
                        joined_at_ms: *at_ms,
                    };
                    batch.put(&WAITLIST_ENTRIES, entry_id, &record)?;
                }
                let state = EntryState { status: WaitStatus::Waiting, promoted: false, class_id: None, at_ms: *at_ms };
                batch.put(&WAITLIST_STATUS, entry_id, &state)?;
                batch.put(&WAITLIST_LIVE, &(id, *entry_id), &Indexed)?;
            }
            Event::WaitlistPromoted { entry_id, at_ms, .. } => {
                let state = EntryState { status: WaitStatus::Waiting, promoted: true, class_id: None, at_ms: *at_ms };
                batch.put(&WAITLIST_STATUS, entry_id, &state)?;
            }
            Event::WaitlistEnrolled { entry_id, enrollment_id, at_ms, .. } => {
                let state = EntryState {
                    status: WaitStatus::Enrolled,
                    promoted: true,
                    class_id: Some(*enrollment_id),
                    at_ms: *at_ms,
                };
                batch.put(&WAITLIST_STATUS, entry_id, &state)?;
                batch.delete(&WAITLIST_LIVE, &(id, *entry_id));
            }
            Event::WaitlistFailed { entry_id, at_ms, .. }
            | Event::WaitlistLeft { entry_id, at_ms, .. }
            | Event::WaitlistCanceled { entry_id, at_ms, .. } => {
                let status = match event {
                    Event::WaitlistFailed { .. } => WaitStatus::Failed,
                    Event::WaitlistLeft { .. } => WaitStatus::Left,
                    _ => WaitStatus::Canceled,
                };
                let promoted = matches!(event, Event::WaitlistFailed { .. });
                batch.put(
                    &WAITLIST_STATUS,
                    entry_id,
                    &EntryState { status, promoted, class_id: None, at_ms: *at_ms },
                )?;
                batch.delete(&WAITLIST_LIVE, &(id, *entry_id));
            }
            _ => {}
        }
        batch.append(event.partition_key(), event)?;
    }
    // The course lists' count and teacher index (see `queries`).
    super::queries::index_events(&mut batch, events)?;
    let waitlist_changed = events.iter().any(|event| {
        matches!(
            event,
            Event::WaitlistCapacitySet { .. }
                | Event::WaitlistJoined { .. }
                | Event::WaitlistEnrolled { .. }
                | Event::WaitlistFailed { .. }
                | Event::WaitlistLeft { .. }
                | Event::WaitlistCanceled { .. }
        )
    });
    if waitlist_changed {
        let settings = WaitlistSettings { capacity: course.waitlist.capacity, length: course.waitlist.len() as u32 };
        batch.put(&COURSE_WAITLISTS, &id, &settings)?;
    }
    Ok(batch)
}
