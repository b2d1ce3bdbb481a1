//! The checkpoint signing loop a service runs beside its log: sign after `interval` once the
//! log grew, or at once when `batch` entries wait; only the replica holding the store's
//! sequencer role signs, the others follow the checkpoints it stores. Generic over the store
//! ([`Sequenced`]), so the receipt log and a decision log run the same loop.
//!
//! Also here, what every log service configures the same way: its witnesses' keys
//! ([`parse_witness_keys`]) and the inclusion it adds to evidence ([`inclusion_json`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openexec_log::note::{self, CosignerVerifier};
use openexec_log::{Inclusion, LogService, LogStore, ServiceError};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::store::LogHead;

/// A store whose log has a head to watch and a sequencer role (the one replica that signs).
pub trait Sequenced: LogStore {
    /// The head as of this process's last commit (or the last one it saw), changing with it.
    fn watch_head(&self) -> watch::Receiver<LogHead>;

    /// Whether this replica signs checkpoints now (takes the role when nobody holds it).
    fn sequencer(&self) -> impl Future<Output = Result<bool, Self::Error>> + Send;
}

/// When to sign.
#[derive(Clone, Debug)]
pub struct Cadence {
    /// Sign this long after the last checkpoint once the log grew.
    pub interval: Duration,
    /// Sign at once when this many entries wait.
    pub batch: u64,
    /// The gauge set to the size of each checkpoint signed (`openexec_log_checkpoint_size`).
    pub size_gauge: &'static str,
}

/// Sign a checkpoint for the store's head if it moved past the last one; the size signed.
pub async fn sign_head<S: LogStore>(
    log: &LogService,
    store: &S,
    cadence: &Cadence,
) -> Result<Option<u64>, ServiceError<S::Error>> {
    let signed = log.sign_head(store).await?;
    if let Some(size) = signed {
        metrics::gauge!(cadence.size_gauge).set(size as f64);
    }
    Ok(signed)
}

/// Sign checkpoints while the store is open (see the module's doc); returns when the store
/// closes its head. Each round first loads what any replica stored (witness cosignatures, or
/// the checkpoints of the sequencer before this one took over). A failed round is logged and
/// retried after a second.
pub async fn run<S: Sequenced>(log: &LogService, store: Arc<S>, cadence: Cadence) {
    let mut head = store.watch_head();
    loop {
        let signed = log.signed_size();
        let due = tokio::time::sleep(cadence.interval);
        tokio::pin!(due);
        loop {
            tokio::select! {
                _ = &mut due => break,
                changed = head.changed() => {
                    if changed.is_err() {
                        return; // the store closed
                    }
                    if head.borrow().size >= signed + cadence.batch {
                        break;
                    }
                }
            }
        }
        let result = match log.load(&*store).await {
            Ok(()) => match store.sequencer().await {
                Ok(true) => sign_head(log, &*store, &cadence).await.map(|_| ()),
                Ok(false) => Ok(()),
                Err(e) => Err(ServiceError::Store(e)),
            },
            Err(e) => Err(ServiceError::Store(e)),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "checkpoint not signed");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Witness cosigner keys, separated by commas or newlines (`setting` names where they come
/// from, for the error).
pub fn parse_witness_keys(
    text: Option<&str>,
    setting: &str,
) -> Result<Vec<CosignerVerifier>, String> {
    text.unwrap_or_default()
        .split([',', '\n'])
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| note::parse_cosigner_key(k).map_err(|e| format!("{setting}: '{k}': {e}")))
        .collect()
}

/// The `inclusion` member of evidence (SPEC §7): the entry's index, the tree size and note of
/// the checkpoint that covers it, when it was logged, and the proof.
pub fn inclusion_json(inc: &Inclusion, logged_at: &str) -> Value {
    json!({
        "leaf_index": inc.leaf_index,
        "tree_size": inc.tree_size,
        "logged_at": logged_at,
        "hashes": crate::http::b64_hashes(&inc.hashes),
        "checkpoint": inc.checkpoint,
    })
}
