//! The auth matrix of API.md: 401 without a valid token, 403 for the wrong
//! role or the wrong person, 200 for the owner and for admins; the catalog
//! open to all; and an open server refused beyond loopback.

use reqwest::Method;
use serde_json::json;
use sugang_actors::{Config, Sugang};
use sugang_http::{Auth, Role, ServeConfig, ServeError};

use crate::app::{Options, spawn_app_with};

const SECRET: &str = "test-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_matrix() {
    let app = spawn_app_with(Options { secret: Some(SECRET), ..Options::default() }).await;
    let hong = app.token(Role::Instructor, "Hong");
    let lee = app.token(Role::Instructor, "Lee");
    let kim = app.token(Role::Student, "Kim");
    let park = app.token(Role::Student, "Park");
    let admin = app.token(Role::Admin, "root");
    let forged = Auth::with_secret("another").issue(Role::Admin, "root", std::time::Duration::from_secs(60)).unwrap();

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
    let config = ServeConfig::new(Auth::with_secret(SECRET));
    assert!(config.check_listen("0.0.0.0:8080".parse().unwrap()).is_ok());
    // And the data directory was released: it opens again.
    let again = Sugang::start(Config::new(dir.path().join("data"))).await.unwrap();
    again.shutdown().await;
}
