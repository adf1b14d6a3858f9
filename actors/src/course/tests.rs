//! The course's rules, tested on `decide` and `apply` alone: no actor, no clock.

use proptest::prelude::*;

use super::*;

const AT: u64 = 1_000;

fn course_id() -> CourseId {
    CourseId::assigned(7)
}

fn enrollment(n: u64) -> EnrollmentId {
    EnrollmentId::assigned(n)
}

fn student(name: &str) -> StudentName {
    StudentName::parse(name).unwrap()
}

fn teacher() -> TeacherName {
    TeacherName::parse("Lee").unwrap()
}

fn fee(won: i64) -> Fee {
    Fee::parse(won).unwrap()
}

fn capacity(n: i64) -> Capacity {
    Capacity::parse(n).unwrap()
}

fn min_students(n: i64) -> MinStudents {
    MinStudents::parse(n).unwrap()
}

fn details(capacity_: Option<i64>, min: i64) -> CourseDetails {
    CourseDetails {
        name: crate::model::CourseName::parse("Rust").unwrap(),
        fee: fee(50_000),
        text_book: Some(TextBook::parse("The Book").unwrap()),
        capacity: capacity_.map(capacity),
        min_students: min_students(min),
    }
}

fn completion() -> Completion {
    Completion { pay_method: PayMethod::parse(None).unwrap(), addr: Some("Seoul".into()), telephone: None }
}

fn register_command(details: CourseDetails) -> CourseCommand {
    CourseCommand::Register { id: course_id(), teacher: teacher(), details, waitlist_capacity: 0 }
}

fn fold(state: CourseState, events: &[Event]) -> CourseState {
    events.iter().fold(state, apply)
}

/// Decides a command that must be accepted, and applies its events.
fn run(state: CourseState, command: CourseCommand) -> (CourseState, Vec<Event>) {
    let events = decide(&state, command, AT).unwrap();
    (fold(state, &events), events)
}

fn registered(details: CourseDetails) -> CourseState {
    run(CourseState::Unregistered { id: course_id() }, register_command(details)).0
}

fn active(state: &CourseState) -> &Course {
    match state {
        CourseState::Active(course) => course,
        other => panic!("expected an active course, got {other:?}"),
    }
}

fn reserve(n: u64, who: &str) -> CourseCommand {
    CourseCommand::ReserveSeat { enrollment_id: enrollment(n), student: student(who), expected_fee: None, join: None }
}

fn confirm(n: u64) -> CourseCommand {
    CourseCommand::ConfirmSeat { reservation: enrollment(n), enrollment_id: enrollment(n), completion: completion() }
}

fn release(n: u64) -> CourseCommand {
    CourseCommand::ReleaseSeat { enrollment_id: enrollment(n), reason: RejectReason::PaymentDeclined }
}

fn cancel(n: u64) -> CourseCommand {
    CourseCommand::CancelSeat { enrollment_id: enrollment(n) }
}

fn modify(patch: CoursePatch) -> CourseCommand {
    CourseCommand::Modify(patch)
}

/// A course with min_students `min`, and the given students each holding a
/// confirmed seat under enrollment ids 1, 2, ….
fn with_confirmed(min: i64, students: &[&str]) -> CourseState {
    let mut state = registered(details(Some(10), min));
    for (i, who) in students.iter().enumerate() {
        let n = i as u64 + 1;
        state = run(state, reserve(n, who)).0;
        state = run(state, confirm(n)).0;
    }
    state
}

// ---- Register ----

#[test]
fn register_creates_an_empty_active_course() {
    let (state, events) = run(CourseState::Unregistered { id: course_id() }, register_command(details(Some(3), 2)));
    assert_eq!(
        events,
        vec![Event::CourseRegistered {
            course_id: course_id(),
            teacher: teacher(),
            details: details(Some(3), 2),
            at_ms: AT
        }]
    );
    assert_eq!(
        state,
        CourseState::Active(Course {
            id: course_id(),
            teacher: teacher(),
            details: details(Some(3), 2),
            seats: BTreeMap::new(),
            student_count: 0,
            holders: HashMap::new(),
            registered_at_ms: AT,
            waitlist: Waitlist::default(),
        })
    );
    assert!(!active(&state).is_open());
}

#[test]
fn registering_the_same_course_again_is_an_idempotent_repeat() {
    let state = registered(details(Some(3), 2));
    assert_eq!(decide(&state, register_command(details(Some(3), 2)), AT + 1), Ok(vec![]));
}

#[test]
fn registering_a_different_course_under_a_taken_id_is_refused() {
    let state = registered(details(Some(3), 2));
    assert_eq!(
        decide(&state, register_command(details(Some(4), 2)), AT),
        Err(CourseRejection::AlreadyRegistered(course_id()))
    );
    let other_teacher = CourseCommand::Register {
        id: course_id(),
        teacher: TeacherName::parse("Park").unwrap(),
        details: details(Some(3), 2),
        waitlist_capacity: 0,
    };
    assert_eq!(decide(&state, other_teacher, AT), Err(CourseRejection::AlreadyRegistered(course_id())));
}

#[test]
fn every_other_command_on_an_unregistered_id_is_not_found() {
    let state = CourseState::Unregistered { id: course_id() };
    let commands = vec![
        modify(CoursePatch { fee: Some(fee(1)), ..CoursePatch::default() }),
        CourseCommand::Delete,
        reserve(1, "Kim"),
        confirm(1),
        release(1),
        cancel(1),
    ];
    for command in commands {
        assert_eq!(decide(&state, command.clone(), AT), Err(CourseRejection::NotFound(course_id())), "{command:?}");
    }
}

// ---- Modify ----

#[test]
fn modify_changes_each_field_and_reports_before_and_after() {
    let base = details(Some(3), 1);
    let patches: Vec<(CoursePatch, CourseDetails)> = vec![
        (
            CoursePatch { name: Some(crate::model::CourseName::parse("Go").unwrap()), ..CoursePatch::default() },
            CourseDetails { name: crate::model::CourseName::parse("Go").unwrap(), ..base.clone() },
        ),
        (
            CoursePatch { fee: Some(fee(70_000)), ..CoursePatch::default() },
            CourseDetails { fee: fee(70_000), ..base.clone() },
        ),
        (
            CoursePatch { text_book: Some(None), ..CoursePatch::default() },
            CourseDetails { text_book: None, ..base.clone() },
        ),
        (
            CoursePatch { text_book: Some(Some(TextBook::parse("Other").unwrap())), ..CoursePatch::default() },
            CourseDetails { text_book: Some(TextBook::parse("Other").unwrap()), ..base.clone() },
        ),
        (
            CoursePatch { capacity: Some(None), ..CoursePatch::default() },
            CourseDetails { capacity: None, ..base.clone() },
        ),
        (
            CoursePatch { capacity: Some(Some(capacity(9))), ..CoursePatch::default() },
            CourseDetails { capacity: Some(capacity(9)), ..base.clone() },
        ),
        (
            CoursePatch { min_students: Some(min_students(2)), ..CoursePatch::default() },
            CourseDetails { min_students: min_students(2), ..base.clone() },
        ),
    ];
    for (patch, after) in patches {
        let state = registered(base.clone());
        let (state, events) = run(state, modify(patch.clone()));
        assert_eq!(
            events,
            vec![Event::CourseModified {
                course_id: course_id(),
                teacher: teacher(),
                before: base.clone(),
                after: after.clone(),
                student_count: 0,
                at_ms: AT,
            }],
            "{patch:?}"
        );
        assert_eq!(active(&state).details, after, "{patch:?}");
    }
}

#[test]
fn a_patch_that_changes_nothing_yields_no_events() {
    let state = registered(details(Some(3), 1));
    assert_eq!(decide(&state, modify(CoursePatch::default()), AT), Ok(vec![]));
    let same = CoursePatch {
        name: Some(crate::model::CourseName::parse("Rust").unwrap()),
        fee: Some(fee(50_000)),
        text_book: Some(Some(TextBook::parse("The Book").unwrap())),
        capacity: Some(Some(capacity(3))),
        min_students: Some(min_students(1)),
        waitlist_capacity: Some(0),
    };
    assert_eq!(decide(&state, modify(same), AT), Ok(vec![]));
}

#[test]
fn capacity_below_the_held_seats_is_refused_counting_pending_seats() {
    let state = registered(details(Some(5), 1));
    let (state, _) = run(state, reserve(1, "Kim"));
    let (state, _) = run(state, confirm(1));
    let (state, _) = run(state, reserve(2, "Choi"));
    assert_eq!(
        decide(&state, modify(CoursePatch { capacity: Some(Some(capacity(1))), ..CoursePatch::default() }), AT),
        Err(CourseRejection::CapacityBelowStudents { capacity: 1, held: 2 })
    );
    let (state, events) =
        run(state, modify(CoursePatch { capacity: Some(Some(capacity(2))), ..CoursePatch::default() }));
    assert_eq!(events.len(), 1);
    assert_eq!(active(&state).details.capacity, Some(capacity(2)));
}

#[test]
fn raising_min_students_above_the_count_closes_the_course() {
    let state = with_confirmed(1, &["Kim", "Choi"]);
    assert!(active(&state).is_open());
    let (state, events) =
        run(state, modify(CoursePatch { min_students: Some(min_students(3)), ..CoursePatch::default() }));
    assert_eq!(events.len(), 2);
    assert!(matches!(events[0], Event::CourseModified { student_count: 2, .. }));
    assert_eq!(
        events[1],
        Event::CourseClosed {
            course_id: course_id(),
            teacher: teacher(),
            name: details(None, 1).name,
            student_count: 2,
            at_ms: AT,
        }
    );
    assert!(!active(&state).is_open());
}

#[test]
fn lowering_min_students_to_the_count_opens_the_course_under_its_new_name() {
    let state = with_confirmed(3, &["Kim", "Choi"]);
    assert!(!active(&state).is_open());
    let new_name = crate::model::CourseName::parse("Rust 2").unwrap();
    let patch =
        CoursePatch { name: Some(new_name.clone()), min_students: Some(min_students(2)), ..CoursePatch::default() };
    let (state, events) = run(state, modify(patch));
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1],
        Event::CourseOpened { course_id: course_id(), teacher: teacher(), name: new_name, student_count: 2, at_ms: AT }
    );
    assert!(active(&state).is_open());
}

#[test]
fn changing_min_students_without_crossing_emits_only_the_modification() {
    let state = with_confirmed(1, &["Kim", "Choi"]);
    let (_, events) = run(state, modify(CoursePatch { min_students: Some(min_students(2)), ..CoursePatch::default() }));
    assert_eq!(events.len(), 1);
    assert!(matches!(events[0], Event::CourseModified { .. }));
}

// ---- Delete ----

#[test]
fn delete_is_refused_while_any_seat_is_held() {
    let state = registered(details(Some(5), 1));
    let (state, _) = run(state, reserve(1, "Kim"));
    assert_eq!(
        decide(&state, CourseCommand::Delete, AT),
        Err(CourseRejection::HasEnrollments { course: course_id(), count: 1 })
    );
    let (state, _) = run(state, confirm(1));
    let (state, _) = run(state, reserve(2, "Choi"));
    assert_eq!(
        decide(&state, CourseCommand::Delete, AT),
        Err(CourseRejection::HasEnrollments { course: course_id(), count: 2 })
    );
}

#[test]
fn delete_of_an_empty_course_marks_it_deleted_and_repeats_are_idempotent() {
    let state = with_confirmed(1, &["Kim"]);
    let (state, _) = run(state, cancel(1));
    let (state, events) = run(state, CourseCommand::Delete);
    assert_eq!(
        events,
        vec![Event::CourseDeleted {
            course_id: course_id(),
            teacher: teacher(),
            name: details(None, 1).name,
            at_ms: AT
        }]
    );
    assert!(matches!(state, CourseState::Deleted(ref course) if course.seats.is_empty()));
    assert_eq!(decide(&state, CourseCommand::Delete, AT), Ok(vec![]));
}

#[test]
fn commands_on_a_deleted_course_are_not_found() {
    let (state, _) = run(registered(details(Some(5), 1)), CourseCommand::Delete);
    let commands = vec![
        modify(CoursePatch { fee: Some(fee(1)), ..CoursePatch::default() }),
        reserve(1, "Kim"),
        confirm(1),
        register_command(details(Some(9), 1)),
    ];
    for command in commands {
        let expected = match command {
            CourseCommand::Register { .. } => CourseRejection::AlreadyRegistered(course_id()),
            _ => CourseRejection::NotFound(course_id()),
        };
        assert_eq!(decide(&state, command.clone(), AT), Err(expected), "{command:?}");
    }
    // Compensations for seats the course no longer has stay idempotent.
    assert_eq!(decide(&state, release(1), AT), Ok(vec![]));
    assert_eq!(decide(&state, cancel(1), AT), Ok(vec![]));
    // A deleted course ignores later events.
    let after = fold(
        state.clone(),
        &[Event::SeatReserved {
            course_id: course_id(),
            enrollment_id: enrollment(1),
            student: student("Kim"),
            fee: fee(1),
            at_ms: AT,
        }],
    );
    assert_eq!(after, state);
}

// ---- ReserveSeat ----

#[test]
fn reserve_holds_a_pending_seat_at_the_current_fee() {
    let (state, events) = run(registered(details(Some(2), 1)), reserve(1, "Kim"));
    assert_eq!(
        events,
        vec![Event::SeatReserved {
            course_id: course_id(),
            enrollment_id: enrollment(1),
            student: student("Kim"),
            fee: fee(50_000),
            at_ms: AT,
        }]
    );
    let course = active(&state);
    assert_eq!(
        course.seats.get(&enrollment(1)),
        Some(&Seat { student: student("Kim"), fee: fee(50_000), confirmed: false })
    );
    assert_eq!(course.holders.get(&student("Kim")), Some(&enrollment(1)));
    assert_eq!(course.student_count, 0);
    assert_eq!(course.held(), 1);
}

#[test]
fn reserve_waits_on_pending_seats_and_is_full_only_when_every_seat_is_confirmed() {
    let state = registered(details(Some(2), 1));
    let (state, _) = run(state, reserve(1, "Kim"));
    let (state, _) = run(state, confirm(1));
    let (state, _) = run(state, reserve(2, "Choi"));
    assert_eq!(active(&state).student_count, 1);
    // The last seat is held by a payment in progress: not full yet.
    assert_eq!(decide(&state, reserve(3, "Park"), AT), Err(CourseRejection::AwaitingPayments { course: course_id() }));
    // Releasing the pending seat frees it.
    let (released, _) = run(state.clone(), release(2));
    assert!(decide(&released, reserve(3, "Park"), AT).is_ok_and(|events| events.len() == 1));
    // Confirming it makes the course truly full.
    let (confirmed, _) = run(state, confirm(2));
    assert_eq!(
        decide(&confirmed, reserve(3, "Park"), AT),
        Err(CourseRejection::Full { course: course_id(), capacity: 2 })
    );
}

#[test]
fn an_unlimited_course_is_never_full() {
    let mut state = registered(details(None, 1));
    for n in 1..=50 {
        state = run(state, reserve(n, &format!("student{n}"))).0;
    }
    assert_eq!(active(&state).held(), 50);
}

#[test]
fn a_student_holds_at_most_one_seat() {
    let (state, _) = run(registered(details(Some(5), 1)), reserve(1, "Kim"));
    assert_eq!(
        decide(&state, reserve(2, "Kim"), AT),
        Err(CourseRejection::AlreadyEnrolled {
            course: course_id(),
            student: student("Kim"),
            enrollment: enrollment(1)
        })
    );
    let (state, _) = run(state, confirm(1));
    assert_eq!(
        decide(&state, reserve(2, "Kim"), AT),
        Err(CourseRejection::AlreadyEnrolled {
            course: course_id(),
            student: student("Kim"),
            enrollment: enrollment(1)
        })
    );
}

#[test]
fn reserving_an_enrollment_id_held_by_another_student_is_refused() {
    let (state, _) = run(registered(details(Some(5), 1)), reserve(1, "Kim"));
    assert_eq!(
        decide(&state, reserve(1, "Choi"), AT),
        Err(CourseRejection::AlreadyEnrolled {
            course: course_id(),
            student: student("Kim"),
            enrollment: enrollment(1)
        })
    );
}

#[test]
fn repeating_a_reservation_is_idempotent() {
    let (state, _) = run(registered(details(Some(1), 1)), reserve(1, "Kim"));
    // Even at capacity, the same enrollment and student is a repeat, not Full.
    assert_eq!(decide(&state, reserve(1, "Kim"), AT), Ok(vec![]));
    let (state, _) = run(state, confirm(1));
    assert_eq!(decide(&state, reserve(1, "Kim"), AT), Ok(vec![]));
}

#[test]
fn a_stale_expected_fee_is_refused() {
    let state = registered(details(Some(5), 1));
    let stale = CourseCommand::ReserveSeat {
        enrollment_id: enrollment(1),
        student: student("Kim"),
        expected_fee: Some(fee(40_000)),
        join: None,
    };
    assert_eq!(
        decide(&state, stale, AT),
        Err(CourseRejection::StaleFee { expected: fee(40_000), actual: fee(50_000) })
    );
    let current = CourseCommand::ReserveSeat {
        enrollment_id: enrollment(1),
        student: student("Kim"),
        expected_fee: Some(fee(50_000)),
        join: None,
    };
    assert!(decide(&state, current, AT).is_ok_and(|events| events.len() == 1));
}

#[test]
fn a_fee_change_applies_to_new_enrollments_only() {
    let state = registered(details(Some(5), 1));
    let (state, _) = run(state, reserve(1, "Kim"));
    let (state, _) = run(state, modify(CoursePatch { fee: Some(fee(80_000)), ..CoursePatch::default() }));
    assert_eq!(active(&state).seats[&enrollment(1)].fee, fee(50_000));
    let (state, events) = run(state, confirm(1));
    assert!(matches!(events[0], Event::EnrollmentCompleted { fee: paid, .. } if paid == fee(50_000)));
    let (state, events) = run(state, reserve(2, "Choi"));
    assert!(matches!(events[0], Event::SeatReserved { fee: paid, .. } if paid == fee(80_000)));
    let (_, events) = run(state, cancel(1));
    assert!(matches!(events[0], Event::EnrollmentCanceled { fee: refunded, .. } if refunded == fee(50_000)));
}

// ---- ConfirmSeat ----

#[test]
fn confirm_completes_the_enrollment_and_opens_exactly_at_min_students() {
    let state = registered(details(Some(5), 2));
    let (state, _) = run(state, reserve(1, "Kim"));
    let (state, _) = run(state, reserve(2, "Choi"));
    let (state, _) = run(state, reserve(3, "Park"));

    let (state, events) = run(state, confirm(1));
    assert_eq!(
        events,
        vec![Event::EnrollmentCompleted {
            enrollment_id: enrollment(1),
            course_id: course_id(),
            course_name: details(None, 1).name,
            teacher: teacher(),
            student: student("Kim"),
            fee: fee(50_000),
            text_book: Some(TextBook::parse("The Book").unwrap()),
            pay_method: PayMethod::parse(None).unwrap(),
            addr: Some("Seoul".into()),
            telephone: None,
            student_count: 1,
            at_ms: AT,
        }]
    );
    assert_eq!(active(&state).student_count, 1);
    assert!(!active(&state).is_open());

    let (state, events) = run(state, confirm(2));
    assert_eq!(events.len(), 2);
    assert!(matches!(events[0], Event::EnrollmentCompleted { student_count: 2, .. }));
    assert_eq!(
        events[1],
        Event::CourseOpened {
            course_id: course_id(),
            teacher: teacher(),
            name: details(None, 1).name,
            student_count: 2,
            at_ms: AT,
        }
    );
    assert!(active(&state).is_open());

    let (state, events) = run(state, confirm(3));
    assert_eq!(events.len(), 1, "already open: no second CourseOpened");
    assert!(matches!(events[0], Event::EnrollmentCompleted { student_count: 3, .. }));
    assert_eq!(active(&state).student_count, 3);
    assert!(active(&state).seats.values().all(|seat| seat.confirmed));
}

#[test]
fn repeating_a_confirmation_is_idempotent() {
    let state = with_confirmed(1, &["Kim"]);
    assert_eq!(decide(&state, confirm(1), AT), Ok(vec![]));
    assert_eq!(active(&state).student_count, 1);
}

#[test]
fn confirming_without_a_seat_is_refused() {
    let state = registered(details(Some(5), 1));
    assert_eq!(
        decide(&state, confirm(9), AT),
        Err(CourseRejection::NoSeat { course: course_id(), enrollment: enrollment(9) })
    );
}

// ---- ReleaseSeat ----

#[test]
fn release_gives_a_pending_seat_back_and_rejects_the_enrollment() {
    let (state, _) = run(registered(details(Some(5), 1)), reserve(1, "Kim"));
    let (state, events) = run(state, release(1));
    assert_eq!(
        events,
        vec![
            Event::SeatReleased {
                course_id: course_id(),
                enrollment_id: enrollment(1),
                student: student("Kim"),
                reason: RejectReason::PaymentDeclined,
                at_ms: AT,
            },
            Event::EnrollmentRejected {
                enrollment_id: enrollment(1),
                course_id: course_id(),
                student: student("Kim"),
                reason: RejectReason::PaymentDeclined,
                at_ms: AT,
            },
        ]
    );
    let course = active(&state);
    assert!(course.seats.is_empty());
    assert!(course.holders.is_empty());
    assert_eq!(course.student_count, 0);
    // The student may try again.
    assert!(decide(&state, reserve(2, "Kim"), AT).is_ok_and(|events| events.len() == 1));
}

#[test]
fn releasing_an_absent_seat_is_idempotent() {
    let (state, _) = run(registered(details(Some(5), 1)), reserve(1, "Kim"));
    let (state, _) = run(state, release(1));
    assert_eq!(decide(&state, release(1), AT), Ok(vec![]));
    assert_eq!(decide(&state, release(42), AT), Ok(vec![]));
}

#[test]
fn a_confirmed_seat_cannot_be_released() {
    let state = with_confirmed(1, &["Kim"]);
    assert_eq!(
        decide(&state, release(1), AT),
        Err(CourseRejection::NoSeat { course: course_id(), enrollment: enrollment(1) })
    );
}

// ---- CancelSeat ----

#[test]
fn cancel_gives_a_confirmed_seat_back_and_closes_below_min_students() {
    let state = with_confirmed(2, &["Kim", "Choi"]);
    assert!(active(&state).is_open());
    let (state, events) = run(state, cancel(2));
    assert_eq!(
        events,
        vec![
            Event::EnrollmentCanceled {
                enrollment_id: enrollment(2),
                course_id: course_id(),
                course_name: details(None, 1).name,
                teacher: teacher(),
                student: student("Choi"),
                fee: fee(50_000),
                student_count: 1,
                at_ms: AT,
            },
            Event::CourseClosed {
                course_id: course_id(),
                teacher: teacher(),
                name: details(None, 1).name,
                student_count: 1,
                at_ms: AT,
            },
        ]
    );
    let course = active(&state);
    assert_eq!(course.student_count, 1);
    assert!(!course.is_open());
    assert!(!course.holders.contains_key(&student("Choi")));
    assert!(!course.seats.contains_key(&enrollment(2)));

    let (state, events) = run(state, cancel(1));
    assert_eq!(events.len(), 1, "already closed: no second CourseClosed");
    assert!(matches!(events[0], Event::EnrollmentCanceled { student_count: 0, .. }));
    assert_eq!(active(&state).student_count, 0);
}

#[test]
fn cancel_above_min_students_does_not_close() {
    let state = with_confirmed(1, &["Kim", "Choi"]);
    let (state, events) = run(state, cancel(1));
    assert_eq!(events.len(), 1);
    assert!(active(&state).is_open());
}

#[test]
fn canceling_an_absent_seat_is_idempotent() {
    let state = with_confirmed(1, &["Kim"]);
    let (state, _) = run(state, cancel(1));
    assert_eq!(decide(&state, cancel(1), AT), Ok(vec![]));
    assert_eq!(decide(&state, cancel(42), AT), Ok(vec![]));
}

#[test]
fn a_pending_seat_cannot_be_canceled() {
    let (state, _) = run(registered(details(Some(5), 1)), reserve(1, "Kim"));
    assert_eq!(
        decide(&state, cancel(1), AT),
        Err(CourseRejection::NoSeat { course: course_id(), enrollment: enrollment(1) })
    );
}

#[test]
fn events_of_another_course_leave_the_course_unchanged() {
    let state = registered(details(Some(5), 1));
    let other = CourseId::assigned(8);
    let foreign = [
        Event::SeatReserved {
            course_id: other,
            enrollment_id: enrollment(1),
            student: student("Kim"),
            fee: fee(1),
            at_ms: AT,
        },
        Event::CourseDeleted { course_id: other, teacher: teacher(), name: details(None, 1).name, at_ms: AT },
    ];
    assert_eq!(fold(state.clone(), &foreign), state);
}

// ---- Random command sequences ----

const STUDENTS: [&str; 4] = ["Kim", "Choi", "Park", "Jung"];

fn any_command() -> impl Strategy<Value = CourseCommand> {
    let ids = 1u64..=6;
    prop_oneof![
        4 => (ids.clone(), 0..STUDENTS.len(), proptest::option::of(prop_oneof![Just(50_000i64), Just(60_000)]))
            .prop_map(|(n, s, expected)| CourseCommand::ReserveSeat {
                enrollment_id: enrollment(n),
                student: student(STUDENTS[s]),
                expected_fee: expected.map(fee),
                join: None,
            }),
        3 => ids.clone().prop_map(confirm),
        2 => ids.clone().prop_map(release),
        2 => ids.prop_map(cancel),
        1 => proptest::option::of(1i64..=5)
            .prop_map(|c| modify(CoursePatch { capacity: Some(c.map(capacity)), ..CoursePatch::default() })),
        1 => (1i64..=4)
            .prop_map(|m| modify(CoursePatch { min_students: Some(min_students(m)), ..CoursePatch::default() })),
        1 => prop_oneof![Just(50_000i64), Just(60_000)]
            .prop_map(|f| modify(CoursePatch { fee: Some(fee(f)), ..CoursePatch::default() })),
        1 => Just(CourseCommand::Delete),
    ]
}

fn check_invariants(state: &CourseState) -> Result<(), TestCaseError> {
    let course = match state {
        CourseState::Active(course) | CourseState::Deleted(course) => course,
        CourseState::Unregistered { .. } => return Err(TestCaseError::fail("course became unregistered")),
    };
    let confirmed = course.seats.values().filter(|seat| seat.confirmed).count() as u32;
    prop_assert_eq!(course.student_count, confirmed);
    if let Some(capacity) = course.details.capacity {
        prop_assert!(course.held() <= capacity.get(), "held {} > capacity {}", course.held(), capacity.get());
    }
    prop_assert_eq!(course.is_open(), course.student_count >= course.details.min_students.get());
    prop_assert_eq!(course.holders.len(), course.seats.len(), "one holder per seat, one seat per student");
    for (who, id) in &course.holders {
        prop_assert_eq!(course.seats.get(id).map(|seat| &seat.student), Some(who));
    }
    if matches!(state, CourseState::Deleted(_)) {
        prop_assert!(course.seats.is_empty());
    }
    Ok(())
}

proptest! {
    #[test]
    fn random_command_sequences_keep_the_seat_invariants(
        capacity_ in proptest::option::of(1i64..=4),
        min in 1i64..=3,
        commands in proptest::collection::vec(any_command(), 1..60),
    ) {
        let mut state = registered(details(capacity_, min));
        check_invariants(&state)?;
        for (step, command) in commands.into_iter().enumerate() {
            let at = AT + step as u64;
            let Ok(events) = decide(&state, command.clone(), at) else { continue };
            state = fold(state, &events);
            check_invariants(&state)?;
            if let Ok(again) = decide(&state, command.clone(), at + 1) {
                prop_assert!(again.is_empty(), "repeat of {:?} decided {:?}", command, again);
            }
        }
    }
}

#[test]
fn registering_under_another_id_is_not_found() {
    let state = CourseState::Unregistered { id: CourseId::assigned(99) };
    assert_eq!(
        decide(&state, register_command(details(Some(3), 1)), AT),
        Err(CourseRejection::NotFound(CourseId::assigned(99)))
    );
}

// ---- The waitlist ----

fn payment() -> StoredPayment {
    StoredPayment { pay_method: PayMethod::parse(None).unwrap(), pay_account: None, addr: None, telephone: None }
}

fn join(n: u64, who: &str, entry_id: u64) -> CourseCommand {
    CourseCommand::ReserveSeat {
        enrollment_id: enrollment(n),
        student: student(who),
        expected_fee: None,
        join: Some(Joining { entry_id, payment: payment() }),
    }
}

fn with_waitlist(capacity_: i64, waitlist: u32) -> CourseState {
    let command = CourseCommand::Register {
        id: course_id(),
        teacher: teacher(),
        details: details(Some(capacity_), 1),
        waitlist_capacity: waitlist,
    };
    run(CourseState::Unregistered { id: course_id() }, command).0
}

#[test]
fn a_full_course_takes_joins_up_to_its_waitlist_capacity_and_a_repeat_joins_nothing() {
    let state = with_waitlist(1, 2);
    let (state, _) = run(state, reserve(1, "Kim"));
    // Pending: not full yet, so no join either.
    assert_eq!(decide(&state, join(2, "Lee", 1), AT), Err(CourseRejection::AwaitingPayments { course: course_id() }));
    let (state, _) = run(state, confirm(1));
    let (state, events) = run(state, join(2, "Lee", 1));
    assert!(matches!(&events[..], [Event::WaitlistJoined { entry_id: 1, position: 1, .. }]), "{events:?}");
    assert_eq!(decide(&state, join(3, "Lee", 2), AT), Ok(vec![]), "joining again adds nothing");
    let (state, _) = run(state, join(4, "Park", 2));
    assert_eq!(
        decide(&state, join(5, "Choi", 3), AT),
        Err(CourseRejection::WaitlistFull { course: course_id(), capacity: 2 })
    );
    assert_eq!(active(&state).waitlist.waiting(), 2);
}

#[test]
fn a_cancellation_promotes_the_first_waiting_entry_in_the_same_decision() {
    let state = with_waitlist(1, 3);
    let (state, _) = run(state, reserve(1, "Kim"));
    let (state, _) = run(state, confirm(1));
    let (state, _) = run(state, join(2, "Lee", 1));
    let (state, _) = run(state, join(3, "Park", 2));
    let (state, events) = run(state, cancel(1));
    let key = promotion_key(1);
    assert!(events.iter().any(|e| matches!(e, Event::WaitlistPromoted { entry_id: 1, .. })), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, Event::SeatReserved { enrollment_id, .. } if *enrollment_id == key)));
    assert_eq!(active(&state).held(), 1, "the freed seat is held again at once");
    // Declined: Lee fails, Park is promoted in the same decision.
    let (state, events) =
        run(state, CourseCommand::ReleaseSeat { enrollment_id: key, reason: RejectReason::PaymentDeclined });
    assert!(events.iter().any(|e| matches!(e, Event::WaitlistFailed { entry_id: 1, .. })), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, Event::WaitlistPromoted { entry_id: 2, .. })), "{events:?}");
    // Approved: Park is enrolled.
    let confirm_park = CourseCommand::ConfirmSeat {
        reservation: promotion_key(2),
        enrollment_id: enrollment(9),
        completion: completion(),
    };
    let (state, events) = run(state, confirm_park);
    assert!(events.iter().any(
        |e| matches!(e, Event::WaitlistEnrolled { entry_id: 2, enrollment_id, .. } if *enrollment_id == enrollment(9))
    ));
    assert!(active(&state).waitlist.is_empty());
    assert_eq!(active(&state).student_count, 1);
}

#[test]
fn deleting_cancels_what_waits_and_leaving_ends_an_entry_once() {
    // A waiting entry with no seat held cannot arise from commands (a free
    // seat is given at once): build it from events, as a store could hold it.
    let state = fold(
        with_waitlist(1, 3),
        &[Event::WaitlistJoined {
            entry_id: 4,
            course_id: course_id(),
            course_name: details(None, 1).name,
            student: student("Lee"),
            position: 1,
            at_ms: AT,
        }],
    );
    let events = decide(&state, CourseCommand::Delete, AT).unwrap();
    assert!(
        matches!(&events[..], [Event::WaitlistCanceled { entry_id: 4, .. }, Event::CourseDeleted { .. }]),
        "{events:?}"
    );
    let (left, events) = run(state, CourseCommand::LeaveWaitlist { entry_id: 4 });
    assert!(matches!(&events[..], [Event::WaitlistLeft { entry_id: 4, .. }]));
    assert_eq!(decide(&left, CourseCommand::LeaveWaitlist { entry_id: 4 }, AT), Ok(vec![]));
}

/// One step of registration day, chosen against the state it meets.
#[derive(Clone, Debug)]
enum Day {
    /// A student asks for a seat, joining the waitlist if asked and full.
    Enroll {
        student: usize,
        join: bool,
    },
    /// The k-th pending payment is approved.
    Approve(usize),
    /// The k-th pending payment is declined (or unavailable).
    Decline(usize),
    /// The k-th completed enrollment is canceled.
    Cancel(usize),
    Capacity(Option<i64>),
    WaitlistCapacity(u32),
    /// The k-th live entry leaves.
    Leave(usize),
}

const DAY_STUDENTS: [&str; 7] = ["Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Yoon"];

fn any_day() -> impl Strategy<Value = Day> {
    prop_oneof![
        5 => (0..DAY_STUDENTS.len(), any::<bool>()).prop_map(|(student, join)| Day::Enroll { student, join }),
        3 => (0usize..8).prop_map(Day::Approve),
        2 => (0usize..8).prop_map(Day::Decline),
        2 => (0usize..8).prop_map(Day::Cancel),
        1 => proptest::option::of(1i64..=4).prop_map(Day::Capacity),
        1 => (0u32..=3).prop_map(Day::WaitlistCapacity),
        1 => (0usize..8).prop_map(Day::Leave),
    ]
}

/// What the whole day recorded, for the checks across steps.
#[derive(Default)]
struct Ledger {
    next_key: u64,
    next_entry: u64,
    next_enrollment: u64,
    /// Entry ids in the order they were promoted.
    promoted: Vec<u64>,
    /// Entry id → the enrollment it became.
    enrolled: HashMap<u64, EnrollmentId>,
    /// Enrollment id → the student of its completion (each completes once).
    completed: HashMap<EnrollmentId, StudentName>,
}

impl Ledger {
    /// The command a step means in `course`, if it means one.
    fn command(&mut self, course: &Course, day: &Day) -> Option<CourseCommand> {
        let pending: Vec<EnrollmentId> = course.seats.iter().filter(|(_, s)| !s.confirmed).map(|(&id, _)| id).collect();
        let confirmed: Vec<EnrollmentId> =
            course.seats.iter().filter(|(_, s)| s.confirmed).map(|(&id, _)| id).collect();
        let pick = |ids: &[EnrollmentId], k: usize| (!ids.is_empty()).then(|| ids[k % ids.len()]);
        Some(match *day {
            Day::Enroll { student: s, join } => {
                self.next_key += 1;
                CourseCommand::ReserveSeat {
                    enrollment_id: enrollment(self.next_key),
                    student: student(DAY_STUDENTS[s]),
                    expected_fee: None,
                    join: join.then(|| Joining { entry_id: self.next_entry + 1, payment: payment() }),
                }
            }
            Day::Approve(k) => {
                let reservation = pick(&pending, k)?;
                self.next_enrollment += 1;
                CourseCommand::ConfirmSeat {
                    reservation,
                    enrollment_id: EnrollmentId::assigned(10_000 + self.next_enrollment),
                    completion: completion(),
                }
            }
            Day::Decline(k) => {
                CourseCommand::ReleaseSeat { enrollment_id: pick(&pending, k)?, reason: RejectReason::PaymentDeclined }
            }
            Day::Cancel(k) => CourseCommand::CancelSeat { enrollment_id: pick(&confirmed, k)? },
            Day::Capacity(c) => modify(CoursePatch { capacity: Some(c.map(capacity)), ..CoursePatch::default() }),
            Day::WaitlistCapacity(c) => modify(CoursePatch { waitlist_capacity: Some(c), ..CoursePatch::default() }),
            Day::Leave(k) => {
                let live: Vec<u64> = course.waitlist.entries().map(|(id, _)| id).collect();
                CourseCommand::LeaveWaitlist { entry_id: *live.get(k % live.len().max(1))? }
            }
        })
    }

    /// Records what the events say, checking what must hold across steps.
    fn record(&mut self, before: &Course, events: &[Event]) -> Result<(), TestCaseError> {
        for event in events {
            match event {
                Event::WaitlistJoined { entry_id, .. } => {
                    prop_assert_eq!(*entry_id, self.next_entry + 1, "dense entry ids");
                    self.next_entry = *entry_id;
                }
                Event::WaitlistPromoted { entry_id, student, .. } => {
                    let first_waiting =
                        before.waitlist.entries().find(|(id, e)| e.promoted.is_none() && !self.promoted.contains(id));
                    prop_assert_eq!(first_waiting.map(|(id, _)| id), Some(*entry_id), "promotions in FIFO order");
                    prop_assert_eq!(before.waitlist.get(*entry_id).map(|e| &e.student), Some(student));
                    self.promoted.push(*entry_id);
                }
                Event::EnrollmentCompleted { enrollment_id, student, .. } => {
                    prop_assert!(self.completed.insert(*enrollment_id, student.clone()).is_none(), "completed once");
                }
                Event::WaitlistEnrolled { entry_id, enrollment_id, student, .. } => {
                    prop_assert!(
                        self.enrolled.insert(*entry_id, *enrollment_id).is_none(),
                        "an entry is enrolled once"
                    );
                    prop_assert_eq!(
                        self.completed.get(enrollment_id),
                        Some(student),
                        "with its own completed enrollment"
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn course_of(state: &CourseState) -> &Course {
    match state {
        CourseState::Active(course) | CourseState::Deleted(course) => course,
        CourseState::Unregistered { .. } => panic!("the course is registered"),
    }
}

/// What holds after every step: never over capacity, never a free seat
/// while someone waits, promoted entries hold their seat, the waitlist
/// within its capacity unless it was lowered.
fn check_day(state: &CourseState) -> Result<(), TestCaseError> {
    check_invariants(state)?;
    let course = course_of(state);
    let waiting = course.waitlist.waiting();
    if waiting > 0 {
        prop_assert_eq!(course.free(course.details.capacity), 0, "a free seat while {} wait", waiting);
    }
    prop_assert_eq!(
        course.waitlist.entries().filter(|(_, e)| e.promoted.is_none()).count() as u32,
        waiting,
        "the waiting count agrees with the entries"
    );
    for (id, entry) in course.waitlist.entries() {
        prop_assert_eq!(course.waitlist.entry_of(&entry.student), Some(id), "the student index agrees");
        if let Some(key) = entry.promoted {
            prop_assert_eq!(key, promotion_key(id));
            prop_assert_eq!(course.seats.get(&key).map(|s| (&s.student, s.confirmed)), Some((&entry.student, false)));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn registration_day_keeps_the_waitlist_invariants(
        capacity_ in 1i64..=3,
        waitlist in 0u32..=3,
        days in proptest::collection::vec(any_day(), 1..80),
    ) {
        let mut state = with_waitlist(capacity_, waitlist);
        let mut ledger = Ledger::default();
        for (step, day) in days.iter().enumerate() {
            let Some(command) = ledger.command(course_of(&state), day) else { continue };
            let Ok(events) = decide(&state, command, AT + step as u64) else { continue };
            ledger.record(course_of(&state), &events)?;
            state = fold(state, &events);
            check_day(&state)?;
        }
        // Settle: every payment in progress is approved.
        while let Some((&reservation, _)) = course_of(&state).seats.iter().find(|(_, s)| !s.confirmed) {
            ledger.next_enrollment += 1;
            let enrollment_id = EnrollmentId::assigned(10_000 + ledger.next_enrollment);
            let events = decide(&state, CourseCommand::ConfirmSeat { reservation, enrollment_id, completion: completion() }, AT)
                .map_err(|r| TestCaseError::fail(format!("confirming {reservation}: {r}")))?;
            ledger.record(course_of(&state), &events)?;
            state = fold(state, &events);
            check_day(&state)?;
        }
        let course = course_of(&state);
        if course.waitlist.waiting() > 0 {
            prop_assert_eq!(course.free(course.details.capacity), 0, "settled with a free seat and someone waiting");
        }
        for (entry, enrollment_id) in &ledger.enrolled {
            prop_assert!(ledger.promoted.contains(entry));
            prop_assert!(course.seats.get(enrollment_id).is_none_or(|s| s.confirmed));
        }
    }
}
