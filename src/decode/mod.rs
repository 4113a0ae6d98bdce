//! Readable values: a record's value (and key) turned from its wire format into JSON, once
//! per record whatever the number of subscribers. A value that cannot be decoded keeps its
//! bytes and says why; it is never dropped and never holds the stream up for long.
//!
//! - `settings`: the formats and schemas a topic is configured with, and the errors of
//!   setting decoding up, each naming its setting.
//! - `wire`: the Confluent framing (magic byte, schema id, Protobuf message indexes).
//! - `registry`: the Schema Registry client, its cache of parsed schemas and its back-off.
//! - `avro`, `protobuf`: each format's bytes to JSON text.
//!
//! Values framed with a schema id take their schema from the registry; with a schema of
//! the topic's own (`--value-schema`), values are plain datums or messages, unframed.
//! Uses `record`, `metrics`, `secret` and `backend` (its HTTP client), nothing else of the crate.

mod avro;
mod protobuf;
mod registry;
mod settings;
mod wire;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use prost_reflect::MessageDescriptor;

use self::avro::AvroSchema;
use self::registry::Schema;
use self::settings::Side;
use crate::metrics::Metrics;
use crate::record::{Decoded, Record};

pub use self::registry::Registry;
pub use self::settings::{DecodeSetupError, Format, LocalSchema, RegistrySettings, TopicFormats};

/// Why a value could not be decoded: the reason it is counted under, the schema id it
/// named (when it got that far), and the text clients get as `decodeError`.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub reason: &'static str,
    pub schema: Option<u32>,
    /// Shared: a registry failure is the same text for every record of its id.
    pub message: Arc<str>,
}

impl Failure {
    fn new(reason: &'static str, schema: Option<u32>, message: impl Into<Arc<str>>) -> Failure {
        Failure { reason, schema, message: message.into() }
    }

    fn corrupt(schema: Option<u32>, what: &str, error: String) -> Failure {
        let message = match schema {
            Some(id) => format!("schema {id}: {what}: {error}"),
            None => format!("{what}: {error}"),
        };
        Failure::new("corrupt", schema, message)
    }
}

/// One topic's decoder: built once from its settings, shared by its partitions. Cheap to
/// clone.
#[derive(Clone)]
pub struct Decoder {
    inner: Arc<Inner>,
}

struct Inner {
    topic: String,
    value: Reader,
    key: Reader,
    metrics: Metrics,
}

/// How one side of a topic's records (its values, or its keys) is read.
enum Reader {
    Raw,
    /// JSON text, framed or not.
    Json,
    /// JSON after the registry's header.
    JsonSchema,
    /// Framed Avro or Protobuf: the schema is the registry's.
    Registered {
        format: Format,
        registry: Registry,
    },
    /// Plain Avro datums of the topic's own schema (boxed: far larger than the others).
    Avro(Box<AvroSchema>),
    /// Plain Protobuf messages of one type of the topic's descriptor set.
    Protobuf(MessageDescriptor),
}

impl Decoder {
    /// Reads and parses the topic's own schema files now, so a bad one stops start-up.
    pub fn new(
        topic: &str,
        formats: TopicFormats,
        registry: Option<Registry>,
        metrics: Metrics,
    ) -> Result<Decoder, DecodeSetupError> {
        let value = Reader::new(Side::Value, topic, formats.value, formats.value_schema.as_ref(), registry.as_ref())?;
        let key = Reader::new(Side::Key, topic, formats.key, formats.key_schema.as_ref(), registry.as_ref())?;
        Ok(Decoder { inner: Arc::new(Inner { topic: topic.to_owned(), value, key, metrics }) })
    }

    /// Both sides verbatim: the source need not call `prepare` nor `decode`.
    pub fn is_raw(&self) -> bool {
        matches!((&self.inner.value, &self.inner.key), (Reader::Raw, Reader::Raw))
    }

    /// Makes sure the schemas this record's value and key need are known: a schema id seen
    /// for the first time is fetched from the registry (with its references), waiting 2 s
    /// at most. Never fails, and never waits for an id that failed recently (its back-off):
    /// the record then goes raw with its error, and a later record of that id tries again
    /// once the back-off has passed.
    pub async fn prepare(&self, record: &Record) {
        let value = self.inner.value.registry_id(record.value.as_deref());
        let key = self.inner.key.registry_id(record.key.as_deref());
        match (value, key) {
            (None, None) => {}
            (Some((registry, id)), None) | (None, Some((registry, id))) => registry.prepare(id).await,
            (Some((values, value)), Some((keys, key))) => {
                tokio::join!(values.prepare(value), keys.prepare(key));
            }
        }
    }

    /// Decodes with the schemas known (no I/O): sets `record.decoded` (the value's JSON, or
    /// why it could not be decoded) and counts it; a decoded key replaces `record.key`
    /// (a JSON string by its text, anything else by its JSON), a key that cannot be
    /// decoded stays as it is. A tombstone stays one.
    pub fn decode(&self, record: &mut Record) {
        let inner = &*self.inner;
        if let (false, Some(value)) = (matches!(inner.value, Reader::Raw), &record.value) {
            record.decoded = Some(match self.decode_value(value) {
                Ok(json) => Decoded::Json(json),
                Err(message) => Decoded::Failed(message),
            });
        }
        if let (false, Some(key)) = (matches!(inner.key, Reader::Raw), &record.key) {
            match inner.key.read(key) {
                Ok(json) => record.key = Some(key_text(json)),
                Err(failure) => {
                    let error = format!("key: {}", failure.message);
                    inner.metrics.decode_failed(&inner.topic, key_reason(failure.reason), failure.schema, &error);
                }
            }
        }
    }
}

impl Decoder {
    /// A value alone, as `decode` reads a record's (with the schemas known, no I/O): its
    /// JSON text, or why it could not be decoded; counted either way. A topic whose values
    /// are raw gives them back as they are, uncounted.
    pub fn decode_value(&self, value: &Bytes) -> Result<Bytes, Arc<str>> {
        let inner = &*self.inner;
        if matches!(inner.value, Reader::Raw) {
            return Ok(value.clone());
        }
        match inner.value.read(value) {
            Ok(json) => {
                inner.metrics.decoded(&inner.topic);
                Ok(json)
            }
            Err(failure) => {
                inner.metrics.decode_failed(&inner.topic, failure.reason, failure.schema, &failure.message);
                Err(failure.message)
            }
        }
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("topic", &self.inner.topic).finish_non_exhaustive()
    }
}

impl Reader {
    fn new(
        side: Side,
        topic: &str,
        format: Format,
        schema: Option<&LocalSchema>,
        registry: Option<&Registry>,
    ) -> Result<Reader, DecodeSetupError> {
        side.check(topic, format, schema)?;
        Ok(match (format, schema, registry) {
            (Format::Raw, ..) => Reader::Raw,
            (Format::Json, ..) => Reader::Json,
            (Format::JsonSchema, ..) => Reader::JsonSchema,
            (_, Some(local @ LocalSchema::Avro(path)), _) => {
                Reader::Avro(Box::new(load_avro(&side.schema_setting(topic, local), path)?))
            }
            (_, Some(local @ LocalSchema::Protobuf { descriptor_set, message }), _) => {
                Reader::Protobuf(load_protobuf(&side.schema_setting(topic, local), descriptor_set, message)?)
            }
            (_, None, Some(registry)) => Reader::Registered { format, registry: registry.clone() },
            (_, None, None) => return Err(side.needs_schema(topic, format)),
        })
    }

    /// The registry and the schema id `bytes` need fetched, if any.
    fn registry_id(&self, bytes: Option<&[u8]>) -> Option<(&Registry, u32)> {
        match (self, bytes) {
            (Reader::Registered { registry, .. }, Some(bytes)) => wire::split(bytes).ok().map(|(id, _)| (registry, id)),
            _ => None,
        }
    }

    /// `bytes` as JSON text.
    fn read(&self, bytes: &Bytes) -> Result<Bytes, Failure> {
        match self {
            Reader::Raw => Ok(bytes.clone()),
            Reader::Json => json(bytes, wire::unframed_json(bytes), None),
            Reader::JsonSchema => {
                let (id, json_text) = wire::split(bytes)?;
                json(bytes, json_text, Some(id))
            }
            Reader::Avro(schema) => {
                schema.to_json(bytes).map(Bytes::from).map_err(|e| Failure::corrupt(None, "not Avro of this schema", e))
            }
            Reader::Protobuf(message) => protobuf::to_json(message, bytes)
                .map(Bytes::from)
                .map_err(|e| Failure::corrupt(None, &format!("not a {}", message.full_name()), e)),
            Reader::Registered { format, registry } => {
                let (id, rest) = wire::split(bytes)?;
                let schema = registry.lookup(id)?;
                let json = match (format, &*schema) {
                    (Format::Avro, Schema::Avro(avro)) => {
                        avro.to_json(rest).map_err(|e| Failure::corrupt(Some(id), "not Avro of this schema", e))?
                    }
                    (Format::Protobuf, Schema::Protobuf(proto)) => {
                        let (indexes, rest) = wire::message_indexes(rest, id)?;
                        let Some(message) = proto.message(&indexes) else {
                            let error = format!("no message type at indexes {indexes:?}");
                            return Err(Failure::new("corrupt", Some(id), format!("schema {id}: {error}")));
                        };
                        protobuf::to_json(&message, rest)
                            .map_err(|e| Failure::corrupt(Some(id), &format!("not a {}", message.full_name()), e))?
                    }
                    (_, schema) => {
                        let error = format!("schema {id} is {}; the topic's format is {format}", schema.kind());
                        return Err(Failure::new("wrong_type", Some(id), error));
                    }
                };
                Ok(Bytes::from(json))
            }
        }
    }
}

/// `text`, a part of `bytes`, if it is JSON: shared, not copied.
fn json(bytes: &Bytes, text: &[u8], schema: Option<u32>) -> Result<Bytes, Failure> {
    match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
        Ok(_) => Ok(bytes.slice_ref(text)),
        Err(e) => Err(Failure::corrupt(schema, "not JSON", e.to_string())),
    }
}

/// A decoded key as clients match it: a JSON string by its text (`"sensor-1"` is the key
/// `sensor-1`), anything else by its JSON.
fn key_text(json: Bytes) -> Bytes {
    if json.first() == Some(&b'"') {
        if let Ok(text) = serde_json::from_slice::<String>(&json) {
            return Bytes::from(text);
        }
    }
    json
}

/// A key's failures are counted apart from the values'.
fn key_reason(reason: &'static str) -> &'static str {
    match reason {
        "no_magic_byte" => "key_no_magic_byte",
        "unknown_schema" => "key_unknown_schema",
        "registry_unavailable" => "key_registry_unavailable",
        "invalid_schema" => "key_invalid_schema",
        "corrupt" => "key_corrupt",
        "wrong_type" => "key_wrong_type",
        _ => "key",
    }
}

fn load_avro(setting: &str, path: &Path) -> Result<AvroSchema, DecodeSetupError> {
    let text = std::fs::read_to_string(path).map_err(|source| DecodeSetupError::Unreadable {
        setting: setting.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    AvroSchema::parse(&text, &[]).map_err(|error| DecodeSetupError::InvalidSchema {
        setting: setting.to_owned(),
        path: path.to_owned(),
        kind: "Avro schema",
        error,
    })
}

fn load_protobuf(setting: &str, path: &Path, message: &str) -> Result<MessageDescriptor, DecodeSetupError> {
    let bytes = std::fs::read(path).map_err(|source| DecodeSetupError::Unreadable {
        setting: setting.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    match protobuf::from_descriptor_set(&bytes, message) {
        Ok(Some(descriptor)) => Ok(descriptor),
        Ok(None) => Err(DecodeSetupError::NoSuchMessage {
            setting: setting.to_owned(),
            path: path.to_owned(),
            message: message.to_owned(),
        }),
        Err(error) => Err(DecodeSetupError::InvalidSchema {
            setting: setting.to_owned(),
            path: path.to_owned(),
            kind: "descriptor set",
            error,
        }),
    }
}

#[cfg(test)]
mod tests;
