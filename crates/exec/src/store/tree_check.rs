//! What both backends share about the receipt log's storage: the head, leaf data of a stored
//! receipt, hash text, and the start-up check that recomputes the tree from the stored receipts
//! and compares it with the last signed checkpoint.
//!
//! Trust boundary: the database is not trusted to stay as the log wrote it. Any difference is
//! reported with the first index that differs, and the log then refuses to sign.

use openexec_log::{leaf_hash, Frontier, Hash, NodeId, StoredCheckpoint};
use serde_json::Value;

use super::StoreError;

pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub use openexec_logstore::LogHead;

/// The latest stored checkpoint, as [`checkpoint_row`] reads it (the same text on both backends).
pub(crate) const LATEST_CHECKPOINT: &str =
    "SELECT size, root, note FROM log_checkpoints ORDER BY size DESC LIMIT 1";

/// A row of [`LATEST_CHECKPOINT`] as the log's type.
pub(crate) fn checkpoint_row(
    row: Option<(i64, String, String)>,
) -> Result<Option<StoredCheckpoint>, StoreError> {
    row.map(|(size, root, note)| {
        Ok(StoredCheckpoint {
            size: u64::try_from(size).map_err(|_| corrupt(format!("checkpoint size {size}")))?,
            root: hash_from_hex(&root)?,
            note,
        })
    })
    .transpose()
}

pub(crate) fn hash_hex(h: &Hash) -> String {
    hex::encode(h)
}

pub(crate) fn hash_from_hex(s: &str) -> Result<Hash, StoreError> {
    let v = hex::decode(s).map_err(|e| corrupt(format!("stored hash '{s}': {e}")))?;
    v.try_into()
        .map_err(|_| corrupt(format!("stored hash '{s}' is not 32 bytes")))
}

/// The leaf data of one stored receipt row.
pub(crate) fn leaf_data(
    receipt_jcs: &str,
    signature: &str,
    key_id: &str,
    logged_at: &str,
) -> Result<Vec<u8>, StoreError> {
    let receipt: Value = serde_json::from_str(receipt_jcs).map_err(corrupt)?;
    Ok(openexec_core::receipt::log_leaf(
        &receipt, signature, key_id, logged_at,
    ))
}

/// The start-up check, fed the stored receipts in log order by each backend.
pub(crate) struct TreeCheck {
    last: Option<StoredCheckpoint>,
    /// Nodes of leaves at or past this index are collected (to store those a database lacks).
    collect_from: u64,
    pub(crate) tree: Frontier,
    leaves: Vec<Hash>,
    pub(crate) new_nodes: Vec<(NodeId, Hash)>,
    pub(crate) problem: Option<String>,
    root_at_checkpoint: Option<Hash>,
}

impl TreeCheck {
    pub(crate) fn new(last: Option<StoredCheckpoint>, collect_from: u64) -> TreeCheck {
        TreeCheck {
            last,
            collect_from,
            tree: Frontier::empty(),
            leaves: Vec::new(),
            new_nodes: Vec::new(),
            problem: None,
            root_at_checkpoint: None,
        }
    }

    /// The next stored receipt; `false` once the check has seen enough (a gap).
    fn push(
        &mut self,
        idx: i64,
        receipt: &str,
        signature: &str,
        key_id: &str,
        logged_at: &str,
    ) -> Result<bool, StoreError> {
        if idx < 0 || idx as u64 != self.tree.size() {
            self.problem.get_or_insert(format!(
                "receipt log entry {} is missing (found {idx} after {})",
                self.tree.size(),
                self.tree.size() as i64 - 1
            ));
            return Ok(false);
        }
        let leaf = leaf_hash(&leaf_data(receipt, signature, key_id, logged_at)?);
        if self.last.as_ref().is_some_and(|c| (idx as u64) < c.size) {
            self.leaves.push(leaf);
        }
        let nodes = self.tree.append(leaf).map_err(corrupt)?;
        if (idx as u64) >= self.collect_from {
            self.new_nodes.extend(nodes);
        }
        if let Some(c) = &self.last {
            if self.tree.size() == c.size {
                self.root_at_checkpoint = Some(self.tree.root());
            }
        }
        Ok(true)
    }

    /// The next stored receipt, as a row of `receipts` (either backend).
    pub(crate) fn push_row<R: sqlx::Row>(&mut self, r: &R) -> Result<bool, StoreError>
    where
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    {
        let text = |c: &str| r.try_get::<String, _>(c).map_err(corrupt);
        self.push(
            r.try_get("log_index").map_err(corrupt)?,
            &text("receipt")?,
            &text("signature")?,
            &text("key_id")?,
            &text("created_at")?,
        )
    }

    /// After the last receipt: the size of the checkpoint whose root must be explained, if the
    /// recomputed tree does not match it (the caller then reads the stored leaf hashes below
    /// that size and calls [`TreeCheck::explain`]).
    pub(crate) fn finish(&mut self) -> Option<u64> {
        let c = self.last.as_ref()?;
        if self.problem.is_none() && self.tree.size() < c.size {
            self.problem = Some(format!(
                "the log holds {} entries but its last checkpoint was signed at {}: entries {}..{} are gone",
                self.tree.size(),
                c.size,
                self.tree.size(),
                c.size
            ));
        }
        (self.problem.is_none() && self.root_at_checkpoint != Some(c.root)).then_some(c.size)
    }

    /// Name the entry whose recomputed leaf hash is not the one stored when it was appended.
    pub(crate) fn explain(&mut self, stored_leaves: &[(i64, String)]) {
        let size = self.last.as_ref().map(|c| c.size).unwrap_or(0);
        let differs = stored_leaves
            .iter()
            .find(|(i, h)| self.leaves.get(*i as usize).map(hash_hex).as_deref() != Some(h));
        self.problem = Some(match differs {
            Some((i, _)) => format!(
                "receipt log entry {i} does not hash to the leaf that was logged: the stored receipt was changed; the root at size {size} no longer matches the signed checkpoint"
            ),
            None => format!(
                "the root recomputed at size {size} does not match the signed checkpoint"
            ),
        });
    }
}

/// Single-writer safety for storing a checkpoint after `last`: `Ok(true)` to store it,
/// `Ok(false)` when it is already stored, `Conflict` for a smaller size or the same size with
/// another root.
pub(crate) fn checkpoint_rule(
    last: Option<&StoredCheckpoint>,
    cp: &StoredCheckpoint,
) -> Result<bool, StoreError> {
    let Some(last) = last else {
        return Ok(true);
    };
    if cp.size < last.size {
        return Err(StoreError::Conflict(format!(
            "refusing to store a checkpoint of size {} after one of size {}",
            cp.size, last.size
        )));
    }
    if cp.size == last.size {
        if cp.root != last.root {
            return Err(StoreError::Conflict(format!(
                "refusing to store a second checkpoint of size {} with another root",
                cp.size
            )));
        }
        return Ok(false);
    }
    Ok(true)
}

/// The frontier at `size` from the stored nodes `got` (which must hold all of its nodes).
pub(crate) fn frontier_from(
    size: u64,
    got: &std::collections::HashMap<NodeId, Hash>,
) -> Result<Frontier, StoreError> {
    let hashes = Frontier::node_ids(size)
        .iter()
        .map(|id| {
            got.get(id)
                .copied()
                .ok_or_else(|| corrupt(format!("log node {id:?} is missing")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Frontier::from_parts(size, hashes).map_err(corrupt)
}

/// A stored node row (level, index, hex hash) as the log's types.
pub(crate) fn node_row(level: i64, index: i64, hash: &str) -> Result<(NodeId, Hash), StoreError> {
    let level = u8::try_from(level).map_err(|_| corrupt(format!("stored node level {level}")))?;
    let index = u64::try_from(index).map_err(|_| corrupt(format!("stored node index {index}")))?;
    Ok((NodeId { level, index }, hash_from_hex(hash)?))
}
