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

use crate::config::{KafkaConfig, Scope};
use crate::metrics::Metrics;
use crate::record::Record;

/// How long one pass may take before what it has is returned.
const PASS_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests waiting for the reader beyond this are refused (the client resumes from memory).
const QUEUE: usize = 16_384;

/// A cheap-to-clone handle on the shared reader.
#[derive(Clone)]
pub struct History {
    requests: mpsc::Sender<Request>,
}

struct Request {
    ranges: Vec<(i32, i64, i64)>,
    reply: oneshot::Sender<Fetched>,
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
    pub fn start(cfg: &KafkaConfig, metrics: Metrics) -> Result<History, HistoryError> {
        let group = format!("sluice-history-{}", uuid::Uuid::new_v4().simple());
        let consumer: BaseConsumer = crate::source::kafka::client_config(cfg, HISTORY_DEFAULTS, Scope::Consumer)
            .set("group.id", &group)
            .create()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let topic = cfg.topic.clone();
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
        if self.requests.try_send(Request { ranges, reply }).is_err() {
            return Fetched::default();
        }
        answer.await.unwrap_or_default()
    }
}

const HISTORY_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("enable.partition.eof", "false"),
    ("fetch.wait.max.ms", "10"),
];

fn serve(consumer: BaseConsumer, topic: String, mut requests: mpsc::Receiver<Request>, metrics: Metrics) {
    while let Some(first) = requests.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(more) = requests.try_recv() {
            batch.push(more);
        }
        // One pass over the union of the ranges asked for.
        let mut union: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for r in &batch {
            for &(p, from, to) in &r.ranges {
                let e = union.entry(p).or_insert((from, to));
                e.0 = e.0.min(from);
                e.1 = e.1.max(to);
            }
        }
        let (records, lows, complete) = read(&consumer, &topic, &union, &metrics);
        for r in batch {
            let mut mine = Vec::new();
            for rec in &records {
                if r.ranges.iter().any(|&(p, from, to)| rec.partition == p && rec.offset >= from && rec.offset < to) {
                    mine.push(rec.clone());
                }
            }
            let starts =
                r.ranges.iter().map(|&(p, from, _)| (p, lows.get(&p).map_or(from, |&low| low.max(from)))).collect();
            let gone = r.ranges.iter().any(|&(p, from, _)| lows.get(&p).is_some_and(|&low| low > from));
            let _ = r.reply.send(Fetched { records: mine, starts, complete: complete && !gone });
        }
    }
}

/// Reads `[from, to)` of each partition; returns the records, each partition's first
/// available offset, and whether every range was read to its end.
fn read(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &BTreeMap<i32, (i64, i64)>,
    metrics: &Metrics,
) -> (Vec<Arc<Record>>, BTreeMap<i32, i64>, bool) {
    let mut lows = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    let mut pending = BTreeMap::new();
    for (&p, &(from, to)) in ranges {
        // The low watermark says what retention has taken. The high one is not asked: the
        // range ends where the live consumer started, so its records exist, and a broker's
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
            let _ = tpl.add_partition_offset(topic, p, Offset::Offset(from));
            pending.insert(p, to);
        }
    }
    if pending.is_empty() {
        return (Vec::new(), lows, true);
    }
    if let Err(e) = consumer.assign(&tpl) {
        metrics.kafka_error("history", &e);
        return (Vec::new(), lows, false);
    }
    let topic_name: Arc<str> = Arc::from(topic);
    let mut records = Vec::new();
    let deadline = Instant::now() + PASS_TIMEOUT;
    while !pending.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let p = m.partition();
                let Some(&to) = pending.get(&p) else { continue };
                if m.offset() < to {
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
                    }));
                }
                if m.offset() + 1 >= to {
                    pending.remove(&p);
                }
            }
            Some(Err(e)) => metrics.kafka_error("history", &e),
            None => {
                // Offsets may skip (transaction markers, compaction): done with a partition
                // once its position has reached the end of its range.
                if let Ok(positions) = consumer.position() {
                    for e in positions.elements() {
                        if let (Offset::Offset(at), Some(&to)) = (e.offset(), pending.get(&e.partition())) {
                            if at >= to {
                                pending.remove(&e.partition());
                            }
                        }
                    }
                }
            }
        }
    }
    let _ = consumer.unassign();
    (records, lows, pending.is_empty())
}
