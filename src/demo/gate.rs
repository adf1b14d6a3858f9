//! `sugang demo gate`: a rush against the waiting room. The gate is turned
//! on with its opening two seconds ahead; a student who tries to enroll is
//! sent to the queue (428); a hundred students take tickets before the
//! opening (asking again keeps the same ticket), so none has a place yet;
//! at the opening the tickets are shuffled once; admission runs at 20 per
//! second, and is raised to 50 per second while the queue waits. Each
//! student enrolls as soon as admitted, with its own admission (someone
//! else's is refused). The queue's size and rate are read from
//! `GET /admin/gate` as it drains; the rates and the order of service are
//! checked from the tickets' own `admittedAt` and `place`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};

use super::{Aborted, Api, Reply, Server, Timeline, lock, tally};

const STUDENTS: usize = 100;
const SEATS: u64 = 30;
const FIRST_RATE: u32 = 20;
const SECOND_RATE: u32 = 50;
/// How long before the opening the tickets are taken.
const OPENS_IN: Duration = Duration::from_secs(2);
/// How long after the opening the rate is raised.
const RAISE_AFTER: Duration = Duration::from_secs(2);
/// A measured rate passes within this share of the configured one.
const RATE_TOLERANCE: f64 = 0.10;

/// A student's way through the gate.
#[derive(Clone, Default)]
struct Through {
    ticket: u64,
    place: u64,
    admitted_at_ms: u64,
    enrolled: Option<u16>,
}

pub(super) async fn run(t: &Timeline, dir: &Path) -> Result<String, Aborted> {
    let server = Server::start(t, dir, &["--durability", "relaxed"]).await?;
    let api = server.api.clone();
    let course = api.course("korean", Some(SEATS)).await?;
    t.say(format!("registered course {course} with {SEATS} seats"));

    // 1. The gate goes on, opening in two seconds.
    let opens_at_ms = now_ms() + OPENS_IN.as_millis() as u64;
    let on =
        json!({"enabled": true, "admitPerSecond": FIRST_RATE, "opensAt": rfc3339(opens_at_ms), "admissionTtlSecs": 60});
    let gate = api.put("/admin/gate", on.clone()).await?;
    t.say(format!("PUT /admin/gate {on}: {}", gate.status));
    t.expect(gate.status == 200, "the gate is on (200)");
    let early = api.enroll(course, "eager").await?;
    t.say(format!("a student enrolls without a ticket: {}", early.summary()));
    t.note(format!("detail: {}", early.body["detail"].as_str().unwrap_or_default()));
    t.expect(
        early.status == 428 && early.body["detail"].as_str().is_some_and(|d| d.contains("/queue/tickets")),
        "enrolling without an admission is refused with 428, pointing to /queue/tickets",
    );

    // 2. A hundred students queue before the opening.
    let students: Vec<String> = (0..STUDENTS).map(|i| format!("student-{i:03}")).collect();
    let mut taken = Vec::new();
    for student in &students {
        taken.push(api.post("/queue/tickets", json!({"student": student})).await?);
    }
    let placed_early = taken.iter().filter(|r| r.body["position"].is_u64()).count();
    t.say(format!(
        "{STUDENTS} students take tickets before the opening: {}",
        tally(taken.iter().map(|r| Ok::<_, String>(clone_reply(r))).collect::<Vec<_>>().iter())
    ));
    t.expect(
        taken.iter().all(|r| r.status == 201) && placed_early == 0,
        format!("each gets a new ticket (201) and none a place before the opening ({placed_early} placed)"),
    );
    let again = api.post("/queue/tickets", json!({"student": students[7]})).await?;
    t.say(format!("{} asks again: {} ticket {}", students[7], again.status, again.body["id"]));
    t.expect(
        again.status == 200 && again.body["id"] == taken[7].body["id"],
        "asking again answers the same ticket (200)",
    );
    let tickets: Vec<u64> = taken.iter().filter_map(|r| r.body["id"].as_u64()).collect();
    if tickets.len() != STUDENTS {
        return Err(Aborted("a ticket came back without an id".into()));
    }
    let status = api.get("/admin/gate").await?;
    t.say(format!("GET /admin/gate: waiting {}, admitted {}", status.body["waiting"], status.body["admittedTotal"]));

    // 3. The opening: the tickets are shuffled once.
    tokio::time::sleep(Duration::from_millis(opens_at_ms.saturating_sub(now_ms()))).await;
    t.say("the gate opens");
    let mut through = vec![Through::default(); STUDENTS];
    for (i, id) in tickets.iter().enumerate() {
        let ticket = placed(&api, *id).await?;
        through[i] = Through { ticket: *id, place: ticket["place"].as_u64().unwrap_or(0), ..Through::default() };
    }
    let mut places: Vec<u64> = through.iter().map(|s| s.place).collect();
    let kept = places.iter().enumerate().filter(|(i, p)| **p == *i as u64 + 1).count();
    places.sort_unstable();
    t.note(format!(
        "places by arrival: {} … ({kept} of {STUDENTS} kept their arrival order)",
        through.iter().take(10).map(|s| s.place.to_string()).collect::<Vec<_>>().join(", ")
    ));
    t.expect(
        places == (1..=STUDENTS as u64).collect::<Vec<_>>(),
        "the shuffle gives each ticket one of the places 1 to 100",
    );
    t.expect(kept < STUDENTS / 10, format!("arriving first gave no advantage: {kept} of {STUDENTS} kept their place"));

    // 4. Everyone waits for admission and enrolls; the rate is raised midway.
    let through = Arc::new(Mutex::new(through));
    let mut waiting = tokio::task::JoinSet::new();
    for (i, student) in students.iter().enumerate() {
        let (api, through, student) = (api.clone(), through.clone(), student.clone());
        waiting.spawn(async move { wait_and_enroll(&api, &through, i, &student, course).await });
    }
    let opened = std::time::Instant::now();
    let mut raise: Option<(u64, u64)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let gate = api.get("/admin/gate").await?;
        t.say(format!(
            "GET /admin/gate: waiting {}, admitted {}, {} admitted/s, oldest waiting {} ms",
            gate.body["waiting"], gate.body["admittedTotal"], gate.body["admittedPerSecond"], gate.body["oldestWaitMs"]
        ));
        if raise.is_none() && opened.elapsed() >= RAISE_AFTER {
            let sent = now_ms();
            let raised = api.put("/admin/gate", json!({"admitPerSecond": SECOND_RATE})).await?;
            raise = Some((sent, now_ms()));
            t.say(format!(
                "PUT /admin/gate {{\"admitPerSecond\": {SECOND_RATE}}} while the queue waits: {}",
                raised.status
            ));
        }
        if gate.body["waiting"].as_u64() == Some(0) && raise.is_some() {
            break;
        }
        if opened.elapsed() > Duration::from_secs(30) {
            return Err(Aborted("the queue did not drain within 30 s".into()));
        }
    }
    while let Some(done) = waiting.join_next().await {
        done.map_err(|e| Aborted(format!("a student's task failed: {e}")))??;
    }
    let through = lock(&through).clone();

    // 5. The rates, from the tickets' own admission times.
    let (sent, answered) = raise.unwrap_or_default();
    let before: Vec<u64> = through.iter().map(|s| s.admitted_at_ms).filter(|at| *at < sent).collect();
    let after: Vec<u64> = through.iter().map(|s| s.admitted_at_ms).filter(|at| *at > answered).collect();
    for (rate, times) in [(FIRST_RATE, before), (SECOND_RATE, after)] {
        let measured = rate_of(&times);
        t.say(format!(
            "admissions at {rate}/s: {} admitted, {measured:.1}/s measured from their admittedAt",
            times.len()
        ));
        t.expect(
            (measured - f64::from(rate)).abs() <= f64::from(rate) * RATE_TOLERANCE,
            format!("the rate held within {:.0} % of {rate}/s", RATE_TOLERANCE * 100.0),
        );
    }

    // 6. Served in order of place.
    let mut by_place = through.clone();
    by_place.sort_by_key(|s| s.place);
    let inversions = by_place.windows(2).filter(|w| w[1].admitted_at_ms < w[0].admitted_at_ms).count();
    t.say(format!(
        "admission times along the places: {} …",
        by_place
            .iter()
            .take(6)
            .map(|s| format!("#{} +{} ms", s.place, s.admitted_at_ms.saturating_sub(opens_at_ms)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    t.expect(inversions == 0, format!("places were served in order ({inversions} admitted before an earlier place)"));

    // 7. An admission is its student's own.
    let kim = api.get(&format!("/queue/tickets/{}", through[0].ticket)).await?;
    let token = kim.body["admission"].as_str().unwrap_or_default().to_owned();
    let borrowed = enroll_admitted(&api, course, "someone-else", &token).await?;
    t.say(format!("another student enrolls with {}'s admission: {}", students[0], borrowed.summary()));
    t.expect(borrowed.status == 428, "an admission is not shared between students (428)");

    let enrolled = through.iter().filter(|s| s.enrolled == Some(201)).count() as u64;
    let full = through.iter().filter(|s| s.enrolled == Some(409)).count() as u64;
    let seats = api.get(&format!("/courses/{course}")).await?.body["studentCount"].as_u64().unwrap_or(0);
    t.say(format!(
        "enrollments of the admitted: {enrolled} enrolled, {full} found the course full; studentCount {seats}"
    ));
    t.expect(
        enrolled == SEATS && seats == SEATS && full == STUDENTS as u64 - SEATS,
        format!("every seat sold once, to an admitted student ({enrolled} of {SEATS})"),
    );
    let _ = api.put("/admin/gate", json!({"enabled": false})).await?;
    let status = server.terminate(t).await?;
    t.expect(status.success(), "the server stops cleanly on SIGTERM");
    Ok(format!(
        "{STUDENTS} students queued: shuffled once at the opening, admitted in place order at {FIRST_RATE}/s then {SECOND_RATE}/s, {SEATS} seats sold"
    ))
}

/// Reads the ticket until the opening's shuffle has placed it.
async fn placed(api: &Api, id: u64) -> Result<Value, Aborted> {
    for _ in 0..250 {
        let ticket = api.get(&format!("/queue/tickets/{id}")).await?;
        if ticket.body["place"].is_u64() {
            return Ok(ticket.body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(Aborted(format!("ticket {id} had no place 5 s after the opening")))
}

/// One student: polls the ticket (more often the nearer it is) until
/// admitted, then enrolls with the admission.
async fn wait_and_enroll(
    api: &Api,
    through: &Mutex<Vec<Through>>,
    i: usize,
    student: &str,
    course: u64,
) -> Result<(), Aborted> {
    let id = lock(through)[i].ticket;
    loop {
        let ticket = api.get(&format!("/queue/tickets/{id}")).await?;
        if ticket.body["status"] == "ADMITTED" {
            let token = ticket.body["admission"].as_str().unwrap_or_default().to_owned();
            let at = ticket.body["admittedAt"].as_str().and_then(parse_rfc3339).unwrap_or(0);
            let reply = enroll_admitted(api, course, student, &token).await?;
            let mut through = lock(through);
            through[i].admitted_at_ms = at;
            through[i].enrolled = Some(reply.status);
            return Ok(());
        }
        let eta = ticket.body["etaSecs"].as_u64().unwrap_or(1);
        tokio::time::sleep(Duration::from_millis((eta * 500).clamp(20, 500))).await;
    }
}

async fn enroll_admitted(api: &Api, course: u64, student: &str, token: &str) -> Result<Reply, Aborted> {
    let body = json!({"courseId": course, "student": student, "payAccount": "4242424242424242", "addr": "Seoul"});
    let start = std::time::Instant::now();
    let response = api
        .client
        .request(Method::POST, format!("{}/classes", api.base))
        .header("X-Sugang-Admission", token)
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Ok(Reply { status, retry_after: None, seq: None, body, took: start.elapsed() })
}

fn clone_reply(r: &Reply) -> Reply {
    Reply { status: r.status, retry_after: r.retry_after, seq: r.seq, body: Value::Null, took: r.took }
}

/// Admissions per second over `times` (unix ms): the count after the first
/// over the span from the first to the last.
fn rate_of(times: &[u64]) -> f64 {
    let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) else { return 0.0 };
    if last <= first {
        return 0.0;
    }
    (times.len() - 1) as f64 / ((last - first) as f64 / 1000.0)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}
