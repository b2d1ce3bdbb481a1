//! C2SP `tlog-cosignature` lines (`openexec_log::note`): what a witness posts to
//! `POST /log/cosignatures` (checked with `verify_cosignature` against the latest checkpoint), and
//! the cosignature lines a served checkpoint carries (counted with `verified_cosignatures`).
//! Each input is tried as all of: cosignature lines over a fixed checkpoint (one per line, as the
//! log reads a POST body), extra signature lines of a fixed signed checkpoint, and a checkpoint
//! body for a witness to cosign.
//!
//! Properties:
//! - no input panics;
//! - a line that verifies parses as a line by that witness, re-serialises to itself, carries a
//!   timestamp ≤ 2^63−1, and does not verify over another checkpoint;
//! - in a note, every counted witness has a line that verifies on its own, a witness listed
//!   twice counts once, and the count over both witnesses is the sum of the counts over each;
//! - a body cosigns exactly when it is a checkpoint and the timestamp ≤ 2^63−1; the line then
//!   verifies with that witness's key (giving back the timestamp) and with no other key, and not
//!   over the body with a line added.

#![no_main]

use libfuzzer_sys::fuzz_target;
use openexec_fuzz::{cosigners, log_signer, log_verifier, witnesses, LOG_ORIGIN};
use openexec_log::note::{
    self, count_cosignatures, open_note, verified_cosignatures, verify_cosignature, Checkpoint,
    NoteError, SignatureLine,
};
use openexec_log::{leaf_hash, Hash};

fn root(seed: &[u8]) -> Hash {
    leaf_hash(seed)
}

/// The checkpoint the lines are checked against, and another one of the same log.
fn bodies() -> (String, String) {
    let a = Checkpoint::new(LOG_ORIGIN, 5, root(b"five")).expect("a valid origin");
    let b = Checkpoint::new(LOG_ORIGIN, 6, root(b"six")).expect("a valid origin");
    (a.body(), b.body())
}

fn check_lines(text: &str) {
    let (body, other) = bodies();
    let ws = witnesses();
    // As `LogService::add_cosignatures` reads a POST body.
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        for w in &ws {
            let Ok(ts) = verify_cosignature(line, &body, w) else {
                continue;
            };
            assert!(ts <= i64::MAX as u64);
            let parsed = SignatureLine::parse(line).expect("a verified line parses");
            assert_eq!(parsed.name, w.name());
            assert_eq!(parsed.key_hash, w.key_hash());
            assert_eq!(parsed.to_line(), line, "a cosignature line re-serialises");
            assert!(
                verify_cosignature(line, &other, w).is_err(),
                "a cosignature verifies over another checkpoint"
            );
        }
    }
}

fn check_in_note(text: &str) {
    let (body, _) = bodies();
    let signed = note::sign_note(&body, &[&log_signer()]).expect("the fixed body signs");
    let Ok(opened) = open_note(format!("{signed}{text}"), &log_verifier()) else {
        return;
    };
    let ws = witnesses();
    let both = verified_cosignatures(&opened, &ws);
    assert!(both.len() <= 2, "a witness listed twice counted twice");
    for &(i, ts) in &both {
        assert!(
            opened
                .signatures
                .iter()
                .any(|l| verify_cosignature(l, &opened.body, &ws[i]) == Ok(ts)),
            "a counted cosignature does not verify on its own"
        );
    }
    let each: usize = ws[..2]
        .iter()
        .map(|w| count_cosignatures(&opened, std::slice::from_ref(w)))
        .sum();
    assert_eq!(each, both.len(), "k-of-n is not the sum over the witnesses");
}

fn check_cosign(text: &str) {
    let [a, b] = cosigners();
    let is_checkpoint = Checkpoint::parse_body(text).is_ok();
    for ts in [0, 1_700_000_000, i64::MAX as u64, i64::MAX as u64 + 1] {
        match a.cosign(text, ts) {
            Ok(line) => {
                assert!(is_checkpoint && ts <= i64::MAX as u64);
                assert_eq!(verify_cosignature(&line, text, &a.verifier()), Ok(ts));
                assert!(matches!(
                    verify_cosignature(&line, text, &b.verifier()),
                    Err(NoteError::WrongSigner { .. })
                ));
                let longer = format!("{text}fuzz-extension\n");
                assert!(verify_cosignature(&line, &longer, &a.verifier()).is_err());
            }
            Err(e) => assert!(
                !is_checkpoint || ts > i64::MAX as u64,
                "a checkpoint was not cosigned: {e}"
            ),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_lines(text);
    check_in_note(text);
    check_cosign(text);
});
