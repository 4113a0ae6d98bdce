//! Readable values, through the real binary against a real broker and a Schema Registry
//! stand-in that answers as the documented REST API does: Avro and Protobuf in the Confluent
//! wire format decoded to JSON once per record, for plain frames, envelopes, SSE and `where`
//! filters; values that cannot be decoded going out raw with `decodeError`; the registry
//! taken away and brought back; schemas without a registry; decoded keys.

mod common;

use std::time::Duration;

use apache_avro::types::Value as Avro;
use common::registry::{SchemaRegistry, Subject};
use common::*;
use prost_reflect::prost::Message;
use serde_json::{json, Value};

/// The Confluent wire format: magic byte 0, the schema id, the encoded value.
fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

const READING: &str = r#"{"type":"record","name":"Reading","namespace":"plant","fields":[
    {"name":"sensor","type":"string"},
    {"name":"temp","type":"double"},
    {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"status","type":{"type":"enum","name":"Status","symbols":["OK","FAULT"]}},
    {"name":"note","type":["null","string"],"default":null}
]}"#;

fn reading(sensor: &str, temp: f64, status: &str) -> Vec<u8> {
    let schema = apache_avro::Schema::parse_str(READING).unwrap();
    let index = if status == "OK" { 0 } else { 1 };
    let value = Avro::Record(vec![
        ("sensor".into(), Avro::String(sensor.into())),
        ("temp".into(), Avro::Double(temp)),
        ("at".into(), Avro::TimestampMillis(1_796_403_905_123)),
        ("status".into(), Avro::Enum(index, status.into())),
        ("note".into(), Avro::Union(0, Box::new(Avro::Null))),
    ]);
    apache_avro::to_avro_datum(&schema, value).unwrap()
}

async fn gateway(registry: Option<&SchemaRegistry>, formats: &[&str]) -> (Tansu, String, Sluice) {
    let tansu = Tansu::memory();
    let topic = topic("schemas");
    tansu.create_topic(&topic, 1).await;
    let mut args: Vec<String> = Vec::new();
    if let Some(r) = registry {
        args.extend(["--schema-registry".into(), r.url()]);
    }
    for f in formats {
        args.extend(["--value-format".into(), format!("{topic}={f}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sluice = Sluice::with_kafka(&tansu, &topic, &args);
    sluice.wait_status("/readyz", 200, Duration::from_secs(30)).await;
    (tansu, topic, sluice)
}

async fn open(sluice: &Sluice, path: &str) -> Ws {
    let (mut ws, _) =
        try_connect(&sluice.url(path), &[("authorization", &basic(USER, PASSWORD))]).await.expect("connect");
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(welcome["type"], "connected", "{welcome}");
    ws
}

async fn envelope(ws: &mut Ws) -> Value {
    serde_json::from_str(&next_text(ws).await).unwrap()
}

#[tokio::test]
async fn avro_values_reach_every_form_as_json_and_where_filters_read_them() {
    let registry = SchemaRegistry::start().await;
    let id = registry.register("readings-value", Subject::avro(READING));
    let (tansu, topic, sluice) = gateway(Some(&registry), &["avro"]).await;
    let mut plain = open(&sluice, "/*").await;
    let mut env = open(&sluice, "/*?envelope=true").await;
    let mut hot = open(&sluice, "/?where.status=FAULT").await;
    let (mut sse, _) = EventStream::open(&sluice, "/*", None).await;
    assert_eq!(sse.next().await.0, "connected");
    let p = tansu.producer();
    p.send(&topic, None, Some(b"s1"), Some(&framed(id, &reading("s1", 21.5, "OK"))), &[]).await;
    p.send(&topic, None, Some(b"s2"), Some(&framed(id, &reading("s2", 99.0, "FAULT"))), &[]).await;

    let want = json!({ "sensor": "s1", "temp": 21.5, "at": "2026-12-04T17:05:05.123Z", "status": "OK", "note": null });
    let text = next_text(&mut plain).await;
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), want);
    // Field order is the schema's.
    assert!(text.starts_with(r#"{"sensor":"s1","temp":21.5"#), "{text}");
    let e = envelope(&mut env).await;
    assert_eq!(e["value"], want);
    assert!(e.get("decodeError").is_none() && e.get("valueEncoding").is_none(), "{e}");
    assert_eq!(serde_json::from_str::<Value>(&sse.next().await.2).unwrap(), want);
    // Only the record whose decoded status is FAULT.
    let faulty: Value = serde_json::from_str(&next_text(&mut hot).await).unwrap();
    assert_eq!(faulty["sensor"], "s2");
    // Fetched once, whatever the number of records and subscribers.
    assert_eq!(registry.requests(), 1);
    assert!(sluice.metric(&format!("sluice_values_decoded_total{{topic=\"{topic}\"}}")).await >= 2.0);
}

#[tokio::test]
async fn a_value_that_cannot_be_decoded_goes_out_raw_with_its_reason_and_the_stream_goes_on() {
    let registry = SchemaRegistry::start().await;
    let id = registry.register("readings-value", Subject::avro(READING));
    let (tansu, topic, sluice) = gateway(Some(&registry), &["avro"]).await;
    let mut env = open(&sluice, "/*?envelope=true").await;
    let mut plain = open(&sluice, "/*").await;
    let p = tansu.producer();
    let unknown = framed(4242, &reading("x", 1.0, "OK"));
    p.send(&topic, None, Some(b"k"), Some(&unknown), &[]).await;
    p.send(&topic, None, Some(b"k"), Some(b"no magic byte here"), &[]).await;
    p.send(&topic, None, Some(b"k"), Some(&framed(id, &[0xff, 0xff, 0xff])), &[]).await;
    p.send(&topic, None, Some(b"k"), Some(&framed(id, &reading("after", 2.0, "OK"))), &[]).await;

    let reasons: Vec<String> = [envelope(&mut env).await, envelope(&mut env).await, envelope(&mut env).await]
        .iter()
        .map(|e| {
            assert_eq!(e["valueEncoding"], "base64", "{e}");
            e["decodeError"].as_str().expect("a decodeError").to_owned()
        })
        .collect();
    assert!(reasons[0].contains("4242"), "{reasons:?}");
    assert_eq!(envelope(&mut env).await["value"]["sensor"], "after", "the stream goes on");
    // Plain frames: the raw bytes, as binary.
    match next_frame(&mut plain).await {
        tokio_tungstenite::tungstenite::Message::Binary(b) => assert_eq!(&b[..], &unknown[..]),
        other => panic!("expected the raw bytes, got {other:?}"),
    }
    let metrics = reqwest::get(sluice.http("/metrics")).await.unwrap().text().await.unwrap();
    for reason in ["unknown_schema", "no_magic_byte", "corrupt"] {
        assert!(metrics.contains(&format!("reason=\"{reason}\"")), "{reason} not counted:\n{metrics}");
    }
}

#[tokio::test]
async fn known_schemas_keep_decoding_while_the_registry_is_away_and_new_ones_once_it_is_back() {
    let mut registry = SchemaRegistry::start().await;
    let first = registry.register("readings-value", Subject::avro(READING));
    let (tansu, topic, sluice) = gateway(Some(&registry), &["avro"]).await;
    let mut env = open(&sluice, "/*?envelope=true").await;
    let p = tansu.producer();
    p.send(&topic, None, Some(b"k"), Some(&framed(first, &reading("before", 1.0, "OK"))), &[]).await;
    assert_eq!(envelope(&mut env).await["value"]["sensor"], "before");

    registry.stop().await;
    let later = registry.register("other-value", Subject::avro(&READING.replace("Reading", "Reading2")));
    p.send(&topic, None, Some(b"k"), Some(&framed(first, &reading("known", 2.0, "OK"))), &[]).await;
    p.send(&topic, None, Some(b"k"), Some(&framed(later, &reading("new", 3.0, "OK"))), &[]).await;
    assert_eq!(envelope(&mut env).await["value"]["sensor"], "known");
    let away = envelope(&mut env).await;
    assert!(away["decodeError"].is_string(), "{away}");

    registry.start_again().await;
    // Retried with back-off: a record of that id decodes once the registry answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        p.send(&topic, None, Some(b"k"), Some(&framed(later, &reading("back", 4.0, "OK"))), &[]).await;
        let e = envelope(&mut env).await;
        if e["value"]["sensor"] == "back" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never decoded again: {e}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

const PROTO: &str = r#"syntax = "proto3";
package plant;
message Ignored { string x = 1; }
message Envelope {
  message Reading {
    string sensor = 1;
    int64 count = 2;
    Level level = 3;
    bytes raw = 4;
  }
}
enum Level { LOW = 0; HIGH = 1; }
"#;

/// The one `.proto` file of these tests, for the compiler.
struct Source(&'static str);

impl protox::file::FileResolver for Source {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match name {
            "plant.proto" => protox::file::File::from_source(name, self.0),
            _ => Err(protox::Error::file_not_found(name)),
        }
    }
}

#[tokio::test]
async fn protobuf_values_follow_the_canonical_json_mapping_with_message_indexes() {
    let registry = SchemaRegistry::start().await;
    let id = registry.register("plant-value", Subject::protobuf(PROTO));
    let (tansu, topic, sluice) = gateway(Some(&registry), &["protobuf"]).await;
    let mut env = open(&sluice, "/*?envelope=true").await;

    let mut compiler = protox::Compiler::with_file_resolver(Source(PROTO));
    compiler.open_file("plant.proto").unwrap();
    let reading = compiler.descriptor_pool().get_message_by_name("plant.Envelope.Reading").unwrap();
    let mut m = prost_reflect::DynamicMessage::new(reading);
    m.set_field_by_name("sensor", prost_reflect::Value::String("s9".into()));
    m.set_field_by_name("count", prost_reflect::Value::I64(9_007_199_254_740_993));
    m.set_field_by_name("level", prost_reflect::Value::EnumNumber(1));
    // Message indexes [1, 0]: the second top-level message, its first nested one.
    let mut body = vec![4, 2, 0];
    body.extend(m.encode_to_vec());
    tansu.producer().send(&topic, None, Some(b"k"), Some(&framed(id, &body)), &[]).await;
    let e = envelope(&mut env).await;
    assert_eq!(e["value"], json!({ "sensor": "s9", "count": "9007199254740993", "level": "HIGH", "raw": "" }), "{e}");
}

#[tokio::test]
async fn an_avro_schema_file_decodes_plain_datums_without_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reading.avsc");
    std::fs::write(&file, READING).unwrap();
    let tansu = Tansu::memory();
    let topic = topic("local-schema");
    tansu.create_topic(&topic, 1).await;
    let schema = format!("{topic}=avro:{}", file.display());
    let sluice = Sluice::with_kafka(&tansu, &topic, &["--value-schema", &schema]);
    sluice.wait_status("/readyz", 200, Duration::from_secs(30)).await;
    let mut env = open(&sluice, "/*?envelope=true").await;
    tansu.producer().send(&topic, None, Some(b"k"), Some(&reading("local", 5.5, "FAULT")), &[]).await;
    assert_eq!(envelope(&mut env).await["value"]["status"], "FAULT");
}

#[tokio::test]
async fn decoded_keys_are_what_subscriptions_select() {
    let registry = SchemaRegistry::start().await;
    let key_id = registry.register("readings-key", Subject::avro(r#""string""#));
    let value_id = registry.register("readings-value", Subject::avro(READING));
    let tansu = Tansu::memory();
    let topic = topic("keys");
    tansu.create_topic(&topic, 1).await;
    let (vf, kf) = (format!("{topic}=avro"), format!("{topic}=avro"));
    let sluice = Sluice::with_kafka(
        &tansu,
        &topic,
        &["--schema-registry", &registry.url(), "--value-format", &vf, "--key-format", &kf],
    );
    sluice.wait_status("/readyz", 200, Duration::from_secs(30)).await;
    let mut ws = open(&sluice, "/sensor-7?envelope=true").await;
    let key = framed(
        key_id,
        &apache_avro::to_avro_datum(&apache_avro::Schema::String, Avro::String("sensor-7".into())).unwrap(),
    );
    tansu.producer().send(&topic, None, Some(&key), Some(&framed(value_id, &reading("s7", 7.0, "OK"))), &[]).await;
    let e = envelope(&mut ws).await;
    assert_eq!((e["key"].as_str(), e["value"]["sensor"].as_str()), (Some("sensor-7"), Some("s7")), "{e}");
}

#[test]
fn a_format_that_needs_schemas_without_any_is_a_start_up_error() {
    let out =
        sluice_command(&["--brokers", "127.0.0.1:9", "--input", "t", "--value-format", "t=avro"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--value-format") && err.contains("SLUICE_SCHEMA_REGISTRY"), "{err}");
    let out =
        sluice_command(&["--brokers", "127.0.0.1:9", "--input", "t", "--value-format", "u=json"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("which input does not stream"));
}

#[tokio::test]
async fn json_schema_values_are_the_json_after_the_header() {
    let registry = SchemaRegistry::start().await;
    let id = registry.register("events-value", Subject::json(r#"{"type":"object"}"#));
    let (tansu, topic, sluice) = gateway(Some(&registry), &["json-schema"]).await;
    let mut env = open(&sluice, "/*?envelope=true").await;
    let mut hot = open(&sluice, "/?where./level=3").await;
    let p = tansu.producer();
    p.send(&topic, None, Some(b"k"), Some(&framed(id, br#"{"level":3,"msg":"hot"}"#)), &[]).await;
    p.send(&topic, None, Some(b"k"), Some(br#"{"level":3}"#), &[]).await;
    assert_eq!(envelope(&mut env).await["value"], json!({ "level": 3, "msg": "hot" }));
    // Without the header it is not what the topic's format says.
    let bare = envelope(&mut env).await;
    assert!(bare["decodeError"].is_string(), "{bare}");
    assert_eq!(next_text(&mut hot).await, r#"{"level":3,"msg":"hot"}"#);
    // A value that failed to decode has no fields to match.
    p.send(&topic, None, Some(b"k"), Some(&framed(id, br#"{"level":3,"msg":"end"}"#)), &[]).await;
    assert_eq!(next_text(&mut hot).await, r#"{"level":3,"msg":"end"}"#);
}
