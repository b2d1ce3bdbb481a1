//! Configuration from the outside: ClawLedger runs from a TOML file alone (`--config` or
//! `CLAWLEDGER_CONFIG`), refuses an unknown key naming it (exit 2), and takes flags over the
//! environment over the file; bad values name their setting (exit 2); `--help` shows each
//! setting's default and variable; and the README's tables list exactly the declared settings,
//! under the names the declarations give them.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use openexec_kit::config::{Layer, Layers, ServiceSettings, Spec};
use serde_json::Value;

/// A note verifier key for a log called `origin` (ClawLedger only parses it here).
fn verifier_key(origin: &str) -> String {
    let sk = openexec_core::keys::signing_key_from_seed([9; 32]);
    openexec_log::note::Signer::new(origin, sk)
        .unwrap()
        .verifier_key()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// GET `path` from `l` naming `host` in the Host header; (status, JSON body).
async fn get_as(l: &LedgerServer, host: &str, path: &str) -> (u16, Value) {
    let r = l
        .client
        .get(l.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn exit_of(f: &StartFailure) -> Option<i32> {
    f.status.and_then(|s| s.code())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_runs_from_its_config_file_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let db = tmp.path().join("witness.db");
    let watched = verifier_key("example.org/log");
    let file = write(
        tmp.path(),
        "clawledger.toml",
        &format!(
            "bind = \"127.0.0.1:0\"\n\
             data_dir = \"{}\"\n\
             db_url = \"sqlite:///{}\"\n\
             name = \"clawledger/from-file\"\n\
             poll_ms = 500\n\
             watch = [\"http://127.0.0.1:9={watched}\"]\n\
             allowed_hosts = [\"ledger.internal\"]\n",
            state.display(),
            db.display()
        ),
    );
    let l = LedgerServer::try_start_bare(&[], &[("CLAWLEDGER_CONFIG", &file)])
        .unwrap_or_else(|f| panic!("did not start ({:?}):\n{}", f.status, f.log));
    // Bound where the file says (port 0: a free one), its state and database where it says.
    assert!(l.base.starts_with("http://127.0.0.1:"), "{}", l.base);
    assert!(state.join("witness-key.pem").is_file(), "{}", l.log());
    assert!(db.is_file(), "{}", l.log());
    assert!(!l.dir().join("clawledger.db").exists());
    // The name and the Host allow-list are the file's: the list replaces the loopback default.
    let (st, h) = get_as(&l, "ledger.internal", "/health").await;
    assert_eq!(st, 200, "{h}");
    assert_eq!(h["name"], "clawledger/from-file", "{h}");
    let (st, b) = get_as(&l, &l.addr(), "/health").await;
    assert_eq!((st, code(&b)), (403, "host_not_allowed"), "{b}");
    // The watched log is the file's.
    let log = l.log();
    assert!(
        log.contains("watching") && log.contains("example.org/log"),
        "{log}"
    );
    drop(l);

    // The same with --config instead of the variable.
    let l = LedgerServer::try_start_bare(&["--config", &file], &[])
        .unwrap_or_else(|f| panic!("did not start ({:?}):\n{}", f.status, f.log));
    let (st, h) = get_as(&l, "ledger.internal", "/health").await;
    assert_eq!(
        (st, &h["name"]),
        (200, &Value::from("clawledger/from-file"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_takes_flags_over_environment_over_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "clawledger.toml",
        "name = \"clawledger/from-file\"\nallowed_hosts = [\"ledger.internal\"]\npoll_ms = 500\n",
    );
    let env = [
        ("CLAWLEDGER_CONFIG", file.as_str()),
        ("CLAWLEDGER_NAME", "clawledger/from-env"),
        ("CLAWLEDGER_ALLOWED_HOSTS", "other.internal,127.0.0.1"),
    ];
    let l = LedgerServer::start(&env);
    let (st, h) = get_as(&l, "other.internal", "/health").await;
    assert_eq!(st, 200, "{h}");
    assert_eq!(
        h["name"], "clawledger/from-env",
        "the environment wins: {h}"
    );
    let (st, b) = get_as(&l, "ledger.internal", "/health").await;
    assert_eq!(
        (st, code(&b)),
        (403, "host_not_allowed"),
        "a list is replaced whole, not merged: {b}"
    );
    drop(l);

    let l = LedgerServer::try_start_bare(
        &[
            "--name",
            "clawledger/from-flag",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            &tmp.path().join("d").display().to_string(),
            "--db-url",
            &format!("sqlite:///{}", tmp.path().join("l.db").display()),
        ],
        &env,
    )
    .unwrap_or_else(|f| panic!("did not start ({:?}):\n{}", f.status, f.log));
    let (st, h) = get_as(&l, "127.0.0.1", "/health").await;
    assert_eq!(st, 200, "{h}");
    assert_eq!(h["name"], "clawledger/from-flag", "the flag wins: {h}");
}

/// `openexec ledger serve` with `args` and `env` only exits 2 before listening, saying `want`.
fn refused(args: &[&str], env: &[(&str, &str)], want: &str) {
    let f = LedgerServer::try_start_bare(args, env)
        .err()
        .unwrap_or_else(|| panic!("started with {args:?} {env:?}"));
    assert_eq!(exit_of(&f), Some(2), "{}", f.log);
    assert!(f.log.contains(want), "no {want:?} in {}", f.log);
}

#[test]
fn a_ledger_config_file_with_an_unknown_key_or_a_bad_value_exits_2_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "typo.toml",
        "poll_ms = 500\npol_ms = 100\nwatch = []\n",
    );
    refused(
        &[],
        &[("CLAWLEDGER_CONFIG", &file)],
        &format!("config file {file}: TOML parse error at line 2"),
    );
    refused(&[], &[("CLAWLEDGER_CONFIG", &file)], "unknown key `pol_ms`");
    let file = write(tmp.path(), "type.toml", "poll_ms = \"fast\"\n");
    refused(
        &["--config", &file],
        &[],
        "`poll_ms`: invalid type: string \"fast\"",
    );
    let file = write(tmp.path(), "zero.toml", "poll_ms = 0\n");
    refused(&["--config", &file], &[], "--poll-ms must be positive");
    refused(
        &["--config", "/nonexistent/clawledger.toml"],
        &[],
        "cannot read config file /nonexistent/clawledger.toml",
    );
    refused(
        &[],
        &[("CLAWLEDGER_POLL_MS", "often")],
        "CLAWLEDGER_POLL_MS must be a whole number, got 'often'",
    );
}

#[test]
fn openexec_refuses_a_bad_environment_value_naming_it() {
    let f = Server::try_start(&[("OPENEXEC_MAX_CONNECTIONS", "many")])
        .err()
        .expect("started with a word for a number");
    assert_eq!(exit_of(&f), Some(2), "{}", f.log);
    assert!(
        f.log
            .contains("OPENEXEC_MAX_CONNECTIONS must be a whole number, got 'many'"),
        "{}",
        f.log
    );
}

#[test]
fn help_shows_every_setting_with_its_default_and_variable() {
    for (args, specs, prefix) in [
        (
            vec!["serve", "--help"],
            openexec_exec::Settings::specs(openexec_exec::Settings::PREFIX),
            "OPENEXEC",
        ),
        (
            vec!["ledger", "serve", "--help"],
            openexec_ledger::Settings::specs(openexec_ledger::Settings::PREFIX),
            "CLAWLEDGER",
        ),
    ] {
        let out = cli(&args);
        assert_eq!(exit_code(&out), 0, "{}", stderr(&out));
        let help = stdout(&out);
        assert!(
            help.contains("--config <FILE>") && help.contains(&format!("[env: {prefix}_CONFIG]")),
            "{help}"
        );
        for s in &specs {
            assert!(
                help.contains(&format!("--{} <", s.flag)),
                "no --{} in\n{help}",
                s.flag
            );
            assert!(
                help.contains(&s.help_line()),
                "no {:?} in\n{help}",
                s.help_line()
            );
        }
    }
    let help = stdout(&cli(&["serve", "--help"]));
    for want in [
        "[default: demo] [env: OPENEXEC_MODE]",
        "[default: 127.0.0.1:5000] [env: OPENEXEC_BIND]",
        "[env: CLAWSHIELD_PUBLIC_KEY]",
        "[default: default] [env: CLAWSHIELD_TENANT_ID]",
        "[default: 10000] [env: OPENEXEC_HEADER_TIMEOUT_MS]",
    ] {
        assert!(help.contains(want), "no {want:?} in\n{help}");
    }
    let help = stdout(&cli(&["ledger", "serve", "--help"]));
    for want in [
        "[default: 127.0.0.1:5100] [env: CLAWLEDGER_BIND]",
        "[env: CLAWLEDGER_KEY]",
        "[env: CLAWLEDGER_WATCH]",
        "[default: 1024] [env: CLAWLEDGER_MAX_CONNECTIONS]",
    ] {
        assert!(help.contains(want), "no {want:?} in\n{help}");
    }
}

/// The README's configuration rows: (variable, TOML key or "—", default cell).
fn readme_rows() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("read README.md");
    let unquote = |c: &str| c.trim().trim_matches('`').to_string();
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.strip_prefix('|')?.split(" | ").collect();
            let var = unquote(cells.first()?);
            let known = ["OPENEXEC_", "CLAWSHIELD_", "CLAWLEDGER_"];
            (cells.len() >= 4 && known.iter().any(|p| var.starts_with(p)))
                .then(|| (var, unquote(cells[1]), cells[2].trim().to_string()))
        })
        .collect()
}

#[test]
fn the_readme_lists_exactly_the_declared_settings() {
    let rows = readme_rows();
    let declared: Vec<Spec> = openexec_exec::Settings::specs(openexec_exec::Settings::PREFIX)
        .into_iter()
        .chain(openexec_ledger::Settings::specs(
            openexec_ledger::Settings::PREFIX,
        ))
        .collect();
    assert!(rows.len() >= declared.len(), "README rows: {rows:?}");
    let mut listed = BTreeSet::new();
    for (var, key, default) in &rows {
        if key == "—" {
            // Not a setting of the file: the file itself and the log filters.
            let others = [
                Layers::<openexec_exec::Settings>::config_env(),
                Layers::<openexec_ledger::Settings>::config_env(),
                "OPENEXEC_LOG".to_string(),
                "CLAWLEDGER_LOG".to_string(),
            ];
            assert!(others.contains(var), "README row {var} has no TOML key");
            continue;
        }
        let spec = declared
            .iter()
            .find(|s| &s.env == var)
            .unwrap_or_else(|| panic!("README lists {var}, which no declaration has"));
        assert_eq!(&spec.key, key, "README: {var}'s TOML key");
        // A default written as one literal value must be the declared one.
        let cell = default.as_str();
        if cell.len() > 2
            && cell.starts_with('`')
            && cell.ends_with('`')
            && cell.matches('`').count() == 2
        {
            assert_eq!(
                spec.default.as_deref(),
                Some(&cell[1..cell.len() - 1]),
                "README: {var}'s default"
            );
        }
        listed.insert(var.clone());
    }
    for s in &declared {
        assert!(listed.contains(&s.env), "README does not list {}", s.env);
    }
}
