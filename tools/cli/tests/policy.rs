//! `openexec policy check|eval|test` on the example bundle (`examples/policy/`, SPEC §9) and on
//! broken ones: exit codes, the printed hash and decision, failing tests named.

mod common;

use common::*;
use serde_json::{json, Value};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policy");

#[test]
fn check_prints_the_hash_and_refuses_a_broken_bundle() {
    let o = cli(&["policy", "check", EXAMPLE]);
    assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let hash = v["policy_hash"].as_str().unwrap();
    assert_eq!(
        hash,
        openexec_policy::Bundle::load(EXAMPLE)
            .unwrap()
            .policy_hash()
    );

    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.rego"),
        "package clawshield\n\ndecision := {\n",
    )
    .unwrap();
    let o = cli(&["policy", "check", d.path().to_str().unwrap()]);
    assert_eq!(exit_code(&o), 1);
    assert!(stderr(&o).contains("p.rego"), "{}", stderr(&o));
}

#[test]
fn eval_prints_the_decision_and_the_rules_that_fired() {
    let d = tempfile::tempdir().unwrap();
    let case = |name: &str, input: Value| {
        let f = d.path().join(name);
        std::fs::write(&f, input.to_string()).unwrap();
        let o = cli(&["policy", "eval", EXAMPLE, f.to_str().unwrap()]);
        assert_eq!(exit_code(&o), 0, "{}", stderr(&o));
        serde_json::from_str::<Value>(&stdout(&o)).unwrap()
    };
    let limits = json!({"budget": {"used": 0, "left": 100_000_000}});
    let small = case(
        "small.json",
        json!({"action": "charge_card", "tenant_id": "t", "payload": {"amount": 500, "currency": "EUR", "to": "bob"}, "limits": limits}),
    );
    assert_eq!(small["effect"], "allow", "{small}");
    assert!(!small["rules"].as_array().unwrap().is_empty(), "{small}");
    let large = case(
        "large.json",
        json!({"action": "charge_card", "tenant_id": "t", "payload": {"amount": 20000, "currency": "EUR", "to": "bob"}, "limits": limits}),
    );
    assert_eq!(large["effect"], "require_approval", "{large}");
    assert_eq!(large["approval"]["min"], 2);
    assert_eq!(large["approval"]["groups"], json!(["finance"]));
    let other = case(
        "other.json",
        json!({"action": "shutdown_everything", "tenant_id": "t", "payload": {}, "limits": limits}),
    );
    assert_eq!(other["effect"], "deny", "{other}");
    assert_eq!(other["code"], "policy_denied");

    // Bad input JSON is a usage error naming the file.
    let bad = d.path().join("bad.json");
    std::fs::write(&bad, "{\"a\": 1, \"a\": 2}").unwrap();
    let o = cli(&["policy", "eval", EXAMPLE, bad.to_str().unwrap()]);
    assert_eq!(exit_code(&o), 2);
    assert!(stderr(&o).contains("bad.json"), "{}", stderr(&o));
}

#[test]
fn test_runs_the_rego_tests_and_names_a_failing_one() {
    let o = cli(&["policy", "test", EXAMPLE]);
    assert_eq!(exit_code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(" 0 failed"), "{}", stdout(&o));

    let d = tempfile::tempdir().unwrap();
    for f in ["policy.rego", "policy_test.rego"] {
        std::fs::copy(format!("{EXAMPLE}/{f}"), d.path().join(f)).unwrap();
    }
    std::fs::write(
        d.path().join("extra_test.rego"),
        "package clawshield_extra_test\n\ntest_always_wrong if {\n\tfalse\n}\n",
    )
    .unwrap();
    let o = cli(&["policy", "test", d.path().to_str().unwrap()]);
    assert_eq!(exit_code(&o), 1);
    assert!(
        stdout(&o).contains("FAIL data.clawshield_extra_test.test_always_wrong"),
        "{}",
        stdout(&o)
    );
}
