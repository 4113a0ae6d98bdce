//! Settings: command-line flags, then environment variables, then an optional TOML file;
//! validated into a [`Config`] with every problem reported at once, before any port is bound.
//!
//! - [`options`]: every setting declared once — flag, environment name(s), TOML key,
//!   default and help — as one table ([`setting`] says what a setting is and holds the
//!   macro that reads the table);
//! - `load`: flags, environment and the TOML file merged into [`Options`];
//! - `validate`: [`Options`] checked and turned into a [`Config`], building each part's
//!   settings on the way: [`AuthSettings`], [`TlsFiles`], [`KafkaSettings`],
//!   [`SlowConsumerPolicy`], [`ClusterSettings`]. Config is above the parts: none of
//!   them imports it;
//! - `formats`: the Schema Registry and how each topic's values and keys are encoded;
//! - [`quix`]: Quix Cloud discovery, which fills options in before validation;
//!   [`machine`]: what the machine allows, for defaults.
//!
//! The Quix WebSocket Destination's environment names (`input`, `WS_USERNAME`,
//! `WS_PASSWORD`, `Quix__Broker__Address`, `PORT`) are kept as they are, so a deployment
//! of that connector can switch to Sluice without renaming anything; so are the ones Quix
//! Cloud gives every deployment (`Quix__Sdk__Token`, `Quix__Portal__Api`,
//! `Quix__Workspace__Id`, read by [`quix`]). Sluice's own settings use a `SLUICE_`
//! prefix; the Kafka client settings a `KAFKA_` prefix.

mod formats;
mod load;
pub mod machine;
pub mod options;
pub mod quix;
pub mod setting;
mod validate;

#[cfg(test)]
mod readme;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::origin::AllowedOrigins;
use crate::auth::AuthSettings;
use crate::client::address::TrustedProxies;
use crate::client::SlowConsumerPolicy;
use crate::registry::cluster::ClusterSettings;
use crate::secret::Secret;
use crate::server::TlsFiles;
use crate::sink::webhook::WebhookSettings;
use crate::source::kafka::KafkaSettings;

pub use self::formats::Schemas;
pub use self::options::{Command, Options, Settings, TokenArgs, GENERATED_USER, SETTING};
pub use self::setting::{Setting, Unset};

/// How log lines are written (`--log-format`).
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
    pub auth: AuthSettings,
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
    pub max_subscriptions: usize,
    /// Close a token-authenticated connection at its token's expiry (`--token-expiry`).
    pub close_at_expiry: bool,
    /// The Schema Registry and each topic's formats (Kafka only).
    pub schemas: Schemas,
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
    pub cluster: Option<ClusterSettings>,
    /// The event webhook (`--events-url`).
    pub webhook: Option<WebhookSettings>,
    /// The connect proxy (`--connect-url`): a backend decides who may connect.
    pub connect_url: Option<String>,
    /// The subscribe proxy (`--subscribe-url`): a backend decides which subscriptions of a
    /// multiplexed connection may open.
    pub subscribe_url: Option<String>,
}

/// The admin API's token and where it is served.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub token: Secret,
    /// True when the token was generated at start-up and must be printed.
    pub generated_token: bool,
    /// A separate listener for the admin API; `None` serves it on the main port.
    pub addr: Option<SocketAddr>,
}

/// Where records come from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// The embedded in-memory stream; `demo` feeds it generated telemetry.
    Memory {
        demo: bool,
    },
    Kafka(KafkaSettings),
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
