//! The store on its own, on SQLite and on PostgreSQL (the same test bodies): claims,
//! single-use approvals, dense log indices under concurrency, reuse of identical receipts, and
//! failing closed while the database is locked. PostgreSQL only: two stores on one database
//! (two replicas) keep every rule between them, and exactly one holds the sequencer role.

use std::sync::Arc;
use std::time::Duration;

use openexec_exec::config::DbTarget;
use openexec_exec::store::{
    Claim, ClaimResult, ClaimStatus, NewReceipt, Settled, Store, StoreError, StoreLimits,
};
use openexec_log::LogStore;
use openexec_testkit::{both_backends, Db, TestDb};
use sqlx::Connection;

/// The store of a test's database (either backend).
fn target(db: &Db) -> DbTarget {
    openexec_exec::config::parse_db_url(&db.url()).expect("a test database URL")
}

fn claim(nonce: &str, exec_id: &str, approval: Option<&str>) -> Claim {
    Claim {
        tenant_id: "t".into(),
        nonce: nonce.into(),
        exec_id: exec_id.into(),
        action: "echo".into(),
        template: "{}".into(),
        approval_key: approval.map(str::to_string),
    }
}

fn receipt(hash: &str, exec_id: &str) -> NewReceipt {
    NewReceipt {
        receipt_hash: hash.into(),
        exec_id: exec_id.into(),
        receipt: format!("{{\"h\":\"{hash}\"}}"),
        signature: "sig".into(),
        key_id: "kid".into(),
        result: Some("{\"ok\":true}".into()),
        message: None,
    }
}

async fn open(db: &Db, busy_ms: u64) -> Store {
    Store::open(
        &target(db),
        StoreLimits {
            timeout: Duration::from_millis(busy_ms),
            pool_size: 8,
            connect_wait: Duration::from_secs(5),
        },
    )
    .await
    .unwrap()
}

both_backends!(a_nonce_is_claimed_once_and_keeps_its_outcome);
async fn a_nonce_is_claimed_once_and_keeps_its_outcome(dir: Db) {
    let store = open(&dir, 1000).await;
    assert!(matches!(
        store.claim(claim("n1", "e1", None)).await.unwrap(),
        ClaimResult::Claimed
    ));
    match store.claim(claim("n1", "e1", None)).await.unwrap() {
        ClaimResult::NonceTaken(row) => {
            assert_eq!(row.exec_id, "e1");
            assert_eq!(row.status, ClaimStatus::Running);
            assert!(row.receipt.is_none());
        }
        other => panic!("expected NonceTaken, got {other:?}"),
    }
    let idx = store
        .complete("t", "n1", ClaimStatus::Executed, receipt("h1", "e1"))
        .await
        .unwrap();
    assert_eq!(idx, 0);
    let row = store.lookup("t", "n1").await.unwrap().unwrap();
    assert_eq!(row.status, ClaimStatus::Executed);
    let r = row.receipt.unwrap();
    assert_eq!(r.receipt_hash, "h1");
    assert_eq!(r.result, Some(serde_json::json!({"ok": true})));
    // Completing a claim that is not running is refused, and nothing is written.
    let e = store
        .complete("t", "n1", ClaimStatus::Executed, receipt("h2", "e1"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
    assert!(store.receipt_by_hash("h2").await.unwrap().is_none());
    store.close().await;

    // Durable: a reopened store sees the same state.
    let store = open(&dir, 1000).await;
    let row = store.lookup("t", "n1").await.unwrap().unwrap();
    assert_eq!(row.status, ClaimStatus::Executed);
    store.close().await;
}

both_backends!(an_approval_is_used_once_and_a_refused_claim_leaves_the_nonce_free);
async fn an_approval_is_used_once_and_a_refused_claim_leaves_the_nonce_free(dir: Db) {
    let store = open(&dir, 1000).await;
    assert!(matches!(
        store.claim(claim("a", "ea", Some("k:ap-1"))).await.unwrap(),
        ClaimResult::Claimed
    ));
    match store.claim(claim("b", "eb", Some("k:ap-1"))).await.unwrap() {
        ClaimResult::ApprovalReused { exec_id } => assert_eq!(exec_id, "ea"),
        other => panic!("expected ApprovalReused, got {other:?}"),
    }
    assert!(store.lookup("t", "b").await.unwrap().is_none());
    assert!(matches!(
        store.claim(claim("b", "eb", Some("k:ap-2"))).await.unwrap(),
        ClaimResult::Claimed
    ));
    store.close().await;
}

both_backends!(log_indices_are_dense_under_concurrency_and_identical_receipts_are_stored_once);
async fn log_indices_are_dense_under_concurrency_and_identical_receipts_are_stored_once(dir: Db) {
    let store = Arc::new(open(&dir, 1000).await);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let s = store.clone();
        // every third receipt repeats an earlier hash: it must get the earlier index back
        let h = format!("h{}", if i % 3 == 2 { i - 1 } else { i });
        tasks.push(tokio::spawn(async move {
            (h.clone(), s.add_receipt(receipt(&h, "e")).await.unwrap())
        }));
    }
    let mut by_hash = std::collections::HashMap::new();
    for t in tasks {
        let (h, idx) = t.await.unwrap();
        if let Some(prev) = by_hash.insert(h.clone(), idx) {
            assert_eq!(prev, idx, "{h} got two indices");
        }
    }
    let mut indices: Vec<u64> = by_hash.values().copied().collect();
    indices.sort();
    assert_eq!(indices, (0..200).collect::<Vec<u64>>());
    store.close().await;
}

both_backends!(a_locked_database_fails_closed_and_recovers);
async fn a_locked_database_fails_closed_and_recovers(dir: Db) {
    let store = open(&dir, 100).await;
    // Another connection holds the database (SQLite) or the tables (PostgreSQL) locked.
    let release = lock_everything(&dir).await;
    let e = store.claim(claim("n", "e", None)).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
    let e = store.add_receipt(receipt("h", "e")).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");

    release.await;
    // Nothing of the failed batch was written: the nonce is free and the index starts at 0.
    assert!(store.lookup("t", "n").await.unwrap().is_none());
    assert!(matches!(
        store.claim(claim("n", "e", None)).await.unwrap(),
        ClaimResult::Claimed
    ));
    assert_eq!(store.add_receipt(receipt("h", "e")).await.unwrap(), 0);
    store.close().await;
}

both_backends!(a_closed_store_refuses_writes);
async fn a_closed_store_refuses_writes(dir: Db) {
    let store = open(&dir, 100).await;
    store.close().await;
    let e = store.claim(claim("n", "e", None)).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
    assert!(!store.ping().await);
}

both_backends!(concurrent_claims_in_shared_batches_keep_every_rule);
async fn concurrent_claims_in_shared_batches_keep_every_rule(dir: Db) {
    let store = Arc::new(open(&dir, 1000).await);
    let mut tasks = Vec::new();
    // 40 claims of one nonce, 40 claims of distinct nonces sharing one approval, 40 plain ones:
    // sent at once, so that they share batches.
    for i in 0..120 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let c = match i % 3 {
                0 => claim("same", "e-same", None),
                1 => claim(&format!("ap-{i}"), &format!("e-ap-{i}"), Some("k:shared")),
                _ => claim(&format!("plain-{i}"), &format!("e-plain-{i}"), None),
            };
            (i % 3, s.claim(c).await.unwrap())
        }));
    }
    let (mut same, mut shared, mut plain, mut taken, mut reused) = (0, 0, 0, 0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (0, ClaimResult::Claimed) => same += 1,
            (0, ClaimResult::NonceTaken(row)) => {
                assert_eq!(row.exec_id, "e-same");
                taken += 1
            }
            (1, ClaimResult::Claimed) => shared += 1,
            (1, ClaimResult::ApprovalReused { exec_id }) => {
                assert!(exec_id.starts_with("e-ap-"), "{exec_id}");
                reused += 1
            }
            (2, ClaimResult::Claimed) => plain += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((same, taken), (1, 39), "one nonce is claimed once");
    assert_eq!((shared, reused), (1, 39), "one approval is used once");
    assert_eq!(plain, 40);
    // A claim refused for its approval leaves its nonce free.
    let refused_free = (0..120)
        .filter(|i| i % 3 == 1)
        .map(|i| format!("ap-{i}"))
        .collect::<Vec<_>>();
    let mut free = 0;
    for n in &refused_free {
        if store.lookup("t", n).await.unwrap().is_none() {
            free += 1;
        }
    }
    assert_eq!(free, 39);
    store.close().await;
}

both_backends!(a_settled_claim_is_stored_whole_or_not_at_all);
/// `settle` (an action without effects: claim and outcome in one commit), concurrently with
/// plain claims of the same nonces and approvals: each nonce and each approval is taken once;
/// a settle that loses stores nothing (no claim row, no receipt, no log index); one that wins
/// is executed with its receipt at a dense log index and is never `running` (recovery never
/// sees it).
async fn a_settled_claim_is_stored_whole_or_not_at_all(dir: Db) {
    let store = Arc::new(open(&dir, 1000).await);
    let settle = |s: Arc<Store>, nonce: String, exec: String, key: Option<String>, h: String| async move {
        let mut c = claim(&nonce, &exec, key.as_deref());
        c.template = String::new();
        s.settle(c, ClaimStatus::Executed, receipt(&h, &exec))
            .await
            .unwrap()
    };
    let mut tasks = Vec::new();
    for i in 0..90 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                // one nonce, settled by some and claimed by others
                0 if i % 2 == 0 => (
                    0,
                    Some(settle(s, "same".into(), "e-same".into(), None, format!("hs-{i}")).await),
                    None,
                ),
                0 => (
                    0,
                    None,
                    Some(s.claim(claim("same", "e-same", None)).await.unwrap()),
                ),
                // distinct nonces sharing one approval
                1 => (
                    1,
                    Some(
                        settle(
                            s,
                            format!("ap-{i}"),
                            format!("e-ap-{i}"),
                            Some("k:one".into()),
                            format!("ha-{i}"),
                        )
                        .await,
                    ),
                    None,
                ),
                // plain settles
                _ => (
                    2,
                    Some(
                        settle(
                            s,
                            format!("p-{i}"),
                            format!("e-p-{i}"),
                            None,
                            format!("hp-{i}"),
                        )
                        .await,
                    ),
                    None,
                ),
            }
        }));
    }
    let mut winners = [0usize; 3];
    let mut indices = Vec::new();
    for t in tasks {
        let (kind, settled, claimed) = t.await.unwrap();
        match (settled, claimed) {
            (Some(Settled::Logged(i)), None) => {
                winners[kind] += 1;
                indices.push(i);
            }
            (Some(Settled::Refused(ClaimResult::NonceTaken(row))), None) => {
                assert_eq!((kind, row.exec_id.as_str()), (0, "e-same"))
            }
            (Some(Settled::Refused(ClaimResult::ApprovalReused { exec_id })), None) => {
                assert_eq!(kind, 1);
                assert!(exec_id.starts_with("e-ap-"), "{exec_id}");
            }
            (None, Some(ClaimResult::Claimed)) => winners[kind] += 1,
            (None, Some(ClaimResult::NonceTaken(_))) => assert_eq!(kind, 0),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        winners,
        [1, 1, 30],
        "one nonce once, one approval once, every plain one"
    );
    // Dense log indices: only the winners' receipts were logged.
    indices.sort();
    assert_eq!(indices, (0..indices.len() as u64).collect::<Vec<_>>());
    assert_eq!(store.head().await.unwrap().0, indices.len() as u64);
    // The losers stored nothing: their nonces are free and their receipts absent.
    for i in (0..90).filter(|i| i % 3 == 1) {
        let row = store.lookup("t", &format!("ap-{i}")).await.unwrap();
        match row {
            None => assert!(store
                .receipt_by_hash(&format!("ha-{i}"))
                .await
                .unwrap()
                .is_none()),
            Some(row) => {
                assert_eq!(row.status, ClaimStatus::Executed);
                assert_eq!(row.receipt.unwrap().receipt_hash, format!("ha-{i}"));
            }
        }
    }
    for i in (0..90).filter(|i| i % 3 == 0 && i % 2 == 0) {
        let stored = store.receipt_by_hash(&format!("hs-{i}")).await.unwrap();
        let row = store.lookup("t", "same").await.unwrap().unwrap();
        assert_eq!(
            stored.is_some(),
            row.receipt.as_ref().map(|r| r.receipt_hash.clone()) == Some(format!("hs-{i}"))
        );
    }
    // A settled claim is never running: recovery has nothing to do for it.
    let row = store.lookup("t", "p-2").await.unwrap().unwrap();
    assert_eq!(row.status, ClaimStatus::Executed);
    assert!(
        store
            .running()
            .await
            .unwrap()
            .iter()
            .all(|r| r.nonce == "same"),
        "only a plain claim can be running"
    );
    store.close().await;
}

both_backends!(an_entry_changed_behind_the_stores_back_is_named_at_open);
async fn an_entry_changed_behind_the_stores_back_is_named_at_open(dir: Db) {
    let store = open(&dir, 1000).await;
    for i in 0..5 {
        store
            .add_receipt(receipt(&format!("h{i}"), "e"))
            .await
            .unwrap();
    }
    let (size, root) = store.head().await.unwrap();
    assert_eq!(size, 5);
    store
        .add_checkpoint(&openexec_log::StoredCheckpoint {
            size,
            root,
            note: "signed note".into(),
        })
        .await
        .unwrap();
    store.close().await;
    let store = open(&dir, 1000).await;
    assert_eq!(store.log_problem(), None, "an untouched log opens clean");
    store.close().await;

    let edit = "UPDATE receipts SET receipt = '{\"h\":\"forged\"}' WHERE log_index = 3";
    match &dir {
        Db::Sqlite(d) => {
            let mut c = sqlx::SqliteConnection::connect(&format!(
                "sqlite://{}",
                d.path().join("test.db").display()
            ))
            .await
            .unwrap();
            sqlx::query(edit).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        }
        Db::Postgres(pg) => {
            let mut c = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            sqlx::query(edit).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        }
    }
    let store = open(&dir, 1000).await;
    let problem = store.log_problem().expect("the edit is found");
    assert!(problem.contains("entry 3"), "{problem}");
    store.close().await;
}

/// Lock the database from another connection; the returned future commits and closes it.
async fn lock_everything(db: &Db) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    match db {
        Db::Sqlite(dir) => {
            let path = dir.path().join("test.db");
            let mut other =
                sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut other)
                .await
                .unwrap();
            Box::pin(async move {
                sqlx::query("COMMIT").execute(&mut other).await.unwrap();
                other.close().await.unwrap();
            })
        }
        Db::Postgres(pg) => {
            let mut other = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut other).await.unwrap();
            sqlx::query(
                "LOCK TABLE executions, approvals_used, receipts, log_state IN ACCESS EXCLUSIVE MODE",
            )
            .execute(&mut other)
            .await
            .unwrap();
            Box::pin(async move {
                sqlx::query("COMMIT").execute(&mut other).await.unwrap();
                other.close().await.unwrap();
            })
        }
    }
}

/// Two stores on one PostgreSQL database, as two replicas: claims of one nonce from both at once
/// are won once; an approval is used once; their receipts get one dense order and one tree.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_postgres_share_claims_approvals_and_one_log() {
    let Some(db) = Db::postgres("two_replicas_store").await else {
        return;
    };
    let a = Arc::new(open(&db, 2000).await);
    let b = Arc::new(open(&db, 2000).await);
    assert_ne!(a.owner(), b.owner());
    let mut tasks = Vec::new();
    for round in 0..50 {
        for (k, s) in [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .enumerate()
        {
            tasks.push(tokio::spawn(async move {
                let nonce = format!("n{round}");
                let r = s
                    .claim(claim(
                        &nonce,
                        &format!("e{round}"),
                        Some(&format!("k:ap{round}")),
                    ))
                    .await
                    .unwrap();
                let won = matches!(r, ClaimResult::Claimed);
                if won {
                    let idx = s
                        .complete(
                            "t",
                            &nonce,
                            ClaimStatus::Executed,
                            receipt(&format!("h{round}"), &format!("e{round}")),
                        )
                        .await
                        .unwrap();
                    // and a rejection receipt, from whichever replica, stored once
                    let rej = s
                        .add_receipt(receipt(&format!("rej{}", round % 5), "x"))
                        .await;
                    return (round, k, won, Some(idx), rej.ok());
                }
                (round, k, won, None, None)
            }));
        }
    }
    let mut winners = std::collections::HashMap::new();
    let mut indices = Vec::new();
    for t in tasks {
        let (round, _, won, idx, rej) = t.await.unwrap();
        if won {
            assert!(
                winners.insert(round, ()).is_none(),
                "round {round} claimed twice"
            );
            indices.push(idx.unwrap());
            indices.push(rej.expect("rejection stored"));
        }
    }
    assert_eq!(winners.len(), 50, "every round has exactly one winner");
    let mut distinct = indices.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct, (0..55).collect::<Vec<u64>>(), "one dense order");

    // Both see one tree: the same head, and the stored tree verifies against it.
    let (size_a, root_a) = a.head().await.unwrap();
    let (size_b, root_b) = b.head().await.unwrap();
    assert_eq!((size_a, root_a), (size_b, root_b));
    assert_eq!(size_a, 55);
    let entries = a.log_entries(0, 55).await.unwrap();
    let mut tree = openexec_log::Frontier::empty();
    for (_, data, _) in &entries {
        tree.append(openexec_log::leaf_hash(data)).unwrap();
    }
    assert_eq!(tree.root(), root_a, "the stored entries hash to the head");
    a.close().await;
    b.close().await;
}

// Exactly one process or replica holds the sequencer role; when it goes, another takes it;
// and each sees the head the other appended.
both_backends!(one_sequencer_at_a_time_and_takeover_when_it_goes);
async fn one_sequencer_at_a_time_and_takeover_when_it_goes(db: Db) {
    let a = open(&db, 2000).await;
    let b = open(&db, 2000).await;
    assert!(a.sequencer().await.unwrap(), "the first to ask takes it");
    assert!(!b.sequencer().await.unwrap(), "only one at a time");
    assert!(a.sequencer().await.unwrap(), "and keeps it");
    for i in 0..3 {
        a.add_receipt(receipt(&format!("h{i}"), "e")).await.unwrap();
    }
    assert_eq!(
        b.head().await.unwrap(),
        a.head().await.unwrap(),
        "B sees the head A appended"
    );
    assert_eq!(b.head().await.unwrap().0, 3);
    a.close().await;
    assert!(b.sequencer().await.unwrap(), "the other takes over");
    b.add_receipt(receipt("h9", "e")).await.unwrap();
    assert_eq!(b.head().await.unwrap().0, 4);
    b.close().await;
}

both_backends!(the_newest_cosignature_per_witness_is_kept_whatever_the_order);
async fn the_newest_cosignature_per_witness_is_kept_whatever_the_order(db: Db) {
    // Two stores on one database: two processes (SQLite) or two replicas (PostgreSQL).
    let a = Arc::new(open(&db, 2000).await);
    let b = Arc::new(open(&db, 2000).await);
    a.add_receipt(receipt("h0", "e")).await.unwrap();
    let (size, root) = a.head().await.unwrap();
    a.add_checkpoint(&openexec_log::StoredCheckpoint {
        size,
        root,
        note: "signed note".into(),
    })
    .await
    .unwrap();
    let lines = || async { a.latest_checkpoint().await.unwrap().unwrap().1 };
    assert!(a
        .add_cosignature(size, "w1", 100, "w1 at 100")
        .await
        .unwrap());
    assert!(
        !b.add_cosignature(size, "w1", 50, "w1 at 50").await.unwrap(),
        "older"
    );
    assert!(
        !a.add_cosignature(size, "w1", 100, "w1 at 100")
            .await
            .unwrap(),
        "the same"
    );
    assert_eq!(lines().await, ["w1 at 100"]);
    assert!(b
        .add_cosignature(size, "w1", 200, "w1 at 200")
        .await
        .unwrap());
    assert!(a.add_cosignature(size, "w2", 10, "w2 at 10").await.unwrap());
    assert_eq!(lines().await, ["w1 at 200", "w2 at 10"]);

    // 40 lines of one witness in a scrambled order, from both stores at once: the newest stays.
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let t = 1_000 + (i * 17) % 40;
        tasks.push(tokio::spawn(async move {
            store
                .add_cosignature(size, "w3", t, &format!("w3 at {t}"))
                .await
                .unwrap()
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += usize::from(t.await.unwrap());
    }
    assert!((1..=40).contains(&stored));
    assert_eq!(lines().await, ["w1 at 200", "w2 at 10", "w3 at 1039"]);
    assert!(!b
        .add_cosignature(size, "w3", 1_038, "w3 at 1038")
        .await
        .unwrap());
    assert_eq!(lines().await, ["w1 at 200", "w2 at 10", "w3 at 1039"]);
    a.close().await;
    b.close().await;
}

/// A checkpoint that would contradict the last one is refused by the store itself, whichever
/// replica offers it.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_refuses_contradicting_checkpoints_from_any_replica() {
    let Some(db) = Db::postgres("checkpoints_store").await else {
        return;
    };
    let a = open(&db, 2000).await;
    let b = open(&db, 2000).await;
    let cp = |size: u64, root: u8| openexec_log::StoredCheckpoint {
        size,
        root: [root; 32],
        note: format!("note {size}"),
    };
    a.add_checkpoint(&cp(5, 1)).await.unwrap();
    b.add_checkpoint(&cp(5, 1)).await.unwrap(); // the same again: fine
    let e = b.add_checkpoint(&cp(4, 1)).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    let e = b.add_checkpoint(&cp(5, 2)).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    let (latest, _) = a.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(latest, cp(5, 1));
    a.close().await;
    b.close().await;
}

/// PostgreSQL: a replica that finds the head row's frontier edited (it reloads it when another
/// replica appended since its last commit) reports the store as corrupt, not as unavailable
/// (which would send clients to retry something no retry fixes), and acknowledges nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_postgres_frontier_is_reported_as_corrupt() {
    let Some(db) = Db::postgres("corrupt_frontier").await else {
        return;
    };
    let store = open(&db, 2000).await;
    let Db::Postgres(pg) = &db else {
        unreachable!()
    };
    assert_eq!(store.add_receipt(receipt("h0", "e0")).await.unwrap(), 0);
    // As if another replica had appended, with a frontier that does not read back.
    let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    sqlx::query("UPDATE log_state SET size = size + 1, frontier = 'zz' WHERE id = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    let e = store.add_receipt(receipt("h1", "e1")).await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
    assert!(e.to_string().contains("log_state.frontier"), "{e}");
    assert!(store.receipt_by_hash("h1").await.unwrap().is_none());
    store.close().await;
}

/// The log tables as the migrations leave them, one row per column in order.
async fn log_columns_sqlite(
    conn: &mut sqlx::SqliteConnection,
) -> Vec<(String, String, String, i64, Option<String>, i64)> {
    let mut out = Vec::new();
    for table in [
        "log_nodes",
        "log_checkpoints",
        "log_cosignatures",
        "log_identity",
    ] {
        let cols: Vec<(String, String, i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        assert!(!cols.is_empty(), "no table {table}");
        out.extend(
            cols.into_iter()
                .map(|(n, t, nn, d, pk)| (table.to_string(), n, t, nn, d, pk)),
        );
    }
    out
}

async fn sqlite_at(path: &std::path::Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true),
    )
    .await
    .unwrap()
}

/// The migration scheme (ARCHITECTURE.md, "libs/logstore"): openexec-logstore's own
/// migrations (version 1000, for a new service such as ClawShield) create exactly the log tables
/// OpenExec's historical migrations 0001–0004 built step by step, so the statements of
/// `openexec_logstore::store` run on either; and a service's migrator and the log's share the
/// one `_sqlx_migrations` table when both ignore the other's versions.
#[tokio::test(flavor = "multi_thread")]
async fn the_logs_own_migrations_make_the_tables_openexec_built_and_share_the_history() {
    let dir = tempfile::tempdir().unwrap();
    // SQLite: OpenExec's history against the log crate's migration.
    let mut exec_db = sqlite_at(&dir.path().join("exec.db")).await;
    sqlx::migrate!("./migrations/sqlite")
        .run(&mut exec_db)
        .await
        .unwrap();
    let mut log_db = sqlite_at(&dir.path().join("log.db")).await;
    openexec_logstore::store::sqlite::MIGRATOR
        .run(&mut log_db)
        .await
        .unwrap();
    assert_eq!(
        log_columns_sqlite(&mut exec_db).await,
        log_columns_sqlite(&mut log_db).await
    );

    // A new service: its own migrations (below 1000) and the log's on one database.
    let service_dir = dir.path().join("service-migrations");
    std::fs::create_dir(&service_dir).unwrap();
    std::fs::write(
        service_dir.join("0001_decisions.sql"),
        "CREATE TABLE decisions (log_index INTEGER PRIMARY KEY, decision TEXT NOT NULL);",
    )
    .unwrap();
    let mut service = sqlx::migrate::Migrator::new(service_dir.as_path())
        .await
        .unwrap();
    service.set_ignore_missing(true);
    let log =
        openexec_logstore::store::shared_migrator(&openexec_logstore::store::sqlite::MIGRATOR);
    let mut db = sqlite_at(&dir.path().join("service.db")).await;
    for _ in 0..2 {
        // Either order, and again at every start.
        service.run(&mut db).await.unwrap();
        log.run(&mut db).await.unwrap();
    }
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(versions, vec![1, 1000]);
    // Without ignore_missing, each migrator refuses the other's version in the shared table.
    let strict = sqlx::migrate::Migrator::new(service_dir.as_path())
        .await
        .unwrap();
    assert!(strict.run(&mut db).await.is_err());

    // PostgreSQL, when there is one: the same comparison (the head row included).
    let (Some(a), Some(b)) = (
        TestDb::create("log_migrations_exec").await,
        TestDb::create("log_migrations_log").await,
    ) else {
        return;
    };
    let mut exec_pg = sqlx::PgConnection::connect(&a.url).await.unwrap();
    sqlx::migrate!("./migrations/postgres")
        .run(&mut exec_pg)
        .await
        .unwrap();
    let mut log_pg = sqlx::PgConnection::connect(&b.url).await.unwrap();
    openexec_logstore::store::postgres::MIGRATOR
        .run(&mut log_pg)
        .await
        .unwrap();
    async fn columns(
        c: &mut sqlx::PgConnection,
    ) -> Vec<(String, String, String, String, Option<String>)> {
        sqlx::query_as(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, column_default::text \
             FROM information_schema.columns WHERE table_schema = current_schema() AND table_name LIKE 'log\\_%' \
             ORDER BY table_name, ordinal_position",
        )
        .fetch_all(c)
        .await
        .unwrap()
    }
    let (want, got) = (columns(&mut exec_pg).await, columns(&mut log_pg).await);
    assert!(want.len() >= 17, "{want:?}");
    assert_eq!(want, got);
    let head = "SELECT size, root, frontier FROM log_state";
    let want: Vec<(i64, String, String)> =
        sqlx::query_as(head).fetch_all(&mut exec_pg).await.unwrap();
    let got: Vec<(i64, String, String)> =
        sqlx::query_as(head).fetch_all(&mut log_pg).await.unwrap();
    assert_eq!(want, got);
}
