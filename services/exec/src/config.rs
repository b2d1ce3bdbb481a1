//! Service configuration: the settings, declared once ([`Settings`], one layer per source —
//! flags, environment, TOML file — merged in that order of precedence by
//! `openexec_kit::Layers`), validated into a [`Config`] with the defaults of SPEC §8.

use std::path::PathBuf;
use std::time::Duration;

use openexec_kit::config::list_items;

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

openexec_kit::settings! {
    /// One layer of OpenExec's settings (flags, environment or TOML file: every setting
    /// optional), declared once: each line gives the setting's flag (`--db-url`), environment
    /// variable (`OPENEXEC_DB_URL`), TOML key (`db_url`), help and default. `Config::from_settings`
    /// checks the values.
    pub struct Settings {
        prefix: "OPENEXEC",
        resolved: SettingValues,
        settings: {
            /// demo | clawshield
            mode: String = "demo".into(),
            /// Address to listen on (port 0 picks a free one).
            bind: String = DEFAULT_BIND.into(),
            /// Where generated keys live.
            data_dir: PathBuf = "./.openexec".into(),
            /// `sqlite:///relative.db`, `sqlite:////absolute.db`, or
            /// `postgres://user[:password]@host[:port]/db` (many replicas on one database).
            db_url: String = DEFAULT_DB_URL.into(),
            /// Receipt signing key: a key file's path, or the key itself (PKCS#8 PEM or raw
            /// base64 seed).
            #[default_text = "generated under the data directory"]
            receipt_key: String,
            /// Public keys of earlier receipt keys (after a rotation; PEM or raw base64, or a
            /// file): published in /keys and trusted by /receipts/verify, not used to sign.
            previous_receipt_keys: String,
            /// Origin line of the receipt log.
            #[default_text = "openexec/receipts/<key id of the log key>"]
            log_origin: String,
            /// The receipt log's signing key (a key file's path, or the key itself).
            #[default_text = "generated under the data directory"]
            log_key: String,
            /// Witness verifier keys (`<name>+<hex>+<base64>`, comma or newline separated) whose
            /// cosignatures the log accepts.
            witness_keys: String,
            /// Sign a checkpoint at least this often while the log grows, in ms.
            log_interval_ms: u64 = 250,
            /// ...or as soon as this many entries wait for one.
            log_batch: u64 = 256,
            /// Actions allowed to run.
            #[default_text = "all registered"]
            allowed_actions: Vec<String>,
            /// The approver roster ClawShield publishes (a JSON file, SPEC §4), pinned: artifacts'
            /// quorums and action floors are checked against its keys (clawshield mode).
            #[default_text = "none: quorums are the gate's word; an action with a floor is refused"]
            approver_roster: PathBuf,
            /// Approval floors per action (`charge_card=2,delete_db=3`): that many valid roster
            /// signatures whatever an artifact's quorum says (with `min_approvers` in the
            /// registry file, the higher counts).
            #[default_text = "none"]
            min_approvers: Vec<String>,
            /// The action registry file (TOML, SPEC §10): real actions with their schemas and
            /// handlers, beside the built-ins.
            #[default_text = "none: the built-ins only"]
            actions: PathBuf,
            /// ClawShield public key(s): PEM (several allowed) or raw base64, or a file holding
            /// them.
            #[env = "CLAWSHIELD_PUBLIC_KEY"]
            clawshield_public_key: String,
            /// Tenant of requests that name none.
            #[env = "CLAWSHIELD_TENANT_ID"]
            #[default_text = "default"]
            clawshield_tenant_id: String,
            /// Tenants served; others get 403 tenant_not_served.
            #[default_text = "the configured tenant alone"]
            tenants: Vec<String>,
            /// Rejections without a verified artifact that enter the receipt log, per second per
            /// tenant (token bucket). Past it the answer still carries a signed receipt, unlogged.
            rejection_log_rate: u32 = 50,
            /// Longest validity (expires_at - issued_at) of an approval artifact, in seconds.
            max_approval_ttl_seconds: i64 = openexec_core::artifact::DEFAULT_MAX_TTL_SECONDS,
            /// Clock skew allowed on approval time windows, in seconds.
            clock_skew_seconds: i64 = 30,
            /// Largest request body in bytes.
            max_body_bytes: usize = DEFAULT_MAX_BODY_BYTES,
            /// Deepest JSON nesting accepted (at most 120).
            max_depth: usize = openexec_core::json::DEFAULT_MAX_DEPTH,
            /// How long a duplicate waits for a running request, in ms.
            replay_wait_ms: u64 = 30_000,
            /// How long a write waits for a database lock (SQLite) or a connection (PostgreSQL)
            /// before answering 503, in ms.
            db_busy_timeout_ms: u64 = 5_000,
            /// PostgreSQL only: most connections this process opens (at least 3: one writer, one
            /// sequencer, reads).
            db_pool_size: u32 = 16,
            /// PostgreSQL only: how long a starting process waits for the database to accept
            /// connections before giving up (exit 3), in ms.
            db_connect_wait_ms: u64 = 30_000,
        },
        groups: {
            /// HTTP limits and the Host/Origin guard (the kit's, as `OPENEXEC_HEADER_TIMEOUT_MS`…).
            http: openexec_kit::HttpSettings,
        },
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
    /// The pinned approver roster file (`OPENEXEC_APPROVER_ROSTER`).
    pub approver_roster: Option<PathBuf>,
    /// Approval floors by action (`OPENEXEC_MIN_APPROVERS`).
    pub min_approvers: std::collections::BTreeMap<String, u32>,
    /// The action registry file (`OPENEXEC_ACTIONS`), loaded by `Service::start_declared`.
    pub actions: Option<PathBuf>,
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
    /// Check every setting (defaults applied: [`Settings::resolve`]); errors name the setting.
    pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        let s = s.resolve();
        let mode = Mode::parse(&s.mode)?;
        let allowed_actions =
            Some(list_items(s.allowed_actions.as_deref())).filter(|list| !list.is_empty());
        let max_depth = s.max_depth;
        if max_depth == 0 || max_depth > 120 {
            return Err(ConfigError(format!(
                "max_depth must be between 1 and 120, got {max_depth}"
            )));
        }
        let max_body_bytes = s.max_body_bytes;
        if max_body_bytes < 64 {
            return Err(ConfigError(format!(
                "max_body_bytes must be at least 64, got {max_body_bytes}"
            )));
        }
        let clock_skew_seconds = s.clock_skew_seconds;
        if !(0..=86_400).contains(&clock_skew_seconds) {
            return Err(ConfigError(format!(
                "OPENEXEC_CLOCK_SKEW_SECONDS must be between 0 and 86400, got {clock_skew_seconds}"
            )));
        }
        let max_approval_ttl_seconds = s.max_approval_ttl_seconds;
        if !(1..=openexec_core::artifact::DEFAULT_MAX_TTL_SECONDS)
            .contains(&max_approval_ttl_seconds)
        {
            return Err(ConfigError(format!(
                "OPENEXEC_MAX_APPROVAL_TTL_SECONDS must be between 1 and {}, got {max_approval_ttl_seconds}",
                openexec_core::artifact::DEFAULT_MAX_TTL_SECONDS
            )));
        }
        let rejection_log_rate = s.rejection_log_rate;
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
        for t in list_items(s.tenants.as_deref()) {
            openexec_core::request::check_tenant(&t)
                .map_err(|e| ConfigError(format!("OPENEXEC_TENANTS: {e}")))?;
            if !tenants.contains(&t) {
                tenants.push(t);
            }
        }
        let mut min_approvers = std::collections::BTreeMap::new();
        for item in list_items(s.min_approvers.as_deref()) {
            let bad = || {
                ConfigError(format!(
                    "OPENEXEC_MIN_APPROVERS: '{item}' is not <action>=<number from 0 to 100> (e.g. charge_card=2)"
                ))
            };
            let (action, n) = item.split_once('=').ok_or_else(bad)?;
            let n: u32 = n.trim().parse().map_err(|_| bad())?;
            if n > 100 || action.trim().is_empty() {
                return Err(bad());
            }
            min_approvers.insert(action.trim().to_string(), n);
        }
        let http = s
            .http
            .validate(<Settings as openexec_kit::ServiceSettings>::PREFIX)
            .map_err(|e| ConfigError(e.to_string()))?;
        Ok(Config {
            mode,
            bind: s.bind,
            data_dir: s.data_dir,
            db: parse_db_url(&s.db_url)?,
            receipt_key: nonempty(s.receipt_key),
            previous_receipt_keys: nonempty(s.previous_receipt_keys),
            log_origin: nonempty(s.log_origin),
            log_key: nonempty(s.log_key),
            witness_keys: nonempty(s.witness_keys),
            log_interval: Duration::from_millis(s.log_interval_ms.max(1)),
            log_batch: s.log_batch.max(1),
            allowed_actions,
            actions: s.actions.filter(|p| !p.as_os_str().is_empty()),
            approver_roster: s.approver_roster.filter(|p| !p.as_os_str().is_empty()),
            min_approvers,
            approval_keys: nonempty(s.clawshield_public_key),
            tenant_id,
            tenants,
            rejection_log_rate,
            clock_skew_seconds,
            max_approval_ttl_seconds,
            max_body_bytes,
            max_depth,
            replay_wait: Duration::from_millis(s.replay_wait_ms),
            db_busy_timeout: Duration::from_millis(s.db_busy_timeout_ms),
            db_connect_wait: Duration::from_millis(s.db_connect_wait_ms),
            db_pool_size: match s.db_pool_size {
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
            http: openexec_kit::HttpSettings {
                header_timeout_ms: Some(0),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("OPENEXEC_HEADER_TIMEOUT_MS"), "{e}");
        let e = Config::from_settings(Settings {
            http: openexec_kit::HttpSettings {
                allowed_origins: Some(vec!["evil.example".into()]),
                ..Default::default()
            },
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
