//! `/classes`: enrollments. `POST` enrolls and pays (answering once the
//! enrollment is completed and durable), `DELETE` cancels and refunds.
//! Students act and read only as themselves; a course's instructor reads
//! the enrollments of their course; admins do all.
//!
//! Owns the enrollment representation and the parsing of the enroll body
//! into the domain's `EnrollRequest`.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::{Json as JsonBody, Router};
use serde::{Deserialize, Serialize};
use sugang_actors::{
    CourseId, EnrollRequest, EnrollStatus, Enrolled, Enrollment, EnrollmentFilter, EnrollmentId, Fee, PayMethod,
    StudentName, parse_optional,
};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{AuthUser, Caller, Role};
use crate::error::{ApiError, Problem};
use crate::extract::{IdPath, Int, Json, Params};
use crate::hal::{ItemLinks, collection, command_response, map_page, rfc3339, self_href};
use crate::openapi::integers;
use crate::openapi::shared::{BadId, BadQuery, NoValidToken, NotYours, Paging, Unknown};
use crate::waitlists::WaitlistModel;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/classes", get(list).post(enroll)).route("/classes/{id}", get(show).delete(cancel))
}

/// An enrollment's status.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum ApplyStatus {
    Completed,
    Canceled,
}

impl From<EnrollStatus> for ApplyStatus {
    fn from(s: EnrollStatus) -> Self {
        match s {
            EnrollStatus::Completed => ApplyStatus::Completed,
            EnrollStatus::Canceled => ApplyStatus::Canceled,
        }
    }
}

/// An enrollment ("class").
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClassModel {
    #[schema(example = 7)]
    id: u64,
    #[schema(example = 1)]
    course_id: u64,
    #[schema(example = "korean")]
    course_name: String,
    #[schema(example = "Kim-Soon-hee")]
    student: String,
    /// What was paid, in won: the course's fee when the seat was taken.
    #[schema(example = 10000)]
    fee: u64,
    text_book: Option<String>,
    status: ApplyStatus,
    /// The payment's id (the enrollment's).
    payment_id: u64,
    /// RFC 3339, UTC.
    #[schema(example = "2026-11-22T10:00:00Z")]
    created_at: String,
    #[serde(rename = "_links")]
    links: ItemLinks,
}

impl From<Enrollment> for ClassModel {
    fn from(e: Enrollment) -> Self {
        let (id, course_id) = (e.id.get(), e.course_id.get());
        ClassModel {
            id,
            course_id,
            course_name: e.course_name.as_str().to_owned(),
            student: e.student.as_str().to_owned(),
            fee: e.fee.won(),
            text_book: e.text_book.map(|t| t.as_str().to_owned()),
            status: e.status.into(),
            payment_id: id,
            created_at: rfc3339(e.created_at_ms),
            links: ItemLinks::item("class", format!("/classes/{id}"))
                .with("course", format!("/courses/{course_id}"))
                .with("payment", format!("/payments/{id}")),
        }
    }
}

collection!(ClassCollection, ClassEmbedded, classes, ClassModel);

/// `POST /classes`. Legacy `fee` (409 if stale) and `textBook` (a string,
/// ignored: it is the course's) may be sent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewClass {
    /// An integer, or a string of digits (`"1"`).
    #[schema(required = true, schema_with = integers::id)]
    course_id: Option<Int>,
    /// Required in open mode; with tokens, a student's own name (the
    /// default).
    #[schema(required = true, value_type = String, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", example = "Kim-Soon-hee")]
    student: Option<String>,
    /// Default `card`.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", example = "card")]
    pay_method: Option<String>,
    /// `4000000000000002` is declined by the simulated gateway.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", example = "4242424242424242")]
    pay_account: Option<String>,
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", example = "Seoul")]
    addr: Option<String>,
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", example = "010-1234-5678")]
    telephone_info: Option<String>,
    /// The fee the client saw: 409 if the course's fee is now different.
    #[schema(schema_with = integers::fee_or_null)]
    fee: Option<Int>,
    /// Legacy, and ignored (the course's textbook is shipped); if sent, a
    /// string.
    #[serde(rename = "textBook", default, deserialize_with = "legacy_text")]
    #[schema(value_type = Option<String>)]
    _text_book: (),
    /// `true`: join the course's waitlist if it is full (202), keeping the
    /// payment details to charge when a seat frees.
    waitlist: Option<bool>,
}

/// A legacy text field that is read only to check its type: a string or
/// `null`; anything else is refused with the field's name.
fn legacy_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<(), D::Error> {
    Option::<String>::deserialize(deserializer).map(drop)
}

impl NewClass {
    /// The enroll request, parsed; the student defaults to the caller.
    fn parse(self, caller_name: Option<&str>) -> Result<(EnrollRequest, bool), ApiError> {
        let waitlist = self.waitlist.unwrap_or(false);
        let course_id = self.course_id.ok_or_else(|| ApiError::invalid("courseId", "is required"))?;
        let course_id = u64::try_from(course_id.0)
            .ok()
            .and_then(|id| CourseId::parse(id).ok())
            .ok_or_else(|| ApiError::invalid("courseId", "must be a positive integer"))?;
        let student = match (self.student, caller_name) {
            (Some(student), _) => StudentName::parse(&student)?,
            (None, Some(me)) => StudentName::parse(me)?,
            (None, None) => return Err(ApiError::invalid("student", "is required")),
        };
        let request = EnrollRequest {
            course_id,
            student,
            expected_fee: self.fee.map(|f| Fee::parse(f.0)).transpose()?,
            pay_method: PayMethod::parse(self.pay_method.as_deref())?,
            pay_account: parse_optional("payAccount", self.pay_account.as_deref())?,
            addr: parse_optional("addr", self.addr.as_deref())?,
            telephone: parse_optional("telephoneInfo", self.telephone_info.as_deref())?,
        };
        Ok((request, waitlist))
    }
}

/// The enrollment, or 404.
fn find(state: &AppState, id: u64) -> Result<Enrollment, ApiError> {
    state
        .sugang
        .enrollment(EnrollmentId::parse(id)?)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("class {id} not found")))
}

/// 403 unless the caller is the enrollment's student (as a student), its
/// course's teacher (as an instructor), or an admin.
/// The `student` filter a caller may list a course's entries with: an admin
/// any, an instructor only within one of their own courses (`courseId`
/// required), a student only their own. `what` names the list in the
/// refusal ("classes", "waitlist").
pub(crate) fn listing_student(
    state: &AppState,
    caller: &Caller,
    course_id: Option<u64>,
    requested: Option<String>,
    what: &str,
) -> Result<Option<String>, ApiError> {
    match caller.role() {
        Role::Admin => Ok(requested),
        Role::Instructor => {
            let course = course_id.ok_or_else(|| {
                ApiError::Forbidden(format!("an instructor lists the {what} of one of their courses: give courseId"))
            })?;
            let record = state
                .sugang
                .course(CourseId::parse(course)?)
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::NotFound(format!("course {course} not found")))?;
            caller.require_person(Role::Instructor, record.teacher.as_str())?;
            Ok(requested)
        }
        Role::Student => caller.as_self(Role::Student, requested),
    }
}

fn may_read(caller: &Caller, e: &Enrollment) -> Result<(), ApiError> {
    caller
        .require_person(Role::Student, e.student.as_str())
        .or_else(|_| caller.require_person(Role::Instructor, e.teacher.as_str()))
}

/// Lists enrollments.
#[utoipa::path(get, path = "/classes", tag = "classes",
    params(
        ("student" = Option<String>, Query, description = "Only this student's (a student's own by default)"),
        ("courseId" = Option<u64>, Query, minimum = 1, maximum = 9_223_372_036_854_775_807_u64, description = "Only this course's (its instructor may list them)"),
        ("status" = Option<ApplyStatus>, Query, description = "`COMPLETED` or `CANCELED`"),
        Paging,
    ),
    responses(
        (status = 200, description = "A page of classes", body = ClassCollection),
        NoValidToken, NotYours,
        (status = 404, description = "Unknown course (for an instructor)", body = Problem, content_type = "application/problem+json"),
        BadQuery,
    ))]
async fn list(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    params: Params,
    uri: Uri,
) -> Result<JsonBody<ClassCollection>, ApiError> {
    let course_id = params.id("courseId")?;
    let status = match params.keyword("status") {
        None => None,
        Some("COMPLETED") => Some(EnrollStatus::Completed),
        Some("CANCELED") => Some(EnrollStatus::Canceled),
        Some(other) => {
            return Err(ApiError::invalid("status", format!("must be COMPLETED or CANCELED, got {other:?}")));
        }
    };
    let requested = params.text("student")?;
    let page = params.page()?;
    let student = listing_student(&state, &caller, course_id, requested, "classes")?;
    let filter = EnrollmentFilter { student, course_id, status };
    let paged = state.sugang.enrollments(&filter, page).map_err(ApiError::internal)?;
    Ok(JsonBody(ClassCollection::new(map_page(paged, ClassModel::from), page, self_href(&uri))))
}

/// One enrollment.
#[utoipa::path(get, path = "/classes/{id}", tag = "classes",
    params(("id" = u64, Path, minimum = 1, description = "Enrollment id")),
    responses(
        (status = 200, description = "The class", body = ClassModel),
        BadId, NoValidToken, NotYours, Unknown,
    ))]
#[tracing::instrument(skip_all, fields(enrollment_id = id))]
async fn show(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
) -> Result<JsonBody<ClassModel>, ApiError> {
    let enrollment = find(&state, id)?;
    may_read(&caller, &enrollment)?;
    Ok(JsonBody(enrollment.into()))
}

/// Enrolls a student and charges the fee; answers once it is completed.
#[utoipa::path(post, path = "/classes", tag = "classes", request_body = NewClass,
    params(("X-Sugang-Admission" = Option<String>, Header, description = "While the waiting room is on: the admission token of the student's admitted ticket (`/queue/tickets`)")),
    responses(
        (status = 201, description = "Enrolled and paid", body = ClassModel, headers(
            ("Location" = String, description = "The new class"),
            ("X-Sugang-Seq" = u64, description = "The event seq its events reached"))),
        (status = 202, description = "The course is full: joined its waitlist (`waitlist: true`)", body = WaitlistModel, headers(
            ("Location" = String, description = "The waitlist entry"),
            ("X-Sugang-Seq" = u64, description = "The event seq its events reached"))),
        (status = 200, description = "Already on the course's waitlist: the entry (`waitlist: true`)", body = WaitlistModel, headers(
            ("Location" = String, description = "The waitlist entry"),
            ("X-Sugang-Seq" = u64, description = "The event seq its events reached"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        NoValidToken,
        (status = 402, description = "Payment declined", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a student, or not as yourself", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown course", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Course full (and its waitlist, if asked), already enrolled, or a stale fee", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "The waiting room is on: send an admission (`X-Sugang-Admission`) from `/queue/tickets`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Payment unavailable or overloaded (see Retry-After)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
#[tracing::instrument(skip_all)]
async fn enroll(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    headers: axum::http::HeaderMap,
    Json(body): Json<NewClass>,
) -> Result<Response, ApiError> {
    caller.require_role(Role::Student)?;
    let (request, waitlist) = body.parse(caller.name())?;
    caller.require_person(Role::Student, request.student.as_str())?;
    crate::queue::require_admission(&state, &request.student, &headers)?;
    if waitlist {
        let done = state.sugang.enroll_or_join(request).await?;
        return Ok(match done.value {
            Enrolled::Completed(enrollment) => {
                let model = ClassModel::from(enrollment);
                command_response(StatusCode::CREATED, done.seq, Some(format!("/classes/{}", model.id)), Some(model))
            }
            Enrolled::Waitlisted { entry, new } => {
                let status = if new { StatusCode::ACCEPTED } else { StatusCode::OK };
                let model = WaitlistModel::from(entry);
                command_response(status, done.seq, Some(format!("/waitlists/{}", model.id)), Some(model))
            }
        });
    }
    let done = state.sugang.enroll(request).await?;
    let model = ClassModel::from(done.value);
    tracing::debug!(enrollment_id = model.id, course_id = model.course_id, "enrolled");
    Ok(command_response(StatusCode::CREATED, done.seq, Some(format!("/classes/{}", model.id)), Some(model)))
}

/// Cancels an enrollment: refund, seat released, shipment canceled. A
/// repeat is 204 again and changes nothing.
#[utoipa::path(delete, path = "/classes/{id}", tag = "classes",
    params(("id" = u64, Path, minimum = 1, description = "Enrollment id")),
    responses(
        (status = 204, description = "Canceled (or already)", headers(
            ("X-Sugang-Seq" = u64, description = "The event seq its events reached"))),
        BadId, NoValidToken, NotYours, Unknown,
        (status = 503, description = "Overloaded (see Retry-After)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
#[tracing::instrument(skip_all, fields(enrollment_id = id))]
async fn cancel(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let enrollment = find(&state, id)?;
    caller.require_person(Role::Student, enrollment.student.as_str())?;
    let done = state.sugang.cancel(enrollment.id).await?;
    Ok(command_response::<()>(StatusCode::NO_CONTENT, done.seq, None, None))
}
