//! ClawLedger's SQLite database (WAL, `synchronous=FULL`, migrations in `migrations/`), as
//! OpenExec keeps its own: per watched origin the last verified checkpoint and frontier, the
//! mirrored entries and tree nodes, the cosigned checkpoints and the alerts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use openexec_log::{Frontier, Hash, NodeId};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// Read a database URL as OpenExec does (SQLAlchemy style): `sqlite:///relative.db`,
/// `sqlite:////absolute.db`, or `sqlite:path`. In-memory databases are refused: the mirror and
/// the cosigned checkpoints must outlive the process.
pub fn parse_db_url(url: &str) -> anyhow::Result<PathBuf> {
    let url = url.trim();
    let rest = url.strip_prefix("sqlite:").ok_or_else(|| {
        anyhow::anyhow!(
            "CLAWLEDGER_DB_URL must start with sqlite: (e.g. sqlite:///clawledger.db), got '{url}'"
        )
    })?;
    let path = match rest.strip_prefix("//") {
        Some(after) => match after.strip_prefix('/') {
            Some(p) => p.to_string(),
            None if after.is_empty() => bail!("an in-memory database is refused; give a file path"),
            None => bail!(
                "CLAWLEDGER_DB_URL '{url}': use three slashes for a relative path (sqlite:///clawledger.db) and four for an absolute one"
            ),
        },
        None => rest.to_string(),
    };
    let path = path.split('?').next().unwrap_or_default().to_string();
    if path.is_empty() || path == ":memory:" {
        bail!("an in-memory database is refused; give a file path");
    }
    Ok(PathBuf::from(path))
}

/// What ClawLedger last verified of one log.
#[derive(Clone, Debug)]
pub struct LogState {
    pub size: u64,
    pub root: Hash,
    pub frontier: Frontier,
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

/// Everything one verified step adds, written in one transaction.
pub struct Advance<'a> {
    pub origin: &'a str,
    pub first_index: u64,
    pub entries: &'a [Vec<u8>],
    pub nodes: &'a [(NodeId, Hash)],
    pub state: &'a LogState,
    pub note: &'a str,
    pub line: &'a str,
}

pub struct Store {
    pool: SqlitePool,
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

impl Store {
    /// Open (creating if needed) and migrate the database.
    pub async fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create database directory {}", dir.display()))?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .with_context(|| format!("cannot open database {}", path.display()))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .with_context(|| format!("cannot migrate database {}", path.display()))?;
        Ok(Store { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The last verified state of `origin`, if any.
    pub async fn state(&self, origin: &str) -> anyhow::Result<Option<LogState>> {
        let row = sqlx::query("SELECT size, root, frontier FROM logs WHERE origin = ?")
            .bind(origin)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let size = row.get::<i64, _>("size") as u64;
        let root = root_of(&row.get::<String, _>("root"))?;
        let blob: Vec<u8> = row.get("frontier");
        let hashes = blob
            .chunks(32)
            .map(hash_of)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let frontier = Frontier::from_parts(size, hashes)?;
        if frontier.root() != root {
            bail!("stored frontier of {origin} does not hash to its stored root");
        }
        Ok(Some(LogState {
            size,
            root,
            frontier,
        }))
    }

    /// Store a verified step: entries, nodes, the new state and the cosigned checkpoint, in one
    /// transaction.
    pub async fn advance(&self, a: Advance<'_>) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        for (i, data) in a.entries.iter().enumerate() {
            sqlx::query("INSERT OR REPLACE INTO leaves (origin, idx, data) VALUES (?, ?, ?)")
                .bind(a.origin)
                .bind((a.first_index + i as u64) as i64)
                .bind(data.as_slice())
                .execute(&mut *tx)
                .await?;
        }
        for (id, hash) in a.nodes {
            sqlx::query(
                "INSERT OR REPLACE INTO nodes (origin, level, idx, hash) VALUES (?, ?, ?, ?)",
            )
            .bind(a.origin)
            .bind(i64::from(id.level))
            .bind(id.index as i64)
            .bind(hash.as_slice())
            .execute(&mut *tx)
            .await?;
        }
        let frontier: Vec<u8> = a.state.frontier.hashes().concat();
        let at = now();
        sqlx::query(
            "INSERT INTO logs (origin, size, root, frontier, updated_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root,
             frontier = excluded.frontier, updated_at = excluded.updated_at",
        )
        .bind(a.origin)
        .bind(a.state.size as i64)
        .bind(b64(&a.state.root))
        .bind(frontier)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT OR REPLACE INTO cosigned (origin, size, root, note, line, created_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(a.origin)
        .bind(a.state.size as i64)
        .bind(b64(&a.state.root))
        .bind(a.note)
        .bind(a.line)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The latest checkpoint cosigned for `origin`.
    pub async fn latest_cosigned(&self, origin: &str) -> anyhow::Result<Option<Cosigned>> {
        let row = sqlx::query(
            "SELECT size, note, line FROM cosigned WHERE origin = ? ORDER BY size DESC LIMIT 1",
        )
        .bind(origin)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Cosigned {
            size: r.get::<i64, _>("size") as u64,
            note: r.get("note"),
            line: r.get("line"),
        }))
    }

    /// The mirrored data of entry `index` of `origin`.
    pub async fn leaf(&self, origin: &str, index: u64) -> anyhow::Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT data FROM leaves WHERE origin = ? AND idx = ?")
            .bind(origin)
            .bind(index as i64)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get("data")))
    }

    /// The stored nodes among `ids` for `origin`.
    pub async fn nodes(
        &self,
        origin: &str,
        ids: &[NodeId],
    ) -> anyhow::Result<HashMap<NodeId, Hash>> {
        let mut out = HashMap::with_capacity(ids.len());
        for id in ids {
            let row =
                sqlx::query("SELECT hash FROM nodes WHERE origin = ? AND level = ? AND idx = ?")
                    .bind(origin)
                    .bind(i64::from(id.level))
                    .bind(id.index as i64)
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(r) = row {
                out.insert(*id, hash_of(&r.get::<Vec<u8>, _>("hash"))?);
            }
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
        let mut tx = self.pool.begin().await?;
        let last = sqlx::query(
            "SELECT kind, size, root FROM alerts WHERE origin = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(origin)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = last {
            let same = r.get::<String, _>("kind") == kind
                && r.get::<Option<i64>, _>("size") == size.map(|s| s as i64)
                && r.get::<Option<String>, _>("root").as_deref() == root;
            if same {
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO alerts (origin, kind, detail, size, root, at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(origin)
        .bind(kind)
        .bind(detail)
        .bind(size.map(|s| s as i64))
        .bind(root)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every alert, oldest first.
    pub async fn alerts(&self) -> anyhow::Result<Vec<Alert>> {
        let rows = sqlx::query("SELECT id, origin, kind, detail, at FROM alerts ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Alert {
                id: r.get("id"),
                origin: r.get("origin"),
                kind: r.get("kind"),
                detail: r.get("detail"),
                at: r.get("at"),
            })
            .collect())
    }

    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_urls() {
        assert_eq!(
            parse_db_url("sqlite:///x.db").unwrap(),
            PathBuf::from("x.db")
        );
        assert_eq!(
            parse_db_url("sqlite:////tmp/x.db").unwrap(),
            PathBuf::from("/tmp/x.db")
        );
        assert!(parse_db_url("sqlite://").is_err());
        assert!(parse_db_url("sqlite:///:memory:").is_err());
        assert!(parse_db_url("postgres://x").is_err());
    }
}
