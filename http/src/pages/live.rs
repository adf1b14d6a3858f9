//! `GET /events/courses`: Server-Sent Events of seat counts, so an open
//! catalog changes on screen as others enroll, without a polling loop.
//!
//! Woken by the event log (`EventLog::watch`), never by a timer: after each
//! commit the stream reads the new events, takes the courses they touch,
//! reads those courses once each and sends one `courses` event with their
//! `studentCount`. Public, as the catalog is (`GET /courses` needs no
//! token). Owns no state; ends when the server drains.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use sugang_actors::{CourseId, Event};
use tokio::sync::watch;

use crate::AppState;

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
}

/// Where a stream is: the next seq to read and its wake-up.
struct Follow {
    state: AppState,
    commits: watch::Receiver<u64>,
    next: u64,
}

pub(crate) async fn course_events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let log = state.sugang.store().events();
    let follow = Follow { commits: log.watch(), next: log.last_seq() + 1, state };
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        let counts = follow.next_counts().await?;
        let event = SseEvent::default().event("courses").json_data(&counts).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a seat count did not serialise");
            SseEvent::default().comment("skipped")
        });
        Some((Ok(event), follow))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
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
            Ok(Some(c)) => Some(SeatCount {
                id,
                student_count: c.student_count,
                capacity: c.details.capacity.map(|c| c.get()),
                open_yn: c.student_count >= c.details.min_students.get(),
                deleted: false,
            }),
            Ok(None) => Some(SeatCount { id, student_count: 0, capacity: None, open_yn: false, deleted: true }),
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
        | Event::EnrollmentCanceled { course_id, .. } => Some(course_id.get()),
        _ => None,
    }
}
