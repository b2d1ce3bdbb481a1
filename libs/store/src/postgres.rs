//! Opening a PostgreSQL pool the one way every service does: lazily (the pool connects on
//! demand and reconnects by itself), with its size and acquire timeout; and, for a service that
//! needs its database to start, waiting for it to accept connections, up to a bound, with a
//! clear final error.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::{OpenError, PgUrl, PoolLimits, StoreLimits};

/// A pool of up to `limits.size` connections with `opts` that connects on demand (nothing is
/// reached yet: a service may start while its database is down); a caller waits up to
/// `limits.timeout` for a connection, connecting included.
pub fn lazy_pool(opts: PgConnectOptions, limits: PoolLimits) -> PgPool {
    PgPoolOptions::new()
        .max_connections(limits.size.max(1))
        .min_connections(limits.min)
        .acquire_timeout(limits.timeout)
        .connect_lazy_with(opts)
}

/// A service replica's connection options and pool, opened the one way every service with
/// replicas does: `lock_timeout` = `limits.timeout` (a lock held by a replica that hangs must not
/// hang this one: past it the statement fails and the request answers 503), the
/// `application` name, a pool of `limits.pool_size − 1` connections (at least 2: one more is the
/// sequencer's, outside the pool, on the returned options), and the start-up wait for the
/// database ([`wait_for`], up to `limits.connect_wait`, named by `wait_setting`).
pub async fn open_replica(
    url: &PgUrl,
    application: &str,
    limits: StoreLimits,
    wait_setting: &str,
) -> Result<(PgConnectOptions, PgPool), OpenError> {
    let timeout_ms = limits.timeout.as_millis().max(1).to_string();
    let connect: PgConnectOptions = url
        .options()
        .options([("lock_timeout", timeout_ms.as_str())])
        .application_name(application);
    let pool = lazy_pool(
        connect.clone(),
        PoolLimits {
            size: limits.pool_size.saturating_sub(1).max(2),
            min: 1,
            timeout: limits.timeout,
        },
    );
    wait_for(
        &pool,
        url,
        limits.connect_wait,
        limits.timeout,
        wait_setting,
    )
    .await?;
    Ok((connect, pool))
}

/// Wait until `pool` hands out a connection: a database that starts with (or after) the
/// service. Tries every 100 ms doubling to 2 s, each try bounded by `try_timeout`, logging
/// each failure; past `wait` the error names the database (password hidden), the bound and
/// the setting that sets it (`wait_setting`, e.g. `OPENEXEC_DB_CONNECT_WAIT_MS`).
pub async fn wait_for(
    pool: &PgPool,
    url: &PgUrl,
    wait: Duration,
    try_timeout: Duration,
    wait_setting: &str,
) -> Result<(), OpenError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let left = wait.saturating_sub(started.elapsed());
        let attempt = match tokio::time::timeout(left.min(try_timeout), pool.acquire()).await {
            Ok(r) => r.map(drop).map_err(|e| e.to_string()),
            Err(_) => Err("no connection yet".to_string()),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() + pause < wait => {
                tracing::warn!(error = %e, url = %url, "waiting for PostgreSQL to accept connections");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(OpenError(format!(
                    "cannot connect to PostgreSQL ({url}) within {} ms ({wait_setting}): {e}",
                    wait.as_millis()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DbSetting;

    const SETTING: DbSetting = DbSetting {
        name: "X_DB_URL",
        example: "x.db",
        keeps: "its records",
    };

    #[tokio::test]
    async fn a_database_that_never_answers_fails_after_the_wait_naming_it_without_password() {
        // Nothing listens on port 1.
        let url = PgUrl::parse("postgres://me:s3cret@127.0.0.1:1/x", &SETTING).unwrap();
        let limits = PoolLimits {
            size: 2,
            min: 0,
            timeout: Duration::from_millis(200),
        };
        let pool = lazy_pool(url.options(), limits);
        let started = Instant::now();
        let e = wait_for(
            &pool,
            &url,
            Duration::from_millis(700),
            limits.timeout,
            "X_WAIT_MS",
        )
        .await
        .unwrap_err()
        .to_string();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "gave up after {took:?}");
        assert!(took < Duration::from_secs(5), "waited {took:?}");
        assert!(
            e.starts_with("cannot connect to PostgreSQL (postgres://me:***@127.0.0.1:1/x) within 700 ms (X_WAIT_MS): "),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[tokio::test]
    async fn a_database_that_answers_is_waited_for_once() {
        let Some(db) = openexec_testpg::TestDb::create("store_wait").await else {
            return;
        };
        let url = PgUrl::parse(&db.url, &SETTING).unwrap();
        let limits = PoolLimits {
            size: 3,
            min: 0,
            timeout: Duration::from_secs(2),
        };
        let pool = lazy_pool(url.options(), limits);
        wait_for(
            &pool,
            &url,
            Duration::from_secs(5),
            limits.timeout,
            "X_WAIT_MS",
        )
        .await
        .unwrap();
        assert_eq!(pool.options().get_max_connections(), 3);
        pool.close().await;
    }
}
