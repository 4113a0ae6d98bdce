//! Every metric Sluice exports, by name, and the failure events that write a log line and
//! count a metric together (so neither is ever forgotten without the other).
//!
//! Exposed at `GET /metrics` in the Prometheus text format.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Label = [(&'static str, &'static str); 1];
type PartitionLabel = [(&'static str, String); 2];
type TopicLabel = [(&'static str, String); 1];

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
    /// Records and bytes held for resume and `?last=`.
    pub replay_buffer_records: Gauge,
    pub replay_buffer_bytes: Gauge,
    /// Clients shed because the gateway-wide bound on queued bytes was reached.
    pub queue_bound_sheds: Counter,
    /// Partitions of `input` that make no progress while records wait in them.
    pub stuck_partitions: Gauge,
    pub partition_stalls: Counter,
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
    /// Admin API requests by outcome (`ok`, `client_error`, `unauthorized`, `not_found`).
    admin_requests: Family<Label, Counter>,
    /// Keys with at least one subscriber, and clients on `/*`.
    pub subscribed_keys: Gauge,
    pub wildcard_clients: Gauge,
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
        let mut r = Registry::with_prefix("sluice");
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
            replay_buffer_bytes: Gauge::default(),
            queue_bound_sheds: Counter::default(),
            stuck_partitions: Gauge::default(),
            partition_stalls: Counter::default(),
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
            subscribed_keys: Gauge::default(),
            wildcard_clients: Gauge::default(),
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
        r.register("subscribed_keys", "Keys with at least one subscriber", m.subscribed_keys.clone());
        r.register("wildcard_clients", "Clients subscribed to every record", m.wildcard_clients.clone());
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
        Metrics { registry: Arc::new(r), ..m }
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
    pub fn produce_refused(&self, topic: &str, client: &crate::client::Client, error: &dyn std::fmt::Display) {
        if let Some(skipped) = self.produce_log.admit(1) {
            tracing::warn!(topic, client = %client.id, %error, similar_failures_not_logged = skipped, "client message or event refused: producer buffer full");
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

    pub fn admin_request(&self, outcome: &'static str) {
        self.admin_requests.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub fn upgrades_refused(&self, reason: &'static str) -> u64 {
        self.upgrades_refused.get_or_create(&[("reason", reason)]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_failure_is_logged_once_a_period_with_the_count_left_out() {
        let t = Throttle::default();
        assert_eq!(t.admit(15), Some(0));
        for _ in 0..5 {
            assert_eq!(t.admit(15), None);
        }
        // Fourteen seconds later (simulated by rewinding the clock it last logged at).
        t.last_second.fetch_sub(14, Ordering::Relaxed);
        assert_eq!(t.admit(15), None);
        t.last_second.fetch_sub(1, Ordering::Relaxed);
        assert_eq!(t.admit(15), Some(6));
    }

    #[test]
    fn each_kind_of_failure_has_its_own_throttle() {
        let t = Throttles::default();
        assert_eq!(t.admit("consume", 15), Some(0));
        assert_eq!(t.admit("consume", 15), None);
        assert_eq!(t.admit("metadata", 15), Some(0));
    }

    #[test]
    fn rendered_names_carry_the_prefix_and_counter_suffix() {
        let m = Metrics::new();
        m.records_consumed.inc_by(3);
        m.record_skipped("tombstone");
        let text = m.render();
        assert!(text.contains("sluice_records_consumed_total 3"), "{text}");
        assert!(text.contains("sluice_records_skipped_total{reason=\"tombstone\"} 1"), "{text}");
        assert!(text.contains("sluice_connections 0"), "{text}");
        assert!(!text.contains("cluster"), "cluster metrics without a cluster: {text}");
        assert!(Metrics::clustered().render().contains("sluice_cluster_up 0"));
    }
}
