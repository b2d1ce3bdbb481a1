//! Shared harness for the black-box tests: start the real `openexec serve` binary on a free port
//! with its own data directory and database, talk to it over HTTP, stop it (SIGTERM or SIGKILL),
//! start it again on the same state, and check evidence offline.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use openexec_core::json::{jcs_sha256, sha256_hex};
use openexec_core::keys::{parse_verifying_key, verify_b64};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_openexec");

/// How long a server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A running `openexec serve` with its own data directory (removed when the `Server` is dropped).
pub struct Server {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// The open-files limit (`ulimit -n`) the process runs under, when lowered.
    nofile: Option<u64>,
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` of the current process.
    pub base: String,
    pub client: reqwest::Client,
}

/// Why a server did not come up.
#[derive(Debug)]
pub struct StartFailure {
    /// The exit status, when the process ended.
    pub status: Option<ExitStatus>,
    /// The server log (stderr).
    pub log: String,
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let start = text.len().saturating_sub(6000);
    let mut i = start;
    while !text.is_char_boundary(i) {
        i += 1;
    }
    text[i..].to_string()
}

fn spawn(
    dir: &Path,
    env: &[(String, String)],
    nofile: Option<u64>,
) -> Result<(Child, String), StartFailure> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("open server.log");
    let mut cmd = match nofile {
        None => Command::new(BIN),
        // The shell lowers its limit and then becomes the server (same pid).
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(BIN);
            c
        }
    };
    cmd.arg("serve").current_dir(dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("OPENEXEC_") || k.starts_with("CLAWSHIELD_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("OPENEXEC_BIND", "127.0.0.1:0")
        .env("OPENEXEC_DATA_DIR", dir)
        .env(
            "OPENEXEC_DB_URL",
            format!("sqlite:///{}", dir.join("openexec.db").display()),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = cmd.spawn().expect("spawn openexec serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    let _ = tx.send(l);
                }
                Err(_) => break,
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("openexec: listening on ") {
                    return Ok((child, url.trim().to_string()));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(StartFailure {
                    status,
                    log: format!(
                        "(no listening line within {START_TIMEOUT:?})\n{}",
                        log_tail(dir)
                    ),
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed: the process is ending.
                let status = child.wait().ok();
                return Err(StartFailure {
                    status,
                    log: log_tail(dir),
                });
            }
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

fn owned(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Server {
    /// Start a server in a fresh data directory; panics with the server log if it fails.
    pub fn start(env: &[(&str, &str)]) -> Server {
        Server::try_start(env).unwrap_or_else(|f| {
            panic!(
                "openexec serve did not start (status {:?}); log:\n{}",
                f.status, f.log
            )
        })
    }

    /// Start a server in a fresh data directory, or say why it did not come up.
    pub fn try_start(env: &[(&str, &str)]) -> Result<Server, StartFailure> {
        Server::try_start_with(env, None)
    }

    /// Start a server whose process may open at most `nofile` files (`ulimit -n`).
    pub fn start_with_fd_limit(env: &[(&str, &str)], nofile: u64) -> Server {
        Server::try_start_with(env, Some(nofile)).unwrap_or_else(|f| {
            panic!(
                "openexec serve did not start (status {:?}); log:\n{}",
                f.status, f.log
            )
        })
    }

    fn try_start_with(env: &[(&str, &str)], nofile: Option<u64>) -> Result<Server, StartFailure> {
        let dir = tempfile::Builder::new()
            .prefix("openexec-e2e-")
            .tempdir()
            .expect("tempdir");
        let env = owned(env);
        let (child, base) = spawn(dir.path(), &env, nofile)?;
        Ok(Server {
            dir,
            env,
            nofile,
            child: Some(child),
            base,
            client: client(),
        })
    }

    /// The data directory (it also holds `openexec.db` and `server.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("openexec.db")
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        log_tail(self.dir.path())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// Start again on the same data directory and database (a new port). Kills the previous
    /// process first if it is still running.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let (child, base) = spawn(self.dir.path(), &self.env, self.nofile).unwrap_or_else(|f| {
            panic!(
                "openexec serve did not restart (status {:?}); log:\n{}",
                f.status, f.log
            )
        });
        self.child = Some(child);
        self.base = base;
        // Connections to the old process are useless now.
        self.client = client();
    }

    /// SIGKILL the process and reap it.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("server is running");
        c.kill().expect("SIGKILL");
        c.wait().expect("wait after SIGKILL");
    }

    /// SIGTERM the process and wait (at most 30 s) for it to exit; its exit status.
    pub fn term(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("server is running");
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(ok.success(), "kill -TERM failed: {ok}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "server did not exit within 30 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POST a JSON value; (status, JSON body — or the text as a JSON string if it is not JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, serde_json::to_vec(body).expect("serialise"))
            .await
    }

    /// POST these exact bytes as `application/json`.
    pub async fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e:?}"));
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap_or_default();
        (status, to_json(&bytes))
    }

    /// POST /execute.
    pub async fn execute(&self, body: &Value) -> (u16, Value) {
        self.post("/execute", body).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (st, text) = self.get_text(path).await;
        (st, to_json(text.as_bytes()))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// `openexec_handler_runs_total{action="<action>"}` from /metrics; 0 when absent.
    pub async fn handler_runs(&self, action: &str) -> u64 {
        let (st, text) = self.get_text("/metrics").await;
        assert_eq!(st, 200, "GET /metrics: {text}");
        metric(
            &text,
            &format!("openexec_handler_runs_total{{action=\"{action}\"}}"),
        )
    }

    /// Poll `handler_runs(action)` until it reaches `n` (at most `within`).
    pub async fn wait_handler_runs(&self, action: &str, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.handler_runs(action).await;
            if got >= n {
                assert_eq!(got, n, "handler_runs({action}) overshot");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "handler_runs({action}) stayed at {got} (wanted {n}); log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET /keys.
    pub async fn keys(&self) -> Value {
        let (st, k) = self.get("/keys").await;
        assert_eq!(st, 200, "GET /keys: {k}");
        k
    }

    /// The host:port of the current process.
    pub fn addr(&self) -> String {
        self.base
            .strip_prefix("http://")
            .expect("http base")
            .to_string()
    }

    /// Send a request over a raw TCP connection, reading while writing (a server may answer
    /// before it has read the whole body, and then close). `head` is everything up to and
    /// including the blank line. Returns the status and the JSON body (0 when no HTTP answer came).
    pub async fn raw_exchange(&self, head: String, body: Vec<u8>) -> (u16, Value) {
        raw_exchange(&self.addr(), head, body).await
    }

    /// POST `body` with a Content-Length header, reading the answer while the body is still going
    /// out.
    pub async fn post_early(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr(),
            body.len()
        );
        self.raw_exchange(head, body).await
    }

    /// POST `body` in `chunk`-byte pieces with `Transfer-Encoding: chunked` (no declared length).
    pub async fn post_chunked(&self, path: &str, body: &[u8], chunk: usize) -> (u16, Value) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            self.addr()
        );
        let mut out = Vec::new();
        for c in body.chunks(chunk) {
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        self.raw_exchange(head, out).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn raw_exchange(addr: &str, head: String, body: Vec<u8>) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        // The server may stop reading and close: a write error here is expected then.
        if wr.write_all(head.as_bytes()).await.is_ok() {
            let _ = wr.write_all(&body).await;
        }
        // Keep the write half open until the reader is done.
        wr
    });
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if complete_response(&got) {
                    break;
                }
            }
        }
    }
    writer.abort();
    if !got.starts_with(b"HTTP/") {
        return (0, Value::String(String::from_utf8_lossy(&got).to_string()));
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    let body = match text.split_once("\r\n\r\n") {
        Some((_, b)) => to_json(b.as_bytes()),
        None => Value::Null,
    };
    (status, body)
}

/// A response with a Content-Length whose body has fully arrived.
fn complete_response(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let cl = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    matches!(cl, Some(n) if body.len() >= n)
}

fn to_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).to_string()))
}

/// The value of one Prometheus sample line (`name{labels} value`); 0 when absent.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            let v = rest.split_whitespace().next()?;
            v.parse::<f64>().ok()
        })
        .map(|v| v as u64)
        .unwrap_or(0)
}

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
    dir: tempfile::TempDir,
    child: Option<Child>,
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
        let dir = tempfile::Builder::new()
            .prefix("clawledger-e2e-")
            .tempdir()
            .expect("tempdir");
        let log_path = dir.path().join("ledger.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open ledger.log");
        let mut cmd = Command::new(BIN);
        cmd.args(["ledger", "serve"])
            .args(args)
            .current_dir(dir.path());
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("CLAWLEDGER_") {
                cmd.env_remove(&k);
            }
        }
        if defaults {
            cmd.env("CLAWLEDGER_BIND", "127.0.0.1:0")
                .env("CLAWLEDGER_DATA_DIR", dir.path())
                .env(
                    "CLAWLEDGER_DB_URL",
                    format!("sqlite:///{}", dir.path().join("clawledger.db").display()),
                );
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn openexec ledger serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("clawledger: listening on ") {
                        return Ok(LedgerServer {
                            base: url.trim().to_string(),
                            dir,
                            child: Some(child),
                            client: client(),
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    return Err(StartFailure {
                        status,
                        log: format!(
                            "(no listening line within {START_TIMEOUT:?})\n{}",
                            read_log()
                        ),
                    });
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is ending.
                    let status = child.wait().ok();
                    return Err(StartFailure {
                        status,
                        log: read_log(),
                    });
                }
            }
        }
    }

    /// The host:port it listens on.
    pub fn addr(&self) -> String {
        self.base
            .strip_prefix("http://")
            .expect("http base")
            .to_string()
    }

    /// Its working (and default data) directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("ledger is running").id()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ledger.log")).unwrap_or_default()
    }
}

impl Drop for LedgerServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
