//! One client's session, whatever its transport: its place in the registry and the hub,
//! its queue, its slot under `--max-connections`, what it gets before the live stream
//! (the welcome, and records read back from Kafka when it resumed further back than memory
//! holds), and how its end is recorded.
//!
//! - `admission`: who may subscribe, decided before anything is opened.
//! - `pump`: one loop for every transport — batches out, client messages in, liveness,
//!   slow-consumer and admin closes, shutdown drain, close codes and counters.
//! - `transport`: the seam a wire implements (write, flush, read, keep-alive, close frame).
//! - `ws`, `sse`: the WebSocket upgrade and the event-stream response, each with its
//!   [`transport::Transport`].

pub mod admission;
pub mod expiry;
pub mod mux;
pub mod pump;
pub mod sse;
pub mod transport;
pub mod ws;

#[cfg(test)]
mod tests;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tungstenite::Message;

use crate::client::subscriber::Subscriber;
use crate::client::{Client, ClientInfo, QueueReceiver};
use crate::metrics::Metrics;
use crate::record::position::Position;
use crate::record::{Form, Stamped};
use crate::registry::Registry;
use crate::session::admission::{Admitted, Gate};
use crate::sink::{Event, Outbox};
use crate::stream::hub::Hub;
use crate::stream::replay::Start;
use crate::stream::{Streams, Topic};

/// Settings each session reads.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub welcome: bool,
    pub queue: crate::client::QueueLimits,
    pub ping_interval: Option<Duration>,
    pub shutdown_timeout: Duration,
    pub max_message_size: usize,
    pub stored_message_bytes: usize,
    /// Subscriptions one multiplexed connection may hold (`--max-subscriptions`).
    pub max_subscriptions: usize,
    /// Largest N of a subscription's `last` (`--max-last`).
    pub max_last: usize,
    /// Close a token-authenticated connection at its token's expiry (`--token-expiry`).
    pub close_at_expiry: bool,
}

/// What every session shares, and all it needs: where records come from and clients are
/// listed, where events go, its settings, and the shutdown it drains on. Cheap to clone;
/// built from parts that need no socket or broker, so a session can be tested alone.
#[derive(Clone)]
pub struct Sessions(Arc<Shared>);

pub struct Shared {
    /// Every topic streamed: its hub, and its reader of older records (Kafka only).
    pub streams: Streams,
    /// This process's clients (sessions enter and leave it).
    pub registry: Registry,
    pub metrics: Metrics,
    /// Client messages and lifecycle events, out.
    pub outbox: Outbox,
    pub settings: SessionSettings,
    /// Cancelled when shutdown begins: sessions drain and close with 1001.
    pub shutdown: CancellationToken,
    /// Every session, so shutdown can wait for them to finish.
    pub tracker: TaskTracker,
    /// This replica's name, on every session's log lines.
    pub node: Arc<str>,
    /// Verifies the later token a multiplexed connection may present (`refresh`).
    pub auth: Arc<crate::auth::Authenticator>,
    /// Closes connections at their token's expiry.
    pub expiries: expiry::Expiries,
    /// `--subscribe-url`: a backend decides which subscriptions of a multiplexed connection
    /// may open.
    pub subscribe_proxy: Option<Arc<crate::auth::proxy::Proxy>>,
}

impl Sessions {
    pub fn new(shared: Shared) -> Sessions {
        Sessions(Arc::new(shared))
    }
}

impl Deref for Sessions {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Where subscriptions come in: who may subscribe, and the sessions they then open. What
/// the subscription endpoints ([`ws::upgrade`], [`sse::subscribe`]) are given.
#[derive(Clone)]
pub struct Subscriptions {
    pub gate: Arc<Gate>,
    pub sessions: Sessions,
}

/// How a session ended, for the log line, the metrics and the disconnect event.
#[derive(Debug)]
pub enum End {
    /// A close, started by either side, with this code and reason.
    Closed { code: u16, reason: String, by_client: bool },
    /// The connection broke without a close (recorded as 1006).
    Lost(String),
}

pub struct Session {
    pub sessions: Sessions,
    pub client: Arc<Client>,
    pub queue: QueueReceiver,
    _tracked: tokio_util::task::task_tracker::TaskTrackerToken,
    /// This session's place under `--max-connections`.
    _slot: tokio::sync::OwnedSemaphorePermit,
    /// A multiplexed connection's own state (boxed: a plain session reserves a pointer).
    mux: Option<Box<mux::Mux>>,
}

/// What a session sends before the records of its queue, decided at subscription. Boxed
/// by its holder: it is used once, at the start, and every idle session would otherwise
/// reserve room for it.
#[derive(Default)]
pub struct Opening {
    /// The topic of a plain form's subscription (none on a multiplexed connection).
    topic: Option<Topic>,
    /// The plain form's subscription.
    subscriber: Option<Arc<Subscriber>>,
    /// Where delivery starts (the welcome frame's cursor).
    start: Position,
    /// Whether the client asked to resume, and whether everything after its cursor will
    /// be delivered.
    resumed: Option<bool>,
    /// Older records to read from Kafka first, per partition `[from, to)`.
    fetch: Vec<(i32, i64, i64)>,
    /// For `?last=N`: how many of the newest matching fetched records go first, and how
    /// many come from memory (the welcome says how many came in all).
    older: Option<usize>,
    last: Option<usize>,
}

/// A subscription's start as the hub plans it: a time becomes, for Kafka, the positions
/// Kafka's offsets for times give (the embedded stream finds them in memory). A partition
/// with nothing at or after the time starts where the stream is.
pub async fn resolve(topic: &Topic, start: Start) -> Start {
    let (Start::Since(ms), Some(history)) = (&start, &topic.history) else { return start };
    let live = topic.hub.live();
    let partitions = live.iter().map(|(p, _)| p).collect();
    match history.offsets_at(*ms, partitions).await {
        Some(found) => {
            let mut at = live;
            for (partition, offset) in found {
                if let Some(offset) = offset {
                    at.set(partition, offset);
                }
            }
            Start::After(at)
        }
        // The broker did not answer: what memory holds from then on.
        None => start,
    }
}

impl Session {
    /// Registers a new client and, for a plain form, subscribes it (with what it asked to
    /// replay queued first). If the transport never starts, the session's drop takes it out
    /// again.
    pub async fn open(
        sessions: Sessions,
        admitted: Admitted,
        form: Form,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> (Session, Opening) {
        let Admitted { topic, selector, key, multiplexed, identity, remote, user_agent, start, .. } = admitted;
        let id: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        let info = ClientInfo {
            id,
            keyed: key.is_some(),
            form,
            user: identity.user.clone(),
            remote,
            user_agent,
            data: identity.data.clone(),
        };
        let (client, queue) = Client::new(info, sessions.settings.queue, sessions.settings.stored_message_bytes);
        let client = Arc::new(client);
        if let (true, Some(at)) = (sessions.settings.close_at_expiry, identity.expires) {
            client.set_expiry(at);
            sessions.expiries.watch(&client);
        }
        let mut opening = Opening::default();
        if !multiplexed {
            let resumed = matches!(start, Start::After(_) | Start::Oldest);
            let last = matches!(start, Start::Last(_));
            let start = resolve(&topic, start).await;
            let subscriber = Arc::new(Subscriber::new(client.clone(), None, topic.name.clone(), selector, false));
            client.add_subscription(subscriber.clone());
            sessions.registry.insert(client.clone());
            let begin = topic.hub.subscribe(subscriber.clone(), &start);
            let resumed = resumed.then_some(begin.complete);
            if resumed.is_some() {
                sessions.metrics.resumed(if begin.fetch.is_empty() { "memory" } else { "kafka" });
            }
            opening = Opening {
                topic: Some(topic),
                subscriber: Some(subscriber),
                start: begin.start,
                resumed,
                fetch: begin.fetch,
                older: begin.older,
                last: last.then_some(begin.replayed),
            };
        } else {
            sessions.registry.insert(client.clone());
        }
        let tracked = sessions.tracker.token();
        let mux = multiplexed.then(|| Box::new(mux::Mux { identity: Arc::new(parking_lot::Mutex::new(identity)) }));
        (Session { sessions, client, queue, _tracked: tracked, _slot: slot, mux }, opening)
    }

    /// The client is connected: counted, logged, and reported as an event.
    pub fn started(&self) {
        self.sessions.metrics.connections.inc();
        self.sessions.metrics.connections_opened.inc();
        tracing::info!(remote = %self.client.remote, user = self.client.user.as_deref().unwrap_or("-"), "connected");
        self.sessions.outbox.emit(&self.client, Event::Connect);
    }

    /// What goes out before the queue: the welcome frame (unless `--no-welcome`), then the
    /// records read back from Kafka, each with this client's own cursor (they come in
    /// partition order, not in the order the stream dispatched them).
    pub async fn opening(&self, opening: Box<Opening>) -> Vec<Message> {
        let Opening { topic, subscriber, mut start, mut resumed, fetch, older, mut last } = *opening;
        let mut frames = Vec::new();
        if let (Some(topic), Some(subscriber)) = (&topic, &subscriber) {
            if !fetch.is_empty() {
                let fetched = match &topic.history {
                    Some(history) => history.fetch(fetch.clone()).await,
                    None => Default::default(),
                };
                // Matched before anything is copied: the reader returns every key's records.
                let records = read_back(topic, fetched.records, &subscriber.selector).await;
                if let Some(wanted) = older {
                    let chosen = newest(records, wanted);
                    last = last.map(|n| n + chosen.len());
                    frames = self.frames_from_kafka(&topic.hub, chosen, start_of(&fetch, &start));
                } else {
                    if !fetched.complete {
                        resumed = Some(false);
                        self.sessions.metrics.resumed("incomplete");
                    }
                    for &(partition, from) in &fetched.starts {
                        start.set(partition, from);
                    }
                    frames = self.frames_from_kafka(&topic.hub, records, start.clone());
                    if resumed == Some(false) {
                        // What was missed is gone: delivery starts at the oldest record still
                        // held in memory or read back.
                        tracing::info!(from = %topic.hub.cursor(&start), "resumed with a gap: part of what followed the cursor is gone");
                    }
                }
            }
        }
        if self.sessions.settings.welcome {
            let mut welcome = serde_json::json!({ "type": "connected", "replyId": &*self.client.id });
            if let Some(topic) = &topic {
                welcome["cursor"] = topic.hub.cursor(&start).into();
            }
            if let Some(resumed) = resumed {
                welcome["resumed"] = resumed.into();
            }
            if let Some(last) = last {
                welcome["last"] = last.into();
            }
            let welcome = welcome.to_string();
            let frame = if self.client.form.is_sse() {
                Message::Binary(crate::record::sse_event(Some("connected"), None, welcome.as_bytes()))
            } else {
                Message::Text(welcome.into())
            };
            frames.insert(0, frame);
        }
        frames
    }

    /// Frames for records read back from Kafka, each with this client's own cursor (they
    /// come in partition order, not in the order the stream dispatched them): from `at`,
    /// moved past each record as it is sent.
    fn frames_from_kafka(&self, hub: &Hub, records: Vec<Arc<Stamped>>, mut at: Position) -> Vec<Message> {
        let mut frames = Vec::with_capacity(records.len());
        for stamped in records {
            at.set(stamped.record.partition, stamped.record.offset + 1);
            let cursor = hub.cursor(&at);
            if let Some(frame) = stamped.frame_with_cursor(self.client.form, &cursor, hub.budget()) {
                frames.push(frame);
            }
        }
        frames
    }

    /// Records how the session ended: metrics, a log line, the disconnect event.
    pub fn finish(&self, end: End) {
        let metrics = &self.sessions.metrics;
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
        self.sessions.outbox.emit(&self.client, Event::Disconnect { code, reason });
    }

    /// A batch just reached the socket: the age of the record it started with (a batch's
    /// first frame waited longest), when it was a record's. Called for a sample of batches
    /// (see [`pump::Liveness::wrote`]).
    pub fn delivered(&self) {
        if let Some(stamp) = self.queue.stamp() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let age_ms = (now.as_millis() as i64).saturating_sub(stamp).max(0);
            self.sessions.metrics.record_age_seconds.observe(age_ms as f64 / 1000.0);
        }
    }

    /// A message from the client: counted, recorded, and passed on (never waited on); on a
    /// multiplexed connection, a request.
    pub fn client_message(&self, data: &[u8], text: bool) {
        if let Some(mux) = &self.mux {
            return self.mux_message(mux, data, text);
        }
        self.client.received(data);
        self.sessions.metrics.client_messages.inc();
        self.sessions.outbox.emit(&self.client, Event::Message { data, text });
    }

    /// Takes one subscription out of its topic's hub.
    fn unsubscribe(&self, subscriber: &Arc<Subscriber>) {
        subscriber.end();
        if let Some(topic) = self.sessions.streams.get(Some(&subscriber.topic)) {
            topic.hub.unsubscribe(subscriber);
        }
    }
}

/// Records read back from Kafka, decoded as live ones are, that `selector` selects.
async fn read_back(
    topic: &Topic,
    records: Vec<Arc<crate::record::Record>>,
    selector: &crate::selector::Selector,
) -> Vec<Arc<Stamped>> {
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let mut record = Arc::unwrap_or_clone(record);
        if let Some(decoder) = &topic.decoder {
            decoder.prepare(&record).await;
            decoder.decode(&mut record);
        }
        let stamped = Stamped::new(record);
        if selector.matches(&stamped) {
            out.push(Arc::new(stamped));
        }
    }
    out
}

/// The newest `n` records of `records` (each partition in offset order) with a value,
/// oldest first: taken from the partitions' ends by timestamp, so each partition keeps its
/// order.
fn newest(records: Vec<Arc<Stamped>>, n: usize) -> Vec<Arc<Stamped>> {
    let mut by_partition: std::collections::BTreeMap<i32, Vec<Arc<Stamped>>> = Default::default();
    for r in records.into_iter().filter(|r| r.record.value.is_some()) {
        by_partition.entry(r.record.partition).or_default().push(r);
    }
    let mut chosen = Vec::with_capacity(n);
    while chosen.len() < n {
        let newest = by_partition
            .iter()
            .filter_map(|(&p, rs)| rs.last().map(|r| (r.record.timestamp.unwrap_or(i64::MIN), r.record.offset, p)))
            .max();
        let Some((_, _, p)) = newest else { break };
        if let Some(r) = by_partition.get_mut(&p).and_then(Vec::pop) {
            chosen.push(r);
        }
    }
    chosen.reverse();
    chosen
}

/// Where a client is before the records read back for `?last=N`: each partition at the
/// start of what was read, so a cursor of theirs never claims a record it was not sent.
fn start_of(fetch: &[(i32, i64, i64)], live: &Position) -> Position {
    let mut at = live.clone();
    for &(p, from, _) in fetch {
        at.set(p, from);
    }
    at
}

impl Drop for Session {
    /// Every way out of a session passes here: the client leaves the registry (unless a
    /// disconnect took it out already) and every hub it subscribed in; its subscriptions
    /// let go of it.
    fn drop(&mut self) {
        self.sessions.registry.remove(&self.client.id);
        for subscriber in self.client.take_subscriptions() {
            self.unsubscribe(&subscriber);
            if subscriber.id.is_some() {
                self.sessions.metrics.subscriptions.dec();
            }
        }
    }
}
