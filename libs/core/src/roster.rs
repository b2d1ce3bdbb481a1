//! The approver roster of SPEC §4 (offline-checkable quorum): who may approve, signed by
//! ClawShield, pinned in OpenExec (`OPENEXEC_APPROVER_ROSTER`), and the quorum check of a v1
//! artifact's approver signatures against it.
//!
//! `{"v": 1, "roster_version": n, "approvers": [{"id", "groups", "key_id", "public_key"}],
//! "key_id", "signature"}`; `signature` = Ed25519(ClawShield key, `clawshield-roster-v1:` ‖
//! JCS(roster without `signature`)); approvers sorted by `id`, each `key_id` the id of its key.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::artifact::{verify_vote, Artifact, Format};
use crate::json::canonicalize;
use crate::keys::{key_id, parse_verifying_key, sign_b64, verify_b64, SigningKey, VerifyingKey};

/// The context string of a roster signature.
pub const ROSTER_CONTEXT: &[u8] = b"clawshield-roster-v1:";

/// One approver of the roster.
#[derive(Debug, Clone)]
pub struct RosterEntry {
    pub groups: Vec<String>,
    pub key_id: String,
    pub key: VerifyingKey,
}

/// A roster whose signature verified against a trusted ClawShield key.
#[derive(Debug, Clone)]
pub struct Roster {
    pub version: u64,
    pub approvers: BTreeMap<String, RosterEntry>,
}

/// The bytes a roster's signature covers.
pub fn roster_message(unsigned: &Map<String, Value>) -> Vec<u8> {
    let mut m = ROSTER_CONTEXT.to_vec();
    m.extend_from_slice(&canonicalize(&Value::Object(unsigned.clone())));
    m
}

/// Sign a roster object (ClawShield; tests): sets `key_id`, replaces `signature`.
pub fn sign_roster(mut unsigned: Map<String, Value>, sk: &SigningKey) -> Value {
    unsigned.remove("signature");
    unsigned.insert("key_id".into(), Value::String(key_id(&sk.verifying_key())));
    let sig = sign_b64(sk, &roster_message(&unsigned));
    unsigned.insert("signature".into(), Value::String(sig));
    Value::Object(unsigned)
}

/// Parse a roster and verify its signature against one of `trusted` (ClawShield's keys). Every
/// error names the field at fault.
pub fn verify_roster(v: &Value, trusted: &[VerifyingKey]) -> Result<Roster, String> {
    let obj = v.as_object().ok_or("the roster must be a JSON object")?;
    if obj.get("v") != Some(&Value::from(1)) {
        return Err("field 'v' must be 1".into());
    }
    let version = obj
        .get("roster_version")
        .and_then(Value::as_u64)
        .ok_or("field 'roster_version' must be a whole number")?;
    let sig = obj
        .get("signature")
        .and_then(Value::as_str)
        .ok_or("field 'signature' must be a string")?;
    let kid = obj
        .get("key_id")
        .and_then(Value::as_str)
        .ok_or("field 'key_id' must be a string")?;
    let key = trusted.iter().find(|k| key_id(k) == kid).ok_or_else(|| {
        format!("the roster is signed by key '{kid}', which is not a configured ClawShield key")
    })?;
    let mut unsigned = obj.clone();
    unsigned.remove("signature");
    if !verify_b64(key, &roster_message(&unsigned), sig) {
        return Err("the roster's signature does not verify".into());
    }
    let list = obj
        .get("approvers")
        .and_then(Value::as_array)
        .ok_or("field 'approvers' must be an array")?;
    let mut approvers = BTreeMap::new();
    let mut last: Option<String> = None;
    for (i, a) in list.iter().enumerate() {
        let field = |name: &str| -> Result<&str, String> {
            a.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("field 'approvers[{i}].{name}' must be a string"))
        };
        let id = field("id")?.to_string();
        if last.as_ref().is_some_and(|l| *l >= id) {
            return Err(format!(
                "approvers must be sorted by id with no repeats: '{id}' at approvers[{i}]"
            ));
        }
        let groups = a
            .get("groups")
            .and_then(Value::as_array)
            .and_then(|g| {
                g.iter()
                    .map(|x| x.as_str().map(String::from))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| format!("field 'approvers[{i}].groups' must be an array of strings"))?;
        let key = parse_verifying_key(field("public_key")?)
            .map_err(|e| format!("field 'approvers[{i}].public_key': {e}"))?;
        let key_id_given = field("key_id")?.to_string();
        if key_id(&key) != key_id_given {
            return Err(format!(
                "field 'approvers[{i}].key_id' is not the id of its public_key"
            ));
        }
        last = Some(id.clone());
        approvers.insert(
            id,
            RosterEntry {
                groups,
                key_id: key_id_given,
                key,
            },
        );
    }
    Ok(Roster { version, approvers })
}

/// Check an artifact's approver signatures against `roster` (SPEC §4): its `quorum.min`
/// distinct roster ids, each in one of `quorum.groups`, and at least `floor` distinct roster
/// ids whatever the quorum says, each with a vote signature that verifies against that id's
/// roster key. A v0 artifact has no approvers: it never meets a floor above 0. `Err` says what
/// is missing.
pub fn check_quorum(art: &Artifact, roster: &Roster, floor: u32) -> Result<(), String> {
    let (min, groups) = quorum_of(art)?;
    if art.format() == Format::V0 {
        return if floor > 0 {
            Err(format!(
                "this action needs {floor} approver signatures; a v0 artifact carries none"
            ))
        } else {
            Ok(())
        };
    }
    let request_hash = art.request_hash().unwrap_or_default();
    // The distinct roster ids whose vote verifies.
    let mut valid: BTreeMap<&str, &RosterEntry> = BTreeMap::new();
    for a in art.approvers() {
        let (Some(entry), Some(sig)) = (roster.approvers.get(&a.id), a.signature.as_deref()) else {
            continue;
        };
        if a.key_id.as_deref().is_some_and(|k| k != entry.key_id) {
            continue;
        }
        if verify_vote(&entry.key, request_hash, &a.id, sig) {
            valid.insert(a.id.as_str(), entry);
        }
    }
    if min > 0 {
        let in_groups = valid
            .values()
            .filter(|e| groups.is_empty() || e.groups.iter().any(|g| groups.contains(g)))
            .count() as u64;
        if in_groups < min {
            return Err(format!(
                "the quorum needs {min} valid approver signatures{} of roster version {}; the artifact carries {in_groups}",
                if groups.is_empty() { String::new() } else { format!(" from {}", groups.join(" or ")) },
                roster.version
            ));
        }
    }
    if (valid.len() as u64) < u64::from(floor) {
        return Err(format!(
            "this action needs {floor} valid approver signatures of roster version {} (its floor); the artifact carries {}",
            roster.version,
            valid.len()
        ));
    }
    Ok(())
}

/// `quorum.min` and `quorum.groups` of an artifact (0 and none when it has no quorum).
fn quorum_of(art: &Artifact) -> Result<(u64, Vec<String>), String> {
    let Some(q) = art.raw().get("quorum") else {
        return Ok((0, Vec::new()));
    };
    if q.is_null() {
        return Ok((0, Vec::new()));
    }
    let min = q
        .get("min")
        .and_then(Value::as_u64)
        .ok_or("field 'quorum.min' must be a whole number")?;
    let groups = match q.get("groups") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(g)) => g
            .iter()
            .map(|x| x.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .ok_or("field 'quorum.groups' must be an array of strings")?,
        Some(_) => return Err("field 'quorum.groups' must be an array of strings".into()),
    };
    Ok((min, groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::{parse, sign_v1_object, vote_message};
    use crate::keys::{signing_key_from_seed, verifying_key_b64};
    use serde_json::json;

    fn key(n: u8) -> SigningKey {
        signing_key_from_seed([n; 32])
    }

    fn roster(gate: &SigningKey) -> Value {
        let entry = |id: &str, g: &str, sk: &SigningKey| json!({"id": id, "groups": [g], "key_id": key_id(&sk.verifying_key()), "public_key": verifying_key_b64(&sk.verifying_key())});
        let unsigned = json!({"v": 1, "roster_version": 3, "approvers": [
            entry("alice", "finance", &key(1)), entry("bob", "finance", &key(2)), entry("carol", "ops", &key(3)),
        ]});
        sign_roster(unsigned.as_object().unwrap().clone(), gate)
    }

    fn vote(id: &str, sk: &SigningKey, rh: &str) -> Value {
        json!({"id": id, "key_id": key_id(&sk.verifying_key()), "signature": sign_b64(sk, &vote_message(rh, id))})
    }

    fn artifact(gate: &SigningKey, approvers: Vec<Value>, quorum: Option<Value>) -> Artifact {
        let rh = "ab".repeat(32);
        let mut m = json!({"v": 1, "approval_id": "a", "tenant_id": "t", "action": "x",
            "request_hash": rh, "intent_hash": "cd".repeat(32), "nonce": "n",
            "issued_at": "2026-11-21T10:00:00Z", "expires_at": "2026-11-21T10:05:00Z",
            "decision_id": null, "policy_hash": null, "approvers": approvers});
        if let Some(q) = quorum {
            m["quorum"] = q;
        }
        parse(&sign_v1_object(m.as_object().unwrap().clone(), gate)).unwrap()
    }

    #[test]
    fn a_roster_verifies_only_with_its_gate_key_and_unchanged() {
        let gate = key(9);
        let r = roster(&gate);
        let ok = verify_roster(&r, &[gate.verifying_key()]).unwrap();
        assert_eq!(ok.version, 3);
        assert_eq!(ok.approvers.len(), 3);
        assert!(verify_roster(&r, &[key(8).verifying_key()])
            .unwrap_err()
            .contains("not a configured"));
        let mut t = r.clone();
        t["approvers"][0]["groups"] = json!(["ops"]);
        assert!(verify_roster(&t, &[gate.verifying_key()])
            .unwrap_err()
            .contains("does not verify"));
        // Unsorted, though signed, is refused.
        let mut u = r.as_object().unwrap().clone();
        let mut list = u["approvers"].as_array().unwrap().clone();
        list.reverse();
        u.insert("approvers".into(), Value::Array(list));
        let u = sign_roster(u, &gate);
        assert!(verify_roster(&u, &[gate.verifying_key()])
            .unwrap_err()
            .contains("sorted"));
    }

    #[test]
    fn a_quorum_needs_distinct_valid_votes_from_its_groups_and_the_floor_any() {
        let gate = key(9);
        let r = verify_roster(&roster(&gate), &[gate.verifying_key()]).unwrap();
        let rh = "ab".repeat(32);
        let q2 = Some(json!({"min": 2, "groups": ["finance"]}));
        let two = artifact(
            &gate,
            vec![vote("alice", &key(1), &rh), vote("bob", &key(2), &rh)],
            q2.clone(),
        );
        assert!(check_quorum(&two, &r, 0).is_ok());
        assert!(check_quorum(&two, &r, 2).is_ok());
        assert!(check_quorum(&two, &r, 3).unwrap_err().contains("floor"));
        // The same approver twice counts once; a vote by the wrong key or for another request
        // does not count; an approver of another group does not count for the quorum.
        for approvers in [
            vec![vote("alice", &key(1), &rh), vote("alice", &key(1), &rh)],
            vec![vote("alice", &key(1), &rh), vote("bob", &key(7), &rh)],
            vec![
                vote("alice", &key(1), &rh),
                vote("bob", &key(2), &"ef".repeat(32)),
            ],
            vec![vote("alice", &key(1), &rh), vote("carol", &key(3), &rh)],
            vec![vote("alice", &key(1), &rh), vote("mallory", &key(5), &rh)],
        ] {
            let a = artifact(&gate, approvers, q2.clone());
            assert!(check_quorum(&a, &r, 0).is_err());
        }
        // carol (ops) counts toward a floor, which names no group.
        let mixed = artifact(
            &gate,
            vec![vote("alice", &key(1), &rh), vote("carol", &key(3), &rh)],
            None,
        );
        assert!(check_quorum(&mixed, &r, 2).is_ok());
        // The gate alone (no approvers) meets no floor.
        let none = artifact(&gate, vec![], None);
        assert!(check_quorum(&none, &r, 0).is_ok());
        assert!(check_quorum(&none, &r, 1).is_err());
    }
}
