//! `sugang rush`: the registration-rush load generator.
//!
//! Creates `--courses` courses of `--capacity` seats, then lets `--students`
//! new students enroll as fast as `--concurrency` requests in flight allow.
//! Each student picks courses by a Zipf popularity (`--zipf`, 0 = uniform)
//! and tries up to `--tries` different ones until one enrolls them (a full
//! course answers 409; an overloaded server's 503 is retried after a short
//! pause without spending a try). It prints the throughput, the latency
//! percentiles and the status histogram of the enrollment requests, then
//! checks the system's invariants over the API alone and exits non-zero,
//! naming each violation, if one does not hold.
//!
//! With `--waitlist`, the courses keep waitlists (`--waitlist-capacity`)
//! and a student who finds a course full joins its waitlist instead of
//! trying the next; `--cancel PERCENT` makes that share of the enrolled
//! cancel once everyone has enrolled or joined, so the freed seats go to
//! the first in line of each waitlist. The
//! checks then wait for the rush to settle and add: no seat left empty
//! while an entry waits, and every `ENROLLED` entry has its completed
//! class with exactly one approved payment.
//! With `--gate RATE` the students go through the waiting room first
//! (`gate`): every student takes a ticket, waits for admission, and enrolls
//! with it; the summary and the checks add the waiting room's.
//!
//! With several `--url`s (the nodes of a cluster) the students are spread
//! over them round-robin; a request a node gives no answer to is sent to
//! the next node, and with `--patience-ms` a 502/503/504 or a silence is
//! retried that long (a takeover). The checks read from the first node that
//! answers, once it has caught up, and every other node must show the same
//! classes, seat counts and payments (`compare`).
//!
//! Owns the client side only: it talks to a running server over HTTP and
//! must not reach into the actor system or the store.
//!
//! # Layout
//!
//! - `compare`: the node the checks read from, and every node showing the same.
//! - `gate`: the waiting room, with `--gate`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::ErrorKind;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

mod compare;
mod gate;

/// The card number every rush student pays with (approved by the simulated gateway).
const APPROVED_CARD: &str = "4242424242424242";
/// How many times one student's enrollment is retried after a 503.
const MAX_UNAVAILABLE_RETRIES: u32 = 20;
/// The pause before retrying a 503: short, since a rush is about speed.
const UNAVAILABLE_PAUSE: Duration = Duration::from_millis(20);
/// How long the checks wait for the waitlists' promotions to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// How many times a read model that is not caught up (503) is asked again.
const READ_MODEL_RETRIES: u32 = 10;
/// The largest page the API serves.
const PAGE_SIZE: usize = 1000;

#[derive(Args)]
pub(crate) struct RushArgs {
    /// The server's base URL; repeat it (or separate URLs with commas) for
    /// the nodes of a cluster: students are spread over them round-robin,
    /// a request a node does not take is sent to the next one, and the
    /// checks read from the first that answers and compare every other.
    #[arg(long = "url", value_name = "URL", value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    urls: Vec<String>,
    /// How long one enrollment keeps being retried while the service answers
    /// 502/503/504 or no node answers, in milliseconds: long enough to ride
    /// out a cluster's takeover. 0: twenty retries 20 ms apart, and no
    /// retry after no answer (one server).
    #[arg(long, default_value_t = 0)]
    patience_ms: u64,
    /// How many students enroll (each one new, named after this run).
    #[arg(long, default_value_t = 20_000)]
    students: usize,
    /// How many courses are created for the rush.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    courses: u64,
    /// The seats of each course.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..))]
    capacity: u64,
    /// Enrollment requests in flight at most.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// The Zipf exponent of course popularity: 0 is uniform, 1 makes the
    /// first course twice as popular as the second.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// How many different courses a student tries until one enrolls them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    tries: u64,
    /// Student n tries course n mod M first (later tries by popularity):
    /// with as many students as seats, every seat is sold without a 409.
    #[arg(long)]
    spread: bool,
    /// Skips the invariant checks, and keeps no record per student for them:
    /// for loads too large to check over the API (they read every class).
    #[arg(long)]
    no_check: bool,
    /// Courses keep waitlists, and a student who finds one full joins it.
    #[arg(long)]
    waitlist: bool,
    /// The places of each course's waitlist (with `--waitlist`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    waitlist_capacity: u64,
    /// The share, in percent, of enrolled students who cancel after the
    /// rush (freeing their seat for the first in line).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100))]
    cancel: u64,
    /// Goes through the waiting room: turns the gate on at RATE admissions
    /// per second; every student takes a ticket before the opening and
    /// enrolls once admitted.
    #[arg(long, value_name = "RATE", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    gate: Option<u32>,
    /// A bearer token for a server with auth on (an admin's: the checks read everything).
    #[arg(long, env = "SUGANG_RUSH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Runs the rush and the checks; the exit code says whether every invariant held.
pub(crate) async fn run(args: RushArgs) -> ExitCode {
    if !(args.zipf.is_finite() && args.zipf >= 0.0) {
        eprintln!("sugang rush: --zipf must be a finite number >= 0");
        return ExitCode::FAILURE;
    }
    match rush(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sugang rush: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why the rush could not run or check (not an invariant violation).
#[derive(Debug)]
enum RushError {
    /// No connection to the server at all: the likeliest mistake, said plainly.
    Unreachable { url: String, cause: String, refused: bool },
    /// No answer at all.
    Http { what: String, source: reqwest::Error },
    /// An answer other than the one the step needs.
    Status { what: String, status: StatusCode, body: String },
    /// An answer that is not the contract's shape.
    Shape { what: String },
}

impl fmt::Display for RushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RushError::Unreachable { url, cause, refused: true } => {
                write!(f, "cannot reach {url}: {cause} — is `sugang serve` running?")
            }
            RushError::Unreachable { url, cause, refused: false } => write!(f, "cannot reach {url}: {cause}"),
            RushError::Http { what, source } => write!(f, "{what}: {source}"),
            RushError::Status { what, status, body } => write!(f, "{what}: {status}: {body}"),
            RushError::Shape { what } => write!(f, "unexpected answer: {what}"),
        }
    }
}

/// The server, as the rush and the checks talk to it.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    /// The base URL, without a trailing slash.
    base: Arc<str>,
    /// Sent as a bearer token with every request when present.
    token: Option<Arc<str>>,
}

impl Api {
    fn new(url: &str, token: Option<String>, concurrency: usize) -> Result<Self, RushError> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| RushError::Http { what: "building the HTTP client".into(), source })?;
        Ok(Api { client, base: url.trim_end_matches('/').into(), token: token.map(Into::into) })
    }

    /// The same client and token against another node of a cluster.
    fn at(&self, url: &str) -> Api {
        Api { client: self.client.clone(), base: url.trim_end_matches('/').into(), token: self.token.clone() }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends and reads the whole answer: status, `X-Sugang-Seq`, body.
    async fn send(&self, request: RequestBuilder, what: &str) -> Result<Answer, RushError> {
        let response = request.send().await.map_err(|source| self.no_answer(what, source))?;
        let status = response.status();
        let seq = response.headers().get("x-sugang-seq").and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok());
        let body = response.bytes().await.map_err(|source| RushError::Http { what: what.into(), source })?;
        Ok(Answer { status, seq, body: body.to_vec() })
    }

    /// A failed send: `Unreachable` when no connection could be made.
    fn no_answer(&self, what: &str, source: reqwest::Error) -> RushError {
        if !source.is_connect() {
            return RushError::Http { what: what.into(), source };
        }
        // The innermost cause says why ("connection refused", a name that
        // does not resolve); reqwest's own text only names the URL.
        let mut cause: &dyn std::error::Error = &source;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        let refused = cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == ErrorKind::ConnectionRefused);
        let cause = if refused { "connection refused".to_owned() } else { cause.to_string() };
        RushError::Unreachable { url: self.base.to_string(), cause, refused }
    }

    /// A JSON answer with status 200.
    async fn get(&self, path: &str) -> Result<Value, RushError> {
        let mut retries = 0;
        loop {
            let answer = self.send(self.request(Method::GET, path), &format!("GET {path}")).await?;
            match answer.status {
                StatusCode::OK => return answer.json(&format!("GET {path}")),
                // A read model that has not caught up yet: ask again.
                StatusCode::SERVICE_UNAVAILABLE if retries < READ_MODEL_RETRIES => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                status => {
                    let body = String::from_utf8_lossy(&answer.body).into_owned();
                    return Err(RushError::Status { what: format!("GET {path}"), status, body });
                }
            }
        }
    }

    /// Every item of the collection at `path` (whose query string, if any,
    /// is kept), following `page` in pages of 1,000.
    async fn list(&self, path: &str, embedded: &str) -> Result<Vec<Value>, RushError> {
        let joiner = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut page = 0u64;
        loop {
            let body = self.get(&format!("{path}{joiner}size={PAGE_SIZE}&page={page}")).await?;
            if let Some(found) = body["_embedded"][embedded].as_array() {
                items.extend(found.iter().cloned());
            }
            let pages = body["page"]["totalPages"]
                .as_u64()
                .ok_or_else(|| RushError::Shape { what: format!("{path}: no page.totalPages") })?;
            page += 1;
            if page >= pages {
                return Ok(items);
            }
        }
    }
}

/// One whole answer.
struct Answer {
    status: StatusCode,
    seq: Option<u64>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self, what: &str) -> Result<Value, RushError> {
        serde_json::from_slice(&self.body).map_err(|e| RushError::Shape { what: format!("{what}: {e}") })
    }
}

/// Picks courses by popularity: rank `k` (0-based) weighs `1 / (k + 1)^s`.
struct Popularity {
    /// The cumulative weights, normalised to end at 1.
    cdf: Vec<f64>,
}

impl Popularity {
    fn zipf(courses: usize, exponent: f64) -> Self {
        let weights: Vec<f64> = (0..courses).map(|k| ((k + 1) as f64).powf(-exponent)).collect();
        let total: f64 = weights.iter().sum();
        let mut sum = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                sum += w / total;
                sum
            })
            .collect();
        Popularity { cdf }
    }

    /// A course rank not in `tried` (None once every course was tried).
    fn pick(&self, rng: &mut fastrand::Rng, tried: &[usize]) -> Option<usize> {
        if tried.len() >= self.cdf.len() {
            return None;
        }
        for _ in 0..32 {
            let u = rng.f64();
            let rank = self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1);
            if !tried.contains(&rank) {
                return Some(rank);
            }
        }
        // A very skewed distribution whose popular courses were all tried:
        // the most popular one left.
        (0..self.cdf.len()).find(|rank| !tried.contains(rank))
    }
}

/// A 201: who got which seat.
#[derive(Clone)]
struct Enrolled {
    id: u64,
    course: u64,
    student: String,
    /// Canceled after the rush (`--cancel`).
    canceled: bool,
}

/// Why a student ended the rush without a seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum NoSeat {
    /// Every course they tried was full (`--tries` of them, or every course).
    Full,
    /// The server answered 503 through every retry.
    Unavailable,
    /// A request got no answer (connection refused or reset, timeout).
    NoAnswer,
    /// Another refusal (a status other than 201, 202, 409 and 503).
    Refused,
    /// Joined a course's waitlist (`--waitlist`): waits for a freed seat.
    Waitlisted,
}

impl NoSeat {
    fn describe(self, n: u64) -> String {
        match self {
            NoSeat::Full => format!("{n} found every course they tried full"),
            NoSeat::Unavailable => format!("{n} got 503 through every retry"),
            NoSeat::NoAnswer => format!("{n} got no answer"),
            NoSeat::Refused => format!("{n} were refused otherwise"),
            NoSeat::Waitlisted => format!("{n} joined a waitlist"),
        }
    }
}

/// What the enrollment requests of one worker (or all of them) saw.
#[derive(Default)]
struct Tally {
    /// Per request, from send to the last byte of the answer, in microseconds.
    latencies_us: Vec<u64>,
    /// The same, of the 201s only: what an enrolling student waited.
    created_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer (connection refused, timeout).
    transport_errors: u64,
    /// Requests sent again to the next node after one gave no answer.
    failovers: u64,
    /// Requests whose outcome the rush cannot know: cut off after they were
    /// sent, or answered 502/504 by a node that had passed them on to a
    /// primary that went silent (a 503 did nothing). Each may have enrolled
    /// its student without a 201.
    ambiguous: u64,
    enrolled: Vec<Enrolled>,
    /// The 201s (`enrolled` holds them too unless `--no-check`).
    completed: u64,
    /// The highest `X-Sugang-Seq` answered: the read models must reach it.
    max_seq: u64,
    /// The students who got no seat, by why.
    no_seat: BTreeMap<NoSeat, u64>,
    /// Enrollments canceled after the rush (`--cancel`).
    canceled: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.created_us.extend(other.created_us);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.failovers += other.failovers;
        self.ambiguous += other.ambiguous;
        self.enrolled.extend(other.enrolled);
        self.completed += other.completed;
        self.max_seq = self.max_seq.max(other.max_seq);
        for (why, n) in other.no_seat {
            *self.no_seat.entry(why).or_default() += n;
        }
        self.canceled += other.canceled;
    }
}

async fn rush(args: &RushArgs) -> Result<bool, RushError> {
    let started = Instant::now();
    let concurrency = args.concurrency as usize;
    let Some(first_url) = args.urls.first() else {
        return Err(RushError::Shape { what: "no --url given".into() });
    };
    let api = Api::new(first_url, args.token.clone(), concurrency)?;
    let nodes: Arc<[Api]> = args.urls.iter().map(|url| api.at(url)).collect();
    let tag = format!("{:08x}", fastrand::u32(..));
    let against: Vec<&str> = nodes.iter().map(|node| &*node.base).collect();
    println!(
        "rush {tag}: {} students, {} courses x {} seats, zipf {}, up to {} tries each, {} in flight, against {}",
        args.students,
        args.courses,
        args.capacity,
        args.zipf,
        args.tries,
        args.concurrency,
        against.join(", ")
    );

    let (courses, course_seq) = create_courses(&api, args, &tag).await?;
    let popularity = Arc::new(Popularity::zipf(courses.len(), args.zipf));
    let room = match args.gate {
        Some(rate) => Some(Arc::new(gate::Room::open(&api, rate, args.students, &tag, concurrency).await?)),
        None => None,
    };

    let progress = progress_bar(args.students as u64, ProgressDrawTarget::stderr());
    let next = Arc::new(AtomicUsize::new(0));
    let courses = Arc::new(courses);
    let rush_started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.min(args.students.max(1)) {
        let worker = Worker {
            nodes: nodes.clone(),
            patience: Duration::from_millis(args.patience_ms),
            next: next.clone(),
            students: args.students,
            tries: args.tries as usize,
            spread: args.spread,
            keep: !args.no_check || args.cancel > 0,
            waitlist: args.waitlist,
            courses: courses.clone(),
            popularity: popularity.clone(),
            tag: tag.clone(),
            progress: progress.clone(),
            room: room.clone(),
        };
        workers.spawn(worker.run());
    }
    let mut tally = Tally { max_seq: course_seq, ..Tally::default() };
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(worker_tally) => tally.merge(worker_tally),
            Err(e) => return Err(RushError::Shape { what: format!("a rush worker failed: {e}") }),
        }
    }
    let rush_time = rush_started.elapsed();
    progress.finish_and_clear();
    summarize(args, &tally, rush_time);
    if args.cancel > 0 {
        cancel_some(&api, &mut tally, args.cancel, concurrency).await?;
        println!("canceled after the rush: {} of {} enrollments", tally.canceled, tally.completed);
    }
    let gate_violations = room.as_ref().map(|room| room.summarize()).unwrap_or_default();
    if let Some(room) = room.and_then(Arc::into_inner) {
        room.close().await?;
    }
    if args.no_check {
        println!("invariants: not checked (--no-check)");
        println!("wall time: {:.2} s", started.elapsed().as_secs_f64());
        return Ok(true);
    }

    let checks_started = Instant::now();
    let (reader, others) = compare::reader(&nodes, tally.max_seq).await?;
    let mut violations = check(&reader, args, &courses, &tally).await?;
    violations.extend(compare::same_everywhere(&reader, &others, &courses).await?);
    violations.extend(gate_violations);
    let checks_time = checks_started.elapsed();
    if violations.is_empty() {
        println!("invariants: all hold (checked in {:.2} s)", checks_time.as_secs_f64());
    } else {
        for violation in &violations {
            eprintln!("violation: {violation}");
        }
        println!("invariants: {} violated (checked in {:.2} s)", violations.len(), checks_time.as_secs_f64());
    }
    println!("wall time: {:.2} s", started.elapsed().as_secs_f64());
    Ok(violations.is_empty())
}

/// The rush's progress: students done, their rate (a whole number), and
/// the time since the rush began. Redrawn on a steady tick, so the clock
/// runs even while no student finishes (a slow server, a long retry).
fn progress_bar(students: u64, target: ProgressDrawTarget) -> ProgressBar {
    let progress = ProgressBar::with_draw_target(Some(students), target);
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} students  {rate} students/s  {elapsed_precise}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |state: &ProgressState, w: &mut dyn fmt::Write| {
            // The average since the rush began: steadier than indicatif's
            // own estimate, and not shown before a second has passed (ten
            // students in a millisecond is not a rate).
            let secs = state.elapsed().as_secs_f64();
            let _ = if secs < 1.0 { write!(w, "-") } else { write!(w, "{:.0}", state.pos() as f64 / secs) };
        });
    progress.set_style(style);
    progress.enable_steady_tick(Duration::from_millis(250));
    progress
}

/// Creates the rush's courses; returns their ids by popularity rank, and
/// the highest seq their creation answered.
async fn create_courses(api: &Api, args: &RushArgs, tag: &str) -> Result<(Vec<u64>, u64), RushError> {
    let limit = Arc::new(Semaphore::new(args.concurrency as usize));
    let mut creating = JoinSet::new();
    for rank in 0..args.courses {
        let (api, limit) = (api.clone(), limit.clone());
        let waitlist_capacity = if args.waitlist { args.waitlist_capacity } else { 0 };
        let body = json!({
            "name": format!("rush-{tag}-{rank}"), "teacher": format!("rush-teacher-{tag}"),
            "fee": 10000, "textBook": "rush-book", "capacity": args.capacity, "waitlistCapacity": waitlist_capacity,
        });
        creating.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let what = format!("creating course {rank}");
            let answer = api.send(api.request(Method::POST, "/courses").json(&body), &what).await?;
            if answer.status != StatusCode::CREATED {
                let body = String::from_utf8_lossy(&answer.body).into_owned();
                return Err(RushError::Status { what, status: answer.status, body });
            }
            let id = answer.json(&what)?["id"].as_u64().ok_or_else(|| RushError::Shape { what: what.clone() })?;
            Ok((rank, id, answer.seq.unwrap_or(0)))
        });
    }
    let mut ids = vec![0; args.courses as usize];
    let mut max_seq = 0;
    while let Some(created) = creating.join_next().await {
        let (rank, id, seq) = created.map_err(|e| RushError::Shape { what: format!("creating a course: {e}") })??;
        ids[rank as usize] = id;
        max_seq = max_seq.max(seq);
    }
    Ok((ids, max_seq))
}

/// One of the `--concurrency` loops: takes the next student until none is left.
struct Worker {
    /// One per `--url`: student n enrolls through node n mod their number.
    nodes: Arc<[Api]>,
    /// How long a request is retried while no node takes it (`--patience-ms`).
    patience: Duration,
    /// The next student's number, shared by all workers.
    next: Arc<AtomicUsize>,
    students: usize,
    tries: usize,
    /// Student n tries course n mod M first.
    spread: bool,
    /// Keeps each 201 for the checks.
    keep: bool,
    /// Joins the waitlist of a full course.
    waitlist: bool,
    /// Course ids by popularity rank.
    courses: Arc<Vec<u64>>,
    popularity: Arc<Popularity>,
    /// Makes this run's student names new to the server.
    tag: String,
    progress: ProgressBar,
    /// The waiting room, with `--gate`: students go in their place order.
    room: Option<Arc<gate::Room>>,
}

/// Student `n`'s name in the rush tagged `tag`.
fn student_name(tag: &str, n: usize) -> String {
    format!("rush-{tag}-{n}")
}

impl Worker {
    async fn run(self) -> Tally {
        let mut tally = Tally::default();
        let mut rng = fastrand::Rng::new();
        let mut tried = Vec::with_capacity(self.tries);
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if n >= self.students {
                return tally;
            }
            let (n, admission) = match &self.room {
                Some(room) => match room.admit(n).await {
                    Ok(admitted) => (admitted.student, Some(admitted.token)),
                    Err(e) => {
                        eprintln!("sugang rush: waiting for admission: {e}");
                        *tally.no_seat.entry(NoSeat::NoAnswer).or_default() += 1;
                        self.progress.inc(1);
                        continue;
                    }
                },
                None => (n, None),
            };
            let student = student_name(&self.tag, n);
            tried.clear();
            let first = self.spread.then(|| n % self.courses.len());
            let home = n % self.nodes.len();
            let enrolled =
                self.enroll(&student, home, admission.as_deref(), first, &mut rng, &mut tried, &mut tally).await;
            if let Err(why) = enrolled {
                *tally.no_seat.entry(why).or_default() += 1;
            }
            self.progress.inc(1);
        }
    }

    /// One student, through node `node` (the next one when it does not
    /// answer): up to `tries` courses (the first `first` when given), until
    /// one enrolls them; or why none did.
    #[allow(clippy::too_many_arguments)]
    async fn enroll(
        &self,
        student: &str,
        mut node: usize,
        admission: Option<&str>,
        first: Option<usize>,
        rng: &mut fastrand::Rng,
        tried: &mut Vec<usize>,
        tally: &mut Tally,
    ) -> Result<(), NoSeat> {
        let mut unavailable = 0;
        // Nodes that gave no answer in a row: once every node has, the
        // rush pauses before going round again (within its patience).
        let mut silent = 0;
        let patient_until = Instant::now() + self.patience;
        let cluster = self.nodes.len() > 1;
        let Some(mut rank) = first.or_else(|| self.popularity.pick(rng, tried)) else { return Err(NoSeat::Full) };
        loop {
            let course = self.courses[rank];
            let body = json!({"courseId": course, "student": student, "payAccount": APPROVED_CARD, "addr": "Seoul",
                              "waitlist": self.waitlist});
            let sent = Instant::now();
            let api = &self.nodes[node];
            let mut request = api.request(Method::POST, "/classes").json(&body);
            if let Some(admission) = admission {
                request = request.header("X-Sugang-Admission", admission);
            }
            let answer = api.send(request, "POST /classes").await;
            let took_us = sent.elapsed().as_micros() as u64;
            tally.latencies_us.push(took_us);
            let answer = match answer {
                Ok(answer) => answer,
                Err(error) => {
                    tally.transport_errors += 1;
                    // A refused connection sent nothing; anything later may
                    // have been taken before the node went away.
                    if !matches!(error, RushError::Unreachable { .. }) {
                        tally.ambiguous += 1;
                    }
                    silent += 1;
                    let patient = Instant::now() < patient_until;
                    if !patient && (!cluster || silent >= self.nodes.len()) {
                        return Err(NoSeat::NoAnswer);
                    }
                    if silent >= self.nodes.len() {
                        silent = 0;
                        tokio::time::sleep(UNAVAILABLE_PAUSE * 5).await;
                    }
                    node = (node + 1) % self.nodes.len();
                    tally.failovers += u64::from(cluster);
                    continue;
                }
            };
            silent = 0;
            *tally.statuses.entry(answer.status.as_u16()).or_default() += 1;
            tally.max_seq = tally.max_seq.max(answer.seq.unwrap_or(0));
            match answer.status {
                StatusCode::CREATED => {
                    tally.completed += 1;
                    tally.created_us.push(took_us);
                    if self.keep {
                        let id = answer.json("POST /classes").ok().and_then(|v| v["id"].as_u64()).unwrap_or(0);
                        tally.enrolled.push(Enrolled { id, course, student: student.to_owned(), canceled: false });
                    }
                    return Ok(());
                }
                StatusCode::ACCEPTED | StatusCode::OK if self.waitlist => return Err(NoSeat::Waitlisted),
                StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
                    if unavailable < MAX_UNAVAILABLE_RETRIES || Instant::now() < patient_until =>
                {
                    // A node of a cluster answers 504 (or a proxy 502) when
                    // the primary took the request and went silent: it may
                    // have enrolled the student. A 503 did nothing.
                    if cluster && answer.status != StatusCode::SERVICE_UNAVAILABLE {
                        tally.ambiguous += 1;
                    }
                    unavailable += 1;
                    tokio::time::sleep(UNAVAILABLE_PAUSE).await;
                }
                StatusCode::CONFLICT => {
                    tried.push(rank);
                    if tried.len() >= self.tries {
                        return Err(NoSeat::Full);
                    }
                    match self.popularity.pick(rng, tried) {
                        Some(next) => rank = next,
                        None => return Err(NoSeat::Full),
                    }
                }
                StatusCode::SERVICE_UNAVAILABLE => return Err(NoSeat::Unavailable),
                _ => return Err(NoSeat::Refused),
            }
        }
    }
}

/// Cancels `percent` % of the rush's enrollments, chosen at random, as
/// `concurrency` students at a time (`--cancel`).
async fn cancel_some(api: &Api, tally: &mut Tally, percent: u64, concurrency: usize) -> Result<(), RushError> {
    let mut rng = fastrand::Rng::new();
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut canceling = JoinSet::new();
    for (i, enrolled) in tally.enrolled.iter().enumerate() {
        if rng.u64(0..100) >= percent {
            continue;
        }
        let (api, limit, id) = (api.clone(), limit.clone(), enrolled.id);
        canceling.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let what = format!("DELETE /classes/{id}");
            let answer = api.send(api.request(Method::DELETE, &format!("/classes/{id}")), &what).await?;
            if answer.status != StatusCode::NO_CONTENT {
                let body = String::from_utf8_lossy(&answer.body).into_owned();
                return Err(RushError::Status { what, status: answer.status, body });
            }
            Ok((i, answer.seq.unwrap_or(0)))
        });
    }
    while let Some(done) = canceling.join_next().await {
        let (i, seq) = done.map_err(|e| RushError::Shape { what: format!("canceling: {e}") })??;
        tally.enrolled[i].canceled = true;
        tally.canceled += 1;
        tally.max_seq = tally.max_seq.max(seq);
    }
    Ok(())
}

fn summarize(args: &RushArgs, tally: &Tally, elapsed: Duration) {
    let requests = tally.latencies_us.len();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let seats = args.courses * args.capacity;
    let no_seat: u64 = tally.no_seat.values().sum();
    let why: Vec<String> = tally.no_seat.iter().map(|(why, &n)| why.describe(n)).collect();
    let why = if why.is_empty() { String::new() } else { format!(" ({})", why.join(", ")) };
    println!(
        "enroll: {requests} requests in {secs:.2} s = {:.0} req/s; {} of {} students enrolled, {no_seat} got no seat{why}; {} of {seats} seats sold",
        requests as f64 / secs,
        tally.completed,
        args.students,
        tally.completed,
    );
    for (label, latencies) in [("latency", &tally.latencies_us), ("latency of the 201s", &tally.created_us)] {
        let mut sorted = latencies.clone();
        sorted.sort_unstable();
        let at = |q: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i] as f64 / 1000.0
        };
        println!(
            "{label}: p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            at(0.50),
            at(0.95),
            at(0.99),
            at(1.0)
        );
    }
    let mut statuses: Vec<String> = tally.statuses.iter().map(|(status, n)| format!("{status} x {n}")).collect();
    if tally.transport_errors > 0 {
        statuses.push(format!("no answer x {}", tally.transport_errors));
    }
    println!("statuses: {}", statuses.join(", "));
    if args.urls.len() > 1 {
        println!(
            "nodes: students spread over {} URLs; {} requests sent again to the next node after no answer; {} \
             answers ambiguous (cut off, or 502/504: the primary may have taken them)",
            args.urls.len(),
            tally.failovers,
            tally.ambiguous
        );
    }
}

/// A class as `GET /classes` shows it.
struct Class {
    course: u64,
    student: String,
    completed: bool,
}

/// Checks every invariant over the API; returns the violations, each named.
async fn check(api: &Api, args: &RushArgs, courses: &[u64], tally: &Tally) -> Result<Vec<String>, RushError> {
    let mut violations = Vec::new();
    let ours: HashMap<u64, u64> = courses.iter().map(|&id| (id, 0)).collect();
    // Promotions go on after the last answer: wait for them, then read
    // everything as of a seq past them.
    let mut after = tally.max_seq;
    if args.waitlist {
        let (empty, settled_seq) = settle(api, args, courses).await?;
        violations.extend(empty);
        after = after.max(settled_seq);
    }

    let mut classes = HashMap::new();
    for item in api.list("/classes", "classes").await? {
        let id = field_u64(&item, "id", "a class")?;
        let class = Class {
            course: field_u64(&item, "courseId", "a class")?,
            student: item["student"].as_str().unwrap_or_default().to_owned(),
            completed: item["status"] == "COMPLETED",
        };
        classes.insert(id, class);
    }
    let mut completed = ours.clone();
    for class in classes.values().filter(|c| c.completed) {
        if let Some(n) = completed.get_mut(&class.course) {
            *n += 1;
        }
    }

    // No course over capacity; studentCount equals its completed classes.
    let mut seen = 0;
    for item in api.list("/courses", "courses").await? {
        let id = field_u64(&item, "id", "a course")?;
        let Some(&count) = completed.get(&id) else { continue };
        seen += 1;
        let student_count = field_u64(&item, "studentCount", "a course")?;
        if student_count > args.capacity || count > args.capacity {
            violations.push(format!(
                "over capacity: course {id} has studentCount {student_count} and {count} completed classes for {} seats",
                args.capacity
            ));
        }
        if student_count != count {
            violations.push(format!(
                "studentCount differs: course {id} says {student_count}, its completed classes are {count}"
            ));
        }
    }
    if seen != courses.len() {
        violations.push(format!(
            "courses missing: {} of the {} created are listed",
            courses.len() - seen,
            courses.len()
        ));
    }

    // Every 201 is a completed class of the course and student it was for
    // (canceled, if the student canceled it) …
    for enrolled in &tally.enrolled {
        match classes.get(&enrolled.id) {
            Some(class)
                if class.completed != enrolled.canceled
                    && class.course == enrolled.course
                    && class.student == enrolled.student => {}
            Some(_) => violations.push(format!(
                "201 not kept: class {} (student {} in course {}) is not that student's completed class",
                enrolled.id, enrolled.student, enrolled.course
            )),
            None => violations.push(format!("201 not kept: class {} is not listed", enrolled.id)),
        }
    }
    // … with exactly one approved payment.
    let kept: Vec<Enrolled> = tally.enrolled.iter().filter(|e| !e.canceled).cloned().collect();
    violations.extend(check_payments_of(api, &kept, args.concurrency as usize).await?);
    // Every ENROLLED waitlist entry has its completed class and payment.
    let mut from_waitlists = Vec::new();
    if args.waitlist {
        let (promoted, wrong) = check_waitlists(api, &ours, &classes, after).await?;
        violations.extend(wrong);
        violations.extend(check_payments_of(api, &promoted, args.concurrency as usize).await?);
        from_waitlists = promoted;
    }
    // And every completed class of the rush was answered 201, or came from
    // a waitlist, or from a request whose answer was lost (at most one each).
    let answered: std::collections::HashSet<u64> = tally.enrolled.iter().chain(&from_waitlists).map(|e| e.id).collect();
    let unanswered =
        classes.iter().filter(|(id, c)| c.completed && ours.contains_key(&c.course) && !answered.contains(id)).count()
            as u64;
    if unanswered > tally.ambiguous {
        violations.push(format!(
            "completed without a 201: {unanswered} classes of the rush's courses, and only {} answers were lost",
            tally.ambiguous
        ));
    }

    // No approved payment without a completed class.
    for payment in api.list("/payments", "payments").await? {
        if payment["payStatus"] != "APPROVED" {
            continue;
        }
        let apply_id = field_u64(&payment, "applyId", "a payment")?;
        if !classes.get(&apply_id).is_some_and(|c| c.completed) {
            violations.push(format!("approved payment without a completed class: applyId {apply_id}"));
        }
    }

    violations.extend(check_read_models(api, after, &completed, &classes).await?);
    Ok(violations)
}

/// Waits (at most [`SETTLE_LIMIT`]) until no course of the rush has a seat
/// free while entries wait on its waitlist; each course still in that state
/// then is a violation. Returns them and a seq past every promotion.
async fn settle(api: &Api, args: &RushArgs, courses: &[u64]) -> Result<(Vec<String>, u64), RushError> {
    let ours: std::collections::HashSet<u64> = courses.iter().copied().collect();
    let deadline = Instant::now() + SETTLE_LIMIT;
    let empty = loop {
        let mut empty = Vec::new();
        for item in api.list("/courses", "courses").await? {
            let id = field_u64(&item, "id", "a course")?;
            if !ours.contains(&id) {
                continue;
            }
            let taken = field_u64(&item, "studentCount", "a course")?;
            let waiting = field_u64(&item, "waitlistLength", "a course")?;
            if waiting > 0 && taken < args.capacity {
                empty.push(format!(
                    "seat left empty: course {id} has {taken} of {} seats taken while {waiting} wait on its waitlist",
                    args.capacity
                ));
            }
        }
        if empty.is_empty() || Instant::now() >= deadline {
            break empty;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // An unchanged PATCH answers the seq the log has reached.
    let first = courses.first().copied().unwrap_or(1);
    let what = format!("PATCH /courses/{first} (for the seq)");
    let answer = api.send(api.request(Method::PATCH, &format!("/courses/{first}")).json(&json!({})), &what).await?;
    if answer.status != StatusCode::OK {
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        return Err(RushError::Status { what, status: answer.status, body });
    }
    Ok((empty, answer.seq.unwrap_or(0)))
}

/// The waitlist entries of the rush's courses, as of `after`: each
/// `ENROLLED` one names a completed class of its course and student.
/// Returns those classes (for the payment check) and the violations, and
/// prints what the waitlists did.
async fn check_waitlists(
    api: &Api,
    ours: &HashMap<u64, u64>,
    classes: &HashMap<u64, Class>,
    after: u64,
) -> Result<(Vec<Enrolled>, Vec<String>), RushError> {
    let (mut promoted, mut violations) = (Vec::new(), Vec::new());
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for entry in api.list(&format!("/waitlists?after={after}"), "waitlists").await? {
        let course = field_u64(&entry, "courseId", "a waitlist entry")?;
        if !ours.contains_key(&course) {
            continue;
        }
        let id = field_u64(&entry, "id", "a waitlist entry")?;
        let status = entry["status"].as_str().unwrap_or_default().to_owned();
        *statuses.entry(status.clone()).or_default() += 1;
        if status != "ENROLLED" {
            continue;
        }
        let student = entry["student"].as_str().unwrap_or_default().to_owned();
        let Some(class_id) = entry["classId"].as_u64() else {
            violations.push(format!("waitlist entry {id} is ENROLLED without a classId"));
            continue;
        };
        match classes.get(&class_id) {
            Some(class) if class.completed && class.course == course && class.student == student => {}
            _ => violations.push(format!(
                "waitlist entry {id} is ENROLLED as class {class_id}, which is not {student}'s completed class in course {course}"
            )),
        }
        promoted.push(Enrolled { id: class_id, course, student, canceled: false });
    }
    let said: Vec<String> = statuses.iter().map(|(status, n)| format!("{status} x {n}")).collect();
    println!("waitlists: {} entries ({})", statuses.values().sum::<u64>(), said.join(", "));
    Ok((promoted, violations))
}

/// `GET /payments?applyId=` of every 201: exactly one APPROVED payment each.
async fn check_payments_of(api: &Api, enrolled: &[Enrolled], concurrency: usize) -> Result<Vec<String>, RushError> {
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut asking = JoinSet::new();
    for enrolled in enrolled {
        let (api, limit, id) = (api.clone(), limit.clone(), enrolled.id);
        asking.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let payments = api.list(&format!("/payments?applyId={id}"), "payments").await?;
            let approved = payments.iter().filter(|p| p["payStatus"] == "APPROVED" && p["applyId"] == id).count();
            Ok::<_, RushError>((id, approved))
        });
    }
    let mut violations = Vec::new();
    while let Some(asked) = asking.join_next().await {
        let (id, approved) = asked.map_err(|e| RushError::Shape { what: format!("asking for a payment: {e}") })??;
        if approved != 1 {
            violations.push(format!("201 without exactly one approved payment: class {id} has {approved}"));
        }
    }
    Ok(violations)
}

/// The read models, once caught up with the last seq the rush was answered,
/// agree with the classes: `/courseSchedules` and `/mypages` per course,
/// `/inquiryMypages` per enrollment.
async fn check_read_models(
    api: &Api,
    after: u64,
    completed: &HashMap<u64, u64>,
    classes: &HashMap<u64, Class>,
) -> Result<Vec<String>, RushError> {
    let mut violations = Vec::new();
    for (path, embedded) in [("/courseSchedules", "courseSchedules"), ("/mypages", "mypages")] {
        let mut seen = 0;
        for item in api.list(&format!("{path}?after={after}"), embedded).await? {
            let course = field_u64(&item, "courseId", path)?;
            let Some(&count) = completed.get(&course) else { continue };
            seen += 1;
            let student_count = field_u64(&item, "studentCount", path)?;
            if student_count != count {
                violations.push(format!(
                    "read model behind: {path} says course {course} has {student_count} students, its completed classes are {count}"
                ));
            }
            if item["openYn"] != (count >= 1) {
                violations.push(format!("read model behind: {path} has the wrong openYn for course {course}"));
            }
        }
        if seen != completed.len() {
            violations.push(format!("read model behind: {path} lists {seen} of the {} courses", completed.len()));
        }
    }

    let mut listed = 0;
    for item in api.list(&format!("/inquiryMypages?after={after}"), "inquiryMypages").await? {
        let course = field_u64(&item, "courseId", "/inquiryMypages")?;
        if !completed.contains_key(&course) {
            continue;
        }
        let apply_id = field_u64(&item, "applyId", "/inquiryMypages")?;
        let completed_here = item["applyStatus"] == "COMPLETED";
        match classes.get(&apply_id) {
            Some(class) if class.completed == completed_here && class.course == course => {}
            _ => violations.push(format!(
                "read model disagrees: /inquiryMypages has enrollment {apply_id} in course {course} as {}",
                item["applyStatus"]
            )),
        }
        if completed_here {
            listed += 1;
            if item["payStatus"] != "APPROVED" {
                violations.push(format!(
                    "read model disagrees: /inquiryMypages has completed enrollment {apply_id} with payStatus {}",
                    item["payStatus"]
                ));
            }
        }
    }
    let expected: u64 = completed.values().sum();
    if listed != expected {
        violations.push(format!(
            "read model behind: /inquiryMypages lists {listed} completed enrollments of the rush's courses, the classes {expected}"
        ));
    }
    Ok(violations)
}

fn field_u64(item: &Value, field: &str, what: &str) -> Result<u64, RushError> {
    item[field].as_u64().ok_or_else(|| RushError::Shape { what: format!("{what} without a numeric {field}: {item}") })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use indicatif::TermLike;

    use super::*;

    /// A terminal that keeps every line drawn on it.
    #[derive(Debug, Default, Clone)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        fn lines(&self) -> Vec<String> {
            self.0.lock().map(|lines| lines.clone()).unwrap_or_default()
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            if !s.trim().is_empty()
                && let Ok(mut lines) = self.0.lock()
            {
                lines.push(s.to_owned());
            }
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_progress_clock_runs_while_no_student_finishes_and_the_rate_is_whole() {
        let screen = Screen::default();
        let progress = progress_bar(100, ProgressDrawTarget::term_like(Box::new(screen.clone())));
        progress.inc(10);
        // No further progress: only a steady tick can move the clock.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !screen.lines().iter().any(|line| line.contains("00:00:01")) {
            assert!(Instant::now() < deadline, "the clock never reached 00:00:01: {:?}", screen.lines());
            std::thread::sleep(Duration::from_millis(50));
        }
        progress.finish_and_clear();
        let last = screen.lines().into_iter().rfind(|line| line.contains("students/s")).expect("a drawn bar");
        let rate = last.split_whitespace().take_while(|word| *word != "students/s").last().expect("a rate");
        let rate: u64 = rate.parse().unwrap_or_else(|_| panic!("a whole number of students per second: {last:?}"));
        assert!(rate <= 10, "10 students in a second or more: {last:?}");
        assert!(last.contains("10/100 students"), "{last:?}");
    }

    #[test]
    fn zipf_favours_the_first_ranks_and_uniform_does_not() {
        let mut rng = fastrand::Rng::with_seed(7);
        let skewed = Popularity::zipf(50, 1.0);
        let mut hits = [0u32; 50];
        for _ in 0..20_000 {
            hits[skewed.pick(&mut rng, &[]).expect("a course")] += 1;
        }
        assert!(hits[0] > 4 * hits[10] && hits[49] > 0, "{hits:?}");
        let uniform = Popularity::zipf(4, 0.0);
        let mut hits = [0u32; 4];
        for _ in 0..8_000 {
            hits[uniform.pick(&mut rng, &[]).expect("a course")] += 1;
        }
        assert!(hits.iter().all(|&h| (1_700..2_300).contains(&h)), "{hits:?}");
    }

    #[test]
    fn a_pick_skips_the_courses_tried() {
        let mut rng = fastrand::Rng::with_seed(1);
        let popularity = Popularity::zipf(3, 3.0);
        for _ in 0..100 {
            assert_eq!(popularity.pick(&mut rng, &[0, 1]), Some(2));
        }
        assert_eq!(popularity.pick(&mut rng, &[0, 1, 2]), None);
    }
}
