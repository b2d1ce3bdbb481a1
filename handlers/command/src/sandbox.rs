//! The sandbox: bubblewrap (`bwrap`), found, probed once, and the arguments a run gets.
//!
//! A sandboxed run is `bwrap <isolation> -- argv…`: every namespace bwrap can unshare (the
//! network above all: only a loopback of its own), no capabilities (so root inside cannot
//! remount anything), the whole file system read-only, a fresh `/dev`, `/proc` and `/tmp`, and
//! only the `writable` paths (and the run's own scratch directory) bound read-write. bwrap dies
//! with its parent, the command runs in a session of its own (no terminal to inject into), and
//! since the command is the pid namespace's only tree, killing bwrap ends all of it.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where Debian's `bubblewrap` package puts it; otherwise it is looked for on `PATH`.
pub(crate) const BWRAP: &str = "/usr/bin/bwrap";

/// How long the probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether runs can be sandboxed here, and with which bwrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Availability {
    Available(PathBuf),
    /// Why not, for `/health` and for the action that asks for the sandbox.
    Unavailable(String),
}

impl Availability {
    pub(crate) fn health(&self) -> serde_json::Value {
        match self {
            Availability::Available(p) => serde_json::json!({
                "sandbox": {"available": true, "bwrap": p.display().to_string()}
            }),
            Availability::Unavailable(reason) => serde_json::json!({
                "sandbox": {"available": false, "reason": reason}
            }),
        }
    }
}

/// The sandbox of this process: bwrap located and probed on first use, then remembered.
pub(crate) fn system() -> &'static Availability {
    static SYSTEM: OnceLock<Availability> = OnceLock::new();
    SYSTEM.get_or_init(|| match locate() {
        Some(path) => probe(&path),
        None => Availability::Unavailable(format!(
            "bubblewrap (bwrap) is neither at {BWRAP} nor on PATH; install the bubblewrap package"
        )),
    })
}

fn locate() -> Option<PathBuf> {
    let fixed = Path::new(BWRAP);
    if fixed.is_file() {
        return Some(fixed.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_absolute() && p.is_file())
}

/// Whether `bwrap` at `path` really sandboxes here: it may be installed yet unable to create
/// namespaces (a container without the privilege, a kernel that forbids it). Runs
/// `/bin/true` under exactly the isolation a run gets.
pub(crate) fn probe(path: &Path) -> Availability {
    let unavailable = |why: String| Availability::Unavailable(format!("{}: {why}", path.display()));
    if !path.is_file() {
        return unavailable("no such file".into());
    }
    let Some(truth) = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        return unavailable("no /bin/true to probe the sandbox with".into());
    };
    let mut args = isolation();
    args.extend(["--chdir".into(), "/".into(), "--".into(), truth.into()]);
    let mut child = match Command::new(path)
        .args(&args)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return unavailable(format!("cannot start it: {e}")),
    };
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return unavailable(format!(
                    "running /bin/true under it did not finish within {} s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return unavailable(format!("cannot wait for it: {e}")),
        }
    };
    if status.success() {
        return Availability::Available(path.to_path_buf());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.by_ref().take(2048).read_to_string(&mut stderr);
    }
    let said = stderr.trim();
    unavailable(format!(
        "running /bin/true under it failed ({status}){}",
        if said.is_empty() {
            String::new()
        } else {
            format!(": {said}")
        }
    ))
}

/// The isolation every sandboxed run gets, before its own binds.
fn isolation() -> Vec<OsString> {
    [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

/// What one sandboxed run binds.
pub(crate) struct Binds<'a> {
    pub(crate) program: &'a Path,
    pub(crate) cwd: &'a Path,
    /// The cwd is the run's own scratch directory, writable.
    pub(crate) cwd_writable: bool,
    pub(crate) writable: &'a [PathBuf],
}

/// bwrap's arguments up to and including `--`; the command's argv follows.
pub(crate) fn args(b: &Binds<'_>) -> Vec<OsString> {
    let mut a = isolation();
    let mut bind = |flag: &str, p: &Path| {
        a.push(flag.into());
        a.push(p.into());
        a.push(p.into());
    };
    // `/tmp` is a fresh tmpfs inside: what the run needs from the host's /tmp is bound back.
    let hidden = |p: &Path| p.starts_with("/tmp");
    if hidden(b.program) {
        bind("--ro-bind", b.program);
    }
    if b.cwd_writable {
        bind("--bind", b.cwd);
    } else if hidden(b.cwd) {
        bind("--ro-bind", b.cwd);
    }
    for w in b.writable {
        bind("--bind", w);
    }
    a.push("--chdir".into());
    a.push(b.cwd.into());
    a.push("--".into());
    a
}
