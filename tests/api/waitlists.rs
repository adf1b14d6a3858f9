//! Registration day over HTTP: "full" is the truth, and waitlists hand a
//! freed seat to the first in line (API.md § Enrollments, § Waitlists).

use reqwest::StatusCode;
use serde_json::json;

use crate::app::{TestApp, eventually, spawn_app};

const DECLINED: &str = "4000000000000002";

/// How many payments this server has in flight at its gateway (a saga
/// charges only once its seat is held).
async fn charging(app: &TestApp) -> u64 {
    app.get("/admin/breaker").await.body["inFlight"].as_u64().unwrap_or(0)
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
    eventually("Kim's saga holds the only seat", || async { charging(&app).await >= 1 }).await;
    let lee = enroll("Lee", None);

    assert_eq!(kim.await.unwrap().unwrap(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(lee.await.unwrap().unwrap(), StatusCode::CREATED, "Lee took the seat Kim's declined payment released");
    let listed = app.get(&format!("/classes?courseId={course}")).await;
    assert_eq!(listed.body["page"]["totalElements"], 1);
    assert_eq!(app.get(&format!("/courses/{course}")).await.body["studentCount"], 1);
    // Every seat is now held by a completed enrollment: full, truly.
    app.enroll(course, "Park").await.assert_problem(409, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_course_takes_a_waitlist_that_hands_a_cancelled_seat_to_the_first_in_line() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/courses",
            json!({"name": "korean", "teacher": "Hong", "fee": 10000, "capacity": 1, "waitlistCapacity": "2"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_eq!(
        (created.body["waitlistCapacity"].as_u64(), created.body["waitlistLength"].as_u64()),
        (Some(2), Some(0))
    );
    let course = created.body["id"].as_u64().unwrap();
    let join = |student: &'static str| {
        let body = json!({"courseId": course, "student": student, "payAccount": "4242424242424242",
                          "addr": "Seoul", "telephoneInfo": "010-1234-5678", "waitlist": true});
        app.post("/classes", body)
    };
    let kim = join("Kim").await;
    assert_eq!(kim.status, StatusCode::CREATED, "a course with a free seat enrolls: {kim:?}");
    let kim_class = kim.body["id"].as_u64().unwrap();

    let lee = join("Lee").await;
    assert_eq!(lee.status, StatusCode::ACCEPTED, "{lee:?}");
    assert_eq!(lee.header("location"), Some("/waitlists/1"));
    assert_eq!(lee.body["status"], "WAITING");
    assert_eq!(lee.body["position"], 1);
    assert_eq!(lee.body["classId"], serde_json::Value::Null);
    assert_eq!(lee.body["_links"]["course"]["href"], format!("/courses/{course}"));
    let again = join("Lee").await;
    assert_eq!((again.status, again.body["id"].as_u64()), (StatusCode::OK, Some(1)), "{again:?}");
    let park = join("Park").await;
    assert_eq!(
        (park.status, park.body["id"].as_u64(), park.body["position"].as_u64()),
        (StatusCode::ACCEPTED, Some(2), Some(2))
    );
    let full = join("Choi").await;
    full.assert_problem(409, None);
    assert!(full.body["detail"].as_str().unwrap_or_default().contains("waitlist"), "{full:?}");
    join("Kim").await.assert_problem(409, None);
    // Without "waitlist", full is still 409.
    app.enroll(course, "Choi").await.assert_problem(409, None);
    let shown = app.get(&format!("/courses/{course}")).await;
    assert_eq!(shown.body["waitlistLength"], 2);
    let waiting = app.get(&format!("/waitlists?courseId={course}&status=WAITING&after={}", park.seq())).await;
    let places: Vec<_> = waiting.body["_embedded"]["waitlists"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| (e["student"].clone(), e["position"].clone()))
        .collect();
    assert_eq!(places, [(json!("Lee"), json!(1)), (json!("Park"), json!(2))], "{waiting:?}");

    // Kim cancels: Lee is enrolled with the stored account.
    let canceled = app.delete(&format!("/classes/{kim_class}")).await;
    assert_eq!(canceled.status, StatusCode::NO_CONTENT);
    eventually("Lee's entry to be enrolled", || async { app.get("/waitlists/1").await.body["status"] == "ENROLLED" })
        .await;
    let lee = app.get("/waitlists/1").await;
    assert_eq!(lee.body["position"], serde_json::Value::Null);
    let class = lee.body["classId"].as_u64().expect("an enrolled entry names its class");
    let enrolled = app.get(&format!("/classes/{class}")).await;
    assert_eq!((enrolled.body["student"].as_str(), enrolled.body["status"].as_str()), (Some("Lee"), Some("COMPLETED")));
    assert_eq!(app.get(&format!("/payments/{class}")).await.body["payStatus"], "APPROVED");
    assert_eq!(app.get("/waitlists/2").await.body["position"], 1, "Park moved up");

    // The list is the read model: ?after= waits for it.
    let last = app.delete("/waitlists/2").await;
    assert_eq!(last.status, StatusCode::NO_CONTENT);
    assert_eq!(app.delete("/waitlists/2").await.status, StatusCode::NO_CONTENT, "leaving again is 204");
    let listed = app.get(&format!("/waitlists?courseId={course}&after={}", last.seq())).await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    let entries = listed.body["_embedded"]["waitlists"].as_array().cloned().unwrap_or_default();
    let statuses: Vec<_> = entries.iter().map(|e| (e["student"].clone(), e["status"].clone())).collect();
    assert_eq!(statuses, [(json!("Lee"), json!("ENROLLED")), (json!("Park"), json!("LEFT"))]);
    assert_eq!(listed.body["page"]["totalElements"], 2);
    let waiting = app.get(&format!("/waitlists?status=WAITING&after={}", last.seq())).await;
    assert_eq!(waiting.body["page"]["totalElements"], 0);
    // Unfiltered and by status alone, the totals are the kept counts and
    // the pages are sought.
    let students = |reply: &crate::app::Reply| -> Vec<String> {
        let entries = reply.body["_embedded"]["waitlists"].as_array().cloned().unwrap_or_default();
        entries.iter().map(|e| e["student"].as_str().unwrap_or_default().to_owned()).collect()
    };
    let all = app.get("/waitlists").await;
    assert_eq!(
        (all.body["page"]["totalElements"].as_u64(), students(&all)),
        (Some(2), vec!["Lee".into(), "Park".into()])
    );
    let second = app.get("/waitlists?size=1&page=1").await;
    assert_eq!((second.body["page"]["totalPages"].as_u64(), students(&second)), (Some(2), vec!["Park".into()]));
    for (status, who) in [("ENROLLED", "Lee"), ("LEFT", "Park")] {
        let only = app.get(&format!("/waitlists?status={status}")).await;
        assert_eq!(
            (only.body["page"]["totalElements"].as_u64(), students(&only)),
            (Some(1), vec![who.to_owned()]),
            "{status}"
        );
    }
    app.get("/waitlists?status=NOPE").await.assert_problem(422, Some("status"));
    app.get("/waitlists/99").await.assert_problem(404, None);
    let notes = app.get(&format!("/notifications?recipient=Lee&after={}", last.seq())).await;
    let kinds: Vec<_> = notes.body["_embedded"]["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|n| n["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(kinds.contains(&"WAITLISTED".to_owned()) && kinds.contains(&"WAITLIST_ENROLLED".to_owned()), "{kinds:?}");

    // waitlistCapacity changes by PATCH, and is checked.
    let patched = app.patch(&format!("/courses/{course}"), json!({"waitlistCapacity": 5})).await;
    assert_eq!(patched.body["waitlistCapacity"], 5, "{patched:?}");
    app.patch(&format!("/courses/{course}"), json!({"waitlistCapacity": -1}))
        .await
        .assert_problem(422, Some("waitlistCapacity"));
    app.post("/courses", json!({"name": "x", "teacher": "Hong", "fee": 1, "waitlistCapacity": 1.5}))
        .await
        .assert_problem(422, Some("waitlistCapacity"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_on_the_waitlist_fails_and_passes_the_seat_on() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/courses",
            json!({"name": "korean", "teacher": "Hong", "fee": 10000, "capacity": 1, "waitlistCapacity": 3}),
        )
        .await;
    let course = created.body["id"].as_u64().unwrap();
    let kim = app.enroll(course, "Kim").await.body["id"].as_u64().unwrap();
    let lee = app
        .post("/classes", json!({"courseId": course, "student": "Lee", "payAccount": DECLINED, "waitlist": true}))
        .await;
    assert_eq!(lee.status, StatusCode::ACCEPTED);
    let park = app.post("/classes", json!({"courseId": course, "student": "Park", "waitlist": true})).await;
    assert_eq!(park.status, StatusCode::ACCEPTED);
    app.delete(&format!("/classes/{kim}")).await;
    eventually("Park's entry to be enrolled", || async { app.get("/waitlists/2").await.body["status"] == "ENROLLED" })
        .await;
    assert_eq!(app.get("/waitlists/1").await.body["status"], "FAILED");
    assert_eq!(app.get(&format!("/courses/{course}")).await.body["studentCount"], 1);
    let seq = app.get("/waitlists?courseId=1").await;
    assert_eq!(seq.status, StatusCode::OK);
    eventually("Lee to be told", || async {
        let notes = app.get("/notifications?recipient=Lee").await;
        notes.body.to_string().contains("WAITLIST_FAILED")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rush_with_waitlists_and_cancellations_leaves_no_seat_empty_and_every_invariant_holds() {
    let app = crate::app::spawn_app_with(crate::app::Options::default()).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sugang"))
        .args(["rush", "--url", &app.url(""), "--students", "80", "--courses", "3", "--capacity", "5"])
        .args(["--concurrency", "8", "--zipf", "1.0", "--tries", "3", "--waitlist", "--waitlist-capacity", "10"])
        .args(["--cancel", "30"])
        .env_remove("SUGANG_RUSH_TOKEN")
        .output()
        .await
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("joined a waitlist"), "{stdout}");
    assert!(stdout.contains("ENROLLED x"), "cancellations promoted entries: {stdout}");
    assert!(stdout.contains("invariants: all hold"), "{stdout}");
}

/// `sugang serve` as a child process over `dir`, on a free loopback port;
/// its address once it listens.
async fn serve(dir: &std::path::Path) -> (tokio::process::Child, std::net::SocketAddr) {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sugang"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--payment-timeout-ms", "10000"])
        .arg("--data-dir")
        .arg(dir)
        .env_remove("SUGANG_JWT_SECRET")
        .env_remove("SUGANG_LISTEN")
        .env_remove("SUGANG_DATA_DIR")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(line)) = stderr.next_line().await {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if event["fields"]["message"] == "sugang is listening" {
                return event["fields"]["addr"].as_str().and_then(|a| a.parse().ok());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("sugang says where it listens");
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_while_the_promoted_student_is_charged_resumes_the_promotion_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = serve(dir.path()).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");
    let post = |path: &str, body: serde_json::Value| client.post(url(path)).json(&body).send();
    let course = post(
        "/courses",
        json!({"name": "korean", "teacher": "Hong", "fee": 10000, "capacity": 1, "waitlistCapacity": 2}),
    )
    .await
    .unwrap();
    assert_eq!(course.status(), StatusCode::CREATED);
    let kim = post("/classes", json!({"courseId": 1, "student": "Kim"})).await.unwrap();
    assert_eq!(kim.status(), StatusCode::CREATED);
    let lee =
        post("/classes", json!({"courseId": 1, "student": "Lee", "payAccount": "4242424242424242", "waitlist": true}))
            .await
            .unwrap();
    assert_eq!(lee.status(), StatusCode::ACCEPTED);

    // The gateway turns slow; Kim cancels. The cancellation's commit gives
    // the seat to Lee, whose charge is then in flight with Kim's refund.
    let slow = client.put(url("/admin/faults/payment")).json(&json!({"latencyMs": 5000})).send().await.unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    let cancel = tokio::spawn(client.delete(url("/classes/1")).send());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let breaker: serde_json::Value = client.get(url("/admin/breaker")).send().await.unwrap().json().await.unwrap();
        if breaker["inFlight"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "Lee's charge never started: {breaker}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    server.kill().await.expect("SIGKILL");
    let _ = cancel.await;

    // Restarted: the promotion resumes from its pending seat (the gateway's
    // latency was not persisted), Lee is enrolled and paid once, Kim's
    // refund is paid.
    let (_server, addr) = serve(dir.path()).await;
    let url = |path: &str| format!("http://{addr}{path}");
    let get = |path: String| {
        let client = client.clone();
        async move { client.get(path).send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let entry = loop {
        let entry = get(url("/waitlists/1")).await;
        if entry["status"] == "ENROLLED" {
            break entry;
        }
        assert!(tokio::time::Instant::now() < deadline, "Lee's promotion did not resume: {entry}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let class = entry["classId"].as_u64().expect("a class");
    let classes = get(url("/classes?courseId=1")).await;
    let shown: Vec<_> = classes["_embedded"]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_u64(), c["student"].clone(), c["status"].clone()))
        .collect();
    assert_eq!(shown, [(Some(1), json!("Kim"), json!("CANCELED")), (Some(class), json!("Lee"), json!("COMPLETED"))]);
    let payments = get(url("/payments")).await;
    let approved: Vec<_> = payments["_embedded"]["payments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["payStatus"] == "APPROVED")
        .map(|p| p["applyId"].as_u64())
        .collect();
    assert_eq!(approved, [Some(class)], "one approved payment, Lee's: {payments}");
    assert_eq!(get(url("/courses/1")).await["studentCount"], 1);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while get(url("/payments/1")).await["payStatus"] != "CANCELED" {
        assert!(tokio::time::Instant::now() < deadline, "Kim's refund was not resumed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_a_waitlist_entry_is_its_students_and_its_courses_teachers() {
    use reqwest::Method;
    use sugang_http::Role;

    let app = crate::app::spawn_app_with(crate::app::Options {
        secret: Some("test-secret-test-secret-32-bytes"),
        ..crate::app::Options::default()
    })
    .await;
    let (hong, lee_teacher) = (app.token(Role::Instructor, "Hong"), app.token(Role::Instructor, "Lee"));
    let (kim, park, admin) =
        (app.token(Role::Student, "Kim"), app.token(Role::Student, "Park"), app.token(Role::Admin, "root"));
    let course = app
        .send(
            Method::POST,
            "/courses",
            Some(json!({"name": "korean", "fee": 1, "capacity": 1, "waitlistCapacity": 2})),
            Some(&hong),
        )
        .await;
    assert_eq!(course.status, StatusCode::CREATED, "{course:?}");
    let enrolled = app.send(Method::POST, "/classes", Some(json!({"courseId": 1})), Some(&park)).await;
    assert_eq!(enrolled.status, StatusCode::CREATED);
    // Kim joins as herself; not as someone else.
    let joined = app.send(Method::POST, "/classes", Some(json!({"courseId": 1, "waitlist": true})), Some(&kim)).await;
    assert_eq!((joined.status, joined.body["student"].as_str()), (StatusCode::ACCEPTED, Some("Kim")));
    app.send(Method::POST, "/classes", Some(json!({"courseId": 1, "student": "Choi", "waitlist": true})), Some(&kim))
        .await
        .assert_problem(403, None);
    // Kim, the course's teacher and an admin read it; Park and another teacher do not.
    for (who, token, status) in [
        ("Kim", &kim, 200),
        ("Hong", &hong, 200),
        ("root", &admin, 200),
        ("Park", &park, 403),
        ("Lee", &lee_teacher, 403),
    ] {
        let read = app.send(Method::GET, "/waitlists/1", None, Some(token)).await;
        assert_eq!(read.status.as_u16(), status, "{who}: {read:?}");
    }
    let listed = app.send(Method::GET, "/waitlists?courseId=1", None, Some(&hong)).await;
    assert_eq!(listed.status, StatusCode::OK);
    app.send(Method::GET, "/waitlists?courseId=1", None, Some(&lee_teacher)).await.assert_problem(403, None);
    app.send(Method::GET, "/waitlists?student=Kim", None, Some(&park)).await.assert_problem(403, None);
    // Only Kim leaves it.
    app.send(Method::DELETE, "/waitlists/1", None, Some(&park)).await.assert_problem(403, None);
    app.send(Method::DELETE, "/waitlists/1", None, Some(&hong)).await.assert_problem(403, None);
    assert_eq!(app.send(Method::DELETE, "/waitlists/1", None, Some(&kim)).await.status, StatusCode::NO_CONTENT);
    app.send(Method::GET, "/waitlists/1", None, None).await.assert_problem(401, None);
}
