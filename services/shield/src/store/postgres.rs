//! The store on PostgreSQL: several ClawShield replicas on one database. Every batch takes the
//! `log_state` row lock first, so batches of all replicas run one after another: a budget
//! reservation, a loop count or a freeze check in one batch sees every batch committed before
//! it, and the decision log gets one dense order. Only the replica holding the sequencer's
//! advisory lock signs checkpoints.

use std::collections::HashMap;

use openexec_log::{leaf_hash, Frontier, Hash, NodeId, StoredCheckpoint};
use openexec_logstore::sequencer::PgSequencer;
use openexec_logstore::store::postgres as logstore;
use openexec_logstore::store::{hash_hex, postgres::frontier_of_head};
use openexec_store::{Commit, CommitError, PgUrl};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;

use super::{
    apply_ops, identity_conflict, now_text, writer_config, Applied, LogHead, LogWrite, NewEntry,
    StoreError, StoreLimits, WriteOp, Writer, Written, DECISION_LEAVES,
};

/// `pg_try_advisory_lock` key of the decision log's sequencer ("cs-seq").
const SEQUENCER_LOCK: i64 = 0x6373_2d73_6571;
/// `pg_advisory_xact_lock` key serialising checkpoint writes ("cs-cp").
const CHECKPOINT_LOCK: i64 = 0x0063_732d_6370;
const ATTEMPTS: usize = 5;

pub(crate) struct PgStore {
    pub(super) read: PgPool,
    pub(super) writer: Writer,
    pub(super) head: watch::Receiver<LogHead>,
    pub(super) log_problem: Option<String>,
    pub(super) sequencer: PgSequencer,
}

impl PgStore {
    pub async fn open(url: &PgUrl, limits: StoreLimits) -> anyhow::Result<PgStore> {
        let (connect, pool) = openexec_store::postgres::open_replica(
            url,
            "clawshield",
            limits,
            "CLAWSHIELD_DB_CONNECT_WAIT_MS",
        )
        .await?;
        let mut own = sqlx::migrate!("./migrations/postgres");
        own.set_ignore_missing(true);
        own.run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate the PostgreSQL database: {e}"))?;
        openexec_logstore::store::shared_migrator(&logstore::MIGRATOR)
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate the PostgreSQL database: {e}"))?;
        let opened = logstore::open_tree(&pool, DECISION_LEAVES)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the decision log: {e}"))?;
        if let Some(p) = &opened.problem {
            tracing::error!(problem = %p, "THE DECISION LOG DOES NOT MATCH ITS LAST SIGNED CHECKPOINT: it will not sign, and /ready fails");
        }
        let (head_tx, head_rx) = watch::channel(LogHead::of(&opened.tree));
        let (writer, queue) = openexec_store::channel(writer_config(ATTEMPTS));
        tokio::spawn(queue.run(PgWriter {
            pool: pool.clone(),
            tree: opened.tree,
            head: head_tx,
        }));
        Ok(PgStore {
            read: pool,
            writer,
            head: head_rx,
            log_problem: opened.problem,
            sequencer: PgSequencer::new(
                connect,
                SEQUENCER_LOCK,
                limits.timeout,
                "clawshield_log_sequencer",
                "the decision log",
            ),
        })
    }

    pub async fn head(&self) -> Result<(u64, Hash), StoreError> {
        logstore::head(&self.read).await
    }

    pub async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        logstore::nodes_on(&self.read, ids).await
    }

    pub async fn latest_checkpoint(
        &self,
    ) -> Result<Option<(StoredCheckpoint, Vec<String>)>, StoreError> {
        logstore::latest_checkpoint(&self.read).await
    }

    pub async fn close(&self) {
        self.writer.close_and_wait().await;
        self.sequencer.release().await;
        self.read.close().await;
    }
}

struct PgWriter {
    pool: PgPool,
    tree: Frontier,
    head: watch::Sender<LogHead>,
}

impl Commit for PgWriter {
    type Op = WriteOp;
    type Out = Written;

    fn alone(op: &WriteOp) -> bool {
        matches!(op, WriteOp::Log(_))
    }

    async fn commit(&mut self, ops: &[WriteOp]) -> Result<Vec<Applied>, CommitError> {
        if let [WriteOp::Log(w)] = ops {
            return Ok(vec![log_write(&self.pool, w).await.map(Written::Changed)]);
        }
        let before = self.tree.clone();
        match batch(&self.pool, ops, &mut self.tree).await {
            Ok(applied) => {
                LogHead::publish(&self.head, &self.tree);
                Ok(applied)
            }
            Err(e) => {
                self.tree = before;
                Err(e)
            }
        }
    }
}

async fn batch(
    pool: &PgPool,
    ops: &[WriteOp],
    tree: &mut Frontier,
) -> Result<Vec<Applied>, CommitError> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    // First: the one write order of all replicas (and the log's head).
    let (size, root, frontier): (i64, String, String) = sqlx::query_as(logstore::HEAD_FOR_UPDATE)
        .fetch_one(&mut *tx)
        .await?;
    if size as u64 != tree.size() {
        *tree = frontier_of_head(size as u64, &root, &frontier)?;
    }
    let now = now_text();
    let (out, entries) = apply_ops!(&mut *tx, ops, &now, insert_proposals)?;
    append(&mut tx, tree, &entries).await?;
    tx.commit().await?;
    Ok(out)
}

async fn append(
    conn: &mut PgConnection,
    tree: &mut Frontier,
    entries: &[NewEntry],
) -> Result<(), CommitError> {
    if entries.is_empty() {
        return Ok(());
    }
    let first = tree.size() as i64;
    let mut nodes = Vec::new();
    for e in entries {
        nodes.extend(
            tree.append(leaf_hash(e.jcs.as_bytes()))
                .map_err(super::corrupt)?,
        );
    }
    // One statement for the batch's entries.
    sqlx::query(
        "INSERT INTO decisions (log_index, decision_id, tenant_id, entry, logged_at) \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])",
    )
    .bind(
        (0..entries.len() as i64)
            .map(|i| first + i)
            .collect::<Vec<i64>>(),
    )
    .bind(
        entries
            .iter()
            .map(|e| e.decision_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        entries
            .iter()
            .map(|e| e.tenant_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(entries.iter().map(|e| e.jcs.clone()).collect::<Vec<_>>())
    .bind(
        entries
            .iter()
            .map(|e| e.logged_at.clone())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *conn)
    .await?;
    let (levels, indices, hashes) = logstore::node_columns(&nodes);
    sqlx::query(
        "WITH n AS (INSERT INTO log_nodes (level, idx, hash) SELECT * FROM UNNEST($1::int[], $2::bigint[], $3::text[])) \
         UPDATE log_state SET size = $4, root = $5, frontier = $6 WHERE id = 1",
    )
    .bind(levels)
    .bind(indices)
    .bind(hashes)
    .bind(tree.size() as i64)
    .bind(hash_hex(&tree.root()))
    .bind(logstore::frontier_text(tree))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn log_write(pool: &PgPool, w: &LogWrite) -> Result<bool, StoreError> {
    Ok(match w {
        LogWrite::Identity {
            origin,
            verifier_key,
        } => {
            let recorded = logstore::bind_identity(pool, origin, verifier_key).await?;
            identity_conflict(recorded, (origin, verifier_key))?;
            true
        }
        LogWrite::Checkpoint(cp) => {
            logstore::add_checkpoint(pool, CHECKPOINT_LOCK, cp, &now_text()).await?;
            true
        }
        LogWrite::Cosignature {
            size,
            witness,
            timestamp,
            line,
        } => logstore::add_cosignature(pool, *size, witness, *timestamp, line).await?,
    })
}

/// Insert new proposals in one statement; the ids inserted (a taken (tenant, nonce) is not).
async fn insert_proposals(
    conn: &mut PgConnection,
    rows: &[&super::ProposalRow],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let text = |f: fn(&super::ProposalRow) -> &str| -> Vec<String> {
        rows.iter().map(|r| f(r).to_string()).collect()
    };
    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "INSERT INTO proposals ({}) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], \
         $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::text[], \
         $11::text[]) ON CONFLICT DO NOTHING RETURNING proposal_id",
        super::PROPOSAL_COLUMNS
    ))
    .bind(text(|r| &r.proposal_id))
    .bind(text(|r| &r.tenant_id))
    .bind(text(|r| &r.nonce))
    .bind(text(|r| &r.agent_id))
    .bind(text(|r| &r.action))
    .bind(text(|r| &r.request_hash))
    .bind(text(|r| &r.status))
    .bind(rows.iter().map(|r| r.version).collect::<Vec<i64>>())
    .bind(rows.iter().map(|r| r.pending_until).collect::<Vec<i64>>())
    .bind(text(|r| &r.created_at))
    .bind(text(|r| &r.doc))
    .fetch_all(&mut *conn)
    .await?;
    Ok(ids.into_iter().collect())
}
