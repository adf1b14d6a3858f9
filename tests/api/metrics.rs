//! `/metrics` of the real binary as Prometheus and Grafana read it: after
//! some traffic every family has `# HELP` and `# TYPE`; every family the
//! code records is in the catalogue that describes it
//! (`actors/src/metrics.rs`); and every metric the Grafana dashboard
//! (`deploy/grafana-dashboard.json`) queries is one the server exposes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sugang_actors::{METRIC_FAMILIES, MetricKind};

use crate::cli::Served;

/// One family as the exposition shows it.
#[derive(Default, Debug)]
struct Family {
    /// The `# TYPE` line's type.
    kind: Option<String>,
    help: bool,
    /// The names its sample lines use (`x_bucket`, `x_sum`, … or `x`).
    samples: BTreeSet<String>,
}

/// The families of a Prometheus text exposition, by name.
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            families.entry(name.to_owned()).or_default().help = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or_default();
            families.entry(name.to_owned()).or_default().kind = words.next().map(str::to_owned);
        } else if !line.is_empty() && !line.starts_with('#') {
            let sample = line.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| sample.strip_suffix(suffix))
                .find(|base| {
                    families.get(*base).is_some_and(|f| matches!(f.kind.as_deref(), Some("histogram" | "summary")))
                })
                .unwrap_or(sample);
            families.entry(family.to_owned()).or_default().samples.insert(sample.to_owned());
        }
    }
    families
}

/// A request to the served binary: status, `X-Sugang-Seq`, JSON body.
async fn send(served: &Served, method: Method, path: &str, body: Option<Value>) -> (u16, Option<u64>, Value) {
    let mut request = reqwest::Client::new().request(method, served.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let seq = response.headers().get("x-sugang-seq").and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok());
    let bytes = response.bytes().await.expect("a body");
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, seq, body)
}

/// The real binary (fsync, so the journal's flush latency is recorded;
/// its recorder installed as `main` installs it), after traffic through
/// every part of the saga: a completed enrollment, a full course, a
/// declined payment, a cancellation, the read models caught up.
async fn scraped_after_traffic() -> (Served, BTreeMap<String, Family>) {
    let served = Served::start("127.0.0.1:0", None, &[]).await;
    let course = |name: &str, capacity: u64| json!({"name": name, "teacher": "Hong", "fee": 10000, "textBook": "book", "capacity": capacity});
    let (status, _, korean) = send(&served, Method::POST, "/courses", Some(course("korean", 1))).await;
    assert_eq!(status, 201, "{korean}");
    let (status, _, math) = send(&served, Method::POST, "/courses", Some(course("math", 10))).await;
    assert_eq!(status, 201, "{math}");
    let enroll = |course: &Value, student: &str, card: &str| json!({"courseId": course["id"], "student": student, "payAccount": card, "addr": "Seoul"});
    let (status, _, enrolled) =
        send(&served, Method::POST, "/classes", Some(enroll(&korean, "Kim", "4242424242424242"))).await;
    assert_eq!(status, 201, "{enrolled}");
    let (status, _, full) =
        send(&served, Method::POST, "/classes", Some(enroll(&korean, "Lee", "4242424242424242"))).await;
    assert_eq!(status, 409, "{full}");
    let (status, _, declined) =
        send(&served, Method::POST, "/classes", Some(enroll(&math, "Park", "4000000000000002"))).await;
    assert_eq!(status, 402, "{declined}");
    let id = enrolled["id"].as_u64().expect("an enrollment id");
    let (status, seq, canceled) = send(&served, Method::DELETE, &format!("/classes/{id}"), None).await;
    assert!((200..300).contains(&status), "{canceled}");
    let after = seq.expect("X-Sugang-Seq");
    for read_model in ["/inquiryMypages", "/mypages", "/courseSchedules"] {
        let (status, _, body) = send(&served, Method::GET, &format!("{read_model}?after={after}"), None).await;
        assert_eq!(status, 200, "{read_model}: {body}");
    }
    // Histograms reach the exposition once the recorder's upkeep has run
    // (each scrape runs it): scrape until the journal's flushes show.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, text) = send(&served, Method::GET, "/metrics", None).await;
        assert_eq!(status, 200, "{text}");
        let families = parse(text.as_str().expect("Prometheus text"));
        if families.get("sugang_journal_flush_seconds").is_some_and(|f| !f.samples.is_empty()) {
            return (served, families);
        }
        assert!(tokio::time::Instant::now() < deadline, "no journal flush latency on /metrics: {families:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_on_metrics_has_help_and_type() {
    let (_app, families) = scraped_after_traffic().await;
    // The traffic above records these; an empty page must not pass.
    for expected in [
        "sugang_http_request_duration_seconds",
        "sugang_enrollments_total",
        "sugang_payments_total",
        "sugang_saga_step_seconds",
        "sugang_journal_group_size",
        "sugang_journal_flush_seconds",
        "sugang_subscriber_lag",
        "sugang_live_entities",
        "sugang_breaker_state",
        "sugang_actor_restarts_total",
    ] {
        assert!(families.get(expected).is_some_and(|f| !f.samples.is_empty()), "{expected} is not on /metrics");
    }
    let undescribed: Vec<String> = families
        .iter()
        .filter(|(_, family)| !family.help || family.kind.is_none())
        .map(|(name, family)| format!("{name} (HELP: {}, TYPE: {:?})", family.help, family.kind))
        .collect();
    assert!(undescribed.is_empty(), "families without # HELP or # TYPE: {undescribed:#?}");
}

/// `metrics::counter!("name"`, `gauge!`, `histogram!` with a literal name,
/// in the Rust sources under `dir`: (kind, name, where).
fn recorded_in(dir: &Path, found: &mut Vec<(MetricKind, String, String)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            recorded_in(&path, found);
            continue;
        }
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (macro_name, kind) in [
            ("metrics::counter!(", MetricKind::Counter),
            ("metrics::gauge!(", MetricKind::Gauge),
            ("metrics::histogram!(", MetricKind::Histogram),
        ] {
            for (at, _) in source.match_indices(macro_name) {
                let rest = source[at + macro_name.len()..].trim_start();
                // A name held in a constant is checked on the scrape instead.
                let Some(literal) = rest.strip_prefix('"') else { continue };
                let name = literal.split('"').next().unwrap_or_default();
                found.push((kind, name.to_owned(), path.display().to_string()));
            }
        }
    }
}

#[test]
fn every_family_the_code_records_is_described() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut recorded = Vec::new();
    for crate_dir in ["actors/src", "storage/src", "http/src", "src"] {
        recorded_in(&root.join(crate_dir), &mut recorded);
    }
    assert!(recorded.len() > 20, "the scan found the recording sites: {recorded:?}");
    let described: BTreeMap<&str, MetricKind> = METRIC_FAMILIES.iter().map(|f| (f.name, f.kind)).collect();
    let missing: Vec<String> = recorded
        .iter()
        .filter(|(kind, name, _)| described.get(name.as_str()) != Some(kind))
        .map(|(kind, name, at)| format!("{kind:?} {name} in {at}"))
        .collect();
    assert!(
        missing.is_empty(),
        "recorded but not described (or described as another type) in actors/src/metrics.rs: {missing:#?}"
    );
}

/// Every `expr` of the dashboard's panels.
fn queries(dashboard: &Value, found: &mut Vec<String>) {
    match dashboard {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => found.push(expr.clone()),
                    _ => queries(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| queries(item, found)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_only_metrics_the_server_exposes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|expr| {
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("sugang_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    // The families the dashboard is for.
    for family in [
        "sugang_http_request_duration_seconds",
        "sugang_enrollments_total",
        "sugang_breaker_state",
        "sugang_journal_group_size",
        "sugang_journal_flush_seconds",
        "sugang_subscriber_lag",
        "sugang_live_entities",
        "sugang_actor_restarts_total",
    ] {
        assert!(used.iter().any(|name| name.starts_with(family)), "no panel queries {family}: {exprs:#?}");
    }

    let (_app, families) = scraped_after_traffic().await;
    let exposed: BTreeSet<&str> = families.values().flat_map(|f| f.samples.iter().map(String::as_str)).collect();
    let unknown: Vec<&String> = used.iter().filter(|name| !exposed.contains(name.as_str())).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries series /metrics does not expose: {unknown:?}\nexposed: {exposed:#?}"
    );
}
