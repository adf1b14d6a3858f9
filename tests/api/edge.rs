//! The edge as an attacker meets it, over raw TCP: a `Content-Length` that
//! lies is 413 at once, headers over 16 KiB are 431, a client that takes too
//! long over its headers or its body is answered 408 and disconnected, and a
//! body that does not say it is JSON is 415. And an open server (no JWT
//! secret) answers only requests addressed to loopback, and accepts changes
//! only from loopback origins: no DNS rebinding, no cross-site forgery.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::app::{Options, spawn_app, spawn_app_with};

/// Long enough for any answer the server gives "at once", far shorter than
/// the 10 s it waits for a slow client.
const AT_ONCE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_over_64_kib_is_413_at_once() {
    let app = spawn_app().await;
    let mut client = app.raw().await;
    let head = "POST /courses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                Content-Length: 1000000000\r\n\r\n{\"";
    client.write(head.as_bytes()).await.expect("the request goes out");
    let started = Instant::now();
    let heard = client.hear(AT_ONCE).await;
    assert_eq!(heard.status, Some(413), "no 413 within {AT_ONCE:?}: {heard:?}");
    assert!(heard.text.contains("application/problem+json"), "{heard:?}");
    assert!(heard.closed, "the connection is closed: the body will never be read ({heard:?})");
    assert!(started.elapsed() < AT_ONCE);
    assert_eq!(app.get("/courses").await.body["page"]["totalElements"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_16_kib_in_all_are_431() {
    let app = spawn_app().await;
    let request = |pad: usize| {
        format!("GET /courses HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Pad: {}\r\n\r\n", "a".repeat(pad))
    };
    // One header of 200 KB, one just over the limit, and the limit split
    // over many headers: all refused.
    let many: String = (0..20).map(|i| format!("X-Pad-{i}: {}\r\n", "b".repeat(900))).collect();
    let split = format!("GET /courses HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{many}\r\n");
    for (what, bytes) in [("200 KB", request(200_000)), ("17 KiB", request(17 * 1024)), ("20 × 900 B", split)] {
        let mut client = app.raw().await;
        // The server may close before the whole request is written.
        let _ = client.write(bytes.as_bytes()).await;
        let heard = client.hear(AT_ONCE).await;
        assert_eq!(heard.status, Some(431), "{what}: {heard:?}");
        assert!(heard.closed, "{what}: {heard:?}");
    }
    // Under the limit is fine.
    let mut client = app.raw().await;
    client.write(request(15 * 1024).as_bytes()).await.expect("the request goes out");
    assert_eq!(client.hear(AT_ONCE).await.status, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slow_with_its_headers_is_408_and_disconnected() {
    let timeout = Duration::from_secs(1);
    let app = spawn_app_with(Options { header_timeout: Some(timeout), ..Options::default() }).await;
    // Half a head, then nothing.
    let mut half = app.raw().await;
    half.write(b"POST /courses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl").await.expect("sent");
    // Nothing at all.
    let mut silent = app.raw().await;
    // A head dripped a byte at a time, each in time, the whole too slow.
    let mut drip = app.raw().await;
    let dripping = async {
        for byte in b"GET /courses HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: yes\r\n\r\n" {
            if drip.write(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drip
    };
    let started = Instant::now();
    let (half, silent, mut drip) = tokio::join!(
        async move { half.hear(timeout + AT_ONCE).await },
        async move { silent.hear(timeout + AT_ONCE).await },
        dripping,
    );
    for (what, heard) in [("half a head", half), ("nothing", silent)] {
        assert_eq!(heard.status, Some(408), "{what}: {heard:?}");
        assert!(heard.closed, "{what}: {heard:?}");
    }
    let drip = drip.hear(AT_ONCE).await;
    assert_eq!(drip.status, Some(408), "a dripped head: {drip:?}");
    assert!(drip.closed, "{drip:?}");
    assert!(started.elapsed() < timeout + 2 * AT_ONCE + Duration::from_secs(5));
    // A prompt client on a fresh connection is served as usual.
    assert_eq!(app.get("/courses").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slow_with_its_body_is_408_and_disconnected() {
    let timeout = Duration::from_secs(1);
    let app = spawn_app_with(Options { body_timeout: Some(timeout), ..Options::default() }).await;
    let body = br#"{"name": "korean", "teacher": "Hong", "fee": 10000}"#;
    let head = format!(
        "POST /courses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // Ten bytes of the body, then nothing.
    let mut stalled = app.raw().await;
    stalled.write(head.as_bytes()).await.expect("sent");
    stalled.write(&body[..10]).await.expect("sent");
    let heard = stalled.hear(timeout + AT_ONCE).await;
    assert_eq!(heard.status, Some(408), "a stalled body: {heard:?}");
    assert!(heard.closed, "{heard:?}");
    // The body a byte every 100 ms: each byte in time, the whole too slow.
    let mut drip = app.raw().await;
    drip.write(head.as_bytes()).await.expect("sent");
    let started = Instant::now();
    for byte in body {
        if drip.write(&[*byte]).await.is_err() || started.elapsed() > timeout + AT_ONCE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let heard = drip.hear(AT_ONCE).await;
    assert_eq!(heard.status, Some(408), "a dripped body: {heard:?}");
    assert!(heard.closed, "{heard:?}");
    assert_eq!(app.get("/courses").await.body["page"]["totalElements"], 0, "nothing was registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_must_say_it_is_json() {
    let app = spawn_app().await;
    let course = br#"{"name": "korean", "teacher": "Hong", "fee": 10000}"#.to_vec();
    app.send_untyped(Method::POST, "/courses", course.clone()).await.assert_problem(415, None);
    for refused in ["text/plain", "application/jsonx", "application/x-www-form-urlencoded", "json"] {
        app.send_raw(Method::POST, "/courses", refused, course.clone()).await.assert_problem(415, None);
    }
    // A body on a route that takes none must still be JSON.
    app.send_untyped(Method::DELETE, "/classes/1", b"x".to_vec()).await.assert_problem(415, None);
    assert_eq!(app.get("/courses").await.body["page"]["totalElements"], 0);
    for accepted in ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/hal+json"]
    {
        let reply = app.send_raw(Method::POST, "/courses", accepted, course.clone()).await;
        assert_eq!(reply.status, 201, "{accepted}: {reply:?}");
    }
    let patched = app.patch("/courses/1", json!({"fee": 1})).await;
    assert_eq!(patched.status, 200, "{patched:?}");
}

/// Sends one request over raw TCP with the given `Host` and extra headers
/// and returns the status heard.
async fn status_of(app: &crate::app::TestApp, method: &str, host: &str, extra: &str, body: &str) -> Option<u16> {
    let mut client = app.raw().await;
    let request = format!(
        "{method} /courses HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write(request.as_bytes()).await.expect("the request goes out");
    client.hear(AT_ONCE).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_server_answers_loopback_only_and_refuses_cross_site_changes() {
    let app = spawn_app().await;
    let course = r#"{"name": "korean", "teacher": "Lee", "fee": 10000}"#;
    // DNS rebinding: the attacker's name, resolved to 127.0.0.1, reaches the
    // socket but names itself in Host.
    assert_eq!(status_of(&app, "GET", "evil.example:8080", "", "").await, Some(403));
    assert_eq!(status_of(&app, "POST", "evil.example", "", course).await, Some(403));
    // Cross-site forgery: a page elsewhere makes the browser post here.
    let evil = "Origin: http://evil.example\r\n";
    assert_eq!(status_of(&app, "POST", "127.0.0.1", evil, course).await, Some(403));
    assert_eq!(status_of(&app, "POST", "localhost:1", "Origin: null\r\n", course).await, Some(403));
    assert_eq!(app.get("/courses").await.body["page"]["totalElements"], 0, "nothing refused was done");
    // Loopback in its spellings, and our own pages' origin, pass.
    assert_eq!(status_of(&app, "GET", "localhost", "", "").await, Some(200));
    assert_eq!(status_of(&app, "GET", "[::1]:8080", evil, "").await, Some(200), "a read is not a change");
    let own = format!("Origin: http://{}\r\n", app.addr);
    assert_eq!(status_of(&app, "POST", &app.addr.to_string(), &own, course).await, Some(201));
    let refused = app.send_raw(Method::GET, "/courses", "application/json", Vec::new()).await;
    assert_eq!(refused.status, 200, "reqwest names the loopback address it connects to");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_tokens_are_the_defence_and_any_host_is_served() {
    let app = spawn_app_with(Options { secret: Some("edge-secret-edge-secret-edge-32b!"), ..Options::default() }).await;
    assert_eq!(status_of(&app, "GET", "sugang.example.edu", "", "").await, Some(200));
    // No token: a forged cross-site post carries none, and is 401.
    let course = r#"{"name": "korean", "teacher": "Lee", "fee": 10000}"#;
    assert_eq!(
        status_of(&app, "POST", "sugang.example.edu", "Origin: http://evil.example\r\n", course).await,
        Some(401)
    );
}
