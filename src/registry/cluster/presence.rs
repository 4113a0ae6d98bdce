//! The heartbeat: every [`HEARTBEAT`] this replica refreshes its presence in Redis, writes
//! all its clients again when Redis lost them (or missed some while unreachable), removes
//! the replicas whose presence expired, and decides whether the cluster link is up.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::bus::Bus;
use super::directory::{Directory, Writer};
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
        let mut registered_once = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.beat(&mut registered_once).await;
            self.first.notify_one();
        }
    }

    /// One heartbeat: the link is up after it, or down (and said so).
    async fn beat(&self, registered_once: &mut bool) {
        let registered = match self.directory.beat().await {
            Ok(r) => r,
            Err(e) => {
                self.link.down(&e);
                return;
            }
        };
        if !registered || self.directory.is_dirty() {
            if !registered && *registered_once {
                tracing::warn!("this replica's clients were gone from the cluster's Redis (restarted, or out of reach past the presence expiry): registering them again");
            }
            match self.writer.resync().await {
                Ok(clients) => {
                    *registered_once = true;
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
