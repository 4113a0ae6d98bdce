//! Key patterns: `*` is any run of bytes (the empty one too), `?` exactly one byte, every
//! other byte itself. There is no escape: a key holding `*` or `?` is selected by an exact
//! `keys=` entry instead.
//!
//! Written here rather than taken from a glob crate because two things need the same
//! model: matching raw key bytes (Kafka keys need not be UTF-8, while glob crates match
//! `str` paths with separator rules a key does not have), and deciding whether one pattern
//! covers another (a token's claim against a subscription), which no crate offers. Both are
//! a dynamic programme over the two strings: at most `MAX_PATTERN × key length` steps, never
//! the exponential backtracking of a regex engine.

use std::fmt;

/// The longest pattern accepted, in bytes.
pub const MAX_PATTERN: usize = 256;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Glob {
    text: Box<str>,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.text)
    }
}

impl Glob {
    pub fn new(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("pattern must not be empty".into());
        }
        if text.len() > MAX_PATTERN {
            return Err(format!("pattern must be at most {MAX_PATTERN} bytes"));
        }
        // `**` matches what `*` does: folded, so equal patterns compare equal.
        let mut folded = String::with_capacity(text.len());
        for c in text.chars() {
            if !(c == '*' && folded.ends_with('*')) {
                folded.push(c);
            }
        }
        Ok(Glob { text: folded.into() })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has no wildcard: it selects exactly one key.
    pub fn is_literal(&self) -> bool {
        !self.text.bytes().any(|b| b == b'*' || b == b'?')
    }

    /// Whether `key` matches: greedy over `*` with one resume point, which for patterns of
    /// `*` and `?` alone finds a match whenever there is one.
    pub fn matches(&self, key: &[u8]) -> bool {
        let p = self.text.as_bytes();
        let (mut pi, mut ki) = (0, 0);
        // The last `*` seen, and where in the key its run would resume.
        let mut star: Option<(usize, usize)> = None;
        while ki < key.len() {
            match p.get(pi) {
                Some(b'*') => {
                    star = Some((pi, ki));
                    pi += 1;
                }
                Some(&c) if c == b'?' || c == key[ki] => {
                    pi += 1;
                    ki += 1;
                }
                _ => match star {
                    // Let the last `*` take one more byte and try again from after it.
                    Some((sp, sk)) => {
                        star = Some((sp, sk + 1));
                        pi = sp + 1;
                        ki = sk + 1;
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }

    /// Whether every key `other` matches, this matches too: `sensor-*` covers `sensor-1*`
    /// and `sensor-?`, `*` covers everything, and a pattern covers itself. Decided on the
    /// patterns themselves — this one's `*` may stand for any run of the other's symbols,
    /// its `?` for one literal byte or `?`, its literals only for themselves — so the answer
    /// is never yes when some key of `other` escapes it.
    pub fn covers(&self, other: &Glob) -> bool {
        let c = self.text.as_bytes();
        let p = other.text.as_bytes();
        // row[j]: c[..i] matches p[..j] symbolically.
        let mut row = vec![false; p.len() + 1];
        row[0] = true;
        for &cc in c {
            let mut next = vec![false; p.len() + 1];
            if cc == b'*' {
                // A star matches any run: reachable from any earlier column.
                let mut any = false;
                for j in 0..=p.len() {
                    any |= row[j];
                    next[j] = any;
                }
            } else {
                for j in 1..=p.len() {
                    let pc = p[j - 1];
                    let one = match cc {
                        b'?' => pc != b'*',
                        _ => pc == cc,
                    };
                    next[j] = row[j - 1] && one;
                }
            }
            row = next;
        }
        row[p.len()]
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> Glob {
        Glob::new(s).unwrap()
    }

    #[test]
    fn stars_take_any_run_and_question_marks_one_byte() {
        assert!(g("sensor-*").matches(b"sensor-1"));
        assert!(g("sensor-*").matches(b"sensor-"));
        assert!(!g("sensor-*").matches(b"sensor"));
        assert!(g("*-1").matches(b"sensor-1"));
        assert!(g("s*r-?").matches(b"sensor-7"));
        assert!(!g("s*r-?").matches(b"sensor-17"));
        assert!(g("a*b*c").matches(b"aXbYbZc"));
        assert!(!g("a*b*c").matches(b"aXbYbZ"));
        assert!(g("*").matches(b""));
        assert!(g("exact").matches(b"exact") && !g("exact").matches(b"exactly"));
        // Raw bytes, not only UTF-8.
        assert!(g("k?").matches(&[b'k', 0xff]));
    }

    #[test]
    fn a_hostile_pattern_stays_polynomial() {
        let pattern = format!("{}b", "*a".repeat(60));
        let key = vec![b'a'; 10_000];
        // Would take exponential time with backtracking; here a bounded number of steps.
        assert!(!g(&pattern).matches(&key));
        assert!(Glob::new(&"a".repeat(MAX_PATTERN + 1)).is_err());
        assert!(Glob::new("").is_err());
        assert_eq!(g("a**b"), g("a*b"));
    }

    #[test]
    fn coverage_is_decided_on_the_patterns() {
        assert!(g("*").covers(&g("anything-*")));
        assert!(g("sensor-*").covers(&g("sensor-1*")));
        assert!(g("sensor-*").covers(&g("sensor-?")));
        assert!(g("sensor-*").covers(&g("sensor-*")));
        assert!(g("sensor-?").covers(&g("sensor-?")));
        assert!(g("sensor-?").covers(&g("sensor-7")));
        assert!(!g("sensor-?").covers(&g("sensor-*")));
        assert!(!g("sensor-*").covers(&g("sens*")));
        assert!(!g("sensor-1").covers(&g("sensor-?")));
        assert!(!g("a*").covers(&g("*a")));
        assert!(g("*a*").covers(&g("b*a*c")));
    }
}
