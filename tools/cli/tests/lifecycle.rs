//! Graceful shutdown, the informational endpoints, receipts lookup and verification, receipt
//! keys, and configuration from a TOML file (SPEC §6, §8).

mod common;

use std::time::Duration;

use common::*;
use openexec_core::json::sha256_hex;
use openexec_core::keys::parse_verifying_key;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_running_handler_finish() {
    let mut s = Server::start(&[]);
    let body = json!({"action": "sleep", "payload": {"ms": 1500}, "nonce": "term-1"});
    let client = s.client.clone();
    let url = s.url("/execute");
    let b = body.clone();
    let inflight = tokio::spawn(async move {
        let r = client.post(url).json(&b).send().await.expect("answer");
        let st = r.status().as_u16();
        (st, r.json::<Value>().await.expect("json"))
    });
    s.wait_handler_runs("sleep", 1, Duration::from_secs(10))
        .await;
    let status = s.term();
    let (st, first) = inflight.await.expect("task");
    assert_eq!(
        st,
        200,
        "the in-flight request was cut off: {first}\n{}",
        s.log()
    );
    assert_eq!(first["result"], json!({"slept_ms": 1500}));
    assert_eq!(first["replayed"], false);
    assert!(status.success(), "exit status {status}; log:\n{}", s.log());

    s.restart();
    let (st, b) = s.execute(&body).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["replayed"], true);
    assert_eq!(b["receipt"], first["receipt"]);
    assert_eq!(
        sans_inclusion(&b["evidence"]),
        sans_inclusion(&first["evidence"])
    );
    // The graceful stop signed a last checkpoint, so the replay carries its inclusion proof.
    assert_eq!(
        b["evidence"]["inclusion"]["leaf_index"], first["evidence"]["log_index"],
        "{b}"
    );
    assert_eq!(s.handler_runs("sleep").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_when_idle_exits_zero() {
    let mut s = Server::start(&[]);
    let (st, _) = s
        .execute(&json!({"action": "echo", "payload": {}, "nonce": "idle"}))
        .await;
    assert_eq!(st, 200);
    let status = s.term();
    assert!(status.success(), "exit status {status}; log:\n{}", s.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn informational_endpoints() {
    let s = Server::start(&[]);
    let (st, root) = s.get("/").await;
    assert_eq!(st, 200);
    assert_eq!(root["service"], "OpenExec", "{root}");

    let (st, h) = s.get("/health").await;
    assert_eq!(st, 200);
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(h["exec_mode"], "demo");
    assert_eq!(h["signature_verification"], "disabled");
    assert_eq!(h["restriction"], "open");
    assert!(h["warning"].is_string(), "{h}");
    assert!(h.get("allow_list").is_none(), "{h}");

    let (st, r) = s.get("/ready").await;
    assert_eq!((st, &r["ready"]), (200, &json!(true)), "{r}");
    let (st, v) = s.get("/version").await;
    assert_eq!(st, 200);
    assert!(v["version"].is_string(), "{v}");

    let keys = s.keys().await;
    let k = &keys["receipt_keys"][0];
    let pk = parse_verifying_key(k["public_key"].as_str().unwrap()).expect("raw base64 key");
    assert_eq!(k["key_id"], sha256_hex(pk.as_bytes())[..16], "{keys}");
    let from_pem = parse_verifying_key(k["pem"].as_str().unwrap()).expect("pem");
    assert_eq!(from_pem, pk);
    assert!(k["pem"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(keys["approval_keys"], json!([]));

    let (st, api) = s.get("/openapi.json").await;
    assert_eq!(st, 200);
    assert!(api["openapi"].is_string(), "{api}");
    assert!(api["paths"]["/execute"].is_object(), "no /execute path");

    let (st, _) = s
        .execute(&json!({"action": "echo", "payload": {}, "nonce": "m-1"}))
        .await;
    assert_eq!(st, 200);
    let (st, m) = s.get_text("/metrics").await;
    assert_eq!(st, 200);
    assert!(m.contains("openexec_requests_total"), "{m}");
    assert_eq!(s.handler_runs("echo").await, 1);

    // Allow-list variant of /health.
    let s2 = Server::start(&[("OPENEXEC_ALLOWED_ACTIONS", "echo, add")]);
    let (_, h) = s2.get("/health").await;
    assert_eq!(h["restriction"], "restricted", "{h}");
    assert_eq!(h["allow_list"], json!(["echo", "add"]), "{h}");
}

#[tokio::test(flavor = "multi_thread")]
async fn receipts_lookup_and_verify() {
    let s = Server::start(&[]);
    let keys = s.keys().await;
    let (st, r1) = s
        .execute(&json!({"action": "echo", "payload": {"msg": "hello world"}, "nonce": "rv-1"}))
        .await;
    assert_eq!(st, 200, "{r1}");
    assert_eq!(r1["evidence"]["receipt"]["mode"], "demo");
    assert_eq!(r1["approved"], true);
    assert_eq!(r1["status"], "executed");
    assert_eq!(r1["action"], "echo");
    let id = r1["id"].as_str().unwrap();

    let (st, g) = s.get(&format!("/receipts/{id}")).await;
    assert_eq!(st, 200, "{g}");
    assert_eq!(
        sans_inclusion(&g["evidence"]),
        sans_inclusion(&r1["evidence"])
    );
    let (st, g) = s.get(&format!("/receipts/{}", "ab".repeat(32))).await;
    assert_eq!(st, 404, "{g}");
    for bad in [
        "xyz",
        "abc123",
        &"g".repeat(64),
        &"A".repeat(64),
        &"a".repeat(65),
    ] {
        let (st, g) = s.get(&format!("/receipts/{bad}")).await;
        assert_eq!(st, 400, "{bad}: {g}");
    }

    // The seed's triple: result as a JSON string, or as a value.
    let result_text = serde_json::to_string(&r1["result"]).unwrap();
    let triple = json!({"exec_id": id, "result": result_text, "receipt": r1["receipt"]});
    let (st, v) = s.post("/receipts/verify", &triple).await;
    assert_eq!((st, &v["valid"]), (200, &json!(true)), "{v}");
    let (st, v) = s
        .post(
            "/receipts/verify",
            &json!({"exec_id": id, "result": r1["result"], "receipt": r1["receipt"]}),
        )
        .await;
    assert_eq!(
        (st, &v["valid"]),
        (200, &json!(true)),
        "result as a value: {v}"
    );
    let forged = json!({"exec_id": id, "result": "{\"echo\": {\"msg\": \"forged\"}}", "receipt": r1["receipt"]});
    let (st, v) = s.post("/receipts/verify", &forged).await;
    assert_eq!((st, &v["valid"]), (200, &json!(false)), "{v}");
    let wrong_id =
        json!({"exec_id": "0".repeat(64), "result": result_text, "receipt": r1["receipt"]});
    let (st, v) = s.post("/receipts/verify", &wrong_id).await;
    assert_eq!((st, &v["valid"]), (200, &json!(false)), "{v}");
    let unknown = json!({"exec_id": id, "result": result_text, "receipt": "1".repeat(64)});
    let (st, v) = s.post("/receipts/verify", &unknown).await;
    assert_eq!((st, &v["valid"]), (200, &json!(false)), "{v}");

    // A whole evidence object, bare or wrapped.
    let ev = r1["evidence"].clone();
    check_evidence(&ev, &keys).unwrap();
    for body in [ev.clone(), json!({"evidence": ev})] {
        let (st, v) = s.post("/receipts/verify", &body).await;
        assert_eq!((st, &v["valid"]), (200, &json!(true)), "{v}");
    }
    let sig = ev["signature"].as_str().unwrap();
    let flipped = match sig.strip_prefix('A') {
        Some(rest) => format!("B{rest}"),
        None => format!("A{}", &sig[1..]),
    };
    let tamperings = [
        ("/receipt/nonce", json!("rv-2")),
        ("/receipt/status", json!("rejected")),
        ("/receipt/result_hash", json!("0".repeat(64))),
        ("/receipt_hash", json!("0".repeat(64))),
        ("/signature", json!(flipped)),
        ("/key_id", json!("0123456789abcdef")),
    ];
    for (what, val) in &tamperings {
        let mut t = ev.clone();
        *t.pointer_mut(what).unwrap() = val.clone();
        assert!(
            check_evidence(&t, &keys).is_err(),
            "{what}: the offline check missed it"
        );
        let (st, v) = s.post("/receipts/verify", &t).await;
        assert_eq!(
            (st, &v["valid"]),
            (200, &json!(false)),
            "tampered {what}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_receipt_key_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    let path_s = path.display().to_string();
    let o = cli(&["keygen", "--out", &path_s]);
    assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
    let printed = stdout(&o);
    let key_id = printed
        .lines()
        .find_map(|l| l.strip_prefix("key_id: "))
        .expect("keygen prints key_id")
        .trim()
        .to_string();
    let s = Server::start(&[("OPENEXEC_RECEIPT_KEY", &path_s)]);
    let keys = s.keys().await;
    assert_eq!(keys["receipt_keys"][0]["key_id"], key_id.as_str(), "{keys}");
    let (st, b) = s
        .execute(&json!({"action": "echo", "payload": {}, "nonce": "rk-1"}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(b["evidence"]["key_id"], key_id.as_str());
    check_evidence(&b["evidence"], &keys).unwrap();
    // No key was generated in the data directory.
    assert!(!s.dir().join("receipt-key.pem").exists());

    // A key path that does not exist is a start-up error, not a silently generated key.
    let f = Server::try_start(&[("OPENEXEC_RECEIPT_KEY", "/nonexistent/k.pem")])
        .err()
        .expect("started with a missing receipt key");
    assert_ne!(f.status.and_then(|s| s.code()), Some(0), "{}", f.log);
}

#[tokio::test(flavor = "multi_thread")]
async fn toml_config_is_applied_and_env_overrides_it() {
    let vectors = load_vector("legacy_v0.json");
    let pem = vectors["public_key_pem"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("openexec.toml");
    std::fs::write(
        &cfg,
        "mode = \"clawshield\"\nallowed_actions = [\"echo\"]\n",
    )
    .unwrap();
    let cfg_s = cfg.display().to_string();

    let s = Server::start(&[("OPENEXEC_CONFIG", &cfg_s), ("CLAWSHIELD_PUBLIC_KEY", pem)]);
    let (_, h) = s.get("/health").await;
    assert_eq!(h["exec_mode"], "clawshield", "{h}");
    assert_eq!(h["restriction"], "restricted", "{h}");
    assert_eq!(h["allow_list"], json!(["echo"]), "{h}");
    let (st, b) = s
        .execute(&json!({"action": "echo", "payload": {}, "nonce": "t-1"}))
        .await;
    assert_eq!((st, code(&b)), (403, "approval_required"), "{b}");
    let (st, b) = s
        .execute(&json!({"action": "add", "payload": {"a": 1, "b": 2}, "nonce": "t-2"}))
        .await;
    assert_eq!((st, code(&b)), (403, "action_not_allowed"), "{b}");
    drop(s);

    // The environment wins over the file, field by field.
    let s = Server::start(&[("OPENEXEC_CONFIG", &cfg_s), ("OPENEXEC_MODE", "demo")]);
    let (_, h) = s.get("/health").await;
    assert_eq!(h["exec_mode"], "demo", "{h}");
    assert_eq!(h["allow_list"], json!(["echo"]), "{h}");
    let (st, b) = s
        .execute(&json!({"action": "echo", "payload": {}, "nonce": "t-3"}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["evidence"]["receipt"]["mode"], "demo");
    drop(s);
    let s = Server::start(&[
        ("OPENEXEC_CONFIG", &cfg_s),
        ("OPENEXEC_ALLOWED_ACTIONS", "add"),
        ("OPENEXEC_MODE", "demo"),
    ]);
    let (_, h) = s.get("/health").await;
    assert_eq!(h["allow_list"], json!(["add"]), "{h}");
    drop(s);

    // An unknown key (a typo) refuses to start, naming the key.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "mode = \"demo\"\nallowed_action = [\"echo\"]\n").unwrap();
    let f = Server::try_start(&[("OPENEXEC_CONFIG", &bad.display().to_string())])
        .err()
        .expect("started with an unknown TOML key");
    let code = f.status.and_then(|s| s.code());
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit {code:?}; {}",
        f.log
    );
    assert!(
        f.log.contains("allowed_action"),
        "the message does not name the key:\n{}",
        f.log
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_several_running_handlers_finishes_each() {
    let mut s = Server::start(&[]);
    let bodies: Vec<Value> = (0..6)
        .map(|i| json!({"action": "sleep", "payload": {"ms": 800}, "nonce": format!("sd-{i}")}))
        .collect();
    let mut tasks = Vec::new();
    for b in &bodies {
        let client = s.client.clone();
        let url = s.url("/execute");
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).json(&b).send().await.expect("answer");
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.expect("json"))
        }));
    }
    s.wait_handler_runs("sleep", 6, Duration::from_secs(10))
        .await;
    let status = s.term();
    let mut first = Vec::new();
    for t in tasks {
        let (st, b) = t.await.unwrap();
        assert_eq!(st, 200, "{b}");
        first.push(b);
    }
    assert!(status.success(), "exit status {status}; log:\n{}", s.log());
    s.restart();
    for (b, f) in bodies.iter().zip(&first) {
        let (st, r) = s.execute(b).await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["replayed"], true);
        assert_eq!(r["receipt"], f["receipt"]);
    }
    assert_eq!(s.handler_runs("sleep").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_receipts_are_reused_across_restarts() {
    let mut s = Server::start(&[]);
    let body = json!({"action": "nope", "payload": {"x": 1}, "nonce": "rr-1"});
    let (st, first) = s.execute(&body).await;
    assert_eq!(st, 400, "{first}");
    let (st, ok) = s
        .execute(&json!({"action": "echo", "payload": {}, "nonce": "rr-2"}))
        .await;
    assert_eq!(st, 200, "{ok}");
    assert!(s.term().success());
    s.restart();
    let (st, again) = s.execute(&body).await;
    assert_eq!(st, 400, "{again}");
    assert_eq!(
        sans_inclusion(&again["evidence"]),
        sans_inclusion(&first["evidence"]),
        "the rejection was logged again"
    );
    let (st, next) = s
        .execute(&json!({"action": "echo", "payload": {}, "nonce": "rr-3"}))
        .await;
    assert_eq!(st, 200, "{next}");
    assert_eq!(next["evidence"]["log_index"], 2, "{next}");
}

#[test]
fn sigterm_right_after_listening_exits_zero() {
    // The listening line is what scripts wait for; a SIGTERM sent right after it must still be a
    // graceful shutdown (exit 0), not death by signal.
    for i in 0..50 {
        let mut s = Server::start(&[]);
        let status = s.term();
        assert!(
            status.success(),
            "attempt {i}: SIGTERM right after the listening line: exit status {status}; log:\n{}",
            s.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn db_url_forms() {
    // Three slashes: a path relative to the working directory (the harness runs the server in its
    // data directory).
    let s = Server::start(&[("OPENEXEC_DB_URL", "sqlite:///sub/rel.db")]);
    let (st, b) = s
        .execute(&json!({"action": "echo", "payload": {}, "nonce": "db-1"}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(
        s.dir().join("sub/rel.db").exists(),
        "no database at sub/rel.db"
    );
    assert!(!s.db_path().exists());
    // In-memory databases are refused: receipts must outlive the process.
    for url in ["sqlite://", "sqlite:///:memory:"] {
        let f = Server::try_start(&[("OPENEXEC_DB_URL", url)])
            .err()
            .unwrap_or_else(|| panic!("started with {url}"));
        assert_ne!(f.status.and_then(|s| s.code()), Some(0), "{}", f.log);
    }
}
