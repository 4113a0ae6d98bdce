//! The Confluent wire format: a zero byte, the schema id (4 bytes, big-endian), then the
//! encoded value; for Protobuf, between the two, which message of the schema it is.

use super::Failure;

/// The magic byte and the schema id.
const HEADER: usize = 5;

/// Message types nest this deep at most: deeper index lists are taken for corrupt bytes
/// rather than walked (no real schema comes near it).
const MAX_INDEXES: usize = 64;

/// The schema id of a framed value, and the bytes after the header.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), Failure> {
    match bytes {
        [0, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [] => Err(Failure::new("no_magic_byte", None, "empty value: no schema registry header")),
        [0, ..] => Err(Failure::new(
            "no_magic_byte",
            None,
            format!("{} bytes: too short for a schema registry header", bytes.len()),
        )),
        [first, ..] => Err(Failure::new(
            "no_magic_byte",
            None,
            format!("first byte {first:#04x}, not the schema registry's magic byte 0"),
        )),
    }
}

/// The JSON after the header when `bytes` are framed, else `bytes` whole. Framing is
/// recognised by its zero byte, which JSON text never starts with.
pub fn unframed_json(bytes: &[u8]) -> &[u8] {
    match bytes {
        [0, ..] if bytes.len() >= HEADER => &bytes[HEADER..],
        _ => bytes,
    }
}

/// The message indexes that open a framed Protobuf value, and the message's bytes after
/// them. The single byte 0 is the common case: `[0]`, the schema's first message type.
pub fn message_indexes(bytes: &[u8], schema: u32) -> Result<(Vec<i32>, &[u8]), Failure> {
    let corrupt = |what: &str| Failure::new("corrupt", Some(schema), format!("message indexes: {what}"));
    let (count, mut rest) = zigzag(bytes).ok_or_else(|| corrupt("truncated"))?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    let count = usize::try_from(count).ok().filter(|n| *n <= MAX_INDEXES).ok_or_else(|| corrupt("bad count"))?;
    let mut indexes = Vec::with_capacity(count);
    for _ in 0..count {
        let (index, after) = zigzag(rest).ok_or_else(|| corrupt("truncated"))?;
        indexes.push(i32::try_from(index).map_err(|_| corrupt("index out of range"))?);
        rest = after;
    }
    Ok((indexes, rest))
}

/// A zigzag-encoded varint (as the Java serializer writes the indexes), and what follows.
fn zigzag(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let mut raw: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = (raw >> 1) as i64 ^ -((raw & 1) as i64);
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// `bytes` framed for schema `id`: what a Confluent serializer writes. For tests.
#[cfg(test)]
pub fn frame(id: u32, indexes: Option<&[i32]>, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    match indexes {
        None => {}
        Some([0]) => out.push(0),
        Some(indexes) => {
            put_zigzag(&mut out, indexes.len() as i64);
            for index in indexes {
                put_zigzag(&mut out, i64::from(*index));
            }
        }
    }
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
fn put_zigzag(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_gives_the_schema_id_and_the_rest() {
        let framed = frame(0x0102_0304, None, b"abc");
        assert_eq!(split(&framed).unwrap(), (0x0102_0304, &b"abc"[..]));
        assert_eq!(split(&[0, 0, 0, 0, 7]).unwrap(), (7, &b""[..]));
    }

    #[test]
    fn a_value_without_the_magic_byte_or_too_short_is_refused() {
        for bytes in [&b"{\"a\":1}"[..], &[0, 0, 1], &[]] {
            let failure = split(bytes).unwrap_err();
            assert_eq!(failure.reason, "no_magic_byte", "{bytes:?}");
        }
        assert!(split(b"{}").unwrap_err().message.contains("0x7b"));
    }

    #[test]
    fn json_is_read_framed_or_plain() {
        assert_eq!(unframed_json(&frame(9, None, b"{\"a\":1}")), b"{\"a\":1}");
        assert_eq!(unframed_json(b"{\"a\":1}"), b"{\"a\":1}");
    }

    #[test]
    fn message_indexes_read_the_short_form_and_the_long_one() {
        assert_eq!(message_indexes(&[0, 9], 1).unwrap(), (vec![0], &[9][..]));
        let framed = frame(1, Some(&[2, 0, 130]), &[9]);
        let (_, rest) = split(&framed).unwrap();
        assert_eq!(message_indexes(rest, 1).unwrap(), (vec![2, 0, 130], &[9][..]));
        // The count promises two indexes, only one follows.
        assert_eq!(message_indexes(&[4, 2], 1).unwrap_err().reason, "corrupt");
        assert_eq!(message_indexes(&[], 1).unwrap_err().reason, "corrupt");
        assert_eq!(message_indexes(&[0xff; 12], 1).unwrap_err().reason, "corrupt");
        // A negative count.
        assert_eq!(message_indexes(&[1], 1).unwrap_err().reason, "corrupt");
    }
}
