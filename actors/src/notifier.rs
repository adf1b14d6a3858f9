//! The notifier: one notification per status change, to the student or the
//! instructor concerned, stored and appended as a JSON line to
//! `notifications.log` in the data directory.
//!
//! A notification's id is derived from the event that caused it
//! (`seq * 4 + n`), so replaying an event can never mint a second one. The log
//! file is written after the batch that stored the notifications commits; at
//! start the worker appends whatever the table holds past the file's last
//! line, so the file ends up with every notification exactly once. It runs as
//! a single worker because the file is one ordered stream.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sugang_storage::{Batch, Committed, Record, Store, Table};

use crate::bus::{Part, Projection, ProjectionError};
use crate::event::Event;
use crate::tables::Indexed;

/// A notification as stored and as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: u64,
    pub recipient: String,
    pub kind: String,
    pub apply_id: Option<u64>,
    pub course_id: Option<u64>,
    pub message: String,
    pub created_at_ms: u64,
}

impl Record for Notification {}

pub(crate) const NOTIFICATIONS: Table<u64, Notification> = Table::new("notifications");
/// (recipient, notification id).
pub(crate) const NOTIFICATIONS_BY_RECIPIENT: Table<(String, u64), Indexed> = Table::new("notifications_by_recipient");

pub(crate) struct NotifierProjection {
    path: PathBuf,
    /// The id of the last notification written to the file.
    written: Mutex<u64>,
}

impl NotifierProjection {
    pub(crate) fn new(data_dir: &std::path::Path) -> Self {
        NotifierProjection { path: data_dir.join("notifications.log"), written: Mutex::new(0) }
    }

    /// Appends every stored notification after the last one in the file.
    fn append_missing(&self, store: &Store) -> Result<(), ProjectionError> {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines = Vec::new();
        let mut last = *written;
        for item in store.scan_from(&NOTIFICATIONS, &(*written + 1)) {
            let (id, notification) = item?;
            serde_json::to_writer(&mut lines, &notification).map_err(std::io::Error::other)?;
            lines.push(b'\n');
            last = id;
        }
        if !lines.is_empty() {
            let mut file = OpenOptions::new().create(true).append(true).open(&self.path)?;
            file.write_all(&lines)?;
            *written = last;
        }
        Ok(())
    }
}

/// The id on the file's last whole line (0 for an empty or missing file),
/// cutting off a torn last line (a crash mid-write) so appends start clean.
fn last_id_in(path: &std::path::Path) -> Result<u64, std::io::Error> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    // A torn last line is cut: its notification is still in the table and
    // is written again after the last whole line.
    let whole = match tail.iter().rposition(|&b| b == b'\n') {
        Some(end) => {
            file.set_len(start + end as u64 + 1)?;
            &tail[..end]
        }
        None => {
            file.set_len(start)?;
            &[][..]
        }
    };
    let last_line = whole.rsplit(|&b| b == b'\n').next().unwrap_or(&[]);
    Ok(serde_json::from_slice::<Notification>(last_line).map(|n| n.id).unwrap_or(0))
}

/// A notification before it has an id.
struct Notice {
    recipient: String,
    kind: &'static str,
    apply_id: Option<u64>,
    course_id: Option<u64>,
    message: String,
}

fn notice(
    recipient: &str,
    kind: &'static str,
    apply_id: Option<u64>,
    course_id: Option<u64>,
    message: String,
) -> Notice {
    Notice { recipient: recipient.to_owned(), kind, apply_id, course_id, message }
}

/// The notifications an event causes.
fn notices(event: &Event) -> Vec<Notice> {
    match event {
        Event::EnrollmentCompleted { enrollment_id, course_id, course_name, student, fee, .. } => vec![notice(
            student.as_str(),
            "ENROLLMENT_COMPLETED",
            Some(enrollment_id.get()),
            Some(course_id.get()),
            format!("Your enrollment {enrollment_id} in {course_name} is completed ({fee} won paid)."),
        )],
        Event::EnrollmentCanceled { enrollment_id, course_id, course_name, student, .. } => vec![notice(
            student.as_str(),
            "ENROLLMENT_CANCELED",
            Some(enrollment_id.get()),
            Some(course_id.get()),
            format!("Your enrollment {enrollment_id} in {course_name} is canceled."),
        )],
        Event::PaymentApproved { enrollment_id, course_id, student, amount, .. } => vec![notice(
            student.as_str(),
            "PAYMENT_APPROVED",
            Some(enrollment_id.get()),
            Some(course_id.get()),
            format!("Your payment of {amount} won for enrollment {enrollment_id} is approved."),
        )],
        Event::PaymentCanceled { enrollment_id, student, amount, .. } => vec![notice(
            student.as_str(),
            "PAYMENT_CANCELED",
            Some(enrollment_id.get()),
            None,
            format!("Your payment of {amount} won for enrollment {enrollment_id} is refunded."),
        )],
        Event::DeliveryStarted { enrollment_id, course_id, student, text_book, .. } => vec![notice(
            student.as_str(),
            "DELIVERY_STARTED",
            Some(enrollment_id.get()),
            Some(course_id.get()),
            match text_book {
                Some(book) => format!("Your textbook {book} for enrollment {enrollment_id} is on its way."),
                None => format!("The shipment for enrollment {enrollment_id} has started."),
            },
        )],
        Event::DeliveryCanceled { enrollment_id, course_id, student, .. } => vec![notice(
            student.as_str(),
            "DELIVERY_CANCELED",
            Some(enrollment_id.get()),
            Some(course_id.get()),
            format!("The shipment for enrollment {enrollment_id} is canceled."),
        )],
        Event::CourseOpened { course_id, teacher, name, student_count, .. } => vec![notice(
            teacher.as_str(),
            "COURSE_OPENED",
            None,
            Some(course_id.get()),
            format!("Your course {name} opens: {student_count} students enrolled."),
        )],
        Event::CourseClosed { course_id, teacher, name, student_count, .. } => vec![notice(
            teacher.as_str(),
            "COURSE_CLOSED",
            None,
            Some(course_id.get()),
            format!("Your course {name} no longer has enough students to open ({student_count})."),
        )],
        _ => Vec::new(),
    }
}

impl Projection for NotifierProjection {
    fn name(&self) -> &'static str {
        "notifier"
    }

    fn single_worker(&self) -> bool {
        true
    }

    fn apply(
        &self,
        store: &Store,
        event: &Committed<Event>,
        part: Part,
        batch: &mut Batch,
    ) -> Result<u64, ProjectionError> {
        if !part.owns(event.key) {
            return Ok(0);
        }
        let mut effects = 0;
        for (n, notice) in notices(&event.event).into_iter().enumerate() {
            let id = event.seq * 4 + n as u64;
            if store.read_through(batch, &NOTIFICATIONS, &id)?.is_some() {
                continue;
            }
            let notification = Notification {
                id,
                recipient: notice.recipient.clone(),
                kind: notice.kind.to_owned(),
                apply_id: notice.apply_id,
                course_id: notice.course_id,
                message: notice.message,
                created_at_ms: event.at_ms,
            };
            batch.put(&NOTIFICATIONS, &id, &notification)?;
            batch.put(&NOTIFICATIONS_BY_RECIPIENT, &(notice.recipient, id), &Indexed)?;
            effects += 1;
        }
        Ok(effects)
    }

    fn starting(&self, store: &Store, _part: Part) -> Result<(), ProjectionError> {
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = last_id_in(&self.path)?;
        self.append_missing(store)
    }

    fn committed(&self, store: &Store, _part: Part, _through_seq: u64) -> Result<(), ProjectionError> {
        self.append_missing(store)
    }
}
