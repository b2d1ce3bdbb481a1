//! The core's per-request work, function by function: parse a body as I-JSON, hash the request,
//! build and sign a receipt, verify an approval artifact and an evidence object.
//!
//! `cargo bench -p openexec-core`

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use openexec_core::artifact::{self, RequestBinding, V1Params};
use openexec_core::hash::{intent_hash, legacy_action_hash, request_hash};
use openexec_core::json::{canonicalize, parse_ijson, DEFAULT_MAX_DEPTH};
use openexec_core::keys::signing_key_from_seed;
use openexec_core::receipt::{self, verify_evidence, Evidence, HandlerRef, Receipt, Status};
use serde_json::{json, Value};
use std::hint::black_box;

const BODY: &[u8] = br#"{"action": "send_email", "payload": {"to": ["a@example.com", "b@example.com"], "subject": "Q3 numbers", "body": "Hello,\nplease find the numbers attached.\n", "amount": 12.5, "cc": []}, "nonce": "req-7f3a9c1e"}"#;

fn receipt(payload: &Value) -> Receipt {
    let rh = request_hash("send_email", "req-7f3a9c1e", payload, "default");
    Receipt {
        v: 1,
        exec_id: rh.clone(),
        tenant_id: "default".into(),
        action: "send_email".into(),
        nonce: "req-7f3a9c1e".into(),
        intent_hash: intent_hash("send_email", payload),
        request_hash: rh,
        mode: "clawshield".into(),
        approval: None,
        status: Status::Executed,
        code: None,
        result_hash: Some("0".repeat(64)),
        handler: Some(HandlerRef {
            name: "builtin:echo".into(),
            digest: "1".repeat(64),
        }),
    }
}

fn benches(c: &mut Criterion) {
    let body = parse_ijson(BODY, DEFAULT_MAX_DEPTH).unwrap();
    let payload = body["payload"].clone();
    let sk = signing_key_from_seed([7; 32]);

    c.bench_function("parse_ijson request body", |b| {
        b.iter(|| parse_ijson(black_box(BODY), DEFAULT_MAX_DEPTH).unwrap())
    });
    c.bench_function("canonicalize payload", |b| {
        b.iter(|| canonicalize(black_box(&payload)))
    });
    c.bench_function("intent_hash + request_hash", |b| {
        b.iter(|| {
            (
                intent_hash("send_email", black_box(&payload)),
                request_hash("send_email", "req-7f3a9c1e", black_box(&payload), "default"),
            )
        })
    });
    c.bench_function("legacy_action_hash (v0)", |b| {
        b.iter(|| legacy_action_hash("send_email", black_box(&payload)))
    });
    let r = receipt(&payload);
    c.bench_function("receipt hash + sign", |b| {
        b.iter(|| {
            let h = black_box(&r).hash();
            receipt::sign(&h, &sk)
        })
    });
    let h = r.hash();
    let ev = Evidence {
        receipt: r.to_value(),
        receipt_hash: h.clone(),
        signature: receipt::sign(&h, &sk),
        key_id: openexec_core::keys::key_id(&sk.verifying_key()),
        log_index: Some(0),
        logged: None,
        inclusion: None,
    };
    let ev = serde_json::to_value(&ev).unwrap();
    let pk = [sk.verifying_key()];
    c.bench_function("verify_evidence", |b| {
        b.iter(|| verify_evidence(black_box(&ev), &pk))
    });
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let art = artifact::sign_v1(
        &V1Params {
            approval_id: "ap-1",
            tenant_id: "default",
            action: "send_email",
            payload: &payload,
            nonce: "req-7f3a9c1e",
            issued_at: t0,
            expires_at: t0 + chrono::Duration::days(1),
            decision_id: None,
            policy_hash: None,
        },
        &sk,
    );
    let rh = request_hash("send_email", "req-7f3a9c1e", &payload, "default");
    let ih = intent_hash("send_email", &payload);
    c.bench_function("artifact parse + verify (v1)", |b| {
        b.iter(|| {
            let a = artifact::parse(black_box(&art)).unwrap();
            let binding = RequestBinding {
                tenant_id: "default",
                action: "send_email",
                nonce: "req-7f3a9c1e",
                payload: &payload,
                request_hash: &rh,
                intent_hash: &ih,
            };
            artifact::verify(&a, &pk, &binding, t0, 30, true).unwrap()
        })
    });
    let _ = json!(null);
}

criterion_group!(core, benches);
criterion_main!(core);
