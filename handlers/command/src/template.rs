//! One argv element of the settings: literal text and `{field}` slots.
//!
//! A slot names a top-level payload field; filling it puts that field's text into the element,
//! which stays one element whatever the text holds (spaces, quotes, `;`, `$(…)`, a leading
//! `-`). Nothing here knows about shells, because there is none: the elements go to `execve`
//! as they are. The grammar and the text a field fills a slot with are
//! [`openexec_handler::slots`]'s; this module adds the limits of an argument (no NUL, at most
//! [`MAX_ARG_BYTES`]).

use openexec_handler::slots::{self, kind_of, Piece};
use serde_json::{Map, Value};

/// The longest one argv element may be (Linux's `MAX_ARG_STRLEN`, 128 KiB, less its NUL).
pub(crate) const MAX_ARG_BYTES: usize = 128 * 1024 - 1;

/// A parsed argv element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parse `{field}` slots ([`slots::parse`]); `{{` and `}}` are literal braces. The error
    /// says what is wrong (the caller names the setting).
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        if text.contains('\0') {
            return Err("contains a NUL character, which no argument can hold".into());
        }
        let mut pieces = slots::parse(text)?;
        if pieces.is_empty() {
            // An empty element is still an argument.
            pieces.push(Piece::Lit(String::new()));
        }
        Ok(Template { pieces })
    }

    /// The payload fields this element names, in order (with repeats).
    pub(crate) fn slots(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Slot(s) => Some(s.as_str()),
            Piece::Lit(_) => None,
        })
    }

    /// The text of an element without slots (after `{{`/`}}` unescaping); `None` if it has one.
    pub(crate) fn literal(&self) -> Option<String> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Slot(_) => return None,
            }
        }
        Some(out)
    }

    /// The element with every slot filled from `payload`. The payload was validated
    /// ([`field_text`] of every slot is `Ok`); a field that is not is refused all the same.
    pub(crate) fn fill(&self, payload: &Map<String, Value>) -> Result<String, FieldProblem> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Slot(field) => out.push_str(&field_text(payload, field)?),
            }
        }
        if out.len() > MAX_ARG_BYTES {
            let field = self.slots().next().unwrap_or_default().to_string();
            return Err(FieldProblem {
                field,
                rule: "maxLength",
                message: format!(
                    "the argument it fills would be {} bytes long; an argument holds at most {MAX_ARG_BYTES}",
                    out.len()
                ),
            });
        }
        Ok(out)
    }
}

/// Why a payload field cannot fill a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldProblem {
    pub(crate) field: String,
    /// The JSON Schema rule that names the problem (`required`, `type`, `maxLength`, `pattern`).
    pub(crate) rule: &'static str,
    pub(crate) message: String,
}

/// The text a payload field fills a slot with: a string as it is, a number or a boolean as its
/// canonical JSON text (RFC 8785: `1.0` fills as `1`, `1e300` as `1e+300`). Anything else —
/// missing, null, an array, an object, a string holding NUL, text longer than an argument may
/// be — is a problem naming the field.
pub(crate) fn field_text(
    payload: &Map<String, Value>,
    field: &str,
) -> Result<String, FieldProblem> {
    let problem = |rule: &'static str, message: String| FieldProblem {
        field: field.to_string(),
        rule,
        message,
    };
    let Some(value) = payload.get(field) else {
        return Err(problem(
            "required",
            format!("field '{field}' is missing; the command's arguments need it"),
        ));
    };
    // Canonical (RFC 8785) text: the argument is a function of what the receipt hashes.
    let Some(text) = slots::scalar_text(value) else {
        return Err(problem(
            "type",
            format!(
                "field '{field}' is {}; an argument is filled from a string, number or boolean",
                kind_of(value)
            ),
        ));
    };
    if text.contains('\0') {
        return Err(problem(
            "pattern",
            format!("field '{field}' holds a NUL character, which no argument can hold"),
        ));
    }
    if text.len() > MAX_ARG_BYTES {
        return Err(problem(
            "maxLength",
            format!(
                "field '{field}' is {} bytes long; an argument holds at most {MAX_ARG_BYTES}",
                text.len()
            ),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn parses_slots_and_escapes() {
        let t = Template::parse("--to={to}:{{x}}").unwrap();
        assert_eq!(t.slots().collect::<Vec<_>>(), ["to"]);
        assert_eq!(t.literal(), None);
        assert_eq!(
            t.fill(&obj(json!({"to": "a b; c"}))).unwrap(),
            "--to=a b; c:{x}"
        );
        let lit = Template::parse("{{}}").unwrap();
        assert_eq!(lit.literal().as_deref(), Some("{}"));
        assert_eq!(Template::parse("").unwrap().literal().as_deref(), Some(""));
        let two = Template::parse("{a}{b}{a}").unwrap();
        assert_eq!(two.slots().collect::<Vec<_>>(), ["a", "b", "a"]);
        assert_eq!(
            two.fill(&obj(json!({"a": 1.5, "b": false}))).unwrap(),
            "1.5false1.5"
        );
    }

    #[test]
    fn refuses_bad_templates() {
        for (t, needle) in [
            ("{abc", "not closed"),
            ("x}", "lone '}'"),
            ("{}", "names no field"),
            ("{a{b}", "holds a '{'"),
            ("a\0b", "NUL"),
        ] {
            let e = Template::parse(t).unwrap_err();
            assert!(e.contains(needle), "{t:?}: {e}");
        }
    }

    #[test]
    fn field_problems_name_the_field_and_rule() {
        let p = obj(
            json!({"arr": [1], "o": {}, "n": null, "z": "a\u{0}b", "long": "x".repeat(MAX_ARG_BYTES + 1)}),
        );
        for (f, rule) in [
            ("missing", "required"),
            ("arr", "type"),
            ("o", "type"),
            ("n", "type"),
            ("z", "pattern"),
            ("long", "maxLength"),
        ] {
            let e = field_text(&p, f).unwrap_err();
            assert_eq!(e.rule, rule, "{f}");
            assert_eq!(e.field, f);
            assert!(e.message.contains(&format!("'{f}'")), "{}", e.message);
        }
        assert_eq!(slots::pointer("a/b~c"), "/a~1b~0c");
    }
}
