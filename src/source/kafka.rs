//! Consumes every partition of a Kafka topic and dispatches its records in order.
//!
//! No consumer group: a group would split the partitions between replicas of Sluice, and
//! a client connected to one replica would miss the keys the others hold. Each replica
//! assigns itself all partitions, starts where `--from` says, commits nothing, and picks
//! up partitions added later (from their beginning: everything in them is new).
//!
//! Where each partition starts is checked, not assumed ([`crate::source::join`]): the
//! hub hears that a partition is joined only once the broker has served the records from
//! there, and the source is ready only when every partition is.
//!
//! librdkafka reconnects by itself when the broker goes away; this module keeps clients
//! connected meanwhile, and keeps `/readyz` honest by checking the broker every
//! `check_interval` and on every all-brokers-down error.

mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::decode::Decoder;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::record::Record;
use crate::source::join::{Joining, Step};
use crate::source::progress::Progress;
use crate::source::{Dispatch, Watch};

pub use self::settings::{KafkaSettings, KafkaValue, Scope, StartFrom};

/// How long start-up waits for the broker before giving up with a clear error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the Kafka source could not start. Each message names the setting to look at.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("--kafka-property / KAFKA_PROPERTIES: the Kafka client refused its configuration: {0}")]
    Config(#[source] KafkaError),
    #[error("--brokers / Quix__Broker__Address: cannot reach Kafka at {brokers}: {source}")]
    Unreachable { brokers: String, source: KafkaError },
    #[error("--input / input: topic {topic:?} does not exist on {brokers}")]
    MissingTopic { topic: String, brokers: String },
    #[error("--from / SLUICE_FROM: cannot find where to start in {topic:?}: {source}")]
    OffsetLookup { topic: String, source: KafkaError },
    #[error("--input / input: cannot assign the partitions of {topic:?}: {source}")]
    Assign { topic: String, source: KafkaError },
}

/// Routes librdkafka's logs and errors into tracing, metrics and readiness.
pub struct SourceContext {
    metrics: Metrics,
    readiness: Readiness,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        forward_log(&self.metrics, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.readiness.set(false, "all Kafka brokers are down");
        }
        self.metrics.kafka_error("client", &format_args!("{error}: {reason}"));
    }
}

impl ConsumerContext for SourceContext {}

type KafkaConsumer = StreamConsumer<SourceContext>;
type Watcher = BaseConsumer<SourceContext>;

/// A consumer with every partition of its topic assigned, ready to run.
pub struct KafkaSource {
    consumer: Arc<KafkaConsumer>,
    /// A second client, on connections of its own, for metadata and watermarks: a broker
    /// answers the requests of one connection in order, so behind a fetch it holds (up to
    /// `fetch.wait.max.ms`) they would wait, and readiness would flap.
    watcher: Arc<Watcher>,
    topic: Arc<str>,
    assigned: BTreeSet<i32>,
    /// Where each partition starts, as the hub is told before any record.
    starts: Vec<Watch>,
    /// The partitions whose start is not yet confirmed by what the broker served.
    joining: BTreeMap<i32, Joining>,
    /// See [`starved_after`].
    starved_after: Duration,
    check_interval: Duration,
    metrics: Metrics,
    readiness: Readiness,
    progress: Progress,
    /// Decodes each record's value (and key) from its wire format before it is dispatched.
    decoder: Option<Decoder>,
}

/// How often the position of a partition that is joining is looked at (see
/// [`crate::source::join`]).
const JOIN_CHECK: Duration = Duration::from_millis(100);

/// How long a read may be served nothing before it steps back: longer than a fetch the
/// broker may hold for `fetch.wait.max.ms` (and answer late, as Tansu does even with records
/// waiting), twice over, so that an answer on its way is not thrown away by a seek.
fn starved_after(config: &ClientConfig) -> Duration {
    let wait = config.get("fetch.wait.max.ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(500);
    Duration::from_millis(wait.saturating_mul(2)) + Duration::from_secs(1)
}

/// The consumer's own librdkafka settings, under the user's pass-through ones.
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("enable.partition.eof", "false"),
    ("allow.auto.create.topics", "false"),
    // The default 500 ms makes a quiet topic's records wait for the broker's fetch
    // timeout; under load fetches return full long before either bound.
    ("fetch.wait.max.ms", "100"),
    // Said, not left to the default (latest): a position retention has passed moves to the
    // oldest record still there, the least that can be lost. The hub counts the jump.
    ("auto.offset.reset", "earliest"),
];

/// A librdkafka configuration for one kind of client: the brokers, then `own` (its
/// defaults), then the user's security and pass-through properties that apply to it, which
/// win.
pub fn client_config(cfg: &KafkaSettings, own: &[(&str, &str)], kind: Scope) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers).set("client.id", "sluice").set_log_level(RDKafkaLogLevel::Warning);
    for (key, value) in own {
        c.set(*key, *value);
    }
    for (key, value, scope) in &cfg.properties {
        if scope.applies_to(kind) {
            c.set(key, value.expose());
        }
    }
    c
}

/// librdkafka's log lines, into tracing at the matching level; warnings and errors at most
/// once per facility and period (an outage makes it report every failed reconnect).
pub fn forward_log(metrics: &Metrics, level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            if let Some(skipped) = metrics.admit_kafka_log(fac) {
                tracing::error!(target: "librdkafka", facility = fac, similar_lines_not_logged = skipped, "{message}")
            }
        }
        RDKafkaLogLevel::Warning => {
            if let Some(skipped) = metrics.admit_kafka_log(fac) {
                tracing::warn!(target: "librdkafka", facility = fac, similar_lines_not_logged = skipped, "{message}")
            }
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility = fac, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
    }
}

impl KafkaSource {
    /// Creates the consumer, checks the broker and the topic, and assigns every partition
    /// at the configured start. Fails with one clear error naming the setting.
    pub async fn connect(
        cfg: &KafkaSettings,
        topic: &str,
        start: StartFrom,
        metrics: Metrics,
        readiness: Readiness,
    ) -> Result<KafkaSource, KafkaSourceError> {
        let context = SourceContext { metrics: metrics.clone(), readiness: readiness.clone() };
        // librdkafka will not assign partitions without a group id, even though this
        // consumer never joins the group nor commits: a unique one keeps replicas apart.
        let group = format!("sluice-{}", uuid::Uuid::new_v4().simple());
        let config = {
            let mut c = client_config(cfg, CONSUMER_DEFAULTS, Scope::Consumer);
            c.set("group.id", &group);
            c
        };
        let consumer: KafkaConsumer = config.create_with_context(context).map_err(KafkaSourceError::Config)?;
        let consumer = Arc::new(consumer);
        let watcher_context = SourceContext { metrics: metrics.clone(), readiness: readiness.clone() };
        let watcher: Watcher = config.create_with_context(watcher_context).map_err(KafkaSourceError::Config)?;
        let watcher = Arc::new(watcher);

        let partitions = match partitions(&watcher, topic, CONNECT_TIMEOUT).await {
            Ok(Some(p)) if !p.is_empty() => p,
            Ok(_) => {
                return Err(KafkaSourceError::MissingTopic { topic: topic.to_owned(), brokers: cfg.brokers.clone() })
            }
            Err(source) => return Err(KafkaSourceError::Unreachable { brokers: cfg.brokers.clone(), source }),
        };

        // Where each partition starts, resolved here rather than left to librdkafka, so
        // the position (and with it the lag) is known from the first moment.
        let at = match start {
            StartFrom::Latest => Offset::End,
            StartFrom::Earliest => Offset::Beginning,
            StartFrom::Timestamp(ms) => Offset::Offset(ms),
        };
        let ids: Vec<i32> = partitions.iter().copied().collect();
        let lookup = |source| KafkaSourceError::OffsetLookup { topic: topic.to_owned(), source };
        let mut starts = offsets(&watcher, topic, &ids, at, CONNECT_TIMEOUT).await.map_err(lookup)?;
        // No record at or after the time: start at the end.
        let past_the_end: Vec<i32> = starts.iter().filter(|(_, o)| *o < 0).map(|(p, _)| *p).collect();
        if !past_the_end.is_empty() {
            let ends = offsets(&watcher, topic, &past_the_end, Offset::End, CONNECT_TIMEOUT).await.map_err(lookup)?;
            starts.retain(|(_, o)| *o >= 0);
            starts.extend(ends);
        }
        // Each partition's first offset: a start after it is checked by reading from one
        // record earlier (see crate::source::join).
        let lows: BTreeMap<i32, i64> = offsets(&watcher, topic, &ids, Offset::Beginning, CONNECT_TIMEOUT)
            .await
            .map_err(lookup)?
            .into_iter()
            .collect();
        let progress = Progress::new(topic, cfg.stuck_after, metrics.clone());
        let mut tpl = TopicPartitionList::new();
        let mut watches = Vec::with_capacity(starts.len());
        let mut joining = BTreeMap::new();
        for &(p, offset) in &starts {
            let low = lows.get(&p).copied().unwrap_or(0).max(0);
            let seek = match Joining::new(offset, low) {
                Some((j, seek)) => {
                    joining.insert(p, j);
                    seek
                }
                None => offset,
            };
            tpl.add_partition_offset(topic, p, Offset::Offset(seek))
                .map_err(|source| KafkaSourceError::Assign { topic: topic.to_owned(), source })?;
            progress.start(p, offset);
            watches.push(Watch { partition: p, next: offset, joined: !joining.contains_key(&p) });
        }
        consumer.assign(&tpl).map_err(|source| KafkaSourceError::Assign { topic: topic.to_owned(), source })?;
        tracing::info!(topic, partitions = partitions.len(), ?start, "consuming every partition");

        Ok(KafkaSource {
            consumer,
            watcher,
            topic: Arc::from(topic),
            assigned: partitions,
            starts: watches,
            joining,
            starved_after: starved_after(&config),
            check_interval: cfg.check_interval,
            metrics,
            readiness,
            progress,
            decoder: None,
        })
    }

    /// Decodes every record with `decoder` before dispatching it: once per record, however
    /// many subscribers get it.
    pub fn decoding(mut self, decoder: Option<Decoder>) -> KafkaSource {
        self.decoder = decoder;
        self
    }

    /// How far consuming is in each partition (lag, stuck partitions).
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Dispatches records until shutdown. Receive errors are counted and logged; they never
    /// end the loop, since librdkafka recovers from broker outages by itself.
    pub async fn run(mut self, dispatch: Arc<dyn Dispatch>, shutdown: CancellationToken) {
        dispatch.watch(&self.starts);
        let joined = Arc::new(AtomicBool::new(false));
        let checker = tokio::spawn(
            Checks {
                dispatch: dispatch.clone(),
                consumer: self.consumer.clone(),
                watcher: self.watcher.clone(),
                assigned: self.assigned.clone(),
                interval: self.check_interval,
                metrics: self.metrics.clone(),
                readiness: self.readiness.clone(),
                progress: self.progress.clone(),
                joined: joined.clone(),
            }
            .run(shutdown.clone()),
        );
        let mut joins = Joins { since: Instant::now() };
        let mut tick = tokio::time::interval(JOIN_CHECK);
        let consumer = self.consumer.clone();
        self.settle(&joined);
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = consumer.recv() => m,
                _ = tick.tick(), if !self.joining.is_empty() => {
                    self.check_joining(&dispatch, &mut joins);
                    self.settle(&joined);
                    continue;
                }
            };
            match message {
                Ok(m) => {
                    if !self.joining.is_empty() && !self.join_step(&m, &dispatch, &mut joins) {
                        self.settle(&joined);
                        continue;
                    }
                    self.settle(&joined);
                    self.progress.dispatched(m.partition(), m.offset());
                    let mut record = to_record(&m, &self.topic);
                    drop(m);
                    if let Some(decoder) = &self.decoder {
                        // A schema seen for the first time is fetched (bounded); the partition
                        // waits for it once, not once per record.
                        decoder.prepare(&record).await;
                        decoder.decode(&mut record);
                    }
                    dispatch.dispatch(record);
                }
                Err(e) => self.metrics.kafka_error("consume", &e),
            }
            // A fetch hands over many records at once, and recv() is then always ready:
            // give the sessions on this worker their turn to drain, so a burst is spread
            // over the clients' queues instead of arriving in them all at once.
            tokio::task::consume_budget().await;
        }
        checker.abort();
    }

    /// Once every partition is joined, the source is ready (once).
    fn settle(&self, joined: &AtomicBool) {
        if self.joining.is_empty() && !joined.swap(true, Ordering::SeqCst) {
            self.readiness.set(true, "every partition joined");
        }
    }

    /// A record of a partition that may still be joining: whether to dispatch it.
    fn join_step(&mut self, m: &BorrowedMessage<'_>, dispatch: &Arc<dyn Dispatch>, joins: &mut Joins) -> bool {
        let p = m.partition();
        let Some(joining) = self.joining.get_mut(&p) else { return true };
        match joining.record(m.offset()) {
            Step::Confirmed => {
                self.joined(p, dispatch);
                false
            }
            Step::Joined => {
                self.joined(p, dispatch);
                true
            }
            Step::SeekBack(to) => {
                tracing::info!(topic = %self.topic, partition = p, start = joining.at, served = m.offset(), seek = to, "the broker skipped records before the start: reading from further back");
                self.seek(p, to, joins);
                false
            }
        }
    }

    /// Every few milliseconds while some partition is joining: a position past its start
    /// with nothing served joins it; a read served nothing for a while steps back.
    fn check_joining(&mut self, dispatch: &Arc<dyn Dispatch>, joins: &mut Joins) {
        let positions = match self.consumer.position() {
            Ok(p) => p,
            Err(e) => return self.metrics.kafka_error("position", &e),
        };
        let starved = joins.since.elapsed() >= self.starved_after;
        let mut done = Vec::new();
        let mut seeks = Vec::new();
        for (&p, joining) in self.joining.iter_mut() {
            let position = positions.find_partition(&self.topic, p).map(|e| e.offset());
            match position {
                Some(Offset::Offset(at)) if joining.passed(at) => done.push(p),
                _ if starved => {
                    if let Some(to) = joining.starved() {
                        seeks.push((p, to));
                    }
                }
                _ => {}
            }
        }
        for p in done {
            self.joined(p, dispatch);
        }
        for (p, to) in seeks {
            tracing::info!(topic = %self.topic, partition = p, seek = to, "nothing served at the start: reading from further back");
            self.seek(p, to, joins);
        }
    }

    fn seek(&self, partition: i32, to: i64, joins: &mut Joins) {
        joins.since = Instant::now();
        // Zero: asynchronous, never blocking this task; records fetched for the old
        // position are discarded by librdkafka.
        if let Err(e) = self.consumer.seek(&self.topic, partition, Offset::Offset(to), Duration::ZERO) {
            self.metrics.kafka_error("seek", &e);
        }
    }

    fn joined(&mut self, partition: i32, dispatch: &Arc<dyn Dispatch>) {
        if self.joining.remove(&partition).is_some() {
            tracing::debug!(topic = %self.topic, partition, "partition joined");
            dispatch.joined(partition);
        }
    }
}

/// The clock of the joining checks.
struct Joins {
    /// The last seek (or the start): how long the current read has gone unserved.
    since: Instant,
}

fn to_record(m: &BorrowedMessage<'_>, topic: &Arc<str>) -> Record {
    let headers = m
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key.to_owned(), h.value.map(Bytes::copy_from_slice))).collect())
        .unwrap_or_default();
    Record {
        topic: topic.clone(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis(),
        key: m.key().map(Bytes::copy_from_slice),
        value: m.payload().map(Bytes::copy_from_slice),
        headers,
        decoded: None,
    }
}

/// The partition ids of `topic`; `Ok(None)` when the broker says it does not exist.
async fn partitions(
    consumer: &Arc<Watcher>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<BTreeSet<i32>>, KafkaError> {
    let c = consumer.clone();
    let name = topic.to_owned();
    // fetch_metadata blocks its thread for up to `timeout`.
    let metadata = tokio::task::spawn_blocking(move || c.fetch_metadata(Some(&name), timeout))
        .await
        .map_err(|_| KafkaError::MetadataFetch(RDKafkaErrorCode::Fail))??;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if t.error().is_some() {
        return Ok(None);
    }
    Ok(Some(t.partitions().iter().map(|p| p.id()).collect()))
}

/// The offsets of `partitions` at `at`: `End` gives the high watermarks, `Beginning` the
/// first offsets, `Offset(ms)` the first record at or after that time (-1 when none is).
/// One ListOffsets request per leader, not one per partition.
async fn offsets(
    consumer: &Arc<Watcher>,
    topic: &str,
    partitions: &[i32],
    at: Offset,
    timeout: Duration,
) -> Result<Vec<(i32, i64)>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, at)?;
    }
    let c = consumer.clone();
    // offsets_for_times blocks its thread for up to `timeout`; for the special offsets it
    // sends ListOffsets with -1 (latest) or -2 (earliest), as the Kafka protocol defines.
    let found = tokio::task::spawn_blocking(move || c.offsets_for_times(tpl, timeout))
        .await
        .map_err(|_| KafkaError::OffsetFetch(RDKafkaErrorCode::Fail))??;
    let mut out = Vec::with_capacity(partitions.len());
    for e in found.elements() {
        if let Some(error) = e.error().err() {
            return Err(error);
        }
        let offset = match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        };
        out.push((e.partition(), offset));
    }
    Ok(out)
}

/// The broker checks, every check interval.
struct Checks {
    dispatch: Arc<dyn Dispatch>,
    consumer: Arc<KafkaConsumer>,
    watcher: Arc<Watcher>,
    assigned: BTreeSet<i32>,
    interval: Duration,
    metrics: Metrics,
    readiness: Readiness,
    progress: Progress,
    /// Every partition's start is confirmed: only then does an answer make it ready.
    joined: Arc<AtomicBool>,
}

impl Checks {
    /// Every interval: asks the broker for the topic's partitions and their high
    /// watermarks. An answer makes the source ready, assigns any new partition and
    /// updates the lag (and stuck partitions); no answer makes it not ready.
    async fn run(self, shutdown: CancellationToken) {
        let Checks { dispatch, consumer, watcher, mut assigned, interval, metrics, readiness, progress, joined } = self;
        let topic = progress.topic().to_owned();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let timeout = interval.max(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match partitions(&watcher, &topic, timeout).await {
                Ok(Some(now)) => {
                    let new: Vec<i32> = now.difference(&assigned).copied().collect();
                    if !new.is_empty() {
                        let mut tpl = TopicPartitionList::new();
                        for &p in &new {
                            let _ = tpl.add_partition_offset(&topic, p, Offset::Beginning);
                        }
                        // Watched before they are assigned, so their first record finds them
                        // watched. Everything in a new partition is new: from its first
                        // offset, where nothing can have been skipped.
                        let watches: Vec<Watch> =
                            new.iter().map(|&p| Watch { partition: p, next: 0, joined: true }).collect();
                        dispatch.watch(&watches);
                        match consumer.incremental_assign(&tpl) {
                            Ok(()) => {
                                tracing::info!(topic = %topic, partitions = ?new, "assigned new partitions");
                                for &p in &new {
                                    progress.start(p, 0);
                                }
                                assigned.extend(new);
                            }
                            Err(e) => metrics.kafka_error("assign", &e),
                        }
                    }
                    if joined.load(Ordering::SeqCst) {
                        readiness.set(true, "broker answered");
                    }
                    let ids: Vec<i32> = assigned.iter().copied().collect();
                    match offsets(&watcher, &topic, &ids, Offset::End, timeout).await {
                        Ok(high) => progress.watermarks(&high),
                        Err(e) => metrics.kafka_error("watermarks", &e),
                    }
                }
                Ok(None) => {
                    metrics.kafka_error("metadata", &format_args!("topic {topic:?} no longer exists"));
                    readiness.set(false, "topic missing");
                }
                Err(e) => {
                    metrics.kafka_error("metadata", &e);
                    readiness.set(false, "broker not answering");
                }
            }
        }
    }
}
