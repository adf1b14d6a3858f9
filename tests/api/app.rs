//! `spawn_app`: the real server over a temporary data directory, small
//! request helpers that return status, headers and JSON together, and a raw
//! TCP client for what reqwest will not send (slow, huge or lying requests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sugang_actors::{Config, Sugang};
use sugang_http::{Auth, ClusterLink, ForwardedRequest, ForwardedResponse, Role, ServeConfig, ServeError};
use sugang_storage::{DiskFaults, Durability};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How a test wants its server.
#[derive(Clone)]
pub struct Options {
    /// A JWT secret: tokens required. None: open.
    pub secret: Option<&'static str>,
    /// Fsync where durability is the point; relaxed elsewhere, for speed.
    pub durability: Durability,
    /// How long a read-your-writes query waits for a read model.
    pub max_wait: Duration,
    pub max_in_flight: usize,
    /// How long a client may take over its headers; None: the contract's 10 s.
    pub header_timeout: Option<Duration>,
    /// How long a client may take over its body; None: the contract's 10 s.
    pub body_timeout: Option<Duration>,
    /// How many seat requests may wait per course behind payments in
    /// progress; None: the default.
    pub park_limit: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            secret: None,
            durability: Durability::Relaxed { flush_every_ms: 50 },
            max_wait: Duration::from_secs(5),
            max_in_flight: 1024,
            header_timeout: None,
            body_timeout: None,
            park_limit: None,
        }
    }
}

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    auth: Auth,
    /// Token used by the plain helpers (an admin's, when secured).
    admin_token: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ServeError>>>,
    /// The journal's injected disk faults, which no route reaches.
    pub disk_faults: Arc<DiskFaults>,
    pub dir: TempDir,
}

/// A response: status, headers and body (`Null` when empty, a string when
/// not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `X-Sugang-Seq`.
    pub fn seq(&self) -> u64 {
        self.header("x-sugang-seq").and_then(|s| s.parse().ok()).expect("a command response carries X-Sugang-Seq")
    }

    /// A problem's `field`.
    pub fn field(&self) -> Option<&str> {
        self.body["field"].as_str()
    }

    /// Asserts a problem+json answer with `status` (and `field`, if given).
    #[track_caller]
    pub fn assert_problem(&self, status: u16, field: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        assert_eq!(self.body["status"].as_u64(), Some(u64::from(status)), "{self:?}");
        assert!(self.body["title"].is_string() && self.body["detail"].is_string() && self.body["type"].is_string());
        if let Some(field) = field {
            assert_eq!(self.field(), Some(field), "{self:?}");
        }
        if status == 503 {
            let retry: u64 = self.header("retry-after").and_then(|r| r.parse().ok()).expect("503 has Retry-After");
            assert!(retry >= 1);
        }
    }
}

/// Starts the real server on 127.0.0.1:0 over a fresh data directory.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    spawn_node(options, None, None).await
}

/// What a cluster node's server receives from the other nodes: requests
/// and the channels their answers go back on.
pub type Inbox = tokio::sync::mpsc::Receiver<(ForwardedRequest, oneshot::Sender<ForwardedResponse>)>;

/// Starts the real server as a cluster node: `cluster` is its link, and
/// `forwarded` the requests other nodes send it (the primary's side).
pub async fn spawn_node(options: Options, cluster: Option<Arc<dyn ClusterLink>>, forwarded: Option<Inbox>) -> TestApp {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = Config::new(dir.path().join("data"));
    config.durability = options.durability;
    config.bus.max_wait = options.max_wait;
    if let Some(limit) = options.park_limit {
        config.park_limit = limit;
    }
    let sugang = Sugang::start(config).await.expect("sugang starts");
    let disk_faults = sugang.disk_faults().clone();
    let auth = options.secret.map_or_else(Auth::open, |secret| Auth::with_secret(secret).expect("a strong secret"));
    let mut serve_config = ServeConfig::new(auth.clone());
    serve_config.max_in_flight = options.max_in_flight;
    if let Some(timeout) = options.header_timeout {
        serve_config.header_timeout = timeout;
    }
    if let Some(timeout) = options.body_timeout {
        serve_config.body_timeout = timeout;
    }
    serve_config.cluster = cluster;
    serve_config.forwarded = forwarded;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(sugang_http::serve(listener, sugang, serve_config, async move {
        let _ = stopped.await;
    }));
    let admin_token =
        options.secret.map(|_| auth.issue(Role::Admin, "root", Duration::from_secs(3600)).expect("a token"));
    TestApp {
        addr,
        client: reqwest::Client::new(),
        auth,
        admin_token,
        shutdown: Some(stop),
        server: Some(server),
        disk_faults,
        dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A token for `sub` in `role` (secured servers only).
    pub fn token(&self, role: Role, sub: &str) -> String {
        self.auth.issue(role, sub, Duration::from_secs(3600)).expect("a token")
    }

    /// Sends a request with an optional JSON body and bearer token.
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>, token: Option<&str>) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        reply(request.send().await.expect("the server answers")).await
    }

    /// Sends a raw body with a content type.
    pub async fn send_raw(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let mut request = self.client.request(method, self.url(path)).header("content-type", content_type).body(body);
        if let Some(token) = &self.admin_token {
            request = request.bearer_auth(token);
        }
        reply(request.send().await.expect("the server answers")).await
    }

    /// Sends a body with no `Content-Type` at all.
    pub async fn send_untyped(&self, method: Method, path: &str, body: Vec<u8>) -> Reply {
        let mut request = self.client.request(method, self.url(path)).body(body);
        if let Some(token) = &self.admin_token {
            request = request.bearer_auth(token);
        }
        reply(request.send().await.expect("the server answers")).await
    }

    /// A raw TCP connection to the server.
    pub async fn raw(&self) -> RawClient {
        RawClient { stream: tokio::net::TcpStream::connect(self.addr).await.expect("the server accepts") }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, self.admin_token.as_deref()).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body), self.admin_token.as_deref()).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, Some(body), self.admin_token.as_deref()).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PATCH, path, Some(body), self.admin_token.as_deref()).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, self.admin_token.as_deref()).await
    }

    /// Registers a course and returns its id.
    pub async fn course(&self, name: &str, teacher: &str, fee: u64, capacity: Option<u64>) -> u64 {
        let mut body = serde_json::json!({"name": name, "teacher": teacher, "fee": fee, "textBook": "book"});
        if let Some(capacity) = capacity {
            body["capacity"] = capacity.into();
        }
        let reply = self.post("/courses", body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        reply.body["id"].as_u64().expect("an id")
    }

    /// Enrolls `student` in `course`.
    pub async fn enroll(&self, course: u64, student: &str) -> Reply {
        self.post("/classes", serde_json::json!({"courseId": course, "student": student, "addr": "Seoul"})).await
    }

    /// Waits for the server to stop by itself (after a storage fault).
    pub async fn stopped(&mut self) -> Result<(), ServeError> {
        match self.server.take() {
            Some(server) => server.await.expect("the server task does not panic"),
            None => Ok(()),
        }
    }

    /// Stops the server (as SIGTERM would) and waits for it to drain.
    pub async fn stop(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(server) => server.await.expect("the server task does not panic"),
            None => Ok(()),
        }
    }
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("a body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Reply { status, headers, body }
}

/// A client that writes bytes as it likes and reads what comes back.
pub struct RawClient {
    stream: tokio::net::TcpStream,
}

/// What a raw client heard: the status (None if the server said nothing),
/// the whole response text, and whether the server then closed the
/// connection.
#[derive(Debug)]
pub struct Heard {
    pub status: Option<u16>,
    pub text: String,
    pub closed: bool,
}

impl RawClient {
    /// Writes `bytes`; an error (the server already closed) is returned, not
    /// a panic: an attacker keeps writing regardless.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await
    }

    /// Reads for at most `within`: the first response, and whether the
    /// connection was closed after it.
    pub async fn hear(&mut self, within: Duration) -> Heard {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut closed = false;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).and_then(|code| code.parse().ok());
        Heard { status, text, closed }
    }
}

/// Polls `check` until it returns true, for at most five seconds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
