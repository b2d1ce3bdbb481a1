//! The kit's settings as a service receives them ([`HttpSettings`], every field optional, from
//! whichever layer won: flag, environment, file; declared once with [`settings!`](macro@crate::settings)
//! and embedded by each service) and validated ([`HttpConfig`], the one validator). Each service
//! names them with its own prefix: `OPENEXEC_HEADER_TIMEOUT_MS`, `CLAWLEDGER_HEADER_TIMEOUT_MS`…
//!
//! | setting (after the prefix) | default | bounds |
//! |---|---|---|
//! | `_HEADER_TIMEOUT_MS` | 10000 | 1..=86400000 |
//! | `_BODY_TIMEOUT_MS` | 30000 | 1..=86400000 |
//! | `_IDLE_TIMEOUT_MS` | 60000 | 1..=86400000 |
//! | `_MAX_CONNECTIONS` | 1024 | 1..=1000000 |
//! | `_SHUTDOWN_GRACE_MS` | 15000 | 1..=86400000 |
//! | `_ALLOWED_HOSTS` | loopback names when bound to loopback, else any | comma list of `name`, `name:port`, addresses, or `*` |
//! | `_ALLOWED_ORIGINS` | none | comma list of `scheme://host[:port]`, `null`, or `*` |

use std::time::Duration;

use crate::guard::GuardConfig;
use crate::serve::HttpLimits;

/// A setting with a bad value; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} {message}")]
pub struct SettingError {
    pub setting: String,
    pub message: String,
}

impl SettingError {
    pub fn new(setting: &str, message: impl Into<String>) -> SettingError {
        SettingError {
            setting: setting.to_string(),
            message: message.into(),
        }
    }
}

/// Longest allowed timeout: one day.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Largest allowed connection limit.
pub const MAX_CONNECTIONS: usize = 1_000_000;

/// `d` in whole milliseconds (the defaults' unit in settings).
const fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

crate::settings! {
    /// The kit's settings as given (each `None` takes its default), declared once here and
    /// embedded by every service under its own prefix (`groups: { http: HttpSettings }`):
    /// `--header-timeout-ms`, `OPENEXEC_HEADER_TIMEOUT_MS`, `header_timeout_ms` in OpenExec's
    /// file; `CLAWLEDGER_HEADER_TIMEOUT_MS` in ClawLedger's.
    pub struct HttpSettings {
        resolved: HttpValues,
        settings: {
            /// A request's headers must arrive within this, in ms, else the connection is closed.
            header_timeout_ms: u64 = millis(HttpLimits::DEFAULT.header_timeout),
            /// A request's body must arrive within this after its headers, in ms, else 408
            /// body_timeout.
            body_timeout_ms: u64 = millis(HttpLimits::DEFAULT.body_timeout),
            /// A keep-alive connection idle this long is closed, in ms.
            idle_timeout_ms: u64 = millis(HttpLimits::DEFAULT.idle_timeout),
            /// Most connections served at once; keep it below `ulimit -n`.
            max_connections: usize = HttpLimits::DEFAULT.max_connections,
            /// On SIGTERM, how long requests being served may take before their connections are
            /// dropped, in ms.
            shutdown_grace_ms: u64 = millis(HttpLimits::DEFAULT.shutdown_grace),
            /// Host names/addresses (`name`, `name:port`, or `*`) requests may name; others get 403
            /// host_not_allowed. Items may be comma lists themselves.
            #[default_text = "loopback names when bound to loopback, else any"]
            allowed_hosts: Vec<String>,
            /// Browser origins (`scheme://host[:port]`, `null`, or `*`) allowed to make cross-origin
            /// requests; others get 403 origin_not_allowed.
            #[default_text = "none"]
            allowed_origins: Vec<String>,
        }
    }
}

/// The kit's validated settings for one service.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub limits: HttpLimits,
    pub guard: GuardConfig,
}

impl HttpConfig {
    /// The defaults, naming the settings with `prefix` (e.g. `CLAWLEDGER`).
    pub fn defaults(prefix: &str) -> HttpConfig {
        HttpConfig {
            limits: HttpLimits::DEFAULT,
            guard: GuardConfig::defaults(prefix),
        }
    }
}

impl HttpSettings {
    /// Validate into an [`HttpConfig`]; `prefix` names the settings in errors (`OPENEXEC` →
    /// `OPENEXEC_HEADER_TIMEOUT_MS must be …`).
    pub fn validate(&self, prefix: &str) -> Result<HttpConfig, SettingError> {
        let v = self.clone().resolve();
        let ms = |name: &str, n: u64| -> Result<Duration, SettingError> {
            if (1..=MAX_TIMEOUT_MS).contains(&n) {
                Ok(Duration::from_millis(n))
            } else {
                Err(SettingError::new(
                    &format!("{prefix}_{name}"),
                    format!("must be between 1 and {MAX_TIMEOUT_MS} (ms), got {n}"),
                ))
            }
        };
        let limits = HttpLimits {
            header_timeout: ms("HEADER_TIMEOUT_MS", v.header_timeout_ms)?,
            body_timeout: ms("BODY_TIMEOUT_MS", v.body_timeout_ms)?,
            idle_timeout: ms("IDLE_TIMEOUT_MS", v.idle_timeout_ms)?,
            shutdown_grace: ms("SHUTDOWN_GRACE_MS", v.shutdown_grace_ms)?,
            max_connections: match v.max_connections {
                n @ 1..=MAX_CONNECTIONS => n,
                n => {
                    return Err(SettingError::new(
                        &format!("{prefix}_MAX_CONNECTIONS"),
                        format!("must be between 1 and {MAX_CONNECTIONS}, got {n}"),
                    ))
                }
            },
        };
        let guard = GuardConfig::parse(
            prefix,
            v.allowed_hosts.as_deref(),
            v.allowed_origins.as_deref(),
        )?;
        Ok(HttpConfig { limits, guard })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        let c = HttpSettings::default().validate("X").unwrap();
        assert_eq!(c.limits, HttpLimits::DEFAULT);
        assert_eq!(c.limits.header_timeout, Duration::from_secs(10));
        assert_eq!(c.limits.body_timeout, Duration::from_secs(30));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.max_connections, 1024);
        assert_eq!(c.limits.shutdown_grace, Duration::from_secs(15));
        let c = HttpSettings {
            header_timeout_ms: Some(1),
            body_timeout_ms: Some(2),
            idle_timeout_ms: Some(3),
            max_connections: Some(4),
            shutdown_grace_ms: Some(5),
            ..Default::default()
        }
        .validate("X")
        .unwrap();
        assert_eq!(
            c.limits,
            HttpLimits {
                header_timeout: Duration::from_millis(1),
                body_timeout: Duration::from_millis(2),
                idle_timeout: Duration::from_millis(3),
                max_connections: 4,
                shutdown_grace: Duration::from_millis(5),
            }
        );
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases: Vec<(HttpSettings, &str)> = vec![
            (
                HttpSettings {
                    header_timeout_ms: Some(0),
                    ..Default::default()
                },
                "OPENEXEC_HEADER_TIMEOUT_MS must be between 1 and 86400000 (ms), got 0",
            ),
            (
                HttpSettings {
                    body_timeout_ms: Some(MAX_TIMEOUT_MS + 1),
                    ..Default::default()
                },
                "OPENEXEC_BODY_TIMEOUT_MS",
            ),
            (
                HttpSettings {
                    idle_timeout_ms: Some(0),
                    ..Default::default()
                },
                "OPENEXEC_IDLE_TIMEOUT_MS",
            ),
            (
                HttpSettings {
                    shutdown_grace_ms: Some(0),
                    ..Default::default()
                },
                "OPENEXEC_SHUTDOWN_GRACE_MS",
            ),
            (
                HttpSettings {
                    max_connections: Some(0),
                    ..Default::default()
                },
                "OPENEXEC_MAX_CONNECTIONS must be between 1 and 1000000, got 0",
            ),
            (
                HttpSettings {
                    allowed_hosts: Some(vec!["ok.example,bad host".into()]),
                    ..Default::default()
                },
                "OPENEXEC_ALLOWED_HOSTS 'bad host'",
            ),
            (
                HttpSettings {
                    allowed_origins: Some(vec!["evil.example".into()]),
                    ..Default::default()
                },
                "OPENEXEC_ALLOWED_ORIGINS 'evil.example'",
            ),
        ];
        for (s, want) in cases {
            let e = s.validate("OPENEXEC").unwrap_err().to_string();
            assert!(e.starts_with(want), "{e} (wanted {want})");
        }
    }
}
