//! Closing connections whose token has expired: one task for the whole gateway holds the
//! expiries in order and closes each client at its time with 4001 `token expired`, so an
//! idle connection pays no timer of its own. A multiplexed connection that presents a later
//! token (`refresh`) moves its expiry: the entry of the earlier one then finds it later and
//! passes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::client::Client;
use crate::metrics::Metrics;

/// The close code of an expired token (application range 4000–4999).
pub const TOKEN_EXPIRED_CODE: u16 = 4001;
pub const TOKEN_EXPIRED: &str = "token expired";

/// A cheap-to-clone handle on the expiry task.
#[derive(Clone)]
pub struct Expiries {
    watch: mpsc::UnboundedSender<(u64, Weak<Client>)>,
}

impl Expiries {
    /// Starts the task (on the current runtime); it ends when every handle is dropped.
    pub fn start(metrics: Metrics) -> Expiries {
        let (watch, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, metrics));
        Expiries { watch }
    }

    /// Closes `client` at its expiry ([`Client::expiry`]) unless it has moved later by then.
    pub fn watch(&self, client: &Arc<Client>) {
        if let Some(at) = client.expiry() {
            let _ = self.watch.send((at, Arc::downgrade(client)));
        }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An entry: the expiry it was watched for, and the client.
struct Entry(u64, Weak<Client>);

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.0 == other.0
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<(u64, Weak<Client>)>, metrics: Metrics) {
    let mut due: BinaryHeap<Reverse<Entry>> = BinaryHeap::new();
    loop {
        // Until the earliest expiry, or a new one to watch.
        let wait = match due.peek() {
            Some(Reverse(Entry(at, _))) => Duration::from_secs(at.saturating_sub(now())),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            watched = rx.recv() => match watched {
                Some((at, client)) => due.push(Reverse(Entry(at, client))),
                None => return,
            },
            _ = tokio::time::sleep(wait) => {}
        }
        let now = now();
        while due.peek().is_some_and(|Reverse(Entry(at, _))| *at <= now) {
            let Some(Reverse(Entry(at, client))) = due.pop() else { break };
            let Some(client) = client.upgrade() else { continue };
            // Refreshed since: a later entry is (or was) watched for it.
            if client.expiry().is_some_and(|current| current > at) {
                continue;
            }
            if client.close(TOKEN_EXPIRED_CODE, TOKEN_EXPIRED) {
                metrics.tokens_expired.inc();
                tracing::info!(client = %client.id, "token expired: closing");
            }
        }
    }
}
