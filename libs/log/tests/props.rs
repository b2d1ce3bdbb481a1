//! Property tests: random trees of up to 10 000 leaves against the RFC 6962 reference.

mod common;

use std::collections::HashMap;

use common::{mth, path, proof};
use openexec_log::*;
use proptest::prelude::*;

fn build(size: u64, seed: u64) -> (Vec<Hash>, Frontier, HashMap<NodeId, Hash>) {
    let mut f = Frontier::empty();
    let mut nodes = HashMap::new();
    let leaves: Vec<Hash> = (0..size)
        .map(|i| leaf_hash(&(i ^ seed).to_be_bytes()))
        .collect();
    for leaf in &leaves {
        nodes.extend(f.append(*leaf).unwrap());
    }
    (leaves, f, nodes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn proofs_match_the_reference(
        size in 1u64..=10_000,
        index_frac in 0.0f64..1.0,
        first_frac in 0.0f64..1.0,
        seed in any::<u64>(),
    ) {
        let (leaves, f, nodes) = build(size, seed);
        let root = mth(&leaves);
        prop_assert_eq!(f.root(), root);
        prop_assert_eq!(plan_root(size).assemble_from_map(&nodes).unwrap(), vec![root]);

        let index = ((size as f64 * index_frac) as u64).min(size - 1);
        let p = plan_inclusion(index, size).unwrap().assemble_from_map(&nodes).unwrap();
        prop_assert_eq!(&p, &path(index as usize, &leaves));
        prop_assert!(verify_inclusion(&leaves[index as usize], index, size, &p, &root).is_ok());
        if let Some(other) = (index + 1 < size).then_some(index + 1) {
            prop_assert!(verify_inclusion(&leaves[index as usize], other, size, &p, &root).is_err());
        }

        let first = ((size as f64 * first_frac) as u64).clamp(1, size);
        let c = plan_consistency(first, size).unwrap().assemble_from_map(&nodes).unwrap();
        let want = if first == size { vec![] } else { proof(first as usize, &leaves) };
        prop_assert_eq!(&c, &want);
        let first_root = mth(&leaves[..first as usize]);
        prop_assert!(verify_consistency(first, size, &first_root, &root, &c).is_ok());
        if first < size {
            prop_assert!(verify_consistency(first, size, &root, &root, &c).is_err());
        }
    }

    /// Plans never name a node that is not complete at the tree size they are for.
    #[test]
    fn plans_only_name_complete_nodes(size in 1u64..=u64::MAX, a in any::<u64>(), b in any::<u64>()) {
        let index = a % size;
        let first = 1 + b % size;
        let plans = [
            plan_inclusion(index, size).unwrap(),
            plan_consistency(first, size).unwrap(),
            plan_root(size),
        ];
        for plan in &plans {
            for id in plan.nodes() {
                let r = id.leaf_range().unwrap();
                prop_assert!(r.end <= size, "{} beyond size {}", id, size);
            }
            for element in plan.elements() {
                // Each element's subtrees are contiguous and largest first.
                for w in element.windows(2) {
                    prop_assert!(w[0].level > w[1].level);
                    prop_assert_eq!(w[0].leaf_range().unwrap().end, w[1].leaf_range().unwrap().start);
                }
            }
        }
        prop_assert!(plans[0].len() <= 64 && plans[1].len() <= 65);
    }

    /// Any bit flipped in any proof hash, in the leaf or in the root makes verification fail.
    #[test]
    fn flipped_bits_fail(size in 2u64..=2_000, a in any::<u64>(), byte in 0usize..32, bit in 0u8..8, which in 0usize..64) {
        let (leaves, f, nodes) = build(size, 7);
        let root = f.root();
        let index = a % size;
        let mut p = plan_inclusion(index, size).unwrap().assemble_from_map(&nodes).unwrap();
        let mut leaf = leaves[index as usize];
        let mut r = root;
        match which % 3 {
            0 if !p.is_empty() => { let i = which % p.len(); p[i][byte] ^= 1 << bit; }
            1 => leaf[byte] ^= 1 << bit,
            _ => r[byte] ^= 1 << bit,
        }
        let err = verify_inclusion(&leaf, index, size, &p, &r);
        prop_assert!(matches!(err, Err(LogError::RootMismatch { .. })), "{:?}", err);
    }
}
