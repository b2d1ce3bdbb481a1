//! One run of a command: spawned in a process group of its own, its output read under caps,
//! and the whole group killed when the run ends early — by its deadline, its cancellation, an
//! oversized output, or its future being dropped — and when the command exits, so nothing it
//! started outlives the run.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use openexec_handler::CancellationToken;
use rustix::process::{kill_process_group, Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How much of stderr is kept (for the log); the rest is read and dropped.
pub(crate) const STDERR_CAP: usize = 64 * 1024;

/// What to start.
pub(crate) struct Launch {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(String, OsString)>,
    /// The process's own working directory (bwrap's when sandboxed).
    pub(crate) cwd: PathBuf,
    pub(crate) max_output_bytes: usize,
}

/// How a run ended.
pub(crate) enum Ended {
    /// The command exited (or was killed by a signal it did not get from us).
    Exited {
        status: std::io::Result<ExitStatus>,
        stdout: Result<Vec<u8>, ReadError>,
        stderr: Captured,
    },
    /// `inv.deadline` passed: the group was killed.
    TimedOut,
    /// `inv.cancel` fired: the group was killed.
    Cancelled,
}

pub(crate) enum ReadError {
    /// More than `max_output_bytes`: the group was killed.
    TooLarge,
    Io(std::io::Error),
}

/// The start of stderr.
pub(crate) struct Captured {
    pub(crate) bytes: Vec<u8>,
    /// More was written than [`STDERR_CAP`].
    pub(crate) truncated: bool,
}

/// The command's process group. Dropping it kills the group unless the group was already
/// killed after the command exited.
struct Group {
    pgid: Pid,
    /// Killed after its leader exited: nothing of it is left to kill, and its id may no longer
    /// be ours.
    done: AtomicBool,
}

impl Group {
    fn kill(&self) {
        if !self.done.load(Ordering::SeqCst) {
            // ESRCH (nothing left) is fine; nothing else can fail for a group we started.
            let _ = kill_process_group(self.pgid, Signal::KILL);
        }
    }

    /// Kill what is left of the group once its leader has exited and been reaped, and never
    /// again. (Between the reap and this kill the group id is still held by any member left;
    /// when none is left, it could only be reused after the pid counter wrapped around.)
    fn kill_after_exit(&self) {
        self.kill();
        self.done.store(true, Ordering::SeqCst);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawn and run to the end, the deadline or the cancellation. `Err` is a spawn failure.
pub(crate) async fn run(
    launch: Launch,
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
) -> Result<Ended, std::io::Error> {
    let mut cmd = tokio::process::Command::new(&launch.program);
    cmd.args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd.spawn()?;
    let Some(pgid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw)
    else {
        // Cannot happen for a child just spawned; kill it and say so rather than run blind.
        let _ = child.start_kill();
        return Err(std::io::Error::other("the spawned process has no id"));
    };
    // Declared after `child`: dropped first, so the group is killed while the leader is not
    // yet reaped; tokio reaps a dropped child in the background.
    let group = Group {
        pgid,
        done: AtomicBool::new(false),
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let work = async {
        let wait = async {
            let status = child.wait().await;
            group.kill_after_exit();
            status
        };
        let out = async {
            let r = read_capped(stdout, launch.max_output_bytes).await;
            if matches!(r, Err(ReadError::TooLarge)) {
                group.kill();
            }
            r
        };
        let err = read_drain(stderr, STDERR_CAP);
        tokio::join!(wait, out, err)
    };

    let ended = tokio::select! {
        biased;
        (status, stdout, stderr) = work => Ended::Exited { status, stdout, stderr },
        () = tokio::time::sleep_until(deadline) => Ended::TimedOut,
        () = cancel.cancelled() => Ended::Cancelled,
    };
    // Timed out or cancelled: kill now, not only when `group` drops at the end of this scope.
    group.kill();
    Ok(ended)
}

async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin>,
    max: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    let Some(mut pipe) = pipe else {
        return Ok(buf);
    };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = pipe.read(&mut chunk).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Ok(buf);
        }
        if buf.len() + n > max {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Read to the end, keeping the first `cap` bytes, so a chatty stderr never blocks the command.
async fn read_drain(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> Captured {
    let mut c = Captured {
        bytes: Vec::new(),
        truncated: false,
    };
    let Some(mut pipe) = pipe else {
        return c;
    };
    let mut chunk = vec![0u8; 16 * 1024];
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = cap.saturating_sub(c.bytes.len());
        c.bytes.extend_from_slice(&chunk[..n.min(room)]);
        if n > room {
            c.truncated = true;
        }
    }
    c
}

/// How an exit status reads in a message: `exit status 3`, `killed by signal 9 (SIGKILL)`.
pub(crate) fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(sig) => match signal_name(sig) {
            Some(name) => format!("killed by signal {sig} ({name})"),
            None => format!("killed by signal {sig}"),
        },
        None => format!("{status}"),
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    let s = Signal::from_named_raw(sig)?;
    [
        (Signal::HUP, "SIGHUP"),
        (Signal::INT, "SIGINT"),
        (Signal::QUIT, "SIGQUIT"),
        (Signal::ILL, "SIGILL"),
        (Signal::TRAP, "SIGTRAP"),
        (Signal::ABORT, "SIGABRT"),
        (Signal::BUS, "SIGBUS"),
        (Signal::FPE, "SIGFPE"),
        (Signal::KILL, "SIGKILL"),
        (Signal::USR1, "SIGUSR1"),
        (Signal::SEGV, "SIGSEGV"),
        (Signal::USR2, "SIGUSR2"),
        (Signal::PIPE, "SIGPIPE"),
        (Signal::ALARM, "SIGALRM"),
        (Signal::TERM, "SIGTERM"),
        (Signal::XCPU, "SIGXCPU"),
        (Signal::XFSZ, "SIGXFSZ"),
        (Signal::SYS, "SIGSYS"),
    ]
    .into_iter()
    .find_map(|(k, name)| (k == s).then_some(name))
}
