//! `{field}` slots: the URL template (slots in the path and query only, values percent-encoded)
//! and the body template (a JSON value whose strings may name payload fields).
//!
//! The grammar, and the text a field fills a slot with, come from [`openexec_handler::slots`];
//! this module adds where a slot may stand, the stricter rule on names and percent-encoding. It
//! does no I/O; everything in it is a function of the configuration and the payload.

use std::collections::BTreeMap;

use openexec_handler::slots::{self, kind_of, pointer, scalar_text, Piece};
use openexec_handler::Violation;
use reqwest::Url;
use serde_json::{Map, Value};

/// [`slots::parse`] with this kind's stricter rule on names: a slot's field name is one or more
/// ASCII letters, digits, `_` or `-` (so `{a.b}` or `{é}` refuses start-up).
pub(crate) fn parse_slots(s: &str) -> Result<Vec<Piece>, String> {
    let pieces = slots::parse(s)?;
    // The character each piece starts at: a literal brace was written twice.
    let mut at = 1;
    for piece in &pieces {
        match piece {
            Piece::Lit(l) => at += l.chars().count() + l.matches(['{', '}']).count(),
            Piece::Slot(name) => {
                if !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(format!(
                        "slot '{{{name}}}' at character {at}: a slot names a top-level payload field (ASCII letters, digits, '_' or '-')"
                    ));
                }
                at += name.chars().count() + 2;
            }
        }
    }
    Ok(pieces)
}

/// Append `value` percent-encoded: every byte but ASCII letters, digits, `-`, `_` and `~` becomes
/// `%XX`, so a value can never add a path segment (`/`), a query parameter (`&`, `=`), a query
/// or fragment (`?`, `#`), an escape (`%`) or a dot-segment (`.`).
pub(crate) fn encode_into(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// What a slot needs of its payload field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Need {
    /// Any JSON value (a body-template string that is exactly `"{field}"`).
    Any,
    /// A string, number or boolean (filled as text: URL slots, other template strings).
    Scalar,
}

/// Check that every field in `uses` is present in `payload` and of the kind its slots need: one
/// [`Violation`] per failing field (or one for the whole payload when it is not an object).
pub(crate) fn check_fields(payload: &Value, uses: &BTreeMap<String, Need>) -> Vec<Violation> {
    if uses.is_empty() {
        return Vec::new();
    }
    let Some(obj) = payload.as_object() else {
        return vec![Violation {
            path: String::new(),
            rule: "type".into(),
            message: format!(
                "the payload must be an object with the fields this action's url or body_template names ({}); got {}",
                uses.keys().map(String::as_str).collect::<Vec<_>>().join(", "),
                kind_of(payload)
            ),
        }];
    };
    let mut out = Vec::new();
    for (field, need) in uses {
        match (obj.get(field), need) {
            (None, _) => out.push(Violation {
                path: pointer(field),
                rule: "required".into(),
                message: format!("payload field '{field}' is missing; this action's request is built with it"),
            }),
            (Some(v), Need::Scalar) if scalar_text(v).is_none() => out.push(Violation {
                path: pointer(field),
                rule: "type".into(),
                message: format!(
                    "payload field '{field}' fills a slot of the url or of a body_template text, so it must be a string, number or boolean; got {}",
                    kind_of(v)
                ),
            }),
            _ => {}
        }
    }
    out
}

/// The configured URL, with slots in its path and query only.
#[derive(Debug, Clone)]
pub(crate) struct UrlTemplate {
    /// `scheme://host[:port]` as the URL parser writes it (a default port left out).
    prefix: String,
    scheme: String,
    host: String,
    port: u16,
    /// The path (empty, or starting with `/`).
    path: Vec<Piece>,
    /// The query after `?`, when there is one.
    query: Option<Vec<Piece>>,
}

/// Does this path segment, as sent, read as `.` or `..` (WHATWG URL counts `%2e` as a dot)?
fn is_dot_segment(seg: &str) -> bool {
    matches!(
        seg.to_ascii_lowercase().as_str(),
        "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
    )
}

fn substitute(pieces: &[Piece], with: &str) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Lit(s) => s.as_str(),
            Piece::Slot(_) => with,
        })
        .collect()
}

const SLOT_PLACE: &str =
    "a {field} slot is allowed only in the path and the query; the scheme, host and port are fixed by the configuration";

impl UrlTemplate {
    /// Parse and check the `url` setting. The message says what is wrong (the caller names the
    /// key).
    pub(crate) fn parse(url: &str) -> Result<UrlTemplate, String> {
        if let Some(c) = url
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || *c == '\\')
        {
            return Err(format!(
                "contains {c:?}; write the URL without whitespace, control characters or backslashes (percent-encode them)"
            ));
        }
        let bytes = url.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'%'
                && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return Err(format!(
                    "a '%' at character {} is not followed by two hex digits (write '%25' for a literal '%')",
                    i + 1
                ));
            }
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "'{url}' is not an absolute http:// or https:// URL"
            ));
        };
        if scheme.contains(['{', '}']) {
            return Err(SLOT_PLACE.into());
        }
        let scheme_lc = scheme.to_ascii_lowercase();
        if scheme_lc != "http" && scheme_lc != "https" {
            return Err(format!(
                "scheme '{scheme}' is not allowed; only http and https are"
            ));
        }
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(auth_end);
        if authority.contains(['{', '}']) {
            return Err(SLOT_PLACE.into());
        }
        if authority.contains('@') {
            return Err(
                "user information (user:password@) is not allowed in the URL; send credentials in a header from env or file"
                    .into(),
            );
        }
        if authority.is_empty() {
            return Err(format!("'{url}' has no host"));
        }
        if tail.contains('#') {
            return Err("a fragment ('#…') is never sent; remove it".into());
        }
        let (path_s, query_s) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (tail, None),
        };
        let path = parse_slots(path_s).map_err(|e| format!("path: {e}"))?;
        let query = query_s
            .map(|q| parse_slots(q).map_err(|e| format!("query: {e}")))
            .transpose()?;

        // Parse the URL with every slot filled by a plain letter: the fixed parts must be what
        // the parser keeps, so that filled values (which only ever add unreserved characters
        // and %XX) reach the server exactly as built.
        let path_x = substitute(&path, "x");
        let query_x = query.as_deref().map(|q| substitute(q, "x"));
        let probe = format!(
            "{scheme}://{authority}{path_x}{}",
            query_x
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        );
        let parsed = Url::parse(&probe).map_err(|e| format!("'{url}' is not a valid URL: {e}"))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("user information is not allowed in the URL".into());
        }
        let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
            return Err(format!("'{url}' has no host"));
        };
        let Some(port) = parsed.port_or_known_default() else {
            return Err(format!("'{url}' has no port"));
        };
        let want_path = if path_x.is_empty() { "/" } else { &path_x };
        if parsed.path() != want_path || parsed.query() != query_x.as_deref() {
            return Err(format!(
                "write the path and query exactly as they are to be sent (percent-encoded, without '.' or '..' segments): they read as '{}{}'",
                parsed.path(),
                parsed.query().map(|q| format!("?{q}")).unwrap_or_default()
            ));
        }
        let prefix = parsed.origin().ascii_serialization();
        Ok(UrlTemplate {
            prefix,
            scheme: parsed.scheme().to_string(),
            host: host.to_string(),
            port,
            path,
            query,
        })
    }

    /// `scheme://host:port`, what `/health` lists.
    pub(crate) fn destination(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }

    pub(crate) fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    /// The payload fields the URL's slots name.
    pub(crate) fn fields(&self) -> impl Iterator<Item = &str> {
        self.path
            .iter()
            .chain(self.query.iter().flatten())
            .filter_map(|p| match p {
                Piece::Slot(f) => Some(f.as_str()),
                Piece::Lit(_) => None,
            })
    }

    /// The URL for this payload. Each slot is filled with its field's text, percent-encoded; a
    /// path segment that would read as `.` or `..`, or be empty, because of filled values is
    /// refused (it would move the request off the configured path).
    pub(crate) fn fill(&self, payload: &Value) -> Result<Url, Vec<Violation>> {
        let mut problems = Vec::new();
        let text_of = |field: &str, problems: &mut Vec<Violation>| -> String {
            match payload.get(field).and_then(scalar_text) {
                Some(t) => t,
                None => {
                    problems.push(Violation {
                        path: pointer(field),
                        rule: if payload.get(field).is_some() { "type" } else { "required" }.into(),
                        message: format!(
                            "payload field '{field}' fills a url slot: it must be a string, number or boolean"
                        ),
                    });
                    String::new()
                }
            }
        };

        let mut path = String::new();
        let mut seg_start = 0;
        let mut seg_fields: Vec<&str> = Vec::new();
        let check_segment = |seg: &str, fields: &[&str], problems: &mut Vec<Violation>| {
            if fields.is_empty() {
                return;
            }
            let why = if is_dot_segment(seg) {
                Some(("dot_segment", format!("makes the path segment '{seg}', a '.' or '..' segment that would move the request off the configured path")))
            } else if seg.is_empty() {
                Some(("minLength", "fills a url path segment with nothing, which would send the request to another path".to_string()))
            } else {
                None
            };
            if let Some((rule, what)) = why {
                for f in fields {
                    problems.push(Violation {
                        path: pointer(f),
                        rule: rule.into(),
                        message: format!("payload field '{f}' {what}"),
                    });
                }
            }
        };
        for piece in &self.path {
            match piece {
                Piece::Lit(s) => {
                    for c in s.chars() {
                        if c == '/' {
                            check_segment(&path[seg_start..], &seg_fields, &mut problems);
                            seg_fields.clear();
                            path.push('/');
                            seg_start = path.len();
                        } else {
                            path.push(c);
                        }
                    }
                }
                Piece::Slot(f) => {
                    let t = text_of(f, &mut problems);
                    encode_into(&t, &mut path);
                    seg_fields.push(f);
                }
            }
        }
        check_segment(&path[seg_start..], &seg_fields, &mut problems);

        let query = self.query.as_ref().map(|q| {
            let mut out = String::new();
            for piece in q {
                match piece {
                    Piece::Lit(s) => out.push_str(s),
                    Piece::Slot(f) => {
                        let t = text_of(f, &mut problems);
                        encode_into(&t, &mut out);
                    }
                }
            }
            out
        });
        dedupe(&mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        if path.is_empty() {
            path.push('/');
        }
        let full = format!(
            "{}{path}{}",
            self.prefix,
            query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        );
        // The fixed parts were checked at start-up and the filled ones are unreserved characters
        // and %XX: parsing must keep every byte. Checked anyway, failing closed.
        let built = Url::parse(&full).ok().filter(|u| {
            u.path() == path
                && u.query() == query.as_deref()
                && u.scheme() == self.scheme
                && u.host_str() == Some(self.host.as_str())
                && u.port_or_known_default() == Some(self.port)
        });
        built.ok_or_else(|| {
            vec![Violation {
                path: String::new(),
                rule: "format".into(),
                message:
                    "the payload's values would change the configured url once parsed; refused"
                        .into(),
            }]
        })
    }
}

/// Keep one violation per path (the first).
pub(crate) fn dedupe(v: &mut Vec<Violation>) {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|x| seen.insert(x.path.clone()));
}

/// The `body_template` setting: a JSON value whose strings may name payload fields.
#[derive(Debug, Clone)]
pub(crate) enum BodyTemplate {
    /// A string that is exactly `"{field}"`: the field's JSON value, keeping its type.
    Field(String),
    /// A string with slots and text: filled as text.
    Text(Vec<Piece>),
    /// A value without slots, as configured.
    Lit(Value),
    Array(Vec<BodyTemplate>),
    /// Keys are literal (never filled).
    Object(Vec<(String, BodyTemplate)>),
}

impl BodyTemplate {
    /// Parse the template; `at` is the setting's path for messages (`body_template`).
    pub(crate) fn parse(v: &Value, at: &str) -> Result<BodyTemplate, String> {
        Ok(match v {
            Value::String(s) => {
                let pieces = parse_slots(s).map_err(|e| format!("{at}: {e}"))?;
                match pieces.as_slice() {
                    [Piece::Slot(f)] => BodyTemplate::Field(f.clone()),
                    p if p.iter().any(|x| matches!(x, Piece::Slot(_))) => {
                        BodyTemplate::Text(pieces)
                    }
                    _ => BodyTemplate::Lit(Value::String(substitute(&pieces, ""))),
                }
            }
            Value::Array(a) => BodyTemplate::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| BodyTemplate::parse(x, &format!("{at}/{i}")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => BodyTemplate::Object(
                o.iter()
                    .map(|(k, x)| Ok((k.clone(), BodyTemplate::parse(x, &format!("{at}/{k}"))?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => BodyTemplate::Lit(other.clone()),
        })
    }

    /// Every field the template names, with what it needs.
    pub(crate) fn uses(&self, out: &mut BTreeMap<String, Need>) {
        let mut add = |f: &str, n: Need| {
            let e = out.entry(f.to_string()).or_insert(n);
            *e = (*e).max(n);
        };
        match self {
            BodyTemplate::Field(f) => add(f, Need::Any),
            BodyTemplate::Text(p) => {
                for x in p {
                    if let Piece::Slot(f) = x {
                        add(f, Need::Scalar);
                    }
                }
            }
            BodyTemplate::Lit(_) => {}
            BodyTemplate::Array(a) => a.iter().for_each(|t| t.uses(out)),
            BodyTemplate::Object(o) => o.iter().for_each(|(_, t)| t.uses(out)),
        }
    }

    /// The body for this payload.
    pub(crate) fn fill(&self, payload: &Value) -> Result<Value, Vec<Violation>> {
        let mut problems = Vec::new();
        let v = self.fill_into(payload, &mut problems);
        dedupe(&mut problems);
        if problems.is_empty() {
            Ok(v)
        } else {
            Err(problems)
        }
    }

    fn fill_into(&self, payload: &Value, problems: &mut Vec<Violation>) -> Value {
        match self {
            BodyTemplate::Field(f) => match payload.get(f) {
                Some(v) => v.clone(),
                None => {
                    problems.push(Violation {
                        path: pointer(f),
                        rule: "required".into(),
                        message: format!(
                            "payload field '{f}' is missing; the body_template names it"
                        ),
                    });
                    Value::Null
                }
            },
            BodyTemplate::Text(pieces) => {
                let mut s = String::new();
                for p in pieces {
                    match p {
                        Piece::Lit(l) => s.push_str(l),
                        Piece::Slot(f) => match payload.get(f).and_then(scalar_text) {
                            Some(t) => s.push_str(&t),
                            None => problems.push(Violation {
                                path: pointer(f),
                                rule: if payload.get(f).is_some() { "type" } else { "required" }
                                    .into(),
                                message: format!(
                                    "payload field '{f}' fills a body_template text: it must be a string, number or boolean"
                                ),
                            }),
                        },
                    }
                }
                Value::String(s)
            }
            BodyTemplate::Lit(v) => v.clone(),
            BodyTemplate::Array(a) => {
                Value::Array(a.iter().map(|t| t.fill_into(payload, problems)).collect())
            }
            BodyTemplate::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, t)| (k.clone(), t.fill_into(payload, problems)))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slots_parse_with_escapes() {
        assert_eq!(
            parse_slots("/a/{id}/b{{c}}").unwrap(),
            vec![
                Piece::Lit("/a/".into()),
                Piece::Slot("id".into()),
                Piece::Lit("/b{c}".into())
            ]
        );
        assert!(parse_slots("/a/{id").unwrap_err().contains("not closed"));
        assert!(parse_slots("/a/}").unwrap_err().contains("closes no slot"));
        assert!(parse_slots("/a/{}").unwrap_err().contains("slot '{}'"));
        assert!(parse_slots("/a/{a.b}")
            .unwrap_err()
            .contains("slot '{a.b}'"));
        // slot names with non-ASCII are refused, and the message names the slot
        assert!(parse_slots("/{é}").unwrap_err().contains("{é}"));
        // the position counts each escaped brace as the two characters written
        assert!(parse_slots("{{x}}/{a.b}")
            .unwrap_err()
            .contains("slot '{a.b}' at character 7"));
    }

    #[test]
    fn encoding_leaves_only_unreserved() {
        let mut s = String::new();
        encode_into("aZ09-_~./?#&=% é", &mut s);
        assert_eq!(s, "aZ09-_~%2E%2F%3F%23%26%3D%25%20%C3%A9");
    }

    #[test]
    fn url_slots_only_in_path_and_query() {
        for bad in [
            "http://{host}/x",
            "http://h:{port}/x",
            "{scheme}://h/x",
            "http://h{x}.example/x",
        ] {
            assert_eq!(UrlTemplate::parse(bad).unwrap_err(), SLOT_PLACE, "{bad}");
        }
        assert!(UrlTemplate::parse("ftp://h/x")
            .unwrap_err()
            .contains("scheme 'ftp'"));
        assert!(UrlTemplate::parse("http://u:p@h/x")
            .unwrap_err()
            .contains("user information"));
        assert!(UrlTemplate::parse("http://h/x#f")
            .unwrap_err()
            .contains("fragment"));
        assert!(UrlTemplate::parse("http://h/a/../b")
            .unwrap_err()
            .contains("exactly"));
        assert!(UrlTemplate::parse("http://h/a b")
            .unwrap_err()
            .contains("whitespace"));
        assert!(UrlTemplate::parse("http:\\\\h/a")
            .unwrap_err()
            .contains("backslash"));
        assert!(UrlTemplate::parse("h/a").unwrap_err().contains("absolute"));
        assert!(UrlTemplate::parse("http://h/a%{x}")
            .unwrap_err()
            .contains("two hex digits"));
        let t = UrlTemplate::parse("https://Example.COM/a/{id}?q={q}&x=1").unwrap();
        assert_eq!(t.destination(), "https://example.com:443");
        assert_eq!(t.fields().collect::<Vec<_>>(), ["id", "q"]);
        let t = UrlTemplate::parse("http://[::1]:8080").unwrap();
        assert_eq!(t.destination(), "http://[::1]:8080");
        assert_eq!(t.fill(&json!({})).unwrap().as_str(), "http://[::1]:8080/");
    }

    #[test]
    fn filled_values_stay_in_their_slot() {
        let t = UrlTemplate::parse("http://127.0.0.1:9/api/{id}/x?q={q}").unwrap();
        let u = t.fill(&json!({"id": "../admin", "q": "a&b=c#d"})).unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/api/%2E%2E%2Fadmin/x?q=a%26b%3Dc%23d"
        );
        let u = t.fill(&json!({"id": 12.5, "q": true})).unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:9/api/12%2E5/x?q=true");
        // whole dot segments and empty segments are refused, naming the field
        for id in [".", "..", ""] {
            let e = t.fill(&json!({"id": id, "q": "x"})).unwrap_err();
            assert_eq!(e.len(), 1, "{id:?}");
            assert_eq!(e[0].path, "/id");
        }
        let t = UrlTemplate::parse("http://h/a/.{x}").unwrap();
        let e = t.fill(&json!({"x": "."})).unwrap_err();
        assert_eq!(
            (e[0].path.as_str(), e[0].rule.as_str()),
            ("/x", "dot_segment")
        );
        assert!(t.fill(&json!({"x": ".."})).is_ok()); // '...' is an ordinary segment
        let e = t.fill(&json!({"x": [1]})).unwrap_err();
        assert_eq!((e[0].path.as_str(), e[0].rule.as_str()), ("/x", "type"));
    }

    #[test]
    fn body_template_keeps_types() {
        let tpl = BodyTemplate::parse(
            &json!({"amount": "{amount}", "memo": "pay {to} now", "lit": "{{x}}", "n": [1, "{to}"]}),
            "body_template",
        )
        .unwrap();
        let mut uses = BTreeMap::new();
        tpl.uses(&mut uses);
        assert_eq!(uses.get("amount"), Some(&Need::Any));
        assert_eq!(uses.get("to"), Some(&Need::Scalar));
        let v = tpl.fill(&json!({"amount": {"v": 5}, "to": "bob"})).unwrap();
        assert_eq!(
            v,
            json!({"amount": {"v": 5}, "memo": "pay bob now", "lit": "{x}", "n": [1, "bob"]})
        );
        let e = BodyTemplate::parse(&json!({"a": ["{x"]}), "body_template").unwrap_err();
        assert!(e.starts_with("body_template/a/0: "), "{e}");
        let v = check_fields(&json!({"to": [1]}), &uses);
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].path.as_str(), v[0].rule.as_str()),
            ("/amount", "required")
        );
        assert_eq!((v[1].path.as_str(), v[1].rule.as_str()), ("/to", "type"));
        assert_eq!(check_fields(&json!(3), &uses)[0].path, "");
    }
}
