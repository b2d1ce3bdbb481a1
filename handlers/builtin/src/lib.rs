//! # openexec-builtin: the built-in actions
//!
//! The actions of SPEC §8 every OpenExec serves unless configured otherwise: `echo` (answers its
//! payload), `add` (two JSON numbers, exactly), `sleep` (waits `ms`, at most [`SLEEP_MAX_MS`],
//! and stops when cancelled). `echo` and `add` have no effects; `sleep` counts as one that has
//! (it stands in for an action whose second run could be observed). Each is a [`Handler`] like
//! any other kind; its digest is the hash of `{"handler": "builtin:<name>", "version": 1}`.
//!
//! A new handler kind is a crate beside this one under `handlers/`, depending on
//! `openexec-handler` only (ARCHITECTURE.md, "Adding a handler kind").
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use openexec_handler::slots::kind_of;
#[cfg(test)]
use openexec_handler::CancellationToken;
use openexec_handler::{Handler, HandlerError, HandlerFuture, Invalid, Invocation, Registry};
use serde_json::{json, Value};

/// A registry of the built-in actions: `echo`, `add`, `sleep`.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    register(&mut r);
    r
}

/// Put the built-in actions into `r` (beside an embedder's own).
pub fn register(r: &mut Registry) {
    r.register("echo", Arc::new(Builtin::new("echo", BuiltinKind::Echo)));
    r.register("add", Arc::new(Builtin::new("add", BuiltinKind::Add)));
    r.register("sleep", Arc::new(Builtin::new("sleep", BuiltinKind::Sleep)));
}

/// The `builtin` kind of the registry file (SPEC §10): an action declared with its own name,
/// schema and floor whose handler is one of the built-ins.
///
/// ```toml
/// [actions.delete_resource]
/// kind = "builtin"
/// schema = { type = "object", required = ["env", "id"] }
/// min_approvers = 2
/// [actions.delete_resource.builtin]
/// handler = "echo"        # echo | add | sleep
/// ```
/// Its receipts name `builtin:<action>` and the digest of its config entry. `effects` defaults
/// to false for `echo` and `add`, true for `sleep`.
pub struct Builtins;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BuiltinSettings {
    handler: String,
}

fn builtin_kind(settings: &BuiltinSettings) -> Result<BuiltinKind, String> {
    match settings.handler.as_str() {
        "echo" => Ok(BuiltinKind::Echo),
        "add" => Ok(BuiltinKind::Add),
        "sleep" => Ok(BuiltinKind::Sleep),
        other => Err(format!(
            "handler: unknown built-in '{other}'; the built-ins are echo, add and sleep"
        )),
    }
}

impl openexec_handler::Kind for Builtins {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn default_effects(&self, settings: &Value) -> bool {
        settings.get("handler").and_then(Value::as_str) == Some("sleep")
    }

    fn build(&self, spec: &openexec_handler::Spec<'_>) -> Result<Arc<dyn Handler>, String> {
        let kind = builtin_kind(&spec.settings()?)?;
        Ok(Arc::new(Builtin {
            name: format!("builtin:{}", spec.action),
            digest: spec.digest.to_string(),
            kind,
            effects: spec.effects,
            timeout: spec.timeout,
        }))
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
    effects: bool,
    timeout: Duration,
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
            effects: matches!(kind, BuiltinKind::Sleep),
            timeout: Duration::from_millis(SLEEP_MAX_MS) + Duration::from_secs(5),
        }
    }

    /// The payload checks of SPEC §8, each with its message.
    fn check(&self, payload: &Value) -> Result<(), String> {
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
        self.effects
    }

    /// Long enough for the longest `sleep`, unless the registry file says otherwise.
    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn description(&self) -> &str {
        match self.kind {
            BuiltinKind::Echo => "Answers its payload: {\"echo\": payload}",
            BuiltinKind::Add => "Adds two numbers: {\"sum\": a + b}",
            BuiltinKind::Sleep => {
                "Waits payload.ms milliseconds (at most 10000), then answers {\"slept_ms\": ms}"
            }
        }
    }

    fn input_schema(&self) -> Value {
        match self.kind {
            BuiltinKind::Echo => json!({"type": "object"}),
            BuiltinKind::Add => json!({
                "type": "object",
                "required": ["a", "b"],
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}}
            }),
            BuiltinKind::Sleep => json!({
                "type": "object",
                "required": ["ms"],
                "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": SLEEP_MAX_MS}}
            }),
        }
    }

    fn validate(&self, payload: &Value) -> Result<(), Invalid> {
        self.check(payload).map_err(Invalid::new)
    }

    fn run<'a>(&'a self, inv: &'a Invocation<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            let bad = |message: String| HandlerError::new("invalid_payload", message);
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
        let reg = registry();
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
        let reg = registry();
        let h = reg.get("add").unwrap();
        for (a, b) in [
            (json!(big), json!(big)),
            (json!(big), json!(1)),
            (json!(-(big as i64)), json!(-1)),
            (json!(1e16), json!(0.5)), // a float written as 10000000000000000
        ] {
            let e = h.validate(&json!({"a": a, "b": b})).unwrap_err();
            assert!(e.message.contains("range"), "{a} + {b}: {e}");
        }
        // large floats written with an exponent are fine
        assert_eq!(
            run("add", json!({"a": 1e300, "b": 1e300})).unwrap(),
            json!({"sum": 2e300})
        );
    }

    #[test]
    fn add_rejects_non_numbers_in_validation() {
        let reg = registry();
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
        let reg = registry();
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
        let reg = registry();
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
        let a = registry();
        let b = registry();
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
