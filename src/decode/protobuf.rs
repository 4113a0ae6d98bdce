//! Protobuf messages to JSON by reflection: proto3's canonical JSON mapping with fields at
//! their defaults included. Descriptors come from a descriptor set (a topic's own schema)
//! or from `.proto` sources the registry holds, compiled here.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, DynamicMessage, FileDescriptor, MessageDescriptor, SerializeOptions};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

/// lowerCamelCase names, 64-bit integers as strings, enums by name: the defaults. Fields
/// at their default values are written too, so a reader sees every field of the type.
const OPTIONS: SerializeOptions = SerializeOptions::new().skip_default_fields(false);

/// A registry schema: one `.proto` file, compiled with what it imports. Its message types
/// are what a framed value's message indexes address.
#[derive(Debug)]
pub struct ProtoSchema {
    file: FileDescriptor,
}

impl ProtoSchema {
    /// Compiles `source` as the file `name`, its imports found in `imports` (import name,
    /// source) or among Google's well-known types.
    pub fn compile(name: &str, source: &str, imports: &[(String, String)]) -> Result<ProtoSchema, String> {
        let mut files: HashMap<String, String> = imports.iter().cloned().collect();
        files.insert(name.to_owned(), source.to_owned());
        let mut resolver = ChainFileResolver::new();
        resolver.add(Sources(files));
        resolver.add(GoogleFileResolver::new());
        // Sources from the registry are input from outside: should the compiler panic on
        // one, that schema id fails, not the task that fetched it (which would leave the id
        // fetching for ever).
        // Nothing outlives a panic but the message: no broken state can be seen after it.
        let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut compiler = protox::Compiler::with_file_resolver(resolver);
            compiler.open_file(name).map_err(|e| e.to_string())?;
            compiler.descriptor_pool().get_file_by_name(name).ok_or_else(|| "the compiled file is missing".to_owned())
        }))
        .map_err(|_| "the Protobuf compiler failed on this schema".to_owned())?;
        Ok(ProtoSchema { file: compiled? })
    }

    /// The message type at `indexes`: the file's top-level types by the first index, their
    /// nested types by the next, and so on.
    pub fn message(&self, indexes: &[i32]) -> Option<MessageDescriptor> {
        let (first, nested) = indexes.split_first()?;
        let mut message = self.file.messages().nth(usize::try_from(*first).ok()?)?;
        for index in nested {
            let child = message.child_messages().nth(usize::try_from(*index).ok()?)?;
            message = child;
        }
        Some(message)
    }
}

/// The `.proto` sources of one schema and its references, by import name.
struct Sources(HashMap<String, String>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(source) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// The message type `message` of a descriptor set (`protoc --include_imports -o`).
pub fn from_descriptor_set(bytes: &[u8], message: &str) -> Result<Option<MessageDescriptor>, String> {
    let pool = DescriptorPool::decode(bytes).map_err(|e| e.to_string())?;
    Ok(pool.get_message_by_name(message))
}

/// A message's bytes as JSON text.
pub fn to_json(message: &MessageDescriptor, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let decoded = DynamicMessage::decode(message.clone(), bytes).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
    decoded.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &OPTIONS).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use prost_reflect::prost::Message;
    use prost_reflect::{MapKey, Value};

    pub const COMMON: &str = r#"
        syntax = "proto3";
        package acme.common;
        message Location { double lat = 1; double lon = 2; }
    "#;

    /// A file importing another (a registry reference) and a well-known type; its second
    /// message has a nested type, addressed by message indexes [1, 0].
    pub const TELEMETRY: &str = r#"
        syntax = "proto3";
        package acme.v1;
        import "acme/common.proto";
        import "google/protobuf/timestamp.proto";

        message Ping { string from = 1; }

        message Envelope {
          message Reading {
            enum Unit { UNIT_UNSPECIFIED = 0; CELSIUS = 1; }
            string sensor_id = 1;
            int64 total_count = 2;
            uint64 serial = 3;
            Unit unit = 4;
            bytes raw = 5;
            google.protobuf.Timestamp taken_at = 6;
            map<string, int32> labels = 7;
            repeated double samples = 8;
            acme.common.Location where = 9;
            int32 zero = 10;
            string empty = 11;
            bool off = 12;
          }
          Reading reading = 1;
        }
    "#;

    pub fn telemetry() -> ProtoSchema {
        let imports = [("acme/common.proto".to_owned(), COMMON.to_owned())];
        ProtoSchema::compile("telemetry.proto", TELEMETRY, &imports).unwrap()
    }

    /// A `Reading` with a value in every field but the three left at their defaults.
    pub fn reading(schema: &ProtoSchema) -> Vec<u8> {
        let desc = schema.message(&[1, 0]).unwrap();
        let mut m = DynamicMessage::new(desc.clone());
        m.set_field_by_name("sensor_id", Value::String("sensor-1".into()));
        m.set_field_by_name("total_count", Value::I64(-9_007_199_254_740_993));
        m.set_field_by_name("serial", Value::U64(u64::MAX));
        m.set_field_by_name("unit", Value::EnumNumber(1));
        m.set_field_by_name("raw", Value::Bytes(vec![0xff, 0x00].into()));
        let ts_desc = desc.get_field_by_name("taken_at").unwrap().kind();
        let mut ts = DynamicMessage::new(ts_desc.as_message().unwrap().clone());
        ts.set_field_by_name("seconds", Value::I64(1_796_403_905));
        ts.set_field_by_name("nanos", Value::I32(123_000_000));
        m.set_field_by_name("taken_at", Value::Message(ts));
        m.set_field_by_name("labels", Value::Map([(MapKey::String("site".into()), Value::I32(7))].into()));
        m.set_field_by_name("samples", Value::List(vec![Value::F64(1.5), Value::F64(-2.0)]));
        let loc_desc = desc.get_field_by_name("where").unwrap().kind();
        let mut loc = DynamicMessage::new(loc_desc.as_message().unwrap().clone());
        loc.set_field_by_name("lat", Value::F64(52.5));
        m.set_field_by_name("where", Value::Message(loc));
        m.encode_to_vec()
    }

    pub const READING_JSON: &str = concat!(
        r#"{"sensorId":"sensor-1","totalCount":"-9007199254740993","serial":"18446744073709551615","#,
        r#""unit":"CELSIUS","raw":"/wA=","takenAt":"2026-12-04T17:05:05.123Z","labels":{"site":7},"#,
        r#""samples":[1.5,-2.0],"where":{"lat":52.5,"lon":0.0},"zero":0,"empty":"","off":false}"#
    );

    #[test]
    fn a_nested_message_maps_to_canonical_json_with_its_defaults() {
        let schema = telemetry();
        let desc = schema.message(&[1, 0]).unwrap();
        assert_eq!(desc.full_name(), "acme.v1.Envelope.Reading");
        let json = String::from_utf8(to_json(&desc, &reading(&schema)).unwrap()).unwrap();
        assert_eq!(json, READING_JSON);
    }

    #[test]
    fn message_indexes_address_top_level_and_nested_types() {
        let schema = telemetry();
        assert_eq!(schema.message(&[0]).unwrap().full_name(), "acme.v1.Ping");
        assert_eq!(schema.message(&[1]).unwrap().full_name(), "acme.v1.Envelope");
        assert!(schema.message(&[2]).is_none());
        assert!(schema.message(&[1, 1]).is_none());
        assert!(schema.message(&[-1]).is_none());
        assert!(schema.message(&[]).is_none());
    }

    #[test]
    fn an_empty_message_shows_every_default() {
        let schema = telemetry();
        let json = String::from_utf8(to_json(&schema.message(&[0]).unwrap(), &[]).unwrap()).unwrap();
        assert_eq!(json, r#"{"from":""}"#);
    }

    #[test]
    fn corrupt_bytes_are_an_error() {
        let schema = telemetry();
        let desc = schema.message(&[1, 0]).unwrap();
        // Field 1 (a string) says 100 bytes follow; two do.
        assert!(to_json(&desc, &[0x0a, 100, b'a', b'b']).is_err());
        // Wire type 7 does not exist.
        assert!(to_json(&desc, &[0x0f]).is_err());
    }

    #[test]
    fn a_missing_import_or_a_syntax_error_is_an_error() {
        let error = ProtoSchema::compile("t.proto", TELEMETRY, &[]).unwrap_err();
        assert!(error.contains("acme/common.proto"), "{error}");
        assert!(ProtoSchema::compile("t.proto", "message {", &[]).is_err());
    }

    #[test]
    fn a_descriptor_set_gives_its_messages_by_full_name() {
        let schema = telemetry();
        let set = schema.file.parent_pool().encode_to_vec();
        let desc = from_descriptor_set(&set, "acme.v1.Envelope.Reading").unwrap().unwrap();
        assert_eq!(desc.full_name(), "acme.v1.Envelope.Reading");
        assert!(from_descriptor_set(&set, "acme.v1.Nope").unwrap().is_none());
        assert!(from_descriptor_set(b"\xff\xff", "x").is_err());
    }
}
