//! Proxies to an HTTP backend that decides: who may connect (`--connect-url`, before the
//! upgrade, in place of the gateway's own credential check), and which subscriptions of a
//! multiplexed connection may open (`--subscribe-url`).
//!
//! Sluice POSTs what the request carries — path, query, `?token=`, the `Authorization`,
//! `Cookie`, `Origin` and `User-Agent` headers, the client's address — and the backend
//! answers `{"allow":true}` with, optionally, the `user`, the `keys` (exact or patterns) and
//! `topics` it may read, and `data` to attach to the client (shown in the registry); or
//! `{"allow":false,"status":4xx,"error":…}`, or a 4xx status of its own, which Sluice answers
//! the upgrade with. A backend that does not answer within [`TIMEOUT`], answers 5xx or
//! something that is not a decision refuses with 503: never allows.
//!
//! A subscription is asked about with `{"replyId","user","subscription":{…the subscribe
//! frame…}}` and allowed or denied the same way; a deny is the `error` frame's status.
//!
//! Calls reuse pooled connections and at most [`MAX_IN_FLIGHT`] are in flight at once per
//! proxy (the rest wait within the same timeout), so a reconnect storm does not become as
//! many connections to the backend.

use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use super::{AuthError, Identity};
use crate::backend;
use crate::metrics::Metrics;

/// A decision not taken within this is a refusal (503), waiting for a slot included.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Calls to the backend in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Bytes of `data` kept per client: it is held as long as the connection.
const MAX_DATA_BYTES: usize = 4096;
/// Bytes of an answer read: a decision is small; more is not one.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// The headers a backend may decide on; others (and any proxy's) are not sent.
const FORWARDED: [header::HeaderName; 4] = [header::AUTHORIZATION, header::COOKIE, header::ORIGIN, header::USER_AGENT];

/// What an upgrade request carries, for the backend.
pub struct ConnectRequest<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub token: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub remote: String,
    /// `websocket`, `websocket+sluice.v1` (multiplexed) or `sse`.
    pub transport: &'static str,
}

/// The backend's answer.
#[derive(Deserialize)]
struct Decision {
    allow: bool,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    keys: Option<Vec<String>>,
    #[serde(default)]
    topics: Option<Vec<String>>,
    #[serde(default)]
    data: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    error: Option<String>,
}

/// One backend that decides: the connect proxy or the subscribe proxy.
pub struct Proxy {
    /// `connect` or `subscribe`: the metric's label.
    kind: &'static str,
    url: String,
    http: reqwest::Client,
    in_flight: Semaphore,
    metrics: Metrics,
}

impl Proxy {
    pub fn new(kind: &'static str, url: &str, metrics: Metrics) -> Result<Proxy, String> {
        let http = backend::client(&format!("the {kind} proxy"), TIMEOUT, MAX_IN_FLIGHT)?;
        Ok(Proxy { kind, url: url.to_owned(), http, in_flight: Semaphore::new(MAX_IN_FLIGHT), metrics })
    }

    /// The backend's decision on this request: who the client is, or why it may not connect.
    pub async fn decide(&self, request: &ConnectRequest<'_>) -> Result<Identity, AuthError> {
        let body = connect_body(request);
        self.decision(body).await.and_then(identity)
    }

    /// Whether a multiplexed connection's subscription may open: `subscription` is its
    /// subscribe frame.
    pub async fn allow(&self, reply_id: &str, user: Option<&str>, subscription: &Value) -> Result<(), AuthError> {
        let body = json!({ "replyId": reply_id, "user": user, "subscription": subscription });
        let decision = self.decision(body).await?;
        if decision.allow {
            Ok(())
        } else {
            Err(refusal(decision))
        }
    }

    /// The backend's answer to `body`, timed out, counted and (when it could not decide)
    /// logged.
    async fn decision(&self, body: Value) -> Result<Decision, AuthError> {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(TIMEOUT, self.ask(body)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(AuthError::ProxyUnavailable(format!("no decision within {} s", TIMEOUT.as_secs()))),
        };
        let label = match &outcome {
            Ok(d) if d.allow => "allow",
            Ok(_) | Err(AuthError::Denied { .. }) => "deny",
            Err(_) => "unavailable",
        };
        let error = match &outcome {
            Err(AuthError::ProxyUnavailable(e)) => Some(e.as_str()),
            _ => None,
        };
        self.metrics.proxied(self.kind, label, error, started.elapsed());
        outcome
    }

    async fn ask(&self, body: Value) -> Result<Decision, AuthError> {
        let unavailable = |e: String| AuthError::ProxyUnavailable(e);
        let _slot = self.in_flight.acquire().await.map_err(|e| unavailable(e.to_string()))?;
        let response =
            self.http.post(&self.url).json(&body).send().await.map_err(|e| unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_client_error() {
            let answer = backend::body(response, MAX_ANSWER_BYTES).await.unwrap_or_default();
            let answer: Option<Value> = serde_json::from_slice(&answer).ok();
            let error = answer.as_ref().and_then(|a| a["error"].as_str()).unwrap_or("refused by the backend");
            return Err(AuthError::Denied { status: status.as_u16(), error: error.to_owned() });
        }
        if !status.is_success() {
            return Err(unavailable(format!("the backend answered {status}")));
        }
        let answer = backend::body(response, MAX_ANSWER_BYTES).await.map_err(unavailable)?;
        serde_json::from_slice(&answer).map_err(|e| unavailable(format!("not a decision: {e}")))
    }
}

/// What the connect proxy is told of an upgrade request.
fn connect_body(request: &ConnectRequest<'_>) -> Value {
    let mut headers = Map::new();
    for name in &FORWARDED {
        if let Some(value) = request.headers.get(name).and_then(|v| v.to_str().ok()) {
            headers.insert(name.as_str().to_owned(), json!(value));
        }
    }
    json!({
        "path": request.path,
        "query": request.query,
        "token": request.token,
        "headers": headers,
        "remoteAddr": request.remote,
        "transport": request.transport,
    })
}

/// A decision as an identity, or as the refusal it asks for.
fn identity(d: Decision) -> Result<Identity, AuthError> {
    if !d.allow {
        return Err(refusal(d));
    }
    let data = d.data.map(|raw| raw.get().to_owned());
    if data.as_ref().is_some_and(|d| d.len() > MAX_DATA_BYTES) {
        return Err(AuthError::ProxyUnavailable(format!("data over {MAX_DATA_BYTES} bytes")));
    }
    Ok(Identity { user: d.user, keys: d.keys, topics: d.topics, expires: None, data: data.map(String::into_boxed_str) })
}

/// A deny as the refusal the client gets: only a client error is its answer; anything
/// else is a plain 403.
fn refusal(d: Decision) -> AuthError {
    let status = d.status.filter(|s| (400..500).contains(s)).unwrap_or(403);
    AuthError::Denied { status, error: d.error.unwrap_or_else(|| "refused by the backend".into()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(json: &str) -> Result<Identity, AuthError> {
        identity(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn an_allow_carries_who_and_what_and_a_deny_its_status() {
        let id = decision(r#"{"allow":true,"user":"ann","keys":["sensor-*"],"data":{"plan":"pro"}}"#).unwrap();
        assert_eq!(id.user.as_deref(), Some("ann"));
        assert_eq!(id.keys, Some(vec!["sensor-*".to_owned()]));
        assert_eq!(id.topics, None);
        assert_eq!(id.data.as_deref(), Some(r#"{"plan":"pro"}"#));
        assert_eq!(
            decision(r#"{"allow":false,"status":401,"error":"log in"}"#),
            Err(AuthError::Denied { status: 401, error: "log in".into() })
        );
        // A status that is not the client's error is a plain 403.
        assert!(matches!(decision(r#"{"allow":false,"status":200}"#), Err(AuthError::Denied { status: 403, .. })));
        assert!(matches!(decision(r#"{"allow":false}"#), Err(AuthError::Denied { status: 403, .. })));
        let big = format!(r#"{{"allow":true,"data":"{}"}}"#, "x".repeat(MAX_DATA_BYTES));
        assert!(matches!(decision(&big), Err(AuthError::ProxyUnavailable(_))));
    }
}
