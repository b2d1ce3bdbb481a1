use super::*;

fn loader() -> Loader {
    Loader::new().with_kind(Arc::new(openexec_builtin::Builtins))
}

const PAY: &str = r#"
[actions.pay]
kind = "builtin"
description = "Pay someone"
schema = { type = "object", required = ["amount", "to"], additionalProperties = false, properties = { amount = { type = "integer", minimum = 1 }, to = { type = "string" } } }
timeout_ms = 5000
min_approvers = 2
[actions.pay.builtin]
handler = "echo"
"#;

fn load(text: &str) -> Result<Registry, RegistryError> {
    let mut r = openexec_builtin::registry();
    loader().load_str(text, Path::new("/nonexistent"), "actions.toml", &mut r)?;
    Ok(r)
}

fn refusal(text: &str) -> String {
    let mut r = openexec_builtin::registry();
    let before: Vec<String> = r.actions().map(String::from).collect();
    let e = loader()
        .load_str(text, Path::new("/nonexistent"), "actions.toml", &mut r)
        .expect_err("the file should be refused")
        .to_string();
    let after: Vec<String> = r.actions().map(String::from).collect();
    assert_eq!(before, after, "a refused file registers nothing");
    assert!(e.starts_with("action registry actions.toml: "), "{e}");
    e
}

#[test]
fn a_declared_action_has_its_schema_floor_limits_and_a_digest_of_its_entry() {
    let r = load(PAY).unwrap();
    let a = r.entry("pay").unwrap();
    assert_eq!(a.min_approvers, 2);
    let h = &a.handler;
    assert_eq!(h.name(), "builtin:pay");
    assert_eq!(h.kind(), "builtin");
    assert_eq!(h.description(), "Pay someone");
    assert_eq!(h.timeout(), Duration::from_millis(5000));
    assert!(!h.effects(), "echo's default: no effects");
    assert_eq!(h.input_schema()["required"], json!(["amount", "to"]));
    let canonical = json!({
        "kind": "builtin", "description": "Pay someone",
        "schema": h.input_schema(), "timeout_ms": 5000, "effects": false, "min_approvers": 2,
        "builtin": {"handler": "echo"},
    });
    assert_eq!(h.digest(), openexec_core::json::jcs_sha256(&canonical));
    // The built-ins are still there beside it.
    assert!(r.get("echo").is_some());

    // Any change to the entry changes the digest; the same entry written differently does not.
    let same = PAY.replace("timeout_ms = 5000", "timeout_ms = 5_000");
    assert_eq!(
        load(&same).unwrap().get("pay").unwrap().digest(),
        h.digest()
    );
    for changed in [
        PAY.replace("Pay someone", "Pay"),
        PAY.replace("minimum = 1", "minimum = 2"),
        PAY.replace("timeout_ms = 5000", "timeout_ms = 5001"),
        PAY.replace("min_approvers = 2", "min_approvers = 3"),
        PAY.replace("kind = \"builtin\"", "kind = \"builtin\"\neffects = true"),
    ] {
        assert_ne!(
            load(&changed).unwrap().get("pay").unwrap().digest(),
            h.digest()
        );
    }
}

#[test]
fn defaults_fill_in_and_sleep_has_effects() {
    let r = load(
        "[actions.wait]\nkind = \"builtin\"\nschema = { type = \"object\" }\n[actions.wait.builtin]\nhandler = \"sleep\"\n",
    )
    .unwrap();
    let a = r.entry("wait").unwrap();
    assert_eq!(a.min_approvers, 0);
    assert!(a.handler.effects());
    assert_eq!(
        a.handler.timeout(),
        Duration::from_millis(DEFAULT_TIMEOUT_MS)
    );
    assert_eq!(a.handler.description(), "");
}

#[test]
fn a_schema_file_is_read_relative_to_the_registry_and_pinned_by_content() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    let schema = json!({"type": "object", "required": ["id"]});
    std::fs::write(dir.path().join("schemas/del.json"), schema.to_string()).unwrap();
    let file = dir.path().join("actions.toml");
    std::fs::write(
        &file,
        "[actions.del]\nkind = \"builtin\"\nschema_file = \"schemas/del.json\"\n[actions.del.builtin]\nhandler = \"echo\"\n",
    )
    .unwrap();
    let mut r = Registry::new();
    loader().load_file(&file, &mut r).unwrap();
    let h = r.get("del").unwrap().clone();
    assert_eq!(h.input_schema(), schema);
    // Inline, the same schema gives the same digest: the entry is pinned by what it says.
    let inline = load(
        "[actions.del]\nkind = \"builtin\"\nschema = { type = \"object\", required = [\"id\"] }\n[actions.del.builtin]\nhandler = \"echo\"\n",
    )
    .unwrap();
    assert_eq!(inline.get("del").unwrap().digest(), h.digest());
    // A changed schema file is a changed digest.
    std::fs::write(
        dir.path().join("schemas/del.json"),
        json!({"type": "object", "required": ["id", "env"]}).to_string(),
    )
    .unwrap();
    let mut r2 = Registry::new();
    loader().load_file(&file, &mut r2).unwrap();
    assert_ne!(r2.get("del").unwrap().digest(), h.digest());
}

#[test]
fn a_payload_that_does_not_match_lists_every_failing_place_and_rule() {
    let r = load(PAY).unwrap();
    let h = r.get("pay").unwrap();
    assert!(h.validate(&json!({"amount": 5, "to": "bob"})).is_ok());

    let e = h
        .validate(&json!({"amount": 0, "to": 5, "memo": "x"}))
        .unwrap_err();
    let got: Vec<(&str, &str)> = e
        .details
        .iter()
        .map(|v| (v.path.as_str(), v.rule.as_str()))
        .collect();
    for want in [
        ("/amount", "minimum"),
        ("/to", "type"),
        ("", "additionalProperties"),
    ] {
        assert!(got.contains(&want), "{want:?} missing from {got:?}");
    }
    assert!(e.message.contains("3 problems"), "{}", e.message);
    for v in &e.details {
        assert!(!v.message.is_empty());
    }

    // A missing property is named by its own path.
    let e = h.validate(&json!({})).unwrap_err();
    let got: Vec<(&str, &str)> = e
        .details
        .iter()
        .map(|v| (v.path.as_str(), v.rule.as_str()))
        .collect();
    assert!(got.contains(&("/amount", "required")), "{got:?}");
    assert!(got.contains(&("/to", "required")), "{got:?}");

    // Not an object at all.
    let e = h.validate(&json!([1])).unwrap_err();
    assert_eq!(e.details[0].rule, "type");
}

#[test]
fn the_list_of_failing_places_is_bounded() {
    let r = load(
        "[actions.many]\nkind = \"builtin\"\nschema = { type = \"object\", additionalProperties = { type = \"integer\" } }\n[actions.many.builtin]\nhandler = \"echo\"\n",
    )
    .unwrap();
    let payload: Map<String, Value> = (0..500).map(|i| (format!("k{i}"), json!("x"))).collect();
    let e = r
        .get("many")
        .unwrap()
        .validate(&Value::Object(payload))
        .unwrap_err();
    assert_eq!(e.details.len(), MAX_VIOLATIONS);
}

#[test]
fn each_bad_registry_is_refused_with_a_message_naming_the_action_and_key() {
    let ok_tail = "[actions.a.builtin]\nhandler = \"echo\"\n";
    let with = |common: &str| format!("[actions.a]\nkind = \"builtin\"\n{common}\n{ok_tail}");
    let cases: Vec<(String, &[&str])> = vec![
        ("this is not toml = = 1".into(), &["expected"]),
        ("[other]\nx = 1\n".into(), &["unknown top-level key 'other'"]),
        (with("schema = { type = \"object\" }\ncolour = \"red\""), &["actions.a:", "unknown key 'colour'"]),
        (
            with("schema = { type = \"object\" }\n[actions.a.http]\nurl = \"http://x\""),
            &["actions.a:", "unknown key 'http'"],
        ),
        ("[actions.a]\nschema = { type = \"object\" }\n".into(), &["actions.a:", "kind: missing"]),
        (
            "[actions.a]\nkind = \"ftp\"\nschema = { type = \"object\" }\n".into(),
            &["actions.a:", "unknown kind 'ftp'", "builtin"],
        ),
        (with(""), &["actions.a:", "schema: missing"]),
        (
            with("schema = { type = \"object\" }\nschema_file = \"x.json\""),
            &["actions.a:", "not both"],
        ),
        (with("schema_file = \"missing.json\""), &["actions.a:", "schema_file: cannot read"]),
        (with("schema = { type = \"string\" }"), &["actions.a:", "\"type\": \"object\""]),
        (
            with("schema = { type = \"object\", properties = { n = { type = 5 } } }"),
            &["actions.a:", "not a valid JSON Schema"],
        ),
        (
            with("schema = { type = \"object\", properties = { n = { \"$ref\" = \"https://example.com/s.json\" } } }"),
            &["actions.a:", "schema: cannot be used"],
        ),
        (
            with("schema = { type = \"object\", \"$schema\" = \"http://json-schema.org/draft-07/schema#\" }"),
            &["actions.a:", "draft 2020-12"],
        ),
        (with("schema = { type = \"object\" }\ntimeout_ms = 0"), &["actions.a:", "timeout_ms"]),
        (with("schema = { type = \"object\" }\ntimeout_ms = 600001"), &["actions.a:", "timeout_ms"]),
        (with("schema = { type = \"object\" }\nmin_approvers = -1"), &["actions.a:", "min_approvers"]),
        (with("schema = { type = \"object\" }\neffects = \"yes\""), &["actions.a:", "effects"]),
        (with("schema = { type = \"object\", default = 1979-05-27 }"), &["actions.a:", "schema.default", "TOML date"]),
        (
            "[actions.a]\nkind = \"builtin\"\nschema = { type = \"object\" }\n[actions.a.builtin]\nhandler = \"rm\"\n".into(),
            &["actions.a:", "builtin: handler: unknown built-in 'rm'"],
        ),
        (
            "[actions.a]\nkind = \"builtin\"\nschema = { type = \"object\" }\n[actions.a.builtin]\nhandler = \"echo\"\nextra = 1\n".into(),
            &["actions.a:", "builtin:", "unknown field `extra`"],
        ),
        (
            format!("{}\n[actions.Pay]\nkind = \"builtin\"\nschema = {{ type = \"object\" }}\n[actions.Pay.builtin]\nhandler = \"echo\"\n", PAY),
            &["collides", "Pay", "pay"],
        ),
        (
            // U+FB01 LATIN SMALL LIGATURE FI is "fi" under NFKC.
            "[actions.file]\nkind = \"builtin\"\nschema = { type = \"object\" }\n[actions.file.builtin]\nhandler = \"echo\"\n[actions.\"\u{FB01}le\"]\nkind = \"builtin\"\nschema = { type = \"object\" }\n[actions.\"\u{FB01}le\".builtin]\nhandler = \"echo\"\n".into(),
            &["collides", "file"],
        ),
        (
            "[actions.ECHO]\nkind = \"builtin\"\nschema = { type = \"object\" }\n[actions.ECHO.builtin]\nhandler = \"echo\"\n".into(),
            &["actions.ECHO:", "collides with 'echo'"],
        ),
        (
            // "é" as e + U+0301 COMBINING ACUTE ACCENT: not NFC.
            "[actions.\"cafe\u{301}\"]\nkind = \"builtin\"\nschema = { type = \"object\" }\n".into(),
            &["normal form C"],
        ),
        (
            "[actions.\"two words\"]\nkind = \"builtin\"\nschema = { type = \"object\" }\n".into(),
            &["actions.two words:", "letters, digits"],
        ),
        (
            format!("[actions.{}]\nkind = \"builtin\"\nschema = {{ type = \"object\" }}\n", "a".repeat(65)),
            &["at most 64"],
        ),
    ];
    for (text, wants) in cases {
        let e = refusal(&text);
        for w in wants {
            assert!(e.contains(w), "{w:?} not in {e:?} for\n{text}");
        }
    }
}

#[test]
fn an_empty_file_declares_nothing() {
    let r = load("").unwrap();
    assert_eq!(
        r.actions().collect::<Vec<_>>(),
        openexec_builtin::registry().actions().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_declared_action_runs_its_kinds_handler() {
    let r = load(PAY).unwrap();
    let h = r.get("pay").unwrap();
    let p = json!({"amount": 5, "to": "bob"});
    let inv = Invocation {
        exec_id: "e",
        tenant_id: "t",
        action: "pay",
        nonce: "n",
        payload: &p,
        deadline: tokio::time::Instant::now() + h.timeout(),
        cancel: openexec_handler::CancellationToken::new(),
    };
    assert_eq!(h.run(&inv).await.unwrap(), json!({"echo": p}));
}
