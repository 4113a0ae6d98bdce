//! Wiring: builds each part of the gateway from the [`Config`], in order — a hub and a
//! source for each topic, the registry, the sessions and who may open them, the admin surface — connects
//! the source, and serves on a listener it is given until a shutdown token it is given is
//! cancelled. `main` and the tests run exactly this. Nothing imports this module: each part
//! is handed only what it needs.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Admin;
use crate::session::admission::Gate;
use crate::session::{SessionSettings, Sessions, Subscriptions};

use crate::auth::proxy::Proxy;
use crate::auth::Authenticator;
use crate::client::SlowConsumerPolicy;
use crate::config::{Config, SourceConfig};
use crate::decode::{DecodeSetupError, Decoder, Registry as SchemaRegistry};
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::record::budget::Budget;
use crate::registry::cluster::{Cluster, ClusterError};
use crate::registry::local::Local;
use crate::registry::replies::ReplyRouter;
use crate::registry::{Clients, Registry};
use crate::server::{Listening, Tls, TlsError};
use crate::sink::webhook::{Reply, Webhook};
use crate::sink::Outbox;
use crate::source::kafka::{KafkaSource, KafkaSourceError, StartFrom};
use crate::source::memory::{self, MemoryStream};
use crate::source::Dispatch;
use crate::stream::history::History;
use crate::stream::hub::{Hub, StreamSettings};
use crate::stream::{Streams, Topic};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Kafka(#[from] KafkaSourceError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Decode(#[from] DecodeSetupError),
    #[error("{0}")]
    HttpClient(String),
    #[error("event webhook: {0}")]
    Webhook(String),
}

enum Source {
    // Boxed: a consumer's handles are large, and this enum is built once.
    Kafka { inputs: Vec<(Box<KafkaSource>, Hub)>, replies: Option<Box<KafkaSource>> },
    Memory { demo: bool, stream: MemoryStream },
}

/// A gateway whose source is connected, not yet serving.
pub struct Gateway {
    sessions: Sessions,
    gate: Arc<Gate>,
    admin: Admin,
    readiness: Readiness,
    source: Source,
    tls: Option<Tls>,
    max_pending: usize,
    header_timeout: Duration,
    slow_consumer: SlowConsumerPolicy,
    /// This replica's part in a cluster (`--cluster`): left when serving ends.
    cluster: Option<Arc<Cluster>>,
}

impl Gateway {
    /// Builds the gateway and connects its source. Fails before any port is bound when
    /// the broker cannot be reached, the topic does not exist, or TLS files are unusable.
    pub async fn start(config: &Config, shutdown: CancellationToken) -> Result<Gateway, StartError> {
        let metrics = if config.cluster.is_some() { Metrics::clustered() } else { Metrics::new() };
        let readiness = Readiness::new(metrics.clone());
        let budget = Budget::new(config.max_queued_bytes, metrics.queued_bytes.clone());
        let kafka = matches!(config.source, SourceConfig::Kafka(_));
        let hub = |tag: u32| {
            let stream = StreamSettings {
                tag,
                recent_bytes: config.replay_buffer_bytes,
                limits: crate::stream::replay::Limits { kafka, max_fetch: config.max_resume_records },
            };
            Hub::new(config.slow_consumer, metrics.clone(), budget.clone(), stream)
        };
        let tls = config.tls.as_ref().map(Tls::load).transpose()?;
        let (source, topics, memory, outbox, progress) = match &config.source {
            SourceConfig::Kafka(k) => {
                let registry =
                    config.schemas.registry.as_ref().map(|r| SchemaRegistry::new(r, metrics.clone())).transpose()?;
                let mut inputs = Vec::new();
                let mut topics = Vec::new();
                let mut progress = Vec::new();
                for name in &k.topics {
                    // Kafka offsets mean the same to every process reading the topic: its
                    // cursors are tagged with the topic's name.
                    let hub = hub(crate::record::position::topic_tag(name));
                    let formats = config.schemas.topics.get(name).cloned().unwrap_or_default();
                    let decoder = Decoder::new(name, formats, registry.clone(), metrics.clone())?;
                    let decoder = (!decoder.is_raw()).then_some(decoder);
                    let source = KafkaSource::connect(k, name, k.start, metrics.clone(), readiness.part(name))
                        .await?
                        .decoding(decoder.clone());
                    progress.push(source.progress());
                    let history = History::start(k, name, metrics.clone()).map_err(|e| match e {
                        crate::stream::history::HistoryError::Config(e) => KafkaSourceError::Config(e),
                    })?;
                    topics.push(Topic {
                        name: Arc::from(name.as_str()),
                        hub: hub.clone(),
                        history: Some(history),
                        decoder,
                    });
                    inputs.push((Box::new(source), hub));
                }
                let outbox = Outbox::kafka(k, metrics.clone()).map_err(KafkaSourceError::Config)?;
                let replies = match &k.replies {
                    // Replies are for clients connected now: start at the end.
                    Some(topic) => Some(Box::new(
                        KafkaSource::connect(
                            k,
                            topic,
                            StartFrom::Latest,
                            metrics.clone(),
                            Readiness::detached("replies"),
                        )
                        .await?,
                    )),
                    None => None,
                };
                (Source::Kafka { inputs, replies }, topics, None, outbox, progress)
            }
            SourceConfig::Memory { demo } => {
                // The embedded stream starts over with each process: its cursors carry a tag
                // of their own.
                let hub = hub(rand::random());
                let stream = MemoryStream::new(Arc::new(hub.clone()));
                let source = Source::Memory { demo: *demo, stream: stream.clone() };
                let topic = Topic { name: Arc::from(memory::TOPIC), hub, history: None, decoder: None };
                (source, vec![topic], Some(stream), Outbox::memory(metrics.clone()), Vec::new())
            }
        };
        let streams = Streams::new(topics);
        let hub = streams.default_topic().hub.clone();
        let node: Arc<str> = Arc::from(config.node_id.as_str());
        let registry = Registry::default();
        if let Some(settings) = &config.webhook {
            // The backend's replies go to clients of this replica: a `message` event is
            // posted by the replica its client is connected to.
            let router = ReplyRouter {
                registry: registry.clone(),
                hub: hub.clone(),
                metrics: metrics.clone(),
                policy: config.slow_consumer,
            };
            let reply: Reply = Arc::new(move |id: &str, body: Bytes| router.send(id, body));
            outbox.attach_webhook(Webhook::start(settings, metrics.clone(), reply).map_err(StartError::Webhook)?);
        }
        let embedded = memory.is_some();
        let local = Local::new(node.clone(), registry.clone(), hub.clone(), memory, outbox.clone());
        let (clients, cluster): (Arc<dyn Clients>, _) = match &config.cluster {
            None => (Arc::new(local), None),
            Some(c) => {
                let cluster = Arc::new(Cluster::start(c, local, metrics.clone()).await?);
                (cluster.clone(), Some(cluster))
            }
        };
        let auth = Arc::new(Authenticator::new(&config.auth, &metrics).map_err(StartError::HttpClient)?);
        // The identity provider's keys, fetched now so that the first client does not
        // wait for them (a provider that cannot be reached is logged, and tried again).
        tokio::spawn({
            let auth = auth.clone();
            async move { auth.prefetch().await }
        });
        let connect = match &config.connect_url {
            Some(url) => Some(Arc::new(Proxy::new("connect", url, metrics.clone()).map_err(StartError::HttpClient)?)),
            None => None,
        };
        let gate = Arc::new(Gate {
            auth: auth.clone(),
            connect,
            allowed_origins: config.allowed_origins.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            console_port: Arc::new(OnceLock::new()),
            slots: Arc::new(Semaphore::new(config.max_connections)),
            max_last: config.max_last,
            streams: streams.clone(),
            metrics: metrics.clone(),
        });
        let admin = Admin::new(crate::admin::Shared {
            clients,
            registry: registry.clone(),
            admin_token: config.admin.token.clone(),
            auth,
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            progress,
            outbox: outbox.clone(),
            embedded,
            shutdown: shutdown.clone(),
        });
        let expiries = crate::session::expiry::Expiries::start(metrics.clone());
        let subscribe_proxy = match &config.subscribe_url {
            Some(url) => Some(Arc::new(Proxy::new("subscribe", url, metrics.clone()).map_err(StartError::HttpClient)?)),
            None => None,
        };
        let sessions = Sessions::new(crate::session::Shared {
            streams,
            registry,
            metrics,
            outbox,
            settings: SessionSettings {
                welcome: config.welcome,
                queue: crate::client::QueueLimits { frames: config.queue_capacity, bytes: config.queue_bytes },
                ping_interval: config.ping_interval,
                shutdown_timeout: config.shutdown_timeout,
                max_message_size: config.max_message_size,
                stored_message_bytes: config.stored_message_bytes,
                max_subscriptions: config.max_subscriptions,
                max_last: config.max_last,
                close_at_expiry: config.close_at_expiry,
            },
            shutdown,
            tracker: TaskTracker::new(),
            node,
            auth: gate.auth.clone(),
            expiries,
            subscribe_proxy,
        });
        Ok(Gateway {
            sessions,
            gate,
            admin,
            readiness,
            source,
            tls,
            max_pending: config.max_pending_connections,
            header_timeout: config.header_timeout,
            slow_consumer: config.slow_consumer,
            cluster,
        })
    }

    /// The gateway's metrics, for what runs beside it (the TLS reload on SIGHUP).
    pub fn metrics(&self) -> &Metrics {
        &self.sessions.metrics
    }

    /// The TLS configuration, for reloading its files (SIGHUP).
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Serves until the shutdown token is cancelled, then drains: sessions flush their
    /// queues and close with 1001, all within the shutdown timeout. With `admin`, the admin
    /// API, metrics and console are served there instead of on `listener`.
    pub async fn serve(self, listener: TcpListener, admin: Option<TcpListener>) {
        let app = self.sessions;
        let subs = Subscriptions { gate: self.gate.clone(), sessions: app.clone() };
        let source_tasks: Vec<_> = match self.source {
            Source::Kafka { inputs, replies } => {
                if let Some(replies) = replies {
                    let router = ReplyRouter {
                        registry: app.registry.clone(),
                        hub: app.streams.default_topic().hub.clone(),
                        metrics: app.metrics.clone(),
                        policy: self.slow_consumer,
                    };
                    tokio::spawn(replies.run(Arc::new(router), app.shutdown.clone()));
                }
                inputs
                    .into_iter()
                    .map(|(input, hub)| {
                        let dispatch: Arc<dyn Dispatch> = Arc::new(hub);
                        tokio::spawn(input.run(dispatch, app.shutdown.clone()))
                    })
                    .collect()
            }
            Source::Memory { demo, stream } => {
                self.readiness.set(true, "embedded stream");
                let shutdown = app.shutdown.clone();
                vec![tokio::spawn(async move {
                    if demo {
                        memory::run_demo(stream, Duration::from_millis(500), shutdown).await;
                    }
                })]
            }
        };

        let listening = Listening {
            tls: self.tls,
            max_pending: self.max_pending,
            header_timeout: self.header_timeout,
            metrics: app.metrics.clone(),
            shutdown: app.shutdown.clone(),
            tracker: app.tracker.clone(),
        };
        // The console on an admin listener connects its WebSockets here.
        let subscriptions = listener.local_addr().unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let tls = listening.tls.is_some();
        if let Some(port) = admin.as_ref().and_then(|a| a.local_addr().ok()).map(|a| a.port()) {
            let _ = self.gate.console_port.set(port);
        }
        let admin_task = admin.map(|admin| {
            let router = crate::admin::router(
                self.admin.clone(),
                subs.clone(),
                crate::admin::Surface::Admin,
                subscriptions,
                tls,
            );
            tokio::spawn(crate::server::serve(admin, router, listening.clone()))
        });
        let surface =
            if admin_task.is_some() { crate::admin::Surface::Subscriptions } else { crate::admin::Surface::Both };
        let router = crate::admin::router(self.admin.clone(), subs, surface, subscriptions, tls);
        crate::server::serve(listener, router, listening).await;
        // The accept loop ends only on shutdown: tell every session to drain and close. A
        // session registered after this sees the cancelled token when it starts.
        for client in app.registry.all() {
            client.shut_down();
        }
        if let Some(task) = admin_task {
            let _ = task.await;
        }
        self.readiness.set(false, "shutting down");
        for task in source_tasks {
            let _ = task.await;
        }
        app.tracker.close();
        let clients = app.registry.len();
        tracing::info!(clients, timeout = ?app.settings.shutdown_timeout, "draining");
        if tokio::time::timeout(app.settings.shutdown_timeout, app.tracker.wait()).await.is_err() {
            tracing::warn!(remaining = app.registry.len(), "shutdown deadline passed with clients still closing");
        }
        // The others stop listing this replica's clients now rather than at its expiry.
        if let Some(cluster) = &self.cluster {
            cluster.stop().await;
        }
        // Disconnect events and the last client messages, on their way to Kafka.
        let outbox = app.outbox.clone();
        let _ = tokio::task::spawn_blocking(move || outbox.flush(Duration::from_secs(5))).await;
    }
}
