//! The receipt log as OpenExec runs it (SPEC §7): signs checkpoints in batches (by time or
//! count), never one that contradicts an earlier one, serves proofs, and takes witnesses'
//! cosignatures. The log itself (signing rules, proofs, the node cache, cosignatures) is
//! `openexec_log::LogService`; its signing loop and `/log/*` routes are `openexec_logstore`'s;
//! storage is `store`'s, through `openexec_log::LogStore`.
//!
//! The log never calls out: witnesses pull, and deliver their cosignatures with
//! `POST /log/cosignatures`.

use std::time::Duration;

use openexec_core::keys::SigningKey;
use openexec_logstore::service_log::{LogNames, ServiceLog};

/// The setting that lists the witnesses, named in a refused cosignature's message.
pub const WITNESS_SETTING: &str = "OPENEXEC_WITNESS_KEYS";

/// The receipt log: `openexec_logstore`'s [`ServiceLog`] over the service's store.
pub type ReceiptLog = ServiceLog;

const NAMES: LogNames = LogNames {
    origin_prefix: "openexec/receipts",
    origin_setting: "OPENEXEC_LOG_ORIGIN",
    witness_setting: WITNESS_SETTING,
    size_gauge: "openexec_log_checkpoint_size",
};

/// The receipt log; `origin` defaults to `openexec/receipts/<key_id of the log key>`.
pub fn receipt_log(
    origin: Option<&str>,
    key: SigningKey,
    witness_keys: Option<&str>,
    interval: Duration,
    batch: u64,
) -> anyhow::Result<ReceiptLog> {
    ServiceLog::new(NAMES, origin, key, witness_keys, interval, batch).map_err(anyhow::Error::msg)
}
