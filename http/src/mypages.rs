//! The two my-pages, kept by the `mypage` subscriber (`?after=` waits for
//! it): `/mypages`, an instructor's view per course, and `/inquiryMypages`,
//! a student's view per enrollment. Each person reads only their own.
//!
//! Owns both views' representations.

use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json as JsonBody, Router};
use serde::Serialize;
use sugang_actors::{InstructorView, StudentView};
use utoipa::ToSchema;

use crate::auth::{AuthUser, Role};
use crate::classes::ApplyStatus;
use crate::deliveries::DeliveryStatusModel;
use crate::error::ApiError;
use crate::extract::{IdPath, Params};
use crate::hal::{ItemLinks, collection, map_page, self_href};
use crate::openapi::shared::{After, BadId, BadQuery, CatchUp, NoValidToken, NotYours, Paging, Unknown};
use crate::payments::PayStatusModel;
use crate::{AppState, caught_up};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/mypages", get(list_instructor))
        .route("/mypages/{id}", get(show_instructor))
        .route("/inquiryMypages", get(list_student))
        .route("/inquiryMypages/{id}", get(show_student))
}

/// The read model these endpoints wait for.
const SUBSCRIBER: &str = "mypage";

/// An instructor's view of one of their courses.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MyPageModel {
    id: u64,
    course_id: u64,
    course_name: String,
    teacher: String,
    /// In won.
    fee: u64,
    text_book: Option<String>,
    open_yn: bool,
    student_count: u32,
    #[serde(rename = "_links")]
    links: ItemLinks,
}

impl From<InstructorView> for MyPageModel {
    fn from(v: InstructorView) -> Self {
        let course_id = v.course_id.get();
        MyPageModel {
            id: v.id,
            course_id,
            course_name: v.course_name.as_str().to_owned(),
            teacher: v.teacher.as_str().to_owned(),
            fee: v.fee.won(),
            text_book: v.text_book.map(|t| t.as_str().to_owned()),
            open_yn: v.open,
            student_count: v.student_count,
            links: ItemLinks::item("mypage", format!("/mypages/{}", v.id))
                .with("course", format!("/courses/{course_id}")),
        }
    }
}

collection!(MyPageCollection, MyPageEmbedded, mypages, MyPageModel);

/// A student's view of one of their enrollments.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InquiryMyPageModel {
    id: u64,
    apply_id: u64,
    course_id: u64,
    course_name: String,
    student: String,
    apply_status: ApplyStatus,
    /// Absent until the payment is recorded in the view.
    pay_status: Option<PayStatusModel>,
    /// Absent until the shipment starts.
    delivery_status: Option<DeliveryStatusModel>,
    #[serde(rename = "_links")]
    links: ItemLinks,
}

impl From<StudentView> for InquiryMyPageModel {
    fn from(v: StudentView) -> Self {
        let (apply_id, course_id) = (v.apply_id.get(), v.course_id.get());
        InquiryMyPageModel {
            id: v.id,
            apply_id,
            course_id,
            course_name: v.course_name.as_str().to_owned(),
            student: v.student.as_str().to_owned(),
            apply_status: v.apply_status.into(),
            pay_status: v.pay_status.map(Into::into),
            delivery_status: v.delivery_status.map(Into::into),
            links: ItemLinks::item("inquiryMypage", format!("/inquiryMypages/{}", v.id))
                .with("class", format!("/classes/{apply_id}"))
                .with("course", format!("/courses/{course_id}")),
        }
    }
}

collection!(InquiryMyPageCollection, InquiryMyPageEmbedded, inquiry_mypages, InquiryMyPageModel);

/// Lists instructors' views (an instructor's own by default).
#[utoipa::path(get, path = "/mypages", tag = "read models",
    params(
        ("teacher" = Option<String>, Query, description = "Only this teacher's courses"),
        After, Paging,
    ),
    responses(
        (status = 200, description = "A page of instructor views", body = MyPageCollection),
        NoValidToken, NotYours, BadQuery, CatchUp,
    ))]
async fn list_instructor(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    params: Params,
    uri: Uri,
) -> Result<JsonBody<MyPageCollection>, ApiError> {
    let teacher = caller.as_self(Role::Instructor, params.text("teacher")?)?;
    let page = params.page()?;
    caught_up(&state, SUBSCRIBER, &params).await?;
    let paged = state.sugang.instructor_views(teacher.as_deref(), page).map_err(ApiError::internal)?;
    Ok(JsonBody(MyPageCollection::new(map_page(paged, MyPageModel::from), page, self_href(&uri))))
}

/// One instructor view.
#[utoipa::path(get, path = "/mypages/{id}", tag = "read models",
    params(
        ("id" = u64, Path, minimum = 1, description = "View id (= course id)"),
        After,
    ),
    responses(
        (status = 200, description = "The view", body = MyPageModel),
        BadId, NoValidToken, NotYours, Unknown, BadQuery, CatchUp,
    ))]
async fn show_instructor(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
    params: Params,
) -> Result<JsonBody<MyPageModel>, ApiError> {
    caught_up(&state, SUBSCRIBER, &params).await?;
    let view = state
        .sugang
        .instructor_view(id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("mypage {id} not found")))?;
    caller.require_person(Role::Instructor, view.teacher.as_str())?;
    Ok(JsonBody(view.into()))
}

/// Lists students' views (a student's own by default).
#[utoipa::path(get, path = "/inquiryMypages", tag = "read models",
    params(
        ("student" = Option<String>, Query, description = "Only this student's enrollments"),
        After, Paging,
    ),
    responses(
        (status = 200, description = "A page of student views", body = InquiryMyPageCollection),
        NoValidToken, NotYours, BadQuery, CatchUp,
    ))]
async fn list_student(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    params: Params,
    uri: Uri,
) -> Result<JsonBody<InquiryMyPageCollection>, ApiError> {
    let student = caller.as_self(Role::Student, params.text("student")?)?;
    let page = params.page()?;
    caught_up(&state, SUBSCRIBER, &params).await?;
    let paged = state.sugang.student_views(student.as_deref(), page).map_err(ApiError::internal)?;
    Ok(JsonBody(InquiryMyPageCollection::new(map_page(paged, InquiryMyPageModel::from), page, self_href(&uri))))
}

/// One student view.
#[utoipa::path(get, path = "/inquiryMypages/{id}", tag = "read models",
    params(
        ("id" = u64, Path, minimum = 1, description = "View id (= enrollment id)"),
        After,
    ),
    responses(
        (status = 200, description = "The view", body = InquiryMyPageModel),
        BadId, NoValidToken, NotYours, Unknown, BadQuery, CatchUp,
    ))]
async fn show_student(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    IdPath(id): IdPath,
    params: Params,
) -> Result<JsonBody<InquiryMyPageModel>, ApiError> {
    caught_up(&state, SUBSCRIBER, &params).await?;
    let view = state
        .sugang
        .student_view(id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("inquiryMypage {id} not found")))?;
    caller.require_person(Role::Student, view.student.as_str())?;
    Ok(JsonBody(view.into()))
}
