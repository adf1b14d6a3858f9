//! HAL shapes shared by every resource: links, the `page` block, the
//! collection envelope, and the response of a command (status, `Location`,
//! `X-Sugang-Seq`). Also the one place times become RFC 3339.
//!
//! Owns representation plumbing only; each resource module owns its item.

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

/// `_links` of an item or a collection with only `self`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct SelfLinks {
    #[serde(rename = "self")]
    pub(crate) this: Link,
}

impl SelfLinks {
    pub(crate) fn to(href: impl Into<String>) -> Self {
        SelfLinks { this: Link::to(href) }
    }
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
            pub(crate) links: $crate::hal::SelfLinks,
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
                    links: $crate::hal::SelfLinks::to(self_href),
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
    fn pages_count_their_totals() {
        let paged = Paged { items: vec![1, 2], total: 41 };
        let info = PageInfo::of(&paged, PageRequest { number: 2, size: 20 });
        assert_eq!((info.total_pages, info.total_elements, info.number, info.size), (3, 41, 2, 20));
    }
}
