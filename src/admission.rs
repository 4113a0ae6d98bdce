//! Who may open a subscription: the key in the path, the page's origin, the credentials,
//! and a free session slot. Every refusal is answered before anything is opened, counted
//! by reason, and logged (rate-limited, never with credentials).

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{header, request, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::OwnedSemaphorePermit;

use crate::app::App;
use crate::auth::{AuthError, Authenticator, Identity};
use crate::client::Subscription;
use crate::proxy::RemoteAddr;

/// Seconds a client refused at the connection limit is told to wait before trying again.
const RETRY_AFTER_SECS: &str = "5";

/// A request that may subscribe.
pub struct Admitted {
    pub subscription: Subscription,
    pub identity: Identity,
    pub remote: RemoteAddr,
    pub params: Params,
}

/// What the query string asks for.
#[derive(Debug, Default)]
pub struct Params {
    pub token: Option<String>,
    pub envelope: bool,
}

pub fn params(uri: &Uri) -> Params {
    let mut p = Params::default();
    for (name, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match &*name {
            "token" => p.token = Some(value.into_owned()),
            "envelope" => p.envelope = matches!(&*value, "true" | "1" | "yes"),
            _ => {}
        }
    }
    p
}

/// Parses the subscription from a request path: `/*` is every record, anything else the
/// percent-decoded key (so `/%2A` is the literal key `*`).
pub fn subscription_from_path(path: &str) -> Result<Subscription, &'static str> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    if raw == "*" {
        return Ok(Subscription::All);
    }
    if raw.is_empty() {
        return Err("no key: connect to /{key} for one key's records, or /* for all");
    }
    let key: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    Ok(Subscription::Key(bytes::Bytes::from(key)))
}

/// Why a subscription is refused.
#[derive(Debug)]
pub enum Refused {
    BadPath(&'static str),
    Origin,
    Auth(AuthError),
    /// The transport's own checks (the WebSocket opening handshake).
    Transport {
        reason: &'static str,
        response: Box<Response>,
    },
    /// `--max-connections` sessions are open.
    Full,
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::BadPath(_) => "bad_path",
            Refused::Origin => "origin",
            Refused::Auth(e) => e.reason(),
            Refused::Transport { reason, .. } => reason,
            Refused::Full => "connection_limit",
        }
    }

    fn into_response(self, auth: &Authenticator) -> Response {
        let error = |status: StatusCode, message: &str| (status, Json(serde_json::json!({ "error": message })));
        match self {
            Refused::BadPath(message) => error(StatusCode::BAD_REQUEST, message).into_response(),
            Refused::Origin => {
                error(StatusCode::FORBIDDEN, "this page's origin may not subscribe: see --allowed-origins")
                    .into_response()
            }
            Refused::Auth(e) => auth.refusal(&e),
            Refused::Transport { response, .. } => *response,
            Refused::Full => {
                let mut response =
                    error(StatusCode::SERVICE_UNAVAILABLE, "connection limit reached; try again later").into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
                response
            }
        }
    }
}

/// The client's address: the TCP peer, or what a trusted proxy says.
pub fn remote(app: &App, parts: &request::Parts) -> RemoteAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    app.trusted_proxies.client(peer, &parts.headers)
}

/// Checks the path, the origin and the credentials, in that order.
pub fn admit(app: &App, parts: &request::Parts) -> Result<Admitted, Refused> {
    let remote = remote(app, parts);
    let subscription = subscription_from_path(parts.uri.path()).map_err(Refused::BadPath)?;
    if !app.allowed_origins.permits(&parts.headers, app.console_port.get().copied()) {
        return Err(Refused::Origin);
    }
    let params = params(&parts.uri);
    let identity = app
        .auth
        .authenticate(&parts.headers, params.token.as_deref())
        .and_then(|id| Authenticator::authorize(&id, &subscription).map(|()| id))
        .map_err(Refused::Auth)?;
    Ok(Admitted { subscription, identity, remote, params })
}

/// A session slot, or [`Refused::Full`] at once.
pub fn slot(app: &App) -> Result<OwnedSemaphorePermit, Refused> {
    app.sessions.clone().try_acquire_owned().map_err(|_| Refused::Full)
}

/// Counts and logs a refusal, and gives the answer to send.
pub fn refuse(app: &App, parts: &request::Parts, refused: Refused) -> Response {
    app.metrics.upgrade_refused(refused.reason(), &remote(app, parts), parts.uri.path());
    refused.into_response(&app.auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_keys_percent_decoded_and_star_is_all() {
        use bytes::Bytes;
        assert_eq!(subscription_from_path("/*"), Ok(Subscription::All));
        assert_eq!(subscription_from_path("/%2A"), Ok(Subscription::Key(Bytes::from_static(b"*"))));
        assert_eq!(subscription_from_path("/sensor%201"), Ok(Subscription::Key(Bytes::from_static(b"sensor 1"))));
        assert_eq!(subscription_from_path("/a/b"), Ok(Subscription::Key(Bytes::from_static(b"a/b"))));
        assert_eq!(subscription_from_path("/caf%C3%A9"), Ok(Subscription::Key(Bytes::from("café"))));
        assert!(subscription_from_path("/").is_err());
    }

    #[test]
    fn query_gives_token_and_envelope() {
        let p = params(&"/k?token=a%2Bb&envelope=true".parse().unwrap());
        assert_eq!(p.token.as_deref(), Some("a+b"));
        assert!(p.envelope);
        assert!(!params(&"/k".parse().unwrap()).envelope);
    }
}
