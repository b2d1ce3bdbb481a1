//! A log's storage in PostgreSQL, for N replicas on one database: the head row `log_state`
//! (size, root, frontier) that every replica appends under (`SELECT … FOR UPDATE` in its
//! writer's transaction), tree nodes, checkpoints (stored under a transaction advisory lock
//! every replica takes), witness cosignatures and the log's identity.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use openexec_log::{Frontier, Hash, NodeId, StoredCheckpoint};
use sqlx::PgPool;

use super::tree_check::{LeafSource, Opened, TreeCheck};
use super::{
    checkpoint_row, checkpoint_rule, corrupt, hash_from_hex, hash_hex, identity_mismatch, node_row,
    unavailable, IdentityMismatch, StoreError, LATEST_CHECKPOINT,
};

/// The log tables' DDL for a new service on PostgreSQL (versions from 1000 on; see
/// [`super::sqlite::MIGRATOR`]). OpenExec keeps its historical migrations 0001–0004.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The head row, as [`frontier_of_head`] reads it.
pub const HEAD: &str = "SELECT size, root, frontier FROM log_state WHERE id = 1";

/// The head row under its row lock, held to the writer's commit: one order across replicas.
pub const HEAD_FOR_UPDATE: &str =
    "SELECT size, root, frontier FROM log_state WHERE id = 1 FOR UPDATE";

/// Recompute the tree from the records `source` reads, in one consistent snapshot, and check
/// it against the last signed checkpoint and the head row (filling in the frontier of a head
/// row written before it had one).
pub async fn open_tree(pool: &PgPool, source: LeafSource) -> Result<Opened, StoreError> {
    let mut tx = pool.begin().await.map_err(unavailable)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    let last = latest_checkpoint_on(&mut *tx).await?;
    // Every node is stored with its record on this backend: none is ever written here.
    let mut check = TreeCheck::new(source, last, u64::MAX);
    {
        let mut rows = sqlx::query(source.query).fetch(&mut *tx);
        while let Some(r) = rows.try_next().await.map_err(unavailable)? {
            let go_on = check.push_row(&r)?;
            if !go_on {
                break;
            }
        }
    }
    if let Some(size) = check.finish() {
        let stored: Vec<(i64, String)> = sqlx::query_as(
            "SELECT idx, hash FROM log_nodes WHERE level = 0 AND idx < $1 ORDER BY idx",
        )
        .bind(size as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        check.explain(&stored);
    }
    let (size, root, frontier): (i64, String, String) = sqlx::query_as(HEAD)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
    let recomputed = (
        check.tree.size(),
        hash_hex(&check.tree.root()),
        frontier_text(&check.tree),
    );
    // A head row from before the frontier column has none yet: filled in below.
    let backfill = frontier.is_empty() && size > 0;
    let stored_frontier = if backfill { &recomputed.2 } else { &frontier };
    if check.problem.is_none()
        && (size as u64, &root, stored_frontier) != (recomputed.0, &recomputed.1, &recomputed.2)
    {
        check.problem = Some(format!(
            "the log's head row says size {size} root {root}, but its {} entries give root {}",
            recomputed.0, recomputed.1
        ));
    }
    tx.rollback().await.map_err(unavailable)?;
    if backfill && check.problem.is_none() {
        sqlx::query(
            "UPDATE log_state SET frontier = $1 WHERE id = 1 AND size = $2 AND frontier = ''",
        )
        .bind(&recomputed.2)
        .bind(size)
        .execute(pool)
        .await
        .map_err(unavailable)?;
    }
    Ok(Opened {
        tree: check.tree,
        problem: check.problem,
    })
}

/// The committed head: size and root.
pub async fn head(pool: &PgPool) -> Result<(u64, Hash), StoreError> {
    let (size, root): (i64, String) =
        sqlx::query_as("SELECT size, root FROM log_state WHERE id = 1")
            .fetch_one(pool)
            .await
            .map_err(unavailable)?;
    let size = u64::try_from(size).map_err(|_| corrupt(format!("log_state.size {size}")))?;
    Ok((size, hash_from_hex(&root)?))
}

/// The latest stored checkpoint.
pub async fn latest_checkpoint_on<'c, E>(exec: E) -> Result<Option<StoredCheckpoint>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let row = sqlx::query_as(LATEST_CHECKPOINT)
        .fetch_optional(exec)
        .await
        .map_err(unavailable)?;
    checkpoint_row(row)
}

/// The latest stored checkpoint and the cosignature lines stored for it, by witness.
pub async fn latest_checkpoint(
    pool: &PgPool,
) -> Result<Option<(StoredCheckpoint, Vec<String>)>, StoreError> {
    let Some(cp) = latest_checkpoint_on(pool).await? else {
        return Ok(None);
    };
    let lines: Vec<String> =
        sqlx::query_scalar("SELECT line FROM log_cosignatures WHERE size = $1 ORDER BY witness")
            .bind(cp.size as i64)
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
    Ok(Some((cp, lines)))
}

/// Nodes by id: a parameterised index lookup per id (the LIMIT keeps the planner from turning
/// the lateral join into a scan of the whole table, e.g. while its statistics are stale).
pub const NODES_BY_ID: &str =
    "SELECT n.level, n.idx, n.hash FROM UNNEST($1::int[], $2::bigint[]) AS u(l, i) \
     CROSS JOIN LATERAL (SELECT level, idx, hash FROM log_nodes \
     WHERE level = u.l AND idx = u.i LIMIT 1) n";

/// Nodes by id (those that exist).
pub async fn nodes_on<'c, E>(exec: E, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let levels: Vec<i32> = ids.iter().map(|n| i32::from(n.level)).collect();
    let idxs: Vec<i64> = ids.iter().map(|n| n.index as i64).collect();
    let rows: Vec<(i32, i64, String)> = sqlx::query_as(NODES_BY_ID)
        .bind(levels)
        .bind(idxs)
        .fetch_all(exec)
        .await
        .map_err(unavailable)?;
    rows.into_iter()
        .map(|(l, i, h)| node_row(i64::from(l), i, &h))
        .collect()
}

/// The frontier as `log_state.frontier` keeps it: the hex of its hashes, concatenated.
pub fn frontier_text(tree: &Frontier) -> String {
    tree.hashes().iter().map(hash_hex).collect()
}

/// The nodes `Frontier::append` handed back as the three arrays an `UNNEST($a::int[],
/// $b::bigint[], $c::text[])` into `log_nodes (level, idx, hash)` binds.
pub fn node_columns(nodes: &[(NodeId, Hash)]) -> (Vec<i32>, Vec<i64>, Vec<String>) {
    (
        nodes.iter().map(|(n, _)| i32::from(n.level)).collect(),
        nodes.iter().map(|(n, _)| n.index as i64).collect(),
        nodes.iter().map(|(_, h)| hash_hex(h)).collect(),
    )
}

/// The frontier of the head row, checked against the head's root: `Corrupt` when it does not
/// read back or does not give the root.
pub fn frontier_of_head(size: u64, root: &str, text: &str) -> Result<Frontier, StoreError> {
    if !text.is_ascii() || !text.len().is_multiple_of(64) {
        return Err(corrupt(format!(
            "log_state.frontier has {} characters",
            text.len()
        )));
    }
    let hashes = (0..text.len() / 64)
        .map(|i| hash_from_hex(&text[i * 64..(i + 1) * 64]))
        .collect::<Result<Vec<_>, _>>()?;
    let tree = Frontier::from_parts(size, hashes).map_err(corrupt)?;
    if hash_hex(&tree.root()) != root {
        return Err(corrupt(format!(
            "log_state at size {size}: its frontier does not give its root"
        )));
    }
    Ok(tree)
}

/// Store a witness's cosignature line made at `timestamp` for a checkpoint, unless the stored
/// line of that witness and size is as new or newer (one statement: atomic against every
/// replica); whether it stored it.
pub async fn add_cosignature(
    pool: &PgPool,
    size: u64,
    witness: &str,
    timestamp: u64,
    line: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO log_cosignatures (size, witness, line, cosigned_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (size, witness) DO UPDATE SET line = excluded.line, cosigned_at = excluded.cosigned_at \
         WHERE excluded.cosigned_at > log_cosignatures.cosigned_at",
    )
    .bind(size as i64)
    .bind(witness)
    .bind(line)
    .bind(super::cosigned_at(timestamp))
    .execute(pool)
    .await
    .map_err(unavailable)?;
    Ok(done.rows_affected() == 1)
}

/// Record the log's identity on first use; the recorded one when another was presented.
pub async fn bind_identity(
    pool: &PgPool,
    origin: &str,
    verifier_key: &str,
) -> Result<IdentityMismatch, StoreError> {
    sqlx::query(
        "INSERT INTO log_identity (id, origin, verifier_key) VALUES (1, $1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(origin)
    .bind(verifier_key)
    .execute(pool)
    .await
    .map_err(unavailable)?;
    let recorded: (String, String) =
        sqlx::query_as("SELECT origin, verifier_key FROM log_identity WHERE id = 1")
            .fetch_one(pool)
            .await
            .map_err(unavailable)?;
    Ok(identity_mismatch(recorded, (origin, verifier_key)))
}

/// Store a checkpoint, refusing (under the transaction advisory lock `lock`, which every
/// replica takes) a smaller size or the same size with another root.
pub async fn add_checkpoint(
    pool: &PgPool,
    lock: i64,
    cp: &StoredCheckpoint,
    now: &str,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(unavailable)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    let last = latest_checkpoint_on(&mut *tx).await?;
    if !checkpoint_rule(last.as_ref(), cp)? {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO log_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(cp.size as i64)
    .bind(hash_hex(&cp.root))
    .bind(&cp.note)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_rows_frontier_round_trips_and_must_give_its_root() {
        let mut tree = Frontier::empty();
        for i in 0..1234u32 {
            tree.append(openexec_log::leaf_hash(&i.to_be_bytes()))
                .unwrap();
        }
        let text = frontier_text(&tree);
        let root = hash_hex(&tree.root());
        let back = frontier_of_head(tree.size(), &root, &text).unwrap();
        assert_eq!((back.size(), back.root()), (tree.size(), tree.root()));
        let corrupt = |r: Result<Frontier, StoreError>| matches!(r, Err(StoreError::Corrupt(_)));
        assert!(corrupt(frontier_of_head(1234, &hash_hex(&[0; 32]), &text)));
        let mut flipped = text.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(corrupt(frontier_of_head(1234, &root, &flipped)));
        assert!(corrupt(frontier_of_head(
            1234,
            &root,
            &text[..text.len() - 64]
        )));
        assert!(corrupt(frontier_of_head(1235, &root, &text)));
        assert!(corrupt(frontier_of_head(1234, &root, "zz")));
        assert!(frontier_of_head(0, &hash_hex(&openexec_log::EMPTY_ROOT), "").is_ok());
    }
}
