//! `openexec-load`: a load generator for OpenExec's HTTP paths.
//!
//! For each mode (demo, clawshield) it starts a fresh `openexec serve` on a temporary directory
//! (durability on: the server's own defaults, a real SQLite file, fsync'd group commits), then
//! drives it over loopback with N concurrent HTTP/1.1 keep-alive connections: first the trivial
//! `GET /health`, then `POST /execute` (the built-in `echo`, every request with a nonce never
//! used before; in clawshield mode each with a v1 approval artifact minted before the timed
//! window). It reports requests/s and p50/p99/p999 latency of each, and /execute's requests/s
//! as a ratio to /health's on the same server in the same run, as a Markdown table (and JSON
//! with `--json`). With `--url` it drives an already running demo-mode server instead.
//!
//! `--log-bench` measures the receipt log instead (see `logbench.rs`): fill it with
//! `--log-entries` /execute, time `--log-probes` appends until their receipt carries
//! `inclusion`, then `GET /log/proof/inclusion` at that tree size next to `GET /health`.
//!
//! `--replicas-bench` measures horizontal scaling on PostgreSQL instead (see `replicas.rs`):
//! demo `/execute` on one replica on a fresh database, then on two replicas sharing another
//! fresh database (connections spread round-robin), and on one SQLite replica as a reference,
//! next to `GET /health`, with the handler-run count of every replica checked against the
//! answers.
//!
//! `--actions-bench` measures the kinds of declared actions instead (see `actionsbench.rs`):
//! one demo server with a registry file this tool writes, POST /execute of the built-in `echo`,
//! then of an `http` action (to an upstream run in-process), a `wasm` one (shout.wasm) and a
//! `command` one (`/bin/echo {}`), each compared with echo, with the upstream's request count
//! and the server's handler-run counts checked against the answers.
//!
//! `--shield-bench` measures ClawShield next to OpenExec instead (see `shieldbench.rs`): a
//! demo-mode server's `POST /execute` of echo, then `openexec shield serve`'s `POST
//! /v1/proposals` of a small `charge_card`, auto-approved by the example policy grown by
//! `--shield-rules` (100) generated rules, with gate ÷ exec of requests/s; the run fails when
//! the gate is the slower of the two.
//!
//! `--vs-original` measures OpenExec against the Python original instead (see
//! `vsoriginal.rs`): the original (FastAPI, started from `--original-dir` with
//! `--original-python`'s uvicorn, or already running at `--original-url`) and our servers side
//! by side, the same load against each: the original's `POST /execute` of echo, then ours in
//! demo mode (`GET /health`, echo), in clawshield mode (echo with an artifact per request) and
//! the built-in `sleep` `{"ms": 0}` (an action with effects), each as a ratio to the original.
//!
//! Exit codes: 0 success; 1 the benchmark failed (a non-200 answer without `--allow-errors`,
//! the artifact pool ran out, the sanity check of the answers failed, or with `--shield-bench`
//! the gate was slower than `/execute`); 2 it could not run.
#![forbid(unsafe_code)]

mod actionsbench;
mod bodies;
mod client;
mod logbench;
mod measure;
mod replicas;
mod report;
mod server;
mod shieldbench;
mod vsoriginal;

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{ArgGroup, Parser, ValueEnum};
use openexec_core::keys::{signing_key_from_seed, verifying_key_to_pem};
use serde_json::{json, Value};

use crate::bodies::BodySource;
use crate::client::{Endpoint, Outcome, Window};
use crate::report::{markdown_table, percentiles, row_json, Row, StoreMetrics};

#[derive(Parser, Debug)]
#[command(group(ArgGroup::new("original").args(["original_dir", "original_url"])))]
#[command(
    name = "openexec-load",
    version,
    about = "Load generator for OpenExec: /execute vs /health over real HTTP on loopback"
)]
struct Args {
    /// The `openexec` binary to start (`openexec serve`), once per mode, on a fresh temp dir.
    #[arg(long, required_unless_present = "url", conflicts_with = "url")]
    server_bin: Option<PathBuf>,
    /// Drive an already running server at this http:// URL instead (demo mode only).
    #[arg(long)]
    url: Option<String>,
    /// Concurrent keep-alive connections (one request in flight on each).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured time per endpoint (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time before each measured window.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Modes to run, in order (default demo,clawshield; demo only with --url).
    #[arg(long, value_delimiter = ',')]
    modes: Option<Vec<Mode>>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Do not fail the run on non-200 answers (they are still counted and reported).
    #[arg(long)]
    allow_errors: bool,
    /// Clawshield artifacts to mint before the window (default: 3 × the demo /execute rate of
    /// this run (at least 1000/s) × (warmup + duration), or 4000/s when demo did not run first).
    #[arg(long)]
    premint: Option<u64>,
    /// Client runtime threads (1 = a single-threaded runtime; client and server share the CPU).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Also print the server's CPU time per thread name for each window.
    #[arg(long)]
    verbose: bool,
    /// Run the receipt-log benchmark instead of the modes: fill the log with --log-entries
    /// /execute, time --log-probes appends until their receipt shows `inclusion`, then measure
    /// GET /log/proof/inclusion at that size next to GET /health (demo-mode server).
    #[arg(long, conflicts_with_all = ["modes", "premint"])]
    log_bench: bool,
    /// With --log-bench: unique /execute requests that fill the log first.
    #[arg(long, default_value_t = 100_000)]
    log_entries: u64,
    /// With --log-bench: sequential append → integrated probes.
    #[arg(long, default_value_t = 200)]
    log_probes: usize,
    /// Run the replicas benchmark instead of the modes (demo mode, servers started here): GET
    /// /health, then POST /execute on one replica on a fresh PostgreSQL database, on two
    /// replicas sharing another fresh database (connections spread round-robin over them), and
    /// on one SQLite replica as a reference; reports 2 replicas ÷ 1 replica.
    #[arg(long, conflicts_with_all = ["modes", "premint", "log_bench", "url"])]
    replicas_bench: bool,
    /// With --replicas-bench: the PostgreSQL server, as the URL of a database on it to connect
    /// to for CREATE DATABASE (default postgres://postgres@127.0.0.1:5432/test); each setup
    /// gets a fresh database there, dropped at the end.
    #[arg(long, requires = "replicas_bench")]
    pg_url: Option<String>,
    /// With --replicas-bench: OPENEXEC_DB_POOL_SIZE of each PostgreSQL replica (default: the
    /// server's own, 16).
    #[arg(long, requires = "replicas_bench")]
    pg_pool_size: Option<u32>,
    /// With --replicas-bench: leave out the SQLite reference row.
    #[arg(long, requires = "replicas_bench")]
    no_sqlite: bool,
    /// Run the actions benchmark instead of the modes (one demo-mode server started here with
    /// a registry file of declared actions): POST /execute of the built-in echo, then of an
    /// http action (to an upstream this tool runs on 127.0.0.1), a wasm one (shout.wasm) and a
    /// command one (/bin/echo {}), one after another; reports each against echo.
    #[arg(long, conflicts_with_all = ["modes", "premint", "log_bench", "replicas_bench", "url"])]
    actions_bench: bool,
    /// Run the ClawShield benchmark instead of the modes: POST /execute of echo on a demo-mode
    /// `openexec serve`, then POST /v1/proposals of a small charge_card (auto-approved) on an
    /// `openexec shield serve` with the example policy grown by --shield-rules rules, both
    /// started here (SQLite, durability on); fails when the gate is the slower of the two.
    #[arg(long, conflicts_with_all = ["modes", "premint", "log_bench", "replicas_bench", "actions_bench", "url"])]
    shield_bench: bool,
    /// With --shield-bench: rules generated into the policy bundle besides the example's, each
    /// evaluated for every charge_card proposal.
    #[arg(long, default_value_t = 100, requires = "shield_bench")]
    shield_rules: usize,
    /// Run the benchmark against the Python original (OpenExec 0.1.x, FastAPI) instead of the
    /// modes, side by side on this machine: POST /execute of echo at the original (started
    /// here from --original-dir, demo mode, its own temp dir and SQLite file), then at
    /// `openexec serve` in demo mode (GET /health first), in clawshield mode (a v1 artifact per
    /// request) and of the built-in sleep {"ms": 0} (demo); each as a ratio to the original's
    /// req/s, at --connections (issue 12 measures at 16).
    #[arg(
        long,
        requires = "original",
        conflicts_with_all = ["modes", "log_bench", "replicas_bench", "actions_bench", "shield_bench", "url"]
    )]
    vs_original: bool,
    /// With --vs-original: the folder of the original's checkout (the one holding main.py),
    /// started with `PYTHON -m uvicorn main:app --app-dir DIR`.
    #[arg(long, requires = "vs_original")]
    original_dir: Option<PathBuf>,
    /// With --vs-original: the Python interpreter that has uvicorn and the original's
    /// requirements (e.g. a virtualenv's bin/python).
    #[arg(
        long,
        default_value = "python3",
        requires = "vs_original",
        conflicts_with = "original_url"
    )]
    original_python: PathBuf,
    /// With --vs-original: drive the original already running at this http:// URL (demo mode)
    /// instead of starting one.
    #[arg(long, requires = "vs_original")]
    original_url: Option<String>,
}

impl Args {
    /// `--server-bin`, which `bench` (the flag of a benchmark that starts its own servers)
    /// needs.
    fn server_bin_for(&self, bench: &str) -> anyhow::Result<&std::path::Path> {
        self.server_bin
            .as_deref()
            .with_context(|| format!("{bench} starts its own servers: give --server-bin"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Demo,
    Clawshield,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Demo => "demo",
            Mode::Clawshield => "clawshield",
        }
    }
}

/// The tenant every request runs for (the server's default).
pub(crate) const TENANT: &str = "default";
/// The ClawShield key the load generator signs with (a fixed test seed).
pub(crate) const SIGNING_SEED: [u8; 32] = [7u8; 32];
/// Artifacts/s assumed when no demo rate of this run tells how many to mint.
const FALLBACK_PREMINT_RATE: f64 = 4000.0;

/// `10s`, `1.5s`, `500ms`, `2m`, or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let x: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => x / 1000.0,
        "s" => x,
        "m" | "min" => x * 60.0,
        _ => return Err(format!("unknown unit in {s:?} (use ms, s or m)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The address of an `http://host:port[/]` URL.
fn parse_url(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .context("--url must start with http:// (no TLS)")?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    hostport
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} resolves to no address"))
}

/// CPU use over a window, in cores.
#[derive(Default)]
struct CpuUse {
    server_cores: Option<f64>,
    client_cores: f64,
    /// Busy CPU of the whole machine outside softirq, in cores.
    machine_cores: Option<f64>,
    /// Kernel softirq time (loopback networking is mostly here), in cores.
    softirq_cores: Option<f64>,
    /// CPU of the database server's processes (by command name), when asked for, in cores.
    db_cores: Option<f64>,
    /// Server CPU per thread name (with --verbose): name, threads, seconds, busiest's seconds.
    threads: Vec<(String, usize, f64, f64)>,
}

/// CPU ticks of all `pids` together (None when there are none or one cannot be read).
fn pids_ticks(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|p| server::process_ticks(&p.to_string()))
        .sum()
}

/// Every thread of every one of `pids`.
fn pids_thread_ticks(pids: &[u32]) -> Vec<(String, String, u64)> {
    pids.iter().flat_map(|p| server::thread_ticks(*p)).collect()
}

async fn sample_cpu(
    window: Window,
    pids: Vec<u32>,
    db_comm: Option<&'static str>,
    verbose: bool,
    tck: f64,
) -> CpuUse {
    tokio::time::sleep_until(window.measure_from.into()).await;
    let t0 = Instant::now();
    let s0 = pids_ticks(&pids);
    let c0 = server::process_ticks("self");
    let m0 = server::machine_ticks();
    let d0 = db_comm.map(server::comm_ticks);
    let th0 = if verbose {
        pids_thread_ticks(&pids)
    } else {
        Vec::new()
    };
    tokio::time::sleep_until(window.end.into()).await;
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    let s1 = pids_ticks(&pids);
    let c1 = server::process_ticks("self");
    let m1 = server::machine_ticks();
    let d1 = db_comm.map(server::comm_ticks);
    let threads = if verbose {
        server::thread_cpu_delta(&th0, &pids_thread_ticks(&pids), tck)
    } else {
        Vec::new()
    };
    let cores = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / tck / secs),
        _ => None,
    };
    CpuUse {
        server_cores: cores(s0, s1),
        client_cores: cores(c0, c1).unwrap_or(0.0),
        machine_cores: cores(m0.map(|m| m.0), m1.map(|m| m.0)),
        softirq_cores: cores(m0.map(|m| m.1), m1.map(|m| m.1)),
        // No such process at all (a remote database): unknown, not 0.
        db_cores: match (d0, d1) {
            (Some(a), Some(b)) if !(a.is_empty() && b.is_empty()) => {
                Some(server::ticks_delta(&a, &b) as f64 / tck / secs)
            }
            _ => None,
        },
        threads,
    }
}

/// Everything one run of one endpoint produced.
struct Phase {
    outcome: Outcome,
    cpu: CpuUse,
    window: Window,
}

/// A window of warmup then measurement starting now.
fn window_from_now(args: &Args) -> Window {
    let start = Instant::now();
    Window {
        measure_from: start + args.warmup,
        end: start + args.warmup + args.duration,
    }
}

fn run_phase(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    addr: SocketAddr,
    endpoint: Endpoint,
    pid: Option<u32>,
    tck: f64,
) -> anyhow::Result<Phase> {
    let window = window_from_now(args);
    run_phase_in(
        rt,
        args,
        window,
        &[addr],
        endpoint,
        pid.as_slice(),
        None,
        tck,
    )
}

/// One phase in `window` over the servers at `addrs` (connections spread round-robin), with
/// `pids` as the server's CPU and, when `db_comm` is given, the CPU of the processes of that
/// command name as the database's.
#[allow(clippy::too_many_arguments)]
fn run_phase_in(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    window: Window,
    addrs: &[SocketAddr],
    endpoint: Endpoint,
    pids: &[u32],
    db_comm: Option<&'static str>,
    tck: f64,
) -> anyhow::Result<Phase> {
    rt.block_on(async {
        let cpu = tokio::spawn(sample_cpu(
            window,
            pids.to_vec(),
            db_comm,
            args.verbose,
            tck,
        ));
        let outcome = client::run_phase_spread(addrs, endpoint, args.connections, window).await?;
        let cpu = cpu.await.unwrap_or_default();
        Ok(Phase {
            outcome,
            cpu,
            window,
        })
    })
}

/// The row of `phase` in a table: its 200 answers, latency, non-200 answers (transport
/// errors under 0) and CPU, with every busy process but the server and this client as other.
fn phase_row(mode: &str, endpoint: &str, phase: &Phase, seconds: f64) -> Row {
    let o = &phase.outcome;
    let cpu = &phase.cpu;
    Row {
        mode: mode.to_string(),
        endpoint: endpoint.to_string(),
        requests: o.ok,
        seconds,
        lat: percentiles(&o.hist),
        non_ok: o.non_ok_all(),
        ratio: None,
        server_cores: cpu.server_cores,
        client_cores: cpu.client_cores,
        // Everything else busy on the machine: other processes (a build, another benchmark,
        // idle servers) distort the numbers, so the table shows it. Server time is unknown
        // for a server that is not ours, so it counts as other there.
        other_cores: cpu
            .machine_cores
            .map(|m| (m - cpu.server_cores.unwrap_or(0.0) - cpu.client_cores).max(0.0)),
        softirq_cores: cpu.softirq_cores,
    }
}

/// Sampled 200 body number `i` as JSON (an error that shows it when it is not).
fn parse_sample(i: usize, b: &Bytes) -> Result<Value, String> {
    serde_json::from_slice(b).map_err(|e| {
        format!(
            "sample {i} is not JSON ({e}): {}",
            String::from_utf8_lossy(b)
        )
    })
}

/// Check sampled 200 bodies of /execute: each says `"replayed": false` and `"status":
/// "executed"`, and their `receipt` values are all distinct. Returns how many were checked.
fn check_samples(samples: &[Bytes]) -> Result<usize, String> {
    let mut receipts = HashSet::new();
    for (i, b) in samples.iter().enumerate() {
        let v = parse_sample(i, b)?;
        if v.get("replayed") != Some(&Value::Bool(false)) {
            return Err(format!("sample {i} does not say \"replayed\": false: {v}"));
        }
        if v.get("status").and_then(Value::as_str) != Some("executed") {
            return Err(format!(
                "sample {i} does not say \"status\": \"executed\": {v}"
            ));
        }
        let Some(r) = v.get("receipt").and_then(Value::as_str) else {
            return Err(format!("sample {i} has no receipt: {v}"));
        };
        if !receipts.insert(r.to_string()) {
            return Err(format!("receipt {r} appears twice among the samples"));
        }
    }
    Ok(samples.len())
}

/// The failure of a phase whose pool of pre-minted bodies (`src`) ran out before its window
/// ended (its numbers are not valid then), if it did.
pub(crate) fn pool_ran_out(who: &str, src: &BodySource, phase: &Phase) -> Option<String> {
    let at = phase.outcome.exhausted_at?;
    let into = at.saturating_duration_since(phase.window.measure_from);
    Some(format!(
        "{who}: the pool of {} pre-minted artifacts ran out {:.1}s into the measured window; its \
         /execute numbers are not valid (rerun with a larger --premint)",
        src.capacity().unwrap_or(0),
        into.as_secs_f64()
    ))
}

/// How many clawshield artifacts to mint for a window of `secs` seconds.
pub(crate) fn premint_count(demo_rps: Option<f64>, secs: f64, connections: usize) -> u64 {
    let rate = demo_rps
        .filter(|r| *r > 0.0)
        .map(|r| (r * 3.0).max(1000.0))
        .unwrap_or(FALLBACK_PREMINT_RATE);
    (rate * secs).ceil() as u64 + 2 * connections as u64 + 100
}

/// Server CPU by thread name over a window of `secs`, as `name ×n 45% (busiest 20%), …`.
fn threads_text(threads: &[(String, usize, f64, f64)], secs: f64) -> String {
    threads
        .iter()
        .map(|(name, n, s, max)| {
            if *n > 1 {
                format!(
                    "{name} ×{n} {:.0}% (busiest {:.0}%)",
                    s / secs * 100.0,
                    max / secs * 100.0
                )
            } else {
                format!("{name} {:.0}%", s / secs * 100.0)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn nproc() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn command_line() -> String {
    shell_words(std::env::args())
}

/// Words as one command line a shell would split back into them (quoted where needed).
pub(crate) fn shell_words(words: impl IntoIterator<Item = String>) -> String {
    words
        .into_iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt_dur(d: Duration) -> String {
    format!("{}s", (d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// The lines under every report's table: the machine and the client's settings (`per` says
/// what one window is, e.g. "per endpoint"), the date and the command line.
pub(crate) fn run_lines(args: &Args, per: &str, cmd: &str) -> String {
    format!(
        "machine: nproc={} ({}); client: {} runtime thread(s), {} connections; {per} warmup {} + \
         measured {}\ndate: {}\ncommand: `{cmd}`\n",
        nproc(),
        cpu_model(),
        args.client_threads.max(1),
        args.connections,
        fmt_dur(args.warmup),
        fmt_dur(args.duration),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
    )
}

/// The JSON document of a report: what every benchmark records of its run (machine, date,
/// command, client settings), then the keys of `rest` (an object).
pub(crate) fn json_doc(args: &Args, cmd: &str, rest: Value) -> Value {
    let mut doc = json!({
        "machine": {"nproc": nproc(), "cpu": cpu_model()},
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "command": cmd,
        "connections": args.connections,
        "client_threads": args.client_threads.max(1),
        "warmup_s": args.warmup.as_secs_f64(),
        "duration_s": args.duration.as_secs_f64(),
    });
    if let (Value::Object(d), Value::Object(r)) = (&mut doc, rest) {
        d.extend(r);
    }
    doc
}

/// The PEM of the ClawShield key the load generator signs with ([`SIGNING_SEED`]), as a
/// clawshield-mode server is given it.
pub(crate) fn clawshield_pem() -> String {
    verifying_key_to_pem(&signing_key_from_seed(SIGNING_SEED).verifying_key())
}

/// The bodies of one clawshield-mode window, minted now, before that window's server starts
/// (so minting is never measured): `--premint` of them, else [`premint_count`] for
/// `demo_rps`, each with its own v1 artifact bound to its nonce (`<run_id>-c<N>`) and signed
/// with [`SIGNING_SEED`]'s key, valid from 5 s ago for six hours; on all cores. `label`
/// prefixes the progress lines.
pub(crate) fn premint(args: &Args, label: &str, run_id: &str, demo_rps: Option<f64>) -> BodySource {
    let secs = (args.warmup + args.duration).as_secs_f64();
    let count = args
        .premint
        .unwrap_or_else(|| premint_count(demo_rps, secs, args.connections));
    eprintln!("[{label}] minting {count} v1 approval artifacts before the window…");
    let t = Instant::now();
    let now = chrono::Utc::now();
    let bodies = bodies::mint_clawshield(
        &signing_key_from_seed(SIGNING_SEED),
        run_id,
        TENANT,
        count,
        now - chrono::Duration::seconds(5),
        now + chrono::Duration::hours(6),
        nproc(),
    );
    let took = t.elapsed().as_secs_f64();
    eprintln!(
        "[{label}] minted {count} in {took:.1}s ({:.0}/s on {} threads)",
        count as f64 / took.max(1e-9),
        nproc()
    );
    BodySource::pool(bodies)
}

/// Wait until `srv` answers `GET path` with 200, for up to `timeout`; else an error naming
/// `name`, the server's command line and the tail of its stderr (at once when it exits).
pub(crate) fn wait_for_200(
    rt: &tokio::runtime::Runtime,
    srv: &mut server::Server,
    name: &str,
    path: &'static str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + timeout;
    loop {
        let last = match rt.block_on(get_once(srv.addr, path)) {
            Ok((200, _)) => return Ok(()),
            Ok((st, body)) => format!("it answered {st}: {}", String::from_utf8_lossy(&body)),
            Err(e) => format!("{e:#}"),
        };
        let gave_up = if let Some(status) = srv.exited() {
            format!("exited ({status})")
        } else if Instant::now() >= until {
            format!(
                "did not answer GET {path} with 200 within {}",
                fmt_dur(timeout)
            )
        } else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        bail!(
            "{name} at {} {gave_up} (last try: {last}); command: `{}`; its stderr ends:\n{}",
            srv.addr,
            srv.command,
            srv.stderr_tail(20)
        );
    }
}

/// A one-off GET on a new connection: the status and body of the answer.
async fn get_once(addr: SocketAddr, path: &'static str) -> anyhow::Result<(u16, Bytes)> {
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(http_body_util::Full::new(Bytes::new()))?;
    send_once(addr, req).await
}

/// A one-off request on a new connection: the status and body of the answer.
async fn send_once(
    addr: SocketAddr,
    req: hyper::Request<http_body_util::Full<Bytes>>,
) -> anyhow::Result<(u16, Bytes)> {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut s, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// The store counters of the server's `/metrics`, if it serves them.
fn store_metrics(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> Option<StoreMetrics> {
    match rt.block_on(get_once(addr, "/metrics")) {
        // Before the first write the server may not list the store's series yet: zeros.
        Ok((200, body)) => {
            Some(StoreMetrics::parse(&String::from_utf8_lossy(&body)).unwrap_or_default())
        }
        _ => None,
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("openexec-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Run everything; Ok(false) when the benchmark ran but failed.
fn run(args: &Args) -> anyhow::Result<bool> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.duration.is_zero() {
        bail!("--duration must be positive");
    }
    let modes = match (&args.modes, &args.url) {
        (Some(m), Some(_)) if m.iter().any(|m| *m != Mode::Demo) => {
            bail!("--url drives an already running server in demo mode only")
        }
        (Some(m), _) => m.clone(),
        (None, Some(_)) => vec![Mode::Demo],
        (None, None) => vec![Mode::Demo, Mode::Clawshield],
    };
    let rt = if args.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads)
            .enable_all()
            .build()?
    };
    let tck = server::clock_ticks();
    let unix_ms = chrono::Utc::now().timestamp_millis();
    let run_id = format!("ld{unix_ms}p{}", std::process::id());
    if args.log_bench {
        return logbench::run(args, &rt, tck, &run_id, &command_line());
    }
    if args.replicas_bench {
        return replicas::run(args, &rt, tck, &run_id, &command_line());
    }
    if args.actions_bench {
        return actionsbench::run(args, &rt, tck, &run_id, &command_line());
    }
    if args.shield_bench {
        return shieldbench::run(args, &rt, tck, &run_id, &command_line());
    }
    if args.vs_original {
        return vsoriginal::run(args, &rt, tck, &run_id, &command_line());
    }
    let clawshield_pem = clawshield_pem();

    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut thread_notes: Vec<String> = Vec::new();
    let mut extra_json = serde_json::Map::new();
    let mut demo_rps: Option<f64> = None;

    for mode in modes {
        let m = mode.as_str();
        // Mint first, while no server runs, so the minting is not measured.
        let source = match mode {
            Mode::Demo => BodySource::template(&format!("{run_id}-{m}")),
            Mode::Clawshield => premint(args, m, &format!("{run_id}-{m}"), demo_rps),
        };
        let source = Arc::new(source);

        let mut srv = match (&args.url, &args.server_bin) {
            (Some(_), _) => None,
            (None, Some(bin)) => {
                let key = (mode == Mode::Clawshield).then_some(clawshield_pem.as_str());
                let s = server::Server::start(bin, m, key)?;
                eprintln!(
                    "[{m}] server pid {} listening on {} (state in {})",
                    s.pid,
                    s.addr,
                    s.dir().display()
                );
                Some(s)
            }
            (None, None) => bail!("give --server-bin or --url"),
        };
        let addr = match (&srv, &args.url) {
            (Some(s), _) => s.addr,
            (None, Some(u)) => parse_url(u)?,
            (None, None) => bail!("give --server-bin or --url"),
        };
        let pid = srv.as_ref().map(|s| s.pid);

        measure::check_mode(&rt, "the server", addr, m)?;

        let mut mode_rows = Vec::new();
        let mut health_rps = None;
        for endpoint in [Endpoint::Health, Endpoint::Execute(source.clone())] {
            eprintln!(
                "[{m}] {}: {} connections, warmup {}, measuring {}…",
                endpoint.label(),
                args.connections,
                fmt_dur(args.warmup),
                fmt_dur(args.duration)
            );
            let metrics_before = match endpoint {
                Endpoint::Execute(_) => store_metrics(&rt, addr),
                Endpoint::Health | Endpoint::Inclusion { .. } | Endpoint::Propose { .. } => None,
            };
            let started = Instant::now();
            let phase = run_phase(&rt, args, addr, endpoint.clone(), pid, tck)?;
            if let Some(before) = metrics_before {
                if let Some(after) = store_metrics(&rt, addr).filter(|a| a.commits > 0.0) {
                    notes.push(format!(
                        "{m}: server store during the /execute phase (its /metrics, warmup \
                         included): {}",
                        StoreMetrics::describe_delta(
                            &before,
                            &after,
                            started.elapsed().as_secs_f64()
                        )
                    ));
                }
            }
            let o = &phase.outcome;
            let mut row = phase_row(m, endpoint.label(), &phase, args.duration.as_secs_f64());
            match &endpoint {
                Endpoint::Health => health_rps = Some(row.rps()),
                // Only in --log-bench and --shield-bench.
                Endpoint::Inclusion { .. } | Endpoint::Propose { .. } => {}
                Endpoint::Execute(src) => {
                    row.ratio = health_rps.filter(|h| *h > 0.0).map(|h| row.rps() / h);
                    if mode == Mode::Demo {
                        demo_rps = Some(row.rps());
                    }
                    failures.extend(pool_ran_out(m, src, &phase));
                    if let Some(cap) = src.capacity() {
                        notes.push(format!(
                            "{m}: {cap} artifacts pre-minted before the server started; {} used \
                             (warmup included)",
                            src.used()
                        ));
                    }
                    match check_samples(&o.samples) {
                        Ok(0) if o.ok > 0 => failures
                            .push(format!("{m}: no /execute answer was sampled for the check")),
                        Ok(0) => {} // no 200 at all: reported below
                        Ok(n) => notes.push(format!(
                            "{m}: sanity: {n} sampled 200 answers of /execute all say \
                             \"replayed\": false, \"status\": \"executed\", with {n} distinct \
                             receipts"
                        )),
                        Err(e) => failures.push(format!("{m}: sanity check failed: {e}")),
                    }
                }
            }
            if row.requests == 0 {
                failures.push(format!("{m}: {} had no 200 answer", row.endpoint));
            }
            if row.errors() > 0 {
                let msg = report::non_ok_message(
                    &format!("{m}: {}", row.endpoint),
                    &row.non_ok,
                    &o.non_ok_examples,
                );
                if args.allow_errors {
                    notes.push(msg);
                } else {
                    failures.push(msg);
                }
            }
            if args.verbose && !phase.cpu.threads.is_empty() {
                thread_notes.push(format!(
                    "{m} {}: server CPU by thread: {}",
                    row.endpoint,
                    threads_text(&phase.cpu.threads, args.duration.as_secs_f64())
                ));
            }
            eprintln!(
                "[{m}] {}: {} ok, {:.0} req/s, p50 {} ms, p99 {} ms",
                row.endpoint,
                row.requests,
                row.rps(),
                report::ms(row.lat.p50_us),
                report::ms(row.lat.p99_us)
            );
            mode_rows.push(row);
        }
        rows.extend(mode_rows);

        if let Some(s) = srv.as_mut() {
            let status = s.stop()?;
            eprintln!("[{m}] server stopped ({status})");
            if !status.success() {
                failures.push(format!(
                    "{m}: the server exited with {status} after SIGTERM; its stderr ends:\n{}",
                    s.stderr_tail(20)
                ));
            }
        }
        extra_json.insert(format!("{m}_bodies_used"), json!(source.used()));
    }

    let cmd = command_line();
    let mut out = String::new();
    out.push_str(&markdown_table(&rows));
    out.push('\n');
    out.push_str(&run_lines(args, "per endpoint", &cmd));
    if args.url.is_some() {
        out.push_str(&format!(
            "server: already running at {} (its own durability settings); ",
            args.url.as_deref().unwrap_or_default()
        ));
    } else {
        out.push_str(
            "durability on: each server is a fresh `openexec serve` on its own temp dir (SQLite \
             file, server defaults); ",
        );
    }
    out.push_str(
        "requests = 200 answers started after the warmup and answered inside the window; CPU \
         columns are % of one core during the window (softirq: the kernel's, mostly loopback \
         networking; other: every other busy process, which distorts the run when not ~0).\n",
    );
    let doc = || {
        json_doc(
            args,
            &cmd,
            json!({
                "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
                "notes": notes,
                "server_threads": thread_notes,
                "failures": failures,
                "ok": failures.is_empty(),
                "extra": extra_json,
            }),
        )
    };
    report::finish(
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
    use openexec_core::artifact;
    use openexec_core::hash::{intent_hash, request_hash};

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn percentiles_from_histogram() {
        let mut h = client::new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap(); // 10 µs … 10 ms, uniform
        }
        let p = percentiles(&h);
        // 3 significant digits: within 0.1 %.
        let near = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.001;
        assert!(near(p.p50_us, 5000), "{p:?}");
        assert!(near(p.p99_us, 9900), "{p:?}");
        assert!(near(p.p999_us, 9990), "{p:?}");
        assert!(near(p.max_us, 10000), "{p:?}");
        assert_eq!(report::ms(p.p50_us), "5.00");
        assert_eq!(report::ms(1234), "1.23");
        assert_eq!(report::ms(12_350), "12.35");
        let empty = percentiles(&client::new_histogram());
        assert_eq!(empty.p99_us, 0);
    }

    fn row(endpoint: &str, requests: u64, ratio: Option<f64>) -> Row {
        Row {
            mode: "demo".into(),
            endpoint: endpoint.into(),
            requests,
            seconds: 10.0,
            lat: Percentiles {
                p50_us: 1500,
                p99_us: 12_345,
                p999_us: 100_000,
                max_us: 200_000,
                mean_us: 2000.0,
            },
            non_ok: Default::default(),
            ratio,
            server_cores: Some(1.234),
            client_cores: 0.5,
            other_cores: Some(0.02),
            softirq_cores: Some(0.3),
        }
    }
    use crate::report::Percentiles;

    #[test]
    fn table_has_one_row_per_endpoint_with_ratio() {
        let mut e = row("POST /execute", 20_000, Some(0.1));
        e.non_ok.insert(503, 2);
        e.non_ok.insert(0, 1);
        let t = markdown_table(&[row("GET /health", 200_000, None), e]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with(
            "| mode | endpoint | requests | req/s | p50 ms | p99 ms | p999 ms | execute ÷ health |"
        ));
        assert_eq!(
            lines[2],
            "| demo | GET /health | 200000 | 20000 | 1.50 | 12.35 | 100.00 | — | 0 | 123% | 50% | 30% | 2% |"
        );
        assert_eq!(
            lines[3],
            "| demo | POST /execute | 20000 | 2000 | 1.50 | 12.35 | 100.00 | 0.100 | conn×1, 503×2 | 123% | 50% | 30% | 2% |"
        );
        let j = row_json(&row("GET /health", 5, None));
        assert_eq!(j["p99_ms"], json!(12.35));
        assert_eq!(j["req_per_s"], json!(0.5));
        assert_eq!(j["ratio_to_health"], Value::Null);
    }

    #[test]
    fn demo_bodies_are_valid_json_with_distinct_nonces() {
        let src = BodySource::template("run1");
        let mut nonces = HashSet::new();
        for i in 0..100u64 {
            let b = src.next().unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["action"], "echo");
            assert_eq!(v["payload"], bodies::payload(i));
            assert!(nonces.insert(v["nonce"].as_str().unwrap().to_string()));
        }
        assert_eq!(src.used(), 100);
        assert_eq!(src.capacity(), None);
    }

    #[test]
    fn preminted_artifacts_are_distinct_and_bound_to_their_request() {
        let sk = signing_key_from_seed(SIGNING_SEED);
        let pk = sk.verifying_key();
        let now = chrono::Utc::now();
        let n = 37; // not a multiple of the thread count
        let bodies = bodies::mint_clawshield(
            &sk,
            "runX",
            TENANT,
            n,
            now,
            now + chrono::Duration::minutes(5),
            4,
        );
        assert_eq!(bodies.len(), n as usize);
        let mut nonces = HashSet::new();
        let mut hashes = HashSet::new();
        for (i, b) in bodies.iter().enumerate() {
            let v: Value = serde_json::from_slice(b).unwrap();
            let nonce = v["nonce"].as_str().unwrap();
            assert_eq!(nonce, bodies::clawshield_nonce("runX", i as u64));
            let payload = &v["payload"];
            assert_eq!(payload, &bodies::payload(i as u64));
            let rh = request_hash(bodies::ACTION, nonce, payload, TENANT);
            let ih = intent_hash(bodies::ACTION, payload);
            let art_v = &v["approval_artifact"];
            assert_eq!(art_v["nonce"], nonce);
            assert_eq!(art_v["request_hash"], rh.as_str());
            // What the server does: parse and verify against the binding.
            let art = artifact::parse(art_v).unwrap();
            let binding = artifact::RequestBinding {
                tenant_id: TENANT,
                action: bodies::ACTION,
                nonce,
                payload,
                request_hash: &rh,
                intent_hash: &ih,
            };
            artifact::verify(&art, &[pk], &binding, now, 30, true).unwrap();
            assert!(nonces.insert(nonce.to_string()));
            assert!(hashes.insert(rh));
        }
        // The pool hands each body out once, then reports that it ran out.
        let pool = BodySource::pool(bodies);
        for _ in 0..n {
            assert!(pool.next().is_some());
        }
        assert!(pool.next().is_none());
        assert_eq!(pool.used(), n);
        assert_eq!(pool.capacity(), Some(n));
    }

    #[test]
    fn sample_check_catches_replays_and_duplicate_receipts() {
        let ok = |r: &str| {
            Bytes::from(json!({"status": "executed", "replayed": false, "receipt": r}).to_string())
        };
        assert_eq!(check_samples(&[ok("a"), ok("b")]), Ok(2));
        assert!(check_samples(&[ok("a"), ok("a")]).is_err());
        let replay = Bytes::from(
            json!({"status": "executed", "replayed": true, "receipt": "c"}).to_string(),
        );
        assert!(check_samples(&[ok("a"), replay]).is_err());
        assert!(check_samples(&[Bytes::from_static(b"nope")]).is_err());
    }

    #[test]
    fn premint_scales_with_the_demo_rate() {
        assert_eq!(premint_count(Some(1000.0), 12.0, 64), 36_000 + 128 + 100);
        assert_eq!(premint_count(Some(10.0), 10.0, 1), 10_000 + 2 + 100);
        assert_eq!(premint_count(None, 10.0, 1), 40_000 + 2 + 100);
    }

    #[test]
    fn urls_parse() {
        assert_eq!(
            parse_url("http://127.0.0.1:5000/").unwrap(),
            "127.0.0.1:5000".parse().unwrap()
        );
        assert!(parse_url("https://127.0.0.1:5000").is_err());
    }

    #[test]
    fn store_metrics_parse_and_delta() {
        let text = "# TYPE x summary\n\
            openexec_store_batch_size_sum 300\n\
            openexec_store_batch_size_count 10\n\
            openexec_store_seconds{op=\"commit\",quantile=\"0.5\"} 0.004\n\
            openexec_store_seconds_sum{op=\"commit\"} 0.05\n\
            openexec_store_seconds_count{op=\"commit\"} 10\n\
            openexec_store_seconds_sum{op=\"write\"} 3\n\
            openexec_store_seconds_count{op=\"write\"} 300\n";
        let m = StoreMetrics::parse(text).unwrap();
        assert_eq!(m.batch_writes, 300.0);
        assert_eq!(m.commits, 10.0);
        assert_eq!(m.write_secs, 3.0);
        assert_eq!(m.reads, 0.0);
        assert!(StoreMetrics::parse("nothing 1\n").is_none());
        let line = StoreMetrics::describe_delta(&StoreMetrics::default(), &m, 0.1);
        assert!(line.starts_with("10 group commits, 30.0 writes per commit on average, 5.00 ms per commit, the writer busy 50% of the phase; a write waited 10.00 ms"), "{line}");
    }

    #[test]
    fn machine_stat_line() {
        let line = "cpu  100 5 50 1000 7 3 20 2 0 0";
        assert_eq!(server::machine_ticks_of(line), Some((160, 20)));
        assert_eq!(server::machine_ticks_of("intr 1 2 3"), None);
    }

    #[test]
    fn proc_stat_fields() {
        let stat = "1234 (tokio-runtime w) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 1 0";
        assert_eq!(server::stat_ticks(stat), Some(280));
    }
}
