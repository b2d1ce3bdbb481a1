//! `--log-bench`: the receipt log under a large tree.
//!
//! On a fresh demo-mode server (or `--url`): (1) fill the log with `--log-entries` unique
//! `POST /execute` over `--connections` keep-alive connections, as fast as the server takes
//! them; (2) `--log-probes` sequential single requests, each timed from sending `/execute`
//! until `GET /receipts/{id}` (polled every 5 ms) carries `evidence.inclusion`, i.e. until a
//! signed checkpoint covers it; (3) `GET /log/proof/inclusion` for random indices at the tree
//! size of the latest checkpoint, over `--connections` connections for `--duration`, next to
//! `GET /health` on the same server in the same run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use serde_json::{json, Value};

use crate::bodies::BodySource;
use crate::client::{self, Endpoint, Window};
use crate::report::{markdown_table, ms, percentiles, row_json, Percentiles, Row};
use crate::{
    check_samples, fmt_dur, json_doc, parse_url, phase_row, run_lines, run_phase, server, Args,
};

/// How often a probe polls `GET /receipts/{id}`.
const POLL: Duration = Duration::from_millis(5);
/// A probe that sees no inclusion within this long fails the run.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest random pause between two probes (about the server's default checkpoint
/// interval, so probes start at every phase of the signing cycle instead of right after one).
const MAX_PROBE_GAP_MS: u64 = 250;

/// The tree size of a C2SP signed note checkpoint: its second line.
pub use openexec_logstore::client::checkpoint_size;

/// The `id` (exec_id) of an `/execute` answer.
pub fn exec_id_of(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("id")?.as_str().map(str::to_string)
}

/// Whether a `GET /receipts/{id}` answer carries `evidence.inclusion` (not null).
pub fn has_inclusion(body: &[u8]) -> Result<bool, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(body)))?;
    let ev = v
        .get("evidence")
        .ok_or_else(|| format!("no \"evidence\": {v}"))?;
    Ok(ev.get("inclusion").is_some_and(|i| !i.is_null()))
}

/// The most hashes an inclusion proof in a tree of `size` leaves has: ceil(log2(size)).
pub fn max_proof_len(size: u64) -> usize {
    if size <= 1 {
        0
    } else {
        (64 - (size - 1).leading_zeros()) as usize
    }
}

/// Check sampled 200 bodies of `/log/proof/inclusion` at `size`: each is `{"hashes": [...]}`
/// with between 1 and ceil(log2(size)) entries (none when size is 1). Returns how many.
pub fn check_inclusion_samples(samples: &[Bytes], size: u64) -> Result<usize, String> {
    let max = max_proof_len(size);
    let min = usize::from(size > 1);
    for (i, b) in samples.iter().enumerate() {
        let n = openexec_logstore::client::decode_hashes(b)
            .map_err(|e| format!("sample {i}: {e}"))?
            .len();
        if n < min || n > max {
            return Err(format!(
                "sample {i} has {n} hashes, expected {min}..={max} for size {size}"
            ));
        }
    }
    Ok(samples.len())
}

/// CPU tick counters at one moment.
struct CpuMark {
    at: Instant,
    server: Option<u64>,
    client: Option<u64>,
    machine: Option<(u64, u64)>,
}

impl CpuMark {
    fn now(pid: Option<u32>) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            server: pid.and_then(|p| server::process_ticks(&p.to_string())),
            client: server::process_ticks("self"),
            machine: server::machine_ticks(),
        }
    }

    /// (server, client, other, softirq) cores between `self` and `later`.
    fn cores(&self, later: &CpuMark, tck: f64) -> (Option<f64>, f64, Option<f64>, Option<f64>) {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let c = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / tck / secs),
            _ => None,
        };
        let srv = c(self.server, later.server);
        let cli = c(self.client, later.client).unwrap_or(0.0);
        let busy = c(self.machine.map(|m| m.0), later.machine.map(|m| m.0));
        let soft = c(self.machine.map(|m| m.1), later.machine.map(|m| m.1));
        let other = busy.map(|m| (m - srv.unwrap_or(0.0) - cli).max(0.0));
        (srv, cli, other, soft)
    }
}

async fn send(
    s: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string());
    if !body.is_empty() {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    s.ready().await?;
    let resp = s.send_request(req.body(Full::new(body))?).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// The latest checkpoint's tree size (`None` before the first one).
async fn current_size(
    s: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
) -> anyhow::Result<Option<u64>> {
    let (st, body) = send(s, addr, Method::GET, "/log/checkpoint", Bytes::new()).await?;
    match st {
        200 => {
            let text = String::from_utf8_lossy(&body);
            Ok(Some(checkpoint_size(&text).with_context(|| {
                format!("cannot read the tree size of the checkpoint: {text:?}")
            })?))
        }
        404 => Ok(None),
        _ => bail!(
            "GET /log/checkpoint answered {st}: {}",
            String::from_utf8_lossy(&body)
        ),
    }
}

/// What the probes measured.
struct Probes {
    /// `/execute` answered.
    execute: Percentiles,
    /// `/execute` sent → `GET /receipts/{id}` shows `inclusion`.
    integrated: Percentiles,
    count: u64,
    polls: u64,
}

async fn probe(addr: SocketAddr, src: &BodySource, k: usize) -> anyhow::Result<Probes> {
    let mut s = client::connect(addr).await?;
    let mut h_exec = client::new_histogram();
    let mut h_int = client::new_histogram();
    let mut rng = 0x0B5E_55ED_u64;
    let mut polls = 0u64;
    for i in 0..k {
        let gap = client::splitmix64(&mut rng) % (MAX_PROBE_GAP_MS + 1);
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let body = src.next().context("probe bodies ran out")?;
        let t0 = Instant::now();
        let (st, ans) = send(&mut s, addr, Method::POST, "/execute", body).await?;
        let t_exec = t0.elapsed();
        if st != 200 {
            bail!(
                "probe {i}: /execute answered {st}: {}",
                String::from_utf8_lossy(&ans)
            );
        }
        let id = exec_id_of(&ans)
            .with_context(|| format!("probe {i}: no id in {}", String::from_utf8_lossy(&ans)))?;
        let path = format!("/receipts/{id}");
        let t_int = loop {
            let (st, ans) = send(&mut s, addr, Method::GET, &path, Bytes::new()).await?;
            polls += 1;
            if st != 200 {
                bail!(
                    "probe {i}: GET {path} answered {st}: {}",
                    String::from_utf8_lossy(&ans)
                );
            }
            if has_inclusion(&ans).map_err(|e| anyhow::anyhow!("probe {i}: GET {path}: {e}"))? {
                break t0.elapsed();
            }
            if t0.elapsed() > PROBE_TIMEOUT {
                bail!("probe {i}: no inclusion in GET {path} after {PROBE_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        };
        h_exec.saturating_record((t_exec.as_micros() as u64).max(1));
        h_int.saturating_record((t_int.as_micros() as u64).max(1));
    }
    Ok(Probes {
        execute: percentiles(&h_exec),
        integrated: percentiles(&h_int),
        count: k as u64,
        polls,
    })
}

/// Run the log benchmark; Ok(false) when it ran but failed.
pub fn run(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    tck: f64,
    run_id: &str,
    cmd: &str,
) -> anyhow::Result<bool> {
    if args.log_entries == 0 {
        bail!("--log-entries must be at least 1");
    }
    let mut srv = match &args.server_bin {
        Some(bin) => {
            eprintln!(
                "[log] starting {} serve (demo mode, fresh temp dir)…",
                bin.display()
            );
            Some(server::Server::start(bin, "demo", None)?)
        }
        None => None,
    };
    let addr = match (&srv, &args.url) {
        (Some(s), _) => s.addr,
        (None, Some(u)) => parse_url(u)?,
        (None, None) => bail!("give --server-bin or --url"),
    };
    let pid = srv.as_ref().map(|s| s.pid);
    let mut notes: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();

    // 1. Fill.
    let n = args.log_entries;
    eprintln!(
        "[log] fill: {n} POST /execute over {} connections…",
        args.connections
    );
    let fill_src = Arc::new(BodySource::template_limited(&format!("{run_id}-fill"), n));
    let before = CpuMark::now(pid);
    let window = Window {
        measure_from: before.at,
        end: before.at + Duration::from_secs(7 * 24 * 3600),
    };
    let fill = rt.block_on(async {
        let src = fill_src.clone();
        let t0 = before.at;
        let progress = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let used = src.used();
                eprintln!(
                    "[log] fill: {used} sent, {:.0}/s so far",
                    used as f64 / t0.elapsed().as_secs_f64()
                );
            }
        });
        let o = client::run_phase(
            addr,
            Endpoint::Execute(fill_src.clone()),
            args.connections,
            window,
        )
        .await;
        progress.abort();
        o
    })?;
    let after = CpuMark::now(pid);
    let fill_secs = after.at.duration_since(before.at).as_secs_f64();
    let (srv_c, cli_c, other_c, soft_c) = before.cores(&after, tck);
    let fill_row = Row {
        mode: "log".into(),
        endpoint: format!("POST /execute (fill to {n})"),
        requests: fill.ok,
        seconds: fill_secs,
        lat: percentiles(&fill.hist),
        non_ok: fill.non_ok_all(),
        ratio: None,
        server_cores: srv_c,
        client_cores: cli_c,
        other_cores: other_c,
        softirq_cores: soft_c,
    };
    eprintln!(
        "[log] fill: {} ok in {:.1} s = {:.0} req/s",
        fill.ok,
        fill_secs,
        fill_row.rps()
    );
    if fill_row.errors() > 0 {
        let msg = format!(
            "fill: non-200 answers ({}); e.g. {:?}",
            crate::report::non_ok_text(&fill_row.non_ok),
            fill.non_ok_examples
                .values()
                .next()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        );
        if args.allow_errors {
            notes.push(msg);
        } else {
            failures.push(msg);
        }
    }
    match check_samples(&fill.samples) {
        Ok(k) => notes.push(format!(
            "fill: sanity: {k} sampled /execute answers say \"replayed\": false, \"executed\", distinct receipts"
        )),
        Err(e) => failures.push(format!("fill: sanity check failed: {e}")),
    }

    // Wait for a checkpoint that covers the fill.
    let t_wait = Instant::now();
    let covered = rt.block_on(async {
        let mut s = client::connect(addr).await?;
        loop {
            let size = current_size(&mut s, addr).await?;
            if size.is_some_and(|z| z >= fill.ok) {
                return anyhow::Ok(size.unwrap_or(0));
            }
            if t_wait.elapsed() > Duration::from_secs(300) {
                bail!(
                    "no checkpoint covers the {} filled entries after 300 s (latest size {size:?})",
                    fill.ok
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })?;
    notes.push(format!(
        "after the fill, a checkpoint of size {covered} covered all {} entries {:.0} ms after the last answer",
        fill.ok,
        t_wait.elapsed().as_secs_f64() * 1000.0
    ));
    rows.push(fill_row);

    // 2. Append → integrated.
    let k = args.log_probes;
    eprintln!("[log] append → integrated: {k} sequential probes…");
    let probe_src = BodySource::template_limited(&format!("{run_id}-probe"), k as u64);
    let probes = rt.block_on(probe(addr, &probe_src, k))?;
    eprintln!(
        "[log] append → integrated: p50 {} ms, p99 {} ms, max {} ms",
        ms(probes.integrated.p50_us),
        ms(probes.integrated.p99_us),
        ms(probes.integrated.max_us)
    );

    // 3. Inclusion proofs at the latest checkpoint's size, next to /health.
    let size = rt
        .block_on(async {
            let mut s = client::connect(addr).await?;
            current_size(&mut s, addr).await
        })?
        .context("no checkpoint after the fill")?;
    let mut health_rps = None;
    for endpoint in [Endpoint::Health, Endpoint::Inclusion { tree_size: size }] {
        let label = match endpoint {
            Endpoint::Inclusion { tree_size } => {
                format!("GET /log/proof/inclusion (size {tree_size})")
            }
            _ => endpoint.label().to_string(),
        };
        eprintln!(
            "[log] {label}: {} connections, warmup {}, measuring {}…",
            args.connections,
            fmt_dur(args.warmup),
            fmt_dur(args.duration)
        );
        let phase = run_phase(rt, args, addr, endpoint.clone(), pid, tck)?;
        let mut row = phase_row("log", &label, &phase, args.duration.as_secs_f64());
        match endpoint {
            Endpoint::Health => health_rps = Some(row.rps()),
            _ => {
                row.ratio = health_rps.filter(|h| *h > 0.0).map(|h| row.rps() / h);
                match check_inclusion_samples(&phase.outcome.samples, size) {
                    Ok(0) if row.requests > 0 => {
                        failures.push("inclusion: no answer was sampled".into())
                    }
                    Ok(c) => notes.push(format!(
                        "inclusion: sanity: {c} sampled answers each carry 1..={} hashes",
                        max_proof_len(size)
                    )),
                    Err(e) => failures.push(format!("inclusion: sanity check failed: {e}")),
                }
            }
        }
        if row.requests == 0 {
            failures.push(format!("{label} had no 200 answer"));
        }
        if row.errors() > 0 {
            let msg = format!(
                "{label}: non-200 answers ({}); e.g. {:?}",
                crate::report::non_ok_text(&row.non_ok),
                phase
                    .outcome
                    .non_ok_examples
                    .values()
                    .next()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
            );
            if args.allow_errors {
                notes.push(msg);
            } else {
                failures.push(msg);
            }
        }
        eprintln!(
            "[log] {label}: {} ok, {:.0} req/s, p50 {} ms, p99 {} ms",
            row.requests,
            row.rps(),
            ms(row.lat.p50_us),
            ms(row.lat.p99_us)
        );
        rows.push(row);
    }

    if let Some(s) = srv.as_mut() {
        let status = s.stop()?;
        eprintln!("[log] server stopped ({status})");
        if !status.success() {
            failures.push(format!(
                "the server exited with {status} after SIGTERM; its stderr ends:\n{}",
                s.stderr_tail(20)
            ));
        }
    }

    let mut out = String::new();
    out.push_str(&markdown_table(&rows));
    out.push('\n');
    out.push_str(
        "| log latency | probes | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|\n",
    );
    for (name, p) in [
        ("POST /execute answered", &probes.execute),
        (
            "append → integrated (POST /execute sent → GET /receipts/{id} has `inclusion`)",
            &probes.integrated,
        ),
    ] {
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            probes.count,
            ms(p.p50_us),
            ms(p.p99_us),
            ms(p.max_us)
        ));
    }
    out.push('\n');
    out.push_str(&run_lines(
        args,
        &format!("fill of {n} entries took {fill_secs:.1} s; per GET endpoint"),
        cmd,
    ));
    out.push_str(&format!(
        "log benchmark on {}: the fill row covers the whole fill (req/s = entries / its wall \
         time); probes are sequential on one connection, each after a random pause of \
         0–{MAX_PROBE_GAP_MS} ms, polling GET /receipts/{{id}} every {} ms ({} polls in all); \
         inclusion proofs ask a uniformly random index at tree_size = {size} (the latest \
         checkpoint after the probes); its ratio column is its req/s ÷ GET /health's.\n",
        if args.url.is_some() {
            "an already running server"
        } else {
            "a fresh `openexec serve` (demo mode, server defaults, its own temp dir)"
        },
        POLL.as_millis(),
        probes.polls
    ));
    let pj = |p: &Percentiles| {
        json!({"p50_ms": p.p50_us as f64 / 1000.0, "p99_ms": p.p99_us as f64 / 1000.0,
               "max_ms": p.max_us as f64 / 1000.0, "mean_ms": p.mean_us / 1000.0})
    };
    let doc = || {
        json_doc(
            args,
            cmd,
            json!({
                "log_entries": n,
                "fill_seconds": fill_secs,
                "tree_size": size,
                "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
                "probes": {"count": probes.count, "polls": probes.polls,
                           "execute": pj(&probes.execute), "integrated": pj(&probes.integrated)},
                "notes": notes,
                "failures": failures,
                "ok": failures.is_empty(),
            }),
        )
    };
    crate::report::finish(out, &notes, &failures, args.json.as_deref(), doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_size_is_the_second_line() {
        let note = "openexec.example/log\n1000000\nq2ZqZ3Jvb3Q=\n\n— openexec.example/log abc=\n";
        assert_eq!(checkpoint_size(note), Some(1_000_000));
        assert_eq!(checkpoint_size("origin\n 7 \nroot\n"), Some(7));
        assert_eq!(checkpoint_size("origin only"), None);
        assert_eq!(checkpoint_size("origin\nnot-a-number\n"), None);
        assert_eq!(checkpoint_size(""), None);
    }

    #[test]
    fn receipt_inclusion_and_exec_id() {
        assert_eq!(
            exec_id_of(br#"{"id":"ab12","status":"executed"}"#),
            Some("ab12".into())
        );
        assert_eq!(exec_id_of(br#"{"status":"executed"}"#), None);
        assert_eq!(exec_id_of(b"nope"), None);
        assert_eq!(has_inclusion(br#"{"evidence":{"receipt":{}}}"#), Ok(false));
        assert_eq!(
            has_inclusion(br#"{"evidence":{"inclusion":null}}"#),
            Ok(false)
        );
        assert_eq!(
            has_inclusion(br#"{"evidence":{"inclusion":{"index":3,"tree_size":9}}}"#),
            Ok(true)
        );
        assert!(has_inclusion(br#"{"error":"x"}"#).is_err());
        assert!(has_inclusion(b"<html>").is_err());
    }

    #[test]
    fn proof_lengths_and_sample_check() {
        assert_eq!(max_proof_len(0), 0);
        assert_eq!(max_proof_len(1), 0);
        assert_eq!(max_proof_len(2), 1);
        assert_eq!(max_proof_len(3), 2);
        assert_eq!(max_proof_len(4), 2);
        assert_eq!(max_proof_len(5), 3);
        assert_eq!(max_proof_len(1_000_000), 20);
        assert_eq!(max_proof_len(1 << 20), 20);
        assert_eq!(max_proof_len((1 << 20) + 1), 21);
        // Each a standard base64 hash of 32 bytes (the client's decoding checks them).
        let h = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let ok = Bytes::from(json!({"hashes": [h, h, h]}).to_string());
        assert_eq!(check_inclusion_samples(std::slice::from_ref(&ok), 8), Ok(1));
        assert!(check_inclusion_samples(&[ok], 4).is_err());
        let empty = Bytes::from(json!({"hashes": []}).to_string());
        assert!(check_inclusion_samples(std::slice::from_ref(&empty), 8).is_err());
        assert_eq!(check_inclusion_samples(&[empty], 1), Ok(1));
        assert!(check_inclusion_samples(&[Bytes::from_static(b"{}")], 8).is_err());
        let short = Bytes::from(json!({"hashes": ["a", "b", "c"]}).to_string());
        assert!(check_inclusion_samples(&[short], 8).is_err());
    }

    #[test]
    fn random_indices_spread_and_paths() {
        let mut st = 42u64;
        let size = 1000u64;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let i = client::splitmix64(&mut st) % size;
            assert!(i < size);
            seen.insert(i);
        }
        assert!(seen.len() > 990, "{}", seen.len());
        let mut a = 1u64;
        let mut b = 1u64;
        assert_eq!(client::splitmix64(&mut a), client::splitmix64(&mut b));
        assert_eq!(
            client::inclusion_path(5, 1000),
            "/log/proof/inclusion?index=5&tree_size=1000"
        );
    }

    #[test]
    fn limited_template_stops_at_its_limit() {
        let src = BodySource::template_limited("r", 3);
        assert!(src.next().is_some());
        assert!(src.next().is_some());
        assert!(src.next().is_some());
        assert!(src.next().is_none());
        assert!(src.next().is_none());
        assert_eq!(src.used(), 3);
        assert_eq!(src.capacity(), Some(3));
    }
}
