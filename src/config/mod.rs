//! Settings: command-line flags, then environment variables, then an optional TOML file;
//! validated into a [`Config`] with every problem reported at once, before any port is bound.
//!
//! The Quix WebSocket Destination's environment names (`input`, `WS_USERNAME`,
//! `WS_PASSWORD`, `Quix__Broker__Address`, `PORT`) are kept as they are, so a deployment
//! of that connector can switch to Sluice without renaming anything; so are the ones Quix
//! Cloud gives every deployment (`Quix__Sdk__Token`, `Quix__Portal__Api`,
//! `Quix__Workspace__Id`, read by [`crate::config::quix`]). Sluice's own settings use a `SLUICE_`
//! prefix; the Kafka client settings a `KAFKA_` prefix.

pub mod machine;
pub mod quix;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::FalseyValueParser;
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::auth::origin::AllowedOrigins;
use crate::client::address::TrustedProxies;
use crate::secret::Secret;

/// Every setting, as the user spells it. Flags and environment come from clap; the same
/// field names are the keys of the TOML file. All fields are optional here: defaults are
/// applied in [`Config::from_options`], after the file is merged, so that a file value is
/// never shadowed by a default.
#[derive(Parser, Serialize, Deserialize, Default, Debug, Clone)]
#[command(
    name = "sluice",
    version,
    about = "A WebSocket gateway for streaming platforms: Kafka records to WebSocket clients by key.",
    long_about = "A WebSocket gateway for streaming platforms.\n\n\
        Clients connect to ws://HOST:PORT/{key} to receive the records with that message key, \
        or to ws://HOST:PORT/* to receive every record. Without a Kafka broker configured, \
        Sluice runs on its embedded in-memory stream (add --demo for generated data).\n\n\
        Every setting can be given as a flag, as the environment variable shown, or as the \
        key of the same name (with underscores) in the TOML file given by --config. \
        Flags win over the environment, which wins over the file."
)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// A task other than serving (`sluice token …`); none runs the gateway.
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<Command>,

    /// TOML file holding any of these settings, keyed by the flag's name with underscores.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on. [default: 0.0.0.0, every IPv4 interface]
    #[arg(long, env = "SLUICE_HOST", value_name = "IP")]
    pub host: Option<IpAddr>,

    /// Port to listen on (the Quix deployment uses 80; 0 picks a free port). [default: 8080]
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,

    /// Kafka topic whose records are streamed to clients.
    #[arg(long, env = "input", value_name = "TOPIC")]
    pub input: Option<String>,

    /// Kafka bootstrap servers, comma-separated (alias: KAFKA_BROKERS). [default: none: the
    /// embedded stream, or with --quix-sdk-token the Quix workspace's brokers]
    #[arg(long, env = "Quix__Broker__Address", value_name = "HOST:PORT,...")]
    pub brokers: Option<String>,

    /// Quix Cloud SDK token. With it and no broker address, the broker's settings and the
    /// workspace's topic names are fetched from the Quix portal (Quix Cloud sets it).
    #[arg(long, env = "Quix__Sdk__Token", value_name = "TOKEN", hide_env_values = true)]
    pub quix_sdk_token: Option<Secret>,

    /// Quix portal API to fetch the broker settings from. [default: https://portal-api.platform.quix.io/]
    #[arg(long, env = "Quix__Portal__Api", value_name = "URL")]
    pub quix_portal_api: Option<String>,

    /// Quix workspace whose broker and topics to use. [default: the token's only workspace,
    /// or the one holding `input`]
    #[arg(long, env = "Quix__Workspace__Id", value_name = "ID")]
    pub quix_workspace_id: Option<String>,

    /// User name clients authenticate with (HTTP Basic). [default: sluice, when no password,
    /// --jwt-secret or --allow-anonymous is given]
    #[arg(long, env = "WS_USERNAME", value_name = "USER")]
    pub ws_username: Option<String>,

    /// Password clients authenticate with (HTTP Basic). [default: generated and printed at
    /// start-up, when no user name, --jwt-secret or --allow-anonymous is given]
    #[arg(long, env = "WS_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    pub ws_password: Option<Secret>,

    /// Secret that signs the HS256 JWTs browsers may present as ?token= or a Bearer header.
    /// [default: a random secret drawn at start-up and never shown: only tokens this process
    /// minted (POST /api/tokens) are accepted]
    #[arg(long, env = "SLUICE_JWT_SECRET", value_name = "SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<Secret>,

    /// Accept clients without any credentials. Without it, Sluice never runs open. [default: false]
    #[arg(long, env = "SLUICE_ALLOW_ANONYMOUS", value_parser = FalseyValueParser::new())]
    #[serde(default)]
    pub allow_anonymous: bool,

    /// Feed the embedded stream with generated telemetry (keys sensor-1, sensor-2, sensor-3).
    /// [default: false]
    #[arg(long, env = "SLUICE_DEMO", value_parser = FalseyValueParser::new())]
    #[serde(default)]
    pub demo: bool,

    /// Do not send the {"type":"connected","replyId":…} frame to new clients. [default: false]
    #[arg(long, env = "SLUICE_NO_WELCOME", value_parser = FalseyValueParser::new())]
    #[serde(default)]
    pub no_welcome: bool,

    /// Where to start reading `input`: latest, earliest, or a time (RFC 3339, or milliseconds
    /// since the epoch). [default: latest]
    #[arg(long, env = "SLUICE_FROM", value_name = "WHERE")]
    pub from: Option<String>,

    /// Frames queued for one client before the slow-consumer policy applies. [default: 16384]
    #[arg(long, env = "SLUICE_QUEUE_CAPACITY", value_name = "FRAMES")]
    pub queue_capacity: Option<usize>,

    /// Bytes of frames queued for one client before the slow-consumer policy applies (at
    /// least one frame is always accepted, however large). [default: a sixteenth of
    /// --max-queued-bytes, between 1 MiB and 16 MiB]
    #[arg(long, env = "SLUICE_QUEUE_BYTES", value_name = "BYTES")]
    pub queue_bytes: Option<usize>,

    /// Bytes of records held for clients, all clients together; beyond it the clients
    /// holding the most are closed (or have their queues dropped, under `--slow-consumer
    /// drop`) until it is back under. [default: a quarter of the memory the process may
    /// use (cgroup limit, else physical memory)]
    #[arg(long, env = "SLUICE_MAX_QUEUED_BYTES", value_name = "BYTES")]
    pub max_queued_bytes: Option<usize>,

    /// What to do with a client whose queue is full: `disconnect` (close 1008 "slow
    /// consumer") or `drop` (drop the new frame, keep the client). [default: disconnect]
    #[arg(long, env = "SLUICE_SLOW_CONSUMER", value_name = "POLICY")]
    pub slow_consumer: Option<String>,

    /// Bytes of recent records held in memory for clients that resume (`?cursor=`,
    /// `Last-Event-ID`) or ask for the last few (`?last=`). [default: a quarter of
    /// --max-queued-bytes, at most 64 MiB]
    #[arg(long, env = "SLUICE_REPLAY_BUFFER_BYTES", value_name = "BYTES")]
    pub replay_buffer_bytes: Option<usize>,

    /// Records behind the oldest one in memory beyond which a resuming client is not
    /// served from Kafka (it gets `"resumed":false` and what memory holds). [default: 10000]
    #[arg(long, env = "SLUICE_MAX_RESUME_RECORDS", value_name = "RECORDS")]
    pub max_resume_records: Option<u64>,

    /// Largest N of `?last=N`. [default: 100]
    #[arg(long, env = "SLUICE_MAX_LAST", value_name = "N")]
    pub max_last: Option<usize>,

    /// Most clients (WebSocket sessions) at once; an upgrade beyond it is answered 503 with
    /// Retry-After. [default: 100000]
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most connections accepted but not yet upgraded (or plain HTTP) at once; further ones
    /// wait in the listen backlog. [default: 1024]
    #[arg(long, env = "SLUICE_MAX_PENDING_CONNECTIONS", value_name = "N")]
    pub max_pending_connections: Option<usize>,

    /// Seconds a connection may take to send a complete request head (from its accept,
    /// or from its previous response); slower or silent ones are closed. [default: 10]
    #[arg(long, env = "SLUICE_HEADER_TIMEOUT", value_name = "SECONDS")]
    pub header_timeout: Option<u64>,

    /// Web origins (besides the gateway's own) whose pages may subscribe, comma-separated,
    /// e.g. https://app.example.com,https://*.example.com; `*` allows any. Upgrades with an
    /// Origin header not allowed get 403; requests without one are unaffected. [default: none:
    /// the gateway's own origin only]
    #[arg(long, env = "SLUICE_ALLOWED_ORIGINS", value_name = "ORIGINS", value_delimiter = ',')]
    #[serde(default)]
    pub allowed_origins: Vec<String>,

    /// Reverse proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For and
    /// Forwarded headers give the client's address. [default: none: those headers are ignored]
    #[arg(long, env = "SLUICE_TRUSTED_PROXIES", value_name = "CIDRS", value_delimiter = ',')]
    #[serde(default)]
    pub trusted_proxies: Vec<String>,

    /// Seconds between pings to each client; a client silent for two intervals is closed.
    /// 0 turns pings off. [default: 30]
    #[arg(long, env = "SLUICE_PING_INTERVAL", value_name = "SECONDS")]
    pub ping_interval: Option<u64>,

    /// Seconds allowed on SIGTERM/SIGINT for clients to receive their queued frames and
    /// the 1001 close. [default: 10]
    #[arg(long, env = "SLUICE_SHUTDOWN_TIMEOUT", value_name = "SECONDS")]
    pub shutdown_timeout: Option<u64>,

    /// PEM certificate chain: serve wss:// and https:// (needs --tls-key).
    #[arg(long, env = "SLUICE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "SLUICE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Log format: `text` or `json`. The level comes from RUST_LOG (default info). [default: text]
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Kafka security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. [default: PLAINTEXT,
    /// or the Quix workspace's]
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL", value_name = "PROTOCOL")]
    pub kafka_security_protocol: Option<String>,

    /// Kafka SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, env = "KAFKA_SASL_MECHANISM", value_name = "MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,

    /// Kafka SASL user name.
    #[arg(long, env = "KAFKA_SASL_USERNAME", value_name = "USER")]
    pub kafka_sasl_username: Option<String>,

    /// Kafka SASL password.
    #[arg(long, env = "KAFKA_SASL_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<Secret>,

    /// CA certificate file (PEM) to verify the Kafka brokers with.
    #[arg(long, env = "KAFKA_SSL_CA_LOCATION", value_name = "FILE")]
    pub kafka_ca_file: Option<PathBuf>,

    /// Any other librdkafka property, as KEY=VALUE; repeat the flag, or separate with `;`
    /// in the environment. A consumer-only or producer-only property goes to that client
    /// only; the others to both.
    #[arg(long, env = "KAFKA_PROPERTIES", value_name = "KEY=VALUE", value_delimiter = ';')]
    #[serde(default)]
    pub kafka_property: Vec<String>,

    /// A librdkafka property for the consumers only (input, replies), as KEY=VALUE.
    #[arg(long, env = "KAFKA_CONSUMER_PROPERTIES", value_name = "KEY=VALUE", value_delimiter = ';')]
    #[serde(default)]
    pub kafka_consumer_property: Vec<String>,

    /// A librdkafka property for the producer only (output, events, publish), as KEY=VALUE.
    #[arg(long, env = "KAFKA_PRODUCER_PROPERTIES", value_name = "KEY=VALUE", value_delimiter = ';')]
    #[serde(default)]
    pub kafka_producer_property: Vec<String>,

    /// Seconds a partition of `input` may make no progress while records wait in it before
    /// it is reported stuck (logged once, counted, shown by /readyz). [default: 60]
    #[arg(long, env = "SLUICE_STUCK_PARTITION_TIMEOUT", value_name = "SECONDS")]
    pub stuck_partition_timeout: Option<u64>,

    /// Kafka topic that receives every client message (key = replyId). Optional.
    #[arg(long, env = "output", value_name = "TOPIC")]
    pub output: Option<String>,

    /// Kafka topic that receives connect, disconnect and message events as JSON. Optional.
    #[arg(long, env = "events", value_name = "TOPIC")]
    pub events: Option<String>,

    /// Kafka topic whose records go to one client each: key = the client's replyId. Optional.
    #[arg(long, env = "replies", value_name = "TOPIC")]
    pub replies: Option<String>,

    /// Bearer token for the admin API (at least 16 characters). [default: generated and printed
    /// at start-up]
    #[arg(long, env = "ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// Serve the admin API, health, metrics and console on this separate address instead of
    /// the WebSocket port (which then answers only upgrades, /healthz and /readyz).
    #[arg(long, env = "SLUICE_ADMIN_ADDR", value_name = "IP:PORT")]
    pub admin_addr: Option<SocketAddr>,

    /// Largest message a client may send, in bytes; larger ones close it with 1009. [default: 65536]
    #[arg(long, env = "SLUICE_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    pub max_message_size: Option<usize>,

    /// Bytes kept of each client's last message in and out, for the admin API. [default: 1024]
    #[arg(long, env = "SLUICE_STORED_MESSAGE_BYTES", value_name = "BYTES")]
    pub stored_message_bytes: Option<usize>,

    /// Client messages and events buffered for Kafka while it is slow or away; beyond this
    /// they are refused (counted and logged). [default: 100000]
    #[arg(long, env = "SLUICE_PRODUCE_BUFFER", value_name = "MESSAGES")]
    pub produce_buffer: Option<usize>,

    /// Seconds between checks of the broker (readiness) and of new partitions. [default: 5]
    #[arg(long, env = "SLUICE_KAFKA_CHECK_INTERVAL", value_name = "SECONDS")]
    pub kafka_check_interval: Option<u64>,

    /// Redis URL of the cluster this replica joins: redis://[[USER]:PASSWORD@]HOST:PORT/DB,
    /// or rediss:// for TLS. Replicas sharing it form one cluster: the admin API on any of
    /// them answers for the clients of all. Unset: this process alone, and no Redis.
    #[arg(long, env = "SLUICE_CLUSTER", value_name = "URL", hide_env_values = true)]
    pub cluster: Option<Secret>,

    /// CA certificate file (PEM) to verify a rediss:// --cluster with, instead of the
    /// system's roots (for a Redis whose certificate a private CA issued).
    #[arg(long, env = "SLUICE_CLUSTER_CA_FILE", value_name = "FILE")]
    pub cluster_ca_file: Option<PathBuf>,

    /// This replica's name, shown on each of its clients as `node` and in its logs (letters,
    /// digits, `.`, `_`, `-`; at most 64). [default: the host name and a random suffix]
    #[arg(long, env = "SLUICE_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,

    /// librdkafka properties fetched from the Quix portal, not given by the user: they
    /// apply under every Kafka setting above, so an explicit one always wins.
    #[arg(skip)]
    #[serde(skip)]
    pub discovered_kafka: Vec<(String, KafkaValue)>,
}

/// What `sluice` does besides serving.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Print a client token (HS256 JWT) signed with the configured --jwt-secret, for
    /// browsers and other clients that cannot send a Basic header.
    Token(TokenArgs),
    /// Ask the gateway running here for /healthz (127.0.0.1, or --host, on --port / PORT)
    /// and exit 0 when it answers 200, 1 otherwise: the container's health check, since
    /// the image carries no HTTP client.
    Healthcheck,
}

#[derive(clap::Args, Debug, Clone)]
pub struct TokenArgs {
    /// The token's subject: the user name clients using it are listed under.
    #[arg(long, value_name = "NAME")]
    pub sub: String,
    /// Keys it may subscribe to, comma-separated (`*` for every key and /*). [default: every key]
    #[arg(long, value_name = "K1,K2", value_delimiter = ',')]
    pub keys: Option<Vec<String>>,
    /// How long it is valid, for example 90s, 15m, 1h, 7d.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// Where the Kafka consumer starts in each partition of `input`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Latest,
    Earliest,
    /// Milliseconds since the Unix epoch: the first record at or after this time.
    Timestamp(i64),
}

/// What happens to a client whose outgoing queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Close it with 1008 "slow consumer": it can reconnect and knows it missed records.
    Disconnect,
    /// Drop the frame that does not fit and keep the client (counted in a metric).
    DropNewest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub source: SourceConfig,
    pub auth: AuthConfig,
    pub welcome: bool,
    pub queue_capacity: usize,
    pub queue_bytes: usize,
    pub slow_consumer: SlowConsumerPolicy,
    pub max_connections: usize,
    pub max_pending_connections: usize,
    pub header_timeout: Duration,
    /// Bytes of records held for clients, all together.
    pub max_queued_bytes: usize,
    /// Bytes of recent records held for resume and `?last=`.
    pub replay_buffer_bytes: usize,
    pub max_resume_records: u64,
    pub max_last: usize,
    pub allowed_origins: AllowedOrigins,
    pub trusted_proxies: TrustedProxies,
    pub ping_interval: Option<Duration>,
    pub shutdown_timeout: Duration,
    pub tls: Option<TlsFiles>,
    pub log_format: LogFormat,
    pub admin: AdminConfig,
    /// Largest client message accepted, in bytes.
    pub max_message_size: usize,
    /// Bytes kept of each last message in the registry.
    pub stored_message_bytes: usize,
    /// This replica's name (its clients' `node`).
    pub node_id: String,
    /// The Redis the replicas of a cluster share; `None` runs alone.
    pub cluster: Option<ClusterConfig>,
}

/// Where the replicas of a cluster meet.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://` or `rediss://`; may carry a password, hence a secret.
    pub url: Secret,
    /// The CA that verifies a `rediss://` Redis, instead of the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl ClusterConfig {
    /// The URL without its credentials, for logs.
    pub fn display(&self) -> String {
        let url = self.url.expose();
        match (url.split_once("://"), url.rfind('@')) {
            (Some((scheme, _)), Some(at)) => format!("{scheme}://****@{}", &url[at + 1..]),
            _ => url.to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub token: Secret,
    /// True when the token was generated at start-up and must be printed.
    pub generated_token: bool,
    /// A separate listener for the admin API; `None` serves it on the main port.
    pub addr: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// The embedded in-memory stream; `demo` feeds it generated telemetry.
    Memory {
        demo: bool,
    },
    Kafka(KafkaConfig),
}

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
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
    fn of(property: &str) -> Scope {
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

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Basic-auth users. Empty with no JWT secret means anonymous (only when allowed).
    pub users: Vec<(String, Secret)>,
    pub jwt_secret: Option<Secret>,
    pub allow_anonymous: bool,
    /// True when the only user's password was generated at start-up and must be printed.
    pub generated_password: bool,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One bad setting: which one, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub setting: String,
    pub message: String,
}

/// Every problem found in the settings; start-up reports them all, one line each.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "config error: {}: {}", p.setting, p.message)?;
        }
        Ok(())
    }
}

pub const DEFAULT_PORT: u16 = 8080;
/// One Kafka fetch can hand over thousands of small records at once (a 1 MB partition
/// fetch of 100-byte records is 10,000 of them), dispatched faster than any socket is
/// written: a queue must absorb such a burst, or clients that keep up are closed as slow.
/// The byte bound below keeps the memory a stalled client pins in check.
const DEFAULT_QUEUE_CAPACITY: usize = 16384;
const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
const DEFAULT_MAX_PENDING_CONNECTIONS: usize = 1024;
const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
const DEFAULT_STUCK_PARTITION_SECS: u64 = 60;
const DEFAULT_MAX_RESUME_RECORDS: u64 = 10_000;
const DEFAULT_MAX_LAST: usize = 100;
/// When the memory available cannot be read.
const FALLBACK_MEMORY: u64 = 4 << 30;
const DEFAULT_PING_INTERVAL_SECS: u64 = 30;
const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 10;
const DEFAULT_KAFKA_CHECK_SECS: u64 = 5;
const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
const DEFAULT_STORED_MESSAGE_BYTES: usize = 1024;
const DEFAULT_PRODUCE_BUFFER: usize = 100_000;
/// The user a generated password belongs to.
pub const GENERATED_USER: &str = "sluice";

impl Options {
    /// Parses the process's arguments and environment and merges the TOML file if one is
    /// named: every setting as the user gave it, not yet validated.
    pub fn load() -> Result<Options, ConfigError> {
        let options = match Options::try_parse() {
            Ok(o) => o,
            // Help and version are answers, not errors: printed as clap prints them.
            Err(e) if !e.use_stderr() => e.exit(),
            Err(e) => return Err(ConfigError { problems: vec![parse_problem(&e)] }),
        };
        Self::load_with(options, |name| std::env::var(name).ok())
    }

    /// As [`Options::load`], from parsed options and an environment lookup (for tests).
    pub fn load_with(mut options: Options, env: impl Fn(&str) -> Option<String>) -> Result<Options, ConfigError> {
        if options.brokers.is_none() {
            options.brokers = env("KAFKA_BROKERS").filter(|v| !v.trim().is_empty());
        }
        if let Some(path) = options.config.clone() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| single("--config / SLUICE_CONFIG", format!("cannot read {}: {e}", path.display())))?;
            let command = options.command.take();
            options = options
                .merge_file(&text)
                .map_err(|e| single("--config / SLUICE_CONFIG", format!("{}: {e}", path.display())))?;
            options.command = command;
        }
        Ok(options)
    }

    /// Merges a TOML file's settings under these (flags and environment win).
    pub fn merge_file(self, text: &str) -> Result<Options, String> {
        let file: Options = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        // Merge field by field through JSON values, so that adding a setting needs no
        // change here: a value given on the command line or in the environment (not null,
        // not false, not empty) wins over the file's.
        let mut merged = serde_json::to_value(&file).map_err(|e| e.to_string())?;
        let ours = serde_json::to_value(&self).map_err(|e| e.to_string())?;
        if let (Some(merged), serde_json::Value::Object(ours)) = (merged.as_object_mut(), ours) {
            for (name, value) in ours {
                let given = match &value {
                    serde_json::Value::Null | serde_json::Value::Bool(false) => false,
                    serde_json::Value::Array(a) => !a.is_empty(),
                    _ => true,
                };
                if given {
                    merged.insert(name, value);
                }
            }
        }
        let mut out: Options = serde_json::from_value(merged).map_err(|e| e.to_string())?;
        out.config = self.config;
        Ok(out)
    }
}

impl Config {
    /// Validates merged options, collecting every problem.
    pub fn from_options(o: Options) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut bad = |setting: &str, message: String| problems.push(Problem { setting: setting.to_owned(), message });

        let listen = SocketAddr::new(o.host.unwrap_or(IpAddr::from([0, 0, 0, 0])), o.port.unwrap_or(DEFAULT_PORT));

        let start = match o.from.as_deref().map(str::trim) {
            None | Some("latest") => StartFrom::Latest,
            Some("earliest") => StartFrom::Earliest,
            Some(other) => match parse_time(other) {
                Some(ms) => StartFrom::Timestamp(ms),
                None => {
                    bad(
                        "--from / SLUICE_FROM",
                        format!("{other:?} is not latest, earliest, an RFC 3339 time or milliseconds since the epoch"),
                    );
                    StartFrom::Latest
                }
            },
        };

        let brokers = o.brokers.as_deref().map(str::trim).filter(|b| !b.is_empty());
        let input = o.input.as_deref().map(str::trim).filter(|t| !t.is_empty());
        let source = match (brokers, input) {
            (Some(brokers), Some(topic)) => {
                let properties = kafka_properties(&o, &mut bad);
                let check = o.kafka_check_interval.unwrap_or(DEFAULT_KAFKA_CHECK_SECS);
                let stuck = o.stuck_partition_timeout.unwrap_or(DEFAULT_STUCK_PARTITION_SECS);
                if stuck == 0 {
                    bad(
                        "--stuck-partition-timeout / SLUICE_STUCK_PARTITION_TIMEOUT",
                        "must be at least 1 second".into(),
                    );
                }
                if check == 0 {
                    bad("--kafka-check-interval / SLUICE_KAFKA_CHECK_INTERVAL", "must be at least 1 second".into());
                }
                let produce_buffer = o.produce_buffer.unwrap_or(DEFAULT_PRODUCE_BUFFER);
                if !(1..=10_000_000).contains(&produce_buffer) {
                    bad("--produce-buffer / SLUICE_PRODUCE_BUFFER", "must be between 1 and 10000000".into());
                }
                let topic_name =
                    |t: &Option<String>| t.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
                SourceConfig::Kafka(KafkaConfig {
                    brokers: brokers.to_owned(),
                    topic: topic.to_owned(),
                    start,
                    properties,
                    check_interval: Duration::from_secs(check.max(1)),
                    stuck_after: Duration::from_secs(stuck.max(1)),
                    output: topic_name(&o.output),
                    events: topic_name(&o.events),
                    replies: topic_name(&o.replies),
                    produce_buffer: produce_buffer.clamp(1, 10_000_000),
                })
            }
            (Some(_), None) => {
                bad("--input / input", "a Kafka broker is configured but no topic to stream: set input".into());
                SourceConfig::Memory { demo: o.demo }
            }
            // Discovery runs only when a topic is named: without one, a Quix deployment
            // would otherwise start quietly on the embedded stream.
            (None, None) if o.quix_sdk_token.as_ref().is_some_and(|t| !t.expose().trim().is_empty()) => {
                bad(
                    "--input / input",
                    "Quix__Sdk__Token connects Sluice to a Quix workspace but no topic to stream: set input".into(),
                );
                SourceConfig::Memory { demo: o.demo }
            }
            (None, Some(_)) => {
                bad(
                    "--brokers / Quix__Broker__Address",
                    "input names a topic but no Kafka broker is configured: set Quix__Broker__Address or KAFKA_BROKERS"
                        .into(),
                );
                SourceConfig::Memory { demo: o.demo }
            }
            (None, None) => SourceConfig::Memory { demo: o.demo },
        };
        if matches!(source, SourceConfig::Memory { .. }) {
            for (setting, value) in [
                ("--output / output", &o.output),
                ("--events / events", &o.events),
                ("--replies / replies", &o.replies),
            ] {
                if value.is_some() {
                    bad(setting, "names a Kafka topic but no Kafka broker is configured".into());
                }
            }
        }
        if o.demo && matches!(source, SourceConfig::Kafka(_)) {
            bad("--demo / SLUICE_DEMO", "demo data feeds the embedded stream; it cannot be used with Kafka".into());
        }

        let auth = auth_config(&o, &mut bad);

        let queue_capacity = o.queue_capacity.unwrap_or(DEFAULT_QUEUE_CAPACITY);
        if queue_capacity == 0 {
            bad("--queue-capacity / SLUICE_QUEUE_CAPACITY", "must be at least 1".into());
        }
        let max_queued_bytes = o.max_queued_bytes.unwrap_or_else(|| {
            let memory = crate::config::machine::memory_available().unwrap_or(FALLBACK_MEMORY);
            usize::try_from(memory / 4).unwrap_or(usize::MAX)
        });
        if max_queued_bytes < 1 << 20 {
            bad("--max-queued-bytes / SLUICE_MAX_QUEUED_BYTES", "must be at least 1048576 (1 MiB)".into());
        }
        // Room for at least sixteen stalled clients before the gateway-wide bound sheds
        // any, and no more than a Kafka fetch burst needs.
        let queue_bytes = o.queue_bytes.unwrap_or((max_queued_bytes / 16).clamp(1 << 20, 16 << 20));
        if queue_bytes == 0 {
            bad("--queue-bytes / SLUICE_QUEUE_BYTES", "must be at least 1".into());
        }
        let slow_consumer = match o.slow_consumer.as_deref().map(str::trim) {
            None | Some("disconnect") => SlowConsumerPolicy::Disconnect,
            Some("drop") => SlowConsumerPolicy::DropNewest,
            Some(other) => {
                bad("--slow-consumer / SLUICE_SLOW_CONSUMER", format!("{other:?} is not `disconnect` or `drop`"));
                SlowConsumerPolicy::Disconnect
            }
        };
        let max_connections = o.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            bad("--max-connections / SLUICE_MAX_CONNECTIONS", "must be at least 1".into());
        }
        let replay_buffer_bytes = o.replay_buffer_bytes.unwrap_or((max_queued_bytes / 4).min(64 << 20));
        let max_resume_records = o.max_resume_records.unwrap_or(DEFAULT_MAX_RESUME_RECORDS);
        let max_last = o.max_last.unwrap_or(DEFAULT_MAX_LAST);
        let max_pending_connections = o.max_pending_connections.unwrap_or(DEFAULT_MAX_PENDING_CONNECTIONS);
        if max_pending_connections == 0 {
            bad("--max-pending-connections / SLUICE_MAX_PENDING_CONNECTIONS", "must be at least 1".into());
        }
        let header_timeout = o.header_timeout.unwrap_or(DEFAULT_HEADER_TIMEOUT_SECS);
        if header_timeout == 0 {
            bad("--header-timeout / SLUICE_HEADER_TIMEOUT", "must be at least 1 second".into());
        }
        let allowed_origins = AllowedOrigins::parse(&o.allowed_origins).unwrap_or_else(|e| {
            bad("--allowed-origins / SLUICE_ALLOWED_ORIGINS", e);
            AllowedOrigins::default()
        });
        let trusted_proxies = TrustedProxies::parse(&o.trusted_proxies).unwrap_or_else(|e| {
            bad("--trusted-proxies / SLUICE_TRUSTED_PROXIES", e);
            TrustedProxies::default()
        });
        let ping_interval = match o.ping_interval.unwrap_or(DEFAULT_PING_INTERVAL_SECS) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        let shutdown_timeout = Duration::from_secs(o.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_SECS));

        let tls = match (&o.tls_cert, &o.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                for (setting, path) in [("--tls-cert / SLUICE_TLS_CERT", cert), ("--tls-key / SLUICE_TLS_KEY", key)] {
                    if !path.is_file() {
                        bad(setting, format!("{} is not a readable file", path.display()));
                    }
                }
                Some(TlsFiles { cert: cert.clone(), key: key.clone() })
            }
            (Some(_), None) => {
                bad("--tls-key / SLUICE_TLS_KEY", "required with --tls-cert".into());
                None
            }
            (None, Some(_)) => {
                bad("--tls-cert / SLUICE_TLS_CERT", "required with --tls-key".into());
                None
            }
        };

        let log_format = match o.log_format.as_deref().map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                bad("--log-format / SLUICE_LOG_FORMAT", format!("{other:?} is not `text` or `json`"));
                LogFormat::Text
            }
        };

        let admin = match o.admin_token.clone().filter(|t| !t.expose().is_empty()) {
            Some(token) => {
                if token.expose().len() < 16 {
                    bad("--admin-token / ADMIN_TOKEN", "must be at least 16 characters long".into());
                }
                AdminConfig { token, generated_token: false, addr: o.admin_addr }
            }
            None => AdminConfig { token: Secret::generate(32), generated_token: true, addr: o.admin_addr },
        };
        let max_message_size = o.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
        if max_message_size < 125 {
            bad("--max-message-size / SLUICE_MAX_MESSAGE_SIZE", "must be at least 125 bytes".into());
        }
        let stored_message_bytes = o.stored_message_bytes.unwrap_or(DEFAULT_STORED_MESSAGE_BYTES);

        let node_id = match o.node_id.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            Some(id) => {
                if !valid_node_id(id) {
                    bad(
                        "--node-id / SLUICE_NODE_ID",
                        format!("{id:?} must be 1 to 64 letters, digits, '.', '_' or '-'"),
                    );
                }
                id.to_owned()
            }
            None => generated_node_id(),
        };
        let cluster = match o.cluster.as_ref().filter(|u| !u.expose().trim().is_empty()) {
            None => None,
            Some(url) => {
                let url = Secret::new(url.expose().trim());
                if let Err(e) = check_cluster_url(url.expose()) {
                    bad("--cluster / SLUICE_CLUSTER", e);
                }
                if let Some(ca) = &o.cluster_ca_file {
                    if !url.expose().starts_with("rediss://") {
                        bad(
                            "--cluster-ca-file / SLUICE_CLUSTER_CA_FILE",
                            "verifies TLS: use a rediss:// --cluster URL".into(),
                        );
                    }
                    if !ca.is_file() {
                        bad(
                            "--cluster-ca-file / SLUICE_CLUSTER_CA_FILE",
                            format!("{} is not a readable file", ca.display()),
                        );
                    }
                }
                Some(ClusterConfig { url, ca_file: o.cluster_ca_file.clone() })
            }
        };
        if o.cluster_ca_file.is_some() && cluster.is_none() {
            bad("--cluster-ca-file / SLUICE_CLUSTER_CA_FILE", "set without --cluster".into());
        }

        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Config {
            listen,
            source,
            auth,
            welcome: !o.no_welcome,
            queue_capacity,
            queue_bytes,
            slow_consumer,
            max_connections,
            max_pending_connections,
            header_timeout: Duration::from_secs(header_timeout),
            max_queued_bytes,
            replay_buffer_bytes,
            max_resume_records,
            max_last,
            allowed_origins,
            trusted_proxies,
            ping_interval,
            shutdown_timeout,
            tls,
            log_format,
            admin,
            max_message_size,
            stored_message_bytes,
            node_id,
            cluster,
        })
    }
}

/// A flag or environment value clap could not take (a port that is not a number, an
/// unknown flag…), as a problem like any other: the setting named as flag and environment
/// variable, on one line, so that start-up fails the same way (exit 64) whatever is wrong.
fn parse_problem(e: &clap::Error) -> Problem {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => v.first().cloned(),
        _ => None,
    };
    // "--port <PORT>": the flag is its first word.
    let flag = context(ContextKind::InvalidArg).and_then(|a| a.split_whitespace().next().map(str::to_owned));
    let setting = match &flag {
        Some(flag) => setting_name(flag),
        None => "command line".to_owned(),
    };
    let value = context(ContextKind::InvalidValue).unwrap_or_default();
    let message = match e.kind() {
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => match std::error::Error::source(e) {
            Some(cause) => format!("invalid value {value:?}: {cause}"),
            None => format!("invalid value {value:?}"),
        },
        ErrorKind::MissingRequiredArgument => "required".to_owned(),
        ErrorKind::UnknownArgument => match context(ContextKind::SuggestedArg) {
            Some(suggested) => format!("no such setting (did you mean {suggested}? sluice --help lists them all)"),
            None => "no such setting (sluice --help lists them all)".to_owned(),
        },
        // Anything else: clap's own first line, without its "error: ".
        _ => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            first.strip_prefix("error: ").unwrap_or(first).to_owned()
        }
    };
    Problem { setting, message }
}

/// `--port` as every config error names it: `--port / PORT`.
fn setting_name(flag: &str) -> String {
    use clap::CommandFactory;
    let command = Options::command();
    let long = flag.trim_start_matches('-');
    let env = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    match env {
        Some(env) => format!("{flag} / {env}"),
        None => flag.to_owned(),
    }
}

/// Node ids travel in Redis key names and log fields: kept to a safe alphabet.
fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The host name (a container's is its id or pod name, which is what an operator looks
/// for) and a random suffix, so two processes on one host never share an id.
fn generated_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let mut host: String =
        host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).take(56).collect();
    if host.is_empty() {
        host = "sluice".to_owned();
    }
    format!("{host}-{:04x}", rand::random::<u16>())
}

/// A Redis URL the client can use; the message never repeats the URL (it may hold a password).
fn check_cluster_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err("must start with redis:// or rediss:// (redis://[:PASSWORD@]HOST:PORT/DB)".into());
    }
    redis::Client::open(url).map(drop).map_err(|e| format!("not a usable Redis URL: {e}"))
}

fn single(setting: &str, message: String) -> ConfigError {
    ConfigError { problems: vec![Problem { setting: setting.to_owned(), message }] }
}

fn auth_config(o: &Options, bad: &mut impl FnMut(&str, String)) -> AuthConfig {
    let username = o.ws_username.as_deref().filter(|u| !u.is_empty());
    let password = o.ws_password.as_ref().filter(|p| !p.expose().is_empty());
    let jwt_secret = o.jwt_secret.clone().filter(|s| !s.expose().is_empty());
    if let Some(secret) = &jwt_secret {
        // HS256 with a short key is brute-forceable offline from any token a browser holds.
        if secret.expose().len() < 32 {
            bad("--jwt-secret / SLUICE_JWT_SECRET", "must be at least 32 bytes long".into());
        }
    }
    let mut users = Vec::new();
    let mut generated_password = false;
    match (username, password) {
        (Some(user), Some(pass)) => {
            if user.contains(':') {
                bad("--ws-username / WS_USERNAME", "must not contain ':' (RFC 7617)".into());
            }
            users.push((user.to_owned(), pass.clone()));
        }
        (Some(_), None) => bad("--ws-password / WS_PASSWORD", "required when WS_USERNAME is set".into()),
        (None, Some(_)) => bad("--ws-username / WS_USERNAME", "required when WS_PASSWORD is set".into()),
        (None, None) => {
            if jwt_secret.is_none() && !o.allow_anonymous {
                users.push((GENERATED_USER.to_owned(), Secret::generate(24)));
                generated_password = true;
            }
        }
    }
    AuthConfig { users, jwt_secret, allow_anonymous: o.allow_anonymous, generated_password }
}

fn kafka_properties(o: &Options, bad: &mut impl FnMut(&str, String)) -> Vec<(String, KafkaValue, Scope)> {
    // librdkafka keeps the last value set: discovered properties first, so every explicit
    // setting below overrides them.
    let mut props: Vec<_> = o.discovered_kafka.iter().map(|(k, v)| (k.clone(), v.clone(), Scope::of(k))).collect();
    let plain = |v: &str| KafkaValue::Plain(v.to_owned());
    if let Some(p) = o.kafka_security_protocol.as_deref().map(str::trim) {
        let upper = p.to_ascii_uppercase();
        if ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"].contains(&upper.as_str()) {
            props.push(("security.protocol".to_owned(), plain(&upper), Scope::Both));
        } else {
            bad(
                "--kafka-security-protocol / KAFKA_SECURITY_PROTOCOL",
                format!("{p:?} is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
            );
        }
    }
    if let Some(m) = o.kafka_sasl_mechanism.as_deref().map(str::trim) {
        let upper = m.to_ascii_uppercase();
        if ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&upper.as_str()) {
            props.push(("sasl.mechanism".to_owned(), plain(&upper), Scope::Both));
        } else {
            bad(
                "--kafka-sasl-mechanism / KAFKA_SASL_MECHANISM",
                format!("{m:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
            );
        }
    }
    match (&o.kafka_sasl_username, &o.kafka_sasl_password) {
        (Some(u), Some(p)) => {
            props.push(("sasl.username".to_owned(), plain(u), Scope::Both));
            props.push(("sasl.password".to_owned(), KafkaValue::Secret(p.clone()), Scope::Both));
        }
        (Some(_), None) => {
            bad("--kafka-sasl-password / KAFKA_SASL_PASSWORD", "required with KAFKA_SASL_USERNAME".into())
        }
        (None, Some(_)) => {
            bad("--kafka-sasl-username / KAFKA_SASL_USERNAME", "required with KAFKA_SASL_PASSWORD".into())
        }
        (None, None) => {}
    }
    if let Some(ca) = &o.kafka_ca_file {
        if ca.is_file() {
            props.push(("ssl.ca.location".to_owned(), plain(&ca.display().to_string()), Scope::Both));
        } else {
            bad("--kafka-ca-file / KAFKA_SSL_CA_LOCATION", format!("{} is not a readable file", ca.display()));
        }
    }
    let given = [
        ("--kafka-property / KAFKA_PROPERTIES", &o.kafka_property, None),
        ("--kafka-consumer-property / KAFKA_CONSUMER_PROPERTIES", &o.kafka_consumer_property, Some(Scope::Consumer)),
        ("--kafka-producer-property / KAFKA_PRODUCER_PROPERTIES", &o.kafka_producer_property, Some(Scope::Producer)),
    ];
    for (setting, entries, scope) in given {
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            match entry.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    let key = k.trim().to_owned();
                    let value = if key.contains("password") || key.contains("secret") {
                        KafkaValue::Secret(Secret::new(v.trim()))
                    } else {
                        plain(v.trim())
                    };
                    let scope = scope.unwrap_or_else(|| Scope::of(&key));
                    props.push((key, value, scope));
                }
                _ => bad(setting, format!("{entry:?} is not KEY=VALUE")),
            }
        }
    }
    props
}

/// RFC 3339 or milliseconds since the epoch.
fn parse_time(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return (ms >= 0).then_some(ms);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        let mut all = vec!["sluice"];
        all.extend_from_slice(args);
        Options::try_parse_from(all).expect("arguments parse")
    }

    fn problems(o: Options) -> Vec<String> {
        match Config::from_options(o) {
            Ok(_) => vec![],
            Err(e) => e.problems.into_iter().map(|p| p.setting).collect(),
        }
    }

    #[test]
    fn no_settings_run_the_embedded_stream_with_a_generated_password() {
        let c = Config::from_options(Options::default()).unwrap();
        assert!(matches!(c.source, SourceConfig::Memory { demo: false }));
        assert_eq!(c.listen.port(), 8080);
        assert!(c.auth.generated_password);
        assert_eq!(c.auth.users[0].0, GENERATED_USER);
        assert!(c.auth.users[0].1.expose().len() >= 20);
    }

    #[test]
    fn allow_anonymous_is_the_only_way_to_run_without_credentials() {
        let c = Config::from_options(parse(&["--allow-anonymous"])).unwrap();
        assert!(c.auth.users.is_empty());
        assert!(c.auth.allow_anonymous);
        assert!(!c.auth.generated_password);
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_setting() {
        let o = parse(&[
            "--ws-username",
            "u",
            "--queue-capacity",
            "0",
            "--slow-consumer",
            "maybe",
            "--from",
            "yesterday",
            "--brokers",
            "localhost:9092",
            "--kafka-sasl-mechanism",
            "GSSAPI",
            "--kafka-property",
            "novalue",
            "--tls-cert",
            "/nonexistent.pem",
        ]);
        let got = problems(o);
        for setting in [
            "--ws-password / WS_PASSWORD",
            "--queue-capacity / SLUICE_QUEUE_CAPACITY",
            "--slow-consumer / SLUICE_SLOW_CONSUMER",
            "--from / SLUICE_FROM",
            "--input / input",
            "--tls-key / SLUICE_TLS_KEY",
        ] {
            assert!(got.iter().any(|s| s == setting), "{setting} missing from {got:?}");
        }
    }

    #[test]
    fn kafka_settings_become_librdkafka_properties_with_passthrough_last() {
        let o = parse(&[
            "--brokers",
            "b1:9092,b2:9092",
            "--input",
            "telemetry",
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-512",
            "--kafka-sasl-username",
            "svc",
            "--kafka-sasl-password",
            "pw",
            "--kafka-property",
            "fetch.wait.max.ms=5;client.id=edge",
            "--from",
            "2026-01-02T03:04:05Z",
        ]);
        let c = Config::from_options(o).unwrap();
        let SourceConfig::Kafka(k) = c.source else { panic!("kafka expected") };
        assert_eq!(k.topic, "telemetry");
        assert_eq!(k.start, StartFrom::Timestamp(1_767_323_045_000));
        let keys: Vec<_> = k.properties.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["security.protocol", "sasl.mechanism", "sasl.username", "sasl.password", "fetch.wait.max.ms", "client.id"]
        );
        assert_eq!(k.properties[0].1.expose(), "SASL_SSL");
        assert!(!format!("{:?}", k.properties).contains("\"pw\""));
        // A consumer property in the shared list reaches the consumer only.
        assert_eq!(k.properties[4].2, Scope::Consumer);
        assert_eq!(k.properties[5].2, Scope::Both);
    }

    #[test]
    fn client_specific_properties_reach_their_client_only() {
        let o = parse(&[
            "--brokers",
            "b:9092",
            "--input",
            "t",
            "--kafka-property",
            "linger.ms=20",
            "--kafka-consumer-property",
            "client.rack=eu-1",
            "--kafka-producer-property",
            "compression.type=zstd",
        ]);
        let SourceConfig::Kafka(k) = Config::from_options(o).unwrap().source else { panic!("kafka expected") };
        let scopes: Vec<_> = k.properties.iter().map(|(k, _, s)| (k.as_str(), *s)).collect();
        assert_eq!(
            scopes,
            [("linger.ms", Scope::Producer), ("client.rack", Scope::Consumer), ("compression.type", Scope::Producer)]
        );
        assert!(Scope::Both.applies_to(Scope::Consumer) && !Scope::Producer.applies_to(Scope::Consumer));
    }

    #[test]
    fn origins_proxies_and_bounds_are_validated() {
        let got = problems(parse(&[
            "--allowed-origins",
            "https://ok.example,not-an-origin",
            "--trusted-proxies",
            "10.0.0.0/8,proxy.local",
            "--header-timeout",
            "0",
            "--max-queued-bytes",
            "1000",
        ]));
        for setting in [
            "--allowed-origins / SLUICE_ALLOWED_ORIGINS",
            "--trusted-proxies / SLUICE_TRUSTED_PROXIES",
            "--header-timeout / SLUICE_HEADER_TIMEOUT",
            "--max-queued-bytes / SLUICE_MAX_QUEUED_BYTES",
        ] {
            assert!(got.iter().any(|s| s == setting), "{setting} missing from {got:?}");
        }
    }

    #[test]
    fn the_client_queue_default_follows_the_gateway_wide_bound() {
        let c = Config::from_options(parse(&["--max-queued-bytes", "33554432"])).unwrap();
        assert_eq!(c.queue_bytes, 2 << 20);
        let c = Config::from_options(parse(&["--max-queued-bytes", "1073741824"])).unwrap();
        assert_eq!(c.queue_bytes, 16 << 20);
        let c = Config::from_options(parse(&["--max-queued-bytes", "1048576"])).unwrap();
        assert_eq!(c.queue_bytes, 1 << 20);
    }

    #[test]
    fn a_quix_token_without_input_is_an_error_not_the_embedded_stream() {
        let o = parse(&["--quix-sdk-token", "sdk-token"]);
        assert!(problems(o).contains(&"--input / input".to_owned()));
    }

    #[test]
    fn discovered_kafka_properties_yield_to_explicit_ones() {
        let mut o = parse(&[
            "--brokers",
            "k:9092",
            "--input",
            "t",
            "--kafka-sasl-username",
            "mine",
            "--kafka-sasl-password",
            "pw",
            "--kafka-property",
            "client.id=edge",
        ]);
        o.discovered_kafka = vec![
            ("sasl.username".into(), KafkaValue::Plain("quix".into())),
            ("client.id".into(), KafkaValue::Plain("quix-client".into())),
            ("security.protocol".into(), KafkaValue::Plain("SASL_SSL".into())),
        ];
        let SourceConfig::Kafka(k) = Config::from_options(o).unwrap().source else { panic!("kafka expected") };
        // librdkafka keeps the last value set for a key.
        let last =
            |key: &str| k.properties.iter().rev().find(|(k, _, _)| k == key).map(|(_, v, _)| v.expose().to_owned());
        assert_eq!(last("sasl.username").as_deref(), Some("mine"));
        assert_eq!(last("client.id").as_deref(), Some("edge"));
        assert_eq!(last("security.protocol").as_deref(), Some("SASL_SSL"));
    }

    #[test]
    fn quix_settings_have_flags_environment_and_file_keys() {
        let o = parse(&["--quix-portal-api", "http://portal"])
            .merge_file(
                "quix_sdk_token = \"from-file\"\nquix_workspace_id = \"ws\"\nquix_portal_api = \"http://file\"\n",
            )
            .unwrap();
        assert_eq!(o.quix_sdk_token.as_ref().map(Secret::expose), Some("from-file"));
        assert_eq!(o.quix_workspace_id.as_deref(), Some("ws"));
        assert_eq!(o.quix_portal_api.as_deref(), Some("http://portal"));
        assert!(!format!("{o:?}").contains("from-file"), "the token reached Debug");
    }

    #[test]
    fn file_values_apply_under_flags() {
        let o = parse(&["--port", "9000"])
            .merge_file("port = 1234\ninput = \"t\"\nbrokers = \"k:9092\"\ndemo = false\nqueue_capacity = 7\n")
            .unwrap();
        assert_eq!(o.port, Some(9000));
        assert_eq!(o.input.as_deref(), Some("t"));
        assert_eq!(o.queue_capacity, Some(7));
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let err = Options::default().merge_file("prot = 80\n").unwrap_err();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn username_with_colon_is_refused() {
        assert!(problems(parse(&["--ws-username", "a:b", "--ws-password", "p"]))
            .contains(&"--ws-username / WS_USERNAME".to_owned()));
    }

    #[test]
    fn the_node_id_is_generated_unless_given_and_checked_when_given() {
        let a = Config::from_options(Options::default()).unwrap().node_id;
        let b = Config::from_options(Options::default()).unwrap().node_id;
        assert!(valid_node_id(&a), "{a}");
        assert_ne!(a, b, "two processes on one host get two ids");
        assert_eq!(Config::from_options(parse(&["--node-id", "eu-1.a_b"])).unwrap().node_id, "eu-1.a_b");
        assert!(problems(parse(&["--node-id", "has space"])).contains(&"--node-id / SLUICE_NODE_ID".to_owned()));
        assert!(problems(parse(&["--node-id", &"x".repeat(65)])).contains(&"--node-id / SLUICE_NODE_ID".to_owned()));
    }

    #[test]
    fn cluster_urls_are_checked_and_their_password_never_shown() {
        let c = Config::from_options(parse(&["--cluster", "rediss://:pw-secret@redis.internal:6380/2"])).unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.display(), "rediss://****@redis.internal:6380/2");
        assert!(!format!("{cluster:?}").contains("pw-secret"));
        assert!(Config::from_options(Options::default()).unwrap().cluster.is_none());
        assert!(problems(parse(&["--cluster", "redis://r:6379/0", "--cluster-ca-file", "/nonexistent.pem"]))
            .contains(&"--cluster-ca-file / SLUICE_CLUSTER_CA_FILE".to_owned()));
        assert!(problems(parse(&["--cluster-ca-file", "Cargo.toml"]))
            .contains(&"--cluster-ca-file / SLUICE_CLUSTER_CA_FILE".to_owned()));
        for bad in ["http://redis:6379", "redis://", "localhost:6379"] {
            assert!(
                problems(parse(&["--cluster", bad])).contains(&"--cluster / SLUICE_CLUSTER".to_owned()),
                "{bad} accepted"
            );
        }
        let err = Config::from_options(parse(&["--cluster", "redis-secret://x"])).unwrap_err().to_string();
        assert!(!err.contains("redis-secret"), "{err}");
    }

    #[test]
    fn time_parsing_accepts_rfc3339_and_epoch_millis() {
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_time("soon"), None);
    }
}
