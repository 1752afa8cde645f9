//! The chat page, compiled into the binary: no CDN, nothing fetched from outside, so
//! it works offline and is always the version of the server that serves it.
//!
//! The sources live in `web/static/`; `moechat.js` is the protocol client module,
//! `app.js` the page that uses it. Every response forbids inline script and any
//! origin but this one, so even a bug that put message text into the markup could
//! not run it.

use axum::body::Body;
use axum::http::{header, HeaderValue, Response};
use axum::response::IntoResponse;

const INDEX: &str = include_str!("../../web/static/index.html");
const APP: &str = include_str!("../../web/static/app.js");
const CLIENT: &str = include_str!("../../web/static/moechat.js");
const STYLE: &str = include_str!("../../web/static/style.css");

/// The page may load its own files and open WebSockets to its own origin, nothing else.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change only with the binary; a restart may bring a new version.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub(super) async fn index() -> Response<Body> {
    asset(INDEX, "text/html; charset=utf-8")
}

pub(super) async fn app() -> Response<Body> {
    asset(APP, "text/javascript; charset=utf-8")
}

pub(super) async fn client_module() -> Response<Body> {
    asset(CLIENT, "text/javascript; charset=utf-8")
}

pub(super) async fn style() -> Response<Body> {
    asset(STYLE, "text/css; charset=utf-8")
}
