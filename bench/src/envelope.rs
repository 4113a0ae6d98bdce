//! The two fields a resuming client needs from an envelope frame (`?envelope=true`): the
//! record's value, where the harness's stamp is, and the `cursor` to resume from.
//!
//! A full JSON parse of every frame would cost the load client more than the gateway spends
//! sending it; the gateway writes the envelope's fields in a fixed order with `value` a JSON
//! string for the harness's text values, so finding two markers is enough.

const VALUE: &[u8] = br#""value":""#;
const CURSOR: &[u8] = br#""cursor":""#;

/// The value of a text envelope, from its first byte to the end of the frame: a stamp
/// ([`crate::payload::parse`]) reads only its own three fields, so the end is not sought.
/// `None` when the value is not a JSON string (JSON or binary values).
pub fn value(frame: &[u8]) -> Option<&[u8]> {
    find(frame, VALUE).map(|at| &frame[at + VALUE.len()..])
}

/// The `cursor` field: the last field the gateway writes, so it is sought from the end.
pub fn cursor(frame: &[u8]) -> Option<&[u8]> {
    let at = frame.windows(CURSOR.len()).rposition(|w| w == CURSOR)? + CURSOR.len();
    let len = frame[at..].iter().position(|&b| b == b'"')?;
    Some(&frame[at..at + len])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{self, Stamp};

    #[test]
    fn stamp_and_cursor_come_out_of_an_envelope() {
        let mut v = Vec::new();
        let stamp = Stamp { seq: 41, send_ns: 7, key: 3 };
        payload::encode(&mut v, stamp, 40);
        let frame = format!(
            r#"{{"key":"k3","topic":"t","partition":0,"offset":9,"timestamp":1,"headers":{{}},"value":"{}","cursor":"AQx3-_"}}"#,
            String::from_utf8(v).unwrap()
        );
        assert_eq!(value(frame.as_bytes()).and_then(payload::parse), Some(stamp));
        assert_eq!(cursor(frame.as_bytes()), Some(&b"AQx3-_"[..]));
    }

    #[test]
    fn frames_without_the_fields_give_nothing() {
        let welcome = br#"{"type":"connected","replyId":"x","cursor":"AQ","resumed":true}"#;
        assert_eq!(value(welcome), None);
        assert_eq!(cursor(welcome), Some(&b"AQ"[..]));
        assert_eq!(value(br#"{"value":{"a":1}}"#), None);
        assert_eq!(cursor(br#"{"cursor":"unterminated"#), None);
    }
}
