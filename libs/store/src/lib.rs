//! # openexec-store: the database layer of every service
//!
//! What each service's store (OpenExec's, ClawLedger's, ClawShield's next) and the log tables'
//! statements (`openexec-logstore`) share, written once:
//!
//! - [`url`]: the database setting read one way — [`DbTarget`] (`sqlite:///rel.db`,
//!   `sqlite:////abs.db`, `postgres://…`; in-memory SQLite refused), its messages naming the
//!   service's setting ([`DbSetting`]), a password never shown by `Display` or `Debug`
//!   ([`PgUrl`]).
//! - [`sqlite`] and [`postgres`]: pools opened one way — SQLite private (0600), WAL,
//!   `synchronous=FULL`, a busy timeout; PostgreSQL lazy with its size and acquire timeout, and
//!   [`postgres::wait_for`], the bounded wait for a database at start-up with a clear final
//!   error.
//! - [`error`]: the one [`StoreError`] (`Unavailable`, `Corrupt`, `Conflict`) and the one
//!   reading of a sqlx error ([`classify`], [`is_retryable`]: PostgreSQL 40001/40P01, SQLite
//!   busy/locked; a value that does not decode is corrupt, the rest unavailable).
//! - [`writer`]: the group-commit writer, generic over a service's operations — the queue,
//!   "send and wait for the durable commit", batches of up to `max_batch` in one transaction,
//!   retries of a batch that lost a race, and every operation's answer after its commit; the
//!   service supplies only the transaction ([`Commit`]). On SQLite the commits are pipelined:
//!   the writer commits at `synchronous=NORMAL` and a sync stage fdatasyncs the WAL
//!   ([`sqlite::WalSync`]) once for every batch committed meanwhile, answering them after it,
//!   while the next batch is already being committed.
//!
//! What it leaves to the services: their tables, statements and migrations, which operations
//! they batch, and what their errors mean on the wire.
//!
//! *Dependency rule*: services and the logstore depend on this crate; it depends on no service,
//! and of the libraries only on core (password redaction) and the kit (private files).
#![forbid(unsafe_code)]

pub mod error;
pub mod postgres;
pub mod sqlite;
pub mod url;
pub mod writer;

use std::time::Duration;

pub use error::{classify, corrupt, is_retryable, unavailable, ErrorClass, StoreError};
pub use url::{DbSetting, DbTarget, DbUrlError, PgUrl};
pub use writer::{
    channel, AfterDurable, Applied, Commit, CommitError, Durability, Queue, WriterConfig,
    WriterHandle, WriterMetrics,
};

/// A pool's size and how long a caller waits for one of its connections (SQLite: also for a
/// lock, the busy timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Most connections open at once (at least 1).
    pub size: u32,
    /// Connections kept open while idle.
    pub min: u32,
    pub timeout: Duration,
}

/// How long a service's store may wait (SQLite: for a lock; PostgreSQL: for a connection) and,
/// on PostgreSQL, how many connections it may open (every service's store takes these).
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub timeout: Duration,
    pub pool_size: u32,
    /// PostgreSQL: how long opening waits for the database to accept connections.
    pub connect_wait: Duration,
}

/// A database that could not be opened (at start-up): the message names it, never a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpenError(pub String);
