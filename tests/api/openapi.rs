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
        ("/waitlists", &["get"]),
        ("/waitlists/{id}", &["get", "delete"]),
        ("/health/live", &["get"]),
        ("/health/ready", &["get"]),
        ("/metrics", &["get"]),
        ("/openapi.json", &["get"]),
        ("/admin/actors", &["get"]),
        ("/admin/breaker", &["get"]),
        ("/admin/faults/payment", &["get", "put"]),
        ("/admin/faults/courses/{id}/panic", &["post"]),
        ("/admin/faults/subscribers/{name}", &["put"]),
        ("/admin/cluster", &["get"]),
    ];
    for (path, methods) in expected {
        let item = paths.get(*path).unwrap_or_else(|| panic!("{path} is missing"));
        for method in *methods {
            assert!(item.get(*method).is_some(), "{method} {path} is missing");
        }
    }
    let schemas = doc.body["components"]["schemas"].as_object().expect("schemas");
    for schema in [
        "CourseModel",
        "NewCourse",
        "CourseChange",
        "ClassModel",
        "NewClass",
        "Problem",
        "PaymentModel",
        "ClusterStatus",
    ] {
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

/// `docs/api-reference.md`, the contract a client reads in the repo, is
/// generated from the `/openapi.json` the server serves: this test renders it
/// again and fails if the committed file differs (run it with
/// `SUGANG_UPDATE_DOCS=1` to write the new one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reference_in_docs_is_the_servers_openapi() {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json").await.body;
    let rendered = render_reference(&doc);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api-reference.md");
    if std::env::var_os("SUGANG_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "docs/api-reference.md is not what /openapi.json says: run \
         `SUGANG_UPDATE_DOCS=1 cargo test --test api the_api_reference` and commit it"
    );
}

/// One section per path: each method's summary, parameters, request body and
/// answers, in the document's order of paths (sorted) and methods.
fn render_reference(doc: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let title = doc["info"]["title"].as_str().unwrap_or("sugang");
    let version = doc["info"]["version"].as_str().unwrap_or("");
    let _ = writeln!(out, "# {title} {version}: HTTP API reference\n");
    let _ = writeln!(
        out,
        "Generated from the `/openapi.json` the server serves (OpenAPI {}); \
         `tests/api/openapi.rs` fails when this file and the server differ. \
         The conventions (HAL, problem+json, integers, `?after=`, auth) are in \
         [`contract.md`](contract.md).\n",
        doc["openapi"].as_str().unwrap_or("")
    );
    let mut paths: Vec<(&String, &serde_json::Value)> =
        doc["paths"].as_object().map(|p| p.iter().collect()).unwrap_or_default();
    paths.sort_by(|a, b| a.0.cmp(b.0));
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let _ = writeln!(out, "## `{} {path}`\n", method.to_uppercase());
            if let Some(summary) = op["summary"].as_str() {
                let _ = writeln!(out, "{summary}\n");
            }
            if let Some(description) = op["description"].as_str() {
                let _ = writeln!(out, "{description}\n");
            }
            if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                let _ = writeln!(out, "| parameter | in | required | description |\n| --- | --- | --- | --- |");
                for p in params {
                    let description = p["description"].as_str().unwrap_or("").replace('\n', " ");
                    let _ = writeln!(
                        out,
                        "| `{}` | {} | {} | {description} |",
                        p["name"].as_str().unwrap_or(""),
                        p["in"].as_str().unwrap_or(""),
                        if p["required"].as_bool().unwrap_or(false) { "yes" } else { "no" },
                    );
                }
                out.push('\n');
            }
            if let Some(body) = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str() {
                let _ = writeln!(out, "Body: `{}` (`application/json`).\n", body.rsplit('/').next().unwrap_or(body));
            }
            let _ = writeln!(out, "| status | answer |\n| --- | --- |");
            let mut responses: Vec<(&String, &serde_json::Value)> =
                op["responses"].as_object().map(|r| r.iter().collect()).unwrap_or_default();
            responses.sort_by(|a, b| a.0.cmp(b.0));
            for (status, response) in responses {
                let description = response["description"].as_str().unwrap_or("").replace('\n', " ");
                let types: Vec<&str> =
                    response["content"].as_object().map(|c| c.keys().map(String::as_str).collect()).unwrap_or_default();
                let types = if types.is_empty() { String::new() } else { format!(" ({})", types.join(", ")) };
                let _ = writeln!(out, "| {status} | {description}{types} |");
            }
            out.push('\n');
        }
    }
    out
}
