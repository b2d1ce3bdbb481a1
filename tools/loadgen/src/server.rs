//! Starting and stopping `openexec serve` (and `openexec shield serve`) on a fresh temporary
//! directory, and reading the CPU time of processes and threads from `/proc` (to show how the
//! two cores were shared).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The line the server prints once bound.
const LISTENING: &str = "openexec: listening on http://";
/// The line `openexec shield serve` prints once bound.
const SHIELD_LISTENING: &str = "clawshield: listening on http://";

/// A new temporary directory for one server's state.
pub fn new_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("openexec-load-")
        .tempdir()
        .context("cannot create a temporary directory")
}

/// `bin args…` run in `dir` with none of the caller's `OPENEXEC_*` and `CLAWSHIELD_*`
/// settings: nothing from the caller's environment may change what is measured (the log
/// levels `OPENEXEC_LOG` and `CLAWSHIELD_LOG` stay, as the caller's choice).
pub fn command<S: AsRef<std::ffi::OsStr>>(bin: &Path, args: &[S], dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let ours = k.starts_with("OPENEXEC_") || k.starts_with("CLAWSHIELD_");
        if ours && k != "OPENEXEC_LOG" && k != "CLAWSHIELD_LOG" {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.current_dir(dir).stdin(Stdio::null());
    cmd
}

/// A running `openexec serve` (or `openexec shield serve`, or a server of another kind started
/// with [`Server::spawn_at`]), stopped with SIGTERM when dropped if not before.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub pid: u32,
    /// The command line it was started with (for messages).
    pub command: String,
    stderr_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Server {
    /// Start `bin serve` in `mode` on a new temporary directory (data dir and SQLite database
    /// inside it), with `CLAWSHIELD_PUBLIC_KEY=clawshield_key` when given, and wait for it to
    /// print its listening line.
    pub fn start(bin: &Path, mode: &str, clawshield_key: Option<&str>) -> anyhow::Result<Server> {
        Server::start_with(bin, mode, clawshield_key, &[])
    }

    /// [`Server::start`] with `env` set last (so it can replace `OPENEXEC_DB_URL`, name key
    /// files, size the pool).
    pub fn start_with(
        bin: &Path,
        mode: &str,
        clawshield_key: Option<&str>,
        env: &[(&str, String)],
    ) -> anyhow::Result<Server> {
        let dir = new_dir()?;
        let mut cmd = command(bin, &["serve"], dir.path());
        cmd.env("OPENEXEC_BIND", "127.0.0.1:0")
            .env("OPENEXEC_MODE", mode)
            .env("OPENEXEC_DATA_DIR", dir.path().join("data"))
            .env(
                "OPENEXEC_DB_URL",
                format!("sqlite:///{}", dir.path().join("openexec.db").display()),
            )
            .env("CLAWSHIELD_TENANT_ID", "default");
        if let Some(k) = clawshield_key {
            cmd.env("CLAWSHIELD_PUBLIC_KEY", k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Server::launch(cmd, dir, LISTENING)
    }

    /// Start `bin shield serve` (ClawShield) on a new temporary directory (data dir and SQLite
    /// database `clawshield.db` inside it: WAL, `synchronous=FULL`, the server's defaults),
    /// with `env` (`CLAWSHIELD_*`) set last, and wait for its listening line.
    pub fn start_shield(bin: &Path, env: &[(&str, String)]) -> anyhow::Result<Server> {
        let dir = new_dir()?;
        let mut cmd = command(bin, &["shield", "serve"], dir.path());
        cmd.env("CLAWSHIELD_BIND", "127.0.0.1:0")
            .env("CLAWSHIELD_DATA_DIR", dir.path().join("data"))
            .env(
                "CLAWSHIELD_DB_URL",
                format!("sqlite:///{}", dir.path().join("clawshield.db").display()),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        Server::launch(cmd, dir, SHIELD_LISTENING)
    }

    /// Start `program args…` (made with [`command`] in `dir`, its working directory) with
    /// `env` set last, its stdout and stderr to `server.stdout` and `server.stderr` in `dir`, for
    /// a server that prints no listening line and listens on `addr`, which the caller chose (see
    /// [`free_port`]): the caller waits until it answers.
    pub fn spawn_at(
        mut cmd: Command,
        env: &[(&str, String)],
        dir: tempfile::TempDir,
        addr: SocketAddr,
    ) -> anyhow::Result<Server> {
        for (k, v) in env {
            cmd.env(k, v);
        }
        let stdout_path = dir.path().join("server.stdout");
        let stdout = std::fs::File::create(&stdout_path)
            .with_context(|| format!("cannot create {}", stdout_path.display()))?;
        let (child, stderr_path, command) = Server::spawn(cmd, dir.path(), Stdio::from(stdout))?;
        Ok(Server {
            pid: child.id(),
            child: Some(child),
            addr,
            command,
            stderr_path,
            dir,
        })
    }

    /// Spawn `cmd` with `stdout`, its stderr to `server.stderr` in `dir`: the child, the path
    /// of its stderr and its command line.
    fn spawn(
        mut cmd: Command,
        dir: &Path,
        stdout: Stdio,
    ) -> anyhow::Result<(Child, PathBuf, String)> {
        let stderr_path = dir.join("server.stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("cannot create {}", stderr_path.display()))?;
        cmd.stdout(stdout).stderr(Stdio::from(stderr));
        let command = crate::shell_words(
            std::iter::once(cmd.get_program())
                .chain(cmd.get_args())
                .map(|a| a.to_string_lossy().into_owned()),
        );
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{command}`"))?;
        Ok((child, stderr_path, command))
    }

    /// Spawn `cmd` (its stderr to `server.stderr` in `dir`) and wait for the stdout line that
    /// starts with `listening` and ends with its address.
    fn launch(
        cmd: Command,
        dir: tempfile::TempDir,
        listening: &'static str,
    ) -> anyhow::Result<Server> {
        let (mut child, stderr_path, command) = Server::spawn(cmd, dir.path(), Stdio::piped())?;
        let pid = child.id();
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        // Read the listening line, then keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix(listening) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid,
            command,
            stderr_path,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => {
                    server.addr = addr
                        .parse()
                        .with_context(|| format!("unexpected listening address {addr:?}"))?;
                    return Ok(server);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = server.exited() {
                        bail!(
                            "the server exited ({status}) before listening; its stderr:\n{}",
                            server.stderr_tail(40)
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Its stdout closed without the line: it is exiting (give it 5 s to).
                    let until = Instant::now() + Duration::from_secs(5);
                    let mut status = None;
                    while status.is_none() && Instant::now() < until {
                        status = server.exited();
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    bail!(
                        "the server closed its stdout without printing its listening line ({}); \
                         its stderr:\n{}",
                        status.map_or("still running".to_string(), |s| format!("exit: {s}")),
                        server.stderr_tail(40)
                    )
                }
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "the server printed no listening line within 60 s; its stderr:\n{}",
                    server.stderr_tail(40)
                ),
            }
        }
    }

    /// The temporary directory holding the server's state.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its `OPENEXEC_DATA_DIR` (where it generates its keys when none are given).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Its exit status if it has exited on its own, else `None` (still running, or stopped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `n` lines the server wrote to stderr.
    pub fn stderr_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Send SIGTERM (with `kill -TERM`) and wait for the server to exit (up to 30 s, then
    /// SIGKILL).
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("the server was already stopped");
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(status);
        }
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        if !matches!(sent, Ok(s) if s.success()) {
            let _ = child.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("the server did not stop within 30 s of SIGTERM; killed ({status})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago: bind port 0, read the port the kernel
/// chose, close it (for a server that must be told its port; another process could take it in
/// between, which then shows as that server failing to start).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot bind 127.0.0.1:0 to find a free port")?;
    Ok(l.local_addr()?.port())
}

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`, else the usual 100).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// `utime + stime` in clock ticks from the text of a `/proc/.../stat` file.
pub fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 overall are 12 and 13 after the name (state is the 1st here).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `cutime + cstime` in clock ticks from the text of a `/proc/<pid>/stat` file: the CPU of the
/// process's children that exited and were waited for (the programs a `command` action runs).
pub fn stat_child_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 16 and 17 overall.
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(cutime + cstime)
}

/// [`stat_child_ticks`] of process `pid`.
pub fn process_child_ticks(pid: u32) -> Option<u64> {
    stat_child_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Machine-wide CPU ticks from the first line of `/proc/stat`: (busy excluding softirq,
/// softirq). Busy = user + nice + system + irq + steal (guest time is inside user).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    machine_ticks_of(text.lines().next()?)
}

/// [`machine_ticks`] of one `cpu  …` line.
pub fn machine_ticks_of(line: &str) -> Option<(u64, u64)> {
    let f: Vec<u64> = line
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    Some((at(0) + at(1) + at(2) + at(5) + at(7), at(6)))
}

/// CPU ticks used so far by process `pid` (all its threads); "self" for this process.
pub fn process_ticks(pid: &str) -> Option<u64> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU ticks used so far by every process whose command name (`/proc/<pid>/comm`) is `comm`,
/// by pid (e.g. "postgres": the postmaster, its background workers and every backend).
pub fn comm_ticks(comm: &str) -> std::collections::HashMap<u32, u64> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if name.trim_end() != comm {
            continue;
        }
        if let Some(t) = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| stat_ticks(&s))
        {
            out.insert(pid, t);
        }
    }
    out
}

/// Ticks used between two [`comm_ticks`] snapshots: a process new in `after` counts from zero
/// (it started in between); one gone from `after` is not counted (its last ticks are lost).
pub fn ticks_delta(
    before: &std::collections::HashMap<u32, u64>,
    after: &std::collections::HashMap<u32, u64>,
) -> u64 {
    after
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

/// CPU ticks used so far by each thread of `pid`: (tid, thread name, ticks).
pub fn thread_ticks(pid: u32) -> Vec<(String, String, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let tid = e.file_name().to_string_lossy().to_string();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if let Some(t) = stat_ticks(&stat) {
            out.push((tid, name.trim().to_string(), t));
        }
    }
    out
}

/// CPU per thread name between two [`thread_ticks`] snapshots, largest first: (name, number
/// of threads, total seconds, seconds of the busiest thread).
pub fn thread_cpu_delta(
    before: &[(String, String, u64)],
    after: &[(String, String, u64)],
    ticks_per_sec: f64,
) -> Vec<(String, usize, f64, f64)> {
    let mut by_name: std::collections::BTreeMap<String, (u64, usize, u64)> = Default::default();
    for (tid, name, t) in after {
        let t0 = before
            .iter()
            .find(|(b, _, _)| b == tid)
            .map(|(_, _, t0)| *t0)
            .unwrap_or(0);
        let d = t.saturating_sub(t0);
        let e = by_name.entry(name.clone()).or_default();
        e.0 += d;
        e.1 += 1;
        e.2 = e.2.max(d);
    }
    let mut v: Vec<(String, usize, f64, f64)> = by_name
        .into_iter()
        .filter(|(_, (t, _, _))| *t > 0)
        .map(|(name, (t, n, max))| {
            (
                name,
                n,
                t as f64 / ticks_per_sec,
                max as f64 / ticks_per_sec,
            )
        })
        .collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2));
    v
}
