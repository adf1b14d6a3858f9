//! The waiting room's part of the facade: what the HTTP front asks of the
//! gate, and the admission check `POST /classes` makes while it is on.
//!
//! Owns the mapping of the gate's failures onto [`CommandError`]; the
//! admission check reads the shared key and flag, never the actor, so it
//! costs an HMAC and no message.

use std::time::Duration;

use ractor::{RpcReplyPort, call_t};
use tokio::sync::watch;

use super::actor::{GateFailure, GateMsg, Progress};
use super::{AdmissionError, GateSettings, GateStatus, TicketView};
use crate::faults::now_ms;
use crate::model::StudentName;
use crate::system::{CommandError, Sugang};

impl From<GateFailure> for CommandError {
    fn from(f: GateFailure) -> Self {
        match f {
            GateFailure::Rejected(r) => CommandError::Conflict(r.to_string()),
            GateFailure::Storage(e) => {
                tracing::error!(error = %e, "the gate failed to store");
                CommandError::Internal(e)
            }
        }
    }
}

impl Sugang {
    async fn ask_gate<T: Send + 'static>(
        &self,
        message: impl FnOnce(RpcReplyPort<Result<T, GateFailure>>) -> GateMsg,
    ) -> Result<T, CommandError> {
        let room = self.waiting_room().ok_or_else(|| CommandError::Unavailable {
            reason: "this node is a replica: the waiting room runs on the cluster's primary".into(),
            retry_after: Duration::from_secs(1),
        })?;
        let actor = room.actor().map_err(|retry_after| CommandError::Unavailable {
            reason: "the waiting room is restarting".into(),
            retry_after,
        })?;
        let timeout = self.ask_timeout().as_millis() as u64;
        let answer = call_t!(actor, message, timeout).map_err(|e| CommandError::Unavailable {
            reason: format!("the waiting room did not answer: {e}"),
            retry_after: Duration::from_secs(1),
        })?;
        Ok(answer?)
    }

    /// The gate's settings and live figures.
    pub async fn gate(&self) -> Result<GateStatus, CommandError> {
        self.ask_gate(|reply| GateMsg::Status { reply }).await
    }

    /// Changes the gate's settings (validated by [`GateSettings::validate`];
    /// the edge checks first, so a refusal here is a 409).
    #[tracing::instrument(skip_all, fields(enabled = settings.enabled, rate = settings.admit_per_second))]
    pub async fn set_gate(&self, settings: GateSettings) -> Result<GateStatus, CommandError> {
        self.ask_gate(|reply| GateMsg::Set { settings, reply }).await
    }

    /// Changes the gate's settings by `change`, applied by the gate to its
    /// settings as they are when it gets there (no lost update between two
    /// changes at once); the result is validated as by [`Sugang::set_gate`].
    #[tracing::instrument(skip_all)]
    pub async fn update_gate(
        &self,
        change: impl FnOnce(GateSettings) -> GateSettings + Send + 'static,
    ) -> Result<GateStatus, CommandError> {
        self.ask_gate(|reply| GateMsg::Update { change: Box::new(change), reply }).await
    }

    /// The student's ticket: a new one (`true`) or their live one again.
    #[tracing::instrument(skip_all, fields(student = %student))]
    pub async fn take_ticket(&self, student: StudentName) -> Result<(TicketView, bool), CommandError> {
        self.ask_gate(|reply| GateMsg::Take { student, reply }).await
    }

    /// A ticket, as its student sees it now.
    pub async fn ticket(&self, id: u64) -> Result<Option<TicketView>, CommandError> {
        self.ask_gate(|reply| GateMsg::Get { id, reply }).await
    }

    /// Whether the gate is on (admissions required).
    pub fn gate_enabled(&self) -> bool {
        // A replica's commands, admissions included, are checked by the primary.
        self.waiting_room().is_some_and(|room| room.shared().enabled.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// The queue's movement, to wait on instead of polling.
    /// On a cluster replica the queue does not move here: the receiver's
    /// sender is gone, so a wait on it ends at once.
    pub fn gate_progress(&self) -> watch::Receiver<Progress> {
        match self.waiting_room() {
            Some(room) => room.shared().progress.subscribe(),
            None => watch::channel(Progress::default()).1,
        }
    }

    /// While the gate is on, `token` must be an unexpired admission of this
    /// student's; while it is off, anything passes.
    pub fn check_admission(&self, student: &StudentName, token: Option<&str>) -> Result<(), AdmissionError> {
        if !self.gate_enabled() {
            return Ok(());
        }
        let token = token.ok_or(AdmissionError::Missing)?;
        let Some(room) = self.waiting_room() else { return Ok(()) };
        room.shared().admission_key().verify(token, student, now_ms()).map(drop)
    }
}
