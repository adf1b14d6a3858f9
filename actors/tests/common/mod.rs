//! What the actors' integration tests share: a configuration with relaxed
//! durability, a course's details and a student's enrollment request. Each
//! test binary uses some of them.
#![allow(dead_code)]

use std::path::Path;

use sugang_actors::{
    Capacity, Config, CourseDetails, CourseId, CourseName, EnrollRequest, Fee, MinStudents, PayMethod, StudentName,
};
use sugang_storage::Durability;

/// The defaults over `dir`, with relaxed durability: these tests are about
/// the actors, not the disk (the storage crate's tests and the crash tests
/// are about the disk).
pub fn config(dir: &Path) -> Config {
    let mut config = Config::new(dir);
    config.durability = Durability::Relaxed { flush_every_ms: 100 };
    config
}

/// A course without a textbook, open from its first student.
pub fn details(name: &str, fee: i64, capacity: Option<i64>) -> CourseDetails {
    CourseDetails {
        name: CourseName::parse(name).unwrap(),
        fee: Fee::parse(fee).unwrap(),
        text_book: None,
        capacity: capacity.map(|c| Capacity::parse(c).unwrap()),
        min_students: MinStudents::default(),
    }
}

/// `student` enrolls in `course`, paying by card with the approved account.
pub fn request(course: CourseId, student: &str) -> EnrollRequest {
    paying(course, student, None)
}

/// `student` enrolls in `course`, paying with `account` (None: the approved one).
pub fn paying(course: CourseId, student: &str, account: Option<&str>) -> EnrollRequest {
    EnrollRequest {
        course_id: course,
        student: StudentName::parse(student).unwrap(),
        expected_fee: None,
        pay_method: PayMethod::parse(None).unwrap(),
        pay_account: account.map(str::to_owned),
        addr: Some(format!("{student}'s address")),
        telephone: None,
    }
}
