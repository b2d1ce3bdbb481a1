//! Keys and private files, with one meaning in every service: a key setting holds the path of a
//! key file or the key itself (PKCS#8 PEM or a raw base64 seed; public keys: PEM or raw
//! base64, several at once); a private key file that its group or others may access is refused
//! (as ssh does); generated keys and private state are created readable by their owner only; and
//! no message ever shows a key setting's value, which may be a mistyped secret.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use openexec_core::keys::{self, SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};

/// Why a key or private file could not be had. The message names the setting (and, for a file
/// that exists, its path), never a key setting's value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

fn err(m: impl Into<String>) -> KeyError {
    KeyError(m.into())
}

/// Whether a setting's value is a key written inline rather than a path.
fn looks_inline(s: &str) -> bool {
    s.contains("-----BEGIN") || s.contains("\\n")
}

/// A signing key from `configured` (the value of setting `setting`: a key file's path, or the
/// key itself), else the key at `generated`, created on first use (0600) — `what` names it in
/// the log ("receipt", "witness", …).
pub fn signing_key(
    configured: Option<&str>,
    setting: &str,
    generated: &Path,
    what: &str,
) -> Result<SigningKey, KeyError> {
    if let Some(v) = configured.map(str::trim).filter(|v| !v.is_empty()) {
        if looks_inline(v) {
            return keys::parse_signing_key(v).map_err(|_| {
                err(format!(
                    "{setting} holds a key that does not parse (value not shown)"
                ))
            });
        }
        let path = Path::new(v);
        if !path.exists() {
            return keys::parse_signing_key(v).map_err(|_| {
                err(format!(
                    "{setting} is neither the path of an existing key file nor a key that parses (value not shown)"
                ))
            });
        }
        return read_private_key(path, setting);
    }
    if generated.exists() {
        return read_private_key(generated, &format!("the {what} key"));
    }
    let sk = generate();
    write_private(generated, &keys::signing_key_to_pem(&sk))?;
    tracing::warn!(path = %generated.display(), key_id = %keys::key_id(&sk.verifying_key()),
        "no {what} key configured ({setting}): generated one");
    Ok(sk)
}

/// Read a private key file, refusing one that its group or others may access: the key signs
/// for this service, and whoever copies it signs as this service.
pub fn read_private_key(path: &Path, setting: &str) -> Result<SigningKey, KeyError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| err(format!("{setting}: cannot read {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "{setting}: the private key file {} is accessible to others (mode {mode:03o}); a private key must be readable by its owner only: run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("{setting}: cannot read {}: {e}", path.display())))?;
    keys::parse_signing_key(&text).map_err(|_| {
        err(format!(
            "{setting}: {} does not hold an Ed25519 private key (PKCS#8 PEM or raw base64 seed)",
            path.display()
        ))
    })
}

/// Public keys from the value of setting `setting`: one or more keys (PEM blocks or raw
/// base64), or the path of a file that holds them. `None` is no keys.
pub fn public_keys(value: Option<&str>, setting: &str) -> Result<Vec<VerifyingKey>, KeyError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Vec::new());
    };
    let file = !looks_inline(v) && Path::new(v).is_file();
    let text = if file {
        std::fs::read_to_string(v).map_err(|e| err(format!("{setting}: cannot read {v}: {e}")))?
    } else {
        v.to_string()
    };
    keys::parse_verifying_keys(&text).map_err(|e| {
        if file {
            err(format!("{setting}: {v} does not hold Ed25519 public keys: {e}"))
        } else {
            err(format!(
                "{setting} is neither the path of an existing file nor Ed25519 public keys (PEM or raw base64) that parse (value not shown)"
            ))
        }
    })
}

/// A fresh key from the operating system's randomness.
pub fn generate() -> SigningKey {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    keys::signing_key_from_seed(seed)
}

/// Write a private key readable by its owner only (0600), synced; never overwrite.
pub fn write_private(path: &Path, pem: &str) -> Result<(), KeyError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err(format!("cannot create key file {}: {e}", path.display())))?;
    f.write_all(pem.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| err(format!("cannot write key file {}: {e}", path.display())))
}

/// Create a directory for private state readable by its owner only (0700); an existing one is
/// left as it is, with a warning when others may read it.
pub fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                err(format!(
                    "cannot create the directory {}: {e}",
                    dir.display()
                ))
            })?;
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

/// Create an empty file readable by its owner only (0600) unless it exists: SQLite then opens it
/// as a new database, and gives its WAL and shared-memory files the same mode.
pub fn create_private_file(path: &Path) -> Result<(), KeyError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(err(format!("cannot create {}: {e}", path.display()))),
    }
}

/// A SQLite database file's directory (0700 when created) and the file itself (0600 when
/// created).
pub fn prepare_sqlite_file(path: &Path) -> Result<(), KeyError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    create_private_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generated_keys_and_state_are_private_and_readable_keys_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let gen = dir.join("k.pem");
        let k1 = signing_key(None, "X_KEY", &gen, "test").unwrap();
        assert_eq!(mode(&gen), 0o600);
        // the same key next time
        let k2 = signing_key(None, "X_KEY", &gen, "test").unwrap();
        assert_eq!(k1.verifying_key(), k2.verifying_key());
        // configured as a path, or inline
        let p = gen.to_str().unwrap();
        let k3 = signing_key(Some(p), "X_KEY", &dir.join("other"), "test").unwrap();
        assert_eq!(k3.verifying_key(), k1.verifying_key());
        let pem = std::fs::read_to_string(&gen).unwrap();
        let k4 = signing_key(Some(&pem), "X_KEY", &dir.join("other"), "test").unwrap();
        assert_eq!(k4.verifying_key(), k1.verifying_key());
        // readable by others: refused with the fix
        std::fs::set_permissions(&gen, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = signing_key(Some(p), "X_KEY", &dir.join("other"), "test").unwrap_err();
        assert!(e.0.contains("X_KEY") && e.0.contains("chmod 600"), "{e}");
        // a value that is neither: named, never shown
        let e = signing_key(Some("s3cr3t-typo"), "X_KEY", &dir.join("o"), "t").unwrap_err();
        assert!(e.0.contains("X_KEY") && !e.0.contains("s3cr3t"), "{e}");
        let e = public_keys(Some("s3cr3t-typo"), "X_PUB").unwrap_err();
        assert!(e.0.contains("X_PUB") && !e.0.contains("s3cr3t"), "{e}");
        // database files
        let db = tmp.path().join("db/x.db");
        prepare_sqlite_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(db.parent().unwrap()), 0o700);
    }
}
