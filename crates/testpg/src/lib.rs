//! Test support for the PostgreSQL tests: each test gets a database of its own on the server
//! named by `OPENEXEC_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`), dropped
//! when the handle is dropped.
//!
//! When the server cannot be reached the test is skipped with a printed reason, unless
//! `OPENEXEC_TEST_PG_REQUIRED=1` (set by `.ci/run`), in which case it fails: CI must never pass
//! by skipping the PostgreSQL tests.

#![forbid(unsafe_code)]

use std::time::Duration;

use rand_core::RngCore;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// The server the tests use.
pub fn admin_url() -> String {
    std::env::var("OPENEXEC_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn required() -> bool {
    std::env::var("OPENEXEC_TEST_PG_REQUIRED").is_ok_and(|v| v == "1")
}

/// A database created for one test, dropped (with its connections) on drop.
pub struct TestDb {
    /// `postgres://…/<name>`: what the code under test is given as its database URL.
    pub url: String,
    pub name: String,
    admin: String,
}

async fn connect_admin(url: &str) -> Result<PgConnection, String> {
    let opts: PgConnectOptions = url
        .parse()
        .map_err(|e| format!("OPENEXEC_TEST_PG_URL '{url}': {e}"))?;
    match tokio::time::timeout(Duration::from_secs(5), opts.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("cannot connect to PostgreSQL at {url}: {e}")),
        Err(_) => Err(format!("PostgreSQL at {url} did not answer within 5 s")),
    }
}

impl TestDb {
    /// A fresh, empty database, or `None` (after printing why) when PostgreSQL is not available
    /// and not required. Panics when it is required and not available.
    pub async fn create(test: &str) -> Option<TestDb> {
        let admin = admin_url();
        let mut conn = match connect_admin(&admin).await {
            Ok(c) => c,
            Err(why) if required() => {
                panic!("OPENEXEC_TEST_PG_REQUIRED=1 but {why}")
            }
            Err(why) => {
                eprintln!("SKIPPED {test}: {why} (set OPENEXEC_TEST_PG_URL to a server to run it)");
                return None;
            }
        };
        let tag: String = test
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(30)
            .collect::<String>()
            .to_ascii_lowercase();
        let name = format!("oe_{tag}_{:08x}", rand_core::OsRng.next_u32());
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin}: {e}"));
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let (base, query) = match admin.split_once('?') {
            Some((_, q)) => (base.split('?').next().unwrap_or(base), format!("?{q}")),
            None => (base, String::new()),
        };
        Some(TestDb {
            url: format!("{base}/{name}{query}"),
            name,
            admin,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Dropped from sync code, maybe inside a runtime: do it on a thread of its own.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut c) = connect_admin(&admin).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut c)
                            .await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fresh_database_is_usable_and_dropped() {
        let Some(db) = TestDb::create("testpg_self").await else {
            return;
        };
        let mut c = PgConnection::connect(&db.url)
            .await
            .expect("connect to the fresh db");
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(one, 1);
        c.close().await.unwrap();
        let name = db.name.clone();
        drop(db);
        let mut a = connect_admin(&admin_url()).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut a)
            .await
            .unwrap();
        assert_eq!(left, 0, "the test database is dropped");
    }
}
