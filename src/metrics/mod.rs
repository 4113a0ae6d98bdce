//! Every metric Sluice exports, by name, and the failure events that write a log line and
//! count a metric together (so neither is ever forgotten without the other).
//!
//! Exposed at `GET /metrics` in the Prometheus text format: Sluice's own metrics prefixed
//! `sluice_`, and the standard `process_*` ones read from `/proc` at each scrape.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Label = [(&'static str, &'static str); 1];
type PartitionLabel = [(&'static str, String); 2];
type TopicLabel = [(&'static str, String); 1];
/// `route` (the matched pattern, never the path) and `outcome`.
type RouteLabel = [(&'static str, String); 2];
type Buckets = fn() -> Histogram;

/// Upper bounds, in seconds, of the admin API latency buckets: most answers take well under
/// a millisecond; listing a hundred thousand clients takes tens of milliseconds; a request
/// for a client on another replica of a cluster waits up to 2 s for that replica's answer.
const ADMIN_LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn admin_latency_histogram() -> Histogram {
    Histogram::new(ADMIN_LATENCY_BUCKETS)
}

/// The commit Sluice was built from, when `build.rs` could ask git for it.
const COMMIT: Option<&str> = option_env!("SLUICE_COMMIT");

/// Lets a failure that repeats (Kafka away: each client message refused, each reconnect
/// attempt failed; a scanner hammering the port) reach the log at most once per period,
/// with the number left out since; the counters still count every one.
#[derive(Default)]
pub struct Throttle {
    last_second: AtomicU64,
    skipped: AtomicU64,
}

impl Throttle {
    /// `Some(skipped since the last line)` when this occurrence may be logged: the first
    /// one, then the first one at least `period_secs` after the last logged.
    pub fn admit(&self, period_secs: u64) -> Option<u64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let last = self.last_second.load(Ordering::Relaxed);
        if (last == 0 || now >= last + period_secs)
            && self.last_second.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            Some(self.skipped.swap(0, Ordering::Relaxed))
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// One throttle per kind of failure, so a flood of one kind does not hide another.
#[derive(Default)]
struct Throttles(Mutex<HashMap<String, Arc<Throttle>>>);

impl Throttles {
    fn admit(&self, kind: &str, period_secs: u64) -> Option<u64> {
        let throttle = {
            let mut map = self.0.lock();
            match map.get(kind) {
                Some(t) => t.clone(),
                None => map.entry(kind.to_owned()).or_default().clone(),
            }
        };
        throttle.admit(period_secs)
    }
}

/// Seconds between log lines of one repeating Kafka failure (an outage is one line per
/// this, with a count, instead of one per reconnect attempt).
const KAFKA_LOG_PERIOD: u64 = 15;
/// A decode failure logged: its topic, schema id and reason.
type DecodeLogged = (String, Option<u32>, &'static str);

/// Distinct (topic, schema id, reason) decode failures logged at most.
const DECODE_LOG_IDS: usize = 10_000;
/// Seconds between log lines of refused upgrades of one reason.
const REFUSAL_LOG_PERIOD: u64 = 10;

/// The gateway's metrics. Cheap to clone: every metric is a handle on shared atomics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Clients connected now.
    pub connections: Gauge,
    /// Clients accepted since start.
    pub connections_opened: Counter,
    /// Records read from the source (Kafka or the embedded stream).
    pub records_consumed: Counter,
    /// Records not delivered to anyone, by reason (`tombstone`).
    records_skipped: Family<Label, Counter>,
    /// Frames and bytes written to client sockets.
    pub frames_sent: Counter,
    pub bytes_sent: Counter,
    /// Frames dropped for clients whose queue was full, under the `drop` policy.
    pub frames_dropped: Counter,
    /// Clients closed with 1008 because their queue was full.
    pub slow_consumer_disconnects: Counter,
    /// Upgrade requests refused, by reason (authentication, origin, connection limit…).
    upgrades_refused: Family<Label, Counter>,
    /// Connections closed for not sending a complete request head (or TLS handshake) in time.
    pub request_timeouts: Counter,
    /// Bytes of records held for clients, all clients together (each record once, however
    /// many queues hold it), beyond what the replay buffer holds.
    pub queued_bytes: Gauge,
    /// Time from a record's timestamp to its frame reaching a client's socket (the first
    /// record of each batch written): the end-to-end delay a client sees.
    pub record_age_seconds: Histogram,
    /// Time to hand one record to every subscriber's queue.
    pub fanout_seconds: Histogram,
    /// Records and bytes held for resume and `?last=`.
    pub replay_buffer_records: Gauge,
    pub replay_buffer_bytes: Gauge,
    /// Clients shed because the gateway-wide bound on queued bytes was reached.
    pub queue_bound_sheds: Counter,
    /// Partitions of `input` that make no progress while records wait in them.
    pub stuck_partitions: Gauge,
    pub partition_stalls: Counter,
    /// Times the live stream of a partition skipped offsets (transaction markers,
    /// compaction, a position reset after retention passed it): resumes across such a jump
    /// read it from Kafka rather than trust memory.
    pub offset_jumps: Counter,
    /// TLS certificate reloads (SIGHUP), by outcome.
    tls_reloads: Family<Label, Counter>,
    /// Clients that subscribed with a cursor, by how it was served (`memory`, `kafka`,
    /// and `incomplete` when part of what followed it was gone).
    resumes: Family<Label, Counter>,
    /// Records behind the end of each consumed partition (`input`, `replies`), as librdkafka last reported.
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    /// Kafka client errors, by kind.
    kafka_errors: Family<Label, Counter>,
    /// 1 while the source is consuming, else 0 (the same truth as /readyz).
    pub source_up: Gauge,
    /// Client connections that ended on a socket error rather than a close.
    pub session_errors: Counter,
    /// Accept calls that failed (for example out of file descriptors).
    pub accept_errors: Counter,
    /// Messages received from clients.
    pub client_messages: Counter,
    /// Records Kafka acknowledged, failed to take, or that were refused before sending
    /// (the producer's buffer was full), by topic.
    produced: Family<TopicLabel, Counter>,
    produce_errors: Family<TopicLabel, Counter>,
    produce_refused: Family<TopicLabel, Counter>,
    /// Records of `replies` delivered to their client, and those for no connected client.
    pub replies_delivered: Counter,
    pub replies_unknown: Counter,
    /// Admin API requests by outcome (`ok`, `client_error`, `unauthorized`, `not_found`,
    /// `unavailable`, `server_error`), and their latency by route and outcome.
    admin_requests: Family<Label, Counter>,
    admin_request_duration: Family<RouteLabel, Histogram, Buckets>,
    /// Keys with at least one subscriber, and clients on `/*`.
    pub subscribed_keys: Gauge,
    pub wildcard_clients: Gauge,
    /// Subscriptions of multiplexed connections now.
    pub subscriptions: Gauge,
    /// Connections closed because their token expired (4001).
    pub tokens_expired: Counter,
    /// `refresh` frames, by outcome (`ok`, `invalid`, `other_user`, `earlier`).
    refreshes: Family<Label, Counter>,
    /// Fetches of the identity provider's key set (`--jwks-url`), by outcome (`ok`, `error`).
    jwks_fetches: Family<Label, Counter>,
    /// Events the webhook's backend took, events sent again after a failure, and events
    /// dropped (`full`: its queue was; `refused`: the backend refused them with a 4xx).
    webhook_events: Counter,
    /// Decisions of the connect and subscribe proxies, by proxy and outcome (`allow`,
    /// `deny`, `unavailable`).
    proxy_decisions: Family<[(&'static str, &'static str); 2], Counter>,
    webhook_retries: Counter,
    webhook_dropped: Family<Label, Counter>,
    /// Seconds each webhook POST took, whatever its outcome.
    webhook_latency: Histogram,
    /// Seconds each proxy decision took, by proxy.
    proxy_latency: Family<Label, Histogram, Buckets>,
    /// Values decoded from their wire format (`--value-format`), by topic.
    decoded: Family<TopicLabel, Counter>,
    /// Values that could not be decoded (sent raw, with `decodeError`), by topic and reason.
    decode_failures: Family<[(&'static str, String); 2], Counter>,
    /// Schema ids whose failure was logged already: one line per id, not per record.
    decode_logged: Arc<Mutex<std::collections::HashSet<DecodeLogged>>>,
    /// `subscribe` frames refused, by reason (`bad_request`, `forbidden`, `unknown_topic`,
    /// `limit`).
    subscribes_refused: Family<Label, Counter>,
    /// Frames of multiplexed connections that were not a request Sluice understood, by
    /// reason (`not_json`, `binary`, `unknown_type`, `bad_field`, `unknown_id`).
    control_frames_refused: Family<Label, Counter>,
    /// With `--cluster` only: 1 while this replica's link to the cluster's Redis works
    /// (presence, directory and pub/sub), else 0.
    pub cluster_up: Gauge,
    /// With `--cluster` only: replicas alive at the last heartbeat, this one included.
    pub cluster_nodes: Gauge,
    /// With `--cluster` only: requests to other replicas, by outcome (`answered`,
    /// `timeout`, `unreachable`).
    cluster_requests: Family<Label, Counter>,
    /// With `--cluster` only: times this replica registered all its clients again, after
    /// Redis lost them (a restart) or missed some (an outage).
    pub cluster_resyncs: Counter,
    produce_log: Arc<Throttle>,
    logs: Arc<Throttles>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics of a gateway running alone.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// The metrics of a replica of a cluster: the cluster's own are exported too (a
    /// `sluice_cluster_up 0` on a gateway that has no cluster would only raise alarms).
    pub fn clustered() -> Self {
        Self::build(true)
    }

    fn build(cluster: bool) -> Self {
        let mut root = Registry::default();
        // The standard process metrics carry no prefix: dashboards look for `process_*`.
        root.register_collector(Box::new(ProcessCollector));
        let r = root.sub_registry_with_prefix("sluice");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            connections: Gauge::default(),
            connections_opened: Counter::default(),
            records_consumed: Counter::default(),
            records_skipped: Family::default(),
            frames_sent: Counter::default(),
            bytes_sent: Counter::default(),
            frames_dropped: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            upgrades_refused: Family::default(),
            request_timeouts: Counter::default(),
            queued_bytes: Gauge::default(),
            replay_buffer_records: Gauge::default(),
            record_age_seconds: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            fanout_seconds: Histogram::new(exponential_buckets(0.000_001, 4.0, 10)),
            replay_buffer_bytes: Gauge::default(),
            queue_bound_sheds: Counter::default(),
            stuck_partitions: Gauge::default(),
            partition_stalls: Counter::default(),
            offset_jumps: Counter::default(),
            tls_reloads: Family::default(),
            resumes: Family::default(),
            consumer_lag: Family::default(),
            kafka_errors: Family::default(),
            source_up: Gauge::default(),
            session_errors: Counter::default(),
            accept_errors: Counter::default(),
            client_messages: Counter::default(),
            produced: Family::default(),
            produce_errors: Family::default(),
            produce_refused: Family::default(),
            replies_delivered: Counter::default(),
            replies_unknown: Counter::default(),
            admin_requests: Family::default(),
            admin_request_duration: Family::new_with_constructor(admin_latency_histogram),
            subscribed_keys: Gauge::default(),
            wildcard_clients: Gauge::default(),
            subscriptions: Gauge::default(),
            tokens_expired: Counter::default(),
            refreshes: Family::default(),
            jwks_fetches: Family::default(),
            webhook_events: Counter::default(),
            proxy_decisions: Family::default(),
            webhook_retries: Counter::default(),
            webhook_dropped: Family::default(),
            // The backends answer within the same range as the admin API (a call past 10 s
            // has timed out): the same buckets.
            webhook_latency: admin_latency_histogram(),
            proxy_latency: Family::new_with_constructor(admin_latency_histogram),
            decoded: Family::default(),
            decode_failures: Family::default(),
            decode_logged: Arc::default(),
            subscribes_refused: Family::default(),
            control_frames_refused: Family::default(),
            cluster_up: Gauge::default(),
            cluster_nodes: Gauge::default(),
            cluster_requests: Family::default(),
            cluster_resyncs: Counter::default(),
            produce_log: Arc::default(),
            logs: Arc::default(),
        };
        r.register("connections", "Clients connected now", m.connections.clone());
        r.register("connections_opened", "Clients accepted since start", m.connections_opened.clone());
        r.register("records_consumed", "Records read from the source", m.records_consumed.clone());
        r.register("records_skipped", "Records delivered to nobody, by reason", m.records_skipped.clone());
        r.register("frames_sent", "Frames written to client sockets", m.frames_sent.clone());
        r.register("bytes_sent", "Payload bytes written to client sockets", m.bytes_sent.clone());
        r.register("frames_dropped", "Frames dropped for full client queues (drop policy)", m.frames_dropped.clone());
        r.register(
            "slow_consumer_disconnects",
            "Clients closed with 1008 because their queue was full",
            m.slow_consumer_disconnects.clone(),
        );
        r.register("upgrades_refused", "Upgrade requests refused, by reason", m.upgrades_refused.clone());
        r.register(
            "request_timeouts",
            "Connections closed for not sending a request head or TLS handshake in time",
            m.request_timeouts.clone(),
        );
        r.register(
            "queued_bytes",
            "Bytes of records held for clients beyond the replay buffer, each record counted once",
            m.queued_bytes.clone(),
        );
        r.register(
            "record_age_seconds",
            "Time from a record's timestamp to its frame reaching a client's socket",
            m.record_age_seconds.clone(),
        );
        r.register("fanout_seconds", "Time to hand one record to every subscriber's queue", m.fanout_seconds.clone());
        r.register(
            "replay_buffer_records",
            "Recent records held for resume and last=",
            m.replay_buffer_records.clone(),
        );
        r.register(
            "replay_buffer_bytes",
            "Bytes of recent records held for resume and last=",
            m.replay_buffer_bytes.clone(),
        );
        r.register(
            "queue_bound_sheds",
            "Clients shed because the gateway-wide bound on queued bytes was reached",
            m.queue_bound_sheds.clone(),
        );
        r.register("stuck_partitions", "Partitions making no progress while records wait", m.stuck_partitions.clone());
        r.register("partition_stalls", "Times a partition was found stuck", m.partition_stalls.clone());
        r.register(
            "offset_jumps",
            "Times the live stream of a partition skipped offsets (markers, compaction, a reset)",
            m.offset_jumps.clone(),
        );
        r.register("tls_reloads", "TLS certificate reloads, by outcome", m.tls_reloads.clone());
        r.register("resumes", "Clients that subscribed with a cursor, by how it was served", m.resumes.clone());
        r.register("consumer_lag", "Records behind the end of each consumed partition", m.consumer_lag.clone());
        r.register("kafka_errors", "Kafka client errors, by kind", m.kafka_errors.clone());
        r.register("source_up", "1 while the source is consuming", m.source_up.clone());
        r.register("session_errors", "Client connections ended by a socket error", m.session_errors.clone());
        r.register("accept_errors", "Failed accept calls", m.accept_errors.clone());
        r.register("client_messages", "Messages received from clients", m.client_messages.clone());
        r.register("produced", "Records acknowledged by Kafka, by topic", m.produced.clone());
        r.register("produce_errors", "Records Kafka failed to take, by topic", m.produce_errors.clone());
        r.register(
            "produce_refused",
            "Records refused because the producer buffer was full, by topic",
            m.produce_refused.clone(),
        );
        r.register("replies_delivered", "Replies delivered to their client", m.replies_delivered.clone());
        r.register("replies_unknown", "Replies for no connected client, dropped", m.replies_unknown.clone());
        r.register("admin_requests", "Admin API requests by outcome", m.admin_requests.clone());
        r.register(
            "admin_request_duration_seconds",
            "Admin API latency until the response head, by route pattern and outcome",
            m.admin_request_duration.clone(),
        );
        let build_info: Family<Vec<(&'static str, String)>, Gauge> = Family::default();
        let mut labels = vec![("version", env!("CARGO_PKG_VERSION").to_owned())];
        if let Some(commit) = COMMIT {
            labels.push(("commit", commit.to_owned()));
        }
        build_info.get_or_create(&labels).set(1);
        r.register("build_info", "Always 1; the labels say which build this is", build_info);
        r.register("subscribed_keys", "Keys with at least one subscriber", m.subscribed_keys.clone());
        r.register("wildcard_clients", "Clients subscribed to every record", m.wildcard_clients.clone());
        r.register("subscriptions", "Subscriptions of multiplexed connections now", m.subscriptions.clone());
        r.register("tokens_expired", "Connections closed at their token's expiry (4001)", m.tokens_expired.clone());
        r.register("token_refreshes", "refresh frames of multiplexed connections, by outcome", m.refreshes.clone());
        r.register("jwks_fetches", "Fetches of the identity provider's key set, by outcome", m.jwks_fetches.clone());
        r.register(
            "proxy_decisions",
            "Decisions of the connect and subscribe proxies, by proxy and outcome",
            m.proxy_decisions.clone(),
        );
        r.register("webhook_events", "Events the webhook's backend took", m.webhook_events.clone());
        r.register("webhook_retries", "Webhook batches sent again after a failure", m.webhook_retries.clone());
        r.register("webhook_dropped", "Webhook events dropped, by reason", m.webhook_dropped.clone());
        r.register("webhook_request_seconds", "Seconds each webhook POST took", m.webhook_latency.clone());
        r.register(
            "proxy_decision_seconds",
            "Seconds each connect or subscribe proxy decision took, by proxy",
            m.proxy_latency.clone(),
        );
        r.register("values_decoded", "Values decoded from their wire format, by topic", m.decoded.clone());
        r.register(
            "decode_failures",
            "Values that could not be decoded (sent raw with decodeError), by topic and reason",
            m.decode_failures.clone(),
        );
        r.register("subscribes_refused", "subscribe frames refused, by reason", m.subscribes_refused.clone());
        r.register(
            "control_frames_refused",
            "Frames of multiplexed connections that were not a request understood, by reason",
            m.control_frames_refused.clone(),
        );
        if cluster {
            r.register(
                "cluster_up",
                "1 while the link to the cluster's Redis works (presence, directory, pub/sub)",
                m.cluster_up.clone(),
            );
            r.register(
                "cluster_nodes",
                "Replicas alive at the last heartbeat, this one included",
                m.cluster_nodes.clone(),
            );
            r.register("cluster_requests", "Requests to other replicas, by outcome", m.cluster_requests.clone());
            r.register(
                "cluster_resyncs",
                "Times this replica registered all its clients again after Redis lost or missed some",
                m.cluster_resyncs.clone(),
            );
        }
        Metrics { registry: Arc::new(root), ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn record_skipped(&self, reason: &'static str) {
        self.records_skipped.get_or_create(&[("reason", reason)]).inc();
    }

    /// An upgrade refused: the counter, and an info line (never with credentials), at most
    /// one per reason every few seconds since refusals can come by the thousand.
    pub fn upgrade_refused(&self, reason: &'static str, remote: &dyn std::fmt::Display, path: &str) {
        if let Some(skipped) = self.logs.admit(reason, REFUSAL_LOG_PERIOD) {
            tracing::info!(%remote, reason, path, similar_refusals_not_logged = skipped, "upgrade refused");
        }
        self.upgrades_refused.get_or_create(&[("reason", reason)]).inc();
    }

    /// A Kafka client error: the counter, and a warning at most once per kind every
    /// `KAFKA_LOG_PERIOD` seconds with the number left out.
    pub fn kafka_error(&self, kind: &'static str, error: &dyn std::fmt::Display) {
        if let Some(skipped) = self.logs.admit(kind, KAFKA_LOG_PERIOD) {
            tracing::warn!(kind, %error, similar_errors_not_logged = skipped, "kafka error");
        }
        self.kafka_errors.get_or_create(&[("kind", kind)]).inc();
    }

    /// A line from librdkafka itself at warning or worse, throttled per facility like
    /// [`Metrics::kafka_error`] (it reports each failed reconnect of an outage).
    pub fn admit_kafka_log(&self, facility: &str) -> Option<u64> {
        self.logs.admit(&format!("librdkafka {facility}"), KAFKA_LOG_PERIOD)
    }

    /// The live stream of `partition` went from `expected` to `offset`: counted, and logged
    /// at most once a period (a transactional topic jumps at every commit marker).
    pub fn offset_jump(&self, partition: i32, expected: i64, offset: i64) {
        self.offset_jumps.inc();
        if let Some(skipped) = self.logs.admit("offset jump", KAFKA_LOG_PERIOD) {
            tracing::info!(
                partition,
                expected,
                offset,
                similar_jumps_not_logged = skipped,
                "the live stream skipped offsets: resumes across them are read from Kafka"
            );
        }
    }

    /// A `subscribe` frame refused: the counter, and a line at most once per reason and
    /// period (a client looping on a bad request is one line, with a count).
    pub fn subscribe_refused(&self, reason: &'static str, client: &str, error: &str) {
        if let Some(skipped) = self.logs.admit(&format!("subscribe:{reason}"), REFUSAL_LOG_PERIOD) {
            tracing::info!(client, reason, error, similar_refusals_not_logged = skipped, "subscribe refused");
        }
        self.subscribes_refused.get_or_create(&[("reason", reason)]).inc();
    }

    /// A frame of a multiplexed connection Sluice did not understand: the counter, and a
    /// line at most once per reason and period.
    pub fn control_frame_refused(&self, reason: &'static str, client: &str, error: &str) {
        if let Some(skipped) = self.logs.admit(&format!("control:{reason}"), REFUSAL_LOG_PERIOD) {
            tracing::info!(client, reason, error, similar_refusals_not_logged = skipped, "control frame refused");
        }
        self.control_frames_refused.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn refreshed(&self, outcome: &'static str) {
        self.refreshes.get_or_create(&[("outcome", outcome)]).inc();
    }

    /// A fetch of the identity provider's key set: counted, and a failure logged (fetches
    /// are at most one per 10 s, so are these lines).
    pub fn jwks_fetched(&self, error: Option<&str>) {
        match error {
            None => self.jwks_fetches.get_or_create(&[("outcome", "ok")]).inc(),
            Some(error) => {
                tracing::warn!(error, "cannot fetch the identity provider's key set: the keys known keep verifying");
                self.jwks_fetches.get_or_create(&[("outcome", "error")]).inc()
            }
        };
    }

    /// A decision of the `connect` or `subscribe` proxy; a backend that could not decide is
    /// logged (at most once per proxy and period).
    pub fn proxied(&self, proxy: &'static str, outcome: &'static str, error: Option<&str>, took: Duration) {
        self.proxy_decisions.get_or_create(&[("proxy", proxy), ("outcome", outcome)]).inc();
        self.proxy_latency.get_or_create(&[("proxy", proxy)]).observe(took.as_secs_f64());
        if let Some(error) = error {
            if let Some(skipped) = self.logs.admit(&format!("{proxy} proxy"), REFUSAL_LOG_PERIOD) {
                tracing::warn!(
                    proxy,
                    error,
                    similar_failures_not_logged = skipped,
                    "proxy cannot decide: refused with 503"
                );
            }
        }
    }

    /// How long a webhook POST took.
    pub fn webhook_latency(&self, took: Duration) {
        self.webhook_latency.observe(took.as_secs_f64());
    }

    /// A webhook answer that could not be read (its events were taken; its replies lost).
    pub fn webhook_bad_answer(&self, error: &str) {
        if let Some(skipped) = self.logs.admit("webhook answer", REFUSAL_LOG_PERIOD) {
            tracing::warn!(error, similar_answers_not_logged = skipped, "webhook answer not read: no replies sent");
        }
    }

    /// A batch of `events` the webhook's backend took.
    pub fn webhook_sent(&self, events: usize) {
        self.webhook_events.inc_by(events as u64);
    }

    /// A webhook batch that failed and will be sent again: a line at most once a period.
    pub fn webhook_failed(&self, error: &str) {
        self.webhook_retries.inc();
        if let Some(skipped) = self.logs.admit("webhook failed", REFUSAL_LOG_PERIOD) {
            tracing::warn!(error, similar_failures_not_logged = skipped, "webhook POST failed: sending again");
        }
    }

    /// Webhook events dropped: counted by reason, a line at most once per reason and period.
    pub fn webhook_dropped(&self, reason: &'static str, events: usize, error: &str) {
        self.webhook_dropped.get_or_create(&[("reason", reason)]).inc_by(events as u64);
        if let Some(skipped) = self.logs.admit(&format!("webhook dropped {reason}"), REFUSAL_LOG_PERIOD) {
            tracing::warn!(reason, events, error, similar_drops_not_logged = skipped, "webhook events dropped");
        }
    }

    /// Webhook events dropped so far, for tests.
    #[cfg(test)]
    pub fn webhook_dropped_total(&self) -> u64 {
        ["full", "refused"].iter().map(|r| self.webhook_dropped.get_or_create(&[("reason", *r)]).get()).sum()
    }

    /// A value decoded from its wire format.
    pub fn decoded(&self, topic: &str) {
        self.decoded.get_or_create(&[("topic", topic.to_owned())]).inc();
    }

    /// A value that could not be decoded: counted by reason, and logged once per topic,
    /// schema id and reason (a topic full of one bad schema is one line, not one a record).
    pub fn decode_failed(&self, topic: &str, reason: &'static str, schema: Option<u32>, error: &str) {
        self.decode_failures.get_or_create(&[("topic", topic.to_owned()), ("reason", reason.to_owned())]).inc();
        let first = {
            let mut logged = self.decode_logged.lock();
            // Corrupt bytes can name any schema id: the set stays bounded (past it, the
            // counter still counts; the log has said what kind of failure it is).
            logged.len() < DECODE_LOG_IDS && logged.insert((topic.to_owned(), schema, reason))
        };
        if first {
            tracing::warn!(topic, reason, schema, error, "a value could not be decoded: sent raw with decodeError");
        }
    }

    pub fn resumed(&self, how: &'static str) {
        self.resumes.get_or_create(&[("outcome", how)]).inc();
    }

    pub fn tls_reloaded(&self, ok: bool) {
        self.tls_reloads.get_or_create(&[("outcome", if ok { "ok" } else { "failed" })]).inc();
    }

    pub fn produced(&self, topic: &str) {
        self.produced.get_or_create(&[("topic", topic.to_owned())]).inc();
    }

    /// Kafka did not take a record: one warning and the counter.
    pub fn produce_failed(&self, topic: &str, error: &dyn std::fmt::Display) {
        if let Some(skipped) = self.produce_log.admit(1) {
            tracing::warn!(topic, %error, similar_failures_not_logged = skipped, "record not delivered to Kafka");
        }
        self.produce_errors.get_or_create(&[("topic", topic.to_owned())]).inc();
    }

    /// The producer refused a record (its buffer is full: Kafka slow or away).
    pub fn produce_refused(&self, topic: &str, client: &str, error: &dyn std::fmt::Display) {
        if let Some(skipped) = self.produce_log.admit(1) {
            tracing::warn!(topic, client, %error, similar_failures_not_logged = skipped, "client message or event refused: producer buffer full");
        }
        self.produce_refused.get_or_create(&[("topic", topic.to_owned())]).inc();
    }

    /// The link to the cluster's Redis went down or came back: the gauge, and one line per
    /// change (never one per failed attempt: callers report changes only).
    pub fn cluster_link(&self, up: bool, detail: &str) {
        self.cluster_up.set(i64::from(up));
        if up {
            tracing::info!(detail, "cluster link up: the admin API answers for every replica");
        } else {
            tracing::warn!(
                detail,
                "cluster link down: the admin API answers for this replica's clients only (partial), until Redis is back; clients and records are not affected"
            );
        }
    }

    pub fn cluster_request(&self, outcome: &'static str) {
        self.cluster_requests.get_or_create(&[("outcome", outcome)]).inc();
    }

    /// An admin API request answered: counted by outcome, timed by route and outcome.
    pub fn admin_request(&self, route: String, outcome: &'static str, took: Duration) {
        self.admin_requests.get_or_create(&[("outcome", outcome)]).inc();
        self.admin_request_duration
            .get_or_create(&[("route", route), ("outcome", outcome.to_owned())])
            .observe(took.as_secs_f64());
    }

    pub fn upgrades_refused(&self, reason: &'static str) -> u64 {
        self.upgrades_refused.get_or_create(&[("reason", reason)]).get()
    }
}

/// The process metrics of the Prometheus client libraries (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, …), read from `/proc/self` at each scrape so that they
/// cost nothing between scrapes. Written here rather than taken from a crate: the one made
/// for `prometheus-client` lags its releases. Elsewhere than Linux it reports nothing.
#[derive(Debug)]
struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    start_time_seconds: f64,
    threads: i64,
    open_fds: i64,
    max_fds: Option<i64>,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessStats::read() else { return Ok(()) };
        let counter = ConstCounter::new(p.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?)?;
        gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size in bytes", p.resident_bytes)?;
        gauge(&mut encoder, "process_virtual_memory_bytes", "Virtual memory size in bytes", p.virtual_bytes)?;
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            p.start_time_seconds,
        )?;
        gauge(&mut encoder, "process_threads", "Number of OS threads in the process", p.threads)?;
        gauge(&mut encoder, "process_open_fds", "Number of open file descriptors", p.open_fds)?;
        if let Some(max) = p.max_fds {
            gauge(&mut encoder, "process_max_fds", "Maximum number of open file descriptors", max)?;
        }
        Ok(())
    }
}

fn gauge<N>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: N) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl ProcessStats {
    #[cfg(target_os = "linux")]
    fn read() -> Option<ProcessStats> {
        // SAFETY: sysconf only reads a configuration value.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
        // The directory's own descriptor, open while it is read, is not the process's.
        let open_fds = (open_fds - 1).max(0);
        Self::parse(&stat, &boot, &limits, open_fds, u64::try_from(ticks).ok()?, u64::try_from(page).ok()?)
    }

    #[cfg(not(target_os = "linux"))]
    fn read() -> Option<ProcessStats> {
        None
    }

    /// From `/proc/self/stat`, `/proc/stat` (for the boot time) and `/proc/self/limits`.
    fn parse(stat: &str, boot: &str, limits: &str, open_fds: i64, ticks: u64, page: u64) -> Option<ProcessStats> {
        // The command name, in parentheses, may hold spaces and parentheses: fields are
        // counted from the last `)`. After it comes field 3 (state), so field n is at n - 3.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<i64>().ok();
        let ticks = ticks.max(1) as f64;
        let boot_time: i64 = boot.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
        let max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|soft| soft.parse().ok());
        Some(ProcessStats {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            threads: field(20)?,
            start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)?.saturating_mul(i64::try_from(page).ok()?),
            open_fds,
            max_fds,
        })
    }
}

#[cfg(test)]
mod tests;
