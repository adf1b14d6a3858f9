//! Every list serves the same items and totals through its seek as a full
//! read of the matches would: every filter, every page (first, middle, last,
//! past the end), with deleted courses, canceled enrollments, and ids that
//! are dense and not. The reference is what the test itself did, and items
//! read one by one by id.

mod common;
use common::{config, request};

use std::time::Duration;

use sugang_actors::{
    CourseDetails, CourseId, CourseName, EnrollStatus, EnrollmentFilter, EnrollmentId, Fee, MinStudents, PageRequest,
    Paged, RecipientRole, Sugang, TeacherName, TextBook,
};
use tokio::time::Instant;

fn details(name: &str) -> CourseDetails {
    CourseDetails {
        name: CourseName::parse(name).unwrap(),
        fee: Fee::parse(10_000).unwrap(),
        text_book: Some(TextBook::parse("reader").unwrap()),
        capacity: None,
        min_students: MinStudents::parse(2).unwrap(),
    }
}

async fn caught_up(system: &Sugang) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = system.last_seq();
        let mut all = true;
        for name in ["delivery", "mypage", "notifier"] {
            all &= system.wait_for(name, last).await;
        }
        if all && system.last_seq() == last {
            return;
        }
        assert!(Instant::now() < deadline, "not caught up with seq {last}");
    }
}

/// Checks every page of every size in `sizes` of `list` against `expected`
/// (the matches, in order).
fn check_pages<T: PartialEq + std::fmt::Debug>(what: &str, expected: &[T], list: impl Fn(PageRequest) -> Paged<T>) {
    for size in [1, 3, 7, 20, 1000] {
        let pages = expected.len().div_ceil(size) + 2;
        for number in 0..pages {
            let got = list(PageRequest { number, size });
            let want: Vec<&T> = expected.iter().skip(number * size).take(size).collect();
            assert_eq!(got.total, expected.len(), "{what}: total (page {number} of size {size})");
            assert_eq!(got.items.iter().collect::<Vec<_>>(), want, "{what}: page {number} of size {size}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_pages_by_seek_exactly_as_a_full_read_would() {
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(config(dir.path())).await.unwrap();
    let teachers = ["Hong", "Lee"];
    let mut courses = Vec::new();
    for c in 0..6 {
        let teacher = TeacherName::parse(teachers[c % 2]).unwrap();
        courses.push(system.register_course(teacher, details(&format!("course {c}"))).await.unwrap().value.id);
    }
    // A deleted course (no enrollments) leaves a tombstone: course ids are no
    // longer 1..=count.
    system.delete_course(courses[4]).await.unwrap();
    let live: Vec<CourseId> = courses.iter().copied().filter(|c| *c != courses[4]).collect();

    let mut enrollments: Vec<(EnrollmentId, String, CourseId, EnrollStatus)> = Vec::new();
    for i in 0..45 {
        let (student, course) = (format!("s{}", i % 9), live[i % live.len()]);
        let done = system.enroll(request(course, &student)).await.unwrap();
        enrollments.push((done.value.id, student, course, EnrollStatus::Completed));
    }
    for i in (0..45).step_by(4) {
        system.cancel(enrollments[i].0).await.unwrap();
        enrollments[i].3 = EnrollStatus::Canceled;
    }
    caught_up(&system).await;

    // /courses
    let all_courses: Vec<_> = live.iter().map(|c| system.course(*c).unwrap().unwrap()).collect();
    check_pages("courses", &all_courses, |p| system.courses(None, p).unwrap());
    for teacher in teachers.iter().chain(&["nobody"]) {
        let of: Vec<_> = all_courses.iter().filter(|c| c.teacher.as_str() == *teacher).cloned().collect();
        check_pages(&format!("courses of {teacher}"), &of, |p| system.courses(Some(teacher), p).unwrap());
    }

    // /classes, every combination of filters.
    let students: Vec<Option<String>> = vec![None, Some("s3".into()), Some("nobody".into())];
    let course_ids: Vec<Option<u64>> = vec![None, Some(live[1].get()), Some(999)];
    let statuses = [None, Some(EnrollStatus::Completed), Some(EnrollStatus::Canceled)];
    for student in &students {
        for course in &course_ids {
            for status in statuses {
                let filter = EnrollmentFilter { student: student.clone(), course_id: *course, status };
                let expected: Vec<_> = enrollments
                    .iter()
                    .filter(|(_, s, c, st)| {
                        student.as_ref().is_none_or(|x| x == s)
                            && course.is_none_or(|x| x == c.get())
                            && status.is_none_or(|x| x == *st)
                    })
                    .map(|(id, ..)| system.enrollment(*id).unwrap().unwrap())
                    .collect();
                check_pages(&format!("classes {filter:?}"), &expected, |p| system.enrollments(&filter, p).unwrap());
            }
        }
    }

    // /payments, /deliveries, /inquiryMypages: one per enrollment.
    let ids: Vec<EnrollmentId> = enrollments.iter().map(|(id, ..)| *id).collect();
    let payments: Vec<_> = ids.iter().map(|id| system.payment(*id).unwrap().unwrap()).collect();
    check_pages("payments", &payments, |p| system.payments(None, p).unwrap());
    let one = vec![payments[5].clone()];
    check_pages("payments of one", &one, |p| system.payments(Some(ids[5].get()), p).unwrap());
    let deliveries: Vec<_> = ids.iter().map(|id| system.delivery(id.get()).unwrap().unwrap()).collect();
    check_pages("deliveries", &deliveries, |p| system.deliveries(None, None, p).unwrap());
    let of_s3: Vec<_> = deliveries.iter().filter(|d| d.student.as_str() == "s3").cloned().collect();
    check_pages("deliveries of s3", &of_s3, |p| system.deliveries(None, Some("s3"), p).unwrap());
    let views: Vec<_> = ids.iter().map(|id| system.student_view(id.get()).unwrap().unwrap()).collect();
    assert!(views.iter().all(|v| v.delivery_status.is_some()), "every view shows its shipment");
    check_pages("student views", &views, |p| system.student_views(None, p).unwrap());
    let of_s3: Vec<_> = views.iter().filter(|v| v.student.as_str() == "s3").cloned().collect();
    check_pages("student views of s3", &of_s3, |p| system.student_views(Some("s3"), p).unwrap());

    // /mypages and /courseSchedules: one per live course.
    let instructor: Vec<_> = live.iter().map(|c| system.instructor_view(c.get()).unwrap().unwrap()).collect();
    check_pages("instructor views", &instructor, |p| system.instructor_views(None, p).unwrap());
    let of_lee: Vec<_> = instructor.iter().filter(|v| v.teacher.as_str() == "Lee").cloned().collect();
    check_pages("instructor views of Lee", &of_lee, |p| system.instructor_views(Some("Lee"), p).unwrap());
    let schedules: Vec<_> = live.iter().map(|c| system.schedule(c.get()).unwrap().unwrap()).collect();
    check_pages("schedules", &schedules, |p| system.schedules(p).unwrap());

    // /notifications, by recipient and role.
    let mut notifications = Vec::new();
    let mut id = 1;
    while let Some(n) = system.notification(id).unwrap() {
        notifications.push(n);
        id += 1;
    }
    assert!(notifications.iter().any(|n| n.recipient_role == RecipientRole::Instructor), "courses opened");
    for recipient in [None, Some("s3"), Some("Hong")] {
        for role in [None, Some(RecipientRole::Student), Some(RecipientRole::Instructor)] {
            let expected: Vec<_> = notifications
                .iter()
                .filter(|n| recipient.is_none_or(|r| n.recipient == r) && role.is_none_or(|r| n.recipient_role == r))
                .cloned()
                .collect();
            check_pages(&format!("notifications {recipient:?} {role:?}"), &expected, |p| {
                system.notifications(recipient, role, p).unwrap()
            });
        }
    }
    system.shutdown().await;
}

/// A value no record type decodes (an unknown schema version).
#[derive(serde::Serialize, serde::Deserialize)]
struct Unreadable;

impl sugang_storage::Record for Unreadable {
    const VERSION: u8 = 250;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_page_reads_only_its_own_records() {
    // A record far from the first page is made unreadable: a list that read
    // every match (and counted them) would fail; a seek never touches it.
    let dir = tempfile::tempdir().unwrap();
    let system = Sugang::start(config(dir.path())).await.unwrap();
    let course = system.register_course(TeacherName::parse("Hong").unwrap(), details("korean")).await.unwrap().value.id;
    for i in 0..30 {
        system.enroll(request(course, &format!("s{i}"))).await.unwrap();
    }
    caught_up(&system).await;
    system.shutdown().await;
    {
        let store = sugang_storage::Store::open(dir.path(), sugang_storage::StoreOptions::default()).unwrap();
        let (journal, task) =
            sugang_storage::Journal::start(&store, sugang_storage::JournalOptions::default()).unwrap();
        let mut batch = sugang_storage::Batch::new();
        for table in ["enrollments", "payments", "deliveries", "mypage_students", "notifications"] {
            let table: sugang_storage::Table<u64, Unreadable> = sugang_storage::Table::new(table);
            batch.put(&table, &20, &Unreadable).unwrap();
        }
        journal.commit(batch).await.unwrap();
        drop(journal);
        task.await.unwrap();
    }
    let system = Sugang::start(config(dir.path())).await.unwrap();
    let first = PageRequest { number: 0, size: 5 };
    let all = PageRequest { number: 0, size: 1000 };
    let classes = system.enrollments(&EnrollmentFilter::default(), first).unwrap();
    assert_eq!((classes.total, classes.items.len()), (30, 5));
    let completed = EnrollmentFilter { status: Some(EnrollStatus::Completed), ..Default::default() };
    assert_eq!(system.enrollments(&completed, first).unwrap().total, 30);
    assert_eq!(system.payments(None, first).unwrap().total, 30);
    assert_eq!(system.deliveries(None, None, first).unwrap().total, 30);
    assert_eq!(system.student_views(None, first).unwrap().total, 30);
    assert!(system.notifications(None, None, first).unwrap().total >= 30);
    // The damage is there for whoever reads it.
    assert!(system.enrollments(&EnrollmentFilter::default(), all).is_err());
    assert!(system.payments(None, all).is_err());
    assert!(system.notifications(None, None, all).is_err());
    system.shutdown().await;
}
