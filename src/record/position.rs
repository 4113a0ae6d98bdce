//! Positions in the stream, and the cursors that name them.
//!
//! A position is, for every partition of `input`, the offset of the next record: the
//! point just after everything consumed so far. A cursor is a position written down for a
//! client: an opaque, URL-safe string (base64url of a small binary form) that it hands back
//! to resume. It is made of Kafka offsets, not of anything one process remembers, so it
//! means the same to a restarted gateway and to every replica reading the same topic.
//!
//! The binary form: a version byte, a 32-bit stream tag (a hash of the topic name for
//! Kafka; a random number per process for the embedded stream, whose offsets start over
//! with each process), then the partition count and each partition's id and next offset,
//! as LEB128 varints.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const VERSION: u8 = 1;
/// No topic has more partitions than this (Kafka's own limits are far lower in practice);
/// a cursor claiming more is refused rather than allocated.
const MAX_PARTITIONS: u64 = 100_000;

/// Where the next record of each partition is: `(partition, next offset)`, sorted by
/// partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    offsets: Vec<(i32, i64)>,
}

impl Position {
    pub fn new(mut offsets: Vec<(i32, i64)>) -> Position {
        offsets.sort_unstable();
        offsets.dedup_by_key(|(p, _)| *p);
        Position { offsets }
    }

    /// The next offset of `partition`, if it is known.
    pub fn get(&self, partition: i32) -> Option<i64> {
        self.index(partition).ok().map(|i| self.offsets[i].1)
    }

    fn index(&self, partition: i32) -> Result<usize, usize> {
        // Partition ids are almost always 0..n: look there first.
        match self.offsets.get(partition as usize) {
            Some(&(p, _)) if p == partition => Ok(partition as usize),
            _ => self.offsets.binary_search_by_key(&partition, |(p, _)| *p),
        }
    }

    /// A record at `offset` of `partition` was consumed: the position moves past it.
    pub fn advance(&mut self, partition: i32, offset: i64) {
        match self.index(partition) {
            Ok(i) => {
                let next = &mut self.offsets[i].1;
                *next = (*next).max(offset + 1);
            }
            Err(i) => self.offsets.insert(i, (partition, offset + 1)),
        }
    }

    /// The next offset of `partition`, to compare and move in one lookup.
    pub fn next_mut(&mut self, partition: i32) -> Option<&mut i64> {
        self.index(partition).ok().map(|i| &mut self.offsets[i].1)
    }

    /// Moves `partition`'s next offset forward to `next` (never back); starts watching it
    /// there if it was not.
    pub fn raise(&mut self, partition: i32, next: i64) {
        match self.index(partition) {
            Ok(i) => self.offsets[i].1 = self.offsets[i].1.max(next),
            Err(i) => self.offsets.insert(i, (partition, next)),
        }
    }

    /// Sets `partition`'s next offset, forward or back.
    pub fn set(&mut self, partition: i32, next: i64) {
        match self.index(partition) {
            Ok(i) => self.offsets[i].1 = next,
            Err(i) => self.offsets.insert(i, (partition, next)),
        }
    }

    /// Starts watching `partition` at `next` (a partition added to the topic).
    pub fn insert(&mut self, partition: i32, next: i64) {
        if let Err(i) = self.index(partition) {
            self.offsets.insert(i, (partition, next));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.offsets.iter().copied()
    }
}

/// A position as handed to clients: tagged with the stream it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub tag: u32,
    pub position: Position,
}

/// Why a cursor was not understood (answered 400 before any upgrade).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed cursor: {0}")]
pub struct CursorError(&'static str);

impl Cursor {
    /// The URL-safe text form.
    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(6 + self.position.offsets.len() * 6);
        out.push(VERSION);
        out.extend_from_slice(&self.tag.to_le_bytes());
        varint(&mut out, self.position.offsets.len() as u64);
        for &(partition, next) in &self.position.offsets {
            varint(&mut out, partition as u64);
            varint(&mut out, next as u64);
        }
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn decode(text: &str) -> Result<Cursor, CursorError> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| CursorError("not base64url"))?;
        let (&version, rest) = bytes.split_first().ok_or(CursorError("empty"))?;
        if version != VERSION {
            return Err(CursorError("unknown version"));
        }
        let tag = rest.get(..4).ok_or(CursorError("too short"))?;
        let tag = u32::from_le_bytes([tag[0], tag[1], tag[2], tag[3]]);
        let mut input = &rest[4..];
        let count = read_varint(&mut input)?;
        if count > MAX_PARTITIONS {
            return Err(CursorError("too many partitions"));
        }
        let mut offsets = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let partition =
                i32::try_from(read_varint(&mut input)?).map_err(|_| CursorError("partition out of range"))?;
            let next = i64::try_from(read_varint(&mut input)?).map_err(|_| CursorError("offset out of range"))?;
            offsets.push((partition, next));
        }
        if !input.is_empty() {
            return Err(CursorError("trailing bytes"));
        }
        Ok(Cursor { tag, position: Position::new(offsets) })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// The tag of a Kafka topic's cursors: FNV-1a of its name, stable across builds and
/// machines (the standard library's hashers are not).
pub fn topic_tag(topic: &str) -> u32 {
    topic.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(input: &mut &[u8]) -> Result<u64, CursorError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first().ok_or(CursorError("truncated"))?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(CursorError("varint too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_url_safe() {
        let c = Cursor { tag: topic_tag("telemetry"), position: Position::new(vec![(2, 1 << 40), (0, 0), (1, 129)]) };
        let text = c.encode();
        assert!(text.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'), "{text}");
        assert_eq!(Cursor::decode(&text), Ok(c.clone()));
        assert_eq!(c.position.get(1), Some(129));
        assert_eq!(c.position.get(7), None);
    }

    #[test]
    fn malformed_cursors_are_refused_not_guessed() {
        let good = Cursor { tag: 7, position: Position::new(vec![(0, 5)]) }.encode();
        for bad in ["", "!!!", "AA", &good[..good.len() - 1], &format!("{good}AA")] {
            assert!(Cursor::decode(bad).is_err(), "{bad:?} accepted");
        }
        // A count that would allocate without bound.
        let mut huge = vec![VERSION, 0, 0, 0, 0];
        varint(&mut huge, u64::MAX >> 1);
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode(huge)).is_err());
    }

    #[test]
    fn positions_advance_past_records_and_never_back() {
        let mut p = Position::new(vec![(0, 10), (1, 0)]);
        p.advance(0, 10);
        p.advance(0, 4);
        p.advance(3, 7);
        assert_eq!(p.iter().collect::<Vec<_>>(), [(0, 11), (1, 0), (3, 8)]);
    }

    #[test]
    fn topic_tags_differ_between_topics() {
        assert_ne!(topic_tag("a"), topic_tag("b"));
        assert_eq!(topic_tag("telemetry"), topic_tag("telemetry"));
    }
}
