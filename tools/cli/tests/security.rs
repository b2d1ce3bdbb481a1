//! The findings of the security review (issue 8), each attacked through the public interface of
//! the real `openexec serve` process: v0 approval re-splitting, log flooding through
//! rejections, identifier limits, cross-site bodies (415), the nonce oracle and served tenants,
//! re-signed rejections after a key rotation, `add` beyond the safe integers, the approval time
//! window, key handling and file permissions, and what the logs and the OpenAPI document say.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use openexec_core::artifact::{sign_v0, sign_v1, sign_v1_object, V1Params};
use openexec_testkit::eventually;
use serde_json::{json, Value};

fn vectors_pem() -> String {
    load_vector("legacy_v0.json")["public_key_pem"]
        .as_str()
        .unwrap()
        .to_string()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// SPEC §4: one v0 artifact, re-split into "new" ones under the same signature, runs once.
#[tokio::test(flavor = "multi_thread")]
async fn a_re_split_v0_approval_runs_its_handler_once() {
    let pem = vectors_pem();
    // Every tenant the re-splits name is served, so only the v0 rules can stop them.
    let s = Server::start(&[
        ("OPENEXEC_MODE", "clawshield"),
        ("CLAWSHIELD_PUBLIC_KEY", &pem),
        ("CLAWSHIELD_TENANT_ID", "acme"),
        ("OPENEXEC_TENANTS", "acme,cme,me,e,appr-42acme,2acme"),
    ]);
    let sk = vector_signing_key();
    let payload = json!({"m": "pay"});
    let now = Utc::now();
    let issued = py_naive(now - chrono::Duration::seconds(5));
    let expires = py_naive(now + chrono::Duration::seconds(300));
    let art = sign_v0("appr-42", "acme", "echo", &payload, &issued, &expires, &sk);
    let splits = [
        ("appr-42", "acme"),
        ("appr-42a", "cme"),
        ("appr-42ac", "me"),
        ("appr-42acm", "e"),
        ("", "appr-42acme"),
        ("appr-4", "2acme"),
    ];
    let mut executed = 0;
    for (i, (id, tenant)) in splits.iter().enumerate() {
        let mut a = art.clone();
        a["approval_id"] = json!(id);
        a["tenant_id"] = json!(tenant);
        // Each attempt both under the tenant the split names and under the configured one.
        for (j, req_tenant) in [*tenant, "acme"].iter().enumerate() {
            let (st, b) = s
                .execute(
                    &json!({"action": "echo", "payload": payload, "nonce": format!("split-{i}-{j}"),
                                 "tenant_id": req_tenant, "approval_artifact": a}),
                )
                .await;
            match st {
                200 => executed += 1,
                403 => assert_eq!(code(&b), "approval_tenant_mismatch", "{id}/{tenant}: {b}"),
                409 => assert_eq!(code(&b), "approval_reused", "{id}/{tenant}: {b}"),
                _ => panic!("{id}/{tenant} as {req_tenant}: {st} {b}"),
            }
        }
    }
    assert_eq!(executed, 1, "one v0 approval, one execution");
    s.wait_handler_runs("echo", 1, Duration::from_secs(5)).await;

    // A v0 approval is for the configured tenant only: a request naming another served
    // tenant is refused even with an untouched artifact.
    let fresh = sign_v0("appr-77", "acme", "echo", &payload, &issued, &expires, &sk);
    let (st, b) = s
        .execute(
            &json!({"action": "echo", "payload": payload, "nonce": "other-tenant",
                         "tenant_id": "cme", "approval_artifact": fresh}),
        )
        .await;
    assert_eq!((st, code(&b)), (403, "approval_tenant_mismatch"), "{b}");
    assert_eq!(detail(&b), "Tenant mismatch: expected acme, got cme");
    assert_eq!(s.handler_runs("echo").await, 1);
}

/// SPEC §6: a flood of unique-nonce rejections grows the log by at most the configured rate,
/// while every answer still carries a signed receipt.
#[tokio::test(flavor = "multi_thread")]
async fn a_rejection_flood_grows_the_log_at_most_at_the_configured_rate() {
    let s = Server::start(&[
        ("OPENEXEC_REJECTION_LOG_RATE", "5"),
        ("OPENEXEC_LOG_INTERVAL_MS", "50"),
    ]);
    let keys = s.keys().await;
    let started = Instant::now();
    let (mut logged, mut unlogged) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let (st, b) = s
            .execute(
                &json!({"action": "no_such_action", "payload": {}, "nonce": format!("flood-{i}")}),
            )
            .await;
        assert_eq!((st, code(&b)), (400, "unknown_action"), "{b}");
        let ev = &b["evidence"];
        check_evidence(ev, &keys).unwrap_or_else(|e| panic!("answer {i}: {e}: {ev}"));
        assert_eq!(ev["receipt"]["status"], "rejected");
        match ev["log_index"].as_u64() {
            Some(ix) => {
                assert!(ev.get("logged").is_none(), "{ev}");
                logged.push((ix, b["id"].as_str().unwrap().to_string()));
            }
            None => {
                assert_eq!(ev["log_index"], Value::Null, "{ev}");
                assert_eq!(ev["logged"], false, "{ev}");
                unlogged.push(b["id"].as_str().unwrap().to_string());
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // A burst of one second's worth, then 5 per second.
    let bound = 5.0 + 5.0 * elapsed + 1.0;
    assert!(
        (logged.len() as f64) <= bound,
        "{} logged in {elapsed:.2} s (bound {bound:.1})",
        logged.len()
    );
    assert!(logged.len() >= 5, "the burst is logged: {}", logged.len());
    assert!(!unlogged.is_empty());

    // Nothing of an unlogged rejection is stored; a logged one is.
    let (st, _) = s.get(&format!("/receipts/{}", unlogged[0])).await;
    assert_eq!(st, 404);
    let (st, _) = s.get(&format!("/receipts/{}", logged[0].1)).await;
    assert_eq!(st, 200);
    // The log holds exactly the logged ones.
    let want = logged.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = s.get_text("/log/checkpoint").await;
        let size = text
            .lines()
            .nth(1)
            .and_then(|l| l.parse::<u64>().ok())
            .unwrap_or(0);
        if size == want {
            break;
        }
        assert!(
            size < want,
            "the log grew past the logged rejections: {size} > {want}"
        );
        assert!(
            Instant::now() < deadline,
            "log stuck at {size}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, m) = s.get_text("/metrics").await;
    assert_eq!(
        metric(&m, "openexec_rejections_unlogged_total"),
        unlogged.len() as u64,
        "{m}"
    );
    // The budget refills: after a pause a new rejection is logged again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, b) = s
        .execute(&json!({"action": "no_such_action", "payload": {}, "nonce": "after-pause"}))
        .await;
    assert!(b["evidence"]["log_index"].is_u64(), "{b}");
}

/// SPEC §2: identifiers outside their limits are a 400 `invalid_request` naming the field,
/// with no receipt (the log does not grow).
#[tokio::test(flavor = "multi_thread")]
async fn identifiers_outside_their_limits_are_refused_without_a_receipt() {
    let s = Server::start(&[("OPENEXEC_LOG_INTERVAL_MS", "50")]);
    let cases = [
        (json!({"action": "e".repeat(129), "nonce": "n1"}), "action"),
        (json!({"action": "ech\u{043e}", "nonce": "n2"}), "action"), // Cyrillic о
        (
            json!({"action": "echo\r\nX-Injected: 1", "nonce": "n3"}),
            "action",
        ),
        (json!({"action": "echo", "nonce": "x".repeat(257)}), "nonce"),
        (json!({"action": "echo", "nonce": "a\u{001b}[2Jb"}), "nonce"),
        (
            json!({"action": "echo", "nonce": "n4", "tenant_id": "t".repeat(129)}),
            "tenant_id",
        ),
        (
            json!({"action": "echo", "nonce": "n5", "tenant_id": "acme/../x"}),
            "tenant_id",
        ),
    ];
    for (body, field) in &cases {
        let (st, b) = s.execute(body).await;
        assert_eq!((st, code(&b)), (400, "invalid_request"), "{body}: {b}");
        assert!(detail(&b).contains(&format!("'{field}'")), "{body}: {b}");
        assert!(b.get("evidence").is_none(), "{b}");
    }
    // At the limits: accepted.
    let (st, b) = s
        .execute(&json!({"action": "echo", "payload": {}, "nonce": "é".repeat(256)}))
        .await;
    assert_eq!(st, 200, "{b}");
    let text = eventually(
        Duration::from_secs(10),
        "a checkpoint is signed",
        || async {
            let (st, text) = s.get_text("/log/checkpoint").await;
            (st == 200).then_some(text)
        },
    )
    .await;
    assert_eq!(text.lines().nth(1), Some("1"), "only the execution: {text}");
    assert_eq!(s.handler_runs("echo").await, 1);
}

/// SPEC §2: a POST body not declared as JSON is a 415, and nothing runs — a web page cannot
/// post `text/plain` (or an untyped body) to a local server and run an action.
#[tokio::test(flavor = "multi_thread")]
async fn bodies_not_declared_as_json_are_refused_415() {
    let s = Server::start(&[]);
    let body = r#"{"action":"echo","payload":{"m":1},"nonce":"csrf-1"}"#;
    for ct in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
        None,
    ] {
        let mut head = format!(
            "POST /execute HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            s.addr(),
            body.len()
        );
        if let Some(ct) = ct {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        let (st, b) = s.raw_exchange(head, body.as_bytes().to_vec()).await;
        assert_eq!(
            (st, code(&b)),
            (415, "unsupported_media_type"),
            "{ct:?}: {b}"
        );
    }
    // The same body declared as JSON (with parameters, any case) runs.
    for (i, ct) in ["application/json", "Application/JSON; charset=utf-8"]
        .iter()
        .enumerate()
    {
        let r = s
            .client
            .post(s.url("/execute"))
            .header("content-type", *ct)
            .body(format!(
                r#"{{"action":"echo","payload":{{"m":1}},"nonce":"json-{i}"}}"#
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{ct}");
    }
    assert_eq!(s.handler_runs("echo").await, 2);
    // /receipts/verify is held to the same rule.
    let r = s
        .client
        .post(s.url("/receipts/verify"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
}

fn v1(
    action: &str,
    payload: &Value,
    nonce: &str,
    tenant: &str,
    ttl: (i64, i64),
    sk: &openexec_core::keys::SigningKey,
) -> Value {
    let now = Utc::now();
    sign_v1(
        &V1Params {
            approval_id: &format!("ap-{nonce}-{}", payload),
            tenant_id: tenant,
            action,
            payload,
            nonce,
            issued_at: now + chrono::Duration::seconds(ttl.0),
            expires_at: now + chrono::Duration::seconds(ttl.1),
            decision_id: None,
            policy_hash: None,
        },
        sk,
    )
}

/// SPEC §4, §5: in clawshield mode a nonce conflict is told only to a request whose artifact
/// is authentic and bound to it; tenants not served are refused with a receipt.
#[tokio::test(flavor = "multi_thread")]
async fn no_nonce_oracle_for_strangers_and_only_served_tenants() {
    let sk = vector_signing_key();
    let s = clawshield_server(&[]);
    let p = json!({"m": "first"});
    let art = v1("echo", &p, "shared", "tenant-001", (-5, 300), &sk);
    let (st, b) = s
        .execute(
            &json!({"action": "echo", "payload": p, "nonce": "shared", "approval_artifact": art}),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    let other = json!({"m": "other"});
    // No artifact, a forged one, or one for another request: each gets its own refusal.
    let mut forged = v1("echo", &other, "shared", "tenant-001", (-5, 300), &sk);
    forged["signature"] = json!(openexec_core::keys::sign_b64(
        &openexec_core::keys::signing_key_from_seed([9; 32]),
        b"x"
    ));
    let for_other_nonce = v1("echo", &other, "elsewhere", "tenant-001", (-5, 300), &sk);
    for (art, want) in [
        (Value::Null, "approval_required"),
        (forged, "approval_bad_signature"),
        (for_other_nonce, "approval_request_mismatch"),
    ] {
        let (st, b) = s
            .execute(&json!({"action": "echo", "payload": other, "nonce": "shared", "approval_artifact": art}))
            .await;
        assert_eq!((st, code(&b)), (403, want), "{b}");
        assert!(!detail(&b).contains("already used"), "{b}");
    }
    // The gate approved another request with the same nonce: that requester learns of the
    // conflict.
    let bound = v1("echo", &other, "shared", "tenant-001", (-5, 300), &sk);
    let (st, b) = s
        .execute(&json!({"action": "echo", "payload": other, "nonce": "shared", "approval_artifact": bound}))
        .await;
    assert_eq!((st, code(&b)), (422, "nonce_conflict"), "{b}");
    assert_eq!(s.handler_runs("echo").await, 1);

    // A tenant not in OPENEXEC_TENANTS (default: the configured one alone).
    let art = v1("echo", &p, "t2", "tenant-002", (-5, 300), &sk);
    let (st, b) = s
        .execute(
            &json!({"action": "echo", "payload": p, "nonce": "t2", "tenant_id": "tenant-002",
                         "approval_artifact": art}),
        )
        .await;
    assert_eq!((st, code(&b)), (403, "tenant_not_served"), "{b}");
    assert_eq!(b["evidence"]["receipt"]["status"], "rejected", "{b}");
    assert_eq!(b["evidence"]["receipt"]["tenant_id"], "tenant-002", "{b}");

    // Listed, it is served.
    let s2 = clawshield_server(&[("OPENEXEC_TENANTS", "tenant-002")]);
    let (st, b) = s2
        .execute(
            &json!({"action": "echo", "payload": p, "nonce": "t2", "tenant_id": "tenant-002",
                         "approval_artifact": art}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    // ...and the configured tenant still is.
    let art = v1("echo", &p, "t1", "tenant-001", (-5, 300), &sk);
    let (st, b) = s2
        .execute(&json!({"action": "echo", "payload": p, "nonce": "t1", "approval_artifact": art}))
        .await;
    assert_eq!(st, 200, "{b}");
}

/// SPEC §6: after a receipt-key rotation a repeated rejection is answered with the evidence
/// stored then, which still verifies.
#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_rejection_after_a_key_rotation_keeps_its_stored_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let k1 = tmp.path().join("k1.pem");
    let k2 = tmp.path().join("k2.pem");
    for k in [&k1, &k2] {
        let o = cli(&["keygen", "--out", k.to_str().unwrap()]);
        assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
    }
    let pub1 = std::fs::read_to_string(format!("{}.pub", k1.display())).unwrap();
    let mut s = Server::start(&[
        ("OPENEXEC_RECEIPT_KEY", k1.to_str().unwrap()),
        ("OPENEXEC_LOG_INTERVAL_MS", "50"),
    ]);
    let body = json!({"action": "nope", "payload": {}, "nonce": "rot-1"});
    let (st, first) = s.execute(&body).await;
    assert_eq!(st, 400, "{first}");
    let before = first["evidence"].clone();
    s.term();

    // Rotate: k2 signs now, k1 is still trusted.
    let data = s.dir().to_path_buf();
    let db = format!("sqlite:///{}", s.db_path().display());
    let s2 = Server::start(&[
        ("OPENEXEC_DATA_DIR", data.to_str().unwrap()),
        ("OPENEXEC_DB_URL", &db),
        ("OPENEXEC_RECEIPT_KEY", k2.to_str().unwrap()),
        ("OPENEXEC_PREVIOUS_RECEIPT_KEYS", &pub1),
        ("OPENEXEC_LOG_INTERVAL_MS", "50"),
    ]);
    let (st, again) = s2.execute(&body).await;
    assert_eq!(st, 400, "{again}");
    let ev = &again["evidence"];
    assert_eq!(
        sans_inclusion(ev),
        sans_inclusion(&before),
        "never re-signed"
    );
    assert_eq!(ev["key_id"], before["key_id"]);
    // Its own evidence verifies, inclusion proof and all.
    let ev = eventually(
        Duration::from_secs(10),
        "the evidence carries its inclusion",
        || async {
            let (_, again) = s2.execute(&body).await;
            again["evidence"]
                .get("inclusion")
                .is_some()
                .then(|| again["evidence"].clone())
        },
    )
    .await;
    let (st, v) = s2.post("/receipts/verify", &ev).await;
    assert_eq!(st, 200);
    assert_eq!(v["valid"], true, "{v}");
}

/// `add` adds integers exactly and refuses a sum nobody could hash alike.
#[tokio::test(flavor = "multi_thread")]
async fn add_is_exact_and_refuses_sums_beyond_the_safe_integers() {
    let s = Server::start(&[]);
    let max = 9007199254740991_i64;
    let (st, b) = s
        .execute(&json!({"action": "add", "payload": {"a": max - 1, "b": 1}, "nonce": "a1"}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["result"], json!({"sum": max}));
    let (st, v) = s
        .post(
            "/receipts/verify",
            &json!({"exec_id": b["id"], "result": b["result"], "receipt": b["receipt"]}),
        )
        .await;
    assert_eq!((st, &v["valid"]), (200, &json!(true)), "{v}");
    let (st, b) = s
        .execute(&json!({"action": "add", "payload": {"a": max, "b": max}, "nonce": "a2"}))
        .await;
    assert_eq!((st, code(&b)), (400, "invalid_payload"), "{b}");
    assert_eq!(b["evidence"]["receipt"]["status"], "rejected");
    assert_eq!(s.handler_runs("add").await, 1);
}

/// SPEC §4 time window: issued after it expires, or valid for longer than allowed, is
/// malformed.
#[tokio::test(flavor = "multi_thread")]
async fn approval_time_window_rules() {
    let sk = vector_signing_key();
    let s = clawshield_server(&[("OPENEXEC_MAX_APPROVAL_TTL_SECONDS", "86400")]);
    let p = json!({});
    // A v1 artifact whose times we set, signed again.
    let with_times = |nonce: &str, issued: &str, expires: &str| {
        let mut m = v1("echo", &p, nonce, "tenant-001", (0, 1), &sk)
            .as_object()
            .unwrap()
            .clone();
        m.insert("issued_at".into(), json!(issued));
        m.insert("expires_at".into(), json!(expires));
        sign_v1_object(m, &sk)
    };
    let fmt =
        |d: i64| openexec_core::time::format_rfc3339(Utc::now() + chrono::Duration::seconds(d));
    let cases = [
        (fmt(10), fmt(-10), "approval_malformed"),
        (
            fmt(-5),
            "9999-12-31T23:59:59Z".to_string(),
            "approval_malformed",
        ),
        (fmt(-5), fmt(2 * 86_400), "approval_malformed"),
        (fmt(-600), fmt(-300), "approval_expired"),
        (fmt(300), fmt(600), "approval_not_yet_valid"),
    ];
    for (i, (issued, expires, want)) in cases.into_iter().enumerate() {
        let nonce = format!("w-{i}");
        let art = with_times(&nonce, &issued, &expires);
        let (st, b) = s
            .execute(
                &json!({"action": "echo", "payload": p, "nonce": nonce, "approval_artifact": art}),
            )
            .await;
        assert_eq!((st, code(&b)), (403, want), "{issued} → {expires}: {b}");
    }
    let nonce = "w-ok";
    let art = with_times(nonce, &fmt(-5), &fmt(86_000));
    let (st, b) = s
        .execute(&json!({"action": "echo", "payload": p, "nonce": nonce, "approval_artifact": art}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(s.handler_runs("echo").await, 1);
}

/// Keys: a value that is not a key is never echoed; one key cannot sign both receipts and the
/// log; private key files others can read are refused; state is created private.
#[tokio::test(flavor = "multi_thread")]
async fn key_handling_and_file_permissions() {
    let secretish = "c2VjcmV0LXNlZWQtdHlwbw-not-a-key";
    let f = Server::try_start(&[("OPENEXEC_RECEIPT_KEY", secretish)])
        .err()
        .expect("started with a receipt key that does not parse");
    assert!(f.log.contains("OPENEXEC_RECEIPT_KEY"), "{}", f.log);
    assert!(!f.log.contains(secretish), "the value is echoed: {}", f.log);
    let f = Server::try_start(&[("CLAWSHIELD_PUBLIC_KEY", secretish)])
        .err()
        .expect("started with an approval key that does not parse");
    assert!(f.log.contains("CLAWSHIELD_PUBLIC_KEY"), "{}", f.log);
    assert!(!f.log.contains(secretish), "the value is echoed: {}", f.log);

    let tmp = tempfile::tempdir().unwrap();
    let k = tmp.path().join("k.pem");
    let o = cli(&["keygen", "--out", k.to_str().unwrap()]);
    assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
    assert_eq!(mode(&k), 0o600);
    let ks = k.to_str().unwrap();
    let f = Server::try_start(&[("OPENEXEC_RECEIPT_KEY", ks), ("OPENEXEC_LOG_KEY", ks)])
        .err()
        .expect("started with one key for receipts and the log");
    assert!(f.log.contains("are the same key"), "{}", f.log);

    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = Server::try_start(&[("OPENEXEC_RECEIPT_KEY", ks)])
        .err()
        .expect("started with a world-readable private key");
    assert!(f.log.contains("chmod 600"), "{}", f.log);
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A fresh start creates its state private: data directory 0700, database and keys 0600.
    let s = Server::start(&[
        ("OPENEXEC_RECEIPT_KEY", ks),
        ("OPENEXEC_DATA_DIR", "state"),
        ("OPENEXEC_DB_URL", "sqlite:///db/openexec.db"),
    ]);
    let (st, _) = s
        .execute(&json!({"action": "echo", "payload": {}, "nonce": "perm"}))
        .await;
    assert_eq!(st, 200);
    let state = s.dir().join("state");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("log-key.pem")), 0o600);
    assert_eq!(mode(&s.dir().join("db")), 0o700);
    for f in ["openexec.db", "openexec.db-wal"] {
        assert_eq!(mode(&s.dir().join("db").join(f)), 0o600, "{f}");
    }
}

/// Clawshield mode without a key answers 403 as the original did; `/ready` stays 503. Logs carry
/// no colour codes off a terminal, and a quiet repair loop logs nothing.
#[tokio::test(flavor = "multi_thread")]
async fn clawshield_without_a_key_and_quiet_plain_logs() {
    let s = Server::start(&[("OPENEXEC_MODE", "clawshield")]);
    let (st, b) = s
        .execute(&json!({"action": "echo", "payload": {}, "nonce": "nokey"}))
        .await;
    assert_eq!((st, code(&b)), (403, "approval_not_configured"), "{b}");
    assert_eq!(detail(&b), "CLAWSHIELD_PUBLIC_KEY not configured");
    let (st, r) = s.get("/ready").await;
    assert_eq!(st, 503, "{r}");
    // The repair loop runs every 5 s; two rounds go by with nothing to repair.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let log = s.log();
    assert!(!log.contains('\u{1b}'), "colour codes in a file log: {log}");
    assert!(
        !log.contains("store is back"),
        "the repair loop talks when nothing happened: {log}"
    );
}

/// `/openapi.json` documents every status each route answers, and the `/execute` body with
/// its identifier limits.
#[tokio::test(flavor = "multi_thread")]
async fn openapi_documents_statuses_and_bodies() {
    let s = Server::start(&[]);
    let (st, doc) = s.get("/openapi.json").await;
    assert_eq!(st, 200);
    let statuses = |path: &str, method: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is not documented"))
            .keys()
            .cloned()
            .collect()
    };
    for (path, method, want) in [
        (
            "/execute",
            "post",
            &[
                "200", "400", "403", "409", "413", "415", "422", "502", "503",
            ][..],
        ),
        (
            "/receipts/{exec_id}",
            "get",
            &["200", "400", "404", "503"][..],
        ),
        (
            "/receipts/verify",
            "post",
            &["200", "400", "413", "415"][..],
        ),
    ] {
        let got = statuses(path, method);
        for w in want {
            assert!(
                got.iter().any(|g| g == w),
                "{method} {path} lacks {w}: {got:?}"
            );
        }
    }
    // The answers of the guard and the body rules are on every operation.
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/log/checkpoint"), "{doc}");
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let codes: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            assert!(
                codes.iter().any(|c| *c == "403"),
                "{method} {path}: {codes:?}"
            );
            if method == "post" {
                for c in ["408", "413"] {
                    assert!(codes.iter().any(|x| *x == c), "{method} {path} lacks {c}");
                }
            }
        }
    }
    // The receipt log's routes (served by openexec-logstore's router, documented by its
    // LogApi merged into this document) are there with their statuses.
    for (path, method, want) in [
        ("/log/checkpoint", "get", &["200", "404"][..]),
        ("/log/entries", "get", &["200", "400"][..]),
        ("/log/proof/inclusion", "get", &["200", "400"][..]),
        ("/log/proof/consistency", "get", &["200", "400"][..]),
        ("/log/cosignatures", "post", &["200", "403", "413"][..]),
    ] {
        let got = statuses(path, method);
        for w in want {
            assert!(
                got.iter().any(|g| g == w),
                "{method} {path} lacks {w}: {got:?}"
            );
        }
    }
    // What a generator needs to produce valid bodies: required fields and the SPEC §2 limits.
    let schemas = &doc["components"]["schemas"];
    let body = &schemas["ExecuteBody"];
    let req: Vec<&str> = body["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(req.contains(&"action") && req.contains(&"nonce"), "{body}");
    assert_eq!(body["properties"]["action"]["maxLength"], 128, "{body}");
    assert_eq!(body["properties"]["action"]["minLength"], 1, "{body}");
    assert!(
        body["properties"]["action"]["pattern"].is_string(),
        "{body}"
    );
    assert_eq!(body["properties"]["nonce"]["maxLength"], 256, "{body}");
    assert_eq!(body["properties"]["tenant_id"]["maxLength"], 128, "{body}");
    let verify = &doc["paths"]["/receipts/verify"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    assert!(!verify.is_null(), "{doc}");
}

/// ClawLedger keeps the same key and file rules: an inline key works, a readable key file is
/// refused with the fix, and its state is created private.
#[tokio::test(flavor = "multi_thread")]
async fn clawledger_keys_and_file_permissions() {
    let tmp = tempfile::tempdir().unwrap();
    let k = tmp.path().join("w.pem");
    let o = cli(&["keygen", "--out", k.to_str().unwrap()]);
    assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = cli(&[
        "ledger",
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        tmp.path().join("d").to_str().unwrap(),
        "--db-url",
        &format!("sqlite:///{}", tmp.path().join("l.db").display()),
        "--key",
        k.to_str().unwrap(),
    ]);
    assert_eq!(exit_code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));

    // The key inline (one meaning everywhere), state under fresh directories.
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pem = std::fs::read_to_string(&k).unwrap();
    let l = LedgerServer::start(&[
        ("CLAWLEDGER_KEY", pem.as_str()),
        ("CLAWLEDGER_DATA_DIR", "state"),
        ("CLAWLEDGER_DB_URL", "sqlite:///db/clawledger.db"),
    ]);
    let (st, _) = (
        l.client
            .get(l.url("/health"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        (),
    );
    assert_eq!(st, 200);
    // Its errors have the one shape of every service: detail and error.{code, message}.
    let r = l
        .client
        .get(l.url("/checkpoint/no/such/origin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let b: Value = r.json().await.unwrap();
    assert!(b["error"]["code"].is_string(), "{b}");
    assert_eq!(b["detail"], b["error"]["message"], "{b}");
    assert_eq!(mode(&l.dir().join("db")), 0o700);
    assert_eq!(mode(&l.dir().join("db/clawledger.db")), 0o600);
    assert!(
        !l.dir().join("state/witness-key.pem").exists(),
        "the inline key was used"
    );

    // Without a key: generated 0600 in a fresh 0700 data directory.
    let g = LedgerServer::start(&[("CLAWLEDGER_DATA_DIR", "fresh")]);
    assert_eq!(mode(&g.dir().join("fresh")), 0o700);
    assert_eq!(mode(&g.dir().join("fresh/witness-key.pem")), 0o600);
}
