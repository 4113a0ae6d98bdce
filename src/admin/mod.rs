//! Plain HTTP on the gateway's port: liveness, readiness, metrics, and which listener
//! serves the admin API and the console.
//!
//! Every WebSocket upgrade request, on any path, is a subscription and goes to
//! [`crate::session::ws`] before routing, so every key stays reachable (even `metrics` or `api`).

pub mod api;
pub mod console;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};

use tokio_util::sync::CancellationToken;

use crate::admin::api::SubscriptionEndpoint;
use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::registry::{Clients, Registry};
use crate::secret::Secret;
use crate::session::Subscriptions;
use crate::sink::Outbox;
use crate::source::progress::Progress;

/// What the admin surface reads: the clients it manages, how to prove an operator, the
/// gateway's health. Cheap to clone; built from parts that need no socket or broker, so a
/// handler can be tested alone.
#[derive(Clone)]
pub struct Admin(Arc<Shared>);

pub struct Shared {
    /// The clients the admin API manages: this process's, or the whole cluster's.
    pub clients: Arc<dyn Clients>,
    /// This process's clients (their number, for the console).
    pub registry: Registry,
    /// The Bearer token of the admin API.
    pub admin_token: Secret,
    /// Mints client tokens (`POST /api/tokens`).
    pub auth: Arc<Authenticator>,
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// How far consuming `input` is, per partition (Kafka only): `/readyz` shows it.
    pub progress: Vec<Progress>,
    /// The lifecycle events the console watches (`/api/events`).
    pub outbox: Outbox,
    /// The source is the embedded stream.
    pub embedded: bool,
    /// Cancelled when shutdown begins: `/readyz` turns 503 and event feeds end.
    pub shutdown: CancellationToken,
}

impl Admin {
    pub fn new(shared: Shared) -> Admin {
        Admin(Arc::new(shared))
    }
}

impl Deref for Admin {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Subscriptions and everything else (the default: one port).
    Both,
    /// Subscriptions, /healthz and /readyz (the client port when `--admin-addr` is set).
    Subscriptions,
    /// The admin API, health, metrics and console (the `--admin-addr` listener).
    Admin,
}

/// The HTTP surface of one listener. `subscriptions` is where WebSocket clients connect
/// (this listener, or the main one when this is the `--admin-addr` listener).
pub fn router(app: Admin, subs: Subscriptions, surface: Surface, subscriptions: SocketAddr, tls: bool) -> Router {
    let mut router = Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz));
    if surface != Surface::Subscriptions {
        let endpoint = SubscriptionEndpoint { port: subscriptions.port(), tls, same_origin: surface == Surface::Both };
        router = router
            .route("/metrics", get(metrics))
            .merge(crate::admin::console::routes())
            .merge(crate::admin::api::routes(app.clone()))
            .layer(Extension(endpoint));
    }
    let router = router.fallback(crate::admin::api::no_such_endpoint);
    let router = if surface != Surface::Admin {
        router.layer(middleware::from_fn_with_state(subs, divert_upgrades))
    } else {
        router
    };
    router.with_state(app)
}

/// Subscriptions first: a WebSocket upgrade on any path, and a GET asking for an event
/// stream on any path but the admin feed's, whatever else a path means to plain HTTP.
async fn divert_upgrades(State(subs): State<Subscriptions>, request: Request, next: Next) -> Response {
    if crate::session::ws::is_upgrade(request.headers()) {
        crate::session::ws::upgrade(subs, request).await
    } else if crate::session::sse::is_event_stream(request.method(), request.headers())
        && request.uri().path() != "/api/events"
    {
        crate::session::sse::subscribe(subs, request).await
    } else if crate::session::sse::is_preflight(request.method(), request.headers())
        && !request.uri().path().starts_with("/api/")
    {
        crate::session::sse::preflight(&subs.gate, request.headers())
    } else {
        next.run(request).await
    }
}

/// Alive as long as the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Ready while the source is consuming; 503 during a broker outage and from the start of
/// shutdown, so a load balancer stops sending new clients. The body says why, and for
/// Kafka how far consuming is in each partition (position, high watermark, lag, stuck):
/// a stuck partition shows here without making the gateway unready, since every replica
/// reading the topic would be stuck on it alike and taking them all out helps nobody.
async fn readyz(State(app): State<Admin>) -> Response {
    let ready = app.readiness.is_ready() && !app.shutdown.is_cancelled();
    let reason = if app.shutdown.is_cancelled() { "shutting down".to_owned() } else { app.readiness.why() };
    let mut body = serde_json::json!({ "ready": ready, "reason": reason });
    // The default topic's at the top level; every topic's under `topics`.
    if let Some(progress) = app.progress.first() {
        body["topic"] = progress.topic().into();
        body["partitions"] = serde_json::to_value(progress.view()).unwrap_or_default();
        body["topics"] = app
            .progress
            .iter()
            .map(|p| serde_json::json!({ "topic": p.topic(), "partitions": p.view() }))
            .collect::<Vec<_>>()
            .into();
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(app): State<Admin>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.render())
        .into_response()
}
