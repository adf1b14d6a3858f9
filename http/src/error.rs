//! The edge's one error type: every refusal the API makes, as
//! `application/problem+json` (`type`, `title`, `status`, `detail`, and
//! `field` when one input field is at fault).
//!
//! Owns the mapping of the facade's [`CommandError`] and the domain's
//! [`FieldError`] onto status codes, and of overload onto 503 with
//! `Retry-After`. Internal errors are logged with their cause here and
//! answered with a generic body; nothing else may build a 500.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sugang_actors::{CommandError, FieldError};
use utoipa::ToSchema;

/// A problem detail (RFC 9457), as every error response carries it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Problem {
    /// Always `about:blank`: `title` is the status's reason phrase.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    kind: &'static str,
    #[schema(example = "Unprocessable Entity")]
    title: &'static str,
    #[schema(example = 422)]
    status: u16,
    #[schema(example = "fee: must be an integer >= 0")]
    detail: String,
    /// The input field at fault, when there is one (camelCase, as sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "fee")]
    field: Option<String>,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request could not be read (malformed JSON, a bad path id).
    #[error("{detail}")]
    BadRequest { detail: String, field: Option<String> },
    /// 401: no token, or one that does not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid token of the wrong role or the wrong person.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 409 because of one input field (a seq the log has not reached).
    #[error("{field}: {detail}")]
    ConflictOn { field: &'static str, detail: String },
    /// 402.
    #[error("{0}")]
    PaymentDeclined(String),
    /// 408: the body did not arrive in time. The connection is closed.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// 413. The connection is closed (the rest of the body is not read).
    #[error("the request body is larger than the limit")]
    PayloadTooLarge,
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 428: the waiting room is on and no valid admission was sent.
    #[error("{0}")]
    PreconditionRequired(String),
    /// 422: a field that was read but does not make sense.
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    /// 429 with `Retry-After`: one client holds too much of a shared
    /// resource (streams of one ticket).
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after: Duration },
    /// 503 with `Retry-After`: payment unavailable, overloaded, draining, or
    /// a read model that did not catch up in time.
    #[error("{detail}")]
    Unavailable { detail: String, retry_after: Duration },
    /// 504: in a cluster, the primary a command was forwarded to did not
    /// answer in time (it may have died with it). Unlike a 503, nothing
    /// says the command was not carried out: the client reads before it
    /// repeats one that is not idempotent.
    #[error("{0}")]
    GatewayTimeout(String),
    /// 500: logged with its cause; the client hears nothing more.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// 422 for `field`.
    pub(crate) fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Invalid { field: field.into(), detail: detail.into() }
    }

    /// 400 naming `field`.
    pub(crate) fn bad_field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::BadRequest { detail: detail.into(), field: Some(field.into()) }
    }

    /// 503 that asks the client to come back after `retry_after`.
    pub(crate) fn unavailable(detail: impl Into<String>, retry_after: Duration) -> Self {
        ApiError::Unavailable { detail: detail.into(), retry_after }
    }

    /// 429 that asks the client to come back after `retry_after`.
    pub(crate) fn too_many(detail: impl Into<String>, retry_after: Duration) -> Self {
        ApiError::TooManyRequests { detail: detail.into(), retry_after }
    }

    /// 500, logging `cause` (the body stays generic).
    pub(crate) fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    /// The status code this error answers with.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::ConflictOn { .. } => StatusCode::CONFLICT,
            ApiError::PaymentDeclined(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// `Retry-After` in whole seconds, rounded up, at least one.
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_millis().div_ceil(1000).max(1) as u64
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let (detail, field) = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                ("an internal error occurred; it has been logged".to_owned(), None)
            }
            ApiError::BadRequest { detail, field } => (detail.clone(), field.clone()),
            ApiError::Invalid { field, detail } => (format!("{field}: {detail}"), Some(field.clone())),
            ApiError::ConflictOn { field, detail } => (format!("{field}: {detail}"), Some((*field).to_owned())),
            other => (other.to_string(), None),
        };
        let problem = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            field,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match &self {
            ApiError::Unavailable { retry_after, .. } | ApiError::TooManyRequests { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(*retry_after)));
            }
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RequestTimeout | ApiError::PayloadTooLarge => {
                // The body was not read to its end: the connection cannot
                // carry another request.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            CommandError::Conflict(reason) => ApiError::Conflict(reason),
            CommandError::PaymentDeclined(_) => ApiError::PaymentDeclined(e.to_string()),
            CommandError::Unavailable { reason, retry_after } => ApiError::unavailable(reason, retry_after),
            CommandError::Overloaded { reason, retry_after } => ApiError::unavailable(reason, retry_after),
            CommandError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid(e.field, e.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_rounded_up_and_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(5)), 5);
    }

    #[test]
    fn command_errors_map_to_the_contract() {
        let status = |e: CommandError| ApiError::from(e).status_code();
        assert_eq!(status(CommandError::NotFound { what: "course", id: 1 }), StatusCode::NOT_FOUND);
        assert_eq!(status(CommandError::Conflict("full".into())), StatusCode::CONFLICT);
        assert_eq!(status(CommandError::PaymentDeclined("no".into())), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(
            status(CommandError::Overloaded { reason: "x".into(), retry_after: Duration::ZERO }),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(CommandError::Internal("disk".into())), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
