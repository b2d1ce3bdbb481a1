//! Durable state: nonce claims, single-use approvals, receipts and the receipt log's nodes and
//! checkpoints. Only this module knows which database the service runs on: [`Store`] is one
//! type with one API over SQLite ([`sqlite`], one machine) or PostgreSQL ([`postgres`], many
//! replicas on one database).
//!
//! On both, writes go through one writer per process that commits them in batches ("group
//! commit"): every write waiting when a commit starts shares that commit and its fsync, so
//! throughput is not capped at one fsync per request, and nothing is acknowledged before its
//! commit returned. The writer is `openexec_store::writer`'s; each backend gives it only its
//! transaction (a `Commit` over [`WriteOp`]s). Reads use a pool beside it.

use std::collections::HashMap;

use serde_json::Value;
use tokio::sync::watch;

use openexec_log::{Hash, LogStore, NodeId, StoredCheckpoint};

use crate::config::DbTarget;

mod postgres;
mod sqlite;
mod tree_check;

pub use tree_check::LogHead;

/// The store's errors: the one `StoreError` of every service (`openexec_store`).
pub use openexec_store::StoreError;
pub(crate) use openexec_store::{corrupt, unavailable};

/// How the writer batches (on both backends): at most 512 writes a commit; on PostgreSQL a
/// batch that hits a serialization failure or deadlock is run again, up to 5 times in all
/// (SQLite's writer takes the write lock with `BEGIN IMMEDIATE`, waiting the busy timeout, and
/// never retries).
pub(crate) fn writer_config(attempts: usize) -> openexec_store::WriterConfig {
    openexec_store::WriterConfig {
        queue: 4096,
        max_batch: 512,
        attempts,
        metrics: openexec_store::WriterMetrics {
            batch_size: "openexec_store_batch_size",
            seconds: "openexec_store_seconds",
            retries: "openexec_store_retries_total",
        },
    }
}

/// The state of a claimed nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimStatus {
    Running,
    Executed,
    Failed,
    Interrupted,
}

impl ClaimStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimStatus::Running => "running",
            ClaimStatus::Executed => "executed",
            ClaimStatus::Failed => "failed",
            ClaimStatus::Interrupted => "interrupted",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<ClaimStatus, StoreError> {
        Ok(match s {
            "running" => ClaimStatus::Running,
            "executed" => ClaimStatus::Executed,
            "failed" => ClaimStatus::Failed,
            "interrupted" => ClaimStatus::Interrupted,
            other => return Err(StoreError::Corrupt(format!("unknown status '{other}'"))),
        })
    }
}

/// A receipt as stored.
#[derive(Debug, Clone)]
pub struct StoredReceipt {
    pub log_index: u64,
    pub receipt_hash: String,
    pub exec_id: String,
    pub receipt: Value,
    pub signature: String,
    pub key_id: String,
    pub result: Option<Value>,
    pub message: Option<String>,
    /// When it entered the receipt log (its leaf's `logged_at`).
    pub logged_at: String,
}

/// A receipt to store.
#[derive(Debug, Clone)]
pub struct NewReceipt {
    pub receipt_hash: String,
    pub exec_id: String,
    /// JCS text of the receipt.
    pub receipt: String,
    pub signature: String,
    pub key_id: String,
    pub result: Option<String>,
    pub message: Option<String>,
}

/// A claimed nonce and, once it has one, its outcome's receipt.
#[derive(Debug, Clone)]
pub struct ClaimRow {
    pub tenant_id: String,
    pub nonce: String,
    pub exec_id: String,
    /// The process that claimed it.
    pub owner: String,
    pub status: ClaimStatus,
    pub template: String,
    pub receipt: Option<StoredReceipt>,
}

/// What settling a claim with its outcome in one commit found ([`Store::settle`]).
#[derive(Debug, Clone)]
pub enum Settled {
    /// Claimed and settled: the receipt is durable at this log index.
    Logged(u64),
    /// Not claimed (the nonce was taken, or the approval used): nothing was stored. Never
    /// [`ClaimResult::Claimed`].
    Refused(ClaimResult),
}

/// What a claim attempt found.
#[derive(Debug, Clone)]
pub enum ClaimResult {
    /// The nonce is ours: the handler may run.
    Claimed,
    /// Someone claimed this (tenant, nonce) first.
    NonceTaken(Box<ClaimRow>),
    /// The approval was already used by another execution.
    ApprovalReused { exec_id: String },
}

#[derive(Debug, Clone)]
pub struct Claim {
    pub tenant_id: String,
    pub nonce: String,
    pub exec_id: String,
    pub action: String,
    pub template: String,
    /// Set when an approval artifact must be single use.
    pub approval_key: Option<String>,
}

/// A write the writer commits (see `openexec_store::writer`).
pub(crate) enum WriteOp {
    Claim(Claim),
    /// A claim and its outcome in one commit: the action has no effects (SPEC §10), so it ran
    /// before it was claimed (running it twice cannot be observed). The claim row is inserted
    /// already settled, with its receipt; a taken nonce or a used approval stores nothing.
    Settle {
        claim: Claim,
        status: ClaimStatus,
        receipt: NewReceipt,
    },
    Complete {
        tenant_id: String,
        nonce: String,
        status: ClaimStatus,
        receipt: NewReceipt,
    },
    Receipt(NewReceipt),
    /// Log bookkeeping, each in a transaction of its own (`Commit::alone`).
    Log(LogWrite),
}

pub(crate) enum LogWrite {
    /// Record the log's origin and verifier key, or check them against the recorded ones.
    Identity {
        origin: String,
        verifier_key: String,
    },
    Checkpoint(StoredCheckpoint),
    /// Kept only when newer (by `timestamp`) than the stored line of that witness and size.
    Cosignature {
        size: u64,
        witness: String,
        timestamp: u64,
        line: String,
    },
}

/// What one write produced, once its batch committed.
#[derive(Debug)]
pub(crate) enum Written {
    Claim(ClaimResult),
    /// A receipt's log index.
    Index(u64),
    /// Whether a log write changed anything (false only for a cosignature not newer than the
    /// stored one).
    Changed(bool),
}

/// What one write produced inside a batch, before the batch is committed (`Err`: this write
/// alone was refused; the rest of the batch goes on).
pub(crate) type Applied = Result<Written, StoreError>;

/// The process's one writer, on either backend.
pub(crate) type Writer = openexec_store::WriterHandle<WriteOp, Written>;

fn mismatch() -> StoreError {
    corrupt("writer reply mismatch")
}

async fn write_claim(w: &Writer, op: WriteOp) -> Result<ClaimResult, StoreError> {
    match w.write(op).await? {
        Written::Claim(c) => Ok(c),
        _ => Err(mismatch()),
    }
}

async fn write_settle(w: &Writer, op: WriteOp) -> Result<Settled, StoreError> {
    match w.write(op).await? {
        Written::Index(i) => Ok(Settled::Logged(i)),
        Written::Claim(ClaimResult::Claimed) => Err(mismatch()),
        Written::Claim(c) => Ok(Settled::Refused(c)),
        _ => Err(mismatch()),
    }
}

async fn write_index(w: &Writer, op: WriteOp) -> Result<u64, StoreError> {
    match w.write(op).await? {
        Written::Index(i) => Ok(i),
        _ => Err(mismatch()),
    }
}

async fn write_log(w: &Writer, op: LogWrite) -> Result<bool, StoreError> {
    match w.write(WriteOp::Log(op)).await? {
        Written::Changed(c) => Ok(c),
        _ => Err(mismatch()),
    }
}

/// The service's store, on whichever database the configuration names.
pub struct Store(Backend);

enum Backend {
    Sqlite(Box<sqlite::SqliteStore>),
    Postgres(Box<postgres::PgStore>),
}

macro_rules! on {
    ($self:ident, $s:ident => $e:expr) => {
        match &$self.0 {
            Backend::Sqlite($s) => $e,
            Backend::Postgres($s) => $e,
        }
    };
}

/// How long a store may wait and how many connections it may open (`openexec_store`'s).
pub use openexec_store::StoreLimits;

impl Store {
    /// Open (creating if needed) and migrate the database, and check the receipt log against its
    /// last signed checkpoint.
    pub async fn open(target: &DbTarget, limits: StoreLimits) -> anyhow::Result<Store> {
        Ok(Store(match target {
            DbTarget::Sqlite(path) => Backend::Sqlite(Box::new(
                sqlite::SqliteStore::open(path, limits.timeout).await?,
            )),
            DbTarget::Postgres(url) => {
                Backend::Postgres(Box::new(postgres::PgStore::open(url, limits).await?))
            }
        }))
    }

    /// Record which log this database holds (its origin and checkpoint verifier key) on first
    /// use; afterwards refuse (`Conflict`) a process that presents another one, so that two
    /// keys or two origins never sign one log (e.g. a replica that generated its own log key).
    pub async fn bind_log_identity(
        &self,
        origin: &str,
        verifier_key: &str,
    ) -> Result<(), StoreError> {
        let op = LogWrite::Identity {
            origin: origin.to_string(),
            verifier_key: verifier_key.to_string(),
        };
        write_log(on!(self, s => s.writer()), op).await.map(drop)
    }

    /// Which backend this is, for `/health` and logs ("sqlite" or "postgres").
    pub fn backend(&self) -> &'static str {
        match &self.0 {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The receipt log's committed head (size and root), as of this process's last commit.
    pub fn log_head(&self) -> LogHead {
        on!(self, s => s.log_head())
    }

    /// A receiver that changes whenever a commit of this process moves the log's head.
    pub fn watch_log_head(&self) -> watch::Receiver<LogHead> {
        on!(self, s => s.watch_log_head())
    }

    /// Why the stored log does not match its last checkpoint, if it does not (found at start-up).
    pub fn log_problem(&self) -> Option<String> {
        on!(self, s => s.log_problem())
    }

    /// Whether this process may sign the receipt log's checkpoints now (it holds the sequencer
    /// role among the processes on this database).
    pub async fn sequencer(&self) -> Result<bool, StoreError> {
        on!(self, s => s.sequencer().await)
    }

    /// Claim (tenant, nonce) durably, and the approval with it.
    pub async fn claim(&self, claim: Claim) -> Result<ClaimResult, StoreError> {
        write_claim(on!(self, s => s.writer()), WriteOp::Claim(claim)).await
    }

    /// Claim (tenant, nonce) and record its outcome and receipt in the same commit, for an
    /// action without effects that already ran: either all of it is durable (its log index is
    /// returned) or, when the nonce is taken or the approval used, nothing is stored.
    pub async fn settle(
        &self,
        claim: Claim,
        status: ClaimStatus,
        receipt: NewReceipt,
    ) -> Result<Settled, StoreError> {
        let op = WriteOp::Settle {
            claim,
            status,
            receipt,
        };
        write_settle(on!(self, s => s.writer()), op).await
    }

    /// Record the outcome of a claimed execution with its receipt; returns its log index.
    pub async fn complete(
        &self,
        tenant_id: &str,
        nonce: &str,
        status: ClaimStatus,
        receipt: NewReceipt,
    ) -> Result<u64, StoreError> {
        let op = WriteOp::Complete {
            tenant_id: tenant_id.to_string(),
            nonce: nonce.to_string(),
            status,
            receipt,
        };
        write_index(on!(self, s => s.writer()), op).await
    }

    /// Store a receipt that belongs to no claim (a rejection). A receipt with the same hash is
    /// stored once: the earlier one's log index is returned.
    pub async fn add_receipt(&self, receipt: NewReceipt) -> Result<u64, StoreError> {
        write_index(on!(self, s => s.writer()), WriteOp::Receipt(receipt)).await
    }

    /// The claim of (tenant, nonce), with its outcome receipt if it has one.
    pub async fn lookup(
        &self,
        tenant_id: &str,
        nonce: &str,
    ) -> Result<Option<ClaimRow>, StoreError> {
        on!(self, s => s.lookup(tenant_id, nonce).await)
    }

    /// Claims whose handler has not reported back (running here, elsewhere, or dead).
    pub async fn running(&self) -> Result<Vec<ClaimRow>, StoreError> {
        on!(self, s => s.running().await)
    }

    /// The receipt of an execution's outcome if it ran, else its latest rejection.
    pub async fn receipt_for(&self, exec_id: &str) -> Result<Option<StoredReceipt>, StoreError> {
        on!(self, s => s.receipt_for(exec_id).await)
    }

    /// A receipt by its hash.
    pub async fn receipt_by_hash(&self, hash: &str) -> Result<Option<StoredReceipt>, StoreError> {
        on!(self, s => s.receipt_by_hash(hash).await)
    }

    /// Leaf data of entries [start, end), with each entry's `logged_at`.
    pub async fn log_entries(
        &self,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, Vec<u8>, String)>, StoreError> {
        on!(self, s => s.log_entries(start, end).await)
    }

    /// This process's owner id (written into the claims it makes).
    pub fn owner(&self) -> &str {
        on!(self, s => s.owner())
    }

    /// Is the process that claimed with this owner id still running? When unsure, alive: a
    /// live claim must never be declared interrupted.
    pub async fn owner_alive(&self, owner: &str) -> bool {
        on!(self, s => s.owner_alive(owner).await)
    }

    /// Forget an owner that is gone and has no claims left to recover.
    pub async fn forget_owner(&self, owner: &str) {
        on!(self, s => s.forget_owner(owner).await)
    }

    /// Is the database answering?
    pub async fn ping(&self) -> bool {
        on!(self, s => s.ping().await)
    }

    /// Stop taking writes, wait until the writer committed everything already sent to it, and
    /// close the database.
    pub async fn close(&self) {
        on!(self, s => s.close().await)
    }
}

/// The receipt log's storage (see `openexec_log::LogStore` for the contract).
impl openexec_logstore::Sequenced for Store {
    fn watch_head(&self) -> watch::Receiver<LogHead> {
        self.watch_log_head()
    }

    async fn sequencer(&self) -> Result<bool, StoreError> {
        Store::sequencer(self).await
    }
}

impl LogStore for Store {
    type Error = StoreError;

    async fn head(&self) -> Result<(u64, Hash), StoreError> {
        on!(self, s => s.head().await)
    }

    fn known_size(&self) -> u64 {
        self.log_head().size
    }

    fn problem(&self) -> Option<String> {
        self.log_problem()
    }

    async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        on!(self, s => s.nodes(ids).await)
    }

    async fn leaves(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .log_entries(start, end)
            .await?
            .into_iter()
            .map(|(_, data, _)| data)
            .collect())
    }

    async fn latest_checkpoint(
        &self,
    ) -> Result<Option<(StoredCheckpoint, Vec<String>)>, StoreError> {
        on!(self, s => s.latest_checkpoint().await)
    }

    async fn add_checkpoint(&self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        write_log(on!(self, s => s.writer()), LogWrite::Checkpoint(cp.clone()))
            .await
            .map(drop)
    }

    async fn add_cosignature(
        &self,
        size: u64,
        witness: &str,
        timestamp: u64,
        line: &str,
    ) -> Result<bool, StoreError> {
        let op = LogWrite::Cosignature {
            size,
            witness: witness.to_string(),
            timestamp,
            line: line.to_string(),
        };
        write_log(on!(self, s => s.writer()), op).await
    }
}

/// Rows of either backend.
pub(crate) use sqlx::Row as DbRow;

/// The SELECT list that reads a claim row with its outcome receipt (see [`claim_row`]).
pub(crate) const CLAIM_ROW_COLUMNS: &str =
    "e.tenant_id, e.nonce, e.exec_id, e.owner, e.status, e.template, r.log_index, r.receipt_hash, \
     r.exec_id AS r_exec_id, r.receipt, r.signature, r.key_id, r.result, r.message, r.created_at";

pub(crate) fn claim_row<R: DbRow>(r: &R) -> Result<ClaimRow, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let get = |c: &str| -> Result<String, StoreError> {
        r.try_get::<String, _>(c)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    };
    let log_index: Option<i64> = r.try_get("log_index").unwrap_or(None);
    let receipt = match log_index {
        Some(_) => Some(stored_receipt(r, "r_")?),
        None => None,
    };
    Ok(ClaimRow {
        tenant_id: get("tenant_id")?,
        nonce: get("nonce")?,
        exec_id: get("exec_id")?,
        owner: get("owner")?,
        status: ClaimStatus::parse(&get("status")?)?,
        template: get("template")?,
        receipt,
    })
}

pub(crate) fn stored_receipt<R: DbRow>(
    r: &R,
    exec_prefix: &str,
) -> Result<StoredReceipt, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let corrupt = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
    let parse = |c: &str, t: &str| -> Result<Value, StoreError> {
        serde_json::from_str(t).map_err(|e| StoreError::Corrupt(format!("{c}: {e}")))
    };
    let receipt: String = r.try_get("receipt").map_err(corrupt)?;
    let result: Option<String> = r.try_get("result").map_err(corrupt)?;
    let log_index: i64 = r.try_get("log_index").map_err(corrupt)?;
    Ok(StoredReceipt {
        log_index: u64::try_from(log_index)
            .map_err(|_| StoreError::Corrupt(format!("negative log index {log_index}")))?,
        receipt_hash: r.try_get("receipt_hash").map_err(corrupt)?,
        exec_id: r
            .try_get(format!("{exec_prefix}exec_id").as_str())
            .map_err(corrupt)?,
        receipt: parse("receipt", &receipt)?,
        signature: r.try_get("signature").map_err(corrupt)?,
        key_id: r.try_get("key_id").map_err(corrupt)?,
        result: result.map(|t| parse("result", &t)).transpose()?,
        message: r.try_get("message").map_err(corrupt)?,
        logged_at: r.try_get("created_at").map_err(corrupt)?,
    })
}

/// The refusal of a process whose log identity differs from the recorded one.
pub(crate) fn identity_conflict(
    recorded: openexec_logstore::store::IdentityMismatch,
    presented: (&str, &str),
) -> Result<(), StoreError> {
    openexec_logstore::store::identity_conflict(
        recorded,
        presented,
        openexec_logstore::store::IdentityNames {
            log: "the receipt log",
            key_setting: "OPENEXEC_LOG_KEY",
            origin_setting: "OPENEXEC_LOG_ORIGIN",
        },
    )
}

/// The writes of one batch, by kind, each with its position in the batch.
pub(crate) struct Batch<'a> {
    pub claims: Vec<(usize, &'a Claim)>,
    pub completions: Vec<(usize, &'a str, &'a str, ClaimStatus, &'a NewReceipt)>,
    pub rejections: Vec<(usize, &'a NewReceipt)>,
}

impl<'a> Batch<'a> {
    pub(crate) fn of(ops: &'a [WriteOp]) -> Batch<'a> {
        let mut b = Batch {
            claims: Vec::new(),
            completions: Vec::new(),
            rejections: Vec::new(),
        };
        for (i, op) in ops.iter().enumerate() {
            match op {
                WriteOp::Claim(c) | WriteOp::Settle { claim: c, .. } => b.claims.push((i, c)),
                WriteOp::Complete {
                    tenant_id,
                    nonce,
                    status,
                    receipt,
                } => b.completions.push((i, tenant_id, nonce, *status, receipt)),
                WriteOp::Receipt(r) => b.rejections.push((i, r)),
                WriteOp::Log(_) => {}
            }
        }
        b
    }
}

/// The outcome a write settles its claim with in the same commit ([`WriteOp::Settle`]), if it
/// does: the claim row is inserted with this status and receipt hash instead of `running`.
pub(crate) fn settled_with(op: &WriteOp) -> Option<(ClaimStatus, &NewReceipt)> {
    match op {
        WriteOp::Settle {
            status, receipt, ..
        } => Some((*status, receipt)),
        _ => None,
    }
}

/// A claim of the batch that won its nonce (and approval): a plain claim is answered
/// `Claimed`; a settled one's receipt joins `settled`, to be logged with the batch.
pub(crate) fn won<'a>(
    ops: &'a [WriteOp],
    i: usize,
    out: &mut [Option<Applied>],
    settled: &mut Vec<(usize, &'a NewReceipt)>,
) {
    match settled_with(&ops[i]) {
        Some((_, r)) => settled.push((i, r)),
        None => out[i] = Some(Ok(Written::Claim(ClaimResult::Claimed))),
    }
}

/// The receipts a batch logs, in batch order: the outcomes of claims that were still running
/// (`updated`), of claims settled in this batch (`settled`: claimed, so their receipt is new),
/// then rejections. An outcome for a claim that is not running fails alone.
pub(crate) fn receipts_to_log<'a>(
    completions: Vec<(usize, &'a str, &'a str, ClaimStatus, &'a NewReceipt)>,
    updated: &std::collections::HashSet<(String, String)>,
    settled: Vec<(usize, &'a NewReceipt)>,
    rejections: Vec<(usize, &'a NewReceipt)>,
    out: &mut [Option<Applied>],
) -> Vec<(usize, &'a NewReceipt)> {
    let mut receipts: Vec<(usize, &NewReceipt)> = settled;
    for (i, t, n, _, r) in completions {
        if updated.contains(&(t.to_string(), n.to_string())) {
            receipts.push((i, r));
        } else {
            out[i] = Some(Err(StoreError::Corrupt(format!(
                "no running claim for tenant '{t}' nonce '{n}'"
            ))));
        }
    }
    receipts.extend(rejections);
    receipts.sort_by_key(|(i, _)| *i);
    receipts
}

/// Give each receipt its log index: the stored one for a receipt already logged (`index`), else
/// the next. Returns the rows to insert, in index order.
pub(crate) fn assign_indices<'a>(
    receipts: &[(usize, &'a NewReceipt)],
    index: &mut HashMap<String, i64>,
    mut next: i64,
    out: &mut [Option<Applied>],
) -> Vec<(i64, &'a NewReceipt)> {
    let mut rows = Vec::new();
    for (i, r) in receipts {
        let idx = match index.get(&r.receipt_hash) {
            Some(idx) => *idx,
            None => {
                let idx = next;
                next += 1;
                index.insert(r.receipt_hash.clone(), idx);
                rows.push((idx, *r));
                idx
            }
        };
        out[*i] = Some(Ok(Written::Index(idx as u64)));
    }
    rows
}

/// The results of a batch's writes, once every one has one.
pub(crate) fn all_applied(out: Vec<Option<Applied>>) -> Result<Vec<Applied>, StoreError> {
    out.into_iter()
        .map(|a| a.ok_or_else(|| corrupt("a write of the batch got no result")))
        .collect()
}

/// A log write's result as the writer answers it.
pub(crate) fn log_written(r: Result<bool, StoreError>) -> Result<Vec<Applied>, StoreError> {
    Ok(vec![r.map(Written::Changed)])
}

pub(crate) fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
