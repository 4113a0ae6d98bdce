//! The readiness latch behind `/readyz` and the `sluice_source_up` gauge: true only while
//! every source is consuming, false again during an outage of any and from the start of
//! shutdown.
//!
//! A latch has parts: the gateway's own (shutdown says not ready through it) and one per
//! topic consumed ([`Readiness::part`]); it is ready when every part is.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Readiness {
    shared: Arc<Shared>,
    /// Which part this handle sets.
    part: Arc<str>,
}

struct Shared {
    /// Each part's state and why it is what it is.
    parts: Mutex<BTreeMap<Arc<str>, (bool, String)>>,
    /// `None` for a latch nobody serves (the `replies` consumer's), so it does not move
    /// the gauge that /readyz's truth is exported as.
    metrics: Option<Metrics>,
    what: &'static str,
}

impl Readiness {
    pub fn new(metrics: Metrics) -> Self {
        Readiness::with(Some(metrics), "source")
    }

    /// A latch that only logs its changes, for a secondary consumer.
    pub fn detached(what: &'static str) -> Self {
        Readiness::with(None, what)
    }

    fn with(metrics: Option<Metrics>, what: &'static str) -> Self {
        let part: Arc<str> = Arc::from("");
        let parts = BTreeMap::from([(part.clone(), (false, "starting".to_owned()))]);
        Readiness { shared: Arc::new(Shared { parts: Mutex::new(parts), metrics, what }), part }
    }

    /// A part of this latch, not ready until it says so: the latch is ready only when
    /// every part is. The gateway's own part is ready from the start once parts exist.
    pub fn part(&self, name: &str) -> Readiness {
        let part: Arc<str> = Arc::from(name);
        let mut parts = self.shared.parts.lock();
        parts.insert(part.clone(), (false, "starting".to_owned()));
        if let Some(own) = parts.get_mut("") {
            if own.1 == "starting" {
                *own = (true, String::new());
            }
        }
        Readiness { shared: self.shared.clone(), part }
    }

    /// Sets this part's state; logs only on a change of the whole, so a long outage is one
    /// line, not thousands.
    pub fn set(&self, ready: bool, why: &str) {
        let (was, now) = {
            let mut parts = self.shared.parts.lock();
            let was = parts.values().all(|(r, _)| *r);
            parts.insert(self.part.clone(), (ready, why.to_owned()));
            (was, parts.values().all(|(r, _)| *r))
        };
        if let Some(m) = &self.shared.metrics {
            m.source_up.set(i64::from(now));
        }
        if was != now {
            let what = self.shared.what;
            let part = &*self.part;
            if now {
                tracing::info!(what, part, why, "ready");
            } else {
                tracing::warn!(what, part, why, "not ready");
            }
        }
    }

    pub fn is_ready(&self) -> bool {
        self.shared.parts.lock().values().all(|(r, _)| *r)
    }

    /// Why it is what it is: the reason of the first part not ready (named when there are
    /// several), else the last reason given.
    pub fn why(&self) -> String {
        let parts = self.shared.parts.lock();
        let named = parts.len() > 2;
        match parts.iter().find(|(_, (r, _))| !*r) {
            Some((name, (_, why))) if named && !name.is_empty() => format!("{name}: {why}"),
            Some((_, (_, why))) => why.clone(),
            None => parts.get(&self.part).map(|(_, why)| why.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_part_is() {
        let root = Readiness::detached("test");
        assert!(!root.is_ready());
        let a = root.part("a");
        let b = root.part("b");
        a.set(true, "every partition joined");
        assert!(!root.is_ready());
        assert_eq!(root.why(), "b: starting");
        b.set(true, "every partition joined");
        assert!(root.is_ready());
        a.set(false, "broker not answering");
        assert!(!root.is_ready());
        assert_eq!(root.why(), "a: broker not answering");
        a.set(true, "broker answered");
        root.set(false, "shutting down");
        assert!(!root.is_ready());
        assert_eq!(root.why(), "shutting down");
    }
}
