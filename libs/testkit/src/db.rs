//! A database of either backend for one test, and the macro that runs a body on both.

/// A test's database: a SQLite file in a temporary directory, or a fresh PostgreSQL database
/// (dropped afterwards). Either is given to the code under test as a URL.
pub enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(openexec_testpg::TestDb),
}

impl Db {
    /// A SQLite database file in a new temporary directory.
    pub fn sqlite() -> Db {
        Db::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    /// A fresh PostgreSQL database named after `test`; `None` (having printed why) when no
    /// server is configured and none is required.
    pub async fn postgres(test: &str) -> Option<Db> {
        openexec_testpg::TestDb::create(test)
            .await
            .map(Db::Postgres)
    }

    /// `sqlite:////abs/path/test.db` or `postgres://…`.
    pub fn url(&self) -> String {
        match self {
            Db::Sqlite(dir) => format!("sqlite:///{}", dir.path().join("test.db").display()),
            Db::Postgres(db) => db.url.clone(),
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }
}

/// Run the async test function `$name(db: openexec_testkit::Db)` once on SQLite and once on
/// PostgreSQL, as the tests `$name::sqlite` and `$name::postgres` (the latter skips, saying why,
/// without a server).
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                super::$name($crate::Db::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                if let Some(db) = $crate::Db::postgres(stringify!($name)).await {
                    super::$name(db).await;
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Db;

    async fn body(db: Db) {
        let url = db.url();
        match db.backend() {
            "sqlite" => assert!(
                url.starts_with("sqlite:///") && url.ends_with("test.db"),
                "{url}"
            ),
            _ => assert!(url.starts_with("postgres"), "{url}"),
        }
    }

    crate::both_backends!(body);
}
