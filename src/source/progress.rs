//! How far the consumer is in each partition: its position (the offset after the last
//! record dispatched), the partition's high watermark, the lag between them, and whether
//! the partition is stuck (records wait in it and the position has not moved for
//! `--stuck-partition-timeout`).
//!
//! Positions come from the records themselves as they are dispatched, and high watermarks
//! from the broker (a ListOffsets query each check interval), so the lag is true whether
//! or not anything is committed (Sluice commits nothing) and whether or not fetches
//! succeed: a partition the broker will not serve shows a growing lag, not a silence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::metrics::Metrics;

/// A cheap-to-clone handle on the progress of one topic's partitions.
#[derive(Clone)]
pub struct Progress {
    shared: Arc<Shared>,
}

struct Shared {
    topic: String,
    stuck_after: Duration,
    metrics: Metrics,
    partitions: Mutex<BTreeMap<i32, Partition>>,
}

#[derive(Debug, Clone)]
struct Partition {
    /// The offset after the last record dispatched (where consuming goes on from).
    position: i64,
    /// When `position` last moved (or when watching began).
    moved_at: Instant,
    /// The offset after the last record in the partition, as the broker last said.
    high_watermark: Option<i64>,
    /// Since when records have been waiting (lag above zero at every check since).
    waiting_since: Option<Instant>,
    stuck: bool,
}

/// One partition, as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionView {
    pub partition: i32,
    pub position: i64,
    pub high_watermark: Option<i64>,
    pub lag: Option<i64>,
    pub stuck: bool,
}

impl Progress {
    pub fn new(topic: &str, stuck_after: Duration, metrics: Metrics) -> Progress {
        Progress {
            shared: Arc::new(Shared {
                topic: topic.to_owned(),
                stuck_after,
                metrics,
                partitions: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Consuming `partition` starts (or starts again) at `position`.
    pub fn start(&self, partition: i32, position: i64) {
        let entry =
            Partition { position, moved_at: Instant::now(), high_watermark: None, waiting_since: None, stuck: false };
        self.shared.partitions.lock().insert(partition, entry);
    }

    /// A record at `offset` was dispatched.
    pub fn dispatched(&self, partition: i32, offset: i64) {
        let mut partitions = self.shared.partitions.lock();
        if let Some(p) = partitions.get_mut(&partition) {
            // Moving forward is progress; a record at or behind the position (a broker
            // replaying) is not.
            if offset >= p.position {
                p.position = offset + 1;
                p.moved_at = Instant::now();
            }
        }
    }

    /// The broker's high watermarks, each check interval: updates the lag metric, and
    /// reports partitions that became stuck (logged once, counted) or moved again.
    pub fn watermarks(&self, high: &[(i32, i64)]) {
        self.observe(high, Instant::now());
    }

    fn observe(&self, high: &[(i32, i64)], now: Instant) {
        let shared = &self.shared;
        let mut partitions = shared.partitions.lock();
        for &(id, hw) in high {
            let Some(p) = partitions.get_mut(&id) else { continue };
            p.high_watermark = Some(hw);
            // A broker's watermark can trail a position it has already served (Tansu's does
            // after a multi-record batch): no records wait then.
            let lag = (hw - p.position).max(0);
            let labels = [("topic", shared.topic.clone()), ("partition", id.to_string())];
            shared.metrics.consumer_lag.get_or_create(&labels).set(lag);
            // Stuck: records have waited, and the position has not moved, for the whole
            // timeout. A partition quiet for an hour that just got a record is not.
            p.waiting_since = if lag > 0 { Some(p.waiting_since.unwrap_or(now)) } else { None };
            let still = p.waiting_since.map_or(Duration::ZERO, |w| now.saturating_duration_since(w.max(p.moved_at)));
            match (p.stuck, lag > 0 && still >= shared.stuck_after) {
                (false, true) => {
                    p.stuck = true;
                    shared.metrics.stuck_partitions.inc();
                    shared.metrics.partition_stalls.inc();
                    tracing::warn!(
                        topic = %shared.topic,
                        partition = id,
                        position = p.position,
                        high_watermark = hw,
                        lag,
                        stalled_for = ?still,
                        "partition stuck: records wait in it and consuming has not moved"
                    );
                }
                (true, false) => {
                    p.stuck = false;
                    shared.metrics.stuck_partitions.dec();
                    tracing::info!(topic = %shared.topic, partition = id, position = p.position, lag, "partition moving again");
                }
                _ => {}
            }
        }
    }

    /// Every partition, for `/readyz`.
    pub fn view(&self) -> Vec<PartitionView> {
        self.shared
            .partitions
            .lock()
            .iter()
            .map(|(&partition, p)| PartitionView {
                partition,
                position: p.position,
                high_watermark: p.high_watermark,
                lag: p.high_watermark.map(|hw| (hw - p.position).max(0)),
                stuck: p.stuck,
            })
            .collect()
    }

    pub fn topic(&self) -> &str {
        &self.shared.topic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress() -> (Progress, Metrics) {
        let metrics = Metrics::new();
        (Progress::new("t", Duration::from_secs(60), metrics.clone()), metrics)
    }

    #[test]
    fn lag_is_the_high_watermark_minus_the_position() {
        let (p, metrics) = progress();
        p.start(0, 10);
        p.start(1, 0);
        p.dispatched(0, 10);
        p.dispatched(0, 11);
        p.watermarks(&[(0, 15), (1, 0)]);
        let view = p.view();
        assert_eq!(
            view[0],
            PartitionView { partition: 0, position: 12, high_watermark: Some(15), lag: Some(3), stuck: false }
        );
        assert_eq!(view[1].lag, Some(0));
        assert!(
            metrics.render().contains("sluice_consumer_lag{topic=\"t\",partition=\"0\"} 3"),
            "{}",
            metrics.render()
        );
        // A watermark behind the position is no lag.
        p.watermarks(&[(0, 11)]);
        assert_eq!(p.view()[0].lag, Some(0));
    }

    #[test]
    fn a_partition_that_does_not_move_while_records_wait_is_stuck_once_until_it_moves() {
        let (p, metrics) = progress();
        p.start(0, 5);
        let t0 = Instant::now();
        // Quiet for an hour, then records arrive: waiting starts now, not an hour ago.
        p.observe(&[(0, 9)], t0 + Duration::from_secs(3600));
        assert!(!p.view()[0].stuck);
        p.observe(&[(0, 9)], t0 + Duration::from_secs(3659));
        assert!(!p.view()[0].stuck);
        p.observe(&[(0, 9)], t0 + Duration::from_secs(3661));
        p.observe(&[(0, 12)], t0 + Duration::from_secs(3670));
        assert!(p.view()[0].stuck);
        assert_eq!(metrics.partition_stalls.get(), 1, "counted once, not at every check");
        assert_eq!(metrics.stuck_partitions.get(), 1);
        p.dispatched(0, 5);
        p.observe(&[(0, 12)], Instant::now());
        assert!(!p.view()[0].stuck);
        assert_eq!(metrics.stuck_partitions.get(), 0);
    }

    #[test]
    fn an_idle_partition_with_nothing_waiting_is_never_stuck() {
        let (p, _) = progress();
        p.start(0, 7);
        p.observe(&[(0, 7)], Instant::now() + Duration::from_secs(3600));
        assert!(!p.view()[0].stuck);
    }
}
