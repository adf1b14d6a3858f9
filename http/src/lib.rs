//! The HTTP front of sugang: the axum router that speaks the contract of
//! `shared/API.md` (HAL items and collections, problem+json errors, auth,
//! health, metrics, OpenAPI) over the actor facade of `sugang-actors`, and
//! [`serve`], which runs it until a shutdown future completes.
//!
//! Thin by design: a handler parses its input into domain types, checks who
//! is calling, calls one facade method and renders the answer. No rule of
//! the domain lives here.
//!
//! # Layout
//!
//! - `server`: [`serve`], [`ServeConfig`]: HTTP/1 connections with the
//!   edge's limits (header size and time, body size, type and time), the
//!   tower stack (request ids, tracing, concurrency limit with load
//!   shedding), readiness and graceful shutdown.
//! - `error`: [`ApiError`], the one error of the edge, as problem+json.
//! - `extract`: extractors whose rejections are `ApiError`s: JSON bodies,
//!   query parameters, path ids; and the edge's one integer parser.
//! - `auth`: [`Auth`], tokens, a person as (role, name), and the
//!   `AuthUser`/`MaybeAuthUser` extractors.
//! - `hal`: links, pages, collections, command responses, RFC 3339 times.
//! - `courses`, `classes`, `payments`, `deliveries`, `schedules`, `mypages`,
//!   `notifications`, `waitlists`: one module per resource, each with its
//!   `router()`.
//! - `queue`: the waiting room (`/queue/tickets`, `/admin/gate`) and the
//!   admission check of `POST /classes`.
//! - `admin`: the supervision tree, the breaker, fault injection.
//! - `ops`: health, readiness, Prometheus metrics, the OpenAPI route.
//! - `openapi`: the generated OpenAPI 3.1 document.
//! - `origin`: open mode's guard against cross-site requests and DNS
//!   rebinding (loopback `Host` and `Origin` only).
//! - `pages`: the web pages for students, instructors and operators, and their live seat counts.
//! - `cluster`: cluster mode's side of the edge: [`ClusterLink`], what a
//!   replica forwards to the primary and how the primary answers it, the
//!   replica's wait for the log behind `?after=`, `/admin/cluster`.

mod admin;
mod auth;
mod classes;
mod cluster;
mod courses;
mod deliveries;
mod error;
mod extract;
mod hal;
mod mypages;
mod notifications;
mod openapi;
mod ops;
mod origin;
mod pages;
mod payments;
mod queue;
mod schedules;
mod server;
mod waitlists;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Deserializer};
use sugang_actors::Sugang;

pub use auth::{Auth, MIN_SECRET_BYTES, Role, SecretError, TokenError};
pub use cluster::{
    BoxFuture, ClusterLink, ClusterStatus, ForwardError, ForwardedRequest, ForwardedResponse, NodeRole, NodeStatus,
    StreamStatus, UnitStatus,
};
pub use error::ApiError;
pub use ops::install_metrics;
pub use server::{ServeConfig, ServeError, answer_while_starting, serve};

/// What every handler shares: actor handles, never storage.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The facade over the supervision tree.
    sugang: Sugang,
    /// How callers prove who they are.
    auth: Auth,
    /// False while draining: `/health/ready` answers 503.
    ready: Arc<AtomicBool>,
    /// Renders `/metrics`.
    metrics: PrometheusHandle,
    /// Ticket streams open, per ticket (see `queue`).
    ticket_streams: queue::TicketStreams,
    /// This node's view of the cluster; `None` when embedded.
    cluster: Option<Arc<dyn ClusterLink>>,
}

impl AppState {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Every route of the contract: the resources served as HAL, then the
/// operator's and the operations' routes.
fn router() -> Router<AppState> {
    let resources = Router::new()
        .merge(courses::router())
        .merge(classes::router())
        .merge(payments::router())
        .merge(deliveries::router())
        .merge(schedules::router())
        .merge(mypages::router())
        .merge(notifications::router())
        .merge(waitlists::router())
        .merge(queue::router())
        .layer(axum::middleware::from_fn(hal::content_type));
    Router::new()
        .merge(resources)
        .merge(admin::router())
        .merge(queue::admin_router())
        .merge(cluster::router())
        .merge(ops::router())
        .merge(pages::router())
}

/// Waits (bounded) until `subscriber`'s read model has applied the events up
/// to `?after=`; 503 with Retry-After if it did not in time.
pub(crate) async fn caught_up(state: &AppState, subscriber: &str, params: &extract::Params) -> Result<(), ApiError> {
    let Some(seq) = params.after()? else { return Ok(()) };
    let last = state.sugang.last_seq();
    if seq > last {
        let Some(link) = &state.cluster else {
            // No command has answered with this seq: waiting cannot help. The
            // request is well formed; the state of the log is what refuses it.
            return Err(ApiError::ConflictOn {
                field: "after",
                detail: format!("no event has seq {seq} yet (the log is at {last})"),
            });
        };
        // A cluster node: the primary answered with this seq, and this
        // node's copy of the log may be a moment behind it.
        if !cluster::applied_through(&state.sugang, seq).await {
            let applied = state.sugang.last_seq();
            tracing::info!(node = link.node(), seq, applied, "?after= not reached by this node's log in time: 503");
            return Err(ApiError::unavailable(
                format!(
                    "node {} has applied the log through seq {applied} and did not reach seq {seq} within {} s",
                    link.node(),
                    cluster::REPLICA_WAIT.as_secs()
                ),
                Duration::from_secs(1),
            ));
        }
    }
    if state.sugang.wait_for(subscriber, seq).await {
        Ok(())
    } else {
        Err(ApiError::unavailable(
            format!("the {subscriber} read model has not reached seq {seq} yet"),
            Duration::from_secs(1),
        ))
    }
}

/// For `Option<Option<T>>` fields: absent is `None`, `null` is `Some(None)`.
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
