//! HAL shapes shared by every resource: links, the `page` block, the
//! collection envelope, and the response of a command (status, `Location`,
//! `X-Sugang-Seq`). Also the one place times become RFC 3339.
//!
//! Owns representation plumbing only; each resource module owns its item.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sugang_actors::{PageRequest, Paged};
use utoipa::ToSchema;

/// The header carrying the event seq a command's events reached.
pub(crate) const SEQ_HEADER: HeaderName = HeaderName::from_static("x-sugang-seq");

/// A HAL link.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct Link {
    #[schema(example = "/courses/1")]
    pub(crate) href: String,
}

impl Link {
    pub(crate) fn to(href: impl Into<String>) -> Self {
        Link { href: href.into() }
    }
}

/// `_links` of an item, as Spring Data REST gave them: `self`, a link named
/// after the resource (`course` on a course, `class` on an enrollment) to the
/// same place, and links to related items (`course` on an enrollment).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct ItemLinks {
    #[serde(rename = "self")]
    pub(crate) this: Link,
    /// The link named after the resource, then the related items.
    #[serde(flatten)]
    #[schema(additional_properties)]
    pub(crate) related: BTreeMap<&'static str, Link>,
}

impl ItemLinks {
    /// The links of the item at `href`, a `resource`.
    pub(crate) fn item(resource: &'static str, href: impl Into<String>) -> Self {
        let href = href.into();
        ItemLinks { this: Link::to(href.clone()), related: BTreeMap::from([(resource, Link::to(href))]) }
    }

    /// Adds a link to a related item.
    pub(crate) fn with(mut self, relation: &'static str, href: impl Into<String>) -> Self {
        self.related.insert(relation, Link::to(href));
        self
    }
}

/// `_links` of a collection: `self`, and `first`, `prev`, `next`, `last`
/// where they exist, each the same request at another `page`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct PageLinks {
    #[serde(rename = "self")]
    pub(crate) this: Link,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first: Option<Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) prev: Option<Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last: Option<Link>,
}

impl PageLinks {
    /// The links of page `info` of the collection requested as `self_href`.
    pub(crate) fn of(self_href: &str, info: &PageInfo) -> Self {
        let at = |number: u64| Some(Link::to(at_page(self_href, number)));
        let last = info.total_pages.checked_sub(1);
        PageLinks {
            this: Link::to(self_href),
            first: last.and_then(|_| at(0)),
            prev: (info.number > 0).then(|| at(info.number.min(last.unwrap_or(0) + 1) - 1)).flatten(),
            next: last.filter(|&last| info.number < last).and_then(|_| at(info.number + 1)),
            last: last.and_then(at),
        }
    }
}

/// `href` with its `page` query parameter set to `number` (added if absent),
/// the other parameters kept in their order.
fn at_page(href: &str, number: u64) -> String {
    let (path, query) = href.split_once('?').unwrap_or((href, ""));
    let mut params: Vec<String> =
        query.split('&').filter(|p| !p.is_empty() && p.split('=').next() != Some("page")).map(str::to_owned).collect();
    params.insert(0, format!("page={number}"));
    format!("{path}?{}", params.join("&"))
}

/// The `page` block of a collection.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PageInfo {
    pub(crate) size: u64,
    pub(crate) total_elements: u64,
    pub(crate) total_pages: u64,
    pub(crate) number: u64,
}

impl PageInfo {
    pub(crate) fn of<T>(paged: &Paged<T>, page: PageRequest) -> Self {
        let size = page.size.max(1) as u64;
        let total = paged.total as u64;
        PageInfo { size, total_elements: total, total_pages: total.div_ceil(size), number: page.number as u64 }
    }
}

/// Declares a HAL collection type: `{"_embedded": {"<name>": [...]}, "_links",
/// "page"}`.
macro_rules! collection {
    ($collection:ident, $embedded:ident, $name:ident, $item:ty) => {
        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub(crate) struct $embedded {
            pub(crate) $name: Vec<$item>,
        }

        #[derive(Debug, serde::Serialize, utoipa::ToSchema)]
        pub(crate) struct $collection {
            #[serde(rename = "_embedded")]
            pub(crate) embedded: $embedded,
            #[serde(rename = "_links")]
            pub(crate) links: $crate::hal::PageLinks,
            pub(crate) page: $crate::hal::PageInfo,
        }

        impl $collection {
            pub(crate) fn new(
                paged: sugang_actors::Paged<$item>,
                page: sugang_actors::PageRequest,
                self_href: String,
            ) -> Self {
                let info = $crate::hal::PageInfo::of(&paged, page);
                $collection {
                    embedded: $embedded { $name: paged.items },
                    links: $crate::hal::PageLinks::of(&self_href, &info),
                    page: info,
                }
            }
        }
    };
}
pub(crate) use collection;

/// Maps a page of records into a page of representations.
pub(crate) fn map_page<T, U>(paged: Paged<T>, f: impl FnMut(T) -> U) -> Paged<U> {
    Paged { items: paged.items.into_iter().map(f).collect(), total: paged.total }
}

/// The `self` href of a collection request: its path and query.
pub(crate) fn self_href(uri: &axum::http::Uri) -> String {
    uri.path_and_query().map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned())
}

/// The response to a command: `status`, `X-Sugang-Seq`, maybe `Location`,
/// maybe a body.
pub(crate) fn command_response<T: Serialize>(
    status: StatusCode,
    seq: u64,
    location: Option<String>,
    body: Option<T>,
) -> Response {
    let mut response = match body {
        Some(body) => (status, Json(body)).into_response(),
        None => status.into_response(),
    };
    response.headers_mut().insert(SEQ_HEADER, HeaderValue::from(seq));
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Serves a resource's JSON as `application/hal+json`, as Spring Data REST
/// did, unless the client asked for `application/json` and not for HAL: it
/// then gets the same body as `application/json`. Problems keep their type.
pub(crate) async fn content_type(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (json, hal) = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .fold((false, false), |(json, hal), mime| {
            (json || mime == "application/json", hal || mime == "application/hal+json")
        });
    let mut response = next.run(request).await;
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|ct| ct.as_bytes().starts_with(b"application/json"));
    // Only a client that asked for plain JSON and not for HAL gets it.
    let wants_plain = json && !hal;
    if is_json && !wants_plain {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/hal+json"));
    }
    response
}

/// Unix milliseconds as RFC 3339 UTC (`2026-11-22T10:00:00.123Z`).
pub(crate) fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_341_600_000), "2026-11-22T10:00:00Z");
        assert_eq!(rfc3339(1_795_341_600_123), "2026-11-22T10:00:00.123Z");
    }

    #[test]
    fn collections_link_first_prev_next_last_where_they_exist() {
        let links = |number, total| {
            let paged = Paged { items: Vec::<u8>::new(), total };
            let info = PageInfo::of(&paged, PageRequest { number, size: 20 });
            let links = PageLinks::of("/classes?student=Kim&page=1&size=20", &info);
            let href = |l: Option<Link>| l.map(|l| l.href);
            (href(links.first), href(links.prev), href(links.next), href(links.last))
        };
        assert_eq!(
            links(1, 50),
            (
                Some("/classes?page=0&student=Kim&size=20".into()),
                Some("/classes?page=0&student=Kim&size=20".into()),
                Some("/classes?page=2&student=Kim&size=20".into()),
                Some("/classes?page=2&student=Kim&size=20".into()),
            )
        );
        assert_eq!(links(0, 5).1, None, "no prev on the first page");
        assert_eq!(links(0, 5).2, None, "no next on the last page");
        assert_eq!(links(0, 0), (None, None, None, None), "an empty collection has no pages to link");
        assert_eq!(
            links(7, 50).1,
            Some("/classes?page=2&student=Kim&size=20".into()),
            "past the end: prev is the last"
        );
        assert_eq!(at_page("/courses", 3), "/courses?page=3");
    }

    #[test]
    fn items_link_themselves_by_their_resource_name() {
        let links = serde_json::to_value(ItemLinks::item("class", "/classes/7").with("course", "/courses/1")).unwrap();
        assert_eq!(
            links,
            serde_json::json!({"self": {"href": "/classes/7"}, "class": {"href": "/classes/7"},
                               "course": {"href": "/courses/1"}})
        );
    }

    #[test]
    fn pages_count_their_totals() {
        let paged = Paged { items: vec![1, 2], total: 41 };
        let info = PageInfo::of(&paged, PageRequest { number: 2, size: 20 });
        assert_eq!((info.total_pages, info.total_elements, info.number, info.size), (3, 41, 2, 20));
    }
}
