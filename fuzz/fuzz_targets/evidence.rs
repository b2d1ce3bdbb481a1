//! Evidence given to `POST /receipts/verify` (and to `openexec verify`): bytes →
//! `json::parse_ijson` → the evidence object (bare, or under `"evidence"`, as the handler picks
//! it) → `evidence::verify_full` with the fixed receipt key, the log's note key and the two
//! witnesses, at k = 0 (what the service checks), k = 1 with an inclusion required, and k = 2.
//!
//! Properties:
//! - no input panics;
//! - a report is valid exactly when every check it lists passed, and then it has no errors;
//!   an invalid one says why;
//! - stricter trust never accepts more: valid at k = 2 ⇒ valid at k = 1 ⇒ valid at k = 0;
//! - the verdict depends on the evidence, not its layout: re-serialised, the report is the same;
//! - valid ⇒ every check holds, recomputed here from the public keys alone: the receipt hashes
//!   to `receipt_hash`, the receipt key signed it, and with `inclusion`, the log key signed the
//!   checkpoint of that size and the leaf rebuilt from the evidence is in it;
//! - valid evidence with the receipt, the signature or the log index changed is invalid.

#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use openexec_core::evidence::{verify_full, LogTrust};
use openexec_core::json::{jcs_sha256, parse_ijson};
use openexec_core::keys::{key_id, verify_b64, VerifyingKey};
use openexec_core::receipt::{log_leaf, signing_message, VerifyReport};
use openexec_fuzz::{log_verifier, receipt_key, witnesses, MAX_DEPTH};
use openexec_log::note::{open_note, Checkpoint, CosignerVerifier, Verifier};
use openexec_log::{leaf_hash, verify_inclusion, Hash};
use serde_json::Value;

struct Trust {
    keys: Vec<VerifyingKey>,
    log: Verifier,
    witnesses: Vec<CosignerVerifier>,
}

impl Trust {
    fn report(&self, ev: &Value, k: usize, require_inclusion: bool) -> VerifyReport {
        let trust = LogTrust {
            log: Some(&self.log),
            witnesses: &self.witnesses,
            k,
            require_inclusion,
        };
        verify_full(ev, &self.keys, &trust)
    }
}

fn consistent(r: &VerifyReport) {
    assert_eq!(r.valid, r.checks.values().all(|c| *c), "valid ≠ all checks");
    assert_eq!(
        r.valid,
        r.errors.is_empty(),
        "errors do not match the verdict"
    );
}

/// Recompute what a valid report claims, independently of `verify_full`.
fn check_valid(ev: &Value, t: &Trust) {
    let s = |k: &str| ev.get(k).and_then(Value::as_str).expect("a string field");
    let receipt = ev.get("receipt").expect("a receipt");
    assert!(receipt.is_object());
    assert_eq!(jcs_sha256(receipt), s("receipt_hash"));
    let key = t
        .keys
        .iter()
        .find(|k| key_id(k) == s("key_id"))
        .expect("a known key");
    assert!(verify_b64(
        key,
        &signing_message(s("receipt_hash")),
        s("signature")
    ));
    let Some(inc) = ev.get("inclusion").filter(|i| !i.is_null()) else {
        return;
    };
    let text = |k: &str| inc.get(k).and_then(Value::as_str).expect("a string");
    let num = |k: &str| inc.get(k).and_then(Value::as_u64).expect("a number");
    let opened = open_note(text("checkpoint"), &t.log).expect("the checkpoint opens");
    let cp = Checkpoint::parse_body(&opened.body).expect("a checkpoint");
    assert_eq!(cp.size, num("tree_size"));
    let hashes: Vec<Hash> = inc["hashes"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|h| {
            let b = base64::engine::general_purpose::STANDARD
                .decode(h.as_str().expect("a string"))
                .expect("base64");
            b.try_into().expect("32 bytes")
        })
        .collect();
    let leaf = leaf_hash(&log_leaf(
        receipt,
        s("signature"),
        s("key_id"),
        text("logged_at"),
    ));
    assert_eq!(ev["log_index"].as_u64(), Some(num("leaf_index")));
    verify_inclusion(&leaf, num("leaf_index"), cp.size, &hashes, &cp.root)
        .expect("the inclusion proof verifies");
}

fn tampered(ev: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut r = ev.clone();
    r["receipt"]["fuzz_extra"] = Value::Bool(true);
    out.push(r);
    let mut s = ev.clone();
    s["signature"] = Value::String(format!("x{}", ev["signature"].as_str().unwrap_or_default()));
    out.push(s);
    if ev.get("inclusion").is_some_and(Value::is_object) {
        let mut i = ev.clone();
        i["log_index"] = Value::from(ev["log_index"].as_u64().unwrap_or(0).wrapping_add(1));
        out.push(i);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = parse_ijson(data, MAX_DEPTH) else {
        return;
    };
    let Value::Object(obj) = &body else { return };
    // As `verify_receipt` in services/exec/src/http.rs picks the evidence.
    let ev = match obj.get("evidence") {
        Some(e) if e.is_object() => e,
        _ if obj.get("receipt").is_some_and(Value::is_object) => &body,
        _ => return,
    };
    let t = Trust {
        keys: vec![receipt_key().verifying_key()],
        log: log_verifier(),
        witnesses: witnesses(),
    };
    let r0 = t.report(ev, 0, false);
    let r1 = t.report(ev, 1, true);
    let r2 = t.report(ev, 2, true);
    for r in [&r0, &r1, &r2] {
        consistent(r);
    }
    assert!(!r2.valid || r1.valid, "valid at k = 2 but not at k = 1");
    assert!(!r1.valid || r0.valid, "valid at k = 1 but not at k = 0");

    let bytes = serde_json::to_vec_pretty(ev).expect("serialises");
    let again = parse_ijson(&bytes, MAX_DEPTH).expect("re-serialised evidence parses");
    assert_eq!(
        t.report(&again, 0, false),
        r0,
        "the verdict depends on the layout"
    );

    if r0.valid {
        check_valid(ev, &t);
        for bad in tampered(ev) {
            assert!(
                !t.report(&bad, 0, false).valid,
                "tampered evidence is valid"
            );
        }
    }
});
