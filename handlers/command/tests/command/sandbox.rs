//! Runs in the bubblewrap sandbox. Each test skips (saying why) only when the sandbox is not
//! available on this machine; CI installs bubblewrap.

use std::path::{Path, PathBuf};
use std::time::Duration;

use openexec_handler::CancellationToken;
use serde_json::json;

use crate::common::*;

/// A folder outside /tmp (which the sandbox replaces), so that what the sandbox makes of the
/// host's files is what the test sees.
fn host_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn canon(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap()
}

#[tokio::test]
async fn no_network_in_the_sandbox() {
    if !sandbox_available() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let argv = json!([script("net.py"), "{port}"]);
    // The control: outside the sandbox the listener is reachable, so the test can tell.
    let open = build(json!({"argv": argv})).unwrap();
    assert_eq!(
        run(&open, json!({"port": port})).await.unwrap(),
        json!({"connected": true})
    );
    let boxed = build(json!({"argv": argv, "sandbox": true})).unwrap();
    let out = run(&boxed, json!({"port": port})).await.unwrap();
    assert_eq!(out["connected"], json!(false), "{out}");
}

#[tokio::test]
async fn only_writable_paths_are_writable() {
    if !sandbox_available() {
        return;
    }
    let dir = host_dir();
    let w = dir.path().join("w");
    let o = dir.path().join("o");
    std::fs::create_dir_all(&w).unwrap();
    std::fs::create_dir_all(&o).unwrap();
    let (w, o) = (canon(&w), canon(&o));
    let inside = w.join("x");
    let outside = o.join("x");
    let h = build(json!({
        "argv": [script("write.py"), inside, outside, "/etc/openexec-sandbox-test", "/root-openexec-sandbox-test"],
        "sandbox": true,
        "writable": [w],
    }))
    .unwrap();
    let out = run(&h, json!({})).await.unwrap();
    assert_eq!(out[inside.to_str().unwrap()], json!("ok"), "{out}");
    assert_eq!(std::fs::read_to_string(&inside).unwrap(), "hi");
    for p in [
        outside.to_str().unwrap(),
        "/etc/openexec-sandbox-test",
        "/root-openexec-sandbox-test",
    ] {
        let said = out[p].as_str().unwrap();
        assert!(said.contains("Read-only file system"), "{p}: {said}");
    }
    assert!(!outside.exists());
    assert!(!Path::new("/etc/openexec-sandbox-test").exists());

    // The same program without the sandbox could write outside: the test can tell.
    let open = build(json!({"argv": [script("write.py"), outside]})).unwrap();
    let out = run(&open, json!({})).await.unwrap();
    assert_eq!(out[outside.to_str().unwrap()], json!("ok"), "{out}");
}

#[tokio::test]
async fn arguments_and_folders_in_the_sandbox() {
    if !sandbox_available() {
        return;
    }
    // Hostile values stay single literal arguments in the sandbox too.
    let h = build(json!({"argv": [script("argv.py"), "{a}", "{b}"], "sandbox": true})).unwrap();
    assert_eq!(
        run(&h, json!({"a": "; rm -rf /", "b": "--help"}))
            .await
            .unwrap(),
        json!(["; rm -rf /", "--help"])
    );
    // The default cwd is the run's own scratch folder, writable, removed afterwards.
    let h = build(json!({"argv": [script("cwd.py")], "sandbox": true})).unwrap();
    let out = run(&h, json!({})).await.unwrap();
    assert_eq!(out["entries"], json!([]), "{out}");
    assert_eq!(out["wrote"], json!(true), "{out}");
    assert!(!Path::new(out["cwd"].as_str().unwrap()).exists());
    // A configured cwd (here under the host's /tmp, which the sandbox hides) is there, and
    // read-only unless writable.
    let dir = tempdir();
    std::fs::write(dir.path().join("present"), "").unwrap();
    let h = build(json!({"argv": [script("cwd.py")], "cwd": dir.path(), "sandbox": true})).unwrap();
    let out = run(&h, json!({})).await.unwrap();
    assert_eq!(out["cwd"], json!(canon(dir.path())));
    assert_eq!(out["entries"], json!(["present"]));
    let wrote = out["wrote"].as_str().unwrap_or_default();
    assert!(wrote.contains("Read-only file system"), "{out}");
    // A non-zero exit is reported through bwrap.
    let h = build(json!({"argv": [script("exit.sh"), "{c}"], "sandbox": true})).unwrap();
    let e = run(&h, json!({"c": 4})).await.unwrap_err();
    assert_eq!(e.code, "command_exit");
    assert!(e.message.contains("exit status 4"), "{}", e.message);
}

#[tokio::test]
async fn dropping_a_sandboxed_run_kills_everything_in_it() {
    if !sandbox_available() {
        return;
    }
    let dir = host_dir();
    let w = canon(dir.path());
    let ticks = w.join("ticks");
    let h = build(json!({"argv": [script("ticks.py"), ticks], "sandbox": true, "writable": [w]}))
        .unwrap();
    let size = || std::fs::metadata(&ticks).map(|m| m.len()).unwrap_or(0);
    let payload = json!({});
    let inv = invocation(&h, &payload, CancellationToken::new());
    let mut fut = h.run(&inv);
    tokio::select! {
        r = &mut fut => panic!("the run ended by itself: {r:?}"),
        () = eventually("the sandboxed grandchild writes", Duration::from_secs(10), || size() > 0) => {}
    }
    // What the engine does at its deadline.
    drop(fut);
    // Once the writes stop they never start again: nothing is left running in the sandbox.
    let stable_since = std::cell::Cell::new((size(), std::time::Instant::now()));
    eventually(
        "the sandboxed grandchild stopped writing",
        Duration::from_secs(5),
        || {
            let (last, since) = stable_since.get();
            let now = size();
            if now != last {
                stable_since.set((now, std::time::Instant::now()));
                return false;
            }
            since.elapsed() > Duration::from_millis(500)
        },
    )
    .await;
    let settled = size();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(size(), settled, "something in the sandbox still writes");
}

#[tokio::test]
async fn a_timeout_in_the_sandbox_is_an_unknown_outcome() {
    if !sandbox_available() {
        return;
    }
    let h = build_with(
        json!({"argv": ["/bin/sleep", "300"], "sandbox": true}),
        true,
        Duration::from_millis(1500),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let e = run(&h, json!({})).await.unwrap_err();
    assert_eq!(e.code, "outcome_unknown");
    assert!(e.unknown);
    assert!(started.elapsed() < Duration::from_secs(10));
}
