//! `openexec`: the one binary. It only wires the crates together: `serve` runs the execution
//! service; `keygen`, `approve`, `verify` and `hash` are offline tools for scripts and operators.
//!
//! Exit codes: 0 success; 1 a verification said "invalid"; 2 bad usage or unreadable input;
//! 3 the service failed to start or stopped with an error.
#![forbid(unsafe_code)]

mod audit;
mod shield;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use openexec_core::{artifact, hash, json, keys, payload};
use openexec_exec::{Config, Service};
use openexec_kit::run::{init_logging, until_stopped};
use openexec_kit::Layers;
use serde_json::{json, Value};

/// The process's allocator: mimalloc (every service of the binary allocates a great deal per
/// request — JSON, policy values — and glibc's malloc was a fifth of ClawShield's CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "openexec",
    version,
    about = "OpenExec: run only what was approved, at most once, with a signed receipt"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the execution service.
    Serve(Box<Layers<openexec_exec::Settings>>),
    /// Write a new Ed25519 key pair; print its key id and public key.
    Keygen {
        /// Where to write the private key (PKCS#8 PEM, mode 0600); the public key goes to <OUT>.pub.
        #[arg(long)]
        out: PathBuf,
    },
    /// Mint a v1 approval artifact for one request (scripts, tests, break-glass).
    Approve(ApproveArgs),
    /// Check an evidence JSON file offline against receipt public keys; with --decision, the
    /// chain from the receipt to the ClawShield decision that allowed it.
    Verify(VerifyArgs),
    /// Print the canonical forms and hashes of a request.
    Hash(HashArgs),
    /// ClawLedger, the witness of logs.
    Ledger {
        #[command(subcommand)]
        cmd: LedgerCmd,
    },
    /// Work with a receipt log.
    Log {
        #[command(subcommand)]
        cmd: LogCmd,
    },
    /// ClawShield, the governance gate.
    Shield {
        #[command(subcommand)]
        cmd: shield::ShieldCmd,
    },
    /// Vote on a ClawShield proposal as an approver, signing the vote locally with --key.
    Vote(shield::VoteArgs),
    /// Start the whole stack on 127.0.0.1 (ClawShield, OpenExec in clawshield mode, ClawLedger),
    /// with generated keys, the example policy, actions and identities; write <DIR>/dev.json.
    Dev(shield::DevArgs),
    /// Work with a ClawShield policy bundle (a directory of .rego files and an optional
    /// data.json; the decision is data.clawshield.decision).
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Load and compile a bundle; print its policy_hash (exit 1 when it does not load).
    Check {
        /// The bundle's directory.
        dir: PathBuf,
    },
    /// Evaluate a bundle on one input (a proposal as policy sees it); print the decision and
    /// the rules that fired. Exit 0 whatever the effect; 1 for a policy_error.
    Eval {
        dir: PathBuf,
        /// The input JSON file (- for stdin).
        input: PathBuf,
    },
    /// Run the bundle's Rego unit tests (rules named test_*); exit 1 when any fails.
    Test { dir: PathBuf },
}

#[derive(Subcommand)]
enum LogCmd {
    /// Replay a whole log from its endpoints and check it with public keys: checkpoint
    /// signature, every entry into the root, every receipt's signature (or, with --decisions,
    /// every decision log entry's shape), and consistency with the checkpoint trusted last time
    /// (--state).
    Audit {
        /// The log's base URL, e.g. http://127.0.0.1:5000
        #[arg(long)]
        url: String,
        /// The log's note verifier key (default: the one the log publishes, with a warning).
        #[arg(long)]
        log_key: Option<String>,
        /// A trusted receipt public key; repeatable (default: the ones the log publishes).
        #[arg(long = "key", allow_hyphen_values = true, conflicts_with = "decisions")]
        keys: Vec<String>,
        /// Where the last trusted checkpoint is remembered between runs.
        #[arg(long)]
        state: Option<PathBuf>,
        /// The log is ClawShield's decision log (SPEC §9): every entry must be a well-formed
        /// decision log entry in canonical form, each decision_id once (no receipt signatures).
        #[arg(long)]
        decisions: bool,
    },
}

#[derive(Args)]
struct VerifyArgs {
    /// The evidence file (an /execute answer, a GET /receipts answer, or the evidence itself); - for stdin.
    evidence: PathBuf,
    /// A receipt public key (PEM or raw base64, or a file holding one); repeatable.
    #[arg(long = "key", required = true, allow_hyphen_values = true)]
    keys: Vec<String>,
    /// The receipt log's note verifier key (`<origin>+<hex>+<base64>`, as GET /keys gives
    /// it): checks the inclusion proof and its checkpoint.
    #[arg(long)]
    log_key: Option<String>,
    /// A witness cosigner verifier key; repeatable. With --decision, it counts for both logs'
    /// checkpoints.
    #[arg(long = "witness")]
    witnesses: Vec<String>,
    /// How many of the witnesses must have cosigned the checkpoint (with --decision: each of
    /// the two checkpoints).
    #[arg(long, default_value_t = 0)]
    k: usize,
    /// Fail when the evidence carries no inclusion proof.
    #[arg(long)]
    require_inclusion: bool,
    /// ClawShield's answer to GET /v1/decisions/{decision_id} for the receipt's
    /// approval.decision_id (- for stdin): checks the chain — the entry is a decision that allows
    /// the receipt's request_hash with its approval_id, and both the receipt and the entry are
    /// included in checkpoints signed by their logs (implies --require-inclusion).
    #[arg(long, requires_all = ["decision_log_key", "log_key"])]
    decision: Option<PathBuf>,
    /// ClawShield's decision log note verifier key (its GET /keys log.verifier_key); required
    /// with --decision.
    #[arg(long, requires = "decision")]
    decision_log_key: Option<String>,
    /// A ClawShield approval public key (PEM or raw base64, or a file holding one); repeatable:
    /// the receipt's approval must have been verified with one of them (its approval.key_id).
    #[arg(long = "approval-key", allow_hyphen_values = true)]
    approval_keys: Vec<String>,
}

#[derive(Args)]
struct ApproveArgs {
    /// ClawShield (or break-glass) private key file.
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    action: String,
    /// The payload as JSON (a JSON string holding an object is decoded, as OpenExec does).
    #[arg(long, default_value = "{}")]
    payload: String,
    #[arg(long)]
    nonce: String,
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Validity in seconds from now.
    #[arg(long, default_value_t = 300)]
    ttl: i64,
    /// Defaults to a random id.
    #[arg(long)]
    approval_id: Option<String>,
    #[arg(long)]
    decision_id: Option<String>,
}

#[derive(Args)]
struct HashArgs {
    /// A whole /execute body (file, or - for stdin) instead of the flags below.
    #[arg(long, conflicts_with_all = ["action", "payload", "nonce"])]
    request: Option<PathBuf>,
    #[arg(long)]
    action: Option<String>,
    #[arg(long, default_value = "{}")]
    payload: String,
    #[arg(long)]
    nonce: Option<String>,
    #[arg(long, default_value = "default")]
    tenant: String,
}

/// A failure with its exit code.
pub(crate) struct Fail(u8, anyhow::Error);

fn policy(cmd: PolicyCmd) -> Result<(), Fail> {
    use openexec_policy::Bundle;
    let load = |dir: &std::path::Path| Bundle::load(dir).map_err(|e| Fail(1, e.into()));
    match cmd {
        PolicyCmd::Check { dir } => {
            let b = load(&dir)?;
            println!(
                "{}",
                serde_json::json!({"ok": true, "policy_hash": b.policy_hash(), "files": b.files().keys().collect::<Vec<_>>()})
            );
            Ok(())
        }
        PolicyCmd::Eval { dir, input } => {
            let b = load(&dir)?;
            let text = if input.as_os_str() == "-" {
                let mut t = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut t).map_err(usage)?;
                t
            } else {
                std::fs::read(&input)
                    .map_err(|e| usage(anyhow::anyhow!("cannot read {}: {e}", input.display())))?
            };
            let v = openexec_core::json::parse_ijson(&text, 64)
                .map_err(|e| usage(anyhow::anyhow!("{}: {e}", input.display())))?;
            let d = b.evaluate(&v);
            println!("{}", serde_json::to_string_pretty(&d).map_err(usage)?);
            if d.is_policy_error() {
                return Err(Fail(
                    1,
                    anyhow::anyhow!("policy_error: {}", d.reasons.join("; ")),
                ));
            }
            Ok(())
        }
        PolicyCmd::Test { dir } => {
            let b = load(&dir)?;
            let r = b.test();
            for t in &r.results {
                let mark = if t.passed { "PASS" } else { "FAIL" };
                match &t.message {
                    Some(m) if !t.passed => println!("{mark} {} ({}): {m}", t.name, t.file),
                    _ => println!("{mark} {} ({})", t.name, t.file),
                }
            }
            println!("{} passed, {} failed", r.passed(), r.failed());
            if r.ok() {
                Ok(())
            } else if r.results.is_empty() {
                Err(Fail(1, anyhow::anyhow!("the bundle has no test_* rules")))
            } else {
                Err(Fail(
                    1,
                    anyhow::anyhow!("{} policy tests failed", r.failed()),
                ))
            }
        }
    }
}

pub(crate) fn usage(e: impl Into<anyhow::Error>) -> Fail {
    Fail(2, e.into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Serve(a) => serve(*a),
        Cmd::Keygen { out } => keygen(&out).map_err(usage),
        Cmd::Approve(a) => approve(a).map_err(usage),
        Cmd::Verify(a) => verify(&a),
        Cmd::Hash(a) => hash_cmd(a).map_err(usage),
        Cmd::Ledger {
            cmd: LedgerCmd::Serve(a),
        } => ledger_serve(*a),
        Cmd::Log {
            cmd:
                LogCmd::Audit {
                    url,
                    log_key,
                    keys,
                    state,
                    decisions,
                },
        } => log_audit(url, log_key, &keys, state, decisions),
        Cmd::Policy { cmd } => policy(cmd),
        Cmd::Shield { cmd } => shield::shield(cmd),
        Cmd::Vote(a) => shield::vote(a),
        Cmd::Dev(a) => shield::dev(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, e)) => {
            eprintln!("openexec: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// The handler kinds an action registry file (`OPENEXEC_ACTIONS`) may name.
fn handler_kinds() -> openexec_exec::actions::Loader {
    use std::sync::Arc;
    openexec_exec::actions::Loader::new()
        .with_kind(Arc::new(openexec_builtin::Builtins))
        .with_kind(Arc::new(openexec_handler_http::HttpKind))
        .with_kind(Arc::new(openexec_handler_wasm::WasmKind))
        .with_kind(Arc::new(openexec_handler_command::CommandKind))
}

fn serve(a: Layers<openexec_exec::Settings>) -> Result<(), Fail> {
    init_logging("OPENEXEC_LOG");
    let cfg = a
        .load()
        .map_err(usage)
        .and_then(|s| Config::from_settings(s).map_err(usage))?;
    until_stopped(|stop| async move {
        let svc =
            Service::start_declared(cfg, openexec_builtin::registry(), &handler_kinds()).await?;
        let addr = svc.local_addr()?;
        // One line on stdout that scripts and tests can wait for (the stop signal is taken
        // over before it: from here on a signal means a graceful stop).
        println!("openexec: listening on http://{addr}");
        tracing::info!(%addr, "listening");
        svc.run(stop).await
    })
    .map_err(|e: anyhow::Error| Fail(3, e))
}

/// `--key` values: each a public key (PEM or raw base64) or a file holding some.
fn public_keys(key_args: &[String]) -> Result<Vec<keys::VerifyingKey>, Fail> {
    public_keys_for("--key", key_args)
}

/// The values of a public key flag (`flag` names it in messages).
fn public_keys_for(flag: &str, key_args: &[String]) -> Result<Vec<keys::VerifyingKey>, Fail> {
    let mut out = Vec::new();
    for k in key_args {
        let text = if std::path::Path::new(k).is_file() {
            std::fs::read_to_string(k)
                .map_err(|e| usage(anyhow::anyhow!("cannot read {k}: {e}")))?
        } else {
            k.clone()
        };
        out.extend(
            keys::parse_verifying_keys(&text)
                .map_err(|e| usage(anyhow::anyhow!("{flag} {k}: {e}")))?,
        );
    }
    Ok(out)
}

fn log_audit(
    url: String,
    log_key: Option<String>,
    key_args: &[String],
    state: Option<PathBuf>,
    decisions: bool,
) -> Result<(), Fail> {
    let entries = if decisions {
        audit::Entries::Decisions
    } else {
        audit::Entries::Receipts(public_keys(key_args)?)
    };
    let rt = tokio::runtime::Runtime::new().map_err(|e| Fail(2, e.into()))?;
    let outcome = rt
        .block_on(audit::run(audit::Audit {
            url,
            log_key,
            entries,
            state,
        }))
        .map_err(usage)?;
    match outcome {
        audit::Outcome::Clean(r) => {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            Ok(())
        }
        audit::Outcome::Problems(r) => {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            Err(Fail(1, anyhow::anyhow!("the log failed its audit")))
        }
    }
}

fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    let sk = openexec_kit::keys::generate();
    let pk = sk.verifying_key();
    let pub_path = PathBuf::from(format!("{}.pub", out.display()));
    if pub_path.exists() {
        bail!("{} already exists; not overwriting", pub_path.display());
    }
    openexec_kit::keys::write_private(out, &keys::signing_key_to_pem(&sk))?;
    std::fs::write(&pub_path, keys::verifying_key_to_pem(&pk))
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    println!("key_id: {}", keys::key_id(&pk));
    println!("public_key: {}", keys::verifying_key_b64(&pk));
    print!("{}", keys::verifying_key_to_pem(&pk));
    Ok(())
}

fn read_input(p: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if p.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    }
}

fn parse_payload(text: &str) -> anyhow::Result<Value> {
    let v = json::parse_ijson(text.as_bytes(), json::DEFAULT_MAX_DEPTH)
        .map_err(|e| anyhow::anyhow!("--payload is not valid JSON: {e}"))?;
    payload::normalize(Some(&v), json::DEFAULT_MAX_DEPTH).map_err(|e| {
        anyhow::anyhow!("--payload is a string that starts like an object but does not parse: {e}")
    })
}

fn approve(a: ApproveArgs) -> anyhow::Result<()> {
    let sk = openexec_kit::keys::read_private_key(&a.key, "--key")?;
    let payload = parse_payload(&a.payload)?;
    if a.ttl <= 0 {
        bail!("--ttl must be positive");
    }
    let now = chrono::Utc::now();
    let id = a.approval_id.unwrap_or_else(|| {
        let mut b = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    });
    let art = artifact::sign_v1(
        &artifact::V1Params {
            approval_id: &id,
            tenant_id: &a.tenant,
            action: &a.action,
            payload: &payload,
            nonce: &a.nonce,
            issued_at: now,
            expires_at: now + chrono::Duration::seconds(a.ttl),
            decision_id: a.decision_id.as_deref(),
            policy_hash: None,
        },
        &sk,
    );
    println!("{}", serde_json::to_string_pretty(&art)?);
    Ok(())
}

fn read_json(path: &std::path::Path, what: &str) -> Result<Value, Fail> {
    let bytes = read_input(path).map_err(usage)?;
    json::parse_ijson(&bytes, json::DEFAULT_MAX_DEPTH).map_err(|e| {
        usage(anyhow::anyhow!(
            "{what} {} is not valid JSON: {e}",
            path.display()
        ))
    })
}

fn verify(a: &VerifyArgs) -> Result<(), Fail> {
    use openexec_core::evidence::LogTrust;
    if a.decision.as_deref() == Some(std::path::Path::new("-")) && a.evidence.as_os_str() == "-" {
        return Err(usage(anyhow::anyhow!(
            "the evidence and --decision cannot both be read from stdin"
        )));
    }
    let v = read_json(&a.evidence, "the evidence file")?;
    let answer = a
        .decision
        .as_deref()
        .map(|p| read_json(p, "the --decision file"))
        .transpose()?;
    let pks = public_keys(&a.keys)?;
    let approval_keys = public_keys_for("--approval-key", &a.approval_keys)?;
    let ev = v.get("evidence").filter(|e| e.is_object()).unwrap_or(&v);
    let verifier = |flag: &str, k: Option<&str>| {
        k.map(openexec_log::note::parse_verifier_key)
            .transpose()
            .map_err(|e| usage(anyhow::anyhow!("{flag}: {e}")))
    };
    let log = verifier("--log-key", a.log_key.as_deref())?;
    let decision_log = verifier("--decision-log-key", a.decision_log_key.as_deref())?;
    let witnesses = a
        .witnesses
        .iter()
        .map(|w| {
            openexec_log::note::parse_cosigner_key(w)
                .map_err(|e| usage(anyhow::anyhow!("--witness {w}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if a.k > witnesses.len() {
        return Err(usage(anyhow::anyhow!(
            "--k {} but only {} --witness keys given",
            a.k,
            witnesses.len()
        )));
    }
    let trust = |log| LogTrust {
        log,
        witnesses: &witnesses,
        k: a.k,
        require_inclusion: a.require_inclusion,
    };
    let (report, what) = match &answer {
        Some(answer) => {
            let chain = openexec_core::decision::ChainTrust {
                receipt_keys: &pks,
                receipts: trust(log.as_ref()),
                decisions: trust(decision_log.as_ref()),
                approval_keys: &approval_keys,
            };
            let r = openexec_core::decision::verify_chain(ev, answer, &chain);
            (r, "the chain from the receipt to its decision")
        }
        None => {
            let mut r = openexec_core::evidence::verify_full(ev, &pks, &trust(log.as_ref()));
            if !approval_keys.is_empty() {
                openexec_core::decision::check_approval_key(&mut r, ev, &approval_keys);
            }
            (r, "the evidence")
        }
    };
    let out = json!({"valid": report.valid, "checks": report.checks, "errors": report.errors});
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    if report.valid {
        Ok(())
    } else {
        Err(Fail(
            1,
            anyhow::anyhow!("{what} is NOT valid: {}", report.errors.join("; ")),
        ))
    }
}

fn hash_cmd(a: HashArgs) -> anyhow::Result<()> {
    let (action, payload, nonce, tenant) = match &a.request {
        Some(p) => {
            let v = json::parse_ijson(&read_input(p)?, json::DEFAULT_MAX_DEPTH)
                .map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", p.display()))?;
            let req = openexec_core::request::ExecRequest::from_value(v)?;
            let payload = payload::normalize(req.payload.as_ref(), json::DEFAULT_MAX_DEPTH)
                .map_err(|e| anyhow::anyhow!("payload: {e}"))?;
            (
                req.action,
                payload,
                req.nonce,
                req.tenant_id.unwrap_or(a.tenant),
            )
        }
        None => {
            let action = a
                .action
                .context("--action is required (or --request FILE)")?;
            let nonce = a.nonce.context("--nonce is required (or --request FILE)")?;
            (action, parse_payload(&a.payload)?, nonce, a.tenant)
        }
    };
    let intent = json!({"action": action, "payload": payload});
    let request =
        json!({"action": action, "nonce": nonce, "payload": payload, "tenant_id": tenant});
    let out = json!({
        "intent_jcs": String::from_utf8_lossy(&json::canonicalize(&intent)),
        "intent_hash": hash::intent_hash(&action, &payload),
        "request_jcs": String::from_utf8_lossy(&json::canonicalize(&request)),
        "request_hash": hash::request_hash(&action, &nonce, &payload, &tenant),
        "legacy_canonical": hash::legacy_canonical(&action, &payload),
        "legacy_action_hash": hash::legacy_action_hash(&action, &payload),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

#[derive(Subcommand)]
enum LedgerCmd {
    /// Watch logs: verify each new checkpoint, mirror its entries, cosign it and deliver the
    /// cosignature to the log; serve alerts, cosigned checkpoints and mirrored evidence.
    Serve(Box<Layers<openexec_ledger::Settings>>),
}

fn ledger_serve(a: Layers<openexec_ledger::Settings>) -> Result<(), Fail> {
    init_logging("CLAWLEDGER_LOG");
    let cfg = a
        .load()
        .map_err(usage)
        .and_then(|s| openexec_ledger::Config::from_settings(s).map_err(usage))?;
    until_stopped(|stop| async move {
        let ledger = openexec_ledger::Ledger::start(cfg).await?;
        let addr = ledger.local_addr()?;
        println!("clawledger: cosigner key {}", ledger.verifier_key());
        println!("clawledger: listening on http://{addr}");
        tracing::info!(%addr, "listening");
        ledger.run(stop).await
    })
    .map_err(|e: anyhow::Error| Fail(3, e))
}
