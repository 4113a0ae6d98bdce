//! The admin API under `/api`: list and inspect clients, message one, broadcast, disconnect,
//! publish records, watch events, mint client tokens, and describe the gateway to the
//! console. JSON over HTTP, guarded by the admin token as a Bearer token (separate from
//! client credentials). Errors are JSON `{"error": "…"}`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::auth::SigningSecret;
use crate::registry::{ClientsError, Close, Filter};
use crate::sink::rfc3339;

/// Why an admin request failed; each maps to a status and a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong admin token")]
    Unauthorized,
    #[error("no connected client with id {0:?}")]
    UnknownClient(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::UnknownClient(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::UnknownClient(_) => "not_found",
            ApiError::BadRequest(_) => "client_error",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(json!({ "error": self.to_string() }))).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sluice-admin\""));
        }
        response
    }
}

/// A call the registry interface could not answer: a client no replica has is 404; one on
/// a replica that cannot be asked now (the cluster link is down, or it did not answer in
/// time), a full queue, or a record that cannot be published is 503.
impl From<ClientsError> for ApiError {
    fn from(e: ClientsError) -> Self {
        match e {
            ClientsError::Unknown(id) => ApiError::UnknownClient(id),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The `/api` routes, behind the token check (except the OpenAPI document).
pub fn routes(app: App) -> Router<App> {
    let guarded = Router::new()
        .route("/api/clients", get(list_clients))
        .route("/api/clients/{id}", get(get_client).delete(disconnect))
        .route("/api/clients/{id}/messages", post(send_to_client))
        .route("/api/broadcast", post(broadcast))
        .route("/api/publish/{key}", post(publish))
        .route("/api/events", get(events))
        .route("/api/tokens", post(mint_token))
        .route("/api/info", get(info))
        .layer(middleware::from_fn_with_state(app, require_token));
    Router::new().route("/api/openapi.json", get(openapi)).merge(guarded)
}

async fn require_token(State(app): State<App>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let expected: [u8; 32] = Sha256::digest(app.admin_token.expose().as_bytes()).into();
    let ok = given.is_some_and(|t| bool::from(<[u8; 32]>::from(Sha256::digest(t.as_bytes())).ct_eq(&expected)));
    if !ok {
        app.metrics.admin_request(ApiError::Unauthorized.outcome());
        return ApiError::Unauthorized.into_response();
    }
    let response = next.run(request).await;
    let outcome = match response.status() {
        s if s.is_success() => "ok",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_client_error() => "client_error",
        _ => "unavailable",
    };
    app.metrics.admin_request(outcome);
    response
}

#[derive(Deserialize)]
struct ListQuery {
    key: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Clients ordered by id; `next` is the cursor for the following page, null on the last;
/// `"partial":true` when some replicas could not be asked.
async fn list_clients(State(app): State<App>, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let page = app.clients.list(Filter { key: q.key, cursor: q.cursor, limit }).await;
    Ok(Json(partial(json!({ "clients": page.clients, "next": page.next }), page.partial)))
}

/// Marks an answer that covers only part of the cluster. Absent otherwise, so a gateway
/// without `--cluster` answers exactly as before.
fn partial(mut body: Value, partial: bool) -> Value {
    if partial {
        body["partial"] = Value::Bool(true);
    }
    body
}

async fn get_client(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(app.clients.get(&id).await?))
}

async fn send_to_client(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> ApiResult<Response> {
    app.clients.send(&id, body).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": true }))).into_response())
}

#[derive(Deserialize)]
struct DisconnectQuery {
    code: Option<u16>,
    reason: Option<String>,
}

async fn disconnect(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<DisconnectQuery>,
) -> ApiResult<StatusCode> {
    let code = q.code.unwrap_or(1000);
    // Codes a server may send (RFC 6455 §7.4): the defined ones, and 3000–4999.
    if !matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
        return Err(ApiError::BadRequest(format!(
            "close code {code} cannot be sent; use 1000, 1001, 1008 or 3000-4999"
        )));
    }
    let reason = q.reason.unwrap_or_else(|| "closed by admin".to_owned());
    // The close frame's payload is at most 125 bytes, two of them the code.
    if reason.len() > 123 {
        return Err(ApiError::BadRequest("reason must be at most 123 bytes".into()));
    }
    app.clients.disconnect(&id, Close { code, reason }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct BroadcastQuery {
    key: Option<String>,
}

async fn broadcast(State(app): State<App>, Query(q): Query<BroadcastQuery>, body: Bytes) -> Json<Value> {
    let d = app.clients.broadcast(q.key.as_deref(), body).await;
    Json(partial(json!({ "delivered": d.delivered }), d.partial))
}

async fn publish(State(app): State<App>, Path(key): Path<String>, body: Bytes) -> ApiResult<Response> {
    let published = app.clients.publish(&key, body).await?;
    Ok((StatusCode::ACCEPTED, Json(partial(published.placed, published.partial))).into_response())
}

/// Server-sent events: every connect, disconnect and client message, as it happens.
async fn events(State(app): State<App>) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let feed = app.outbox.feed();
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = match feed.recv().await {
            Ok(json) => SseEvent::default().data(json.as_ref()),
            // This watcher fell behind: say how many events it missed, then go on.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                SseEvent::default().event("lagged").data(n.to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A client token's lifetime when the request names none.
const DEFAULT_TOKEN_TTL: u64 = 3600;
/// The longest lifetime a minted token may have: tokens cannot be revoked, so a leaked one
/// must not outlive a day.
const MAX_TOKEN_TTL: u64 = 86_400;
/// Bounds on what a token may carry: it travels in a URL, and its `sub` is shown as the
/// client's user.
const MAX_SUB_BYTES: usize = 256;
const MAX_TOKEN_KEYS: usize = 100;
const MAX_KEY_BYTES: usize = 1024;

/// The body of `POST /api/tokens`. Unknown fields are refused, so a misspelt `keys` cannot
/// silently mint a token for every key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    sub: String,
    keys: Option<Vec<String>>,
    ttl: Option<u64>,
}

impl TokenRequest {
    fn parse(body: &[u8]) -> ApiResult<TokenRequest> {
        let request: TokenRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!(
                "body must be JSON {{\"sub\": string, \"keys\": [string] (optional), \"ttl\": seconds (optional)}}: {e}"
            ))
        })?;
        if request.sub.is_empty() || request.sub.len() > MAX_SUB_BYTES {
            return Err(ApiError::BadRequest(format!("sub must be 1 to {MAX_SUB_BYTES} bytes")));
        }
        if let Some(keys) = &request.keys {
            if keys.is_empty() || keys.len() > MAX_TOKEN_KEYS {
                return Err(ApiError::BadRequest(format!(
                    "keys must list 1 to {MAX_TOKEN_KEYS} keys (\"*\" for all; leave it out for every key)"
                )));
            }
            if keys.iter().any(|k| k.is_empty() || k.len() > MAX_KEY_BYTES) {
                return Err(ApiError::BadRequest(format!("each key must be 1 to {MAX_KEY_BYTES} bytes")));
            }
        }
        if request.ttl.is_some_and(|t| !(1..=MAX_TOKEN_TTL).contains(&t)) {
            return Err(ApiError::BadRequest(format!("ttl must be between 1 and {MAX_TOKEN_TTL} seconds")));
        }
        Ok(request)
    }
}

/// A client token for browsers (which cannot send Basic credentials on a WebSocket), signed
/// with the gateway's secret: the configured one, or the one this process drew at start-up.
async fn mint_token(State(app): State<App>, body: Bytes) -> ApiResult<Response> {
    let request = TokenRequest::parse(&body)?;
    let ttl = Duration::from_secs(request.ttl.unwrap_or(DEFAULT_TOKEN_TTL));
    let (token, expires) = app.auth.mint(&request.sub, request.keys.as_deref(), ttl);
    let body = Json(json!({ "token": token, "expiresAt": rfc3339(expires) }));
    // A credential: no cache may keep it.
    Ok((StatusCode::CREATED, [(header::CACHE_CONTROL, "no-store")], body).into_response())
}

/// Where subscriptions are served, as seen from an admin listener: the console builds its
/// WebSocket URL from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionEndpoint {
    /// The port subscriptions are bound to.
    pub port: u16,
    /// `wss://` rather than `ws://`.
    pub tls: bool,
    /// Subscriptions are served on the same listener as this API (no `--admin-addr`): a
    /// page should then use its own origin, which stays right behind a proxy.
    pub same_origin: bool,
}

/// What the console needs to know about this gateway.
async fn info(State(app): State<App>, Extension(endpoint): Extension<SubscriptionEndpoint>) -> Json<Value> {
    let secret = match app.auth.signing_secret() {
        SigningSecret::Configured => "configured",
        SigningSecret::Generated => "generated",
    };
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "websocket": {
            "scheme": if endpoint.tls { "wss" } else { "ws" },
            "port": endpoint.port,
            "sameOrigin": endpoint.same_origin,
        },
        "source": if app.memory.is_some() { "embedded" } else { "kafka" },
        "node": app.clients.node(),
        "clients": app.registry.len(),
        "tokens": {
            "secret": secret,
            "defaultTtl": DEFAULT_TOKEN_TTL,
            "maxTtl": MAX_TOKEN_TTL,
        },
    }))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}
