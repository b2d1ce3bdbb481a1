//! `openexec dev` under test: the whole stack (ClawShield, OpenExec, ClawLedger as its child
//! processes) in a fresh directory, in a process group of its own, stopped as a user stops it
//! (SIGINT to the group, Ctrl-C) and checked to have exited.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, test_kill_process_group, Pid, Signal};
use serde_json::Value;

use super::BIN;

/// A running `openexec dev --dir <work>/.openexec-dev` (the README's default folder name, in a
/// temporary working directory); its whole group is killed when dropped without [`Dev::stop`].
pub struct Dev {
    child: Option<Child>,
    /// The working directory `openexec dev` was started in.
    pub work: tempfile::TempDir,
    /// `dev.json` as it wrote it.
    pub json: Value,
}

/// The folder `openexec dev` writes, under the working directory (its default, `./.openexec-dev`).
pub const DEV_DIR: &str = ".openexec-dev";

impl Dev {
    /// Start it and wait until it wrote `dev.json` (all three answer `/ready`); panics with its
    /// output if it does not come up.
    pub fn start() -> Dev {
        let work = tempfile::Builder::new()
            .prefix("openexec-dev-e2e-")
            .tempdir()
            .expect("a temporary directory");
        let log = std::fs::File::create(work.path().join("dev.log")).expect("dev.log");
        let mut cmd = Command::new(BIN);
        cmd.args(["dev", "--dir", DEV_DIR])
            .current_dir(work.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dev.log"))
            .stderr(log)
            .process_group(0);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if ["OPENEXEC_", "CLAWSHIELD_", "CLAWLEDGER_"]
                .iter()
                .any(|p| k.starts_with(p))
            {
                cmd.env_remove(&k);
            }
        }
        let child = cmd.spawn().expect("start openexec dev");
        let mut dev = Dev {
            child: Some(child),
            work,
            json: Value::Null,
        };
        let file = dev.dir().join("dev.json");
        let until = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    dev.json = v;
                    return dev;
                }
            }
            let child = dev.child.as_mut().expect("running");
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "openexec dev exited ({st}) before writing dev.json:\n{}",
                    dev.log()
                );
            }
            assert!(
                Instant::now() < until,
                "openexec dev wrote no dev.json within 180 s:\n{}",
                dev.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The folder it writes (`dev.json`, keys, logs, databases).
    pub fn dir(&self) -> PathBuf {
        self.work.path().join(DEV_DIR)
    }

    /// A path of dev.json (`keys/alice.pem`) made absolute.
    pub fn path(&self, rel: &str) -> PathBuf {
        let p = Path::new(rel);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir().join(p)
        }
    }

    /// A URL of dev.json (`"openexec"`, `"clawshield"`, `"clawledger"`), without a trailing `/`.
    pub fn url(&self, service: &str) -> String {
        self.json[service]
            .as_str()
            .unwrap_or_else(|| panic!("dev.json has no {service}"))
            .trim_end_matches('/')
            .to_string()
    }

    /// A string of dev.json's `keys`.
    pub fn key(&self, name: &str) -> String {
        self.json["keys"][name]
            .as_str()
            .unwrap_or_else(|| panic!("dev.json has no keys.{name}"))
            .to_string()
    }

    /// The approver `id` of dev.json: (token, absolute key file).
    pub fn approver(&self, id: &str) -> (String, PathBuf) {
        let a = self.json["approvers"]
            .as_array()
            .and_then(|v| v.iter().find(|a| a["id"] == id))
            .unwrap_or_else(|| panic!("dev.json has no approver {id}"));
        (
            a["token"].as_str().expect("token").to_string(),
            self.path(a["key_file"].as_str().expect("key_file")),
        )
    }

    /// Its output, and the logs of the three services.
    pub fn log(&self) -> String {
        let mut out = std::fs::read_to_string(self.work.path().join("dev.log")).unwrap_or_default();
        for name in ["clawshield", "openexec", "clawledger"] {
            let text =
                std::fs::read_to_string(self.dir().join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("\n--- {name}.log (last lines) ---\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Ctrl-C: SIGINT to its process group; wait (at most 30 s) until it exited; its status.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = Pid::from_child(&child);
        kill_process_group(pid, Signal::INT).expect("SIGINT to the group of openexec dev");
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().expect("wait for openexec dev") {
                // It waits for its three children before it exits: nothing of its group is left.
                let until = Instant::now() + Duration::from_secs(5);
                while test_kill_process_group(pid).is_ok() {
                    if Instant::now() > until {
                        let _ = kill_process_group(pid, Signal::KILL);
                        panic!(
                            "openexec dev exited ({st}) but left processes behind:\n{}",
                            self.log()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                return st;
            }
            if Instant::now() > until {
                let _ = kill_process_group(pid, Signal::KILL);
                let _ = child.wait();
                panic!(
                    "openexec dev did not exit within 30 s of SIGINT:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill_process_group(Pid::from_child(&child), Signal::KILL);
            let _ = child.wait();
        }
    }
}
