//! The connection to the cluster's Redis, and whether it works now.
//!
//! Commands share one multiplexed connection that reconnects by itself; every wait on it is
//! bounded, so an unreachable Redis makes a call fail in about a second rather than hang an
//! admin request. Whether the link works is decided by the heartbeat (it comes up only when
//! presence, directory and pub/sub all work) and by any call that fails (it goes down at
//! once); each change is one log line and the `sluice_cluster_up` gauge.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics::Metrics;

/// Every key and channel the cluster uses starts with this.
pub const PREFIX: &str = "sluice:";

/// A connection attempt to an unreachable host gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A command without an answer fails after this.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

pub struct Link {
    con: ConnectionManager,
    /// `UNKNOWN` until the first heartbeat, then `UP` or `DOWN`.
    state: AtomicU8,
    metrics: Metrics,
}

impl Link {
    /// Connects lazily: the replica starts whether or not Redis answers now.
    pub fn new(client: &redis::Client, metrics: Metrics) -> redis::RedisResult<Link> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // One quick retry per command; the heartbeat retries every two seconds anyway.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(1));
        let con = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Link { con, state: AtomicU8::new(UNKNOWN), metrics })
    }

    /// A handle for commands (cheap: the connection is shared).
    pub fn con(&self) -> ConnectionManager {
        self.con.clone()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    pub fn up(&self, detail: &str) {
        if self.state.swap(UP, Ordering::AcqRel) != UP {
            self.metrics.cluster_link(true, detail);
        }
    }

    /// Marks the link down; only the first failure of an outage is logged.
    pub fn down(&self, why: &dyn std::fmt::Display) {
        if self.state.swap(DOWN, Ordering::AcqRel) != DOWN {
            self.metrics.cluster_link(false, &why.to_string());
        }
    }
}
