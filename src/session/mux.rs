//! The multiplexed protocol (`sluice.v1`): one WebSocket, many subscriptions, each opened
//! and closed with JSON frames:
//!
//! - `{"type":"subscribe","id","topic","keys","pattern","headers","where","cursor","last","since"}`
//!   → `{"type":"subscribed","id","cursor"[,"resumed"][,"last"]}`, or
//!   `{"type":"error","id","status","error"}` (400, 403, 404, 429); the connection stays open.
//! - `{"type":"unsubscribe","id"}` → `{"type":"unsubscribed","id"}`: no frame of that
//!   subscription follows the answer.
//! - `{"type":"message","data"}` → a client message (section 4 of the contract).
//! - `{"type":"refresh","token"}` → `{"type":"refreshed","expiresAt"}`: a later token of the
//!   same user; the connection then closes at its expiry instead.
//!
//! Records arrive as envelopes with `"type":"record"` and `"sub"`. A subscription's
//! opening (`subscribed`, then what it replays from Kafka and memory) is prepared while live
//! records already arrive: they are held back for it ([`Subscriber::hold`]) and queued after
//! it, so a resume has the same no-gap, no-duplicate seam as a plain connection's.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use tungstenite::Message;

use crate::auth::{AuthError, Authenticator, Identity};
use crate::client::subscriber::Subscriber;
use crate::client::{Client, Offer};
use crate::record::position::Position;
use crate::selector::Selector;
use crate::session::admission::start;
use crate::session::{resolve, Session, Sessions};
use crate::sink::Event;
use crate::stream::hub::offer;
use crate::stream::replay::Start;
use crate::stream::Topic;

/// Characters of a subscription id.
pub const MAX_ID_CHARS: usize = 64;

/// What a multiplexed session keeps besides a plain one's: who the client is, to authorize
/// each subscription as it comes.
pub struct Mux {
    /// A `refresh` with a later token replaces it (shared with the refresh's task).
    pub identity: Arc<parking_lot::Mutex<Identity>>,
}

/// A frame from the client.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Request {
    Subscribe(Subscribe),
    Unsubscribe { id: String },
    Message { data: Value },
    Refresh { token: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    id: String,
    topic: Option<String>,
    keys: Option<Vec<String>>,
    pattern: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    #[serde(rename = "where")]
    fields: Option<BTreeMap<String, Value>>,
    cursor: Option<String>,
    last: Option<u64>,
    since: Option<String>,
}

/// Why a subscribe was refused: the status of its error frame and the metric's reason.
struct Refusal {
    status: u16,
    reason: &'static str,
    error: String,
}

impl Refusal {
    fn bad(error: impl Into<String>) -> Refusal {
        Refusal { status: 400, reason: "bad_request", error: error.into() }
    }
}

/// A frame from the server: `{"type":…}` and its fields.
fn control(fields: Value) -> Message {
    Message::Text(fields.to_string().into())
}

impl Session {
    /// A frame from a multiplexed connection's client: a request, or an error frame back
    /// (never a close: a bad frame costs its sender an answer, nothing more).
    pub fn mux_message(&self, mux: &Mux, data: &[u8], text: bool) {
        self.client.received(data);
        self.sessions.metrics.client_messages.inc();
        if !text {
            return self.refuse_frame(None, "binary", "frames of a multiplexed connection are JSON text");
        }
        let value: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(e) => return self.refuse_frame(None, "not_json", &format!("not JSON: {e}")),
        };
        // The id, when there is one, goes back with the error, so the client knows which
        // request it answers.
        let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
        let known = matches!(
            value.get("type").and_then(Value::as_str),
            Some("subscribe" | "unsubscribe" | "message" | "refresh")
        );
        // What the subscribe proxy is shown: the frame as the client sent it.
        let frame = self.sessions.subscribe_proxy.is_some().then(|| value.clone());
        let request = match serde_json::from_value::<Request>(value) {
            Ok(r) => r,
            Err(_) if !known => {
                return self.refuse_frame(
                    id.as_deref(),
                    "unknown_type",
                    "type must be \"subscribe\", \"unsubscribe\", \"message\" or \"refresh\"",
                );
            }
            Err(e) => return self.refuse_frame(id.as_deref(), "bad_field", &e.to_string()),
        };
        match request {
            Request::Subscribe(s) => {
                let id = s.id.clone();
                if let Err(r) = self.subscribe(mux, s, frame) {
                    self.sessions.metrics.subscribe_refused(r.reason, &self.client.id, &r.error);
                    self.answer(json!({ "type": "error", "id": id, "status": r.status, "error": r.error }));
                }
            }
            Request::Unsubscribe { id } => match self.client.remove_subscription(&id) {
                Some(subscriber) => {
                    self.unsubscribe(&subscriber);
                    self.sessions.metrics.subscriptions.dec();
                    self.answer(json!({ "type": "unsubscribed", "id": id }));
                    self.sessions.outbox.emit(&self.client, Event::Unsubscribe { id: &id });
                }
                None => self.refuse_frame(Some(&id), "unknown_id", "no subscription has this id"),
            },
            Request::Refresh { token } => self.refresh(mux, token),
            Request::Message { data } => {
                let bytes = match data {
                    Value::String(s) => s.into_bytes(),
                    other => other.to_string().into_bytes(),
                };
                self.sessions.outbox.emit(&self.client, Event::Message { data: &bytes, text: true });
            }
        }
    }

    /// A later token for this connection: it must be valid and the same user's; the
    /// connection then closes at its expiry instead, and what it grants applies to the
    /// subscriptions that come after the answer. Checked in a task of its own: a token of
    /// an identity provider may wait for its key set, and the connection's other frames
    /// must not wait with it.
    fn refresh(&self, mux: &Mux, token: String) {
        let (sessions, client, identity) = (self.sessions.clone(), self.client.clone(), mux.identity.clone());
        tokio::spawn(async move {
            let answer = |frame: Value| answer_to(&sessions, &client, frame);
            let refused = |outcome: &'static str, status: u16, error: String| {
                sessions.metrics.refreshed(outcome);
                answer(json!({ "type": "error", "status": status, "error": error }));
            };
            let renewed = match sessions.auth.verify_token(&token).await {
                Ok(renewed) => renewed,
                Err(e) => return refused("invalid", 401, e.to_string()),
            };
            if renewed.user != identity.lock().user {
                return refused("other_user", 403, "a refresh token must be for the connection's own user".into());
            }
            let Some(at) = renewed.expires else { return refused("invalid", 401, "a refresh needs a token".into()) };
            if client.expiry().is_some_and(|current| at < current) {
                return refused("earlier", 400, "the token expires before the connection's current one".into());
            }
            if sessions.settings.close_at_expiry {
                client.set_expiry(at);
                sessions.expiries.watch(&client);
            }
            *identity.lock() = renewed;
            sessions.metrics.refreshed("ok");
            let expires = crate::sink::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at));
            answer(json!({ "type": "refreshed", "expiresAt": expires }));
        });
    }

    /// An error frame for a frame that was not a request understood; counted.
    fn refuse_frame(&self, id: Option<&str>, reason: &'static str, error: &str) {
        self.sessions.metrics.control_frame_refused(reason, &self.client.id, error);
        let status = if reason == "unknown_id" { 404 } else { 400 };
        let mut frame = json!({ "type": "error", "status": status, "error": error });
        if let Some(id) = id {
            frame["id"] = id.into();
        }
        self.answer(frame);
    }

    /// Queues an answer like any frame: a client that does not read its answers is slow
    /// like one that does not read its records.
    fn answer(&self, frame: Value) {
        answer_to(&self.sessions, &self.client, frame);
    }

    /// Checks a subscribe and opens the subscription; its opening is queued when ready. With
    /// a subscribe proxy, the backend is asked first (`frame` is what it is shown), in a
    /// task: the connection's other frames do not wait for it.
    fn subscribe(&self, mux: &Mux, s: Subscribe, frame: Option<Value>) -> Result<(), Refusal> {
        let settings = &self.sessions.settings;
        if s.id.is_empty() || s.id.chars().count() > MAX_ID_CHARS {
            return Err(Refusal::bad(format!("id must be 1 to {MAX_ID_CHARS} characters")));
        }
        let existing = self.client.subscriptions();
        if existing.iter().any(|e| e.id.as_deref() == Some(s.id.as_str())) {
            return Err(Refusal::bad(format!("a subscription with id {:?} exists on this connection", s.id)));
        }
        if existing.len() >= settings.max_subscriptions {
            let error = format!("at most {} subscriptions per connection", settings.max_subscriptions);
            return Err(Refusal { status: 429, reason: "limit", error });
        }
        let selector = Selector::from_frame(s.keys, s.pattern, s.headers, s.fields).map_err(Refusal::bad)?;
        let Some(topic) = self.sessions.streams.get(s.topic.as_deref()).cloned() else {
            let error = format!("topic {:?} is not streamed here", s.topic.as_deref().unwrap_or_default());
            return Err(Refusal { status: 404, reason: "unknown_topic", error });
        };
        Authenticator::authorize(&mux.identity.lock(), &selector, &topic.name).map_err(|e| {
            let error = match e {
                AuthError::ForbiddenTopic => "this identity may not read that topic",
                _ => "this identity may not read every key this subscription can match",
            };
            Refusal { status: 403, reason: "forbidden", error: error.into() }
        })?;
        let last = s.last.map(|n| n.to_string());
        let start = start(&topic, settings.max_last, s.cursor.as_deref(), last.as_deref(), s.since.as_deref())
            .map_err(Refusal::bad)?;
        let id: Arc<str> = Arc::from(s.id.as_str());
        let subscriber = Arc::new(Subscriber::new(self.client.clone(), Some(id), topic.name.clone(), selector, true));
        self.client.add_subscription(subscriber.clone());
        self.sessions.metrics.subscriptions.inc();
        let opening = Opening { sessions: self.sessions.clone(), topic, subscriber, start };
        match (&self.sessions.subscribe_proxy, frame) {
            (Some(proxy), Some(mut frame)) => {
                if let Some(fields) = frame.as_object_mut() {
                    fields.remove("type");
                }
                let (proxy, client) = (proxy.clone(), self.client.clone());
                let user = mux.identity.lock().user.clone();
                tokio::spawn(async move {
                    match proxy.allow(&client.id, user.as_deref(), &frame).await {
                        Ok(()) => opening.open(),
                        Err(e) => opening.refuse(&e),
                    }
                });
            }
            _ => opening.open(),
        }
        Ok(())
    }
}

/// One subscription's way in: subscribed in its topic's hub, its opening queued, then its
/// held frames.
struct Opening {
    sessions: Sessions,
    topic: Topic,
    subscriber: Arc<Subscriber>,
    start: Start,
}

impl Opening {
    fn open(self) {
        self.sessions.outbox.emit(&self.subscriber.client, Event::Subscribe { subscriber: &self.subscriber });
        // Kafka may be asked (offsets for a time, records older than memory holds): that
        // must not hold up this connection's other subscriptions, nor its reading.
        if self.needs_kafka_first() {
            tokio::spawn(self.run());
        } else {
            self.subscribe_now();
        }
    }

    /// The subscribe proxy said no: the subscription goes (unless the client unsubscribed
    /// meanwhile, and was told so) and the client gets the backend's status.
    fn refuse(self, e: &AuthError) {
        let (sessions, client) = (&self.sessions, &self.subscriber.client);
        let Some(id) = self.subscriber.id.clone() else { return };
        self.subscriber.end();
        if client.remove_subscription(&id).is_none() {
            return;
        }
        sessions.metrics.subscriptions.dec();
        let status = match e {
            AuthError::Denied { status, .. } => *status,
            _ => 503,
        };
        let reason = if status == 503 { "proxy_unavailable" } else { "proxy_denied" };
        sessions.metrics.subscribe_refused(reason, &client.id, &e.to_string());
        answer_to(sessions, client, json!({ "type": "error", "id": &*id, "status": status, "error": e.to_string() }));
    }

    fn needs_kafka_first(&self) -> bool {
        matches!(self.start, Start::Since(_)) && self.topic.history.is_some()
    }

    /// Subscribes, and finishes at once unless Kafka must be read first.
    fn subscribe_now(self) {
        let (begin, resumed, last) = self.enter(self.start.clone());
        if begin.fetch.is_empty() {
            self.finish(begin.start, resumed, last, Vec::new());
        } else {
            tokio::spawn(async move {
                let fetched = self.fetch(begin.fetch, begin.older, begin.start, resumed, last).await;
                let (start, resumed, last, frames) = fetched;
                self.finish(start, resumed, last, frames);
            });
        }
    }

    async fn run(self) {
        let start = resolve(&self.topic, self.start.clone()).await;
        let (begin, resumed, last) = self.enter(start);
        let (start, resumed, last, frames) = if begin.fetch.is_empty() {
            (begin.start, resumed, last, Vec::new())
        } else {
            self.fetch(begin.fetch, begin.older, begin.start, resumed, last).await
        };
        self.finish(start, resumed, last, frames);
    }

    /// Into the hub (what memory replays is held with the live frames that follow).
    fn enter(&self, start: Start) -> (crate::stream::hub::Begin, Option<bool>, Option<usize>) {
        let begin = self.topic.hub.subscribe(self.subscriber.clone(), &start);
        // Unsubscribed meanwhile: the unsubscribe may have looked in the hub before this
        // subscription was there.
        if self.subscriber.is_ended() {
            self.topic.hub.unsubscribe(&self.subscriber);
        }
        let resumed = matches!(self.start, Start::After(_) | Start::Oldest).then_some(begin.complete);
        if resumed.is_some() {
            self.sessions.metrics.resumed(if begin.fetch.is_empty() { "memory" } else { "kafka" });
        }
        let last = matches!(self.start, Start::Last(_)).then_some(begin.replayed);
        (begin, resumed, last)
    }

    /// Reads what memory no longer holds back from Kafka: the frames to queue before the
    /// held ones, with where delivery starts and what to say of it.
    async fn fetch(
        &self,
        fetch: Vec<(i32, i64, i64)>,
        older: Option<usize>,
        mut start: Position,
        mut resumed: Option<bool>,
        mut last: Option<usize>,
    ) -> (Position, Option<bool>, Option<usize>, Vec<Message>) {
        let Some(history) = &self.topic.history else { return (start, resumed, last, Vec::new()) };
        let fetched = history.fetch(fetch.clone()).await;
        let selector = &self.subscriber.selector;
        let records = crate::session::read_back(&self.topic, fetched.records, selector).await;
        let (records, mut at) = match older {
            Some(wanted) => {
                let chosen = crate::session::newest(records, wanted);
                last = last.map(|n| n + chosen.len());
                (chosen, crate::session::start_of(&fetch, &start))
            }
            None => {
                if !fetched.complete {
                    resumed = Some(false);
                    self.sessions.metrics.resumed("incomplete");
                }
                for &(partition, from) in &fetched.starts {
                    start.set(partition, from);
                }
                (records, start.clone())
            }
        };
        let hub = &self.topic.hub;
        let id = self.subscriber.id.as_deref().unwrap_or_default();
        let mut frames = Vec::with_capacity(records.len());
        for stamped in records {
            at.set(stamped.record.partition, stamped.record.offset + 1);
            if let Some(frame) = stamped.mux_frame_with_cursor(id, &hub.cursor(&at), hub.budget()) {
                frames.push(frame);
            }
        }
        (start, resumed, last, frames)
    }

    /// Queues `subscribed`, the frames read from Kafka, then what was held; from then on
    /// the subscription's frames go straight to the queue.
    fn finish(&self, start: Position, resumed: Option<bool>, last: Option<usize>, frames: Vec<Message>) {
        let mut answer = json!({ "type": "subscribed", "id": self.subscriber.id.as_deref(), "cursor": self.topic.hub.cursor(&start) });
        if let Some(resumed) = resumed {
            answer["resumed"] = resumed.into();
        }
        if let Some(last) = last {
            answer["last"] = last.into();
        }
        let mut opening = Vec::with_capacity(frames.len() + 1);
        opening.push(control(answer));
        opening.extend(frames);
        let (policy, metrics) = (self.topic.hub.policy(), &self.sessions.metrics);
        self.subscriber
            .release(opening, |client, frame, stamp| -> Offer { offer(client, frame, stamp, policy, metrics) });
    }
}

/// A control frame to `client`, queued as its records are.
fn answer_to(sessions: &Sessions, client: &Arc<Client>, frame: Value) {
    let topic = sessions.streams.default_topic();
    offer(client, control(frame), crate::client::NO_STAMP, topic.hub.policy(), &sessions.metrics);
}
