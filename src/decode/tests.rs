//! The decoder as the source uses it, without a registry: schemas of the topic's own,
//! JSON, JSON Schema, keys, and what becomes of values that cannot be decoded.

use std::sync::Arc;

use bytes::Bytes;
use prost_reflect::prost::Message;

use super::*;

fn record(key: Option<&[u8]>, value: Option<&[u8]>) -> Record {
    Record {
        topic: Arc::from("telemetry"),
        partition: 0,
        offset: 7,
        timestamp: None,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: Vec::new(),
        decoded: None,
    }
}

fn decoder(formats: TopicFormats) -> (Decoder, Metrics) {
    let metrics = Metrics::new();
    (Decoder::new("telemetry", formats, None, metrics.clone()).unwrap(), metrics)
}

fn values(format: Format) -> TopicFormats {
    TopicFormats { value: format, ..TopicFormats::default() }
}

fn decoded(decoder: &Decoder, value: &[u8]) -> Record {
    let mut r = record(Some(b"k"), Some(value));
    decoder.decode(&mut r);
    r
}

fn json_text(record: &Record) -> &str {
    match &record.decoded {
        Some(Decoded::Json(json)) => std::str::from_utf8(json).unwrap(),
        other => panic!("not decoded: {other:?}"),
    }
}

/// The counter line of `name` with `labels`, from the rendered metrics.
fn counted(metrics: &Metrics, name: &str, labels: &str) -> Option<String> {
    metrics.render().lines().find(|l| l.starts_with(name) && l.contains(labels)).map(str::to_owned)
}

#[test]
fn raw_topics_are_skipped_and_left_alone() {
    let (raw, _) = decoder(TopicFormats::default());
    assert!(raw.is_raw());
    let r = decoded(&raw, b"\x00\x00\x00\x00\x01abc");
    assert_eq!((r.decoded, r.key.as_deref()), (None, Some(&b"k"[..])));
    let (keys_only, _) = decoder(TopicFormats { key: Format::Json, ..TopicFormats::default() });
    assert!(!keys_only.is_raw());
}

#[test]
fn json_values_are_checked_and_shared_framed_or_not() {
    let (decoder, metrics) = decoder(values(Format::Json));
    let plain = decoded(&decoder, br#"{"a": 1}"#);
    assert_eq!(json_text(&plain), r#"{"a": 1}"#);
    let framed = decoded(&decoder, b"\x00\x00\x00\x00\x09[1,2]");
    assert_eq!(json_text(&framed), "[1,2]");

    let bad = decoded(&decoder, b"{\"a\":");
    assert!(bad.decode_error().unwrap().starts_with("not JSON: "), "{:?}", bad.decoded);
    assert_eq!(bad.value.as_deref(), Some(&b"{\"a\":"[..]), "the raw value stays");
    assert!(counted(&metrics, "sluice_values_decoded", "telemetry").is_some());
    assert!(counted(&metrics, "sluice_decode_failures", r#"reason="corrupt""#).is_some());
}

#[test]
fn json_schema_values_need_the_header() {
    let (decoder, metrics) = decoder(values(Format::JsonSchema));
    let r = decoded(&decoder, &wire::frame(12, None, br#"{"temp":21.5}"#));
    assert_eq!(json_text(&r), r#"{"temp":21.5}"#);
    let r = decoded(&decoder, br#"{"temp":21.5}"#);
    assert_eq!(r.decode_error(), Some("first byte 0x7b, not the schema registry's magic byte 0"));
    assert!(counted(&metrics, "sluice_decode_failures", r#"reason="no_magic_byte""#).is_some());
    let r = decoded(&decoder, &wire::frame(12, None, b"nope"));
    assert!(r.decode_error().unwrap().starts_with("schema 12: not JSON"), "{:?}", r.decoded);
}

#[test]
fn a_tombstone_stays_a_tombstone() {
    let (decoder, _) = decoder(values(Format::Json));
    let mut r = record(Some(b"k"), None);
    decoder.decode(&mut r);
    assert_eq!((r.decoded, r.value), (None, None));
}

#[test]
fn keys_decode_to_their_text_or_their_json_and_stay_when_they_cannot() {
    let formats = TopicFormats { key: Format::JsonSchema, ..TopicFormats::default() };
    let (decoder, metrics) = decoder(formats);
    let mut r = record(Some(&wire::frame(1, None, br#""sensor-1""#)), Some(b"v"));
    decoder.decode(&mut r);
    assert_eq!(r.key.as_deref(), Some(&b"sensor-1"[..]));
    assert_eq!(r.decoded, None, "raw values are not touched");

    let mut r = record(Some(&wire::frame(1, None, br#"{"site":3}"#)), Some(b"v"));
    decoder.decode(&mut r);
    assert_eq!(r.key.as_deref(), Some(&br#"{"site":3}"#[..]));

    let mut r = record(Some(b"plain"), Some(b"v"));
    decoder.decode(&mut r);
    assert_eq!(r.key.as_deref(), Some(&b"plain"[..]));
    assert!(counted(&metrics, "sluice_decode_failures", r#"reason="key_no_magic_byte""#).is_some());

    let mut r = record(None, Some(b"v"));
    decoder.decode(&mut r);
    assert_eq!(r.key, None);
}

#[test]
fn an_empty_value_of_a_framed_format_goes_raw_with_its_reason() {
    let (decoder, _) = decoder(values(Format::JsonSchema));
    let r = decoded(&decoder, b"");
    assert_eq!(r.decode_error(), Some("empty value: no schema registry header"));
    assert_eq!(r.value.as_deref(), Some(&b""[..]));
}

#[test]
fn a_local_avro_schema_decodes_plain_datums() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reading.avsc");
    let schema = r#"{"type":"record","name":"Reading","fields":[
        {"name":"sensor","type":"string"},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
    std::fs::write(&path, schema).unwrap();
    let (decoder, metrics) =
        decoder(TopicFormats { value_schema: Some(LocalSchema::Avro(path)), ..values(Format::Avro) });
    let parsed = AvroSchema::parse(schema, &[]).unwrap();
    use apache_avro::types::Value;
    let datum = Value::Record(vec![
        ("sensor".into(), Value::String("s-1".into())),
        ("at".into(), Value::TimestampMillis(1_796_403_905_123)),
    ]);
    let bytes = parsed.encode(datum);
    assert_eq!(json_text(&decoded(&decoder, &bytes)), r#"{"sensor":"s-1","at":"2026-12-04T17:05:05.123Z"}"#);

    let corrupt = decoded(&decoder, &[0x7f]);
    assert!(corrupt.decode_error().unwrap().starts_with("not Avro of this schema: "), "{:?}", corrupt.decoded);
    assert!(counted(&metrics, "sluice_decode_failures", r#"reason="corrupt""#).is_some());
}

#[test]
fn a_local_descriptor_set_decodes_plain_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("telemetry.desc");
    let schema = protobuf::tests::telemetry();
    let pool = schema.message(&[0]).unwrap().parent_pool().clone();
    std::fs::write(&path, pool.encode_to_vec()).unwrap();
    let (decoder, _) = decoder(TopicFormats {
        value_schema: Some(LocalSchema::Protobuf { descriptor_set: path, message: "acme.v1.Envelope.Reading".into() }),
        ..values(Format::Protobuf)
    });
    let r = decoded(&decoder, &protobuf::tests::reading(&schema));
    assert_eq!(json_text(&r), protobuf::tests::READING_JSON);

    let ping = {
        let mut m = prost_reflect::DynamicMessage::new(schema.message(&[0]).unwrap());
        m.set_field_by_name("from", prost_reflect::Value::String("x".into()));
        m.encode_to_vec()
    };
    // A Ping's bytes read as a Reading: field 1 is a string in both.
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(json_text(&decoded(&decoder, &ping))).unwrap()["sensorId"],
        "x"
    );
    let corrupt = decoded(&decoder, &[0x0a, 0x05, b'a']);
    assert!(corrupt.decode_error().unwrap().starts_with("not a acme.v1.Envelope.Reading: "), "{:?}", corrupt.decoded);
}

#[test]
fn setup_errors_name_the_setting_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("x.avsc");
    let error = Decoder::new(
        "telemetry",
        TopicFormats { value_schema: Some(LocalSchema::Avro(missing.clone())), ..values(Format::Avro) },
        None,
        Metrics::new(),
    )
    .err()
    .unwrap()
    .to_string();
    let shown = missing.display();
    assert!(error.starts_with(&format!("--value-schema telemetry=avro:{shown}: cannot read {shown}: ")), "{error}");

    let bad = dir.path().join("bad.avsc");
    std::fs::write(&bad, "{\"type\": \"record\"").unwrap();
    let error = Decoder::new(
        "telemetry",
        TopicFormats { key: Format::Avro, key_schema: Some(LocalSchema::Avro(bad.clone())), ..TopicFormats::default() },
        None,
        Metrics::new(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(error.starts_with(&format!("--key-schema telemetry=avro:{}: ", bad.display())), "{error}");
    assert!(error.contains("is not a valid Avro schema"), "{error}");

    let set = dir.path().join("t.desc");
    std::fs::write(&set, protobuf::tests::telemetry().message(&[0]).unwrap().parent_pool().encode_to_vec()).unwrap();
    let schema = LocalSchema::Protobuf { descriptor_set: set, message: "acme.v1.Nope".into() };
    let error = Decoder::new(
        "telemetry",
        TopicFormats { value_schema: Some(schema), ..values(Format::Protobuf) },
        None,
        Metrics::new(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(error.ends_with("has no message type acme.v1.Nope"), "{error}");

    let error = Decoder::new("telemetry", values(Format::Avro), None, Metrics::new()).err().unwrap().to_string();
    assert!(error.starts_with("--value-format telemetry=avro: a schema is needed"), "{error}");
}

#[test]
fn a_key_is_its_json_string_s_text_and_its_failures_are_counted_apart() {
    assert_eq!(key_text(Bytes::from_static(br#""a\"b""#)), Bytes::from_static(br#"a"b"#));
    assert_eq!(key_text(Bytes::from_static(b"12")), Bytes::from_static(b"12"));
    assert_eq!(key_reason("corrupt"), "key_corrupt");
}
