//! Cluster mode's HTTP side, with NATS replaced by an in-process channel:
//! two real servers, each over its own store, and a `ClusterLink` of the
//! test's that forwards a replica's requests into the primary's
//! `forwarded` inbox (the real primary-side code path). The stores are not
//! replicated here, which is what lets a test tell where a request was
//! served: a course made through the replica exists on the primary only.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use sugang_http::{
    Auth, BoxFuture, ClusterLink, ClusterStatus, ForwardError, ForwardedRequest, ForwardedResponse, NodeRole,
    NodeStatus, Role, StreamStatus, UnitStatus,
};
use tokio::sync::{mpsc, oneshot};

use crate::app::{Inbox, Options, TestApp, spawn_app, spawn_node};

const SECRET: &str = "cluster-secret-cluster-secret-32b";

/// Where a test link sends what it forwards.
type Outbox = mpsc::Sender<(ForwardedRequest, oneshot::Sender<ForwardedResponse>)>;

/// How a test link's `forward` fails, when it is made to.
#[derive(Clone, Copy)]
enum Failure {
    NoPrimary,
    Unreachable,
    TimedOut,
}

/// A node's link, run by the test: its role and readiness are switches,
/// and `forward` puts the request in the primary's inbox and waits for its
/// answer, as the binary's NATS request-reply does.
struct Link {
    node: &'static str,
    primary: AtomicBool,
    ready: AtomicBool,
    to: Mutex<Option<Outbox>>,
    failing: Mutex<Option<Failure>>,
    /// Requests this node forwarded (or tried to).
    forwards: AtomicUsize,
}

impl Link {
    fn new(node: &'static str, primary: bool) -> Arc<Link> {
        Arc::new(Link {
            node,
            primary: AtomicBool::new(primary),
            ready: AtomicBool::new(true),
            to: Mutex::new(None),
            failing: Mutex::new(None),
            forwards: AtomicUsize::new(0),
        })
    }

    fn forwards(&self) -> usize {
        self.forwards.load(Ordering::SeqCst)
    }

    fn fail(&self, failure: Option<Failure>) {
        *self.failing.lock().unwrap() = failure;
    }
}

impl ClusterLink for Link {
    fn node(&self) -> &str {
        self.node
    }

    fn is_primary(&self) -> bool {
        self.primary.load(Ordering::SeqCst)
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn forward(&self, request: ForwardedRequest) -> BoxFuture<'_, Result<ForwardedResponse, ForwardError>> {
        self.forwards.fetch_add(1, Ordering::SeqCst);
        let failing = *self.failing.lock().unwrap();
        let to = self.to.lock().unwrap().clone();
        Box::pin(async move {
            match failing {
                Some(Failure::NoPrimary) => return Err(ForwardError::NoPrimary),
                Some(Failure::Unreachable) => return Err(ForwardError::Unreachable("connection refused".into())),
                Some(Failure::TimedOut) => return Err(ForwardError::TimedOut),
                None => {}
            }
            let to = to.ok_or(ForwardError::NoPrimary)?;
            let (answer, answered) = oneshot::channel();
            to.send((request, answer)).await.map_err(|e| ForwardError::Unreachable(e.to_string()))?;
            match tokio::time::timeout(Duration::from_secs(5), answered).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(ForwardError::Unreachable("the primary dropped the request".into())),
                Err(_) => Err(ForwardError::TimedOut),
            }
        })
    }

    fn status(&self) -> BoxFuture<'_, Result<ClusterStatus, String>> {
        let role = if self.is_primary() { NodeRole::Primary } else { NodeRole::Replica };
        let status = ClusterStatus {
            node: self.node.to_owned(),
            role,
            primary: Some("a".to_owned()),
            lease_ttl_ms: 5000,
            lease_age_ms: Some(120),
            stream: StreamStatus { name: "SUGANG".into(), replicas: 3, last_position: 42, leader: Some("n1".into()) },
            nodes: vec![
                NodeStatus {
                    name: "a".into(),
                    role: NodeRole::Primary,
                    applied_position: 42,
                    lag: 0,
                    heartbeat_age_ms: 80,
                    courses_owned: 3,
                    units: vec![UnitStatus { name: "mypage#1".into(), offset: 41, lag: 1, lease_age_ms: 300 }],
                },
                NodeStatus {
                    name: self.node.into(),
                    role,
                    applied_position: 40,
                    lag: 2,
                    heartbeat_age_ms: 0,
                    courses_owned: 0,
                    units: Vec::new(),
                },
            ],
        };
        Box::pin(async move { Ok(status) })
    }
}

/// A primary `a` and a replica `b` whose link forwards into `a`'s inbox.
struct Pair {
    a: TestApp,
    b: TestApp,
    link_a: Arc<Link>,
    link_b: Arc<Link>,
    /// `a`'s inbox, to put requests in as a peer would.
    into_a: Outbox,
}

async fn pair(secret: Option<&'static str>) -> Pair {
    let options = Options { secret, ..Options::default() };
    let (into_a, inbox_a): (Outbox, Inbox) = mpsc::channel(64);
    let link_a = Link::new("a", true);
    let link_b = Link::new("b", false);
    *link_b.to.lock().unwrap() = Some(into_a.clone());
    let a = spawn_node(options.clone(), Some(link_a.clone()), Some(inbox_a)).await;
    let b = spawn_node(options, Some(link_b.clone()), None).await;
    Pair { a, b, link_a, link_b, into_a }
}

fn course_body(name: &str) -> serde_json::Value {
    json!({"name": name, "teacher": "Hong", "fee": 1000, "textBook": "book", "capacity": 10})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_to_a_replica_is_answered_by_the_primary() {
    let p = pair(Some(SECRET)).await;
    let admin = p.b.token(Role::Admin, "root");
    let made = p.b.send(Method::POST, "/courses", Some(course_body("korean")), Some(&admin)).await;
    assert_eq!(made.status, 201, "{made:?}");
    assert_eq!(made.header("x-sugang-node"), Some("a"), "answered by the primary");
    assert!(made.header("x-sugang-seq").is_some(), "the primary's answer, headers and all");
    let id = made.body["id"].as_u64().expect("an id");
    assert_eq!(p.link_b.forwards(), 1);
    // The course is in the primary's store, not in the replica's.
    let on_a = p.a.send(Method::GET, &format!("/courses/{id}"), None, Some(&admin)).await;
    assert_eq!(on_a.status, 200, "{on_a:?}");
    assert_eq!(on_a.header("x-sugang-node"), Some("a"));
    // A read on the replica is served there (its store has no such course)
    // and is not forwarded.
    let on_b = p.b.send(Method::GET, &format!("/courses/{id}"), None, Some(&admin)).await;
    on_b.assert_problem(404, None);
    assert_eq!(on_b.header("x-sugang-node"), Some("b"));
    let listed = p.b.send(Method::GET, "/courses", None, Some(&admin)).await;
    assert_eq!((listed.status.as_u16(), listed.header("x-sugang-node")), (200, Some("b")));
    assert_eq!(listed.body["page"]["totalElements"], 0);
    assert_eq!(p.link_b.forwards(), 1, "reads are not forwarded");
    // A live actor's state is the primary's: forwarded.
    let breaker = p.b.send(Method::GET, "/admin/breaker", None, Some(&admin)).await;
    assert_eq!((breaker.status.as_u16(), breaker.header("x-sugang-node")), (200, Some("a")));
    assert_eq!(breaker.body["state"], "closed");
    assert_eq!(p.link_b.forwards(), 2);
    // A ticket's stream cannot cross: refused on the replica, not forwarded.
    let stream = p.b.send(Method::GET, "/queue/tickets/1/events", None, Some(&admin)).await;
    stream.assert_problem(503, None);
    assert!(stream.body["detail"].as_str().unwrap().contains("poll"), "{stream:?}");
    assert_eq!(p.link_b.forwards(), 2);
    assert_eq!(p.link_a.forwards(), 0, "the primary forwards nothing");
    // Counted where they were forwarded, with HELP.
    let metrics = p.b.send(Method::GET, "/metrics", None, Some(&admin)).await;
    let text = metrics.body.as_str().expect("Prometheus text");
    assert!(text.contains("# HELP sugang_cluster_forwarded_total "), "{text}");
    assert!(text.contains("sugang_cluster_forwarded_total{outcome=\"answered\"}"), "{text}");
    assert!(text.contains("sugang_cluster_forward_seconds"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_checks_the_token_of_a_forwarded_request() {
    let p = pair(Some(SECRET)).await;
    let forged = Auth::with_secret("another-secret-another-secret-32b").unwrap();
    let forged = forged.issue(Role::Admin, "mallory", Duration::from_secs(60)).unwrap();
    let refused = p.b.send(Method::POST, "/courses", Some(course_body("forged")), Some(&forged)).await;
    refused.assert_problem(401, None);
    assert_eq!(refused.header("x-sugang-node"), Some("a"), "refused by the primary, which checked the token");
    let anonymous = p.b.send(Method::POST, "/courses", Some(course_body("anonymous")), None).await;
    anonymous.assert_problem(401, None);
    assert_eq!(anonymous.header("x-sugang-node"), Some("a"));
    // The role is checked on the primary too: a student registers no course.
    let student = p.b.token(Role::Student, "Kim");
    let forbidden = p.b.send(Method::POST, "/courses", Some(course_body("student's")), Some(&student)).await;
    forbidden.assert_problem(403, None);
    assert_eq!(p.link_b.forwards(), 3);
    let admin = p.a.token(Role::Admin, "root");
    let courses = p.a.send(Method::GET, "/courses", None, Some(&admin)).await;
    assert_eq!(courses.body["page"]["totalElements"], 0, "nothing was made");
    // Put in the primary's inbox directly, as a peer would: the same.
    let bearer = format!("Bearer {forged}");
    let headers = [("authorization", bearer.as_str()), ("content-type", "application/json")];
    let direct = forwarded_to(&p.into_a, "POST", "/courses", &headers).await;
    assert_eq!(direct.status, 401, "{}", String::from_utf8_lossy(&direct.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_at_a_non_primary_is_refused_not_forwarded_again() {
    let p = pair(Some(SECRET)).await;
    // `a` lost the lease after `b` sent it the request; `a` would forward to
    // `b` if it forwarded at all.
    p.link_a.primary.store(false, Ordering::SeqCst);
    let (into_b, mut inbox_b): (Outbox, Inbox) = mpsc::channel(8);
    *p.link_a.to.lock().unwrap() = Some(into_b);
    let admin = p.b.token(Role::Admin, "root");
    let refused = p.b.send(Method::POST, "/courses", Some(course_body("korean")), Some(&admin)).await;
    refused.assert_problem(503, None);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("x-sugang-node"), Some("a"), "refused by the node it reached");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(detail.contains("not the primary") && detail.contains('a'), "{detail}");
    assert_eq!(p.link_a.forwards(), 0, "no second hop");
    assert!(inbox_b.try_recv().is_err(), "nothing reached another node");
    // Its own clients' reads are still served there.
    let own = p.a.send(Method::GET, "/courses", None, Some(&admin)).await;
    assert_eq!((own.status.as_u16(), own.header("x-sugang-node")), (200, Some("a")));
    assert_eq!(p.link_a.forwards(), 0, "reads stay local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_errors_are_503_problems_with_retry_after_and_a_timeout_is_504() {
    let p = pair(Some(SECRET)).await;
    let admin = p.b.token(Role::Admin, "root");
    for (failure, reason) in
        [(Failure::NoPrimary, "no primary"), (Failure::Unreachable, "primary unreachable: connection refused")]
    {
        p.link_b.fail(Some(failure));
        let refused = p.b.send(Method::POST, "/courses", Some(course_body("korean")), Some(&admin)).await;
        refused.assert_problem(503, None);
        assert_eq!(refused.header("retry-after"), Some("1"));
        assert_eq!(refused.header("x-sugang-node"), Some("b"));
        let detail = refused.body["detail"].as_str().unwrap();
        assert!(detail.contains("node b") && detail.contains(reason), "{detail}");
    }
    // Delivered but not answered: the command may have run, so not a 503
    // (which says it did not) but a 504 that says so.
    p.link_b.fail(Some(Failure::TimedOut));
    let unknown = p.b.send(Method::POST, "/courses", Some(course_body("korean")), Some(&admin)).await;
    unknown.assert_problem(504, None);
    assert_eq!(unknown.header("retry-after"), None);
    let detail = unknown.body["detail"].as_str().unwrap();
    assert!(detail.contains("node b") && detail.contains("may or may not"), "{detail}");
    // The primary's inbox gone: unreachable, the same 503.
    p.link_b.fail(None);
    *p.link_b.to.lock().unwrap() = None;
    let refused = p.b.send(Method::PUT, "/admin/gate", Some(json!({"enabled": false})), Some(&admin)).await;
    refused.assert_problem(503, None);
    assert_eq!(p.link_b.forwards(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_before_it_crosses() {
    let p = pair(None).await;
    let mut raw = p.b.raw().await;
    let head = format!(
        "POST /courses HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        p.b.addr
    );
    raw.write(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..5 {
        let _ = raw.write(format!("{:x}\r\n", chunk.len()).as_bytes()).await;
        let _ = raw.write(&chunk).await;
        let _ = raw.write(b"\r\n").await;
    }
    let _ = raw.write(b"0\r\n\r\n").await;
    let heard = raw.hear(Duration::from_secs(5)).await;
    assert_eq!(heard.status, Some(413), "{}", heard.text);
    assert_eq!(p.link_b.forwards(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_checks_a_forwarded_requests_own_host_and_origin_on_the_primary() {
    let p = pair(None).await;
    // Through the replica: the client's loopback Host travels and passes.
    let made = p.b.post("/courses", course_body("korean")).await;
    assert_eq!((made.status.as_u16(), made.header("x-sugang-node")), (201, Some("a")), "{made:?}");
    let host = p.b.addr.to_string();
    let local =
        forwarded_to(&p.into_a, "POST", "/courses", &[("host", &host), ("content-type", "application/json")]).await;
    assert_eq!(local.status, 201, "{}", String::from_utf8_lossy(&local.body));
    // A rebound name or a foreign page is refused by the primary itself.
    let rebound =
        forwarded_to(&p.into_a, "POST", "/courses", &[("host", "evil.example"), ("content-type", "application/json")])
            .await;
    assert_eq!(rebound.status, 403, "{}", String::from_utf8_lossy(&rebound.body));
    let foreign = forwarded_to(
        &p.into_a,
        "POST",
        "/courses",
        &[("host", &host), ("origin", "http://evil.example"), ("content-type", "application/json")],
    )
    .await;
    assert_eq!(foreign.status, 403, "{}", String::from_utf8_lossy(&foreign.body));
    let named = |answer: &ForwardedResponse| {
        answer.headers.iter().find(|(name, _)| name == "x-sugang-node").map(|(_, value)| value.clone())
    };
    assert_eq!(named(&foreign), Some(b"a".to_vec()));
}

/// Puts a course-making request in `inbox` as a peer would, and waits for
/// the answer.
async fn forwarded_to(inbox: &Outbox, method: &str, uri: &str, headers: &[(&str, &str)]) -> ForwardedResponse {
    let request = ForwardedRequest {
        method: method.into(),
        uri: uri.into(),
        headers: headers.iter().map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec())).collect(),
        body: serde_json::to_vec(&course_body("direct")).unwrap(),
    };
    let (answer, answered) = oneshot::channel();
    inbox.send((request, answer)).await.expect("the primary takes forwarded requests");
    tokio::time::timeout(Duration::from_secs(5), answered).await.expect("in time").expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cluster_is_404_embedded_and_the_status_in_cluster_mode() {
    let embedded = spawn_app().await;
    let none = embedded.get("/admin/cluster").await;
    none.assert_problem(404, None);
    assert!(none.body["detail"].as_str().unwrap().contains("not running as a cluster node"));
    assert!(none.header("x-sugang-node").is_none(), "no node header when embedded");

    let p = pair(Some(SECRET)).await;
    let admin = p.b.token(Role::Admin, "root");
    let seen = p.b.send(Method::GET, "/admin/cluster", None, Some(&admin)).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(seen.header("x-sugang-node"), Some("b"), "this node's view, not forwarded");
    assert_eq!(p.link_b.forwards(), 0);
    let body = &seen.body;
    assert_eq!(
        (body["node"].as_str(), body["role"].as_str(), body["primary"].as_str()),
        (Some("b"), Some("replica"), Some("a"))
    );
    assert_eq!((body["leaseTtlMs"].as_u64(), body["leaseAgeMs"].as_u64()), (Some(5000), Some(120)));
    assert_eq!(body["stream"], json!({"name": "SUGANG", "replicas": 3, "lastPosition": 42, "leader": "n1"}));
    assert_eq!(
        body["nodes"][1],
        json!({"name": "b", "role": "replica", "appliedPosition": 40, "lag": 2, "heartbeatAgeMs": 0, "coursesOwned": 0,
            "units": []})
    );
    assert_eq!(body["nodes"][0]["units"], json!([{"name": "mypage#1", "offset": 41, "lag": 1, "leaseAgeMs": 300}]));
    let student = p.b.token(Role::Student, "Kim");
    p.b.send(Method::GET, "/admin/cluster", None, Some(&student)).await.assert_problem(403, None);
    p.b.send(Method::GET, "/admin/cluster", None, None).await.assert_problem(401, None);
    // The operator page has its cluster section on a node, not embedded.
    let page = |app: &TestApp| {
        let client = app.client.clone();
        let url = app.url("/ops?lang=en");
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert!(page(&p.b).await.contains("id=\"cluster-nodes\""));
    assert!(!page(&embedded).await.contains("cluster-nodes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_cluster_link() {
    let p = pair(Some(SECRET)).await;
    assert_eq!(p.b.get("/health/ready").await.status, 200);
    p.link_b.ready.store(false, Ordering::SeqCst);
    let unready = p.b.get("/health/ready").await;
    unready.assert_problem(503, None);
    assert!(unready.body["detail"].as_str().unwrap().contains("cluster node b"), "{unready:?}");
    assert_eq!(p.b.get("/health/live").await.status, 200, "alive all the same");
    p.link_b.ready.store(true, Ordering::SeqCst);
    assert_eq!(p.b.get("/health/ready").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_on_a_replica_waits_for_its_log_instead_of_409() {
    let p = pair(Some(SECRET)).await;
    let admin = p.b.token(Role::Admin, "root");
    // `b`'s log moves only when `b` itself commits: promote it for a moment.
    let commit_on_b = || async {
        p.link_b.primary.store(true, Ordering::SeqCst);
        let made = p.b.send(Method::POST, "/courses", Some(course_body("on b")), Some(&admin)).await;
        p.link_b.primary.store(false, Ordering::SeqCst);
        assert_eq!((made.status.as_u16(), made.header("x-sugang-node")), (201, Some("b")), "{made:?}");
        made.seq()
    };
    let last = commit_on_b().await;
    let waiting = {
        let client = p.b.client.clone();
        let url = p.b.url(&format!("/mypages?after={}", last + 1));
        let admin = admin.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let reply = client.get(url).bearer_auth(admin).send().await.unwrap();
            (reply.status().as_u16(), start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(commit_on_b().await > last);
    let (status, took) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert!(took >= Duration::from_millis(250), "it waited for the log: {took:?}");
    // A seq the log does not reach in time: 503, naming the node.
    let never = p.b.send(Method::GET, &format!("/mypages?after={}", last + 1000), None, Some(&admin)).await;
    never.assert_problem(503, None);
    assert!(never.body["detail"].as_str().unwrap().contains("node b"), "{never:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_stops_answering_forwarded_requests_with_the_server() {
    let mut p = pair(Some(SECRET)).await;
    let admin = p.b.token(Role::Admin, "root");
    let made = p.b.send(Method::POST, "/courses", Some(course_body("before")), Some(&admin)).await;
    assert_eq!(made.status, 201);
    let stopped = tokio::time::timeout(Duration::from_secs(10), p.a.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "the primary drains and stops: {stopped:?}");
    // Its inbox is closed: a peer's request does not go in, and the
    // replica's client hears 503 rather than waiting.
    let (answer, _answered) = oneshot::channel();
    let request = ForwardedRequest { method: "GET".into(), uri: "/courses".into(), headers: vec![], body: vec![] };
    assert!(p.into_a.send((request, answer)).await.is_err(), "the inbox was dropped with the server");
    let after = p.b.send(Method::POST, "/courses", Some(course_body("after")), Some(&admin)).await;
    after.assert_problem(503, None);
    assert_eq!(after.header("x-sugang-node"), Some("b"));
}
