//! The Course aggregate: its commands, events, state and rejections, and the
//! two pure functions `decide` and `apply`.
//!
//! The course is the only place seats are counted: a seat is reserved,
//! confirmed and released by enrollment id, idempotently, so the actor around
//! it serialises seat reservation (no overbooking, no locks). A pending seat
//! is held under its saga's reservation key; confirming it moves it under the
//! enrollment's public id (dense, assigned at completion: see
//! [`actor::EnrollmentIds`]). No I/O, no clock
//! reads, no actor types here; the actor in `actor.rs` persists and replies.

pub(crate) mod actor;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::event::{CourseDetails, Event, RejectReason};
use crate::model::{Capacity, CourseId, EnrollmentId, Fee, MinStudents, PayMethod, StudentName, TeacherName, TextBook};

/// A registered course, with its held seats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Course {
    pub id: CourseId,
    /// Who owns the course: only they (or an admin) may change it.
    pub teacher: TeacherName,
    pub details: CourseDetails,
    /// Seats held, by enrollment: pending (reserved, being paid for) or
    /// confirmed (a completed enrollment).
    pub seats: BTreeMap<EnrollmentId, Seat>,
    /// Confirmed seats: the API's studentCount. Kept by `apply`.
    pub student_count: u32,
    /// Which enrollment holds each student's seat: one per student.
    pub holders: HashMap<StudentName, EnrollmentId>,
    pub registered_at_ms: u64,
}

impl Course {
    /// `openYn`: the course runs once enough students completed enrollment.
    pub fn is_open(&self) -> bool {
        self.student_count >= self.details.min_students.get()
    }

    /// Seats held, pending or confirmed: what capacity is checked against.
    pub fn held(&self) -> u32 {
        self.seats.len() as u32
    }

    /// Seats held by payments in progress: each may still be released.
    pub fn pending(&self) -> u32 {
        self.held() - self.student_count
    }

    /// The enrollment a saga's seat already became: `Some` when the seat
    /// reserved under `reservation` is no longer pending because `student`'s
    /// seat in this course is confirmed (a repeated confirmation). A student
    /// holds one seat per course, so while the saga's seat was pending no
    /// other enrollment of theirs could have taken one here.
    pub fn completed_as(&self, reservation: EnrollmentId, student: &StudentName) -> Option<EnrollmentId> {
        if self.seats.contains_key(&reservation) {
            return None;
        }
        let held = *self.holders.get(student)?;
        self.seats.get(&held).is_some_and(|seat| seat.confirmed).then_some(held)
    }
}

/// One held seat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seat {
    pub student: StudentName,
    /// The fee the enrollment pays: the course's fee when the seat was taken.
    pub fee: Fee,
    pub confirmed: bool,
}

/// The lifecycle of a course.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CourseState {
    /// Nothing registered under this id (yet).
    Unregistered {
        id: CourseId,
    },
    Active(Course),
    /// Kept so the id is never reused and old enrollments keep their course.
    Deleted(Course),
}

/// A change to a course's details; absent fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoursePatch {
    pub name: Option<crate::model::CourseName>,
    pub fee: Option<Fee>,
    /// `Some(None)` removes the textbook.
    pub text_book: Option<Option<TextBook>>,
    /// `Some(None)` makes the course unlimited.
    pub capacity: Option<Option<Capacity>>,
    pub min_students: Option<MinStudents>,
}

/// What the completion of an enrollment needs to say in its event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub pay_method: PayMethod,
    pub addr: Option<String>,
    pub telephone: Option<String>,
}

/// What can be asked of a course.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CourseCommand {
    Register {
        id: CourseId,
        teacher: TeacherName,
        details: CourseDetails,
    },
    Modify(CoursePatch),
    Delete,
    /// Saga step 1: hold a seat for an enrollment. `expected_fee` is the fee
    /// the client saw, if it sent one.
    ReserveSeat {
        enrollment_id: EnrollmentId,
        student: StudentName,
        expected_fee: Option<Fee>,
    },
    /// Saga step 3: the fee is paid; the seat held under `reservation` (the
    /// saga's key) becomes the completed enrollment `enrollment_id`, the next
    /// public id, which the course actor assigns just before deciding (see
    /// [`actor::EnrollmentIds`]).
    ConfirmSeat {
        reservation: EnrollmentId,
        enrollment_id: EnrollmentId,
        completion: Completion,
    },
    /// The saga was refused or interrupted: give a pending seat back.
    ReleaseSeat {
        enrollment_id: EnrollmentId,
        reason: RejectReason,
    },
    /// A completed enrollment is canceled: give its confirmed seat back.
    CancelSeat {
        enrollment_id: EnrollmentId,
    },
}

impl CourseCommand {
    /// The enrollment whose seat the command is about, if it is a seat command.
    pub fn enrollment_id(&self) -> Option<EnrollmentId> {
        match self {
            CourseCommand::ReserveSeat { enrollment_id, .. }
            | CourseCommand::ConfirmSeat { enrollment_id, .. }
            | CourseCommand::ReleaseSeat { enrollment_id, .. }
            | CourseCommand::CancelSeat { enrollment_id } => Some(*enrollment_id),
            CourseCommand::Register { .. } | CourseCommand::Modify(_) | CourseCommand::Delete => None,
        }
    }
}

/// Why a course refuses a command. A reply, never a fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CourseRejection {
    #[error("course {0} does not exist")]
    NotFound(CourseId),
    #[error("course {0} already exists")]
    AlreadyRegistered(CourseId),
    #[error("course {course} is full ({capacity} seats)")]
    Full { course: CourseId, capacity: u32 },
    #[error("student {student} already holds an enrollment in course {course}")]
    AlreadyEnrolled { course: CourseId, student: StudentName, enrollment: EnrollmentId },
    #[error("the fee is {actual} won, not {expected}")]
    StaleFee { expected: Fee, actual: Fee },
    #[error("capacity {capacity} is below the {held} seats taken")]
    CapacityBelowStudents { capacity: u32, held: u32 },
    #[error("course {course} has {count} enrollments")]
    HasEnrollments { course: CourseId, count: u32 },
    #[error("enrollment {enrollment} holds no seat in course {course}")]
    NoSeat { course: CourseId, enrollment: EnrollmentId },
    /// Every free seat is held by a payment in progress: not "full" yet,
    /// since one may be released. The course actor parks the request until
    /// one is (or every one completes); a client never sees this.
    #[error("every seat of course {course} is held by a payment in progress")]
    AwaitingPayments { course: CourseId },
}

/// Decides what a command means for the course: the events it causes, or
/// why it is refused. An idempotent repeat yields no events.
pub fn decide(state: &CourseState, command: CourseCommand, at_ms: u64) -> Result<Vec<Event>, CourseRejection> {
    match state {
        CourseState::Unregistered { id } => match command {
            CourseCommand::Register { id: new_id, teacher, details } if new_id == *id => {
                Ok(vec![Event::CourseRegistered { course_id: new_id, teacher, details, at_ms }])
            }
            _ => Err(CourseRejection::NotFound(*id)),
        },
        CourseState::Deleted(course) => match command {
            CourseCommand::Register { .. } => register_again(course, command),
            CourseCommand::Delete => Ok(vec![]),
            CourseCommand::ReleaseSeat { enrollment_id, .. } | CourseCommand::CancelSeat { enrollment_id }
                if !course.seats.contains_key(&enrollment_id) =>
            {
                Ok(vec![])
            }
            _ => Err(CourseRejection::NotFound(course.id)),
        },
        CourseState::Active(course) => decide_active(course, command, at_ms),
    }
}

/// Registering an existing course again is an idempotent repeat when it is
/// the same course, and a conflict otherwise.
fn register_again(course: &Course, command: CourseCommand) -> Result<Vec<Event>, CourseRejection> {
    match command {
        CourseCommand::Register { id, teacher, details }
            if course.id == id && course.teacher == teacher && course.details == details =>
        {
            Ok(vec![])
        }
        _ => Err(CourseRejection::AlreadyRegistered(course.id)),
    }
}

fn decide_active(course: &Course, command: CourseCommand, at_ms: u64) -> Result<Vec<Event>, CourseRejection> {
    let id = course.id;
    match command {
        CourseCommand::Register { .. } => register_again(course, command),
        CourseCommand::Modify(patch) => {
            let before = course.details.clone();
            let mut after = before.clone();
            if let Some(name) = patch.name {
                after.name = name;
            }
            if let Some(fee) = patch.fee {
                after.fee = fee;
            }
            if let Some(text_book) = patch.text_book {
                after.text_book = text_book;
            }
            if let Some(capacity) = patch.capacity {
                after.capacity = capacity;
            }
            if let Some(min_students) = patch.min_students {
                after.min_students = min_students;
            }
            if let Some(capacity) = after.capacity
                && capacity.get() < course.held()
            {
                return Err(CourseRejection::CapacityBelowStudents { capacity: capacity.get(), held: course.held() });
            }
            if after == before {
                return Ok(vec![]);
            }
            let was_open = course.is_open();
            let is_open = course.student_count >= after.min_students.get();
            let mut events = vec![Event::CourseModified {
                course_id: id,
                teacher: course.teacher.clone(),
                before,
                after: after.clone(),
                student_count: course.student_count,
                at_ms,
            }];
            events.extend(open_transition(course, &after, was_open, is_open, course.student_count, at_ms));
            Ok(events)
        }
        CourseCommand::Delete => {
            if course.held() > 0 {
                return Err(CourseRejection::HasEnrollments { course: id, count: course.held() });
            }
            Ok(vec![Event::CourseDeleted {
                course_id: id,
                teacher: course.teacher.clone(),
                name: course.details.name.clone(),
                at_ms,
            }])
        }
        CourseCommand::ReserveSeat { enrollment_id, student, expected_fee } => {
            if let Some(seat) = course.seats.get(&enrollment_id) {
                return if seat.student == student {
                    Ok(vec![])
                } else {
                    // Names the student who holds the seat, not the asker.
                    Err(CourseRejection::AlreadyEnrolled {
                        course: id,
                        student: seat.student.clone(),
                        enrollment: enrollment_id,
                    })
                };
            }
            if let Some(&holder) = course.holders.get(&student) {
                return Err(CourseRejection::AlreadyEnrolled { course: id, student, enrollment: holder });
            }
            if let Some(expected) = expected_fee
                && expected != course.details.fee
            {
                return Err(CourseRejection::StaleFee { expected, actual: course.details.fee });
            }
            if let Some(capacity) = course.details.capacity
                && course.held() >= capacity.get()
            {
                // "Full" is the truth: while a seat may still be released,
                // the request waits for it.
                if course.pending() > 0 {
                    return Err(CourseRejection::AwaitingPayments { course: id });
                }
                return Err(CourseRejection::Full { course: id, capacity: capacity.get() });
            }
            Ok(vec![Event::SeatReserved { course_id: id, enrollment_id, student, fee: course.details.fee, at_ms }])
        }
        CourseCommand::ConfirmSeat { reservation, enrollment_id, completion } => {
            let seat = course
                .seats
                .get(&reservation)
                .ok_or(CourseRejection::NoSeat { course: id, enrollment: reservation })?;
            if seat.confirmed {
                return Ok(vec![]);
            }
            let count = course.student_count + 1;
            let mut events = vec![Event::EnrollmentCompleted {
                enrollment_id,
                course_id: id,
                course_name: course.details.name.clone(),
                teacher: course.teacher.clone(),
                student: seat.student.clone(),
                fee: seat.fee,
                text_book: course.details.text_book.clone(),
                pay_method: completion.pay_method,
                addr: completion.addr,
                telephone: completion.telephone,
                student_count: count,
                at_ms,
            }];
            let opens = count >= course.details.min_students.get();
            events.extend(open_transition(course, &course.details, course.is_open(), opens, count, at_ms));
            Ok(events)
        }
        CourseCommand::ReleaseSeat { enrollment_id, reason } => match course.seats.get(&enrollment_id) {
            None => Ok(vec![]),
            Some(seat) if seat.confirmed => Err(CourseRejection::NoSeat { course: id, enrollment: enrollment_id }),
            Some(seat) => Ok(vec![
                Event::SeatReleased { course_id: id, enrollment_id, student: seat.student.clone(), reason, at_ms },
                Event::EnrollmentRejected {
                    enrollment_id,
                    course_id: id,
                    student: seat.student.clone(),
                    reason,
                    at_ms,
                },
            ]),
        },
        CourseCommand::CancelSeat { enrollment_id } => match course.seats.get(&enrollment_id) {
            None => Ok(vec![]),
            Some(seat) if !seat.confirmed => Err(CourseRejection::NoSeat { course: id, enrollment: enrollment_id }),
            Some(seat) => {
                let count = course.student_count - 1;
                let mut events = vec![Event::EnrollmentCanceled {
                    enrollment_id,
                    course_id: id,
                    course_name: course.details.name.clone(),
                    teacher: course.teacher.clone(),
                    student: seat.student.clone(),
                    fee: seat.fee,
                    student_count: count,
                    at_ms,
                }];
                let opens = count >= course.details.min_students.get();
                events.extend(open_transition(course, &course.details, course.is_open(), opens, count, at_ms));
                Ok(events)
            }
        },
    }
}

fn open_transition(
    course: &Course,
    details: &CourseDetails,
    was_open: bool,
    is_open: bool,
    student_count: u32,
    at_ms: u64,
) -> Option<Event> {
    let (course_id, teacher, name) = (course.id, course.teacher.clone(), details.name.clone());
    match (was_open, is_open) {
        (false, true) => Some(Event::CourseOpened { course_id, teacher, name, student_count, at_ms }),
        (true, false) => Some(Event::CourseClosed { course_id, teacher, name, student_count, at_ms }),
        _ => None,
    }
}

/// Applies an event to the course. Total: events about other courses, or
/// that do not concern courses, leave it as it is.
pub fn apply(state: CourseState, event: &Event) -> CourseState {
    match (state, event) {
        (CourseState::Unregistered { id }, Event::CourseRegistered { course_id, teacher, details, at_ms })
            if id == *course_id =>
        {
            CourseState::Active(Course {
                id: *course_id,
                teacher: teacher.clone(),
                details: details.clone(),
                seats: BTreeMap::new(),
                student_count: 0,
                holders: HashMap::new(),
                registered_at_ms: *at_ms,
            })
        }
        (CourseState::Active(mut course), event) => {
            match event {
                Event::CourseModified { course_id, after, .. } if *course_id == course.id => {
                    course.details = after.clone();
                }
                Event::CourseDeleted { course_id, .. } if *course_id == course.id => {
                    return CourseState::Deleted(course);
                }
                Event::SeatReserved { course_id, enrollment_id, student, fee, .. } if *course_id == course.id => {
                    course.holders.insert(student.clone(), *enrollment_id);
                    course.seats.insert(*enrollment_id, Seat { student: student.clone(), fee: *fee, confirmed: false });
                }
                // The student's pending seat (held under the saga's
                // reservation key) is confirmed under the enrollment's id.
                Event::EnrollmentCompleted { course_id, enrollment_id, student, .. } if *course_id == course.id => {
                    if let Some(&held) = course.holders.get(student)
                        && course.seats.get(&held).is_some_and(|seat| !seat.confirmed)
                        && let Some(mut seat) = course.seats.remove(&held)
                    {
                        seat.confirmed = true;
                        course.seats.insert(*enrollment_id, seat);
                        course.holders.insert(student.clone(), *enrollment_id);
                        course.student_count += 1;
                    }
                }
                Event::SeatReleased { course_id, enrollment_id, .. }
                | Event::EnrollmentCanceled { course_id, enrollment_id, .. }
                    if *course_id == course.id =>
                {
                    if let Some(seat) = course.seats.remove(enrollment_id) {
                        course.holders.remove(&seat.student);
                        if seat.confirmed {
                            course.student_count -= 1;
                        }
                    }
                }
                _ => {}
            }
            CourseState::Active(course)
        }
        (state, _) => state,
    }
}

#[cfg(test)]
mod tests;
