//! HAL as Spring Data REST served it: `application/hal+json` (plain JSON to
//! a client that asks for it), the resource-named link on items, and
//! `first`/`prev`/`next`/`last` on collections.

use reqwest::header::{ACCEPT, CONTENT_TYPE};

use crate::app::spawn_app;

#[tokio::test]
async fn resources_are_hal_and_plain_json_to_who_asks() {
    let app = spawn_app().await;
    let course = app.course("korean", "Hong", 10_000, Some(40)).await;
    let get = |accept: Option<&'static str>| {
        let mut request = app.client.get(app.url(&format!("/courses/{course}")));
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        request.send()
    };
    let content_type = |r: &reqwest::Response| r.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
    assert_eq!(content_type(&get(None).await.unwrap()), "application/hal+json");
    assert_eq!(content_type(&get(Some("application/hal+json")).await.unwrap()), "application/hal+json");
    assert_eq!(content_type(&get(Some("*/*")).await.unwrap()), "application/hal+json");
    let plain = get(Some("application/json")).await.unwrap();
    assert_eq!(content_type(&plain), "application/json");
    let body: serde_json::Value = plain.json().await.unwrap();
    assert_eq!(body["_links"]["self"]["href"], format!("/courses/{course}"));
    assert_eq!(body["_links"]["course"]["href"], format!("/courses/{course}"), "the resource-named link");

    let enrolled = app.enroll(course, "Kim").await;
    assert_eq!(enrolled.header("content-type"), Some("application/hal+json"));
    assert_eq!(enrolled.body["_links"]["class"], enrolled.body["_links"]["self"]);
    assert_eq!(enrolled.body["_links"]["course"]["href"], format!("/courses/{course}"));

    let missing = app.get("/courses/999").await;
    assert_eq!(missing.header("content-type"), Some("application/problem+json"), "problems keep their type");
    let metrics = app.get("/admin/breaker").await;
    assert_eq!(metrics.header("content-type"), Some("application/json"), "operations stay plain JSON");
}

#[tokio::test]
async fn collections_link_their_pages() {
    let app = spawn_app().await;
    for n in 0..5 {
        app.course(&format!("course {n}"), "Hong", 1_000, None).await;
    }
    let links = |body: &serde_json::Value, name: &str| body["_links"][name]["href"].as_str().map(str::to_owned);
    let middle = app.get("/courses?teacher=Hong&size=2&page=1").await;
    assert_eq!(middle.status, 200);
    assert_eq!(middle.body["page"]["totalPages"], 3);
    assert_eq!(links(&middle.body, "self").as_deref(), Some("/courses?teacher=Hong&size=2&page=1"));
    assert_eq!(links(&middle.body, "first").as_deref(), Some("/courses?page=0&teacher=Hong&size=2"));
    assert_eq!(links(&middle.body, "prev").as_deref(), Some("/courses?page=0&teacher=Hong&size=2"));
    assert_eq!(links(&middle.body, "next").as_deref(), Some("/courses?page=2&teacher=Hong&size=2"));
    assert_eq!(links(&middle.body, "last").as_deref(), Some("/courses?page=2&teacher=Hong&size=2"));

    let next = app.get(&links(&middle.body, "next").unwrap()).await;
    assert_eq!(next.body["_embedded"]["courses"].as_array().unwrap().len(), 1, "the link leads to the last page");
    assert_eq!(links(&next.body, "next"), None, "no next on the last page");
    let first = app.get("/courses?size=2").await;
    assert_eq!(links(&first.body, "prev"), None, "no prev on the first page");
    let empty = app.get("/courses?teacher=Nobody").await;
    assert_eq!((links(&empty.body, "first"), links(&empty.body, "last")), (None, None), "nothing to page through");
}
