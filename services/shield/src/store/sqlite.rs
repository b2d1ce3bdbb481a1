//! The store on SQLite (WAL, synchronous FULL): one machine. Each batch is one `BEGIN IMMEDIATE`
//! transaction on the writer's connection, so every process on the file sees one write order.
//! The writer runs on a thread (`clawshield-writer`) and a runtime of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openexec_log::{leaf_hash, Frontier, Hash, NodeId, StoredCheckpoint};
use openexec_logstore::sequencer::FileSequencer;
use openexec_logstore::store::sqlite as logstore;
use openexec_store::{Commit, CommitError, PoolLimits};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::watch;

use super::{
    apply_ops, identity_conflict, now_text, unavailable, writer_config, Applied, LogHead, LogWrite,
    NewEntry, StoreError, WriteOp, Writer, Written, DECISION_LEAVES,
};

pub(crate) struct SqliteStore {
    pub(super) read: SqlitePool,
    pub(super) writer: Writer,
    pub(super) head: watch::Receiver<LogHead>,
    pub(super) log_problem: Option<String>,
    pub(super) sequencer: FileSequencer,
}

impl SqliteStore {
    pub async fn open(path: &Path, busy_timeout: Duration) -> anyhow::Result<SqliteStore> {
        openexec_store::sqlite::prepare(path)?;
        let opts = openexec_store::sqlite::options(path, busy_timeout);
        // The writer never checkpoints the WAL inside a commit: `checkpoint_loop` does, beside it.
        let writer_opts = openexec_store::sqlite::writer_options(path, busy_timeout);
        let mut conn = SqliteConnection::connect_with(&writer_opts)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open database {}: {e}", path.display()))?;
        let mut own = sqlx::migrate!("./migrations/sqlite");
        own.set_ignore_missing(true);
        own.run(&mut conn)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate database {}: {e}", path.display()))?;
        openexec_logstore::store::shared_migrator(&logstore::MIGRATOR)
            .run(&mut conn)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate database {}: {e}", path.display()))?;
        let opened = logstore::open_tree(&mut conn, DECISION_LEAVES)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the decision log: {e}"))?;
        if let Some(p) = &opened.problem {
            tracing::error!(problem = %p, "THE DECISION LOG DOES NOT MATCH ITS LAST SIGNED CHECKPOINT: it will not sign, and /ready fails");
        }
        let (head_tx, head_rx) = watch::channel(LogHead::of(&opened.tree));
        let (writer, queue) = openexec_store::channel(writer_config(1));
        // The writer gets a thread and a runtime of its own (as OpenExec's does): a batch is
        // several statements per proposal, each a round trip to sqlx's SQLite worker thread,
        // and on the shared runtime every one of them waited behind request tasks and policy
        // evaluations before the writer saw its answer. Here they run back to back.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start the writer: {e}"))?;
        let sqlite_writer = SqliteWriter {
            conn,
            tree: opened.tree,
            head: head_tx,
        };
        std::thread::Builder::new()
            .name("clawshield-writer".into())
            .spawn(move || rt.block_on(queue.run(sqlite_writer)))
            .map_err(|e| anyhow::anyhow!("cannot start the writer thread: {e}"))?;
        let read = openexec_store::sqlite::pool(
            path,
            opts,
            PoolLimits {
                size: 4,
                min: 1,
                timeout: Duration::from_secs(30),
            },
        )
        .await?;
        tokio::spawn(openexec_store::sqlite::checkpoint_loop(
            read.clone(),
            "clawshield_store_seconds",
        ));
        Ok(SqliteStore {
            read,
            writer,
            head: head_rx,
            log_problem: opened.problem,
            sequencer: FileSequencer::new(
                PathBuf::from(format!("{}.sequencer.lock", path.display())),
                "clawshield_log_sequencer",
            ),
        })
    }

    pub async fn head(&self) -> Result<(u64, Hash), StoreError> {
        let mut c = self.read.acquire().await.map_err(unavailable)?;
        let size: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(log_index) + 1, 0) FROM decisions")
            .fetch_one(&mut *c)
            .await
            .map_err(unavailable)?;
        let f = logstore::load_frontier(&mut c, size as u64).await?;
        Ok((size as u64, f.root()))
    }

    pub async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        logstore::nodes_on(&self.read, ids).await
    }

    pub async fn latest_checkpoint(
        &self,
    ) -> Result<Option<(StoredCheckpoint, Vec<String>)>, StoreError> {
        let Some(cp) = logstore::latest_checkpoint_on(&self.read).await? else {
            return Ok(None);
        };
        let lines = logstore::cosignatures_on(&self.read, cp.size).await?;
        Ok(Some((cp, lines)))
    }

    pub async fn close(&self) {
        self.writer.close_and_wait().await;
        self.read.close().await;
        self.sequencer.release();
    }
}

struct SqliteWriter {
    conn: SqliteConnection,
    tree: Frontier,
    head: watch::Sender<LogHead>,
}

impl Commit for SqliteWriter {
    type Op = WriteOp;
    type Out = Written;

    fn alone(op: &WriteOp) -> bool {
        matches!(op, WriteOp::Log(_))
    }

    async fn commit(&mut self, ops: &[WriteOp]) -> Result<Vec<Applied>, CommitError> {
        if let [WriteOp::Log(w)] = ops {
            return Ok(vec![log_write(&mut self.conn, w)
                .await
                .map(Written::Changed)]);
        }
        let before = self.tree.clone();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut self.conn)
            .await?;
        let r = batch(&mut self.conn, ops, &mut self.tree).await;
        let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let c = sqlx::query(end).execute(&mut self.conn).await;
        match (r, c) {
            (Ok(applied), Ok(_)) => {
                LogHead::publish(&self.head, &self.tree);
                Ok(applied)
            }
            (Err(e), _) => {
                self.tree = before;
                Err(e)
            }
            (Ok(_), Err(e)) => {
                self.tree = before;
                Err(e.into())
            }
        }
    }

    async fn finish(self) {
        let _ = self.conn.close().await;
    }
}

async fn batch(
    conn: &mut SqliteConnection,
    ops: &[WriteOp],
    tree: &mut Frontier,
) -> Result<Vec<Applied>, CommitError> {
    let now = now_text();
    let (out, entries) = apply_ops!(&mut *conn, ops, &now, insert_proposals)?;
    append(conn, tree, &entries).await?;
    Ok(out)
}

/// Append entries to the decision log: rows, tree nodes (another process on the file may have
/// appended since our last commit: the frontier is reloaded then).
async fn append(
    conn: &mut SqliteConnection,
    tree: &mut Frontier,
    entries: &[NewEntry],
) -> Result<(), CommitError> {
    if entries.is_empty() {
        return Ok(());
    }
    let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(log_index) + 1, 0) FROM decisions")
        .fetch_one(&mut *conn)
        .await?;
    if next as u64 != tree.size() {
        *tree = logstore::load_frontier(conn, next as u64).await?;
    }
    let mut nodes = Vec::new();
    let mut rows = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        nodes.extend(
            tree.append(leaf_hash(e.jcs.as_bytes()))
                .map_err(super::corrupt)?,
        );
        rows.push(serde_json::json!([
            next + i as i64,
            e.decision_id,
            e.tenant_id,
            e.jcs,
            e.logged_at
        ]));
    }
    // One statement for the batch's entries (as OpenExec writes its receipts).
    sqlx::query(
        "INSERT INTO decisions (log_index, decision_id, tenant_id, entry, logged_at) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each($1)",
    )
    .bind(serde_json::Value::Array(rows).to_string())
    .execute(&mut *conn)
    .await?;
    sqlx::query(logstore::INSERT_NODES)
        .bind(logstore::nodes_json(&nodes))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn log_write(conn: &mut SqliteConnection, w: &LogWrite) -> Result<bool, StoreError> {
    Ok(match w {
        LogWrite::Identity {
            origin,
            verifier_key,
        } => {
            let recorded = logstore::bind_identity(conn, origin, verifier_key).await?;
            identity_conflict(recorded, (origin, verifier_key))?;
            true
        }
        LogWrite::Checkpoint(cp) => {
            logstore::add_checkpoint(conn, cp, &now_text()).await?;
            true
        }
        LogWrite::Cosignature {
            size,
            witness,
            timestamp,
            line,
        } => logstore::add_cosignature(conn, *size, witness, *timestamp, line).await?,
    })
}

/// Insert new proposals in one statement; the ids inserted (a taken (tenant, nonce) is not).
async fn insert_proposals(
    conn: &mut SqliteConnection,
    rows: &[&super::ProposalRow],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let json = serde_json::Value::Array(rows.iter().map(|r| super::proposal_json(r)).collect());
    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "INSERT INTO proposals ({}) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, \
         value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10 \
         FROM json_each($1) WHERE true ON CONFLICT DO NOTHING RETURNING proposal_id",
        super::PROPOSAL_COLUMNS
    ))
    .bind(json.to_string())
    .fetch_all(&mut *conn)
    .await?;
    Ok(ids.into_iter().collect())
}
