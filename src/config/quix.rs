//! Quix Cloud broker discovery: with a Quix SDK token and no broker address, fetches the
//! workspace's librdkafka settings and real topic names from the Quix portal API, the way
//! the Quix client libraries do, and fills them into the options before they are validated.
//!
//! The portal calls, as Quix Streams makes them:
//!
//! - `GET /workspaces`: the workspaces the token may use, when `Quix__Workspace__Id` is not
//!   set. One workspace is the one; with several, the one whose topics (`GET /{ws}/topics`)
//!   include `input`.
//! - `GET /workspaces/{ws}/broker/librdkafka`: the client settings (`bootstrap.servers`,
//!   `security.protocol`, `sasl.*`, …), with the CA certificate inline as base64 in
//!   `ssl.ca.cert`. Settings that name a CA file this machine does not have get it from
//!   `GET /workspaces/{ws}/certificates` (a zip holding `ca.cert`; empty when there is none).
//! - `GET /{ws}/topics/{name}`: a topic's id, the name it has on the broker; a topic the
//!   portal does not know is the workspace-prefixed name `{ws}-{name}`.
//!
//! Every request carries `Authorization: Bearer {token}` and `X-Version: 2.0`. Every failure
//! is one [`QuixError`] naming the setting to look at.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;

use super::{Options, Setting, SETTING};
use crate::secret::Secret;
use crate::source::kafka::KafkaValue;

/// Where the Quix client libraries look when `Quix__Portal__Api` is not set.
pub const DEFAULT_PORTAL_API: &str = "https://portal-api.platform.quix.io/";
/// The portal API version the Quix client libraries speak.
const API_VERSION: &str = "2.0";
/// The Quix libraries wait 30 s for an answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests that fail to connect or time out are tried this many times in all, 1 s then
/// 2 s apart. Fewer than Quix Streams' six: a deployment that exits is restarted by the
/// platform anyway, and a clear error line early beats a minute of silence.
const ATTEMPTS: u32 = 3;
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Quix's clients set these below the 4-minute idle cut of Azure's load balancers, in
/// front of Quix's brokers, so that librdkafka never uses a connection the balancer has
/// silently dropped. An explicit `--kafka-property` still wins.
const QUIX_CLIENT_DEFAULTS: &[(&str, &str)] =
    &[("connections.max.idle.ms", "180000"), ("metadata.max.age.ms", "180000")];
/// A CA certificate is a few kilobytes; anything much larger is not one.
const MAX_CERTIFICATE_BYTES: usize = 1 << 20;

const TOKEN: Setting = SETTING.quix_sdk_token;
const PORTAL: Setting = SETTING.quix_portal_api;
const WORKSPACE: Setting = SETTING.quix_workspace_id;

/// Why discovery failed. Each message names the setting to look at.
#[derive(Debug, thiserror::Error)]
pub enum QuixError {
    #[error("{PORTAL}: {url:?} is not an http(s) URL")]
    BadUrl { url: String },
    #[error("{TOKEN}: the Quix portal refused the token ({status}) at {url}{detail}")]
    Refused { status: u16, url: String, detail: String },
    #[error("{PORTAL}: cannot reach the Quix portal at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{WORKSPACE}: the Quix portal knows no workspace {workspace:?} (404 at {url})")]
    UnknownWorkspace { workspace: String, url: String },
    #[error("{PORTAL}: {url} answered {status}{detail}")]
    Status { url: String, status: u16, detail: String },
    #[error("{PORTAL}: unexpected answer from {url}: {reason}")]
    Malformed { url: String, reason: String },
    #[error("{WORKSPACE}: the token gives access to no workspace; set the workspace id")]
    NoWorkspace,
    #[error("{WORKSPACE}: none of the token's {count} workspaces ({ids}) has a topic {topic:?}; set the workspace id")]
    TopicInNoWorkspace { count: usize, ids: String, topic: String },
    #[error("{WORKSPACE}: the broker settings of workspace {workspace:?} name a CA certificate ({location}) but the workspace has none")]
    NoCertificate { workspace: String, location: String },
    #[error("{TOKEN}: cannot write the broker's CA certificate to {}: {source} (TMPDIR names the directory)", path.display())]
    CaFile { path: PathBuf, source: std::io::Error },
}

impl QuixError {
    /// True when the settings themselves are wrong (exit 64), not the portal's answer.
    pub fn is_config(&self) -> bool {
        matches!(self, QuixError::BadUrl { .. })
    }
}

/// What discovery found, for the start-up log line; holds the CA file while Sluice runs.
#[derive(Debug)]
pub struct Discovered {
    pub workspace: String,
    pub brokers: String,
    /// Each topic setting: the name given and the id it resolved to.
    pub topics: Vec<(String, String)>,
    pub ca_file: Option<CaFile>,
}

/// Discovery applies with a Quix SDK token and no broker address: an explicit
/// `Quix__Broker__Address` (or `KAFKA_BROKERS`) always wins.
pub fn applies(o: &Options) -> bool {
    let token = o.quix_sdk_token.as_ref().is_some_and(|t| !t.expose().trim().is_empty());
    token && nonempty(&o.brokers).is_none()
}

/// Fills `brokers`, the topic settings and the discovered librdkafka properties of `o` from
/// the Quix portal. Does nothing when discovery does not apply, or when `input` is not set
/// (validation then reports the missing topic).
pub async fn discover(o: &mut Options) -> Result<Option<Discovered>, QuixError> {
    if !applies(o) {
        return Ok(None);
    }
    let Some(input) = nonempty(&o.input) else { return Ok(None) };
    let token = o.quix_sdk_token.clone().unwrap_or_else(|| Secret::new(""));
    let portal = Portal::new(nonempty(&o.quix_portal_api).as_deref().unwrap_or(DEFAULT_PORTAL_API), token)?;
    let workspace = match nonempty(&o.quix_workspace_id) {
        Some(id) => id,
        // The workspace holding the first (default) topic.
        None => portal.find_workspace(input.split(',').next().unwrap_or(&input).trim()).await?,
    };
    let settings = portal.broker_settings(&workspace).await?;

    let mut properties: Vec<(String, KafkaValue)> =
        QUIX_CLIENT_DEFAULTS.iter().map(|(k, v)| (k.to_string(), KafkaValue::Plain(v.to_string()))).collect();
    properties.extend(settings.properties);
    let pem = match (settings.ca_pem, &settings.ca_location) {
        (Some(pem), _) => Some(pem),
        (None, Some(location)) if refers_elsewhere(location) => match portal.certificate(&workspace).await? {
            Some(pem) => Some(pem),
            None => return Err(QuixError::NoCertificate { workspace, location: location.clone() }),
        },
        (None, Some(location)) => {
            properties.push(("ssl.ca.location".to_owned(), KafkaValue::Plain(location.clone())));
            None
        }
        (None, None) => None,
    };
    let ca_file = pem.map(|pem| CaFile::write(&pem)).transpose()?;
    if let Some(ca) = &ca_file {
        properties.push(("ssl.ca.location".to_owned(), KafkaValue::Plain(ca.path().display().to_string())));
    }

    let mut topics = Vec::new();
    for topic in [&mut o.input, &mut o.output, &mut o.events, &mut o.replies] {
        if let Some(names) = nonempty(topic) {
            // `input` may list several topics: each is resolved.
            let mut ids = Vec::new();
            for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let id = portal.topic_id(&workspace, name).await?;
                topics.push((name.to_owned(), id.clone()));
                ids.push(id);
            }
            *topic = Some(ids.join(","));
        }
    }
    o.brokers = Some(settings.bootstrap.clone());
    o.discovered_kafka = properties;
    Ok(Some(Discovered { workspace, brokers: settings.bootstrap, topics, ca_file }))
}

/// A CA location that is neither librdkafka's `probe` nor a file on this machine names a
/// certificate the portal holds.
fn refers_elsewhere(location: &str) -> bool {
    location != "probe" && !Path::new(location).is_file()
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A workspace's topic id for a topic name: the Quix libraries' rule for topics the portal
/// does not know (the id is the name prefixed with the workspace id, unless it already is).
pub fn prefixed_topic(workspace: &str, name: &str) -> String {
    if name.starts_with(workspace) {
        name.to_owned()
    } else {
        format!("{workspace}-{name}")
    }
}

/// The broker settings from `/workspaces/{ws}/broker/librdkafka`.
#[derive(Debug, PartialEq, Eq)]
pub struct BrokerSettings {
    pub bootstrap: String,
    /// Every other property, secret ones masked in `Debug`; without `ssl.ca.*`.
    pub properties: Vec<(String, KafkaValue)>,
    /// The CA certificate carried inline (`ssl.ca.cert`, base64 PEM), decoded.
    pub ca_pem: Option<Vec<u8>>,
    /// A CA location the settings name instead.
    pub ca_location: Option<String>,
}

/// Parses the librdkafka settings: a JSON object of property names to strings (numbers and
/// booleans are taken as written; nulls are unset).
pub fn parse_broker_settings(body: &[u8]) -> Result<BrokerSettings, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON object of librdkafka settings: {e}"))?;
    let mut bootstrap = None;
    let mut properties = Vec::new();
    let mut ca_pem = None;
    let mut ca_location = None;
    for (key, value) in map {
        let value = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Null => continue,
            _ => return Err(format!("{key} is not a string, a number or a boolean")),
        };
        match key.as_str() {
            "bootstrap.servers" => bootstrap = Some(value),
            "ssl.ca.cert" => {
                let compact: String = value.split_whitespace().collect();
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map_err(|e| format!("ssl.ca.cert is not base64: {e}"))?;
                ca_pem = Some(pem);
            }
            "ssl.ca.location" => ca_location = Some(value),
            _ => {
                // The same rule as --kafka-property: such values never reach a log line.
                let value = if key.contains("password") || key.contains("secret") {
                    KafkaValue::Secret(Secret::new(value))
                } else {
                    KafkaValue::Plain(value)
                };
                properties.push((key, value));
            }
        }
    }
    let bootstrap = bootstrap.filter(|b| !b.trim().is_empty()).ok_or("no bootstrap.servers")?;
    Ok(BrokerSettings { bootstrap, properties, ca_pem, ca_location })
}

/// The workspace ids in `GET /workspaces`.
pub fn parse_workspaces(body: &[u8]) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Workspace {
        #[serde(rename = "workspaceId")]
        workspace_id: String,
    }
    let list: Vec<Workspace> = serde_json::from_slice(body).map_err(|e| format!("not a list of workspaces: {e}"))?;
    Ok(list.into_iter().map(|w| w.workspace_id).collect())
}

/// A topic of `GET /{ws}/topics` or `GET /{ws}/topics/{name}`.
#[derive(Debug, serde::Deserialize, PartialEq, Eq)]
pub struct Topic {
    /// The topic's name on the broker.
    pub id: String,
    /// The name users give it.
    #[serde(default)]
    pub name: String,
}

pub fn parse_topic(body: &[u8]) -> Result<Topic, String> {
    let topic: Topic = serde_json::from_slice(body).map_err(|e| format!("not a topic: {e}"))?;
    if topic.id.trim().is_empty() {
        return Err("the topic has an empty id".into());
    }
    Ok(topic)
}

pub fn parse_topics(body: &[u8]) -> Result<Vec<Topic>, String> {
    serde_json::from_slice(body).map_err(|e| format!("not a list of topics: {e}"))
}

/// A client of one Quix portal with one token.
pub struct Portal {
    client: reqwest::Client,
    base: reqwest::Url,
    token: Secret,
}

impl Portal {
    pub fn new(base: &str, token: Secret) -> Result<Portal, QuixError> {
        let bad = || QuixError::BadUrl { url: base.to_owned() };
        let url = reqwest::Url::parse(base.trim()).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.cannot_be_a_base() {
            return Err(bad());
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| QuixError::Unreachable { url: base.to_owned(), reason: chain(&e) })?;
        Ok(Portal { client, base: url, token })
    }

    /// The base URL with these path segments appended (each percent-encoded).
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// GETs a path: the body of a 2xx answer, `None` for 404, an error otherwise.
    async fn get(&self, segments: &[&str]) -> Result<(reqwest::Url, Option<Bytes>), QuixError> {
        let url = self.url(segments);
        let mut delay = FIRST_RETRY_DELAY;
        let mut attempt = 1;
        let response = loop {
            let sent = self
                .client
                .get(url.clone())
                .bearer_auth(self.token.expose())
                .header("X-Version", API_VERSION)
                .send()
                .await;
            match sent {
                Ok(r) => break r,
                Err(e) if (e.is_connect() || e.is_timeout()) && attempt < ATTEMPTS => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                // The URL leads the message already.
                Err(e) => return Err(QuixError::Unreachable { url: url.to_string(), reason: chain(&e.without_url()) }),
            }
        };
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| QuixError::Unreachable { url: url.to_string(), reason: chain(&e.without_url()) })?;
        match status {
            200..=299 => Ok((url, Some(body))),
            404 => Ok((url, None)),
            401 | 403 => Err(QuixError::Refused { status, url: url.to_string(), detail: detail(&body) }),
            _ => Err(QuixError::Status { url: url.to_string(), status, detail: detail(&body) }),
        }
    }

    /// The workspace to use when none is configured: the token's only one, or the one
    /// holding `topic`.
    pub async fn find_workspace(&self, topic: &str) -> Result<String, QuixError> {
        let (url, body) = self.get(&["workspaces"]).await?;
        let body =
            body.ok_or_else(|| QuixError::Status { url: url.to_string(), status: 404, detail: String::new() })?;
        let ids = parse_workspaces(&body).map_err(|reason| QuixError::Malformed { url: url.to_string(), reason })?;
        match ids.as_slice() {
            [] => Err(QuixError::NoWorkspace),
            [only] => Ok(only.clone()),
            several => {
                for id in several {
                    let (url, body) = self.get(&[id, "topics"]).await?;
                    let Some(body) = body else { continue };
                    let topics =
                        parse_topics(&body).map_err(|reason| QuixError::Malformed { url: url.to_string(), reason })?;
                    if topics.iter().any(|t| t.name == topic || t.id == topic) {
                        return Ok(id.clone());
                    }
                }
                Err(QuixError::TopicInNoWorkspace {
                    count: several.len(),
                    ids: several.join(", "),
                    topic: topic.to_owned(),
                })
            }
        }
    }

    pub async fn broker_settings(&self, workspace: &str) -> Result<BrokerSettings, QuixError> {
        let (url, body) = self.get(&["workspaces", workspace, "broker", "librdkafka"]).await?;
        let body =
            body.ok_or_else(|| QuixError::UnknownWorkspace { workspace: workspace.to_owned(), url: url.to_string() })?;
        parse_broker_settings(&body).map_err(|reason| QuixError::Malformed { url: url.to_string(), reason })
    }

    /// The workspace's CA certificate from `/workspaces/{ws}/certificates`, if it has one.
    pub async fn certificate(&self, workspace: &str) -> Result<Option<Vec<u8>>, QuixError> {
        let (url, body) = self.get(&["workspaces", workspace, "certificates"]).await?;
        let Some(body) = body.filter(|b| !b.is_empty()) else { return Ok(None) };
        zip_entry(&body, "ca.cert", MAX_CERTIFICATE_BYTES).map(Some).map_err(|reason| QuixError::Malformed {
            url: url.to_string(),
            reason: format!("certificate archive: {reason}"),
        })
    }

    /// The broker name of a topic: its id when the portal knows it, else the
    /// workspace-prefixed name.
    pub async fn topic_id(&self, workspace: &str, name: &str) -> Result<String, QuixError> {
        let (url, body) = self.get(&[workspace, "topics", name]).await?;
        match body {
            Some(body) => {
                parse_topic(&body).map(|t| t.id).map_err(|reason| QuixError::Malformed { url: url.to_string(), reason })
            }
            None => Ok(prefixed_topic(workspace, name)),
        }
    }
}

/// An error and its causes on one line ("error sending request: … : Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The portal's own words about a refusal: its JSON `message`, or the start of its text.
fn detail(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(m) = v.get("message").and_then(|m| m.as_str()) {
            return format!(": {m}");
        }
    }
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
    if line.is_empty() {
        String::new()
    } else {
        format!(": {line}")
    }
}

/// The broker's CA certificate in a file of its own, readable by this user only, removed
/// when dropped (librdkafka reads it when each client is created).
#[derive(Debug)]
pub struct CaFile {
    path: PathBuf,
}

impl CaFile {
    /// Writes `pem` to a new file in the temporary directory (`TMPDIR`, else `/tmp`).
    pub fn write(pem: &[u8]) -> Result<CaFile, QuixError> {
        Self::write_in(&std::env::temp_dir(), pem)
    }

    pub fn write_in(dir: &Path, pem: &[u8]) -> Result<CaFile, QuixError> {
        let path = dir.join(format!("sluice-quix-ca-{}.pem", uuid::Uuid::new_v4().simple()));
        let mut options = std::fs::OpenOptions::new();
        // create_new: never follow or reuse a file someone else put there.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&path).and_then(|mut f| f.write_all(pem).and_then(|_| f.sync_all()));
        match written {
            Ok(()) => Ok(CaFile { path }),
            Err(source) => {
                let _ = std::fs::remove_file(&path);
                Err(QuixError::CaFile { path, source })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One file out of the portal's certificate archive, at most `limit` bytes.
fn zip_entry(archive: &[u8], name: &str, limit: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(archive)).map_err(|e| e.to_string())?;
    let file = archive.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    let mut out = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| format!("{name}: {e}"))?;
    if out.len() > limit {
        return Err(format!("{name} is larger than {limit} bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the zip archives below hold as `ca.cert`.
    const PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBszCCAVmgAwIBAgIUQk3VJ0dGm5N1aFgq7n4w0Vx3kQ4wCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMcXVpeC10ZXN0LWNhMB4XDTI2MDEwMTAwMDAwMFoXDTM2MDEw
MTAwMDAwMFowFzEVMBMGA1UEAwwMcXVpeC10ZXN0LWNhMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEq0vX1m3oQkz0vO1n2y4j3n0m7l8s6Z9v8Q2Zc1b9m3s0oK7v
-----END CERTIFICATE-----
";
    /// Python's zipfile, ZIP_DEFLATED (a dynamic-Huffman block), `readme.txt` before `ca.cert`.
    const DEFLATED_ZIP: &str = "UEsDBBQAAAAIAOCDd13L/4kUEAAAABAAAAAKAAAAcmVhZG1lLnR4dMsvyUgtUkjLzEkFEkXFJQBQSwMEFAAAAAgA4IN3XXV8NMjcAAAAOgEAAAcAAABjYS5jZXJ0hdDNToQwEAfwe5/CFyBpAWX32C9wXIupYRG4KZqaxYIbEkZ5eutmDyZ7cJI5zC+TyeQfRaGELqC8kvqxghwkr/QvRsQAiHmVktfecQTBHeztkNR39LXw1yV7zt0xG1Ok9Vcy2BSla2E3dbAeqA77SPJV10aYgrN9ADR9U3++SUa7pqT3T+W7EWmjKoiN0mgqjkaFzqdg5mTkD+K/x/IBNba35w8kty2Q86C47ZV1XB/p0jCfTHZY6fLAxvg7PSQj9dnHZr7ptsvGxl3PXrY+mem0yxZySkKX6jKdH1BLAQIUAxQAAAAIAOCDd13L/4kUEAAAABAAAAAKAAAAAAAAAAAAAACAAQAAAAByZWFkbWUudHh0UEsBAhQDFAAAAAgA4IN3XXV8NMjcAAAAOgEAAAcAAAAAAAAAAAAAAIABOAAAAGNhLmNlcnRQSwUGAAAAAAIAAgBtAAAAOQEAAAAA";
    /// Python's zipfile, ZIP_STORED.
    const STORED_ZIP: &str = "UEsDBBQAAAAAAOCDd111fDTIOgEAADoBAAAHAAAAY2EuY2VydC0tLS0tQkVHSU4gQ0VSVElGSUNBVEUtLS0tLQpNSUlCc3pDQ0FWbWdBd0lCQWdJVVFrM1ZKMGRHbTVOMWFGZ3E3bjR3MFZ4M2tRNHdDZ1lJS29aSXpqMEVBd0l3CkZ6RVZNQk1HQTFVRUF3d01jWFZwZUMxMFpYTjBMV05oTUI0WERUSTJNREV3TVRBd01EQXdNRm9YRFRNMk1ERXcKTVRBd01EQXdNRm93RnpFVk1CTUdBMVVFQXd3TWNYVnBlQzEwWlhOMExXTmhNRmt3RXdZSEtvWkl6ajBDQVFZSQpLb1pJemowREFRY0RRZ0FFcTB2WDFtM29Ra3owdk8xbjJ5NGozbjBtN2w4czZaOXY4UTJaYzFiOW0zczBvSzd2Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0KUEsBAhQDFAAAAAAA4IN3XXV8NMg6AQAAOgEAAAcAAAAAAAAAAAAAAIABAAAAAGNhLmNlcnRQSwUGAAAAAAEAAQA1AAAAXwEAAAAA";

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    #[test]
    fn broker_settings_parse_the_documented_librdkafka_answer() {
        let body = br#"{"bootstrap.servers":"kafka-k1.quix.io:9093,kafka-k2.quix.io:9093",
            "security.protocol":"SASL_SSL","sasl.mechanism":"SCRAM-SHA-256",
            "sasl.username":"ws-user","sasl.password":"pw-123","client.id":"ws-client",
            "ssl.ca.cert":"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
            "socket.keepalive.enable":true,"message.max.bytes":1048576,"ssl.endpoint.identification.algorithm":null}"#;
        let s = parse_broker_settings(body).unwrap();
        assert_eq!(s.bootstrap, "kafka-k1.quix.io:9093,kafka-k2.quix.io:9093");
        assert_eq!(s.ca_pem.as_deref(), Some(&b"-----BEGIN CERTIFICATE-----\n"[..]));
        assert_eq!(s.ca_location, None);
        let get = |k: &str| s.properties.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("security.protocol"), Some(KafkaValue::Plain("SASL_SSL".into())));
        assert_eq!(get("client.id"), Some(KafkaValue::Plain("ws-client".into())));
        assert_eq!(get("socket.keepalive.enable"), Some(KafkaValue::Plain("true".into())));
        assert_eq!(get("message.max.bytes"), Some(KafkaValue::Plain("1048576".into())));
        assert!(matches!(get("sasl.password"), Some(KafkaValue::Secret(p)) if p.expose() == "pw-123"));
        assert!(get("ssl.endpoint.identification.algorithm").is_none());
        assert!(get("bootstrap.servers").is_none() && get("ssl.ca.cert").is_none());
        assert!(!format!("{s:?}").contains("pw-123"), "the SASL password reached Debug");
    }

    #[test]
    fn broker_settings_without_servers_or_with_bad_values_are_refused() {
        assert!(parse_broker_settings(br#"{"security.protocol":"SSL"}"#).unwrap_err().contains("bootstrap.servers"));
        assert!(parse_broker_settings(br#"{"bootstrap.servers":"  "}"#).is_err());
        assert!(parse_broker_settings(br#"{"bootstrap.servers":"b:9092","ssl.ca.cert":"%%%"}"#)
            .unwrap_err()
            .contains("ssl.ca.cert"));
        assert!(parse_broker_settings(br#"{"bootstrap.servers":"b:9092","x":{"y":1}}"#).unwrap_err().contains("x"));
        assert!(parse_broker_settings(b"<html>Bad gateway</html>").is_err());
        let s = parse_broker_settings(br#"{"bootstrap.servers":"b:9092","ssl.ca.location":"/certs/ca.cert"}"#).unwrap();
        assert_eq!(s.ca_location.as_deref(), Some("/certs/ca.cert"));
    }

    #[test]
    fn workspaces_and_topics_parse_from_the_portal_shapes() {
        let ws = br#"[{"workspaceId":"acme-prod","name":"Production","brokerSettings":{"brokerType":"SharedKafka"}},
                      {"workspaceId":"acme-dev","name":"Dev"}]"#;
        assert_eq!(parse_workspaces(ws).unwrap(), ["acme-prod", "acme-dev"]);
        assert!(parse_workspaces(br#"{"message":"nope"}"#).is_err());
        let topic = br#"{"id":"acme-prod-telemetry","name":"telemetry","workspaceId":"acme-prod",
                         "status":"Ready","configuration":{"partitions":2,"replicationFactor":2}}"#;
        assert_eq!(parse_topic(topic).unwrap(), Topic { id: "acme-prod-telemetry".into(), name: "telemetry".into() });
        assert!(parse_topic(br#"{"id":"","name":"t"}"#).is_err());
        let topics = parse_topics(br#"[{"id":"acme-prod-a","name":"a"},{"id":"acme-prod-b","name":"b"}]"#).unwrap();
        assert_eq!(topics[1].id, "acme-prod-b");
    }

    #[test]
    fn unknown_topics_get_the_workspace_prefix_once() {
        assert_eq!(prefixed_topic("acme-prod", "telemetry"), "acme-prod-telemetry");
        assert_eq!(prefixed_topic("acme-prod", "acme-prod-telemetry"), "acme-prod-telemetry");
    }

    #[test]
    fn portal_urls_append_escaped_segments_to_the_base() {
        let portal = Portal::new("https://portal-api.example.io/", Secret::new("t")).unwrap();
        assert_eq!(
            portal.url(&["workspaces", "ws-1", "broker", "librdkafka"]).as_str(),
            "https://portal-api.example.io/workspaces/ws-1/broker/librdkafka"
        );
        let portal = Portal::new("http://127.0.0.1:9/api", Secret::new("t")).unwrap();
        assert_eq!(portal.url(&["ws", "topics", "a/b c"]).as_str(), "http://127.0.0.1:9/api/ws/topics/a%2Fb%20c");
        for bad in ["portal-api.example.io", "ftp://x/", "http://", "mailto:a@b"] {
            let e = Portal::new(bad, Secret::new("t")).err().expect(bad);
            assert!(e.is_config() && e.to_string().contains("Quix__Portal__Api"), "{e}");
        }
    }

    #[test]
    fn refusals_quote_the_portal_and_name_the_token() {
        let e = QuixError::Refused {
            status: 401,
            url: "https://p/workspaces".into(),
            detail: detail(br#"{"message":"User is not authenticated","correlationId":"2332CBB8"}"#),
        };
        assert_eq!(
            e.to_string(),
            "--quix-sdk-token / Quix__Sdk__Token: the Quix portal refused the token (401) at https://p/workspaces: User is not authenticated"
        );
        assert_eq!(detail(b""), "");
        assert_eq!(detail(b"Service\n Unavailable"), ": Service Unavailable");
    }

    #[test]
    fn applies_only_with_a_token_and_no_broker() {
        let mut o = Options { quix_sdk_token: Some(Secret::new("sdk-token")), ..Options::default() };
        assert!(applies(&o));
        o.brokers = Some("k:9092".into());
        assert!(!applies(&o), "an explicit broker address wins");
        o.brokers = None;
        o.quix_sdk_token = Some(Secret::new(" "));
        assert!(!applies(&o));
    }

    #[test]
    fn certificates_come_out_of_stored_and_deflated_archives() {
        assert_eq!(zip_entry(&b64(DEFLATED_ZIP), "ca.cert", 1 << 20).unwrap(), PEM.as_bytes());
        assert_eq!(zip_entry(&b64(STORED_ZIP), "ca.cert", 1 << 20).unwrap(), PEM.as_bytes());
        assert_eq!(zip_entry(&b64(DEFLATED_ZIP), "readme.txt", 1 << 20).unwrap(), b"other file first");
        assert!(zip_entry(&b64(DEFLATED_ZIP), "other", 1 << 20).unwrap_err().starts_with("other: "));
        assert!(zip_entry(&b64(STORED_ZIP), "ca.cert", 10).unwrap_err().contains("larger than 10"));
        assert!(zip_entry(b"not a zip at all, not even close", "ca.cert", 1 << 20).is_err());
    }

    #[test]
    fn the_ca_file_is_private_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CaFile::write_in(dir.path(), PEM.as_bytes()).unwrap();
        let path = ca.path().to_owned();
        assert_eq!(std::fs::read(&path).unwrap(), PEM.as_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        drop(ca);
        assert!(!path.exists());
        let e = CaFile::write_in(&dir.path().join("missing"), b"x").unwrap_err();
        assert!(e.to_string().contains("Quix__Sdk__Token") && e.to_string().contains("missing"), "{e}");
    }
}
