//! From options to a [`Config`]: each default applied, each value checked, every problem
//! collected (named as its setting) rather than the first one returned. Config builds the
//! parts' settings here; the parts never read options.

use std::net::SocketAddr;
use std::time::Duration;

use super::{
    AdminConfig, Config, ConfigError, LogFormat, Options, Problem, Setting, SourceConfig, GENERATED_USER, SETTING,
};
use crate::auth::origin::AllowedOrigins;
use crate::auth::{AuthSettings, ProviderSettings};
use crate::client::address::TrustedProxies;
use crate::client::SlowConsumerPolicy;
use crate::registry::cluster::ClusterSettings;
use crate::secret::Secret;
use crate::server::TlsFiles;
use crate::sink::webhook::WebhookSettings;
use crate::source::kafka::{KafkaSettings, KafkaValue, Scope, StartFrom};

/// When the memory available cannot be read.
const FALLBACK_MEMORY: u64 = 4 << 30;

impl Config {
    /// Validates merged options, collecting every problem.
    pub fn from_options(o: Options) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut bad =
            |setting: Setting, message: String| problems.push(Problem { setting: setting.to_string(), message });

        let listen = SocketAddr::new(o.host(), o.port());

        let start = match o.from().trim() {
            "latest" => StartFrom::Latest,
            "earliest" => StartFrom::Earliest,
            other => match parse_time(other) {
                Some(ms) => StartFrom::Timestamp(ms),
                None => {
                    bad(
                        SETTING.from,
                        format!("{other:?} is not latest, earliest, an RFC 3339 time or milliseconds since the epoch"),
                    );
                    StartFrom::Latest
                }
            },
        };

        let brokers = o.brokers.as_deref().map(str::trim).filter(|b| !b.is_empty());
        let input = o.input.as_deref().map(str::trim).filter(|t| !t.is_empty());
        let source = match (brokers, input) {
            (Some(brokers), Some(input)) => {
                let mut topics: Vec<String> = Vec::new();
                for topic in input.split(',').map(str::trim) {
                    if topic.is_empty() {
                        bad(
                            SETTING.input,
                            format!("{input:?} has an empty topic name: separate topics with single commas"),
                        );
                    } else if topics.iter().any(|t| t == topic) {
                        bad(SETTING.input, format!("names topic {topic:?} twice"));
                    } else {
                        topics.push(topic.to_owned());
                    }
                }
                let properties = kafka_properties(&o, &mut bad);
                let check = o.kafka_check_interval();
                let stuck = o.stuck_partition_timeout();
                if stuck == 0 {
                    bad(SETTING.stuck_partition_timeout, "must be at least 1 second".into());
                }
                if check == 0 {
                    bad(SETTING.kafka_check_interval, "must be at least 1 second".into());
                }
                let produce_buffer = o.produce_buffer();
                if !(1..=10_000_000).contains(&produce_buffer) {
                    bad(SETTING.produce_buffer, "must be between 1 and 10000000".into());
                }
                let topic_name =
                    |t: &Option<String>| t.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
                SourceConfig::Kafka(KafkaSettings {
                    brokers: brokers.to_owned(),
                    topics,
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
                bad(
                    SETTING.input,
                    format!("a Kafka broker is configured but no topic to stream: set {}", SETTING.input.env),
                );
                SourceConfig::Memory { demo: o.demo }
            }
            // Discovery runs only when a topic is named: without one, a Quix deployment
            // would otherwise start quietly on the embedded stream.
            (None, None) if o.quix_sdk_token.as_ref().is_some_and(|t| !t.expose().trim().is_empty()) => {
                bad(
                    SETTING.input,
                    format!(
                        "{} connects Sluice to a Quix workspace but no topic to stream: set {}",
                        SETTING.quix_sdk_token.env, SETTING.input.env
                    ),
                );
                SourceConfig::Memory { demo: o.demo }
            }
            (None, Some(_)) => {
                bad(
                    SETTING.brokers,
                    format!(
                        "{} names a topic but no Kafka broker is configured: set {} or {}",
                        SETTING.input.env,
                        SETTING.brokers.env,
                        SETTING.brokers.env_alias.unwrap_or_default()
                    ),
                );
                SourceConfig::Memory { demo: o.demo }
            }
            (None, None) => SourceConfig::Memory { demo: o.demo },
        };
        if matches!(source, SourceConfig::Memory { .. }) {
            for (setting, value) in
                [(SETTING.output, &o.output), (SETTING.events, &o.events), (SETTING.replies, &o.replies)]
            {
                if value.is_some() {
                    bad(setting, "names a Kafka topic but no Kafka broker is configured".into());
                }
            }
        }
        let schemas = match &source {
            SourceConfig::Kafka(k) => super::formats::schemas(&o, &k.topics, &mut bad),
            SourceConfig::Memory { .. } => {
                for (setting, given) in [
                    (SETTING.schema_registry, o.schema_registry.is_some()),
                    (SETTING.value_format, !o.value_format.is_empty()),
                    (SETTING.key_format, !o.key_format.is_empty()),
                    (SETTING.value_schema, !o.value_schema.is_empty()),
                    (SETTING.key_schema, !o.key_schema.is_empty()),
                ] {
                    if given {
                        bad(setting, "applies to Kafka topics, but no Kafka broker is configured".into());
                    }
                }
                Default::default()
            }
        };
        if o.demo && matches!(source, SourceConfig::Kafka(_)) {
            bad(SETTING.demo, "demo data feeds the embedded stream; it cannot be used with Kafka".into());
        }

        let auth = auth_settings(&o, &mut bad);

        let queue_capacity = o.queue_capacity();
        if queue_capacity == 0 {
            bad(SETTING.queue_capacity, "must be at least 1".into());
        }
        let max_queued_bytes = o.max_queued_bytes.unwrap_or_else(|| {
            let memory = super::machine::memory_available().unwrap_or(FALLBACK_MEMORY);
            usize::try_from(memory / 4).unwrap_or(usize::MAX)
        });
        if max_queued_bytes < 1 << 20 {
            bad(SETTING.max_queued_bytes, "must be at least 1048576 (1 MiB)".into());
        }
        // Room for at least sixteen stalled clients before the gateway-wide bound sheds
        // any, and no more than a Kafka fetch burst needs.
        let queue_bytes = o.queue_bytes.unwrap_or((max_queued_bytes / 16).clamp(1 << 20, 16 << 20));
        if queue_bytes == 0 {
            bad(SETTING.queue_bytes, "must be at least 1".into());
        }
        let slow_consumer = match o.slow_consumer().trim() {
            "disconnect" => SlowConsumerPolicy::Disconnect,
            "drop" => SlowConsumerPolicy::DropNewest,
            other => {
                bad(SETTING.slow_consumer, format!("{other:?} is not `disconnect` or `drop`"));
                SlowConsumerPolicy::Disconnect
            }
        };
        let max_connections = o.max_connections();
        if max_connections == 0 {
            bad(SETTING.max_connections, "must be at least 1".into());
        }
        let replay_buffer_bytes = o.replay_buffer_bytes.unwrap_or((max_queued_bytes / 4).min(64 << 20));
        let max_resume_records = o.max_resume_records();
        let max_last = o.max_last();
        let close_at_expiry = match o.token_expiry().trim() {
            "close" => true,
            "ignore" => false,
            other => {
                bad(SETTING.token_expiry, format!("{other:?} is not close or ignore"));
                true
            }
        };
        let max_subscriptions = o.max_subscriptions();
        if max_subscriptions == 0 {
            bad(SETTING.max_subscriptions, "must be at least 1".into());
        }
        let max_pending_connections = o.max_pending_connections();
        if max_pending_connections == 0 {
            bad(SETTING.max_pending_connections, "must be at least 1".into());
        }
        let header_timeout = o.header_timeout();
        if header_timeout == 0 {
            bad(SETTING.header_timeout, "must be at least 1 second".into());
        }
        let allowed_origins = AllowedOrigins::parse(&o.allowed_origins).unwrap_or_else(|e| {
            bad(SETTING.allowed_origins, e);
            AllowedOrigins::default()
        });
        let trusted_proxies = TrustedProxies::parse(&o.trusted_proxies).unwrap_or_else(|e| {
            bad(SETTING.trusted_proxies, e);
            TrustedProxies::default()
        });
        let ping_interval = match o.ping_interval() {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        let shutdown_timeout = Duration::from_secs(o.shutdown_timeout());

        let tls = match (&o.tls_cert, &o.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                for (setting, path) in [(SETTING.tls_cert, cert), (SETTING.tls_key, key)] {
                    if !path.is_file() {
                        bad(setting, format!("{} is not a readable file", path.display()));
                    }
                }
                Some(TlsFiles { cert: cert.clone(), key: key.clone() })
            }
            (Some(_), None) => {
                bad(SETTING.tls_key, format!("required with {}", SETTING.tls_cert.flag()));
                None
            }
            (None, Some(_)) => {
                bad(SETTING.tls_cert, format!("required with {}", SETTING.tls_key.flag()));
                None
            }
        };

        let log_format = match o.log_format().trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                bad(SETTING.log_format, format!("{other:?} is not `text` or `json`"));
                LogFormat::Text
            }
        };

        let admin = match o.admin_token.clone().filter(|t| !t.expose().is_empty()) {
            Some(token) => {
                if token.expose().len() < 16 {
                    bad(SETTING.admin_token, "must be at least 16 characters long".into());
                }
                AdminConfig { token, generated_token: false, addr: o.admin_addr }
            }
            None => AdminConfig { token: Secret::generate(32), generated_token: true, addr: o.admin_addr },
        };
        let max_message_size = o.max_message_size();
        if max_message_size < 125 {
            bad(SETTING.max_message_size, "must be at least 125 bytes".into());
        }
        let stored_message_bytes = o.stored_message_bytes();

        let node_id = match o.node_id.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            Some(id) => {
                if !valid_node_id(id) {
                    bad(SETTING.node_id, format!("{id:?} must be 1 to 64 letters, digits, '.', '_' or '-'"));
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
                    bad(SETTING.cluster, e);
                }
                if let Some(ca) = &o.cluster_ca_file {
                    if !url.expose().starts_with("rediss://") {
                        bad(
                            SETTING.cluster_ca_file,
                            format!("verifies TLS: use a rediss:// {} URL", SETTING.cluster.flag()),
                        );
                    }
                    if !ca.is_file() {
                        bad(SETTING.cluster_ca_file, format!("{} is not a readable file", ca.display()));
                    }
                }
                Some(ClusterSettings { url, ca_file: o.cluster_ca_file.clone() })
            }
        };
        if o.cluster_ca_file.is_some() && cluster.is_none() {
            bad(SETTING.cluster_ca_file, format!("set without {}", SETTING.cluster.flag()));
        }

        let webhook = webhook_settings(&o, &mut bad);
        let connect_url = http_url(&o.connect_url, SETTING.connect_url, &mut bad);
        let subscribe_url = http_url(&o.subscribe_url, SETTING.subscribe_url, &mut bad);

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
            max_subscriptions,
            close_at_expiry,
            schemas,
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
            webhook,
            connect_url,
            subscribe_url,
        })
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

fn auth_settings(o: &Options, bad: &mut impl FnMut(Setting, String)) -> AuthSettings {
    let username = o.ws_username.as_deref().filter(|u| !u.is_empty());
    let password = o.ws_password.as_ref().filter(|p| !p.expose().is_empty());
    let jwt_secret = o.jwt_secret.clone().filter(|s| !s.expose().is_empty());
    let provider = provider_settings(o, bad);
    if let Some(secret) = &jwt_secret {
        // HS256 with a short key is brute-forceable offline from any token a browser holds.
        if secret.expose().len() < 32 {
            bad(SETTING.jwt_secret, "must be at least 32 bytes long".into());
        }
    }
    let mut users = Vec::new();
    let mut generated_password = false;
    match (username, password) {
        (Some(user), Some(pass)) => {
            if user.contains(':') {
                bad(SETTING.ws_username, "must not contain ':' (RFC 7617)".into());
            }
            users.push((user.to_owned(), pass.clone()));
        }
        (Some(_), None) => bad(SETTING.ws_password, format!("required when {} is set", SETTING.ws_username.env)),
        (None, Some(_)) => bad(SETTING.ws_username, format!("required when {} is set", SETTING.ws_password.env)),
        (None, None) => {
            if jwt_secret.is_none() && provider.is_none() && o.connect_url.is_none() && !o.allow_anonymous {
                users.push((GENERATED_USER.to_owned(), Secret::generate(24)));
                generated_password = true;
            }
        }
    }
    AuthSettings { users, jwt_secret, allow_anonymous: o.allow_anonymous, generated_password, provider }
}

/// A backend's URL, when given: http:// or https://.
pub(super) fn http_url(
    given: &Option<String>,
    setting: Setting,
    bad: &mut impl FnMut(Setting, String),
) -> Option<String> {
    let url = given.as_deref().map(str::trim).filter(|u| !u.is_empty())?;
    if !(url.starts_with("https://") || url.starts_with("http://")) || reqwest::Url::parse(url).is_err() {
        bad(setting, format!("{url:?} is not an http:// or https:// URL"));
    }
    Some(url.to_owned())
}

/// The event webhook: a URL, and the secret its requests are signed with.
fn webhook_settings(o: &Options, bad: &mut impl FnMut(Setting, String)) -> Option<WebhookSettings> {
    let url = http_url(&o.events_url, SETTING.events_url, bad);
    let secret = o.webhook_secret.clone().filter(|s| !s.expose().is_empty());
    let Some(url) = url else {
        if secret.is_some() {
            bad(SETTING.webhook_secret, format!("given without {}", SETTING.events_url.env));
        }
        return None;
    };
    match &secret {
        // A short HMAC key can be found from one signed request.
        Some(s) if s.expose().len() < 16 => bad(SETTING.webhook_secret, "must be at least 16 bytes long".into()),
        Some(_) => {}
        None => {
            bad(SETTING.webhook_secret, format!("required with {}: requests are always signed", SETTING.events_url.env))
        }
    }
    Some(WebhookSettings { url, secret: secret.unwrap_or_else(|| Secret::new("")) })
}

/// The identity provider: a key set URL, and the issuer and audience its tokens must name.
fn provider_settings(o: &Options, bad: &mut impl FnMut(Setting, String)) -> Option<ProviderSettings> {
    let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let (issuer, audience) = (given(&o.jwt_issuer), given(&o.jwt_audience));
    let Some(url) = http_url(&o.jwks_url, SETTING.jwks_url, bad) else {
        for (setting, set) in [(SETTING.jwt_issuer, issuer.is_some()), (SETTING.jwt_audience, audience.is_some())] {
            if set {
                bad(setting, format!("given without {}", SETTING.jwks_url.env));
            }
        }
        return None;
    };
    Some(ProviderSettings { jwks_url: url, issuer, audience })
}

fn kafka_properties(o: &Options, bad: &mut impl FnMut(Setting, String)) -> Vec<(String, KafkaValue, Scope)> {
    // librdkafka keeps the last value set: discovered properties first, so every explicit
    // setting below overrides them.
    let mut props: Vec<_> = o.discovered_kafka.iter().map(|(k, v)| (k.clone(), v.clone(), Scope::of(k))).collect();
    let plain = |v: &str| KafkaValue::Plain(v.to_owned());
    if let Some(p) = o.kafka_security_protocol.as_deref().map(str::trim) {
        let upper = p.to_ascii_uppercase();
        if ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"].contains(&upper.as_str()) {
            props.push(("security.protocol".to_owned(), plain(&upper), Scope::Both));
        } else {
            bad(SETTING.kafka_security_protocol, format!("{p:?} is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"));
        }
    }
    if let Some(m) = o.kafka_sasl_mechanism.as_deref().map(str::trim) {
        let upper = m.to_ascii_uppercase();
        if ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&upper.as_str()) {
            props.push(("sasl.mechanism".to_owned(), plain(&upper), Scope::Both));
        } else {
            bad(SETTING.kafka_sasl_mechanism, format!("{m:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"));
        }
    }
    match (&o.kafka_sasl_username, &o.kafka_sasl_password) {
        (Some(u), Some(p)) => {
            props.push(("sasl.username".to_owned(), plain(u), Scope::Both));
            props.push(("sasl.password".to_owned(), KafkaValue::Secret(p.clone()), Scope::Both));
        }
        (Some(_), None) => {
            bad(SETTING.kafka_sasl_password, format!("required with {}", SETTING.kafka_sasl_username.env))
        }
        (None, Some(_)) => {
            bad(SETTING.kafka_sasl_username, format!("required with {}", SETTING.kafka_sasl_password.env))
        }
        (None, None) => {}
    }
    if let Some(ca) = &o.kafka_ca_file {
        if ca.is_file() {
            props.push(("ssl.ca.location".to_owned(), plain(&ca.display().to_string()), Scope::Both));
        } else {
            bad(SETTING.kafka_ca_file, format!("{} is not a readable file", ca.display()));
        }
    }
    let given = [
        (SETTING.kafka_property, &o.kafka_property, None),
        (SETTING.kafka_consumer_property, &o.kafka_consumer_property, Some(Scope::Consumer)),
        (SETTING.kafka_producer_property, &o.kafka_producer_property, Some(Scope::Producer)),
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
    use clap::Parser;

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
        assert_eq!(k.topics, ["telemetry"]);
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
