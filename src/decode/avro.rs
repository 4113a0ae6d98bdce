//! Avro datums to JSON: read with the writer's schema, then written as Avro's JSON
//! encoding without the union wrappers, logical types as readable strings (section 9).

use std::collections::{HashMap, HashSet};
use std::fmt;

use apache_avro::schema::{Name, Schema};
use apache_avro::types::Value;
use base64::Engine;
use serde::ser::{Serialize, SerializeMap, Serializer};

/// A parsed writer schema, with the named types of its references: parsed once, then shared
/// by every record written with it.
#[derive(Debug)]
pub struct AvroSchema {
    root: Schema,
    /// The references' schemas, then the root, each after the ones whose types it uses:
    /// what the reader resolves named types in (in order: a name must be known before a
    /// schema that uses it).
    schemata: Vec<Schema>,
    /// Every named type by full name, for the walk to follow a reference to one (it needs
    /// the schema at each place: a decimal's scale is only there).
    names: HashMap<Name, Schema>,
}

impl AvroSchema {
    /// Parses `text`, whose named types may be defined in `references` (the schemas of
    /// the registry's references, in any order).
    pub fn parse(text: &str, references: &[String]) -> Result<AvroSchema, String> {
        // The parser unwraps on some invalid names: a bad schema from the registry must
        // fail that one schema id, not the task that fetched it.
        let parsed = std::panic::catch_unwind(|| {
            if references.is_empty() {
                Schema::parse_str(text).map(|root| (root, Vec::new()))
            } else {
                Schema::parse_str_with_list(text, references)
            }
        })
        .map_err(|_| "the Avro parser failed on this schema".to_owned())?;
        let (root, mut schemata) = parsed.map_err(|e| e.to_string())?;
        schemata.push(root.clone());
        let schemata = in_dependency_order(schemata);
        let mut names = HashMap::new();
        for schema in &schemata {
            collect_names(schema, &mut names);
        }
        Ok(AvroSchema { root, schemata, names })
    }

    /// `bytes` (one datum, nothing after it) as JSON text.
    pub fn to_json(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let mut reader = bytes;
        let value =
            apache_avro::from_avro_datum_schemata(&self.root, self.schemata.iter().collect(), &mut reader, None)
                .map_err(|e| e.to_string())?;
        // A value read with the wrong schema often "succeeds" on a prefix of the bytes.
        if !reader.is_empty() {
            return Err(format!("{} bytes left after the value: not written with this schema", reader.len()));
        }
        let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
        serde_json::to_writer(&mut out, &Json { value: &value, schema: Some(&self.root), names: &self.names })
            .map_err(|e| e.to_string())?;
        Ok(out)
    }
}

#[cfg(test)]
impl AvroSchema {
    /// `value` as the Avro serializer writes it with this schema. For tests.
    pub fn encode(&self, value: Value) -> Vec<u8> {
        apache_avro::to_avro_datum_schemata(&self.root, self.schemata.iter().collect(), value).unwrap()
    }
}

/// `schemas` ordered so that each comes after those defining the named types it uses; a
/// circle of schemas using each other's types keeps its order, at the end.
fn in_dependency_order(schemas: Vec<Schema>) -> Vec<Schema> {
    let mut pending: Vec<(Schema, HashMap<Name, Schema>, HashSet<Name>)> = schemas
        .into_iter()
        .map(|schema| {
            let (mut defines, mut uses) = (HashMap::new(), HashSet::new());
            collect_names(&schema, &mut defines);
            collect_uses(&schema, &mut uses);
            (schema, defines, uses)
        })
        .collect();
    let mut known: HashSet<Name> = HashSet::new();
    let mut ordered = Vec::with_capacity(pending.len());
    while let Some(next) = pending
        .iter()
        .position(|(_, defines, uses)| uses.iter().all(|name| known.contains(name) || defines.contains_key(name)))
    {
        let (schema, defines, _) = pending.remove(next);
        known.extend(defines.into_keys());
        ordered.push(schema);
    }
    ordered.extend(pending.into_iter().map(|(schema, ..)| schema));
    ordered
}

/// Every named type in `schema`, by full name (the parser stores names fully qualified).
fn collect_names(schema: &Schema, names: &mut HashMap<Name, Schema>) {
    match schema {
        Schema::Record(record) => {
            names.insert(record.name.clone(), schema.clone());
            for field in &record.fields {
                collect_names(&field.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.clone(), schema.clone());
        }
        Schema::Fixed(fixed) => {
            names.insert(fixed.name.clone(), schema.clone());
        }
        // A named fixed that is a decimal: a reference to it must keep the scale.
        Schema::Decimal(decimal) => {
            if let Schema::Fixed(fixed) = &*decimal.inner {
                names.insert(fixed.name.clone(), schema.clone());
            }
        }
        Schema::Array(array) => collect_names(&array.items, names),
        Schema::Map(map) => collect_names(&map.types, names),
        Schema::Union(union) => union.variants().iter().for_each(|s| collect_names(s, names)),
        _ => {}
    }
}

/// Every named type `schema` refers to by name.
fn collect_uses(schema: &Schema, uses: &mut HashSet<Name>) {
    match schema {
        Schema::Ref { name } => {
            uses.insert(name.clone());
        }
        Schema::Record(record) => record.fields.iter().for_each(|f| collect_uses(&f.schema, uses)),
        Schema::Array(array) => collect_uses(&array.items, uses),
        Schema::Map(map) => collect_uses(&map.types, uses),
        Schema::Union(union) => union.variants().iter().for_each(|s| collect_uses(s, uses)),
        _ => {}
    }
}

/// A value and the schema at its place, written as JSON. Serialized straight to text: no
/// tree per record, and record fields keep their order (a `serde_json::Map` would sort
/// them).
struct Json<'a> {
    value: &'a Value,
    /// `None` only where the schema and the value disagree, which the reader prevents.
    schema: Option<&'a Schema>,
    names: &'a HashMap<Name, Schema>,
}

impl<'a> Json<'a> {
    fn at(&self, value: &'a Value, schema: Option<&'a Schema>) -> Json<'a> {
        Json { value, schema, names: self.names }
    }

    /// The schema here, a reference followed to the type it names.
    fn schema(&self) -> Option<&'a Schema> {
        match self.schema {
            Some(Schema::Ref { name }) => self.names.get(name),
            schema => schema,
        }
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let schema = self.schema();
        match self.value {
            // The reader gives a null for a string or a boolean cut short.
            Value::Null if !matches!(schema, None | Some(Schema::Null)) => {
                Err(serde::ser::Error::custom("the value ends early"))
            }
            Value::Null => s.serialize_unit(),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Int(n) => s.serialize_i32(*n),
            Value::Long(n) => s.serialize_i64(*n),
            // JSON has no NaN nor infinities.
            Value::Float(x) if x.is_finite() => s.serialize_f32(*x),
            Value::Double(x) if x.is_finite() => s.serialize_f64(*x),
            Value::Float(_) | Value::Double(_) => s.serialize_unit(),
            Value::Bytes(bytes) | Value::Fixed(_, bytes) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            Value::String(text) => s.serialize_str(text),
            Value::Enum(_, symbol) => s.serialize_str(symbol),
            Value::Union(branch, value) => {
                let branch = match schema {
                    Some(Schema::Union(union)) => union.variants().get(*branch as usize),
                    _ => None,
                };
                self.at(value, branch).serialize(s)
            }
            Value::Array(items) => {
                let item = match schema {
                    Some(Schema::Array(array)) => Some(&*array.items),
                    _ => None,
                };
                s.collect_seq(items.iter().map(|v| self.at(v, item)))
            }
            Value::Map(entries) => {
                let values = match schema {
                    Some(Schema::Map(map)) => Some(&*map.types),
                    _ => None,
                };
                s.collect_map(entries.iter().map(|(k, v)| (k, self.at(v, values))))
            }
            Value::Record(fields) => {
                let schemas = match schema {
                    Some(Schema::Record(record)) => &record.fields[..],
                    _ => &[],
                };
                let mut map = s.serialize_map(Some(fields.len()))?;
                // The reader gives the fields in the schema's order.
                for (i, (name, value)) in fields.iter().enumerate() {
                    map.serialize_entry(name, &self.at(value, schemas.get(i).map(|f| &f.schema)))?;
                }
                map.end()
            }
            Value::Decimal(decimal) => {
                let scale = match schema {
                    Some(Schema::Decimal(d)) => d.scale,
                    _ => 0,
                };
                match <Vec<u8>>::try_from(decimal) {
                    Ok(bytes) => s.serialize_str(&decimal_text(&bytes, scale)),
                    Err(e) => Err(serde::ser::Error::custom(e)),
                }
            }
            Value::BigDecimal(decimal) => s.serialize_str(&decimal.to_plain_string()),
            Value::Uuid(uuid) => s.collect_str(uuid),
            Value::Date(days) => match date(*days) {
                Some(day) => s.collect_str(&day),
                None => s.serialize_i32(*days),
            },
            Value::TimeMillis(ms) => time_of_day(s, i64::from(*ms), 1_000, 3),
            Value::TimeMicros(us) => time_of_day(s, *us, 1_000_000, 6),
            Value::TimestampMillis(t) => timestamp(s, *t, 1_000, 3, "Z"),
            Value::TimestampMicros(t) => timestamp(s, *t, 1_000_000, 6, "Z"),
            Value::TimestampNanos(t) => timestamp(s, *t, 1_000_000_000, 9, "Z"),
            Value::LocalTimestampMillis(t) => timestamp(s, *t, 1_000, 3, ""),
            Value::LocalTimestampMicros(t) => timestamp(s, *t, 1_000_000, 6, ""),
            Value::LocalTimestampNanos(t) => timestamp(s, *t, 1_000_000_000, 9, ""),
            // Its JSON encoding is 12 opaque bytes: its three parts say more.
            Value::Duration(d) => {
                let mut map = s.serialize_map(Some(3))?;
                map.serialize_entry("months", &u32::from(d.months()))?;
                map.serialize_entry("days", &u32::from(d.days()))?;
                map.serialize_entry("milliseconds", &u32::from(d.millis()))?;
                map.end()
            }
        }
    }
}

/// `days` since 1970-01-01 as `2026-12-04`; `None` outside years 0 to 9999.
fn date(days: i32) -> Option<impl fmt::Display> {
    // Julian day number of 1970-01-01.
    let date = time::Date::from_julian_day(2_440_588i32.checked_add(days)?).ok()?;
    (0..=9999).contains(&date.year()).then_some(Ymd(date))
}

struct Ymd(time::Date);

impl fmt::Display for Ymd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.0.year(), self.0.month() as u8, self.0.day())
    }
}

/// `units` (of which `per_second` make a second) since the Unix epoch, as RFC 3339 with
/// `digits` fractional digits and `zone` (`Z`, or nothing for local times); the number
/// itself when RFC 3339 cannot say it (years outside 0 to 9999).
fn timestamp<S: Serializer>(s: S, units: i64, per_second: i64, digits: usize, zone: &str) -> Result<S::Ok, S::Error> {
    let (seconds, fraction) = (units.div_euclid(per_second), units.rem_euclid(per_second));
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) if (0..=9999).contains(&t.year()) => s.collect_str(&format_args!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{fraction:0digits$}{zone}",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
        )),
        _ => s.serialize_i64(units),
    }
}

/// `units` after midnight as `17:05:05.123`; the number itself when not within a day.
fn time_of_day<S: Serializer>(s: S, units: i64, per_second: i64, digits: usize) -> Result<S::Ok, S::Error> {
    if !(0..86_400 * per_second).contains(&units) {
        return s.serialize_i64(units);
    }
    let (seconds, fraction) = (units / per_second, units % per_second);
    s.collect_str(&format_args!(
        "{:02}:{:02}:{:02}.{fraction:0digits$}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    ))
}

/// A decimal's exact text: its unscaled value (big-endian two's complement, any length)
/// with `scale` digits after the point.
fn decimal_text(bytes: &[u8], scale: usize) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut magnitude = bytes.to_vec();
    if negative {
        // Two's complement: invert, then add one.
        for b in magnitude.iter_mut() {
            *b = !*b;
        }
        for b in magnitude.iter_mut().rev() {
            let (sum, carry) = b.overflowing_add(1);
            *b = sum;
            if !carry {
                break;
            }
        }
    }
    // Base 256 to base 10^9 by long division, least significant chunk first.
    let mut chunks: Vec<u32> = Vec::new();
    let mut digits_left = magnitude;
    while digits_left.iter().any(|b| *b != 0) {
        let mut remainder: u64 = 0;
        for b in digits_left.iter_mut() {
            let current = (remainder << 8) | u64::from(*b);
            *b = (current / 1_000_000_000) as u8;
            remainder = current % 1_000_000_000;
        }
        chunks.push(remainder as u32);
    }
    let mut digits = match chunks.split_last() {
        None => String::from("0"),
        Some((top, rest)) => {
            let mut text = top.to_string();
            for chunk in rest.iter().rev() {
                text.push_str(&format!("{chunk:09}"));
            }
            text
        }
    };
    if scale > 0 {
        if digits.len() <= scale {
            digits.insert_str(0, &"0".repeat(scale + 1 - digits.len()));
        }
        digits.insert(digits.len() - scale, '.');
    }
    if negative {
        digits.insert(0, '-');
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::{Days, Decimal, Duration, Millis, Months, Uuid};

    /// Every Avro type and logical type, with unions, named references and decimals in
    /// nested places.
    const EVERYTHING: &str = r#"{
      "type": "record", "name": "Everything", "namespace": "acme",
      "fields": [
        {"name": "nothing", "type": "null"},
        {"name": "flag", "type": "boolean"},
        {"name": "count", "type": "int"},
        {"name": "total", "type": "long"},
        {"name": "ratio", "type": "float"},
        {"name": "reading", "type": "double"},
        {"name": "unreadable", "type": "double"},
        {"name": "overflow", "type": "float"},
        {"name": "blob", "type": "bytes"},
        {"name": "label", "type": "string"},
        {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "a", "type": "int"}]}},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "scores", "type": {"type": "map", "values": "long"}},
        {"name": "choice", "type": ["string", "long"]},
        {"name": "maybe", "type": ["null", "Inner"]},
        {"name": "absent", "type": ["null", "string"]},
        {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 4}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "balance", "type": {"type": "fixed", "name": "Money", "size": 8, "logicalType": "decimal", "precision": 18, "scale": 4}},
        {"name": "deltas", "type": {"type": "array", "items": {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 3}}},
        {"name": "discount", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 1}]},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "time_ms", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "time_us", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local_ms", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "local_us", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "before_epoch", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "lease", "type": {"type": "fixed", "name": "Lease", "size": 12, "logicalType": "duration"}}
      ]
    }"#;

    /// 2026-12-04T17:05:05.123456Z in microseconds.
    const AT_US: i64 = 1_796_403_905_123_456;

    fn everything() -> Value {
        let field = |name: &str, value: Value| (name.to_owned(), value);
        Value::Record(vec![
            field("nothing", Value::Null),
            field("flag", Value::Boolean(true)),
            field("count", Value::Int(-7)),
            field("total", Value::Long(9_007_199_254_740_993)),
            field("ratio", Value::Float(0.25)),
            field("reading", Value::Double(21.5)),
            field("unreadable", Value::Double(f64::NAN)),
            field("overflow", Value::Float(f32::INFINITY)),
            field("blob", Value::Bytes(vec![0xff, 0x00, 0x10])),
            field("label", Value::String("sensor \"1\"".into())),
            field("inner", Value::Record(vec![field("a", Value::Int(1))])),
            field("colour", Value::Enum(1, "GREEN".into())),
            field("tags", Value::Array(vec![Value::String("x".into()), Value::String("y".into())])),
            field("scores", Value::Map([("k".to_owned(), Value::Long(3))].into())),
            field("choice", Value::Union(1, Box::new(Value::Long(5)))),
            field("maybe", Value::Union(1, Box::new(Value::Record(vec![field("a", Value::Int(2))])))),
            field("absent", Value::Union(0, Box::new(Value::Null))),
            field("hash", Value::Fixed(4, vec![1, 2, 3, 4])),
            field("price", Value::Decimal(Decimal::from(1234i32.to_be_bytes()))),
            field("balance", Value::Decimal(Decimal::from((-1_234_567i64).to_be_bytes()))),
            field(
                "deltas",
                Value::Array(vec![
                    Value::Decimal(Decimal::from((-5i16).to_be_bytes())),
                    Value::Decimal(Decimal::from([0x00])),
                ]),
            ),
            field("discount", Value::Union(1, Box::new(Value::Decimal(Decimal::from(125i16.to_be_bytes()))))),
            field("id", Value::Uuid(Uuid::parse_str("6f1c2a2e-9d1b-4c53-8a47-3f0e7d9b1a22").unwrap())),
            field("day", Value::Date(20_791)),
            field("time_ms", Value::TimeMillis(61_505_123)),
            field("time_us", Value::TimeMicros(61_505_123_456)),
            field("ts_ms", Value::TimestampMillis(AT_US / 1000)),
            field("ts_us", Value::TimestampMicros(AT_US)),
            field("local_ms", Value::LocalTimestampMillis(AT_US / 1000)),
            field("local_us", Value::LocalTimestampMicros(AT_US)),
            field("before_epoch", Value::TimestampMillis(-1)),
            field("lease", Value::Duration(Duration::new(Months::new(1), Days::new(2), Millis::new(3)))),
        ])
    }

    /// The JSON of [`everything`], in field order.
    const EVERYTHING_JSON: &str = concat!(
        r#"{"nothing":null,"flag":true,"count":-7,"total":9007199254740993,"ratio":0.25,"reading":21.5,"#,
        r#""unreadable":null,"overflow":null,"blob":"/wAQ","label":"sensor \"1\"","inner":{"a":1},"#,
        r#""colour":"GREEN","tags":["x","y"],"scores":{"k":3},"choice":5,"maybe":{"a":2},"absent":null,"#,
        r#""hash":"AQIDBA==","price":"12.34","balance":"-123.4567","deltas":["-0.005","0.000"],"#,
        r#""discount":"12.5","id":"6f1c2a2e-9d1b-4c53-8a47-3f0e7d9b1a22","day":"2026-12-04","#,
        r#""time_ms":"17:05:05.123","time_us":"17:05:05.123456","ts_ms":"2026-12-04T17:05:05.123Z","#,
        r#""ts_us":"2026-12-04T17:05:05.123456Z","local_ms":"2026-12-04T17:05:05.123","#,
        r#""local_us":"2026-12-04T17:05:05.123456","before_epoch":"1969-12-31T23:59:59.999Z","#,
        r#""lease":{"months":1,"days":2,"milliseconds":3}}"#
    );

    fn json(schema: &AvroSchema, bytes: &[u8]) -> String {
        String::from_utf8(schema.to_json(bytes).unwrap()).unwrap()
    }

    #[test]
    fn every_type_and_logical_type_maps_as_section_9_says() {
        let schema = AvroSchema::parse(EVERYTHING, &[]).unwrap();
        let bytes = schema.encode(everything());
        assert_eq!(json(&schema, &bytes), EVERYTHING_JSON);
    }

    #[test]
    fn a_recursive_type_and_a_referenced_one_are_followed_to_their_decimals() {
        let money = r#"{"type": "record", "name": "Money", "namespace": "shop",
            "fields": [{"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3}}]}"#;
        let list = r#"{"type": "record", "name": "Node", "namespace": "shop", "fields": [
            {"name": "cost", "type": "Money"},
            {"name": "next", "type": ["null", "Node"]}]}"#;
        let schema = AvroSchema::parse(list, &[money.to_owned()]).unwrap();
        let cost = |n: i32| Value::Record(vec![("amount".into(), Value::Decimal(Decimal::from(n.to_be_bytes())))]);
        let value = Value::Record(vec![
            ("cost".into(), cost(1500)),
            (
                "next".into(),
                Value::Union(
                    1,
                    Box::new(Value::Record(vec![
                        ("cost".into(), cost(-1)),
                        ("next".into(), Value::Union(0, Box::new(Value::Null))),
                    ])),
                ),
            ),
        ]);
        assert_eq!(
            json(&schema, &schema.encode(value)),
            r#"{"cost":{"amount":"1.500"},"next":{"cost":{"amount":"-0.001"},"next":null}}"#
        );
    }

    #[test]
    fn corrupt_bytes_and_bytes_of_another_schema_are_errors() {
        let schema =
            AvroSchema::parse(r#"{"type":"record","name":"R","fields":[{"name":"s","type":"string"}]}"#, &[]).unwrap();
        // A string whose length says 63 bytes, and three of them.
        assert_eq!(schema.to_json(&[0x7e, b'a', b'b', b'c']).unwrap_err(), "the value ends early");
        // A negative length.
        assert!(schema.to_json(&[0x01]).is_err());
        // A valid string, then more.
        let error = schema.to_json(&[0x02, b'a', 0x02, b'b']).unwrap_err();
        assert!(error.contains("2 bytes left"), "{error}");
        let union = AvroSchema::parse(r#"["null","string"]"#, &[]).unwrap();
        assert!(union.to_json(&[0x08]).is_err(), "branch 4 of 2");
    }

    #[test]
    fn an_invalid_schema_is_an_error_not_a_panic() {
        assert!(AvroSchema::parse("{", &[]).is_err());
        assert!(
            AvroSchema::parse(r#"{"type":"record","name":"R","fields":[{"name":"x","type":"Missing"}]}"#, &[]).is_err()
        );
        assert!(AvroSchema::parse(r#"{"type":"record","name":"1-bad","fields":[]}"#, &[]).is_err());
    }

    #[test]
    fn decimals_of_any_length_are_exact() {
        assert_eq!(decimal_text(&[], 0), "0");
        assert_eq!(decimal_text(&[0x04, 0xd2], 2), "12.34");
        assert_eq!(decimal_text(&[0xfb, 0x2e], 2), "-12.34");
        assert_eq!(decimal_text(&[0x01], 3), "0.001");
        assert_eq!(decimal_text(&[0x80], 0), "-128");
        assert_eq!(decimal_text(&[0xff, 0xff], 1), "-0.1");
        // 2^96, beyond any machine integer.
        let mut big = vec![0x01];
        big.extend([0u8; 12]);
        assert_eq!(decimal_text(&big, 4), "7922816251426433759354395.0336");
        assert_eq!(decimal_text(&1_000_000_000u64.to_be_bytes(), 0), "1000000000");
    }

    #[test]
    fn times_outside_what_rfc_3339_can_say_stay_numbers() {
        let schema = AvroSchema::parse(
            r#"{"type":"record","name":"T","fields":[
                {"name":"far","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"late","type":{"type":"int","logicalType":"time-millis"}}]}"#,
            &[],
        )
        .unwrap();
        let value = Value::Record(vec![
            ("far".into(), Value::TimestampMillis(i64::MAX)),
            ("late".into(), Value::TimeMillis(86_400_000)),
        ]);
        assert_eq!(json(&schema, &schema.encode(value)), format!(r#"{{"far":{},"late":86400000}}"#, i64::MAX));
    }
}
