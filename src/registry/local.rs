//! This process's clients: the [`Registry`] table sessions enter and leave, and [`Local`],
//! the [`Clients`] form that answers from it alone (the gateway without `--cluster`, and
//! each replica's own part of a cluster).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::future::{self, BoxFuture, FutureExt};
use parking_lot::RwLock;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::client::{Client, Offer};
use crate::record::Form;
use crate::sink::Outbox;
use crate::source::memory::MemoryStream;
use crate::stream::hub::Hub;

use super::{client_object, Clients, ClientsError, Close, Delivered, Filter, Page, Published};

/// A client entered or left the registry, for whoever keeps a copy elsewhere (the cluster's
/// directory). Sent on connect and disconnect only, never per record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Joined { id: Arc<str>, key: String },
    Left { id: Arc<str>, key: String },
}

/// A cheap-to-clone handle on the table of connected clients. A client is in it from when
/// its session opens until the session ends or the admin API disconnects it, whichever
/// comes first: the session inserts it and removes it when dropped, and a disconnect
/// removes it at once (the session's removal then finds nothing).
#[derive(Clone, Default)]
pub struct Registry {
    clients: Arc<RwLock<HashMap<Arc<str>, Arc<Client>>>>,
    /// Told of every insert and remove once someone watches (see [`Registry::watch`]).
    changes: Arc<OnceLock<mpsc::UnboundedSender<Change>>>,
}

impl Registry {
    /// Adds a client, until [`Registry::remove`] (which the session's drop calls, and an
    /// admin's disconnect before it).
    pub fn insert(&self, client: Arc<Client>) {
        let change = self.changes.get().map(|tx| (tx, client.id.clone(), super::directory_key(&client)));
        // The id's one allocation is shared by the client and this key.
        self.clients.write().insert(client.id.clone(), client);
        if let Some((tx, id, key)) = change {
            let _ = tx.send(Change::Joined { id, key });
        }
    }

    /// Takes a client out; `None` when it is not (or no longer) there. Only the removal
    /// that finds it tells the watcher, so a client leaves exactly once however many times
    /// it is removed.
    pub fn remove(&self, id: &str) -> Option<Arc<Client>> {
        let removed = self.clients.write().remove(id);
        if let (Some(client), Some(tx)) = (&removed, self.changes.get()) {
            let _ = tx.send(Change::Left { id: client.id.clone(), key: super::directory_key(client) });
        }
        removed
    }

    pub fn get(&self, id: &str) -> Option<Arc<Client>> {
        self.clients.read().get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.clients.read().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every client, for listing and for shutdown.
    pub fn all(&self) -> Vec<Arc<Client>> {
        self.clients.read().values().cloned().collect()
    }

    /// Every insert and remove from now on, in order. One watcher per registry: `None` if
    /// there is one already.
    pub fn watch(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.changes.set(tx).ok().map(|()| rx)
    }
}

/// The clients of this process, answered from its registry.
#[derive(Clone)]
pub struct Local {
    node: Arc<str>,
    registry: Registry,
    /// For the gateway-wide bound messages are charged to.
    hub: Hub,
    /// The embedded stream, when that is the source; else publish goes to Kafka.
    memory: Option<MemoryStream>,
    outbox: Outbox,
}

impl Local {
    pub fn new(node: Arc<str>, registry: Registry, hub: Hub, memory: Option<MemoryStream>, outbox: Outbox) -> Local {
        Local { node, registry, hub, memory, outbox }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether records are published on this process's embedded stream (which no other
    /// replica reads) rather than to Kafka (which every replica reads).
    pub fn embedded(&self) -> bool {
        self.memory.is_some()
    }

    /// This process's clients matching `filter`, ordered by id.
    pub fn page(&self, filter: &Filter) -> Page {
        let mut clients: Vec<Arc<Client>> = self.registry.all().into_iter().filter(|c| filter.admits(c)).collect();
        clients.sort_by(|a, b| a.id.cmp(&b.id));
        let more = clients.len() > filter.limit;
        clients.truncate(filter.limit);
        let next = if more { clients.last().map(|c| c.id.to_string()) } else { None };
        Page { clients: clients.iter().map(|c| client_object(c, &self.node)).collect(), next, partial: false }
    }

    /// The objects of those of `ids` this process holds, in the order given.
    pub fn describe(&self, ids: &[String]) -> Vec<Value> {
        ids.iter().filter_map(|id| self.registry.get(id)).map(|c| client_object(&c, &self.node)).collect()
    }

    pub fn get_now(&self, id: &str) -> Result<Value, ClientsError> {
        let client = self.registry.get(id).ok_or_else(|| ClientsError::Unknown(id.to_owned()))?;
        Ok(client_object(&client, &self.node))
    }

    pub fn send_now(&self, id: &str, body: Bytes) -> Result<(), ClientsError> {
        let client = self.registry.get(id).ok_or_else(|| ClientsError::Unknown(id.to_owned()))?;
        match client.offer(client.message(self.hub.budget().charge(body))) {
            Offer::Queued => Ok(()),
            Offer::Full => Err(ClientsError::Full(id.to_owned())),
            Offer::Closed => Err(ClientsError::Unknown(id.to_owned())),
        }
    }

    /// Closes a client and takes it out of the registry in the same moment, so that what
    /// the caller does next (a get, the list, a broadcast, on any replica) no longer finds
    /// it. Its session goes on alone: it sends the close and ends the connection within
    /// [`CLOSE_TIMEOUT`](crate::session::pump::CLOSE_TIMEOUT), then records the disconnect. Taken
    /// out first, so that of two disconnects at once exactly one finds the client.
    pub fn disconnect_now(&self, id: &str, close: &Close) -> Result<(), ClientsError> {
        let client = self.registry.remove(id).ok_or_else(|| ClientsError::Unknown(id.to_owned()))?;
        client.close(close.code, &close.reason);
        Ok(())
    }

    /// How many of this process's clients (of `key`) took the message.
    pub fn broadcast_now(&self, key: Option<&str>, body: Bytes) -> usize {
        let body = self.hub.budget().charge(body);
        // Built once per form of message, shared by every client of it.
        let (mut websocket, mut sse, mut mux) = (None, None, None);
        let mut delivered = 0usize;
        for client in self.registry.all() {
            if key.is_some_and(|k| !super::reaches(&client, k)) {
                continue;
            }
            let slot = match client.form {
                Form::Mux => &mut mux,
                form if form.is_sse() => &mut sse,
                _ => &mut websocket,
            };
            let message = slot.get_or_insert_with(|| client.message(body.clone())).clone();
            if client.offer(message) == Offer::Queued {
                delivered += 1;
            }
        }
        delivered
    }

    pub fn publish_now(&self, key: &str, body: Bytes) -> Result<Value, ClientsError> {
        match &self.memory {
            Some(stream) => {
                let key = Bytes::copy_from_slice(key.as_bytes());
                Ok(json!({ "offset": stream.publish(Some(key), body, vec![]) }))
            }
            None => {
                self.outbox.publish(key.as_bytes(), &body).map_err(|e| ClientsError::Publish(e.to_string()))?;
                Ok(json!({ "queued": true }))
            }
        }
    }
}

impl Clients for Local {
    fn node(&self) -> &str {
        &self.node
    }

    fn list(&self, filter: Filter) -> BoxFuture<'_, Page> {
        future::ready(self.page(&filter)).boxed()
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Value, ClientsError>> {
        future::ready(self.get_now(id)).boxed()
    }

    fn send<'a>(&'a self, id: &'a str, body: Bytes) -> BoxFuture<'a, Result<(), ClientsError>> {
        future::ready(self.send_now(id, body)).boxed()
    }

    fn disconnect<'a>(&'a self, id: &'a str, close: Close) -> BoxFuture<'a, Result<(), ClientsError>> {
        future::ready(self.disconnect_now(id, &close)).boxed()
    }

    fn broadcast<'a>(&'a self, key: Option<&'a str>, body: Bytes) -> BoxFuture<'a, Delivered> {
        future::ready(Delivered { delivered: self.broadcast_now(key, body), partial: false }).boxed()
    }

    fn publish<'a>(&'a self, key: &'a str, body: Bytes) -> BoxFuture<'a, Result<Published, ClientsError>> {
        future::ready(self.publish_now(key, body).map(|placed| Published { placed, partial: false })).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::subscriber::Subscriber;
    use crate::selector::{Glob, Selector};

    /// A client of a plain form: `/k` for `Some("k")`, `/*` for `Some("*")`.
    fn client(id: &str, key: Option<&str>) -> Arc<Client> {
        let (c, _queue) = Client::new(crate::client::tests::info(id, key), crate::client::tests::limits(1), 1024);
        let c = Arc::new(c);
        let selector = match key {
            Some("*") | None => Selector::default(),
            Some(k) => Selector::key(Bytes::copy_from_slice(k.as_bytes())),
        };
        c.add_subscription(Arc::new(Subscriber::new(c.clone(), None, "t".into(), selector, false)));
        c
    }

    #[test]
    fn a_client_is_found_by_id_until_removed() {
        let r = Registry::default();
        r.insert(client("abc", Some("*")));
        assert!(r.get("abc").is_some());
        r.remove("abc");
        assert!(r.get("abc").is_none());
        assert!(r.is_empty());
    }

    #[test]
    fn a_watcher_sees_every_join_and_leave_in_order() {
        let r = Registry::default();
        let mut changes = r.watch().expect("the first watcher");
        assert!(r.watch().is_none(), "one watcher per registry");
        r.insert(client("a", Some("k")));
        r.insert(client("b", Some("*")));
        r.remove("a");
        r.remove("nobody");
        let got: Vec<Change> = std::iter::from_fn(|| changes.try_recv().ok()).collect();
        assert_eq!(
            got,
            [
                Change::Joined { id: "a".into(), key: "k".into() },
                Change::Joined { id: "b".into(), key: "*".into() },
                Change::Left { id: "a".into(), key: "k".into() },
            ]
        );
    }

    #[test]
    fn a_client_removed_twice_leaves_once() {
        let r = Registry::default();
        let mut changes = r.watch().expect("the first watcher");
        r.insert(client("a", Some("*")));
        assert!(r.remove("a").is_some());
        assert!(r.remove("a").is_none(), "the second removal finds nothing");
        let got: Vec<Change> = std::iter::from_fn(|| changes.try_recv().ok()).collect();
        assert_eq!(
            got,
            [Change::Joined { id: "a".into(), key: "*".into() }, Change::Left { id: "a".into(), key: "*".into() }]
        );
    }

    fn local(registry: &Registry) -> Local {
        let metrics = crate::metrics::Metrics::new();
        let stream = crate::stream::hub::StreamSettings {
            tag: 1,
            recent_bytes: 0,
            limits: crate::stream::replay::Limits { kafka: false, max_fetch: 0 },
        };
        let budget = crate::record::budget::Budget::new(usize::MAX, Default::default());
        let hub = Hub::new(crate::client::SlowConsumerPolicy::Disconnect, metrics.clone(), budget, stream);
        Local::new("n".into(), registry.clone(), hub, None, crate::sink::Outbox::memory(metrics))
    }

    #[test]
    fn a_disconnected_client_is_closed_and_out_of_the_registry_at_once() {
        let r = Registry::default();
        let (c, _queue) =
            Client::new(crate::client::tests::info("a", Some("*")), crate::client::tests::limits(1), 1024);
        let c = Arc::new(c);
        r.insert(c.clone());
        let local = local(&r);
        let close = Close { code: 4000, reason: "bye".into() };
        assert_eq!(local.disconnect_now("a", &close), Ok(()));
        assert!(c.is_closing());
        assert_eq!(c.close_reason().map(|r| (r.code, r.reason.as_str())), Some((4000, "bye")));
        assert!(r.get("a").is_none());
        assert_eq!(local.get_now("a"), Err(ClientsError::Unknown("a".into())));
        // A second disconnect finds nothing: it is not the first to close the client.
        assert_eq!(local.disconnect_now("a", &close), Err(ClientsError::Unknown("a".into())));
    }

    #[test]
    fn a_filter_admits_ids_after_the_cursor_of_the_clients_that_can_match_its_key() {
        let f = Filter { key: Some("k".into()), cursor: Some("b".into()), limit: 10 };
        assert!(f.admits(&client("c", Some("k"))));
        assert!(!f.admits(&client("b", Some("k"))));
        assert!(!f.admits(&client("c", Some("other"))));
        // Every key's subscribers can match any key; `*` names only them.
        assert!(f.admits(&client("c", Some("*"))));
        assert!(Filter { key: None, cursor: None, limit: 1 }.admits(&client("a", Some("*"))));
        let star = Filter { key: Some("*".into()), cursor: None, limit: 10 };
        assert!(star.admits(&client("a", Some("*"))));
        assert!(!star.admits(&client("a", Some("k"))));
        // A pattern subscription can match the keys its pattern does.
        let (c, _queue) = Client::new(crate::client::tests::info("p", None), crate::client::tests::limits(1), 1024);
        let c = Arc::new(c);
        let selector = Selector { pattern: Some(Glob::new("sensor-*").unwrap()), ..Selector::default() };
        c.add_subscription(Arc::new(Subscriber::new(c.clone(), Some("s1".into()), "t".into(), selector, false)));
        assert!(Filter { key: Some("sensor-4".into()), cursor: None, limit: 1 }.admits(&c));
        assert!(!Filter { key: Some("pump-4".into()), cursor: None, limit: 1 }.admits(&c));
        assert!(!star.admits(&c));
        c.take_subscriptions();
    }
}
