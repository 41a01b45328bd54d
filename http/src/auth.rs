//! Bearer tokens: HS256 JWTs with `sub`, `role` and `exp`, signed and checked with one secret.
//!
//! Only HS256 is accepted: a token saying `alg: none` (or any other algorithm), a wrong signature,
//! an expired token or one without `exp`, a token not yet valid (`nbf`) or issued in the future
//! (`iat`), and one that lives longer than the configured maximum (24 h by default) are refused with
//! 401. The clock leeway is the same for all of them. Roles and ownership are checked by the
//! routes, which answer 403.

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
    /// When it was issued, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not valid before this, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
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

/// The longest a token may live unless configured otherwise: a day.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How far apart the signer's clock and ours may be, in seconds, for `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 5;

/// The HS256 secret, for signing and checking tokens.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The secret before the last rotation, still accepted (never used to sign) until it is dropped.
    previous: Option<DecodingKey>,
    validation: Validation,
    max_lifetime: Duration,
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
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            previous: None,
            validation,
            max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        }
    }

    /// The same keys, refusing tokens that live longer than `max_lifetime`.
    pub fn with_max_lifetime(self, max_lifetime: Duration) -> Self {
        Self { max_lifetime, ..self }
    }

    /// The same keys, also accepting tokens signed with `previous`: the secret being rotated out.
    /// Tokens are always signed with the current secret; once every token signed with the old one
    /// has expired (at most the maximum lifetime after the rotation), drop it.
    pub fn with_previous_secret(self, previous: &SecretString) -> Self {
        Self { previous: Some(DecodingKey::from_secret(previous.expose_secret().as_bytes())), ..self }
    }

    /// The longest a token may live.
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    /// A token for `sub` acting as `role`, issued at `now_unix` (seconds) and valid for `ttl`.
    pub fn sign(&self, sub: &UserId, role: Role, ttl: Duration, now_unix: u64) -> Result<String, SignError> {
        let claims = Claims {
            sub: sub.as_str().to_owned(),
            role,
            exp: now_unix.saturating_add(ttl.as_secs()),
            iat: Some(now_unix),
            nbf: None,
        };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?)
    }

    /// Checks a token and reads its caller.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        // `jsonwebtoken` checks `exp` and `nbf`; `iat` and the lifetime are checked below.
        let now_unix = jsonwebtoken::get_current_timestamp();
        let mut decoded = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation);
        if let (Err(err), Some(previous)) = (&decoded, &self.previous) {
            if *err.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature {
                decoded = jsonwebtoken::decode::<Claims>(token, previous, &self.validation);
            }
        }
        let data = decoded.map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match err.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
                ErrorKind::InvalidSignature => "the token's signature is wrong",
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "only HS256 tokens are accepted",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim (sub, exp)",
                _ => "the token is malformed",
            };
            ApiError::unauthenticated(why)
        })?;
        let claims = data.claims;
        if claims.iat.is_some_and(|iat| iat > now_unix.saturating_add(LEEWAY_SECS)) {
            return Err(ApiError::unauthenticated("the token was issued in the future (iat)"));
        }
        // A token without `iat` is measured from now: it may not outlive the maximum from here.
        let lifetime = claims.exp.saturating_sub(claims.iat.unwrap_or(now_unix));
        if lifetime > self.max_lifetime.as_secs() {
            return Err(ApiError::unauthenticated(format!(
                "the token lives {lifetime} s, longer than the {} s this server accepts",
                self.max_lifetime.as_secs()
            )));
        }
        let user =
            UserId::new(claims.sub).map_err(|_| ApiError::unauthenticated("the token's sub is not a user id"))?;
        Ok(Principal { user, role: claims.role })
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
    fn during_a_rotation_tokens_of_the_previous_secret_are_accepted_and_new_ones_use_the_current() {
        let user = UserId::new("u").unwrap();
        let old = keys("the old secret").sign(&user, Role::Guest, Duration::from_secs(60), now()).unwrap();
        let rotated = keys("the new secret").with_previous_secret(&SecretString::from("the old secret".to_owned()));
        assert_eq!(rotated.verify(&old).unwrap().user, user, "a token signed before the rotation still works");
        let new = rotated.sign(&user, Role::Guest, Duration::from_secs(60), now()).unwrap();
        assert_eq!(keys("the new secret").verify(&new).unwrap().user, user, "signed with the current secret");
        assert!(keys("the old secret").verify(&new).is_err(), "not with the previous one");
        let other = keys("a third secret").sign(&user, Role::Guest, Duration::from_secs(60), now()).unwrap();
        assert_eq!(rotated.verify(&other).unwrap_err().code(), "unauthenticated", "no other secret is");
        let expired = keys("the old secret").sign(&user, Role::Guest, Duration::from_secs(60), now() - 3600).unwrap();
        assert_eq!(rotated.verify(&expired).unwrap_err().status(), 401, "an old token is still checked in full");
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

    /// A token with these claims, signed with `secret`.
    fn raw_token(secret: &str, claims: serde_json::Value) -> String {
        let header = jsonwebtoken::Header::new(Algorithm::HS256);
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    fn refusal(keys: &JwtKeys, claims: serde_json::Value) -> Option<String> {
        let token = raw_token("s", claims);
        keys.verify(&token).err().map(|err| {
            assert_eq!((err.status(), err.code()), (axum::http::StatusCode::UNAUTHORIZED, "unauthenticated"));
            err.problem().detail
        })
    }

    #[test]
    fn a_token_not_valid_yet_is_refused_with_the_exp_leeway() {
        let keys = keys("s");
        let claims = |nbf: u64| serde_json::json!({"sub": "u", "role": "guest", "exp": now() + 600, "nbf": nbf});
        let detail = refusal(&keys, claims(now() + 60)).expect("refused");
        assert!(detail.contains("nbf"), "{detail}");
        assert_eq!(refusal(&keys, claims(now() - 60)), None, "valid since a minute");
        assert_eq!(refusal(&keys, claims(now() + LEEWAY_SECS - 1)), None, "within the leeway");
        assert!(refusal(&keys, serde_json::json!({"sub": "u", "role": "guest", "exp": now() + 600, "nbf": "soon"}))
            .is_some());
    }

    #[test]
    fn a_token_living_longer_than_the_maximum_is_refused() {
        let keys = keys("s");
        let day = 24 * 3600;
        let issued = |iat: u64, lifetime: u64| serde_json::json!({"sub": "u", "role": "guest", "iat": iat, "exp": iat + lifetime});
        assert_eq!(refusal(&keys, issued(now(), day)), None, "a day is the default maximum");
        let detail = refusal(&keys, issued(now(), day + 1)).expect("refused");
        assert!(detail.contains("86401 s") && detail.contains("86400 s"), "{detail}");
        // Issued long ago and still valid: its whole lifetime counts, not what is left of it.
        assert!(refusal(&keys, issued(now() - 300 * day, 301 * day)).is_some());
        // Without `iat`, what is left of it counts.
        let unissued = |exp: u64| serde_json::json!({"sub": "u", "role": "guest", "exp": exp});
        assert_eq!(refusal(&keys, unissued(now() + 3600)), None);
        assert!(refusal(&keys, unissued(now() + 365 * day)).is_some());
        // Claiming to be issued later does not buy a longer life.
        let detail = refusal(&keys, issued(now() + 30 * day, 3600)).expect("refused");
        assert!(detail.contains("iat"), "{detail}");
        assert_eq!(refusal(&keys, issued(now() + LEEWAY_SECS, day)), None, "within the leeway");
    }

    #[test]
    fn the_maximum_lifetime_is_configurable_and_signed_tokens_carry_iat() {
        let user = UserId::new("u").unwrap();
        let keys = keys("s");
        let day_long = keys.sign(&user, Role::Guest, DEFAULT_MAX_TOKEN_LIFETIME, now()).unwrap();
        assert!(keys.verify(&day_long).is_ok(), "what `stay token` issues by default is accepted");
        let hour = keys.clone().with_max_lifetime(Duration::from_secs(3600));
        assert_eq!(hour.max_lifetime(), Duration::from_secs(3600));
        assert_eq!(hour.verify(&day_long).unwrap_err().code(), "unauthenticated");
        assert!(hour.verify(&keys.sign(&user, Role::Guest, Duration::from_secs(3600), now()).unwrap()).is_ok());
        let week = keys.clone().with_max_lifetime(Duration::from_secs(7 * 24 * 3600));
        let week_long = keys.sign(&user, Role::Guest, Duration::from_secs(7 * 24 * 3600), now()).unwrap();
        assert!(week.verify(&week_long).is_ok() && keys.verify(&week_long).is_err());
    }

    #[test]
    fn an_unknown_role_is_refused() {
        let header = jsonwebtoken::Header::new(Algorithm::HS256);
        let claims = serde_json::json!({"sub": "u", "role": "superuser", "exp": now() + 60});
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"s")).unwrap();
        assert_eq!(keys("s").verify(&token).unwrap_err().status(), 401);
    }
}
