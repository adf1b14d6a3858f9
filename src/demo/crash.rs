//! `sugang demo crash`: the server is killed with SIGKILL while seats are
//! being taken, three times. Payments are slowed down (200 ms, through
//! `PUT /admin/faults/payment`), so at the kill a dozen enrollments are
//! mid-saga: seat held, payment out. After each restart over the same data
//! directory: every acknowledged (201) enrollment is there, what became of
//! each enrollment the kill cut off, the sagas the server found interrupted
//! and compensated, no orphan seat (each course's studentCount equals its
//! COMPLETED enrollments, none over capacity), no charge without an
//! enrollment (payments against enrollments, refunds owed drained), and
//! the read models converge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Aborted, Api, Server, Timeline, ms};

const ROUNDS: usize = 3;
const CONCURRENCY: usize = 16;
/// New courses per round, and their capacity: the load of a round takes
/// only some of their seats before the kill.
const COURSES_PER_ROUND: usize = 4;
const CAPACITY: u64 = 40;
/// The payment latency during the load: long enough that every client's
/// enrollment spends most of its time mid-saga, seat held, payment out.
const PAYMENT_LATENCY_MS: u64 = 200;
/// The card-test account the simulated gateway declines.
const DECLINED: &str = "4000000000000002";

/// An acknowledged enrollment: id, course, student.
type Acked = (u64, u64, String);

pub(super) async fn run(t: &Timeline, dir: &Path) -> Result<String, Aborted> {
    let mut server = Server::start(t, dir, &[]).await?;
    let mut acked: Vec<Acked> = Vec::new();
    let mut interrupted_total = 0;
    let mut cut_total = 0;
    for round in 1..=ROUNDS {
        let api = server.api.clone();
        let mut courses = Vec::new();
        for k in 0..COURSES_PER_ROUND {
            courses.push(api.course(&format!("course-{round}-{k}"), Some(CAPACITY)).await?);
        }
        let slow = api.put("/admin/faults/payment", json!({"latencyMs": PAYMENT_LATENCY_MS})).await?;
        t.say(format!(
            "round {round}: courses {courses:?}, {CAPACITY} seats each; PUT /admin/faults/payment {{\"latencyMs\": \
             {PAYMENT_LATENCY_MS}}}: {}; {CONCURRENCY} clients enroll in these courses, each sending its next \
             enrollment when its last is answered (1 in 8 pays with a declined card)",
            slow.status
        ));
        if slow.status != 200 {
            return Err(Aborted(format!("PUT /admin/faults/payment answered {}", slow.summary())));
        }
        let load = Load::start(&api, &courses, round);
        let kill_after = Duration::from_millis(fastrand::u64(400..900));
        tokio::time::sleep(kill_after).await;
        let pid = server.pid();
        let kill_at = Instant::now();
        let before_kill = load.answered.load(Ordering::SeqCst);
        server.kill(t).await?;
        let outcome = load.finish(kill_at).await;
        t.say(format!(
            "SIGKILL pid {pid} after {} of load: {before_kill} enrollments answered by then ({}); {} were in flight, \
             sent and not answered",
            ms(kill_after),
            outcome.tally,
            outcome.cut.len()
        ));
        t.expect(
            !outcome.cut.is_empty(),
            format!("the kill interrupted enrollments in progress ({} in flight)", outcome.cut.len()),
        );
        cut_total += outcome.cut.len();
        acked.extend(outcome.acked);

        server = Server::start(t, dir, &[]).await?;
        server.narrate_log(t);
        let interrupted = server
            .log()
            .iter()
            .find(|e| e.message.contains("sagas interrupted by the last stop"))
            .and_then(|e| e.number("count"))
            .unwrap_or(0);
        t.say(format!(
            "after restart {round}: the server found {interrupted} sagas interrupted mid-flight (seat held, not \
             completed) and compensated them: seat given back, charge voided"
        ));
        // Whether a given kill lands while a seat is held is a matter of
        // timing (a request in flight may not have reached its course yet):
        // each round says what it found; the rounds together must have
        // caught at least one saga mid-flight (checked after the last).
        interrupted_total += interrupted;
        verify(t, &server.api, &acked, &outcome.cut, &courses, round).await?;
        server.narrate_log(t);
    }
    t.expect(
        interrupted_total >= 1,
        format!("the kills caught enrollments mid-saga ({interrupted_total} compensated at the restarts)"),
    );
    let pid = server.pid();
    let status = server.terminate(t).await?;
    t.say(format!("SIGTERM to pid {pid}: {status}"));
    t.expect(status.success(), "the last server stops cleanly (exit 0)");
    Ok(format!(
        "{ROUNDS} SIGKILLs while seats were being taken ({cut_total} enrollments in flight, {interrupted_total} sagas \
         found interrupted and compensated): after each restart all acknowledged enrollments ({} in the end) were \
         there, no seat was held without a COMPLETED enrollment, no course was over capacity, no charge was kept \
         without an enrollment and the read models converged",
        acked.len()
    ))
}

/// The enrollment load of one round.
struct Load {
    workers: tokio::task::JoinSet<Worked>,
    /// Answers received so far, across workers.
    answered: Arc<AtomicUsize>,
}

/// What one client did: each answer's status and acknowledgment, and the
/// request the kill cut off (course, student, when it was sent).
struct Worked {
    answers: Vec<(u16, Option<Acked>)>,
    cut: Option<(u64, String, Instant)>,
}

/// What one round's load saw.
struct Outcome {
    acked: Vec<Acked>,
    tally: String,
    /// The requests in flight at the kill: sent before it, never answered
    /// (course, student).
    cut: Vec<(u64, String)>,
}

impl Load {
    fn start(api: &Api, courses: &[u64], round: usize) -> Load {
        let answered = Arc::new(AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..CONCURRENCY {
            let (api, courses, answered) = (api.clone(), courses.to_vec(), answered.clone());
            workers.spawn(async move {
                let mut answers = Vec::new();
                for n in 0.. {
                    let course = courses[fastrand::usize(..courses.len())];
                    let student = format!("r{round}-w{worker}-{n}");
                    let account = if fastrand::u8(..8) == 0 { DECLINED } else { "4242424242424242" };
                    let sent = Instant::now();
                    // The kill cuts this off: an error is the end of the load.
                    let Ok(reply) = api.enroll_with(course, &student, account).await else {
                        return Worked { answers, cut: Some((course, student, sent)) };
                    };
                    answered.fetch_add(1, Ordering::SeqCst);
                    let acked = match (reply.status, reply.body["id"].as_u64()) {
                        (201, Some(id)) => Some((id, course, student)),
                        _ => None,
                    };
                    answers.push((reply.status, acked));
                }
                Worked { answers, cut: None }
            });
        }
        Load { workers, answered }
    }

    /// Waits for every client to be cut off by the kill sent at `kill_at`.
    async fn finish(mut self, kill_at: Instant) -> Outcome {
        let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
        let mut acked = Vec::new();
        let mut cut = Vec::new();
        while let Some(done) = self.workers.join_next().await {
            let Ok(worked) = done else { continue };
            for (status, ack) in worked.answers {
                *statuses.entry(status).or_default() += 1;
                acked.extend(ack);
            }
            // A request sent after the kill was refused, not interrupted.
            if let Some((course, student, sent)) = worked.cut
                && sent <= kill_at
            {
                cut.push((course, student));
            }
        }
        let tally: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        Outcome { acked, tally: tally.join(" "), cut }
    }
}

/// The guarantees, checked against what the restarted server answers.
async fn verify(
    t: &Timeline,
    api: &Api,
    acked: &[Acked],
    cut: &[(u64, String)],
    round_courses: &[u64],
    round: usize,
) -> Result<(), Aborted> {
    let classes = api.all("/classes", "classes").await?;
    let by_id: BTreeMap<u64, &Value> = classes.iter().filter_map(|c| Some((c["id"].as_u64()?, c))).collect();
    let completed: BTreeMap<u64, &Value> =
        by_id.iter().filter(|(_, c)| c["status"] == "COMPLETED").map(|(id, c)| (*id, *c)).collect();

    // 1. Every acknowledged enrollment survived.
    let lost: Vec<u64> = acked
        .iter()
        .filter(|(id, course, student)| {
            by_id.get(id).is_none_or(|c| {
                c["status"] != "COMPLETED"
                    || c["courseId"].as_u64() != Some(*course)
                    || c["student"] != student.as_str()
            })
        })
        .map(|(id, ..)| *id)
        .collect();
    t.say(format!(
        "after restart {round}: {} enrollments COMPLETED; {} acknowledged so far",
        completed.len(),
        acked.len()
    ));
    t.expect(
        lost.is_empty(),
        format!(
            "round {round}: every acknowledged enrollment is present and COMPLETED ({} lost: {lost:?})",
            lost.len()
        ),
    );

    // What became of the enrollments the kill cut off: committed before the
    // kill (only the answer was lost), or no enrollment at all (compensated
    // at the start, or never reached the server). Nothing in between.
    let mut done = 0;
    let mut gone = 0;
    let mut odd = Vec::new();
    for (course, student) in cut {
        let mine: Vec<&Value> = classes.iter().filter(|c| c["student"] == student.as_str()).collect();
        match mine.as_slice() {
            [] => gone += 1,
            [c] if c["status"] == "COMPLETED" && c["courseId"].as_u64() == Some(*course) => done += 1,
            other => odd.push(format!("{student}: {}", Value::Array(other.iter().map(|c| (*c).clone()).collect()))),
        }
    }
    t.note(format!(
        "of the {} enrollments cut off by the kill: {done} COMPLETED (done before the kill, only the answer was lost), \
         {gone} left no enrollment (compensated at the start, or never reached the server)",
        cut.len()
    ));
    t.expect(
        odd.is_empty(),
        format!("round {round}: each cut-off enrollment is either COMPLETED or left no trace {odd:?}"),
    );

    // 2. No course over capacity; seats match enrollments.
    let courses = api.all("/courses", "courses").await?;
    let mut per_course: BTreeMap<u64, u64> = BTreeMap::new();
    for c in completed.values() {
        *per_course.entry(c["courseId"].as_u64().unwrap_or(0)).or_default() += 1;
    }
    let mut over = Vec::new();
    let mut mismatched = Vec::new();
    for course in &courses {
        let id = course["id"].as_u64().unwrap_or(0);
        let count = course["studentCount"].as_u64().unwrap_or(0);
        let enrolled = per_course.get(&id).copied().unwrap_or(0);
        if let Some(capacity) = course["capacity"].as_u64()
            && (count > capacity || enrolled > capacity)
        {
            over.push(format!("course {id}: {enrolled} enrolled, studentCount {count}, capacity {capacity}"));
        }
        if count != enrolled {
            mismatched.push(format!("course {id}: studentCount {count} vs {enrolled} COMPLETED"));
        }
    }
    let round_taken: u64 = courses
        .iter()
        .filter(|c| c["id"].as_u64().is_some_and(|id| round_courses.contains(&id)))
        .map(|c| c["studentCount"].as_u64().unwrap_or(0))
        .sum();
    let round_seats = CAPACITY * round_courses.len() as u64;
    t.note(format!(
        "{} courses; this round's {} courses: {round_taken} of {round_seats} seats taken",
        courses.len(),
        round_courses.len()
    ));
    t.expect(
        round_taken < round_seats,
        format!("round {round}: the kill came while seats were being taken ({round_taken} < {round_seats} taken)"),
    );
    t.expect(over.is_empty(), format!("round {round}: no course is over capacity {over:?}"));
    t.expect(
        mismatched.is_empty(),
        format!(
            "round {round}: no orphan seat: every course's studentCount equals its COMPLETED enrollments {mismatched:?}"
        ),
    );

    // 3. No charge without an enrollment: once the refunds owed (the voids
    // of interrupted charges) are drained, every APPROVED payment is a
    // COMPLETED enrollment's, and every other payment is refunded.
    let owed = refunds_owed(api).await?;
    let payments = api.all("/payments", "payments").await?;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for p in &payments {
        *by_status.entry(p["payStatus"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
    }
    let approved: BTreeSet<u64> =
        payments.iter().filter(|p| p["payStatus"] == "APPROVED").filter_map(|p| p["applyId"].as_u64()).collect();
    let unpaid: Vec<u64> = completed.keys().filter(|id| !approved.contains(id)).copied().collect();
    let kept: Vec<u64> = payments
        .iter()
        .filter(|p| p["payStatus"] != "CANCELED")
        .filter_map(|p| p["applyId"].as_u64())
        .filter(|id| !completed.contains_key(id))
        .collect();
    t.note(format!(
        "{} payments ({}); refunds owed {owed}",
        payments.len(),
        by_status.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", ")
    ));
    t.expect(
        unpaid.is_empty() && kept.is_empty() && owed == 0,
        format!(
            "round {round}: every COMPLETED enrollment has an APPROVED payment, and no charge is kept without a \
             COMPLETED enrollment (unpaid {unpaid:?}, charged without enrollment {kept:?}, refunds owed {owed})"
        ),
    );

    // 4. The read models converge: shipments first (they emit events the
    // my-pages read), then the views.
    let seq = api.last_seq().await?;
    let deliveries_ok = api.caught_up("/deliveries", seq, Duration::from_secs(15)).await?.status == 200;
    let seq = api.last_seq().await?;
    let views_ok = api.caught_up("/inquiryMypages", seq, Duration::from_secs(15)).await?.status == 200
        && api.caught_up("/courseSchedules", seq, Duration::from_secs(15)).await?.status == 200;
    t.expect(deliveries_ok && views_ok, format!("round {round}: the read models caught up to seq {seq}"));
    let deliveries = api.all("/deliveries", "deliveries").await?;
    let shipped: BTreeSet<u64> =
        deliveries.iter().filter(|d| d["deliveryStatus"] == "STARTED").filter_map(|d| d["applyId"].as_u64()).collect();
    let views = api.all("/inquiryMypages", "inquiryMypages").await?;
    let view_of: BTreeMap<u64, &Value> = views.iter().filter_map(|v| Some((v["applyId"].as_u64()?, v))).collect();
    let schedules = api.all("/courseSchedules", "courseSchedules").await?;
    let schedule_count: BTreeMap<u64, u64> =
        schedules.iter().filter_map(|s| Some((s["courseId"].as_u64()?, s["studentCount"].as_u64()?))).collect();
    let unshipped: Vec<u64> = completed.keys().filter(|id| !shipped.contains(id)).copied().collect();
    let stale_views: Vec<u64> = completed
        .keys()
        .filter(|id| {
            view_of.get(id).is_none_or(|v| {
                v["applyStatus"] != "COMPLETED" || v["payStatus"] != "APPROVED" || v["deliveryStatus"] != "STARTED"
            })
        })
        .copied()
        .collect();
    let ghost_views: Vec<u64> = view_of
        .iter()
        .filter(|(id, v)| v["applyStatus"] == "COMPLETED" && !completed.contains_key(id))
        .map(|(id, _)| *id)
        .collect();
    let stale_schedules: Vec<u64> = courses
        .iter()
        .filter(|c| {
            let id = c["id"].as_u64().unwrap_or(0);
            schedule_count.get(&id) != c["studentCount"].as_u64().as_ref()
        })
        .filter_map(|c| c["id"].as_u64())
        .collect();
    t.note(format!(
        "{} shipments, {} student views, {} course schedules",
        deliveries.len(),
        views.len(),
        schedules.len()
    ));
    t.expect(
        unshipped.is_empty() && stale_views.is_empty() && ghost_views.is_empty() && stale_schedules.is_empty(),
        format!(
            "round {round}: the read models agree with the enrollments (unshipped {unshipped:?}, stale my-pages \
             {stale_views:?}, my-pages of no enrollment {ghost_views:?}, stale schedules {stale_schedules:?})"
        ),
    );
    Ok(())
}

/// Waits (at most 10 s) until the payment actor owes no refund; how many it
/// still owes.
async fn refunds_owed(api: &Api) -> Result<u64, Aborted> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let owed = api.breaker().await?["refundsOwed"].as_u64().unwrap_or(u64::MAX);
        if owed == 0 || Instant::now() > deadline {
            return Ok(owed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
