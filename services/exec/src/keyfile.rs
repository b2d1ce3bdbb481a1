//! OpenExec's keys, by setting: which file or value each comes from and where a generated one
//! lives. Loading, generating and the permission rules are the kit's
//! ([`openexec_kit::keys`]), the same in every service.

use openexec_core::keys::{SigningKey, VerifyingKey};
use openexec_kit::keys;

use crate::config::Config;

/// File name of the generated receipt key inside the data directory.
pub const GENERATED_RECEIPT_KEY: &str = "receipt-key.pem";
/// File name of the generated receipt-log key inside the data directory.
pub const GENERATED_LOG_KEY: &str = "log-key.pem";

/// The receipt signing key: `OPENEXEC_RECEIPT_KEY` (a file path, or the key itself), else the
/// one generated under the data directory (created on first start).
pub fn receipt_key(cfg: &Config) -> anyhow::Result<SigningKey> {
    Ok(keys::signing_key(
        cfg.receipt_key.as_deref(),
        "OPENEXEC_RECEIPT_KEY",
        &cfg.data_dir.join(GENERATED_RECEIPT_KEY),
        "receipt",
    )?)
}

/// The receipt log's signing key: `OPENEXEC_LOG_KEY`, else one generated under the data
/// directory. A log key is its own: never the receipt key.
pub fn log_key(cfg: &Config) -> anyhow::Result<SigningKey> {
    Ok(keys::signing_key(
        cfg.log_key.as_deref(),
        "OPENEXEC_LOG_KEY",
        &cfg.data_dir.join(GENERATED_LOG_KEY),
        "log",
    )?)
}

/// ClawShield's public keys: `CLAWSHIELD_PUBLIC_KEY` holds one or more keys (PEM or raw base64),
/// or the path of a file that does.
pub fn approval_keys(cfg: &Config) -> anyhow::Result<Vec<VerifyingKey>> {
    Ok(keys::public_keys(
        cfg.approval_keys.as_deref(),
        "CLAWSHIELD_PUBLIC_KEY",
    )?)
}

/// Earlier receipt keys (`OPENEXEC_PREVIOUS_RECEIPT_KEYS`), still trusted for verification.
pub fn previous_receipt_keys(cfg: &Config) -> anyhow::Result<Vec<VerifyingKey>> {
    Ok(keys::public_keys(
        cfg.previous_receipt_keys.as_deref(),
        "OPENEXEC_PREVIOUS_RECEIPT_KEYS",
    )?)
}

/// Read and verify the pinned approver roster (`OPENEXEC_APPROVER_ROSTER`) against ClawShield's
/// keys: a roster that does not verify stops the start.
pub fn approver_roster(
    path: &std::path::Path,
    approval: &[openexec_core::keys::VerifyingKey],
) -> anyhow::Result<openexec_core::roster::Roster> {
    let text = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "OPENEXEC_APPROVER_ROSTER: cannot read {}: {e}",
            path.display()
        )
    })?;
    let v = openexec_core::json::parse_ijson(&text, 32).map_err(|e| {
        anyhow::anyhow!(
            "OPENEXEC_APPROVER_ROSTER: {} is not JSON: {e}",
            path.display()
        )
    })?;
    let r = openexec_core::roster::verify_roster(&v, approval)
        .map_err(|e| anyhow::anyhow!("OPENEXEC_APPROVER_ROSTER: {}: {e}", path.display()))?;
    tracing::info!(file = %path.display(), version = r.version, approvers = r.approvers.len(), "approver roster pinned");
    Ok(r)
}
