//! Open mode's guard against a browser used as a confused deputy.
//!
//! Without a JWT secret every caller is an anonymous admin, and `serve`
//! refuses to listen anywhere but on loopback. That alone does not keep a
//! web page out: a page on `evil.example` can make the visitor's browser
//! send requests to `127.0.0.1:8080` (cross-site request forgery), or rebind
//! its own name to 127.0.0.1 so its scripts read the answers as
//! same-origin (DNS rebinding). So, in open mode only:
//!
//! - a request must be addressed to a loopback host (`Host` is `localhost`,
//!   a `*.localhost` name, or a loopback IP literal): a rebound name carries
//!   the attacker's host name and is refused;
//! - a request that changes something (any method but GET, HEAD, OPTIONS)
//!   and says where it comes from (`Origin`) must come from a loopback
//!   origin: a cross-site form or script is refused.
//!
//! Both refusals are 403 problem+json. Clients that are not browsers (curl,
//! httpie, wrk, the tests) send a loopback `Host` and no `Origin`, and pass.
//! With a secret, bearer tokens are the defence (a browser never attaches
//! them on its own) and nothing here applies.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The middleware: `open` is whether the server runs without a secret.
pub(crate) async fn loopback_only(State(open): State<bool>, request: Request<Body>, next: Next) -> Response {
    if open && let Err(refusal) = check(request.method(), request.uri(), request.headers()) {
        tracing::info!(
            method = %request.method(),
            uri = %request.uri(),
            host = ?request.headers().get(HOST),
            origin = ?request.headers().get(ORIGIN),
            reason = refusal,
            "open mode refused a request that is not from loopback"
        );
        return ApiError::Forbidden(refusal.into()).into_response();
    }
    next.run(request).await
}

/// Why a request may not reach an open server, if it may not.
fn check(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), &'static str> {
    // An absolute-form request target names its host in the URI; hyper
    // keeps it there, and it must agree with loopback as `Host` must.
    // The whole authority is read, not `Authority::host`, which keeps
    // `127.0.0.1` of `127.0.0.1:8080.evil.example` (a port that is no port).
    if let Some(authority) = uri.authority()
        && !is_loopback_host(host_of(authority.as_str()))
    {
        return Err(HOST_REFUSAL);
    }
    if let Some(host) = headers.get(HOST) {
        let host = host.to_str().map_err(|_| HOST_REFUSAL)?;
        if !is_loopback_host(host_of(host)) {
            return Err(HOST_REFUSAL);
        }
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().map_err(|_| ORIGIN_REFUSAL)?;
        // `Origin: null` (a sandboxed frame, a file:// page) is no one's.
        let host = origin
            .parse::<Uri>()
            .ok()
            .and_then(|uri| uri.authority().map(|a| host_of(a.as_str()).to_owned()))
            .ok_or(ORIGIN_REFUSAL)?;
        if !is_loopback_host(&host) {
            return Err(ORIGIN_REFUSAL);
        }
    }
    Ok(())
}

const HOST_REFUSAL: &str = "this server runs without a JWT secret and answers only requests addressed to a loopback host \
     (localhost, 127.0.0.1, [::1]); to serve other names, run it with --jwt-secret";
const ORIGIN_REFUSAL: &str = "this server runs without a JWT secret and accepts changes only from pages it served itself \
     (a loopback origin); to serve other origins, run it with --jwt-secret";

/// The host part of a `Host` header value: without its port, and without
/// the brackets of an IPv6 literal.
fn host_of(value: &str) -> &str {
    let value = value.trim();
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match value.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => value,
    }
}

/// Whether `host` can only mean this machine: `localhost` and its
/// subdomains (RFC 6761 reserves them for loopback, and browsers resolve
/// them there without asking DNS), or a loopback IP literal.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("a header value"));
        }
        map
    }

    fn verdict(method: Method, uri: &str, pairs: &[(&'static str, &'static str)]) -> Result<(), &'static str> {
        check(&method, &uri.parse().expect("a uri"), &headers(pairs))
    }

    #[test]
    fn loopback_hosts_pass_in_every_spelling() {
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "127.1.2.3:80",
            "localhost",
            "LocalHost:8080",
            "localhost.",
            "app.localhost:1",
            "[::1]:8080",
            "[::1]",
        ] {
            assert_eq!(verdict(Method::GET, "/courses", &[("host", host)]), Ok(()), "{host}");
        }
        assert_eq!(verdict(Method::GET, "/courses", &[]), Ok(()), "no Host at all (HTTP/1.0)");
    }

    #[test]
    fn other_hosts_are_refused_as_rebinding() {
        for host in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[::2]:80",
            "0.0.0.0:8080",
            "sugang",
        ] {
            assert_eq!(verdict(Method::GET, "/courses", &[("host", host)]), Err(HOST_REFUSAL), "{host}");
        }
        assert_eq!(verdict(Method::GET, "http://evil.example/courses", &[("host", "127.0.0.1")]), Err(HOST_REFUSAL));
    }

    #[test]
    fn a_change_from_another_origin_is_refused() {
        let local = ("host", "127.0.0.1:8080");
        for origin in
            ["http://evil.example", "https://evil.example:443", "null", "http://127.0.0.1.evil.example", "garbage"]
        {
            for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
                assert_eq!(verdict(method, "/classes", &[local, ("origin", origin)]), Err(ORIGIN_REFUSAL), "{origin}");
            }
            assert_eq!(verdict(Method::GET, "/classes", &[local, ("origin", origin)]), Ok(()), "reads are not changes");
        }
        for origin in ["http://127.0.0.1:8080", "http://localhost:3000", "http://[::1]:8080"] {
            assert_eq!(verdict(Method::POST, "/classes", &[local, ("origin", origin)]), Ok(()), "{origin}");
        }
    }

    /// Review of issue 13: spellings an attacker controls in `Origin` (a
    /// page's URL) and `Host` (a rebound name) that only look like loopback.
    #[test]
    fn loopback_lookalikes_are_refused() {
        let local = ("host", "127.0.0.1:8080");
        for origin in [
            "http://localhost@evil.example",
            "http://127.0.0.1@evil.example:8080",
            "http://127.0.0.1:8080.evil.example",
            "http://evil.example#@localhost",
            "http://evil.example?@localhost",
            "http://localhost.evil.example:8080",
            "http://[::ffff:127.0.0.1]:8080.evil.example",
            "http://0.0.0.0:8080",
            "http://127.0.0.1 .evil.example",
        ] {
            assert_eq!(
                verdict(Method::POST, "/classes", &[local, ("origin", origin)]),
                Err(ORIGIN_REFUSAL),
                "{origin}"
            );
        }
        for host in ["localhost:8080.evil.example", "127.0.0.1:80:81", "localhost@evil.example", "127.0.0.1:8080 evil"]
        {
            assert_eq!(verdict(Method::GET, "/courses", &[("host", host)]), Err(HOST_REFUSAL), "{host}");
        }
        for uri in
            ["http://localhost@evil.example/courses", "http://evil.example:80/courses", "https://0.0.0.0/courses"]
        {
            assert_eq!(verdict(Method::GET, uri, &[("host", "127.0.0.1")]), Err(HOST_REFUSAL), "{uri}");
        }
    }
}
