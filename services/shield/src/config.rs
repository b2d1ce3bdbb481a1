//! ClawShield's settings, declared once ([`Settings`]: flags, environment `CLAWSHIELD_*`, a TOML
//! file; merged by `openexec_kit::Layers` in that order of precedence), validated into a
//! [`Config`].

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

openexec_kit::settings! {
    /// One layer of `openexec shield serve`'s settings (flags, environment or TOML file: every
    /// setting optional): each line gives the flag (`--policy`), the environment variable
    /// (`CLAWSHIELD_POLICY`), the TOML key (`policy`), help and default.
    pub struct Settings {
        prefix: "CLAWSHIELD",
        resolved: SettingValues,
        settings: {
            /// Address to listen on (port 0 picks a free one).
            bind: String = DEFAULT_BIND.into(),
            /// Where generated keys live.
            data_dir: PathBuf = "./.clawshield".into(),
            /// `sqlite:///relative.db`, `sqlite:////absolute.db`, or
            /// `postgres://user[:password]@host[:port]/db` (many replicas on one database).
            db_url: String = "sqlite:///clawshield.db".into(),
            /// The gate's signing key (approval artifacts and the roster): a key file's path, or
            /// the key itself (PKCS#8 PEM or raw base64 seed). OpenExec trusts its public key.
            #[default_text = "generated under the data directory"]
            key: String,
            /// The decision log's signing key (a key of its own).
            #[default_text = "generated under the data directory"]
            log_key: String,
            /// Origin line of the decision log.
            #[default_text = "clawshield/decisions/<key id of the log key>"]
            log_origin: String,
            /// Witness verifier keys (`<name>+<hex>+<base64>`, comma or newline separated) whose
            /// cosignatures the decision log accepts.
            witness_keys: String,
            /// Sign a checkpoint at least this often while the log grows, in ms.
            log_interval_ms: u64 = 250,
            /// ...or as soon as this many entries wait for one.
            log_batch: u64 = 256,
            /// The identities file (TOML): agents, approvers and admins with their token hashes
            /// (see the README).
            #[default_text = "none: every /v1 call but the roster is refused"]
            identities: PathBuf,
            /// The policy bundle: a directory of .rego files and an optional data.json. It
            /// becomes the first policy of an empty store; later bundles come into force only
            /// through an approved `clawshield.policy.activate` proposal.
            #[default_text = "none: every proposal is denied policy_error"]
            policy: PathBuf,
            /// Longest time one policy evaluation may take, in ms (past it: policy_error).
            policy_time_limit_ms: u64 = 500,
            /// Validity of an artifact when the policy names none (expires_in_seconds), in seconds.
            artifact_ttl_seconds: u64 = 300,
            /// How long a proposal may wait for votes when the policy names no ttl_seconds.
            pending_ttl_seconds: u64 = 3600,
            /// Proposals per second per (tenant, agent), token bucket (0: no limit).
            rate_per_agent: u32 = 50,
            /// Proposals per second per (tenant, action), token bucket (0: no limit).
            rate_per_action: u32 = 200,
            /// Bucket size, in seconds of rate (a burst of rate × this passes at once).
            rate_burst_seconds: u32 = 2,
            /// Proposals of one intent (same intent_hash) by one agent allowed per loop window;
            /// the next is denied loop_detected (0: no loop detection).
            loop_max: u32 = 10,
            /// The loop window, in seconds.
            loop_window_seconds: u64 = 60,
            /// After a loop trips, that intent is refused for this long, in seconds.
            loop_cooldown_seconds: u64 = 300,
            /// Cost budget per tenant and budget window, in the policy's cost units (0: none).
            /// Reserved at decision time (approved and pending), released on denial or expiry.
            budget: u64 = 0,
            /// The budget window, in seconds (windows are aligned on multiples of it: UTC days
            /// for 86400).
            budget_window_seconds: u64 = 86_400,
            /// How often pending proposals are checked for expiry, in ms.
            expiry_interval_ms: u64 = 1000,
            /// Largest request body in bytes.
            max_body_bytes: usize = 1 << 20,
            /// Deepest JSON nesting accepted (at most 120).
            max_depth: usize = openexec_core::json::DEFAULT_MAX_DEPTH,
            /// How long a write waits for a database lock (SQLite) or a connection
            /// (PostgreSQL), in ms.
            db_busy_timeout_ms: u64 = 5_000,
            /// PostgreSQL only: most connections this process opens (at least 3).
            db_pool_size: u32 = 16,
            /// PostgreSQL only: how long a starting process waits for the database, in ms.
            db_connect_wait_ms: u64 = 30_000,
        },
        groups: {
            /// HTTP limits and the Host/Origin guard (the kit's, as `CLAWSHIELD_HEADER_TIMEOUT_MS`…).
            http: openexec_kit::HttpSettings,
        },
    }
}

pub const DEFAULT_BIND: &str = "127.0.0.1:5200";

/// How `CLAWSHIELD_DB_URL` is named in its messages.
pub const DB_URL: openexec_store::DbSetting = openexec_store::DbSetting {
    name: "CLAWSHIELD_DB_URL",
    example: "clawshield.db",
    keeps: "decisions",
};

/// The validated configuration of one ClawShield process.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: String,
    pub data_dir: PathBuf,
    pub db: openexec_store::DbTarget,
    pub key: Option<String>,
    pub log_key: Option<String>,
    pub log_origin: Option<String>,
    pub witness_keys: Option<String>,
    pub log_interval: Duration,
    pub log_batch: u64,
    pub identities: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    pub policy_time_limit: Duration,
    pub artifact_ttl_seconds: u64,
    pub pending_ttl_seconds: u64,
    pub rate_per_agent: u32,
    pub rate_per_action: u32,
    pub rate_burst_seconds: u32,
    pub loop_max: u32,
    pub loop_window_seconds: u64,
    pub loop_cooldown_seconds: u64,
    pub budget: u64,
    pub budget_window_seconds: u64,
    pub expiry_interval: Duration,
    pub max_body_bytes: usize,
    pub max_depth: usize,
    pub db_busy_timeout: Duration,
    pub db_pool_size: u32,
    pub db_connect_wait: Duration,
    pub http: openexec_kit::HttpConfig,
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError(format!(
            "CLAWSHIELD_{name} must be between {lo} and {hi}, got {v}"
        )));
    }
    Ok(v)
}

impl Config {
    /// Check every setting (defaults applied); errors name the setting.
    pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        let s = s.resolve();
        let nonempty = |v: Option<String>| v.filter(|x| !x.trim().is_empty());
        let path = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        let http = s
            .http
            .validate(<Settings as openexec_kit::ServiceSettings>::PREFIX)
            .map_err(|e| ConfigError(e.to_string()))?;
        Ok(Config {
            bind: s.bind,
            data_dir: s.data_dir,
            db: openexec_store::DbTarget::parse(&s.db_url, &DB_URL)
                .map_err(|e| ConfigError(e.0))?,
            key: nonempty(s.key),
            log_key: nonempty(s.log_key),
            log_origin: nonempty(s.log_origin),
            witness_keys: nonempty(s.witness_keys),
            log_interval: Duration::from_millis(s.log_interval_ms.max(1)),
            log_batch: s.log_batch.max(1),
            identities: path(s.identities),
            policy: path(s.policy),
            policy_time_limit: Duration::from_millis(range(
                "POLICY_TIME_LIMIT_MS",
                s.policy_time_limit_ms,
                1,
                60_000,
            )?),
            artifact_ttl_seconds: range("ARTIFACT_TTL_SECONDS", s.artifact_ttl_seconds, 1, 86_400)?,
            pending_ttl_seconds: range(
                "PENDING_TTL_SECONDS",
                s.pending_ttl_seconds,
                1,
                30 * 86_400,
            )?,
            rate_per_agent: range("RATE_PER_AGENT", s.rate_per_agent, 0, 1_000_000)?,
            rate_per_action: range("RATE_PER_ACTION", s.rate_per_action, 0, 1_000_000)?,
            rate_burst_seconds: range("RATE_BURST_SECONDS", s.rate_burst_seconds, 1, 3600)?,
            loop_max: range("LOOP_MAX", s.loop_max, 0, 1_000_000)?,
            loop_window_seconds: range("LOOP_WINDOW_SECONDS", s.loop_window_seconds, 1, 86_400)?,
            loop_cooldown_seconds: range(
                "LOOP_COOLDOWN_SECONDS",
                s.loop_cooldown_seconds,
                0,
                30 * 86_400,
            )?,
            budget: range("BUDGET", s.budget, 0, i64::MAX as u64 / 2)?,
            budget_window_seconds: range(
                "BUDGET_WINDOW_SECONDS",
                s.budget_window_seconds,
                1,
                366 * 86_400,
            )?,
            expiry_interval: Duration::from_millis(range(
                "EXPIRY_INTERVAL_MS",
                s.expiry_interval_ms,
                10,
                600_000,
            )?),
            max_body_bytes: range("MAX_BODY_BYTES", s.max_body_bytes, 64, 64 << 20)?,
            max_depth: range("MAX_DEPTH", s.max_depth, 1, 120)?,
            db_busy_timeout: Duration::from_millis(s.db_busy_timeout_ms),
            db_pool_size: range("DB_POOL_SIZE", s.db_pool_size, 3, 1000)?,
            db_connect_wait: Duration::from_millis(s.db_connect_wait_ms),
            http,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_named_errors() {
        let c = Config::from_settings(Settings::default()).unwrap();
        assert_eq!(c.bind, DEFAULT_BIND);
        assert_eq!(c.artifact_ttl_seconds, 300);
        assert_eq!(c.db.backend(), "sqlite");
        let e = Config::from_settings(Settings {
            loop_window_seconds: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("CLAWSHIELD_LOOP_WINDOW_SECONDS"),
            "{e}"
        );
        let e = Config::from_settings(Settings {
            db_url: Some("mysql://x".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("CLAWSHIELD_DB_URL"), "{e}");
        let e = toml::from_str::<Settings>("no_such_key = 1").unwrap_err();
        assert!(e.to_string().contains("no_such_key"), "{e}");
    }
}
