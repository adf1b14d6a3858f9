//! `sugang demo breaker`: the payment gateway turns slow. Enrollments time
//! out at the payment timeout; the breaker opens and enrollments fail in
//! milliseconds with Retry-After while the catalog stays fast; the gateway
//! heals; after the reset timeout a half-open probe closes the breaker and
//! enrollment works again. Every transition is read from the server's own
//! log lines, with the time it happened and the failures it counted, and
//! cross-checked with `/admin/breaker` and `/metrics`.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::{Aborted, Api, Server, Timeline, ms, whole_ms};

const TIMEOUT_MS: u64 = 800;
const FAILURES: u32 = 3;
const RESET_MS: u64 = 2_000;
const MAX_RESET_MS: u64 = 4_000;
/// The slow gateway's latency: well beyond the payment timeout.
const SLOW_MS: u64 = 2_500;
/// "Fails fast": an answer within a quarter of the payment timeout.
const FAST: Duration = Duration::from_millis(TIMEOUT_MS / 4);

pub(super) async fn run(t: &Timeline, dir: &Path) -> Result<String, Aborted> {
    let (timeout, failures, reset, max_reset) =
        (TIMEOUT_MS.to_string(), FAILURES.to_string(), RESET_MS.to_string(), MAX_RESET_MS.to_string());
    let flags = [
        "--payment-timeout-ms",
        &timeout,
        "--breaker-failures",
        &failures,
        "--breaker-reset-ms",
        &reset,
        "--breaker-max-reset-ms",
        &max_reset,
        "--durability",
        "relaxed",
    ];
    let mut server = Server::start(t, dir, &flags).await?;
    let api = server.api.clone();
    let course = api.course("korean", None).await?;
    t.say(format!("registered course {course}"));
    let first = api.enroll(course, "student-0").await?;
    t.say(format!("enrollment with a healthy gateway: {} in {}", first.summary(), ms(first.took)));
    t.expect(first.status == 201, "a healthy gateway enrolls (201)");
    let breaker = api.breaker().await?;
    t.note(format!("/admin/breaker: {breaker}"));
    t.expect(breaker["state"] == "closed", "the breaker starts closed");

    // 1. The gateway turns slow.
    api.put("/admin/faults/payment", json!({"latencyMs": SLOW_MS})).await?;
    t.say(format!("PUT /admin/faults/payment {{\"latencyMs\": {SLOW_MS}}}: the gateway now answers in {SLOW_MS} ms"));
    let mut timed_out = Vec::new();
    let mut opened = false;
    for i in 1..=8 {
        let reply = api.enroll(course, &format!("slow-{i}")).await?;
        t.say(format!("enrollment: {} in {}", reply.summary(), ms(reply.took)));
        if reply.status == 503 && reply.took >= FAST {
            timed_out.push(reply.took);
        }
        if api.breaker().await?["state"] == "open" {
            opened = true;
            break;
        }
    }
    server.narrate_log(t);
    let slowest = timed_out.iter().max().copied().unwrap_or_default();
    let quickest = timed_out.iter().min().copied().unwrap_or_default();
    t.expect(!timed_out.is_empty(), format!("enrollments time out while the breaker is closed ({})", timed_out.len()));
    let (low, high) = (TIMEOUT_MS * 9 / 10, TIMEOUT_MS * 3 / 2);
    t.expect(
        timed_out.iter().all(|d| (low..=high).contains(&whole_ms(*d))),
        format!(
            "each timed out at the payment timeout of {TIMEOUT_MS} ms, not at the gateway's {SLOW_MS} ms ({} to {}, \
             all within {low}..{high} ms)",
            ms(quickest),
            ms(slowest)
        ),
    );
    let breaker = api.breaker().await?;
    t.note(format!("/admin/breaker: {breaker}"));
    let failures = breaker["failures"].as_u64().unwrap_or(0);
    t.expect(opened, "the breaker opened");
    t.expect(
        failures == u64::from(FAILURES) && timed_out.len() as u64 == failures,
        format!(
            "it opened at its threshold of {FAILURES} failures: /admin/breaker counts {failures} failures, and {} \
             enrollments timed out (each failed enrollment counts once, its void included)",
            timed_out.len()
        ),
    );

    // 2. Open: fail fast, catalog fast.
    let mut refusals = Vec::new();
    for i in 1..=5 {
        refusals.push(api.enroll(course, &format!("open-{i}")).await?);
    }
    let worst = refusals.iter().map(|r| r.took).max().unwrap_or_default();
    t.say(format!(
        "5 enrollments while open: {} ; slowest {}",
        refusals.iter().map(|r| r.summary()).collect::<Vec<_>>().join(" | "),
        ms(worst)
    ));
    t.expect(
        refusals.iter().all(|r| r.status == 503 && r.retry_after.is_some_and(|s| s >= 1)),
        "every enrollment while open is refused: 503 with Retry-After",
    );
    let fast_ms = whole_ms(FAST);
    t.expect(
        whole_ms(worst) < fast_ms,
        format!("…in milliseconds ({} < {fast_ms} ms at worst; the payment timeout is {TIMEOUT_MS} ms)", ms(worst)),
    );
    let mut catalog = Vec::new();
    for _ in 0..5 {
        catalog.push(api.get("/courses").await?);
    }
    let catalog_worst = catalog.iter().map(|r| r.took).max().unwrap_or_default();
    t.say(format!("5 × GET /courses while open: all {}; slowest {}", catalog[0].status, ms(catalog_worst)));
    t.expect(
        catalog.iter().all(|r| r.status == 200) && whole_ms(catalog_worst) < fast_ms,
        format!("the catalog stays fast ({} < {fast_ms} ms)", ms(catalog_worst)),
    );

    // 3. The gateway heals; a half-open probe closes the breaker.
    api.put("/admin/faults/payment", json!({"latencyMs": 0})).await?;
    let healed_at = t.elapsed();
    t.say("PUT /admin/faults/payment {\"latencyMs\": 0}: the gateway is healthy again");
    server.narrate_log(t);
    let deadline = healed_at + Duration::from_millis(MAX_RESET_MS * 2 + 3000);
    let mut probes = 0;
    let closed = loop {
        let breaker = api.breaker().await?;
        if breaker["state"] == "closed" {
            break true;
        }
        if t.elapsed() > deadline {
            break false;
        }
        // Once the reset timeout has run out, the next gateway call is the
        // probe: this enrollment, or a refund retry that gets there first.
        if breaker["state"] == "open" && breaker["retryAfterMs"].is_null() {
            probes += 1;
            let probe = api.enroll(course, &format!("probe-{probes}")).await?;
            t.say(format!(
                "/admin/breaker: open, retryAfterMs null (its reset timeout ran out); an enrollment now: {} in {}",
                probe.summary(),
                ms(probe.took)
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    t.say(format!("/admin/breaker: {}", if closed { "closed" } else { "not closed" }));
    t.expect(closed, "the breaker closed after the gateway healed");
    server.narrate_log(t);

    // What the breaker did, from its own log lines: every transition, with
    // the time it happened and the numbers it reported.
    let seen = transitions(&server);
    let breaker = api.breaker().await?;
    let reported = breaker["transitions"].as_u64().unwrap_or(0);
    t.expect(
        reported == seen.len() as u64,
        format!("the server logged every transition /admin/breaker counts ({} logged, {reported} counted)", seen.len()),
    );
    let path: Vec<String> = seen.iter().map(|tr| format!("{} → {}", tr.from, tr.to)).collect();
    t.expect(
        path == ["closed → open", "open → halfOpen", "halfOpen → closed"],
        format!("the breaker went closed → open → halfOpen → closed ({})", path.join(", ")),
    );
    let opened_at = seen.iter().find(|tr| tr.to == "open").map(|tr| tr.at);
    let half_open = seen.iter().find(|tr| tr.from == "open" && tr.to == "halfOpen");
    match half_open.and_then(|tr| tr.since_opened_ms) {
        Some(open_ms) => {
            t.expect(
                open_ms >= RESET_MS,
                format!(
                    "it stayed open for its reset timeout before a probe ({open_ms} ms ≥ {RESET_MS} ms, as the server \
                     measured it)"
                ),
            );
        }
        None => {
            t.expect(false, "the server logged how long the breaker stayed open (since_opened_ms of open → halfOpen)");
        }
    }
    let metrics = api.metrics().await?;
    let mut disagree = Vec::new();
    for (from, to) in [("closed", "open"), ("open", "halfOpen"), ("halfOpen", "closed"), ("halfOpen", "open")] {
        let counted = metrics.get(&format!(r#"sugang_breaker_transitions_total{{from="{from}",to="{to}"}}"#)) as usize;
        let logged = seen.iter().filter(|tr| tr.from == from && tr.to == to).count();
        t.note(format!("/metrics sugang_breaker_transitions_total{{{from}→{to}}} {counted}; logged {logged}"));
        if counted != logged {
            disagree.push(format!("{from}→{to}: /metrics {counted}, log {logged}"));
        }
    }
    t.expect(disagree.is_empty(), format!("/metrics counts the transitions the log shows {disagree:?}"));

    // 4. Enrollment works again, and no fee was kept without an enrollment.
    let after = api.enroll(course, "after-healing").await?;
    t.say(format!("enrollment after healing: {} in {}", after.summary(), ms(after.took)));
    t.expect(
        after.status == 201 && whole_ms(after.took) < fast_ms,
        format!("enrollment works again, at full speed (201 in {} < {fast_ms} ms)", ms(after.took)),
    );
    let owed = wait_refunds(&api).await?;
    let payments = api.all("/payments", "payments").await?;
    let approved = payments.iter().filter(|p| p["payStatus"] == "APPROVED").count();
    let completed = api.all("/classes?status=COMPLETED", "classes").await?.len();
    t.say(format!(
        "refunds owed for timed-out charges: {owed}; APPROVED payments {approved}; COMPLETED enrollments {completed}"
    ));
    t.expect(owed == 0 && approved == completed, "every charge of a timed-out enrollment was refunded");
    server.narrate_log(t);

    t.say("breaker transitions, from the server's log, in time order:");
    for tr in &seen {
        let open_for = tr.since_opened_ms.map_or(String::new(), |ms| format!(", {ms} ms after it opened"));
        t.note(format!(
            "{:>7.3}s  {} → {}  (failures {}{open_for})",
            tr.at.as_secs_f64(),
            tr.from,
            tr.to,
            tr.failures.map_or("?".to_owned(), |f| f.to_string())
        ));
    }
    let open_for = match (opened_at, half_open.and_then(|tr| tr.since_opened_ms)) {
        (Some(_), Some(ms)) => format!("{ms} ms"),
        _ => "?".into(),
    };
    Ok(format!(
        "{} enrollments timed out at {} (timeout {TIMEOUT_MS} ms) and the breaker opened at {failures} failures; it \
         refused in {} with Retry-After while GET /courses took {}; it stayed open {open_for}, a half-open probe \
         closed it, and enrollment works again",
        timed_out.len(),
        ms(slowest),
        ms(worst),
        ms(catalog_worst)
    ))
}

/// A breaker transition, as the server logged it.
struct Transition {
    /// When, on the demo's timeline.
    at: Duration,
    from: String,
    to: String,
    /// The breaker's count of failures at the transition.
    failures: Option<u64>,
    /// How long after the breaker opened (when leaving open or half-open).
    since_opened_ms: Option<u64>,
}

/// Every breaker transition the server logged so far, in time order.
fn transitions(server: &Server) -> Vec<Transition> {
    let mut seen: Vec<Transition> = server
        .log()
        .iter()
        .filter(|e| e.message == "payment breaker opened" || e.message == "payment breaker changed state")
        .map(|e| Transition {
            at: e.at,
            from: e.text("from").unwrap_or("?").to_owned(),
            to: e.text("to").unwrap_or("?").to_owned(),
            failures: e.number("failures"),
            since_opened_ms: e.number("since_opened_ms"),
        })
        .collect();
    seen.sort_by_key(|tr| tr.at);
    seen
}

/// Waits (at most 10 s) until the payment actor owes no refund; how many it
/// still owes.
async fn wait_refunds(api: &Api) -> Result<u64, Aborted> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let owed = api.breaker().await?["refundsOwed"].as_u64().unwrap_or(u64::MAX);
        if owed == 0 || std::time::Instant::now() > deadline {
            return Ok(owed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
