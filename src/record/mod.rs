//! The record that flows from a source to the clients, and the frames it becomes.
//!
//! A record is encoded at most once per form (verbatim, envelope, and their Server-Sent
//! Events twins) whatever the number of subscribers: frames hold `Bytes`, so every queue
//! gets a reference, not a copy. SSE events travel the same queues as WebSocket frames,
//! as binary messages holding the event's bytes.

pub mod budget;
pub mod position;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::value::RawValue;
use tungstenite::{Message, Utf8Bytes};

use crate::record::budget::Budget;

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
    /// The value decoded from its wire format (`--value-format`), when the topic has one:
    /// what clients get in its place.
    pub decoded: Option<Decoded>,
}

/// A value decoded from its wire format (Avro, Protobuf, JSON Schema) to JSON, or why it
/// could not be: then the raw bytes go out, with the reason (`decodeError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The value as JSON text (UTF-8).
    Json(Bytes),
    /// Why it could not be decoded.
    Failed(Arc<str>),
}

impl Record {
    /// The value as clients get it: the decoded JSON when there is one, else the bytes.
    pub fn shown_value(&self) -> Option<Bytes> {
        match (&self.decoded, &self.value) {
            // A tombstone stays one, whatever its format.
            (_, None) => None,
            (Some(Decoded::Json(json)), Some(_)) => Some(json.clone()),
            (_, value) => value.clone(),
        }
    }

    /// Why the value could not be decoded, when it could not.
    pub fn decode_error(&self) -> Option<&str> {
        match &self.decoded {
            Some(Decoded::Failed(why)) => Some(why),
            _ => None,
        }
    }
}

/// How a subscriber wants records: over WebSocket or Server-Sent Events, verbatim or in
/// the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The value itself, as a text or binary WebSocket frame.
    Verbatim,
    /// The envelope JSON (`?envelope=true`), with the record's cursor.
    Envelope,
    /// An SSE event: `id:` the cursor, `data:` the value.
    Sse,
    /// An SSE event: `id:` the cursor, `data:` the envelope JSON.
    SseEnvelope,
    /// A multiplexed connection (`sluice.v1`): JSON text frames, each record an envelope
    /// with `"type":"record"` and its subscription's id (see [`Stamped::mux_frame`]).
    Mux,
}

impl Form {
    pub fn new(sse: bool, envelope: bool) -> Form {
        match (sse, envelope) {
            (false, false) => Form::Verbatim,
            (false, true) => Form::Envelope,
            (true, false) => Form::Sse,
            (true, true) => Form::SseEnvelope,
        }
    }

    pub fn is_sse(self) -> bool {
        matches!(self, Form::Sse | Form::SseEnvelope)
    }

    pub fn is_envelope(self) -> bool {
        matches!(self, Form::Envelope | Form::SseEnvelope | Form::Mux)
    }
}

/// The frames of one record for multiplexed subscriptions, by subscription id.
type MuxFrames = Vec<(Arc<str>, Message)>;

/// A record and the frames it becomes, each built on first use and then shared by every
/// subscriber, live or replaying (the replay buffer holds these). Each payload is charged
/// to the gateway-wide budget once, however many queues it goes to.
pub struct Stamped {
    pub record: Record,
    /// The position just after this record, encoded: the same for every subscriber that
    /// received the stream in dispatch order.
    cursor: OnceLock<String>,
    verbatim: OnceLock<Option<Message>>,
    envelope: OnceLock<Message>,
    sse: OnceLock<Message>,
    sse_envelope: OnceLock<Message>,
    /// The value parsed as JSON, for `where` conditions: once per record, however many
    /// subscribers look (`None` inside when it is not JSON).
    json: OnceLock<Option<serde_json::Value>>,
    /// Multiplexed connections' frames, one per subscription id asked for (clients of the
    /// same library tend to number their subscriptions alike, so each is shared too).
    mux: OnceLock<Box<Mutex<MuxFrames>>>,
}

impl Stamped {
    pub fn new(record: Record) -> Stamped {
        Stamped {
            record,
            cursor: OnceLock::new(),
            verbatim: OnceLock::new(),
            envelope: OnceLock::new(),
            sse: OnceLock::new(),
            sse_envelope: OnceLock::new(),
            json: OnceLock::new(),
            mux: OnceLock::new(),
        }
    }

    /// The value as JSON, parsed on first use; `None` when it is not JSON (or a tombstone).
    pub fn json(&self) -> Option<&serde_json::Value> {
        self.json
            .get_or_init(|| {
                // A value that failed to decode has no JSON to look into: `where` never matches it.
                if self.record.decode_error().is_some() {
                    return None;
                }
                self.record.shown_value().and_then(|v| serde_json::from_slice(&v).ok())
            })
            .as_ref()
    }

    /// Payload bytes of the frames built so far (charged to the budget, and held as long as
    /// this record is).
    pub fn built_bytes(&self) -> usize {
        let len = |m: Option<&Message>| m.map_or(0, |m| payload(m).len());
        len(self.verbatim.get().and_then(Option::as_ref))
            + len(self.envelope.get())
            + len(self.sse.get())
            + len(self.sse_envelope.get())
            + self.mux.get().map_or(0, |m| m.lock().iter().map(|(_, f)| payload(f).len()).sum())
    }

    /// The frame for the multiplexed subscription `id`; `None` for a tombstone. Built once
    /// per record and id, then shared like the other forms.
    pub fn mux_frame(&self, id: &Arc<str>, budget: &Budget, cursor: impl FnOnce() -> String) -> Option<Message> {
        self.record.value.as_ref()?;
        let cache = self.mux.get_or_init(Default::default);
        let mut cache = cache.lock();
        if let Some((_, frame)) = cache.iter().find(|(k, _)| k == id) {
            return Some(frame.clone());
        }
        let frame = mux_record(id, &envelope_json(&self.record, Some(self.cursor(cursor))), budget);
        cache.push((id.clone(), frame.clone()));
        Some(frame)
    }

    /// [`Stamped::mux_frame`] with a cursor of the caller's, built for that one subscriber.
    pub fn mux_frame_with_cursor(&self, id: &str, cursor: &str, budget: &Budget) -> Option<Message> {
        self.record.value.as_ref()?;
        Some(mux_record(id, &envelope_json(&self.record, Some(cursor)), budget))
    }

    /// The cursor, computed by `cursor` the first time it is needed.
    pub fn cursor(&self, cursor: impl FnOnce() -> String) -> &str {
        self.cursor.get_or_init(cursor)
    }

    /// The frame for a subscriber in `form`; `None` for a tombstone. `cursor` gives the
    /// position just after this record, when the form needs it and it is not known yet.
    pub fn frame(&self, form: Form, budget: &Budget, cursor: impl FnOnce() -> String) -> Option<&Message> {
        self.record.value.as_ref()?;
        Some(match form {
            Form::Verbatim => {
                return self.verbatim.get_or_init(|| Some(verbatim(&self.record, budget))).as_ref();
            }
            Form::Envelope => self.envelope.get_or_init(|| self.build(form, self.cursor(cursor), budget)),
            Form::Sse => self.sse.get_or_init(|| self.build(form, self.cursor(cursor), budget)),
            Form::SseEnvelope => self.sse_envelope.get_or_init(|| self.build(form, self.cursor(cursor), budget)),
            // A multiplexed subscriber's frames carry its id: see `mux_frame`.
            Form::Mux => self.envelope.get_or_init(|| self.build(Form::Envelope, self.cursor(cursor), budget)),
        })
    }

    /// The frame in `form` with a cursor of the caller's (a client resuming where the
    /// stream's own cursor would move it backwards), built for that one client.
    pub fn frame_with_cursor(&self, form: Form, cursor: &str, budget: &Budget) -> Option<Message> {
        self.record.value.as_ref()?;
        Some(match form {
            Form::Verbatim => verbatim(&self.record, budget),
            _ => self.build(form, cursor, budget),
        })
    }

    fn build(&self, form: Form, cursor: &str, budget: &Budget) -> Message {
        match form {
            Form::Verbatim => verbatim(&self.record, budget),
            Form::Envelope | Form::Mux => {
                let json = budget.charge(Bytes::from(envelope_json(&self.record, Some(cursor))));
                // Serialized JSON is UTF-8: the check cannot fail.
                Message::Text(Utf8Bytes::try_from(json).unwrap_or_else(|_| Utf8Bytes::from_static("{}")))
            }
            Form::Sse => Message::Binary(budget.charge(sse_record(cursor, self.record.shown_value().as_deref()))),
            Form::SseEnvelope => {
                let json = envelope_json(&self.record, Some(cursor));
                Message::Binary(budget.charge(sse_event(None, Some(cursor), json.as_bytes())))
            }
        }
    }
}

/// A record's plain frame: its value as shown (decoded JSON, or the bytes), text when UTF-8;
/// a value that could not be decoded goes as the binary it is.
fn verbatim(record: &Record, budget: &Budget) -> Message {
    let value = budget.charge(record.shown_value().unwrap_or_default());
    if record.decode_error().is_some() {
        Message::Binary(value)
    } else {
        frame(value)
    }
}

/// `{"type":"record","sub":ID,` and the rest of the envelope: a multiplexed connection's
/// record frame.
fn mux_record(id: &str, envelope: &str, budget: &Budget) -> Message {
    let mut json = String::with_capacity(envelope.len() + id.len() + 32);
    json.push_str(r#"{"type":"record","sub":"#);
    // An id is a JSON string (checked at subscribe); serializing a str cannot fail.
    json.push_str(&serde_json::to_string(id).unwrap_or_default());
    json.push(',');
    json.push_str(envelope.strip_prefix('{').unwrap_or(envelope));
    let json = budget.charge(Bytes::from(json));
    Message::Text(Utf8Bytes::try_from(json).unwrap_or_else(|_| Utf8Bytes::from_static("{}")))
}

/// An SSE event: `event:` (when not the default `message`), `id:`, then the data, one
/// `data:` line per line of it (EventSource joins them with `\n`; `\r\n` and `\r` line
/// breaks arrive as `\n`), and the blank line that ends it.
pub fn sse_event(event: Option<&str>, id: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + id.map_or(0, str::len) + 32);
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    // EventSource joins the data lines with `\n`: a value ending in a line break ends with
    // an empty `data:` line, and arrives with it.
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        for part in line.split(|&b| b == b'\r') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(part);
            out.push(b'\n');
        }
    }
    out.push(b'\n');
    Bytes::from(out)
}

/// A record's value as an SSE event: the text as `data:`, or for a binary value its
/// base64 under `event: binary` (SSE carries text only).
fn sse_record(cursor: &str, value: Option<&[u8]>) -> Bytes {
    match Text::of(value.unwrap_or_default()) {
        Text::Utf8(text) => sse_event(None, Some(cursor), text.as_bytes()),
        Text::Base64(encoded) => sse_event(Some("binary"), Some(cursor), encoded.as_bytes()),
    }
}

/// A payload as a frame: text when it is valid UTF-8, binary otherwise.
pub fn frame(value: Bytes) -> Message {
    match Utf8Bytes::try_from(value.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(value),
    }
}

/// `{"key","topic","partition","offset","timestamp","headers","value","cursor"}`; `value`
/// is the JSON value itself when the payload is JSON, a string when it is other UTF-8 text,
/// and a base64 string (with `"valueEncoding":"base64"`) when it is binary.
pub fn envelope_json(r: &Record, cursor: Option<&str>) -> String {
    let shown = r.shown_value();
    let value = match shown.as_deref() {
        None => EnvelopeValue::Null,
        // A failed decode goes out as the bytes it was, base64 (with its decodeError).
        Some(bytes) if r.decode_error().is_some() => EnvelopeValue::Base64(Text::base64(bytes).as_str().to_owned()),
        Some(bytes) => match Text::of(bytes) {
            Text::Utf8(text) => match serde_json::from_str::<&RawValue>(text) {
                Ok(raw) => EnvelopeValue::Json(raw),
                Err(_) => EnvelopeValue::Text(text),
            },
            Text::Base64(encoded) => EnvelopeValue::Base64(encoded),
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
        decode_error: r.decode_error(),
        cursor,
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
    #[serde(rename = "decodeError", skip_serializing_if = "Option::is_none")]
    decode_error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<&'a str>,
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

/// A payload where only text can go (JSON, an SSE event): the text itself when it is
/// UTF-8, else its base64. Every place that carries bytes as text goes through this, so
/// they all agree on what a reader must decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text<'a> {
    Utf8(&'a str),
    Base64(String),
}

impl<'a> Text<'a> {
    pub fn of(bytes: &'a [u8]) -> Text<'a> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Text::Utf8(text),
            Err(_) => Text::base64(bytes),
        }
    }

    /// Base64 whatever the bytes are (a binary frame's payload stays marked binary).
    pub fn base64(bytes: &[u8]) -> Text<'a> {
        Text::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Text::Utf8(t) => t,
            Text::Base64(b) => b,
        }
    }

    /// `Some("base64")` for base64: the `encoding` fields of the JSON forms.
    pub fn encoding(&self) -> Option<&'static str> {
        matches!(self, Text::Base64(_)).then_some("base64")
    }
}

/// The payload a frame carries (empty for control frames without one).
pub fn payload(frame: &Message) -> &[u8] {
    match frame {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b,
        Message::Close(_) | Message::Frame(_) => &[],
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
            decoded: None,
        }
    }

    fn unbounded() -> Budget {
        Budget::new(usize::MAX, Default::default())
    }

    fn cursor() -> String {
        "CURSOR".to_owned()
    }

    #[test]
    fn frames_are_charged_to_the_budget_until_dropped() {
        let budget = unbounded();
        let stamped = Stamped::new(record(Some("k"), Some(b"0123456789")));
        let verbatim = stamped.frame(Form::Verbatim, &budget, cursor).cloned().unwrap();
        let envelope = stamped.frame(Form::Envelope, &budget, cursor).cloned().unwrap();
        assert_eq!(budget.held(), 10 + payload(&envelope).len());
        drop((stamped, verbatim, envelope));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn utf8_values_become_text_frames_and_others_binary() {
        let b = unbounded();
        let s = Stamped::new(record(Some("k"), Some(b"not json")));
        assert!(matches!(s.frame(Form::Verbatim, &b, cursor), Some(Message::Text(t)) if t.as_str() == "not json"));
        let s = Stamped::new(record(Some("k"), Some(&[0xff, 0x00])));
        assert!(matches!(s.frame(Form::Verbatim, &b, cursor), Some(Message::Binary(v)) if v.as_ref() == [0xff, 0x00]));
        let s = Stamped::new(record(Some("k"), None));
        for form in [Form::Verbatim, Form::Envelope, Form::Sse, Form::SseEnvelope] {
            assert!(s.frame(form, &b, cursor).is_none());
        }
    }

    #[test]
    fn sse_events_carry_the_cursor_as_id_and_each_line_as_data() {
        let b = unbounded();
        let s = Stamped::new(record(Some("k"), Some(b"one\ntwo\r\nthree")));
        let Some(Message::Binary(event)) = s.frame(Form::Sse, &b, cursor) else { panic!() };
        assert_eq!(&event[..], b"id: CURSOR\ndata: one\ndata: two\ndata: three\n\n");
        let s = Stamped::new(record(Some("k"), Some(&[0xff])));
        let Some(Message::Binary(event)) = s.frame(Form::Sse, &b, cursor) else { panic!() };
        assert_eq!(&event[..], b"event: binary\nid: CURSOR\ndata: /w==\n\n");
        let s = Stamped::new(record(Some("k"), Some(b"{\"a\":1}")));
        let Some(Message::Binary(event)) = s.frame(Form::SseEnvelope, &b, cursor) else { panic!() };
        let text = std::str::from_utf8(event).unwrap();
        assert!(text.starts_with("id: CURSOR\ndata: {") && text.ends_with("\"cursor\":\"CURSOR\"}\n\n"), "{text}");
        assert_eq!(&sse_event(Some("message"), None, b"hi")[..], b"event: message\ndata: hi\n\n");
        assert_eq!(&sse_event(None, None, b"hi\n")[..], b"data: hi\ndata: \n\n");
    }

    #[test]
    fn the_cursor_is_computed_once_and_shared_by_every_form() {
        let b = unbounded();
        let s = Stamped::new(record(Some("k"), Some(b"v")));
        let mut calls = 0;
        s.frame(Form::Envelope, &b, || {
            calls += 1;
            cursor()
        });
        s.frame(Form::Sse, &b, || {
            calls += 1;
            cursor()
        });
        assert_eq!(calls, 1);
        let own = s.frame_with_cursor(Form::Envelope, "MINE", &b).unwrap();
        assert!(own.to_text().unwrap().contains("\"cursor\":\"MINE\""));
    }

    #[test]
    fn a_decoded_value_goes_out_as_its_json_and_a_failed_one_as_its_bytes_with_the_reason() {
        let mut r = record(Some("k"), Some(&[0, 0, 0, 0, 7, 2, 0x61]));
        r.decoded = Some(Decoded::Json(Bytes::from_static(br#"{"a":1}"#)));
        let decoded = Stamped::new(r.clone());
        let budget = unbounded();
        assert_eq!(decoded.frame(Form::Verbatim, &budget, cursor), Some(&Message::Text(r#"{"a":1}"#.into())));
        let envelope: serde_json::Value = serde_json::from_str(&envelope_json(&r, None)).unwrap();
        assert_eq!(envelope["value"], serde_json::json!({ "a": 1 }));
        assert!(envelope.get("decodeError").is_none() && envelope.get("valueEncoding").is_none());
        assert_eq!(decoded.json(), Some(&serde_json::json!({ "a": 1 })));
        let sse = decoded.frame(Form::Sse, &budget, cursor).unwrap();
        assert!(std::str::from_utf8(payload(sse)).unwrap().contains("data: {\"a\":1}\n"));

        r.decoded = Some(Decoded::Failed("unknown schema id 7".into()));
        let failed = Stamped::new(r.clone());
        assert_eq!(
            failed.frame(Form::Verbatim, &budget, cursor),
            Some(&Message::Binary(Bytes::from_static(&[0, 0, 0, 0, 7, 2, 0x61])))
        );
        let envelope: serde_json::Value = serde_json::from_str(&envelope_json(&r, None)).unwrap();
        assert_eq!(
            (envelope["valueEncoding"].as_str(), envelope["value"].as_str()),
            (Some("base64"), Some("AAAAAAcCYQ=="))
        );
        assert_eq!(envelope["decodeError"], "unknown schema id 7");
        // A failed value is base64 even when its bytes happen to be text.
        let mut text = record(Some("k"), Some(b"plain"));
        text.decoded = Some(Decoded::Failed("no magic byte".into()));
        let envelope: serde_json::Value = serde_json::from_str(&envelope_json(&text, None)).unwrap();
        assert_eq!(envelope["value"], "cGxhaW4=");
    }

    #[test]
    fn envelope_embeds_json_values_and_quotes_text() {
        let r = record(Some("k"), Some(br#"{"a":[1,2]}"#));
        let v: serde_json::Value = serde_json::from_str(&envelope_json(&r, None)).unwrap();
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
        let v: serde_json::Value = serde_json::from_str(&envelope_json(&r, None)).unwrap();
        assert_eq!(v["value"], "plain");
        assert!(v["key"].is_null());

        let r = record(Some("k"), Some(&[0xff]));
        let v: serde_json::Value = serde_json::from_str(&envelope_json(&r, None)).unwrap();
        assert_eq!(v["value"], "/w==");
        assert_eq!(v["valueEncoding"], "base64");
    }
}
