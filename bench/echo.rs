//! `sugang-echo`: the baseline of `bench/load.sh`. A bare axum server that
//! speaks the same JSON as sugang's `POST /classes` and `GET /courses/{id}`
//! with no domain behind it: it parses the enroll body, answers 201 with a
//! class representation of the same shape (and `Location`, `X-Sugang-Seq`),
//! and answers a fixed course. What sugang does beyond this (actors, the
//! saga, the payment, the fsync'd journal, the tower stack) is what the
//! ratio of the two throughputs measures.
//!
//! Owns nothing of sugang and must not use it: it is the yardstick.
//!
//! Usage: `sugang-echo [ADDR]` (default `127.0.0.1:8081`); stops on SIGINT
//! or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Path;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// The ids the echo hands out, as sugang would (1, 2, 3 …).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The enroll body, as sugang reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnrollBody {
    course_id: u64,
    student: String,
    #[serde(default)]
    pay_method: Option<String>,
}

async fn enroll(Json(body): Json<EnrollBody>) -> Response {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) + 1;
    let location = format!("/classes/{id}");
    let class = json!({
        "id": id,
        "courseId": body.course_id,
        "courseName": "korean",
        "student": body.student,
        "fee": 10000,
        "textBook": "book",
        "status": "COMPLETED",
        "paymentId": id,
        "payMethod": body.pay_method.unwrap_or_else(|| "card".to_owned()),
        "createdAt": "2026-11-22T10:00:00Z",
        "_links": {
            "self": {"href": location},
            "course": {"href": format!("/courses/{}", body.course_id)},
            "payment": {"href": format!("/payments/{id}")},
        },
    });
    let seq = HeaderName::from_static("x-sugang-seq");
    (StatusCode::CREATED, [(header::LOCATION, location), (seq, id.to_string())], Json(class)).into_response()
}

async fn course(Path(id): Path<u64>) -> Json<serde_json::Value> {
    Json(json!({
        "id": id, "name": "korean", "teacher": "Hong-Gil-dong", "fee": 10000, "textBook": "book",
        "capacity": null, "minStudents": 1, "studentCount": 0, "openYn": false,
        "_links": {"self": {"href": format!("/courses/{id}")}},
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    let addr: SocketAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("sugang-echo: bad address {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("sugang-echo: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app = Router::new().route("/classes", post(enroll)).route("/courses/{id}", get(course));
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    match axum::serve(listener, app).with_graceful_shutdown(stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sugang-echo: {e}");
            ExitCode::FAILURE
        }
    }
}
