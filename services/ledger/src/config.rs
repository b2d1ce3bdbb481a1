//! ClawLedger's settings, declared once ([`Settings`]: flags, environment `CLAWLEDGER_*`, a TOML
//! file named by `--config` / `CLAWLEDGER_CONFIG`, merged in that order by
//! `openexec_kit::Layers`), validated into a [`Config`] ([`Config::from_settings`]).

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use openexec_kit::config::list_items;

use crate::store::{self, parse_db_url, DbConfig};
use crate::witness::{self, Limits, Watch};
use crate::{
    Config, CHECKPOINT_BYTES_RANGE, DEFAULT_CATCHUP_CHUNK, ENTRIES_BYTES_RANGE, MAX_CATCHUP_CHUNK,
    MAX_FETCH_TIMEOUT_MS, MAX_POOL_SIZE,
};

/// `d` in whole milliseconds (the unit of the settings).
const fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

openexec_kit::settings! {
    /// One layer of `openexec ledger serve`'s settings (flags, environment or TOML file: every
    /// setting optional), declared once: each line gives the flag (`--poll-ms`), the
    /// environment variable (`CLAWLEDGER_POLL_MS`), the TOML key (`poll_ms`), help and default.
    pub struct Settings {
        prefix: "CLAWLEDGER",
        resolved: SettingValues,
        settings: {
            /// Address to listen on (port 0 picks a free one).
            bind: String = "127.0.0.1:5100".into(),
            /// Where the generated witness key lives.
            data_dir: PathBuf = "./.clawledger".into(),
            /// `sqlite:///relative.db`, `sqlite:////absolute.db`, or
            /// `postgres://user[:password]@host[:port]/db` (also `postgresql://…`).
            db_url: String = "sqlite:///clawledger.db".into(),
            /// Most database connections open at once.
            db_pool_size: u32 = store::DEFAULT_POOL_SIZE,
            /// How long to wait for a database connection, connecting included, in ms (also
            /// SQLite's busy timeout). An unreachable database is not fatal: requests answer 503,
            /// /health reports it, and rounds retry until it is back.
            db_timeout_ms: u64 = millis(store::DEFAULT_TIMEOUT),
            /// Witness key: a key file's path, or the key itself (PKCS#8 PEM or raw base64 seed).
            #[default_text = "generated under the data directory"]
            key: String,
            /// Cosigner name.
            #[default_text = "clawledger/<key id>"]
            name: String,
            /// A log to watch: `URL=VERIFIER_KEY` (the origin is the key's name); repeatable, or
            /// comma-separated.
            watch: Vec<String>,
            /// How often each log is polled, in ms.
            poll_ms: u64 = 1000,
            /// Most new entries caught up per chunk (at most 1000000): each chunk is stored
            /// before the next is fetched, and a restart resumes after the last stored one.
            /// Nothing is cosigned or served as evidence before all chunks hash to the
            /// checkpoint's root.
            catchup_chunk: u64 = DEFAULT_CATCHUP_CHUNK,
            /// Most bytes of a watched log's checkpoint answer (1024 to 16 MiB); a larger answer
            /// is refused (not read past the cap) as a response_too_large alert.
            max_checkpoint_bytes: u64 = witness::DEFAULT_MAX_CHECKPOINT_BYTES,
            /// Most bytes of one entries page a watched log answers (64 KiB to 1 GiB); a larger
            /// answer is a response_too_large alert. Proofs are capped at 64 KiB.
            max_entries_bytes: u64 = witness::DEFAULT_MAX_ENTRIES_BYTES,
            /// Longest time one request to a watched log may take, its whole body included, in
            /// ms. A body not finished by then is a response_timeout alert.
            fetch_timeout_ms: u64 = millis(witness::DEFAULT_FETCH_TIMEOUT),
        },
        groups: {
            /// HTTP limits and the Host/Origin guard (the kit's, as
            /// `CLAWLEDGER_HEADER_TIMEOUT_MS`…).
            http: openexec_kit::HttpSettings,
        },
    }
}

impl Config {
    /// Check every setting (defaults applied: [`Settings::resolve`]); errors name the setting.
    pub fn from_settings(s: Settings) -> anyhow::Result<Config> {
        let s = s.resolve();
        let mut watches = Vec::new();
        for w in list_items(s.watch.as_deref()) {
            let parsed = Watch::parse(&w)?;
            if watches
                .iter()
                .any(|x: &Watch| x.origin() == parsed.origin())
            {
                anyhow::bail!("--watch: origin '{}' given twice", parsed.origin());
            }
            watches.push(parsed);
        }
        if s.poll_ms == 0 {
            anyhow::bail!("--poll-ms must be positive");
        }
        let pool_size = within("--db-pool-size", s.db_pool_size, 1..=MAX_POOL_SIZE)?;
        if s.db_timeout_ms == 0 {
            anyhow::bail!("--db-timeout-ms must be positive");
        }
        let chunk = within("--catchup-chunk", s.catchup_chunk, 1..=MAX_CATCHUP_CHUNK)?;
        let checkpoint_bytes = within(
            "--max-checkpoint-bytes",
            s.max_checkpoint_bytes,
            CHECKPOINT_BYTES_RANGE,
        )?;
        let entries_bytes = within(
            "--max-entries-bytes",
            s.max_entries_bytes,
            ENTRIES_BYTES_RANGE,
        )?;
        let fetch_ms = within(
            "--fetch-timeout-ms",
            s.fetch_timeout_ms,
            1..=MAX_FETCH_TIMEOUT_MS,
        )?;
        let url = parse_db_url(&s.db_url)?;
        let http = s
            .http
            .validate(<Settings as openexec_kit::ServiceSettings>::PREFIX)?;
        Ok(Config {
            bind: s.bind,
            data_dir: s.data_dir,
            db: DbConfig {
                url,
                pool_size,
                timeout: Duration::from_millis(s.db_timeout_ms),
            },
            key: s.key,
            name: s.name,
            watch: watches,
            poll: Duration::from_millis(s.poll_ms),
            catchup_chunk: chunk,
            limits: Limits {
                checkpoint_bytes,
                entries_bytes,
                timeout: Duration::from_millis(fetch_ms),
            },
            http,
        })
    }
}

/// `v` if `range` holds it, else an error naming `setting`.
fn within<T: PartialOrd + std::fmt::Display>(
    setting: &str,
    v: T,
    range: RangeInclusive<T>,
) -> anyhow::Result<T> {
    if range.contains(&v) {
        Ok(v)
    } else {
        anyhow::bail!(
            "{setting} must be between {} and {}, got {v}",
            range.start(),
            range.end()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_limits_default_and_refuse_what_is_out_of_range() {
        let cfg = Config::from_settings(Settings::default()).unwrap();
        assert_eq!(cfg.limits, Limits::default());
        assert_eq!(cfg.limits.checkpoint_bytes, 65_536);
        assert_eq!(cfg.limits.entries_bytes, 16 * 1024 * 1024);
        assert_eq!(cfg.limits.timeout, Duration::from_secs(30));
        let cfg = Config::from_settings(Settings {
            max_checkpoint_bytes: Some(4096),
            max_entries_bytes: Some(1 << 20),
            fetch_timeout_ms: Some(250),
            ..Settings::default()
        })
        .unwrap();
        assert_eq!(
            cfg.limits,
            Limits {
                checkpoint_bytes: 4096,
                entries_bytes: 1 << 20,
                timeout: Duration::from_millis(250),
            }
        );
        for (f, name) in [
            (
                Settings {
                    max_checkpoint_bytes: Some(100),
                    ..Settings::default()
                },
                "--max-checkpoint-bytes",
            ),
            (
                Settings {
                    max_checkpoint_bytes: Some(1 << 30),
                    ..Settings::default()
                },
                "--max-checkpoint-bytes",
            ),
            (
                Settings {
                    max_entries_bytes: Some(1000),
                    ..Settings::default()
                },
                "--max-entries-bytes",
            ),
            (
                Settings {
                    fetch_timeout_ms: Some(0),
                    ..Settings::default()
                },
                "--fetch-timeout-ms",
            ),
        ] {
            let e = Config::from_settings(f).unwrap_err().to_string();
            assert!(e.starts_with(name), "{e}");
        }
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let cfg = Config::from_settings(Settings::default()).unwrap();
        assert_eq!(cfg.bind, "127.0.0.1:5100");
        assert_eq!(cfg.data_dir, PathBuf::from("./.clawledger"));
        assert_eq!(cfg.db.pool_size, store::DEFAULT_POOL_SIZE);
        assert_eq!(cfg.db.timeout, store::DEFAULT_TIMEOUT);
        assert_eq!(cfg.poll, Duration::from_secs(1));
        assert_eq!(cfg.catchup_chunk, DEFAULT_CATCHUP_CHUNK);
        assert!(cfg.watch.is_empty());
        assert_eq!(cfg.http.limits, openexec_kit::HttpLimits::DEFAULT);
    }

    #[test]
    fn a_toml_file_has_the_flags_keys_and_the_http_settings() {
        let s: Settings = toml::from_str(
            "poll_ms = 500\nwatch = []\nallowed_hosts = [\"ledger.internal\"]\nmax_connections = 50\n",
        )
        .unwrap();
        let cfg = Config::from_settings(s).unwrap();
        assert_eq!(cfg.poll, Duration::from_millis(500));
        assert_eq!(cfg.http.limits.max_connections, 50);
        let e = toml::from_str::<Settings>("pol_ms = 500\n").unwrap_err();
        assert!(e.to_string().contains("unknown key `pol_ms`"), "{e}");
        // The kit's validator checks the HTTP settings, under ClawLedger's names.
        let zero: Settings = toml::from_str("max_connections = 0\n").unwrap();
        let e = Config::from_settings(zero).unwrap_err();
        assert!(
            e.to_string().starts_with("CLAWLEDGER_MAX_CONNECTIONS"),
            "{e}"
        );
    }
}
