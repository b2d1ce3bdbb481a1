//! Tree maths against the RFC 6962 reference in `common`, known vectors, and tampering.

mod common;

use std::collections::{HashMap, HashSet};

use common::{h, mth, path, proof, ref_leaf, sha256, unhex};
use openexec_log::*;

#[test]
fn leaf_and_node_hashes_follow_rfc6962() {
    assert_eq!(leaf_hash(b""), sha256(&[&[0x00]]));
    assert_eq!(leaf_hash(b"abc"), ref_leaf(b"abc"));
    let (l, r) = (leaf_hash(b"l"), leaf_hash(b"r"));
    assert_eq!(node_hash(&l, &r), sha256(&[&[0x01], &l, &r]));
    assert_eq!(EMPTY_ROOT, sha256(&[]));
    assert_eq!(Frontier::empty().root(), EMPTY_ROOT);
}

/// Every size 1..=64: roots through the frontier and through stored nodes, every inclusion proof
/// and every consistency proof through plan + assemble, all equal to the reference, and all
/// verified. The node map only holds what `append` had produced at each size, so a plan that
/// named a node not yet complete would fail.
#[test]
#[allow(clippy::needless_range_loop)] // indices are the leaf numbers and sizes of the RFC
fn every_small_tree_agrees_with_the_reference() {
    let leaves: Vec<Hash> = (0u32..64).map(|i| ref_leaf(&i.to_be_bytes())).collect();
    let mut frontier = Frontier::empty();
    let mut nodes: HashMap<NodeId, Hash> = HashMap::new();
    let mut roots = vec![EMPTY_ROOT];
    for (i, leaf) in leaves.iter().enumerate() {
        for (id, hash) in frontier.append(*leaf).unwrap() {
            assert!(nodes.insert(id, hash).is_none(), "{id} produced twice");
        }
        let n = i + 1;
        let size = n as u64;
        let tree = &leaves[..n];
        let root = mth(tree);
        roots.push(root);
        assert_eq!(frontier.size(), size);
        assert_eq!(frontier.root(), root, "root at size {n}");
        assert_eq!(
            plan_root(size).assemble_from_map(&nodes).unwrap(),
            vec![root]
        );

        // The frontier is what storage holds under node_ids, and resuming from it is the same.
        let ids = Frontier::node_ids(size);
        let stored: Vec<Hash> = ids.iter().map(|id| nodes[id]).collect();
        assert_eq!(stored, frontier.hashes());
        assert_eq!(Frontier::from_parts(size, stored).unwrap(), frontier);

        // Every stored node is the MTH of its leaf range.
        for (id, hash) in &nodes {
            let r = id.leaf_range().unwrap();
            assert_eq!(
                *hash,
                mth(&leaves[r.start as usize..r.end as usize]),
                "{id}"
            );
        }

        for m in 0..n {
            let plan = plan_inclusion(m as u64, size).unwrap();
            let got = plan.assemble_from_map(&nodes).unwrap();
            assert_eq!(got, path(m, tree), "inclusion of {m} in {n}");
            assert_eq!(plan.assemble(|id| nodes.get(&id).copied()).unwrap(), got);
            verify_inclusion(&leaves[m], m as u64, size, &got, &root).unwrap();
        }
        for first in 1..=n {
            let plan = plan_consistency(first as u64, size).unwrap();
            let got = plan.assemble_from_map(&nodes).unwrap();
            let want = if first == n {
                vec![]
            } else {
                proof(first, tree)
            };
            assert_eq!(got, want, "consistency {first} -> {n}");
            verify_consistency(first as u64, size, &roots[first], &root, &got).unwrap();
        }
    }
    // 64 leaves make 127 complete nodes.
    assert_eq!(nodes.len(), 127);
}

#[test]
fn append_reports_the_new_complete_nodes() {
    let mut f = Frontier::empty();
    let created: Vec<Vec<NodeId>> = (0u8..8)
        .map(|i| {
            f.append([i; 32])
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        })
        .collect();
    let n = NodeId::new;
    assert_eq!(created[0], vec![n(0, 0)]);
    assert_eq!(created[1], vec![n(0, 1), n(1, 0)]);
    assert_eq!(created[2], vec![n(0, 2)]);
    assert_eq!(created[3], vec![n(0, 3), n(1, 1), n(2, 0)]);
    assert_eq!(created[7], vec![n(0, 7), n(1, 3), n(2, 1), n(3, 0)]);
    assert_eq!(f.hashes().len(), 1);
}

#[test]
fn frontier_from_parts_checks_the_count() {
    assert_eq!(
        Frontier::from_parts(5, vec![[0; 32]]),
        Err(LogError::FrontierLength {
            size: 5,
            got: 1,
            expected: 2
        })
    );
    assert_eq!(
        LogError::FrontierLength {
            size: 5,
            got: 1,
            expected: 2
        }
        .to_string(),
        "a frontier of size 5 has 2 hashes (one per set bit of the size), got 1"
    );
    assert_eq!(Frontier::from_parts(0, vec![]).unwrap(), Frontier::empty());
    assert_eq!(
        Frontier::node_ids(6),
        vec![NodeId::new(2, 0), NodeId::new(1, 2)]
    );
}

#[test]
fn plans_name_their_nodes_and_missing_ones_are_reported() {
    let plan = plan_inclusion(2, 7).unwrap();
    // PATH(2, D[7]): leaf 3, then MTH(D[0:2]), then MTH(D[4:7]) = node(1,2) and leaf 6.
    assert_eq!(
        plan.elements(),
        &[
            vec![NodeId::new(0, 3)],
            vec![NodeId::new(1, 0)],
            vec![NodeId::new(1, 2), NodeId::new(0, 6)],
        ]
    );
    assert_eq!(
        plan.nodes(),
        vec![
            NodeId::new(0, 3),
            NodeId::new(0, 6),
            NodeId::new(1, 0),
            NodeId::new(1, 2)
        ]
    );
    let err = plan
        .assemble(|id| (id != NodeId::new(1, 2)).then_some([0; 32]))
        .unwrap_err();
    assert_eq!(err, LogError::MissingNode(NodeId::new(1, 2)));
    assert_eq!(
        err.to_string(),
        "node (level 1, index 2) is missing from the node lookup"
    );
    assert!(plan_consistency(4, 4).unwrap().is_empty());
    assert!(plan_inclusion(0, 1).unwrap().is_empty());
    assert_eq!(plan_root(0).assemble(|_| None).unwrap(), vec![EMPTY_ROOT]);
}

#[test]
fn bad_arguments_are_refused() {
    assert_eq!(
        plan_inclusion(5, 5),
        Err(LogError::IndexOutOfRange { index: 5, size: 5 })
    );
    assert_eq!(
        plan_inclusion(0, 0).unwrap_err().to_string(),
        "leaf index 0 is not below tree size 0"
    );
    for (a, b) in [(0, 0), (0, 5), (6, 5)] {
        assert_eq!(
            plan_consistency(a, b),
            Err(LogError::ConsistencySizes {
                first: a,
                second: b
            })
        );
        assert_eq!(
            verify_consistency(a, b, &EMPTY_ROOT, &EMPTY_ROOT, &[]),
            Err(LogError::ConsistencySizes {
                first: a,
                second: b
            })
        );
    }
    assert_eq!(
        verify_inclusion(&EMPTY_ROOT, 3, 3, &[], &EMPTY_ROOT),
        Err(LogError::IndexOutOfRange { index: 3, size: 3 })
    );
}

// ---------------------------------------------------------------------------------------------
// The 8-leaf tree of the RFC 6962 reference tests.
//
// Source: github.com/transparency-dev/merkle, `testonly/constants.go` (LeafInputs, NodeHashes,
// RootHashes, CompactTrees) and `proof/verify_test.go` (inclusionProofs, consistencyProbes);
// these are the vectors of the original certificate-transparency reference implementation
// (google/certificate-transparency, merkle_tree_test.cc), carried over with the code. In
// `inclusionProofs` the leaf is numbered from 1.
// ---------------------------------------------------------------------------------------------

const LEAF_INPUTS: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// RootHashes()[1..]: the roots at sizes 1 to 8.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// NodeHashes(): every complete node of the 8-leaf tree, by level then index.
const NODES: [&[&str]; 4] = [
    &[
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    &[
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    &[
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
];

/// inclusionProofs: (leaf numbered from 1, tree size, proof).
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        3,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        2,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// consistencyProofs: (first size, second size, proof).
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|s| h(s)).collect()
}

/// The 8-leaf tree built with `append`, with every node it produced.
fn vector_tree() -> (Vec<Hash>, Vec<Hash>, HashMap<NodeId, Hash>) {
    let leaves: Vec<Hash> = LEAF_INPUTS.iter().map(|d| leaf_hash(&unhex(d))).collect();
    let mut f = Frontier::empty();
    let mut nodes = HashMap::new();
    let mut roots = Vec::new();
    for leaf in &leaves {
        nodes.extend(f.append(*leaf).unwrap());
        roots.push(f.root());
    }
    (leaves, roots, nodes)
}

#[test]
fn rfc6962_vectors_roots_and_nodes() {
    let (_, roots, nodes) = vector_tree();
    assert_eq!(roots, hashes(&ROOTS));
    for (level, row) in NODES.iter().enumerate() {
        for (index, hex) in row.iter().enumerate() {
            assert_eq!(nodes[&NodeId::new(level as u8, index as u64)], h(hex));
        }
    }
    assert_eq!(nodes.len(), 15);
    // CompactTrees(): the frontier at size 7 is {nh[2][0], nh[1][2], nh[0][6]}.
    let ids = Frontier::node_ids(7);
    assert_eq!(
        ids.iter().map(|id| nodes[id]).collect::<Vec<_>>(),
        vec![h(NODES[2][0]), h(NODES[1][2]), h(NODES[0][6])]
    );
}

#[test]
fn rfc6962_vectors_inclusion() {
    let (leaves, roots, nodes) = vector_tree();
    for (leaf, size, want) in INCLUSION {
        let index = leaf - 1;
        let got = plan_inclusion(index, size)
            .unwrap()
            .assemble_from_map(&nodes)
            .unwrap();
        assert_eq!(got, hashes(want), "leaf {leaf} size {size}");
        let root = roots[size as usize - 1];
        verify_inclusion(&leaves[index as usize], index, size, &got, &root).unwrap();
        tampered_inclusion_fails(&leaves[index as usize], index, size, &got, &root);
    }
}

#[test]
fn rfc6962_vectors_consistency() {
    let (_, roots, nodes) = vector_tree();
    for (first, second, want) in CONSISTENCY {
        let got = plan_consistency(first, second)
            .unwrap()
            .assemble_from_map(&nodes)
            .unwrap();
        assert_eq!(got, hashes(want), "{first} -> {second}");
        let (r1, r2) = (roots[first as usize - 1], roots[second as usize - 1]);
        verify_consistency(first, second, &r1, &r2, &got).unwrap();
        tampered_consistency_fails(first, second, &r1, &r2, &got);
    }
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut out = *h;
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

/// Every single-bit change to the proof, the root or the leaf, every other index and size, and
/// every added or removed hash make verification fail, with the error naming what failed.
fn tampered_inclusion_fails(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) {
    let hex = |h: &Hash| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
    for i in 0..proof.len() {
        for bit in 0..256 {
            let mut bad = proof.to_vec();
            bad[i] = flip(&bad[i], bit);
            let err = verify_inclusion(leaf, index, size, &bad, root).unwrap_err();
            assert!(matches!(err, LogError::RootMismatch { .. }), "{err}");
        }
    }
    for bit in 0..256 {
        let bad_root = flip(root, bit);
        let err = verify_inclusion(leaf, index, size, proof, &bad_root).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "root mismatch: computed {} expected {}",
                hex(root),
                hex(&bad_root)
            )
        );
        let err = verify_inclusion(&flip(leaf, bit), index, size, proof, root).unwrap_err();
        assert!(
            err.to_string().starts_with("root mismatch: computed "),
            "{err}"
        );
    }
    for other in 0..size + 3 {
        if other != index {
            assert!(verify_inclusion(leaf, other, size, proof, root).is_err());
        }
    }
    // A size that changes the proof's length fails. (A size that keeps the same path shape,
    // e.g. leaf 0 in sizes 5 to 8, computes the same root: an inclusion proof does not
    // authenticate the size; the signed checkpoint binds size and root together.)
    for other in [size * 2, size / 2, size + 100, u64::MAX] {
        if other != size
            && !(other > index && plan_inclusion(index, other).unwrap().len() == proof.len())
        {
            assert!(
                verify_inclusion(leaf, index, other, proof, root).is_err(),
                "size {other}"
            );
        }
    }
    for other in 1..size * 2 + 2 {
        if other != size && verify_inclusion(leaf, index, other, proof, root).is_ok() {
            assert_eq!(plan_inclusion(index, other).unwrap().len(), proof.len());
        }
    }
    let mut longer = proof.to_vec();
    longer.push(*root);
    assert_eq!(
        verify_inclusion(leaf, index, size, &longer, root),
        Err(LogError::ProofLength {
            kind: ProofKind::Inclusion,
            got: proof.len() + 1,
            expected: proof.len()
        })
    );
    if !proof.is_empty() {
        let err = verify_inclusion(leaf, index, size, &proof[1..], root).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "inclusion proof has {} hashes, expected {}",
                proof.len() - 1,
                proof.len()
            )
        );
    }
}

fn tampered_consistency_fails(first: u64, second: u64, r1: &Hash, r2: &Hash, proof: &[Hash]) {
    for i in 0..proof.len() {
        for bit in 0..256 {
            let mut bad = proof.to_vec();
            bad[i] = flip(&bad[i], bit);
            let err = verify_consistency(first, second, r1, r2, &bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    LogError::FirstRootMismatch { .. } | LogError::SecondRootMismatch { .. }
                ),
                "{err}"
            );
        }
    }
    for bit in 0..256 {
        let err = verify_consistency(first, second, &flip(r1, bit), r2, proof).unwrap_err();
        assert!(
            err.to_string().contains("root mismatch"),
            "first root bit {bit}: {err}"
        );
        let err = verify_consistency(first, second, r1, &flip(r2, bit), proof).unwrap_err();
        assert!(err.to_string().starts_with("second root mismatch"), "{err}");
    }
    for other in 1..second + 3 {
        if other != first {
            assert!(verify_consistency(other, second, r1, r2, proof).is_err());
        }
    }
    // As for inclusion, only a second size with the same proof shape can pass.
    for other in [first, second * 2, u64::MAX] {
        if other != second {
            assert!(
                verify_consistency(first, other, r1, r2, proof).is_err(),
                "size {other}"
            );
        }
    }
    for other in first..second * 2 + 2 {
        if other != second && verify_consistency(first, other, r1, r2, proof).is_ok() {
            assert_eq!(plan_consistency(first, other).unwrap().len(), proof.len());
        }
    }
    if first != second {
        assert!(verify_consistency(first, second, r2, r1, proof).is_err());
    }
    let mut longer = proof.to_vec();
    longer.push(*r2);
    assert_eq!(
        verify_consistency(first, second, r1, r2, &longer)
            .unwrap_err()
            .to_string(),
        format!(
            "consistency proof has {} hashes, expected {}",
            proof.len() + 1,
            proof.len()
        )
    );
}

#[test]
fn tampering_fails_on_a_larger_tree() {
    let leaves: Vec<Hash> = (0u32..100).map(|i| leaf_hash(&i.to_le_bytes())).collect();
    let mut f = Frontier::empty();
    let mut nodes = HashMap::new();
    let mut roots = vec![EMPTY_ROOT];
    for leaf in &leaves {
        nodes.extend(f.append(*leaf).unwrap());
        roots.push(f.root());
    }
    for (index, size) in [(0, 100), (13, 37), (36, 37), (64, 65), (99, 100), (31, 32)] {
        let p = plan_inclusion(index, size)
            .unwrap()
            .assemble_from_map(&nodes)
            .unwrap();
        tampered_inclusion_fails(
            &leaves[index as usize],
            index,
            size,
            &p,
            &roots[size as usize],
        );
    }
    for (first, second) in [(13, 37), (32, 100), (1, 100), (99, 100), (37, 37), (63, 65)] {
        let p = plan_consistency(first, second)
            .unwrap()
            .assemble_from_map(&nodes)
            .unwrap();
        tampered_consistency_fails(
            first,
            second,
            &roots[first as usize],
            &roots[second as usize],
            &p,
        );
    }
}

/// A log of 1 000 003 synthetic leaves: roots only through the frontier, a handful of proofs
/// through plans whose nodes were kept while appending, checked against the frontier's roots.
/// The root at 100 003 leaves is also checked against the recursive reference (at 1 000 003 it
/// would double the test's time in a debug build for little more assurance).
#[test]
fn a_million_leaves() {
    const N: u64 = 1_000_003;
    const REF: u64 = 100_003;
    let leaf = |i: u64| {
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&i.to_le_bytes());
        h[31] = 0xa5;
        h
    };
    let inclusions: Vec<(u64, u64)> = vec![
        (0, N),
        (1, N),
        (N / 2, N),
        (524_287, N),
        (524_288, N),
        (N - 2, N),
        (N - 1, N),
        (999_999, 1_000_000),
        (12_345, 65_536),
    ];
    let consistencies: Vec<(u64, u64)> = vec![
        (1, N),
        (2, N),
        (3, N),
        (1_000, N),
        (65_536, N),
        (524_288, N),
        (999_999, N),
        (N - 1, N),
        (1_000, 65_536),
        (65_535, 1_000_000),
        (N, N),
    ];
    let mut plans_in = Vec::new();
    let mut plans_co = Vec::new();
    let mut wanted: HashSet<NodeId> = HashSet::new();
    let mut checkpoints: HashSet<u64> = HashSet::new();
    for &(i, s) in &inclusions {
        let p = plan_inclusion(i, s).unwrap();
        wanted.extend(p.nodes());
        checkpoints.insert(s);
        plans_in.push(p);
    }
    for &(a, b) in &consistencies {
        let p = plan_consistency(a, b).unwrap();
        wanted.extend(p.nodes());
        checkpoints.extend([a, b]);
        plans_co.push(p);
    }
    wanted.extend(plan_root(N).nodes());
    checkpoints.insert(REF);

    let mut f = Frontier::empty();
    let mut kept: HashMap<NodeId, Hash> = HashMap::new();
    let mut roots: HashMap<u64, Hash> = HashMap::new();
    let mut ref_leaves = Vec::with_capacity(REF as usize);
    for i in 0..N {
        if i < REF {
            ref_leaves.push(leaf(i));
        }
        for (id, hash) in f.append(leaf(i)).unwrap() {
            if wanted.contains(&id) {
                kept.insert(id, hash);
            }
        }
        if checkpoints.contains(&f.size()) {
            roots.insert(f.size(), f.root());
        }
        if f.size() == 777_777 {
            // Resuming from stored parts carries on identically.
            f = Frontier::from_parts(f.size(), f.hashes().to_vec()).unwrap();
        }
    }
    assert_eq!(kept.len(), wanted.len());
    assert_eq!(roots[&REF], mth(&ref_leaves), "root of {REF} leaves");
    assert_eq!(
        plan_root(N).assemble_from_map(&kept).unwrap(),
        vec![f.root()]
    );

    for (&(i, s), p) in inclusions.iter().zip(&plans_in) {
        let proof = p.assemble_from_map(&kept).unwrap();
        verify_inclusion(&leaf(i), i, s, &proof, &roots[&s]).unwrap();
        let mut bad = proof.clone();
        bad[0][0] ^= 1;
        assert!(verify_inclusion(&leaf(i), i, s, &bad, &roots[&s]).is_err());
    }
    for (&(a, b), p) in consistencies.iter().zip(&plans_co) {
        let proof = p.assemble_from_map(&kept).unwrap();
        verify_consistency(a, b, &roots[&a], &roots[&b], &proof).unwrap();
        if let Some(last) = proof.len().checked_sub(1) {
            let mut bad = proof.clone();
            bad[last][31] ^= 0x80;
            assert!(verify_consistency(a, b, &roots[&a], &roots[&b], &bad).is_err());
        }
    }
}
