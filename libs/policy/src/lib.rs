//! ClawShield's policy library (SPEC §9): policy as code with OPA/Rego, evaluated by the
//! [`regorus`] interpreter. Pure: no HTTP, no database; it reads files only in [`Bundle::load`].
//!
//! # Bundle
//!
//! A bundle is a directory holding every `*.rego` file below it (subfolders allowed, symbolic
//! links refused) plus an optional top-level `data.json` (I-JSON, parsed with
//! [`openexec_core::json::parse_ijson`], loaded as `data`). Other files are ignored and are not
//! part of the hash. Files are taken in the order of their relative path (with `/` separators,
//! compared bytewise). Policies are Rego v1. Test files (`*_test.rego`) are part of the bundle:
//! they are compiled, hashed and run by [`Bundle::test`].
//!
//! # Policy hash
//!
//! [`Bundle::policy_hash`] is the lowercase hex SHA-256 of the RFC 8785 (JCS) bytes of
//!
//! ```json
//! {"data": <the data.json value, or null when there is none>,
//!  "files": {"<relative path with />": "<the file's text>", ...}}
//! ```
//!
//! where `files` holds every `.rego` file of the bundle, test files included, each text exactly
//! as read (UTF-8, no newline normalisation). The same bundle copied anywhere hashes the same;
//! any change to a policy file, a test file or `data.json` (other than how `data.json` is
//! formatted) changes the hash.
//!
//! # The decision rule
//!
//! The decision is the value of the rule `data.clawshield.decision` (so one of the bundle's
//! files is `package clawshield` and defines `decision`; [`DECISION_RULE`]).
//!
//! # Input
//!
//! [`Bundle::evaluate`] passes its argument as `input`. ClawShield gives:
//!
//! ```json
//! {"action": "charge_card", "payload": {...}, "tenant_id": "t1",
//!  "intent_hash": "<hex>", "request_hash": "<hex>", "nonce": "...", "context": <agent's JSON or null>,
//!  "agent": {"id": "agent-1", "tenant_id": "t1", "on_behalf_of": "alice" | null},
//!  "limits": {"rate": {"window_seconds": 60, "count": 3},
//!             "loop": {"same_request": 1, "same_intent": 2},
//!             "budget": {"used": 250000, "left": 99750000}}}
//! ```
//!
//! # Output
//!
//! The decision rule must yield an object with exactly these keys (no others):
//!
//! | key | type | |
//! |---|---|---|
//! | `effect` | `"allow"` \| `"deny"` \| `"require_approval"` | required |
//! | `reasons` | array of strings | optional, default `[]` |
//! | `rules` | array of strings (which rules decided) | optional, default `[]` |
//! | `approval` | object, below | required for `require_approval`, absent or `null` otherwise |
//! | `cost` | integer, 0 ..= 2^53−1 (minor units counted against the budget) | optional, default 0 |
//! | `expires_in_seconds` | integer, 1 ..= [`MAX_TTL_SECONDS`] | optional |
//!
//! `approval` = `{"min": 1..=100, "groups": [non-empty strings, 1..=64 of them, any one of which
//! makes an approver eligible], "deny_threshold": 1..=100 (default 1), "ttl_seconds":
//! 1..=MAX_TTL_SECONDS (default 3600), "reason_required": bool (default false)}`, again with no
//! other keys. Strings are at most [`MAX_STRING_LEN`] bytes, arrays at most [`MAX_LIST_LEN`].
//!
//! The resulting [`Decision`] has `code` `policy_allowed`, `approval_required` or
//! `policy_denied`. Anything going wrong — no bundle ([`Decision::policy_error`]), a bundle that
//! does not load, an evaluation error (a conflict, a strict builtin error, an undefined decision),
//! a malformed answer, a panic inside the interpreter, or an evaluation past its time limit — is a
//! deny with code `policy_error`: the gate fails closed. [`Bundle::evaluate`] never panics and
//! never returns an error.
//!
//! # Limits
//!
//! Each evaluation runs on a fresh clone of the compiled engine with regorus's execution timer
//! ([`regorus::utils::limits::ExecutionTimerConfig`]) set to [`Bundle::time_limit`] (default
//! [`DEFAULT_TIME_LIMIT`]), checked every [`TIMER_CHECK_INTERVAL`] work units of the
//! interpreter; past it the interpreter stops with an error, which becomes `policy_error`. Policy
//! files are bounded by regorus's default length limits (1 MiB, 20 000 lines, 1024 columns).
//! The timer interrupts the interpreter's loops, not the inside of one builtin call: a policy is
//! code installed by administrators (under quorum, `clawshield.policy.activate`), and a builtin
//! asked to build an astronomically large value in one call (e.g. `numbers.range(0, 1e15)`) may
//! exhaust memory before the timer is consulted.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use regorus::Engine;
use serde::Serialize;
use serde_json::{Map, Value};

/// The rule whose value is the decision.
pub const DECISION_RULE: &str = "data.clawshield.decision";
/// Default bound on one evaluation's interpreter time.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_millis(500);
/// How many interpreter work units pass between two looks at the clock.
pub const TIMER_CHECK_INTERVAL: u32 = 64;
/// Largest `ttl_seconds` / `expires_in_seconds` accepted (30 days).
pub const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;
/// Longest string accepted in the output (reasons, rules, groups), in bytes.
pub const MAX_STRING_LEN: usize = 1024;
/// Longest array accepted in the output.
pub const MAX_LIST_LEN: usize = 64;
/// Deepest nesting accepted in `data.json`.
pub const MAX_DATA_DEPTH: usize = 64;
/// The code of a decision that failed closed.
pub const POLICY_ERROR: &str = "policy_error";
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a bundle could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The directory or one of its files could not be read.
    #[error("policy bundle: cannot read {path}: {message}")]
    Io {
        /// The path that failed.
        path: String,
        /// The operating system's reason.
        message: String,
    },
    /// The bundle holds no `.rego` file.
    #[error("policy bundle {0}: no .rego file")]
    Empty(String),
    /// An entry the loader refuses (a symbolic link, a path that is not UTF-8).
    #[error("policy bundle: {path}: {message}")]
    Unsupported {
        /// Relative path of the entry.
        path: String,
        /// Why.
        message: String,
    },
    /// `data.json` is not I-JSON, or not an object.
    #[error("policy bundle: data.json: {0}")]
    Data(String),
    /// A policy file does not parse or compile; the message is regorus's, with the line.
    #[error("policy bundle: {file}: {message}")]
    Compile {
        /// Relative path of the file (or `<bundle>` when the whole bundle fails to compile).
        file: String,
        /// regorus's message (it names the line and column when it knows them).
        message: String,
    },
    /// No file declares the decision rule.
    #[error("policy bundle: no rule {DECISION_RULE}")]
    NoDecisionRule,
}

/// What the policy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Approved automatically.
    Allow,
    /// Refused.
    Deny,
    /// Held until a quorum of approvers agrees.
    RequireApproval,
}

impl Effect {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::RequireApproval => "require_approval",
        }
    }
}

/// The quorum a `require_approval` decision asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    /// Approvals needed.
    pub min: u32,
    /// Groups whose members may vote (membership in any one suffices).
    pub groups: Vec<String>,
    /// Denials that deny the proposal.
    pub deny_threshold: u32,
    /// How long the proposal waits for its quorum.
    pub ttl_seconds: u64,
    /// Whether a vote must carry a reason.
    pub reason_required: bool,
}

/// A decision: what the gate does with a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The effect.
    pub effect: Effect,
    /// `policy_allowed`, `approval_required`, `policy_denied` or `policy_error`.
    pub code: String,
    /// Human-readable reasons (for `policy_error`, what went wrong).
    pub reasons: Vec<String>,
    /// Which rules decided.
    pub rules: Vec<String>,
    /// The quorum, for `require_approval`.
    pub approval: Option<Approval>,
    /// Cost counted against the tenant's budget (minor units).
    pub cost: u64,
    /// How long an issued approval stays valid, if the policy says.
    pub expires_in_seconds: Option<u64>,
    /// The bundle's hash, when a bundle was loaded.
    pub policy_hash: Option<String>,
}

impl Decision {
    /// A fail-closed deny: code `policy_error`, `reason` as the only reason.
    pub fn policy_error(reason: impl Into<String>, policy_hash: Option<String>) -> Decision {
        Decision {
            effect: Effect::Deny,
            code: POLICY_ERROR.to_string(),
            reasons: vec![reason.into()],
            rules: Vec::new(),
            approval: None,
            cost: 0,
            expires_in_seconds: None,
            policy_hash,
        }
    }

    /// Whether this decision failed closed.
    pub fn is_policy_error(&self) -> bool {
        self.code == POLICY_ERROR
    }
}

/// Evaluate with `bundle`, or fail closed when there is none.
pub fn evaluate_or_deny(bundle: Option<&Bundle>, input: &Value) -> Decision {
    match bundle {
        Some(b) => b.evaluate(input),
        None => Decision::policy_error("no policy bundle is loaded", None),
    }
}

/// One Rego unit test's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestResult {
    /// `data.<package>.<rule>`.
    pub name: String,
    /// The file declaring it.
    pub file: String,
    /// Whether the rule evaluated to `true`.
    pub passed: bool,
    /// Why it failed (undefined, false, an error).
    pub message: Option<String>,
}

/// The outcome of [`Bundle::test`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestReport {
    /// Every test, in file order.
    pub results: Vec<TestResult>,
}

impl TestReport {
    /// Tests that passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }
    /// Tests that failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
    /// Whether there is at least one test and all passed.
    pub fn ok(&self) -> bool {
        !self.results.is_empty() && self.failed() == 0
    }
}

/// A loaded, compiled policy bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    engine: Engine,
    /// Engines that evaluated before, ready for the next evaluation (a clone of `engine` costs
    /// about as much as a small evaluation); shared by the clones of this bundle.
    idle: std::sync::Arc<std::sync::Mutex<Vec<Engine>>>,
    files: BTreeMap<String, String>,
    data: Option<Value>,
    hash: String,
    time_limit: Duration,
}

fn io_err(path: &Path, e: std::io::Error) -> PolicyError {
    PolicyError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn collect(
    root: &Path,
    dir: &Path,
    files: &mut BTreeMap<String, String>,
) -> Result<(), PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(|e| io_err(&path, e))?;
        let rel = relative(root, &path)?;
        if ty.is_symlink() {
            return Err(PolicyError::Unsupported {
                path: rel,
                message: "symbolic links are not supported in a bundle".into(),
            });
        }
        if ty.is_dir() {
            collect(root, &path, files)?;
        } else if ty.is_file() && rel.ends_with(".rego") {
            let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
            files.insert(rel, text);
        }
    }
    Ok(())
}

fn relative(root: &Path, path: &Path) -> Result<String, PolicyError> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut parts = Vec::new();
    for c in rel.components() {
        match c.as_os_str().to_str() {
            Some(s) => parts.push(s.to_string()),
            None => {
                return Err(PolicyError::Unsupported {
                    path: rel.display().to_string(),
                    message: "path is not UTF-8".into(),
                })
            }
        }
    }
    Ok(parts.join("/"))
}

/// The canonical bytes hashed into `policy_hash` (see the crate docs).
fn canonical_value(files: &BTreeMap<String, String>, data: &Option<Value>) -> Value {
    let files: Map<String, Value> = files
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    serde_json::json!({"files": files, "data": data.clone().unwrap_or(Value::Null)})
}

/// `package a.b.c` of a Rego file (the first line that starts with `package`).
fn package_of(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let l = l.trim();
        let rest = l.strip_prefix("package")?;
        if !rest.starts_with(char::is_whitespace) {
            return None;
        }
        let name = rest.split('#').next()?.trim();
        (!name.is_empty()).then(|| name.to_string())
    })
}

/// Names of the rules `test_*` declared at the start of a line (OPA's convention).
fn tests_of(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if !line.starts_with("test_") {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

impl Bundle {
    /// Load and compile the bundle in `dir` (see the crate docs for what it holds).
    pub fn load(dir: impl AsRef<Path>) -> Result<Bundle, PolicyError> {
        let dir: PathBuf = dir.as_ref().to_path_buf();
        let meta = std::fs::metadata(&dir).map_err(|e| io_err(&dir, e))?;
        if !meta.is_dir() {
            return Err(PolicyError::Io {
                path: dir.display().to_string(),
                message: "not a directory".into(),
            });
        }
        let mut files = BTreeMap::new();
        collect(&dir, &dir, &mut files)?;
        if files.is_empty() {
            return Err(PolicyError::Empty(dir.display().to_string()));
        }
        let data_path = dir.join("data.json");
        let data = match std::fs::symlink_metadata(&data_path) {
            Ok(m) if m.is_file() => {
                let bytes = std::fs::read(&data_path).map_err(|e| io_err(&data_path, e))?;
                let v = openexec_core::json::parse_ijson(&bytes, MAX_DATA_DEPTH)
                    .map_err(|e| PolicyError::Data(e.to_string()))?;
                if !v.is_object() {
                    return Err(PolicyError::Data("must be a JSON object".into()));
                }
                Some(v)
            }
            Ok(_) => {
                return Err(PolicyError::Unsupported {
                    path: "data.json".into(),
                    message: "not a regular file".into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&data_path, e)),
        };
        Self::from_parts(files, data)
    }

    /// Build a bundle from file texts (relative path → Rego text) and an optional `data` value,
    /// as [`Bundle::load`] does after reading the directory.
    pub fn from_parts(
        files: BTreeMap<String, String>,
        data: Option<Value>,
    ) -> Result<Bundle, PolicyError> {
        if files.is_empty() {
            return Err(PolicyError::Empty("<memory>".into()));
        }
        let compiled = catch_unwind(AssertUnwindSafe(|| compile(&files, &data)));
        let engine = match compiled {
            Ok(r) => r?,
            Err(_) => {
                return Err(PolicyError::Compile {
                    file: "<bundle>".into(),
                    message: "the Rego compiler panicked".into(),
                })
            }
        };
        let hash = openexec_core::json::jcs_sha256(&canonical_value(&files, &data));
        Ok(Bundle {
            engine,
            idle: Default::default(),
            files,
            data,
            hash,
            time_limit: DEFAULT_TIME_LIMIT,
        })
    }

    /// The bundle's hash (see the crate docs for the exact bytes).
    pub fn policy_hash(&self) -> &str {
        &self.hash
    }

    /// The bundle's files: relative path → text.
    pub fn files(&self) -> &BTreeMap<String, String> {
        &self.files
    }

    /// The bundle's `data.json`, if any.
    pub fn data(&self) -> Option<&Value> {
        self.data.as_ref()
    }

    /// The bound on one evaluation's interpreter time.
    pub fn time_limit(&self) -> Duration {
        self.time_limit
    }

    /// The same bundle with another time limit per evaluation (and per Rego test).
    pub fn with_time_limit(mut self, limit: Duration) -> Bundle {
        self.time_limit = limit;
        self
    }

    /// Most idle engines kept (one per thread that evaluates at once is plenty).
    const IDLE_ENGINES: usize = 64;

    fn engine_for_run(&self) -> Engine {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut engine = idle.unwrap_or_else(|| self.engine.clone());
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: self.time_limit,
            check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
        });
        engine
    }

    /// Evaluate [`DECISION_RULE`] with `input`. Never panics; every failure is a deny with code
    /// `policy_error`.
    pub fn evaluate(&self, input: &Value) -> Decision {
        let hash = Some(self.hash.clone());
        let run = catch_unwind(AssertUnwindSafe(|| {
            let mut engine = self.engine_for_run();
            engine.set_input(regorus::Value::from(input.clone()));
            let r = engine
                .eval_rule(DECISION_RULE.to_string())
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    if v == regorus::Value::Undefined {
                        Err(format!("{DECISION_RULE} is undefined"))
                    } else {
                        serde_json::to_value(&v).map_err(|e| e.to_string())
                    }
                });
            // Kept for the next evaluation (each starts by clearing the last one's state); an
            // engine whose evaluation panicked never gets here.
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < Self::IDLE_ENGINES {
                    idle.push(engine);
                }
            }
            r
        }));
        let value = match run {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                return Decision::policy_error(format!("evaluation failed: {e}"), hash);
            }
            Err(_) => return Decision::policy_error("evaluation panicked", hash),
        };
        match parse_output(&value) {
            Ok(mut d) => {
                d.policy_hash = hash;
                d
            }
            Err(e) => Decision::policy_error(format!("malformed decision: {e}"), hash),
        }
    }

    /// Run every rule named `test_*` (declared at the start of a line) in every file of the
    /// bundle; a test passes when it evaluates to `true` within the time limit.
    pub fn test(&self) -> TestReport {
        let mut results = Vec::new();
        for (file, text) in &self.files {
            let Some(pkg) = package_of(text) else {
                continue;
            };
            for name in tests_of(text) {
                let full = format!("data.{pkg}.{name}");
                let run = catch_unwind(AssertUnwindSafe(|| {
                    let mut engine = self.engine_for_run();
                    engine.set_input(regorus::Value::new_object());
                    engine.eval_rule(full.clone()).map_err(|e| e.to_string())
                }));
                let (passed, message) = match run {
                    Ok(Ok(regorus::Value::Bool(true))) => (true, None),
                    Ok(Ok(regorus::Value::Undefined)) => (false, Some("undefined".to_string())),
                    Ok(Ok(v)) => (false, Some(format!("evaluated to {v}"))),
                    Ok(Err(e)) => (false, Some(e)),
                    Err(_) => (false, Some("panicked".to_string())),
                };
                results.push(TestResult {
                    name: full,
                    file: file.clone(),
                    passed,
                    message,
                });
            }
        }
        TestReport { results }
    }
}

fn compile(files: &BTreeMap<String, String>, data: &Option<Value>) -> Result<Engine, PolicyError> {
    let mut engine = Engine::new();
    engine.set_rego_v0(false);
    // Builtin errors (a bad argument type, …) are evaluation errors, not silently undefined.
    engine.set_strict_builtin_errors(true);
    for (path, text) in files {
        engine
            .add_policy(path.clone(), text.clone())
            .map_err(|e| PolicyError::Compile {
                file: path.clone(),
                message: e.to_string().trim().to_string(),
            })?;
    }
    if let Some(d) = data {
        engine
            .add_data(regorus::Value::from(d.clone()))
            .map_err(|e| PolicyError::Data(e.to_string()))?;
    }
    let declared = files.keys().any(|path| {
        package_of(&files[path]).as_deref() == Some("clawshield")
            && engine
                .has_declared_rule_rooted_at(path, "decision")
                .unwrap_or(false)
    });
    if !declared {
        return Err(PolicyError::NoDecisionRule);
    }
    // Force the whole bundle through the compiler now (regorus compiles lazily, on first
    // evaluation) so a bundle that cannot be evaluated fails to load instead. This is done on
    // the engine that is kept: it stays prepared (analysed, scheduled, rules gathered), so each
    // evaluation's clone starts from there instead of preparing again (about two thirds of an
    // evaluation's time with a bundle of 100 rules).
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: DEFAULT_TIME_LIMIT,
        check_interval: NonZeroU32::MIN,
    });
    engine
        .eval_query("true".to_string(), false)
        .map_err(|e| PolicyError::Compile {
            file: "<bundle>".into(),
            message: e.to_string(),
        })?;
    Ok(engine)
}

fn get_str_list(v: Option<&Value>, key: &str, required: bool) -> Result<Vec<String>, String> {
    let Some(v) = v else {
        return if required {
            Err(format!("{key} is missing"))
        } else {
            Ok(Vec::new())
        };
    };
    let arr = v
        .as_array()
        .ok_or_else(|| format!("{key} must be an array of strings"))?;
    if arr.len() > MAX_LIST_LEN {
        return Err(format!("{key} has more than {MAX_LIST_LEN} entries"));
    }
    arr.iter()
        .map(|s| match s.as_str() {
            Some(s) if s.len() <= MAX_STRING_LEN => Ok(s.to_string()),
            Some(_) => Err(format!(
                "{key}: a string longer than {MAX_STRING_LEN} bytes"
            )),
            None => Err(format!("{key} must be an array of strings")),
        })
        .collect()
}

/// An integer in `lo..=hi` (a JSON number with no fractional part: regorus may hand back `2.0`).
fn get_int(
    v: Option<&Value>,
    key: &str,
    lo: u64,
    hi: u64,
    default: Option<u64>,
) -> Result<u64, String> {
    let v = match v {
        None | Some(Value::Null) => {
            return default.ok_or_else(|| format!("{key} is missing"));
        }
        Some(v) => v,
    };
    let n = if let Some(n) = v.as_u64() {
        Some(n)
    } else if let Some(f) = v.as_f64() {
        (f.fract() == 0.0 && f >= 0.0 && f <= MAX_SAFE_INTEGER as f64).then_some(f as u64)
    } else {
        None
    };
    match n {
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!("{key} must be an integer in {lo}..={hi}")),
    }
}

fn check_keys(obj: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown key {k:?} in {what}")),
        None => Ok(()),
    }
}

fn parse_approval(v: &Value) -> Result<Approval, String> {
    let obj = v.as_object().ok_or("approval must be an object")?;
    check_keys(
        obj,
        &[
            "min",
            "groups",
            "deny_threshold",
            "ttl_seconds",
            "reason_required",
        ],
        "approval",
    )?;
    let min = get_int(obj.get("min"), "approval.min", 1, 100, None)? as u32;
    let groups = get_str_list(obj.get("groups"), "approval.groups", true)?;
    if groups.is_empty() || groups.iter().any(|g| g.is_empty()) {
        return Err("approval.groups must be a non-empty array of non-empty strings".into());
    }
    let deny_threshold = get_int(
        obj.get("deny_threshold"),
        "approval.deny_threshold",
        1,
        100,
        Some(1),
    )? as u32;
    let ttl_seconds = get_int(
        obj.get("ttl_seconds"),
        "approval.ttl_seconds",
        1,
        MAX_TTL_SECONDS,
        Some(3600),
    )?;
    let reason_required = match obj.get("reason_required") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("approval.reason_required must be a boolean".into()),
    };
    Ok(Approval {
        min,
        groups,
        deny_threshold,
        ttl_seconds,
        reason_required,
    })
}

/// Validate the decision rule's value strictly (see the crate docs).
fn parse_output(v: &Value) -> Result<Decision, String> {
    let obj = v.as_object().ok_or("the decision must be an object")?;
    check_keys(
        obj,
        &[
            "effect",
            "reasons",
            "rules",
            "approval",
            "cost",
            "expires_in_seconds",
        ],
        "the decision",
    )?;
    let effect = match obj.get("effect").and_then(Value::as_str) {
        Some("allow") => Effect::Allow,
        Some("deny") => Effect::Deny,
        Some("require_approval") => Effect::RequireApproval,
        Some(other) => return Err(format!("unknown effect {other:?}")),
        None => return Err("effect must be a string".into()),
    };
    let reasons = get_str_list(obj.get("reasons"), "reasons", false)?;
    let rules = get_str_list(obj.get("rules"), "rules", false)?;
    let approval = match (effect, obj.get("approval")) {
        (Effect::RequireApproval, Some(a)) if !a.is_null() => Some(parse_approval(a)?),
        (Effect::RequireApproval, _) => return Err("require_approval needs approval".into()),
        (_, None | Some(Value::Null)) => None,
        (_, Some(_)) => return Err(format!("approval given with effect {}", effect.as_str())),
    };
    let cost = get_int(obj.get("cost"), "cost", 0, MAX_SAFE_INTEGER, Some(0))?;
    let expires_in_seconds = match obj.get("expires_in_seconds") {
        None | Some(Value::Null) => None,
        some => Some(get_int(
            some,
            "expires_in_seconds",
            1,
            MAX_TTL_SECONDS,
            None,
        )?),
    };
    let code = match effect {
        Effect::Allow => "policy_allowed",
        Effect::Deny => "policy_denied",
        Effect::RequireApproval => "approval_required",
    };
    Ok(Decision {
        effect,
        code: code.to_string(),
        reasons,
        rules,
        approval,
        cost,
        expires_in_seconds,
        policy_hash: None,
    })
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn scans_package_and_tests() {
        let t = "package clawshield_test # x\n\nimport rego.v1\ntest_a if { true }\n  test_b := 1\ntest_a if { false }\n";
        assert_eq!(package_of(t).as_deref(), Some("clawshield_test"));
        assert_eq!(tests_of(t), vec!["test_a".to_string()]);
    }

    #[test]
    fn output_validation() {
        let ok = serde_json::json!({"effect": "allow", "cost": 5.0});
        assert_eq!(parse_output(&ok).unwrap().cost, 5);
        for bad in [
            serde_json::json!({"effect": "maybe"}),
            serde_json::json!({"effect": "allow", "extra": 1}),
            serde_json::json!({"effect": "allow", "reasons": [1]}),
            serde_json::json!({"effect": "allow", "cost": -1}),
            serde_json::json!({"effect": "allow", "cost": 1.5}),
            serde_json::json!({"effect": "require_approval"}),
            serde_json::json!({"effect": "require_approval", "approval": {"min": 0, "groups": ["a"]}}),
            serde_json::json!({"effect": "require_approval", "approval": {"min": 1, "groups": []}}),
            serde_json::json!({"effect": "require_approval", "approval": {"min": 1, "groups": ["a"], "x": 1}}),
            serde_json::json!({"effect": "deny", "approval": {"min": 1, "groups": ["a"]}}),
            serde_json::json!({"effect": "allow", "expires_in_seconds": 0}),
            serde_json::json!([1]),
        ] {
            assert!(parse_output(&bad).is_err(), "{bad}");
        }
    }
}
