//! WebSocket subscriptions: the upgrade (authenticated before anything is opened) and the
//! session that pumps a client's queue into its socket.
//!
//! One task per client does everything for it: writes queued frames in batches, reads
//! what the client sends, pings, and closes with the right code. A write that blocks
//! (a client that does not read) still yields to the close signal, so a slow client can
//! always be closed and never holds anything but itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::SinkExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::app::App;
use crate::auth::Authenticator;
use crate::client::{Client, ClientInfo, Subscription, CLOSE_GOING_AWAY};
use crate::sink::Event;

/// The response header that carries the connection id.
pub const CONNECTION_ID_HEADER: &str = "sluice-connection-id";
/// Frames written per batch before the socket is flushed.
const WRITE_BATCH: usize = 64;
/// How long a close handshake may take when Sluice closes a client (slow consumer, ping
/// timeout) before the connection is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-connection read buffer, allocated for every connection: small, because most
/// clients mostly listen (tungstenite grows it to fit a larger message while reading it).
const READ_BUFFER: usize = 512;
/// Bytes buffered before a write reaches the socket, within a batch.
const WRITE_BUFFER: usize = 64 * 1024;

/// Whether a request asks for a WebSocket upgrade (on any path: every path is a key).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let has = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))).unwrap_or(false))
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
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
    Ok(Subscription::Key(Bytes::from(key)))
}

#[derive(Default)]
struct Params {
    token: Option<String>,
    envelope: bool,
}

fn params(uri: &Uri) -> Params {
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

/// Handles an upgrade request: authenticate, authorize the key, register the client, and
/// answer 101 with its id. Refusals never open a socket.
pub async fn upgrade(app: App, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let remote = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));

    let subscription = match subscription_from_path(parts.uri.path()) {
        Ok(s) => s,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let params = params(&parts.uri);
    let identity = app
        .auth
        .authenticate(&parts.headers, params.token.as_deref())
        .and_then(|id| Authenticator::authorize(&id, &subscription).map(|()| id));
    let identity = match identity {
        Ok(identity) => identity,
        Err(e) => {
            app.metrics.auth_failed(e.reason(), remote);
            return app.auth.refusal(&e);
        }
    };

    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };

    let id = uuid::Uuid::new_v4().to_string();
    let user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let info =
        ClientInfo { id: id.clone(), subscription, envelope: params.envelope, user: identity.user, remote, user_agent };
    let (client, queue) = Client::new(info, app.settings.queue, app.settings.stored_message_bytes);
    let client = Arc::new(client);
    // Subscribed before the 101 goes out: a client that has its answer receives every
    // record dispatched from then on. If the upgrade fails, the closure is dropped and
    // with it these guards.
    let guards = (app.registry.insert(client.clone()), app.hub.subscribe(client.clone()));
    let tracked = app.tracker.token();
    let permit = parts.extensions.get::<crate::server::ConnectionPermit>().cloned();

    let span = tracing::info_span!("session", client = %id, key = %client.subscription.display());
    let mut response = upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(app.settings.max_message_size)
        .max_frame_size(app.settings.max_message_size)
        .on_upgrade(move |socket| {
            let session = Session { app, client, queue, _guards: guards, _tracked: tracked, _permit: permit };
            session.run(socket).instrument(span)
        });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(CONNECTION_ID_HEADER, value);
    }
    response
}

/// How a session ended, for the log line and the metrics.
#[derive(Debug)]
enum End {
    /// A close handshake, started by either side, with this code and reason.
    Closed { code: u16, reason: String, by_client: bool },
    /// The connection broke without a close.
    Lost(String),
}

struct Session {
    app: App,
    client: Arc<Client>,
    queue: crate::client::QueueReceiver,
    _guards: (crate::registry::RegistryGuard, crate::hub::SubscriptionGuard),
    _tracked: tokio_util::task::task_tracker::TaskTrackerToken,
    _permit: Option<crate::server::ConnectionPermit>,
}

/// What interrupted a batch write.
enum Interrupt {
    Close,
    Shutdown,
    Error(axum::Error),
}

impl Session {
    async fn run(mut self, mut socket: WebSocket) {
        let metrics = self.app.metrics.clone();
        metrics.connections.inc();
        metrics.connections_opened.inc();
        tracing::info!(remote = %self.client.remote, user = self.client.user.as_deref().unwrap_or("-"), "connected");
        self.app.outbox.emit(&self.client, Event::Connect);
        let end = self.pump(&mut socket).await;
        metrics.connections.dec();
        let (code, reason) = match &end {
            End::Closed { code, reason, by_client } => {
                tracing::info!(code, reason, by_client, "disconnected");
                (*code, reason.as_str())
            }
            End::Lost(error) => {
                metrics.session_errors.inc();
                tracing::info!(error, "connection lost");
                (1006, error.as_str())
            }
        };
        self.app.outbox.emit(&self.client, Event::Disconnect { code, reason });
    }

    /// The loop every idle client waits in. The cold paths (closing, read errors) are
    /// boxed, so the state held per idle connection is only what waiting and writing need;
    /// the write path stays inline, as boxing it costs an allocation per batch (measured in
    /// BENCHMARKS.md).
    async fn pump(&mut self, socket: &mut WebSocket) -> End {
        if self.app.settings.welcome {
            let welcome =
                Utf8Bytes::from(serde_json::json!({ "type": "connected", "replyId": self.client.id }).to_string());
            if let Err(e) = socket.send(Message::Text(welcome.clone())).await {
                return End::Lost(e.to_string());
            }
            self.client.sent(1, welcome.len() as u64, welcome.as_bytes());
        }

        let ping_every = self.app.settings.ping_interval;
        let mut ping = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut last_heard = Instant::now();

        loop {
            tokio::select! {
                biased;
                _ = self.client.closing() => return Box::pin(self.close_requested(socket)).await,
                _ = self.app.shutdown.cancelled() => return Box::pin(self.shut_down(socket)).await,
                frame = self.queue.recv() => {
                    match self.write_batch(socket, frame).await {
                        Ok(()) => {}
                        Err(Interrupt::Close) => return Box::pin(self.close_requested(socket)).await,
                        Err(Interrupt::Shutdown) => return Box::pin(self.shut_down(socket)).await,
                        Err(Interrupt::Error(e)) => return End::Lost(e.to_string()),
                    }
                }
                incoming = socket.recv() => {
                    last_heard = Instant::now();
                    match incoming {
                        None => return End::Lost("connection closed without a close frame".into()),
                        Some(Err(e)) => return Box::pin(self.read_failed(socket, e)).await,
                        Some(Ok(Message::Close(frame))) => {
                            // tungstenite queued the echo of this close; send it.
                            let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
                            let (code, reason) = frame.map(|f| (f.code, f.reason.to_string())).unwrap_or((1005, String::new()));
                            return End::Closed { code, reason, by_client: true };
                        }
                        Some(Ok(Message::Text(text))) => self.client_message(text.as_bytes(), true),
                        Some(Ok(Message::Binary(data))) => self.client_message(&data, false),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    }
                }
                _ = ping.tick(), if ping_every.is_some() => {
                    let every = ping_every.unwrap_or_default();
                    if last_heard.elapsed() > every * 2 {
                        self.client.close(1001, "ping timeout");
                        continue;
                    }
                    // A client that stopped reading blocks this write: it must still yield
                    // to the close signal, or a slow consumer could never be closed.
                    let sent = tokio::select! {
                        biased;
                        _ = self.client.closing() => return Box::pin(self.close_requested(socket)).await,
                        _ = self.app.shutdown.cancelled() => return Box::pin(self.shut_down(socket)).await,
                        sent = socket.send(Message::Ping(Bytes::new())) => sent,
                    };
                    if let Err(e) = sent {
                        return End::Lost(e.to_string());
                    }
                }
            }
        }
    }

    /// A message from the client: counted, recorded, and passed on (never waited on).
    fn client_message(&self, data: &[u8], text: bool) {
        self.client.received(data);
        self.app.metrics.client_messages.inc();
        self.app.outbox.emit(&self.client, Event::Message { data, text });
    }

    /// A read failed: a message over the size limit closes with 1009, invalid UTF-8 in a
    /// text message with 1007; anything else is a lost connection.
    async fn read_failed(&mut self, socket: &mut WebSocket, error: axum::Error) -> End {
        use tungstenite::error::{CapacityError, Error as WsError};
        let cause = std::error::Error::source(&error).and_then(|s| s.downcast_ref::<WsError>());
        let (code, reason) = match cause {
            Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => (1009, "message too big"),
            Some(WsError::Utf8(_)) => (1007, "invalid UTF-8 in a text message"),
            _ => return End::Lost(error.to_string()),
        };
        self.client.close(code, reason);
        close(socket, code, reason, CLOSE_TIMEOUT).await;
        End::Closed { code, reason: reason.into(), by_client: false }
    }

    /// Writes `first` and whatever else is queued (up to a batch), then flushes once. Yields
    /// to a close request or shutdown even while the socket is blocked.
    async fn write_batch(&mut self, socket: &mut WebSocket, first: Message) -> Result<(), Interrupt> {
        // Borrowed, not cloned: cloning a cancellation token takes a lock, and this runs
        // for every batch.
        let client = &self.client;
        let shutdown = &self.app.shutdown;
        let queue = &mut self.queue;
        let write = async {
            let (mut count, mut bytes) = (0u64, 0u64);
            let mut current = first;
            let last = loop {
                count += 1;
                bytes += frame_len(&current) as u64;
                let next = if count < WRITE_BATCH as u64 { queue.try_recv() } else { None };
                let Some(next) = next else {
                    // Only the batch's last frame is kept for the registry: one reference
                    // count per batch, not per frame.
                    let last = current.clone();
                    socket.feed(current).await?;
                    break last;
                };
                socket.feed(std::mem::replace(&mut current, next)).await?;
            };
            socket.flush().await?;
            Ok::<_, axum::Error>((count, bytes, last))
        };
        let (count, bytes, last) = tokio::select! {
            biased;
            r = write => r.map_err(Interrupt::Error)?,
            _ = client.closing() => return Err(Interrupt::Close),
            _ = shutdown.cancelled() => return Err(Interrupt::Shutdown),
        };
        self.client.sent(count, bytes, frame_bytes(&last));
        self.app.metrics.frames_sent.inc_by(count);
        self.app.metrics.bytes_sent.inc_by(bytes);
        Ok(())
    }

    /// Closes because something asked for it (slow consumer, admin, ping timeout): queued
    /// frames are not sent, the close frame is, and the handshake gets a bounded time.
    async fn close_requested(&mut self, socket: &mut WebSocket) -> End {
        let reason = self
            .client
            .close_reason()
            .cloned()
            .unwrap_or(crate::client::CloseReason { code: 1000, reason: String::new() });
        close(socket, reason.code, &reason.reason, CLOSE_TIMEOUT).await;
        End::Closed { code: reason.code, reason: reason.reason, by_client: false }
    }

    /// Closes for shutdown: everything already queued is sent first, then 1001, within
    /// the shutdown deadline.
    async fn shut_down(&mut self, socket: &mut WebSocket) -> End {
        let deadline = self.app.settings.shutdown_timeout.saturating_sub(Duration::from_millis(250));
        let started = Instant::now();
        let mut count = 0u64;
        let mut bytes = 0u64;
        let drained = tokio::time::timeout(deadline, async {
            while let Some(frame) = self.queue.try_recv() {
                count += 1;
                bytes += frame_len(&frame) as u64;
                socket.feed(frame).await?;
            }
            socket.flush().await
        })
        .await;
        self.app.metrics.frames_sent.inc_by(count);
        self.app.metrics.bytes_sent.inc_by(bytes);
        if !matches!(drained, Ok(Ok(()))) {
            return End::Lost("could not flush queued frames before the shutdown deadline".into());
        }
        let reason = "shutting down";
        close(socket, CLOSE_GOING_AWAY, reason, deadline.saturating_sub(started.elapsed())).await;
        End::Closed { code: CLOSE_GOING_AWAY, reason: reason.into(), by_client: false }
    }
}

/// Sends a close frame and waits (bounded) for the client's, so the connection is not
/// reset under data the client has not read yet.
async fn close(socket: &mut WebSocket, code: u16, reason: &str, within: Duration) {
    let _ = tokio::time::timeout(within, async {
        socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await?;
        while let Some(message) = socket.recv().await {
            if matches!(message?, Message::Close(_)) {
                break;
            }
        }
        Ok::<_, axum::Error>(())
    })
    .await;
}

fn frame_bytes(m: &Message) -> &[u8] {
    match m {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b,
        Message::Close(_) => &[],
    }
}

fn frame_len(m: &Message) -> usize {
    frame_bytes(m).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_keys_percent_decoded_and_star_is_all() {
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

    #[test]
    fn upgrade_detection_reads_token_lists() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert!(is_upgrade(&h));
        h.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        assert!(!is_upgrade(&h));
    }
}
