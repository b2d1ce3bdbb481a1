//! Shared fixtures and checks of OpenExec's fuzz targets (`fuzz_targets/*.rs`).
//!
//! Every key here is a fixed test key from a fixed seed: the targets are deterministic, so a
//! crash reproduces from its input file alone. The seed inputs under `fuzz/seeds/` are made from
//! these fixtures and from `shared/vectors/*.json` by this crate's test (`seeds.rs`).

#![forbid(unsafe_code)]

use chrono::{DateTime, TimeZone, Utc};
use openexec_core::artifact::RequestBinding;
use openexec_core::hash::{intent_hash, request_hash};
use openexec_core::json::MAX_SAFE_INTEGER;
use openexec_core::keys::{signing_key_from_seed, SigningKey, VerifyingKey};
use openexec_log::note::{Cosigner, CosignerVerifier, Signer, Verifier};
use serde_json::{json, Value};

#[cfg(test)]
mod seeds;

/// The nesting limit OpenExec applies to request bodies by default (SPEC §2).
pub const MAX_DEPTH: usize = openexec_core::json::DEFAULT_MAX_DEPTH;

/// The approval key: seed `01…01`, the key of `shared/vectors/legacy_v0.json`, so that its v0
/// artifacts verify here; the v1 seeds are signed with it too.
pub fn approval_key() -> SigningKey {
    signing_key_from_seed([0x01; 32])
}

/// A second configured approval key that signs nothing: key rotation, several candidates.
pub fn other_approval_key() -> SigningKey {
    signing_key_from_seed([0x05; 32])
}

/// The approval keys OpenExec is configured with in the targets (the rotated-in one first).
pub fn approval_keys() -> Vec<VerifyingKey> {
    vec![
        other_approval_key().verifying_key(),
        approval_key().verifying_key(),
    ]
}

/// The request every artifact is checked against: the tenant, action and payload of the
/// `legacy_v0.json` artifacts, and a nonce of our own for v1.
pub const TENANT: &str = "tenant-001";
/// See [`TENANT`].
pub const ACTION: &str = "echo";
/// See [`TENANT`].
pub const NONCE: &str = "fuzz-nonce-0001";

/// The fixed request's payload and hashes, owned, for [`Request::binding`].
pub struct Request {
    pub payload: Value,
    pub request_hash: String,
    pub intent_hash: String,
}

impl Request {
    pub fn fixed() -> Self {
        let payload = json!({"msg": "hello"});
        Request {
            request_hash: request_hash(ACTION, NONCE, &payload, TENANT),
            intent_hash: intent_hash(ACTION, &payload),
            payload,
        }
    }

    pub fn binding(&self) -> RequestBinding<'_> {
        RequestBinding {
            tenant_id: TENANT,
            action: ACTION,
            nonce: NONCE,
            payload: &self.payload,
            request_hash: &self.request_hash,
            intent_hash: &self.intent_hash,
        }
    }
}

/// "Now" for the time-window checks: 2026-06-01T00:00:00Z.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The clock skew OpenExec allows by default (`OPENEXEC_CLOCK_SKEW_SECONDS`).
pub const SKEW_SECS: i64 = 30;

/// OpenExec's receipt key.
pub fn receipt_key() -> SigningKey {
    signing_key_from_seed([0x0b; 32])
}

/// The receipt log's origin (its note key name).
pub const LOG_ORIGIN: &str = "log.fuzz.example/openexec/receipts";

/// The receipt log's note signer.
pub fn log_signer() -> Signer {
    Signer::new(LOG_ORIGIN, signing_key_from_seed([0x02; 32])).expect("a valid key name")
}

/// The log's note verifier, as a client configures it.
pub fn log_verifier() -> Verifier {
    log_signer().verifier()
}

/// Two witnesses (ClawLedger instances) with their own cosigning keys.
pub fn cosigners() -> [Cosigner; 2] {
    [
        Cosigner::new("witness.fuzz.example/a", signing_key_from_seed([0x03; 32]))
            .expect("a valid key name"),
        Cosigner::new("witness.fuzz.example/b", signing_key_from_seed([0x04; 32]))
            .expect("a valid key name"),
    ]
}

/// The configured witnesses: both cosigners, the first listed twice (a key listed twice must
/// count once).
pub fn witnesses() -> Vec<CosignerVerifier> {
    let [a, b] = cosigners();
    vec![a.verifier(), b.verifier(), a.verifier()]
}

/// Equality of JSON values where numbers compare by value: `1`, `1.0` and `1e0` are the same
/// number (JCS writes all three as `1`), `-0` equals `0`. Every number `parse_ijson` accepts is a
/// finite double or an integer within ±(2^53−1), so comparing as `f64` is exact.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| same_value(a, b)))
        }
        _ => a == b,
    }
}

/// Nesting depth as SPEC §2 counts it: each object and array is one level, scalars none.
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Every integer within ±(2^53−1) and every float finite: what I-JSON lets through.
pub fn numbers_in_range(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u <= MAX_SAFE_INTEGER
            } else if let Some(i) = n.as_i64() {
                i.unsigned_abs() <= MAX_SAFE_INTEGER
            } else {
                n.as_f64().is_some_and(f64::is_finite)
            }
        }
        Value::Array(a) => a.iter().all(numbers_in_range),
        Value::Object(o) => o.values().all(numbers_in_range),
        _ => true,
    }
}

/// True when `v` holds a float with an integral value of magnitude in [2^53, 1e21): JCS writes
/// such a number as an integer literal (`1e20` → `100000000000000000000`), which I-JSON input
/// refuses (SPEC §2: "a number written without fraction or exponent whose magnitude exceeds
/// 2^53−1"). So the canonical form of an accepted body can be refused when read back as a body.
/// Nothing in OpenExec reads canonical bytes back as a body, and every party hashes the same
/// bytes, so this is a property of the contract, not a bug; the targets allow exactly this case.
pub fn has_unsafe_integral_float(v: &Value) -> bool {
    match v {
        Value::Number(n) if !n.is_u64() && !n.is_i64() => n.as_f64().is_some_and(|f| {
            let a = f.abs();
            f.fract() == 0.0 && a > MAX_SAFE_INTEGER as f64 && a < 1e21
        }),
        Value::Array(a) => a.iter().any(has_unsafe_integral_float),
        Value::Object(o) => o.values().any(has_unsafe_integral_float),
        _ => false,
    }
}

/// Lowercase hex of SHA-256: 64 characters of `0-9a-f`.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
