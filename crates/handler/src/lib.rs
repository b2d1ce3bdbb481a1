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

use serde_json::{json, Value};
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

    /// The built-in actions of SPEC §8: `echo`, `add`, `sleep`.
    pub fn builtin() -> Registry {
        let mut r = Registry::new();
        r.register("echo", Arc::new(Builtin::new("echo", BuiltinKind::Echo)));
        r.register("add", Arc::new(Builtin::new("add", BuiltinKind::Add)));
        r.register("sleep", Arc::new(Builtin::new("sleep", BuiltinKind::Sleep)));
        r
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

#[derive(Debug, Clone, Copy)]
enum BuiltinKind {
    Echo,
    Add,
    Sleep,
}

/// The longest `sleep` accepts, in milliseconds.
pub const SLEEP_MAX_MS: u64 = 10_000;

struct Builtin {
    name: String,
    digest: String,
    kind: BuiltinKind,
}

impl Builtin {
    fn new(action: &str, kind: BuiltinKind) -> Builtin {
        let name = format!("builtin:{action}");
        // The config entry of a built-in is its name and version; its hash pins what ran.
        let entry = json!({"handler": name, "version": 1});
        Builtin {
            digest: openexec_core::json::jcs_sha256(&entry),
            name,
            kind,
        }
    }
}

/// The number as a JSON number a handler can compute with; bools and strings are not numbers.
fn number(payload: &Value, field: &str) -> Result<serde_json::Number, String> {
    match payload.get(field) {
        Some(Value::Number(n)) => Ok(n.clone()),
        Some(other) => Err(format!(
            "add needs numbers: field '{field}' is {}",
            kind_of(other)
        )),
        None => Err(format!("add needs numbers: field '{field}' is missing")),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `a + b`: two integers add exactly; otherwise the sum is a float. A sum that canonical JSON
/// would write as a number other parties cannot hash the same way (an integer, or a float
/// written without fraction or exponent, beyond ±(2^53−1): SPEC §2) is refused, so a result is
/// always one the service itself can verify again.
fn add(a: &serde_json::Number, b: &serde_json::Number) -> Result<Value, String> {
    const MAX: i64 = openexec_core::json::MAX_SAFE_INTEGER as i64;
    let out_of_range = || {
        format!(
            "add: the sum of {a} and {b} is outside the range of numbers every party hashes alike (±(2^53−1)); send smaller numbers"
        )
    };
    let sum = match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => {
            let s = x.checked_add(y).ok_or_else(out_of_range)?;
            if !(-MAX..=MAX).contains(&s) {
                return Err(out_of_range());
            }
            json!({ "sum": s })
        }
        _ => {
            let s = a.as_f64().unwrap_or(f64::NAN) + b.as_f64().unwrap_or(f64::NAN);
            let n = serde_json::Number::from_f64(s)
                .ok_or_else(|| "add: the sum is not a finite number".to_string())?;
            json!({ "sum": n })
        }
    };
    // What is hashed is the canonical text: it must read back as I-JSON.
    let text = openexec_core::json::canonicalize(&sum);
    openexec_core::json::parse_ijson(&text, 4).map_err(|_| out_of_range())?;
    Ok(sum)
}

fn sleep_ms(payload: &Value) -> Result<u64, String> {
    match payload.get("ms") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(ms) if ms <= SLEEP_MAX_MS => Ok(ms),
            _ => Err(format!(
                "sleep: 'ms' must be a whole number from 0 to {SLEEP_MAX_MS}, got {n}"
            )),
        },
        Some(other) => Err(format!(
            "sleep: 'ms' must be a whole number, got {}",
            kind_of(other)
        )),
        None => Err("sleep: field 'ms' is missing".into()),
    }
}

impl Handler for Builtin {
    fn name(&self) -> &str {
        &self.name
    }

    fn digest(&self) -> &str {
        &self.digest
    }

    /// `echo` and `add` are pure. `sleep` counts as having effects: it stands in for an action
    /// whose claim must be durable before it starts (timeouts, shutdown and races are exercised
    /// with it).
    fn effects(&self) -> bool {
        matches!(self.kind, BuiltinKind::Sleep)
    }

    /// Long enough for the longest `sleep`.
    fn timeout(&self) -> Duration {
        Duration::from_millis(SLEEP_MAX_MS) + Duration::from_secs(5)
    }

    fn validate(&self, payload: &Value) -> Result<(), String> {
        match self.kind {
            BuiltinKind::Echo => Ok(()),
            BuiltinKind::Add => {
                if !payload.is_object() {
                    return Err(format!(
                        "add needs an object {{\"a\": number, \"b\": number}}, got {}",
                        kind_of(payload)
                    ));
                }
                add(&number(payload, "a")?, &number(payload, "b")?).map(|_| ())
            }
            BuiltinKind::Sleep => {
                if !payload.is_object() {
                    return Err(format!(
                        "sleep needs an object {{\"ms\": number}}, got {}",
                        kind_of(payload)
                    ));
                }
                sleep_ms(payload).map(|_| ())
            }
        }
    }

    fn run<'a>(&'a self, inv: &'a Invocation<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            let bad = |message: String| HandlerError {
                code: "invalid_payload".into(),
                message,
            };
            match self.kind {
                BuiltinKind::Echo => Ok(json!({ "echo": inv.payload })),
                BuiltinKind::Add => add(
                    &number(inv.payload, "a").map_err(bad)?,
                    &number(inv.payload, "b").map_err(bad)?,
                )
                .map_err(bad),
                BuiltinKind::Sleep => {
                    let ms = sleep_ms(inv.payload).map_err(bad)?;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!({ "slept_ms": ms })),
                        _ = inv.cancel.cancelled() => Err(HandlerError::new(
                            "cancelled",
                            "sleep was cancelled before it finished",
                        )),
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(action: &str, payload: Value) -> Result<Value, HandlerError> {
        let reg = Registry::builtin();
        let h = reg.get(action).unwrap().clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let inv = Invocation {
                exec_id: "x",
                tenant_id: "t",
                action,
                nonce: "n",
                payload: &payload,
                deadline: tokio::time::Instant::now() + h.timeout(),
                cancel: CancellationToken::new(),
            };
            h.run(&inv).await
        })
    }

    #[test]
    fn echo_and_add() {
        assert_eq!(
            run("echo", json!({"m": 1})).unwrap(),
            json!({"echo": {"m": 1}})
        );
        assert_eq!(
            run("add", json!({"a": 2, "b": 40})).unwrap(),
            json!({"sum": 42})
        );
        assert_eq!(
            run("add", json!({"a": 0.5, "b": 1})).unwrap(),
            json!({"sum": 1.5})
        );
        let big = openexec_core::json::MAX_SAFE_INTEGER;
        // integers add exactly up to the edge of the safe range
        assert_eq!(
            run("add", json!({"a": big - 1, "b": 1})).unwrap(),
            json!({"sum": big})
        );
        assert_eq!(
            run("add", json!({"a": -(big as i64), "b": 0})).unwrap(),
            json!({"sum": -(big as i64)})
        );
        // beyond it the sum is refused, never a number other parties cannot hash alike
        let reg = Registry::builtin();
        let h = reg.get("add").unwrap();
        for (a, b) in [
            (json!(big), json!(big)),
            (json!(big), json!(1)),
            (json!(-(big as i64)), json!(-1)),
            (json!(1e16), json!(0.5)), // a float written as 10000000000000000
        ] {
            let e = h.validate(&json!({"a": a, "b": b})).unwrap_err();
            assert!(e.contains("range"), "{a} + {b}: {e}");
        }
        // large floats written with an exponent are fine
        assert_eq!(
            run("add", json!({"a": 1e300, "b": 1e300})).unwrap(),
            json!({"sum": 2e300})
        );
    }

    #[test]
    fn add_rejects_non_numbers_in_validation() {
        let reg = Registry::builtin();
        let h = reg.get("add").unwrap();
        for p in [
            json!({"a": "x", "b": 1}),
            json!({"a": true, "b": 1}),
            json!({"a": 1}),
            json!([1, 2]),
            json!("s"),
        ] {
            assert!(h.validate(&p).is_err(), "{p}");
        }
        assert!(h.validate(&json!({"a": 1, "b": 2})).is_ok());
    }

    #[test]
    fn sleep_bounds() {
        let reg = Registry::builtin();
        let h = reg.get("sleep").unwrap();
        assert!(h.validate(&json!({"ms": 10_001})).is_err());
        assert!(h.validate(&json!({"ms": -1})).is_err());
        assert!(h.validate(&json!({"ms": 1.5})).is_err());
        assert!(h.validate(&json!({})).is_err());
        assert_eq!(
            run("sleep", json!({"ms": 1})).unwrap(),
            json!({"slept_ms": 1})
        );
    }

    #[test]
    fn sleep_stops_when_cancelled() {
        let reg = Registry::builtin();
        let h = reg.get("sleep").unwrap().clone();
        assert!(h.effects());
        assert!(!reg.get("echo").unwrap().effects());
        assert!(!reg.get("add").unwrap().effects());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let payload = json!({"ms": 10_000});
        let e = rt.block_on(async {
            let cancel = CancellationToken::new();
            let inv = Invocation {
                exec_id: "x",
                tenant_id: "t",
                action: "sleep",
                nonce: "n",
                payload: &payload,
                deadline: tokio::time::Instant::now() + h.timeout(),
                cancel: cancel.clone(),
            };
            let started = tokio::time::Instant::now();
            let run = h.run(&inv);
            let canceller = async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                cancel.cancel();
            };
            let (r, ()) = tokio::join!(run, canceller);
            (r, started.elapsed())
        });
        assert_eq!(e.0.unwrap_err().code, "cancelled");
        assert!(e.1 < Duration::from_secs(1), "{:?}", e.1);
    }

    #[test]
    fn digests_differ_and_are_stable() {
        let a = Registry::builtin();
        let b = Registry::builtin();
        assert_eq!(
            a.get("echo").unwrap().digest(),
            b.get("echo").unwrap().digest()
        );
        assert_ne!(
            a.get("echo").unwrap().digest(),
            a.get("add").unwrap().digest()
        );
        assert_eq!(a.get("echo").unwrap().digest().len(), 64);
    }
}
