//! The hashes of SPEC §2 and the legacy v0 `action_hash` of SPEC §4.

use serde_json::{Map, Number, Value};

use crate::json::{jcs_sha256, sha256_hex};

/// `H(JCS({"action": A, "payload": P}))` — what a human approves.
pub fn intent_hash(action: &str, payload: &Value) -> String {
    let mut m = Map::new();
    m.insert("action".into(), Value::String(action.to_owned()));
    m.insert("payload".into(), payload.clone());
    jcs_sha256(&Value::Object(m))
}

/// `H(JCS({"action": A, "nonce": N, "payload": P, "tenant_id": T}))` — one attempt.
pub fn request_hash(action: &str, nonce: &str, payload: &Value, tenant_id: &str) -> String {
    let mut m = Map::new();
    m.insert("action".into(), Value::String(action.to_owned()));
    m.insert("nonce".into(), Value::String(nonce.to_owned()));
    m.insert("payload".into(), payload.clone());
    m.insert("tenant_id".into(), Value::String(tenant_id.to_owned()));
    jcs_sha256(&Value::Object(m))
}

/// What Python's
/// `json.dumps({"action": A, "payload": P}, sort_keys=True, separators=(",", ":"))` returns
/// (with its default `ensure_ascii=True`): keys sorted by code point at every level, everything
/// outside `0x20..=0x7e` escaped as lowercase `\uXXXX` (surrogate pairs beyond the BMP) except the
/// short escapes `\" \\ \n \r \t \b \f`, integers as written, floats as Python's `repr`.
pub fn legacy_canonical(action: &str, payload: &Value) -> String {
    let mut out = String::new();
    out.push_str("{\"action\":");
    py_string(&mut out, action);
    out.push_str(",\"payload\":");
    py_value(&mut out, payload, PySeparators::Compact);
    out.push('}');
    out
}

/// The separators of Python's `json.dumps`: between items, and between a key and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PySeparators {
    /// `separators=(",", ":")`, as [`legacy_canonical`] writes.
    Compact,
    /// Python's default, `(", ", ": ")`.
    Default,
}

impl PySeparators {
    fn strs(self) -> (&'static str, &'static str) {
        match self {
            PySeparators::Compact => (",", ":"),
            PySeparators::Default => (", ", ": "),
        }
    }
}

/// What Python's `json.dumps(v, sort_keys=True, separators=…)` returns for any value, with the
/// rules of [`legacy_canonical`] (ASCII only, keys sorted at every level, floats as `repr`).
pub fn python_dumps(v: &Value, separators: PySeparators) -> String {
    let mut out = String::new();
    py_value(&mut out, v, separators);
    out
}

/// SHA-256 hex of [`legacy_canonical`]: the v0 artifact's `action_hash`.
pub fn legacy_action_hash(action: &str, payload: &Value) -> String {
    sha256_hex(legacy_canonical(action, payload).as_bytes())
}

fn py_value(out: &mut String, v: &Value, sep: PySeparators) {
    let (item, key) = sep.strs();
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => py_number(out, n),
        Value::String(s) => py_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(item);
                }
                py_value(out, x, sep);
            }
            out.push(']');
        }
        Value::Object(m) => {
            // Rust's `str` ordering is byte-wise on UTF-8, which is code-point order: Python's.
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(item);
                }
                py_string(out, k);
                out.push_str(key);
                py_value(out, x, sep);
            }
            out.push('}');
        }
    }
}

fn py_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        out.push_str(&py_float_repr(f));
    } else {
        // Only reachable with serde_json's arbitrary_precision: keep the literal.
        out.push_str(&n.to_string());
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip (ties to even, as Python's and
/// ECMAScript's algorithms both choose); fixed notation with at least one fractional digit when
/// the decimal exponent is in `-4 <= e < 16`, otherwise scientific notation with a signed
/// exponent of at least two digits (`1e+16`, `1.5e-05`).
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let (digits, exp) = shortest_digits(f);
    let mut out = String::new();
    if f.is_sign_negative() {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
            out.push_str(&digits);
        } else {
            let point = point as usize;
            if digits.len() <= point {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    }
    out
}

/// The shortest round-trip significant digits of `|f|` (no leading or trailing zeros; `"0"` for
/// zero) and the decimal exponent of the first digit: `1234.5` → `("12345", 3)`.
fn shortest_digits(f: f64) -> (String, i32) {
    // ryu-js writes Number.prototype.toString: "1234.5", "1e+21", "1.5e-7", "0.000001", "0".
    let mut buf = ryu_js::Buffer::new();
    let js = buf.format_finite(f.abs());
    let (mantissa, e) = match js.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (js, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut point = int.len() as i32 + e; // position of the decimal point within `all`
    let all = format!("{int}{frac}");
    let trimmed = all.trim_start_matches('0');
    point -= (all.len() - trimmed.len()) as i32;
    let digits = trimmed.trim_end_matches('0');
    if digits.is_empty() {
        return ("0".into(), 0);
    }
    (digits.to_string(), point - 1)
}

fn py_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{:04x}", unit));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1.0"),
            (12.5, "12.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (1e-7, "1e-07"),
            (1e21, "1e+21"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345.6, "123456789012345.6"),
            (1234567890123456.7, "1234567890123456.8"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (-0.5, "-0.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (1e100, "1e+100"),
            (123.456, "123.456"),
            (0.001234, "0.001234"),
            (2.5e-4, "0.00025"),
            // exact tie in the 17th digit (…915.25): ties to even, as Python does
            (1764492957132915.2, "1764492957132915.2"),
            (1e22, "1e+22"),
            (1e-5, "1e-05"),
            (9999999999999998.0, "9999999999999998.0"),
            (-1.5e300, "-1.5e+300"),
            (2.2250738585072014e-308, "2.2250738585072014e-308"),
        ];
        for (f, want) in cases {
            assert_eq!(py_float_repr(*f), *want, "{f:?}");
        }
    }

    #[test]
    fn python_dumps_with_either_separators() {
        // Written by Python's json.dumps(v, sort_keys=True) and with separators=(",", ":").
        let v = serde_json::json!({"echo": {"i": 3, "b": "é"}, "a": [1, 2.5, null, true]});
        assert_eq!(
            python_dumps(&v, PySeparators::Default),
            r#"{"a": [1, 2.5, null, true], "echo": {"b": "\u00e9", "i": 3}}"#
        );
        assert_eq!(
            python_dumps(&v, PySeparators::Compact),
            r#"{"a":[1,2.5,null,true],"echo":{"b":"\u00e9","i":3}}"#
        );
    }

    #[test]
    fn python_string_escapes() {
        let mut s = String::new();
        py_string(&mut s, "a\u{7f}\u{1f}\u{8}\u{c}/é😀\u{2028}");
        assert_eq!(s, "\"a\\u007f\\u001f\\b\\f/\\u00e9\\ud83d\\ude00\\u2028\"");
    }
}
