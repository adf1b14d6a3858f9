//! The course actor: owns one course's state, serialises its commands
//! (seat reservation above all), persists state and events together through
//! the journal, then replies.
//!
//! Must not call other actors: the enrollment saga calls it, never the
//! reverse, so asks cannot deadlock.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sugang_storage::{Batch, EncodeError, Journal, Store};
use tokio::time::Instant;

use super::{Course, CourseCommand, CourseRejection, CourseState, Seat, apply, decide};
use crate::entity::{EntityArgs, EntityKind, Registry};
use crate::event::Event;
use crate::faults::{Faults, now_ms};
use crate::model::CourseId;
use crate::tables::{COURSES, CourseRecord, PENDING, PendingSeat, SEATS};

/// Writes a saga adds to a course's batch, built from the course's events, so
/// that a saga step and the seat change it rests on commit together.
pub(crate) type Also = Box<dyn FnOnce(&[Event]) -> Result<Batch, EncodeError> + Send>;

/// What course actors share.
pub(crate) struct CourseCtx {
    pub(crate) store: Store,
    pub(crate) journal: Journal,
    pub(crate) faults: Arc<Faults>,
}

pub(crate) enum CourseMsg {
    Command { command: CourseCommand, also: Option<Also>, reply: RpcReplyPort<Result<CourseReply, CourseFailure>> },
    IdleCheck,
    Stop,
}

/// A course's state after a command, and the seq its events reached.
#[derive(Clone, Debug)]
pub(crate) struct CourseReply {
    pub(crate) course: Option<Course>,
    pub(crate) events: Vec<Event>,
    pub(crate) seq: u64,
}

#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum CourseFailure {
    #[error(transparent)]
    Rejected(#[from] CourseRejection),
    #[error("storage: {0}")]
    Storage(String),
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
    };
    for item in store.scan_prefix(&SEATS, &id.get()) {
        let ((_, enrollment), seat) = item?;
        let enrollment = crate::model::EnrollmentId::assigned(enrollment);
        course.holders.insert(seat.student.clone(), enrollment);
        course.student_count += u32::from(seat.confirmed);
        course.seats.insert(enrollment, seat);
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
        let course = load(&args.ctx.store, id)?;
        if args.restarted {
            tracing::info!(course_id = id.get(), "course actor restarted from storage");
        }
        schedule_idle_check(&myself, args.registry.config.idle);
        Ok(CourseActorState { id, course, ctx: args.ctx, registry: args.registry, last_active: Instant::now() })
    }

    async fn handle(
        &self,
        myself: ActorRef<CourseMsg>,
        message: CourseMsg,
        state: &mut CourseActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CourseMsg::Command { command, also, reply } => {
                state.last_active = Instant::now();
                if state.ctx.faults.course_must_panic(state.id.get()) {
                    panic!("injected fault: course {} panics", state.id);
                }
                let answer = state.execute(command, also).await;
                let _ = reply.send(answer);
            }
            CourseMsg::IdleCheck => {
                let idle = state.registry.config.idle;
                let quiet = state.last_active.elapsed();
                if quiet >= idle && state.registry.begin_passivation(state.id.get(), myself.get_id()) {
                    myself.send_message(CourseMsg::Stop)?;
                } else {
                    schedule_idle_check(&myself, idle.saturating_sub(quiet).max(Duration::from_millis(10)));
                }
            }
            CourseMsg::Stop => myself.stop(Some("passivated".into())),
        }
        Ok(())
    }
}

pub(crate) fn schedule_idle_check<M>(myself: &ActorRef<M>, after: Duration)
where
    M: ractor::Message + From<IdleCheck>,
{
    myself.send_after(after, || M::from(IdleCheck));
}

/// The tick that makes an idle entity actor consider passivating.
pub(crate) struct IdleCheck;

impl From<IdleCheck> for CourseMsg {
    fn from(_: IdleCheck) -> Self {
        CourseMsg::IdleCheck
    }
}

impl CourseActorState {
    #[tracing::instrument(level = "debug", skip_all, fields(course_id = self.id.get()))]
    async fn execute(&mut self, command: CourseCommand, also: Option<Also>) -> Result<CourseReply, CourseFailure> {
        let events = decide(&self.course, command, now_ms()).map_err(|rejection| {
            let rejection = match rejection {
                CourseRejection::NotFound(_) => CourseRejection::NotFound(self.id),
                other => other,
            };
            tracing::debug!(course_id = self.id.get(), %rejection, "course command rejected");
            rejection
        })?;
        if events.is_empty() {
            let seq = self.ctx.store.events().last_seq();
            return Ok(CourseReply { course: self.current(), events, seq });
        }
        let next = events.iter().fold(self.course.clone(), apply);
        let mut batch = persist(&next, &events).map_err(|e| CourseFailure::Storage(e.to_string()))?;
        if let Some(also) = also {
            batch.extend(also(&events).map_err(|e| CourseFailure::Storage(e.to_string()))?);
        }
        let receipt = self.ctx.journal.commit(batch).await.map_err(|e| {
            tracing::error!(course_id = self.id.get(), error = %e, "course commit failed");
            CourseFailure::Storage(e.to_string())
        })?;
        self.course = next;
        Ok(CourseReply { course: self.current(), events, seq: receipt.seq })
    }

    fn current(&self) -> Option<Course> {
        match &self.course {
            CourseState::Active(course) => Some(course.clone()),
            _ => None,
        }
    }
}

/// The writes that make a course's new state and its events durable.
fn persist(next: &CourseState, events: &[Event]) -> Result<Batch, EncodeError> {
    let mut batch = Batch::new();
    let (course, deleted) = match next {
        CourseState::Active(course) => (course, false),
        CourseState::Deleted(course) => (course, true),
        CourseState::Unregistered { .. } => return Ok(batch),
    };
    let id = course.id.get();
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
    for event in events {
        match event {
            Event::SeatReserved { enrollment_id, student, fee, at_ms, .. } => {
                let seat = Seat { student: student.clone(), fee: *fee, confirmed: false };
                batch.put(&SEATS, &(id, enrollment_id.get()), &seat)?;
                batch.put(&PENDING, &enrollment_id.get(), &PendingSeat { course_id: course.id, since_ms: *at_ms })?;
            }
            Event::EnrollmentCompleted { enrollment_id, .. } => {
                if let Some(seat) = course.seats.get(enrollment_id) {
                    batch.put(&SEATS, &(id, enrollment_id.get()), seat)?;
                }
                batch.delete(&PENDING, &enrollment_id.get());
            }
            Event::SeatReleased { enrollment_id, .. } | Event::EnrollmentCanceled { enrollment_id, .. } => {
                batch.delete(&SEATS, &(id, enrollment_id.get()));
                batch.delete(&PENDING, &enrollment_id.get());
            }
            _ => {}
        }
        batch.append(event.partition_key(), event)?;
    }
    Ok(batch)
}
