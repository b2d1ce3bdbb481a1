//! C2SP signed-note with Ed25519 keys (signature type 0x01).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use super::{
    b64_decode, b64_encode, check_body, check_controls, check_name, is_valid_name, key_hash,
    key_label, parse_ed25519_vkey, parse_hash8, strip_newline, write_vkey, NoteError,
    MAX_SIGNATURES, SIGNATURE_PREFIX, SIG_TYPE_ED25519,
};

/// One signature line, parsed but not verified: `— <name> base64(key hash ‖ signature)`.
///
/// signed-note: "Signatures are the base64 encoding of 4+n bytes. The first four bytes in the
/// signature are the uint32 key ID stored in big-endian order. The remaining n bytes are the
/// result of using the specified key to sign the note text".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureLine {
    pub name: String,
    pub key_hash: u32,
    /// The `n` bytes after the key hash (for a cosignature: timestamp and signature).
    pub signature: Vec<u8>,
}

impl SignatureLine {
    /// Parse a line the way Go's `note.Open` does: the em dash and space, then the name up to
    /// the first space, then the base64 of at least 5 bytes (a key hash and a signature). One
    /// trailing newline is allowed.
    pub fn parse(line: &str) -> Result<Self, NoteError> {
        let line = strip_newline(line);
        let bad = |why: &str| NoteError::MalformedSignatureLine {
            line: line.to_string(),
            reason: why.to_string(),
        };
        check_controls(line).map_err(|_| bad("it has a control character"))?;
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or_else(|| bad("it must start with an em dash (U+2014) and a space"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| bad("expected a key name, a space and a base64 signature"))?;
        if !is_valid_name(name) {
            return Err(bad(
                "the key name must be non-empty, with no spaces, no '+' and no control characters",
            ));
        }
        let raw = b64_decode(b64).ok_or_else(|| bad("the signature is not standard base64"))?;
        if raw.len() < 5 {
            return Err(bad(
                "the signature must hold a 4-byte key hash and at least one more byte",
            ));
        }
        Ok(SignatureLine {
            name: name.to_string(),
            key_hash: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            signature: raw[4..].to_vec(),
        })
    }

    /// The line, without a trailing newline.
    pub fn to_line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_hash.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}", self.name, b64_encode(&raw))
    }
}

/// Signs notes with an Ed25519 key under a key name (for a log: its origin, SPEC §7).
#[derive(Clone)]
pub struct Signer {
    name: String,
    key: SigningKey,
    key_hash: u32,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({})", key_label(&self.name, self.key_hash))
    }
}

impl Signer {
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        check_name(name)?;
        let key_hash = key_hash(name, SIG_TYPE_ED25519, key.verifying_key().as_bytes());
        Ok(Signer {
            name: name.to_string(),
            key,
            key_hash,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// signed-note: "`key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public
    /// key)[:4]`".
    pub fn key_hash(&self) -> u32 {
        self.key_hash
    }

    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_hash: self.key_hash,
            key: self.key.verifying_key(),
        }
    }

    /// The verifier key to publish: `<name>+<8 hex key hash>+<base64(0x01 ‖ public key)>`.
    pub fn verifier_key(&self) -> String {
        self.verifier().to_string()
    }

    /// The signature line (without newline) for a note body: "Ed25519 signatures are generated
    /// according to RFC 8032 over the note text", the text "including the final newline but not
    /// the separating blank line".
    pub fn sign(&self, body: &str) -> Result<String, NoteError> {
        check_body(body)?;
        Ok(self.sign_unchecked(body))
    }

    fn sign_unchecked(&self, body: &str) -> String {
        SignatureLine {
            name: self.name.clone(),
            key_hash: self.key_hash,
            signature: self.key.sign(body.as_bytes()).to_bytes().to_vec(),
        }
        .to_line()
    }
}

/// Checks note signatures by one Ed25519 key. Parsed from, and printed as, verifier-key text
/// `<name>+<8 hex key hash>+<base64(0x01 ‖ 32-byte public key)>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_hash: u32,
    key: VerifyingKey,
}

impl Verifier {
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(Verifier {
            name: name.to_string(),
            key_hash: key_hash(name, SIG_TYPE_ED25519, key.as_bytes()),
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

    /// The verifier-key text (same as `to_string()`).
    pub fn verifier_key(&self) -> String {
        self.to_string()
    }

    /// True when a line claims to be by this key: its name and key hash both match.
    /// signed-note: "Verifiers MUST ignore signatures from unknown keys, even if they share a
    /// name or ID (but not both) with a known key."
    pub fn is_signer_of(&self, line: &SignatureLine) -> bool {
        line.name == self.name && line.key_hash == self.key_hash
    }

    /// Check one signature line by this key over a note body.
    pub fn verify_line(&self, body: &str, line: &str) -> Result<(), NoteError> {
        let parsed = SignatureLine::parse(line)?;
        if !self.is_signer_of(&parsed) {
            return Err(NoteError::WrongSigner {
                got: key_label(&parsed.name, parsed.key_hash),
                expected: key_label(&self.name, self.key_hash),
            });
        }
        self.check(body, &parsed)
    }

    fn check(&self, body: &str, line: &SignatureLine) -> Result<(), NoteError> {
        let invalid = || NoteError::InvalidSignature {
            name: self.name.clone(),
            key_hash: self.key_hash,
        };
        let sig: [u8; 64] = line
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| invalid())?;
        self.key
            .verify_strict(body.as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| invalid())
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_vkey(f, &self.name, self.key_hash, SIG_TYPE_ED25519, &self.key)
    }
}

impl FromStr for Verifier {
    type Err = NoteError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_verifier_key(s)
    }
}

/// Read a verifier key `<name>+<8 hex key hash>+<base64(0x01 ‖ public key)>`, as Go's
/// `note.NewVerifier` does: the stated key hash must be the one computed from the name and key,
/// and the key must be Ed25519 (type 0x01, 32 bytes).
pub fn parse_verifier_key(text: &str) -> Result<Verifier, NoteError> {
    let (name, key_hash, key) = parse_ed25519_vkey(text, SIG_TYPE_ED25519)?;
    Ok(Verifier {
        name,
        key_hash,
        key,
    })
}

/// Read a Go signer key `PRIVATE+KEY+<name>+<8 hex key hash>+<base64(0x01 ‖ 32-byte seed)>`
/// (what `note.GenerateKey` prints), checking the key hash against the derived public key.
/// Errors never repeat the key.
pub fn parse_signer_key(text: &str) -> Result<Signer, NoteError> {
    let bad = |why: &str| NoteError::MalformedSignerKey(why.to_string());
    let rest = text
        .strip_prefix("PRIVATE+KEY+")
        .ok_or_else(|| bad("it must start with PRIVATE+KEY+"))?;
    let (name, rest) = rest
        .split_once('+')
        .ok_or_else(|| bad("expected PRIVATE+KEY+<name>+<key hash>+<base64 key>"))?;
    let (hash16, key64) = rest
        .split_once('+')
        .ok_or_else(|| bad("expected PRIVATE+KEY+<name>+<key hash>+<base64 key>"))?;
    check_name(name)?;
    let stated = parse_hash8(hash16).ok_or_else(|| bad("the key hash must be 8 hex digits"))?;
    let key = b64_decode(key64).ok_or_else(|| bad("the key is not standard base64"))?;
    match key.first() {
        Some(&SIG_TYPE_ED25519) => {}
        Some(&got) => {
            return Err(NoteError::WrongKeyType {
                got,
                expected: SIG_TYPE_ED25519,
            })
        }
        None => return Err(bad("the key is empty")),
    }
    let seed: [u8; 32] = key[1..]
        .try_into()
        .map_err(|_| bad("an Ed25519 seed has 32 bytes"))?;
    let signer = Signer::new(name, SigningKey::from_bytes(&seed))?;
    if signer.key_hash != stated {
        return Err(NoteError::KeyHashMismatch {
            name: name.to_string(),
            stated,
            computed: signer.key_hash,
        });
    }
    Ok(signer)
}

/// Sign a note body with each signer, in order: the body, a blank line, one signature line each.
pub fn sign_note(body: &str, signers: &[&Signer]) -> Result<String, NoteError> {
    if signers.is_empty() {
        return Err(NoteError::NoSigners);
    }
    check_body(body)?;
    let mut out = String::with_capacity(body.len() + 1 + signers.len() * 110);
    out.push_str(body);
    out.push('\n');
    for signer in signers {
        out.push_str(&signer.sign_unchecked(body));
        out.push('\n');
    }
    Ok(out)
}

/// A note whose signature by the expected key verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedNote {
    /// The signed text, final newline included.
    pub body: String,
    /// Every signature line, verified or not, in order, without newlines: the log's own and any
    /// others (witness cosignatures ride along unverified; see
    /// [`count_cosignatures`](super::count_cosignatures)).
    pub signatures: Vec<String>,
}

impl OpenedNote {
    /// The note text again: body, blank line, each signature line and a newline.
    pub fn text(&self) -> String {
        let mut out = self.body.clone();
        out.push('\n');
        for line in &self.signatures {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// Open a signed note: check it is well formed, and that a signature by `verifier` verifies.
///
/// The rules, from signed-note and Go's `note.Open`:
/// - "Signed notes MUST be valid UTF-8 and MUST NOT contain any ASCII control characters (those
///   below U+0020) other than newline."
/// - "the text is separated from the signatures by the last empty line in the note"; there must
///   be at least one signature line, and the note ends with a newline.
/// - Each signature line is `— <name> <base64>` with a valid name and at least 5 bytes; at most
///   [`MAX_SIGNATURES`] lines.
/// - "If the key name and ID match a known key, verifiers MUST verify the signature. If a
///   signature from a known key fails to verify, clients SHOULD reject the whole note. If no
///   signature from a known key verifies successfully, clients MUST reject the note." Every line
///   by `verifier` is checked (Go checks only the first of repeated ones); one failure rejects
///   the note.
pub fn open_note(note: impl AsRef<[u8]>, verifier: &Verifier) -> Result<OpenedNote, NoteError> {
    let text = std::str::from_utf8(note.as_ref()).map_err(|e| NoteError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    check_controls(text)?;
    let split = text.rfind("\n\n").ok_or_else(|| {
        NoteError::MalformedNote("no blank line separates the text from the signatures".into())
    })?;
    let (body, sigs) = (&text[..split + 1], &text[split + 2..]);
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(NoteError::MalformedNote(if sigs.is_empty() {
            "no signature lines after the blank line".into()
        } else {
            "the last signature line does not end with a newline".into()
        }));
    };
    let lines: Vec<&str> = sigs.split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(NoteError::TooManySignatures);
    }
    let mut verified = false;
    for line in &lines {
        let parsed = SignatureLine::parse(line)?;
        if verifier.is_signer_of(&parsed) {
            verifier.check(body, &parsed)?;
            verified = true;
        }
    }
    if !verified {
        return Err(NoteError::NoSignatureByKey {
            name: verifier.name.clone(),
            key_hash: verifier.key_hash,
        });
    }
    Ok(OpenedNote {
        body: body.to_string(),
        signatures: lines.iter().map(|l| l.to_string()).collect(),
    })
}
