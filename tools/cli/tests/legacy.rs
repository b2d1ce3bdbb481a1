//! Drop-in compatibility with the original Python OpenExec 0.1.x artifacts (SPEC §4 v0), single
//! use, and v1 artifacts bound to their nonce. Honest retries past the time window are tested with
//! the service's clock set, not waited for: `services/exec/tests/clock.rs`.

mod common;

use std::sync::Arc;

use chrono::{Duration, Utc};
use common::*;
use openexec_core::artifact::{sign_v0, sign_v1, V1Params};
use openexec_core::json::sha256_hex;
use openexec_core::keys::parse_verifying_key;
use serde_json::{json, Value};

struct Fixture {
    vectors: Value,
    key_id: String,
}

fn fixture() -> Fixture {
    let vectors = load_vector("legacy_v0.json");
    let pk = parse_verifying_key(vectors["public_key_raw_b64"].as_str().unwrap()).unwrap();
    Fixture {
        key_id: sha256_hex(pk.as_bytes())[..16].to_string(),
        vectors,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn vector_artifacts_behave_as_expected() {
    let f = fixture();
    let s = clawshield_server(&[]);
    let keys = s.keys().await;
    assert_eq!(
        keys["approval_keys"][0]["key_id"],
        f.key_id.as_str(),
        "{keys}"
    );
    let artifacts = f.vectors["artifacts"].as_array().unwrap();
    assert!(artifacts.len() >= 7);
    let mut accepted = Vec::new();
    for (i, a) in artifacts.iter().enumerate() {
        let name = a["name"].as_str().unwrap();
        let body = json!({"action": a["action"], "payload": a["payload"], "nonce": format!("v0-{i}"),
                          "approval_artifact": a["artifact"]});
        let (st, b) = s.execute(&body).await;
        let expect = a["expect"].as_str().unwrap();
        if expect == "accepted" {
            assert_eq!(st, 200, "{name}: {b}");
            assert_eq!(b["result"], json!({"echo": a["payload"]}), "{name}");
            assert_eq!(b["replayed"], false);
            let ev = &b["evidence"];
            check_evidence(ev, &keys).unwrap();
            assert_eq!(
                ev["receipt"]["approval"],
                json!({"approval_id": a["artifact"]["approval_id"], "format": "v0",
                       "key_id": f.key_id, "decision_id": null}),
                "{name}"
            );
            assert_eq!(ev["receipt"]["mode"], "clawshield");
            assert_eq!(ev["receipt"]["tenant_id"], "tenant-001");
            accepted.push((body, b));
        } else {
            let want = format!("approval_{}", expect.strip_prefix("rejected:").unwrap());
            assert_eq!((st, code(&b)), (403, want.as_str()), "{name}: {b}");
            assert_eq!(
                b["evidence"]["receipt"]["status"], "rejected",
                "{name}: {b}"
            );
            assert_eq!(b["evidence"]["receipt"]["code"], want.as_str(), "{name}");
            let want_detail = match want.as_str() {
                "approval_expired" => Some("Approval artifact expired"),
                "approval_bad_signature" => {
                    Some("Invalid signature: approval artifact is not authentic")
                }
                "approval_tenant_mismatch" => {
                    Some("Tenant mismatch: expected tenant-001, got tenant-999")
                }
                "approval_request_mismatch" => {
                    Some("Action hash mismatch: approval does not match this request")
                }
                _ => None,
            };
            if let Some(d) = want_detail {
                assert_eq!(detail(&b), d, "{name}");
            }
        }
    }
    assert!(accepted.len() >= 3);
    assert_eq!(s.handler_runs("echo").await, accepted.len() as u64);

    // Honest retry: the same request with the same artifact is a replay.
    for (body, first) in &accepted {
        let (st, b) = s.execute(body).await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["replayed"], true);
        assert_eq!(b["receipt"], first["receipt"]);
        assert_eq!(b["result"], first["result"]);
    }
    // Single use: the first artifact with a new nonce.
    let mut body = accepted[0].0.clone();
    body["nonce"] = json!("v0-again");
    let (st, b) = s.execute(&body).await;
    assert_eq!((st, code(&b)), (409, "approval_reused"), "{b}");
    assert_eq!(s.handler_runs("echo").await, accepted.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_artifacts_are_bound_to_their_nonce() {
    let f = fixture();
    let s = clawshield_server(&[]);
    let sk = vector_signing_key();
    let now = Utc::now();
    let p = json!({"amount": 5, "to": "acct_1"});
    let art = sign_v1(
        &V1Params {
            approval_id: "ap-v1",
            tenant_id: "tenant-001",
            action: "echo",
            payload: &p,
            nonce: "v1-1",
            issued_at: now - Duration::minutes(1),
            expires_at: now + Duration::minutes(5),
            decision_id: Some("dec-1"),
            policy_hash: Some("ph-1"),
        },
        &sk,
    );
    let body = json!({"action": "echo", "payload": p, "nonce": "v1-1", "tenant_id": "tenant-001", "approval_artifact": art});
    let (st, b) = s.execute(&body).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b["evidence"]["receipt"]["approval"],
        json!({"approval_id": "ap-v1", "format": "v1", "key_id": f.key_id, "decision_id": "dec-1"})
    );
    let (st, b2) = s.execute(&body).await;
    assert_eq!((st, &b2["replayed"]), (200, &json!(true)), "{b2}");
    let mut other = body.clone();
    other["nonce"] = json!("v1-2");
    let (st, b) = s.execute(&other).await;
    assert_eq!((st, code(&b)), (403, "approval_request_mismatch"), "{b}");
    assert_eq!(s.handler_runs("echo").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_uses_of_one_v0_artifact_run_once() {
    let s = Arc::new(clawshield_server(&[]));
    let sk = vector_signing_key();
    let now = Utc::now();
    let p = json!({"msg": "race"});
    let art = sign_v0(
        "ap-race",
        "tenant-001",
        "echo",
        &p,
        &py_naive(now - Duration::minutes(1)),
        &py_naive(now + Duration::minutes(5)),
        &sk,
    );
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = s.clone();
        let body = json!({"action": "echo", "payload": p, "nonce": format!("vr-{i}"), "approval_artifact": art});
        tasks.push(tokio::spawn(async move { s.execute(&body).await }));
    }
    let mut ok = 0;
    for t in tasks {
        let (st, b) = t.await.unwrap();
        match st {
            200 => ok += 1,
            409 => assert_eq!(code(&b), "approval_reused", "{b}"),
            _ => panic!("unexpected {st}: {b}"),
        }
    }
    assert_eq!(ok, 1, "a v0 artifact ran more than once");
    assert_eq!(s.handler_runs("echo").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn several_approval_keys_and_their_spellings() {
    // Two keys at once (rotation), the first as PEM with literal "\n" sequences (how env files
    // mangle it), the second as raw base64 on its own line.
    let f = fixture();
    let old = vector_signing_key();
    let new = openexec_core::keys::signing_key_from_seed([42u8; 32]);
    let new_kid = sha256_hex(new.verifying_key().as_bytes())[..16].to_string();
    let mangled = f.vectors["public_key_pem"]
        .as_str()
        .unwrap()
        .replace('\n', "\\n");
    let keys = format!(
        "{mangled}\n{}",
        openexec_core::keys::verifying_key_b64(&new.verifying_key())
    );
    let s = Server::start(&[
        ("OPENEXEC_MODE", "clawshield"),
        ("CLAWSHIELD_PUBLIC_KEY", &keys),
        ("CLAWSHIELD_TENANT_ID", "tenant-001"),
    ]);
    let published = s.keys().await;
    let ids: Vec<&str> = published["approval_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![f.key_id.as_str(), new_kid.as_str()],
        "{published}"
    );

    let now = Utc::now();
    let p = json!({"msg": "rotate"});
    for (i, (sk, kid)) in [(&old, &f.key_id), (&new, &new_kid)]
        .into_iter()
        .enumerate()
    {
        let nonce = format!("rot-{i}");
        let art = sign_v1(
            &V1Params {
                approval_id: &format!("ap-rot-{i}"),
                tenant_id: "tenant-001",
                action: "echo",
                payload: &p,
                nonce: &nonce,
                issued_at: now - Duration::minutes(1),
                expires_at: now + Duration::minutes(5),
                decision_id: None,
                policy_hash: None,
            },
            sk,
        );
        let (st, b) = s
            .execute(
                &json!({"action": "echo", "payload": p, "nonce": nonce, "approval_artifact": art}),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["evidence"]["receipt"]["approval"]["key_id"], kid.as_str());
        // v0 names no key: every configured key is tried, and the one that verified is recorded.
        let v0 = sign_v0(
            &format!("ap-rot-v0-{i}"),
            "tenant-001",
            "echo",
            &p,
            "2026-01-01T02:00:00+02:00",
            "2099-01-01T00:00:00+00:00",
            sk,
        );
        let (st, b) = s
            .execute(&json!({"action": "echo", "payload": p, "nonce": format!("rot-v0-{i}"), "approval_artifact": v0}))
            .await;
        assert_eq!(st, 200, "v0 with offsets: {b}");
        assert_eq!(b["evidence"]["receipt"]["approval"]["key_id"], kid.as_str());
    }
}
