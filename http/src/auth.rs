//! Who is calling, and what they may do: the rules of API.md's "Auth".
//!
//! Without a secret the service is open (and `serve` refuses to listen
//! beyond loopback): every caller is an anonymous admin. With a secret (at
//! least 32 bytes: a weaker one cannot be configured), callers present an
//! HS256 bearer token with `sub` (their name), `role`, `exp` (required) and
//! optionally `nbf`, both checked with at most 5 s of leeway.
//!
//! A person is the pair (role, name): an instructor named Park and a student
//! named Park are two people, and nothing here compares names alone. Owns
//! token checking and issuing and the ownership checks handlers call; must
//! not know what a course or an enrollment is beyond who owns it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

/// A caller's role, as the token's `role` claim says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Student,
    Instructor,
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "student" => Ok(Role::Student),
            "instructor" => Ok(Role::Instructor),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: expected student, instructor or admin")),
        }
    }
}

/// A token's claims.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    /// Unix seconds; required.
    exp: u64,
    /// Unix seconds before which the token is not valid yet; optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

/// The fewest bytes an HS256 secret may have: RFC 7518 asks for a key of
/// the hash's size, 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

/// The most clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// Why a JWT secret is refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "the JWT secret is empty: set --jwt-secret (SUGANG_JWT_SECRET) to at least {MIN_SECRET_BYTES} random bytes, or leave it unset to run open on loopback"
    )]
    Empty,
    #[error(
        "the JWT secret is {0} bytes: HS256 needs at least {MIN_SECRET_BYTES} (RFC 7518); use e.g. `openssl rand -base64 32`"
    )]
    TooShort(usize),
}

/// How callers prove who they are: nothing (open) or an HS256 secret.
#[derive(Clone, Default)]
pub struct Auth {
    keys: Option<Arc<Keys>>,
}

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// HS256, `exp` required, `exp` and `nbf` checked with [`LEEWAY_SECS`].
    validation: Validation,
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
#[error("cannot issue a token: {0}")]
pub struct TokenError(String);

impl Auth {
    /// Open: no tokens, every caller is an admin. Loopback only.
    pub fn open() -> Self {
        Auth { keys: None }
    }

    /// Bearer tokens signed with `secret` (HS256). An empty secret, or one
    /// shorter than [`MIN_SECRET_BYTES`], is refused: anyone could sign
    /// tokens with it.
    pub fn with_secret(secret: &str) -> Result<Self, SecretError> {
        match secret.len() {
            0 => return Err(SecretError::Empty),
            n if n < MIN_SECRET_BYTES => return Err(SecretError::TooShort(n)),
            _ => {}
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        Ok(Auth {
            keys: Some(Arc::new(Keys {
                encoding: EncodingKey::from_secret(secret.as_bytes()),
                decoding: DecodingKey::from_secret(secret.as_bytes()),
                validation,
            })),
        })
    }

    /// Whether callers must present a token.
    pub fn is_open(&self) -> bool {
        self.keys.is_none()
    }

    /// A token for `sub` in `role`, valid for `ttl`.
    pub fn issue(&self, role: Role, sub: &str, ttl: Duration) -> Result<String, TokenError> {
        let keys = self.keys.as_ref().ok_or_else(|| TokenError("no JWT secret is configured".into()))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let claims = Claims { sub: sub.to_owned(), role, exp: (now + ttl).as_secs(), nbf: None };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
            .map_err(|e| TokenError(e.to_string()))
    }

    /// The caller of a request: `None` without a token (in secured mode),
    /// 401 for a token that does not verify.
    fn caller(&self, parts: &Parts) -> Result<Option<Caller>, ApiError> {
        let Some(keys) = &self.keys else { return Ok(Some(Caller { name: None, role: Role::Admin })) };
        let Some(header) = parts.headers.get(AUTHORIZATION) else { return Ok(None) };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or_else(|| ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into()))?;
        let claims = jsonwebtoken::decode::<Claims>(token.trim(), &keys.decoding, &keys.validation)
            .map_err(|e| ApiError::Unauthorized(format!("invalid token: {e}")))?
            .claims;
        Ok(Some(Caller { name: Some(claims.sub), role: claims.role }))
    }
}

/// Who is calling.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The token's `sub`; `None` in open mode (an anonymous admin).
    name: Option<String>,
    role: Role,
}

impl Caller {
    pub(crate) fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub(crate) fn role(&self) -> Role {
        self.role
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// 403 unless an admin.
    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() { Ok(()) } else { Err(ApiError::Forbidden("only an admin may do this".into())) }
    }

    /// 403 unless an admin or in `role`.
    pub(crate) fn require_role(&self, role: Role) -> Result<(), ApiError> {
        if self.is_admin() || self.role == role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("only a {role:?} or an admin may do this").to_lowercase()))
        }
    }

    /// Whether the caller is the person (`role`, `name`). Admins are no
    /// one in particular; open mode's anonymous admin is no one at all.
    pub(crate) fn is(&self, role: Role, name: &str) -> bool {
        self.role == role && self.name.as_deref() == Some(name)
    }

    /// 403 unless an admin or the person (`role`, `name`): a student named
    /// like an instructor is not that instructor.
    pub(crate) fn require_person(&self, role: Role, name: &str) -> Result<(), ApiError> {
        if self.is_admin() || self.is(role, name) {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this belongs to someone else".into()))
        }
    }

    /// The person a filter or a body names, for a caller in `role` acting
    /// only as themselves: absent means the caller; naming someone else is
    /// 403, and so is a caller in another role. Admins get what they asked
    /// for.
    pub(crate) fn as_self(&self, role: Role, requested: Option<String>) -> Result<Option<String>, ApiError> {
        self.require_role(role)?;
        if self.is_admin() {
            return Ok(requested);
        }
        match requested {
            None => Ok(self.name.clone()),
            Some(other) if self.is(role, &other) => Ok(Some(other)),
            Some(_) => Err(ApiError::Forbidden("you may act only as yourself".into())),
        }
    }
}

/// A caller who must be known (401 otherwise).
pub(crate) struct AuthUser(pub(crate) Caller);

/// A caller who may be anonymous (the public catalog); a token that is sent
/// must still verify.
pub(crate) struct MaybeAuthUser;

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state
            .auth
            .caller(parts)?
            .map(AuthUser)
            .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))
    }
}

impl FromRequestParts<AppState> for MaybeAuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.caller(parts)?;
        Ok(MaybeAuthUser)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "unit-test-secret-of-thirty-two-bytes!";

    fn parts(token: &str) -> Parts {
        let request = axum::http::Request::builder().header(AUTHORIZATION, format!("Bearer {token}")).body(()).unwrap();
        request.into_parts().0
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    /// A token with hand-made claims, signed with `SECRET`.
    fn signed(claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_claims() {
        let auth = Auth::with_secret(SECRET).unwrap();
        let token = auth.issue(Role::Student, "Kim", Duration::from_secs(60)).unwrap();
        let caller = auth.caller(&parts(&token)).unwrap().unwrap();
        assert_eq!((caller.name(), caller.role), (Some("Kim"), Role::Student));
        let other = Auth::with_secret("another-secret-of-at-least-32-bytes").unwrap();
        assert!(matches!(other.caller(&parts(&token)), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn empty_and_short_secrets_are_refused() {
        assert!(matches!(Auth::with_secret(""), Err(SecretError::Empty)));
        assert!(matches!(Auth::with_secret("s3cret"), Err(SecretError::TooShort(6))));
        assert!(matches!(Auth::with_secret(&"x".repeat(31)), Err(SecretError::TooShort(31))));
        assert!(Auth::with_secret(&"x".repeat(32)).is_ok());
    }

    #[test]
    fn exp_is_required_and_exp_and_nbf_have_five_seconds_of_leeway() {
        let auth = Auth::with_secret(SECRET).unwrap();
        let verdict = |claims: serde_json::Value| auth.caller(&parts(&signed(&claims))).is_ok();
        let now = now();
        assert!(!verdict(serde_json::json!({"sub": "Kim", "role": "student"})), "no exp");
        assert!(!verdict(serde_json::json!({"sub": "Kim", "role": "student", "exp": now - 10})), "expired");
        assert!(verdict(serde_json::json!({"sub": "Kim", "role": "student", "exp": now - 2})), "within leeway");
        assert!(!verdict(serde_json::json!({"sub": "Kim", "role": "student", "exp": now + 60, "nbf": now + 30})));
        assert!(verdict(serde_json::json!({"sub": "Kim", "role": "student", "exp": now + 60, "nbf": now + 2})));
        assert!(verdict(serde_json::json!({"sub": "Kim", "role": "student", "exp": now + 60, "nbf": now - 60})));
    }

    #[test]
    fn a_person_is_a_role_and_a_name() {
        let student_hong = Caller { name: Some("Hong".into()), role: Role::Student };
        assert!(student_hong.require_person(Role::Student, "Hong").is_ok());
        assert!(student_hong.require_person(Role::Instructor, "Hong").is_err());
        let instructor_hong = Caller { name: Some("Hong".into()), role: Role::Instructor };
        assert!(instructor_hong.require_person(Role::Student, "Hong").is_err());
        let admin = Caller { name: Some("Hong".into()), role: Role::Admin };
        assert!(admin.require_person(Role::Student, "Kim").is_ok());
        assert!(!admin.is(Role::Student, "Hong"));
    }

    #[test]
    fn students_act_only_as_themselves() {
        let kim = Caller { name: Some("Kim".into()), role: Role::Student };
        assert_eq!(kim.as_self(Role::Student, None).unwrap().as_deref(), Some("Kim"));
        assert!(kim.as_self(Role::Student, Some("Lee".into())).is_err());
        assert!(kim.as_self(Role::Instructor, None).is_err());
        assert!(kim.as_self(Role::Instructor, Some("Kim".into())).is_err());
        let admin = Caller { name: None, role: Role::Admin };
        assert_eq!(admin.as_self(Role::Student, Some("Lee".into())).unwrap().as_deref(), Some("Lee"));
    }
}
