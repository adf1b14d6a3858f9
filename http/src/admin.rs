//! `/admin`: the supervision tree, the breaker, and fault injection (the
//! payment gateway's behaviour, a course actor's panic, a subscriber held
//! down). Admins only.
//!
//! Owns the admin representations; the knobs themselves belong to the
//! actors crate.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json as JsonBody, Router};
use serde::{Deserialize, Serialize};
use sugang_actors::{CourseId, GatewayFaults, PaymentSnapshot, SubscriberStatus, TreeNode};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::extract::{IdPath, Int, Json};
use crate::openapi::integers;
use crate::openapi::shared::{BadId, NoValidToken};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/actors", get(actors))
        .route("/admin/breaker", get(breaker))
        .route("/admin/faults/payment", get(payment_faults).put(set_payment_faults))
        .route("/admin/faults/courses/{id}/panic", post(panic_course))
        .route("/admin/faults/subscribers/{name}", put(set_subscriber))
        .route("/admin/backup", post(backup))
}

/// `{"to": "/var/backups/sugang-2026-12-01"}`: where a backup goes, on the
/// server's disk: an absolute path to a new or empty directory.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct BackupRequest {
    #[schema(required = true, value_type = String, example = "/var/backups/sugang")]
    to: Option<String>,
}

/// What a backup copied.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BackupModel {
    to: String,
    records: u64,
    events: u64,
    last_seq: u64,
}

/// Writes a consistent copy of the running store (one snapshot) into a new
/// directory on the server, as a store `sugang serve --data-dir` opens.
/// `sugang store backup --url` calls it.
#[utoipa::path(post, path = "/admin/backup", tag = "admin", request_body = BackupRequest,
    responses(
        (status = 200, description = "Copied", body = BackupModel),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        NoValidToken,
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The target holds files, is inside the data directory, has too little free space, or another backup runs", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store stopped after a storage fault", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 422, description = "An invalid field", body = Problem, content_type = "application/problem+json"),
    ))]
#[tracing::instrument(skip_all)]
async fn backup(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    Json(body): Json<BackupRequest>,
) -> Result<JsonBody<BackupModel>, ApiError> {
    caller.require_admin()?;
    let to = body.to.ok_or_else(|| ApiError::invalid("to", "is required"))?;
    let path = std::path::PathBuf::from(&to);
    if !path.is_absolute() {
        return Err(ApiError::invalid("to", "must be an absolute path on the server"));
    }
    use sugang_storage::BackupError;
    match state.sugang.backup(&path).await {
        Ok(found) => {
            tracing::info!(to, records = found.records, events = found.events, "backup written");
            Ok(JsonBody(BackupModel { to, records: found.records, events: found.events, last_seq: found.last_seq }))
        }
        Err(e @ (BackupError::NotEmpty(_) | BackupError::Overlaps(_))) => {
            Err(ApiError::ConflictOn { field: "to", detail: e.to_string() })
        }
        Err(e @ BackupError::Busy) => Err(ApiError::Conflict(e.to_string())),
        Err(e @ BackupError::NoSpace { .. }) => {
            tracing::warn!(to, error = %e, "backup refused: not enough space");
            Err(ApiError::ConflictOn { field: "to", detail: e.to_string() })
        }
        Err(e @ BackupError::Failed(_)) => Err(ApiError::unavailable(e.to_string(), std::time::Duration::from_secs(5))),
        Err(e) => {
            tracing::error!(to, error = %e, "backup failed");
            Err(ApiError::internal(e))
        }
    }
}

/// The supervision tree and the subscribers.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ActorsModel {
    #[schema(example = "root")]
    root: &'static str,
    /// Each supervisor: alive, restarts, and for entity supervisors their
    /// live children, passivations and held-down entities.
    #[schema(value_type = Vec<Object>)]
    children: Vec<TreeNode>,
    /// Each subscriber: down, workers, offset, lag, restarts.
    #[schema(value_type = Vec<Object>)]
    subscribers: Vec<SubscriberStatus>,
}

/// The payment breaker and bulkhead.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BreakerModel {
    /// `closed`, `open` or `halfOpen`.
    #[schema(example = "closed")]
    state: String,
    /// Consecutive failures counted.
    failures: u32,
    /// Unix milliseconds when the breaker last opened, while open or half-open.
    opened_at: Option<u64>,
    /// How long until an open breaker lets a probe through.
    retry_after_ms: Option<u64>,
    reset_timeout_ms: u64,
    transitions: u64,
    in_flight: u64,
    bulkhead: u64,
    refunds_owed: u64,
    timeout_ms: u64,
}

impl From<PaymentSnapshot> for BreakerModel {
    fn from(s: PaymentSnapshot) -> Self {
        BreakerModel {
            state: s.state.to_owned(),
            failures: s.failures,
            opened_at: s.opened_at,
            retry_after_ms: s.retry_after_ms,
            reset_timeout_ms: s.reset_timeout_ms,
            transitions: s.transitions,
            in_flight: s.in_flight as u64,
            bulkhead: s.bulkhead as u64,
            refunds_owed: s.refunds_owed as u64,
            timeout_ms: s.timeout_ms,
        }
    }
}

/// The simulated payment gateway's behaviour.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PaymentFaultsModel {
    /// How long every answer takes.
    latency_ms: u64,
    /// The share of calls that fail as unavailable.
    failure_rate: f64,
    /// Every call fails as unavailable.
    down: bool,
}

impl From<GatewayFaults> for PaymentFaultsModel {
    fn from(f: GatewayFaults) -> Self {
        PaymentFaultsModel { latency_ms: f.latency_ms, failure_rate: f.failure_rate, down: f.down }
    }
}

/// New gateway behaviour; a missing field is its default (no fault).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PaymentFaultsChange {
    /// How long every answer takes, in milliseconds.
    #[schema(schema_with = integers::latency_ms_or_null)]
    latency_ms: Option<Int>,
    /// The share of calls, 0.0 to 1.0, that fail as unavailable.
    #[schema(minimum = 0.0, maximum = 1.0)]
    failure_rate: Option<f64>,
    /// Every call fails as unavailable.
    down: Option<bool>,
}

impl TryFrom<PaymentFaultsChange> for GatewayFaults {
    type Error = ApiError;

    fn try_from(change: PaymentFaultsChange) -> Result<Self, ApiError> {
        let latency_ms = match change.latency_ms {
            None => 0,
            Some(Int(ms)) => u64::try_from(ms).map_err(|_| ApiError::invalid("latencyMs", "must be >= 0"))?,
        };
        let faults = GatewayFaults {
            latency_ms,
            failure_rate: change.failure_rate.unwrap_or(0.0),
            down: change.down.unwrap_or(false),
        };
        faults.validate().map_err(|e| ApiError::invalid(e.field, e.reason))?;
        Ok(faults)
    }
}

/// `{"down": true}` stops a subscriber, `false` starts it again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SubscriberDown {
    #[schema(required = true, value_type = bool)]
    down: Option<bool>,
}

/// A subscriber's state after a change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubscriberModel {
    #[schema(example = "delivery")]
    name: String,
    down: bool,
}

/// The supervision tree.
#[utoipa::path(get, path = "/admin/actors", tag = "admin",
    responses(
        (status = 200, description = "The tree", body = ActorsModel),
        NoValidToken,
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
async fn actors(State(state): State<AppState>, AuthUser(caller): AuthUser) -> Result<JsonBody<ActorsModel>, ApiError> {
    caller.require_admin()?;
    let tree = state.sugang.tree();
    let subscribers = state.sugang.subscribers().await;
    Ok(JsonBody(ActorsModel { root: tree.root, children: tree.children, subscribers }))
}

/// The breaker.
#[utoipa::path(get, path = "/admin/breaker", tag = "admin",
    responses(
        (status = 200, description = "The breaker and bulkhead", body = BreakerModel),
        NoValidToken,
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The payment actor did not answer", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
async fn breaker(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
) -> Result<JsonBody<BreakerModel>, ApiError> {
    caller.require_admin()?;
    Ok(JsonBody(state.sugang.payment_snapshot().await?.into()))
}

/// The simulated gateway's behaviour.
#[utoipa::path(get, path = "/admin/faults/payment", tag = "admin",
    responses(
        (status = 200, description = "The gateway's faults", body = PaymentFaultsModel),
        NoValidToken,
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
async fn payment_faults(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
) -> Result<JsonBody<PaymentFaultsModel>, ApiError> {
    caller.require_admin()?;
    Ok(JsonBody(state.sugang.gateway().faults().into()))
}

/// Sets the simulated gateway's behaviour.
#[utoipa::path(put, path = "/admin/faults/payment", tag = "admin", request_body = PaymentFaultsChange,
    responses(
        (status = 200, description = "Set", body = PaymentFaultsModel),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        NoValidToken,
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid field", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_payment_faults(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    Json(body): Json<PaymentFaultsChange>,
) -> Result<JsonBody<PaymentFaultsModel>, ApiError> {
    caller.require_admin()?;
    let faults = GatewayFaults::try_from(body)?;
    state.sugang.set_gateway_faults(faults);
    Ok(JsonBody(faults.into()))
}

/// Makes a course actor panic on its next message.
#[utoipa::path(post, path = "/admin/faults/courses/{id}/panic", tag = "admin",
    params(("id" = u64, Path, minimum = 1, description = "Course id")),
    responses(
        (status = 204, description = "Armed: the course actor panics on its next message"),
        BadId, NoValidToken,
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown course", body = Problem, content_type = "application/problem+json"),
    ))]
#[tracing::instrument(skip_all, fields(course_id = id))]
async fn panic_course(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    if state.sugang.course(CourseId::parse(id)?).map_err(ApiError::internal)?.is_none() {
        return Err(ApiError::NotFound(format!("course {id} not found")));
    }
    state.sugang.faults().panic_course_once(id);
    Ok(StatusCode::NO_CONTENT)
}

/// Stops or starts a subscriber (`delivery`, `mypage`, `notifier`, `waitlist`).
#[utoipa::path(put, path = "/admin/faults/subscribers/{name}", tag = "admin", request_body = SubscriberDown,
    params(("name" = String, Path, description = "`delivery`, `mypage` or `notifier`")),
    responses(
        (status = 200, description = "Changed", body = SubscriberModel),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        NoValidToken,
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown subscriber", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The bus did not answer", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
#[tracing::instrument(skip_all, fields(subscriber = %name))]
async fn set_subscriber(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    Path(name): Path<String>,
    Json(body): Json<SubscriberDown>,
) -> Result<JsonBody<SubscriberModel>, ApiError> {
    caller.require_admin()?;
    let down = body.down.ok_or_else(|| ApiError::invalid("down", "is required"))?;
    if !state.sugang.set_subscriber_down(&name, down).await? {
        return Err(ApiError::NotFound(format!("no subscriber named {name:?}: expected delivery, mypage or notifier")));
    }
    Ok(JsonBody(SubscriberModel { name, down }))
}
