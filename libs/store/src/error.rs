//! One error type for every service's store, and one reading of what a database error means.

use std::fmt::Display;

/// Why a store could not do what it was asked. The services map it to their answers the same
/// way (OpenExec, the `/log/*` routes: 503 `store_unavailable`), but keep `Corrupt` apart in
/// their logs and tests: a fault of the stored data is not an outage, and no retry fixes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not make a write durable or answer a read (I/O error, lock timeout, full
    /// disk, database down, store closed).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data that does not read back (a bug or a database edited by hand).
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// A write that would contradict what is stored (e.g. a checkpoint that goes backwards).
    #[error("refused: {0}")]
    Conflict(String),
}

/// [`StoreError::Unavailable`] with `e`'s text.
pub fn unavailable(e: impl Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// [`StoreError::Corrupt`] with `e`'s text.
pub fn corrupt(e: impl Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// What a database error means to the code that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The transaction lost a race and may simply be run again: PostgreSQL's serialization
    /// failure (40001) or deadlock (40P01), SQLite's busy or locked (`SQLITE_BUSY*`,
    /// `SQLITE_LOCKED*`, e.g. a deferred transaction whose snapshot went stale).
    Retryable,
    /// A stored value that does not decode as the column's type: corrupt data, not an outage.
    Corrupt,
    /// Anything else: the database cannot be reached or refused the statement.
    Unavailable,
}

/// Classify a sqlx error (see [`ErrorClass`]).
pub fn classify(e: &sqlx::Error) -> ErrorClass {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code();
            let code = code.as_deref().unwrap_or_default();
            if d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                return match code {
                    "40001" | "40P01" => ErrorClass::Retryable,
                    _ => ErrorClass::Unavailable,
                };
            }
            if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // The extended result code; its low byte is the primary one.
                return match code.parse::<i32>().map(|c| c & 0xff) {
                    Ok(SQLITE_BUSY | SQLITE_LOCKED) => ErrorClass::Retryable,
                    _ => ErrorClass::Unavailable,
                };
            }
            ErrorClass::Unavailable
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => ErrorClass::Corrupt,
        _ => ErrorClass::Unavailable,
    }
}

const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

/// Whether running the transaction again may succeed ([`ErrorClass::Retryable`]).
pub fn is_retryable(e: &sqlx::Error) -> bool {
    classify(e) == ErrorClass::Retryable
}

/// A sqlx error as a [`StoreError`]: `Corrupt` for a value that does not decode, else
/// `Unavailable` (a retryable error that is not retried is an outage to the caller).
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        match classify(&e) {
            ErrorClass::Corrupt => corrupt(e),
            ErrorClass::Retryable | ErrorClass::Unavailable => unavailable(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Connection, SqliteConnection};

    #[test]
    fn messages_say_which_kind() {
        assert_eq!(unavailable("x").to_string(), "store unavailable: x");
        assert_eq!(corrupt("x").to_string(), "store corrupt: x");
        assert_eq!(StoreError::Conflict("x".into()).to_string(), "refused: x");
    }

    #[test]
    fn decode_errors_are_corrupt_and_the_rest_unavailable() {
        let e = sqlx::Error::ColumnDecode {
            index: "0".into(),
            source: "bad".into(),
        };
        assert_eq!(classify(&e), ErrorClass::Corrupt);
        assert!(matches!(StoreError::from(e), StoreError::Corrupt(_)));
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::RowNotFound,
            sqlx::Error::Io(std::io::Error::other("reset")),
        ] {
            assert_eq!(classify(&e), ErrorClass::Unavailable, "{e}");
            assert!(!is_retryable(&e));
            assert!(matches!(StoreError::from(e), StoreError::Unavailable(_)));
        }
    }

    /// A real `SQLITE_BUSY`: a second connection writes while the first holds the write lock.
    #[tokio::test]
    async fn sqlite_busy_is_retryable_and_a_constraint_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(tmp.path().join("b.db"))
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::ZERO);
        let mut a = SqliteConnection::connect_with(&opts).await.unwrap();
        let mut b = SqliteConnection::connect_with(&opts).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE t (x INTEGER PRIMARY KEY); BEGIN IMMEDIATE; INSERT INTO t VALUES (1)",
        )
        .execute(&mut a)
        .await
        .unwrap();
        let e = sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut b)
            .await
            .unwrap_err();
        assert!(is_retryable(&e), "{e}");
        assert!(matches!(StoreError::from(e), StoreError::Unavailable(_)));
        sqlx::raw_sql("COMMIT").execute(&mut a).await.unwrap();
        let e = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut b)
            .await
            .unwrap_err();
        assert_eq!(classify(&e), ErrorClass::Unavailable, "{e}");
    }

    /// A real serialization failure and deadlock on PostgreSQL (skipped without one).
    #[tokio::test]
    async fn postgres_serialization_failures_and_deadlocks_are_retryable() {
        let Some(db) = openexec_testpg::TestDb::create("store_classify").await else {
            return;
        };
        let mut a = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let mut b = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 0), (2, 0)",
        )
        .execute(&mut a)
        .await
        .unwrap();
        // Serialization failure: both read under REPEATABLE READ, one updates after the other
        // committed.
        for c in [&mut a, &mut b] {
            sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT * FROM t")
                .execute(&mut *c)
                .await
                .unwrap();
        }
        sqlx::raw_sql("UPDATE t SET v = 1 WHERE id = 1; COMMIT")
            .execute(&mut a)
            .await
            .unwrap();
        let e = sqlx::query("UPDATE t SET v = 2 WHERE id = 1")
            .execute(&mut b)
            .await
            .unwrap_err();
        assert_eq!(
            e.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("40001")
        );
        assert!(is_retryable(&e), "{e}");
        sqlx::raw_sql("ROLLBACK").execute(&mut b).await.unwrap();
        // Deadlock: each locks one row, then wants the other's.
        sqlx::raw_sql("BEGIN; UPDATE t SET v = 3 WHERE id = 1")
            .execute(&mut a)
            .await
            .unwrap();
        sqlx::raw_sql("BEGIN; UPDATE t SET v = 3 WHERE id = 2")
            .execute(&mut b)
            .await
            .unwrap();
        let (ra, rb) = tokio::join!(
            sqlx::query("UPDATE t SET v = 4 WHERE id = 2").execute(&mut a),
            sqlx::query("UPDATE t SET v = 4 WHERE id = 1").execute(&mut b),
        );
        let e = ra
            .err()
            .or(rb.err())
            .expect("one of the two is the deadlock victim");
        assert_eq!(
            e.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("40P01")
        );
        assert!(is_retryable(&e), "{e}");
        for c in [&mut a, &mut b] {
            sqlx::raw_sql("ROLLBACK").execute(&mut *c).await.unwrap();
        }
        // Not every database error is retryable: a unique violation is not.
        let e = sqlx::query("INSERT INTO t VALUES (1, 0)")
            .execute(&mut a)
            .await
            .unwrap_err();
        assert_eq!(classify(&e), ErrorClass::Unavailable, "{e}");
    }
}
