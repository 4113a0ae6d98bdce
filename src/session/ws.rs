//! WebSocket subscriptions: the upgrade (authenticated before anything is opened), and the
//! WebSocket as a session's [`Transport`]: frames out, client messages in, pings, close
//! frames, and read errors mapped to their close codes. The session pump
//! ([`crate::session::pump`]) does the rest.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, request, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Sink, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;
use tracing::Instrument;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes};

use crate::client::fit_close_reason;
use crate::record::Form;
use crate::session::admission::Refused;
use crate::session::transport::{Incoming, Lost, Transport};
use crate::session::{End, Opening, Session, Subscriptions};

/// The response header that carries the connection id.
pub const CONNECTION_ID_HEADER: &str = "sluice-connection-id";
/// Per-connection read buffer, allocated for every connection: small, because most
/// clients mostly listen (tungstenite grows it to fit a larger message while reading it).
const READ_BUFFER: usize = 512;
/// Bytes buffered before a write reaches the socket, within a batch.
const WRITE_BUFFER: usize = 64 * 1024;

/// The subprotocol of a multiplexed connection ([`crate::session::mux`]).
pub const MULTIPLEXED: &str = "sluice.v1";

/// Whether the client offers this subprotocol in `Sec-WebSocket-Protocol` (a list, possibly
/// over several headers).
fn offers_protocol(headers: &HeaderMap, protocol: &str) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == protocol)
}

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
    let multiplexed = offers_protocol(&parts.headers, MULTIPLEXED);
    let admitted = match subs.gate.admit(&parts, multiplexed).await {
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
    let form = if multiplexed { Form::Mux } else { Form::new(false, admitted.params.envelope) };
    // Subscribed before the 101 goes out: a client that has its answer receives every
    // record dispatched from then on. If the upgrade fails, the task below ends and the
    // session's drop takes the client out again.
    let (session, opening) = Session::open(subs.sessions, admitted, form, slot).await;
    let id = session.client.id.clone();
    let span = tracing::info_span!("session", client = %id, key = %session.client.key_display(), node = %session.sessions.node);
    tokio::spawn(session.run_websocket(on_upgrade, Box::new(opening)).instrument(span));

    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if multiplexed {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(MULTIPLEXED));
    }
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

/// A WebSocket as a session's transport: tungstenite's stream, whose errors on reading
/// become the close codes RFC 6455 gives them.
pub struct WebSocket(Socket);

fn lost(error: tungstenite::Error) -> Lost {
    Lost(error.to_string())
}

impl Transport for WebSocket {
    const AWAITS_CLOSE_REPLY: bool = true;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Lost>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(lost)
    }

    fn start_send(&mut self, frame: Message) -> Result<(), Lost> {
        Pin::new(&mut self.0).start_send(frame).map_err(lost)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Lost>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(lost)
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Incoming> {
        Poll::Ready(match ready!(self.0.poll_next_unpin(cx)) {
            None => Incoming::Lost("connection closed without a close frame".into()),
            Some(Err(error)) => read_failed(error),
            Some(Ok(Message::Close(frame))) => Incoming::Closed(closed_by_client(frame)),
            Some(Ok(Message::Text(text))) => Incoming::Message { data: text.into(), text: true },
            Some(Ok(Message::Binary(data))) => Incoming::Message { data, text: false },
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Incoming::Alive,
        })
    }

    fn keep_alive(&self) -> Message {
        Message::Ping(Bytes::new())
    }

    fn close_frame(&self, code: u16, reason: &str) -> Message {
        // The frame's reason is at most 123 bytes; the log and event keep it whole.
        let reason = Utf8Bytes::from(fit_close_reason(reason).to_owned());
        Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason }))
    }
}

/// The client sent a close frame (tungstenite has queued the echo). A close frame with a
/// code no endpoint may send (RFC 6455 §7.4) is a protocol error, which tungstenite answers
/// with 1002 "Protocol violation" and hands over in place of the client's frame: that is
/// recorded as what it is, Sluice's close for a violation.
fn closed_by_client(frame: Option<CloseFrame>) -> End {
    match frame {
        Some(f) if f.code == CloseCode::Protocol && f.reason.as_str() == "Protocol violation" => {
            End::Closed { code: 1002, reason: "invalid close frame from the client".into(), by_client: false }
        }
        Some(f) => End::Closed { code: u16::from(f.code), reason: f.reason.to_string(), by_client: true },
        None => End::Closed { code: 1005, reason: String::new(), by_client: true },
    }
}

/// A read failed: a protocol violation closes with 1002, a message over the size limit
/// with 1009, invalid UTF-8 in a text message with 1007 (RFC 6455 §7.1.7); anything else
/// is a lost connection.
fn read_failed(error: tungstenite::Error) -> Incoming {
    use tungstenite::error::{CapacityError, Error as WsError};
    let (code, reason) = match &error {
        WsError::Protocol(violation) => (1002, format!("protocol error: {violation}")),
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => (1009, "message too big".to_owned()),
        WsError::Capacity(other) => (1009, other.to_string()),
        WsError::Utf8(_) => (1007, "invalid UTF-8 in a text message".to_owned()),
        _ => return Incoming::Lost(error.to_string()),
    };
    Incoming::Violation { code, reason }
}

impl Session {
    /// The session's task: waits for hyper to hand the connection over, then serves it.
    #[allow(clippy::manual_async_fn, reason = "an async fn taking `self` would hold a second copy of it")]
    fn run_websocket(
        self,
        on_upgrade: OnUpgrade,
        opening: Box<Opening>,
    ) -> impl std::future::Future<Output = ()> + Send {
        async move {
            let socket = match on_upgrade.await {
                Ok(upgraded) => websocket(upgraded, self.sessions.settings.max_message_size).await,
                Err(e) => return tracing::debug!(error = %e, "upgrade failed after the 101"),
            };
            self.run(WebSocket(socket), opening).await
        }
    }
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
