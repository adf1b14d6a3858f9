//! Each class of bad input — malformed JSON, wrong types, missing fields,
//! out-of-range numbers, every bad form of an integer, empty, invisible and
//! over-long strings, unknown and non-numeric ids, bad query parameters — is
//! a 4xx problem naming the field, and changes nothing. And what the seed's
//! httpie client sends (numbers as digit strings) is accepted.

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{TestApp, spawn_app};

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
        ("/classes?status=", "status"),
        ("/notifications?recipientRole=", "recipientRole"),
        ("/notifications?recipientRole=admin", "recipientRole"),
        ("/courses?page=1e0", "page"),
        ("/courses?page=%2B1", "page"),
        ("/courses?size=%2010", "size"),
        ("/courses?size=0x10", "size"),
        ("/classes?courseId=%EF%BC%91", "courseId"),
        ("/classes?courseId=1.0", "courseId"),
        ("/payments?applyId=-0", "applyId"),
        ("/deliveries?after=1e3", "after"),
    ] {
        app.get(path).await.assert_problem(422, Some(field));
    }
    // A seq no command has answered with yet: the log's state refuses it.
    app.get("/courseSchedules?after=999999").await.assert_problem(409, Some("after"));
    assert_eq!(app.get("/courses?size=1000").await.status, 200);
    assert_eq!(app.get("/courses?page=1000000000&size=1000").await.status, 200);
    assert_eq!(app.get("/courses?teacher=").await.status, 200, "an empty filter is no filter");
    assert_eq!(app.get("/courses?unknown=1").await.status, 200);
    assert_eq!(app.get("/courses?page=0&size=007").await.body["page"]["size"], 7, "digits are digits");
    for path in ["/courses/+1", "/courses/%EF%BC%91", "/courses/1e0", "/courses/%201"] {
        app.get(path).await.assert_problem(400, Some("id"));
    }
}

/// Integers as an attacker writes them, as raw JSON: every one is refused.
const BAD_INTEGERS: &[&str] = &[
    "1e3",
    "1E3",
    "1e0",
    "-0.0",
    "1.0",
    "0.5",
    "true",
    "false",
    r#""""#,
    r#"" 1""#,
    r#""1 ""#,
    r#""+1""#,
    r#""-1""#,
    r#""0x10""#,
    r#""1e3""#,
    r#""1.0""#,
    r#""１２""#,
    r#""١""#,
    r#""1_000""#,
    r#""one""#,
    "18446744073709551616",
    r#""99999999999999999999""#,
    "[1]",
    "{}",
];

/// POSTs `body` as it is written, JSON-typed, as the admin.
async fn post_raw(app: &TestApp, path: &str, body: String) -> crate::app::Reply {
    app.send_raw(Method::POST, path, "application/json", body.into_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_form_of_an_integer_is_422_naming_the_field() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10000, Some(5)).await;
    let before = app.get(&format!("/courses/{course}")).await.body;
    for bad in BAD_INTEGERS {
        for field in ["fee", "capacity", "minStudents"] {
            let body = format!(r#"{{"name": "a", "teacher": "Hong", "fee": 1, "{field}": {bad}}}"#);
            let reply = post_raw(&app, "/courses", body.clone()).await;
            assert_eq!(reply.status, 422, "{body} → {reply:?}");
            reply.assert_problem(422, Some(field));
            let patch = format!(r#"{{"{field}": {bad}}}"#);
            let reply = app
                .send_raw(Method::PATCH, &format!("/courses/{course}"), "application/json", patch.clone().into_bytes())
                .await;
            assert_eq!(reply.status, 422, "PATCH {patch} → {reply:?}");
            reply.assert_problem(422, Some(field));
        }
        for field in ["courseId", "fee"] {
            let body = format!(r#"{{"courseId": {course}, "student": "Kim", "{field}": {bad}}}"#);
            let reply = post_raw(&app, "/classes", body.clone()).await;
            assert_eq!(reply.status, 422, "{body} → {reply:?}");
            reply.assert_problem(422, Some(field));
        }
        let reply = app
            .send_raw(
                Method::PUT,
                "/admin/faults/payment",
                "application/json",
                format!(r#"{{"latencyMs": {bad}}}"#).into_bytes(),
            )
            .await;
        reply.assert_problem(422, Some("latencyMs"));
    }
    // Negative where not allowed, as a string or a number.
    for body in [r#"{"name": "a", "teacher": "Hong", "fee": -1}"#, r#"{"name": "a", "teacher": "Hong", "fee": "-1"}"#] {
        post_raw(&app, "/courses", body.to_owned()).await.assert_problem(422, Some("fee"));
    }
    assert_eq!(app.get(&format!("/courses/{course}")).await.body, before);
    assert_eq!(app.get("/courses").await.body["page"]["totalElements"], 1);
    assert_eq!(app.get("/classes").await.body["page"]["totalElements"], 0);
    assert_eq!(app.get("/admin/faults/payment").await.body["latencyMs"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_text_needs_a_visible_character() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10000, None).await;
    for invisible in ["\u{200B}", "\u{200C}", "\u{200D}", "\u{2060}", "\u{FEFF}", " \u{200B} ", "\u{3164}", "\t\n"] {
        for field in ["name", "teacher"] {
            let mut body = json!({"name": "a", "teacher": "Hong", "fee": 1});
            body[field] = json!(invisible);
            app.post("/courses", body).await.assert_problem(422, Some(field));
        }
        app.post("/classes", json!({"courseId": course, "student": invisible}))
            .await
            .assert_problem(422, Some("student"));
        app.patch(&format!("/courses/{course}"), json!({"name": invisible})).await.assert_problem(422, Some("name"));
    }
    assert_eq!(app.get("/courses").await.body["page"]["totalElements"], 1);
    assert_eq!(app.get(&format!("/courses/{course}")).await.body["name"], "korean");
    assert_eq!(app.get("/classes").await.body["page"]["totalElements"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_text_book_on_an_enrollment_must_be_a_string() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10000, None).await;
    for bad in [json!(5), json!(true), json!(["kor_book"]), json!({"title": "x"})] {
        app.post("/classes", json!({"courseId": course, "student": "Kim", "textBook": bad}))
            .await
            .assert_problem(422, Some("textBook"));
    }
    assert_eq!(app.get("/classes").await.body["page"]["totalElements"], 0);
    let sent = app.post("/classes", json!({"courseId": course, "student": "Kim", "textBook": "whatever"})).await;
    assert_eq!(sent.status, 201, "{sent:?}");
    assert_eq!(sent.body["textBook"], "book", "the course's textbook, not the one sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_clients_digit_strings_are_integers() {
    let app = spawn_app().await;
    // `http POST :8080/courses name=korean teacher=Hong fee=10000`
    let created = app.post("/courses", json!({"name": "korean", "teacher": "Hong", "fee": "10000"})).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["fee"], 10000);
    let patched = app.patch("/courses/1", json!({"capacity": "40", "minStudents": "001", "fee": "12000"})).await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!((patched.body["capacity"].as_u64(), patched.body["minStudents"].as_u64()), (Some(40), Some(1)));
    // `http POST :8080/classes courseId=1 student=Kim fee=12000 …`
    let enrolled =
        app.post("/classes", json!({"courseId": "1", "student": "Kim", "fee": "12000", "addr": "Seoul"})).await;
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    assert_eq!(enrolled.body["courseId"], 1);
    let set = app.put("/admin/faults/payment", json!({"latencyMs": "0"})).await;
    assert_eq!(set.status, 200, "{set:?}");
}
