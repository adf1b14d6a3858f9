//! Cluster mode's HTTP side (issue 16): a single primary with read
//! replicas. Every node applies the whole replicated log to its own store,
//! so every node can answer a read; only the primary (the holder of the
//! lease) runs the actors, so every command, and every read of a live
//! actor, goes to it. How nodes find and reach each other is the binary's
//! business (NATS), behind [`ClusterLink`]; this module only decides, per
//! request, where it is served, and carries it there and back.
//!
//! Owns the [`ClusterLink`] interface and its types, the forwarding
//! middleware of a replica, the answering of forwarded requests on the
//! primary, the replica's wait for the log behind `?after=`, and
//! `GET /admin/cluster`. Must not touch the store or the actors: what a
//! request does is the same handler's wherever it runs.
//!
//! # Where a request is served, on a replica
//!
//! - Forwarded to the primary: every method but GET, HEAD and OPTIONS
//!   (commands); and the reads of a live actor, whose state is in the
//!   primary's memory, not in the store: `/admin/actors` (the supervision
//!   tree and the subscribers), `/admin/breaker` (the payment actor),
//!   `/admin/faults/payment` (the simulated gateway's knobs), `/admin/gate`
//!   (the gate actor) and `/queue/tickets/{id}` (a ticket's position is the
//!   gate's).
//! - Refused with 503 (Retry-After 1): `/queue/tickets/{id}/events`, a
//!   ticket's stream. A request-reply carries one answer, not a stream, and
//!   a replica's gate does not move; the waiting-room page falls back to
//!   polling `/queue/tickets/{id}`, which is forwarded.
//! - Served here: everything else, all of it read from the local store or
//!   about this process: the catalog and every read model (with
//!   `?after=` waiting for the log first, see [`applied_through`]), the seat
//!   stream `/events/courses` (the local log), the pages and their assets,
//!   `/health/*` (this node's), `/metrics` (this process's), `/openapi.json`
//!   and `/admin/cluster` (the cluster as this node sees it).
//!
//! Every response in cluster mode says which node answered
//! (`X-Sugang-Node`): the primary's name on a forwarded one.
//!
//! # A forwarded request on the primary
//!
//! It goes through the same router, tower stack and limits as a request
//! from a socket, marked (a request extension) so that it is never
//! forwarded again: a node that is no longer the primary answers 503 "not
//! the primary" and the client retries, rather than making a second hop
//! that could loop. Nothing of a forwarded request is trusted from the
//! forwarding node (a subscriber unit's batch, which the binary forwards
//! too, is trusted as any writer of the cluster's NATS subjects is): the
//! client's headers travel unchanged, so the bearer token is checked here
//! again (every node has the same secret), and in open mode the loopback
//! guard (`origin`) checks the client's own `Host` and `Origin` here again,
//! with the same verdict the replica reached. No code of the edge reads the
//! peer's socket address, so the forwarding node's address has nothing to
//! stand in for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json as JsonBody, Router};
use serde::{Deserialize, Serialize};
use sugang_actors::Sugang;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tower::{Service, ServiceExt};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::extract::BodyDeadline;
use crate::openapi::shared::NoValidToken;

/// One HTTP request as it crosses NATS to the primary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForwardedRequest {
    pub method: String,
    /// The path and the query, as the client sent them.
    pub uri: String,
    /// Every header the client sent, in order (a name may repeat), the
    /// token among them: the primary checks it again.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body, at most the body limit.
    pub body: Vec<u8>,
}

/// The primary's answer to a [`ForwardedRequest`], returned to the client
/// as it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForwardedResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Why a request could not be forwarded: the client hears 503 and retries.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no primary")]
    NoPrimary,
    #[error("primary unreachable: {0}")]
    Unreachable(String),
    #[error("the primary did not answer in time")]
    TimedOut,
}

/// A boxed future, so that [`ClusterLink`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the HTTP front needs of the cluster; the binary implements it on
/// NATS.
pub trait ClusterLink: Send + Sync + 'static {
    /// This node's name.
    fn node(&self) -> &str;
    /// Whether this node is the primary (holds the lease and runs the actors) right now.
    fn is_primary(&self) -> bool;
    /// Whether this node can serve: a replica caught up with the log and a primary known, or the primary promoted.
    fn is_ready(&self) -> bool;
    /// Sends a request to the primary and waits for its answer.
    fn forward(&self, request: ForwardedRequest) -> BoxFuture<'_, Result<ForwardedResponse, ForwardError>>;
    /// The cluster as this node sees it, for GET /admin/cluster.
    fn status(&self) -> BoxFuture<'_, Result<ClusterStatus, String>>;
}

/// A node's part in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Holds the lease, runs the actors, accepts commands.
    Primary,
    /// Applies the log and serves reads; forwards commands.
    Replica,
}

/// The replicated log (a JetStream stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    #[schema(example = "SUGANG")]
    pub name: String,
    /// How many servers keep a copy (R3 on a three-server cluster).
    #[schema(example = 3)]
    pub replicas: u64,
    /// The stream's last position: what every node applies up to.
    pub last_position: u64,
    /// The NATS server leading the stream, if one does.
    pub leader: Option<String>,
}

/// One node as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    #[schema(example = "node-1")]
    pub name: String,
    pub role: NodeRole,
    /// The stream position the node's store has applied.
    pub applied_position: u64,
    /// How far the node is behind the stream's last position.
    pub lag: u64,
    /// Since the node was last heard of: a dead node's grows.
    pub heartbeat_age_ms: u64,
    /// Courses whose actors the node runs (0 on a replica).
    pub courses_owned: u64,
    /// The subscriber units whose lease the node holds (their worker runs
    /// there, unless held down or switched off).
    #[serde(default)]
    pub units: Vec<UnitStatus>,
}

/// A subscriber unit (one worker of a subscriber) and how far behind the
/// log it is, as the answering node's copy of the log says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnitStatus {
    /// The unit: the subscriber, and its part when it has several workers.
    #[schema(example = "mypage#1")]
    pub name: String,
    /// The last event seq it has applied.
    pub offset: u64,
    /// How many events it is behind the log (the consumer lag).
    pub lag: u64,
    /// Since its lease was last renewed.
    pub lease_age_ms: u64,
}

/// `GET /admin/cluster`: the nodes, the primary's lease, the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The node that answered.
    #[schema(example = "node-2")]
    pub node: String,
    /// Its role.
    pub role: NodeRole,
    /// The primary's name, if there is one now.
    #[schema(example = "node-1")]
    pub primary: Option<String>,
    /// How long the lease holds without a renewal.
    pub lease_ttl_ms: u64,
    /// Since the primary last renewed its lease.
    pub lease_age_ms: Option<u64>,
    pub stream: StreamStatus,
    pub nodes: Vec<NodeStatus>,
}

/// The header that names the node that answered.
pub(crate) const NODE_HEADER: &str = "x-sugang-node";

/// Marks a request that came through the forwarded channel: it is served
/// here or refused, never forwarded again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Forwarded;

/// Forwarded requests, by outcome.
const FORWARDED: &str = "sugang_cluster_forwarded_total";
/// How long a forwarded request took, from the replica's side.
const FORWARD_SECONDS: &str = "sugang_cluster_forward_seconds";
/// Forwarded requests a node refused because it is not the primary.
const REFUSED: &str = "sugang_cluster_forwarded_refused_total";

/// Describes this module's series (called once, with the recorder).
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        FORWARDED,
        "Requests a replica forwarded to the primary, by outcome (answered, no_primary, unreachable, timed_out)"
    );
    metrics::describe_histogram!(
        FORWARD_SECONDS,
        "Seconds a replica waited for the primary's answer to a forwarded request"
    );
    metrics::describe_counter!(
        REFUSED,
        "Forwarded requests refused with 503 because this node is not the primary (the client retries)"
    );
}

/// Shows this module's counters at 0 from a cluster node's first scrape:
/// a series that appears only on its first increment hides that increment
/// from `rate()`.
pub(crate) fn declare_series() {
    for outcome in ["answered", "no_primary", "unreachable", "timed_out"] {
        metrics::counter!(FORWARDED, "outcome" => outcome).increment(0);
    }
    metrics::counter!(REFUSED).increment(0);
}

/// Where a replica serves a request.
#[derive(Debug, PartialEq, Eq)]
enum Serve {
    Here,
    Primary,
    /// A stream of the primary's actors: not forwardable.
    Refuse,
}

/// Where a replica serves `method path` (the module doc says why).
fn serve_where(method: &Method, path: &str) -> Serve {
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Serve::Primary;
    }
    if *method == Method::OPTIONS {
        return Serve::Here;
    }
    if matches!(path, "/admin/actors" | "/admin/breaker" | "/admin/faults/payment" | "/admin/gate") {
        return Serve::Primary;
    }
    if let Some(rest) = path.strip_prefix("/queue/tickets/") {
        return match rest.split_once('/') {
            None if !rest.is_empty() => Serve::Primary,
            Some((_, "events")) => Serve::Refuse,
            _ => Serve::Here,
        };
    }
    Serve::Here
}

/// The middleware: on a replica, sends commands and live-actor reads to
/// the primary; on a node that got a forwarded request, serves it if
/// primary and refuses it otherwise.
/// In embedded mode (no link) every request passes on untouched.
pub(crate) async fn forward(
    State(link): State<Option<Arc<dyn ClusterLink>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(link) = link else { return next.run(request).await };
    let primary = link.is_primary();
    if request.extensions().get::<Forwarded>().is_some() {
        if primary {
            return next.run(request).await;
        }
        metrics::counter!(REFUSED).increment(1);
        tracing::warn!(
            node = link.node(),
            method = %request.method(),
            uri = %request.uri(),
            "a forwarded request reached a node that is not the primary: refused, not forwarded again"
        );
        return ApiError::unavailable(
            format!("node {} is not the primary (it lost or never held the lease): try again", link.node()),
            Duration::from_secs(1),
        )
        .into_response();
    }
    if primary {
        return next.run(request).await;
    }
    match serve_where(request.method(), request.uri().path()) {
        Serve::Here => next.run(request).await,
        Serve::Refuse => {
            tracing::info!(node = link.node(), uri = %request.uri(), "a ticket stream asked of a replica: 503, poll instead");
            ApiError::unavailable(
                format!(
                    "node {} is a replica and ticket streams are the primary's: poll GET /queue/tickets/{{id}} instead",
                    link.node()
                ),
                Duration::from_secs(1),
            )
            .into_response()
        }
        Serve::Primary => to_primary(&*link, request).await,
    }
}

/// Sends `request` to the primary and returns its answer as it is.
async fn to_primary(link: &dyn ClusterLink, request: Request) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let forwarded = match forwarded_request(request).await {
        Ok(forwarded) => forwarded,
        Err(refusal) => return refusal.into_response(),
    };
    let start = Instant::now();
    let answer = link.forward(forwarded).await;
    metrics::histogram!(FORWARD_SECONDS).record(start.elapsed().as_secs_f64());
    let outcome = match &answer {
        Ok(_) => "answered",
        Err(ForwardError::NoPrimary) => "no_primary",
        Err(ForwardError::Unreachable(_)) => "unreachable",
        Err(ForwardError::TimedOut) => "timed_out",
    };
    metrics::counter!(FORWARDED, "outcome" => outcome).increment(1);
    match answer {
        Ok(answer) => match response_of(answer) {
            Ok(response) => response,
            Err(why) => {
                tracing::error!(node = link.node(), %method, %uri, reason = why, "the primary's answer is not HTTP");
                ApiError::internal(format!("the primary's answer is not HTTP: {why}")).into_response()
            }
        },
        Err(ForwardError::TimedOut) => {
            // The request reached the primary, which did not answer: it
            // may have carried it out before it died. A 503 would tell the
            // client nothing was done.
            tracing::warn!(node = link.node(), %method, %uri, "the primary did not answer a forwarded request: 504");
            ApiError::GatewayTimeout(format!(
                "node {} forwarded this request to the primary, which did not answer in time: it may or may not \
                 have been carried out; read before repeating it",
                link.node()
            ))
            .into_response()
        }
        Err(error) => {
            tracing::warn!(node = link.node(), %method, %uri, %error, "forwarding to the primary failed: 503");
            ApiError::unavailable(
                format!("node {} could not forward this request to the primary: {error}", link.node()),
                Duration::from_secs(1),
            )
            .into_response()
        }
    }
}

/// The request as it crosses: its body read whole as a handler reads
/// one, within the body limit (413: the `DefaultBodyLimit` layer around
/// this middleware sets it) and the body deadline (408).
async fn forwarded_request(request: Request) -> Result<ForwardedRequest, ApiError> {
    let method = request.method().as_str().to_owned();
    let uri = request.uri().path_and_query().map_or_else(|| request.uri().path().to_owned(), |p| p.as_str().to_owned());
    let headers =
        request.headers().iter().map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec())).collect();
    let deadline = request.extensions().get::<BodyDeadline>().copied();
    let read = Bytes::from_request(request, &());
    let read = match deadline {
        Some(BodyDeadline(at)) => tokio::time::timeout_at(at, read).await.map_err(|_| ApiError::RequestTimeout)?,
        None => read.await,
    };
    let body = read.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest { detail: format!("the body could not be read: {rejection}"), field: None }
        }
    })?;
    Ok(ForwardedRequest { method, uri, headers, body: body.to_vec() })
}

/// Headers of one connection, not of the message: never carried across.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "te" | "trailer" | "upgrade"
    )
}

/// The headers of a forwarded message, without the hop-by-hop ones and the
/// length (the body is whole: it is counted again).
fn header_map(headers: Vec<(String, Vec<u8>)>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if hop_by_hop(&name) || name.eq_ignore_ascii_case(CONTENT_LENGTH.as_str()) {
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header {name:?}: {e}"))?;
        let value = HeaderValue::from_bytes(&value).map_err(|e| format!("header {name}: {e}"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// The primary's answer as this node's response.
fn response_of(answer: ForwardedResponse) -> Result<Response, String> {
    let status = StatusCode::from_u16(answer.status).map_err(|e| format!("status {}: {e}", answer.status))?;
    let headers = header_map(answer.headers)?;
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// A forwarded request as a request of this node's router, marked.
fn request_of(forwarded: ForwardedRequest) -> Result<Request, String> {
    let method = Method::from_bytes(forwarded.method.as_bytes()).map_err(|e| format!("method: {e}"))?;
    // Origin-form only: the target of a request that came over a socket
    // here, never an absolute URI naming some host.
    if !forwarded.uri.starts_with('/') {
        return Err(format!("the target {:?} is not a path", forwarded.uri));
    }
    let uri = forwarded.uri.parse::<Uri>().map_err(|e| format!("the target {:?}: {e}", forwarded.uri))?;
    let mut headers = header_map(forwarded.headers)?;
    if !forwarded.body.is_empty() {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(forwarded.body.len()));
    }
    let mut request = Request::new(Body::from(forwarded.body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    request.extensions_mut().insert(Forwarded);
    Ok(request)
}

/// The largest answer sent back over the cluster link: far above any page
/// of the API (a page holds at most 1000 items).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// How long an answer's body may take to complete once its head is ready.
const ANSWER_BODY_TIME: Duration = Duration::from_secs(10);
/// How long the drain waits for forwarded requests in progress.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// A forwarded request with the channel its answer goes back on.
type Inbound = (ForwardedRequest, oneshot::Sender<ForwardedResponse>);

/// The primary's side: answers every request that arrives on `inbox`
/// through `app` (the same router and stack as the sockets'), each in its
/// own task, until `draining` turns true or the inbox closes; then waits
/// (bounded) for the answers in progress. Requests still queued are
/// dropped with their reply channel, which the sender sees as no answer.
pub(crate) async fn answer_forwarded<A>(mut inbox: mpsc::Receiver<Inbound>, app: A, mut draining: watch::Receiver<bool>)
where
    A: Service<Request, Response = Response, Error = std::convert::Infallible, Future: Send> + Clone + Send + 'static,
{
    let mut answering = JoinSet::new();
    loop {
        let (forwarded, reply) = tokio::select! {
            _ = draining.wait_for(|draining| *draining) => break,
            received = inbox.recv() => match received {
                Some(received) => received,
                None => break,
            },
            // Reaps finished answers so the set does not grow.
            Some(joined) = answering.join_next(), if !answering.is_empty() => {
                answered(joined);
                continue;
            }
        };
        let app = app.clone();
        answering.spawn(async move {
            let method = forwarded.method.clone();
            let uri = forwarded.uri.clone();
            let response = match request_of(forwarded) {
                Ok(request) => match app.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                Err(why) => {
                    tracing::warn!(%method, %uri, reason = why, "a forwarded request is malformed: 400");
                    ApiError::BadRequest { detail: format!("the forwarded request is malformed: {why}"), field: None }
                        .into_response()
                }
            };
            let answer = answer_of(response).await;
            if reply.send(answer).is_err() {
                tracing::debug!(%method, %uri, "the forwarding side stopped waiting for this answer");
            }
        });
    }
    drop(inbox);
    let finished = async {
        while let Some(joined) = answering.join_next().await {
            answered(joined);
        }
    };
    if tokio::time::timeout(DRAIN_DEADLINE, finished).await.is_err() {
        tracing::warn!(
            after_s = DRAIN_DEADLINE.as_secs(),
            "forwarded requests still in progress at the drain deadline: dropped"
        );
    }
}

/// Logs an answering task that did not finish (a panic): its forwarding
/// node sees the reply channel dropped, and its client a 503.
fn answered(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined {
        tracing::error!(%error, "answering a forwarded request failed: no answer sent");
    }
}

/// A response as it crosses back, its body collected. An answer that
/// cannot cross is replaced by the problem that says why.
async fn answer_of(response: Response) -> ForwardedResponse {
    match collect(response).await {
        Ok(answer) => answer,
        Err(refusal) => collect(refusal.into_response()).await.unwrap_or_else(|_| ForwardedResponse {
            status: StatusCode::INTERNAL_SERVER_ERROR.as_u16(),
            headers: Vec::new(),
            body: Vec::new(),
        }),
    }
}

/// The response's head and whole body, bounded in size and time. A stream
/// has no end to wait for: it is refused.
async fn collect(response: Response) -> Result<ForwardedResponse, ApiError> {
    let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if content_type.is_some_and(|v| v.starts_with("text/event-stream")) {
        tracing::info!("a forwarded request asked for a stream: refused");
        return Err(ApiError::unavailable(
            "a stream cannot be forwarded: ask the primary directly, or poll",
            Duration::from_secs(1),
        ));
    }
    let (parts, body) = response.into_parts();
    let status = parts.status.as_u16();
    let body = match tokio::time::timeout(ANSWER_BODY_TIME, axum::body::to_bytes(body, MAX_ANSWER_BYTES)).await {
        Ok(Ok(body)) => body,
        Ok(Err(error)) => {
            tracing::error!(status, %error, "a forwarded request's answer could not be read");
            return Err(ApiError::internal(format!("the answer could not be read: {error}")));
        }
        Err(_) => {
            tracing::error!(status, "a forwarded request's answer did not complete in time");
            return Err(ApiError::internal("the answer did not complete in time"));
        }
    };
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| !hop_by_hop(name.as_str()) && *name != CONTENT_LENGTH)
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    Ok(ForwardedResponse { status, headers, body: body.to_vec() })
}

/// How long a replica waits for its log to reach a `?after=` seq that the
/// primary handed out: the read-your-writes wait's default bound.
pub(crate) const REPLICA_WAIT: Duration = Duration::from_secs(5);

/// Waits (bounded by [`REPLICA_WAIT`]) until this node's store has applied
/// the log through `seq`. On a replica a seq beyond the local log is
/// normal (the primary answered with it a moment ago), not a bad request.
pub(crate) async fn applied_through(sugang: &Sugang, seq: u64) -> bool {
    let mut applied = sugang.store().events().watch();
    matches!(tokio::time::timeout(REPLICA_WAIT, applied.wait_for(|last| *last >= seq)).await, Ok(Ok(_)))
}

/// `/admin/cluster`.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/admin/cluster", get(status))
}

/// The cluster as this node sees it: the nodes (role, applied position,
/// lag, heartbeat age, courses owned), the primary and its lease, the
/// stream. 404 when the server runs embedded, not as a cluster node.
#[utoipa::path(get, path = "/admin/cluster", tag = "admin",
    responses(
        (status = 200, description = "The cluster as this node sees it", body = ClusterStatus),
        NoValidToken,
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not running as a cluster node", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The cluster's state could not be read (see Retry-After)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
async fn status(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
) -> Result<JsonBody<ClusterStatus>, ApiError> {
    caller.require_admin()?;
    let Some(link) = &state.cluster else {
        return Err(ApiError::NotFound("not running as a cluster node".into()));
    };
    link.status().await.map(JsonBody).map_err(|reason| {
        tracing::warn!(node = link.node(), %reason, "the cluster's status could not be read: 503");
        ApiError::unavailable(
            format!("node {} could not read the cluster's status: {reason}", link.node()),
            Duration::from_secs(1),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_live_actor_reads_go_to_the_primary() {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(serve_where(&method, "/courses"), Serve::Primary, "{method}");
            assert_eq!(serve_where(&method, "/metrics"), Serve::Primary, "{method}: any command, whatever the path");
        }
        for path in ["/admin/actors", "/admin/breaker", "/admin/faults/payment", "/admin/gate", "/queue/tickets/7"] {
            assert_eq!(serve_where(&Method::GET, path), Serve::Primary, "{path}");
            assert_eq!(serve_where(&Method::HEAD, path), Serve::Primary, "{path}");
            assert_eq!(serve_where(&Method::OPTIONS, path), Serve::Here, "{path}");
        }
        assert_eq!(serve_where(&Method::GET, "/queue/tickets/7/events"), Serve::Refuse);
    }

    #[test]
    fn store_reads_are_served_here() {
        for path in [
            "/courses",
            "/courses/1",
            "/classes?after=9",
            "/mypages",
            "/events/courses",
            "/metrics",
            "/health/ready",
            "/admin/cluster",
            "/ops",
            "/openapi.json",
            "/queue/tickets/",
            "/queue/tickets/7/other",
        ] {
            assert_eq!(serve_where(&Method::GET, path), Serve::Here, "{path}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_the_length_do_not_cross() {
        let headers = vec![
            ("Connection".to_owned(), b"close".to_vec()),
            ("transfer-encoding".to_owned(), b"chunked".to_vec()),
            ("content-length".to_owned(), b"999".to_vec()),
            ("authorization".to_owned(), b"Bearer x".to_vec()),
            ("x-multi".to_owned(), b"1".to_vec()),
            ("x-multi".to_owned(), b"2".to_vec()),
        ];
        let map = header_map(headers).expect("valid headers");
        assert!(map.get("connection").is_none() && map.get("transfer-encoding").is_none());
        assert!(map.get("content-length").is_none());
        assert_eq!(map.get("authorization").map(|v| v.as_bytes()), Some(&b"Bearer x"[..]));
        assert_eq!(map.get_all("x-multi").iter().count(), 2);
        assert!(header_map(vec![("bad name".to_owned(), b"x".to_vec())]).is_err());
    }

    #[test]
    fn a_forwarded_target_must_be_a_path() {
        let forwarded = |uri: &str| ForwardedRequest {
            method: "GET".into(),
            uri: uri.into(),
            headers: vec![],
            body: b"{}".to_vec(),
        };
        let request = request_of(forwarded("/courses?page=1")).expect("a path");
        assert!(request.extensions().get::<Forwarded>().is_some(), "marked");
        assert_eq!(request.headers().get(CONTENT_LENGTH).map(|v| v.as_bytes()), Some(&b"2"[..]));
        assert!(request_of(forwarded("http://evil.example/courses")).is_err());
        assert!(request_of(ForwardedRequest { method: "G E T".into(), ..forwarded("/courses") }).is_err());
    }
}
