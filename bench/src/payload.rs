//! The record values the harness produces: `seq,send_ns,key,` then padding to a fixed
//! size, so every frame a client receives says which key's sequence it belongs to, where
//! in it, and when it was meant to be sent.
//!
//! `send_ns` is nanoseconds on [`crate::clock`], the intended send time: a record produced
//! late by a paced producer still carries the time it should have left, so delays are
//! measured, not hidden (no coordinated omission).

/// What a received value says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    pub send_ns: u64,
    pub key: u32,
}

/// Writes a value of exactly `size` bytes (or the header alone, if longer) into `out`.
pub fn encode(out: &mut Vec<u8>, stamp: Stamp, size: usize) {
    use std::io::Write;
    out.clear();
    let _ = write!(out, "{},{},{},", stamp.seq, stamp.send_ns, stamp.key);
    if out.len() < size {
        out.resize(size, b'x');
    }
}

/// Reads the stamp of a value; `None` for anything else (the welcome frame, say).
/// Hand-rolled because it runs for every frame every client receives.
pub fn parse(value: &[u8]) -> Option<Stamp> {
    let mut fields = [0u64; 3];
    let mut i = 0;
    for field in &mut fields {
        let start = i;
        let mut n = 0u64;
        while let Some(&b) = value.get(i) {
            if b == b',' {
                break;
            }
            if !b.is_ascii_digit() {
                return None;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            i += 1;
        }
        if i == start || value.get(i) != Some(&b',') {
            return None;
        }
        *field = n;
        i += 1;
    }
    Some(Stamp { seq: fields[0], send_ns: fields[1], key: u32::try_from(fields[2]).ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_at_a_fixed_size() {
        let stamp = Stamp { seq: 12345, send_ns: 987_654_321_000, key: 7 };
        let mut v = Vec::new();
        encode(&mut v, stamp, 100);
        assert_eq!(v.len(), 100);
        assert!(v.starts_with(b"12345,987654321000,7,xx"));
        assert_eq!(parse(&v), Some(stamp));
    }

    #[test]
    fn other_frames_are_not_stamps() {
        assert_eq!(parse(br#"{"type":"connected","replyId":"x"}"#), None);
        assert_eq!(parse(b"1,2"), None);
        assert_eq!(parse(b",1,2,"), None);
        assert_eq!(parse(b"99999999999999999999999,1,2,"), None);
    }
}
