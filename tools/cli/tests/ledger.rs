//! ClawLedger, the witness (SPEC §7), from the outside: real `openexec serve` and
//! `openexec ledger serve` processes. It cosigns what verifies and delivers the cosignature to
//! the log, whose evidence then verifies offline with k-of-n witnesses; it serves the mirrored
//! evidence after the log is gone; it raises alerts (and never cosigns) on a fork or a shrink;
//! and it cosigns nothing new when a log was edited behind its back. It runs on PostgreSQL as on
//! SQLite; it catches up in chunks, resumes a catch-up killed midway after its last stored
//! chunk, and neither cosigns nor serves a catch-up whose later chunk does not match the root.
//! A hostile log (oversized, endless or trickled answers) raises alerts and cannot make it use
//! more than a bounded amount of memory.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use openexec_core::keys;
use openexec_log::note::{self, Checkpoint, Cosigner, CosignerVerifier, Signer, Verifier};
use openexec_log::{
    leaf_hash, node_hash, plan_consistency, verify_inclusion, Frontier, Hash, NodeId,
};
use openexec_testkit::{eventually, Process, ProcessSpec};
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const WITNESS_NAME: &str = "clawledger/test-witness";

/// A running `openexec ledger serve` in the test's directory.
struct Ledger {
    proc: Process,
    base: String,
    verifier_key: String,
    client: reqwest::Client,
}

impl Ledger {
    /// Start with these flags (plus --bind 127.0.0.1:0), logging to `dir/ledger.log`.
    fn start(dir: &Path, args: &[&str]) -> Ledger {
        let spec = ProcessSpec::new(
            BIN,
            &["ledger", "serve", "--bind", "127.0.0.1:0"],
            "clawledger: listening on ",
        )
        .args(args)
        .clear_env("CLAWLEDGER_")
        .log_file("ledger.log")
        .workdir(dir);
        let proc = Process::start(spec);
        let verifier_key = proc
            .banner
            .iter()
            .find_map(|l| l.strip_prefix("clawledger: cosigner key "))
            .expect("cosigner key line first")
            .trim()
            .to_string();
        Ledger {
            base: proc.base.clone(),
            verifier_key,
            client: reqwest::Client::new(),
            proc,
        }
    }

    fn log(&self) -> String {
        self.proc.full_log()
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (st, t) = self.get_text(path).await;
        (
            st,
            serde_json::from_str(&t).unwrap_or(Value::String(t.clone())),
        )
    }

    async fn alerts(&self) -> Vec<Value> {
        let (st, v) = self.get("/alerts").await;
        assert_eq!(st, 200, "{v}");
        v.as_array().cloned().unwrap_or_default()
    }

    /// Wait until an alert of `kind` is listed.
    async fn wait_alert(&self, kind: &str) -> Vec<Value> {
        let what = format!("a {kind} alert is listed");
        eventually(Duration::from_secs(15), &what, || async {
            let a = self.alerts().await;
            a.iter().any(|x| x["kind"] == kind).then_some(a)
        })
        .await
    }

    /// SIGKILL and reap.
    fn kill9(&mut self) {
        self.proc.kill9()
    }

    /// SIGTERM and wait for the exit.
    fn term(&mut self) -> ExitStatus {
        self.proc.term()
    }
}

/// `openexec keygen --out dir/<file>`; the private key.
fn keygen(dir: &Path, file: &str) -> (PathBuf, keys::SigningKey) {
    let path = dir.join(file);
    let out = cli(&["keygen", "--out", path.to_str().unwrap()]);
    assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
    let sk = keys::parse_signing_key(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (path, sk)
}

/// A witness key file and its cosigner verifier key.
fn witness(dir: &Path) -> (PathBuf, String) {
    let (path, sk) = keygen(dir, "w.pem");
    let vkey = Cosigner::new(WITNESS_NAME, sk).unwrap().verifier_key();
    (path, vkey)
}

fn db_url(dir: &Path) -> String {
    format!("sqlite:///{}", dir.join("ledger.db").display())
}

fn ledger_args(dir: &Path, key: &Path, watch: &str) -> Vec<String> {
    vec![
        "--data-dir".into(),
        dir.display().to_string(),
        "--db-url".into(),
        db_url(dir),
        "--key".into(),
        key.display().to_string(),
        "--name".into(),
        WITNESS_NAME.into(),
        "--watch".into(),
        watch.into(),
        "--poll-ms".into(),
        "100".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Run executions `range` against OpenExec, 16 at a time; the answers.
async fn execute_many(s: &Server, range: std::ops::Range<usize>) -> Vec<Value> {
    let mut tasks = Vec::new();
    for lane in 0..16 {
        let client = s.client.clone();
        let url = s.url("/execute");
        let items: Vec<usize> = range.clone().skip(lane).step_by(16).collect();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in items {
                let r = client
                    .post(&url)
                    .json(
                        &json!({"action": "echo", "payload": {"i": i}, "nonce": format!("w-{i}")}),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                out.push(r.json::<Value>().await.unwrap());
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Wait until the log serves a checkpoint of at least `size` cosigned by `witness`; its text.
async fn cosigned_checkpoint(
    s: &Server,
    log: &Verifier,
    witness: &CosignerVerifier,
    size: u64,
    why: &Ledger,
) -> (Checkpoint, String) {
    let seen = Seen::default();
    let _context = OnPanic(|| format!("last checkpoint: {seen}\nledger log:\n{}", why.log()));
    let what = format!("a checkpoint of size {size} cosigned by the witness");
    eventually(Duration::from_secs(60), &what, || async {
        let (st, text) = s.get_text("/log/checkpoint").await;
        seen.set(&text);
        if st != 200 {
            return None;
        }
        let opened = note::open_note(&text, log).unwrap();
        let cp = Checkpoint::parse_body(&opened.body).unwrap();
        (cp.size >= size && note::count_cosignatures(&opened, std::slice::from_ref(witness)) == 1)
            .then_some((cp, text))
    })
    .await
}

/// Check a ledger evidence answer: the entry is in the checkpoint it returns, which the log
/// signed and the witness cosigned.
fn check_ledger_evidence(ev: &Value, log: &Verifier, witness: &CosignerVerifier, index: u64) {
    let entry = B64.decode(ev["entry"].as_str().unwrap()).unwrap();
    let cp_text = ev["checkpoint"].as_str().unwrap();
    let opened = note::open_note(cp_text, log).unwrap();
    assert_eq!(
        note::count_cosignatures(&opened, std::slice::from_ref(witness)),
        1
    );
    let cp = Checkpoint::parse_body(&opened.body).unwrap();
    assert_eq!(ev["leaf_index"], index);
    assert_eq!(ev["tree_size"], cp.size);
    let hashes: Vec<Hash> = ev["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    verify_inclusion(&leaf_hash(&entry), index, cp.size, &hashes, &cp.root).unwrap();
    // The entry is a receipt log leaf.
    let leaf: Value = serde_json::from_slice(&entry).unwrap();
    assert!(leaf.get("receipt").is_some(), "{leaf}");
}

#[tokio::test(flavor = "multi_thread")]
async fn witness_cosigns_and_evidence_survives_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (wkey, wvkey) = witness(tmp.path());
    let witness_v = note::parse_cosigner_key(&wvkey).unwrap();
    let mut s = Server::start(&[
        ("OPENEXEC_LOG_INTERVAL_MS", "50"),
        ("OPENEXEC_WITNESS_KEYS", &wvkey),
    ]);
    let keys = s.keys().await;
    let log_vkey = keys["log"]["verifier_key"].as_str().unwrap().to_string();
    let origin = keys["log"]["origin"].as_str().unwrap().to_string();
    let log_v = note::parse_verifier_key(&log_vkey).unwrap();
    let mut l = Ledger::start(
        tmp.path(),
        &strs(&ledger_args(
            tmp.path(),
            &wkey,
            &format!("{}={log_vkey}", s.base),
        )),
    );
    assert_eq!(l.verifier_key, wvkey);
    let (st, k) = l.get("/keys").await;
    assert_eq!((st, k["name"].as_str()), (200, Some(WITNESS_NAME)));

    let answers = execute_many(&s, 0..1000).await;
    let (cp, _) = cosigned_checkpoint(&s, &log_v, &witness_v, 1000, &l).await;
    assert_eq!(cp.size, 1000);

    // A receipt's evidence verifies offline with 1 of 1 witness, and not with another witness.
    let id = answers[17]["id"].as_str().unwrap();
    let (st, r) = s.get(&format!("/receipts/{id}")).await;
    assert_eq!(st, 200, "{r}");
    assert!(
        r["evidence"]["inclusion"]["checkpoint"]
            .as_str()
            .unwrap()
            .contains(&format!("\u{2014} {WITNESS_NAME} ")),
        "{r}"
    );
    let path = tmp.path().join("evidence.json");
    std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
    let receipt_key = keys["receipt_keys"][0]["public_key"].as_str().unwrap();
    let verify = |witness: &str| {
        cli(&[
            "verify",
            path.to_str().unwrap(),
            "--key",
            receipt_key,
            "--log-key",
            &log_vkey,
            "--witness",
            witness,
            "--k",
            "1",
            "--require-inclusion",
        ])
    };
    let out = verify(&wvkey);
    assert_eq!(exit_code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let other = Cosigner::new(WITNESS_NAME, keys::signing_key_from_seed([9; 32]))
        .unwrap()
        .verifier_key();
    let out = verify(&other);
    assert_eq!(exit_code(&out), 1, "{}{}", stdout(&out), stderr(&out));

    assert_eq!(l.alerts().await, Vec::<Value>::new(), "{}", l.log());
    let (st, m) = l.get_text("/metrics").await;
    assert_eq!(st, 200);
    assert!(
        !m.lines().any(|x| x.starts_with("clawledger_alerts_total")),
        "{m}"
    );

    // The mirrored evidence, before and after the log is gone.
    for index in [0u64, 17, 999] {
        let (st, ev) = l.get(&format!("/evidence/{origin}/{index}")).await;
        assert_eq!(st, 200, "{ev}");
        check_ledger_evidence(&ev, &log_v, &witness_v, index);
    }
    assert!(s.term().success());
    let (st, ev) = l.get(&format!("/evidence/{origin}/500")).await;
    assert_eq!(st, 200, "{ev}");
    check_ledger_evidence(&ev, &log_v, &witness_v, 500);
    let (st, text) = l.get_text(&format!("/checkpoint/{origin}")).await;
    assert_eq!(st, 200);
    assert!(text.starts_with(&format!("{origin}\n1000\n")), "{text}");
    let (st, _) = l.get(&format!("/evidence/{origin}/1000")).await;
    assert_eq!(st, 404);
    let (st, _) = l.get("/evidence/no/such/origin/0").await;
    assert_eq!(st, 404);
    assert!(l.term().success(), "{}", l.log());
}

/// What the fake log serves.
#[derive(Clone)]
enum Mode {
    /// Proxy to a real OpenExec.
    Proxy(String),
    /// Serve this checkpoint text, these entries (base64) for any range, and an empty
    /// consistency proof.
    Fixed(String, Vec<String>),
    /// Serve this checkpoint text, entry ranges of these entries (base64), and consistency
    /// proofs from these tree nodes.
    Tree(String, Vec<String>, HashMap<NodeId, Hash>),
}

#[derive(Clone)]
struct Fake {
    mode: Arc<Mutex<Mode>>,
    posted: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
    /// In proxy mode: entries from this index on answer 503 (ranges are cut short before it).
    entries_limit: Arc<Mutex<Option<u64>>>,
    /// In proxy mode: every GET /log/entries range asked for.
    entry_requests: Arc<Mutex<Vec<(u64, u64)>>>,
}

/// The numbers `a` and `b` of a query (`start`/`end` of entries, `first`/`second` of a proof).
fn query_pair(uri: &axum::http::Uri, a: &str, b: &str) -> Option<(u64, u64)> {
    let get = |k: &str| {
        uri.query()?
            .split('&')
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
    };
    Some((get(a)?, get(b)?))
}

fn range_of(uri: &axum::http::Uri) -> Option<(u64, u64)> {
    query_pair(uri, "start", "end")
}

async fn fake_get(
    axum::extract::State(f): axum::extract::State<Fake>,
    uri: axum::http::Uri,
) -> (axum::http::StatusCode, String) {
    let mode = f.mode.lock().unwrap().clone();
    match mode {
        Mode::Proxy(base) => {
            let mut url = format!("{base}{}", uri.path_and_query().unwrap());
            if uri.path() == "/log/entries" {
                if let Some((start, end)) = range_of(&uri) {
                    f.entry_requests.lock().unwrap().push((start, end));
                    if let Some(limit) = *f.entries_limit.lock().unwrap() {
                        if start >= limit {
                            return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "cut".into());
                        }
                        url = format!("{base}/log/entries?start={start}&end={}", end.min(limit));
                    }
                }
            }
            match f.http.get(url).send().await {
                Ok(r) => (
                    axum::http::StatusCode::from_u16(r.status().as_u16()).unwrap(),
                    r.text().await.unwrap_or_default(),
                ),
                Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()),
            }
        }
        Mode::Fixed(text, entries) => match uri.path() {
            "/log/checkpoint" => (axum::http::StatusCode::OK, text),
            "/log/entries" => (axum::http::StatusCode::OK, json!(entries).to_string()),
            "/log/proof/consistency" => (
                axum::http::StatusCode::OK,
                json!({"hashes": []}).to_string(),
            ),
            _ => (axum::http::StatusCode::NOT_FOUND, String::new()),
        },
        Mode::Tree(text, entries, nodes) => match uri.path() {
            "/log/checkpoint" => (axum::http::StatusCode::OK, text),
            "/log/entries" => {
                let Some((start, end)) = range_of(&uri) else {
                    return (axum::http::StatusCode::BAD_REQUEST, String::new());
                };
                let end = end.min(entries.len() as u64);
                if start >= end {
                    return (axum::http::StatusCode::BAD_REQUEST, String::new());
                }
                let page = &entries[start as usize..end as usize];
                (axum::http::StatusCode::OK, json!(page).to_string())
            }
            "/log/proof/consistency" => {
                let Some((first, second)) = query_pair(&uri, "first", "second") else {
                    return (axum::http::StatusCode::BAD_REQUEST, String::new());
                };
                let hashes = plan_consistency(first, second)
                    .unwrap()
                    .assemble_from_map(&nodes)
                    .unwrap();
                let hashes: Vec<String> = hashes.iter().map(|h| B64.encode(h)).collect();
                (
                    axum::http::StatusCode::OK,
                    json!({ "hashes": hashes }).to_string(),
                )
            }
            _ => (axum::http::StatusCode::NOT_FOUND, String::new()),
        },
    }
}

async fn fake_post(
    axum::extract::State(f): axum::extract::State<Fake>,
    body: String,
) -> axum::http::StatusCode {
    f.posted.lock().unwrap().push(body.clone());
    let mode = f.mode.lock().unwrap().clone();
    if let Mode::Proxy(base) = mode {
        if let Ok(r) = f
            .http
            .post(format!("{base}/log/cosignatures"))
            .body(body)
            .send()
            .await
        {
            return axum::http::StatusCode::from_u16(r.status().as_u16()).unwrap();
        }
    }
    axum::http::StatusCode::OK
}

async fn start_fake(base: &str) -> (Fake, String) {
    let fake = Fake {
        mode: Arc::new(Mutex::new(Mode::Proxy(base.to_string()))),
        posted: Arc::new(Mutex::new(Vec::new())),
        http: reqwest::Client::new(),
        entries_limit: Arc::new(Mutex::new(None)),
        entry_requests: Arc::new(Mutex::new(Vec::new())),
    };
    let app = axum::Router::new()
        .route("/log/cosignatures", axum::routing::post(fake_post))
        .fallback(axum::routing::get(fake_get))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (fake, format!("http://{addr}"))
}

fn alerts_metric(m: &str, kind: &str) -> u64 {
    m.lines()
        .filter(|l| {
            l.starts_with("clawledger_alerts_total{") && l.contains(&format!("kind=\"{kind}\""))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_and_shrink_are_alerts_never_cosigned() {
    let tmp = tempfile::tempdir().unwrap();
    let (wkey, wvkey) = witness(tmp.path());
    let witness_v = note::parse_cosigner_key(&wvkey).unwrap();
    let (lkey, log_sk) = keygen(tmp.path(), "log.pem");
    let mut s = Server::start(&[
        ("OPENEXEC_LOG_INTERVAL_MS", "50"),
        ("OPENEXEC_WITNESS_KEYS", &wvkey),
        ("OPENEXEC_LOG_KEY", lkey.to_str().unwrap()),
    ]);
    let keys = s.keys().await;
    let log_vkey = keys["log"]["verifier_key"].as_str().unwrap().to_string();
    let origin = keys["log"]["origin"].as_str().unwrap().to_string();
    let log_v = note::parse_verifier_key(&log_vkey).unwrap();
    let (fake, fake_url) = start_fake(&s.base).await;
    let l = Ledger::start(
        tmp.path(),
        &strs(&ledger_args(
            tmp.path(),
            &wkey,
            &format!("{fake_url}={log_vkey}"),
        )),
    );
    execute_many(&s, 0..40).await;
    let (cp, _) = cosigned_checkpoint(&s, &log_v, &witness_v, 40, &l).await;
    assert_eq!(cp.size, 40);
    assert!(s.term().success());

    // The same size with another root, signed with the log's own key.
    let signer = Signer::new(&origin, log_sk).unwrap();
    let sign = |size: u64, root: Hash| {
        let body = Checkpoint::new(origin.clone(), size, root).unwrap().body();
        (body.clone(), note::sign_note(&body, &[&signer]).unwrap())
    };
    let (fork_body, fork) = sign(40, [7u8; 32]);
    let posted_before = fake.posted.lock().unwrap().len();
    *fake.mode.lock().unwrap() = Mode::Fixed(fork, vec![]);
    let alerts = l.wait_alert("fork").await;
    let (_, m) = l.get_text("/metrics").await;
    assert!(alerts_metric(&m, "fork") >= 1, "{m}");
    // A few more rounds: the alert is not repeated, and nothing was cosigned.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = l.alerts().await;
    assert_eq!(again.len(), alerts.len(), "{again:?}");
    assert_eq!(
        again.iter().filter(|a| a["kind"] == "fork").count(),
        1,
        "{again:?}"
    );
    let a = &again[0];
    assert_eq!(a["origin"], origin.as_str());
    assert!(
        a["id"].is_i64() && a["detail"].is_string() && a["at"].is_string(),
        "{a}"
    );
    let posted = fake.posted.lock().unwrap().clone();
    for body in &posted[posted_before..] {
        for line in body.lines() {
            assert!(
                note::verify_cosignature(line, &fork_body, &witness_v).is_err(),
                "the fork was cosigned: {line}"
            );
        }
    }
    let (st, text) = l.get_text(&format!("/checkpoint/{origin}")).await;
    assert_eq!(st, 200);
    assert!(
        text.starts_with(&cp.body()),
        "the cosigned checkpoint moved: {text}"
    );

    // A smaller size: a shrink.
    let (shrink_body, shrink) = sign(20, [8u8; 32]);
    *fake.mode.lock().unwrap() = Mode::Fixed(shrink, vec![]);
    l.wait_alert("shrink").await;
    let (_, m) = l.get_text("/metrics").await;
    assert!(alerts_metric(&m, "shrink") >= 1, "{m}");
    let posted = fake.posted.lock().unwrap().clone();
    for body in &posted[posted_before..] {
        for line in body.lines() {
            assert!(note::verify_cosignature(line, &shrink_body, &witness_v).is_err());
        }
    }
    // A checkpoint not signed by the log's key.
    let other = Signer::new(&origin, keys::signing_key_from_seed([5; 32])).unwrap();
    let body = Checkpoint::new(origin.clone(), 41, [1; 32]).unwrap().body();
    *fake.mode.lock().unwrap() = Mode::Fixed(note::sign_note(&body, &[&other]).unwrap(), vec![]);
    l.wait_alert("bad_signature").await;
    // A larger size whose consistency proof does not verify.
    let (proof_body, bigger) = sign(41, [1u8; 32]);
    *fake.mode.lock().unwrap() = Mode::Fixed(bigger, vec![]);
    l.wait_alert("bad_proof").await;

    // A fresh witness shown a checkpoint whose entries do not hash into its root.
    let tmp2 = tempfile::tempdir().unwrap();
    let root = node_hash(&leaf_hash(b"a"), &leaf_hash(b"b"));
    let (mismatch_body, mismatch) = sign(2, root);
    *fake.mode.lock().unwrap() = Mode::Fixed(mismatch, vec![B64.encode(b"a"), B64.encode(b"X")]);
    let l2 = Ledger::start(
        tmp2.path(),
        &strs(&ledger_args(
            tmp2.path(),
            &wkey,
            &format!("{fake_url}={log_vkey}"),
        )),
    );
    l2.wait_alert("entry_mismatch").await;
    let (st, _) = l2.get_text(&format!("/checkpoint/{origin}")).await;
    assert_eq!(st, 404, "nothing was cosigned");
    let posted = fake.posted.lock().unwrap().clone();
    for body in &posted[posted_before..] {
        for line in body.lines() {
            for b in [&proof_body, &mismatch_body] {
                assert!(note::verify_cosignature(line, b, &witness_v).is_err());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_log_is_an_alert_and_gets_no_new_cosignature() {
    let tmp = tempfile::tempdir().unwrap();
    let (wkey, wvkey) = witness(tmp.path());
    let witness_v = note::parse_cosigner_key(&wvkey).unwrap();
    let mut s = Server::start(&[
        ("OPENEXEC_LOG_INTERVAL_MS", "50"),
        ("OPENEXEC_WITNESS_KEYS", &wvkey),
    ]);
    let keys = s.keys().await;
    let log_vkey = keys["log"]["verifier_key"].as_str().unwrap().to_string();
    let origin = keys["log"]["origin"].as_str().unwrap().to_string();
    let log_v = note::parse_verifier_key(&log_vkey).unwrap();
    let mut l = Ledger::start(
        tmp.path(),
        &strs(&ledger_args(
            tmp.path(),
            &wkey,
            &format!("{}={log_vkey}", s.base),
        )),
    );
    execute_many(&s, 0..8).await;
    let (cp, _) = cosigned_checkpoint(&s, &log_v, &witness_v, 8, &l).await;
    assert_eq!(cp.size, 8);
    let (_, before) = l.get_text(&format!("/checkpoint/{origin}")).await;
    assert!(s.term().success());
    assert!(l.term().success());

    // Receipt 5 edited behind the log's back.
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", s.db_path().display()))
            .await
            .unwrap();
        let done = sqlx::query(
            "UPDATE receipts SET receipt = replace(receipt, 'w-', 'x-') WHERE log_index = 5",
        )
        .execute(&mut c)
        .await
        .unwrap();
        assert_eq!(done.rows_affected(), 1);
        c.close().await.unwrap();
    }
    s.restart();
    let (st, r) = s.get("/ready").await;
    assert_eq!(st, 503, "{r}");
    // The ledger, restarted on its own state, watches the restarted log.
    let l = Ledger::start(
        tmp.path(),
        &strs(&ledger_args(
            tmp.path(),
            &wkey,
            &format!("{}={log_vkey}", s.base),
        )),
    );
    execute_many(&s, 8..12).await;
    // The log still serves its old, valid checkpoint, but entry 5 is not what the witness
    // verified under it: the witness's re-check of mirrored entries raises an alert.
    let seen = Seen::default();
    let context = OnPanic(|| format!("alerts: {seen}\n{}", l.log()));
    let alert = eventually(
        Duration::from_secs(10),
        "an entry_changed alert is listed",
        || async {
            let alerts = l.alerts().await;
            seen.set(format!("{alerts:?}"));
            alerts.into_iter().find(|a| a["kind"] == "entry_changed")
        },
    )
    .await;
    drop(context);
    assert!(
        alert["detail"].as_str().unwrap().contains("entry 5"),
        "{alert}"
    );
    let (_, after) = l.get_text(&format!("/checkpoint/{origin}")).await;
    assert_eq!(after, before, "a new checkpoint was cosigned");
    let (_, text) = s.get_text("/log/checkpoint").await;
    assert!(text.contains("\n8\n"), "{text}");
}

/// Wait until the log's own checkpoint covers `size` entries.
async fn log_reaches(s: &Server, log: &Verifier, size: u64) {
    let seen = Seen::default();
    let _context = OnPanic(|| format!("last checkpoint: {seen}"));
    let what = format!("the log reaches {size}");
    eventually(Duration::from_secs(30), &what, || async {
        let (st, text) = s.get_text("/log/checkpoint").await;
        seen.set(&text);
        if st != 200 {
            return None;
        }
        let opened = note::open_note(&text, log).unwrap();
        (Checkpoint::parse_body(&opened.body).unwrap().size >= size).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_on_postgres_catches_up_in_chunks_and_survives_a_restart() {
    let Some(db) = openexec_testkit::TestDb::create("ledger_e2e").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (wkey, wvkey) = witness(tmp.path());
    let witness_v = note::parse_cosigner_key(&wvkey).unwrap();
    let s = Server::start(&[
        ("OPENEXEC_LOG_INTERVAL_MS", "50"),
        ("OPENEXEC_WITNESS_KEYS", &wvkey),
    ]);
    let keys = s.keys().await;
    let log_vkey = keys["log"]["verifier_key"].as_str().unwrap().to_string();
    let origin = keys["log"]["origin"].as_str().unwrap().to_string();
    let log_v = note::parse_verifier_key(&log_vkey).unwrap();
    // 300 entries before the ledger first looks: a catch-up of 5 chunks of 64.
    execute_many(&s, 0..300).await;
    log_reaches(&s, &log_v, 300).await;
    let mut args = ledger_args(tmp.path(), &wkey, &format!("{}={log_vkey}", s.base));
    let at = args.iter().position(|a| a == "--db-url").unwrap();
    args[at + 1] = db.url.clone();
    args.extend(
        [
            "--catchup-chunk",
            "64",
            "--db-pool-size",
            "3",
            "--db-timeout-ms",
            "2000",
        ]
        .map(String::from),
    );
    let mut l = Ledger::start(tmp.path(), &strs(&args));
    let (cp, _) = cosigned_checkpoint(&s, &log_v, &witness_v, 300, &l).await;
    assert_eq!(cp.size, 300);
    let (st, h) = l.get("/health").await;
    assert_eq!((st, &h["database"]), (200, &json!("ok")), "{h}");
    for index in [0u64, 63, 64, 299] {
        let (st, ev) = l.get(&format!("/evidence/{origin}/{index}")).await;
        assert_eq!(st, 200, "{ev}");
        check_ledger_evidence(&ev, &log_v, &witness_v, index);
    }
    // It is PostgreSQL that holds the mirror (no SQLite file was made).
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM leaves")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(n, 300);
        c.close().await.unwrap();
    }
    assert!(!tmp.path().join("ledger.db").exists());
    assert!(l.term().success(), "{}", l.log());

    // Restarted on the same database, it goes on from 300.
    let l = Ledger::start(tmp.path(), &strs(&args));
    execute_many(&s, 300..310).await;
    let (cp, _) = cosigned_checkpoint(&s, &log_v, &witness_v, 310, &l).await;
    assert!(cp.size >= 310);
    let (st, ev) = l.get(&format!("/evidence/{origin}/305")).await;
    assert_eq!(st, 200, "{ev}");
    check_ledger_evidence(&ev, &log_v, &witness_v, 305);
    assert_eq!(l.alerts().await, Vec::<Value>::new(), "{}", l.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catch_up_killed_midway_resumes_after_its_last_stored_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let (wkey, wvkey) = witness(tmp.path());
    let witness_v = note::parse_cosigner_key(&wvkey).unwrap();
    let s = Server::start(&[
        ("OPENEXEC_LOG_INTERVAL_MS", "50"),
        ("OPENEXEC_WITNESS_KEYS", &wvkey),
    ]);
    let keys = s.keys().await;
    let log_vkey = keys["log"]["verifier_key"].as_str().unwrap().to_string();
    let origin = keys["log"]["origin"].as_str().unwrap().to_string();
    let log_v = note::parse_verifier_key(&log_vkey).unwrap();
    execute_many(&s, 0..200).await;
    log_reaches(&s, &log_v, 200).await;

    // Through a log that stops serving entries at 130: chunks of 25 up to 125 are stored.
    let (fake, fake_url) = start_fake(&s.base).await;
    *fake.entries_limit.lock().unwrap() = Some(130);
    let mut args = ledger_args(tmp.path(), &wkey, &format!("{fake_url}={log_vkey}"));
    args.extend(["--catchup-chunk", "25"].map(String::from));
    let mut l = Ledger::start(tmp.path(), &strs(&args));
    let series = format!("clawledger_catchup_size{{origin=\"{origin}\"}}");
    let seen = Seen::default();
    let context = OnPanic(|| format!("metrics: {seen}\n{}", l.log()));
    eventually(Duration::from_secs(30), "progress to 125", || async {
        let (_, m) = l.get_text("/metrics").await;
        seen.set(&m);
        (metric(&m, &series) == 125).then_some(())
    })
    .await;
    drop(context);
    // Nothing of it is cosigned or served.
    let (st, _) = l.get_text(&format!("/checkpoint/{origin}")).await;
    assert_eq!(st, 404);
    let (st, _) = l.get(&format!("/evidence/{origin}/10")).await;
    assert_eq!(st, 404);
    l.kill9();

    // Restarted, with the whole log served: it asks for nothing before 125.
    *fake.entries_limit.lock().unwrap() = None;
    fake.entry_requests.lock().unwrap().clear();
    let l = Ledger::start(tmp.path(), &strs(&args));
    let (cp, _) = cosigned_checkpoint(&s, &log_v, &witness_v, 200, &l).await;
    assert_eq!(cp.size, 200);
    let asked = fake.entry_requests.lock().unwrap().clone();
    assert_eq!(asked.first(), Some(&(125, 150)), "{asked:?}\n{}", l.log());
    assert!(asked.iter().all(|(start, _)| *start >= 125), "{asked:?}");
    for index in [0u64, 124, 125, 199] {
        let (st, ev) = l.get(&format!("/evidence/{origin}/{index}")).await;
        assert_eq!(st, 200, "{ev}");
        check_ledger_evidence(&ev, &log_v, &witness_v, index);
    }
    assert_eq!(l.alerts().await, Vec::<Value>::new(), "{}", l.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mismatch_in_a_later_chunk_is_neither_cosigned_nor_served() {
    let tmp = tempfile::tempdir().unwrap();
    let (wkey, wvkey) = witness(tmp.path());
    let witness_v = note::parse_cosigner_key(&wvkey).unwrap();
    let origin = "example.com/e2e-chunks";
    let signer = Signer::new(origin, keys::signing_key_from_seed([11; 32])).unwrap();
    let log_vkey = signer.verifier_key();
    let log_v = note::parse_verifier_key(&log_vkey).unwrap();
    // A real tree of 40 entries.
    let data: Vec<Vec<u8>> = (0..40).map(|i| format!("entry {i}").into_bytes()).collect();
    let mut frontier = Frontier::empty();
    let mut nodes = HashMap::new();
    let mut roots = vec![frontier.root()];
    for d in &data {
        nodes.extend(frontier.append(leaf_hash(d)).unwrap());
        roots.push(frontier.root());
    }
    let signed = |size: usize| {
        let body = Checkpoint::new(origin, size as u64, roots[size])
            .unwrap()
            .body();
        (body.clone(), note::sign_note(&body, &[&signer]).unwrap())
    };
    let served = |size: usize, forged: Option<usize>| -> Vec<String> {
        (0..size)
            .map(|i| match forged {
                Some(f) if f == i => B64.encode(b"forged"),
                _ => B64.encode(&data[i]),
            })
            .collect()
    };
    let (fake, fake_url) = start_fake("http://127.0.0.1:1").await;
    let (body16, cp16) = signed(16);
    *fake.mode.lock().unwrap() = Mode::Tree(cp16, served(16, None), nodes.clone());
    let mut args = ledger_args(tmp.path(), &wkey, &format!("{fake_url}={log_vkey}"));
    args.extend(["--catchup-chunk", "8"].map(String::from));
    let l = Ledger::start(tmp.path(), &strs(&args));
    let context = OnPanic(|| l.log());
    let text = eventually(Duration::from_secs(30), "16 cosigned", || async {
        let (st, text) = l.get_text(&format!("/checkpoint/{origin}")).await;
        (st == 200).then_some(text)
    })
    .await;
    drop(context);
    assert!(text.starts_with(&body16), "{text}");

    // 40, with entry 35 (in the last chunk, [32, 40)) forged.
    let (body40, cp40) = signed(40);
    *fake.mode.lock().unwrap() = Mode::Tree(cp40, served(40, Some(35)), nodes.clone());
    let alerts = l.wait_alert("entry_mismatch").await;
    let a = alerts
        .iter()
        .find(|a| a["kind"] == "entry_mismatch")
        .unwrap();
    assert!(a["detail"].as_str().unwrap().contains("[16, 40)"), "{a}");
    let (st, text) = l.get_text(&format!("/checkpoint/{origin}")).await;
    assert_eq!(st, 200);
    assert!(
        text.starts_with(&body16),
        "the cosigned checkpoint moved: {text}"
    );
    for index in [16u64, 20, 35, 39] {
        let (st, ev) = l.get(&format!("/evidence/{origin}/{index}")).await;
        assert_eq!(
            st, 404,
            "entry {index} of an unverified catch-up was served: {ev}"
        );
    }
    let (st, ev) = l.get(&format!("/evidence/{origin}/5")).await;
    assert_eq!(st, 200, "{ev}");
    assert_eq!(ev["tree_size"], 16);
    let entry = B64.decode(ev["entry"].as_str().unwrap()).unwrap();
    let hashes: Vec<Hash> = ev["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    verify_inclusion(&leaf_hash(&entry), 5, 16, &hashes, &roots[16]).unwrap();
    let opened = note::open_note(ev["checkpoint"].as_str().unwrap(), &log_v).unwrap();
    assert_eq!(
        note::count_cosignatures(&opened, std::slice::from_ref(&witness_v)),
        1
    );
    let posted = fake.posted.lock().unwrap().clone();
    assert!(posted
        .iter()
        .flat_map(|b| b.lines())
        .any(|line| note::verify_cosignature(line, &body16, &witness_v).is_ok()));
    for line in posted.iter().flat_map(|b| b.lines()) {
        assert!(
            note::verify_cosignature(line, &body40, &witness_v).is_err(),
            "the mismatching checkpoint was cosigned: {line}"
        );
    }
}

/// How a hostile log answers one request.
#[derive(Clone)]
enum Answer {
    /// What an honest log answers.
    Real,
    /// 200 with `Content-Length: n`, then bytes as fast as the peer reads them, until it hangs up
    /// (or `n` bytes, or 60 s).
    Huge(u64),
    /// 200, chunked, never ending: chunks as fast as the peer reads them until it hangs up (or
    /// 4 GiB, or 60 s).
    Endless,
    /// 200 with this body (its Content-Length declared), one byte every 50 ms.
    Trickle(String),
}

/// What the hostile log serves for each path.
#[derive(Clone)]
struct Plan {
    /// The size of the (honestly signed) checkpoint served.
    size: usize,
    checkpoint: Answer,
    proof: Answer,
    entries: Answer,
    /// The answer to POST /log/cosignatures.
    reply: Answer,
}

/// A log served over raw HTTP/1.1 on 127.0.0.1 (one request per connection), whose answers can
/// be oversized, endless or slow. Its tree is real: the honest answers verify.
#[derive(Clone)]
struct HostileLog {
    url: String,
    plan: Arc<Mutex<Plan>>,
    /// Honestly signed checkpoints by size.
    checkpoints: Arc<Vec<String>>,
    entries: Arc<Vec<String>>,
    nodes: Arc<HashMap<NodeId, Hash>>,
    /// Set when the witness's memory went over the bound: stop streaming at once.
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// The most body bytes written for one hostile answer before the peer hung up.
    most_sent: Arc<std::sync::atomic::AtomicU64>,
}

impl HostileLog {
    async fn start(
        checkpoints: Vec<String>,
        entries: Vec<String>,
        nodes: HashMap<NodeId, Hash>,
        plan: Plan,
    ) -> HostileLog {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let log = HostileLog {
            url: format!("http://{}", listener.local_addr().unwrap()),
            plan: Arc::new(Mutex::new(plan)),
            checkpoints: Arc::new(checkpoints),
            entries: Arc::new(entries),
            nodes: Arc::new(nodes),
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            most_sent: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        };
        let l = log.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(l.clone().serve(conn));
            }
        });
        log
    }

    fn set(&self, f: impl FnOnce(&mut Plan)) {
        f(&mut self.plan.lock().unwrap());
    }

    /// One request: read its head (and body), answer as the plan says, close.
    async fn serve(self, mut conn: tokio::net::TcpStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 64 * 1024 {
                return;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0)
            .min(64 * 1024);
        while buf.len() < head_end + length {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let uri: axum::http::Uri = target.parse().unwrap_or_default();
        let plan = self.plan.lock().unwrap().clone();
        let (answer, real) = match uri.path() {
            "/log/checkpoint" => (plan.checkpoint, Some(self.checkpoints[plan.size].clone())),
            "/log/proof/consistency" => (
                plan.proof,
                query_pair(&uri, "first", "second").and_then(|(a, b)| {
                    let hashes = plan_consistency(a, b)
                        .ok()?
                        .assemble_from_map(&self.nodes)
                        .ok()?;
                    let hashes: Vec<String> = hashes.iter().map(|h| B64.encode(h)).collect();
                    Some(json!({ "hashes": hashes }).to_string())
                }),
            ),
            "/log/entries" => (
                plan.entries,
                range_of(&uri).and_then(|(start, end)| {
                    let end = end.min(plan.size as u64).min(start + 1000);
                    (start < end)
                        .then(|| json!(self.entries[start as usize..end as usize]).to_string())
                }),
            ),
            "/log/cosignatures" => (plan.reply, Some("{\"stored\":1}".to_string())),
            _ => (Answer::Real, None),
        };
        let _ = match answer {
            Answer::Real => {
                let (status, body) = match real {
                    Some(b) => ("200 OK", b),
                    None => ("404 Not Found", String::new()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                conn.write_all(format!("{head}{body}").as_bytes()).await
            }
            Answer::Huge(n) => {
                let head =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n");
                self.stream(&mut conn, head, n, false).await
            }
            Answer::Endless => {
                let head =
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                self.stream(&mut conn, head.to_string(), 4 << 30, true)
                    .await
            }
            Answer::Trickle(body) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                async {
                    conn.write_all(head.as_bytes()).await?;
                    for b in body.bytes() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        conn.write_all(&[b]).await?;
                        conn.flush().await?;
                    }
                    Ok(())
                }
                .await
            }
        };
    }

    /// Write `head`, then up to `total` body bytes (as chunks if `chunked`) as fast as the peer
    /// reads, until it hangs up, 60 s pass, or the memory bound was crossed.
    async fn stream(
        &self,
        conn: &mut tokio::net::TcpStream,
        head: String,
        total: u64,
        chunked: bool,
    ) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        use tokio::io::AsyncWriteExt;
        conn.write_all(head.as_bytes()).await?;
        let block = vec![b'A'; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut sent = 0u64;
        let r = async {
            while sent < total && Instant::now() < deadline && !self.stop.load(Ordering::Relaxed) {
                let n = (total - sent).min(block.len() as u64) as usize;
                if chunked {
                    conn.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                }
                conn.write_all(&block[..n]).await?;
                if chunked {
                    conn.write_all(b"\r\n").await?;
                }
                sent += n as u64;
            }
            Ok(())
        }
        .await;
        self.most_sent.fetch_max(sent, Ordering::Relaxed);
        r
    }
}

/// The resident memory of process `pid` (VmRSS), in bytes.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Samples a process's resident memory every 5 ms (until dropped), keeping the peak; past
/// `bound` it tells the hostile log to stop streaming, so that a witness without caps fails the
/// test at the bound instead of filling the machine's memory.
struct RssPeak {
    peak: Arc<std::sync::atomic::AtomicU64>,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl RssPeak {
    fn start(pid: u32, bound: u64, over: Arc<std::sync::atomic::AtomicBool>) -> RssPeak {
        use std::sync::atomic::Ordering;
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, d) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                let Some(now) = rss(pid) else { return };
                p.fetch_max(now, Ordering::Relaxed);
                if now > bound {
                    over.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RssPeak { peak, done }
    }

    fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Most resident memory the witness may reach while a log attacks it. It idles at about
/// 20 MiB and reads at most one 16 MiB entries page; without the caps the first 1.5 GB answer
/// alone takes it far past this.
const RSS_BOUND: u64 = 128 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_log_raises_alerts_and_cannot_exhaust_the_witness_memory() {
    use std::sync::atomic::Ordering;
    const GB1_5: u64 = 1_500_000_000;
    let tmp = tempfile::tempdir().unwrap();
    let (wkey, _) = witness(tmp.path());
    let origin = "example.com/hostile-log";
    let signer = Signer::new(origin, keys::signing_key_from_seed([13; 32])).unwrap();
    let log_vkey = signer.verifier_key();
    // A real tree of 40 entries of about 1 KiB, and its signed checkpoints.
    let data: Vec<Vec<u8>> = (0..40)
        .map(|i| format!("{{\"entry\":{i},\"pad\":\"{}\"}}", "p".repeat(1000)).into_bytes())
        .collect();
    let mut frontier = Frontier::empty();
    let mut nodes = HashMap::new();
    let mut checkpoints = vec![String::new()];
    let mut bodies = vec![String::new()];
    for d in &data {
        nodes.extend(frontier.append(leaf_hash(d)).unwrap());
        let body = Checkpoint::new(origin, frontier.size(), frontier.root())
            .unwrap()
            .body();
        checkpoints.push(note::sign_note(&body, &[&signer]).unwrap());
        bodies.push(body);
    }
    let entries: Vec<String> = data.iter().map(|d| B64.encode(d)).collect();
    let log = HostileLog::start(
        checkpoints.clone(),
        entries,
        nodes,
        Plan {
            size: 16,
            checkpoint: Answer::Real,
            proof: Answer::Real,
            entries: Answer::Real,
            reply: Answer::Real,
        },
    )
    .await;
    let mut args = ledger_args(tmp.path(), &wkey, &format!("{}={log_vkey}", log.url));
    args.extend(["--fetch-timeout-ms", "1000"].map(String::from));
    let l = Ledger::start(tmp.path(), &strs(&args));
    let peak = RssPeak::start(l.pid(), RSS_BOUND, log.stop.clone());
    let within_bound = || {
        assert!(
            !log.stop.load(Ordering::Relaxed),
            "the witness went over {RSS_BOUND} bytes resident (peak seen {}); log:\n{}",
            peak.peak(),
            l.log()
        );
    };
    let cosigned = |size: usize| {
        let l = &l;
        let want = bodies[size].clone();
        async move {
            let seen = Seen::default();
            let _context = OnPanic(|| format!("last answer: {seen}\n{}", l.log()));
            let what = format!("{size} cosigned");
            eventually(Duration::from_secs(30), &what, || async {
                within_bound();
                let (st, text) = l.get_text(&format!("/checkpoint/{origin}")).await;
                seen.set(&text);
                (st == 200 && text.starts_with(&want)).then_some(())
            })
            .await;
        }
    };
    // An alert of `kind` whose detail names `what` and says `how`, listed `n` times.
    let alerted = |kind: &'static str, what: &'static str, how: &'static str, n: usize| {
        let l = &l;
        async move {
            let seen = Seen::default();
            let _context = OnPanic(|| format!("alerts: {seen}\n{}", l.log()));
            let awaited = format!("{n} {kind} alerts about {what} ({how})");
            let (got, alerts) = eventually(Duration::from_secs(20), &awaited, || async {
                within_bound();
                let alerts = l.alerts().await;
                seen.set(format!("{alerts:?}"));
                let got = alerts
                    .iter()
                    .filter(|a| {
                        let d = a["detail"].as_str().unwrap_or("");
                        a["kind"] == kind && d.contains(what) && d.contains(how)
                    })
                    .count();
                (got >= n).then_some((got, alerts))
            })
            .await;
            assert_eq!(got, n, "{alerts:?}");
        }
    };

    // An honest first checkpoint; what the witness uses at rest.
    cosigned(16).await;
    let idle = rss(l.pid()).unwrap();

    // (1) A checkpoint of 1.5 GB, declared and streamed: refused on its Content-Length.
    log.set(|p| p.checkpoint = Answer::Huge(GB1_5));
    alerted(
        "response_too_large",
        "GET /log/checkpoint",
        "Content-Length",
        1,
    )
    .await;
    // (2) A valid checkpoint, trickled: it does not finish within the 1 s fetch timeout.
    log.set(|p| p.checkpoint = Answer::Trickle(checkpoints[16].clone()));
    alerted("response_timeout", "GET /log/checkpoint", "1000 ms", 1).await;
    // (3) An endless chunked checkpoint: reading stops at the cap.
    log.set(|p| p.checkpoint = Answer::Endless);
    alerted(
        "response_too_large",
        "GET /log/checkpoint",
        "runs past the cap of 65536",
        1,
    )
    .await;
    // (4) A valid, larger checkpoint whose consistency proof is 1.5 GB.
    log.set(|p| {
        p.checkpoint = Answer::Real;
        p.size = 24;
        p.proof = Answer::Huge(GB1_5);
    });
    alerted(
        "response_too_large",
        "GET /log/proof/consistency",
        "Content-Length",
        1,
    )
    .await;
    // (5) … then a valid proof and an endless entries page.
    log.set(|p| {
        p.size = 32;
        p.proof = Answer::Real;
        p.entries = Answer::Endless;
    });
    alerted(
        "response_too_large",
        "GET /log/entries",
        "runs past the cap of 16777216",
        1,
    )
    .await;
    // (6) … then an entries page trickled.
    log.set(|p| {
        p.size = 40;
        p.entries = Answer::Trickle("[\"".to_string() + &"A".repeat(1000) + "\"]");
    });
    alerted("response_timeout", "GET /log/entries", "1000 ms", 1).await;
    // Through all of it the witness stayed at its last verified checkpoint.
    let (st, text) = l.get_text(&format!("/checkpoint/{origin}")).await;
    assert_eq!(st, 200);
    assert!(text.starts_with(&bodies[16]), "{text}");
    // (7) An honest log again, whose answer to the cosignature delivery is 1.5 GB: the witness
    // verifies and cosigns 40 on its next round, and the answer is an alert.
    log.set(|p| {
        p.entries = Answer::Real;
        p.reply = Answer::Huge(GB1_5);
    });
    cosigned(40).await;
    alerted(
        "response_too_large",
        "POST /log/cosignatures",
        "Content-Length",
        1,
    )
    .await;

    let alerts = l.alerts().await;
    let count = |kind: &str| alerts.iter().filter(|a| a["kind"] == kind).count();
    assert_eq!(count("response_too_large"), 5, "{alerts:?}");
    assert_eq!(count("response_timeout"), 2, "{alerts:?}");
    assert_eq!(alerts.len(), 7, "{alerts:?}");
    let (_, m) = l.get_text("/metrics").await;
    assert_eq!(alerts_metric(&m, "response_too_large"), 5, "{m}");
    assert_eq!(alerts_metric(&m, "response_timeout"), 2, "{m}");
    let (peak, sent) = (peak.peak(), log.most_sent.load(Ordering::Relaxed));
    eprintln!(
        "witness resident memory: {} KiB idle, {} KiB peak under attack (bound {} KiB); most bytes of one hostile answer written before it hung up: {sent}",
        idle / 1024,
        peak / 1024,
        RSS_BOUND / 1024
    );
    assert!(
        peak < RSS_BOUND,
        "the witness reached {peak} bytes resident (idle {idle}); log:\n{}",
        l.log()
    );
    assert!(
        sent < 64 * 1024 * 1024,
        "the witness kept reading a hostile answer: {sent} bytes"
    );
}

/// Both services answer the kit's operational routes the same way: `/version` names the
/// service, `/ready` gives its checks, `/metrics` the recorder's text; OpenExec's `/health`
/// and `/ready` keep their shapes.
#[tokio::test(flavor = "multi_thread")]
async fn both_services_answer_the_kits_probes() {
    let exec = Server::start(&[]);
    let ledger = LedgerServer::start(&[]);
    let c = reqwest::Client::new();
    let get = |url: String| {
        let c = c.clone();
        async move {
            let r = c.get(&url).send().await.unwrap();
            let st = r.status().as_u16();
            let text = r.text().await.unwrap();
            (
                st,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
            )
        }
    };
    let (st, v) = get(exec.url("/version")).await;
    assert_eq!((st, &v["service"]), (200, &json!("OpenExec")), "{v}");
    let (st, v) = get(ledger.url("/version")).await;
    assert_eq!((st, &v["service"]), (200, &json!("ClawLedger")), "{v}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let (st, v) = get(exec.url("/ready")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!({"ready": true, "checks": {"database": true, "receipt_key": true, "approval_keys": true, "log": true}})
    );
    let (st, v) = get(ledger.url("/ready")).await;
    assert_eq!(
        (st, v),
        (200, json!({"ready": true, "checks": {"database": true}}))
    );
    let (st, v) = get(ledger.url("/health")).await;
    assert_eq!(
        (st, &v["status"], &v["database"]),
        (200, &json!("ok"), &json!("ok")),
        "{v}"
    );
    let (st, v) = get(exec.url("/health")).await;
    assert_eq!((st, &v["status"]), (200, &json!("healthy")), "{v}");
    for base in [&exec.base, &ledger.base] {
        let (st, text) = get(format!("{base}/metrics")).await;
        assert_eq!(st, 200, "{text}");
    }
}
