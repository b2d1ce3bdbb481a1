//! The OpenExec execution service: verifies approval artifacts offline, claims the nonce
//! durably, runs the handler at most once, and signs a deterministic receipt for every attempt.
//!
//! Built on `openexec-core` (formats, hashes, signatures). It never calls ClawShield or any
//! other service while deciding whether to run; the only outbound traffic is what a handler's own
//! configuration names. Only [`store`] knows which database is used; only [`http`] knows about
//! JSON error shapes.
#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
pub mod handler;
pub mod http;
pub mod keyfile;
pub mod log;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

pub use config::{Config, Mode, Settings};
pub use engine::{Engine, Keys};
pub use handler::{Handler, Registry};

/// A started service: bound, recovered, ready to serve.
pub struct Service {
    pub engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
}

impl Service {
    /// Load keys, open and migrate the store, turn interrupted claims into receipts, and bind.
    pub async fn start(cfg: Config, handlers: Registry) -> anyhow::Result<Service> {
        std::fs::create_dir_all(&cfg.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                cfg.data_dir.display()
            )
        })?;
        let receipt = keyfile::receipt_key(&cfg)?;
        let approval = keyfile::approval_keys(&cfg)?;
        let previous = keyfile::previous_receipt_keys(&cfg)?;
        if cfg.mode == Mode::Demo {
            tracing::warn!("==============================================================");
            tracing::warn!("DEMO MODE: actions run WITHOUT approval. Every receipt says");
            tracing::warn!("\"mode\": \"demo\". Set OPENEXEC_MODE=clawshield for real use.");
            tracing::warn!("==============================================================");
        } else if approval.is_empty() {
            tracing::error!("clawshield mode but CLAWSHIELD_PUBLIC_KEY not configured: every execution is refused and /ready fails");
        }
        if cfg.allowed_actions.is_none() {
            tracing::warn!(
                "no allow-list (OPENEXEC_ALLOWED_ACTIONS): every registered action may run"
            );
        }
        let store = store::Store::open(
            &cfg.db,
            store::StoreLimits {
                timeout: cfg.db_busy_timeout,
                pool_size: cfg.db_pool_size,
                connect_wait: cfg.db_connect_wait,
            },
        )
        .await?;
        let listener = tokio::net::TcpListener::bind(&cfg.bind)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.bind))?;
        let keys = Keys {
            previous_receipt: previous,
            ..Keys::new(receipt, approval)
        };
        let log = log::ReceiptLog::new(
            cfg.log_origin.as_deref(),
            keyfile::log_key(&cfg)?,
            cfg.witness_keys.as_deref(),
            cfg.log_interval,
            cfg.log_batch,
        )?;
        store
            .bind_log_identity(log.origin(), &log.verifier_key())
            .await
            .context("the receipt log's key or origin")?;
        log.load(&store)
            .await
            .context("cannot read the receipt log's checkpoints")?;
        let engine = Engine::new(cfg, store, log, handlers, keys);
        let n = engine
            .recover_interrupted()
            .await
            .context("cannot recover interrupted executions")?;
        if n > 0 {
            tracing::warn!(
                count = n,
                "executions interrupted by the last stop now have `interrupted` receipts"
            );
        }
        Ok(Service { engine, listener })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serve until `shutdown` resolves; then stop accepting, let running handlers finish and
    /// write their receipts, and close the store.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let engine = self.engine.clone();
        let repair = tokio::spawn(engine.clone().repair_loop());
        let signer = tokio::spawn(engine.clone().log_loop());
        let addr = self.listener.local_addr()?;
        let http_cfg = engine.config().http.clone();
        let guard = http_cfg.guard.for_addr(addr);
        if guard.host_check() == openexec_kit::HostCheck::Off {
            tracing::warn!(%addr, "requests naming any Host are served (no OPENEXEC_ALLOWED_HOSTS, or *): set it to the names clients use, against DNS rebinding");
        }
        let app = guard.apply(http::router(engine.clone()));
        openexec_kit::serve(self.listener, app, http_cfg.limits, shutdown).await;
        tracing::info!("stopped accepting; waiting for running handlers to finish");
        engine.shutdown().await;
        repair.abort();
        signer.abort();
        tracing::info!("all receipts written; bye");
        Ok(())
    }
}
