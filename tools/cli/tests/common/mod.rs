//! Shared harness for the black-box tests: start the real `openexec serve` binary on a free port
//! with its own data directory and database, talk to it over HTTP, stop it (SIGTERM or SIGKILL),
//! start it again on the same state, and check evidence offline.
#![allow(dead_code)]

pub mod dev;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use openexec_core::json::{jcs_sha256, sha256_hex};
use openexec_core::keys::{parse_verifying_key, verify_b64};
pub use openexec_testkit::StartFailure;
use openexec_testkit::{eventually, Http, Process, ProcessSpec};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_openexec");

/// `$VECTORS_DIR`, else `shared/vectors` beside the repository.
pub fn vectors_dir() -> PathBuf {
    match std::env::var_os("VECTORS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"),
    }
}

/// Read and parse one vector file.
pub fn load_vector(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e} (set VECTORS_DIR)", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// What a poll last saw, kept for its failure message (see [`OnPanic`]).
#[derive(Default)]
pub struct Seen(std::sync::Mutex<String>);

impl Seen {
    pub fn set(&self, what: impl std::fmt::Display) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = what.to_string();
    }
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// While alive, if the thread panics (an [`eventually`] that ran out of time, which names only
/// what was awaited), prints `context()`, evaluated then: what the poll last saw ([`Seen`]) and
/// a service's log at that moment. Keep it for the poll only.
pub struct OnPanic<F: Fn() -> String>(pub F);

impl<F: Fn() -> String> Drop for OnPanic<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", (self.0)());
        }
    }
}

/// A running `openexec serve` with its own data directory (removed when the `Server` is dropped).
pub struct Server {
    proc: Process,
    /// `http://127.0.0.1:PORT` of the current process.
    pub base: String,
    pub client: reqwest::Client,
}

/// How `openexec serve` runs under test: no inherited OPENEXEC_* / CLAWSHIELD_*, a free port,
/// its data directory and SQLite database in the test's directory, then `env`.
fn serve_spec(env: &[(&str, &str)], nofile: Option<u64>) -> ProcessSpec {
    ProcessSpec::new(BIN, &["serve"], "openexec: listening on ")
        .clear_env("OPENEXEC_")
        .clear_env("CLAWSHIELD_")
        .env("OPENEXEC_BIND", "127.0.0.1:0")
        .env("OPENEXEC_DATA_DIR", "{dir}")
        .env("OPENEXEC_DB_URL", "sqlite:///{dir}/openexec.db")
        .envs(env)
        .nofile(nofile)
}

impl Server {
    /// Start a server in a fresh data directory; panics with the server log if it fails.
    pub fn start(env: &[(&str, &str)]) -> Server {
        Server::from_process(Process::start(serve_spec(env, None)))
    }

    /// Start a server in a fresh data directory, or say why it did not come up.
    pub fn try_start(env: &[(&str, &str)]) -> Result<Server, StartFailure> {
        Process::try_start(serve_spec(env, None)).map(Server::from_process)
    }

    /// Start a server whose process may open at most `nofile` files (`ulimit -n`).
    pub fn start_with_fd_limit(env: &[(&str, &str)], nofile: u64) -> Server {
        Server::from_process(Process::start(serve_spec(env, Some(nofile))))
    }

    fn from_process(proc: Process) -> Server {
        let http = Http::new(proc.base.clone());
        Server {
            base: http.base,
            client: http.client,
            proc,
        }
    }

    /// The server as an HTTP peer (GET /metrics series and the like).
    pub fn http(&self) -> Http {
        Http {
            base: self.base.clone(),
            client: self.client.clone(),
        }
    }

    /// The data directory (it also holds `openexec.db` and `server.log`).
    pub fn dir(&self) -> &Path {
        self.proc.dir()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir().join("openexec.db")
    }

    /// The server log so far (its last 6000 bytes).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Start again on the same data directory and database (a new port). Kills the previous
    /// process first if it is still running.
    pub fn restart(&mut self) {
        self.proc.restart();
        // Connections to the old process are useless now.
        let http = Http::new(self.proc.base.clone());
        self.base = http.base;
        self.client = http.client;
    }

    /// SIGKILL the process and reap it.
    pub fn kill9(&mut self) {
        self.proc.kill9()
    }

    /// SIGTERM the process and wait (at most 30 s) for it to exit; its exit status.
    pub fn term(&mut self) -> ExitStatus {
        self.proc.term()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POST a JSON value; (status, JSON body — or the text as a JSON string if it is not JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.http().post(path, body).await
    }

    /// POST these exact bytes as `application/json`.
    pub async fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> (u16, Value) {
        self.http().post_raw(path, body).await
    }

    /// POST /execute.
    pub async fn execute(&self, body: &Value) -> (u16, Value) {
        self.post("/execute", body).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.http().get(path).await
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        self.http().get_text(path).await
    }

    /// `openexec_handler_runs_total{action="<action>"}` from /metrics; 0 when absent.
    pub async fn handler_runs(&self, action: &str) -> u64 {
        self.http()
            .metric(&format!(
                "openexec_handler_runs_total{{action=\"{action}\"}}"
            ))
            .await
    }

    /// Poll `handler_runs(action)` until it reaches `n` (at most `within`).
    pub async fn wait_handler_runs(&self, action: &str, n: u64, within: Duration) {
        let what = format!("handler_runs({action}) reaches {n}");
        let got = eventually(within, &what, || async {
            let got = self.handler_runs(action).await;
            (got >= n).then_some(got)
        })
        .await;
        assert_eq!(got, n, "handler_runs({action}) overshot");
    }

    /// GET /keys.
    pub async fn keys(&self) -> Value {
        let (st, k) = self.get("/keys").await;
        assert_eq!(st, 200, "GET /keys: {k}");
        k
    }

    /// The host:port of the current process.
    pub fn addr(&self) -> String {
        self.http().addr()
    }

    /// Send a request over a raw TCP connection ([`openexec_testkit::Http::raw_exchange`]).
    pub async fn raw_exchange(&self, head: String, body: Vec<u8>) -> (u16, Value) {
        self.http().raw_exchange(head, body).await
    }

    /// POST `body` with a Content-Length header, reading the answer while the body is still going
    /// out.
    pub async fn post_early(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        self.http().post_early(path, body).await
    }

    /// POST `body` in `chunk`-byte pieces with `Transfer-Encoding: chunked` (no declared length).
    pub async fn post_chunked(&self, path: &str, body: &[u8], chunk: usize) -> (u16, Value) {
        self.http().post_chunked(path, body, chunk).await
    }
}

#[allow(unused_imports)]
pub use openexec_testkit::metric;

/// `error.code` of an error answer ("" when absent).
pub fn code(body: &Value) -> &str {
    body.pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `detail` of an error answer ("" when absent).
pub fn detail(body: &Value) -> &str {
    body.get("detail").and_then(Value::as_str).unwrap_or("")
}

/// Check an evidence object offline, independently of the server's own verifier: the receipt
/// hashes (JCS, SHA-256) to `receipt_hash`, its key is one of `/keys`' receipt keys with
/// key_id = first 16 hex of SHA-256(raw key), and the signature covers
/// `openexec-receipt-v1:` ‖ receipt_hash.
pub fn check_evidence(ev: &Value, keys: &Value) -> Result<(), String> {
    let receipt = ev.get("receipt").ok_or("no receipt")?;
    let rh = ev
        .get("receipt_hash")
        .and_then(Value::as_str)
        .ok_or("no receipt_hash")?;
    if jcs_sha256(receipt) != rh {
        return Err(format!(
            "receipt_hash {rh} is not H(JCS(receipt)) = {}",
            jcs_sha256(receipt)
        ));
    }
    let kid = ev
        .get("key_id")
        .and_then(Value::as_str)
        .ok_or("no key_id")?;
    let sig = ev
        .get("signature")
        .and_then(Value::as_str)
        .ok_or("no signature")?;
    let key = keys["receipt_keys"]
        .as_array()
        .ok_or("no receipt_keys")?
        .iter()
        .find(|k| k["key_id"] == kid)
        .ok_or_else(|| format!("key {kid} is not published in /keys"))?;
    let pk = parse_verifying_key(key["public_key"].as_str().unwrap_or_default())
        .map_err(|e| format!("public_key: {e}"))?;
    if sha256_hex(pk.as_bytes())[..16] != *kid {
        return Err(format!(
            "key_id {kid} is not the first 16 hex of H(raw key)"
        ));
    }
    let mut msg = b"openexec-receipt-v1:".to_vec();
    msg.extend_from_slice(rh.as_bytes());
    if !verify_b64(&pk, &msg, sig) {
        return Err("signature does not verify".into());
    }
    Ok(())
}

/// Run the `openexec` CLI with these arguments (no inherited OPENEXEC_* / CLAWSHIELD_*).
pub fn cli(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("OPENEXEC_") || k.starts_with("CLAWSHIELD_") {
            cmd.env_remove(&k);
        }
    }
    cmd.output().expect("run openexec")
}

/// Exit code of a CLI run (-1 when killed by a signal).
pub fn exit_code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A v0-style naive UTC timestamp as Python's `datetime.utcnow().isoformat()` writes it.
pub fn py_naive(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The ClawShield test key of the vectors (seed from legacy_v0.json).
pub fn vector_signing_key() -> openexec_core::keys::SigningKey {
    let v = load_vector("legacy_v0.json");
    let hex = v["private_key_seed_hex"].as_str().expect("seed hex");
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    openexec_core::keys::signing_key_from_seed(seed)
}

/// The environment of a clawshield-mode server that trusts the vectors' key, tenant-001.
pub fn clawshield_env(pem: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OPENEXEC_MODE", "clawshield".to_string()),
        ("CLAWSHIELD_PUBLIC_KEY", pem.to_string()),
        ("CLAWSHIELD_TENANT_ID", "tenant-001".to_string()),
    ]
}

/// A clawshield-mode server trusting the vectors' key for tenant-001 ([`clawshield_env`]),
/// with `extra` settings on top.
pub fn clawshield_server(extra: &[(&str, &str)]) -> Server {
    let v = load_vector("legacy_v0.json");
    let env = clawshield_env(v["public_key_pem"].as_str().expect("public_key_pem"));
    let mut e = env_ref(&env);
    e.extend_from_slice(extra);
    Server::start(&e)
}

/// Borrow a `(&str, String)` list as the `(&str, &str)` list `Server::start` takes.
pub fn env_ref<'a>(env: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Evidence without its `inclusion`: what stays the same before and after a checkpoint covers a
/// receipt (replays and lookups made later may carry the proof; the receipt part never changes).
pub fn sans_inclusion(ev: &Value) -> Value {
    let mut v = ev.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("inclusion");
    }
    v
}

/// A running `openexec ledger serve` in a fresh data directory with its own SQLite database,
/// watching no log (for its HTTP side); killed when dropped.
pub struct LedgerServer {
    proc: Process,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub client: reqwest::Client,
}

impl LedgerServer {
    /// Start with these environment variables (no inherited CLAWLEDGER_*) on top of a free
    /// loopback port, the fresh directory and a SQLite database in it; panics with the log if it
    /// does not come up.
    pub fn start(env: &[(&str, &str)]) -> LedgerServer {
        LedgerServer::try_start_with(&[], env, true).unwrap_or_else(|f| {
            panic!(
                "ledger did not start (status {:?}); log:\n{}",
                f.status, f.log
            )
        })
    }

    /// Start with these flags and environment variables only (no inherited CLAWLEDGER_*, and
    /// no default bind address, data directory or database: a config file may give them), in a
    /// fresh working directory; or say why it did not come up.
    pub fn try_start_bare(
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<LedgerServer, StartFailure> {
        LedgerServer::try_start_with(args, env, false)
    }

    fn try_start_with(
        args: &[&str],
        env: &[(&str, &str)],
        defaults: bool,
    ) -> Result<LedgerServer, StartFailure> {
        let mut spec = ProcessSpec::new(BIN, &["ledger", "serve"], "clawledger: listening on ")
            .args(args)
            .clear_env("CLAWLEDGER_")
            .log_file("ledger.log")
            .dir_prefix("clawledger-e2e-");
        if defaults {
            spec = spec
                .env("CLAWLEDGER_BIND", "127.0.0.1:0")
                .env("CLAWLEDGER_DATA_DIR", "{dir}")
                .env("CLAWLEDGER_DB_URL", "sqlite:///{dir}/clawledger.db");
        }
        let proc = Process::try_start(spec.envs(env))?;
        let http = Http::new(proc.base.clone());
        Ok(LedgerServer {
            base: http.base,
            client: http.client,
            proc,
        })
    }

    /// The host:port it listens on.
    pub fn addr(&self) -> String {
        Http::new(self.base.clone()).addr()
    }

    /// Its working (and default data) directory.
    pub fn dir(&self) -> &Path {
        self.proc.dir()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.proc.full_log()
    }
}
