//! Graceful shutdown under load: requests in flight finish, and every
//! request that was acknowledged is on disk when the server has stopped
//! (fsync durability: here durability is the point).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sugang_actors::{Config, CourseId, EnrollmentId, Sugang};
use sugang_storage::Durability;

use crate::app::{Options, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_loses_no_acknowledged_request() {
    let mut app = spawn_app_with(Options { durability: Durability::Fsync, ..Options::default() }).await;
    let course = app.course("korean", "Hong", 10000, None).await;
    assert_eq!(app.put("/admin/faults/payment", json!({"latencyMs": 600})).await.status, 200);

    // A slow request in flight when the shutdown starts.
    let slow = {
        let (client, url) = (app.client.clone(), app.url("/classes"));
        tokio::spawn(async move {
            client.post(url).json(&json!({"courseId": course, "student": "Kim"})).send().await.map(|r| r.status())
        })
    };

    // Load: writers registering courses until the server goes away.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, url, acked) = (app.client.clone(), app.url("/courses"), acked.clone());
            tokio::spawn(async move {
                for i in 0..500 {
                    let body = json!({"name": format!("course {w}-{i}"), "teacher": "Lee", "fee": i});
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status() == 201 => {
                            let body: serde_json::Value = match r.json().await {
                                Ok(body) => body,
                                Err(_) => break,
                            };
                            acked.lock().unwrap().push(body["id"].as_u64().unwrap());
                        }
                        Ok(r) => assert_eq!(r.status(), 503, "only shedding may refuse a valid course"),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    app.stop().await.expect("the server drains and stops cleanly");
    assert_eq!(slow.await.unwrap().expect("the in-flight request was answered"), 201);
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "the load got through before the shutdown");

    // Every acknowledged write survived the stop.
    let sugang = Sugang::start(Config::new(app.dir.path().join("data"))).await.expect("the store reopens");
    for id in &acked {
        assert!(sugang.course(CourseId::parse(*id).unwrap()).unwrap().is_some(), "course {id} was acknowledged");
    }
    assert!(sugang.enrollment(EnrollmentId::parse(1).unwrap()).unwrap().is_some(), "the slow enrollment");
    sugang.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_503_and_retry_after() {
    let app = spawn_app_with(Options { max_in_flight: 1, ..Options::default() }).await;
    let course = app.course("korean", "Hong", 10000, None).await;
    assert_eq!(app.put("/admin/faults/payment", json!({"latencyMs": 500})).await.status, 200);
    let slow = {
        let (client, url) = (app.client.clone(), app.url("/classes"));
        tokio::spawn(async move {
            client.post(url).json(&json!({"courseId": course, "student": "Kim"})).send().await.map(|r| r.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.get("/courses").await.assert_problem(503, None);
    assert_eq!(slow.await.unwrap().unwrap(), 201);
    assert_eq!(app.get("/courses").await.status, 200);
}

/// While the store opens and the tree starts, the port answers: liveness
/// 200, readiness and everything else 503 with Retry-After, each connection
/// closed after its answer. Once started, the same listener serves the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_while_starting_then_the_same_port_serves() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let client = reqwest::Client::new();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let config = Config::new(dir.path().join("data"));
    let starting = tokio::spawn(async move {
        let start = async move {
            // A start that takes as long as the test wants.
            let _ = released.await;
            Sugang::start(config).await
        };
        let started = sugang_http::answer_while_starting(&listener, start).await;
        (listener, started)
    });

    let ready = client.get(format!("{base}/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.headers()["retry-after"], "1");
    assert_eq!(ready.headers()["connection"], "close");
    assert_eq!(ready.headers()["content-type"], "application/problem+json");
    assert_eq!(client.get(format!("{base}/health/live")).send().await.unwrap().status(), 200);
    let course = json!({"name": "korean", "teacher": "Hong", "fee": 1000});
    assert_eq!(client.post(format!("{base}/courses")).json(&course).send().await.unwrap().status(), 503);

    release.send(()).unwrap();
    let (listener, started) = starting.await.unwrap();
    let sugang = started.expect("the listener answered").expect("sugang starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(sugang_http::serve(
        listener,
        sugang,
        sugang_http::ServeConfig::new(sugang_http::Auth::open()),
        async move { drop(stopped.await) },
    ));
    assert_eq!(client.get(format!("{base}/health/ready")).send().await.unwrap().status(), 200);
    assert_eq!(client.post(format!("{base}/courses")).json(&course).send().await.unwrap().status(), 201);
    stop.send(()).unwrap();
    serving.await.unwrap().expect("a clean stop");
}
