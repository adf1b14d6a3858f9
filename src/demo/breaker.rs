//! `sugang demo breaker`: the payment gateway turns slow. Enrollments time
//! out at the payment timeout; the breaker opens and enrollments fail in
//! milliseconds with Retry-After while the catalog stays fast; the gateway
//! heals; after the reset timeout a half-open probe closes the breaker and
//! enrollment works again. A watcher prints each transition with its time.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::{Aborted, Api, Server, Timeline, lock, ms};

const TIMEOUT_MS: u64 = 800;
const FAILURES: u32 = 3;
const RESET_MS: u64 = 2_000;
const MAX_RESET_MS: u64 = 4_000;
/// The slow gateway's latency: well beyond the payment timeout.
const SLOW_MS: u64 = 2_500;
/// "Fails fast": an answer within a quarter of the payment timeout.
const FAST: Duration = Duration::from_millis(TIMEOUT_MS / 4);

/// A breaker state change seen by the watcher: when, from, to.
type Transition = (Duration, String, String);

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

    let (transitions, watcher) = watch(t, &api);

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
    let slowest = timed_out.iter().max().copied().unwrap_or_default();
    let quickest = timed_out.iter().min().copied().unwrap_or_default();
    t.expect(!timed_out.is_empty(), format!("enrollments time out while the breaker is closed ({})", timed_out.len()));
    let at_timeout =
        |d: Duration| d >= Duration::from_millis(TIMEOUT_MS * 9 / 10) && d <= Duration::from_millis(TIMEOUT_MS * 3 / 2);
    t.expect(
        timed_out.iter().all(|d| at_timeout(*d)),
        format!(
            "each timed out at the payment timeout of {TIMEOUT_MS} ms, not at the gateway's {SLOW_MS} ms ({} to {})",
            ms(quickest),
            ms(slowest)
        ),
    );
    let breaker = api.breaker().await?;
    t.note(format!("/admin/breaker: {breaker}"));
    t.expect(opened, format!("the breaker opened after {FAILURES} consecutive gateway failures"));

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
    t.expect(worst < FAST, format!("…in milliseconds ({} at worst, the timeout is {TIMEOUT_MS} ms)", ms(worst)));
    let mut catalog = Vec::new();
    for _ in 0..5 {
        catalog.push(api.get("/courses").await?);
    }
    let catalog_worst = catalog.iter().map(|r| r.took).max().unwrap_or_default();
    t.say(format!("5 × GET /courses while open: all {}; slowest {}", catalog[0].status, ms(catalog_worst)));
    t.expect(
        catalog.iter().all(|r| r.status == 200) && catalog_worst < FAST,
        format!("the catalog stays fast ({})", ms(catalog_worst)),
    );

    // 3. The gateway heals; a half-open probe closes the breaker.
    api.put("/admin/faults/payment", json!({"latencyMs": 0})).await?;
    let healed_at = t.elapsed();
    t.say("PUT /admin/faults/payment {\"latencyMs\": 0}: the gateway is healthy again");
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
        // Once the reset timeout has run out, the next call is the probe:
        // an enrollment, unless a refund retry got there first.
        if breaker["state"] == "open" && breaker["retryAfterMs"].is_null() {
            probes += 1;
            let probe = api.enroll(course, &format!("probe-{probes}")).await?;
            t.say(format!(
                "the reset timeout ran out; an enrollment is the probe: {} in {}",
                probe.summary(),
                ms(probe.took)
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    watcher.abort();
    let seen = lock(&transitions).clone();
    server.narrate_log(t, 12);
    t.expect(closed, "the breaker closed after the gateway healed");
    let opened_at = seen.iter().find(|(_, _, to)| to == "open").map(|(at, ..)| *at);
    let left_open = seen.iter().find(|(_, from, _)| from == "open").map(|(at, ..)| *at);
    if let (Some(opened_at), Some(left_open)) = (opened_at, left_open) {
        let open_for = left_open.saturating_sub(opened_at);
        t.expect(
            open_for + Duration::from_millis(100) >= Duration::from_millis(RESET_MS),
            format!("it stayed open for its reset timeout ({} ≥ {RESET_MS} ms) before a probe", ms(open_for)),
        );
    }
    let metrics = api.metrics().await?;
    let series = |from: &str, to: &str| {
        metrics.get(&format!(r#"sugang_breaker_transitions_total{{from="{from}",to="{to}"}}"#)) as u64
    };
    let (to_open, to_half, to_closed) =
        (series("closed", "open"), series("open", "halfOpen"), series("halfOpen", "closed"));
    t.say(format!(
        "/metrics sugang_breaker_transitions_total: closed→open {to_open}, open→halfOpen {to_half}, halfOpen→closed {to_closed}, halfOpen→open {}",
        series("halfOpen", "open")
    ));
    t.expect(to_open >= 1 && to_half >= 1 && to_closed >= 1, "a half-open probe closed the breaker");

    // 4. Enrollment works again, and no fee was kept without an enrollment.
    let after = api.enroll(course, "after-healing").await?;
    t.say(format!("enrollment after healing: {} in {}", after.summary(), ms(after.took)));
    t.expect(after.status == 201 && after.took < FAST, "enrollment works again, at full speed");
    let owed = wait_refunds(&api).await?;
    let payments = api.all("/payments", "payments").await?;
    let approved = payments.iter().filter(|p| p["payStatus"] == "APPROVED").count();
    let completed = api.all("/classes?status=COMPLETED", "classes").await?.len();
    t.say(format!(
        "refunds owed for timed-out charges: {owed}; APPROVED payments {approved}; COMPLETED enrollments {completed}"
    ));
    t.expect(owed == 0 && approved == completed, "every charge of a timed-out enrollment was refunded");

    t.say("breaker transitions, as the watcher saw them:");
    for (at, from, to) in &seen {
        t.note(format!("{:>7.3}s  {from} → {to}", at.as_secs_f64()));
    }
    let open_for = match (opened_at, left_open) {
        (Some(a), Some(b)) => format!("{:.1} s", (b - a).as_secs_f64()),
        _ => "?".into(),
    };
    Ok(format!(
        "enrollments timed out at {} (timeout {TIMEOUT_MS} ms), the breaker opened and refused in {} with Retry-After \
         while GET /courses took {}; it stayed open {open_for}, a half-open probe closed it, and enrollment works again",
        ms(slowest),
        ms(worst),
        ms(catalog_worst)
    ))
}

/// Polls `/admin/breaker` every 10 ms and narrates each state change.
fn watch(t: &Timeline, api: &Api) -> (Arc<Mutex<Vec<Transition>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Vec<Transition>>> = Arc::new(Mutex::new(Vec::new()));
    let start = std::time::Instant::now() - t.elapsed();
    let (api, out) = (api.clone(), seen.clone());
    let task = tokio::spawn(async move {
        let mut last = "closed".to_owned();
        let mut transitions = 0;
        loop {
            if let Ok(Ok(b)) = tokio::time::timeout(Duration::from_secs(1), api.breaker()).await {
                let state = b["state"].as_str().unwrap_or("?").to_owned();
                let count = b["transitions"].as_u64().unwrap_or(0);
                if state != last || count != transitions {
                    let at = start.elapsed();
                    // A state the watcher did not see between two polls still
                    // counts in `transitions`.
                    let missed = count.saturating_sub(transitions + 1);
                    let note = if missed > 0 { format!(" ({missed} transitions in between)") } else { String::new() };
                    println!(
                        "[{:>7.3}s] breaker: {last} → {state}{note} (failures {}, retryAfterMs {})",
                        at.as_secs_f64(),
                        b["failures"],
                        b["retryAfterMs"]
                    );
                    lock(&out).push((at, last.clone(), state.clone()));
                    last = state;
                    transitions = count;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (seen, task)
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
