//! The OpenAPI 3.1 document, generated from the handlers' `utoipa::path`
//! attributes and the representations' `ToSchema` derives. Written by hand
//! here, once each: what to include, the answers of the edge itself (408,
//! 413, 415, 431) that every operation can give, and the schema of an
//! integer field (a JSON integer or a string of digits).

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
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
        crate::waitlists::list,
        crate::waitlists::show,
        crate::waitlists::leave,
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
        crate::admin::backup,
        crate::queue::take,
        crate::queue::show,
        crate::queue::events,
        crate::queue::gate,
        crate::queue::set_gate,
        crate::cluster::status,
    ),
    modifiers(&BearerAuth, &EdgeResponses, &HalResponses),
    tags(
        (name = "courses", description = "The catalog"),
        (name = "classes", description = "Enrollments: enroll and pay, cancel and refund"),
        (name = "payments", description = "Payments (read only)"),
        (name = "deliveries", description = "Textbook shipments (read only)"),
        (name = "waitlists", description = "Waitlist entries: joined by POST /classes with waitlist, left by DELETE"),
        (name = "read models", description = "Course schedules, my-pages, notifications (read only)"),
        (name = "operations", description = "Health, metrics, this document"),
        (name = "waiting room", description = "Tickets of the waiting room in front of enrollment on registration day"),
        (name = "admin", description = "Supervision tree, breaker, fault injection, the waiting room's gate, the cluster"),
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

/// The answers the edge gives before a handler runs, on every operation:
/// 408 and 431 for any request, 413 and 415 for those with a body.
struct EdgeResponses;

impl Modify for EdgeResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
                )
                .build()
        };
        let add = |operation: &mut Operation| {
            let responses = &mut operation.responses.responses;
            responses.entry("408".into()).or_insert_with(|| {
                problem("The headers or the body took over 10 s to arrive; the connection is closed").into()
            });
            responses.entry("431".into()).or_insert_with(|| {
                ResponseBuilder::new().description("The request line and headers are over 16 KiB").build().into()
            });
            if operation.request_body.is_some() {
                responses.entry("413".into()).or_insert_with(|| {
                    problem("The body is over 64 KiB (answered at once from Content-Length)").into()
                });
                responses.entry("415".into()).or_insert_with(|| problem("The body is not said to be JSON").into());
            }
        };
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch] {
                if let Some(operation) = operation.as_mut() {
                    add(operation);
                }
            }
        }
    }
}

/// The resources answer `application/hal+json` (`application/json` to a
/// client that asks for it): every JSON answer of a resource's operation is
/// declared under both types. Operations, admin and health stay JSON.
struct HalResponses;

impl Modify for HalResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let plain = ["/admin", "/health", "/metrics", "/openapi.json"];
        for (path, item) in openapi.paths.paths.iter_mut() {
            if plain.iter().any(|prefix| path.starts_with(prefix)) {
                continue;
            }
            for operation in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch] {
                let Some(operation) = operation.as_mut() else { continue };
                for response in operation.responses.responses.values_mut() {
                    if let utoipa::openapi::RefOr::T(response) = response
                        && let Some(json) = response.content.get("application/json").cloned()
                    {
                        response.content.insert("application/hal+json".into(), json);
                    }
                }
            }
        }
    }
}

/// The schema of an integer field of a request body: a JSON integer in
/// `[min, max]`, or a string of decimal digits (leading zeros allowed) that
/// `pattern` matches exactly when its value is in the same range — what
/// [`crate::extract::Int`] accepts.
pub(crate) mod integers {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    use utoipa::openapi::{RefOr, Schema};

    fn integer(min: i64, max: i64, pattern: &str, nullable: bool) -> RefOr<Schema> {
        let mut one_of = OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(min))
                    .maximum(Some(max)),
            )
            .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)));
        if nullable {
            one_of = one_of.item(ObjectBuilder::new().schema_type(Type::Null));
        }
        RefOr::T(Schema::OneOf(one_of.build()))
    }

    /// A fee in won: 0 to 10^12.
    pub(crate) fn fee() -> RefOr<Schema> {
        integer(0, 1_000_000_000_000, r"^0*([0-9]{1,12}|1000000000000)$", false)
    }

    /// A fee, or `null` (absent).
    pub(crate) fn fee_or_null() -> RefOr<Schema> {
        integer(0, 1_000_000_000_000, r"^0*([0-9]{1,12}|1000000000000)$", true)
    }

    /// A count of seats or students: 1 to 10^6.
    pub(crate) fn count() -> RefOr<Schema> {
        integer(1, 1_000_000, r"^0*([1-9][0-9]{0,5}|1000000)$", false)
    }

    /// A count, or `null` (absent, or for seats: unlimited).
    pub(crate) fn count_or_null() -> RefOr<Schema> {
        integer(1, 1_000_000, r"^0*([1-9][0-9]{0,5}|1000000)$", true)
    }

    /// A number of places that may be none: 0 to 10^6.
    pub(crate) fn places() -> RefOr<Schema> {
        integer(0, 1_000_000, r"^0*([0-9]{1,6}|1000000)$", false)
    }

    /// A number of places, or `null` (absent).
    pub(crate) fn places_or_null() -> RefOr<Schema> {
        integer(0, 1_000_000, r"^0*([0-9]{1,6}|1000000)$", true)
    }

    /// An id: from 1 (as a string, up to 18 digits).
    pub(crate) fn id() -> RefOr<Schema> {
        integer(1, i64::MAX, r"^0*[1-9][0-9]{0,17}$", false)
    }

    /// An admission's time to live: 1 to 86400 s.
    pub(crate) fn ttl_secs() -> RefOr<Schema> {
        integer(1, 86_400, r"^0*([1-9][0-9]{0,3}|[1-7][0-9]{4}|8[0-5][0-9]{3}|86[0-3][0-9]{2}|86400)$", false)
    }

    /// A simulated latency: 0 to 60000 ms, or `null` (absent: 0).
    pub(crate) fn latency_ms_or_null() -> RefOr<Schema> {
        integer(0, 60_000, r"^0*([0-9]{1,4}|[1-5][0-9]{4}|60000)$", true)
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
