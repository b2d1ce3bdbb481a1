//! ClawShield, the governance gate, end to end (SPEC §4, §9): the real `openexec shield serve`
//! as processes, each test on a fresh directory with identities of its own (fresh tokens and
//! approver keys) and a policy bundle of its own, talking HTTP as agents, approvers and admins
//! do. What depends on the store runs on SQLite and on PostgreSQL (`both_backends!`; the
//! PostgreSQL runs skip, saying why, without a server — and fail with
//! `OPENEXEC_TEST_PG_REQUIRED=1`).
//!
//!     OPENEXEC_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p openexec-cli --test shield

mod shield_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use openexec_core::keys;
use openexec_log::note::{self, Checkpoint};
use openexec_log::{leaf_hash, verify_inclusion, Hash};
use openexec_testkit::{both_backends, eventually, Db};
use serde_json::{json, Value};
use shield_support::*;

fn small(amount: u64, to: &str) -> Value {
    json!({"amount": amount, "currency": "EUR", "to": to})
}

fn request_hash(action: &str, nonce: &str, payload: &Value) -> String {
    openexec_core::hash::request_hash(action, nonce, payload, TENANT)
}

/// Assert an answer is the refusal `status`/`code`, in the one error shape.
#[track_caller]
fn refused(r: &Reply, status: u16, code: &str) {
    assert_eq!((r.status, r.code()), (status, code), "{r:?}");
    assert!(
        r.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "no detail: {r:?}"
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "no error.message: {r:?}"
    );
}

// ---- 1. approval: auto-approved, quorum, replays ---------------------------------------

async fn approval_flow(db: Db) {
    let fx = Fixture::new();
    let gate = Gate::start(&fx, &db.url(), &[]);
    let pk = gate.approval_key().await;
    let policy_hash = fx.policy_hash();
    assert_eq!(gate.health().await["policy_hash"], policy_hash.as_str());

    // A small payment: approved at once, with an artifact bound to exactly this request.
    let pay = small(500, "acct-1");
    let r = gate
        .propose3(&fx.agent, "charge_card", pay.clone(), "n-small")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let p = &r.body;
    assert_eq!(p["status"], "approved", "{p}");
    assert_eq!(p["tenant_id"], TENANT);
    assert_eq!(p["agent_id"], "agent");
    assert_eq!(p["decision"]["effect"], "allow");
    assert_eq!(p["decision"]["code"], "policy_allowed");
    assert_eq!(p["decision"]["rules"], json!(["charge_card.small"]));
    assert_eq!(p["decision"]["policy_hash"], policy_hash.as_str());
    let rh = request_hash("charge_card", "n-small", &pay);
    assert_eq!(p["request_hash"], rh.as_str());
    assert_eq!(
        p["intent_hash"],
        openexec_core::hash::intent_hash("charge_card", &pay).as_str()
    );
    let art = &p["artifact"];
    check_artifact_signature(art, &pk);
    assert_eq!(art["v"], 1);
    assert_eq!(art["request_hash"], rh.as_str());
    assert_eq!(art["tenant_id"], TENANT);
    assert_eq!(art["action"], "charge_card");
    assert_eq!(art["nonce"], "n-small");
    assert_eq!(art["decision_id"], p["decision"]["decision_id"]);
    assert_eq!(art["policy_hash"], policy_hash.as_str());
    assert_eq!(art["approvers"], json!([]));
    assert!(
        art.get("quorum").is_none() || art["quorum"]["min"] == 0,
        "{art}"
    );
    let parsed = openexec_core::artifact::parse(art).expect("core parses the artifact");
    assert!(parsed.issued_at() <= parsed.expires_at());
    // A payload sent as a JSON string holding the object (SPEC §2) is that object.
    let r = gate
        .propose3(&fx.agent, "charge_card", json!(pay.to_string()), "n-string")
        .await;
    assert_eq!(r.body["status"], "approved", "{r:?}");
    assert_eq!(r.body["payload"], pay);
    assert_eq!(
        r.body["request_hash"],
        request_hash("charge_card", "n-string", &pay).as_str()
    );

    // A large one waits for two of finance.
    let big = small(25_000, "acct-2");
    let r = gate
        .propose3(&fx.agent, "charge_card", big.clone(), "n-big")
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let pending = r.body.clone();
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["artifact"], Value::Null);
    assert_eq!(pending["decision"]["effect"], "require_approval");
    assert_eq!(pending["needs"]["min"], 2);
    assert_eq!(pending["needs"]["groups"], json!(["finance"]));
    assert_eq!(pending["needs"]["approvals"], 0);
    assert_eq!(pending["needs"]["deny_threshold"], 1);
    let pid = pending["proposal_id"].as_str().unwrap().to_string();
    let big_rh = request_hash("charge_card", "n-big", &big);
    assert_eq!(pending["request_hash"], big_rh.as_str());

    let r = gate.vote(&fx.alice, &pending, "approve", "ok").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["needs"]["approvals"], 1);
    assert_eq!(r.body["artifact"], Value::Null);
    let seen = gate.proposal(&fx.agent, &pid).await;
    assert_eq!(
        (seen["status"].as_str(), counts(&seen)),
        (Some("pending"), (1, 0, 1))
    );

    let r = gate.vote(&fx.bob, &pending, "approve", "fine").await;
    assert_eq!(r.status, 200, "{r:?}");
    let done = r.body.clone();
    assert_eq!(done["status"], "approved", "{done}");
    assert_eq!(done["decision"]["effect"], "allow");
    let art = done["artifact"].clone();
    check_artifact_signature(&art, &pk);
    assert_eq!(art["request_hash"], big_rh.as_str());
    assert_eq!(art["quorum"], json!({"min": 2, "groups": ["finance"]}));
    let approvers = art["approvers"].as_array().unwrap();
    let ids: Vec<&str> = approvers
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alice", "bob"]);
    for (a, who) in approvers.iter().zip([&fx.alice, &fx.bob]) {
        let pk = who.public_key();
        assert_eq!(a["key_id"], keys::key_id(&pk));
        let sig = a["signature"].as_str().unwrap();
        assert!(
            openexec_core::artifact::verify_vote(&pk, &big_rh, &who.id, sig),
            "{}'s vote signature",
            who.id
        );
        assert!(keys::verify_b64(
            &pk,
            &openexec_core::artifact::vote_message_for("approve", &big_rh, &who.id),
            sig
        ));
        // ... and is nobody else's.
        assert!(!openexec_core::artifact::verify_vote(
            &fx.frank.public_key(),
            &big_rh,
            &who.id,
            sig
        ));
    }
    // The quorum checks offline against the published roster, as OpenExec would.
    let roster = gate.get_open("/v1/roster").await;
    assert_eq!(roster.status, 200, "{roster:?}");
    let roster = openexec_core::roster::verify_roster(&roster.body, &[pk])
        .expect("the roster verifies with the gate's key");
    let parsed = openexec_core::artifact::parse(&art).unwrap();
    openexec_core::roster::check_quorum(&parsed, &roster, 2).expect("quorum met offline");
    assert_eq!(gate.proposal(&fx.agent, &pid).await["artifact"], art);
    // Its approvers (and the others of its group) still read it once decided.
    for who in [&fx.alice, &fx.frank] {
        assert_eq!(gate.proposal(who, &pid).await["status"], "approved");
    }

    // Proposing the same request again is the same proposal; another request on a used nonce
    // is a conflict; neither decides anything new.
    let size = gate.log_size().await;
    let again = gate
        .propose3(&fx.agent, "charge_card", big.clone(), "n-big")
        .await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["proposal_id"], pid.as_str());
    assert_eq!(again.body["artifact"], art);
    let again = gate
        .propose3(&fx.agent, "charge_card", pay.clone(), "n-small")
        .await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["artifact"], p["artifact"]);
    let r = gate
        .propose3(&fx.agent, "charge_card", small(501, "acct-1"), "n-small")
        .await;
    refused(&r, 422, "nonce_conflict");
    let r = gate
        .propose3(&fx.agent2, "charge_card", pay.clone(), "n-small")
        .await;
    refused(&r, 422, "nonce_conflict");
    assert_eq!(gate.log_size().await, size, "replays logged something");
}
both_backends!(approval_flow);

// ---- 2. refused votes, the deny threshold ----------------------------------------------

async fn refused_votes_change_nothing(db: Db) {
    let fx = Fixture::new();
    let gate = Gate::start(&fx, &db.url(), &[]);
    let r = gate
        .propose3(&fx.agent, "charge_card", small(20_000, "acct-9"), "big-1")
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let p = r.body;
    let pid = p["proposal_id"].as_str().unwrap().to_string();
    let rh = p["request_hash"].as_str().unwrap().to_string();

    // Each refusal leaves the proposal and the log as they were.
    let size0 = gate.log_size().await;
    let r = gate.vote(&fx.erin, &p, "approve", "mine").await;
    refused(&r, 403, "self_approval");
    unchanged(&gate, &fx.agent, &pid, (0, 0, 0), size0, "self approval").await;

    let body = json!({"vote": "approve", "reason": "x"});
    let r = gate.vote_body(&fx.agent, &p, &body).await;
    refused(&r, 403, "wrong_identity_kind");
    let r = gate.vote_body(&fx.admin, &p, &body).await;
    refused(&r, 403, "wrong_identity_kind");
    unchanged(&gate, &fx.agent, &pid, (0, 0, 0), size0, "wrong kinds").await;

    let r = gate.vote(&fx.carol, &p, "approve", "ops says yes").await;
    refused(&r, 403, "not_eligible");
    let r = gate.vote(&fx.mallory, &p, "approve", "other tenant").await;
    refused(&r, 403, "not_eligible");
    unchanged(&gate, &fx.agent, &pid, (0, 0, 0), size0, "not eligible").await;

    // Bad signatures: someone else's key, another request, the other decision, garbage, none.
    for sig in [
        sign_vote(&fx.bob, "approve", &rh),
        sign_vote(&fx.alice, "approve", &"0".repeat(64)),
        sign_vote(&fx.alice, "deny", &rh),
        "not base64!".to_string(),
        zero_signature(),
    ] {
        let r = gate
            .vote_body(
                &fx.alice,
                &p,
                &json!({"vote": "approve", "reason": "r", "signature": sig}),
            )
            .await;
        refused(&r, 400, "bad_vote_signature");
    }
    let r = gate
        .vote_body(&fx.alice, &p, &json!({"vote": "approve", "reason": "r"}))
        .await;
    refused(&r, 400, "bad_vote_signature");
    unchanged(&gate, &fx.agent, &pid, (0, 0, 0), size0, "bad signatures").await;

    // One good vote counts (and is logged); the same approver again is refused.
    let r = gate.vote(&fx.alice, &p, "approve", "ok").await;
    assert_eq!(r.status, 200, "{r:?}");
    let size1 = size0 + 1;
    unchanged(
        &gate,
        &fx.agent,
        &pid,
        (1, 0, 1),
        size1,
        "one vote counted, one entry",
    )
    .await;
    let r = gate.vote(&fx.alice, &p, "approve", "again").await;
    refused(&r, 409, "already_voted");
    let r = gate.vote(&fx.alice, &p, "deny", "changed my mind").await;
    refused(&r, 409, "already_voted");
    unchanged(&gate, &fx.agent, &pid, (1, 0, 1), size1, "already voted").await;

    // reason_required: production deletion.
    let r = gate
        .propose3(
            &fx.agent,
            "delete_resource",
            json!({"env": "prod", "id": "db-1"}),
            "del-1",
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let d = r.body;
    assert_eq!(d["needs"]["reason_required"], true);
    assert_eq!(d["needs"]["groups"], json!(["ops"]));
    let size2 = gate.log_size().await;
    for reason in ["", "   "] {
        let r = gate.vote(&fx.carol, &d, "approve", reason).await;
        refused(&r, 400, "reason_required");
    }
    let r = gate
        .vote_body(
            &fx.carol,
            &d,
            &json!({"vote": "approve", "signature": sign_vote(&fx.carol, "approve", d["request_hash"].as_str().unwrap())}),
        )
        .await;
    refused(&r, 400, "reason_required");
    let seen = gate
        .proposal(&fx.agent, d["proposal_id"].as_str().unwrap())
        .await;
    assert_eq!(counts(&seen), (0, 0, 0));
    assert_eq!(gate.log_size().await, size2);
    let r = gate.vote(&fx.carol, &d, "approve", "decommissioned").await;
    assert_eq!((r.status, &r.body["needs"]["approvals"]), (200, &json!(1)));

    // The quorum is met: a later vote is not_pending.
    let r = gate.vote(&fx.bob, &p, "approve", "fine").await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("approved"))
    );
    let size3 = gate.log_size().await;
    let r = gate.vote(&fx.frank, &p, "approve", "late").await;
    refused(&r, 409, "not_pending");
    let r = gate.vote(&fx.frank, &p, "deny", "late").await;
    refused(&r, 409, "not_pending");
    let seen = gate.proposal(&fx.agent, &pid).await;
    assert_eq!(
        (seen["status"].as_str(), counts(&seen)),
        (Some("approved"), (2, 0, 2))
    );
    assert_eq!(gate.log_size().await, size3);

    // One denial (the threshold) ends a proposal.
    let r = gate
        .propose3(&fx.agent, "charge_card", small(30_000, "acct-3"), "big-2")
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let q = r.body;
    let r = gate.vote(&fx.frank, &q, "deny", "unknown payee").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["status"], "denied");
    assert_eq!(r.body["decision"]["effect"], "deny");
    assert_eq!(r.body["decision"]["code"], "denied_by_approvers");
    assert_eq!(r.body["artifact"], Value::Null);
    assert_eq!(r.body["needs"]["denials"], 1);
    let r = gate.vote(&fx.bob, &q, "approve", "too late").await;
    refused(&r, 409, "not_pending");
    let seen = gate
        .proposal(&fx.agent, q["proposal_id"].as_str().unwrap())
        .await;
    assert_eq!(seen["status"], "denied");

    // The deny vote is in the log with its voter, and its signature was checked.
    let entries = gate.log_entries().await;
    let deny = entries
        .iter()
        .find(|e| e["kind"] == "vote" && e["vote"] == "deny")
        .expect("a deny vote entry");
    assert_eq!(deny["voter"], "frank");
    assert_eq!(deny["proposal_id"], q["proposal_id"]);

    let r = gate
        .vote_body(
            &fx.alice,
            &json!({"proposal_id": "p_nope", "request_hash": rh}),
            &body,
        )
        .await;
    refused(&r, 404, "unknown_proposal");
}
both_backends!(refused_votes_change_nothing);

/// A well-formed signature that verifies for nobody.
fn zero_signature() -> String {
    B64.encode([0u8; 64])
}

/// The proposal is still pending with these counts, and the log has this size.
async fn unchanged(
    gate: &Gate,
    agent: &Who,
    pid: &str,
    want: (u64, u64, usize),
    size: u64,
    label: &str,
) {
    let seen = gate.proposal(agent, pid).await;
    assert_eq!(seen["status"], "pending", "{label}: {seen}");
    assert_eq!(counts(&seen), want, "{label}: counts: {seen}");
    assert_eq!(gate.log_size().await, size, "{label}: the log");
}

// ---- 2b. expiry, and reservations given back -------------------------------------------

/// `pay` is approved at once with cost = amount; `held_pay` waits for one finance approval for
/// `payload.ttl` seconds, reserving its amount meanwhile.
const HELD_POLICY: &str = r#"package clawshield

import rego.v1

default decision := {"effect": "deny", "reasons": ["not allowed"], "rules": ["default_deny"]}

decision := {"effect": "allow", "rules": ["pay.auto"], "cost": input.payload.amount} if {
	input.action == "pay"
}

decision := {
	"effect": "require_approval",
	"rules": ["pay.held"],
	"cost": input.payload.amount,
	"approval": {"min": 1, "groups": ["finance"], "deny_threshold": 1, "ttl_seconds": input.payload.ttl},
} if {
	input.action == "held_pay"
}
"#;

async fn expiry_and_reservations(db: Db) {
    let fx = Fixture::without_policy();
    fx.write_policy("policy.rego", HELD_POLICY);
    let gate = Gate::start(
        &fx,
        &db.url(),
        &[
            ("CLAWSHIELD_BUDGET", "1000"),
            ("CLAWSHIELD_EXPIRY_INTERVAL_MS", "50"),
        ],
    );
    let status = |r: &Reply| {
        (
            r.status,
            r.body["status"].clone(),
            r.body["decision"]["code"].clone(),
        )
    };

    // A pending proposal reserves its cost; its denial gives it back.
    let r = gate
        .propose3(
            &fx.agent,
            "held_pay",
            json!({"amount": 1000, "ttl": 3600}),
            "h-1",
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let held = r.body;
    let r = gate
        .propose3(&fx.agent, "pay", json!({"amount": 1}), "p-1")
        .await;
    assert_eq!(
        status(&r),
        (200, json!("denied"), json!("budget_exceeded")),
        "{r:?}"
    );
    let r = gate.vote(&fx.alice, &held, "deny", "no").await;
    assert_eq!(r.body["status"], "denied", "{r:?}");

    // ... and so does its expiry.
    let r = gate
        .propose3(
            &fx.agent,
            "held_pay",
            json!({"amount": 1000, "ttl": 2}),
            "h-2",
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let expiring = r.body;
    let eid = expiring["proposal_id"].as_str().unwrap().to_string();
    let r = gate
        .propose3(&fx.agent, "pay", json!({"amount": 1}), "p-2")
        .await;
    assert_eq!(
        status(&r),
        (200, json!("denied"), json!("budget_exceeded")),
        "{r:?}"
    );
    let seen = gate
        .wait_proposal(
            &fx.agent,
            &eid,
            Duration::from_secs(10),
            "h-2 expires",
            |p| p["status"] != "pending",
        )
        .await;
    assert_eq!(seen["status"], "expired", "{seen}");
    assert_eq!(seen["decision"]["code"], "expired");
    assert_eq!(seen["artifact"], Value::Null);
    let r = gate.vote(&fx.alice, &expiring, "approve", "too late").await;
    refused(&r, 409, "not_pending");
    let entries = gate.log_entries().await;
    let expiry: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "expiry").collect();
    assert_eq!(expiry.len(), 1, "{entries:?}");
    assert_eq!(expiry[0]["proposal_id"], eid.as_str());
    assert_eq!(expiry[0]["code"], "expired");
    assert_eq!(expiry[0]["tenant_id"], TENANT);

    // Both reservations are back: the whole budget fits again, and not a unit more.
    let r = gate
        .propose3(&fx.agent, "pay", json!({"amount": 1000}), "p-3")
        .await;
    assert_eq!(
        status(&r),
        (200, json!("approved"), json!("policy_allowed")),
        "{r:?}"
    );
    let r = gate
        .propose3(&fx.agent, "pay", json!({"amount": 1}), "p-4")
        .await;
    assert_eq!(
        status(&r),
        (200, json!("denied"), json!("budget_exceeded")),
        "{r:?}"
    );
}
both_backends!(expiry_and_reservations);

// ---- 3. long poll, the approvers' list ---------------------------------------------------

async fn long_poll_and_pending_list(db: Db) {
    let fx = Fixture::new();
    let gate = Arc::new(Gate::start(&fx, &db.url(), &[]));
    let p = gate
        .propose3(&fx.agent, "charge_card", small(50_000, "acct-5"), "lp-1")
        .await
        .body;
    let d = gate
        .propose3(
            &fx.agent2,
            "delete_resource",
            json!({"env": "prod", "id": "vm-7"}),
            "lp-2",
        )
        .await
        .body;
    assert_eq!(
        (p["status"].as_str(), d["status"].as_str()),
        (Some("pending"), Some("pending"))
    );
    let pid = p["proposal_id"].as_str().unwrap().to_string();
    let did = d["proposal_id"].as_str().unwrap().to_string();

    let listed = |who: &Who| {
        let gate = gate.clone();
        let who = who.clone();
        async move {
            let r = gate.get(&who, "/v1/proposals?status=pending").await;
            assert_eq!(r.status, 200, "{}'s list: {r:?}", who.id);
            r.body["proposals"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["proposal_id"].as_str().unwrap().to_string())
                .collect::<BTreeSet<String>>()
        }
    };
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(listed(&fx.alice).await, set(&[pid.as_str()]));
    assert_eq!(listed(&fx.carol).await, set(&[did.as_str()]));
    // erin is the human the agent acts for: she may vote on agent2's proposals only (none of
    // finance here); mallory is of another tenant.
    assert_eq!(listed(&fx.erin).await, set(&[]));
    assert_eq!(listed(&fx.mallory).await, set(&[]));
    let r = gate.get(&fx.alice, "/v1/proposals").await;
    assert_eq!(r.status, 200, "status defaults to pending: {r:?}");
    let r = gate.get(&fx.agent, "/v1/proposals?status=pending").await;
    refused(&r, 403, "wrong_identity_kind");
    let r = gate.get(&fx.alice, "/v1/proposals?status=approved").await;
    refused(&r, 400, "invalid_request");

    // An approver reads what it may vote on; others of the tenant's agents do not.
    assert_eq!(
        gate.proposal(&fx.carol, &did).await["proposal_id"],
        did.as_str()
    );
    let r = gate.get(&fx.agent, &format!("/v1/proposals/{did}")).await;
    refused(&r, 404, "unknown_proposal");
    let r = gate
        .get(&fx.other_agent, &format!("/v1/proposals/{pid}"))
        .await;
    refused(&r, 404, "unknown_proposal");
    // Nor do approvers who may not vote on it: of another tenant, another group, or the human
    // the agent acts for.
    for who in [&fx.mallory, &fx.carol, &fx.erin] {
        let r = gate.get(who, &format!("/v1/proposals/{pid}")).await;
        refused(&r, 404, "unknown_proposal");
        let r = gate.get(who, &format!("/v1/proposals/{pid}?wait=5")).await;
        refused(&r, 404, "unknown_proposal");
    }
    assert_eq!(
        gate.proposal(&fx.bob, &pid).await["proposal_id"],
        pid.as_str()
    );
    let r = gate.get(&fx.admin, &format!("/v1/proposals/{pid}")).await;
    refused(&r, 403, "wrong_identity_kind");

    // Once alice voted, P leaves her list but not bob's.
    let r = gate.vote(&fx.alice, &p, "approve", "ok").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(listed(&fx.alice).await, set(&[]));
    assert_eq!(listed(&fx.bob).await, set(&[pid.as_str()]));

    // A wait with no change is held for its time and answers the proposal as it is.
    let t = Instant::now();
    let r = gate
        .get(&fx.agent, &format!("/v1/proposals/{pid}?wait=1"))
        .await;
    let held = t.elapsed();
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("pending")),
        "{r:?}"
    );
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(6),
        "wait=1 held {held:?}"
    );

    // A long poll answers as soon as the deciding vote lands.
    let poller = {
        let gate = gate.clone();
        let agent = fx.agent.clone();
        let pid = pid.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = gate
                .get(&agent, &format!("/v1/proposals/{pid}?wait=10"))
                .await;
            (r, t.elapsed(), Instant::now())
        })
    };
    // Only orders two requests (the poll is held before the vote is sent); nothing to poll for.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !poller.is_finished(),
        "the long poll answered before any change"
    );
    let r = gate.vote(&fx.bob, &p, "approve", "fine").await;
    let voted = Instant::now();
    assert_eq!(r.body["status"], "approved", "{r:?}");
    let (r, took, answered) = poller.await.unwrap();
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("approved")),
        "{r:?}"
    );
    assert!(r.body["artifact"].is_object(), "{r:?}");
    assert!(took < Duration::from_secs(5), "the long poll took {took:?}");
    assert!(
        answered.saturating_duration_since(voted) < Duration::from_secs(2),
        "answered {:?} after the vote",
        answered.saturating_duration_since(voted)
    );
    assert_eq!(listed(&fx.bob).await, set(&[]));

    // A decided proposal's status cannot change any more: a wait on it is answered at once.
    let t = Instant::now();
    let r = gate
        .get(&fx.agent, &format!("/v1/proposals/{pid}?wait=30"))
        .await;
    assert_eq!(r.body["status"], "approved", "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "held {:?}",
        t.elapsed()
    );
}
both_backends!(long_poll_and_pending_list);

// ---- 4. breakers ---------------------------------------------------------------------------

async fn loop_breaker(db: Db) {
    let fx = Fixture::new();
    let gate = Gate::start(
        &fx,
        &db.url(),
        &[
            ("CLAWSHIELD_LOOP_MAX", "3"),
            ("CLAWSHIELD_RATE_PER_AGENT", "0"),
        ],
    );
    let same = small(700, "acct-loop");
    for i in 0..3 {
        let r = gate
            .propose3(&fx.agent, "charge_card", same.clone(), &format!("loop-{i}"))
            .await;
        assert_eq!(
            (r.status, r.body["status"].as_str()),
            (200, Some("approved")),
            "#{i}: {r:?}"
        );
    }
    for i in 3..5 {
        let r = gate
            .propose3(&fx.agent, "charge_card", same.clone(), &format!("loop-{i}"))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["status"], "denied", "#{i}: {r:?}");
        assert_eq!(r.body["decision"]["code"], "loop_detected", "#{i}: {r:?}");
        assert_eq!(r.body["artifact"], Value::Null);
    }
    // Another intent of the same agent, and the same intent of another agent, pass.
    let r = gate
        .propose3(
            &fx.agent,
            "charge_card",
            small(701, "acct-loop"),
            "other-intent",
        )
        .await;
    assert_eq!(r.body["status"], "approved", "{r:?}");
    let r = gate
        .propose3(&fx.agent2, "charge_card", same.clone(), "agent2-1")
        .await;
    assert_eq!(r.body["status"], "approved", "{r:?}");
    // The trip is in the log.
    let entries = gate.log_entries().await;
    let n = entries
        .iter()
        .filter(|e| e["kind"] == "decision" && e["code"] == "loop_detected")
        .count();
    assert_eq!(n, 2, "{entries:?}");
}
both_backends!(loop_breaker);

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_answers_429_with_retry_after() {
    let fx = Fixture::new();
    let db = Db::sqlite();
    let gate = Arc::new(Gate::start(
        &fx,
        &db.url(),
        &[
            ("CLAWSHIELD_RATE_PER_AGENT", "2"),
            ("CLAWSHIELD_RATE_BURST_SECONDS", "1"),
        ],
    ));
    let burst = 10;
    let start = Arc::new(tokio::sync::Barrier::new(burst));
    let mut tasks = Vec::new();
    for i in 0..burst as u64 {
        let (gate, agent, start) = (gate.clone(), fx.agent.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            gate.propose3(
                &agent,
                "charge_card",
                small(100 + i, "acct-r"),
                &format!("rate-{i}"),
            )
            .await
        }));
    }
    let mut ok = 0;
    let mut limited = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        match r.status {
            200 => {
                assert_eq!(r.body["status"], "approved", "{r:?}");
                ok += 1;
            }
            429 => {
                refused(&r, 429, "rate_limited");
                let ra = r
                    .headers
                    .get("retry-after")
                    .unwrap_or_else(|| panic!("429 without Retry-After: {r:?}"))
                    .to_str()
                    .unwrap()
                    .to_string();
                let secs: u64 = ra
                    .parse()
                    .unwrap_or_else(|_| panic!("Retry-After '{ra}' is not whole seconds"));
                assert!(secs >= 1, "Retry-After {secs}");
                limited.push(i);
            }
            _ => panic!("{r:?}"),
        }
    }
    assert!(ok >= 2, "the burst of 2 passes: {ok} passed");
    assert!(
        limited.len() >= 3,
        "only {} of {burst} were limited",
        limited.len()
    );

    // A refused proposal was not stored: its nonce is free (even for another request), and
    // passes once tokens are back.
    let i = limited[0] as u64;
    let nonce = format!("rate-{i}");
    // Another agent has a bucket of its own.
    let r = gate
        .propose3(&fx.agent2, "charge_card", small(5, "acct-r"), "agent2-rate")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = eventually(Duration::from_secs(10), "tokens come back", || {
        let gate = gate.clone();
        let agent = fx.agent.clone();
        let nonce = nonce.clone();
        async move {
            let r = gate
                .propose3(&agent, "charge_card", small(900 + i, "acct-other"), &nonce)
                .await;
            (r.status != 429).then_some(r)
        }
    })
    .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("approved")),
        "{r:?}"
    );
    // The first trip of the bucket is logged (once, not once per refusal).
    let entries = gate.log_entries().await;
    let trips = entries
        .iter()
        .filter(|e| e["code"] == "rate_limited")
        .count();
    assert!(trips >= 1, "{entries:?}");
    assert!(
        trips < limited.len() + 2,
        "every refusal was logged: {trips}"
    );
}

/// 20 concurrent payments of 1000 against a budget of 5000: exactly 5 approved.
async fn budget_is_exact_under_concurrency(db: Db) {
    let fx = Fixture::new();
    let gate = Arc::new(Gate::start(&fx, &db.url(), BUDGET_ENV));
    let results = concurrent_payments(std::slice::from_ref(&gate), &fx.agent, 20).await;
    assert_budget(&results, 5);
    // Approved or not, every decision is logged.
    let entries = gate.log_entries().await;
    let exceeded = entries
        .iter()
        .filter(|e| e["code"] == "budget_exceeded")
        .count();
    assert_eq!(exceeded, 15);
}
both_backends!(budget_is_exact_under_concurrency);

const BUDGET_ENV: &[(&str, &str)] = &[
    ("CLAWSHIELD_BUDGET", "5000"),
    ("CLAWSHIELD_RATE_PER_AGENT", "0"),
    ("CLAWSHIELD_RATE_PER_ACTION", "0"),
    ("CLAWSHIELD_LOOP_MAX", "0"),
];

async fn concurrent_payments(gates: &[Arc<Gate>], agent: &Who, per_gate: usize) -> Vec<Reply> {
    let start = Arc::new(tokio::sync::Barrier::new(gates.len() * per_gate));
    let mut tasks = Vec::new();
    for (g, gate) in gates.iter().enumerate() {
        for i in 0..per_gate {
            let (gate, agent, start) = (gate.clone(), agent.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                gate.propose3(
                    &agent,
                    "charge_card",
                    small(1000, "acct-b"),
                    &format!("b-{g}-{i}"),
                )
                .await
            }));
        }
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[track_caller]
fn assert_budget(results: &[Reply], approved: usize) {
    let mut ok = 0;
    for r in results {
        assert_eq!(r.status, 200, "{r:?}");
        match r.body["status"].as_str() {
            Some("approved") => {
                assert!(r.body["artifact"].is_object(), "{r:?}");
                ok += 1;
            }
            Some("denied") => {
                assert_eq!(r.body["decision"]["code"], "budget_exceeded", "{r:?}");
                assert_eq!(r.body["artifact"], Value::Null);
            }
            _ => panic!("{r:?}"),
        }
    }
    assert_eq!(ok, approved, "approved payments");
}

#[tokio::test(flavor = "multi_thread")]
async fn budget_is_exact_across_two_gates_on_postgres() {
    let Some(db) = Db::postgres("shield_budget_two_gates").await else {
        return;
    };
    let fx = Fixture::new();
    let a = Arc::new(Gate::start(&fx, &db.url(), BUDGET_ENV));
    let b = Arc::new(Gate::start(&fx, &db.url(), BUDGET_ENV));
    assert_eq!(
        a.health().await["policy_hash"],
        b.health().await["policy_hash"]
    );
    let results = concurrent_payments(&[a.clone(), b.clone()], &fx.agent, 10).await;
    assert_budget(&results, 5);
    // One log: each gate serves the other's decisions, each decision once, and says the
    // same size.
    let size = a.log_size().await;
    assert_eq!(b.log_size().await, size);
    let entries = b.log_entries_to(size).await;
    assert_eq!(entries, a.log_entries_to(size).await);
    let decided = entries.iter().filter(|e| e["kind"] == "decision").count();
    assert_eq!(decided, 20, "{entries:?}");
    let ids: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), entries.len(), "a decision_id twice");
    let first_policy = entries.iter().filter(|e| e["kind"] == "policy").count();
    assert_eq!(first_policy, 1, "the first policy was put in force once");

    // A proposal made on one gate is voted on the other, whose decision wakes the first's
    // long poll; each gate serves the decision with an inclusion proof.
    let r = a
        .propose3(
            &fx.agent,
            "delete_resource",
            json!({"env": "prod", "id": "db-9"}),
            "two-1",
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let d = r.body;
    let id = d["proposal_id"].as_str().unwrap().to_string();
    let poller = {
        let (a, agent, id) = (a.clone(), fx.agent.clone(), id.clone());
        tokio::spawn(async move { a.get(&agent, &format!("/v1/proposals/{id}?wait=10")).await })
    };
    // Only orders the poll before the votes; nothing to poll for.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = b.vote(&fx.carol, &d, "approve", "ok").await;
    assert_eq!(r.body["status"], "pending", "{r:?}");
    let r = b.vote(&fx.dave, &d, "approve", "ok too").await;
    assert_eq!(r.body["status"], "approved", "{r:?}");
    let voted = Instant::now();
    let decision_id = r.body["decision"]["decision_id"]
        .as_str()
        .unwrap()
        .to_string();
    let polled = poller.await.unwrap();
    assert_eq!(polled.body["status"], "approved", "{polled:?}");
    assert_eq!(polled.body["artifact"], r.body["artifact"]);
    assert!(
        voted.elapsed() < Duration::from_secs(3),
        "{:?}",
        voted.elapsed()
    );
    for gate in [&a, &b] {
        eventually(
            Duration::from_secs(10),
            "the decision's inclusion proof",
            || async {
                let r = gate
                    .get(&fx.agent, &format!("/v1/decisions/{decision_id}"))
                    .await;
                assert_eq!(r.status, 200, "{r:?}");
                r.body.get("inclusion").map(drop)
            },
        )
        .await;
    }
}

async fn freeze_and_unfreeze(db: Db) {
    let fx = Fixture::new();
    let gate = Gate::start(
        &fx,
        &db.url(),
        &[
            ("CLAWSHIELD_LOOP_MAX", "3"),
            ("CLAWSHIELD_RATE_PER_AGENT", "0"),
        ],
    );
    let tenant = json!({"tenant_id": TENANT});
    let r = gate.post(&fx.agent, "/v1/admin/freeze", &tenant).await;
    refused(&r, 403, "wrong_identity_kind");
    let r = gate.post(&fx.alice, "/v1/admin/freeze", &tenant).await;
    refused(&r, 403, "wrong_identity_kind");
    let r = gate
        .propose3(&fx.agent, "charge_card", small(10, "a"), "before")
        .await;
    assert_eq!(r.body["status"], "approved", "{r:?}");

    let r = gate.post(&fx.admin, "/v1/admin/freeze", &tenant).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["frozen"], true);
    // Every proposal of the tenant is denied `frozen` — also an agent repeating itself (more
    // often than the loop breaker allows) while frozen.
    for i in 0..5 {
        for agent in [&fx.agent, &fx.agent2] {
            let r = gate
                .propose3(
                    agent,
                    "charge_card",
                    small(10, "a"),
                    &format!("frozen-{}-{i}", agent.id),
                )
                .await;
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.body["status"], "denied", "{r:?}");
            assert_eq!(r.body["decision"]["code"], "frozen", "{r:?}");
            assert_eq!(r.body["artifact"], Value::Null);
        }
    }
    // Another tenant is not frozen.
    let r = gate
        .propose3(&fx.other_agent, "charge_card", small(10, "a"), "globex-1")
        .await;
    assert_eq!(r.body["status"], "approved", "{r:?}");

    let r = gate.post(&fx.admin, "/v1/admin/unfreeze", &tenant).await;
    assert_eq!((r.status, &r.body["frozen"]), (200, &json!(false)), "{r:?}");
    // Proposals denied while frozen were not counted as a loop.
    let r = gate
        .propose3(&fx.agent, "charge_card", small(10, "a"), "after")
        .await;
    assert_eq!(r.body["status"], "approved", "{r:?}");

    // One agent only.
    let r = gate
        .post(
            &fx.admin,
            "/v1/admin/freeze",
            &json!({"tenant_id": TENANT, "agent_id": "agent"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = gate
        .propose3(&fx.agent, "charge_card", small(11, "a"), "agent-frozen")
        .await;
    assert_eq!(r.body["decision"]["code"], "frozen", "{r:?}");
    let r = gate
        .propose3(&fx.agent2, "charge_card", small(11, "a"), "agent2-free")
        .await;
    assert_eq!(r.body["status"], "approved", "{r:?}");
    let r = gate
        .post(
            &fx.admin,
            "/v1/admin/unfreeze",
            &json!({"tenant_id": TENANT, "agent_id": "agent"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = gate
        .propose3(&fx.agent, "charge_card", small(11, "a"), "agent-thawed")
        .await;
    assert_eq!(r.body["status"], "approved", "{r:?}");
}
both_backends!(freeze_and_unfreeze);

// ---- 5. policy failures and activation -------------------------------------------------

async fn assert_fails_closed(gate: &Gate, fx: &Fixture, ready_says: &[&str]) {
    for (i, action) in ["charge_card", "delete_resource", "anything"]
        .iter()
        .enumerate()
    {
        let r = gate
            .propose3(&fx.agent, action, json!({"amount": 1}), &format!("pe-{i}"))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["status"], "denied", "{r:?}");
        assert_eq!(r.body["decision"]["effect"], "deny");
        assert_eq!(r.body["decision"]["code"], "policy_error", "{r:?}");
        assert_eq!(r.body["artifact"], Value::Null);
    }
    let r = gate.get_open("/ready").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body["checks"]["policy"], false, "{r:?}");
    let detail = r.body["detail"].as_str().unwrap_or_default();
    for s in ready_says {
        assert!(
            detail.contains(s),
            "/ready's detail does not name '{s}': {r:?}"
        );
    }
    assert_eq!(gate.health().await["policy_hash"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_bundle_fails_closed() {
    let fx = Fixture::without_policy();
    fx.write_policy("broken.rego", "package clawshield\n\ndecision := {\n");
    let db = Db::sqlite();
    let gate = Gate::start(&fx, &db.url(), &[]);
    assert_fails_closed(&gate, &fx, &["broken.rego", "does not load"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_bundle_fails_closed() {
    let fx = Fixture::new();
    let db = Db::sqlite();
    let gate = Gate::start(&fx, &db.url(), &[("CLAWSHIELD_POLICY", "")]);
    assert_fails_closed(&gate, &fx, &["CLAWSHIELD_POLICY"]).await;
}

const SLOW_POLICY: &str = r#"package clawshield

import rego.v1

default decision := {"effect": "deny", "rules": ["default_deny"]}

decision := {"effect": "allow", "rules": ["quick"]} if input.action == "quick"

decision := {"effect": "allow", "rules": ["slow"]} if {
	input.action == "slow"
	n := count([x | some i in numbers.range(1, 30000); some j in numbers.range(1, 30000); x := i + j])
	n > 0
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_past_its_time_limit_is_a_policy_error() {
    let fx = Fixture::without_policy();
    fx.write_policy("policy.rego", SLOW_POLICY);
    let db = Db::sqlite();
    let gate = Gate::start(
        &fx,
        &db.url(),
        &[("CLAWSHIELD_POLICY_TIME_LIMIT_MS", "200")],
    );
    let r = gate.get_open("/ready").await;
    assert_eq!(r.status, 200, "{r:?}");
    for i in 0..2 {
        let t = Instant::now();
        let r = gate
            .propose3(&fx.agent, "slow", json!({}), &format!("slow-{i}"))
            .await;
        let took = t.elapsed();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["status"], "denied", "{r:?}");
        assert_eq!(r.body["decision"]["code"], "policy_error", "{r:?}");
        assert!(took < Duration::from_secs(3), "answered after {took:?}");
        // It is the configured limit that stopped it.
        let why = r.body["decision"]["reasons"][0]
            .as_str()
            .unwrap_or_default();
        assert!(
            why.contains("time limit") && why.contains("limit=200000000ns"),
            "{r:?}"
        );
    }
    // The gate still decides what the policy decides quickly.
    let r = gate.propose3(&fx.agent, "quick", json!({}), "quick").await;
    assert_eq!(r.body["status"], "approved", "{r:?}");
}

async fn policy_activation_needs_its_quorum(db: Db) {
    let fx = Fixture::new();
    let mut gate = Gate::start(&fx, &db.url(), &[]);
    let old = fx.policy_hash();
    assert_eq!(gate.health().await["policy_hash"], old.as_str());

    // A new bundle in the same directory: the automatic limit comes from a data.json (100),
    // which travels through the store with the rules.
    let text = std::fs::read_to_string(fx.policy_dir().join("policy.rego")).unwrap();
    let changed = text.replace(
        "small_payment_limit := 10000",
        "small_payment_limit := data.limits.small_payment",
    );
    assert_ne!(changed, text);
    fx.write_policy("policy.rego", &changed);
    fx.write_policy(
        "data.json",
        r#"{"limits": {"small_payment": 100, "ratio": 0.1, "big": 1e21}, "note": "zürich ✓ \u00e9"}"#,
    );
    let new = fx.policy_hash();
    assert_ne!(new, old);
    // The CLI names the same hash.
    let o = std::process::Command::new(BIN)
        .args(["policy", "check", fx.policy_dir().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let checked: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(checked["policy_hash"], new.as_str());

    // Nothing changes by itself: the stored policy stays in force.
    let r = gate
        .propose3(&fx.agent, "charge_card", small(500, "a"), "old-1")
        .await;
    assert_eq!(r.body["status"], "approved", "{r:?}");
    assert_eq!(r.body["decision"]["policy_hash"], old.as_str());

    // An activation of a bundle that is not the configured one is refused.
    let r = gate
        .propose3(
            &fx.agent,
            "clawshield.policy.activate",
            json!({"policy_hash": "ab".repeat(32)}),
            "act-unknown",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["status"], "denied", "{r:?}");
    assert_eq!(r.body["decision"]["code"], "policy_unknown", "{r:?}");
    let r = gate
        .propose3(
            &fx.agent,
            "clawshield.policy.activate",
            json!({}),
            "act-none",
        )
        .await;
    refused(&r, 400, "invalid_payload");

    let r = gate
        .propose(
            &fx.agent,
            &json!({"action": "clawshield.policy.activate", "payload": {"policy_hash": new},
                    "nonce": "act-1", "context": {"reason": "lower the automatic limit"}}),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let act = r.body;
    assert_eq!(act["needs"]["min"], 2);
    assert_eq!(act["needs"]["groups"], json!(["finance", "ops"]));
    assert_eq!(act["decision"]["policy_hash"], old.as_str());

    let r = gate.vote(&fx.alice, &act, "approve", "reviewed").await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("pending")),
        "{r:?}"
    );
    assert_eq!(gate.health().await["policy_hash"], old.as_str());
    let r = gate
        .propose3(&fx.agent, "charge_card", small(500, "a"), "old-2")
        .await;
    assert_eq!(r.body["status"], "approved", "still the old policy: {r:?}");

    let r = gate.vote(&fx.carol, &act, "approve", "reviewed too").await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("approved")),
        "{r:?}"
    );
    let approval_id = r.body["artifact"]["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(gate.health().await["policy_hash"], new.as_str());
    let r = gate
        .propose3(&fx.agent, "charge_card", small(500, "a"), "new-1")
        .await;
    assert_eq!(
        r.status, 202,
        "the new policy holds 500 for approval: {r:?}"
    );
    assert_eq!(r.body["decision"]["policy_hash"], new.as_str());

    let entries = gate.log_entries().await;
    let policy: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "policy").collect();
    assert_eq!(policy.len(), 2, "{policy:?}");
    assert_eq!(policy[0]["policy_hash"], old.as_str());
    assert_eq!(policy[0]["approval_id"], Value::Null);
    assert_eq!(policy[1]["policy_hash"], new.as_str());
    assert_eq!(policy[1]["approval_id"], approval_id.as_str());
    assert_eq!(policy[1]["proposal_id"], act["proposal_id"]);

    // What is in force is the store's, across a restart.
    gate.restart();
    assert_eq!(gate.health().await["policy_hash"], new.as_str());
    let r = gate
        .propose3(&fx.agent, "charge_card", small(500, "a"), "new-2")
        .await;
    assert_eq!(r.status, 202, "{r:?}");
}
both_backends!(policy_activation_needs_its_quorum);

// ---- 6. bad input -------------------------------------------------------------------------

#[test]
fn shield_token_prints_a_token_and_the_hash_to_configure() {
    let o = std::process::Command::new(BIN)
        .args(["shield", "token"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token = "))
        .unwrap_or_else(|| panic!("no token line: {out}"));
    let line = out
        .lines()
        .find(|l| l.starts_with("token_sha256 = "))
        .unwrap_or_else(|| panic!("no token_sha256 line: {out}"));
    assert!(token.len() >= 32, "a short token: {token}");
    assert_eq!(
        line,
        format!(
            "token_sha256 = \"{}\"",
            openexec_shield::token_hash_hex(token)
        )
    );
    let again = std::process::Command::new(BIN)
        .args(["shield", "token"])
        .output()
        .unwrap();
    assert_ne!(again.stdout, out.as_bytes(), "the same token twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let fx = Fixture::new();
    let db = Db::sqlite();
    let gate = Gate::start(&fx, &db.url(), &[("CLAWSHIELD_MAX_BODY_BYTES", "4096")]);
    let r = gate
        .propose3(&fx.agent, "charge_card", small(40_000, "acct"), "bi-1")
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let p = r.body;
    let pid = p["proposal_id"].as_str().unwrap().to_string();
    let decision_id = p["decision"]["decision_id"].as_str().unwrap().to_string();
    // The open routes need no token.
    for path in [
        "/health",
        "/ready",
        "/version",
        "/metrics",
        "/keys",
        "/v1/roster",
    ] {
        let r = gate.get_open(path).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    eventually(Duration::from_secs(10), "a signed checkpoint", || async {
        (gate.get_open("/log/checkpoint").await.status == 200).then_some(())
    })
    .await;
    let r = gate.get_open("/openapi.json").await;
    assert_eq!(r.status, 200, "{r:?}");
    for path in [
        "/v1/proposals",
        "/v1/proposals/{id}/votes",
        "/v1/admin/freeze",
        "/v1/decisions/{id}",
    ] {
        assert!(
            r.body["paths"].get(path).is_some(),
            "/openapi.json lacks {path}"
        );
    }

    let before = (
        gate.log_size().await,
        gate.get(&fx.alice, "/v1/proposals?status=pending")
            .await
            .body,
        gate.proposal(&fx.agent, &pid).await,
    );

    let votes = format!("/v1/proposals/{pid}/votes");
    let endpoints: Vec<(&str, String, Option<Value>)> = vec![
        (
            "POST",
            "/v1/proposals".into(),
            Some(json!({"action": "charge_card", "payload": {}, "nonce": "x"})),
        ),
        ("GET", "/v1/proposals?status=pending".into(), None),
        ("GET", format!("/v1/proposals/{pid}"), None),
        (
            "POST",
            votes.clone(),
            Some(json!({"vote": "approve", "reason": "r"})),
        ),
        ("GET", format!("/v1/decisions/{decision_id}"), None),
        (
            "POST",
            "/v1/admin/freeze".into(),
            Some(json!({"tenant_id": TENANT})),
        ),
        (
            "POST",
            "/v1/admin/unfreeze".into(),
            Some(json!({"tenant_id": TENANT})),
        ),
    ];
    // No token, an unknown one, another scheme: 401 with WWW-Authenticate.
    for (m, path, body) in &endpoints {
        let b = || body.as_ref().map_or(Body::None, Body::Json);
        for (label, token) in [("no token", None), ("unknown token", Some("tok-nobody"))] {
            let r = gate.call(m, path, token, b()).await;
            refused(&r, 401, "unauthorized");
            assert_eq!(
                r.headers
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{label} {m} {path}"
            );
        }
        let mut rb = gate
            .client
            .request(
                reqwest::Method::from_bytes(m.as_bytes()).unwrap(),
                format!("{}{path}", gate.base),
            )
            .header("authorization", format!("Basic {}", fx.admin.token));
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "Basic auth {m} {path}");
        assert!(r.headers().contains_key("www-authenticate"));
    }

    // Bodies: each POST endpoint with the token of the right kind.
    let posts: Vec<(&Who, String)> = vec![
        (&fx.agent, "/v1/proposals".into()),
        (&fx.alice, votes.clone()),
        (&fx.admin, "/v1/admin/freeze".into()),
        (&fx.admin, "/v1/admin/unfreeze".into()),
    ];
    for (who, path) in &posts {
        let t = Some(who.token.as_str());
        let good = br#"{"tenant_id": "acme"}"#.to_vec();
        for ct in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let r = gate
                .call("POST", path, t, Body::Raw(ct, good.clone()))
                .await;
            refused(&r, 415, "unsupported_media_type");
        }
        for (bytes, code) in [
            (b"{\"vote\": ".to_vec(), "invalid_json"),
            (b"not json".to_vec(), "invalid_json"),
            (b"".to_vec(), "invalid_json"),
            (
                b"{\"tenant_id\": \"acme\", \"tenant_id\": \"acme\"}".to_vec(),
                "duplicate_key",
            ),
            (b"{\"n\": 9007199254740993}".to_vec(), "number_out_of_range"),
            (b"{\"s\": \"\\ud800\"}".to_vec(), "invalid_json"),
            (
                vec![b'['; 100].into_iter().chain(vec![b']'; 100]).collect(),
                "too_deep",
            ),
            (
                format!("{{\"pad\": \"{}\"}}", "x".repeat(5000)).into_bytes(),
                "body_too_large",
            ),
        ] {
            let r = gate
                .call(
                    "POST",
                    path,
                    t,
                    Body::Raw(Some("application/json"), bytes.clone()),
                )
                .await;
            let status = if code == "body_too_large" { 413 } else { 400 };
            refused(&r, status, code);
        }
        let r = gate
            .call(
                "POST",
                path,
                t,
                Body::Raw(Some("application/json; charset=utf-8"), b"[1]".to_vec()),
            )
            .await;
        refused(&r, 400, "invalid_request");
        let r = gate
            .post(who, path, &json!({"tenant_id": TENANT, "colour": "red"}))
            .await;
        refused(&r, 400, "unknown_field");
    }

    // Proposals.
    let ok = |extra: Value| {
        let mut b = json!({"action": "charge_card", "payload": small(1, "a"), "nonce": "fresh-1"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let r = gate
        .propose(&fx.agent, &ok(json!({"tenant_id": OTHER_TENANT})))
        .await;
    refused(&r, 403, "tenant_mismatch");
    for (extra, what) in [
        (json!({"nonce": "bell\u{7}"}), "nonce"),
        (json!({"nonce": ""}), "nonce"),
        (json!({"nonce": "n".repeat(257)}), "nonce"),
        (json!({"nonce": 7}), "nonce"),
        (json!({"nonce": null}), "nonce"),
        (json!({"action": "charge card!"}), "action"),
        (json!({"action": "a".repeat(129)}), "action"),
        (json!({"action": ""}), "action"),
        (json!({"action": ["x"]}), "action"),
        (json!({"tenant_id": "ac me"}), "tenant"),
        (json!({"tenant_id": 3}), "tenant_id"),
    ] {
        let r = gate.propose(&fx.agent, &ok(extra.clone())).await;
        assert_eq!(r.status, 400, "{extra}: {r:?}");
        assert_eq!(r.code(), "invalid_request", "{extra}: {r:?}");
        assert!(
            r.body["detail"].as_str().unwrap().contains(what),
            "{extra}: the error does not name {what}: {r:?}"
        );
    }
    let r = gate
        .propose(&fx.agent, &ok(json!({"payload": "{not json"})))
        .await;
    refused(&r, 400, "invalid_payload");
    let r = gate.propose(&fx.alice, &ok(json!({}))).await;
    refused(&r, 403, "wrong_identity_kind");
    let r = gate.propose(&fx.admin, &ok(json!({}))).await;
    refused(&r, 403, "wrong_identity_kind");

    // Votes.
    for (body, code) in [
        (json!({"vote": "maybe", "reason": "r"}), "invalid_request"),
        (json!({"reason": "r"}), "invalid_request"),
        (json!({"vote": "approve", "reason": 5}), "invalid_request"),
        (
            json!({"vote": "approve", "reason": "r", "signature": 5}),
            "invalid_request",
        ),
        (
            json!({"vote": "approve", "reason": "x".repeat(2001)}),
            "invalid_request",
        ),
        (
            json!({"vote": "approve", "reason": "r", "weight": 2}),
            "unknown_field",
        ),
    ] {
        let r = gate.vote_body(&fx.alice, &p, &body).await;
        refused(&r, 400, code);
    }

    // Queries.
    for q in ["wait=abc", "wait=-1", "wait=1.5", "wait=", "colour=red"] {
        let r = gate
            .get(&fx.agent, &format!("/v1/proposals/{pid}?{q}"))
            .await;
        refused(&r, 400, "invalid_request");
    }
    let r = gate
        .get(&fx.alice, "/v1/proposals?status=pending&limit=5")
        .await;
    refused(&r, 400, "invalid_request");
    let r = gate.get(&fx.agent, "/v1/proposals/p_nope").await;
    refused(&r, 404, "unknown_proposal");
    let r = gate.get(&fx.agent, "/v1/decisions/d_nope").await;
    refused(&r, 404, "unknown_decision");
    // Ids that are not UTF-8, routes and methods that do not exist: the one error shape too.
    for (who, m, path) in [
        (&fx.agent, "GET", "/v1/proposals/%FF"),
        (&fx.alice, "POST", "/v1/proposals/%FF/votes"),
        (&fx.agent, "GET", "/v1/decisions/%FF"),
    ] {
        let body = json!({"vote": "approve", "reason": "r"});
        let b = if m == "POST" {
            Body::Json(&body)
        } else {
            Body::None
        };
        let r = gate.call(m, path, Some(&who.token), b).await;
        refused(&r, 400, "invalid_request");
    }
    let r = gate.get(&fx.agent, "/v1/nothing-here").await;
    refused(&r, 404, "not_found");
    for (m, path) in [
        ("GET", "/v1/admin/freeze"),
        ("DELETE", "/v1/proposals"),
        ("GET", &votes[..]),
        ("PUT", "/log/checkpoint"),
    ] {
        let r = gate.call(m, path, Some(&fx.admin.token), Body::None).await;
        refused(&r, 405, "method_not_allowed");
    }

    // Freeze.
    for (body, code) in [
        (json!({}), "invalid_request"),
        (json!({"agent_id": "agent"}), "invalid_request"),
        (json!({"tenant_id": 5}), "invalid_request"),
        (json!({"tenant_id": "a b"}), "invalid_request"),
        (
            json!({"tenant_id": TENANT, "agent_id": ""}),
            "invalid_request",
        ),
        (
            json!({"tenant_id": TENANT, "agent_id": 1}),
            "invalid_request",
        ),
    ] {
        for path in ["/v1/admin/freeze", "/v1/admin/unfreeze"] {
            let r = gate.post(&fx.admin, path, &body).await;
            refused(&r, 400, code);
        }
    }

    // Nothing changed: not the log, not the approvers' list, not the proposal — and nothing
    // was frozen.
    let after = (
        gate.log_size().await,
        gate.get(&fx.alice, "/v1/proposals?status=pending")
            .await
            .body,
        gate.proposal(&fx.agent, &pid).await,
    );
    assert_eq!(before, after);
    let r = gate
        .propose3(&fx.agent, "charge_card", small(1, "a"), "fresh-1")
        .await;
    assert_eq!(r.body["status"], "approved", "{r:?}");
    let log = gate.log();
    assert!(!log.contains("panicked"), "{log}");
    // Tokens are never logged in the clear, known or not.
    for token in [
        &fx.agent.token,
        &fx.alice.token,
        &fx.admin.token,
        "tok-nobody",
    ] {
        assert!(!log.contains(token), "a token is in the log:\n{log}");
    }
}

// ---- 7. the decision log -------------------------------------------------------------------

async fn decisions_are_logged_without_payloads(db: Db) {
    let fx = Fixture::new();
    let gate = Gate::start(&fx, &db.url(), &[]);
    let secret_to = "acct-SECRET-to-value";
    let secret_reason = "because-of-a-SECRET-reason";
    let pay = json!({"amount": 20_000, "currency": "XTS", "to": secret_to});
    let r = gate
        .propose(
            &fx.agent,
            &json!({"action": "charge_card", "payload": pay, "nonce": "log-1",
                    "context": {"reason": secret_reason}}),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let p = r.body;
    let r = gate.vote(&fx.alice, &p, "approve", secret_reason).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = gate.vote(&fx.bob, &p, "approve", secret_reason).await;
    assert_eq!(r.body["status"], "approved", "{r:?}");
    let done = r.body;

    // The proposal's first decision, read by its agent.
    let first = p["decision"]["decision_id"].as_str().unwrap();
    let r = gate.get(&fx.agent, &format!("/v1/decisions/{first}")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let e = &r.body["decision"];
    let keys: BTreeSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ENTRY_FIELDS.into_iter().collect::<BTreeSet<_>>(),
        "{e}"
    );
    assert_eq!(e["v"], 1);
    assert_eq!(e["kind"], "decision");
    assert_eq!(e["decision_id"], first);
    assert_eq!(e["proposal_id"], p["proposal_id"]);
    assert_eq!(e["tenant_id"], TENANT);
    assert_eq!(e["agent_id"], "agent");
    assert_eq!(e["action"], "charge_card");
    assert_eq!(e["nonce"], "log-1");
    assert_eq!(
        e["request_hash"],
        request_hash("charge_card", "log-1", &pay).as_str()
    );
    assert_eq!(
        e["intent_hash"],
        openexec_core::hash::intent_hash("charge_card", &pay).as_str()
    );
    assert_eq!(e["effect"], "require_approval");
    assert_eq!(e["code"], "approval_required");
    assert_eq!(e["rules"], json!(["charge_card.large"]));
    assert_eq!(e["policy_hash"], fx.policy_hash().as_str());
    assert_eq!(
        (&e["voter"], &e["vote"], &e["approval_id"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    assert!(
        e["logged_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{e}"
    );

    // The concluding decision names the approval.
    let last = done["decision"]["decision_id"].as_str().unwrap();
    let r = gate.get(&fx.alice, &format!("/v1/decisions/{last}")).await;
    assert_eq!(r.status, 200, "an approver of the tenant reads it: {r:?}");
    assert_eq!(r.body["decision"]["effect"], "allow");
    assert_eq!(
        r.body["decision"]["approval_id"],
        done["artifact"]["approval_id"]
    );

    // Hashes, never payloads, reasons or tokens: not in any entry of the log.
    let entries = gate.log_entries().await;
    assert!(
        entries.len() >= 5,
        "initial policy, decision, 2 votes, decision: {entries:?}"
    );
    for entry in &entries {
        let text = String::from_utf8(openexec_core::json::canonicalize(entry)).unwrap();
        for secret in [
            secret_to,
            secret_reason,
            "XTS",
            "\"amount\"",
            "20000",
            &fx.agent.token,
            &fx.alice.token,
        ] {
            assert!(!text.contains(secret), "'{secret}' is in the log: {text}");
        }
        let keys: BTreeSet<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ENTRY_FIELDS.into_iter().collect::<BTreeSet<_>>(),
            "{entry}"
        );
    }
    let votes: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "vote").collect();
    assert_eq!(
        votes
            .iter()
            .map(|v| v["voter"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["alice", "bob"]
    );

    // Once a checkpoint covers it, the answer carries an inclusion proof that checks offline.
    let keys_doc = gate.get_open("/keys").await.body;
    let verifier = note::parse_verifier_key(keys_doc["log"]["verifier_key"].as_str().unwrap())
        .expect("the log's verifier key");
    let r = eventually(Duration::from_secs(10), "an inclusion proof", || async {
        let r = gate.get(&fx.agent, &format!("/v1/decisions/{first}")).await;
        r.body.get("inclusion").is_some().then_some(r)
    })
    .await;
    let inc = &r.body["inclusion"];
    let index = inc["leaf_index"].as_u64().unwrap();
    assert_eq!(r.body["log_index"], index);
    let opened = note::open_note(inc["checkpoint"].as_str().unwrap(), &verifier)
        .expect("the checkpoint is signed by the decision log's key");
    let cp = Checkpoint::parse_body(&opened.body).unwrap();
    assert_eq!(inc["tree_size"], cp.size);
    let hashes: Vec<Hash> = inc["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    let leaf = openexec_core::json::canonicalize(&r.body["decision"]);
    verify_inclusion(&leaf_hash(&leaf), index, cp.size, &hashes, &cp.root)
        .expect("the inclusion proof checks");
    assert_eq!(entries[index as usize], r.body["decision"]);

    // Another tenant's tokens do not see it.
    for who in [&fx.other_agent, &fx.mallory] {
        let r = gate.get(who, &format!("/v1/decisions/{first}")).await;
        refused(&r, 404, "unknown_decision");
    }
}
both_backends!(decisions_are_logged_without_payloads);
