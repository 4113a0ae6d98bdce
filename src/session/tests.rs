//! The session pump driven through an in-memory transport: a session built from its parts
//! (hub, registry, outbox) with no socket and no broker, and a peer that reads frames,
//! answers closes and sends messages when a test says so.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_util::sync::{CancellationToken, PollSender};
use tokio_util::task::TaskTracker;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use super::transport::{Incoming, Lost, Transport};
use super::{End, Session, SessionSettings, Sessions, Shared};
use crate::auth::Identity;
use crate::client::{Client, QueueLimits, SlowConsumerPolicy, CLOSE_GOING_AWAY};
use crate::metrics::Metrics;
use crate::record::budget::Budget;
use crate::record::{Form, Record};
use crate::registry::Registry;
use crate::selector::Selector;
use crate::session::admission::{Admitted, Params};
use crate::sink::Outbox;
use crate::source::Dispatch;
use crate::stream::hub::{Hub, StreamSettings};
use crate::stream::replay::{Limits, Start};
use crate::stream::{Streams, Topic};

/// A connection held in memory: `room` frames fit in it before the peer reads.
struct Memory {
    out: PollSender<Message>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
}

/// The client's end of a [`Memory`] connection.
struct Peer {
    frames: mpsc::Receiver<Message>,
    says: mpsc::UnboundedSender<Incoming>,
}

fn connection(room: usize) -> (Memory, Peer) {
    let (out, frames) = mpsc::channel(room);
    let (says, incoming) = mpsc::unbounded_channel();
    (Memory { out: PollSender::new(out), incoming }, Peer { frames, says })
}

const GONE: &str = "peer gone";

impl Transport for Memory {
    const AWAITS_CLOSE_REPLY: bool = true;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Lost>> {
        self.out.poll_reserve(cx).map_err(|_| Lost(GONE.into()))
    }

    fn start_send(&mut self, frame: Message) -> Result<(), Lost> {
        self.out.send_item(frame).map_err(|_| Lost(GONE.into()))
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Lost>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Incoming> {
        self.incoming.poll_recv(cx).map(|i| i.unwrap_or_else(|| Incoming::Lost(GONE.into())))
    }

    fn keep_alive(&self) -> Message {
        Message::Ping(Bytes::new())
    }

    fn close_frame(&self, code: u16, reason: &str) -> Message {
        Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() }))
    }
}

impl Peer {
    async fn frame(&mut self) -> Message {
        tokio::time::timeout(Duration::from_secs(30), self.frames.recv())
            .await
            .expect("a frame within 30 s")
            .expect("the session is still writing")
    }

    async fn text(&mut self) -> String {
        match self.frame().await {
            Message::Text(t) => t.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    async fn close(&mut self) -> (u16, String) {
        match self.frame().await {
            Message::Close(Some(f)) => (u16::from(f.code), f.reason.to_string()),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    fn answer_close(&self, code: u16) {
        let _ = self.says.send(Incoming::Closed(End::Closed { code, reason: String::new(), by_client: true }));
    }
}

struct Fixture {
    sessions: Sessions,
    hub: Hub,
    feed: broadcast::Receiver<Arc<str>>,
    offset: i64,
}

impl Fixture {
    fn new(ping_interval: Option<Duration>, queue_frames: usize) -> Fixture {
        let metrics = Metrics::new();
        let stream = StreamSettings { tag: 1, recent_bytes: 0, limits: Limits { kafka: false, max_fetch: 0 } };
        let hub = Hub::new(
            SlowConsumerPolicy::Disconnect,
            metrics.clone(),
            Budget::new(usize::MAX, Default::default()),
            stream,
        );
        let outbox = Outbox::memory(metrics.clone());
        let feed = outbox.feed();
        let sessions = Sessions::new(Shared {
            streams: Streams::new(vec![Topic { name: "t".into(), hub: hub.clone(), history: None, decoder: None }]),
            registry: Registry::default(),
            metrics,
            outbox,
            settings: SessionSettings {
                welcome: true,
                queue: QueueLimits { frames: queue_frames, bytes: 1 << 20 },
                ping_interval,
                shutdown_timeout: Duration::from_secs(10),
                max_message_size: 1 << 16,
                stored_message_bytes: 64,
                max_subscriptions: 10,
                max_last: 10,
                close_at_expiry: true,
            },
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            node: "test".into(),
            auth: Arc::new(
                crate::auth::Authenticator::new(
                    &crate::auth::AuthSettings {
                        users: vec![],
                        jwt_secret: None,
                        allow_anonymous: true,
                        generated_password: false,
                        provider: None,
                    },
                    &Metrics::new(),
                )
                .unwrap(),
            ),
            expiries: super::expiry::Expiries::start(Metrics::new()),
            subscribe_proxy: None,
        });
        Fixture { sessions, hub, feed, offset: 0 }
    }

    /// A session for `subscription`, opened (registered and subscribed) but not yet
    /// running, over a connection with `room` frames of room.
    async fn open(&self, selector: Selector, room: usize) -> Opened {
        let admitted = Admitted {
            topic: self.sessions.streams.default_topic().clone(),
            key: selector.keys.as_ref().map(|k| String::from_utf8_lossy(&k[0]).into()),
            selector,
            multiplexed: false,
            identity: Identity::unrestricted(Some("ann".into())),
            remote: crate::client::address::RemoteAddr { ip: IpAddr::V4(Ipv4Addr::LOCALHOST), port: Some(40000) },
            user_agent: None,
            params: Params::default(),
            start: Start::Live,
        };
        let slot = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let (session, opening) = Session::open(self.sessions.clone(), admitted, Form::Verbatim, slot).await;
        let (memory, peer) = connection(room);
        Opened { client: session.client.clone(), session, opening: Box::new(opening), memory, peer }
    }

    /// A running session (see [`Fixture::open`]).
    async fn connect(&self, selector: Selector, room: usize) -> Running {
        self.open(selector, room).await.run()
    }

    fn dispatch(&mut self, key: &str, value: &str) {
        self.offset += 1;
        self.hub.dispatch(Record {
            topic: Arc::from("t"),
            partition: 0,
            offset: self.offset,
            timestamp: None,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: vec![],
            decoded: None,
        });
    }

    /// The next event of the feed of `kind` ("connect", "message", "disconnect").
    async fn event(&mut self, kind: &str) -> Value {
        loop {
            let json = tokio::time::timeout(Duration::from_secs(60), self.feed.recv())
                .await
                .expect("an event within 60 s")
                .expect("the feed is open");
            let event: Value = serde_json::from_str(&json).unwrap();
            if event["type"] == kind {
                return event;
            }
        }
    }
}

struct Opened {
    client: Arc<Client>,
    session: Session,
    opening: Box<super::Opening>,
    memory: Memory,
    peer: Peer,
}

impl Opened {
    fn run(self) -> Running {
        let task = tokio::spawn(self.session.run(self.memory, self.opening));
        Running { client: self.client, peer: self.peer, task }
    }
}

struct Running {
    client: Arc<Client>,
    peer: Peer,
    task: tokio::task::JoinHandle<()>,
}

fn all() -> Selector {
    Selector::default()
}

fn key(k: &'static str) -> Selector {
    Selector::key(Bytes::from_static(k.as_bytes()))
}

fn welcome(text: &str) -> Value {
    let v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["type"], "connected", "{text}");
    v
}

#[tokio::test]
async fn the_welcome_then_queued_records_in_order_then_the_clients_close() {
    let mut f = Fixture::new(None, 64);
    let mut s = f.connect(key("a"), 64).await;
    assert_eq!(welcome(&s.peer.text().await)["replyId"], &*s.client.id);
    for (k, v) in [("a", "1"), ("b", "x"), ("a", "2"), ("a", "3")] {
        f.dispatch(k, v);
    }
    for want in ["1", "2", "3"] {
        assert_eq!(s.peer.text().await, want);
    }
    s.peer.answer_close(1000);
    s.task.await.unwrap();
    let event = f.event("disconnect").await;
    assert_eq!((event["code"].as_u64(), event["replyId"].as_str()), (Some(1000), Some(&*s.client.id)));
    // Welcome and three records, as the registry shows them.
    assert_eq!(s.client.outgoing().messages, 4);
    assert!(f.sessions.registry.get(&s.client.id).is_none(), "a session that ended leaves the registry");
}

#[tokio::test]
async fn client_messages_become_events_and_are_recorded() {
    let mut f = Fixture::new(None, 64);
    let mut s = f.connect(all(), 64).await;
    welcome(&s.peer.text().await);
    s.peer.says.send(Incoming::Message { data: Bytes::from_static(b"hello"), text: true }).unwrap();
    s.peer.says.send(Incoming::Message { data: Bytes::from_static(&[0xff, 0]), text: false }).unwrap();
    let text = f.event("message").await;
    assert_eq!((text["data"].as_str(), text["encoding"].as_str()), (Some("hello"), None));
    let binary = f.event("message").await;
    assert_eq!((binary["data"].as_str(), binary["encoding"].as_str()), (Some("/wA="), Some("base64")));
    assert_eq!(s.client.incoming().messages, 2);
    drop(s.peer);
    s.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_is_closed_alone_and_the_others_get_every_record() {
    let mut f = Fixture::new(None, 4);
    // One frame of room, never read: the welcome fills it.
    let slow = f.connect(all(), 1).await;
    let mut fast = f.connect(all(), 64).await;
    welcome(&fast.peer.text().await);
    // The fast client reads each record as it comes; the slow one's queue fills.
    for i in 0..20 {
        f.dispatch("k", &i.to_string());
        assert_eq!(fast.peer.text().await, i.to_string());
    }
    assert_eq!(slow.client.close_reason().map(|r| (r.code, r.reason.as_str())), Some((1008, "slow consumer")));
    // Its connection is full: the close frame cannot go out, and after the close timeout
    // the connection is dropped and recorded as lost, with the reason Sluice had.
    let event = f.event("disconnect").await;
    assert_eq!(event["replyId"].as_str(), Some(&*slow.client.id));
    assert_eq!(event["code"], 1006);
    assert!(event["reason"].as_str().unwrap().starts_with("slow consumer"), "{event}");
    slow.task.await.unwrap();
    assert!(!fast.task.is_finished());
}

#[tokio::test]
async fn a_close_sluice_decides_sends_nothing_queued_then_its_code_and_waits_for_the_answer() {
    let mut f = Fixture::new(None, 64);
    let opened = f.open(all(), 64).await;
    f.dispatch("k", "never sent");
    opened.client.close(4000, "go away");
    let mut s = opened.run();
    welcome(&s.peer.text().await);
    assert_eq!(s.peer.close().await, (4000, "go away".to_owned()));
    // The session waits for the client's answer before it ends.
    tokio::task::yield_now().await;
    assert!(!s.task.is_finished());
    s.peer.answer_close(4000);
    s.task.await.unwrap();
    let event = f.event("disconnect").await;
    assert_eq!((event["code"].as_u64(), event["reason"].as_str()), (Some(4000), Some("go away")));
}

#[tokio::test]
async fn shutdown_sends_what_is_queued_then_1001() {
    let mut f = Fixture::new(None, 64);
    let opened = f.open(all(), 64).await;
    for v in ["1", "2", "3"] {
        f.dispatch("k", v);
    }
    opened.client.shut_down();
    let mut s = opened.run();
    welcome(&s.peer.text().await);
    for want in ["1", "2", "3"] {
        assert_eq!(s.peer.text().await, want);
    }
    assert_eq!(s.peer.close().await, (CLOSE_GOING_AWAY, "shutting down".to_owned()));
    s.peer.answer_close(CLOSE_GOING_AWAY);
    s.task.await.unwrap();
    assert_eq!(f.event("disconnect").await["code"], 1001);
}

#[tokio::test]
async fn a_session_opened_after_shutdown_began_is_closed_at_once() {
    let mut f = Fixture::new(None, 64);
    f.sessions.shutdown.cancel();
    let mut s = f.connect(all(), 64).await;
    welcome(&s.peer.text().await);
    assert_eq!(s.peer.close().await.0, CLOSE_GOING_AWAY);
    s.peer.answer_close(CLOSE_GOING_AWAY);
    s.task.await.unwrap();
    assert_eq!(f.event("disconnect").await["reason"], "shutting down");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_neither_reads_nor_answers_is_closed_for_ping_timeout() {
    let mut f = Fixture::new(Some(Duration::from_secs(1)), 64);
    // The welcome fills the connection's one frame of room; nothing is read after it.
    let s = f.connect(all(), 1).await;
    let event = f.event("disconnect").await;
    assert_eq!(event["code"], 1006);
    assert!(event["reason"].as_str().unwrap().starts_with("ping timeout"), "{event}");
    assert_eq!(s.client.close_reason().map(|r| r.code), Some(CLOSE_GOING_AWAY));
    s.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_that_answers_pings_stays() {
    let mut f = Fixture::new(Some(Duration::from_secs(1)), 64);
    let mut s = f.connect(all(), 64).await;
    welcome(&s.peer.text().await);
    for _ in 0..5 {
        assert!(matches!(s.peer.frame().await, Message::Ping(_)));
        s.peer.says.send(Incoming::Alive).unwrap();
    }
    assert!(s.client.close_reason().is_none());
    drop(s.peer);
    s.task.await.unwrap();
    assert_eq!(f.event("disconnect").await["code"], 1006);
}

#[tokio::test]
async fn a_protocol_violation_closes_with_its_code_and_the_frame_takes_what_fits() {
    let mut f = Fixture::new(None, 64);
    let mut s = f.connect(all(), 64).await;
    welcome(&s.peer.text().await);
    let reason = "é".repeat(100);
    s.peer.says.send(Incoming::Violation { code: 1009, reason: reason.clone() }).unwrap();
    assert_eq!(s.peer.close().await.0, 1009);
    // Not waited on for an answer.
    s.task.await.unwrap();
    assert_eq!(s.client.close_reason().map(|r| r.reason.len()), Some(122));
    let event = f.event("disconnect").await;
    assert_eq!((event["code"].as_u64(), event["reason"].as_str()), (Some(1009), Some(reason.as_str())));
}

#[tokio::test]
async fn a_lost_connection_is_recorded_as_1006_and_leaves_the_registry_and_the_hub() {
    let mut f = Fixture::new(None, 64);
    let mut s = f.connect(key("a"), 64).await;
    welcome(&s.peer.text().await);
    assert!(f.sessions.registry.get(&s.client.id).is_some());
    drop(s.peer.says);
    s.task.await.unwrap();
    let event = f.event("disconnect").await;
    assert_eq!((event["code"].as_u64(), event["reason"].as_str()), (Some(1006), Some(GONE)));
    assert!(f.sessions.registry.get(&s.client.id).is_none());
    f.dispatch("a", "after");
    assert_eq!(s.client.queued(), 0, "a client that left gets nothing more");
}
