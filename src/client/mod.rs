//! One connected client: who it is, what it subscribed to, its bounded outgoing queue, the
//! signal that closes it, and what it has sent and received.
//!
//! The hub and the registry hold the same `Arc<Client>`; the session task owns the other
//! end of the queue and is the only writer to the socket.

pub mod address;
pub mod subscriber;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use smallvec::SmallVec;
use tungstenite::Message;

use crate::client::address::RemoteAddr;
use crate::client::subscriber::Subscriber;
use crate::record::{payload, sse_event, Form, Text};

/// What happens to a client whose outgoing queue is full (`--slow-consumer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Close it with 1008 "slow consumer": it can reconnect and knows it missed records.
    Disconnect,
    /// Drop the frame that does not fit and keep the client (counted in a metric).
    DropNewest,
}

/// Why a client is being closed, sent as its close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

/// The most bytes of a reason a WebSocket close frame carries (125 less the code).
pub const MAX_REASON_BYTES: usize = 123;

/// The longest prefix of `reason` that fits a close frame, ending on a character boundary.
pub fn fit_close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
pub const SLOW_CONSUMER: &str = "slow consumer";

/// Result of offering a frame to a client's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The queue is full: the slow-consumer policy decides what follows.
    Full,
    /// The client is closing or gone; nothing to do.
    Closed,
}

/// Traffic in one direction: counts, and the last message with its time.
#[derive(Debug, Default, Clone)]
pub struct Activity {
    pub messages: u64,
    pub bytes: u64,
    /// The start of the last message (capped, so memory per client stays bounded).
    pub last: Option<Bytes>,
    pub last_at: Option<SystemTime>,
}

/// Who a client is and what it asked for, fixed for its whole connection.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The `replyId`: random, unguessable, unique for the life of the process.
    pub id: Arc<str>,
    /// Opened on `/{key}` or `/*` (a plain form with a key, [`Client::key`]); not on `/`,
    /// where its selectors, or a multiplexed connection's subscriptions, say what it reads.
    pub keyed: bool,
    /// How records reach it: WebSocket or SSE, verbatim or in the envelope.
    pub form: Form,
    /// The authenticated identity (Basic user or JWT `sub`); `None` when anonymous.
    pub user: Option<String>,
    pub remote: RemoteAddr,
    pub user_agent: Option<String>,
    /// JSON the connect proxy attached (shown in the registry).
    pub data: Option<Box<str>>,
}

pub struct Client {
    info: ClientInfo,
    pub connected_at: SystemTime,
    /// Bytes kept of each last message.
    stored_cap: usize,
    /// Also carries the close and shutdown signals to the session.
    queue: Arc<Queue>,
    /// Set once, by the first close request.
    close_reason: OnceLock<CloseReason>,
    /// Guarded separately so a burst of sends never waits on a burst of receives.
    incoming: Mutex<Activity>,
    outgoing: Mutex<Activity>,
    /// Frames dropped for this client under the `drop` policy.
    dropped: AtomicU64,
    /// Its socket is full: a write waits for the client to read. The gateway-wide bound
    /// sheds such clients first.
    blocked: AtomicBool,
    /// Its subscriptions, for the registry (the hubs hold them too). Emptied when the
    /// session ends, which breaks the reference each holds back to this client. A plain
    /// connection's one is held inline.
    subscriptions: Mutex<SmallVec<[Arc<Subscriber>; 1]>>,
    /// When its token expires (seconds since the epoch; 0: never), for the close at expiry.
    expires_at: AtomicU64,
}

impl std::ops::Deref for Client {
    type Target = ClientInfo;
    fn deref(&self) -> &ClientInfo {
        &self.info
    }
}

impl Client {
    /// A new client and the receiving end of its queue, which its session drains.
    pub fn new(info: ClientInfo, limits: QueueLimits, stored_cap: usize) -> (Client, QueueReceiver) {
        let queue = Arc::new(Queue {
            frames: Mutex::new(Frames::default()),
            frames_waker: AtomicWaker::new(),
            signal_waker: AtomicWaker::new(),
            limits,
            state: AtomicU8::new(0),
            next_stamp: AtomicI64::new(NO_STAMP),
        });
        let (tx, rx) = (queue.clone(), QueueReceiver(queue));
        let client = Client {
            info,
            connected_at: SystemTime::now(),
            stored_cap,
            queue: tx,
            close_reason: OnceLock::new(),
            incoming: Mutex::new(Activity::default()),
            outgoing: Mutex::new(Activity::default()),
            dropped: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
            subscriptions: Mutex::new(SmallVec::new()),
            expires_at: AtomicU64::new(0),
        };
        (client, rx)
    }

    /// Queues a frame without waiting: the fan-out never blocks on one client.
    pub fn offer(&self, frame: Message) -> Offer {
        self.queue.push(frame, NO_STAMP, false)
    }

    /// Queues a record's frame, with the record's timestamp (ms since the epoch) for the
    /// age-at-delivery histogram.
    pub fn offer_record(&self, frame: Message, stamp: i64) -> Offer {
        self.queue.push(frame, stamp, false)
    }

    /// Queues a replayed frame ahead of any live one, whatever the queue's bounds: what a
    /// subscriber asked to replay is bounded where it is planned.
    pub fn offer_replay(&self, frame: Message) -> Offer {
        self.queue.push(frame, NO_STAMP, true)
    }

    /// A message for this client from the admin API or `replies`, in its transport's
    /// form: a text (UTF-8) or binary frame, or an SSE `message` event.
    pub fn message(&self, body: Bytes) -> Message {
        if self.form == Form::Mux {
            // Every frame of a multiplexed connection is a typed JSON object.
            let data = Text::of(&body);
            let mut m = serde_json::json!({ "type": "message", "data": data.as_str() });
            if let Some(encoding) = data.encoding() {
                m["encoding"] = encoding.into();
            }
            Message::Text(m.to_string().into())
        } else if self.form.is_sse() {
            match Text::of(&body) {
                Text::Utf8(text) => Message::Binary(sse_event(Some("message"), None, text.as_bytes())),
                Text::Base64(encoded) => Message::Binary(sse_event(Some("message-binary"), None, encoded.as_bytes())),
            }
        } else {
            crate::record::frame(body)
        }
    }

    /// Its token's expiry (seconds since the epoch), when it is to be closed then.
    pub fn expiry(&self) -> Option<u64> {
        Some(self.expires_at.load(Ordering::Acquire)).filter(|&at| at != 0)
    }

    /// Closes it at `at` (see `session::expiry`); a refreshed token moves it.
    pub fn set_expiry(&self, at: u64) {
        self.expires_at.store(at.max(1), Ordering::Release);
    }

    /// Adds a subscription to what the registry shows.
    pub fn add_subscription(&self, subscriber: Arc<Subscriber>) {
        self.subscriptions.lock().push(subscriber);
    }

    /// Takes the subscription with this id out of what the registry shows.
    pub fn remove_subscription(&self, id: &str) -> Option<Arc<Subscriber>> {
        let mut subs = self.subscriptions.lock();
        let i = subs.iter().position(|s| s.id.as_deref() == Some(id))?;
        Some(subs.swap_remove(i))
    }

    /// Every subscription, taken out (the session's end).
    pub fn take_subscriptions(&self) -> Vec<Arc<Subscriber>> {
        std::mem::take(&mut *self.subscriptions.lock()).into_vec()
    }

    pub fn subscriptions(&self) -> Vec<Arc<Subscriber>> {
        self.subscriptions.lock().to_vec()
    }

    /// Whether some subscription of its can select records with this key (`?key=` of the
    /// admin API's list and broadcast).
    pub fn can_match_key(&self, key: &[u8]) -> bool {
        self.subscriptions.lock().iter().any(|s| s.selector.matches_key(Some(key)))
    }

    /// The key of a plain form as text, for the registry, events and logs: `/{key}`'s, `*`
    /// for `/*`; `None` on `/`. Read from its subscription rather than kept twice.
    pub fn key(&self) -> Option<String> {
        if !self.keyed {
            return None;
        }
        let subs = self.subscriptions.lock();
        let selector = &subs.first()?.selector;
        Some(match selector.keys.as_deref() {
            Some([key, ..]) => String::from_utf8_lossy(key).into_owned(),
            _ => "*".to_owned(),
        })
    }

    /// [`Client::key`] for a log line (`-` on `/`).
    pub fn key_display(&self) -> String {
        self.key().unwrap_or_else(|| "-".to_owned())
    }

    /// Asks the session to close with this code and reason. The first request wins;
    /// returns whether this call was it.
    pub fn close(&self, code: u16, reason: &str) -> bool {
        let first = self.close_reason.set(CloseReason { code, reason: reason.to_owned() }).is_ok();
        if first {
            self.queue.signal(CLOSING);
            // Nothing queued will be sent now: let the memory go at once rather than when
            // the close handshake ends.
            self.queue.clear();
        }
        first
    }

    /// Drops every queued frame (the gateway-wide bound was reached under the `drop`
    /// policy); returns how many, which are counted as dropped for this client.
    pub fn drop_queued(&self) -> usize {
        let dropped = self.queue.clear();
        self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
    }

    /// Asks the session to send what is queued and close with 1001.
    pub fn shut_down(&self) {
        self.queue.signal(SHUTDOWN);
    }

    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.get()
    }

    pub fn is_closing(&self) -> bool {
        self.queue.state.load(Ordering::Acquire) & CLOSING != 0
    }

    /// Frames waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.frames.lock().frames.len()
    }

    /// Payload bytes waiting in the queue (shared frames counted in full for each client
    /// holding them: this is what the client holds back, not what it alone costs).
    pub fn queued_bytes(&self) -> usize {
        self.queue.frames.lock().bytes
    }

    /// The session's write is waiting for the socket (`true`), or no longer (`false`).
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    pub fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records frames written to the socket: counts, and the last one (capped).
    pub fn sent(&self, messages: u64, bytes: u64, last: &[u8]) {
        record(&self.outgoing, messages, bytes, &last[..last.len().min(self.stored_cap)]);
    }

    /// Records a message received from the client.
    pub fn received(&self, bytes: &[u8]) {
        record(&self.incoming, 1, bytes.len() as u64, &bytes[..bytes.len().min(self.stored_cap)]);
    }

    /// The latest of: connected, last message in, last message out.
    pub fn last_active(&self) -> SystemTime {
        let a = self.incoming.lock().last_at;
        let b = self.outgoing.lock().last_at;
        [Some(self.connected_at), a, b].into_iter().flatten().max().unwrap_or(self.connected_at)
    }

    pub fn incoming(&self) -> Activity {
        self.incoming.lock().clone()
    }

    pub fn outgoing(&self) -> Activity {
        self.outgoing.lock().clone()
    }
}

/// How much may wait for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub frames: usize,
    /// Payload bytes: frames are shared between clients, but a client that stopped
    /// reading keeps alive every record it has not been sent, so large records need a
    /// bound of their own.
    pub bytes: usize,
}

#[derive(Default)]
struct Frames {
    /// Each frame with its record's timestamp (ms since the epoch), or [`NO_STAMP`].
    frames: VecDeque<(Message, i64)>,
    bytes: usize,
}

/// A frame that is not a record's (welcome, admin message, reply): no age to measure.
pub const NO_STAMP: i64 = i64::MIN;

/// A client's outgoing frames: bounded, and holding memory only while frames wait (an
/// idle connection costs an empty `VecDeque`, not a preallocated block of slots). The same
/// wake-up carries the close and shutdown signals, so a session waits on one thing, with
/// no lock taken to wait or to check.
pub struct Queue {
    frames: Mutex<Frames>,
    /// The session's task while it waits for frames: woken by pushes and signals.
    frames_waker: AtomicWaker,
    /// The session's task while it writes: woken by signals only, so that frames queued
    /// for a client whose socket is full do not wake its session just to find the socket
    /// still full.
    signal_waker: AtomicWaker,
    limits: QueueLimits,
    /// `CLOSING`, `SHUTDOWN` and `RECEIVER_GONE` bits.
    state: AtomicU8,
    /// See [`QueueReceiver::stamp`].
    next_stamp: AtomicI64,
}

const CLOSING: u8 = 1;
const SHUTDOWN: u8 = 2;
const RECEIVER_GONE: u8 = 4;

/// A queue that grew this far during a burst gives its memory back once drained.
const SHRINK_ABOVE: usize = 64;

/// What a session is told to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Signal {
    /// Close now, with [`Client::close_reason`]; what is queued is not sent.
    Close,
    /// Send what is queued, then close with 1001.
    Shutdown,
}

impl Queue {
    fn push(&self, frame: Message, stamp: i64, unbounded: bool) -> Offer {
        if self.state.load(Ordering::Acquire) & (CLOSING | RECEIVER_GONE) != 0 {
            return Offer::Closed;
        }
        let size = payload_len(&frame);
        let was_empty = {
            let mut q = self.frames.lock();
            // An empty queue takes any frame, so one record larger than the byte bound
            // still reaches a client that keeps up.
            let full = !unbounded
                && (q.frames.len() >= self.limits.frames
                    || (!q.frames.is_empty() && q.bytes + size > self.limits.bytes));
            if full {
                return Offer::Full;
            }
            q.bytes += size;
            q.frames.push_back((frame, stamp));
            q.frames.len() == 1
        };
        // Only the frame that makes the queue non-empty wakes the session: one already
        // waiting was queued by a push that woke it (or is about to), and the session pops
        // until the queue is empty before it waits again. Every further wake would be two
        // atomic writes to a line the session's thread also writes, per frame per client.
        if was_empty {
            self.frames_waker.wake();
        }
        Offer::Queued
    }

    fn pop(&self) -> Option<(Message, i64)> {
        let mut q = self.frames.lock();
        let (frame, stamp) = q.frames.pop_front()?;
        q.bytes -= payload_len(&frame);
        if q.frames.is_empty() && q.frames.capacity() > SHRINK_ABOVE {
            q.frames = VecDeque::new();
        }
        Some((frame, stamp))
    }

    /// Empties the queue; returns how many frames it held.
    fn clear(&self) -> usize {
        let old = std::mem::take(&mut *self.frames.lock());
        old.frames.len()
    }

    fn signal(&self, bit: u8) {
        self.state.fetch_or(bit, Ordering::AcqRel);
        self.frames_waker.wake();
        self.signal_waker.wake();
    }

    fn signalled(&self) -> Option<Signal> {
        let state = self.state.load(Ordering::Acquire);
        if state & CLOSING != 0 {
            Some(Signal::Close)
        } else if state & SHUTDOWN != 0 {
            Some(Signal::Shutdown)
        } else {
            None
        }
    }
}

/// The session's end of a client's queue.
pub struct QueueReceiver(Arc<Queue>);

impl QueueReceiver {
    /// The next thing to do: a signal if one was given (signals come first: a client
    /// being closed is sent nothing more), else the next frame. Cancel-safe: a frame is
    /// taken only when returned.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Result<Message, Signal>> {
        match self.check() {
            Some(next) => Poll::Ready(next),
            None => {
                self.0.frames_waker.register(cx.waker());
                // A push or signal between the check and the registration woke nobody:
                // look again.
                self.check().map_or(Poll::Pending, Poll::Ready)
            }
        }
    }

    fn check(&self) -> Option<Result<Message, Signal>> {
        if let Some(signal) = self.0.signalled() {
            return Some(Err(signal));
        }
        let (frame, stamp) = self.0.pop()?;
        self.0.next_stamp.store(stamp, Ordering::Relaxed);
        Some(Ok(frame))
    }

    /// The timestamp (ms since the epoch) of the record whose frame [`QueueReceiver::next`]
    /// returned last, when it was a record's.
    pub fn stamp(&self) -> Option<i64> {
        Some(self.0.next_stamp.load(Ordering::Relaxed)).filter(|&s| s != NO_STAMP)
    }

    /// See [`QueueReceiver::poll_next`].
    pub async fn next(&self) -> Result<Message, Signal> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Ready when the session is told to close or shut down; frames are left queued.
    pub fn poll_signalled(&self, cx: &mut Context<'_>) -> Poll<Signal> {
        if let Some(signal) = self.0.signalled() {
            return Poll::Ready(signal);
        }
        self.0.signal_waker.register(cx.waker());
        self.0.signalled().map_or(Poll::Pending, Poll::Ready)
    }

    /// See [`QueueReceiver::poll_signalled`].
    pub async fn signalled(&self) -> Signal {
        std::future::poll_fn(|cx| self.poll_signalled(cx)).await
    }

    /// The next frame if one waits.
    pub fn try_recv(&self) -> Option<Message> {
        self.0.pop().map(|(frame, _)| frame)
    }
}

impl Drop for QueueReceiver {
    /// Nobody will send what is queued now: free it, and refuse further frames.
    fn drop(&mut self) {
        self.0.state.fetch_or(RECEIVER_GONE, Ordering::AcqRel);
        *self.0.frames.lock() = Frames::default();
    }
}

fn payload_len(frame: &Message) -> usize {
    payload(frame).len()
}

fn record(activity: &Mutex<Activity>, messages: u64, bytes: u64, kept: &[u8]) {
    // Copy outside the lock: the critical section is a few stores.
    let copy = Bytes::copy_from_slice(kept);
    let now = SystemTime::now();
    let mut a = activity.lock();
    a.messages += messages;
    a.bytes += bytes;
    a.last = Some(copy);
    a.last_at = Some(now);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_close_reason_is_cut_to_the_frame_on_a_character_boundary() {
        assert_eq!(fit_close_reason("bye"), "bye");
        let long = "é".repeat(100);
        let fitted = fit_close_reason(&long);
        assert_eq!(fitted.len(), 122);
        assert!(long.starts_with(fitted));
        assert_eq!(fit_close_reason(&"x".repeat(123)).len(), 123);
    }

    pub(crate) fn info(id: &str, key: Option<&str>) -> ClientInfo {
        ClientInfo {
            id: id.into(),
            keyed: key.is_some(),
            form: Form::Verbatim,
            user: None,
            remote: std::net::SocketAddr::from(([127, 0, 0, 1], 1)).into(),
            user_agent: None,
            data: None,
        }
    }

    pub(crate) fn limits(frames: usize) -> QueueLimits {
        QueueLimits { frames, bytes: usize::MAX }
    }

    fn client(capacity: usize) -> (Client, QueueReceiver) {
        Client::new(info("id", Some("*")), limits(capacity), CAP)
    }

    #[test]
    fn the_byte_bound_refuses_once_frames_wait_but_an_empty_queue_takes_any_frame() {
        let (c, rx) = Client::new(info("id", Some("*")), QueueLimits { frames: 100, bytes: 10 }, CAP);
        assert_eq!(c.offer(Message::Text("x".repeat(50).into())), Offer::Queued);
        assert_eq!(c.offer(Message::Text("y".into())), Offer::Full);
        rx.try_recv();
        assert_eq!(c.offer(Message::Text("123456".into())), Offer::Queued);
        assert_eq!(c.offer(Message::Text("1234".into())), Offer::Queued);
        assert_eq!(c.offer(Message::Text("z".into())), Offer::Full);
    }

    const CAP: usize = 1024;

    #[test]
    fn a_full_queue_is_reported_not_waited_on() {
        let (c, _rx) = client(2);
        assert_eq!(c.offer(Message::Text("a".into())), Offer::Queued);
        assert_eq!(c.offer(Message::Text("b".into())), Offer::Queued);
        assert_eq!(c.offer(Message::Text("c".into())), Offer::Full);
        assert_eq!(c.queued(), 2);
    }

    #[tokio::test]
    async fn frames_come_out_in_order_and_a_gone_receiver_refuses_more() {
        let (c, rx) = client(4);
        c.offer(Message::Text("a".into()));
        c.offer(Message::Text("b".into()));
        assert_eq!(rx.next().await, Ok(Message::Text("a".into())));
        assert_eq!(rx.try_recv(), Some(Message::Text("b".into())));
        assert_eq!(rx.try_recv(), None);
        drop(rx);
        assert_eq!(c.offer(Message::Text("c".into())), Offer::Closed);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_frame_pushed_from_another_thread() {
        let (c, rx) = client(4);
        let c = Arc::new(c);
        let pusher = c.clone();
        let waiter = tokio::spawn(async move { rx.next().await });
        std::thread::spawn(move || pusher.offer(Message::Text("late".into()))).join().unwrap();
        assert_eq!(waiter.await.unwrap(), Ok(Message::Text("late".into())));
    }

    #[tokio::test]
    async fn a_close_request_comes_before_queued_frames_and_wakes_a_waiting_session() {
        let (c, rx) = client(4);
        let c = Arc::new(c);
        let waiter = tokio::spawn(async move {
            let signal = rx.signalled().await;
            (signal, rx.next().await, rx.try_recv())
        });
        tokio::task::yield_now().await;
        c.offer(Message::Text("queued".into()));
        let closer = c.clone();
        std::thread::spawn(move || closer.close(1008, SLOW_CONSUMER)).join().unwrap();
        let (signal, next, queued) = waiter.await.unwrap();
        assert_eq!(signal, Signal::Close);
        assert_eq!(next, Err(Signal::Close));
        // Closing let go of what was queued: it would never be sent.
        assert_eq!(queued, None);
        assert!(c.is_closing());
    }

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicU64);

    fn counting_waker() -> (Arc<Wakes>, std::task::Waker) {
        let wakes = Arc::new(Wakes::default());
        (wakes.clone(), std::task::Waker::from(wakes))
    }

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_session_blocked_writing_is_woken_by_signals_not_by_frames() {
        let (c, rx) = client(4);
        let (wakes, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_signalled(&mut cx).is_pending());
        c.offer(Message::Text("a".into()));
        c.offer(Message::Text("b".into()));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "frames woke a session that was writing");
        c.close(1008, SLOW_CONSUMER);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(rx.poll_signalled(&mut cx), Poll::Ready(Signal::Close));
    }

    #[test]
    fn a_waiting_session_is_woken_once_per_empty_queue_and_misses_no_frame() {
        let (c, rx) = client(16);
        let (wakes, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let text = |s: &str| Message::Text(s.into());
        assert!(rx.poll_next(&mut cx).is_pending());
        for s in ["a", "b", "c"] {
            c.offer(text(s));
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "one wake for three frames");
        // Woken, the session pops until the queue is empty; a frame queued meanwhile is
        // behind the others and needs no wake of its own.
        assert_eq!(rx.poll_next(&mut cx), Poll::Ready(Ok(text("a"))));
        c.offer(text("d"));
        for s in ["b", "c", "d"] {
            assert_eq!(rx.poll_next(&mut cx), Poll::Ready(Ok(text(s))));
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        // Empty again, it waits; the next frame wakes it.
        assert!(rx.poll_next(&mut cx).is_pending());
        c.offer(text("e"));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert_eq!(rx.poll_next(&mut cx), Poll::Ready(Ok(text("e"))));
    }

    #[tokio::test]
    async fn frames_pushed_from_other_threads_all_reach_a_waiting_session() {
        let (c, rx) = client(1 << 20);
        let c = Arc::new(c);
        let receiver = tokio::spawn(async move {
            let mut got = 0;
            while got < 4 * 20_000 {
                rx.next().await.unwrap();
                got += 1;
            }
            got
        });
        let pushers: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        assert_eq!(c.offer(Message::Text(format!("{t}-{i}").into())), Offer::Queued);
                        if i % 64 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        for p in pushers {
            p.join().unwrap();
        }
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), receiver)
            .await
            .expect("a frame was queued with no wake: the session never saw it")
            .unwrap();
        assert_eq!(got, 80_000);
    }

    #[tokio::test]
    async fn shutdown_is_signalled_and_a_close_request_overrides_it() {
        let (c, rx) = client(4);
        c.shut_down();
        assert_eq!(rx.next().await, Err(Signal::Shutdown));
        assert!(!c.is_closing());
        c.close(1008, SLOW_CONSUMER);
        assert_eq!(rx.signalled().await, Signal::Close);
    }

    #[test]
    fn the_first_close_reason_wins_and_stops_queueing() {
        let (c, _rx) = client(2);
        assert!(c.close(1008, SLOW_CONSUMER));
        assert!(!c.close(1001, "shutdown"));
        assert_eq!(c.close_reason().unwrap().code, 1008);
        assert_eq!(c.offer(Message::Text("a".into())), Offer::Closed);
    }

    #[test]
    fn concurrent_receives_lose_no_count() {
        let (c, _rx) = client(1);
        let c = Arc::new(c);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        c.received(format!("{t}-{i}").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let a = c.incoming();
        assert_eq!(a.messages, 8000);
        assert!(a.last.unwrap().ends_with(b"-999"));
    }

    #[test]
    fn stored_last_messages_are_capped() {
        let (c, _rx) = client(1);
        c.received(&vec![b'x'; CAP * 4]);
        let a = c.incoming();
        assert_eq!(a.last.unwrap().len(), CAP);
        assert_eq!(a.bytes, (CAP * 4) as u64);
    }
}
