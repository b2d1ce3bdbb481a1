//! # openexec-log
//!
//! The maths and the text formats of an append-only Merkle log, as OpenExec's receipt log and
//! ClawShield's decision log use them, and as ClawLedger (the witness) checks them (SPEC §7).
//!
//! What it does:
//! - Tree hashing of RFC 6962 / RFC 9162: [`leaf_hash`] `SHA-256(0x00 ‖ data)`, [`node_hash`]
//!   `SHA-256(0x01 ‖ left ‖ right)`, [`EMPTY_ROOT`].
//! - [`Frontier`]: the compact range of a log (the roots of its complete subtrees, at most 64).
//!   Appending a leaf is O(log n), needs no reads, and hands back every complete node that the
//!   leaf brought into existence, for the caller to store. Nothing else ever needs to be stored:
//!   every proof and every root is made of complete nodes.
//! - Proofs as a *plan / assemble* split. [`plan_inclusion`], [`plan_consistency`] and
//!   [`plan_root`] say which stored complete nodes ([`NodeId`]: level and index) a proof needs,
//!   so a service can fetch them from its database in one query; [`ProofPlan::assemble`] then
//!   builds the proof (RFC 9162 §2.1.3.1 and §2.1.4.1, in their order) from what was fetched.
//! - [`verify_inclusion`] and [`verify_consistency`]: RFC 9162 §2.1.3.2 and §2.1.4.2, with errors
//!   that say what failed.
//! - [`note`]: C2SP `tlog-checkpoint` bodies, C2SP `signed-note` with Ed25519 (verifier keys,
//!   signing, opening), and C2SP `tlog-cosignature` (Ed25519 `cosignature/v1`) lines for
//!   witnesses, with k-of-n counting.
//!
//! - [`service`]: a log as a service runs it, over any storage. [`LogStore`] is the trait each
//!   service's database implements (SQLite, PostgreSQL); [`LogService`] signs checkpoints that
//!   never contradict an earlier one, serves proofs (caching the upper tree levels) and entries,
//!   and takes witnesses' cosignatures. Its futures need no particular runtime.
//!
//! What it leaves to others: storage (the services keep leaves and complete nodes in their
//! databases, behind [`LogStore`]; this crate only names the nodes it needs), all I/O, clocks (cosignature timestamps are parameters), randomness (keys are parameters),
//! key files and key rotation policy (`openexec-core` parses keys), and deciding which logs,
//! origins and witnesses to trust. It starts no tasks, needs no runtime, and has no `unsafe`.
//!
//! ```
//! use std::collections::HashMap;
//! use openexec_log::*;
//!
//! // The writer: append, store what `append` hands back (here: a map standing in for a table).
//! let mut log = Frontier::empty();
//! let mut stored: HashMap<NodeId, Hash> = HashMap::new();
//! for entry in ["a", "b", "c", "d", "e"] {
//!     stored.extend(log.append(leaf_hash(entry.as_bytes()))?);
//! }
//! let root = log.root();
//!
//! // Serving a proof: plan, fetch those nodes in one query, assemble.
//! let plan = plan_inclusion(2, log.size())?;
//! let wanted = plan.nodes(); // e.g. `WHERE (level, idx) IN (...)`
//! let fetched: HashMap<NodeId, Hash> = wanted.iter().map(|id| (*id, stored[id])).collect();
//! let proof = plan.assemble_from_map(&fetched)?;
//!
//! // Anyone holding the checkpoint's root checks it.
//! verify_inclusion(&leaf_hash(b"c"), 2, 5, &proof, &root)?;
//! # Ok::<(), LogError>(())
//! ```
//!
//! *Trust boundary*: everything that arrives from another party (proof hashes, notes,
//! signature lines, verifier keys) is checked here before any of it is believed; the
//! verification functions return `Ok` only when the maths holds.

#![forbid(unsafe_code)]

mod error;
pub mod note;
mod proof;
pub mod service;
mod tree;

pub use error::{LogError, ProofKind};
pub use proof::{
    plan_consistency, plan_inclusion, plan_root, verify_consistency, verify_inclusion, ProofPlan,
};
pub use service::{Inclusion, LogService, LogStore, ServiceError, StoredCheckpoint};
pub use tree::{Frontier, NodeId};

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf hash, a node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree: RFC 6962 §2.1 "The hash of an empty list is the hash of an empty
/// string: MTH({}) = SHA-256()", i.e. `e3b0c442…b855`.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The hash of a leaf: RFC 6962 §2.1 "MTH({d(0)}) = SHA-256(0x00 || d(0))".
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an inner node: RFC 6962 §2.1 "`MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) ||
/// MTH(D[k:n]))`".
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Lowercase hex of a hash, for messages.
pub(crate) fn hex(h: &Hash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in h {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        let h: Hash = Sha256::digest([]).into();
        assert_eq!(h, EMPTY_ROOT);
        assert_eq!(
            hex(&EMPTY_ROOT),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
