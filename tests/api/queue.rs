//! The waiting room over HTTP (API.md § The waiting room): `POST /classes`
//! needs an admission of the same student while the gate is on (428
//! without, or with a wrong one), one ticket per student with the same place
//! on asking again, the ticket's stream, the gate's settings and live
//! figures, and who may do what.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sugang_http::Role;

use crate::app::{Options, Reply, TestApp, eventually, spawn_app, spawn_app_with};

fn rfc3339_in(secs: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    time_of(now + secs)
}

/// Unix seconds as RFC 3339 UTC, without a date library in the tests.
fn time_of(unix: i64) -> String {
    let (days, rem) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

async fn take(app: &TestApp, student: &str) -> Reply {
    app.post("/queue/tickets", json!({"student": student})).await
}

/// Polls the ticket until it is admitted; returns its admission token.
async fn admitted(app: &TestApp, id: u64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = app.get(&format!("/queue/tickets/{id}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        if reply.body["status"] == "ADMITTED" {
            return reply.body["admission"].as_str().expect("an admitted ticket's token").to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "ticket {id} was not admitted in time: {reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn enroll_with(app: &TestApp, course: u64, student: &str, admission: Option<&str>) -> Reply {
    let mut request =
        app.client.post(app.url("/classes")).json(&json!({"courseId": course, "student": student, "addr": "Seoul"}));
    if let Some(token) = admission {
        request = request.header("X-Sugang-Admission", token);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Reply { status, headers, body }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_gate_on_an_enrollment_needs_an_admission_of_the_same_student() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10_000, Some(10)).await;
    assert_eq!(enroll_with(&app, course, "Before", None).await.status, StatusCode::CREATED, "the gate is off at first");

    let gate = app.put("/admin/gate", json!({"enabled": true, "admitPerSecond": 1000, "admissionTtlSecs": 600})).await;
    assert_eq!(gate.status, StatusCode::OK, "{gate:?}");
    assert_eq!((gate.body["enabled"].as_bool(), gate.body["admitPerSecond"].as_u64()), (Some(true), Some(1000)));

    let refused = enroll_with(&app, course, "Kim", None).await;
    refused.assert_problem(428, None);
    assert!(refused.body["detail"].as_str().unwrap().contains("/queue/tickets"), "{refused:?}");
    enroll_with(&app, course, "Kim", Some("not-a-token")).await.assert_problem(428, None);
    enroll_with(&app, course, "Kim", Some("1.99999999999999.00")).await.assert_problem(428, None);

    let kim = take(&app, "Kim").await;
    assert_eq!(kim.status, StatusCode::CREATED, "{kim:?}");
    let kim_id = kim.body["id"].as_u64().unwrap();
    assert_eq!(kim.header("location"), Some(format!("/queue/tickets/{kim_id}").as_str()));
    let lee_id = take(&app, "Lee").await.body["id"].as_u64().unwrap();
    let (kim_token, lee_token) = (admitted(&app, kim_id).await, admitted(&app, lee_id).await);

    let shared = enroll_with(&app, course, "Kim", Some(&lee_token)).await;
    shared.assert_problem(428, None);
    assert_eq!(app.get("/classes?student=Kim").await.body["page"]["totalElements"], 0, "a refusal changes nothing");
    assert_eq!(enroll_with(&app, course, "Kim", Some(&kim_token)).await.status, StatusCode::CREATED);
    assert_eq!(enroll_with(&app, course, "Lee", Some(&lee_token)).await.status, StatusCode::CREATED);

    let off = app.put("/admin/gate", json!({"enabled": false})).await;
    assert_eq!((off.status, off.body["admitPerSecond"].as_u64()), (StatusCode::OK, Some(1000)), "other fields kept");
    assert_eq!(enroll_with(&app, course, "After", None).await.status, StatusCode::CREATED, "off: everyone in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_admission_is_refused() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10_000, Some(10)).await;
    app.put("/admin/gate", json!({"enabled": true, "admitPerSecond": 1000, "admissionTtlSecs": 1})).await;
    let id = take(&app, "Kim").await.body["id"].as_u64().unwrap();
    let token = admitted(&app, id).await;
    eventually("the admission to expire", || async {
        app.get(&format!("/queue/tickets/{id}")).await.body["status"] == "EXPIRED"
    })
    .await;
    let expired = app.get(&format!("/queue/tickets/{id}")).await;
    assert!(expired.body.get("admission").is_none(), "no token once expired: {expired:?}");
    assert!(expired.body["admissionExpiresAt"].is_string());
    enroll_with(&app, course, "Kim", Some(&token)).await.assert_problem(428, None);
    let again = take(&app, "Kim").await;
    assert_eq!(again.status, StatusCode::CREATED, "after expiry a new ticket: {again:?}");
    assert_ne!(again.body["id"].as_u64(), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ticket_per_student_with_the_same_place_on_asking_again() {
    let app = spawn_app().await;
    let opens = rfc3339_in(3600);
    let gate = app.put("/admin/gate", json!({"enabled": true, "admitPerSecond": 5, "opensAt": opens})).await;
    assert_eq!(gate.body["opensAt"], json!(opens), "{gate:?}");
    let mut ids = Vec::new();
    for student in ["Kim", "Lee", "Park"] {
        let first = take(&app, student).await;
        assert_eq!(first.status, StatusCode::CREATED);
        assert_eq!((first.body["status"].as_str(), first.body["position"].as_u64()), (Some("WAITING"), None));
        let again = take(&app, student).await;
        assert_eq!(again.status, StatusCode::OK, "asking again: the same ticket");
        assert_eq!(again.body["id"], first.body["id"]);
        ids.push(first.body["id"].as_u64().unwrap());
    }
    assert_eq!(ids, vec![1, 2, 3], "dense ids");
    let live = app.get("/admin/gate").await;
    assert_eq!((live.body["waiting"].as_u64(), live.body["admittedTotal"].as_u64()), (Some(3), Some(0)), "{live:?}");

    // Opening: the three are placed (shuffled), and keep their places.
    app.put("/admin/gate", json!({"opensAt": rfc3339_in(-1), "admitPerSecond": 1})).await;
    eventually("the shuffle at the opening", || async {
        let mut placed = true;
        for id in 1..=3 {
            placed &= app.get(&format!("/queue/tickets/{id}")).await.body["place"].is_u64();
        }
        placed
    })
    .await;
    let mut places = Vec::new();
    for student in ["Kim", "Lee", "Park"] {
        let again = take(&app, student).await;
        assert_eq!(again.status, StatusCode::OK);
        places.push(again.body["place"].as_u64().unwrap());
        if again.body["status"] == "WAITING" {
            assert!(again.body["position"].as_u64().unwrap() <= 3);
            assert!(again.body["etaSecs"].as_u64().unwrap() >= 1, "{again:?}");
        }
    }
    places.sort_unstable();
    assert_eq!(places, vec![1, 2, 3]);
    let late = take(&app, "Choi").await;
    assert_eq!(late.body["place"].as_u64(), Some(4), "after the opening: the back of the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_settings_are_checked_and_kept() {
    let app = spawn_app().await;
    app.put("/admin/gate", json!({"admitPerSecond": 0})).await.assert_problem(422, Some("admitPerSecond"));
    app.put("/admin/gate", json!({"admitPerSecond": "fast"})).await.assert_problem(422, Some("admitPerSecond"));
    app.put("/admin/gate", json!({"admissionTtlSecs": 0})).await.assert_problem(422, Some("admissionTtlSecs"));
    app.put("/admin/gate", json!({"admitPerSecond": null})).await.assert_problem(422, Some("admitPerSecond"));
    app.put("/admin/gate", json!({"admissionTtlSecs": null})).await.assert_problem(422, Some("admissionTtlSecs"));
    app.put("/admin/gate", json!({"opensAt": "tomorrow"})).await.assert_problem(422, Some("opensAt"));
    let gate = app.get("/admin/gate").await;
    assert_eq!(gate.status, StatusCode::OK);
    assert_eq!(gate.header("content-type"), Some("application/json"), "plain JSON, like the rest of /admin");
    for field in [
        "enabled",
        "admitPerSecond",
        "opensAt",
        "admissionTtlSecs",
        "waiting",
        "admittedTotal",
        "admittedPerSecond",
        "oldestWaitMs",
    ] {
        assert!(gate.body.get(field).is_some(), "GET /admin/gate has {field}: {gate:?}");
    }
    assert_eq!(gate.body["enabled"], false, "a refused change changed nothing");
    app.put("/admin/gate", json!({"admitPerSecond": "250"})).await;
    app.put("/admin/gate", json!({"admissionTtlSecs": 30})).await;
    let gate = app.get("/admin/gate").await;
    assert_eq!((gate.body["admitPerSecond"].as_u64(), gate.body["admissionTtlSecs"].as_u64()), (Some(250), Some(30)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn students_take_and_read_only_their_own_tickets() {
    let app = spawn_app_with(Options { secret: Some("test-secret-test-secret-32-bytes"), ..Options::default() }).await;
    let (kim, lee) = (app.token(Role::Student, "Kim"), app.token(Role::Student, "Lee"));
    let hong = app.token(Role::Instructor, "Kim");
    app.send(Method::POST, "/queue/tickets", Some(json!({})), None).await.assert_problem(401, None);
    let mine = app.send(Method::POST, "/queue/tickets", Some(json!({})), Some(&kim)).await;
    assert_eq!(
        (mine.status, mine.body["student"].as_str()),
        (StatusCode::CREATED, Some("Kim")),
        "defaults to the caller"
    );
    let id = mine.body["id"].as_u64().unwrap();
    app.send(Method::POST, "/queue/tickets", Some(json!({"student": "Lee"})), Some(&kim))
        .await
        .assert_problem(403, None);
    app.send(Method::POST, "/queue/tickets", Some(json!({})), Some(&hong)).await.assert_problem(403, None);
    let path = format!("/queue/tickets/{id}");
    assert_eq!(app.send(Method::GET, &path, None, Some(&kim)).await.status, StatusCode::OK);
    app.send(Method::GET, &path, None, Some(&lee)).await.assert_problem(403, None);
    app.send(Method::GET, &path, None, Some(&hong)).await.assert_problem(403, None);
    app.send(Method::GET, &format!("{path}/events"), None, Some(&lee)).await.assert_problem(403, None);
    app.send(Method::GET, "/queue/tickets/99", None, Some(&kim)).await.assert_problem(404, None);
    app.send(Method::GET, "/admin/gate", None, Some(&kim)).await.assert_problem(403, None);
    app.send(Method::PUT, "/admin/gate", Some(json!({"enabled": true})), Some(&kim)).await.assert_problem(403, None);
    assert_eq!(app.get("/admin/gate").await.status, StatusCode::OK, "an admin reads the gate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_stream_sends_the_ticket_then_its_moves_and_its_admission() {
    let app = spawn_app().await;
    app.put("/admin/gate", json!({"enabled": true, "admitPerSecond": 4, "opensAt": rfc3339_in(3600)})).await;
    for student in ["a", "b", "c", "d"] {
        take(&app, student).await;
    }
    let mut stream = app.client.get(app.url("/queue/tickets/4/events")).send().await.expect("a stream");
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(stream.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut tickets: Vec<Value> = Vec::new();
    let mut buffer = String::new();
    app.put("/admin/gate", json!({"opensAt": rfc3339_in(-1)})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tickets.last().is_none_or(|t| t["status"] != "ADMITTED") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk()).await.expect("events in time").expect("a chunk");
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("the stream stays open")));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) {
                assert!(event.contains("event: ticket"), "{event}");
                tickets.push(serde_json::from_str(data.trim()).expect("a ticket as JSON"));
            }
        }
    }
    assert_eq!(
        (tickets[0]["status"].as_str(), tickets[0]["position"].as_u64()),
        (Some("WAITING"), None),
        "first: as it is"
    );
    let positions: Vec<u64> = tickets.iter().filter_map(|t| t["position"].as_u64()).collect();
    assert!(!positions.is_empty(), "the position was sent once placed: {tickets:?}");
    assert!(positions.windows(2).all(|w| w[1] < w[0]), "every event a move forward: {positions:?}");
    assert!(tickets.last().unwrap()["admission"].is_string(), "the admission arrives on the stream");
}

/// One person cannot take every ticket stream from the others: a fifth
/// stream on one ticket is 429 (with Retry-After), another student's is
/// still served, and closing one frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_holds_at_most_four_streams_at_once() {
    let app = spawn_app().await;
    app.put("/admin/gate", json!({"enabled": true, "admitPerSecond": 1, "opensAt": rfc3339_in(3600)})).await;
    take(&app, "a").await;
    take(&app, "b").await;
    let open = |id: u64| app.client.get(app.url(&format!("/queue/tickets/{id}/events"))).send();
    let mut streams = Vec::new();
    for _ in 0..4 {
        let stream = open(1).await.expect("a stream");
        assert_eq!(stream.status(), StatusCode::OK);
        streams.push(stream);
    }
    let refused = open(1).await.expect("an answer");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    let other = open(2).await.expect("a stream");
    assert_eq!(other.status(), StatusCode::OK, "another student's ticket is served");
    drop(streams.pop());
    eventually("a closed stream frees its place", || async {
        open(1).await.expect("an answer").status() == StatusCode::OK
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rush_through_the_gate_serves_places_in_order_and_every_invariant_holds() {
    let app = spawn_app().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sugang"))
        .args(["rush", "--url", &app.url(""), "--students", "60", "--courses", "3", "--capacity", "10"])
        .args(["--concurrency", "8", "--tries", "3", "--gate", "200"])
        .env_remove("SUGANG_RUSH_TOKEN")
        .output()
        .await
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("gate: 60 tickets taken before the opening"), "{stdout}");
    assert!(stdout.contains("gate wait (after the opening): p50"), "{stdout}");
    assert!(stdout.contains("largest queue 60"), "{stdout}");
    assert!(stdout.contains("gate admission rate:"), "{stdout}");
    assert!(stdout.contains("30 of 30 seats sold"), "{stdout}");
    assert!(stdout.contains("invariants: all hold"), "{stdout}");
    let gate = app.get("/admin/gate").await;
    assert_eq!(
        (gate.body["enabled"].as_bool(), gate.body["admittedTotal"].as_u64()),
        (Some(false), Some(60)),
        "put back"
    );
}

/// `sugang serve` over `data` on a free loopback port (durable: fsync),
/// ready; killed when dropped.
async fn serve(data: &std::path::Path) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sugang"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .env_remove("SUGANG_JWT_SECRET")
        .env_remove("SUGANG_DURABILITY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(ready) = reqwest::get(format!("{url}/health/ready")).await
            && ready.status() == StatusCode::OK
        {
            return (child, url);
        }
        assert!(tokio::time::Instant::now() < deadline, "sugang serve did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_keeps_every_acknowledged_ticket_its_place_and_its_admission() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, url) = serve(&data).await;
    let client = reqwest::Client::new();
    let send = |method: Method, path: &str, body: Option<Value>| {
        let mut request = client.request(method, format!("{url}{path}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            Ok::<_, reqwest::Error>((status, body))
        }
    };
    let (status, _) = send(
        Method::PUT,
        "/admin/gate",
        Some(json!({"enabled": true, "admitPerSecond": 20, "opensAt": rfc3339_in(1), "admissionTtlSecs": 600})),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    let mut acknowledged: Vec<Value> = Vec::new();
    for i in 0..30 {
        let (status, ticket) =
            send(Method::POST, "/queue/tickets", Some(json!({"student": format!("early-{i}")}))).await.unwrap();
        assert_eq!(status, StatusCode::CREATED);
        acknowledged.push(ticket);
    }
    // After the opening, some are admitted while more students keep coming.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, gate) = send(Method::GET, "/admin/gate", None).await.unwrap();
        if gate["admittedTotal"].as_u64().unwrap_or(0) >= 5 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no admissions: {gate}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen = Vec::new();
    for ticket in &acknowledged {
        let (_, now) = send(Method::GET, &format!("/queue/tickets/{}", ticket["id"]), None).await.unwrap();
        seen.push(now);
    }
    let late = {
        let url = url.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut taken = Vec::new();
            for i in 0.. {
                let sent =
                    client.post(format!("{url}/queue/tickets")).json(&json!({"student": format!("late-{i}")})).send();
                let Ok(response) = sent.await else { break };
                if response.status() != StatusCode::CREATED {
                    break;
                }
                let Ok(ticket) = response.json::<Value>().await else { break };
                taken.push(ticket);
            }
            taken
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().await.expect("SIGKILL");
    let late = late.await.unwrap();
    assert!(!late.is_empty(), "tickets were being taken when the server was killed");
    seen.extend(late);

    let (_child, url) = serve(&data).await;
    let client = reqwest::Client::new();
    let mut highest = 0;
    for before in &seen {
        let id = before["id"].as_u64().unwrap();
        highest = highest.max(id);
        let after: Value = client.get(format!("{url}/queue/tickets/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(after["student"], before["student"], "ticket {id} kept");
        if before["place"].is_u64() {
            assert_eq!(after["place"], before["place"], "ticket {id}'s place kept");
        }
        if before["status"] == "ADMITTED" {
            assert_eq!(after["admission"], before["admission"], "ticket {id}'s admission kept, and its key");
        }
    }
    // Ids stay dense: the next ticket follows every stored one.
    let fresh: Value = client
        .post(format!("{url}/queue/tickets"))
        .json(&json!({"student": "after"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = fresh["id"].as_u64().unwrap();
    assert!(next > highest, "a new ticket {next} after the acknowledged {highest}");
    for id in 1..next {
        let status = client.get(format!("{url}/queue/tickets/{id}")).send().await.unwrap().status();
        assert_eq!(status, StatusCode::OK, "ticket {id} of 1..{next} exists: no hole");
    }
}
