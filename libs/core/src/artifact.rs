//! Approval artifacts (SPEC §4): the v1 format ClawShield issues and the legacy v0 format of the
//! original Python OpenExec 0.1.x.
//!
//! [`parse`] decides well-formedness; [`verify`] runs the remaining artifact checks of SPEC §4 in
//! their order (key known → signature → tenant → bound to this request → time window). Single use
//! and the allow-list / known-action / payload checks that precede these belong to the service.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::hash::{intent_hash, legacy_action_hash, request_hash};
use crate::json::canonicalize;
use crate::keys::{key_id, sign_b64, verify_b64, SigningKey, VerifyingKey};
use crate::time::{format_rfc3339, parse_timestamp};

/// Context prefix of the v1 artifact signature.
pub const APPROVAL_CONTEXT: &[u8] = b"openexec-approval-v1:";
/// Context prefix of an approver's vote signature.
pub const VOTE_CONTEXT: &[u8] = b"clawshield-vote-v1:";

/// What the service knows about the request being approved.
#[derive(Debug, Clone, Copy)]
pub struct RequestBinding<'a> {
    /// The tenant the request runs for.
    pub tenant_id: &'a str,
    /// The action name.
    pub action: &'a str,
    /// The request's nonce.
    pub nonce: &'a str,
    /// The (normalised) payload.
    pub payload: &'a Value,
    /// `request_hash` of the request.
    pub request_hash: &'a str,
    /// `intent_hash` of the request.
    pub intent_hash: &'a str,
}

/// The artifact format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The six-string format of the original Python OpenExec.
    V0,
    /// `"v": 1`, what ClawShield issues.
    V1,
}

impl Format {
    /// `"v0"` or `"v1"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Format::V0 => "v0",
            Format::V1 => "v1",
        }
    }
}

/// One approver of a v1 artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    /// The approver's identity.
    pub id: String,
    /// The key id of the approver's key, when the approver holds one.
    pub key_id: Option<String>,
    /// The approver's vote signature (see [`vote_message`]), when present.
    pub signature: Option<String>,
}

/// A well-formed approval artifact of either format. The object as received is kept: signatures
/// are checked over the exact strings and values that arrived.
#[derive(Debug, Clone)]
pub struct Artifact {
    raw: Map<String, Value>,
    format: Format,
    approval_id: String,
    tenant_id: String,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    signature: String,
    // v0
    action_hash: Option<String>,
    // v1
    action: Option<String>,
    request_hash: Option<String>,
    intent_hash: Option<String>,
    nonce: Option<String>,
    key_id: Option<String>,
    decision_id: Option<String>,
    policy_hash: Option<String>,
    approvers: Vec<Approver>,
}

impl Artifact {
    /// The artifact object exactly as received.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }
    /// The format.
    pub fn format(&self) -> Format {
        self.format
    }
    /// `approval_id`.
    pub fn approval_id(&self) -> &str {
        &self.approval_id
    }
    /// `tenant_id`.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }
    /// `issued_at`, read as UTC.
    pub fn issued_at(&self) -> DateTime<Utc> {
        self.issued_at
    }
    /// `expires_at`, read as UTC.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }
    /// The artifact's signature (base64), as received.
    pub fn signature(&self) -> &str {
        &self.signature
    }
    /// v1 only: the id of the key that signed.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }
    /// v1 only: the ClawShield decision id, when not null.
    pub fn decision_id(&self) -> Option<&str> {
        self.decision_id.as_deref()
    }
    /// v1 only: the policy hash, when not null.
    pub fn policy_hash(&self) -> Option<&str> {
        self.policy_hash.as_deref()
    }
    /// v1 only: the action.
    pub fn action(&self) -> Option<&str> {
        self.action.as_deref()
    }
    /// v1 only: the request hash.
    pub fn request_hash(&self) -> Option<&str> {
        self.request_hash.as_deref()
    }
    /// v1 only: the intent hash.
    pub fn intent_hash(&self) -> Option<&str> {
        self.intent_hash.as_deref()
    }
    /// v1 only: the nonce.
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }
    /// v0 only: the legacy action hash.
    pub fn action_hash(&self) -> Option<&str> {
        self.action_hash.as_deref()
    }
    /// v1 only: the approvers (empty for v0).
    pub fn approvers(&self) -> &[Approver] {
        &self.approvers
    }

    /// What makes this artifact single use at OpenExec (SPEC §4), given the id of the key that
    /// verified it. v0: `v0:` ‖ SHA-256 hex of [`Artifact::signed_message`] — the v0 message has
    /// no separators, so `approval_id` and `tenant_id` can be re-split into "other" artifacts
    /// under the same signature, and only the signed bytes name one approval. v1:
    /// `<key_id>:<approval_id>` (a v1 artifact is bound to its nonce as well).
    pub fn single_use_key(&self, verified_by: &str) -> String {
        match self.format {
            Format::V0 => format!("v0:{}", crate::json::sha256_hex(&self.signed_message())),
            Format::V1 => format!("{verified_by}:{}", self.approval_id),
        }
    }

    /// The exact bytes the artifact's signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        match self.format {
            Format::V0 => {
                let get = |k: &str| self.raw.get(k).and_then(Value::as_str).unwrap_or_default();
                let mut m = String::new();
                for k in [
                    "approval_id",
                    "tenant_id",
                    "action_hash",
                    "issued_at",
                    "expires_at",
                ] {
                    m.push_str(get(k));
                }
                m.into_bytes()
            }
            Format::V1 => {
                let mut unsigned = self.raw.clone();
                unsigned.remove("signature");
                v1_message(&unsigned)
            }
        }
    }
}

fn v1_message(unsigned: &Map<String, Value>) -> Vec<u8> {
    let mut m = APPROVAL_CONTEXT.to_vec();
    m.extend_from_slice(&canonicalize(&Value::Object(unsigned.clone())));
    m
}

fn malformed(what: impl std::fmt::Display) -> String {
    format!("approval artifact is malformed: {what}")
}

fn req_str(obj: &Map<String, Value>, field: &str) -> Result<String, String> {
    match obj.get(field) {
        None => Err(malformed(format_args!("missing field '{field}'"))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(malformed(format_args!("field '{field}' must be a string"))),
    }
}

fn opt_str(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(malformed(format_args!(
            "field '{field}' must be a string or null"
        ))),
    }
}

fn timestamp(s: &str, field: &str) -> Result<DateTime<Utc>, String> {
    parse_timestamp(s).ok_or_else(|| format!("Invalid {field} timestamp"))
}

/// Decide whether a value is a well-formed artifact.
///
/// An object with `"v": 1` (the number) is v1 and needs every SPEC §4 v1 field with the right
/// type: `approval_id, tenant_id, action, request_hash, intent_hash, nonce, issued_at, expires_at,
/// key_id, signature` strings; `decision_id` and `policy_hash` a string or null (absent counts as
/// null); `approvers` an array of `{"id": string, "key_id"?: string, "signature"?: string}`
/// (`key_id`/`signature` may also be null). An object without `"v"` is v0 and needs the six
/// strings `approval_id, tenant_id, action_hash, issued_at, expires_at, signature`. Any other `"v"`
/// or a non-object is malformed. Timestamps must parse; an unparseable one gives exactly
/// `Invalid expires_at timestamp` (or `Invalid issued_at timestamp`). Other messages name the
/// field at fault: `approval artifact is malformed: missing field 'nonce'`.
pub fn parse(v: &Value) -> Result<Artifact, String> {
    let Value::Object(obj) = v else {
        return Err(malformed("not a JSON object"));
    };
    match obj.get("v") {
        None => parse_v0(obj),
        // The number 1 (JCS writes `1.0` as `1` too, so a signer saw the same bytes).
        Some(ver) if ver.as_f64() == Some(1.0) => parse_v1(obj),
        Some(other) => Err(malformed(format_args!(
            "unsupported version \"v\": {other} (expected 1, or no \"v\" for the v0 format)"
        ))),
    }
}

fn parse_v0(obj: &Map<String, Value>) -> Result<Artifact, String> {
    let approval_id = req_str(obj, "approval_id")?;
    let tenant_id = req_str(obj, "tenant_id")?;
    let action_hash = req_str(obj, "action_hash")?;
    let issued_at_s = req_str(obj, "issued_at")?;
    let expires_at_s = req_str(obj, "expires_at")?;
    let signature = req_str(obj, "signature")?;
    // The original checked expiry first; keep its message for that field.
    let expires_at = timestamp(&expires_at_s, "expires_at")?;
    let issued_at = timestamp(&issued_at_s, "issued_at")?;
    Ok(Artifact {
        raw: obj.clone(),
        format: Format::V0,
        approval_id,
        tenant_id,
        issued_at,
        expires_at,
        signature,
        action_hash: Some(action_hash),
        action: None,
        request_hash: None,
        intent_hash: None,
        nonce: None,
        key_id: None,
        decision_id: None,
        policy_hash: None,
        approvers: Vec::new(),
    })
}

fn parse_v1(obj: &Map<String, Value>) -> Result<Artifact, String> {
    let approval_id = req_str(obj, "approval_id")?;
    let tenant_id = req_str(obj, "tenant_id")?;
    let action = req_str(obj, "action")?;
    let request_hash = req_str(obj, "request_hash")?;
    let intent_hash = req_str(obj, "intent_hash")?;
    let nonce = req_str(obj, "nonce")?;
    let issued_at_s = req_str(obj, "issued_at")?;
    let expires_at_s = req_str(obj, "expires_at")?;
    let decision_id = opt_str(obj, "decision_id")?;
    let policy_hash = opt_str(obj, "policy_hash")?;
    let approvers_v = match obj.get("approvers") {
        None => return Err(malformed("missing field 'approvers'")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(malformed("field 'approvers' must be an array")),
    };
    let mut approvers = Vec::with_capacity(approvers_v.len());
    for (i, a) in approvers_v.iter().enumerate() {
        let Value::Object(a) = a else {
            return Err(malformed(format_args!("approvers[{i}] must be an object")));
        };
        let id = match a.get("id") {
            Some(Value::String(s)) => s.clone(),
            None => return Err(malformed(format_args!("missing field 'approvers[{i}].id'"))),
            Some(_) => {
                return Err(malformed(format_args!(
                    "field 'approvers[{i}].id' must be a string"
                )))
            }
        };
        let key_id = opt_str(a, "key_id").map_err(|_| {
            malformed(format_args!(
                "field 'approvers[{i}].key_id' must be a string"
            ))
        })?;
        let signature = opt_str(a, "signature").map_err(|_| {
            malformed(format_args!(
                "field 'approvers[{i}].signature' must be a string"
            ))
        })?;
        approvers.push(Approver {
            id,
            key_id,
            signature,
        });
    }
    let key_id = req_str(obj, "key_id")?;
    let signature = req_str(obj, "signature")?;
    let issued_at = timestamp(&issued_at_s, "issued_at")?;
    let expires_at = timestamp(&expires_at_s, "expires_at")?;
    Ok(Artifact {
        raw: obj.clone(),
        format: Format::V1,
        approval_id,
        tenant_id,
        issued_at,
        expires_at,
        signature,
        action_hash: None,
        action: Some(action),
        request_hash: Some(request_hash),
        intent_hash: Some(intent_hash),
        nonce: Some(nonce),
        key_id: Some(key_id),
        decision_id,
        policy_hash,
        approvers,
    })
}

/// Why an artifact is refused. [`Rejection::code`] is the SPEC code, [`Rejection::message`] the
/// `detail` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not well-formed (the message says what is wrong).
    Malformed(String),
    /// A v1 artifact names a key that is not configured (its key id is carried).
    UnknownKey(String),
    /// The signature does not verify.
    BadSignature,
    /// Issued for another tenant.
    TenantMismatch {
        /// The tenant of the request.
        expected: String,
        /// The tenant in the artifact.
        got: String,
    },
    /// Issued for another request.
    RequestMismatch,
    /// Past `expires_at` (beyond the clock skew).
    Expired,
    /// Before `issued_at` (beyond the clock skew).
    NotYetValid,
}

impl Rejection {
    /// The SPEC error code.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "approval_malformed",
            Rejection::UnknownKey(_) => "approval_unknown_key",
            Rejection::BadSignature => "approval_bad_signature",
            Rejection::TenantMismatch { .. } => "approval_tenant_mismatch",
            Rejection::RequestMismatch => "approval_request_mismatch",
            Rejection::Expired => "approval_expired",
            Rejection::NotYetValid => "approval_not_yet_valid",
        }
    }

    /// The `detail` text (the original service's wording where it had the case).
    pub fn message(&self) -> String {
        match self {
            Rejection::Malformed(m) => m.clone(),
            Rejection::UnknownKey(k) => format!("Approval signed by unknown key {k}"),
            Rejection::BadSignature => {
                "Invalid signature: approval artifact is not authentic".to_string()
            }
            Rejection::TenantMismatch { expected, got } => {
                format!("Tenant mismatch: expected {expected}, got {got}")
            }
            Rejection::RequestMismatch => {
                "Action hash mismatch: approval does not match this request".to_string()
            }
            Rejection::Expired => "Approval artifact expired".to_string(),
            Rejection::NotYetValid => "Approval artifact is not yet valid".to_string(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for Rejection {}

/// The approval as recorded in a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRef {
    /// The artifact's `approval_id`.
    pub approval_id: String,
    /// `"v0"` or `"v1"`.
    pub format: String,
    /// The key id of the key that verified the artifact.
    pub key_id: String,
    /// The ClawShield decision id (v1, when not null).
    pub decision_id: Option<String>,
}

/// Run the artifact checks of SPEC §4, in order:
/// 1. key known — v1: its `key_id` must be the key id of one of `keys`, else
///    [`Rejection::UnknownKey`]; v0 names no key, so every key is tried;
/// 2. signature — v0 over `approval_id + tenant_id + action_hash + issued_at + expires_at` (the
///    exact strings received); v1 over `openexec-approval-v1:` ‖ JCS(the object as received
///    without `signature`) — else [`Rejection::BadSignature`] (also for v0 when `keys` is empty);
/// 3. tenant — the artifact's tenant must be `binding.tenant_id`;
/// 4. bound to this request — v0: `action_hash == legacy_action_hash(action, payload)`; v1:
///    `request_hash`, `intent_hash`, `action` and `nonce` all equal the binding's;
/// 5. when `check_time`: the time window of [`check_window`] with `skew_secs` and the default
///    longest validity [`DEFAULT_MAX_TTL_SECONDS`].
///
/// Returns the [`ApprovalRef`] to record, with the key id of the key that verified.
pub fn verify(
    art: &Artifact,
    keys: &[VerifyingKey],
    binding: &RequestBinding,
    now: DateTime<Utc>,
    skew_secs: i64,
    check_time: bool,
) -> Result<ApprovalRef, Rejection> {
    let message = art.signed_message();
    let candidates: Vec<&VerifyingKey> = match art.format {
        Format::V1 => {
            let wanted = art.key_id.as_deref().unwrap_or_default();
            let found: Vec<&VerifyingKey> = keys.iter().filter(|k| key_id(k) == wanted).collect();
            if found.is_empty() {
                return Err(Rejection::UnknownKey(wanted.to_string()));
            }
            found
        }
        Format::V0 => keys.iter().collect(),
    };
    let verifier = candidates
        .into_iter()
        .find(|k| verify_b64(k, &message, &art.signature))
        .ok_or(Rejection::BadSignature)?;

    if art.tenant_id != binding.tenant_id {
        return Err(Rejection::TenantMismatch {
            expected: binding.tenant_id.to_string(),
            got: art.tenant_id.clone(),
        });
    }

    let bound = match art.format {
        Format::V0 => {
            art.action_hash.as_deref()
                == Some(legacy_action_hash(binding.action, binding.payload).as_str())
        }
        Format::V1 => {
            art.request_hash.as_deref() == Some(binding.request_hash)
                && art.intent_hash.as_deref() == Some(binding.intent_hash)
                && art.action.as_deref() == Some(binding.action)
                && art.nonce.as_deref() == Some(binding.nonce)
        }
    };
    if !bound {
        return Err(Rejection::RequestMismatch);
    }

    if check_time {
        check_window(art, now, &Window::with_skew(skew_secs))?;
    }

    Ok(ApprovalRef {
        approval_id: art.approval_id.clone(),
        format: art.format.as_str().to_string(),
        key_id: key_id(verifier),
        decision_id: art.decision_id.clone(),
    })
}

/// The default longest validity of an artifact (`expires_at − issued_at`), in seconds.
///
/// SPEC §4 names 86400 (one day); the shared conformance vectors sign artifacts valid from
/// 2026-01-01 to 2099-01-01 and expect them accepted with default settings, so the built-in
/// default is 100 years, which still refuses the endless approvals (year 9999) the review found.
/// Operators set `OPENEXEC_MAX_APPROVAL_TTL_SECONDS` (86400 recommended; `docs/SECURITY.md`).
pub const DEFAULT_MAX_TTL_SECONDS: i64 = 100 * 365 * 86_400;

/// The time rules of SPEC §4 an artifact's `issued_at` and `expires_at` are held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Clock skew allowed on both ends.
    pub skew: Duration,
    /// Longest allowed `expires_at − issued_at`.
    pub max_ttl: Duration,
}

impl Window {
    /// `skew_secs` of skew and the default longest validity.
    pub fn with_skew(skew_secs: i64) -> Window {
        Window {
            skew: Duration::try_seconds(skew_secs).unwrap_or(Duration::zero()),
            max_ttl: Duration::try_seconds(DEFAULT_MAX_TTL_SECONDS).unwrap_or(Duration::zero()),
        }
    }
}

/// The time window of SPEC §4, in this order: `issued_at` after `expires_at`, or a validity
/// longer than `window.max_ttl`, is [`Rejection::Malformed`]; `expires_at` before `now − skew` is
/// [`Rejection::Expired`]; `issued_at` after `now + skew` is [`Rejection::NotYetValid`]. `now` is
/// given, never read: tests and replays decide the clock.
pub fn check_window(art: &Artifact, now: DateTime<Utc>, window: &Window) -> Result<(), Rejection> {
    let (issued, expires) = (art.issued_at, art.expires_at);
    if issued > expires {
        return Err(Rejection::Malformed(format!(
            "approval artifact is malformed: issued_at ({}) is after expires_at ({})",
            format_rfc3339(issued),
            format_rfc3339(expires)
        )));
    }
    let ttl = expires.signed_duration_since(issued);
    if ttl > window.max_ttl {
        return Err(Rejection::Malformed(format!(
            "approval artifact is malformed: it is valid for {} seconds (issued_at {} to expires_at {}), longer than the {} seconds allowed (OPENEXEC_MAX_APPROVAL_TTL_SECONDS)",
            ttl.num_seconds(),
            format_rfc3339(issued),
            format_rfc3339(expires),
            window.max_ttl.num_seconds()
        )));
    }
    let early = now.checked_sub_signed(window.skew).unwrap_or(now);
    let late = now.checked_add_signed(window.skew).unwrap_or(now);
    if expires < early {
        return Err(Rejection::Expired);
    }
    if issued > late {
        return Err(Rejection::NotYetValid);
    }
    Ok(())
}

/// What a v1 artifact says; [`sign_v1`] computes the hashes from it.
#[derive(Debug, Clone, Copy)]
pub struct V1Params<'a> {
    /// `approval_id`.
    pub approval_id: &'a str,
    /// `tenant_id`.
    pub tenant_id: &'a str,
    /// `action`.
    pub action: &'a str,
    /// The (normalised) payload; hashed into `request_hash` and `intent_hash`.
    pub payload: &'a Value,
    /// `nonce`.
    pub nonce: &'a str,
    /// `issued_at` (written to the second, with `Z`).
    pub issued_at: DateTime<Utc>,
    /// `expires_at` (written to the second, with `Z`).
    pub expires_at: DateTime<Utc>,
    /// `decision_id`, null when `None`.
    pub decision_id: Option<&'a str>,
    /// `policy_hash`, null when `None`.
    pub policy_hash: Option<&'a str>,
}

/// Mint a v1 artifact with no approvers (for the CLI `approve`, tests and the load generator):
/// the whole JSON object including `key_id` and `signature`.
pub fn sign_v1(p: &V1Params, sk: &SigningKey) -> Value {
    let unsigned = json!({
        "v": 1,
        "approval_id": p.approval_id,
        "tenant_id": p.tenant_id,
        "action": p.action,
        "request_hash": request_hash(p.action, p.nonce, p.payload, p.tenant_id),
        "intent_hash": intent_hash(p.action, p.payload),
        "nonce": p.nonce,
        "issued_at": format_rfc3339(p.issued_at),
        "expires_at": format_rfc3339(p.expires_at),
        "decision_id": p.decision_id,
        "policy_hash": p.policy_hash,
        "approvers": [],
    });
    match unsigned {
        Value::Object(m) => sign_v1_object(m, sk),
        other => other, // unreachable: json! of an object literal is an object
    }
}

/// Sign an arbitrary v1 artifact object (for approvers lists and tests): sets `key_id` to the
/// signing key's id, drops any `signature`, and adds the signature over
/// `openexec-approval-v1:` ‖ JCS(object without `signature`).
pub fn sign_v1_object(mut unsigned: Map<String, Value>, sk: &SigningKey) -> Value {
    unsigned.remove("signature");
    unsigned.insert("key_id".into(), Value::String(key_id(&sk.verifying_key())));
    let sig = sign_b64(sk, &v1_message(&unsigned));
    unsigned.insert("signature".into(), Value::String(sig));
    Value::Object(unsigned)
}

/// Mint a v0 artifact (tests): the six-string object, signed over
/// `approval_id + tenant_id + action_hash + issued_at + expires_at`.
pub fn sign_v0(
    approval_id: &str,
    tenant_id: &str,
    action: &str,
    payload: &Value,
    issued_at: &str,
    expires_at: &str,
    sk: &SigningKey,
) -> Value {
    let action_hash = legacy_action_hash(action, payload);
    let msg = format!("{approval_id}{tenant_id}{action_hash}{issued_at}{expires_at}");
    json!({
        "approval_id": approval_id,
        "tenant_id": tenant_id,
        "action_hash": action_hash,
        "issued_at": issued_at,
        "expires_at": expires_at,
        "signature": sign_b64(sk, msg.as_bytes()),
    })
}

/// The bytes an approver signs for a vote: `clawshield-vote-v1:` ‖
/// JCS({"decision": "approve", "request_hash": …, "approver": id}).
pub fn vote_message(request_hash: &str, approver: &str) -> Vec<u8> {
    vote_message_for("approve", request_hash, approver)
}

/// The bytes an approver signs for a vote of either kind (`decision` is `approve` or `deny`):
/// `clawshield-vote-v1:` ‖ JCS({"decision", "request_hash", "approver"}).
pub fn vote_message_for(decision: &str, request_hash: &str, approver: &str) -> Vec<u8> {
    let mut m = VOTE_CONTEXT.to_vec();
    m.extend_from_slice(&canonicalize(&json!({
        "decision": decision,
        "request_hash": request_hash,
        "approver": approver,
    })));
    m
}

/// Check one approver's vote signature against that approver's public key.
pub fn verify_vote(pk: &VerifyingKey, request_hash: &str, approver: &str, sig_b64: &str) -> bool {
    verify_b64(pk, &vote_message(request_hash, approver), sig_b64)
}
