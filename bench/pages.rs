//! What a page of every list costs at a million enrollments: the seek, never
//! a read of every match (issue 11's target: `GET /classes?page=0&size=20`
//! and a filtered list under 20 ms at 1 M enrollments over 10,000 courses).
//!
//! Fills a new store with ENROLLMENTS (default 1,000,000) completed
//! enrollments over COURSES (default 10,000) courses, one in a hundred
//! canceled, two per student, ten courses per teacher, with their payments,
//! shipments, student and instructor views and one notification each
//! (`sugang_actors::bench_support::fill`: the records the saga and the
//! subscribers write, without running the saga a million times), then starts
//! sugang on it (which rebuilds the kept counts once: timed and printed) and
//! measures the facade's list queries, which the HTTP handlers call as they
//! are. The store is deleted at the end.
//!
//! Run with `cargo bench --bench pages`; `ENROLLMENTS=100000 cargo bench
//! --bench pages` for a quicker run.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sugang_actors::bench_support::{fill, student_of, teacher_of};
use sugang_actors::{Config, EnrollStatus, EnrollmentFilter, PageRequest, Sugang};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pages(c: &mut Criterion) {
    let (enrollments, courses) = (env("ENROLLMENTS", 1_000_000), env("COURSES", 10_000));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let started = Instant::now();
    runtime.block_on(fill(dir.path(), courses, enrollments)).expect("fill the store");
    println!("filled {enrollments} enrollments over {courses} courses in {:.1?}", started.elapsed());
    let started = Instant::now();
    let system = runtime.block_on(Sugang::start(Config::new(dir.path()))).expect("start sugang");
    println!("started (counts rebuilt from the tables) in {:.1?}", started.elapsed());

    let first = PageRequest { number: 0, size: 20 };
    let deep = PageRequest { number: (enrollments / 20 / 2) as usize, size: 20 };
    let classes = |filter: EnrollmentFilter, page: PageRequest| {
        let paged = system.enrollments(&filter, page).expect("classes");
        assert!(paged.total > 0 && !paged.items.is_empty(), "{filter:?} finds classes");
        paged
    };
    let unfiltered = classes(EnrollmentFilter::default(), first);
    assert_eq!(unfiltered.total as u64, enrollments);

    let mut group = c.benchmark_group("pages");
    group.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    group.bench_function("classes?page=0&size=20", |b| b.iter(|| classes(EnrollmentFilter::default(), first)));
    group.bench_function("classes?page=25000&size=20", |b| b.iter(|| classes(EnrollmentFilter::default(), deep)));
    let student = student_of(enrollments / 2);
    let by_student = EnrollmentFilter { student: Some(student.clone()), ..Default::default() };
    group.bench_function("classes?student=", |b| b.iter(|| classes(by_student.clone(), first)));
    let by_course = EnrollmentFilter { course_id: Some(courses / 2 + 1), ..Default::default() };
    group.bench_function("classes?courseId=", |b| b.iter(|| classes(by_course.clone(), first)));
    let by_course_status = EnrollmentFilter {
        course_id: Some(courses / 2 + 1),
        status: Some(EnrollStatus::Completed),
        ..Default::default()
    };
    group.bench_function("classes?courseId=&status=COMPLETED", |b| b.iter(|| classes(by_course_status.clone(), first)));
    let completed = EnrollmentFilter { status: Some(EnrollStatus::Completed), ..Default::default() };
    group.bench_function("classes?status=COMPLETED", |b| b.iter(|| classes(completed.clone(), first)));
    let canceled = EnrollmentFilter { status: Some(EnrollStatus::Canceled), ..Default::default() };
    group.bench_function("classes?status=CANCELED", |b| b.iter(|| classes(canceled.clone(), first)));
    group.bench_function("courses?page=0", |b| b.iter(|| system.courses(None, first).expect("courses")));
    let teacher = teacher_of(courses / 2);
    group.bench_function("courses?teacher=", |b| b.iter(|| system.courses(Some(&teacher), first).expect("courses")));
    group.bench_function("payments?page=0", |b| b.iter(|| system.payments(None, first).expect("payments")));
    group.bench_function("deliveries?page=0", |b| b.iter(|| system.deliveries(None, None, first).expect("deliveries")));
    group.bench_function("deliveries?student=", |b| {
        b.iter(|| system.deliveries(None, Some(&student), first).expect("deliveries"))
    });
    group.bench_function("inquiryMypages?page=0", |b| b.iter(|| system.student_views(None, first).expect("views")));
    group.bench_function("inquiryMypages?student=", |b| {
        b.iter(|| system.student_views(Some(&student), first).expect("views"))
    });
    group.bench_function("mypages?teacher=", |b| {
        b.iter(|| system.instructor_views(Some(&teacher), first).expect("views"))
    });
    group.bench_function("courseSchedules?page=0", |b| b.iter(|| system.schedules(first).expect("schedules")));
    group.bench_function("notifications?page=0", |b| {
        b.iter(|| system.notifications(None, None, first).expect("notifications"))
    });
    group.bench_function("notifications?recipient=", |b| {
        b.iter(|| system.notifications(Some(&student), None, first).expect("notifications"))
    });
    group.finish();
    runtime.block_on(system.shutdown());
}

criterion_group!(benches, pages);
criterion_main!(benches);
