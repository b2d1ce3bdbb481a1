//! The README's walk-throughs, run as written: the whole stack (a shell script against a real
//! `openexec dev`), the quickstart (curl against a real `openexec serve`), the declared actions;
//! and the README's two first commands being `openexec dev` and the test command CI runs.

mod common;

use std::os::unix::process::CommandExt as _;
use std::time::{Duration, Instant};

use common::dev::Dev;
use common::{Server, BIN};
use serde_json::{json, Value};

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    std::fs::read_to_string(path).expect("read README.md")
}

/// The `curl` commands of the quickstart block, continuation lines joined.
fn quickstart_commands(readme: &str) -> Vec<String> {
    block_commands(readme, "quickstart")
}

/// The `curl` commands between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
fn block_commands(readme: &str, name: &str) -> Vec<String> {
    let start = readme
        .find(&format!("<!-- {name}:begin -->"))
        .unwrap_or_else(|| panic!("{name}:begin marker"));
    let end = readme
        .find(&format!("<!-- {name}:end -->"))
        .unwrap_or_else(|| panic!("{name}:end marker"));
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
    let lines: Vec<&str> = first_block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        lines[1].starts_with("cargo run --release -p openexec-cli -- dev "),
        "{lines:?}"
    );
    assert!(lines[2].starts_with("cargo test --workspace "), "{lines:?}");
    // The quickstart says how to start what it talks to.
    assert!(text.contains(
        "`cargo run --release -p openexec-cli -- serve` starts OpenExec alone on 127.0.0.1:5000"
    ));
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.ci/run"))
        .expect("read .ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "cargo test --workspace"),
        ".ci/run must run the README's test command"
    );
}

/// The shell code of the block between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
fn block_script(readme: &str, name: &str) -> String {
    let start = readme
        .find(&format!("<!-- {name}:begin -->"))
        .unwrap_or_else(|| panic!("{name}:begin marker"));
    let end = readme
        .find(&format!("<!-- {name}:end -->"))
        .unwrap_or_else(|| panic!("{name}:end marker"));
    let block = &readme[start..end];
    let code = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap_or_else(|| panic!("no ```sh block between the {name} markers"))
        .0;
    code.to_string()
}

fn read_json(path: std::path::PathBuf) -> Value {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the walk-through wrote no {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text}", path.display()))
}

/// The whole-stack walk-through, as written: `openexec dev` started as the README's first command
/// does (its default folder, `.openexec-dev`, in the working directory), then the block run by
/// `sh -e` from that working directory with this build's `openexec` on the PATH. Every step's
/// answer is checked, and the script fails if `openexec verify` or `openexec log audit` does.
#[test]
fn the_whole_stack_walk_through_works_as_written() {
    let text = readme();
    let script = block_script(&text, "dev");
    assert!(script.contains("openexec verify receipt.json"), "{script}");
    assert!(script.contains("--decision decision.json"), "{script}");
    assert!(script.contains("openexec vote "), "{script}");

    let dev = Dev::start();
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out_file = dev.work.path().join("walk.out");
    let err_file = dev.work.path().join("walk.err");
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-e", "-c", &script])
        .current_dir(dev.work.path())
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .process_group(0);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if ["OPENEXEC_", "CLAWSHIELD_", "CLAWLEDGER_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(&k);
        }
    }
    let mut sh = cmd.spawn().expect("run sh");
    let until = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = sh.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > until {
            let pid = rustix::process::Pid::from_child(&sh);
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = sh.wait();
            panic!(
                "the walk-through did not finish within 120 s:\n{}\n{}",
                std::fs::read_to_string(&err_file).unwrap_or_default(),
                dev.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&out_file).unwrap_or_default();
    let err = std::fs::read_to_string(&err_file).unwrap_or_default();
    assert!(
        status.success(),
        "the walk-through failed ({status}):\n--- stdout\n{out}\n--- stderr\n{err}\n{}",
        dev.log()
    );

    let f = |name: &str| read_json(dev.dir().join(name));
    let small = f("small.json");
    assert_eq!(small["status"], "approved", "{small}");
    assert_eq!(small["decision"]["effect"], "allow", "{small}");
    let small_exec = f("small-executed.json");
    assert_eq!(small_exec["status"], "executed", "{small_exec}");
    assert_eq!(
        small_exec["evidence"]["receipt"]["approval"]["decision_id"],
        small["decision"]["decision_id"]
    );
    let large = f("large.json");
    assert_eq!(large["status"], "pending", "{large}");
    assert_eq!(large["needs"]["min"], 2, "{large}");
    let approved = f("approved.json");
    assert_eq!(approved["status"], "approved", "{approved}");
    let voters: Vec<&str> = approved["artifact"]["approvers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(voters, ["alice", "bob"], "{approved}");
    let large_exec = f("large-executed.json");
    assert_eq!(large_exec["status"], "executed", "{large_exec}");
    let receipt = f("receipt.json");
    assert_eq!(receipt["evidence"]["receipt_hash"], large_exec["receipt"]);
    let decision = f("decision.json");
    assert_eq!(decision["decision"]["code"], "quorum_met", "{decision}");
    assert_eq!(
        decision["decision"]["request_hash"],
        receipt["evidence"]["receipt"]["request_hash"]
    );
    // Step 7 and 8 printed their reports (and exited 0, or sh -e would have stopped).
    for want in [
        "\"decision_allows\": true",
        "\"decision_witnesses\": true",
        "\"request_hash\": true",
        "\"bad_entries\": 0",
    ] {
        assert!(out.contains(want), "{want} not in:\n{out}");
    }
    assert!(
        err.contains("proposal p_"),
        "the votes show what is signed: {err}"
    );

    let st = dev.stop();
    assert!(st.success(), "openexec dev exited with {st}");
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

/// The walk-through of declared actions, as written: `examples/actions/` (its registry, module
/// and stand-in upstream) served with the README's environment, and the README's curl commands.
#[tokio::test(flavor = "multi_thread")]
async fn the_declared_actions_walk_through_works_as_written() {
    let text = readme();
    let cmds = block_commands(&text, "actions");
    assert_eq!(
        cmds.len(),
        5,
        "actions, pay, bad pay, shout, word_count: {cmds:#?}"
    );
    // The README's start commands are the ones run here.
    assert!(text.contains("python3 examples/actions/upstream.py &"));
    assert!(text.contains(
        "PAY_TOKEN=demo-token OPENEXEC_ACTIONS=examples/actions/actions.toml cargo run --release -p openexec-cli -- serve"
    ));

    // The example folder, with the upstream on a free port instead of 9000.
    let examples = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/actions"
    ));
    let dir = tempfile::tempdir().unwrap();
    for f in ["actions.toml", "shout.wasm", "upstream.py"] {
        std::fs::copy(examples.join(f), dir.path().join(f)).unwrap();
    }
    let mut upstream = std::process::Command::new("python3")
        .arg(dir.path().join("upstream.py"))
        .arg("0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start python3 upstream.py");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(upstream.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let up = line
        .trim()
        .strip_prefix("upstream: listening on http://")
        .unwrap_or_else(|| panic!("upstream said {line:?}"))
        .to_string();
    let registry = std::fs::read_to_string(dir.path().join("actions.toml")).unwrap();
    assert!(registry.contains("http://127.0.0.1:9000/pay"));
    let registry = registry.replace("127.0.0.1:9000", &up);
    std::fs::write(dir.path().join("actions.toml"), registry).unwrap();

    let file = dir.path().join("actions.toml");
    let s = Server::start(&[
        ("OPENEXEC_ACTIONS", file.to_str().unwrap()),
        ("PAY_TOKEN", "demo-token"),
    ]);
    let base = s.base.clone();
    let outs: Vec<Value> =
        tokio::task::spawn_blocking(move || cmds.iter().map(|c| run(c, &base)).collect())
            .await
            .unwrap();
    let _ = upstream.kill();
    let _ = upstream.wait();

    let tools = outs[0].as_array().expect("a tool list");
    for name in ["pay", "shout", "word_count", "echo"] {
        assert!(
            tools.iter().any(|t| t["function"]["name"] == name),
            "{name} not in {}",
            outs[0]
        );
    }
    assert_eq!(outs[1]["status"], "executed", "{}", outs[1]);
    assert_eq!(outs[1]["result"], json!({"paid": 1250, "to": "bob"}));
    assert_eq!(
        outs[1]["evidence"]["receipt"]["handler"]["name"],
        "http:pay"
    );
    assert_eq!(outs[2]["error"]["code"], "invalid_payload", "{}", outs[2]);
    let details = outs[2]["error"]["details"].as_array().unwrap();
    assert!(details
        .iter()
        .any(|d| d["path"] == "/amount" && d["rule"] == "minimum"));
    assert!(details
        .iter()
        .any(|d| d["path"] == "" && d["rule"] == "additionalProperties"));
    assert_eq!(outs[2]["evidence"]["receipt"]["status"], "rejected");
    assert_eq!(
        outs[3]["result"],
        json!({"TEXT": "HELLO, WORLD"}),
        "{}",
        outs[3]
    );
    assert_eq!(
        outs[3]["evidence"]["receipt"]["handler"]["digest"],
        "747826c0fd43f872267e812ab50cd941ef8a64f0f3d9d2492160b5fb640a9da0"
    );
    assert_eq!(outs[4]["result"], json!({"words": 5}), "{}", outs[4]);
    assert!(!s.log().contains("demo-token"), "the token is in the log");
}

/// `examples/actions/shout.wasm` is `shout.wat` built, and the registry pins its hash.
#[test]
fn the_example_module_is_its_source_built_and_pinned() {
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/actions"
    ));
    let built = wat::parse_file(dir.join("shout.wat")).expect("shout.wat parses");
    let committed = std::fs::read(dir.join("shout.wasm")).unwrap();
    // wat2wasm writes no name section by default; the `wat` crate does. Custom sections aside,
    // the two must be the same module.
    assert_eq!(
        without_custom_sections(&built),
        without_custom_sections(&committed),
        "shout.wasm is not shout.wat built: run wat2wasm shout.wat -o shout.wasm"
    );
    let hash = openexec_core::json::sha256_hex(&committed);
    let registry = std::fs::read_to_string(dir.join("actions.toml")).unwrap();
    assert!(
        registry.contains(&format!("sha256 = \"{hash}\"")),
        "actions.toml does not pin {hash}"
    );
}

/// A wasm binary's bytes with its custom sections (id 0: names, producers, …) left out.
fn without_custom_sections(wasm: &[u8]) -> Vec<u8> {
    assert!(
        wasm.len() >= 8 && &wasm[..4] == b"\0asm",
        "not a wasm binary"
    );
    let mut out = wasm[..8].to_vec();
    let mut i = 8;
    while i < wasm.len() {
        let id = wasm[i];
        let (mut size, mut shift, mut j) = (0usize, 0, i + 1);
        loop {
            let b = wasm[j];
            size |= usize::from(b & 0x7f) << shift;
            shift += 7;
            j += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let end = j + size;
        if id != 0 {
            out.extend_from_slice(&wasm[i..end]);
        }
        i = end;
    }
    out
}
