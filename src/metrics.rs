//! Every metric Sluice exports, by name, and the failure events that write a log line and
//! count a metric together (so neither is ever forgotten without the other).
//!
//! Exposed at `GET /metrics` in the Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Label = [(&'static str, &'static str); 1];
type PartitionLabel = [(&'static str, String); 2];
type TopicLabel = [(&'static str, String); 1];

/// Lets a failure that repeats for every message (Kafka away: each client message refused
/// or undelivered) reach the log at most once a second, with the number left out since;
/// the counters still count every one.
#[derive(Default)]
struct Throttle {
    last_second: AtomicU64,
    skipped: AtomicU64,
}

impl Throttle {
    /// `Some(skipped since the last line)` when this occurrence may be logged.
    fn admit(&self) -> Option<u64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let last = self.last_second.load(Ordering::Relaxed);
        if now > last && self.last_second.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            Some(self.skipped.swap(0, Ordering::Relaxed))
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

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
    /// Upgrade requests refused, by reason.
    auth_failures: Family<Label, Counter>,
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
    produce_log: Arc<Throttle>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
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
            auth_failures: Family::default(),
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
            produce_log: Arc::default(),
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
        r.register("auth_failures", "Upgrade requests refused, by reason", m.auth_failures.clone());
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

    /// An upgrade refused: one debug line (these are routine and attacker-driven, so not
    /// louder) and the counter.
    pub fn auth_failed(&self, reason: &'static str, remote: std::net::SocketAddr) {
        tracing::debug!(%remote, reason, "upgrade refused");
        self.auth_failures.get_or_create(&[("reason", reason)]).inc();
    }

    /// A Kafka client error: one warning and the counter.
    pub fn kafka_error(&self, kind: &'static str, error: &dyn std::fmt::Display) {
        tracing::warn!(kind, %error, "kafka error");
        self.kafka_errors.get_or_create(&[("kind", kind)]).inc();
    }

    pub fn produced(&self, topic: &str) {
        self.produced.get_or_create(&[("topic", topic.to_owned())]).inc();
    }

    /// Kafka did not take a record: one warning and the counter.
    pub fn produce_failed(&self, topic: &str, error: &dyn std::fmt::Display) {
        if let Some(skipped) = self.produce_log.admit() {
            tracing::warn!(topic, %error, similar_failures_not_logged = skipped, "record not delivered to Kafka");
        }
        self.produce_errors.get_or_create(&[("topic", topic.to_owned())]).inc();
    }

    /// The producer refused a record (its buffer is full: Kafka slow or away).
    pub fn produce_refused(&self, topic: &str, client: &crate::client::Client, error: &dyn std::fmt::Display) {
        if let Some(skipped) = self.produce_log.admit() {
            tracing::warn!(topic, client = %client.id, %error, similar_failures_not_logged = skipped, "client message or event refused: producer buffer full");
        }
        self.produce_refused.get_or_create(&[("topic", topic.to_owned())]).inc();
    }

    pub fn admin_request(&self, outcome: &'static str) {
        self.admin_requests.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub fn auth_failures(&self, reason: &'static str) -> u64 {
        self.auth_failures.get_or_create(&[("reason", reason)]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_failure_is_logged_once_a_second_with_the_count_left_out() {
        let t = Throttle::default();
        assert_eq!(t.admit(), Some(0));
        for _ in 0..5 {
            assert_eq!(t.admit(), None);
        }
        // A second later (simulated by rewinding the clock it last logged at).
        t.last_second.fetch_sub(1, Ordering::Relaxed);
        assert_eq!(t.admit(), Some(5));
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
    }
}
