//! Extractors whose rejection is an [`ApiError`], so bad input gets the same
//! problem+json as everything else: JSON bodies ([`Json`]), query strings
//! ([`Params`]) and ids in paths ([`IdPath`]).
//!
//! Owns reading the request; what a value means belongs to the domain
//! newtypes, called by each resource's `TryFrom`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Visitor};
use sugang_actors::PageRequest;

use crate::error::ApiError;

/// The default page size of a collection.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 20;
/// The largest page size a client may ask for.
pub(crate) const MAX_PAGE_SIZE: usize = 1000;
/// The largest page number a client may ask for (far beyond any data).
pub(crate) const MAX_PAGE: u64 = 1_000_000_000;

/// The one integer parser of the edge, for query parameters, path ids and
/// integers sent as strings in JSON bodies: a string of ASCII decimal digits
/// (leading zeros allowed, as Spring's binding allowed them), at most
/// `i64::MAX` (what JSON and OpenAPI's `int64` carry). No sign, no spaces, no
/// fraction or exponent, no other digits (`"１２"`), nothing empty. The error
/// says what was wrong, for a problem's `detail`.
pub(crate) fn parse_digits(raw: &str) -> Result<u64, String> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("must be an integer written with the digits 0-9 only, got {raw:?}"));
    }
    raw.parse::<u64>()
        .ok()
        .filter(|&n| i64::try_from(n).is_ok())
        .ok_or_else(|| format!("must be at most {}, got {raw}", i64::MAX))
}

/// An integer in a JSON body: a JSON integer, or a string of decimal digits
/// (`"10000"`, as httpie's `fee=10000` sends it) read by [`parse_digits`].
/// A number with a fraction or an exponent (`1e3`, `1.0`, `-0.0`), a
/// boolean or any other string is refused, and the extractor names the
/// field. Whether the value is in range is the domain newtype's business.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Int(pub(crate) i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;

        impl Visitor<'_> for IntVisitor {
            type Value = Int;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer, or a string of decimal digits")
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v).map(Int).map_err(|_| E::custom(format!("must be at most {}, got {v}", i64::MAX)))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Int, E> {
                Err(E::custom(format!(
                    "must be an integer: a number with a fraction or an exponent ({v:?}) is not one"
                )))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Int, E> {
                parse_digits(v).map(|n| Int(n as i64)).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(IntVisitor)
    }
}

/// When the body of a request must have arrived: set by the server as the
/// request's head arrives, enforced by [`Json`] as it reads the body (408).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyDeadline(pub(crate) tokio::time::Instant);

/// Whether a request says its body is JSON: `application/json` or any
/// `application/…+json`, parameters (`charset`) allowed.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).and_then(|ct| ct.to_str().ok()).and_then(|ct| ct.split(';').next()).is_some_and(|mime| {
        let mime = mime.trim().to_ascii_lowercase();
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
    })
}

/// A JSON body. Malformed JSON is 400; a field of the wrong type is 422
/// naming the field (found with `serde_path_to_error`); a body over the limit
/// is 413; a missing content type, or one that is not JSON, is 415; a body
/// that has not arrived by its [`BodyDeadline`] is 408. Unknown fields are
/// ignored.
pub(crate) struct Json<T>(pub(crate) T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be JSON: send Content-Type: application/json".into(),
            ));
        }
        let deadline = req.extensions().get::<BodyDeadline>().copied();
        let read = Bytes::from_request(req, state);
        let read = match deadline {
            Some(BodyDeadline(at)) => tokio::time::timeout_at(at, read).await.map_err(|_| ApiError::RequestTimeout)?,
            None => read.await,
        };
        let bytes = read.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest { detail: format!("the body could not be read: {rejection}"), field: None }
            }
        })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest { detail: format!("malformed JSON: {e}"), field: None })?;
        if !value.is_object() {
            return Err(ApiError::BadRequest { detail: "the body must be a JSON object".into(), field: None });
        }
        serde_path_to_error::deserialize(value).map(Json).map_err(|e| {
            let field = e.path().to_string();
            let detail = e.into_inner().to_string();
            if field == "." { ApiError::BadRequest { detail, field: None } } else { ApiError::invalid(field, detail) }
        })
    }
}

/// An id in the path: a positive integer. Not a number is 400; zero names
/// nothing, so it is 404.
pub(crate) struct IdPath(pub(crate) u64);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_field("id", format!("bad path: {e}")))?;
        match parse_digits(&raw) {
            Ok(0) => Err(ApiError::NotFound("nothing has id 0: ids start at 1".into())),
            Ok(id) => Ok(IdPath(id)),
            Err(detail) => Err(ApiError::bad_field("id", detail)),
        }
    }
}

/// The query string, read by name: unknown parameters are ignored, and a
/// known one that does not parse is 422 naming it.
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Params::from_uri(&parts.uri)
    }
}

impl Params {
    fn from_uri(uri: &Uri) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::BadRequest { detail: format!("malformed query string: {e}"), field: None })?;
        Ok(Params { pairs })
    }

    fn raw(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A text filter; empty (as a form sends it) means no filter.
    pub(crate) fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        Ok(self.raw(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned))
    }

    /// An enumerated filter (a status, a role): present but empty is a bad
    /// value, not "no filter", since no value of the enumeration is empty.
    pub(crate) fn keyword(&self, name: &str) -> Option<&str> {
        self.raw(name)
    }

    /// A non-negative integer that JSON and OpenAPI's `int64` carry (at
    /// most `i64::MAX`).
    pub(crate) fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.raw(name).map(|v| parse_digits(v).map_err(|detail| ApiError::invalid(name, detail))).transpose()
    }

    /// An id filter: a positive integer.
    pub(crate) fn id(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.number(name)? {
            Some(0) => Err(ApiError::invalid(name, "must be a positive integer")),
            other => Ok(other),
        }
    }

    /// `?page` (0-based, default 0) and `?size` (1 to 1000, default 20).
    pub(crate) fn page(&self) -> Result<PageRequest, ApiError> {
        let number = self.number("page")?.unwrap_or(0);
        let size = self.number("size")?.unwrap_or(DEFAULT_PAGE_SIZE as u64);
        if !(1..=MAX_PAGE_SIZE as u64).contains(&size) {
            return Err(ApiError::invalid("size", format!("must be from 1 to {MAX_PAGE_SIZE}, got {size}")));
        }
        if number > MAX_PAGE {
            return Err(ApiError::invalid("page", format!("must be at most {MAX_PAGE}, got {number}")));
        }
        let number = usize::try_from(number).map_err(|_| ApiError::invalid("page", "is too large"))?;
        Ok(PageRequest { number, size: size as usize })
    }

    /// `?after=<seq>`: the event seq a read model must have reached.
    pub(crate) fn after(&self) -> Result<Option<u64>, ApiError> {
        self.number("after")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Params {
        Params::from_uri(&format!("/x?{query}").parse().unwrap()).unwrap()
    }

    #[test]
    fn pages_default_and_are_bounded() {
        assert_eq!(params("").page().unwrap(), PageRequest { number: 0, size: 20 });
        assert_eq!(params("page=2&size=1000").page().unwrap(), PageRequest { number: 2, size: 1000 });
        let field = |q: &str| match params(q).page().unwrap_err() {
            ApiError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field("size=0"), "size");
        assert_eq!(field("size=1001"), "size");
        assert_eq!(field("page=-1"), "page");
        assert_eq!(field("page=x"), "page");
        assert_eq!(field("page=1000000001"), "page");
    }

    #[test]
    fn integers_are_json_integers_or_digit_strings() {
        let int = |json: &str| serde_json::from_str::<Int>(json).map(|i| i.0).map_err(|e| e.to_string());
        assert_eq!(int("78"), Ok(78));
        assert_eq!(int("-3"), Ok(-3), "the domain decides whether a negative is allowed");
        assert_eq!(int("\"10000\""), Ok(10000));
        assert_eq!(int("\"007\""), Ok(7));
        assert_eq!(int("\"9223372036854775807\""), Ok(i64::MAX));
        for refused in [
            "78.0",
            "78.5",
            "1e3",
            "1E3",
            "-0.0",
            "-0",
            "1e300",
            "18446744073709551615",
            "9223372036854775808",
            "true",
            "null",
            "[1]",
            "\"\"",
            "\" 1\"",
            "\"1 \"",
            "\"+1\"",
            "\"-1\"",
            "\"0x10\"",
            "\"1e3\"",
            "\"1.0\"",
            "\"１２\"",
            "\"٣\"",
            "\"9223372036854775808\"",
        ] {
            assert!(int(refused).is_err(), "{refused} was accepted as {:?}", int(refused));
        }
    }

    #[test]
    fn the_digit_parser_is_strict() {
        assert_eq!(parse_digits("0"), Ok(0));
        assert_eq!(parse_digits("0042"), Ok(42));
        for refused in ["", " 1", "1 ", "+1", "-1", "0x10", "1_000", "１２", "1.0", "99999999999999999999"] {
            assert!(parse_digits(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn filters_are_parsed_by_name() {
        let p = params("student=Kim&courseId=3&empty=&zero=0");
        assert_eq!(p.text("student").unwrap().as_deref(), Some("Kim"));
        assert_eq!(p.id("courseId").unwrap(), Some(3));
        assert_eq!(p.text("empty").unwrap(), None);
        assert!(p.id("zero").is_err());
        assert!(params("n=9223372036854775808").number("n").is_err());
        assert!(params("n=%2B1").number("n").is_err(), "+1");
        assert!(params("n=-0").number("n").is_err());
        assert_eq!(params("n=9223372036854775807").number("n").unwrap(), Some(i64::MAX as u64));
        assert_eq!(p.text("absent").unwrap(), None);
    }
}
