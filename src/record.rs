//! The record that flows from a source to the clients, and the WebSocket frames it becomes.
//!
//! A record is encoded at most once per form (verbatim, envelope) whatever the number of
//! subscribers: frames hold `Bytes`, so every queue gets a reference, not a copy.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;
use tungstenite::{Message, Utf8Bytes};

use crate::budget::Budget;

/// One record of the stream, as consumed from Kafka or published to the embedded stream.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, when the source gives one.
    pub timestamp: Option<i64>,
    /// `None` is a null key: such records reach `/*` subscribers only.
    pub key: Option<Bytes>,
    /// `None` is a tombstone: skipped, there is nothing to deliver.
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// The frames of one record, each built on first use and then shared. Each payload is
/// charged to the gateway-wide budget once, however many queues it goes to.
pub struct Frames<'a> {
    record: &'a Record,
    budget: &'a Budget,
    verbatim: OnceCell<Option<Message>>,
    envelope: OnceCell<Message>,
}

impl<'a> Frames<'a> {
    pub fn new(record: &'a Record, budget: &'a Budget) -> Self {
        Self { record, budget, verbatim: OnceCell::new(), envelope: OnceCell::new() }
    }

    /// The value as it is: a text frame when it is valid UTF-8, a binary frame otherwise.
    /// `None` for a tombstone.
    pub fn verbatim(&self) -> Option<&Message> {
        self.verbatim.get_or_init(|| self.record.value.clone().map(|v| frame(self.budget.charge(v)))).as_ref()
    }

    /// The record wrapped with its metadata (`?envelope=true`), always a text frame.
    pub fn envelope(&self) -> &Message {
        self.envelope.get_or_init(|| {
            let json = self.budget.charge(Bytes::from(envelope_json(self.record)));
            // Serialized JSON is UTF-8: the check cannot fail.
            Message::Text(Utf8Bytes::try_from(json).unwrap_or_else(|_| Utf8Bytes::from_static("{}")))
        })
    }

    /// The frame for a subscriber, by its choice of form.
    pub fn for_subscriber(&self, envelope: bool) -> Option<&Message> {
        self.record.value.as_ref()?;
        if envelope {
            Some(self.envelope())
        } else {
            self.verbatim()
        }
    }
}

/// A payload as a frame: text when it is valid UTF-8, binary otherwise.
pub fn frame(value: Bytes) -> Message {
    match Utf8Bytes::try_from(value.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(value),
    }
}

/// `{"key","topic","partition","offset","timestamp","headers","value"}`; `value` is the
/// JSON value itself when the payload is JSON, a string when it is other UTF-8 text, and a
/// base64 string (with `"valueEncoding":"base64"`) when it is binary.
pub fn envelope_json(r: &Record) -> String {
    let value = match r.value.as_deref() {
        None => EnvelopeValue::Null,
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => match serde_json::from_str::<&RawValue>(text) {
                Ok(raw) => EnvelopeValue::Json(raw),
                Err(_) => EnvelopeValue::Text(text),
            },
            Err(_) => EnvelopeValue::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        },
    };
    let envelope = Envelope {
        key: r.key.as_deref().map(String::from_utf8_lossy),
        topic: &r.topic,
        partition: r.partition,
        offset: r.offset,
        timestamp: r.timestamp,
        headers: Headers(&r.headers),
        value_encoding: matches!(value, EnvelopeValue::Base64(_)).then_some("base64"),
        value,
    };
    // Serializing borrowed strings, integers and already-valid raw JSON cannot fail.
    serde_json::to_string(&envelope).unwrap_or_else(|_| String::from("{}"))
}

#[derive(Serialize)]
struct Envelope<'a> {
    key: Option<Cow<'a, str>>,
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    headers: Headers<'a>,
    value: EnvelopeValue<'a>,
    #[serde(rename = "valueEncoding", skip_serializing_if = "Option::is_none")]
    value_encoding: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EnvelopeValue<'a> {
    Null,
    Json(&'a RawValue),
    Text(&'a str),
    Base64(String),
}

/// Headers as a JSON object of name → UTF-8 text (lossy) or null.
struct Headers<'a>(&'a [(String, Option<Bytes>)]);

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, &value.as_deref().map(String::from_utf8_lossy))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: Option<&str>, value: Option<&[u8]>) -> Record {
        Record {
            topic: Arc::from("t"),
            partition: 2,
            offset: 41,
            timestamp: Some(1_700_000_000_000),
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: value.map(Bytes::copy_from_slice),
            headers: vec![("h".into(), Some(Bytes::from_static(b"v"))), ("n".into(), None)],
        }
    }

    fn unbounded() -> Budget {
        Budget::new(usize::MAX, Default::default())
    }

    #[test]
    fn frames_are_charged_to_the_budget_until_dropped() {
        let budget = unbounded();
        let r = record(Some("k"), Some(b"0123456789"));
        let frames = Frames::new(&r, &budget);
        let verbatim = frames.verbatim().cloned();
        let envelope = frames.envelope().clone();
        assert_eq!(budget.held(), 10 + crate::client::payload(&envelope).len());
        drop((frames, verbatim, envelope));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn utf8_values_become_text_frames_and_others_binary() {
        let r = record(Some("k"), Some(b"not json"));
        assert!(matches!(Frames::new(&r, &unbounded()).verbatim(), Some(Message::Text(t)) if t.as_str() == "not json"));
        let r = record(Some("k"), Some(&[0xff, 0x00]));
        assert!(
            matches!(Frames::new(&r, &unbounded()).verbatim(), Some(Message::Binary(b)) if b.as_ref() == [0xff, 0x00])
        );
        let r = record(Some("k"), None);
        assert!(Frames::new(&r, &unbounded()).for_subscriber(false).is_none());
        assert!(Frames::new(&r, &unbounded()).for_subscriber(true).is_none());
    }

    #[test]
    fn envelope_embeds_json_values_and_quotes_text() {
        let r = record(Some("k"), Some(br#"{"a":[1,2]}"#));
        let v: serde_json::Value = serde_json::from_str(&envelope_json(&r)).unwrap();
        assert_eq!(v["value"]["a"][1], 2);
        assert_eq!(v["key"], "k");
        assert_eq!(v["topic"], "t");
        assert_eq!(v["partition"], 2);
        assert_eq!(v["offset"], 41);
        assert_eq!(v["timestamp"], 1_700_000_000_000i64);
        assert_eq!(v["headers"]["h"], "v");
        assert!(v["headers"]["n"].is_null());
        assert!(v.get("valueEncoding").is_none());

        let r = record(None, Some(b"plain"));
        let v: serde_json::Value = serde_json::from_str(&envelope_json(&r)).unwrap();
        assert_eq!(v["value"], "plain");
        assert!(v["key"].is_null());

        let r = record(Some("k"), Some(&[0xff]));
        let v: serde_json::Value = serde_json::from_str(&envelope_json(&r)).unwrap();
        assert_eq!(v["value"], "/w==");
        assert_eq!(v["valueEncoding"], "base64");
    }
}
