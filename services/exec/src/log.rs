//! The receipt log as OpenExec runs it (SPEC §7): signs checkpoints in batches (by time or
//! count), never one that contradicts an earlier one, serves proofs, and takes witnesses'
//! cosignatures. The log itself (signing rules, proofs, the node cache, cosignatures) is
//! `openexec_log::LogService`; its signing loop and `/log/*` routes are `openexec_logstore`'s;
//! storage is `store`'s, through `openexec_log::LogStore`.
//!
//! The log never calls out: witnesses pull, and deliver their cosignatures with
//! `POST /log/cosignatures`.

use std::sync::Arc;
use std::time::Duration;

use openexec_core::keys::{key_id, SigningKey};
use openexec_log::{note, LogService, ServiceError};
use openexec_logstore::signing::{self, Cadence};
use serde_json::Value;

use crate::store::{Store, StoreError};

/// The setting that lists the witnesses, named in a refused cosignature's message.
pub const WITNESS_SETTING: &str = "OPENEXEC_WITNESS_KEYS";

/// The receipt log: [`LogService`] over the service's [`Store`], with a signing loop.
pub struct ReceiptLog {
    service: Arc<LogService>,
    cadence: Cadence,
}

fn store_error(e: ServiceError<StoreError>) -> StoreError {
    match e {
        ServiceError::Store(e) => e,
        ServiceError::Refused(m) => StoreError::Conflict(m),
        other => StoreError::Corrupt(other.to_string()),
    }
}

impl ReceiptLog {
    /// `origin` defaults to `openexec/receipts/<key_id of the log key>`.
    pub fn new(
        origin: Option<&str>,
        key: SigningKey,
        witness_keys: Option<&str>,
        interval: Duration,
        batch: u64,
    ) -> anyhow::Result<ReceiptLog> {
        let origin = match origin {
            Some(o) => o.to_string(),
            None => format!("openexec/receipts/{}", key_id(&key.verifying_key())),
        };
        let witnesses = signing::parse_witness_keys(witness_keys, WITNESS_SETTING)
            .map_err(anyhow::Error::msg)?;
        let service = LogService::new(&origin, key, witnesses)
            .map_err(|e| anyhow::anyhow!("OPENEXEC_LOG_ORIGIN '{origin}': {e}"))?;
        Ok(ReceiptLog {
            service: Arc::new(service),
            cadence: Cadence {
                interval,
                batch,
                size_gauge: "openexec_log_checkpoint_size",
            },
        })
    }

    /// The log as the `/log/*` routes serve it.
    pub fn service(&self) -> Arc<LogService> {
        self.service.clone()
    }

    pub fn origin(&self) -> &str {
        self.service.origin()
    }

    /// The log's note verifier.
    pub fn verifier(&self) -> note::Verifier {
        self.service.verifier()
    }

    /// The witnesses whose cosignatures this log accepts.
    pub fn witnesses(&self) -> &[note::CosignerVerifier] {
        self.service.witnesses()
    }

    /// The note verifier key of the log (`<origin>+<hex key hash>+<base64(0x01 ‖ key)>`).
    pub fn verifier_key(&self) -> String {
        self.service.verifier_key()
    }

    /// The latest signed checkpoint with the witness cosignature lines after its own.
    pub fn checkpoint_text(&self) -> Option<String> {
        self.service.checkpoint_text()
    }

    /// Load the latest checkpoint the store holds.
    pub async fn load(&self, store: &Store) -> Result<(), StoreError> {
        self.service.load(store).await
    }

    /// Sign a checkpoint for the store's head if it moved past the last one. Refuses when the
    /// stored log did not match its last checkpoint at start-up.
    pub async fn sign_head(&self, store: &Store) -> Result<Option<u64>, StoreError> {
        signing::sign_head(&self.service, store, &self.cadence)
            .await
            .map_err(store_error)
    }

    /// Sign checkpoints while the service runs: after `interval` once the log grew, or at once
    /// when `batch` entries wait. Only the replica holding the store's sequencer lease signs;
    /// the others follow the checkpoints it stores (`openexec_logstore::signing::run`).
    pub async fn run(self: Arc<Self>, store: Arc<Store>) {
        signing::run(&self.service, store, self.cadence.clone()).await
    }

    /// The inclusion of entry `index` in the latest signed checkpoint, as evidence carries it;
    /// `None` while no checkpoint covers it yet.
    pub async fn inclusion(
        &self,
        store: &Store,
        index: u64,
        logged_at: &str,
    ) -> Result<Option<Value>, StoreError> {
        let inc = self
            .service
            .inclusion(store, index)
            .await
            .map_err(store_error)?;
        Ok(inc.map(|inc| signing::inclusion_json(&inc, logged_at)))
    }
}
