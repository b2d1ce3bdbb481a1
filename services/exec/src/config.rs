//! Service configuration: one `Settings` layer per source (flags, environment, TOML file), merged
//! in that order of precedence, then validated into a `Config` with the defaults of SPEC §8.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// How the service decides whether a request may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No approval needed; every receipt says `"mode": "demo"`.
    Demo,
    /// Every execution needs a valid approval artifact from ClawShield.
    Clawshield,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Demo => "demo",
            Mode::Clawshield => "clawshield",
        }
    }

    pub fn parse(s: &str) -> Result<Mode, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "demo" => Ok(Mode::Demo),
            "clawshield" => Ok(Mode::Clawshield),
            other => Err(ConfigError(format!(
                "OPENEXEC_MODE must be 'demo' or 'clawshield', not '{other}'"
            ))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// One layer of settings. Every field is optional so that layers can be merged; unknown keys in a
/// TOML file are an error (a typo must not silently fall back to a default).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub mode: Option<String>,
    pub bind: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub db_url: Option<String>,
    /// Path of the receipt signing key (or the key itself, PEM or raw base64).
    pub receipt_key: Option<String>,
    /// Public keys of earlier receipt keys (PEM or raw base64, or a file): still published in
    /// `/keys` and accepted by `/receipts/verify` after a rotation.
    pub previous_receipt_keys: Option<String>,
    pub log_origin: Option<String>,
    /// The receipt log's signing key (a file path, or the key itself).
    pub log_key: Option<String>,
    /// Witnesses whose cosignatures the log accepts: note verifier keys
    /// (`<name>+<hex>+<base64>`), comma or newline separated.
    pub witness_keys: Option<String>,
    /// Sign a checkpoint at least this often while the log grows (ms).
    pub log_interval_ms: Option<u64>,
    /// ...or as soon as this many entries wait for one.
    pub log_batch: Option<u64>,
    /// Comma-separated in the environment; a list in TOML.
    pub allowed_actions: Option<Vec<String>>,
    /// ClawShield public key(s): PEM or raw base64, several allowed.
    pub clawshield_public_key: Option<String>,
    pub clawshield_tenant_id: Option<String>,
    /// The tenants served (comma-separated in the environment; a list in TOML). Default: the
    /// configured tenant alone (`CLAWSHIELD_TENANT_ID`, else `default`).
    pub tenants: Option<Vec<String>>,
    /// How many rejections without a verified artifact enter the log per second per tenant.
    pub rejection_log_rate: Option<u32>,
    pub clock_skew_seconds: Option<i64>,
    /// Longest validity (`expires_at − issued_at`) an approval artifact may have.
    pub max_approval_ttl_seconds: Option<i64>,
    pub max_body_bytes: Option<usize>,
    pub max_depth: Option<usize>,
    /// How long a duplicate of a running request waits for its outcome.
    pub replay_wait_ms: Option<u64>,
    /// How long a store operation may wait for a lock (SQLite) or a connection (PostgreSQL)
    /// before the store counts as unavailable.
    pub db_busy_timeout_ms: Option<u64>,
    /// Most connections to PostgreSQL this process opens (reads, the writer, the sequencer).
    pub db_pool_size: Option<u32>,
    /// How long a starting process waits for PostgreSQL to accept connections (ms).
    pub db_connect_wait_ms: Option<u64>,
    /// HTTP limits (openexec-kit's `HttpLimits`): a request's headers, its body, an idle
    /// keep-alive connection (ms); most connections served at once; how long a stop waits for
    /// requests being served (ms).
    pub header_timeout_ms: Option<u64>,
    pub body_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub shutdown_grace_ms: Option<u64>,
    /// Host names/addresses requests may name (default: loopback names when bound to
    /// loopback). Comma-separated in the environment; a list in TOML.
    pub allowed_hosts: Option<Vec<String>>,
    /// Browser origins allowed to make cross-origin requests (default none). Comma-separated in
    /// the environment; a list in TOML.
    pub allowed_origins: Option<Vec<String>>,
}

impl Settings {
    /// `self` wins over `lower` field by field.
    pub fn over(self, lower: Settings) -> Settings {
        Settings {
            mode: self.mode.or(lower.mode),
            bind: self.bind.or(lower.bind),
            data_dir: self.data_dir.or(lower.data_dir),
            db_url: self.db_url.or(lower.db_url),
            receipt_key: self.receipt_key.or(lower.receipt_key),
            previous_receipt_keys: self.previous_receipt_keys.or(lower.previous_receipt_keys),
            log_origin: self.log_origin.or(lower.log_origin),
            log_key: self.log_key.or(lower.log_key),
            witness_keys: self.witness_keys.or(lower.witness_keys),
            log_interval_ms: self.log_interval_ms.or(lower.log_interval_ms),
            log_batch: self.log_batch.or(lower.log_batch),
            allowed_actions: self.allowed_actions.or(lower.allowed_actions),
            clawshield_public_key: self.clawshield_public_key.or(lower.clawshield_public_key),
            clawshield_tenant_id: self.clawshield_tenant_id.or(lower.clawshield_tenant_id),
            tenants: self.tenants.or(lower.tenants),
            rejection_log_rate: self.rejection_log_rate.or(lower.rejection_log_rate),
            clock_skew_seconds: self.clock_skew_seconds.or(lower.clock_skew_seconds),
            max_approval_ttl_seconds: self
                .max_approval_ttl_seconds
                .or(lower.max_approval_ttl_seconds),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            max_depth: self.max_depth.or(lower.max_depth),
            replay_wait_ms: self.replay_wait_ms.or(lower.replay_wait_ms),
            db_busy_timeout_ms: self.db_busy_timeout_ms.or(lower.db_busy_timeout_ms),
            db_pool_size: self.db_pool_size.or(lower.db_pool_size),
            db_connect_wait_ms: self.db_connect_wait_ms.or(lower.db_connect_wait_ms),
            header_timeout_ms: self.header_timeout_ms.or(lower.header_timeout_ms),
            body_timeout_ms: self.body_timeout_ms.or(lower.body_timeout_ms),
            idle_timeout_ms: self.idle_timeout_ms.or(lower.idle_timeout_ms),
            max_connections: self.max_connections.or(lower.max_connections),
            shutdown_grace_ms: self.shutdown_grace_ms.or(lower.shutdown_grace_ms),
            allowed_hosts: self.allowed_hosts.or(lower.allowed_hosts),
            allowed_origins: self.allowed_origins.or(lower.allowed_origins),
        }
    }

    /// Read a TOML settings file.
    pub fn from_toml_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        toml::from_str(&text)
            .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))
    }
}

/// Where the service keeps its state (`OPENEXEC_DB_URL`, read by `openexec_store`).
pub use openexec_store::DbTarget;

/// How `OPENEXEC_DB_URL` is named in its messages.
pub const DB_URL: openexec_store::DbSetting = openexec_store::DbSetting {
    name: "OPENEXEC_DB_URL",
    example: "openexec.db",
    keeps: "receipts",
};

/// Read `OPENEXEC_DB_URL` (SQLAlchemy style for SQLite; see `openexec_store::url`).
pub fn parse_db_url(url: &str) -> Result<DbTarget, ConfigError> {
    DbTarget::parse(url, &DB_URL).map_err(|e| ConfigError(e.0))
}

/// The validated configuration of one OpenExec process.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub bind: String,
    pub data_dir: PathBuf,
    pub db: DbTarget,
    pub receipt_key: Option<String>,
    pub previous_receipt_keys: Option<String>,
    pub log_origin: Option<String>,
    pub log_key: Option<String>,
    pub witness_keys: Option<String>,
    pub log_interval: Duration,
    pub log_batch: u64,
    pub allowed_actions: Option<Vec<String>>,
    pub approval_keys: Option<String>,
    pub tenant_id: Option<String>,
    /// The tenants served; the default tenant is always one of them.
    pub tenants: Vec<String>,
    /// Rejections without a verified artifact logged per second per tenant (token bucket).
    pub rejection_log_rate: u32,
    pub clock_skew_seconds: i64,
    pub max_approval_ttl_seconds: i64,
    pub max_body_bytes: usize,
    pub max_depth: usize,
    pub replay_wait: Duration,
    pub db_busy_timeout: Duration,
    pub db_pool_size: u32,
    pub db_connect_wait: Duration,
    /// HTTP limits and the Host/Origin guard's settings.
    pub http: openexec_kit::HttpConfig,
}

pub const DEFAULT_BIND: &str = "127.0.0.1:5000";
pub const DEFAULT_DB_URL: &str = "sqlite:///openexec.db";
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

impl Config {
    pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        let mode = Mode::parse(s.mode.as_deref().unwrap_or("demo"))?;
        let allowed_actions = s.allowed_actions.and_then(|list| {
            let list: Vec<String> = list
                .iter()
                .flat_map(|item| item.split(','))
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect();
            (!list.is_empty()).then_some(list)
        });
        let max_depth = s
            .max_depth
            .unwrap_or(openexec_core::json::DEFAULT_MAX_DEPTH);
        if max_depth == 0 || max_depth > 120 {
            return Err(ConfigError(format!(
                "max_depth must be between 1 and 120, got {max_depth}"
            )));
        }
        let max_body_bytes = s.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes < 64 {
            return Err(ConfigError(format!(
                "max_body_bytes must be at least 64, got {max_body_bytes}"
            )));
        }
        let clock_skew_seconds = s.clock_skew_seconds.unwrap_or(30);
        if !(0..=86_400).contains(&clock_skew_seconds) {
            return Err(ConfigError(format!(
                "OPENEXEC_CLOCK_SKEW_SECONDS must be between 0 and 86400, got {clock_skew_seconds}"
            )));
        }
        let max_approval_ttl_seconds = s
            .max_approval_ttl_seconds
            .unwrap_or(openexec_core::artifact::DEFAULT_MAX_TTL_SECONDS);
        if !(1..=openexec_core::artifact::DEFAULT_MAX_TTL_SECONDS)
            .contains(&max_approval_ttl_seconds)
        {
            return Err(ConfigError(format!(
                "OPENEXEC_MAX_APPROVAL_TTL_SECONDS must be between 1 and {}, got {max_approval_ttl_seconds}",
                openexec_core::artifact::DEFAULT_MAX_TTL_SECONDS
            )));
        }
        let rejection_log_rate = s.rejection_log_rate.unwrap_or(50);
        if !(1..=1_000_000).contains(&rejection_log_rate) {
            return Err(ConfigError(format!(
                "OPENEXEC_REJECTION_LOG_RATE must be between 1 and 1000000 per second, got {rejection_log_rate}"
            )));
        }
        let nonempty = |v: Option<String>| v.filter(|x| !x.trim().is_empty());
        let tenant_id = nonempty(s.clawshield_tenant_id);
        if let Some(t) = &tenant_id {
            openexec_core::request::check_tenant(t)
                .map_err(|e| ConfigError(format!("CLAWSHIELD_TENANT_ID: {e}")))?;
        }
        let default_tenant = tenant_id.clone().unwrap_or_else(|| "default".to_string());
        let mut tenants = vec![default_tenant];
        for t in s
            .tenants
            .iter()
            .flatten()
            .flat_map(|item| item.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            openexec_core::request::check_tenant(t)
                .map_err(|e| ConfigError(format!("OPENEXEC_TENANTS: {e}")))?;
            if !tenants.iter().any(|x| x == t) {
                tenants.push(t.to_string());
            }
        }
        let http = openexec_kit::HttpSettings {
            header_timeout_ms: s.header_timeout_ms,
            body_timeout_ms: s.body_timeout_ms,
            idle_timeout_ms: s.idle_timeout_ms,
            max_connections: s.max_connections,
            shutdown_grace_ms: s.shutdown_grace_ms,
            allowed_hosts: s.allowed_hosts,
            allowed_origins: s.allowed_origins,
        }
        .validate("OPENEXEC")
        .map_err(|e| ConfigError(e.to_string()))?;
        Ok(Config {
            mode,
            bind: s.bind.unwrap_or_else(|| DEFAULT_BIND.to_string()),
            data_dir: s.data_dir.unwrap_or_else(|| PathBuf::from("./.openexec")),
            db: parse_db_url(s.db_url.as_deref().unwrap_or(DEFAULT_DB_URL))?,
            receipt_key: nonempty(s.receipt_key),
            previous_receipt_keys: nonempty(s.previous_receipt_keys),
            log_origin: nonempty(s.log_origin),
            log_key: nonempty(s.log_key),
            witness_keys: nonempty(s.witness_keys),
            log_interval: Duration::from_millis(s.log_interval_ms.unwrap_or(250).max(1)),
            log_batch: s.log_batch.unwrap_or(256).max(1),
            allowed_actions,
            approval_keys: nonempty(s.clawshield_public_key),
            tenant_id,
            tenants,
            rejection_log_rate,
            clock_skew_seconds,
            max_approval_ttl_seconds,
            max_body_bytes,
            max_depth,
            replay_wait: Duration::from_millis(s.replay_wait_ms.unwrap_or(30_000)),
            db_busy_timeout: Duration::from_millis(s.db_busy_timeout_ms.unwrap_or(5_000)),
            db_connect_wait: Duration::from_millis(s.db_connect_wait_ms.unwrap_or(30_000)),
            db_pool_size: match s.db_pool_size.unwrap_or(16) {
                n @ 3..=1000 => n,
                n => {
                    return Err(ConfigError(format!(
                        "OPENEXEC_DB_POOL_SIZE must be between 3 and 1000 (one writer, one sequencer, reads), got {n}"
                    )))
                }
            },
            http,
        })
    }

    /// The tenant a request belongs to when it names none.
    pub fn default_tenant(&self) -> &str {
        self.tenant_id.as_deref().unwrap_or("default")
    }

    /// Whether requests of `tenant` are served here (`OPENEXEC_TENANTS`).
    pub fn serves(&self, tenant: &str) -> bool {
        self.tenants.iter().any(|t| t == tenant)
    }

    /// The time rules approval artifacts are held to.
    pub fn approval_window(&self) -> openexec_core::artifact::Window {
        openexec_core::artifact::Window {
            skew: chrono::Duration::seconds(self.clock_skew_seconds),
            max_ttl: chrono::Duration::seconds(self.max_approval_ttl_seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_urls_name_openexec_db_url() {
        // The forms themselves are `openexec_store::url`'s tests.
        assert_eq!(
            parse_db_url("sqlite:///openexec.db").unwrap(),
            DbTarget::Sqlite("openexec.db".into())
        );
        assert_eq!(
            parse_db_url("postgres://postgres@127.0.0.1:5432/test")
                .unwrap()
                .backend(),
            "postgres"
        );
        for (bad, says) in [
            ("sqlite://", "receipts must outlive the process"),
            ("sqlite:///:memory:", "(sqlite:///openexec.db)"),
            ("mysql://u:pw123@h/db", "must start with sqlite:"),
            (
                "postgres://u:pw123@h:notaport/db",
                "'postgres://u:***@h:notaport/db'",
            ),
            ("sqlite://host/x.db", "three slashes"),
        ] {
            let e = parse_db_url(bad).unwrap_err().to_string();
            assert!(
                e.contains("OPENEXEC_DB_URL") && e.contains(says),
                "{bad}: {e}"
            );
            assert!(!e.contains("pw123"), "{e}");
        }
        // The configuration's Debug never shows a password either.
        let c = Config::from_settings(Settings {
            db_url: Some("postgres://app:s3cret@db.internal/openexec".into()),
            ..Default::default()
        })
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("app:***@db.internal"),
            "{shown}"
        );
    }

    #[test]
    fn allow_list_splits_commas_and_ignores_blanks() {
        let c = Config::from_settings(Settings {
            allowed_actions: Some(vec![" echo, add ,".into()]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.allowed_actions, Some(vec!["echo".into(), "add".into()]));
        let c = Config::from_settings(Settings {
            allowed_actions: Some(vec!["".into()]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.allowed_actions, None);
    }

    #[test]
    fn higher_layer_wins() {
        let a = Settings {
            mode: Some("clawshield".into()),
            ..Default::default()
        };
        let b = Settings {
            mode: Some("demo".into()),
            bind: Some("127.0.0.1:1".into()),
            ..Default::default()
        };
        let c = Config::from_settings(a.over(b)).unwrap();
        assert_eq!(c.mode, Mode::Clawshield);
        assert_eq!(c.bind, "127.0.0.1:1");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::from_settings(Settings {
            mode: Some("prod".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("'prod'"), "{e}");
        let e = Config::from_settings(Settings {
            max_depth: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("max_depth"), "{e}");
        for n in [0, 2, 1001] {
            let e = Config::from_settings(Settings {
                db_pool_size: Some(n),
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.to_string().contains("OPENEXEC_DB_POOL_SIZE"), "{e}");
        }
        let ok = Config::from_settings(Settings {
            db_url: Some("postgresql://app@db.internal/openexec".into()),
            db_pool_size: Some(3),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.db_pool_size, 3);
        assert_eq!(
            ok.db,
            parse_db_url("postgresql://app@db.internal/openexec").unwrap()
        );
    }

    #[test]
    fn http_settings_are_validated_and_named() {
        let c = Config::from_settings(Settings::default()).unwrap();
        assert_eq!(c.http.limits, openexec_kit::HttpLimits::DEFAULT);
        let e = Config::from_settings(Settings {
            header_timeout_ms: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("OPENEXEC_HEADER_TIMEOUT_MS"), "{e}");
        let e = Config::from_settings(Settings {
            allowed_origins: Some(vec!["evil.example".into()]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("OPENEXEC_ALLOWED_ORIGINS"), "{e}");
        let toml: Settings = toml::from_str(
            "header_timeout_ms = 1000\nmax_connections = 50\nallowed_hosts = [\"openexec.internal\"]\nallowed_origins = [\"https://console.example\"]",
        )
        .unwrap();
        let c = Config::from_settings(toml).unwrap();
        assert_eq!(c.http.limits.header_timeout, Duration::from_secs(1));
        assert_eq!(c.http.limits.max_connections, 50);
    }
}
