//! OpenExec on PostgreSQL, as real processes (issue 4): two replicas on one database keep
//! at-most-once and one log; SQLite and PostgreSQL give identical receipt hashes; killing the
//! sequencer replica under load hands the log to the other without losing or contradicting
//! anything; the database stopped and started under load answers 503 meanwhile and the
//! service recovers by itself.
//!
//! Each test gets a database of its own (`openexec_testkit`). Without a PostgreSQL server they
//! are skipped with a printed reason, except in CI (`OPENEXEC_TEST_PG_REQUIRED=1`), where that
//! is a failure.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use openexec_log::note;
use openexec_testkit::{eventually, PrivatePg, TestDb};
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A replica on `url`, sharing `keys_from`'s receipt and log keys (every replica of one
/// deployment signs with the same keys).
fn replica(url: &str, keys_from: Option<&Server>, extra: &[(&str, &str)]) -> Server {
    let mut env: Vec<(&str, String)> = vec![
        ("OPENEXEC_DB_URL", url.to_string()),
        ("OPENEXEC_LOG_INTERVAL_MS", "100".to_string()),
    ];
    if let Some(a) = keys_from {
        env.push((
            "OPENEXEC_RECEIPT_KEY",
            a.dir().join("receipt-key.pem").display().to_string(),
        ));
        env.push((
            "OPENEXEC_LOG_KEY",
            a.dir().join("log-key.pem").display().to_string(),
        ));
    }
    let mut all = env_ref(&env);
    all.extend_from_slice(extra);
    Server::start(&all)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_1000_rounds_of_one_nonce_run_each_once() {
    let Some(db) = TestDb::create("e2e_two_replicas").await else {
        return;
    };
    let a = Arc::new(replica(&db.url, None, &[]));
    let b = Arc::new(replica(&db.url, Some(&a), &[]));
    let rounds = 1000;
    let mut tasks = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    for round in 0..rounds {
        let (a, b, sem) = (a.clone(), b.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            let body = json!({"action": "echo", "payload": {"round": round}, "nonce": format!("r-{round}")});
            let (ra, rb) = tokio::join!(a.execute(&body), b.execute(&body));
            (round, ra, rb)
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        let (round, (sa, ra), (sb, rb)) = t.await.unwrap();
        assert_eq!((sa, sb), (200, 200), "round {round}: {ra} / {rb}");
        assert_eq!(ra["receipt"], rb["receipt"], "round {round}: two receipts");
        assert_eq!(ra["id"], rb["id"]);
        let n = [&ra, &rb].iter().filter(|r| r["replayed"] == false).count();
        assert_eq!(n, 1, "round {round}: {n} fresh answers: {ra} / {rb}");
        fresh += n;
    }
    assert_eq!(fresh, rounds);
    let runs = a.handler_runs("echo").await + b.handler_runs("echo").await;
    assert_eq!(
        runs, rounds as u64,
        "the handler ran {runs} times for {rounds} rounds"
    );

    // One log: both replicas serve the same entries, and a receipt's evidence from either
    // verifies with the shared keys.
    let size = wait_checkpoint(&a, rounds as u64).await;
    assert_eq!(size, rounds as u64);
    let (_, ea) = a.get("/log/entries?start=0&end=1000").await;
    let (_, eb) = b.get("/log/entries?start=0&end=1000").await;
    assert_eq!(ea, eb);
    let (st, ev) = b.get(&format!("/receipts/{}", ea_exec_id(&ea, 7))).await;
    assert_eq!(st, 200, "{ev}");
    check_evidence(&ev["evidence"], &a.keys().await).unwrap();
    assert!(ev["evidence"]["inclusion"].is_object(), "{ev}");
}

/// The exec_id of log entry `i` in a `/log/entries` answer.
fn ea_exec_id(entries: &Value, i: usize) -> String {
    let data = B64.decode(entries[i].as_str().unwrap()).unwrap();
    let leaf: Value = serde_json::from_slice(&data).unwrap();
    leaf["receipt"]["exec_id"].as_str().unwrap().to_string()
}

/// Poll `/log/checkpoint` until it covers at least `size` entries; returns its size.
async fn wait_checkpoint(s: &Server, size: u64) -> u64 {
    let _context = OnPanic(|| format!("log:\n{}", s.log()));
    let what = format!("a checkpoint of size {size}");
    eventually(Duration::from_secs(30), &what, || async {
        checkpoint(s).await.map(|(n, _)| n).filter(|&n| n >= size)
    })
    .await
}

/// The latest checkpoint a server serves: (size, root), checked against its log key.
async fn checkpoint(s: &Server) -> Option<(u64, [u8; 32])> {
    let (st, text) = s.get_text("/log/checkpoint").await;
    if st != 200 {
        return None;
    }
    let keys = s.keys().await;
    let verifier = note::parse_verifier_key(keys["log"]["verifier_key"].as_str()?).ok()?;
    let opened = note::open_note(&text, &verifier).expect("a checkpoint signed by the log key");
    let cp = note::Checkpoint::parse_body(&opened.body).unwrap();
    Some((cp.size, cp.root))
}

/// Requests whose receipts must be byte-identical on any backend: executed, replayed, failed
/// (bad payload), rejected (unknown action), and one whose nonce is reused with another payload.
fn same_requests() -> Vec<Value> {
    vec![
        json!({"action": "echo", "payload": {"msg": "hi", "n": [1, 2.5, -0.0]}, "nonce": "s-1"}),
        json!({"action": "add", "payload": {"a": 2, "b": 40}, "nonce": "s-2"}),
        json!({"action": "echo", "payload": {"msg": "hi", "n": [1, 2.5, -0.0]}, "nonce": "s-1"}),
        json!({"action": "add", "payload": {"a": "x", "b": 1}, "nonce": "s-3"}),
        json!({"action": "nope", "payload": {}, "nonce": "s-4"}),
        json!({"action": "echo", "payload": {"other": true}, "nonce": "s-1"}),
        json!({"action": "echo", "payload": {"tenant": "t2"}, "nonce": "s-1", "tenant_id": "t2"}),
    ]
}

async fn receipts_of(s: &Server) -> Vec<(u16, Value)> {
    let mut out = Vec::new();
    for body in same_requests() {
        let (st, r) = s.execute(&body).await;
        let hash = r["evidence"]["receipt_hash"].clone();
        out.push((st, json!({"receipt_hash": hash, "receipt": r["evidence"]["receipt"], "code": r["error"]["code"]})));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_and_postgres_give_identical_receipt_hashes() {
    let Some(db) = TestDb::create("e2e_same_hashes").await else {
        return;
    };
    // "t2" is served too (OPENEXEC_TENANTS), so its request runs on both.
    let lite = Server::start(&[("OPENEXEC_TENANTS", "t2")]);
    let pg = replica(&db.url, None, &[("OPENEXEC_TENANTS", "t2")]);
    let a = receipts_of(&lite).await;
    let b = receipts_of(&pg).await;
    assert_eq!(a.len(), b.len());
    let mut with_receipt = 0;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "request {i}: SQLite and PostgreSQL differ");
        if x.1["receipt_hash"].is_string() {
            with_receipt += 1;
        }
    }
    assert!(with_receipt >= 5, "most requests carry a receipt: {a:?}");
    // Different keys (each server generated its own) do not change a receipt hash.
    assert_ne!(
        lite.keys().await["receipt_keys"][0]["key_id"],
        pg.keys().await["receipt_keys"][0]["key_id"],
        "the two servers have different keys"
    );
}

/// Which of the servers holds the sequencer role (`openexec_log_sequencer 1`).
async fn sequencer_of(servers: &[&Server]) -> Option<usize> {
    for (i, s) in servers.iter().enumerate() {
        let (st, text) = s.get_text("/metrics").await;
        if st == 200 && metric(&text, "openexec_log_sequencer") == 1 {
            return Some(i);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_sequencer_under_load_hands_the_log_over_without_loss() {
    let Some(db) = TestDb::create("e2e_sequencer_kill").await else {
        return;
    };
    let a = replica(&db.url, None, &[]);
    let b = replica(&db.url, Some(&a), &[]);
    // Wait until one of them has taken the role.
    let seq = eventually(Duration::from_secs(10), "a sequencer", || async {
        sequencer_of(&[&a, &b]).await
    })
    .await;
    let (mut victim, survivor) = if seq == 0 { (a, b) } else { (b, a) };
    let survivor = Arc::new(survivor);
    let victim_base = victim.base.clone();

    // Load on both: every 200 answer is remembered with its receipt.
    let stop = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut load = Vec::new();
    for w in 0..8 {
        let (stop, client) = (stop.clone(), client.clone());
        let bases = [victim_base.clone(), survivor.base.clone()];
        load.push(tokio::spawn(async move {
            let mut ok: Vec<(String, String)> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"action": "echo", "payload": {"w": w, "i": i}, "nonce": format!("k-{w}-{i}")});
                let base = &bases[i % 2];
                i += 1;
                let Ok(r) = client.post(format!("{base}/execute")).json(&body).send().await else {
                    continue;
                };
                if r.status() == 200 {
                    let v: Value = r.json().await.unwrap();
                    ok.push((v["id"].as_str().unwrap().to_string(), v["receipt"].as_str().unwrap().to_string()));
                }
            }
            ok
        }));
    }
    // Record every checkpoint either serves while the load runs.
    let mut seen: Vec<(u64, [u8; 32])> = Vec::new();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if let Some(c) = checkpoint(&survivor).await {
            seen.push(c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    victim.kill9();
    let killed_at = Instant::now();
    // The survivor takes over within seconds and goes on signing.
    let mut took_over = None;
    // Watch for 8 s at most, or until the survivor has signed for a second after taking over.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        if let Some(c) = checkpoint(&survivor).await {
            seen.push(c);
        }
        if took_over.is_none() && sequencer_of(&[&survivor]).await == Some(0) {
            took_over = Some(killed_at.elapsed());
        }
        if took_over.is_some_and(|t| killed_at.elapsed() > t + Duration::from_secs(1)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut answered: BTreeMap<String, String> = BTreeMap::new();
    for l in load {
        answered.extend(l.await.unwrap());
    }
    let took_over = took_over.expect("the survivor never became the sequencer");
    assert!(
        took_over < Duration::from_secs(5),
        "takeover took {took_over:?}"
    );
    assert!(
        answered.len() > 100,
        "the load ran: {} answers",
        answered.len()
    );

    // Everything answered is in the log, under a checkpoint the survivor signed after the kill
    // (the log interval is 100 ms: wait for one that covers the last answers).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let final_cp = checkpoint(&survivor).await.unwrap();
    let mut logged: HashSet<String> = HashSet::new();
    let mut start = 0;
    while start < final_cp.0 {
        let (st, page) = survivor
            .get(&format!("/log/entries?start={start}&end={}", final_cp.0))
            .await;
        assert_eq!(st, 200, "{page}");
        let page = page.as_array().unwrap().clone();
        for e in &page {
            let data = B64.decode(e.as_str().unwrap()).unwrap();
            let leaf: Value = serde_json::from_slice(&data).unwrap();
            logged.insert(openexec_core::json::jcs_sha256(&leaf["receipt"]));
        }
        start += page.len() as u64;
    }
    for (id, receipt) in &answered {
        assert!(
            logged.contains(receipt),
            "receipt {receipt} of {id} was answered but is not in the log"
        );
    }
    // Every checkpoint seen, before and after the kill, is consistent with the final one.
    let mut checked = 0;
    for (size, root) in seen.iter().copied().collect::<BTreeMap<u64, [u8; 32]>>() {
        if size == 0 || size > final_cp.0 {
            continue;
        }
        let (st, p) = survivor
            .get(&format!(
                "/log/proof/consistency?first={size}&second={}",
                final_cp.0
            ))
            .await;
        assert_eq!(st, 200, "{p}");
        let proof: Vec<[u8; 32]> = p["hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
            .collect();
        openexec_log::verify_consistency(size, final_cp.0, &root, &final_cp.1, &proof)
            .unwrap_or_else(|e| {
                panic!(
                    "checkpoint {size} is not consistent with {}: {e}",
                    final_cp.0
                )
            });
        checked += 1;
    }
    assert!(checked >= 3, "checked {checked} checkpoints");

    // An auditor replays the whole log the two replicas wrote, with public keys alone: every
    // entry hashes into the checkpoint the survivor signed and every receipt's signature holds.
    let keys = survivor.keys().await;
    let out = cli(&[
        "log",
        "audit",
        "--url",
        &survivor.base,
        "--log-key",
        keys["log"]["verifier_key"].as_str().unwrap(),
        "--key",
        keys["receipt_keys"][0]["public_key"].as_str().unwrap(),
    ]);
    assert_eq!(exit_code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["entries_checked"], report["tree_size"], "{report}");
    assert!(
        report["tree_size"].as_u64().unwrap() >= final_cp.0,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_and_started_under_load_answers_503_and_recovers_without_loss() {
    // A PostgreSQL server of this test's own, really stopped and started (the other tests'
    // server is not touched).
    let Some(pg) = PrivatePg::start("e2e_db_outage") else {
        return;
    };
    let pg = Arc::new(pg);
    let url = pg.url();
    let s = Arc::new(replica(
        &url,
        None,
        &[("OPENEXEC_DB_BUSY_TIMEOUT_MS", "1000")],
    ));

    // Load: sleep handlers (so some are running when the database goes), every answer kept.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for w in 0..4 {
        let (s, stop) = (s.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut seen: Vec<(String, u16, String)> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let nonce = format!("o-{w}-{i}");
                i += 1;
                let body = json!({"action": "sleep", "payload": {"ms": 30}, "nonce": nonce});
                let (st, r) = s.execute(&body).await;
                seen.push((nonce, st, code(&r).to_string()));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.stop())
            .await
            .unwrap();
    }
    // While it is down: 503s, and /ready says so.
    let seen = Seen::default();
    let context = OnPanic(|| format!("still {seen}"));
    let r = eventually(Duration::from_secs(10), "a 503", || async {
        let (st, r) = s
            .execute(&json!({"action": "echo", "payload": {}, "nonce": format!("probe-{:?}", Instant::now())}))
            .await;
        seen.set(format!("{st} with the database gone: {r}"));
        (st == 503).then_some(r)
    })
    .await;
    drop(context);
    assert_eq!(code(&r), "store_unavailable", "{r}");
    let (st, _) = s.get("/ready").await;
    assert_eq!(st, 503, "/ready with the database gone");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.start_again())
            .await
            .unwrap();
    }
    // It comes back by itself.
    let context = OnPanic(|| format!("log:\n{}", s.log()));
    eventually(
        Duration::from_secs(20),
        "ready after the database came back",
        || async { (s.get("/ready").await.0 == 200).then_some(()) },
    )
    .await;
    drop(context);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<(String, u16, String)> = Vec::new();
    for l in load {
        all.extend(l.await.unwrap());
    }
    let ok = all.iter().filter(|(_, st, _)| *st == 200).count();
    let unavailable = all.iter().filter(|(_, st, _)| *st == 503).count();
    assert!(ok > 20, "the load ran before and after: {ok} ok");
    assert!(unavailable > 0, "some requests met the outage");
    for (n, st, c) in &all {
        assert!(
            *st == 200 || (*st == 503 && c == "store_unavailable"),
            "{n}: {st} {c}"
        );
    }

    // Nothing lost, nothing run twice: wait for interrupted receipts to be written, then ask
    // every nonce again. Executed ones replay; ones that ran but lost their receipt answer 409
    // outcome_unknown; ones never claimed run now, once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let runs_before = s.handler_runs("sleep").await;
    let mut fresh = 0;
    for (n, st, _) in &all {
        let body = json!({"action": "sleep", "payload": {"ms": 30}, "nonce": n});
        let (st2, r) = s.execute(&body).await;
        match st2 {
            200 if r["replayed"] == true => {}
            200 => {
                assert_eq!(*st, 503, "{n} answered 200 before and ran again: {r}");
                fresh += 1;
            }
            409 => {
                assert_eq!(code(&r), "outcome_unknown", "{n}: {r}");
                assert_eq!(*st, 503, "{n} answered 200 before, now {r}");
            }
            other => panic!("{n}: {other} {r}"),
        }
        if *st == 200 {
            assert_eq!(st2, 200, "{n} answered 200 before; now {r}");
        }
    }
    let runs_after = s.handler_runs("sleep").await;
    assert_eq!(
        runs_after - runs_before,
        fresh,
        "only never-claimed nonces ran now"
    );
}

/// Serialization failures (SQLSTATE 40001) injected into the claim's insert and the receipt's
/// insert: each batch transaction is retried, the request succeeds, and the handler ran once.
#[tokio::test(flavor = "multi_thread")]
async fn serialization_failures_retry_the_transaction_never_the_handler() {
    use sqlx::Connection;
    let Some(db) = TestDb::create("e2e_serialization").await else {
        return;
    };
    let s = replica(&db.url, None, &[]);
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    for table in ["executions", "receipts"] {
        // A sequence is not rolled back with the failed transaction: each trigger fails once.
        for stmt in [
            format!("CREATE SEQUENCE fault_{table}"),
            format!(
                "CREATE FUNCTION fault_{table}() RETURNS trigger AS $$ BEGIN \
                 IF nextval('fault_{table}') = 1 THEN \
                 RAISE EXCEPTION 'injected' USING ERRCODE = 'serialization_failure'; \
                 END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            ),
            format!(
                "CREATE TRIGGER fault_{table} BEFORE INSERT ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION fault_{table}()"
            ),
        ] {
            sqlx::query(&stmt).execute(&mut c).await.unwrap();
        }
    }
    let (st, r) = s
        .execute(&json!({"action": "echo", "payload": {"x": 1}, "nonce": "ser-1"}))
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(s.handler_runs("echo").await, 1, "the handler ran once");
    let (_, metrics) = s.get_text("/metrics").await;
    assert_eq!(
        metric(&metrics, "openexec_store_retries_total"),
        2,
        "one retry for the claim, one for the receipt"
    );
    // Both faults fired (the sequences moved past 1), and the outcome is stored once.
    for table in ["executions", "receipts"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT last_value FROM fault_{table}"))
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert!(
            n >= 2,
            "{table}: the fault fired and the retry went through ({n})"
        );
    }
    let (st, again) = s
        .execute(&json!({"action": "echo", "payload": {"x": 1}, "nonce": "ser-1"}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(again["replayed"], true);
    assert_eq!(again["receipt"], r["receipt"]);
    assert_eq!(s.handler_runs("echo").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_with_another_log_key_refuses_to_start() {
    let Some(db) = TestDb::create("e2e_log_identity").await else {
        return;
    };
    let a = replica(&db.url, None, &[]);
    let env = [("OPENEXEC_DB_URL", db.url.as_str())];
    let failure = match Server::try_start(&env) {
        Ok(_) => panic!("a replica with its own generated log key was accepted"),
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
    // With the shared keys it starts.
    let b = replica(&db.url, Some(&a), &[]);
    assert_eq!(b.get("/ready").await.0, 200);
}

/// A replica killed while its handler runs: another replica turns the claim into an
/// `interrupted` receipt once the dead one's heartbeat is past its lease, and the request is
/// never run again (SPEC §5).
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_handler_leaves_an_interrupted_receipt_on_the_other() {
    let Some(db) = TestDb::create("e2e_replica_killed").await else {
        return;
    };
    let mut a = replica(&db.url, None, &[]);
    let b = replica(&db.url, Some(&a), &[]);
    let body = json!({"action": "sleep", "payload": {"ms": 8000}, "nonce": "killed-1"});
    let a_base = a.base.clone();
    let client = reqwest::Client::new();
    let pending = {
        let body = body.clone();
        tokio::spawn(async move {
            client
                .post(format!("{a_base}/execute"))
                .json(&body)
                .send()
                .await
        })
    };
    a.wait_handler_runs("sleep", 1, Duration::from_secs(10))
        .await;
    // While A lives, B waits for A's outcome rather than running it or calling it lost.
    let (st, r) = tokio::time::timeout(Duration::from_millis(500), b.execute(&body))
        .await
        .map(|x| (x.0, x.1))
        .unwrap_or((0, Value::Null));
    assert_eq!(st, 0, "B answered while A's handler still ran: {r}");
    a.kill9();
    let _ = pending.await;
    // B declares it interrupted after the lease (10 s) and its repair round (every 5 s).
    let seen = Seen::default();
    let context = OnPanic(|| format!("still {seen}; log:\n{}", b.log()));
    let answer = eventually(
        Duration::from_secs(40),
        "B answers 409 outcome_unknown",
        || async {
            let (st, r) = b.execute(&body).await;
            if st == 409 && code(&r) == "outcome_unknown" {
                return Some(r);
            }
            assert!(
                st == 409 || st == 200 && r["replayed"] == true,
                "unexpected {st}: {r}"
            );
            seen.set(format!("{st} {r}"));
            None
        },
    )
    .await;
    drop(context);
    assert_eq!(
        answer["evidence"]["receipt"]["status"], "interrupted",
        "{answer}"
    );
    assert_eq!(b.handler_runs("sleep").await, 0, "B never ran it");
}

/// A replica started before its database waits for it (`OPENEXEC_DB_CONNECT_WAIT_MS`), and
/// gives up with a clear message when it does not come.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_started_before_postgres_waits_for_it_or_gives_up() {
    let Some(pg) = PrivatePg::start("e2e_connect_wait") else {
        return;
    };
    let pg = Arc::new(pg);
    let url = pg.url();
    {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.stop())
            .await
            .unwrap();
    }
    // Nobody comes: it gives up after its wait (not much later), exit 3, naming the setting.
    let t0 = Instant::now();
    let gone = url.clone();
    let failure = match tokio::task::spawn_blocking(move || {
        Server::try_start(&[
            ("OPENEXEC_DB_URL", gone.as_str()),
            ("OPENEXEC_DB_CONNECT_WAIT_MS", "800"),
        ])
    })
    .await
    .unwrap()
    {
        Ok(_) => panic!("started without a database"),
        Err(f) => f,
    };
    assert_eq!(
        failure.status.and_then(|s| s.code()),
        Some(3),
        "{}",
        failure.log
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "gave up after {:?}",
        t0.elapsed()
    );
    assert!(
        failure.log.contains("OPENEXEC_DB_CONNECT_WAIT_MS"),
        "{}",
        failure.log
    );

    // The database comes 1.5 s after the replica: the replica waits and serves.
    let starting = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            Server::try_start(&[
                ("OPENEXEC_DB_URL", url.as_str()),
                ("OPENEXEC_DB_CONNECT_WAIT_MS", "20000"),
            ])
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.start_again())
            .await
            .unwrap();
    }
    let s = starting
        .await
        .unwrap()
        .unwrap_or_else(|f| panic!("did not wait for the database: {}", f.log));
    assert_eq!(s.get("/ready").await.0, 200);
    let (st, r) = s
        .execute(&json!({"action": "echo", "payload": {}, "nonce": "late-db"}))
        .await;
    assert_eq!(st, 200, "{r}");
}
