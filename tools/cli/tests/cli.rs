//! The offline tools of the `openexec` binary: keygen, approve, hash, verify, and their exit
//! codes (0 success, 1 invalid, 2 bad usage or unreadable input).

mod common;

use common::*;
use openexec_core::json::{jcs_sha256, sha256_hex};
use openexec_core::keys::{parse_signing_key, parse_verifying_key, signing_key_from_seed};
use serde_json::{json, Value};

fn keygen(path: &std::path::Path) -> (String, std::process::Output) {
    let o = cli(&["keygen", "--out", &path.display().to_string()]);
    let kid = stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("key_id: ").map(|k| k.trim().to_string()))
        .unwrap_or_default();
    (kid, o)
}

#[test]
fn keygen_writes_a_pair_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k.pem");
    let (kid, o) = keygen(&f);
    assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
    assert_eq!(kid.len(), 16, "{}", stdout(&o));
    let private = std::fs::read_to_string(&f).unwrap();
    let sk = parse_signing_key(&private).expect("private key PEM");
    let public = std::fs::read_to_string(dir.path().join("k.pem.pub")).unwrap();
    let pk = parse_verifying_key(&public).expect("public key PEM");
    assert_eq!(sk.verifying_key(), pk);
    assert_eq!(kid, sha256_hex(pk.as_bytes())[..16]);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "private key readable by others");
    }

    let (_, o) = keygen(&f);
    assert_ne!(exit_code(&o), 0, "overwrote an existing key");
    assert!(!stderr(&o).is_empty());
    assert_eq!(std::fs::read_to_string(&f).unwrap(), private, "key changed");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("k.pem.pub")).unwrap(),
        public
    );
    // The private key alone (its .pub removed) is not overwritten either.
    std::fs::remove_file(dir.path().join("k.pem.pub")).unwrap();
    let (_, o) = keygen(&f);
    assert_ne!(exit_code(&o), 0, "overwrote an existing private key");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), private, "key changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_mints_an_artifact_for_exactly_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cs.pem");
    let (kid, o) = keygen(&f);
    assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
    let f_s = f.display().to_string();
    let o = cli(&[
        "approve",
        "--key",
        &f_s,
        "--action",
        "echo",
        "--payload",
        r#"{"msg":"x"}"#,
        "--nonce",
        "n1",
        "--tenant",
        "t",
    ]);
    assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
    let art: Value = serde_json::from_str(&stdout(&o)).expect("approve prints JSON");
    assert_eq!(art["v"], 1);
    assert_eq!(art["key_id"], kid.as_str());
    assert_eq!(art["nonce"], "n1");
    assert_eq!(art["tenant_id"], "t");

    let pub_path = format!("{f_s}.pub");
    let s = Server::start(&[
        ("OPENEXEC_MODE", "clawshield"),
        ("CLAWSHIELD_PUBLIC_KEY", &pub_path),
        ("CLAWSHIELD_TENANT_ID", "t"),
        // "u" is served too, so that its request reaches the artifact's tenant check.
        ("OPENEXEC_TENANTS", "u"),
    ]);
    let (_, keys) = s.get("/keys").await;
    assert_eq!(keys["approval_keys"][0]["key_id"], kid.as_str(), "{keys}");
    let req = |payload: Value, nonce: &str, tenant: &str| json!({"action": "echo", "payload": payload, "nonce": nonce, "tenant_id": tenant, "approval_artifact": art});
    let (st, b) = s.execute(&req(json!({"msg": "y"}), "n1", "t")).await;
    assert_eq!(
        (st, code(&b)),
        (403, "approval_request_mismatch"),
        "other payload: {b}"
    );
    let (st, b) = s.execute(&req(json!({"msg": "x"}), "n2", "t")).await;
    assert_eq!(
        (st, code(&b)),
        (403, "approval_request_mismatch"),
        "other nonce: {b}"
    );
    let (st, b) = s.execute(&req(json!({"msg": "x"}), "n1", "u")).await;
    assert_eq!(
        (st, code(&b)),
        (403, "approval_tenant_mismatch"),
        "other tenant: {b}"
    );
    let mut other_action = req(json!({"msg": "x"}), "n1", "t");
    other_action["action"] = json!("add");
    let (st, b) = s.execute(&other_action).await;
    assert_eq!(st, 400, "add with an echo payload: {b}");
    let (st, b) = s.execute(&req(json!({"msg": "x"}), "n1", "t")).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["result"], json!({"echo": {"msg": "x"}}));
    assert_eq!(b["evidence"]["receipt"]["approval"]["key_id"], kid.as_str());
    assert_eq!(b["evidence"]["receipt"]["approval"]["format"], "v1");
    // The same artifact and request again is a replay, never a second run.
    let (st, b) = s.execute(&req(json!({"msg": "x"}), "n1", "t")).await;
    assert_eq!((st, &b["replayed"]), (200, &json!(true)), "{b}");
    assert_eq!(s.handler_runs("echo").await, 1);

    // approve refuses bad input with exit 2.
    let o = cli(&[
        "approve",
        "--key",
        &f_s,
        "--action",
        "echo",
        "--payload",
        "{nope",
        "--nonce",
        "n",
    ]);
    assert_eq!(exit_code(&o), 2, "{}", stderr(&o));
    let o = cli(&[
        "approve",
        "--key",
        "/nonexistent",
        "--action",
        "echo",
        "--nonce",
        "n",
    ]);
    assert_eq!(exit_code(&o), 2, "{}", stderr(&o));
}

#[test]
fn hash_matches_the_vectors() {
    let v = load_vector("intent_v1.json");
    for case in v["cases"].as_array().unwrap() {
        let action = case["action"].as_str().unwrap();
        let payload = serde_json::to_string(&case["payload"]).unwrap();
        let o = cli(&[
            "hash",
            "--action",
            action,
            "--payload",
            &payload,
            "--nonce",
            "x",
        ]);
        assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
        let out: Value = serde_json::from_str(&stdout(&o)).expect("hash prints JSON");
        assert_eq!(
            out["intent_hash"], case["intent_hash"],
            "{action} {payload}"
        );
        assert_eq!(out["intent_jcs"], case["jcs"], "{action} {payload}");
        let want_req = jcs_sha256(
            &json!({"action": action, "nonce": "x", "payload": case["payload"], "tenant_id": "default"}),
        );
        assert_eq!(out["request_hash"], want_req.as_str());
        assert_eq!(
            out["request_hash"]
                .as_str()
                .map(|_| sha256_hex(out["request_jcs"].as_str().unwrap().as_bytes())),
            Some(want_req)
        );
    }
    let legacy = load_vector("legacy_v0.json");
    for case in legacy["hash_cases"].as_array().unwrap() {
        let action = case["action"].as_str().unwrap();
        let payload = serde_json::to_string(&case["payload"]).unwrap();
        let o = cli(&[
            "hash",
            "--action",
            action,
            "--payload",
            &payload,
            "--nonce",
            "x",
        ]);
        assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
        let out: Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(
            out["legacy_action_hash"], case["legacy_action_hash"],
            "{action} {payload}"
        );
        assert_eq!(
            out["legacy_canonical"], case["legacy_canonical"],
            "{action} {payload}"
        );
    }
    // The brief's example, spelled exactly.
    let o = cli(&[
        "hash",
        "--action",
        "echo",
        "--payload",
        r#"{"msg":"hello"}"#,
        "--nonce",
        "x",
    ]);
    let out: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        out["intent_hash"],
        "b39f7741265bfb502d44159aa14f2ab6cea65973b18c903e2e1e34c6d860dc88"
    );

    // Bad input: exit 2 with a message.
    let o = cli(&[
        "hash",
        "--action",
        "echo",
        "--payload",
        "not json",
        "--nonce",
        "x",
    ]);
    assert_eq!(exit_code(&o), 2, "{}", stdout(&o));
    assert!(stderr(&o).contains("payload"), "{}", stderr(&o));
    let o = cli(&["hash", "--payload", "{}", "--nonce", "x"]);
    assert_eq!(exit_code(&o), 2, "missing --action: {}", stdout(&o));
    let o = cli(&[
        "hash",
        "--action",
        "echo",
        "--payload",
        r#"{"a":1,"a":2}"#,
        "--nonce",
        "x",
    ]);
    assert_eq!(exit_code(&o), 2, "duplicate key: {}", stdout(&o));
}

#[test]
fn verify_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let sk = signing_key_from_seed([9u8; 32]);
    let pk = sk.verifying_key();
    let kid = sha256_hex(pk.as_bytes())[..16].to_string();
    let receipt = json!({"v": 1, "exec_id": "e", "tenant_id": "default", "action": "echo",
        "nonce": "n", "intent_hash": "i", "request_hash": "e", "mode": "demo", "approval": null,
        "status": "executed", "code": null, "result_hash": "r", "handler": null});
    let rh = jcs_sha256(&receipt);
    let sig = openexec_core::keys::sign_b64(&sk, format!("openexec-receipt-v1:{rh}").as_bytes());
    let ev = json!({"receipt": receipt, "receipt_hash": rh, "signature": sig, "key_id": kid, "log_index": 3});
    let pub_file = dir.path().join("k.pub");
    std::fs::write(&pub_file, openexec_core::keys::verifying_key_to_pem(&pk)).unwrap();
    let pub_s = pub_file.display().to_string();
    let write = |name: &str, v: &Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
        p.display().to_string()
    };

    let good = write("good.json", &ev);
    let o = cli(&["verify", &good, "--key", &pub_s]);
    assert_eq!(exit_code(&o), 0, "{} {}", stdout(&o), stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).expect("verify prints JSON");
    assert_eq!(report["valid"], true);
    // Wrapped like an /execute or GET /receipts answer; key as raw base64.
    let wrapped = write("wrapped.json", &json!({"evidence": ev}));
    let b64 = openexec_core::keys::verifying_key_b64(&pk);
    let o = cli(&["verify", &wrapped, "--key", &b64]);
    assert_eq!(exit_code(&o), 0, "{}", stderr(&o));

    for (name, field, val) in [
        ("t1.json", "/receipt/status", json!("rejected")),
        ("t2.json", "/receipt_hash", json!("0".repeat(64))),
        ("t3.json", "/key_id", json!("0000000000000000")),
    ] {
        let mut t = ev.clone();
        *t.pointer_mut(field).unwrap() = val;
        let p = write(name, &t);
        let o = cli(&["verify", &p, "--key", &pub_s]);
        assert_eq!(exit_code(&o), 1, "tampered {field}: {}", stdout(&o));
    }
    // Right evidence, wrong key.
    let other = signing_key_from_seed([10u8; 32]).verifying_key();
    let o = cli(&[
        "verify",
        &good,
        "--key",
        &openexec_core::keys::verifying_key_b64(&other),
    ]);
    assert_eq!(exit_code(&o), 1, "{}", stdout(&o));

    // Unreadable or not JSON: 2.
    let o = cli(&["verify", "/nonexistent/ev.json", "--key", &pub_s]);
    assert_eq!(exit_code(&o), 2, "{}", stderr(&o));
    let not_json = dir.path().join("nj.json");
    std::fs::write(&not_json, "this is not json").unwrap();
    let o = cli(&["verify", &not_json.display().to_string(), "--key", &pub_s]);
    assert_eq!(exit_code(&o), 2, "{}", stderr(&o));
    assert!(!stderr(&o).is_empty());
    // A key that is not a key: 2.
    let o = cli(&["verify", &good, "--key", "not-a-key"]);
    assert_eq!(exit_code(&o), 2, "{}", stderr(&o));
}
