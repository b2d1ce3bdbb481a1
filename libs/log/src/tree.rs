use std::fmt;
use std::ops::Range;

use crate::{node_hash, Hash, LogError, EMPTY_ROOT};

/// A complete subtree of the log: the `2^level` leaves `[index·2^level, (index+1)·2^level)`.
///
/// Level 0 is the leaves themselves (`index` is then the leaf index). A node exists, and its hash
/// never changes, from the moment the log has `(index+1)·2^level` leaves: these are the only
/// nodes a log needs to store.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub const fn new(level: u8, index: u64) -> Self {
        NodeId { level, index }
    }

    /// The leaf with this index (level 0).
    pub const fn leaf(index: u64) -> Self {
        NodeId { level: 0, index }
    }

    /// The leaves this node covers, or `None` when that range does not fit in a `u64` (no node
    /// of a real log is like that: they all end at or before the log's size).
    pub fn leaf_range(&self) -> Option<Range<u64>> {
        if self.level >= 64 {
            return None;
        }
        let start = self.index.checked_mul(1u64 << self.level)?;
        let end = start.checked_add(1u64 << self.level)?;
        Some(start..end)
    }

    /// The two nodes this one is the hash of, left then right; `None` for a leaf.
    pub fn children(&self) -> Option<(NodeId, NodeId)> {
        if self.level == 0 {
            return None;
        }
        let left = self.index.checked_mul(2)?;
        Some((
            NodeId::new(self.level - 1, left),
            NodeId::new(self.level - 1, left + 1),
        ))
    }

    /// The node one level up that this one is a child of (levels of real logs stop at 63).
    pub fn parent(&self) -> NodeId {
        NodeId::new(self.level.saturating_add(1), self.index / 2)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(level {}, index {})", self.level, self.index)
    }
}

/// The leaf range `[lo, hi)` cut into complete subtrees, left to right, each as large as its
/// alignment allows. For a range that starts on a multiple of a power of two at least as large
/// as the range (every range that RFC 6962 hashes, and every prefix `[0, n)`), the pieces come
/// largest first and the range's Merkle Tree Hash is their right fold (see [`fold_range`]).
pub(crate) fn decompose(mut lo: u64, hi: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    while lo < hi {
        let align = if lo == 0 { 63 } else { lo.trailing_zeros() };
        let room = 63 - (hi - lo).leading_zeros();
        let level = align.min(room);
        out.push(NodeId::new(level as u8, lo >> level));
        lo += 1u64 << level;
    }
    out
}

/// The Merkle Tree Hash of a range from its complete subtrees, largest first.
///
/// RFC 6962 §2.1 splits `n` leaves at `k`, "the largest power of two smaller than n": for a
/// range whose pieces are `c1 > c2 > … > cj`, that split puts `c1` on the left and the rest on
/// the right, so `MTH = H(0x01 ‖ c1 ‖ MTH(c2 … cj))`: a fold from the right. The empty range hashes
/// to [`EMPTY_ROOT`].
pub(crate) fn fold_range(hashes: &[Hash]) -> Hash {
    match hashes.split_last() {
        None => EMPTY_ROOT,
        Some((last, rest)) => rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)),
    }
}

/// The compact range of a log of `size` leaves: the roots of its complete subtrees, largest
/// (leftmost) first, one per set bit of `size`, so at most 64.
///
/// It is all a log writer needs in memory: appending a leaf is O(log n) and needs no reads, and
/// the root of the whole log follows from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Default for Frontier {
    fn default() -> Self {
        Frontier::empty()
    }
}

impl Frontier {
    /// The frontier of the empty log.
    pub fn empty() -> Self {
        Frontier {
            size: 0,
            hashes: Vec::new(),
        }
    }

    /// A frontier from stored hashes: those of the nodes [`Frontier::node_ids`]`(size)` names, in
    /// that order.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, LogError> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(LogError::FrontierLength {
                size,
                got: hashes.len(),
                expected,
            });
        }
        Ok(Frontier { size, hashes })
    }

    /// The number of leaves in the log.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The roots of the complete subtrees, largest first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The ids of the frontier's nodes at `size`, largest first: what to load from storage to
    /// resume appending (then [`Frontier::from_parts`]).
    pub fn node_ids(size: u64) -> Vec<NodeId> {
        decompose(0, size)
    }

    /// Append one leaf hash (see [`leaf_hash`](crate::leaf_hash)). Returns every complete node
    /// that exists now and did not before: the leaf itself at level 0 and each parent it
    /// completes, lowest first, for the caller to store.
    pub fn append(&mut self, leaf: Hash) -> Result<Vec<(NodeId, Hash)>, LogError> {
        if self.size == u64::MAX {
            return Err(LogError::LogFull(self.size));
        }
        let mut created = Vec::with_capacity(1 + self.size.trailing_ones() as usize);
        let mut id = NodeId::leaf(self.size);
        let mut hash = leaf;
        created.push((id, hash));
        // Each set low bit of the old size is a complete subtree of the same size as the one
        // being carried up: merge them, as in binary addition.
        while id.index & 1 == 1 {
            // `from_parts` and `append` keep one hash per set bit, so this pop cannot fail.
            let Some(left) = self.hashes.pop() else { break };
            hash = node_hash(&left, &hash);
            id = id.parent();
            created.push((id, hash));
        }
        self.hashes.push(hash);
        self.size += 1;
        Ok(created)
    }

    /// The RFC 6962 Merkle Tree Hash of the whole log ([`EMPTY_ROOT`] when it is empty).
    pub fn root(&self) -> Hash {
        fold_range(&self.hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompose_prefixes() {
        assert!(decompose(0, 0).is_empty());
        assert_eq!(decompose(0, 1), vec![NodeId::new(0, 0)]);
        assert_eq!(
            decompose(0, 7),
            vec![NodeId::new(2, 0), NodeId::new(1, 2), NodeId::new(0, 6)]
        );
        assert_eq!(decompose(4, 7), vec![NodeId::new(1, 2), NodeId::new(0, 6)]);
        assert_eq!(decompose(0, u64::MAX).len(), 64);
        assert_eq!(decompose(0, u64::MAX)[0], NodeId::new(63, 0));
    }

    #[test]
    fn node_ranges() {
        assert_eq!(NodeId::new(2, 3).leaf_range(), Some(12..16));
        assert_eq!(NodeId::new(63, 1).leaf_range(), None);
        assert_eq!(
            NodeId::new(2, 3).children(),
            Some((NodeId::new(1, 6), NodeId::new(1, 7)))
        );
        assert_eq!(NodeId::new(1, 7).parent(), NodeId::new(2, 3));
    }

    #[test]
    fn full_log_refuses_to_grow() {
        let mut f = Frontier::from_parts(u64::MAX, vec![[0; 32]; 64]).unwrap();
        assert_eq!(f.append([1; 32]), Err(LogError::LogFull(u64::MAX)));
    }
}
