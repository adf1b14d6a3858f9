//! Each class of bad input — malformed JSON, wrong types, missing fields,
//! out-of-range numbers, empty and over-long strings, unknown and
//! non-numeric ids, bad query parameters — is a 4xx problem naming the
//! field, and changes nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::spawn_app;

fn long() -> String {
    "x".repeat(201)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_course_bodies_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10000, Some(5)).await;
    let before = app.get(&format!("/courses/{course}")).await.body;

    for raw in ["{", "[]", "\"x\"", "null", "{\"name\": \"a\",}", ""] {
        app.send_raw(Method::POST, "/courses", "application/json", raw.as_bytes().to_vec())
            .await
            .assert_problem(400, None);
    }
    let ok = json!({"name": "a", "teacher": "Hong", "fee": 1});
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = ok.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases: Vec<(Value, &str)> = vec![
        (without("name"), "name"),
        (without("teacher"), "teacher"),
        (without("fee"), "fee"),
        (with("name", json!("")), "name"),
        (with("name", json!("   ")), "name"),
        (with("name", json!(long())), "name"),
        (with("name", json!("a\u{0}b")), "name"),
        (with("name", json!(5)), "name"),
        (with("teacher", json!(["Hong"])), "teacher"),
        (with("fee", json!(-1)), "fee"),
        (with("fee", json!("10")), "fee"),
        (with("fee", json!(1.5)), "fee"),
        (with("fee", json!(null)), "fee"),
        (with("fee", json!(1e20)), "fee"),
        (with("fee", json!(1_000_000_000_001_u64)), "fee"),
        (with("fee", json!(u64::MAX)), "fee"),
        (with("capacity", json!(0)), "capacity"),
        (with("capacity", json!(-3)), "capacity"),
        (with("capacity", json!(1_u64 << 40)), "capacity"),
        (with("minStudents", json!(0)), "minStudents"),
        (with("textBook", json!("")), "textBook"),
        (with("textBook", json!(3)), "textBook"),
    ];
    for (body, field) in cases {
        let reply = app.post("/courses", body.clone()).await;
        assert_eq!(reply.status, 422, "{body} → {reply:?}");
        reply.assert_problem(422, Some(field));
    }
    for (body, field) in [
        (json!({"fee": null}), "fee"),
        (json!({"name": null}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"capacity": 0}), "capacity"),
        (json!({"minStudents": "x"}), "minStudents"),
        (json!({"fee": -5}), "fee"),
    ] {
        app.patch(&format!("/courses/{course}"), body).await.assert_problem(422, Some(field));
    }
    app.patch("/courses/x", json!({"fee": 5})).await.assert_problem(400, Some("id"));

    assert_eq!(app.get(&format!("/courses/{course}")).await.body, before);
    assert_eq!(app.get("/courses").await.body["page"]["totalElements"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_enrollment_bodies_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10000, Some(5)).await;
    let ok = json!({"courseId": course, "student": "Kim"});
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        body
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!({"student": "Kim"}), "courseId"),
        (json!({"courseId": course}), "student"),
        (with("courseId", json!("abc")), "courseId"),
        (with("courseId", json!(0)), "courseId"),
        (with("courseId", json!(-1)), "courseId"),
        (with("courseId", json!(1.5)), "courseId"),
        (with("student", json!("")), "student"),
        (with("student", json!(long())), "student"),
        (with("student", json!(42)), "student"),
        (with("fee", json!(-5)), "fee"),
        (with("payMethod", json!("")), "payMethod"),
        (with("payAccount", json!("")), "payAccount"),
        (with("addr", json!(7)), "addr"),
        (with("telephoneInfo", json!(long())), "telephoneInfo"),
    ];
    for (body, field) in cases {
        let reply = app.post("/classes", body.clone()).await;
        assert_eq!(reply.status, 422, "{body} → {reply:?}");
        reply.assert_problem(422, Some(field));
    }
    app.send_raw(Method::POST, "/classes", "application/json", b"{\"courseId\": 1".to_vec())
        .await
        .assert_problem(400, None);
    app.delete("/classes/abc").await.assert_problem(400, Some("id"));
    app.delete("/classes/0").await.assert_problem(404, None);
    assert_eq!(app.get("/classes").await.body["page"]["totalElements"], 0);
    assert_eq!(app.get(&format!("/courses/{course}")).await.body["studentCount"], 0);
    // Unknown fields are ignored.
    let extra = app.post("/classes", with("favouriteColour", json!("blue"))).await;
    assert_eq!(extra.status, 201, "{extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_name_the_parameter() {
    let app = spawn_app().await;
    for (path, field) in [
        ("/courses?size=0", "size"),
        ("/courses?size=1001", "size"),
        ("/courses?page=-1", "page"),
        ("/courses?page=abc", "page"),
        ("/courses?page=1000000001", "page"),
        ("/classes?courseId=abc", "courseId"),
        ("/classes?courseId=0", "courseId"),
        ("/classes?status=WRONG", "status"),
        ("/payments?applyId=-2", "applyId"),
        ("/deliveries?after=x", "after"),
        ("/mypages?size=100000", "size"),
        ("/notifications?after=-1", "after"),
    ] {
        app.get(path).await.assert_problem(422, Some(field));
    }
    // A seq no command has answered with yet: the log's state refuses it.
    app.get("/courseSchedules?after=999999").await.assert_problem(409, Some("after"));
    assert_eq!(app.get("/courses?size=1000").await.status, 200);
    assert_eq!(app.get("/courses?page=1000000000&size=1000").await.status, 200);
    assert_eq!(app.get("/courses?teacher=").await.status, 200, "an empty filter is no filter");
    assert_eq!(app.get("/courses?unknown=1").await.status, 200);
}
