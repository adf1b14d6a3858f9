//! `/queue` and `/admin/gate`: the waiting room. Students take a ticket
//! (one live ticket per student: asking again answers the same one), read
//! it, or follow it as Server-Sent Events; operators set the gate and read
//! its live figures. And the admission check `POST /classes` makes while the
//! gate is on ([`require_admission`], 428 without a valid admission).
//!
//! Owns the ticket and gate representations and the ticket streams; the
//! queue itself is the gate actor's (`sugang_actors`, `gate`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json as JsonBody, Router};
use serde::{Deserialize, Serialize};
use sugang_actors::{
    AdmissionError, GateProgress, GateSettings, GateStatus, MAX_ADMISSION_TTL_SECS, MAX_ADMIT_PER_SECOND, StudentName,
    TicketStatus, TicketView,
};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{AuthUser, Caller, Role};
use crate::error::{ApiError, Problem};
use crate::extract::{IdPath, Int, Json};
use crate::hal::{ItemLinks, rfc3339};
use crate::openapi::integers;
use crate::openapi::shared::{BadId, NoValidToken, NotYours, Unknown};

/// The header that carries an admission token on `POST /classes`.
pub(crate) const ADMISSION_HEADER: &str = "x-sugang-admission";

/// The students' routes (served as HAL, like the other resources).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/queue/tickets", post(take))
        .route("/queue/tickets/{id}", get(show))
        .route("/queue/tickets/{id}/events", get(events))
}

/// The operator's route (plain JSON, like the rest of `/admin`).
pub(crate) fn admin_router() -> Router<AppState> {
    Router::new().route("/admin/gate", get(gate).put(set_gate))
}

/// While the gate is on: 428 unless the request carries an unexpired
/// admission of `student`'s (`X-Sugang-Admission`).
pub(crate) fn require_admission(state: &AppState, student: &StudentName, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers.get(ADMISSION_HEADER).and_then(|v| v.to_str().ok());
    state.sugang.check_admission(student, token).map_err(|e| {
        metrics::counter!("sugang_gate_refused_total", "reason" => reason(e)).increment(1);
        tracing::info!(student = %student, reason = reason(e), "enrollment refused: no valid admission (428)");
        ApiError::PreconditionRequired(e.to_string())
    })
}

fn reason(e: AdmissionError) -> &'static str {
    match e {
        AdmissionError::Missing => "missing",
        AdmissionError::Invalid => "invalid",
        AdmissionError::NotYours => "not_yours",
        AdmissionError::Expired => "expired",
    }
}

/// A ticket's status.
#[derive(Clone, Copy, Debug, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum TicketStatusModel {
    Waiting,
    Admitted,
    Expired,
}

impl From<TicketStatus> for TicketStatusModel {
    fn from(s: TicketStatus) -> Self {
        match s {
            TicketStatus::Waiting => TicketStatusModel::Waiting,
            TicketStatus::Admitted => TicketStatusModel::Admitted,
            TicketStatus::Expired => TicketStatusModel::Expired,
        }
    }
}

/// A waiting-room ticket.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TicketModel {
    #[schema(example = 12)]
    id: u64,
    #[schema(example = "Kim-Soon-hee")]
    student: String,
    status: TicketStatusModel,
    /// Counting from 1 among those waiting; `null` before the opening (the
    /// shuffle has not placed the ticket yet) and once admitted.
    #[schema(example = 230)]
    position: Option<u64>,
    /// `position` ÷ the admission rate, rounded up.
    #[schema(example = 1)]
    eta_secs: Option<u64>,
    /// The ticket's place in the queue (fixed once placed): admissions
    /// follow places in order.
    place: Option<u64>,
    /// RFC 3339, UTC.
    taken_at: String,
    /// The admission token to send as `X-Sugang-Admission`, while admitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    admission: Option<String>,
    /// When the ticket was admitted (RFC 3339), once it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    admitted_at: Option<String>,
    /// When the admission stops being valid (RFC 3339), once admitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    admission_expires_at: Option<String>,
    #[serde(rename = "_links")]
    links: ItemLinks,
}

impl From<TicketView> for TicketModel {
    fn from(v: TicketView) -> Self {
        let id = v.ticket.id;
        TicketModel {
            id,
            student: v.ticket.student.as_str().to_owned(),
            status: v.status.into(),
            position: v.position,
            eta_secs: v.eta_secs,
            place: v.ticket.place,
            taken_at: rfc3339(v.ticket.taken_at_ms),
            admission: v.admission,
            admitted_at: v.ticket.admitted.map(|a| rfc3339(a.at_ms)),
            admission_expires_at: v.ticket.admitted.map(|a| rfc3339(a.expires_at_ms)),
            links: ItemLinks::item("ticket", format!("/queue/tickets/{id}"))
                .with("events", format!("/queue/tickets/{id}/events")),
        }
    }
}

/// `POST /queue/tickets`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewTicket {
    /// Required in open mode; with tokens, a student's own name (the default).
    #[schema(required = true, value_type = String, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", example = "Kim-Soon-hee")]
    student: Option<String>,
}

/// The gate's settings and live figures.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GateModel {
    enabled: bool,
    #[schema(example = 500)]
    admit_per_second: u32,
    /// RFC 3339; `null`: open already.
    opens_at: Option<String>,
    #[schema(example = 600)]
    admission_ttl_secs: u32,
    /// Tickets not yet admitted.
    waiting: u64,
    admitted_total: u64,
    /// Admissions per second over the last two seconds.
    admitted_per_second: f64,
    /// How long the longest-waiting ticket has waited.
    oldest_wait_ms: u64,
}

impl From<GateStatus> for GateModel {
    fn from(s: GateStatus) -> Self {
        GateModel {
            enabled: s.settings.enabled,
            admit_per_second: s.settings.admit_per_second,
            opens_at: s.settings.opens_at_ms.map(rfc3339),
            admission_ttl_secs: s.settings.admission_ttl_secs,
            waiting: s.waiting,
            admitted_total: s.admitted_total,
            admitted_per_second: (s.admitted_per_second * 10.0).round() / 10.0,
            oldest_wait_ms: s.oldest_wait_ms,
        }
    }
}

/// `PUT /admin/gate`: a field left out keeps its current value, so the rate
/// can be changed alone while the gate runs.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GateChange {
    /// `false` lets everyone in.
    enabled: Option<bool>,
    /// Admissions per second, 1 to 1,000,000.
    #[serde(default, deserialize_with = "crate::nullable")]
    #[schema(schema_with = integers::count)]
    admit_per_second: Option<Option<Int>>,
    /// RFC 3339: tickets taken before it are shuffled at it. `null`: open now.
    #[serde(default, deserialize_with = "crate::nullable")]
    #[schema(value_type = Option<String>, format = DateTime, example = "2026-12-01T09:00:00Z")]
    opens_at: Option<Option<String>>,
    /// How long an admission holds, 1 to 86,400 s.
    #[serde(default, deserialize_with = "crate::nullable")]
    #[schema(schema_with = integers::ttl_secs)]
    admission_ttl_secs: Option<Option<Int>>,
}

impl GateChange {
    fn apply(self, mut settings: GateSettings) -> Result<GateSettings, ApiError> {
        if let Some(enabled) = self.enabled {
            settings.enabled = enabled;
        }
        if let Some(rate) = self.admit_per_second {
            let Int(rate) = rate.ok_or_else(|| ApiError::invalid("admitPerSecond", "must not be null"))?;
            settings.admit_per_second = u32::try_from(rate)
                .ok()
                .filter(|r| (1..=MAX_ADMIT_PER_SECOND).contains(r))
                .ok_or_else(|| ApiError::invalid("admitPerSecond", format!("must be 1 to {MAX_ADMIT_PER_SECOND}")))?;
        }
        if let Some(ttl) = self.admission_ttl_secs {
            let Int(ttl) = ttl.ok_or_else(|| ApiError::invalid("admissionTtlSecs", "must not be null"))?;
            settings.admission_ttl_secs =
                u32::try_from(ttl).ok().filter(|t| (1..=MAX_ADMISSION_TTL_SECS).contains(t)).ok_or_else(|| {
                    ApiError::invalid("admissionTtlSecs", format!("must be 1 to {MAX_ADMISSION_TTL_SECS} seconds"))
                })?;
        }
        match self.opens_at {
            None => {}
            Some(None) => settings.opens_at_ms = None,
            Some(Some(at)) => {
                let at = time::OffsetDateTime::parse(at.trim(), &time::format_description::well_known::Rfc3339)
                    .map_err(|e| ApiError::invalid("opensAt", format!("must be an RFC 3339 date-time: {e}")))?;
                // Before 1970 is long past: open.
                let ms = (at.unix_timestamp_nanos() / 1_000_000).max(0);
                settings.opens_at_ms = Some(u64::try_from(ms).unwrap_or(u64::MAX));
            }
        }
        settings
            .validate()
            .map_err(|sugang_actors::GateRejection::Invalid { field, reason }| ApiError::invalid(field, reason))?;
        Ok(settings)
    }
}

/// The ticket, if the caller may read it (its student, or an admin).
async fn find(state: &AppState, caller: &Caller, id: u64) -> Result<TicketView, ApiError> {
    let view = state.sugang.ticket(id).await?.ok_or_else(|| ApiError::NotFound(format!("ticket {id} not found")))?;
    caller.require_person(Role::Student, view.ticket.student.as_str())?;
    Ok(view)
}

/// Takes a ticket in the waiting room, or finds the student's live one.
#[utoipa::path(post, path = "/queue/tickets", tag = "waiting room", request_body = NewTicket,
    responses(
        (status = 201, description = "A new ticket", body = TicketModel,
            headers(("Location" = String, description = "The ticket"))),
        (status = 200, description = "The student's live ticket, with its place", body = TicketModel),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        NoValidToken,
        (status = 403, description = "Not a student, or not as yourself", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The waiting room is restarting (see Retry-After)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
#[tracing::instrument(skip_all)]
async fn take(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    Json(body): Json<NewTicket>,
) -> Result<Response, ApiError> {
    let student =
        caller.as_self(Role::Student, body.student)?.ok_or_else(|| ApiError::invalid("student", "is required"))?;
    let student = StudentName::parse(&student)?;
    let (view, new) = state.sugang.take_ticket(student).await?;
    let id = view.ticket.id;
    let body = JsonBody(TicketModel::from(view));
    Ok(if new {
        let location = [(axum::http::header::LOCATION, format!("/queue/tickets/{id}"))];
        (StatusCode::CREATED, location, body).into_response()
    } else {
        (StatusCode::OK, body).into_response()
    })
}

/// One ticket: its position and ETA, and once admitted its admission.
#[utoipa::path(get, path = "/queue/tickets/{id}", tag = "waiting room",
    params(("id" = u64, Path, minimum = 1, description = "Ticket id")),
    responses(
        (status = 200, description = "The ticket", body = TicketModel),
        BadId, NoValidToken, NotYours, Unknown,
        (status = 503, description = "The waiting room is restarting (see Retry-After)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
#[tracing::instrument(skip_all, fields(ticket_id = id))]
async fn show(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
) -> Result<JsonBody<TicketModel>, ApiError> {
    Ok(JsonBody(find(&state, &caller, id).await?.into()))
}

/// The most ticket streams open at once (each holds a connection); beyond
/// it, 503 and the page polls instead.
const MAX_STREAMS: usize = 4096;
/// The most streams open at once on one ticket, so on one student's (a few
/// tabs): one person cannot take every stream from the others; beyond it,
/// 429.
const MAX_STREAMS_PER_TICKET: usize = 4;
/// How often a quiet stream checks that the server is not draining.
const DRAIN_CHECK: Duration = Duration::from_secs(1);

static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);
/// Streams open per ticket (only tickets with one open are here), kept by
/// the server that serves them.
#[derive(Clone, Default)]
pub(crate) struct TicketStreams(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, usize>>>);

/// One open ticket stream, counted while it lives.
struct Counted;

impl Counted {
    fn take() -> Option<Counted> {
        OPEN_STREAMS.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_STREAMS).then_some(n + 1)).ok()?;
        Some(Counted)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One open stream of one ticket, counted while it lives.
struct PerTicket(TicketStreams, u64);

impl PerTicket {
    fn take(streams: &TicketStreams, ticket: u64) -> Option<PerTicket> {
        let mut open = streams.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ticket).or_default();
        if *n >= MAX_STREAMS_PER_TICKET {
            return None;
        }
        *n += 1;
        Some(PerTicket(streams.clone(), ticket))
    }
}

impl Drop for PerTicket {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// The ticket as Server-Sent Events (`event: ticket`, data: the ticket):
/// once at once, then whenever its position moves by at least 1 % (at least
/// one place) or its status changes; the stream ends after `EXPIRED`.
#[utoipa::path(get, path = "/queue/tickets/{id}/events", tag = "waiting room",
    params(("id" = u64, Path, minimum = 1, description = "Ticket id")),
    responses(
        (status = 200, description = "A stream of the ticket (`text/event-stream`, `event: ticket`, data as `GET /queue/tickets/{id}`)", content_type = "text/event-stream", body = String),
        BadId, NoValidToken, NotYours, Unknown,
        (status = 429, description = "Too many streams open on this ticket (4): close one, or poll", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 503, description = "Too many streams open, or the waiting room is restarting (see Retry-After)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
#[tracing::instrument(skip_all, fields(ticket_id = id))]
async fn events(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let counted = Counted::take()
        .ok_or_else(|| ApiError::unavailable("too many ticket streams are open", Duration::from_secs(5)))?;
    let progress = state.sugang.gate_progress();
    let first = find(&state, &caller, id).await?;
    let per_ticket = PerTicket::take(&state.ticket_streams, id).ok_or_else(|| {
        tracing::info!(ticket_id = id, "ticket stream refused: too many open on this ticket (429)");
        ApiError::too_many("too many streams are open on this ticket: close one, or poll", Duration::from_secs(5))
    })?;
    let follow = Follow { state, progress, last: first.clone(), first: Some(first), _counted: (counted, per_ticket) };
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        let view = follow.next().await?;
        let event = SseEvent::default().event("ticket").json_data(TicketModel::from(view)).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a ticket did not serialise");
            SseEvent::default().comment("skipped")
        });
        Some((Ok::<_, std::convert::Infallible>(event), follow))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// Where a ticket stream is.
struct Follow {
    state: AppState,
    progress: watch::Receiver<GateProgress>,
    /// The ticket as last sent.
    last: TicketView,
    /// Sent first, at once.
    first: Option<TicketView>,
    /// Counted while the stream lives: among all streams, and its ticket's.
    _counted: (Counted, PerTicket),
}

/// What the queue's movement means for a waiting ticket.
enum Step {
    /// Not enough to tell anyone.
    Still,
    /// Moved by 1 % or more: the ticket with its new position and ETA.
    Moved(TicketView),
    /// Its status may have changed (or it was not placed yet): read it.
    Read,
}

impl Follow {
    /// The next ticket to send; `None` ends the stream (expired, draining,
    /// or the gate failed).
    async fn next(&mut self) -> Option<TicketView> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            let wake = match self.last.status {
                TicketStatus::Expired => return None,
                TicketStatus::Admitted => {
                    let expires = self.last.ticket.admitted.map_or(0, |a| a.expires_at_ms);
                    let until = Duration::from_millis(expires.saturating_sub(now_ms()) + 1);
                    tokio::time::sleep(until.min(DRAIN_CHECK)).await;
                    true
                }
                TicketStatus::Waiting => match tokio::time::timeout(DRAIN_CHECK, self.progress.changed()).await {
                    Ok(Ok(())) => {
                        let progress = *self.progress.borrow_and_update();
                        match self.step(progress) {
                            Step::Still => false,
                            Step::Read => true,
                            Step::Moved(view) => {
                                self.last = view.clone();
                                return Some(view);
                            }
                        }
                    }
                    Ok(Err(_)) => return None,
                    Err(_) => false,
                },
            };
            if !self.state.is_ready() {
                return None;
            }
            if !wake {
                continue;
            }
            let now = match self.state.sugang.ticket(self.last.ticket.id).await {
                Ok(Some(now)) => now,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(ticket_id = self.last.ticket.id, error = %e, "a ticket stream could not read its ticket");
                    return None;
                }
            };
            let changed = now.status != self.last.status || now.position != self.last.position;
            if changed {
                self.last = now.clone();
                return Some(now);
            }
        }
    }

    /// Where the queue's movement leaves this ticket. A placed ticket's
    /// position follows from the published progress alone (its place minus
    /// the highest place admitted), so a waiting stream asks the gate
    /// nothing until its ticket's turn comes.
    fn step(&self, progress: GateProgress) -> Step {
        let (Some(place), Some(position)) = (self.last.ticket.place, self.last.position) else {
            // Not placed yet: a shuffle may have placed it.
            return Step::Read;
        };
        if place <= progress.admitted_through {
            return Step::Read;
        }
        let now = place - progress.admitted_through;
        if position.saturating_sub(now) < (position / 100).max(1) {
            return Step::Still;
        }
        let mut view = self.last.clone();
        view.position = Some(now);
        view.eta_secs = Some(now.div_ceil(u64::from(progress.admit_per_second.max(1))));
        Step::Moved(view)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The gate's settings and live figures.
#[utoipa::path(get, path = "/admin/gate", tag = "admin",
    responses(
        (status = 200, description = "The gate", body = GateModel),
        NoValidToken,
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The waiting room is restarting (see Retry-After)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
async fn gate(State(state): State<AppState>, AuthUser(caller): AuthUser) -> Result<JsonBody<GateModel>, ApiError> {
    caller.require_admin()?;
    Ok(JsonBody(state.sugang.gate().await?.into()))
}

/// Sets the gate: on or off, the admission rate, the opening, the admission
/// TTL. Each can change while the gate runs. Turning the gate on starts a new
/// waiting room: admissions given before (while it was off, to anyone at
/// once) are void, and their students take a new ticket.
#[utoipa::path(put, path = "/admin/gate", tag = "admin", request_body = GateChange,
    responses(
        (status = 200, description = "The gate as set", body = GateModel),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        NoValidToken,
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The waiting room is restarting (see Retry-After)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
#[tracing::instrument(skip_all)]
async fn set_gate(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    Json(change): Json<GateChange>,
) -> Result<JsonBody<GateModel>, ApiError> {
    caller.require_admin()?;
    // Checked here against the settings as they are (422 naming the field);
    // applied by the gate to its settings as they are then, so two changes
    // of different fields at once both hold. The checks are per field, so
    // a change valid on one base is valid on any.
    let current = state.sugang.gate().await?.settings;
    change.clone().apply(current)?;
    let status = state.sugang.update_gate(move |now| change.apply(now.clone()).unwrap_or(now)).await?;
    Ok(JsonBody(status.into()))
}
