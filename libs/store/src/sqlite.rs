//! Opening a SQLite database the one way every service does: the file private (directory 0700,
//! file 0600, its WAL files following), WAL, `synchronous=FULL` (a commit is on disk when it
//! returns), a busy timeout, foreign keys, created if missing.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::{OpenError, PoolLimits};

/// Make `path`'s directory (0700) and the file (0600) unless they exist: SQLite then opens it
/// as a new database and gives its WAL and shared-memory files the same mode.
pub fn prepare(path: &Path) -> Result<(), OpenError> {
    openexec_kit::keys::prepare_sqlite_file(path).map_err(|e| OpenError(e.to_string()))
}

/// The connection options of a service's database file: WAL, `synchronous=FULL`, waiting up to
/// `busy_timeout` for a lock, foreign keys on, created if missing.
pub fn options(path: &Path, busy_timeout: Duration) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy_timeout)
        .foreign_keys(true)
}

/// [`prepare`] the file, then open a pool of `limits.size` connections with [`options`]
/// (`limits.timeout` is both the busy timeout and how long a caller waits for a connection).
pub async fn open_pool(path: &Path, limits: PoolLimits) -> Result<SqlitePool, OpenError> {
    prepare(path)?;
    pool(path, options(path, limits.timeout), limits).await
}

/// A pool of `limits.size` connections (at least `limits.min` kept open) with `opts`.
pub async fn pool(
    path: &Path,
    opts: SqliteConnectOptions,
    limits: PoolLimits,
) -> Result<SqlitePool, OpenError> {
    SqlitePoolOptions::new()
        // A SQLite connection is a file handle in this process, not a socket that can go
        // stale: no ping (a round trip to its worker thread) before every use.
        .test_before_acquire(false)
        .max_connections(limits.size.max(1))
        .min_connections(limits.min)
        .acquire_timeout(limits.timeout)
        .connect_with(opts)
        .await
        .map_err(|e| OpenError(format!("cannot open database {}: {e}", path.display())))
}

/// The options of a writer's own connection: [`options`] with `wal_autocheckpoint=0`, so that
/// no commit ever copies WAL pages into the database file (and syncs it) on the write path;
/// [`checkpoint_loop`] does that work beside the writer.
pub fn writer_options(path: &Path, busy_timeout: Duration) -> SqliteConnectOptions {
    options(path, busy_timeout).pragma("wal_autocheckpoint", "0")
}

/// The options of a pipelined writer's connection ([`crate::writer::Durability`]): those of
/// [`writer_options`] at `synchronous=NORMAL`, so a commit writes its WAL frames and returns
/// without waiting for the disk; the writer's sync stage then makes them durable with
/// [`WalSync::sync`] before any write of the batch is answered. (SQLite still syncs the WAL
/// before a checkpoint copies it, and the WAL header when the file is reused; the database
/// stays consistent at every point, and a crash can lose only commits never answered.)
pub fn pipelined_writer_options(path: &Path, busy_timeout: Duration) -> SqliteConnectOptions {
    writer_options(path, busy_timeout).synchronous(SqliteSynchronous::Normal)
}

/// `fdatasync` of a database's WAL file (`<db>-wal`), from any thread: everything written to the
/// WAL before the call began — by any connection, any process — is on disk when it returns
/// `Ok` (the kernel syncs the file, not one descriptor's writes). The file is opened on first
/// use and again when the path names another file than the one held (it was recreated).
pub struct WalSync {
    path: std::path::PathBuf,
    file: std::sync::Mutex<Option<(std::fs::File, u64)>>,
}

impl WalSync {
    pub fn new(db: &Path) -> WalSync {
        let mut p = db.as_os_str().to_owned();
        p.push("-wal");
        WalSync {
            path: p.into(),
            file: std::sync::Mutex::new(None),
        }
    }

    /// The WAL file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sync(&self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&self.path)?.ino();
        let mut held = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if held.as_ref().map(|(_, i)| *i) != Some(ino) {
            let f = std::fs::File::open(&self.path)?;
            let i = f.metadata()?.ino();
            *held = Some((f, i));
        }
        match held.as_ref() {
            Some((f, _)) => f.sync_data(),
            None => Err(std::io::Error::other("the WAL file is not open")),
        }
    }
}

/// Move committed WAL pages into the database file every half second (PASSIVE: it never blocks
/// the writer or readers), so the WAL stays small without the writer doing it inside a commit.
/// Ends when `pool` is closed. `metric` is the histogram (seconds, `op="checkpoint"`) to record.
pub async fn checkpoint_loop(pool: SqlitePool, metric: &'static str) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if pool.is_closed() {
            return;
        }
        let started = std::time::Instant::now();
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
        }
        metrics::histogram!(metric, "op" => "checkpoint").record(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn a_new_database_is_private_in_wal_mode_and_synchronous_full() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state/x.db");
        let pool = open_pool(
            &path,
            PoolLimits {
                size: 2,
                min: 0,
                timeout: Duration::from_millis(1234),
            },
        )
        .await
        .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let text: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(text, "wal");
        for (pragma, want) in [
            ("synchronous", 2),
            ("busy_timeout", 1234),
            ("foreign_keys", 1),
        ] {
            let got: i64 = sqlx::query_scalar(&format!("PRAGMA {pragma}"))
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(got, want, "{pragma}");
        }
        pool.close().await;
        // A file that cannot be opened names itself.
        let e = open_pool(
            &tmp.path().join("state"),
            PoolLimits {
                size: 1,
                min: 0,
                timeout: Duration::from_millis(100),
            },
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("state"), "{e}");
    }
}
