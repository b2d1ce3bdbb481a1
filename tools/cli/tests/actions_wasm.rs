//! A `wasm` action through `openexec serve` (SPEC §10): the same input always gives the same
//! `result_hash` (here 100 requests), the receipt pins the module's hash, a trap or a module out
//! of fuel is a `failed` receipt naming which, and a module file that no longer matches its
//! pinned hash stops start-up. Fuel, memory and ABI limits in depth are `handlers/wasm`'s tests.

mod common;

use common::*;
use serde_json::json;

fn module(dir: &std::path::Path, name: &str, wat_text: &str) -> String {
    let bytes = wat::parse_str(wat_text).unwrap();
    std::fs::write(dir.join(name), &bytes).unwrap();
    openexec_core::json::sha256_hex(&bytes)
}

/// The example module, and one that spins forever.
fn registry(dir: &std::path::Path) -> std::path::PathBuf {
    let examples = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/actions/shout.wat"
    );
    let shout = module(
        dir,
        "shout.wasm",
        &std::fs::read_to_string(examples).unwrap(),
    );
    let spin = module(
        dir,
        "spin.wasm",
        r#"(module (memory (export "memory") 1)
             (func (export "alloc") (param i32) (result i32) (i32.const 1024))
             (func (export "run") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0)))"#,
    );
    let file = dir.join("actions.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[actions.shout]
kind = "wasm"
schema = {{ type = "object" }}
[actions.shout.wasm]
module = "shout.wasm"
sha256 = "{shout}"

[actions.spin]
kind = "wasm"
schema = {{ type = "object" }}
[actions.spin.wasm]
module = "spin.wasm"
sha256 = "{spin}"
fuel = 100000
"#
        ),
    )
    .unwrap();
    file
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasm_action_is_deterministic_bounded_and_pinned() {
    let d = tempfile::tempdir().unwrap();
    let file = registry(d.path());
    let s = Server::start(&[("OPENEXEC_ACTIONS", file.to_str().unwrap())]);
    let (_, list) = s.get("/actions").await;
    let shout = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "shout")
        .unwrap()
        .clone();
    assert_eq!(shout["kind"], "wasm");
    assert_eq!(shout["effects"], false);

    let payload = json!({"text": "same input", "n": 1.5});
    let mut hashes = std::collections::BTreeSet::new();
    for i in 0..100 {
        let (st, r) = s
            .execute(&json!({"action": "shout", "payload": payload, "nonce": format!("n{i}")}))
            .await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["result"], json!({"N": 1.5, "TEXT": "SAME INPUT"}));
        assert_eq!(
            r["evidence"]["receipt"]["handler"]["digest"],
            shout["digest"]
        );
        hashes.insert(
            r["evidence"]["receipt"]["result_hash"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(hashes.len(), 1, "{hashes:?}");

    let (st, r) = s
        .execute(&json!({"action": "spin", "payload": {}, "nonce": "s1"}))
        .await;
    assert_eq!(st, 502, "{r}");
    assert_eq!(r["evidence"]["receipt"]["status"], "failed");
    assert_eq!(r["evidence"]["receipt"]["code"], "wasm_out_of_fuel");
    drop(s);

    // The module file changed after it was pinned: the service does not start.
    let mut bytes = std::fs::read(d.path().join("shout.wasm")).unwrap();
    bytes.extend_from_slice(&[0, 3, 1, b'x', 0]); // a custom section: the same code, another file
    std::fs::write(d.path().join("shout.wasm"), bytes).unwrap();
    let f = Server::try_start(&[("OPENEXEC_ACTIONS", file.to_str().unwrap())])
        .err()
        .expect("started with a changed module");
    assert!(f.log.contains("actions.shout:"), "{}", f.log);
    assert!(f.log.contains("sha256"), "{}", f.log);
}
