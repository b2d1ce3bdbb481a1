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
    // Messages name the setting and, for a file that exists, its path; never the value itself,
    // which may be a mistyped key.
    if let Some(v) = configured {
        if looks_inline(v) {
            return keys::parse_signing_key(v).map_err(|_| {
                anyhow::anyhow!("{name} holds a key that does not parse (value not shown)")
            });
        }
        let path = Path::new(v);
        if !path.exists() {
            if let Ok(k) = keys::parse_signing_key(v) {
                return Ok(k);
            }
            bail!(
                "{name} is neither the path of an existing key file nor a key that parses (value not shown)"
            );
        }
        return read_private_key(path, name);
    }
    if generated.exists() {
        return read_private_key(generated, &format!("the {what} key"));
    }
    let sk = generate();
    write_private(generated, &keys::signing_key_to_pem(&sk))?;
    tracing::warn!(path = %generated.display(), key_id = %keys::key_id(&sk.verifying_key()),
        "no {what} key configured ({name}): generated one");
    Ok(sk)
}

/// Read a private key file, refusing one that its group or others may read or write (as ssh
/// does): the key signs for this service, and a copy of it signs as this service.
pub fn read_private_key(path: &Path, name: &str) -> anyhow::Result<SigningKey> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{name}: cannot read {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{name}: the private key file {} is accessible to others (mode {mode:03o}); a private key must be readable by its owner only: run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{name}: cannot read {}", path.display()))?;
    keys::parse_signing_key(&text).map_err(|_| {
        anyhow::anyhow!(
            "{name}: {} does not hold an Ed25519 private key (PKCS#8 PEM or raw base64 seed)",
            path.display()
        )
    })
}

/// Create a directory for private state readable by its owner only (0700); an existing one is
/// left as it is, with a warning when others may read it.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = %format!("{mode:03o}"),
                "this directory holds private state but others may read it; consider chmod 700");
        }
    }
    Ok(())
}

/// Create an empty file readable by its owner only (0600) unless it exists: SQLite then opens
/// it as a new database, and gives its WAL and shared-memory files the same mode.
pub fn create_private_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow::anyhow!("cannot create {}: {e}", path.display())),
    }
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
    let file = !looks_inline(v) && Path::new(v.trim()).is_file();
    let text = if file {
        std::fs::read_to_string(v.trim())
            .with_context(|| format!("{name}: cannot read {}", v.trim()))?
    } else {
        v.to_string()
    };
    keys::parse_verifying_keys(&text).map_err(|e| {
        if file {
            anyhow::anyhow!("{name}: {} does not hold Ed25519 public keys: {e}", v.trim())
        } else {
            anyhow::anyhow!(
                "{name} is neither the path of an existing file nor Ed25519 public keys (PEM or raw base64) that parse (value not shown)"
            )
        }
    })
}
