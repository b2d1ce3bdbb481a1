//! Turning outcomes into rows, the Markdown table and the JSON document.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latency percentiles of a histogram recorded in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

/// The percentiles of `h` (all zero when it is empty).
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles {
            p50_us: 0,
            p99_us: 0,
            p999_us: 0,
            max_us: 0,
            mean_us: 0.0,
        };
    }
    Percentiles {
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        mean_us: h.mean(),
    }
}

/// One line of the table: one endpoint of one server.
#[derive(Debug, Clone)]
pub struct Row {
    pub mode: String,
    pub endpoint: String,
    /// 200 answers in the window.
    pub requests: u64,
    /// The window's length in seconds.
    pub seconds: f64,
    pub lat: Percentiles,
    /// Non-200 answers by status, plus transport errors under 0.
    pub non_ok: BTreeMap<u16, u64>,
    /// For /execute: its req/s divided by /health's req/s of the same server.
    pub ratio: Option<f64>,
    /// CPU used by the server during the window, in cores (1.0 = one core busy); None when
    /// the server is not ours.
    pub server_cores: Option<f64>,
    /// CPU used by this client during the window, in cores.
    pub client_cores: f64,
    /// CPU used by everything else on the machine (outside softirq), in cores.
    pub other_cores: Option<f64>,
    /// Kernel softirq time on the machine, in cores.
    pub softirq_cores: Option<f64>,
}

impl Row {
    pub fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn errors(&self) -> u64 {
        self.non_ok.values().sum()
    }
}

/// `rps ÷ base_rps`; `None` unless both are positive.
pub fn ratio(rps: f64, base_rps: f64) -> Option<f64> {
    (rps > 0.0 && base_rps > 0.0).then(|| rps / base_rps)
}

/// A ratio with 3 decimals, as the JSON documents give it.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// µs as milliseconds with 2 decimals.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// A CPU share as `% of one core`, `n/a` when it could not be read.
pub fn cores(c: Option<f64>) -> String {
    match c {
        Some(c) => format!("{:.0}%", c * 100.0),
        None => "n/a".into(),
    }
}

/// The failure line for non-200 answers: `<what> got non-200 answers (404×3, …); e.g. <the
/// first answer of each status, 300 characters at most>`.
pub fn non_ok_message(
    what: &str,
    non_ok: &BTreeMap<u16, u64>,
    examples: &BTreeMap<u16, bytes::Bytes>,
) -> String {
    let examples: Vec<String> = examples
        .iter()
        .map(|(s, b)| {
            let t = String::from_utf8_lossy(b);
            format!("{s}: {}", t.chars().take(300).collect::<String>())
        })
        .collect();
    format!(
        "{what} got non-200 answers ({}); e.g. {}",
        non_ok_text(non_ok),
        if examples.is_empty() {
            "connection errors".to_string()
        } else {
            examples.join(" | ")
        }
    )
}

/// `404×3, conn×1` for non-200 answers (status 0 = transport error), `0` when there were none.
pub fn non_ok_text(m: &BTreeMap<u16, u64>) -> String {
    if m.is_empty() {
        return "0".into();
    }
    m.iter()
        .map(|(s, n)| {
            if *s == 0 {
                format!("conn×{n}")
            } else {
                format!("{s}×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Markdown table, one row per (mode, endpoint).
pub fn markdown_table(rows: &[Row]) -> String {
    table_with(rows, "mode", "execute ÷ health")
}

/// [`markdown_table`] with other headings for the first column (`mode`) and for the ratio
/// column (`ratio`).
pub fn table_with(rows: &[Row], mode: &str, ratio: &str) -> String {
    let mut t = String::new();
    t.push_str(&format!("| {mode} | endpoint | requests | req/s | p50 ms | p99 ms | p999 ms | {ratio} | non-200 | server CPU | client CPU | softirq | other CPU |\n"));
    t.push_str("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n");
    for r in rows {
        let ratio = match r.ratio {
            Some(x) => format!("{x:.3}"),
            None => "—".into(),
        };
        t.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.mode,
            r.endpoint,
            r.requests,
            r.rps(),
            ms(r.lat.p50_us),
            ms(r.lat.p99_us),
            ms(r.lat.p999_us),
            ratio,
            non_ok_text(&r.non_ok),
            cores(r.server_cores),
            cores(Some(r.client_cores)),
            cores(r.softirq_cores),
            cores(r.other_cores),
        ));
    }
    t
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A row as JSON (the same numbers as the table, plus max and mean).
pub fn row_json(r: &Row) -> Value {
    let non_ok: serde_json::Map<String, Value> = r
        .non_ok
        .iter()
        .map(|(s, n)| {
            let k = if *s == 0 {
                "transport".to_string()
            } else {
                s.to_string()
            };
            (k, json!(n))
        })
        .collect();
    json!({
        "mode": r.mode,
        "endpoint": r.endpoint,
        "requests": r.requests,
        "seconds": r.seconds,
        "req_per_s": round2(r.rps()),
        "p50_ms": round2(r.lat.p50_us as f64 / 1000.0),
        "p99_ms": round2(r.lat.p99_us as f64 / 1000.0),
        "p999_ms": round2(r.lat.p999_us as f64 / 1000.0),
        "max_ms": round2(r.lat.max_us as f64 / 1000.0),
        "mean_ms": round2(r.lat.mean_us / 1000.0),
        "ratio_to_health": r.ratio.map(round3),
        "non_200": non_ok,
        "server_cpu_cores": r.server_cores.map(round2),
        "client_cpu_cores": round2(r.client_cores),
        "softirq_cpu_cores": r.softirq_cores.map(round2),
        "other_cpu_cores": r.other_cores.map(round2),
    })
}

/// [`row_json`] with its ratio under the name `ratio_key` instead (rounded to 3 decimals), for
/// a table whose ratio is not to `/health`.
pub fn row_json_as(r: &Row, ratio_key: &str) -> Value {
    let mut v = row_json(r);
    if let Value::Object(m) = &mut v {
        m.remove("ratio_to_health");
        m.insert(ratio_key.into(), json!(r.ratio.map(round3)));
    }
    v
}

/// The store counters of the server's `/metrics` (Prometheus text) that explain /execute:
/// group-commit batches, commit time, and how long writes and reads waited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreMetrics {
    pub batch_writes: f64,
    pub commits: f64,
    pub commit_secs: f64,
    pub writes: f64,
    pub write_secs: f64,
    pub reads: f64,
    pub read_secs: f64,
}

impl StoreMetrics {
    /// Read the counters from the text of `/metrics`; `None` when it has none of them.
    pub fn parse(text: &str) -> Option<StoreMetrics> {
        StoreMetrics::parse_prefixed(text, "openexec_store")
    }

    /// [`StoreMetrics::parse`] of the series named `<prefix>_batch_size_sum`,
    /// `<prefix>_seconds_count{op="commit"}` and so on (`openexec_store` for OpenExec,
    /// `clawshield_store` for ClawShield: both use the shared group-commit writer).
    pub fn parse_prefixed(text: &str, prefix: &str) -> Option<StoreMetrics> {
        let mut m = StoreMetrics::default();
        let mut found = false;
        for line in text.lines() {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            let Some(series) = key.trim().strip_prefix(prefix) else {
                continue;
            };
            let slot = match series {
                "_batch_size_sum" => &mut m.batch_writes,
                "_seconds_count{op=\"commit\"}" => &mut m.commits,
                "_seconds_sum{op=\"commit\"}" => &mut m.commit_secs,
                "_seconds_count{op=\"write\"}" => &mut m.writes,
                "_seconds_sum{op=\"write\"}" => &mut m.write_secs,
                "_seconds_count{op=\"read\"}" => &mut m.reads,
                "_seconds_sum{op=\"read\"}" => &mut m.read_secs,
                _ => continue,
            };
            *slot = v;
            found = true;
        }
        found.then_some(m)
    }

    /// What happened between two readings, as one line for the report; `secs` is the time
    /// between them.
    pub fn describe_delta(before: &StoreMetrics, after: &StoreMetrics, secs: f64) -> String {
        let d = |a: f64, b: f64| (b - a).max(0.0);
        let commits = d(before.commits, after.commits);
        let batch = d(before.batch_writes, after.batch_writes);
        let commit_secs = d(before.commit_secs, after.commit_secs);
        let writes = d(before.writes, after.writes);
        let write_secs = d(before.write_secs, after.write_secs);
        let reads = d(before.reads, after.reads);
        let read_secs = d(before.read_secs, after.read_secs);
        let per = |s: f64, n: f64| if n > 0.0 { s / n * 1000.0 } else { 0.0 };
        format!(
            "{commits:.0} group commits, {:.1} writes per commit on average, {:.2} ms per commit, \
             the writer busy {:.0}% of the phase; a write waited {:.2} ms and a read {:.2} ms on \
             average ({writes:.0} writes, {reads:.0} reads)",
            if commits > 0.0 { batch / commits } else { 0.0 },
            per(commit_secs, commits),
            if secs > 0.0 {
                commit_secs / secs * 100.0
            } else {
                0.0
            },
            per(write_secs, writes),
            per(read_secs, reads),
        )
    }
}

/// The end of every benchmark: print the report with its notes and failures, write the JSON
/// document (`doc`, built only then) to `json` when asked, and say whether the run passed (no
/// failures).
pub fn finish<'a>(
    mut out: String,
    notes: impl IntoIterator<Item = &'a String>,
    failures: &[String],
    json: Option<&std::path::Path>,
    doc: impl FnOnce() -> Value,
) -> anyhow::Result<bool> {
    use anyhow::Context as _;
    for n in notes {
        out.push_str(&format!("- {n}\n"));
    }
    for f in failures {
        out.push_str(&format!("- FAILED: {f}\n"));
    }
    print!("{out}");
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&doc())? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(failures.is_empty())
}
