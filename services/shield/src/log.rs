//! The decision log (SPEC §9): every decision, vote, expiry and policy activation is a leaf,
//! signed and served exactly as OpenExec's receipt log (`openexec_logstore::ServiceLog`, the
//! same code), witnessed by ClawLedger unchanged.

use std::time::Duration;

use openexec_core::keys::SigningKey;
use openexec_logstore::service_log::{LogNames, ServiceLog};

pub const WITNESS_SETTING: &str = "CLAWSHIELD_WITNESS_KEYS";

pub type DecisionLog = ServiceLog;

const NAMES: LogNames = LogNames {
    origin_prefix: "clawshield/decisions",
    origin_setting: "CLAWSHIELD_LOG_ORIGIN",
    witness_setting: WITNESS_SETTING,
    size_gauge: "clawshield_log_checkpoint_size",
};

/// The decision log; `origin` defaults to `clawshield/decisions/<key_id of the log key>`.
pub fn decision_log(
    origin: Option<&str>,
    key: SigningKey,
    witness_keys: Option<&str>,
    interval: Duration,
    batch: u64,
) -> anyhow::Result<DecisionLog> {
    ServiceLog::new(NAMES, origin, key, witness_keys, interval, batch).map_err(anyhow::Error::msg)
}
