//! # openexec-handler: the handler API
//!
//! The one trait every action runs behind ([`Handler`]), the [`Registry`] of actions by name, and
//! the built-in actions of SPEC §8 (`echo`, `add`, `sleep`).
//!
//! A handler declares how its payload is validated (before anything is claimed, so a bad payload
//! never uses up a nonce), whether running it twice could be observed outside
//! ([`Handler::effects`]), and how long it may run ([`Handler::timeout`]); it runs with the
//! validated payload, a deadline and a cancellation token ([`Invocation`]). Its `name` and
//! `digest` go into every receipt, pinning exactly what ran. Later kinds (HTTP with one
//! configured destination, WebAssembly under wasmtime, commands without a shell) and embedders'
//! own handlers implement the same trait and are put in a [`Registry`]; the engine that runs them
//! does not know which kind it runs.
//!
//! What it leaves to others: claims, receipts and the at-most-once guarantee are the execution
//! service's; the service enforces the timeout (a handler that overruns is cut off whatever it
//! does with its deadline) and decides what a cut-off run becomes (SPEC §5: `failed` with
//! `handler_timeout` for a handler without effects, `interrupted` for one with effects).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
pub use tokio_util::sync::CancellationToken;

/// The future a handler returns.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send + 'a>>;

/// How long a handler may run when it does not say ([`Handler::timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A handler that started but did not produce a result. The request counts as `failed`: its
/// nonce is used up and it is never re-run by itself.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// A short machine-readable code, recorded in the receipt.
    pub code: String,
    pub message: String,
}

impl HandlerError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> HandlerError {
        HandlerError {
            code: code.into(),
            message: message.into(),
        }
    }
}

pub trait Handler: Send + Sync {
    /// The name recorded in receipts, e.g. `builtin:echo`.
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
    /// Check the payload before anything is claimed. `Err` is a 400 `invalid_payload` with this
    /// message.
    fn validate(&self, payload: &Value) -> Result<(), String>;
    /// Run the action. Called at most once per (tenant, nonce), after the claim is durable.
    fn run<'a>(&'a self, inv: &'a Invocation<'a>) -> HandlerFuture<'a>;
}

/// Actions by name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn register(&mut self, action: &str, handler: Arc<dyn Handler>) {
        self.handlers.insert(action.to_string(), handler);
    }

    pub fn get(&self, action: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(action)
    }

    pub fn actions(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}
