//! PostgreSQL going away and coming back, with a whole ClawLedger (`Ledger::start` + `run`)
//! in-process, on a PostgreSQL server of the test's own that it really stops and starts.
//! It starts while the database is down, answers 503 (with /health saying why) while it is down,
//! keeps running, and verifies and cosigns once the database is back.

mod support;

use std::sync::Arc;
use std::time::Duration;

use openexec_ledger::{Config, Ledger, Settings};
use openexec_testkit::{eventually, PrivatePg};
use serde_json::Value;
use support::*;

/// Stop or start the test's own PostgreSQL server (blocking commands, off the runtime).
async fn set_up(pg: &Arc<PrivatePg>, up: bool) {
    let pg = pg.clone();
    tokio::task::spawn_blocking(move || if up { pg.start_again() } else { pg.stop() })
        .await
        .unwrap();
}

/// Poll `path` until `ok` holds for its answer (within 30 s).
async fn wait_for(base: &str, path: &str, ok: impl Fn(u16, &Value) -> bool) -> Value {
    let what = format!("GET {path} answers as wanted");
    eventually(Duration::from_secs(30), &what, || async {
        let (st, v) = get(base, path).await;
        ok(st, &v).then_some(v)
    })
    .await
}

/// Wait until the witness delivered its cosignature of `size` to the log.
async fn wait_delivered(log: &FakeLog, size: u64) {
    let what = format!("a cosignature of {size} is delivered");
    eventually(Duration::from_secs(30), &what, || async {
        log.cosigned(size).then_some(())
    })
    .await
}

async fn assert_unavailable(base: &str) {
    let (st, h) = get(base, "/health").await;
    assert_eq!(st, 503, "{h}");
    assert_eq!(h["database"], "unavailable", "{h}");
    assert!(!h["error"].as_str().unwrap_or("").is_empty(), "{h}");
    for path in [
        "/alerts".to_string(),
        format!("/checkpoint/{ORIGIN}"),
        format!("/evidence/{ORIGIN}/3"),
    ] {
        let (st, v) = get(base, &path).await;
        assert_eq!(st, 503, "GET {path}: {v}");
        assert_eq!(v["error"]["code"], "store_unavailable", "GET {path}: {v}");
        assert_eq!(v["detail"], v["error"]["message"], "GET {path}: {v}");
    }
    // What needs no database still answers.
    let (st, _) = get(base, "/keys").await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_outage_answers_503_and_the_witness_resumes() {
    let Some(pg) = PrivatePg::start("ledger_outage") else {
        return;
    };
    let pg = Arc::new(pg);
    let url = pg.url();
    set_up(&pg, false).await;

    let log = FakeLog::start().await;
    log.grow_to(20);
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("witness.pem");
    let sk = openexec_core::keys::signing_key_from_seed([7; 32]); // support::cosigner()'s
    openexec_kit::keys::write_private(&key, &openexec_core::keys::signing_key_to_pem(&sk)).unwrap();
    let cfg = Config::from_settings(Settings {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(tmp.path().to_path_buf()),
        db_url: Some(url),
        db_pool_size: Some(2),
        db_timeout_ms: Some(300),
        key: Some(key.display().to_string()),
        name: Some(WITNESS.into()),
        watch: Some(vec![format!("{}={}", log.url, log.verifier_key)]),
        poll_ms: Some(50),
        catchup_chunk: Some(8),
        ..Settings::default()
    })
    .unwrap();
    let ledger = Ledger::start(cfg)
        .await
        .expect("starts while the database is down");
    let base = format!("http://{}", ledger.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(ledger.run(async {
        let _ = stop_rx.await;
    }));

    // Down from the start: 503s, nothing verified or cosigned.
    assert_unavailable(&base).await;
    assert!(!log.cosigned(20));

    // Up: migrations run on first use, the witness catches up and cosigns.
    set_up(&pg, true).await;
    wait_for(&base, "/health", |st, _| st == 200).await;
    wait_for(&base, &format!("/evidence/{ORIGIN}/19"), |st, _| st == 200).await;
    wait_delivered(&log, 20).await;

    // Down again while running; the log grows meanwhile.
    set_up(&pg, false).await;
    assert_unavailable(&base).await;
    log.grow_to(45);
    assert!(!running.is_finished(), "ClawLedger stopped");

    // Back: it resumes and verifies the growth.
    set_up(&pg, true).await;
    let ev = wait_for(&base, &format!("/evidence/{ORIGIN}/44"), |st, _| st == 200).await;
    check_evidence(&ev, &log.verifier(), 44, 45);
    wait_delivered(&log, 45).await;
    let (st, h) = get(&base, "/health").await;
    assert_eq!((st, &h["database"]), (200, &Value::from("ok")), "{h}");
    let (st, a) = get(&base, "/alerts").await;
    assert_eq!((st, a), (200, Value::Array(vec![])));

    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
}
