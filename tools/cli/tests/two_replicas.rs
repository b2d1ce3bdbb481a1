//! Two OpenExec processes sharing one SQLite database (SPEC §5: "however many requests with one
//! nonce arrive at once, on however many replicas sharing one database, the handler runs at most
//! once"). SQLite in WAL mode is shared safely by processes on one host, and the service waits for
//! claims "held elsewhere (another process …)", so this is a configuration it means to support.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A second process on `a`'s database, with `a`'s keys (replicas of one OpenExec share them).
fn replica_of(a: &Server) -> Server {
    let url = format!("sqlite:///{}", a.db_path().display());
    let receipt_key = a.dir().join("receipt-key.pem").display().to_string();
    let log_key = a.dir().join("log-key.pem").display().to_string();
    Server::start(&[
        ("OPENEXEC_DB_URL", url.as_str()),
        ("OPENEXEC_RECEIPT_KEY", receipt_key.as_str()),
        ("OPENEXEC_LOG_KEY", log_key.as_str()),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_with_another_log_key_refuses_to_open_the_log() {
    let a = Server::start(&[]);
    // B generates its own log key: two keys must never sign one log.
    let url = format!("sqlite:///{}", a.db_path().display());
    let failure = match Server::try_start(&[("OPENEXEC_DB_URL", url.as_str())]) {
        Ok(_) => panic!("a second log key was accepted on the same database"),
        Err(f) => f,
    };
    assert_eq!(
        failure.status.and_then(|s| s.code()),
        Some(3),
        "{}",
        failure.log
    );
    assert!(
        failure.log.contains("must use the same OPENEXEC_LOG_KEY"),
        "{}",
        failure.log
    );
    // A still serves.
    let (st, _) = a.get("/ready").await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_nonce_runs_once_across_two_replicas() {
    let a = Arc::new(Server::start(&[]));
    let b = Arc::new(replica_of(&a));
    let body = json!({"action": "sleep", "payload": {"ms": 400}, "nonce": "rep-1"});
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let body = body.clone();
        tasks.push(tokio::spawn(async move { s.execute(&body).await }));
    }
    let mut answers: Vec<(u16, Value)> = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    for (st, r) in &answers {
        assert_eq!(*st, 200, "{r}");
        assert_eq!(
            r["receipt"], answers[0].1["receipt"],
            "two receipts for one nonce"
        );
    }
    let fresh = answers
        .iter()
        .filter(|(_, r)| r["replayed"] == false)
        .count();
    assert_eq!(fresh, 1, "fresh executions");
    let runs = a.handler_runs("sleep").await + b.handler_runs("sleep").await;
    assert_eq!(runs, 1, "the handler ran {runs} times across the replicas");
}

#[tokio::test(flavor = "multi_thread")]
async fn starting_a_replica_does_not_interrupt_a_running_handler() {
    let a = Arc::new(Server::start(&[]));
    let body = json!({"action": "sleep", "payload": {"ms": 2000}, "nonce": "rep-2"});
    let first = {
        let a = a.clone();
        let body = body.clone();
        tokio::spawn(async move { a.execute(&body).await })
    };
    a.wait_handler_runs("sleep", 1, Duration::from_secs(10))
        .await;
    // A second process starts on the same database while A's handler runs.
    let b = replica_of(&a);
    let (st, r) = first.await.unwrap();
    assert_eq!(
        st, 200,
        "a handler that finished normally lost its outcome because another replica started: {r}"
    );
    let (st, rb) = b.execute(&body).await;
    assert_eq!(st, 200, "{rb}");
    assert_eq!(rb["replayed"], true);
    assert_eq!(rb["receipt"], r["receipt"]);
}
