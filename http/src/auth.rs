//! Who is calling, and what they may do: the rules of API.md's "Auth".
//!
//! Without a secret the service is open (and `serve` refuses to listen
//! beyond loopback): every caller is an anonymous admin. With a secret,
//! callers present an HS256 bearer token with `sub` (their name), `role` and
//! `exp`. Owns token checking and issuing and the ownership checks handlers
//! call; must not know what a course or an enrollment is beyond its owner's
//! name.

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
    exp: u64,
}

/// How callers prove who they are: nothing (open) or an HS256 secret.
#[derive(Clone, Default)]
pub struct Auth {
    keys: Option<Arc<Keys>>,
}

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
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

    /// Bearer tokens signed with `secret` (HS256).
    pub fn with_secret(secret: &str) -> Self {
        Auth {
            keys: Some(Arc::new(Keys {
                encoding: EncodingKey::from_secret(secret.as_bytes()),
                decoding: DecodingKey::from_secret(secret.as_bytes()),
            })),
        }
    }

    /// Whether callers must present a token.
    pub fn is_open(&self) -> bool {
        self.keys.is_none()
    }

    /// A token for `sub` in `role`, valid for `ttl`.
    pub fn issue(&self, role: Role, sub: &str, ttl: Duration) -> Result<String, TokenError> {
        let keys = self.keys.as_ref().ok_or_else(|| TokenError("no JWT secret is configured".into()))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let claims = Claims { sub: sub.to_owned(), role, exp: (now + ttl).as_secs() };
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
        let claims = jsonwebtoken::decode::<Claims>(token.trim(), &keys.decoding, &Validation::new(Algorithm::HS256))
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

    /// 403 unless an admin or the person named `owner`.
    pub(crate) fn require_owner(&self, owner: &str) -> Result<(), ApiError> {
        if self.is_admin() || self.name.as_deref() == Some(owner) {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this belongs to someone else".into()))
        }
    }

    /// The person a filter or a body names, for a caller in `role` acting
    /// only as themselves: absent means the caller; naming someone else is
    /// 403. Admins get what they asked for.
    pub(crate) fn as_self(&self, role: Role, requested: Option<String>) -> Result<Option<String>, ApiError> {
        self.require_role(role)?;
        self.myself(requested)
    }

    /// Like [`Caller::as_self`], for a caller in any role.
    pub(crate) fn myself(&self, requested: Option<String>) -> Result<Option<String>, ApiError> {
        if self.is_admin() {
            return Ok(requested);
        }
        let me = self.name.clone();
        match requested {
            None => Ok(me),
            Some(other) if me.as_deref() == Some(other.as_str()) => Ok(Some(other)),
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

    #[test]
    fn issued_tokens_verify_and_carry_their_claims() {
        let auth = Auth::with_secret("s3cret");
        let token = auth.issue(Role::Student, "Kim", Duration::from_secs(60)).unwrap();
        let request = axum::http::Request::builder().header(AUTHORIZATION, format!("Bearer {token}")).body(()).unwrap();
        let (parts, ()) = request.into_parts();
        let caller = auth.caller(&parts).unwrap().unwrap();
        assert_eq!((caller.name(), caller.role), (Some("Kim"), Role::Student));
        let other = Auth::with_secret("other");
        assert!(matches!(other.caller(&parts), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn students_act_only_as_themselves() {
        let kim = Caller { name: Some("Kim".into()), role: Role::Student };
        assert_eq!(kim.as_self(Role::Student, None).unwrap().as_deref(), Some("Kim"));
        assert!(kim.as_self(Role::Student, Some("Lee".into())).is_err());
        assert!(kim.as_self(Role::Instructor, None).is_err());
        let admin = Caller { name: None, role: Role::Admin };
        assert_eq!(admin.as_self(Role::Student, Some("Lee".into())).unwrap().as_deref(), Some("Lee"));
    }
}
