//! The instructor page (`/instructor`): the signed-in instructor's courses
//! with their student counts and open status, the form that registers or
//! changes a course, delete, and each course's roster.
//!
//! A shell only: the script reads `GET /courses?teacher=` and
//! `GET /classes?courseId=` and writes through `POST`/`PATCH`/`DELETE
//! /courses` with the instructor's token, so the API decides what they may
//! see and change, each course's waitlist length included.

use axum::response::Response;
use maud::html;

use super::{Section, Shell};

/// `GET /instructor`.
pub(crate) async fn page(shell: Shell) -> Response {
    let ctx = &shell.ctx;
    let main = html! {
        h1 { (ctx.t("instructor.title")) }
        p #need-who.hint role="status" {}
        section aria-labelledby="courses-title" {
            h2 #courses-title { (ctx.t("instructor.courses")) }
            (ctx.script_table("my-courses", &["course.id", "course.name", "course.fee", "course.seats", "course.waitlistLength", "course.open", "course.action"]))
        }
        section aria-labelledby="course-form-title" {
            h2 #course-form-title { (ctx.t("instructor.new")) }
            form #course-form {
                input type="hidden" name="id" #course-id;
                label for="course-name" { (ctx.t("course.name")) }
                input #course-name name="name" type="text" required maxlength="200";
                label for="course-fee" { (ctx.t("course.fee")) }
                input #course-fee name="fee" type="number" min="0" step="1" required inputmode="numeric";
                label for="course-textbook" { (ctx.t("course.textBook")) }
                input #course-textbook name="textBook" type="text";
                label for="course-capacity" { (ctx.t("course.capacity")) }
                input #course-capacity name="capacity" type="number" min="1" step="1" inputmode="numeric";
                label for="course-min" { (ctx.t("course.minStudents")) }
                input #course-min name="minStudents" type="number" min="1" step="1" inputmode="numeric";
                label for="course-waitlist" { (ctx.t("course.waitlistCapacity")) }
                input #course-waitlist name="waitlistCapacity" type="number" min="0" step="1" inputmode="numeric";
                div.actions {
                    button type="submit" #course-save { (ctx.t("instructor.register")) }
                    button type="button" #course-cancel-edit hidden { (ctx.t("instructor.cancelEdit")) }
                }
            }
            p #course-result role="status" aria-live="polite" {}
        }
        section #roster-section aria-labelledby="roster-title" hidden {
            h2 #roster-title { (ctx.t("instructor.roster")) }
            ul #roster {}
        }
    };
    shell.render(Section::Instructor, "instructor.title", main)
}
