//! The clients of every replica sharing a Redis (`--cluster`): the [`Clients`] form the
//! admin API uses when clustered. Redis holds a directory of who is connected where and
//! each replica's presence; what a client is doing stays on the replica that holds it and
//! is asked for over Redis pub/sub when needed.
//!
//! - [`link`]: the connection to Redis, and whether it works now (metric and log line).
//! - [`directory`]: the data in Redis — presence, every client's id, key and node — and the
//!   one task that writes this replica's part of it.
//! - [`presence`]: the heartbeat that keeps this replica alive in Redis, re-registers its
//!   clients when Redis lost them, and removes replicas that died.
//! - [`bus`]: requests to another replica (describe, send, disconnect, broadcast, publish)
//!   and their answers, over pub/sub.
//!
//! Nothing here is on a record's way to a socket: a client costs Redis one write when it
//! connects and one when it leaves, batched; records and frames never touch it.

pub mod bus;
pub mod directory;
pub mod link;
pub mod presence;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{join_all, BoxFuture, FutureExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::secret::Secret;

use self::bus::{Bus, Op};
use self::directory::{Directory, Writer};
use self::link::Link;
use super::local::Local;
use super::{Clients, ClientsError, Close, Delivered, Filter, Page, Published};

/// How often a replica says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a replica stays listed after its last heartbeat: a replica killed without a
/// word leaves every list within this (and its entries are removed at the next heartbeat
/// of any replica). Five heartbeats, so a slow moment is not a death.
pub const PRESENCE_TTL: Duration = Duration::from_secs(10);
/// How long a replica waits for another to answer a request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the cluster could not be joined at all (an unreachable Redis is not one: the replica
/// starts and serves alone until Redis answers).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--cluster / SLUICE_CLUSTER: {0}")]
    Client(#[from] redis::RedisError),
    #[error("--cluster-ca-file / SLUICE_CLUSTER_CA_FILE: cannot read {path}: {error}")]
    CaFile { path: String, error: std::io::Error },
}

/// Where the replicas of a cluster meet.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `redis://` or `rediss://`; may carry a password, hence a secret.
    pub url: Secret,
    /// The CA that verifies a `rediss://` Redis, instead of the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl ClusterSettings {
    /// The URL without its credentials, for logs.
    pub fn display(&self) -> String {
        let url = self.url.expose();
        match (url.split_once("://"), url.rfind('@')) {
            (Some((scheme, _)), Some(at)) => format!("{scheme}://****@{}", &url[at + 1..]),
            _ => url.to_owned(),
        }
    }
}

/// This replica's handle on the cluster. Cheap to share: `Arc` it.
pub struct Cluster {
    local: Local,
    link: Arc<Link>,
    directory: Directory,
    bus: Arc<Bus>,
    writer: Writer,
    /// Stops the heartbeat and the pub/sub task.
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Cluster {
    /// Joins the cluster: starts the directory writer, the pub/sub connection and the
    /// heartbeat, and waits (briefly) for the first heartbeat so that a replica that can
    /// reach Redis serves the whole cluster from its first request.
    pub async fn start(config: &ClusterSettings, local: Local, metrics: Metrics) -> Result<Cluster, ClusterError> {
        let node: Arc<str> = Arc::from(local.node());
        let client = match &config.ca_file {
            None => redis::Client::open(config.url.expose())?,
            Some(path) => {
                let root_cert = std::fs::read(path)
                    .map_err(|error| ClusterError::CaFile { path: path.display().to_string(), error })?;
                redis::Client::build_with_tls(
                    config.url.expose(),
                    redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) },
                )?
            }
        };
        let link = Arc::new(Link::new(&client, metrics.clone())?);
        let directory = Directory::new(node.clone(), link.clone());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let changes = local.registry().watch().expect("one cluster per registry");
        let writer = Writer::spawn(directory.clone(), local.registry().clone(), changes, metrics.clone(), &tasks);
        let db = client.get_connection_info().redis_settings().db();
        let bus = Arc::new(Bus::new(node.clone(), db, local.clone(), link.clone(), metrics));
        tasks.spawn(bus.clone().run(client, stop.clone()));
        let heartbeat = presence::Presence::new(directory.clone(), writer.clone(), bus.clone(), link.clone());
        let first = heartbeat.first();
        tasks.spawn(heartbeat.run(stop.clone()));
        // A failed heartbeat has logged the link down; one still waiting has said nothing.
        if tokio::time::timeout(2 * HEARTBEAT, first).await.is_err() {
            tracing::info!("the cluster's Redis has not answered yet: serving this replica's clients until it does");
        }
        Ok(Cluster { local, link, directory, bus, writer, stop, tasks })
    }

    /// Leaves the cluster: this replica's clients and presence are removed from Redis at
    /// once (the others stop listing them now, not at expiry), then its tasks stop.
    pub async fn stop(&self) {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.writer.leave()).await {
            Ok(Ok(removed)) => tracing::info!(removed, "left the cluster"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not leave the cluster: the other replicas drop this one's clients when its presence expires")
            }
            Err(_) => tracing::warn!(
                "leaving the cluster timed out: the other replicas drop this one's clients when its presence expires"
            ),
        }
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tasks.wait()).await;
    }

    fn unreachable(&self, id: &str) -> ClientsError {
        ClientsError::Unreachable(format!(
            "cluster link down: client {id:?} is not on this replica ({}), and the other replicas cannot be asked until Redis is back",
            self.local.node()
        ))
    }

    /// The replica holding `id` (not this one), if a live one does.
    async fn owner(&self, id: &str) -> Result<String, ClientsError> {
        // Ids are UUIDs: anything else is on no replica (and must not reach a Redis range).
        if !plausible_id(id) {
            return Err(ClientsError::Unknown(id.to_owned()));
        }
        if !self.link.is_up() {
            return Err(self.unreachable(id));
        }
        match self.directory.owner(id).await {
            Ok(Some(node)) if node != self.local.node() => Ok(node),
            // Ours in the directory but no longer in the registry: it just left, or was
            // disconnected (the directory hears of it a moment later).
            Ok(_) => Err(ClientsError::Unknown(id.to_owned())),
            Err(e) => {
                self.link.down(&e);
                Err(self.unreachable(id))
            }
        }
    }

    /// Asks every other live replica the same thing; their answers, and whether some could
    /// not be asked.
    async fn ask_all(&self, op: Op) -> (Vec<Value>, bool) {
        if !self.link.is_up() {
            return (Vec::new(), true);
        }
        let nodes = match self.directory.live_nodes().await {
            Ok(nodes) => nodes,
            Err(e) => {
                self.link.down(&e);
                return (Vec::new(), true);
            }
        };
        let others = nodes.iter().filter(|n| n.as_str() != self.local.node());
        let answers = join_all(others.map(|n| self.bus.request(n, op.clone()))).await;
        let partial = answers.iter().any(Result::is_err);
        (answers.into_iter().filter_map(Result::ok).collect(), partial)
    }

    async fn list_page(&self, filter: Filter) -> Page {
        // Alone, or Redis unreachable: this replica's clients, said to be part of the whole.
        let alone = || Page { partial: true, ..self.local.page(&filter) };
        if !self.link.is_up() {
            return alone();
        }
        if filter.key.is_some() {
            return self.list_matching(filter).await;
        }
        let mut entries = match self.directory.page(&filter, filter.limit + 1).await {
            Ok(entries) => entries,
            Err(e) => {
                self.link.down(&e);
                return alone();
            }
        };
        let more = entries.len() > filter.limit;
        entries.truncate(filter.limit);
        let next = if more { entries.last().map(|e| e.id.clone()) } else { None };
        // One request per replica on the page, all at once.
        let mut by_node: HashMap<&str, Vec<String>> = HashMap::new();
        for e in &entries {
            by_node.entry(e.node.as_str()).or_default().push(e.id.clone());
        }
        let asked = by_node.into_iter().map(|(node, ids)| async move {
            if node == self.local.node() {
                Ok(self.local.describe(&ids))
            } else {
                match self.bus.request(node, Op::Describe { ids }).await? {
                    Value::Array(clients) => Ok(clients),
                    _ => Ok(Vec::new()),
                }
            }
        });
        let mut partial = false;
        let mut found: HashMap<String, Value> = HashMap::new();
        for answer in join_all(asked).await {
            match answer {
                Ok(clients) => {
                    for c in clients {
                        if let Some(id) = c["replyId"].as_str() {
                            found.insert(id.to_owned(), c);
                        }
                    }
                }
                Err::<_, ClientsError>(_) => partial = true,
            }
        }
        // In the directory's order; a client that left since is simply not there.
        let clients = entries.iter().filter_map(|e| found.remove(&e.id)).collect();
        Page { clients, next, partial }
    }
}

impl Cluster {
    /// The clients whose subscriptions can match a key: a pattern or a selector of every key
    /// can match keys no index names, so each replica is asked for a page of its own and
    /// the pages are merged in id order.
    async fn list_matching(&self, filter: Filter) -> Page {
        let asked = Filter { limit: filter.limit + 1, ..filter.clone() };
        let mine = self.local.page(&asked).clients;
        let (theirs, partial) = self.ask_all(Op::List { filter: asked }).await;
        let mut clients: Vec<Value> = mine
            .into_iter()
            .chain(theirs.into_iter().flat_map(|v| v.as_array().cloned().unwrap_or_default()))
            .collect();
        let id = |c: &Value| c["replyId"].as_str().unwrap_or_default().to_owned();
        clients.sort_by_key(id);
        clients.dedup_by_key(|c| id(c));
        let more = clients.len() > filter.limit;
        clients.truncate(filter.limit);
        let next = if more { clients.last().map(id) } else { None };
        Page { clients, next, partial }
    }
}

/// Whether `id` can be a `replyId` (a UUID in text form).
fn plausible_id(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

impl Clients for Cluster {
    fn node(&self) -> &str {
        self.local.node()
    }

    fn list(&self, filter: Filter) -> BoxFuture<'_, Page> {
        self.list_page(filter).boxed()
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Value, ClientsError>> {
        async move {
            match self.local.get_now(id) {
                Err(ClientsError::Unknown(_)) => {}
                held => return held,
            }
            let node = self.owner(id).await?;
            match self.bus.request(&node, Op::Describe { ids: vec![id.to_owned()] }).await? {
                Value::Array(mut clients) if !clients.is_empty() => Ok(clients.swap_remove(0)),
                _ => Err(ClientsError::Unknown(id.to_owned())),
            }
        }
        .boxed()
    }

    fn send<'a>(&'a self, id: &'a str, body: Bytes) -> BoxFuture<'a, Result<(), ClientsError>> {
        async move {
            match self.local.send_now(id, body.clone()) {
                Err(ClientsError::Unknown(_)) => {}
                held => return held,
            }
            let node = self.owner(id).await?;
            self.bus.request(&node, Op::Send { id: id.to_owned(), body: bus::encode(&body) }).await.map(drop)
        }
        .boxed()
    }

    fn disconnect<'a>(&'a self, id: &'a str, close: Close) -> BoxFuture<'a, Result<(), ClientsError>> {
        async move {
            match self.local.disconnect_now(id, &close) {
                Err(ClientsError::Unknown(_)) => {}
                held => return held,
            }
            let node = self.owner(id).await?;
            self.bus.request(&node, Op::Disconnect { id: id.to_owned(), close }).await.map(drop)
        }
        .boxed()
    }

    fn broadcast<'a>(&'a self, key: Option<&'a str>, body: Bytes) -> BoxFuture<'a, Delivered> {
        async move {
            let mine = self.local.broadcast_now(key, body.clone());
            let op = Op::Broadcast { key: key.map(str::to_owned), body: bus::encode(&body) };
            let (answers, partial) = self.ask_all(op).await;
            let theirs: usize = answers.iter().filter_map(Value::as_u64).map(|n| n as usize).sum();
            Delivered { delivered: mine + theirs, partial }
        }
        .boxed()
    }

    fn publish<'a>(&'a self, key: &'a str, body: Bytes) -> BoxFuture<'a, Result<Published, ClientsError>> {
        async move {
            let placed = self.local.publish_now(key, body.clone())?;
            // Kafka reaches every replica by itself; an embedded stream is one process's.
            if !self.local.embedded() {
                return Ok(Published { placed, partial: false });
            }
            let (_, partial) = self.ask_all(Op::Publish { key: key.to_owned(), body: bus::encode(&body) }).await;
            Ok(Published { placed, partial })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuids_can_be_reply_ids() {
        assert!(plausible_id(&uuid::Uuid::new_v4().to_string()));
        assert!(!plausible_id("no-such-id"));
        assert!(!plausible_id("6f1c2d3e-0000-4000-8000-00000000000 x"));
    }
}
