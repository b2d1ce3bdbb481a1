//! Checkpoints, signed notes and cosignatures: published vectors, an independent reference,
//! and tampering.

use ed25519_dalek::SigningKey;
use openexec_log::note::*;
use openexec_log::{leaf_hash, Frontier, Hash};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// The worked example of Go's golang.org/x/mod/sumdb/note package documentation ("Here is a
// well-formed signed note", note.go), byte for byte.
// ---------------------------------------------------------------------------------------------

const PN_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PN_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PN_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
const PN_LINE: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=";
const ENOCH_LINE: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=";

fn pn_msg() -> String {
    format!("{PN_TEXT}\n{PN_LINE}\n")
}

#[test]
fn go_note_example_signs_byte_for_byte() {
    let signer = parse_signer_key(PN_SKEY).unwrap();
    assert_eq!(signer.name(), "PeterNeumann");
    assert_eq!(signer.key_hash(), 0xc74f20a3);
    assert_eq!(signer.verifier_key(), PN_VKEY);
    assert_eq!(sign_note(PN_TEXT, &[&signer]).unwrap(), pn_msg());
    assert_eq!(signer.sign(PN_TEXT).unwrap(), PN_LINE);
}

#[test]
fn go_note_example_opens() {
    let verifier = parse_verifier_key(PN_VKEY).unwrap();
    assert_eq!(verifier.key_hash(), 0xc74f20a3);
    assert_eq!(verifier.to_string(), PN_VKEY);
    let opened = open_note(pn_msg(), &verifier).unwrap();
    assert_eq!(opened.body, PN_TEXT);
    assert_eq!(opened.signatures, vec![PN_LINE]);
    assert_eq!(opened.text(), pn_msg());
    verifier.verify_line(PN_TEXT, PN_LINE).unwrap();

    // The doubly-signed example: EnochRoot's line is unknown here and rides along.
    let doubly = format!("{PN_TEXT}\n{PN_LINE}\n{ENOCH_LINE}\n");
    let opened = open_note(doubly.as_bytes(), &verifier).unwrap();
    assert_eq!(opened.signatures, vec![PN_LINE, ENOCH_LINE]);
    assert_eq!(opened.text(), doubly);
    let enoch = SignatureLine::parse(ENOCH_LINE).unwrap();
    assert_eq!(enoch.name, "EnochRoot");
    assert_eq!(enoch.signature.len(), 64);
}

// ---------------------------------------------------------------------------------------------
// Vectors computed by tests/data/cross_check.py: Python's `cryptography` package and the C2SP
// texts, no code shared with this crate. Seeds are 32 bytes of 0x11 (log) and 0x22 (witness).
// ---------------------------------------------------------------------------------------------

const X_LOG_NAME: &str = "example.com/openexec/receipts";
const X_LOG_VKEY: &str =
    "example.com/openexec/receipts+e63add64+AdBKsjJ0K7SrOhNovUYV5ObQIkq3GgFrr4UgozLJd4c3";
const X_BODY: &str =
    "example.com/openexec/receipts\n42\nSBNJTRN+FjG7owHVrKtue7eqdM4RhdRWVl71HXN2d7I=\n";
const X_NOTE: &str = "example.com/openexec/receipts\n42\nSBNJTRN+FjG7owHVrKtue7eqdM4RhdRWVl71HXN2d7I=\n\n\u{2014} example.com/openexec/receipts 5jrdZMl+g0LIIR2vv2++TPX06wuqgKiM4UG5QsDCmmKYvMf5BRZ0mh2KGesC5RFXYLLPGyEmt5QFi5jyuJddgIScsQI=\n";
const X_W_NAME: &str = "witness.example/w1";
const X_W_VKEY: &str = "witness.example/w1+e0cd2864+BKCapfR6Z1mAL/lV+NwtKhSlyZ0jvpf4ZBJ/+Tg0VaTw";
const X_TS: u64 = 1679315147;
const X_COSIG: &str = "\u{2014} witness.example/w1 4M0oZAAAAABkGFDLug1ijpcfal9jp5nXAUhT1BW1XUtWOA/t+MAnYT42J0cLOu/KsosoeExY9u7uqS+T5//lg58skMDFsr9xQ5AcBg==";

fn log_signer() -> Signer {
    Signer::new(X_LOG_NAME, SigningKey::from_bytes(&[0x11; 32])).unwrap()
}

fn witness(seed: u8, name: &str) -> Cosigner {
    Cosigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
}

#[test]
fn checkpoint_note_matches_the_independent_reference() {
    let signer = log_signer();
    assert_eq!(signer.verifier_key(), X_LOG_VKEY);
    let root: Hash = Sha256::digest(b"root").into();
    let cp = Checkpoint::new(X_LOG_NAME, 42, root).unwrap();
    assert_eq!(cp.body(), X_BODY);
    assert_eq!(Checkpoint::parse_body(X_BODY).unwrap(), cp);
    assert_eq!(sign_note(&cp.body(), &[&signer]).unwrap(), X_NOTE);
    let opened = open_note(X_NOTE, &parse_verifier_key(X_LOG_VKEY).unwrap()).unwrap();
    assert_eq!(opened.body, X_BODY);
}

#[test]
fn cosignature_matches_the_independent_reference() {
    let w = witness(0x22, X_W_NAME);
    assert_eq!(w.verifier_key(), X_W_VKEY);
    assert_eq!(w.cosign(X_BODY, X_TS).unwrap(), X_COSIG);
    assert_eq!(
        cosign(X_BODY, X_W_NAME, &SigningKey::from_bytes(&[0x22; 32]), X_TS).unwrap(),
        X_COSIG
    );
    let v = parse_cosigner_key(X_W_VKEY).unwrap();
    assert_eq!(v, w.verifier());
    assert_eq!(verify_cosignature(X_COSIG, X_BODY, &v), Ok(X_TS));
    assert_eq!(
        verify_cosignature(&format!("{X_COSIG}\n"), X_BODY, &v),
        Ok(X_TS)
    );

    let served = format!("{X_NOTE}{X_COSIG}\n");
    let opened = open_note(&served, &log_signer().verifier()).unwrap();
    assert_eq!(opened.signatures.len(), 2);
    assert_eq!(count_cosignatures(&opened, std::slice::from_ref(&v)), 1);
    assert_eq!(verified_cosignatures(&opened, &[v]), vec![(0, X_TS)]);
}

// ---------------------------------------------------------------------------------------------
// Published keys and lines.
// ---------------------------------------------------------------------------------------------

/// tlog-cosignature's example checkpoint (its log key is not published, so only the layout is
/// checked): the witness line "jWbPPw…" carries the key hash then the timestamp 1679315147 that
/// the spec's signed-message example shows ("time 1679315147"), then 64 signature bytes.
#[test]
fn cosignature_spec_example_layout() {
    let body =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let cp = Checkpoint::parse_body(body).unwrap();
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, 20852163);
    assert!(cp.extensions.is_empty());
    assert_eq!(cp.body(), body);

    let line = SignatureLine::parse("\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==").unwrap();
    assert_eq!(line.name, "witness.example.com/w1");
    assert_eq!(line.signature.len(), 8 + 64);
    assert_eq!(
        u64::from_be_bytes(line.signature[..8].try_into().unwrap()),
        1679315147
    );
    // transparency-dev/formats note/note_cosigv1_test.go, TestCosignatureTimestamp.
    let line = SignatureLine::parse("\u{2014} w ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==").unwrap();
    assert_eq!(
        u64::from_be_bytes(line.signature[..8].try_into().unwrap()),
        1727964367
    );
}

/// Verifier keys from transparency-dev/formats note tests (TestCoSigV1NewVerifier): a real
/// witness's 0x04 key, whose stated key hash our computation must reproduce, and malformed ones.
#[test]
fn published_verifier_keys() {
    let remora = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2";
    let v = parse_cosigner_key(remora).unwrap();
    assert_eq!(v.key_hash(), 0xda77ade7);
    assert_eq!(v.to_string(), remora);
    assert!(matches!(
        parse_verifier_key(remora),
        Err(NoteError::WrongKeyType {
            got: 4,
            expected: 1
        })
    ));
    assert!(matches!(
        parse_cosigner_key(PN_VKEY),
        Err(NoteError::WrongKeyType {
            got: 1,
            expected: 4
        })
    ));
    let test_key = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6";
    assert_eq!(parse_verifier_key(test_key).unwrap().to_string(), test_key);

    for bad in [
        "bananas.sigstore.dev+12344556",
        "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
        "rekor.sigstore.dev+NOT_A_NUMBER+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+",
    ] {
        assert!(parse_verifier_key(bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse_verifier_key("PeterNeumann+00000000+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .unwrap_err()
            .to_string(),
        "key PeterNeumann+00000000 does not match its public key, whose key hash is c74f20a3"
    );
    // A key hash in upper case reads as Go reads it; it prints back in lower case.
    let upper = "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    assert_eq!(parse_verifier_key(upper).unwrap().to_string(), PN_VKEY);
    assert_eq!(PN_VKEY.parse::<Verifier>().unwrap().name(), "PeterNeumann");
}

#[test]
fn key_hash_is_sha256_of_name_newline_type_key() {
    let signer = log_signer();
    let pk = signer.verifier().verifying_key().to_bytes();
    let mut h = Sha256::new();
    h.update(X_LOG_NAME.as_bytes());
    h.update([0x0a, 0x01]);
    h.update(pk);
    let d = h.finalize();
    assert_eq!(
        signer.key_hash(),
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    );
    assert_eq!(key_hash(X_LOG_NAME, 0x01, &pk), signer.key_hash());
    assert_ne!(key_hash(X_LOG_NAME, 0x04, &pk), signer.key_hash());
}

// ---------------------------------------------------------------------------------------------
// Checkpoint bodies.
// ---------------------------------------------------------------------------------------------

#[test]
fn checkpoint_bodies() {
    let mut f = Frontier::empty();
    for i in 0u8..5 {
        f.append(leaf_hash(&[i])).unwrap();
    }
    let mut cp = Checkpoint::new("openexec/receipts/0123456789abcdef", f.size(), f.root()).unwrap();
    cp.extensions.push("extension line".into());
    let body = cp.body();
    assert!(body.starts_with("openexec/receipts/0123456789abcdef\n5\n"));
    assert!(body.ends_with("\nextension line\n"));
    assert_eq!(Checkpoint::parse_body(&body).unwrap(), cp);

    let empty = Checkpoint::new("o", 0, openexec_log::EMPTY_ROOT).unwrap();
    assert_eq!(
        empty.body(),
        "o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    );

    let root64 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    for bad in [
        format!("o\n0\n{root64}"),                      // no final newline
        "o\n0\n".to_string(),                           // two lines
        format!("\n0\n{root64}\n"),                     // empty origin
        format!("o\n00\n{root64}\n"),                   // leading zero
        format!("o\n-1\n{root64}\n"),                   // sign
        format!("o\n+1\n{root64}\n"),                   // sign
        format!("o\n18446744073709551616\n{root64}\n"), // too large
        "o\n1\nAAAA\n".to_string(),                     // 3 bytes, not 32
        format!("o\n1\n{}\n", &root64[..43]),           // unpadded
        format!("o\n1\n{root64}\n\n"),                  // empty extension line
        format!("o\n1\n{root64}\nx\r\n"),               // control character
    ] {
        let err = Checkpoint::parse_body(&bad).unwrap_err();
        assert!(
            matches!(err, NoteError::MalformedCheckpoint(_)),
            "{bad:?}: {err}"
        );
    }
    assert!(Checkpoint::new("", 1, [0; 32]).is_err());
    assert!(Checkpoint::new("a\nb", 1, [0; 32]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Signed notes: rules and tampering.
// ---------------------------------------------------------------------------------------------

#[test]
fn signer_names_and_bodies_are_checked() {
    for bad in ["", "a b", "a+b", "a\tb", "a\u{2003}b", "a\u{1}b"] {
        assert_eq!(
            Signer::new(bad, SigningKey::from_bytes(&[1; 32])).unwrap_err(),
            NoteError::InvalidName(bad.to_string())
        );
        assert!(Cosigner::new(bad, SigningKey::from_bytes(&[1; 32])).is_err());
    }
    let s = log_signer();
    assert_eq!(
        sign_note("no newline", &[&s]),
        Err(NoteError::BodyNotTerminated)
    );
    assert_eq!(sign_note("", &[&s]), Err(NoteError::BodyNotTerminated));
    assert_eq!(sign_note("a\n", &[]), Err(NoteError::NoSigners));
    assert_eq!(
        sign_note("a\u{7}\n", &[&s]),
        Err(NoteError::ControlCharacter { offset: 1, code: 7 })
    );
    assert!(parse_signer_key(
        "PRIVATE+KEY+PeterNeumann+00000000+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    )
    .is_err());
    let err = parse_signer_key("PRIVATE+KEY+x+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr").unwrap_err();
    assert!(!err.to_string().contains("AYEKFALV"), "{err}");
    // Two signers, in order; a body with an empty line still opens (the last one separates).
    let other = Signer::new("other.example/log", SigningKey::from_bytes(&[0x33; 32])).unwrap();
    let body = "para one\n\npara two\n";
    let note = sign_note(body, &[&s, &other]).unwrap();
    let opened = open_note(&note, &other.verifier()).unwrap();
    assert_eq!(opened.body, body);
    assert_eq!(opened.signatures.len(), 2);
    assert!(opened.signatures[0].starts_with("\u{2014} example.com/openexec/receipts "));
}

#[test]
fn malformed_notes_are_refused() {
    let v = parse_verifier_key(PN_VKEY).unwrap();
    let malformed = |text: String| {
        let err = open_note(&text, &v).unwrap_err();
        assert!(
            matches!(
                err,
                NoteError::MalformedNote(_)
                    | NoteError::MalformedSignatureLine { .. }
                    | NoteError::ControlCharacter { .. }
                    | NoteError::InvalidUtf8 { .. }
                    | NoteError::TooManySignatures
            ),
            "{text:?}: {err}"
        );
    };
    malformed(format!("{PN_TEXT}{PN_LINE}\n")); // no blank line
    malformed(format!("{PN_TEXT}\n{PN_LINE}")); // no final newline
    malformed(format!("{PN_TEXT}\n")); // no signatures
    malformed(format!("{PN_TEXT}\n{PN_LINE}\n\n")); // blank line after the signatures
    malformed(format!(
        "{PN_TEXT}\n{}\n",
        PN_LINE.replacen('\u{2014}', "--", 1)
    ));
    malformed(format!(
        "{PN_TEXT}\n{}\n",
        PN_LINE.replacen('\u{2014}', "\u{2013}", 1)
    ));
    malformed(format!(
        "{PN_TEXT}\n{}\n",
        PN_LINE.replacen("\u{2014} ", "\u{2014}", 1)
    ));
    malformed(format!(
        "{PN_TEXT}\n{}\n",
        PN_LINE.replacen("Peter", "Peter+", 1)
    ));
    malformed(format!("{PN_TEXT}\n{}\n", PN_LINE.trim_end_matches('='))); // unpadded
    malformed(format!("{PN_TEXT}\n\u{2014} PeterNeumann AAAA\n")); // 3 bytes
    malformed(format!("{PN_TEXT}\n\u{2014} PeterNeumann\n"));
    malformed(format!("{PN_TEXT}\n{PN_LINE}\r\n"));
    malformed(format!("x\u{0}\n\n{PN_LINE}\n"));
    let too_many = format!(
        "{PN_TEXT}\n{}",
        format!("{ENOCH_LINE}\n").repeat(100) + PN_LINE + "\n"
    );
    assert_eq!(open_note(&too_many, &v), Err(NoteError::TooManySignatures));
    let hundred = format!(
        "{PN_TEXT}\n{}",
        format!("{ENOCH_LINE}\n").repeat(99) + PN_LINE + "\n"
    );
    assert_eq!(open_note(&hundred, &v).unwrap().signatures.len(), 100);
    assert_eq!(
        open_note(b"\xff\n\n".as_slice(), &v),
        Err(NoteError::InvalidUtf8 { offset: 0 })
    );
}

#[test]
fn a_note_by_another_key_fails() {
    let v = parse_verifier_key(PN_VKEY).unwrap();
    // Signed by a different key under the same name: its key hash differs, so the line is
    // unknown and nothing verifies.
    let impostor = Signer::new("PeterNeumann", SigningKey::from_bytes(&[9; 32])).unwrap();
    let note = sign_note(PN_TEXT, &[&impostor]).unwrap();
    let err = open_note(&note, &v).unwrap_err();
    assert_eq!(
        err,
        NoteError::NoSignatureByKey {
            name: "PeterNeumann".into(),
            key_hash: 0xc74f20a3
        }
    );
    assert_eq!(
        err.to_string(),
        "note has no signature by PeterNeumann+c74f20a3"
    );
    // A line that claims the right name and key hash but carries another key's signature.
    let forged = {
        let mut l = SignatureLine::parse(&impostor.sign(PN_TEXT).unwrap()).unwrap();
        l.key_hash = 0xc74f20a3;
        l.to_line()
    };
    let err = open_note(format!("{PN_TEXT}\n{forged}\n"), &v).unwrap_err();
    assert_eq!(
        err.to_string(),
        "signature by PeterNeumann+c74f20a3 does not verify"
    );
    // A good signature next to a forged one by the same key: rejected as a whole.
    let both = format!("{PN_TEXT}\n{PN_LINE}\n{forged}\n");
    assert!(matches!(
        open_note(&both, &v),
        Err(NoteError::InvalidSignature { .. })
    ));
    assert!(matches!(
        v.verify_line(PN_TEXT, ENOCH_LINE),
        Err(NoteError::WrongSigner { .. })
    ));
}

fn flipped(text: &[u8], byte: usize, bit: u8) -> Vec<u8> {
    let mut out = text.to_vec();
    out[byte] ^= 1 << bit;
    out
}

/// The bit flips to try: for every byte, bit `byte % 8` (so each byte changes, and each bit
/// position is exercised along the note); and all eight bits of each byte of the framing (the
/// blank line, the em dashes, the spaces, the key names, the newlines), where a flip must be
/// caught before any signature is checked. Every flip of every bit would mean thousands of
/// Ed25519 verifications, some seconds of a debug build for no more assurance: a body flip
/// changes the signed message, and a signature flip changes the signature.
fn flips(note: &str) -> Vec<(usize, u8)> {
    let bytes = note.as_bytes();
    let body_end = note.rfind("\n\n").unwrap() + 2;
    let mut framing = vec![false; bytes.len()];
    framing[body_end - 1] = true;
    let mut line_start = body_end;
    for line in note[body_end..].split_inclusive('\n') {
        let sig_start = line_start + line.rfind(' ').unwrap() + 1;
        for f in &mut framing[line_start..sig_start] {
            *f = true;
        }
        framing[line_start + line.len() - 1] = true;
        line_start += line.len();
    }
    let mut out = Vec::new();
    for (byte, &is_frame) in framing.iter().enumerate() {
        if is_frame {
            out.extend((0..8).map(|bit| (byte, bit)));
        } else {
            out.push((byte, (byte % 8) as u8));
        }
    }
    out
}

#[test]
fn any_flipped_bit_breaks_a_signed_note() {
    let v = parse_verifier_key(PN_VKEY).unwrap();
    let msg = pn_msg();
    for (byte, bit) in flips(&msg) {
        let bad = flipped(msg.as_bytes(), byte, bit);
        assert!(
            open_note(&bad, &v).is_err(),
            "flipping bit {bit} of byte {byte} went unnoticed"
        );
    }
    // Every bit of the signature's first six base64 characters (its key hash) is cheap to try:
    // the line then names an unknown key and the note has no signature by the verifier.
    let sig_start = msg.rfind(' ').unwrap() + 1;
    for byte in sig_start..sig_start + 6 {
        for bit in 0..8 {
            assert!(open_note(flipped(msg.as_bytes(), byte, bit), &v).is_err());
        }
    }
}

#[test]
fn any_flipped_bit_breaks_a_checkpoint_and_its_cosignature() {
    let signer = log_signer();
    let w = witness(0x22, X_W_NAME);
    let wv = w.verifier();
    let note = format!("{X_NOTE}{X_COSIG}\n");
    let cosig_start = X_NOTE.len();
    for (byte, bit) in flips(&note) {
        let bad = flipped(note.as_bytes(), byte, bit);
        match open_note(&bad, &signer.verifier()) {
            Err(_) => {}
            Ok(opened) => {
                // Only a change inside the witness's line can leave the log's signature
                // standing; then the cosignature no longer counts.
                assert!(byte >= cosig_start, "byte {byte} bit {bit}");
                assert_eq!(count_cosignatures(&opened, std::slice::from_ref(&wv)), 0);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cosignatures.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_cosignature_over_another_body_fails() {
    let w = witness(0x22, X_W_NAME);
    let v = w.verifier();
    let other_body = X_BODY.replace("\n42\n", "\n43\n");
    let line = w.cosign(X_BODY, X_TS).unwrap();
    assert_eq!(
        verify_cosignature(&line, &other_body, &v),
        Err(NoteError::InvalidSignature {
            name: X_W_NAME.into(),
            key_hash: v.key_hash()
        })
    );
    // Another witness's line, or the same line checked against another witness.
    let other = witness(0x44, "witness.example/w2");
    assert!(matches!(
        verify_cosignature(&line, X_BODY, &other.verifier()),
        Err(NoteError::WrongSigner { .. })
    ));
    // The timestamp is signed: changing it breaks the signature.
    let mut parsed = SignatureLine::parse(&line).unwrap();
    parsed.signature[7] ^= 1;
    assert!(matches!(
        verify_cosignature(&parsed.to_line(), X_BODY, &v),
        Err(NoteError::InvalidSignature { .. })
    ));
    // A plain note signature by the same key is not a cosignature (different key hash).
    let plain = Signer::new(X_W_NAME, SigningKey::from_bytes(&[0x22; 32]))
        .unwrap()
        .sign(X_BODY)
        .unwrap();
    assert!(verify_cosignature(&plain, X_BODY, &v).is_err());
}

#[test]
fn cosign_checks_its_inputs() {
    let w = witness(0x22, X_W_NAME);
    assert_eq!(
        w.cosign(X_BODY, 1 << 63),
        Err(NoteError::TimestampTooLarge(1 << 63))
    );
    assert!(w.cosign(X_BODY, (1 << 63) - 1).is_ok());
    assert!(w.cosign(X_BODY, 0).is_ok());
    assert!(matches!(
        w.cosign("not a checkpoint\n", 5),
        Err(NoteError::MalformedCheckpoint(_))
    ));
    assert_eq!(
        w.cosign(X_BODY.trim_end(), 5),
        Err(NoteError::BodyNotTerminated)
    );
    // A line carrying a timestamp above 2^63 - 1 is refused before any signature check.
    let mut parsed = SignatureLine::parse(&w.cosign(X_BODY, 5).unwrap()).unwrap();
    parsed.signature[0] = 0x80;
    assert_eq!(
        verify_cosignature(&parsed.to_line(), X_BODY, &w.verifier()),
        Err(NoteError::TimestampTooLarge(0x8000_0000_0000_0005))
    );
}

#[test]
fn k_of_n_counts_distinct_witnesses() {
    let signer = log_signer();
    let w1 = witness(0x22, "w1.example");
    let w2 = witness(0x44, "w2.example");
    let w3 = witness(0x55, "w3.example");
    let stranger = witness(0x66, "stranger.example");
    let mut note = sign_note(X_BODY, &[&signer]).unwrap();
    for (w, ts) in [(&w1, 100), (&w2, 200), (&stranger, 300), (&w1, 101)] {
        note.push_str(&w.cosign(X_BODY, ts).unwrap());
        note.push('\n');
    }
    // A line naming w3 and its key hash, but signed by another key: not counted.
    let mut fake = SignatureLine::parse(&stranger.cosign(X_BODY, 400).unwrap()).unwrap();
    fake.name = "w3.example".into();
    fake.key_hash = w3.key_hash();
    note.push_str(&fake.to_line());
    note.push('\n');

    let opened = open_note(&note, &signer.verifier()).unwrap();
    assert_eq!(opened.signatures.len(), 6);
    let ws = [w1.verifier(), w2.verifier(), w3.verifier(), w1.verifier()];
    assert_eq!(count_cosignatures(&opened, &ws), 2);
    assert_eq!(
        verified_cosignatures(&opened, &ws),
        vec![(0, 100), (1, 200)]
    );
    assert_eq!(count_cosignatures(&opened, &[]), 0);
    assert_eq!(count_cosignatures(&opened, &[w3.verifier()]), 0);

    // Cosignatures over another checkpoint do not count for this one.
    let other_body = X_BODY.replace("\n42\n", "\n41\n");
    let mut stale = sign_note(X_BODY, &[&signer]).unwrap();
    stale.push_str(&w1.cosign(&other_body, 1).unwrap());
    stale.push('\n');
    let opened = open_note(&stale, &signer.verifier()).unwrap();
    assert_eq!(count_cosignatures(&opened, &[w1.verifier()]), 0);
}
