//! The chunked catch-up, on SQLite and on PostgreSQL: entries are fetched and stored in chunks of
//! at most `chunk`, a catch-up cut off midway resumes after its last stored chunk (across a
//! restart), and nothing of a catch-up that does not hash into the checkpoint's root is cosigned
//! or served; its pending entries are discarded. A chunk also ends once its data reaches the
//! entries cap, so that what one chunk holds in memory is bounded in bytes as well.

mod support;

use openexec_ledger::Outcome;
use openexec_log::NodeId;
use openexec_testkit::{both_backends, Db};
use support::*;

/// `requests` asked for consecutive ranges tiling [from, to), none longer than `page` and none
/// crossing a multiple of `chunk` counted from `from` (each fetch stays inside one chunk).
fn assert_chunked(requests: &[(u64, u64)], from: u64, to: u64, chunk: u64, page: u64) {
    let mut next = from;
    for &(start, end) in requests {
        assert_eq!(start, next, "not consecutive: {requests:?}");
        let served = (end - start).min(page);
        assert!(
            (start - from) / chunk == (start + served - 1 - from) / chunk,
            "a fetch crosses a chunk boundary: [{start}, {end}) in {requests:?}"
        );
        assert!(
            end - from <= ((start - from) / chunk + 1) * chunk,
            "asked beyond the chunk: [{start}, {end}) in {requests:?}"
        );
        next = start + served;
    }
    assert_eq!(next, to, "{requests:?}");
}

async fn catch_up_in_chunks_cosigns_and_serves_evidence(db: Db) {
    let url = &db.url();
    let log = FakeLog::start().await;
    log.set_page(3);
    log.grow_to(50);
    let store = open(url).await;
    let w = witness(&log, store.clone(), 7);
    assert_eq!(w.step().await, Outcome::Cosigned(50));
    // Pages of 3 within chunks of 7: [0,3) [3,6) [6,7) [7,10) …
    assert_chunked(&log.take_requests(), 0, 50, 7, 3);
    let state = store.state(ORIGIN).await.unwrap().unwrap();
    assert_eq!((state.size, state.root), (50, log.root(50)));
    assert!(store.catchup(ORIGIN).await.unwrap().is_none());
    assert!(log.cosigned(50));

    let api = serve_api(store.clone()).await;
    for i in [0, 6, 7, 48, 49] {
        let (st, ev) = get(&api, &format!("/evidence/{ORIGIN}/{i}")).await;
        assert_eq!(st, 200, "{ev}");
        check_evidence(&ev, &log.verifier(), i, 50);
    }
    let (st, _) = get(&api, &format!("/evidence/{ORIGIN}/50")).await;
    assert_eq!(st, 404);

    // The log grows: consistency 50→123 is checked, then chunks from 50.
    log.grow_to(123);
    assert_eq!(w.step().await, Outcome::Cosigned(123));
    assert_chunked(&log.take_requests(), 50, 123, 7, 3);
    assert!(log.cosigned(123));
    for i in [0, 49, 50, 56, 57, 122] {
        let (st, ev) = get(&api, &format!("/evidence/{ORIGIN}/{i}")).await;
        assert_eq!(st, 200, "{ev}");
        check_evidence(&ev, &log.verifier(), i, 123);
    }
    // A quiet round re-checks mirrored entries and cosigns nothing new.
    assert_eq!(w.step().await, Outcome::Quiet);
    assert_eq!(store.alerts().await.unwrap().len(), 0);
    store.close().await;
}
both_backends!(catch_up_in_chunks_cosigns_and_serves_evidence);

/// A mirror that lost a node below its cosigned checkpoint cannot prove the entries that need
/// it: that is a 500 `mirror_corrupt` (this ledger's data is at fault, and no retry fixes it),
/// not a 503 `store_unavailable`; entries whose proofs do not need the node are still served.
#[tokio::test(flavor = "multi_thread")]
async fn evidence_the_mirror_cannot_prove_is_an_internal_error_not_an_outage() {
    use sqlx::Connection;
    let db = Db::sqlite();
    let url = db.url();
    let log = FakeLog::start().await;
    log.grow_to(8);
    let store = open(&url).await;
    let w = witness(&log, store.clone(), 100);
    assert_eq!(w.step().await, Outcome::Cosigned(8));
    let path = url.strip_prefix("sqlite://").unwrap();
    let mut conn = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(path),
    )
    .await
    .unwrap();
    // Leaf 1 is the sibling in the proof of entry 0; no proof of entries 4..8 needs it.
    sqlx::query("DELETE FROM nodes WHERE level = 0 AND idx = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    let api = serve_api(store.clone()).await;
    let (st, ev) = get(&api, &format!("/evidence/{ORIGIN}/0")).await;
    assert_eq!(st, 500, "{ev}");
    assert_eq!(ev["error"]["code"], "mirror_corrupt", "{ev}");
    let (st, ev) = get(&api, &format!("/evidence/{ORIGIN}/5")).await;
    assert_eq!(st, 200, "{ev}");
    check_evidence(&ev, &log.verifier(), 5, 8);
    store.close().await;
}

async fn an_interrupted_catch_up_resumes_after_its_last_stored_chunk(db: Db) {
    let url = &db.url();
    let log = FakeLog::start().await;
    log.grow_to(100);
    // The log stops serving entries from 45 on: chunks [0,10) … [30,40) are stored, [40,50)
    // cannot be completed.
    log.fail_from(Some(45));
    let store = open(url).await;
    let w = witness(&log, store.clone(), 10);
    assert!(matches!(w.step().await, Outcome::Retry(_)));
    let pending = store
        .catchup(ORIGIN)
        .await
        .unwrap()
        .expect("progress stored");
    assert_eq!(pending.base_size, 0);
    assert_eq!(pending.frontier.size(), 40);
    assert_eq!(
        (pending.target_size, pending.target_root),
        (100, log.root(100))
    );
    assert_eq!(store.leaf(ORIGIN, 39).await.unwrap(), Some(entry(39)));
    assert_eq!(store.leaf(ORIGIN, 40).await.unwrap(), None);
    // Pending, not verified: nothing recorded as verified, cosigned or served.
    assert!(store.state(ORIGIN).await.unwrap().is_none());
    assert!(store.latest_cosigned(ORIGIN).await.unwrap().is_none());
    assert!(!log.cosigned(100));
    let api = serve_api(store.clone()).await;
    let (st, ev) = get(&api, &format!("/evidence/{ORIGIN}/5")).await;
    assert_eq!(st, 404, "{ev}");

    // A restart: a new store and witness on the same database; meanwhile the log grew to 130.
    drop(w);
    store.close().await;
    let store = open(url).await;
    log.fail_from(None);
    log.grow_to(130);
    log.take_requests();
    let w = witness(&log, store.clone(), 10);
    assert_eq!(w.step().await, Outcome::Cosigned(130));
    let asked = log.take_requests();
    assert_eq!(
        asked.first(),
        Some(&(40, 50)),
        "did not resume at 40: {asked:?}"
    );
    assert_chunked(&asked, 40, 130, 10, 1000);
    assert!(store.catchup(ORIGIN).await.unwrap().is_none());
    assert!(log.cosigned(130));
    let api = serve_api(store.clone()).await;
    for i in [0, 39, 40, 99, 129] {
        let (st, ev) = get(&api, &format!("/evidence/{ORIGIN}/{i}")).await;
        assert_eq!(st, 200, "{ev}");
        check_evidence(&ev, &log.verifier(), i, 130);
    }
    store.close().await;
}
both_backends!(an_interrupted_catch_up_resumes_after_its_last_stored_chunk);

async fn a_mismatch_in_a_later_chunk_is_an_alert_and_its_entries_are_discarded(db: Db) {
    let url = &db.url();
    let log = FakeLog::start().await;
    log.grow_to(30);
    let store = open(url).await;
    let w = witness(&log, store.clone(), 10);
    assert_eq!(w.step().await, Outcome::Cosigned(30));

    // 70 more entries, entry 85 served altered; first the round is cut off at 95, so that the
    // chunks up to [80,90) — the altered one included — are stored as pending progress.
    log.grow_to(100);
    log.tamper(85, Some(b"{\"entry\":\"forged\"}"));
    log.fail_from(Some(95));
    assert!(matches!(w.step().await, Outcome::Retry(_)));
    let pending = store.catchup(ORIGIN).await.unwrap().unwrap();
    assert_eq!((pending.base_size, pending.frontier.size()), (30, 90));
    assert_eq!(
        store.leaf(ORIGIN, 85).await.unwrap().as_deref(),
        Some(&b"{\"entry\":\"forged\"}"[..])
    );
    // Then the rest: the root does not match.
    log.fail_from(None);
    assert_eq!(w.step().await, Outcome::Alert("entry_mismatch"));
    let alerts = store.alerts().await.unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, "entry_mismatch");
    assert!(alerts[0].detail.contains("[30, 100)"), "{alerts:?}");
    // Nothing advanced or cosigned; the pending entries and the nodes over them are gone, the
    // verified ones kept.
    assert_eq!(store.state(ORIGIN).await.unwrap().unwrap().size, 30);
    assert_eq!(
        store.latest_cosigned(ORIGIN).await.unwrap().unwrap().size,
        30
    );
    assert!(store.catchup(ORIGIN).await.unwrap().is_none());
    assert!(!log.cosigned(100));
    for i in [30, 40, 85, 99] {
        assert_eq!(store.leaf(ORIGIN, i).await.unwrap(), None, "entry {i}");
    }
    assert_eq!(store.leaf(ORIGIN, 29).await.unwrap(), Some(entry(29)));
    let beyond = [
        NodeId::leaf(30),
        NodeId {
            level: 1,
            index: 15,
        }, // [30, 32)
        NodeId { level: 5, index: 0 }, // [0, 32)
        NodeId {
            level: 3,
            index: 10,
        }, // [80, 88)
    ];
    assert!(store.nodes(ORIGIN, &beyond).await.unwrap().is_empty());
    let within = [
        NodeId { level: 4, index: 0 },
        NodeId {
            level: 1,
            index: 14,
        },
    ];
    assert_eq!(store.nodes(ORIGIN, &within).await.unwrap().len(), 2);
    let api = serve_api(store.clone()).await;
    for i in [30, 85] {
        let (st, ev) = get(&api, &format!("/evidence/{ORIGIN}/{i}")).await;
        assert_eq!(st, 404, "{ev}");
    }
    let (st, ev) = get(&api, &format!("/evidence/{ORIGIN}/10")).await;
    assert_eq!(st, 200, "{ev}");
    check_evidence(&ev, &log.verifier(), 10, 30);

    // The same again is not a second alert; once the log serves the true entry it verifies.
    assert_eq!(w.step().await, Outcome::Alert("entry_mismatch"));
    assert_eq!(store.alerts().await.unwrap().len(), 1);
    log.tamper(85, None);
    assert_eq!(w.step().await, Outcome::Cosigned(100));
    let (st, ev) = get(&api, &format!("/evidence/{ORIGIN}/85")).await;
    assert_eq!(st, 200, "{ev}");
    check_evidence(&ev, &log.verifier(), 85, 100);
    store.close().await;
}
both_backends!(a_mismatch_in_a_later_chunk_is_an_alert_and_its_entries_are_discarded);

async fn progress_beyond_a_smaller_checkpoint_is_discarded_and_redone(db: Db) {
    let url = &db.url();
    // Progress stored towards 60 reached 50; the log then serves a checkpoint of 45 (a lagging
    // replica, say): the progress cannot be used (its frontier is past 45), so it is discarded
    // and 45 is verified from scratch.
    let log = FakeLog::start().await;
    log.grow_to(60);
    log.fail_from(Some(55));
    let store = open(url).await;
    let w = witness(&log, store.clone(), 10);
    assert!(matches!(w.step().await, Outcome::Retry(_)));
    assert_eq!(
        store
            .catchup(ORIGIN)
            .await
            .unwrap()
            .unwrap()
            .frontier
            .size(),
        50
    );
    log.fail_from(None);
    log.grow_to(45); // serves the checkpoint of 45 (the tree keeps its 60 leaves)
    log.take_requests();
    assert_eq!(w.step().await, Outcome::Cosigned(45));
    assert_eq!(log.take_requests().first(), Some(&(0, 10)));
    assert_eq!(store.leaf(ORIGIN, 45).await.unwrap(), None);
    assert!(store.catchup(ORIGIN).await.unwrap().is_none());
    store.close().await;
}
both_backends!(progress_beyond_a_smaller_checkpoint_is_discarded_and_redone);

async fn a_chunk_ends_once_its_data_reaches_the_entries_cap(db: Db) {
    let url = &db.url();
    // Pages of 3 entries of 11–12 bytes (`{"entry":9}`, `{"entry":10}`), chunks of at most 20
    // entries, and an entries cap of 100 bytes: a chunk also ends after the page that brings its
    // data to 100 bytes.
    let log = FakeLog::start().await;
    log.set_page(3);
    log.grow_to(30);
    let store = open(url).await;
    let w = witness(&log, store.clone(), 20).with_limits(openexec_ledger::Limits {
        entries_bytes: 100,
        ..openexec_ledger::Limits::default()
    });
    assert_eq!(w.step().await, Outcome::Cosigned(30));
    assert!(log.cosigned(30));
    // [0, 20) ends at 12 (11·9 + 35 = 134 bytes), then [12, 30) at 21 (9·12 = 108), then [21, 30).
    assert_eq!(
        log.take_requests(),
        [
            (0, 20),
            (3, 20),
            (6, 20),
            (9, 20),
            (12, 30),
            (15, 30),
            (18, 30),
            (21, 30),
            (24, 30),
            (27, 30)
        ]
    );
    let api = serve_api(store.clone()).await;
    for i in [0, 11, 12, 29] {
        let (st, ev) = get(&api, &format!("/evidence/{ORIGIN}/{i}")).await;
        assert_eq!(st, 200, "{ev}");
        check_evidence(&ev, &log.verifier(), i, 30);
    }
    store.close().await;
}
both_backends!(a_chunk_ends_once_its_data_reaches_the_entries_cap);
