//! Approval artifacts, both formats: bytes → `json::parse_ijson` (as OpenExec reads the body that
//! carries the artifact) → `artifact::parse` → `artifact::verify` against fixed keys (the
//! `legacy_v0.json` key and a second one) and a fixed request (`openexec_fuzz::Request`).
//!
//! Properties:
//! - no input panics, whatever the keys, binding, clock and skew;
//! - the format follows `"v"` (absent → v0, the number 1 → v1, else malformed);
//! - re-serialising the artifact as received (`raw()`) and reading it again gives the same
//!   artifact, the same signed message and the same verdict;
//! - the time window is the last check: accepted with the clock ⇒ accepted without it;
//! - accepted ⇒ every check holds, computed independently here: a configured key signed the
//!   exact message of the format, the tenant and the request binding match, and the returned
//!   reference names the artifact and the key that verified;
//! - an accepted artifact with any signed field changed (every member but `signature` for v1,
//!   any of the five signed strings for v0) or, for v1, an extra member, is refused;
//! - no keys: a v1 artifact is `approval_unknown_key`, a v0 one `approval_bad_signature`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use openexec_core::artifact::{self, Artifact, Format, Rejection};
use openexec_core::hash::legacy_action_hash;
use openexec_core::json::parse_ijson;
use openexec_core::keys::{key_id, verify_b64};
use openexec_fuzz::{approval_keys, now, Request, ACTION, MAX_DEPTH, NONCE, SKEW_SECS, TENANT};
use serde_json::{Map, Value};

/// Everything `parse` read, for comparing two parses.
fn summary(a: &Artifact) -> String {
    format!(
        "{:?}|{}|{}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        a.format(),
        a.approval_id(),
        a.tenant_id(),
        a.issued_at(),
        a.expires_at(),
        a.signature(),
        a.key_id(),
        a.decision_id(),
        a.policy_hash(),
        a.action(),
        a.request_hash(),
        a.intent_hash(),
        a.nonce(),
        a.action_hash(),
        a.approvers(),
    )
}

fn verify(
    a: &Artifact,
    req: &Request,
    check_time: bool,
) -> Result<artifact::ApprovalRef, Rejection> {
    artifact::verify(
        a,
        &approval_keys(),
        &req.binding(),
        now(),
        SKEW_SECS,
        check_time,
    )
}

/// Parse and verify (without the clock) an edited copy of an artifact object.
fn verdict_of(obj: Map<String, Value>, req: &Request) -> Result<(), String> {
    let art = artifact::parse(&Value::Object(obj))?;
    verify(&art, req, false)
        .map(|_| ())
        .map_err(|r| r.message())
}

/// Something else in place of a signed value, of any type.
fn changed(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(format!("{s}x")),
        _ => Value::String("x".into()),
    }
}

fn check_accepted(art: &Artifact, r: &artifact::ApprovalRef, req: &Request) {
    let keys = approval_keys();
    let msg = art.signed_message();
    let signer = keys
        .iter()
        .find(|k| verify_b64(k, &msg, art.signature()))
        .expect("accepted, yet no configured key signed the message");
    assert_eq!(r.key_id, key_id(signer));
    assert_eq!(r.approval_id, art.approval_id());
    assert_eq!(r.format, art.format().as_str());
    assert_eq!(art.tenant_id(), TENANT);
    let raw = art.raw();
    let text = |k: &str| raw.get(k).and_then(Value::as_str).unwrap_or_default();
    match art.format() {
        Format::V0 => {
            assert_eq!(
                text("action_hash"),
                legacy_action_hash(ACTION, &req.payload)
            );
            let mut m = String::new();
            for k in [
                "approval_id",
                "tenant_id",
                "action_hash",
                "issued_at",
                "expires_at",
            ] {
                m.push_str(text(k));
            }
            assert_eq!(msg, m.into_bytes(), "v0 signs the five strings");
        }
        Format::V1 => {
            assert_eq!(art.key_id(), Some(r.key_id.as_str()));
            assert_eq!(text("request_hash"), req.request_hash);
            assert_eq!(text("intent_hash"), req.intent_hash);
            assert_eq!(text("action"), ACTION);
            assert_eq!(text("nonce"), NONCE);
            assert!(msg.starts_with(artifact::APPROVAL_CONTEXT));
            assert_eq!(r.decision_id.as_deref(), art.decision_id());
        }
    }
    // Every signed field is covered by the signature.
    let signed: Vec<&str> = match art.format() {
        Format::V0 => vec![
            "approval_id",
            "tenant_id",
            "action_hash",
            "issued_at",
            "expires_at",
        ],
        Format::V1 => raw
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "signature")
            .collect(),
    };
    for k in signed {
        let mut edited = raw.clone();
        let v = edited.get(k).map(changed).unwrap_or(Value::Null);
        edited.insert(k.to_string(), v);
        assert!(
            verdict_of(edited, req).is_err(),
            "accepted with field {k:?} changed"
        );
    }
    if art.format() == Format::V1 {
        let mut extra = raw.clone();
        extra.insert("fuzz_extra".into(), Value::Bool(true));
        assert!(
            verdict_of(extra, req).is_err(),
            "accepted with a member added"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = parse_ijson(data, MAX_DEPTH) else {
        return;
    };
    let req = Request::fixed();
    let art = match artifact::parse(&v) {
        Ok(a) => a,
        Err(m) => {
            assert!(
                m.starts_with("approval artifact is malformed: ") || m.starts_with("Invalid "),
                "unexpected malformed message {m:?}"
            );
            return;
        }
    };
    let expected_format = match v.get("v") {
        None => Format::V0,
        Some(_) => Format::V1,
    };
    assert_eq!(art.format(), expected_format);

    // As received, re-serialised, read again: the same artifact.
    let bytes = serde_json::to_vec(&Value::Object(art.raw().clone())).expect("serialises");
    let again = artifact::parse(&parse_ijson(&bytes, MAX_DEPTH).expect("re-serialised parses"))
        .expect("re-serialised artifact parses");
    assert_eq!(summary(&art), summary(&again));
    assert_eq!(art.signed_message(), again.signed_message());

    let timed = verify(&art, &req, true);
    assert_eq!(timed, verify(&again, &req, true));
    let untimed = verify(&art, &req, false);
    if timed.is_ok() {
        assert_eq!(timed, untimed, "the time window is the last check");
    }
    if let Err(e) = &timed {
        assert!(e.code().starts_with("approval_") && !e.message().is_empty());
        if untimed.is_ok() {
            assert!(matches!(e, Rejection::Expired | Rejection::NotYetValid));
        }
    }
    if let Ok(r) = &untimed {
        check_accepted(&art, r, &req);
    }

    // No keys configured.
    let none = artifact::verify(&art, &[], &req.binding(), now(), SKEW_SECS, true);
    match art.format() {
        Format::V1 => assert!(matches!(none, Err(Rejection::UnknownKey(_)))),
        Format::V0 => assert_eq!(none, Err(Rejection::BadSignature)),
    }
    // Extreme clocks and skews never panic.
    for (t, skew) in [
        (chrono::DateTime::<chrono::Utc>::MIN_UTC, i64::MAX),
        (chrono::DateTime::<chrono::Utc>::MAX_UTC, i64::MIN),
        (now(), -1),
    ] {
        let _ = artifact::verify(&art, &approval_keys(), &req.binding(), t, skew, true);
    }
});
