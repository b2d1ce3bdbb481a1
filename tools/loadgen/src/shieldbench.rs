//! `--shield-bench`: ClawShield's auto-approved proposals next to OpenExec's `/execute`, in one
//! run, on the same machine, with the same client settings.
//!
//! 1. The policy bundle: this tool writes the example policy (`examples/policy`, compiled in)
//!    grown by `--shield-rules` (100) generated rules into a temp dir (see [`bench_rego`] for
//!    how the rules are built so that every one of them is evaluated for every `charge_card`
//!    proposal), loads it with `openexec_policy::Bundle::load` and checks, before any server
//!    starts, that a small `charge_card` is still allowed by `charge_card.small`, that each
//!    generated rule on its own denies the proposal that trips it (so none is dead code the
//!    decision never reaches), and that the example's own Rego unit tests still pass. It also
//!    times the evaluation of a small `charge_card` in this process, for the bundle and for the
//!    example alone.
//! 2. Two servers, each on a fresh temp dir with its own SQLite file (WAL, the
//!    servers' defaults, so every 200 answer was fsync'd first): `openexec shield serve`
//!    with that bundle, an identities file of one agent, and the breakers that would refuse a
//!    closed-loop benchmark switched off (`CLAWSHIELD_RATE_PER_AGENT=0`,
//!    `CLAWSHIELD_RATE_PER_ACTION=0`, `CLAWSHIELD_LOOP_MAX=0`, no budget: `CLAWSHIELD_BUDGET=0`);
//!    and `openexec serve` in demo mode (the built-in `echo`, the README's baseline).
//! 3. `POST /execute` of `echo` at OpenExec, then `POST /v1/proposals` of a small `charge_card`
//!    at ClawShield (the agent's bearer token; payload `{"amount": 1..9999, "currency": "EUR",
//!    "to": "acct-1"}`), each with `--connections` keep-alive connections for `--warmup` +
//!    `--duration`, every request with a nonce never used before.
//!
//! Reported for each: requests/s, p50/p99/p999, non-200 answers (any fails the run), CPU, the
//! store's group commits; and gate ÷ exec of requests/s. Checks, each a failure when it does not
//! hold: sampled 200 answers of the gate say `approved` by `charge_card.small` under this
//! bundle's hash with an artifact bound to their own request, all distinct; the gate's
//! `clawshield_decisions_total{effect="allow"}` grew by exactly its 200 answers; OpenExec's
//! sampled answers are fresh executions with distinct receipts and its echo handler ran once per
//! 200 answer. The verdict: when the gate serves fewer requests/s than `/execute`, the run fails
//! (exit 1) and says so in capitals — the bar is that the gate is not the slower of the
//! two, and a near-tie on a noisy machine is for a rerun to settle, not for a tolerance to hide.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use openexec_policy::{Bundle, Effect};
use serde_json::{json, Value};

use crate::actionsbench::{check_count, sha256_hex};
use crate::bodies::{self, BodySource};
use crate::client::Endpoint;
use crate::measure::{grew, measure, start_exec, Findings, Target};
use crate::report::{ms, ratio, round3, row_json_as, table_with, Row, StoreMetrics};
use crate::{get_once, premint, run_lines, send_once, server, wait_for_200, Args, TENANT};

/// The example policy (`examples/policy/policy.rego`), compiled in.
pub const EXAMPLE_POLICY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/policy/policy.rego"
));
/// Its Rego unit tests (`examples/policy/policy_test.rego`).
pub const EXAMPLE_TESTS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/policy/policy_test.rego"
));
/// The example's package line, and what the bundle renames it to.
const EXAMPLE_PACKAGE: &str = "package clawshield";
const EXAMPLE_SUBPACKAGE: &str = "package clawshield.example";
/// Where each file goes in the bundle.
pub const EXAMPLE_FILE: &str = "example/policy.rego";
pub const EXAMPLE_TESTS_FILE: &str = "example/policy_test.rego";
pub const RULES_FILE: &str = "bench_rules.rego";
/// The agent the proposals come from.
pub const AGENT_ID: &str = "bench-agent";
/// The rule of the example policy that allows a small payment.
pub const SMALL_RULE: &str = "charge_card.small";
/// The decisions counter of ClawShield's `/metrics` for automatic approvals.
const ALLOWED_SERIES: &str = "clawshield_decisions_total{effect=\"allow\"}";
/// How many in-process evaluations time the policy (at most, and at most for this long).
const EVAL_SAMPLES: usize = 400;
const EVAL_BUDGET: Duration = Duration::from_secs(3);

/// The example policy as a sub-package, `data.clawshield.example` (its only change: the package
/// line), so that the bundle's own `data.clawshield.decision` can consult the generated rules
/// first and then hand over to the example's decision unchanged.
pub fn example_as_subpackage(text: &str) -> Result<String, String> {
    let hits = text
        .lines()
        .filter(|l| l.trim_end() == EXAMPLE_PACKAGE)
        .count();
    if hits != 1 {
        return Err(format!(
            "the example policy has {hits} lines `{EXAMPLE_PACKAGE}`, expected exactly 1"
        ));
    }
    let mut out = String::with_capacity(text.len() + 8);
    for l in text.split_inclusive('\n') {
        if l.trim_end() == EXAMPLE_PACKAGE {
            out.push_str(EXAMPLE_SUBPACKAGE);
            out.push_str(&l[l.trim_end().len()..]);
        } else {
            out.push_str(l);
        }
    }
    Ok(out)
}

/// The name of generated rule `i` (what the decision's `rules` says when it denies).
pub fn rule_name(i: usize) -> String {
    format!("bench.rule_{i:03}")
}

/// A currency code of its own for generated rule `i` (`XAA`, `XAB`, …; none is `EUR`).
fn rule_currency(i: usize) -> String {
    let letter = |n: usize| char::from(b'A' + (n % 26) as u8);
    format!("X{}{}", letter(i / 26), letter(i))
}

/// The smallest amount generated rule `i` (a currency rule) refuses.
fn rule_floor(i: usize) -> u64 {
    100 + i as u64
}

/// Generated rule `i`: one definition of the partial set `bench_denials`. Every rule starts
/// with `input.action == "charge_card"`, which holds for every proposal of the benchmark, so
/// its next condition is evaluated too (and even an evaluator with rule indexing on
/// `input.action` could not skip it); that condition is one of four kinds, by `i % 4`, each
/// false for the benchmark's proposals and true for the input [`trigger_payload`] builds:
/// a blocked recipient, a currency with a floor, a blocked agent, a blocked campaign in the
/// agent's `context`.
pub fn generated_rule(i: usize) -> String {
    let name = rule_name(i);
    let (what, cond) = match i % 4 {
        0 => (
            "a blocked recipient".to_string(),
            format!("input.payload.to == \"acct-blocked-{i:03}\""),
        ),
        1 => (
            format!("{} from {} minor units", rule_currency(i), rule_floor(i)),
            format!(
                "input.payload.currency == \"{}\"\n\tinput.payload.amount >= {}",
                rule_currency(i),
                rule_floor(i)
            ),
        ),
        2 => (
            "a blocked agent".to_string(),
            format!("input.agent.id == \"agent-blocked-{i:03}\""),
        ),
        _ => (
            "a blocked campaign (the agent's context)".to_string(),
            format!("input.context.campaign == \"blocked-{i:03}\""),
        ),
    };
    format!(
        "# {name}: {what}.\nbench_denials contains \"{name}\" if {{\n\tinput.action == \"charge_card\"\n\t{cond}\n}}\n"
    )
}

/// The generated file (`package clawshield`): the bundle's decision and `rules` generated rules.
///
/// How the bundle is built: the example policy moves to `data.clawshield.example` unchanged
/// but for its package line ([`example_as_subpackage`]); this file defines
/// `data.clawshield.decision` as "deny when any generated rule denies, else the example's
/// decision". Deciding a `charge_card` therefore needs `count(bench_denials)`, which evaluates
/// every definition of the partial set — all `rules` of them, each with a condition past its
/// first that is checked (see [`generated_rule`]) — before the example's else-chain runs
/// (`charge_card.small` for a small payment). A small payment's answer is the same as with the
/// example alone (so the example's own tests still pass on the bundle), but it costs the
/// evaluation of `rules` more rules, as a grown real policy's would.
pub fn bench_rego(rules: usize) -> String {
    let mut t = format!(
        "# Written by openexec-load --shield-bench: the example policy ({EXAMPLE_FILE}, package\n\
         # clawshield.example) grown by {rules} generated rules, each evaluated for every\n\
         # charge_card proposal before the example decides.\n\
         package clawshield\n\
         \n\
         import rego.v1\n\
         \n\
         import data.clawshield.example\n\
         \n\
         decision := d if {{\n\
         \tcount(bench_denials) > 0\n\
         \td := {{\n\
         \t\t\"effect\": \"deny\",\n\
         \t\t\"reasons\": [sprintf(\"%d generated rule(s) deny this proposal\", [count(bench_denials)])],\n\
         \t\t\"rules\": array.slice(sort(bench_denials), 0, 8),\n\
         \t}}\n\
         }} else := example.decision\n"
    );
    if rules == 0 {
        // No rule to deny: an empty set, so the example alone decides (for comparisons).
        t.push_str("\nbench_denials := set()\n");
    }
    for i in 0..rules {
        t.push('\n');
        t.push_str(&generated_rule(i));
    }
    t
}

/// The bundle's files: relative path → text.
pub fn bundle_files(rules: usize) -> Result<BTreeMap<String, String>, String> {
    Ok(BTreeMap::from([
        (
            EXAMPLE_FILE.to_string(),
            example_as_subpackage(EXAMPLE_POLICY)?,
        ),
        (EXAMPLE_TESTS_FILE.to_string(), EXAMPLE_TESTS.to_string()),
        (RULES_FILE.to_string(), bench_rego(rules)),
    ]))
}

/// Write the bundle into `dir` (created if needed).
pub fn write_bundle(dir: &Path, rules: usize) -> anyhow::Result<()> {
    for (rel, text) in bundle_files(rules).map_err(anyhow::Error::msg)? {
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The input ClawShield gives the policy for a proposal of `payload` by the benchmark's agent
/// (the shape of `openexec_shield`'s engine: breakers off, no budget; `context` as given).
pub fn proposal_input(payload: &Value, context: &Value) -> Value {
    json!({
        "action": bodies::CHARGE_ACTION,
        "payload": payload,
        "tenant_id": TENANT,
        "nonce": "check",
        "intent_hash": openexec_core::hash::intent_hash(bodies::CHARGE_ACTION, payload),
        "request_hash": openexec_core::hash::request_hash(bodies::CHARGE_ACTION, "check", payload, TENANT),
        "context": context,
        "agent": {"id": AGENT_ID, "tenant_id": TENANT, "on_behalf_of": null},
        "limits": {
            "rate": {"agent_per_second": 0, "action_per_second": 0, "agent_tokens_left": null},
            "loop": {"count": 0, "max": 0, "window_seconds": 60, "blocked": false},
            "budget": {"used": 0, "limit": null, "left": null, "window_seconds": 86400},
        },
    })
}

/// An input that generated rule `i`, and no other generated rule, denies (a small payment in
/// every other respect).
pub fn trigger_input(i: usize) -> Value {
    let mut payload = bodies::charge_payload(0);
    let mut context = Value::Null;
    let mut input_agent = None;
    match i % 4 {
        0 => payload["to"] = json!(format!("acct-blocked-{i:03}")),
        1 => {
            payload["currency"] = json!(rule_currency(i));
            payload["amount"] = json!(rule_floor(i));
        }
        2 => input_agent = Some(format!("agent-blocked-{i:03}")),
        _ => context = json!({"campaign": format!("blocked-{i:03}")}),
    }
    let mut input = proposal_input(&payload, &context);
    if let Some(a) = input_agent {
        input["agent"]["id"] = json!(a);
    }
    input
}

/// What [`check_bundle`] found.
#[derive(Debug, Clone)]
pub struct BundleCheck {
    /// `.rego` files, and the example's Rego tests that passed.
    pub files: usize,
    pub tests_passed: usize,
}

/// Check the grown bundle: a small `charge_card` is allowed by [`SMALL_RULE`]; each of the
/// `rules` generated rules on its own denies the input that trips it, naming itself (so every
/// one is reached by the decision); the example's Rego unit tests pass.
pub fn check_bundle(b: &Bundle, rules: usize) -> Result<BundleCheck, String> {
    let small = b.evaluate(&proposal_input(&bodies::charge_payload(9998), &Value::Null));
    if small.effect != Effect::Allow || small.rules != [SMALL_RULE] {
        return Err(format!(
            "a charge_card of {} is not allowed by {SMALL_RULE}: {} {} {:?} {:?}",
            bodies::charge_amount(9998),
            small.effect.as_str(),
            small.code,
            small.rules,
            small.reasons
        ));
    }
    for i in 0..rules {
        let d = b.evaluate(&trigger_input(i));
        if d.effect != Effect::Deny || d.rules != [rule_name(i)] {
            return Err(format!(
                "generated rule {} does not decide the input that trips it: {} {} {:?} {:?}",
                rule_name(i),
                d.effect.as_str(),
                d.code,
                d.rules,
                d.reasons
            ));
        }
    }
    let report = b.test();
    if !report.ok() {
        let failed: Vec<String> = report
            .results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| format!("{} ({})", r.name, r.message.as_deref().unwrap_or("failed")))
            .collect();
        return Err(format!(
            "the example's Rego tests fail on the grown bundle: {}",
            failed.join(", ")
        ));
    }
    Ok(BundleCheck {
        files: b.files().len(),
        tests_passed: report.passed(),
    })
}

/// The median time of one evaluation of a small `charge_card` by `b` in this process, in µs
/// (up to [`EVAL_SAMPLES`] evaluations within [`EVAL_BUDGET`]), and how many were timed.
pub fn time_evaluation(b: &Bundle) -> (f64, usize) {
    let input = proposal_input(&bodies::charge_payload(1), &Value::Null);
    let until = Instant::now() + EVAL_BUDGET;
    let mut times = Vec::with_capacity(EVAL_SAMPLES);
    while times.len() < EVAL_SAMPLES && (times.len() < 5 || Instant::now() < until) {
        let t = Instant::now();
        let d = b.evaluate(&input);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(d);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times.len())
}

/// A fresh bearer token for the agent (24 random bytes from the kernel, in hex).
fn new_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom for the agent's token")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The identities file: one agent of [`TENANT`] holding the token of SHA-256 `token_sha256`.
pub fn identities_toml(token_sha256: &str) -> String {
    format!(
        "# Written by openexec-load --shield-bench.\n[[agent]]\nid = \"{AGENT_ID}\"\ntenant = \"{TENANT}\"\ntoken_sha256 = \"{token_sha256}\"\n"
    )
}

/// Check sampled 200 answers of `POST /v1/proposals`: each is `approved` by the policy (code
/// `policy_allowed`, rules `[charge_card.small]`, this bundle's `policy_hash`) with an artifact
/// bound to its own request, and their proposals and artifacts are all distinct. Returns how
/// many were checked.
pub fn check_proposal_samples(samples: &[Bytes], policy_hash: &str) -> Result<usize, String> {
    let mut ids = HashSet::new();
    let mut approvals = HashSet::new();
    for (i, b) in samples.iter().enumerate() {
        let v = crate::parse_sample(i, b)?;
        let d = &v["decision"];
        let ok = v["status"] == "approved"
            && v["action"] == bodies::CHARGE_ACTION
            && v["agent_id"] == AGENT_ID
            && d["effect"] == "allow"
            && d["code"] == "policy_allowed"
            && d["rules"] == json!([SMALL_RULE])
            && d["policy_hash"] == policy_hash;
        if !ok {
            return Err(format!(
                "sample {i} is not a charge_card approved by {SMALL_RULE} under policy \
                 {policy_hash}: {v}"
            ));
        }
        let art = &v["artifact"];
        let (Some(approval), Some(rh)) =
            (art["approval_id"].as_str(), art["request_hash"].as_str())
        else {
            return Err(format!("sample {i} has no artifact: {v}"));
        };
        if v["request_hash"].as_str() != Some(rh) {
            return Err(format!(
                "sample {i}'s artifact is bound to request {rh}, not to the proposal's {}",
                v["request_hash"]
            ));
        }
        let Some(id) = v["proposal_id"].as_str() else {
            return Err(format!("sample {i} has no proposal_id: {v}"));
        };
        if !ids.insert(id.to_string()) {
            return Err(format!("proposal {id} was answered twice"));
        }
        if !approvals.insert(approval.to_string()) {
            return Err(format!("artifact {approval} was issued twice"));
        }
    }
    Ok(samples.len())
}

/// The verdict line, and whether the gate is the slower of the two (no ratio: not judged).
pub fn verdict(gate: &Row, exec: &Row) -> (String, bool) {
    let Some(r) = ratio(gate.rps(), exec.rps()) else {
        return (
            "VERDICT: none (a server answered no 200 in its window)".to_string(),
            false,
        );
    };
    let figures = format!(
        "ClawShield {:.0} proposals/s (p50 {} ms, p99 {} ms) vs OpenExec /execute ({}) {:.0} req/s \
         (p50 {} ms, p99 {} ms): gate ÷ exec = {r:.3}",
        gate.rps(),
        ms(gate.lat.p50_us),
        ms(gate.lat.p99_us),
        exec.mode,
        exec.rps(),
        ms(exec.lat.p50_us),
        ms(exec.lat.p99_us),
    );
    if r < 1.0 {
        (
            format!("VERDICT: THE GATE IS SLOWER than /execute — {figures}"),
            true,
        )
    } else {
        (
            format!("VERDICT: the gate is not the slower of the two — {figures}"),
            false,
        )
    }
}

/// One line on where a server's time per request went, from its CPU and its store's commits.
pub fn cost_line(row: &Row, before: &StoreMetrics, after: &StoreMetrics) -> String {
    let rps = row.rps();
    let mut s = String::new();
    if rps > 0.0 {
        let _ = write!(
            s,
            "{:.3} ms per request in this closed loop (1000 ÷ req/s)",
            1000.0 / rps
        );
        if let Some(c) = row.server_cores {
            let _ = write!(s, ", {:.3} ms of server CPU per request", c * 1000.0 / rps);
        }
    }
    let writes = (after.batch_writes - before.batch_writes).max(0.0);
    let commit_secs = (after.commit_secs - before.commit_secs).max(0.0);
    if writes > 0.0 {
        let _ = write!(
            s,
            "; the store's commits took {:.3} ms per write (group commits, warmup included)",
            commit_secs / writes * 1000.0
        );
    }
    s
}

/// The `POST /v1/proposals` of one small `charge_card` (`nonce`), to see the gate answer before
/// the window opens.
async fn probe(
    addr: SocketAddr,
    authorization: &HeaderValue,
    nonce: &str,
) -> anyhow::Result<(u16, Bytes)> {
    let body = json!({
        "action": bodies::CHARGE_ACTION,
        "payload": bodies::charge_payload(0),
        "nonce": nonce,
    });
    let req = hyper::Request::post("/v1/proposals")
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, authorization.clone())
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))?;
    send_once(addr, req).await
}

/// Run the ClawShield benchmark; Ok(false) when it ran but failed.
pub fn run(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    tck: f64,
    run_id: &str,
    cmd: &str,
) -> anyhow::Result<bool> {
    let bin = args.server_bin_for("--shield-bench")?;
    let rules = args.shield_rules;
    let mut f = Findings::default();

    // The bundle and the identities, checked before any server starts.
    let dir = tempfile::Builder::new()
        .prefix("openexec-load-shield-")
        .tempdir()
        .context("cannot create a temporary directory for the policy bundle")?;
    let policy_dir = dir.path().join("policy");
    write_bundle(&policy_dir, rules)?;
    let bundle = Bundle::load(&policy_dir).with_context(|| {
        format!(
            "the generated bundle {} does not load",
            policy_dir.display()
        )
    })?;
    let checked = check_bundle(&bundle, rules).map_err(anyhow::Error::msg)?;
    let policy_hash = bundle.policy_hash().to_string();
    let example = Bundle::from_parts(
        BTreeMap::from([("policy.rego".to_string(), EXAMPLE_POLICY.to_string())]),
        None,
    )
    .context("the example policy does not load")?;
    let (eval_us, eval_n) = time_evaluation(&bundle);
    let (example_us, _) = time_evaluation(&example);
    f.notes.push(format!(
        "policy bundle {policy_hash} ({} .rego files): the example policy (as \
         data.clawshield.example) grown by {rules} generated rules, each evaluated for every \
         charge_card proposal; checked with openexec_policy::Bundle::load before the servers \
         started: a small charge_card is allowed by {SMALL_RULE}, each generated rule alone \
         denies the input that trips it, and the example's {} Rego tests pass",
        checked.files, checked.tests_passed
    ));
    f.notes.push(format!(
        "policy evaluation of a small charge_card in this process, before the servers started \
         (one evaluation at a time, median of {eval_n}): {:.3} ms with the grown bundle, {:.3} \
         ms with the example alone",
        eval_us / 1000.0,
        example_us / 1000.0
    ));
    let token = new_token()?;
    let identities = dir.path().join("identities.toml");
    std::fs::write(&identities, identities_toml(&sha256_hex(token.as_bytes())))
        .with_context(|| format!("cannot write {}", identities.display()))?;
    let mut authorization = HeaderValue::from_str(&format!("Bearer {token}"))?;
    authorization.set_sensitive(true);

    // Both servers up (and checked) before either is measured.
    let mut exec = start_exec(rt, bin, "demo", "openexec")?;
    let env = [
        ("CLAWSHIELD_POLICY", policy_dir.display().to_string()),
        ("CLAWSHIELD_IDENTITIES", identities.display().to_string()),
        ("CLAWSHIELD_RATE_PER_AGENT", "0".to_string()),
        ("CLAWSHIELD_RATE_PER_ACTION", "0".to_string()),
        ("CLAWSHIELD_LOOP_MAX", "0".to_string()),
        ("CLAWSHIELD_BUDGET", "0".to_string()),
    ];
    let mut gate = server::Server::start_shield(bin, &env)?;
    eprintln!(
        "[clawshield] pid {} listening on {} (state in {})",
        gate.pid,
        gate.addr,
        gate.dir().display()
    );
    wait_for_200(
        rt,
        &mut gate,
        "ClawShield",
        "/ready",
        Duration::from_secs(60),
    )?;
    let (st, body) = rt.block_on(get_once(gate.addr, "/health"))?;
    let health: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if st != 200 || health["policy_hash"] != policy_hash.as_str() {
        bail!(
            "ClawShield at {}: /health answered {st} without policy_hash {policy_hash}: {}",
            gate.addr,
            String::from_utf8_lossy(&body)
        );
    }
    let (st, body) = rt.block_on(probe(gate.addr, &authorization, &format!("{run_id}-probe")))?;
    if let Err(e) = check_proposal_samples(std::slice::from_ref(&body), &policy_hash) {
        bail!(
            "ClawShield at {}: a probe proposal answered {st}: {e}",
            gate.addr
        );
    }

    // OpenExec's /execute first, then the gate, each with the other alive and idle.
    let exec_m = measure(
        rt,
        args,
        &Target::server(&exec, "openexec (demo)"),
        Endpoint::Execute(Arc::new(BodySource::template(&format!("{run_id}-x")))),
        tck,
    )?;
    // OpenExec in clawshield mode, as it runs beside the gate: each /execute carries its own
    // v1 artifact (minted before the window, not measured) and is verified before it runs.
    let minted = premint(
        args,
        "openexec (clawshield)",
        &format!("{run_id}-c"),
        Some(exec_m.row.rps()),
    );
    let mut exec_cs = start_exec(rt, bin, "clawshield", "openexec (clawshield)")?;
    let cs_m = measure(
        rt,
        args,
        &Target::server(&exec_cs, "openexec (clawshield)"),
        Endpoint::Execute(Arc::new(minted)),
        tck,
    )?;
    let gate_m = measure(
        rt,
        args,
        &Target::server(&gate, "clawshield"),
        Endpoint::Propose {
            bodies: Arc::new(BodySource::charge(&format!("{run_id}-g"))),
            authorization,
        },
        tck,
    )?;

    // The checks.
    f.execute("openexec", &exec_m, "echo");
    f.execute("openexec (clawshield)", &cs_m, "echo");
    let g = &gate_m.phase.outcome;
    f.samples(
        "clawshield",
        check_proposal_samples(&g.samples, &policy_hash),
        g.ok,
        |n| {
            format!(
                "{n} sampled 200 answers all say \"approved\" by {SMALL_RULE} under policy \
                 {policy_hash}, each with an artifact bound to its own request_hash, {n} distinct \
                 proposals and artifacts"
            )
        },
    );
    let allowed = grew(&gate_m.before, &gate_m.after, ALLOWED_SERIES);
    f.check(
        "clawshield",
        &format!("one decision per answer (its {ALLOWED_SERIES})"),
        check_count("the gate allowed", allowed, g.total),
    );
    for (m, name, prefix) in [
        (&exec_m, "openexec", "openexec_store"),
        (&cs_m, "openexec (clawshield)", "openexec_store"),
        (&gate_m, "clawshield", "clawshield_store"),
    ] {
        let (before, after) = f.store(args, name, m, prefix);
        f.notes
            .push(format!("{name}: {}", cost_line(&m.row, &before, &after)));
        f.phase(args, name, m);
    }

    for (srv, name) in [
        (&mut exec, "openexec"),
        (&mut exec_cs, "openexec (clawshield)"),
        (&mut gate, "clawshield"),
    ] {
        f.stop(name, srv, false)?;
    }

    // The bar is OpenExec as it runs beside the gate (clawshield mode); demo mode is shown too.
    let mut rows = vec![exec_m.row.clone(), cs_m.row.clone(), gate_m.row.clone()];
    for r in rows.iter_mut() {
        r.ratio = ratio(r.rps(), cs_m.row.rps());
    }
    let (verdict_line, slower) = verdict(&gate_m.row, &cs_m.row);
    if slower {
        f.failures.push(format!(
            "{verdict_line} (the issue's bar: the gate must not be the slower of the two)"
        ));
    }
    let mut out = String::new();
    out.push_str(&table_with(&rows, "server", "÷ /execute (clawshield)"));
    out.push('\n');
    out.push_str(&format!("**{verdict_line}**\n\n"));
    out.push_str(&run_lines(args, "per server", cmd));
    out.push_str(&format!(
        "shield benchmark: three fresh servers, each on its own temp dir with a SQLite file (WAL, \
         every answer after its commit's fsync: durability on, the servers' defaults): `openexec serve` in demo mode \
         (POST /execute of the built-in echo, payload {{\"i\": N}}), `openexec serve` in \
         clawshield mode (the same, each request with its own v1 artifact minted before the \
         window and verified by OpenExec: the mode it runs in beside the gate, and the bar) and `openexec shield serve` \
         with the example policy grown by {rules} rules, one agent, rate limits, loop detection \
         and budget off (POST /v1/proposals of a charge_card of 1..9999 EUR minor units, \
         automatically approved: a decision logged and an artifact signed per proposal). Every \
         request a unique nonce; /execute measured first (demo, then clawshield mode), then the \
         gate, each with the other servers idle. requests = 200 answers started after the warmup and answered inside the \
         window; ÷ /execute (clawshield) = req/s ÷ clawshield-mode /execute's req/s; CPU columns are % of one core during \
         the window (softirq: the kernel's, mostly loopback networking; other: every other busy \
         process, the idle server included, which distorts the run when not ~0).\n",
    ));
    f.finish(out, args, cmd, || {
        json!({
            "benchmark": "shield",
            "policy": {
                "policy_hash": policy_hash,
                "generated_rules": rules,
                "files": checked.files,
                "eval_ms_grown": round3(eval_us / 1000.0),
                "eval_ms_example": round3(example_us / 1000.0),
            },
            "rows": rows.iter().map(|r| row_json_as(r, "ratio_to_execute")).collect::<Vec<_>>(),
            "gate_ratio": rows[2].ratio,
            "verdict": verdict_line,
            "gate_slower": slower,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Percentiles;

    fn grown(rules: usize) -> Bundle {
        Bundle::from_parts(bundle_files(rules).unwrap(), None).unwrap()
    }

    #[test]
    fn the_example_becomes_a_subpackage_and_nothing_else_changes() {
        let sub = example_as_subpackage(EXAMPLE_POLICY).unwrap();
        assert_eq!(
            sub.replace(EXAMPLE_SUBPACKAGE, EXAMPLE_PACKAGE),
            EXAMPLE_POLICY
        );
        assert_eq!(sub.matches(EXAMPLE_SUBPACKAGE).count(), 1);
        assert!(example_as_subpackage("package other\n").is_err());
        assert!(example_as_subpackage("package clawshield\npackage clawshield\n").is_err());
    }

    #[test]
    fn the_grown_bundle_has_100_rules_each_reached_and_still_allows_a_small_payment() {
        let text = bench_rego(100);
        // 100 definitions of the partial set, each starting with the action and one more check.
        assert_eq!(
            text.matches("bench_denials contains \"bench.rule_").count(),
            100
        );
        assert_eq!(
            text.matches("\tinput.action == \"charge_card\"\n\tinput.")
                .count(),
            100
        );
        let names: HashSet<String> = (0..100).map(rule_name).collect();
        assert_eq!(names.len(), 100);
        let b = grown(100);
        // The small payment, every rule's trigger, the example's own Rego tests.
        let c = check_bundle(&b, 100).unwrap();
        assert_eq!(c.files, 3);
        assert_eq!(c.tests_passed, EXAMPLE_TESTS.matches("\ntest_").count());
        // The same answer as the example alone for a small, a large and a blocked payment.
        let example = Bundle::from_parts(
            BTreeMap::from([("policy.rego".to_string(), EXAMPLE_POLICY.to_string())]),
            None,
        )
        .unwrap();
        for amount in [1, 9999, 10000, 200_000_000] {
            let input = proposal_input(
                &json!({"amount": amount, "currency": "EUR", "to": "a"}),
                &Value::Null,
            );
            let (x, y) = (b.evaluate(&input), example.evaluate(&input));
            assert_eq!(
                (x.effect, &x.rules, x.cost),
                (y.effect, &y.rules, y.cost),
                "{amount}"
            );
        }
        // A payment that trips two rules names both.
        let mut two = trigger_input(0);
        two["agent"]["id"] = json!("agent-blocked-002");
        let d = b.evaluate(&two);
        assert_eq!(d.effect, Effect::Deny);
        assert_eq!(d.rules, [rule_name(0), rule_name(2)]);
        // Time evaluation works (any positive number).
        let (us, n) = time_evaluation(&b);
        assert!(us > 0.0 && n >= 5);
    }

    #[test]
    fn the_bundle_is_written_and_loads_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), 12).unwrap();
        let b = Bundle::load(dir.path()).unwrap();
        assert_eq!(b.policy_hash(), grown(12).policy_hash());
        assert_eq!(check_bundle(&b, 12).unwrap().files, 3);
        // A check that a rule never reached would fail: 13 asks for one that is not there.
        let e = check_bundle(&b, 13).unwrap_err();
        assert!(e.contains("bench.rule_012"), "{e}");
        // No generated rule: the example alone decides.
        let c = check_bundle(&grown(0), 0).unwrap();
        assert_eq!(c.tests_passed, EXAMPLE_TESTS.matches("\ntest_").count());
    }

    #[test]
    fn proposal_bodies_are_small_payments_with_unique_nonces() {
        let src = BodySource::charge("run1-g");
        let mut nonces = HashSet::new();
        for i in 0..20_000u64 {
            let b = src.next().unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["action"], "charge_card");
            assert_eq!(v["payload"], bodies::charge_payload(i));
            let a = v["payload"]["amount"].as_u64().unwrap();
            assert!((1..10_000).contains(&a), "{a}");
            assert!(nonces.insert(v["nonce"].as_str().unwrap().to_string()));
        }
        assert_eq!(src.used(), 20_000);
        assert_eq!(src.capacity(), None);
    }

    #[test]
    fn identities_parse_as_one_agent() {
        let h = sha256_hex(b"tok");
        let doc: toml::Table = toml::from_str(&identities_toml(&h)).unwrap();
        let agents = doc["agent"].as_array().unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0]["id"].as_str(), Some(AGENT_ID));
        assert_eq!(agents[0]["tenant"].as_str(), Some(TENANT));
        assert_eq!(agents[0]["token_sha256"].as_str(), Some(h.as_str()));
        let t = new_token().unwrap();
        assert_eq!(t.len(), 48);
        assert_ne!(t, new_token().unwrap());
    }

    fn answer(id: &str, approval: &str, hash: &str) -> Bytes {
        Bytes::from(
            json!({
                "proposal_id": id, "status": "approved", "action": "charge_card",
                "agent_id": AGENT_ID, "request_hash": "rh-".to_string() + id,
                "decision": {"effect": "allow", "code": "policy_allowed",
                             "rules": [SMALL_RULE], "policy_hash": hash},
                "artifact": {"approval_id": approval, "request_hash": "rh-".to_string() + id},
            })
            .to_string(),
        )
    }

    #[test]
    fn proposal_samples_are_checked() {
        let ok = [answer("p1", "a1", "h"), answer("p2", "a2", "h")];
        assert_eq!(check_proposal_samples(&ok, "h"), Ok(2));
        assert!(check_proposal_samples(&ok, "other")
            .unwrap_err()
            .contains("not a charge_card approved"));
        let twice = [answer("p1", "a1", "h"), answer("p1", "a2", "h")];
        assert!(check_proposal_samples(&twice, "h")
            .unwrap_err()
            .contains("answered twice"));
        let mut v: Value = serde_json::from_slice(&answer("p3", "a3", "h")).unwrap();
        v["artifact"]["request_hash"] = json!("elsewhere");
        let e = check_proposal_samples(&[Bytes::from(v.to_string())], "h").unwrap_err();
        assert!(e.contains("bound to request elsewhere"), "{e}");
        v["status"] = json!("pending");
        assert!(check_proposal_samples(&[Bytes::from(v.to_string())], "h").is_err());
        assert!(check_proposal_samples(&[Bytes::from_static(b"nope")], "h").is_err());
    }

    fn row(label: &str, requests: u64, p50_us: u64) -> Row {
        Row {
            mode: label.into(),
            endpoint: "POST /x".into(),
            requests,
            seconds: 10.0,
            lat: Percentiles {
                p50_us,
                p99_us: 2 * p50_us,
                p999_us: 3 * p50_us,
                max_us: 4 * p50_us,
                mean_us: p50_us as f64,
            },
            non_ok: Default::default(),
            ratio: None,
            server_cores: Some(1.2),
            client_cores: 0.1,
            other_cores: Some(0.0),
            softirq_cores: Some(0.05),
        }
    }

    #[test]
    fn the_verdict_fails_a_slower_gate_only() {
        let exec = row("openexec (demo)", 40_000, 15_000);
        let (line, slower) = verdict(&row("clawshield", 39_000, 15_100), &exec);
        assert!(slower);
        assert!(line.starts_with("VERDICT: THE GATE IS SLOWER"), "{line}");
        assert!(line.ends_with("gate ÷ exec = 0.975"), "{line}");
        // Slower by one request in the window is slower.
        assert!(verdict(&row("clawshield", 39_999, 15_000), &exec).1);
        let (line, slower) = verdict(&row("clawshield", 40_000, 15_000), &exec);
        assert!(!slower, "{line}");
        assert!(line.contains("ClawShield 4000 proposals/s (p50 15.00 ms, p99 30.00 ms)"));
        let (line, slower) = verdict(&row("clawshield", 0, 0), &exec);
        assert!(!slower && line.contains("none"), "{line}");
        assert_eq!(ratio(50.0, 100.0), Some(0.5));
        assert_eq!(ratio(50.0, 0.0), None);
        let mut rows = vec![exec.clone(), row("clawshield", 20_000, 30_000)];
        rows[1].ratio = ratio(rows[1].rps(), rows[0].rps());
        let t = table_with(&rows, "server", "÷ /execute");
        assert!(
            t.starts_with(
                "| server | endpoint | requests | req/s | p50 ms | p99 ms | p999 ms | ÷ /execute |"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "| clawshield | POST /x | 20000 | 2000 | 30.00 | 60.00 | 90.00 | 0.500 | 0 |"
            ),
            "{t}"
        );
    }

    #[test]
    fn the_cost_line_splits_cpu_and_commits() {
        let r = row("clawshield", 20_000, 30_000); // 2000 req/s, 1.2 cores
        let before = StoreMetrics::default();
        let after = StoreMetrics {
            batch_writes: 1000.0,
            commits: 50.0,
            commit_secs: 0.5,
            ..Default::default()
        };
        let l = cost_line(&r, &before, &after);
        assert_eq!(
            l,
            "0.500 ms per request in this closed loop (1000 ÷ req/s), 0.600 ms of server CPU per \
             request; the store's commits took 0.500 ms per write (group commits, warmup included)"
        );
        let text =
            "clawshield_store_batch_size_sum 40\nclawshield_store_seconds_count{op=\"commit\"} 2\n\
                    openexec_store_batch_size_sum 7\n";
        let m = StoreMetrics::parse_prefixed(text, "clawshield_store").unwrap();
        assert_eq!((m.batch_writes, m.commits), (40.0, 2.0));
        assert_eq!(StoreMetrics::parse(text).unwrap().batch_writes, 7.0);
        assert_eq!(
            grew(
                "clawshield_decisions_total{effect=\"allow\"} 3\n",
                "clawshield_decisions_total{effect=\"allow\"} 10\n",
                ALLOWED_SERIES
            ),
            7
        );
    }

    #[test]
    fn flags_parse_and_conflict() {
        use clap::Parser;
        let ok = Args::try_parse_from([
            "openexec-load",
            "--server-bin",
            "/bin/openexec",
            "--shield-bench",
        ])
        .unwrap();
        assert!(ok.shield_bench);
        assert_eq!(ok.shield_rules, 100);
        for extra in [
            &["--log-bench"][..],
            &["--replicas-bench"],
            &["--actions-bench"],
            &["--modes", "demo"],
            &["--premint", "10"],
        ] {
            let mut v = vec![
                "openexec-load",
                "--server-bin",
                "/bin/openexec",
                "--shield-bench",
            ];
            v.extend_from_slice(extra);
            assert!(Args::try_parse_from(v).is_err(), "{extra:?}");
        }
        assert!(Args::try_parse_from([
            "openexec-load",
            "--server-bin",
            "/bin/openexec",
            "--shield-rules",
            "5"
        ])
        .is_err());
    }
}
