//! A `command` action through `openexec serve` (SPEC §10): payload fields stay one literal
//! argument each, a run past its timeout is `interrupted` and never run again, and `/health`
//! says whether the sandbox is available. The kind's own tests (`handlers/command`) go further:
//! process groups, output caps, the sandbox's network and file-system limits.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

fn registry(dir: &std::path::Path) -> std::path::PathBuf {
    let script = dir.join("args.py");
    std::fs::write(
        &script,
        "import json, sys, time\nargs = sys.argv[1:]\nif args and args[0] == 'sleep':\n    open(sys.argv[0] + '.ran', 'a').write('x')\n    time.sleep(float(args[1]))\nprint(json.dumps({'args': args}))\n",
    )
    .unwrap();
    let file = dir.join("actions.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[actions.args]
kind = "command"
description = "Answers its arguments"
schema = {{ type = "object", required = ["x"], properties = {{ x = {{ type = "string" }} }} }}
timeout_ms = 5000
[actions.args.command]
argv = ["/usr/bin/python3", "{script}", "{{x}}", "--fixed"]

[actions.slow]
kind = "command"
schema = {{ type = "object", required = ["s"], properties = {{ s = {{ type = "string" }} }} }}
timeout_ms = 300
[actions.slow.command]
argv = ["/usr/bin/python3", "{script}", "sleep", "{{s}}"]
"#,
            script = script.display()
        ),
    )
    .unwrap();
    file
}

#[tokio::test]
async fn a_command_action_runs_without_a_shell_and_a_timeout_is_interrupted() {
    let d = tempfile::tempdir().unwrap();
    let file = registry(d.path());
    let s = Server::start(&[("OPENEXEC_ACTIONS", file.to_str().unwrap())]);

    let marker = d.path().join("pwned");
    for (i, hostile) in [
        "; rm -rf /".to_string(),
        format!("$(touch {})", marker.display()),
        "-rf".to_string(),
        "a b\tc\nd".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let (st, r) = s
            .execute(
                &json!({"action": "args", "payload": {"x": hostile}, "nonce": format!("h{i}")}),
            )
            .await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["result"], json!({"args": [hostile, "--fixed"]}), "{r}");
        assert_eq!(r["evidence"]["receipt"]["handler"]["name"], "command:args");
    }
    assert!(!marker.exists(), "the $(…) payload ran");

    let body = json!({"action": "slow", "payload": {"s": "30"}, "nonce": "t1"});
    let t0 = std::time::Instant::now();
    let (st, r) = s.execute(&body).await;
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(st, 409, "{r}");
    assert_eq!(r["status"], "interrupted", "{r}");
    assert_eq!(r["evidence"]["receipt"]["code"], "outcome_unknown", "{r}");
    let (st, r) = s.execute(&body).await;
    assert_eq!(st, 409, "{r}");
    assert_eq!(code(&r), "outcome_unknown");
    let ran = std::fs::read_to_string(d.path().join("args.py.ran")).unwrap();
    assert_eq!(
        ran, "x",
        "the timed-out command ran once, and was not run again"
    );

    let (st, h) = s.get("/health").await;
    assert_eq!(st, 200);
    assert!(
        h["handler_kinds"]["command"]["sandbox"]["available"].is_boolean(),
        "{h}"
    );
}
