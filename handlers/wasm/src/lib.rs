//! # openexec-handler-wasm: the `wasm` handler kind (SPEC §10)
//!
//! An action of the registry file whose code is a WebAssembly module: pure computation over the
//! payload, with no access to anything outside it. The module is read, checked against its
//! pinned SHA-256 and compiled once, when the service starts ([`WasmKind`]'s `build`); each run
//! gets a fresh instance with its own fuel and memory budget, on a blocking thread, and its
//! result is read back as I-JSON. Receipts name `wasm:<action>` and pin the module itself: the
//! handler's digest is the module file's SHA-256 (the budgets below are not part of it: they
//! decide whether a run finishes, never what it answers).
//!
//! What it leaves to others: reading the registry file, the payload's schema and the common keys
//! (`timeout_ms`, `effects`, …) are the loader's (`openexec-actions`); claims, receipts and the
//! service-side timeout are the execution service's. Building modules is the user's (see
//! "Building a module" below): this crate only runs them.
//!
//! ## Settings: `[actions.<name>.wasm]`
//!
//! ```toml
//! [actions.score]
//! kind = "wasm"
//! [actions.score.wasm]
//! module = "modules/score.wasm"
//! sha256 = "<64 lowercase hex>"
//! fuel = 10000000
//! memory_bytes = 16777216
//! ```
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `module` | required | Path of the `.wasm` file (binary format; the text format is not read). Relative to the registry file's folder. |
//! | `sha256` | required | The file's SHA-256, 64 lowercase hex characters. A file with another hash is refused at start-up, naming both hashes. |
//! | `fuel` | 10,000,000 ([`DEFAULT_FUEL`]) | Wasmtime fuel for one run (roughly one unit per WebAssembly instruction), shared by the module's start function, `alloc` and `run`. At least 1. |
//! | `memory_bytes` | 16 MiB ([`DEFAULT_MEMORY_BYTES`]) | The most linear memory one run may have, in bytes, from 64 KiB (one page) to 1 GiB ([`MAX_MEMORY_BYTES`]). A module whose declared initial memory is larger is refused at start-up. |
//!
//! Any other key is refused, naming it. `effects` defaults to false for this kind: a module
//! imports nothing, so it cannot touch anything outside its own memory.
//!
//! ## The ABI
//!
//! The module must **import nothing** (no functions, memories, tables or globals: a module with
//! any import is refused at start-up, naming each import) and must **export**:
//!
//! - `memory`: its linear memory (32-bit, not shared);
//! - `alloc(len: i32) -> i32`: reserve `len` bytes and return where they start;
//! - `run(ptr: i32, len: i32) -> i64`: compute over the `len` input bytes at `ptr` and return
//!   where the output is: `(out_ptr << 32) | out_len`, both read as unsigned 32-bit numbers.
//!
//! A missing export or one of another type is refused at start-up, naming it. Each run:
//!
//! 1. instantiates the module afresh (nothing survives from one run to the next);
//! 2. calls `alloc(len)` and writes there the payload's canonical JSON (RFC 8785 / JCS: the bytes
//!    that are hashed into the request, so equal payloads give the module equal bytes);
//! 3. calls `run(ptr, len)` and reads `out_len` bytes at `out_ptr`, which must lie within
//!    `memory`, be UTF-8 and parse as I-JSON (no duplicate keys, integers within ±(2^53−1), at
//!    most 64 levels deep): that value is the action's result.
//!
//! The engine is Wasmtime 48 (Cranelift) with NaN canonicalisation (every NaN a float operation
//! produces is the one canonical NaN, whatever the CPU would have given) and deterministic
//! relaxed SIMD, no threads, no multiple memories, no WASI and no host functions at all, so a
//! run is a pure function of the module and the payload: the same payload gives the same result
//! every time, on any machine (a run that hits a limit fails the same way every time, too; only
//! the depth at which the native stack overflows could differ between CPU architectures).
//!
//! ## Error codes
//!
//! Each is a `failed` receipt with this code: the module cannot have effects outside, so this
//! handler never reports an unknown outcome. (A run the service cuts off at its deadline before
//! the handler stops by itself is the service's to record: SPEC §5, `handler_timeout`, or
//! `interrupted` for an action configured with `effects = true`.)
//!
//! | code | when |
//! | --- | --- |
//! | `wasm_bad_output` | the output range lies outside `memory`, or is not UTF-8, or is not I-JSON; or `alloc` returned a range outside `memory` |
//! | `wasm_trap` | the module trapped (`unreachable`, out-of-bounds access, division by zero, stack overflow, …): the message names the trap and the step (start, `alloc`, `run`) |
//! | `wasm_out_of_fuel` | the run used up its `fuel` |
//! | `wasm_out_of_memory` | the module tried to grow its memory beyond `memory_bytes` (the growth traps rather than answering −1, so the run stops there), or the payload alone does not fit |
//! | `wasm_interrupted` | the run was stopped because its deadline (`timeout_ms`) passed or the service cancelled it (shutting down), or was still waiting for a slot then; the message says which. One code for both: either way the module did not finish, and nothing outside changed |
//! | `wasm_error` | anything else the engine refused (should not happen; the message says what) |
//!
//! A run is stopped at its deadline or on cancellation within about [`TICK`] (Wasmtime's epoch
//! interruption, checked at function entries and loop heads), so a run the service gave up on
//! does not keep a core busy until its fuel runs out; dropping the run's future stops it the
//! same way.
//!
//! ## Building a module
//!
//! Any language that compiles to `wasm32` without WASI imports will do (this machine has no
//! `wasm32` target, so modules are built elsewhere and copied here with their hash). In Rust (on
//! a machine with the target: `rustup target add wasm32-unknown-unknown`), a `cdylib` crate;
//! what current rustc emits for that target (reference types, multi-value, bulk memory, sign
//! extension, non-trapping float-to-int) is accepted:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//! [profile.release]
//! panic = "abort"
//! ```
//! ```text
//! // src/lib.rs of the module crate (not of this one)
//! use std::alloc::{alloc as host_alloc, Layout};
//!
//! #[no_mangle] // edition 2024: #[unsafe(no_mangle)]
//! pub extern "C" fn alloc(len: i32) -> i32 {
//!     let layout = Layout::from_size_align(len.max(1) as usize, 1).unwrap();
//!     unsafe { host_alloc(layout) as i32 }
//! }
//!
//! #[no_mangle]
//! pub extern "C" fn run(ptr: i32, len: i32) -> i64 {
//!     let input = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) };
//!     let payload: serde_json::Value = serde_json::from_slice(input).unwrap();
//!     let out = serde_json::to_vec(&serde_json::json!({"score": score(&payload)})).unwrap();
//!     let out = out.leak(); // lives until the instance is dropped after the run
//!     ((out.as_ptr() as i64) << 32) | out.len() as i64
//! }
//! ```
//! then `cargo build --release --target wasm32-unknown-unknown` and take
//! `target/wasm32-unknown-unknown/release/<crate>.wasm`; `sha256sum` of that file is the
//! `sha256` setting. Check that it imports nothing (`wasm-tools print x.wasm | grep import`, or
//! `wasm-objdump -x`): code that reaches for the clock, randomness or I/O pulls in imports and
//! is refused. A panic is an `unreachable` trap (`wasm_trap`).
//!
//! Elsewhere: C with `clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -Wl,--export=alloc
//! -Wl,--export=run` (and a bump allocator of its own; `wasm-ld` exports `memory` by itself),
//! Zig with `zig build-exe -target wasm32-freestanding -fno-entry -rdynamic`, or the text format
//! by hand with `wasm-tools parse` / `wat2wasm` (this crate's tests write their modules that
//! way). Whatever the toolchain, check the output for imports: runtimes that need a host (WASI,
//! Go's `gojs`, AssemblyScript's default `env.abort`) are refused until configured away.
//!
//! ## Resources
//!
//! One Wasmtime engine per process (made by the first `build`), with the pooling allocator
//! sized for [`MAX_CONCURRENT_RUNS`] instances of one memory and one table each (memory slots of
//! up to [`MAX_MEMORY_BYTES`], reserved as address space, not committed); a module that does not
//! fit a slot is refused at start-up. Runs beyond that many wait for a slot (still bound by
//! their deadline and cancellation). Runs are CPU work and go to tokio's blocking threads, never
//! the async ones. A ticker thread advances the engine's epoch every [`TICK`] while a run is in
//! progress, and sleeps otherwise.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use openexec_handler::{Handler, HandlerError, HandlerFuture, Invalid, Invocation, Spec};
use serde::Deserialize;
use serde_json::Value;
use wasmtime::{
    Config, Engine, ExternType, FuncType, Instance, InstanceAllocationStrategy, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Strategy, Trap, UpdateDeadline, ValType,
};

/// `fuel` when the settings do not say.
pub const DEFAULT_FUEL: u64 = 10_000_000;
/// `memory_bytes` when the settings do not say: 16 MiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 16 << 20;
/// The largest `memory_bytes` accepted: 1 GiB (also the size of each memory slot of the pool).
pub const MAX_MEMORY_BYTES: u64 = 1 << 30;
/// The smallest `memory_bytes` accepted: one WebAssembly page.
pub const MIN_MEMORY_BYTES: u64 = WASM_PAGE;
/// How many runs (instances) may exist at once in this process; more wait for a slot.
pub const MAX_CONCURRENT_RUNS: u32 = 32;
/// How often a run's deadline and cancellation are looked at.
pub const TICK: Duration = Duration::from_millis(10);

const WASM_PAGE: u64 = 65_536;
/// Elements a table of a run may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The `wasm` kind of the registry file: builds a handler per `[actions.<name>.wasm]` table
/// (see the crate documentation for its settings and ABI).
pub struct WasmKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WasmSettings {
    #[serde(deserialize_with = "module")]
    module: String,
    #[serde(deserialize_with = "sha256")]
    sha256: String,
    #[serde(default = "default_fuel", deserialize_with = "fuel")]
    fuel: u64,
    #[serde(default = "default_memory_bytes", deserialize_with = "memory_bytes")]
    memory_bytes: u64,
}

/// A whole number of `key`, with a message naming the key (serde's own does not).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D, key: &str) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    v.as_u64()
        .ok_or_else(|| serde::de::Error::custom(format!("{key}: must be a whole number, got {v}")))
}

/// A string of `key`, with a message naming the key.
fn text<'de, D: serde::Deserializer<'de>>(d: D, key: &str) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        v => Err(serde::de::Error::custom(format!(
            "{key}: must be a string, got {v}"
        ))),
    }
}

fn module<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    text(d, "module")
}

fn sha256<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    text(d, "sha256")
}

fn fuel<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    whole_number(d, "fuel")
}

fn memory_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    whole_number(d, "memory_bytes")
}

fn default_fuel() -> u64 {
    DEFAULT_FUEL
}

fn default_memory_bytes() -> u64 {
    DEFAULT_MEMORY_BYTES
}

impl openexec_handler::Kind for WasmKind {
    fn name(&self) -> &'static str {
        "wasm"
    }

    /// False: a module imports nothing, so a run cannot be observed outside.
    fn default_effects(&self, _settings: &Value) -> bool {
        false
    }

    fn build(&self, spec: &Spec<'_>) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(WasmHandler::build(spec)?))
    }

    fn health(&self) -> Option<Value> {
        Some(match runtime() {
            Ok(_) => serde_json::json!({
                "available": true,
                "engine": "wasmtime",
                "max_concurrent_runs": MAX_CONCURRENT_RUNS,
            }),
            Err(e) => serde_json::json!({"available": false, "error": e}),
        })
    }
}

/// The process's engine, the semaphore over its instance pool and the epoch ticker.
struct Runtime {
    engine: Engine,
    slots: Arc<tokio::sync::Semaphore>,
    ticker: Arc<Ticker>,
}

static RUNTIME: OnceLock<Result<Arc<Runtime>, String>> = OnceLock::new();

fn runtime() -> Result<Arc<Runtime>, String> {
    RUNTIME.get_or_init(new_runtime).clone()
}

fn new_runtime() -> Result<Arc<Runtime>, String> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(MAX_CONCURRENT_RUNS)
        .total_memories(MAX_CONCURRENT_RUNS)
        .total_tables(MAX_CONCURRENT_RUNS)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_memory_size(MAX_MEMORY_BYTES as usize);
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .wasm_multi_memory(false)
        .strategy(Strategy::Cranelift)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config)
        .map_err(|e| format!("cannot create the WebAssembly engine (wasmtime): {e:#}"))?;
    let ticker = Arc::new(Ticker::default());
    {
        let engine = engine.clone();
        let ticker = ticker.clone();
        std::thread::Builder::new()
            .name("openexec-wasm-epoch".into())
            .spawn(move || ticker.run(&engine))
            .map_err(|e| format!("cannot start the WebAssembly epoch thread: {e}"))?;
    }
    Ok(Arc::new(Runtime {
        engine,
        slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_RUNS as usize)),
        ticker,
    }))
}

/// Advances the engine's epoch every [`TICK`] while at least one run is in progress.
#[derive(Default)]
struct Ticker {
    active: Mutex<usize>,
    wake: Condvar,
}

impl Ticker {
    fn run(&self, engine: &Engine) {
        loop {
            {
                let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
                while *active == 0 {
                    active = self.wake.wait(active).unwrap_or_else(|e| e.into_inner());
                }
            }
            std::thread::sleep(TICK);
            engine.increment_epoch();
        }
    }

    fn enter(self: &Arc<Self>) -> TickerGuard {
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.wake.notify_all();
        TickerGuard(self.clone())
    }
}

/// One run in progress, for the ticker.
struct TickerGuard(Arc<Ticker>);

impl Drop for TickerGuard {
    fn drop(&mut self) {
        let mut active = self.0.active.lock().unwrap_or_else(|e| e.into_inner());
        *active = active.saturating_sub(1);
    }
}

/// A `wasm` action: its compiled module and the budgets of one run.
struct WasmHandler {
    name: String,
    digest: String,
    effects: bool,
    timeout: Duration,
    runtime: Arc<Runtime>,
    module: Module,
    fuel: u64,
    memory_bytes: usize,
    /// Runs of this handler whose thread is still going (tests watch it drop to zero).
    running: Arc<AtomicUsize>,
}

impl WasmHandler {
    fn build(spec: &Spec<'_>) -> Result<WasmHandler, String> {
        let settings: WasmSettings = spec.settings()?;
        if !is_sha256_hex(&settings.sha256) {
            return Err(format!(
                "sha256: must be 64 lowercase hexadecimal characters (the module file's SHA-256), got {:?}",
                settings.sha256
            ));
        }
        if settings.fuel == 0 {
            return Err("fuel: must be at least 1 (it is the run's instruction budget)".into());
        }
        if !(MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&settings.memory_bytes) {
            return Err(format!(
                "memory_bytes: must be from {MIN_MEMORY_BYTES} (one page) to {MAX_MEMORY_BYTES} (1 GiB), got {}",
                settings.memory_bytes
            ));
        }
        let path = spec.path(&settings.module);
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("module: cannot read {}: {e}", path.display()))?;
        let actual = openexec_core::json::sha256_hex(&bytes);
        if actual != settings.sha256 {
            return Err(format!(
                "module: {} has SHA-256 {actual}, but sha256 says {}; the file changed, or the setting is stale",
                path.display(),
                settings.sha256
            ));
        }
        let runtime = runtime()?;
        let module = Module::from_binary(&runtime.engine, &bytes).map_err(|e| {
            format!(
                "module: {} is not a WebAssembly module this engine accepts (or it is beyond the engine's limits): {e:#}",
                path.display()
            )
        })?;
        check_module(&module, &path, settings.memory_bytes)?;
        Ok(WasmHandler {
            name: format!("wasm:{}", spec.action),
            digest: actual,
            effects: spec.effects,
            timeout: spec.timeout,
            runtime,
            module,
            fuel: settings.fuel,
            // within 1 GiB, so it fits
            memory_bytes: usize::try_from(settings.memory_bytes).unwrap_or(usize::MAX),
            running: Arc::new(AtomicUsize::new(0)),
        })
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The ABI checks of SPEC §10, each failure naming what is wrong.
fn check_module(module: &Module, path: &Path, memory_bytes: u64) -> Result<(), String> {
    let imports: Vec<String> = module
        .imports()
        .map(|i| format!("{}.{} ({})", i.module(), i.name(), extern_kind(&i.ty())))
        .collect();
    if !imports.is_empty() {
        return Err(format!(
            "module: {} imports {}; a wasm action's module may import nothing (SPEC §10)",
            path.display(),
            imports.join(", ")
        ));
    }
    let mut problems = Vec::new();
    match module.get_export("memory") {
        None => problems.push("it does not export `memory`".to_string()),
        Some(ExternType::Memory(m)) => {
            if m.is_64() {
                problems.push("its `memory` is 64-bit; the ABI uses 32-bit pointers".into());
            }
            if m.is_shared() {
                problems.push("its `memory` is shared".into());
            }
            let min = m.minimum().saturating_mul(m.page_size());
            if min > memory_bytes {
                problems.push(format!(
                    "its `memory` starts at {min} bytes, more than memory_bytes ({memory_bytes})"
                ));
            }
        }
        Some(other) => problems.push(format!(
            "its export `memory` is a {}, not a memory",
            extern_kind(&other)
        )),
    }
    check_func(
        module,
        "alloc",
        &[ValType::I32],
        &ValType::I32,
        &mut problems,
    );
    check_func(
        module,
        "run",
        &[ValType::I32, ValType::I32],
        &ValType::I64,
        &mut problems,
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "module: {} does not follow the wasm ABI (exports memory, alloc(i32) -> i32, run(i32, i32) -> i64): {}",
            path.display(),
            problems.join("; ")
        ))
    }
}

fn check_func(
    module: &Module,
    name: &str,
    params: &[ValType],
    result: &ValType,
    problems: &mut Vec<String>,
) {
    let want = format!(
        "({}) -> {}",
        params.iter().map(val_name).collect::<Vec<_>>().join(", "),
        val_name(result)
    );
    match module.get_export(name) {
        None => problems.push(format!("it does not export `{name}` {want}")),
        Some(ExternType::Func(f)) => {
            let ok = f.params().len() == params.len()
                && f.params().zip(params).all(|(a, b)| same_val(&a, b))
                && f.results().len() == 1
                && f.results().all(|r| same_val(&r, result));
            if !ok {
                problems.push(format!(
                    "its `{name}` is {}, not {want}",
                    func_signature(&f)
                ));
            }
        }
        Some(other) => problems.push(format!(
            "its export `{name}` is a {}, not a function {want}",
            extern_kind(&other)
        )),
    }
}

fn same_val(a: &ValType, b: &ValType) -> bool {
    matches!(
        (a, b),
        (ValType::I32, ValType::I32) | (ValType::I64, ValType::I64)
    )
}

fn val_name(v: &ValType) -> String {
    match v {
        ValType::I32 => "i32".into(),
        ValType::I64 => "i64".into(),
        ValType::F32 => "f32".into(),
        ValType::F64 => "f64".into(),
        ValType::V128 => "v128".into(),
        ValType::Ref(r) => format!("{r}"),
    }
}

fn func_signature(f: &FuncType) -> String {
    let params: Vec<String> = f.params().map(|p| val_name(&p)).collect();
    let results: Vec<String> = f.results().map(|r| val_name(&r)).collect();
    let results = match results.len() {
        0 => "()".to_string(),
        1 => results.join(""),
        _ => format!("({})", results.join(", ")),
    };
    format!("({}) -> {results}", params.join(", "))
}

fn extern_kind(t: &ExternType) -> &'static str {
    match t {
        ExternType::Func(_) => "function",
        ExternType::Memory(_) => "memory",
        ExternType::Table(_) => "table",
        ExternType::Global(_) => "global",
        ExternType::Tag(_) => "tag",
    }
}

/// Why a run was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Deadline,
    Cancelled,
}

fn interrupted(stop: Stop) -> HandlerError {
    HandlerError::new(
        "wasm_interrupted",
        match stop {
            Stop::Deadline => "the run was stopped: its deadline (timeout_ms) passed",
            Stop::Cancelled => "the run was stopped: the service cancelled it",
        },
    )
}

fn bad_output(message: String) -> HandlerError {
    HandlerError::new("wasm_bad_output", message)
}

/// Sets the stop flag when dropped, so a dropped run future stops its thread.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Counts a run's thread as running until dropped.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn new(counter: &Arc<AtomicUsize>) -> Running {
        counter.fetch_add(1, Ordering::SeqCst);
        Running(counter.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one run's store holds: its limits and what stopped it.
struct RunState {
    memory_bytes: usize,
    fuel: u64,
    stop: Arc<AtomicBool>,
    deadline: Instant,
    /// Set when the epoch callback stopped the run.
    stopped: Option<Stop>,
    /// The size (bytes) a refused memory growth asked for.
    memory_refused: Option<usize>,
}

impl RunState {
    fn should_stop(&self) -> Option<Stop> {
        if self.stop.load(Ordering::SeqCst) {
            Some(Stop::Cancelled)
        } else if Instant::now() >= self.deadline {
            Some(Stop::Deadline)
        } else {
            None
        }
    }
}

/// Refusing a growth raises this (a trap, not −1), so the run stops where memory ran out.
#[derive(Debug, thiserror::Error)]
#[error("memory growth to {desired} bytes refused: the limit is {limit} bytes (memory_bytes)")]
struct MemoryRefused {
    desired: usize,
    limit: usize,
}

/// What the epoch callback raises to stop a run.
#[derive(Debug, thiserror::Error)]
#[error("the run was stopped from outside")]
struct Stopped;

/// Growth past `memory_bytes` is refused with an error, so `memory.grow` traps there and the run
/// is `wasm_out_of_memory`. Growth the module's own declared maximum forbids is not ours to
/// judge: it answers −1, as the WebAssembly specification says (the default
/// `memory_grow_failed`).
impl ResourceLimiter for RunState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_refused = Some(desired);
            return Err(MemoryRefused {
                desired,
                limit: self.memory_bytes,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// What a blocking thread needs for one run.
struct Job {
    runtime: Arc<Runtime>,
    module: Module,
    fuel: u64,
    memory_bytes: usize,
    input: Vec<u8>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
}

/// The step of a run an error happened in, for messages.
#[derive(Clone, Copy)]
enum Step {
    Start,
    Alloc,
    Run,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::Start => "instantiating the module (its start function)",
            Step::Alloc => "`alloc`",
            Step::Run => "`run`",
        }
    }
}

impl Job {
    fn run(self) -> Result<Value, HandlerError> {
        let len = self.input.len();
        if len > self.memory_bytes {
            return Err(HandlerError::new(
                "wasm_out_of_memory",
                format!(
                    "the payload's canonical JSON is {len} bytes, more than memory_bytes ({})",
                    self.memory_bytes
                ),
            ));
        }
        let _ticking = self.runtime.ticker.enter();
        let mut store = Store::new(
            &self.runtime.engine,
            RunState {
                memory_bytes: self.memory_bytes,
                fuel: self.fuel,
                stop: self.stop.clone(),
                deadline: self.deadline,
                stopped: None,
                memory_refused: None,
            },
        );
        if let Some(stop) = store.data().should_stop() {
            return Err(interrupted(stop));
        }
        store.limiter(|s| s);
        store
            .set_fuel(self.fuel)
            .map_err(|e| HandlerError::new("wasm_error", format!("cannot set fuel: {e:#}")))?;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| match ctx.data().should_stop() {
            Some(stop) => {
                ctx.data_mut().stopped = Some(stop);
                Err(Stopped.into())
            }
            None => Ok(UpdateDeadline::Continue(1)),
        });

        let instance = Instance::new(&mut store, &self.module, &[])
            .map_err(|e| failure(e, &store, Step::Start))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| HandlerError::new("wasm_error", "the instance has no `memory`"))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "alloc")
            .map_err(|e| HandlerError::new("wasm_error", format!("alloc: {e:#}")))?;
        let run = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, "run")
            .map_err(|e| HandlerError::new("wasm_error", format!("run: {e:#}")))?;

        // `len` fits in i32: it is at most memory_bytes ≤ 1 GiB.
        let len_i32 = i32::try_from(len).unwrap_or(i32::MAX);
        let ptr = alloc
            .call(&mut store, len_i32)
            .map_err(|e| failure(e, &store, Step::Alloc))?;
        // WebAssembly addresses are unsigned.
        let ptr_u = ptr as u32 as usize;
        memory.write(&mut store, ptr_u, &self.input).map_err(|_| {
            bad_output(format!(
                "alloc({len}) returned {ptr_u}, but {ptr_u}..{} is outside the module's memory ({} bytes)",
                ptr_u as u64 + len as u64,
                memory.data_size(&store)
            ))
        })?;
        let ret = run
            .call(&mut store, (ptr, len_i32))
            .map_err(|e| failure(e, &store, Step::Run))?;
        read_output(memory.data(&store), ret)
    }
}

/// Read the result at `(ret >> 32, ret & 0xffffffff)` as I-JSON.
fn read_output(memory: &[u8], ret: i64) -> Result<Value, HandlerError> {
    let bits = ret as u64;
    let out_ptr = (bits >> 32) as usize;
    let out_len = (bits & 0xffff_ffff) as usize;
    let bytes = out_ptr
        .checked_add(out_len)
        .and_then(|end| memory.get(out_ptr..end))
        .ok_or_else(|| {
            bad_output(format!(
                "run returned the range {out_ptr}..{} (pointer {out_ptr}, length {out_len}), outside the module's memory ({} bytes)",
                out_ptr as u64 + out_len as u64,
                memory.len()
            ))
        })?;
    let text = std::str::from_utf8(bytes).map_err(|e| {
        bad_output(format!(
            "the output ({out_len} bytes at {out_ptr}) is not UTF-8: {e}"
        ))
    })?;
    openexec_core::json::parse_ijson(text.as_bytes(), openexec_core::json::DEFAULT_MAX_DEPTH)
        .map_err(|e| {
            bad_output(format!(
                "the output ({out_len} bytes at {out_ptr}) is not I-JSON ({}): {e}",
                e.code()
            ))
        })
}

/// What an error of the engine during a step means for the receipt.
fn failure(err: wasmtime::Error, store: &Store<RunState>, step: Step) -> HandlerError {
    let state = store.data();
    if let Some(stop) = state.stopped {
        return interrupted(stop);
    }
    if let Some(desired) = state.memory_refused {
        return HandlerError::new(
            "wasm_out_of_memory",
            format!(
                "{} tried to grow memory to {desired} bytes; the limit is {} bytes (memory_bytes)",
                step.describe(),
                state.memory_bytes
            ),
        );
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => HandlerError::new(
            "wasm_out_of_fuel",
            format!(
                "{} used up its fuel (fuel = {})",
                step.describe(),
                state.fuel
            ),
        ),
        Some(trap) => {
            HandlerError::new("wasm_trap", format!("{} trapped: {trap}", step.describe()))
        }
        None => HandlerError::new("wasm_error", format!("{}: {err:#}", step.describe())),
    }
}

impl Handler for WasmHandler {
    fn name(&self) -> &str {
        &self.name
    }

    /// The module file's SHA-256: a receipt pins exactly the code that ran.
    fn digest(&self) -> &str {
        &self.digest
    }

    fn effects(&self) -> bool {
        self.effects
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Nothing of its own: the module gets whatever the action's schema let through.
    fn validate(&self, _payload: &Value) -> Result<(), Invalid> {
        Ok(())
    }

    fn run<'a>(&'a self, inv: &'a Invocation<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            let stop = Arc::new(AtomicBool::new(false));
            // Dropping this future (the service cut the run off) stops the thread too.
            let _stop_on_drop = StopOnDrop(stop.clone());
            let permit = tokio::select! {
                biased;
                _ = inv.cancel.cancelled() => return Err(interrupted(Stop::Cancelled)),
                _ = tokio::time::sleep_until(inv.deadline) => return Err(interrupted(Stop::Deadline)),
                p = self.runtime.slots.clone().acquire_owned() => p.map_err(|_| {
                    HandlerError::new("wasm_error", "the WebAssembly runtime is closed")
                })?,
            };
            let job = Job {
                runtime: self.runtime.clone(),
                module: self.module.clone(),
                fuel: self.fuel,
                memory_bytes: self.memory_bytes,
                input: openexec_core::json::canonicalize(inv.payload),
                stop: stop.clone(),
                deadline: inv.deadline.into_std(),
            };
            let running = Running::new(&self.running);
            let mut task = tokio::task::spawn_blocking(move || {
                // Dropped last: the slot is given back after the store is gone.
                let _permit = permit;
                let _running = running;
                job.run()
            });
            let joined = tokio::select! {
                r = &mut task => r,
                _ = inv.cancel.cancelled() => {
                    stop.store(true, Ordering::SeqCst);
                    task.await
                }
            };
            joined.unwrap_or_else(|e| {
                Err(HandlerError::new(
                    "wasm_error",
                    format!("the run's thread failed: {e}"),
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests;
