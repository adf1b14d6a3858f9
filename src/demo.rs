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
//! - `supervision`: a panicking course actor is restarted from storage; one that
//!   keeps panicking is held down, then recovers.
//! - `breaker`: a slow gateway opens the breaker; a half-open probe closes it.
//! - `replay`: a stopped subscriber catches up after a whole-process restart.
//! - `crash`: SIGKILL under load, three times; every acknowledgment holds.
//! - `waitlist`: a full course, a cancellation, the first in line enrolled
//!   in the same moment, a declined card passing the seat on.
//! - `gate`: a rush against the waiting room: the shuffle at the opening,
//!   admission at a rate changed live, places served in order.
//! - `cluster`: three nodes on a 3-server NATS cluster; the primary SIGKILLed
//!   under load, the takeover timed, nothing acknowledged lost.

mod breaker;
mod cluster;
mod crash;
mod gate;
mod replay;
mod supervision;
mod waitlist;

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
    /// A full course's waitlist: a cancellation enrolls the first in line at
    /// once; a declined card passes the seat to the next.
    Waitlist,
    /// A rush against the waiting room: tickets shuffled at the opening,
    /// admission at a rate changed live, places served in order.
    Gate,
    /// Three nodes on a 3-server NATS JetStream cluster (needs nats-server):
    /// the primary is SIGKILLed under load, another takes over within 5 s,
    /// nothing acknowledged is lost.
    Cluster,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Supervision => "supervision",
            Scenario::Breaker => "breaker",
            Scenario::Replay => "replay",
            Scenario::Crash => "crash",
            Scenario::Waitlist => "waitlist",
            Scenario::Gate => "gate",
            Scenario::Cluster => "cluster",
        }
    }
}

/// Runs `scenario` and prints its verdict: exit code 0 only when every
/// expectation held.
pub(crate) async fn run(scenario: Scenario) -> ExitCode {
    if scenario == Scenario::Cluster
        && let Err(reason) = cluster::preflight()
    {
        eprintln!("sugang demo cluster: needs nats-server: {reason}");
        return ExitCode::FAILURE;
    }
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
        Scenario::Waitlist => waitlist::run(&timeline, &workdir.path).await,
        Scenario::Gate => gate::run(&timeline, &workdir.path).await,
        Scenario::Cluster => cluster::run(&timeline, &workdir.path).await,
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
///
/// Lines are not printed at once: they wait in a buffer, with the time they
/// refer to, until [`Timeline::flush`] prints them sorted by that time. So a
/// server event read from the log later (a breaker transition, a restart)
/// is printed where it happened among the demo's own actions, never after
/// something that came later.
pub(crate) struct Timeline {
    start: Instant,
    /// The wall clock at `start`, in µs since the Unix epoch: maps the
    /// server log's timestamps onto the timeline.
    start_unix_us: i128,
    /// Every expectation that did not hold, in the order checked.
    broken: Mutex<Vec<String>>,
    /// How many expectations were checked.
    checked: Mutex<usize>,
    /// Lines not printed yet: the time they refer to, their order of
    /// arrival, the text.
    pending: Mutex<Vec<(Duration, u64, String)>>,
    /// The time of the last `say`, which its notes share; the arrival count.
    cursor: Mutex<(Duration, u64)>,
}

impl Timeline {
    fn new() -> Self {
        let start = Instant::now();
        let start_unix_us =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i128);
        Timeline {
            start,
            start_unix_us,
            broken: Mutex::new(Vec::new()),
            checked: Mutex::new(0),
            pending: Mutex::new(Vec::new()),
            cursor: Mutex::new((Duration::ZERO, 0)),
        }
    }

    /// Time since the demo started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Where a wall-clock instant (µs since the Unix epoch) falls on the
    /// timeline (zero if before the start).
    fn at_unix_us(&self, unix_us: i128) -> Duration {
        Duration::from_micros(u64::try_from(unix_us - self.start_unix_us).unwrap_or(0))
    }

    fn push(&self, at: Option<Duration>, text: String) {
        let mut cursor = lock(&self.cursor);
        cursor.1 += 1;
        let at = match at {
            Some(at) => at,
            None => cursor.0,
        };
        lock(&self.pending).push((at, cursor.1, text));
    }

    /// A timeline entry: something done or something that happened now.
    pub(crate) fn say(&self, line: impl Display) {
        let now = self.elapsed();
        lock(&self.cursor).0 = now;
        self.push(Some(now), format!("[{:>7.3}s] {line}", now.as_secs_f64()));
    }

    /// A timeline entry for something that happened at `at` (read later,
    /// from the server's log): printed in its place by time.
    pub(crate) fn event_at(&self, at: Duration, line: impl Display) {
        self.push(Some(at), format!("[{:>7.3}s] {line}", at.as_secs_f64()));
    }

    /// A detail of the last `say`: what the system answered.
    pub(crate) fn note(&self, line: impl Display) {
        self.push(None, format!("           {line}"));
    }

    /// Checks an expectation, notes it with its outcome, and remembers a
    /// broken one for the verdict. Returns whether it held.
    pub(crate) fn expect(&self, held: bool, what: impl Display) -> bool {
        *lock(&self.checked) += 1;
        if held {
            self.note(format!("✓ {what}"));
        } else {
            self.note(format!("✗ {what}"));
            lock(&self.broken).push(what.to_string());
        }
        held
    }

    /// Prints every buffered line, in time order (lines of the same time in
    /// the order they came).
    pub(crate) fn flush(&self) {
        self.flush_until(Duration::MAX);
    }

    /// Prints, in time order, the buffered lines of up to `until`; later
    /// ones wait for the next flush, so a log line the server stamped
    /// before them but wrote late still comes first.
    fn flush_until(&self, until: Duration) {
        let mut pending = lock(&self.pending);
        pending.sort_by_key(|(at, n, _)| (*at, *n));
        let ready = pending.partition_point(|(at, ..)| *at <= until);
        for (_, _, line) in pending.drain(..ready) {
            println!("{line}");
        }
    }

    /// Prints the one verdict line; the exit code follows it.
    fn verdict(&self, outcome: Result<String, Aborted>) -> ExitCode {
        self.flush();
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

/// Whole milliseconds (truncated), for narration: a check that prints a
/// duration with this compares [`whole_ms`], the very number printed.
pub(crate) fn ms(d: Duration) -> String {
    format!("{} ms", whole_ms(d))
}

/// Whole milliseconds (truncated), as [`ms`] prints them.
pub(crate) fn whole_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
    /// The notable lines read so far.
    entries: Vec<LogEntry>,
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
            let mut server =
                Server { child, pid, api: Api::new(&listen), log: log.clone(), log_read, entries: Vec::new() };
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

    /// SIGTERM, then waits (at most 20 s) for the process to exit, and
    /// narrates what it logged until then.
    pub(crate) async fn terminate(mut self, t: &Timeline) -> Result<std::process::ExitStatus, Aborted> {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .map_err(|e| Aborted(format!("cannot run kill: {e}")))?;
        if !sent.success() {
            return Err(Aborted(format!("kill -TERM {} failed", self.pid)));
        }
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(Ok(status)) => {
                // The process is gone: its log is complete.
                self.read_log_into(t);
                t.flush();
                Ok(status)
            }
            Ok(Err(e)) => Err(Aborted(format!("waiting for pid {}: {e}", self.pid))),
            Err(_) => Err(Aborted(format!("pid {} did not exit within 20 s of SIGTERM", self.pid))),
        }
    }

    /// SIGKILL: no drain, no flush; whatever was not durable is gone. Then
    /// narrates what it logged until it died.
    pub(crate) async fn kill(mut self, t: &Timeline) -> Result<(), Aborted> {
        self.child.kill().await.map_err(|e| Aborted(format!("cannot SIGKILL pid {}: {e}", self.pid)))?;
        // `kill` waits for the process to be gone: its log is complete.
        self.read_log_into(t);
        t.flush();
        Ok(())
    }

    /// Reads what the server logged since the last call: its warnings and
    /// errors and its few notable infos (restarts, breaker changes, start
    /// and stop), kept in [`Server::log`] with the time each happened.
    /// Returns the new ones.
    fn read_log(&mut self, t: &Timeline) -> Vec<LogEntry> {
        let Ok(mut file) = std::fs::File::open(&self.log) else { return Vec::new() };
        let mut text = String::new();
        if file.seek(SeekFrom::Start(self.log_read)).is_err() || file.read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        // Only whole lines; a partial last line is read next time.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        self.log_read += whole as u64;
        let new: Vec<LogEntry> = text[..whole].lines().filter_map(|line| LogEntry::parse(t, line)).collect();
        self.entries.extend(new.iter().cloned());
        new
    }

    /// Every notable line the server logged so far (as far as read).
    pub(crate) fn log(&self) -> &[LogEntry] {
        &self.entries
    }

    /// Reads the server's log and puts what it logged since the last call
    /// on the timeline, each at the time it happened, then prints the
    /// timeline up to a moment ago (a line the server stamped just before
    /// it read may not be written yet; it comes with the next call).
    /// Nothing is left out: lines that differ only in numbers are folded
    /// into one, with every number (or their range).
    pub(crate) fn narrate_log(&mut self, t: &Timeline) {
        let read_at = t.elapsed();
        self.read_log_into(t);
        t.flush_until(read_at.saturating_sub(LATE_LOG_LINE));
    }

    /// Reads what the server logged since the last call onto the timeline
    /// (see [`Server::narrate_log`]).
    fn read_log_into(&mut self, t: &Timeline) {
        let new = self.read_log(t);
        let mut folded: Vec<(String, Vec<LogEntry>)> = Vec::new();
        for entry in new {
            let key = entry.fold_key();
            match folded.iter_mut().find(|(seen, _)| key.is_some() && Some(seen) == key.as_ref()) {
                Some((_, group)) => group.push(entry),
                None => folded.push((key.unwrap_or_default(), vec![entry])),
            }
        }
        for (_, group) in folded {
            let first = &group[0];
            let mut line = format!("server log: {}", first.describe(&group));
            if let Some(last) = group.last().filter(|_| group.len() > 1) {
                line.push_str(&format!("  (×{}, the last at {:.3}s)", group.len(), last.at.as_secs_f64()));
            }
            t.event_at(first.at, line);
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

/// How late a log line may be written after the time it is stamped with
/// (the server's thread preempted in between on a loaded machine): the
/// timeline holds back its last moments this long before printing them.
const LATE_LOG_LINE: Duration = Duration::from_millis(250);

/// A notable line of the server's JSON log.
#[derive(Clone, Debug)]
pub(crate) struct LogEntry {
    /// When it was logged, on the demo's timeline.
    pub(crate) at: Duration,
    pub(crate) level: String,
    pub(crate) message: String,
    /// Its fields, `message` excluded.
    pub(crate) fields: serde_json::Map<String, Value>,
}

impl LogEntry {
    /// A JSON log line worth narrating: a warning or error, or one of the
    /// few notable infos.
    fn parse(t: &Timeline, line: &str) -> Option<LogEntry> {
        const NOTABLE_INFO: [&str; 11] = [
            "took over the log",
            "caught up with the log",
            "restarted from storage",
            "breaker changed state",
            "subscriber started",
            "sugang started",
            "stopped cleanly",
            "resuming owed refunds",
            "subscriber stopped",
            "seat given to the first in line",
            "the seat passes on",
        ];
        // Every refused request is logged by the HTTP layer; the demo narrates
        // the answers themselves.
        const SKIPPED: [&str; 1] = ["response failed"];
        let value: Value = serde_json::from_str(line).ok()?;
        let level = value["level"].as_str()?;
        let mut fields = value["fields"].as_object()?.clone();
        let message = fields.remove("message").and_then(|m| m.as_str().map(str::to_owned)).unwrap_or_default();
        let wanted = match level {
            "WARN" | "ERROR" => !SKIPPED.contains(&message.as_str()),
            "INFO" => NOTABLE_INFO.iter().any(|n| message.contains(n)),
            _ => false,
        };
        if !wanted {
            return None;
        }
        let at = value["timestamp"].as_str().and_then(unix_us).map_or_else(|| t.elapsed(), |us| t.at_unix_us(us));
        Some(LogEntry { at, level: level.to_owned(), message, fields })
    }

    /// A string field.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }

    /// A number field.
    pub(crate) fn number(&self, name: &str) -> Option<u64> {
        self.fields.get(name).and_then(Value::as_u64)
    }

    /// What lines fold into this one: same level, message and fields but
    /// for numbers;
    /// `None` for the lines never folded (each is a step of the story).
    fn fold_key(&self) -> Option<String> {
        const NEVER_FOLDED: [&str; 4] = ["breaker", "sugang started", "interrupted", "held down"];
        if NEVER_FOLDED.iter().any(|n| self.message.contains(n)) {
            return None;
        }
        let mut key = format!("{} {}", self.level, self.message);
        for (name, value) in &self.fields {
            match value {
                Value::Number(_) => {}
                Value::String(s) => key.push_str(&format!(" {name}={s}")),
                other => key.push_str(&format!(" {name}={other}")),
            }
        }
        Some(key)
    }

    /// `LEVEL message {field=value …}`; a number field that differs across
    /// `group` (the lines folded into this one) shows every value, or their
    /// range when there are many.
    fn describe(&self, group: &[LogEntry]) -> String {
        let mut details = Vec::new();
        for (name, value) in &self.fields {
            match value {
                Value::String(s) => details.push(format!("{name}={}", shorten(s, 90))),
                Value::Number(_) => {
                    let mut values: Vec<String> = Vec::new();
                    for entry in group {
                        let v = entry.fields.get(name).map_or_else(|| "-".to_owned(), Value::to_string);
                        if !values.contains(&v) {
                            values.push(v);
                        }
                    }
                    let numbers: Vec<u64> = group.iter().filter_map(|e| e.number(name)).collect();
                    let shown = match (values.len(), numbers.iter().min(), numbers.iter().max()) {
                        (n, Some(lo), Some(hi)) if n > 6 && numbers.len() == group.len() => format!("{lo}..{hi}"),
                        _ => values.join(","),
                    };
                    details.push(format!("{name}={shown}"));
                }
                other => details.push(format!("{name}={other}")),
            }
        }
        format!("{:<5} {} {{{}}}", self.level, self.message, details.join(" "))
    }
}

/// An RFC 3339 UTC timestamp (`2026-12-01T23:36:12.345678Z`, as the JSON log
/// writes it) in µs since the Unix epoch.
fn unix_us(stamp: &str) -> Option<i128> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (date.next()??, date.next()??, date.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (hms.next()??, hms.next()??, hms.next()??);
    let digits: String = fraction.chars().take(6).collect();
    let micros = digits.parse::<i64>().ok()? * 10i64.pow(6 - digits.len() as u32);
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(i128::from(seconds) * 1_000_000 + i128::from(micros))
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
