//! Operations: liveness, readiness (503 while starting or draining),
//! Prometheus `/metrics` (admins only) and `/openapi.json`.
//!
//! Owns the process-wide Prometheus recorder and the HTTP latency
//! histogram; the other series are recorded where they happen (actors,
//! storage) and only rendered here.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json as JsonBody, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::openapi::shared::NoValidToken;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
}

/// The request latency histogram, by method, route and status.
const HTTP_LATENCY: &str = "sugang_http_request_duration_seconds";
const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the Prometheus recorder now: before the actor system starts, so
/// the series it records while starting (the breaker's state among them)
/// are not lost to a process without a recorder yet.
pub fn install_metrics() {
    drop(prometheus());
}

/// The process's Prometheus recorder, installed once (several servers in one
/// test process share it). If another recorder was installed first, the
/// handle renders an empty page.
pub(crate) fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets_for_metric(Matcher::Full(HTTP_LATENCY.to_owned()), &LATENCY_BUCKETS)
            {
                Ok(builder) => builder,
                Err(e) => {
                    tracing::warn!(error = %e, "latency buckets refused; latencies are summaries");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows nothing");
            }
            sugang_actors::describe_metrics();
            metrics::describe_histogram!(HTTP_LATENCY, "HTTP request latency in seconds, by method, route and status");
            declare_fault_series();
            crate::cluster::describe_metrics();
            // A recorder built by hand has no upkeep task: histogram samples
            // pile up until a scrape drains them, without bound if nobody
            // scrapes (a sample per request and per saga step: tens of MB
            // over a million enrollments). A thread of its own, so it
            // outlives whichever runtime first asked for the handle.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(METRICS_UPKEEP);
                    upkeep.run_upkeep();
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread; histograms drain only when scraped");
            }
            handle
        })
        .clone()
}

/// Shows the fault and restart counters at 0 from the first scrape: a
/// series that only appears on its first increment hides that increment
/// from `rate()` and `increase()`. The label values are the
/// ones the actors crate records (`actors/src/entity.rs`, `bus/`,
/// `system/`, `faults.rs`); a value missing here still appears on its
/// first increment.
fn declare_fault_series() {
    for fault in ["course_panic", "course_panic_always", "payment_gateway", "subscriber"] {
        metrics::counter!("sugang_faults_injected_total", "fault" => fault).increment(0);
    }
    for kind in ["course", "enrollment", "payment", "delivery", "mypage", "notifier", "waitlist"] {
        metrics::counter!("sugang_actor_restarts_total", "kind" => kind).increment(0);
        metrics::counter!("sugang_actor_held_down_total", "kind" => kind).increment(0);
    }
}

/// How often histogram samples are drained into their buckets and summaries.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Records every routed request's latency by route template and status.
pub(crate) async fn track_latency(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let method = request.method().to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(HTTP_LATENCY, "method" => method, "route" => route, "status" => status)
        .record(start.elapsed().as_secs_f64());
    response
}

/// A health answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    #[schema(example = "ready")]
    status: &'static str,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "The process runs", body = Health)))]
pub(crate) async fn live() -> JsonBody<Health> {
    JsonBody(Health { status: "live" })
}

/// 200 once the tree is up and storage is open (and, on a cluster node,
/// once it has caught up with the log and knows its primary); 503 while
/// starting or draining.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Starting, draining, or a cluster node not caught up", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
async fn ready(State(state): State<AppState>) -> Result<JsonBody<Health>, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::unavailable("not ready: starting or draining", Duration::from_secs(1)));
    }
    match &state.cluster {
        Some(link) if !link.is_ready() => Err(ApiError::unavailable(
            format!("not ready: cluster node {} has not caught up with the log or knows no primary", link.node()),
            Duration::from_secs(1),
        )),
        _ => Ok(JsonBody(Health { status: "ready" })),
    }
}

/// Prometheus text: request latencies, actor restarts, breaker, journal,
/// subscriber lag, live entities.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
        NoValidToken,
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
async fn metrics_text(State(state): State<AppState>, AuthUser(caller): AuthUser) -> Result<Response, ApiError> {
    caller.require_admin()?;
    // Refresh the gauges that are sampled rather than pushed.
    let _ = state.sugang.tree();
    let _ = state.sugang.subscribers().await;
    state.metrics.run_upkeep();
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    Ok(response)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
async fn openapi() -> JsonBody<utoipa::openapi::OpenApi> {
    JsonBody(crate::openapi::ApiDoc::openapi())
}
