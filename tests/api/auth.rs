//! The auth matrix of API.md: 401 without a valid token, 403 for the wrong
//! role or the wrong person, 200 for the owner and for admins; the catalog
//! open to all; a person is (role, name), so a student and an instructor of
//! the same name reach nothing of each other's; tokens need `exp` and honour
//! `nbf`, with at most 5 s of leeway; and an open server refused beyond
//! loopback.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};
use sugang_actors::{Config, Sugang};
use sugang_http::{Auth, Role, ServeConfig, ServeError};

use crate::app::{Options, TestApp, eventually, spawn_app_with};

const SECRET: &str = "test-secret-test-secret-32-bytes";

async fn secured() -> TestApp {
    spawn_app_with(Options { secret: Some(SECRET), ..Options::default() }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_matrix() {
    let app = secured().await;
    let hong = app.token(Role::Instructor, "Hong");
    let lee = app.token(Role::Instructor, "Lee");
    let kim = app.token(Role::Student, "Kim");
    let park = app.token(Role::Student, "Park");
    let admin = app.token(Role::Admin, "root");
    let forged = Auth::with_secret("another-secret-another-secret-32")
        .unwrap()
        .issue(Role::Admin, "root", Duration::from_secs(60))
        .unwrap();

    // 401: no token, a forged one, garbage.
    let course = json!({"name": "korean", "fee": 10000});
    app.send(Method::POST, "/courses", Some(course.clone()), None).await.assert_problem(401, None);
    app.send(Method::POST, "/courses", Some(course.clone()), Some(&forged)).await.assert_problem(401, None);
    app.send(Method::POST, "/courses", Some(course.clone()), Some("garbage")).await.assert_problem(401, None);
    let unauthorized = app.send(Method::GET, "/classes", None, None).await;
    unauthorized.assert_problem(401, None);
    assert_eq!(unauthorized.header("www-authenticate"), Some("Bearer"));

    // Instructors create courses as themselves.
    let mine = app.send(Method::POST, "/courses", Some(course.clone()), Some(&hong)).await;
    assert_eq!(mine.status, 201, "{mine:?}");
    assert_eq!(mine.body["teacher"], "Hong");
    let as_other = json!({"name": "x", "teacher": "Lee", "fee": 1});
    app.send(Method::POST, "/courses", Some(as_other), Some(&hong)).await.assert_problem(403, None);
    app.send(Method::POST, "/courses", Some(course.clone()), Some(&kim)).await.assert_problem(403, None);

    // Anyone reads the catalog.
    assert_eq!(app.send(Method::GET, "/courses", None, None).await.status, 200);
    assert_eq!(app.send(Method::GET, "/courses/1", None, None).await.status, 200);
    assert_eq!(app.send(Method::GET, "/courseSchedules", None, None).await.status, 200);
    app.send(Method::GET, "/courses", None, Some(&forged)).await.assert_problem(401, None);

    // Only the owner (or an admin) changes a course.
    let fee = json!({"fee": 12000});
    app.send(Method::PATCH, "/courses/1", Some(fee.clone()), Some(&lee)).await.assert_problem(403, None);
    app.send(Method::PATCH, "/courses/1", Some(fee.clone()), Some(&kim)).await.assert_problem(403, None);
    assert_eq!(app.send(Method::PATCH, "/courses/1", Some(fee.clone()), Some(&hong)).await.status, 200);
    assert_eq!(app.send(Method::PATCH, "/courses/1", Some(json!({"fee": 10000})), Some(&admin)).await.status, 200);

    // Students enroll as themselves.
    let enroll = json!({"courseId": 1});
    app.send(Method::POST, "/classes", Some(json!({"courseId": 1, "student": "Park"})), Some(&kim))
        .await
        .assert_problem(403, None);
    app.send(Method::POST, "/classes", Some(enroll.clone()), Some(&hong)).await.assert_problem(403, None);
    let enrolled = app.send(Method::POST, "/classes", Some(enroll.clone()), Some(&kim)).await;
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    assert_eq!(enrolled.body["student"], "Kim");
    let seq = enrolled.seq();

    // … and read only their own.
    assert_eq!(app.send(Method::GET, "/classes/1", None, Some(&kim)).await.status, 200);
    assert_eq!(app.send(Method::GET, "/classes/1", None, Some(&hong)).await.status, 200, "the course's teacher");
    assert_eq!(app.send(Method::GET, "/classes/1", None, Some(&admin)).await.status, 200);
    app.send(Method::GET, "/classes/1", None, Some(&park)).await.assert_problem(403, None);
    app.send(Method::GET, "/classes/1", None, Some(&lee)).await.assert_problem(403, None);
    let own = app.send(Method::GET, "/classes", None, Some(&kim)).await;
    assert_eq!(own.body["page"]["totalElements"], 1);
    assert_eq!(app.send(Method::GET, "/classes", None, Some(&park)).await.body["page"]["totalElements"], 0);
    app.send(Method::GET, "/classes?student=Kim", None, Some(&park)).await.assert_problem(403, None);
    assert_eq!(app.send(Method::GET, "/classes?courseId=1", None, Some(&hong)).await.body["page"]["totalElements"], 1);
    app.send(Method::GET, "/classes?courseId=1", None, Some(&lee)).await.assert_problem(403, None);
    app.send(Method::GET, "/payments/1", None, Some(&park)).await.assert_problem(403, None);
    assert_eq!(app.send(Method::GET, "/payments/1", None, Some(&kim)).await.status, 200);
    app.send(Method::GET, "/payments", None, Some(&kim)).await.assert_problem(403, None);
    let deliveries = app.send(Method::GET, &format!("/deliveries?after={seq}"), None, Some(&kim)).await;
    assert_eq!(deliveries.body["page"]["totalElements"], 1);
    app.send(Method::GET, "/deliveries?student=Kim", None, Some(&park)).await.assert_problem(403, None);
    let inquiry = app.send(Method::GET, &format!("/inquiryMypages?after={seq}"), None, Some(&kim)).await;
    assert_eq!(inquiry.body["page"]["totalElements"], 1);
    app.send(Method::GET, "/inquiryMypages", None, Some(&hong)).await.assert_problem(403, None);
    let mypages = app.send(Method::GET, &format!("/mypages?after={seq}"), None, Some(&hong)).await;
    assert_eq!(mypages.body["page"]["totalElements"], 1);
    app.send(Method::GET, "/mypages?teacher=Hong", None, Some(&lee)).await.assert_problem(403, None);
    app.send(Method::GET, "/mypages", None, Some(&kim)).await.assert_problem(403, None);
    app.send(Method::GET, "/notifications?recipient=Kim", None, Some(&park)).await.assert_problem(403, None);
    assert_eq!(app.send(Method::GET, "/notifications", None, Some(&kim)).await.status, 200);

    // Admins alone reach /admin and /metrics.
    for path in ["/admin/actors", "/admin/breaker", "/admin/faults/payment", "/metrics"] {
        app.send(Method::GET, path, None, Some(&hong)).await.assert_problem(403, None);
        app.send(Method::GET, path, None, Some(&kim)).await.assert_problem(403, None);
        app.send(Method::GET, path, None, None).await.assert_problem(401, None);
        assert_eq!(app.send(Method::GET, path, None, Some(&admin)).await.status, 200, "{path}");
    }
    let down = json!({"down": true});
    app.send(Method::PUT, "/admin/faults/payment", Some(down), Some(&hong)).await.assert_problem(403, None);

    // Only the student (or an admin) cancels.
    app.send(Method::DELETE, "/classes/1", None, Some(&park)).await.assert_problem(403, None);
    app.send(Method::DELETE, "/classes/1", None, Some(&hong)).await.assert_problem(403, None);
    assert_eq!(app.send(Method::DELETE, "/classes/1", None, Some(&kim)).await.status, 204);
    assert_eq!(app.send(Method::DELETE, "/classes/1", None, Some(&admin)).await.status, 204);

    // Health and the API description need no token.
    assert_eq!(app.send(Method::GET, "/health/ready", None, None).await.status, 200);
    assert_eq!(app.send(Method::GET, "/openapi.json", None, None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_server_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let sugang = Sugang::start(Config::new(dir.path().join("data"))).await.unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let refused = sugang_http::serve(listener, sugang, ServeConfig::new(Auth::open()), async {}).await;
    assert!(matches!(refused, Err(ServeError::OpenBeyondLoopback(_))), "{refused:?}");
    assert!(refused.unwrap_err().to_string().contains("JWT secret"));
    // With a secret the same address is fine.
    let config = ServeConfig::new(Auth::with_secret(SECRET).unwrap());
    assert!(config.check_listen("0.0.0.0:8080".parse().unwrap()).is_ok());
    // And the data directory was released: it opens again.
    let again = Sugang::start(Config::new(dir.path().join("data"))).await.unwrap();
    again.shutdown().await;
}

/// Ids of the `_embedded.<name>` items of a collection.
fn ids(reply: &Value, name: &str) -> Vec<u64> {
    reply["_embedded"][name]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["id"].as_u64()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_is_a_role_and_a_name() {
    let app = secured().await;
    let instructor_hong = app.token(Role::Instructor, "Hong");
    let student_hong = app.token(Role::Student, "Hong");
    let student_park = app.token(Role::Student, "Park");
    let instructor_park = app.token(Role::Instructor, "Park");
    let admin = app.token(Role::Admin, "root");

    let created = app
        .send(
            Method::POST,
            "/courses",
            Some(json!({"name": "korean", "fee": 10000, "capacity": 5})),
            Some(&instructor_hong),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    // A student named Hong is not the instructor Hong: no change, no delete,
    // no instructor's view, no enrollment list of the course.
    for (method, path, body) in [
        (Method::PATCH, "/courses/1", Some(json!({"fee": 1, "capacity": 1}))),
        (Method::DELETE, "/courses/1", None),
        (Method::GET, "/mypages/1", None),
    ] {
        app.send(method.clone(), path, body, Some(&student_hong)).await.assert_problem(403, None);
    }
    app.send(Method::GET, "/mypages?teacher=Hong", None, Some(&student_hong)).await.assert_problem(403, None);
    let course = app.send(Method::GET, "/courses/1", None, None).await;
    assert_eq!((course.body["fee"].as_u64(), course.body["capacity"].as_u64()), (Some(10000), Some(5)), "{course:?}");

    // Student Park enrolls; instructor Park is someone else.
    let enrolled =
        app.send(Method::POST, "/classes", Some(json!({"courseId": 1, "addr": "Seoul"})), Some(&student_park)).await;
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    let seq = enrolled.seq();
    // An instructor may not enroll as a student of the same name either.
    app.send(Method::POST, "/classes", Some(json!({"courseId": 1, "student": "Park"})), Some(&instructor_park))
        .await
        .assert_problem(403, None);
    for path in [
        "/classes/1".to_owned(),
        "/payments/1".to_owned(),
        "/payments?applyId=1".to_owned(),
        format!("/deliveries/1?after={seq}"),
        format!("/inquiryMypages/1?after={seq}"),
        "/deliveries?student=Park".to_owned(),
        "/inquiryMypages?student=Park".to_owned(),
        "/classes?student=Park".to_owned(),
    ] {
        let reply = app.send(Method::GET, &path, None, Some(&instructor_park)).await;
        assert_eq!(reply.status, 403, "instructor Park read {path}: {reply:?}");
    }
    app.send(Method::DELETE, "/classes/1", None, Some(&instructor_park)).await.assert_problem(403, None);
    let class = app.send(Method::GET, "/classes/1", None, Some(&student_park)).await;
    assert_eq!(class.body["status"], "COMPLETED", "{class:?}");
    let of_course = app.send(Method::GET, "/classes?courseId=1", None, Some(&student_hong)).await;
    assert_eq!(of_course.body["page"]["totalElements"], 0, "a student lists only their own: {of_course:?}");
    // The owners themselves, and admins, still reach all of it.
    assert_eq!(app.send(Method::GET, "/classes/1", None, Some(&instructor_hong)).await.status, 200);
    for path in
        ["/payments/1".to_owned(), format!("/deliveries/1?after={seq}"), format!("/inquiryMypages/1?after={seq}")]
    {
        assert_eq!(app.send(Method::GET, &path, None, Some(&student_park)).await.status, 200, "{path}");
        assert_eq!(app.send(Method::GET, &path, None, Some(&admin)).await.status, 200, "{path}");
    }
    assert_eq!(
        app.send(Method::GET, &format!("/mypages/1?after={seq}"), None, Some(&instructor_hong)).await.status,
        200
    );
    assert_eq!(app.send(Method::DELETE, "/classes/1", None, Some(&student_park)).await.status, 204);
    let patched = app.send(Method::PATCH, "/courses/1", Some(json!({"fee": 9000})), Some(&instructor_hong)).await;
    assert_eq!(patched.status, 200, "{patched:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_addressed_to_a_role_and_a_name() {
    let app = secured().await;
    let instructor_hong = app.token(Role::Instructor, "Hong");
    let student_hong = app.token(Role::Student, "Hong");
    let admin = app.token(Role::Admin, "root");
    let created =
        app.send(Method::POST, "/courses", Some(json!({"name": "korean", "fee": 10000})), Some(&instructor_hong)).await;
    assert_eq!(created.status, 201, "{created:?}");
    // Student Hong enrolls in instructor Hong's course: the student hears of
    // the enrollment, the instructor that the course opens.
    let enrolled = app.send(Method::POST, "/classes", Some(json!({"courseId": 1})), Some(&student_hong)).await;
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    let seq = enrolled.seq();

    // Enrolled, paid, shipped (the shipment's event comes from the delivery
    // subscriber, after the answer), and the course opened.
    let everything = format!("/notifications?after={seq}&size=100");
    eventually("four notifications", || async {
        app.send(Method::GET, &everything, None, Some(&admin)).await.body["page"]["totalElements"] == 4
    })
    .await;
    let all = app.send(Method::GET, &everything, None, Some(&admin)).await;
    let items = all.body["_embedded"]["notifications"].as_array().expect("notifications").clone();
    let of = |role: &str| -> Vec<u64> {
        items.iter().filter(|n| n["recipientRole"] == role).filter_map(|n| n["id"].as_u64()).collect()
    };
    let (to_student, to_instructor) = (of("student"), of("instructor"));
    assert!(!to_student.is_empty() && !to_instructor.is_empty(), "{all:?}");
    assert_eq!(to_student.len() + to_instructor.len(), items.len(), "every notification has a recipientRole");
    assert!(items.iter().all(|n| n["recipient"] == "Hong"), "{all:?}");
    let opened = items.iter().find(|n| n["kind"] == "COURSE_OPENED").expect("the course opened");
    assert_eq!(opened["recipientRole"], "instructor");

    // Each Hong lists exactly their own …
    let app = &app;
    let listed = |token: &str, query: &str| {
        let (path, token) = (format!("/notifications?after={seq}&size=100{query}"), token.to_owned());
        async move { app.send(Method::GET, &path, None, Some(&token)).await }
    };
    assert_eq!(ids(&listed(&student_hong, "").await.body, "notifications"), to_student);
    assert_eq!(ids(&listed(&instructor_hong, "").await.body, "notifications"), to_instructor);
    assert_eq!(ids(&listed(&student_hong, "&recipient=Hong").await.body, "notifications"), to_student);
    // … may not ask for the other role's …
    listed(&student_hong, "&recipientRole=instructor").await.assert_problem(403, None);
    listed(&instructor_hong, "&recipient=Hong&recipientRole=student").await.assert_problem(403, None);
    listed(&student_hong, "&recipientRole=janitor").await.assert_problem(422, Some("recipientRole"));
    // … nor read one of them by id.
    for id in &to_student {
        app.send(Method::GET, &format!("/notifications/{id}"), None, Some(&instructor_hong))
            .await
            .assert_problem(403, None);
        assert_eq!(app.send(Method::GET, &format!("/notifications/{id}"), None, Some(&student_hong)).await.status, 200);
    }
    for id in &to_instructor {
        app.send(Method::GET, &format!("/notifications/{id}"), None, Some(&student_hong))
            .await
            .assert_problem(403, None);
        let mine = app.send(Method::GET, &format!("/notifications/{id}"), None, Some(&instructor_hong)).await;
        assert_eq!(mine.body["recipientRole"], "instructor", "{mine:?}");
    }
    // Admins filter by person.
    assert_eq!(ids(&listed(&admin, "&recipient=Hong&recipientRole=student").await.body, "notifications"), to_student);
    assert_eq!(ids(&listed(&admin, "&recipientRole=instructor").await.body, "notifications"), to_instructor);
}

/// Seconds since the epoch.
fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// A token with hand-written claims, signed with the server's secret.
fn token_with(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("a token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_need_exp_and_honour_nbf_with_five_seconds_of_leeway() {
    let app = secured().await;
    let now = now();
    let student = |extra: Value| {
        let mut claims = json!({"sub": "Kim", "role": "student"});
        claims.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
        token_with(claims)
    };
    for (what, token) in [
        ("no exp", student(json!({}))),
        ("expired 10 s ago", student(json!({"exp": now - 10}))),
        ("expired 50 s ago", student(json!({"exp": now - 50}))),
        ("valid from in 30 s", student(json!({"exp": now + 3600, "nbf": now + 30}))),
        ("valid from in an hour", student(json!({"exp": now + 7200, "nbf": now + 3600}))),
    ] {
        let reply = app.send(Method::GET, "/classes", None, Some(&token)).await;
        assert_eq!(reply.status, 401, "{what}: {reply:?}");
    }
    for (what, token) in [
        ("expired 1 s ago (clock skew)", student(json!({"exp": now - 1}))),
        ("valid from in 1 s (clock skew)", student(json!({"exp": now + 3600, "nbf": now + 1}))),
        ("valid since a minute", student(json!({"exp": now + 3600, "nbf": now - 60}))),
    ] {
        let reply = app.send(Method::GET, "/classes", None, Some(&token)).await;
        assert_eq!(reply.status, 200, "{what}: {reply:?}");
    }
}
