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
//!
//! # The waitlist
//!
//! The course also owns its waitlist, so a seat that frees (a cancellation,
//! a capacity raise, a pending seat released) goes to the first waiting
//! entry in the decision that frees it: the same events, so the same
//! journal batch. The promoted entry's saga holds the seat under
//! [`promotion_key`] of its entry id, a key of its own range, and charges
//! the account stored with the entry; its seat confirmed, the entry is
//! `ENROLLED`; its seat released (declined, unavailable), the entry is
//! `FAILED` and the seat passes to the next entry the same way.

pub(crate) mod actor;
pub(crate) mod queries;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::event::{CourseDetails, Event, RejectReason};
use crate::model::{Capacity, CourseId, EnrollmentId, Fee, MinStudents, PayMethod, StudentName, TeacherName, TextBook};

/// Where the saga keys of waitlist promotions start: above every saga
/// reservation key (from 2^48, see `system`) and below 2^53.
pub(crate) const PROMOTION_BASE: u64 = 1 << 50;

/// The saga key under which waitlist entry `entry_id`'s promoted seat is
/// held: one per entry (an entry is promoted at most once), never reused.
pub(crate) fn promotion_key(entry_id: u64) -> EnrollmentId {
    EnrollmentId::assigned(PROMOTION_BASE + entry_id)
}

/// The waitlist entry a saga key promotes, if it is a promotion's.
pub(crate) fn promoted_entry(key: EnrollmentId) -> Option<u64> {
    key.get().checked_sub(PROMOTION_BASE).filter(|&id| id > 0)
}

/// A course's waitlist: its capacity and its live entries. Changed only
/// through [`Waitlist::insert`], [`Waitlist::promote`] and
/// [`Waitlist::remove`], which keep its indexes, so each question a seat
/// request asks of it costs O(1) or O(log n) however long it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Waitlist {
    /// How many may wait at once; 0: no waitlist.
    pub capacity: u32,
    /// Entries waiting or being enrolled, by id: arrival order.
    entries: BTreeMap<u64, WaitEntry>,
    /// The live entry of each student (at most one per course).
    by_student: HashMap<StudentName, u64>,
    /// The entries given a seat (their sagas run), by id.
    promoted: std::collections::BTreeSet<u64>,
}

impl Waitlist {
    /// Entries still waiting for a seat.
    pub fn waiting(&self) -> u32 {
        (self.entries.len() - self.promoted.len()) as u32
    }

    /// Live entries: waiting, or given a seat and being enrolled.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The live entries, in arrival order.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &WaitEntry)> {
        self.entries.iter().map(|(&id, e)| (id, e))
    }

    pub fn get(&self, entry_id: u64) -> Option<&WaitEntry> {
        self.entries.get(&entry_id)
    }

    /// The live entry of `student`, if any.
    pub fn entry_of(&self, student: &StudentName) -> Option<u64> {
        self.by_student.get(student).copied()
    }

    /// The first `n` entries still waiting, in arrival order.
    fn first_waiting(&self, n: usize) -> impl Iterator<Item = (u64, &WaitEntry)> {
        self.entries().filter(|(_, e)| e.promoted.is_none()).take(n)
    }

    pub(crate) fn insert(&mut self, entry_id: u64, entry: WaitEntry) {
        self.by_student.insert(entry.student.clone(), entry_id);
        if entry.promoted.is_some() {
            self.promoted.insert(entry_id);
        }
        self.entries.insert(entry_id, entry);
    }

    fn promote(&mut self, entry_id: u64, reservation: EnrollmentId) {
        if let Some(entry) = self.entries.get_mut(&entry_id) {
            entry.promoted = Some(reservation);
            self.promoted.insert(entry_id);
        }
    }

    fn remove(&mut self, entry_id: u64) {
        if let Some(entry) = self.entries.remove(&entry_id) {
            self.by_student.remove(&entry.student);
            self.promoted.remove(&entry_id);
        }
    }
}

/// A live waitlist entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitEntry {
    pub student: StudentName,
    /// Set once a seat was given to it: the key its saga holds the seat under.
    pub promoted: Option<EnrollmentId>,
}

/// What a waitlist entry keeps of the request that joined: consent to be
/// enrolled, and charged, when a seat frees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPayment {
    pub pay_method: PayMethod,
    pub pay_account: Option<String>,
    pub addr: Option<String>,
    pub telephone: Option<String>,
}

/// A seat request that joins the waitlist if the course is full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joining {
    /// The id a new entry gets: assigned by the course actor just before
    /// deciding (dense, like enrollment ids).
    pub entry_id: u64,
    pub payment: StoredPayment,
}

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
    pub waitlist: Waitlist,
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

    /// Seats free now (`u32::MAX` for an unlimited course).
    pub fn free(&self, capacity: Option<Capacity>) -> u32 {
        capacity.map_or(u32::MAX, |c| c.get().saturating_sub(self.held()))
    }

    /// Gives up to `seats` freed seats to the first waiting entries: each
    /// one's saga holds a seat at the current fee under its promotion key.
    fn promote(&self, seats: u32, at_ms: u64) -> Vec<Event> {
        // Promoted entries come first (they are the oldest): skipping them
        // costs at most the seats held by payments in progress.
        self.waitlist
            .first_waiting(seats as usize)
            .flat_map(|(entry_id, entry)| {
                let reservation = promotion_key(entry_id);
                let student = entry.student.clone();
                [
                    Event::WaitlistPromoted {
                        entry_id,
                        course_id: self.id,
                        student: student.clone(),
                        reservation,
                        at_ms,
                    },
                    Event::SeatReserved {
                        course_id: self.id,
                        enrollment_id: reservation,
                        student,
                        fee: self.details.fee,
                        at_ms,
                    },
                ]
            })
            .collect()
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
    pub waitlist_capacity: Option<u32>,
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
        waitlist_capacity: u32,
    },
    Modify(CoursePatch),
    Delete,
    /// Saga step 1: hold a seat for an enrollment. `expected_fee` is the fee
    /// the client saw, if it sent one.
    ReserveSeat {
        enrollment_id: EnrollmentId,
        student: StudentName,
        expected_fee: Option<Fee>,
        /// Join the waitlist instead of being refused when the course is full.
        join: Option<Joining>,
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
    /// A student leaves the waitlist.
    LeaveWaitlist {
        entry_id: u64,
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
            CourseCommand::Register { .. }
            | CourseCommand::Modify(_)
            | CourseCommand::Delete
            | CourseCommand::LeaveWaitlist { .. } => None,
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
    #[error("course {course} is full, and so is its waitlist ({capacity} places)")]
    WaitlistFull { course: CourseId, capacity: u32 },
    #[error("waitlist entry {entry} is being enrolled: a seat was given to it")]
    BeingEnrolled { entry: u64 },
}

/// Decides what a command means for the course: the events it causes, or
/// why it is refused. An idempotent repeat yields no events.
pub fn decide(state: &CourseState, command: CourseCommand, at_ms: u64) -> Result<Vec<Event>, CourseRejection> {
    match state {
        CourseState::Unregistered { id } => match command {
            CourseCommand::Register { id: new_id, teacher, details, waitlist_capacity } if new_id == *id => {
                let mut events = vec![Event::CourseRegistered { course_id: new_id, teacher, details, at_ms }];
                if waitlist_capacity > 0 {
                    events.push(Event::WaitlistCapacitySet {
                        course_id: new_id,
                        before: 0,
                        after: waitlist_capacity,
                        at_ms,
                    });
                }
                Ok(events)
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
            CourseCommand::LeaveWaitlist { .. } => Ok(vec![]),
            _ => Err(CourseRejection::NotFound(course.id)),
        },
        CourseState::Active(course) => decide_active(course, command, at_ms),
    }
}

/// Registering an existing course again is an idempotent repeat when it is
/// the same course, and a conflict otherwise.
fn register_again(course: &Course, command: CourseCommand) -> Result<Vec<Event>, CourseRejection> {
    match command {
        CourseCommand::Register { id, teacher, details, waitlist_capacity }
            if course.id == id
                && course.teacher == teacher
                && course.details == details
                && course.waitlist.capacity == waitlist_capacity =>
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
            let waitlist_before = course.waitlist.capacity;
            let waitlist_after = patch.waitlist_capacity.unwrap_or(waitlist_before);
            let mut events = Vec::new();
            if waitlist_after != waitlist_before {
                events.push(Event::WaitlistCapacitySet {
                    course_id: id,
                    before: waitlist_before,
                    after: waitlist_after,
                    at_ms,
                });
            }
            if after != before {
                let was_open = course.is_open();
                let is_open = course.student_count >= after.min_students.get();
                events.push(Event::CourseModified {
                    course_id: id,
                    teacher: course.teacher.clone(),
                    before,
                    after: after.clone(),
                    student_count: course.student_count,
                    at_ms,
                });
                events.extend(open_transition(course, &after, was_open, is_open, course.student_count, at_ms));
                // New seats go to the waitlist first.
                events.extend(course.promote(course.free(after.capacity), at_ms));
            }
            Ok(events)
        }
        CourseCommand::Delete => {
            if course.held() > 0 {
                return Err(CourseRejection::HasEnrollments { course: id, count: course.held() });
            }
            // The entries go before the course does (a deleted course
            // applies nothing more).
            let mut events: Vec<Event> = course
                .waitlist
                .entries()
                .map(|(entry_id, entry)| Event::WaitlistCanceled {
                    entry_id,
                    course_id: id,
                    course_name: course.details.name.clone(),
                    student: entry.student.clone(),
                    at_ms,
                })
                .collect();
            events.push(Event::CourseDeleted {
                course_id: id,
                teacher: course.teacher.clone(),
                name: course.details.name.clone(),
                at_ms,
            });
            Ok(events)
        }
        CourseCommand::ReserveSeat { enrollment_id, student, expected_fee, join } => {
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
                let Some(joining) = join else {
                    return Err(CourseRejection::Full { course: id, capacity: capacity.get() });
                };
                let waitlist = &course.waitlist;
                if waitlist.entry_of(&student).is_some() {
                    // Joining again answers the entry it has.
                    return Ok(vec![]);
                }
                if waitlist.capacity == 0 {
                    return Err(CourseRejection::Full { course: id, capacity: capacity.get() });
                }
                let waiting = waitlist.waiting();
                if waiting >= waitlist.capacity {
                    return Err(CourseRejection::WaitlistFull { course: id, capacity: waitlist.capacity });
                }
                return Ok(vec![Event::WaitlistJoined {
                    entry_id: joining.entry_id,
                    course_id: id,
                    course_name: course.details.name.clone(),
                    student,
                    position: waiting + 1,
                    at_ms,
                }]);
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
            if let Some(entry_id) = promoted_entry(reservation)
                && course.waitlist.get(entry_id).is_some()
            {
                events.push(Event::WaitlistEnrolled {
                    entry_id,
                    course_id: id,
                    course_name: course.details.name.clone(),
                    student: seat.student.clone(),
                    enrollment_id,
                    at_ms,
                });
            }
            Ok(events)
        }
        CourseCommand::ReleaseSeat { enrollment_id, reason } => match course.seats.get(&enrollment_id) {
            None => Ok(vec![]),
            Some(seat) if seat.confirmed => Err(CourseRejection::NoSeat { course: id, enrollment: enrollment_id }),
            Some(seat) => {
                let mut events = vec![
                    Event::SeatReleased { course_id: id, enrollment_id, student: seat.student.clone(), reason, at_ms },
                    Event::EnrollmentRejected {
                        enrollment_id,
                        course_id: id,
                        student: seat.student.clone(),
                        reason,
                        at_ms,
                    },
                ];
                if let Some(entry_id) = promoted_entry(enrollment_id)
                    && course.waitlist.get(entry_id).is_some()
                {
                    events.push(Event::WaitlistFailed {
                        entry_id,
                        course_id: id,
                        course_name: course.details.name.clone(),
                        student: seat.student.clone(),
                        reason,
                        at_ms,
                    });
                }
                // The freed seat goes to the first in line, in this batch.
                events.extend(course.promote(course.free(course.details.capacity).saturating_add(1), at_ms));
                Ok(events)
            }
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
                // The freed seat goes to the first in line, in this batch.
                events.extend(course.promote(course.free(course.details.capacity).saturating_add(1), at_ms));
                Ok(events)
            }
        },
        CourseCommand::LeaveWaitlist { entry_id } => match course.waitlist.get(entry_id) {
            None => Ok(vec![]),
            Some(entry) if entry.promoted.is_some() => Err(CourseRejection::BeingEnrolled { entry: entry_id }),
            Some(entry) => {
                Ok(vec![Event::WaitlistLeft { entry_id, course_id: id, student: entry.student.clone(), at_ms }])
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
                waitlist: Waitlist::default(),
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
                Event::WaitlistCapacitySet { course_id, after, .. } if *course_id == course.id => {
                    course.waitlist.capacity = *after;
                }
                Event::WaitlistJoined { course_id, entry_id, student, .. } if *course_id == course.id => {
                    course.waitlist.insert(*entry_id, WaitEntry { student: student.clone(), promoted: None });
                }
                Event::WaitlistPromoted { course_id, entry_id, reservation, .. } if *course_id == course.id => {
                    course.waitlist.promote(*entry_id, *reservation);
                }
                Event::WaitlistEnrolled { course_id, entry_id, .. }
                | Event::WaitlistFailed { course_id, entry_id, .. }
                | Event::WaitlistLeft { course_id, entry_id, .. }
                | Event::WaitlistCanceled { course_id, entry_id, .. }
                    if *course_id == course.id =>
                {
                    course.waitlist.remove(*entry_id);
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
