//! The store on SQLite (WAL, synchronous FULL): one machine, one or more processes on one file.
//!
//! The writer has a thread and a runtime of its own and commits batches in two round trips
//! (each kind of write is one statement over a JSON array of rows). WAL checkpoints run beside
//! it. Owner liveness is an flock on `<db>.owners/<owner>.lock`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openexec_store::sqlite::WalSync;
use openexec_store::{Commit, CommitError, PoolLimits};
use serde_json::Value;
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{oneshot, watch};

use openexec_log::{leaf_hash, Frontier, Hash, NodeId, StoredCheckpoint};

use super::tree_check::{
    checkpoint_row, frontier_from, leaf_data, LogHead, LATEST_CHECKPOINT, RECEIPT_LEAVES,
};
use super::{
    all_applied, assign_indices, claim_row, log_written, now_text, receipts_to_log, settled_with,
    stored_receipt, unavailable, won, writer_config, Applied, Batch, Claim, ClaimResult, ClaimRow,
    LogWrite, NewReceipt, StoreError, StoredReceipt, WriteOp, Writer, Written, CLAIM_ROW_COLUMNS,
};
use openexec_logstore::store::sqlite as logstore;

/// The store on SQLite.
pub(crate) struct SqliteStore {
    /// This process's identity in `executions.owner`.
    owner: String,
    /// `<db>.owners/`: one lock file per live process, held (flock) for as long as it runs, so
    /// another process can tell a crashed owner from a live one on the same database.
    owners_dir: PathBuf,
    _owner_lock: std::fs::File,
    /// The sequencer role: an flock on `<db>.owners/sequencer.lock`.
    sequencer: openexec_logstore::sequencer::FileSequencer,
    read: SqlitePool,
    /// Closed by [`SqliteStore::close`], which waits until the writer thread has committed
    /// everything and closed its connection.
    writer: Writer,
    /// The receipt log's committed head, updated after every commit.
    head: watch::Receiver<LogHead>,
    /// Why the stored log cannot be trusted (found at start-up), if it cannot.
    log_problem: Option<String>,
    /// The WAL's sync (the writer's sync stage uses it; so does a read that finds a receipt
    /// not yet known durable).
    wal: Arc<WalSync>,
    /// How many log entries are known to be on disk: every receipt below this index is durable.
    durable: Arc<AtomicU64>,
}

impl SqliteStore {
    /// Open (creating if needed) and migrate the database.
    pub async fn open(path: &Path, busy_timeout: Duration) -> anyhow::Result<SqliteStore> {
        let path = path.to_path_buf();
        // Receipts, claims and the log are the operator's: created 0700/0600 (WAL files follow).
        openexec_store::sqlite::prepare(&path)?;
        let opts = openexec_store::sqlite::options(&path, busy_timeout);
        let owners_dir = PathBuf::from(format!("{}.owners", path.display()));
        let (owner, owner_lock) = take_owner_lock(&owners_dir)?;

        // The writer gets a thread and a runtime of its own: its statements run back to back,
        // never queued behind request tasks on the busy shared runtime (which made each commit
        // wait several scheduling rounds under load).
        let (writer, queue) = openexec_store::channel(writer_config(1));
        let (ready_tx, ready_rx) = oneshot::channel::<anyhow::Result<Option<String>>>();
        let (head_tx, head_rx) = watch::channel(LogHead {
            size: 0,
            root: Frontier::empty().root(),
        });
        // The writer never checkpoints: that work (copying WAL pages into the database file and
        // syncing it) runs beside it in `checkpoint_loop`, off the path of every commit.
        // Commits are pipelined: the writer commits at synchronous=NORMAL and its sync stage
        // fdatasyncs the WAL before any write of a batch is answered (openexec_store::writer).
        let writer_opts = openexec_store::sqlite::pipelined_writer_options(&path, busy_timeout);
        let wal = Arc::new(WalSync::new(&path));
        let durable = Arc::new(AtomicU64::new(0));
        let (writer_wal, writer_durable) = (wal.clone(), durable.clone());
        let writer_owner = owner.clone();
        let writer_path = path.clone();
        std::thread::Builder::new()
            .name("openexec-writer".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!("cannot start the writer: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let opened = async {
                        let mut conn =
                            SqliteConnection::connect_with(&writer_opts)
                                .await
                                .map_err(|e| {
                                    anyhow::anyhow!(
                                        "cannot open database {}: {e}",
                                        writer_path.display()
                                    )
                                })?;
                        sqlx::migrate!("./migrations/sqlite")
                            .run(&mut conn)
                            .await
                            .map_err(|e| {
                                anyhow::anyhow!(
                                    "cannot migrate database {}: {e}",
                                    writer_path.display()
                                )
                            })?;
                        let opened = logstore::open_tree(&mut conn, RECEIPT_LEAVES)
                            .await
                            .map_err(|e| anyhow::anyhow!("cannot read the receipt log: {e}"))?;
                        anyhow::Ok((conn, opened))
                    }
                    .await;
                    match opened {
                        Ok((conn, opened)) => {
                            head_tx.send_replace(LogHead {
                                size: opened.tree.size(),
                                root: opened.tree.root(),
                            });
                            // What opening read was committed before, by whoever wrote it; the
                            // WAL is synced once more before the store says so.
                            if let Err(e) = writer_wal.sync() {
                                if e.kind() != std::io::ErrorKind::NotFound {
                                    let _ = ready_tx.send(Err(anyhow::anyhow!(
                                        "cannot sync {}: {e}",
                                        writer_wal.path().display()
                                    )));
                                    return;
                                }
                            }
                            writer_durable.store(opened.tree.size(), Ordering::SeqCst);
                            let _ = ready_tx.send(Ok(opened.problem));
                            queue
                                .run(SqliteWriter {
                                    conn,
                                    owner: writer_owner,
                                    tree: opened.tree,
                                    head: head_tx,
                                    wal: writer_wal,
                                    durable: writer_durable,
                                    committed: None,
                                })
                                .await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| anyhow::anyhow!("cannot start the writer thread: {e}"))?;
        let log_problem = ready_rx
            .await
            .map_err(|_| anyhow::anyhow!("the writer thread ended while opening the database"))??;
        if let Some(p) = &log_problem {
            tracing::error!(problem = %p, "THE RECEIPT LOG DOES NOT MATCH ITS LAST SIGNED CHECKPOINT: it will not sign, and /ready fails");
        }
        // Reads wait for a pooled connection up to sqlx's default of 30 s, as they always did.
        let read = openexec_store::sqlite::pool(
            &path,
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
            "openexec_store_seconds",
        ));
        let sequencer_path = owners_dir.join("sequencer.lock");
        Ok(SqliteStore {
            owner,
            owners_dir,
            _owner_lock: owner_lock,
            sequencer: openexec_logstore::sequencer::FileSequencer::new(
                sequencer_path,
                "openexec_log_sequencer",
            ),
            read,
            writer,
            head: head_rx,
            log_problem,
            wal,
            durable,
        })
    }

    /// Make sure the receipt at `index` (read from the file) is on disk before it is shown to
    /// anyone: below the durable mark it is; above, it may be a commit still being synced (by
    /// this process's writer or another process's), so the WAL is synced here first.
    async fn ensure_durable(&self, index: u64) -> Result<(), StoreError> {
        if index < self.durable.load(Ordering::SeqCst) {
            return Ok(());
        }
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || wal.sync())
            .await
            .map_err(|e| unavailable(format!("the WAL sync task failed: {e}")))?
            .map_err(|e| unavailable(format!("cannot sync the database's WAL: {e}")))?;
        self.durable.fetch_max(index + 1, Ordering::SeqCst);
        Ok(())
    }

    /// The receipt log's committed head (size and root), as of the last commit.
    pub fn log_head(&self) -> LogHead {
        *self.head.borrow()
    }

    /// A receiver that changes whenever a commit moves the log's head.
    pub fn watch_log_head(&self) -> watch::Receiver<LogHead> {
        self.head.clone()
    }

    /// Why the stored log does not match its last checkpoint, if it does not (found at start-up).
    pub fn log_problem(&self) -> Option<String> {
        self.log_problem.clone()
    }

    /// Whether this process may sign the receipt log's checkpoints now: the one process on the
    /// file that holds an exclusive flock on `<db>.owners/sequencer.lock` (released by the
    /// kernel when it dies, so another takes over at its next try). Storing a checkpoint still
    /// re-checks, under `BEGIN IMMEDIATE`, that it contradicts none.
    pub async fn sequencer(&self) -> Result<bool, StoreError> {
        self.sequencer.try_hold()
    }

    /// Leaf data of entries [start, end), with each entry's `logged_at`.
    pub async fn log_entries(
        &self,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, Vec<u8>, String)>, StoreError> {
        let rows: Vec<(i64, String, String, String, String)> = self
            .read(
                sqlx::query_as(
                    "SELECT log_index, receipt, signature, key_id, created_at FROM receipts \
                     WHERE log_index >= ? AND log_index < ? ORDER BY log_index",
                )
                .bind(start as i64)
                .bind(end as i64)
                .fetch_all(&self.read),
            )
            .await?;
        if let Some((last, ..)) = rows.last() {
            self.ensure_durable(*last as u64).await?;
        }
        rows.into_iter()
            .map(|(i, r, s, k, at)| Ok((i as u64, leaf_data(&r, &s, &k, &at)?, at)))
            .collect()
    }

    async fn read<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let r = f.await.map_err(unavailable);
        metrics::histogram!("openexec_store_seconds", "op" => "read")
            .record(started.elapsed().as_secs_f64());
        r
    }

    /// The claim of (tenant, nonce), with its outcome receipt if it has one.
    pub async fn lookup(
        &self,
        tenant_id: &str,
        nonce: &str,
    ) -> Result<Option<ClaimRow>, StoreError> {
        let row = self
            .read(
                sqlx::query(&format!(
                    "SELECT {CLAIM_ROW_COLUMNS} FROM executions e \
                     LEFT JOIN receipts r ON r.receipt_hash = e.receipt_hash \
                     WHERE e.tenant_id = ? AND e.nonce = ?"
                ))
                .bind(tenant_id)
                .bind(nonce)
                .fetch_optional(&self.read),
            )
            .await?;
        let row = row.map(|r| claim_row(&r)).transpose()?;
        if let Some(r) = row.as_ref().and_then(|c| c.receipt.as_ref()) {
            self.ensure_durable(r.log_index).await?;
        }
        Ok(row)
    }

    /// Claims whose handler never reported back (the process died mid-run).
    pub async fn running(&self) -> Result<Vec<ClaimRow>, StoreError> {
        let rows = self
            .read(
                sqlx::query(
                    "SELECT tenant_id, nonce, exec_id, owner, status, template, NULL AS log_index FROM executions \
                     WHERE status = 'running' ORDER BY claimed_at",
                )
                .fetch_all(&self.read),
            )
            .await?;
        rows.iter().map(claim_row).collect()
    }

    /// The receipt of an execution's outcome if it ran, else its latest rejection.
    pub async fn receipt_for(&self, exec_id: &str) -> Result<Option<StoredReceipt>, StoreError> {
        let row = self
            .read(
                sqlx::query(
                    "SELECT r.* FROM receipts r WHERE r.exec_id = ? ORDER BY \
                     (r.receipt_hash = (SELECT receipt_hash FROM executions WHERE exec_id = ?)) DESC, \
                     r.log_index DESC LIMIT 1",
                )
                .bind(exec_id)
                .bind(exec_id)
                .fetch_optional(&self.read),
            )
            .await?;
        self.durable_receipt(row.map(|r| stored_receipt(&r, "")).transpose()?)
            .await
    }

    /// `r` once it is known durable ([`SqliteStore::ensure_durable`]).
    async fn durable_receipt(
        &self,
        r: Option<StoredReceipt>,
    ) -> Result<Option<StoredReceipt>, StoreError> {
        if let Some(r) = &r {
            self.ensure_durable(r.log_index).await?;
        }
        Ok(r)
    }

    /// A receipt by its hash.
    pub async fn receipt_by_hash(&self, hash: &str) -> Result<Option<StoredReceipt>, StoreError> {
        let row = self
            .read(
                sqlx::query("SELECT * FROM receipts WHERE receipt_hash = ?")
                    .bind(hash)
                    .fetch_optional(&self.read),
            )
            .await?;
        self.durable_receipt(row.map(|r| stored_receipt(&r, "")).transpose()?)
            .await
    }

    pub(crate) fn writer(&self) -> &Writer {
        &self.writer
    }

    /// This process's owner id.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Is the process that claimed with this owner id still running? Its lock file is held for
    /// as long as it lives; a missing or unlocked file means it is gone. When unsure, alive:
    /// a live claim must never be declared interrupted.
    pub async fn owner_alive(&self, owner: &str) -> bool {
        if owner == self.owner {
            return true;
        }
        if !owner.bytes().all(|b| b.is_ascii_hexdigit()) || owner.is_empty() {
            return false; // not a name we ever write; no process can hold it
        }
        let path = self.owners_dir.join(format!("{owner}.lock"));
        let f = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Err(_) => return true,
        };
        match f.try_lock() {
            Ok(()) => false,
            Err(std::fs::TryLockError::WouldBlock) => true,
            Err(std::fs::TryLockError::Error(_)) => true,
        }
    }

    /// Remove the lock file of an owner that is gone and has no claims left to recover.
    pub async fn forget_owner(&self, owner: &str) {
        if owner != self.owner && !self.owner_alive(owner).await {
            let _ = std::fs::remove_file(self.owners_dir.join(format!("{owner}.lock")));
        }
    }

    /// Is the database answering?
    pub async fn ping(&self) -> bool {
        self.writer.is_up() && sqlx::query("SELECT 1").execute(&self.read).await.is_ok()
    }

    /// Stop taking writes, wait until the writer committed everything already sent to it, and
    /// close the database.
    pub async fn close(&self) {
        self.writer.close_and_wait().await;
        self.read.close().await;
        self.sequencer.release(); // another process on the file may sign now
        let _ = std::fs::remove_file(self.owners_dir.join(format!("{}.lock", self.owner)));
    }
}

/// Create this process's lock file under `dir` and hold an exclusive lock on it.
fn take_owner_lock(dir: &Path) -> anyhow::Result<(String, std::fs::File)> {
    use rand_core::RngCore;
    openexec_kit::keys::create_private_dir(dir)?;
    let mut id = [0u8; 8];
    rand_core::OsRng.fill_bytes(&mut id);
    let owner = hex::encode(id);
    let path = dir.join(format!("{owner}.lock"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    f.try_lock()
        .map_err(|e| anyhow::anyhow!("cannot lock {}: {e}", path.display()))?;
    Ok((owner, f))
}

/// The writer's side on SQLite: its connection (migrated, `wal_autocheckpoint=0`) and the
/// receipt log's frontier as of its last commit.
struct SqliteWriter {
    conn: SqliteConnection,
    owner: String,
    tree: Frontier,
    head: watch::Sender<LogHead>,
    wal: Arc<WalSync>,
    durable: Arc<AtomicU64>,
    /// The head of the last commit, published once it is durable ([`Commit::after_durable`]).
    committed: Option<LogHead>,
}

impl Commit for SqliteWriter {
    type Op = WriteOp;
    type Out = Written;

    fn alone(op: &WriteOp) -> bool {
        matches!(op, WriteOp::Log(_))
    }

    /// A batch in one transaction ([`apply_batch`]); on any error it is rolled back and the
    /// frontier is as before. A log write alone, in its own.
    async fn commit(&mut self, ops: &[WriteOp]) -> Result<Vec<Applied>, CommitError> {
        if let [WriteOp::Log(w)] = ops {
            return Ok(log_written(self.log_write(w).await)?);
        }
        let started = Instant::now();
        let before = self.tree.clone();
        match apply_batch(&mut self.conn, ops, &self.owner, &mut self.tree).await {
            Ok(applied) => {
                metrics::histogram!("openexec_store_seconds", "op" => "transaction")
                    .record(started.elapsed().as_secs_f64());
                self.committed = Some(LogHead::of(&self.tree));
                Ok(applied)
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
                self.tree = before;
                Err(CommitError::Failed(e))
            }
        }
    }

    async fn finish(self) {
        let _ = self.conn.close().await;
    }

    fn durability(&mut self) -> Option<openexec_store::Durability> {
        let wal = self.wal.clone();
        Some(openexec_store::Durability {
            sync: Box::new(move || wal.sync()),
            thread: "openexec-sync",
        })
    }

    /// The new head is published (and the durable mark moved) only once the commit is on
    /// disk: no checkpoint is signed over, and no answer shows, a receipt that could be lost.
    fn after_durable(&mut self) -> Option<openexec_store::AfterDurable> {
        let head = self.committed.take()?;
        let (tx, durable) = (self.head.clone(), self.durable.clone());
        Some(Box::new(move || {
            durable.fetch_max(head.size, Ordering::SeqCst);
            head.publish_to(&tx);
        }))
    }
}

impl SqliteWriter {
    /// A log write (the statements are `openexec_logstore`'s).
    async fn log_write(&mut self, w: &LogWrite) -> Result<bool, StoreError> {
        let conn = &mut self.conn;
        match w {
            LogWrite::Identity {
                origin,
                verifier_key,
            } => {
                let recorded = logstore::bind_identity(conn, origin, verifier_key).await?;
                super::identity_conflict(recorded, (origin, verifier_key)).map(|()| true)
            }
            LogWrite::Checkpoint(cp) => logstore::add_checkpoint(conn, cp, &now_text())
                .await
                .map(|()| true),
            LogWrite::Cosignature {
                size,
                witness,
                timestamp,
                line,
            } => logstore::add_cosignature(conn, *size, witness, *timestamp, line).await,
        }
    }
}

/// A JSON array of rows, as the text a `json_each(?)` parameter takes.
fn json_rows(rows: impl Iterator<Item = Value>) -> String {
    Value::Array(rows.collect()).to_string()
}

/// Several statements sent to SQLite as one query (one round trip to sqlx's worker thread);
/// `?` arguments (all text) are taken in order across them.
#[derive(Default)]
struct Script<'a> {
    sql: String,
    args: Vec<&'a str>,
}

impl<'a> Script<'a> {
    fn stmt(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self.sql.push_str(";\n");
        self
    }

    fn text(&mut self, v: &'a str) -> &mut Self {
        self.args.push(v);
        self
    }

    /// Run it; every row any statement returns, as (tag, a, b) text columns.
    async fn run(
        &self,
        conn: &mut SqliteConnection,
    ) -> Result<Vec<(String, Option<String>, Option<String>)>, StoreError> {
        let mut q = sqlx::query(&self.sql);
        for a in &self.args {
            q = q.bind(*a);
        }
        let rows = q.fetch_all(&mut *conn).await.map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>(0)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    r.try_get::<Option<String>, _>(1)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    r.try_get::<Option<String>, _>(2)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                ))
            })
            .collect()
    }
}

/// Apply a batch in one transaction, in two round trips to SQLite in the common case:
///
/// 1. `BEGIN IMMEDIATE`; insert the claims (`ON CONFLICT DO NOTHING`), the approvals of the
///    claims just inserted, the outcomes of running claims; read the next log index and any
///    stored receipts a rejection may reuse. Every statement says what it did with `RETURNING`.
/// 2. Take back claims whose approval was used; insert the receipts with dense log indices;
///    `COMMIT`.
///
/// Reading back a taken nonce's row, or who used an approval first, costs one more round trip,
/// only when it happens. On any error nothing is acknowledged (the writer tells every caller).
async fn apply_batch(
    conn: &mut SqliteConnection,
    ops: &[WriteOp],
    owner: &str,
    tree: &mut Frontier,
) -> Result<Vec<Applied>, StoreError> {
    let mut out: Vec<Option<Applied>> = ops.iter().map(|_| None).collect();
    let now = now_text();
    let Batch {
        claims,
        completions,
        rejections,
    } = Batch::of(ops);
    let with_approval: Vec<(usize, &Claim, &str)> = claims
        .iter()
        .filter_map(|(i, c)| c.approval_key.as_deref().map(|k| (*i, *c, k)))
        .collect();

    // Round trip 1. Each kind of write is one statement over a JSON array of its rows
    // (`json_each`), so the text of the script depends only on which kinds the batch holds: a
    // handful of texts, each prepared once and cached by sqlx.
    // A settled claim is inserted with its outcome (and no template: it never runs again).
    let claims_json = (!claims.is_empty()).then(|| {
        json_rows(claims.iter().map(|(i, c)| match settled_with(&ops[*i]) {
            None => serde_json::json!([c.tenant_id, c.nonce, c.exec_id, c.action, c.template]),
            Some((st, r)) => serde_json::json!([
                c.tenant_id,
                c.nonce,
                c.exec_id,
                c.action,
                "",
                st.as_str(),
                r.receipt_hash
            ]),
        }))
    });
    let approvals_json = (!with_approval.is_empty()).then(|| {
        json_rows(
            with_approval
                .iter()
                .map(|(_, c, k)| serde_json::json!([k, c.exec_id])),
        )
    });
    let completions_json = (!completions.is_empty()).then(|| {
        json_rows(
            completions
                .iter()
                .map(|(_, t, n, st, r)| serde_json::json!([t, n, st.as_str(), r.receipt_hash])),
        )
    });
    let rejections_json = (!rejections.is_empty()).then(|| {
        json_rows(
            rejections
                .iter()
                .map(|(_, r)| Value::from(r.receipt_hash.as_str())),
        )
    });
    let mut s = Script::default();
    s.stmt("BEGIN IMMEDIATE");
    if let Some(j) = &claims_json {
        s.stmt(
            "INSERT INTO executions (tenant_id, nonce, exec_id, action, status, template, receipt_hash, owner, claimed_at) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, COALESCE(value ->> 5, 'running'), value ->> 4, value ->> 6, ?, ? \
             FROM json_each(?) WHERE true ON CONFLICT DO NOTHING RETURNING 'c', tenant_id, nonce",
        )
        .text(owner)
        .text(&now)
        .text(j);
    }
    if let Some(j) = &approvals_json {
        // Only for claims this batch inserted (a taken nonce must not use up its approval).
        s.stmt(
            "INSERT INTO approvals_used (approval_key, exec_id) \
             SELECT value ->> 0, value ->> 1 FROM json_each(?) AS v \
             WHERE EXISTS (SELECT 1 FROM executions e WHERE e.exec_id = v.value ->> 1 \
             AND e.owner = ? AND e.claimed_at = ?) \
             ON CONFLICT DO NOTHING RETURNING 'a', approval_key, exec_id",
        )
        .text(j)
        .text(owner)
        .text(&now);
    }
    if let Some(j) = &completions_json {
        s.stmt(
            "UPDATE executions SET status = v.value ->> 2, receipt_hash = v.value ->> 3 \
             FROM json_each(?) AS v \
             WHERE executions.tenant_id = v.value ->> 0 AND executions.nonce = v.value ->> 1 \
             AND executions.status = 'running' RETURNING 'u', tenant_id, nonce",
        )
        .text(j);
    }
    if let Some(j) = &rejections_json {
        s.stmt(
            "SELECT 'r', receipt_hash, CAST(log_index AS TEXT) FROM receipts \
             WHERE receipt_hash IN (SELECT value FROM json_each(?))",
        )
        .text(j);
    }
    s.stmt("SELECT 'm', NULL, CAST(COALESCE(MAX(log_index) + 1, 0) AS TEXT) FROM receipts");
    let rows = s.run(conn).await?;

    let mut inserted: HashSet<(String, String)> = HashSet::new();
    let mut approved: HashMap<String, String> = HashMap::new();
    let mut updated: HashSet<(String, String)> = HashSet::new();
    let mut index: HashMap<String, i64> = HashMap::new();
    let mut next: Option<i64> = None;
    for (tag, a, b) in rows {
        let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
        match tag.as_str() {
            "c" => drop(inserted.insert((a, b))),
            "a" => drop(approved.insert(a, b)),
            "u" => drop(updated.insert((a, b))),
            "r" => drop(
                index.insert(
                    a,
                    b.parse()
                        .map_err(|_| StoreError::Corrupt(format!("log index '{b}'")))?,
                ),
            ),
            "m" => {
                next = Some(
                    b.parse()
                        .map_err(|_| StoreError::Corrupt(format!("log index '{b}'")))?,
                )
            }
            other => return Err(StoreError::Corrupt(format!("unexpected row tag '{other}'"))),
        }
    }
    let next = next.ok_or_else(|| StoreError::Corrupt("no next log index".into()))?;
    if next as u64 != tree.size() {
        // Another process on this database appended since our last commit.
        *tree = logstore::load_frontier(conn, next as u64).await?;
    }

    // Claims: inserted, taken (read back the holder), or refused for a used approval.
    let mut s2 = Script::default();
    let mut taken: Vec<(usize, &Claim)> = Vec::new();
    let mut settled: Vec<(usize, &NewReceipt)> = Vec::new();
    for (i, c) in &claims {
        // `remove`: a second claim of the same key in one batch is taken by the first.
        if !inserted.remove(&(c.tenant_id.clone(), c.nonce.clone())) {
            taken.push((*i, c));
            continue;
        }
        let Some(k) = c.approval_key.as_deref() else {
            won(ops, *i, &mut out, &mut settled);
            continue;
        };
        match approved.get(k) {
            Some(winner) if *winner == c.exec_id => won(ops, *i, &mut out, &mut settled),
            winner => {
                let exec_id = match winner {
                    Some(w) => w.clone(),
                    None => sqlx::query_scalar(
                        "SELECT exec_id FROM approvals_used WHERE approval_key = ?",
                    )
                    .bind(k)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(unavailable)?
                    .unwrap_or_default(),
                };
                s2.stmt("DELETE FROM executions WHERE tenant_id = ? AND nonce = ?")
                    .text(&c.tenant_id)
                    .text(&c.nonce);
                out[*i] = Some(Ok(Written::Claim(ClaimResult::ApprovalReused { exec_id })));
            }
        }
    }
    for (i, c) in taken {
        let row = sqlx::query(&format!(
            "SELECT {CLAIM_ROW_COLUMNS} FROM executions e \
             LEFT JOIN receipts r ON r.receipt_hash = e.receipt_hash \
             WHERE e.tenant_id = ? AND e.nonce = ?"
        ))
        .bind(&c.tenant_id)
        .bind(&c.nonce)
        .fetch_optional(&mut *conn)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| StoreError::Corrupt(format!("claim of nonce '{}' vanished", c.nonce)))?;
        out[i] = Some(Ok(Written::Claim(ClaimResult::NonceTaken(Box::new(
            claim_row(&row)?,
        )))));
    }

    // Receipts in batch order: outcomes of the claims that were running, then rejections (a
    // receipt already stored keeps its index).
    let receipts = receipts_to_log(completions, &updated, settled, rejections, &mut out);
    let rows = assign_indices(&receipts, &mut index, next, &mut out);

    // Round trip 2.
    let receipts_json = (!rows.is_empty()).then(|| {
        json_rows(rows.iter().map(|(idx, r)| {
            serde_json::json!([
                idx,
                r.receipt_hash,
                r.exec_id,
                r.receipt,
                r.signature,
                r.key_id,
                r.result,
                r.message
            ])
        }))
    });
    if let Some(j) = &receipts_json {
        s2.stmt(
            "INSERT INTO receipts (log_index, receipt_hash, exec_id, receipt, signature, key_id, result, message, created_at) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7, ? \
             FROM json_each(?)",
        )
        .text(&now)
        .text(j);
    }
    // The tree: each new receipt is the next leaf; the complete nodes it makes are stored with it.
    let mut new_nodes: Vec<(NodeId, Hash)> = Vec::new();
    for (idx, r) in &rows {
        if *idx as u64 != tree.size() {
            return Err(StoreError::Corrupt(format!(
                "log index {idx} assigned while the tree holds {}",
                tree.size()
            )));
        }
        let data = leaf_data(&r.receipt, &r.signature, &r.key_id, &now)?;
        new_nodes.extend(
            tree.append(leaf_hash(&data))
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        );
    }
    let nodes_json = (!new_nodes.is_empty()).then(|| logstore::nodes_json(&new_nodes));
    if let Some(j) = &nodes_json {
        s2.stmt(logstore::INSERT_NODES).text(j);
    }
    s2.stmt("COMMIT");
    s2.run(conn).await?;

    all_applied(out)
}

/// The receipt log's storage (`Store` implements `openexec_log::LogStore` with these).
impl SqliteStore {
    /// The committed head of the file, whichever process appended last.
    pub async fn head(&self) -> Result<(u64, Hash), StoreError> {
        let next: i64 = self
            .read(
                sqlx::query_scalar("SELECT COALESCE(MAX(log_index) + 1, 0) FROM receipts")
                    .fetch_one(&self.read),
            )
            .await?;
        let local = self.log_head();
        if next as u64 == local.size {
            return Ok((local.size, local.root));
        }
        // A commit still being synced, or another process on the file appended (its nodes are
        // committed with its receipts): either way made durable before it is signed.
        let size = next as u64;
        if size > 0 {
            self.ensure_durable(size - 1).await?;
        }
        let nodes = logstore::nodes_on(&self.read, &Frontier::node_ids(size)).await?;
        Ok((size, frontier_from(size, &nodes)?.root()))
    }

    pub async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        let nodes = logstore::nodes_on(&self.read, ids).await?;
        // The last leaf any of them covers must be durable.
        let last = nodes
            .keys()
            .map(|n| {
                (n.index + 1)
                    .checked_shl(u32::from(n.level))
                    .unwrap_or(u64::MAX)
                    .saturating_sub(1)
            })
            .max();
        if let Some(last) = last {
            self.ensure_durable(last).await?;
        }
        Ok(nodes)
    }

    pub async fn latest_checkpoint(
        &self,
    ) -> Result<Option<(StoredCheckpoint, Vec<String>)>, StoreError> {
        let row = self
            .read(sqlx::query_as(LATEST_CHECKPOINT).fetch_optional(&self.read))
            .await?;
        let Some(cp) = checkpoint_row(row)? else {
            return Ok(None);
        };
        let lines: Vec<(String,)> = self
            .read(
                sqlx::query_as("SELECT line FROM log_cosignatures WHERE size = ? ORDER BY witness")
                    .bind(cp.size as i64)
                    .fetch_all(&self.read),
            )
            .await?;
        Ok(Some((cp, lines.into_iter().map(|(l,)| l).collect())))
    }
}
