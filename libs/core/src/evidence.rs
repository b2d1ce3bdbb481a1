//! Full offline verification of evidence (SPEC §6–§7): the receipt's hash and signature
//! ([`crate::receipt::verify_evidence`]), and when the evidence carries `inclusion`, that its
//! leaf is in the tree its checkpoint commits to, that the log's key signed that checkpoint, and
//! that at least `k` of the trusted witnesses cosigned it.
//!
//! Trust boundary: a verifier trusts only the keys it is given — receipt keys, the log's note
//! verifier key, witness cosigner keys — never anything the evidence says about itself.

use base64::Engine as _;
use openexec_log::note::{self, CosignerVerifier, Verifier};
use openexec_log::{leaf_hash, verify_inclusion, Hash};
use serde_json::Value;

use crate::keys::VerifyingKey;
use crate::receipt::{log_leaf, verify_evidence, VerifyReport};

/// What a verifier trusts beyond the receipt keys.
#[derive(Default)]
pub struct LogTrust<'a> {
    /// The receipt log's note verifier; without it an `inclusion` cannot be checked.
    pub log: Option<&'a Verifier>,
    /// Witnesses whose cosignatures count.
    pub witnesses: &'a [CosignerVerifier],
    /// How many distinct witnesses must have cosigned the checkpoint (0: none required).
    pub k: usize,
    /// Fail when the evidence has no `inclusion` (it is not yet covered by a checkpoint).
    pub require_inclusion: bool,
}

/// Check evidence fully. Adds to [`verify_evidence`]'s checks, when `inclusion` is present or
/// required: `inclusion` (the leaf rebuilt from the receipt hashes up to the checkpoint's root),
/// `checkpoint_signature` (by the trusted log key, of the size the proof is for), and, when
/// `k > 0`, `witnesses` (at least `k` trusted cosignatures).
pub fn verify_full(
    evidence: &Value,
    receipt_keys: &[VerifyingKey],
    trust: &LogTrust,
) -> VerifyReport {
    let mut report = verify_evidence(evidence, receipt_keys);
    let inclusion = evidence.get("inclusion").filter(|v| !v.is_null());
    let Some(inc) = inclusion else {
        if trust.require_inclusion || trust.k > 0 {
            report.checks.insert("inclusion".into(), false);
            report
                .errors
                .push("the evidence has no inclusion proof yet (no checkpoint covers it)".into());
            report.valid = false;
        }
        return report;
    };
    let set = |report: &mut VerifyReport, name: &str, r: Result<(), String>| {
        let ok = r.is_ok();
        report.checks.insert(name.into(), ok);
        if let Err(e) = r {
            report.errors.push(e);
            report.valid = false;
        }
    };
    match check_inclusion(evidence, inc, trust) {
        Ok((sig, witnesses)) => {
            set(&mut report, "checkpoint_signature", sig);
            set(&mut report, "inclusion", Ok(()));
            if trust.k > 0 {
                set(&mut report, "witnesses", witnesses);
            }
        }
        Err((name, e)) => {
            for c in ["checkpoint_signature", "inclusion"] {
                report.checks.entry(c.into()).or_insert(false);
            }
            if trust.k > 0 {
                report.checks.entry("witnesses".into()).or_insert(false);
            }
            set(&mut report, name, Err(e));
        }
    }
    report
}

type Checked = (Result<(), String>, Result<(), String>);

fn check_inclusion(
    evidence: &Value,
    inc: &Value,
    trust: &LogTrust,
) -> Result<Checked, (&'static str, String)> {
    let bad = |m: String| ("inclusion", m);
    let num = |k: &str| {
        inc.get(k).and_then(Value::as_u64).ok_or_else(|| {
            bad(format!(
                "inclusion field '{k}' must be a non-negative integer"
            ))
        })
    };
    let text = |k: &str| {
        inc.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("inclusion field '{k}' must be a string")))
    };
    let index = num("leaf_index")?;
    let size = num("tree_size")?;
    let logged_at = text("logged_at")?;
    let checkpoint = text("checkpoint")?;
    let hashes: Vec<Hash> = inc
        .get("hashes")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("inclusion field 'hashes' must be an array".into()))?
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let b = h
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .ok_or_else(|| bad(format!("inclusion hash {i} is not base64")))?;
            b.try_into()
                .map_err(|_| bad(format!("inclusion hash {i} is not 32 bytes")))
        })
        .collect::<Result<_, _>>()?;
    if evidence.get("log_index").and_then(Value::as_u64) != Some(index) {
        return Err(bad(
            "inclusion leaf_index differs from the evidence's log_index".into(),
        ));
    }
    let s = |k: &str| evidence.get(k).and_then(Value::as_str).unwrap_or_default();
    let receipt = evidence.get("receipt").cloned().unwrap_or(Value::Null);
    let leaf = leaf_hash(&log_leaf(&receipt, s("signature"), s("key_id"), logged_at));

    let Some(log) = trust.log else {
        return Err((
            "checkpoint_signature",
            "no log key was given to check the checkpoint with".into(),
        ));
    };
    let opened = note::open_note(checkpoint, log)
        .map_err(|e| ("checkpoint_signature", format!("checkpoint: {e}")))?;
    let cp = note::Checkpoint::parse_body(&opened.body)
        .map_err(|e| ("checkpoint_signature", format!("checkpoint body: {e}")))?;
    if cp.size != size {
        return Err((
            "checkpoint_signature",
            format!(
                "the checkpoint is for size {}, the proof for size {size}",
                cp.size
            ),
        ));
    }
    verify_inclusion(&leaf, index, size, &hashes, &cp.root)
        .map_err(|e| bad(format!("inclusion proof: {e}")))?;
    let n = note::count_cosignatures(&opened, trust.witnesses);
    let witnesses = if n >= trust.k {
        Ok(())
    } else {
        Err(format!(
            "{n} of the trusted witnesses cosigned the checkpoint; {} required",
            trust.k
        ))
    };
    Ok((Ok(()), witnesses))
}
