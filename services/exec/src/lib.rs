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
/// The handler API (its own crate, re-exported here for embedders).
pub use openexec_handler as handler;
pub mod http;
pub mod keyfile;
pub mod log;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use openexec_kit::clock::{Clock, SystemClock};

pub use config::{Config, Mode, Settings};
pub use engine::{Engine, Keys};
pub use handler::{Handler, Registry};
/// The action registry file's loader (its own crate, re-exported here for embedders).
pub use openexec_actions as actions;

/// A started service: bound, recovered, ready to serve.
pub struct Service {
    pub engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    shutdown_grace: std::time::Duration,
}

impl Service {
    /// Load keys, open and migrate the store, turn interrupted claims into receipts, and bind.
    pub async fn start(cfg: Config, handlers: Registry) -> anyhow::Result<Service> {
        Service::start_with_clock(cfg, handlers, Arc::new(SystemClock)).await
    }

    /// [`Service::start`] with the action registry file of `cfg.actions` (`OPENEXEC_ACTIONS`,
    /// SPEC §10), if one is set, loaded into `handlers` through the handler kinds `kinds`
    /// offers. A registry that does not load stops the start with its message (naming the file,
    /// the action and the key); nothing is served.
    pub async fn start_declared(
        mut cfg: Config,
        mut handlers: Registry,
        kinds: &openexec_actions::Loader,
    ) -> anyhow::Result<Service> {
        if let Some(path) = cfg.actions.take() {
            kinds.load_file(&path, &mut handlers)?;
            let declared: Vec<&str> = handlers.actions().collect();
            tracing::info!(file = %path.display(), actions = ?declared, "action registry loaded");
        }
        Service::open(cfg, handlers, Arc::new(SystemClock)).await
    }

    /// [`Service::start`] with approval windows checked against `clock` instead of the system's
    /// (tests set the time instead of waiting for it).
    pub async fn start_with_clock(
        cfg: Config,
        handlers: Registry,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Service> {
        Service::open(cfg, handlers, clock).await
    }

    async fn open(
        cfg: Config,
        handlers: Registry,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Service> {
        if let Some(path) = &cfg.actions {
            // Fail closed: a registry file that is set but not read would leave its actions
            // silently missing (or, worse, an operator believing they are declared).
            anyhow::bail!(
                "OPENEXEC_ACTIONS is set ({}) but this service was started without handler kinds to build it with: use Service::start_declared",
                path.display()
            );
        }
        openexec_kit::keys::create_private_dir(&cfg.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                cfg.data_dir.display()
            )
        })?;
        let receipt = keyfile::receipt_key(&cfg)?;
        let log_key = keyfile::log_key(&cfg)?;
        if log_key.verifying_key() == receipt.verifying_key() {
            anyhow::bail!(
                "OPENEXEC_RECEIPT_KEY and OPENEXEC_LOG_KEY are the same key; the receipt log needs a key of its own (a leaked log key must not sign receipts): generate one with `openexec keygen --out log-key.pem`"
            );
        }
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
        let roster = match (&cfg.approver_roster, cfg.mode) {
            (Some(path), Mode::Clawshield) => Some(keyfile::approver_roster(path, &approval)?),
            _ => None,
        };
        let keys = Keys {
            previous_receipt: previous,
            roster,
            ..Keys::new(receipt, approval)
        };
        let log = log::receipt_log(
            cfg.log_origin.as_deref(),
            log_key,
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
        let shutdown_grace = cfg.http.limits.shutdown_grace;
        let engine = Engine::new(cfg, store, log, handlers, keys, clock);
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
        Ok(Service {
            engine,
            listener,
            shutdown_grace,
        })
    }

    /// How long a graceful stop waits for open connections and running handlers
    /// (`OPENEXEC_SHUTDOWN_GRACE_MS` unless set here); what still runs then is cut off and its
    /// request becomes `interrupted`.
    pub fn with_shutdown_grace(mut self, grace: std::time::Duration) -> Service {
        self.shutdown_grace = grace;
        self
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serve until `shutdown` resolves; then stop accepting, let running handlers finish for
    /// at most the shutdown grace (what still runs then is cut off and answered as
    /// `interrupted`), write their receipts, and close the store.
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
        let grace = self.shutdown_grace;
        let cutter = engine.clone();
        let shutdown = async move {
            shutdown.await;
            // The grace runs from the stop request. Running handlers get three quarters of it;
            // then they are cut off, and the last quarter lets their (interrupted) answers reach
            // the waiting clients before the HTTP drain drops what is left.
            tokio::spawn(async move {
                tokio::time::sleep(grace.mul_f64(0.75)).await;
                cutter.cut_off_handlers();
            });
        };
        let limits = openexec_kit::HttpLimits {
            shutdown_grace: grace,
            ..http_cfg.limits
        };
        openexec_kit::serve(self.listener, app, limits, shutdown).await;
        tracing::info!("stopped accepting; waiting for running handlers to finish");
        engine.shutdown(grace).await;
        repair.abort();
        signer.abort();
        tracing::info!("all receipts written; bye");
        Ok(())
    }
}
