//! `--vs-original`: OpenExec's `/execute` as a ratio to the Python original (FastAPI,
//! "OpenExec 0.1.x") run beside it on this machine, the same load against each in one run
//! (issue 12).
//!
//! None of the original's code is in this repository: the user names the folder of a checkout
//! of it (`--original-dir`, the one holding `main.py`) and an interpreter that has its
//! requirements (`--original-python`), and this tool starts it as an external process:
//! `PYTHON -m uvicorn main:app --host 127.0.0.1 --port P --app-dir DIR --log-level warning`
//! ([`uvicorn_args`]), P a port that was free a moment before, in a fresh temp dir (its working
//! directory, holding its SQLite file: `OPENEXEC_DB_URL=sqlite:////<dir>/openexec.db`) with
//! `OPENEXEC_MODE=demo` and none of the caller's `OPENEXEC_*`/`CLAWSHIELD_*` ([`original_env`]).
//! It waits until `GET /health` answers 200 and stops it with SIGTERM (then kill) at the end,
//! also on error. With `--original-url` it drives an original already running there instead.
//!
//! The phases, one after another, each `--connections` keep-alive connections for `--warmup` +
//! `--duration` with a nonce never used before in every request:
//!
//! 1. the original's `POST /execute` of `echo` (payload `{"i": N}`);
//! 2. `openexec serve` in demo mode (a fresh temp dir, SQLite, durability on): `GET /health`,
//!    then `POST /execute` of `echo`;
//! 3. `openexec serve` in clawshield mode: the same `echo`, each request with its own v1
//!    artifact minted before the window (and its server started) and verified by the server;
//! 4. the demo server again: the built-in `sleep` with `{"ms": 0}`, an action with effects
//!    (`GET /actions` must say so), whose claim is durable before it runs.
//!
//! Reported per row: req/s, p50/p99/p999, server CPU, non-200 answers (any fails the run unless
//! `--allow-errors`) and req/s ÷ the original's; then `/execute ÷ /health` of the demo server
//! at the same connections, the store's group commits of each of our phases, and the cost of a
//! request. Checks, each a failure when it does not hold: the original's sampled 200 answers are
//! its `ExecutionResult` of the echo ([`check_original_samples`]: receipt recomputed as it
//! computes it, ids and receipts distinct); ours are fresh executions with distinct receipts
//! and the expected result, and each handler ran exactly once per 200 answer.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use openexec_core::hash::{python_dumps, PySeparators};
use serde_json::{json, Value};

use crate::actionsbench::{check_results_by, find_listed, sha256_hex};
use crate::bodies::BodySource;
use crate::client::Endpoint;
use crate::measure::{check_mode, measure, start_exec, Findings, Measured, Target};
use crate::report::{ratio, round3, row_json_as, table_with, Row};
use crate::shieldbench::cost_line;
use crate::{get_once, parse_url, premint, run_lines, send_once, server, wait_for_200, Args};

/// The original's row label.
pub const ORIGINAL: &str = "original (Python)";
/// Our servers' row labels.
pub const DEMO: &str = "openexec (demo)";
pub const CLAWSHIELD: &str = "openexec (clawshield)";
/// The action with effects and its payload.
pub const SLEEP: &str = "sleep";
/// How long the original may take from its start to a 200 answer of `GET /health`.
const ORIGINAL_START: Duration = Duration::from_secs(60);

/// `sleep`'s payload: no wait, so only the path of an action with effects is measured.
pub fn sleep_payload() -> Value {
    json!({"ms": 0})
}

/// The arguments the original's interpreter is given: uvicorn serving `main:app` from
/// `app_dir` on 127.0.0.1:`port`, logging warnings only (no line per request).
pub fn uvicorn_args(port: u16, app_dir: &Path) -> Vec<String> {
    [
        "-m",
        "uvicorn",
        "main:app",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--app-dir",
        &app_dir.display().to_string(),
        "--log-level",
        "warning",
    ]
    .map(str::to_string)
    .to_vec()
}

/// The original's environment with its state in `dir`: demo mode, its SQLite file there (its
/// default URL is relative to the working directory: this one is absolute), and no `.pyc` files
/// written into the user's checkout.
pub fn original_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("OPENEXEC_MODE", "demo".to_string()),
        (
            "OPENEXEC_DB_URL",
            format!("sqlite:///{}", dir.join("openexec.db").display()),
        ),
        ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
    ]
}

/// Start the original from `dir` with `python` on a fresh temp dir and wait until it answers
/// `GET /health` with 200.
pub fn start_original(
    rt: &tokio::runtime::Runtime,
    python: &Path,
    dir: &Path,
) -> anyhow::Result<server::Server> {
    if !dir.join("main.py").is_file() {
        bail!(
            "--original-dir {} holds no main.py (name the folder of the original's checkout)",
            dir.display()
        );
    }
    let app_dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let port = server::free_port()?;
    let state = server::new_dir()?;
    let env = original_env(state.path());
    let cmd = server::command(python, &uvicorn_args(port, &app_dir), state.path());
    let mut srv =
        server::Server::spawn_at(cmd, &env, state, SocketAddr::from(([127, 0, 0, 1], port)))?;
    eprintln!(
        "[{ORIGINAL}] pid {} starting on {} (state in {}): {}",
        srv.pid,
        srv.addr,
        srv.dir().display(),
        srv.command
    );
    wait_for_200(rt, &mut srv, "the original", "/health", ORIGINAL_START)?;
    Ok(srv)
}

/// The receipt the original gives execution `id` of `result`: SHA-256 of `<id>:<result as
/// json.dumps(sort_keys=True)>` in lowercase hex.
pub fn original_receipt(id: &str, result: &Value) -> String {
    let result = python_dumps(result, PySeparators::Default);
    sha256_hex(format!("{id}:{result}").as_bytes())
}

/// Check sampled 200 answers of the original's `POST /execute` of `echo`: each is its
/// `ExecutionResult` (`id`, `action`, `result`, `approved`, `receipt`) for `echo`, approved,
/// with `result` `{"echo": {"i": N}}` and the receipt it computes for that id and result;
/// ids and receipts all distinct. Returns how many were checked.
pub fn check_original_samples(samples: &[Bytes]) -> Result<usize, String> {
    let mut ids = HashSet::new();
    let mut receipts = HashSet::new();
    for (i, b) in samples.iter().enumerate() {
        let v = crate::parse_sample(i, b)?;
        let (Some(id), Some(receipt)) = (v["id"].as_str(), v["receipt"].as_str()) else {
            return Err(format!("sample {i} has no id and receipt: {v}"));
        };
        let echoed = v["result"]["echo"]["i"].is_u64()
            && v["result"].as_object().is_some_and(|o| o.len() == 1);
        if v["action"] != "echo" || v["approved"] != true || !echoed {
            return Err(format!(
                "sample {i} is not an approved echo of {{\"i\": N}}: {v}"
            ));
        }
        let want = original_receipt(id, &v["result"]);
        if receipt != want {
            return Err(format!(
                "sample {i}'s receipt {receipt} is not SHA-256(id:result) = {want}: {v}"
            ));
        }
        if !ids.insert(id.to_string()) {
            return Err(format!("execution {id} was answered twice"));
        }
        if !receipts.insert(receipt.to_string()) {
            return Err(format!("receipt {receipt} appears twice among the samples"));
        }
    }
    Ok(samples.len())
}

/// The rows of the benchmark, in the order they run.
#[derive(Debug, Clone)]
pub struct VsRows {
    pub original: Row,
    pub health: Row,
    pub demo: Row,
    pub clawshield: Row,
    pub sleep: Row,
}

impl VsRows {
    pub fn all(&self) -> [&Row; 5] {
        [
            &self.original,
            &self.health,
            &self.demo,
            &self.clawshield,
            &self.sleep,
        ]
    }

    /// Every row's ratio: its req/s ÷ the original's.
    pub fn fill_ratios(&mut self) {
        let base = self.original.rps();
        for r in [
            &mut self.original,
            &mut self.health,
            &mut self.demo,
            &mut self.clawshield,
            &mut self.sleep,
        ] {
            r.ratio = ratio(r.rps(), base);
        }
    }

    /// The demo server's `/execute` ÷ its `/health`, in req/s.
    pub fn execute_to_health(&self) -> Option<f64> {
        ratio(self.demo.rps(), self.health.rps())
    }

    /// The headline: each of our `/execute` rows against the original, and `/execute ÷
    /// /health`.
    pub fn summary(&self, connections: usize) -> String {
        let x = |r: Option<f64>| r.map_or_else(|| "—".to_string(), |r| format!("{r:.2}×"));
        format!(
            "at {connections} connections, /execute req/s ÷ the original's ({:.0} req/s): demo \
             echo {}, clawshield echo {}, sleep (effects) {}; demo /execute ÷ /health {}",
            self.original.rps(),
            x(self.demo.ratio),
            x(self.clawshield.ratio),
            x(self.sleep.ratio),
            self.execute_to_health()
                .map_or_else(|| "—".to_string(), |r| format!("{r:.3}")),
        )
    }
}

/// The original's answer to one `POST /execute` of echo (nonce `nonce`), before the window.
async fn probe(addr: SocketAddr, nonce: &str) -> anyhow::Result<(u16, Bytes)> {
    let body = json!({"action": "echo", "payload": {"i": 0}, "nonce": nonce});
    let req = hyper::Request::post("/execute")
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))?;
    send_once(addr, req).await
}

/// What `GET /` of the original says it is (`OpenExec 0.1.10`), if it says.
fn original_version(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> Option<String> {
    let (st, body) = rt.block_on(get_once(addr, "/")).ok()?;
    let v: Value = serde_json::from_slice(&body).ok().filter(|_| st == 200)?;
    Some(format!(
        "{} {}",
        v["service"].as_str()?,
        v["version"].as_str()?
    ))
}

/// The row of a phase under the endpoint's name in this table.
fn named(m: &Measured, endpoint: &str) -> Row {
    Row {
        endpoint: endpoint.to_string(),
        ..m.row.clone()
    }
}

/// Run the benchmark against the original; Ok(false) when it ran but failed.
pub fn run(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    tck: f64,
    run_id: &str,
    cmd: &str,
) -> anyhow::Result<bool> {
    let bin = args.server_bin_for("--vs-original")?;
    let mut f = Findings::default();

    // The original first (started here, or already running), checked before anything runs.
    let (mut original, addr, pid) = match (&args.original_url, &args.original_dir) {
        (Some(url), _) => (None, parse_url(url)?, None),
        (None, Some(dir)) => {
            let srv = start_original(rt, &args.original_python, dir)?;
            let (addr, pid) = (srv.addr, Some(srv.pid));
            (Some(srv), addr, pid)
        }
        (None, None) => bail!("--vs-original needs --original-dir or --original-url"),
    };
    // It serves no /metrics (and none of OpenExec's series).
    let target = Target {
        label: ORIGINAL,
        addr,
        pid,
        metrics: false,
    };
    check_mode(rt, "the original", target.addr, "demo")?;
    let version = original_version(rt, target.addr);
    let (st, body) = rt.block_on(probe(target.addr, &format!("{run_id}-probe")))?;
    if let Err(e) = check_original_samples(std::slice::from_ref(&body)) {
        bail!(
            "the original at {}: a probe POST /execute answered {st}: {e}",
            target.addr
        );
    }
    f.notes.push(format!(
        "original: {} at {}{}, demo mode{}",
        version.as_deref().unwrap_or("(GET / gave no version)"),
        target.addr,
        match (&original, &args.original_dir) {
            (Some(s), Some(d)) => format!(
                " from {} (`{}`, state in {})",
                d.display(),
                s.command,
                s.dir().display()
            ),
            _ => " (already running: its own settings; server CPU unknown)".to_string(),
        },
        if original.is_some() {
            ", its SQLite file fresh"
        } else {
            ""
        }
    ));

    // Our demo server up and checked before anything is measured; it must declare sleep as
    // an action with effects.
    let mut demo = start_exec(rt, bin, "demo", DEMO)?;
    let (st, list) = rt
        .block_on(get_once(demo.addr, "/actions"))
        .with_context(|| format!("GET /actions on {} failed", demo.addr))?;
    let list: Value = serde_json::from_slice(&list).unwrap_or(Value::Null);
    if st != 200 {
        bail!("{DEMO}: GET /actions answered {st}: {list}");
    }
    find_listed(&list, SLEEP, "builtin", true).map_err(|e| anyhow::anyhow!("{DEMO}: {e}"))?;

    // 1. The original.
    let orig_m = measure(
        rt,
        args,
        &target,
        Endpoint::Execute(Arc::new(BodySource::template(&format!("{run_id}-o")))),
        tck,
    )?;
    // 2. Ours in demo mode.
    let demo_t = Target::server(&demo, DEMO);
    let health_m = measure(rt, args, &demo_t, Endpoint::Health, tck)?;
    let demo_m = measure(
        rt,
        args,
        &demo_t,
        Endpoint::Execute(Arc::new(BodySource::template(&format!("{run_id}-x")))),
        tck,
    )?;
    // 3. Ours in clawshield mode: the artifacts minted before its server starts.
    let minted = premint(
        args,
        CLAWSHIELD,
        &format!("{run_id}-c"),
        Some(demo_m.row.rps()),
    );
    let mut cs = start_exec(rt, bin, "clawshield", CLAWSHIELD)?;
    let pool = Arc::new(minted);
    let cs_m = measure(
        rt,
        args,
        &Target::server(&cs, CLAWSHIELD),
        Endpoint::Execute(pool.clone()),
        tck,
    )?;
    // 4. Ours in demo mode, an action with effects.
    let sleep_m = measure(
        rt,
        args,
        &demo_t,
        Endpoint::Execute(Arc::new(BodySource::action_with(
            SLEEP,
            Some(&sleep_payload()),
            &format!("{run_id}-s"),
        ))),
        tck,
    )?;

    // The checks.
    let demo_echo = format!("{DEMO} echo");
    let cs_echo = format!("{CLAWSHIELD} echo");
    let demo_sleep = format!("{DEMO} {SLEEP}");
    let o = &orig_m.phase.outcome;
    f.samples(ORIGINAL, check_original_samples(&o.samples), o.ok, |n| {
        format!(
            "{n} sampled 200 answers are approved echoes of their payload, each receipt \
             SHA-256(id:result) as the original computes it, {n} distinct ids and receipts"
        )
    });
    f.execute(&demo_echo, &demo_m, "echo");
    f.execute(&cs_echo, &cs_m, "echo");
    f.execute(&demo_sleep, &sleep_m, SLEEP);
    let want = json!({"slept_ms": sleep_payload()["ms"]});
    f.samples(
        &demo_sleep,
        check_results_by(SLEEP, &sleep_m.phase.outcome.samples, |r| *r == want),
        sleep_m.phase.outcome.ok,
        |n| format!("{n} sampled 200 answers give the result {want}"),
    );
    f.failures
        .extend(crate::pool_ran_out(&cs_echo, &pool, &cs_m.phase));
    f.phase(args, DEMO, &health_m);
    for (m, who) in [
        (&orig_m, ORIGINAL),
        (&demo_m, &demo_echo),
        (&cs_m, &cs_echo),
        (&sleep_m, &demo_sleep),
    ] {
        f.phase(args, who, m);
        let (before, after) = f.store(args, who, m, "openexec_store");
        f.notes
            .push(format!("{who}: {}", cost_line(&m.row, &before, &after)));
    }

    if let Some(srv) = original.as_mut() {
        f.stop(ORIGINAL, srv, true)?;
    }
    f.stop(DEMO, &mut demo, false)?;
    f.stop(CLAWSHIELD, &mut cs, false)?;

    let mut rows = VsRows {
        original: named(&orig_m, "POST /execute echo"),
        health: named(&health_m, "GET /health"),
        demo: named(&demo_m, "POST /execute echo"),
        clawshield: named(&cs_m, "POST /execute echo"),
        sleep: named(&sleep_m, "POST /execute sleep {\"ms\":0}"),
    };
    rows.fill_ratios();
    let table: Vec<Row> = rows.all().into_iter().cloned().collect();
    let summary = rows.summary(args.connections);
    let mut out = String::new();
    out.push_str(&table_with(&table, "server", "÷ original"));
    out.push('\n');
    out.push_str(&format!("**{summary}**\n\n"));
    out.push_str(&run_lines(args, "per phase", cmd));
    out.push_str(
        "vs-original benchmark: the Python original (uvicorn, demo mode, its own SQLite file) \
         and fresh `openexec serve` servers (each on its own temp dir with a SQLite file: WAL, \
         every answer after its commit's fdatasync, the server's defaults) in demo and in clawshield \
         mode, all on this machine, driven one after another with the same client and \
         settings, every request a unique nonce: the original's POST /execute of echo \
         (payload {\"i\": N}); ours in demo mode, GET /health then POST /execute of echo; in \
         clawshield mode, echo with its own v1 artifact per request (minted before the window, \
         verified by the server); in demo mode, the built-in sleep with {\"ms\": 0}, an action \
         with effects (its claim durable before it runs). requests = 200 answers started after \
         the warmup and answered inside the window; ÷ original = req/s ÷ the original's echo \
         req/s; CPU columns are % of one core during the window (softirq: the kernel's, mostly \
         loopback networking; other: every other busy process, the idle servers included, \
         which distorts the run when not ~0).\n",
    );
    let original_doc = json!({
        "dir": args.original_dir.as_deref().map(Path::display).map(|d| d.to_string()),
        "python": original.as_ref().map(|_| args.original_python.display().to_string()),
        "url": args.original_url,
        "command": original.as_ref().map(|s| s.command.clone()),
        "version": version,
    });
    f.finish(out, args, cmd, || {
        json!({
            "benchmark": "vs-original",
            "original": original_doc,
            "rows": table.iter().map(|r| row_json_as(r, "ratio_to_original")).collect::<Vec<_>>(),
            "ratios": {
                "demo_echo": rows.demo.ratio.map(round3),
                "clawshield_echo": rows.clawshield.ratio.map(round3),
                "sleep": rows.sleep.ratio.map(round3),
                "demo_execute_to_health": rows.execute_to_health().map(round3),
            },
            "summary": summary,
            "clawshield_bodies_used": pool.used(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Percentiles;

    const ARGV0: [&str; 3] = ["openexec-load", "--server-bin", "/bin/openexec"];

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        use clap::Parser;
        Args::try_parse_from(ARGV0.iter().chain(extra))
    }

    #[test]
    fn flags_parse_and_conflict() {
        let ok = parse(&[
            "--vs-original",
            "--original-dir",
            "/o",
            "--connections",
            "16",
        ])
        .unwrap();
        assert!(ok.vs_original);
        assert_eq!(ok.original_dir.as_deref(), Some(Path::new("/o")));
        assert_eq!(ok.original_python, Path::new("python3"));
        assert_eq!(ok.original_url, None);
        assert_eq!(ok.connections, 16);
        let ok = parse(&[
            "--vs-original",
            "--original-url",
            "http://127.0.0.1:8000",
            "--premint",
            "100",
        ])
        .unwrap();
        assert_eq!(ok.original_url.as_deref(), Some("http://127.0.0.1:8000"));
        assert_eq!(ok.premint, Some(100));
        let py = parse(&[
            "--vs-original",
            "--original-dir",
            "/o",
            "--original-python",
            "/venv/bin/python",
        ])
        .unwrap();
        assert_eq!(py.original_python, Path::new("/venv/bin/python"));
        // It needs the original: a folder or a URL, not both.
        assert!(parse(&["--vs-original"]).is_err());
        assert!(parse(&[
            "--vs-original",
            "--original-dir",
            "/o",
            "--original-url",
            "http://127.0.0.1:8000"
        ])
        .is_err());
        // An interpreter is for starting one, not for one already running.
        assert!(parse(&[
            "--vs-original",
            "--original-url",
            "http://127.0.0.1:8000",
            "--original-python",
            "/venv/bin/python"
        ])
        .is_err());
        // Its flags go with it only.
        for alone in [
            &["--original-dir", "/o"][..],
            &["--original-url", "http://127.0.0.1:8000"],
            &["--original-python", "/venv/bin/python"],
        ] {
            assert!(parse(alone).is_err(), "{alone:?}");
        }
        // It conflicts with the other benchmarks, as they do with each other.
        for other in [
            &["--log-bench"][..],
            &["--replicas-bench"],
            &["--actions-bench"],
            &["--shield-bench"],
            &["--modes", "demo"],
            &["--url", "http://127.0.0.1:5000"],
        ] {
            let mut v = vec!["--vs-original", "--original-dir", "/o"];
            v.extend_from_slice(other);
            assert!(parse(&v).is_err(), "{other:?}");
        }
    }

    #[test]
    fn the_original_is_started_with_uvicorn_in_demo_mode_on_its_own_file() {
        assert_eq!(
            uvicorn_args(8123, Path::new("/src/orig")).join(" "),
            "-m uvicorn main:app --host 127.0.0.1 --port 8123 --app-dir /src/orig --log-level warning"
        );
        let env = original_env(Path::new("/tmp/x"));
        assert!(env.contains(&("OPENEXEC_MODE", "demo".to_string())));
        // An absolute SQLite URL: sqlite:/// and then the absolute path.
        assert!(env.contains(&(
            "OPENEXEC_DB_URL",
            "sqlite:////tmp/x/openexec.db".to_string()
        )));
        let port = server::free_port().unwrap();
        assert_ne!(port, 0);
        // Free a moment ago, so it can be bound now.
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn a_server_that_exits_or_never_answers_is_reported_with_its_command_and_stderr() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let port = server::free_port().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Start `program args` as the original and wait `timeout` for it: the server and the
        // error.
        let start = |program: &str, args: &[&str], timeout: Duration| {
            let dir = server::new_dir().unwrap();
            let cmd = server::command(Path::new(program), args, dir.path());
            let mut srv = server::Server::spawn_at(cmd, &[], dir, addr).unwrap();
            let e = wait_for_200(&rt, &mut srv, "the original", "/health", timeout).unwrap_err();
            (srv, e.to_string())
        };
        let (_, e) = start(
            "/bin/sh",
            &["-c", "echo no module named uvicorn >&2; exit 3"],
            Duration::from_secs(20),
        );
        assert!(
            e.starts_with(&format!("the original at {addr} exited (exit status: 3)")),
            "{e}"
        );
        assert!(
            e.contains("command: `/bin/sh -c 'echo no module named uvicorn >&2; exit 3'`"),
            "{e}"
        );
        assert!(
            e.ends_with("its stderr ends:\nno module named uvicorn"),
            "{e}"
        );

        let (srv, e) = start("/bin/sleep", &["30"], Duration::from_millis(300));
        assert!(
            e.contains("did not answer GET /health with 200 within 0.3s"),
            "{e}"
        );
        assert!(e.contains("command: `/bin/sleep 30`"), "{e}");
        let pid = srv.pid;
        drop(srv); // SIGTERM, and reaped
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn receipts_are_what_the_original_computes() {
        // Two answers of the original (0.1.10), receipts as it gave them.
        assert_eq!(
            original_receipt(
                "6161c594-66cb-4af7-b327-e6cffc16982c",
                &json!({"echo": {"i": 3}})
            ),
            "b4fb1d6f856c634d35b271638364080375b5a9b38ed43612d5f9b300d0478247"
        );
        assert_eq!(
            original_receipt(
                "a34d698f-8385-4a74-8466-0a81a388c93f",
                &json!({"echo": {"i": 3, "b": "é"}})
            ),
            "d247b6b5896a2c040df18afd6aa1405174f49197ff0e14a2f0cae2ea40ee1ab0"
        );
    }

    fn answer(id: &str, i: u64) -> Value {
        let result = json!({"echo": {"i": i}});
        json!({"id": id, "action": "echo", "result": result, "approved": true,
               "receipt": original_receipt(id, &result)})
    }

    fn bytes(v: &Value) -> Bytes {
        Bytes::from(v.to_string())
    }

    #[test]
    fn the_originals_answers_are_checked() {
        let ok = [bytes(&answer("a", 1)), bytes(&answer("b", 2))];
        assert_eq!(check_original_samples(&ok), Ok(2));
        // The real answer, as the original wrote it.
        let real = Bytes::from_static(
            br#"{"id":"6161c594-66cb-4af7-b327-e6cffc16982c","action":"echo","result":{"echo":{"i":3}},"approved":true,"receipt":"b4fb1d6f856c634d35b271638364080375b5a9b38ed43612d5f9b300d0478247"}"#,
        );
        assert_eq!(check_original_samples(&[real]), Ok(1));
        let twice = [bytes(&answer("a", 1)), bytes(&answer("a", 1))];
        assert!(check_original_samples(&twice)
            .unwrap_err()
            .contains("answered twice"));
        let mut forged = answer("c", 3);
        forged["receipt"] = json!(original_receipt("c", &json!({"echo": {"i": 4}})));
        let e = check_original_samples(&[bytes(&forged)]).unwrap_err();
        assert!(e.contains("is not SHA-256(id:result)"), "{e}");
        for (key, value) in [
            ("approved", json!(false)),
            ("action", json!("add")),
            ("result", json!({"sum": 3})),
            ("id", json!(7)),
            ("receipt", Value::Null),
        ] {
            let mut v = answer("d", 1);
            v[key] = value;
            assert!(check_original_samples(&[bytes(&v)]).is_err(), "{key}");
        }
        // Our own answer is not the original's.
        let ours = json!({"status": "executed", "replayed": false, "receipt": "r"});
        assert!(check_original_samples(&[bytes(&ours)]).is_err());
        assert!(check_original_samples(&[Bytes::from_static(b"nope")]).is_err());
    }

    #[test]
    fn sleep_bodies_carry_the_fixed_payload_and_unique_nonces() {
        let src = BodySource::action_with(SLEEP, Some(&sleep_payload()), "run1-s");
        let mut nonces = HashSet::new();
        for i in 0..50u64 {
            let b = src.next().unwrap();
            assert_eq!(
                std::str::from_utf8(&b).unwrap(),
                format!(r#"{{"action":"sleep","payload":{{"ms":0}},"nonce":"run1-s-n{i}"}}"#)
            );
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert!(nonces.insert(v["nonce"].as_str().unwrap().to_string()));
        }
        assert_eq!(src.used(), 50);
        // Without a fixed payload, the counter's (as --actions-bench sends).
        let b = BodySource::action(SLEEP, "r").next().unwrap();
        assert_eq!(
            &b[..],
            br#"{"action":"sleep","payload":{"n":0},"nonce":"r-n0"}"#
        );
    }

    fn row(mode: &str, endpoint: &str, requests: u64) -> Row {
        Row {
            mode: mode.into(),
            endpoint: endpoint.into(),
            requests,
            seconds: 10.0,
            lat: Percentiles {
                p50_us: 5_000,
                p99_us: 9_000,
                p999_us: 12_000,
                max_us: 20_000,
                mean_us: 5_500.0,
            },
            non_ok: Default::default(),
            ratio: None,
            server_cores: Some(1.0),
            client_cores: 0.1,
            other_cores: Some(0.0),
            softirq_cores: Some(0.05),
        }
    }

    fn rows(original: u64) -> VsRows {
        VsRows {
            original: row(ORIGINAL, "POST /execute echo", original),
            health: row(DEMO, "GET /health", 650_000),
            demo: row(DEMO, "POST /execute echo", 25_000),
            clawshield: row(CLAWSHIELD, "POST /execute echo", 22_500),
            sleep: row(DEMO, "POST /execute sleep {\"ms\":0}", 20_000),
        }
    }

    #[test]
    fn ratios_are_to_the_originals_rate() {
        let mut r = rows(3_000); // 300 req/s
        r.fill_ratios();
        let got: Vec<Option<f64>> = r.all().iter().map(|x| x.ratio).collect();
        let want = [
            1.0,
            650_000.0 / 3_000.0,
            25_000.0 / 3_000.0,
            7.5,
            20_000.0 / 3_000.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g.unwrap() - w).abs() < 1e-9, "{got:?}");
        }
        // /execute ÷ /health of the demo server: 2500 ÷ 65000.
        assert!((r.execute_to_health().unwrap() - 25.0 / 650.0).abs() < 1e-12);
        assert_eq!(
            r.summary(16),
            "at 16 connections, /execute req/s ÷ the original's (300 req/s): demo echo 8.33×, \
             clawshield echo 7.50×, sleep (effects) 6.67×; demo /execute ÷ /health 0.038"
        );
        let table: Vec<Row> = r.all().into_iter().cloned().collect();
        let t = table_with(&table, "server", "÷ original");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 7, "{t}");
        assert!(lines[0].starts_with(
            "| server | endpoint | requests | req/s | p50 ms | p99 ms | p999 ms | ÷ original | non-200 | server CPU |"
        ));
        assert!(lines[2].starts_with(
            "| original (Python) | POST /execute echo | 3000 | 300 | 5.00 | 9.00 | 12.00 | 1.000 | 0 | 100% |"
        ), "{t}");
        assert!(lines[5].starts_with(
            "| openexec (clawshield) | POST /execute echo | 22500 | 2250 | 5.00 | 9.00 | 12.00 | 7.500 |"
        ), "{t}");
        let j = row_json_as(&r.clawshield, "ratio_to_original");
        assert_eq!(j["ratio_to_original"], json!(7.5));
        assert!(j.get("ratio_to_health").is_none(), "{j}");
        assert_eq!(j["req_per_s"], json!(2250.0));

        // An original that answered nothing: no ratio at all, not infinity.
        let mut r = rows(0);
        r.fill_ratios();
        assert!(r.all().iter().all(|x| x.ratio.is_none()));
        assert!(r
            .summary(16)
            .contains("demo echo —, clawshield echo —, sleep (effects) —"));
    }
}
