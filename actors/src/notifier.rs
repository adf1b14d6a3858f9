//! The notifier: one notification per status change, to the student or the
//! instructor concerned — addressed to a (role, name), since a student and an
//! instructor may share a name — stored and appended as a JSON line to
//! `notifications.log` in the data directory.
//!
//! Notification ids are dense, 1, 2, 3 …, in event order: the worker keeps
//! the next id in memory, taken from the table's highest id whenever it
//! starts. Its notifications commit in the same batch as its offset, so an
//! event is turned into notifications exactly once: a batch that did not
//! commit leaves neither notifications nor offset behind, and the restarted
//! worker numbers them again from the table. The log file is written after
//! the batch that stored the notifications commits; at start the worker
//! appends whatever the table holds past the file's last line (cutting a
//! torn last line first, and cutting the file back to the table if a crash
//! lost the table's last commits), so the file ends up with every
//! notification exactly once. It runs as a single worker because the ids
//! and the file are one ordered stream.

pub(crate) mod queries;

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sugang_storage::{Batch, Committed, Record, Store, Table};

use crate::bus::{Part, Projection, ProjectionError};
use crate::event::{Event, RejectReason};
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
    /// The id the next notification gets: one past the highest committed
    /// (reset from the table when the worker starts), plus those in the
    /// batch being built.
    next_id: Mutex<u64>,
}

impl NotifierProjection {
    pub(crate) fn new(data_dir: &std::path::Path) -> Self {
        NotifierProjection { path: data_dir.join("notifications.log"), written: Mutex::new(0), next_id: Mutex::new(1) }
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

/// The id on the file's last line (0 for an empty or missing file). A torn
/// last line (a crash mid-write: unterminated, or not a notification) is cut
/// off so appends start clean; its notification is still in the table and is
/// written again. The line before it must then be readable: an unreadable
/// line anywhere but last is damage, an error, never "start from 0".
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
    let damaged = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    // Whole lines within the tail (a window that starts mid-file starts
    // mid-line: its first piece is not a line).
    let mut lines: Vec<(usize, &[u8])> = Vec::new();
    let mut from = 0;
    for (at, _) in tail.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        lines.push((from, &tail[from..at]));
        from = at + 1;
    }
    let unterminated = from < tail.len();
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let read = |line: &[u8]| serde_json::from_slice::<LoggedId>(line).ok().map(|n| n.id);
    // Where the file is cut: after the last readable line.
    let (cut, id) = match lines.last() {
        Some(&(at, line)) => match read(line) {
            Some(id) => (start + at as u64 + line.len() as u64 + 1, id),
            None => {
                // The last line is torn: cut it; the one before must read.
                let before = lines.len().checked_sub(2).map(|i| lines[i]);
                match before {
                    Some((at, line)) => match read(line) {
                        Some(id) => (start + at as u64 + line.len() as u64 + 1, id),
                        None => {
                            return Err(damaged(format!(
                                "{}: an unreadable line before the last, at byte {}",
                                path.display(),
                                start + at as u64
                            )));
                        }
                    },
                    None if start == 0 => (0, 0),
                    None => {
                        return Err(damaged(format!("{}: no readable line in its last 64 KiB", path.display())));
                    }
                }
            }
        },
        None if start == 0 => (0, 0),
        None => return Err(damaged(format!("{}: no line ends in its last 64 KiB", path.display()))),
    };
    if cut < len {
        tracing::warn!(
            file = %path.display(),
            cut_bytes = len - cut,
            unterminated,
            "notifications.log: a torn last line cut off; its notification is written again"
        );
        file.set_len(cut)?;
    }
    Ok(id)
}

/// The id of a line of `notifications.log`, read alone: lines written before
/// a field was added (`recipientRole`) still count.
#[derive(Deserialize)]
struct LoggedId {
    id: u64,
}

/// Cuts the file after its last notification with an id at most `highest`,
/// returning that id. For a file ahead of the table: with relaxed
/// durability, a machine crash can lose the table's last commits while the
/// file kept their lines, and their ids will be given to new notifications.
fn cut_after(path: &std::path::Path, highest: u64) -> Result<u64, std::io::Error> {
    let content = std::fs::read(path)?;
    let (mut keep, mut last) = (0, 0);
    for line in content.split_inclusive(|&b| b == b'\n') {
        match serde_json::from_slice::<LoggedId>(line) {
            Ok(n) if n.id <= highest => (keep, last) = (keep + line.len(), n.id),
            _ => break,
        }
    }
    tracing::warn!(
        file = %path.display(),
        table_highest = highest,
        kept_through = last,
        "notifications.log is ahead of the table (commits lost in a crash): its extra lines are cut"
    );
    OpenOptions::new().write(true).open(path)?.set_len(keep as u64)?;
    Ok(last)
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
        Event::WaitlistJoined { entry_id, course_id, course_name, student, position, .. } => vec![notice(
            (RecipientRole::Student, student.as_str()),
            "WAITLISTED",
            None,
            Some(course_id.get()),
            format!("{course_name} is full: you are number {position} on its waitlist (entry {entry_id})."),
        )],
        Event::WaitlistEnrolled { entry_id, course_id, course_name, student, enrollment_id, .. } => vec![notice(
            (RecipientRole::Student, student.as_str()),
            "WAITLIST_ENROLLED",
            Some(enrollment_id.get()),
            Some(course_id.get()),
            format!("A seat in {course_name} freed: your waitlist entry {entry_id} is enrolled as {enrollment_id}."),
        )],
        Event::WaitlistFailed { entry_id, course_id, course_name, student, reason, .. } => vec![notice(
            (RecipientRole::Student, student.as_str()),
            "WAITLIST_FAILED",
            None,
            Some(course_id.get()),
            match reason {
                RejectReason::PaymentDeclined => format!(
                    "A seat in {course_name} freed for your waitlist entry {entry_id}, but your payment was declined."
                ),
                _ => format!(
                    "A seat in {course_name} freed for your waitlist entry {entry_id}, but the payment could not be made."
                ),
            },
        )],
        Event::WaitlistCanceled { entry_id, course_id, course_name, student, .. } => vec![notice(
            (RecipientRole::Student, student.as_str()),
            "WAITLIST_CANCELED",
            None,
            Some(course_id.get()),
            format!("{course_name} was deleted: your waitlist entry {entry_id} is canceled."),
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
        _store: &Store,
        event: &Committed<Event>,
        part: Part,
        batch: &mut Batch,
    ) -> Result<u64, ProjectionError> {
        if !part.owns(event.key) {
            return Ok(0);
        }
        let mut effects = 0;
        let mut next_id = self.next_id.lock().unwrap_or_else(|e| e.into_inner());
        for notice in notices(&event.event) {
            let id = *next_id;
            *next_id += 1;
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
            queries::count_recorded(batch, id, notice.recipient_role)?;
            effects += 1;
        }
        Ok(effects)
    }

    fn starting(&self, store: &Store, _part: Part) -> Result<(), ProjectionError> {
        let highest = store.last(&NOTIFICATIONS)?.map_or(0, |(id, _)| id);
        *self.next_id.lock().unwrap_or_else(|e| e.into_inner()) = highest + 1;
        let mut written = last_id_in(&self.path)?;
        if written > highest {
            written = cut_after(&self.path, highest)?;
        }
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = written;
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

    fn line(id: u64) -> String {
        let n = Notification {
            id,
            recipient: "Kim".into(),
            recipient_role: RecipientRole::Student,
            kind: "ENROLLMENT_COMPLETED".into(),
            apply_id: Some(id),
            course_id: Some(1),
            message: "done".into(),
            created_at_ms: 7,
        };
        format!("{}\n", serde_json::to_string(&n).unwrap())
    }

    fn file_with(content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notifications.log");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn a_missing_or_empty_file_starts_from_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last_id_in(&dir.path().join("notifications.log")).unwrap(), 0);
        let (_dir, path) = file_with("");
        assert_eq!(last_id_in(&path).unwrap(), 0);
    }

    #[test]
    fn whole_lines_are_kept() {
        let whole = format!("{}{}", line(1), line(2));
        let (_dir, path) = file_with(&whole);
        assert_eq!(last_id_in(&path).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
    }

    #[test]
    fn an_unterminated_last_line_is_cut() {
        let whole = format!("{}{}", line(1), line(2));
        let (_dir, path) = file_with(&format!("{whole}{{\"id\":3,\"recip"));
        assert_eq!(last_id_in(&path).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
    }

    #[test]
    fn an_unreadable_last_line_is_cut_never_read_as_zero() {
        let whole = format!("{}{}", line(1), line(2));
        let (_dir, path) = file_with(&format!("{whole}\0\0\0\0\n"));
        assert_eq!(last_id_in(&path).unwrap(), 2, "a torn last line does not make every notification new");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
        let (_dir, path) = file_with("garbage\n");
        assert_eq!(last_id_in(&path).unwrap(), 0, "the only line was torn: nothing was written");
    }

    #[test]
    fn a_file_ahead_of_the_table_is_cut_back_to_it() {
        let kept = format!("{}{}", line(1), line(2));
        let (_dir, path) = file_with(&format!("{kept}{}{}", line(3), line(4)));
        assert_eq!(cut_after(&path, 2).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), kept);
    }

    #[test]
    fn an_unreadable_line_before_the_last_is_an_error() {
        let damaged = format!("{}not json\n{}", line(1), line(3));
        let (_dir, path) = file_with(&format!("{damaged}torn"));
        assert_eq!(last_id_in(&path).unwrap(), 3, "the last whole line is readable: only the torn piece goes");
        let (_dir, path) = file_with(&format!("{}not json\n{{\"torn\n", line(1)));
        let error = last_id_in(&path).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    }
}
