//! The sequencer role: of all processes on one database, only the one holding this role signs
//! the log's checkpoints (the others follow what it stores). Written once for every service
//! that keeps a log.
//!
//! - On SQLite ([`FileSequencer`]): an exclusive flock on a lock file beside the database,
//!   released by the kernel when the holder dies, so another process takes over at its next try.
//! - On PostgreSQL ([`PgSequencer`]): a session advisory lock on a connection of its own (with
//!   TCP keepalives, so the server notices a dead holder within seconds); a held lock is checked
//!   on its connection first, and a connection that no longer answers has lost it.
//!
//! Storing a checkpoint still re-checks, in its transaction, that it contradicts none: the role
//! only keeps two signers from racing, it is not what makes the log safe.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::store::{unavailable, StoreError};

/// The sequencer role on SQLite: an flock on `path`.
pub struct FileSequencer {
    path: PathBuf,
    gauge: &'static str,
    held: std::sync::Mutex<Option<std::fs::File>>,
}

impl FileSequencer {
    /// `gauge` is set to 1 while this process holds the role.
    pub fn new(path: PathBuf, gauge: &'static str) -> FileSequencer {
        FileSequencer {
            path,
            gauge,
            held: std::sync::Mutex::new(None),
        }
    }

    /// Whether this process holds the role now (taking it when nobody does).
    pub fn try_hold(&self) -> Result<bool, StoreError> {
        let mut held = self
            .held
            .lock()
            .map_err(|_| unavailable("the sequencer lock is poisoned"))?;
        if held.is_some() {
            return Ok(true);
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| unavailable(format!("cannot open {}: {e}", self.path.display())))?;
        match f.try_lock() {
            Ok(()) => {
                *held = Some(f);
                metrics::gauge!(self.gauge).set(1.0);
                Ok(true)
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(unavailable(format!(
                "cannot lock {}: {e}",
                self.path.display()
            ))),
        }
    }

    /// Give the role up (another process on the file may sign now).
    pub fn release(&self) {
        if let Ok(mut held) = self.held.lock() {
            held.take();
        }
    }
}

/// The sequencer role on PostgreSQL: `pg_try_advisory_lock(key)` on a session of its own.
pub struct PgSequencer {
    connect: PgConnectOptions,
    key: i64,
    timeout: Duration,
    gauge: &'static str,
    /// What the role is of, for the logs ("the receipt log", "the decision log").
    what: &'static str,
    session: tokio::sync::Mutex<Option<(PgConnection, bool)>>,
}

/// The sequencer's session: the service's options, plus TCP keepalives the server uses to find
/// a dead peer within about 11 s (5 s idle, then 3 probes 2 s apart).
pub fn session_options(connect: &PgConnectOptions) -> PgConnectOptions {
    connect.clone().options([
        ("tcp_keepalives_idle", "5"),
        ("tcp_keepalives_interval", "2"),
        ("tcp_keepalives_count", "3"),
    ])
}

impl PgSequencer {
    pub fn new(
        connect: PgConnectOptions,
        key: i64,
        timeout: Duration,
        gauge: &'static str,
        what: &'static str,
    ) -> PgSequencer {
        PgSequencer {
            connect,
            key,
            timeout,
            gauge,
            what,
            session: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether this replica holds the role now (taking it when nobody does).
    pub async fn try_hold(&self) -> Result<bool, StoreError> {
        let mut guard = self.session.lock().await;
        if let Some((conn, held)) = guard.as_mut() {
            let alive = tokio::time::timeout(self.timeout, conn.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            if !alive {
                if *held {
                    tracing::warn!(
                        log = self.what,
                        "lost the sequencer lock (its connection failed)"
                    );
                    metrics::gauge!(self.gauge).set(0.0);
                }
                *guard = None;
            } else if *held {
                return Ok(true);
            }
        }
        if guard.is_none() {
            let opts = session_options(&self.connect);
            let conn = tokio::time::timeout(self.timeout, opts.connect())
                .await
                .map_err(|_| unavailable("connecting for the sequencer lock timed out"))?
                .map_err(unavailable)?;
            *guard = Some((conn, false));
        }
        let Some((conn, held)) = guard.as_mut() else {
            return Ok(false);
        };
        let got: bool = match sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut *conn)
            .await
        {
            Ok(g) => g,
            Err(e) => {
                *guard = None;
                return Err(unavailable(e));
            }
        };
        if got {
            *held = true;
            tracing::info!(log = self.what, "this replica is now the sequencer");
            metrics::gauge!(self.gauge).set(1.0);
        }
        Ok(got)
    }

    /// Close the session (releasing the lock).
    pub async fn release(&self) {
        if let Some((conn, _)) = self.session.lock().await.take() {
            let _ = conn.close().await;
        }
    }
}
