//! The Schema Registry client: a schema fetched by id (with its references) the first time
//! a record names it, parsed once and kept for good (ids are immutable); an id that could
//! not be fetched backs off on its own, so a registry that is away costs each new id one
//! quick failure, and known ids keep decoding.
//!
//! reqwest and a cache of our own rather than a registry client crate: the Rust clients
//! bring their own Avro and Protobuf crates (and versions), resolve references their own
//! way (Protobuf imports need compiling from source, which they leave out or shell out
//! for), and retry or fail on their own terms, where the gateway needs a short bounded
//! wait, a back-off per id and a reason to count. The REST API used is two GETs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde::Deserialize;
use tokio::sync::{watch, Semaphore};

use super::avro::AvroSchema;
use super::protobuf::ProtoSchema;
use super::{DecodeSetupError, Failure, RegistrySettings};
use crate::backend::Backoff;
use crate::metrics::Metrics;
use crate::secret::Secret;

/// How long a record waits for its schema's first fetch: a stalled registry holds a
/// partition this long at most, then its records go raw with their error.
const PREPARE_WAIT: Duration = Duration::from_secs(2);
/// One request, answer included. A fetch goes on after `PREPARE_WAIT` (later records of
/// that id decode once it lands), but not forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of one answer read: a schema with its text is far smaller; more is not one.
const MAX_ANSWER_BYTES: usize = 8 << 20;
/// Fetches at once: a topic with many new ids must not open a connection for each.
const CONCURRENT_FETCHES: usize = 4;
/// References followed for one schema, all levels together.
const MAX_REFERENCES: usize = 256;
/// Ids failing at once, at most. Corrupt bytes can name any id: past this, ids whose
/// back-off has passed are forgotten, and a new one is not tried until there is room.
const MAX_FAILING: usize = 1024;

/// The back-off of an id that failed.
const BACKOFF: Backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(60) };

/// A schema as the registry holds it, parsed.
#[derive(Debug)]
pub enum Schema {
    /// Boxed: far larger than the others.
    Avro(Box<AvroSchema>),
    Protobuf(ProtoSchema),
    /// A JSON Schema: values are JSON after the header; the schema itself is not needed.
    Json,
}

impl Schema {
    /// The registry's name for its type (`schemaType`).
    pub fn kind(&self) -> &'static str {
        match self {
            Schema::Avro(_) => "an AVRO schema",
            Schema::Protobuf(_) => "a PROTOBUF schema",
            Schema::Json => "a JSON schema",
        }
    }
}

/// The Schema Registry client: one per gateway, shared by every topic's decoder. Cheap to
/// clone.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    client: reqwest::Client,
    /// The registry's URL without a trailing slash (it may have a path of its own).
    base: String,
    user: Option<(String, Option<Secret>)>,
    /// Every id asked for, and where it stands.
    slots: RwLock<HashMap<u32, Slot>>,
    fetches: Semaphore,
    backoff: Backoff,
}

enum Slot {
    Known(Arc<Schema>),
    /// A fetch is under way; `done` changes (its sender drops) when it ends. Records wait
    /// for it `until` then at most, together: a slow registry stalls a partition once per
    /// fetch, not once per record.
    Fetching {
        done: watch::Receiver<()>,
        until: Instant,
    },
    /// Not tried again before `retry`.
    Failed {
        failure: Failure,
        retry: Instant,
        failures: u32,
    },
}

/// `GET /schemas/ids/{id}` and `GET /subjects/{subject}/versions/{version}` both answer
/// with these fields (and others, ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    schema: String,
    /// Absent for Avro.
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

#[derive(Debug, Clone, Deserialize)]
struct Reference {
    /// For Protobuf, the name the schema imports it by; for Avro, the type's full name.
    name: String,
    subject: String,
    version: i64,
}

/// The registry's error body.
#[derive(Debug, Default, Deserialize)]
struct ErrorAnswer {
    message: Option<String>,
}

impl Registry {
    /// The client for the registry at `settings.url`. `metrics` is taken for the registry's
    /// own counters; its failures are counted where they surface, per record and reason.
    pub fn new(settings: &RegistrySettings, _metrics: Metrics) -> Result<Registry, DecodeSetupError> {
        // The URL is not echoed: it may hold credentials.
        let url =
            reqwest::Url::parse(&settings.url).map_err(|e| DecodeSetupError::RegistryUrl(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DecodeSetupError::RegistryUrl(format!("{}: is not http or https", url.scheme())));
        }
        // Schemas are fetched once each: a few idle connections are plenty.
        let client =
            crate::backend::client("the Schema Registry", REQUEST_TIMEOUT, 4).map_err(DecodeSetupError::HttpClient)?;
        Ok(Registry {
            shared: Arc::new(Shared {
                client,
                base: settings.url.trim_end_matches('/').to_owned(),
                user: settings.user.clone().map(|user| (user, settings.password.clone())),
                slots: RwLock::new(HashMap::new()),
                fetches: Semaphore::new(CONCURRENT_FETCHES),
                backoff: BACKOFF,
            }),
        })
    }

    /// Makes sure schema `id` is known, fetching it if it is new (or its back-off has
    /// passed), waiting `PREPARE_WAIT` at most. Never fails: `lookup` says why, after.
    pub(super) async fn prepare(&self, id: u32) {
        if let Some((mut done, until)) = self.start(id) {
            // Either way the slot says what happened (or that it is still under way).
            let _ = tokio::time::timeout_at(until.into(), done.changed()).await;
        }
    }

    /// The schema `id`, if known; else why not. No I/O.
    pub(super) fn lookup(&self, id: u32) -> Result<Arc<Schema>, Failure> {
        match self.shared.slots.read().get(&id) {
            Some(Slot::Known(schema)) => Ok(schema.clone()),
            Some(Slot::Failed { failure, .. }) => Err(failure.clone()),
            Some(Slot::Fetching { .. }) => Err(Failure::new(
                "registry_unavailable",
                Some(id),
                format!("schema {id}: the registry has not answered yet"),
            )),
            None => {
                Err(Failure::new("unknown_schema", Some(id), format!("schema {id}: not fetched from the registry")))
            }
        }
    }

    /// Starts fetching `id` when that is due; the signal of the fetch under way, if any,
    /// and until when to wait for it.
    fn start(&self, id: u32) -> Option<(watch::Receiver<()>, Instant)> {
        let now = Instant::now();
        // The path of nearly every record: a known id, under the read lock.
        match self.shared.slots.read().get(&id) {
            Some(Slot::Known(_)) => return None,
            Some(Slot::Fetching { done, until }) => return Some((done.clone(), *until)),
            Some(Slot::Failed { retry, .. }) if now < *retry => return None,
            _ => {}
        }
        let mut slots = self.shared.slots.write();
        let failures = match slots.get(&id) {
            Some(Slot::Known(_)) => return None,
            Some(Slot::Fetching { done, until }) => return Some((done.clone(), *until)),
            Some(Slot::Failed { retry, .. }) if now < *retry => return None,
            Some(Slot::Failed { failures, .. }) => *failures,
            None => {
                if !room_for_one_more(&mut slots, now) {
                    return None;
                }
                0
            }
        };
        let (finished, done) = watch::channel(());
        let until = now + PREPARE_WAIT;
        slots.insert(id, Slot::Fetching { done: done.clone(), until });
        drop(slots);
        let registry = self.clone();
        tokio::spawn(async move {
            let outcome = registry.fetch(id).await;
            registry.finish(id, failures, outcome);
            drop(finished);
        });
        Some((done, until))
    }

    fn finish(&self, id: u32, failures: u32, outcome: Result<Schema, Failure>) {
        let slot = match outcome {
            Ok(schema) => {
                if failures > 0 {
                    tracing::info!(schema = id, failures, "schema fetched from the registry after failing");
                } else {
                    tracing::debug!(schema = id, kind = schema.kind(), "schema fetched from the registry");
                }
                Slot::Known(Arc::new(schema))
            }
            Err(failure) => {
                let failures = failures + 1;
                Slot::Failed { failure, retry: Instant::now() + self.shared.backoff.after(failures), failures }
            }
        };
        self.shared.slots.write().insert(id, slot);
    }

    /// Schema `id` and its references, parsed.
    async fn fetch(&self, id: u32) -> Result<Schema, Failure> {
        // The semaphore is never closed.
        let _permit = self.shared.fetches.acquire().await.ok();
        let what = format!("schema {id}");
        let root = self.get(&format!("{}/schemas/ids/{id}", self.shared.base), id, &what).await?;
        let references = self.references(id, &root).await?;
        let invalid = |error: String| Failure::new("invalid_schema", Some(id), format!("schema {id}: {error}"));
        match root.schema_type.as_deref().unwrap_or("AVRO") {
            "AVRO" => {
                let named: Vec<String> = references.into_iter().map(|(_, answer)| answer.schema).collect();
                AvroSchema::parse(&root.schema, &named).map(|s| Schema::Avro(Box::new(s))).map_err(invalid)
            }
            "PROTOBUF" => {
                let imports: Vec<(String, String)> =
                    references.into_iter().map(|(name, answer)| (name, answer.schema)).collect();
                // The file's own name matters only to the files it imports, which cannot
                // import it back.
                ProtoSchema::compile(&format!("registry/{id}.proto"), &root.schema, &imports)
                    .map(Schema::Protobuf)
                    .map_err(invalid)
            }
            "JSON" => Ok(Schema::Json),
            other => Err(invalid(format!("unknown schemaType {other}"))),
        }
    }

    /// Every schema `root` references, directly or not, once each, with the name it is
    /// referenced by.
    async fn references(&self, id: u32, root: &Answer) -> Result<Vec<(String, Answer)>, Failure> {
        let mut queue: VecDeque<Reference> = root.references.iter().cloned().collect();
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        while let Some(reference) = queue.pop_front() {
            if !seen.insert((reference.subject.clone(), reference.version)) {
                continue;
            }
            if found.len() == MAX_REFERENCES {
                let error = format!("schema {id}: more than {MAX_REFERENCES} references");
                return Err(Failure::new("invalid_schema", Some(id), error));
            }
            let url = format!(
                "{}/subjects/{}/versions/{}",
                self.shared.base,
                percent_encoding::utf8_percent_encode(&reference.subject, percent_encoding::NON_ALPHANUMERIC),
                reference.version
            );
            let what = format!("schema {id}'s reference {} version {}", reference.subject, reference.version);
            let answer = self.get(&url, id, &what).await?;
            queue.extend(answer.references.iter().cloned());
            found.push((reference.name, answer));
        }
        Ok(found)
    }

    /// One GET, its failures said as `what` failed, for schema `id`.
    async fn get(&self, url: &str, id: u32, what: &str) -> Result<Answer, Failure> {
        let unavailable = |error: String| Failure::new("registry_unavailable", Some(id), format!("{what}: {error}"));
        let mut request = self.shared.client.get(url).header(
            reqwest::header::ACCEPT,
            "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json",
        );
        if let Some((user, password)) = &self.shared.user {
            request = request.basic_auth(user, password.as_ref().map(Secret::expose));
        }
        let response =
            request.send().await.map_err(|e| unavailable(format!("the registry is unreachable: {}", cause(&e))))?;
        let status = response.status();
        let body = crate::backend::body(response, MAX_ANSWER_BYTES).await;
        if status.is_success() {
            let body = body.map_err(|e| unavailable(format!("the registry's answer: {e}")))?;
            return serde_json::from_slice::<Answer>(&body)
                .map_err(|e| unavailable(format!("the registry's answer is not a schema: {e}")));
        }
        let message =
            body.ok().and_then(|b| serde_json::from_slice::<ErrorAnswer>(&b).ok()).unwrap_or_default().message;
        let said = message.map(|m| format!(" ({m})")).unwrap_or_default();
        Err(match status {
            reqwest::StatusCode::NOT_FOUND => {
                Failure::new("unknown_schema", Some(id), format!("{what}: not in the registry{said}"))
            }
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                unavailable(format!("the registry refused the credentials (HTTP {}){said}", status.as_u16()))
            }
            _ => unavailable(format!("the registry answered HTTP {}{said}", status.as_u16())),
        })
    }

    /// The same registry, its back-off shortened: for tests that wait for it to pass.
    #[cfg(test)]
    fn with_backoff(settings: &RegistrySettings, first: Duration, max: Duration) -> Registry {
        let mut registry = Registry::new(settings, Metrics::new()).unwrap();
        Arc::get_mut(&mut registry.shared).unwrap().backoff = Backoff { first, max };
        registry
    }
}

impl std::fmt::Debug for Registry {
    // Not the URL: it may hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("schemas", &self.shared.slots.read().len()).finish_non_exhaustive()
    }
}

/// Whether one more id may be tried, with `MAX_FAILING` failing already: those whose
/// back-off has passed are forgotten first (they are tried again as new ids).
fn room_for_one_more(slots: &mut HashMap<u32, Slot>, now: Instant) -> bool {
    let failing = |slots: &HashMap<u32, Slot>| slots.values().filter(|s| !matches!(s, Slot::Known(_))).count();
    if failing(slots) < MAX_FAILING {
        return true;
    }
    slots.retain(|_, slot| !matches!(slot, Slot::Failed { retry, .. } if *retry <= now));
    failing(slots) < MAX_FAILING
}

/// What went wrong at the bottom of a request's error (the top only says "error sending
/// request"); no URL, so no host reaches a client's `decodeError`.
fn cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost_reflect::prost::Message;
    use serde_json::json;
    use sluice_support::registry::{Reference as Ref, SchemaRegistry, Subject};

    use super::*;
    use crate::decode::protobuf::tests as proto;
    use crate::decode::{wire, Decoder, Format, TopicFormats};
    use crate::record::{Decoded, Record};

    const READING: &str = r#"{"type":"record","name":"Reading","namespace":"acme",
        "fields":[{"name":"sensor","type":"string"},{"name":"celsius","type":"double"}]}"#;

    fn settings(registry: &SchemaRegistry) -> RegistrySettings {
        RegistrySettings { url: registry.url(), user: None, password: None }
    }

    fn decoder(formats: TopicFormats, registry: &Registry) -> Decoder {
        Decoder::new("t", formats, Some(registry.clone()), Metrics::new()).unwrap()
    }

    fn avro_values() -> TopicFormats {
        TopicFormats { value: Format::Avro, ..TopicFormats::default() }
    }

    fn record(value: Vec<u8>) -> Record {
        Record {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from(value)),
            headers: Vec::new(),
            decoded: None,
        }
    }

    /// A Reading framed for schema `id`.
    fn reading(id: u32, sensor: &str) -> Vec<u8> {
        let schema = AvroSchema::parse(READING, &[]).unwrap();
        let value = apache_avro::types::Value::Record(vec![
            ("sensor".into(), apache_avro::types::Value::String(sensor.into())),
            ("celsius".into(), apache_avro::types::Value::Double(21.5)),
        ]);
        wire::frame(id, None, &schema.encode(value))
    }

    async fn decode(decoder: &Decoder, value: Vec<u8>) -> Record {
        let mut record = record(value);
        decoder.prepare(&record).await;
        decoder.decode(&mut record);
        record
    }

    fn json_of(record: &Record) -> serde_json::Value {
        match &record.decoded {
            Some(Decoded::Json(json)) => serde_json::from_slice(json).unwrap(),
            other => panic!("not decoded: {other:?}"),
        }
    }

    fn failure(record: &Record) -> &str {
        record.decode_error().unwrap_or_else(|| panic!("decoded: {:?}", record.decoded))
    }

    #[tokio::test]
    async fn a_schema_is_fetched_by_id_once_and_then_served_from_the_cache() {
        let stand_in = SchemaRegistry::start().await;
        let id = stand_in.register("readings-value", Subject::avro(READING));
        let registry = Registry::new(&settings(&stand_in), Metrics::new()).unwrap();
        let decoder = decoder(avro_values(), &registry);

        let first = decode(&decoder, reading(id, "s1")).await;
        assert_eq!(json_of(&first), json!({ "sensor": "s1", "celsius": 21.5 }));
        assert_eq!(stand_in.requests(), 1);
        let second = decode(&decoder, reading(id, "s2")).await;
        assert_eq!(json_of(&second), json!({ "sensor": "s2", "celsius": 21.5 }));
        assert_eq!(stand_in.requests(), 1, "a known id is never fetched again");

        let corrupt = decode(&decoder, wire::frame(id, None, &[0x02, b'a'])).await;
        assert!(failure(&corrupt).starts_with(&format!("schema {id}: not Avro of this schema: ")), "{:?}", corrupt);
        assert_eq!(stand_in.requests(), 1);
    }

    #[tokio::test]
    async fn an_avro_schema_referencing_a_type_of_another_subject_decodes() {
        let stand_in = SchemaRegistry::start().await;
        stand_in.register(
            "acme.Location",
            Subject::avro(
                r#"{"type":"record","name":"Location","namespace":"acme","fields":[{"name":"lat","type":"double"}]}"#,
            ),
        );
        let text = r#"{"type":"record","name":"Fix","namespace":"acme",
            "fields":[{"name":"at","type":"Location"},{"name":"previous","type":["null","acme.Location"]}]}"#;
        let id = stand_in
            .register("fixes-value", Subject::avro(text).referencing(Ref::new("acme.Location", "acme.Location", 1)));
        let registry = Registry::new(&settings(&stand_in), Metrics::new()).unwrap();
        let location =
            r#"{"type":"record","name":"Location","namespace":"acme","fields":[{"name":"lat","type":"double"}]}"#;
        let schema = AvroSchema::parse(text, &[location.to_owned()]).unwrap();
        use apache_avro::types::Value;
        let at = Value::Record(vec![("lat".into(), Value::Double(52.5))]);
        let value = Value::Record(vec![("at".into(), at.clone()), ("previous".into(), Value::Union(1, Box::new(at)))]);
        let bytes = wire::frame(id, None, &schema.encode(value));

        let record = decode(&decoder(avro_values(), &registry), bytes).await;
        assert_eq!(json_of(&record), json!({ "at": { "lat": 52.5 }, "previous": { "lat": 52.5 } }));
        assert_eq!(stand_in.requests(), 2, "the schema and its one reference");
    }

    #[tokio::test]
    async fn a_proto_importing_another_file_decodes_the_message_its_indexes_name() {
        let stand_in = SchemaRegistry::start().await;
        stand_in.register("acme/common.proto", Subject::protobuf(proto::COMMON));
        let id = stand_in.register(
            "telemetry-value",
            Subject::protobuf(proto::TELEMETRY).referencing(Ref::new("acme/common.proto", "acme/common.proto", 1)),
        );
        let registry = Registry::new(&settings(&stand_in), Metrics::new()).unwrap();
        let decoder = decoder(TopicFormats { value: Format::Protobuf, ..TopicFormats::default() }, &registry);

        let schema = proto::telemetry();
        let record = decode(&decoder, wire::frame(id, Some(&[1, 0]), &proto::reading(&schema))).await;
        assert_eq!(&record.decoded, &Some(Decoded::Json(Bytes::from_static(proto::READING_JSON.as_bytes()))));

        // [0]: the first message type, in the one-byte form.
        let mut ping = prost_reflect::DynamicMessage::new(schema.message(&[0]).unwrap());
        ping.set_field_by_name("from", prost_reflect::Value::String("a".into()));
        let record = decode(&decoder, wire::frame(id, Some(&[0]), &ping.encode_to_vec())).await;
        assert_eq!(json_of(&record), json!({ "from": "a" }));

        let record = decode(&decoder, wire::frame(id, Some(&[5]), &[])).await;
        assert!(failure(&record).contains("no message type"), "{:?}", record.decoded);
    }

    #[tokio::test]
    async fn an_unknown_id_fails_with_its_reason_and_the_raw_value_stays() {
        let stand_in = SchemaRegistry::start().await;
        let registry = Registry::new(&settings(&stand_in), Metrics::new()).unwrap();
        let metrics = Metrics::new();
        let decoder = Decoder::new("t", avro_values(), Some(registry), metrics.clone()).unwrap();
        let bytes = reading(404, "s1");
        let record = decode(&decoder, bytes.clone()).await;
        assert_eq!(failure(&record), "schema 404: not in the registry (Schema not found)");
        assert_eq!(record.value.as_deref(), Some(&bytes[..]));
        assert!(metrics.render().contains(r#"reason="unknown_schema""#));
    }

    #[tokio::test]
    async fn a_schema_of_another_type_than_the_format_is_a_wrong_type() {
        let stand_in = SchemaRegistry::start().await;
        let id = stand_in.register("t-value", Subject::protobuf(proto::COMMON));
        let registry = Registry::new(&settings(&stand_in), Metrics::new()).unwrap();
        let record = decode(&decoder(avro_values(), &registry), reading(id, "s")).await;
        assert_eq!(failure(&record), format!("schema {id} is a PROTOBUF schema; the topic's format is avro"));
    }

    #[tokio::test]
    async fn json_schema_values_and_keys_need_no_fetch() {
        let stand_in = SchemaRegistry::start().await;
        let registry = Registry::new(&settings(&stand_in), Metrics::new()).unwrap();
        let formats = TopicFormats { value: Format::JsonSchema, key: Format::JsonSchema, ..TopicFormats::default() };
        let decoder = decoder(formats, &registry);
        let mut r = record(wire::frame(3, None, br#"{"a":[1,2]}"#));
        r.key = Some(Bytes::from(wire::frame(3, None, br#""device-7""#)));
        decoder.prepare(&r).await;
        decoder.decode(&mut r);
        assert_eq!(r.decoded, Some(Decoded::Json(Bytes::from_static(br#"{"a":[1,2]}"#))));
        assert_eq!(r.key.as_deref(), Some(&b"device-7"[..]));
        assert_eq!(stand_in.requests(), 0);
    }

    #[tokio::test]
    async fn while_the_registry_is_away_known_ids_decode_and_new_ones_back_off_until_it_returns() {
        let mut stand_in = SchemaRegistry::start().await;
        let known = stand_in.register("readings-value", Subject::avro(READING));
        let later = stand_in.register(
            "other-value",
            Subject::avro(r#"{"type":"record","name":"Other","fields":[{"name":"sensor","type":"string"},{"name":"celsius","type":"double"}]}"#),
        );
        let registry = Registry::with_backoff(&settings(&stand_in), Duration::from_secs(1), Duration::from_secs(5));
        let decoder = decoder(avro_values(), &registry);
        assert!(matches!(decode(&decoder, reading(known, "s")).await.decoded, Some(Decoded::Json(_))));

        stand_in.stop().await;
        let started = Instant::now();
        let away = decode(&decoder, reading(later, "s")).await;
        assert!(started.elapsed() < PREPARE_WAIT, "a registry that refuses connections fails fast");
        assert!(failure(&away).contains("the registry is unreachable"), "{:?}", away.decoded);
        assert!(matches!(decode(&decoder, reading(known, "s")).await.decoded, Some(Decoded::Json(_))));

        // Back: within the id's back-off nothing is asked, and the record still goes raw.
        stand_in.start_again().await;
        let before = stand_in.requests();
        let record = decode(&decoder, reading(later, "s")).await;
        assert!(failure(&record).contains("the registry is unreachable"));
        assert_eq!(stand_in.requests(), before, "no request within the back-off");

        // Once it has passed, the next record fetches the schema and decodes.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let record = decode(&decoder, reading(later, "s2")).await;
            if let Some(Decoded::Json(_)) = record.decoded {
                assert_eq!(json_of(&record), json!({ "sensor": "s2", "celsius": 21.5 }));
                break;
            }
            assert!(Instant::now() < deadline, "never recovered: {:?}", record.decoded);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(stand_in.requests(), before + 1);
    }

    #[test]
    fn the_back_off_doubles_up_to_its_bound() {
        let waits: Vec<u64> = (1..=8).map(|n| BACKOFF.after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(BACKOFF.after(u32::MAX), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn basic_credentials_are_sent_and_wrong_ones_are_a_failure() {
        let stand_in = SchemaRegistry::start_with_auth("reader", "pa:ss").await;
        let id = stand_in.register("readings-value", Subject::avro(READING));
        let with = |password: &str| RegistrySettings {
            url: format!("{}/", stand_in.url()),
            user: Some("reader".into()),
            password: Some(Secret::new(password)),
        };
        let good = Registry::new(&with("pa:ss"), Metrics::new()).unwrap();
        assert!(matches!(
            decode(&decoder(avro_values(), &good), reading(id, "s")).await.decoded,
            Some(Decoded::Json(_))
        ));
        let bad = Registry::new(&with("nope"), Metrics::new()).unwrap();
        let record = decode(&decoder(avro_values(), &bad), reading(id, "s")).await;
        assert!(failure(&record).contains("refused the credentials (HTTP 401)"), "{:?}", record.decoded);
        assert!(!failure(&record).contains("nope"));
        let anonymous = Registry::new(&settings(&stand_in), Metrics::new()).unwrap();
        let record = decode(&decoder(avro_values(), &anonymous), reading(id, "s")).await;
        assert!(failure(&record).contains("HTTP 401"));
    }

    #[test]
    fn a_registry_url_must_be_http() {
        let settings = |url: &str| RegistrySettings { url: url.into(), user: None, password: None };
        let error = Registry::new(&settings("ftp://u:secret@r:8081"), Metrics::new()).err().unwrap().to_string();
        assert_eq!(error, "--schema-registry: ftp: is not http or https");
        let error = Registry::new(&settings("secret@ host"), Metrics::new()).err().unwrap().to_string();
        assert!(error.starts_with("--schema-registry: not a URL") && !error.contains("secret"), "{error}");
    }
}
