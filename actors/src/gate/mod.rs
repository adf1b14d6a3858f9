//! The waiting room ("gate") in front of enrollment on registration day: its
//! settings, its tickets (one live ticket per student, dense ids), the shuffle
//! of early tickets at the opening, the admission rate, and the admission
//! tokens bound to a student and a ticket.
//!
//! This file holds the pure parts (no actor, no storage, no clock reads: the
//! time is always passed in) so they test without a runtime:
//!
//! - [`Queue`]: the in-memory order of tickets, positions, admissions;
//! - [`shuffle`]: a uniform Fisher–Yates permutation from a CSPRNG;
//! - [`Ticker`]: the token bucket that admits `rate` per second, smoothly;
//! - [`AdmissionKey`]: HMAC-SHA256 admission tokens.
//!
//! `actor` owns the durable state (every change goes through the journal and
//! is answered only once durable), the supervisor that restarts the actor
//! from disk, and the facade methods of [`crate::Sugang`].
//!
//! Must not know HTTP; must not touch courses or enrollments (the edge checks
//! an admission before it asks for an enrollment).

pub(crate) mod actor;
mod facade;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use ring::hmac;
use serde::{Deserialize, Serialize};
use sugang_storage::{Record, Table};

use crate::model::StudentName;

/// What an operator sets with `PUT /admin/gate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSettings {
    /// While false, everyone is let in: no admission is required and every
    /// ticket is admitted at once.
    pub enabled: bool,
    /// Admissions per second while enabled.
    pub admit_per_second: u32,
    /// Tickets taken before this instant (unix ms) are shuffled once at it;
    /// `None` is open already.
    pub opens_at_ms: Option<u64>,
    /// How long an admission is valid.
    pub admission_ttl_secs: u32,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings { enabled: false, admit_per_second: 100, opens_at_ms: None, admission_ttl_secs: 600 }
    }
}

/// Why settings were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateRejection {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// The highest admission rate accepted: past it the ticker's per-tick
/// batches grow without making anyone fairer.
pub const MAX_ADMIT_PER_SECOND: u32 = 1_000_000;
/// The longest admission accepted (a day).
pub const MAX_ADMISSION_TTL_SECS: u32 = 86_400;

impl GateSettings {
    /// Checks the ranges a running gate relies on.
    pub fn validate(&self) -> Result<(), GateRejection> {
        if !(1..=MAX_ADMIT_PER_SECOND).contains(&self.admit_per_second) {
            return Err(GateRejection::Invalid {
                field: "admitPerSecond",
                reason: format!("must be between 1 and {MAX_ADMIT_PER_SECOND}"),
            });
        }
        if !(1..=MAX_ADMISSION_TTL_SECS).contains(&self.admission_ttl_secs) {
            return Err(GateRejection::Invalid {
                field: "admissionTtlSecs",
                reason: format!("must be between 1 and {MAX_ADMISSION_TTL_SECS}"),
            });
        }
        Ok(())
    }

    /// Whether the opening has passed at `now_ms` (a disabled gate is open).
    pub(crate) fn is_open(&self, now_ms: u64) -> bool {
        !self.enabled || self.opens_at_ms.is_none_or(|at| now_ms >= at)
    }
}

/// The gate as stored: its settings, its signing key, and how far the queue
/// has been placed and admitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GateRecord {
    pub(crate) settings: GateSettings,
    /// The HMAC key of admission tokens: 32 random bytes drawn once, kept
    /// with the gate so tokens survive a restart (never the JWT secret, which
    /// may be absent).
    pub(crate) key: [u8; 32],
}

impl Record for GateRecord {}

/// A ticket as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: u64,
    pub student: StudentName,
    pub taken_at_ms: u64,
    /// The ticket's place in the queue (1, 2, …): given at taking once the
    /// gate is open, or by the shuffle at the opening for early tickets.
    pub place: Option<u64>,
    /// When it was admitted, and until when its admission holds.
    pub admitted: Option<Admitted>,
}

impl Record for Ticket {}

/// An admission: when, and until when it holds (fixed at admission, so the
/// token and the ticket agree even if the TTL changes later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admitted {
    pub at_ms: u64,
    pub expires_at_ms: u64,
}

/// Where a ticket stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TicketStatus {
    Waiting,
    Admitted,
    Expired,
}

impl Ticket {
    pub fn status(&self, now_ms: u64) -> TicketStatus {
        match self.admitted {
            None => TicketStatus::Waiting,
            Some(a) if now_ms < a.expires_at_ms => TicketStatus::Admitted,
            Some(_) => TicketStatus::Expired,
        }
    }
}

/// A ticket as its student sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketView {
    pub ticket: Ticket,
    pub status: TicketStatus,
    /// Counting from 1 among the waiting, once placed; `None` before the
    /// opening's shuffle and once admitted.
    pub position: Option<u64>,
    /// `position` ÷ the admission rate, rounded up.
    pub eta_secs: Option<u64>,
    /// The admission token while admitted.
    pub admission: Option<String>,
}

/// The live figures of `GET /admin/gate`.
#[derive(Clone, Debug, PartialEq)]
pub struct GateStatus {
    pub settings: GateSettings,
    /// Tickets not yet admitted (early ones included).
    pub waiting: u64,
    pub admitted_total: u64,
    /// Admissions per second over the last seconds.
    pub admitted_per_second: f64,
    /// How long the longest-waiting ticket has waited.
    pub oldest_wait_ms: u64,
}

/// gate key → the gate (one record, under [`GATE_KEY`]).
pub(crate) const GATE: Table<String, GateRecord> = Table::new("gate");
pub(crate) const GATE_KEY: &str = "gate";
/// ticket id → ticket.
pub(crate) const TICKETS: Table<u64, Ticket> = Table::new("gate_tickets");

/// The tickets in memory, in queue order: which are early (taken before the
/// opening, not yet placed), which wait in place order, how far admission
/// has gone. Rebuilt from the stored tickets at start, so a restart keeps
/// every place.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// Every ticket, by id - 1 (ids are dense).
    tickets: Vec<Ticket>,
    /// A student's live ticket (the last they took).
    by_student: HashMap<StudentName, u64>,
    /// Taken before the opening, not yet placed, in id order.
    early: Vec<u64>,
    /// Placed, not admitted, in place order.
    waiting: VecDeque<u64>,
    /// The highest place given.
    last_place: u64,
    /// The highest place admitted: a waiting ticket's position is its place
    /// minus this.
    admitted_through: u64,
    admitted_total: u64,
}

impl Queue {
    /// Rebuilds the queue from stored tickets (any order).
    pub(crate) fn from_tickets(mut tickets: Vec<Ticket>) -> Queue {
        tickets.sort_by_key(|t| t.id);
        let mut queue = Queue::default();
        let mut placed: Vec<(u64, u64)> = Vec::new();
        for t in &tickets {
            queue.by_student.insert(t.student.clone(), t.id);
            match (t.place, t.admitted) {
                (None, _) => queue.early.push(t.id),
                (Some(place), admitted) => {
                    queue.last_place = queue.last_place.max(place);
                    if admitted.is_some() {
                        queue.admitted_through = queue.admitted_through.max(place);
                        queue.admitted_total += 1;
                    } else {
                        placed.push((place, t.id));
                    }
                }
            }
        }
        placed.sort_unstable();
        queue.waiting = placed.into_iter().map(|(_, id)| id).collect();
        queue.tickets = tickets;
        queue
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Ticket> {
        id.checked_sub(1).and_then(|i| self.tickets.get(i as usize))
    }

    /// The student's live ticket: their last one unless it expired.
    pub(crate) fn live_ticket_of(&self, student: &StudentName, now_ms: u64) -> Option<&Ticket> {
        let id = *self.by_student.get(student)?;
        self.get(id).filter(|t| t.status(now_ms) != TicketStatus::Expired)
    }

    /// Takes a new ticket for `student`: placed at the back if the gate is
    /// open, early otherwise. The caller stores it.
    pub(crate) fn take(&mut self, student: StudentName, now_ms: u64, open: bool) -> Ticket {
        let id = self.tickets.len() as u64 + 1;
        let place = open.then(|| {
            self.last_place += 1;
            self.last_place
        });
        let ticket = Ticket { id, student: student.clone(), taken_at_ms: now_ms, place, admitted: None };
        match place {
            Some(_) => self.waiting.push_back(id),
            None => self.early.push(id),
        }
        self.by_student.insert(student, id);
        self.tickets.push(ticket.clone());
        ticket
    }

    /// Places every early ticket after the last place, in the order
    /// `order` gives (a permutation of the early tickets). Returns the
    /// tickets changed, for the caller to store.
    pub(crate) fn place_early(&mut self, order: Vec<u64>) -> Vec<Ticket> {
        debug_assert_eq!(order.len(), self.early.len());
        self.early.clear();
        let mut changed = Vec::with_capacity(order.len());
        for id in order {
            self.last_place += 1;
            let place = self.last_place;
            if let Some(t) = id.checked_sub(1).and_then(|i| self.tickets.get_mut(i as usize)) {
                t.place = Some(place);
                changed.push(t.clone());
                self.waiting.push_back(id);
            }
        }
        changed
    }

    /// The early tickets, in id order.
    pub(crate) fn early(&self) -> &[u64] {
        &self.early
    }

    /// Admits up to `n` waiting tickets, first place first. Returns the
    /// tickets changed, for the caller to store.
    pub(crate) fn admit(&mut self, n: u64, now_ms: u64, ttl: Duration) -> Vec<Ticket> {
        let mut changed = Vec::new();
        for _ in 0..n {
            let Some(id) = self.waiting.pop_front() else { break };
            if let Some(t) = id.checked_sub(1).and_then(|i| self.tickets.get_mut(i as usize)) {
                t.admitted = Some(Admitted { at_ms: now_ms, expires_at_ms: now_ms + ttl.as_millis() as u64 });
                self.admitted_through = self.admitted_through.max(t.place.unwrap_or(0));
                self.admitted_total += 1;
                changed.push(t.clone());
            }
        }
        changed
    }

    /// Ends every admission still live at `now_ms` (the gate is turned on
    /// anew). Returns the tickets changed, for the caller to store.
    pub(crate) fn expire_admitted(&mut self, now_ms: u64) -> Vec<Ticket> {
        let mut changed = Vec::new();
        for t in &mut self.tickets {
            if let Some(admitted) = t.admitted.as_mut().filter(|a| a.expires_at_ms > now_ms) {
                admitted.expires_at_ms = now_ms;
                changed.push(t.clone());
            }
        }
        changed
    }

    /// Tickets waiting (placed or early).
    pub(crate) fn waiting_count(&self) -> u64 {
        (self.waiting.len() + self.early.len()) as u64
    }

    /// Placed tickets waiting.
    pub(crate) fn placed_waiting(&self) -> u64 {
        self.waiting.len() as u64
    }

    pub(crate) fn admitted_total(&self) -> u64 {
        self.admitted_total
    }

    pub(crate) fn admitted_through(&self) -> u64 {
        self.admitted_through
    }

    /// When the longest-waiting ticket was taken.
    pub(crate) fn oldest_taken_at_ms(&self) -> Option<u64> {
        let front = self.waiting.front().and_then(|id| self.get(*id)).map(|t| t.taken_at_ms);
        let early = self.early.first().and_then(|id| self.get(*id)).map(|t| t.taken_at_ms);
        front.into_iter().chain(early).min()
    }

    /// A ticket's view at `now_ms`.
    pub(crate) fn view(&self, ticket: &Ticket, now_ms: u64, rate: u32, key: &AdmissionKey) -> TicketView {
        let status = ticket.status(now_ms);
        let position = match (status, ticket.place) {
            (TicketStatus::Waiting, Some(place)) => Some(place.saturating_sub(self.admitted_through).max(1)),
            _ => None,
        };
        let eta_secs = position.map(|p| p.div_ceil(u64::from(rate.max(1))));
        let admission = match (status, ticket.admitted) {
            (TicketStatus::Admitted, Some(a)) => Some(key.sign(ticket.id, &ticket.student, a.expires_at_ms)),
            _ => None,
        };
        TicketView { ticket: ticket.clone(), status, position, eta_secs, admission }
    }
}

/// Shuffles `ids` uniformly (Fisher–Yates) with ChaCha20 seeded from the
/// operating system's CSPRNG: arriving early, or by script, gives no
/// advantage, and the order cannot be predicted from earlier ones.
pub(crate) fn shuffle(mut ids: Vec<u64>) -> Result<Vec<u64>, ring::error::Unspecified> {
    let seed: [u8; 32] = ring::rand::generate(&ring::rand::SystemRandom::new())?.expose();
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
    ids.shuffle(&mut rng);
    Ok(ids)
}

/// Draws a new signing key from the operating system's CSPRNG.
pub(crate) fn new_key() -> Result<[u8; 32], ring::error::Unspecified> {
    Ok(ring::rand::generate(&ring::rand::SystemRandom::new())?.expose())
}

/// The token bucket that admits at the configured rate: it fills at `rate`
/// per second up to a burst of a tenth of a second's worth (at least one),
/// and each tick admits its whole tokens. Fed the time, so it tests on a
/// paused clock.
#[derive(Clone, Debug)]
pub(crate) struct Ticker {
    tokens: f64,
    last: tokio::time::Instant,
}

impl Ticker {
    pub(crate) fn new(now: tokio::time::Instant) -> Self {
        Ticker { tokens: 0.0, last: now }
    }

    /// How many to admit at `now`, with `waiting` in the queue at `rate`
    /// per second.
    pub(crate) fn admit(&mut self, now: tokio::time::Instant, rate: u32, waiting: u64) -> u64 {
        let rate = f64::from(rate.max(1));
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let burst = (rate / 10.0).max(1.0);
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        let n = (self.tokens.floor() as u64).min(waiting);
        self.tokens -= n as f64;
        n
    }
}

/// Signs and checks admission tokens: `<ticket>.<expires ms>.<hex HMAC>`,
/// the HMAC-SHA256 of the ticket, the student and the expiry under the
/// gate's key. Bound to the student and the ticket; checked without asking
/// the gate (the key and the clock suffice).
#[derive(Clone)]
pub(crate) struct AdmissionKey(hmac::Key);

impl std::fmt::Debug for AdmissionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdmissionKey(…)")
    }
}

/// Why an admission token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error(
        "an admission is required while the waiting room is on: take a ticket at /queue/tickets and send its admission token in X-Sugang-Admission"
    )]
    Missing,
    #[error(
        "the admission token is not valid: take a ticket at /queue/tickets and send its admission token in X-Sugang-Admission"
    )]
    Invalid,
    #[error("the admission token belongs to another student: take your own ticket at /queue/tickets")]
    NotYours,
    #[error("the admission has expired: take a new ticket at /queue/tickets")]
    Expired,
}

impl AdmissionKey {
    pub(crate) fn new(bytes: &[u8; 32]) -> Self {
        AdmissionKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    fn message(ticket: u64, student: &StudentName, expires_at_ms: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(64 + student.as_str().len());
        m.extend_from_slice(b"sugang-admission\0");
        m.extend_from_slice(&ticket.to_be_bytes());
        m.extend_from_slice(&expires_at_ms.to_be_bytes());
        m.extend_from_slice(student.as_str().as_bytes());
        m
    }

    pub(crate) fn sign(&self, ticket: u64, student: &StudentName, expires_at_ms: u64) -> String {
        let tag = hmac::sign(&self.0, &Self::message(ticket, student, expires_at_ms));
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("{ticket}.{expires_at_ms}.{hex}")
    }

    /// Checks that `token` was signed by this gate for `student` and has
    /// not expired at `now_ms`.
    pub(crate) fn verify(&self, token: &str, student: &StudentName, now_ms: u64) -> Result<u64, AdmissionError> {
        let mut parts = token.trim().splitn(3, '.');
        let (Some(ticket), Some(expires), Some(hex)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(AdmissionError::Invalid);
        };
        let ticket: u64 = ticket.parse().map_err(|_| AdmissionError::Invalid)?;
        let expires: u64 = expires.parse().map_err(|_| AdmissionError::Invalid)?;
        let tag = decode_hex(hex).ok_or(AdmissionError::Invalid)?;
        if hmac::verify(&self.0, &Self::message(ticket, student, expires), &tag).is_err() {
            // Signed for someone else, or forged: which one, the key says
            // only for the pair it was signed for, so both read the same.
            return Err(AdmissionError::NotYours);
        }
        if now_ms >= expires {
            return Err(AdmissionError::Expired);
        }
        Ok(ticket)
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
}
