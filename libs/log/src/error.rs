use std::fmt;

use crate::{hex, Hash, NodeId};

/// Which kind of proof a [`LogError::ProofLength`] is about.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProofKind {
    Inclusion,
    Consistency,
}

impl fmt::Display for ProofKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProofKind::Inclusion => "inclusion",
            ProofKind::Consistency => "consistency",
        })
    }
}

/// What went wrong with tree maths, a proof, or its verification. Each message says exactly what
/// failed, with the numbers and hashes involved.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LogError {
    /// An inclusion proof was asked for, or checked, for a leaf the tree does not have.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },

    /// A consistency proof needs `0 < first <= second` (RFC 9162 §2.1.4.1). Every tree is
    /// consistent with the empty tree, so there is nothing to prove from size 0.
    #[error("consistency proof needs 0 < first <= second, got first = {first}, second = {second}")]
    ConsistencySizes { first: u64, second: u64 },

    /// The proof does not have the number of hashes that the sizes call for.
    #[error("{kind} proof has {got} hashes, expected {expected}")]
    ProofLength {
        kind: ProofKind,
        got: usize,
        expected: usize,
    },

    /// An inclusion proof leads to another root than the one it was checked against.
    #[error("root mismatch: computed {} expected {}", hex(.computed), hex(.expected))]
    RootMismatch { computed: Hash, expected: Hash },

    /// A consistency proof does not rebuild the first tree's root.
    #[error(
        "first root mismatch: the consistency proof computes {} but the first tree's root is {}",
        hex(.computed),
        hex(.expected)
    )]
    FirstRootMismatch { computed: Hash, expected: Hash },

    /// A consistency proof does not rebuild the second tree's root (or, for equal sizes, the
    /// two roots differ).
    #[error(
        "second root mismatch: the consistency proof computes {} but the second tree's root is {}",
        hex(.computed),
        hex(.expected)
    )]
    SecondRootMismatch { computed: Hash, expected: Hash },

    /// The RFC 9162 verification loop did not end at the top of the tree. Unreachable when the
    /// proof length is right; kept so that no path of the algorithm can succeed silently.
    #[error("{kind} proof does not reach the root of a tree of size {size}")]
    ProofShape { kind: ProofKind, size: u64 },

    /// A node the plan needs was not in the lookup given to [`ProofPlan::assemble`].
    ///
    /// [`ProofPlan::assemble`]: crate::ProofPlan::assemble
    #[error("node {0} is missing from the node lookup")]
    MissingNode(NodeId),

    /// [`Frontier::from_parts`](crate::Frontier::from_parts) got the wrong number of hashes.
    #[error(
        "a frontier of size {size} has {expected} hashes (one per set bit of the size), got {got}"
    )]
    FrontierLength {
        size: u64,
        got: usize,
        expected: usize,
    },

    /// The log already has 2^64 − 1 leaves.
    #[error("the log is full: size {0} cannot grow")]
    LogFull(u64),
}
