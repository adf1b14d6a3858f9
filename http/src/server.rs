//! Running the router: the connections, the tower stack around the router,
//! readiness, and graceful shutdown.
//!
//! Owns what happens between the socket and a handler: HTTP/1 connections
//! with the edge's limits (request line and headers over 16 KiB are 431; a
//! client that takes over 10 s to send its headers gets 408 and is
//! disconnected, and one that takes over 10 s more for its body gets 408
//! from the JSON extractor, against the [`BodyDeadline`] set here), request
//! ids, the request span, the 64 KiB body limit (413 at once when
//! `Content-Length` says so), the rule that a body is JSON (415), the global
//! concurrency limit that sheds load (503 + Retry-After, never an unbounded
//! queue), the latency histogram, and the drain on shutdown (readiness 503,
//! in-flight requests finish, then the actor system stops and flushes).
//! In cluster mode, also the primary's answering of forwarded requests
//! (through the same stack) and the `X-Sugang-Node` header on every answer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use std::convert::Infallible;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::{HeaderValue, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sugang_actors::Sugang;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Auth;
use crate::cluster::{ClusterLink, ForwardedRequest, ForwardedResponse};
use crate::error::ApiError;
use crate::extract::{BodyDeadline, is_json};
use crate::{AppState, cluster, ops, router};

/// How the front runs.
pub struct ServeConfig {
    /// Open (loopback only) or bearer tokens.
    pub auth: Auth,
    /// Requests handled at once; beyond it requests are shed with 503.
    pub max_in_flight: usize,
    /// The largest request body, in bytes (413 beyond).
    pub body_limit: usize,
    /// The most bytes a request line and its headers may take together
    /// (431 beyond).
    pub max_header_bytes: usize,
    /// How long a client may take to send a request's line and headers,
    /// counted from the connection's start or the previous answer (408 and
    /// disconnected beyond; an idle kept-alive connection is just closed).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body, counted from
    /// its headers (408 and disconnected beyond).
    pub body_timeout: Duration,
    /// This node's link to its cluster; `None` runs embedded. With a link,
    /// a replica forwards commands to the primary (see `cluster`).
    pub cluster: Option<Arc<dyn ClusterLink>>,
    /// Requests other nodes forwarded to this one, each with the channel
    /// its answer goes back on: the primary's side of forwarding, fed by
    /// the binary's subscription. Answered through the same router and
    /// stack as the sockets' requests, until the server drains.
    pub forwarded:
        Option<tokio::sync::mpsc::Receiver<(ForwardedRequest, tokio::sync::oneshot::Sender<ForwardedResponse>)>>,
}

impl ServeConfig {
    /// The contract's defaults: 1024 requests in flight, 64 KiB bodies,
    /// 16 KiB of headers, 10 s for the headers and 10 s for the body.
    pub fn new(auth: Auth) -> Self {
        ServeConfig {
            auth,
            max_in_flight: 1024,
            body_limit: 64 * 1024,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            cluster: None,
            forwarded: None,
        }
    }

    /// Refuses an open (token-less) server on anything but loopback.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), ServeError> {
        if self.auth.is_open() && !addr.ip().is_loopback() {
            return Err(ServeError::OpenBeyondLoopback(addr));
        }
        Ok(())
    }
}

/// Why the server did not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {0} without a JWT secret: set --jwt-secret (SUGANG_JWT_SECRET) or listen on a loopback address"
    )]
    OpenBeyondLoopback(SocketAddr),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
    /// A journal write or persist failed: the state on disk is unknown, so
    /// the process exits for its supervisor to restart it from disk.
    #[error("stopped after a storage fault, to restart from disk: {0}")]
    StorageFailed(String),
}

/// Serves the API on `listener` until `shutdown` completes, then drains:
/// readiness turns 503, no new connection is accepted, requests in flight
/// finish, and the actor system stops (flushing the journal) before this
/// returns.
pub async fn serve(
    listener: TcpListener,
    sugang: Sugang,
    mut config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = match listener.local_addr().map_err(ServeError::Io).and_then(|a| config.check_listen(a).map(|()| a)) {
        Ok(addr) => addr,
        Err(e) => {
            sugang.shutdown().await;
            return Err(e);
        }
    };
    let ready = Arc::new(AtomicBool::new(true));
    let state = AppState {
        sugang: sugang.clone(),
        auth: config.auth.clone(),
        ready: ready.clone(),
        metrics: ops::prometheus(),
        ticket_streams: Default::default(),
        cluster: config.cluster.clone(),
    };
    let app = app(state, &config);
    let node = config.cluster.as_ref().map(|link| link.node().to_owned());
    if node.is_some() {
        cluster::declare_series();
    }
    tracing::info!(%addr, open = config.auth.is_open(), node, "sugang is listening");
    let (draining, drained) = watch::channel(false);
    let answering =
        config.forwarded.take().map(|inbox| tokio::spawn(cluster::answer_forwarded(inbox, app.clone(), drained)));
    // Fail-stop: a storage fault drains the server like a signal does, and
    // `serve` then says why, for the process to exit non-zero.
    let mut failure = sugang.store().failure();
    let drain = async move {
        tokio::select! {
            () = shutdown => {}
            Ok(failed) = failure.wait_for(Option::is_some) => {
                let reason = failed.as_deref().unwrap_or_default().to_owned();
                tracing::error!(%reason, "storage failed: unready, draining, then exiting to restart from disk");
            }
        }
        ready.store(false, Ordering::SeqCst);
        // No receiver (embedded mode) is fine.
        let _ = draining.send(true);
        tracing::info!("draining: no new connections; finishing requests in flight");
    };
    let served = accept(listener, app, &config, drain).await;
    if let Some(answering) = answering
        && let Err(error) = answering.await
    {
        tracing::error!(%error, "answering forwarded requests failed");
    }
    tracing::info!("stopping the actor system");
    let failed = sugang.store().failure().borrow().clone();
    sugang.shutdown().await;
    served.map_err(ServeError::Io)?;
    match failed {
        Some(reason) => Err(ServeError::StorageFailed(reason.to_string())),
        None => Ok(()),
    }
}

/// How long the drain waits for connections to finish their requests.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Accepts connections until `drain` completes, then stops accepting, lets
/// every connection finish the request it is serving, and returns once all
/// are closed.
async fn accept<A>(
    listener: TcpListener,
    app: A,
    config: &ServeConfig,
    drain: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    A: Service<Request<Body>, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_header_size(config.max_header_bytes)
        // Room for a head a little over the limit, so that it is measured
        // exactly; a longer one is refused when the buffer fills.
        .max_buf_size((4 * config.max_header_bytes).max(MIN_BUF_SIZE));
    let http = Arc::new(http);
    // Each connection holds a receiver: `closed()` below waits for the last.
    let (closing, watching) = watch::channel(false);
    let mut drain = std::pin::pin!(drain);
    loop {
        let stream = tokio::select! {
            () = &mut drain => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let limits = ConnectionLimits { body_timeout: config.body_timeout };
        tokio::spawn(connection(stream, http.clone(), app.clone(), watching.clone(), limits));
    }
    drop(listener);
    drop(watching);
    // No receiver left is fine: every connection is already gone.
    let _ = closing.send(true);
    // Bounded: a client that stops reading an answer (or a stream) must not
    // keep the process from exiting, least of all after a storage fault.
    if tokio::time::timeout(DRAIN_DEADLINE, closing.closed()).await.is_err() {
        tracing::warn!(after_s = DRAIN_DEADLINE.as_secs(), "connections still open at the drain deadline: dropped");
    }
    Ok(())
}

/// hyper's smallest allowed read buffer.
const MIN_BUF_SIZE: usize = 8192;

/// What a connection enforces itself (the rest is in the http1 builder).
#[derive(Clone, Copy)]
struct ConnectionLimits {
    /// From a request's head to the end of its body.
    body_timeout: Duration,
}

/// A failed `accept`: a connection reset before it was accepted is nothing;
/// anything else (out of descriptors) is logged, and accepting pauses for a
/// second rather than spinning.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; pausing for 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serves one HTTP/1 connection until the client closes it, a limit closes
/// it, or `closing` turns true (then the request in flight finishes first).
async fn connection<A>(
    stream: TcpStream,
    http: Arc<http1::Builder>,
    app: A,
    mut closing: watch::Receiver<bool>,
    limits: ConnectionLimits,
) where
    A: Service<Request<Body>, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static,
{
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let answered = Arc::new(AtomicBool::new(false));
    let service = {
        let answered = answered.clone();
        service_fn(move |mut request: hyper::Request<Incoming>| {
            answered.store(true, Ordering::Relaxed);
            let deadline = tokio::time::Instant::now() + limits.body_timeout;
            request.extensions_mut().insert(BodyDeadline(deadline));
            app.clone().oneshot(request.map(Body::new))
        })
    };
    let mut conn = http.serve_connection(TokioIo::new(stream), service);
    // Borrowed, not moved: the receiver lives as long as the connection, so
    // the server's drain waits for this request to finish.
    let draining = async {
        // An error means the server is gone: drain as well.
        let _ = closing.wait_for(|closing| *closing).await;
    };
    let served = tokio::select! {
        served = &mut conn => served,
        () = draining => {
            std::pin::Pin::new(&mut conn).graceful_shutdown();
            (&mut conn).await
        }
    };
    match served {
        Ok(()) => {}
        Err(error) if error.is_timeout() => {
            // Headers that did not come in time. A kept-alive connection
            // that simply stayed idle is closed without a word; a client
            // that started a request, or never sent one, hears why.
            let parts = conn.into_parts();
            if !parts.read_buf.is_empty() || !answered.load(Ordering::Relaxed) {
                let mut stream = parts.io.into_inner();
                let answer = async {
                    stream.write_all(header_timeout_response().as_bytes()).await?;
                    stream.shutdown().await
                };
                // A client that does not read either gets a second, not more.
                match tokio::time::timeout(Duration::from_secs(1), answer).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::debug!(%error, "cannot answer a client whose headers timed out"),
                    Err(_) => tracing::debug!("a client whose headers timed out does not read its 408"),
                }
            }
        }
        Err(error) => tracing::debug!(%error, "connection closed with an error"),
    }
}

/// The answer to a client whose headers took too long: 408, problem+json,
/// and the connection closes.
fn header_timeout_response() -> String {
    let body = r#"{"type":"about:blank","title":"Request Timeout","status":408,"detail":"the request headers did not arrive in time"}"#;
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Answers on `listener` while `start` runs (the store opening, sagas being
/// resumed): `GET /health/live` 200, `GET /health/ready` and everything else
/// 503 with Retry-After, every connection closed after its answer. Returns
/// what `start` returned once every such connection is done; the listener
/// then goes to [`serve`], and clients that connected meanwhile wait in its
/// backlog rather than being refused.
pub async fn answer_while_starting<T>(listener: &TcpListener, start: impl Future<Output = T>) -> Result<T, ServeError> {
    // A second handle on the same socket, so the caller keeps its own.
    let starting = TcpListener::from_std(listener_clone(listener)?)?;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let app = axum::Router::new()
        .route("/health/live", axum::routing::get(ops::live))
        .fallback(|| async { ApiError::unavailable("not ready: starting", Duration::from_secs(1)) })
        .layer(middleware::map_response(|mut response: Response| async move {
            response.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
            response
        }));
    let answering = tokio::spawn(async move {
        axum::serve(starting, app).with_graceful_shutdown(async move { drop(started_rx.await) }).await
    });
    let started = start.await;
    drop(started_tx);
    match answering.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "answering while starting failed"),
        Err(e) => tracing::warn!(error = %e, "answering while starting failed"),
    }
    Ok(started)
}

/// A second handle (a duplicated descriptor) on the listening socket.
fn listener_clone(listener: &TcpListener) -> std::io::Result<std::net::TcpListener> {
    use std::os::fd::AsFd;
    let std_listener = std::net::TcpListener::from(listener.as_fd().try_clone_to_owned()?);
    std_listener.set_nonblocking(true)?;
    Ok(std_listener)
}

/// The router with its tower stack. The concurrency limit wraps the whole
/// router, not each route (`Router::layer` would give every route its own),
/// so it is one global bound.
fn app(
    state: AppState,
    config: &ServeConfig,
) -> impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send> + Clone + Send + 'static {
    let router = router()
        .route_layer(middleware::from_fn(ops::track_latency))
        .fallback(|| async { ApiError::NotFound("no such resource".into()) })
        .with_state(state)
        // Inside the body limit, so a replica reads what it forwards under
        // the same limit as a handler would (413 before anything crosses).
        .layer(middleware::from_fn_with_state(config.cluster.clone(), cluster::forward))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(middleware::from_fn_with_state(config.body_limit, check_body_headers))
        .layer(middleware::from_fn_with_state(config.auth.is_open(), crate::origin::loopback_only))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(RequestIds::default()))
                .layer(
                    // No `on_failure`: tower-http would log every 5xx at ERROR, which
                    // under a sick gateway is one line per fail-fast 503 (and 15 % of
                    // the CPU). Handlers log their failures, with the ids, where the
                    // cause is known: 500s at ERROR, domain 503s at DEBUG.
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_request(())
                        .on_response(access_log)
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::x_request_id()),
        );
    let node = config.cluster.as_ref().and_then(|link| match HeaderValue::from_str(link.node()) {
        Ok(node) => Some(node),
        Err(error) => {
            tracing::warn!(node = link.node(), %error, "the node's name cannot be a header: no X-Sugang-Node");
            None
        }
    });
    ServiceBuilder::new()
        // Outermost, so that shed and refused answers say where they come
        // from too; an answer forwarded from the primary keeps its name.
        .map_response(move |mut response: Response| {
            if let Some(node) = &node {
                response.headers_mut().entry(cluster::NODE_HEADER).or_insert_with(|| node.clone());
            }
            response
        })
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(config.max_in_flight.max(1))
        .service(router)
}

/// What the headers say about the body, checked before anyone reads it: a
/// `Content-Length` over `limit` is 413 at once (the body is never read),
/// and a body that is not said to be JSON is 415.
async fn check_body_headers(State(limit): State<usize>, request: Request<Body>, next: Next) -> Response {
    let headers = request.headers();
    let length = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if length.is_some_and(|length| length > limit as u64) {
        return ApiError::PayloadTooLarge.into_response();
    }
    let has_body = length.is_some_and(|length| length > 0) || headers.contains_key(TRANSFER_ENCODING);
    if has_body && !is_json(headers) {
        return ApiError::UnsupportedMediaType(
            "a request body must be JSON: send Content-Type: application/json".into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// The span every request runs in, with its id.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", request_id, method = %request.method(), uri = %request.uri())
}

/// The access log, one line per answer inside the request's span (its id,
/// method and path): successes at DEBUG, refusals (4xx) at INFO so a
/// refused client leaves a trace without a line per enrollment; 5xx are
/// logged by the handlers that know the cause.
fn access_log<B>(response: &Response<B>, latency: Duration, _span: &tracing::Span) {
    let status = response.status().as_u16();
    let ms = latency.as_secs_f64() * 1e3;
    if response.status().is_client_error() {
        tracing::info!(status, ms, "refused");
    } else if !response.status().is_server_error() {
        tracing::debug!(status, ms, "answered");
    }
}

/// Shed or failed in the tower stack: 503 with Retry-After.
async fn overloaded(error: BoxError) -> ApiError {
    if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::unavailable("overloaded: too many requests in flight", Duration::from_secs(1))
    } else {
        ApiError::internal(error)
    }
}

/// Request ids for requests that come without one: a process-wide counter.
#[derive(Clone, Default)]
struct RequestIds {
    next: Arc<AtomicU64>,
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        HeaderValue::from_str(&id.to_string()).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_contracts_limits() {
        let config = ServeConfig::new(Auth::open());
        assert_eq!(config.body_limit, 64 * 1024);
        assert_eq!(config.max_header_bytes, 16 * 1024);
        assert_eq!(config.header_timeout, Duration::from_secs(10));
        assert_eq!(config.body_timeout, Duration::from_secs(10));
    }

    #[test]
    fn the_header_timeout_answer_is_well_formed() {
        let response = header_timeout_response();
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 408 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let problem: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(problem["status"], 408);
    }
}
