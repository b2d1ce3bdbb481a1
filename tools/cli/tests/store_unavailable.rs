//! Fail closed (SPEC §5): when the claim cannot be made durable nothing runs (503
//! `store_unavailable`); when the handler ran but its receipt cannot be stored, the answer is 503
//! and the request becomes `interrupted` once the store is back. The outage is made by holding
//! the database's write lock from the test (`BEGIN EXCLUSIVE` on the server's SQLite file).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use openexec_testkit::eventually;
use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};

/// Open the server's database and take its write lock. Checks that the database is in WAL mode
/// (so that the server's readers keep working and its writer honours our lock).
async fn lock_db(path: &Path) -> SqliteConnection {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(10));
    let mut c = SqliteConnection::connect_with(&opts)
        .await
        .expect("open the server's database");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut c)
        .await
        .expect("journal_mode");
    assert_eq!(
        mode.to_lowercase(),
        "wal",
        "the server's database is not in WAL mode"
    );
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut c)
        .await
        .expect("BEGIN EXCLUSIVE");
    c
}

async fn unlock_db(mut c: SqliteConnection) {
    sqlx::query("COMMIT").execute(&mut c).await.expect("COMMIT");
    c.close().await.expect("close");
}

const ENV: &[(&str, &str)] = &[("OPENEXEC_DB_BUSY_TIMEOUT_MS", "200")];

#[tokio::test(flavor = "multi_thread")]
async fn claim_that_cannot_be_made_durable_runs_nothing() {
    let s = Server::start(ENV);
    let warm = json!({"action": "echo", "payload": {"w": 1}, "nonce": "warm"});
    let (st, warm_ans) = s.execute(&warm).await;
    assert_eq!(st, 200, "{warm_ans}");
    assert_eq!(s.handler_runs("echo").await, 1);

    let lock = lock_db(&s.db_path()).await;
    let body = json!({"action": "echo", "payload": {"msg": "x"}, "nonce": "su-1"});
    for _ in 0..3 {
        let (st, b) = s.execute(&body).await;
        assert_eq!(st, 503, "a write outage must not be answered {st}: {b}");
        assert_eq!(code(&b), "store_unavailable", "{b}");
        assert!(b.get("evidence").is_none(), "no receipt can exist: {b}");
    }
    assert_eq!(
        s.handler_runs("echo").await,
        1,
        "the handler ran without a durable claim"
    );

    // Reads still work: a replay of a stored outcome and GET /receipts need no write.
    let (st, b) = s.execute(&warm).await;
    assert_eq!(st, 200, "replay during a write outage: {b}");
    assert_eq!(b["replayed"], true);
    assert_eq!(b["receipt"], warm_ans["receipt"]);
    let (st, r) = s
        .get(&format!("/receipts/{}", warm_ans["id"].as_str().unwrap()))
        .await;
    assert_eq!(st, 200, "{r}");
    let (st, ready) = s.get("/ready").await;
    eprintln!("/ready during the write outage: {st} {ready}");

    unlock_db(lock).await;
    // The refused attempts did not use up the nonce.
    let (st, b) = s.execute(&body).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["replayed"], false, "{b}");
    assert_eq!(b["result"], json!({"echo": {"msg": "x"}}));
    assert_eq!(s.handler_runs("echo").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn receipt_that_cannot_be_stored_becomes_interrupted() {
    let s = Arc::new(Server::start(ENV));
    let body = json!({"action": "sleep", "payload": {"ms": 1500}, "nonce": "su-2"});
    let first = {
        let s = s.clone();
        let b = body.clone();
        tokio::spawn(async move { s.execute(&b).await })
    };
    s.wait_handler_runs("sleep", 1, Duration::from_secs(10))
        .await;
    let lock = lock_db(&s.db_path()).await;
    let (st, b) = first.await.expect("task");
    assert_eq!(
        st, 503,
        "the handler ran but its receipt could not be stored: must not be {st}: {b}"
    );
    assert_eq!(code(&b), "store_unavailable", "{b}");
    unlock_db(lock).await;

    // Within a few seconds the same request answers 409 outcome_unknown, never 200.
    let answer = eventually(
        Duration::from_secs(5),
        "the request answers outcome_unknown",
        || async {
            let (st, b) = s.execute(&body).await;
            assert_ne!(st, 200, "reported success without a durable receipt: {b}");
            (st == 409 && code(&b) == "outcome_unknown").then_some(b)
        },
    )
    .await;
    assert_eq!(
        answer["evidence"]["receipt"]["status"], "interrupted",
        "{answer}"
    );
    check_evidence(&answer["evidence"], &s.keys().await).unwrap();
    let (st, r) = s
        .get(&format!("/receipts/{}", answer["id"].as_str().unwrap()))
        .await;
    assert_eq!(st, 200);
    assert_eq!(r["evidence"]["receipt"]["status"], "interrupted");
    assert_eq!(s.handler_runs("sleep").await, 1, "never re-run by itself");
}
