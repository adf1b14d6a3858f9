//! `sugang rush` as its user runs it, against a real server: it sells
//! every seat and finds every invariant holding, and it exits non-zero
//! when one does not hold (here: a read model that never catches up); it
//! counts the students left without a seat; and with no server it says so
//! in one line.

use std::time::Duration;

use serde_json::json;

use crate::app::{Options, spawn_app_with};

async fn rush(url: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sugang"))
        .args(["rush", "--url", url, "--students", "60", "--courses", "3", "--capacity", "10"])
        .args(["--concurrency", "8", "--zipf", "1.0", "--tries", "3"])
        .env_remove("SUGANG_RUSH_TOKEN")
        .output()
        .await
        .expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rush_sells_every_seat_and_every_invariant_holds() {
    let app = spawn_app_with(Options::default()).await;
    let output = rush(&app.url("")).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("30 of 30 seats sold"), "{stdout}");
    // 60 students, 30 seats, and each unseated student tried all 3 courses.
    assert!(
        stdout.contains("30 of 60 students enrolled, 30 got no seat (30 found every course they tried full)"),
        "{stdout}"
    );
    assert!(stdout.contains("invariants: all hold"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rush_with_no_server_says_so_in_one_line_and_fails() {
    // A loopback port nobody listens on (any more).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let output = rush(&url).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{output:?}");
    assert_eq!(
        stderr.trim_end(),
        format!("sugang rush: cannot reach {url}: connection refused — is `sugang serve` running?"),
        "one clear line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rush_exits_non_zero_when_a_read_model_never_converges() {
    let app = spawn_app_with(Options { max_wait: Duration::from_millis(300), ..Options::default() }).await;
    assert_eq!(app.put("/admin/faults/subscribers/mypage", json!({"down": true})).await.status, 200);
    let output = rush(&app.url("")).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "my-page is down, yet the rush passed\n{stdout}\n{stderr}");
    assert!(stdout.contains("30 of 30 seats sold"), "the enrollments themselves still work\n{stdout}");
    assert!(stderr.contains("the mypage read model has not reached seq"), "fails for that reason\n{stderr}");
}
