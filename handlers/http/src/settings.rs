//! The `[actions.<name>.http]` table: reading it, checking every key, and reading the header
//! values from the environment and from files.

use std::collections::BTreeMap;
use std::fmt;

use openexec_handler::Spec;
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::Value;

use crate::template::{BodyTemplate, UrlTemplate};

/// The largest `max_response_bytes` accepted (64 MiB): a result is stored and hashed whole.
pub const MAX_RESPONSE_BYTES_LIMIT: u64 = 64 * 1024 * 1024;

/// `max_response_bytes` when the table does not say (1 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// A header value that is never shown: its `Debug` and `Display` print `[redacted]`, and the
/// [`HeaderValue`] inside is marked sensitive (so HTTP/2 never indexes it and `http`'s own
/// `Debug` hides it too).
#[derive(Clone)]
pub struct Secret(HeaderValue);

impl Secret {
    fn new(mut v: HeaderValue) -> Secret {
        v.set_sensitive(true);
        Secret(v)
    }

    /// The value, to put on a request.
    pub(crate) fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a header's value came from; shown in `Debug` instead of the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Written in the registry file (`"literal"`).
    Literal,
    /// Read from this environment variable at start-up (`{ env = "NAME" }`).
    Env(String),
    /// Read from this file at start-up, resolved against the registry file's folder
    /// (`{ file = "path" }`).
    File(std::path::PathBuf),
}

/// One configured header.
#[derive(Debug, Clone)]
pub struct Header {
    /// The name as the table spells it.
    pub key: String,
    /// The name as sent (lower case).
    pub name: HeaderName,
    /// Where the value came from.
    pub source: Source,
    /// The value, never shown.
    pub value: Secret,
}

/// The table as read, every key checked.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) url: UrlTemplate,
    pub(crate) method: Method,
    pub(crate) headers: Vec<Header>,
    pub(crate) body_template: Option<BodyTemplate>,
    pub(crate) max_response_bytes: u64,
}

/// The raw table: every value untyped so that each message can name its key.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    url: Value,
    #[serde(default)]
    method: Option<Value>,
    #[serde(default)]
    headers: Option<Value>,
    #[serde(default)]
    body_template: Option<Value>,
    #[serde(default)]
    max_response_bytes: Option<Value>,
}

/// Headers the client manages itself; configuring one is refused.
const MANAGED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

const METHODS: &str = "GET, POST, PUT, PATCH or DELETE";

impl Settings {
    /// Read and check the table, reading env variables with `env`.
    pub(crate) fn read(
        spec: &Spec<'_>,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Settings, String> {
        if !spec.settings.is_object() {
            return Err(format!(
                "the [actions.{}.http] table is missing or not a table; it needs at least url",
                spec.action
            ));
        }
        let raw: Raw = spec.settings()?;

        let url = match &raw.url {
            Value::String(s) => UrlTemplate::parse(s).map_err(|e| format!("url: {e}"))?,
            other => return Err(format!("url: expected a string, got {}", kind(other))),
        };

        let method = match &raw.method {
            None => Method::POST,
            Some(Value::String(m)) => match m.as_str() {
                "GET" => Method::GET,
                "POST" => Method::POST,
                "PUT" => Method::PUT,
                "PATCH" => Method::PATCH,
                "DELETE" => Method::DELETE,
                _ => return Err(format!("method: '{m}' is not one of {METHODS}")),
            },
            Some(other) => {
                return Err(format!(
                    "method: expected one of {METHODS} as a string, got {}",
                    kind(other)
                ))
            }
        };

        let headers = match &raw.headers {
            None => Vec::new(),
            Some(Value::Object(table)) => read_headers(table, spec, env)?,
            Some(other) => {
                return Err(format!(
                    "headers: expected a table of header names to values, got {}",
                    kind(other)
                ))
            }
        };

        let body_template = raw
            .body_template
            .as_ref()
            .map(|t| BodyTemplate::parse(t, "body_template"))
            .transpose()?;

        let max_response_bytes = match &raw.max_response_bytes {
            None => DEFAULT_MAX_RESPONSE_BYTES,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(b) if (1..=MAX_RESPONSE_BYTES_LIMIT).contains(&b) => b,
                _ => {
                    return Err(format!(
                        "max_response_bytes: {n} is not a whole number from 1 to {MAX_RESPONSE_BYTES_LIMIT}"
                    ))
                }
            },
            Some(other) => {
                return Err(format!(
                    "max_response_bytes: expected a whole number of bytes, got {}",
                    kind(other)
                ))
            }
        };

        Ok(Settings {
            url,
            method,
            headers,
            body_template,
            max_response_bytes,
        })
    }
}

fn kind(v: &Value) -> &'static str {
    openexec_handler::slots::kind_of(v)
}

fn read_headers(
    table: &serde_json::Map<String, Value>,
    spec: &Spec<'_>,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Vec<Header>, String> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut out = Vec::new();
    for (key, v) in table {
        let at = format!("headers.{key}");
        let name = HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| format!("{at}: '{key}' is not a valid header name"))?;
        if MANAGED.contains(&name.as_str()) {
            return Err(format!(
                "{at}: the {key} header is managed by the HTTP client and cannot be configured"
            ));
        }
        if let Some(first) = seen.insert(name.as_str().to_string(), key) {
            return Err(format!(
                "{at}: the header is configured twice (also as '{first}'; header names ignore case)"
            ));
        }
        let (source, text) = match v {
            Value::String(s) => (Source::Literal, s.clone()),
            Value::Object(o) => match (o.len(), o.get("env"), o.get("file")) {
                (1, Some(Value::String(var)), None) => {
                    if var.is_empty() || var.contains(['=', '\0']) {
                        return Err(format!("{at}: '{var}' is not a valid environment variable name"));
                    }
                    let val = env(var).ok_or_else(|| {
                        format!("{at}: environment variable {var} is not set")
                    })?;
                    let val = val.into_string().map_err(|_| {
                        format!("{at}: environment variable {var} is not valid UTF-8")
                    })?;
                    if val.is_empty() {
                        return Err(format!("{at}: environment variable {var} is empty"));
                    }
                    (Source::Env(var.clone()), val)
                }
                (1, None, Some(Value::String(file))) => {
                    let path = spec.path(file);
                    let bytes = std::fs::read(&path).map_err(|e| {
                        format!("{at}: cannot read file {}: {e}", path.display())
                    })?;
                    let text = String::from_utf8(bytes).map_err(|_| {
                        format!("{at}: file {} is not valid UTF-8", path.display())
                    })?;
                    let text = text.trim_end_matches(['\n', '\r']).to_string();
                    if text.is_empty() {
                        return Err(format!("{at}: file {} is empty", path.display()));
                    }
                    (Source::File(path), text)
                }
                _ => {
                    return Err(format!(
                        "{at}: expected \"literal\", {{ env = \"NAME\" }} or {{ file = \"path\" }} (one key, a string)"
                    ))
                }
            },
            other => {
                return Err(format!(
                    "{at}: expected \"literal\", {{ env = \"NAME\" }} or {{ file = \"path\" }}, got {}",
                    kind(other)
                ))
            }
        };
        // The message never includes the value: it may be a secret.
        let value = HeaderValue::from_str(&text).map_err(|_| {
            let from = match &source {
                Source::Literal => "the literal value".to_string(),
                Source::Env(var) => format!("the value of environment variable {var}"),
                Source::File(p) => format!("the content of file {}", p.display()),
            };
            format!(
                "{at}: {from} is not a valid header value (only visible ASCII characters, spaces and tabs; no line breaks)"
            )
        })?;
        out.push(Header {
            key: key.clone(),
            name,
            source,
            value: Secret::new(value),
        });
    }
    Ok(out)
}
