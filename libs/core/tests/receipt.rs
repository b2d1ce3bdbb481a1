//! Receipts, their signatures, and offline evidence checks.

use openexec_core::artifact::ApprovalRef;
use openexec_core::hash::{intent_hash, request_hash};
use openexec_core::json::{jcs_sha256, sha256_hex};
use openexec_core::keys::{key_id, signing_key_from_seed, verify_b64, SigningKey};
use openexec_core::receipt::*;
use serde_json::{json, Value};

fn receipt() -> Receipt {
    let payload = json!({"msg": "hi"});
    let rh = request_hash("echo", "n1", &payload, "default");
    Receipt {
        v: 1,
        exec_id: rh.clone(),
        tenant_id: "default".into(),
        action: "echo".into(),
        nonce: "n1".into(),
        intent_hash: intent_hash("echo", &payload),
        request_hash: rh,
        mode: "demo".into(),
        approval: None,
        status: Status::Executed,
        code: None,
        result_hash: Some(jcs_sha256(&json!({"echo": {"msg": "hi"}}))),
        handler: Some(HandlerRef {
            name: "builtin:echo".into(),
            digest: sha256_hex(b"builtin:echo"),
        }),
    }
}

fn key() -> SigningKey {
    signing_key_from_seed([11; 32])
}

fn evidence(r: &Receipt, sk: &SigningKey) -> Value {
    let h = r.hash();
    serde_json::to_value(Evidence {
        receipt: r.to_value(),
        receipt_hash: h.clone(),
        signature: sign(&h, sk),
        key_id: key_id(&sk.verifying_key()),
        log_index: Some(41),
        logged: None,
        inclusion: None,
    })
    .unwrap()
}

#[test]
fn receipt_shape() {
    let r = receipt();
    let v = r.to_value();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|s| s.as_str()).collect();
    let mut want = vec![
        "v",
        "exec_id",
        "tenant_id",
        "action",
        "nonce",
        "intent_hash",
        "request_hash",
        "mode",
        "approval",
        "status",
        "code",
        "result_hash",
        "handler",
    ];
    want.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(v["v"], json!(1));
    assert_eq!(v["approval"], Value::Null);
    assert_eq!(v["code"], Value::Null);
    assert_eq!(v["status"], json!("executed"));
    assert_eq!(v["handler"]["name"], json!("builtin:echo"));
    assert_eq!(r.hash(), jcs_sha256(&v));
    // round trip through serde
    let back: Receipt = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
    // with an approval
    let mut r2 = r.clone();
    r2.mode = "clawshield".into();
    r2.approval = Some(ApprovalRef {
        approval_id: "a".into(),
        format: "v1".into(),
        key_id: "0123456789abcdef".into(),
        decision_id: None,
    });
    r2.status = Status::Rejected;
    r2.code = Some("approval_expired".into());
    r2.result_hash = None;
    let v2 = r2.to_value();
    assert_eq!(
        v2["approval"],
        json!({"approval_id": "a", "format": "v1", "key_id": "0123456789abcdef", "decision_id": null})
    );
    assert_eq!(v2["status"], json!("rejected"));
    assert_ne!(r2.hash(), r.hash());
}

#[test]
fn statuses() {
    for (s, name) in [
        (Status::Executed, "executed"),
        (Status::Failed, "failed"),
        (Status::Rejected, "rejected"),
        (Status::Interrupted, "interrupted"),
    ] {
        assert_eq!(s.as_str(), name);
        assert_eq!(serde_json::to_value(s).unwrap(), json!(name));
        assert_eq!(serde_json::from_value::<Status>(json!(name)).unwrap(), s);
    }
}

#[test]
fn receipt_hash_is_stable() {
    // no clock, no key: the same receipt hashes the same, and hashing is JCS of the fields
    let r = receipt();
    assert_eq!(r.hash(), receipt().hash());
    assert_eq!(r.hash().len(), 64);
}

#[test]
fn signing_message_bytes() {
    let h = "ab".repeat(32);
    let m = signing_message(&h);
    assert_eq!(m, format!("openexec-receipt-v1:{h}").into_bytes());
    assert!(m.starts_with(RECEIPT_CONTEXT));
    let sk = key();
    assert!(verify_b64(&sk.verifying_key(), &m, &sign(&h, &sk)));
}

#[test]
fn good_evidence() {
    let sk = key();
    let ev = evidence(&receipt(), &sk);
    assert!(ev.get("inclusion").is_none());
    let rep = verify_evidence(&ev, &[sk.verifying_key()]);
    assert!(rep.valid, "{rep:?}");
    assert!(rep.errors.is_empty());
    assert_eq!(rep.checks.len(), 4);
    assert!(rep.checks.values().all(|v| *v));
    // with a rotated-out key listed first
    let old = signing_key_from_seed([12; 32]).verifying_key();
    assert!(verify_evidence(&ev, &[old, sk.verifying_key()]).valid);
    // inclusion present (not checked here) is fine
    let mut with_inc = ev.clone();
    with_inc["inclusion"] = json!({"leaf_index": 41, "tree_size": 42, "hashes": []});
    assert!(verify_evidence(&with_inc, &[sk.verifying_key()]).valid);
    // Evidence round-trips through serde
    let e: Evidence = serde_json::from_value(with_inc.clone()).unwrap();
    assert_eq!(serde_json::to_value(&e).unwrap(), with_inc);
}

fn failed(rep: &VerifyReport) -> Vec<&str> {
    rep.checks
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(k, _)| k.as_str())
        .collect()
}

#[test]
fn tampered_evidence() {
    let sk = key();
    let pk = sk.verifying_key();
    let ev = evidence(&receipt(), &sk);

    // every receipt field changed → receipt_hash fails (signature over the stated hash still ok)
    for field in ev["receipt"].as_object().unwrap().keys() {
        let mut t = ev.clone();
        t["receipt"][field] = json!("tampered");
        let rep = verify_evidence(&t, &[pk]);
        assert!(!rep.valid, "{field}");
        assert_eq!(failed(&rep), vec!["receipt_hash"], "{field}");
        assert!(rep.errors[0].contains("does not match"), "{:?}", rep.errors);
    }
    // an extra receipt field
    let mut t = ev.clone();
    t["receipt"]["extra"] = json!(1);
    assert_eq!(failed(&verify_evidence(&t, &[pk])), vec!["receipt_hash"]);

    // receipt_hash changed (to the hash of a tampered receipt): hash and signature fail
    let mut t = ev.clone();
    let mut r2 = receipt();
    r2.status = Status::Failed;
    t["receipt"] = r2.to_value();
    t["receipt_hash"] = json!(r2.hash());
    assert_eq!(failed(&verify_evidence(&t, &[pk])), vec!["signature"]);
    let mut t = ev.clone();
    t["receipt_hash"] = json!("0".repeat(64));
    assert_eq!(
        failed(&verify_evidence(&t, &[pk])),
        vec!["receipt_hash", "signature"]
    );

    // signature changed
    let mut t = ev.clone();
    t["signature"] = json!(sign(&"1".repeat(64), &sk));
    assert_eq!(failed(&verify_evidence(&t, &[pk])), vec!["signature"]);
    t["signature"] = json!("garbage");
    assert_eq!(failed(&verify_evidence(&t, &[pk])), vec!["signature"]);

    // signed by another key that claims the known key id
    let mallory = signing_key_from_seed([13; 32]);
    let mut t = ev.clone();
    t["signature"] = json!(sign(ev["receipt_hash"].as_str().unwrap(), &mallory));
    assert_eq!(failed(&verify_evidence(&t, &[pk])), vec!["signature"]);

    // key_id changed / unknown key: signature cannot run
    let mut t = ev.clone();
    t["key_id"] = json!("ffffffffffffffff");
    let rep = verify_evidence(&t, &[pk]);
    assert_eq!(failed(&rep), vec!["key_known", "signature"]);
    assert!(rep.errors.iter().any(|e| e.contains("ffffffffffffffff")));
    assert!(!verify_evidence(&ev, &[]).valid);

    // log_index changed: not covered by the signature (it is where, not what) but must be well-formed
    let mut t = ev.clone();
    t["log_index"] = json!(7);
    assert!(verify_evidence(&t, &[pk]).valid);
    for bad in [json!(-1), json!("41"), json!(1.5), Value::Null] {
        let mut t = ev.clone();
        t["log_index"] = bad.clone();
        let rep = verify_evidence(&t, &[pk]);
        assert_eq!(
            failed(&rep),
            vec!["key_known", "receipt_hash", "signature", "well_formed"],
            "{bad}"
        );
        assert!(rep.errors[0].contains("log_index"));
    }
}

#[test]
fn malformed_evidence() {
    let sk = key();
    let pk = sk.verifying_key();
    let ev = evidence(&receipt(), &sk);
    for field in [
        "receipt",
        "receipt_hash",
        "signature",
        "key_id",
        "log_index",
    ] {
        let mut t = ev.clone();
        t.as_object_mut().unwrap().remove(field);
        let rep = verify_evidence(&t, &[pk]);
        assert!(!rep.valid);
        assert!(!rep.checks["well_formed"]);
        assert!(rep.errors[0].contains(field), "{:?}", rep.errors);
        let mut t = ev.clone();
        t[field] = json!([1]);
        let rep = verify_evidence(&t, &[pk]);
        assert!(!rep.checks["well_formed"], "{field}");
    }
    let mut t = ev.clone();
    t["inclusion"] = json!("x");
    assert!(!verify_evidence(&t, &[pk]).checks["well_formed"]);
    for odd in [
        json!(null),
        json!([]),
        json!("evidence"),
        json!(1),
        json!({}),
    ] {
        let rep = verify_evidence(&odd, &[pk]);
        assert!(!rep.valid);
        assert!(rep.checks.values().all(|v| !*v));
        assert!(!rep.errors.is_empty());
    }
}

#[test]
fn receipt_hashed_as_given() {
    // A receipt with extra or reordered fields is hashed as it is, not re-serialised.
    let sk = key();
    let mut r = receipt().to_value();
    r["future_field"] = json!({"b": 1, "a": [1.5, "x"]});
    let h = jcs_sha256(&r);
    let ev = json!({
        "receipt": r,
        "receipt_hash": h,
        "signature": sign(&h, &sk),
        "key_id": key_id(&sk.verifying_key()),
        "log_index": 0,
    });
    assert!(verify_evidence(&ev, &[sk.verifying_key()]).valid);
}
