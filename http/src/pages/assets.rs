//! The stylesheet and the scripts, embedded in the binary
//! (`include_str!`) and served under `/assets/`.
//!
//! The scripts are plain JavaScript of our own, no framework and no build
//! step: `common.js` (who you are, the API client, the strings),
//! `student.js`, `instructor.js`, `ops.js`, `gate.js` (the waiting room and
//! the operator's gate).

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// (name, content type, body).
const ASSETS: &[(&str, &str, &str)] = &[
    ("sugang.css", "text/css; charset=utf-8", include_str!("assets/sugang.css")),
    ("common.js", "text/javascript; charset=utf-8", include_str!("assets/common.js")),
    ("student.js", "text/javascript; charset=utf-8", include_str!("assets/student.js")),
    ("instructor.js", "text/javascript; charset=utf-8", include_str!("assets/instructor.js")),
    ("ops.js", "text/javascript; charset=utf-8", include_str!("assets/ops.js")),
    ("gate.js", "text/javascript; charset=utf-8", include_str!("assets/gate.js")),
];

/// `GET /assets/{name}`. Revalidated on every load (`no-cache`): the
/// binary's version is the assets' version.
pub(crate) async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(n, ..)| *n == name)
        .ok_or_else(|| ApiError::NotFound(format!("no asset named {name:?}")))?;
    Ok(([(CONTENT_TYPE, *content_type), (CACHE_CONTROL, "no-cache"), (X_CONTENT_TYPE_OPTIONS, "nosniff")], *body)
        .into_response())
}
