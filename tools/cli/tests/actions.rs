//! Declared actions (SPEC §10) through `openexec serve`: the registry file named by
//! `OPENEXEC_ACTIONS`, `GET /actions` in its three forms, payload schemas checked before
//! anything is claimed, and a bad registry stopping start-up with a message naming the action and
//! key. The kinds' own behaviour is in `actions_http.rs`, `actions_wasm.rs` and
//! `actions_command.rs`.

mod common;

use common::*;
use serde_json::{json, Value};

const REGISTRY: &str = r#"
[actions.charge_card]
kind = "builtin"
description = "Charge a card (stands in: echoes the charge)"
schema = { type = "object", required = ["amount", "currency", "to"], additionalProperties = false, properties = { amount = { type = "integer", minimum = 1 }, currency = { type = "string", enum = ["EUR", "USD"] }, to = { type = "string", minLength = 1 } } }
timeout_ms = 5000
[actions.charge_card.builtin]
handler = "echo"

[actions.delete_resource]
kind = "builtin"
description = "Delete a resource"
schema_file = "schemas/delete.json"
min_approvers = 2
[actions.delete_resource.builtin]
handler = "echo"
"#;

fn registry_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("schemas")).unwrap();
    std::fs::write(
        d.path().join("schemas/delete.json"),
        json!({"type": "object", "required": ["env", "id"], "properties": {"env": {"enum": ["dev", "prod"]}, "id": {"type": "string"}}}).to_string(),
    )
    .unwrap();
    std::fs::write(d.path().join("actions.toml"), REGISTRY).unwrap();
    d
}

fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

#[tokio::test]
async fn get_actions_lists_what_may_run_in_three_forms() {
    let d = registry_dir();
    let file = d.path().join("actions.toml");
    let s = Server::start(&[
        ("OPENEXEC_ACTIONS", file.to_str().unwrap()),
        (
            "OPENEXEC_ALLOWED_ACTIONS",
            "charge_card,delete_resource,echo",
        ),
    ]);
    let (st, list) = s.get("/actions").await;
    assert_eq!(st, 200, "{list}");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    // Sorted, and only what the allow-list lets run (add and sleep are registered, not allowed).
    assert_eq!(names, ["charge_card", "delete_resource", "echo"]);

    let charge = by_name(&list, "charge_card");
    assert_eq!(charge["kind"], "builtin");
    assert_eq!(
        charge["description"],
        "Charge a card (stands in: echoes the charge)"
    );
    assert_eq!(
        charge["input_schema"]["required"],
        json!(["amount", "currency", "to"])
    );
    assert_eq!(charge["effects"], false);
    assert_eq!(charge["min_approvers"], 0);
    assert_eq!(charge["digest"].as_str().unwrap().len(), 64);
    let del = by_name(&list, "delete_resource");
    assert_eq!(del["min_approvers"], 2);
    assert_eq!(del["input_schema"]["required"], json!(["env", "id"]));
    assert_ne!(del["digest"], charge["digest"]);
    assert_eq!(by_name(&list, "echo")["kind"], "builtin");

    let (st, openai) = s.get("/actions?format=openai").await;
    assert_eq!(st, 200, "{openai}");
    let fns = openai.as_array().unwrap();
    assert_eq!(fns.len(), 3);
    for (f, a) in fns.iter().zip(list.as_array().unwrap()) {
        assert_eq!(f["type"], "function");
        assert_eq!(f["function"]["name"], a["name"]);
        assert_eq!(f["function"]["description"], a["description"]);
        assert_eq!(f["function"]["parameters"], a["input_schema"]);
    }

    let (st, mcp) = s.get("/actions?format=mcp").await;
    assert_eq!(st, 200, "{mcp}");
    let tools = mcp["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 3);
    for (t, a) in tools.iter().zip(list.as_array().unwrap()) {
        assert_eq!(t["name"], a["name"]);
        assert_eq!(t["description"], a["description"]);
        assert_eq!(t["inputSchema"], a["input_schema"]);
    }

    let (st, b) = s.get("/actions?format=yaml").await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(code(&b), "invalid_request");
    assert!(detail(&b).contains("yaml"), "{b}");

    // The receipt pins the digest /actions publishes.
    let (st, r) = s
        .execute(&json!({"action": "charge_card", "payload": {"amount": 5, "currency": "EUR", "to": "bob"}, "nonce": "c1"}))
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        r["evidence"]["receipt"]["handler"],
        json!({"name": "builtin:charge_card", "digest": charge["digest"]})
    );
    assert_eq!(
        r["result"],
        json!({"echo": {"amount": 5, "currency": "EUR", "to": "bob"}})
    );
}

#[tokio::test]
async fn a_payload_off_its_schema_is_refused_with_every_failing_place_and_uses_no_nonce() {
    let d = registry_dir();
    let file = d.path().join("actions.toml");
    let s = Server::start(&[("OPENEXEC_ACTIONS", file.to_str().unwrap())]);
    let bad = json!({"action": "charge_card", "payload": {"amount": 0, "currency": "GBP", "memo": 1}, "nonce": "n1"});
    let (st, b) = s.execute(&bad).await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(code(&b), "invalid_payload");
    let details = b["error"]["details"].as_array().expect("error.details");
    let got: Vec<(String, String)> = details
        .iter()
        .map(|v| {
            (
                v["path"].as_str().unwrap().to_string(),
                v["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (path, rule) in [
        ("/amount", "minimum"),
        ("/currency", "enum"),
        ("/to", "required"),
        ("", "additionalProperties"),
    ] {
        assert!(
            got.contains(&(path.to_string(), rule.to_string())),
            "{path} {rule} not in {got:?}"
        );
    }
    assert!(details.iter().all(|v| v["message"].is_string()));
    let receipt = &b["evidence"]["receipt"];
    assert_eq!(receipt["status"], "rejected", "{b}");
    assert_eq!(receipt["code"], "invalid_payload", "{b}");
    check_evidence(&b["evidence"], &s.keys().await).unwrap();
    assert_eq!(s.handler_runs("charge_card").await, 0);

    // The nonce was not used up: the same nonce with a good payload runs.
    let good = json!({"action": "charge_card", "payload": {"amount": 1, "currency": "USD", "to": "x"}, "nonce": "n1"});
    let (st, b) = s.execute(&good).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["status"], "executed");

    // A schema from a file is enforced the same way.
    let (st, b) = s
        .execute(&json!({"action": "delete_resource", "payload": {"env": "staging", "id": "x"}, "nonce": "d1"}))
        .await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(b["error"]["details"][0]["path"], "/env");
    assert_eq!(b["error"]["details"][0]["rule"], "enum");
}

#[test]
fn each_bad_registry_stops_start_up_with_its_message() {
    let schema = "schema = { type = \"object\" }";
    let tail = "[actions.a.builtin]\nhandler = \"echo\"\n";
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("[actions.a]\nkind = \"builtin\"\n{schema}\nretries = 3\n{tail}"),
            vec!["actions.a:", "unknown key 'retries'"],
        ),
        (
            format!("[actions.a]\nkind = \"smtp\"\n{schema}\n"),
            vec!["actions.a:", "unknown kind 'smtp'"],
        ),
        (
            format!("[actions.a]\nkind = \"builtin\"\n{tail}"),
            vec!["actions.a:", "schema: missing"],
        ),
        (
            format!("[actions.a]\nkind = \"builtin\"\nschema = {{ type = \"object\", properties = {{ x = {{ minimum = \"one\" }} }} }}\n{tail}"),
            vec!["actions.a:", "not a valid JSON Schema"],
        ),
        (
            format!("[actions.a]\nkind = \"builtin\"\n{schema}\n[actions.a.builtin]\nhandler = \"shell\"\n"),
            vec!["actions.a:", "builtin: handler: unknown built-in 'shell'"],
        ),
        (
            format!("[actions.Echo]\nkind = \"builtin\"\n{schema}\n[actions.Echo.builtin]\nhandler = \"echo\"\n"),
            vec!["actions.Echo:", "collides with 'echo'"],
        ),
        ("[actions.a\nkind = 1".to_string(), vec!["actions.toml"]),
    ];
    for (text, wants) in cases {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("actions.toml");
        std::fs::write(&file, &text).unwrap();
        let f = match Server::try_start(&[("OPENEXEC_ACTIONS", file.to_str().unwrap())]) {
            Ok(_) => panic!("started with a bad registry:\n{text}"),
            Err(f) => f,
        };
        assert!(
            f.status.is_some_and(|s| !s.success()),
            "should exit with an error: {f:?}"
        );
        assert!(f.log.contains("action registry "), "{}", f.log);
        for w in wants {
            assert!(
                f.log.contains(w),
                "{w:?} not in the log for\n{text}\n{}",
                f.log
            );
        }
    }
    // A registry file that does not exist is named.
    let f = Server::try_start(&[("OPENEXEC_ACTIONS", "/nonexistent/actions.toml")])
        .err()
        .expect("should not start");
    assert!(
        f.log.contains("/nonexistent/actions.toml") && f.log.contains("cannot read"),
        "{}",
        f.log
    );
}

#[tokio::test]
async fn health_lists_outbound_destinations_and_kinds() {
    let s = Server::start(&[]);
    let (st, h) = s.get("/health").await;
    assert_eq!(st, 200, "{h}");
    // The built-ins reach nothing outside.
    assert_eq!(h["outbound"], json!([]), "{h}");
    assert!(h["handler_kinds"].is_object(), "{h}");
}

/// In clawshield mode an action with an approval floor (`min_approvers`) is refused whatever
/// the artifact says until its signatures can be checked against a pinned approver roster:
/// a single gate key must never approve it alone (SPEC §4). Demo mode ignores the floor.
#[tokio::test]
async fn an_approval_floor_is_never_met_by_one_gate_signature() {
    use chrono::{Duration, Utc};
    use openexec_core::artifact::{sign_v1, V1Params};
    let d = registry_dir();
    let file = d.path().join("actions.toml");
    let s = clawshield_server(&[("OPENEXEC_ACTIONS", file.to_str().unwrap())]);
    let sk = vector_signing_key();
    let now = Utc::now();
    let art = |action: &str, payload: &Value, nonce: &str| {
        sign_v1(
            &V1Params {
                approval_id: nonce,
                tenant_id: "tenant-001",
                action,
                payload,
                nonce,
                issued_at: now - Duration::minutes(1),
                expires_at: now + Duration::minutes(5),
                decision_id: None,
                policy_hash: None,
            },
            &sk,
        )
    };
    let del = json!({"env": "prod", "id": "db-1"});
    let (st, b) = s
        .execute(&json!({"action": "delete_resource", "payload": del, "nonce": "d1", "approval_artifact": art("delete_resource", &del, "d1")}))
        .await;
    assert_eq!(st, 403, "{b}");
    assert_eq!(code(&b), "approval_quorum_unmet");
    assert!(detail(&b).contains("2 approver signatures"), "{b}");
    assert_eq!(b["evidence"]["receipt"]["status"], "rejected");
    assert_eq!(s.handler_runs("delete_resource").await, 0);

    // Without a floor the same gate signature is enough.
    let pay = json!({"amount": 5, "currency": "EUR", "to": "bob"});
    let (st, b) = s
        .execute(&json!({"action": "charge_card", "payload": pay, "nonce": "c1", "approval_artifact": art("charge_card", &pay, "c1")}))
        .await;
    assert_eq!(st, 200, "{b}");

    // Demo mode ignores the floor (SPEC §4).
    let demo = Server::start(&[("OPENEXEC_ACTIONS", file.to_str().unwrap())]);
    let (st, b) = demo
        .execute(&json!({"action": "delete_resource", "payload": del, "nonce": "d1"}))
        .await;
    assert_eq!(st, 200, "{b}");
}

/// With a pinned roster (SPEC §4), a floor and a quorum are met only by valid signatures of
/// distinct roster approvers; the roster itself must verify against ClawShield's key.
#[tokio::test]
async fn a_pinned_roster_decides_floors_and_quorums() {
    use chrono::{Duration, Utc};
    use openexec_core::artifact::{sign_v1_object, vote_message};
    use openexec_core::keys::{key_id, sign_b64, signing_key_from_seed, verifying_key_b64};
    let gate = vector_signing_key();
    let approver = |n: u8| signing_key_from_seed([n; 32]);
    let entry = |id: &str, g: &str, n: u8| {
        let pk = approver(n).verifying_key();
        json!({"id": id, "groups": [g], "key_id": key_id(&pk), "public_key": verifying_key_b64(&pk)})
    };
    let roster = openexec_core::roster::sign_roster(
        json!({"v": 1, "roster_version": 1, "approvers": [entry("alice", "finance", 1), entry("bob", "finance", 2), entry("carol", "ops", 3)]})
            .as_object()
            .unwrap()
            .clone(),
        &gate,
    );
    let d = registry_dir();
    std::fs::write(d.path().join("roster.json"), roster.to_string()).unwrap();
    let file = d.path().join("actions.toml");
    let roster_file = d.path().join("roster.json");
    let s = clawshield_server(&[
        ("OPENEXEC_ACTIONS", file.to_str().unwrap()),
        ("OPENEXEC_APPROVER_ROSTER", roster_file.to_str().unwrap()),
        ("OPENEXEC_MIN_APPROVERS", "echo=1"),
    ]);
    let now = Utc::now();
    let art = |action: &str, payload: &Value, nonce: &str, voters: &[(&str, u8)], quorum: Value| {
        let rh = openexec_core::hash::request_hash(action, nonce, payload, "tenant-001");
        let approvers: Vec<Value> = voters
            .iter()
            .map(|(id, n)| json!({"id": id, "key_id": key_id(&approver(*n).verifying_key()), "signature": sign_b64(&approver(*n), &vote_message(&rh, id))}))
            .collect();
        let m = json!({"v": 1, "approval_id": nonce, "tenant_id": "tenant-001", "action": action,
            "request_hash": rh, "intent_hash": openexec_core::hash::intent_hash(action, payload),
            "nonce": nonce, "issued_at": openexec_core::time::format_rfc3339(now - Duration::minutes(1)),
            "expires_at": openexec_core::time::format_rfc3339(now + Duration::minutes(5)),
            "decision_id": null, "policy_hash": null, "approvers": approvers, "quorum": quorum});
        sign_v1_object(m.as_object().unwrap().clone(), &gate)
    };
    let run = |action: &'static str,
               payload: Value,
               nonce: &'static str,
               voters: Vec<(&'static str, u8)>,
               quorum: Value| {
        let a = art(action, &payload, nonce, &voters, quorum);
        let body =
            json!({"action": action, "payload": payload, "nonce": nonce, "approval_artifact": a});
        let s = &s;
        async move { s.execute(&body).await }
    };
    let del = json!({"env": "prod", "id": "db-1"});
    // delete_resource's floor is 2 (registry): one vote is not enough, two are, a repeated one
    // counts once, a vote by a key not on the roster does not count.
    let (st, b) = run(
        "delete_resource",
        del.clone(),
        "d1",
        vec![("alice", 1)],
        Value::Null,
    )
    .await;
    assert_eq!((st, code(&b)), (403, "approval_quorum_unmet"), "{b}");
    let (st, b) = run(
        "delete_resource",
        del.clone(),
        "d2",
        vec![("alice", 1), ("alice", 1)],
        Value::Null,
    )
    .await;
    assert_eq!((st, code(&b)), (403, "approval_quorum_unmet"), "{b}");
    let (st, b) = run(
        "delete_resource",
        del.clone(),
        "d3",
        vec![("alice", 1), ("bob", 9)],
        Value::Null,
    )
    .await;
    assert_eq!((st, code(&b)), (403, "approval_quorum_unmet"), "{b}");
    let (st, b) = run(
        "delete_resource",
        del.clone(),
        "d4",
        vec![("alice", 1), ("carol", 3)],
        Value::Null,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    // echo's floor is 1 (OPENEXEC_MIN_APPROVERS).
    let (st, b) = run("echo", json!({}), "e1", vec![], Value::Null).await;
    assert_eq!((st, code(&b)), (403, "approval_quorum_unmet"), "{b}");
    let (st, b) = run("echo", json!({}), "e2", vec![("bob", 2)], Value::Null).await;
    assert_eq!(st, 200, "{b}");
    // The artifact's own quorum: two of finance; carol (ops) does not count for it.
    let pay = json!({"amount": 5, "currency": "EUR", "to": "bob"});
    let q = json!({"min": 2, "groups": ["finance"]});
    let (st, b) = run(
        "charge_card",
        pay.clone(),
        "c1",
        vec![("alice", 1), ("carol", 3)],
        q.clone(),
    )
    .await;
    assert_eq!((st, code(&b)), (403, "approval_quorum_unmet"), "{b}");
    let (st, b) = run(
        "charge_card",
        pay.clone(),
        "c2",
        vec![("alice", 1), ("bob", 2)],
        q,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    drop(s);

    // A roster not signed by the configured ClawShield key stops the start.
    let forged = openexec_core::roster::sign_roster(
        roster.as_object().unwrap().clone(),
        &signing_key_from_seed([42; 32]),
    );
    std::fs::write(&roster_file, forged.to_string()).unwrap();
    let v = load_vector("legacy_v0.json");
    let env = clawshield_env(v["public_key_pem"].as_str().unwrap());
    let mut e = env_ref(&env);
    e.push(("OPENEXEC_APPROVER_ROSTER", roster_file.to_str().unwrap()));
    let f = Server::try_start(&e)
        .err()
        .expect("started with a forged roster");
    assert!(f.log.contains("OPENEXEC_APPROVER_ROSTER"), "{}", f.log);
}
