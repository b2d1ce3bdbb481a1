//! C2SP signed notes, checkpoints and verifier keys (`openexec_log::note`), as ClawLedger reads
//! `GET /log/checkpoint` and its configuration, and as `evidence::verify_full` reads the
//! checkpoint inside evidence. Each input is tried as all of: a signed note (opened with the
//! fixed log key), a checkpoint body, a note body to sign, and a verifier key.
//!
//! Properties:
//! - no input panics;
//! - a note that opens re-serialises (`OpenedNote::text`) to exactly the input; each of its
//!   signature lines re-serialises (`SignatureLine::to_line`) to itself; the log key's own line
//!   verifies over the body; at most as many witnesses count as there are distinct witness keys;
//! - a checkpoint body that parses re-serialises (`Checkpoint::body`) to exactly the input;
//! - a body that signs (`sign_note`) opens again with the same body and text; one that does not
//!   sign never opens as a body;
//! - a verifier key (log or cosigner) that parses prints as the input (hash hex lower-cased) and
//!   that printed form parses to the same key; a plain note key never parses as a cosigner key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use openexec_fuzz::{log_signer, log_verifier, witnesses};
use openexec_log::note::{
    self, open_note, parse_cosigner_key, parse_verifier_key, sign_note, Checkpoint, SignatureLine,
};

fn check_open(data: &[u8]) {
    let verifier = log_verifier();
    let Ok(opened) = open_note(data, &verifier) else {
        return;
    };
    assert_eq!(
        opened.text().as_bytes(),
        data,
        "an opened note re-serialises"
    );
    assert!(opened.body.ends_with('\n'));
    assert!(!opened.signatures.is_empty() && opened.signatures.len() <= note::MAX_SIGNATURES);
    let mut by_log = 0;
    for line in &opened.signatures {
        let parsed = SignatureLine::parse(line).expect("an opened note's lines parse");
        assert_eq!(&parsed.to_line(), line, "a signature line re-serialises");
        if verifier.is_signer_of(&parsed) {
            verifier
                .verify_line(&opened.body, line)
                .expect("the log's line verified when the note opened");
            by_log += 1;
        }
    }
    assert!(by_log > 0, "opened without a line by the log's key");
    let ws = witnesses();
    let counted = note::verified_cosignatures(&opened, &ws);
    assert!(counted.len() <= 2, "a witness listed twice counted twice");
    for (i, ts) in counted {
        assert!(
            opened
                .signatures
                .iter()
                .any(|l| note::verify_cosignature(l, &opened.body, &ws[i]) == Ok(ts)),
            "a counted cosignature does not verify on its own"
        );
    }
    // What ClawLedger does next.
    if let Ok(cp) = Checkpoint::parse_body(&opened.body) {
        assert_eq!(cp.body(), opened.body);
    }
}

fn check_body(text: &str) {
    if let Ok(cp) = Checkpoint::parse_body(text) {
        assert_eq!(cp.body(), text, "a checkpoint body re-serialises");
        assert!(!cp.origin.is_empty());
        assert!(cp.extensions.iter().all(|l| !l.is_empty()));
        if cp.extensions.is_empty() {
            let fresh = Checkpoint::new(cp.origin.clone(), cp.size, cp.root)
                .expect("a parsed origin is a valid origin");
            assert_eq!(fresh, cp);
        }
    }
    let signer = log_signer();
    match sign_note(text, &[&signer]) {
        Ok(signed) => {
            let opened = open_note(&signed, &signer.verifier()).expect("a signed note opens");
            assert_eq!(opened.body, text);
            assert_eq!(opened.text(), signed);
        }
        Err(_) => {
            // A body that cannot be signed cannot be a note's body either.
            let line = signer.sign(text);
            assert!(line.is_err(), "sign_note refused a body Signer::sign takes");
        }
    }
}

/// The text a parsed verifier key prints as: the input with its key hash in lowercase hex.
fn canonical_vkey(text: &str) -> String {
    let mut parts = text.splitn(3, '+');
    let (name, hash, key) = (parts.next(), parts.next(), parts.next());
    format!(
        "{}+{}+{}",
        name.unwrap_or_default(),
        hash.unwrap_or_default().to_ascii_lowercase(),
        key.unwrap_or_default()
    )
}

fn check_keys(text: &str) {
    if let Ok(v) = parse_verifier_key(text) {
        let printed = v.to_string();
        assert_eq!(
            printed,
            canonical_vkey(text),
            "a verifier key re-serialises"
        );
        assert_eq!(parse_verifier_key(&printed), Ok(v.clone()));
        assert!(
            parse_cosigner_key(text).is_err(),
            "a note key parsed as a cosigner key"
        );
    }
    if let Ok(c) = parse_cosigner_key(text) {
        let printed = c.to_string();
        assert_eq!(
            printed,
            canonical_vkey(text),
            "a cosigner key re-serialises"
        );
        assert_eq!(parse_cosigner_key(&printed), Ok(c));
    }
}

fuzz_target!(|data: &[u8]| {
    check_open(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_body(text);
    check_keys(text);
});
