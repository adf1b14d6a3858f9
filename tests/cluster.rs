//! sugang as a cluster (issue 16), as an operator runs it: a 3-server NATS
//! JetStream cluster (R3) and three `sugang serve --nats … --node …`
//! processes on loopback ports, each over its own temporary data directory,
//! all killed when the test ends. Load goes to every node; nodes are
//! SIGKILLed, SIGSTOPped past their lease, and a NATS server is killed under
//! it; afterwards every acknowledged enrollment must be on every surviving
//! node, no course over capacity, no charge without an enrollment, and the
//! subscribers' work done once.
//!
//! Needs Debian's `nats-server`, so every test is ignored by the README's
//! `cargo test --workspace`; `.ci/run` runs them with
//! `cargo test --test cluster -- --ignored --test-threads 1` (one at a
//! time: each starts six servers on a 2-core machine).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sugang_cluster::LocalNats;

/// The lease TTL the nodes run with: a takeover follows a death after about this long.
const LEASE_TTL_MS: u64 = 2000;
/// How long after the primary's SIGKILL commands must succeed again.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(5);
/// How long a client keeps retrying a request no node takes (503s, no answer).
const PATIENCE: Duration = Duration::from_secs(15);
/// How long the nodes may take to agree after the load.
const CONVERGE_LIMIT: Duration = Duration::from_secs(30);
/// The card the simulated gateway approves.
const CARD: &str = "4242424242424242";
/// Seats of the courses a [`Load`] fills while a test waits (a takeover,
/// a pause): more than a fast machine sells meanwhile. Once every course
/// is full, every request is a 409 and the test waits for acks that never
/// come (seen on a run at ~400 enrollments/s, with 400 seats a course).
const LOAD_SEATS: u64 = 5000;

// ---- the cluster -----------------------------------------------------------

/// One `sugang serve` node.
struct Node {
    name: String,
    url: String,
    /// The listen address, kept so a node can be started again on it.
    listen: String,
    data: PathBuf,
    log: PathBuf,
    /// `None` once killed.
    child: Option<Child>,
}

/// Three NATS servers and three sugang nodes, killed on drop; their data
/// and logs are kept when a test fails (the path is printed).
struct Cluster {
    nats: LocalNats,
    nodes: Vec<Node>,
    /// Holds the nodes' data directories and logs.
    dir: Option<tempfile::TempDir>,
    client: reqwest::Client,
    /// More flags for every node's `sugang serve`.
    flags: Vec<String>,
}

impl Cluster {
    /// Starts the NATS cluster and three nodes, and waits until every node
    /// is ready and one of them is the primary.
    async fn start() -> Cluster {
        Cluster::start_with(&[]).await
    }

    /// [`Cluster::start`] with `flags` added to every node's `sugang serve`.
    async fn start_with(flags: &[&str]) -> Cluster {
        let nats = LocalNats::cluster3().expect("three local nats-servers (apt-get install nats-server)");
        let dir = tempfile::Builder::new().prefix("sugang-cluster-test-").tempdir().expect("a temporary directory");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .expect("an HTTP client");
        let mut nodes = Vec::new();
        for i in 1..=3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let name = format!("s{i}");
            let listen = format!("127.0.0.1:{port}");
            nodes.push(Node {
                url: format!("http://{listen}"),
                listen,
                data: dir.path().join(&name),
                log: dir.path().join(format!("{name}.log")),
                name,
                child: None,
            });
        }
        let flags = flags.iter().map(|flag| flag.to_string()).collect();
        let mut cluster = Cluster { nats, nodes, dir: Some(dir), client, flags };
        // The first node alone, then the two others: three nodes joining a
        // fresh NATS cluster at once race its layout's creation, and the
        // losers fail to join (their first heartbeat: "no stream found for
        // given subject"), reported to the core.
        cluster.spawn(0);
        cluster.wait_ready(0).await;
        for i in 1..3 {
            cluster.spawn(i);
        }
        for i in 1..3 {
            cluster.wait_ready(i).await;
        }
        cluster.wait_primary(&[], Duration::from_secs(30)).await;
        cluster.wait_settled().await;
        cluster
    }

    /// Waits until the cluster has been steady for two lease TTLs: the same
    /// primary, every node's heartbeat and the lease younger than a TTL, no
    /// node exited. A fresh NATS cluster's R3 key-value buckets may answer
    /// "no stream found for given subject" for seconds after their
    /// creation, and a primary that cannot renew then fail-stops: a test
    /// must not start its load on a cluster that is still losing nodes.
    async fn wait_settled(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(45);
        let steady_for = Duration::from_millis(2 * LEASE_TTL_MS);
        let mut steady_since: Option<(Instant, String)> = None;
        loop {
            let deaths = self.deaths();
            assert!(deaths.is_empty(), "a node died while the cluster started: {deaths}");
            let mut primary = None;
            let mut healthy = true;
            for i in 0..self.nodes.len() {
                let Some(status) = self.status(i).await else {
                    healthy = false;
                    continue;
                };
                if status["role"] == "primary" {
                    primary = Some(self.nodes[i].name.clone());
                    let lease_fresh = status["leaseAgeMs"].as_u64().is_some_and(|age| age < LEASE_TTL_MS);
                    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
                    let beating = nodes.len() == self.nodes.len()
                        && nodes.iter().all(|n| n["heartbeatAgeMs"].as_u64().is_some_and(|age| age < LEASE_TTL_MS));
                    healthy &= lease_fresh && beating;
                }
            }
            match (&primary, &steady_since) {
                (Some(now), Some((since, was))) if healthy && now == was => {
                    if since.elapsed() >= steady_for {
                        return;
                    }
                }
                (Some(now), _) if healthy => steady_since = Some((Instant::now(), now.clone())),
                _ => steady_since = None,
            }
            assert!(Instant::now() < deadline, "the cluster did not settle within 45 s: {}", self.logs_of_trouble());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The nodes that exited on their own, with their status and last log
    /// lines; empty when none did.
    fn deaths(&mut self) -> String {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            if let Some(status) = self.exited(i) {
                out.push(format!("node {} exited with {status}:\n{}", self.nodes[i].name, self.log_tail(i)));
            }
        }
        out.join("\n")
    }

    /// The warnings and errors of every node's log, the last 10 each.
    fn logs_of_trouble(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let trouble: Vec<&str> =
                text.lines().filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\"")).collect();
            out.push_str(&format!("\n-- node {}:\n", node.name));
            for line in trouble.iter().rev().take(10).rev() {
                out.push_str(&line.chars().take(300).collect::<String>());
                out.push('\n');
            }
        }
        out
    }

    fn spawn(&mut self, i: usize) {
        let nats = self.nats.urls().join(",");
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("a log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_sugang"));
        command
            .args(["serve", "--listen", &node.listen, "--data-dir"])
            .arg(&node.data)
            .args(["--nats", &nats, "--node", &node.name, "--nats-replicas", "3"])
            .args(["--lease-ttl-ms", &LEASE_TTL_MS.to_string(), "--log-format", "json"])
            .args(&self.flags)
            .env("RUST_LOG", "info,sugang::cluster=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SUGANG_") {
                command.env_remove(name);
            }
        }
        node.child = Some(command.spawn().expect("sugang serve starts"));
    }

    async fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.nodes[i].child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("node {} exited with {status} before it was ready: {}", self.nodes[i].name, self.log_tail(i));
            }
            if let Ok(response) = self.client.get(format!("{}/health/ready", self.nodes[i].url)).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "node {} not ready in 60 s: {}", self.nodes[i].name, self.log_tail(i));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    fn pid(&self, i: usize) -> i32 {
        self.nodes[i].child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// SIGKILLs node `i` and reaps it.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        let pid = self.pid(i);
        assert!(pid > 0, "node {} is not running", self.nodes[i].name);
        // SAFETY: `kill` only sends a signal, to a child this test started and has not reaped.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "signal {signal} to {pid}: {}", std::io::Error::last_os_error());
    }

    /// How node `i` ended, if it has.
    fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.nodes[i].child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last lines of node `i`'s log, for failure messages.
    fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// `GET /admin/cluster` of node `i`, if it answers.
    async fn status(&self, i: usize) -> Option<Value> {
        let response = self
            .client
            .get(format!("{}/admin/cluster", self.nodes[i].url))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        response.json().await.ok()
    }

    /// Waits until one node not in `excluded` says it is the primary and
    /// every other such node that answers names it; its index.
    async fn wait_primary(&self, excluded: &[usize], within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let mut primaries = Vec::new();
            let mut named = HashSet::new();
            for i in (0..self.nodes.len()).filter(|i| !excluded.contains(i)) {
                if let Some(status) = self.status(i).await {
                    if status["role"] == "primary" {
                        primaries.push(i);
                    }
                    named.insert(status["primary"].as_str().unwrap_or_default().to_owned());
                }
            }
            if let [primary] = primaries[..]
                && named.len() == 1
                && named.contains(&self.nodes[primary].name)
            {
                return primary;
            }
            assert!(
                Instant::now() < deadline,
                "no single primary among the nodes but {excluded:?} within {within:?} (primaries {primaries:?}, \
                 named {named:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            // A stopped process cannot die of SIGKILL until it is continued.
            if let Some(child) = &self.nodes[i].child {
                // SAFETY: a signal to our own unreaped child.
                unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
            }
            self.kill(i);
        }
        // Kept when the test fails, or when asked (SUGANG_KEEP_TEST_LOGS=1),
        // to read what the nodes did in a run that passed.
        if (std::thread::panicking() || std::env::var_os("SUGANG_KEEP_TEST_LOGS").is_some())
            && let Some(dir) = self.dir.take()
        {
            eprintln!("the nodes' data and logs are kept in {}", dir.keep().display());
        }
    }
}

// ---- HTTP ------------------------------------------------------------------

/// One answer: status, `X-Sugang-Seq`, JSON body.
struct Reply {
    status: u16,
    seq: Option<u64>,
    body: Value,
}

async fn send(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Result<Reply, reqwest::Error> {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let seq = response.headers().get("x-sugang-seq").and_then(|v| v.to_str().ok()?.parse().ok());
    let bytes = response.bytes().await?;
    Ok(Reply { status, seq, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) })
}

/// Every item of a collection, page by page; `Err` with why when the node
/// does not serve it.
async fn all(client: &reqwest::Client, base: &str, path: &str, name: &str) -> Result<Vec<Value>, String> {
    let mut items = Vec::new();
    let separator = if path.contains('?') { '&' } else { '?' };
    for page in 0.. {
        let url = format!("{base}{path}{separator}size=1000&page={page}");
        let reply = send(client, Method::GET, &url, None).await.map_err(|e| format!("GET {url}: {e}"))?;
        if reply.status != 200 {
            return Err(format!("GET {url}: {} {}", reply.status, reply.body));
        }
        items.extend(reply.body["_embedded"][name].as_array().cloned().unwrap_or_default());
        if page + 1 >= reply.body["page"]["totalPages"].as_u64().unwrap_or(0) {
            break;
        }
    }
    Ok(items)
}

/// Creates a course through `base`, retrying while no primary takes it.
async fn course(client: &reqwest::Client, base: &str, name: &str, capacity: u64) -> u64 {
    let body = json!({"name": name, "teacher": "Hong", "fee": 10000, "textBook": "book", "capacity": capacity});
    let deadline = Instant::now() + PATIENCE;
    loop {
        match send(client, Method::POST, &format!("{base}/courses"), Some(body.clone())).await {
            Ok(reply) if reply.status == 201 => return reply.body["id"].as_u64().expect("an id"),
            Ok(reply) if reply.status >= 500 && Instant::now() < deadline => {}
            Ok(reply) => panic!("POST {base}/courses: {} {}", reply.status, reply.body),
            Err(e) => assert!(Instant::now() < deadline, "POST {base}/courses: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- load ------------------------------------------------------------------

/// An acknowledged (201) enrollment: id, course, student.
type Acked = (u64, u64, String);

/// What the clients of a load saw.
#[derive(Default)]
struct Seen {
    acked: Vec<Acked>,
    /// (student, course) of requests whose outcome is unknown: cut off
    /// after being sent, or 504/502 (the primary took a replica's forward
    /// and went silent). Each may have enrolled; a 503 did nothing.
    ambiguous: HashSet<(String, u64)>,
    statuses: BTreeMap<String, u64>,
    /// The highest seq answered.
    max_seq: u64,
    /// 5xx answers other than 502/503/504 (a fault, not a refusal), with their body.
    faults: Vec<String>,
}

/// Clients enrolling new students through every node in turn until stopped:
/// a node that gives no answer is left for the next, a 5xx retried
/// (as the rush does), for at most [`PATIENCE`].
struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
    workers: tokio::task::JoinSet<Seen>,
}

impl Load {
    fn start(client: &reqwest::Client, urls: &[String], courses: &[u64], tag: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..clients {
            let (client, urls, courses) = (client.clone(), urls.to_vec(), courses.to_vec());
            let (stop, acks, tag) = (stop.clone(), acks.clone(), tag.to_owned());
            workers.spawn(async move {
                let mut seen = Seen::default();
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    let student = format!("{tag}-{w}-{k}");
                    let course = courses[(w + k) % courses.len()];
                    enroll(&client, &urls, (w + k) % urls.len(), course, &student, &acks, &mut seen).await;
                    k += 1;
                }
                seen
            });
        }
        Load { stop, acks, workers }
    }

    /// 201s so far.
    fn acked(&self) -> u64 {
        self.acks.load(Ordering::SeqCst)
    }

    /// Waits until `more` further 201s have come (at most `within`), and
    /// says how long that took; on a timeout, fails the test with what the
    /// nodes logged.
    async fn wait_acks(&self, cluster: &mut Cluster, more: u64, within: Duration) -> Duration {
        let start = Instant::now();
        let target = self.acked() + more;
        while self.acked() < target {
            if start.elapsed() > within {
                panic!(
                    "{more} more enrollments not acknowledged within {within:?}; {}{}",
                    cluster.deaths(),
                    cluster.logs_of_trouble()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        start.elapsed()
    }

    async fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Seen::default();
        while let Some(seen) = self.workers.join_next().await {
            let seen = seen.expect("a load client");
            all.acked.extend(seen.acked);
            all.ambiguous.extend(seen.ambiguous);
            for (status, n) in seen.statuses {
                *all.statuses.entry(status).or_default() += n;
            }
            all.max_seq = all.max_seq.max(seen.max_seq);
            all.faults.extend(seen.faults);
        }
        all
    }
}

/// One student's enrollment in `course`, through node `node` first.
async fn enroll(
    client: &reqwest::Client,
    urls: &[String],
    mut node: usize,
    course: u64,
    student: &str,
    acks: &AtomicU64,
    seen: &mut Seen,
) {
    let body = json!({"courseId": course, "student": student, "payAccount": CARD, "addr": "Seoul"});
    let deadline = Instant::now() + PATIENCE;
    loop {
        let url = format!("{}/classes", urls[node]);
        match send(client, Method::POST, &url, Some(body.clone())).await {
            Ok(reply) => {
                *seen.statuses.entry(reply.status.to_string()).or_default() += 1;
                seen.max_seq = seen.max_seq.max(reply.seq.unwrap_or(0));
                match reply.status {
                    201 => {
                        let id = reply.body["id"].as_u64().expect("a 201 names its enrollment");
                        seen.acked.push((id, course, student.to_owned()));
                        acks.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    502..=504 => {
                        // 504 (a proxy's 502): the primary took it and went
                        // silent, it may have run; 503: nothing was done.
                        if reply.status != 503 {
                            seen.ambiguous.insert((student.to_owned(), course));
                        }
                        if Instant::now() > deadline {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        node = (node + 1) % urls.len();
                    }
                    500.. => {
                        seen.faults.push(format!("{} from {}: {}", reply.status, urls[node], reply.body));
                        return;
                    }
                    _ => return,
                }
            }
            Err(e) => {
                *seen.statuses.entry("no answer".into()).or_default() += 1;
                if !e.is_connect() {
                    seen.ambiguous.insert((student.to_owned(), course));
                }
                if Instant::now() > deadline {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                node = (node + 1) % urls.len();
            }
        }
    }
}

// ---- checks ----------------------------------------------------------------

/// What one node shows of the test's courses.
#[derive(PartialEq, Eq, Debug)]
struct View {
    /// id → (course, student, status)
    classes: BTreeMap<u64, (u64, String, String)>,
    /// course → studentCount
    seats: BTreeMap<u64, u64>,
    /// applyId → payStatus of every payment of those classes
    payments: BTreeMap<u64, Vec<String>>,
}

async fn view(client: &reqwest::Client, base: &str, courses: &HashMap<u64, u64>, seq: u64) -> Result<View, String> {
    // `?after=` waits until this node has applied the log up to `seq`.
    let payments_all = all(client, base, &format!("/payments?after={seq}"), "payments").await?;
    let mut classes = BTreeMap::new();
    for class in all(client, base, "/classes", "classes").await? {
        let course = class["courseId"].as_u64().unwrap_or(0);
        if courses.contains_key(&course) {
            let student = class["student"].as_str().unwrap_or_default().to_owned();
            let status = class["status"].as_str().unwrap_or_default().to_owned();
            classes.insert(class["id"].as_u64().unwrap_or(0), (course, student, status));
        }
    }
    let mut seats = BTreeMap::new();
    for item in all(client, base, "/courses", "courses").await? {
        let id = item["id"].as_u64().unwrap_or(0);
        if courses.contains_key(&id) {
            seats.insert(id, item["studentCount"].as_u64().unwrap_or(u64::MAX));
        }
    }
    let mut payments: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for payment in payments_all {
        let apply_id = payment["applyId"].as_u64().unwrap_or(0);
        if classes.contains_key(&apply_id) {
            payments.entry(apply_id).or_default().push(payment["payStatus"].as_str().unwrap_or_default().to_owned());
        }
    }
    Ok(View { classes, seats, payments })
}

/// The invariants on one node's view: every 201 is a COMPLETED class of its
/// course and student; every COMPLETED class was acknowledged or had its
/// answer lost; studentCount = COMPLETED classes ≤ capacity; each COMPLETED
/// class has exactly one APPROVED payment, and no other class has one.
fn violations(view: &View, courses: &HashMap<u64, u64>, seen: &Seen) -> Vec<String> {
    let mut out = Vec::new();
    let acked: HashSet<u64> = seen.acked.iter().map(|(id, ..)| *id).collect();
    for (id, course, student) in &seen.acked {
        match view.classes.get(id) {
            Some((c, s, status)) if c == course && s == student && status == "COMPLETED" => {}
            other => out.push(format!("201 for class {id} ({student} in course {course}) not kept: {other:?}")),
        }
    }
    let mut completed: HashMap<u64, u64> = HashMap::new();
    for (id, (course, student, status)) in &view.classes {
        if status != "COMPLETED" {
            continue;
        }
        *completed.entry(*course).or_default() += 1;
        if !acked.contains(id) && !seen.ambiguous.contains(&(student.clone(), *course)) {
            out.push(format!("class {id} ({student} in course {course}) COMPLETED without a 201 or a lost answer"));
        }
    }
    for (course, capacity) in courses {
        let count = completed.get(course).copied().unwrap_or(0);
        let seats = view.seats.get(course).copied();
        if seats != Some(count) {
            out.push(format!("course {course}: studentCount {seats:?}, COMPLETED classes {count}"));
        }
        if count > *capacity {
            out.push(format!("course {course} over capacity: {count} of {capacity}"));
        }
    }
    for (id, (_, _, status)) in &view.classes {
        let approved = view.payments.get(id).map_or(0, |p| p.iter().filter(|s| *s == "APPROVED").count());
        let expected = usize::from(status == "COMPLETED");
        if approved != expected {
            out.push(format!("class {id} ({status}) has {approved} APPROVED payments, not {expected}"));
        }
    }
    out
}

/// Waits until every node in `live` shows the same view and it holds every
/// invariant; panics naming what is wrong after [`CONVERGE_LIMIT`]. Returns
/// the agreed view.
async fn converged(cluster: &Cluster, live: &[usize], courses: &HashMap<u64, u64>, seen: &Seen) -> View {
    let deadline = Instant::now() + CONVERGE_LIMIT;
    loop {
        let mut views = Vec::new();
        let mut problems = Vec::new();
        for &i in live {
            match view(&cluster.client, &cluster.nodes[i].url, courses, seen.max_seq).await {
                Ok(view) => views.push((i, view)),
                Err(e) => problems.push(format!("node {}: {e}", cluster.nodes[i].name)),
            }
        }
        if problems.is_empty() {
            for (i, view) in &views {
                problems.extend(
                    violations(view, courses, seen)
                        .into_iter()
                        .map(|v| format!("node {}: {v}", cluster.nodes[*i].name)),
                );
                if view != &views[0].1 {
                    problems.push(format!(
                        "node {} differs from node {}",
                        cluster.nodes[*i].name, cluster.nodes[views[0].0].name
                    ));
                }
            }
        }
        if problems.is_empty() {
            return views.swap_remove(0).1;
        }
        if Instant::now() > deadline {
            let shown: Vec<&String> = problems.iter().take(12).collect();
            panic!("after {CONVERGE_LIMIT:?}, {} problems: {shown:#?}", problems.len());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates `capacities.len()` courses through `base`; id → capacity.
async fn courses(cluster: &Cluster, base: &str, tag: &str, capacities: &[u64]) -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    for (k, capacity) in capacities.iter().enumerate() {
        out.insert(course(&cluster.client, base, &format!("{tag}-{k}"), *capacity).await, *capacity);
    }
    out
}

/// Polls a command (a new course) on the survivors until one answers 201;
/// how long after `since` it did, and which node answered.
async fn commands_again(cluster: &Cluster, survivors: &[usize], since: Instant, tag: &str) -> (Duration, usize) {
    let body = json!({"name": format!("{tag}-probe"), "teacher": "Hong", "fee": 0, "capacity": 1});
    let mut k = 0;
    loop {
        let i = survivors[k % survivors.len()];
        k += 1;
        let url = format!("{}/courses", cluster.nodes[i].url);
        let request = cluster.client.post(&url).json(&body).timeout(Duration::from_secs(1));
        if let Ok(response) = request.send().await
            && response.status() == 201
        {
            return (since.elapsed(), i);
        }
        assert!(since.elapsed() < Duration::from_secs(30), "no command succeeded within 30 s of the kill");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn tag() -> String {
    format!("t{:06x}", fastrand::u32(..0xff_ffff))
}

// ---- tests -----------------------------------------------------------------

/// `sugang rush` spread over the three nodes keeps every invariant it checks,
/// and every node shows the same classes, seats and payments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server"]
async fn a_rush_spread_over_three_nodes_keeps_every_invariant() {
    let cluster = Cluster::start().await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sugang"));
    command.arg("rush");
    for url in cluster.urls() {
        command.args(["--url", &url]);
    }
    let output = command
        .args(["--students", "300", "--courses", "6", "--capacity", "40", "--concurrency", "16"])
        .args(["--spread", "--tries", "3", "--patience-ms", "10000"])
        .env_remove("SUGANG_RUSH_TOKEN")
        .output()
        .await
        .expect("sugang rush runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{:?}\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("240 of 240 seats sold"), "{stdout}");
    assert!(stdout.contains("invariants: all hold"), "{stdout}");
    assert!(stdout.contains("compared with 2 other nodes"), "{stdout}");
    assert_eq!(stdout.matches("shows the same").count(), 2, "{stdout}");
}

/// `sugang rush` over the three nodes while the primary is SIGKILLed: its
/// students' requests go to the next node and are retried through the
/// takeover (`--patience-ms`), and every invariant it checks holds on the
/// nodes left, the dead one left out of the comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server"]
async fn a_rush_over_three_nodes_rides_out_the_primarys_sigkill() {
    let mut cluster = Cluster::start().await;
    let primary = cluster.wait_primary(&[], Duration::from_secs(10)).await;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sugang"));
    command.arg("rush");
    for url in cluster.urls() {
        command.args(["--url", &url]);
    }
    let rush = command
        .args(["--students", "2500", "--courses", "20", "--capacity", "100", "--concurrency", "16"])
        .args(["--spread", "--tries", "3", "--patience-ms", "15000"])
        .env_remove("SUGANG_RUSH_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sugang rush runs");
    // Kill once the rush is well under way: some enrollments acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    let classes = format!("{}/classes?size=1", cluster.nodes[primary].url);
    loop {
        let reply = send(&cluster.client, Method::GET, &classes, None).await;
        if reply.is_ok_and(|r| r.body["page"]["totalElements"].as_u64().is_some_and(|n| n >= 200)) {
            break;
        }
        assert!(Instant::now() < deadline, "the rush did not enroll 200 students within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.kill(primary);
    println!("SIGKILL of the primary {} in the middle of the rush", cluster.nodes[primary].name);
    let output = rush.wait_with_output().await.expect("sugang rush ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{:?}\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("invariants: all hold"), "{stdout}");
    let failovers = stdout
        .split("; ")
        .find_map(|part| part.strip_suffix(" requests sent again to the next node after no answer"))
        .and_then(|n| n.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(failovers.is_some_and(|n| n > 0), "no request was sent to another node: {stdout}");
    assert!(stdout.contains(&format!("{} does not answer", cluster.nodes[primary].url)), "{stdout}");
    assert!(stdout.contains("compared with 1 other node"), "{stdout}");
}

/// SIGKILL of the primary in the middle of a load through all three nodes:
/// a survivor takes over and commands succeed again within 5 s; every 201
/// is on both survivors, no course over capacity, no charge without an
/// enrollment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server"]
async fn sigkill_of_the_primary_under_load_loses_nothing_and_a_survivor_serves_within_5_s() {
    let mut cluster = Cluster::start().await;
    let tag = tag();
    let primary = cluster.wait_primary(&[], Duration::from_secs(10)).await;
    let courses = courses(&cluster, &cluster.nodes[primary].url.clone(), &tag, &[10, 10, LOAD_SEATS, LOAD_SEATS]).await;
    let ids: Vec<u64> = courses.keys().copied().collect();
    let load = Load::start(&cluster.client, &cluster.urls(), &ids, &tag, 12);
    load.wait_acks(&mut cluster, 60, Duration::from_secs(60)).await;

    let before = load.acked();
    let killed_at = Instant::now();
    cluster.kill(primary);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != primary).collect();
    let (again, served_by) = commands_again(&cluster, &survivors, killed_at, &tag).await;
    let new_primary = cluster.wait_primary(&[primary], Duration::from_secs(10)).await;
    println!(
        "SIGKILL of primary {} after {before} enrollments: node {} took over; commands succeeded again {} ms after \
         the kill (through node {})",
        cluster.nodes[primary].name,
        cluster.nodes[new_primary].name,
        again.as_millis(),
        cluster.nodes[served_by].name
    );
    assert!(again <= TAKEOVER_LIMIT, "commands succeeded again only {again:?} after the kill");
    let more = load.wait_acks(&mut cluster, 60, Duration::from_secs(30)).await;
    println!("60 more enrollments acknowledged {} ms after the takeover", more.as_millis());
    let seen = load.finish().await;
    println!("load: {} acknowledged, answers {:?}", seen.acked.len(), seen.statuses);
    let view = converged(&cluster, &survivors, &courses, &seen).await;
    let full = courses.iter().filter(|(id, cap)| view.seats.get(id) == Some(cap)).count();
    assert!(full >= 2, "the small courses filled up: {:?}", view.seats);
}

/// SIGSTOP of the primary past its lease: another node takes over; after
/// SIGCONT the old primary's late writes are refused (it exits non-zero, or
/// has become a replica), every 201 it gave is in the log, and nothing is
/// counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server"]
async fn a_primary_paused_past_its_lease_cannot_write_after_the_takeover() {
    paused_primary_cannot_write_after_the_takeover(&[]).await;
}

/// The same with `--course-subjects`: a group's parts, sent one after the
/// other, are each fenced like a lone append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server"]
async fn with_course_subjects_a_paused_primary_cannot_write_after_the_takeover() {
    paused_primary_cannot_write_after_the_takeover(&["--course-subjects"]).await;
}

async fn paused_primary_cannot_write_after_the_takeover(flags: &[&str]) {
    let mut cluster = Cluster::start_with(flags).await;
    let tag = tag();
    let primary = cluster.wait_primary(&[], Duration::from_secs(10)).await;
    let courses = courses(&cluster, &cluster.nodes[primary].url.clone(), &tag, &[10, LOAD_SEATS, LOAD_SEATS]).await;
    let ids: Vec<u64> = courses.keys().copied().collect();
    let others: Vec<String> = (0..3).filter(|&i| i != primary).map(|i| cluster.nodes[i].url.clone()).collect();
    let load = Load::start(&cluster.client, &others, &ids, &tag, 8);
    load.wait_acks(&mut cluster, 30, Duration::from_secs(60)).await;

    cluster.signal(primary, libc::SIGSTOP);
    let stopped_at = Instant::now();
    // Requests to the paused primary wait in its socket: it handles them
    // when it runs again, after it has lost its lease.
    let stale_urls = vec![cluster.nodes[primary].url.clone()];
    let stale = Load::start(&cluster.client, &stale_urls, &ids, &format!("{tag}-stale"), 4);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != primary).collect();
    let new_primary = cluster.wait_primary(&[primary], Duration::from_secs(15)).await;
    println!(
        "primary {} paused; node {} took over {} ms later",
        cluster.nodes[primary].name,
        cluster.nodes[new_primary].name,
        stopped_at.elapsed().as_millis()
    );
    load.wait_acks(&mut cluster, 20, Duration::from_secs(30)).await;
    cluster.signal(primary, libc::SIGCONT);
    println!("SIGCONT to {} after {} ms", cluster.nodes[primary].name, stopped_at.elapsed().as_millis());

    // The old primary must notice within a lease or two, and fail-stop or step down.
    let deadline = Instant::now() + Duration::from_secs(15);
    let outcome = loop {
        if let Some(status) = cluster.exited(primary) {
            assert!(!status.success(), "the fenced primary exited 0: {}", cluster.log_tail(primary));
            break format!("exited with {status}");
        }
        if let Some(status) = cluster.status(primary).await
            && status["role"] == "replica"
            && status["primary"] == cluster.nodes[new_primary].name.as_str()
        {
            break "became a replica of the new primary".to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the old primary neither exited nor stepped down within 15 s: {}",
            cluster.log_tail(primary)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("the old primary {}", outcome);
    let stale_seen = stale.finish().await;
    // A write it can no longer make is refused as unavailable (503, or 504
    // when it may have run), never as an internal fault.
    assert!(stale_seen.faults.is_empty(), "the fenced primary answered with a fault: {:#?}", stale_seen.faults);
    let mut seen = load.finish().await;
    println!(
        "through the survivors: {} acknowledged; sent to the paused primary: {} acknowledged, answers {:?}",
        seen.acked.len(),
        stale_seen.acked.len(),
        stale_seen.statuses
    );
    // Every 201 the old primary gave must be in the log the survivors share.
    seen.acked.extend(stale_seen.acked);
    seen.ambiguous.extend(stale_seen.ambiguous);
    seen.max_seq = seen.max_seq.max(stale_seen.max_seq);
    converged(&cluster, &survivors, &courses, &seen).await;
}

/// One of the three NATS servers (the stream's leader) SIGKILLed under load:
/// the service goes on, and no acknowledged enrollment is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server"]
async fn a_nats_server_killed_under_load_loses_no_acknowledged_enrollment() {
    let mut cluster = Cluster::start().await;
    let tag = tag();
    let primary = cluster.wait_primary(&[], Duration::from_secs(10)).await;
    let courses = courses(&cluster, &cluster.nodes[primary].url.clone(), &tag, &[10, LOAD_SEATS, LOAD_SEATS]).await;
    let ids: Vec<u64> = courses.keys().copied().collect();
    let load = Load::start(&cluster.client, &cluster.urls(), &ids, &tag, 12);
    load.wait_acks(&mut cluster, 50, Duration::from_secs(60)).await;

    let status = cluster.status(primary).await.expect("/admin/cluster of the primary");
    let leader = status["stream"]["leader"].as_str().unwrap_or("n1").to_owned();
    let server = leader.trim_start_matches('n').parse::<usize>().map_or(0, |n| n.saturating_sub(1)).min(2);
    let killed_at = Instant::now();
    cluster.nats.kill(server);
    let took = load.wait_acks(&mut cluster, 50, Duration::from_secs(30)).await;
    println!(
        "NATS server n{} (the stream's leader was {leader}) SIGKILLed; 50 more enrollments acknowledged {} ms later",
        server + 1,
        took.as_millis()
    );
    let seen = load.finish().await;
    println!(
        "load: {} acknowledged, answers {:?}; {} ms since the kill",
        seen.acked.len(),
        seen.statuses,
        killed_at.elapsed().as_millis()
    );
    // A node whose primary lease lapsed while the NATS servers elected new
    // leaders takes it back, or fail-stops (exit 70, as designed: its
    // supervisor starts it again) once another node holds it, which can be
    // some seconds after the load: first one primary, then the survivors.
    // The service must go on without the stopped, and none may exit 0.
    cluster.wait_primary(&[], Duration::from_secs(15)).await;
    let mut live = Vec::new();
    for i in 0..3 {
        match cluster.exited(i) {
            None => live.push(i),
            Some(status) => {
                assert_eq!(
                    status.code(),
                    Some(70),
                    "node {} ended otherwise: {}",
                    cluster.nodes[i].name,
                    cluster.log_tail(i)
                );
                println!("node {} fail-stopped ({status}) while the NATS servers recovered", cluster.nodes[i].name);
            }
        }
    }
    assert!(!live.is_empty(), "no node survived the loss of one NATS server of three");
    converged(&cluster, &live, &courses, &seen).await;
}

/// After the primary's SIGKILL under load, the subscribers' work is done
/// exactly once for every completed enrollment, on every survivor: one
/// delivery, one ENROLLMENT_COMPLETED, PAYMENT_APPROVED and
/// DELIVERY_STARTED notification each, and the student's my-page agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server"]
async fn after_a_failover_every_enrollment_is_delivered_and_notified_once() {
    let (cluster, courses, _) = failover_delivers_and_notifies_once(&[]).await;
    // By default a course's commits share the log's commit subject.
    for &course in courses.keys() {
        assert_eq!(course_history(&cluster, course).await.0, 0, "course {course}: nothing on its own subject");
    }
}

/// With `--course-subjects`, the same, and each course's history reads on
/// its own subject of the log, both primaries' commits in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server"]
async fn with_course_subjects_a_courses_history_reads_on_its_own_across_a_failover() {
    let (cluster, courses, view) = failover_delivers_and_notifies_once(&["--course-subjects"]).await;
    each_course_history_is_its_own(&cluster, &courses, &view).await;
}

/// Enrollments through all three nodes, the primary SIGKILLed among them;
/// on the survivors every enrollment is delivered and notified once. The
/// cluster, its courses and the survivors' view.
async fn failover_delivers_and_notifies_once(flags: &[&str]) -> (Cluster, HashMap<u64, u64>, View) {
    let mut cluster = Cluster::start_with(flags).await;
    let tag = tag();
    let primary = cluster.wait_primary(&[], Duration::from_secs(10)).await;
    let courses = courses(&cluster, &cluster.nodes[primary].url.clone(), &tag, &[LOAD_SEATS, LOAD_SEATS]).await;
    let ids: Vec<u64> = courses.keys().copied().collect();
    let load = Load::start(&cluster.client, &cluster.urls(), &ids, &tag, 8);
    load.wait_acks(&mut cluster, 40, Duration::from_secs(60)).await;
    cluster.kill(primary);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != primary).collect();
    cluster.wait_primary(&[primary], Duration::from_secs(15)).await;
    load.wait_acks(&mut cluster, 40, Duration::from_secs(30)).await;
    let seen = load.finish().await;
    let view = converged(&cluster, &survivors, &courses, &seen).await;
    every_event_once(&cluster, &survivors, &view, &seen).await;
    (cluster, courses, view)
}

/// What the log holds on `course`'s own subject: how many messages, and
/// their events in order (each message checked to be a commit of that
/// course).
async fn course_history(cluster: &Cluster, course: u64) -> (usize, Vec<sugang_actors::Event>) {
    let mut config = sugang_cluster::ClusterConfig::new(cluster.nats.urls(), "history-reader");
    config.replicas = 3;
    config.lease_ttl = Duration::from_millis(LEASE_TTL_MS);
    config.node_ttl = config.lease_ttl;
    let reader = sugang_cluster::Cluster::connect(config).await.expect("a reader of the log connects");
    let mut follower = reader.follow_course(course, 1).await.expect("following the course's subject");
    let (mut messages, mut events) = (0, Vec::new());
    // The subject's last message is not known: it ends when nothing more
    // comes for a while (the load has stopped).
    while let Ok(next) = tokio::time::timeout(Duration::from_secs(2), follower.next()).await {
        let message = next.expect("the consumer stays open").expect("a message of the course's subject");
        assert!(message.commit, "position {}: not a commit", message.position);
        assert_eq!(message.course, Some(course), "position {}", message.position);
        events.extend(sugang_storage::log_events(&message.payload).expect("a commit group"));
        messages += 1;
    }
    (messages, events)
}

/// Each course's history reads on its own subject of the log
/// (`sugang.log.course.<id>`): its messages hold that course's events only,
/// in order from its registration, with one `EnrollmentCompleted` for each
/// COMPLETED class of it in `view` and none for a class of another course.
async fn each_course_history_is_its_own(cluster: &Cluster, courses: &HashMap<u64, u64>, view: &View) {
    for &course in courses.keys() {
        let (messages, events) = course_history(cluster, course).await;
        let mut completed = HashSet::new();
        for event in &events {
            let fields = serde_json::to_value(event).expect("an event as JSON");
            let fields = fields.as_object().and_then(|o| o.values().next()).cloned().unwrap_or_default();
            // The payment's cancellation names its enrollment only.
            let names_no_course = matches!(
                event,
                sugang_actors::Event::PaymentCancelRequested { .. } | sugang_actors::Event::PaymentCanceled { .. }
            );
            if !names_no_course {
                assert_eq!(fields["course_id"].as_u64(), Some(course), "course {course}'s history holds {event:?}");
            }
            if let sugang_actors::Event::EnrollmentCompleted { enrollment_id, .. } = event {
                assert!(
                    completed.insert(enrollment_id.get()),
                    "completed twice in course {course}'s history: {event:?}"
                );
            }
        }
        assert!(
            matches!(events.first(), Some(sugang_actors::Event::CourseRegistered { .. })),
            "course {course}'s history starts with its registration: {:?}",
            events.first()
        );
        let classes: HashSet<u64> = view
            .classes
            .iter()
            .filter(|(_, (c, _, status))| *c == course && status == "COMPLETED")
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(completed, classes, "course {course}: the completions in its history are its COMPLETED classes");
        println!(
            "course {course}: {messages} messages, {} events, {} completions on its own subject",
            events.len(),
            completed.len()
        );
    }
}

/// The subscriber units each node runs, as node `i` sees it (unit → node).
async fn unit_holders(cluster: &Cluster, i: usize) -> Option<BTreeMap<String, String>> {
    let status = cluster.status(i).await?;
    let mut out = BTreeMap::new();
    for node in status["nodes"].as_array()? {
        for unit in node["units"].as_array()? {
            out.insert(unit["name"].as_str()?.to_owned(), node["name"].as_str()?.to_owned());
        }
    }
    Some(out)
}

/// The subscribers' work is shared: their units run on two nodes or more,
/// one node each. A node holding units is paused (SIGSTOP) past their
/// leases under load: the survivors take its units over, and once it runs
/// again its late batches are refused (the holder record moved). Every
/// completed enrollment is still delivered and notified exactly once, on
/// every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server"]
async fn subscribers_on_several_nodes_process_every_event_once_even_past_a_paused_holder() {
    let mut cluster = Cluster::start().await;
    let tag = tag();
    let primary = cluster.wait_primary(&[], Duration::from_secs(10)).await;
    // The units spread as the nodes joined: wait until two nodes or more hold them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let holders = loop {
        if let Some(holders) = unit_holders(&cluster, primary).await {
            let nodes: HashSet<&String> = holders.values().collect();
            if holders.len() >= 4 && nodes.len() >= 2 {
                break holders;
            }
        }
        assert!(Instant::now() < deadline, "the subscriber units did not spread over two nodes within 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("units: {holders:?}");
    let paused = (0..3)
        .find(|&i| i != primary && holders.values().any(|n| *n == cluster.nodes[i].name))
        .expect("a node other than the primary holds units");
    let paused_name = cluster.nodes[paused].name.clone();
    let courses = courses(&cluster, &cluster.nodes[primary].url.clone(), &tag, &[LOAD_SEATS, LOAD_SEATS]).await;
    let ids: Vec<u64> = courses.keys().copied().collect();
    let others: Vec<String> = (0..3).filter(|&i| i != paused).map(|i| cluster.nodes[i].url.clone()).collect();
    let load = Load::start(&cluster.client, &others, &ids, &tag, 8);
    load.wait_acks(&mut cluster, 40, Duration::from_secs(60)).await;

    cluster.signal(paused, libc::SIGSTOP);
    let stopped_at = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != paused).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(now) = unit_holders(&cluster, primary).await
            && now.len() == holders.len()
            && now.values().all(|n| *n != paused_name)
        {
            println!(
                "node {paused_name} paused; its units taken over after {} ms: {now:?}",
                stopped_at.elapsed().as_millis()
            );
            break;
        }
        assert!(Instant::now() < deadline, "the paused node's units were not taken over within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.wait_acks(&mut cluster, 40, Duration::from_secs(30)).await;
    cluster.signal(paused, libc::SIGCONT);
    load.wait_acks(&mut cluster, 40, Duration::from_secs(30)).await;
    let seen = load.finish().await;
    let view = converged(&cluster, &survivors, &courses, &seen).await;
    // The node paused is a node like the others again: it serves the same.
    every_event_once(&cluster, &[0, 1, 2], &view, &seen).await;
    let after = unit_holders(&cluster, primary).await.expect("the primary's cluster status");
    assert_eq!(after.len(), holders.len(), "every unit is held again: {after:?}");
    // What the paused node did with its units once it ran again.
    let metrics = cluster.client.get(format!("{}/metrics", cluster.nodes[paused].url)).send().await;
    let metrics = metrics.expect("the paused node's metrics").text().await.unwrap_or_default();
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("sugang_cluster_units_total") || l.starts_with("sugang_cluster_forwarded_commits_total")
        })
        .collect();
    println!("node {paused_name} after it ran again: {lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("event=\"lost\"")),
        "the paused node did not notice it lost its units: {lines:#?}"
    );
}

/// Waits until each node in `nodes` shows the subscribers' work done once
/// for every enrollment `view` has completed (see [`subscriber_problems`]);
/// panics naming what is wrong after [`CONVERGE_LIMIT`].
async fn every_event_once(cluster: &Cluster, nodes: &[usize], view: &View, seen: &Seen) {
    let completed: HashMap<u64, &String> = view
        .classes
        .iter()
        .filter(|(_, (_, _, status))| status == "COMPLETED")
        .map(|(id, (_, student, _))| (*id, student))
        .collect();
    let students: HashSet<&String> = view.classes.values().map(|(_, student, _)| student).collect();
    for &i in nodes {
        let base = &cluster.nodes[i].url;
        let node = &cluster.nodes[i].name;
        let deadline = Instant::now() + CONVERGE_LIMIT;
        loop {
            let problems = subscriber_problems(&cluster.client, base, view, &completed, &students, seen.max_seq).await;
            if problems.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {node}: {} problems: {:#?}\n{}",
                problems.len(),
                &problems[..problems.len().min(12)],
                cluster.logs_of_trouble()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        println!("node {node}: {} completed enrollments, each delivered and notified exactly once", completed.len());
    }
}

/// What is wrong with the subscribers' work as node `base` shows it.
async fn subscriber_problems(
    client: &reqwest::Client,
    base: &str,
    view: &View,
    completed: &HashMap<u64, &String>,
    students: &HashSet<&String>,
    seq: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    let deliveries = match all(client, base, &format!("/deliveries?after={seq}"), "deliveries").await {
        Ok(items) => items,
        Err(e) => return vec![e],
    };
    let mut delivered: HashMap<u64, Vec<String>> = HashMap::new();
    for delivery in deliveries {
        let apply_id = delivery["applyId"].as_u64().unwrap_or(0);
        if view.classes.contains_key(&apply_id) {
            delivered.entry(apply_id).or_default().push(delivery["deliveryStatus"].as_str().unwrap_or("").to_owned());
        }
    }
    for (id, student) in completed {
        match delivered.get(id).map(Vec::as_slice) {
            Some([status]) if status == "STARTED" => {}
            other => problems.push(format!("enrollment {id} of {student}: deliveries {other:?}, not one STARTED")),
        }
    }
    for id in delivered.keys().filter(|id| !completed.contains_key(id)) {
        if delivered[id].iter().any(|s| s == "STARTED") {
            problems.push(format!("enrollment {id} is not COMPLETED but has a STARTED delivery"));
        }
    }

    let notifications = match all(client, base, &format!("/notifications?after={seq}"), "notifications").await {
        Ok(items) => items,
        Err(e) => return vec![e],
    };
    let mut counts: HashMap<(u64, String), u64> = HashMap::new();
    for notification in notifications {
        let recipient = notification["recipient"].as_str().unwrap_or_default().to_owned();
        let Some(apply_id) = notification["applyId"].as_u64() else { continue };
        if !students.contains(&recipient) {
            continue;
        }
        let kind = notification["kind"].as_str().unwrap_or_default().to_owned();
        *counts.entry((apply_id, kind)).or_default() += 1;
    }
    for (id, student) in completed {
        for kind in ["ENROLLMENT_COMPLETED", "PAYMENT_APPROVED", "DELIVERY_STARTED"] {
            let n = counts.get(&(*id, kind.to_owned())).copied().unwrap_or(0);
            if n != 1 {
                problems.push(format!("enrollment {id} of {student}: {n} {kind} notifications, not 1"));
            }
        }
    }
    for ((id, kind), n) in &counts {
        if *n > 1 {
            problems.push(format!("enrollment {id}: {kind} notified {n} times"));
        }
        if kind == "ENROLLMENT_COMPLETED" && !completed.contains_key(id) {
            problems.push(format!("enrollment {id} notified ENROLLMENT_COMPLETED but is not COMPLETED"));
        }
    }

    // A sample of students' my-pages (each one request): one line per
    // enrollment, COMPLETED, APPROVED and STARTED.
    for (id, student) in completed.iter().take(20) {
        let path = format!("/inquiryMypages?student={student}&after={seq}");
        match all(client, base, &path, "inquiryMypages").await {
            Ok(items) => {
                let mine: Vec<&Value> = items.iter().filter(|item| item["applyId"] == *id).collect();
                match mine[..] {
                    [item]
                        if item["applyStatus"] == "COMPLETED"
                            && item["payStatus"] == "APPROVED"
                            && item["deliveryStatus"] == "STARTED" => {}
                    _ => problems.push(format!("my-page of {student}: enrollment {id} shows as {mine:?}")),
                }
            }
            Err(e) => problems.push(e),
        }
    }
    problems
}

/// `sugang demo cluster` runs the kill and the takeover on its own servers
/// and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server"]
async fn the_cluster_demo_passes() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sugang"))
        .args(["demo", "cluster"])
        .output()
        .await
        .expect("sugang demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(output.status.success(), "{:?}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let verdict = stdout.lines().last().unwrap_or_default();
    assert!(verdict.contains("VERDICT: PASS"), "{verdict}");
    assert!(stdout.contains("took the primary lease"), "{stdout}");
}

/// Without nats-server the cluster demo says, in one line, how to get it.
#[test]
fn the_cluster_demo_without_nats_server_says_how_to_install_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_sugang"))
        .args(["demo", "cluster"])
        .env("SUGANG_NATS_SERVER", "/nonexistent/nats-server")
        .output()
        .expect("sugang demo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("apt-get install nats-server"), "{stderr}");
    assert!(output.stdout.is_empty(), "{}", String::from_utf8_lossy(&output.stdout));
}
