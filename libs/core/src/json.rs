//! I-JSON (RFC 7493) parsing and RFC 8785 (JCS) canonicalisation.
//!
//! Canonicalisation uses the `serde_json_canonicalizer` crate (0.4): it sorts object members by
//! their UTF-16 code units, formats every number with the ECMAScript `Number.prototype.toString`
//! algorithm (through `ryu-js`), escapes strings exactly as RFC 8785 §3.2.2.2 says (short escapes,
//! other controls as lowercase `\u00xx`, `/`, U+007F and U+2028 left alone). It was checked against
//! every case of `vectors/intent_v1.json` and against the edge cases in this crate's tests (`-0`,
//! `1e21`, `1e-7`, `5e-324`, the largest double, `0.1+0.2`, `123456789012.5`, supplementary-plane
//! versus U+FFFF key order, control characters); it got all of them right, so no second
//! implementation was needed.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// Default nesting limit (SPEC §2): the body itself is depth 1.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// The largest integer every JSON party can represent exactly (2^53 − 1).
pub const MAX_SAFE_INTEGER: u64 = 9007199254740991;

/// The deepest nesting [`parse_ijson`] can honour. `serde_json` refuses input nested 128 levels
/// deep with an error of its own; a larger `max_depth` is therefore clamped to this value, so that
/// too-deep input is always reported as [`JsonError::TooDeep`] (with this limit) and never as
/// something else.
pub const MAX_SUPPORTED_DEPTH: usize = 127;

/// Why a body is not acceptable I-JSON. [`JsonError::code`] gives the SPEC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all, invalid UTF-8, a lone surrogate escape, trailing data, empty input.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// An object has the same member name twice (the name is carried).
    #[error("duplicate object key {0:?}")]
    DuplicateKey(String),
    /// A number literal that cannot be hashed the same way by every party (the literal is
    /// carried).
    #[error("{}", out_of_range_message(.0))]
    NumberOutOfRange(String),
    /// Nesting deeper than the limit.
    #[error("JSON nesting deeper than {limit}")]
    TooDeep {
        /// The limit that was exceeded.
        limit: usize,
    },
}

fn out_of_range_message(literal: &str) -> String {
    if is_integer_literal(literal) {
        format!("integer {literal} is beyond ±(2^53-1); send it as a string")
    } else {
        format!(
            "number {literal} is beyond the range of a double-precision float; send it as a string"
        )
    }
}

impl JsonError {
    /// The SPEC error code: `invalid_json`, `duplicate_key`, `number_out_of_range`, `too_deep`.
    pub fn code(&self) -> &'static str {
        match self {
            JsonError::InvalidJson(_) => "invalid_json",
            JsonError::DuplicateKey(_) => "duplicate_key",
            JsonError::NumberOutOfRange(_) => "number_out_of_range",
            JsonError::TooDeep { .. } => "too_deep",
        }
    }
}

fn is_integer_literal(lit: &str) -> bool {
    !lit.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

/// What the byte pre-scan found.
struct Scan {
    /// The first number literal that is out of range, if any.
    out_of_range: Option<String>,
}

/// One pass over the bytes, outside strings: nesting depth (fails fast) and number literals.
fn prescan(bytes: &[u8], limit: usize) -> Result<Scan, JsonError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut out_of_range = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(JsonError::TooDeep { limit });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                if out_of_range.is_none() {
                    // Only ASCII bytes were taken, so this cannot fail.
                    let lit = std::str::from_utf8(&bytes[start..i]).unwrap_or_default();
                    if literal_out_of_range(lit) {
                        out_of_range = Some(lit.to_string());
                    }
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(Scan { out_of_range })
}

/// True when `lit` is a well-formed-looking number that I-JSON cannot carry: an integer literal
/// beyond ±(2^53−1), or any literal whose magnitude overflows a double.
fn literal_out_of_range(lit: &str) -> bool {
    if is_integer_literal(lit) {
        let digits = lit.strip_prefix('-').unwrap_or(lit);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return false; // malformed; the parser will say so
        }
        let significant = digits.trim_start_matches('0');
        if significant.len() > 16 {
            return true;
        }
        significant
            .parse::<u64>()
            .map(|n| n > MAX_SAFE_INTEGER)
            .unwrap_or(false)
    } else {
        matches!(lit.parse::<f64>(), Ok(f) if f.is_infinite())
    }
}

/// Parse bytes as I-JSON (RFC 7493) into a [`serde_json::Value`].
///
/// Rejects invalid UTF-8 and lone surrogate escapes ([`JsonError::InvalidJson`]), duplicate keys in
/// any object ([`JsonError::DuplicateKey`]), number literals written without fraction or exponent
/// whose magnitude exceeds 2^53−1, and literals that overflow a double
/// ([`JsonError::NumberOutOfRange`]; `1e21`, `0.5`, `1.0e30` are fine), nesting deeper than
/// `max_depth` ([`JsonError::TooDeep`]: every object and array counts, the top-level value is
/// depth 1), and trailing data or other malformed JSON ([`JsonError::InvalidJson`]).
///
/// Depth is checked first, before parsing, so arbitrarily deep input costs one linear scan and no
/// recursion. `max_depth` above [`MAX_SUPPORTED_DEPTH`] is clamped to it. Never panics.
pub fn parse_ijson(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    let limit = max_depth.min(MAX_SUPPORTED_DEPTH);
    let scan = prescan(bytes, limit)?;
    let failure: RefCell<Option<JsonError>> = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = ValueSeed { failure: &failure }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => match scan.out_of_range {
            Some(lit) => Err(JsonError::NumberOutOfRange(lit)),
            None => Ok(v),
        },
        Err(e) => {
            if let Some(err) = failure.into_inner() {
                return Err(err);
            }
            if let Some(lit) = scan.out_of_range {
                if e.to_string().starts_with("number out of range") {
                    return Err(JsonError::NumberOutOfRange(lit));
                }
            }
            Err(JsonError::InvalidJson(e.to_string()))
        }
    }
}

/// Builds a [`Value`] like `serde_json` does, but refuses duplicate object keys. The exact error
/// kind travels out through `failure`, since serde errors only carry a message.
#[derive(Clone, Copy)]
struct ValueSeed<'f> {
    failure: &'f RefCell<Option<JsonError>>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let err = JsonError::DuplicateKey(key);
                let msg = err.to_string();
                *self.failure.borrow_mut() = Some(err);
                return Err(de::Error::custom(msg));
            }
            let v = map.next_value_seed(self)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// RFC 8785 (JCS) bytes of a value: members sorted by UTF-16 code units, ECMAScript number
/// formatting, minimal string escaping, no whitespace.
pub fn canonicalize(v: &Value) -> Vec<u8> {
    // A `Value` holds only finite numbers and string keys, the only things the canonicaliser can
    // refuse, so this cannot fail; fall back to an empty output rather than panic.
    serde_json_canonicalizer::to_vec(v).unwrap_or_default()
}

/// SHA-256 of `bytes` as 64 lowercase hex characters.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `H(JCS(v))`: SHA-256 hex of the canonical form.
pub fn jcs_sha256(v: &Value) -> String {
    sha256_hex(&canonicalize(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_ranges() {
        assert!(!literal_out_of_range("9007199254740991"));
        assert!(!literal_out_of_range("-9007199254740991"));
        assert!(literal_out_of_range("9007199254740992"));
        assert!(literal_out_of_range("-9007199254740992"));
        assert!(literal_out_of_range("12345678901234567890"));
        assert!(!literal_out_of_range("1e21"));
        assert!(!literal_out_of_range("1.0e30"));
        assert!(literal_out_of_range("1e400"));
        assert!(!literal_out_of_range("-"));
        assert!(!literal_out_of_range("1-2"));
    }

    #[test]
    fn messages() {
        assert_eq!(
            JsonError::DuplicateKey("a".into()).to_string(),
            "duplicate object key \"a\""
        );
        assert_eq!(
            JsonError::NumberOutOfRange("12345678901234567890".into()).to_string(),
            "integer 12345678901234567890 is beyond ±(2^53-1); send it as a string"
        );
        assert_eq!(
            JsonError::TooDeep { limit: 64 }.to_string(),
            "JSON nesting deeper than 64"
        );
    }
}
