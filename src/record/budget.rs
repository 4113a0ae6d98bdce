//! The gateway-wide bound on bytes held for clients (`--max-queued-bytes`).
//!
//! Each client's queue has its own bound, but a few hundred stalled clients on different
//! keys, each just under it, would still exhaust the machine. So every payload handed to
//! clients is charged here once, when its frame is made, and released when the last queue
//! (or socket write) holding it lets go: a record fanned out to ten thousand clients counts
//! once, as it is held once. When the total passes the bound, the hub sheds the clients
//! holding the most (see [`crate::stream::hub`]).

use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;

/// A cheap-to-clone handle on the bound and the bytes held now.
#[derive(Clone)]
pub struct Budget {
    shared: Arc<Shared>,
}

struct Shared {
    /// Bytes held for clients now, beyond what the replay buffer holds anyway (frames of
    /// recent records, built for the live fan-out: memory it bounds itself, which no
    /// shedding of clients would free). The `sluice_queued_bytes` gauge itself, so the
    /// metric is exact.
    held: Gauge,
    limit: i64,
}

/// A payload charged to the budget: released when the last reference to it is dropped.
struct Charged {
    bytes: Bytes,
    budget: Arc<Shared>,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.budget.held.dec_by(self.bytes.len() as i64);
    }
}

impl Budget {
    pub fn new(limit: usize, held: Gauge) -> Budget {
        Budget { shared: Arc::new(Shared { held, limit: i64::try_from(limit).unwrap_or(i64::MAX) }) }
    }

    /// The replay buffer took (positive) or let go of (negative) frames of these bytes.
    pub fn pin(&self, bytes: i64) {
        self.shared.held.dec_by(bytes);
    }

    /// The same bytes, now counted until the last clone of the result is dropped.
    pub fn charge(&self, bytes: Bytes) -> Bytes {
        if bytes.is_empty() {
            return bytes;
        }
        self.shared.held.inc_by(bytes.len() as i64);
        Bytes::from_owner(Charged { bytes, budget: self.shared.clone() })
    }

    #[cfg(test)]
    pub fn held(&self) -> usize {
        usize::try_from(self.shared.held.get()).unwrap_or(0)
    }

    /// Bytes to free to get back to nine tenths of the bound (some headroom, so one shed
    /// is not followed by another at the very next record); zero while under the bound.
    pub fn excess(&self) -> usize {
        let held = self.shared.held.get();
        if held <= self.shared.limit {
            return 0;
        }
        usize::try_from(held - self.shared.limit / 10 * 9).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_counts_once_however_many_hold_it_until_the_last_lets_go() {
        let budget = Budget::new(100, Gauge::default());
        let a = budget.charge(Bytes::from(vec![7u8; 40]));
        let copies: Vec<Bytes> = (0..1000).map(|_| a.clone()).collect();
        assert_eq!(budget.held(), 40);
        assert_eq!(&copies[999][..], &[7u8; 40][..]);
        drop(a);
        assert_eq!(budget.held(), 40);
        drop(copies);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn what_the_replay_buffer_holds_anyway_is_not_an_excess() {
        let budget = Budget::new(100, Gauge::default());
        let held = budget.charge(Bytes::from(vec![0u8; 150]));
        assert_eq!(budget.excess(), 150 - 90);
        budget.pin(150);
        assert_eq!(budget.excess(), 0);
        budget.pin(-150);
        assert_eq!(budget.excess(), 150 - 90);
        drop(held);
    }

    #[test]
    fn excess_is_what_brings_it_back_to_nine_tenths() {
        let budget = Budget::new(100, Gauge::default());
        let a = budget.charge(Bytes::from(vec![0u8; 100]));
        assert_eq!(budget.excess(), 0);
        let b = budget.charge(Bytes::from(vec![0u8; 20]));
        assert_eq!(budget.excess(), 30);
        drop((a, b));
        assert_eq!(budget.excess(), 0);
    }
}
