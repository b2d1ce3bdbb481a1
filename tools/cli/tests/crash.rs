//! A process killed while a handler runs (SPEC §5): the request becomes `interrupted`, is never
//! re-run by itself, and answers 409 `outcome_unknown` with its receipt.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_handler_leaves_an_interrupted_receipt() {
    let mut s = Server::start(&[]);
    let keys_before = s.keys().await;
    let body = json!({"action": "sleep", "payload": {"ms": 5000}, "nonce": "crash-1"});
    let client = s.client.clone();
    let url = s.url("/execute");
    let b = body.clone();
    let inflight = tokio::spawn(async move { client.post(url).json(&b).send().await });
    s.wait_handler_runs("sleep", 1, Duration::from_secs(10))
        .await;

    s.kill9();
    // The client never gets a success from the killed process.
    if let Ok(r) = inflight.await.expect("task") {
        panic!("the killed server answered: {}", r.status());
    }

    s.restart();
    assert_eq!(
        s.keys().await["receipt_keys"][0],
        keys_before["receipt_keys"][0],
        "the generated receipt key must survive a restart"
    );
    let keys = s.keys().await;
    let mut first = None;
    for _ in 0..2 {
        let (st, b) = s.execute(&body).await;
        assert_eq!(st, 409, "{b}");
        assert_eq!(code(&b), "outcome_unknown", "{b}");
        let ev = &b["evidence"];
        assert_eq!(ev["receipt"]["status"], "interrupted", "{b}");
        assert_eq!(ev["receipt"]["code"], "outcome_unknown", "{b}");
        assert_eq!(ev["receipt"]["result_hash"], json!(null), "{b}");
        assert_eq!(ev["receipt"]["nonce"], "crash-1");
        assert_eq!(ev["receipt"]["handler"]["name"], "builtin:sleep");
        check_evidence(ev, &keys).unwrap();
        match &first {
            None => first = Some(b.clone()),
            Some(f) => assert_eq!(
                sans_inclusion(&f["evidence"]),
                sans_inclusion(&b["evidence"]),
                "the second answer differs"
            ),
        }
    }
    assert_eq!(
        s.handler_runs("sleep").await,
        0,
        "the interrupted handler was run again"
    );
    let first = first.unwrap();
    let exec_id = first["id"].as_str().expect("id");
    assert_eq!(first["evidence"]["receipt"]["exec_id"], exec_id);

    let (st, r) = s.get(&format!("/receipts/{exec_id}")).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        sans_inclusion(&r["evidence"]),
        sans_inclusion(&first["evidence"])
    );

    // The service works normally afterwards, and the log continues after the interrupted entry.
    let (st, b) = s
        .execute(&json!({"action": "echo", "payload": {}, "nonce": "after-crash"}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b["evidence"]["log_index"].as_u64().unwrap(),
        first["evidence"]["log_index"].as_u64().unwrap() + 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_with_many_running_handlers_interrupts_each_once() {
    let mut s = Arc::new(Server::start(&[]));
    let bodies: Vec<_> = (0..8)
        .map(|i| json!({"action": "sleep", "payload": {"ms": 5000}, "nonce": format!("c-{i}")}))
        .collect();
    for b in &bodies {
        let client = s.client.clone();
        let url = s.url("/execute");
        let b = b.clone();
        tokio::spawn(async move { client.post(url).json(&b).send().await });
    }
    s.wait_handler_runs("sleep", 8, Duration::from_secs(10))
        .await;
    let server = Arc::get_mut(&mut s).expect("sole owner");
    server.kill9();
    server.restart();
    // A second restart must not write the interrupted receipts again. (One request first: the
    // binary handles SIGTERM only once it serves; see `sigterm_right_after_listening_exits_zero`.)
    assert_eq!(server.get("/health").await.0, 200);
    let st = server.term();
    assert!(st.success(), "exit status {st}; log:\n{}", server.log());
    server.restart();
    let mut indices = std::collections::BTreeSet::new();
    for b in &bodies {
        let (st, r) = server.execute(b).await;
        assert_eq!(st, 409, "{r}");
        assert_eq!(code(&r), "outcome_unknown", "{r}");
        indices.insert(r["evidence"]["log_index"].as_u64().unwrap());
    }
    assert_eq!(
        indices,
        (0..8).collect(),
        "one interrupted receipt each, no gaps"
    );
    assert_eq!(server.handler_runs("sleep").await, 0);
}
