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
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::client::{Signal, CLOSE_GOING_AWAY};
use crate::record::payload;
use crate::record::{sse_event, Form};
use crate::server::Abort;
use crate::session::admission::Gate;
use crate::session::ws::CONNECTION_ID_HEADER;
use crate::session::{End, Liveness, Opening, Session, Subscriptions, CLOSE_TIMEOUT, PING_TIMEOUT};

/// Events written per chunk of the response body.
const BATCH: usize = 64;

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
    let admitted = match subs.gate.admit(&parts) {
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
    let (session, opening) = Session::open(subs.sessions, admitted, form, slot);
    let id = session.client.id.clone();
    // One chunk in flight: a client that does not read holds one chunk, not its queue.
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let span = tracing::info_span!("session", client = %id, key = %session.client.subscription.display(), transport = "sse", node = %session.sessions.node);
    tokio::spawn(session.run_sse(tx, Box::new(opening), abort).instrument(span));

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

/// Why a chunk could not go out.
enum Stop {
    Signal(Signal),
    /// The client took nothing for two ping intervals.
    Idle,
    /// The connection is gone (the body was dropped).
    Gone,
}

impl Session {
    async fn run_sse(mut self, tx: mpsc::Sender<Bytes>, opening: Box<Opening>, abort: Abort) {
        self.started();
        let mut live = Liveness::new(self.sessions.settings.ping_interval);
        let frames = self.opening(opening).await;
        // EventSource waits about three seconds before reconnecting: one is enough, and a
        // resumed stream loses nothing by coming back sooner.
        let mut chunk = BytesMut::from(&b"retry: 1000\n\n"[..]);
        for frame in &frames {
            chunk.extend_from_slice(payload(frame));
        }
        if let Some(last) = frames.last() {
            self.client.sent(frames.len() as u64, chunk.len() as u64, payload(last));
        }
        self.sessions.metrics.frames_sent.inc_by(frames.len() as u64);
        self.sessions.metrics.bytes_sent.inc_by(chunk.len() as u64);
        let end = match self.send(&tx, chunk.freeze(), &mut live).await {
            Ok(()) => self.pump_sse(&tx, &mut live).await,
            Err(stop) => self.stopped(stop, &tx).await,
        };
        if matches!(end, End::Lost(_)) {
            // Whatever is stuck in the connection goes with it.
            abort.0.cancel();
        }
        self.finish(end);
    }

    async fn pump_sse(&mut self, tx: &mpsc::Sender<Bytes>, live: &mut Liveness) -> End {
        if self.sessions.shutdown.is_cancelled() {
            self.client.shut_down();
        }
        loop {
            tokio::select! {
                biased;
                next = self.queue.next() => match next {
                    Ok(first) => {
                        let (chunk, count, last) = self.batch(first);
                        let bytes = chunk.len() as u64;
                        match self.send(tx, chunk, live).await {
                            Ok(()) => {
                                if live.wrote() {
                                    self.delivered();
                                }
                                self.client.sent(count, bytes, payload(&last));
                                self.sessions.metrics.frames_sent.inc_by(count);
                                self.sessions.metrics.bytes_sent.inc_by(bytes);
                            }
                            Err(stop) => return self.stopped(stop, tx).await,
                        }
                    }
                    Err(signal) => return self.stopped(Stop::Signal(signal), tx).await,
                },
                _ = tx.closed() => return End::Lost("the client closed the event stream".into()),
                expired = std::future::poll_fn(|cx| live.poll_expired(cx, &mut false)) => {
                    if expired {
                        return self.stopped(Stop::Idle, tx).await;
                    }
                    // A comment line: keeps proxies from closing an idle stream, and shows
                    // whether the client still reads.
                    if let Err(stop) = self.send(tx, Bytes::from_static(b": keep-alive\n\n"), live).await {
                        return self.stopped(stop, tx).await;
                    }
                }
            }
        }
    }

    /// `first` and whatever else is queued (up to a batch), as one chunk.
    fn batch(&mut self, first: tungstenite::Message) -> (Bytes, u64, tungstenite::Message) {
        let mut chunk = BytesMut::from(payload(&first));
        let mut last = first;
        let mut count = 1;
        while count < BATCH as u64 {
            let Some(next) = self.queue.try_recv() else { break };
            chunk.extend_from_slice(payload(&next));
            last = next;
            count += 1;
        }
        (chunk.freeze(), count, last)
    }

    /// Hands a chunk to the response body, yielding to close signals and giving up on a
    /// client that takes nothing for two ping intervals.
    async fn send(&mut self, tx: &mpsc::Sender<Bytes>, chunk: Bytes, live: &mut Liveness) -> Result<(), Stop> {
        let mut blocked = false;
        let result = loop {
            tokio::select! {
                biased;
                signal = self.queue.signalled() => break Err(Stop::Signal(signal)),
                permit = tx.reserve() => match permit {
                    Ok(permit) => {
                        permit.send(chunk);
                        live.alive = true;
                        break Ok(());
                    }
                    Err(_) => break Err(Stop::Gone),
                },
                expired = std::future::poll_fn(|cx| live.poll_expired(cx, &mut false)) => {
                    if expired {
                        break Err(Stop::Idle);
                    }
                    if !blocked {
                        blocked = true;
                        self.client.set_blocked(true);
                    }
                }
            }
        };
        if blocked {
            self.client.set_blocked(false);
        }
        result
    }

    /// Ends the stream: for a close or a shutdown, the queued events (shutdown only) and an
    /// `event: close` go out first if the client takes them in time.
    async fn stopped(&mut self, stop: Stop, tx: &mpsc::Sender<Bytes>) -> End {
        let (code, reason, flush) = match stop {
            Stop::Gone => return End::Lost("the client closed the event stream".into()),
            Stop::Idle => {
                self.client.close(CLOSE_GOING_AWAY, PING_TIMEOUT);
                (CLOSE_GOING_AWAY, PING_TIMEOUT.to_owned(), false)
            }
            Stop::Signal(Signal::Close) => {
                let r = self
                    .client
                    .close_reason()
                    .cloned()
                    .unwrap_or(crate::client::CloseReason { code: 1000, reason: String::new() });
                (r.code, r.reason, false)
            }
            Stop::Signal(Signal::Shutdown) => (CLOSE_GOING_AWAY, "shutting down".to_owned(), true),
        };
        let deadline = if flush {
            self.sessions.settings.shutdown_timeout.saturating_sub(Duration::from_millis(250))
        } else {
            CLOSE_TIMEOUT
        };
        let mut last = BytesMut::new();
        if flush {
            while let Some(frame) = self.queue.try_recv() {
                last.extend_from_slice(payload(&frame));
            }
        }
        let close = serde_json::json!({ "code": code, "reason": reason }).to_string();
        last.extend_from_slice(&sse_event(Some("close"), None, close.as_bytes()));
        match tokio::time::timeout(deadline, tx.send(last.freeze())).await {
            Ok(Ok(())) => End::Closed { code, reason, by_client: false },
            _ => End::Lost(format!("{reason} (the close event could not be sent: the client stopped reading)")),
        }
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
