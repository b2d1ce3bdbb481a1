//! The SQL side of a [`LogStore`](openexec_log::LogStore), on SQLite ([`sqlite`]) and
//! PostgreSQL ([`postgres`]): the statements over the log's own tables (`log_nodes`,
//! `log_checkpoints`, `log_cosignatures`, `log_identity`; on PostgreSQL `log_state`, the head
//! row every replica appends under), and the start-up tree check ([`tree_check`]) over any
//! source of leaves.
//!
//! Appending is the service's: its writer appends each record's leaf with a
//! [`Frontier`] inside the transaction that stores the record (group commit, one writer), and
//! stores the nodes `append` hands back with the statements here ([`sqlite::INSERT_NODES`],
//! [`postgres::frontier_text`], …). This module never opens a transaction of its own around a
//! service's records and runs no second writer.
//!
//! The tables are created by the service's own migrations, or by this crate's
//! ([`sqlite::MIGRATOR`], [`postgres::MIGRATOR`], versions from 1000 on; see ARCHITECTURE.md).

pub mod postgres;
pub mod sqlite;
pub mod tree_check;

use std::collections::HashMap;

use openexec_log::{Frontier, Hash, NodeId, StoredCheckpoint};

/// A migrator of the log tables (this crate's [`sqlite::MIGRATOR`] or [`postgres::MIGRATOR`])
/// that shares the database's one `_sqlx_migrations` table with the service's own migrator:
/// each ignores the other's versions (the service's run with `set_ignore_missing(true)` too).
pub fn shared_migrator(m: &sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    sqlx::migrate::Migrator {
        migrations: m.migrations.clone(),
        ignore_missing: true,
        ..sqlx::migrate::Migrator::DEFAULT
    }
}

pub(crate) use openexec_store::unavailable;
/// Why the log's storage failed: the one store error of every service (`openexec_store`),
/// so a service's store passes it on as it is.
pub use openexec_store::{corrupt, StoreError};

/// The head of a log: how many entries it holds and the root over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHead {
    pub size: u64,
    pub root: Hash,
}

impl LogHead {
    pub fn of(tree: &Frontier) -> LogHead {
        LogHead {
            size: tree.size(),
            root: tree.root(),
        }
    }

    /// Publish `tree`'s head after a commit (watchers wake only when it moved).
    pub fn publish(head: &tokio::sync::watch::Sender<LogHead>, tree: &Frontier) {
        LogHead::of(tree).publish_to(head)
    }

    /// Publish this head (watchers wake only when it moved).
    pub fn publish_to(self, head: &tokio::sync::watch::Sender<LogHead>) {
        head.send_if_modified(|h| {
            let new = self;
            let changed = *h != new;
            *h = new;
            changed
        });
    }
}

/// The latest stored checkpoint, as [`checkpoint_row`] reads it (the same text on both backends).
pub const LATEST_CHECKPOINT: &str =
    "SELECT size, root, note FROM log_checkpoints ORDER BY size DESC LIMIT 1";

/// A row of [`LATEST_CHECKPOINT`] as the log's type.
pub fn checkpoint_row(
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

/// A hash as the log's tables keep it: lower-case hex.
pub fn hash_hex(h: &Hash) -> String {
    hex::encode(h)
}

pub fn hash_from_hex(s: &str) -> Result<Hash, StoreError> {
    let v = hex::decode(s).map_err(|e| corrupt(format!("stored hash '{s}': {e}")))?;
    v.try_into()
        .map_err(|_| corrupt(format!("stored hash '{s}' is not 32 bytes")))
}

/// The tlog-cosignature timestamp as `log_cosignatures.cosigned_at` keeps it.
pub fn cosigned_at(timestamp: u64) -> i64 {
    i64::try_from(timestamp).unwrap_or(i64::MAX)
}

/// Single-writer safety for storing a checkpoint after `last`: `Ok(true)` to store it,
/// `Ok(false)` when it is already stored, `Conflict` for a smaller size or the same size with
/// another root.
pub fn checkpoint_rule(
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
pub fn frontier_from(size: u64, got: &HashMap<NodeId, Hash>) -> Result<Frontier, StoreError> {
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
pub fn node_row(level: i64, index: i64, hash: &str) -> Result<(NodeId, Hash), StoreError> {
    let level = u8::try_from(level).map_err(|_| corrupt(format!("stored node level {level}")))?;
    let index = u64::try_from(index).map_err(|_| corrupt(format!("stored node index {index}")))?;
    Ok((NodeId { level, index }, hash_from_hex(hash)?))
}

/// The identity (origin, verifier key) recorded for the log, when it is not the one presented:
/// two keys never sign one log. The service words the refusal (it names its settings).
pub type IdentityMismatch = Option<(String, String)>;

/// How a service names its log in the refusal of [`identity_conflict`].
#[derive(Debug, Clone, Copy)]
pub struct IdentityNames {
    /// "the receipt log", "the decision log".
    pub log: &'static str,
    /// The key and origin settings (`OPENEXEC_LOG_KEY`, `OPENEXEC_LOG_ORIGIN`).
    pub key_setting: &'static str,
    pub origin_setting: &'static str,
}

/// The refusal of a process whose log identity differs from the recorded one (`Conflict`).
pub fn identity_conflict(
    recorded: IdentityMismatch,
    presented: (&str, &str),
    names: IdentityNames,
) -> Result<(), StoreError> {
    let Some(recorded) = recorded else {
        return Ok(());
    };
    Err(StoreError::Conflict(format!(
        "this database holds {} '{}' signed by {}, but this process has origin '{}' and log key {}: \
         every replica (and every restart) must use the same {} and {}",
        names.log, recorded.0, recorded.1, presented.0, presented.1, names.key_setting, names.origin_setting
    )))
}

fn identity_mismatch(recorded: (String, String), presented: (&str, &str)) -> IdentityMismatch {
    (recorded.0 != presented.0 || recorded.1 != presented.1).then_some(recorded)
}
