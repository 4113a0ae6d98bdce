//! What a subscription selects within its topic: keys (exact ones, a pattern, or every
//! key), and conditions on each record's headers and JSON value — parsed once, at subscribe time,
//! from a query string or a `subscribe` frame, with a bound on every part.
//!
//! The hub indexes a selector by its keys (an exact key is a map lookup; a pattern is
//! evaluated once per record for every subscriber sharing it) and evaluates what the index
//! cannot decide — the [`Residual`]: headers, `where` fields, a pattern beside exact keys —
//! once per record for every subscriber sharing the same conditions.

pub mod glob;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use serde_json::Value;
use smallvec::SmallVec;

use crate::record::Stamped;

pub use glob::Glob;

/// Exact keys one selector may list.
pub const MAX_KEYS: usize = 1_000;
/// Bytes of one exact key.
pub const MAX_KEY_BYTES: usize = 1_024;
/// `header.` and `where.` conditions of one selector, each.
pub const MAX_CONDITIONS: usize = 16;
/// Bytes of a header name or value, of a JSON pointer, or of a `where` value as JSON.
pub const MAX_CONDITION_BYTES: usize = 1_024;

/// A subscription's selection, as asked. Conditions combine with AND.
///
/// Every subscription holds one for its whole life: the conditions most selectors do not
/// have are boxed, so that a plain `/{key}` subscription stays small (memory per idle
/// connection, BENCHMARKS.md).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    /// Only these keys (`keys=`, or the path of `/{key}`); one is held inline.
    pub keys: Option<Keys>,
    /// Only keys matching this (`pattern=`).
    pub pattern: Option<Glob>,
    /// Conditions on headers and on the value, when there are any.
    pub conditions: Option<Box<Conditions>>,
}

/// A selector's exact keys.
pub type Keys = SmallVec<[Bytes; 1]>;

/// The conditions of a selector beyond its keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    /// Records carrying each of these headers with this value (`header.NAME=VALUE`).
    pub headers: Vec<(String, Bytes)>,
    /// Records whose JSON value has this value at this RFC 6901 pointer (`where.POINTER=`).
    pub fields: Vec<(String, Value)>,
}

/// How the hub finds a selector's subscribers for a record.
pub enum Index<'a> {
    /// By each of these exact keys.
    Keys(&'a [Bytes]),
    /// Every keyed record, matched against the pattern once per distinct pattern.
    Pattern(&'a Glob),
    /// Every record, null keys included.
    All,
}

impl Selector {
    pub fn headers(&self) -> &[(String, Bytes)] {
        self.conditions.as_ref().map_or(&[], |c| &c.headers)
    }

    pub fn fields(&self) -> &[(String, Value)] {
        self.conditions.as_ref().map_or(&[], |c| &c.fields)
    }

    fn conditions_mut(&mut self) -> &mut Conditions {
        self.conditions.get_or_insert_with(Default::default)
    }

    /// The selector of the plain form `/{key}`.
    pub fn key(key: Bytes) -> Selector {
        Selector { keys: Some(smallvec::smallvec![key]), ..Selector::default() }
    }

    pub fn index(&self) -> Index<'_> {
        match (&self.keys, &self.pattern) {
            (Some(keys), _) => Index::Keys(keys),
            (None, Some(pattern)) => Index::Pattern(pattern),
            (None, None) => Index::All,
        }
    }

    /// What the index leaves undecided, if anything.
    pub fn residual(&self) -> Option<Residual> {
        let pattern = self.keys.as_ref().and(self.pattern.clone());
        if pattern.is_none() && self.headers().is_empty() && self.fields().is_empty() {
            return None;
        }
        Some(Residual { pattern, headers: self.headers().to_vec(), fields: self.fields().to_vec() })
    }

    /// Whether a record of this selector's topic is selected: key, headers and value.
    pub fn matches(&self, stamped: &Stamped) -> bool {
        self.matches_key(stamped.record.key.as_deref()) && self.residual_matches(stamped)
    }

    fn residual_matches(&self, stamped: &Stamped) -> bool {
        headers_match(self.headers(), stamped) && fields_match(self.fields(), stamped)
    }

    /// Whether a record with this key can be selected (its headers and value unseen): a
    /// null key only by a selector of every key.
    pub fn matches_key(&self, key: Option<&[u8]>) -> bool {
        match key {
            None => self.keys.is_none() && self.pattern.is_none(),
            Some(key) => {
                self.keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k == key))
                    && self.pattern.as_ref().is_none_or(|p| p.matches(key))
            }
        }
    }

    /// Whether it selects one key's records only (exact keys; `?last=` then reads more of
    /// each partition to find them).
    pub fn is_sparse(&self) -> bool {
        self.keys.is_some() || self.pattern.is_some() || self.conditions.is_some()
    }

    /// The selector as JSON, for the registry: `{"topic","keys","pattern","headers","where"}`,
    /// the absent parts left out.
    pub fn to_json(&self, topic: &str) -> Value {
        let mut v = serde_json::json!({ "topic": topic });
        if let Some(keys) = &self.keys {
            v["keys"] = keys.iter().map(|k| String::from_utf8_lossy(k)).collect::<Vec<_>>().into();
        }
        if let Some(p) = &self.pattern {
            v["pattern"] = p.as_str().into();
        }
        if !self.headers().is_empty() {
            v["headers"] = self
                .headers()
                .iter()
                .map(|(n, val)| (n.clone(), Value::from(String::from_utf8_lossy(val))))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        if !self.fields().is_empty() {
            v["where"] = self.fields().iter().cloned().collect::<serde_json::Map<_, _>>().into();
        }
        v
    }

    /// Checks every bound; the error is the message a client is answered with (400).
    pub fn check(&self) -> Result<(), String> {
        if let Some(keys) = &self.keys {
            if keys.is_empty() {
                return Err("keys must name at least one key".into());
            }
            if keys.len() > MAX_KEYS {
                return Err(format!("keys may name at most {MAX_KEYS} keys"));
            }
            if keys.iter().any(|k| k.len() > MAX_KEY_BYTES) {
                return Err(format!("a key may be at most {MAX_KEY_BYTES} bytes"));
            }
        }
        if self.headers().len() > MAX_CONDITIONS || self.fields().len() > MAX_CONDITIONS {
            return Err(format!("at most {MAX_CONDITIONS} header and {MAX_CONDITIONS} where conditions"));
        }
        for (name, value) in self.headers() {
            if name.is_empty() || name.len() > MAX_CONDITION_BYTES || value.len() > MAX_CONDITION_BYTES {
                return Err(format!(
                    "a header name must be 1 to {MAX_CONDITION_BYTES} bytes, its value at most as long"
                ));
            }
        }
        for (pointer, value) in self.fields() {
            if pointer.len() > MAX_CONDITION_BYTES || !(pointer.is_empty() || pointer.starts_with('/')) {
                return Err(format!(
                    "a where pointer is an RFC 6901 JSON pointer (\"/field/sub\") of at most {MAX_CONDITION_BYTES} bytes"
                ));
            }
            if value.to_string().len() > MAX_CONDITION_BYTES {
                return Err(format!("a where value may be at most {MAX_CONDITION_BYTES} bytes of JSON"));
            }
        }
        Ok(())
    }

    /// Adds one query parameter to the selector, if it is one of its parameters: `keys` (raw, still percent-encoded: `,` separates keys, `%2C` is a comma in one),
    /// `pattern`, `header.NAME`, `where.POINTER` (a pointer without its leading `/` gets
    /// one: `where.temp` is `where./temp`). Whether it was one.
    pub fn take_query_param(&mut self, name: &str, value: &str, raw_value: &str) -> Result<bool, String> {
        if name == "keys" {
            let keys: Vec<Bytes> = raw_value
                .split(',')
                .map(|k| Bytes::from(percent_encoding::percent_decode_str(k).collect::<Vec<u8>>()))
                .filter(|k| !k.is_empty())
                .collect();
            self.keys.get_or_insert_with(Keys::new).extend(keys);
        } else if name == "pattern" {
            self.pattern = Some(Glob::new(value)?);
        } else if let Some(header) = name.strip_prefix("header.") {
            self.conditions_mut().headers.push((header.to_owned(), Bytes::copy_from_slice(value.as_bytes())));
        } else if let Some(pointer) = name.strip_prefix("where.") {
            let pointer =
                if pointer.starts_with('/') || pointer.is_empty() { pointer.to_owned() } else { format!("/{pointer}") };
            // Compared as JSON when it parses as JSON (`20`, `true`, `"x"`), else as a string.
            let wanted = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
            self.conditions_mut().fields.push((pointer, wanted));
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// The selector of a `subscribe` frame's fields.
    pub fn from_frame(
        keys: Option<Vec<String>>,
        pattern: Option<String>,
        headers: Option<BTreeMap<String, String>>,
        fields: Option<BTreeMap<String, Value>>,
    ) -> Result<Selector, String> {
        let conditions = Conditions {
            headers: headers.unwrap_or_default().into_iter().map(|(n, v)| (n, Bytes::from(v))).collect(),
            fields: fields.unwrap_or_default().into_iter().collect(),
        };
        let boxed = (!conditions.headers.is_empty() || !conditions.fields.is_empty()).then(|| Box::new(conditions));
        let selector = Selector {
            keys: keys.map(|ks| ks.into_iter().map(Bytes::from).collect()),
            pattern: pattern.map(|p| Glob::new(&p)).transpose()?,
            conditions: boxed,
        };
        selector.check()?;
        Ok(selector)
    }
}

/// The conditions of a selector its index does not decide. Equal residuals are one (the
/// hub shares them between subscribers, and evaluates each once per record).
#[derive(Debug, Clone, PartialEq)]
pub struct Residual {
    pattern: Option<Glob>,
    headers: Vec<(String, Bytes)>,
    fields: Vec<(String, Value)>,
}

impl Residual {
    /// A text that is equal for equal residuals (the hub's key for sharing them).
    pub fn identity(&self) -> String {
        let mut out = String::new();
        if let Some(p) = &self.pattern {
            let _ = write!(out, "p{}:{p}", p.as_str().len());
        }
        let mut headers: Vec<_> = self.headers.iter().collect();
        headers.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        for (n, v) in headers {
            let _ = write!(out, "h{}:{n}{}:", n.len(), v.len());
            out.push_str(&String::from_utf8_lossy(v));
        }
        let mut fields: Vec<_> = self.fields.iter().map(|(p, v)| (p, v.to_string())).collect();
        fields.sort();
        for (p, v) in fields {
            let _ = write!(out, "w{}:{p}{}:{v}", p.len(), v.len());
        }
        out
    }

    pub fn matches(&self, stamped: &Stamped) -> bool {
        let key_ok = match (&self.pattern, stamped.record.key.as_deref()) {
            (None, _) => true,
            (Some(p), Some(key)) => p.matches(key),
            (Some(_), None) => false,
        };
        key_ok && headers_match(&self.headers, stamped) && fields_match(&self.fields, stamped)
    }
}

fn headers_match(wanted: &[(String, Bytes)], stamped: &Stamped) -> bool {
    wanted
        .iter()
        .all(|(name, value)| stamped.record.headers.iter().any(|(n, v)| n == name && v.as_deref() == Some(&value[..])))
}

fn fields_match(wanted: &[(String, Value)], stamped: &Stamped) -> bool {
    if wanted.is_empty() {
        return true;
    }
    // Parsed once per record, whatever the number of subscribers asking.
    let Some(json) = stamped.json() else { return false };
    wanted.iter().all(|(pointer, value)| json.pointer(pointer).is_some_and(|found| json_equal(found, value)))
}

/// JSON equality, with numbers compared by value (`20` equals `20.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use std::sync::Arc;

    fn record(key: Option<&str>, value: &str, headers: &[(&str, &str)]) -> Stamped {
        Stamped::new(Record {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: headers.iter().map(|(n, v)| (n.to_string(), Some(Bytes::copy_from_slice(v.as_bytes())))).collect(),
            decoded: None,
        })
    }

    fn query(q: &str) -> Result<Selector, String> {
        let mut s = Selector::default();
        for pair in q.split('&') {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |t: &str| percent_encoding::percent_decode_str(t).decode_utf8_lossy().into_owned();
            s.take_query_param(&decode(raw_name), &decode(raw_value), raw_value)?;
        }
        s.check()?;
        Ok(s)
    }

    #[test]
    fn query_parameters_build_a_selector() {
        let s = query("keys=a,b%2Cc,&pattern=sensor-*&header.region=eu&where.temp=20&where./site/name=north").unwrap();
        assert_eq!(s.keys.as_deref(), Some(&[Bytes::from_static(b"a"), Bytes::from_static(b"b,c")][..]));
        assert_eq!(s.pattern, Some(Glob::new("sensor-*").unwrap()));
        assert_eq!(s.headers(), [("region".to_owned(), Bytes::from_static(b"eu"))]);
        assert_eq!(
            s.fields(),
            [("/temp".to_owned(), serde_json::json!(20)), ("/site/name".to_owned(), serde_json::json!("north"))]
        );
        assert!(query("keys=").is_err());
        assert!(query(&format!("pattern={}", "x".repeat(300))).is_err());
        assert!(query(&format!("keys={}", vec!["k"; MAX_KEYS + 1].join(","))).is_err());
    }

    #[test]
    fn conditions_combine_with_and() {
        let s = query("pattern=sensor-*&header.region=eu&where.temp=20").unwrap();
        assert!(s.matches(&record(Some("sensor-1"), r#"{"temp":20.0}"#, &[("region", "eu")])));
        assert!(!s.matches(&record(Some("sensor-1"), r#"{"temp":21}"#, &[("region", "eu")])));
        assert!(!s.matches(&record(Some("sensor-1"), r#"{"temp":20}"#, &[("region", "us")])));
        assert!(!s.matches(&record(Some("pump-1"), r#"{"temp":20}"#, &[("region", "eu")])));
        assert!(!s.matches(&record(None, r#"{"temp":20}"#, &[("region", "eu")])));
        assert!(!s.matches(&record(Some("sensor-1"), "not json", &[("region", "eu")])));
        // A string value compares as a string; JSON text in the query as JSON.
        let s = query("where.status=ok&where.on=true").unwrap();
        assert!(s.matches(&record(Some("k"), r#"{"status":"ok","on":true}"#, &[])));
        assert!(!s.matches(&record(Some("k"), r#"{"status":"ok","on":"true"}"#, &[])));
    }

    #[test]
    fn the_index_takes_the_keys_and_leaves_the_rest_to_the_residual() {
        let s = query("keys=a,b&pattern=a*").unwrap();
        assert!(matches!(s.index(), Index::Keys(k) if k.len() == 2));
        let residual = s.residual().unwrap();
        assert!(residual.matches(&record(Some("a"), "1", &[])));
        assert!(!residual.matches(&record(Some("b"), "1", &[])));
        assert!(query("pattern=a*").unwrap().residual().is_none());
        assert!(query("keys=a").unwrap().residual().is_none());
        // Equal conditions in another order are one residual.
        let x = query("header.a=1&header.b=2&where.t=1").unwrap().residual().unwrap();
        let y = query("where.t=1&header.b=2&header.a=1").unwrap().residual().unwrap();
        assert_eq!(x.identity(), y.identity());
        let z = query("header.a=1&header.b=3&where.t=1").unwrap().residual().unwrap();
        assert_ne!(x.identity(), z.identity());
    }
}
