//! The session pump, one for every transport: moves a client's queue into its connection
//! in batches, reads what the client sends, keeps the connection alive, and ends it with
//! the right code — for a close Sluice decided (slow consumer, ping timeout, the admin
//! API), for shutdown (what is queued goes first), for the client's own close, or for a
//! broken protocol. Counters and the registry's view of the client are kept here too.
//!
//! One task per client does everything for it. A write that blocks (a client that does
//! not read) still yields to the close signal, so a slow client can always be closed and
//! never holds anything but itself.

use std::future::Future;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tungstenite::Message;

use crate::client::{CloseReason, QueueReceiver, Signal, CLOSE_GOING_AWAY};
use crate::record::payload;
use crate::session::transport::{self, Incoming, Lost, Transport};
use crate::session::{End, Opening, Session};

/// Frames written per batch before the connection is flushed.
const WRITE_BATCH: u64 = 64;

/// The close reason of a client that neither read nor answered for two ping intervals.
pub const PING_TIMEOUT: &str = "ping timeout";

/// How long a close that Sluice decided (slow consumer, ping timeout, the admin API) may
/// take on any transport: the close frame or `event: close` going out, and on a WebSocket
/// the client's answer. Then the connection is simply dropped. The session bounds it
/// alone: the admin API answers once the close is decided, without waiting for this.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long Sluice tries to send the close frame to a client that broke the protocol.
const FAILED_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What shutdown leaves for the close itself once the queue is drained.
const SHUTDOWN_CLOSE_MARGIN: Duration = Duration::from_millis(250);

impl Session {
    /// The session's task once its connection is there: the opening frames, then the
    /// queue until the session ends; then its end is recorded.
    ///
    /// Every live connection holds this future for its whole life, so it is kept small:
    /// written as a block that uses `self` where it was captured (an `async fn` with a
    /// `mut self` would hold a second copy), and holding nothing it does not need while
    /// waiting.
    #[allow(clippy::manual_async_fn, reason = "an async fn taking `mut self` would hold a second copy of it")]
    pub fn run<T: Transport>(mut self, mut transport: T, opening: Box<Opening>) -> impl Future<Output = ()> + Send {
        async move {
            self.started();
            let mut live = Liveness::new(self.sessions.settings.ping_interval);
            let end = match Box::pin(self.send_opening(&mut transport, opening, &mut live)).await {
                Ok(()) => self.pump(&mut transport, &mut live).await,
                Err(interrupt) => Box::pin(self.interrupted(&mut transport, interrupt)).await,
            };
            if matches!(end, End::Lost(_)) {
                transport.abort();
            }
            self.finish(end);
        }
    }

    /// The welcome frame and any records read back from Kafka, before the queue: one batch,
    /// which yields to a close or shutdown like any other.
    async fn send_opening<T: Transport>(
        &mut self,
        transport: &mut T,
        opening: Box<Opening>,
        live: &mut Liveness,
    ) -> Result<(), Interrupt> {
        let mut frames = self.opening(opening).await.into_iter();
        match frames.next() {
            Some(first) => self.write_batch(transport, first, live, u64::MAX, move |_| frames.next()).await,
            None => Ok(()),
        }
    }

    /// The loop every idle client waits in. The cold paths (closing, read errors) are
    /// boxed, so the state held per idle connection is only what waiting and writing need;
    /// the write path stays inline, as boxing it costs an allocation per batch (measured in
    /// BENCHMARKS.md).
    async fn pump<T: Transport>(&mut self, transport: &mut T, live: &mut Liveness) -> End {
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
                        Ok(frame) => self.write_batch(transport, frame, live, WRITE_BATCH, QueueReceiver::try_recv).await,
                        Err(signal) => Err(Interrupt::Signal(signal)),
                    };
                    match written {
                        // The connection took the batch: the client is reading.
                        Ok(()) => {
                            if live.wrote() {
                                self.delivered();
                            }
                        }
                        Err(interrupt) => return Box::pin(self.interrupted(transport, interrupt)).await,
                    }
                }
                incoming = transport::next(transport) => {
                    live.alive = true;
                    match incoming {
                        Incoming::Message { data, text } => self.client_message(&data, text),
                        Incoming::Alive => {}
                        Incoming::Closed(end) => {
                            // The transport queued its answer to the client's close: send it.
                            let _ = tokio::time::timeout(CLOSE_TIMEOUT, transport::flush(transport)).await;
                            return end;
                        }
                        Incoming::Violation { code, reason } => return Box::pin(self.violated(transport, code, reason)).await,
                        Incoming::Lost(why) => return End::Lost(why),
                    }
                }
                expired = std::future::poll_fn(|cx| live.poll_expired(cx, &mut false)) => {
                    if expired {
                        self.client.close(CLOSE_GOING_AWAY, PING_TIMEOUT);
                        continue;
                    }
                    // A keep-alive that cannot even be sent before the next tick: nothing is
                    // going out to this client, nor coming from it. A client that stopped
                    // reading blocks this write: it must still yield to the close signal.
                    let sent = tokio::select! {
                        biased;
                        signal = self.queue.signalled() => return Box::pin(self.interrupted(transport, Interrupt::Signal(signal))).await,
                        sent = tokio::time::timeout(live.every, transport::send(transport, transport.keep_alive())) => sent,
                    };
                    match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(Lost(why))) => return End::Lost(why),
                        Err(_) => {
                            self.client.close(CLOSE_GOING_AWAY, PING_TIMEOUT);
                        }
                    }
                }
            }
        }
    }

    /// Writes `first` and what `more` gives (up to `limit` frames), then flushes once.
    /// Yields to a close request or shutdown even while the connection is blocked, and gives
    /// up on a client that takes nothing for two ping intervals.
    fn write_batch<'a, T: Transport>(
        &'a mut self,
        transport: &'a mut T,
        first: Message,
        live: &'a mut Liveness,
        limit: u64,
        mut more: impl FnMut(&QueueReceiver) -> Option<Message> + 'a,
    ) -> impl Future<Output = Result<(), Interrupt>> + 'a {
        // A poll function over the batch, not an async block: every idle session reserves
        // room for this future, and this way it is the batch and a few references.
        let mut batch = Batch { next: Some(first), count: 0, bytes: 0, last: None, progressed: false, blocked: false };
        std::future::poll_fn(move |cx| {
            let written = batch.poll_write(transport, cx, |count| if count < limit { more(&self.queue) } else { None });
            // Marked on the way in and out of a full connection only: a client that keeps
            // up costs nothing here.
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
                Poll::Ready(Err(lost)) => return Poll::Ready(Err(Interrupt::Lost(lost))),
                Poll::Pending => {}
            }
            if let Poll::Ready(signal) = self.queue.poll_signalled(cx) {
                return Poll::Ready(Err(Interrupt::Signal(signal)));
            }
            // The connection is full: the ping timer still runs, so a client that stopped
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

    /// A write did not finish: end the session the way its interruption asks.
    async fn interrupted<T: Transport>(&mut self, transport: &mut T, interrupt: Interrupt) -> End {
        match interrupt {
            Interrupt::Signal(Signal::Close) => self.close_requested(transport).await,
            Interrupt::Signal(Signal::Shutdown) => self.shut_down(transport).await,
            Interrupt::Idle => {
                self.client.close(CLOSE_GOING_AWAY, PING_TIMEOUT);
                self.close_requested(transport).await
            }
            Interrupt::Lost(Lost(why)) => End::Lost(why),
        }
    }

    /// The client broke the protocol (RFC 6455 §7.1.7: fail the connection, sending a
    /// close frame when possible). It is not waited on for its answer.
    async fn violated<T: Transport>(&mut self, transport: &mut T, code: u16, reason: String) -> End {
        // The close frame's reason is at most 123 bytes; the log and event keep it whole.
        self.client.close(code, crate::client::fit_close_reason(&reason));
        if close(transport, code, &reason, FAILED_CLOSE_TIMEOUT, false).await {
            End::Closed { code, reason, by_client: false }
        } else {
            End::Lost(format!("{reason} (the close frame could not be sent)"))
        }
    }

    /// Closes because something asked for it (slow consumer, admin, ping timeout): queued
    /// frames are not sent, the close frame is, and the handshake gets a bounded time. A
    /// client whose connection is full never gets the frame: that is recorded as a lost
    /// connection (1006), as the client sees it, with the reason Sluice had.
    async fn close_requested<T: Transport>(&mut self, transport: &mut T) -> End {
        let reason = self.client.close_reason().cloned().unwrap_or(CloseReason { code: 1000, reason: String::new() });
        if close(transport, reason.code, &reason.reason, CLOSE_TIMEOUT, true).await {
            End::Closed { code: reason.code, reason: reason.reason, by_client: false }
        } else {
            End::Lost(format!("{} (the close frame could not be sent: the client stopped reading)", reason.reason))
        }
    }

    /// Closes for shutdown: everything already queued is sent first, then 1001, within
    /// the shutdown deadline.
    async fn shut_down<T: Transport>(&mut self, transport: &mut T) -> End {
        let deadline = self.sessions.settings.shutdown_timeout.saturating_sub(SHUTDOWN_CLOSE_MARGIN);
        let started = Instant::now();
        let mut count = 0u64;
        let mut bytes = 0u64;
        let drained = tokio::time::timeout(deadline, async {
            while let Some(frame) = self.queue.try_recv() {
                count += 1;
                bytes += payload(&frame).len() as u64;
                std::future::poll_fn(|cx| transport.poll_ready(cx)).await?;
                transport.start_send(frame)?;
            }
            transport::flush(transport).await
        })
        .await;
        self.sessions.metrics.frames_sent.inc_by(count);
        self.sessions.metrics.bytes_sent.inc_by(bytes);
        if !matches!(drained, Ok(Ok(()))) {
            return End::Lost("could not flush queued frames before the shutdown deadline".into());
        }
        let reason = "shutting down";
        if close(transport, CLOSE_GOING_AWAY, reason, deadline.saturating_sub(started.elapsed()), true).await {
            End::Closed { code: CLOSE_GOING_AWAY, reason: reason.into(), by_client: false }
        } else {
            End::Lost("shutting down (the close frame could not be sent)".into())
        }
    }
}

/// What interrupted a batch write.
enum Interrupt {
    Signal(Signal),
    /// The connection took nothing, and nothing was heard, for two ping intervals.
    Idle,
    Lost(Lost),
}

/// One batch of frames on its way into the connection. Written against the transport's
/// poll methods rather than as an async block, so that what every idle session reserves
/// for writing is these few fields (memory per connection, BENCHMARKS.md).
struct Batch {
    /// The frame to hand to the connection next.
    next: Option<Message>,
    count: u64,
    bytes: u64,
    /// The batch's last frame, for the registry: one reference count per batch.
    last: Option<Message>,
    /// The connection took a frame since the idle check last looked: the client is reading.
    progressed: bool,
    /// The connection was found full during this batch (and the client marked blocked).
    blocked: bool,
}

impl Batch {
    /// Hands frames over until `more` (given how many went) has none, then flushes.
    fn poll_write<T: Transport>(
        &mut self,
        transport: &mut T,
        cx: &mut Context<'_>,
        mut more: impl FnMut(u64) -> Option<Message>,
    ) -> Poll<Result<(), Lost>> {
        while let Some(frame) = self.next.take() {
            if transport.poll_ready(cx)?.is_pending() {
                self.next = Some(frame);
                return Poll::Pending;
            }
            self.count += 1;
            self.progressed = true;
            self.bytes += payload(&frame).len() as u64;
            self.next = more(self.count);
            if self.next.is_none() {
                self.last = Some(frame.clone());
            }
            transport.start_send(frame)?;
        }
        transport.poll_flush(cx)
    }
}

/// Sends the close frame and, with `await_reply` on a transport whose client answers,
/// waits (bounded) for the client's, so the connection is not reset under data the client
/// has not read yet. Whether the frame was written out: a client whose connection stays
/// full never receives it.
async fn close<T: Transport>(transport: &mut T, code: u16, reason: &str, within: Duration, await_reply: bool) -> bool {
    let deadline = Instant::now() + within;
    let frame = transport.close_frame(code, reason);
    let sent = matches!(tokio::time::timeout_at(deadline, transport::send(transport, frame)).await, Ok(Ok(())));
    if sent && await_reply && T::AWAITS_CLOSE_REPLY {
        let _ = tokio::time::timeout_at(deadline, async {
            loop {
                match transport::next(transport).await {
                    Incoming::Closed(_) | Incoming::Lost(_) | Incoming::Violation { .. } => break,
                    Incoming::Message { .. } | Incoming::Alive => {}
                }
            }
        })
        .await;
    }
    sent
}

/// Tracks whether a client is still there: something read from it, or something its
/// connection took, within the last two ping intervals. Counted in ticks of the ping timer,
/// so that a sign of life is a flag set, not a clock read, on the path of every batch.
pub struct Liveness {
    ping: Option<tokio::time::Interval>,
    pub every: Duration,
    /// A sign of life since the last tick.
    pub alive: bool,
    /// Ticks in a row without one.
    quiet: u8,
    /// Batches written since the last one whose record age was measured.
    batches: u8,
}

/// One batch in this many has its record's age measured: a histogram shared by every
/// session takes a lock per observation, which on every batch cost a fifth of the fan-out
/// rate (BENCHMARKS.md); a sample shows the same distribution.
const AGE_SAMPLE: u8 = 16;

impl Liveness {
    /// Ticks every `every` (no timer at all when `None`: each one is an allocation per
    /// connection).
    pub fn new(every: Option<Duration>) -> Liveness {
        Liveness {
            ping: every.map(|every| {
                let mut ping = tokio::time::interval_at(Instant::now() + every, every);
                ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ping
            }),
            every: every.unwrap_or_default(),
            alive: false,
            quiet: 0,
            batches: 0,
        }
    }

    /// A batch reached the connection: a sign of life, and whether to measure its age.
    pub fn wrote(&mut self) -> bool {
        self.alive = true;
        self.batches += 1;
        if self.batches == AGE_SAMPLE {
            self.batches = 0;
            true
        } else {
            false
        }
    }

    /// `Ready(true)` at a tick that ends the second interval in a row without a sign of
    /// life, `Ready(false)` at other ticks; never with pings off.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>, progressed: &mut bool) -> Poll<bool> {
        let Some(ping) = &mut self.ping else { return Poll::Pending };
        ready!(ping.poll_tick(cx));
        if std::mem::take(&mut self.alive) | std::mem::take(progressed) {
            self.quiet = 0;
        } else {
            self.quiet = self.quiet.saturating_add(1);
        }
        Poll::Ready(self.quiet >= 2)
    }
}
