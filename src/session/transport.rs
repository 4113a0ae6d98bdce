//! The seam between a session and its wire: what the pump ([`crate::session::pump`]) needs
//! from a connection, and nothing about queues, policies or counters. WebSocket
//! ([`crate::session::ws`]) and Server-Sent Events ([`crate::session::sse`]) each adapt a
//! connection to it; a transport for another protocol plugs in here alone.
//!
//! Writing follows `futures::Sink`'s shape (ready, take one frame, flush), so a batch is
//! written without an allocation and a full socket is seen as `Pending`: the pump can then
//! still yield to a close signal or give up on an idle client.

use std::task::{Context, Poll};

use bytes::Bytes;
use tungstenite::Message;

use crate::session::End;

/// The connection is gone (or broke while being written to): why, for the log line and the
/// disconnect event.
#[derive(Debug)]
pub struct Lost(pub String);

/// What the client did, as the pump acts on it.
#[derive(Debug)]
pub enum Incoming {
    /// A message from the client.
    Message { data: Bytes, text: bool },
    /// The client closed, and the transport has queued whatever answer its protocol needs:
    /// the pump flushes it (bounded) and the session ends this way.
    Closed(End),
    /// The client broke the protocol: the pump closes with this code and reason, without
    /// waiting for an answer.
    Violation { code: u16, reason: String },
    /// The connection is gone.
    Lost(String),
    /// A sign of life with nothing to act on (a ping, a pong).
    Alive,
}

/// One client's connection, as the session pump drives it. Every frame it is handed is a
/// frame of the queue (already encoded for this transport's form) or one it made itself
/// ([`Transport::keep_alive`], [`Transport::close_frame`]).
pub trait Transport: Send + Unpin + 'static {
    /// Whether the client answers a close (a WebSocket does): after a close it decided,
    /// the pump waits for the answer, bounded, so the connection is not reset under data
    /// the client has not read yet. A one-way stream ends with its last frame.
    const AWAITS_CLOSE_REPLY: bool;

    /// Ready to take one more frame with [`Transport::start_send`]; `Pending` while the
    /// connection is full.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Lost>>;

    /// Takes one frame; it may wait in a buffer until [`Transport::poll_flush`].
    fn start_send(&mut self, frame: Message) -> Result<(), Lost>;

    /// Every frame taken so far has been handed to the connection.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Lost>>;

    /// The next thing the client did. A one-way transport reports only that the client
    /// left ([`Incoming::Lost`]) and is `Pending` until then.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Incoming>;

    /// A frame sent when nothing else was for a ping interval: keeps proxies from closing
    /// the connection, and shows whether the client still reads.
    fn keep_alive(&self) -> Message;

    /// The last frame of a session that Sluice ends, with this code and reason.
    fn close_frame(&self, code: u16, reason: &str) -> Message;

    /// The session ended without a close: drop whatever is stuck in the connection.
    fn abort(&mut self) {}
}

/// Hands `frame` to the connection and flushes it.
pub async fn send<T: Transport>(transport: &mut T, frame: Message) -> Result<(), Lost> {
    std::future::poll_fn(|cx| transport.poll_ready(cx)).await?;
    transport.start_send(frame)?;
    flush(transport).await
}

/// See [`Transport::poll_flush`].
pub async fn flush<T: Transport>(transport: &mut T) -> Result<(), Lost> {
    std::future::poll_fn(|cx| transport.poll_flush(cx)).await
}

/// See [`Transport::poll_next`].
pub async fn next<T: Transport>(transport: &mut T) -> Incoming {
    std::future::poll_fn(|cx| transport.poll_next(cx)).await
}
