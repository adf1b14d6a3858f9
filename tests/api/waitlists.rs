//! Registration day over HTTP: "full" is the truth, and waitlists hand a
//! freed seat to the first in line (API.md § Enrollments, § Waitlists).

use reqwest::StatusCode;
use serde_json::json;

use crate::app::{TestApp, eventually, spawn_app};

const DECLINED: &str = "4000000000000002";

/// How many enrollment sagas have reserved their seat so far (from
/// `/metrics`: the reserve step's timing count).
async fn reserved(app: &TestApp) -> u64 {
    let metrics = app.get("/metrics").await;
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    text.lines()
        .find(|line| line.starts_with("sugang_saga_step_seconds_count{step=\"reserve\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_pending_payment_passes_the_seat_on_and_nobody_is_told_full_meanwhile() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10_000, Some(1)).await;
    app.put("/admin/faults/payment", json!({"latencyMs": 300})).await;

    let enroll = |student: &'static str, account: Option<&'static str>| {
        let (client, url) = (app.client.clone(), app.url("/classes"));
        let mut body = json!({"courseId": course, "student": student});
        if let Some(account) = account {
            body["payAccount"] = account.into();
        }
        tokio::spawn(async move { client.post(url).json(&body).send().await.map(|r| r.status()) })
    };
    let kim = enroll("Kim", Some(DECLINED));
    eventually("Kim's saga holds the only seat", || async { reserved(&app).await >= 1 }).await;
    let lee = enroll("Lee", None);

    assert_eq!(kim.await.unwrap().unwrap(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(lee.await.unwrap().unwrap(), StatusCode::CREATED, "Lee took the seat Kim's declined payment released");
    let listed = app.get(&format!("/classes?courseId={course}")).await;
    assert_eq!(listed.body["page"]["totalElements"], 1);
    assert_eq!(app.get(&format!("/courses/{course}")).await.body["studentCount"], 1);
    // Every seat is now held by a completed enrollment: full, truly.
    app.enroll(course, "Park").await.assert_problem(409, None);
}
