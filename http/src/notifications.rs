//! `/notifications`: one per status change, kept by the `notifier`
//! subscriber (`?after=` waits for it). Each person reads only their own.
//!
//! Owns the notification representation.

use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json as JsonBody, Router};
use serde::Serialize;
use sugang_actors::Notification;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{IdPath, Params};
use crate::hal::{SelfLinks, collection, map_page, rfc3339, self_href};
use crate::openapi::shared::{After, BadId, BadQuery, CatchUp, NoValidToken, NotYours, Paging, Unknown};
use crate::{AppState, caught_up};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/notifications", get(list)).route("/notifications/{id}", get(show))
}

/// The read model these endpoints wait for.
const SUBSCRIBER: &str = "notifier";

/// A notification.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NotificationModel {
    id: u64,
    /// The student or instructor it is for.
    recipient: String,
    #[schema(example = "EnrollmentCompleted")]
    kind: String,
    apply_id: Option<u64>,
    course_id: Option<u64>,
    message: String,
    /// RFC 3339, UTC.
    created_at: String,
    #[serde(rename = "_links")]
    links: SelfLinks,
}

impl From<Notification> for NotificationModel {
    fn from(n: Notification) -> Self {
        NotificationModel {
            id: n.id,
            links: SelfLinks::to(format!("/notifications/{}", n.id)),
            recipient: n.recipient,
            kind: n.kind,
            apply_id: n.apply_id,
            course_id: n.course_id,
            message: n.message,
            created_at: rfc3339(n.created_at_ms),
        }
    }
}

collection!(NotificationCollection, NotificationEmbedded, notifications, NotificationModel);

/// Lists notifications (a person's own by default).
#[utoipa::path(get, path = "/notifications", tag = "read models",
    params(
        ("recipient" = Option<String>, Query, description = "Only this person's"),
        After, Paging,
    ),
    responses(
        (status = 200, description = "A page of notifications", body = NotificationCollection),
        NoValidToken, NotYours, BadQuery, CatchUp,
    ))]
async fn list(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    params: Params,
    uri: Uri,
) -> Result<JsonBody<NotificationCollection>, ApiError> {
    let recipient = caller.myself(params.text("recipient")?)?;
    let page = params.page()?;
    caught_up(&state, SUBSCRIBER, &params).await?;
    let paged = state.sugang.notifications(recipient.as_deref(), page).map_err(ApiError::internal)?;
    Ok(JsonBody(NotificationCollection::new(map_page(paged, NotificationModel::from), page, self_href(&uri))))
}

/// One notification.
#[utoipa::path(get, path = "/notifications/{id}", tag = "read models",
    params(
        ("id" = u64, Path, minimum = 1, description = "Notification id"),
        After,
    ),
    responses(
        (status = 200, description = "The notification", body = NotificationModel),
        BadId, NoValidToken, NotYours, Unknown, BadQuery, CatchUp,
    ))]
async fn show(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
    params: Params,
) -> Result<JsonBody<NotificationModel>, ApiError> {
    caught_up(&state, SUBSCRIBER, &params).await?;
    let notification = state
        .sugang
        .notification(id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("notification {id} not found")))?;
    caller.require_owner(&notification.recipient)?;
    Ok(JsonBody(notification.into()))
}
