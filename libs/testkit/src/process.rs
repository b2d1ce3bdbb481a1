//! One harness for every service binary: start it in a fresh directory with a clean
//! environment, wait for its listening line, and stop it however a test needs.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a service may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run one service: which binary and arguments, which inherited environment to drop,
/// what to set, and the stdout line that says it listens (followed by its base URL).
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    pub bin: PathBuf,
    pub args: Vec<String>,
    /// Inherited variables starting with one of these are removed (the test's own environment
    /// must not configure the service under test).
    pub clear_env_prefixes: Vec<String>,
    /// Set in this order; `{dir}` in a value stands for the process's directory.
    pub env: Vec<(String, String)>,
    /// E.g. `openexec: listening on `; the rest of the line is the base URL.
    pub ready_prefix: String,
    /// The file in the directory that receives stderr.
    pub log_file: String,
    /// Prefix of the temporary directory's name.
    pub dir_prefix: String,
    /// The open-files limit (`ulimit -n`) to run under, when lowered.
    pub nofile: Option<u64>,
    /// Run in this directory (the test's, kept) instead of a fresh temporary one.
    pub workdir: Option<PathBuf>,
}

impl ProcessSpec {
    pub fn new(bin: impl Into<PathBuf>, args: &[&str], ready_prefix: &str) -> ProcessSpec {
        ProcessSpec {
            bin: bin.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            clear_env_prefixes: Vec::new(),
            env: Vec::new(),
            ready_prefix: ready_prefix.to_string(),
            log_file: "server.log".into(),
            dir_prefix: "openexec-e2e-".into(),
            nofile: None,
            workdir: None,
        }
    }

    pub fn clear_env(mut self, prefix: &str) -> ProcessSpec {
        self.clear_env_prefixes.push(prefix.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> ProcessSpec {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn envs(mut self, env: &[(&str, &str)]) -> ProcessSpec {
        for (k, v) in env {
            self.env.push((k.to_string(), v.to_string()));
        }
        self
    }

    pub fn log_file(mut self, name: &str) -> ProcessSpec {
        self.log_file = name.to_string();
        self
    }

    pub fn dir_prefix(mut self, prefix: &str) -> ProcessSpec {
        self.dir_prefix = prefix.to_string();
        self
    }

    pub fn nofile(mut self, n: Option<u64>) -> ProcessSpec {
        self.nofile = n;
        self
    }

    pub fn args(mut self, args: &[&str]) -> ProcessSpec {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Run in `dir` (kept after the process ends) instead of a fresh temporary directory.
    pub fn workdir(mut self, dir: &Path) -> ProcessSpec {
        self.workdir = Some(dir.to_path_buf());
        self
    }
}

/// Why a service did not come up.
#[derive(Debug)]
pub struct StartFailure {
    /// The exit status, when the process ended.
    pub status: Option<ExitStatus>,
    /// The service's log (stderr).
    pub log: String,
}

/// A running service in its own temporary directory (removed, and the process killed, when
/// dropped).
pub struct Process {
    dir: PathBuf,
    /// The temporary directory, when the process has its own (removed on drop).
    _tmp: Option<tempfile::TempDir>,
    spec: ProcessSpec,
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` of the current process.
    pub base: String,
    /// What it printed on stdout before its listening line.
    pub banner: Vec<String>,
}

impl Process {
    /// Start in a fresh directory; panics with the log if it does not come up.
    pub fn start(spec: ProcessSpec) -> Process {
        let what = spec.args.join(" ");
        Process::try_start(spec).unwrap_or_else(|f| {
            panic!(
                "{what} did not start (status {:?}); log:\n{}",
                f.status, f.log
            )
        })
    }

    /// Start in a fresh directory, or say why it did not come up.
    pub fn try_start(spec: ProcessSpec) -> Result<Process, StartFailure> {
        let (tmp, dir) = match &spec.workdir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix(&spec.dir_prefix)
                    .tempdir()
                    .expect("tempdir");
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let (child, base, banner) = spawn(&dir, &spec)?;
        Ok(Process {
            dir,
            _tmp: tmp,
            spec,
            child: Some(child),
            base,
            banner,
        })
    }

    /// Its directory (working directory, data, database and log).
    pub fn dir(&self) -> &Path {
        self.dir.as_path()
    }

    /// The last 6000 bytes of its log.
    pub fn log(&self) -> String {
        log_tail(&self.dir.as_path().join(&self.spec.log_file))
    }

    /// Its whole log.
    pub fn full_log(&self) -> String {
        std::fs::read_to_string(self.dir.as_path().join(&self.spec.log_file)).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process is running").id()
    }

    /// Start again on the same directory (a new port); kills the previous process first if it
    /// still runs.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let (child, base, banner) = spawn(&self.dir, &self.spec).unwrap_or_else(|f| {
            panic!(
                "{} did not restart (status {:?}); log:\n{}",
                self.spec.args.join(" "),
                f.status,
                f.log
            )
        });
        self.child = Some(child);
        self.base = base;
        self.banner = banner;
    }

    /// SIGKILL the process and reap it.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("process is running");
        c.kill().expect("SIGKILL");
        c.wait().expect("wait after SIGKILL");
    }

    /// SIGTERM the process and wait (at most 30 s) for it to exit; its exit status.
    pub fn term(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("process is running");
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
                panic!("did not exit within 30 s of SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut i = text.len().saturating_sub(6000);
    while !text.is_char_boundary(i) {
        i += 1;
    }
    text[i..].to_string()
}

fn spawn(dir: &Path, spec: &ProcessSpec) -> Result<(Child, String, Vec<String>), StartFailure> {
    let log_path = dir.join(&spec.log_file);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("open the log file");
    let mut cmd = match spec.nofile {
        None => Command::new(&spec.bin),
        // The shell lowers its limit and then becomes the service (same pid).
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(&spec.bin);
            c
        }
    };
    cmd.args(&spec.args).current_dir(dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if spec.clear_env_prefixes.iter().any(|p| k.starts_with(p)) {
            cmd.env_remove(&k);
        }
    }
    let shown = dir.display().to_string();
    for (k, v) in &spec.env {
        cmd.env(k, v.replace("{dir}", &shown));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", spec.bin.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let mut banner = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => match line.strip_prefix(&spec.ready_prefix) {
                Some(url) => return Ok((child, url.trim().to_string(), banner)),
                None => banner.push(line),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(StartFailure {
                    status,
                    log: format!(
                        "(no listening line within {START_TIMEOUT:?})\n{}",
                        log_tail(&log_path)
                    ),
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed: the process is ending.
                let status = child.wait().ok();
                return Err(StartFailure {
                    status,
                    log: log_tail(&log_path),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in service: a shell that prints a banner and a listening line, then waits.
    fn sh(script: &str) -> ProcessSpec {
        let mut s = ProcessSpec::new("sh", &["-c", script], "fake: listening on ");
        s.clear_env_prefixes.push("OPENEXEC_TESTKIT_".into());
        s.env("OPENEXEC_TESTKIT_DIR", "{dir}/x")
    }

    #[test]
    fn starts_reads_the_banner_and_stops() {
        let mut p = Process::start(sh(
            "echo banner; echo \"$OPENEXEC_TESTKIT_DIR\" >&2; echo 'fake: listening on http://127.0.0.1:1'; exec sleep 30",
        ));
        assert_eq!(p.base, "http://127.0.0.1:1");
        assert_eq!(p.banner, vec!["banner".to_string()]);
        let want = format!("{}/x", p.dir().display());
        crate::eventually_blocking(Duration::from_secs(5), "the log has the directory", || {
            p.log().contains(&want).then_some(())
        });
        let st = p.term();
        assert!(!st.success());
        p.restart();
        p.kill9();
    }

    #[test]
    fn a_process_that_exits_is_a_start_failure_with_its_log() {
        let f = match Process::try_start(sh("echo broken >&2; exit 3")) {
            Err(f) => f,
            Ok(_) => panic!("a process that exits started"),
        };
        assert_eq!(f.status.and_then(|s| s.code()), Some(3));
        assert!(f.log.contains("broken"), "{}", f.log);
    }
}
