//! `--replicas-bench`: does a second replica on one PostgreSQL database add throughput?
//!
//! In one run, with the same client settings throughout (connections, warmup, duration, demo
//! `POST /execute` with a nonce never used before):
//!
//! 1. `GET /health` of the first server (the baseline every `/execute` row is divided by);
//! 2. `postgres ×1`: one `openexec serve` on a fresh PostgreSQL database;
//! 3. `postgres ×2`: two `openexec serve` on another fresh database, the second given the
//!    first's receipt and log keys (`OPENEXEC_RECEIPT_KEY`, `OPENEXEC_LOG_KEY`), the client's
//!    connections spread round-robin over them (connection `i` to replica `i mod 2`);
//! 4. `sqlite ×1` (unless `--no-sqlite`): one server on its own SQLite file, as a reference.
//!
//! After each `/execute` phase it checks that the replicas together ran the `echo` handler
//! (`openexec_handler_runs_total{action="echo"}` of each one's `/metrics`) exactly once per
//! 200 answer that was not a replay, and that no unique nonce was answered as a replay. Every
//! server is stopped and every database dropped before the next setup starts, and on every
//! error path (the setup's `Drop`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use openexec_core::url::redact_password;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::bodies::BodySource;
use crate::client::{Endpoint, Totals, Window};
use crate::report::{cores, ms, non_ok_text, row_json, Row, StoreMetrics};
use crate::{
    check_samples, fmt_dur, get_once, json_doc, phase_row, run_lines, run_phase_in, server,
    threads_text, window_from_now, Args, Phase,
};

/// The PostgreSQL server used when `--pg-url` is not given.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The server's default `OPENEXEC_DB_POOL_SIZE`.
const DEFAULT_POOL: u32 = 16;
/// Connections kept free on the PostgreSQL server besides the replicas' pools: its reserved
/// superuser slots (3 by default) and this tool's own two (admin, wait sampler).
const SPARE_CONNECTIONS: u32 = 5;
/// The command name of the PostgreSQL server's processes (for their CPU).
const PG_COMM: &str = "postgres";
/// How often the wait sampler reads `pg_stat_activity` during a window.
const WAIT_SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// The counter that must equal the fresh 200 answers.
const HANDLER_RUNS: &str = "openexec_handler_runs_total{action=\"echo\"}";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

impl Store {
    pub fn as_str(self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres => "postgres",
        }
    }
}

/// One setup of servers: a store and how many replicas share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub store: Store,
    pub replicas: usize,
}

impl Spec {
    /// `postgres ×2`: the setup column of the table.
    pub fn label(&self) -> String {
        format!("{} ×{}", self.store.as_str(), self.replicas)
    }

    /// `pg2`: a short tag for database names and nonces.
    fn tag(&self) -> String {
        let s = match self.store {
            Store::Sqlite => "sq",
            Store::Postgres => "pg",
        };
        format!("{s}{}", self.replicas)
    }
}

/// The setups of a run, in the order they run.
pub fn specs(with_sqlite: bool) -> Vec<Spec> {
    let mut v = vec![
        Spec {
            store: Store::Postgres,
            replicas: 1,
        },
        Spec {
            store: Store::Postgres,
            replicas: 2,
        },
    ];
    if with_sqlite {
        v.push(Spec {
            store: Store::Sqlite,
            replicas: 1,
        });
    }
    v
}

/// What `--replicas-bench` needs of the other arguments.
pub fn check_args(connections: usize, pg_url: &str, pool: Option<u32>) -> Result<(), String> {
    if connections < 2 {
        return Err(format!(
            "--replicas-bench needs --connections of at least 2 (one per replica), got \
             {connections}"
        ));
    }
    if !(pg_url.starts_with("postgres://") || pg_url.starts_with("postgresql://")) {
        return Err(format!(
            "--pg-url must start with postgres:// or postgresql://, got {pg_url:?}"
        ));
    }
    pg_url
        .parse::<PgConnectOptions>()
        .map_err(|e| format!("--pg-url {pg_url:?} is not a PostgreSQL URL: {e}"))?;
    if let Some(p) = pool {
        if !(3..=1000).contains(&p) {
            return Err(format!(
                "--pg-pool-size must be between 3 and 1000 (the server's own bounds), got {p}"
            ));
        }
    }
    Ok(())
}

/// Whether `replicas` pools of `pool` connections (plus [`SPARE_CONNECTIONS`]) fit in the
/// PostgreSQL server's `max_connections`.
pub fn pool_fits(max_connections: u32, replicas: usize, pool: u32) -> Result<(), String> {
    let need = replicas as u32 * pool + SPARE_CONNECTIONS;
    if need > max_connections {
        return Err(format!(
            "{replicas} replicas × {pool} pool connections + {SPARE_CONNECTIONS} spare = {need} \
             exceeds the PostgreSQL server's max_connections of {max_connections}; lower \
             --pg-pool-size"
        ));
    }
    Ok(())
}

/// The name of the database of setup `tag` in run `run_id` (at most 63 bytes, PostgreSQL's
/// limit; lowercase, so it needs no quoting rules beyond ours).
pub fn db_name(run_id: &str, tag: &str) -> String {
    format!("oe_load_{run_id}_{tag}")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .map(|c| c.to_ascii_lowercase())
        .take(63)
        .collect()
}

/// `admin` (a URL of some database on the server) with its database replaced by `name`; the
/// user, password, host, port and query parameters stay.
pub fn database_url(admin: &str, name: &str) -> Result<String, String> {
    let (scheme, rest) = admin
        .split_once("://")
        .ok_or_else(|| format!("{admin:?} is not a URL"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, format!("?{q}")),
        None => (rest, String::new()),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("{admin:?} names no host"));
    }
    Ok(format!("{scheme}://{authority}/{name}{query}"))
}

/// The value of one series (`name{labels}` exactly as the exporter writes it) in Prometheus
/// text; `None` when the series is absent.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(series)?;
        // The series name must end here (`foo_total` is not `foo_total_bar`).
        if !rest.starts_with([' ', '\t']) {
            return None;
        }
        rest.split_whitespace().next()?.parse::<f64>().ok()
    })
}

/// The at-most-once check of one `/execute` phase: `runs` (the handler runs all replicas
/// counted during the phase) against what the client saw during the whole phase. Every nonce
/// was unique, so no 200 may say `"replayed": true`, and without errors each fresh 200 is
/// exactly one run. An answer lost to an error may or may not have run its handler, so with
/// errors the runs must lie between the fresh 200s and the fresh 200s plus the errors.
pub fn check_runs(runs: u64, t: Totals) -> Result<String, String> {
    if t.replayed > 0 {
        return Err(format!(
            "{} of {} 200 answers said \"replayed\": true although every nonce was sent once",
            t.replayed, t.ok
        ));
    }
    let fresh = t.ok;
    let errors = t.non_ok + t.transport;
    if errors == 0 {
        if runs == fresh {
            Ok(format!(
                "the echo handler ran {runs} times for {fresh} unique nonces answered 200 (none \
                 replayed): equal"
            ))
        } else {
            Err(format!(
                "the echo handler ran {runs} times but {fresh} unique nonces were answered 200 \
                 (none replayed, no errors): they must be equal"
            ))
        }
    } else if (fresh..=fresh + errors).contains(&runs) {
        Ok(format!(
            "the echo handler ran {runs} times for {fresh} unique nonces answered 200 and \
             {errors} lost to errors (each may or may not have run): within bounds"
        ))
    } else {
        Err(format!(
            "the echo handler ran {runs} times, outside {fresh}..={} ({fresh} unique nonces \
             answered 200, {errors} lost to errors)",
            fresh + errors
        ))
    }
}

/// Average PostgreSQL backends of the benchmark database in each state, over the samples of a
/// window (`pg_stat_activity`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WaitTally {
    pub samples: u64,
    by: BTreeMap<String, u64>,
}

/// The class of one backend: `active, on CPU`, `active, IO:WALSync`, `idle in transaction,
/// Client:ClientRead`, …
pub fn wait_class(
    state: Option<&str>,
    wait_type: Option<&str>,
    wait_event: Option<&str>,
) -> String {
    let state = state.unwrap_or("unknown");
    match (wait_type, wait_event) {
        (None, _) => format!("{state}, on CPU"),
        (Some(t), Some(e)) => format!("{state}, {t}:{e}"),
        (Some(t), None) => format!("{state}, {t}"),
    }
}

type Backend = (Option<String>, Option<String>, Option<String>);

impl WaitTally {
    pub fn add_sample(&mut self, backends: &[Backend]) {
        self.samples += 1;
        for (s, t, e) in backends {
            *self
                .by
                .entry(wait_class(s.as_deref(), t.as_deref(), e.as_deref()))
                .or_default() += 1;
        }
    }

    /// `active, IO:WALSync 1.20, …; idle 9.90`: the average count in each class of backends
    /// at work (not `idle`), largest first, classes under 0.05 left out; then the idle ones
    /// (the pools' spare connections) as one number.
    pub fn describe(&self) -> String {
        if self.samples == 0 {
            return "no sample".into();
        }
        let avg = |n: u64| n as f64 / self.samples as f64;
        let idle: u64 = self
            .by
            .iter()
            .filter(|(k, _)| k.starts_with("idle,"))
            .map(|(_, n)| n)
            .sum();
        let mut v: Vec<(&String, f64)> = self
            .by
            .iter()
            .filter(|(k, _)| !k.starts_with("idle,"))
            .map(|(k, n)| (k, avg(*n)))
            .filter(|(_, a)| *a >= 0.05)
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let mut parts: Vec<String> = v.iter().map(|(k, a)| format!("{k} {a:.2}")).collect();
        if parts.is_empty() {
            parts.push("none at work".into());
        }
        format!("{}; idle {:.2}", parts.join(", "), avg(idle))
    }
}

/// One line of the replicas table.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub spec: Spec,
    /// `mode` holds the setup's label.
    pub row: Row,
    /// req/s ÷ the req/s of `postgres ×1`'s /execute.
    pub vs_one: Option<f64>,
    /// CPU of the PostgreSQL server's processes (the whole cluster on this machine), in cores.
    pub db_cores: Option<f64>,
}

fn is_health(r: &BenchRow) -> bool {
    r.row.endpoint == Endpoint::Health.label()
}

/// Fill in each `/execute` row's ratio to the first `/health` row and to `postgres ×1`.
pub fn fill_ratios(rows: &mut [BenchRow]) {
    let health = rows.iter().find(|r| is_health(r)).map(|r| r.row.rps());
    let one = rows
        .iter()
        .find(|r| {
            !is_health(r)
                && r.spec
                    == Spec {
                        store: Store::Postgres,
                        replicas: 1,
                    }
        })
        .map(|r| r.row.rps());
    for r in rows.iter_mut().filter(|r| !is_health(r)) {
        let rps = r.row.rps();
        r.row.ratio = health.filter(|h| *h > 0.0).map(|h| rps / h);
        r.vs_one = one.filter(|o| *o > 0.0).map(|o| rps / o);
    }
}

/// `/execute` req/s of `postgres ×2` ÷ `postgres ×1`, with both rates; `None` when either is
/// missing or `postgres ×1` had no 200 answer.
pub fn two_to_one(rows: &[BenchRow]) -> Option<(f64, f64, f64)> {
    let rps = |replicas| {
        rows.iter()
            .find(|r| {
                !is_health(r)
                    && r.spec
                        == Spec {
                            store: Store::Postgres,
                            replicas,
                        }
            })
            .map(|r| r.row.rps())
    };
    let (one, two) = (rps(1)?, rps(2)?);
    (one > 0.0).then(|| (two / one, two, one))
}

fn ratio3(x: Option<f64>) -> String {
    match x {
        Some(x) => format!("{x:.3}"),
        None => "—".into(),
    }
}

/// The Markdown table of the replicas benchmark.
pub fn replicas_table(rows: &[BenchRow]) -> String {
    let mut t = String::new();
    t.push_str(
        "| setup | endpoint | requests | req/s | p50 ms | p99 ms | p999 ms | ÷ health | ÷ postgres ×1 | non-200 | server CPU | postgres CPU | client CPU | softirq | other CPU |\n",
    );
    t.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|\n");
    for b in rows {
        let r = &b.row;
        t.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.mode,
            r.endpoint,
            r.requests,
            r.rps(),
            ms(r.lat.p50_us),
            ms(r.lat.p99_us),
            ms(r.lat.p999_us),
            ratio3(r.ratio),
            ratio3(b.vs_one),
            non_ok_text(&r.non_ok),
            cores(r.server_cores),
            cores(b.db_cores),
            cores(Some(r.client_cores)),
            cores(r.softirq_cores),
            cores(r.other_cores),
        ));
    }
    t
}

/// The headline: `postgres ×2 ÷ postgres ×1` and each against /health.
pub fn summary(rows: &[BenchRow]) -> String {
    let mut parts = Vec::new();
    match two_to_one(rows) {
        Some((x, two, one)) => parts.push(format!(
            "POST /execute, 2 replicas ÷ 1 replica on PostgreSQL: **{x:.2}×** ({two:.0} vs \
             {one:.0} req/s)"
        )),
        None => parts.push(
            "POST /execute, 2 replicas ÷ 1 replica on PostgreSQL: n/a (a setup had no 200 \
             answer)"
                .into(),
        ),
    }
    for r in rows.iter().filter(|r| !is_health(r)) {
        if let Some(h) = r.row.ratio {
            parts.push(format!("{} ÷ health {h:.3}", r.row.mode));
        }
    }
    parts.join("; ")
}

/// A row as JSON: [`row_json`] plus the setup and the replicas columns.
pub fn bench_row_json(b: &BenchRow) -> Value {
    let mut v = row_json(&b.row);
    if let Value::Object(m) = &mut v {
        m.insert("setup".into(), json!(b.row.mode));
        m.insert("store".into(), json!(b.spec.store.as_str()));
        m.insert("replicas".into(), json!(b.spec.replicas));
        m.insert(
            "ratio_to_one_replica".into(),
            json!(b.vs_one.map(|x| (x * 1000.0).round() / 1000.0)),
        );
        m.insert(
            "postgres_cpu_cores".into(),
            json!(b.db_cores.map(|x| (x * 100.0).round() / 100.0)),
        );
    }
    v
}

async fn connect_admin(url: &str) -> anyhow::Result<PgConnection> {
    let opts: PgConnectOptions = url
        .parse()
        .with_context(|| format!("--pg-url {url:?} is not a PostgreSQL URL"))?;
    match tokio::time::timeout(Duration::from_secs(5), opts.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => bail!("cannot connect to PostgreSQL at {url}: {e}"),
        Err(_) => bail!("PostgreSQL at {url} did not answer within 5 s"),
    }
}

/// The server's `max_connections`.
async fn max_connections(url: &str) -> anyhow::Result<u32> {
    let mut c = connect_admin(url).await?;
    let v: String = sqlx::query_scalar("SHOW max_connections")
        .fetch_one(&mut c)
        .await
        .with_context(|| format!("SHOW max_connections on {url}"))?;
    let _ = c.close().await;
    v.trim()
        .parse()
        .with_context(|| format!("max_connections of {url} is {v:?}"))
}

/// How many databases of this run are left on the server.
async fn leftover_databases(url: &str, prefix: &str) -> anyhow::Result<i64> {
    let mut c = connect_admin(url).await?;
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE left(datname, $2) = $1")
            .bind(prefix)
            .bind(prefix.len() as i32)
            .fetch_one(&mut c)
            .await?;
    let _ = c.close().await;
    Ok(n)
}

/// A database created for one setup; dropped (with `WITH (FORCE)`) by [`PgDb::drop_now`], or
/// on drop if that was not reached.
pub struct PgDb {
    pub url: String,
    pub name: String,
    admin: String,
    dropped: bool,
}

impl PgDb {
    async fn create(admin: &str, name: &str) -> anyhow::Result<PgDb> {
        let url = database_url(admin, name).map_err(anyhow::Error::msg)?;
        let mut c = connect_admin(admin).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut c)
            .await
            .with_context(|| format!("CREATE DATABASE {name} on {admin}"))?;
        let _ = c.close().await;
        Ok(PgDb {
            url,
            name: name.to_string(),
            admin: admin.to_string(),
            dropped: false,
        })
    }

    async fn drop_db(admin: &str, name: &str) -> anyhow::Result<()> {
        let mut c = connect_admin(admin).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut c)
            .await
            .with_context(|| format!("DROP DATABASE {name} on {admin}"))?;
        let _ = c.close().await;
        Ok(())
    }

    async fn drop_now(&mut self) -> anyhow::Result<()> {
        PgDb::drop_db(&self.admin, &self.name).await?;
        self.dropped = true;
        Ok(())
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Maybe dropped while a runtime is driving this thread: drop it on a thread of its own.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(PgDb::drop_db(&admin, &name))
        })
        .join();
        match done {
            Ok(Ok(())) => eprintln!("[replicas] dropped database {}", self.name),
            Ok(Err(e)) => eprintln!(
                "openexec-load: could not drop database {} ({e:#}); drop it by hand",
                self.name
            ),
            Err(_) => eprintln!(
                "openexec-load: dropping database {} panicked; drop it by hand",
                self.name
            ),
        }
    }
}

/// The servers of one setup and their database. Fields drop in order: the servers are stopped
/// before the database is dropped.
struct Setup {
    spec: Spec,
    servers: Vec<server::Server>,
    db: Option<PgDb>,
}

impl Setup {
    fn start(
        rt: &tokio::runtime::Runtime,
        bin: &Path,
        spec: Spec,
        pg_url: &str,
        run_id: &str,
        pool: Option<u32>,
    ) -> anyhow::Result<Setup> {
        let label = spec.label();
        let db = match spec.store {
            Store::Postgres => {
                let name = db_name(run_id, &spec.tag());
                let db = rt.block_on(PgDb::create(pg_url, &name))?;
                eprintln!("[{label}] created database {name}");
                Some(db)
            }
            Store::Sqlite => None,
        };
        // Declared after `db`: on an early return the servers stop before the database drops.
        let mut servers: Vec<server::Server> = Vec::new();
        for i in 0..spec.replicas {
            let mut env: Vec<(&str, String)> = Vec::new();
            if let Some(db) = &db {
                env.push(("OPENEXEC_DB_URL", db.url.clone()));
                if let Some(p) = pool {
                    env.push(("OPENEXEC_DB_POOL_SIZE", p.to_string()));
                }
            }
            if let Some(first) = servers.first() {
                // One deployment signs with one receipt key and one log key.
                for (var, file) in [
                    ("OPENEXEC_RECEIPT_KEY", "receipt-key.pem"),
                    ("OPENEXEC_LOG_KEY", "log-key.pem"),
                ] {
                    let p = first.data_dir().join(file);
                    if !p.is_file() {
                        bail!(
                            "[{label}] the first replica generated no {} (needed by the others)",
                            p.display()
                        );
                    }
                    env.push((var, p.display().to_string()));
                }
            }
            let s = server::Server::start_with(bin, "demo", None, &env)
                .with_context(|| format!("[{label}] replica {} did not start", i + 1))?;
            eprintln!(
                "[{label}] replica {} pid {} listening on {} (state in {})",
                i + 1,
                s.pid,
                s.addr,
                s.dir().display()
            );
            servers.push(s);
        }
        let setup = Setup { spec, servers, db };
        setup.check(rt)?;
        Ok(setup)
    }

    /// Every replica is in demo mode, and all publish the same keys.
    fn check(&self, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        let label = self.spec.label();
        let mut first_keys: Option<Value> = None;
        for (i, s) in self.servers.iter().enumerate() {
            let (st, body) = rt
                .block_on(get_once(s.addr, "/health"))
                .with_context(|| format!("[{label}] GET /health on {} failed", s.addr))?;
            let health: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let mode = health.get("exec_mode").and_then(Value::as_str);
            if st != 200 || mode != Some("demo") {
                bail!(
                    "[{label}] replica {}: /health answered {st} with exec_mode {mode:?}, expected \
                     \"demo\": {}",
                    i + 1,
                    String::from_utf8_lossy(&body)
                );
            }
            let (st, body) = rt
                .block_on(get_once(s.addr, "/keys"))
                .with_context(|| format!("[{label}] GET /keys on {} failed", s.addr))?;
            let keys: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if st != 200 {
                bail!(
                    "[{label}] replica {}: GET /keys answered {st}: {}",
                    i + 1,
                    String::from_utf8_lossy(&body)
                );
            }
            match &first_keys {
                None => first_keys = Some(keys),
                Some(k) if *k == keys => {}
                Some(k) => bail!(
                    "[{label}] replica {} publishes other keys than replica 1: {keys} vs {k}",
                    i + 1
                ),
            }
        }
        Ok(())
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.addr).collect()
    }

    fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(|s| s.pid).collect()
    }

    /// Stop every server (SIGTERM), read the database's table statistics (complete once the
    /// replicas' backends have exited), and drop the database. Returns what went wrong, as
    /// failures, and the statistics as a note.
    fn finish(mut self, rt: &tokio::runtime::Runtime) -> (Vec<String>, Option<String>) {
        let label = self.spec.label();
        let mut failures = Vec::new();
        let mut note = None;
        for (i, s) in self.servers.iter_mut().enumerate() {
            match s.stop() {
                Ok(status) if status.success() => {
                    eprintln!("[{label}] replica {} stopped ({status})", i + 1)
                }
                Ok(status) => failures.push(format!(
                    "{label}: replica {} exited with {status} after SIGTERM; its stderr ends:\n{}",
                    i + 1,
                    s.stderr_tail(20)
                )),
                Err(e) => failures.push(format!("{label}: replica {}: {e:#}", i + 1)),
            }
        }
        if let Some(db) = self.db.as_mut() {
            // A backend reports its last statistics when it exits, just after its client.
            std::thread::sleep(Duration::from_millis(300));
            note = Some(match rt.block_on(table_stats(&db.url)) {
                Ok(t) => format!(
                    "{label}: its database's tables over the setup's life (pg_stat_user_tables, \
                     warmup included): {}",
                    scans_text(&t)
                ),
                Err(e) => format!("{label}: could not read pg_stat_user_tables: {e:#}"),
            });
            match rt.block_on(db.drop_now()) {
                Ok(()) => eprintln!("[{label}] dropped database {}", db.name),
                Err(e) => failures.push(format!("{label}: {e:#}")),
            }
        }
        (failures, note)
    }
}

/// Access counts of one table: name, sequential scans, rows they read, index scans.
pub type TableStats = (String, i64, i64, i64);

/// `pg_stat_user_tables` of the database at `url`.
async fn table_stats(url: &str) -> anyhow::Result<Vec<TableStats>> {
    let mut c = connect_admin(url).await?;
    let rows: Vec<TableStats> = sqlx::query_as(
        "SELECT relname::text, COALESCE(seq_scan, 0), COALESCE(seq_tup_read, 0), \
         COALESCE(idx_scan, 0) FROM pg_stat_user_tables ORDER BY 3 DESC, 1",
    )
    .fetch_all(&mut c)
    .await
    .context("reading pg_stat_user_tables")?;
    let _ = c.close().await;
    Ok(rows)
}

/// `log_nodes 1568 seq scans reading 40.10M rows, 0 index scans; …` for the tables whose
/// sequential scans read rows, most rows read first.
pub fn scans_text(tables: &[TableStats]) -> String {
    let mut v: Vec<&TableStats> = tables.iter().filter(|t| t.1 > 0 && t.2 > 0).collect();
    v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    if v.is_empty() {
        return "no sequential scan".into();
    }
    let rows = |n: i64| {
        if n >= 1_000_000 {
            format!("{:.2}M", n as f64 / 1e6)
        } else if n >= 1_000 {
            format!("{:.1}k", n as f64 / 1e3)
        } else {
            n.to_string()
        }
    };
    v.iter()
        .map(|(name, seq, read, idx)| {
            format!(
                "{name} {seq} seq scans reading {} rows, {idx} index scans",
                rows(*read)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Sample `pg_stat_activity` of database `db` every [`WAIT_SAMPLE_EVERY`] during `window`.
async fn sample_waits(admin: String, db: String, window: Window) -> anyhow::Result<WaitTally> {
    let mut c = connect_admin(&admin).await?;
    tokio::time::sleep_until(window.measure_from.into()).await;
    let mut tally = WaitTally::default();
    while Instant::now() < window.end {
        let rows: Vec<Backend> = sqlx::query_as(
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity WHERE datname = $1",
        )
        .bind(&db)
        .fetch_all(&mut c)
        .await
        .context("reading pg_stat_activity")?;
        tally.add_sample(&rows);
        tokio::time::sleep(WAIT_SAMPLE_EVERY).await;
    }
    let _ = c.close().await;
    Ok(tally)
}

/// `/metrics` of the server at `addr`, as text.
pub(crate) fn metrics_text(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
) -> anyhow::Result<String> {
    let (st, body) = rt
        .block_on(get_once(addr, "/metrics"))
        .with_context(|| format!("GET /metrics on {addr} failed"))?;
    if st != 200 {
        bail!("GET /metrics on {addr} answered {st}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn bench_row(spec: Spec, endpoint: &str, phase: &Phase, seconds: f64) -> BenchRow {
    let cpu = &phase.cpu;
    BenchRow {
        spec,
        row: Row {
            // PostgreSQL has a column of its own here, so it is not "other".
            other_cores: cpu.machine_cores.map(|m| {
                (m - cpu.server_cores.unwrap_or(0.0)
                    - cpu.client_cores
                    - cpu.db_cores.unwrap_or(0.0))
                .max(0.0)
            }),
            ..phase_row(&spec.label(), endpoint, phase, seconds)
        },
        vs_one: None,
        db_cores: cpu.db_cores,
    }
}

/// Run the replicas benchmark; Ok(false) when it ran but failed.
pub fn run(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    tck: f64,
    run_id: &str,
    cmd: &str,
) -> anyhow::Result<bool> {
    let bin = args.server_bin_for("--replicas-bench")?;
    let pg_url = args.pg_url.as_deref().unwrap_or(DEFAULT_PG_URL);
    check_args(args.connections, pg_url, args.pg_pool_size).map_err(anyhow::Error::msg)?;
    let max_conn = rt.block_on(max_connections(pg_url))?;
    let pool = args.pg_pool_size.unwrap_or(DEFAULT_POOL);
    pool_fits(max_conn, 2, pool).map_err(anyhow::Error::msg)?;

    let mut rows: Vec<BenchRow> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut thread_notes: Vec<String> = Vec::new();
    let mut checks: Vec<Value> = Vec::new();
    let secs = args.duration.as_secs_f64();

    for spec in specs(!args.no_sqlite) {
        let label = spec.label();
        let setup = Setup::start(rt, bin, spec, pg_url, run_id, args.pg_pool_size)?;
        let addrs = setup.addrs();
        let pids = setup.pids();

        // 1. The baseline, once, on the first server.
        if rows.is_empty() {
            eprintln!(
                "[{label}] GET /health (baseline, replica 1): {} connections, warmup {}, \
                 measuring {}…",
                args.connections,
                fmt_dur(args.warmup),
                fmt_dur(args.duration)
            );
            let window = window_from_now(args);
            let phase = run_phase_in(
                rt,
                args,
                window,
                &addrs[..1],
                Endpoint::Health,
                &pids[..1],
                Some(PG_COMM),
                tck,
            )?;
            let row = bench_row(spec, Endpoint::Health.label(), &phase, secs);
            report_errors(&row, &phase, args.allow_errors, &mut notes, &mut failures);
            eprintln!(
                "[{label}] GET /health: {} ok, {:.0} req/s, p50 {} ms, p99 {} ms",
                row.row.requests,
                row.row.rps(),
                ms(row.row.lat.p50_us),
                ms(row.row.lat.p99_us)
            );
            rows.push(row);
        }

        // 2. POST /execute over every replica of the setup.
        eprintln!(
            "[{label}] POST /execute over {} replica(s): {} connections, warmup {}, measuring \
             {}…",
            spec.replicas,
            args.connections,
            fmt_dur(args.warmup),
            fmt_dur(args.duration)
        );
        let before = addrs
            .iter()
            .map(|a| metrics_text(rt, *a))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let source = Arc::new(BodySource::template(&format!("{run_id}-{}", spec.tag())));
        let window = window_from_now(args);
        let started = Instant::now();
        let waits = setup
            .db
            .as_ref()
            .map(|db| rt.spawn(sample_waits(pg_url.to_string(), db.name.clone(), window)));
        let phase = run_phase_in(
            rt,
            args,
            window,
            &addrs,
            Endpoint::Execute(source.clone()),
            &pids,
            Some(PG_COMM),
            tck,
        )?;
        let phase_secs = started.elapsed().as_secs_f64();
        let after = addrs
            .iter()
            .map(|a| metrics_text(rt, *a))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(h) = waits {
            match rt.block_on(h) {
                Ok(Ok(t)) => notes.push(format!(
                    "{label}: PostgreSQL backends of its database during the window (average \
                     number in each state, {} samples of pg_stat_activity every {} ms): {}",
                    t.samples,
                    WAIT_SAMPLE_EVERY.as_millis(),
                    t.describe()
                )),
                Ok(Err(e)) => notes.push(format!("{label}: wait sampling failed: {e:#}")),
                Err(e) => notes.push(format!("{label}: wait sampling task failed: {e}")),
            }
        }

        // The at-most-once check against the replicas' own counters.
        let delta = |name: &str, i: usize| {
            metric_value(&after[i], name).unwrap_or(0.0)
                - metric_value(&before[i], name).unwrap_or(0.0)
        };
        let per_replica: Vec<u64> = (0..addrs.len())
            .map(|i| delta(HANDLER_RUNS, i).max(0.0) as u64)
            .collect();
        let runs: u64 = per_replica.iter().sum();
        let total = phase.outcome.total;
        let verdict = check_runs(runs, total);
        match &verdict {
            Ok(m) => notes.push(format!("{label}: at-most-once check: {m}")),
            Err(m) => failures.push(format!("{label}: at-most-once check failed: {m}")),
        }
        checks.push(json!({
            "setup": label,
            "handler_runs": runs,
            "handler_runs_per_replica": per_replica,
            "ok_answers": total.ok,
            "replayed_answers": total.replayed,
            "non_200_answers": total.non_ok,
            "transport_errors": total.transport,
            "ok": verdict.is_ok(),
        }));
        match check_samples(&phase.outcome.samples) {
            Ok(0) if phase.outcome.ok > 0 => failures.push(format!(
                "{label}: no /execute answer was sampled for the check"
            )),
            Ok(0) => {}
            Ok(n) => notes.push(format!(
                "{label}: sanity: {n} sampled 200 answers all say \"replayed\": false, \
                 \"status\": \"executed\", with {n} distinct receipts"
            )),
            Err(e) => failures.push(format!("{label}: sanity check failed: {e}")),
        }
        for i in 0..addrs.len() {
            let b = StoreMetrics::parse(&before[i]).unwrap_or_default();
            let a = StoreMetrics::parse(&after[i]).unwrap_or_default();
            let retries = delta("openexec_store_retries_total", i);
            let seq = metric_value(&after[i], "openexec_log_sequencer");
            notes.push(format!(
                "{label} replica {} (pid {}): ran {} handlers{}{}; store during the phase \
                 (warmup included): {}",
                i + 1,
                pids[i],
                per_replica[i],
                match seq {
                    Some(s) if s > 0.0 => ", the log's sequencer",
                    _ => "",
                },
                if retries > 0.0 {
                    format!(", {retries:.0} batch retries (serialization/deadlock)")
                } else {
                    String::new()
                },
                StoreMetrics::describe_delta(&b, &a, phase_secs)
            ));
        }

        let row = bench_row(spec, Endpoint::Execute(source).label(), &phase, secs);
        if row.row.requests == 0 {
            failures.push(format!("{label}: POST /execute had no 200 answer"));
        }
        report_errors(&row, &phase, args.allow_errors, &mut notes, &mut failures);
        if args.verbose && !phase.cpu.threads.is_empty() {
            thread_notes.push(format!(
                "{label} POST /execute: server CPU by thread (all replicas): {}",
                threads_text(&phase.cpu.threads, secs)
            ));
        }
        eprintln!(
            "[{label}] POST /execute: {} ok, {:.0} req/s, p50 {} ms, p99 {} ms",
            row.row.requests,
            row.row.rps(),
            ms(row.row.lat.p50_us),
            ms(row.row.lat.p99_us)
        );
        rows.push(row);

        let (f, note) = setup.finish(rt);
        failures.extend(f);
        notes.extend(note);
    }

    let prefix = db_name(run_id, "");
    match rt.block_on(leftover_databases(pg_url, &prefix)) {
        Ok(0) => notes.push(format!(
            "every database of this run ({prefix}*) was dropped from the server"
        )),
        Ok(n) => failures.push(format!(
            "{n} database(s) named {prefix}* are left on the PostgreSQL server"
        )),
        Err(e) => notes.push(format!("could not check for left-over databases: {e:#}")),
    }

    fill_ratios(&mut rows);
    let spread: Vec<String> = (0..2)
        .map(|k| {
            (0..args.connections)
                .filter(|i| crate::client::server_of(*i, 2) == k)
                .count()
                .to_string()
        })
        .collect();
    let mut out = String::new();
    out.push_str(&replicas_table(&rows));
    out.push('\n');
    out.push_str(&format!("{}\n", summary(&rows)));
    out.push_str(&run_lines(args, "per phase", cmd));
    out.push_str(&format!(
        "replicas benchmark: every server is a fresh `openexec serve` (demo mode, server \
         defaults{}) on its own temp dir; postgres setups each on a fresh database of {} \
         (dropped afterwards), the second replica signing with the first's receipt and log \
         keys; with 2 replicas connection i goes to replica i mod 2 ({} connections); sqlite on \
         its own file. GET /health ran on the first server (postgres ×1, replica 1) before its \
         /execute. requests = 200 answers started after the warmup and answered inside the \
         window; CPU columns are % of one core during the window (server: all replicas; \
         postgres: every process named `postgres` on this machine; other: everything else \
         busy, which distorts the run when not ~0).\n",
        match args.pg_pool_size {
            Some(p) => format!(", OPENEXEC_DB_POOL_SIZE={p}"),
            None => String::new(),
        },
        redact_password(pg_url),
        spread.join(" + ")
    ));
    let doc = || {
        json_doc(
            args,
            cmd,
            json!({
                "benchmark": "replicas",
                "pg_server": redact_password(pg_url),
                "pg_pool_size": args.pg_pool_size,
                "rows": rows.iter().map(bench_row_json).collect::<Vec<_>>(),
                "ratio_two_to_one_replica": two_to_one(&rows).map(|t| (t.0 * 1000.0).round() / 1000.0),
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

/// Non-200 answers of a phase: a failure, or a note with `--allow-errors`.
fn report_errors(
    b: &BenchRow,
    phase: &Phase,
    allow_errors: bool,
    notes: &mut Vec<String>,
    failures: &mut Vec<String>,
) {
    let row = &b.row;
    if row.errors() == 0 {
        return;
    }
    let examples: Vec<String> = phase
        .outcome
        .non_ok_examples
        .iter()
        .map(|(s, body)| {
            let t = String::from_utf8_lossy(body);
            format!("{s}: {}", t.chars().take(300).collect::<String>())
        })
        .collect();
    let msg = format!(
        "{} {} got non-200 answers ({}); e.g. {}",
        row.mode,
        row.endpoint,
        non_ok_text(&row.non_ok),
        if examples.is_empty() {
            "connection errors".to_string()
        } else {
            examples.join(" | ")
        }
    );
    if allow_errors {
        notes.push(msg);
    } else {
        failures.push(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Percentiles;

    fn spec(store: Store, replicas: usize) -> Spec {
        Spec { store, replicas }
    }

    fn brow(spec: Spec, endpoint: &str, requests: u64) -> BenchRow {
        BenchRow {
            spec,
            row: Row {
                mode: spec.label(),
                endpoint: endpoint.into(),
                requests,
                seconds: 10.0,
                lat: Percentiles {
                    p50_us: 15_000,
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
            vs_one: None,
            db_cores: Some(0.456),
        }
    }

    #[test]
    fn setups_run_in_order_with_labels() {
        let s = specs(true);
        let labels: Vec<String> = s.iter().map(Spec::label).collect();
        assert_eq!(labels, ["postgres ×1", "postgres ×2", "sqlite ×1"]);
        assert_eq!(specs(false).len(), 2);
        assert_eq!(s[1].tag(), "pg2");
        assert_eq!(s[2].tag(), "sq1");
    }

    #[test]
    fn arguments_are_checked() {
        let url = DEFAULT_PG_URL;
        assert_eq!(check_args(64, url, None), Ok(()));
        assert_eq!(check_args(2, "postgresql://u@h/db", Some(16)), Ok(()));
        let e = check_args(1, url, None).unwrap_err();
        assert!(e.contains("--connections of at least 2"), "{e}");
        let e = check_args(64, "sqlite:///x.db", None).unwrap_err();
        assert!(e.contains("--pg-url must start with postgres://"), "{e}");
        let e = check_args(64, "postgres://h:notaport/db", None).unwrap_err();
        assert!(e.contains("is not a PostgreSQL URL"), "{e}");
        let e = check_args(64, url, Some(2)).unwrap_err();
        assert!(
            e.contains("--pg-pool-size must be between 3 and 1000"),
            "{e}"
        );
        assert!(check_args(64, url, Some(1001)).is_err());
    }

    #[test]
    fn pools_must_fit_in_max_connections() {
        assert_eq!(pool_fits(100, 2, 16), Ok(()));
        assert_eq!(pool_fits(37, 2, 16), Ok(()));
        let e = pool_fits(36, 2, 16).unwrap_err();
        assert!(
            e.starts_with("2 replicas × 16 pool connections + 5 spare = 37 exceeds"),
            "{e}"
        );
        assert!(e.contains("max_connections of 36"), "{e}");
    }

    #[test]
    fn flags_parse_and_conflict() {
        use clap::Parser;
        let ok = Args::try_parse_from([
            "openexec-load",
            "--server-bin",
            "/bin/openexec",
            "--replicas-bench",
            "--pg-url",
            "postgres://u@h/db",
            "--pg-pool-size",
            "8",
            "--no-sqlite",
        ])
        .unwrap();
        assert!(ok.replicas_bench && ok.no_sqlite);
        assert_eq!(ok.pg_pool_size, Some(8));
        assert_eq!(ok.pg_url.as_deref(), Some("postgres://u@h/db"));
        // The replicas options need --replicas-bench.
        for extra in [
            &["--pg-url", "postgres://u@h/db"][..],
            &["--pg-pool-size", "8"],
            &["--no-sqlite"],
        ] {
            let mut v = vec!["openexec-load", "--server-bin", "/bin/openexec"];
            v.extend_from_slice(extra);
            assert!(Args::try_parse_from(v).is_err(), "{extra:?}");
        }
        // It starts its own servers and is a benchmark of its own.
        for extra in [
            &["--log-bench"][..],
            &["--modes", "demo"],
            &["--premint", "10"],
        ] {
            let mut v = vec![
                "openexec-load",
                "--server-bin",
                "/bin/openexec",
                "--replicas-bench",
            ];
            v.extend_from_slice(extra);
            assert!(Args::try_parse_from(v).is_err(), "{extra:?}");
        }
        assert!(Args::try_parse_from([
            "openexec-load",
            "--url",
            "http://127.0.0.1:5000",
            "--replicas-bench"
        ])
        .is_err());
    }

    #[test]
    fn database_names_and_urls() {
        assert_eq!(
            db_name("ld1732000000000p4242", "pg2"),
            "oe_load_ld1732000000000p4242_pg2"
        );
        assert_eq!(db_name("A-b.C", "pg1"), "oe_load_abc_pg1");
        assert_eq!(db_name(&"x".repeat(100), "pg1").len(), 63);
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/test", "oe_x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/oe_x"
        );
        assert_eq!(
            database_url("postgresql://u:p@h/db?sslmode=disable", "n").unwrap(),
            "postgresql://u:p@h/n?sslmode=disable"
        );
        assert_eq!(
            database_url("postgres://h:5432", "n").unwrap(),
            "postgres://h:5432/n"
        );
        assert!(database_url("nope", "n").is_err());
        assert!(database_url("postgres:///db", "n").is_err());
        assert_eq!(
            redact_password("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact_password(DEFAULT_PG_URL), DEFAULT_PG_URL);
    }

    #[test]
    fn metric_values_by_exact_series() {
        let text = "# HELP openexec_handler_runs_total runs\n\
            openexec_handler_runs_total{action=\"echo\"} 40959\n\
            openexec_handler_runs_total{action=\"echo2\"} 7\n\
            openexec_store_retries_total 3\n\
            openexec_store_retries_total_extra 9\n\
            openexec_log_sequencer 1\n";
        assert_eq!(metric_value(text, HANDLER_RUNS), Some(40959.0));
        assert_eq!(
            metric_value(text, "openexec_store_retries_total"),
            Some(3.0)
        );
        assert_eq!(metric_value(text, "openexec_log_sequencer"), Some(1.0));
        assert_eq!(metric_value(text, "openexec_missing"), None);
        assert_eq!(metric_value("", HANDLER_RUNS), None);
    }

    #[test]
    fn runs_must_match_fresh_answers() {
        let t = |ok, replayed, non_ok, transport| Totals {
            ok,
            replayed,
            non_ok,
            transport,
        };
        assert!(check_runs(100, t(100, 0, 0, 0)).unwrap().contains("equal"));
        let e = check_runs(101, t(100, 0, 0, 0)).unwrap_err();
        assert!(e.contains("ran 101 times but 100 unique nonces"), "{e}");
        assert!(check_runs(99, t(100, 0, 0, 0)).is_err());
        let e = check_runs(100, t(100, 1, 0, 0)).unwrap_err();
        assert!(
            e.contains("1 of 100 200 answers said \"replayed\": true"),
            "{e}"
        );
        // Errors: each may or may not have run its handler.
        assert!(check_runs(100, t(100, 0, 2, 1)).is_ok());
        assert!(check_runs(103, t(100, 0, 2, 1)).is_ok());
        assert!(check_runs(104, t(100, 0, 2, 1)).is_err());
        assert!(check_runs(99, t(100, 0, 2, 1)).is_err());
        assert!(check_runs(0, t(0, 0, 0, 0)).is_ok());
    }

    #[test]
    fn replays_are_found_in_answers() {
        use crate::client::says_replayed;
        assert!(!says_replayed(
            br#"{"id":"x","replayed":false,"status":"executed"}"#
        ));
        assert!(says_replayed(br#"{"id":"x","replayed":true}"#));
        assert!(says_replayed(br#"{"id":"x", "replayed" : true }"#));
        assert!(!says_replayed(br#"{"id":"x"}"#));
        assert!(!says_replayed(b""));
    }

    #[test]
    fn table_scans_most_rows_first() {
        let t = |n: &str, seq, read, idx| (n.to_string(), seq, read, idx);
        assert_eq!(
            scans_text(&[
                t("executions", 0, 0, 900),
                t("log_state", 1, 0, 1847),
                t("replicas", 40, 80, 0),
                t("log_nodes", 1568, 40_100_000, 3),
                t("receipts", 12, 4_500, 70),
            ]),
            "log_nodes 1568 seq scans reading 40.10M rows, 3 index scans; receipts 12 seq scans \
             reading 4.5k rows, 70 index scans; replicas 40 seq scans reading 80 rows, 0 index scans"
        );
        assert_eq!(scans_text(&[t("x", 0, 0, 5)]), "no sequential scan");
        assert_eq!(scans_text(&[]), "no sequential scan");
    }

    #[test]
    fn process_cpu_deltas() {
        let before: std::collections::HashMap<u32, u64> = [(1, 100), (2, 50), (3, 7)].into();
        // 1 used 20 ticks, 2 none, 3 exited (lost), 4 started in between (counts from 0).
        let after: std::collections::HashMap<u32, u64> = [(1, 120), (2, 50), (4, 5)].into();
        assert_eq!(server::ticks_delta(&before, &after), 25);
        assert_eq!(server::ticks_delta(&after, &after), 0);
    }

    #[test]
    fn connections_alternate_between_replicas() {
        use crate::client::server_of;
        let per: Vec<usize> = (0..2)
            .map(|k| (0..65).filter(|i| server_of(*i, 2) == k).count())
            .collect();
        assert_eq!(per, [33, 32]);
        assert!((0..10).all(|i| server_of(i, 1) == 0));
        assert_eq!(server_of(3, 0), 0);
    }

    #[test]
    fn wait_samples_average_by_class() {
        let b = |s: &str, t: Option<&str>, e: Option<&str>| -> Backend {
            (Some(s.into()), t.map(Into::into), e.map(Into::into))
        };
        let mut w = WaitTally::default();
        assert_eq!(w.describe(), "no sample");
        w.add_sample(&[
            b("active", Some("IO"), Some("WALSync")),
            b("active", None, None),
            b("idle in transaction", Some("Client"), Some("ClientRead")),
            b("idle in transaction", Some("Client"), Some("ClientRead")),
        ]);
        w.add_sample(&[
            b("active", Some("IO"), Some("WALSync")),
            b("idle in transaction", Some("Client"), Some("ClientRead")),
            b("idle", Some("Client"), Some("ClientRead")),
            b("idle", Some("Client"), Some("ClientRead")),
            b("idle", None, None),
        ]);
        assert_eq!(w.samples, 2);
        assert_eq!(
            w.describe(),
            "idle in transaction, Client:ClientRead 1.50, active, IO:WALSync 1.00, active, on CPU 0.50; idle 1.50"
        );
        let mut idle = WaitTally::default();
        idle.add_sample(&[b("idle", Some("Client"), Some("ClientRead"))]);
        assert_eq!(idle.describe(), "none at work; idle 1.00");
        assert_eq!(wait_class(None, Some("Lock"), None), "unknown, Lock");
    }

    #[test]
    fn ratios_table_summary_and_json() {
        let mut rows = vec![
            brow(spec(Store::Postgres, 1), "GET /health", 800_000),
            brow(spec(Store::Postgres, 1), "POST /execute", 40_000),
            brow(spec(Store::Postgres, 2), "POST /execute", 46_400),
            brow(spec(Store::Sqlite, 1), "POST /execute", 41_600),
        ];
        rows[2].row.non_ok.insert(503, 2);
        fill_ratios(&mut rows);
        assert_eq!(rows[0].row.ratio, None);
        assert_eq!(rows[0].vs_one, None);
        assert_eq!(rows[1].vs_one, Some(1.0));
        assert!((rows[2].vs_one.unwrap() - 1.16).abs() < 1e-12);
        assert!((rows[2].row.ratio.unwrap() - 0.058).abs() < 1e-12);
        let (x, two, one) = two_to_one(&rows).unwrap();
        assert!((x - 1.16).abs() < 1e-12);
        assert!((two - 4640.0).abs() < 1e-9 && (one - 4000.0).abs() < 1e-9);

        let t = replicas_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 6, "{t}");
        assert!(lines[0].starts_with(
            "| setup | endpoint | requests | req/s | p50 ms | p99 ms | p999 ms | ÷ health | ÷ postgres ×1 | non-200 | server CPU | postgres CPU |"
        ));
        assert_eq!(
            lines[2],
            "| postgres ×1 | GET /health | 800000 | 80000 | 15.00 | 25.87 | 33.73 | — | — | 0 | 124% | 46% | 10% | 5% | 0% |"
        );
        assert_eq!(
            lines[4],
            "| postgres ×2 | POST /execute | 46400 | 4640 | 15.00 | 25.87 | 33.73 | 0.058 | 1.160 | 503×2 | 124% | 46% | 10% | 5% | 0% |"
        );
        assert!(lines[5].starts_with("| sqlite ×1 | POST /execute | 41600 | 4160 |"));
        assert!(lines[5].contains("| 0.052 | 1.040 |"), "{}", lines[5]);

        let s = summary(&rows);
        assert!(
            s.starts_with(
                "POST /execute, 2 replicas ÷ 1 replica on PostgreSQL: **1.16×** (4640 vs 4000 req/s)"
            ),
            "{s}"
        );
        assert!(s.contains("postgres ×2 ÷ health 0.058"), "{s}");

        let j = bench_row_json(&rows[2]);
        assert_eq!(j["setup"], json!("postgres ×2"));
        assert_eq!(j["store"], json!("postgres"));
        assert_eq!(j["replicas"], json!(2));
        assert_eq!(j["ratio_to_one_replica"], json!(1.16));
        assert_eq!(j["ratio_to_health"], json!(0.058));
        assert_eq!(j["postgres_cpu_cores"], json!(0.46));
        assert_eq!(j["non_200"]["503"], json!(2));
        assert_eq!(j["req_per_s"], json!(4640.0));

        // Without a 2-replica row (it had no 200 answer) there is no ratio to claim.
        let mut partial = vec![rows[0].clone(), rows[1].clone()];
        fill_ratios(&mut partial);
        assert_eq!(two_to_one(&partial), None);
        assert!(summary(&partial).contains("n/a"));
    }
}
