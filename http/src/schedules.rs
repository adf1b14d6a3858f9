//! `/courseSchedules`: per course, whether it runs and how many students it
//! has. Kept by the `mypage` subscriber (`?after=` waits for it); part of the
//! public catalog.
//!
//! Owns the schedule representation.

use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json as JsonBody, Router};
use serde::Serialize;
use sugang_actors::Schedule;
use utoipa::ToSchema;

use crate::auth::MaybeAuthUser;
use crate::error::{ApiError, Problem};
use crate::extract::{IdPath, Params};
use crate::hal::{ItemLinks, collection, map_page, self_href};
use crate::openapi::shared::{After, BadId, BadQuery, CatchUp, Paging, Unknown};
use crate::{AppState, caught_up};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/courseSchedules", get(list)).route("/courseSchedules/{id}", get(show))
}

/// The read model these endpoints wait for.
const SUBSCRIBER: &str = "mypage";

/// A course's schedule.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScheduleModel {
    id: u64,
    course_id: u64,
    course_name: String,
    teacher: String,
    open_yn: bool,
    student_count: u32,
    #[serde(rename = "_links")]
    links: ItemLinks,
}

impl From<Schedule> for ScheduleModel {
    fn from(s: Schedule) -> Self {
        let course_id = s.course_id.get();
        ScheduleModel {
            id: s.id,
            course_id,
            course_name: s.course_name.as_str().to_owned(),
            teacher: s.teacher.as_str().to_owned(),
            open_yn: s.open,
            student_count: s.student_count,
            links: ItemLinks::item("courseSchedule", format!("/courseSchedules/{}", s.id))
                .with("course", format!("/courses/{course_id}")),
        }
    }
}

collection!(ScheduleCollection, ScheduleEmbedded, course_schedules, ScheduleModel);

/// Lists course schedules.
#[utoipa::path(get, path = "/courseSchedules", tag = "read models",
    params(
        After, Paging,
    ),
    responses(
        (status = 200, description = "A page of schedules", body = ScheduleCollection),
        (status = 401, description = "A token was sent and does not verify", body = Problem, content_type = "application/problem+json"),
        BadQuery, CatchUp,
    ))]
async fn list(
    State(state): State<AppState>,
    _caller: MaybeAuthUser,
    params: Params,
    uri: Uri,
) -> Result<JsonBody<ScheduleCollection>, ApiError> {
    let page = params.page()?;
    caught_up(&state, SUBSCRIBER, &params).await?;
    let paged = state.sugang.schedules(page).map_err(ApiError::internal)?;
    Ok(JsonBody(ScheduleCollection::new(map_page(paged, ScheduleModel::from), page, self_href(&uri))))
}

/// One course's schedule.
#[utoipa::path(get, path = "/courseSchedules/{id}", tag = "read models",
    params(
        ("id" = u64, Path, minimum = 1, description = "Schedule id (= course id)"),
        After,
    ),
    responses(
        (status = 200, description = "The schedule", body = ScheduleModel),
        BadId,
        (status = 401, description = "A token was sent and does not verify", body = Problem, content_type = "application/problem+json"),
        Unknown, BadQuery, CatchUp,
    ))]
async fn show(
    State(state): State<AppState>,
    _caller: MaybeAuthUser,
    IdPath(id): IdPath,
    params: Params,
) -> Result<JsonBody<ScheduleModel>, ApiError> {
    caught_up(&state, SUBSCRIBER, &params).await?;
    let schedule = state
        .sugang
        .schedule(id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("course schedule {id} not found")))?;
    Ok(JsonBody(schedule.into()))
}
