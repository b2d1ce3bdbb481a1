//! A service's database URL, read once for every service: SQLAlchemy style for SQLite
//! (`sqlite:///relative.db`, `sqlite:////absolute.db`, or `sqlite:path`), PostgreSQL's
//! connection URIs (`postgres://…`, `postgresql://…`). In-memory SQLite is refused: a service's
//! state must outlive its process. Messages name the service's setting ([`DbSetting`]) and never
//! show a password, nor do [`DbTarget`]'s `Display` and `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use openexec_core::url::redact_password;
use sqlx::postgres::PgConnectOptions;

/// The words a service's database setting is named with in messages.
#[derive(Debug, Clone, Copy)]
pub struct DbSetting {
    /// The setting (`OPENEXEC_DB_URL`).
    pub name: &'static str,
    /// The file of the example URLs (`openexec.db` → `sqlite:///openexec.db`).
    pub example: &'static str,
    /// What must outlive the process, for the refusal of an in-memory database ("receipts").
    pub keeps: &'static str,
}

/// A database URL that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DbUrlError(pub String);

/// Where a service keeps its state: a SQLite file or a PostgreSQL database. Its `Display`
/// (`sqlite database x.db`, `PostgreSQL database postgres://app:***@db/x`) and `Debug` never
/// show a password.
#[derive(Clone, PartialEq, Eq)]
pub enum DbTarget {
    Sqlite(PathBuf),
    /// Shared by every replica.
    Postgres(PgUrl),
}

/// A PostgreSQL URL that parsed. Only [`PgUrl::expose`] gives its text with the password;
/// `Display` and `Debug` show it redacted.
#[derive(Clone)]
pub struct PgUrl {
    url: String,
    shown: String,
    options: Box<PgConnectOptions>,
}

impl PartialEq for PgUrl {
    fn eq(&self, other: &PgUrl) -> bool {
        self.url == other.url
    }
}

impl Eq for PgUrl {}

impl PgUrl {
    /// Read a `postgres://` or `postgresql://` URL (anything PostgreSQL's connection URIs allow).
    pub fn parse(url: &str, setting: &DbSetting) -> Result<PgUrl, DbUrlError> {
        let url = url.trim();
        let shown = redact_password(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| DbUrlError(format!("{} '{shown}': {e}", setting.name)))?;
        Ok(PgUrl {
            url: url.to_string(),
            shown,
            options: Box::new(options),
        })
    }

    /// The connection options the URL gives.
    pub fn options(&self) -> PgConnectOptions {
        (*self.options).clone()
    }

    /// The URL as given, password included: for connecting only, never for a message.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// The URL with its password hidden.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.shown)
    }
}

impl DbTarget {
    /// Read a database URL (see the module). Every message names `setting.name`.
    pub fn parse(url: &str, setting: &DbSetting) -> Result<DbTarget, DbUrlError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return PgUrl::parse(url, setting).map(DbTarget::Postgres);
        }
        let memory = || {
            DbUrlError(format!(
                "{}: an in-memory SQLite database is refused: {} must outlive the process; give a file path (sqlite:///{})",
                setting.name, setting.keeps, setting.example
            ))
        };
        let rest = url.strip_prefix("sqlite:").ok_or_else(|| {
            DbUrlError(format!(
                "{} must start with sqlite: (e.g. sqlite:///{}) or postgres:// (e.g. postgres://user@host/db), got '{}'",
                setting.name,
                setting.example,
                redact_password(url)
            ))
        })?;
        let path = match rest.strip_prefix("//") {
            // sqlite://<host>/<path>: the host must be empty.
            Some(after) => match after.strip_prefix('/') {
                Some(p) => p,
                None if after.is_empty() => return Err(memory()),
                None => {
                    return Err(DbUrlError(format!(
                        "{} '{}': use three slashes for a relative path (sqlite:///{}) and four for an absolute one",
                        setting.name,
                        redact_password(url),
                        setting.example
                    )))
                }
            },
            None => rest,
        };
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err(memory());
        }
        Ok(DbTarget::Sqlite(PathBuf::from(path)))
    }

    /// Which backend this is, for `/health` and logs ("sqlite" or "postgres").
    pub fn backend(&self) -> &'static str {
        match self {
            DbTarget::Sqlite(_) => "sqlite",
            DbTarget::Postgres(_) => "postgres",
        }
    }
}

impl fmt::Display for DbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbTarget::Sqlite(p) => write!(f, "sqlite database {}", p.display()),
            DbTarget::Postgres(u) => write!(f, "PostgreSQL database {u}"),
        }
    }
}

impl fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbTarget({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SETTING: DbSetting = DbSetting {
        name: "X_DB_URL",
        example: "x.db",
        keeps: "its records",
    };

    fn parse(u: &str) -> Result<DbTarget, DbUrlError> {
        DbTarget::parse(u, &SETTING)
    }

    fn sqlite(u: &str) -> PathBuf {
        match parse(u).unwrap() {
            DbTarget::Sqlite(p) => p,
            other => panic!("{u}: {other}"),
        }
    }

    #[test]
    fn sqlite_urls_read_like_sqlalchemy() {
        assert_eq!(sqlite("sqlite:///x.db"), Path::new("x.db"));
        assert_eq!(sqlite("sqlite:///sub/x.db"), Path::new("sub/x.db"));
        assert_eq!(sqlite("sqlite:////tmp/x/x.db"), Path::new("/tmp/x/x.db"));
        assert_eq!(sqlite("  sqlite:x.db "), Path::new("x.db"));
        assert_eq!(sqlite("sqlite:///x.db?mode=rwc"), Path::new("x.db"));
        assert_eq!(parse("sqlite:///x.db").unwrap().backend(), "sqlite");
    }

    #[test]
    fn in_memory_databases_are_refused_naming_the_setting() {
        for u in [
            "sqlite://",
            "sqlite:///:memory:",
            "sqlite::memory:",
            "sqlite:",
            "sqlite:///",
        ] {
            let e = parse(u).unwrap_err().to_string();
            assert!(
                e.contains("X_DB_URL")
                    && e.contains("in-memory")
                    && e.contains("its records must outlive the process")
                    && e.contains("sqlite:///x.db"),
                "{u}: {e}"
            );
        }
    }

    #[test]
    fn a_host_in_a_sqlite_url_asks_for_three_slashes() {
        let e = parse("sqlite://host/x.db").unwrap_err().to_string();
        assert!(e.contains("X_DB_URL") && e.contains("three slashes"), "{e}");
        let e = parse("sqlite://u:pw123@host/x.db").unwrap_err().to_string();
        assert!(!e.contains("pw123") && e.contains("u:***@host"), "{e}");
    }

    #[test]
    fn other_schemes_are_refused_naming_both_forms() {
        for u in ["mysql://x", "x.db", "", "file:///x.db"] {
            let e = parse(u).unwrap_err().to_string();
            assert!(
                e.contains("X_DB_URL must start with sqlite:") && e.contains("postgres://"),
                "{u}: {e}"
            );
        }
    }

    #[test]
    fn postgres_urls_parse_and_bad_ones_are_refused() {
        for u in [
            "postgres://postgres@127.0.0.1:5432/test",
            "postgresql://u@localhost:5433/db",
        ] {
            let t = parse(u).unwrap();
            assert_eq!(t.backend(), "postgres");
            match &t {
                DbTarget::Postgres(p) => assert_eq!(p.expose(), u),
                other => panic!("{other}"),
            }
        }
        let e = parse("postgres://h:notaport/db").unwrap_err().to_string();
        assert!(
            e.starts_with("X_DB_URL 'postgres://h:notaport/db': "),
            "{e}"
        );
        // The same URL is the same target.
        assert_eq!(
            parse("postgres://u@h/db").unwrap(),
            parse(" postgres://u@h/db").unwrap()
        );
        assert_ne!(
            parse("postgres://u@h/db").unwrap(),
            parse("postgres://u@h/db2").unwrap()
        );
    }

    #[test]
    fn passwords_are_never_shown() {
        let t = parse("postgres://me:s3cret@db.example:5432/x?sslmode=disable").unwrap();
        let DbTarget::Postgres(p) = &t else {
            panic!("{t}")
        };
        for shown in [
            t.to_string(),
            format!("{t:?}"),
            p.to_string(),
            format!("{p:?}"),
            p.shown().to_string(),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("me:***@db.example:5432/x"), "{shown}");
        }
        assert!(t.to_string().starts_with("PostgreSQL database "), "{t}");
        assert!(p.expose().contains("s3cret"));
        for bad in [
            "postgres://me:s3cret@db.example:port/x",
            "mysql://me:s3cret@db/x",
            "sqlite://me:s3cret@db/x",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(!e.contains("s3cret") && e.contains("me:***@db"), "{e}");
        }
        let t = parse("sqlite:////tmp/x.db").unwrap();
        assert_eq!(t.to_string(), "sqlite database /tmp/x.db");
        assert_eq!(format!("{t:?}"), "DbTarget(sqlite database /tmp/x.db)");
    }
}
