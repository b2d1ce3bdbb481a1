//! Full offline verification of evidence (SPEC §6–§7): the receipt's hash and signature
//! ([`crate::receipt::verify_evidence`]), and when the evidence carries `inclusion`, that its
//! leaf is in the tree its checkpoint commits to, that the log's key signed that checkpoint, and
//! that at least `k` of the trusted witnesses cosigned it.
//!
//! The inclusion part ([`check_inclusion`]) is written once for every log whose entries carry
//! an `inclusion`: OpenExec's receipts here, ClawShield's decisions in [`crate::decision`].
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
    let s = |k: &str| evidence.get(k).and_then(Value::as_str).unwrap_or_default();
    let receipt = evidence.get("receipt").cloned().unwrap_or(Value::Null);
    let leaf = |logged_at: &str| Ok(log_leaf(&receipt, s("signature"), s("key_id"), logged_at));
    check_inclusion(
        &mut report,
        &Logged {
            checks: "",
            context: "",
            inclusion: evidence.get("inclusion"),
            log_index: evidence.get("log_index"),
            leaf: &leaf,
        },
        trust,
    );
    report
}

/// One log entry as its evidence presents it, for [`check_inclusion`].
pub struct Logged<'a> {
    /// Prefix of the check names: `""` gives `inclusion`, `checkpoint_signature`, `witnesses`;
    /// `"decision_"` gives `decision_inclusion`, ….
    pub checks: &'a str,
    /// Put before every error message (`"decision: "`), to say which log it is about.
    pub context: &'a str,
    /// The evidence's `inclusion` member, if any (null counts as none).
    pub inclusion: Option<&'a Value>,
    /// The index the evidence claims for the entry (its `log_index`): the proof's `leaf_index`
    /// must be it.
    pub log_index: Option<&'a Value>,
    /// The entry's leaf data, given the inclusion's `logged_at` (an error if they disagree).
    pub leaf: &'a dyn Fn(&str) -> Result<Vec<u8>, String>,
}

/// Check one entry's `inclusion` (SPEC §7) against its log and record the outcome in `report`
/// (which becomes invalid on any failure): `inclusion` (the leaf is at `leaf_index` in the tree
/// the checkpoint commits to), `checkpoint_signature` (the trusted log key signed that
/// checkpoint, of the size the proof is for) and, when `k > 0`, `witnesses`. Without an
/// `inclusion`, nothing is checked unless `trust` requires one (`require_inclusion`, or `k > 0`).
pub fn check_inclusion(report: &mut VerifyReport, entry: &Logged, trust: &LogTrust) {
    let name = |c: &str| format!("{}{c}", entry.checks);
    let set = |report: &mut VerifyReport, c: &str, r: Result<(), String>| {
        report.checks.insert(name(c), r.is_ok());
        if let Err(e) = r {
            report.errors.push(format!("{}{e}", entry.context));
            report.valid = false;
        }
    };
    let Some(inc) = entry.inclusion.filter(|v| !v.is_null()) else {
        if trust.require_inclusion || trust.k > 0 {
            set(
                report,
                "inclusion",
                Err("the evidence has no inclusion proof yet (no checkpoint covers it)".into()),
            );
        }
        return;
    };
    match inclusion_checks(entry, inc, trust) {
        Ok(witnesses) => {
            set(report, "checkpoint_signature", Ok(()));
            set(report, "inclusion", Ok(()));
            if trust.k > 0 {
                set(report, "witnesses", witnesses);
            }
        }
        Err((failed, e)) => {
            let mut names = vec!["checkpoint_signature", "inclusion"];
            if trust.k > 0 {
                names.push("witnesses");
            }
            for c in names {
                report.checks.entry(name(c)).or_insert(false);
            }
            set(report, failed, Err(e));
        }
    }
}

/// The witnesses' verdict, or the check that failed first and why.
fn inclusion_checks(
    entry: &Logged,
    inc: &Value,
    trust: &LogTrust,
) -> Result<Result<(), String>, (&'static str, String)> {
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
    if entry.log_index.and_then(Value::as_u64) != Some(index) {
        return Err(bad(
            "inclusion leaf_index differs from the evidence's log_index".into(),
        ));
    }
    let leaf = leaf_hash(&(entry.leaf)(logged_at).map_err(bad)?);

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
    Ok(if n >= trust.k {
        Ok(())
    } else {
        Err(format!(
            "{n} of the trusted witnesses cosigned the checkpoint; {} required",
            trust.k
        ))
    })
}
