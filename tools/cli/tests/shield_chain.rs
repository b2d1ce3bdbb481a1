//! The whole chain across real processes (`openexec dev`): a small payment ClawShield
//! auto-approves and a large one two finance approvers vote for with `openexec vote`, both
//! executed by OpenExec with their artifacts; ClawLedger cosigns ClawShield's decision log,
//! `openexec log audit --decisions` replays it clean, and `openexec verify --decision` accepts
//! the chain from each receipt to its decision and refuses it when any link is altered.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::dev::Dev;
use common::{cli, exit_code, stderr, stdout};
use openexec_log::note::{count_cosignatures, open_note, parse_cosigner_key, parse_verifier_key};
use openexec_testkit::eventually;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

async fn call(method: &str, url: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut rq = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    };
    if let Some(t) = token {
        rq = rq.bearer_auth(t);
    }
    if let Some(b) = body {
        rq = rq.json(b);
    }
    let r = rq
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let st = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        st,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Whether a checkpoint note verifies with `log_key` and carries a valid cosignature of
/// `witness`.
fn cosigned(note: &str, log_key: &str, witness: &str) -> bool {
    let log = parse_verifier_key(log_key).unwrap();
    let w = parse_cosigner_key(witness).unwrap();
    open_note(note, &log).is_ok_and(|o| count_cosignatures(&o, &[w]) == 1)
}

fn write(dir: &Path, name: &str, v: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chain_from_a_receipt_to_its_decision_verifies_and_every_altered_link_fails() {
    let dev = Dev::start();
    let (cs, oe) = (dev.url("clawshield"), dev.url("openexec"));
    let agent = dev.json["agent"]["token"].as_str().unwrap().to_string();
    let tenant = dev.json["tenant_id"].as_str().unwrap().to_string();
    let u = std::process::id();

    // The small payment: approved at once, executed.
    let small = json!({"amount": 500, "currency": "EUR", "to": "acct-1"});
    let (st, p) = call(
        "POST",
        &format!("{cs}/v1/proposals"),
        Some(&agent),
        Some(&json!({"action": "charge_card", "payload": small, "nonce": format!("small-{u}")})),
    )
    .await;
    assert_eq!((st, p["status"].as_str()), (200, Some("approved")), "{p}");
    let small_art = p["artifact"].clone();
    let (st, small_exec) = call(
        "POST",
        &format!("{oe}/execute"),
        None,
        Some(&json!({"action": "charge_card", "payload": small, "nonce": format!("small-{u}"), "approval_artifact": small_art})),
    )
    .await;
    assert_eq!(
        (st, small_exec["status"].as_str()),
        (200, Some("executed")),
        "{small_exec}"
    );

    // The large one: pending, two finance votes with `openexec vote`, then executed.
    let large = json!({"amount": 2500000, "currency": "EUR", "to": "acct-2"});
    let nonce = format!("large-{u}");
    let (st, p) = call(
        "POST",
        &format!("{cs}/v1/proposals"),
        Some(&agent),
        Some(&json!({"action": "charge_card", "payload": large, "nonce": nonce})),
    )
    .await;
    assert_eq!((st, p["status"].as_str()), (202, Some("pending")), "{p}");
    let pid = p["proposal_id"].as_str().unwrap().to_string();
    let pending_decision = p["decision"]["decision_id"].as_str().unwrap().to_string();
    for (who, status) in [("alice", "pending"), ("bob", "approved")] {
        let (token, key) = dev.approver(who);
        let out = tokio::task::block_in_place(|| {
            cli(&[
                "vote",
                "--url",
                &cs,
                "--token",
                &token,
                "--key",
                key.to_str().unwrap(),
                &pid,
                "approve",
                "--reason",
                "invoice checked",
            ])
        });
        assert_eq!(exit_code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["status"], status, "{v}");
    }
    let (st, p) = call(
        "GET",
        &format!("{cs}/v1/proposals/{pid}"),
        Some(&agent),
        None,
    )
    .await;
    assert_eq!((st, p["status"].as_str()), (200, Some("approved")), "{p}");
    let large_art = p["artifact"].clone();
    assert_eq!(
        large_art["approvers"].as_array().map(Vec::len),
        Some(2),
        "{p}"
    );
    let (st, large_exec) = call(
        "POST",
        &format!("{oe}/execute"),
        None,
        Some(&json!({"action": "charge_card", "payload": large, "nonce": nonce, "tenant_id": tenant, "approval_artifact": large_art})),
    )
    .await;
    assert_eq!(
        (st, large_exec["status"].as_str()),
        (200, Some("executed")),
        "{large_exec}"
    );

    // ClawLedger cosigns ClawShield's log once it holds all six entries: the first policy, the
    // small payment's decision, the large one's pending decision, two votes, the quorum's.
    let (cs_log, oe_log, ledger) = (
        dev.key("clawshield_log"),
        dev.key("openexec_log"),
        dev.key("clawledger"),
    );
    let text = eventually(
        WAIT,
        "ClawLedger cosigned ClawShield's log of 6",
        || async {
            let (st, v) = call("GET", &format!("{cs}/log/checkpoint"), None, None).await;
            let t = v.as_str()?.to_string();
            (st == 200 && t.lines().nth(1) == Some("6") && cosigned(&t, &cs_log, &ledger))
                .then_some(t)
        },
    )
    .await;
    assert!(text.starts_with("clawshield/decisions/"), "{text}");

    // The decision log audits clean, as a decision log, and not as a receipt log.
    let tmp = dev.work.path();
    let state = tmp.join("audit-state.json");
    let audit = |extra: &[&str]| {
        let mut args = vec!["log", "audit", "--url", &cs, "--log-key", &cs_log];
        args.extend_from_slice(extra);
        tokio::task::block_in_place(|| cli(&args))
    };
    let state_s = state.to_str().unwrap();
    for round in 0..2 {
        let out = audit(&["--decisions", "--state", state_s]);
        assert_eq!(
            exit_code(&out),
            0,
            "round {round}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let r: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(r["tree_size"], 6, "{r}");
        assert_eq!(r["entries_checked"], 6, "{r}");
        assert_eq!(r["bad_entries"], 0, "{r}");
        assert_eq!(
            r["kinds"],
            json!({"policy": 1, "decision": 3, "vote": 2}),
            "{r}"
        );
        assert_eq!(r["problems"], json!([]), "{r}");
        assert_eq!(r["warnings"], json!([]), "{r}");
        if round == 1 {
            assert_eq!(r["consistency"], json!({"from": 6, "to": 6}), "{r}");
        }
    }
    let out = audit(&[]);
    assert_eq!(exit_code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("audit it with --decisions"),
        "{}",
        stdout(&out)
    );
    let out = tokio::task::block_in_place(|| {
        cli(&[
            "log",
            "audit",
            "--url",
            &oe,
            "--log-key",
            &oe_log,
            "--decisions",
        ])
    });
    assert_eq!(
        exit_code(&out),
        1,
        "a receipt log is no decision log: {}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("entry 0: unknown field"),
        "{}",
        stdout(&out)
    );

    // Each receipt and its decision, once checkpoints cosigned by ClawLedger cover both.
    let evidence_of = |exec: &Value| {
        let id = exec["id"].as_str().unwrap().to_string();
        let (oe, oe_log, ledger) = (oe.clone(), oe_log.clone(), ledger.clone());
        async move {
            eventually(WAIT, "the receipt's inclusion, cosigned", || async {
                let (st, v) = call("GET", &format!("{oe}/receipts/{id}"), None, None).await;
                let note = v["evidence"]["inclusion"]["checkpoint"].as_str()?;
                (st == 200 && cosigned(note, &oe_log, &ledger)).then_some(v.clone())
            })
            .await
        }
    };
    let decision_of = |id: String| {
        let (cs, cs_log, ledger, agent) =
            (cs.clone(), cs_log.clone(), ledger.clone(), agent.clone());
        async move {
            eventually(WAIT, "the decision's inclusion, cosigned", || async {
                let (st, v) = call(
                    "GET",
                    &format!("{cs}/v1/decisions/{id}"),
                    Some(&agent),
                    None,
                )
                .await;
                let note = v["inclusion"]["checkpoint"].as_str()?;
                (st == 200 && cosigned(note, &cs_log, &ledger)).then_some(v.clone())
            })
            .await
        }
    };
    let small_ev = evidence_of(&small_exec).await;
    let large_ev = evidence_of(&large_exec).await;
    let small_dec = decision_of(small_art["decision_id"].as_str().unwrap().into()).await;
    let large_dec = decision_of(large_art["decision_id"].as_str().unwrap().into()).await;
    let pending_dec = decision_of(pending_decision).await;
    assert_eq!(large_dec["decision"]["code"], "quorum_met", "{large_dec}");
    assert_eq!(
        pending_dec["decision"]["effect"], "require_approval",
        "{pending_dec}"
    );

    let receipts_key = dev.key("openexec_receipts");
    let approval_key = dev.key("clawshield_public");
    let verify = |evidence: &Value, decision: &Value, decision_log_key: &str| {
        let e = write(tmp, "evidence.json", evidence);
        let d = write(tmp, "decision.json", decision);
        let args = [
            "verify",
            &e,
            "--key",
            &receipts_key,
            "--log-key",
            &oe_log,
            "--decision",
            &d,
            "--decision-log-key",
            decision_log_key,
            "--approval-key",
            &approval_key,
            "--witness",
            &ledger,
            "--k",
            "1",
        ];
        tokio::task::block_in_place(|| cli(&args))
    };
    for (ev, dec) in [(&small_ev, &small_dec), (&large_ev, &large_dec)] {
        let out = verify(ev, dec, &cs_log);
        assert_eq!(exit_code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        let r: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(r["valid"], true, "{r}");
        for c in [
            "signature",
            "inclusion",
            "witnesses",
            "decision_inclusion",
            "decision_checkpoint_signature",
            "decision_witnesses",
            "decision_allows",
            "decision_id",
            "request_hash",
            "approval_id",
            "approval_key",
        ] {
            assert_eq!(r["checks"][c], true, "{c}: {r}");
        }
    }

    // Every altered link fails (exit 1) and is named.
    let edit = |v: &Value, f: &dyn Fn(&mut Value)| {
        let mut v = v.clone();
        f(&mut v);
        v
    };
    let refused = |ev: &Value, dec: &Value, key: &str, says: &[&str]| {
        let out = verify(ev, dec, key);
        assert_eq!(
            exit_code(&out),
            1,
            "{says:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let r: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(r["valid"], false, "{r}");
        for s in says {
            assert!(stderr(&out).contains(s), "{s:?} not in {}", stderr(&out));
        }
    };
    let other_hash = "ab".repeat(32);
    refused(
        &large_ev,
        &edit(&large_dec, &|d| {
            d["decision"]["request_hash"] = json!(other_hash)
        }),
        &cs_log,
        &[
            "request_hash: the receipt's request_hash is",
            "decision: inclusion proof",
        ],
    );
    refused(
        &large_ev,
        &edit(&large_dec, &|d| {
            d["decision"]["decision_id"] = json!("d_forged")
        }),
        &cs_log,
        &[
            "decision_id: the receipt's approval.decision_id is",
            "decision: inclusion proof",
        ],
    );
    refused(
        &large_ev,
        &edit(&large_dec, &|d| {
            let h = d["inclusion"]["hashes"][0].as_str().unwrap();
            let mut b = base64::engine::general_purpose::STANDARD.decode(h).unwrap();
            b[0] ^= 1;
            d["inclusion"]["hashes"][0] =
                json!(base64::engine::general_purpose::STANDARD.encode(b));
        }),
        &cs_log,
        &["decision: inclusion proof"],
    );
    refused(
        &edit(&large_ev, &|e| {
            e["evidence"]["receipt"]["request_hash"] = json!(other_hash)
        }),
        &large_dec,
        &cs_log,
        &[
            "receipt: receipt_hash",
            "request_hash: the receipt's request_hash is",
        ],
    );
    refused(&large_ev, &large_dec, &oe_log, &["decision: checkpoint: "]);
    // Genuine decisions that are not this receipt's: another request's, and this proposal's
    // first (pending) one.
    refused(
        &large_ev,
        &small_dec,
        &cs_log,
        &["decision_id: ", "request_hash: ", "approval_id: "],
    );
    refused(
        &large_ev,
        &pending_dec,
        &cs_log,
        &["decision_allows: the log entry is of kind decision with effect require_approval"],
    );

    // Bad usage: --decision needs the decision log's key.
    let e = write(tmp, "evidence.json", &large_ev);
    let d = write(tmp, "decision.json", &large_dec);
    let out = tokio::task::block_in_place(|| {
        cli(&[
            "verify",
            &e,
            "--key",
            &receipts_key,
            "--log-key",
            &oe_log,
            "--decision",
            &d,
        ])
    });
    assert_eq!(exit_code(&out), 2, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("--decision-log-key"),
        "{}",
        stderr(&out)
    );

    let log = dev.log();
    let st = tokio::task::block_in_place(|| dev.stop());
    assert!(st.success(), "openexec dev exited with {st}:\n{log}");
}

/// What OpenExec does with ClawShield's artifacts when they are misused: one presented again for
/// the same request replays the stored answer (the handler does not run again); presented for
/// another nonce or with a changed payload it is refused (`approval_request_mismatch`); and, the
/// roster being pinned, an artifact the gate key alone signed for `delete_resource` (floor 2) is
/// `approval_quorum_unmet`, while the gate's own artifact after two ops votes runs.
#[tokio::test(flavor = "multi_thread")]
async fn openexec_refuses_misused_gate_artifacts_and_a_gate_key_alone_under_a_floor() {
    let dev = Dev::start();
    let (cs, oe) = (dev.url("clawshield"), dev.url("openexec"));
    let agent = dev.json["agent"]["token"].as_str().unwrap().to_string();
    let tenant = dev.json["tenant_id"].as_str().unwrap().to_string();
    let u = std::process::id();

    let pay = json!({"amount": 700, "currency": "EUR", "to": "acct-9"});
    let nonce = format!("pay-{u}");
    let (st, p) = call(
        "POST",
        &format!("{cs}/v1/proposals"),
        Some(&agent),
        Some(&json!({"action": "charge_card", "payload": pay, "nonce": nonce})),
    )
    .await;
    assert_eq!((st, p["status"].as_str()), (200, Some("approved")), "{p}");
    let art = p["artifact"].clone();
    let exec = |payload: &Value, nonce: &str, art: &Value| json!({"action": "charge_card", "payload": payload, "nonce": nonce, "approval_artifact": art});
    let (st, first) = call(
        "POST",
        &format!("{oe}/execute"),
        None,
        Some(&exec(&pay, &nonce, &art)),
    )
    .await;
    assert_eq!(
        (st, first["status"].as_str()),
        (200, Some("executed")),
        "{first}"
    );
    // Again, for the same request: the stored answer, not a second run.
    let (st, again) = call(
        "POST",
        &format!("{oe}/execute"),
        None,
        Some(&exec(&pay, &nonce, &art)),
    )
    .await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["replayed"], json!(true), "{again}");
    assert_eq!(again["exec_id"], first["exec_id"]);
    // Reused for another nonce, or with the payload changed: refused, nothing runs.
    for (payload, n) in [
        (pay.clone(), format!("other-{u}")),
        (
            json!({"amount": 70000, "currency": "EUR", "to": "acct-9"}),
            nonce.clone(),
        ),
    ] {
        let (st, r) = call(
            "POST",
            &format!("{oe}/execute"),
            None,
            Some(&exec(&payload, &n, &art)),
        )
        .await;
        assert_eq!(st, 403, "{r}");
        assert_eq!(r["error"]["code"], "approval_request_mismatch", "{r}");
    }

    // The gate's key alone (it leaked, say) for an action with a floor of 2: refused.
    let gate =
        openexec_kit::keys::read_private_key(&dev.path("keys/clawshield.pem"), "gate").unwrap();
    let del = json!({"env": "prod", "id": "db-1"});
    let now = chrono::Utc::now();
    let forged = openexec_core::artifact::sign_v1(
        &openexec_core::artifact::V1Params {
            approval_id: "forged",
            tenant_id: &tenant,
            action: "delete_resource",
            payload: &del,
            nonce: &format!("del-forged-{u}"),
            issued_at: now,
            expires_at: now + chrono::Duration::minutes(5),
            decision_id: None,
            policy_hash: None,
        },
        &gate,
    );
    let body = json!({"action": "delete_resource", "payload": del, "nonce": format!("del-forged-{u}"), "approval_artifact": forged});
    let (st, r) = call("POST", &format!("{oe}/execute"), None, Some(&body)).await;
    assert_eq!(st, 403, "{r}");
    assert_eq!(r["error"]["code"], "approval_quorum_unmet", "{r}");

    // Through the gate: two ops approvals (with reasons, signed by carol and dave) → it runs.
    let dn = format!("del-{u}");
    let (st, p) = call(
        "POST",
        &format!("{cs}/v1/proposals"),
        Some(&agent),
        Some(&json!({"action": "delete_resource", "payload": del, "nonce": dn})),
    )
    .await;
    assert_eq!((st, p["status"].as_str()), (202, Some("pending")), "{p}");
    let pid = p["proposal_id"].as_str().unwrap().to_string();
    for who in ["carol", "dave"] {
        let (token, key) = dev.approver(who);
        let o = cli(&[
            "vote",
            "--url",
            &cs,
            "--token",
            &token,
            "--key",
            key.to_str().unwrap(),
            &pid,
            "approve",
            "--reason",
            "decommissioned",
        ]);
        assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
        let _ = stdout(&o);
    }
    let (st, p) = call(
        "GET",
        &format!("{cs}/v1/proposals/{pid}"),
        Some(&agent),
        None,
    )
    .await;
    assert_eq!((st, p["status"].as_str()), (200, Some("approved")), "{p}");
    let body = json!({"action": "delete_resource", "payload": del, "nonce": dn, "approval_artifact": p["artifact"]});
    let (st, r) = call("POST", &format!("{oe}/execute"), None, Some(&body)).await;
    assert_eq!((st, r["status"].as_str()), (200, Some("executed")), "{r}");
    assert!(dev.stop().success());
}
