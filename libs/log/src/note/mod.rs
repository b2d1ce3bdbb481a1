//! Text formats of a transparency log, from the C2SP specifications:
//!
//! - [`Checkpoint`]: the note body of `c2sp.org/tlog-checkpoint` (origin, tree size, base64
//!   root hash, optional extension lines).
//! - Signed notes, `c2sp.org/signed-note`, with Ed25519 keys (signature type `0x01`):
//!   [`Signer`], [`Verifier`] and its verifier-key text, [`sign_note`], [`open_note`]. The byte
//!   layout follows Go's `golang.org/x/mod/sumdb/note`, and its documented example signs and
//!   verifies here byte for byte (see the crate's tests).
//! - Witness cosignatures, `c2sp.org/tlog-cosignature`, Ed25519 `cosignature/v1` (signature type
//!   `0x04`): [`cosign`], [`verify_cosignature`], and k-of-n counting with
//!   [`count_cosignatures`].
//!
//! A "signature line" in this module is the text `— <key name> <base64>` *without* its final
//! newline; functions that take one also accept it with a single trailing newline. A note's text
//! is its body, a blank line, and each signature line followed by a newline
//! ([`OpenedNote::text`]).
//!
//! Trust boundary: [`open_note`] believes a body only once a signature by the configured key
//! verifies over it; every other signature line is carried along unverified, for
//! [`count_cosignatures`] to check against the configured witnesses.

mod checkpoint;
mod cosignature;
mod signed;

pub use checkpoint::Checkpoint;
pub use cosignature::{
    cosign, count_cosignatures, parse_cosigner_key, verified_cosignatures, verify_cosignature,
    Cosigner, CosignerVerifier,
};
pub use signed::{
    open_note, parse_signer_key, parse_verifier_key, sign_note, OpenedNote, SignatureLine, Signer,
    Verifier,
};

use sha2::{Digest, Sha256};

/// The signature type byte of plain Ed25519 note signatures. signed-note: "`0x01` — Ed25519
/// signatures as specified by this document."
pub const SIG_TYPE_ED25519: u8 = 0x01;

/// The signature type byte of Ed25519 witness cosignatures. signed-note: "`0x04` — Timestamped
/// Ed25519 witness cosignatures, as specified by c2sp.org/tlog-cosignature."
pub const SIG_TYPE_COSIGNATURE_V1: u8 = 0x04;

/// The most signature lines [`open_note`] reads. signed-note: "Verifiers SHOULD apply a maximum
/// limit to the number of signatures in a note […] but MUST accept at least up to 16
/// signatures"; Go's `note.Open` stops at 100, and so do we.
pub const MAX_SIGNATURES: usize = 100;

/// The em dash (U+2014) and space that open every signature line. signed-note: "signature lines
/// of this form: em dash (U+2014), space (U+0020), key name, space, base64-encoded signature,
/// newline."
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// What is wrong with a note, a checkpoint, a key or a signature line.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum NoteError {
    #[error(
        "key name {0:?} is not valid: it must be non-empty, with no spaces, no '+' and no control characters"
    )]
    InvalidName(String),

    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(String),

    /// The text of the secret key is never repeated in this message.
    #[error("malformed signer key: {0}")]
    MalformedSignerKey(String),

    #[error(
        "key {name}+{stated:08x} does not match its public key, whose key hash is {computed:08x}"
    )]
    KeyHashMismatch {
        name: String,
        stated: u32,
        computed: u32,
    },

    #[error("key has signature type 0x{got:02x}, expected 0x{expected:02x}")]
    WrongKeyType { got: u8, expected: u8 },

    #[error("note is not valid UTF-8 (at byte {offset})")]
    InvalidUtf8 { offset: usize },

    #[error(
        "note has control character U+{code:04X} at byte {offset}; newline is the only one allowed"
    )]
    ControlCharacter { offset: usize, code: u32 },

    #[error("note body must be non-empty and end with a newline")]
    BodyNotTerminated,

    #[error("malformed note: {0}")]
    MalformedNote(String),

    #[error("malformed signature line {line:?}: {reason}")]
    MalformedSignatureLine { line: String, reason: String },

    #[error("note has more than {MAX_SIGNATURES} signature lines")]
    TooManySignatures,

    #[error("a note needs at least one signer")]
    NoSigners,

    #[error("signature by {name}+{key_hash:08x} does not verify")]
    InvalidSignature { name: String, key_hash: u32 },

    #[error("note has no signature by {name}+{key_hash:08x}")]
    NoSignatureByKey { name: String, key_hash: u32 },

    #[error("signature line is by {got}, expected {expected}")]
    WrongSigner { got: String, expected: String },

    #[error("cosignature timestamp {0} exceeds 2^63 - 1")]
    TimestampTooLarge(u64),

    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(String),
}

/// The key hash (the "key ID" of signed-note) of a key: "`key ID = SHA-256(key name || 0x0A ||
/// signature type || public key)[:4]`", read as a big-endian `u32` ("the uint32 key ID stored in
/// big-endian order"). Go's `keyHash(name, key)` hashes the same bytes, `key` being the type
/// byte followed by the public key.
pub fn key_hash(name: &str, signature_type: u8, public_key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([signature_type]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// signed-note: "Key names MUST be non-empty and MUST NOT contain any Unicode spaces or plus
/// (U+002B) characters." Go's `isValidName` tests `unicode.IsSpace`, the same set as Rust's
/// `char::is_whitespace` (the Unicode `White_Space` property). ASCII control characters are
/// refused too: no note may contain them, so a name with one could sign nothing that opens.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c < ' ')
}

pub(crate) fn check_name(name: &str) -> Result<(), NoteError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(NoteError::InvalidName(name.to_string()))
    }
}

/// signed-note: "Signed notes MUST be valid UTF-8 and MUST NOT contain any ASCII control
/// characters (those below U+0020) other than newline."
pub(crate) fn check_controls(text: &str) -> Result<(), NoteError> {
    match text
        .bytes()
        .enumerate()
        .find(|&(_, b)| b < 0x20 && b != b'\n')
    {
        Some((offset, b)) => Err(NoteError::ControlCharacter {
            offset,
            code: u32::from(b),
        }),
        None => Ok(()),
    }
}

/// A note body: non-empty, ending in a newline, no control characters but newlines.
/// signed-note: "A signed note consists of a text ending in newline (U+000A)".
pub(crate) fn check_body(body: &str) -> Result<(), NoteError> {
    if !body.ends_with('\n') {
        return Err(NoteError::BodyNotTerminated);
    }
    check_controls(body)
}

pub(crate) fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Standard base64 (RFC 4648 §4) with canonical padding and no stray bits: the one encoding of
/// each byte string. (Go's decoder also accepts non-zero trailing bits; refusing them only makes
/// a tampered line fail sooner.)
pub(crate) fn b64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// `name+hash` as notes and errors write a key.
pub(crate) fn key_label(name: &str, key_hash: u32) -> String {
    format!("{name}+{key_hash:08x}")
}

/// Parse `<name>+<8 hex digits>+<base64(type ‖ key)>`, the verifier-key text of Go's
/// `note.NewVerifier`: the name ends at the first '+', the hash at the second, and the rest is
/// base64 (which may itself contain '+'). Returns the name, the stated hash and the decoded key
/// bytes (type byte first), after checking the hash against them.
pub(crate) fn parse_vkey(text: &str) -> Result<(String, u32, Vec<u8>), NoteError> {
    let bad = |why: &str| NoteError::MalformedVerifierKey(why.to_string());
    let (name, rest) = text
        .split_once('+')
        .ok_or_else(|| bad("expected <name>+<key hash>+<base64 key>"))?;
    let (hash16, key64) = rest
        .split_once('+')
        .ok_or_else(|| bad("expected <name>+<key hash>+<base64 key>"))?;
    check_name(name)?;
    let stated = parse_hash8(hash16).ok_or_else(|| bad("the key hash must be 8 hex digits"))?;
    let key = b64_decode(key64).ok_or_else(|| bad("the key is not standard base64"))?;
    let Some(&sig_type) = key.first() else {
        return Err(bad("the key is empty"));
    };
    let computed = key_hash(name, sig_type, &key[1..]);
    if computed != stated {
        return Err(NoteError::KeyHashMismatch {
            name: name.to_string(),
            stated,
            computed,
        });
    }
    Ok((name.to_string(), stated, key))
}

/// [`parse_vkey`] for an Ed25519 key of one signature type: the name, the key hash and the
/// public key.
pub(crate) fn parse_ed25519_vkey(
    text: &str,
    sig_type: u8,
) -> Result<(String, u32, ed25519_dalek::VerifyingKey), NoteError> {
    let (name, key_hash, key) = parse_vkey(text)?;
    if key[0] != sig_type {
        return Err(NoteError::WrongKeyType {
            got: key[0],
            expected: sig_type,
        });
    }
    let bytes: [u8; 32] = key[1..].try_into().map_err(|_| {
        NoteError::MalformedVerifierKey(format!(
            "an Ed25519 public key has 32 bytes, this one {}",
            key.len() - 1
        ))
    })?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| {
        NoteError::MalformedVerifierKey("the public key is not a valid Ed25519 point".into())
    })?;
    Ok((name, key_hash, key))
}

/// The verifier-key text `<name>+<8 hex key hash>+<base64(type ‖ key)>` ([`parse_vkey`]'s
/// inverse).
pub(crate) fn write_vkey(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    key_hash: u32,
    sig_type: u8,
    key: &ed25519_dalek::VerifyingKey,
) -> std::fmt::Result {
    let mut bytes = Vec::with_capacity(33);
    bytes.push(sig_type);
    bytes.extend_from_slice(key.as_bytes());
    write!(f, "{name}+{key_hash:08x}+{}", b64_encode(&bytes))
}

/// Eight hex digits, either case, as Go's `strconv.ParseUint(hash16, 16, 32)` with
/// `len(hash16) == 8` reads them (and nothing else: no sign, no prefix).
pub(crate) fn parse_hash8(text: &str) -> Option<u32> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

/// A line as given, less one trailing newline.
pub(crate) fn strip_newline(line: &str) -> &str {
    line.strip_suffix('\n').unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_name("example.com/log"));
        assert!(is_valid_name("PeterNeumann"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name("a+b"));
        assert!(!is_valid_name("a\u{00a0}b"));
        assert!(!is_valid_name("a\u{3000}b"));
        assert!(!is_valid_name("a\u{1}b"));
    }

    #[test]
    fn base64_is_strict() {
        assert_eq!(b64_decode("AQID"), Some(vec![1, 2, 3]));
        assert_eq!(b64_decode("AQI="), Some(vec![1, 2]));
        assert_eq!(b64_decode("AQI"), None, "padding is required");
        assert_eq!(b64_decode("AQJ="), None, "stray bits are refused");
        assert_eq!(b64_decode("AQ-_"), None, "URL alphabet is refused");
    }

    #[test]
    fn hash8() {
        assert_eq!(parse_hash8("c74f20a3"), Some(0xc74f20a3));
        assert_eq!(parse_hash8("C74F20A3"), Some(0xc74f20a3));
        assert_eq!(parse_hash8("+74f20a3"), None);
        assert_eq!(parse_hash8("c74f20a"), None);
    }
}
