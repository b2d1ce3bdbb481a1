//! The store on PostgreSQL: many replicas on one database.
//!
//! - **At most once.** A claim is one `INSERT … ON CONFLICT DO NOTHING` on the shared
//!   `executions` table: of any number of replicas claiming one (tenant, nonce) at once, exactly
//!   one inserts; the others wait on the row until the winner commits, then read its row.
//! - **One log.** Every replica appends its receipts under a row lock on `log_state` (`SELECT …
//!   FOR UPDATE`), so the receipts of all replicas get one dense order; a replica whose tree is
//!   behind the stored head first reloads its frontier from the stored nodes.
//! - **One sequencer.** Only the replica holding a session advisory lock signs checkpoints; if its
//!   connection or process dies, PostgreSQL releases the lock and another replica takes it on its
//!   next try (every `OPENEXEC_LOG_INTERVAL_MS`). Storing a checkpoint re-checks, under a
//!   transaction lock, that it neither shrinks nor forks the last one.
//! - **Owners.** Each replica heartbeats a row in `replicas`; a claim of a replica whose
//!   heartbeat is older than [`LEASE`] can be declared interrupted (and only by a replica whose
//!   own heartbeats have succeeded for at least that long, so an outage of the database does not
//!   make every replica look dead).
//! - **Faults.** Errors answer `Unavailable` (503 upstream); the pool reconnects by itself.
//!   Serialization failures and deadlocks are retried for the whole batch transaction, which
//!   only writes rows: no handler ever runs again because of a retry.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openexec_store::{Commit, CommitError, PgUrl};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;

use openexec_log::{leaf_hash, Frontier, Hash, NodeId, StoredCheckpoint};

use super::tree_check::{hash_hex, leaf_data, LogHead, RECEIPT_LEAVES};
use super::{
    all_applied, assign_indices, claim_row, corrupt, log_written, now_text, receipts_to_log,
    settled_with, stored_receipt, unavailable, won, writer_config, Applied, Batch, Claim,
    ClaimResult, ClaimRow, ClaimStatus, LogWrite, NewReceipt, StoreError, StoreLimits,
    StoredReceipt, WriteOp, Writer, Written, CLAIM_ROW_COLUMNS,
};
use openexec_logstore::store::postgres as logstore;
use openexec_logstore::store::postgres::{frontier_of_head, frontier_text};

/// A replica whose heartbeat is older than this is gone.
pub(crate) const LEASE: Duration = Duration::from_secs(10);
const HEARTBEAT: Duration = Duration::from_secs(1);
/// `pg_try_advisory_lock` key of the receipt log's sequencer ("oe-seq" in ASCII).
const SEQUENCER_LOCK: i64 = 0x6f65_2d73_6571;
/// `pg_advisory_xact_lock` key serialising checkpoint writes ("oe-cp").
const CHECKPOINT_LOCK: i64 = 0x006f_652d_6370;
/// How often a batch is tried when it hits a serialization failure or deadlock.
const ATTEMPTS: usize = 5;

pub(crate) struct PgStore {
    owner: String,
    pool: PgPool,
    timeout: Duration,
    writer: Writer,
    head: watch::Receiver<LogHead>,
    log_problem: Option<String>,
    /// The connection holding (or trying for) the sequencer lock, and whether it holds it.
    sequencer: openexec_logstore::sequencer::PgSequencer,
    /// Since when this replica's heartbeats have all succeeded.
    healthy_since: std::sync::Arc<Mutex<Option<Instant>>>,
    heartbeat: tokio::task::JoinHandle<()>,
}

fn db_err(e: sqlx::Error) -> StoreError {
    unavailable(e)
}

impl PgStore {
    pub async fn open(url: &PgUrl, limits: StoreLimits) -> anyhow::Result<PgStore> {
        // One connection is the sequencer's, outside the pool (on `connect`).
        let (connect, pool) = openexec_store::postgres::open_replica(
            url,
            "openexec",
            limits,
            "OPENEXEC_DB_CONNECT_WAIT_MS",
        )
        .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate the PostgreSQL database: {e}"))?;

        let owner = {
            use rand_core::RngCore;
            let mut id = [0u8; 8];
            rand_core::OsRng.fill_bytes(&mut id);
            hex::encode(id)
        };
        sqlx::query(
            "INSERT INTO replicas (owner, started_at, heartbeat_at) VALUES ($1, now(), now())",
        )
        .bind(&owner)
        .execute(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("cannot register this replica: {e}"))?;

        let opened = logstore::open_tree(&pool, RECEIPT_LEAVES)
            .await
            .map(|o| (o.tree, o.problem))
            .map_err(|e| anyhow::anyhow!("cannot read the receipt log: {e}"))?;
        if let Some(p) = &opened.1 {
            tracing::error!(problem = %p, "THE RECEIPT LOG DOES NOT MATCH ITS LAST SIGNED CHECKPOINT: it will not sign, and /ready fails");
        }
        let (head_tx, head_rx) = watch::channel(LogHead::of(&opened.0));
        let (writer, queue) = openexec_store::channel(writer_config(ATTEMPTS));
        tokio::spawn(queue.run(PgWriter {
            pool: pool.clone(),
            owner: owner.clone(),
            tree: opened.0,
            head: head_tx,
        }));
        let healthy_since = std::sync::Arc::new(Mutex::new(Some(Instant::now())));
        let heartbeat = tokio::spawn(heartbeat_loop(
            pool.clone(),
            owner.clone(),
            healthy_since.clone(),
        ));
        Ok(PgStore {
            owner,
            pool,
            timeout: limits.timeout,
            writer,
            head: head_rx,
            log_problem: opened.1,
            sequencer: openexec_logstore::sequencer::PgSequencer::new(
                connect.clone(),
                SEQUENCER_LOCK,
                limits.timeout,
                "openexec_log_sequencer",
                "the receipt log",
            ),
            healthy_since,
            heartbeat,
        })
    }

    pub fn log_head(&self) -> LogHead {
        *self.head.borrow()
    }

    pub fn watch_log_head(&self) -> watch::Receiver<LogHead> {
        self.head.clone()
    }

    pub fn log_problem(&self) -> Option<String> {
        self.log_problem.clone()
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Hold (or try to take) the sequencer lock (`openexec_logstore::sequencer`).
    pub async fn sequencer(&self) -> Result<bool, StoreError> {
        self.sequencer.try_hold().await
    }

    pub(crate) fn writer(&self) -> &Writer {
        &self.writer
    }

    pub async fn lookup(
        &self,
        tenant_id: &str,
        nonce: &str,
    ) -> Result<Option<ClaimRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CLAIM_ROW_COLUMNS} FROM executions e \
             LEFT JOIN receipts r ON r.receipt_hash = e.receipt_hash \
             WHERE e.tenant_id = $1 AND e.nonce = $2"
        ))
        .bind(tenant_id)
        .bind(nonce)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(|r| claim_row(&r)).transpose()
    }

    pub async fn running(&self) -> Result<Vec<ClaimRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, nonce, exec_id, owner, status, template, NULL::bigint AS log_index \
             FROM executions WHERE status = 'running' ORDER BY claimed_at",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(claim_row).collect()
    }

    pub async fn receipt_for(&self, exec_id: &str) -> Result<Option<StoredReceipt>, StoreError> {
        let row = sqlx::query(
            "SELECT r.* FROM receipts r WHERE r.exec_id = $1 ORDER BY \
             (r.receipt_hash = (SELECT receipt_hash FROM executions WHERE exec_id = $1)) IS TRUE DESC, \
             r.log_index DESC LIMIT 1",
        )
        .bind(exec_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        row.map(|r| stored_receipt(&r, "")).transpose()
    }

    pub async fn receipt_by_hash(&self, hash: &str) -> Result<Option<StoredReceipt>, StoreError> {
        let row = sqlx::query("SELECT * FROM receipts WHERE receipt_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|r| stored_receipt(&r, "")).transpose()
    }

    pub async fn log_entries(
        &self,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, Vec<u8>, String)>, StoreError> {
        let rows: Vec<(i64, String, String, String, String)> = sqlx::query_as(
            "SELECT log_index, receipt, signature, key_id, created_at FROM receipts \
             WHERE log_index >= $1 AND log_index < $2 ORDER BY log_index",
        )
        .bind(start as i64)
        .bind(end as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(|(i, r, s, k, at)| Ok((i as u64, leaf_data(&r, &s, &k, &at)?, at)))
            .collect()
    }

    /// Alive if its heartbeat is fresh; when this replica cannot tell (its own heartbeats have
    /// not succeeded for a whole lease, or the database does not answer), alive.
    pub async fn owner_alive(&self, owner: &str) -> bool {
        if owner == self.owner {
            return true;
        }
        let sure = self
            .healthy_since
            .lock()
            .ok()
            .and_then(|h| *h)
            .is_some_and(|t| t.elapsed() >= LEASE);
        if !sure {
            return true;
        }
        match sqlx::query_scalar::<_, bool>(
            "SELECT heartbeat_at > now() - make_interval(secs => $2) FROM replicas WHERE owner = $1",
        )
        .bind(owner)
        .bind(LEASE.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
        {
            Ok(Some(fresh)) => fresh,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    pub async fn forget_owner(&self, owner: &str) {
        if owner != self.owner && !self.owner_alive(owner).await {
            let _ = sqlx::query(
                "DELETE FROM replicas WHERE owner = $1 AND heartbeat_at < now() - make_interval(secs => $2)",
            )
            .bind(owner)
            .bind(LEASE.as_secs_f64())
            .execute(&self.pool)
            .await;
        }
    }

    pub async fn ping(&self) -> bool {
        self.writer.is_up()
            && tokio::time::timeout(self.timeout, sqlx::query("SELECT 1").execute(&self.pool))
                .await
                .is_ok_and(|r| r.is_ok())
    }

    pub async fn close(&self) {
        self.writer.close_and_wait().await;
        self.heartbeat.abort();
        self.sequencer.release().await; // another replica may sign now
        let _ = sqlx::query("DELETE FROM replicas WHERE owner = $1")
            .bind(&self.owner)
            .execute(&self.pool)
            .await;
        self.pool.close().await;
    }

    pub async fn head(&self) -> Result<(u64, Hash), StoreError> {
        logstore::head(&self.pool).await
    }

    pub async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        logstore::nodes_on(&self.pool, ids).await
    }

    pub async fn latest_checkpoint(
        &self,
    ) -> Result<Option<(StoredCheckpoint, Vec<String>)>, StoreError> {
        logstore::latest_checkpoint(&self.pool).await
    }
}

async fn heartbeat_loop(
    pool: PgPool,
    owner: String,
    healthy_since: std::sync::Arc<Mutex<Option<Instant>>>,
) {
    let mut beats: u64 = 0;
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        beats += 1;
        if beats.is_multiple_of(60) {
            let _ = prune_gone_replicas(&pool).await;
        }
        let ok = sqlx::query(
            "INSERT INTO replicas (owner, started_at, heartbeat_at) VALUES ($1, now(), now()) \
             ON CONFLICT (owner) DO UPDATE SET heartbeat_at = now()",
        )
        .bind(&owner)
        .execute(&pool)
        .await
        .is_ok();
        if let Ok(mut h) = healthy_since.lock() {
            match (ok, h.is_some()) {
                (true, false) => *h = Some(Instant::now()),
                (false, _) => *h = None,
                _ => {}
            }
        }
    }
}

/// Remove the rows of replicas gone for an hour that left no running claim behind (those are
/// removed by whoever recovers the claims). Returns how many went.
async fn prune_gone_replicas(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM replicas r WHERE heartbeat_at < now() - interval '1 hour' \
         AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.owner = r.owner AND e.status = 'running')",
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// Stored receipts' indices by hash: an index lookup per hash, for the same reason.
const RECEIPTS_BY_HASH: &str =
    "SELECT r.receipt_hash, r.log_index FROM UNNEST($1::text[]) AS u(h) \
     CROSS JOIN LATERAL (SELECT receipt_hash, log_index FROM receipts \
     WHERE receipt_hash = u.h LIMIT 1) r";

/// The writer's side on PostgreSQL: the pool its transactions run on and the receipt log's
/// frontier as of its last commit (reloaded when another replica appended).
struct PgWriter {
    pool: PgPool,
    owner: String,
    tree: Frontier,
    head: watch::Sender<LogHead>,
}

impl Commit for PgWriter {
    type Op = WriteOp;
    type Out = Written;

    fn alone(op: &WriteOp) -> bool {
        matches!(op, WriteOp::Log(_))
    }

    /// A batch in one transaction ([`commit_batch`]): a serialization failure or deadlock comes
    /// back as `Retry` (the batch only writes rows: no handler runs again), stored data that
    /// does not read back as `Failed` (never retried: the next attempt would read the same).
    /// On any error the frontier is as before. A log write alone, in its own.
    async fn commit(&mut self, ops: &[WriteOp]) -> Result<Vec<Applied>, CommitError> {
        if let [WriteOp::Log(w)] = ops {
            return Ok(log_written(log_write(&self.pool, w).await)?);
        }
        let before = self.tree.clone();
        match commit_batch(&self.pool, ops, &self.owner, &mut self.tree).await {
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

/// A log write of the writer (the statements are `openexec_logstore`'s).
async fn log_write(pool: &PgPool, w: &LogWrite) -> Result<bool, StoreError> {
    Ok(match w {
        LogWrite::Identity {
            origin,
            verifier_key,
        } => {
            let recorded = logstore::bind_identity(pool, origin, verifier_key).await?;
            super::identity_conflict(recorded, (origin, verifier_key))?;
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

/// What a batch's transaction decided, before commit.
type Applied2 = Result<Vec<Applied>, CommitError>;

/// One batch in one transaction. Errors of the database come back classified
/// (`CommitError::from(sqlx::Error)`), so the writer retries serialization failures; a batch
/// that fails is rolled back whole.
async fn commit_batch(
    pool: &PgPool,
    ops: &[WriteOp],
    owner: &str,
    tree: &mut Frontier,
) -> Applied2 {
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let applied = apply_batch(&mut tx, ops, owner, tree).await?;
    tx.commit().await?;
    metrics::histogram!("openexec_store_seconds", "op" => "transaction")
        .record(started.elapsed().as_secs_f64());
    Ok(applied)
}

async fn apply_batch(
    conn: &mut PgConnection,
    ops: &[WriteOp],
    owner: &str,
    tree: &mut Frontier,
) -> Applied2 {
    let mut out: Vec<Option<Applied>> = ops.iter().map(|_| None).collect();
    let now = now_text();
    let Batch {
        claims,
        mut completions,
        rejections,
    } = Batch::of(ops);

    // Claims, in key order so that replicas inserting the same keys lock them in one order.
    let mut inserted: HashSet<(String, String)> = HashSet::new();
    if !claims.is_empty() {
        let mut sorted: Vec<(&Claim, Option<(ClaimStatus, &NewReceipt)>)> = claims
            .iter()
            .map(|(i, c)| (*c, settled_with(&ops[*i])))
            .collect();
        sorted.sort_by(|a, b| (&a.0.tenant_id, &a.0.nonce).cmp(&(&b.0.tenant_id, &b.0.nonce)));
        let col = |f: fn(&Claim) -> &str| -> Vec<String> {
            sorted.iter().map(|(c, _)| f(c).to_string()).collect()
        };
        // A settled claim is inserted with its outcome (and no template: it never runs again).
        let rows: Vec<(String, String)> = sqlx::query_as(
            "INSERT INTO executions (tenant_id, nonce, exec_id, action, status, template, receipt_hash, owner, claimed_at) \
             SELECT t, n, e, a, s, tp, h, $8, $9 \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
             AS u(t, n, e, a, tp, s, h) \
             ON CONFLICT DO NOTHING RETURNING tenant_id, nonce",
        )
        .bind(col(|c| &c.tenant_id))
        .bind(col(|c| &c.nonce))
        .bind(col(|c| &c.exec_id))
        .bind(col(|c| &c.action))
        .bind(
            sorted
                .iter()
                .map(|(c, st)| if st.is_some() { "" } else { c.template.as_str() }.to_string())
                .collect::<Vec<String>>(),
        )
        .bind(
            sorted
                .iter()
                .map(|(_, st)| st.map_or(ClaimStatus::Running, |s| s.0).as_str().to_string())
                .collect::<Vec<String>>(),
        )
        .bind(
            sorted
                .iter()
                .map(|(_, st)| st.map(|s| s.1.receipt_hash.clone()))
                .collect::<Vec<Option<String>>>(),
        )
        .bind(owner)
        .bind(&now)
        .fetch_all(&mut *conn)
        .await?;
        inserted.extend(rows);
    }

    // Approvals of the claims just inserted (a taken nonce must not use up its approval).
    let mut winners: HashMap<String, String> = HashMap::new();
    let mut claimed: Vec<(usize, &Claim)> = Vec::new();
    let mut taken: Vec<(usize, &Claim)> = Vec::new();
    for (i, c) in &claims {
        // `remove`: a second claim of the same key in one batch is taken by the first.
        if inserted.remove(&(c.tenant_id.clone(), c.nonce.clone())) {
            claimed.push((*i, c));
        } else {
            taken.push((*i, c));
        }
    }
    // In key order too, for the same reason.
    let mut with_approval: Vec<(&Claim, &str)> = claimed
        .iter()
        .filter_map(|(_, c)| c.approval_key.as_deref().map(|k| (*c, k)))
        .collect();
    with_approval.sort_by(|a, b| a.1.cmp(b.1));
    if !with_approval.is_empty() {
        let keys: Vec<String> = with_approval.iter().map(|(_, k)| k.to_string()).collect();
        let execs: Vec<String> = with_approval
            .iter()
            .map(|(c, _)| c.exec_id.clone())
            .collect();
        sqlx::query(
            "INSERT INTO approvals_used (approval_key, exec_id) \
             SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&keys)
        .bind(&execs)
        .execute(&mut *conn)
        .await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT approval_key, exec_id FROM approvals_used WHERE approval_key = ANY($1)",
        )
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await?;
        winners.extend(rows);
    }
    let mut give_back: (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let mut settled: Vec<(usize, &NewReceipt)> = Vec::new();
    for (i, c) in claimed {
        match c.approval_key.as_deref().map(|k| winners.get(k)) {
            Some(Some(w)) if *w != c.exec_id => {
                give_back.0.push(c.tenant_id.clone());
                give_back.1.push(c.nonce.clone());
                out[i] = Some(Ok(Written::Claim(ClaimResult::ApprovalReused {
                    exec_id: w.clone(),
                })));
            }
            None | Some(Some(_)) => won(ops, i, &mut out, &mut settled),
            Some(w) => {
                give_back.0.push(c.tenant_id.clone());
                give_back.1.push(c.nonce.clone());
                out[i] = Some(Ok(Written::Claim(ClaimResult::ApprovalReused {
                    exec_id: w.cloned().unwrap_or_default(),
                })));
            }
        }
    }
    if !give_back.0.is_empty() {
        sqlx::query(
            "DELETE FROM executions WHERE (tenant_id, nonce) IN \
             (SELECT * FROM UNNEST($1::text[], $2::text[]))",
        )
        .bind(&give_back.0)
        .bind(&give_back.1)
        .execute(&mut *conn)
        .await?;
    }
    for (i, c) in taken {
        let row = sqlx::query(&format!(
            "SELECT {CLAIM_ROW_COLUMNS} FROM executions e \
             LEFT JOIN receipts r ON r.receipt_hash = e.receipt_hash \
             WHERE e.tenant_id = $1 AND e.nonce = $2"
        ))
        .bind(&c.tenant_id)
        .bind(&c.nonce)
        .fetch_optional(&mut *conn)
        .await?;
        out[i] = Some(match row {
            Some(row) => match claim_row(&row) {
                Ok(r) => Ok(Written::Claim(ClaimResult::NonceTaken(Box::new(r)))),
                Err(e) => Err(e),
            },
            // Inserted and given back by another replica in between: a retry of the claim
            // decides it (nothing has run).
            None => Err(unavailable(format!(
                "the claim of nonce '{}' changed hands while being read; try again",
                c.nonce
            ))),
        });
    }

    // Outcomes of running claims.
    let mut updated: HashSet<(String, String)> = HashSet::new();
    completions.sort_by(|a, b| (a.1, a.2).cmp(&(b.1, b.2)));
    if !completions.is_empty() {
        let col = |k: usize| -> Vec<String> {
            completions
                .iter()
                .map(|(_, t, n, st, r)| match k {
                    0 => t.to_string(),
                    1 => n.to_string(),
                    2 => st.as_str().to_string(),
                    _ => r.receipt_hash.clone(),
                })
                .collect()
        };
        let rows: Vec<(String, String)> = sqlx::query_as(
            "UPDATE executions SET status = u.s, receipt_hash = u.h \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS u(t, n, s, h) \
             WHERE executions.tenant_id = u.t AND executions.nonce = u.n \
             AND executions.status = 'running' RETURNING executions.tenant_id, executions.nonce",
        )
        .bind(col(0))
        .bind(col(1))
        .bind(col(2))
        .bind(col(3))
        .fetch_all(&mut *conn)
        .await?;
        updated.extend(rows);
    }
    let receipts = receipts_to_log(completions, &updated, settled, rejections, &mut out);

    if !receipts.is_empty() {
        // The log: one order across replicas, under the log_state row lock, held from here to
        // the commit: this read, (when the batch has rejections) one lookup, one write.
        let (size, root, frontier): (i64, String, String) =
            sqlx::query_as("SELECT size, root, frontier FROM log_state WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *conn)
                .await?;
        // Only a rejection can already be logged (an identical earlier one is reused); an
        // outcome's receipt is new by construction (its claim was running).
        let rejected: Vec<String> = receipts
            .iter()
            .filter(|(i, _)| matches!(ops[*i], WriteOp::Receipt(..)))
            .map(|(_, r)| r.receipt_hash.clone())
            .collect();
        let mut index: HashMap<String, i64> = if rejected.is_empty() {
            HashMap::new()
        } else {
            sqlx::query_as::<_, (String, i64)>(RECEIPTS_BY_HASH)
                .bind(&rejected)
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .collect()
        };
        if size as u64 != tree.size() {
            // Another replica appended since our last commit.
            *tree = frontier_of_head(size as u64, &root, &frontier)?;
        }
        let rows = assign_indices(&receipts, &mut index, size, &mut out);
        if !rows.is_empty() {
            let mut new_nodes: Vec<(NodeId, Hash)> = Vec::new();
            for (_, r) in &rows {
                let data = leaf_data(&r.receipt, &r.signature, &r.key_id, &now)?;
                new_nodes.extend(tree.append(leaf_hash(&data)).map_err(corrupt)?);
            }
            let text = |f: fn(&NewReceipt) -> &str| -> Vec<String> {
                rows.iter().map(|(_, r)| f(r).to_string()).collect()
            };
            let opt = |f: fn(&NewReceipt) -> Option<&str>| -> Vec<Option<String>> {
                rows.iter().map(|(_, r)| f(r).map(str::to_string)).collect()
            };
            let (levels, indices, hashes) = logstore::node_columns(&new_nodes);
            // One statement: the receipts, their tree nodes and the new head.
            sqlx::query(
                "WITH r AS (INSERT INTO receipts (log_index, receipt_hash, exec_id, receipt, signature, key_id, result, message, created_at) \
                 SELECT i, h, e, r, s, k, res, m, $9 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], \
                 $5::text[], $6::text[], $7::text[], $8::text[]) AS u(i, h, e, r, s, k, res, m)), \
                 n AS (INSERT INTO log_nodes (level, idx, hash) \
                 SELECT * FROM UNNEST($10::int[], $11::bigint[], $12::text[])) \
                 UPDATE log_state SET size = $13, root = $14, frontier = $15 WHERE id = 1",
            )
            .bind(rows.iter().map(|(i, _)| *i).collect::<Vec<i64>>())
            .bind(text(|r| &r.receipt_hash))
            .bind(text(|r| &r.exec_id))
            .bind(text(|r| &r.receipt))
            .bind(text(|r| &r.signature))
            .bind(text(|r| &r.key_id))
            .bind(opt(|r| r.result.as_deref()))
            .bind(opt(|r| r.message.as_deref()))
            .bind(&now)
            .bind(levels)
            .bind(indices)
            .bind(hashes)
            .bind(tree.size() as i64)
            .bind(hash_hex(&tree.root()))
            .bind(frontier_text(tree))
            .execute(&mut *conn)
            .await?;
        }
    }

    Ok(all_applied(out)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::postgres::PgConnectOptions;

    /// A store on a fresh database of its own, or `None` (with a printed reason) without
    /// PostgreSQL.
    async fn test_store(name: &str) -> Option<(openexec_testkit::TestDb, PgStore)> {
        let db = openexec_testkit::TestDb::create(name).await?;
        let url = PgUrl::parse(&db.url, &crate::config::DB_URL).unwrap();
        let store = PgStore::open(
            &url,
            StoreLimits {
                timeout: Duration::from_secs(2),
                pool_size: 4,
                connect_wait: Duration::from_secs(5),
            },
        )
        .await
        .unwrap();
        Some((db, store))
    }

    #[tokio::test]
    async fn the_sequencer_session_has_keepalives_and_the_lock_timeout() {
        let Some(db) = openexec_testkit::TestDb::create("sequencer_session").await else {
            return;
        };
        let base: PgConnectOptions = db
            .url
            .parse::<PgConnectOptions>()
            .unwrap()
            .options([("lock_timeout", "1234")]);
        use sqlx::ConnectOptions;
        let mut c = openexec_logstore::sequencer::session_options(&base)
            .connect()
            .await
            .unwrap();
        for (name, want) in [
            ("tcp_keepalives_idle", "5"),
            ("tcp_keepalives_interval", "2"),
            ("tcp_keepalives_count", "3"),
            ("lock_timeout", "1234ms"),
        ] {
            let got: String = sqlx::query_scalar(&format!("SHOW {name}"))
                .fetch_one(&mut c)
                .await
                .unwrap();
            assert_eq!(got, want, "{name}");
        }
    }

    #[tokio::test]
    async fn lookups_use_the_index_even_with_a_plan_made_on_an_empty_table() {
        use sqlx::Connection;
        let Some((db, store)) = test_store("lookup_plans").await else {
            return;
        };
        let pool = store.pool.clone();
        // A generic plan made while the tables are empty (as a cached prepared statement gets
        // when the log is new) must still look rows up by index once the tables are large:
        // `(level, idx) IN (SELECT … UNNEST …)` and `receipt_hash = ANY($1)` were planned as
        // sequential scans here.
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        for stmt in [
            "SET plan_cache_mode = force_generic_plan".to_string(),
            format!(
                "PREPARE nodes_q(int[], bigint[]) AS {}",
                logstore::NODES_BY_ID
            ),
            format!("PREPARE receipts_q(text[]) AS {RECEIPTS_BY_HASH}"),
            // planned now, on the empty tables, and kept
            "EXECUTE nodes_q(ARRAY[0], ARRAY[0])".to_string(),
            "EXECUTE receipts_q(ARRAY['x'])".to_string(),
        ] {
            sqlx::raw_sql(&stmt).execute(&mut c).await.unwrap();
        }
        for fill in [
            "INSERT INTO log_nodes SELECT 0, g, md5(g::text) || md5(g::text) FROM generate_series(0, 49999) g",
            "INSERT INTO receipts SELECT g, md5(g::text), 'e', '{}', 's', 'k', NULL, NULL, 'now' FROM generate_series(0, 49999) g",
        ] {
            sqlx::query(fill).execute(&pool).await.unwrap();
        }
        for (table, explain) in [
            (
                "log_nodes",
                "EXPLAIN EXECUTE nodes_q(ARRAY[0,0,0], ARRAY[5,17,49000])",
            ),
            (
                "receipts",
                "EXPLAIN EXECUTE receipts_q(ARRAY[md5('17'), 'nope'])",
            ),
        ] {
            let plan: Vec<String> = sqlx::raw_sql(explain)
                .fetch_all(&mut c)
                .await
                .unwrap()
                .iter()
                .map(|r| sqlx::Row::get::<String, _>(r, 0))
                .collect();
            let plan = plan.join("\n");
            assert!(plan.contains("Index"), "{table}: {plan}");
            assert!(!plan.contains(&format!("Seq Scan on {table}")), "{plan}");
        }
        let got = logstore::nodes_on(
            &pool,
            &[
                NodeId {
                    level: 0,
                    index: 17,
                },
                NodeId {
                    level: 0,
                    index: 49_000,
                },
                NodeId { level: 3, index: 1 },
            ],
        )
        .await
        .unwrap();
        assert_eq!(got.len(), 2, "the two nodes that exist");
        let found: Vec<(String, i64)> = sqlx::query_as(RECEIPTS_BY_HASH)
            .bind(vec![
                "nope".to_string(),
                "c81e728d9d4c2f636f067f89cc14862c".to_string(),
            ])
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(
            found,
            vec![("c81e728d9d4c2f636f067f89cc14862c".to_string(), 2)]
        );
        store.close().await;
    }

    #[tokio::test]
    async fn only_long_gone_replicas_without_running_claims_are_pruned() {
        let Some((_db, store)) = test_store("prune_replicas").await else {
            return;
        };
        let pool = store.pool.clone();
        for (owner, age) in [
            ("gone", "2 hours"),
            ("gone-busy", "2 hours"),
            ("recent", "5 minutes"),
        ] {
            sqlx::query(&format!(
                "INSERT INTO replicas VALUES ($1, now() - interval '{age}', now() - interval '{age}')"
            ))
            .bind(owner)
            .execute(&pool)
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO executions VALUES ('t', 'n', 'e', 'echo', 'running', '{}', NULL, 'gone-busy', 'x')",
        )
        .execute(&pool)
        .await
        .unwrap();
        assert_eq!(prune_gone_replicas(&pool).await.unwrap(), 1);
        let mut left: Vec<String> = sqlx::query_scalar("SELECT owner FROM replicas")
            .fetch_all(&pool)
            .await
            .unwrap();
        left.sort();
        let mut want = vec![
            "gone-busy".to_string(),
            "recent".to_string(),
            store.owner.clone(),
        ];
        want.sort();
        assert_eq!(left, want);
        store.close().await;
    }
}
