//! The dashboard's files: `GET /` (its page) and `GET /assets/{file}` (its scripts and styles).
//!
//! The files of `query-api/dashboard/` are built into the binary (`build.rs`), so `cargo build`
//! alone builds the dashboard and nothing loads from elsewhere. As a development aid, `stay serve
//! --dashboard-dir DIR` (`STAY_DASHBOARD_DIR`) serves them from DIR instead, read at each request,
//! so the scripts can be edited without rebuilding.
//!
//! Every answer carries a strict `Content-Security-Policy` (the page's own files only, no inline
//! script or style, no framing), an `ETag` (a digest of the file) honoured in `If-None-Match`, and
//! `Cache-Control: no-cache`: browsers keep the files but ask each time, so a new binary's files
//! are never shadowed by old ones. A name that is not a dashboard file is a 404 problem.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use stay_http::{ApiError, Problem};

use crate::QueryState;

include!(concat!(env!("OUT_DIR"), "/dashboard_files.rs"));

/// What the dashboard's pages may load and do: their own files and API only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The page `GET /` answers.
const INDEX: &str = "index.html";

/// Where the dashboard's files come from.
#[derive(Clone, Debug, Default)]
pub enum DashboardFiles {
    /// The copies built into the binary.
    #[default]
    Embedded,
    /// A folder read at each request (`--dashboard-dir`, for development).
    Folder(PathBuf),
}

/// One file ready to send.
#[derive(Clone, Debug)]
struct Asset {
    body: Cow<'static, [u8]>,
    etag: String,
}

impl Asset {
    fn new(body: Cow<'static, [u8]>) -> Self {
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", hex::encode(&digest[..16]));
        Self { body, etag }
    }
}

/// The built-in files with their ETags, digested once.
fn embedded() -> &'static HashMap<&'static str, Asset> {
    static FILES: OnceLock<HashMap<&'static str, Asset>> = OnceLock::new();
    FILES.get_or_init(|| EMBEDDED.iter().map(|(name, bytes)| (*name, Asset::new(Cow::Borrowed(*bytes)))).collect())
}

/// The names of the files built into the binary.
pub fn embedded_names() -> impl Iterator<Item = &'static str> {
    EMBEDDED.iter().map(|(name, _)| *name)
}

/// Whether `name` can name a dashboard file: letters, digits, `.`, `_` and `-`, not starting with
/// a dot (so never `..`, a hidden file, or a path into another folder).
fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found("asset_not_found", format!("the dashboard has no file {name:?}"))
}

impl DashboardFiles {
    /// The file called `name`.
    async fn load(&self, name: &str) -> Result<Asset, ApiError> {
        if !is_file_name(name) {
            return Err(not_found(name));
        }
        match self {
            DashboardFiles::Embedded => embedded().get(name).cloned().ok_or_else(|| not_found(name)),
            DashboardFiles::Folder(dir) => match tokio::fs::read(dir.join(name)).await {
                Ok(bytes) => Ok(Asset::new(Cow::Owned(bytes))),
                // A folder (or anything else that is not a readable file) is no dashboard file either.
                Err(err) if matches!(err.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory) => {
                    Err(not_found(name))
                }
                Err(err) => Err(ApiError::internal("reading a dashboard file", &err)),
            },
        }
    }
}

/// The media type of a file, by its extension.
pub fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map_or("", |(_, ext)| ext).to_ascii_lowercase();
    match extension.as_str() {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Whether `If-None-Match` names the file's current ETag (weakly compared, as RFC 9110 asks for
/// `If-None-Match`), or is `*`.
fn still_fresh(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|value| {
        value.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
    })
}

/// The answer for one file: the file, or 304 when the browser's copy is current.
fn answer(name: &str, asset: Asset, request: &HeaderMap) -> Response {
    let status = if still_fresh(request, &asset.etag) { StatusCode::NOT_MODIFIED } else { StatusCode::OK };
    let mut response = if status == StatusCode::OK {
        (status, asset.body.into_owned()).into_response()
    } else {
        status.into_response()
    };
    let headers = response.headers_mut();
    if status == StatusCode::OK {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
    }
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The signed-in page's address never travels to another site.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The dashboard (HTML): rooms for everyone, more once signed in, operator screens for admins.
#[utoipa::path(
    get, path = "/", tag = "dashboard",
    responses(
        (status = 200, description = "The dashboard's page", body = String, content_type = "text/html"),
        (status = 304, description = "The browser's copy is current (`If-None-Match`)"),
    )
)]
pub async fn index(State(state): State<QueryState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let asset = state.dashboard.load(INDEX).await?;
    Ok(answer(INDEX, asset, &headers))
}

/// One of the dashboard's files (scripts, styles, images).
#[utoipa::path(
    get, path = "/assets/{file}", tag = "dashboard",
    params(("file" = String, Path, description = "The file's name, such as `app.js`")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"), (String = "text/css"), (String = "text/html"),
            (String = "application/json"), (String = "image/svg+xml"), (String = "image/png"),
            (String = "image/x-icon"), (String = "font/woff2"), (String = "text/plain"),
            (String = "application/octet-stream"),
        )),
        (status = 304, description = "The browser's copy is current (`If-None-Match`)"),
        (status = 404, description = "`asset_not_found`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn asset(
    State(state): State<QueryState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asset = state.dashboard.load(&file).await?;
    Ok(answer(&file, asset, &headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_folder_are_no_file_names() {
        for name in ["app.js", "ops-sagas.js", "style.css", "index.html", "icon_2.svg"] {
            assert!(is_file_name(name), "{name}");
        }
        for name in ["", ".", "..", "../secret", ".env", "a/b.js", "a\\b.js", "%2e%2e", "app.js\0", "é.js"] {
            assert!(!is_file_name(name), "{name:?}");
        }
    }

    #[test]
    fn media_types_follow_the_extension() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("logo.svg"), "image/svg+xml");
        assert_eq!(content_type("README"), "application/octet-stream");
    }

    #[test]
    fn if_none_match_is_compared_weakly_and_in_lists() {
        let etag = "\"abc\"";
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).expect("a header value"));
            headers
        };
        assert!(still_fresh(&with("\"abc\""), etag));
        assert!(still_fresh(&with("W/\"abc\""), etag));
        assert!(still_fresh(&with("\"x\", \"abc\""), etag));
        assert!(still_fresh(&with("*"), etag));
        assert!(!still_fresh(&with("\"abd\""), etag));
        assert!(!still_fresh(&HeaderMap::new(), etag));
    }

    #[test]
    fn the_page_is_built_in() {
        assert!(embedded_names().any(|name| name == INDEX), "query-api/dashboard/index.html is embedded");
        assert!(embedded_names().all(is_file_name), "every embedded file can be asked for by its name");
    }
}
