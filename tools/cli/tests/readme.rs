//! The README's quickstart, run as written (curl against a real `openexec serve`), and the
//! README's two first commands being the ones CI runs.

mod common;

use common::Server;
use serde_json::{json, Value};

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    std::fs::read_to_string(path).expect("read README.md")
}

/// The `curl` commands of the quickstart block, continuation lines joined.
fn quickstart_commands(readme: &str) -> Vec<String> {
    let start = readme
        .find("<!-- quickstart:begin -->")
        .expect("quickstart:begin marker");
    let end = readme
        .find("<!-- quickstart:end -->")
        .expect("quickstart:end marker");
    let mut cmds = Vec::new();
    let mut cur = String::new();
    for line in readme[start..end].lines() {
        let line = line.trim_end();
        if cur.is_empty() && !line.starts_with("curl ") {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => cur.push_str(head),
            None => {
                cur.push_str(line);
                cmds.push(std::mem::take(&mut cur));
            }
        }
    }
    cmds
}

fn run(cmd: &str, base: &str) -> Value {
    let cmd = cmd.replace("http://127.0.0.1:5000", base);
    let out = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{cmd}\nfailed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{cmd}\ndid not print JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn the_first_lines_are_the_start_and_test_commands_and_ci_runs_the_test_command() {
    let text = readme();
    let first_block: String = text
        .split("```")
        .nth(1)
        .expect("a code block at the top")
        .to_string();
    assert!(first_block.contains("cargo run --release -p openexec-cli -- serve"));
    assert!(first_block.contains("cargo test --workspace"));
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.ci/run"))
        .expect("read .ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "cargo test --workspace"),
        ".ci/run must run the README's test command"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_works_as_written() {
    let cmds = quickstart_commands(&readme());
    assert_eq!(
        cmds.len(),
        5,
        "health, execute, replay, verify, openai: {cmds:#?}"
    );
    let s = Server::start(&[]);
    let base = s.base.clone();
    let outs: Vec<Value> =
        tokio::task::spawn_blocking(move || cmds.iter().map(|c| run(c, &base)).collect())
            .await
            .unwrap();

    let health = &outs[0];
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["exec_mode"], "demo");

    let first = &outs[1];
    assert_eq!(
        first["result"],
        json!({"echo": {"msg": "hello world"}}),
        "{first}"
    );
    assert_eq!(first["replayed"], false);
    assert_eq!(first["approved"], true);

    let replay = &outs[2];
    assert_eq!(replay["replayed"], true, "{replay}");
    assert_eq!(replay["receipt"], first["receipt"]);
    assert_eq!(replay["id"], first["id"]);

    // Step 4 names the exec_id and receipt literally: they are deterministic, so they must be
    // the ones this fresh server (with its own freshly generated key) just produced.
    let verify = &outs[3];
    assert_eq!(verify["valid"], true, "{verify}");
    let verify_cmd = &quickstart_commands(&readme())[3];
    assert!(verify_cmd.contains(first["id"].as_str().unwrap()));
    assert!(verify_cmd.contains(first["receipt"].as_str().unwrap()));

    let openai = &outs[4];
    assert_eq!(
        openai["result"],
        json!({"echo": {"msg": "from openai"}}),
        "{openai}"
    );
    assert_eq!(openai["replayed"], false);
}
