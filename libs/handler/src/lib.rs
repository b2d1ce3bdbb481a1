//! # openexec-handler: the handler API
//!
//! The one trait every action runs behind ([`Handler`]), the [`Registry`] of actions by name, and
//! the [`Kind`] trait through which the registry file (SPEC §10) builds actions of a kind.
//!
//! A handler declares how its payload is validated (before anything is claimed, so a bad payload
//! never uses up a nonce; [`Invalid`] lists each failing place), whether running it twice could
//! be observed outside ([`Handler::effects`]), how long it may run ([`Handler::timeout`]), and
//! what `GET /actions` shows of it (kind, description, input schema); it runs with the validated
//! payload, a deadline and a cancellation token ([`Invocation`]). Its `name` and `digest` go into
//! every receipt, pinning exactly what ran. The built-ins (`handlers/builtin`), the kinds of the
//! registry file (`handlers/http`, `handlers/wasm`, `handlers/command`) and embedders' own
//! handlers implement the same trait and are put in a [`Registry`]; the engine that runs them
//! does not know which kind it runs.
//!
//! What it leaves to others: reading the registry file, schemas and digests are
//! `openexec-actions`'; claims, receipts and the at-most-once guarantee are the execution
//! service's; the service enforces the timeout (a handler that overruns is cut off whatever it
//! does with its deadline) and decides what a cut-off run becomes (SPEC §5: `failed` with
//! `handler_timeout` for a handler without effects, `interrupted` for one with effects).
//!
//! [`slots`] is the `{field}` template grammar every kind's configuration uses (the `http`
//! kind's URL and body template, the `command` kind's argv), parsed in one place.

#![forbid(unsafe_code)]

pub mod slots;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
pub use tokio_util::sync::CancellationToken;

/// The future a handler returns.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send + 'a>>;

/// How long a handler may run when it does not say ([`Handler::timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The digest of a handler's config entry (SHA-256 of its canonical JSON, SPEC §2): what a
/// handler of one's own returns from [`Handler::digest`], e.g. for `{"handler": "mine:x",
/// "version": 1}`.
pub fn digest_of(entry: &Value) -> String {
    openexec_core::json::jcs_sha256(entry)
}

/// What a handler is told about the attempt it runs for.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub exec_id: &'a str,
    pub tenant_id: &'a str,
    pub action: &'a str,
    pub nonce: &'a str,
    pub payload: &'a Value,
    /// When the service stops waiting for this run (its start plus [`Handler::timeout`]). A
    /// handler that talks to the outside should give up on its own by then.
    pub deadline: tokio::time::Instant,
    /// Cancelled when the service stops waiting: the deadline passed or the process is shutting
    /// down. A handler with work in flight should stop at the next safe point.
    pub cancel: CancellationToken,
}

/// Why a payload was refused before anything was claimed: a 400 `invalid_payload` whose
/// `error.message` is `message` and whose `error.details` lists `details` (SPEC §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    /// Each failing place and rule; empty when the handler has only a message.
    pub details: Vec<Violation>,
}

/// One failing place in a payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// A JSON Pointer into the payload (`""` is the payload itself).
    pub path: String,
    /// The rule that failed, as the schema names it (`type`, `minimum`, `required`, …).
    pub rule: String,
    pub message: String,
}

impl Invalid {
    pub fn new(message: impl Into<String>) -> Invalid {
        Invalid {
            message: message.into(),
            details: Vec::new(),
        }
    }
}

impl From<String> for Invalid {
    fn from(message: String) -> Invalid {
        Invalid::new(message)
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A handler that started but did not produce a result. By default the request is `failed`: its
/// nonce is used up and it is never re-run by itself. One made with
/// [`HandlerError::outcome_unknown`] says the handler cannot tell whether it took effect (a
/// request sent whose answer never came): the request is `interrupted` (SPEC §5), asking again
/// answers 409 `outcome_unknown`, and it is never retried by itself.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// A short machine-readable code, recorded in the receipt.
    pub code: String,
    pub message: String,
    /// Whether the outcome is unknown (`interrupted`) rather than a failure (`failed`).
    pub unknown: bool,
}

impl HandlerError {
    /// A failure: the action did not take effect, or its failure is the answer.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> HandlerError {
        HandlerError {
            code: code.into(),
            message: message.into(),
            unknown: false,
        }
    }

    /// The action may or may not have taken effect: code `outcome_unknown`, status
    /// `interrupted`.
    pub fn outcome_unknown(message: impl Into<String>) -> HandlerError {
        HandlerError {
            code: "outcome_unknown".into(),
            message: message.into(),
            unknown: true,
        }
    }
}

pub trait Handler: Send + Sync {
    /// The name recorded in receipts, `<kind>:<action>`, e.g. `builtin:echo`, `http:pay`.
    fn name(&self) -> &str;
    /// Pins what runs: the module's hash for WebAssembly, the config entry's hash otherwise.
    fn digest(&self) -> &str;
    /// Whether running it twice could be observed outside (SPEC §10). A run with effects that
    /// is cut off has an unknown outcome (`interrupted`); one without is simply `failed`.
    fn effects(&self) -> bool;
    /// How long a run may take before the service cuts it off.
    fn timeout(&self) -> Duration {
        DEFAULT_TIMEOUT
    }
    /// The kind `GET /actions` shows (`builtin`, `http`, `wasm`, `command`, or an embedder's
    /// own): by default the part of [`Handler::name`] before its first `:`.
    fn kind(&self) -> &str {
        let n = self.name();
        n.split_once(':').map_or(n, |(k, _)| k)
    }
    /// What the action does, for agents reading `GET /actions`.
    fn description(&self) -> &str {
        ""
    }
    /// The JSON Schema of the payload `GET /actions` publishes.
    fn input_schema(&self) -> Value {
        serde_json::json!({"type": "object"})
    }
    /// Where a run may connect to (`scheme://host:port`), listed by `/health`; none by default.
    fn destinations(&self) -> Vec<String> {
        Vec::new()
    }
    /// Check the payload before anything is claimed. `Err` is a 400 `invalid_payload`.
    fn validate(&self, payload: &Value) -> Result<(), Invalid>;
    /// Run the action. Called at most once per (tenant, nonce), after the claim is durable.
    fn run<'a>(&'a self, inv: &'a Invocation<'a>) -> HandlerFuture<'a>;
}

/// What a handler kind is given to build one action of the registry file (SPEC §10): the
/// action's common keys are already checked by the loader (`openexec-actions`), and `settings`
/// is the kind's own table (`[actions.<name>.<kind>]`), converted from TOML to JSON.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    pub action: &'a str,
    /// The kind's table; [`Spec::settings`] deserializes it, refusing unknown keys.
    pub settings: &'a Value,
    /// Relative paths in the settings are relative to this (the registry file's folder).
    pub base_dir: &'a Path,
    pub timeout: Duration,
    pub effects: bool,
    /// The hash of the action's canonical config entry. A kind whose code lives in a file
    /// (WebAssembly) pins that file's hash instead.
    pub digest: &'a str,
}

impl Spec<'_> {
    /// The kind's settings as `T` (which should be `#[serde(deny_unknown_fields)]`), or an error
    /// naming the key that is wrong.
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        T::deserialize(self.settings).map_err(|e| e.to_string())
    }

    /// A path of the settings, resolved against [`Spec::base_dir`] when relative.
    pub fn path(&self, p: &str) -> std::path::PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// A handler kind the registry file can name (`kind = "http"`). Each kind is a crate under
/// `handlers/` that depends on this one only; the binary hands the loader the kinds it offers.
pub trait Kind: Send + Sync {
    /// The `kind` value of the registry file, and the name of the settings table.
    fn name(&self) -> &'static str;
    /// `effects` when the registry does not say (SPEC §10: true for `http` and `command`, false
    /// for `wasm` and the pure built-ins), given the kind's settings table.
    fn default_effects(&self, settings: &Value) -> bool;
    /// Build one action's handler, or say which setting is wrong (the loader adds the action's
    /// name and stops the service). Files are read and checked here, so a service with a bad
    /// registry never starts.
    fn build(&self, spec: &Spec<'_>) -> Result<Arc<dyn Handler>, String>;
    /// What `/health` says about this kind (for `command`: whether its sandbox is available).
    fn health(&self) -> Option<Value> {
        None
    }
}

/// One action of a [`Registry`]: its handler and the approval floor an operator set for it.
#[derive(Clone)]
pub struct Action {
    pub handler: Arc<dyn Handler>,
    /// Valid roster signatures required whatever an artifact's quorum says (SPEC §4).
    pub min_approvers: u32,
}

/// Actions by name.
#[derive(Clone, Default)]
pub struct Registry {
    actions: BTreeMap<String, Action>,
    kinds: Vec<(String, Value)>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Add (or replace) an action with no approval floor.
    pub fn register(&mut self, action: &str, handler: Arc<dyn Handler>) {
        self.insert(
            action,
            Action {
                handler,
                min_approvers: 0,
            },
        );
    }

    pub fn insert(&mut self, action: &str, entry: Action) {
        self.actions.insert(action.to_string(), entry);
    }

    pub fn get(&self, action: &str) -> Option<&Arc<dyn Handler>> {
        self.actions.get(action).map(|a| &a.handler)
    }

    pub fn entry(&self, action: &str) -> Option<&Action> {
        self.actions.get(action)
    }

    /// Action names, sorted.
    pub fn actions(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }

    /// Actions by name, sorted.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Action)> {
        self.actions.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Record what a kind in use says for `/health` (see [`Kind::health`]).
    pub fn add_kind_health(&mut self, kind: &str, health: Value) {
        self.kinds.retain(|(k, _)| k != kind);
        self.kinds.push((kind.to_string(), health));
    }

    /// What each kind in use said for `/health`.
    pub fn kind_health(&self) -> &[(String, Value)] {
        &self.kinds
    }
}
