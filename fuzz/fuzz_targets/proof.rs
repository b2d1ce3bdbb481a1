//! Merkle proofs (`openexec_log::{verify_inclusion, verify_consistency}` and the plans), as
//! ClawLedger checks the consistency proofs a log serves (`GET /log/proof/consistency`) and as
//! `evidence::verify_full` checks inclusion proofs inside evidence. The input drives a real tree
//! of up to 300 leaves, the leaf and sizes to prove, edits to the honest proofs, and arbitrary
//! 64-bit sizes and indices with arbitrary hashes.
//!
//! Properties:
//! - no input panics (sizes and indices up to 2^64−1, proofs of any length);
//! - completeness: the honest inclusion and consistency proofs, assembled from the stored nodes
//!   as the log serves them, verify; `plan_root` assembles to the frontier's root;
//! - soundness: an edited proof (a hash changed, dropped, added, or two swapped) that differs
//!   from the honest one never verifies, nor does the honest one for another leaf, index, size
//!   or root;
//! - the proof length `verify_*` demands is the length of the plan the log serves.

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use openexec_log::{
    leaf_hash, plan_consistency, plan_inclusion, plan_root, verify_consistency, verify_inclusion,
    Frontier, Hash, LogError, NodeId,
};

fn hash(u: &mut Unstructured) -> Hash {
    let mut h = [0u8; 32];
    u.fill_buffer(&mut h).unwrap_or(());
    h
}

/// An edit of a proof chosen by the input (possibly none).
fn edit(u: &mut Unstructured, proof: &[Hash]) -> Vec<Hash> {
    let mut p = proof.to_vec();
    let at = |u: &mut Unstructured, len: usize| u.choose_index(len.max(1)).unwrap_or(0);
    match u.int_in_range(0u8..=4).unwrap_or(0) {
        0 if !p.is_empty() => {
            let i = at(u, p.len());
            let bit = u.int_in_range(0u8..=255).unwrap_or(0);
            p[i][usize::from(bit / 8)] ^= 1 << (bit % 8);
        }
        1 if !p.is_empty() => {
            let i = at(u, p.len());
            p.remove(i);
        }
        2 => {
            let i = at(u, p.len() + 1).min(p.len());
            let h = hash(u);
            p.insert(i, h);
        }
        3 if p.len() > 1 => {
            let (i, j) = (at(u, p.len()), at(u, p.len()));
            p.swap(i, j);
        }
        _ => {}
    }
    p
}

fn expected_len(e: Result<(), LogError>) -> Option<usize> {
    match e {
        Err(LogError::ProofLength { expected, .. }) => Some(expected),
        _ => None,
    }
}

fn real_tree(u: &mut Unstructured) {
    let n: u64 = u.int_in_range(1..=300).unwrap_or(1);
    let salt: u8 = u.arbitrary().unwrap_or(0);
    let leaves: Vec<Hash> = (0..n)
        .map(|i| leaf_hash(&[&i.to_be_bytes()[..], &[salt]].concat()))
        .collect();
    let mut log = Frontier::empty();
    let mut stored: HashMap<NodeId, Hash> = HashMap::new();
    let mut roots = vec![log.root()];
    for l in &leaves {
        stored.extend(log.append(*l).expect("300 leaves fit"));
        roots.push(log.root());
    }
    let root = log.root();
    assert_eq!(
        plan_root(n)
            .assemble_from_map(&stored)
            .expect("stored nodes"),
        vec![root]
    );

    // Inclusion.
    let index = u.int_in_range(0..=n - 1).unwrap_or(0);
    let plan = plan_inclusion(index, n).expect("index < size");
    let honest = plan.assemble_from_map(&stored).expect("stored nodes");
    assert_eq!(honest.len(), plan.len());
    let leaf = leaves[index as usize];
    verify_inclusion(&leaf, index, n, &honest, &root).expect("an honest inclusion proof");
    let edited = edit(u, &honest);
    if edited != honest {
        assert!(verify_inclusion(&leaf, index, n, &edited, &root).is_err());
    }
    let other = u.int_in_range(0..=n - 1).unwrap_or(0);
    if other != index {
        assert!(verify_inclusion(&leaves[other as usize], index, n, &honest, &root).is_err());
        assert!(verify_inclusion(&leaf, other, n, &honest, &root).is_err());
    }
    let size = u.int_in_range(index + 1..=n).unwrap_or(n);
    if size != n {
        assert!(verify_inclusion(&leaf, index, size, &honest, &roots[size as usize]).is_err());
    }

    // Consistency.
    let first = u.int_in_range(1..=n).unwrap_or(n);
    let plan = plan_consistency(first, n).expect("0 < first <= size");
    let honest = plan.assemble_from_map(&stored).expect("stored nodes");
    assert_eq!(honest.len(), plan.len());
    let first_root = roots[first as usize];
    verify_consistency(first, n, &first_root, &root, &honest).expect("an honest proof");
    let edited = edit(u, &honest);
    if edited != honest {
        assert!(verify_consistency(first, n, &first_root, &root, &edited).is_err());
    }
    // A proof from another first size, or to a forked root.
    let other = u.int_in_range(1..=n).unwrap_or(n);
    if roots[other as usize] != first_root {
        assert!(verify_consistency(first, n, &roots[other as usize], &root, &honest).is_err());
    }
    let mut forked = root;
    forked[0] ^= 1;
    assert!(verify_consistency(first, n, &first_root, &forked, &honest).is_err());
}

fn arbitrary_sizes(u: &mut Unstructured) {
    let index: u64 = u.arbitrary().unwrap_or(0);
    let size: u64 = u.arbitrary().unwrap_or(0);
    let count = u.int_in_range(0..=70).unwrap_or(0);
    let proof: Vec<Hash> = (0..count).map(|_| hash(u)).collect();
    let (leaf, root) = (hash(u), hash(u));
    let r = verify_inclusion(&leaf, index, size, &proof, &root);
    match plan_inclusion(index, size) {
        Ok(plan) => {
            if proof.len() != plan.len() {
                assert_eq!(expected_len(r), Some(plan.len()));
            }
        }
        Err(_) => assert!(matches!(r, Err(LogError::IndexOutOfRange { .. }))),
    }
    // index and size read as the two sizes of a consistency proof.
    let (first, second) = (index, size);
    let r = verify_consistency(first, second, &leaf, &root, &proof);
    match plan_consistency(first, second) {
        Ok(plan) => {
            if proof.len() != plan.len() {
                assert_eq!(expected_len(r), Some(plan.len()));
            }
        }
        Err(_) => assert!(matches!(r, Err(LogError::ConsistencySizes { .. }))),
    }
    let _ = Frontier::node_ids(size);
    let _ = plan_root(size).len();
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    real_tree(&mut u);
    arbitrary_sizes(&mut u);
});
