//! Records as a typical Avro topic carries them, for the gateway to decode: a 20-field
//! record in the Confluent wire format (magic byte 0, the 4-byte big-endian schema id, the
//! datum).
//!
//! The first field, `value`, is a string holding the harness's stamp, so the JSON the
//! gateway sends starts `{"value":"<stamp>",` and a client finds the stamp as it does in
//! an envelope. The 19 fields after it are constants of the usual types, encoded once: a
//! record is the stamp's length (a zigzag varint), its bytes, then those constant bytes.

use anyhow::{Context, Result};
use apache_avro::types::Value;

/// The writer schema: what a sensor reading looks like on many Avro topics.
pub const SCHEMA: &str = r#"{"type":"record","name":"Reading","namespace":"bench","fields":[
    {"name":"value","type":"string"},
    {"name":"sensor","type":"string"},
    {"name":"site","type":"string"},
    {"name":"firmware","type":"string"},
    {"name":"sequence","type":"long"},
    {"name":"uptime_s","type":"long"},
    {"name":"count","type":"int"},
    {"name":"battery_pct","type":"int"},
    {"name":"rssi","type":"int"},
    {"name":"temperature","type":"double"},
    {"name":"pressure","type":"double"},
    {"name":"latitude","type":"double"},
    {"name":"longitude","type":"double"},
    {"name":"humidity","type":"float"},
    {"name":"healthy","type":"boolean"},
    {"name":"status","type":{"type":"enum","name":"Status","symbols":["OK","WARN","FAULT"]}},
    {"name":"measured_at","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"day","type":{"type":"int","logicalType":"date"}},
    {"name":"note","type":["null","string"],"default":null},
    {"name":"operator","type":["null","string"],"default":null}
]}"#;

/// The constant fields after `value`, in the schema's order.
fn constants() -> Vec<(String, Value)> {
    let field = |name: &str, value: Value| (name.to_owned(), value);
    vec![
        field("sensor", Value::String("sensor-0042".into())),
        field("site", Value::String("plant-7/hall-3".into())),
        field("firmware", Value::String("4.2.1-rc3".into())),
        field("sequence", Value::Long(9_007_199_254)),
        field("uptime_s", Value::Long(1_234_567)),
        field("count", Value::Int(42)),
        field("battery_pct", Value::Int(87)),
        field("rssi", Value::Int(-71)),
        field("temperature", Value::Double(21.375)),
        field("pressure", Value::Double(1013.25)),
        field("latitude", Value::Double(48.858_222)),
        field("longitude", Value::Double(2.294_5)),
        field("humidity", Value::Float(41.5)),
        field("healthy", Value::Boolean(true)),
        field("status", Value::Enum(1, "WARN".into())),
        field("measured_at", Value::TimestampMillis(1_796_403_905_123)),
        field("day", Value::Date(20_426)),
        field("note", Value::Union(1, Box::new(Value::String("recalibrated after the storm".into())))),
        field("operator", Value::Union(0, Box::new(Value::Null))),
    ]
}

/// How the producer writes a stamp as an Avro record of [`SCHEMA`].
#[derive(Debug, Clone)]
pub struct Framing {
    /// The schema's id in the registry.
    pub id: u32,
    /// The encoding of every field after `value`.
    tail: Vec<u8>,
}

impl Framing {
    /// Encodes the constant fields once, with apache-avro: the record with an empty
    /// `value`, whose encoding is the one byte 0 (the length), then the rest.
    pub fn new(id: u32) -> Result<Framing> {
        let schema = apache_avro::Schema::parse_str(SCHEMA).context("the bench's Avro schema")?;
        let mut fields = vec![("value".to_owned(), Value::String(String::new()))];
        fields.extend(constants());
        let datum = apache_avro::to_avro_datum(&schema, Value::Record(fields)).context("encode the constants")?;
        anyhow::ensure!(datum.first() == Some(&0), "an empty string encodes as one zero byte");
        Ok(Framing { id, tail: datum[1..].to_vec() })
    }

    /// The record in the Confluent wire format, into `out`.
    pub fn framed(&self, out: &mut Vec<u8>, stamp: &[u8]) {
        out.clear();
        out.push(0);
        out.extend_from_slice(&self.id.to_be_bytes());
        self.append_datum(out, stamp);
    }

    /// The record as a plain datum (no header), into `out`.
    pub fn datum(&self, out: &mut Vec<u8>, stamp: &[u8]) {
        out.clear();
        self.append_datum(out, stamp);
    }

    fn append_datum(&self, out: &mut Vec<u8>, stamp: &[u8]) {
        long(out, stamp.len() as i64);
        out.extend_from_slice(stamp);
        out.extend_from_slice(&self.tail);
    }
}

/// Avro's `long`: zigzag, then a varint.
fn long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push(z as u8 | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_with_the_schema() {
        let schema = apache_avro::Schema::parse_str(SCHEMA).unwrap();
        let framing = Framing::new(7).unwrap();
        // Long enough for a two-byte length.
        let stamp = "12345,987654321000,7,".repeat(4);
        let mut out = Vec::new();
        framing.framed(&mut out, stamp.as_bytes());
        assert_eq!(&out[..5], &[0, 0, 0, 0, 7]);
        let mut rest = &out[5..];
        let value = apache_avro::from_avro_datum(&schema, &mut rest, None).unwrap();
        assert!(rest.is_empty());
        let Value::Record(fields) = value else { panic!("a record: {value:?}") };
        assert_eq!(fields.len(), 20);
        assert_eq!(fields[0], ("value".to_owned(), Value::String(stamp)));
        assert_eq!(fields[1..], constants()[..]);
    }
}
