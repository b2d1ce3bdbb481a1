//! # openexec-core
//!
//! The pure core of OpenExec: everything that turns bytes into hashes, signatures and verdicts,
//! and that every party (OpenExec, ClawShield, ClawLedger, the CLI, tests) must compute the same
//! way.
//!
//! What it does:
//! - [`json`]: reads request bodies as I-JSON (RFC 7493: no duplicate keys, no lone surrogates,
//!   no integers beyond ±(2^53−1), bounded nesting) and writes RFC 8785 canonical JSON (JCS);
//!   SHA-256 as lowercase hex.
//! - [`hash`]: `intent_hash`, `request_hash`, and the legacy v0 `action_hash` (Python
//!   `json.dumps(..., sort_keys=True)` byte for byte).
//! - [`payload`]: the payload normalisation rules of SPEC §2.
//! - [`request`]: the `/execute` body typed, with the identifier limits of SPEC §2.
//! - [`keys`]: Ed25519 keys: `key_id`, parsing PEM / raw base64, signing and verifying base64
//!   signatures.
//! - [`time`]: the timestamp forms approval artifacts carry.
//! - [`artifact`]: approval artifacts (v1 and the legacy v0 format): well-formedness, the
//!   verification checks of SPEC §4 in their order, and minting.
//! - [`receipt`]: the receipt of SPEC §6, its hash, its signature, and offline checking of an
//!   evidence object; [`evidence`]: the whole of it offline, inclusion proof and checkpoint
//!   included.
//! - [`decision`]: ClawShield's decision log entries (SPEC §9), a decision's evidence, and the
//!   chain from a receipt to the decision that allowed it.
//! - [`url`]: URLs in messages, their passwords hidden.
//!
//! What it leaves to others: all I/O (HTTP, files, environment variables, databases), clocks
//! (every function that needs "now" takes it as an argument), randomness (key generation takes a
//! 32-byte seed), nonce bookkeeping and single use, policy, handlers, and the Merkle log itself (its
//! maths and checkpoint formats are openexec-log's, which the evidence checks call). It has no async code and no `unsafe`.

#![forbid(unsafe_code)]

pub mod artifact;
pub mod decision;
pub mod evidence;
pub mod hash;
pub mod json;
pub mod keys;
pub mod payload;
pub mod receipt;
pub mod request;
pub mod roster;
pub mod time;
pub mod url;
