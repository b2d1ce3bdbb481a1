//! The receipt log (SPEC §7) from the outside: signed checkpoints, entries that hash to the
//! checkpoint's root, inclusion and consistency proofs that verify with the log crate, evidence
//! that verifies offline with public keys only, and a log that refuses to sign once its database
//! was edited behind its back.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use openexec_log::note::{self, Checkpoint};
use openexec_log::{leaf_hash, verify_consistency, verify_inclusion, Frontier, Hash};
use openexec_testkit::eventually;
use serde_json::{json, Value};
use sqlx::{Connection, SqliteConnection};

const ENV: &[(&str, &str)] = &[("OPENEXEC_LOG_INTERVAL_MS", "50")];

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("not base64 {s}: {e}"))
}

fn hashes(v: &Value) -> Vec<Hash> {
    v["hashes"]
        .as_array()
        .unwrap_or_else(|| panic!("no hashes: {v}"))
        .iter()
        .map(|h| b64(h.as_str().unwrap()).try_into().unwrap())
        .collect()
}

/// Wait until the served checkpoint covers at least `size` entries; its opened body.
async fn checkpoint_at_least(s: &Server, size: u64) -> (Checkpoint, String) {
    let keys = s.keys().await;
    let verifier = note::parse_verifier_key(keys["log"]["verifier_key"].as_str().unwrap()).unwrap();
    let seen = Seen::default();
    let _context = OnPanic(|| format!("last answer: {seen}"));
    let what = format!("a checkpoint of size {size}");
    eventually(Duration::from_secs(10), &what, || async {
        let (st, text) = s.get_text("/log/checkpoint").await;
        seen.set(format!("{st} {text}"));
        if st != 200 {
            return None;
        }
        let opened = note::open_note(&text, &verifier).unwrap_or_else(|e| panic!("{e}: {text}"));
        let cp = Checkpoint::parse_body(&opened.body).unwrap();
        assert_eq!(cp.origin, keys["log"]["origin"].as_str().unwrap());
        (cp.size >= size).then_some((cp, text))
    })
    .await
}

async fn run(s: &Server, from: usize, to: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for i in from..to {
        let (st, b) = s
            .execute(&json!({"action": "echo", "payload": {"i": i}, "nonce": format!("log-{i}")}))
            .await;
        assert_eq!(st, 200, "{b}");
        out.push(b);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_entries_and_proofs_agree() {
    let mut s = Server::start(ENV);
    let answers = run(&s, 0, 13).await;
    // A rejection is a log entry too.
    let (st, _) = s
        .execute(&json!({"action": "nope", "payload": {}, "nonce": "log-r"}))
        .await;
    assert_eq!(st, 400);
    let (cp, _) = checkpoint_at_least(&s, 14).await;
    assert_eq!(cp.size, 14);

    // The entries rebuild the checkpoint's root, and each is its receipt's leaf.
    let (st, entries) = s
        .get(&format!("/log/entries?start=0&end={}", cp.size))
        .await;
    assert_eq!(st, 200, "{entries}");
    let entries: Vec<Vec<u8>> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| b64(e.as_str().unwrap()))
        .collect();
    assert_eq!(entries.len(), 14);
    let mut tree = Frontier::empty();
    for e in &entries {
        tree.append(leaf_hash(e)).unwrap();
    }
    assert_eq!(
        tree.root(),
        cp.root,
        "entries do not hash to the checkpoint root"
    );
    for (i, a) in answers.iter().enumerate() {
        let idx = a["evidence"]["log_index"].as_u64().unwrap() as usize;
        let leaf: Value = serde_json::from_slice(&entries[idx]).unwrap();
        assert_eq!(leaf["receipt"], a["evidence"]["receipt"], "entry {i}");
        assert_eq!(leaf["signature"], a["evidence"]["signature"]);
    }

    // Inclusion proofs for every index at every size.
    for size in 1..=cp.size {
        let mut t = Frontier::empty();
        for e in &entries[..size as usize] {
            t.append(leaf_hash(e)).unwrap();
        }
        for index in 0..size {
            let (st, p) = s
                .get(&format!(
                    "/log/proof/inclusion?index={index}&tree_size={size}"
                ))
                .await;
            assert_eq!(st, 200, "{p}");
            verify_inclusion(
                &leaf_hash(&entries[index as usize]),
                index,
                size,
                &hashes(&p),
                &t.root(),
            )
            .unwrap_or_else(|e| panic!("index {index} size {size}: {e}"));
        }
    }

    // A replay of an integrated request carries the inclusion proof in its evidence too.
    let (st, replay) = s
        .execute(&json!({"action": "echo", "payload": {"i": 2}, "nonce": "log-2"}))
        .await;
    assert_eq!((st, &replay["replayed"]), (200, &json!(true)), "{replay}");
    assert_eq!(replay["evidence"]["inclusion"]["tree_size"], 14, "{replay}");

    // Evidence carries the proof once covered, and verifies offline with public keys only.
    let id = answers[3]["id"].as_str().unwrap();
    let (st, r) = s.get(&format!("/receipts/{id}")).await;
    assert_eq!(st, 200);
    let ev = &r["evidence"];
    assert_eq!(ev["inclusion"]["tree_size"], 14, "{ev}");
    let keys = s.keys().await;
    let path = s.dir().join("evidence.json");
    std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
    let receipt_key = keys["receipt_keys"][0]["public_key"].as_str().unwrap();
    let log_key = keys["log"]["verifier_key"].as_str().unwrap();
    let out = cli(&[
        "verify",
        path.to_str().unwrap(),
        "--key",
        receipt_key,
        "--log-key",
        log_key,
        "--require-inclusion",
    ]);
    assert_eq!(exit_code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let (st, v) = s.post("/receipts/verify", ev).await;
    assert_eq!((st, &v["valid"]), (200, &json!(true)), "{v}");
    assert_eq!(v["checks"]["inclusion"], true);
    // One proof hash flipped: the inclusion check fails and says so.
    let mut bad = r.clone();
    let h0 = bad["evidence"]["inclusion"]["hashes"][0]
        .as_str()
        .unwrap()
        .to_string();
    let mut raw = b64(&h0);
    raw[0] ^= 1;
    bad["evidence"]["inclusion"]["hashes"][0] =
        json!(base64::engine::general_purpose::STANDARD.encode(raw));
    std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let out = cli(&[
        "verify",
        path.to_str().unwrap(),
        "--key",
        receipt_key,
        "--log-key",
        log_key,
    ]);
    assert_eq!(exit_code(&out), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("inclusion"), "{}", stdout(&out));
    // Without the log key the inclusion cannot be trusted.
    std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
    let out = cli(&["verify", path.to_str().unwrap(), "--key", receipt_key]);
    assert_eq!(exit_code(&out), 1, "{}", stdout(&out));

    // Flip one bit anywhere that matters — the receipt, its signature, the checkpoint's body or
    // its signature line, the logged_at time — and the server's verifier says which check failed.
    let flip = |text: &str, at: usize| -> String {
        let mut b = text.as_bytes().to_vec();
        b[at] ^= 0x01;
        String::from_utf8(b).unwrap_or_else(|_| text.replacen(&text[at..at + 1], "#", 1))
    };
    let cp_text = ev["inclusion"]["checkpoint"].as_str().unwrap().to_string();
    let body_len = cp_text.find("\n\n").unwrap();
    let sig_at = cp_text.rfind(' ').unwrap() + 5;
    let sig = ev["signature"].as_str().unwrap().to_string();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "receipt field",
            {
                let mut e = ev.clone();
                e["receipt"]["nonce"] = json!(flip(e["receipt"]["nonce"].as_str().unwrap(), 0));
                e
            },
            "receipt_hash",
        ),
        (
            "receipt signature",
            {
                let mut e = ev.clone();
                e["signature"] = json!(flip(&sig, 3));
                e
            },
            "signature",
        ),
        (
            "checkpoint body",
            {
                let mut e = ev.clone();
                e["inclusion"]["checkpoint"] = json!(flip(&cp_text, body_len - 3));
                e
            },
            "checkpoint_signature",
        ),
        (
            "checkpoint signature",
            {
                let mut e = ev.clone();
                e["inclusion"]["checkpoint"] = json!(flip(&cp_text, sig_at));
                e
            },
            "checkpoint_signature",
        ),
        (
            "logged_at",
            {
                let mut e = ev.clone();
                e["inclusion"]["logged_at"] =
                    json!(flip(e["inclusion"]["logged_at"].as_str().unwrap(), 3));
                e
            },
            "inclusion",
        ),
    ];
    for (what, bad, check) in cases {
        let (st, v) = s.post("/receipts/verify", &bad).await;
        assert_eq!(st, 200, "{what}: {v}");
        assert_eq!(v["valid"], false, "{what} flipped but valid: {v}");
        assert_eq!(
            v["checks"][check], false,
            "{what}: expected check {check} to fail: {v}"
        );
        assert!(
            !v["errors"].as_array().unwrap().is_empty(),
            "{what}: no error named: {v}"
        );
    }

    // The log grows; the new checkpoint is consistent with the old one, across a restart.
    run(&s, 13, 30).await;
    let (cp2, _) = checkpoint_at_least(&s, 31).await;
    let (st, p) = s
        .get(&format!(
            "/log/proof/consistency?first={}&second={}",
            cp.size, cp2.size
        ))
        .await;
    assert_eq!(st, 200, "{p}");
    verify_consistency(cp.size, cp2.size, &cp.root, &cp2.root, &hashes(&p)).unwrap();
    s.restart();
    run(&s, 30, 35).await;
    let (cp3, _) = checkpoint_at_least(&s, 36).await;
    let (st, p) = s
        .get(&format!(
            "/log/proof/consistency?first={}&second={}",
            cp.size, cp3.size
        ))
        .await;
    assert_eq!(st, 200, "{p}");
    verify_consistency(cp.size, cp3.size, &cp.root, &cp3.root, &hashes(&p)).unwrap();
    assert_eq!(
        s.keys().await["log"],
        keys["log"],
        "the log key survives a restart"
    );

    // An auditor replays the whole log with public keys alone, and next time checks that the
    // log only grew since the checkpoint it trusted.
    let state = s.dir().join("audit-state.json");
    let audit = |s: &Server| {
        cli(&[
            "log",
            "audit",
            "--url",
            &s.base,
            "--log-key",
            log_key,
            "--key",
            receipt_key,
            "--state",
            state.to_str().unwrap(),
        ])
    };
    let out = audit(&s);
    assert_eq!(exit_code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["entries_checked"], report["tree_size"]);
    assert!(report["tree_size"].as_u64().unwrap() >= 36);
    run(&s, 35, 40).await;
    checkpoint_at_least(&s, 41).await;
    let out = audit(&s);
    assert_eq!(exit_code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        report["consistency"]["from"].as_u64().unwrap() >= 36,
        "{report}"
    );
    // A state that claims another root at a size the log has passed: not consistent.
    let mut st: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    st["size"] = json!(10);
    std::fs::write(&state, serde_json::to_vec(&st).unwrap()).unwrap();
    let out = audit(&s);
    assert_eq!(exit_code(&out), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("not consistent"), "{}", stdout(&out));

    // Bad parameters are named.
    for q in [
        "/log/proof/inclusion?index=5&tree_size=5",
        "/log/proof/inclusion?index=0&tree_size=100000",
        "/log/proof/inclusion?index=x&tree_size=3",
        "/log/proof/consistency?first=9&second=3",
        "/log/entries?start=3&end=3",
        "/log/entries?start=0",
    ] {
        let (st, b) = s.get(q).await;
        assert_eq!((st, code(&b)), (400, "invalid_request"), "{q}: {b}");
    }
}

async fn db(s: &Server) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}", s.db_path().display()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_entry_stops_the_log_signing() {
    let mut s = Server::start(ENV);
    run(&s, 0, 8).await;
    let (cp, _) = checkpoint_at_least(&s, 8).await;
    s.term();
    let mut c = db(&s).await;
    sqlx::query(
        "UPDATE receipts SET receipt = replace(receipt, 'log-5', 'log-X') WHERE log_index = 5",
    )
    .execute(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    s.restart();
    let (st, r) = s.get("/ready").await;
    assert_eq!(st, 503, "{r}");
    assert_eq!(r["checks"]["log"], false);
    assert!(r["detail"].as_str().unwrap().contains("entry 5"), "{r}");
    // It keeps refusing to sign: the checkpoint stays where it was.
    run(&s, 8, 11).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, text) = s.get_text("/log/checkpoint").await;
    assert!(
        text.contains(&format!("\n{}\n", cp.size)),
        "a checkpoint was signed: {text}"
    );
    // An auditor finds the edited entry: its receipt no longer matches its signature.
    let out = cli(&["log", "audit", "--url", &s.base]);
    assert_eq!(exit_code(&out), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("entry 5"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_entries_stop_the_log_signing() {
    let mut s = Server::start(ENV);
    run(&s, 0, 6).await;
    checkpoint_at_least(&s, 6).await;
    s.term();
    let mut c = db(&s).await;
    sqlx::query("DELETE FROM receipts WHERE log_index >= 4")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    s.restart();
    let (st, r) = s.get("/ready").await;
    assert_eq!(st, 503, "{r}");
    assert!(r["detail"].as_str().unwrap().contains("4..6"), "{r}");
}

/// POST these bytes to /log/cosignatures as text/plain.
async fn post_cosignatures(s: &Server, body: String) -> (u16, Value) {
    let r = s
        .client
        .post(s.url("/log/cosignatures"))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// The witness cosignature lines the served checkpoint carries.
async fn served_cosignatures(s: &Server) -> Vec<String> {
    let (st, text) = s.get_text("/log/checkpoint").await;
    assert_eq!(st, 200, "{text}");
    let (_, sigs) = text.split_once("\n\n").unwrap();
    // The first signature line is the log's own.
    sigs.lines().skip(1).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cosignatures_are_capped_stored_once_and_never_replaced_by_older_ones() {
    let w1 = note::Cosigner::new(
        "witness.example/one",
        openexec_core::keys::signing_key_from_seed([21; 32]),
    )
    .unwrap();
    let w2 = note::Cosigner::new(
        "witness.example/two",
        openexec_core::keys::signing_key_from_seed([22; 32]),
    )
    .unwrap();
    let witnesses = format!("{},{}", w1.verifier_key(), w2.verifier_key());
    let mut s = Server::start(&[
        ("OPENEXEC_LOG_INTERVAL_MS", "50"),
        ("OPENEXEC_WITNESS_KEYS", &witnesses),
    ]);
    run(&s, 0, 3).await;
    let (_, text) = checkpoint_at_least(&s, 3).await;
    let body = text.split_once("\n\n").unwrap().0.to_string() + "\n";
    let at = |w: &note::Cosigner, t: u64| w.cosign(&body, t).unwrap();
    let (w1_old, w1_new, w1_newer) = (at(&w1, 1_000), at(&w1, 2_000), at(&w1, 3_000));

    // One request repeating a valid line 448 times (the finding): refused whole, nothing stored.
    let (st, b) = post_cosignatures(&s, format!("{w1_new}\n").repeat(448)).await;
    assert_eq!((st, code(&b)), (413, "too_many_cosignatures"), "{b}");
    assert!(
        detail(&b).contains("448 cosignature lines") && detail(&b).contains("at most 2"),
        "{b}"
    );
    assert_eq!(served_cosignatures(&s).await, Vec::<String>::new());

    // The same line twice within the cap is stored once.
    let (st, b) = post_cosignatures(&s, format!("{w1_new}\n{w1_new}\n")).await;
    assert_eq!((st, &b["stored"]), (200, &json!(1)), "{b}");
    assert_eq!(served_cosignatures(&s).await, [w1_new.as_str()]);
    // Again, and an older line of the same witness replayed: nothing changes.
    for line in [&w1_new, &w1_old] {
        let (st, b) = post_cosignatures(&s, format!("{line}\n")).await;
        assert_eq!((st, &b["stored"]), (200, &json!(0)), "{b}");
        assert_eq!(served_cosignatures(&s).await, [w1_new.as_str()]);
    }
    // A request with one bad line stores none of its lines.
    let w2_line = at(&w2, 2_500);
    let forged = at(
        &note::Cosigner::new(
            "witness.example/two",
            openexec_core::keys::signing_key_from_seed([23; 32]),
        )
        .unwrap(),
        2_500,
    );
    let (st, b) = post_cosignatures(&s, format!("{w2_line}\n{forged}\n")).await;
    assert_eq!((st, code(&b)), (403, "cosignature_rejected"), "{b}");
    assert_eq!(served_cosignatures(&s).await, [w1_new.as_str()]);
    // A newer line replaces the older one; each witness's line is served once.
    let (st, b) = post_cosignatures(&s, format!("{w1_newer}\n{w2_line}\n")).await;
    assert_eq!((st, &b["stored"]), (200, &json!(2)), "{b}");
    assert_eq!(
        served_cosignatures(&s).await,
        [w1_newer.clone(), w2_line.clone()]
    );

    // The database, not only this process, keeps the newest: after a restart the older lines
    // replayed still change nothing.
    s.restart();
    assert_eq!(
        served_cosignatures(&s).await,
        [w1_newer.clone(), w2_line.clone()]
    );
    let (st, b) = post_cosignatures(&s, format!("{w1_old}\n")).await;
    assert_eq!((st, &b["stored"]), (200, &json!(0)), "{b}");
    let (st, b) = post_cosignatures(&s, format!("{w1_new}\n")).await;
    assert_eq!((st, &b["stored"]), (200, &json!(0)), "{b}");
    assert_eq!(served_cosignatures(&s).await, [w1_newer, w2_line]);
}
