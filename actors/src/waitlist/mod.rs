//! Waitlists: the records a course keeps of its waitlist entries, the read
//! model of them (`view`), the hand-off of promoted entries to their sagas,
//! and the facade's waitlist commands and queries (`POST /classes` with
//! `"waitlist": true`, `/waitlists`), plus its answers about seats.
//!
//! The course aggregate decides everything about its waitlist (see
//! `course`'s "The waitlist") and its actor is the only writer of the
//! tables here ([`WAITLIST_ENTRIES`], [`WAITLIST_STATUS`], [`WAITLIST_LIVE`],
//! [`COURSE_WAITLISTS`]); the read model's tables are the `waitlist`
//! subscriber's alone. This module never writes either outside those two.

pub(crate) mod view;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sugang_storage::{Record, StorageError, Table};
use tokio::sync::mpsc;

use crate::course::StoredPayment;
use crate::course::actor::{CourseFailure, CourseMsg, CourseReply};
use crate::course::{CourseCommand, CourseRejection};
use crate::enrollment::Enrollment;
use crate::enrollment::actor::{EnrollRequest, EnrollmentKind, EnrollmentMsg, SagaFailure};
use crate::entity::{Entities, Redelivery};
use crate::model::{CourseId, EnrollmentId, StudentName};
use crate::paging::{PageRequest, Paged};
use crate::system::{CommandError, Done, Sugang};
use crate::tables::{Indexed, SEATS, SeatState};

pub use view::WaitlistFilter;

/// The API's `status` of a waitlist entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitStatus {
    Waiting,
    Enrolled,
    Failed,
    Left,
    Canceled,
}

impl WaitStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitStatus::Waiting => "WAITING",
            WaitStatus::Enrolled => "ENROLLED",
            WaitStatus::Failed => "FAILED",
            WaitStatus::Left => "LEFT",
            WaitStatus::Canceled => "CANCELED",
        }
    }

    pub fn parse(raw: &str) -> Option<WaitStatus> {
        [WaitStatus::Waiting, WaitStatus::Enrolled, WaitStatus::Failed, WaitStatus::Left, WaitStatus::Canceled]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// A waitlist entry as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitlistEntry {
    pub id: u64,
    pub course_id: CourseId,
    pub student: StudentName,
    /// Its place among the course's live entries, from 1 (`WAITING` only).
    pub position: Option<u32>,
    pub status: WaitStatus,
    /// The enrollment it became (`ENROLLED` only).
    pub class_id: Option<EnrollmentId>,
    pub created_at_ms: u64,
}

/// What joining asked for, as the course stores it (written once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntryRecord {
    pub(crate) id: u64,
    pub(crate) course_id: CourseId,
    pub(crate) student: StudentName,
    /// The account to charge when a seat frees: the entry's consent.
    pub(crate) payment: StoredPayment,
    pub(crate) joined_at_ms: u64,
}

impl Record for EntryRecord {}

/// Where an entry stands (rewritten at each change; the join data stays).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntryState {
    pub(crate) status: WaitStatus,
    /// A seat was given to it and its saga runs: still `WAITING` to the API.
    pub(crate) promoted: bool,
    pub(crate) class_id: Option<EnrollmentId>,
    pub(crate) at_ms: u64,
}

impl Record for EntryState {}

/// A course's waitlist capacity and length (`waitlistCapacity`,
/// `waitlistLength` of the course), kept by the course actor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitlistSettings {
    pub capacity: u32,
    /// Live entries: waiting, or promoted and being enrolled.
    pub length: u32,
}

impl Record for WaitlistSettings {}

/// entry id → what joining asked for.
pub(crate) const WAITLIST_ENTRIES: Table<u64, EntryRecord> = Table::new("waitlist_entries");
/// entry id → where it stands.
pub(crate) const WAITLIST_STATUS: Table<u64, EntryState> = Table::new("waitlist_status");
/// (course id, entry id) of the live entries: what a course loads.
pub(crate) const WAITLIST_LIVE: Table<(u64, u64), Indexed> = Table::new("waitlist_live");
/// course id → its waitlist capacity and length.
pub(crate) const COURSE_WAITLISTS: Table<u64, WaitlistSettings> = Table::new("course_waitlists");

/// A course's held seats, as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeatCounts {
    /// Seats of completed enrollments (the API's studentCount).
    pub confirmed: u32,
    /// Seats held by payments in progress (pending sagas or promotions).
    pub pending: u32,
}

/// What `POST /classes` led to.
#[derive(Clone, Debug, PartialEq)]
pub enum Enrolled {
    /// 201: enrolled and paid.
    Completed(Enrollment),
    /// 202 (`new`) or 200 (joined before): on the course's waitlist.
    Waitlisted { entry: WaitlistEntry, new: bool },
}

/// Forwards each promoted entry's saga key to its enrollment actor, which
/// charges the stored account (see `enrollment::actor`'s promotions). The
/// course actor sends the keys once the batch that promoted them is
/// durable; a crash before they run leaves their pending seats, which
/// start-up recovery resumes the same way. Stops with the system (`stop`):
/// it holds the enrollment actors, and so the store.
pub(crate) fn run_promotions(
    classes: Entities<EnrollmentKind>,
    mut promoted: mpsc::UnboundedReceiver<EnrollmentId>,
    timeout: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let key = tokio::select! {
                _ = stop.cancelled() => break,
                key = promoted.recv() => match key {
                    Some(key) => key,
                    None => break,
                },
            };
            let classes = classes.clone();
            tokio::spawn(async move {
                let ran = classes
                    .ask(
                        key.get(),
                        |reply| EnrollmentMsg::Recover { course: None, reply: Some(reply) },
                        timeout,
                        Redelivery::Idempotent,
                    )
                    .await;
                match ran {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(reservation = key.get(), error = %e, "a promotion's saga failed; it retries on its own")
                    }
                    Err(e) => {
                        tracing::warn!(reservation = key.get(), error = %e, "a promotion's saga could not be started; the next start resumes it")
                    }
                }
            });
        }
    });
}

/// Reads an entry from the course's own tables, with its live position.
pub(crate) fn entry(store: &sugang_storage::Store, id: u64) -> Result<Option<WaitlistEntry>, StorageError> {
    let (Some(record), Some(state)) = (store.get(&WAITLIST_ENTRIES, &id)?, store.get(&WAITLIST_STATUS, &id)?) else {
        return Ok(None);
    };
    let position = if state.status == WaitStatus::Waiting {
        let mut ahead = 0u32;
        for key in store.scan_prefix(&WAITLIST_LIVE, &record.course_id.get()).keys() {
            let (_, other) = key?;
            if other >= id {
                break;
            }
            ahead += 1;
        }
        Some(ahead + 1)
    } else {
        None
    };
    Ok(Some(WaitlistEntry {
        id,
        course_id: record.course_id,
        student: record.student,
        position,
        status: state.status,
        class_id: state.class_id,
        created_at_ms: record.joined_at_ms,
    }))
}

impl Sugang {
    /// The seats of course `id` as stored now: for invariant checks, demos
    /// and tests (a full scan of the course's seats).
    pub fn seat_counts(&self, id: CourseId) -> Result<SeatCounts, StorageError> {
        let mut counts = SeatCounts::default();
        for item in self.store().scan_prefix(&SEATS, &id.get()) {
            let (_, seat) = item?;
            match seat.state {
                SeatState::Confirmed => counts.confirmed += 1,
                SeatState::Held => counts.pending += 1,
                SeatState::Canceled => {}
            }
        }
        Ok(counts)
    }

    /// A course's waitlist capacity and length (zero for a course without).
    pub fn course_waitlist(&self, id: CourseId) -> Result<WaitlistSettings, StorageError> {
        Ok(self.store().get(&COURSE_WAITLISTS, &id.get())?.unwrap_or_default())
    }

    /// Enrolls, or, when the course is truly full, joins its waitlist with
    /// the request's payment details (`"waitlist": true`).
    #[tracing::instrument(skip_all, fields(course_id = request.course_id.get(), student = %request.student))]
    pub async fn enroll_or_join(&self, request: EnrollRequest) -> Result<Done<Enrolled>, CommandError> {
        let store = self.store().clone();
        match self.run_enrollment(request, true).await? {
            Ok((enrollment, seq)) => Ok(Done { value: Enrolled::Completed(enrollment), seq }),
            Err(SagaFailure::Waitlisted { entry_id, new, seq }) => {
                let entry = entry(&store, entry_id)
                    .map_err(|e| CommandError::Internal(e.to_string()))?
                    .ok_or_else(|| CommandError::Internal(format!("waitlist entry {entry_id} is missing")))?;
                if new {
                    tracing::info!(entry_id, course_id = entry.course_id.get(), "joined the waitlist");
                }
                Ok(Done { value: Enrolled::Waitlisted { entry, new }, seq })
            }
            Err(failure) => Err(failure.into()),
        }
    }

    /// A waitlist entry, current (from the course's own records).
    pub fn waitlist_entry(&self, id: u64) -> Result<Option<WaitlistEntry>, StorageError> {
        entry(self.store(), id)
    }

    /// Waitlist entries matching `filter`, from the read model.
    pub fn waitlist_entries(
        &self,
        filter: &WaitlistFilter,
        page: PageRequest,
    ) -> Result<Paged<WaitlistEntry>, StorageError> {
        view::query(self.store(), filter, page)
    }

    /// Leaves the waitlist: the entry becomes `LEFT`; a repeat, or an entry
    /// that already ended, changes nothing.
    #[tracing::instrument(skip_all, fields(entry_id = id))]
    pub async fn leave_waitlist(&self, id: u64) -> Result<Done<WaitlistEntry>, CommandError> {
        let internal = |e: StorageError| CommandError::Internal(e.to_string());
        let record = self
            .store()
            .get(&WAITLIST_ENTRIES, &id)
            .map_err(internal)?
            .ok_or(CommandError::NotFound { what: "waitlist entry", id })?;
        let reply: CourseReply = self
            .course_actors()?
            .ask(
                record.course_id.get(),
                |reply| CourseMsg::Command {
                    command: CourseCommand::LeaveWaitlist { entry_id: id },
                    transaction: None,
                    reply,
                },
                self.ask_timeout(),
                Redelivery::Idempotent,
            )
            .await?
            .map_err(|failure| match failure {
                CourseFailure::Rejected(CourseRejection::NotFound(_)) => {
                    CommandError::Conflict(format!("waitlist entry {id} has ended"))
                }
                other => other.into(),
            })?;
        let entry =
            entry(self.store(), id).map_err(internal)?.ok_or(CommandError::NotFound { what: "waitlist entry", id })?;
        Ok(Done { value: entry, seq: reply.seq })
    }
}
