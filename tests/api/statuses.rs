//! Every status code of the contract, each from the request that earns it,
//! and that a refused command changes nothing. (401 and 403 are in `auth`,
//! 422 mostly in `bad_input`.)

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::app::{Options, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_declined_is_402_and_holds_nothing() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10000, Some(1)).await;
    let declined =
        app.post("/classes", json!({"courseId": course, "student": "Kim", "payAccount": "4000000000000002"})).await;
    declined.assert_problem(402, None);
    assert_eq!(app.get("/classes").await.body["page"]["totalElements"], 0);
    assert_eq!(app.get("/payments").await.body["page"]["totalElements"], 0);
    assert_eq!(app.get(&format!("/courses/{course}")).await.body["studentCount"], 0);
    // The seat was released: someone else takes it.
    assert_eq!(app.enroll(course, "Lee").await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_409() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10000, Some(1)).await;
    assert_eq!(app.enroll(course, "Kim").await.status, 201);
    // Full.
    app.enroll(course, "Lee").await.assert_problem(409, None);
    let roomy = app.course("math", "Hong", 500, Some(10)).await;
    assert_eq!(app.enroll(roomy, "Kim").await.status, 201);
    // Already enrolled.
    app.enroll(roomy, "Kim").await.assert_problem(409, None);
    assert_eq!(app.enroll(roomy, "Lee").await.status, 201);
    // Capacity below studentCount.
    app.patch(&format!("/courses/{roomy}"), json!({"capacity": 1})).await.assert_problem(409, None);
    assert_eq!(app.get(&format!("/courses/{roomy}")).await.body["capacity"], 10);
    // A course with completed enrollments cannot be deleted …
    app.delete(&format!("/courses/{course}")).await.assert_problem(409, None);
    // … until they are canceled.
    assert_eq!(app.delete("/classes/1").await.status, 204);
    let deleted = app.delete(&format!("/courses/{course}")).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert!(deleted.seq() > 0);
    app.get(&format!("/courses/{course}")).await.assert_problem(404, None);
    app.delete(&format!("/courses/{course}")).await.assert_problem(404, None);
    assert_eq!(app.get("/classes?status=COMPLETED").await.body["page"]["totalElements"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_are_404_and_bad_ids_400() {
    let app = spawn_app().await;
    for path in [
        "/courses/7",
        "/classes/7",
        "/payments/7",
        "/deliveries/7",
        "/courseSchedules/7",
        "/mypages/7",
        "/inquiryMypages/7",
        "/notifications/7",
        "/courses/0",
        "/classes/0",
        "/nowhere",
    ] {
        app.get(path).await.assert_problem(404, None);
    }
    for path in ["/courses/abc", "/classes/-1", "/payments/1.5", "/deliveries/99999999999999999999999"] {
        app.get(path).await.assert_problem(400, Some("id"));
    }
    app.delete("/classes/7").await.assert_problem(404, None);
    app.patch("/courses/7", json!({"fee": 1})).await.assert_problem(404, None);
    app.post("/classes", json!({"courseId": 7, "student": "Kim"})).await.assert_problem(404, None);
    app.post("/admin/faults/courses/7/panic", json!({})).await.assert_problem(404, None);
    app.put("/admin/faults/subscribers/nobody", json!({"down": true})).await.assert_problem(404, None);
    assert_eq!(app.get("/classes").await.body["page"]["totalElements"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_64_kib_are_413_and_other_media_415() {
    let app = spawn_app().await;
    let big = format!(r#"{{"name": "{}", "teacher": "Hong", "fee": 1}}"#, "x".repeat(70 * 1024));
    app.send_raw(Method::POST, "/courses", "application/json", big.into_bytes()).await.assert_problem(413, None);
    app.send_raw(Method::POST, "/courses", "text/plain", b"{}".to_vec()).await.assert_problem(415, None);
    assert_eq!(app.get("/courses").await.body["page"]["totalElements"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_unavailable_is_503_with_retry_after_and_opens_the_breaker() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10000, None).await;
    assert_eq!(app.get("/admin/breaker").await.body["state"], "closed");
    let set = app.put("/admin/faults/payment", json!({"down": true})).await;
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(app.get("/admin/faults/payment").await.body, json!({"latencyMs": 0, "failureRate": 0.0, "down": true}));
    for i in 0..6 {
        app.enroll(course, &format!("student {i}")).await.assert_problem(503, None);
    }
    let breaker = app.get("/admin/breaker").await;
    assert_eq!(breaker.body["state"], "open", "{breaker:?}");
    assert!(breaker.body["retryAfterMs"].as_u64().is_some());
    assert!(breaker.body["openedAt"].as_u64().is_some());
    assert_eq!(app.get("/classes").await.body["page"]["totalElements"], 0);
    assert_eq!(app.get(&format!("/courses/{course}")).await.body["studentCount"], 0);
    app.put("/admin/faults/payment", json!({"failureRate": 1.5})).await.assert_problem(422, Some("failureRate"));
    app.put("/admin/faults/payment", json!({"latencyMs": -1})).await.assert_problem(422, Some("latencyMs"));
    assert_eq!(app.get("/admin/faults/payment").await.body["down"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_behind_is_503_then_catches_up() {
    let app = spawn_app_with(Options { max_wait: Duration::from_millis(300), ..Options::default() }).await;
    let course = app.course("korean", "Hong", 10000, None).await;
    let down = app.put("/admin/faults/subscribers/delivery", json!({"down": true})).await;
    assert_eq!(down.status, 200, "{down:?}");
    let enrolled = app.enroll(course, "Kim").await;
    let seq = enrolled.seq();
    app.get(&format!("/deliveries?after={seq}")).await.assert_problem(503, None);
    assert_eq!(app.put("/admin/faults/subscribers/delivery", json!({"down": false})).await.status, 200);
    let mut caught_up = false;
    for _ in 0..20 {
        let reply = app.get(&format!("/deliveries?after={seq}")).await;
        if reply.status == 200 {
            assert_eq!(reply.body["_embedded"]["deliveries"][0]["deliveryStatus"], "STARTED");
            caught_up = true;
            break;
        }
    }
    assert!(caught_up, "the delivery subscriber caught up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_health_metrics_tree_and_a_panicking_course() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health/live").await.status, 200);
    assert_eq!(app.get("/health/ready").await.body["status"], "ready");
    let course = app.course("korean", "Hong", 10000, None).await;
    let armed = app.post(&format!("/admin/faults/courses/{course}/panic"), json!({})).await;
    assert_eq!(armed.status, 204, "{armed:?}");
    let first = app.patch(&format!("/courses/{course}"), json!({"fee": 1})).await;
    assert!(first.status == 200 || first.status == 503, "{first:?}");
    let second = app.patch(&format!("/courses/{course}"), json!({"fee": 2})).await;
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.body["fee"], 2);
    let tree = app.get("/admin/actors").await;
    assert_eq!(tree.body["root"], "root");
    let courses = tree.body["children"].as_array().unwrap().iter().find(|c| c["name"] == "courses").unwrap().clone();
    assert!(courses["supervisor"]["restartsTotal"].as_u64().unwrap() >= 1, "{courses}");
    assert_eq!(tree.body["subscribers"].as_array().unwrap().len(), 4, "delivery, mypage, notifier, waitlist");
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains("sugang_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains(r#"route="/courses/{id}""#), "{text}");
    assert!(text.contains("sugang_actor_restarts_total"), "{text}");
}
