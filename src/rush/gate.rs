//! `sugang rush --gate RATE`: the rush through the waiting room.
//!
//! Before the rush the gate is turned on at `RATE` admissions per second
//! with its opening far ahead; every student takes a ticket; then the gate
//! is opened, which shuffles those tickets once. The rush's workers take
//! the students in their place order: each waits on its ticket's event
//! stream (or, if the stream is refused or ends, polls the ticket, more
//! often the nearer it is) until its student is admitted, then enrolls with
//! the admission token. A sampler reads `GET /admin/gate` meanwhile for the
//! largest queue. The summary adds the wait after the opening (server
//! times: admission minus the later of the ticket and the opening), the
//! admission rate measured from the admission times against the configured
//! one, and the largest queue; the invariant: places were served in order
//! (no ticket admitted before one with an earlier place). The gate's
//! settings are put back afterwards.
//!
//! Owns the client side of the waiting room only: HTTP, never the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Api, RushError};

/// The longest a waiting student sleeps between two looks at its ticket.
const MAX_POLL: Duration = Duration::from_millis(500);
/// The shortest.
const MIN_POLL: Duration = Duration::from_millis(5);
/// How often the sampler reads the gate.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long an admission holds during a rush.
const ADMISSION_TTL_SECS: u64 = 600;

/// The waiting room of one rush.
pub(super) struct Room {
    api: Api,
    rate: u32,
    /// Student numbers in the order of their places.
    order: Vec<usize>,
    /// Per student number: its ticket.
    tickets: Vec<TicketSeen>,
    /// When the gate opened (unix ms, as set on the server).
    opened_at_ms: u64,
    /// Per student number: when it was admitted (unix ms, the server's).
    admitted_at_ms: Mutex<Vec<Option<u64>>>,
    /// The most tickets the sampler saw waiting.
    largest_queue: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
    /// The gate's settings before the rush, put back after it.
    previous: Value,
}

/// A ticket as the rush saw it.
#[derive(Clone, Copy, Default)]
struct TicketSeen {
    id: u64,
    place: u64,
    taken_at_ms: u64,
}

/// An admitted student: its number and token.
pub(super) struct Admission {
    pub(super) student: usize,
    pub(super) token: String,
}

impl Room {
    /// Turns the gate on, lets every student take a ticket before the
    /// opening, opens it (the tickets are shuffled) and reads their places.
    pub(super) async fn open(
        api: &Api,
        rate: u32,
        students: usize,
        tag: &str,
        concurrency: usize,
    ) -> Result<Room, RushError> {
        let previous = api.get("/admin/gate").await?;
        let far = "9999-12-31T00:00:00Z";
        let on =
            json!({"enabled": true, "admitPerSecond": rate, "opensAt": far, "admissionTtlSecs": ADMISSION_TTL_SECS});
        put_gate(api, &on).await?;

        let started = Instant::now();
        let tickets = for_each_student(api, students, concurrency, {
            let tag = tag.to_owned();
            move |api, n| {
                let student = super::student_name(&tag, n);
                async move { take_ticket(&api, &student).await }
            }
        })
        .await?;
        println!(
            "gate: {students} tickets taken before the opening in {:.2} s; opening at {rate} admissions/s",
            started.elapsed().as_secs_f64()
        );

        let opened_at_ms = now_ms();
        put_gate(api, &json!({"opensAt": rfc3339(opened_at_ms)})).await?;
        let ids: Vec<u64> = tickets.iter().map(|t| t.id).collect();
        let tickets = for_each_student(api, students, concurrency, move |api, n| {
            let id = ids[n];
            async move { placed(&api, id).await }
        })
        .await?;
        let mut order: Vec<usize> = (0..students).collect();
        order.sort_by_key(|&n| tickets[n].place);

        let largest_queue = Arc::new(AtomicU64::new(students as u64));
        let sampler = tokio::spawn(sample(api.clone(), largest_queue.clone()));
        Ok(Room {
            api: api.clone(),
            rate,
            order,
            tickets,
            opened_at_ms,
            admitted_at_ms: Mutex::new(vec![None; students]),
            largest_queue,
            sampler,
            previous,
        })
    }

    /// Waits until the student of the `k`-th place is admitted: on the
    /// ticket's event stream, or by polling if the stream is refused or
    /// ends first.
    pub(super) async fn admit(&self, k: usize) -> Result<Admission, RushError> {
        let student = self.order[k];
        let id = self.tickets[student].id;
        let path = format!("/queue/tickets/{id}");
        let ticket = match self.streamed(&path).await? {
            Some(ticket) => ticket,
            None => self.polled(&path).await?,
        };
        let token = ticket["admission"]
            .as_str()
            .ok_or_else(|| RushError::Shape { what: format!("{path}: admitted without a token") })?;
        let at = ticket["admittedAt"]
            .as_str()
            .and_then(parse_rfc3339)
            .ok_or_else(|| RushError::Shape { what: format!("{path}: admitted without an admittedAt") })?;
        if let Ok(mut admitted) = self.admitted_at_ms.lock() {
            admitted[student] = Some(at);
        }
        Ok(Admission { student, token: token.to_owned() })
    }

    /// Follows `path/events` until the ticket is admitted; `None` when the
    /// stream cannot be opened or ends (or times out) before that.
    async fn streamed(&self, path: &str) -> Result<Option<Value>, RushError> {
        let events = format!("{path}/events");
        let Ok(mut response) = self.api.request(Method::GET, &events).send().await else { return Ok(None) };
        if response.status() != StatusCode::OK {
            return Ok(None);
        }
        let mut buffer: Vec<u8> = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = buffer.drain(..end + 2).collect();
                let event = String::from_utf8_lossy(&event);
                let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) else { continue };
                let ticket: Value = serde_json::from_str(data.trim())
                    .map_err(|e| RushError::Shape { what: format!("{events}: {e}") })?;
                match ticket["status"].as_str() {
                    Some("ADMITTED") => return Ok(Some(ticket)),
                    Some("WAITING") => {}
                    _ => return Err(RushError::Shape { what: format!("{events}: {ticket}") }),
                }
            }
        }
        Ok(None)
    }

    /// Reads the ticket until it is admitted, more often the nearer it is.
    async fn polled(&self, path: &str) -> Result<Value, RushError> {
        loop {
            let ticket = self.api.get(path).await?;
            match ticket["status"].as_str() {
                Some("ADMITTED") => return Ok(ticket),
                Some("WAITING") => {
                    // Look again after about half the expected wait.
                    let position = ticket["position"].as_u64().unwrap_or(1) as f64;
                    let expected = Duration::from_secs_f64(position / f64::from(self.rate) / 2.0);
                    tokio::time::sleep(expected.clamp(MIN_POLL, MAX_POLL)).await;
                }
                _ => return Err(RushError::Shape { what: format!("{path}: {ticket}") }),
            }
        }
    }

    /// Prints the wait, the admission rate and the largest queue; returns
    /// the violations of the waiting room's invariant.
    pub(super) fn summarize(&self) -> Vec<String> {
        let admitted = self.admitted_at_ms.lock().map(|a| a.clone()).unwrap_or_default();
        let mut waits: Vec<u64> = admitted
            .iter()
            .zip(&self.tickets)
            .filter_map(|(at, t)| at.map(|at| at.saturating_sub(t.taken_at_ms.max(self.opened_at_ms))))
            .collect();
        waits.sort_unstable();
        let at = |q: f64| -> f64 {
            if waits.is_empty() {
                return 0.0;
            }
            let i = ((q * waits.len() as f64).ceil() as usize).clamp(1, waits.len()) - 1;
            waits[i] as f64 / 1000.0
        };
        println!(
            "gate wait (after the opening): p50 {:.2} s  p95 {:.2} s  p99 {:.2} s  max {:.2} s; largest queue {}",
            at(0.50),
            at(0.95),
            at(0.99),
            at(1.0),
            self.largest_queue.load(Ordering::Relaxed)
        );
        let mut times: Vec<u64> = admitted.iter().flatten().copied().collect();
        times.sort_unstable();
        if let (Some(first), Some(last)) = (times.first(), times.last())
            && last > first
        {
            let measured = (times.len() - 1) as f64 / ((last - first) as f64 / 1000.0);
            let off = (measured - f64::from(self.rate)) / f64::from(self.rate) * 100.0;
            println!(
                "gate admission rate: {measured:.1}/s measured over {} admissions in {:.2} s, {} configured ({off:+.1} %)",
                times.len(),
                (last - first) as f64 / 1000.0,
                self.rate
            );
        }

        let mut violations = Vec::new();
        let not_admitted = admitted.iter().filter(|a| a.is_none()).count();
        if not_admitted > 0 {
            violations.push(format!("gate: {not_admitted} students were never seen admitted"));
        }
        // Places served in order: along the places, admission times never go back.
        let mut latest: Option<(u64, u64)> = None;
        let mut out_of_order = 0;
        for &n in &self.order {
            let Some(at) = admitted[n] else { continue };
            let place = self.tickets[n].place;
            if let Some((earlier_place, earlier_at)) = latest
                && at < earlier_at
            {
                out_of_order += 1;
                if out_of_order <= 5 {
                    violations.push(format!(
                        "gate: place {place} was admitted at {at} ms, before place {earlier_place} at {earlier_at} ms"
                    ));
                }
            }
            if latest.is_none_or(|(_, t)| at >= t) {
                latest = Some((place, at));
            }
        }
        if out_of_order > 5 {
            violations.push(format!("gate: {out_of_order} places in all were admitted before an earlier place"));
        }
        let mut places: Vec<u64> = self.tickets.iter().map(|t| t.place).collect();
        places.sort_unstable();
        places.dedup();
        if places.len() != self.tickets.len() {
            violations.push(format!("gate: {} tickets share places", self.tickets.len() - places.len()));
        }
        violations
    }

    /// Puts the gate's settings back as they were before the rush.
    pub(super) async fn close(self) -> Result<(), RushError> {
        self.sampler.abort();
        let p = &self.previous;
        let back = json!({
            "enabled": p["enabled"], "admitPerSecond": p["admitPerSecond"], "opensAt": p["opensAt"],
            "admissionTtlSecs": p["admissionTtlSecs"],
        });
        put_gate(&self.api, &back).await
    }
}

async fn put_gate(api: &Api, body: &Value) -> Result<(), RushError> {
    let what = "PUT /admin/gate";
    let answer = api.send(api.request(Method::PUT, "/admin/gate").json(body), what).await?;
    if answer.status != StatusCode::OK {
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        return Err(RushError::Status { what: what.into(), status: answer.status, body });
    }
    Ok(())
}

async fn take_ticket(api: &Api, student: &str) -> Result<TicketSeen, RushError> {
    let what = format!("POST /queue/tickets for {student}");
    let answer =
        api.send(api.request(Method::POST, "/queue/tickets").json(&json!({"student": student})), &what).await?;
    if !matches!(answer.status, StatusCode::CREATED | StatusCode::OK) {
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        return Err(RushError::Status { what, status: answer.status, body });
    }
    let ticket = answer.json(&what)?;
    let id = ticket["id"].as_u64().ok_or_else(|| RushError::Shape { what: format!("{what}: no id") })?;
    let taken_at_ms = ticket["takenAt"].as_str().and_then(parse_rfc3339).unwrap_or(0);
    Ok(TicketSeen { id, place: 0, taken_at_ms })
}

/// Reads the ticket until the opening's shuffle has placed it.
async fn placed(api: &Api, id: u64) -> Result<TicketSeen, RushError> {
    let path = format!("/queue/tickets/{id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ticket = api.get(&path).await?;
        if let Some(place) = ticket["place"].as_u64() {
            let taken_at_ms = ticket["takenAt"].as_str().and_then(parse_rfc3339).unwrap_or(0);
            return Ok(TicketSeen { id, place, taken_at_ms });
        }
        if Instant::now() > deadline {
            return Err(RushError::Shape { what: format!("{path}: not placed 30 s after the opening") });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `each` for students 0..n, `concurrency` at a time; their results in order.
async fn for_each_student<F, Fut>(
    api: &Api,
    n: usize,
    concurrency: usize,
    each: F,
) -> Result<Vec<TicketSeen>, RushError>
where
    F: Fn(Api, usize) -> Fut,
    Fut: std::future::Future<Output = Result<TicketSeen, RushError>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut running = JoinSet::new();
    let mut out = vec![TicketSeen::default(); n];
    for student in 0..n {
        let permit = limit.clone().acquire_owned().await.map_err(|e| RushError::Shape { what: e.to_string() })?;
        let work = each(api.clone(), student);
        running.spawn(async move {
            let _permit = permit;
            (student, work.await)
        });
        while let Some(done) = running.try_join_next() {
            let (student, seen) = done.map_err(|e| RushError::Shape { what: format!("a ticket task failed: {e}") })?;
            out[student] = seen?;
        }
    }
    while let Some(done) = running.join_next().await {
        let (student, seen) = done.map_err(|e| RushError::Shape { what: format!("a ticket task failed: {e}") })?;
        out[student] = seen?;
    }
    Ok(out)
}

/// Reads the gate every [`SAMPLE_EVERY`] and keeps the largest queue seen.
async fn sample(api: Api, largest: Arc<AtomicU64>) {
    loop {
        if let Ok(gate) = api.get("/admin/gate").await
            && let Some(waiting) = gate["waiting"].as_u64()
        {
            largest.fetch_max(waiting, Ordering::Relaxed);
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_rfc3339() {
        for ms in [0, 1_795_341_600_000, 1_795_341_600_123] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
