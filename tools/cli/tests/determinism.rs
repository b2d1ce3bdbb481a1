//! Receipts are deterministic (SPEC §6): the same request with the same verdict gives the same
//! receipt and receipt hash on any machine and database; only the signature (and key) differ.
//! Each server's evidence verifies with `openexec verify` under its own key and no other.

mod common;

use std::path::Path;

use chrono::{Duration, Utc};
use common::*;
use openexec_core::artifact::{sign_v1, V1Params};
use openexec_core::hash::{intent_hash, request_hash};
use openexec_core::json::jcs_sha256;
use serde_json::{json, Value};

fn write(dir: &Path, name: &str, v: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p.display().to_string()
}

/// `openexec verify` of `evidence` with `key` (PEM text or raw base64): its exit code.
fn verify_exit(dir: &Path, name: &str, evidence: &Value, key: &str) -> i32 {
    let f = write(dir, name, evidence);
    // `--key=…`: a PEM value starts with dashes, which clap would read as a flag after `--key `.
    let o = cli(&["verify", &f, &format!("--key={key}")]);
    exit_code(&o)
}

/// Send the same requests to two fresh servers and compare.
async fn compare(a: &Server, b: &Server, requests: &[(Value, u16)]) {
    let (ka, kb) = (a.keys().await, b.keys().await);
    let pem_a = ka["receipt_keys"][0]["pem"].as_str().unwrap().to_string();
    let pem_b = kb["receipt_keys"][0]["pem"].as_str().unwrap().to_string();
    let b64_a = ka["receipt_keys"][0]["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let b64_b = kb["receipt_keys"][0]["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        ka["receipt_keys"][0]["key_id"], kb["receipt_keys"][0]["key_id"],
        "two fresh servers generated the same receipt key"
    );
    let tmp = tempfile::tempdir().unwrap();
    for (i, (req, want)) in requests.iter().enumerate() {
        let (sa, ra) = a.execute(req).await;
        let (sb, rb) = b.execute(req).await;
        assert_eq!((sa, sb), (*want, *want), "{req}: {ra} / {rb}");
        let (ea, eb) = (&ra["evidence"], &rb["evidence"]);
        assert!(ea.is_object() && eb.is_object(), "{ra} {rb}");
        assert_eq!(ea["receipt"], eb["receipt"], "receipts differ for {req}");
        assert_eq!(
            ea["receipt_hash"], eb["receipt_hash"],
            "receipt hashes differ for {req}"
        );
        assert_eq!(
            ea["receipt_hash"].as_str().unwrap(),
            jcs_sha256(&ea["receipt"])
        );
        assert_eq!(ra["id"], rb["id"]);
        if *want == 200 {
            assert_eq!(ra["receipt"], rb["receipt"]);
            assert_eq!(ra["result"], rb["result"]);
        }
        assert_ne!(ea["signature"], eb["signature"], "signatures should differ");
        assert_ne!(ea["key_id"], eb["key_id"]);
        check_evidence(ea, &ka).unwrap();
        check_evidence(eb, &kb).unwrap();
        // Each server's /receipts/verify accepts its own evidence and not the other's.
        let (st, v) = a.post("/receipts/verify", ea).await;
        assert_eq!((st, &v["valid"]), (200, &json!(true)), "{v}");
        let (st, v) = a.post("/receipts/verify", eb).await;
        assert_eq!(
            (st, &v["valid"]),
            (200, &json!(false)),
            "b's evidence at a: {v}"
        );

        // The whole /execute answer, and the bare evidence, each verify with their own key only.
        let d = tmp.path();
        assert_eq!(
            verify_exit(d, &format!("a{i}.json"), &ra, &pem_a),
            0,
            "a with a"
        );
        assert_eq!(
            verify_exit(d, &format!("b{i}.json"), &rb, &pem_b),
            0,
            "b with b"
        );
        assert_eq!(
            verify_exit(d, &format!("ea{i}.json"), ea, &b64_a),
            0,
            "a with a (base64)"
        );
        assert_eq!(
            verify_exit(d, &format!("eb{i}.json"), eb, &b64_b),
            0,
            "b with b (base64)"
        );
        assert_eq!(
            verify_exit(d, &format!("xa{i}.json"), &ra, &pem_b),
            1,
            "a with b's key"
        );
        assert_eq!(
            verify_exit(d, &format!("xb{i}.json"), &rb, &pem_a),
            1,
            "b with a's key"
        );
        assert_eq!(
            verify_exit(d, &format!("yb{i}.json"), eb, &b64_a),
            1,
            "b with a's key (base64)"
        );
        // Both keys given: valid.
        let f = write(d, &format!("both{i}.json"), &ra);
        let o = cli(&[
            "verify",
            &f,
            &format!("--key={pem_b}"),
            &format!("--key={pem_a}"),
        ]);
        assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_receipts_are_identical_across_servers() {
    // "t-9" is served too (OPENEXEC_TENANTS), so its request runs.
    let a = Server::start(&[("OPENEXEC_TENANTS", "t-9")]);
    let b = Server::start(&[("OPENEXEC_TENANTS", "t-9")]);
    let requests = [
        (
            json!({"action": "echo", "payload": {"msg": "hi", "n": [1, 2.5, null]}, "nonce": "det-1"}),
            200,
        ),
        (
            json!({"action": "add", "payload": {"a": 2, "b": 40}, "nonce": "det-2", "tenant_id": "t-9"}),
            200,
        ),
        (
            json!({"action": "nope", "payload": {"x": 1}, "nonce": "det-3"}),
            400,
        ),
        (
            json!({"action": "add", "payload": {"a": "x", "b": 1}, "nonce": "det-4"}),
            400,
        ),
        // nonce_conflict after det-1
        (
            json!({"action": "echo", "payload": {"msg": "other"}, "nonce": "det-1"}),
            422,
        ),
    ];
    compare(&a, &b, &requests).await;

    // The id and receipt hashes are what SPEC §2 says, computed here independently of the server.
    let (_, r) = a.execute(&requests[0].0).await;
    let p = json!({"msg": "hi", "n": [1, 2.5, null]});
    assert_eq!(r["id"], request_hash("echo", "det-1", &p, "default"));
    assert_eq!(
        r["evidence"]["receipt"]["request_hash"],
        request_hash("echo", "det-1", &p, "default")
    );
    assert_eq!(
        r["evidence"]["receipt"]["intent_hash"],
        intent_hash("echo", &p)
    );
    assert_eq!(
        r["evidence"]["receipt"]["result_hash"],
        jcs_sha256(&json!({"echo": p}))
    );
    assert_eq!(r["evidence"]["receipt"]["mode"], "demo");
    assert_eq!(r["evidence"]["receipt"]["approval"], Value::Null);
    assert_eq!(r["evidence"]["receipt"]["v"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn clawshield_receipts_are_identical_across_servers() {
    let vec = load_vector("legacy_v0.json");
    let env = clawshield_env(vec["public_key_pem"].as_str().unwrap());
    let a = Server::start(&env_ref(&env));
    let b = Server::start(&env_ref(&env));
    let sk = vector_signing_key();
    let now = Utc::now();
    let payload = json!({"amount": 5, "to": "acct_1"});
    let art = sign_v1(
        &V1Params {
            approval_id: "ap-det",
            tenant_id: "tenant-001",
            action: "echo",
            payload: &payload,
            nonce: "cs-det",
            issued_at: now - Duration::minutes(1),
            expires_at: now + Duration::minutes(10),
            decision_id: Some("dec-7"),
            policy_hash: None,
        },
        &sk,
    );
    let requests = [
        (
            json!({"action": "echo", "payload": payload, "nonce": "cs-det", "approval_artifact": art}),
            200,
        ),
        (
            json!({"action": "echo", "payload": payload, "nonce": "cs-none"}),
            403,
        ),
        (
            json!({"action": "echo", "payload": payload, "nonce": "cs-other", "approval_artifact": art}),
            403,
        ),
    ];
    compare(&a, &b, &requests).await;
    let (_, r) = a.execute(&requests[0].0).await;
    assert_eq!(r["replayed"], true);
    assert_eq!(r["evidence"]["receipt"]["mode"], "clawshield");
    assert_eq!(r["evidence"]["receipt"]["approval"]["decision_id"], "dec-7");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_request_in_different_spellings_is_one_request() {
    // SPEC §2: a missing or null payload is {}; a JSON string holding an object is that object.
    let s = Server::start(&[]);
    let (st, r) = s.execute(&json!({"action": "echo", "nonce": "sp-1"})).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["result"], json!({"echo": {}}));
    assert_eq!(r["id"], request_hash("echo", "sp-1", &json!({}), "default"));
    let (st, r2) = s
        .execute(&json!({"action": "echo", "payload": null, "nonce": "sp-1"}))
        .await;
    assert_eq!((st, &r2["replayed"]), (200, &json!(true)), "{r2}");
    assert_eq!(r2["receipt"], r["receipt"]);
    let (st, r3) = s
        .execute(&json!({"action": "echo", "payload": "  {}", "nonce": "sp-1"}))
        .await;
    assert_eq!((st, &r3["replayed"]), (200, &json!(true)), "{r3}");

    let (st, r) = s
        .execute(&json!({"action": "echo", "payload": "{\"b\": [1, {\"c\": 2}], \"a\": \"x\"}", "nonce": "sp-2"}))
        .await;
    assert_eq!(st, 200, "{r}");
    let obj = json!({"a": "x", "b": [1, {"c": 2}]});
    assert_eq!(r["result"], json!({"echo": obj}));
    let (st, r2) = s
        .execute(&json!({"action": "echo", "payload": obj, "nonce": "sp-2"}))
        .await;
    assert_eq!((st, &r2["replayed"]), (200, &json!(true)), "{r2}");
    // Any other string stays a string.
    let (st, r) = s
        .execute(&json!({"action": "echo", "payload": "[1, 2]", "nonce": "sp-3"}))
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["result"], json!({"echo": "[1, 2]"}));
    assert_eq!(s.handler_runs("echo").await, 3);
}
