//! Every refusal of SPEC §4 (with its status, code, `detail` text and a `rejected` receipt) and
//! every bad body of SPEC §2 (with its status and code, and no receipt).

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use openexec_core::artifact::{sign_v0, sign_v1, sign_v1_object, V1Params};
use openexec_core::hash::request_hash;
use openexec_core::keys::{signing_key_from_seed, SigningKey};
use serde_json::{json, Value};

/// Check a refusal that must carry a `rejected` receipt; returns its evidence.
fn rejected(ans: &(u16, Value), status: u16, want_code: &str, keys: &Value) -> Value {
    let (st, b) = ans;
    assert_eq!(*st, status, "wanted {status} {want_code}, got {st}: {b}");
    assert_eq!(code(b), want_code, "{b}");
    assert_eq!(b["error"]["message"], b["detail"], "{b}");
    assert!(!detail(b).is_empty(), "no detail: {b}");
    let ev = &b["evidence"];
    assert_eq!(ev["receipt"]["status"], "rejected", "{b}");
    assert_eq!(ev["receipt"]["code"], want_code, "{b}");
    assert_eq!(ev["receipt"]["result_hash"], Value::Null, "{b}");
    assert_eq!(b["id"], ev["receipt"]["exec_id"], "{b}");
    check_evidence(ev, keys).unwrap_or_else(|e| panic!("{e}: {b}"));
    ev.clone()
}

/// Check a body-level refusal: its status and code, and no receipt.
fn bad_body(what: &str, ans: &(u16, Value), status: u16, want_code: &str) {
    let (st, b) = ans;
    assert_eq!(
        (*st, code(b)),
        (status, want_code),
        "{what}: wanted {status} {want_code}: {b}"
    );
    assert!(!detail(b).is_empty(), "{what}: no detail: {b}");
    assert!(
        b.get("evidence").is_none(),
        "{what}: a receipt for a bad body: {b}"
    );
}

/// A v1 artifact for one request (the arguments mirror the artifact's fields).
#[allow(clippy::too_many_arguments)]
fn v1(
    sk: &SigningKey,
    id: &str,
    tenant: &str,
    action: &str,
    payload: &Value,
    nonce: &str,
    issued: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> Value {
    sign_v1(
        &V1Params {
            approval_id: id,
            tenant_id: tenant,
            action,
            payload,
            nonce,
            issued_at: issued,
            expires_at: expires,
            decision_id: None,
            policy_hash: None,
        },
        sk,
    )
}

fn exec(action: &str, payload: Value, nonce: &str, art: Option<&Value>) -> Value {
    let mut b = json!({"action": action, "payload": payload, "nonce": nonce});
    if let Some(a) = art {
        b["approval_artifact"] = a.clone();
    }
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_mode_refusals_leave_rejected_receipts() {
    let s = Server::start(&[]);
    let keys = s.keys().await;

    let a = s.execute(&exec("nope", json!({}), "u-1", None)).await;
    let ev = rejected(&a, 400, "unknown_action", &keys);
    assert_eq!(detail(&a.1), "Unknown action: nope");
    assert_eq!(ev["receipt"]["mode"], "demo");
    // The same rejected attempt again: the stored receipt and log entry are reused.
    let again = s.execute(&exec("nope", json!({}), "u-1", None)).await;
    let ev2 = rejected(&again, 400, "unknown_action", &keys);
    assert_eq!(ev2["receipt_hash"], ev["receipt_hash"]);
    assert_eq!(ev2["log_index"], ev["log_index"]);

    let a = s
        .execute(&exec("add", json!({"a": "x", "b": 1}), "p-1", None))
        .await;
    let ev = rejected(&a, 400, "invalid_payload", &keys);
    assert_eq!(ev["receipt"]["handler"]["name"], "builtin:add");
    let a = s.execute(&exec("add", json!({"a": 1}), "p-2", None)).await;
    rejected(&a, 400, "invalid_payload", &keys);
    let a = s
        .execute(&exec("sleep", json!({"ms": 10_001}), "p-3", None))
        .await;
    rejected(&a, 400, "invalid_payload", &keys);

    // A string that starts like an object but does not parse: its receipt hashes the payload as
    // the string that was sent.
    for (i, p) in ["{broken", "  {broken", "{\"a\":1,\"a\":2}"]
        .iter()
        .enumerate()
    {
        let nonce = format!("brk-{i}");
        let a = s.execute(&exec("echo", json!(p), &nonce, None)).await;
        let ev = rejected(&a, 400, "invalid_payload", &keys);
        assert_eq!(
            ev["receipt"]["exec_id"],
            request_hash("echo", &nonce, &json!(p), "default"),
            "the rejected receipt must hash the payload string as sent"
        );
    }

    // nonce_conflict: the first is executed, the second has the same nonce and another payload.
    let (st, ok) = s
        .execute(&exec("echo", json!({"m": 1}), "nc-1", None))
        .await;
    assert_eq!(st, 200, "{ok}");
    let a = s
        .execute(&exec("echo", json!({"m": 2}), "nc-1", None))
        .await;
    let ev = rejected(&a, 422, "nonce_conflict", &keys);
    let again = s
        .execute(&exec("echo", json!({"m": 2}), "nc-1", None))
        .await;
    let ev2 = rejected(&again, 422, "nonce_conflict", &keys);
    assert_eq!(ev2["receipt_hash"], ev["receipt_hash"]);
    assert_eq!(ev2["log_index"], ev["log_index"]);
    // Even another action on a used nonce is a conflict (the nonce is looked up after the
    // known-action check, before payload validation).
    let a = s
        .execute(&exec("add", json!({"a": "x"}), "nc-1", None))
        .await;
    rejected(&a, 422, "nonce_conflict", &keys);

    // A rejected attempt does not use up its nonce.
    let (st, b) = s
        .execute(&exec("echo", json!({"ok": 1}), "p-1", None))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["replayed"], false);

    // Demo mode ignores an artifact, even a broken one.
    let (st, b) = s
        .execute(&exec(
            "echo",
            json!({}),
            "demo-art",
            Some(&json!({"garbage": true})),
        ))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["evidence"]["receipt"]["approval"], Value::Null);
    assert_eq!(s.handler_runs("echo").await, 3);
    assert_eq!(s.handler_runs("add").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_list_comes_first() {
    let s = Server::start(&[("OPENEXEC_ALLOWED_ACTIONS", "echo")]);
    let keys = s.keys().await;
    let a = s
        .execute(&exec("add", json!({"a": 1, "b": 2}), "al-1", None))
        .await;
    let ev = rejected(&a, 403, "action_not_allowed", &keys);
    assert_eq!(
        detail(&a.1),
        "Action 'add' is not in the execution allow-list"
    );
    let again = s
        .execute(&exec("add", json!({"a": 1, "b": 2}), "al-1", None))
        .await;
    assert_eq!(
        rejected(&again, 403, "action_not_allowed", &keys)["log_index"],
        ev["log_index"]
    );
    // The allow-list is checked before the action is known.
    let a = s.execute(&exec("nope", json!({}), "al-2", None)).await;
    rejected(&a, 403, "action_not_allowed", &keys);
    assert_eq!(
        detail(&a.1),
        "Action 'nope' is not in the execution allow-list"
    );
    let (st, b) = s.execute(&exec("echo", json!({}), "al-3", None)).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(s.handler_runs("add").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn clawshield_refusals_in_order() {
    let vec = load_vector("legacy_v0.json");
    let env = clawshield_env(vec["public_key_pem"].as_str().unwrap());
    let mut env = env_ref(&env);
    // tenant-777 is served too, so that its request reaches the artifact's tenant check.
    env.push(("OPENEXEC_TENANTS", "tenant-777"));
    let s = Server::start(&env);
    let keys = s.keys().await;
    let sk = vector_signing_key();
    let other = signing_key_from_seed([7u8; 32]);
    let now = Utc::now();
    let (past, future) = (now - Duration::minutes(5), now + Duration::minutes(30));
    let p = json!({"msg": "hi"});

    // approval_required, twice: the same receipt and log entry.
    let a = s.execute(&exec("echo", p.clone(), "r-1", None)).await;
    let ev = rejected(&a, 403, "approval_required", &keys);
    assert_eq!(
        detail(&a.1),
        "ClawShield mode requires an approval artifact"
    );
    assert_eq!(ev["receipt"]["mode"], "clawshield");
    let mut null_art = exec("echo", p.clone(), "r-1", None);
    null_art["approval_artifact"] = Value::Null;
    let again = s.execute(&null_art).await;
    let ev2 = rejected(&again, 403, "approval_required", &keys);
    assert_eq!(
        (&ev2["receipt_hash"], &ev2["log_index"]),
        (&ev["receipt_hash"], &ev["log_index"])
    );
    // ... and the nonce is still free: with a valid artifact it executes.
    let art = v1(&sk, "ap-r1", "tenant-001", "echo", &p, "r-1", past, future);
    let (st, b) = s.execute(&exec("echo", p.clone(), "r-1", Some(&art))).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["replayed"], false);
    assert_eq!(b["result"], json!({"echo": p}));
    let approval = &b["evidence"]["receipt"]["approval"];
    assert_eq!(approval["approval_id"], "ap-r1");
    assert_eq!(approval["format"], "v1");

    // Checks before the artifact: unknown action and payload come first.
    let a = s.execute(&exec("nope", json!({}), "r-2", None)).await;
    rejected(&a, 400, "unknown_action", &keys);
    let a = s
        .execute(&exec("add", json!({"a": "x", "b": 1}), "r-3", None))
        .await;
    rejected(&a, 400, "invalid_payload", &keys);

    // approval_malformed.
    for (i, bad) in [
        json!("not an object"),
        json!({"v": 1, "approval_id": "x"}),
        json!({"v": 2, "approval_id": "x"}),
        json!({"approval_id": "x", "tenant_id": "tenant-001"}),
        json!([1, 2]),
    ]
    .iter()
    .enumerate()
    {
        let a = s
            .execute(&exec("echo", p.clone(), &format!("m-{i}"), Some(bad)))
            .await;
        rejected(&a, 403, "approval_malformed", &keys);
    }
    let bad_time = json!({"approval_id": "t", "tenant_id": "tenant-001", "action_hash": "00",
        "issued_at": "2026-01-01T00:00:00", "expires_at": "not a time", "signature": "AA=="});
    let a = s
        .execute(&exec("echo", p.clone(), "m-time", Some(&bad_time)))
        .await;
    rejected(&a, 403, "approval_malformed", &keys);
    assert_eq!(detail(&a.1), "Invalid expires_at timestamp");

    // approval_unknown_key: signed by a key the server does not know (and also wrong in every
    // later check: the key check comes first).
    let art = v1(
        &other,
        "ap-u",
        "tenant-999",
        "echo",
        &p,
        "elsewhere",
        past,
        now - Duration::minutes(1),
    );
    let a = s
        .execute(&exec("echo", p.clone(), "uk-1", Some(&art)))
        .await;
    rejected(&a, 403, "approval_unknown_key", &keys);

    // approval_bad_signature: a signed field changed (here the tenant: still a signature
    // failure, not a tenant mismatch), or a signature that is not one.
    let good = v1(&sk, "ap-b", "tenant-001", "echo", &p, "bs-1", past, future);
    for (i, (field, val)) in [
        ("expires_at", json!("2099-01-01T00:00:00Z")),
        ("tenant_id", json!("tenant-999")),
        ("signature", json!("AAAA")),
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = good.clone();
        t[field] = val;
        let a = s.execute(&exec("echo", p.clone(), "bs-1", Some(&t))).await;
        rejected(&a, 403, "approval_bad_signature", &keys);
        assert_eq!(
            detail(&a.1),
            "Invalid signature: approval artifact is not authentic",
            "case {i}"
        );
    }

    // approval_tenant_mismatch (the artifact is also for another nonce: tenant comes first).
    let art = v1(
        &sk,
        "ap-t",
        "tenant-999",
        "echo",
        &p,
        "elsewhere",
        past,
        future,
    );
    let a = s
        .execute(&exec("echo", p.clone(), "tm-1", Some(&art)))
        .await;
    rejected(&a, 403, "approval_tenant_mismatch", &keys);
    assert_eq!(
        detail(&a.1),
        "Tenant mismatch: expected tenant-001, got tenant-999"
    );
    // A request for another tenant with an artifact for tenant-001.
    let art = v1(&sk, "ap-t2", "tenant-001", "echo", &p, "tm-2", past, future);
    let mut body = exec("echo", p.clone(), "tm-2", Some(&art));
    body["tenant_id"] = json!("tenant-777");
    let a = s.execute(&body).await;
    rejected(&a, 403, "approval_tenant_mismatch", &keys);
    assert_eq!(
        detail(&a.1),
        "Tenant mismatch: expected tenant-777, got tenant-001"
    );

    // approval_request_mismatch: v1 for another nonce (and expired: binding comes first);
    // v1 for another payload; v1 for another action; v0 for another payload.
    let mismatches = [
        v1(
            &sk,
            "ap-m1",
            "tenant-001",
            "echo",
            &p,
            "other-nonce",
            past,
            now - Duration::minutes(2),
        ),
        v1(
            &sk,
            "ap-m2",
            "tenant-001",
            "echo",
            &json!({"msg": "other"}),
            "rm-1",
            past,
            future,
        ),
        v1(
            &sk,
            "ap-m3",
            "tenant-001",
            "add",
            &json!({"a": 1, "b": 2}),
            "rm-1",
            past,
            future,
        ),
        sign_v0(
            "ap-m4",
            "tenant-001",
            "echo",
            &json!({"msg": "other"}),
            &py_naive(past),
            &py_naive(future),
            &sk,
        ),
    ];
    for (i, art) in mismatches.iter().enumerate() {
        let a = s.execute(&exec("echo", p.clone(), "rm-1", Some(art))).await;
        rejected(&a, 403, "approval_request_mismatch", &keys);
        assert_eq!(
            detail(&a.1),
            "Action hash mismatch: approval does not match this request",
            "case {i}"
        );
    }
    // A v1 artifact whose action field was altered and re-signed (its hashes still say echo).
    let mut obj = v1(&sk, "ap-m5", "tenant-001", "echo", &p, "rm-1", past, future);
    obj["action"] = json!("add");
    let obj = sign_v1_object(obj.as_object().unwrap().clone(), &sk);
    let a = s
        .execute(&exec("echo", p.clone(), "rm-1", Some(&obj)))
        .await;
    rejected(&a, 403, "approval_request_mismatch", &keys);

    // approval_expired, then approval_not_yet_valid (an hour ahead).
    let art = v1(
        &sk,
        "ap-e",
        "tenant-001",
        "echo",
        &p,
        "ex-1",
        now - Duration::hours(2),
        now - Duration::hours(1),
    );
    let a = s
        .execute(&exec("echo", p.clone(), "ex-1", Some(&art)))
        .await;
    let ev = rejected(&a, 403, "approval_expired", &keys);
    assert_eq!(detail(&a.1), "Approval artifact expired");
    assert_eq!(
        ev["receipt"]["approval"]["approval_id"], "ap-e",
        "an authentic artifact is recorded"
    );
    let art = v1(
        &sk,
        "ap-n",
        "tenant-001",
        "echo",
        &p,
        "ny-1",
        now + Duration::hours(1),
        now + Duration::hours(2),
    );
    let a = s
        .execute(&exec("echo", p.clone(), "ny-1", Some(&art)))
        .await;
    rejected(&a, 403, "approval_not_yet_valid", &keys);
    // Within the default skew of 30 s, an artifact issued 10 s ahead is fine.
    let art = v1(
        &sk,
        "ap-n2",
        "tenant-001",
        "echo",
        &p,
        "ny-2",
        now + Duration::seconds(10),
        future,
    );
    let (st, b) = s
        .execute(&exec("echo", p.clone(), "ny-2", Some(&art)))
        .await;
    assert_eq!(st, 200, "{b}");
    // The expired attempt did not use up ex-1.
    let art = v1(&sk, "ap-e2", "tenant-001", "echo", &p, "ex-1", past, future);
    let (st, b) = s
        .execute(&exec("echo", p.clone(), "ex-1", Some(&art)))
        .await;
    assert_eq!(st, 200, "{b}");

    // approval_reused: a v0 artifact binds no nonce, so a second nonce is refused.
    let p2 = json!({"msg": "once"});
    let v0 = sign_v0(
        "ap-v0-reuse",
        "tenant-001",
        "echo",
        &p2,
        &py_naive(past),
        &py_naive(future),
        &sk,
    );
    let (st, b) = s
        .execute(&exec("echo", p2.clone(), "ru-1", Some(&v0)))
        .await;
    assert_eq!(st, 200, "{b}");
    let a = s
        .execute(&exec("echo", p2.clone(), "ru-2", Some(&v0)))
        .await;
    let ev = rejected(&a, 409, "approval_reused", &keys);
    assert_eq!(ev["receipt"]["approval"]["approval_id"], "ap-v0-reuse");
    assert_eq!(ev["receipt"]["approval"]["format"], "v0");
    // ru-2 is not used up by that refusal: with its own artifact it runs.
    let v0b = sign_v0(
        "ap-v0-other",
        "tenant-001",
        "echo",
        &p2,
        &py_naive(past),
        &py_naive(future),
        &sk,
    );
    let (st, b) = s
        .execute(&exec("echo", p2.clone(), "ru-2", Some(&v0b)))
        .await;
    assert_eq!(st, 200, "{b}");

    // nonce_conflict with a valid artifact for the new request.
    let art = v1(
        &sk,
        "ap-c",
        "tenant-001",
        "echo",
        &json!({"msg": "changed"}),
        "r-1",
        past,
        future,
    );
    let a = s
        .execute(&exec("echo", json!({"msg": "changed"}), "r-1", Some(&art)))
        .await;
    rejected(&a, 422, "nonce_conflict", &keys);

    // The alias `approval` is read like `approval_artifact`.
    let art = v1(
        &sk,
        "ap-alias",
        "tenant-001",
        "echo",
        &p,
        "alias-1",
        past,
        future,
    );
    let (st, b) = s
        .execute(&json!({"action": "echo", "payload": p, "nonce": "alias-1", "approval": art}))
        .await;
    assert_eq!(st, 200, "{b}");

    assert_eq!(s.handler_runs("echo").await, 6);
    assert_eq!(s.handler_runs("add").await, 0);
}

fn nested_objects(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

fn body_with_payload(nonce: &str, payload: &str) -> Vec<u8> {
    format!("{{\"action\":\"echo\",\"nonce\":\"{nonce}\",\"payload\":{payload}}}").into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_get_no_receipt() {
    let s = Server::start(&[]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "duplicate top-level key",
            br#"{"action":"echo","action":"echo","payload":{},"nonce":"d1"}"#.to_vec(),
            "duplicate_key",
        ),
        (
            "duplicate nested key",
            br#"{"action":"echo","payload":{"x":{"a":1,"a":2}},"nonce":"d2"}"#.to_vec(),
            "duplicate_key",
        ),
        (
            "duplicate key in an array",
            br#"{"action":"echo","payload":[{"k":1,"k":1}],"nonce":"d3"}"#.to_vec(),
            "duplicate_key",
        ),
        (
            "malformed",
            br#"{"action":"echo","#.to_vec(),
            "invalid_json",
        ),
        (
            "trailing data",
            br#"{"action":"echo","nonce":"t"} x"#.to_vec(),
            "invalid_json",
        ),
        ("empty body", Vec::new(), "invalid_json"),
        (
            "single quotes",
            br#"{'action':'echo'}"#.to_vec(),
            "invalid_json",
        ),
        (
            "invalid UTF-8 in a string",
            b"{\"action\":\"echo\",\"payload\":{\"m\":\"\xff\xfe\"},\"nonce\":\"u1\"}".to_vec(),
            "invalid_json",
        ),
        (
            "a bare continuation byte",
            b"{\"action\":\"echo\",\"payload\":{\"m\":\"a\x80b\"},\"nonce\":\"u2\"}".to_vec(),
            "invalid_json",
        ),
        (
            "overlong UTF-8",
            b"{\"action\":\"echo\",\"payload\":{\"m\":\"\xc0\xaf\"},\"nonce\":\"u3\"}".to_vec(),
            "invalid_json",
        ),
        (
            "lone high surrogate",
            br#"{"action":"echo","payload":{"m":"\ud800"},"nonce":"s1"}"#.to_vec(),
            "invalid_json",
        ),
        (
            "lone low surrogate",
            br#"{"action":"echo","payload":{"m":"\udc00"},"nonce":"s2"}"#.to_vec(),
            "invalid_json",
        ),
        (
            "high surrogate then a letter",
            br#"{"action":"echo","payload":{"m":"\ud800\u0041"},"nonce":"s3"}"#.to_vec(),
            "invalid_json",
        ),
        (
            "lone surrogate in a key",
            br#"{"action":"echo","payload":{"\ud800":1},"nonce":"s4"}"#.to_vec(),
            "invalid_json",
        ),
        (
            "integer 12345678901234567890",
            br#"{"action":"echo","payload":{"n":12345678901234567890},"nonce":"n1"}"#.to_vec(),
            "number_out_of_range",
        ),
        (
            "integer -9007199254740992",
            br#"{"action":"echo","payload":{"n":-9007199254740992},"nonce":"n2"}"#.to_vec(),
            "number_out_of_range",
        ),
        (
            "integer 2^53",
            br#"{"action":"echo","payload":{"n":9007199254740992},"nonce":"n3"}"#.to_vec(),
            "number_out_of_range",
        ),
        (
            "big integer in an array",
            br#"{"action":"echo","payload":[1,99999999999999999999],"nonce":"n4"}"#.to_vec(),
            "number_out_of_range",
        ),
        (
            "depth 65 (objects)",
            body_with_payload("deep-1", &nested_objects(64)),
            "too_deep",
        ),
        (
            "depth 65 (arrays)",
            body_with_payload("deep-2", &format!("{}{}", "[".repeat(64), "]".repeat(64))),
            "too_deep",
        ),
        (
            "depth 500",
            body_with_payload("deep-3", &nested_objects(499)),
            "too_deep",
        ),
        (
            "missing action",
            br#"{"payload":{},"nonce":"i1"}"#.to_vec(),
            "invalid_request",
        ),
        (
            "missing nonce",
            br#"{"action":"echo","payload":{}}"#.to_vec(),
            "invalid_request",
        ),
        (
            "nonce not a string",
            br#"{"action":"echo","payload":{},"nonce":5}"#.to_vec(),
            "invalid_request",
        ),
        (
            "action not a string",
            br#"{"action":["echo"],"payload":{},"nonce":"i4"}"#.to_vec(),
            "invalid_request",
        ),
        (
            "tenant_id not a string",
            br#"{"action":"echo","payload":{},"nonce":"i5","tenant_id":7}"#.to_vec(),
            "invalid_request",
        ),
        (
            "body is an array",
            br#"[{"action":"echo","nonce":"i6"}]"#.to_vec(),
            "invalid_request",
        ),
        ("body is a string", br#""echo""#.to_vec(), "invalid_request"),
        ("body is null", b"null".to_vec(), "invalid_request"),
    ];
    for (what, body, want) in &cases {
        let ans = s.post_raw("/execute", body.clone()).await;
        bad_body(what, &ans, 400, want);
    }
    // Nothing was written for any of them: the first receipt is log entry 0.
    let (st, b) = s
        .execute(&exec("echo", json!({"first": true}), "first", None))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["evidence"]["log_index"], 0, "bad bodies were logged: {b}");
    assert_eq!(s.handler_runs("echo").await, 1);

    // What is fine: 2^53-1 either sign, 1e21, 0.5, a big number with a fraction, depth exactly
    // 64, brackets inside strings, a surrogate pair.
    let fine: Vec<(&str, Vec<u8>, Value)> = vec![
        ("2^53-1", br#"{"action":"echo","payload":{"n":9007199254740991,"m":-9007199254740991},"nonce":"ok1"}"#.to_vec(),
            json!({"n": 9007199254740991_i64, "m": -9007199254740991_i64})),
        ("1e21 and 0.5", br#"{"action":"echo","payload":{"n":1e21,"h":0.5},"nonce":"ok2"}"#.to_vec(), json!({"n": 1e21, "h": 0.5})),
        ("fraction", br#"{"action":"echo","payload":{"n":12345678901234567890.0},"nonce":"ok3"}"#.to_vec(), json!({"n": 12345678901234567890.0_f64})),
        ("depth 64", body_with_payload("ok4", &nested_objects(63)), serde_json::from_str(&nested_objects(63)).unwrap()),
        ("brackets in a string",
            format!(r#"{{"action":"echo","payload":{{"s":"{}{}"}},"nonce":"ok5"}}"#, "[".repeat(72), "{".repeat(72)).into_bytes(),
            json!({"s": format!("{}{}", "[".repeat(72), "{".repeat(72))})),
        ("surrogate pair", br#"{"action":"echo","payload":{"e":"\ud83d\ude00"},"nonce":"ok6"}"#.to_vec(), json!({"e": "😀"})),
    ];
    for (what, body, payload) in &fine {
        let (st, b) = s.post_raw("/execute", body.clone()).await;
        assert_eq!(st, 200, "{what}: {b}");
        assert_eq!(b["result"], json!({"echo": payload}), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn depth_limit_is_configurable() {
    let s = Server::start(&[("OPENEXEC_MAX_DEPTH", "8")]);
    let (st, b) = s
        .post_raw("/execute", body_with_payload("d8", &nested_objects(7)))
        .await;
    assert_eq!(st, 200, "depth 8 with a limit of 8: {b}");
    let ans = s
        .post_raw("/execute", body_with_payload("d9", &nested_objects(8)))
        .await;
    bad_body("depth 9 with a limit of 8", &ans, 400, "too_deep");
}

fn sized_body(nonce: &str, len: usize) -> Vec<u8> {
    let head = format!("{{\"action\":\"echo\",\"nonce\":\"{nonce}\",\"payload\":{{\"s\":\"");
    let tail = "\"}}";
    let pad = len - head.len() - tail.len();
    format!("{head}{}{tail}", "x".repeat(pad)).into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn body_limits() {
    let s = Server::start(&[]);
    let ans = s.post_early("/execute", sized_body("huge", 2 << 20)).await;
    bad_body("2 MiB body", &ans, 413, "body_too_large");
    // A huge declared length is answered at once, without waiting for (or reading) the body.
    let head = format!(
        "POST /execute HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n",
        s.addr()
    );
    let ans = s.raw_exchange(head, b"{\"action\":".to_vec()).await;
    bad_body(
        "100 MB declared, 10 bytes sent",
        &ans,
        413,
        "body_too_large",
    );
    let ans = s
        .post_chunked("/execute", &sized_body("huge-chunked", 2 << 20), 64 << 10)
        .await;
    bad_body("2 MiB chunked", &ans, 413, "body_too_large");
    // Just under the default limit is fine.
    let (st, b) = s.post_raw("/execute", sized_body("big-ok", 1 << 20)).await;
    assert_eq!(
        st,
        200,
        "exactly 1 MiB: {}",
        &b.to_string()[..200.min(b.to_string().len())]
    );

    let s = Server::start(&[("OPENEXEC_MAX_BODY_BYTES", "4096")]);
    let ans = s.post_early("/execute", sized_body("b1", 4097)).await;
    bad_body("4097 bytes over a 4096 limit", &ans, 413, "body_too_large");
    let ans = s
        .post_chunked("/execute", &sized_body("b2", 4097), 1000)
        .await;
    bad_body(
        "4097 bytes chunked over a 4096 limit",
        &ans,
        413,
        "body_too_large",
    );
    let (st, b) = s.post_raw("/execute", sized_body("b3", 4096)).await;
    assert_eq!(st, 200, "exactly at the limit: {b}");
    let (st, b) = s
        .post_chunked("/execute", &sized_body("b4", 4096), 1000)
        .await;
    assert_eq!(st, 200, "exactly at the limit, chunked: {b}");
    assert_eq!(
        b["evidence"]["log_index"], 1,
        "the refused bodies were logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clawshield_mode_without_a_key_refuses_everything() {
    let s = Server::start(&[("OPENEXEC_MODE", "clawshield")]);
    let (st, r) = s.get("/ready").await;
    assert_eq!(st, 503, "{r}");
    assert_eq!(r["ready"], false, "{r}");
    let sk = vector_signing_key();
    let now = Utc::now();
    let p = json!({"msg": "x"});
    let art = v1(
        &sk,
        "ap-nk",
        "default",
        "echo",
        &p,
        "nk-2",
        now - Duration::minutes(1),
        now + Duration::minutes(5),
    );
    for body in [
        exec("echo", p.clone(), "nk-1", None),
        exec("echo", p.clone(), "nk-2", Some(&art)),
    ] {
        let (st, b) = s.execute(&body).await;
        assert!(st >= 400 && st != 200, "executed without a key: {st} {b}");
        assert_eq!(detail(&b), "CLAWSHIELD_PUBLIC_KEY not configured", "{b}");
    }
    assert_eq!(s.handler_runs("echo").await, 0);
    let (_, h) = s.get("/health").await;
    assert_eq!(h["exec_mode"], "clawshield");
    assert_eq!(h["signature_verification"], "enabled");
}
