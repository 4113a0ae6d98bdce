//! Requests between replicas over Redis pub/sub: each replica subscribes to its own channel
//! (`sluice:{db}:bus:{node}`) on a connection of its own, and answers there what the replica
//! that asked sends it — describe clients, send to one, disconnect one, broadcast, publish —
//! from its own registry. An answer goes to the asker's channel with the request's id; an
//! asker waits [`REQUEST_TIMEOUT`] at most.
//!
//! Pub/sub delivers to whoever is subscribed now and keeps nothing, which is what a request
//! wants: a replica that is not listening is known at once (no receiver), not after a
//! time-out, and nothing is left to replay to a replica that comes back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::link::{Link, PREFIX};
use super::{HEARTBEAT, REQUEST_TIMEOUT};
use crate::metrics::Metrics;
use crate::registry::local::Local;
use crate::registry::{ClientsError, Close, Filter};

/// Waits between attempts to re-establish the subscription.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What one replica asks another to do with its clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    /// The client objects of those of `ids` it holds.
    Describe {
        ids: Vec<String>,
    },
    /// `body` is base64.
    Send {
        id: String,
        body: String,
    },
    Disconnect {
        id: String,
        close: Close,
    },
    /// How many of its clients (of `key`) took `body`.
    Broadcast {
        key: Option<String>,
        body: String,
    },
    /// Put a record on its embedded stream.
    Publish {
        key: String,
        body: String,
    },
    /// The objects of its clients `filter` admits, ordered by id, at most `filter.limit`.
    List {
        filter: Filter,
    },
}

/// A message on a replica's channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Message {
    Request { id: u64, from: String, op: Op },
    Answer { id: u64, result: Result<Value, ClientsError> },
}

/// A message body as it travels in JSON.
pub fn encode(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(body)
}

fn decode(body: &str) -> Result<Bytes, ClientsError> {
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map(Bytes::from)
        .map_err(|e| ClientsError::Unreachable(format!("a malformed request from another replica: {e}")))
}

/// The channel of `node` in the cluster of database `db`. Keys live in a database but
/// channels are server-wide: the number keeps two clusters sharing a Redis (one database
/// each) from hearing each other's requests.
fn channel(db: i64, node: &str) -> String {
    format!("{PREFIX}{db}:bus:{node}")
}

#[derive(Debug, thiserror::Error)]
enum BusError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("the pub/sub connection did not answer in time")]
    Timeout,
    #[error("the pub/sub connection was closed")]
    Closed,
}

pub struct Bus {
    node: Arc<str>,
    /// The cluster's database (see [`channel`]).
    db: i64,
    local: Local,
    link: Arc<Link>,
    metrics: Metrics,
    next_id: AtomicU64,
    /// Requests waiting for their answer, by id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, ClientsError>>>>,
    subscribed: AtomicBool,
    /// Told whenever the subscription is (re)established.
    subscribed_now: Notify,
}

/// Takes a request out of the pending table however its wait ends (answered, timed out,
/// or the admin request dropped).
struct Waiting<'a> {
    bus: &'a Bus,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.bus.pending.lock().remove(&self.id);
    }
}

impl Bus {
    pub fn new(node: Arc<str>, db: i64, local: Local, link: Arc<Link>, metrics: Metrics) -> Bus {
        Bus {
            node,
            db,
            local,
            link,
            metrics,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            subscribed: AtomicBool::new(false),
            subscribed_now: Notify::new(),
        }
    }

    /// Whether this replica is subscribed, waiting up to `within` for it.
    pub async fn wait_subscribed(&self, within: Duration) -> bool {
        let notified = self.subscribed_now.notified();
        tokio::pin!(notified);
        // Registered before the check, so a subscription made in between is not missed.
        notified.as_mut().enable();
        if self.subscribed.load(Ordering::Acquire) {
            return true;
        }
        let _ = tokio::time::timeout(within, notified).await;
        self.subscribed.load(Ordering::Acquire)
    }

    fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::Release);
        if subscribed {
            self.subscribed_now.notify_waiters();
        }
    }

    /// Asks replica `node` to do `op`; its answer, or why there is none.
    pub async fn request(&self, node: &str, op: Op) -> Result<Value, ClientsError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        let _waiting = Waiting { bus: self, id };
        let message = serde_json::to_vec(&Message::Request { id, from: self.node.to_string(), op })
            .expect("a request serializes");
        let receivers: redis::RedisResult<i64> =
            redis::cmd("PUBLISH").arg(channel(self.db, node)).arg(message).query_async(&mut self.link.con()).await;
        match receivers {
            Ok(n) if n > 0 => {}
            Ok(_) => {
                self.metrics.cluster_request("unreachable");
                return Err(ClientsError::Unreachable(format!(
                    "replica {node:?} is not listening (it may have just stopped, or lost its link to Redis)"
                )));
            }
            Err(e) => {
                self.link.down(&e);
                self.metrics.cluster_request("unreachable");
                return Err(ClientsError::Unreachable(format!("cluster link down: replica {node:?} cannot be asked")));
            }
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(answer)) => {
                self.metrics.cluster_request("answered");
                answer
            }
            _ => {
                self.metrics.cluster_request("timeout");
                Err(ClientsError::Unreachable(format!("replica {node:?} did not answer within {REQUEST_TIMEOUT:?}")))
            }
        }
    }

    /// Keeps this replica subscribed to its channel until `stop`, reconnecting as needed.
    pub async fn run(self: Arc<Self>, client: redis::Client, stop: CancellationToken) {
        let mut wait = RETRY_MIN;
        loop {
            let ended = tokio::select! {
                _ = stop.cancelled() => return,
                ended = self.clone().listen(&client, &mut wait) => ended,
            };
            self.set_subscribed(false);
            // Down until a heartbeat finds everything working again; logged once.
            self.link.down(&ended);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    /// One subscription, until its connection fails.
    async fn listen(self: Arc<Self>, client: &redis::Client, wait: &mut Duration) -> BusError {
        let pubsub = match tokio::time::timeout(REQUEST_TIMEOUT, client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return e.into(),
            Err(_) => return BusError::Timeout,
        };
        let (mut sink, mut stream) = pubsub.split();
        if let Err(e) = sink.subscribe(channel(self.db, &self.node)).await {
            return e.into();
        }
        self.set_subscribed(true);
        *wait = RETRY_MIN;
        // A connection that died without a word (a network partition) is found by a ping.
        let mut ping = tokio::time::interval(HEARTBEAT);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(m) => self.receive(m.get_payload_bytes()),
                    None => return BusError::Closed,
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(REQUEST_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return e.into(),
                        Err(_) => return BusError::Timeout,
                    }
                }
            }
        }
    }

    fn receive(self: &Arc<Self>, payload: &[u8]) {
        match serde_json::from_slice::<Message>(payload) {
            Ok(Message::Answer { id, result }) => {
                if let Some(waiting) = self.pending.lock().remove(&id) {
                    let _ = waiting.send(result);
                }
            }
            Ok(Message::Request { id, from, op }) => {
                // Answered off the subscription's task: publishing the answer waits on Redis.
                let bus = self.clone();
                tokio::spawn(async move {
                    let result = bus.serve(op);
                    let answer = serde_json::to_vec(&Message::Answer { id, result }).expect("an answer serializes");
                    let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                        .arg(channel(bus.db, &from))
                        .arg(answer)
                        .query_async(&mut bus.link.con())
                        .await;
                    if let Err(e) = sent {
                        bus.link.down(&e);
                    }
                });
            }
            Err(e) => tracing::debug!(error = %e, "ignored a malformed message on the cluster's channel"),
        }
    }

    /// Does what another replica asked, with this replica's clients.
    fn serve(&self, op: Op) -> Result<Value, ClientsError> {
        match op {
            Op::Describe { ids } => Ok(Value::Array(self.local.describe(&ids))),
            Op::List { filter } => Ok(Value::Array(self.local.page(&filter).clients)),
            Op::Send { id, body } => self.local.send_now(&id, decode(&body)?).map(|()| Value::Null),
            Op::Disconnect { id, close } => self.local.disconnect_now(&id, &close).map(|()| Value::Null),
            Op::Broadcast { key, body } => Ok(json!(self.local.broadcast_now(key.as_deref(), decode(&body)?))),
            Op::Publish { key, body } => self.local.publish_now(&key, decode(&body)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_survive_the_wire() {
        let request = Message::Request {
            id: 7,
            from: "a-1".into(),
            op: Op::Disconnect { id: "x".into(), close: Close { code: 4000, reason: "bye".into() } },
        };
        let text = serde_json::to_string(&request).unwrap();
        assert!(text.contains(r#""op":"disconnect""#), "{text}");
        match serde_json::from_str::<Message>(&text).unwrap() {
            Message::Request { op: Op::Disconnect { close, .. }, .. } => assert_eq!(close.code, 4000),
            other => panic!("{other:?}"),
        }
        let answer = Message::Answer { id: 7, result: Err(ClientsError::Full("x".into())) };
        let back: Message = serde_json::from_str(&serde_json::to_string(&answer).unwrap()).unwrap();
        assert!(matches!(back, Message::Answer { id: 7, result: Err(ClientsError::Full(_)) }));
        assert_eq!(decode(&encode(b"\x00\xffbin")).unwrap(), Bytes::from_static(b"\x00\xffbin"));
    }
}
