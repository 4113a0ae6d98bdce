//! Where what clients do goes: each client message to the `output` topic, each connect,
//! disconnect and message as a JSON event to the `events` topic and to the event webhook
//! (`webhook`; each when configured), and every event to the in-memory feed that
//! `GET /api/events` streams.
//!
//! Producing never waits: records are handed to librdkafka's bounded queue, delivery is
//! reported back asynchronously, and a full queue refuses the record with a log line and
//! a metric. Reading from a client therefore never blocks delivery to it.

pub mod webhook;

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::Message as _;
use tokio::sync::broadcast;

use crate::client::subscriber::Subscriber;
use crate::client::Client;
use crate::metrics::Metrics;
use crate::record::Text;
use crate::source::kafka::{KafkaSettings, Scope};

use self::webhook::Webhook;

/// Events kept for feed subscribers that fall behind; older ones are skipped for them.
const FEED_BACKLOG: usize = 1024;

/// A cheap-to-clone handle on the outbound flows.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

struct Shared {
    kafka: Option<KafkaOut>,
    feed: broadcast::Sender<Arc<str>>,
    metrics: Metrics,
    /// Set once at start-up, when `--events-url` is.
    webhook: OnceLock<Webhook>,
}

struct KafkaOut {
    producer: ThreadedProducer<ProduceContext>,
    /// The streamed topic, for records published through the admin API.
    input: String,
    output: Option<String>,
    events: Option<String>,
}

/// Counts deliveries and failures per topic, and routes librdkafka's logs into tracing.
struct ProduceContext {
    metrics: Metrics,
}

impl ClientContext for ProduceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        crate::source::kafka::forward_log(&self.metrics, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.kafka_error("producer", &format_args!("{error}: {reason}"));
    }
}

impl ProducerContext for ProduceContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => self.metrics.produced(m.topic()),
            Err((e, m)) => self.metrics.produce_failed(m.topic(), e),
        }
    }
}

/// What happened to a client, as an event.
pub enum Event<'a> {
    Connect,
    Disconnect {
        code: u16,
        reason: &'a str,
    },
    Message {
        data: &'a [u8],
        text: bool,
    },
    /// A multiplexed connection opened a subscription: as the registry shows it.
    Subscribe {
        subscriber: &'a Subscriber,
    },
    /// A multiplexed connection closed one of its subscriptions.
    Unsubscribe {
        id: &'a str,
    },
}

impl Outbox {
    /// Events go to the in-memory feed only.
    pub fn memory(metrics: Metrics) -> Outbox {
        Outbox {
            shared: Arc::new(Shared {
                kafka: None,
                feed: broadcast::channel(FEED_BACKLOG).0,
                metrics,
                webhook: OnceLock::new(),
            }),
        }
    }

    /// Client messages and events also go to Kafka, to the topics configured; published
    /// records go to `input`.
    pub fn kafka(cfg: &KafkaSettings, metrics: Metrics) -> Result<Outbox, KafkaError> {
        let kafka = {
            let buffer = cfg.produce_buffer.to_string();
            let config = crate::source::kafka::client_config(
                cfg,
                &[("enable.idempotence", "true"), ("linger.ms", "5"), ("queue.buffering.max.messages", &buffer)],
                Scope::Producer,
            );
            let producer: ThreadedProducer<ProduceContext> =
                config.create_with_context(ProduceContext { metrics: metrics.clone() })?;
            Some(KafkaOut {
                producer,
                input: cfg.topics.first().cloned().unwrap_or_default(),
                output: cfg.output.clone(),
                events: cfg.events.clone(),
            })
        };
        Ok(Outbox {
            shared: Arc::new(Shared {
                kafka,
                feed: broadcast::channel(FEED_BACKLOG).0,
                metrics,
                webhook: OnceLock::new(),
            }),
        })
    }

    /// Every event from now on also goes to the webhook.
    pub fn attach_webhook(&self, webhook: Webhook) {
        // Set once, at start-up: a second call changes nothing.
        let _ = self.shared.webhook.set(webhook);
    }

    /// A live feed of every event as JSON text.
    pub fn feed(&self) -> broadcast::Receiver<Arc<str>> {
        self.shared.feed.subscribe()
    }

    /// Reports an event: to the feed, to `events`, to the webhook, and for messages to
    /// `output`. The JSON is built only when someone will read it (a feed subscriber, an
    /// `events` topic or the webhook).
    pub fn emit(&self, client: &Client, event: Event<'_>) {
        let kafka = self.shared.kafka.as_ref();
        let events_topic = kafka.and_then(|k| k.events.as_deref());
        let webhook = self.shared.webhook.get();
        if self.shared.feed.receiver_count() > 0 || events_topic.is_some() || webhook.is_some() {
            let json = event_json(client, &event);
            // A subscriber may have left since the count: not an error.
            let _ = self.shared.feed.send(Arc::from(json.as_str()));
            if let (Some(kafka), Some(topic)) = (kafka, events_topic) {
                self.produce(kafka, topic, client, json.as_bytes(), false);
            }
            if let Some(webhook) = webhook {
                webhook.push(&client.id, json, matches!(event, Event::Message { .. }));
            }
        }
        if let (Event::Message { data, .. }, Some(kafka)) = (&event, kafka) {
            if let Some(topic) = &kafka.output {
                self.produce(kafka, topic, client, data, true);
            }
        }
    }

    fn produce(&self, kafka: &KafkaOut, topic: &str, client: &Client, payload: &[u8], headers: bool) {
        let mut record = BaseRecord::to(topic).key(client.id.as_bytes()).payload(payload);
        let key = if headers { client.key() } else { None };
        if headers {
            record = record.headers(
                OwnedHeaders::new()
                    // Null for a client on `/`: its subscriptions say what it reads.
                    .insert(Header { key: "sluice-key", value: key.as_deref().map(str::as_bytes) })
                    .insert(Header { key: "sluice-user", value: client.user.as_deref().map(str::as_bytes) }),
            );
        }
        if let Err((e, _)) = kafka.producer.send(record) {
            self.shared.metrics.produce_refused(topic, &client.id, &e);
        }
    }

    /// Produces a record to `input`, as if from the source (admin API publish).
    pub fn publish(&self, key: &[u8], value: &[u8]) -> Result<(), KafkaError> {
        let Some(kafka) = &self.shared.kafka else { return Ok(()) };
        kafka.producer.send(BaseRecord::<[u8], [u8]>::to(&kafka.input).key(key).payload(value)).map_err(|(e, _)| e)
    }

    /// Waits (bounded) for buffered records to reach Kafka, at shutdown.
    pub fn flush(&self, within: std::time::Duration) {
        if let Some(kafka) = &self.shared.kafka {
            if let Err(e) = kafka.producer.flush(within) {
                self.shared.metrics.kafka_error("flush", &e);
            }
        }
    }
}

fn event_json(client: &Client, event: &Event<'_>) -> String {
    let mut v = serde_json::json!({
        "type": match event {
            Event::Connect => "connect",
            Event::Disconnect { .. } => "disconnect",
            Event::Message { .. } => "message",
            Event::Subscribe { .. } => "subscribe",
            Event::Unsubscribe { .. } => "unsubscribe",
        },
        "replyId": &*client.id,
        "key": client.key(),
        "user": client.user,
        "remoteAddr": client.remote.to_string(),
        "at": rfc3339(SystemTime::now()),
    });
    match event {
        Event::Connect => {}
        Event::Subscribe { subscriber } => v["subscription"] = subscriber.to_json(),
        Event::Unsubscribe { id } => v["id"] = (*id).into(),
        Event::Disconnect { code, reason } => {
            v["code"] = (*code).into();
            v["reason"] = (*reason).into();
        }
        Event::Message { data, text } => {
            // A binary frame stays marked binary even when its bytes are UTF-8.
            let data = if *text { Text::of(data) } else { Text::base64(data) };
            let (data, encoding) = (data.as_str(), data.encoding());
            v["data"] = data.into();
            if let Some(e) = encoding {
                v["encoding"] = e.into();
            }
        }
    }
    v.to_string()
}

pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
