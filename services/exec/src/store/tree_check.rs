//! What both backends share about the receipt log's storage beyond `openexec_logstore::store`
//! (which owns the log tables' statements and the start-up tree check): the leaf data of a
//! stored receipt, and [`RECEIPT_LEAVES`], the tree check's source of leaves for OpenExec.

pub use openexec_logstore::store::tree_check::LeafSource;
pub use openexec_logstore::store::{
    checkpoint_row, frontier_from, hash_hex, LogHead, LATEST_CHECKPOINT,
};
use serde_json::Value;

use super::{corrupt, StoreError};

/// The leaf data of one stored receipt row: JCS of `{"receipt", "signature", "key_id",
/// "logged_at"}` (SPEC §7).
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

/// The receipt log's leaves, for the start-up check on both backends: every receipt in log
/// order (the same statement on SQLite and PostgreSQL).
pub(crate) const RECEIPT_LEAVES: LeafSource = LeafSource {
    query:
        "SELECT log_index, receipt, signature, key_id, created_at FROM receipts ORDER BY log_index",
    leaf: |c| match c {
        [receipt, signature, key_id, logged_at] => {
            leaf_data(receipt, signature, key_id, logged_at).map_err(|e| e.to_string())
        }
        _ => Err(format!("{} columns, not 4", c.len())),
    },
    entry: "receipt log entry",
    record: "receipt",
};
