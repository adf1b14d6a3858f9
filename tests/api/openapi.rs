//! The OpenAPI document: 3.1, and every route of the contract with its
//! methods.

use crate::app::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc.body["openapi"]);
    let paths = doc.body["paths"].as_object().expect("paths");
    let expected: &[(&str, &[&str])] = &[
        ("/courses", &["get", "post"]),
        ("/courses/{id}", &["get", "patch", "delete"]),
        ("/classes", &["get", "post"]),
        ("/classes/{id}", &["get", "delete"]),
        ("/payments", &["get"]),
        ("/payments/{id}", &["get"]),
        ("/deliveries", &["get"]),
        ("/deliveries/{id}", &["get"]),
        ("/courseSchedules", &["get"]),
        ("/mypages", &["get"]),
        ("/inquiryMypages", &["get"]),
        ("/notifications", &["get"]),
        ("/health/live", &["get"]),
        ("/health/ready", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
        ("/admin/actors", &["get"]),
        ("/admin/breaker", &["get"]),
        ("/admin/faults/payment", &["get", "put"]),
        ("/admin/faults/courses/{id}/panic", &["post"]),
        ("/admin/faults/subscribers/{name}", &["put"]),
    ];
    for (path, methods) in expected {
        let item = paths.get(*path).unwrap_or_else(|| panic!("{path} is missing"));
        for method in *methods {
            assert!(item.get(*method).is_some(), "{method} {path} is missing");
        }
    }
    let schemas = doc.body["components"]["schemas"].as_object().expect("schemas");
    for schema in ["CourseModel", "NewCourse", "CourseChange", "ClassModel", "NewClass", "Problem", "PaymentModel"] {
        assert!(schemas.contains_key(schema), "{schema} is missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_edge() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json").await.body;
    // Integer fields: a JSON integer or a string of digits, in the same range.
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in
        [("NewCourse", "fee"), ("NewCourse", "capacity"), ("CourseChange", "fee"), ("NewClass", "courseId")]
    {
        let one_of =
            schemas[schema]["properties"][field]["oneOf"].as_array().unwrap_or_else(|| panic!("{schema}.{field}"));
        assert!(one_of.iter().any(|s| s["type"] == "integer" && s["minimum"].is_number()), "{schema}.{field}");
        assert!(one_of.iter().any(|s| s["type"] == "string" && s["pattern"].is_string()), "{schema}.{field}");
    }
    assert!(schemas["NewCourse"]["required"].as_array().unwrap().contains(&"fee".into()));
    assert!(schemas["NewClass"]["properties"]["textBook"].is_object());
    // Notifications are addressed to a (role, name).
    assert!(schemas["NotificationModel"]["properties"]["recipientRole"].is_object());
    let params = doc["paths"]["/notifications"]["get"]["parameters"].as_array().unwrap();
    assert!(params.iter().any(|p| p["name"] == "recipientRole"));
    // The edge's own answers.
    let responses = |path: &str, method: &str| doc["paths"][path][method]["responses"].as_object().unwrap().clone();
    for code in ["408", "413", "415", "431"] {
        assert!(responses("/courses", "post").contains_key(code), "POST /courses {code}");
    }
    for code in ["408", "431"] {
        assert!(responses("/courses", "get").contains_key(code), "GET /courses {code}");
    }
    assert!(!responses("/courses", "get").contains_key("415"), "no body, no 415");
}
