//! A service's log as it runs it (SPEC §7), written once for OpenExec's receipt log and
//! ClawShield's decision log: the [`LogService`] (signing rules, proofs, cosignatures) with its
//! origin (a default of `<prefix>/<key id of the log key>`), witnesses and signing cadence, and
//! the calls a service makes on it over its store.

use std::sync::Arc;
use std::time::Duration;

use openexec_core::keys::{key_id, SigningKey};
use openexec_log::{note, LogService, LogStore, ServiceError};
use openexec_store::StoreError;
use serde_json::Value;

use crate::signing::{self, Cadence, Sequenced};

/// How a service names its log's settings (for messages) and its gauge.
#[derive(Debug, Clone, Copy)]
pub struct LogNames {
    /// The default origin's prefix: `openexec/receipts`, `clawshield/decisions`.
    pub origin_prefix: &'static str,
    /// The origin setting (`OPENEXEC_LOG_ORIGIN`).
    pub origin_setting: &'static str,
    /// The witness keys setting (`OPENEXEC_WITNESS_KEYS`).
    pub witness_setting: &'static str,
    /// The gauge set to each signed checkpoint's size.
    pub size_gauge: &'static str,
}

/// A log service with its cadence.
pub struct ServiceLog {
    service: Arc<LogService>,
    cadence: Cadence,
    names: LogNames,
}

fn store_error(e: ServiceError<StoreError>) -> StoreError {
    match e {
        ServiceError::Store(e) => e,
        ServiceError::Refused(m) => StoreError::Conflict(m),
        other => StoreError::Corrupt(other.to_string()),
    }
}

impl ServiceLog {
    pub fn new(
        names: LogNames,
        origin: Option<&str>,
        key: SigningKey,
        witness_keys: Option<&str>,
        interval: Duration,
        batch: u64,
    ) -> Result<ServiceLog, String> {
        let origin = match origin {
            Some(o) => o.to_string(),
            None => format!("{}/{}", names.origin_prefix, key_id(&key.verifying_key())),
        };
        let witnesses = signing::parse_witness_keys(witness_keys, names.witness_setting)?;
        let service = LogService::new(&origin, key, witnesses)
            .map_err(|e| format!("{} '{origin}': {e}", names.origin_setting))?;
        Ok(ServiceLog {
            service: Arc::new(service),
            cadence: Cadence {
                interval,
                batch,
                size_gauge: names.size_gauge,
            },
            names,
        })
    }

    /// The log as the `/log/*` routes serve it.
    pub fn service(&self) -> Arc<LogService> {
        self.service.clone()
    }

    /// The setting that lists the witnesses (named in a refused cosignature's message).
    pub fn witness_setting(&self) -> &'static str {
        self.names.witness_setting
    }

    pub fn origin(&self) -> &str {
        self.service.origin()
    }

    pub fn verifier(&self) -> note::Verifier {
        self.service.verifier()
    }

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
    pub async fn load<S: LogStore<Error = StoreError>>(&self, store: &S) -> Result<(), StoreError> {
        self.service.load(store).await
    }

    /// Sign a checkpoint for the store's head if it moved past the last one.
    pub async fn sign_head<S: LogStore<Error = StoreError>>(
        &self,
        store: &S,
    ) -> Result<Option<u64>, StoreError> {
        signing::sign_head(&self.service, store, &self.cadence)
            .await
            .map_err(store_error)
    }

    /// Sign checkpoints while the service runs (`signing::run`).
    pub async fn run<S: Sequenced<Error = StoreError> + 'static>(self: Arc<Self>, store: Arc<S>) {
        signing::run(&self.service, store, self.cadence.clone()).await
    }

    /// The inclusion of entry `index` in the latest signed checkpoint, as evidence carries it;
    /// `None` while no checkpoint covers it yet.
    pub async fn inclusion<S: LogStore<Error = StoreError>>(
        &self,
        store: &S,
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
