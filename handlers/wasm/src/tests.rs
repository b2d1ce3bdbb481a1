//! Modules written in the text format, compiled with `wat` into a temporary folder, so `build`
//! reads a real file and checks its hash.

use std::path::Path;
use std::time::Duration;

use openexec_handler::{CancellationToken, Kind};
use serde_json::json;

use super::*;

/// Memory, a bump allocator exported as `alloc`, and `$ret(ptr, len)` packing the answer. Data
/// below 4096 is the module's own constants.
const PRELUDE: &str = r#"
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 4096))
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (local.set $p (global.get $next))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (local.get $have)) (i32.const 16)) (i32.const 1)))
              (i32.const -1))
          (then unreachable))))
    (global.set $next (local.get $end))
    (local.get $p))
  (func $ret (param $p i32) (param $n i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $n))))
"#;

fn module_with(body: &str) -> String {
    format!("(module {PRELUDE} {body})")
}

/// Answers `{"echo": <payload>, "runs": <runs of this instance>}`: `runs` is 1 whenever every
/// run gets a fresh instance.
const ECHO: &str = r#"
  (global $runs (mut i32) (i32.const 0))
  (data (i32.const 0) "{\"echo\":")
  (data (i32.const 16) ",\"runs\":")
  (func (export "run") (param $p i32) (param $n i32) (result i64)
    (local $out i32) (local $len i32)
    (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
    (local.set $len (i32.add (local.get $n) (i32.const 18)))
    (local.set $out (call $alloc (local.get $len)))
    (memory.copy (local.get $out) (i32.const 0) (i32.const 8))
    (memory.copy (i32.add (local.get $out) (i32.const 8)) (local.get $p) (local.get $n))
    (memory.copy (i32.add (local.get $out) (i32.add (local.get $n) (i32.const 8))) (i32.const 16) (i32.const 8))
    (i32.store8 (i32.add (local.get $out) (i32.add (local.get $n) (i32.const 16)))
      (i32.add (i32.const 48) (global.get $runs)))
    (i32.store8 (i32.add (local.get $out) (i32.add (local.get $n) (i32.const 17))) (i32.const 125))
    (call $ret (local.get $out) (local.get $len)))
"#;

/// Upper-cases ASCII letters of the payload's canonical JSON in place and answers it.
const UPPER: &str = r#"
  (func (export "run") (param $p i32) (param $n i32) (result i64)
    (local $i i32) (local $c i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $c (i32.load8_u (i32.add (local.get $p) (local.get $i))))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
          (then (i32.store8 (i32.add (local.get $p) (local.get $i)) (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $ret (local.get $p) (local.get $n)))
"#;

const SPIN: &str = r#"
  (func (export "run") (param i32 i32) (result i64)
    (loop $l (br $l))
    (i64.const 0))
"#;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("temporary folder"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Compile `wat` into `file` (relative to the folder); answers the file's SHA-256.
    fn write(&self, file: &str, wat: &str) -> String {
        let bytes = wat::parse_str(wat).expect("test module compiles");
        let path = self.path().join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, &bytes).unwrap();
        openexec_core::json::sha256_hex(&bytes)
    }

    fn build(&self, settings: Value) -> Result<WasmHandler, String> {
        WasmHandler::build(&spec(self.path(), &settings))
    }

    /// Write `wat` as `m.wasm` and build a handler for it with `extra` settings.
    fn handler(&self, wat: &str, extra: Value) -> WasmHandler {
        let sha = self.write("m.wasm", wat);
        let mut settings = json!({"module": "m.wasm", "sha256": sha});
        if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        self.build(settings).expect("module builds")
    }
}

fn spec<'a>(base_dir: &'a Path, settings: &'a Value) -> Spec<'a> {
    Spec {
        action: "score",
        settings,
        base_dir,
        timeout: Duration::from_secs(30),
        effects: false,
        digest: "config-entry-digest",
    }
}

async fn run_until(
    h: &WasmHandler,
    payload: &Value,
    deadline: tokio::time::Instant,
    cancel: CancellationToken,
) -> Result<Value, HandlerError> {
    let inv = Invocation {
        exec_id: "x",
        tenant_id: "t",
        action: "score",
        nonce: "n",
        payload,
        deadline,
        cancel,
    };
    h.run(&inv).await
}

async fn run(h: &WasmHandler, payload: Value) -> Result<Value, HandlerError> {
    run_until(
        h,
        &payload,
        tokio::time::Instant::now() + Duration::from_secs(30),
        CancellationToken::new(),
    )
    .await
}

fn code(r: Result<Value, HandlerError>) -> (String, String) {
    let e = r.expect_err("the run fails");
    (e.code, e.message)
}

#[tokio::test]
async fn echo_answers_the_payload_from_a_fresh_instance() {
    let f = Fixture::new();
    let h = f.handler(&module_with(ECHO), json!({}));
    let payload = json!({"b": [1, 2.5, "é"], "a": {"z": null, "y": true}});
    for _ in 0..3 {
        // `runs` stays 1: nothing of one run's instance is left for the next.
        assert_eq!(
            run(&h, payload.clone()).await.unwrap(),
            json!({"echo": payload, "runs": 1})
        );
    }
}

#[tokio::test]
async fn transform_sees_the_canonical_json() {
    let f = Fixture::new();
    let h = f.handler(&module_with(UPPER), json!({}));
    // The module gets JCS bytes: members sorted, no whitespace.
    assert_eq!(
        run(&h, json!({"b": "hi", "a": ["x"]})).await.unwrap(),
        json!({"A": ["X"], "B": "HI"})
    );
}

#[tokio::test]
async fn same_input_gives_one_result() {
    let f = Fixture::new();
    let h = f.handler(&module_with(ECHO), json!({}));
    let payload = json!({"n": 12345, "s": "x".repeat(300), "f": 0.1});
    let mut hashes = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let v = run(&h, payload.clone()).await.unwrap();
        hashes.insert(openexec_core::json::jcs_sha256(&v));
    }
    assert_eq!(hashes.len(), 1, "{hashes:?}");
}

#[tokio::test]
async fn kind_builds_a_handler_pinning_the_module() {
    let f = Fixture::new();
    let sha = f.write("mods/score.wasm", &module_with(ECHO));
    let settings = json!({"module": "mods/score.wasm", "sha256": sha});
    let kind = WasmKind;
    assert_eq!(kind.name(), "wasm");
    assert!(!kind.default_effects(&settings));
    let h = kind.build(&spec(f.path(), &settings)).unwrap();
    assert_eq!(h.name(), "wasm:score");
    assert_eq!(h.kind(), "wasm");
    assert_eq!(h.digest(), sha, "the digest is the module's hash");
    assert!(!h.effects());
    assert_eq!(h.timeout(), Duration::from_secs(30));
    assert!(h.validate(&json!({"any": "thing"})).is_ok());
    // an absolute path is taken as it is
    let abs = f.path().join("mods/score.wasm");
    let settings = json!({"module": abs.to_str().unwrap(), "sha256": sha});
    assert!(kind
        .build(&spec(Path::new("/nonexistent"), &settings))
        .is_ok());
    assert_eq!(kind.health().unwrap()["available"], json!(true));
    // `effects` and `timeout` are the loader's, passed through
    let settings = json!({"module": "mods/score.wasm", "sha256": sha});
    let mut with_effects = spec(f.path(), &settings);
    with_effects.effects = true;
    with_effects.timeout = Duration::from_millis(1500);
    let h = kind.build(&with_effects).unwrap();
    assert!(h.effects());
    assert_eq!(h.timeout(), Duration::from_millis(1500));
}

#[tokio::test]
async fn call_indirect_through_a_table_works() {
    // What rustc emits for dynamic calls (reference-types encoding of call_indirect).
    let f = Fixture::new();
    let h = f.handler(
        &module_with(
            r#"
      (type $t (func (result i64)))
      (table 2 funcref)
      (elem (i32.const 1) $answer)
      (data (i32.const 0) "42")
      (func $answer (result i64) (call $ret (i32.const 0) (i32.const 2)))
      (func (export "run") (param i32 i32) (result i64)
        (call_indirect (type $t) (i32.const 1)))
    "#,
        ),
        json!({}),
    );
    assert_eq!(run(&h, json!({})).await.unwrap(), json!(42));
}

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel() {
    let f = Fixture::new();
    let h = f.handler(&module_with(SPIN), json!({"fuel": 1_000_000}));
    let started = Instant::now();
    let (c, m) = code(run(&h, json!({})).await);
    assert_eq!(c, "wasm_out_of_fuel", "{m}");
    assert!(m.contains("`run` used up its fuel (fuel = 1000000)"), "{m}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn start_function_is_bound_by_fuel_too() {
    let f = Fixture::new();
    let h = f.handler(
        &module_with(&format!(
            "(func $s (loop $l (br $l))) (start $s) {}",
            r#"(func (export "run") (param i32 i32) (result i64) (i64.const 0))"#
        )),
        json!({"fuel": 100_000}),
    );
    let (c, m) = code(run(&h, json!({})).await);
    assert_eq!(c, "wasm_out_of_fuel", "{m}");
    assert!(m.contains("instantiating"), "{m}");
}

#[tokio::test]
async fn memory_bomb_runs_out_of_memory() {
    let f = Fixture::new();
    let h = f.handler(
        &module_with(
            r#"
      (func (export "run") (param i32 i32) (result i64)
        (loop $l (drop (memory.grow (i32.const 1))) (br $l))
        (i64.const 0))
    "#,
        ),
        // plenty of fuel: memory is what stops it
        json!({"memory_bytes": 1 << 20, "fuel": 1u64 << 40}),
    );
    let (c, m) = code(run(&h, json!({})).await);
    assert_eq!(c, "wasm_out_of_memory", "{m}");
    assert!(m.contains("1048576"), "{m}");
    assert!(m.contains(&(17 * 65536).to_string()), "{m}");
}

#[tokio::test]
async fn growth_past_the_modules_own_maximum_answers_minus_one() {
    // The module's own limit is the WebAssembly specification's business (memory.grow gives
    // -1), not an out-of-memory failure.
    let f = Fixture::new();
    let wat = module_with(
        r#"
      (data (i32.const 0) "true")
      (data (i32.const 8) "false")
      (func (export "run") (param i32 i32) (result i64)
        (if (result i64) (i32.eq (memory.grow (i32.const 5)) (i32.const -1))
          (then (call $ret (i32.const 0) (i32.const 4)))
          (else (call $ret (i32.const 8) (i32.const 5)))))
    "#,
    )
    .replace(
        r#"(memory (export "memory") 1)"#,
        r#"(memory (export "memory") 1 2)"#,
    );
    let h = f.handler(&wat, json!({}));
    assert_eq!(run(&h, json!({})).await.unwrap(), json!(true));
}

#[tokio::test]
async fn payload_larger_than_memory_is_out_of_memory() {
    let f = Fixture::new();
    let h = f.handler(&module_with(ECHO), json!({"memory_bytes": 65536}));
    let (c, m) = code(run(&h, json!({"s": "x".repeat(70_000)})).await);
    assert_eq!(c, "wasm_out_of_memory", "{m}");
    // one that fits but makes alloc grow past the limit
    let (c, m) = code(run(&h, json!({"s": "x".repeat(62_000)})).await);
    assert_eq!(c, "wasm_out_of_memory", "{m}");
    assert!(m.contains("`alloc` tried to grow memory"), "{m}");
}

#[tokio::test]
async fn traps_are_named() {
    let f = Fixture::new();
    let h = f.handler(
        &module_with(r#"(func (export "run") (param i32 i32) (result i64) unreachable)"#),
        json!({}),
    );
    let (c, m) = code(run(&h, json!({})).await);
    assert_eq!(c, "wasm_trap", "{m}");
    assert!(
        m.contains("`run` trapped") && m.contains("unreachable"),
        "{m}"
    );

    let h = f.handler(
        &module_with(
            r#"(func (export "run") (param $p i32) (param $n i32) (result i64)
                 (i64.extend_i32_u (i32.div_u (i32.const 1) (i32.sub (local.get $n) (local.get $n)))))"#,
        ),
        json!({}),
    );
    let (c, m) = code(run(&h, json!({})).await);
    assert_eq!(c, "wasm_trap", "{m}");
    assert!(m.contains("divide by zero"), "{m}");

    let h = f.handler(
        &module_with(
            r#"(func (export "run") (param i32 i32) (result i64)
                 (i64.load (i32.const 0x7fffffff)))"#,
        ),
        json!({}),
    );
    let (c, m) = code(run(&h, json!({})).await);
    assert_eq!(c, "wasm_trap", "{m}");
    assert!(m.contains("out of bounds"), "{m}");
}

/// A module whose `run` answers `(ptr, len)` over `data` written at 0.
fn answering(data: &str, ptr: u32, len: u32) -> String {
    module_with(&format!(
        r#"(data (i32.const 0) "{data}")
           (func (export "run") (param i32 i32) (result i64)
             (call $ret (i32.const {ptr}) (i32.const {len})))"#,
        ptr = ptr as i32,
        len = len as i32,
    ))
}

#[tokio::test]
async fn bad_output_is_refused() {
    let f = Fixture::new();
    for (what, wat, needle) in [
        ("invalid UTF-8", answering(r"\ff\fe\fd", 0, 3), "not UTF-8"),
        ("not JSON", answering("hello", 0, 5), "invalid_json"),
        (
            "duplicate key",
            answering(r#"{\"a\":1,\"a\":2}"#, 0, 13),
            "duplicate_key",
        ),
        (
            "unsafe integer",
            answering("9007199254740993", 0, 16),
            "number_out_of_range",
        ),
        ("empty", answering("", 0, 0), "invalid_json"),
        (
            "past the end",
            answering("{}", 65_535, 2),
            "outside the module's memory",
        ),
        (
            "far out",
            answering("{}", u32::MAX, u32::MAX),
            "outside the module's memory",
        ),
    ] {
        let h = f.handler(&wat, json!({}));
        let (c, m) = code(run(&h, json!({})).await);
        assert_eq!(c, "wasm_bad_output", "{what}: {m}");
        assert!(m.contains(needle), "{what}: {m}");
    }
    // and the same data read right is fine
    let h = f.handler(&answering(r#"{\"a\":1}"#, 0, 7), json!({}));
    assert_eq!(run(&h, json!({})).await.unwrap(), json!({"a": 1}));
}

#[tokio::test]
async fn alloc_out_of_bounds_is_bad_output() {
    let f = Fixture::new();
    let h = f.handler(
        r#"(module
             (memory (export "memory") 1)
             (func (export "alloc") (param i32) (result i32) (i32.const 0x7fff0000))
             (func (export "run") (param i32 i32) (result i64) (i64.const 0)))"#,
        json!({}),
    );
    let (c, m) = code(run(&h, json!({"a": 1})).await);
    assert_eq!(c, "wasm_bad_output", "{m}");
    assert!(m.contains("alloc(7) returned 2147418112"), "{m}");
}

#[tokio::test]
async fn nan_results_are_canonical() {
    // 0/0 computed from the input (so nothing is folded at compile time): x86's divsd gives
    // the negative "default NaN" 0xfff8000000000000; with NaN canonicalisation every NaN a
    // float operation produces is 0x7ff8000000000000, on any machine.
    let f = Fixture::new();
    let h = f.handler(
        &module_with(
            r#"
      (data (i32.const 0) "0123456789abcdef")
      (func (export "run") (param $p i32) (param $n i32) (result i64)
        (local $x f64) (local $bits i64) (local $out i32) (local $i i32)
        (local.set $x (f64.convert_i32_u (i32.load8_u (local.get $p))))
        (local.set $bits (i64.reinterpret_f64
          (f64.div (f64.sub (local.get $x) (local.get $x)) (f64.sub (local.get $x) (local.get $x)))))
        (local.set $out (call $alloc (i32.const 18)))
        (i32.store8 (local.get $out) (i32.const 34))
        (i32.store8 (i32.add (local.get $out) (i32.const 17)) (i32.const 34))
        (loop $l
          (i32.store8 (i32.add (local.get $out) (i32.add (local.get $i) (i32.const 1)))
            (i32.load8_u (i32.wrap_i64 (i64.and
              (i64.shr_u (local.get $bits)
                (i64.extend_i32_u (i32.sub (i32.const 60) (i32.shl (local.get $i) (i32.const 2)))))
              (i64.const 15)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 16))))
        (call $ret (local.get $out) (i32.const 18)))
    "#,
        ),
        json!({}),
    );
    assert_eq!(
        run(&h, json!({"x": 1})).await.unwrap(),
        json!("7ff8000000000000")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_run_promptly() {
    let f = Fixture::new();
    // Fuel enough for hours: only the cancellation can stop it.
    let h = f.handler(&module_with(SPIN), json!({"fuel": 1u64 << 62}));
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        })
    };
    let started = Instant::now();
    let payload = json!({});
    let far = tokio::time::Instant::now() + Duration::from_secs(600);
    let (c, m) = code(run_until(&h, &payload, far, cancel).await);
    let took = started.elapsed();
    canceller.await.unwrap();
    assert_eq!(c, "wasm_interrupted", "{m}");
    assert!(m.contains("cancelled"), "{m}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // the thread is done too
    assert_eq!(h.running.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_stops_a_run_promptly() {
    let f = Fixture::new();
    let h = f.handler(&module_with(SPIN), json!({"fuel": 1u64 << 62}));
    let started = Instant::now();
    let payload = json!({});
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    let (c, m) = code(run_until(&h, &payload, deadline, CancellationToken::new()).await);
    let took = started.elapsed();
    assert_eq!(c, "wasm_interrupted", "{m}");
    assert!(m.contains("deadline"), "{m}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(h.running.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_stops_its_thread() {
    let f = Fixture::new();
    let h = f.handler(&module_with(SPIN), json!({"fuel": 1u64 << 62}));
    let payload = json!({});
    let far = tokio::time::Instant::now() + Duration::from_secs(600);
    // What the service does at its deadline: drop the handler's future.
    let cut = tokio::time::timeout(
        Duration::from_millis(200),
        run_until(&h, &payload, far, CancellationToken::new()),
    )
    .await;
    assert!(cut.is_err(), "the spin cannot finish");
    assert_eq!(
        h.running.load(Ordering::SeqCst),
        1,
        "its thread still spins"
    );
    let dropped = Instant::now();
    while h.running.load(Ordering::SeqCst) != 0 {
        assert!(
            dropped.elapsed() < Duration::from_secs(2),
            "the run's thread kept going after its future was dropped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn already_cancelled_runs_nothing() {
    let f = Fixture::new();
    let h = f.handler(&module_with(ECHO), json!({}));
    let cancel = CancellationToken::new();
    cancel.cancel();
    let payload = json!({});
    let far = tokio::time::Instant::now() + Duration::from_secs(30);
    let (c, _) = code(run_until(&h, &payload, far, cancel).await);
    assert_eq!(c, "wasm_interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_runs_than_slots_wait_for_one() {
    let f = Fixture::new();
    let h = Arc::new(f.handler(&module_with(ECHO), json!({})));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..(MAX_CONCURRENT_RUNS * 3) {
        let h = h.clone();
        set.spawn(async move { (i, run(&h, json!({ "i": i })).await) });
    }
    while let Some(joined) = set.join_next().await {
        let (i, r) = joined.unwrap();
        assert_eq!(r.unwrap(), json!({"echo": {"i": i}, "runs": 1}));
    }
}

// ---- start-up refusals ----

#[test]
fn changed_module_is_refused_naming_both_hashes() {
    let f = Fixture::new();
    let pinned = f.write("m.wasm", &module_with(ECHO));
    let now = f.write("m.wasm", &module_with(UPPER));
    let e = f
        .build(json!({"module": "m.wasm", "sha256": pinned}))
        .err()
        .unwrap();
    assert!(e.starts_with("module:"), "{e}");
    assert!(e.contains(&pinned) && e.contains(&now), "{e}");
}

#[test]
fn bad_settings_are_refused_naming_the_key() {
    let f = Fixture::new();
    let sha = f.write("m.wasm", &module_with(ECHO));
    for (settings, needle) in [
        (
            json!({"module": "m.wasm", "sha256": sha, "fuell": 5}),
            "fuell",
        ),
        (json!({"module": "m.wasm"}), "sha256"),
        (json!({"sha256": sha}), "module"),
        (
            json!({"module": ["m.wasm"], "sha256": sha}),
            "module: must be a string",
        ),
        (
            json!({"module": "m.wasm", "sha256": sha.to_uppercase()}),
            "sha256: must be 64 lowercase",
        ),
        (
            json!({"module": "m.wasm", "sha256": &sha[..63]}),
            "sha256: must be 64",
        ),
        (
            json!({"module": "m.wasm", "sha256": sha, "fuel": 0}),
            "fuel:",
        ),
        (
            json!({"module": "m.wasm", "sha256": sha, "fuel": -1}),
            "fuel: must be a whole number, got -1",
        ),
        (
            json!({"module": "m.wasm", "sha256": sha, "memory_bytes": (1u64 << 30) + 1}),
            "memory_bytes:",
        ),
        (
            json!({"module": "m.wasm", "sha256": sha, "memory_bytes": "16MiB"}),
            "memory_bytes: must be a whole number",
        ),
        (
            json!({"module": "m.wasm", "sha256": sha, "fuel": 1.5}),
            "fuel: must be a whole number",
        ),
        (
            json!({"module": "m.wasm", "sha256": 7}),
            "sha256: must be a string, got 7",
        ),
        (
            json!({"module": "m.wasm", "sha256": sha, "memory_bytes": 1000}),
            "memory_bytes:",
        ),
        (
            json!({"module": "missing.wasm", "sha256": sha}),
            "missing.wasm",
        ),
    ] {
        let e = f.build(settings.clone()).err().expect("refused");
        assert!(e.contains(needle), "{settings}: {e}");
    }
}

#[test]
fn not_a_module_is_refused() {
    let f = Fixture::new();
    let bytes = b"(module)".to_vec(); // the text format is not read
    std::fs::write(f.path().join("m.wasm"), &bytes).unwrap();
    let sha = openexec_core::json::sha256_hex(&bytes);
    let e = f
        .build(json!({"module": "m.wasm", "sha256": sha}))
        .err()
        .unwrap();
    assert!(e.contains("is not a WebAssembly module"), "{e}");
}

#[test]
fn imports_are_refused_naming_them() {
    let f = Fixture::new();
    let sha = f.write(
        "m.wasm",
        &format!(
            r#"(module (import "env" "now" (func (result i64))) (import "wasi" "mem" (memory 1))
                 {}
                 (func (export "alloc") (param i32) (result i32) (i32.const 0))
                 (func (export "run") (param i32 i32) (result i64) (i64.const 0)))"#,
            r#"(export "memory" (memory 0))"#
        ),
    );
    let e = f
        .build(json!({"module": "m.wasm", "sha256": sha}))
        .err()
        .unwrap();
    assert!(
        e.contains("env.now (function)") && e.contains("wasi.mem (memory)"),
        "{e}"
    );
    assert!(e.contains("import nothing"), "{e}");
}

#[test]
fn missing_or_mistyped_exports_are_refused() {
    let f = Fixture::new();
    for (wat, needles) in [
        (
            r#"(module (memory 1)
                 (func (export "alloc") (param i32) (result i32) (i32.const 0))
                 (func (export "run") (param i32 i32) (result i64) (i64.const 0)))"#
                .to_string(),
            vec!["does not export `memory`"],
        ),
        (
            r#"(module (memory (export "memory") 1)
                 (func (export "run") (param i32 i32) (result i64) (i64.const 0)))"#
                .to_string(),
            vec!["does not export `alloc` (i32) -> i32"],
        ),
        (
            r#"(module (memory (export "memory") 1)
                 (func (export "alloc") (param i32) (result i32) (i32.const 0)))"#
                .to_string(),
            vec!["does not export `run` (i32, i32) -> i64"],
        ),
        (
            module_with(r#"(func (export "run") (param i32) (result i32) (i32.const 0))"#),
            vec!["`run` is (i32) -> i32, not (i32, i32) -> i64"],
        ),
        (
            r#"(module (memory (export "memory") 1)
                 (func (export "alloc") (param i64) (result i64) (i64.const 0))
                 (func (export "run") (param i32 i32) (result i64 i64) (i64.const 0) (i64.const 0)))"#
                .to_string(),
            vec![
                "`alloc` is (i64) -> i64, not (i32) -> i32",
                "`run` is (i32, i32) -> (i64, i64)",
            ],
        ),
        (
            r#"(module (memory 1) (global (export "memory") i32 (i32.const 0))
                 (func (export "alloc") (param i32) (result i32) (i32.const 0))
                 (func (export "run") (param i32 i32) (result i64) (i64.const 0)))"#
                .to_string(),
            vec!["export `memory` is a global"],
        ),
    ] {
        let sha = f.write("m.wasm", &wat);
        let e = f
            .build(json!({"module": "m.wasm", "sha256": sha}))
            .err()
            .expect("refused");
        for needle in needles {
            assert!(e.contains(needle), "{wat}: {e}");
        }
    }
}

#[test]
fn declared_memory_above_the_limit_is_refused() {
    let f = Fixture::new();
    let sha = f.write(
        "m.wasm",
        &module_with(r#"(func (export "run") (param i32 i32) (result i64) (i64.const 0))"#)
            .replace(
                r#"(memory (export "memory") 1)"#,
                r#"(memory (export "memory") 32)"#,
            ),
    );
    let e = f
        .build(json!({"module": "m.wasm", "sha256": sha, "memory_bytes": 1 << 20}))
        .err()
        .unwrap();
    assert!(e.contains("starts at 2097152 bytes"), "{e}");
    assert!(f
        .build(json!({"module": "m.wasm", "sha256": sha, "memory_bytes": 2 << 20}))
        .is_ok());
}

#[test]
fn modules_beyond_the_engine_limits_are_refused_at_start_up() {
    let f = Fixture::new();
    let run = r#"(func (export "run") (param i32 i32) (result i64) (i64.const 0))"#;
    for (what, extra, needle) in [
        (
            "two tables",
            "(table 1 funcref) (table 1 funcref)",
            "tables count of 2",
        ),
        (
            "a huge table",
            "(table 200000 funcref)",
            "minimum element size of 200000",
        ),
        ("a second memory", "(memory 1)", "multiple memories"),
    ] {
        let sha = f.write("m.wasm", &module_with(&format!("{extra} {run}")));
        let e = f
            .build(json!({"module": "m.wasm", "sha256": sha}))
            .err()
            .expect("refused");
        assert!(e.starts_with("module:"), "{what}: {e}");
        assert!(e.contains(needle), "{what}: {e}");
    }
}
