//! Single-core decode throughput: the gateway's own decoder (`sluice::decode::Decoder`,
//! what its Kafka source calls once per record, before the fan-out) turning a typical
//! 20-field reading into JSON, as an Avro datum and as the same reading in Protobuf, on
//! this one thread. No broker, no gateway, no socket: the decoding alone.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use prost_reflect::prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use sluice::decode::{Decoder, Format, LocalSchema, TopicFormats};
use sluice::metrics::Metrics;

use crate::avro::{Framing, SCHEMA};
use crate::payload::{self, Stamp};
use crate::report::Report;

#[derive(Args, Debug)]
pub struct Opts {
    /// How long to decode each format for (after a warm-up of a tenth of it).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Append each format's figures as a JSON line to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The Avro schema's reading as a proto3 message: the same 20 fields, the timestamp as
/// the well-known `Timestamp` (what the canonical JSON mapping writes as RFC 3339).
const PROTO: &str = r#"
syntax = "proto3";
package bench;
import "google/protobuf/timestamp.proto";

message Reading {
  enum Status { OK = 0; WARN = 1; FAULT = 2; }
  string value = 1;
  string sensor = 2;
  string site = 3;
  string firmware = 4;
  int64 sequence = 5;
  int64 uptime_s = 6;
  int32 count = 7;
  int32 battery_pct = 8;
  sint32 rssi = 9;
  double temperature = 10;
  double pressure = 11;
  double latitude = 12;
  double longitude = 13;
  float humidity = 14;
  bool healthy = 15;
  Status status = 16;
  google.protobuf.Timestamp measured_at = 17;
  int32 day = 18;
  string note = 19;
  string operator = 20;
}
"#;

pub fn run(opts: &Opts) -> Result<Vec<Report>> {
    let dir = tempfile::tempdir().context("a directory for the schema files")?;
    // A stamp as the load scenarios write it, so the value is the size theirs are.
    let mut stamp = Vec::new();
    payload::encode(&mut stamp, Stamp { seq: 123_456, send_ns: 1_796_403_905_123_456_789, key: 7 }, 0);
    let stamp = String::from_utf8(stamp).context("the stamp is text")?;
    let duration = Duration::from_secs_f64(opts.seconds);

    let avro = avro_decoder(dir.path())?;
    let mut datum = Vec::new();
    Framing::new(0)?.datum(&mut datum, stamp.as_bytes());
    let (proto, message) = protobuf_decoder(dir.path(), &stamp)?;

    Ok(vec![
        measure("decode-avro-20-fields", &avro, Bytes::from(datum), duration)?,
        measure("decode-protobuf-20-fields", &proto, Bytes::from(message), duration)?,
    ])
}

/// Decodes `value` over and over for `duration` on this thread.
fn measure(name: &str, decoder: &Decoder, value: Bytes, duration: Duration) -> Result<Report> {
    let json = decoder.decode_value(&value).map_err(|e| anyhow::anyhow!("{name}: the value does not decode: {e}"))?;
    let warm_up = Instant::now();
    while warm_up.elapsed() < duration / 10 {
        black_box(decoder.decode_value(black_box(&value)).ok());
    }
    let started = Instant::now();
    let mut records = 0u64;
    let mut failed = 0u64;
    // The clock is read once per batch: it costs about what a small decode does.
    while started.elapsed() < duration {
        for _ in 0..1000 {
            failed += u64::from(black_box(decoder.decode_value(black_box(&value))).is_err());
        }
        records += 1000;
    }
    let elapsed = started.elapsed().as_secs_f64();

    let mut r = Report::new(name);
    r.metric("records_per_s", records as f64 / elapsed);
    r.metric("ns_per_record", elapsed * 1e9 / records as f64);
    r.metric("value_bytes", value.len() as f64);
    r.metric("json_bytes", json.len() as f64);
    r.note(format!(
        "one thread, {records} decodes in {elapsed:.1} s through sluice::decode::Decoder (the gateway's path: \
         the schema's reader, JSON written, the metric counted); the JSON: {}",
        String::from_utf8_lossy(&json)
    ));
    r.check(failed > 0, || format!("{failed} values did not decode"));
    Ok(r)
}

fn avro_decoder(dir: &Path) -> Result<Decoder> {
    let path = dir.join("reading.avsc");
    std::fs::write(&path, SCHEMA)?;
    let formats =
        TopicFormats { value: Format::Avro, value_schema: Some(LocalSchema::Avro(path)), ..TopicFormats::default() };
    Decoder::new("bench", formats, None, Metrics::new()).context("the Avro decoder")
}

/// The Protobuf decoder, from a descriptor set compiled from [`PROTO`], and a reading
/// whose `value` is `stamp` with the Avro record's constants in the other fields.
fn protobuf_decoder(dir: &Path, stamp: &str) -> Result<(Decoder, Vec<u8>)> {
    let proto = dir.join("reading.proto");
    std::fs::write(&proto, PROTO)?;
    let set = protox::compile([&proto], [dir]).context("compile the bench's .proto")?;
    let descriptor_set = dir.join("reading.desc");
    std::fs::write(&descriptor_set, set.encode_to_vec())?;

    let pool = DescriptorPool::decode(set.encode_to_vec().as_slice())?;
    let desc = pool.get_message_by_name("bench.Reading").context("bench.Reading")?;
    let mut m = DynamicMessage::new(desc.clone());
    let mut set_field = |name: &str, value: Value| m.set_field_by_name(name, value);
    set_field("value", Value::String(stamp.to_owned()));
    set_field("sensor", Value::String("sensor-0042".into()));
    set_field("site", Value::String("plant-7/hall-3".into()));
    set_field("firmware", Value::String("4.2.1-rc3".into()));
    set_field("sequence", Value::I64(9_007_199_254));
    set_field("uptime_s", Value::I64(1_234_567));
    set_field("count", Value::I32(42));
    set_field("battery_pct", Value::I32(87));
    set_field("rssi", Value::I32(-71));
    set_field("temperature", Value::F64(21.375));
    set_field("pressure", Value::F64(1013.25));
    set_field("latitude", Value::F64(48.858_222));
    set_field("longitude", Value::F64(2.294_5));
    set_field("humidity", Value::F32(41.5));
    set_field("healthy", Value::Bool(true));
    set_field("status", Value::EnumNumber(1));
    set_field("day", Value::I32(20_426));
    set_field("note", Value::String("recalibrated after the storm".into()));
    let timestamp = desc.get_field_by_name("measured_at").context("measured_at")?.kind();
    let timestamp = timestamp.as_message().context("a message")?.clone();
    let mut ts = DynamicMessage::new(timestamp);
    ts.set_field_by_name("seconds", Value::I64(1_796_403_905));
    ts.set_field_by_name("nanos", Value::I32(123_000_000));
    m.set_field_by_name("measured_at", Value::Message(ts));

    let formats = TopicFormats {
        value: Format::Protobuf,
        value_schema: Some(LocalSchema::Protobuf { descriptor_set, message: "bench.Reading".into() }),
        ..TopicFormats::default()
    };
    let decoder = Decoder::new("bench", formats, None, Metrics::new()).context("the Protobuf decoder")?;
    Ok((decoder, m.encode_to_vec()))
}
