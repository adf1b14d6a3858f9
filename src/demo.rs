//! `sugang demo <scenario>`: break a running sugang on purpose and watch it
//! heal. Each scenario starts its own sugang as a child process (this very
//! binary, `serve`, over a temporary data directory, so a real SIGTERM or
//! SIGKILL is possible), drives it over HTTP, and narrates a timeline: the
//! time, what was done, what the system answered, and what the supervisor
//! did (read back from `/admin/actors`, `/admin/breaker`, `/metrics` and the
//! server's own log). Every expectation is checked against what the system
//! answered; the last line is one verdict, and the exit code is 0 only when
//! every expectation held.
//!
//! Owns the child server, the demo's HTTP client and the timeline. Must not
//! reach into the server's internals: everything a demo knows, it was told
//! over HTTP or read from the server's log.
//!
//! # Layout
//!
//! - `supervision`: a panicking course actor is restarted from sled; one that
//!   keeps panicking is held down, then recovers.
//! - `breaker`: a slow gateway opens the breaker; a half-open probe closes it.
//! - `replay`: a stopped subscriber catches up after a whole-process restart.
//! - `crash`: SIGKILL under load, three times; every acknowledgment holds.

mod breaker;
mod crash;
mod replay;
mod supervision;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// A demo scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// A course actor panics under load and is restarted; one that keeps
    /// panicking is held down, then recovers after the backoff.
    Supervision,
    /// The payment gateway turns slow: timeouts, the breaker opens and fails
    /// fast, the gateway heals, a half-open probe closes it.
    Breaker,
    /// Delivery is stopped, students enroll, the process restarts, delivery
    /// catches up: every shipment exactly once.
    Replay,
    /// SIGKILL under enrollment load, three times: nothing acknowledged is
    /// lost, no course overbooked, payments match enrollments.
    Crash,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Supervision => "supervision",
            Scenario::Breaker => "breaker",
            Scenario::Replay => "replay",
            Scenario::Crash => "crash",
        }
    }
}

/// Runs `scenario` and prints its verdict: exit code 0 only when every
/// expectation held.
pub(crate) async fn run(scenario: Scenario) -> ExitCode {
    let timeline = Timeline::new();
    let workdir = match Workdir::create(scenario.name()) {
        Ok(workdir) => workdir,
        Err(e) => return timeline.verdict(Err(Aborted(format!("cannot create a temporary directory: {e}")))),
    };
    timeline.say(format!("sugang demo {} (server data and log in {})", scenario.name(), workdir.path.display()));
    let outcome = match scenario {
        Scenario::Supervision => supervision::run(&timeline, &workdir.path).await,
        Scenario::Breaker => breaker::run(&timeline, &workdir.path).await,
        Scenario::Replay => replay::run(&timeline, &workdir.path).await,
        Scenario::Crash => crash::run(&timeline, &workdir.path).await,
    };
    let code = timeline.verdict(outcome);
    if code == ExitCode::SUCCESS {
        workdir.remove();
    } else {
        eprintln!("sugang demo: the server's data and log are kept in {}", workdir.path.display());
    }
    code
}

// ---- the timeline ----------------------------------------------------------

/// The demo could not go on (the server did not start, or stopped answering
/// where it had to answer). The verdict is then a failure with this reason.
#[derive(Debug)]
pub(crate) struct Aborted(pub(crate) String);

impl From<reqwest::Error> for Aborted {
    fn from(e: reqwest::Error) -> Self {
        Aborted(format!("the server did not answer: {e}"))
    }
}

/// The narration and the expectations checked so far.
pub(crate) struct Timeline {
    start: Instant,
    /// Every expectation that did not hold, in the order checked.
    broken: Mutex<Vec<String>>,
    /// How many expectations were checked.
    checked: Mutex<usize>,
}

impl Timeline {
    fn new() -> Self {
        Timeline { start: Instant::now(), broken: Mutex::new(Vec::new()), checked: Mutex::new(0) }
    }

    /// Time since the demo started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// A timeline entry: something done or something that happened.
    pub(crate) fn say(&self, line: impl Display) {
        println!("[{:>7.3}s] {line}", self.elapsed().as_secs_f64());
    }

    /// A detail of the entry before: what the system answered.
    pub(crate) fn note(&self, line: impl Display) {
        println!("           {line}");
    }

    /// Checks an expectation, prints it with its outcome, and remembers a
    /// broken one for the verdict. Returns whether it held.
    pub(crate) fn expect(&self, held: bool, what: impl Display) -> bool {
        *lock(&self.checked) += 1;
        if held {
            println!("           ✓ {what}");
        } else {
            println!("           ✗ {what}");
            lock(&self.broken).push(what.to_string());
        }
        held
    }

    /// Prints the one verdict line; the exit code follows it.
    fn verdict(&self, outcome: Result<String, Aborted>) -> ExitCode {
        let broken = lock(&self.broken).clone();
        let checked = *lock(&self.checked);
        let line = match (outcome, broken.split_first()) {
            (Err(Aborted(reason)), _) => format!("VERDICT: FAIL — the demo could not go on: {reason}"),
            (Ok(_), Some((first, []))) => format!("VERDICT: FAIL — {first}"),
            (Ok(_), Some((first, rest))) => {
                format!("VERDICT: FAIL — {first} (and {} more broken expectations, marked ✗ above)", rest.len())
            }
            (Ok(summary), None) => format!("VERDICT: PASS — {summary} ({checked} expectations held)"),
        };
        println!("[{:>7.3}s] {line}", self.elapsed().as_secs_f64());
        if line.starts_with("VERDICT: PASS") { ExitCode::SUCCESS } else { ExitCode::FAILURE }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds, for narration.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The demo's temporary directory: removed after a passing run, kept after a
/// failing one so its log can be read.
struct Workdir {
    path: PathBuf,
}

impl Workdir {
    fn create(scenario: &str) -> std::io::Result<Workdir> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("sugang-demo-{scenario}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Workdir { path })
    }

    fn remove(self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("sugang demo: could not remove {}: {e}", self.path.display());
        }
    }
}

// ---- the child server ------------------------------------------------------

/// A sugang started by the demo as a child process, its log in a file.
pub(crate) struct Server {
    child: Child,
    pid: u32,
    pub(crate) api: Api,
    log: PathBuf,
    /// How far the narration has read the log.
    log_read: u64,
}

impl Server {
    /// Starts `sugang serve` over `dir/data` on a free loopback port with
    /// `flags`, and waits until it is ready.
    pub(crate) async fn start(t: &Timeline, dir: &Path, flags: &[&str]) -> Result<Server, Aborted> {
        let exe = std::env::current_exe().map_err(|e| Aborted(format!("cannot find this binary: {e}")))?;
        let log = dir.join("sugang.log");
        let mut last_error = String::new();
        // A port found free may be taken before the child binds it: try again.
        for _ in 0..3 {
            let port = free_port().map_err(|e| Aborted(format!("no free loopback port: {e}")))?;
            let listen = format!("127.0.0.1:{port}");
            let log_read = std::fs::metadata(&log).map_or(0, |m| m.len());
            let output = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| Aborted(format!("cannot open {}: {e}", log.display())))?;
            let errors = output.try_clone().map_err(|e| Aborted(format!("cannot open {}: {e}", log.display())))?;
            let mut command = Command::new(&exe);
            command
                .arg("serve")
                .args(["--listen", &listen])
                .arg("--data-dir")
                .arg(dir.join("data"))
                .args(["--log-format", "json"])
                .args(flags)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(output)
                .stderr(errors)
                .kill_on_drop(true);
            // The demo's server is configured by the demo alone (and open:
            // no JWT secret), whatever this shell exports.
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("SUGANG_") {
                    command.env_remove(name);
                }
            }
            let started = Instant::now();
            let child = command.spawn().map_err(|e| Aborted(format!("cannot start {}: {e}", exe.display())))?;
            let pid = child.id().unwrap_or(0);
            let mut server = Server { child, pid, api: Api::new(&listen), log: log.clone(), log_read };
            match server.wait_ready().await {
                Ok(()) => {
                    t.say(format!(
                        "sugang serve started as pid {pid} on {listen} {}; ready after {}",
                        flags.join(" "),
                        ms(started.elapsed())
                    ));
                    return Ok(server);
                }
                Err(Aborted(reason)) => {
                    last_error = reason;
                    let _ = server.child.kill().await;
                }
            }
        }
        Err(Aborted(format!("sugang serve did not become ready: {last_error}")))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    async fn wait_ready(&mut self) -> Result<(), Aborted> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let tail = self.log_tail();
                return Err(Aborted(format!("it exited with {status}: {tail}")));
            }
            if let Ok(reply) = self.api.get("/health/ready").await
                && reply.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Aborted("not ready within 30 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits (at most 20 s) for the process to exit.
    pub(crate) async fn terminate(mut self) -> Result<std::process::ExitStatus, Aborted> {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .map_err(|e| Aborted(format!("cannot run kill: {e}")))?;
        if !sent.success() {
            return Err(Aborted(format!("kill -TERM {} failed", self.pid)));
        }
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(Aborted(format!("waiting for pid {}: {e}", self.pid))),
            Err(_) => Err(Aborted(format!("pid {} did not exit within 20 s of SIGTERM", self.pid))),
        }
    }

    /// SIGKILL: no drain, no flush; whatever was not durable is gone.
    pub(crate) async fn kill(mut self) -> Result<(), Aborted> {
        self.child.kill().await.map_err(|e| Aborted(format!("cannot SIGKILL pid {}: {e}", self.pid)))
    }

    /// The warnings and errors the server logged since the last call, and
    /// its few notable infos (restarts, breaker changes, start and stop),
    /// one line each; lines that differ only in numbers (ids, counts) are
    /// folded into the first.
    pub(crate) fn log_events(&mut self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.log) else { return Vec::new() };
        let mut text = String::new();
        if file.seek(SeekFrom::Start(self.log_read)).is_err() || file.read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        // Only whole lines; a partial last line is read next time.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        self.log_read += whole as u64;
        let mut folded: Vec<(String, String, usize)> = Vec::new();
        for line in text[..whole].lines() {
            let Some((key, event)) = notable(line) else { continue };
            match folded.iter_mut().find(|(seen, ..)| *seen == key) {
                Some((.., count)) => *count += 1,
                None => folded.push((key, event, 1)),
            }
        }
        folded
            .into_iter()
            .map(|(_, line, count)| if count > 1 { format!("{line}  (×{count})") } else { line })
            .collect()
    }

    /// Narrates what the server logged since the last call, at most `max`
    /// lines.
    pub(crate) fn narrate_log(&mut self, t: &Timeline, max: usize) {
        let events = self.log_events();
        for event in events.iter().take(max) {
            t.note(format!("log: {event}"));
        }
        if events.len() > max {
            t.note(format!("log: … and {} more kinds of warning", events.len() - max));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A JSON log line worth narrating, as `LEVEL message {field=value …}`,
/// with the key it folds by: its level, message and text fields.
fn notable(line: &str) -> Option<(String, String)> {
    const NOTABLE_INFO: [&str; 5] =
        ["restarted from storage", "breaker changed state", "subscriber started", "sugang started", "stopped cleanly"];
    // Every refused request is logged by the HTTP layer; the demo narrates
    // the answers themselves.
    const SKIPPED: [&str; 1] = ["response failed"];
    let value: Value = serde_json::from_str(line).ok()?;
    let level = value["level"].as_str()?;
    let fields = value["fields"].as_object()?;
    let message = fields.get("message").and_then(Value::as_str).unwrap_or("");
    let wanted = match level {
        "WARN" | "ERROR" => !SKIPPED.contains(&message),
        "INFO" => NOTABLE_INFO.iter().any(|n| message.contains(n)),
        _ => false,
    };
    if !wanted {
        return None;
    }
    let mut key = format!("{level} {message}");
    let mut details = Vec::new();
    for (name, value) in fields.iter().filter(|(name, _)| name.as_str() != "message") {
        match value {
            Value::String(s) => {
                key.push_str(&format!(" {name}={s}"));
                details.push(format!("{name}={}", shorten(s, 90)));
            }
            other => details.push(format!("{name}={other}")),
        }
    }
    Some((key, format!("{level:<5} {message} {{{}}}", details.join(" "))))
}

fn shorten(s: &str, max: usize) -> String {
    let first = s.lines().next().unwrap_or("");
    if first.chars().count() <= max {
        first.to_owned()
    } else {
        format!("{}…", first.chars().take(max).collect::<String>())
    }
}

// ---- the HTTP client -------------------------------------------------------

/// The demo's view of the server's API.
#[derive(Clone)]
pub(crate) struct Api {
    client: reqwest::Client,
    base: String,
}

/// An answer: status, the headers a demo reads, the body, and how long it
/// took.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<u64>,
    pub(crate) seq: Option<u64>,
    pub(crate) body: Value,
    pub(crate) took: Duration,
}

impl Reply {
    /// `status` and, for a problem, its title; `Retry-After` when present.
    pub(crate) fn summary(&self) -> String {
        let mut out = self.status.to_string();
        if let Some(title) = self.body["title"].as_str() {
            out.push_str(&format!(" {title}"));
        }
        if let Some(retry) = self.retry_after {
            out.push_str(&format!(", Retry-After: {retry}"));
        }
        out
    }
}

impl Api {
    fn new(listen: &str) -> Api {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Api { client, base: format!("http://{listen}") }
    }

    pub(crate) async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Result<Reply, reqwest::Error> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let start = Instant::now();
        let response = request.send().await?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let (retry_after, seq) = (header("retry-after"), header("x-sugang-seq"));
        let bytes = response.bytes().await?;
        let took = start.elapsed();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Ok(Reply { status, retry_after, seq, body, took })
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Reply, reqwest::Error> {
        self.send(Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Result<Reply, reqwest::Error> {
        self.send(Method::POST, path, Some(body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> Result<Reply, reqwest::Error> {
        self.send(Method::PUT, path, Some(body)).await
    }

    /// Registers a course; its id.
    pub(crate) async fn course(&self, name: &str, capacity: Option<u64>) -> Result<u64, Aborted> {
        let mut body =
            json!({"name": name, "teacher": "Hong-Gil-dong", "fee": 10000, "textBook": format!("{name}_book")});
        if let Some(capacity) = capacity {
            body["capacity"] = capacity.into();
        }
        let reply = self.post("/courses", body).await?;
        match reply.body["id"].as_u64() {
            Some(id) if reply.status == 201 => Ok(id),
            _ => Err(Aborted(format!("registering course {name} answered {}", reply.summary()))),
        }
    }

    /// Enrolls `student` in `course`, paying with `account`.
    pub(crate) async fn enroll_with(&self, course: u64, student: &str, account: &str) -> Result<Reply, reqwest::Error> {
        let body = json!({"courseId": course, "student": student, "payAccount": account, "addr": "Seoul"});
        self.post("/classes", body).await
    }

    pub(crate) async fn enroll(&self, course: u64, student: &str) -> Result<Reply, reqwest::Error> {
        self.enroll_with(course, student, "4242424242424242").await
    }

    /// Every item of a HAL collection, page by page (`path` may carry a query).
    pub(crate) async fn all(&self, path: &str, name: &str) -> Result<Vec<Value>, Aborted> {
        let mut items = Vec::new();
        let separator = if path.contains('?') { '&' } else { '?' };
        for page in 0.. {
            let reply = self.get(&format!("{path}{separator}size=1000&page={page}")).await?;
            if reply.status != 200 {
                return Err(Aborted(format!("GET {path} answered {}", reply.summary())));
            }
            if let Some(list) = reply.body["_embedded"][name].as_array() {
                items.extend(list.iter().cloned());
            }
            let pages = reply.body["page"]["totalPages"].as_u64().unwrap_or(0);
            if page + 1 >= pages {
                break;
            }
        }
        Ok(items)
    }

    /// Waits until read model `path` answers `?after=seq` (it has caught up),
    /// at most `within`. The answer, or the last refusal.
    pub(crate) async fn caught_up(&self, path: &str, seq: u64, within: Duration) -> Result<Reply, Aborted> {
        let deadline = Instant::now() + within;
        let separator = if path.contains('?') { '&' } else { '?' };
        loop {
            let reply = self.get(&format!("{path}{separator}after={seq}")).await?;
            if reply.status == 200 || Instant::now() > deadline {
                return Ok(reply);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/admin/actors`.
    pub(crate) async fn tree(&self) -> Result<Value, Aborted> {
        let reply = self.get("/admin/actors").await?;
        if reply.status != 200 {
            return Err(Aborted(format!("GET /admin/actors answered {}", reply.summary())));
        }
        Ok(reply.body)
    }

    /// The supervisor snapshot of `/admin/actors` child `name` (`courses`, `classes`).
    pub(crate) async fn supervisor(&self, name: &str) -> Result<Value, Aborted> {
        let tree = self.tree().await?;
        let node = tree["children"].as_array().and_then(|c| c.iter().find(|n| n["name"] == name)).cloned();
        node.map(|n| n["supervisor"].clone()).ok_or_else(|| Aborted(format!("/admin/actors has no supervisor {name}")))
    }

    /// Subscriber `name` of `/admin/actors`.
    pub(crate) async fn subscriber(&self, name: &str) -> Result<Value, Aborted> {
        let tree = self.tree().await?;
        let node = tree["subscribers"].as_array().and_then(|c| c.iter().find(|n| n["name"] == name)).cloned();
        node.ok_or_else(|| Aborted(format!("/admin/actors has no subscriber {name}")))
    }

    /// The event seq the log has reached, as the subscribers report it
    /// (offset plus lag).
    pub(crate) async fn last_seq(&self) -> Result<u64, Aborted> {
        let tree = self.tree().await?;
        let subscribers = tree["subscribers"].as_array().cloned().unwrap_or_default();
        Ok(subscribers
            .iter()
            .map(|s| s["offset"].as_u64().unwrap_or(0) + s["lag"].as_u64().unwrap_or(0))
            .max()
            .unwrap_or(0))
    }

    /// `/admin/breaker`.
    pub(crate) async fn breaker(&self) -> Result<Value, Aborted> {
        let reply = self.get("/admin/breaker").await?;
        if reply.status != 200 {
            return Err(Aborted(format!("GET /admin/breaker answered {}", reply.summary())));
        }
        Ok(reply.body)
    }

    /// Every series of `/metrics`, `name{labels}` to value.
    pub(crate) async fn metrics(&self) -> Result<Metrics, Aborted> {
        let reply = self.get("/metrics").await?;
        let Value::String(text) = reply.body else {
            return Err(Aborted(format!("GET /metrics answered {}", reply.summary())));
        };
        let series = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect();
        Ok(Metrics(series))
    }
}

/// A scrape of `/metrics`.
pub(crate) struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    /// A series' value; 0 when it was never recorded.
    pub(crate) fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}

// ---- shared checks ---------------------------------------------------------

/// Runs `jobs` (course, student) as enrollments, `concurrency` at a time;
/// each job's answer, in job order.
pub(crate) async fn enroll_all(
    api: &Api,
    jobs: Vec<(u64, String)>,
    concurrency: usize,
) -> Vec<(u64, String, Result<Reply, String>)> {
    let jobs: Arc<Mutex<std::collections::VecDeque<(usize, u64, String)>>> =
        Arc::new(Mutex::new(jobs.into_iter().enumerate().map(|(i, (c, s))| (i, c, s)).collect()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (api, jobs) = (api.clone(), jobs.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let next = lock(&jobs).pop_front();
                let Some((index, course, student)) = next else { break };
                let reply = api.enroll(course, &student).await.map_err(|e| e.to_string());
                done.push((index, course, student, reply));
            }
            done
        });
    }
    let mut all = Vec::new();
    while let Some(done) = workers.join_next().await {
        all.extend(done.unwrap_or_default());
    }
    all.sort_by_key(|(index, ..)| *index);
    all.into_iter().map(|(_, course, student, reply)| (course, student, reply)).collect()
}

/// A tally of answers by status, `201×12 503×1`.
pub(crate) fn tally<'a>(replies: impl IntoIterator<Item = &'a Result<Reply, String>>) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for reply in replies {
        let key = match reply {
            Ok(reply) => reply.status.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts.iter().map(|(status, n)| format!("{status}×{n}")).collect::<Vec<_>>().join(" ")
}

/// The seats of `course` against its enrollments: `studentCount` must equal
/// the number of its COMPLETED enrollments. Returns (studentCount, completed).
pub(crate) async fn seats(api: &Api, course: u64) -> Result<(u64, u64), Aborted> {
    let reply = api.get(&format!("/courses/{course}")).await?;
    let count = reply.body["studentCount"]
        .as_u64()
        .ok_or_else(|| Aborted(format!("GET /courses/{course} answered {}", reply.summary())))?;
    let completed = api.all(&format!("/classes?courseId={course}&status=COMPLETED"), "classes").await?.len() as u64;
    Ok((count, completed))
}
