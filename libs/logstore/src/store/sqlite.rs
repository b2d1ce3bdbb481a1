//! A log's storage in SQLite: tree nodes, checkpoints, witness cosignatures and the log's
//! identity, as statements over the service's connection (its writer's, inside the writer's
//! own transaction where it appends; its read pool for the rest).

use std::collections::HashMap;

use futures_util::TryStreamExt;
use openexec_log::{Frontier, Hash, NodeId, StoredCheckpoint};
use serde_json::Value;
use sqlx::SqliteConnection;

use super::tree_check::{LeafSource, Opened, TreeCheck};
use super::{
    checkpoint_row, checkpoint_rule, frontier_from, hash_hex, identity_mismatch, node_row,
    unavailable, IdentityMismatch, StoreError, LATEST_CHECKPOINT,
};

/// The log tables' DDL for a new service on SQLite (versions from 1000 on, disjoint from a
/// service's own; run both migrators with `set_ignore_missing(true)`). OpenExec creates the
/// same tables with its historical migrations 0001–0004 and does not run this one.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Recompute the tree from the records `source` reads (writing any node that is missing, e.g.
/// for a database that predates the log), and check it against the last signed checkpoint.
pub async fn open_tree(
    conn: &mut SqliteConnection,
    source: LeafSource,
) -> Result<Opened, StoreError> {
    let last = latest_checkpoint_on(&mut *conn).await?;
    let stored_nodes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_nodes WHERE level = 0")
        .fetch_one(&mut *conn)
        .await
        .map_err(unavailable)?;
    let mut check = TreeCheck::new(source, last, stored_nodes as u64);
    // Streamed: a log of millions of records is read once, never held in memory.
    let mut rows = sqlx::query(source.query).fetch(&mut *conn);
    while let Some(r) = rows.try_next().await.map_err(unavailable)? {
        let go_on = check.push_row(&r)?;
        if !go_on {
            break;
        }
    }
    drop(rows);
    if let Some(size) = check.finish() {
        let stored: Vec<(i64, String)> = sqlx::query_as(
            "SELECT idx, hash FROM log_nodes WHERE level = 0 AND idx < ? ORDER BY idx",
        )
        .bind(size as i64)
        .fetch_all(&mut *conn)
        .await
        .map_err(unavailable)?;
        check.explain(&stored);
    }
    if check.problem.is_none() && !check.new_nodes.is_empty() {
        insert_nodes(conn, &check.new_nodes).await?;
    }
    Ok(Opened {
        tree: check.tree,
        problem: check.problem,
    })
}

/// The stored nodes of a frontier at `size` (another process appended since we last looked).
pub async fn load_frontier(conn: &mut SqliteConnection, size: u64) -> Result<Frontier, StoreError> {
    let got = nodes_on(conn, &Frontier::node_ids(size)).await?;
    frontier_from(size, &got)
}

fn ids_json(ids: &[NodeId]) -> String {
    Value::Array(
        ids.iter()
            .map(|n| serde_json::json!([n.level, n.index]))
            .collect(),
    )
    .to_string()
}

/// Nodes by id (those that exist).
pub async fn nodes_on<'c, E>(exec: E, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT level, idx, hash FROM log_nodes \
         WHERE (level, idx) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))",
    )
    .bind(ids_json(ids))
    .fetch_all(exec)
    .await
    .map_err(unavailable)?;
    rows.into_iter()
        .map(|(l, i, h)| node_row(l, i, &h))
        .collect()
}

/// The JSON rows of [`INSERT_NODES`]' one parameter.
pub fn nodes_json(nodes: &[(NodeId, Hash)]) -> String {
    Value::Array(
        nodes
            .iter()
            .map(|(n, h)| serde_json::json!([n.level, n.index, hash_hex(h)]))
            .collect(),
    )
    .to_string()
}

/// The nodes `Frontier::append` handed back, in one statement over [`nodes_json`] (what a
/// writer runs in the transaction that stores the records).
pub const INSERT_NODES: &str = "INSERT INTO log_nodes (level, idx, hash) \
     SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?)";

async fn insert_nodes(
    conn: &mut SqliteConnection,
    nodes: &[(NodeId, Hash)],
) -> Result<(), StoreError> {
    for chunk in nodes.chunks(10_000) {
        sqlx::query(INSERT_NODES)
            .bind(nodes_json(chunk))
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

/// The latest stored checkpoint.
pub async fn latest_checkpoint_on<'c, E>(exec: E) -> Result<Option<StoredCheckpoint>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let row = sqlx::query_as(LATEST_CHECKPOINT)
        .fetch_optional(exec)
        .await
        .map_err(unavailable)?;
    checkpoint_row(row)
}

/// The cosignature lines stored for the checkpoint of `size`, by witness.
pub async fn cosignatures_on<'c, E>(exec: E, size: u64) -> Result<Vec<String>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    sqlx::query_scalar("SELECT line FROM log_cosignatures WHERE size = ? ORDER BY witness")
        .bind(size as i64)
        .fetch_all(exec)
        .await
        .map_err(unavailable)
}

/// Store a signed checkpoint, refusing anything that would contradict an earlier one: a smaller
/// size, or the same size with another root (in one `BEGIN IMMEDIATE` transaction: against
/// every process on the file).
pub async fn add_checkpoint(
    conn: &mut SqliteConnection,
    cp: &StoredCheckpoint,
    now: &str,
) -> Result<(), StoreError> {
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    let r = async {
        let last = latest_checkpoint_on(&mut *conn).await?;
        if !checkpoint_rule(last.as_ref(), cp)? {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO log_checkpoints (size, root, note, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(cp.size as i64)
        .bind(hash_hex(&cp.root))
        .bind(&cp.note)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
    .await;
    let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let c = sqlx::query(end)
        .execute(&mut *conn)
        .await
        .map_err(unavailable);
    r.and(c.map(|_| ()))
}

/// Store a witness's cosignature line made at `timestamp` for a checkpoint, unless the stored
/// line of that witness and size is as new or newer (one statement: atomic); whether it stored it.
pub async fn add_cosignature(
    conn: &mut SqliteConnection,
    size: u64,
    witness: &str,
    timestamp: u64,
    line: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(COSIGNATURE_UPSERT)
        .bind(size as i64)
        .bind(witness)
        .bind(line)
        .bind(super::cosigned_at(timestamp))
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    Ok(done.rows_affected() == 1)
}

/// Keep the newest line per witness and checkpoint: an update only for a newer timestamp (an
/// equal or older one affects no row).
const COSIGNATURE_UPSERT: &str =
    "INSERT INTO log_cosignatures (size, witness, line, cosigned_at) VALUES (?, ?, ?, ?) \
     ON CONFLICT (size, witness) DO UPDATE SET line = excluded.line, cosigned_at = excluded.cosigned_at \
     WHERE excluded.cosigned_at > log_cosignatures.cosigned_at";

/// Record the log's identity on first use; the recorded one when another was presented.
pub async fn bind_identity(
    conn: &mut SqliteConnection,
    origin: &str,
    verifier_key: &str,
) -> Result<IdentityMismatch, StoreError> {
    sqlx::query(
        "INSERT INTO log_identity (id, origin, verifier_key) VALUES (1, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(origin)
    .bind(verifier_key)
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    let recorded: (String, String) =
        sqlx::query_as("SELECT origin, verifier_key FROM log_identity WHERE id = 1")
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
    Ok(identity_mismatch(recorded, (origin, verifier_key)))
}
