//! `/payments`: the payments the enrollment saga records (read only). A
//! payment's id is its enrollment's (`applyId`). Written by the commands
//! themselves, so `?after=` never needs to wait.
//!
//! Owns the payment representation; students read only their own.

use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json as JsonBody, Router};
use serde::Serialize;
use sugang_actors::{EnrollmentId, PayStatus, Payment};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::error::ApiError;
use crate::extract::{IdPath, Params};
use crate::hal::{ItemLinks, collection, map_page, self_href};
use crate::openapi::shared::{After, BadId, BadQuery, NoValidToken, NotYours, Paging, Unknown};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/payments", get(list)).route("/payments/{id}", get(show))
}

/// A payment's status.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum PayStatusModel {
    Approved,
    /// Canceled; the refund is owed and being retried.
    CancelPending,
    Canceled,
}

impl From<PayStatus> for PayStatusModel {
    fn from(s: PayStatus) -> Self {
        match s {
            PayStatus::Approved => PayStatusModel::Approved,
            PayStatus::CancelPending => PayStatusModel::CancelPending,
            PayStatus::Canceled => PayStatusModel::Canceled,
        }
    }
}

/// A payment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PaymentModel {
    id: u64,
    /// The enrollment paid for.
    apply_id: u64,
    /// In won.
    amount: u64,
    #[schema(example = "card")]
    pay_method: String,
    pay_status: PayStatusModel,
    #[serde(rename = "_links")]
    links: ItemLinks,
}

impl From<Payment> for PaymentModel {
    fn from(p: Payment) -> Self {
        let id = p.enrollment_id.get();
        PaymentModel {
            id,
            apply_id: id,
            amount: p.amount.won(),
            pay_method: p.pay_method.as_str().to_owned(),
            pay_status: p.status.into(),
            links: ItemLinks::item("payment", format!("/payments/{id}")).with("class", format!("/classes/{id}")),
        }
    }
}

collection!(PaymentCollection, PaymentEmbedded, payments, PaymentModel);

/// Lists payments (admins: all; students: name `applyId`, their own).
#[utoipa::path(get, path = "/payments", tag = "payments",
    params(
        ("applyId" = Option<u64>, Query, minimum = 1, maximum = 9_223_372_036_854_775_807_u64, description = "Only this enrollment's"),
        After, Paging,
    ),
    responses(
        (status = 200, description = "A page of payments", body = PaymentCollection),
        NoValidToken, NotYours, BadQuery,
    ))]
async fn list(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    params: Params,
    uri: Uri,
) -> Result<JsonBody<PaymentCollection>, ApiError> {
    let apply_id = params.id("applyId")?;
    params.after()?;
    let page = params.page()?;
    if apply_id.is_none() {
        caller.require_admin()?;
    }
    let paged = state.sugang.payments(apply_id, page).map_err(ApiError::internal)?;
    for payment in &paged.items {
        caller.require_person(Role::Student, payment.student.as_str())?;
    }
    Ok(JsonBody(PaymentCollection::new(map_page(paged, PaymentModel::from), page, self_href(&uri))))
}

/// One payment.
#[utoipa::path(get, path = "/payments/{id}", tag = "payments",
    params(("id" = u64, Path, minimum = 1, description = "Payment id (= enrollment id)")),
    responses(
        (status = 200, description = "The payment", body = PaymentModel),
        BadId, NoValidToken, NotYours, Unknown,
    ))]
#[tracing::instrument(skip_all, fields(enrollment_id = id))]
async fn show(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
) -> Result<JsonBody<PaymentModel>, ApiError> {
    let payment = state
        .sugang
        .payment(EnrollmentId::parse(id)?)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("payment {id} not found")))?;
    caller.require_person(Role::Student, payment.student.as_str())?;
    Ok(JsonBody(payment.into()))
}
