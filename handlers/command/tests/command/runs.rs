//! Runs without the sandbox: arguments, output, exit, timeouts and the process group.

use std::time::{Duration, Instant};

use openexec_handler::{CancellationToken, Kind};
use openexec_handler_command::CommandKind;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn hostile_values_arrive_as_one_literal_argument_each() {
    let marker = std::env::temp_dir().join(format!("pwned-{}-argv", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let h = build(json!({"argv": [
        script("argv.py"), "{semi}", "{subst}", "{help}", "{rf}", "{spaces}", "x{n}y", "{t}",
        "{{literal}}", "--fixed", "{semi}{n}", "{quote}"
    ]}))
    .unwrap();
    let subst = format!("$(touch {})", marker.display());
    let payload = json!({
        "semi": "; rm -rf /",
        "subst": subst,
        "help": "--help",
        "rf": "-rf",
        "spaces": "two words\tand a tab\nand a line",
        "n": 42,
        "t": true,
        "quote": "'\"`\\",
        "unused": [1, 2],
    });
    let out = run(&h, payload).await.unwrap();
    assert_eq!(
        out,
        json!([
            "; rm -rf /",
            subst,
            "--help",
            "-rf",
            "two words\tand a tab\nand a line",
            "x42y",
            "true",
            "{literal}",
            "--fixed",
            "; rm -rf /42",
            "'\"`\\"
        ])
    );
    assert!(!marker.exists(), "the $(…) in a payload value was executed");
}

#[tokio::test]
async fn numbers_and_booleans_fill_as_their_json_text() {
    let h = build(json!({"argv": [script("argv.py"), "{a}", "{b}", "{c}", "{d}"]})).unwrap();
    let out = run(&h, json!({"a": -7, "b": 0.25, "c": false, "d": 1e300}))
        .await
        .unwrap();
    assert_eq!(out, json!(["-7", "0.25", "false", "1e+300"]));
    // Canonical text (what the receipt hashes): 1.0 and 1 fill alike.
    let out = run(&h, json!({"a": 1.0, "b": 1, "c": true, "d": -0.0}))
        .await
        .unwrap();
    assert_eq!(out, json!(["1", "1", "true", "0"]));
}

#[tokio::test]
async fn validate_names_each_field_that_cannot_fill_a_slot() {
    let h =
        build(json!({"argv": [script("argv.py"), "{a}", "{b}", "{c}-{a}", "{d}", "{e}", "{ok}"]}))
            .unwrap();
    let e = h
        .validate(&json!({"b": [1], "c": {"x": 1}, "d": null, "e": "nul\u{0}here", "ok": "fine"}))
        .unwrap_err();
    let got: Vec<(&str, &str)> = e
        .details
        .iter()
        .map(|v| (v.path.as_str(), v.rule.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("/a", "required"),
            ("/b", "type"),
            ("/c", "type"),
            ("/d", "type"),
            ("/e", "pattern")
        ],
        "{e:?}"
    );
    for f in ["'a'", "'b'", "'c'", "'d'", "'e'"] {
        assert!(e.message.contains(f), "{}", e.message);
    }
    // Not an object at all: one violation at the payload itself.
    let e = h.validate(&json!(["a"])).unwrap_err();
    assert_eq!(e.details.len(), 1);
    assert_eq!(e.details[0].path, "");
    assert_eq!(e.details[0].rule, "type");
    // A field too long for one argument.
    let e = h
        .validate(&json!({"a": "x".repeat(200_000), "b": 1, "c": 1, "d": 1, "e": 1, "ok": 1}))
        .unwrap_err();
    assert_eq!(e.details[0].path, "/a");
    assert_eq!(e.details[0].rule, "maxLength");
    assert!(h
        .validate(&json!({"a": "", "b": 1, "c": true, "d": "-", "e": 2.5, "ok": "x"}))
        .is_ok());

    // Without slots the payload is not looked at.
    let plain = build(json!({"argv": [script("argv.py"), "--x"]})).unwrap();
    assert!(plain.validate(&json!("anything")).is_ok());
    assert_eq!(run(&plain, json!(null)).await.unwrap(), json!(["--x"]));
}

#[tokio::test]
async fn a_payload_that_skipped_validation_still_cannot_run() {
    let h = build(json!({"argv": [script("argv.py"), "{a}"]})).unwrap();
    let payload = json!({"a": {"nested": true}});
    let inv = invocation(&h, &payload, CancellationToken::new());
    let e = h.run(&inv).await.unwrap_err();
    assert_eq!(e.code, "invalid_payload");
    assert!(!e.unknown);
}

#[tokio::test]
async fn the_handler_says_who_it_is() {
    let h = build(json!({"argv": ["/bin/true"]})).unwrap();
    assert_eq!(h.name(), "command:act");
    assert_eq!(h.kind(), "command");
    assert_eq!(h.digest(), DIGEST);
    assert!(h.effects());
    assert_eq!(h.timeout(), Duration::from_secs(20));
    let pure = build_with(
        json!({"argv": ["/bin/true"]}),
        false,
        Duration::from_millis(1500),
    )
    .unwrap();
    assert!(!pure.effects());
    assert_eq!(pure.timeout(), Duration::from_millis(1500));
    assert!(CommandKind.default_effects(&json!({})));
    assert_eq!(CommandKind.name(), "command");
}

#[tokio::test]
async fn the_default_cwd_is_a_fresh_empty_folder_removed_afterwards() {
    let h = build(json!({"argv": [script("cwd.py")]})).unwrap();
    let first = run(&h, json!({})).await.unwrap();
    let second = run(&h, json!({})).await.unwrap();
    for out in [&first, &second] {
        assert_eq!(out["entries"], json!([]), "{out}");
        assert_eq!(out["wrote"], json!(true), "{out}");
        let cwd = out["cwd"].as_str().unwrap();
        assert!(!std::path::Path::new(cwd).exists(), "{cwd} was left behind");
    }
    assert_ne!(first["cwd"], second["cwd"]);

    let dir = tempdir();
    std::fs::write(dir.path().join("present"), "").unwrap();
    let h = build(json!({"argv": [script("cwd.py")], "cwd": dir.path()})).unwrap();
    let out = run(&h, json!({})).await.unwrap();
    assert_eq!(
        out["cwd"],
        json!(std::fs::canonicalize(dir.path()).unwrap())
    );
    assert_eq!(out["entries"], json!(["present"]));
}

#[tokio::test]
async fn a_non_zero_exit_fails_naming_the_status_and_not_the_stderr() {
    let h = build(json!({"argv": [script("exit.sh"), "{code}"]})).unwrap();
    let e = run(&h, json!({"code": 3})).await.unwrap_err();
    assert_eq!(e.code, "command_exit");
    assert!(!e.unknown);
    assert!(e.message.contains("exit status 3"), "{}", e.message);
    assert!(
        !e.message.contains("SECRET"),
        "stderr leaked: {}",
        e.message
    );

    let e = run(&h, json!({"code": "kill"})).await.unwrap_err();
    assert_eq!(e.code, "command_exit");
    assert!(e.message.contains("signal 9 (SIGKILL)"), "{}", e.message);
    assert!(
        !e.message.contains("SECRET"),
        "stderr leaked: {}",
        e.message
    );
}

#[tokio::test]
async fn stdout_that_is_not_i_json_fails() {
    let h = build(json!({"argv": [script("out.py"), "{text}"]})).unwrap();
    for bad in [
        "not json",
        "",
        "{\"a\": 1, \"a\": 2}",
        "[1] [2]",
        "9007199254740993",
    ] {
        let e = run(&h, json!({"text": bad})).await.unwrap_err();
        assert_eq!(e.code, "command_bad_output", "{bad:?}: {e:?}");
        assert!(!e.unknown);
    }
    assert_eq!(
        run(&h, json!({"text": " {\"ok\": [1, 2.5, null]}\n"}))
            .await
            .unwrap(),
        json!({"ok": [1, 2.5, null]})
    );
}

#[tokio::test]
async fn output_beyond_the_cap_fails() {
    let h = build(json!({"argv": [script("big.py"), "{n}"], "max_output_bytes": 1000})).unwrap();
    let e = run(&h, json!({"n": 1001})).await.unwrap_err();
    assert_eq!(e.code, "command_output_too_large");
    assert!(e.message.contains("1000"), "{}", e.message);
    // Exactly at the cap is fine (and not JSON, which is another failure).
    let e = run(&h, json!({"n": 1000})).await.unwrap_err();
    assert_eq!(e.code, "command_bad_output");
    // The default cap is 1 MiB.
    let h = build(json!({"argv": [script("big.py"), "{n}"]})).unwrap();
    let e = run(&h, json!({"n": 2 * 1024 * 1024})).await.unwrap_err();
    assert_eq!(e.code, "command_output_too_large");
    assert!(e.message.contains("1048576"), "{}", e.message);
}

#[tokio::test]
async fn endless_output_kills_the_group_at_once() {
    let dir = tempdir();
    let pidfile = dir.path().join("pids");
    let h = build(json!({
        "argv": [script("group.py"), pidfile, "flood"], "max_output_bytes": 100000
    }))
    .unwrap();
    let started = Instant::now();
    let e = run(&h, json!({})).await.unwrap_err();
    assert_eq!(e.code, "command_output_too_large");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}: not killed at the cap",
        started.elapsed()
    );
    let (leader, grandchild) = pids(&pidfile).await;
    all_gone(leader, grandchild).await;
}

#[tokio::test]
async fn a_timeout_kills_the_whole_group_and_its_outcome_is_unknown() {
    let dir = tempdir();
    let pidfile = dir.path().join("pids");
    let settings = json!({"argv": [script("group.py"), pidfile, "sleep"]});
    let h = build_with(settings.clone(), true, Duration::from_millis(3000)).unwrap();
    let started = Instant::now();
    let e = run(&h, json!({})).await.unwrap_err();
    assert!(e.unknown, "{e:?}");
    assert_eq!(e.code, "outcome_unknown");
    assert!(e.message.contains("3000 ms"), "{}", e.message);
    assert!(started.elapsed() < Duration::from_secs(10));
    let (leader, grandchild) = pids(&pidfile).await;
    all_gone(leader, grandchild).await;

    // Without effects a timeout is a plain failure.
    std::fs::remove_file(&pidfile).unwrap();
    let h = build_with(settings, false, Duration::from_millis(3000)).unwrap();
    let e = run(&h, json!({})).await.unwrap_err();
    assert!(!e.unknown);
    assert_eq!(e.code, "command_timeout");
    let (leader, grandchild) = pids(&pidfile).await;
    all_gone(leader, grandchild).await;
}

#[tokio::test]
async fn dropping_the_run_kills_the_whole_group() {
    let dir = tempdir();
    let pidfile = dir.path().join("pids");
    let h = build(json!({"argv": [script("group.py"), pidfile, "sleep"]})).unwrap();
    let payload = json!({});
    let inv = invocation(&h, &payload, CancellationToken::new());
    let mut fut = h.run(&inv);
    let (leader, grandchild) = tokio::select! {
        r = &mut fut => panic!("the run ended by itself: {r:?}"),
        p = pids(&pidfile) => p,
    };
    assert!(!gone(leader) && !gone(grandchild));
    drop(fut);
    all_gone(leader, grandchild).await;
}

#[tokio::test]
async fn cancelling_the_run_kills_the_whole_group() {
    let dir = tempdir();
    let pidfile = dir.path().join("pids");
    let settings = json!({"argv": [script("group.py"), pidfile, "sleep"]});
    for effects in [true, false] {
        let _ = std::fs::remove_file(&pidfile);
        let h = build_with(settings.clone(), effects, Duration::from_secs(20)).unwrap();
        let payload = json!({});
        let cancel = CancellationToken::new();
        let inv = invocation(&h, &payload, cancel.clone());
        let mut fut = h.run(&inv);
        let (leader, grandchild) = tokio::select! {
            r = &mut fut => panic!("the run ended by itself: {r:?}"),
            p = pids(&pidfile) => p,
        };
        cancel.cancel();
        let e = fut.await.unwrap_err();
        if effects {
            assert_eq!(e.code, "outcome_unknown");
            assert!(e.unknown);
        } else {
            assert_eq!(e.code, "command_cancelled");
        }
        all_gone(leader, grandchild).await;
    }
}

#[tokio::test]
async fn what_the_command_leaves_behind_is_killed_when_it_exits() {
    // The grandchild keeps stdout open: the run must not wait for it, and must not leave it.
    let dir = tempdir();
    let pidfile = dir.path().join("pids");
    let h = build(json!({"argv": [script("group.py"), pidfile, "exit"]})).unwrap();
    let started = Instant::now();
    assert_eq!(run(&h, json!({})).await.unwrap(), json!({}));
    assert!(started.elapsed() < Duration::from_secs(10));
    let (leader, grandchild) = pids(&pidfile).await;
    all_gone(leader, grandchild).await;
}

#[tokio::test]
async fn a_program_that_cannot_start_fails_to_spawn() {
    let dir = tempdir();
    let prog = dir.path().join("vanishing.sh");
    std::fs::copy(script("exit.sh"), &prog).unwrap();
    let h = build(json!({"argv": [prog, "0"]})).unwrap();
    std::fs::remove_file(&prog).unwrap();
    let e = run(&h, json!({})).await.unwrap_err();
    assert_eq!(e.code, "command_spawn_failed");
    assert!(e.message.contains("vanishing.sh"), "{}", e.message);
}

#[tokio::test]
async fn a_passed_deadline_runs_nothing() {
    let dir = tempdir();
    let pidfile = dir.path().join("pids");
    let h = build(json!({"argv": [script("group.py"), pidfile, "exit"]})).unwrap();
    let payload = json!({});
    let mut inv = invocation(&h, &payload, CancellationToken::new());
    inv.deadline = tokio::time::Instant::now();
    let e = h.run(&inv).await.unwrap_err();
    assert_eq!(e.code, "command_timeout");
    assert!(!e.unknown, "nothing ran, so the outcome is known");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let inv = invocation(&h, &payload, cancel);
    assert_eq!(h.run(&inv).await.unwrap_err().code, "command_cancelled");
    assert!(!pidfile.exists());
}
