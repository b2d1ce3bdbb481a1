//! Payload normalisation (SPEC §2).

use serde_json::{Map, Value};

use crate::json::parse_ijson;

/// SPEC §2: a missing or null payload is `{}`; a JSON string whose first non-whitespace character
/// is `{` is parsed as I-JSON (with `max_depth`) and must give an object — `Ok(object)`, or
/// `Err(message)` when it does not parse (the caller keeps the original string for hashing the
/// rejected attempt); any other value, including any other string, is returned unchanged.
pub fn normalize(payload: Option<&Value>, max_depth: usize) -> Result<Value, String> {
    match payload {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(Value::String(s)) if s.trim_start().starts_with('{') => {
            match parse_ijson(s.as_bytes(), max_depth) {
                Ok(v @ Value::Object(_)) => Ok(v),
                Ok(_) => Err("payload string starts with '{' but is not a JSON object".into()),
                Err(e) => Err(format!("payload string is not valid JSON: {e}")),
            }
        }
        Some(other) => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules() {
        assert_eq!(normalize(None, 64).unwrap(), json!({}));
        assert_eq!(normalize(Some(&Value::Null), 64).unwrap(), json!({}));
        assert_eq!(
            normalize(Some(&json!("  {\"a\": 1}")), 64).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            normalize(Some(&json!("hello")), 64).unwrap(),
            json!("hello")
        );
        assert_eq!(normalize(Some(&json!("[1]")), 64).unwrap(), json!("[1]"));
        assert_eq!(normalize(Some(&json!([1, 2])), 64).unwrap(), json!([1, 2]));
        assert_eq!(normalize(Some(&json!(5)), 64).unwrap(), json!(5));
        let e = normalize(Some(&json!("{\"a\":1,\"a\":2}")), 64).unwrap_err();
        assert!(e.contains("duplicate object key \"a\""), "{e}");
        assert!(normalize(Some(&json!("{oops")), 64).is_err());
        assert!(normalize(Some(&json!("{} x")), 64).is_err());
        // depth counts from the payload string's own top level
        let deep = format!("{}{}", "{\"a\":".repeat(3), "1}}}");
        assert!(normalize(Some(&json!(deep)), 3).is_ok());
        assert!(normalize(Some(&json!(deep)), 2).is_err());
    }
}
