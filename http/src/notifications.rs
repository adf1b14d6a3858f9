//! `/notifications`: one per status change, kept by the `notifier`
//! subscriber (`?after=` waits for it). A notification is addressed to a
//! person, (`recipientRole`, `recipient`), and only that person (or an
//! admin) reads it: a student and an instructor of the same name read
//! different notifications.
//!
//! Owns the notification representation.

use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json as JsonBody, Router};
use serde::Serialize;
use sugang_actors::{Notification, RecipientRole};
use utoipa::ToSchema;

use crate::auth::{AuthUser, Caller, Role};
use crate::error::ApiError;
use crate::extract::{IdPath, Params};
use crate::hal::{ItemLinks, collection, map_page, rfc3339, self_href};
use crate::openapi::shared::{After, BadId, BadQuery, CatchUp, NoValidToken, NotYours, Paging, Unknown};
use crate::{AppState, caught_up};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/notifications", get(list)).route("/notifications/{id}", get(show))
}

/// The read model these endpoints wait for.
const SUBSCRIBER: &str = "notifier";

/// Whom a notification is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RecipientRoleModel {
    Student,
    Instructor,
}

impl From<RecipientRole> for RecipientRoleModel {
    fn from(role: RecipientRole) -> Self {
        match role {
            RecipientRole::Student => RecipientRoleModel::Student,
            RecipientRole::Instructor => RecipientRoleModel::Instructor,
        }
    }
}

/// The token role of a notification's recipient.
fn role_of(role: RecipientRole) -> Role {
    match role {
        RecipientRole::Student => Role::Student,
        RecipientRole::Instructor => Role::Instructor,
    }
}

/// A notification.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NotificationModel {
    id: u64,
    /// The name of the student or instructor it is for.
    recipient: String,
    /// With `recipient`, the person it is for.
    recipient_role: RecipientRoleModel,
    #[schema(example = "EnrollmentCompleted")]
    kind: String,
    apply_id: Option<u64>,
    course_id: Option<u64>,
    message: String,
    /// RFC 3339, UTC.
    created_at: String,
    #[serde(rename = "_links")]
    links: ItemLinks,
}

impl From<Notification> for NotificationModel {
    fn from(n: Notification) -> Self {
        NotificationModel {
            id: n.id,
            links: ItemLinks::item("notification", format!("/notifications/{}", n.id)),
            recipient: n.recipient,
            recipient_role: n.recipient_role.into(),
            kind: n.kind,
            apply_id: n.apply_id,
            course_id: n.course_id,
            message: n.message,
            created_at: rfc3339(n.created_at_ms),
        }
    }
}

collection!(NotificationCollection, NotificationEmbedded, notifications, NotificationModel);

/// `?recipientRole=`: `student` or `instructor`.
fn recipient_role(params: &Params) -> Result<Option<RecipientRole>, ApiError> {
    match params.keyword("recipientRole") {
        None => Ok(None),
        Some("student") => Ok(Some(RecipientRole::Student)),
        Some("instructor") => Ok(Some(RecipientRole::Instructor)),
        Some(other) => Err(ApiError::invalid("recipientRole", format!("must be student or instructor, got {other:?}"))),
    }
}

/// Whose notifications a caller lists: an admin, whatever the filters say;
/// anyone else, their own (role, name), and naming another person or role
/// is 403.
fn addressee(
    caller: &Caller,
    name: Option<String>,
    role: Option<RecipientRole>,
) -> Result<(Option<String>, Option<RecipientRole>), ApiError> {
    let own_role = match caller.role() {
        Role::Admin => return Ok((name, role)),
        Role::Student => RecipientRole::Student,
        Role::Instructor => RecipientRole::Instructor,
    };
    if role.is_some_and(|role| role != own_role) {
        return Err(ApiError::Forbidden("you may read only your own notifications".into()));
    }
    Ok((caller.as_self(caller.role(), name)?, Some(own_role)))
}

/// Lists notifications (a person's own by default).
#[utoipa::path(get, path = "/notifications", tag = "read models",
    params(
        ("recipient" = Option<String>, Query, description = "Only this name's (a caller's own by default)"),
        ("recipientRole" = Option<RecipientRoleModel>, Query, description = "Only this role's (a caller's own by default)"),
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
    let (recipient, role) = addressee(&caller, params.text("recipient")?, recipient_role(&params)?)?;
    let page = params.page()?;
    caught_up(&state, SUBSCRIBER, &params).await?;
    let paged = state.sugang.notifications(recipient.as_deref(), role, page).map_err(ApiError::internal)?;
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
    caller.require_person(role_of(notification.recipient_role), &notification.recipient)?;
    Ok(JsonBody(notification.into()))
}
