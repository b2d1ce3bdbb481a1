//! ClawShield, the governance gate (SPEC §9): turns an agent's proposal into a decision through
//! policy as code (OPA/Rego, `openexec-policy`) and circuit breakers, brings approvers in when
//! policy asks for a quorum, signs the v1 approval artifacts OpenExec checks offline, and logs
//! every decision, vote, expiry and policy activation in a Merkle log of its own.
//!
//! Built on the service kit, the store and log store libraries, and core; it depends on no
//! other service. Only [`store`] knows the database; only [`http`] knows routes and shapes.
#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
pub mod http;
pub mod identity;
pub mod log;
pub mod model;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use openexec_kit::clock::{Clock, SystemClock};
use serde_json::json;

pub use config::{Config, Settings};
pub use engine::Engine;
pub use identity::{token_hash_hex, Identities};

/// The generated gate key's file under the data directory.
pub const GENERATED_KEY: &str = "clawshield-key.pem";
/// The generated decision log key's file under the data directory.
pub const GENERATED_LOG_KEY: &str = "clawshield-log-key.pem";

/// A started gate: bound, its store open, its first policy loaded.
pub struct Service {
    pub engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
}

impl Service {
    pub async fn start(cfg: Config) -> anyhow::Result<Service> {
        Service::start_with_clock(cfg, Arc::new(SystemClock)).await
    }

    /// [`Service::start`] reading the time from `clock` (tests).
    pub async fn start_with_clock(cfg: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Service> {
        openexec_kit::keys::create_private_dir(&cfg.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                cfg.data_dir.display()
            )
        })?;
        let key = openexec_kit::keys::signing_key(
            cfg.key.as_deref(),
            "CLAWSHIELD_KEY",
            &cfg.data_dir.join(GENERATED_KEY),
            "gate",
        )?;
        let log_key = openexec_kit::keys::signing_key(
            cfg.log_key.as_deref(),
            "CLAWSHIELD_LOG_KEY",
            &cfg.data_dir.join(GENERATED_LOG_KEY),
            "decision log",
        )?;
        if key.verifying_key() == log_key.verifying_key() {
            anyhow::bail!("CLAWSHIELD_KEY and CLAWSHIELD_LOG_KEY are the same key; the decision log needs a key of its own");
        }
        let ids = match &cfg.identities {
            Some(p) => Identities::load(p)?,
            None => {
                tracing::warn!("no identities file (CLAWSHIELD_IDENTITIES): every /v1 call but the roster is refused");
                Identities::default()
            }
        };
        let store = Arc::new(
            store::Store::open(
                &cfg.db,
                store::StoreLimits {
                    timeout: cfg.db_busy_timeout,
                    pool_size: cfg.db_pool_size,
                    connect_wait: cfg.db_connect_wait,
                },
            )
            .await?,
        );
        let log = log::decision_log(
            cfg.log_origin.as_deref(),
            log_key,
            cfg.witness_keys.as_deref(),
            cfg.log_interval,
            cfg.log_batch,
        )?;
        store
            .bind_log_identity(log.origin(), &log.verifier_key())
            .await
            .context("the decision log's key or origin")?;
        log.load(&*store)
            .await
            .context("cannot read the decision log's checkpoints")?;
        // The roster: approvers with keys, versioned by content.
        let entries = ids.roster_entries();
        let hash = openexec_core::json::jcs_sha256(&json!(entries));
        let version = store.roster_version(&hash).await?;
        let mut unsigned = serde_json::Map::new();
        unsigned.insert("v".into(), json!(1));
        unsigned.insert("roster_version".into(), json!(version));
        unsigned.insert("approvers".into(), json!(entries));
        let roster = openexec_core::roster::sign_roster(unsigned, &key);
        let listener = tokio::net::TcpListener::bind(&cfg.bind)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.bind))?;
        let engine = Engine::new(cfg, store, ids, key, Arc::new(log), clock, roster);
        engine.load_policy().await?;
        Ok(Service { engine, listener })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serve until `shutdown` resolves; then finish what was sent to the store and close it.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let engine = self.engine.clone();
        let signer = tokio::spawn(engine.log().clone().run(engine.store().clone()));
        let background = tokio::spawn(engine.clone().background());
        let addr = self.listener.local_addr()?;
        let http_cfg = engine.config().http.clone();
        let guard = http_cfg.guard.for_addr(addr);
        let app = guard.apply(http::router(engine.clone()));
        openexec_kit::serve(self.listener, app, http_cfg.limits, shutdown).await;
        background.abort();
        // A last checkpoint over everything decided, so nothing waits for the next start.
        if let Err(e) = engine.log().sign_head(&**engine.store()).await {
            tracing::warn!(error = %e, "no final checkpoint");
        }
        signer.abort();
        engine.store().close().await;
        tracing::info!("all decisions written; bye");
        Ok(())
    }
}
