//! What the crate's own tests of a whole system share: a quick store, a
//! course, a student's request. (The integration tests have theirs in
//! `tests/common`.)

use std::path::Path;

use sugang_storage::Durability;

use crate::event::CourseDetails;
use crate::model::{CourseId, CourseName, Fee, MinStudents, PayMethod, StudentName, TeacherName};
use crate::{Config, EnrollRequest, Sugang};

/// A system's config over `dir`, flushing every 50 ms (tests need no fsync).
pub(crate) fn config(dir: &Path) -> Config {
    let mut config = Config::new(dir);
    config.durability = Durability::Relaxed { flush_every_ms: 50 };
    config
}

/// Registers Hong's course "korean": 100 won, no textbook, unlimited.
pub(crate) async fn korean(system: &Sugang) -> CourseId {
    let details = CourseDetails {
        name: CourseName::parse("korean").unwrap(),
        fee: Fee::parse(100).unwrap(),
        text_book: None,
        capacity: None,
        min_students: MinStudents::parse(1).unwrap(),
    };
    system.register_course(TeacherName::parse("Hong").unwrap(), details).await.unwrap().value.id
}

/// `student`'s request to enroll in `course`, paying by the default method.
pub(crate) fn request(course: CourseId, student: &str) -> EnrollRequest {
    EnrollRequest {
        course_id: course,
        student: StudentName::parse(student).unwrap(),
        expected_fee: None,
        pay_method: PayMethod::parse(None).unwrap(),
        pay_account: None,
        addr: None,
        telephone: None,
    }
}
