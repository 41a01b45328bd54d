//! What every HTTP role of Stay shares, so that no role crate needs another's.
//!
//! - [`auth`] — HS256 bearer tokens, the caller ([`Principal`]) and the typed role extractor
//!   ([`Caller`]) that answers 403 before a body is read.
//! - [`problem`] — every refusal as an RFC 9457 problem document ([`ApiError`]).
//! - [`body`] — bounded JSON bodies parsed into plain types, then into domain values ([`Check`]).
//! - [`query`] — query strings ([`QueryParams`]); [`path`] — ids in paths ([`IdPath`]);
//!   [`money`] — money on the wire ([`MoneyBody`]).
//! - [`openapi`] — the refusals kinds of routes share, written into the OpenAPI document.
//! - [`service`] — the whole server around the roles' routes: layers (request ids, the
//!   in-flight bound, metrics) and endpoints (`/healthz`, `/readyz`, `/metrics`, OpenAPI);
//!   [`unread_body`] — draining bodies a refusal did not read; [`header_bound`] — 431 for
//!   oversized header sections; [`serve`] — serving the router on a listener.

mod admission;
pub mod auth;
pub mod body;
mod endpoints;
pub mod header_bound;
mod layers;
pub mod money;
pub mod openapi;
pub mod path;
pub mod problem;
pub mod query;
mod refusal_log;
pub mod serve;
pub mod service;
pub mod unread_body;

pub use auth::{Admins, Admits, Caller, Guests, GuestsOrAdmins, Hosts, JwtKeys, Principal, Role};
pub use body::{BodyLimit, Check, JsonBody, DEFAULT_MAX_BODY_BYTES};
pub use money::{MoneyBody, PriceBody};
pub use path::{IdPath, NotFoundCode};
pub use problem::{ApiError, FieldError, Problem, PROBLEM_JSON};
pub use query::QueryParams;
pub use service::{assemble, Readiness, RenderMetrics, RoleCheck, RoleReadiness, ServiceConfig};
