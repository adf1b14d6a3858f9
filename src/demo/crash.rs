//! `sugang demo crash`: the server is killed with SIGKILL under enrollment
//! load, three times. After each restart over the same data directory:
//! every acknowledged (201) enrollment is there, no course is over capacity,
//! payments match enrollments one for one, and the read models converge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::{Aborted, Api, Server, Timeline, ms};

const ROUNDS: usize = 3;
const CONCURRENCY: usize = 16;
/// New courses per round, and their capacity: small, so they fill up under
/// the load and the capacity check matters.
const COURSES_PER_ROUND: usize = 4;
const CAPACITY: u64 = 40;
/// The card-test account the simulated gateway declines.
const DECLINED: &str = "4000000000000002";

/// An acknowledged enrollment: id, course, student.
type Acked = (u64, u64, String);

pub(super) async fn run(t: &Timeline, dir: &Path) -> Result<String, Aborted> {
    let mut server = Server::start(t, dir, &[]).await?;
    let mut acked: Vec<Acked> = Vec::new();
    let mut courses: Vec<u64> = Vec::new();
    for round in 1..=ROUNDS {
        let api = server.api.clone();
        for k in 0..COURSES_PER_ROUND {
            courses.push(api.course(&format!("course-{round}-{k}"), Some(CAPACITY)).await?);
        }
        t.say(format!(
            "round {round}: {} courses of {CAPACITY} seats in all; {CONCURRENCY} clients enroll as fast as they can (1 in 8 \
             pays with a declined card)",
            courses.len()
        ));
        let load = Load::start(&api, &courses, round);
        let kill_after = Duration::from_millis(fastrand::u64(300..900));
        tokio::time::sleep(kill_after).await;
        let pid = server.pid();
        let before_kill = load.answered.load(Ordering::SeqCst);
        server.kill().await?;
        let round_acked = load.finish().await;
        t.say(format!(
            "SIGKILL pid {pid} after {} of load: {} answers by then; {}",
            ms(kill_after),
            before_kill,
            round_acked.tally
        ));
        acked.extend(round_acked.acked);

        server = Server::start(t, dir, &[]).await?;
        server.narrate_log(t, 6);
        verify(t, &server.api, &acked, round).await?;
    }
    let pid = server.pid();
    let status = server.terminate().await?;
    t.say(format!("SIGTERM to pid {pid}: {status}"));
    t.expect(status.success(), "the last server stops cleanly (exit 0)");
    Ok(format!(
        "{ROUNDS} SIGKILLs under load: after each restart all acknowledged enrollments ({} in the end) were there, no \
         course was over capacity, payments matched enrollments one for one and the read models converged",
        acked.len()
    ))
}

/// The enrollment load of one round.
struct Load {
    workers: tokio::task::JoinSet<Vec<(u16, Option<Acked>)>>,
    /// Answers received so far, across workers.
    answered: Arc<AtomicUsize>,
}

/// What one round's load saw.
struct Outcome {
    acked: Vec<Acked>,
    tally: String,
}

impl Load {
    fn start(api: &Api, courses: &[u64], round: usize) -> Load {
        let answered = Arc::new(AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..CONCURRENCY {
            let (api, courses, answered) = (api.clone(), courses.to_vec(), answered.clone());
            workers.spawn(async move {
                let mut seen = Vec::new();
                for n in 0.. {
                    let course = courses[fastrand::usize(..courses.len())];
                    let student = format!("r{round}-w{worker}-{n}");
                    let account = if fastrand::u8(..8) == 0 { DECLINED } else { "4242424242424242" };
                    // The kill cuts this off: an error is the end of the load.
                    let Ok(reply) = api.enroll_with(course, &student, account).await else { break };
                    answered.fetch_add(1, Ordering::SeqCst);
                    let acked = match (reply.status, reply.body["id"].as_u64()) {
                        (201, Some(id)) => Some((id, course, student)),
                        _ => None,
                    };
                    seen.push((reply.status, acked));
                }
                seen
            });
        }
        Load { workers, answered }
    }

    async fn finish(mut self) -> Outcome {
        let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
        let mut acked = Vec::new();
        let mut cut_off = 0;
        while let Some(done) = self.workers.join_next().await {
            cut_off += 1;
            for (status, ack) in done.unwrap_or_default() {
                *statuses.entry(status).or_default() += 1;
                acked.extend(ack);
            }
        }
        let tally: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        Outcome { acked, tally: format!("{} and {cut_off} requests cut off by the kill", tally.join(" ")) }
    }
}

/// The four guarantees, checked against what the restarted server answers.
async fn verify(t: &Timeline, api: &Api, acked: &[Acked], round: usize) -> Result<(), Aborted> {
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
        "after restart {round}: {} enrollments COMPLETED, {} of them acknowledged (the kill cut off the others' answers)",
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
    let full = courses.iter().filter(|c| c["studentCount"].as_u64() == c["capacity"].as_u64()).count();
    t.note(format!("{} courses, {full} full", courses.len()));
    t.expect(over.is_empty(), format!("round {round}: no course is over capacity {over:?}"));
    t.expect(
        mismatched.is_empty(),
        format!("round {round}: every course's studentCount equals its COMPLETED enrollments {mismatched:?}"),
    );

    // 3. Payments match enrollments one for one.
    let payments = api.all("/payments", "payments").await?;
    let approved: BTreeSet<u64> =
        payments.iter().filter(|p| p["payStatus"] == "APPROVED").filter_map(|p| p["applyId"].as_u64()).collect();
    let unpaid: Vec<u64> = completed.keys().filter(|id| !approved.contains(id)).copied().collect();
    let orphan: Vec<u64> = approved.iter().filter(|id| !completed.contains_key(id)).copied().collect();
    t.note(format!("{} payments, {} APPROVED", payments.len(), approved.len()));
    t.expect(
        unpaid.is_empty() && orphan.is_empty(),
        format!(
            "round {round}: every COMPLETED enrollment has an APPROVED payment and every APPROVED payment a COMPLETED \
             enrollment (unpaid {unpaid:?}, charged without enrollment {orphan:?})"
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
