//! Running the router: the tower stack around it, readiness, and graceful
//! shutdown.
//!
//! Owns what happens between the socket and a handler: request ids, the
//! request span, the 64 KiB body limit, the global concurrency limit that
//! sheds load (503 + Retry-After, never an unbounded queue), the latency
//! histogram, and the drain on shutdown (readiness 503, in-flight requests
//! finish, then the actor system stops and flushes).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use std::convert::Infallible;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Request};
use axum::middleware;
use axum::response::Response;
use sugang_actors::Sugang;
use tokio::net::TcpListener;
use tower::make::Shared;
use tower::{BoxError, Service, ServiceBuilder};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::{AppState, ops, router};

/// How the front runs.
#[derive(Clone)]
pub struct ServeConfig {
    /// Open (loopback only) or bearer tokens.
    pub auth: Auth,
    /// Requests handled at once; beyond it requests are shed with 503.
    pub max_in_flight: usize,
    /// The largest request body, in bytes (413 beyond).
    pub body_limit: usize,
}

impl ServeConfig {
    /// The defaults: 1024 requests in flight, 64 KiB bodies.
    pub fn new(auth: Auth) -> Self {
        ServeConfig { auth, max_in_flight: 1024, body_limit: 64 * 1024 }
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
}

/// Serves the API on `listener` until `shutdown` completes, then drains:
/// readiness turns 503, no new connection is accepted, requests in flight
/// finish, and the actor system stops (flushing the journal) before this
/// returns.
pub async fn serve(
    listener: TcpListener,
    sugang: Sugang,
    config: ServeConfig,
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
    };
    let app = app(state, &config);
    tracing::info!(%addr, open = config.auth.is_open(), "sugang is listening");
    let drain = async move {
        shutdown.await;
        ready.store(false, Ordering::SeqCst);
        tracing::info!("draining: no new connections; finishing requests in flight");
    };
    let served = axum::serve(listener, Shared::new(app)).with_graceful_shutdown(drain).await;
    tracing::info!("stopping the actor system");
    sugang.shutdown().await;
    served.map_err(ServeError::Io)
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
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(RequestIds::default()))
                .layer(
                    // No `on_failure`: tower-http would log every 5xx at ERROR, which
                    // under a sick gateway is one line per fail-fast 503 (and 15 % of
                    // the CPU). Handlers log their failures, with the ids, where the
                    // cause is known: 500s at ERROR, domain 503s at DEBUG.
                    TraceLayer::new_for_http().make_span_with(request_span).on_failure(()),
                )
                .layer(PropagateRequestIdLayer::x_request_id()),
        );
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(config.max_in_flight.max(1))
        .service(router)
}

/// The span every request runs in, with its id.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", request_id, method = %request.method(), uri = %request.uri())
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
