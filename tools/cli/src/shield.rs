//! The ClawShield side of the binary: `openexec shield serve|token`, `openexec vote` (an
//! approver's vote, signed locally: the private key never leaves the approver) and `openexec
//! dev` (the whole stack on one machine).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use openexec_core::keys::{self, SigningKey};
use openexec_kit::run::{init_logging, until_stopped};
use openexec_kit::Layers;
use serde_json::{json, Value};

use crate::{usage, Fail};

#[derive(Subcommand)]
pub enum ShieldCmd {
    /// Run the governance gate.
    Serve(Box<Layers<openexec_shield::Settings>>),
    /// Print a new random token and the token_sha256 line for the identities file.
    Token,
}

pub fn shield(cmd: ShieldCmd) -> Result<(), Fail> {
    match cmd {
        ShieldCmd::Serve(a) => serve(*a),
        ShieldCmd::Token => {
            let t = new_token();
            println!("token = {t}");
            println!("token_sha256 = \"{}\"", openexec_shield::token_hash_hex(&t));
            Ok(())
        }
    }
}

fn serve(a: Layers<openexec_shield::Settings>) -> Result<(), Fail> {
    init_logging("CLAWSHIELD_LOG");
    let cfg = a
        .load()
        .map_err(usage)
        .and_then(|s| openexec_shield::Config::from_settings(s).map_err(usage))?;
    until_stopped(|stop| async move {
        let svc = openexec_shield::Service::start(cfg).await?;
        let addr = svc.local_addr()?;
        println!("clawshield: listening on http://{addr}");
        tracing::info!(%addr, "listening");
        svc.run(stop).await
    })
    .map_err(|e: anyhow::Error| Fail(3, e))
}

fn new_token() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 24];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

#[derive(Args)]
pub struct VoteArgs {
    /// ClawShield's base URL.
    #[arg(long, env = "CLAWSHIELD_URL")]
    url: String,
    /// The approver's bearer token.
    #[arg(long, env = "CLAWSHIELD_TOKEN")]
    token: String,
    /// The approver's private key (PEM file): the vote is signed here and only the signature
    /// is sent.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The approver's id (default: the roster entry of --key).
    #[arg(long = "as")]
    approver: Option<String>,
    proposal_id: String,
    /// approve | deny
    vote: String,
    #[arg(long, default_value = "")]
    reason: String,
}

pub fn vote(a: VoteArgs) -> Result<(), Fail> {
    if a.vote != "approve" && a.vote != "deny" {
        return Err(usage(anyhow::anyhow!(
            "the vote must be 'approve' or 'deny', not '{}'",
            a.vote
        )));
    }
    let rt = tokio::runtime::Runtime::new().map_err(|e| Fail(2, e.into()))?;
    rt.block_on(vote_async(a))
}

async fn vote_async(a: VoteArgs) -> Result<(), Fail> {
    let base = a.url.trim_end_matches('/').to_string();
    let client = reqwest::Client::new();
    let fail = |e: anyhow::Error| Fail(3, e);
    let key = match &a.key {
        Some(p) => Some(
            openexec_kit::keys::read_private_key(p, "--key")
                .map_err(|e| usage(anyhow::anyhow!("{e}")))?,
        ),
        None => None,
    };
    let approver = match (&a.approver, &key) {
        (Some(id), _) => id.clone(),
        (None, Some(k)) => {
            let roster: Value = client
                .get(format!("{base}/v1/roster"))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| fail(e.into()))?
                .json()
                .await
                .map_err(|e| fail(e.into()))?;
            let kid = keys::key_id(&k.verifying_key());
            roster["approvers"]
                .as_array()
                .and_then(|v| v.iter().find(|e| e["key_id"] == kid.as_str()))
                .and_then(|e| e["id"].as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    usage(anyhow::anyhow!(
                        "key {kid} is in no roster entry of {base}: give --as <approver id>"
                    ))
                })?
        }
        (None, None) => {
            return Err(usage(anyhow::anyhow!(
                "give --key (to sign the vote) or --as <approver id> (an approver without a key)"
            )))
        }
    };
    let r = client
        .get(format!("{base}/v1/proposals/{}", a.proposal_id))
        .bearer_auth(&a.token)
        .send()
        .await
        .map_err(|e| fail(e.into()))?;
    let status = r.status();
    let p: Value = r.json().await.map_err(|e| fail(e.into()))?;
    if !status.is_success() {
        return Err(Fail(1, anyhow::anyhow!("{status}: {p}")));
    }
    // What you see is what you sign: the request hash is recomputed here from what is shown.
    let (action, nonce, tenant) = (
        p["action"].as_str().unwrap_or_default(),
        p["nonce"].as_str().unwrap_or_default(),
        p["tenant_id"].as_str().unwrap_or_default(),
    );
    let rh = openexec_core::hash::request_hash(action, nonce, &p["payload"], tenant);
    if p["request_hash"].as_str() != Some(rh.as_str()) {
        return Err(Fail(
            1,
            anyhow::anyhow!(
                "the proposal's request_hash ({}) is not the hash of what it shows ({rh}): not signing",
                p["request_hash"]
            ),
        ));
    }
    eprintln!(
        "proposal {}: {action} {} (tenant {tenant}, agent {}), context {}",
        a.proposal_id, p["payload"], p["agent_id"], p["context"]
    );
    let mut body = json!({"vote": a.vote, "reason": a.reason});
    if let Some(k) = &key {
        let msg = openexec_core::artifact::vote_message_for(&a.vote, &rh, &approver);
        body["signature"] = json!(keys::sign_b64(k, &msg));
    }
    let r = client
        .post(format!("{base}/v1/proposals/{}/votes", a.proposal_id))
        .bearer_auth(&a.token)
        .json(&body)
        .send()
        .await
        .map_err(|e| fail(e.into()))?;
    let status = r.status();
    let v: Value = r.json().await.map_err(|e| fail(e.into()))?;
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    if status.is_success() {
        Ok(())
    } else {
        Err(Fail(1, anyhow::anyhow!("the vote was refused ({status})")))
    }
}

// ---- openexec dev ----------------------------------------------------------------------

const POLICY: &str = include_str!("../../../examples/policy/policy.rego");
const POLICY_TEST: &str = include_str!("../../../examples/policy/policy_test.rego");

const ACTIONS: &str = r#"# The example actions of `openexec dev` (SPEC §9): handlers that need no outside service.
[actions.charge_card]
kind = "builtin"
description = "Charge a card (amount in integer minor units)"
schema = { type = "object", required = ["amount", "currency", "to"], additionalProperties = false, properties = { amount = { type = "integer", minimum = 1 }, currency = { type = "string", minLength = 3, maxLength = 3 }, to = { type = "string", minLength = 1 } } }
[actions.charge_card.builtin]
handler = "echo"

[actions.delete_resource]
kind = "builtin"
description = "Delete a resource"
min_approvers = 2
schema = { type = "object", required = ["env", "id"], additionalProperties = false, properties = { env = { type = "string" }, id = { type = "string", minLength = 1 } } }
[actions.delete_resource.builtin]
handler = "echo"
"#;

#[derive(Args)]
pub struct DevArgs {
    /// The folder for keys, databases, logs and dev.json (created if needed).
    #[arg(long, default_value = "./.openexec-dev")]
    dir: PathBuf,
    /// The tenant of the example agent and approvers.
    #[arg(long, default_value = "default")]
    tenant: String,
}

struct Kid {
    name: &'static str,
    child: Child,
    url: String,
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn write_key(path: &Path) -> anyhow::Result<SigningKey> {
    if path.exists() {
        return Ok(openexec_kit::keys::read_private_key(path, "dev key")?);
    }
    let sk = openexec_kit::keys::generate();
    openexec_kit::keys::write_private(path, &keys::signing_key_to_pem(&sk))?;
    Ok(sk)
}

fn spawn(
    name: &'static str,
    dir: &Path,
    args: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<Kid> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let out = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if !sent {
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                    sent = true;
                }
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(60)).map_err(|_| {
        anyhow::anyhow!(
            "{name} did not start; see {}",
            dir.join(format!("{name}.log")).display()
        )
    })?;
    Ok(Kid { name, child, url })
}

async fn wait_ready(
    client: &reqwest::Client,
    kid: &mut Kid,
    within: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + within;
    loop {
        if let Ok(Some(st)) = kid.child.try_wait() {
            bail!("{} exited ({st}) before it was ready", kid.name);
        }
        if let Ok(r) = client.get(format!("{}/ready", kid.url)).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > until {
            bail!("{} at {} is not ready after {within:?}", kid.name, kid.url);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// `dev.json` as shell variables (`. D/dev.env`), for the README's walk-through and anyone
/// talking to the stack from a shell: the URLs, the tokens, each approver's key file (absolute)
/// and the public keys a verifier needs. Written beside dev.json, private like it.
fn dev_env(dev: &Value, dir: &Path) -> String {
    let q = |v: &Value| {
        let s = v.as_str().unwrap_or_default();
        format!("'{}'", s.replace('\'', "'\\''"))
    };
    let mut out = format!(
        "# Written by `openexec dev` beside dev.json, while the stack runs; in a shell: . {}/dev.env\n",
        dir.display()
    );
    let mut var = |name: &str, v: &Value| out.push_str(&format!("{name}={}\n", q(v)));
    var("OPENEXEC", &dev["openexec"]);
    var("CLAWSHIELD", &dev["clawshield"]);
    var("CLAWLEDGER", &dev["clawledger"]);
    var("TENANT", &dev["tenant_id"]);
    var("AGENT_TOKEN", &dev["agent"]["token"]);
    var("ADMIN_TOKEN", &dev["admin"]["token"]);
    for a in dev["approvers"].as_array().into_iter().flatten() {
        let id = a["id"].as_str().unwrap_or_default().to_uppercase();
        var(&format!("{id}_TOKEN"), &a["token"]);
        let key = dir.join(a["key_file"].as_str().unwrap_or_default());
        var(&format!("{id}_KEY"), &json!(key.display().to_string()));
    }
    let k = &dev["keys"];
    var("RECEIPT_KEY", &k["openexec_receipts"]);
    var("RECEIPT_LOG_KEY", &k["openexec_log"]);
    var("APPROVAL_KEY", &k["clawshield_public"]);
    var("DECISION_LOG_KEY", &k["clawshield_log"]);
    var("WITNESS_KEY", &k["clawledger"]);
    out
}

pub fn dev(a: DevArgs) -> Result<(), Fail> {
    init_logging("OPENEXEC_LOG");
    openexec_core::request::check_tenant(&a.tenant)
        .map_err(|e| usage(anyhow::anyhow!("--tenant: {e}")))?;
    until_stopped(|stop| async move { dev_run(a, stop).await })
        .map_err(|e: anyhow::Error| Fail(3, e))
}

async fn dev_run(a: DevArgs, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let dir = &a.dir;
    openexec_kit::keys::create_private_dir(dir)?;
    let dir = dir.canonicalize()?;
    let _ = std::fs::remove_file(dir.join("dev.json"));
    let _ = std::fs::remove_file(dir.join("dev.env"));
    let tenant = a.tenant.clone();
    for sub in ["keys", "policy", "shield", "exec", "ledger"] {
        openexec_kit::keys::create_private_dir(&dir.join(sub))?;
    }
    let k = |n: &str| dir.join("keys").join(format!("{n}.pem"));
    let shield_key = write_key(&k("clawshield"))?;
    write_key(&k("clawshield-log"))?;
    write_key(&k("openexec-receipt"))?;
    write_key(&k("openexec-log"))?;
    let ledger_key = write_key(&k("clawledger"))?;
    std::fs::write(dir.join("policy/policy.rego"), POLICY)?;
    std::fs::write(dir.join("policy/policy_test.rego"), POLICY_TEST)?;
    std::fs::write(dir.join("actions.toml"), ACTIONS)?;

    // Identities: one agent, four approvers with keys, one admin; fresh tokens each start.
    let agent_token = new_token();
    let admin_token = new_token();
    let mut ids = format!(
        "# Written by `openexec dev`: the example identities of SPEC §9.\n\
         [[agent]]\nid = \"agent\"\ntenant = \"{tenant}\"\ntoken_sha256 = \"{}\"\non_behalf_of = \"erin\"\n\n\
         [[admin]]\nid = \"admin\"\ntoken_sha256 = \"{}\"\n",
        openexec_shield::token_hash_hex(&agent_token),
        openexec_shield::token_hash_hex(&admin_token)
    );
    let mut approvers = Vec::new();
    for (id, group) in [
        ("alice", "finance"),
        ("bob", "finance"),
        ("carol", "ops"),
        ("dave", "ops"),
    ] {
        let sk = write_key(&k(id))?;
        let token = new_token();
        ids.push_str(&format!(
            "\n[[approver]]\nid = \"{id}\"\ntenant = \"{tenant}\"\ngroups = [\"{group}\"]\ntoken_sha256 = \"{}\"\npublic_key = \"{}\"\n",
            openexec_shield::token_hash_hex(&token),
            keys::verifying_key_b64(&sk.verifying_key())
        ));
        approvers.push(json!({"id": id, "groups": [group], "token": token, "key_file": format!("keys/{id}.pem")}));
    }
    std::fs::write(dir.join("identities.toml"), ids)?;

    let ledger_name = openexec_ledger::default_name(&ledger_key);
    let witness = openexec_log::note::Cosigner::new(&ledger_name, ledger_key.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .verifier_key();
    let client = reqwest::Client::new();
    let p = |s: &str| dir.join(s).display().to_string();

    let mut shield = spawn(
        "clawshield",
        &dir,
        &["shield", "serve"],
        &[
            ("CLAWSHIELD_BIND", "127.0.0.1:0".into()),
            ("CLAWSHIELD_DATA_DIR", p("shield")),
            (
                "CLAWSHIELD_DB_URL",
                format!("sqlite:///{}", p("shield/clawshield.db")),
            ),
            ("CLAWSHIELD_KEY", p("keys/clawshield.pem")),
            ("CLAWSHIELD_LOG_KEY", p("keys/clawshield-log.pem")),
            ("CLAWSHIELD_IDENTITIES", p("identities.toml")),
            ("CLAWSHIELD_POLICY", p("policy")),
            ("CLAWSHIELD_BUDGET", "100000000".into()),
            ("CLAWSHIELD_BUDGET_WINDOW_SECONDS", "86400".into()),
            ("CLAWSHIELD_WITNESS_KEYS", witness.clone()),
        ],
    )?;
    wait_ready(&client, &mut shield, Duration::from_secs(60)).await?;
    let roster = get_json(&client, &format!("{}/v1/roster", shield.url)).await?;
    std::fs::write(dir.join("roster.json"), serde_json::to_vec_pretty(&roster)?)?;
    let shield_keys = get_json(&client, &format!("{}/keys", shield.url)).await?;

    let mut exec = spawn(
        "openexec",
        &dir,
        &["serve"],
        &[
            ("OPENEXEC_MODE", "clawshield".into()),
            ("OPENEXEC_BIND", "127.0.0.1:0".into()),
            ("OPENEXEC_DATA_DIR", p("exec")),
            (
                "OPENEXEC_DB_URL",
                format!("sqlite:///{}", p("exec/openexec.db")),
            ),
            ("OPENEXEC_RECEIPT_KEY", p("keys/openexec-receipt.pem")),
            ("OPENEXEC_LOG_KEY", p("keys/openexec-log.pem")),
            (
                "CLAWSHIELD_PUBLIC_KEY",
                keys::verifying_key_to_pem(&shield_key.verifying_key()),
            ),
            ("CLAWSHIELD_TENANT_ID", tenant.clone()),
            ("OPENEXEC_APPROVER_ROSTER", p("roster.json")),
            ("OPENEXEC_ACTIONS", p("actions.toml")),
            ("OPENEXEC_WITNESS_KEYS", witness.clone()),
        ],
    )?;
    wait_ready(&client, &mut exec, Duration::from_secs(60)).await?;
    let exec_keys = get_json(&client, &format!("{}/keys", exec.url)).await?;
    let watch = |url: &str, keys: &Value| {
        format!(
            "{url}={}",
            keys["log"]["verifier_key"].as_str().unwrap_or_default()
        )
    };
    let mut ledger = spawn(
        "clawledger",
        &dir,
        &["ledger", "serve"],
        &[
            ("CLAWLEDGER_BIND", "127.0.0.1:0".into()),
            ("CLAWLEDGER_DATA_DIR", p("ledger")),
            (
                "CLAWLEDGER_DB_URL",
                format!("sqlite:///{}", p("ledger/clawledger.db")),
            ),
            ("CLAWLEDGER_KEY", p("keys/clawledger.pem")),
            ("CLAWLEDGER_NAME", ledger_name.clone()),
            (
                "CLAWLEDGER_WATCH",
                format!(
                    "{},{}",
                    watch(&shield.url, &shield_keys),
                    watch(&exec.url, &exec_keys)
                ),
            ),
        ],
    )?;
    wait_ready(&client, &mut ledger, Duration::from_secs(60)).await?;

    let dev = json!({
        "openexec": exec.url,
        "clawshield": shield.url,
        "clawledger": ledger.url,
        "tenant_id": tenant,
        "agent": {"id": "agent", "token": agent_token},
        "approvers": approvers,
        "admin": {"token": admin_token},
        "keys": {
            "clawshield": "keys/clawshield.pem",
            "clawshield_public": shield_keys["approval_keys"][0]["pem"],
            "openexec_receipts": exec_keys["receipt_keys"][0]["pem"],
            "clawshield_log": shield_keys["log"]["verifier_key"],
            "openexec_log": exec_keys["log"]["verifier_key"],
            "clawledger": witness,
        },
    });
    let env = dev_env(&dev, &dir);
    let tmp = dir.join("dev.env.tmp");
    openexec_kit::keys::write_private(&tmp, &env)?;
    std::fs::rename(&tmp, dir.join("dev.env"))?;
    let tmp = dir.join("dev.json.tmp");
    openexec_kit::keys::write_private(&tmp, &serde_json::to_string_pretty(&dev)?)?;
    std::fs::rename(&tmp, dir.join("dev.json"))?;
    println!("ClawShield  {}", shield.url);
    println!("OpenExec    {}", exec.url);
    println!("ClawLedger  {}", ledger.url);
    println!("tenant      {tenant}");
    println!("agent token {agent_token}");
    for a in dev["approvers"].as_array().into_iter().flatten() {
        println!(
            "approver    {} ({}) token {} key {}",
            a["id"].as_str().unwrap_or_default(),
            a["groups"][0].as_str().unwrap_or_default(),
            a["token"].as_str().unwrap_or_default(),
            a["key_file"].as_str().unwrap_or_default()
        );
    }
    println!("admin token {admin_token}");
    println!(
        "everything is in {} (dev.json; dev.env for a shell); Ctrl-C stops all three",
        dir.display()
    );

    // Until Ctrl-C, or until one of them dies.
    let mut stop = std::pin::pin!(stop);
    let died = loop {
        tokio::select! {
            _ = &mut stop => break None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some(name) = [&mut shield, &mut exec, &mut ledger]
                    .into_iter()
                    .find_map(|k| matches!(k.child.try_wait(), Ok(Some(_))).then_some(k.name))
                {
                    break Some(name);
                }
            }
        }
    };
    let _ = std::fs::remove_file(dir.join("dev.json"));
    let _ = std::fs::remove_file(dir.join("dev.env"));
    for kid in [&mut ledger, &mut exec, &mut shield] {
        if let Ok(None) = kid.child.try_wait() {
            if let Some(pid) = rustix::process::Pid::from_raw(kid.child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
    }
    let until = Instant::now() + Duration::from_secs(15);
    for kid in [&mut ledger, &mut exec, &mut shield] {
        while matches!(kid.child.try_wait(), Ok(None)) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    match died {
        Some(name) => bail!(
            "{name} stopped on its own; the others were stopped too (logs in {})",
            dir.display()
        ),
        None => Ok(()),
    }
}
