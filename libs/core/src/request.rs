//! The `/execute` request body (SPEC §5) typed, with the identifier limits of SPEC §2.
//!
//! Identifiers end up in signed receipts that every witness mirrors forever, so they are bounded
//! in length and character set before anything is hashed: nobody can write large or misleading
//! text (control characters, Unicode look-alikes of an action name) into a signed log. A field
//! that breaks a rule is an `invalid_request` naming the field; no receipt is written for it.

use serde_json::{Map, Value};

/// The longest `action`, in characters.
pub const MAX_ACTION_CHARS: usize = 128;
/// The longest `tenant_id`, in characters.
pub const MAX_TENANT_CHARS: usize = 128;
/// The longest `nonce`, in characters.
pub const MAX_NONCE_CHARS: usize = 256;

/// The body of `POST /execute`, its fields typed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecRequest {
    /// The action to run.
    pub action: String,
    /// The payload as sent (`None` when absent); normalised later (SPEC §2).
    pub payload: Option<Value>,
    /// The idempotency key of the attempt, unique per tenant.
    pub nonce: String,
    /// The tenant the request names, if any.
    pub tenant_id: Option<String>,
    /// `approval_artifact` (or its alias `approval`) when present and not null.
    pub artifact: Option<Value>,
}

/// Why a body is not a well-formed `/execute` request; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

fn action_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-')
}

fn tenant_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// Check `action` against SPEC §2: 1–128 characters of `A–Z a–z 0–9 _ . : / -`.
pub fn check_action(s: &str) -> Result<(), RequestError> {
    check_ident(
        "action",
        s,
        MAX_ACTION_CHARS,
        action_char,
        "A-Z a-z 0-9 _ . : / -",
    )
}

/// Check `tenant_id` against SPEC §2: 1–128 characters of `A–Z a–z 0–9 _ . : -`.
pub fn check_tenant(s: &str) -> Result<(), RequestError> {
    check_ident(
        "tenant_id",
        s,
        MAX_TENANT_CHARS,
        tenant_char,
        "A-Z a-z 0-9 _ . : -",
    )
}

/// Check `nonce` against SPEC §2: 1–256 characters, none a control character (Unicode Cc).
pub fn check_nonce(s: &str) -> Result<(), RequestError> {
    let n = s.chars().count();
    if n == 0 {
        return Err(RequestError("field 'nonce' must not be empty".into()));
    }
    if n > MAX_NONCE_CHARS {
        return Err(RequestError(format!(
            "field 'nonce' is {n} characters long; at most {MAX_NONCE_CHARS} are allowed"
        )));
    }
    if let Some((i, c)) = s.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(RequestError(format!(
            "field 'nonce' holds a control character (U+{:04X}) at character {i}; control characters are not allowed",
            c as u32
        )));
    }
    Ok(())
}

fn check_ident(
    field: &str,
    s: &str,
    max: usize,
    ok: fn(char) -> bool,
    allowed: &str,
) -> Result<(), RequestError> {
    let n = s.chars().count();
    if n == 0 {
        return Err(RequestError(format!("field '{field}' must not be empty")));
    }
    if n > max {
        return Err(RequestError(format!(
            "field '{field}' is {n} characters long; at most {max} are allowed"
        )));
    }
    if let Some((i, c)) = s.chars().enumerate().find(|(_, c)| !ok(*c)) {
        return Err(RequestError(format!(
            "field '{field}' holds {} at character {i}; only {allowed} are allowed",
            describe(c)
        )));
    }
    Ok(())
}

/// A character as a message can show it without writing it raw (it may be a control character).
fn describe(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("'{c}' (U+{:04X})", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
}

fn string_field(
    obj: &Map<String, Value>,
    name: &str,
    required: bool,
) -> Result<Option<String>, RequestError> {
    match obj.get(name) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(RequestError(format!("field '{name}' is required"))),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RequestError(format!("field '{name}' must be a string"))),
    }
}

impl ExecRequest {
    /// Type an `/execute` body: `action` and `nonce` required strings, `tenant_id` optional,
    /// each within its SPEC §2 limits; `payload` any value; `approval_artifact` (alias
    /// `approval`) any value, null counting as absent. Other fields are ignored, as the original
    /// service ignored them.
    pub fn from_value(v: Value) -> Result<ExecRequest, RequestError> {
        let Value::Object(mut obj) = v else {
            return Err(RequestError(
                "the request body must be a JSON object".into(),
            ));
        };
        let action = string_field(&obj, "action", true)?.unwrap_or_default();
        check_action(&action)?;
        let nonce = string_field(&obj, "nonce", true)?.unwrap_or_default();
        check_nonce(&nonce)?;
        let tenant_id = string_field(&obj, "tenant_id", false)?;
        if let Some(t) = &tenant_id {
            check_tenant(t)?;
        }
        let artifact = match obj.remove("approval_artifact") {
            Some(Value::Null) | None => obj.remove("approval").filter(|a| !a.is_null()),
            Some(a) => Some(a),
        };
        Ok(ExecRequest {
            action,
            payload: obj.remove("payload"),
            nonce,
            tenant_id,
            artifact,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> Result<ExecRequest, String> {
        ExecRequest::from_value(v).map_err(|e| e.0)
    }

    #[test]
    fn typed_fields() {
        let r = req(
            json!({"action": "echo", "nonce": "n-1", "payload": {"a": 1},
                           "tenant_id": "acme", "approval": {"v": 1}}),
        )
        .unwrap();
        assert_eq!(r.action, "echo");
        assert_eq!(r.nonce, "n-1");
        assert_eq!(r.payload, Some(json!({"a": 1})));
        assert_eq!(r.tenant_id.as_deref(), Some("acme"));
        assert_eq!(r.artifact, Some(json!({"v": 1})));
        // approval_artifact wins over the alias; null counts as absent
        let r = req(
            json!({"action": "echo", "nonce": "n", "approval_artifact": {"x": 1},
                           "approval": {"y": 2}}),
        )
        .unwrap();
        assert_eq!(r.artifact, Some(json!({"x": 1})));
        let r = req(
            json!({"action": "echo", "nonce": "n", "approval_artifact": null,
                           "approval": {"y": 2}}),
        )
        .unwrap();
        assert_eq!(r.artifact, Some(json!({"y": 2})));
        let r = req(json!({"action": "echo", "nonce": "n", "tenant_id": null})).unwrap();
        assert_eq!(r.tenant_id, None);
        assert_eq!(r.payload, None);
    }

    #[test]
    fn identifier_limits_name_the_field() {
        let ok_action = "a".repeat(128);
        let ok_nonce = "é".repeat(256); // characters, not bytes
        assert!(req(json!({"action": ok_action, "nonce": ok_nonce})).is_ok());
        assert!(req(json!({"action": "ns.sub:verb/x-y_z", "nonce": "a b\u{00e9}"})).is_ok());
        for (body, field) in [
            (json!({"action": "a".repeat(129), "nonce": "n"}), "action"),
            (json!({"action": "", "nonce": "n"}), "action"),
            (json!({"action": "ech\u{043e}", "nonce": "n"}), "action"), // Cyrillic o
            (json!({"action": "echo\n", "nonce": "n"}), "action"),
            (json!({"action": "echo x", "nonce": "n"}), "action"),
            (json!({"action": 5, "nonce": "n"}), "action"),
            (json!({"nonce": "n"}), "action"),
            (json!({"action": "echo", "nonce": "é".repeat(257)}), "nonce"),
            (json!({"action": "echo", "nonce": ""}), "nonce"),
            (json!({"action": "echo", "nonce": "a\u{0000}b"}), "nonce"),
            (json!({"action": "echo", "nonce": "a\u{009b}b"}), "nonce"),
            (json!({"action": "echo", "nonce": "a\rb"}), "nonce"),
            (json!({"action": "echo"}), "nonce"),
            (
                json!({"action": "echo", "nonce": "n", "tenant_id": "a/b"}),
                "tenant_id",
            ),
            (
                json!({"action": "echo", "nonce": "n", "tenant_id": ""}),
                "tenant_id",
            ),
            (
                json!({"action": "echo", "nonce": "n", "tenant_id": "t".repeat(129)}),
                "tenant_id",
            ),
            (
                json!({"action": "echo", "nonce": "n", "tenant_id": 7}),
                "tenant_id",
            ),
        ] {
            let e = req(body.clone()).unwrap_err();
            assert!(e.contains(&format!("'{field}'")), "{body}: {e}");
        }
        assert!(req(json!([1])).unwrap_err().contains("JSON object"));
    }

    #[test]
    fn messages_never_carry_raw_control_characters() {
        let e = req(json!({"action": "x\u{001b}[31m", "nonce": "n"})).unwrap_err();
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert!(e.contains("U+001B"), "{e}");
    }
}
