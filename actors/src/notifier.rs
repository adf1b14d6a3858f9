//! The notifier: one notification per status change, to the student or the
//! instructor concerned — addressed to a (role, name), since a student and an
//! instructor may share a name — stored and appended as a JSON line to
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

/// Whom a notification is for: the recipient's role, which with the
/// recipient's name makes the person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientRole {
    Student,
    Instructor,
}

/// A notification as stored and as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: u64,
    pub recipient: String,
    /// With `recipient`, the person it is for.
    pub recipient_role: RecipientRole,
    pub kind: String,
    pub apply_id: Option<u64>,
    pub course_id: Option<u64>,
    pub message: String,
    pub created_at_ms: u64,
}

/// A notification as version 1 stored it, before `recipient_role`.
#[derive(Deserialize)]
struct NotificationV1 {
    id: u64,
    recipient: String,
    kind: String,
    apply_id: Option<u64>,
    course_id: Option<u64>,
    message: String,
    created_at_ms: u64,
}

impl Record for Notification {
    /// 2: `recipient_role` added.
    const VERSION: u8 = 2;

    /// Version 1 had no role: the kinds that went to instructors say it.
    fn upgrade(version: u8, body: &[u8]) -> Option<Result<Self, postcard::Error>> {
        (version == 1).then(|| {
            postcard::from_bytes::<NotificationV1>(body).map(|v1| Notification {
                recipient_role: if matches!(v1.kind.as_str(), "COURSE_OPENED" | "COURSE_CLOSED") {
                    RecipientRole::Instructor
                } else {
                    RecipientRole::Student
                },
                id: v1.id,
                recipient: v1.recipient,
                kind: v1.kind,
                apply_id: v1.apply_id,
                course_id: v1.course_id,
                message: v1.message,
                created_at_ms: v1.created_at_ms,
            })
        })
    }
}

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
    // Only the id: lines written before a field was added still count.
    #[derive(Deserialize)]
    struct Line {
        id: u64,
    }
    Ok(serde_json::from_slice::<Line>(last_line).map(|n| n.id).unwrap_or(0))
}

/// A notification before it has an id.
struct Notice {
    recipient: String,
    recipient_role: RecipientRole,
    kind: &'static str,
    apply_id: Option<u64>,
    course_id: Option<u64>,
    message: String,
}

fn notice(
    (recipient_role, recipient): (RecipientRole, &str),
    kind: &'static str,
    apply_id: Option<u64>,
    course_id: Option<u64>,
    message: String,
) -> Notice {
    Notice { recipient: recipient.to_owned(), recipient_role, kind, apply_id, course_id, message }
}

/// The notifications an event causes.
fn notices(event: &Event) -> Vec<Notice> {
    match event {
        Event::EnrollmentCompleted { enrollment_id, course_id, course_name, student, fee, .. } => vec![notice(
            (RecipientRole::Student, student.as_str()),
            "ENROLLMENT_COMPLETED",
            Some(enrollment_id.get()),
            Some(course_id.get()),
            format!("Your enrollment {enrollment_id} in {course_name} is completed ({fee} won paid)."),
        )],
        Event::EnrollmentCanceled { enrollment_id, course_id, course_name, student, .. } => vec![notice(
            (RecipientRole::Student, student.as_str()),
            "ENROLLMENT_CANCELED",
            Some(enrollment_id.get()),
            Some(course_id.get()),
            format!("Your enrollment {enrollment_id} in {course_name} is canceled."),
        )],
        Event::PaymentApproved { enrollment_id, course_id, student, amount, .. } => vec![notice(
            (RecipientRole::Student, student.as_str()),
            "PAYMENT_APPROVED",
            Some(enrollment_id.get()),
            Some(course_id.get()),
            format!("Your payment of {amount} won for enrollment {enrollment_id} is approved."),
        )],
        Event::PaymentCanceled { enrollment_id, student, amount, .. } => vec![notice(
            (RecipientRole::Student, student.as_str()),
            "PAYMENT_CANCELED",
            Some(enrollment_id.get()),
            None,
            format!("Your payment of {amount} won for enrollment {enrollment_id} is refunded."),
        )],
        Event::DeliveryStarted { enrollment_id, course_id, student, text_book, .. } => vec![notice(
            (RecipientRole::Student, student.as_str()),
            "DELIVERY_STARTED",
            Some(enrollment_id.get()),
            Some(course_id.get()),
            match text_book {
                Some(book) => format!("Your textbook {book} for enrollment {enrollment_id} is on its way."),
                None => format!("The shipment for enrollment {enrollment_id} has started."),
            },
        )],
        Event::DeliveryCanceled { enrollment_id, course_id, student, .. } => vec![notice(
            (RecipientRole::Student, student.as_str()),
            "DELIVERY_CANCELED",
            Some(enrollment_id.get()),
            Some(course_id.get()),
            format!("The shipment for enrollment {enrollment_id} is canceled."),
        )],
        Event::CourseOpened { course_id, teacher, name, student_count, .. } => vec![notice(
            (RecipientRole::Instructor, teacher.as_str()),
            "COURSE_OPENED",
            None,
            Some(course_id.get()),
            format!("Your course {name} opens: {student_count} students enrolled."),
        )],
        Event::CourseClosed { course_id, teacher, name, student_count, .. } => vec![notice(
            (RecipientRole::Instructor, teacher.as_str()),
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
                recipient_role: notice.recipient_role,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_records_take_their_role_from_their_kind() {
        // Version 1's fields, in order, as postcard wrote them.
        let v1 = |kind: &str| {
            postcard::to_allocvec(&(7_u64, "Hong", kind, None::<u64>, Some(1_u64), "hello", 1000_u64)).unwrap()
        };
        let role = |kind: &str| Notification::upgrade(1, &v1(kind)).unwrap().unwrap().recipient_role;
        assert_eq!(role("COURSE_OPENED"), RecipientRole::Instructor);
        assert_eq!(role("COURSE_CLOSED"), RecipientRole::Instructor);
        assert_eq!(role("ENROLLMENT_COMPLETED"), RecipientRole::Student);
        let upgraded = Notification::upgrade(1, &v1("PAYMENT_APPROVED")).unwrap().unwrap();
        assert_eq!((upgraded.id, upgraded.recipient.as_str(), upgraded.course_id), (7, "Hong", Some(1)));
        assert!(Notification::upgrade(3, &[]).is_none());
    }

    #[test]
    fn the_notice_of_a_course_goes_to_its_instructor() {
        let notices = notices(&Event::CourseOpened {
            course_id: crate::model::CourseId::parse(1).unwrap(),
            teacher: crate::model::TeacherName::parse("Hong").unwrap(),
            name: crate::model::CourseName::parse("korean").unwrap(),
            student_count: 1,
            at_ms: 0,
        });
        assert_eq!(notices.len(), 1);
        assert_eq!((notices[0].recipient_role, notices[0].recipient.as_str()), (RecipientRole::Instructor, "Hong"));
    }
}
