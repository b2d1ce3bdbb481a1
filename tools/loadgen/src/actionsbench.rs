//! `--actions-bench`: what each kind of declared action (SPEC §10) costs per call.
//!
//! In one run, against one `openexec serve` (demo mode, a fresh temp dir, SQLite, durability
//! on), started with an action registry file (`OPENEXEC_ACTIONS`) this tool writes, with the
//! same client settings throughout (connections, warmup, duration; every request with a nonce
//! never used before and the payload `{"n": N}`), `POST /execute` of, one after another:
//!
//! 1. `echo`: the built-in, the baseline every other row is compared with;
//! 2. `http_echo` (kind `http`, `effects = true`): a `POST` to an upstream HTTP server this tool
//!    runs in-process on `127.0.0.1:0` (on a thread of its own, [`UPSTREAM_THREAD`]), answering
//!    [`UPSTREAM_BODY`] at once and counting the requests it gets;
//! 3. `wasm_shout` (kind `wasm`, `effects` left at its default, false): the module of
//!    `examples/actions/shout.wasm` (compiled into this binary, written next to the registry
//!    file, pinned by its SHA-256), which upper-cases the payload's JSON;
//! 4. `command_true` (kind `command`, `effects = true`): `/bin/echo {}` (the registry writes
//!    the argument as `{{}}`: a bare `{}` is an empty slot, refused at start-up), one process
//!    spawned per call.
//!
//! Each row gets its req/s ÷ echo's and two overheads per call against echo: the p50
//! difference (latency) and `1000/req_s − 1000/echo_req_s` (server time per call in this closed
//! loop). Checks, each a failure when it does not hold: sampled 200 answers say `"status":
//! "executed"`, `"replayed": false`, with distinct receipts and the result the action gives;
//! the server's `openexec_handler_runs_total{action=…}` grew by exactly the 200 answers of the
//! phase (warmup included); the upstream saw exactly as many requests as there were executed
//! `http_echo` calls (the at-most-once check: never more) and none during the other phases.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::bodies::BodySource;
use crate::client::{Endpoint, Totals, Window};
use crate::replicas::{metric_value, metrics_text};
use crate::report::{cores, ms, non_ok_text, ratio, row_json, Row};
use crate::{
    check_samples, fmt_dur, get_once, json_doc, phase_row, run_lines, run_phase_in, server,
    threads_text, window_from_now, Args, Phase,
};

/// The shout module (`examples/actions/shout.wasm`), compiled in.
pub const SHOUT_WASM: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/actions/shout.wasm"
));
/// The file name the module is written under, next to the registry file.
pub const MODULE_FILE: &str = "shout.wasm";
/// What the upstream answers every request with.
pub const UPSTREAM_BODY: &[u8] = br#"{"ok":true}"#;
/// The path of the upstream the `http_echo` action posts to.
pub const UPSTREAM_PATH: &str = "/echo";
/// The name of the upstream's thread (for its CPU, from `/proc/self/task/*/comm`).
pub const UPSTREAM_THREAD: &str = "oe-upstream";
/// The program of `command_true`.
pub const COMMAND_PROGRAM: &str = "/bin/echo";
/// The baseline action.
pub const BASELINE: &str = "echo";

/// One action of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bench {
    pub name: &'static str,
    pub kind: &'static str,
    /// What `GET /actions` must say of it.
    pub effects: bool,
    /// A short tag for nonces.
    tag: &'static str,
}

/// The actions, in the order they run (the baseline first).
pub const BENCHES: [Bench; 4] = [
    Bench {
        name: BASELINE,
        kind: "builtin",
        effects: false,
        tag: "e",
    },
    Bench {
        name: "http_echo",
        kind: "http",
        effects: true,
        tag: "h",
    },
    Bench {
        name: "wasm_shout",
        kind: "wasm",
        effects: false,
        tag: "w",
    },
    Bench {
        name: "command_true",
        kind: "command",
        effects: true,
        tag: "c",
    },
];

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A TOML basic string (JSON's escapes are TOML's: `\"`, `\\`, `\n`, `\uXXXX`).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The registry file: `http_echo` posting to `upstream_url`, `wasm_shout` running `module`
/// (relative to the registry file's folder) pinned by `sha256`, and `command_true`. `echo` is
/// the built-in every server has, so it is not declared.
pub fn registry_toml(upstream_url: &str, module: &str, sha256: &str) -> String {
    format!(
        r#"# Written by openexec-load --actions-bench.

[actions.http_echo]
kind = "http"
description = "POST the payload to the load generator's upstream"
schema = {{ type = "object" }}
effects = true

[actions.http_echo.http]
url = {url}
method = "POST"

[actions.wasm_shout]
kind = "wasm"
description = "Upper-case the payload's JSON (examples/actions/shout.wasm)"
schema = {{ type = "object" }}

[actions.wasm_shout.wasm]
module = {module}
sha256 = {sha}

[actions.command_true]
kind = "command"
description = "Run {program} {{}} (prints {{}}: a process spawn per call)"
schema = {{ type = "object" }}
effects = true

[actions.command_true.command]
argv = [{program_s}, "{{{{}}}}"]
"#,
        url = toml_str(upstream_url),
        module = toml_str(module),
        sha = toml_str(sha256),
        program = COMMAND_PROGRAM,
        program_s = toml_str(COMMAND_PROGRAM),
    )
}

/// Server time per call over the baseline's in a closed loop, in ms: `1000/rps −
/// 1000/base_rps`; `None` unless both are positive. (At C connections the mean latency grows
/// by about C times this.)
pub fn overhead_ms_per_call(rps: f64, base_rps: f64) -> Option<f64> {
    (rps > 0.0 && base_rps > 0.0).then(|| 1000.0 / rps - 1000.0 / base_rps)
}

/// p50 − the baseline's p50, in ms.
pub fn p50_delta_ms(p50_us: u64, base_p50_us: u64) -> f64 {
    (p50_us as f64 - base_p50_us as f64) / 1000.0
}

/// The at-most-once check of one phase: `count` (runs of the handler the server counted, or
/// requests the upstream got) against every answer the client saw in the phase. Every nonce was
/// unique, so no 200 may be a replay; without errors each 200 is exactly one; an answer lost to
/// an error may or may not have got that far, so with errors `count` must lie between the 200s
/// and the 200s plus the errors.
pub fn check_count(what: &str, count: u64, t: Totals) -> Result<String, String> {
    if t.replayed > 0 {
        return Err(format!(
            "{} of {} 200 answers said \"replayed\": true although every nonce was sent once",
            t.replayed, t.ok
        ));
    }
    let fresh = t.ok;
    let errors = t.non_ok + t.transport;
    if errors == 0 {
        if count == fresh {
            Ok(format!(
                "{what} {count} for {fresh} unique nonces answered 200 (none replayed): equal"
            ))
        } else {
            Err(format!(
                "{what} {count} but {fresh} unique nonces were answered 200 (none replayed, no \
                 errors): they must be equal"
            ))
        }
    } else if (fresh..=fresh + errors).contains(&count) {
        Ok(format!(
            "{what} {count} for {fresh} unique nonces answered 200 and {errors} lost to errors \
             (each may or may not have got that far): within bounds"
        ))
    } else {
        Err(format!(
            "{what} {count}, outside {fresh}..={} ({fresh} unique nonces answered 200, {errors} \
             lost to errors)",
            fresh + errors
        ))
    }
}

/// Whether `result` (of a 200 answer) is what action `name` gives for a payload `{"n": N}`.
pub fn result_ok(name: &str, result: &Value) -> bool {
    let only = |key: &str| {
        result.as_object().is_some_and(|o| o.len() == 1)
            && result.get(key).is_some_and(Value::is_u64)
    };
    match name {
        // The built-in echo answers {"echo": payload}.
        BASELINE => result
            .get("echo")
            .and_then(|p| p.get("n"))
            .is_some_and(Value::is_u64),
        "http_echo" => serde_json::from_slice::<Value>(UPSTREAM_BODY).is_ok_and(|v| v == *result),
        "wasm_shout" => only("N"),
        "command_true" => *result == json!({}),
        _ => false,
    }
}

/// Check the `result` of every sampled 200 answer of action `name`.
pub fn check_results(name: &str, samples: &[Bytes]) -> Result<usize, String> {
    check_results_by(name, samples, |r| result_ok(name, r))
}

/// Check the `result` of every sampled 200 answer of action `name` with `ok`.
pub fn check_results_by(
    name: &str,
    samples: &[Bytes],
    ok: impl Fn(&Value) -> bool,
) -> Result<usize, String> {
    for (i, b) in samples.iter().enumerate() {
        let v: Value = serde_json::from_slice(b).map_err(|e| format!("sample {i}: {e}"))?;
        let r = v.get("result").unwrap_or(&Value::Null);
        if !ok(r) {
            return Err(format!(
                "sample {i} has an unexpected result for {name}: {r}"
            ));
        }
    }
    Ok(samples.len())
}

/// Check `GET /actions`: every action of [`BENCHES`] is listed with its kind and `effects`.
/// Returns the `wasm_shout` digest.
pub fn check_actions_list(list: &Value) -> Result<Option<String>, String> {
    let mut wasm_digest = None;
    for b in BENCHES {
        let a = find_listed(list, b.name, b.kind, b.effects)?;
        if b.kind == "wasm" {
            wasm_digest = a["digest"].as_str().map(str::to_string);
        }
    }
    Ok(wasm_digest)
}

/// The entry of action `name` in `GET /actions` (`list`), checked to be of `kind` with
/// `effects`.
pub fn find_listed<'a>(
    list: &'a Value,
    name: &str,
    kind: &str,
    effects: bool,
) -> Result<&'a Value, String> {
    let Some(items) = list.as_array() else {
        return Err(format!("GET /actions is not a list: {list}"));
    };
    let Some(a) = items.iter().find(|a| a["name"] == name) else {
        return Err(format!("GET /actions does not list {name}"));
    };
    if a["kind"] != kind || a["effects"] != effects {
        return Err(format!(
            "GET /actions lists {name} as kind {}, effects {} (expected {kind}, {effects})",
            a["kind"], a["effects"]
        ));
    }
    Ok(a)
}

/// The in-process upstream of `http_echo`: an HTTP/1.1 server on its own thread and runtime.
pub struct Upstream {
    pub addr: SocketAddr,
    counts: Arc<UpstreamCounts>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct UpstreamCounts {
    /// Every request it got.
    requests: AtomicU64,
    /// Of those, the ones that were not a `POST` of a JSON object with a number `n` to
    /// [`UPSTREAM_PATH`].
    unexpected: AtomicU64,
}

impl Upstream {
    pub fn start() -> anyhow::Result<Upstream> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("the upstream cannot listen on 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(UpstreamCounts::default());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let c = counts.clone();
        let thread = std::thread::Builder::new()
            .name(UPSTREAM_THREAD.into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("openexec-load: the upstream's runtime did not start: {e}");
                        return;
                    }
                };
                rt.block_on(serve_upstream(listener, c, rx));
            })
            .context("cannot start the upstream's thread")?;
        Ok(Upstream {
            addr,
            counts,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}{UPSTREAM_PATH}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// Requests received so far that were not what `http_echo` sends.
    pub fn unexpected(&self) -> u64 {
        self.counts.unexpected.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve_upstream(
    listener: std::net::TcpListener,
    counts: Arc<UpstreamCounts>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("openexec-load: the upstream cannot listen: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors or the like: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let counts = counts.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let counts = counts.clone();
                        async move { Ok::<_, Infallible>(answer(req, &counts).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

async fn answer(req: Request<Incoming>, counts: &UpstreamCounts) -> Response<Full<Bytes>> {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let expected_head = req.method() == Method::POST && req.uri().path() == UPSTREAM_PATH;
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let expected = expected_head
        && body.as_ref().is_ok_and(|b| {
            serde_json::from_slice::<Value>(b).is_ok_and(|v| v.get("n").is_some_and(Value::is_u64))
        });
    if !expected {
        counts.unexpected.fetch_add(1, Ordering::SeqCst);
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(UPSTREAM_BODY)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// CPU ticks of this process's upstream thread.
fn upstream_ticks() -> u64 {
    server::thread_ticks(std::process::id())
        .iter()
        .filter(|(_, name, _)| name == UPSTREAM_THREAD)
        .map(|(_, _, t)| t)
        .sum()
}

/// CPU in the window besides what `run_phase_in` samples, in cores: the upstream thread's
/// (inside this process) and that of the server's children (the programs `command` runs).
#[derive(Debug, Default, Clone, Copy)]
struct ExtraCpu {
    upstream_cores: f64,
    spawned_cores: Option<f64>,
}

async fn sample_extra(window: Window, server_pid: u32, tck: f64) -> ExtraCpu {
    tokio::time::sleep_until(window.measure_from.into()).await;
    let t0 = Instant::now();
    let u0 = upstream_ticks();
    let c0 = server::process_child_ticks(server_pid);
    tokio::time::sleep_until(window.end.into()).await;
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    let u1 = upstream_ticks();
    let c1 = server::process_child_ticks(server_pid);
    ExtraCpu {
        upstream_cores: u1.saturating_sub(u0) as f64 / tck / secs,
        spawned_cores: match (c0, c1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / tck / secs),
            _ => None,
        },
    }
}

/// One line of the actions table.
#[derive(Debug, Clone)]
pub struct ActionRow {
    pub bench: Bench,
    /// `mode` holds the action's name.
    pub row: Row,
    pub vs_echo: Option<f64>,
    pub p50_delta_ms: Option<f64>,
    pub ms_per_call: Option<f64>,
    /// CPU of the upstream thread (inside this process; not in `row.client_cores`).
    pub upstream_cores: f64,
    /// CPU of the processes the server spawned and reaped in the window.
    pub spawned_cores: Option<f64>,
}

/// Fill in every row's comparison with the baseline's row.
pub fn fill_vs_echo(rows: &mut [ActionRow]) {
    let Some(base) = rows.iter().find(|r| r.bench.name == BASELINE).map(|r| {
        (
            r.row.rps(),
            r.row.lat.p50_us,
            r.row.requests > 0, // a p50 of no answer is no baseline
        )
    }) else {
        return;
    };
    for r in rows.iter_mut() {
        r.vs_echo = ratio(r.row.rps(), base.0);
        r.ms_per_call = overhead_ms_per_call(r.row.rps(), base.0);
        r.p50_delta_ms =
            (base.2 && r.row.requests > 0).then(|| p50_delta_ms(r.row.lat.p50_us, base.1));
    }
}

fn opt(x: Option<f64>, digits: usize, signed: bool) -> String {
    match x {
        Some(x) if signed => format!("{x:+.digits$}"),
        Some(x) => format!("{x:.digits$}"),
        None => "—".into(),
    }
}

/// The Markdown table of the actions benchmark.
pub fn actions_table(rows: &[ActionRow]) -> String {
    let mut t = String::new();
    t.push_str(
        "| action | kind | requests | req/s | p50 ms | p99 ms | ÷ echo | Δ p50 ms | Δ ms/call | non-200 | server CPU | spawned CPU | upstream CPU | client CPU | softirq | other CPU |\n",
    );
    t.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for a in rows {
        let r = &a.row;
        let base = a.bench.name == BASELINE;
        t.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            a.bench.name,
            a.bench.kind,
            r.requests,
            r.rps(),
            ms(r.lat.p50_us),
            ms(r.lat.p99_us),
            opt(a.vs_echo, 3, false),
            if base { "—".into() } else { opt(a.p50_delta_ms, 2, true) },
            if base { "—".into() } else { opt(a.ms_per_call, 3, true) },
            non_ok_text(&r.non_ok),
            cores(r.server_cores),
            cores(a.spawned_cores),
            cores(Some(a.upstream_cores)),
            cores(Some(r.client_cores)),
            cores(r.softirq_cores),
            cores(r.other_cores),
        ));
    }
    t
}

/// The headline: each action against echo.
pub fn summary(rows: &[ActionRow], connections: usize) -> String {
    let parts: Vec<String> = rows
        .iter()
        .filter(|r| r.bench.name != BASELINE)
        .map(|r| {
            format!(
                "{} {} ms p50, {} ms/call, ÷ echo {}",
                r.bench.name,
                opt(r.p50_delta_ms, 2, true),
                opt(r.ms_per_call, 3, true),
                opt(r.vs_echo, 3, false)
            )
        })
        .collect();
    format!(
        "over the built-in echo at {connections} connections: {}",
        parts.join("; ")
    )
}

/// A row as JSON: [`row_json`] plus the action and its comparison with echo.
pub fn action_row_json(a: &ActionRow) -> Value {
    let r3 = |x: Option<f64>| x.map(|x| (x * 1000.0).round() / 1000.0);
    let mut v = row_json(&a.row);
    if let Value::Object(m) = &mut v {
        m.insert("action".into(), json!(a.bench.name));
        m.insert("kind".into(), json!(a.bench.kind));
        m.insert("effects".into(), json!(a.bench.effects));
        m.insert("ratio_to_echo".into(), json!(r3(a.vs_echo)));
        m.insert("p50_delta_ms".into(), json!(r3(a.p50_delta_ms)));
        m.insert("overhead_ms_per_call".into(), json!(r3(a.ms_per_call)));
        m.insert(
            "upstream_cpu_cores".into(),
            json!((a.upstream_cores * 100.0).round() / 100.0),
        );
        m.insert(
            "spawned_cpu_cores".into(),
            json!(a.spawned_cores.map(|x| (x * 100.0).round() / 100.0)),
        );
    }
    v
}

fn action_row(bench: Bench, phase: &Phase, extra: ExtraCpu, seconds: f64) -> ActionRow {
    let cpu = &phase.cpu;
    let spawned = extra.spawned_cores.unwrap_or(0.0);
    ActionRow {
        bench,
        row: Row {
            // This process less its upstream thread.
            client_cores: (cpu.client_cores - extra.upstream_cores).max(0.0),
            // The whole of this process (client and upstream) is not "other".
            other_cores: cpu.machine_cores.map(|m| {
                (m - cpu.server_cores.unwrap_or(0.0) - cpu.client_cores - spawned).max(0.0)
            }),
            ..phase_row(bench.name, "POST /execute", phase, seconds)
        },
        vs_echo: None,
        p50_delta_ms: None,
        ms_per_call: None,
        upstream_cores: extra.upstream_cores,
        spawned_cores: extra.spawned_cores,
    }
}

/// Run the actions benchmark; Ok(false) when it ran but failed.
pub fn run(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    tck: f64,
    run_id: &str,
    cmd: &str,
) -> anyhow::Result<bool> {
    let bin = args.server_bin_for("--actions-bench")?;
    if !std::path::Path::new(COMMAND_PROGRAM).is_file() {
        bail!("{COMMAND_PROGRAM} is not here: command_true cannot run");
    }
    let secs = args.duration.as_secs_f64();
    let mut notes: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut thread_notes: Vec<String> = Vec::new();
    let mut checks: Vec<Value> = Vec::new();

    // The upstream first: the registry names its port.
    let upstream = Upstream::start()?;
    eprintln!("[actions] upstream listening on {}", upstream.url());
    let dir = tempfile::Builder::new()
        .prefix("openexec-load-actions-")
        .tempdir()
        .context("cannot create a temporary directory for the registry")?;
    let sha = sha256_hex(SHOUT_WASM);
    let module = dir.path().join(MODULE_FILE);
    std::fs::write(&module, SHOUT_WASM)
        .with_context(|| format!("cannot write {}", module.display()))?;
    let registry = dir.path().join("actions.toml");
    std::fs::write(&registry, registry_toml(&upstream.url(), MODULE_FILE, &sha))
        .with_context(|| format!("cannot write {}", registry.display()))?;

    let env = [("OPENEXEC_ACTIONS", registry.display().to_string())];
    let mut srv = server::Server::start_with(bin, "demo", None, &env)?;
    eprintln!(
        "[actions] server pid {} listening on {} (state in {}, registry {})",
        srv.pid,
        srv.addr,
        srv.dir().display(),
        registry.display()
    );
    let addr = srv.addr;
    let pid = srv.pid;

    crate::measure::check_mode(rt, "the server", addr, "demo")?;
    let (st, body) = rt
        .block_on(get_once(addr, "/actions"))
        .with_context(|| format!("GET /actions on {addr} failed"))?;
    let list: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if st != 200 {
        bail!(
            "{addr}: GET /actions answered {st}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    match check_actions_list(&list) {
        Ok(digest) => notes.push(format!(
            "GET /actions lists {} with the expected kinds and effects (http and command true, \
             wasm false by default); wasm_shout's module is {MODULE_FILE} of SHA-256 {sha} \
             (/actions digest {})",
            BENCHES.map(|b| b.name).join(", "),
            digest.as_deref().unwrap_or("missing")
        )),
        Err(e) => bail!("{e}"),
    }

    let mut rows: Vec<ActionRow> = Vec::new();
    for bench in BENCHES {
        let name = bench.name;
        eprintln!(
            "[{name}] POST /execute ({} action): {} connections, warmup {}, measuring {}…",
            bench.kind,
            args.connections,
            fmt_dur(args.warmup),
            fmt_dur(args.duration)
        );
        let series = format!("openexec_handler_runs_total{{action=\"{name}\"}}");
        let before = metrics_text(rt, addr)?;
        let up_before = upstream.requests();
        let source = Arc::new(BodySource::action(name, &format!("{run_id}-{}", bench.tag)));
        let window = window_from_now(args);
        let extra = rt.spawn(sample_extra(window, pid, tck));
        let phase = run_phase_in(
            rt,
            args,
            window,
            &[addr],
            Endpoint::Execute(source.clone()),
            &[pid],
            None,
            tck,
        )?;
        let extra = rt.block_on(extra).unwrap_or_default();
        let after = metrics_text(rt, addr)?;
        let up_seen = upstream.requests().saturating_sub(up_before);
        let total = phase.outcome.total;

        // At most once, by the server's own count of handler runs.
        let runs = (metric_value(&after, &series).unwrap_or(0.0)
            - metric_value(&before, &series).unwrap_or(0.0))
        .max(0.0) as u64;
        let runs_check = check_count(&format!("the {name} handler ran"), runs, total);
        match &runs_check {
            Ok(m) => notes.push(format!("{name}: at-most-once check (server): {m}")),
            Err(m) => failures.push(format!("{name}: at-most-once check (server) failed: {m}")),
        }
        // And by the upstream's: it sees exactly the executed http calls, no more.
        let up_check = if bench.kind == "http" {
            check_count("the upstream got", up_seen, total)
        } else if up_seen == 0 {
            Ok("the upstream got no request".to_string())
        } else {
            Err(format!("the upstream got {up_seen} requests during {name}"))
        };
        match &up_check {
            Ok(m) => notes.push(format!("{name}: at-most-once check (upstream): {m}")),
            Err(m) => failures.push(format!("{name}: at-most-once check (upstream) failed: {m}")),
        }
        checks.push(json!({
            "action": name,
            "handler_runs": runs,
            "upstream_requests": up_seen,
            "ok_answers": total.ok,
            "replayed_answers": total.replayed,
            "non_200_answers": total.non_ok,
            "transport_errors": total.transport,
            "ok": runs_check.is_ok() && up_check.is_ok(),
        }));
        let samples = &phase.outcome.samples;
        match check_samples(samples).and_then(|n| check_results(name, samples).map(|_| n)) {
            Ok(0) if phase.outcome.ok > 0 => failures.push(format!(
                "{name}: no /execute answer was sampled for the check"
            )),
            Ok(0) => {}
            Ok(n) => notes.push(format!(
                "{name}: sanity: {n} sampled 200 answers all say \"replayed\": false, \
                 \"status\": \"executed\", with {n} distinct receipts and the expected result"
            )),
            Err(e) => failures.push(format!("{name}: sanity check failed: {e}")),
        }

        let row = action_row(bench, &phase, extra, secs);
        if row.row.requests == 0 {
            failures.push(format!("{name}: POST /execute had no 200 answer"));
        }
        if row.row.errors() > 0 {
            let msg = crate::report::non_ok_message(
                &format!("{name}: POST /execute"),
                &row.row.non_ok,
                &phase.outcome.non_ok_examples,
            );
            if args.allow_errors {
                notes.push(msg);
            } else {
                failures.push(msg);
            }
        }
        if args.verbose && !phase.cpu.threads.is_empty() {
            thread_notes.push(format!(
                "{name}: server CPU by thread: {}",
                threads_text(&phase.cpu.threads, secs)
            ));
        }
        eprintln!(
            "[{name}] POST /execute: {} ok, {:.0} req/s, p50 {} ms, p99 {} ms",
            row.row.requests,
            row.row.rps(),
            ms(row.row.lat.p50_us),
            ms(row.row.lat.p99_us)
        );
        rows.push(row);
    }

    let unexpected = upstream.unexpected();
    if unexpected > 0 {
        failures.push(format!(
            "the upstream got {unexpected} requests that were not a POST of {{\"n\": N}} to \
             {UPSTREAM_PATH}"
        ));
    }
    let status = srv.stop()?;
    eprintln!("[actions] server stopped ({status})");
    if !status.success() {
        failures.push(format!(
            "the server exited with {status} after SIGTERM; its stderr ends:\n{}",
            srv.stderr_tail(20)
        ));
    }
    let upstream_total = upstream.requests();
    drop(upstream);

    fill_vs_echo(&mut rows);
    let mut out = String::new();
    out.push_str(&actions_table(&rows));
    out.push('\n');
    out.push_str(&format!("{}\n", summary(&rows, args.connections)));
    out.push_str(&run_lines(args, "per action", cmd));
    out.push_str(
        "actions benchmark: one fresh `openexec serve` (demo mode, server defaults: SQLite file, \
         durability on) on its own temp dir, with a registry file (OPENEXEC_ACTIONS) declaring \
         http_echo (POST to this tool's in-process upstream on 127.0.0.1, answering {\"ok\":true} \
         at once), wasm_shout (examples/actions/shout.wasm) and command_true (/bin/echo {}); \
         echo is the built-in. Every request a unique nonce, payload {\"n\": N}. requests = 200 \
         answers started after the warmup and answered inside the window; ÷ echo = req/s ÷ \
         echo's req/s; Δ p50 ms = p50 − echo's p50 (the latency a call adds); Δ ms/call = \
         1000/req_s − 1000/echo_req_s (the server time a call adds in this closed loop: the \
         mean latency grows by about connections × that). CPU columns are % of one core during \
         the window (spawned: the server's reaped child processes; upstream: the upstream's \
         thread, not in client; softirq: the kernel's, mostly loopback networking; other: \
         every other busy process, which distorts the run when not ~0).\n",
    );
    let doc = || {
        json_doc(
            args,
            cmd,
            json!({
                "benchmark": "actions",
                "module_sha256": sha,
                "upstream_requests": upstream_total,
                "rows": rows.iter().map(action_row_json).collect::<Vec<_>>(),
                "checks": checks,
                "notes": notes,
                "server_threads": thread_notes,
                "failures": failures,
                "ok": failures.is_empty(),
            }),
        )
    };
    crate::report::finish(
        out,
        notes.iter().chain(thread_notes.iter()),
        &failures,
        args.json.as_deref(),
        doc,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Percentiles;

    #[test]
    fn the_embedded_module_is_shout() {
        assert_eq!(
            sha256_hex(SHOUT_WASM),
            "747826c0fd43f872267e812ab50cd941ef8a64f0f3d9d2492160b5fb640a9da0"
        );
        assert_eq!(&SHOUT_WASM[..4], b"\0asm");
    }

    #[test]
    fn registry_parses_as_toml_with_the_expected_keys() {
        let sha = sha256_hex(SHOUT_WASM);
        let text = registry_toml("http://127.0.0.1:4321/echo", MODULE_FILE, &sha);
        let doc: toml::Table = toml::from_str(&text).unwrap();
        let actions = doc["actions"].as_table().unwrap();
        let names: Vec<&str> = actions.keys().map(String::as_str).collect();
        assert_eq!(names, ["command_true", "http_echo", "wasm_shout"]);
        // The common keys of SPEC §10 only, and one table of the kind's settings.
        let common = ["kind", "description", "schema", "effects"];
        for (name, a) in actions {
            let a = a.as_table().unwrap();
            let kind = a["kind"].as_str().unwrap();
            for k in a.keys() {
                assert!(common.contains(&k.as_str()) || k == kind, "{name}: {k}");
            }
            assert!(a[kind].is_table(), "{name}");
            let schema = a["schema"].as_table().unwrap();
            assert_eq!(schema.len(), 1);
            assert_eq!(schema["type"].as_str(), Some("object"));
            let b = BENCHES.iter().find(|b| b.name == name).unwrap();
            assert_eq!(b.kind, kind);
        }
        let http = &actions["http_echo"];
        assert_eq!(http["effects"].as_bool(), Some(true));
        assert_eq!(
            http["http"]["url"].as_str(),
            Some("http://127.0.0.1:4321/echo")
        );
        assert_eq!(http["http"]["method"].as_str(), Some("POST"));
        let wasm = &actions["wasm_shout"];
        assert!(wasm.get("effects").is_none(), "the kind's default: false");
        assert_eq!(wasm["wasm"]["module"].as_str(), Some("shout.wasm"));
        assert_eq!(wasm["wasm"]["sha256"].as_str(), Some(sha.as_str()));
        let cmd = &actions["command_true"];
        assert_eq!(cmd["effects"].as_bool(), Some(true));
        // `{{}}` is the command kind's escape for the literal argument `{}`.
        let argv: Vec<&str> = cmd["command"]["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(argv, ["/bin/echo", "{{}}"]);
        // Strings are escaped, whatever they hold.
        let odd = registry_toml("http://h/\"x\\", "dir with \"quotes\"/m.wasm", &sha);
        let doc: toml::Table = toml::from_str(&odd).unwrap();
        assert_eq!(
            doc["actions"]["wasm_shout"]["wasm"]["module"].as_str(),
            Some("dir with \"quotes\"/m.wasm")
        );
        assert_eq!(
            doc["actions"]["http_echo"]["http"]["url"].as_str(),
            Some("http://h/\"x\\")
        );
    }

    #[test]
    fn ratio_and_overhead_maths() {
        assert_eq!(ratio(500.0, 1000.0), Some(0.5));
        assert_eq!(ratio(0.0, 1000.0), None);
        assert_eq!(ratio(10.0, 0.0), None);
        // 1000 req/s = 1 ms per call, 500 req/s = 2 ms: 1 ms more per call.
        assert!((overhead_ms_per_call(500.0, 1000.0).unwrap() - 1.0).abs() < 1e-12);
        assert!((overhead_ms_per_call(2000.0, 1000.0).unwrap() + 0.5).abs() < 1e-12);
        assert_eq!(overhead_ms_per_call(0.0, 1000.0), None);
        assert_eq!(p50_delta_ms(4_500, 3_000), 1.5);
        assert_eq!(p50_delta_ms(2_000, 3_000), -1.0);
    }

    fn arow(i: usize, requests: u64, p50_us: u64) -> ActionRow {
        ActionRow {
            bench: BENCHES[i],
            row: Row {
                mode: BENCHES[i].name.into(),
                endpoint: "POST /execute".into(),
                requests,
                seconds: 10.0,
                lat: Percentiles {
                    p50_us,
                    p99_us: 25_870,
                    p999_us: 33_730,
                    max_us: 40_000,
                    mean_us: 16_000.0,
                },
                non_ok: Default::default(),
                ratio: None,
                server_cores: Some(1.24),
                client_cores: 0.1,
                other_cores: Some(0.0),
                softirq_cores: Some(0.05),
            },
            vs_echo: None,
            p50_delta_ms: None,
            ms_per_call: None,
            upstream_cores: 0.0,
            spawned_cores: Some(0.0),
        }
    }

    #[test]
    fn rows_compare_with_echo_in_table_summary_and_json() {
        let mut rows = vec![
            arow(0, 40_000, 4_000),
            arow(1, 20_000, 8_500),
            arow(2, 32_000, 5_000),
            arow(3, 0, 0),
        ];
        rows[1].upstream_cores = 0.123;
        rows[3].spawned_cores = Some(0.5);
        rows[3].row.non_ok.insert(502, 7);
        fill_vs_echo(&mut rows);
        assert_eq!(rows[0].vs_echo, Some(1.0));
        assert_eq!(rows[0].ms_per_call, Some(0.0));
        assert_eq!(rows[1].vs_echo, Some(0.5));
        // 4000 req/s → 0.25 ms, 2000 req/s → 0.5 ms.
        assert!((rows[1].ms_per_call.unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(rows[1].p50_delta_ms, Some(4.5));
        assert_eq!(rows[2].p50_delta_ms, Some(1.0));
        assert_eq!(rows[3].vs_echo, None);
        assert_eq!(rows[3].p50_delta_ms, None);

        let t = actions_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 6, "{t}");
        assert!(lines[0].starts_with(
            "| action | kind | requests | req/s | p50 ms | p99 ms | ÷ echo | Δ p50 ms | Δ ms/call | non-200 | server CPU | spawned CPU | upstream CPU |"
        ));
        assert_eq!(
            lines[2],
            "| echo | builtin | 40000 | 4000 | 4.00 | 25.87 | 1.000 | — | — | 0 | 124% | 0% | 0% | 10% | 5% | 0% |"
        );
        assert_eq!(
            lines[3],
            "| http_echo | http | 20000 | 2000 | 8.50 | 25.87 | 0.500 | +4.50 | +0.250 | 0 | 124% | 0% | 12% | 10% | 5% | 0% |"
        );
        assert_eq!(
            lines[5],
            "| command_true | command | 0 | 0 | 0.00 | 25.87 | — | — | — | 502×7 | 124% | 50% | 0% | 10% | 5% | 0% |"
        );
        let s = summary(&rows, 16);
        assert!(
            s.starts_with("over the built-in echo at 16 connections: http_echo +4.50 ms p50, +0.250 ms/call, ÷ echo 0.500; wasm_shout +1.00 ms p50"),
            "{s}"
        );
        assert!(!s.contains("echo — ms"), "{s}");

        let j = action_row_json(&rows[1]);
        assert_eq!(j["action"], json!("http_echo"));
        assert_eq!(j["kind"], json!("http"));
        assert_eq!(j["effects"], json!(true));
        assert_eq!(j["ratio_to_echo"], json!(0.5));
        assert_eq!(j["overhead_ms_per_call"], json!(0.25));
        assert_eq!(j["p50_delta_ms"], json!(4.5));
        assert_eq!(j["upstream_cpu_cores"], json!(0.12));
        assert_eq!(j["req_per_s"], json!(2000.0));

        // No echo row: nothing to compare with.
        let mut partial = vec![arow(1, 100, 1000)];
        fill_vs_echo(&mut partial);
        assert_eq!(partial[0].vs_echo, None);
    }

    #[test]
    fn counts_must_match_the_executed_calls() {
        let t = |ok, replayed, non_ok, transport| Totals {
            ok,
            replayed,
            non_ok,
            transport,
        };
        let ok = check_count("the upstream got", 100, t(100, 0, 0, 0)).unwrap();
        assert!(ok.contains("the upstream got 100 for 100"), "{ok}");
        // One more than the executed calls is a call made twice: never allowed.
        let e = check_count("the upstream got", 101, t(100, 0, 0, 0)).unwrap_err();
        assert!(e.contains("they must be equal"), "{e}");
        assert!(check_count("x", 99, t(100, 0, 0, 0)).is_err());
        assert!(check_count("x", 100, t(100, 1, 0, 0)).is_err());
        assert!(check_count("x", 102, t(100, 0, 1, 1)).is_ok());
        assert!(check_count("x", 103, t(100, 0, 1, 1)).is_err());
        assert!(check_count("x", 0, t(0, 0, 0, 0)).is_ok());
    }

    #[test]
    fn results_are_checked_per_action() {
        assert!(result_ok("echo", &json!({"echo": {"n": 3}})));
        assert!(!result_ok("echo", &json!({"n": 3})));
        assert!(result_ok("http_echo", &json!({"ok": true})));
        assert!(!result_ok("http_echo", &json!({"ok": false})));
        assert!(result_ok("wasm_shout", &json!({"N": 3})));
        assert!(!result_ok("wasm_shout", &json!({"n": 3})));
        assert!(result_ok("command_true", &json!({})));
        assert!(!result_ok("command_true", &Value::Null));
        assert!(!result_ok("other", &json!({})));
        let answer = |r: Value| Bytes::from(json!({"status": "executed", "result": r}).to_string());
        assert_eq!(
            check_results(
                "wasm_shout",
                &[answer(json!({"N": 1})), answer(json!({"N": 2}))]
            ),
            Ok(2)
        );
        assert!(check_results("wasm_shout", &[answer(json!({"n": 1}))]).is_err());
        assert!(check_results("echo", &[Bytes::from_static(b"nope")]).is_err());
    }

    #[test]
    fn the_actions_list_is_checked() {
        let list = json!([
            {"name": "command_true", "kind": "command", "effects": true, "digest": "c"},
            {"name": "echo", "kind": "builtin", "effects": false, "digest": "e"},
            {"name": "http_echo", "kind": "http", "effects": true, "digest": "h"},
            {"name": "wasm_shout", "kind": "wasm", "effects": false, "digest": "w"},
        ]);
        assert_eq!(check_actions_list(&list), Ok(Some("w".into())));
        let mut wrong = list.clone();
        wrong[3]["effects"] = json!(true);
        assert!(check_actions_list(&wrong)
            .unwrap_err()
            .contains("wasm_shout"));
        let missing = json!([list[0], list[1], list[2]]);
        assert!(check_actions_list(&missing)
            .unwrap_err()
            .contains("does not list wasm_shout"));
        assert!(check_actions_list(&json!({})).is_err());
    }

    #[test]
    fn action_bodies_carry_the_action_a_counter_and_unique_nonces() {
        let src = BodySource::action("wasm_shout", "run1-w");
        let mut nonces = std::collections::HashSet::new();
        for i in 0..50u64 {
            let b = src.next().unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["action"], "wasm_shout");
            assert_eq!(v["payload"], json!({"n": i}));
            assert_eq!(v["nonce"], format!("run1-w-n{i}"));
            assert!(nonces.insert(v["nonce"].as_str().unwrap().to_string()));
        }
        assert_eq!(src.used(), 50);
        assert_eq!(src.capacity(), None);
    }

    #[test]
    fn the_upstream_answers_and_counts() {
        async fn send(addr: SocketAddr, method: Method, path: &str, body: &str) -> (u16, Bytes) {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, addr.to_string())
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap();
            let resp = s.send_request(req).await.unwrap();
            let st = resp.status().as_u16();
            (st, resp.into_body().collect().await.unwrap().to_bytes())
        }
        let up = Upstream::start().unwrap();
        assert!(up.url().starts_with("http://127.0.0.1:"));
        assert!(up.url().ends_with(UPSTREAM_PATH));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (st, body) = rt.block_on(send(up.addr, Method::POST, UPSTREAM_PATH, r#"{"n":1}"#));
        assert_eq!((st, &body[..]), (200, UPSTREAM_BODY));
        assert_eq!((up.requests(), up.unexpected()), (1, 0));
        rt.block_on(send(up.addr, Method::GET, UPSTREAM_PATH, ""));
        rt.block_on(send(up.addr, Method::POST, "/other", r#"{"n":1}"#));
        rt.block_on(send(up.addr, Method::POST, UPSTREAM_PATH, "[]"));
        assert_eq!((up.requests(), up.unexpected()), (4, 3));
        // Its thread is found by name (for its CPU).
        let _ = upstream_ticks();
        assert!(server::thread_ticks(std::process::id())
            .iter()
            .any(|(_, n, _)| n == UPSTREAM_THREAD));
        drop(up); // stops and joins
    }

    #[test]
    fn child_cpu_fields() {
        let stat = "1234 (openexec) S 1 2 3 4 5 6 7 8 9 10 250 30 41 9 20 0 1 0";
        assert_eq!(server::stat_ticks(stat), Some(280));
        assert_eq!(server::stat_child_ticks(stat), Some(50));
        assert_eq!(server::stat_child_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn flags_parse_and_conflict() {
        use clap::Parser;
        let ok = Args::try_parse_from([
            "openexec-load",
            "--server-bin",
            "/bin/openexec",
            "--actions-bench",
            "--connections",
            "16",
        ])
        .unwrap();
        assert!(ok.actions_bench);
        for extra in [
            &["--log-bench"][..],
            &["--replicas-bench"],
            &["--modes", "demo"],
            &["--premint", "10"],
        ] {
            let mut v = vec![
                "openexec-load",
                "--server-bin",
                "/bin/openexec",
                "--actions-bench",
            ];
            v.extend_from_slice(extra);
            assert!(Args::try_parse_from(v).is_err(), "{extra:?}");
        }
        assert!(Args::try_parse_from([
            "openexec-load",
            "--url",
            "http://127.0.0.1:5000",
            "--actions-bench"
        ])
        .is_err());
    }
}
