//! The OpenAPI 3.1 document, generated from the handlers' `utoipa::path`
//! attributes and the representations' `ToSchema` derives: nothing here is
//! written by hand but the list of what to include.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sugang",
        description = "Online course enrollment: courses, enrollments (classes) paid through a payment gateway, \
                       textbook shipments, my-pages and notifications. HAL+JSON, problem+json errors.",
    ),
    paths(
        crate::courses::list,
        crate::courses::show,
        crate::courses::create,
        crate::courses::modify,
        crate::courses::remove,
        crate::classes::list,
        crate::classes::show,
        crate::classes::enroll,
        crate::classes::cancel,
        crate::payments::list,
        crate::payments::show,
        crate::deliveries::list,
        crate::deliveries::show,
        crate::schedules::list,
        crate::schedules::show,
        crate::mypages::list_instructor,
        crate::mypages::show_instructor,
        crate::mypages::list_student,
        crate::mypages::show_student,
        crate::notifications::list,
        crate::notifications::show,
        crate::ops::live,
        crate::ops::ready,
        crate::ops::metrics_text,
        crate::ops::openapi,
        crate::admin::actors,
        crate::admin::breaker,
        crate::admin::payment_faults,
        crate::admin::set_payment_faults,
        crate::admin::panic_course,
        crate::admin::set_subscriber,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "courses", description = "The catalog"),
        (name = "classes", description = "Enrollments: enroll and pay, cancel and refund"),
        (name = "payments", description = "Payments (read only)"),
        (name = "deliveries", description = "Textbook shipments (read only)"),
        (name = "read models", description = "Course schedules, my-pages, notifications (read only)"),
        (name = "operations", description = "Health, metrics, this document"),
        (name = "admin", description = "Supervision tree, breaker, fault injection"),
    )
)]
pub(crate) struct ApiDoc;

/// Declares the bearer scheme (used when the server has a JWT secret).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// What many routes' `utoipa::path` attributes share: query parameters
/// (`params(Paging, After, ...)`) and problem responses (`responses(...,
/// NoValidToken, NotYours, ...)`), each written once. The handlers parse
/// the parameters with [`crate::extract::Params`]; these types only
/// describe them, so their fields are never read.
#[allow(dead_code, reason = "types that only describe the API to utoipa")]
pub(crate) mod shared {
    use utoipa::{IntoParams, IntoResponses};

    use crate::error::Problem;

    /// `page` and `size` of every collection.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub(crate) struct Paging {
        /// 0-based page
        #[param(minimum = 0, maximum = 1_000_000_000)]
        page: Option<u64>,
        /// Page size (default 20)
        #[param(minimum = 1, maximum = 1000)]
        size: Option<u64>,
    }

    /// `after` of every read model.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub(crate) struct After {
        /// Answer once the events up to this seq (an `X-Sugang-Seq`) are applied; 409 beyond the log's last seq
        #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
        after: Option<u64>,
    }

    /// 401 without a valid token.
    #[derive(IntoResponses)]
    #[response(status = 401, description = "No valid token", content_type = "application/problem+json")]
    pub(crate) struct NoValidToken(Problem);

    /// 403 for someone else's resource.
    #[derive(IntoResponses)]
    #[response(status = 403, description = "Not yours", content_type = "application/problem+json")]
    pub(crate) struct NotYours(Problem);

    /// 400 for an id path segment that is not a number.
    #[derive(IntoResponses)]
    #[response(status = 400, description = "The id is not a number", content_type = "application/problem+json")]
    pub(crate) struct BadId(Problem);

    /// 404 for an unknown id.
    #[derive(IntoResponses)]
    #[response(status = 404, description = "Unknown", content_type = "application/problem+json")]
    pub(crate) struct Unknown(Problem);

    /// 422 for a query parameter out of range or of the wrong type.
    #[derive(IntoResponses)]
    #[response(status = 422, description = "A bad query parameter", content_type = "application/problem+json")]
    pub(crate) struct BadQuery(Problem);

    /// What a read model answers when asked to wait with `after`.
    #[derive(IntoResponses)]
    pub(crate) enum CatchUp {
        #[response(
            status = 409,
            description = "`after` is beyond the last event seq",
            content_type = "application/problem+json"
        )]
        Beyond(Problem),
        #[response(
            status = 503,
            description = "The read model did not catch up in time (see Retry-After)",
            content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds"))
        )]
        Behind(Problem),
    }
}
