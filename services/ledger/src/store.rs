//! ClawLedger's database: per watched origin the last verified checkpoint and frontier, a
//! catch-up in progress, the mirrored entries and tree nodes, the cosigned checkpoints and the
//! alerts.
//!
//! Two backends behind one [`Store`]: SQLite (WAL, `synchronous=FULL`, migrations in
//! `migrations/sqlite`) and PostgreSQL (migrations in `migrations/postgres`). Nothing outside
//! this file knows which one is in use. Most statements are written once per backend side by
//! side (see [`per_backend!`]); they differ in placeholders (`?` / `$1`) and in how a batch of
//! rows is passed (a JSON array read with `json_each` / arrays read with `UNNEST`).
//!
//! A database that cannot be reached is never fatal: every method returns the error (the HTTP
//! layer answers 503, the witness retries next round), and PostgreSQL's migrations run on the
//! first use that reaches the server, so ClawLedger also starts while PostgreSQL is down.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use openexec_log::{Frontier, Hash, NodeId};
use openexec_store::{DbSetting, DbTarget, PoolLimits};
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::{PgPool, SqlitePool};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Default number of pooled connections (`CLAWLEDGER_DB_POOL_SIZE`).
pub const DEFAULT_POOL_SIZE: u32 = 8;
/// Default connect/acquire timeout (`CLAWLEDGER_DB_TIMEOUT_MS`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How SQLite write transactions start: taking the write lock at once (waiting for it up to the
/// busy timeout), so that a transaction that read first never fails to upgrade its lock.
const BEGIN_WRITE_SQLITE: &str = "BEGIN IMMEDIATE";
/// Rows per insert statement when a chunk of entries is stored.
const ROWS_PER_STATEMENT: usize = 1000;

/// A validated `CLAWLEDGER_DB_URL` (`openexec_store::DbTarget`). Its `Debug`/`Display` never
/// show a password.
pub type DbUrl = DbTarget;

/// How `CLAWLEDGER_DB_URL` is named in its messages.
pub const DB_URL: DbSetting = DbSetting {
    name: "CLAWLEDGER_DB_URL",
    example: "clawledger.db",
    keeps: "the mirror and the cosigned checkpoints",
};

/// Read a database URL: `postgres://…` or `postgresql://…` (anything PostgreSQL's connection
/// URIs allow), or, as OpenExec does (SQLAlchemy style), `sqlite:///relative.db`,
/// `sqlite:////absolute.db`, or `sqlite:path`. In-memory SQLite databases are refused: the
/// mirror and the cosigned checkpoints must outlive the process.
pub fn parse_db_url(url: &str) -> anyhow::Result<DbUrl> {
    Ok(DbTarget::parse(url, &DB_URL)?)
}

/// Where the database is and how to pool connections to it.
#[derive(Clone, Debug)]
pub struct DbConfig {
    pub url: DbUrl,
    /// Most connections open at once.
    pub pool_size: u32,
    /// How long to wait for a connection (connecting included); SQLite's busy timeout too.
    pub timeout: Duration,
}

impl DbConfig {
    /// `url` with the default pool size and timeout.
    pub fn new(url: DbUrl) -> DbConfig {
        DbConfig {
            url,
            pool_size: DEFAULT_POOL_SIZE,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What ClawLedger last verified of one log.
#[derive(Clone, Debug)]
pub struct LogState {
    pub size: u64,
    pub root: Hash,
    pub frontier: Frontier,
}

/// A catch-up in progress: entries `[base_size, frontier.size())` are mirrored but not verified.
#[derive(Clone, Debug)]
pub struct Catchup {
    /// The verified size it started from.
    pub base_size: u64,
    /// The log's frontier after the last stored chunk.
    pub frontier: Frontier,
    /// The checkpoint it was (last) working towards.
    pub target_size: u64,
    pub target_root: Hash,
}

/// One checkpoint ClawLedger cosigned.
#[derive(Clone, Debug)]
pub struct Cosigned {
    pub size: u64,
    pub note: String,
    pub line: String,
}

/// An alert as `GET /alerts` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    pub id: i64,
    pub origin: String,
    pub kind: String,
    pub detail: String,
    pub at: String,
}

/// One chunk of a catch-up: its entries and the nodes they completed, and the frontier after
/// them. Stored (unverified) in one transaction with the progress.
pub struct Chunk<'a> {
    pub origin: &'a str,
    /// The verified size the catch-up started from (must still be the verified size).
    pub base_size: u64,
    /// Index of `entries[0]` (must be where the stored progress ends).
    pub first_index: u64,
    pub entries: &'a [Vec<u8>],
    pub nodes: &'a [(NodeId, Hash)],
    /// The frontier after `entries` (its size is `first_index + entries.len()`).
    pub frontier: &'a Frontier,
    pub target_size: u64,
    pub target_root: &'a Hash,
}

/// A verified step: the catch-up from `base_size` reached `state`, whose root is the checkpoint's;
/// the new state and the cosigned checkpoint are recorded in one transaction.
pub struct Advance<'a> {
    pub origin: &'a str,
    pub base_size: u64,
    pub state: &'a LogState,
    pub note: &'a str,
    pub line: &'a str,
}

enum Pool {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

/// Run `$body` once for the pool's backend, with `$p` the backend's pool and `$sql` a function
/// `(sqlite_text, postgres_text) -> &str` picking that backend's text of a statement. The body
/// is expanded once per backend, so it is type-checked against each.
macro_rules! per_backend {
    ($pool:expr, |$p:ident, $sql:ident| $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => {
                #[allow(unused_variables)]
                let $sql = |sqlite: &'static str, _postgres: &'static str| sqlite;
                $body
            }
            Pool::Pg($p) => {
                #[allow(unused_variables)]
                let $sql = |_sqlite: &'static str, postgres: &'static str| postgres;
                $body
            }
        }
    };
}

pub struct Store {
    pool: Pool,
    /// What to name in errors (never a password).
    what: String,
    /// Set once the migrations ran.
    migrated: tokio::sync::OnceCell<()>,
}

fn b64(h: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(h)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn hash_of(bytes: &[u8]) -> anyhow::Result<Hash> {
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("stored hash has {} bytes, not 32", bytes.len()))
}

fn root_of(text: &str) -> anyhow::Result<Hash> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("stored root is not base64")?;
    hash_of(&raw)
}

fn frontier_of(size: i64, blob: &[u8]) -> anyhow::Result<Frontier> {
    if !blob.len().is_multiple_of(32) {
        bail!(
            "stored frontier has {} bytes, not a multiple of 32",
            blob.len()
        );
    }
    let hashes = blob
        .chunks(32)
        .map(hash_of)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Frontier::from_parts(u64_of(size)?, hashes)?)
}

fn u64_of(v: i64) -> anyhow::Result<u64> {
    u64::try_from(v).map_err(|_| anyhow::anyhow!("stored size or index {v} is negative"))
}

fn i64_of(v: u64) -> anyhow::Result<i64> {
    i64::try_from(v).map_err(|_| anyhow::anyhow!("size or index {v} does not fit the database"))
}

/// SQLite's rows of a chunk as the JSON text `json_each` reads: `[[a, b, "hex"], …]`.
fn json_rows<'r>(rows: impl Iterator<Item = (Vec<i64>, &'r [u8])>) -> String {
    let mut out = String::from("[");
    for (i, (ints, bytes)) in rows.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        for n in ints {
            out.push_str(&n.to_string());
            out.push(',');
        }
        out.push('"');
        out.push_str(&hex::encode(bytes));
        out.push_str("\"]");
    }
    out.push(']');
    out
}

impl Store {
    /// Open the database. SQLite: create the file if needed and migrate now (an error is fatal:
    /// a file that cannot be opened is a configuration problem). PostgreSQL: the pool connects
    /// on demand; when the server cannot be reached now the error is logged and the migrations
    /// run on the first use that reaches it.
    pub async fn open(cfg: &DbConfig) -> anyhow::Result<Store> {
        let limits = PoolLimits {
            size: cfg.pool_size.max(1),
            min: 0,
            timeout: cfg.timeout,
        };
        let store = match &cfg.url {
            DbTarget::Sqlite(path) => {
                // The mirror is the operator's: created 0700/0600 (WAL files follow).
                let pool = openexec_store::sqlite::open_pool(path, limits).await?;
                let store = Store {
                    pool: Pool::Sqlite(pool),
                    what: cfg.url.to_string(),
                    migrated: tokio::sync::OnceCell::new(),
                };
                store.ready().await?;
                store
            }
            DbTarget::Postgres(url) => {
                let pool = openexec_store::postgres::lazy_pool(url.options(), limits);
                let store = Store {
                    pool: Pool::Pg(pool),
                    what: cfg.url.to_string(),
                    migrated: tokio::sync::OnceCell::new(),
                };
                if let Err(e) = store.ready().await {
                    tracing::error!(error = %format!("{e:#}"), "database unavailable at start-up; serving 503 and retrying on each use");
                }
                store
            }
        };
        Ok(store)
    }

    /// Run the migrations unless they already ran in this process.
    async fn ready(&self) -> anyhow::Result<()> {
        self.migrated
            .get_or_try_init(|| async {
                match &self.pool {
                    Pool::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await,
                    Pool::Pg(p) => POSTGRES_MIGRATIONS.run(p).await,
                }
                .with_context(|| format!("cannot migrate {}", self.what))
            })
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Pg(p) => p.close().await,
        }
    }

    /// Whether the database answers (migrated, and `SELECT 1` runs); the error when not.
    pub async fn check(&self) -> anyhow::Result<()> {
        self.ready().await?;
        per_backend!(&self.pool, |p, sql| {
            sqlx::query("SELECT 1")
                .execute(p)
                .await
                .map(|_| ())
                .with_context(|| format!("{} does not answer", self.what))
        })?;
        Ok(())
    }

    pub async fn ping(&self) -> bool {
        self.check().await.is_ok()
    }

    /// The last verified state of `origin`, if any.
    pub async fn state(&self, origin: &str) -> anyhow::Result<Option<LogState>> {
        self.ready().await?;
        let row: Option<(i64, String, Vec<u8>)> = per_backend!(&self.pool, |p, sql| {
            sqlx::query_as(sql(
                "SELECT size, root, frontier FROM logs WHERE origin = ?",
                "SELECT size, root, frontier FROM logs WHERE origin = $1",
            ))
            .bind(origin)
            .fetch_optional(p)
            .await
        })?;
        let Some((size, root, blob)) = row else {
            return Ok(None);
        };
        let root = root_of(&root)?;
        let frontier = frontier_of(size, &blob)?;
        if frontier.root() != root {
            bail!("stored frontier of {origin} does not hash to its stored root");
        }
        Ok(Some(LogState {
            size: frontier.size(),
            root,
            frontier,
        }))
    }

    /// The catch-up in progress for `origin`, if any.
    pub async fn catchup(&self, origin: &str) -> anyhow::Result<Option<Catchup>> {
        self.ready().await?;
        let row: Option<(i64, i64, Vec<u8>, i64, String)> = per_backend!(&self.pool, |p, sql| {
            sqlx::query_as(sql(
                "SELECT base_size, size, frontier, target_size, target_root FROM catchup WHERE origin = ?",
                "SELECT base_size, size, frontier, target_size, target_root FROM catchup WHERE origin = $1",
            ))
            .bind(origin)
            .fetch_optional(p)
            .await
        })?;
        let Some((base_size, size, blob, target_size, target_root)) = row else {
            return Ok(None);
        };
        Ok(Some(Catchup {
            base_size: u64_of(base_size)?,
            frontier: frontier_of(size, &blob)
                .with_context(|| format!("stored catch-up of {origin}"))?,
            target_size: u64_of(target_size)?,
            target_root: root_of(&target_root)?,
        }))
    }

    /// Store one chunk of a catch-up (entries, nodes, progress) in one transaction. Refused
    /// when it does not continue the stored progress from the verified size `base_size`.
    pub async fn store_chunk(&self, c: Chunk<'_>) -> anyhow::Result<()> {
        self.ready().await?;
        let origin = c.origin;
        let end = c.first_index + c.entries.len() as u64;
        if c.frontier.size() != end {
            bail!(
                "chunk [{}, {end}) of {origin} comes with a frontier of size {}",
                c.first_index,
                c.frontier.size()
            );
        }
        let base = i64_of(c.base_size)?;
        let first = i64_of(c.first_index)?;
        let size = i64_of(end)?;
        let target = i64_of(c.target_size)?;
        let frontier: Vec<u8> = c.frontier.hashes().concat();
        let at = now();
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut tx = p.begin_with(BEGIN_WRITE_SQLITE).await?;
                let verified: Option<i64> =
                    sqlx::query_scalar("SELECT size FROM logs WHERE origin = ?")
                        .bind(origin)
                        .fetch_optional(&mut *tx)
                        .await?;
                let progress: Option<(i64, i64)> =
                    sqlx::query_as("SELECT base_size, size FROM catchup WHERE origin = ?")
                        .bind(origin)
                        .fetch_optional(&mut *tx)
                        .await?;
                check_chunk(origin, base, first, verified, progress)?;
                for rows in c
                    .entries
                    .chunks(ROWS_PER_STATEMENT)
                    .enumerate()
                    .map(|(k, rows)| {
                        json_rows(rows.iter().enumerate().map(move |(i, d)| {
                            (
                                vec![first + (k * ROWS_PER_STATEMENT + i) as i64],
                                d.as_slice(),
                            )
                        }))
                    })
                {
                    sqlx::query(
                        "INSERT OR REPLACE INTO leaves (origin, idx, data)
                         SELECT ?, value ->> 0, unhex(value ->> 1) FROM json_each(?)",
                    )
                    .bind(origin)
                    .bind(rows)
                    .execute(&mut *tx)
                    .await?;
                }
                for rows in c.nodes.chunks(ROWS_PER_STATEMENT) {
                    let rows =
                        json_rows(rows.iter().map(|(id, h)| {
                            (vec![i64::from(id.level), id.index as i64], h.as_slice())
                        }));
                    sqlx::query(
                        "INSERT OR REPLACE INTO nodes (origin, level, idx, hash)
                         SELECT ?, value ->> 0, value ->> 1, unhex(value ->> 2) FROM json_each(?)",
                    )
                    .bind(origin)
                    .bind(rows)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO catchup (origin, base_size, size, frontier, target_size, target_root, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (origin) DO UPDATE SET base_size = excluded.base_size,
                     size = excluded.size, frontier = excluded.frontier,
                     target_size = excluded.target_size, target_root = excluded.target_root,
                     updated_at = excluded.updated_at",
                )
                .bind(origin)
                .bind(base)
                .bind(size)
                .bind(&frontier)
                .bind(target)
                .bind(b64(c.target_root))
                .bind(&at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Pool::Pg(p) => {
                let mut tx = p.begin().await?;
                let verified: Option<i64> =
                    sqlx::query_scalar("SELECT size FROM logs WHERE origin = $1")
                        .bind(origin)
                        .fetch_optional(&mut *tx)
                        .await?;
                let progress: Option<(i64, i64)> =
                    sqlx::query_as("SELECT base_size, size FROM catchup WHERE origin = $1")
                        .bind(origin)
                        .fetch_optional(&mut *tx)
                        .await?;
                check_chunk(origin, base, first, verified, progress)?;
                for (k, rows) in c.entries.chunks(ROWS_PER_STATEMENT).enumerate() {
                    let idx: Vec<i64> = (0..rows.len())
                        .map(|i| first + (k * ROWS_PER_STATEMENT + i) as i64)
                        .collect();
                    sqlx::query(
                        "INSERT INTO leaves (origin, idx, data)
                         SELECT $1, i, d FROM UNNEST($2::BIGINT[], $3::BYTEA[]) AS t(i, d)
                         ON CONFLICT (origin, idx) DO UPDATE SET data = EXCLUDED.data",
                    )
                    .bind(origin)
                    .bind(idx)
                    .bind(rows)
                    .execute(&mut *tx)
                    .await?;
                }
                for rows in c.nodes.chunks(ROWS_PER_STATEMENT) {
                    let levels: Vec<i64> = rows.iter().map(|(id, _)| i64::from(id.level)).collect();
                    let idx: Vec<i64> = rows.iter().map(|(id, _)| id.index as i64).collect();
                    let hashes: Vec<&[u8]> = rows.iter().map(|(_, h)| h.as_slice()).collect();
                    sqlx::query(
                        "INSERT INTO nodes (origin, level, idx, hash)
                         SELECT $1, l, i, h FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::BYTEA[]) AS t(l, i, h)
                         ON CONFLICT (origin, level, idx) DO UPDATE SET hash = EXCLUDED.hash",
                    )
                    .bind(origin)
                    .bind(levels)
                    .bind(idx)
                    .bind(hashes)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO catchup (origin, base_size, size, frontier, target_size, target_root, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (origin) DO UPDATE SET base_size = EXCLUDED.base_size,
                     size = EXCLUDED.size, frontier = EXCLUDED.frontier,
                     target_size = EXCLUDED.target_size, target_root = EXCLUDED.target_root,
                     updated_at = EXCLUDED.updated_at",
                )
                .bind(origin)
                .bind(base)
                .bind(size)
                .bind(&frontier)
                .bind(target)
                .bind(b64(c.target_root))
                .bind(&at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Record a verified step: the new state and the cosigned checkpoint, and the end of the
    /// catch-up, in one transaction. Refused unless the stored catch-up from `base_size` (still
    /// the verified size) reached exactly `state.size`: every entry it vouches for is stored.
    pub async fn advance(&self, a: Advance<'_>) -> anyhow::Result<()> {
        self.ready().await?;
        let origin = a.origin;
        let base = i64_of(a.base_size)?;
        let size = i64_of(a.state.size)?;
        let root = b64(&a.state.root);
        let frontier: Vec<u8> = a.state.frontier.hashes().concat();
        let at = now();
        per_backend!(&self.pool, |p, sql| {
            let mut tx = p.begin_with(sql(BEGIN_WRITE_SQLITE, "BEGIN")).await?;
            let verified: Option<i64> = sqlx::query_scalar(sql(
                "SELECT size FROM logs WHERE origin = ?",
                "SELECT size FROM logs WHERE origin = $1",
            ))
            .bind(origin)
            .fetch_optional(&mut *tx)
            .await?;
            let progress: Option<(i64, i64)> = sqlx::query_as(sql(
                "SELECT base_size, size FROM catchup WHERE origin = ?",
                "SELECT base_size, size FROM catchup WHERE origin = $1",
            ))
            .bind(origin)
            .fetch_optional(&mut *tx)
            .await?;
            if verified.unwrap_or(0) != base {
                bail!(
                    "{origin}: the verified size is {} but the step starts at {base}",
                    verified.unwrap_or(0)
                );
            }
            if progress != Some((base, size)) {
                bail!(
                    "{origin}: the stored catch-up ({progress:?} as (from, to)) does not cover [{base}, {size})"
                );
            }
            sqlx::query(sql(
                "INSERT INTO logs (origin, size, root, frontier, updated_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root,
                 frontier = excluded.frontier, updated_at = excluded.updated_at",
                "INSERT INTO logs (origin, size, root, frontier, updated_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (origin) DO UPDATE SET size = EXCLUDED.size, root = EXCLUDED.root,
                 frontier = EXCLUDED.frontier, updated_at = EXCLUDED.updated_at",
            ))
            .bind(origin)
            .bind(size)
            .bind(&root)
            .bind(&frontier)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(sql(
                "INSERT INTO cosigned (origin, size, root, note, line, created_at)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (origin, size) DO UPDATE SET root = excluded.root,
                 note = excluded.note, line = excluded.line, created_at = excluded.created_at",
                "INSERT INTO cosigned (origin, size, root, note, line, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (origin, size) DO UPDATE SET root = EXCLUDED.root,
                 note = EXCLUDED.note, line = EXCLUDED.line, created_at = EXCLUDED.created_at",
            ))
            .bind(origin)
            .bind(size)
            .bind(&root)
            .bind(a.note)
            .bind(a.line)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(sql(
                "DELETE FROM catchup WHERE origin = ?",
                "DELETE FROM catchup WHERE origin = $1",
            ))
            .bind(origin)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Forget the catch-up in progress of `origin`: its row, and every mirrored entry and node
    /// beyond the verified size (nothing verified is touched). Returns how many entries went.
    pub async fn discard_catchup(&self, origin: &str) -> anyhow::Result<u64> {
        self.ready().await?;
        per_backend!(&self.pool, |p, sql| {
            let mut tx = p.begin_with(sql(BEGIN_WRITE_SQLITE, "BEGIN")).await?;
            let verified: Option<i64> = sqlx::query_scalar(sql(
                "SELECT size FROM logs WHERE origin = ?",
                "SELECT size FROM logs WHERE origin = $1",
            ))
            .bind(origin)
            .fetch_optional(&mut *tx)
            .await?;
            let verified = verified.unwrap_or(0);
            sqlx::query(sql(
                "DELETE FROM catchup WHERE origin = ?",
                "DELETE FROM catchup WHERE origin = $1",
            ))
            .bind(origin)
            .execute(&mut *tx)
            .await?;
            let gone = sqlx::query(sql(
                "DELETE FROM leaves WHERE origin = ? AND idx >= ?",
                "DELETE FROM leaves WHERE origin = $1 AND idx >= $2",
            ))
            .bind(origin)
            .bind(verified)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // Node (level, idx) covers leaves [idx·2^level, (idx+1)·2^level): it reaches beyond
            // the verified size exactly when idx >= size >> level.
            sqlx::query(sql(
                "DELETE FROM nodes WHERE origin = ? AND idx >= (? >> level)",
                "DELETE FROM nodes WHERE origin = $1 AND idx >= ($2::BIGINT >> level::INTEGER)",
            ))
            .bind(origin)
            .bind(verified)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(gone)
        })
    }

    /// The latest checkpoint cosigned for `origin`.
    pub async fn latest_cosigned(&self, origin: &str) -> anyhow::Result<Option<Cosigned>> {
        self.ready().await?;
        let row: Option<(i64, String, String)> = per_backend!(&self.pool, |p, sql| {
            sqlx::query_as(sql(
                "SELECT size, note, line FROM cosigned WHERE origin = ? ORDER BY size DESC LIMIT 1",
                "SELECT size, note, line FROM cosigned WHERE origin = $1 ORDER BY size DESC LIMIT 1",
            ))
            .bind(origin)
            .fetch_optional(p)
            .await
        })?;
        row.map(|(size, note, line)| {
            Ok(Cosigned {
                size: u64_of(size)?,
                note,
                line,
            })
        })
        .transpose()
    }

    /// The mirrored data of entry `index` of `origin` (verified or not: callers bound `index`
    /// by the verified size).
    pub async fn leaf(&self, origin: &str, index: u64) -> anyhow::Result<Option<Vec<u8>>> {
        self.ready().await?;
        let index = i64_of(index)?;
        let row: Option<(Vec<u8>,)> = per_backend!(&self.pool, |p, sql| {
            sqlx::query_as(sql(
                "SELECT data FROM leaves WHERE origin = ? AND idx = ?",
                "SELECT data FROM leaves WHERE origin = $1 AND idx = $2",
            ))
            .bind(origin)
            .bind(index)
            .fetch_optional(p)
            .await
        })?;
        Ok(row.map(|(d,)| d))
    }

    /// The stored nodes among `ids` for `origin`, in one query.
    pub async fn nodes(
        &self,
        origin: &str,
        ids: &[NodeId],
    ) -> anyhow::Result<HashMap<NodeId, Hash>> {
        self.ready().await?;
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let levels: Vec<i64> = ids.iter().map(|id| i64::from(id.level)).collect();
        let idx = ids
            .iter()
            .map(|id| i64_of(id.index))
            .collect::<anyhow::Result<Vec<i64>>>()?;
        let rows: Vec<(i64, i64, Vec<u8>)> = match &self.pool {
            Pool::Sqlite(p) => {
                let json = serde_json::to_string(
                    &levels
                        .iter()
                        .zip(&idx)
                        .map(|(l, i)| [*l, *i])
                        .collect::<Vec<_>>(),
                )?;
                sqlx::query_as(
                    "SELECT level, idx, hash FROM nodes WHERE origin = ?
                     AND (level, idx) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))",
                )
                .bind(origin)
                .bind(json)
                .fetch_all(p)
                .await?
            }
            Pool::Pg(p) => {
                // An index lookup per node (the LIMIT keeps the planner from turning the lateral
                // join into a scan of the table, e.g. with a plan cached while it was empty).
                sqlx::query_as(
                    "SELECT n.level, n.idx, n.hash FROM UNNEST($2::BIGINT[], $3::BIGINT[]) AS u(l, i)
                     CROSS JOIN LATERAL (SELECT level, idx, hash FROM nodes
                     WHERE origin = $1 AND level = u.l AND idx = u.i LIMIT 1) n",
                )
                .bind(origin)
                .bind(levels)
                .bind(idx)
                .fetch_all(p)
                .await?
            }
        };
        let mut out = HashMap::with_capacity(rows.len());
        for (level, index, hash) in rows {
            let level = u8::try_from(level)
                .map_err(|_| anyhow::anyhow!("stored node level {level} is out of range"))?;
            out.insert(
                NodeId {
                    level,
                    index: u64_of(index)?,
                },
                hash_of(&hash)?,
            );
        }
        Ok(out)
    }

    /// Record an alert unless the latest alert of `origin` is the same (kind, size, root).
    /// Returns whether it was recorded.
    pub async fn add_alert(
        &self,
        origin: &str,
        kind: &str,
        detail: &str,
        size: Option<u64>,
        root: Option<&str>,
    ) -> anyhow::Result<bool> {
        self.ready().await?;
        let size = size.map(i64_of).transpose()?;
        per_backend!(&self.pool, |p, sql| {
            let mut tx = p.begin_with(sql(BEGIN_WRITE_SQLITE, "BEGIN")).await?;
            let last: Option<(String, Option<i64>, Option<String>)> = sqlx::query_as(sql(
                "SELECT kind, size, root FROM alerts WHERE origin = ? ORDER BY id DESC LIMIT 1",
                "SELECT kind, size, root FROM alerts WHERE origin = $1 ORDER BY id DESC LIMIT 1",
            ))
            .bind(origin)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((k, s, r)) = last {
                if k == kind && s == size && r.as_deref() == root {
                    return Ok(false);
                }
            }
            sqlx::query(sql(
                "INSERT INTO alerts (origin, kind, detail, size, root, at) VALUES (?, ?, ?, ?, ?, ?)",
                "INSERT INTO alerts (origin, kind, detail, size, root, at) VALUES ($1, $2, $3, $4, $5, $6)",
            ))
            .bind(origin)
            .bind(kind)
            .bind(detail)
            .bind(size)
            .bind(root)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Every alert, oldest first.
    pub async fn alerts(&self) -> anyhow::Result<Vec<Alert>> {
        self.ready().await?;
        let rows: Vec<(i64, String, String, String, String)> =
            per_backend!(&self.pool, |p, sql| {
                sqlx::query_as("SELECT id, origin, kind, detail, at FROM alerts ORDER BY id")
                    .fetch_all(p)
                    .await
            })?;
        Ok(rows
            .into_iter()
            .map(|(id, origin, kind, detail, at)| Alert {
                id,
                origin,
                kind,
                detail,
                at,
            })
            .collect())
    }
}

/// A chunk starting at `first` may be stored when the verified size is still `base` and it
/// continues the stored progress (or starts a catch-up at `base`).
fn check_chunk(
    origin: &str,
    base: i64,
    first: i64,
    verified: Option<i64>,
    progress: Option<(i64, i64)>,
) -> anyhow::Result<()> {
    let verified = verified.unwrap_or(0);
    if verified != base {
        bail!("{origin}: the catch-up started at size {base} but the verified size is {verified}");
    }
    let expected = match progress {
        Some((b, size)) if b == base => size,
        Some((b, _)) => bail!(
            "{origin}: a stored catch-up starts at {b}, not at the verified size {base}; discard it first"
        ),
        None => base,
    };
    if first != expected {
        bail!("{origin}: a chunk starting at {first} does not continue the stored catch-up, which ends at {expected}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn db_urls_name_clawledger_db_url_and_never_show_a_password() {
        // The forms themselves are `openexec_store::url`'s tests.
        assert_eq!(
            parse_db_url("sqlite:///x.db").unwrap(),
            DbTarget::Sqlite(PathBuf::from("x.db"))
        );
        let u =
            parse_db_url("postgres://me:s3cret@db.example:5432/ledger?sslmode=disable").unwrap();
        for shown in [u.to_string(), format!("{u:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("me:***@db.example:5432/ledger"), "{shown}");
        }
        for (bad, says) in [
            (
                "sqlite://",
                "the mirror and the cosigned checkpoints must outlive the process",
            ),
            ("sqlite:///:memory:", "(sqlite:///clawledger.db)"),
            ("mysql://me:s3cret@db/x", "must start with sqlite:"),
            (
                "postgres://me:s3cret@db.example:port/x",
                "'postgres://me:***@db.example:port/x'",
            ),
        ] {
            let e = format!("{:#}", parse_db_url(bad).unwrap_err());
            assert!(
                e.contains("CLAWLEDGER_DB_URL") && e.contains(says),
                "{bad}: {e}"
            );
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn a_chunk_must_continue_the_stored_catch_up() {
        assert!(check_chunk("o", 0, 0, None, None).is_ok());
        assert!(check_chunk("o", 5, 5, Some(5), None).is_ok());
        assert!(check_chunk("o", 5, 9, Some(5), Some((5, 9))).is_ok());
        // Not from the verified size; a gap; an overlap; a stale catch-up.
        assert!(check_chunk("o", 4, 4, Some(5), None).is_err());
        assert!(check_chunk("o", 5, 10, Some(5), Some((5, 9))).is_err());
        assert!(check_chunk("o", 5, 8, Some(5), Some((5, 9))).is_err());
        assert!(check_chunk("o", 5, 5, Some(5), Some((3, 9))).is_err());
        assert!(check_chunk("o", 0, 1, None, None).is_err());
    }
}
