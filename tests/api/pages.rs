//! The web pages: `/`, `/mypage`, `/instructor` and `/ops` answer HTML in
//! the language asked for; the embedded assets are served; the live seat
//! stream pushes a change within a second; and a catalog page over 10,000
//! courses renders fast.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT_LANGUAGE, CONTENT_TYPE};

use crate::app::{TestApp, spawn_app};

/// GETs `path` with `Accept-Language: lang`: status, content type, body.
async fn page(app: &TestApp, path: &str, lang: &str) -> (StatusCode, String, String) {
    let response = app.client.get(app.url(path)).header(ACCEPT_LANGUAGE, lang).send().await.expect("an answer");
    let status = response.status();
    let content_type =
        response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, content_type, response.text().await.expect("a body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_html_in_the_language_asked_for() {
    let app = spawn_app().await;
    for path in ["/", "/mypage", "/instructor", "/ops"] {
        let response = app.client.get(app.url(path)).send().await.expect("an answer");
        let csp = response.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp:?}");
        let (status, content_type, body) = page(&app, path, "ko-KR,ko;q=0.9,en;q=0.8").await;
        assert_eq!(status, 200, "{path}");
        assert!(content_type.starts_with("text/html"), "{path}: {content_type}");
        assert!(body.starts_with("<!DOCTYPE html><html lang=\"ko\">"), "{path}: {}", &body[..80.min(body.len())]);
        assert!(body.contains("마이페이지"), "{path}");
        let (status, _, body) = page(&app, path, "en-US,en;q=0.9").await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains("<html lang=\"en\">") && body.contains("My page"), "{path}");
    }
    // `?lang=` wins over Accept-Language and is kept in a cookie.
    let response = app.client.get(app.url("/?lang=en")).header(ACCEPT_LANGUAGE, "ko").send().await.expect("an answer");
    let cookie = response.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(cookie.starts_with("sugang_lang=en"), "{cookie}");
    assert!(response.text().await.expect("a body").contains("<html lang=\"en\">"));
    let response = app.client.get(app.url("/")).header("cookie", "sugang_lang=en").send().await.expect("an answer");
    assert!(response.text().await.expect("a body").contains("<html lang=\"en\">"));
    // The scripts and the stylesheet come from the binary.
    for (asset, kind) in
        [("common.js", "text/javascript"), ("student.js", "text/javascript"), ("sugang.css", "text/css")]
    {
        let (status, content_type, body) = page(&app, &format!("/assets/{asset}"), "en").await;
        assert_eq!(status, 200, "{asset}");
        assert!(content_type.starts_with(kind) && !body.is_empty(), "{asset}: {content_type}");
    }
    let missing = app.get("/assets/nope.js").await;
    missing.assert_problem(404, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_searches_by_course_and_teacher_and_escapes_what_it_shows() {
    let app = spawn_app().await;
    app.course("Linear algebra", "Park", 10000, Some(30)).await;
    app.course("Korean history", "Hong", 10000, None).await;
    app.course("<script>alert(1)</script>", "Kim", 10000, None).await;
    let (_, _, body) = page(&app, "/?q=ALGEBRA", "en").await;
    assert!(body.contains("Linear algebra") && !body.contains("Korean history"));
    let (_, _, body) = page(&app, "/?q=hong", "en").await;
    assert!(body.contains("Korean history") && !body.contains("Linear algebra"));
    let (_, _, body) = page(&app, "/", "en").await;
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !body.contains("<script>alert(1)"));
    // A bad page number is the first page, not an error.
    let (status, _, body) = page(&app, "/?page=x", "en").await;
    assert_eq!(status, 200);
    assert!(body.contains("Linear algebra"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seat_stream_pushes_a_change_within_a_second() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10000, Some(40)).await;
    let mut stream = app.client.get(app.url("/events/courses")).send().await.expect("the stream opens");
    assert_eq!(stream.status(), 200);
    let content_type = stream.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let enrolled = app.enroll(course, "Kim").await;
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    let answered = Instant::now();
    let wanted = format!("{{\"id\":{course},\"studentCount\":1,");
    let mut seen = String::new();
    while !seen.contains(&wanted) {
        let left = Duration::from_secs(1).saturating_sub(answered.elapsed());
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(other) => panic!("the stream ended: {other:?}; seen {seen:?}"),
            Err(_) => panic!("no seat count within a second of the answer; seen {seen:?}"),
        }
    }
    assert!(seen.contains("event: courses"), "{seen}");
}

/// The target: a catalog page over 10,000 courses renders in under
/// 200 ms on the server. Measured as the best of five, to leave out a
/// neighbour's burst on a shared machine; printed for the record. An
/// unoptimised (debug) build gets three times the budget: it decodes
/// records several times slower than the release binary that serves.
const RENDER_BUDGET: Duration = Duration::from_millis(if cfg!(debug_assertions) { 600 } else { 200 });

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_page_over_ten_thousand_courses_renders_within_budget() {
    const COURSES: usize = 10_000;
    const WRITERS: usize = 32;
    let app = std::sync::Arc::new(spawn_app().await);
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let app = app.clone();
        writers.spawn(async move {
            for i in (w..COURSES).step_by(WRITERS) {
                let body = serde_json::json!({"name": format!("course-{i}"), "teacher": format!("teacher-{}", i % 100),
                    "fee": 10000, "capacity": 40});
                let reply = app.post("/courses", body).await;
                assert_eq!(reply.status, 201, "{reply:?}");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a writer");
    }
    for (what, path) in [("page 1", "/"), ("page 100", "/?page=99"), ("a search", "/?q=course-9999")] {
        let mut best = Duration::MAX;
        let mut body = String::new();
        for _ in 0..5 {
            let started = Instant::now();
            let (status, _, text) = page(&app, path, "en").await;
            best = best.min(started.elapsed());
            assert_eq!(status, 200);
            body = text;
        }
        println!("catalog {what} over {COURSES} courses: {} ms", best.as_millis());
        assert!(body.contains("Courses: "), "{what}");
        assert!(best < RENDER_BUDGET, "catalog {what} took {} ms (budget {:?})", best.as_millis(), RENDER_BUDGET);
    }
    let (_, _, body) = page(&app, "/?q=course-9999", "en").await;
    assert!(body.contains("course-9999") && body.contains("Courses: 1 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_seat_stream_does_not_hold_up_shutdown() {
    let mut app = spawn_app().await;
    let mut stream = app.client.get(app.url("/events/courses")).send().await.expect("the stream opens");
    assert_eq!(stream.status(), 200);
    let stopped = tokio::time::timeout(Duration::from_secs(5), app.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "the server did not drain with a seat stream open: {stopped:?}");
    // The stream was ended by the server, not cut by the test.
    let end =
        tokio::time::timeout(Duration::from_secs(1), async { while let Ok(Some(_)) = stream.chunk().await {} }).await;
    assert!(end.is_ok(), "the stream is still open after shutdown");
}

/// Reads `stream` until its text holds `wanted`, for at most a second;
/// returns what it read.
async fn read_until(stream: &mut reqwest::Response, wanted: &str) -> String {
    let started = Instant::now();
    let mut seen = String::new();
    while !seen.contains(wanted) {
        let left = Duration::from_secs(1).saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(other) => panic!("the stream ended: {other:?}; seen {seen:?}"),
            Err(_) => panic!("{wanted:?} did not come within a second; seen {seen:?}"),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seat_stream_resumes_after_the_rendered_seq_or_the_last_event_id() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10000, Some(40)).await;
    let (_, _, html) = page(&app, "/", "en").await;
    let rendered: u64 = html
        .split("data-seq=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|seq| seq.parse().ok())
        .expect("the catalog says which seq it was rendered at");
    // A seat taken between the render and the connection is not missed.
    let first = app.enroll(course, "Kim").await;
    assert_eq!(first.status, 201, "{first:?}");
    let mut stream =
        app.client.get(app.url(&format!("/events/courses?after={rendered}"))).send().await.expect("the stream opens");
    read_until(&mut stream, &format!("{{\"id\":{course},\"studentCount\":1,")).await;
    // A reconnecting browser's Last-Event-ID wins over the page's `after`:
    // what it already had is not sent again.
    let marker = app.post("/courses", serde_json::json!({"name": "marker", "teacher": "Hong", "fee": 0})).await;
    assert_eq!(marker.status, 201, "{marker:?}");
    let mut resumed = app
        .client
        .get(app.url("/events/courses?after=0"))
        .header("last-event-id", marker.seq().to_string())
        .send()
        .await
        .expect("the stream opens");
    let second = app.enroll(course, "Lee").await;
    assert_eq!(second.status, 201, "{second:?}");
    let seen = read_until(&mut resumed, &format!("{{\"id\":{course},\"studentCount\":2,")).await;
    // Nothing up to the marker is sent again: not the marker course, no id
    // at or before its seq.
    let marker_id = marker.body["id"].as_u64().expect("an id");
    assert!(!seen.contains(&format!("{{\"id\":{marker_id},")), "{seen}");
    let ids: Vec<u64> = seen.lines().filter_map(|line| line.strip_prefix("id: ")?.trim().parse().ok()).collect();
    assert!(!ids.is_empty() && ids.iter().all(|&id| id > marker.seq()), "ids {ids:?} after seq {}", marker.seq());
}
