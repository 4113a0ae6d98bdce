//! Every setting, declared once: its flag and TOML key (the field's name), environment
//! name(s), default and help. `sluice --help`, the TOML file's keys, config errors and the
//! README's settings table (a test compares them) all come from this table; so do the
//! subcommands.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::FalseyValueParser;

use super::quix::DEFAULT_PORTAL_API;
use super::setting::settings;
use crate::secret::Secret;
use crate::source::kafka::KafkaValue;

/// The user a generated password belongs to.
pub const GENERATED_USER: &str = "sluice";

settings! {
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

    /// TOML file holding any of these settings, keyed by the flag's name with underscores.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE", global = true)]
    #[serde(skip)]
    config: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "SLUICE_HOST", value_name = "IP")]
    #[default(IpAddr::V4(Ipv4Addr::UNSPECIFIED), "every IPv4 interface")]
    host: Option<IpAddr>,

    /// Port to listen on (the Quix deployment uses 80; 0 picks a free port).
    #[arg(long, env = "PORT")]
    #[default(8080)]
    port: Option<u16>,

    /// Kafka topics whose records are streamed to clients, comma-separated; the first is the
    /// default topic (the one `/{key}` and `/*` read).
    #[arg(long, env = "input", value_name = "TOPIC,...")]
    input: Option<String>,

    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "Quix__Broker__Address", value_name = "HOST:PORT,...")]
    #[env_alias = "KAFKA_BROKERS"]
    #[default = "none: the embedded stream, or with --quix-sdk-token the Quix workspace's brokers"]
    brokers: Option<String>,

    /// Quix Cloud SDK token. With it and no broker address, the broker's settings and the
    /// workspace's topic names are fetched from the Quix portal (Quix Cloud sets it).
    #[arg(long, env = "Quix__Sdk__Token", value_name = "TOKEN", hide_env_values = true)]
    quix_sdk_token: Option<Secret>,

    /// Quix portal API to fetch the broker settings from.
    #[arg(long, env = "Quix__Portal__Api", value_name = "URL")]
    #[default(DEFAULT_PORTAL_API)]
    quix_portal_api: Option<String>,

    /// Quix workspace whose broker and topics to use.
    #[arg(long, env = "Quix__Workspace__Id", value_name = "ID")]
    #[default = "the token's only workspace, or the one holding `input`"]
    quix_workspace_id: Option<String>,

    /// User name clients authenticate with (HTTP Basic).
    #[arg(long, env = "WS_USERNAME", value_name = "USER")]
    #[default = "sluice, when no password, --jwt-secret, --jwks-url or --allow-anonymous is given"]
    ws_username: Option<String>,

    /// Password clients authenticate with (HTTP Basic).
    #[arg(long, env = "WS_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    #[default = "generated and printed at start-up, when no user name, --jwt-secret, --jwks-url or --allow-anonymous is given"]
    ws_password: Option<Secret>,

    /// Secret that signs the HS256 JWTs browsers may present as ?token= or a Bearer header.
    #[arg(long, env = "SLUICE_JWT_SECRET", value_name = "SECRET", hide_env_values = true, global = true)]
    #[default = "a random secret drawn at start-up and never shown: only tokens this process \
        minted (POST /api/tokens) are accepted"]
    jwt_secret: Option<Secret>,

    /// An identity provider's JSON Web Key Set URL: RS256, ES256 and EdDSA tokens signed by
    /// its keys are accepted (beside HS256 tokens of --jwt-secret).
    #[arg(long, env = "SLUICE_JWKS_URL", value_name = "URL")]
    jwks_url: Option<String>,

    /// The issuer (`iss`) an identity provider's tokens must name. Needs --jwks-url.
    #[arg(long, env = "SLUICE_JWT_ISSUER", value_name = "ISSUER")]
    #[default = "not checked"]
    jwt_issuer: Option<String>,

    /// An audience (`aud`) an identity provider's tokens must name. Needs --jwks-url.
    #[arg(long, env = "SLUICE_JWT_AUDIENCE", value_name = "AUDIENCE")]
    #[default = "not checked"]
    jwt_audience: Option<String>,

    /// Accept clients without any credentials. Without it, Sluice never runs open.
    #[arg(long, env = "SLUICE_ALLOW_ANONYMOUS", value_parser = FalseyValueParser::new())]
    #[default = "false"]
    allow_anonymous: bool,

    /// Feed the embedded stream with generated telemetry (keys sensor-1, sensor-2, sensor-3).
    #[arg(long, env = "SLUICE_DEMO", value_parser = FalseyValueParser::new())]
    #[default = "false"]
    demo: bool,

    /// Do not send the {"type":"connected","replyId":…} frame to new clients.
    #[arg(long, env = "SLUICE_NO_WELCOME", value_parser = FalseyValueParser::new())]
    #[default = "false"]
    no_welcome: bool,

    /// Where to start reading `input`: latest, earliest, or a time (RFC 3339, or milliseconds
    /// since the epoch).
    #[arg(long, env = "SLUICE_FROM", value_name = "WHERE")]
    #[default("latest")]
    from: Option<String>,

    /// Frames queued for one client before the slow-consumer policy applies.
    #[arg(long, env = "SLUICE_QUEUE_CAPACITY", value_name = "FRAMES")]
    // One Kafka fetch can hand over thousands of small records at once (a 1 MB partition
    // fetch of 100-byte records is 10,000 of them), dispatched faster than any socket is
    // written: a queue must absorb such a burst, or clients that keep up are closed as
    // slow. --queue-bytes keeps the memory a stalled client pins in check.
    #[default(16384)]
    queue_capacity: Option<usize>,

    /// Bytes of frames queued for one client before the slow-consumer policy applies (at
    /// least one frame is always accepted, however large).
    #[arg(long, env = "SLUICE_QUEUE_BYTES", value_name = "BYTES")]
    #[default = "a sixteenth of --max-queued-bytes, between 1 MiB and 16 MiB"]
    queue_bytes: Option<usize>,

    /// Bytes of records held for clients, all clients together; beyond it the clients
    /// holding the most are closed (or have their queues dropped, under `--slow-consumer
    /// drop`) until it is back under.
    #[arg(long, env = "SLUICE_MAX_QUEUED_BYTES", value_name = "BYTES")]
    #[default = "a quarter of the memory the process may use (cgroup limit, else physical memory)"]
    max_queued_bytes: Option<usize>,

    /// What to do with a client whose queue is full: `disconnect` (close 1008 "slow
    /// consumer") or `drop` (drop the new frame, keep the client).
    #[arg(long, env = "SLUICE_SLOW_CONSUMER", value_name = "POLICY")]
    #[default("disconnect")]
    slow_consumer: Option<String>,

    /// Bytes of recent records held in memory for clients that resume (`?cursor=`,
    /// `Last-Event-ID`) or ask for the last few (`?last=`).
    #[arg(long, env = "SLUICE_REPLAY_BUFFER_BYTES", value_name = "BYTES")]
    #[default = "a quarter of --max-queued-bytes, at most 64 MiB"]
    replay_buffer_bytes: Option<usize>,

    /// Records behind the oldest one in memory beyond which a resuming client is not
    /// served from Kafka (it gets `"resumed":false` and what memory holds).
    #[arg(long, env = "SLUICE_MAX_RESUME_RECORDS", value_name = "RECORDS")]
    #[default(10_000)]
    max_resume_records: Option<u64>,

    /// Largest N of `?last=N`.
    #[arg(long, env = "SLUICE_MAX_LAST", value_name = "N")]
    #[default(100)]
    max_last: Option<usize>,

    /// Subscriptions one multiplexed connection (`sluice.v1`) may hold at once; a subscribe
    /// beyond it is answered with an error frame, status 429.
    #[arg(long, env = "SLUICE_MAX_SUBSCRIPTIONS", value_name = "N")]
    #[default(100)]
    max_subscriptions: Option<usize>,

    /// Most clients (WebSocket sessions) at once; an upgrade beyond it is answered 503 with
    /// Retry-After.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", value_name = "N")]
    #[default(100_000)]
    max_connections: Option<usize>,

    /// Most connections accepted but not yet upgraded (or plain HTTP) at once; further ones
    /// wait in the listen backlog.
    #[arg(long, env = "SLUICE_MAX_PENDING_CONNECTIONS", value_name = "N")]
    #[default(1024)]
    max_pending_connections: Option<usize>,

    /// Seconds a connection may take to send a complete request head (from its accept,
    /// or from its previous response); slower or silent ones are closed.
    #[arg(long, env = "SLUICE_HEADER_TIMEOUT", value_name = "SECONDS")]
    #[default(10)]
    header_timeout: Option<u64>,

    /// Web origins (besides the gateway's own) whose pages may subscribe, comma-separated,
    /// e.g. https://app.example.com,https://*.example.com; `*` allows any. Upgrades with an
    /// Origin header not allowed get 403; requests without one are unaffected.
    #[arg(long, env = "SLUICE_ALLOWED_ORIGINS", value_name = "ORIGINS", value_delimiter = ',')]
    #[default = "none: the gateway's own origin only"]
    allowed_origins: Vec<String>,

    /// Reverse proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For and
    /// Forwarded headers give the client's address.
    #[arg(long, env = "SLUICE_TRUSTED_PROXIES", value_name = "CIDRS", value_delimiter = ',')]
    #[default = "none: those headers are ignored"]
    trusted_proxies: Vec<String>,

    /// Seconds between pings to each client; a client silent for two intervals is closed.
    /// 0 turns pings off.
    #[arg(long, env = "SLUICE_PING_INTERVAL", value_name = "SECONDS")]
    #[default(30)]
    ping_interval: Option<u64>,

    /// Seconds allowed on SIGTERM/SIGINT for clients to receive their queued frames and
    /// the 1001 close.
    #[arg(long, env = "SLUICE_SHUTDOWN_TIMEOUT", value_name = "SECONDS")]
    #[default(10)]
    shutdown_timeout: Option<u64>,

    /// PEM certificate chain: serve wss:// and https:// (needs --tls-key).
    #[arg(long, env = "SLUICE_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "SLUICE_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// Log format: `text` or `json`. The level comes from RUST_LOG (default info).
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_name = "FORMAT")]
    #[default("text")]
    log_format: Option<String>,

    /// Kafka security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL", value_name = "PROTOCOL")]
    #[default = "PLAINTEXT, or the Quix workspace's"]
    kafka_security_protocol: Option<String>,

    /// Kafka SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, env = "KAFKA_SASL_MECHANISM", value_name = "MECHANISM")]
    kafka_sasl_mechanism: Option<String>,

    /// Kafka SASL user name.
    #[arg(long, env = "KAFKA_SASL_USERNAME", value_name = "USER")]
    kafka_sasl_username: Option<String>,

    /// Kafka SASL password.
    #[arg(long, env = "KAFKA_SASL_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    kafka_sasl_password: Option<Secret>,

    /// CA certificate file (PEM) to verify the Kafka brokers with.
    #[arg(long, env = "KAFKA_SSL_CA_LOCATION", value_name = "FILE")]
    kafka_ca_file: Option<PathBuf>,

    /// Any other librdkafka property, as KEY=VALUE; repeat the flag, or separate with `;`
    /// in the environment. A consumer-only or producer-only property goes to that client
    /// only; the others to both.
    #[arg(long, env = "KAFKA_PROPERTIES", value_name = "KEY=VALUE", value_delimiter = ';')]
    kafka_property: Vec<String>,

    /// A librdkafka property for the consumers only (input, replies), as KEY=VALUE.
    #[arg(long, env = "KAFKA_CONSUMER_PROPERTIES", value_name = "KEY=VALUE", value_delimiter = ';')]
    kafka_consumer_property: Vec<String>,

    /// A librdkafka property for the producer only (output, events, publish), as KEY=VALUE.
    #[arg(long, env = "KAFKA_PRODUCER_PROPERTIES", value_name = "KEY=VALUE", value_delimiter = ';')]
    kafka_producer_property: Vec<String>,

    /// Seconds a partition of `input` may make no progress while records wait in it before
    /// it is reported stuck (logged once, counted, shown by /readyz).
    #[arg(long, env = "SLUICE_STUCK_PARTITION_TIMEOUT", value_name = "SECONDS")]
    #[default(60)]
    stuck_partition_timeout: Option<u64>,

    /// What happens at a client token's expiry (`exp`): close closes the connection with
    /// 4001 "token expired" (a multiplexed one may present a later token first); ignore keeps
    /// it open.
    #[arg(long, env = "SLUICE_TOKEN_EXPIRY", value_name = "close|ignore")]
    #[default("close")]
    token_expiry: Option<String>,

    /// Confluent Schema Registry URL: values in the Confluent wire format (Avro, Protobuf,
    /// JSON Schema) are decoded with the schemas it holds.
    #[arg(long, env = "SLUICE_SCHEMA_REGISTRY", value_name = "URL")]
    schema_registry: Option<String>,

    /// User for the Schema Registry's HTTP Basic authentication.
    #[arg(long, env = "SLUICE_SCHEMA_REGISTRY_USER", value_name = "USER")]
    schema_registry_user: Option<String>,

    /// Password for the Schema Registry's HTTP Basic authentication.
    #[arg(long, env = "SLUICE_SCHEMA_REGISTRY_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    schema_registry_password: Option<Secret>,

    /// How a topic's values are encoded, as TOPIC=FORMAT (comma-separated): raw, json, avro,
    /// protobuf or json-schema; decoded values reach clients as JSON.
    #[arg(long, env = "SLUICE_VALUE_FORMAT", value_name = "TOPIC=FORMAT", value_delimiter = ',')]
    #[default = "raw: values verbatim"]
    value_format: Vec<String>,

    /// How a topic's keys are encoded, as TOPIC=FORMAT (comma-separated), as for values.
    #[arg(long, env = "SLUICE_KEY_FORMAT", value_name = "TOPIC=FORMAT", value_delimiter = ',')]
    #[default = "raw: keys verbatim"]
    key_format: Vec<String>,

    /// A topic's value schema without a registry (semicolon-separated):
    /// TOPIC=avro:FILE.avsc, or TOPIC=protobuf:FILE.desc:package.Message (a descriptor set).
    #[arg(long, env = "SLUICE_VALUE_SCHEMA", value_name = "TOPIC=KIND:FILE", value_delimiter = ';')]
    value_schema: Vec<String>,

    /// A topic's key schema without a registry, as for values.
    #[arg(long, env = "SLUICE_KEY_SCHEMA", value_name = "TOPIC=KIND:FILE", value_delimiter = ';')]
    key_schema: Vec<String>,

    /// Kafka topic that receives every client message (key = replyId). Optional.
    #[arg(long, env = "output", value_name = "TOPIC")]
    output: Option<String>,

    /// Kafka topic that receives connect, disconnect and message events as JSON. Optional.
    #[arg(long, env = "events", value_name = "TOPIC")]
    events: Option<String>,

    /// HTTP endpoint that decides who may connect, before the upgrade, in place of Basic
    /// credentials and tokens: it gets the request's credentials and answers allow (with a
    /// user, keys, topics, data) or deny.
    #[arg(long, env = "SLUICE_CONNECT_URL", value_name = "URL")]
    connect_url: Option<String>,

    /// HTTP endpoint that decides, for each subscription of a multiplexed connection,
    /// whether it may open: it gets the subscribe frame and answers allow or deny.
    #[arg(long, env = "SLUICE_SUBSCRIBE_URL", value_name = "URL")]
    subscribe_url: Option<String>,

    /// HTTP endpoint that receives connect, disconnect and message events as JSON, POSTed in
    /// signed batches (a JSON array); its answer may reply to a message's client.
    #[arg(long, env = "SLUICE_EVENTS_URL", value_name = "URL")]
    events_url: Option<String>,

    /// Secret the event webhook's requests are signed with (`Sluice-Signature`, HMAC-SHA256;
    /// at least 16 bytes). Required with --events-url.
    #[arg(long, env = "SLUICE_WEBHOOK_SECRET", value_name = "SECRET", hide_env_values = true)]
    webhook_secret: Option<Secret>,

    /// Kafka topic whose records go to one client each: key = the client's replyId. Optional.
    #[arg(long, env = "replies", value_name = "TOPIC")]
    replies: Option<String>,

    /// Bearer token for the admin API (at least 16 characters).
    #[arg(long, env = "ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    #[default = "generated and printed at start-up"]
    admin_token: Option<Secret>,

    /// Serve the admin API, health, metrics and console on this separate address instead of
    /// the WebSocket port (which then answers only upgrades, /healthz and /readyz).
    #[arg(long, env = "SLUICE_ADMIN_ADDR", value_name = "IP:PORT")]
    admin_addr: Option<SocketAddr>,

    /// Largest message a client may send, in bytes; larger ones close it with 1009.
    #[arg(long, env = "SLUICE_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    #[default(64 * 1024)]
    max_message_size: Option<usize>,

    /// Bytes kept of each client's last message in and out, for the admin API.
    #[arg(long, env = "SLUICE_STORED_MESSAGE_BYTES", value_name = "BYTES")]
    #[default(1024)]
    stored_message_bytes: Option<usize>,

    /// Client messages and events buffered for Kafka while it is slow or away; beyond this
    /// they are refused (counted and logged).
    #[arg(long, env = "SLUICE_PRODUCE_BUFFER", value_name = "MESSAGES")]
    #[default(100_000)]
    produce_buffer: Option<usize>,

    /// Seconds between checks of the broker (readiness) and of new partitions.
    #[arg(long, env = "SLUICE_KAFKA_CHECK_INTERVAL", value_name = "SECONDS")]
    #[default(5)]
    kafka_check_interval: Option<u64>,

    /// Redis URL of the cluster this replica joins: redis://[[USER]:PASSWORD@]HOST:PORT/DB,
    /// or rediss:// for TLS. Replicas sharing it form one cluster: the admin API on any of
    /// them answers for the clients of all. Unset: this process alone, and no Redis.
    #[arg(long, env = "SLUICE_CLUSTER", value_name = "URL", hide_env_values = true)]
    cluster: Option<Secret>,

    /// CA certificate file (PEM) to verify a rediss:// --cluster with, instead of the
    /// system's roots (for a Redis whose certificate a private CA issued).
    #[arg(long, env = "SLUICE_CLUSTER_CA_FILE", value_name = "FILE")]
    cluster_ca_file: Option<PathBuf>,

    /// This replica's name, shown on each of its clients as `node` and in its logs (letters,
    /// digits, `.`, `_`, `-`; at most 64).
    #[arg(long, env = "SLUICE_NODE_ID", value_name = "ID")]
    #[default = "the host name and a random suffix"]
    node_id: Option<String>,
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
    /// Keys it may subscribe to, comma-separated, exact or as patterns (`sensor-*`; `*` for
    /// every key and /*). [default: every key]
    #[arg(long, value_name = "K1,K2", value_delimiter = ',')]
    pub keys: Option<Vec<String>>,
    /// Topics it may read, comma-separated. [default: every topic]
    #[arg(long, value_name = "T1,T2", value_delimiter = ',')]
    pub topics: Option<Vec<String>>,
    /// How long it is valid, for example 90s, 15m, 1h, 7d.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_setting_is_the_flag_and_environment_variable_clap_parses() {
        let command = Options::command();
        let parsed: Vec<_> = command
            .get_arguments()
            .filter(|a| a.get_long().is_some_and(|l| l != "help" && l != "version"))
            .map(|a| {
                let env = a.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                (format!("--{}", a.get_long().unwrap_or_default()), env, help)
            })
            .collect();
        let declared: Vec<_> = Settings::ALL.iter().map(|s| (s.flag(), s.env.to_owned(), s.help())).collect();
        assert_eq!(parsed, declared);
    }

    #[test]
    fn help_ends_with_the_default_and_names_the_alias() {
        assert_eq!(
            SETTING.port.help(),
            "Port to listen on (the Quix deployment uses 80; 0 picks a free port). [default: 8080]"
        );
        assert_eq!(SETTING.host.help(), "Address to listen on. [default: 0.0.0.0, every IPv4 interface]");
        assert_eq!(
            SETTING.input.help(),
            "Kafka topics whose records are streamed to clients, comma-separated; the first is the default topic (the one `/{key}` and `/*` read)"
        );
        assert!(SETTING
            .brokers
            .help()
            .starts_with("Kafka bootstrap servers, comma-separated (alias: KAFKA_BROKERS). "));
        assert_eq!(SETTING.port.to_string(), "--port / PORT");
    }

    #[test]
    fn accessors_apply_the_declared_default_only_when_unset() {
        let o = Options::default();
        assert_eq!((o.port(), o.queue_capacity(), o.max_message_size()), (8080, 16384, 65536));
        assert_eq!(o.host(), IpAddr::from([0, 0, 0, 0]));
        assert_eq!(o.from(), "latest");
        let o = Options { port: Some(0), from: Some("earliest".into()), ..Options::default() };
        assert_eq!((o.port(), o.from()), (0, "earliest"));
    }

    #[test]
    fn an_alias_is_read_only_when_the_setting_is_unset() {
        let env = |name: &str| (name == "KAFKA_BROKERS").then(|| "alias:9092".to_owned());
        let mut o = Options::default();
        o.read_env_aliases(&env);
        assert_eq!(o.brokers.as_deref(), Some("alias:9092"));
        let mut o = Options { brokers: Some("given:9092".into()), ..Options::default() };
        o.read_env_aliases(&env);
        assert_eq!(o.brokers.as_deref(), Some("given:9092"));
        let mut o = Options::default();
        o.read_env_aliases(&|_: &str| Some("  ".to_owned()));
        assert_eq!(o.brokers, None);
    }
}
