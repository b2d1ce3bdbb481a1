//! Ed25519 keys and signatures (SPEC §3).
//!
//! Keys are read from PEM (SPKI `PUBLIC KEY`, PKCS#8 `PRIVATE KEY`) or raw standard base64. PEM is
//! read leniently, as it arrives from files and environment variables: surrounding whitespace or
//! quotes, CRLF line ends, literal two-character `\n` sequences instead of newlines, and bodies on
//! one line are all fine. Keys are written as PKCS#8 v1 / SPKI PEM with 64-column lines, the form
//! OpenSSL and Python's `cryptography` write.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer};

pub use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::json::sha256_hex;

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Nothing but whitespace.
    #[error("no key found: the key text is empty")]
    Empty,
    /// Neither PEM nor valid standard base64.
    #[error("key is neither PEM nor valid standard base64: {0}")]
    NotBase64(String),
    /// Raw base64 of the wrong length.
    #[error("raw key is {got} bytes after base64 decoding; expected {expected}")]
    WrongLength {
        /// What lengths would have been accepted.
        expected: &'static str,
        /// The decoded length.
        got: usize,
    },
    /// A PEM block that could not be read.
    #[error("malformed PEM: {0}")]
    Pem(String),
    /// A PEM block of a kind this program does not take.
    #[error("unsupported PEM block \"{0}\": expected \"PUBLIC KEY\" (SPKI) or \"PRIVATE KEY\" (unencrypted PKCS#8)")]
    UnsupportedPem(String),
    /// A public key was given where a private key is needed.
    #[error("expected a private key, found a public key")]
    NotPrivate,
    /// The bytes are not an Ed25519 public key.
    #[error("not an Ed25519 public key: {0}")]
    InvalidPublicKey(String),
    /// The bytes are not an Ed25519 private key.
    #[error("not an Ed25519 private key: {0}")]
    InvalidPrivateKey(String),
    /// A 64-byte key whose second half is not the public key of its first half.
    #[error("the 64-byte key's public half does not match its seed")]
    KeypairMismatch,
    /// More than one key where exactly one is expected.
    #[error("expected exactly one key, found {0}")]
    NotOne(usize),
}

/// Standard alphabet, padding optional.
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `key_id(pk)`: the first 16 hex characters of SHA-256 of the raw 32-byte public key.
pub fn key_id(pk: &VerifyingKey) -> String {
    let mut h = sha256_hex(pk.as_bytes());
    h.truncate(16);
    h
}

/// One item found in a key text.
enum Item {
    Pem { label: String, der: Vec<u8> },
    Raw(Vec<u8>),
}

/// Undo the ways env vars and files mangle PEM.
fn normalize_text(text: &str) -> String {
    let t = text.trim();
    let t = strip_quotes(t);
    t.replace("\\r\\n", "\n")
        .replace("\\n", "\n")
        .replace("\r\n", "\n")
        .replace('\r', "\n")
}

fn strip_quotes(t: &str) -> &str {
    for q in ['"', '\''] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            return t[1..t.len() - 1].trim();
        }
    }
    t
}

/// Split a text into PEM blocks and raw base64 items (separated by commas or whitespace).
fn split_items(text: &str) -> Result<Vec<Item>, KeyError> {
    let text = normalize_text(text);
    let mut items = Vec::new();
    let mut rest = text.as_str();
    let mut outside = String::new();
    while let Some(begin) = rest.find("-----BEGIN ") {
        outside.push_str(&rest[..begin]);
        outside.push('\n');
        let after = &rest[begin + "-----BEGIN ".len()..];
        let label_end = after
            .find("-----")
            .ok_or_else(|| KeyError::Pem("unterminated BEGIN line".into()))?;
        let label = after[..label_end].trim().to_string();
        let body_and_more = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let end = body_and_more
            .find(&end_marker)
            .ok_or_else(|| KeyError::Pem(format!("no \"{end_marker}\" line")))?;
        let body = &body_and_more[..end];
        if body.contains(':') {
            // RFC 1421 headers such as "Proc-Type: 4,ENCRYPTED": a legacy encrypted key.
            return Err(KeyError::UnsupportedPem(format!("{label} with headers")));
        }
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = B64_LENIENT
            .decode(compact.as_bytes())
            .map_err(|e| KeyError::Pem(format!("body of \"{label}\" is not base64: {e}")))?;
        items.push(Item::Pem { label, der });
        rest = &body_and_more[end + end_marker.len()..];
    }
    outside.push_str(rest);
    for token in outside
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        let raw = B64_LENIENT
            .decode(token.as_bytes())
            .map_err(|e| KeyError::NotBase64(e.to_string()))?;
        items.push(Item::Raw(raw));
    }
    Ok(items)
}

fn verifying_from_item(item: &Item) -> Result<VerifyingKey, KeyError> {
    match item {
        Item::Pem { label, der } => match label.as_str() {
            "PUBLIC KEY" => VerifyingKey::from_public_key_der(der)
                .map_err(|e| KeyError::InvalidPublicKey(e.to_string())),
            "PRIVATE KEY" => SigningKey::from_pkcs8_der(der)
                .map(|sk| sk.verifying_key())
                .map_err(|e| KeyError::InvalidPrivateKey(e.to_string())),
            other => Err(KeyError::UnsupportedPem(other.to_string())),
        },
        Item::Raw(bytes) => {
            let arr: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| KeyError::WrongLength {
                    expected: "32 (a raw Ed25519 public key)",
                    got: bytes.len(),
                })?;
            VerifyingKey::from_bytes(&arr).map_err(|e| KeyError::InvalidPublicKey(e.to_string()))
        }
    }
}

fn signing_from_item(item: &Item) -> Result<SigningKey, KeyError> {
    match item {
        Item::Pem { label, der } => match label.as_str() {
            "PRIVATE KEY" => SigningKey::from_pkcs8_der(der)
                .map_err(|e| KeyError::InvalidPrivateKey(e.to_string())),
            "PUBLIC KEY" => Err(KeyError::NotPrivate),
            other => Err(KeyError::UnsupportedPem(other.to_string())),
        },
        Item::Raw(bytes) => match bytes.len() {
            32 => {
                let mut seed = [0u8; 32];
                seed.copy_from_slice(bytes);
                Ok(SigningKey::from_bytes(&seed))
            }
            64 => {
                let mut pair = [0u8; 64];
                pair.copy_from_slice(bytes);
                SigningKey::from_keypair_bytes(&pair).map_err(|_| KeyError::KeypairMismatch)
            }
            n => Err(KeyError::WrongLength {
                expected: "32 (seed) or 64 (seed and public key)",
                got: n,
            }),
        },
    }
}

fn exactly_one(items: Vec<Item>) -> Result<Item, KeyError> {
    match items.len() {
        0 => Err(KeyError::Empty),
        1 => Ok(items.into_iter().next().ok_or(KeyError::Empty)?),
        n => Err(KeyError::NotOne(n)),
    }
}

/// Read one public key: PEM `PUBLIC KEY` (SPKI), PEM `PRIVATE KEY` (PKCS#8; its public key is
/// derived), or raw standard base64 (padding optional) of the 32-byte key. Surrounding whitespace
/// and PEM with literal `\n` sequences for newlines are fine.
pub fn parse_verifying_key(text: &str) -> Result<VerifyingKey, KeyError> {
    verifying_from_item(&exactly_one(split_items(text)?)?)
}

/// Read one private key: PEM PKCS#8 `PRIVATE KEY`, or raw standard base64 of a 32-byte seed or of
/// 64 bytes (seed ‖ public key, which must match).
pub fn parse_signing_key(text: &str) -> Result<SigningKey, KeyError> {
    signing_from_item(&exactly_one(split_items(text)?)?)
}

/// Read several public keys from one text: PEM blocks one after another, and/or raw base64 items
/// separated by commas or newlines. At least one key is required.
pub fn parse_verifying_keys(text: &str) -> Result<Vec<VerifyingKey>, KeyError> {
    let items = split_items(text)?;
    if items.is_empty() {
        return Err(KeyError::Empty);
    }
    items.iter().map(verifying_from_item).collect()
}

/// The signing key for a 32-byte seed (the caller supplies the randomness).
pub fn signing_key_from_seed(seed: [u8; 32]) -> SigningKey {
    SigningKey::from_bytes(&seed)
}

/// DER prefix of a PKCS#8 v1 Ed25519 private key (RFC 8410 §7), followed by the 32-byte seed.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4), followed by the 32-byte key.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// PKCS#8 (v1) PEM of a private key.
pub fn signing_key_to_pem(sk: &SigningKey) -> String {
    let mut der = PKCS8_PREFIX.to_vec();
    der.extend_from_slice(sk.as_bytes());
    pem("PRIVATE KEY", &der)
}

/// SPKI PEM of a public key.
pub fn verifying_key_to_pem(pk: &VerifyingKey) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(pk.as_bytes());
    pem("PUBLIC KEY", &der)
}

/// Standard base64 (with padding) of the raw 32-byte public key.
pub fn verifying_key_b64(pk: &VerifyingKey) -> String {
    STANDARD.encode(pk.as_bytes())
}

/// Ed25519 signature of `msg`, standard base64 with padding.
pub fn sign_b64(sk: &SigningKey, msg: &[u8]) -> String {
    STANDARD.encode(sk.sign(msg).to_bytes())
}

/// Check a standard-base64 Ed25519 signature (padding optional) with `verify_strict`. False on
/// any decoding problem.
pub fn verify_b64(pk: &VerifyingKey, msg: &[u8], sig_b64: &str) -> bool {
    let Ok(bytes) = B64_LENIENT.decode(sig_b64.trim().as_bytes()) else {
        return false;
    };
    let Ok(arr) = <[u8; 64]>::try_from(bytes.as_slice()) else {
        return false;
    };
    pk.verify_strict(msg, &Signature::from_bytes(&arr)).is_ok()
}
