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

/// A PostgreSQL server of a test's own (`initdb` into a temporary directory, `pg_ctl` on a free
/// port), for tests that stop and start the database itself without disturbing any other test.
/// Stopped and removed on drop. Run as the `postgres` user (via `runuser`) when the test runs as
/// root, since PostgreSQL refuses to run as root.
pub struct PrivatePg {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePg {
    /// Start one, or `None` (after printing why) when the PostgreSQL server programs are not
    /// installed and PostgreSQL is not required; panics when it is required and cannot start.
    pub fn start(test: &str) -> Option<PrivatePg> {
        let bin = match find_server_bin() {
            Some(b) => b,
            None if required() => panic!(
                "OPENEXEC_TEST_PG_REQUIRED=1 but no PostgreSQL server programs (initdb, pg_ctl) were found under /usr/lib/postgresql/*/bin or PG_BIN"
            ),
            None => {
                eprintln!("SKIPPED {test}: no PostgreSQL server programs (initdb, pg_ctl) found (set PG_BIN to their directory to run it)");
                return None;
            }
        };
        use std::os::unix::fs::MetadataExt;
        let as_postgres = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let dir = std::env::temp_dir().join(format!(
            "openexec-pg-{}-{:08x}",
            std::process::id(),
            rand_core::OsRng.next_u32()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let pg = PrivatePg {
            bin,
            dir,
            port,
            as_postgres,
        };
        if as_postgres {
            pg.run(
                "chown",
                &[
                    "-R",
                    "postgres:postgres",
                    pg.dir.to_str().unwrap_or_default(),
                ],
            );
        }
        let data = pg.data();
        pg.pg(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        pg.start_again();
        Some(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stop the server (fast shutdown: every connection is closed); returns once it is down.
    pub fn stop(&self) {
        self.pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Start it again on the same port and data; returns once it accepts connections.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=on",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap_or_default(),
                "-w",
                "start",
            ],
        );
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn pg(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program).display().to_string();
        if self.as_postgres {
            let mut all = vec!["-u", "postgres", "--", path.as_str()];
            all.extend_from_slice(args);
            self.run("runuser", &all);
        } else {
            self.run(&path, args);
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = std::process::Command::new(program)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl").display().to_string();
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", path.as_str()]);
            c
        } else {
            std::process::Command::new(&path)
        };
        let _ = cmd.args(args).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `pg_ctl`.
fn find_server_bin() -> Option<std::path::PathBuf> {
    let has = |d: &std::path::Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("PG_BIN").map(std::path::PathBuf::from) {
        return has(&d).then_some(d);
    }
    let mut found: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has(&bin).then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
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

    #[tokio::test]
    async fn a_private_server_stops_and_starts() {
        let Some(pg) = PrivatePg::start("testpg_private") else {
            return;
        };
        let mut c = PgConnection::connect(&pg.url()).await.expect("connect");
        sqlx::query("CREATE TABLE t (x int)")
            .execute(&mut c)
            .await
            .unwrap();
        pg.stop();
        assert!(
            sqlx::query("SELECT 1").execute(&mut c).await.is_err(),
            "the connection is gone with the server"
        );
        assert!(
            PgConnection::connect(&pg.url()).await.is_err(),
            "refused while down"
        );
        pg.start_again();
        let mut c = PgConnection::connect(&pg.url()).await.expect("reconnect");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(n, 0, "the data survived the restart");
    }
}
