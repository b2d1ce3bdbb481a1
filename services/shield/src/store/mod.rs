//! ClawShield's durable state: proposals and their votes, the breakers' counters (budgets, loop
//! counts, freezes), the policy in force, roster versions, and the decision log (its entries,
//! tree nodes and checkpoints). Only this module knows which database is used: [`Store`] is one
//! type over SQLite ([`sqlite`]) or PostgreSQL ([`postgres`], several replicas on one database).
//!
//! Writes go through `openexec_store`'s group-commit writer (one per process): every write
//! waiting when a commit starts shares it, and nothing is answered before it is durable. Each
//! batch runs under the database's one write order — SQLite's `BEGIN IMMEDIATE`, PostgreSQL's
//! row lock on `log_state`, taken first — so the breakers' checks in a batch (freeze, loop
//! count, budget reservation) are exact across processes and replicas, and the decision log
//! gets one dense order. The statements of a batch are written once ([`apply_ops!`]) for both
//! backends; only appending to the tree differs.

use std::collections::HashMap;

use openexec_log::{Hash, LogStore, NodeId, StoredCheckpoint};
use serde_json::Value;
use tokio::sync::watch;

pub(crate) mod postgres;
pub(crate) mod sqlite;

pub use openexec_logstore::store::tree_check::LeafSource;
pub use openexec_logstore::LogHead;
pub use openexec_store::{corrupt, unavailable, DbTarget, StoreError};

/// How the writer batches: at most 256 writes a commit; on PostgreSQL a batch that loses a race
/// is run again, up to 5 times in all.
pub(crate) fn writer_config(attempts: usize) -> openexec_store::WriterConfig {
    openexec_store::WriterConfig {
        queue: 4096,
        max_batch: 256,
        attempts,
        metrics: openexec_store::WriterMetrics {
            batch_size: "clawshield_store_batch_size",
            seconds: "clawshield_store_seconds",
            retries: "clawshield_store_retries_total",
        },
    }
}

/// The decision log's leaves for the start-up tree check: every entry in log order.
pub(crate) const DECISION_LEAVES: LeafSource = LeafSource {
    query: "SELECT log_index, entry FROM decisions ORDER BY log_index",
    leaf: |c| match c {
        [entry] => Ok(entry.as_bytes().to_vec()),
        _ => Err(format!("{} columns, not 1", c.len())),
    },
    entry: "decision log entry",
    record: "decision",
};

/// A proposal as stored: the columns queries select on, and the whole proposal (`doc`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProposalRow {
    pub proposal_id: String,
    pub tenant_id: String,
    pub nonce: String,
    pub agent_id: String,
    pub action: String,
    pub request_hash: String,
    pub status: String,
    pub version: i64,
    /// POSIX seconds after which a pending proposal expires; 0 when it is not pending.
    pub pending_until: i64,
    pub created_at: String,
    /// The proposal's JSON (`crate::model::Proposal`).
    pub doc: String,
}

/// A proposal row as the JSON array SQLite's batch insert reads (`json_each`), in
/// [`PROPOSAL_COLUMNS`] order.
pub(crate) fn proposal_json(r: &ProposalRow) -> Value {
    serde_json::json!([
        r.proposal_id,
        r.tenant_id,
        r.nonce,
        r.agent_id,
        r.action,
        r.request_hash,
        r.status,
        r.version,
        r.pending_until,
        r.created_at,
        r.doc
    ])
}

pub(crate) const PROPOSAL_COLUMNS: &str = "proposal_id, tenant_id, nonce, agent_id, action, \
     request_hash, status, version, pending_until, created_at, doc";

pub(crate) type ProposalTuple = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
    String,
);

impl From<ProposalTuple> for ProposalRow {
    fn from(t: ProposalTuple) -> ProposalRow {
        ProposalRow {
            proposal_id: t.0,
            tenant_id: t.1,
            nonce: t.2,
            agent_id: t.3,
            action: t.4,
            request_hash: t.5,
            status: t.6,
            version: t.7,
            pending_until: t.8,
            created_at: t.9,
            doc: t.10,
        }
    }
}

/// A decision log entry to append: its id, tenant, JCS text and `logged_at`.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub decision_id: String,
    pub tenant_id: Option<String>,
    pub jcs: String,
    pub logged_at: String,
}

impl NewEntry {
    /// An entry object (SPEC §9) as the log keeps it.
    pub fn of(entry: &Value) -> NewEntry {
        let s = |k: &str| entry.get(k).and_then(Value::as_str).map(str::to_string);
        NewEntry {
            decision_id: s("decision_id").unwrap_or_default(),
            tenant_id: s("tenant_id"),
            jcs: String::from_utf8_lossy(&openexec_core::json::canonicalize(entry)).into_owned(),
            logged_at: s("logged_at").unwrap_or_default(),
        }
    }
}

/// A breaker the writer applies in the batch's transaction (exact across replicas). When one
/// trips, the proposal is stored denied with its code instead (`Breakers::deny`).
#[derive(Debug, Clone, Default)]
pub struct Breakers {
    /// Refuse when the tenant or the agent is frozen.
    pub freeze: bool,
    /// Count this intent in its loop window; refuse past `max` (and during a cool-down).
    pub loop_count: Option<LoopCount>,
    /// Reserve `cost` in the tenant's budget window, refusing past `limit`.
    pub budget: Option<Reserve>,
}

#[derive(Debug, Clone)]
pub struct LoopCount {
    pub intent_hash: String,
    pub window_start: i64,
    pub max: i64,
    pub now: i64,
    pub cooldown: i64,
}

#[derive(Debug, Clone)]
pub struct Reserve {
    pub window_start: i64,
    pub cost: i64,
    pub limit: i64,
}

/// The proposal (row and decision entry) a breaker's code turns a new proposal into.
pub type Denial = std::sync::Arc<dyn Fn(&str) -> (ProposalRow, NewEntry) + Send + Sync>;

/// A new proposal with its first decision entry.
#[derive(Clone)]
pub struct NewProposal {
    pub row: ProposalRow,
    pub entry: NewEntry,
    pub breakers: Breakers,
    /// The same proposal denied by a breaker (`frozen`, `loop_detected`, `budget_exceeded`),
    /// with its entry: what the writer stores when that breaker trips.
    pub denial: Denial,
    /// A policy bundle to remember (an activation proposal's), by hash.
    pub bundle: Option<(String, String)>,
    /// Extra entries after the decision (an auto-approved activation's `policy` entry).
    pub extra: Vec<NewEntry>,
    /// Put this policy in force (an auto-approved activation).
    pub activate: Option<String>,
}

/// A change of a proposal (a vote, its conclusion, an expiry), compare-and-set on `version`.
#[derive(Debug, Clone)]
pub struct Update {
    pub expected_version: i64,
    /// The proposal after the change (its version is `expected_version + 1`).
    pub row: ProposalRow,
    pub vote: Option<VoteRow>,
    pub entries: Vec<NewEntry>,
    /// Give a reservation back: (window_start, cost).
    pub release: Option<(i64, i64)>,
    /// Put this policy in force (an approved activation).
    pub activate: Option<String>,
}

#[derive(Debug, Clone)]
pub struct VoteRow {
    pub voter: String,
    pub vote: String,
    pub reason: String,
    pub signature: Option<String>,
}

/// A write the writer commits.
pub(crate) enum WriteOp {
    Propose(Box<NewProposal>),
    Update(Box<Update>),
    Freeze {
        tenant_id: String,
        agent_id: String,
        by: String,
        on: bool,
    },
    /// Put the first policy in force, if none is.
    InitialPolicy {
        hash: String,
        bundle: String,
        entry: NewEntry,
    },
    /// Entries that belong to no proposal (a rate limit tripping).
    Entries(Vec<NewEntry>),
    /// Record a roster's hash; its version.
    Roster(String),
    Log(LogWrite),
}

pub(crate) enum LogWrite {
    Identity {
        origin: String,
        verifier_key: String,
    },
    Checkpoint(StoredCheckpoint),
    Cosignature {
        size: u64,
        witness: String,
        timestamp: u64,
        line: String,
    },
}

/// What a proposal write found.
#[derive(Debug, Clone)]
pub enum Proposed {
    /// Stored (possibly denied by a breaker: see its status).
    New(ProposalRow),
    /// (tenant, nonce) was already proposed: the stored proposal.
    Existing(ProposalRow),
}

#[derive(Debug)]
pub(crate) enum Written {
    Proposed(Box<Proposed>),
    /// An update applied (false: the proposal changed since it was read).
    Updated(bool),
    Changed(bool),
    Version(i64),
}

pub(crate) type Applied = Result<Written, StoreError>;
pub(crate) type Writer = openexec_store::WriterHandle<WriteOp, Written>;

fn mismatch() -> StoreError {
    corrupt("writer reply mismatch")
}

/// The statements of one batch, written once for both backends: `$conn` is a `&mut` connection
/// inside the batch's transaction (SQLite or PostgreSQL: the same SQL text, `$n` placeholders in
/// order), `$now` the batch's time in POSIX seconds. Evaluates to `Result<(Vec<Applied>,
/// Vec<NewEntry>), sqlx::Error>`: each op's answer, and the entries to append, in order.
macro_rules! apply_ops {
    ($conn:expr, $ops:expr, $now_text:expr, $insert_proposals:path) => {{
        async {
            let conn = $conn;
            let now_text: &str = $now_text;
            let mut out: Vec<$crate::store::Applied> = Vec::with_capacity($ops.len());
            let mut entries: Vec<$crate::store::NewEntry> = Vec::new();
            // Every new proposal of the batch in one statement (the backend's): (tenant, nonce)
            // is unique, so of two proposals of one nonce (two replicas, or twice in this batch)
            // exactly one inserts, before any breaker counts it; the others are `Existing`.
            let new_rows: Vec<&$crate::store::ProposalRow> = $ops
                .iter()
                .filter_map(|op| match op {
                    $crate::store::WriteOp::Propose(p) => Some(&p.row),
                    _ => None,
                })
                .collect();
            let mut inserted: std::collections::HashSet<String> = if new_rows.is_empty() {
                Default::default()
            } else {
                $insert_proposals(&mut *conn, &new_rows).await?
            };
            // The freezes, read once per batch (kept current by the batch's own freeze writes).
            let mut frozen: std::collections::HashSet<(String, String)> = if $ops
                .iter()
                .any(|op| matches!(op, $crate::store::WriteOp::Propose(p) if p.breakers.freeze))
            {
                sqlx::query_as::<_, (String, String)>("SELECT tenant_id, agent_id FROM freezes")
                    .fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .collect()
            } else {
                Default::default()
            };
            for op in $ops.iter() {
                use $crate::store::{Proposed, WriteOp, Written};
                match op {
                    WriteOp::Propose(p) => {
                        if !inserted.remove(&p.row.proposal_id) {
                            let existing: Option<$crate::store::ProposalTuple> = sqlx::query_as(&format!(
                                "SELECT {} FROM proposals WHERE proposal_id = $1",
                                $crate::store::PROPOSAL_COLUMNS
                            ))
                            .bind(&p.row.proposal_id)
                            .fetch_optional(&mut *conn)
                            .await?;
                            out.push(match existing {
                                Some(t) => Ok(Written::Proposed(Box::new(Proposed::Existing(t.into())))),
                                None => Err($crate::store::corrupt(format!(
                                    "proposal '{}' neither inserted nor found", p.row.proposal_id
                                ))),
                            });
                            continue;
                        }
                        let mut tripped: Option<&str> = None;
                        if p.breakers.freeze
                            && (frozen.contains(&(p.row.tenant_id.clone(), String::new()))
                                || frozen.contains(&(p.row.tenant_id.clone(), p.row.agent_id.clone())))
                        {
                            tripped = Some("frozen");
                        }
                        if let (None, Some(l)) = (tripped, &p.breakers.loop_count) {
                            let (n, blocked): (i64, i64) = sqlx::query_as(
                                "INSERT INTO loop_counts (tenant_id, agent_id, intent_hash, window_start, n, blocked_until) \
                                 VALUES ($1, $2, $3, $4, 1, 0) ON CONFLICT (tenant_id, agent_id, intent_hash) DO UPDATE SET \
                                 n = CASE WHEN loop_counts.window_start = excluded.window_start THEN loop_counts.n + 1 ELSE 1 END, \
                                 window_start = excluded.window_start RETURNING n, blocked_until",
                            )
                            .bind(&p.row.tenant_id)
                            .bind(&p.row.agent_id)
                            .bind(&l.intent_hash)
                            .bind(l.window_start)
                            .fetch_one(&mut *conn)
                            .await?;
                            if blocked > l.now {
                                tripped = Some("loop_detected");
                            } else if n > l.max {
                                tripped = Some("loop_detected");
                                sqlx::query(
                                    "UPDATE loop_counts SET blocked_until = $4 WHERE tenant_id = $1 AND agent_id = $2 AND intent_hash = $3",
                                )
                                .bind(&p.row.tenant_id)
                                .bind(&p.row.agent_id)
                                .bind(&l.intent_hash)
                                .bind(l.now + l.cooldown)
                                .execute(&mut *conn)
                                .await?;
                            }
                        }
                        if let (None, Some(b)) = (tripped, &p.breakers.budget) {
                            sqlx::query(
                                "INSERT INTO budgets (tenant_id, window_start, reserved) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
                            )
                            .bind(&p.row.tenant_id)
                            .bind(b.window_start)
                            .execute(&mut *conn)
                            .await?;
                            let done = sqlx::query(
                                "UPDATE budgets SET reserved = reserved + $3 WHERE tenant_id = $1 AND window_start = $2 AND reserved + $3 <= $4",
                            )
                            .bind(&p.row.tenant_id)
                            .bind(b.window_start)
                            .bind(b.cost)
                            .bind(b.limit)
                            .execute(&mut *conn)
                            .await?;
                            if done.rows_affected() == 0 {
                                tripped = Some("budget_exceeded");
                            }
                        }
                        let denied = tripped.map(|code| (p.denial)(code));
                        let (row, entry, extra, activate) = match &denied {
                            None => (&p.row, &p.entry, &p.extra[..], p.activate.as_ref()),
                            Some((row, entry)) => (row, entry, &[][..], None),
                        };
                        if let Some((hash, bundle)) = &p.bundle {
                            sqlx::query("INSERT INTO policy_bundles (policy_hash, bundle) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                                .bind(hash)
                                .bind(bundle)
                                .execute(&mut *conn)
                                .await?;
                        }
                        if denied.is_some() {
                            sqlx::query(
                                "UPDATE proposals SET status = $2, version = $3, pending_until = $4, doc = $5 WHERE proposal_id = $1",
                            )
                            .bind(&row.proposal_id)
                            .bind(&row.status)
                            .bind(row.version)
                            .bind(row.pending_until)
                            .bind(&row.doc)
                            .execute(&mut *conn)
                            .await?;
                        }
                        if let Some(hash) = activate {
                            $crate::store::activate!(conn, hash, now_text);
                        }
                        entries.push(entry.clone());
                        entries.extend(extra.iter().cloned());
                        out.push(Ok(Written::Proposed(Box::new(Proposed::New(row.clone())))));
                    }
                    WriteOp::Update(u) => {
                        let done = sqlx::query(
                            "UPDATE proposals SET status = $3, version = $4, pending_until = $5, doc = $6 \
                             WHERE proposal_id = $1 AND version = $2",
                        )
                        .bind(&u.row.proposal_id)
                        .bind(u.expected_version)
                        .bind(&u.row.status)
                        .bind(u.row.version)
                        .bind(u.row.pending_until)
                        .bind(&u.row.doc)
                        .execute(&mut *conn)
                        .await?;
                        if done.rows_affected() == 0 {
                            out.push(Ok(Written::Updated(false)));
                            continue;
                        }
                        if let Some(v) = &u.vote {
                            sqlx::query(
                                "INSERT INTO votes (proposal_id, voter, vote, reason, signature, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                            )
                            .bind(&u.row.proposal_id)
                            .bind(&v.voter)
                            .bind(&v.vote)
                            .bind(&v.reason)
                            .bind(&v.signature)
                            .bind(now_text)
                            .execute(&mut *conn)
                            .await?;
                        }
                        if let Some((window, cost)) = u.release {
                            sqlx::query(
                                "UPDATE budgets SET reserved = reserved - $3 WHERE tenant_id = $1 AND window_start = $2",
                            )
                            .bind(&u.row.tenant_id)
                            .bind(window)
                            .bind(cost)
                            .execute(&mut *conn)
                            .await?;
                        }
                        if let Some(hash) = &u.activate {
                            $crate::store::activate!(conn, hash, now_text);
                        }
                        entries.extend(u.entries.iter().cloned());
                        out.push(Ok(Written::Updated(true)));
                    }
                    WriteOp::Freeze { tenant_id, agent_id, by, on } => {
                        let done = if *on {
                            sqlx::query(
                                "INSERT INTO freezes (tenant_id, agent_id, frozen_by, frozen_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                            )
                            .bind(tenant_id)
                            .bind(agent_id)
                            .bind(by)
                            .bind(now_text)
                            .execute(&mut *conn)
                            .await?
                        } else {
                            sqlx::query("DELETE FROM freezes WHERE tenant_id = $1 AND agent_id = $2")
                                .bind(tenant_id)
                                .bind(agent_id)
                                .execute(&mut *conn)
                                .await?
                        };
                        if *on {
                            frozen.insert((tenant_id.clone(), agent_id.clone()));
                        } else {
                            frozen.remove(&(tenant_id.clone(), agent_id.clone()));
                        }
                        out.push(Ok(Written::Changed(done.rows_affected() > 0)));
                    }
                    WriteOp::InitialPolicy { hash, bundle, entry } => {
                        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM policy_state")
                            .fetch_one(&mut *conn)
                            .await?;
                        if n > 0 {
                            out.push(Ok(Written::Changed(false)));
                            continue;
                        }
                        sqlx::query("INSERT INTO policy_bundles (policy_hash, bundle) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                            .bind(hash)
                            .bind(bundle)
                            .execute(&mut *conn)
                            .await?;
                        $crate::store::activate!(conn, hash, now_text);
                        entries.push(entry.clone());
                        out.push(Ok(Written::Changed(true)));
                    }
                    WriteOp::Entries(list) => {
                        entries.extend(list.iter().cloned());
                        out.push(Ok(Written::Changed(true)));
                    }
                    WriteOp::Roster(hash) => {
                        let found: Option<i64> =
                            sqlx::query_scalar("SELECT version FROM roster_versions WHERE roster_hash = $1")
                                .bind(hash)
                                .fetch_optional(&mut *conn)
                                .await?;
                        let v = match found {
                            Some(v) => v,
                            None => {
                                let next: i64 = sqlx::query_scalar(
                                    "SELECT COALESCE(MAX(version), 0) + 1 FROM roster_versions",
                                )
                                .fetch_one(&mut *conn)
                                .await?;
                                sqlx::query("INSERT INTO roster_versions (version, roster_hash) VALUES ($1, $2)")
                                    .bind(next)
                                    .bind(hash)
                                    .execute(&mut *conn)
                                    .await?;
                                next
                            }
                        };
                        out.push(Ok(Written::Version(v)));
                    }
                    WriteOp::Log(_) => out.push(Err($crate::store::corrupt("a log write in a batch"))),
                }
            }
            Ok::<_, sqlx::Error>((out, entries))
        }
        .await
    }};
}
pub(crate) use apply_ops;

/// Put `hash` in force (inside a batch): the policy_state row, one version up.
macro_rules! activate {
    ($conn:expr, $hash:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO policy_state (id, policy_hash, version, activated_at) VALUES (1, $1, 1, $2) \
             ON CONFLICT (id) DO UPDATE SET policy_hash = excluded.policy_hash, \
             version = policy_state.version + 1, activated_at = excluded.activated_at",
        )
        .bind($hash)
        .bind($now)
        .execute(&mut *$conn)
        .await?
    };
}
pub(crate) use activate;

/// The store, on whichever database the configuration names.
pub struct Store(Backend);

enum Backend {
    Sqlite(sqlite::SqliteStore),
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

/// The policy in force: its hash and how many activations there have been.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyState {
    pub policy_hash: String,
    pub version: i64,
}

/// A stored decision log entry.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    pub log_index: u64,
    pub tenant_id: Option<String>,
    pub entry: String,
    pub logged_at: String,
}

fn db(e: sqlx::Error) -> StoreError {
    unavailable(e)
}

impl Store {
    /// Open (creating if needed) and migrate the database; check the decision log against its
    /// last signed checkpoint.
    pub async fn open(target: &DbTarget, limits: StoreLimits) -> anyhow::Result<Store> {
        Ok(Store(match target {
            DbTarget::Sqlite(path) => {
                Backend::Sqlite(sqlite::SqliteStore::open(path, limits.timeout).await?)
            }
            DbTarget::Postgres(url) => {
                Backend::Postgres(Box::new(postgres::PgStore::open(url, limits).await?))
            }
        }))
    }

    fn writer(&self) -> &Writer {
        on!(self, s => &s.writer)
    }

    pub fn backend(&self) -> &'static str {
        match &self.0 {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub async fn propose(&self, p: NewProposal) -> Result<Proposed, StoreError> {
        match self.writer().write(WriteOp::Propose(Box::new(p))).await? {
            Written::Proposed(p) => Ok(*p),
            _ => Err(mismatch()),
        }
    }

    /// Apply an update unless the proposal changed since it was read (`Ok(false)`).
    pub async fn update(&self, u: Update) -> Result<bool, StoreError> {
        match self.writer().write(WriteOp::Update(Box::new(u))).await? {
            Written::Updated(b) => Ok(b),
            _ => Err(mismatch()),
        }
    }

    async fn changed(&self, op: WriteOp) -> Result<bool, StoreError> {
        match self.writer().write(op).await? {
            Written::Changed(b) => Ok(b),
            _ => Err(mismatch()),
        }
    }

    /// Freeze (or unfreeze) a tenant (`agent_id` empty) or an agent; whether anything changed.
    pub async fn freeze(
        &self,
        tenant_id: &str,
        agent_id: &str,
        by: &str,
        on: bool,
    ) -> Result<bool, StoreError> {
        self.changed(WriteOp::Freeze {
            tenant_id: tenant_id.into(),
            agent_id: agent_id.into(),
            by: by.into(),
            on,
        })
        .await
    }

    /// Put the first policy in force if none is (false: one already is).
    pub async fn initial_policy(
        &self,
        hash: &str,
        bundle: &str,
        entry: Value,
    ) -> Result<bool, StoreError> {
        self.changed(WriteOp::InitialPolicy {
            hash: hash.into(),
            bundle: bundle.into(),
            entry: NewEntry::of(&entry),
        })
        .await
    }

    pub async fn append_entries(&self, entries: Vec<Value>) -> Result<(), StoreError> {
        self.changed(WriteOp::Entries(entries.iter().map(NewEntry::of).collect()))
            .await
            .map(drop)
    }

    /// The version of the roster with this hash (a new one when it is new).
    pub async fn roster_version(&self, hash: &str) -> Result<i64, StoreError> {
        match self.writer().write(WriteOp::Roster(hash.into())).await? {
            Written::Version(v) => Ok(v),
            _ => Err(mismatch()),
        }
    }

    async fn log_write(&self, w: LogWrite) -> Result<bool, StoreError> {
        self.changed(WriteOp::Log(w)).await
    }

    /// Record which log this database holds; refuse a process presenting another.
    pub async fn bind_log_identity(
        &self,
        origin: &str,
        verifier_key: &str,
    ) -> Result<(), StoreError> {
        self.log_write(LogWrite::Identity {
            origin: origin.into(),
            verifier_key: verifier_key.into(),
        })
        .await
        .map(drop)
    }

    pub async fn proposal(&self, id: &str) -> Result<Option<ProposalRow>, StoreError> {
        let sql = format!("SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE proposal_id = $1");
        on!(self, s => {
            let t: Option<ProposalTuple> = sqlx::query_as(&sql).bind(id).fetch_optional(&s.read).await.map_err(db)?;
            Ok(t.map(Into::into))
        })
    }

    /// A tenant's proposals of one status, oldest first.
    pub async fn proposals_of(
        &self,
        tenant_id: &str,
        status: &str,
        limit: i64,
    ) -> Result<Vec<ProposalRow>, StoreError> {
        let sql = format!(
            "SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE tenant_id = $1 AND status = $2 \
             ORDER BY created_at, proposal_id LIMIT $3"
        );
        on!(self, s => {
            let t: Vec<ProposalTuple> = sqlx::query_as(&sql).bind(tenant_id).bind(status).bind(limit).fetch_all(&s.read).await.map_err(db)?;
            Ok(t.into_iter().map(Into::into).collect())
        })
    }

    /// Pending proposals whose time is up at `now` (POSIX seconds).
    pub async fn due(&self, now: i64, limit: i64) -> Result<Vec<ProposalRow>, StoreError> {
        let sql = format!(
            "SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE status = 'pending' AND pending_until <= $1 \
             ORDER BY pending_until LIMIT $2"
        );
        on!(self, s => {
            let t: Vec<ProposalTuple> = sqlx::query_as(&sql).bind(now).bind(limit).fetch_all(&s.read).await.map_err(db)?;
            Ok(t.into_iter().map(Into::into).collect())
        })
    }

    pub async fn entry(&self, decision_id: &str) -> Result<Option<StoredEntry>, StoreError> {
        let sql =
            "SELECT log_index, tenant_id, entry, logged_at FROM decisions WHERE decision_id = $1";
        on!(self, s => {
            let t: Option<(i64, Option<String>, String, String)> = sqlx::query_as(sql).bind(decision_id).fetch_optional(&s.read).await.map_err(db)?;
            Ok(t.map(|(i, tenant_id, entry, logged_at)| StoredEntry { log_index: i as u64, tenant_id, entry, logged_at }))
        })
    }

    /// An intent's loop counter: (window_start, count, blocked_until).
    pub async fn loop_state(
        &self,
        tenant_id: &str,
        agent_id: &str,
        intent_hash: &str,
    ) -> Result<Option<(i64, i64, i64)>, StoreError> {
        let sql = "SELECT window_start, n, blocked_until FROM loop_counts WHERE tenant_id = $1 AND agent_id = $2 AND intent_hash = $3";
        on!(self, s => sqlx::query_as(sql).bind(tenant_id).bind(agent_id).bind(intent_hash).fetch_optional(&s.read).await.map_err(db))
    }

    /// What the tenant has reserved in a budget window.
    pub async fn reserved(&self, tenant_id: &str, window_start: i64) -> Result<i64, StoreError> {
        let sql = "SELECT reserved FROM budgets WHERE tenant_id = $1 AND window_start = $2";
        on!(self, s => {
            let n: Option<i64> = sqlx::query_scalar(sql).bind(tenant_id).bind(window_start).fetch_optional(&s.read).await.map_err(db)?;
            Ok(n.unwrap_or(0))
        })
    }

    pub async fn policy_state(&self) -> Result<Option<PolicyState>, StoreError> {
        let sql = "SELECT policy_hash, version FROM policy_state WHERE id = 1";
        on!(self, s => {
            let t: Option<(String, i64)> = sqlx::query_as(sql).fetch_optional(&s.read).await.map_err(db)?;
            Ok(t.map(|(policy_hash, version)| PolicyState { policy_hash, version }))
        })
    }

    pub async fn bundle(&self, hash: &str) -> Result<Option<String>, StoreError> {
        let sql = "SELECT bundle FROM policy_bundles WHERE policy_hash = $1";
        on!(self, s => sqlx::query_scalar(sql).bind(hash).fetch_optional(&s.read).await.map_err(db))
    }

    /// Is the database answering (and the writer running)?
    pub async fn ping(&self) -> bool {
        on!(self, s => s.writer.is_up() && sqlx::query("SELECT 1").execute(&s.read).await.is_ok())
    }

    pub fn log_problem(&self) -> Option<String> {
        on!(self, s => s.log_problem.clone())
    }

    pub fn watch_head(&self) -> watch::Receiver<LogHead> {
        on!(self, s => s.head.clone())
    }

    /// Stop taking writes, wait until everything sent was committed, close the database.
    pub async fn close(&self) {
        on!(self, s => s.close().await)
    }
}

impl openexec_logstore::Sequenced for Store {
    fn watch_head(&self) -> watch::Receiver<LogHead> {
        Store::watch_head(self)
    }

    async fn sequencer(&self) -> Result<bool, StoreError> {
        match &self.0 {
            Backend::Sqlite(s) => s.sequencer.try_hold(),
            Backend::Postgres(s) => s.sequencer.try_hold().await,
        }
    }
}

impl LogStore for Store {
    type Error = StoreError;

    async fn head(&self) -> Result<(u64, Hash), StoreError> {
        on!(self, s => s.head().await)
    }

    fn known_size(&self) -> u64 {
        on!(self, s => s.head.borrow().size)
    }

    fn problem(&self) -> Option<String> {
        self.log_problem()
    }

    async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        on!(self, s => s.nodes(ids).await)
    }

    async fn leaves(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let sql = "SELECT entry FROM decisions WHERE log_index >= $1 AND log_index < $2 ORDER BY log_index";
        on!(self, s => {
            let v: Vec<String> = sqlx::query_scalar(sql).bind(start as i64).bind(end as i64).fetch_all(&s.read).await.map_err(db)?;
            Ok(v.into_iter().map(String::into_bytes).collect())
        })
    }

    async fn latest_checkpoint(
        &self,
    ) -> Result<Option<(StoredCheckpoint, Vec<String>)>, StoreError> {
        on!(self, s => s.latest_checkpoint().await)
    }

    async fn add_checkpoint(&self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        self.log_write(LogWrite::Checkpoint(cp.clone()))
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
        self.log_write(LogWrite::Cosignature {
            size,
            witness: witness.into(),
            timestamp,
            line: line.into(),
        })
        .await
    }
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
            log: "the decision log",
            key_setting: "CLAWSHIELD_LOG_KEY",
            origin_setting: "CLAWSHIELD_LOG_ORIGIN",
        },
    )
}

pub(crate) fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
