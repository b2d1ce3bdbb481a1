//! The store on its own: claims, single-use approvals, dense log indices under concurrency,
//! reuse of identical receipts, and failing closed while the database is locked.

use std::sync::Arc;
use std::time::Duration;

use openexec_exec::config::DbTarget;
use openexec_exec::store::{Claim, ClaimResult, ClaimStatus, NewReceipt, Store, StoreError};
use sqlx::Connection;

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

async fn open(dir: &tempfile::TempDir, busy_ms: u64) -> Store {
    Store::open(
        &DbTarget::Sqlite(dir.path().join("s.db")),
        Duration::from_millis(busy_ms),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nonce_is_claimed_once_and_keeps_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
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

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_is_used_once_and_a_refused_claim_leaves_the_nonce_free() {
    let dir = tempfile::tempdir().unwrap();
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

#[tokio::test(flavor = "multi_thread")]
async fn log_indices_are_dense_under_concurrency_and_identical_receipts_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
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

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_database_fails_closed_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 100).await;
    let path = dir.path().join("s.db");
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();

    let e = store.claim(claim("n", "e", None)).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
    let e = store.add_receipt(receipt("h", "e")).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");

    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    // Nothing of the failed batch was written: the nonce is free and the index starts at 0.
    assert!(store.lookup("t", "n").await.unwrap().is_none());
    assert!(matches!(
        store.claim(claim("n", "e", None)).await.unwrap(),
        ClaimResult::Claimed
    ));
    assert_eq!(store.add_receipt(receipt("h", "e")).await.unwrap(), 0);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_store_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 100).await;
    store.close().await;
    let e = store.claim(claim("n", "e", None)).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
    assert!(!store.ping().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_claims_in_shared_batches_keep_every_rule() {
    let dir = tempfile::tempdir().unwrap();
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
