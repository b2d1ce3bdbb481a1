//! `[actions.<name>.command]`: the settings as written, and the checked configuration a run
//! uses. Everything that can be checked at start-up is checked here, each error naming its key.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use openexec_handler::Spec;
use serde::Deserialize;

use crate::sandbox::Availability;
use crate::template::Template;

/// `max_output_bytes` when not given: 1 MiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1024 * 1024;

/// The largest `max_output_bytes` accepted: 1 GiB (a result is held in memory and stored).
pub const MAX_OUTPUT_BYTES_LIMIT: u64 = 1024 * 1024 * 1024;

/// The settings table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandSettings {
    argv: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    cwd: Option<String>,
    #[serde(default)]
    sandbox: bool,
    writable: Option<Vec<String>>,
    max_output_bytes: Option<u64>,
}

/// What a run needs, checked.
#[derive(Debug)]
pub(crate) struct Config {
    /// `argv[0]`, absolute, an executable file at start-up.
    pub(crate) program: PathBuf,
    /// `argv[1..]`.
    pub(crate) args: Vec<Template>,
    /// The payload fields the slots name, each once, in order of first use.
    pub(crate) fields: Vec<String>,
    /// Variables passed through from the service's environment.
    pub(crate) env: Vec<String>,
    /// The working directory, canonical; `None`: a fresh one per run.
    pub(crate) cwd: Option<PathBuf>,
    /// `Some` when sandboxed: bwrap's path and the writable paths (canonical).
    pub(crate) sandbox: Option<Sandboxed>,
    pub(crate) max_output_bytes: usize,
}

#[derive(Debug)]
pub(crate) struct Sandboxed {
    pub(crate) bwrap: PathBuf,
    pub(crate) writable: Vec<PathBuf>,
}

/// Read and check the settings. `sandbox` is asked only when the action wants the sandbox.
pub(crate) fn check(spec: &Spec<'_>, sandbox: &dyn Fn() -> Availability) -> Result<Config, String> {
    let s: CommandSettings = serde_path_to_error::deserialize(spec.settings).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })?;

    let Some((first, rest)) = s.argv.split_first() else {
        return Err("argv: needs at least one element, the program's absolute path".into());
    };
    let program = Template::parse(first)
        .map_err(|e| format!("argv[0]: {e}"))?
        .literal()
        .ok_or_else(|| {
            format!("argv[0]: the program '{first}' cannot hold a slot; only its arguments can")
        })?;
    let program = PathBuf::from(program);
    if !program.is_absolute() {
        return Err(format!(
            "argv[0]: '{}' is not an absolute path (the program is never looked up on PATH)",
            program.display()
        ));
    }
    let meta = std::fs::metadata(&program)
        .map_err(|e| format!("argv[0]: cannot use '{}': {e}", program.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "argv[0]: '{}' is not an executable file",
            program.display()
        ));
    }

    let mut args = Vec::with_capacity(rest.len());
    let mut fields: Vec<String> = Vec::new();
    for (i, a) in rest.iter().enumerate() {
        let t = Template::parse(a).map_err(|e| format!("argv[{}]: {e}", i + 1))?;
        for f in t.slots() {
            if !fields.iter().any(|g| g == f) {
                fields.push(f.to_string());
            }
        }
        args.push(t);
    }

    let mut env: Vec<String> = Vec::new();
    for (i, name) in s.env.iter().enumerate() {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(format!(
                "env[{i}]: '{name}' is not a variable name (non-empty, without '=' or NUL)"
            ));
        }
        if !env.contains(name) {
            env.push(name.clone());
        }
    }

    let cwd = match &s.cwd {
        None => None,
        Some(c) => {
            let p = spec.path(c);
            let canon = std::fs::canonicalize(&p)
                .map_err(|e| format!("cwd: cannot use '{}': {e}", p.display()))?;
            if !canon.is_dir() {
                return Err(format!("cwd: '{}' is not a directory", p.display()));
            }
            Some(canon)
        }
    };

    if s.writable.is_some() && !s.sandbox {
        return Err(
            "writable: only allowed with sandbox = true (without the sandbox the command can write wherever the service can)"
                .into(),
        );
    }
    let mut writable = Vec::new();
    for (i, w) in s.writable.iter().flatten().enumerate() {
        let p = spec.path(w);
        let canon = std::fs::canonicalize(&p)
            .map_err(|e| format!("writable[{i}]: cannot use '{}': {e}", p.display()))?;
        writable.push(canon);
    }

    let max = s.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES);
    if !(1..=MAX_OUTPUT_BYTES_LIMIT).contains(&max) {
        return Err(format!(
            "max_output_bytes: must be from 1 to {MAX_OUTPUT_BYTES_LIMIT}, got {max}"
        ));
    }
    let max_output_bytes = usize::try_from(max)
        .map_err(|_| format!("max_output_bytes: {max} is too large for this machine"))?;

    let sandbox = if s.sandbox {
        match sandbox() {
            Availability::Available(bwrap) => Some(Sandboxed { bwrap, writable }),
            Availability::Unavailable(why) => {
                return Err(format!(
                    "sandbox: true, but the sandbox is not available here: {why}"
                ))
            }
        }
    } else {
        None
    };

    Ok(Config {
        program,
        args,
        fields,
        env,
        cwd,
        sandbox,
        max_output_bytes,
    })
}
