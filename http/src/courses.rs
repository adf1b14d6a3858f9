//! `/courses`: the catalog. Anyone may read it; instructors register courses
//! as themselves and change only their own; admins change any.
//!
//! Owns the course representation, the request bodies and their parsing into
//! the domain's `CourseDetails` / `CoursePatch`.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::{Json as JsonBody, Router};
use serde::{Deserialize, Serialize};
use sugang_actors::{
    Capacity, CourseDetails, CourseId, CourseName, CoursePatch, CourseRecord, Fee, MinStudents, TeacherName, TextBook,
    WaitlistSettings,
};
use utoipa::ToSchema;

use crate::auth::{AuthUser, MaybeAuthUser, Role};
use crate::error::{ApiError, Problem};
use crate::extract::{IdPath, Int, Json, Params};
use crate::hal::{ItemLinks, collection, command_response, map_page, self_href};
use crate::openapi::integers;
use crate::openapi::shared::{BadId, BadQuery, NoValidToken, Paging};
use crate::{AppState, nullable};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/courses", get(list).post(create))
        .route("/courses/{id}", get(show).patch(modify).delete(remove))
}

/// A course.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CourseModel {
    #[schema(example = 1)]
    id: u64,
    #[schema(example = "korean")]
    name: String,
    #[schema(example = "Hong-Gil-dong")]
    teacher: String,
    /// In won.
    #[schema(example = 10000)]
    fee: u64,
    #[schema(example = "kor_book")]
    text_book: Option<String>,
    /// Absent: unlimited.
    #[schema(example = 40)]
    capacity: Option<u32>,
    min_students: u32,
    student_count: u32,
    /// Derived: `studentCount >= minStudents`.
    open_yn: bool,
    /// How many may wait for a seat (0: no waitlist).
    waitlist_capacity: u32,
    /// How many wait now.
    waitlist_length: u32,
    #[serde(rename = "_links")]
    links: ItemLinks,
}

impl CourseModel {
    /// A course with its waitlist's capacity and length.
    pub(crate) fn of(c: CourseRecord, waitlist: WaitlistSettings) -> Self {
        let id = c.id.get();
        CourseModel {
            id,
            name: c.details.name.as_str().to_owned(),
            teacher: c.teacher.as_str().to_owned(),
            fee: c.details.fee.won(),
            text_book: c.details.text_book.map(|t| t.as_str().to_owned()),
            capacity: c.details.capacity.map(Capacity::get),
            min_students: c.details.min_students.get(),
            student_count: c.student_count,
            open_yn: c.student_count >= c.details.min_students.get(),
            waitlist_capacity: waitlist.capacity,
            waitlist_length: waitlist.length,
            links: ItemLinks::item("course", format!("/courses/{id}")),
        }
    }
}

/// The representation of a stored course (its waitlist read alongside).
fn model(state: &AppState, course: CourseRecord) -> Result<CourseModel, ApiError> {
    let waitlist = state.sugang.course_waitlist(course.id).map_err(ApiError::internal)?;
    Ok(CourseModel::of(course, waitlist))
}

collection!(CourseCollection, CourseEmbedded, courses, CourseModel);

/// `POST /courses`. A legacy `openYn` is ignored (it is derived).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewCourse {
    #[schema(required = true, value_type = String, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", example = "korean")]
    name: Option<String>,
    /// Required in open mode; with tokens, an instructor's own name (the
    /// default).
    #[schema(required = true, value_type = String, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", example = "Hong-Gil-dong")]
    teacher: Option<String>,
    /// In won: an integer, or a string of digits (`"10000"`).
    #[schema(required = true, schema_with = integers::fee)]
    fee: Option<Int>,
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", example = "kor_book")]
    text_book: Option<String>,
    /// Absent or `null`: unlimited.
    #[schema(schema_with = integers::count_or_null)]
    capacity: Option<Int>,
    /// Absent or `null`: 1.
    #[schema(schema_with = integers::count_or_null)]
    min_students: Option<Int>,
    /// Absent or `null`: 0 (no waitlist).
    #[schema(schema_with = integers::places_or_null)]
    waitlist_capacity: Option<Int>,
}

/// A waitlist capacity: an integer from 0 to 10^6.
fn places(field: &'static str, n: Int) -> Result<u32, ApiError> {
    u32::try_from(n.0)
        .ok()
        .filter(|&n| n <= 1_000_000)
        .ok_or_else(|| ApiError::invalid(field, "must be an integer from 0 to 1000000"))
}

impl NewCourse {
    /// The course's owner, details and waitlist capacity, parsed; the
    /// teacher defaults to the caller's own name.
    fn parse(self, caller_name: Option<&str>) -> Result<(TeacherName, CourseDetails, u32), ApiError> {
        let name = CourseName::parse(&required("name", self.name)?)?;
        let teacher = match (self.teacher, caller_name) {
            (Some(teacher), _) => TeacherName::parse(&teacher)?,
            (None, Some(me)) => TeacherName::parse(me)?,
            (None, None) => return Err(ApiError::invalid("teacher", "is required")),
        };
        let fee = Fee::parse(required("fee", self.fee)?.0)?;
        let details = CourseDetails {
            name,
            fee,
            text_book: self.text_book.as_deref().map(TextBook::parse).transpose()?,
            capacity: self.capacity.map(|n| Capacity::parse(n.0)).transpose()?,
            min_students: self.min_students.map(|n| MinStudents::parse(n.0)).transpose()?.unwrap_or_default(),
        };
        let waitlist_capacity = self.waitlist_capacity.map(|n| places("waitlistCapacity", n)).transpose()?;
        Ok((teacher, details, waitlist_capacity.unwrap_or(0)))
    }
}

fn required<T>(field: &'static str, value: Option<T>) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::invalid(field, "is required"))
}

/// `PATCH /courses/{id}`: any of the fields; `textBook: null` removes the
/// textbook, `capacity: null` makes the course unlimited.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CourseChange {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = integers::fee)]
    fee: Option<Option<Int>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$")]
    text_book: Option<Option<String>>,
    /// `null`: unlimited.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = integers::count_or_null)]
    capacity: Option<Option<Int>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = integers::count)]
    min_students: Option<Option<Int>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = integers::places)]
    waitlist_capacity: Option<Option<Int>>,
}

impl TryFrom<CourseChange> for CoursePatch {
    type Error = ApiError;

    fn try_from(c: CourseChange) -> Result<Self, ApiError> {
        let not_null = |field: &'static str| ApiError::invalid(field, "must not be null");
        Ok(CoursePatch {
            name: c
                .name
                .map(|n| n.ok_or_else(|| not_null("name")).and_then(|n| Ok(CourseName::parse(&n)?)))
                .transpose()?,
            fee: c.fee.map(|f| f.ok_or_else(|| not_null("fee")).and_then(|f| Ok(Fee::parse(f.0)?))).transpose()?,
            text_book: c.text_book.map(|t| t.as_deref().map(TextBook::parse).transpose()).transpose()?,
            capacity: c.capacity.map(|n| n.map(|n| Capacity::parse(n.0)).transpose()).transpose()?,
            min_students: c
                .min_students
                .map(|n| n.ok_or_else(|| not_null("minStudents")).and_then(|n| Ok(MinStudents::parse(n.0)?)))
                .transpose()?,
            waitlist_capacity: c
                .waitlist_capacity
                .map(|n| n.ok_or_else(|| not_null("waitlistCapacity")).and_then(|n| places("waitlistCapacity", n)))
                .transpose()?,
        })
    }
}

/// The course, or 404.
fn find(state: &AppState, id: u64) -> Result<CourseRecord, ApiError> {
    let course_id = CourseId::parse(id)?;
    state
        .sugang
        .course(course_id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("course {id} not found")))
}

/// Lists courses, optionally of one teacher.
#[utoipa::path(get, path = "/courses", tag = "courses",
    params(
        ("teacher" = Option<String>, Query, description = "Only this teacher's courses"),
        Paging,
    ),
    responses(
        (status = 200, description = "A page of courses", body = CourseCollection),
        (status = 401, description = "A token was sent and does not verify", body = Problem, content_type = "application/problem+json"),
        BadQuery,
    ))]
async fn list(
    State(state): State<AppState>,
    _caller: MaybeAuthUser,
    params: Params,
    uri: Uri,
) -> Result<JsonBody<CourseCollection>, ApiError> {
    let teacher = params.text("teacher")?;
    let page = params.page()?;
    let paged = state.sugang.courses(teacher.as_deref(), page).map_err(ApiError::internal)?;
    let items = paged.items.into_iter().map(|c| model(&state, c)).collect::<Result<Vec<_>, _>>()?;
    let paged = sugang_actors::Paged { items, total: paged.total };
    Ok(JsonBody(CourseCollection::new(map_page(paged, |c| c), page, self_href(&uri))))
}

/// One course.
#[utoipa::path(get, path = "/courses/{id}", tag = "courses",
    params(("id" = u64, Path, minimum = 1, description = "Course id")),
    responses(
        (status = 200, description = "The course", body = CourseModel),
        BadId,
        (status = 401, description = "A token was sent and does not verify", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown or deleted", body = Problem, content_type = "application/problem+json"),
    ))]
#[tracing::instrument(skip_all, fields(course_id = id))]
async fn show(
    State(state): State<AppState>,
    _caller: MaybeAuthUser,
    IdPath(id): IdPath,
) -> Result<JsonBody<CourseModel>, ApiError> {
    Ok(JsonBody(model(&state, find(&state, id)?)?))
}

/// Registers a course.
#[utoipa::path(post, path = "/courses", tag = "courses", request_body = NewCourse,
    responses(
        (status = 201, description = "Registered", body = CourseModel, headers(
            ("Location" = String, description = "The new course"),
            ("X-Sugang-Seq" = u64, description = "The event seq its events reached"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        NoValidToken,
        (status = 403, description = "Not an instructor, or not as yourself", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded", body = Problem, content_type = "application/problem+json"),
    ))]
#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    Json(body): Json<NewCourse>,
) -> Result<Response, ApiError> {
    caller.require_role(Role::Instructor)?;
    let (teacher, details, waitlist_capacity) = body.parse(caller.name())?;
    caller.require_person(Role::Instructor, teacher.as_str())?;
    let done = state.sugang.register_course_with_waitlist(teacher, details, waitlist_capacity).await?;
    let model = model(&state, done.value)?;
    Ok(command_response(StatusCode::CREATED, done.seq, Some(format!("/courses/{}", model.id)), Some(model)))
}

/// Changes a course (its owner or an admin).
#[utoipa::path(patch, path = "/courses/{id}", tag = "courses", request_body = CourseChange,
    params(("id" = u64, Path, minimum = 1, description = "Course id")),
    responses(
        (status = 200, description = "Changed", body = CourseModel, headers(
            ("X-Sugang-Seq" = u64, description = "The event seq its events reached"))),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        NoValidToken,
        (status = 403, description = "Not the course's teacher", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown course", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Capacity below studentCount", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded", body = Problem, content_type = "application/problem+json"),
    ))]
#[tracing::instrument(skip_all, fields(course_id = id))]
async fn modify(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
    Json(body): Json<CourseChange>,
) -> Result<Response, ApiError> {
    let course = find(&state, id)?;
    caller.require_person(Role::Instructor, course.teacher.as_str())?;
    let patch = CoursePatch::try_from(body)?;
    let done = state.sugang.modify_course(course.id, patch).await?;
    Ok(command_response(StatusCode::OK, done.seq, None, Some(model(&state, done.value)?)))
}

/// Deletes a course without completed enrollments.
#[utoipa::path(delete, path = "/courses/{id}", tag = "courses",
    params(("id" = u64, Path, minimum = 1, description = "Course id")),
    responses(
        (status = 204, description = "Deleted", headers(
            ("X-Sugang-Seq" = u64, description = "The event seq its events reached"))),
        BadId, NoValidToken,
        (status = 403, description = "Not the course's teacher", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown course", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The course has completed enrollments", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded", body = Problem, content_type = "application/problem+json"),
    ))]
#[tracing::instrument(skip_all, fields(course_id = id))]
async fn remove(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let course = find(&state, id)?;
    caller.require_person(Role::Instructor, course.teacher.as_str())?;
    let done = state.sugang.delete_course(course.id).await?;
    Ok(command_response::<()>(StatusCode::NO_CONTENT, done.seq, None, None))
}
