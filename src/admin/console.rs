//! The operator console: a page, its script and its style, embedded in the binary (no CDN,
//! nothing fetched from elsewhere), served on the admin surface at `/`, `/console.js` and
//! `/console.css`, with the JavaScript client library (`clients/js/index.js`) at
//! `/client.js`, which the console watches records with and which pages of this origin may
//! import too. Everything it shows comes from the admin API with the operator's token.

use axum::http::{header, HeaderName};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::admin::Admin;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/app.css");
/// The client library, as the repository has it: the console's script imports it.
const CLIENT: &str = include_str!("../../clients/js/index.js");

/// Only this origin's script and style; fetches to this origin; WebSockets to any host,
/// since with `--admin-addr` subscriptions live on another port. Client data shown on the
/// page can never run as script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

pub fn routes() -> Router<Admin> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", PAGE) }))
        .route("/console.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/client.js", get(|| async { asset("text/javascript; charset=utf-8", CLIENT) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, &'static str); 5] = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        // Embedded in the binary: an upgrade must not be hidden behind a cached copy.
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}
