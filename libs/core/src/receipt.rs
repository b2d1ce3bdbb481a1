//! Receipts and evidence (SPEC §6).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::artifact::ApprovalRef;
use crate::json::jcs_sha256;
use crate::keys::{key_id, sign_b64, verify_b64, SigningKey, VerifyingKey};

/// The outcome a receipt records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The handler ran and succeeded.
    Executed,
    /// The handler ran and failed.
    Failed,
    /// Refused before the handler started.
    Rejected,
    /// The process died (or the receipt could not be stored) while the handler ran.
    Interrupted,
}

impl Status {
    /// `"executed"`, `"failed"`, `"rejected"` or `"interrupted"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Executed => "executed",
            Status::Failed => "failed",
            Status::Rejected => "rejected",
            Status::Interrupted => "interrupted",
        }
    }
}

/// What ran: the handler's name and a digest pinning it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerRef {
    /// e.g. `builtin:echo`.
    pub name: String,
    /// The module's hash for a WebAssembly handler; the config entry's hash otherwise.
    pub digest: String,
}

/// The SPEC §6 receipt. Serialises with exactly these field names, every one present, `None` as
/// null. It holds no clock reading and no key, so the same request with the same verdict has the
/// same hash everywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Always 1.
    pub v: u32,
    /// `= request_hash`.
    pub exec_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The action.
    pub action: String,
    /// The nonce.
    pub nonce: String,
    /// `intent_hash` of the request.
    pub intent_hash: String,
    /// `request_hash` of the request.
    pub request_hash: String,
    /// `demo` or `clawshield`.
    pub mode: String,
    /// The approval that allowed it, if any.
    pub approval: Option<ApprovalRef>,
    /// The outcome.
    pub status: Status,
    /// The error code, when not executed.
    pub code: Option<String>,
    /// `H(JCS(result))` when there is a result.
    pub result_hash: Option<String>,
    /// What ran, when something was chosen to run.
    pub handler: Option<HandlerRef>,
}

impl Receipt {
    /// The receipt as a JSON value.
    pub fn to_value(&self) -> Value {
        // Serialising plain strings, integers and options into a Value cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// `receipt_hash = H(JCS(receipt))`.
    pub fn hash(&self) -> String {
        jcs_sha256(&self.to_value())
    }
}

/// Context prefix of a receipt signature.
pub const RECEIPT_CONTEXT: &[u8] = b"openexec-receipt-v1:";

/// The data of a receipt's leaf in the receipt log (SPEC §7):
/// JCS of `{"receipt", "signature", "key_id", "logged_at"}`.
pub fn log_leaf(receipt: &Value, signature: &str, key_id: &str, logged_at: &str) -> Vec<u8> {
    crate::json::canonicalize(&serde_json::json!({
        "receipt": receipt,
        "signature": signature,
        "key_id": key_id,
        "logged_at": logged_at,
    }))
}

/// The bytes a receipt signature covers: `openexec-receipt-v1:` followed by the 64 hex
/// characters of the receipt hash.
pub fn signing_message(receipt_hash: &str) -> Vec<u8> {
    let mut m = RECEIPT_CONTEXT.to_vec();
    m.extend_from_slice(receipt_hash.as_bytes());
    m
}

/// Sign a receipt hash (standard base64 signature).
pub fn sign(receipt_hash: &str, sk: &SigningKey) -> String {
    sign_b64(sk, &signing_message(receipt_hash))
}

/// Evidence of a receipt, as served by OpenExec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The receipt object.
    pub receipt: Value,
    /// `H(JCS(receipt))`.
    pub receipt_hash: String,
    /// Signature over [`signing_message`] of `receipt_hash`.
    pub signature: String,
    /// Key id of the receipt key.
    pub key_id: String,
    /// Position in the receipt log; `None` (written as null) for a rejection that was signed
    /// but not logged (SPEC §6, `OPENEXEC_REJECTION_LOG_RATE`).
    pub log_index: Option<u64>,
    /// `Some(false)` for a rejection that was signed but not logged; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub logged: Option<bool>,
    /// Inclusion proof and checkpoint, once the log has integrated the entry.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub inclusion: Option<Value>,
}

/// The result of [`verify_evidence`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// True when every check passed.
    pub valid: bool,
    /// `well_formed`, `receipt_hash`, `key_known`, `signature`.
    pub checks: BTreeMap<String, bool>,
    /// What failed, in plain words.
    pub errors: Vec<String>,
}

fn well_formed(evidence: &Value) -> Result<(&Value, &str, &str, &str), String> {
    let Value::Object(o) = evidence else {
        return Err("evidence is not a JSON object".into());
    };
    let receipt = match o.get("receipt") {
        Some(r @ Value::Object(_)) => r,
        Some(_) => return Err("evidence field 'receipt' must be an object".into()),
        None => return Err("evidence is missing field 'receipt'".into()),
    };
    let s = |k: &str| -> Result<&str, String> {
        match o.get(k) {
            Some(Value::String(v)) => Ok(v.as_str()),
            Some(_) => Err(format!("evidence field '{k}' must be a string")),
            None => Err(format!("evidence is missing field '{k}'")),
        }
    };
    let receipt_hash = s("receipt_hash")?;
    let signature = s("signature")?;
    let kid = s("key_id")?;
    let unlogged = match o.get("logged") {
        None | Some(Value::Bool(true)) => false,
        Some(Value::Bool(false)) => true,
        Some(_) => return Err("evidence field 'logged' must be a boolean".into()),
    };
    match o.get("log_index") {
        Some(v) if v.as_u64().is_some() && !unlogged => {}
        Some(Value::Null) if unlogged => {}
        Some(Value::Null) => {
            return Err("evidence field 'log_index' is null but 'logged' is not false".into())
        }
        Some(_) if unlogged => {
            return Err("evidence says 'logged': false but has a log_index".into())
        }
        Some(_) => return Err("evidence field 'log_index' must be a non-negative integer".into()),
        None => return Err("evidence is missing field 'log_index'".into()),
    }
    match o.get("inclusion") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => return Err("evidence field 'inclusion' must be an object".into()),
    }
    Ok((receipt, receipt_hash, signature, kid))
}

/// Check an evidence object offline against the known receipt public keys. Never panics.
///
/// Checks: `well_formed` (the evidence fields are present with the right types), `receipt_hash`
/// (`H(JCS(receipt))` equals `receipt_hash`; the receipt is hashed as given),
/// `key_known` (`key_id` is the id of one of `keys`), `signature` (that key signed
/// `openexec-receipt-v1:` ‖ `receipt_hash`). A check that cannot run because one it depends on
/// failed is false. The inclusion proof, when present, is not checked here (that needs the log's
/// Merkle code and its checkpoint key).
pub fn verify_evidence(evidence: &Value, keys: &[VerifyingKey]) -> VerifyReport {
    let mut checks = BTreeMap::new();
    let mut errors = Vec::new();
    for c in ["well_formed", "receipt_hash", "key_known", "signature"] {
        checks.insert(c.to_string(), false);
    }
    match well_formed(evidence) {
        Err(e) => {
            errors.push(e);
            errors.push("no other check could run".into());
        }
        Ok((receipt, receipt_hash, signature, kid)) => {
            checks.insert("well_formed".into(), true);
            let computed = jcs_sha256(receipt);
            if computed == receipt_hash {
                checks.insert("receipt_hash".into(), true);
            } else {
                errors.push(format!(
                    "receipt_hash {receipt_hash} does not match the receipt (its hash is {computed})"
                ));
            }
            let known: Vec<&VerifyingKey> = keys.iter().filter(|k| key_id(k) == kid).collect();
            if known.is_empty() {
                errors.push(format!(
                    "key_id {kid} is not one of the known receipt keys; the signature was not checked"
                ));
            } else {
                checks.insert("key_known".into(), true);
                let msg = signing_message(receipt_hash);
                if known.iter().any(|k| verify_b64(k, &msg, signature)) {
                    checks.insert("signature".into(), true);
                } else {
                    errors.push(format!(
                        "signature does not verify with key {kid} over receipt_hash"
                    ));
                }
            }
        }
    }
    VerifyReport {
        valid: checks.values().all(|v| *v),
        checks,
        errors,
    }
}
