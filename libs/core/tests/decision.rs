//! ClawShield's decision log entries and the chain from a receipt to its decision, over real
//! trees: a receipt log and a decision log, each signed by its own key.

use std::collections::HashMap;

use base64::Engine as _;
use openexec_core::artifact::ApprovalRef;
use openexec_core::decision::{
    check_entry, leaf_data, parse_leaf, verify_chain, verify_decision, ChainTrust,
};
use openexec_core::evidence::LogTrust;
use openexec_core::json::{canonicalize, jcs_sha256};
use openexec_core::keys::{key_id, signing_key_from_seed, SigningKey, VerifyingKey};
use openexec_core::receipt::{self, log_leaf, HandlerRef, Receipt, Status, VerifyReport};
use openexec_log::note::{sign_note, Checkpoint, Cosigner, CosignerVerifier, Signer, Verifier};
use openexec_log::{leaf_hash, plan_inclusion, Frontier, Hash, NodeId};
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const AT: &str = "2026-12-02T09:09:50.500461Z";
const RH: &str = "e023a563609c65fad4346a8cd7958641bbe3764d06e391718555eb6338a82646";
const IH: &str = "7c4ec0ee78bb410837b1d14350bda202607b4e229540c0e7baff8dea377153cf";
const PH: &str = "6eb72acf32cb0ab2bf662e3c80b4d0b0d14e8d14b5953f226ea52915427ee59c";

fn entry(kind: &str, id: &str, effect: Option<&str>, approval: Option<&str>) -> Value {
    json!({
        "v": 1, "decision_id": id, "kind": kind, "proposal_id": "p_1", "tenant_id": "default",
        "agent_id": "agent", "action": "charge_card", "intent_hash": IH, "request_hash": RH,
        "nonce": "s1", "effect": effect, "code": "policy_allowed", "rules": ["charge_card.small"],
        "policy_hash": PH, "approval_id": approval, "voter": null, "vote": null, "logged_at": AT,
    })
}

fn policy_entry() -> Value {
    json!({
        "v": 1, "decision_id": "d_policy", "kind": "policy", "proposal_id": null,
        "tenant_id": null, "agent_id": null, "action": null, "intent_hash": null,
        "request_hash": null, "nonce": null, "effect": "allow", "code": "initial_policy",
        "rules": null, "policy_hash": PH, "approval_id": null, "voter": null, "vote": null,
        "logged_at": "2026-12-02T09:09:48.083289Z",
    })
}

fn vote_entry() -> Value {
    let mut v = entry("vote", "v_1", None, None);
    v["voter"] = json!("alice");
    v["vote"] = json!("approve");
    v["code"] = Value::Null;
    v["rules"] = Value::Null;
    v
}

#[test]
fn entries_of_every_kind_are_well_formed() {
    for e in [
        entry("decision", "d_1", Some("allow"), Some("a_1")),
        entry("decision", "d_0", Some("require_approval"), None),
        entry("expiry", "d_2", Some("deny"), None),
        policy_entry(),
        vote_entry(),
    ] {
        check_entry(&e).unwrap_or_else(|err| panic!("{e}: {err}"));
        assert_eq!(parse_leaf(&leaf_data(&e)).unwrap(), e);
    }
}

#[test]
fn malformed_entries_are_refused_naming_the_field() {
    let good = entry("decision", "d_1", Some("allow"), Some("a_1"));
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (Box::new(|e| e["extra"] = json!(1)), "unknown field 'extra'"),
        (
            Box::new(|e| {
                e.as_object_mut().unwrap().remove("voter");
            }),
            "missing field 'voter'",
        ),
        (Box::new(|e| e["v"] = json!(2)), "field 'v' must be 1"),
        (Box::new(|e| e["kind"] = json!("verdict")), "field 'kind'"),
        (Box::new(|e| e["decision_id"] = json!("")), "decision_id"),
        (
            Box::new(|e| e["request_hash"] = json!("ABC")),
            "field 'request_hash' must be 64 lowercase hex",
        ),
        (
            Box::new(|e| e["logged_at"] = json!("yesterday")),
            "field 'logged_at'",
        ),
        (Box::new(|e| e["effect"] = json!("maybe")), "field 'effect'"),
        (Box::new(|e| e["rules"] = json!("r")), "field 'rules'"),
        (Box::new(|e| e["nonce"] = json!(5)), "field 'nonce'"),
        (
            Box::new(|e| e["request_hash"] = Value::Null),
            "a 'decision' entry must have 'request_hash'",
        ),
        (
            Box::new(|e| e["effect"] = Value::Null),
            "a 'decision' entry must have 'effect'",
        ),
    ];
    for (edit, want) in cases {
        let mut e = good.clone();
        edit(&mut e);
        let err = check_entry(&e).expect_err(want).to_string();
        assert!(err.contains(want), "{err} does not say {want}");
    }
    let mut v = vote_entry();
    v["vote"] = json!("perhaps");
    assert!(check_entry(&v).unwrap_err().0.contains("field 'vote'"));
    let mut p = policy_entry();
    p["policy_hash"] = Value::Null;
    assert!(check_entry(&p).unwrap_err().0.contains("'policy_hash'"));
    assert!(check_entry(&json!([1])).is_err());
}

#[test]
fn a_leaf_must_be_the_canonical_form_of_its_entry() {
    let e = entry("decision", "d_1", Some("allow"), Some("a_1"));
    let pretty = serde_json::to_vec_pretty(&e).unwrap();
    assert_eq!(
        parse_leaf(&pretty).unwrap_err().0,
        "not in canonical form (JCS)"
    );
    assert!(parse_leaf(b"{\"v\":1,\"v\":1}")
        .unwrap_err()
        .0
        .starts_with("not I-JSON"));
    assert!(parse_leaf(&canonicalize(&e)).is_ok());
}

/// A log signed by `signer` over leaves `data`, with each leaf's inclusion as evidence carries
/// it (the checkpoint cosigned by `witness`).
struct Log {
    inclusions: Vec<Value>,
}

fn log(signer: &Signer, witness: &Cosigner, data: &[Vec<u8>], logged_at: &[&str]) -> Log {
    let mut tree = Frontier::empty();
    let mut stored: HashMap<NodeId, Hash> = HashMap::new();
    for d in data {
        stored.extend(tree.append(leaf_hash(d)).unwrap());
    }
    let size = data.len() as u64;
    let cp = Checkpoint::new(signer.name(), size, tree.root()).unwrap();
    let body = cp.body();
    let signed = sign_note(&body, &[signer]).unwrap();
    let note = format!(
        "{signed}{}\n",
        witness.cosign(&body, 1_800_000_000).unwrap()
    );
    let inclusions = (0..size)
        .map(|i| {
            let hashes = plan_inclusion(i, size)
                .and_then(|p| p.assemble_from_map(&stored))
                .unwrap();
            json!({
                "leaf_index": i, "tree_size": size, "logged_at": logged_at[i as usize],
                "hashes": hashes.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
                "checkpoint": note,
            })
        })
        .collect();
    Log { inclusions }
}

struct World {
    receipt_key: VerifyingKey,
    approval_key: VerifyingKey,
    receipt_log: Verifier,
    decision_log: Verifier,
    witness: CosignerVerifier,
    /// Receipt evidence, with inclusion.
    evidence: Value,
    /// The GET /v1/decisions answer of the allowing decision.
    allow: Value,
    /// That of the proposal's first decision (require_approval), genuinely in the log.
    pending: Value,
}

fn world() -> World {
    let receipt_sk = signing_key_from_seed([1; 32]);
    let approval_sk: SigningKey = signing_key_from_seed([2; 32]);
    let receipt_signer =
        Signer::new("openexec/receipts/t", signing_key_from_seed([3; 32])).unwrap();
    let decision_signer =
        Signer::new("clawshield/decisions/t", signing_key_from_seed([4; 32])).unwrap();
    let witness = Cosigner::new("clawledger/t", signing_key_from_seed([5; 32])).unwrap();

    let allow = entry("decision", "d_2", Some("allow"), Some("a_1"));
    let pending = entry("decision", "d_0", Some("require_approval"), None);
    let entries = [policy_entry(), pending.clone(), vote_entry(), allow.clone()];
    let at: Vec<&str> = entries
        .iter()
        .map(|e| e["logged_at"].as_str().unwrap())
        .collect();
    let dlog = log(
        &decision_signer,
        &witness,
        &entries.iter().map(leaf_data).collect::<Vec<_>>(),
        &at,
    );
    let answer = |i: usize, e: &Value| json!({"decision": e, "log_index": i, "inclusion": dlog.inclusions[i]});

    let r = Receipt {
        v: 1,
        exec_id: RH.into(),
        tenant_id: "default".into(),
        action: "charge_card".into(),
        nonce: "s1".into(),
        intent_hash: IH.into(),
        request_hash: RH.into(),
        mode: "clawshield".into(),
        approval: Some(ApprovalRef {
            approval_id: "a_1".into(),
            format: "v1".into(),
            key_id: key_id(&approval_sk.verifying_key()),
            decision_id: Some("d_2".into()),
        }),
        status: Status::Executed,
        code: None,
        result_hash: Some(jcs_sha256(&json!({"echo": {}}))),
        handler: Some(HandlerRef {
            name: "builtin:echo".into(),
            digest: RH.into(),
        }),
    };
    let (rv, h) = (r.to_value(), r.hash());
    let sig = receipt::sign(&h, &receipt_sk);
    let kid = key_id(&receipt_sk.verifying_key());
    let other = Receipt {
        nonce: "other".into(),
        ..r.clone()
    };
    let leaves = vec![
        log_leaf(
            &other.to_value(),
            &receipt::sign(&other.hash(), &receipt_sk),
            &kid,
            AT,
        ),
        log_leaf(&rv, &sig, &kid, AT),
    ];
    let rlog = log(&receipt_signer, &witness, &leaves, &[AT, AT]);
    let evidence = json!({
        "receipt": rv, "receipt_hash": h, "signature": sig, "key_id": kid, "log_index": 1,
        "inclusion": rlog.inclusions[1],
    });
    World {
        receipt_key: receipt_sk.verifying_key(),
        approval_key: approval_sk.verifying_key(),
        receipt_log: receipt_signer.verifier(),
        decision_log: decision_signer.verifier(),
        witness: witness.verifier(),
        evidence,
        allow: answer(3, &allow),
        pending: answer(1, &pending),
    }
}

fn chain(w: &World, evidence: &Value, answer: &Value, decision_log: &Verifier) -> VerifyReport {
    let ws = [w.witness.clone()];
    let trust = |log| LogTrust {
        log: Some(log),
        witnesses: &ws,
        k: 1,
        require_inclusion: false,
    };
    verify_chain(
        evidence,
        answer,
        &ChainTrust {
            receipt_keys: &[w.receipt_key],
            receipts: trust(&w.receipt_log),
            decisions: trust(decision_log),
            approval_keys: &[w.approval_key],
        },
    )
}

fn failed(r: &VerifyReport) -> Vec<&str> {
    r.checks
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(k, _)| k.as_str())
        .collect()
}

#[test]
fn the_chain_holds_and_each_link_is_checked() {
    let w = world();
    let ok = chain(&w, &w.evidence, &w.allow, &w.decision_log);
    assert!(ok.valid, "{ok:?}");
    for c in [
        "signature",
        "inclusion",
        "witnesses",
        "decision_well_formed",
        "decision_inclusion",
        "decision_checkpoint_signature",
        "decision_witnesses",
        "decision_allows",
        "decision_id",
        "request_hash",
        "approval_id",
        "approval_key",
    ] {
        assert_eq!(ok.checks.get(c), Some(&true), "{c}: {ok:?}");
    }
    // The decision alone.
    let ws = [w.witness.clone()];
    let alone = verify_decision(
        &w.allow,
        &LogTrust {
            log: Some(&w.decision_log),
            witnesses: &ws,
            k: 1,
            require_inclusion: true,
        },
    );
    assert!(alone.valid, "{alone:?}");

    let case = |ev: &Value, ans: &Value, log: &Verifier, want: &[&str], says: &str| {
        let r = chain(&w, ev, ans, log);
        assert!(!r.valid, "{want:?} should fail");
        assert_eq!(failed(&r), want, "{r:?}");
        assert!(
            r.errors.iter().any(|e| e.contains(says)),
            "no error says {says}: {:?}",
            r.errors
        );
    };
    let edit = |v: &Value, f: &dyn Fn(&mut Value)| {
        let mut v = v.clone();
        f(&mut v);
        v
    };
    // The entry's request_hash changed: no longer the logged leaf, nor the receipt's request.
    let other_hash = "00".repeat(32);
    case(
        &w.evidence,
        &edit(&w.allow, &|a| {
            a["decision"]["request_hash"] = json!(other_hash)
        }),
        &w.decision_log,
        &[
            "decision_checkpoint_signature",
            "decision_inclusion",
            "decision_witnesses",
            "request_hash",
        ],
        "request_hash: the receipt's request_hash is",
    );
    // The entry's decision_id changed.
    case(
        &w.evidence,
        &edit(&w.allow, &|a| a["decision"]["decision_id"] = json!("d_9")),
        &w.decision_log,
        &[
            "decision_checkpoint_signature",
            "decision_id",
            "decision_inclusion",
            "decision_witnesses",
        ],
        "decision_id: the receipt's approval.decision_id is d_2, the decision log entry's is d_9",
    );
    // A genuine entry of the log, but the proposal's first decision (pending), not the one that
    // allowed the request.
    case(
        &w.evidence,
        &w.pending,
        &w.decision_log,
        &["approval_id", "decision_allows", "decision_id"],
        "kind decision with effect require_approval",
    );
    // The decision's inclusion proof altered.
    case(
        &w.evidence,
        &edit(&w.allow, &|a| {
            a["inclusion"]["hashes"][0] = json!(B64.encode([7u8; 32]));
        }),
        &w.decision_log,
        &[
            "decision_checkpoint_signature",
            "decision_inclusion",
            "decision_witnesses",
        ],
        "decision: inclusion proof",
    );
    case(
        &w.evidence,
        &edit(&w.allow, &|a| a["log_index"] = json!(2)),
        &w.decision_log,
        &[
            "decision_checkpoint_signature",
            "decision_inclusion",
            "decision_witnesses",
        ],
        "decision: inclusion leaf_index differs",
    );
    case(
        &w.evidence,
        &edit(&w.allow, &|a| {
            a["inclusion"]["logged_at"] = json!(AT.replace("09:09", "09:10"))
        }),
        &w.decision_log,
        &[
            "decision_checkpoint_signature",
            "decision_inclusion",
            "decision_witnesses",
        ],
        "decision: the inclusion's logged_at is not the entry's",
    );
    // The decision without inclusion: the chain needs it.
    case(
        &w.evidence,
        &edit(&w.allow, &|a| {
            a.as_object_mut().unwrap().remove("inclusion");
        }),
        &w.decision_log,
        &["decision_inclusion"],
        "decision: the evidence has no inclusion proof yet",
    );
    // The wrong decision log key (the receipt log's).
    case(
        &w.evidence,
        &w.allow,
        &w.receipt_log,
        &[
            "decision_checkpoint_signature",
            "decision_inclusion",
            "decision_witnesses",
        ],
        "decision: checkpoint: ",
    );
    // The receipt altered: it names another decision.
    case(
        &edit(&w.evidence, &|e| {
            e["receipt"]["approval"]["decision_id"] = json!("d_0");
        }),
        &w.allow,
        &w.decision_log,
        &[
            "checkpoint_signature",
            "decision_id",
            "inclusion",
            "receipt_hash",
            "witnesses",
        ],
        "receipt: receipt_hash",
    );
    // A receipt without approval (demo mode) links to no decision.
    let demo = edit(&w.evidence, &|e| e["receipt"]["approval"] = Value::Null);
    let r = chain(&w, &demo, &w.allow, &w.decision_log);
    assert!(!r.valid);
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("decision_id: the receipt names no approval")),
        "{r:?}"
    );
    // The receipt without inclusion: the chain needs it too.
    case(
        &edit(&w.evidence, &|e| {
            e.as_object_mut().unwrap().remove("inclusion");
        }),
        &w.allow,
        &w.decision_log,
        &["inclusion"],
        "receipt: the evidence has no inclusion proof yet",
    );
    // Another approval key than the one the receipt names.
    let ws = [w.witness.clone()];
    let stranger = signing_key_from_seed([9; 32]).verifying_key();
    let trust = |log| LogTrust {
        log: Some(log),
        witnesses: &ws,
        k: 0,
        require_inclusion: false,
    };
    let r = verify_chain(
        &w.evidence,
        &w.allow,
        &ChainTrust {
            receipt_keys: &[w.receipt_key],
            receipts: trust(&w.receipt_log),
            decisions: trust(&w.decision_log),
            approval_keys: &[stranger],
        },
    );
    assert_eq!(failed(&r), ["approval_key"], "{r:?}");
}
