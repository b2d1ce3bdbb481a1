//! `{field}` slots: the one template grammar every handler kind uses.
//!
//! A kind's configuration may hold text with slots — the `http` kind's URL and `body_template`
//! strings, the `command` kind's argv elements. A slot `{name}` names a top-level payload field;
//! `{{` and `}}` are a literal `{` and `}`. [`parse`] splits the text into [`Piece`]s, and the
//! helpers say what text a field fills a slot with ([`scalar_text`]), what a value is in a
//! message ([`kind_of`]) and where a field is in a [`Violation`](crate::Violation)
//! ([`pointer`]). Where a slot may stand, what its text becomes (percent-encoded, one argv
//! element…) and any stricter rule on names are the kind's.
//!
//! Nothing here does I/O: everything is a function of the configured text and the payload.

use serde_json::Value;

/// A piece of a text with slots: literal text (braces unescaped), or a slot's field name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Lit(String),
    Slot(String),
}

/// Split `text` into literal text and `{field}` slots.
///
/// `{{` and `}}` stand for a literal brace. `{name}` is a slot: `name` is any non-empty text
/// holding no brace. An unclosed `{`, an empty `{}`, a `{` inside a slot and a lone `}` are
/// errors; the message gives the brace's position (in characters, from 1) and how to write a
/// literal brace. Adjacent literal text is one [`Piece::Lit`]; empty text gives no pieces.
pub fn parse(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = text.chars().zip(1usize..).peekable();
    while let Some((c, at)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(n, _)| n) == Some('{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek().map(|&(n, _)| n) == Some('}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for (n, _) in chars.by_ref() {
                    match n {
                        '}' => {
                            closed = true;
                            break;
                        }
                        '{' => {
                            return Err(format!(
                                "the slot opened at character {at} holds a '{{' (a slot is {{field}}; write '{{{{' for a literal brace)"
                            ))
                        }
                        other => name.push(other),
                    }
                }
                if !closed {
                    return Err(format!(
                        "a '{{' at character {at} opens a slot that is not closed with '}}' (a slot is {{field}}; write '{{{{' for a literal brace)"
                    ));
                }
                if name.is_empty() {
                    return Err(format!(
                        "the slot '{{}}' at character {at} names no field (a slot is {{field}}; write '{{{{}}}}' for literal braces)"
                    ));
                }
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Slot(name));
            }
            '}' => {
                return Err(format!(
                "a lone '}}' at character {at} closes no slot (write '}}}}' for a literal brace)"
            ))
            }
            other => lit.push(other),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(pieces)
}

/// The text a payload value fills a slot with: a string as it is; a number or a boolean as its
/// canonical JSON text (RFC 8785, as the receipt hashes it: `1.0` fills as `1`, `1e300` as
/// `1e+300`); `None` for null, an array or an object.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => {
            Some(String::from_utf8_lossy(&openexec_core::json::canonicalize(v)).into_owned())
        }
        _ => None,
    }
}

/// What a value is, for messages: `null`, `a boolean`, `a number`, `a string`, `an array` or
/// `an object`.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The JSON Pointer (RFC 6901) of a top-level field: `/` and the name, `~` written `~0` and
/// `/` written `~1`.
pub fn pointer(field: &str) -> String {
    format!("/{}", field.replace('~', "~0").replace('/', "~1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lit(s: &str) -> Piece {
        Piece::Lit(s.into())
    }

    fn slot(s: &str) -> Piece {
        Piece::Slot(s.into())
    }

    #[test]
    fn parses_literals_escapes_and_slots() {
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(parse("plain").unwrap(), [lit("plain")]);
        assert_eq!(parse("{{}}").unwrap(), [lit("{}")]);
        assert_eq!(parse("{{x}}").unwrap(), [lit("{x}")]);
        assert_eq!(
            parse("/a/{id}/b{{c}}").unwrap(),
            [lit("/a/"), slot("id"), lit("/b{c}")]
        );
        assert_eq!(
            parse("{a}{b}{a}").unwrap(),
            [slot("a"), slot("b"), slot("a")]
        );
        // a name is any non-empty text without braces
        assert_eq!(
            parse("x{a.b c/é~}y").unwrap(),
            [lit("x"), slot("a.b c/é~"), lit("y")]
        );
        // an escaped brace right before or after a slot
        assert_eq!(parse("{{{a}}}").unwrap(), [lit("{"), slot("a"), lit("}")]);
    }

    #[test]
    fn errors_say_where_and_how_to_write_a_brace() {
        for (text, needles) in [
            ("ab{cd", &["character 3", "not closed", "'{{'"][..]),
            ("{", &["character 1", "not closed"][..]),
            (
                "é{}",
                &["character 2", "slot '{}'", "names no field", "'{{}}'"][..],
            ),
            ("{a{b}", &["character 1", "holds a '{'", "'{{'"][..]),
            ("x{a}{b{c}}", &["character 5", "holds a '{'"][..]),
            (
                "a}b",
                &["character 2", "lone '}'", "closes no slot", "'}}'"][..],
            ),
            ("{a}}", &["character 4", "lone '}'"][..]),
            ("}}}", &["character 3", "lone '}'"][..]),
        ] {
            let e = parse(text).unwrap_err();
            for n in needles {
                assert!(e.contains(n), "{text:?}: {e:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn scalars_fill_as_canonical_text() {
        assert_eq!(scalar_text(&json!("a {b} c")).as_deref(), Some("a {b} c"));
        assert_eq!(scalar_text(&json!("")).as_deref(), Some(""));
        assert_eq!(scalar_text(&json!(true)).as_deref(), Some("true"));
        assert_eq!(scalar_text(&json!(false)).as_deref(), Some("false"));
        assert_eq!(scalar_text(&json!(12)).as_deref(), Some("12"));
        assert_eq!(scalar_text(&json!(-3)).as_deref(), Some("-3"));
        assert_eq!(scalar_text(&json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(scalar_text(&json!(1.0)).as_deref(), Some("1"));
        assert_eq!(scalar_text(&json!(1e300)).as_deref(), Some("1e+300"));
        assert_eq!(scalar_text(&json!(0.000001)).as_deref(), Some("0.000001"));
        assert_eq!(scalar_text(&json!(1e-7)).as_deref(), Some("1e-7"));
        for v in [json!(null), json!([1]), json!({"a": 1})] {
            assert_eq!(scalar_text(&v), None, "{v}");
        }
    }

    #[test]
    fn kinds_and_pointers() {
        assert_eq!(kind_of(&json!(null)), "null");
        assert_eq!(kind_of(&json!(1)), "a number");
        assert_eq!(kind_of(&json!({})), "an object");
        assert_eq!(pointer("amount"), "/amount");
        assert_eq!(pointer(""), "/");
        assert_eq!(pointer("a/b~c"), "/a~1b~0c");
        assert_eq!(pointer("~1"), "/~01");
    }
}
