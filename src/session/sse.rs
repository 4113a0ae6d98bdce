//! Server-Sent Events: `GET /{key}` or `GET /*` with `Accept: text/event-stream`, the same
//! subscription as a WebSocket one (admission, registry, queue, slow-consumer policy,
//! shutdown) over a transport every browser reconnects by itself: `EventSource` sends the
//! last event's id, which is its cursor, as `Last-Event-ID`, and resumes with nothing
//! missed.
//!
//! Events: `event: connected` (the welcome, unless `--no-welcome`), then each record with
//! `id:` its cursor and `data:` its value (or its envelope with `?envelope=true`; a binary
//! value comes base64 under `event: binary`), messages sent to the client as
//! `event: message`, comment heartbeats every ping interval, and `event: close` with the
//! code and reason when Sluice ends the stream.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;
use tracing::Instrument;

use tungstenite::Message;

use crate::record::payload;
use crate::record::{sse_event, Form};
use crate::server::Abort;
use crate::session::admission::Gate;
use crate::session::transport::{Incoming, Lost, Transport};
use crate::session::ws::CONNECTION_ID_HEADER;
use crate::session::{Session, Subscriptions};

/// Whether a request asks for an event stream: a GET that accepts `text/event-stream`.
pub fn is_event_stream(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream")))
}

/// Admits an event-stream request and answers with the stream; refusals are answered as
/// for WebSocket upgrades, before anything is registered.
pub async fn subscribe(subs: Subscriptions, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let admitted = match subs.gate.admit(&parts, false).await {
        Ok(a) => a,
        Err(refused) => return subs.gate.refuse(&parts, refused),
    };
    if let Err(refused) = subs.gate.joined().await {
        return subs.gate.refuse(&parts, refused);
    }
    let admitted = match subs.gate.slot().map(|s| (admitted, s)) {
        Ok(a) => a,
        Err(refused) => return subs.gate.refuse(&parts, refused),
    };
    let abort = parts.extensions.get::<Abort>().cloned().unwrap_or_default();
    // Admitted, so its origin (if any) is allowed: say so to the browser, whose
    // EventSource reads a response from another origin only with this.
    let origin = parts.headers.get(header::ORIGIN).cloned();
    let ((admitted, slot), form) = {
        let envelope = admitted.0.params.envelope;
        (admitted, Form::new(true, envelope))
    };
    let (session, opening) = Session::open(subs.sessions, admitted, form, slot).await;
    let id = session.client.id.clone();
    // One chunk in flight: a client that does not read holds one chunk, not its queue.
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let span = tracing::info_span!("session", client = %id, key = %session.client.key_display(), transport = "sse", node = %session.sessions.node);
    // EventSource waits about three seconds before reconnecting: one is enough, and a
    // resumed stream loses nothing by coming back sooner.
    let stream = EventStream::new(tx, b"retry: 1000\n\n", abort);
    tokio::spawn(session.run(stream, Box::new(opening)).instrument(span));

    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-transform"));
    // nginx buffers responses by default: an event would wait in it.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(CONNECTION_ID_HEADER, value);
    }
    if let Some(origin) = origin {
        cors(headers, origin);
    }
    response
}

fn cors(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(CONNECTION_ID_HEADER));
    headers.insert(header::VARY, HeaderValue::from_static("origin"));
}

/// Whether a request is a CORS preflight (an `OPTIONS` asking about another method).
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Answers a browser asking whether a page of another origin may open an event stream
/// here with credentials or `Last-Event-ID`: yes, for the origins subscriptions accept.
pub fn preflight(gate: &Gate, headers: &HeaderMap) -> Response {
    let allowed = headers.contains_key(header::ORIGIN) && gate.permits_origin(headers);
    let mut response = Response::new(Body::empty());
    if !allowed {
        *response.status_mut() = StatusCode::FORBIDDEN;
        return response;
    }
    *response.status_mut() = StatusCode::NO_CONTENT;
    let h = response.headers_mut();
    if let Some(origin) = headers.get(header::ORIGIN).cloned() {
        cors(h, origin);
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, last-event-id, accept"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

/// An event stream as a session's transport: frames (already SSE events) are gathered into
/// one chunk of the response body per batch; one chunk is in flight at a time, so a client
/// that does not read holds one chunk, not its queue. One-way: the client is heard from only
/// when it goes away.
pub struct EventStream {
    chunks: PollSender<Bytes>,
    /// The chunk being gathered.
    chunk: BytesMut,
    /// Ready when the response body is dropped: the client went away.
    gone: Pin<Box<dyn Future<Output = ()> + Send>>,
    reported_gone: bool,
    /// Drops the connection under a stream that cannot be ended cleanly.
    abort: Abort,
}

const GONE: &str = "the client closed the event stream";

impl EventStream {
    /// A stream whose chunks go to `tx`, opening with `prelude`.
    fn new(tx: mpsc::Sender<Bytes>, prelude: &[u8], abort: Abort) -> EventStream {
        let watch = tx.clone();
        EventStream {
            chunks: PollSender::new(tx),
            chunk: BytesMut::from(prelude),
            gone: Box::pin(async move { watch.closed().await }),
            reported_gone: false,
            abort,
        }
    }
}

impl Transport for EventStream {
    const AWAITS_CLOSE_REPLY: bool = false;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Lost>> {
        // A batch is bounded by the pump; the chunk waits for room when it is flushed.
        Poll::Ready(Ok(()))
    }

    fn start_send(&mut self, frame: Message) -> Result<(), Lost> {
        self.chunk.extend_from_slice(payload(&frame));
        Ok(())
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Lost>> {
        if self.chunk.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.chunks.poll_reserve(cx)).map_err(|_| Lost(GONE.into()))?;
        let chunk = self.chunk.split().freeze();
        self.chunks.send_item(chunk).map_err(|_| Lost(GONE.into()))?;
        Poll::Ready(Ok(()))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Incoming> {
        if !self.reported_gone {
            ready!(self.gone.as_mut().poll(cx));
            self.reported_gone = true;
        }
        Poll::Ready(Incoming::Lost(GONE.into()))
    }

    fn keep_alive(&self) -> Message {
        // A comment line: keeps proxies from closing an idle stream, and shows whether the
        // client still reads.
        Message::Binary(Bytes::from_static(b": keep-alive\n\n"))
    }

    fn close_frame(&self, code: u16, reason: &str) -> Message {
        let close = serde_json::json!({ "code": code, "reason": reason }).to_string();
        Message::Binary(sse_event(Some("close"), None, close.as_bytes()))
    }

    fn abort(&mut self) {
        // Whatever is stuck in the connection goes with it.
        self.abort.0.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_streams_are_gets_that_accept_them() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, "text/html, text/event-stream;q=0.9".parse().unwrap());
        assert!(is_event_stream(&Method::GET, &h));
        assert!(!is_event_stream(&Method::POST, &h));
        h.insert(header::ACCEPT, "*/*".parse().unwrap());
        assert!(!is_event_stream(&Method::GET, &h));
    }
}
