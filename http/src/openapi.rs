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
