//! `GET /events/courses`: Server-Sent Events of seat counts, so an open
//! catalog changes on screen as others enroll, without a polling loop.
//!
//! Woken by the event log (`EventLog::watch`), not by a polling timer (a
//! one-second tick only notices a drain): after each commit the stream
//! reads the new events, takes the courses they touch, reads those courses
//! once each and sends one `courses` event with their `studentCount` (and
//! their waitlist's length, which a waiting student's page follows).
//! `?after=<seq>` starts after the seq a page was rendered at, so nothing
//! committed between the render and the connection is missed; each event
//! carries its seq as the SSE `id`, so a browser that reconnects (sending
//! `Last-Event-ID`) resumes where it was. Public, as the catalog is (`GET
//! /courses` needs no token). Owns no state; ends when the server drains.
//!
//! Each open stream reads the new events itself: cheap for the hundreds of
//! pages a registration day opens on one node (one read per group commit,
//! not per event). Thousands of watchers would want one shared reader
//! fanning out over a broadcast channel instead.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sugang_actors::{CourseId, Event};
use tokio::sync::watch;

use crate::AppState;
use crate::error::ApiError;

/// Events read per wake: a rush of commits is read in a few passes.
const READ_BATCH: usize = 1024;
/// How often a quiet stream checks that the server is not draining (an
/// open stream would otherwise hold the graceful shutdown forever).
const DRAIN_CHECK: Duration = Duration::from_secs(1);

/// One course's seats as the catalog shows them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SeatCount {
    id: u64,
    student_count: u32,
    capacity: Option<u32>,
    open_yn: bool,
    /// The course was deleted: the page drops its row.
    deleted: bool,
    /// Places on its waitlist (0: none), and how many wait now.
    waitlist_capacity: u32,
    waitlist_length: u32,
}

/// Where a stream is: the next seq to read and its wake-up.
struct Follow {
    state: AppState,
    commits: watch::Receiver<u64>,
    next: u64,
    /// Counts the stream as open until it ends.
    _counted: Counted,
}

/// `?after=`: the seq the page was rendered at.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FollowQuery {
    after: Option<String>,
}

/// The most seat streams open at once: each holds a connection and reads the
/// log on every commit, and a stream is public. Beyond it, 503.
const MAX_STREAMS: usize = 1024;
/// The most events a (re)connecting stream replays: a page further behind
/// resumes from the recent log rather than reading all of it again.
const MAX_REPLAY: u64 = 10_000;

/// Seat streams open now.
static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// One open stream, counted while it lives.
struct Counted;

impl Counted {
    fn take() -> Option<Counted> {
        OPEN_STREAMS.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_STREAMS).then_some(n + 1)).ok()?;
        Some(Counted)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) async fn course_events(
    State(state): State<AppState>,
    query: Result<Query<FollowQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Some(counted) = Counted::take() else {
        return ApiError::unavailable("too many seat streams are open", Duration::from_secs(5)).into_response();
    };
    let log = state.sugang.store().events();
    let commits = log.watch();
    let last = log.last_seq();
    let reconnected = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let rendered = query.ok().and_then(|Query(q)| q.after);
    // A seq from the future (or not a number) starts at the log's end; one
    // from long ago, at the recent log.
    let after = reconnected
        .or(rendered)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(last, |seq| seq.min(last).max(last.saturating_sub(MAX_REPLAY)));
    let follow = Follow { commits, next: after + 1, state, _counted: counted };
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        let counts = follow.next_counts().await?;
        let seq = (follow.next - 1).to_string();
        let event = SseEvent::default().event("courses").id(seq).json_data(&counts).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a seat count did not serialise");
            SseEvent::default().comment("skipped")
        });
        Some((Ok::<_, std::convert::Infallible>(event), follow))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

impl Follow {
    /// Waits for commits that touch courses and returns their seat counts;
    /// `None` ends the stream (draining, or the log is gone).
    async fn next_counts(&mut self) -> Option<Vec<SeatCount>> {
        loop {
            let last = *self.commits.borrow_and_update();
            if last < self.next {
                match tokio::time::timeout(DRAIN_CHECK, self.commits.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => return None,
                    Err(_) if self.state.is_ready() => continue,
                    Err(_) => return None,
                }
            }
            let events = match self.state.sugang.store().events().read::<Event>(self.next, READ_BATCH) {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, from = self.next, "reading the event log for seat counts failed");
                    return None;
                }
            };
            let Some(tail) = events.last() else {
                // Nothing readable up to `last` (trimmed): go on from there.
                self.next = last + 1;
                continue;
            };
            self.next = tail.seq + 1;
            let courses: BTreeSet<u64> = events.iter().filter_map(|c| course_of(&c.event)).collect();
            let counts: Vec<SeatCount> = courses.into_iter().filter_map(|id| self.seat_count(id)).collect();
            if !counts.is_empty() {
                return Some(counts);
            }
        }
    }

    fn seat_count(&self, id: u64) -> Option<SeatCount> {
        let course = CourseId::parse(id).ok()?;
        match self.state.sugang.course(course) {
            Ok(Some(c)) => {
                let waitlist = self.state.sugang.course_waitlist(course).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, course_id = id, "reading a course's waitlist for its seat count failed");
                    Default::default()
                });
                Some(SeatCount {
                    id,
                    student_count: c.student_count,
                    capacity: c.details.capacity.map(|c| c.get()),
                    open_yn: c.student_count >= c.details.min_students.get(),
                    deleted: false,
                    waitlist_capacity: waitlist.capacity,
                    waitlist_length: waitlist.length,
                })
            }
            Ok(None) => Some(SeatCount {
                id,
                student_count: 0,
                capacity: None,
                open_yn: false,
                deleted: true,
                waitlist_capacity: 0,
                waitlist_length: 0,
            }),
            Err(e) => {
                tracing::warn!(error = %e, course_id = id, "reading a course for its seat count failed");
                None
            }
        }
    }
}

/// The course whose seats or details an event may change.
fn course_of(event: &Event) -> Option<u64> {
    match event {
        Event::CourseRegistered { course_id, .. }
        | Event::CourseModified { course_id, .. }
        | Event::CourseDeleted { course_id, .. }
        | Event::CourseOpened { course_id, .. }
        | Event::CourseClosed { course_id, .. }
        | Event::SeatReserved { course_id, .. }
        | Event::SeatReleased { course_id, .. }
        | Event::EnrollmentCompleted { course_id, .. }
        | Event::EnrollmentCanceled { course_id, .. }
        | Event::WaitlistCapacitySet { course_id, .. }
        | Event::WaitlistJoined { course_id, .. }
        | Event::WaitlistPromoted { course_id, .. }
        | Event::WaitlistEnrolled { course_id, .. }
        | Event::WaitlistFailed { course_id, .. }
        | Event::WaitlistLeft { course_id, .. }
        | Event::WaitlistCanceled { course_id, .. } => Some(course_id.get()),
        _ => None,
    }
}
