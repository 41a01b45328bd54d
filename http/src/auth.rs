//! Bearer tokens: HS256 JWTs with `sub`, `role` and `exp`, signed and checked with one secret.
//!
//! Only HS256 is accepted: a token saying `alg: none` (or any other algorithm), a wrong signature,
//! an expired token or one without `exp` is refused with 401. Roles and ownership are checked by
//! the routes, which answer 403.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use stay_domain::UserId;

use crate::problem::ApiError;

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reserves, cancels and reviews.
    Guest,
    /// Lists and changes rooms, replies to reviews.
    Host,
    /// Operates Stay: cancels any reservation, reads the admin routes.
    Admin,
}

impl Role {
    /// The role's name in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Guest => "guest",
            Role::Host => "host",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "guest" => Ok(Role::Guest),
            "host" => Ok(Role::Host),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: expected guest, host or admin")),
        }
    }
}

/// The claims Stay reads from a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The user's role.
    pub role: Role,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Who.
    pub user: UserId,
    /// As what.
    pub role: Role,
}

impl Principal {
    /// Refuses with 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::wrong_role(&names.join(" or ")))
    }
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the token: {0}")]
pub struct SignError(#[from] jsonwebtoken::errors::Error);

/// The HS256 secret, for signing and checking tokens.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtKeys(HS256, secret hidden)")
    }
}

impl JwtKeys {
    /// Keys from a shared secret.
    pub fn new(secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Self { encoding: EncodingKey::from_secret(bytes), decoding: DecodingKey::from_secret(bytes), validation }
    }

    /// A token for `sub` acting as `role`, valid for `ttl` from `now_unix` (seconds).
    pub fn sign(&self, sub: &UserId, role: Role, ttl: Duration, now_unix: u64) -> Result<String, SignError> {
        let claims = Claims { sub: sub.as_str().to_owned(), role, exp: now_unix.saturating_add(ttl.as_secs()) };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?)
    }

    /// Checks a token and reads its caller.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match err.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::InvalidSignature => "the token's signature is wrong",
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "only HS256 tokens are accepted",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim (sub, exp)",
                _ => "the token is malformed",
            };
            ApiError::unauthenticated(why)
        })?;
        let user =
            UserId::new(data.claims.sub).map_err(|_| ApiError::unauthenticated("the token's sub is not a user id"))?;
        Ok(Principal { user, role: data.claims.role })
    }
}

/// Middleware: every request through it carries a valid bearer token, or is answered 401.
pub async fn require_token(
    State(keys): State<JwtKeys>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated("an Authorization: Bearer token is required"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| ApiError::unauthenticated("the Authorization header must be 'Bearer <token>'"))?;
    let principal = keys.verify(token)?;
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::unauthenticated("an Authorization: Bearer token is required"))
    }
}

/// A set of roles a route admits.
pub trait Admits: Send + Sync {
    /// The roles.
    const ROLES: &'static [Role];
}

/// Routes for hosts.
#[derive(Debug)]
pub struct Hosts;

impl Admits for Hosts {
    const ROLES: &'static [Role] = &[Role::Host];
}

/// Routes for guests.
#[derive(Debug)]
pub struct Guests;

impl Admits for Guests {
    const ROLES: &'static [Role] = &[Role::Guest];
}

/// Routes for operators.
#[derive(Debug)]
pub struct Admins;

impl Admits for Admins {
    const ROLES: &'static [Role] = &[Role::Admin];
}

/// Routes for guests and admins.
#[derive(Debug)]
pub struct GuestsOrAdmins;

impl Admits for GuestsOrAdmins {
    const ROLES: &'static [Role] = &[Role::Guest, Role::Admin];
}

/// The caller of a route that admits the roles `R`; extracting it answers 403 for any other role
/// before the body is read, so a caller without the role learns that first.
#[derive(Debug)]
pub struct Caller<R> {
    /// Who calls.
    pub principal: Principal,
    roles: std::marker::PhantomData<R>,
}

impl<S: Send + Sync, R: Admits> FromRequestParts<S> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        principal.require(R::ROLES)?;
        Ok(Self { principal, roles: std::marker::PhantomData })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> JwtKeys {
        JwtKeys::new(&SecretString::from(secret.to_owned()))
    }

    fn now() -> u64 {
        chrono::Utc::now().timestamp().try_into().unwrap()
    }

    fn encode_raw(header: &str, claims: &str, signature: &str) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.{}", b64.encode(header), b64.encode(claims), signature)
    }

    #[test]
    fn a_signed_token_reads_back_as_its_caller() {
        let keys = keys("a secret long enough to sign with");
        let token = keys.sign(&UserId::new("host-1").unwrap(), Role::Host, Duration::from_secs(60), now()).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), Principal { user: UserId::new("host-1").unwrap(), role: Role::Host });
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = keys("one secret").sign(&UserId::new("u").unwrap(), Role::Guest, Duration::from_secs(60), now());
        assert_eq!(keys("another secret").verify(&token.unwrap()).unwrap_err().code(), "unauthenticated");
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = keys("s");
        let token = keys.sign(&UserId::new("u").unwrap(), Role::Guest, Duration::from_secs(60), now() - 3600).unwrap();
        assert_eq!(keys.verify(&token).unwrap_err().status(), 401);
    }

    #[test]
    fn alg_none_is_refused() {
        let claims = format!(r#"{{"sub":"u","role":"admin","exp":{}}}"#, now() + 600);
        let token = encode_raw(r#"{"alg":"none","typ":"JWT"}"#, &claims, "");
        assert_eq!(keys("s").verify(&token).unwrap_err().status(), 401);
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        let keys = keys("s");
        let header = jsonwebtoken::Header::new(Algorithm::HS256);
        let claims = serde_json::json!({"sub": "u", "role": "guest"});
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"s")).unwrap();
        assert_eq!(keys.verify(&token).unwrap_err().status(), 401);
    }

    #[test]
    fn an_unknown_role_is_refused() {
        let header = jsonwebtoken::Header::new(Algorithm::HS256);
        let claims = serde_json::json!({"sub": "u", "role": "superuser", "exp": now() + 60});
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"s")).unwrap();
        assert_eq!(keys("s").verify(&token).unwrap_err().status(), 401);
    }
}
