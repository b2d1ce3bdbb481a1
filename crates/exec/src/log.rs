//! The receipt log as OpenExec runs it (SPEC §7): signs checkpoints in batches (by time or
//! count), never one that contradicts an earlier one, serves proofs, and takes witnesses'
//! cosignatures. Tree maths and note formats are `openexec-log`'s; storage is `store`'s.
//!
//! The log never calls out: witnesses pull, and deliver their cosignatures with
//! `POST /log/cosignatures`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use openexec_core::keys::{key_id, SigningKey};
use openexec_log::note;
use openexec_log::{plan_consistency, plan_inclusion, Hash};
use serde_json::{json, Value};

use crate::logstore::StoredCheckpoint;
use crate::store::{Store, StoreError};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The most entries one `GET /log/entries` returns.
pub const MAX_ENTRIES: u64 = 1000;

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

#[derive(Clone)]
struct Signed {
    cp: StoredCheckpoint,
    cosignatures: Vec<String>,
}

pub struct ReceiptLog {
    origin: String,
    signer: note::Signer,
    witnesses: Vec<note::CosignerVerifier>,
    interval: Duration,
    batch: u64,
    latest: Mutex<Option<Signed>>,
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
        let signer = note::Signer::new(&origin, key)
            .map_err(|e| anyhow::anyhow!("OPENEXEC_LOG_ORIGIN '{origin}': {e}"))?;
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
        Ok(ReceiptLog {
            origin,
            signer,
            witnesses,
            interval,
            batch,
            latest: Mutex::new(None),
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The log's note verifier.
    pub fn verifier(&self) -> note::Verifier {
        self.signer.verifier()
    }

    /// The witnesses whose cosignatures this log accepts.
    pub fn witnesses(&self) -> &[note::CosignerVerifier] {
        &self.witnesses
    }

    /// The note verifier key of the log (`<origin>+<hex key hash>+<base64(0x01 ‖ key)>`).
    pub fn verifier_key(&self) -> String {
        self.signer.verifier_key()
    }

    fn latest(&self) -> Option<Signed> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }

    /// The latest signed checkpoint with the witness cosignature lines after its own.
    pub fn checkpoint_text(&self) -> Option<String> {
        self.latest().map(|s| {
            let mut t = s.cp.note.clone();
            for l in &s.cosignatures {
                t.push_str(l.trim_end_matches('\n'));
                t.push('\n');
            }
            t
        })
    }

    /// Load the latest checkpoint the store holds.
    pub async fn load(&self, store: &Store) -> Result<(), StoreError> {
        let latest = store.latest_checkpoint().await?;
        if let Ok(mut l) = self.latest.lock() {
            *l = latest.map(|(cp, cosignatures)| Signed { cp, cosignatures });
        }
        Ok(())
    }

    /// Sign a checkpoint for the store's head if it moved past the last one. Refuses when the
    /// stored log did not match its last checkpoint at start-up.
    pub async fn sign_head(&self, store: &Store) -> Result<Option<u64>, StoreError> {
        if let Some(p) = store.log_problem() {
            return Err(StoreError::Conflict(format!("the log will not sign: {p}")));
        }
        let head = store.log_head();
        let last = self.latest();
        if let Some(l) = &last {
            if head.size < l.cp.size || (head.size == l.cp.size && head.root != l.cp.root) {
                return Err(StoreError::Conflict(format!(
                    "refusing to sign size {} after a checkpoint of size {}",
                    head.size, l.cp.size
                )));
            }
            if head.size == l.cp.size {
                return Ok(None);
            }
        } else if head.size == 0 {
            return Ok(None);
        }
        let body = note::Checkpoint {
            origin: self.origin.clone(),
            size: head.size,
            root: head.root,
            extensions: Vec::new(),
        }
        .body();
        let text = note::sign_note(&body, &[&self.signer])
            .map_err(|e| StoreError::Corrupt(format!("cannot sign the checkpoint: {e}")))?;
        let cp = StoredCheckpoint {
            size: head.size,
            root: head.root,
            note: text,
        };
        store.add_checkpoint(cp.clone()).await?;
        if let Ok(mut l) = self.latest.lock() {
            *l = Some(Signed {
                cp,
                cosignatures: Vec::new(),
            });
        }
        metrics::gauge!("openexec_log_checkpoint_size").set(head.size as f64);
        Ok(Some(head.size))
    }

    /// Sign checkpoints while the service runs: after `interval` once the log grew, or at once
    /// when `batch` entries wait.
    pub async fn run(self: Arc<Self>, store: Arc<Store>) {
        let mut head = store.watch_log_head();
        loop {
            let signed = self.latest().map(|s| s.cp.size).unwrap_or(0);
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
            if let Err(e) = self.sign_head(&store).await {
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
        let Some(latest) = self.latest() else {
            return Ok(None);
        };
        if index >= latest.cp.size {
            return Ok(None);
        }
        let hashes = self.inclusion_proof(store, index, latest.cp.size).await?;
        let mut checkpoint = latest.cp.note.clone();
        for l in &latest.cosignatures {
            checkpoint.push_str(l.trim_end_matches('\n'));
            checkpoint.push('\n');
        }
        Ok(Some(json!({
            "leaf_index": index,
            "tree_size": latest.cp.size,
            "logged_at": logged_at,
            "hashes": hashes,
            "checkpoint": checkpoint,
        })))
    }

    async fn inclusion_proof(
        &self,
        store: &Store,
        index: u64,
        size: u64,
    ) -> Result<Vec<String>, StoreError> {
        let plan = plan_inclusion(index, size).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        assemble(store, &plan).await
    }

    /// `GET /log/proof/inclusion`.
    pub async fn proof_inclusion(
        &self,
        store: &Store,
        index: u64,
        size: u64,
    ) -> Result<Vec<String>, LogRefusal> {
        let head = store.log_head().size;
        if size == 0 || size > head || index >= size {
            return Err(refusal(
                400,
                "invalid_request",
                format!("need index < tree_size <= {head} (the log's size), got index {index}, tree_size {size}"),
            ));
        }
        Ok(self.inclusion_proof(store, index, size).await?)
    }

    /// `GET /log/proof/consistency`.
    pub async fn proof_consistency(
        &self,
        store: &Store,
        first: u64,
        second: u64,
    ) -> Result<Vec<String>, LogRefusal> {
        let head = store.log_head().size;
        if first > second || second > head {
            return Err(refusal(
                400,
                "invalid_request",
                format!("need first <= second <= {head} (the log's size), got first {first}, second {second}"),
            ));
        }
        if first == 0 || first == second {
            return Ok(Vec::new());
        }
        let plan = plan_consistency(first, second)
            .map_err(|e| refusal(400, "invalid_request", e.to_string()))?;
        Ok(assemble(store, &plan).await?)
    }

    /// `GET /log/entries`: [start, min(end, start + MAX_ENTRIES, size)).
    pub async fn entries(
        &self,
        store: &Store,
        start: u64,
        end: u64,
    ) -> Result<Vec<String>, LogRefusal> {
        let head = store.log_head().size;
        if start >= end || start >= head {
            return Err(refusal(
                400,
                "invalid_request",
                format!("need start < end and start < {head} (the log's size), got start {start}, end {end}"),
            ));
        }
        let end = end.min(head).min(start + MAX_ENTRIES);
        let rows = store.log_entries(start, end).await?;
        Ok(rows.iter().map(|(_, data, _)| B64.encode(data)).collect())
    }

    /// `POST /log/cosignatures`: each line must be a known witness's valid cosignature of the
    /// latest checkpoint. Returns how many were stored.
    pub async fn add_cosignatures(&self, store: &Store, text: &str) -> Result<usize, LogRefusal> {
        let Some(latest) = self.latest() else {
            return Err(refusal(
                409,
                "no_checkpoint",
                "the log has not signed a checkpoint yet",
            ));
        };
        let opened = note::open_note(&latest.cp.note, &self.signer.verifier())
            .map_err(|e| refusal(500, "internal_error", e.to_string()))?;
        let mut stored = 0;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut accepted = None;
            for w in &self.witnesses {
                if let Ok(_ts) = note::verify_cosignature(line, &opened.body, w) {
                    accepted = Some(w.name().to_string());
                    break;
                }
            }
            let Some(witness) = accepted else {
                return Err(refusal(
                    403,
                    "cosignature_rejected",
                    format!(
                        "'{line}' is not a valid cosignature of the checkpoint of size {} by a configured witness (OPENEXEC_WITNESS_KEYS)",
                        latest.cp.size
                    ),
                ));
            };
            store
                .add_cosignature(latest.cp.size, &witness, line)
                .await?;
            if let Ok(mut l) = self.latest.lock() {
                if let Some(s) = l.as_mut().filter(|s| s.cp.size == latest.cp.size) {
                    s.cosignatures
                        .retain(|c| !c.starts_with(&format!("— {witness} ")));
                    s.cosignatures.push(line.to_string());
                }
            }
            stored += 1;
        }
        Ok(stored)
    }
}

async fn assemble(
    store: &Store,
    plan: &openexec_log::ProofPlan,
) -> Result<Vec<String>, StoreError> {
    let nodes = store.log_nodes(&plan.nodes()).await?;
    let hashes: Vec<Hash> = plan
        .assemble_from_map(&nodes)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(hashes.iter().map(|h| B64.encode(h)).collect())
}
