//! The admin API under `/api`: list and inspect clients, message one, broadcast, disconnect,
//! publish records, watch events, mint client tokens, and describe the gateway to the
//! console. JSON over HTTP, guarded by the admin token as a Bearer token (separate from
//! client credentials).
//!
//! Every error is JSON `{"error": "…"}`: the handlers' own, and also what axum would answer
//! as text (a query string, path or body it cannot take, a method the path does not serve),
//! since the extractors here turn their rejections into [`ApiError`]s and the routers
//! answer wrong methods with one. `src/openapi.json` describes exactly this behaviour.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::admin::Admin;
use crate::auth::SigningSecret;
use crate::client::fit_close_reason;
use crate::registry::{ClientsError, Close, Filter};
use crate::sink::rfc3339;

/// The largest request body: a message, a broadcast, a record or a token request. Kafka's
/// default limit on a record is about a megabyte, and nothing an operator types is larger.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Why an admin request failed; each maps to a status and a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong admin token")]
    Unauthorized,
    #[error("no connected client with id {0:?}")]
    UnknownClient(String),
    #[error("no such endpoint")]
    NoSuchEndpoint,
    #[error("{0} is not allowed here (see the Allow header)")]
    MethodNotAllowed(Method),
    #[error("{0}")]
    BadRequest(String),
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    Unavailable(String),
    /// A route declared with an extractor it cannot satisfy: a bug here, not in the request.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::UnknownClient(_) | ApiError::NoSuchEndpoint => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// An extractor's rejection, kept at its status (400, 413; 500 for a route's own bug)
    /// with its explanation, as JSON.
    fn rejected(status: StatusCode, text: String) -> ApiError {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
            s if s.is_server_error() => ApiError::Internal(text),
            _ => ApiError::BadRequest(text),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "admin API route cannot extract its arguments");
        }
        let mut response = (self.status(), Json(json!({ "error": self.to_string() }))).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sluice-admin\""));
        }
        response
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::rejected(r.status(), r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::rejected(r.status(), r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        ApiError::rejected(r.status(), r.body_text())
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

/// axum's `Query`, refusing with an [`ApiError`] (JSON) instead of axum's text.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// axum's `Path`, refusing with an [`ApiError`] (JSON) instead of axum's text.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// The request body as raw bytes, whatever its Content-Type (curl's `-d` sends
/// `application/x-www-form-urlencoded`, a browser `text/plain`: both mean these bytes). An
/// empty body is refused: every body here is a message, a record value or a token request,
/// and an empty one is far more often a forgotten `-d` than an intended empty frame.
pub struct Payload(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Payload {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let body = Bytes::from_request(request, state).await?;
        if body.is_empty() {
            return Err(ApiError::BadRequest("the request body must not be empty".into()));
        }
        Ok(Payload(body))
    }
}

/// The `/api` routes: the OpenAPI document, open to all; everything else behind the token
/// check. Every request is counted and timed by route, however it ends.
pub fn routes(app: Admin) -> Router<Admin> {
    let guarded = Router::new()
        .route("/api/clients", get(list_clients))
        .route("/api/clients/{id}", get(get_client).delete(disconnect))
        .route("/api/clients/{id}/messages", post(send_to_client))
        .route("/api/broadcast", post(broadcast))
        .route("/api/publish/{key}", post(publish))
        .route("/api/events", get(events))
        .route("/api/tokens", post(mint_token))
        .route("/api/info", get(info))
        // Registered before the token layer wraps the routes: it applies to the routes
        // present when it is called. axum adds the `Allow` header to its answer.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), require_token));
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .method_not_allowed_fallback(method_not_allowed)
        .merge(guarded)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(app, observe))
}

/// Any path under `/api` that no route serves (the router's fallback is shared with the
/// other plain HTTP paths, which answer the same).
pub async fn no_such_endpoint() -> ApiError {
    ApiError::NoSuchEndpoint
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method)
}

async fn require_token(State(app): State<Admin>, request: Request, next: Next) -> Response {
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
        return ApiError::Unauthorized.into_response();
    }
    next.run(request).await
}

/// Counts each request by outcome and times it by route: the route's pattern
/// (`/api/clients/{id}`), never the path, whose ids would make a series per client. The
/// time is until the response head: an event stream's life is not its latency.
async fn observe(State(app): State<Admin>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let outcome = match response.status() {
        s if s.is_success() => "ok",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_client_error() => "client_error",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "server_error",
    };
    app.metrics.admin_request(route, outcome, started.elapsed());
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
async fn list_clients(State(app): State<Admin>, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Json<Value>> {
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

async fn get_client(State(app): State<Admin>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<Value>> {
    Ok(Json(app.clients.get(&id).await?))
}

async fn send_to_client(
    State(app): State<Admin>,
    ApiPath(id): ApiPath<String>,
    Payload(body): Payload,
) -> ApiResult<Response> {
    app.clients.send(&id, body).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": true }))).into_response())
}

#[derive(Deserialize)]
struct DisconnectQuery {
    code: Option<u16>,
    reason: Option<String>,
}

/// Close codes a server may send (RFC 6455 §7.4.1): the defined ones that are not reserved
/// for the endpoint's own use (1004–1006, 1015) nor defined after the RFC for proxies
/// (1012–1014), and the registered and private ranges.
fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// The longest close reason accepted, in characters; the close frame carries at most 123
/// bytes of it (125 less the code), so a reason whose UTF-8 is longer is cut at a character
/// boundary. Characters rather than bytes, so that the OpenAPI document can state the bound
/// (JSON Schema's `maxLength` counts characters).
const MAX_REASON_CHARS: usize = 123;

/// Closes a client and answers once the close is decided and the client is out of the
/// registry (of whichever replica holds it), so that what the caller does next (a GET, the
/// list) no longer finds it. The close frame and the end of the connection follow without
/// holding the request: the client's session bounds them by
/// [`CLOSE_TIMEOUT`](crate::session::pump::CLOSE_TIMEOUT), and a client that does not read cannot
/// make an operator's request wait.
async fn disconnect(
    State(app): State<Admin>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DisconnectQuery>,
) -> ApiResult<StatusCode> {
    let code = q.code.unwrap_or(1000);
    if !sendable_close_code(code) {
        return Err(ApiError::BadRequest(format!(
            "close code {code} cannot be sent; use 1000-1003, 1007-1011 or 3000-4999"
        )));
    }
    let reason = q.reason.unwrap_or_else(|| "closed by admin".to_owned());
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::BadRequest(format!("reason must be at most {MAX_REASON_CHARS} characters")));
    }
    app.clients.disconnect(&id, Close { code, reason: fit_close_reason(&reason).to_owned() }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct BroadcastQuery {
    key: Option<String>,
}

async fn broadcast(
    State(app): State<Admin>,
    ApiQuery(q): ApiQuery<BroadcastQuery>,
    Payload(body): Payload,
) -> Json<Value> {
    let d = app.clients.broadcast(q.key.as_deref(), body).await;
    Json(partial(json!({ "delivered": d.delivered }), d.partial))
}

async fn publish(
    State(app): State<Admin>,
    ApiPath(key): ApiPath<String>,
    Payload(body): Payload,
) -> ApiResult<Response> {
    let published = app.clients.publish(&key, body).await?;
    Ok((StatusCode::ACCEPTED, Json(partial(published.placed, published.partial))).into_response())
}

/// Server-sent events: every connect, disconnect and client message, as it happens.
async fn events(State(app): State<Admin>) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
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
const MAX_SUB_CHARS: usize = 256;
const MAX_TOKEN_KEYS: usize = 100;
const MAX_KEY_CHARS: usize = 1024;

/// The body of `POST /api/tokens`. Unknown fields are refused, so a misspelt `keys` cannot
/// silently mint a token for every key; so is an explicit `null`, which the document does
/// not allow (leave the field out instead).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    sub: String,
    #[serde(default, deserialize_with = "present")]
    keys: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    topics: Option<Vec<String>>,
    #[serde(default, deserialize_with = "whole_seconds")]
    ttl: Option<u64>,
}

/// An optional field that, when present, must hold a value (not `null`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A whole number of seconds, however it is spelt: JSON Schema counts `3600.0` as the
/// integer 3600, and so does the document. Values out of range saturate (negative ones to
/// 0), to fail the bounds check with its own message.
fn whole_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(n) = n.as_u64() {
        return Ok(Some(n));
    }
    match n.as_f64() {
        // `as` saturates: what it cuts off is out of bounds either way.
        Some(f) if f.fract() == 0.0 => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!("ttl must be a whole number of seconds, not {n}"))),
    }
}

impl TokenRequest {
    fn parse(body: &[u8]) -> ApiResult<TokenRequest> {
        let invalid = |e: serde_json::Error| {
            ApiError::BadRequest(format!(
                "body must be JSON {{\"sub\": string, \"keys\": [string] (optional), \"topics\": [string] (optional), \"ttl\": seconds (optional)}}: {e}"
            ))
        };
        // Through an object first: serde would also take a struct from a JSON array, by
        // position, which the document does not allow.
        let object: serde_json::Map<String, Value> = serde_json::from_slice(body).map_err(invalid)?;
        let request: TokenRequest = serde_json::from_value(Value::Object(object)).map_err(invalid)?;
        // Lengths in characters, as the document's `maxLength` counts them.
        if request.sub.is_empty() || request.sub.chars().count() > MAX_SUB_CHARS {
            return Err(ApiError::BadRequest(format!("sub must be 1 to {MAX_SUB_CHARS} characters")));
        }
        if let Some(keys) = &request.keys {
            if keys.is_empty() || keys.len() > MAX_TOKEN_KEYS {
                return Err(ApiError::BadRequest(format!(
                    "keys must list 1 to {MAX_TOKEN_KEYS} keys (\"*\" for all; leave it out for every key)"
                )));
            }
            if keys.iter().any(|k| k.is_empty() || k.chars().count() > MAX_KEY_CHARS) {
                return Err(ApiError::BadRequest(format!("each key must be 1 to {MAX_KEY_CHARS} characters")));
            }
        }
        if let Some(topics) = &request.topics {
            if topics.is_empty() || topics.len() > MAX_TOKEN_KEYS {
                return Err(ApiError::BadRequest(format!(
                    "topics must list 1 to {MAX_TOKEN_KEYS} topics (leave it out for every topic)"
                )));
            }
            if topics.iter().any(|t| t.is_empty() || t.chars().count() > MAX_KEY_CHARS) {
                return Err(ApiError::BadRequest(format!("each topic must be 1 to {MAX_KEY_CHARS} characters")));
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
async fn mint_token(State(app): State<Admin>, Payload(body): Payload) -> ApiResult<Response> {
    let request = TokenRequest::parse(&body)?;
    let ttl = Duration::from_secs(request.ttl.unwrap_or(DEFAULT_TOKEN_TTL));
    let grant = crate::auth::Grant { keys: request.keys, topics: request.topics };
    let (token, expires) = app.auth.mint(&request.sub, &grant, ttl);
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
async fn info(State(app): State<Admin>, Extension(endpoint): Extension<SubscriptionEndpoint>) -> Json<Value> {
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
        "source": if app.embedded { "embedded" } else { "kafka" },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn token(body: &str) -> Result<TokenRequest, String> {
        TokenRequest::parse(body.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_token_request_is_an_object_with_no_nulls_and_whole_seconds() {
        let r = token(r#"{"sub":"dash","keys":["a","*"],"ttl":60}"#).unwrap();
        assert_eq!((r.sub.as_str(), r.keys.unwrap().len(), r.ttl), ("dash", 2, Some(60)));
        assert_eq!(token(r#"{"sub":"dash","ttl":5294.0}"#).unwrap().ttl, Some(5294));
        assert!(token(r#"{"sub":"dash"}"#).unwrap().keys.is_none());
        for bad in [
            r#"["dash"]"#,
            r#"{"sub":"dash","keys":null}"#,
            r#"{"sub":"dash","ttl":null}"#,
            r#"{"sub":"dash","ttl":1.5}"#,
            r#"{"sub":"dash","ttl":-1}"#,
            r#"{"sub":"dash","ttl":1e30}"#,
            r#"{"sub":"dash","ttl":"60"}"#,
            r#"{"sub":"dash","kyes":["a"]}"#,
            r#"{"sub":""}"#,
            r#"{"sub":"dash","keys":[]}"#,
            r#"{"sub":"dash","keys":[""]}"#,
            "",
        ] {
            assert!(token(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn lengths_are_counted_in_characters_as_the_document_counts_them() {
        // 256 characters of two bytes each: within `maxLength: 256`.
        assert!(token(&format!(r#"{{"sub":"{}"}}"#, "é".repeat(256))).is_ok());
        assert!(token(&format!(r#"{{"sub":"{}"}}"#, "é".repeat(257))).is_err());
    }

    #[test]
    fn only_codes_a_server_may_send_are_sendable() {
        for code in [1000, 1003, 1007, 1011, 3000, 4999] {
            assert!(sendable_close_code(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1012, 1015, 2999, 5000] {
            assert!(!sendable_close_code(code), "{code}");
        }
    }

    /// The document names every route this module serves, and only those.
    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: Value = serde_json::from_str(include_str!("openapi.json")).unwrap();
        let mut documented: Vec<String> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| *k != "parameters")
                    .map(move |m| format!("{} {path}", m.to_uppercase()))
            })
            .collect();
        documented.sort();
        let mut served = vec![
            "GET /api/clients",
            "GET /api/clients/{id}",
            "DELETE /api/clients/{id}",
            "POST /api/clients/{id}/messages",
            "POST /api/broadcast",
            "POST /api/publish/{key}",
            "GET /api/events",
            "POST /api/tokens",
            "GET /api/info",
            "GET /api/openapi.json",
        ];
        served.sort();
        assert_eq!(documented, served);
        assert_eq!(doc["components"]["schemas"]["TokenRequest"]["properties"]["ttl"]["maximum"], MAX_TOKEN_TTL);
        assert_eq!(doc["components"]["schemas"]["TokenRequest"]["properties"]["sub"]["maxLength"], MAX_SUB_CHARS);
        assert_eq!(doc["paths"]["/api/clients"]["get"]["parameters"][1]["schema"]["maximum"], MAX_PAGE);
        let delete = &doc["paths"]["/api/clients/{id}"]["delete"];
        assert_eq!(delete["parameters"][1]["schema"]["maxLength"], MAX_REASON_CHARS);
        // DELETE never waits for the close: one answer for a client found, naming the
        // bound the session keeps on its own.
        let within = format!("within {} s", crate::session::pump::CLOSE_TIMEOUT.as_secs());
        assert!(delete["responses"]["204"]["description"].as_str().unwrap().ends_with(&within));
        assert!(delete["responses"].get("202").is_none());
    }

    /// The admin surface as the gateway builds it, from parts that need no socket or broker:
    /// this process's registry holding one client.
    fn admin_with_a_client() -> (Admin, std::sync::Arc<crate::client::Client>, crate::client::QueueReceiver) {
        use crate::auth::{AuthSettings, Authenticator};
        use crate::client::{Client, SlowConsumerPolicy};
        use crate::metrics::Metrics;
        use crate::record::budget::Budget;
        use crate::registry::local::Local;
        use crate::registry::Registry;
        use crate::secret::Secret;
        use crate::sink::Outbox;
        use crate::stream::hub::{Hub, StreamSettings};
        use std::sync::Arc;

        let metrics = Metrics::new();
        let stream = StreamSettings {
            tag: 1,
            recent_bytes: 0,
            limits: crate::stream::replay::Limits { kafka: false, max_fetch: 0 },
        };
        let hub = Hub::new(
            SlowConsumerPolicy::Disconnect,
            metrics.clone(),
            Budget::new(usize::MAX, Default::default()),
            stream,
        );
        let registry = Registry::default();
        let outbox = Outbox::memory(metrics.clone());
        let (client, queue) =
            Client::new(crate::client::tests::info("c1", Some("*")), crate::client::tests::limits(8), 1024);
        let client = Arc::new(client);
        registry.insert(client.clone());
        let local = Local::new("n1".into(), registry.clone(), hub, None, outbox.clone());
        let auth = AuthSettings {
            users: vec![],
            jwt_secret: None,
            allow_anonymous: true,
            generated_password: false,
            provider: None,
        };
        let admin = Admin::new(crate::admin::Shared {
            clients: Arc::new(local),
            registry,
            admin_token: Secret::new("t0ken"),
            auth: Arc::new(Authenticator::new(&auth, &metrics).unwrap()),
            metrics: metrics.clone(),
            readiness: crate::readiness::Readiness::new(metrics),
            progress: Vec::new(),
            outbox,
            embedded: true,
            shutdown: tokio_util::sync::CancellationToken::new(),
        });
        // The queue's other end is the session's: the caller keeps it.
        (admin, client, queue)
    }

    async fn call(admin: &Admin, method: &str, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
        use tower::ServiceExt;
        let mut request = axum::http::Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let response = routes(admin.clone())
            .with_state(admin.clone())
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn handlers_list_and_disconnect_clients_behind_the_token() {
        let (admin, client, _queue) = admin_with_a_client();
        assert_eq!(call(&admin, "GET", "/api/clients", None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(call(&admin, "GET", "/api/clients", Some("wrong")).await.0, StatusCode::UNAUTHORIZED);
        let (status, page) = call(&admin, "GET", "/api/clients", Some("t0ken")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["clients"][0]["replyId"], "c1", "{page}");

        let (status, _) = call(&admin, "DELETE", "/api/clients/c1?code=4000&reason=bye", Some("t0ken")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(client.close_reason().map(|r| (r.code, r.reason.clone())), Some((4000, "bye".to_owned())));
        assert_eq!(call(&admin, "GET", "/api/clients/c1", Some("t0ken")).await.0, StatusCode::NOT_FOUND);
        assert_eq!(call(&admin, "DELETE", "/api/clients/c1", Some("t0ken")).await.0, StatusCode::NOT_FOUND);
    }
}
