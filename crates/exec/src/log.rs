//! The receipt log as OpenExec runs it (SPEC §7): signs checkpoints in batches (by time or
//! count), never one that contradicts an earlier one, serves proofs, and takes witnesses'
//! cosignatures. The log itself (signing rules, proofs, the node cache, cosignatures) is
//! `openexec_log::LogService`; storage is `store`'s, through `openexec_log::LogStore`.
//!
//! The log never calls out: witnesses pull, and deliver their cosignatures with
//! `POST /log/cosignatures`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use openexec_core::keys::{key_id, SigningKey};
use openexec_log::note;
use openexec_log::{Hash, LogService, ServiceError};
use serde_json::{json, Value};

use crate::store::{Store, StoreError};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A refusal of a log request, with the HTTP status it deserves.
#[derive(Debug)]
pub struct LogRefusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn refusal(status: u16, code: &'static str, message: impl Into<String>) -> LogRefusal {
    LogRefusal {
        status,
        code,
        message: message.into(),
    }
}

impl From<StoreError> for LogRefusal {
    fn from(e: StoreError) -> Self {
        refusal(503, "store_unavailable", e.to_string())
    }
}

/// The receipt log: [`LogService`] over the service's [`Store`], with a signing loop.
pub struct ReceiptLog {
    service: LogService,
    interval: Duration,
    batch: u64,
}

fn service_refusal(e: ServiceError<StoreError>) -> LogRefusal {
    match e {
        ServiceError::BadRequest(m) => refusal(400, "invalid_request", m),
        ServiceError::NoCheckpoint => refusal(409, "no_checkpoint", e.to_string()),
        ServiceError::CosignatureRejected(m) => refusal(
            403,
            "cosignature_rejected",
            format!("{m} (OPENEXEC_WITNESS_KEYS)"),
        ),
        ServiceError::TooManyCosignatures { .. } => refusal(
            413,
            "too_many_cosignatures",
            format!("{e}; nothing was stored"),
        ),
        ServiceError::Refused(m) => refusal(500, "internal_error", m),
        ServiceError::Store(e) => e.into(),
    }
}

fn store_error(e: ServiceError<StoreError>) -> StoreError {
    match e {
        ServiceError::Store(e) => e,
        ServiceError::Refused(m) => StoreError::Conflict(m),
        other => StoreError::Corrupt(other.to_string()),
    }
}

fn b64(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
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
        let mut witnesses = Vec::new();
        for k in witness_keys
            .unwrap_or_default()
            .split([',', '\n'])
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            witnesses.push(
                note::parse_cosigner_key(k)
                    .map_err(|e| anyhow::anyhow!("OPENEXEC_WITNESS_KEYS: '{k}': {e}"))?,
            );
        }
        let service = LogService::new(&origin, key, witnesses)
            .map_err(|e| anyhow::anyhow!("OPENEXEC_LOG_ORIGIN '{origin}': {e}"))?;
        Ok(ReceiptLog {
            service,
            interval,
            batch,
        })
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
        let signed = self.service.sign_head(store).await.map_err(store_error)?;
        if let Some(size) = signed {
            metrics::gauge!("openexec_log_checkpoint_size").set(size as f64);
        }
        Ok(signed)
    }

    /// Sign checkpoints while the service runs: after `interval` once the log grew, or at once
    /// when `batch` entries wait. Only the replica holding the store's sequencer lease signs;
    /// the others follow the checkpoints it stores.
    pub async fn run(self: Arc<Self>, store: Arc<Store>) {
        let mut head = store.watch_log_head();
        loop {
            let signed = self.service.signed_size();
            let due = tokio::time::sleep(self.interval);
            tokio::pin!(due);
            loop {
                tokio::select! {
                    _ = &mut due => break,
                    changed = head.changed() => {
                        if changed.is_err() {
                            return; // the store closed
                        }
                        if head.borrow().size >= signed + self.batch {
                            break;
                        }
                    }
                }
            }
            // Follow what any replica stored first (witness cosignatures, or checkpoints of
            // the sequencer before this one took over), then sign if this is the sequencer.
            let result = match self.load(&store).await {
                Ok(()) => match store.sequencer().await {
                    Ok(true) => self.sign_head(&store).await.map(|_| ()),
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "checkpoint not signed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
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
        Ok(inc.map(|inc| {
            json!({
                "leaf_index": inc.leaf_index,
                "tree_size": inc.tree_size,
                "logged_at": logged_at,
                "hashes": b64(&inc.hashes),
                "checkpoint": inc.checkpoint,
            })
        }))
    }

    /// `GET /log/proof/inclusion`.
    pub async fn proof_inclusion(
        &self,
        store: &Store,
        index: u64,
        size: u64,
    ) -> Result<Vec<String>, LogRefusal> {
        self.service
            .proof_inclusion(store, index, size)
            .await
            .map(|h| b64(&h))
            .map_err(service_refusal)
    }

    /// `GET /log/proof/consistency`.
    pub async fn proof_consistency(
        &self,
        store: &Store,
        first: u64,
        second: u64,
    ) -> Result<Vec<String>, LogRefusal> {
        self.service
            .proof_consistency(store, first, second)
            .await
            .map(|h| b64(&h))
            .map_err(service_refusal)
    }

    /// `GET /log/entries`: [start, min(end, start + 1000, size)).
    pub async fn entries(
        &self,
        store: &Store,
        start: u64,
        end: u64,
    ) -> Result<Vec<String>, LogRefusal> {
        let leaves = self
            .service
            .entries(store, start, end)
            .await
            .map_err(service_refusal)?;
        Ok(leaves.iter().map(|d| B64.encode(d)).collect())
    }

    /// `POST /log/cosignatures`: at most one line per configured witness, each a known
    /// witness's valid cosignature of the latest checkpoint (else nothing is stored). Returns
    /// how many were stored (new, or newer than the stored line of their witness).
    pub async fn add_cosignatures(&self, store: &Store, text: &str) -> Result<usize, LogRefusal> {
        self.service
            .add_cosignatures(store, text)
            .await
            .map_err(service_refusal)
    }
}
