//! The proposal as ClawShield keeps and answers it (SPEC §9), and the decision log's entries.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The reserved action whose approval puts a policy bundle in force.
pub const ACTIVATE_ACTION: &str = "clawshield.policy.activate";

/// What the gate decided, as answered in `decision`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecisionView {
    pub decision_id: String,
    /// `allow`, `deny` or `require_approval`.
    pub effect: String,
    pub code: String,
    pub reasons: Vec<String>,
    pub rules: Vec<String>,
    pub policy_hash: Option<String>,
}

/// What a pending proposal still needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Needs {
    pub min: u32,
    pub groups: Vec<String>,
    pub approvals: u32,
    pub denials: u32,
    pub deny_threshold: u32,
    pub reason_required: bool,
}

/// One counted vote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VoteView {
    pub voter: String,
    pub vote: String,
    pub reason: String,
    pub at: String,
    /// The approver's key id and vote signature, when the approver holds a key.
    pub key_id: Option<String>,
    pub signature: Option<String>,
}

/// A proposal, whole (stored as `proposals.doc`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Proposal {
    pub proposal_id: String,
    pub status: String,
    pub tenant_id: String,
    pub agent_id: String,
    pub on_behalf_of: Option<String>,
    pub action: String,
    pub payload: Value,
    pub context: Value,
    pub nonce: String,
    pub intent_hash: String,
    pub request_hash: String,
    pub decision: DecisionView,
    pub needs: Option<Needs>,
    pub expires_at: Option<String>,
    pub artifact: Option<Value>,
    pub created_at: String,
    /// Reserved against the tenant's budget: (window_start, cost), until denied or expired.
    pub reserved: Option<(i64, i64)>,
    pub cost: u64,
    /// How long the artifact will be valid once issued, in seconds.
    pub artifact_ttl_seconds: u64,
    pub votes: Vec<VoteView>,
    /// How many log entries this proposal has (its next entry's number).
    pub entries: u64,
}

impl Proposal {
    /// The answer of SPEC §9 (plus `payload`, `context` and `votes`, which approvers read).
    pub fn answer(&self) -> Value {
        let mut v = json!({
            "proposal_id": self.proposal_id,
            "status": self.status,
            "tenant_id": self.tenant_id,
            "agent_id": self.agent_id,
            "action": self.action,
            "payload": self.payload,
            "context": self.context,
            "nonce": self.nonce,
            "intent_hash": self.intent_hash,
            "request_hash": self.request_hash,
            "decision": self.decision,
            "expires_at": self.expires_at,
            "artifact": self.artifact,
            "created_at": self.created_at,
            "votes": self.votes.iter().map(|v| json!({"voter": v.voter, "vote": v.vote, "reason": v.reason, "at": v.at})).collect::<Vec<_>>(),
        });
        if let Some(n) = &self.needs {
            v["needs"] = json!({
                "min": n.min, "groups": n.groups, "approvals": n.approvals, "denials": n.denials,
                "deny_threshold": n.deny_threshold, "reason_required": n.reason_required,
            });
        }
        v
    }
}

/// An id: `prefix` and the first 32 hex digits of SHA-256 over the parts (deterministic, so a
/// retried write produces the same ids).
pub fn derived_id(prefix: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(b"clawshield-id-v1");
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    format!("{prefix}{}", &hex::encode(h.finalize())[..32])
}

/// A decision log entry's id: `prefix`, the time in microseconds (13 hex digits) and 19 hex
/// digits of SHA-256 over the parts — unique like [`derived_id`], and in time order, so that
/// the index of entries by id grows at its end instead of at a random page per entry.
pub fn entry_id(prefix: &str, at: chrono::DateTime<chrono::Utc>, parts: &[&str]) -> String {
    let h = derived_id("", parts);
    format!("{prefix}{:013x}{}", at.timestamp_micros().max(0), &h[..19])
}

/// A decision log entry (SPEC §9): every field present, null where it does not apply. It holds
/// hashes, never payloads, reasons or secrets.
#[derive(Debug, Clone, Default)]
pub struct EntryFields<'a> {
    pub decision_id: &'a str,
    pub kind: &'a str,
    pub effect: Option<&'a str>,
    pub code: Option<&'a str>,
    pub rules: Option<&'a [String]>,
    pub policy_hash: Option<&'a str>,
    pub approval_id: Option<&'a str>,
    pub voter: Option<&'a str>,
    pub vote: Option<&'a str>,
    pub logged_at: &'a str,
}

pub fn entry(p: Option<&Proposal>, f: EntryFields) -> Value {
    json!({
        "v": 1,
        "decision_id": f.decision_id,
        "kind": f.kind,
        "proposal_id": p.map(|p| p.proposal_id.as_str()),
        "tenant_id": p.map(|p| p.tenant_id.as_str()),
        "agent_id": p.map(|p| p.agent_id.as_str()),
        "action": p.map(|p| p.action.as_str()),
        "intent_hash": p.map(|p| p.intent_hash.as_str()),
        "request_hash": p.map(|p| p.request_hash.as_str()),
        "nonce": p.map(|p| p.nonce.as_str()),
        "effect": f.effect,
        "code": f.code,
        "rules": f.rules,
        "policy_hash": f.policy_hash,
        "approval_id": f.approval_id,
        "voter": f.voter,
        "vote": f.vote,
        "logged_at": f.logged_at,
    })
}
