//! `sugang demo supervision`: a course actor panics while students enroll in
//! it and in other courses. The others never notice; its supervisor restarts
//! it from storage with its seats intact. A course that keeps panicking exceeds
//! its restart intensity, is held down (503 with Retry-After), and recovers
//! after the backoff.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Aborted, Server, Timeline, enroll_all, ms, seats, tally};

const MAX_RESTARTS: u64 = 3;
const WINDOW_MS: u64 = 10_000;
const BACKOFF_MS: u64 = 2_000;
/// Students per course in the load.
const STUDENTS: usize = 12;
/// Concurrent clients sending the load.
const CLIENTS: usize = 6;

pub(super) async fn run(t: &Timeline, dir: &Path) -> Result<String, Aborted> {
    let (max, window, backoff) = (MAX_RESTARTS.to_string(), WINDOW_MS.to_string(), BACKOFF_MS.to_string());
    let flags = [
        "--max-restarts",
        &max,
        "--restart-window-ms",
        &window,
        "--restart-backoff-ms",
        &backoff,
        "--passivate-after-ms",
        "3000",
    ];
    let mut server = Server::start(t, dir, &flags).await?;
    let api = server.api.clone();

    let victim = api.course("korean", Some(100)).await?;
    let others = [api.course("math", Some(100)).await?, api.course("science", Some(100)).await?];
    let stubborn = api.course("history", Some(100)).await?;
    t.say(format!(
        "registered courses {victim} (korean), {} (math), {} (science), {stubborn} (history)",
        others[0], others[1]
    ));
    let before = api.supervisor("courses").await?;
    t.note(format!(
        "/admin/actors courses: live {}, restartsTotal {}, intensity {} restarts in {} ms, backoff {} ms",
        before["live"], before["restartsTotal"], before["maxRestarts"], before["withinMs"], before["backoffMs"]
    ));

    // 1. One panic under load.
    let armed = api.post(&format!("/admin/faults/courses/{victim}/panic"), json!({})).await?;
    t.say(format!("POST /admin/faults/courses/{victim}/panic: course {victim}'s actor panics on its next message"));
    t.expect(armed.status == 204, format!("the panic is armed (answered {})", armed.status));
    let jobs: Vec<(u64, String)> =
        (0..STUDENTS).flat_map(|i| [victim, others[0], others[1]].map(|c| (c, format!("student-{c}-{i}")))).collect();
    t.say(format!(
        "{} enrollments, {STUDENTS} in each of courses {victim}, {} and {}, sent by {CLIENTS} concurrent clients \
         (each sends its next when its last is answered)",
        jobs.len(),
        others[0],
        others[1]
    ));
    let sent = std::time::Instant::now();
    let answers = enroll_all(&api, jobs, CLIENTS).await;
    let of = |course: u64| answers.iter().filter(move |(c, ..)| *c == course).map(|(_, _, r)| r);
    t.say(format!("all {} enrollments answered, after {}:", answers.len(), ms(sent.elapsed())));
    t.note(format!("course {victim} (panicked): {}", tally(of(victim))));
    for other in others {
        t.note(format!("course {other}: {}", tally(of(other))));
    }
    for other in others {
        let ok = of(other).filter(|r| matches!(r, Ok(r) if r.status == 201)).count();
        t.expect(ok == STUDENTS, format!("every enrollment in course {other} answered 201 ({ok}/{STUDENTS})"));
    }
    server.narrate_log(t);
    let after = api.supervisor("courses").await?;
    let restarted = count(&after, "restartsTotal") - count(&before, "restartsTotal");
    let recent = recent_restarts(&after, victim);
    t.say(format!(
        "/admin/actors courses: restartsTotal {} → {}, recentRestarts of course {victim}: {recent}, live {}",
        before["restartsTotal"], after["restartsTotal"], after["live"]
    ));
    t.expect(
        restarted == 1 && recent == 1,
        format!(
            "the supervisor restarted course {victim} once ({restarted} restart, {recent} recent for course {victim})"
        ),
    );
    restarts_agree(t, &api, count(&after, "restartsTotal")).await?;
    let victim_ok = of(victim).filter(|r| matches!(r, Ok(r) if r.status == 201)).count() as u64;
    let (count_after, completed) = seats(&api, victim).await?;
    t.say(format!(
        "GET /courses/{victim}: studentCount {count_after}; GET /classes?courseId={victim}&status=COMPLETED: {completed}"
    ));
    t.expect(
        count_after == completed && completed == victim_ok,
        format!(
            "course {victim}'s seats are intact after the restart: studentCount {count_after} = COMPLETED {completed} = acknowledged {victim_ok}"
        ),
    );
    let again = api.enroll(victim, "after-the-restart").await?;
    t.say(format!("one more enrollment in course {victim}: {} in {}", again.summary(), ms(again.took)));
    t.expect(again.status == 201, format!("the restarted course {victim} takes enrollments (201)"));

    // 2. A course that keeps panicking.
    t.say(format!("course {stubborn} now panics on every enrollment: a panic is armed before each one"));
    let mut acknowledged = 0u64;
    let mut panics = 0u64;
    let mut held = None;
    for attempt in 1..=MAX_RESTARTS + 3 {
        api.post(&format!("/admin/faults/courses/{stubborn}/panic"), json!({})).await?;
        panics += 1;
        let reply = api.enroll(stubborn, &format!("stubborn-{attempt}")).await?;
        t.say(format!(
            "panic #{attempt} on course {stubborn}; enrollment answered {} in {}",
            reply.summary(),
            ms(reply.took)
        ));
        match reply.status {
            201 => acknowledged += 1,
            503 => {
                held = Some((attempt, reply));
                break;
            }
            _ => {}
        }
    }
    server.narrate_log(t);
    let Some((attempt, refused)) = held else {
        t.expect(
            false,
            format!("course {stubborn} is held down after {} panics within {WINDOW_MS} ms", MAX_RESTARTS + 1),
        );
        return Ok(String::new());
    };
    t.expect(
        attempt == MAX_RESTARTS + 1,
        format!("the supervisor held course {stubborn} down at panic #{attempt}, the first beyond {MAX_RESTARTS} restarts in {WINDOW_MS} ms"),
    );
    t.expect(refused.retry_after.is_some_and(|r| r >= 1), "the held-down course's 503 carries Retry-After");
    let sup = api.supervisor("courses").await?;
    let held_down = sup["heldDown"].as_array().cloned().unwrap_or_default();
    let entry = held_down.iter().find(|h| h["id"].as_u64() == Some(stubborn)).cloned();
    t.say(format!("/admin/actors courses: heldDown {}", Value::Array(held_down.clone())));
    t.expect(entry.is_some(), format!("/admin/actors lists course {stubborn} as held down"));
    let retry_ms = entry.as_ref().and_then(|e| e["retryAfterMs"].as_u64()).unwrap_or(BACKOFF_MS);

    let still = api.enroll(stubborn, "while-held-down").await?;
    t.say(format!("enrollment in course {stubborn} without a panic armed: {} in {}", still.summary(), ms(still.took)));
    t.expect(still.status == 503, format!("course {stubborn} stays down for the backoff (503)"));
    let elsewhere = api.enroll(others[0], "meanwhile").await?;
    t.say(format!("enrollment in course {} meanwhile: {} in {}", others[0], elsewhere.summary(), ms(elsewhere.took)));
    t.expect(elsewhere.status == 201, format!("course {} does not notice (201)", others[0]));

    t.say(format!("waiting out the backoff ({retry_ms} ms left)"));
    tokio::time::sleep(Duration::from_millis(retry_ms + 150)).await;
    let back = api.enroll(stubborn, "after-the-backoff").await?;
    t.say(format!("enrollment in course {stubborn} after the backoff: {} in {}", back.summary(), ms(back.took)));
    t.expect(back.status == 201, format!("course {stubborn} recovered after the backoff (201)"));
    if back.status == 201 {
        acknowledged += 1;
    }
    server.narrate_log(t);
    let sup = api.supervisor("courses").await?;
    let still_held = sup["heldDown"].as_array().is_some_and(|h| h.iter().any(|h| h["id"].as_u64() == Some(stubborn)));
    t.expect(!still_held, format!("/admin/actors no longer lists course {stubborn} as held down"));
    let (stubborn_count, stubborn_completed) = converged_seats(&api, stubborn).await?;
    t.say(format!(
        "GET /courses/{stubborn}: studentCount {stubborn_count}; COMPLETED enrollments {stubborn_completed}"
    ));
    t.expect(
        stubborn_count == stubborn_completed && stubborn_completed == acknowledged,
        format!(
            "course {stubborn}'s seats are intact: studentCount {stubborn_count} = COMPLETED {stubborn_completed} = acknowledged {acknowledged}"
        ),
    );

    // 3. What /metrics counted.
    let metrics = api.metrics().await?;
    let faults = metrics.get(r#"sugang_faults_injected_total{fault="course_panic"}"#);
    let restarts = metrics.get(r#"sugang_actor_restarts_total{kind="course"}"#);
    let held_total = metrics.get(r#"sugang_actor_held_down_total{kind="course"}"#);
    t.say(format!(
        "/metrics: faults_injected{{course_panic}} {faults}, actor_restarts{{course}} {restarts}, actor_held_down{{course}} {held_total}"
    ));
    let total_panics = 1 + panics;
    t.expect(
        faults as u64 == total_panics,
        format!("/metrics counted every injected panic ({faults} of {total_panics})"),
    );
    let admin_restarts = count(&sup, "restartsTotal");
    // Course 1 once; course 4 after each of its first MAX_RESTARTS panics,
    // and once more when its hold-down ended.
    let expected_restarts = 1 + MAX_RESTARTS + 1;
    t.expect(
        restarts as u64 == admin_restarts && admin_restarts == expected_restarts,
        format!(
            "/metrics and /admin/actors agree on the restarts ({restarts} and {admin_restarts}): course {victim} once, \
             course {stubborn} {MAX_RESTARTS} times and once more when its hold-down ended, {expected_restarts} in all"
        ),
    );
    t.expect(held_total as u64 == 1, format!("/metrics counted the one hold-down ({held_total})"));

    Ok(format!(
        "course {victim} panicked under load and was restarted from storage with all {completed} seats while {} enrollments \
         elsewhere answered 201; course {stubborn} was held down after {MAX_RESTARTS} restarts in {} s and took \
         enrollments again after the {} s backoff",
        2 * STUDENTS,
        WINDOW_MS / 1000,
        BACKOFF_MS / 1000
    ))
}

/// Cross-checks the restart count of `/admin/actors` (the source the demo
/// narrates) with `/metrics`: both are printed, and they must agree.
async fn restarts_agree(t: &Timeline, api: &super::Api, admin: u64) -> Result<(), Aborted> {
    let metrics = api.metrics().await?.get(r#"sugang_actor_restarts_total{kind="course"}"#) as u64;
    t.note(format!("/metrics sugang_actor_restarts_total{{kind=\"course\"}} {metrics}"));
    t.expect(
        metrics == admin,
        format!("/metrics and /admin/actors agree on the course restarts ({metrics} and {admin})"),
    );
    Ok(())
}

fn count(snapshot: &Value, field: &str) -> u64 {
    snapshot[field].as_u64().unwrap_or(0)
}

fn recent_restarts(snapshot: &Value, course: u64) -> u64 {
    snapshot["recentRestarts"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"].as_u64() == Some(course)))
        .and_then(|r| r["restarts"].as_u64())
        .unwrap_or(0)
}

/// The seats of `course`, waiting (at most 5 s) for a refused enrollment's
/// compensation to give its seat back.
async fn converged_seats(api: &super::Api, course: u64) -> Result<(u64, u64), Aborted> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (count, completed) = seats(api, course).await?;
        if count == completed || std::time::Instant::now() > deadline {
            return Ok((count, completed));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
