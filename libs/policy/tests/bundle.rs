use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use openexec_policy::{evaluate_or_deny, Bundle, Decision, Effect, PolicyError};
use serde_json::{json, Value};

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policy")
}

fn example() -> Bundle {
    Bundle::load(example_dir()).expect("example bundle loads")
}

fn copy_example(to: &Path) {
    for f in ["policy.rego", "policy_test.rego"] {
        std::fs::copy(example_dir().join(f), to.join(f)).unwrap();
    }
}

fn charge(amount: Value, used: u64) -> Value {
    json!({
        "action": "charge_card",
        "payload": {"amount": amount, "currency": "EUR", "to": "acct-1"},
        "tenant_id": "t1",
        "intent_hash": "00",
        "request_hash": "11",
        "context": {"reason": "test"},
        "agent": {"id": "agent-1", "tenant_id": "t1", "on_behalf_of": null},
        "limits": {"rate": {"count": 1}, "loop": {"same_request": 0},
                   "budget": {"used": used, "left": 100000000 - used}}
    })
}

fn bundle_of(policy: &str) -> Result<Bundle, PolicyError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.rego"), policy).unwrap();
    Bundle::load(dir.path())
}

fn assert_policy_error(d: &Decision) {
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
    assert_eq!(d.code, "policy_error", "{d:?}");
    assert!(!d.reasons.is_empty());
}

#[test]
fn example_loads_and_hash_is_stable() {
    let a = example();
    let b = example();
    assert_eq!(a.policy_hash(), b.policy_hash());
    assert_eq!(a.policy_hash().len(), 64);
    assert_eq!(a.files().len(), 2);
    // The documented bytes: JCS of {"files": {...}, "data": null}.
    let files: serde_json::Map<String, Value> = ["policy.rego", "policy_test.rego"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(example_dir().join(f)).unwrap();
            (f.to_string(), Value::String(text))
        })
        .collect();
    let expect = openexec_core::json::jcs_sha256(&json!({"files": files, "data": null}));
    assert_eq!(a.policy_hash(), expect);

    // A copy elsewhere hashes the same; a changed file, an added data.json, changes it.
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path());
    assert_eq!(
        Bundle::load(dir.path()).unwrap().policy_hash(),
        a.policy_hash()
    );
    let p = dir.path().join("policy_test.rego");
    let mut t = std::fs::read_to_string(&p).unwrap();
    t.push_str("\n# changed\n");
    std::fs::write(&p, t).unwrap();
    let changed = Bundle::load(dir.path()).unwrap();
    assert_ne!(changed.policy_hash(), a.policy_hash());
    std::fs::write(dir.path().join("data.json"), br#"{"x": 1}"#).unwrap();
    let with_data = Bundle::load(dir.path()).unwrap();
    assert_ne!(with_data.policy_hash(), changed.policy_hash());
    assert_eq!(with_data.data(), Some(&json!({"x": 1})));
}

#[test]
fn example_rego_tests_pass() {
    let report = example().test();
    for r in &report.results {
        assert!(r.passed, "{} failed: {:?}", r.name, r.message);
    }
    assert!(report.results.len() >= 10, "{report:?}");
    assert!(report.ok());
}

#[test]
fn failing_rego_test_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path());
    std::fs::create_dir(dir.path().join("more")).unwrap();
    std::fs::write(
        dir.path().join("more/extra_test.rego"),
        "package extra_test\n\nimport rego.v1\n\ntest_wrong if {\n\tdata.clawshield.decision.effect == \"allow\" with input as {\"action\": \"nope\"}\n}\n\ntest_right if {\n\tdata.clawshield.decision.effect == \"deny\" with input as {\"action\": \"nope\"}\n}\n",
    )
    .unwrap();
    let b = Bundle::load(dir.path()).unwrap();
    assert!(b.files().contains_key("more/extra_test.rego"));
    let report = b.test();
    assert_eq!(report.failed(), 1, "{report:?}");
    let wrong = report
        .results
        .iter()
        .find(|r| r.name == "data.extra_test.test_wrong")
        .unwrap();
    assert!(!wrong.passed);
    assert!(report
        .results
        .iter()
        .any(|r| r.name == "data.extra_test.test_right" && r.passed));
}

#[test]
fn example_decisions() {
    let b = example();

    let d = b.evaluate(&charge(json!(9999), 0));
    assert_eq!(
        (d.effect, d.code.as_str()),
        (Effect::Allow, "policy_allowed"),
        "{d:?}"
    );
    assert_eq!(d.cost, 9999);
    assert_eq!(d.policy_hash.as_deref(), Some(b.policy_hash()));

    let d = b.evaluate(&charge(json!(10000), 0));
    assert_eq!(d.effect, Effect::RequireApproval, "{d:?}");
    assert_eq!(d.code, "approval_required");
    let a = d.approval.unwrap();
    assert_eq!(
        (a.min, a.groups.clone(), a.deny_threshold),
        (2, vec!["finance".to_string()], 1)
    );
    assert_eq!(d.cost, 10000);

    let d = b.evaluate(&charge(json!(100), 99_999_950));
    assert_eq!(
        (d.effect, d.code.as_str()),
        (Effect::Deny, "policy_denied"),
        "{d:?}"
    );
    assert_eq!(d.rules, vec!["charge_card.daily_budget".to_string()]);

    let d = b.evaluate(&charge(json!("12"), 0));
    assert_eq!(
        (d.effect, d.code.as_str()),
        (Effect::Deny, "policy_denied"),
        "{d:?}"
    );

    let prod = json!({"action": "delete_resource", "payload": {"env": "prod", "id": "db-1"}, "tenant_id": "t1"});
    let d = b.evaluate(&prod);
    assert_eq!(d.effect, Effect::RequireApproval, "{d:?}");
    let a = d.approval.unwrap();
    assert_eq!(
        (a.min, a.groups, a.deny_threshold),
        (2, vec!["ops".to_string()], 1)
    );

    let staging = json!({"action": "delete_resource", "payload": {"env": "staging", "id": "db-1"}});
    let d = b.evaluate(&staging);
    assert_eq!(
        (d.effect, d.code.as_str()),
        (Effect::Deny, "policy_denied"),
        "{d:?}"
    );

    let act = json!({"action": "clawshield.policy.activate", "payload": {"policy_hash": "ab"}});
    let d = b.evaluate(&act);
    assert_eq!(d.effect, Effect::RequireApproval, "{d:?}");
    let a = d.approval.unwrap();
    assert_eq!(a.min, 2);
    assert_eq!(a.groups, vec!["finance".to_string(), "ops".to_string()]);

    let d = b.evaluate(&json!({"action": "launch_rocket", "payload": {}}));
    assert_eq!(
        (d.effect, d.code.as_str()),
        (Effect::Deny, "policy_denied"),
        "{d:?}"
    );
    assert_eq!(d.rules, vec!["default_deny".to_string()]);

    // Not even an object: still a decision.
    let d = b.evaluate(&json!("junk"));
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
}

#[test]
fn no_bundle_and_missing_dir_fail_closed() {
    assert_policy_error(&evaluate_or_deny(None, &json!({})));
    let err = Bundle::load("/nonexistent/policy/dir").unwrap_err();
    assert!(matches!(err, PolicyError::Io { .. }), "{err}");
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        Bundle::load(empty.path()),
        Err(PolicyError::Empty(_))
    ));
}

#[test]
fn syntax_error_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path());
    std::fs::write(
        dir.path().join("broken.rego"),
        "package broken\n\nimport rego.v1\n\nx := {\n",
    )
    .unwrap();
    let err = Bundle::load(dir.path()).unwrap_err();
    let msg = err.to_string();
    eprintln!("syntax error: {msg}");
    assert!(matches!(err, PolicyError::Compile { .. }), "{msg}");
    assert!(msg.contains("broken.rego"), "{msg}");
    assert!(msg.contains(":5:") || msg.contains(":6:"), "{msg}");
}

#[test]
fn bad_data_json_and_no_decision_rule_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path());
    std::fs::write(dir.path().join("data.json"), br#"{"a": 1, "a": 2}"#).unwrap();
    assert!(matches!(
        Bundle::load(dir.path()),
        Err(PolicyError::Data(_))
    ));
    let err = bundle_of("package other\n\nimport rego.v1\n\ndecision := 1\n").unwrap_err();
    assert!(matches!(err, PolicyError::NoDecisionRule), "{err}");
}

#[test]
fn evaluation_error_is_policy_error() {
    // Two complete definitions with different values: a conflict at evaluation time.
    let b = bundle_of(
        "package clawshield\n\nimport rego.v1\n\ndecision := {\"effect\": \"allow\"} if input.a\n\ndecision := {\"effect\": \"deny\"} if input.a\n",
    )
    .unwrap();
    assert_policy_error(&b.evaluate(&json!({"a": true})));
    // Undefined decision.
    assert_policy_error(&b.evaluate(&json!({"a": false})));
    // A strict builtin error.
    let b = bundle_of(
        "package clawshield\n\nimport rego.v1\n\ndecision := {\"effect\": \"allow\", \"cost\": to_number(input.n)}\n",
    )
    .unwrap();
    assert_eq!(b.evaluate(&json!({"n": "5"})).cost, 5);
    assert_policy_error(&b.evaluate(&json!({"n": "not a number"})));
}

#[test]
fn malformed_outputs_are_policy_error() {
    for body in [
        r#"{"effect": "maybe"}"#,
        r#"{"effect": "allow", "extra": 1}"#,
        r#"{"effect": "allow", "reasons": "one"}"#,
        r#"{"effect": "allow", "rules": [1]}"#,
        r#"{"effect": "require_approval"}"#,
        r#"{"effect": "require_approval", "approval": {"min": 0, "groups": ["ops"]}}"#,
        r#"{"effect": "require_approval", "approval": {"min": 2, "groups": []}}"#,
        r#"{"effect": "require_approval", "approval": {"min": 2, "groups": ["ops"], "quorum": 3}}"#,
        r#"{"effect": "allow", "cost": -1}"#,
        r#"{"effect": "allow", "expires_in_seconds": 0}"#,
        r#""allow""#,
        r#"true"#,
    ] {
        let b = bundle_of(&format!(
            "package clawshield\n\nimport rego.v1\n\ndecision := {body}\n"
        ))
        .unwrap();
        let d = b.evaluate(&json!({}));
        assert_policy_error(&d);
        assert_eq!(d.policy_hash.as_deref(), Some(b.policy_hash()));
    }
    // The same shapes done right are accepted.
    let b = bundle_of("package clawshield\n\nimport rego.v1\n\ndecision := {\"effect\": \"require_approval\", \"approval\": {\"min\": 1, \"groups\": [\"ops\"]}, \"expires_in_seconds\": 60}\n").unwrap();
    let d = b.evaluate(&json!({}));
    assert_eq!(d.effect, Effect::RequireApproval, "{d:?}");
    let a = d.approval.unwrap();
    assert_eq!(
        (a.deny_threshold, a.ttl_seconds, a.reason_required),
        (1, 3600, false)
    );
    assert_eq!(d.expires_in_seconds, Some(60));
}

#[test]
fn looping_policy_is_cut_off() {
    // 10^10 iterations: hours without a limit.
    let b = bundle_of(
        "package clawshield\n\nimport rego.v1\n\nn := count([1 | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); i != j])\n\ndecision := {\"effect\": \"allow\", \"cost\": n}\n",
    )
    .unwrap()
    .with_time_limit(Duration::from_millis(200));
    let start = Instant::now();
    let d = b.evaluate(&json!({}));
    let took = start.elapsed();
    assert_policy_error(&d);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    eprintln!("loop cut off after {took:?}: {}", d.reasons[0]);
    assert!(d.reasons[0].contains("time limit"), "{d:?}");
    // A looping Rego test fails, within its limit, too.
    let start = Instant::now();
    let b = bundle_of(
        "package clawshield\n\nimport rego.v1\n\ndecision := {\"effect\": \"deny\"}\n\ntest_slow if count([1 | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000)]) > 0\n",
    )
    .unwrap()
    .with_time_limit(Duration::from_millis(200));
    let report = b.test();
    assert_eq!(report.failed(), 1, "{report:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn bundle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Bundle>();
    let b = std::sync::Arc::new(example());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let b = b.clone();
            std::thread::spawn(move || b.evaluate(&charge(json!(100 + i), 0)).effect)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Effect::Allow);
    }
}
