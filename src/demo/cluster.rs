//! `sugang demo cluster`: three sugang nodes on a 3-server NATS JetStream
//! cluster (R3), all started by the demo on loopback ports. Students enroll
//! through every node; the primary (the node holding the lease, running
//! the actors) is killed with SIGKILL in the middle; the demo narrates who
//! took over and how long commands were refused, then checks on both
//! survivors: every acknowledged enrollment is there, no course over
//! capacity, each completed enrollment paid exactly once and no charge
//! without one, and the two survivors agree.
//!
//! Owns its NATS servers (through [`LocalNats`]) and its three child nodes.
//! Like every demo, it knows only what the nodes answered over HTTP and
//! what they logged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sugang_cluster::{LocalNats, LocalNatsError};

use super::{Aborted, Api, Reply, Server, Timeline, lock, ms};

/// The nodes' lease TTL: a takeover follows the primary's death by about this.
const LEASE_TTL_MS: u64 = 2000;
/// Commands must be served again this soon after the primary's death.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(5);
/// Clients enrolling at once, spread over the nodes.
const CLIENTS: usize = 12;
/// The courses of the load and their seats: the small ones fill up.
const CAPACITIES: [u64; 4] = [20, 20, 300, 300];
/// How long a client keeps retrying an enrollment no node takes.
const PATIENCE: Duration = Duration::from_secs(15);
/// How long the survivors may take to agree after the load.
const CONVERGE_LIMIT: Duration = Duration::from_secs(30);

/// Whether `nats-server` can be run (the binary `LocalNats` starts): the
/// one-line reason when not.
pub(super) fn preflight() -> Result<(), String> {
    runs(&std::env::var("SUGANG_NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned()))
}

fn runs(binary: &str) -> Result<(), String> {
    match std::process::Command::new(binary).arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!("`{binary} --version` failed ({}): is nats-server installed?", output.status)),
        Err(e) => Err(format!("cannot run `{binary}` ({e}): install it with `apt-get install nats-server`")),
    }
}

pub(super) async fn run(t: &Timeline, dir: &Path) -> Result<String, Aborted> {
    let nats = tokio::task::spawn_blocking(LocalNats::cluster3)
        .await
        .map_err(|e| Aborted(format!("starting nats-server: {e}")))?
        .map_err(|e: LocalNatsError| Aborted(e.to_string()))?;
    t.say(format!(
        "3 NATS servers (n1, n2, n3) started as one JetStream cluster: {}; the log stream is replicated on all \
         three (R3)",
        nats.urls().join(", ")
    ));
    let urls = nats.urls().join(",");
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let name = format!("s{i}");
        let node_dir = dir.join(&name);
        std::fs::create_dir_all(&node_dir).map_err(|e| Aborted(format!("creating {}: {e}", node_dir.display())))?;
        let ttl = LEASE_TTL_MS.to_string();
        let flags = ["--nats", &urls, "--node", &name, "--nats-replicas", "3", "--lease-ttl-ms", &ttl];
        let server = Server::start(t, &node_dir, &flags).await?;
        nodes.push(Some((name, server)));
    }
    let primary = wait_primary(&nodes, &[], Duration::from_secs(30)).await?;
    let settled = wait_settled(&nodes, primary).await;
    for (_, server) in nodes.iter_mut().flatten() {
        server.narrate_log(t);
    }
    let settled = settled?;
    t.say(format!(
        "the cluster is steady: the same primary, its lease and every node's heartbeat fresh, for {} in a row \
         (after {})",
        ms(Duration::from_millis(2 * LEASE_TTL_MS)),
        ms(settled)
    ));
    let status = status_of(&nodes, primary).await?;
    t.say(format!("GET /admin/cluster: node {} holds the primary lease", node_name(&nodes, primary)));
    describe(t, &status);
    t.expect(
        status["nodes"].as_array().is_some_and(|n| n.len() == 3),
        "the primary sees the three nodes in the cluster",
    );
    t.flush();

    // Courses are created through a replica: it passes the command to the primary.
    let replica = (0..3).find(|&i| i != primary).unwrap_or(0);
    let replica_api = api(&nodes, replica)?;
    let mut courses = HashMap::new();
    for (k, capacity) in CAPACITIES.iter().enumerate() {
        courses.insert(replica_api.course(&format!("cluster-{k}"), Some(*capacity)).await?, *capacity);
    }
    let ids: Vec<u64> = courses.keys().copied().collect();
    t.say(format!(
        "courses {ids:?} ({} seats) created through replica {}; {CLIENTS} clients enroll new students through \
         s1, s2 and s3 in turn (a node that does not answer: the next one)",
        CAPACITIES.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        node_name(&nodes, replica)
    ));
    let apis: Vec<Api> = (0..3).map(|i| api(&nodes, i)).collect::<Result<_, _>>()?;
    let load = Load::start(&apis, &ids);
    load.wait_acks(80, Duration::from_secs(60)).await?;

    let (primary_name, primary_server) =
        nodes[primary].take().ok_or_else(|| Aborted("the primary is not running".into()))?;
    let pid = primary_server.pid();
    let before = load.acks.load(Ordering::SeqCst);
    let killed_at = Instant::now();
    primary_server.kill(t).await?;
    t.say(format!("SIGKILL to the primary {primary_name} (pid {pid}) after {before} enrollments acknowledged"));
    let survivors: Vec<usize> = (0..3).filter(|&i| i != primary).collect();
    let (served_again, served_by) = commands_again(&nodes, &survivors, killed_at).await?;
    let new_primary = wait_primary(&nodes, &[primary], Duration::from_secs(15)).await?;
    let took_over = killed_at.elapsed();
    t.say(format!(
        "node {} took the primary lease (seen {} after the kill); the first command after the kill was served {} \
         after it, through {}",
        node_name(&nodes, new_primary),
        ms(took_over),
        ms(served_again),
        node_name(&nodes, served_by)
    ));
    t.expect(
        served_again <= TAKEOVER_LIMIT,
        format!(
            "commands are served again {} after the primary's death (at most {})",
            ms(served_again),
            ms(TAKEOVER_LIMIT)
        ),
    );
    for &i in &survivors {
        if let Some((_, server)) = nodes[i].as_mut() {
            server.narrate_log(t);
        }
    }
    let more = load.wait_acks(80, Duration::from_secs(30)).await?;
    t.say(format!("80 more enrollments acknowledged {} later; the load stops", ms(more)));
    let stopping = Instant::now();
    let seen = load.finish().await;
    t.say(format!(
        "load stopped after {} (each client finishes the request it has in flight): {} enrollments acknowledged \
         ({} after the kill); answers {}",
        ms(stopping.elapsed()),
        seen.acked.len(),
        seen.acked.len() as u64 - before.min(seen.acked.len() as u64),
        seen.statuses.iter().map(|(s, n)| format!("{s}×{n}")).collect::<Vec<_>>().join(" ")
    ));
    let status = status_of(&nodes, new_primary).await?;
    describe(t, &status);

    let views = converged(&nodes, &survivors, &courses, &seen).await?;
    let (first, view) = &views[0];
    let problems = violations(view, &courses, &seen);
    let completed = view.classes.values().filter(|c| c.2 == "COMPLETED").count();
    t.say(format!(
        "read from {}: {completed} completed enrollments in the demo's courses, seats {:?}",
        node_name(&nodes, *first),
        view.seats
    ));
    t.expect(
        problems.iter().all(|p| !p.starts_with("201")),
        format!("all {} acknowledged enrollments are there (COMPLETED, right course and student)", seen.acked.len()),
    );
    t.expect(
        problems.iter().all(|p| !p.contains("studentCount") && !p.contains("capacity")),
        "every course's studentCount equals its COMPLETED enrollments, none over capacity",
    );
    t.expect(
        problems.iter().all(|p| !p.contains("APPROVED")),
        "each COMPLETED enrollment has exactly one APPROVED payment, and no other has one",
    );
    t.expect(
        problems.iter().all(|p| !p.contains("without a 201")),
        format!(
            "every COMPLETED enrollment was acknowledged, or its answer was lost ({} requests had no sure answer)",
            seen.ambiguous.len()
        ),
    );
    for problem in problems.iter().take(8) {
        t.note(problem);
    }
    let agree = views.iter().all(|(_, v)| v == view);
    t.expect(
        agree,
        format!(
            "both survivors ({}) show the same enrollments, seats and payments",
            survivors.iter().map(|&i| node_name(&nodes, i)).collect::<Vec<_>>().join(", ")
        ),
    );
    let full = courses.iter().filter(|(id, cap)| view.seats.get(id) == Some(cap)).count();
    t.expect(full >= 2, format!("{full} courses filled up to their capacity, and not beyond"));

    for i in survivors {
        if let Some((name, server)) = nodes[i].take() {
            let pid = server.pid();
            let sent = Instant::now();
            // A node that does not stop in time is SIGKILLed as it is dropped.
            let stopped = server.terminate(t).await;
            t.say(format!(
                "SIGTERM to {name} (pid {pid}): {}",
                match &stopped {
                    Ok(status) => format!("{status} after {}", ms(sent.elapsed())),
                    Err(Aborted(why)) => why.clone(),
                }
            ));
            t.expect(
                stopped.is_ok_and(|s| s.success()),
                format!("{name} stops cleanly (exit 0) within 20 s of SIGTERM"),
            );
        }
    }
    drop(nats);
    t.say("NATS servers stopped");
    Ok(format!(
        "the primary {primary_name} was killed under load; {} took over and commands were served again {} later; \
         all {} acknowledged enrollments survived on both nodes left, no course over capacity, no charge without \
         an enrollment",
        node_name(&nodes, new_primary),
        ms(served_again),
        seen.acked.len()
    ))
}

type Nodes = Vec<Option<(String, Server)>>;

fn node_name(nodes: &Nodes, i: usize) -> String {
    nodes.get(i).and_then(|n| n.as_ref()).map_or_else(|| format!("s{}", i + 1), |(name, _)| name.clone())
}

fn api(nodes: &Nodes, i: usize) -> Result<Api, Aborted> {
    nodes[i].as_ref().map(|(_, server)| server.api.clone()).ok_or_else(|| Aborted(format!("node s{} is down", i + 1)))
}

/// `GET /admin/cluster` of node `i`.
async fn status_of(nodes: &Nodes, i: usize) -> Result<Value, Aborted> {
    let reply = api(nodes, i)?.get("/admin/cluster").await?;
    if reply.status != 200 {
        return Err(Aborted(format!("GET /admin/cluster of {} answered {}", node_name(nodes, i), reply.summary())));
    }
    Ok(reply.body)
}

/// Waits (at most 45 s) until `primary` has held a fresh lease, and every
/// node has sent fresh heartbeats, for two lease TTLs in a row: a fresh NATS
/// cluster's key-value buckets may refuse requests for seconds after their
/// creation, and the demo's kill must hit a steady cluster. How long it took.
async fn wait_settled(nodes: &Nodes, primary: usize) -> Result<Duration, Aborted> {
    let start = Instant::now();
    let ttl = Duration::from_millis(LEASE_TTL_MS);
    let mut steady_since = None;
    loop {
        let fresh = |v: &Value| v.as_u64().is_some_and(|age| age < LEASE_TTL_MS);
        let healthy = match status_of(nodes, primary).await {
            Ok(status) => {
                let seen = status["nodes"].as_array().cloned().unwrap_or_default();
                status["role"] == "primary"
                    && fresh(&status["leaseAgeMs"])
                    && seen.len() == 3
                    && seen.iter().all(|n| fresh(&n["heartbeatAgeMs"]))
            }
            Err(_) => false,
        };
        let since = *steady_since.get_or_insert_with(Instant::now);
        if !healthy {
            steady_since = None;
        } else if since.elapsed() >= 2 * ttl {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(45) {
            return Err(Aborted(format!(
                "the cluster did not settle within 45 s (primary {}: lease or heartbeats stale)",
                node_name(nodes, primary)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Notes the nodes as `/admin/cluster` shows them.
fn describe(t: &Timeline, status: &Value) {
    let stream = &status["stream"];
    t.note(format!(
        "stream {}: {} replicas, last position {}, leader {}; lease age {} of {} ms",
        stream["name"].as_str().unwrap_or("?"),
        stream["replicas"],
        stream["lastPosition"],
        stream["leader"].as_str().unwrap_or("?"),
        status["leaseAgeMs"],
        status["leaseTtlMs"]
    ));
    for node in status["nodes"].as_array().into_iter().flatten() {
        t.note(format!(
            "node {:<4} {:<8} applied {} (lag {}), heartbeat {} ms ago",
            node["name"].as_str().unwrap_or("?"),
            node["role"].as_str().unwrap_or("?"),
            node["appliedPosition"],
            node["lag"],
            node["heartbeatAgeMs"]
        ));
    }
}

/// Waits until one running node not in `excluded` says it is the primary
/// and the other running ones name it.
async fn wait_primary(nodes: &Nodes, excluded: &[usize], within: Duration) -> Result<usize, Aborted> {
    let deadline = Instant::now() + within;
    loop {
        let mut primaries = Vec::new();
        let mut named = HashSet::new();
        for i in (0..nodes.len()).filter(|i| !excluded.contains(i) && nodes[*i].is_some()) {
            if let Ok(status) = status_of(nodes, i).await {
                if status["role"] == "primary" {
                    primaries.push(i);
                }
                named.insert(status["primary"].as_str().unwrap_or_default().to_owned());
            }
        }
        if let [primary] = primaries[..]
            && named.len() == 1
            && named.contains(&node_name(nodes, primary))
        {
            return Ok(primary);
        }
        if Instant::now() > deadline {
            return Err(Aborted(format!("no single primary within {} (primaries {primaries:?})", ms(within))));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls a command (a new course) on the survivors in turn until one is
/// served: how long after `since`, and through which node.
async fn commands_again(nodes: &Nodes, survivors: &[usize], since: Instant) -> Result<(Duration, usize), Aborted> {
    for k in 0.. {
        let i = survivors[k % survivors.len()];
        let body = json!({"name": format!("probe-{k}"), "teacher": "Hong-Gil-dong", "fee": 0, "capacity": 1});
        let served = tokio::time::timeout(Duration::from_secs(1), api(nodes, i)?.post("/courses", body)).await;
        if let Ok(Ok(reply)) = served
            && reply.status == 201
        {
            return Ok((since.elapsed(), i));
        }
        if since.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(Aborted("no command was served within 30 s of the primary's death".into()))
}

/// An acknowledged enrollment: id, course, student.
type Acked = (u64, u64, String);

/// What the load's clients saw.
#[derive(Default)]
struct Seen {
    acked: Vec<Acked>,
    /// (student, course) of requests with no sure answer: cut off after
    /// being sent, or a 504 (502): the primary took it and went silent.
    ambiguous: HashSet<(String, u64)>,
    statuses: BTreeMap<String, u64>,
    max_seq: u64,
}

/// Clients enrolling new students through the nodes in turn until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
    seen: Arc<Mutex<Seen>>,
    workers: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(apis: &[Api], courses: &[u64]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..CLIENTS {
            let (apis, courses) = (apis.to_vec(), courses.to_vec());
            let (stop, acks, seen) = (stop.clone(), acks.clone(), seen.clone());
            workers.spawn(async move {
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    let student = format!("student-{w}-{k}");
                    let course = courses[(w + k) % courses.len()];
                    enroll(&apis, (w + k) % apis.len(), course, &student, &acks, &seen).await;
                    k += 1;
                }
            });
        }
        Load { stop, acks, seen, workers }
    }

    /// Waits until `more` further enrollments are acknowledged; how long that took.
    async fn wait_acks(&self, more: u64, within: Duration) -> Result<Duration, Aborted> {
        let start = Instant::now();
        let target = self.acks.load(Ordering::SeqCst) + more;
        while self.acks.load(Ordering::SeqCst) < target {
            if start.elapsed() > within {
                return Err(Aborted(format!("{more} more enrollments were not acknowledged within {}", ms(within))));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(start.elapsed())
    }

    async fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        while self.workers.join_next().await.is_some() {}
        std::mem::take(&mut *lock(&self.seen))
    }
}

/// One student's enrollment in `course` through node `node` first; a node
/// that does not answer is left for the next, a 5xx retried, for at most
/// [`PATIENCE`].
async fn enroll(apis: &[Api], mut node: usize, course: u64, student: &str, acks: &AtomicU64, seen: &Mutex<Seen>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = apis[node].enroll(course, student).await;
        if !record(answer, course, student, acks, &mut lock(seen)) || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        node = (node + 1) % apis.len();
    }
}

/// Records one answer; whether to try again.
fn record(
    answer: Result<Reply, reqwest::Error>,
    course: u64,
    student: &str,
    acks: &AtomicU64,
    seen: &mut Seen,
) -> bool {
    match answer {
        Ok(reply) => {
            *seen.statuses.entry(reply.status.to_string()).or_default() += 1;
            seen.max_seq = seen.max_seq.max(reply.seq.unwrap_or(0));
            match reply.status {
                201 => {
                    if let Some(id) = reply.body["id"].as_u64() {
                        seen.acked.push((id, course, student.to_owned()));
                    }
                    acks.fetch_add(1, Ordering::SeqCst);
                    false
                }
                502..=504 => {
                    // 504 (a proxy's 502): the primary took it and went
                    // silent, it may have run; 503: nothing was done.
                    if reply.status != 503 {
                        seen.ambiguous.insert((student.to_owned(), course));
                    }
                    true
                }
                _ => false,
            }
        }
        Err(e) => {
            *seen.statuses.entry("no answer".into()).or_default() += 1;
            if !e.is_connect() {
                seen.ambiguous.insert((student.to_owned(), course));
            }
            true
        }
    }
}

/// What one node shows of the demo's courses.
#[derive(PartialEq, Eq)]
struct View {
    /// id → (course, student, status)
    classes: BTreeMap<u64, (u64, String, String)>,
    /// course → studentCount
    seats: BTreeMap<u64, u64>,
    /// applyId → the payStatus of each of its payments
    payments: BTreeMap<u64, Vec<String>>,
}

async fn view(api: &Api, courses: &HashMap<u64, u64>, seq: u64) -> Result<View, Aborted> {
    // `?after=` answers once this node has applied the log up to `seq`.
    let all_payments = api.all(&format!("/payments?after={seq}"), "payments").await?;
    let mut classes = BTreeMap::new();
    for class in api.all("/classes", "classes").await? {
        let course = class["courseId"].as_u64().unwrap_or(0);
        if courses.contains_key(&course) {
            let student = class["student"].as_str().unwrap_or_default().to_owned();
            let status = class["status"].as_str().unwrap_or_default().to_owned();
            classes.insert(class["id"].as_u64().unwrap_or(0), (course, student, status));
        }
    }
    let mut seats = BTreeMap::new();
    for item in api.all("/courses", "courses").await? {
        let id = item["id"].as_u64().unwrap_or(0);
        if courses.contains_key(&id) {
            seats.insert(id, item["studentCount"].as_u64().unwrap_or(u64::MAX));
        }
    }
    let mut payments: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for payment in all_payments {
        let apply_id = payment["applyId"].as_u64().unwrap_or(0);
        if classes.contains_key(&apply_id) {
            payments.entry(apply_id).or_default().push(payment["payStatus"].as_str().unwrap_or_default().to_owned());
        }
    }
    Ok(View { classes, seats, payments })
}

/// What breaks an invariant in one node's view, one line each: a 201 not
/// kept ("201 …"), a COMPLETED class nobody was told of ("… without a
/// 201 …"), a seat count off or over capacity, a payment count off.
fn violations(view: &View, courses: &HashMap<u64, u64>, seen: &Seen) -> Vec<String> {
    let mut out = Vec::new();
    let acked: HashSet<u64> = seen.acked.iter().map(|(id, ..)| *id).collect();
    for (id, course, student) in &seen.acked {
        match view.classes.get(id) {
            Some((c, s, status)) if c == course && s == student && status == "COMPLETED" => {}
            other => out.push(format!("201 for enrollment {id} ({student} in course {course}) not kept: {other:?}")),
        }
    }
    let mut completed: HashMap<u64, u64> = HashMap::new();
    for (id, (course, student, status)) in &view.classes {
        if status != "COMPLETED" {
            continue;
        }
        *completed.entry(*course).or_default() += 1;
        if !acked.contains(id) && !seen.ambiguous.contains(&(student.clone(), *course)) {
            out.push(format!("enrollment {id} ({student} in course {course}) is COMPLETED without a 201"));
        }
    }
    for (course, capacity) in courses {
        let count = completed.get(course).copied().unwrap_or(0);
        let seats = view.seats.get(course).copied();
        if seats != Some(count) {
            out.push(format!("course {course}: studentCount {seats:?}, COMPLETED enrollments {count}"));
        }
        if count > *capacity {
            out.push(format!("course {course} over capacity: {count} of {capacity}"));
        }
    }
    for (id, (_, _, status)) in &view.classes {
        let approved = view.payments.get(id).map_or(0, |p| p.iter().filter(|s| *s == "APPROVED").count());
        let expected = usize::from(status == "COMPLETED");
        if approved != expected {
            out.push(format!("enrollment {id} ({status}) has {approved} APPROVED payments, not {expected}"));
        }
    }
    out
}

/// The survivors' views once they agree and hold every invariant, or as
/// they are after [`CONVERGE_LIMIT`] (the checks then say what is wrong).
async fn converged(
    nodes: &Nodes,
    survivors: &[usize],
    courses: &HashMap<u64, u64>,
    seen: &Seen,
) -> Result<Vec<(usize, View)>, Aborted> {
    let deadline = Instant::now() + CONVERGE_LIMIT;
    loop {
        let mut views = Vec::new();
        for &i in survivors {
            views.push((i, view(&api(nodes, i)?, courses, seen.max_seq).await?));
        }
        let settled = views.iter().all(|(_, v)| v == &views[0].1 && violations(v, courses, seen).is_empty());
        if settled || Instant::now() > deadline {
            return Ok(views);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(acked: &[Acked]) -> Seen {
        Seen { acked: acked.to_vec(), ..Seen::default() }
    }

    fn class(course: u64, student: &str, status: &str) -> (u64, String, String) {
        (course, student.to_owned(), status.to_owned())
    }

    #[test]
    fn a_view_that_keeps_every_201_and_counts_right_has_no_violation() {
        let courses = HashMap::from([(1, 2)]);
        let view = View {
            classes: BTreeMap::from([(5, class(1, "a", "COMPLETED")), (6, class(1, "b", "COMPLETED"))]),
            seats: BTreeMap::from([(1, 2)]),
            payments: BTreeMap::from([(5, vec!["APPROVED".into()]), (6, vec!["APPROVED".into()])]),
        };
        let seen = seen(&[(5, 1, "a".into()), (6, 1, "b".into())]);
        assert_eq!(violations(&view, &courses, &seen), Vec::<String>::new());
    }

    #[test]
    fn a_lost_201_an_unacknowledged_seat_an_overbooking_and_a_double_charge_are_each_named() {
        let courses = HashMap::from([(1, 1)]);
        let view = View {
            classes: BTreeMap::from([(6, class(1, "b", "COMPLETED")), (7, class(1, "c", "COMPLETED"))]),
            seats: BTreeMap::from([(1, 2)]),
            payments: BTreeMap::from([(6, vec!["APPROVED".into(), "APPROVED".into()]), (7, vec!["APPROVED".into()])]),
        };
        let mut seen = seen(&[(5, 1, "a".into()), (6, 1, "b".into())]);
        let found = violations(&view, &courses, &seen);
        assert!(found.iter().any(|v| v.starts_with("201 for enrollment 5")), "{found:?}");
        assert!(
            found.iter().any(|v| v.contains("enrollment 7 (c in course 1) is COMPLETED without a 201")),
            "{found:?}"
        );
        assert!(found.iter().any(|v| v.contains("over capacity: 2 of 1")), "{found:?}");
        assert!(found.iter().any(|v| v.contains("enrollment 6 (COMPLETED) has 2 APPROVED")), "{found:?}");
        // A request whose answer was lost explains a COMPLETED enrollment without a 201.
        seen.ambiguous.insert(("c".into(), 1));
        let found = violations(&view, &courses, &seen);
        assert!(!found.iter().any(|v| v.contains("without a 201")), "{found:?}");
    }

    #[test]
    fn without_nats_server_the_preflight_says_how_to_install_it() {
        let refused = runs("/nonexistent/nats-server").expect_err("no such binary");
        assert!(refused.contains("apt-get install nats-server"), "{refused}");
        assert!(!refused.contains('\n'), "{refused}");
    }
}
