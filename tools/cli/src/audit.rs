//! `openexec log audit`: replay a whole log from its public endpoints and check it with public
//! keys alone — the checkpoint's signature, every entry hashing into its root, every entry
//! (an OpenExec receipt log: every receipt's hash and signature; ClawShield's decision log,
//! `--decisions`: every entry a well-formed decision log entry of SPEC §9, in canonical form,
//! each `decision_id` once), and consistency with the last checkpoint this auditor trusted
//! (remembered in a state file between runs).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use openexec_core::decision;
use openexec_core::keys::VerifyingKey;
use openexec_log::note::{self, Checkpoint};
use openexec_log::{leaf_hash, verify_consistency, Frontier, Hash};
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub struct Audit {
    pub url: String,
    pub log_key: Option<String>,
    pub entries: Entries,
    pub state: Option<PathBuf>,
}

/// What the log's entries are.
pub enum Entries {
    /// OpenExec's receipt log, with the trusted receipt keys (none: the ones the log publishes).
    Receipts(Vec<VerifyingKey>),
    /// ClawShield's decision log.
    Decisions,
}

/// What the entries seen so far tell.
#[derive(Default)]
struct Tally {
    bad: u64,
    /// Decision logs: entries per kind, and where each decision_id was first seen.
    kinds: std::collections::BTreeMap<String, u64>,
    ids: std::collections::HashMap<String, u64>,
    /// Receipt logs: a bad entry that reads as a decision log entry (a hint to the auditor).
    looks_like_decisions: bool,
}

/// Findings: problems found in the log (exit 1) versus failures to audit at all (exit 2).
pub enum Outcome {
    Clean(Value),
    Problems(Value),
}

async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<reqwest::Response> {
    let r = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !r.status().is_success() {
        bail!("GET {url}: {}", r.status());
    }
    Ok(r)
}

pub async fn run(a: Audit) -> anyhow::Result<Outcome> {
    let base = a.url.trim_end_matches('/').to_string();
    let client = reqwest::Client::new();
    let mut problems: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();

    let keys: Value = get(&client, &format!("{base}/keys")).await?.json().await?;
    let log_key = match &a.log_key {
        Some(k) => k.clone(),
        None => {
            warnings.push("no --log-key: trusting the log key the log itself publishes".into());
            keys["log"]["verifier_key"]
                .as_str()
                .ok_or_else(|| anyhow!("{base}/keys has no log.verifier_key"))?
                .to_string()
        }
    };
    let verifier = note::parse_verifier_key(&log_key).map_err(|e| anyhow!("log key: {e}"))?;
    let mut receipt_keys = match &a.entries {
        Entries::Receipts(k) => k.clone(),
        Entries::Decisions => Vec::new(),
    };
    if receipt_keys.is_empty() && matches!(a.entries, Entries::Receipts(_)) {
        warnings.push("no --key: trusting the receipt keys the log itself publishes".into());
        for k in keys["receipt_keys"].as_array().into_iter().flatten() {
            let text = k["public_key"].as_str().unwrap_or_default();
            receipt_keys.push(
                openexec_core::keys::parse_verifying_key(text)
                    .map_err(|e| anyhow!("{base}/keys: {e}"))?,
            );
        }
    }

    let text = get(&client, &format!("{base}/log/checkpoint"))
        .await?
        .text()
        .await?;
    let opened = match note::open_note(&text, &verifier) {
        Ok(o) => o,
        Err(e) => {
            problems.push(format!(
                "the checkpoint does not verify with the log key: {e}"
            ));
            return Ok(Outcome::Problems(
                json!({"problems": problems, "warnings": warnings}),
            ));
        }
    };
    let cp = Checkpoint::parse_body(&opened.body).map_err(|e| anyhow!("checkpoint: {e}"))?;
    if cp.origin != verifier.name() {
        problems.push(format!(
            "the checkpoint's origin '{}' is not the log key's name '{}'",
            cp.origin,
            verifier.name()
        ));
    }

    // Every entry, in pages; each must be a receipt signed by a trusted key, or a decision log
    // entry.
    let mut tree = Frontier::empty();
    let mut tally = Tally::default();
    while tree.size() < cp.size {
        let start = tree.size();
        let url = format!("{base}/log/entries?start={start}&end={}", cp.size);
        let page: Vec<String> = get(&client, &url).await?.json().await?;
        if page.is_empty() {
            bail!("{url} returned no entries");
        }
        for (i, e) in page.iter().enumerate() {
            let index = start + i as u64;
            let data = B64
                .decode(e)
                .map_err(|err| anyhow!("entry {index} is not base64: {err}"))?;
            tree.append(leaf_hash(&data)).map_err(|e| anyhow!("{e}"))?;
            let checked = match a.entries {
                Entries::Receipts(_) => check_entry(&data, &receipt_keys).inspect_err(|_| {
                    tally.looks_like_decisions |= decision::parse_leaf(&data).is_ok();
                }),
                Entries::Decisions => check_decision(&data, index, &mut tally),
            };
            if let Err(why) = checked {
                tally.bad += 1;
                if problems.len() < 20 {
                    problems.push(format!("entry {index}: {why}"));
                }
            }
        }
    }
    if tree.root() != cp.root {
        problems.push(format!(
            "the {} entries do not hash to the checkpoint's root",
            cp.size
        ));
    }

    // Consistency with the last checkpoint this auditor trusted.
    let state_path = a.state.clone();
    let mut consistency = Value::Null;
    if let Some(p) = &state_path {
        if let Ok(text) = std::fs::read_to_string(p) {
            let st: Value = serde_json::from_str(&text)
                .with_context(|| format!("state file {} is not JSON", p.display()))?;
            if st["origin"] == json!(cp.origin) {
                let size = st["size"].as_u64().unwrap_or(0);
                let root: Hash = B64
                    .decode(st["root"].as_str().unwrap_or_default())
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| anyhow!("state file {}: bad root", p.display()))?;
                consistency = json!({"from": size, "to": cp.size});
                if cp.size < size {
                    problems.push(format!("the log shrank from {size} to {}", cp.size));
                } else if cp.size == size && cp.root != root {
                    problems.push(format!("fork: size {size} with another root"));
                } else if size > 0 && cp.size > size {
                    let url = format!(
                        "{base}/log/proof/consistency?first={size}&second={}",
                        cp.size
                    );
                    let proof: Value = get(&client, &url).await?.json().await?;
                    let hashes: Vec<Hash> = proof["hashes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|h| B64.decode(h.as_str()?).ok()?.try_into().ok())
                        .collect();
                    if let Err(e) = verify_consistency(size, cp.size, &root, &cp.root, &hashes) {
                        problems.push(format!(
                            "not consistent with the checkpoint trusted before ({size}): {e}"
                        ));
                    }
                }
            }
        }
    }
    if tally.looks_like_decisions {
        warnings.push(
            "entries of this log read as ClawShield decision log entries: audit it with --decisions"
                .into(),
        );
    }
    let mut report = json!({
        "origin": cp.origin,
        "tree_size": cp.size,
        "root": B64.encode(cp.root),
        "entries_checked": tree.size(),
        "consistency": consistency,
        "problems": problems,
        "warnings": warnings,
    });
    match a.entries {
        Entries::Receipts(_) => report["bad_receipts"] = json!(tally.bad),
        Entries::Decisions => {
            report["bad_entries"] = json!(tally.bad);
            report["kinds"] = json!(tally.kinds);
        }
    }
    if !problems.is_empty() {
        return Ok(Outcome::Problems(report));
    }
    if let Some(p) = &state_path {
        let st = json!({"origin": cp.origin, "size": cp.size, "root": B64.encode(cp.root), "checkpoint": text});
        std::fs::write(p, serde_json::to_vec_pretty(&st)?)
            .with_context(|| format!("cannot write state file {}", p.display()))?;
    }
    Ok(Outcome::Clean(report))
}

/// One leaf of a decision log: a well-formed entry in canonical form whose `decision_id` no
/// earlier entry has (a decision id names one entry: `GET /v1/decisions/{id}`, and the receipts
/// that cite it, rely on that).
fn check_decision(data: &[u8], index: u64, tally: &mut Tally) -> Result<(), String> {
    let entry = decision::parse_leaf(data).map_err(|e| e.to_string())?;
    let s = |k: &str| entry[k].as_str().unwrap_or_default().to_string();
    *tally.kinds.entry(s("kind")).or_default() += 1;
    match tally.ids.entry(s("decision_id")) {
        std::collections::hash_map::Entry::Occupied(first) => Err(format!(
            "decision_id {} was already used by entry {}",
            first.key(),
            first.get()
        )),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(index);
            Ok(())
        }
    }
}

/// One leaf: `{"receipt", "signature", "key_id", "logged_at"}` whose receipt hashes and is
/// signed by a trusted receipt key.
fn check_entry(data: &[u8], keys: &[VerifyingKey]) -> Result<(), String> {
    let leaf: Value = serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
    if leaf.get("logged_at").and_then(Value::as_str).is_none() {
        return Err("no logged_at".into());
    }
    let receipt = leaf.get("receipt").cloned().unwrap_or(Value::Null);
    let ev = json!({
        "receipt": receipt,
        "receipt_hash": openexec_core::json::jcs_sha256(&receipt),
        "signature": leaf.get("signature"),
        "key_id": leaf.get("key_id"),
        "log_index": 0,
    });
    let r = openexec_core::receipt::verify_evidence(&ev, keys);
    if r.valid {
        Ok(())
    } else {
        Err(r.errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Value {
        json!({
            "v": 1, "decision_id": id, "kind": "vote", "proposal_id": "p_1", "tenant_id": "t",
            "agent_id": "agent", "action": "charge_card", "intent_hash": "a".repeat(64),
            "request_hash": "b".repeat(64), "nonce": "n", "effect": null, "code": null,
            "rules": null, "policy_hash": null, "approval_id": null, "voter": "alice",
            "vote": "approve", "logged_at": "2026-12-02T09:09:50Z",
        })
    }

    #[test]
    fn decision_leaves_are_canonical_entries_each_decision_id_once() {
        let mut t = Tally::default();
        let jcs = |v: &Value| openexec_core::json::canonicalize(v);
        assert_eq!(check_decision(&jcs(&entry("v_1")), 0, &mut t), Ok(()));
        assert_eq!(check_decision(&jcs(&entry("v_2")), 1, &mut t), Ok(()));
        assert_eq!(
            check_decision(&jcs(&entry("v_1")), 2, &mut t),
            Err("decision_id v_1 was already used by entry 0".into())
        );
        let pretty = serde_json::to_vec_pretty(&entry("v_3")).unwrap();
        assert_eq!(
            check_decision(&pretty, 3, &mut t),
            Err("not in canonical form (JCS)".into())
        );
        let mut bad = entry("v_4");
        bad["vote"] = json!("maybe");
        assert!(check_decision(&jcs(&bad), 4, &mut t)
            .unwrap_err()
            .contains("field 'vote'"));
        assert_eq!(
            t.kinds.get("vote"),
            Some(&3),
            "the three that read as entries"
        );
    }
}
