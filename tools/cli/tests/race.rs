//! At most once under concurrency (SPEC §5), and a receipt log without gaps (SPEC §6).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

async fn fire(s: &Arc<Server>, bodies: Vec<Value>) -> Vec<(u16, Value)> {
    let mut tasks = Vec::new();
    for b in bodies {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.execute(&b).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_requests_run_the_handler_once() {
    let s = Arc::new(Server::start(&[]));
    let body = json!({"action": "sleep", "payload": {"ms": 300}, "nonce": "race-1"});
    let answers = fire(&s, vec![body.clone(); 64]).await;

    let not_ok: Vec<_> = answers.iter().filter(|(st, _)| *st != 200).collect();
    assert!(not_ok.is_empty(), "not all 200: {not_ok:?}");
    let receipts: BTreeSet<&str> = answers
        .iter()
        .map(|(_, b)| b["receipt"].as_str().expect("receipt"))
        .collect();
    assert_eq!(receipts.len(), 1, "more than one receipt: {receipts:?}");
    let fresh = answers
        .iter()
        .filter(|(_, b)| b["replayed"] == json!(false))
        .count();
    let replayed = answers
        .iter()
        .filter(|(_, b)| b["replayed"] == json!(true))
        .count();
    assert_eq!((fresh, replayed), (1, 63), "fresh/replayed split");
    for (_, b) in &answers {
        assert_eq!(b["result"], json!({"slept_ms": 300}), "{b}");
        assert_eq!(b["evidence"]["log_index"], json!(0), "{b}");
    }
    assert_eq!(
        s.handler_runs("sleep").await,
        1,
        "the handler ran more than once"
    );
    let keys = s.keys().await;
    check_evidence(&answers[0].1["evidence"], &keys).unwrap();

    // Same nonce, different payload: 422 nonce_conflict with a rejected receipt.
    let (st, b) = s
        .execute(&json!({"action": "sleep", "payload": {"ms": 301}, "nonce": "race-1"}))
        .await;
    assert_eq!(st, 422, "{b}");
    assert_eq!(code(&b), "nonce_conflict", "{b}");
    let ev = &b["evidence"];
    assert_eq!(ev["receipt"]["status"], "rejected", "{b}");
    assert_eq!(ev["receipt"]["code"], "nonce_conflict", "{b}");
    assert_eq!(ev["receipt"]["nonce"], "race-1", "{b}");
    assert_eq!(ev["log_index"], json!(1), "{b}");
    check_evidence(ev, &keys).unwrap();
    assert_eq!(s.handler_runs("sleep").await, 1);

    // The original is still answered from its stored receipt.
    let (st, b) = s.execute(&body).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["replayed"], true);
    assert_eq!(b["receipt"].as_str(), receipts.first().copied());
}

#[tokio::test(flavor = "multi_thread")]
async fn distinct_requests_get_distinct_receipts_and_a_gapless_log() {
    let s = Arc::new(Server::start(&[]));
    // 64 executions, each with its own nonce, plus concurrent rejections (8 distinct, each sent
    // twice: the duplicate must reuse the receipt) and replays of a few of the executions.
    let mut bodies: Vec<Value> = (0..64)
        .map(|i| json!({"action": "echo", "payload": {"i": i}, "nonce": format!("n-{i}")}))
        .collect();
    for i in 0..16 {
        bodies.push(json!({"action": "nope", "payload": {}, "nonce": format!("bad-{}", i % 8)}));
    }
    let answers = fire(&s, bodies.clone()).await;
    let replays = fire(&s, bodies[..8].to_vec()).await;

    let mut by_hash: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (i, (st, b)) in answers.iter().enumerate() {
        let ev = &b["evidence"];
        if i < 64 {
            assert_eq!(*st, 200, "{b}");
            assert_eq!(b["replayed"], false, "{b}");
            assert_eq!(b["result"], json!({"echo": {"i": i}}));
            assert!(ids.insert(b["id"].as_str().unwrap().to_string()));
        } else {
            assert_eq!(*st, 400, "{b}");
            assert_eq!(code(b), "unknown_action", "{b}");
            assert_eq!(ev["receipt"]["status"], "rejected");
        }
        let h = ev["receipt_hash"]
            .as_str()
            .expect("receipt_hash")
            .to_string();
        let idx = ev["log_index"].as_u64().expect("log_index");
        if let Some(prev) = by_hash.insert(h.clone(), idx) {
            assert_eq!(prev, idx, "one receipt {h} at two log indices");
        }
    }
    for (i, (st, b)) in replays.iter().enumerate() {
        assert_eq!(*st, 200, "{b}");
        assert_eq!(b["replayed"], true, "{b}");
        assert_eq!(b["receipt"], answers[i].1["receipt"]);
        assert_eq!(
            b["evidence"]["log_index"],
            answers[i].1["evidence"]["log_index"]
        );
    }
    assert_eq!(by_hash.len(), 64 + 8, "distinct receipts");
    let indices: BTreeSet<u64> = by_hash.values().copied().collect();
    let want: BTreeSet<u64> = (0..(64 + 8) as u64).collect();
    assert_eq!(
        indices, want,
        "log indices are not exactly 0..N-1 (one per receipt)"
    );
    assert_eq!(s.handler_runs("echo").await, 64);

    // Every receipt is served back by id with the same index.
    let keys = s.keys().await;
    for (_, b) in &answers[..64] {
        let (st, r) = s
            .get(&format!("/receipts/{}", b["id"].as_str().unwrap()))
            .await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["evidence"]["receipt_hash"], b["receipt"]);
        assert_eq!(r["evidence"]["log_index"], b["evidence"]["log_index"]);
        check_evidence(&r["evidence"], &keys).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_past_the_wait_bound_is_in_progress() {
    let s = Arc::new(Server::start(&[("OPENEXEC_REPLAY_WAIT_MS", "200")]));
    let body = json!({"action": "sleep", "payload": {"ms": 1500}, "nonce": "slow-1"});
    let first = {
        let s = s.clone();
        let b = body.clone();
        tokio::spawn(async move { s.execute(&b).await })
    };
    s.wait_handler_runs("sleep", 1, Duration::from_secs(10))
        .await;
    let (st, b) = s.execute(&body).await;
    assert_eq!(st, 409, "{b}");
    assert_eq!(code(&b), "in_progress", "{b}");
    let (st, b1) = first.await.unwrap();
    assert_eq!(st, 200, "{b1}");
    let (st, b2) = s.execute(&body).await;
    assert_eq!(st, 200, "{b2}");
    assert_eq!(b2["replayed"], true);
    assert_eq!(b2["receipt"], b1["receipt"]);
    assert_eq!(s.handler_runs("sleep").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn nonces_are_unique_per_tenant_not_globally() {
    let s = Server::start(&[("OPENEXEC_TENANTS", "t-a,t-b")]);
    let a = json!({"action": "echo", "payload": {"m": 1}, "nonce": "shared", "tenant_id": "t-a"});
    let b = json!({"action": "echo", "payload": {"m": 2}, "nonce": "shared", "tenant_id": "t-b"});
    let (sa, ra) = s.execute(&a).await;
    let (sb, rb) = s.execute(&b).await;
    assert_eq!((sa, sb), (200, 200), "{ra} {rb}");
    assert_eq!(ra["replayed"], false);
    assert_eq!(rb["replayed"], false);
    assert_ne!(ra["id"], rb["id"]);
    assert_eq!(ra["evidence"]["receipt"]["tenant_id"], "t-a");
    assert_eq!(rb["evidence"]["receipt"]["tenant_id"], "t-b");
    // The default tenant is "default" when none is configured; it is a third namespace.
    let (st, r) = s
        .execute(&json!({"action": "echo", "payload": {"m": 3}, "nonce": "shared"}))
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["evidence"]["receipt"]["tenant_id"], "default");
    assert_eq!(s.handler_runs("echo").await, 3);
}
