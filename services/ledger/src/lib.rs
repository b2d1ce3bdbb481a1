//! # openexec-ledger: ClawLedger, the witness
//!
//! ClawLedger watches append-only logs (OpenExec's receipt log, and later ClawShield's decision
//! log) from the outside, as SPEC §7 describes a witness. For each configured log (URL, and the
//! note verifier key whose name is the log's origin) it pulls, every `poll` interval:
//! the signed checkpoint; the consistency proof from the size it last verified; the new entries,
//! each appended to its own copy of the log's frontier, which must give the checkpoint's root.
//! New entries are fetched and stored in bounded chunks (`--catchup-chunk`), as *pending*
//! progress that a restart resumes; nothing is verified, cosigned or served until the frontier
//! after the last chunk gives the checkpoint's root.
//! When all of it holds it keeps the entries and tree nodes (a mirror), cosigns the checkpoint
//! with a C2SP `tlog-cosignature` line (with a timestamp) and delivers that line to the log with
//! `POST /log/cosignatures` — the log never calls out. A shrink, a fork (same size, another
//! root), a bad signature or proof, or entries that do not hash into the root is an *alert*:
//! logged at error, counted in `clawledger_alerts_total{origin,kind}`, stored and listed at
//! `GET /alerts`, and never cosigned; the state stays at the last good checkpoint. So is an
//! answer over its size cap or one whose body does not finish within the fetch timeout
//! (`response_too_large`, `response_timeout`; see [`Limits`]): nothing a log sends is buffered
//! beyond its cap.
//!
//! It also serves what it mirrored, so that evidence survives the loss of the log:
//! `GET /evidence/{origin}/{index}` gives the entry, its inclusion proof and the latest
//! checkpoint it cosigned (the log's signature and its own cosignature line).
//!
//! What it leaves to others: the tree maths and note formats are `openexec-log`'s; key parsing
//! is `openexec-core`'s; deciding which witnesses a verifier requires (k-of-n) is the verifier's
//! (`openexec verify --witness … --k …`); serving the cosignature beside the checkpoint is the
//! log's. It never calls OpenExec's internals: only its public HTTP endpoints.
//!
//! *Trust boundary*: everything a watched log answers (checkpoints, proofs, entries) is untrusted
//! until checked here against the configured verifier key and what ClawLedger verified before;
//! the only thing ClawLedger vouches for, with its own key, is a checkpoint that passed every
//! check. Its HTTP API serves only what such a checkpoint covers (never pending catch-up entries).
//!
//! Its database is SQLite or PostgreSQL (`CLAWLEDGER_DB_URL`); only `store.rs` knows which.

#![forbid(unsafe_code)]

pub mod config;
pub mod http;
pub mod store;
pub mod witness;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openexec_core::keys::{self, SigningKey};
use openexec_log::note::Cosigner;

pub use config::Settings;
pub use store::{parse_db_url, DbConfig, Store};
pub use witness::{Limits, Outcome, Watch, Witness};

/// File name of the generated witness key inside the data directory.
pub const GENERATED_KEY: &str = "witness-key.pem";

/// Default most entries per catch-up chunk (`CLAWLEDGER_CATCHUP_CHUNK`).
pub const DEFAULT_CATCHUP_CHUNK: u64 = 10_000;
/// Largest allowed catch-up chunk: a chunk is held in memory and stored in one transaction.
pub const MAX_CATCHUP_CHUNK: u64 = 1_000_000;
/// Largest allowed database pool.
pub const MAX_POOL_SIZE: u32 = 1000;
/// Allowed range of `--max-checkpoint-bytes`.
pub const CHECKPOINT_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=16 * 1024 * 1024;
/// Allowed range of `--max-entries-bytes` (a page of 1,000 entries must fit).
pub const ENTRIES_BYTES_RANGE: std::ops::RangeInclusive<u64> = 64 * 1024..=1024 * 1024 * 1024;
/// Largest allowed `--fetch-timeout-ms` (one hour).
pub const MAX_FETCH_TIMEOUT_MS: u64 = 3_600_000;

/// What `openexec ledger serve` was given, checked ([`Config::from_settings`]).
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (port 0 picks a free one).
    pub bind: String,
    /// Where the generated key lives.
    pub data_dir: PathBuf,
    /// The database (SQLite file or PostgreSQL) and its pool settings.
    pub db: DbConfig,
    /// The witness key file; generated under `data_dir` when absent.
    pub key: Option<String>,
    /// The cosigner name; default `clawledger/<key id>`.
    pub name: Option<String>,
    /// The logs to watch.
    pub watch: Vec<Watch>,
    /// How often each log is polled.
    pub poll: Duration,
    /// Most entries per catch-up chunk.
    pub catchup_chunk: u64,
    /// What a round may read from a watched log (answer sizes, fetch timeout).
    pub limits: Limits,
    /// HTTP limits and the Host/Origin guard's settings.
    pub http: openexec_kit::HttpConfig,
}

/// The witness key: `CLAWLEDGER_KEY` (a key file's path, or the key itself), else the one
/// generated under the data directory (0700) on first start (0600). The rules are the kit's, as
/// in every service.
pub fn load_key(cfg: &Config) -> anyhow::Result<SigningKey> {
    if cfg.key.is_none() {
        openexec_kit::keys::create_private_dir(&cfg.data_dir)?;
    }
    Ok(openexec_kit::keys::signing_key(
        cfg.key.as_deref(),
        "CLAWLEDGER_KEY",
        &cfg.data_dir.join(GENERATED_KEY),
        "witness",
    )?)
}

/// The default cosigner name of a key: `clawledger/<first 16 hex of SHA-256(public key)>`.
pub fn default_name(key: &SigningKey) -> String {
    format!("clawledger/{}", keys::key_id(&key.verifying_key()))
}

/// A started ClawLedger: bound, database open, not yet serving or watching.
pub struct Ledger {
    cfg: Config,
    listener: tokio::net::TcpListener,
    store: Arc<Store>,
    cosigner: Cosigner,
}

impl Ledger {
    pub async fn start(cfg: Config) -> anyhow::Result<Ledger> {
        let key = load_key(&cfg)?;
        let name = cfg.name.clone().unwrap_or_else(|| default_name(&key));
        let cosigner =
            Cosigner::new(&name, key).map_err(|e| anyhow::anyhow!("--name '{name}': {e}"))?;
        let store = Arc::new(Store::open(&cfg.db).await?);
        let listener = tokio::net::TcpListener::bind(&cfg.bind)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.bind))?;
        Ok(Ledger {
            cfg,
            listener,
            store,
            cosigner,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The cosigner verifier key (`<name>+<hex>+<base64(0x04 ‖ key)>`) verifiers configure.
    pub fn verifier_key(&self) -> String {
        self.cosigner.verifier_key()
    }

    /// Serve and watch until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // The recorder first: the witness loops count from their first round.
        openexec_kit::metrics::handle();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut tasks = Vec::new();
        for w in &self.cfg.watch {
            tracing::info!(origin = %w.origin(), url = %w.url, "watching");
            let witness = Witness::new(
                w.clone(),
                self.cosigner.clone(),
                self.store.clone(),
                http.clone(),
                self.cfg.poll,
                self.cfg.catchup_chunk,
            )
            .with_limits(self.cfg.limits);
            tasks.push(tokio::spawn(witness.run(stop_rx.clone())));
        }
        let app = http::router(http::AppState {
            store: self.store.clone(),
            name: self.cosigner.name().to_string(),
            verifier_key: self.cosigner.verifier_key(),
        });
        let addr = self.listener.local_addr()?;
        let guard = self.cfg.http.guard.for_addr(addr);
        if guard.host_check() == openexec_kit::HostCheck::Off {
            tracing::warn!(%addr, "requests naming any Host are served (no CLAWLEDGER_ALLOWED_HOSTS, or *): set it to the names clients use, against DNS rebinding");
        }
        openexec_kit::serve(
            self.listener,
            guard.apply(app),
            self.cfg.http.limits,
            shutdown,
        )
        .await;
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
