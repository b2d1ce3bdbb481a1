//! Inclusion and consistency proofs (RFC 9162 §2.1.3, §2.1.4), split into a plan that names the
//! stored nodes a proof needs and an assembly step that builds the proof from them.

use std::collections::HashMap;

use crate::tree::{decompose, fold_range};
use crate::{node_hash, Hash, LogError, NodeId, ProofKind};

/// Which stored complete nodes a proof (or a root) is made of.
///
/// Each element of a proof is the Merkle Tree Hash of a range of leaves. RFC 6962 only ever hashes
/// ranges that are either one complete subtree (one stored node) or a range at the right edge of
/// the tree, which is several complete subtrees combined; [`ProofPlan::elements`] lists, for each
/// proof element, those subtrees left to right. [`ProofPlan::nodes`] is the set to fetch (one
/// database query), and [`ProofPlan::assemble`] turns what was fetched into the proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofPlan {
    elements: Vec<Vec<NodeId>>,
}

impl ProofPlan {
    /// For each proof element, in proof order, its complete subtrees from left to right.
    pub fn elements(&self) -> &[Vec<NodeId>] {
        &self.elements
    }

    /// How many hashes the assembled proof has.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// True for a proof with no hashes (an inclusion proof in a tree of one leaf, or a
    /// consistency proof between equal sizes).
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Every node the proof needs, sorted by (level, index), without duplicates.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self.elements.iter().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Build the proof from a lookup of the nodes [`ProofPlan::nodes`] named.
    pub fn assemble(
        &self,
        mut get: impl FnMut(NodeId) -> Option<Hash>,
    ) -> Result<Vec<Hash>, LogError> {
        let mut proof = Vec::with_capacity(self.elements.len());
        let mut parts = Vec::new();
        for element in &self.elements {
            parts.clear();
            for &id in element {
                parts.push(get(id).ok_or(LogError::MissingNode(id))?);
            }
            proof.push(fold_range(&parts));
        }
        Ok(proof)
    }

    /// [`ProofPlan::assemble`] from a map of fetched nodes.
    pub fn assemble_from_map<S: std::hash::BuildHasher>(
        &self,
        nodes: &HashMap<NodeId, Hash, S>,
    ) -> Result<Vec<Hash>, LogError> {
        self.assemble(|id| nodes.get(&id).copied())
    }
}

/// The largest power of two smaller than `n` (RFC 6962's `k`), for `n > 1`.
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The plan of the inclusion proof of leaf `index` in a tree of `size` leaves.
///
/// The order is RFC 9162 §2.1.3.1 (the same as RFC 6962 §2.1.1), from the leaf's sibling up:
///
/// ```text
/// PATH(m, D_n) = PATH(m, D[0:k]) : MTH(D[k:n]) for m < k; and
/// PATH(m, D_n) = PATH(m - k, D[k:n]) : MTH(D[0:k]) for m >= k
/// ```
pub fn plan_inclusion(index: u64, size: u64) -> Result<ProofPlan, LogError> {
    if index >= size {
        return Err(LogError::IndexOutOfRange { index, size });
    }
    // Walk down from the whole tree, collecting the sibling ranges top first, then reverse.
    let mut siblings = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if index < mid {
            siblings.push(decompose(mid, hi));
            hi = mid;
        } else {
            siblings.push(decompose(lo, mid));
            lo = mid;
        }
    }
    siblings.reverse();
    Ok(ProofPlan { elements: siblings })
}

/// The plan of the consistency proof from the tree of `first` leaves to the tree of `second`
/// leaves, `0 < first <= second` (`first == second` gives the empty proof).
///
/// RFC 9162 §2.1.4.1 (the same as RFC 6962 §2.1.2):
///
/// ```text
/// PROOF(m, D_n) = SUBPROOF(m, D_n, true)
/// SUBPROOF(m, D_m, true) = {}
/// SUBPROOF(m, D_m, false) = {MTH(D_m)}
/// SUBPROOF(m, D_n, b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])       if m <= k
/// SUBPROOF(m, D_n, b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]) if m > k
/// ```
pub fn plan_consistency(first: u64, second: u64) -> Result<ProofPlan, LogError> {
    if first == 0 || first > second {
        return Err(LogError::ConsistencySizes { first, second });
    }
    let mut top_down = Vec::new();
    let (mut lo, mut hi, mut whole) = (0u64, second, true);
    while first != hi {
        let mid = lo + split_point(hi - lo);
        if first <= mid {
            top_down.push(decompose(mid, hi));
            hi = mid;
        } else {
            top_down.push(decompose(lo, mid));
            lo = mid;
            whole = false;
        }
    }
    if !whole {
        // SUBPROOF(m, D_m, false): the subtree the first tree ends in, a complete one.
        top_down.push(decompose(lo, hi));
    }
    top_down.reverse();
    Ok(ProofPlan { elements: top_down })
}

/// The plan of the root of a tree of `size` leaves from its stored complete nodes: one element
/// (the frontier's nodes at `size`), which [`ProofPlan::assemble`] turns into the root. For size
/// 0 the element has no nodes and assembles to [`EMPTY_ROOT`](crate::EMPTY_ROOT). Use it to check
/// a stored log against a checkpoint, or to answer for a past size.
pub fn plan_root(size: u64) -> ProofPlan {
    ProofPlan {
        elements: vec![decompose(0, size)],
    }
}

/// How many hashes the inclusion proof of `index` in a tree of `size` has (`index < size`):
/// the levels below the point where the paths to `index` and to the last leaf part, plus one for
/// each complete subtree on the left of that point.
fn inclusion_len(index: u64, size: u64) -> usize {
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// How many hashes the consistency proof from `first` to `second` has (`0 < first <= second`).
fn consistency_len(first: u64, second: u64) -> usize {
    if first == second {
        return 0;
    }
    let shift = first.trailing_zeros() as usize;
    let inner = inclusion_len(first - 1, second);
    // The first tree's root comes with the proof unless it is a complete subtree, which the
    // verifier knows already (RFC 9162 §2.1.4.2 step 2 prepends it).
    let own = usize::from(!first.is_power_of_two());
    own + inner - shift
}

/// Check an inclusion proof: RFC 9162 §2.1.3.2, step by step.
///
/// `leaf` is the leaf hash ([`leaf_hash`](crate::leaf_hash) of the entry), `index` its position,
/// `size` and `root` the tree it is claimed to be in.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), LogError> {
    // 1. "If leaf_index is greater than or equal to tree_size, then fail the proof
    //    verification."
    if index >= size {
        return Err(LogError::IndexOutOfRange { index, size });
    }
    // Not a step of the RFC, whose loop would fail anyway: say so before hashing.
    let expected = inclusion_len(index, size);
    if proof.len() != expected {
        return Err(LogError::ProofLength {
            kind: ProofKind::Inclusion,
            got: proof.len(),
            expected,
        });
    }
    // 2. "Set fn to leaf_index and sn to tree_size - 1."
    let (mut fn_, mut sn) = (index, size - 1);
    // 3. "Set r to hash."
    let mut r = *leaf;
    // 4. "For each value p in the inclusion_path array:"
    for p in proof {
        // a. "If sn is 0, then stop the iteration and fail the proof verification."
        if sn == 0 {
            return Err(LogError::ProofShape {
                kind: ProofKind::Inclusion,
                size,
            });
        }
        // b. "If LSB(fn) is set, or if fn is equal to sn, then:"
        if fn_ & 1 == 1 || fn_ == sn {
            // i. "Set r to HASH(0x01 || p || r)."
            r = node_hash(p, &r);
            // ii. "If LSB(fn) is not set, then right-shift both fn and sn equally until either
            //     LSB(fn) is set or fn is 0."
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            // "Otherwise: i. Set r to HASH(0x01 || r || p)."
            r = node_hash(&r, p);
        }
        // c. "Finally, right-shift both fn and sn one time."
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5. "If sn is equal to 0 and r and the root_hash are equal, then the log has proven the
    //    inclusion of hash. Otherwise, fail the proof verification."
    if sn != 0 {
        return Err(LogError::ProofShape {
            kind: ProofKind::Inclusion,
            size,
        });
    }
    if r != *root {
        return Err(LogError::RootMismatch {
            computed: r,
            expected: *root,
        });
    }
    Ok(())
}

/// Check a consistency proof: RFC 9162 §2.1.4.2, step by step, for `0 < first < second`; for
/// `first == second` the proof must be empty and the roots equal.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), LogError> {
    if first == 0 || first > second {
        return Err(LogError::ConsistencySizes { first, second });
    }
    let expected = consistency_len(first, second);
    if proof.len() != expected {
        return Err(LogError::ProofLength {
            kind: ProofKind::Consistency,
            got: proof.len(),
            expected,
        });
    }
    if first == second {
        if first_root != second_root {
            return Err(LogError::SecondRootMismatch {
                computed: *first_root,
                expected: *second_root,
            });
        }
        return Ok(());
    }
    // 1. "If consistency_path is an empty array, stop and fail the proof verification."
    //    (Covered by the length check: a proof for first < second is never empty.)
    // 2. "If first is an exact power of 2, then prepend first_hash to the consistency_path
    //    array."
    let mut path: Vec<&Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(first_root);
    }
    path.extend(proof);
    // 3. "Set fn to first - 1 and sn to second - 1."
    let (mut fn_, mut sn) = (first - 1, second - 1);
    // 4. "If LSB(fn) is set, then right-shift both fn and sn equally until LSB(fn) is not set."
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5. "Set both fr and sr to the first value in the consistency_path array."
    let (mut fr, mut sr) = (*path[0], *path[0]);
    // 6. "For each subsequent value c in the consistency_path array:"
    for c in &path[1..] {
        // a. "If sn is 0, then stop the iteration and fail the proof verification."
        if sn == 0 {
            return Err(LogError::ProofShape {
                kind: ProofKind::Consistency,
                size: second,
            });
        }
        // b. "If LSB(fn) is set, or if fn is equal to sn, then:"
        if fn_ & 1 == 1 || fn_ == sn {
            // i. "Set fr to HASH(0x01 || c || fr)."  ii. "Set sr to HASH(0x01 || c || sr)."
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            // iii. "If LSB(fn) is not set, then right-shift both fn and sn equally until either
            //      LSB(fn) is set or fn is 0."
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            // "Otherwise: i. Set sr to HASH(0x01 || sr || c)."
            sr = node_hash(&sr, c);
        }
        // c. "Finally, right-shift both fn and sn one time."
        fn_ >>= 1;
        sn >>= 1;
    }
    // 7. "verify that the fr calculated is equal to the first_hash supplied, that the sr
    //    calculated is equal to the second_hash supplied, and that sn is 0."
    if sn != 0 {
        return Err(LogError::ProofShape {
            kind: ProofKind::Consistency,
            size: second,
        });
    }
    if fr != *first_root {
        return Err(LogError::FirstRootMismatch {
            computed: fr,
            expected: *first_root,
        });
    }
    if sr != *second_root {
        return Err(LogError::SecondRootMismatch {
            computed: sr,
            expected: *second_root,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_plans() {
        for size in 1..=130u64 {
            for index in 0..size {
                assert_eq!(
                    plan_inclusion(index, size).unwrap().len(),
                    inclusion_len(index, size),
                    "inclusion {index} in {size}"
                );
            }
            for first in 1..=size {
                assert_eq!(
                    plan_consistency(first, size).unwrap().len(),
                    consistency_len(first, size),
                    "consistency {first} to {size}"
                );
            }
        }
        let big = u64::MAX;
        // The last leaf of 2^64 - 1 has the 63 other frontier subtrees as its siblings.
        assert_eq!(plan_inclusion(big - 1, big).unwrap().len(), 63);
        assert_eq!(plan_inclusion(0, big).unwrap().len(), 64);
        assert_eq!(
            plan_consistency(big - 1, big).unwrap().len(),
            consistency_len(big - 1, big)
        );
    }

    #[test]
    fn at_most_one_element_is_ragged() {
        for size in 1..=200u64 {
            for index in 0..size {
                let plan = plan_inclusion(index, size).unwrap();
                assert!(plan.elements().iter().filter(|e| e.len() > 1).count() <= 1);
            }
        }
    }
}
