//! # Embedding OpenExec with a handler of one's own
//!
//! An operator whose action cannot be an `http`, `wasm` or `command` entry of the registry file
//! writes it in Rust, against the same [`Handler`] trait the built-ins use, and runs the service
//! from a binary of their own. Nothing else changes: the action is listed by `GET /actions`,
//! its payload is validated before anything is claimed, it runs at most once behind a durable
//! claim, under its timeout, and every attempt gets a signed receipt naming
//! [`Handler::name`] and [`Handler::digest`].
//!
//! This crate's [`Slugify`] turns `{"title": "…"}` into `{"slug": "…"}`. [`registry`] puts it
//! beside the built-ins; `src/main.rs` starts the service with it (and with a registry file, if
//! `OPENEXEC_ACTIONS` names one); `tests/embed.rs` runs it end to end.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use openexec_exec::handler::{
    Handler, HandlerError, HandlerFuture, Invalid, Invocation, Registry, Violation,
};
use serde_json::{json, Value};

/// `{"title": string}` → `{"slug": lowercase words joined by '-'}`. No effects: running it twice
/// cannot be observed outside.
pub struct Slugify {
    digest: String,
}

impl Slugify {
    pub fn new() -> Slugify {
        // What pins this handler in receipts: its name and version (bump the version when its
        // behaviour changes, so receipts tell the two apart).
        let entry = json!({"handler": "example:slugify", "version": 1});
        Slugify {
            digest: openexec_exec::handler::digest_of(&entry),
        }
    }
}

impl Default for Slugify {
    fn default() -> Slugify {
        Slugify::new()
    }
}

impl Handler for Slugify {
    fn name(&self) -> &str {
        "example:slugify"
    }
    fn digest(&self) -> &str {
        &self.digest
    }
    fn effects(&self) -> bool {
        false
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn description(&self) -> &str {
        "Turns a title into a URL slug"
    }
    fn input_schema(&self) -> Value {
        json!({"type": "object", "required": ["title"], "properties": {"title": {"type": "string", "maxLength": 200}}})
    }
    fn validate(&self, payload: &Value) -> Result<(), Invalid> {
        match payload.get("title") {
            Some(Value::String(t)) if t.chars().count() <= 200 => Ok(()),
            other => Err(Invalid {
                message: "slugify needs {\"title\": a string of at most 200 characters}".into(),
                details: vec![Violation {
                    path: "/title".into(),
                    rule: if other.is_none() { "required" } else { "type" }.into(),
                    message: "a string of at most 200 characters".into(),
                }],
            }),
        }
    }
    fn run<'a>(&'a self, inv: &'a Invocation<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            let title = inv
                .payload
                .get("title")
                .and_then(Value::as_str)
                .ok_or_else(|| HandlerError::new("invalid_payload", "title is missing"))?;
            let slug: Vec<String> = title
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect();
            Ok(json!({ "slug": slug.join("-") }))
        })
    }
}

/// The built-ins and `slugify`.
pub fn registry() -> Registry {
    let mut r = openexec_builtin::registry();
    r.register("slugify", Arc::new(Slugify::new()));
    r
}

/// The kinds a registry file (`OPENEXEC_ACTIONS`) may use in this binary.
pub fn kinds() -> openexec_exec::actions::Loader {
    openexec_exec::actions::Loader::new().with_kind(Arc::new(openexec_builtin::Builtins))
}
