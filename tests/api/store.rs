//! `sugang store verify` and `sugang store backup` on a store the real
//! server wrote, and a damaged store refused by both `verify` and `serve`.

use std::process::{Command, Output};

use crate::app::{Options, spawn_app_with};

fn sugang(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sugang"))
        .args(args)
        .env_remove("SUGANG_JWT_SECRET")
        .env_remove("SUGANG_DATA_DIR")
        .env_remove("SUGANG_URL")
        .output()
        .expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_backup_a_stopped_store_and_refuse_a_damaged_one() {
    let mut app = spawn_app_with(Options { durability: sugang_storage::Durability::Fsync, ..Options::default() }).await;
    let course = app.course("korean", "Hong", 10_000, Some(40)).await;
    for n in 0..12 {
        assert_eq!(app.enroll(course, &format!("Student-{n}")).await.status, 201);
    }
    let canceled = app.get("/classes?student=Student-3").await.body["_embedded"]["classes"][0]["id"].as_u64().unwrap();
    assert_eq!(app.delete(&format!("/classes/{canceled}")).await.status, 204);
    app.stop().await.expect("a clean stop");
    let data = app.dir.path().join("data");
    let data = data.to_str().unwrap();

    let verified = sugang(&["store", "verify", "--data-dir", data]);
    assert!(verified.status.success(), "{verified:?}");
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(said.contains("healthy") && said.contains("events"), "{said}");

    // A backup of the stopped store is a store of its own, with everything.
    let copy = app.dir.path().join("copy");
    let backed_up = sugang(&["store", "backup", "--data-dir", data, "--to", copy.to_str().unwrap()]);
    assert!(backed_up.status.success(), "{backed_up:?}");
    let again = sugang(&["store", "backup", "--data-dir", data, "--to", copy.to_str().unwrap()]);
    assert!(!again.status.success(), "a backup never writes over a directory that holds files");
    let verified_copy = sugang(&["store", "verify", "--data-dir", copy.to_str().unwrap()]);
    assert!(verified_copy.status.success(), "{verified_copy:?}");
    {
        let restored = sugang_actors::Sugang::start(sugang_actors::Config::new(&copy)).await.expect("the copy starts");
        let all = sugang_actors::EnrollmentFilter::default();
        let page = sugang_actors::PageRequest { number: 0, size: 100 };
        let enrollments = restored.enrollments(&all, page).unwrap();
        assert_eq!(enrollments.total, 12, "every enrollment is in the copy");
        let canceled_in_copy = enrollments.items.iter().filter(|e| e.id.get() == canceled).count();
        assert_eq!(canceled_in_copy, 1);
        restored.shutdown().await;
    }

    // A watermark zeroed: verify and serve both refuse, with one line.
    std::fs::write(app.dir.path().join("data/sugang.watermark"), [0u8; 16]).unwrap();
    let damaged = sugang(&["store", "verify", "--data-dir", data]);
    assert!(!damaged.status.success(), "{damaged:?}");
    let stderr = String::from_utf8_lossy(&damaged.stderr);
    assert!(stderr.contains("damaged") && stderr.contains("sugang.watermark"), "{stderr}");
    let serve = sugang(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data]);
    assert!(!serve.status.success(), "{serve:?}");
    assert!(String::from_utf8_lossy(&serve.stderr).contains("damaged"), "{serve:?}");
}

#[test]
fn backup_of_a_store_in_use_asks_for_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = sugang_storage::Store::open(dir.path(), sugang_storage::StoreOptions::default()).unwrap();
    let to = dir.path().join("copy");
    let output = sugang(&["store", "backup", "--data-dir", dir.path().to_str().unwrap(), "--to", to.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--url"), "{output:?}");
    drop(store);
}

/// Fail-stop at the service: a failed journal write refuses the request,
/// turns readiness 503, drains, and `serve` ends with the reason, so that the
/// process exits non-zero for its supervisor to restart it from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_fault_drains_the_server_and_says_why() {
    let mut app = spawn_app_with(Options { durability: sugang_storage::Durability::Fsync, ..Options::default() }).await;
    let course = app.course("korean", "Hong", 10_000, Some(40)).await;
    assert_eq!(app.enroll(course, "Kim").await.status, 201);
    assert_eq!(app.get("/health/ready").await.status, 200);

    // The next group fails: the enrollment's own, or a subscriber's just
    // before it (then the server is already draining, and the request is
    // refused, or finds the listener closed).
    app.disk_faults.fail_next_writes(1);
    let body = serde_json::json!({"courseId": course, "student": "Lee"});
    match app.client.post(app.url("/classes")).json(&body).send().await {
        Ok(refused) => assert!(refused.status().is_server_error(), "{refused:?}"),
        Err(e) => assert!(e.is_connect() || e.is_request(), "{e}"),
    }
    match tokio::time::timeout(std::time::Duration::from_secs(20), app.stopped()).await {
        Ok(Err(error @ sugang_http::ServeError::StorageFailed(_))) => {
            assert!(error.to_string().contains("injected write fault"), "{error}")
        }
        other => panic!("expected the server to stop with the storage fault, got {other:?}"),
    }
}

/// A running store is backed up by the server that holds it: `sugang store
/// backup --url` asks it (POST /admin/backup), and the copy opens with every
/// acknowledged enrollment while the original keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_of_a_running_store_through_the_server() {
    let app = spawn_app_with(Options { durability: sugang_storage::Durability::Fsync, ..Options::default() }).await;
    let course = app.course("korean", "Hong", 10_000, Some(40)).await;
    for n in 0..7 {
        assert_eq!(app.enroll(course, &format!("Student-{n}")).await.status, 201);
    }
    let data = app.dir.path().join("data");
    let copy = app.dir.path().join("running-copy");
    let url = app.url("");
    let output = sugang(&[
        "store",
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        copy.to_str().unwrap(),
        "--url",
        &url,
    ]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(app.enroll(course, "After-the-backup").await.status, 201, "the original keeps serving");

    let relative = app.post("/admin/backup", serde_json::json!({"to": "relative/dir"})).await;
    relative.assert_problem(422, Some("to"));
    let taken = app.post("/admin/backup", serde_json::json!({"to": copy.to_str().unwrap()})).await;
    taken.assert_problem(409, Some("to"));
    let inside = app.post("/admin/backup", serde_json::json!({"to": data.join("inside").to_str().unwrap()})).await;
    inside.assert_problem(409, Some("to"));
    assert!(!data.join("inside").exists(), "nothing is written inside the data directory");

    let restored = sugang_actors::Sugang::start(sugang_actors::Config::new(&copy)).await.expect("the copy starts");
    let page = sugang_actors::PageRequest { number: 0, size: 100 };
    let enrollments = restored.enrollments(&sugang_actors::EnrollmentFilter::default(), page).unwrap();
    assert_eq!(enrollments.total, 7, "the copy holds what was acknowledged before it");
    restored.shutdown().await;
}
