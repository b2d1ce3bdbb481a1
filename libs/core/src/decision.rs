//! ClawShield's decision log (SPEC §9) as a verifier reads it: the shape of an entry, a
//! decision's evidence (`GET /v1/decisions/{id}`: the entry, its `log_index` and `inclusion`)
//! checked offline, and the chain from a receipt to the decision that allowed it.
//!
//! The chain (issue 11): a receipt's `approval.decision_id` names an entry of ClawShield's
//! decision log that is a decision allowing exactly the receipt's request (`request_hash`) with
//! the receipt's approval (`approval_id`), and both the receipt and the entry are included in
//! checkpoints signed by their logs' keys. Inclusion is checked by the same code as a receipt's
//! ([`crate::evidence::check_inclusion`]); a decision entry's leaf data is JCS of the entry.
//!
//! Trust boundary: as in [`crate::evidence`], only the keys given are trusted — the receipt keys
//! and receipt log key, the decision log key, the witnesses, ClawShield's approval keys — never
//! what either piece of evidence says about itself or about the other.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::evidence::{check_inclusion, verify_full, LogTrust, Logged};
use crate::keys::{key_id, VerifyingKey};
use crate::receipt::VerifyReport;

/// The fields of every decision log entry, each present (null where it does not apply).
pub const FIELDS: [&str; 18] = [
    "v",
    "decision_id",
    "kind",
    "proposal_id",
    "tenant_id",
    "agent_id",
    "action",
    "intent_hash",
    "request_hash",
    "nonce",
    "effect",
    "code",
    "rules",
    "policy_hash",
    "approval_id",
    "voter",
    "vote",
    "logged_at",
];

/// The kinds of entry.
pub const KINDS: [&str; 4] = ["decision", "vote", "expiry", "policy"];

/// Why bytes or a value are not a decision log entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EntryError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, EntryError> {
    Err(EntryError(m.into()))
}

fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Check that `entry` is a decision log entry of SPEC §9: exactly [`FIELDS`], `"v": 1`, a
/// non-empty `decision_id`, a `kind` of [`KINDS`], an RFC 3339 `logged_at`, every other field a
/// string or null (`rules` an array of strings or null; hashes 64 lowercase hex; `effect` one of
/// `allow`/`deny`/`require_approval`, `vote` one of `approve`/`deny`), and what each kind needs:
/// a `decision` names its proposal, request and effect; a `vote` its proposal, voter and vote; an
/// `expiry` its proposal; a `policy` its `policy_hash`.
pub fn check_entry(entry: &Value) -> Result<(), EntryError> {
    let Value::Object(o) = entry else {
        return err("a decision log entry must be a JSON object");
    };
    if let Some(extra) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return err(format!("unknown field '{extra}'"));
    }
    if let Some(missing) = FIELDS.iter().find(|f| !o.contains_key(**f)) {
        return err(format!("missing field '{missing}'"));
    }
    if o["v"].as_u64() != Some(1) {
        return err(format!("field 'v' must be 1, not {}", o["v"]));
    }
    let opt = |k: &str| -> Result<Option<&str>, EntryError> {
        match &o[k] {
            Value::Null => Ok(None),
            Value::String(s) if !s.is_empty() => Ok(Some(s.as_str())),
            Value::String(_) => err(format!("field '{k}' is an empty string")),
            other => err(format!("field '{k}' must be a string or null, not {other}")),
        }
    };
    let need = |k: &str, kind: &str| -> Result<&str, EntryError> {
        opt(k)?.map_or_else(|| err(format!("a '{kind}' entry must have '{k}'")), Ok)
    };
    let id = opt("decision_id")?;
    if id.is_none() {
        return err("field 'decision_id' must be a non-empty string");
    }
    let kind = opt("kind")?.unwrap_or_default();
    if !KINDS.contains(&kind) {
        return err(format!(
            "field 'kind' must be one of {}, not {}",
            KINDS.join(", "),
            o["kind"]
        ));
    }
    let logged_at = opt("logged_at")?.unwrap_or_default();
    if chrono::DateTime::parse_from_rfc3339(logged_at).is_err() {
        return err(format!(
            "field 'logged_at' must be an RFC 3339 time, not {}",
            o["logged_at"]
        ));
    }
    for k in [
        "proposal_id",
        "tenant_id",
        "agent_id",
        "action",
        "nonce",
        "code",
        "approval_id",
        "voter",
    ] {
        opt(k)?;
    }
    for k in ["intent_hash", "request_hash", "policy_hash"] {
        if let Some(h) = opt(k)? {
            if !is_hash(h) {
                return err(format!("field '{k}' must be 64 lowercase hex digits"));
            }
        }
    }
    match &o["rules"] {
        Value::Null => {}
        Value::Array(a) if a.iter().all(Value::is_string) => {}
        other => {
            return err(format!(
                "field 'rules' must be an array of strings or null, not {other}"
            ))
        }
    }
    let effect = opt("effect")?;
    if let Some(e) = effect {
        if !["allow", "deny", "require_approval"].contains(&e) {
            return err(format!(
                "field 'effect' must be allow, deny or require_approval, not '{e}'"
            ));
        }
    }
    if let Some(v) = opt("vote")? {
        if v != "approve" && v != "deny" {
            return err(format!("field 'vote' must be approve or deny, not '{v}'"));
        }
    }
    match kind {
        "decision" => {
            for k in [
                "proposal_id",
                "tenant_id",
                "action",
                "request_hash",
                "effect",
            ] {
                need(k, kind)?;
            }
        }
        "vote" => {
            for k in ["proposal_id", "tenant_id", "request_hash", "voter", "vote"] {
                need(k, kind)?;
            }
        }
        "expiry" => {
            for k in ["proposal_id", "tenant_id", "request_hash"] {
                need(k, kind)?;
            }
        }
        _ => {
            need("policy_hash", kind)?;
        }
    }
    Ok(())
}

/// A decision log leaf's data read back: I-JSON, exactly the JCS of its value (as ClawShield
/// writes it), and a well-formed entry ([`check_entry`]).
pub fn parse_leaf(data: &[u8]) -> Result<Value, EntryError> {
    let v = crate::json::parse_ijson(data, crate::json::DEFAULT_MAX_DEPTH)
        .map_err(|e| EntryError(format!("not I-JSON: {e}")))?;
    if crate::json::canonicalize(&v) != data {
        return err("not in canonical form (JCS)");
    }
    check_entry(&v)?;
    Ok(v)
}

/// The leaf data of an entry in the decision log: JCS of the entry.
pub fn leaf_data(entry: &Value) -> Vec<u8> {
    crate::json::canonicalize(entry)
}

fn mark(report: &mut VerifyReport, name: &str, r: Result<(), String>) {
    report.checks.insert(name.into(), r.is_ok());
    if let Err(e) = r {
        report.errors.push(e);
        report.valid = false;
    }
}

/// Check a decision's evidence offline: `answer` is ClawShield's `GET /v1/decisions/{id}`
/// answer, `{"decision": <entry>, "log_index", "inclusion"?}`. Checks `decision_well_formed`
/// ([`check_entry`]) and, as [`check_inclusion`] does for a receipt, `decision_inclusion`,
/// `decision_checkpoint_signature` (with `trust.log`, the decision log's key) and, when
/// `trust.k > 0`, `decision_witnesses`. The proof's `logged_at` must be the entry's.
pub fn verify_decision(answer: &Value, trust: &LogTrust) -> VerifyReport {
    let mut report = VerifyReport {
        valid: true,
        checks: BTreeMap::new(),
        errors: Vec::new(),
    };
    let entry = answer.get("decision").cloned().unwrap_or(Value::Null);
    mark(
        &mut report,
        "decision_well_formed",
        check_entry(&entry).map_err(|e| format!("decision: the log entry is not well formed: {e}")),
    );
    let leaf = |logged_at: &str| {
        if entry.get("logged_at").and_then(Value::as_str) == Some(logged_at) {
            Ok(leaf_data(&entry))
        } else {
            Err("the inclusion's logged_at is not the entry's".to_string())
        }
    };
    check_inclusion(
        &mut report,
        &Logged {
            checks: "decision_",
            context: "decision: ",
            inclusion: answer.get("inclusion"),
            log_index: answer.get("log_index"),
            leaf: &leaf,
        },
        trust,
    );
    report
}

/// Check the receipt's approval against ClawShield's approval keys: check `approval_key`, the
/// receipt's `approval.key_id` is the key id of one of `approval_keys` (the receipt records
/// which key verified the artifact; the artifact itself is not in the receipt).
pub fn check_approval_key(
    report: &mut VerifyReport,
    evidence: &Value,
    approval_keys: &[VerifyingKey],
) {
    let approval = &evidence["receipt"]["approval"];
    let r = match approval.get("key_id").and_then(Value::as_str) {
        None if approval.is_null() => {
            Err("approval_key: the receipt names no approval (approval is null)".to_string())
        }
        None => Err("approval_key: the receipt's approval has no key_id".to_string()),
        Some(kid) if approval_keys.iter().any(|k| key_id(k) == kid) => Ok(()),
        Some(kid) => Err(format!(
            "approval_key: the receipt's approval was verified with key {kid}, which is not one of the given approval keys"
        )),
    };
    mark(report, "approval_key", r);
}

/// What [`verify_chain`] trusts.
pub struct ChainTrust<'a> {
    /// OpenExec's receipt keys.
    pub receipt_keys: &'a [VerifyingKey],
    /// OpenExec's receipt log (an inclusion is required whatever `require_inclusion` says).
    pub receipts: LogTrust<'a>,
    /// ClawShield's decision log (an inclusion is required whatever `require_inclusion` says).
    pub decisions: LogTrust<'a>,
    /// ClawShield's approval keys; when not empty, the receipt's approval must name one
    /// ([`check_approval_key`]).
    pub approval_keys: &'a [VerifyingKey],
}

/// Check the chain from a receipt's evidence to the decision that allowed it, offline. The
/// receipt: [`verify_full`] with its inclusion required. The decision: [`verify_decision`] with
/// its inclusion required. The links, each a check: `decision_allows` (the entry is a `decision`
/// with effect `allow`), `decision_id` (the receipt's `approval.decision_id` is the entry's),
/// `request_hash` (the entry's is the receipt's), `approval_id` (the entry's is the receipt's
/// `approval.approval_id`), and `approval_key` when approval keys are given. Valid when every
/// check passed; each error names the link that failed.
pub fn verify_chain(evidence: &Value, answer: &Value, trust: &ChainTrust) -> VerifyReport {
    fn required<'b>(t: &LogTrust<'b>) -> LogTrust<'b> {
        LogTrust {
            log: t.log,
            witnesses: t.witnesses,
            k: t.k,
            require_inclusion: true,
        }
    }
    let mut report = verify_full(evidence, trust.receipt_keys, &required(&trust.receipts));
    for e in &mut report.errors {
        *e = format!("receipt: {e}");
    }
    let decision = verify_decision(answer, &required(&trust.decisions));
    report.valid &= decision.valid;
    report.checks.extend(decision.checks);
    report.errors.extend(decision.errors);

    let entry = answer.get("decision").unwrap_or(&Value::Null);
    let receipt = evidence.get("receipt").unwrap_or(&Value::Null);
    let approval = receipt.get("approval").unwrap_or(&Value::Null);
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let shown = |s: &Option<String>| s.as_deref().unwrap_or("null").to_string();

    let (kind, effect) = (field(entry, "kind"), field(entry, "effect"));
    mark(
        &mut report,
        "decision_allows",
        if kind.as_deref() == Some("decision") && effect.as_deref() == Some("allow") {
            Ok(())
        } else {
            Err(format!(
                "decision_allows: the log entry is of kind {} with effect {}, not a decision that allows (kind decision, effect allow)",
                shown(&kind),
                shown(&effect)
            ))
        },
    );
    let link = |name: &str, ours: Option<String>, theirs: Option<String>, what: &str| {
        match (ours, theirs) {
            _ if approval.is_null() && name != "request_hash" => Err(format!(
                "{name}: the receipt names no approval (approval is null): nothing links it to a decision"
            )),
            (Some(a), Some(b)) if a == b => Ok(()),
            (a, b) => Err(format!(
                "{name}: the receipt's {what} is {}, the decision log entry's is {}",
                shown(&a),
                shown(&b)
            )),
        }
    };
    let r = link(
        "decision_id",
        field(approval, "decision_id"),
        field(entry, "decision_id"),
        "approval.decision_id",
    );
    mark(&mut report, "decision_id", r);
    let r = link(
        "request_hash",
        field(receipt, "request_hash"),
        field(entry, "request_hash"),
        "request_hash",
    );
    mark(&mut report, "request_hash", r);
    let r = link(
        "approval_id",
        field(approval, "approval_id"),
        field(entry, "approval_id"),
        "approval.approval_id",
    );
    mark(&mut report, "approval_id", r);
    if !trust.approval_keys.is_empty() {
        check_approval_key(&mut report, evidence, trust.approval_keys);
    }
    report
}
