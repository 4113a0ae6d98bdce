//! The heartbeat: every [`HEARTBEAT`] this replica refreshes its presence in Redis, writes
//! all its clients again when Redis lost them (or missed some while unreachable), removes
//! the replicas whose presence expired, and decides whether the cluster link is up.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::bus::Bus;
use super::directory::{self, Directory, Writer};
use super::link::Link;
use super::HEARTBEAT;

pub struct Presence {
    directory: Directory,
    writer: Writer,
    bus: Arc<Bus>,
    link: Arc<Link>,
    /// Told once the first heartbeat is over, whatever its outcome.
    first: Arc<Notify>,
}

impl Presence {
    pub fn new(directory: Directory, writer: Writer, bus: Arc<Bus>, link: Arc<Link>) -> Presence {
        Presence { directory, writer, bus, link, first: Arc::new(Notify::new()) }
    }

    /// Ready once the first heartbeat is over (the link is then up, or down and logged).
    pub fn first(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let first = self.first.clone();
        async move { first.notified().await }
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut history = History::default();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.beat(&mut history).await;
            self.first.notify_one();
        }
    }

    /// One heartbeat: the link is up after it, or down (and said so).
    async fn beat(&self, history: &mut History) {
        let found = match self.directory.beat().await {
            Ok(found) => found,
            Err(e) => {
                self.link.down(&e);
                return;
            }
        };
        // Before this process's first mark, another one is its previous life; after it, a
        // second process under the same id, whose entries and this one's overwrite each
        // other's.
        if found == directory::Presence::Other && history.marked && !history.warned_duplicate {
            history.warned_duplicate = true;
            tracing::error!("another process runs with this replica's --node-id: give every replica its own, or their clients will be listed wrongly");
        }
        history.marked = true;
        let registered = found != directory::Presence::Missing;
        if !registered || self.directory.is_dirty() {
            if !registered && history.registered {
                tracing::warn!("this replica's clients were gone from the cluster's Redis (restarted, or out of reach past the presence expiry): registering them again");
            }
            match self.writer.resync().await {
                Ok(clients) => {
                    history.registered = true;
                    tracing::debug!(clients, "clients registered in the cluster");
                }
                Err(e) => {
                    self.link.down(&e);
                    return;
                }
            }
        }
        let live = match self.directory.sweep().await {
            Ok((live, swept)) => {
                for (node, clients) in swept {
                    tracing::info!(%node, clients, "a replica stopped answering (its presence expired): its clients were removed from the cluster's list");
                }
                live
            }
            Err(e) => {
                self.link.down(&e);
                return;
            }
        };
        self.link.metrics().cluster_nodes.set(live as i64);
        // Requests from the others reach this replica only through its subscription: right
        // after start or a reconnect it may be a moment away.
        if !self.bus.wait_subscribed(HEARTBEAT / 2).await {
            self.link.down(&"the pub/sub connection is not subscribed");
            return;
        }
        self.link.up(&format!("{live} replica(s) alive"));
    }
}

/// What the heartbeats so far have seen.
#[derive(Default)]
struct History {
    /// This process's presence has been written once.
    marked: bool,
    /// Its clients have been registered once.
    registered: bool,
    /// The duplicate node id was reported (once is enough).
    warned_duplicate: bool,
}
