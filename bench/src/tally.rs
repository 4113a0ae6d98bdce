//! What one client received in one phase: counts, sequence checks per key, and the
//! produce→receive latency histogram; and the sum of many clients' tallies.

use hdrhistogram::Histogram;

use crate::payload;

/// Latencies are kept in microseconds, 1 µs to 100 s, at 2 significant digits: 1% is
/// plenty for a percentile, and the histogram stays ~20 KiB per client.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 2).expect("histogram bounds")
}

/// Per key, the next sequence number a client expects. Survives from one phase to the
/// next, so a later phase still detects gaps and duplicates.
#[derive(Clone)]
pub struct Sequences(Vec<u64>);

impl Sequences {
    pub fn new(keys: usize) -> Sequences {
        Sequences(vec![0; keys])
    }
}

pub struct Tally {
    pub next: Sequences,
    /// Frames carrying a stamp.
    pub received: u64,
    /// Stamped frames seen before (a sequence number lower than expected).
    pub duplicates: u64,
    /// Records skipped between two received ones of the same key.
    pub gaps: u64,
    /// Frames without a stamp.
    pub other: u64,
    pub latency_us: Histogram<u64>,
    /// Clock readings (ns) of the first and last stamped frames.
    pub first_ns: Option<u64>,
    pub last_ns: u64,
    /// The close code, if the gateway closed the connection.
    pub closed: Option<u16>,
    /// The connection ended without a close frame, or broke.
    pub lost: Option<String>,
}

impl Tally {
    pub fn new(next: Sequences) -> Tally {
        Tally {
            next,
            received: 0,
            duplicates: 0,
            gaps: 0,
            other: 0,
            latency_us: latency_histogram(),
            first_ns: None,
            last_ns: 0,
            closed: None,
            lost: None,
        }
    }

    /// Accounts for one data frame that arrived at `now_ns`.
    #[inline]
    pub fn frame(&mut self, value: &[u8], now_ns: u64) {
        let Some(stamp) = payload::parse(value) else {
            self.other += 1;
            return;
        };
        let Some(next) = self.next.0.get_mut(stamp.key as usize) else {
            self.other += 1;
            return;
        };
        self.received += 1;
        if stamp.seq >= *next {
            self.gaps += stamp.seq - *next;
            *next = stamp.seq + 1;
        } else {
            self.duplicates += 1;
        }
        self.latency_us.saturating_record((now_ns.saturating_sub(stamp.send_ns) / 1000).max(1));
        self.first_ns.get_or_insert(now_ns);
        self.last_ns = now_ns;
    }

    /// Distinct records received.
    pub fn unique(&self) -> u64 {
        self.received - self.duplicates
    }
}

/// Many clients' tallies summed.
pub struct Total {
    pub clients: usize,
    pub received: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub other: u64,
    pub latency_us: Histogram<u64>,
    pub first_ns: Option<u64>,
    pub last_ns: u64,
    /// Clients closed by the gateway, by close code.
    pub closed: std::collections::BTreeMap<u16, u64>,
    pub lost: u64,
}

impl Total {
    pub fn of<'a>(tallies: impl IntoIterator<Item = &'a Tally>) -> Total {
        let mut t = Total {
            clients: 0,
            received: 0,
            unique: 0,
            duplicates: 0,
            gaps: 0,
            other: 0,
            latency_us: latency_histogram(),
            first_ns: None,
            last_ns: 0,
            closed: Default::default(),
            lost: 0,
        };
        for x in tallies {
            t.clients += 1;
            t.received += x.received;
            t.unique += x.unique();
            t.duplicates += x.duplicates;
            t.gaps += x.gaps;
            t.other += x.other;
            t.latency_us.add(&x.latency_us).expect("same bounds");
            if let Some(f) = x.first_ns {
                t.first_ns = Some(t.first_ns.map_or(f, |g| g.min(f)));
            }
            t.last_ns = t.last_ns.max(x.last_ns);
            if let Some(code) = x.closed {
                *t.closed.entry(code).or_default() += 1;
            }
            if x.lost.is_some() {
                t.lost += 1;
            }
        }
        t
    }

    /// Seconds from the first stamped frame to the last, over all clients.
    pub fn window_s(&self) -> f64 {
        self.first_ns.map_or(0.0, |f| (self.last_ns.saturating_sub(f)) as f64 / 1e9)
    }

    /// Received frames per second over [`Total::window_s`].
    pub fn rate(&self) -> f64 {
        let w = self.window_s();
        if w > 0.0 {
            self.received as f64 / w
        } else {
            0.0
        }
    }

    /// A latency percentile in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        if self.latency_us.is_empty() {
            return f64::NAN;
        }
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn max_latency_ms(&self) -> f64 {
        if self.latency_us.is_empty() {
            return f64::NAN;
        }
        self.latency_us.max() as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{encode, Stamp};

    fn value(key: u32, seq: u64) -> Vec<u8> {
        let mut v = Vec::new();
        encode(&mut v, Stamp { seq, send_ns: 1_000_000, key }, 100);
        v
    }

    #[test]
    fn gaps_and_duplicates_are_counted_per_key() {
        let mut t = Tally::new(Sequences::new(2));
        for (key, seq) in [(0, 0), (1, 0), (0, 1), (0, 4), (1, 1), (0, 4), (0, 2), (0, 5)] {
            t.frame(&value(key, seq), 3_000_000);
        }
        t.frame(b"{\"type\":\"connected\"}", 3_000_000);
        assert_eq!(t.received, 8);
        assert_eq!(t.gaps, 2);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.unique(), 6);
        assert_eq!(t.other, 1);
        // 2 ms, within the histogram's precision.
        assert!(t.latency_us.equivalent(t.latency_us.value_at_quantile(0.5), 2000));
    }
}
