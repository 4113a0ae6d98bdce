//! The readiness latch behind `/readyz` and the `sluice_source_up` gauge: true only while
//! the source is consuming, false again during an outage and from the start of shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    /// `None` for a latch nobody serves (the `replies` consumer's), so it does not move
    /// the gauge that /readyz's truth is exported as.
    metrics: Option<Metrics>,
    what: &'static str,
}

impl Readiness {
    pub fn new(metrics: Metrics) -> Self {
        Readiness { ready: Arc::new(AtomicBool::new(false)), metrics: Some(metrics), what: "source" }
    }

    /// A latch that only logs its changes, for a secondary consumer.
    pub fn detached(what: &'static str) -> Self {
        Readiness { ready: Arc::new(AtomicBool::new(false)), metrics: None, what }
    }

    /// Sets the state; logs only on a change, so a long outage is one line, not thousands.
    pub fn set(&self, ready: bool, why: &str) {
        let was = self.ready.swap(ready, Ordering::SeqCst);
        if let Some(m) = &self.metrics {
            m.source_up.set(i64::from(ready));
        }
        if was != ready {
            if ready {
                tracing::info!(what = self.what, why, "ready");
            } else {
                tracing::warn!(what = self.what, why, "not ready");
            }
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}
