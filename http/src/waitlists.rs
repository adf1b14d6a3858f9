//! `/waitlists`: waitlist entries. Joined by `POST /classes` with
//! `"waitlist": true` (see `classes`); listed from the `waitlist`
//! subscriber's read model (`?after=` waits for it); one entry is read from
//! its course's own records, so it is current the moment its command
//! answered. Students read and leave only their own entries; a course's
//! instructor reads its entries; admins do all.
//!
//! Owns the waitlist entry representation.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::{Json as JsonBody, Router};
use serde::Serialize;
use sugang_actors::{WaitStatus, WaitlistEntry, WaitlistFilter};
use utoipa::ToSchema;

use crate::auth::{AuthUser, Caller, Role};
use crate::error::{ApiError, Problem};
use crate::extract::{IdPath, Params};
use crate::hal::{ItemLinks, collection, command_response, map_page, rfc3339, self_href};
use crate::openapi::shared::{After, BadId, BadQuery, CatchUp, NoValidToken, NotYours, Paging, Unknown};
use crate::{AppState, caught_up};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/waitlists", get(list)).route("/waitlists/{id}", get(show).delete(leave))
}

/// The read model the list waits for.
const SUBSCRIBER: &str = "waitlist";

/// A waitlist entry's status.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum WaitStatusModel {
    Waiting,
    Enrolled,
    Failed,
    Left,
    Canceled,
}

impl From<WaitStatus> for WaitStatusModel {
    fn from(s: WaitStatus) -> Self {
        match s {
            WaitStatus::Waiting => WaitStatusModel::Waiting,
            WaitStatus::Enrolled => WaitStatusModel::Enrolled,
            WaitStatus::Failed => WaitStatusModel::Failed,
            WaitStatus::Left => WaitStatusModel::Left,
            WaitStatus::Canceled => WaitStatusModel::Canceled,
        }
    }
}

/// A place on a course's waitlist.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WaitlistModel {
    #[schema(example = 3)]
    pub(crate) id: u64,
    #[schema(example = 1)]
    course_id: u64,
    #[schema(example = "Kim-Soon-hee")]
    student: String,
    /// From 1 among the course's `WAITING` entries; `null` otherwise.
    #[schema(example = 2)]
    position: Option<u32>,
    status: WaitStatusModel,
    /// The enrollment it became (`ENROLLED`).
    class_id: Option<u64>,
    /// RFC 3339, UTC.
    #[schema(example = "2026-12-01T09:00:01Z")]
    created_at: String,
    #[serde(rename = "_links")]
    links: ItemLinks,
}

impl From<WaitlistEntry> for WaitlistModel {
    fn from(e: WaitlistEntry) -> Self {
        let (id, course_id) = (e.id, e.course_id.get());
        let mut links =
            ItemLinks::item("waitlist", format!("/waitlists/{id}")).with("course", format!("/courses/{course_id}"));
        if let Some(class) = e.class_id {
            links = links.with("class", format!("/classes/{}", class.get()));
        }
        WaitlistModel {
            id,
            course_id,
            student: e.student.as_str().to_owned(),
            position: e.position,
            status: e.status.into(),
            class_id: e.class_id.map(|c| c.get()),
            created_at: rfc3339(e.created_at_ms),
            links,
        }
    }
}

collection!(WaitlistCollection, WaitlistEmbedded, waitlists, WaitlistModel);

/// The entry, or 404.
fn find(state: &AppState, id: u64) -> Result<WaitlistEntry, ApiError> {
    state
        .sugang
        .waitlist_entry(id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("waitlist entry {id} not found")))
}

/// 403 unless the caller is the entry's student, its course's teacher, or
/// an admin.
fn may_read(state: &AppState, caller: &Caller, e: &WaitlistEntry) -> Result<(), ApiError> {
    if caller.require_person(Role::Student, e.student.as_str()).is_ok() {
        return Ok(());
    }
    let teacher = state.sugang.course(e.course_id).map_err(ApiError::internal)?.map(|c| c.teacher);
    match teacher {
        Some(teacher) => caller.require_person(Role::Instructor, teacher.as_str()),
        None => caller.require_role(Role::Admin),
    }
}

/// Lists waitlist entries (students: their own; instructors: a course of
/// theirs).
#[utoipa::path(get, path = "/waitlists", tag = "waitlists",
    params(
        ("courseId" = Option<u64>, Query, minimum = 1, maximum = 9_223_372_036_854_775_807_u64, description = "Only this course's (its instructor may list them)"),
        ("student" = Option<String>, Query, description = "Only this student's (a student's own by default)"),
        ("status" = Option<WaitStatusModel>, Query, description = "`WAITING`, `ENROLLED`, `FAILED`, `LEFT` or `CANCELED`"),
        After, Paging,
    ),
    responses(
        (status = 200, description = "A page of waitlist entries", body = WaitlistCollection),
        NoValidToken, NotYours,
        (status = 404, description = "Unknown course (for an instructor)", body = Problem, content_type = "application/problem+json"),
        BadQuery, CatchUp,
    ))]
async fn list(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    params: Params,
    uri: Uri,
) -> Result<JsonBody<WaitlistCollection>, ApiError> {
    let course_id = params.id("courseId")?;
    let status = match params.keyword("status") {
        None => None,
        Some(raw) => Some(WaitStatus::parse(raw).ok_or_else(|| {
            ApiError::invalid("status", format!("must be WAITING, ENROLLED, FAILED, LEFT or CANCELED, got {raw:?}"))
        })?),
    };
    let requested = params.text("student")?;
    let page = params.page()?;
    let student = crate::classes::listing_student(&state, &caller, course_id, requested, "waitlist")?;
    caught_up(&state, SUBSCRIBER, &params).await?;
    let filter = WaitlistFilter { course_id, student, status };
    let paged = state.sugang.waitlist_entries(&filter, page).map_err(ApiError::internal)?;
    Ok(JsonBody(WaitlistCollection::new(map_page(paged, WaitlistModel::from), page, self_href(&uri))))
}

/// One waitlist entry, current.
#[utoipa::path(get, path = "/waitlists/{id}", tag = "waitlists",
    params(
        ("id" = u64, Path, minimum = 1, description = "Waitlist entry id"),
        After,
    ),
    responses(
        (status = 200, description = "The entry", body = WaitlistModel),
        BadId, NoValidToken, NotYours, Unknown, BadQuery, CatchUp,
    ))]
#[tracing::instrument(skip_all, fields(entry_id = id))]
async fn show(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
    params: Params,
) -> Result<JsonBody<WaitlistModel>, ApiError> {
    caught_up(&state, SUBSCRIBER, &params).await?;
    let entry = find(&state, id)?;
    may_read(&state, &caller, &entry)?;
    Ok(JsonBody(entry.into()))
}

/// Leaves the waitlist: the entry becomes `LEFT`. A repeat, or an entry
/// that already ended, is 204 again and changes nothing.
#[utoipa::path(delete, path = "/waitlists/{id}", tag = "waitlists",
    params(("id" = u64, Path, minimum = 1, description = "Waitlist entry id")),
    responses(
        (status = 204, description = "Left (or already ended)", headers(
            ("X-Sugang-Seq" = u64, description = "The event seq its events reached"))),
        BadId, NoValidToken, NotYours, Unknown,
        (status = 409, description = "A seat was given to the entry and it is being enrolled", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded (see Retry-After)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
#[tracing::instrument(skip_all, fields(entry_id = id))]
async fn leave(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let entry = find(&state, id)?;
    caller.require_person(Role::Student, entry.student.as_str())?;
    let done = state.sugang.leave_waitlist(entry.id).await?;
    tracing::debug!(entry_id = id, course_id = entry.course_id.get(), "left the waitlist");
    Ok(command_response::<()>(StatusCode::NO_CONTENT, done.seq, None, None))
}
