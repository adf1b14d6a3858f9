//! The commands the HTTP front calls: course registration, modification and
//! deletion, enrollment and cancellation; and the ids they allocate (course
//! ids, saga reservation keys).

use std::time::Duration;

use sugang_storage::Batch;

use super::{CommandError, Done, Sugang, internal};
use crate::course::actor::{CourseKind, CourseMsg, CourseReply};
use crate::course::{CourseCommand, CoursePatch};
use crate::enrollment::Enrollment;
use crate::enrollment::actor::{EnrollRequest, EnrollmentMsg, SagaFailure};
use crate::entity::{Entities, Redelivery};
use crate::event::CourseDetails;
use crate::model::{CourseId, EnrollmentId, TeacherName};
use crate::tables::{COUNTERS, COURSES, Counter, CourseRecord, ENROLLMENTS};

pub(super) const RESERVATION_BLOCK: u64 = 1024;
/// The counter that holds the highest reservation key durably reserved.
pub(super) const RESERVATIONS_COUNTER: &str = "reservations";

/// Where reservation keys start: above every enrollment id there will ever
/// be, so a saga's key and an enrollment id never name the same thing in the
/// tables and registries both use (seats, owed refunds, enrollment actors).
/// Below 2^53, so it survives a JSON number.
pub(crate) const RESERVATION_BASE: u64 = 1 << 48;

/// Hands out saga reservation keys in order, never twice, even across
/// restarts: the gateway's ledger knows charges by them and outlives a
/// refused enrollment. Reserved durably in blocks, so a restart may skip
/// some: they are never shown to a client (the public enrollment id is
/// assigned densely at completion, see `course::actor`).
pub(crate) struct Reservations {
    pub(super) next: u64,
    /// The highest key durably reserved.
    pub(super) limit: u64,
}

impl Sugang {
    // ---- commands -------------------------------------------------------

    async fn ask_course(&self, id: CourseId, command: CourseCommand) -> Result<CourseReply, CommandError> {
        let reply = self
            .live()?
            .courses
            .ask(
                id.get(),
                |reply| CourseMsg::Command { command: command.clone(), transaction: None, reply },
                self.inner.config.ask_timeout,
                Redelivery::Idempotent,
            )
            .await?;
        Ok(reply?)
    }

    fn course_exists(&self, id: CourseId) -> Result<(), CommandError> {
        match self.store().get(&COURSES, &id.get()).map_err(internal)? {
            Some(record) if !record.deleted => Ok(()),
            _ => Err(CommandError::NotFound { what: "course", id: id.get() }),
        }
    }

    /// Registers a course for `teacher`.
    #[tracing::instrument(skip_all, fields(teacher = %teacher))]
    pub async fn register_course(
        &self,
        teacher: TeacherName,
        details: CourseDetails,
    ) -> Result<Done<CourseRecord>, CommandError> {
        self.register_course_with_waitlist(teacher, details, 0).await
    }

    /// Registers a course for `teacher` with a waitlist of
    /// `waitlist_capacity` places (0: none).
    #[tracing::instrument(skip_all, fields(teacher = %teacher))]
    pub async fn register_course_with_waitlist(
        &self,
        teacher: TeacherName,
        details: CourseDetails,
        waitlist_capacity: u32,
    ) -> Result<Done<CourseRecord>, CommandError> {
        // Ids are dense: the id is taken only if the course is registered, or
        // may have been (a timeout, a storage fault): a registration refused
        // before the course actor took it (load shed) leaves it for the next.
        let mut next = self.live()?.next_course_id.lock().await;
        let id = CourseId::assigned(*next);
        let asked = self.ask_course(id, CourseCommand::Register { id, teacher, details, waitlist_capacity }).await;
        if !matches!(asked, Err(CommandError::Overloaded { .. })) {
            *next += 1;
        }
        drop(next);
        let reply = asked?;
        let record =
            self.course(id).map_err(internal)?.ok_or(CommandError::Internal("registered course missing".into()))?;
        tracing::info!(course_id = id.get(), "course registered");
        Ok(Done { value: record, seq: reply.seq })
    }

    /// Changes a course's details.
    #[tracing::instrument(skip_all, fields(course_id = id.get()))]
    pub async fn modify_course(&self, id: CourseId, patch: CoursePatch) -> Result<Done<CourseRecord>, CommandError> {
        self.course_exists(id)?;
        let reply = self.ask_course(id, CourseCommand::Modify(patch)).await?;
        let record =
            self.course(id).map_err(internal)?.ok_or(CommandError::NotFound { what: "course", id: id.get() })?;
        Ok(Done { value: record, seq: reply.seq })
    }

    /// Deletes a course without enrollments.
    #[tracing::instrument(skip_all, fields(course_id = id.get()))]
    pub async fn delete_course(&self, id: CourseId) -> Result<Done<()>, CommandError> {
        self.course_exists(id)?;
        let reply = self.ask_course(id, CourseCommand::Delete).await?;
        Ok(Done { value: (), seq: reply.seq })
    }

    /// The key of a new saga (not its enrollment id: see [`Reservations`]).
    async fn next_reservation(&self) -> Result<EnrollmentId, CommandError> {
        let mut keys = self.live()?.reservations.lock().await;
        if keys.next > keys.limit {
            let limit = keys.next + RESERVATION_BLOCK - 1;
            let mut batch = Batch::new();
            batch.put(&COUNTERS, &RESERVATIONS_COUNTER.to_owned(), &Counter(limit)).map_err(internal)?;
            self.inner.journal.commit(batch).await.map_err(internal)?;
            keys.limit = limit;
        }
        let key = keys.next;
        keys.next += 1;
        Ok(EnrollmentId::assigned(key))
    }

    /// Enrolls a student and charges the fee: answers once the enrollment is
    /// completed and durable, or refused with nothing held and nothing charged.
    #[tracing::instrument(skip_all, fields(course_id = request.course_id.get(), student = %request.student))]
    pub async fn enroll(&self, request: EnrollRequest) -> Result<Done<Enrollment>, CommandError> {
        let (enrollment, seq) = self.run_enrollment(request, false).await??;
        Ok(Done { value: enrollment, seq })
    }

    /// Runs an enrollment saga (that may `join` the course's waitlist when
    /// full): the outer error is the facade's refusal before any saga ran.
    pub(crate) async fn run_enrollment(
        &self,
        request: EnrollRequest,
        join: bool,
    ) -> Result<Result<(Enrollment, u64), SagaFailure>, CommandError> {
        self.course_exists(request.course_id)?;
        // While the breaker is open the charge would be refused anyway:
        // refuse before a seat is reserved and released for nothing.
        let live = self.live()?;
        if let Some(retry_after) = live.payment.held_down_for() {
            metrics::counter!("sugang_payment_rejected_total", "reason" => "held_down").increment(1);
            return Err(CommandError::Unavailable {
                reason: "payment unavailable: the payment actor is held down after repeated failures".into(),
                retry_after,
            });
        }
        if let Some(retry_after) = live.gate.refusing_for() {
            metrics::counter!("sugang_payment_rejected_total", "reason" => "breaker_open").increment(1);
            return Err(CommandError::Unavailable {
                reason: "payment unavailable: the payment gateway is failing; the circuit breaker is open".into(),
                retry_after,
            });
        }
        let reservation = self.next_reservation().await?;
        // The reservation, the confirmation and its asks again, the release.
        let asks = 3 + crate::enrollment::actor::CONFIRM_RETRIES;
        let timeout = self.inner.config.payment.timeout + self.inner.config.ask_timeout * asks;
        let reply = live
            .classes
            .ask(
                reservation.get(),
                |reply| EnrollmentMsg::Enroll { request: request.clone(), join, reply },
                timeout,
                Redelivery::AtMostOnce,
            )
            .await?;
        Ok(reply)
    }

    pub(crate) fn course_actors(&self) -> Result<&Entities<CourseKind>, CommandError> {
        Ok(&self.live()?.courses)
    }

    pub(crate) fn ask_timeout(&self) -> Duration {
        self.inner.config.ask_timeout
    }

    /// Cancels an enrollment: the seat is released and the fee refunded
    /// (retried until the gateway confirms). Repeats change nothing.
    #[tracing::instrument(skip_all, fields(enrollment_id = id.get()))]
    pub async fn cancel(&self, id: EnrollmentId) -> Result<Done<Enrollment>, CommandError> {
        if !self.store().contains(&ENROLLMENTS, &id.get()).map_err(internal)? {
            return Err(CommandError::NotFound { what: "enrollment", id: id.get() });
        }
        let timeout = self.inner.config.payment.timeout + self.inner.config.ask_timeout * 3;
        let reply = self
            .live()?
            .classes
            .ask(id.get(), |reply| EnrollmentMsg::Cancel { reply }, timeout, Redelivery::Idempotent)
            .await?;
        let (enrollment, seq) = reply?;
        Ok(Done { value: enrollment, seq })
    }
}
