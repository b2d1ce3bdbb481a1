//! Request bodies for `POST /execute`: every request carries a nonce never used before.
//!
//! Demo mode needs no artifact, so bodies come from a template and a counter (one small
//! allocation per request, no JSON serialisation). Clawshield mode needs a signed v1 artifact
//! bound to each nonce; those are minted before the timed window (on all cores, while no server
//! runs) into a fixed pool, so signing is never measured. When the pool runs dry the workers
//! stop and the run is reported as failed instead of silently measuring something else.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use openexec_core::artifact::{sign_v1, V1Params};
use openexec_core::keys::SigningKey;
use serde_json::{json, Value};

/// The action every request runs (a built-in, so handler cost is near zero).
pub const ACTION: &str = "echo";

/// The payload of request number `i`.
pub fn payload(i: u64) -> Value {
    json!({ "i": i })
}

/// Where a worker gets its next `/execute` body.
pub enum BodySource {
    /// `{"action":"echo","payload":{"i":N},"nonce":"<run>-dN"}` for N = 0, 1, 2, …
    Template {
        run_id: String,
        next: AtomicU64,
        /// Hand out at most this many (`None`: unlimited).
        limit: Option<u64>,
    },
    /// `{"action":"<action>","payload":{"n":N},"nonce":"<run>-nN"}` for N = 0, 1, 2, …
    /// (`--actions-bench`: any action, the same small payload for each), or with one fixed
    /// payload for every request instead of `{"n":N}` (`sleep`'s `{"ms":0}`).
    Action {
        /// `{"action":"<action>","payload":` (the action as a JSON string).
        prefix: Vec<u8>,
        /// The payload's JSON when it is fixed; `None`: `{"n":N}`.
        fixed: Option<Vec<u8>>,
        run_id: String,
        next: AtomicU64,
    },
    /// `{"action":"charge_card","payload":{"amount":A,"currency":"EUR","to":"acct-1"},
    /// "nonce":"<run>-sN"}` for N = 0, 1, 2, … with A = [`charge_amount`]`(N)`, always below
    /// the example policy's limit for automatic approval (`--shield-bench`: ClawShield
    /// proposals).
    Charge { run_id: String, next: AtomicU64 },
    /// Pre-built bodies (each with its own signed artifact), handed out once each.
    Pool {
        bodies: Vec<Bytes>,
        next: AtomicUsize,
    },
}

impl BodySource {
    /// Unlimited demo bodies for run `run_id` (which makes the nonces unique across runs).
    pub fn template(run_id: &str) -> BodySource {
        BodySource::Template {
            run_id: run_id.to_string(),
            next: AtomicU64::new(0),
            limit: None,
        }
    }

    /// Demo bodies for run `run_id`, at most `limit` of them.
    pub fn template_limited(run_id: &str, limit: u64) -> BodySource {
        BodySource::Template {
            run_id: run_id.to_string(),
            next: AtomicU64::new(0),
            limit: Some(limit),
        }
    }

    /// Unlimited bodies running `action` with payload `{"n": N}`, for run `run_id`.
    pub fn action(action: &str, run_id: &str) -> BodySource {
        BodySource::action_with(action, None, run_id)
    }

    /// Unlimited bodies running `action` with `payload` in every one (`None`: `{"n": N}`),
    /// for run `run_id`.
    pub fn action_with(action: &str, payload: Option<&Value>, run_id: &str) -> BodySource {
        let mut prefix = b"{\"action\":".to_vec();
        // A string and a JSON value always serialise.
        prefix.extend_from_slice(serde_json::to_string(action).unwrap_or_default().as_bytes());
        prefix.extend_from_slice(b",\"payload\":");
        BodySource::Action {
            prefix,
            fixed: payload.map(|p| serde_json::to_vec(p).unwrap_or_default()),
            run_id: run_id.to_string(),
            next: AtomicU64::new(0),
        }
    }

    /// Unlimited small `charge_card` proposals for run `run_id`.
    pub fn charge(run_id: &str) -> BodySource {
        BodySource::Charge {
            run_id: run_id.to_string(),
            next: AtomicU64::new(0),
        }
    }

    /// A fixed pool of pre-built bodies.
    pub fn pool(bodies: Vec<Bytes>) -> BodySource {
        BodySource::Pool {
            bodies,
            next: AtomicUsize::new(0),
        }
    }

    /// The next body, or `None` when a pool is used up.
    pub fn next(&self) -> Option<Bytes> {
        match self {
            BodySource::Template {
                run_id,
                next,
                limit,
            } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if limit.is_some_and(|l| i >= l) {
                    return None;
                }
                Some(Bytes::from(demo_body(run_id, i)))
            }
            BodySource::Action {
                prefix,
                fixed,
                run_id,
                next,
            } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                Some(Bytes::from(action_body(
                    prefix,
                    fixed.as_deref(),
                    run_id,
                    i,
                )))
            }
            BodySource::Charge { run_id, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                Some(Bytes::from(charge_body(run_id, i)))
            }
            BodySource::Pool { bodies, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                bodies.get(i).cloned()
            }
        }
    }

    /// How many bodies were handed out.
    pub fn used(&self) -> u64 {
        match self {
            BodySource::Template { next, limit, .. } => {
                let n = next.load(Ordering::Relaxed);
                limit.map_or(n, |l| n.min(l))
            }
            BodySource::Action { next, .. } | BodySource::Charge { next, .. } => {
                next.load(Ordering::Relaxed)
            }
            BodySource::Pool { bodies, next } => {
                (next.load(Ordering::Relaxed) as u64).min(bodies.len() as u64)
            }
        }
    }

    /// The pool's size; `None` for an unlimited template.
    pub fn capacity(&self) -> Option<u64> {
        match self {
            BodySource::Template { limit, .. } => *limit,
            BodySource::Action { .. } | BodySource::Charge { .. } => None,
            BodySource::Pool { bodies, .. } => Some(bodies.len() as u64),
        }
    }
}

/// The demo body of request `i` (the same JSON `serde_json` would write, built by hand).
pub fn demo_body(run_id: &str, i: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(64 + run_id.len());
    v.extend_from_slice(b"{\"action\":\"echo\",\"payload\":{\"i\":");
    // Writing into a Vec cannot fail.
    let _ = write!(v, "{i}");
    v.extend_from_slice(b"},\"nonce\":\"");
    v.extend_from_slice(run_id.as_bytes());
    let _ = write!(v, "-d{i}\"}}");
    v
}

/// The body of request `i` of a [`BodySource::action_with`] (built by hand like
/// [`demo_body`]).
fn action_body(prefix: &[u8], fixed: Option<&[u8]>, run_id: &str, i: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(prefix.len() + fixed.map_or(0, <[u8]>::len) + 48 + run_id.len());
    v.extend_from_slice(prefix);
    match fixed {
        Some(p) => v.extend_from_slice(p),
        None => {
            let _ = write!(v, "{{\"n\":{i}}}");
        }
    }
    v.extend_from_slice(b",\"nonce\":\"");
    v.extend_from_slice(run_id.as_bytes());
    let _ = write!(v, "-n{i}\"}}");
    v
}

/// The action of every ClawShield proposal.
pub const CHARGE_ACTION: &str = "charge_card";
/// The currency of every proposal.
pub const CHARGE_CURRENCY: &str = "EUR";
/// The recipient of every proposal.
pub const CHARGE_TO: &str = "acct-1";

/// The amount of proposal `i`: 1 to 9999 minor units (the example policy approves a
/// `charge_card` below 10000 without a vote), varying so that intents differ.
pub fn charge_amount(i: u64) -> u64 {
    1 + i % 9999
}

/// The payload of proposal `i`.
pub fn charge_payload(i: u64) -> Value {
    json!({"amount": charge_amount(i), "currency": CHARGE_CURRENCY, "to": CHARGE_TO})
}

/// The body of proposal `i` of a [`BodySource::charge`] (built by hand like [`demo_body`]).
pub fn charge_body(run_id: &str, i: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(112 + run_id.len());
    v.extend_from_slice(b"{\"action\":\"charge_card\",\"payload\":{\"amount\":");
    let _ = write!(v, "{}", charge_amount(i));
    v.extend_from_slice(b",\"currency\":\"EUR\",\"to\":\"acct-1\"},\"nonce\":\"");
    v.extend_from_slice(run_id.as_bytes());
    let _ = write!(v, "-s{i}\"}}");
    v
}

/// The nonce of clawshield request `i`.
pub fn clawshield_nonce(run_id: &str, i: u64) -> String {
    format!("{run_id}-c{i}")
}

/// Mint `count` clawshield bodies (request numbers `0..count`), each with a v1 artifact for
/// `tenant` bound to its own nonce, valid from `issued_at` to `expires_at`; spread over
/// `threads` OS threads. The result is in request order.
pub fn mint_clawshield(
    sk: &SigningKey,
    run_id: &str,
    tenant: &str,
    count: u64,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    threads: usize,
) -> Vec<Bytes> {
    let threads = threads.max(1) as u64;
    let chunk = count.div_ceil(threads).max(1);
    let mint_range = |start: u64, end: u64| -> Vec<Bytes> {
        (start..end)
            .map(|i| {
                let nonce = clawshield_nonce(run_id, i);
                let payload = payload(i);
                let approval_id = format!("{run_id}-a{i}");
                let art = sign_v1(
                    &V1Params {
                        approval_id: &approval_id,
                        tenant_id: tenant,
                        action: ACTION,
                        payload: &payload,
                        nonce: &nonce,
                        issued_at,
                        expires_at,
                        decision_id: None,
                        policy_hash: None,
                    },
                    sk,
                );
                let body = json!({
                    "action": ACTION,
                    "payload": payload,
                    "nonce": nonce,
                    "approval_artifact": art,
                });
                Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
            })
            .collect()
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let start = (t * chunk).min(count);
                let end = ((t + 1) * chunk).min(count);
                let mint_range = &mint_range;
                s.spawn(move || mint_range(start, end))
            })
            .collect();
        let mut out = Vec::with_capacity(count as usize);
        for h in handles {
            // A minting thread only panics if serde_json or signing does: propagate it.
            out.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        out
    })
}
