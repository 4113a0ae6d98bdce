//! Every connected client, and the one interface the admin API reaches clients through.
//!
//! - [`Registry`] (in [`local`]): this process's clients by `replyId`. A session inserts its
//!   client and removes it when dropped; a disconnect removes it at once, while its session
//!   closes the connection. The hub, replies and shutdown read it.
//! - [`Clients`]: list, inspect, message, disconnect, broadcast, publish. The API calls only
//!   this and never asks whether the gateway is clustered.
//! - [`local::Local`]: the form for one process: every answer comes from its [`Registry`].
//! - [`cluster::Cluster`]: the form for replicas sharing a Redis (`--cluster`): a directory
//!   of every replica's clients and presence in Redis, commands routed to the replica that
//!   holds the client over Redis pub/sub, this process's own clients served by `Local`.
//!
//! A client object is built by the replica that holds the client ([`client_object`]), so
//! its activity (counters, last messages) is exact wherever it is read from.

pub mod cluster;
pub mod local;
pub mod replies;

use std::time::SystemTime;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::client::{Activity, Client};
use crate::sink::rfc3339;

pub use local::{Change, Registry};

/// What a list asks for: clients ordered by id, after `cursor`, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Filter {
    /// Only the clients whose subscriptions can match this key (`*`: those subscribed to
    /// every key, as `/*` is).
    pub key: Option<String>,
    /// Only ids after this one.
    pub cursor: Option<String>,
    pub limit: usize,
}

impl Filter {
    pub fn admits(&self, client: &Client) -> bool {
        self.key.as_deref().is_none_or(|k| reaches(client, k)) && self.cursor.as_deref().is_none_or(|c| &*client.id > c)
    }
}

/// Whether `?key=K` (of a list or a broadcast) reaches this client: some subscription of
/// its can select records with key `K`; `*` reaches the clients subscribed to every key.
pub fn reaches(client: &Client, key: &str) -> bool {
    if key == "*" {
        client.subscriptions().iter().any(|s| s.selector.keys.is_none() && s.selector.pattern.is_none())
    } else {
        client.can_match_key(key.as_bytes())
    }
}

/// The key a client is listed under in a cluster's directory: a plain form's (`*` for
/// `/*`), or none (empty) for a client on `/`.
pub fn directory_key(client: &Client) -> String {
    client.key().unwrap_or_default()
}

/// One page of clients.
#[derive(Debug, Default)]
pub struct Page {
    /// Client objects, ordered by id.
    pub clients: Vec<Value>,
    /// The cursor of the next page; `None` on the last.
    pub next: Option<String>,
    /// Some replicas could not be asked: their clients are missing from this page.
    pub partial: bool,
}

/// What a broadcast reached.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Clients whose queue took the message, on every replica that answered.
    pub delivered: usize,
    /// Some replicas could not be asked: their clients are not counted, and may not have it.
    pub partial: bool,
}

/// Where a published record went.
#[derive(Debug)]
pub struct Published {
    /// `{"offset":n}` on the embedded stream (this process's), `{"queued":true}` for Kafka.
    pub placed: Value,
    /// With embedded streams, some replicas could not be asked to publish it too.
    pub partial: bool,
}

/// How to close a client: a code a server may send, and a reason of at most 123 bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Close {
    pub code: u16,
    pub reason: String,
}

/// Why a call about clients could not be answered. Also how a replica tells another, hence
/// serializable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "camelCase")]
pub enum ClientsError {
    /// No replica holds a client with this id.
    #[error("no connected client with id {0:?}")]
    Unknown(String),
    #[error("client {0:?} has a full queue")]
    Full(String),
    /// The client may be on a replica that cannot be asked now (cluster link down, or the
    /// replica did not answer in time).
    #[error("{0}")]
    Unreachable(String),
    #[error("cannot publish: {0}")]
    Publish(String),
}

/// The clients the admin API manages: this process's, or every replica's of a cluster.
/// Futures are boxed so the API can hold either form behind one `Arc<dyn Clients>`.
pub trait Clients: Send + Sync + 'static {
    /// This replica's node id.
    fn node(&self) -> &str;

    fn list(&self, filter: Filter) -> BoxFuture<'_, Page>;

    /// One client object.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Value, ClientsError>>;

    /// Queues `body` for one client (a text frame when UTF-8, else binary; an SSE event).
    fn send<'a>(&'a self, id: &'a str, body: Bytes) -> BoxFuture<'a, Result<(), ClientsError>>;

    fn disconnect<'a>(&'a self, id: &'a str, close: Close) -> BoxFuture<'a, Result<(), ClientsError>>;

    /// Queues `body` for every client, or for those subscribed to `key`.
    fn broadcast<'a>(&'a self, key: Option<&'a str>, body: Bytes) -> BoxFuture<'a, Delivered>;

    /// Puts a record on the stream every replica's clients receive.
    fn publish<'a>(&'a self, key: &'a str, body: Bytes) -> BoxFuture<'a, Result<Published, ClientsError>>;
}

/// The client object of the API, as the replica holding the client sees it now.
pub fn client_object(c: &Client, node: &str) -> Value {
    json!({
        "replyId": &*c.id,
        "key": c.key(),
        "subscriptions": c.subscriptions().iter().map(|s| s.to_json()).collect::<Vec<_>>(),
        "node": node,
        "user": c.user,
        "remoteAddr": c.remote.to_string(),
        "userAgent": c.user_agent,
        // What the connect proxy attached, as it gave it.
        "data": c.data.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
        "envelope": c.form.is_envelope(),
        "transport": if c.form.is_sse() { "sse" } else { "websocket" },
        "multiplexed": c.form == crate::record::Form::Mux,
        "connectedAt": rfc3339(c.connected_at),
        "lastActiveAt": rfc3339(c.last_active()),
        "lastMessageIn": last_message(&c.incoming()),
        "lastMessageOut": last_message(&c.outgoing()),
        "messagesIn": c.incoming().messages,
        "messagesOut": c.outgoing().messages,
        "bytesIn": c.incoming().bytes,
        "bytesOut": c.outgoing().bytes,
        "queued": c.queued(),
        "dropped": c.dropped(),
        // Set from the moment a close is decided (slow consumer, ping timeout) until the
        // client leaves the registry when its session ends; a client closed through the
        // API leaves it at once.
        "closing": c.close_reason().map(|r| json!({ "code": r.code, "reason": r.reason })),
    })
}

fn last_message(a: &Activity) -> Value {
    let (Some(data), Some(at)) = (&a.last, a.last_at) else { return Value::Null };
    let at: SystemTime = at;
    match std::str::from_utf8(data) {
        Ok(text) => json!({ "data": text, "at": rfc3339(at) }),
        // A stored copy may end inside a character where it was capped.
        Err(e) if e.error_len().is_none() => {
            json!({ "data": std::str::from_utf8(&data[..e.valid_up_to()]).unwrap_or_default(), "at": rfc3339(at) })
        }
        Err(_) => {
            let data = crate::record::Text::base64(data);
            json!({ "data": data.as_str(), "encoding": data.encoding(), "at": rfc3339(at) })
        }
    }
}
