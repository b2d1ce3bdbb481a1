//! C2SP tlog-cosignature, Ed25519 `cosignature/v1` (signature type 0x04).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use super::{
    check_body, check_name, key_hash, key_label, parse_ed25519_vkey, write_vkey, Checkpoint,
    NoteError, OpenedNote, SignatureLine, SIG_TYPE_COSIGNATURE_V1,
};

/// tlog-cosignature: "`timestamp` is the time at which the cosignature was generated, as a POSIX
/// timestamp. It MUST NOT exceed 2^63 - 1".
const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// The bytes after the key hash: "struct { u64 timestamp; opaque ed25519_signature[64]; }"
/// serialized "in sequence, with the timestamp encoded in big-endian order".
const TIMESTAMPED_SIGNATURE_LEN: usize = 8 + 64;

/// The message an Ed25519 cosignature signs. tlog-cosignature: "The signed message MUST be two
/// newline (U+000A) terminated lines (one header line and one timestamp line) followed by the
/// whole note body of the cosigned checkpoint (including the final newline, but not including
/// any signature lines). The header line MUST be the fixed string `cosignature/v1` […]. The
/// timestamp line MUST consist of the string `time`, a single space (0x20), and
/// `timestamped_signature.timestamp` encoded as an ASCII decimal with no leading zeroes."
fn signed_message(timestamp: u64, body: &str) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{body}")
}

/// A witness's cosigning key and name.
///
/// tlog-cosignature: "The key ID for Ed25519 cosignatures MUST be computed as
/// `SHA-256(<name> || "\n" || 0x04 || 32-byte Ed25519 cosigner public key)[:4]`", and "A cosigner
/// operator that operates multiple Ed25519 cosigners […] MUST use distinct public keys for each
/// cosigner" (the signed message does not include the name).
#[derive(Clone)]
pub struct Cosigner {
    name: String,
    key: SigningKey,
    key_hash: u32,
}

impl fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cosigner({})", key_label(&self.name, self.key_hash))
    }
}

impl Cosigner {
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        check_name(name)?;
        let key_hash = key_hash(
            name,
            SIG_TYPE_COSIGNATURE_V1,
            key.verifying_key().as_bytes(),
        );
        Ok(Cosigner {
            name: name.to_string(),
            key,
            key_hash,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_hash(&self) -> u32 {
        self.key_hash
    }

    pub fn verifier(&self) -> CosignerVerifier {
        CosignerVerifier {
            name: self.name.clone(),
            key_hash: self.key_hash,
            key: self.key.verifying_key(),
        }
    }

    /// `<name>+<8 hex key hash>+<base64(0x04 ‖ public key)>`. tlog-cosignature: "Ed25519 public
    /// keys MAY be encoded as vkeys with signature type 0x04".
    pub fn verifier_key(&self) -> String {
        self.verifier().to_string()
    }

    /// The cosignature line (without newline) over a checkpoint body, at `timestamp` (POSIX
    /// seconds, given by the caller). The body must be a well-formed checkpoint: a witness
    /// vouches for checkpoints only.
    pub fn cosign(&self, body: &str, timestamp: u64) -> Result<String, NoteError> {
        if timestamp > MAX_TIMESTAMP {
            return Err(NoteError::TimestampTooLarge(timestamp));
        }
        check_body(body)?;
        Checkpoint::parse_body(body)?;
        let sig = self.key.sign(signed_message(timestamp, body).as_bytes());
        let mut bytes = Vec::with_capacity(TIMESTAMPED_SIGNATURE_LEN);
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&sig.to_bytes());
        Ok(SignatureLine {
            name: self.name.clone(),
            key_hash: self.key_hash,
            signature: bytes,
        }
        .to_line())
    }
}

/// Cosign a checkpoint body: the line `— <name> base64(key hash ‖ timestamp ‖ signature)`,
/// without newline. See [`Cosigner::cosign`].
pub fn cosign(
    body: &str,
    name: &str,
    key: &SigningKey,
    timestamp: u64,
) -> Result<String, NoteError> {
    Cosigner::new(name, key.clone())?.cosign(body, timestamp)
}

/// A witness's public cosigning key and name, as a log client configures it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CosignerVerifier {
    name: String,
    key_hash: u32,
    key: VerifyingKey,
}

impl CosignerVerifier {
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(CosignerVerifier {
            name: name.to_string(),
            key_hash: key_hash(name, SIG_TYPE_COSIGNATURE_V1, key.as_bytes()),
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_hash(&self) -> u32 {
        self.key_hash
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    pub fn verifier_key(&self) -> String {
        self.to_string()
    }

    /// Check a cosignature line by this witness over a checkpoint body; returns its timestamp.
    pub fn verify(&self, line: &str, body: &str) -> Result<u64, NoteError> {
        let parsed = SignatureLine::parse(line)?;
        self.check(&parsed, body)
    }

    fn check(&self, line: &SignatureLine, body: &str) -> Result<u64, NoteError> {
        // tlog-cosignature: "Clients are configured with tuples of (cosigner name, public key,
        // supported cosignature version) and based on that they can compute the expected name
        // and key ID, and ignore any signature lines that don't match the name and key ID."
        if line.name != self.name || line.key_hash != self.key_hash {
            return Err(NoteError::WrongSigner {
                got: key_label(&line.name, line.key_hash),
                expected: key_label(&self.name, self.key_hash),
            });
        }
        check_body(body)?;
        let invalid = || NoteError::InvalidSignature {
            name: self.name.clone(),
            key_hash: self.key_hash,
        };
        if line.signature.len() != TIMESTAMPED_SIGNATURE_LEN {
            return Err(invalid());
        }
        let (ts, sig) = line.signature.split_at(8);
        let timestamp = u64::from_be_bytes(ts.try_into().map_err(|_| invalid())?);
        if timestamp > MAX_TIMESTAMP {
            return Err(NoteError::TimestampTooLarge(timestamp));
        }
        let sig: [u8; 64] = sig.try_into().map_err(|_| invalid())?;
        self.key
            .verify_strict(
                signed_message(timestamp, body).as_bytes(),
                &Signature::from_bytes(&sig),
            )
            .map_err(|_| invalid())?;
        Ok(timestamp)
    }
}

impl fmt::Display for CosignerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_vkey(
            f,
            &self.name,
            self.key_hash,
            SIG_TYPE_COSIGNATURE_V1,
            &self.key,
        )
    }
}

impl FromStr for CosignerVerifier {
    type Err = NoteError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_cosigner_key(s)
    }
}

/// Read a witness's verifier key `<name>+<8 hex key hash>+<base64(0x04 ‖ public key)>`,
/// checking the stated key hash. Only type 0x04 is accepted: a plain Ed25519 (0x01) key names
/// a note signer, not a cosigner, and has another key hash.
pub fn parse_cosigner_key(text: &str) -> Result<CosignerVerifier, NoteError> {
    let (name, key_hash, key) = parse_ed25519_vkey(text, SIG_TYPE_COSIGNATURE_V1)?;
    Ok(CosignerVerifier {
        name,
        key_hash,
        key,
    })
}

/// Check one cosignature line by `cosigner` over a checkpoint body; returns its timestamp.
pub fn verify_cosignature(
    line: &str,
    body: &str,
    cosigner: &CosignerVerifier,
) -> Result<u64, NoteError> {
    cosigner.verify(line, body)
}

/// The witnesses among `witnesses` with a cosignature line in the note that verifies over its
/// body: `(position in witnesses, timestamp)`, one per distinct public key (a key listed twice
/// counts once, at its first position). Lines by other keys, and lines that fail, are skipped.
pub fn verified_cosignatures(
    note: &OpenedNote,
    witnesses: &[CosignerVerifier],
) -> Vec<(usize, u64)> {
    let lines: Vec<SignatureLine> = note
        .signatures
        .iter()
        .filter_map(|l| SignatureLine::parse(l).ok())
        .collect();
    let mut out = Vec::new();
    for (i, w) in witnesses.iter().enumerate() {
        if witnesses[..i].iter().any(|earlier| earlier.key == w.key) {
            continue;
        }
        if let Some(ts) = lines.iter().find_map(|l| w.check(l, &note.body).ok()) {
            out.push((i, ts));
        }
    }
    out
}

/// k-of-n: how many distinct witnesses among `witnesses` cosigned the note (see
/// [`verified_cosignatures`]).
pub fn count_cosignatures(note: &OpenedNote, witnesses: &[CosignerVerifier]) -> usize {
    verified_cosignatures(note, witnesses).len()
}
