//! The readiness latch behind `/readyz` and the `sluice_source_up` gauge: true only while
//! the source is consuming, false again during an outage and from the start of shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    metrics: Metrics,
}

impl Readiness {
    pub fn new(metrics: Metrics) -> Self {
        Readiness { ready: Arc::new(AtomicBool::new(false)), metrics }
    }

    /// Sets the state; logs only on a change, so a long outage is one line, not thousands.
    pub fn set(&self, ready: bool, why: &str) {
        let was = self.ready.swap(ready, Ordering::SeqCst);
        self.metrics.source_up.set(i64::from(ready));
        if was != ready {
            if ready {
                tracing::info!(why, "ready");
            } else {
                tracing::warn!(why, "not ready");
            }
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}
