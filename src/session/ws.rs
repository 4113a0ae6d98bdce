//! WebSocket subscriptions: the upgrade (authenticated before anything is opened) and the
//! session that pumps a client's queue into its socket.
//!
//! One task per client does everything for it: writes queued frames in batches, reads
//! what the client sends, pings, and closes with the right code. A write that blocks
//! (a client that does not read) still yields to the close signal, so a slow client can
//! always be closed and never holds anything but itself.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, request, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;
use tracing::Instrument;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes};

use crate::client::{Signal, CLOSE_GOING_AWAY};
use crate::record::payload;
use crate::record::Form;
use crate::session::admission::Refused;
use crate::session::{End, Liveness, Opening, Session, Subscriptions, CLOSE_TIMEOUT, PING_TIMEOUT};

/// The response header that carries the connection id.
pub const CONNECTION_ID_HEADER: &str = "sluice-connection-id";
/// Frames written per batch before the socket is flushed.
const WRITE_BATCH: usize = 64;
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

/// Handles an upgrade request: admit it (path, origin, credentials), check the opening
/// handshake, take a session slot, register the client, and answer 101 with its id.
/// Refusals never open a socket.
pub async fn upgrade(subs: Subscriptions, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let admitted = match subs.gate.admit(&parts) {
        Ok(a) => a,
        Err(refused) => return subs.gate.refuse(&parts, refused),
    };
    if let Err(refused) = subs.gate.joined().await {
        return subs.gate.refuse(&parts, refused);
    }
    let handshake = handshake(&mut parts)
        .map_err(|r| Refused::Transport { reason: "bad_handshake", response: Box::new(r.into_response()) })
        .and_then(|h| subs.gate.slot().map(|slot| (h, slot)));
    let ((on_upgrade, accept), slot) = match handshake {
        Ok(h) => h,
        Err(refused) => return subs.gate.refuse(&parts, refused),
    };
    let form = Form::new(false, admitted.params.envelope);
    // Subscribed before the 101 goes out: a client that has its answer receives every
    // record dispatched from then on. If the upgrade fails, the task below ends and the
    // session's drop takes the client out again.
    let (session, opening) = Session::open(subs.sessions, admitted, form, slot);
    let id = session.client.id.clone();
    let span = tracing::info_span!("session", client = %id, key = %session.client.subscription.display(), node = %session.sessions.node);
    tokio::spawn(session.run_websocket(on_upgrade, Box::new(opening)).instrument(span));

    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(CONNECTION_ID_HEADER, value);
    }
    response
}

/// Why an opening handshake is refused (RFC 6455 §4.2.1), each with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    #[error("a WebSocket upgrade must be a GET request")]
    Method,
    #[error("unsupported Sec-WebSocket-Version: this server speaks 13")]
    Version,
    #[error("missing Sec-WebSocket-Key header")]
    NoKey,
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match self {
            Refusal::Method => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::Version | Refusal::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            Refusal::NoKey => StatusCode::BAD_REQUEST,
        };
        let mut response = (status, self.to_string()).into_response();
        if self == Refusal::Version {
            // RFC 6455 §4.4: name the version this server speaks.
            response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        response
    }
}

/// Checks the rest of an opening handshake (the Upgrade and Connection headers were
/// checked by [`is_upgrade`]) and returns hyper's upgrade handle with the
/// `Sec-WebSocket-Accept` value.
fn handshake(parts: &mut request::Parts) -> Result<(OnUpgrade, HeaderValue), Refusal> {
    if parts.method != Method::GET {
        return Err(Refusal::Method);
    }
    if parts.headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(Refusal::Version);
    }
    let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).ok_or(Refusal::NoKey)?;
    // The accept value is base64: always a valid header value.
    let accept = HeaderValue::from_str(&tungstenite::handshake::derive_accept_key(key.as_bytes()))
        .map_err(|_| Refusal::NoKey)?;
    let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(Refusal::NotUpgradable)?;
    Ok((on_upgrade, accept))
}

/// A client's WebSocket: over the TCP stream itself, or hyper's wrapper of a TLS one.
/// (Boxed: the TLS state is large, and every plain connection would reserve room for it.)
type Socket = WebSocketStream<Either<TcpStream, Box<TokioIo<Upgraded>>>>;

/// Takes the socket back from hyper. A plain TCP connection comes out of hyper's
/// `Upgraded` wrapper, which drops hyper's read buffer and a boxed indirection that an idle
/// connection would otherwise keep (memory per connection, BENCHMARKS.md); bytes hyper read
/// past the request are handed to the WebSocket first.
async fn websocket(upgraded: Upgraded, max_message_size: usize) -> Socket {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size));
    let (io, read_ahead) = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => (Either::Left(parts.io.into_inner()), parts.read_buf),
        // TLS: the stream stays inside hyper's wrapper.
        Err(upgraded) => (Either::Right(Box::new(TokioIo::new(upgraded))), Bytes::new()),
    };
    if read_ahead.is_empty() {
        WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
    } else {
        WebSocketStream::from_partially_read(io, read_ahead.to_vec(), Role::Server, Some(config)).await
    }
}

/// One batch of frames on its way into the socket. Written against the sink's poll
/// methods rather than as an async block, so that what every idle session reserves for
/// writing is these few fields (memory per connection, BENCHMARKS.md).
struct Batch {
    /// The frame to hand to the socket next.
    next: Option<Message>,
    count: u64,
    bytes: u64,
    /// The batch's last frame, for the registry: one reference count per batch.
    last: Option<Message>,
    /// The socket took a frame since the idle check last looked: the client is reading.
    progressed: bool,
    /// The socket was found full during this batch (and the client marked blocked).
    blocked: bool,
}

impl Batch {
    fn poll_write(
        &mut self,
        socket: &mut Socket,
        queue: &crate::client::QueueReceiver,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), tungstenite::Error>> {
        let mut socket = Pin::new(socket);
        while let Some(frame) = self.next.take() {
            if socket.as_mut().poll_ready(cx)?.is_pending() {
                self.next = Some(frame);
                return Poll::Pending;
            }
            self.count += 1;
            self.progressed = true;
            self.bytes += payload(&frame).len() as u64;
            self.next = if self.count < WRITE_BATCH as u64 { queue.try_recv() } else { None };
            if self.next.is_none() {
                self.last = Some(frame.clone());
            }
            socket.as_mut().start_send(frame)?;
        }
        socket.poll_flush(cx)
    }
}

/// What interrupted a batch write.
enum Interrupt {
    Signal(Signal),
    /// The socket took nothing, and nothing was heard, for two ping intervals.
    Idle,
    Error(tungstenite::Error),
}

impl Session {
    /// The session's task: waits for hyper to hand the connection over, then serves it.
    ///
    /// Every live connection holds this future for its whole life, so it is kept small:
    /// written as a block that uses `self` where it was captured (an `async fn` with a
    /// `mut self` would hold a second copy), and holding nothing it does not need while
    /// waiting.
    #[allow(clippy::manual_async_fn, reason = "an async fn taking `mut self` would hold a second copy of it")]
    fn run_websocket(
        mut self,
        on_upgrade: OnUpgrade,
        opening: Box<Opening>,
    ) -> impl std::future::Future<Output = ()> + Send {
        async move {
            let mut socket = match on_upgrade.await {
                Ok(upgraded) => websocket(upgraded, self.sessions.settings.max_message_size).await,
                Err(e) => return tracing::debug!(error = %e, "upgrade failed after the 101"),
            };
            self.started();
            let end = match Box::pin(self.send_opening(&mut socket, opening)).await {
                Ok(()) => self.pump(&mut socket).await,
                Err(e) => End::Lost(e.to_string()),
            };
            self.finish(end);
        }
    }

    /// The welcome frame and any records read back from Kafka, before the queue.
    async fn send_opening(&mut self, socket: &mut Socket, opening: Box<Opening>) -> Result<(), tungstenite::Error> {
        let frames = self.opening(opening).await;
        let (mut count, mut bytes) = (0u64, 0u64);
        for frame in &frames {
            count += 1;
            bytes += payload(frame).len() as u64;
            socket.feed(frame.clone()).await?;
        }
        socket.flush().await?;
        if let Some(last) = frames.last() {
            self.client.sent(count, bytes, payload(last));
        }
        self.sessions.metrics.frames_sent.inc_by(count);
        self.sessions.metrics.bytes_sent.inc_by(bytes);
        Ok(())
    }

    /// The loop every idle client waits in. The cold paths (closing, read errors) are
    /// boxed, so the state held per idle connection is only what waiting and writing need;
    /// the write path stays inline, as boxing it costs an allocation per batch (measured in
    /// BENCHMARKS.md).
    async fn pump(&mut self, socket: &mut Socket) -> End {
        let mut live = Liveness::new(self.sessions.settings.ping_interval);

        // Shutdown reaches sessions through their queues (Gateway::serve signals every
        // registered client); one registered after that signal finds the token cancelled.
        if self.sessions.shutdown.is_cancelled() {
            self.client.shut_down();
        }
        loop {
            tokio::select! {
                biased;
                next = self.queue.next() => {
                    let written = match next {
                        Ok(frame) => self.write_batch(socket, frame, &mut live).await,
                        Err(signal) => Err(Interrupt::Signal(signal)),
                    };
                    match written {
                        // The socket took the batch: the client is reading.
                        Ok(()) => {
                            if live.wrote() {
                                self.delivered();
                            }
                        }
                        Err(Interrupt::Signal(Signal::Close)) => return Box::pin(self.close_requested(socket)).await,
                        Err(Interrupt::Signal(Signal::Shutdown)) => return Box::pin(self.shut_down(socket)).await,
                        Err(Interrupt::Idle) => {
                            self.client.close(CLOSE_GOING_AWAY, PING_TIMEOUT);
                            return Box::pin(self.close_requested(socket)).await;
                        }
                        Err(Interrupt::Error(e)) => return End::Lost(e.to_string()),
                    }
                }
                incoming = socket.next() => {
                    live.alive = true;
                    match incoming {
                        None => return End::Lost("connection closed without a close frame".into()),
                        Some(Err(e)) => return Box::pin(self.read_failed(socket, e)).await,
                        Some(Ok(Message::Close(frame))) => return Box::pin(self.closed_by_client(socket, frame)).await,
                        Some(Ok(Message::Text(text))) => self.client_message(text.as_bytes(), true),
                        Some(Ok(Message::Binary(data))) => self.client_message(&data, false),
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    }
                }
                expired = std::future::poll_fn(|cx| live.poll_expired(cx, &mut false)) => {
                    if expired {
                        self.client.close(CLOSE_GOING_AWAY, PING_TIMEOUT);
                        continue;
                    }
                    // A client that stopped reading blocks this write: it must still yield
                    // to the close signal, and give up when the client's time is up.
                    // A ping that cannot even be sent before the next tick: nothing is going
                    // out to this client, nor coming from it.
                    let left = live.every;
                    let sent = tokio::select! {
                        biased;
                        signal = self.queue.signalled() => match signal {
                            Signal::Close => return Box::pin(self.close_requested(socket)).await,
                            Signal::Shutdown => return Box::pin(self.shut_down(socket)).await,
                        },
                        sent = tokio::time::timeout(left, socket.send(Message::Ping(Bytes::new()))) => sent,
                    };
                    match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return End::Lost(e.to_string()),
                        Err(_) => {
                            self.client.close(CLOSE_GOING_AWAY, PING_TIMEOUT);
                        }
                    }
                }
            }
        }
    }

    /// The client sent a close frame: tungstenite has queued the echo; send it. A close
    /// frame with a code no endpoint may send (RFC 6455 §7.4) is a protocol error, which
    /// tungstenite answers with 1002 "Protocol violation" and hands over in place of the
    /// client's frame: that is recorded as what it is, Sluice's close for a violation.
    async fn closed_by_client(&mut self, socket: &mut Socket, frame: Option<CloseFrame>) -> End {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
        match frame {
            Some(f) if f.code == CloseCode::Protocol && f.reason.as_str() == "Protocol violation" => {
                End::Closed { code: 1002, reason: "invalid close frame from the client".into(), by_client: false }
            }
            Some(f) => End::Closed { code: u16::from(f.code), reason: f.reason.to_string(), by_client: true },
            None => End::Closed { code: 1005, reason: String::new(), by_client: true },
        }
    }

    /// A read failed: a protocol violation closes with 1002, a message over the size limit
    /// with 1009, invalid UTF-8 in a text message with 1007 (RFC 6455 §7.1.7: fail the
    /// connection, sending a close frame when possible); anything else is a lost
    /// connection.
    async fn read_failed(&mut self, socket: &mut Socket, error: tungstenite::Error) -> End {
        use tungstenite::error::{CapacityError, Error as WsError};
        let (code, reason) = match &error {
            WsError::Protocol(violation) => (1002, format!("protocol error: {violation}")),
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => (1009, "message too big".to_owned()),
            WsError::Capacity(other) => (1009, other.to_string()),
            WsError::Utf8(_) => (1007, "invalid UTF-8 in a text message".to_owned()),
            _ => return End::Lost(error.to_string()),
        };
        // The close frame's reason is at most 123 bytes; the log and event keep it whole.
        let short = truncate_utf8(&reason, 123);
        self.client.close(code, short);
        // A client that broke the protocol is not waited on for its close frame.
        if close(socket, code, short, FAILED_CLOSE_TIMEOUT, false).await {
            End::Closed { code, reason, by_client: false }
        } else {
            End::Lost(format!("{reason} (the close frame could not be sent)"))
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch), then flushes once. Yields
    /// to a close request or shutdown even while the socket is blocked.
    fn write_batch<'a>(
        &'a mut self,
        socket: &'a mut Socket,
        first: Message,
        live: &'a mut Liveness,
    ) -> impl std::future::Future<Output = Result<(), Interrupt>> + 'a {
        // A poll function over the batch, not an async block: every idle session reserves
        // room for this future, and this way it is the batch and three references.
        let mut batch = Batch { next: Some(first), count: 0, bytes: 0, last: None, progressed: false, blocked: false };
        std::future::poll_fn(move |cx| {
            let written = batch.poll_write(socket, &self.queue, cx);
            // Marked on the way in and out of a full socket only: a client that keeps up
            // costs nothing here.
            if written.is_pending() != batch.blocked {
                batch.blocked = written.is_pending();
                self.client.set_blocked(batch.blocked);
            }
            match written {
                Poll::Ready(Ok(())) => {
                    if let Some(last) = &batch.last {
                        self.client.sent(batch.count, batch.bytes, payload(last));
                    }
                    self.sessions.metrics.frames_sent.inc_by(batch.count);
                    self.sessions.metrics.bytes_sent.inc_by(batch.bytes);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Interrupt::Error(e))),
                Poll::Pending => {}
            }
            if let Poll::Ready(signal) = self.queue.poll_signalled(cx) {
                return Poll::Ready(Err(Interrupt::Signal(signal)));
            }
            // The socket is full: the ping timer still runs, so a client that stopped
            // reading is closed like one that stopped answering.
            loop {
                match live.poll_expired(cx, &mut batch.progressed) {
                    Poll::Ready(true) => return Poll::Ready(Err(Interrupt::Idle)),
                    // Not yet: look again, which registers for the next tick.
                    Poll::Ready(false) => continue,
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
    }

    /// Closes because something asked for it (slow consumer, admin, ping timeout): queued
    /// frames are not sent, the close frame is, and the handshake gets a bounded time. A
    /// client whose socket is full never gets the frame: that is recorded as a lost
    /// connection (1006), as the client sees it, with the reason Sluice had.
    async fn close_requested(&mut self, socket: &mut Socket) -> End {
        let reason = self
            .client
            .close_reason()
            .cloned()
            .unwrap_or(crate::client::CloseReason { code: 1000, reason: String::new() });
        if close(socket, reason.code, &reason.reason, CLOSE_TIMEOUT, true).await {
            End::Closed { code: reason.code, reason: reason.reason, by_client: false }
        } else {
            End::Lost(format!("{} (the close frame could not be sent: the client stopped reading)", reason.reason))
        }
    }

    /// Closes for shutdown: everything already queued is sent first, then 1001, within
    /// the shutdown deadline.
    async fn shut_down(&mut self, socket: &mut Socket) -> End {
        let deadline = self.sessions.settings.shutdown_timeout.saturating_sub(Duration::from_millis(250));
        let started = Instant::now();
        let mut count = 0u64;
        let mut bytes = 0u64;
        let drained = tokio::time::timeout(deadline, async {
            while let Some(frame) = self.queue.try_recv() {
                count += 1;
                bytes += payload(&frame).len() as u64;
                socket.feed(frame).await?;
            }
            socket.flush().await
        })
        .await;
        self.sessions.metrics.frames_sent.inc_by(count);
        self.sessions.metrics.bytes_sent.inc_by(bytes);
        if !matches!(drained, Ok(Ok(()))) {
            return End::Lost("could not flush queued frames before the shutdown deadline".into());
        }
        let reason = "shutting down";
        if close(socket, CLOSE_GOING_AWAY, reason, deadline.saturating_sub(started.elapsed()), true).await {
            End::Closed { code: CLOSE_GOING_AWAY, reason: reason.into(), by_client: false }
        } else {
            End::Lost("shutting down (the close frame could not be sent)".into())
        }
    }
}

/// How long Sluice tries to send the close frame to a client that broke the protocol.
const FAILED_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends a close frame and, with `await_reply`, waits (bounded) for the client's, so the
/// connection is not reset under data the client has not read yet. Whether the frame was
/// written out: a client whose socket stays full never receives it.
async fn close(socket: &mut Socket, code: u16, reason: &str, within: Duration, await_reply: bool) -> bool {
    let deadline = Instant::now() + within;
    let frame = CloseFrame { code: CloseCode::from(code), reason: Utf8Bytes::from(reason.to_owned()) };
    let sent = matches!(tokio::time::timeout_at(deadline, socket.send(Message::Close(Some(frame)))).await, Ok(Ok(())));
    if sent && await_reply {
        let _ = tokio::time::timeout_at(deadline, async {
            while let Some(message) = socket.next().await {
                if matches!(message, Ok(Message::Close(_)) | Err(_)) {
                    break;
                }
            }
        })
        .await;
    }
    sent
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

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
