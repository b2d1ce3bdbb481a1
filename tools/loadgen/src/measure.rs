//! One phase at one server, as the benchmarks that compare servers run it (`--shield-bench`,
//! `--vs-original`), and what a run concludes from its phases ([`Findings`]): notes, failures,
//! and the report's end.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::actionsbench::check_count;
use crate::client::Endpoint;
use crate::replicas::{metric_value, metrics_text};
use crate::report::{ms, non_ok_message, Row, StoreMetrics};
use crate::{
    check_samples, fmt_dur, get_once, json_doc, phase_row, run_phase_in, server, threads_text,
    window_from_now, Args, Phase,
};

/// A server to drive.
pub struct Target<'a> {
    /// Its name in the report and the progress lines.
    pub label: &'a str,
    pub addr: SocketAddr,
    /// Its process, for its CPU (`None`: not ours to see, as for an already running server).
    pub pid: Option<u32>,
    /// Whether it serves OpenExec's `/metrics` (read before and after the phase).
    pub metrics: bool,
}

impl<'a> Target<'a> {
    /// A server this tool started, with its `/metrics`.
    pub fn server(srv: &server::Server, label: &'a str) -> Target<'a> {
        Target {
            label,
            addr: srv.addr,
            pid: Some(srv.pid),
            metrics: true,
        }
    }
}

/// Everything one server's phase produced.
pub struct Measured {
    pub row: Row,
    pub phase: Phase,
    /// Its `/metrics` before and after the phase (empty when the target serves none).
    pub before: String,
    pub after: String,
}

/// Drive `endpoint` at `target` for warmup + duration, with its `/metrics` read before and
/// after when it serves them.
pub fn measure(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    target: &Target,
    endpoint: Endpoint,
    tck: f64,
) -> anyhow::Result<Measured> {
    let label = target.label;
    eprintln!(
        "[{label}] {}: {} connections, warmup {}, measuring {}…",
        endpoint.label(),
        args.connections,
        fmt_dur(args.warmup),
        fmt_dur(args.duration)
    );
    let metrics = || -> anyhow::Result<String> {
        if target.metrics {
            metrics_text(rt, target.addr)
        } else {
            Ok(String::new())
        }
    };
    let before = metrics()?;
    let window = window_from_now(args);
    let phase = run_phase_in(
        rt,
        args,
        window,
        &[target.addr],
        endpoint.clone(),
        target.pid.as_slice(),
        None,
        tck,
    )
    .with_context(|| format!("{label}: {}", endpoint.label()))?;
    let after = metrics()?;
    let row = phase_row(label, endpoint.label(), &phase, args.duration.as_secs_f64());
    eprintln!(
        "[{label}] {}: {} ok, {:.0} req/s, p50 {} ms, p99 {} ms",
        row.endpoint,
        row.requests,
        row.rps(),
        ms(row.lat.p50_us),
        ms(row.lat.p99_us)
    );
    Ok(Measured {
        row,
        phase,
        before,
        after,
    })
}

/// Check that the server at `addr` answers `GET /health` with 200 and `exec_mode` `mode` (the
/// server must be in the mode we think it is); `name` names it in the error.
pub fn check_mode(
    rt: &tokio::runtime::Runtime,
    name: &str,
    addr: SocketAddr,
    mode: &str,
) -> anyhow::Result<()> {
    let (st, body) = rt
        .block_on(get_once(addr, "/health"))
        .with_context(|| format!("{name}: GET /health on {addr} failed"))?;
    let health: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let got = health.get("exec_mode").and_then(Value::as_str);
    if st != 200 || got != Some(mode) {
        bail!(
            "{name} at {addr}: /health answered {st} with exec_mode {got:?}, expected {mode:?}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// Start `bin serve` in `mode` ("demo", or "clawshield" with the key the load generator signs
/// with) on a fresh temp dir, and check its mode; `label` names it in the progress lines.
pub fn start_exec(
    rt: &tokio::runtime::Runtime,
    bin: &std::path::Path,
    mode: &str,
    label: &str,
) -> anyhow::Result<server::Server> {
    let key = (mode == "clawshield").then(crate::clawshield_pem);
    let srv = server::Server::start(bin, mode, key.as_deref())?;
    eprintln!(
        "[{label}] pid {} listening on {} ({mode} mode, state in {})",
        srv.pid,
        srv.addr,
        srv.dir().display()
    );
    check_mode(rt, label, srv.addr, mode)?;
    Ok(srv)
}

/// The counter `series` grew by this much between two `/metrics` texts.
pub fn grew(before: &str, after: &str, series: &str) -> u64 {
    (metric_value(after, series).unwrap_or(0.0) - metric_value(before, series).unwrap_or(0.0))
        .max(0.0) as u64
}

/// What a run found besides its rows: notes, failures (any one fails the run) and, with
/// `--verbose`, the server CPU by thread.
#[derive(Debug, Default)]
pub struct Findings {
    pub notes: Vec<String>,
    pub failures: Vec<String>,
    pub threads: Vec<String>,
}

impl Findings {
    /// A check of `who`'s: its message as a note `who: what: …` when it held, else as a
    /// failure `who: what failed: …`.
    pub fn check(&mut self, who: &str, what: &str, r: Result<String, String>) {
        match r {
            Ok(m) => self.notes.push(format!("{who}: {what}: {m}")),
            Err(m) => self.failures.push(format!("{who}: {what} failed: {m}")),
        }
    }

    /// The sanity check of `who`'s sampled 200 answers (`r`: how many passed, or why one did
    /// not), `ok` 200 answers in all; `passed(n)` says what the `n` samples showed.
    pub fn samples(
        &mut self,
        who: &str,
        r: Result<usize, String>,
        ok: u64,
        passed: impl FnOnce(usize) -> String,
    ) {
        match r {
            Ok(0) if ok > 0 => self
                .failures
                .push(format!("{who}: no 200 answer was sampled for the check")),
            Ok(0) => {} // no 200 at all: reported by `phase`
            Ok(n) => self.notes.push(format!("{who}: sanity: {}", passed(n))),
            Err(m) => self
                .failures
                .push(format!("{who}: sanity check failed: {m}")),
        }
    }

    /// The checks of an OpenExec `/execute` phase of `action` (every nonce unique): sampled
    /// 200 answers are fresh executions with distinct receipts ([`check_samples`]), and the
    /// server's `openexec_handler_runs_total` of the action grew by exactly the answers
    /// ([`check_count`]).
    pub fn execute(&mut self, who: &str, m: &Measured, action: &str) {
        let o = &m.phase.outcome;
        self.samples(who, check_samples(&o.samples), o.ok, |n| {
            format!(
                "{n} sampled 200 answers of /execute all say \"replayed\": false, \"status\": \
                 \"executed\", with {n} distinct receipts"
            )
        });
        let series = format!("openexec_handler_runs_total{{action=\"{action}\"}}");
        let runs = grew(&m.before, &m.after, &series);
        self.check(
            who,
            "at-most-once check (server)",
            check_count(&format!("the {action} handler ran"), runs, o.total),
        );
    }

    /// What `m`'s row says of itself: no 200 answer at all, or non-200 answers (a failure,
    /// or a note with `--allow-errors`); with `--verbose` the server's CPU by thread.
    pub fn phase(&mut self, args: &Args, who: &str, m: &Measured) {
        if m.row.requests == 0 {
            self.failures
                .push(format!("{who}: {} had no 200 answer", m.row.endpoint));
        }
        if m.row.errors() > 0 {
            let msg = non_ok_message(
                &format!("{who}: {}", m.row.endpoint),
                &m.row.non_ok,
                &m.phase.outcome.non_ok_examples,
            );
            if args.allow_errors {
                self.notes.push(msg);
            } else {
                self.failures.push(msg);
            }
        }
        if args.verbose && !m.phase.cpu.threads.is_empty() {
            self.threads.push(format!(
                "{who}: server CPU by thread: {}",
                threads_text(&m.phase.cpu.threads, args.duration.as_secs_f64())
            ));
        }
    }

    /// The store's group commits during `m`'s phase, from the series `<prefix>_…` of its
    /// `/metrics` (when it committed at all); returns the readings before and after.
    pub fn store(
        &mut self,
        args: &Args,
        who: &str,
        m: &Measured,
        prefix: &str,
    ) -> (StoreMetrics, StoreMetrics) {
        let before = StoreMetrics::parse_prefixed(&m.before, prefix).unwrap_or_default();
        let after = StoreMetrics::parse_prefixed(&m.after, prefix).unwrap_or_default();
        if after.commits > before.commits {
            self.notes.push(format!(
                "{who}: store during its phase (its /metrics, warmup included): {}",
                StoreMetrics::describe_delta(
                    &before,
                    &after,
                    (args.warmup + args.duration).as_secs_f64()
                )
            ));
        }
        (before, after)
    }

    /// Stop `srv` (SIGTERM); an exit other than success is a failure of `who`, but for a
    /// server that ends by re-raising the SIGTERM once it has shut down (`sigterm_ok`, as
    /// uvicorn does).
    pub fn stop(
        &mut self,
        who: &str,
        srv: &mut server::Server,
        sigterm_ok: bool,
    ) -> anyhow::Result<()> {
        use std::os::unix::process::ExitStatusExt;
        let status = srv.stop()?;
        eprintln!("[{who}] server stopped ({status})");
        let by_sigterm = sigterm_ok && status.signal() == Some(15);
        if !(status.success() || by_sigterm) {
            self.failures.push(format!(
                "{who}: the server exited with {status} after SIGTERM; its stderr ends:\n{}",
                srv.stderr_tail(20)
            ));
        }
        Ok(())
    }

    /// The end of the run: print `out` with the notes and failures, write the JSON document
    /// ([`json_doc`] of `rest` with the notes, failures and verdict) when asked, and say
    /// whether the run passed.
    pub fn finish(
        &self,
        out: String,
        args: &Args,
        cmd: &str,
        rest: impl FnOnce() -> Value,
    ) -> anyhow::Result<bool> {
        let doc = || {
            let mut doc = json_doc(args, cmd, rest());
            if let Value::Object(d) = &mut doc {
                d.insert("notes".into(), json!(self.notes));
                d.insert("server_threads".into(), json!(self.threads));
                d.insert("failures".into(), json!(self.failures));
                d.insert("ok".into(), json!(self.failures.is_empty()));
            }
            doc
        };
        crate::report::finish(
            out,
            self.notes.iter().chain(self.threads.iter()),
            &self.failures,
            args.json.as_deref(),
            doc,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_and_samples_become_notes_or_failures() {
        let mut f = Findings::default();
        f.check("a", "count", Ok("7 for 7".into()));
        f.check("b", "count", Err("8 for 7".into()));
        f.samples("c", Ok(3), 10, |n| format!("{n} fine"));
        f.samples("d", Ok(0), 10, |_| unreachable!());
        f.samples("e", Ok(0), 0, |_| unreachable!());
        f.samples("g", Err("bad".into()), 10, |_| unreachable!());
        assert_eq!(f.notes, ["a: count: 7 for 7", "c: sanity: 3 fine"]);
        assert_eq!(
            f.failures,
            [
                "b: count failed: 8 for 7",
                "d: no 200 answer was sampled for the check",
                "g: sanity check failed: bad"
            ]
        );
        assert_eq!(grew("x_total 3\n", "x_total 10\ny_total 1\n", "x_total"), 7);
        assert_eq!(grew("", "", "x_total"), 0);
    }
}
