//! # openexec-actions: the action registry file (SPEC §10)
//!
//! Reads the TOML file an operator declares real actions in (`OPENEXEC_ACTIONS`), checks every
//! entry, and puts each action into a [`Registry`] behind the same [`Handler`] trait as the
//! built-ins, so the engine never knows which kind it runs. For each action:
//!
//! | key | meaning |
//! |---|---|
//! | `kind` | required: `builtin`, `http`, `wasm`, `command`, or a kind an embedder offers |
//! | `description` | what the action does, for agents (`GET /actions`); default empty |
//! | `schema` / `schema_file` | required, exactly one: the payload's JSON Schema (draft 2020-12), inline or in a JSON file (relative to the registry file); its top level must be `"type": "object"` |
//! | `timeout_ms` | how long a run may take, 1 to 600000; default 30000 |
//! | `effects` | whether running it twice could be observed outside; default: the kind's (true for `http` and `command`, false for `wasm` and the pure built-ins) |
//! | `min_approvers` | the approval floor of SPEC §4 (valid roster signatures required whatever an artifact's quorum says), 0 to 100; default 0 |
//! | `[actions.<name>.<kind>]` | the kind's own settings, checked by the kind |
//!
//! Any other key, a second kind table, a schema that is not a valid draft 2020-12 schema (or
//! refers to anything outside itself), a bad kind setting, or a name that is empty, longer than
//! 64 characters, not in Unicode normal form C, made of anything but letters, digits, `_`, `-`
//! and `.`, or equal to another action's name after NFKC normalisation and case folding stops
//! the load with a [`RegistryError`] naming the file, the action and the key. Nothing is
//! registered unless the whole file is good.
//!
//! Every action's digest is the SHA-256 of the JCS of its canonical config entry: the keys above
//! with their defaults filled in and `schema_file` replaced by the schema it holds, so a receipt
//! pins exactly what was configured (a WebAssembly action pins its module's hash instead).
//! Payloads are checked against the schema before anything is claimed; a mismatch is an
//! [`Invalid`] with one [`Violation`] per failing place and rule (at most [`MAX_VIOLATIONS`]).
//!
//! What it leaves to others: each kind's settings and runs are its crate's (`handlers/…`);
//! the allow-list, claims, receipts and `GET /actions` are the execution service's.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openexec_handler::{
    Action, Handler, HandlerFuture, Invalid, Invocation, Kind, Registry, Spec, Violation,
};
use serde_json::{json, Map, Value};
use unicode_normalization::UnicodeNormalization;

/// The longest an action may be given (`timeout_ms`), in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// `timeout_ms` when the registry does not say.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The highest `min_approvers`.
pub const MAX_MIN_APPROVERS: u64 = 100;
/// The most failing places listed for one payload.
pub const MAX_VIOLATIONS: usize = 50;
/// The longest action name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

const COMMON_KEYS: [&str; 7] = [
    "kind",
    "description",
    "schema",
    "schema_file",
    "timeout_ms",
    "effects",
    "min_approvers",
];

/// Why a registry file was refused. The message names the file, the action and the key.
#[derive(Debug, thiserror::Error)]
#[error("action registry {origin}: {message}")]
pub struct RegistryError {
    pub origin: String,
    pub message: String,
}

/// Reads registry files with the handler kinds it was given.
#[derive(Clone, Default)]
pub struct Loader {
    kinds: Vec<Arc<dyn Kind>>,
}

impl Loader {
    pub fn new() -> Loader {
        Loader::default()
    }

    /// Offer a kind (`kind = "<its name>"`). A later kind of the same name replaces an earlier.
    pub fn with_kind(mut self, kind: Arc<dyn Kind>) -> Loader {
        self.kinds.retain(|k| k.name() != kind.name());
        self.kinds.push(kind);
        self
    }

    /// The kinds offered, by name.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.iter().map(|k| k.name())
    }

    fn kind(&self, name: &str) -> Option<&Arc<dyn Kind>> {
        self.kinds.iter().find(|k| k.name() == name)
    }

    /// Load the registry file at `path` into `into` (beside what it holds, e.g. the built-ins).
    /// Relative paths inside it are relative to its folder.
    pub fn load_file(&self, path: &Path, into: &mut Registry) -> Result<(), RegistryError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RegistryError {
            origin: origin.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        self.load_str(&text, base, &origin, into)
    }

    /// Load registry text; `base_dir` resolves relative paths, `origin` names it in errors.
    pub fn load_str(
        &self,
        text: &str,
        base_dir: &Path,
        origin: &str,
        into: &mut Registry,
    ) -> Result<(), RegistryError> {
        let fail = |message: String| RegistryError {
            origin: origin.to_string(),
            message,
        };
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(e.to_string()))?;
        for key in doc.keys() {
            if key != "actions" {
                return Err(fail(format!(
                    "unknown top-level key '{key}'; the file holds only [actions.<name>] tables"
                )));
            }
        }
        let Some(actions) = doc.get("actions") else {
            return Ok(());
        };
        let toml::Value::Table(actions) = actions else {
            return Err(fail(
                "'actions' must be a table of [actions.<name>] tables".into(),
            ));
        };

        // Names first: every collision is found before anything is built.
        let mut folded: BTreeMap<String, String> =
            into.actions().map(|a| (fold(a), a.to_string())).collect();
        for name in actions.keys() {
            check_name(name).map_err(|m| fail(format!("actions.{name}: {m}")))?;
            if let Some(other) = folded.insert(fold(name), name.clone()) {
                return Err(fail(format!(
                    "actions.{name}: the name collides with '{other}' (the same after Unicode \
                     normalisation and case folding); give one of them another name"
                )));
            }
        }

        let mut built = Vec::new();
        let mut health = Vec::new();
        for (name, entry) in actions {
            let at = |m: String| fail(format!("actions.{name}: {m}"));
            let toml::Value::Table(entry) = entry else {
                return Err(at("must be a table".into()));
            };
            let (action, kind) = self.build(name, entry, base_dir).map_err(at)?;
            if let Some(h) = kind.health() {
                health.push((kind.name().to_string(), h));
            }
            built.push((name.clone(), action));
        }
        for (name, action) in built {
            into.insert(&name, action);
        }
        for (kind, h) in health {
            into.add_kind_health(&kind, h);
        }
        Ok(())
    }

    fn build(
        &self,
        name: &str,
        entry: &toml::Table,
        base_dir: &Path,
    ) -> Result<(Action, Arc<dyn Kind>), String> {
        let kind_name = match entry.get("kind") {
            Some(toml::Value::String(k)) => k.as_str(),
            Some(_) => return Err("kind: must be a string".into()),
            None => return Err(format!("kind: missing; one of {}", self.kind_list())),
        };
        let kind = self
            .kind(kind_name)
            .ok_or_else(|| {
                format!(
                    "kind: unknown kind '{kind_name}'; one of {}",
                    self.kind_list()
                )
            })?
            .clone();
        for key in entry.keys() {
            if !COMMON_KEYS.contains(&key.as_str()) && key != kind_name {
                let hint = if self.kind(key).is_some() {
                    format!(" (settings of kind '{key}', but this action's kind is '{kind_name}')")
                } else {
                    String::new()
                };
                return Err(format!(
                    "unknown key '{key}'{hint}; the keys are {} and [actions.{name}.{kind_name}]",
                    COMMON_KEYS.join(", ")
                ));
            }
        }
        let description = match entry.get("description") {
            None => String::new(),
            Some(toml::Value::String(d)) => d.clone(),
            Some(_) => return Err("description: must be a string".into()),
        };
        let schema = schema_of(entry, base_dir)?;
        let validator = compile_schema(&schema)?;
        let timeout_ms = match entry.get("timeout_ms") {
            None => DEFAULT_TIMEOUT_MS,
            Some(toml::Value::Integer(n)) if (1..=MAX_TIMEOUT_MS as i64).contains(n) => *n as u64,
            Some(v) => {
                return Err(format!(
                    "timeout_ms: must be a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}, got {v}"
                ))
            }
        };
        let min_approvers = match entry.get("min_approvers") {
            None => 0,
            Some(toml::Value::Integer(n)) if (0..=MAX_MIN_APPROVERS as i64).contains(n) => {
                *n as u32
            }
            Some(v) => {
                return Err(format!(
                    "min_approvers: must be a whole number from 0 to {MAX_MIN_APPROVERS}, got {v}"
                ))
            }
        };
        let settings = match entry.get(kind_name) {
            None => Value::Object(Map::new()),
            Some(toml::Value::Table(t)) => {
                to_json(&toml::Value::Table(t.clone())).map_err(|m| format!("{kind_name}.{m}"))?
            }
            Some(_) => return Err(format!("{kind_name}: must be a table")),
        };
        let effects = match entry.get("effects") {
            None => kind.default_effects(&settings),
            Some(toml::Value::Boolean(b)) => *b,
            Some(_) => return Err("effects: must be true or false".into()),
        };

        // The canonical entry: every key with its default, the schema itself in place of its
        // file. Its hash is the digest a receipt records.
        let canonical = json!({
            "kind": kind_name,
            "description": description,
            "schema": schema,
            "timeout_ms": timeout_ms,
            "effects": effects,
            "min_approvers": min_approvers,
            kind_name: settings,
        });
        let digest = openexec_core::json::jcs_sha256(&canonical);
        let spec = Spec {
            action: name,
            settings: &settings,
            base_dir,
            timeout: Duration::from_millis(timeout_ms),
            effects,
            digest: &digest,
        };
        let inner = kind.build(&spec).map_err(|m| format!("{kind_name}: {m}"))?;
        let declared = Declared {
            inner,
            kind: kind_name.to_string(),
            description,
            schema,
            validator,
            effects,
            timeout: Duration::from_millis(timeout_ms),
        };
        Ok((
            Action {
                handler: Arc::new(declared),
                min_approvers,
            },
            kind,
        ))
    }

    fn kind_list(&self) -> String {
        let names: Vec<&str> = self.kinds().collect();
        if names.is_empty() {
            "(none offered)".into()
        } else {
            names.join(", ")
        }
    }
}

/// The key two names are compared by: NFKC, case-folded, NFKC again.
fn fold(name: &str) -> String {
    let once: String = name.nfkc().collect::<String>().to_lowercase();
    once.nfkc().collect()
}

fn check_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err("an action needs a name".into());
    }
    if chars > MAX_NAME_CHARS {
        return Err(format!(
            "the name is {chars} characters long; at most {MAX_NAME_CHARS}"
        ));
    }
    let nfc: String = name.nfc().collect();
    if nfc != name {
        return Err(format!(
            "the name is not in Unicode normal form C; write it as '{nfc}'"
        ));
    }
    // Letters may carry combining marks (in scripts that need them), never start with one.
    let mark = unicode_normalization::char::is_combining_mark;
    if name.chars().next().is_some_and(mark) {
        return Err("the name may not start with a combining mark".into());
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_alphanumeric() || mark(c) || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "the name may hold letters, digits, '_', '-' and '.' only, not {c:?}"
        ));
    }
    Ok(())
}

/// The schema of an entry, inline or from its file, as JSON.
fn schema_of(entry: &toml::Table, base_dir: &Path) -> Result<Value, String> {
    match (entry.get("schema"), entry.get("schema_file")) {
        (Some(_), Some(_)) => Err("schema and schema_file: give one of them, not both".into()),
        (None, None) => Err(
            "schema: missing; every action needs a JSON Schema for its payload (`schema = {…}` or \
             `schema_file = \"…\"`)"
                .into(),
        ),
        (Some(s), None) => to_json(s).map_err(|m| format!("schema{m}")),
        (None, Some(toml::Value::String(f))) => {
            let path = resolve(base_dir, f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("schema_file: cannot read {}: {e}", path.display()))?;
            openexec_core::json::parse_ijson(text.as_bytes(), 64)
                .map_err(|e| format!("schema_file: {} is not JSON: {e}", path.display()))
        }
        (None, Some(_)) => Err("schema_file: must be a path (a string)".into()),
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    if schema.get("type") != Some(&json!("object")) {
        return Err(
            "schema: its top level must say \"type\": \"object\" (a payload is an object, as a \
             tool's parameters are)"
                .into(),
        );
    }
    if let Some(s) = schema.get("$schema") {
        if s != "https://json-schema.org/draft/2020-12/schema" {
            return Err(format!(
                "schema: $schema is {s}; only draft 2020-12 (https://json-schema.org/draft/2020-12/schema) is read"
            ));
        }
    }
    let problems: Vec<String> = jsonschema::draft202012::meta::validator()
        .iter_errors(schema)
        .take(5)
        .map(|e| describe(&e))
        .collect();
    if !problems.is_empty() {
        return Err(format!(
            "schema: not a valid JSON Schema (draft 2020-12): {}",
            problems.join("; ")
        ));
    }
    jsonschema::draft202012::options()
        .build(schema)
        .map_err(|e| format!("schema: cannot be used: {e}"))
}

fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    let at = e.instance_path().as_str();
    if at.is_empty() {
        e.to_string()
    } else {
        format!("at {at}: {e}")
    }
}

/// TOML as JSON. Dates and non-finite floats have no JSON form: the error names the key path.
fn to_json(v: &toml::Value) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!(": {f} is not a finite number"))?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => {
            return Err(format!(
                ": {d} is a TOML date, which JSON has no form for; quote it"
            ))
        }
        toml::Value::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, x)| to_json(x).map_err(|m| format!("[{i}]{m}")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, x)| Ok((k.clone(), to_json(x).map_err(|m| format!(".{k}{m}"))?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// A declared action: the kind's handler behind the entry's schema, description and limits.
struct Declared {
    inner: Arc<dyn Handler>,
    kind: String,
    description: String,
    schema: Value,
    validator: jsonschema::Validator,
    effects: bool,
    timeout: Duration,
}

impl Handler for Declared {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn digest(&self) -> &str {
        self.inner.digest()
    }
    fn effects(&self) -> bool {
        self.effects
    }
    fn timeout(&self) -> Duration {
        self.timeout
    }
    fn kind(&self) -> &str {
        &self.kind
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn input_schema(&self) -> Value {
        self.schema.clone()
    }
    fn destinations(&self) -> Vec<String> {
        self.inner.destinations()
    }
    fn validate(&self, payload: &Value) -> Result<(), Invalid> {
        let details = violations(&self.validator, payload);
        if !details.is_empty() {
            let n = details.len();
            let places: Vec<&str> = details
                .iter()
                .map(|v| {
                    if v.path.is_empty() {
                        "(payload)"
                    } else {
                        v.path.as_str()
                    }
                })
                .collect();
            return Err(Invalid {
                message: format!(
                    "payload does not match the action's schema: {n} problem{} ({})",
                    if n == 1 { "" } else { "s" },
                    places.join(", ")
                ),
                details,
            });
        }
        self.inner.validate(payload)
    }
    fn run<'a>(&'a self, inv: &'a Invocation<'a>) -> HandlerFuture<'a> {
        self.inner.run(inv)
    }
}

/// Each failing place and rule of `payload`, in the validator's order.
fn violations(v: &jsonschema::Validator, payload: &Value) -> Vec<Violation> {
    v.iter_errors(payload)
        .take(MAX_VIOLATIONS)
        .map(|e| {
            let mut path = e.instance_path().as_str().to_string();
            // A missing property fails at its object; name the property itself.
            if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
                if let Some(p) = property.as_str() {
                    path = format!("{path}/{}", p.replace('~', "~0").replace('/', "~1"));
                }
            }
            Violation {
                path,
                rule: e.kind().keyword().to_string(),
                message: e.to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
