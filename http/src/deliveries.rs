//! `/deliveries`: textbook shipments, kept by the `delivery` subscriber
//! (read only; `?after=` waits for it). A shipment's id is its enrollment's.
//!
//! Owns the delivery representation; students read only their own.

use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json as JsonBody, Router};
use serde::Serialize;
use sugang_actors::{Delivery, DeliveryStatus};
use utoipa::ToSchema;

use crate::auth::{AuthUser, Role};
use crate::error::ApiError;
use crate::extract::{IdPath, Params};
use crate::hal::{ItemLinks, collection, map_page, self_href};
use crate::openapi::shared::{After, BadId, BadQuery, CatchUp, NoValidToken, NotYours, Paging, Unknown};
use crate::{AppState, caught_up};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/deliveries", get(list)).route("/deliveries/{id}", get(show))
}

/// The read model these endpoints wait for.
const SUBSCRIBER: &str = "delivery";

/// A shipment's status.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum DeliveryStatusModel {
    Started,
    Canceled,
}

impl From<DeliveryStatus> for DeliveryStatusModel {
    fn from(s: DeliveryStatus) -> Self {
        match s {
            DeliveryStatus::Started => DeliveryStatusModel::Started,
            DeliveryStatus::Canceled => DeliveryStatusModel::Canceled,
        }
    }
}

/// A textbook shipment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeliveryModel {
    id: u64,
    /// The enrollment it ships for.
    apply_id: u64,
    student: String,
    addr: Option<String>,
    text_book: Option<String>,
    delivery_status: DeliveryStatusModel,
    #[serde(rename = "_links")]
    links: ItemLinks,
}

impl From<Delivery> for DeliveryModel {
    fn from(d: Delivery) -> Self {
        let apply_id = d.apply_id.get();
        DeliveryModel {
            id: d.id,
            apply_id,
            student: d.student.as_str().to_owned(),
            addr: d.addr,
            text_book: d.text_book.map(|t| t.as_str().to_owned()),
            delivery_status: d.status.into(),
            links: ItemLinks::item("delivery", format!("/deliveries/{}", d.id))
                .with("class", format!("/classes/{apply_id}")),
        }
    }
}

collection!(DeliveryCollection, DeliveryEmbedded, deliveries, DeliveryModel);

/// Lists shipments (students: their own).
#[utoipa::path(get, path = "/deliveries", tag = "deliveries",
    params(
        ("applyId" = Option<u64>, Query, minimum = 1, maximum = 9_223_372_036_854_775_807_u64, description = "Only this enrollment's"),
        ("student" = Option<String>, Query, description = "Only this student's (a student's own by default)"),
        After, Paging,
    ),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryCollection),
        NoValidToken, NotYours, BadQuery, CatchUp,
    ))]
async fn list(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    params: Params,
    uri: Uri,
) -> Result<JsonBody<DeliveryCollection>, ApiError> {
    let apply_id = params.id("applyId")?;
    let student = caller.as_self(Role::Student, params.text("student")?)?;
    let page = params.page()?;
    caught_up(&state, SUBSCRIBER, &params).await?;
    let paged = state.sugang.deliveries(apply_id, student.as_deref(), page).map_err(ApiError::internal)?;
    Ok(JsonBody(DeliveryCollection::new(map_page(paged, DeliveryModel::from), page, self_href(&uri))))
}

/// One shipment.
#[utoipa::path(get, path = "/deliveries/{id}", tag = "deliveries",
    params(
        ("id" = u64, Path, minimum = 1, description = "Delivery id (= enrollment id)"),
        After,
    ),
    responses(
        (status = 200, description = "The delivery", body = DeliveryModel),
        BadId, NoValidToken, NotYours, Unknown, BadQuery, CatchUp,
    ))]
#[tracing::instrument(skip_all, fields(enrollment_id = id))]
async fn show(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
    params: Params,
) -> Result<JsonBody<DeliveryModel>, ApiError> {
    caught_up(&state, SUBSCRIBER, &params).await?;
    let delivery = state
        .sugang
        .delivery(id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("delivery {id} not found")))?;
    caller.require_person(Role::Student, delivery.student.as_str())?;
    Ok(JsonBody(delivery.into()))
}
