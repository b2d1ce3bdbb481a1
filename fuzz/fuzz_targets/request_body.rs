//! `POST /execute` body path: bytes → `json::parse_ijson(bytes, 64)` → the body's fields →
//! `payload::normalize` → `hash::request_hash` / `hash::intent_hash` /
//! `hash::legacy_action_hash` (a v0 artifact is checked against the last).
//!
//! Properties:
//! - no input panics;
//! - `parse_ijson` agrees with `serde_json` wherever it accepts (same value), and what it accepts
//!   is I-JSON: nesting ≤ 64, integers within ±(2^53−1), finite floats;
//! - canonical form: `JCS(v)` is UTF-8, reads back (through `parse_ijson`) as a value equal to
//!   `v` whose JCS is the same bytes — except that a float in [2^53, 1e21) with an integral value
//!   is written by JCS as an integer literal I-JSON input refuses (see
//!   `openexec_fuzz::has_unsafe_integral_float`), where it must fail with `number_out_of_range`;
//! - normalisation follows SPEC §2 (missing/null → `{}`; a string starting with `{` → the object
//!   it holds, else an error; anything else unchanged) and is idempotent;
//! - `request_hash`, `intent_hash` and the v0 `legacy_action_hash` are lowercase SHA-256 hex, and
//!   depend on the request only, not on how the body was written: re-serialising the body
//!   (compact or pretty) gives the same hashes, and so does sending the decoded object instead of
//!   the payload string;
//! - the v0 legacy form (Python's `json.dumps(sort_keys=True)`) is printable ASCII and reads back
//!   as the same `{"action", "payload"}`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use openexec_core::hash::{intent_hash, legacy_action_hash, legacy_canonical, request_hash};
use openexec_core::json::{canonicalize, parse_ijson, JsonError};
use openexec_core::payload::normalize;
use openexec_core::request::ExecRequest;
use openexec_fuzz::{
    depth, has_unsafe_integral_float, is_sha256_hex, numbers_in_range, same_value, MAX_DEPTH,
};
use serde_json::{json, Map, Value};

/// The typed fields of an `/execute` body, as the service reads them
/// (`openexec_core::request::ExecRequest::from_value`). What it accepts keeps the identifier
/// limits of SPEC §2: `action` 1–128 of `A–Z a–z 0–9 _ . : / -`, `tenant_id` 1–128 of
/// `A–Z a–z 0–9 _ . : -`, `nonce` 1–256 characters, none a control character.
fn typed(v: &Value) -> Option<ExecRequest> {
    let r = ExecRequest::from_value(v.clone()).ok()?;
    let n = r.action.chars().count();
    assert!((1..=128).contains(&n), "action of {n} characters accepted");
    assert!(
        r.action
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:/-".contains(c)),
        "action {:?} accepted",
        r.action
    );
    let n = r.nonce.chars().count();
    assert!((1..=256).contains(&n), "nonce of {n} characters accepted");
    assert!(
        !r.nonce.chars().any(char::is_control),
        "control character in a nonce"
    );
    if let Some(t) = &r.tenant_id {
        assert!((1..=128).contains(&t.chars().count()));
        assert!(t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)));
    }
    Some(r)
}

/// The default tenant of a request without `tenant_id`.
const DEFAULT_TENANT: &str = "default";

/// `(request_hash, intent_hash, legacy_action_hash)` of a body (the last is what a v0 artifact
/// is checked against), or `None` when it is refused before hashing, or `Some(Err)` when its
/// payload is not valid (`invalid_payload`).
fn hashes(v: &Value) -> Option<Result<[String; 3], String>> {
    let b = typed(v)?;
    let tenant = b.tenant_id.as_deref().unwrap_or(DEFAULT_TENANT);
    Some(normalize(b.payload.as_ref(), MAX_DEPTH).map(|p| {
        [
            request_hash(&b.action, &b.nonce, &p, tenant),
            intent_hash(&b.action, &p),
            legacy_action_hash(&b.action, &p),
        ]
    }))
}

/// The v0 `action_hash` input (Python's `json.dumps(sort_keys=True, separators=(",", ":"))`) is
/// printable ASCII, and JSON for the same `{"action", "payload"}`.
fn check_legacy(action: &str, payload: &Value) {
    let text = legacy_canonical(action, payload);
    assert!(
        text.bytes().all(|c| (0x20..=0x7e).contains(&c)),
        "legacy form is not printable ASCII: {text}"
    );
    let back: Value = serde_json::from_str(&text).expect("the legacy form is JSON");
    assert!(
        same_value(&back, &json!({"action": action, "payload": payload})),
        "legacy form {text} is another value"
    );
}

fn check_canonical(v: &Value) {
    let c = canonicalize(v);
    assert!(!c.is_empty(), "JCS of a value is never empty");
    assert!(std::str::from_utf8(&c).is_ok(), "JCS output is UTF-8");
    match parse_ijson(&c, MAX_DEPTH) {
        Ok(back) => {
            assert!(same_value(&back, v), "JCS read back differs: {back} vs {v}");
            assert_eq!(canonicalize(&back), c, "JCS is not stable when read back");
        }
        Err(JsonError::NumberOutOfRange(lit)) => assert!(
            has_unsafe_integral_float(v),
            "JCS wrote {lit} for a value without a float in [2^53, 1e21)"
        ),
        Err(e) => panic!("the JCS form of an accepted value is refused: {e}"),
    }
}

fn check_normalize(payload: Option<&Value>) {
    let got = normalize(payload, MAX_DEPTH);
    match (payload, &got) {
        (None | Some(Value::Null), r) => {
            assert_eq!(r.as_ref().ok(), Some(&Value::Object(Map::new())))
        }
        (Some(Value::String(s)), r) if s.trim_start().starts_with('{') => match r {
            Ok(p) => {
                assert!(p.is_object(), "a '{{' string normalises to an object");
                assert_eq!(Ok(p), parse_ijson(s.as_bytes(), MAX_DEPTH).as_ref());
            }
            Err(m) => assert!(!m.is_empty()),
        },
        (Some(other), r) => assert_eq!(r.as_ref().ok(), Some(other)),
    }
    if let Ok(p) = &got {
        assert_eq!(
            normalize(Some(p), MAX_DEPTH).as_ref(),
            Ok(p),
            "normalisation is not idempotent"
        );
    }
}

fn check_request(v: &Value) {
    let Some(b) = typed(v) else { return };
    check_normalize(b.payload.as_ref());
    let Some(first) = hashes(v) else { return };
    if let Ok(hs) = &first {
        assert!(hs.iter().all(|h| is_sha256_hex(h)));
        let p = normalize(b.payload.as_ref(), MAX_DEPTH).expect("it normalised before");
        check_legacy(&b.action, &p);
    }
    // However the same body is written, it is the same request.
    for bytes in [
        serde_json::to_vec(v).expect("a Value serialises"),
        serde_json::to_vec_pretty(v).expect("a Value serialises"),
    ] {
        let again = parse_ijson(&bytes, MAX_DEPTH).expect("a re-serialised body parses");
        assert_eq!(
            hashes(&again).as_ref(),
            Some(&first),
            "hash depends on layout"
        );
    }
    // A payload string holding an object is that object (SPEC §2).
    if let (Some(Value::String(_)), Ok(_)) = (&b.payload, &first) {
        let decoded = normalize(b.payload.as_ref(), MAX_DEPTH).expect("it normalised before");
        let mut with_object = v.clone();
        with_object["payload"] = decoded;
        assert_eq!(hashes(&with_object).as_ref(), Some(&first));
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse_ijson(data, MAX_DEPTH);
    let Ok(v) = parsed else {
        if let Err(JsonError::InvalidJson(_)) = parsed {
            assert!(
                serde_json::from_slice::<Value>(data).is_err(),
                "invalid_json for input serde_json reads"
            );
        }
        return;
    };
    assert_eq!(
        serde_json::from_slice::<Value>(data).ok().as_ref(),
        Some(&v),
        "parse_ijson and serde_json disagree"
    );
    assert!(
        depth(&v) <= MAX_DEPTH,
        "accepted nesting deeper than the limit"
    );
    assert!(numbers_in_range(&v), "accepted a number beyond I-JSON");
    check_canonical(&v);
    check_request(&v);
});
