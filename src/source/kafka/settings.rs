//! The Kafka settings the source, the history reader and the sink share: brokers, topics,
//! where to start, and the librdkafka properties with the clients each applies to.

use std::time::Duration;

use crate::secret::Secret;

/// The Kafka source, history reader and sink as the settings give them (config builds it).
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    /// The topics streamed to clients (`input`, comma-separated): the first is the default
    /// topic, the one the Quix forms `/{key}` and `/*` read.
    pub topics: Vec<String>,
    pub start: StartFrom,
    /// librdkafka properties beyond the ones Sluice sets itself, each for the clients it
    /// applies to: security settings first, then the pass-through ones, which win.
    pub properties: Vec<(String, KafkaValue, Scope)>,
    pub check_interval: Duration,
    /// No progress for this long while records wait: the partition is reported stuck.
    pub stuck_after: Duration,
    /// Client messages go here, when set.
    pub output: Option<String>,
    /// Lifecycle events go here, when set.
    pub events: Option<String>,
    /// Replies to one client come from here, when set.
    pub replies: Option<String>,
    /// Messages librdkafka may buffer for output and events.
    pub produce_buffer: usize,
}

/// Which Kafka clients a property is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Both,
    Consumer,
    Producer,
}

impl Scope {
    /// Where librdkafka says a property belongs (its CONFIGURATION.md marks each C, P or
    /// both): setting a consumer property on a producer only earns a warning at start-up.
    pub fn of(property: &str) -> Scope {
        if CONSUMER_ONLY.contains(&property) {
            Scope::Consumer
        } else if PRODUCER_ONLY.contains(&property) {
            Scope::Producer
        } else {
            Scope::Both
        }
    }

    pub fn applies_to(self, client: Scope) -> bool {
        self == Scope::Both || self == client
    }
}

/// librdkafka 2.x properties marked "C" (consumer only).
const CONSUMER_ONLY: &[&str] = &[
    "auto.commit.enable",
    "auto.commit.interval.ms",
    "auto.offset.reset",
    "check.crcs",
    "consume.callback.max.messages",
    "coordinator.query.interval.ms",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "fetch.error.backoff.ms",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "fetch.min.bytes",
    "fetch.queue.backoff.ms",
    "fetch.wait.max.ms",
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "heartbeat.interval.ms",
    "isolation.level",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "offset.store.method",
    "offset.store.path",
    "offset.store.sync.interval.ms",
    "partition.assignment.strategy",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "session.timeout.ms",
];

/// librdkafka 2.x properties marked "P" (producer only).
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "batch.num.messages",
    "batch.size",
    "compression.codec",
    "compression.level",
    "compression.type",
    "delivery.report.only.error",
    "delivery.timeout.ms",
    "enable.gapless.guarantee",
    "enable.idempotence",
    "linger.ms",
    "message.send.max.retries",
    "message.timeout.ms",
    "partitioner",
    "produce.offset.report",
    "queue.buffering.backpressure.threshold",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.max.ms",
    "queuing.strategy",
    "request.required.acks",
    "request.timeout.ms",
    "retries",
    "sticky.partitioning.linger.ms",
    "transaction.timeout.ms",
    "transactional.id",
];

/// A librdkafka property value; secret ones are masked in `Debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaValue {
    Plain(String),
    Secret(Secret),
}

impl KafkaValue {
    pub fn expose(&self) -> &str {
        match self {
            KafkaValue::Plain(v) => v,
            KafkaValue::Secret(s) => s.expose(),
        }
    }
}

/// Where the Kafka consumer starts in each partition of `input`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Latest,
    Earliest,
    /// Milliseconds since the Unix epoch: the first record at or after this time.
    Timestamp(i64),
}
