//! # openexec-handler-command: the `command` handler kind (SPEC §10)
//!
//! An action of the registry file that runs a program: `argv` with `{field}` slots filled from
//! the payload, each filled element exactly one argument — never split, never seen by a shell,
//! because there is none — an environment cleared but for the variables named, no standard
//! input, standard output read as the result (I-JSON), optionally inside a bubblewrap sandbox.
//!
//! ```toml
//! [actions.convert]
//! kind = "command"
//! timeout_ms = 5000
//! [actions.convert.command]
//! argv = ["/usr/bin/convert-tool", "--from", "{from}", "--to={to}"]
//! env = ["LANG"]
//! sandbox = true
//! writable = ["/var/lib/convert/out"]
//! ```
//!
//! ## Settings (`[actions.<name>.command]`)
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `argv` | required | The program and its arguments, at least one element. `argv[0]` is an absolute path to an executable file (checked at start-up; never looked up on `PATH`, no slot). Any other element may hold `{field}` slots naming top-level payload fields; `{{` and `}}` are literal braces; an unterminated, empty or stray slot brace is a start-up error. |
//! | `env` | `[]` | Names of variables passed through from the service's own environment (those it has when the run starts). Everything else is cleared, `PATH` included unless named (in the sandbox, bwrap adds `PWD`: the working directory). |
//! | `cwd` | a fresh empty directory per run, removed afterwards | The working directory; relative to the registry file's folder when relative; must exist at start-up. |
//! | `sandbox` | `false` | Run under bubblewrap: no network (namespaces of its own), no capabilities, the file system read-only, fresh `/dev`, `/proc` and `/tmp`, only `writable` (and the per-run directory when `cwd` is not given) writable. Refused at start-up when the sandbox is not available here, with the reason. |
//! | `writable` | none | Paths bound read-write inside the sandbox; only with `sandbox = true`; each must exist at start-up. |
//! | `max_output_bytes` | 1048576 (1 MiB) | The most standard output read (1 to 1 GiB). Past it the process group is killed and the run fails. |
//!
//! `effects` defaults to true (a command is assumed to change something). Receipts name
//! `command:<action>` and the digest of the action's config entry.
//!
//! ## A run
//!
//! [`Handler::validate`] refuses, before anything is claimed, a payload that cannot fill every
//! slot: not an object (when there are slots), a slot's field missing, not a string, number or
//! boolean (numbers and booleans fill as their canonical JSON text, RFC 8785: `1.0` as `1`), a string holding NUL, or text longer
//! than one argument may be (128 KiB) — one [`Violation`] per field.
//!
//! The program starts in a process group of its own with standard input `/dev/null`. Standard
//! error is read (its first 64 KiB kept) and logged at `warn` when the run fails; it never goes
//! into an error message or receipt, since it may hold secrets. The whole process group —
//! children and grandchildren — is killed with `SIGKILL` when the deadline passes, when the run
//! is cancelled, when the output is too large, when the run's future is dropped (the engine
//! drops it at its own deadline), and also once the program has exited, so nothing it started
//! outlives its run. (A process that leaves the group on purpose, with `setsid` or `setpgid`,
//! escapes the kill unless sandboxed — in the sandbox, killing bubblewrap ends its whole pid
//! namespace — and if it keeps stdout open, the run waits for it until the deadline.)
//!
//! | outcome | receipt |
//! | --- | --- |
//! | exit 0, stdout I-JSON | executed, the parsed stdout is the result |
//! | exit 0, stdout not I-JSON (empty, text, duplicate keys, …) | failed `command_bad_output` |
//! | non-zero exit, or killed by a signal | failed `command_exit` (the message names the status or signal) |
//! | stdout beyond `max_output_bytes` | failed `command_output_too_large` |
//! | the deadline passed | interrupted `outcome_unknown` (it may have taken effect); failed `command_timeout` when the action has `effects = false` |
//! | cancelled (service shutting down) | interrupted `outcome_unknown`; failed `command_cancelled` when `effects = false` |
//! | the program cannot be started | failed `command_spawn_failed` |
//! | a slot cannot be filled at run time (validation skipped) | failed `invalid_payload` |
//!
//! What it leaves to others: the payload's schema and the registry file itself are the loader's
//! (`openexec-actions`); claims, receipts and the engine's own cut-off at the deadline are the
//! execution service's.
//!
//! `/health` ([`Kind::health`]) says whether the sandbox is available: bubblewrap is looked
//! for at `/usr/bin/bwrap`, then on `PATH`, and probed once by running `/bin/true` under the
//! same isolation a run gets (bwrap may be installed yet unable to create namespaces in a
//! container).
//!
//! *Invariant:* no shell and no splitting anywhere: the filled elements go to `execve` as they
//! are; a slot is never allowed in `argv[0]`.
#![forbid(unsafe_code)]

mod process;
mod sandbox;
mod settings;
mod template;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use openexec_handler::{
    Handler, HandlerError, HandlerFuture, Invalid, Invocation, Kind, Spec, Violation,
};
use serde_json::Value;

pub use settings::{DEFAULT_MAX_OUTPUT_BYTES, MAX_OUTPUT_BYTES_LIMIT};

use process::{Ended, Launch, ReadError};
use sandbox::Availability;
use settings::Config;

/// The `command` kind of the registry file (`kind = "command"`).
pub struct CommandKind;

impl Kind for CommandKind {
    fn name(&self) -> &'static str {
        "command"
    }

    /// A command is assumed to change something: true.
    fn default_effects(&self, _settings: &Value) -> bool {
        true
    }

    fn build(&self, spec: &Spec<'_>) -> Result<Arc<dyn Handler>, String> {
        build_with(spec, &|| sandbox::system().clone())
    }

    /// `{"sandbox": {"available": true, "bwrap": path}}` or
    /// `{"sandbox": {"available": false, "reason": …}}`.
    fn health(&self) -> Option<Value> {
        Some(sandbox::system().health())
    }
}

/// [`CommandKind::build`] with the sandbox's availability given (tests point it elsewhere).
pub(crate) fn build_with(
    spec: &Spec<'_>,
    sandbox: &dyn Fn() -> Availability,
) -> Result<Arc<dyn Handler>, String> {
    let config = settings::check(spec, sandbox)?;
    Ok(Arc::new(CommandHandler {
        name: format!("command:{}", spec.action),
        digest: spec.digest.to_string(),
        effects: spec.effects,
        timeout: spec.timeout,
        config,
    }))
}

struct CommandHandler {
    name: String,
    digest: String,
    effects: bool,
    timeout: Duration,
    config: Config,
}

impl CommandHandler {
    /// The filled argv (after `argv[0]`), or the problem of each field that cannot fill it.
    fn fill(&self, payload: &Value) -> Result<Vec<String>, Invalid> {
        let c = &self.config;
        if c.fields.is_empty() {
            return Ok(c
                .args
                .iter()
                .map(|t| t.literal().unwrap_or_default())
                .collect());
        }
        let Value::Object(map) = payload else {
            let message = format!(
                "{} fills its arguments from the payload's fields ({}), so the payload must be an object; got {}",
                self.name,
                c.fields.join(", "),
                openexec_handler::slots::kind_of(payload)
            );
            return Err(Invalid {
                message: message.clone(),
                details: vec![Violation {
                    path: String::new(),
                    rule: "type".into(),
                    message,
                }],
            });
        };
        let mut details: Vec<Violation> = c
            .fields
            .iter()
            .filter_map(|f| template::field_text(map, f).err())
            .map(|p| Violation {
                path: openexec_handler::slots::pointer(&p.field),
                rule: p.rule.into(),
                message: p.message,
            })
            .collect();
        let mut args = Vec::with_capacity(c.args.len());
        if details.is_empty() {
            for t in &c.args {
                match t.fill(map) {
                    Ok(a) => args.push(a),
                    Err(p) => details.push(Violation {
                        path: openexec_handler::slots::pointer(&p.field),
                        rule: p.rule.into(),
                        message: p.message,
                    }),
                }
            }
        }
        if details.is_empty() {
            return Ok(args);
        }
        let message = format!(
            "the payload cannot fill the arguments of {}: {}",
            self.name,
            details
                .iter()
                .map(|v| v.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
        Err(Invalid { message, details })
    }

    /// A run cut off by its deadline or cancellation: it may have taken effect, unless the
    /// action says it has none.
    fn cut_off(&self, what: &str, code: &str) -> HandlerError {
        if self.effects {
            HandlerError::outcome_unknown(format!(
                "{} {what}; its processes were killed, and it may have taken effect",
                self.name
            ))
        } else {
            HandlerError::new(
                code,
                format!("{} {what}; its processes were killed", self.name),
            )
        }
    }

    fn log_stderr(&self, why: &str, stderr: &process::Captured) {
        if stderr.bytes.is_empty() {
            tracing::warn!(handler = %self.name, "{why}; the command wrote nothing to stderr");
        } else {
            tracing::warn!(
                handler = %self.name,
                stderr = %String::from_utf8_lossy(&stderr.bytes),
                truncated = stderr.truncated,
                "{why}; the command's stderr follows"
            );
        }
    }

    async fn execute(&self, inv: &Invocation<'_>) -> Result<Value, HandlerError> {
        let args = self
            .fill(inv.payload)
            .map_err(|e| HandlerError::new("invalid_payload", e.message))?;
        let timeout_ms = self.timeout.as_millis();
        if tokio::time::Instant::now() >= inv.deadline {
            return Err(HandlerError::new(
                "command_timeout",
                format!(
                    "{}: the deadline passed before the command started",
                    self.name
                ),
            ));
        }
        if inv.cancel.is_cancelled() {
            return Err(HandlerError::new(
                "command_cancelled",
                format!("{}: cancelled before the command started", self.name),
            ));
        }
        let c = &self.config;
        let spawn_failed = |e: std::io::Error| {
            HandlerError::new(
                "command_spawn_failed",
                format!("{}: cannot start {}: {e}", self.name, c.program.display()),
            )
        };
        // Declared before the run: removed after its processes are killed.
        let scratch = match &c.cwd {
            Some(_) => None,
            None => Some(
                tempfile::Builder::new()
                    .prefix("openexec-command-")
                    .tempdir()
                    .map_err(|e| {
                        HandlerError::new(
                            "command_spawn_failed",
                            format!(
                                "{}: cannot create the run's working directory: {e}",
                                self.name
                            ),
                        )
                    })?,
            ),
        };
        let cwd = match (&c.cwd, &scratch) {
            (Some(d), _) => d.clone(),
            (None, Some(t)) => t.path().to_path_buf(),
            (None, None) => std::env::temp_dir(),
        };
        let env: Vec<(String, OsString)> = c
            .env
            .iter()
            .filter_map(|k| std::env::var_os(k).map(|v| (k.clone(), v)))
            .collect();
        let launch = match &c.sandbox {
            None => Launch {
                program: c.program.clone(),
                args: args.into_iter().map(OsString::from).collect(),
                env,
                cwd,
                max_output_bytes: c.max_output_bytes,
            },
            Some(s) => {
                let mut all = sandbox::args(&sandbox::Binds {
                    program: &c.program,
                    cwd: &cwd,
                    cwd_writable: scratch.is_some(),
                    writable: &s.writable,
                });
                all.push(c.program.clone().into());
                all.extend(args.into_iter().map(OsString::from));
                Launch {
                    program: s.bwrap.clone(),
                    args: all,
                    env,
                    cwd: "/".into(),
                    max_output_bytes: c.max_output_bytes,
                }
            }
        };
        let ended = process::run(launch, inv.deadline, &inv.cancel)
            .await
            .map_err(spawn_failed)?;
        drop(scratch);
        match ended {
            Ended::TimedOut => Err(self.cut_off(
                &format!("did not finish within its timeout of {timeout_ms} ms"),
                "command_timeout",
            )),
            Ended::Cancelled => {
                Err(self.cut_off("was cancelled before it finished", "command_cancelled"))
            }
            Ended::Exited {
                status,
                stdout,
                stderr,
            } => {
                let out = match stdout {
                    Err(ReadError::TooLarge) => {
                        self.log_stderr("output too large", &stderr);
                        return Err(HandlerError::new(
                            "command_output_too_large",
                            format!(
                                "{} wrote more than {} bytes to stdout (max_output_bytes); its processes were killed",
                                self.name, c.max_output_bytes
                            ),
                        ));
                    }
                    Err(ReadError::Io(e)) => {
                        self.log_stderr("stdout unreadable", &stderr);
                        return Err(HandlerError::new(
                            "command_bad_output",
                            format!("{}: cannot read its stdout: {e}", self.name),
                        ));
                    }
                    Ok(out) => out,
                };
                let status = match status {
                    Ok(s) => s,
                    Err(e) => {
                        self.log_stderr("exit status unknown", &stderr);
                        let what = format!("ended in a way that cannot be told ({e})");
                        return Err(self.cut_off(&what, "command_exit"));
                    }
                };
                if !status.success() {
                    self.log_stderr("the command failed", &stderr);
                    let mut message =
                        format!("{} failed: {}", self.name, process::describe(&status));
                    if c.sandbox.is_some() && status.code().is_some_and(|n| n > 128) {
                        message.push_str(" (in the sandbox, 128+N is signal N)");
                    }
                    return Err(HandlerError::new("command_exit", message));
                }
                match openexec_core::json::parse_ijson(&out, openexec_core::json::DEFAULT_MAX_DEPTH)
                {
                    Ok(v) => Ok(v),
                    Err(e) => {
                        self.log_stderr("stdout is not I-JSON", &stderr);
                        Err(HandlerError::new(
                            "command_bad_output",
                            format!(
                                "{} exited 0 but its stdout ({} bytes) is not I-JSON: {e}",
                                self.name,
                                out.len()
                            ),
                        ))
                    }
                }
            }
        }
    }
}

impl Handler for CommandHandler {
    fn name(&self) -> &str {
        &self.name
    }

    fn digest(&self) -> &str {
        &self.digest
    }

    fn effects(&self) -> bool {
        self.effects
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn validate(&self, payload: &Value) -> Result<(), Invalid> {
        self.fill(payload).map(|_| ())
    }

    fn run<'a>(&'a self, inv: &'a Invocation<'a>) -> HandlerFuture<'a> {
        Box::pin(self.execute(inv))
    }
}
