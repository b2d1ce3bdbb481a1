//! Loading the service's keys from files or the environment, and generating a dev receipt key.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use openexec_core::keys::{self, SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};

use crate::config::Config;

/// File name of the generated receipt key inside the data directory.
pub const GENERATED_RECEIPT_KEY: &str = "receipt-key.pem";
/// File name of the generated receipt-log key inside the data directory.
pub const GENERATED_LOG_KEY: &str = "log-key.pem";

fn looks_inline(s: &str) -> bool {
    s.contains("-----BEGIN") || s.contains("\\n")
}

/// The receipt signing key: `OPENEXEC_RECEIPT_KEY` (a file path, or the key itself), else the
/// one generated under the data directory (created on first start).
pub fn receipt_key(cfg: &Config) -> anyhow::Result<SigningKey> {
    signing_key(
        cfg.receipt_key.as_deref(),
        "OPENEXEC_RECEIPT_KEY",
        &cfg.data_dir.join(GENERATED_RECEIPT_KEY),
        "receipt",
    )
}

/// The receipt log's signing key: `OPENEXEC_LOG_KEY`, else one generated under the data
/// directory. A log key is its own: never the receipt key.
pub fn log_key(cfg: &Config) -> anyhow::Result<SigningKey> {
    signing_key(
        cfg.log_key.as_deref(),
        "OPENEXEC_LOG_KEY",
        &cfg.data_dir.join(GENERATED_LOG_KEY),
        "log",
    )
}

fn signing_key(
    configured: Option<&str>,
    name: &str,
    generated: &Path,
    what: &str,
) -> anyhow::Result<SigningKey> {
    if let Some(v) = configured {
        if looks_inline(v) {
            return keys::parse_signing_key(v)
                .with_context(|| format!("{name} holds a key that does not parse"));
        }
        let path = Path::new(v);
        if !path.exists() {
            if let Ok(k) = keys::parse_signing_key(v) {
                return Ok(k);
            }
            bail!("{name}: no key file at {}", path.display());
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{name}: cannot read {}", path.display()))?;
        return keys::parse_signing_key(&text).with_context(|| {
            format!(
                "{name}: {} does not hold an Ed25519 private key",
                path.display()
            )
        });
    }
    if generated.exists() {
        let text = std::fs::read_to_string(generated)
            .with_context(|| format!("cannot read the {what} key {}", generated.display()))?;
        return keys::parse_signing_key(&text).with_context(|| {
            format!(
                "{} does not hold an Ed25519 private key",
                generated.display()
            )
        });
    }
    let sk = generate();
    write_private(generated, &keys::signing_key_to_pem(&sk))?;
    tracing::warn!(path = %generated.display(), key_id = %keys::key_id(&sk.verifying_key()),
        "no {what} key configured ({name}): generated one");
    Ok(sk)
}

/// A fresh key from the operating system's randomness.
pub fn generate() -> SigningKey {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    keys::signing_key_from_seed(seed)
}

/// Write a private key readable by its owner only; never overwrite.
pub fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// ClawShield's public keys: `CLAWSHIELD_PUBLIC_KEY` holds one or more keys (PEM or raw base64),
/// or the path of a file that does.
pub fn approval_keys(cfg: &Config) -> anyhow::Result<Vec<VerifyingKey>> {
    public_keys(cfg.approval_keys.as_deref(), "CLAWSHIELD_PUBLIC_KEY")
}

/// Earlier receipt keys (`OPENEXEC_PREVIOUS_RECEIPT_KEYS`), still trusted for verification.
pub fn previous_receipt_keys(cfg: &Config) -> anyhow::Result<Vec<VerifyingKey>> {
    public_keys(
        cfg.previous_receipt_keys.as_deref(),
        "OPENEXEC_PREVIOUS_RECEIPT_KEYS",
    )
}

fn public_keys(value: Option<&str>, name: &str) -> anyhow::Result<Vec<VerifyingKey>> {
    let Some(v) = value else {
        return Ok(Vec::new());
    };
    let text = if !looks_inline(v) && Path::new(v.trim()).is_file() {
        std::fs::read_to_string(v.trim())
            .with_context(|| format!("{name}: cannot read {}", v.trim()))?
    } else {
        v.to_string()
    };
    keys::parse_verifying_keys(&text)
        .with_context(|| format!("{name} does not hold Ed25519 public keys"))
}
