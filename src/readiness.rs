//! The readiness latch behind `/readyz` and the `sluice_source_up` gauge: true only while
//! the source is consuming, false again during an outage and from the start of shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    /// Why it is what it is, for `/readyz`.
    why: Arc<Mutex<String>>,
    /// `None` for a latch nobody serves (the `replies` consumer's), so it does not move
    /// the gauge that /readyz's truth is exported as.
    metrics: Option<Metrics>,
    what: &'static str,
}

impl Readiness {
    pub fn new(metrics: Metrics) -> Self {
        Readiness {
            ready: Arc::default(),
            why: Arc::new(Mutex::new("starting".into())),
            metrics: Some(metrics),
            what: "source",
        }
    }

    /// A latch that only logs its changes, for a secondary consumer.
    pub fn detached(what: &'static str) -> Self {
        Readiness { ready: Arc::default(), why: Arc::new(Mutex::new("starting".into())), metrics: None, what }
    }

    /// Sets the state; logs only on a change, so a long outage is one line, not thousands.
    pub fn set(&self, ready: bool, why: &str) {
        let was = self.ready.swap(ready, Ordering::SeqCst);
        *self.why.lock() = why.to_owned();
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

    /// The reason given with the last change.
    pub fn why(&self) -> String {
        self.why.lock().clone()
    }
}
