//! Older records from Kafka, for clients resuming further back than memory holds: one
//! shared reader (assign + seek on a consumer of its own), never one per client. Requests
//! that arrive together (a load balancer reload reconnects thousands at once) are served by
//! one pass over the union of their ranges.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::record::Record;
use crate::source::join::{Joining, Step};
use crate::source::kafka::{KafkaSettings, Scope};

/// How long one pass may take before what it has is returned.
const PASS_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests waiting for the reader beyond this are refused (the client resumes from memory).
const QUEUE: usize = 16_384;

/// A cheap-to-clone handle on the shared reader.
#[derive(Clone)]
pub struct History {
    requests: mpsc::Sender<Request>,
}

/// Per partition, an offset if there is one.
type Offsets = Vec<(i32, Option<i64>)>;

enum Request {
    Fetch {
        ranges: Vec<(i32, i64, i64)>,
        reply: oneshot::Sender<Fetched>,
    },
    /// Kafka's offsets for times: per partition, the first record at or after `ms`.
    At {
        ms: i64,
        partitions: Vec<i32>,
        reply: oneshot::Sender<Option<Offsets>>,
    },
}

/// What a request got back.
#[derive(Debug, Default)]
pub struct Fetched {
    /// The records of the requested ranges, each partition in order.
    pub records: Vec<Arc<Record>>,
    /// Per partition, where what was read starts: later than asked when Kafka no longer
    /// holds the start (retention), so the client knows it missed some.
    pub starts: Vec<(i32, i64)>,
    /// Every range was read to its end.
    pub complete: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("the Kafka client refused its configuration: {0}")]
    Config(#[from] rdkafka::error::KafkaError),
}

impl History {
    /// Starts the reader on a thread of its own (librdkafka's poll blocks).
    pub fn start(cfg: &KafkaSettings, topic: &str, metrics: Metrics) -> Result<History, HistoryError> {
        let group = format!("sluice-history-{}", uuid::Uuid::new_v4().simple());
        let consumer: BaseConsumer = crate::source::kafka::client_config(cfg, HISTORY_DEFAULTS, Scope::Consumer)
            .set("group.id", &group)
            .create()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let topic = topic.to_owned();
        std::thread::Builder::new()
            .name("sluice-history".into())
            .spawn(move || serve(consumer, topic, rx, metrics))
            .map_err(|e| {
                rdkafka::error::KafkaError::ClientCreation(format!("cannot start the history reader thread: {e}"))
            })?;
        Ok(History { requests: tx })
    }

    /// The records of `ranges` (`[from, to)` per partition).
    pub async fn fetch(&self, ranges: Vec<(i32, i64, i64)>) -> Fetched {
        let (reply, answer) = oneshot::channel();
        if self.requests.try_send(Request::Fetch { ranges, reply }).is_err() {
            return Fetched::default();
        }
        answer.await.unwrap_or_default()
    }

    /// Per partition, the offset of the first record at or after `ms` (milliseconds since
    /// the epoch), by Kafka's offsets for times; `None` for a partition with no such record.
    /// `None` in all when the broker did not answer.
    pub async fn offsets_at(&self, ms: i64, partitions: Vec<i32>) -> Option<Offsets> {
        let (reply, answer) = oneshot::channel();
        self.requests.try_send(Request::At { ms, partitions, reply }).ok()?;
        answer.await.ok().flatten()
    }
}

const HISTORY_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("enable.partition.eof", "false"),
    ("fetch.wait.max.ms", "10"),
    // A range retention has passed is read from its oldest record still there (the pass
    // reports it incomplete).
    ("auto.offset.reset", "earliest"),
];

fn serve(consumer: BaseConsumer, topic: String, mut requests: mpsc::Receiver<Request>, metrics: Metrics) {
    while let Some(first) = requests.blocking_recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next.take().or_else(|| requests.try_recv().ok()) {
            match request {
                Request::Fetch { ranges, reply } => batch.push((ranges, reply)),
                Request::At { ms, partitions, reply } => {
                    let _ = reply.send(offsets_at(&consumer, &topic, ms, &partitions, &metrics));
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        // One pass over the union of the ranges asked for.
        let mut union: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for (ranges, _) in &batch {
            for &(p, from, to) in ranges {
                let e = union.entry(p).or_insert((from, to));
                e.0 = e.0.min(from);
                e.1 = e.1.max(to);
            }
        }
        let (records, lows, complete) = read(&consumer, &topic, &union, &metrics);
        for (ranges, reply) in batch {
            let answer = answer(&ranges, &records, &lows, complete);
            let _ = reply.send(answer);
        }
    }
}

fn offsets_at(consumer: &BaseConsumer, topic: &str, ms: i64, partitions: &[i32], metrics: &Metrics) -> Option<Offsets> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(ms)).ok()?;
    }
    match consumer.offsets_for_times(tpl, PASS_TIMEOUT) {
        Ok(found) => Some(
            found
                .elements()
                .iter()
                .map(|e| {
                    let at = match e.offset() {
                        Offset::Offset(o) if o >= 0 && e.error().is_ok() => Some(o),
                        _ => None,
                    };
                    (e.partition(), at)
                })
                .collect(),
        ),
        Err(e) => {
            metrics.kafka_error("history", &e);
            None
        }
    }
}

/// One request's share of a pass: its ranges' records, where each starts (later than asked
/// where retention took the start: `lows` are the partitions' first offsets), and whether
/// all of it was there to be read.
fn answer(ranges: &[(i32, i64, i64)], records: &[Arc<Record>], lows: &BTreeMap<i32, i64>, complete: bool) -> Fetched {
    let mine = records
        .iter()
        .filter(|rec| ranges.iter().any(|&(p, from, to)| rec.partition == p && rec.offset >= from && rec.offset < to))
        .cloned()
        .collect();
    let starts = ranges.iter().map(|&(p, from, _)| (p, lows.get(&p).map_or(from, |&low| low.max(from)))).collect();
    let gone = ranges.iter().any(|&(p, from, _)| lows.get(&p).is_some_and(|&low| low > from));
    Fetched { records: mine, starts, complete: complete && !gone }
}

/// One partition's range on its way through a pass.
struct Reading {
    /// The end of the range: done once a record or the position reaches it.
    to: i64,
    /// The next offset wanted (after the last record kept).
    next: i64,
    /// Until the broker has served the range's start (see [`crate::source::join`]).
    joining: Option<Joining>,
    /// When this read was last positioned, for a read the broker serves nothing at.
    seeked_at: Instant,
}

/// How long a read that is joining may be served nothing before it steps back.
const STARVED: Duration = Duration::from_millis(500);

/// Reads `[from, to)` of each partition; returns the records, each partition's first
/// available offset, and whether every range was read to its end.
///
/// Each range's start is checked as the live source checks its own: a broker may serve
/// only batches that begin at or after the offset asked for, so a start inside a batch
/// would silently lose that batch's head. Records below what is wanted (the step back, a
/// batch served again) are dropped, so each offset comes out once.
fn read(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &BTreeMap<i32, (i64, i64)>,
    metrics: &Metrics,
) -> (Vec<Arc<Record>>, BTreeMap<i32, i64>, bool) {
    let mut lows = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    let mut pending: BTreeMap<i32, Reading> = BTreeMap::new();
    let now = Instant::now();
    for (&p, &(from, to)) in ranges {
        // The low watermark says what retention has taken. The high one is not asked: the
        // range ends where the live stream is joined, so its records exist, and a broker's
        // high watermark can trail them (Tansu's is the last batch's first offset + 1).
        let (low, _) = match consumer.fetch_watermarks(topic, p, PASS_TIMEOUT) {
            Ok(w) => w,
            Err(e) => {
                metrics.kafka_error("history", &e);
                return (Vec::new(), lows, false);
            }
        };
        lows.insert(p, low);
        let from = from.max(low);
        if from < to {
            let (joining, seek) = match Joining::new(from, low) {
                Some((j, seek)) => (Some(j), seek),
                None => (None, from),
            };
            let _ = tpl.add_partition_offset(topic, p, Offset::Offset(seek));
            pending.insert(p, Reading { to, next: from, joining, seeked_at: now });
        }
    }
    if pending.is_empty() {
        return (Vec::new(), lows, true);
    }
    if let Err(e) = consumer.assign(&tpl) {
        metrics.kafka_error("history", &e);
        return (Vec::new(), lows, false);
    }
    let seek = |p: i32, to: i64| {
        if let Err(e) = consumer.seek(topic, p, Offset::Offset(to), PASS_TIMEOUT) {
            metrics.kafka_error("history", &e);
        }
    };
    let topic_name: Arc<str> = Arc::from(topic);
    let mut records = Vec::new();
    let deadline = Instant::now() + PASS_TIMEOUT;
    while !pending.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let p = m.partition();
                let Some(r) = pending.get_mut(&p) else { continue };
                if let Some(joining) = &mut r.joining {
                    match joining.record(m.offset()) {
                        Step::Confirmed => {
                            r.joining = None;
                            continue;
                        }
                        Step::Joined => r.joining = None,
                        Step::SeekBack(to) => {
                            tracing::debug!(
                                partition = p,
                                start = joining.at,
                                served = m.offset(),
                                seek = to,
                                "the broker skipped records before the start: reading from further back"
                            );
                            r.seeked_at = Instant::now();
                            seek(p, to);
                            continue;
                        }
                    }
                }
                if m.offset() < r.next {
                    continue;
                }
                if m.offset() < r.to {
                    r.next = m.offset() + 1;
                    records.push(Arc::new(Record {
                        topic: topic_name.clone(),
                        partition: p,
                        offset: m.offset(),
                        timestamp: m.timestamp().to_millis(),
                        key: m.key().map(Bytes::copy_from_slice),
                        value: m.payload().map(Bytes::copy_from_slice),
                        headers: m
                            .headers()
                            .map(|hs| {
                                hs.iter().map(|h| (h.key.to_owned(), h.value.map(Bytes::copy_from_slice))).collect()
                            })
                            .unwrap_or_default(),
                        decoded: None,
                    }));
                }
                if m.offset() + 1 >= r.to {
                    pending.remove(&p);
                }
            }
            Some(Err(e)) => metrics.kafka_error("history", &e),
            None => {
                // Offsets may skip (transaction markers, compaction): done with a partition
                // once its position has reached the end of its range. A read still joining
                // that the broker serves nothing steps back.
                let positions = consumer.position().ok();
                let position =
                    |p: i32| match positions.as_ref().and_then(|l| l.find_partition(topic, p)).map(|e| e.offset()) {
                        Some(Offset::Offset(at)) => Some(at),
                        _ => None,
                    };
                let mut done = Vec::new();
                for (&p, r) in pending.iter_mut() {
                    let at = position(p);
                    if let Some(joining) = &mut r.joining {
                        if at.is_some_and(|at| joining.passed(at)) {
                            r.joining = None;
                        } else if r.seeked_at.elapsed() >= STARVED {
                            if let Some(to) = joining.starved() {
                                r.seeked_at = Instant::now();
                                seek(p, to);
                            }
                            continue;
                        } else {
                            continue;
                        }
                    }
                    if at.is_some_and(|at| at >= r.to) {
                        done.push(p);
                    }
                }
                for p in done {
                    pending.remove(&p);
                }
            }
        }
    }
    let _ = consumer.unassign();
    (records, lows, pending.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64) -> Arc<Record> {
        Arc::new(Record {
            topic: Arc::from("t"),
            partition,
            offset,
            timestamp: None,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
            decoded: None,
        })
    }

    #[test]
    fn a_range_retention_took_the_start_of_is_incomplete_and_starts_at_the_oldest_left() {
        // One pass read partition 0 from 12 (retention took 0..12) and partition 1 whole.
        let records: Vec<_> = (12..15).map(|o| record(0, o)).chain((3..6).map(|o| record(1, o))).collect();
        let lows = BTreeMap::from([(0, 12), (1, 0)]);
        let gap = answer(&[(0, 2, 15)], &records, &lows, true);
        assert!(!gap.complete);
        assert_eq!(gap.starts, [(0, 12)]);
        assert_eq!(gap.records.iter().map(|r| r.offset).collect::<Vec<_>>(), [12, 13, 14]);
        // Another request of the same pass, whose range retention left alone, is whole; it
        // gets only its own records.
        let whole = answer(&[(1, 4, 6)], &records, &lows, true);
        assert!(whole.complete);
        assert_eq!(whole.starts, [(1, 4)]);
        assert_eq!(whole.records.iter().map(|r| (r.partition, r.offset)).collect::<Vec<_>>(), [(1, 4), (1, 5)]);
        // A pass that ran out of time is incomplete for everyone.
        assert!(!answer(&[(1, 4, 6)], &records, &lows, false).complete);
    }
}
