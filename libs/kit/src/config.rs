//! Settings declared once. A service lists its settings in one [`settings!`](macro@crate::settings)
//! declaration, and each setting's line there is the only place it is spelled: the declaration
//! yields, for every setting,
//!
//! | what | from `header_timeout_ms: u64 = 10_000`, in a service with prefix `OPENEXEC` |
//! |---|---|
//! | the TOML key (and clap id) | `header_timeout_ms` |
//! | the long flag | `--header-timeout-ms` |
//! | the environment variable | `OPENEXEC_HEADER_TIMEOUT_MS` (or the one `#[env = "…"]` names) |
//! | the help text | the doc comment, with `[default: 10000] [env: OPENEXEC_HEADER_TIMEOUT_MS]` |
//! | the default | `10000`, applied by `resolve()` and shown in `--help` |
//!
//! and for the whole struct: the struct itself (every field an `Option`, one *layer*), its
//! resolved twin (defaults applied), the merge of two layers ([`Layer::over`]), reading the
//! environment ([`Layer::from_env`]), a `serde::Deserialize` that refuses unknown keys naming
//! them (a TOML file, [`read_file`]), and the flags (clap), so that a binary flattens
//! [`Layers<S>`] — the flags plus `--config FILE` / `<PREFIX>_CONFIG` — into its subcommand and
//! calls [`Layers::load`]: flags > environment > file > default.
//!
//! Lists (`Vec<String>`) are comma-separated in the environment and in flags (a list flag may
//! also be repeated: `--watch a --watch b`), and arrays in the file. A group of settings declared
//! once (the kit's [`HttpSettings`](crate::HttpSettings)) is embedded by every service under the
//! service's prefix (`groups: { http: HttpSettings }`): its keys are the service's own keys, in
//! the file as on the command line.
//!
//! Parsing here only checks a value's type (a number is a number); what a value may be is the
//! service's validation (`Config::from_settings`), which names the setting in its errors.

use std::ffi::OsString;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::settings::SettingError;

/// What the macro's expansion names, re-exported so that a service needs no direct dependency
/// on clap or serde.
#[doc(hidden)]
pub mod __private {
    pub use clap::{self, ArgMatches};
    pub use serde::{self, de::MapAccess};
}

/// Where environment variables are read from: [`process_env`], or a map in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process's environment.
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// The environment variable of a setting: `explicit`, else `<PREFIX>_<KEY>` upper-cased.
pub fn env_name(prefix: &str, key: &str, explicit: Option<&str>) -> String {
    match explicit {
        Some(name) => name.to_string(),
        None => format!("{prefix}_{}", key.to_ascii_uppercase()),
    }
}

/// The long flag of a setting, without its dashes: the key with `-` for `_`.
pub fn flag_name(key: &str) -> String {
    key.replace('_', "-")
}

/// A type a setting may have: read from an environment variable or a flag as text, from a file
/// as what serde gives, shown as text in `--help`.
pub trait Value: Sized + Clone + Send + Sync + 'static + DeserializeOwned {
    /// Several values: comma-separated in the environment and flags, an array in a file.
    const LIST: bool;
    /// Read the text of an environment variable.
    fn from_text(text: &str) -> Result<Self, String>;
    /// Give the flag its value parser and action.
    fn configure(arg: Arg) -> Arg;
    /// The value given on the command line, if any.
    fn from_matches(m: &ArgMatches, id: &str) -> Result<Option<Self>, clap::Error>;
    /// As `--help` shows it.
    fn show(&self) -> String;
}

/// A single value, read from text by [`Scalar::parse`].
pub trait Scalar: Sized + Clone + Send + Sync + 'static + DeserializeOwned {
    fn parse(text: &str) -> Result<Self, String>;
    fn show(&self) -> String;
}

macro_rules! numbers {
    ($($t:ty => $what:literal),* $(,)?) => {$(
        impl Scalar for $t {
            fn parse(text: &str) -> Result<Self, String> {
                text.trim()
                    .parse::<$t>()
                    .map_err(|e| format!("must be {}, got '{text}' ({e})", $what))
            }
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

numbers!(
    u32 => "a whole number up to 4294967295",
    u64 => "a whole number",
    usize => "a whole number",
    i64 => "an integer",
);

impl Scalar for String {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
    fn show(&self) -> String {
        self.clone()
    }
}

impl Scalar for PathBuf {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
}

fn matches_error(id: &str, e: clap::parser::MatchesError) -> clap::Error {
    clap::Error::raw(
        clap::error::ErrorKind::ValueValidation,
        format!("--{}: {e}\n", flag_name(id)),
    )
}

impl<T: Scalar> Value for T {
    const LIST: bool = false;
    fn from_text(text: &str) -> Result<Self, String> {
        T::parse(text)
    }
    fn configure(arg: Arg) -> Arg {
        arg.action(ArgAction::Set)
            .value_parser(|s: &str| T::parse(s))
    }
    fn from_matches(m: &ArgMatches, id: &str) -> Result<Option<Self>, clap::Error> {
        Ok(m.try_get_one::<T>(id)
            .map_err(|e| matches_error(id, e))?
            .cloned())
    }
    fn show(&self) -> String {
        Scalar::show(self)
    }
}

impl<T: Scalar> Value for Vec<T> {
    const LIST: bool = true;
    fn from_text(text: &str) -> Result<Self, String> {
        text.split(',').map(T::parse).collect()
    }
    fn configure(arg: Arg) -> Arg {
        arg.action(ArgAction::Append)
            .value_delimiter(',')
            .value_parser(|s: &str| T::parse(s))
    }
    fn from_matches(m: &ArgMatches, id: &str) -> Result<Option<Self>, clap::Error> {
        Ok(m.try_get_many::<T>(id)
            .map_err(|e| matches_error(id, e))?
            .map(|v| v.cloned().collect()))
    }
    fn show(&self) -> String {
        self.iter().map(Scalar::show).collect::<Vec<_>>().join(",")
    }
}

/// One setting as the declaration gives it, named under a prefix.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The TOML key, e.g. `header_timeout_ms` (also the flag's clap id).
    pub key: &'static str,
    /// The long flag without its dashes, e.g. `header-timeout-ms`.
    pub flag: String,
    /// The environment variable, e.g. `OPENEXEC_HEADER_TIMEOUT_MS`.
    pub env: String,
    /// The doc comment, one line.
    pub help: String,
    /// The default as `--help` shows it (a value, or a description such as "generated").
    pub default: Option<String>,
    /// Several values (comma-separated, or an array in a file).
    pub list: bool,
    configure: fn(Arg) -> Arg,
}

impl Spec {
    /// The setting `key` of type `T` under `prefix`; the macro's expansion calls this.
    pub fn new<T: Value>(
        prefix: &str,
        key: &'static str,
        env: Option<&str>,
        doc: &[&str],
        default: Option<String>,
    ) -> Spec {
        let help = doc
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Spec {
            key,
            flag: flag_name(key),
            env: env_name(prefix, key, env),
            help,
            default,
            list: T::LIST,
            configure: T::configure,
        }
    }

    /// The help line: the doc comment, the default and the environment variable.
    pub fn help_line(&self) -> String {
        let mut h = self.help.clone();
        if let Some(d) = &self.default {
            h.push_str(&format!(" [default: {d}]"));
        }
        h.push_str(&format!(" [env: {}]", self.env));
        h
    }

    /// The flag. Values may start with a hyphen (a PEM key, a negative number: the service's
    /// validation says what is allowed).
    pub fn arg(&self) -> Arg {
        (self.configure)(
            Arg::new(self.key)
                .long(self.flag.clone())
                .value_name(self.key.to_ascii_uppercase())
                .help(self.help_line())
                .allow_hyphen_values(true),
        )
    }
}

/// One layer of a declared settings struct (or group): every setting optional. Implemented by
/// [`settings!`](macro@crate::settings); the methods take the prefix of the service embedding it.
pub trait Layer: Sized + Default + Clone + DeserializeOwned {
    /// Every setting, the groups' included, in declaration order.
    fn specs(prefix: &str) -> Vec<Spec>;
    /// The settings given by environment variables (a bad value names its variable).
    fn from_env(prefix: &str, env: Env) -> Result<Self, SettingError>;
    /// The settings given as flags.
    fn from_matches(m: &ArgMatches) -> Result<Self, clap::Error>;
    /// `self` wins over `lower`, setting by setting.
    fn over(self, lower: Self) -> Self;
    /// Read `key`'s value from `map` if `key` is one of this layer's (or its groups'); whether
    /// it was.
    fn take<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;

    /// Whether `key` is one of the TOML keys.
    fn accepts(key: &str) -> bool {
        Self::specs("").iter().any(|s| s.key == key)
    }
}

/// A service's settings: a [`Layer`] with the prefix of its environment variables.
pub trait ServiceSettings: Layer {
    /// `OPENEXEC`, `CLAWLEDGER`, …
    const PREFIX: &'static str;
}

/// Read one environment variable as a `T`: `None` when unset; an error naming it when its value
/// is not UTF-8 or not a `T`.
pub fn env_value<T: Value>(name: &str, env: Env) -> Result<Option<T>, SettingError> {
    let Some(raw) = env(name) else {
        return Ok(None);
    };
    let text = raw
        .into_string()
        .map_err(|_| SettingError::new(name, "is not valid UTF-8"))?;
    T::from_text(&text)
        .map(Some)
        .map_err(|e| SettingError::new(name, e))
}

/// The items of a list setting, for its validation: each item may itself be a comma list (an
/// array's item in a file, as in the environment); trimmed, blanks dropped.
pub fn list_items(list: Option<&[String]>) -> Vec<String> {
    list.unwrap_or_default()
        .iter()
        .flat_map(|i| i.split(','))
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty())
        .collect()
}

/// `v`, else `default()`; the macro's `resolve` calls this.
pub fn or_default<T>(v: Option<T>, default: impl FnOnce() -> T) -> T {
    v.unwrap_or_else(default)
}

/// A default expression typed as its setting; the macro's expansion calls this.
pub fn typed<T>(v: T) -> T {
    v
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// An environment variable with a bad value (named).
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not TOML, has an unknown key (named), or a value of the wrong type.
    #[error("config file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

/// Read a TOML settings file. An unknown key is an error naming the key and the file: a typo
/// must not silently fall back to a default.
pub fn read_file<S: Layer>(path: &Path) -> Result<S, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    toml::from_str(&text).map_err(|e| LoadError::File {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// `S::deserialize`: a map whose keys are `S`'s (and its groups'); the macro's `Deserialize`
/// calls this.
pub fn deserialize<'de, S: Layer, D: Deserializer<'de>>(d: D) -> Result<S, D::Error> {
    d.deserialize_map(LayerVisitor::<S>(PhantomData))
}

struct LayerVisitor<S>(PhantomData<S>);

impl<'de, S: Layer> Visitor<'de> for LayerVisitor<S> {
    type Value = S;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table of settings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<S, A::Error> {
        let mut out = S::default();
        while let Some(key) = map.next_key_seed(KeySeed::<S>(PhantomData))? {
            if !out.take(&key, &mut map)? {
                return Err(de::Error::custom(unknown_key::<S>(&key)));
            }
        }
        Ok(out)
    }
}

/// The value of `key` as a `T`; an error names the key. The macro's `take` calls this.
pub fn next_value<'de, A: MapAccess<'de>, T: Value>(map: &mut A, key: &str) -> Result<T, A::Error> {
    map.next_value_seed(Named::<T>(key, PhantomData))
}

/// A value whose errors name its key.
struct Named<'k, T>(&'k str, PhantomData<T>);

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Named<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(d).map_err(|e| de::Error::custom(format!("`{}`: {e}", self.0)))
    }
}

/// A key, refused (with its position, where the format knows it) unless it is one of `S`'s.
struct KeySeed<S>(PhantomData<S>);

impl<'de, S: Layer> DeserializeSeed<'de> for KeySeed<S> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let key = String::deserialize(d)?;
        if S::accepts(&key) {
            Ok(key)
        } else {
            Err(de::Error::custom(unknown_key::<S>(&key)))
        }
    }
}

fn unknown_key<S: Layer>(key: &str) -> String {
    let keys: Vec<String> = S::specs("")
        .iter()
        .map(|s| format!("`{}`", s.key))
        .collect();
    format!("unknown key `{key}`, expected one of {}", keys.join(", "))
}

/// A service's settings as its command line takes them: every setting of `S` as a flag, and
/// `--config FILE` (or `<PREFIX>_CONFIG`), a TOML file of the same settings. Flatten it into a
/// clap subcommand (`Serve(Layers<Settings>)`), then [`Layers::load`].
#[derive(Clone, Debug, Default)]
pub struct Layers<S> {
    /// `--config`, when given as a flag.
    pub config: Option<PathBuf>,
    /// The settings given as flags.
    pub flags: S,
}

/// The clap id of `--config`; no setting may be called `config`.
const CONFIG_ID: &str = "config";

impl<S: ServiceSettings> Layers<S> {
    /// The environment variable naming the file: `<PREFIX>_CONFIG`.
    pub fn config_env() -> String {
        env_name(S::PREFIX, CONFIG_ID, None)
    }

    /// Flags over the process's environment over the file (`--config`, else `<PREFIX>_CONFIG`).
    /// Defaults are the service's `resolve()`.
    pub fn load(self) -> Result<S, LoadError> {
        self.load_from(&process_env)
    }

    /// [`Layers::load`] with the environment `env`.
    pub fn load_from(self, env: Env) -> Result<S, LoadError> {
        let from_env = S::from_env(S::PREFIX, env)?;
        let path = match self.config {
            Some(p) => Some(p),
            None => env_value::<PathBuf>(&Self::config_env(), env)?,
        };
        let file = match path {
            Some(p) => read_file::<S>(&p)?,
            None => S::default(),
        };
        Ok(self.flags.over(from_env).over(file))
    }
}

impl<S: ServiceSettings> clap::FromArgMatches for Layers<S> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Layers {
            config: PathBuf::from_matches(m, CONFIG_ID)?,
            flags: S::from_matches(m)?,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        let given = Self::from_arg_matches(m)?;
        self.config = given.config.or(self.config.take());
        self.flags = given.flags.over(std::mem::take(&mut self.flags));
        Ok(())
    }
}

impl<S: ServiceSettings> clap::Args for Layers<S> {
    fn augment_args(cmd: Command) -> Command {
        let config = Arg::new(CONFIG_ID)
            .long(CONFIG_ID)
            .value_name("FILE")
            .help(format!(
                "TOML file of the same settings (keys as the flags, with underscores; lists as \
                 arrays); flags and environment win over it, an unknown key is an error \
                 [env: {}]",
                Self::config_env()
            ));
        cmd.arg(PathBuf::configure(config))
            .args(S::specs(S::PREFIX).iter().map(Spec::arg))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// Declare a service's settings — or a group of settings services embed — once.
///
/// ```
/// openexec_kit::settings! {
///     /// One layer of the example service's settings.
///     pub struct Settings {
///         prefix: "EXAMPLE",
///         resolved: SettingValues,
///         settings: {
///             /// Address to listen on (port 0 picks a free one).
///             bind: String = "127.0.0.1:5000".into(),
///             /// Sign a checkpoint at least this often, in ms.
///             log_interval_ms: u64 = 250,
///             /// ClawShield's public key(s).
///             #[env = "CLAWSHIELD_PUBLIC_KEY"]
///             clawshield_public_key: String,
///             /// Actions allowed to run.
///             #[default_text = "all registered"]
///             allowed_actions: Vec<String>,
///         },
///         groups: {
///             /// HTTP limits and the Host/Origin guard, under this service's prefix.
///             http: openexec_kit::HttpSettings,
///         },
///     }
/// }
/// let s = Settings { log_interval_ms: Some(100), ..Default::default() }.resolve();
/// assert_eq!((s.bind.as_str(), s.log_interval_ms), ("127.0.0.1:5000", 100));
/// assert_eq!(s.allowed_actions, None);
/// ```
///
/// Each setting is `/// help` lines, then optionally `#[env = "NAME"]` (when its variable is not
/// `<PREFIX>_<KEY>`) and `#[default_text = "…"]` (a default the service computes, described for
/// `--help`), in that order, then `key: Type`, and `= default` when it has a typed one (shown in
/// `--help`, applied by `resolve`). Types: `String`, `PathBuf`, `u32`, `u64`, `usize`, `i64`,
/// and `Vec<_>` of those (lists). `prefix` makes it a service's settings ([`ServiceSettings`],
/// for [`Layers`]); without it, it is a group. A setting may not be named `config`.
///
/// Generated: the struct (every setting `Option<T>`, every group as its own struct), the
/// `resolved` struct, `over` and `resolve`, [`Layer`], `serde::Deserialize` (unknown keys
/// refused) and, with a prefix, [`ServiceSettings`].
#[macro_export]
macro_rules! settings {
    (
        $(#[doc = $sdoc:literal])*
        $vis:vis struct $name:ident {
            $(prefix: $prefix:literal,)?
            resolved: $resolved:ident,
            settings: {
                $(
                    $(#[doc = $doc:literal])*
                    $(#[env = $env:literal])?
                    $(#[default_text = $dtext:literal])?
                    $field:ident : $ty:ty $(= $default:expr)?
                ),* $(,)?
            }
            $(, groups: {
                $(
                    $(#[doc = $gdoc:literal])*
                    $group:ident : $gty:ty
                ),* $(,)?
            })?
            $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Clone, Debug, Default, PartialEq)]
        $vis struct $name {
            $( $(#[doc = $doc])* pub $field: ::core::option::Option<$ty>, )*
            $($( $(#[doc = $gdoc])* pub $group: $gty, )*)?
        }

        #[doc = concat!(
            "[`", stringify!($name), "`] with every declared default applied ([`",
            stringify!($name), "::resolve`]); a setting without a typed default stays optional, ",
            "a group stays as given (its own validation resolves it)."
        )]
        #[derive(Clone, Debug, PartialEq)]
        $vis struct $resolved {
            $( $(#[doc = $doc])* pub $field: $crate::__settings_resolved!($ty $(, $default)?), )*
            $($( $(#[doc = $gdoc])* pub $group: $gty, )*)?
        }

        impl $name {
            /// `self` wins over `lower`, setting by setting (in groups too).
            pub fn over(self, lower: Self) -> Self {
                <Self as $crate::config::Layer>::over(self, lower)
            }

            /// Every declared default applied.
            pub fn resolve(self) -> $resolved {
                $resolved {
                    $( $field: $crate::__settings_resolve!(self.$field $(, $ty, $default)?), )*
                    $($( $group: self.$group, )*)?
                }
            }
        }

        impl $crate::config::Layer for $name {
            fn specs(prefix: &str) -> ::std::vec::Vec<$crate::config::Spec> {
                #[allow(unused_mut)]
                let mut specs = ::std::vec![$(
                    $crate::config::Spec::new::<$ty>(
                        prefix,
                        stringify!($field),
                        $crate::__settings_opt!($($env)?),
                        &[$($doc),*],
                        $crate::__settings_opt!(
                            $($crate::config::Value::show(&$crate::config::typed::<$ty>($default)))?
                            $(::std::string::String::from($dtext))?
                        ),
                    ),
                )*];
                $($( specs.extend(<$gty as $crate::config::Layer>::specs(prefix)); )*)?
                specs
            }

            fn from_env(
                prefix: &str,
                env: $crate::config::Env,
            ) -> ::core::result::Result<Self, $crate::SettingError> {
                Ok(Self {
                    $( $field: $crate::config::env_value::<$ty>(
                        &$crate::config::env_name(
                            prefix,
                            stringify!($field),
                            $crate::__settings_opt!($($env)?),
                        ),
                        env,
                    )?, )*
                    $($( $group: <$gty as $crate::config::Layer>::from_env(prefix, env)?, )*)?
                })
            }

            fn from_matches(
                m: &$crate::config::__private::ArgMatches,
            ) -> ::core::result::Result<Self, $crate::config::__private::clap::Error> {
                Ok(Self {
                    $( $field: <$ty as $crate::config::Value>::from_matches(m, stringify!($field))?, )*
                    $($( $group: <$gty as $crate::config::Layer>::from_matches(m)?, )*)?
                })
            }

            fn over(self, lower: Self) -> Self {
                Self {
                    $( $field: self.$field.or(lower.$field), )*
                    $($( $group: $crate::config::Layer::over(self.$group, lower.$group), )*)?
                }
            }

            fn take<'de, A: $crate::config::__private::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> ::core::result::Result<bool, A::Error> {
                $(
                    if key == stringify!($field) {
                        self.$field = Some($crate::config::next_value::<A, $ty>(map, key)?);
                        return Ok(true);
                    }
                )*
                $($(
                    if $crate::config::Layer::take(&mut self.$group, key, map)? {
                        return Ok(true);
                    }
                )*)?
                Ok(false)
            }
        }

        impl<'de> $crate::config::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::config::__private::serde::Deserializer<'de>>(
                d: D,
            ) -> ::core::result::Result<Self, D::Error> {
                $crate::config::deserialize::<Self, D>(d)
            }
        }

        $(
            impl $crate::config::ServiceSettings for $name {
                const PREFIX: &'static str = $prefix;
            }
        )?
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __settings_opt {
    () => {
        ::core::option::Option::None
    };
    ($v:expr) => {
        ::core::option::Option::Some($v)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __settings_resolved {
    ($ty:ty) => { ::core::option::Option<$ty> };
    ($ty:ty, $default:expr) => { $ty };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __settings_resolve {
    ($v:expr) => {
        $v
    };
    ($v:expr, $ty:ty, $default:expr) => {
        $crate::config::or_default($v, || $crate::config::typed::<$ty>($default))
    };
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::{Args as _, FromArgMatches as _};

    use super::*;

    crate::settings! {
        /// A service of the tests.
        pub struct Test {
            prefix: "TESTSVC",
            resolved: TestValues,
            settings: {
                /// Where to listen.
                bind: String = "127.0.0.1:1".into(),
                /// Poll this often,
                /// in ms.
                poll_ms: u64 = 250,
                /// A signed number.
                skew: i64,
                /// A directory.
                data_dir: PathBuf = "./.test".into(),
                /// A key with a variable of its own.
                #[env = "OTHER_PUBLIC_KEY"]
                public_key: String,
                /// A list.
                #[default_text = "all of them"]
                things: Vec<String>,
            },
            groups: {
                /// The kit's HTTP settings.
                http: crate::HttpSettings,
            },
        }
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).map(OsString::from)
    }

    fn command() -> Command {
        Layers::<Test>::augment_args(Command::new("test"))
    }

    fn parse(args: &[&str]) -> Result<Layers<Test>, clap::Error> {
        let m =
            command().try_get_matches_from(std::iter::once("test").chain(args.iter().copied()))?;
        Layers::<Test>::from_arg_matches(&m)
    }

    fn load(args: &[&str], vars: &[(&str, &str)]) -> Result<Test, LoadError> {
        parse(args).unwrap().load_from(&env(vars))
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn spec<'a>(specs: &'a [Spec], key: &str) -> &'a Spec {
        specs.iter().find(|s| s.key == key).unwrap()
    }

    #[test]
    fn flag_env_and_key_are_derived_from_the_name_and_the_prefix() {
        let specs = Test::specs("TESTSVC");
        let keys: Vec<&str> = specs.iter().map(|s| s.key).collect();
        assert_eq!(
            keys,
            [
                "bind",
                "poll_ms",
                "skew",
                "data_dir",
                "public_key",
                "things",
                "header_timeout_ms",
                "body_timeout_ms",
                "idle_timeout_ms",
                "max_connections",
                "shutdown_grace_ms",
                "allowed_hosts",
                "allowed_origins",
            ]
        );
        let p = spec(&specs, "poll_ms");
        assert_eq!(
            (p.flag.as_str(), p.env.as_str()),
            ("poll-ms", "TESTSVC_POLL_MS")
        );
        assert_eq!(p.help, "Poll this often, in ms.");
        assert_eq!(p.default.as_deref(), Some("250"));
        assert!(!p.list);
        assert_eq!(spec(&specs, "data_dir").default.as_deref(), Some("./.test"));
        assert_eq!(spec(&specs, "skew").default, None);
        assert_eq!(spec(&specs, "public_key").env, "OTHER_PUBLIC_KEY");
        let t = spec(&specs, "things");
        assert!(t.list);
        assert_eq!(t.default.as_deref(), Some("all of them"));
        // The group's settings take the embedding service's prefix.
        let h = spec(&specs, "header_timeout_ms");
        assert_eq!(
            (h.flag.as_str(), h.env.as_str(), h.default.as_deref()),
            (
                "header-timeout-ms",
                "TESTSVC_HEADER_TIMEOUT_MS",
                Some("10000")
            )
        );
        let other = crate::HttpSettings::specs("CLAWLEDGER");
        assert_eq!(
            spec(&other, "allowed_origins").env,
            "CLAWLEDGER_ALLOWED_ORIGINS"
        );
        assert_eq!(Layers::<Test>::config_env(), "TESTSVC_CONFIG");
    }

    #[test]
    fn flags_win_over_the_environment_over_the_file_over_the_defaults() {
        let f = file(
            "bind = \"file:1\"\npoll_ms = 1\nskew = -3\nheader_timeout_ms = 4\nbody_timeout_ms = 5\n",
        );
        let path = f.path().to_str().unwrap();
        let vars = [
            ("TESTSVC_CONFIG", path),
            ("TESTSVC_BIND", "env:1"),
            ("TESTSVC_POLL_MS", "2"),
            ("TESTSVC_HEADER_TIMEOUT_MS", "6"),
        ];
        let s = load(&["--poll-ms", "3"], &vars).unwrap();
        assert_eq!(s.poll_ms, Some(3), "flag over env");
        assert_eq!(s.bind.as_deref(), Some("env:1"), "env over file");
        assert_eq!(s.skew, Some(-3), "file");
        assert_eq!(
            s.http.header_timeout_ms,
            Some(6),
            "env over file, in a group"
        );
        assert_eq!(s.http.body_timeout_ms, Some(5), "file, in a group");
        let v = s.resolve();
        assert_eq!(v.data_dir, PathBuf::from("./.test"), "default");
        assert_eq!(v.public_key, None, "no default");
        assert_eq!(v.http.idle_timeout_ms, None, "the group stays as given");
        assert_eq!(
            v.http.clone().resolve().idle_timeout_ms,
            60_000,
            "resolved by its own validation"
        );

        // Nothing given: every default.
        let v = load(&[], &[]).unwrap().resolve();
        assert_eq!(
            (v.bind.as_str(), v.poll_ms, v.skew),
            ("127.0.0.1:1", 250, None)
        );

        // --config wins over TESTSVC_CONFIG.
        let g = file("poll_ms = 7\n");
        let s = load(&["--config", g.path().to_str().unwrap()], &vars[..1]).unwrap();
        assert_eq!((s.poll_ms, s.skew), (Some(7), None));
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused_naming_it_and_the_file() {
        let f = file("poll_ms = 1\nheader_timeout = 5\n");
        let e = load(&["--config", f.path().to_str().unwrap()], &[]).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, LoadError::File { .. }), "{e:?}");
        assert!(msg.contains("unknown key `header_timeout`"), "{msg}");
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        // A group is not a table of its own: its keys are the service's.
        let e = toml::from_str::<Test>("[http]\nheader_timeout_ms = 5\n").unwrap_err();
        assert!(e.to_string().contains("unknown key `http`"), "{e}");
        // A value of the wrong type names its key (and shows its line).
        let e = toml::from_str::<Test>("poll_ms = \"soon\"\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(
            e.to_string()
                .contains("`poll_ms`: invalid type: string \"soon\", expected u64"),
            "{e}"
        );
        // A file that cannot be read.
        let e = load(&["--config", "/nonexistent/x.toml"], &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read config file /nonexistent/x.toml"),
            "{e}"
        );
    }

    #[test]
    fn lists_are_comma_separated_in_flags_and_environment_and_arrays_in_files() {
        let s = load(
            &[],
            &[
                ("TESTSVC_THINGS", "a,b"),
                ("TESTSVC_ALLOWED_HOSTS", "h1,h2"),
            ],
        )
        .unwrap();
        assert_eq!(s.things, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(
            s.http.allowed_hosts,
            Some(vec!["h1".to_string(), "h2".to_string()])
        );
        let s = load(
            &["--things", "a,b", "--things", "c"],
            &[("TESTSVC_THINGS", "x")],
        )
        .unwrap();
        assert_eq!(
            s.things,
            Some(vec!["a".to_string(), "b".to_string(), "c".to_string()])
        );
        let s: Test = toml::from_str("things = [\"x\", \"y,z\"]\nallowed_origins = []\n").unwrap();
        assert_eq!(s.things, Some(vec!["x".to_string(), "y,z".to_string()]));
        assert_eq!(s.http.allowed_origins, Some(vec![]));
        assert!(toml::from_str::<Test>("things = \"x\"\n").is_err());
    }

    #[test]
    fn a_bad_value_names_its_setting() {
        let e = load(&[], &[("TESTSVC_POLL_MS", "soon")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "TESTSVC_POLL_MS must be a whole number, got 'soon' (invalid digit found in string)"
        );
        let e = load(&[], &[("TESTSVC_MAX_CONNECTIONS", "-1")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("TESTSVC_MAX_CONNECTIONS must be a whole number"),
            "{e}"
        );
        let e = parse(&["--skew", "x"]).err().unwrap().to_string();
        assert!(
            e.contains("--skew") && e.contains("must be an integer"),
            "{e}"
        );
        // A flag's value may start with a hyphen (a PEM key, a negative number).
        let s = parse(&["--public-key", "-----BEGIN PUBLIC KEY-----", "--skew", "-5"]).unwrap();
        assert_eq!(
            s.flags.public_key.as_deref(),
            Some("-----BEGIN PUBLIC KEY-----")
        );
        assert_eq!(s.flags.skew, Some(-5));
    }

    #[test]
    fn help_shows_each_default_and_variable() {
        let help = command().render_help().to_string();
        for want in [
            "--poll-ms <POLL_MS>",
            "Poll this often, in ms. [default: 250] [env: TESTSVC_POLL_MS]",
            "--data-dir <DATA_DIR>",
            "[default: ./.test] [env: TESTSVC_DATA_DIR]",
            "A signed number. [env: TESTSVC_SKEW]",
            "[env: OTHER_PUBLIC_KEY]",
            "[default: all of them] [env: TESTSVC_THINGS]",
            "--header-timeout-ms <HEADER_TIMEOUT_MS>",
            "[default: 10000] [env: TESTSVC_HEADER_TIMEOUT_MS]",
            "[default: 1024] [env: TESTSVC_MAX_CONNECTIONS]",
            "--config <FILE>",
            "[env: TESTSVC_CONFIG]",
        ] {
            assert!(help.contains(want), "no {want:?} in\n{help}");
        }
    }

    #[test]
    fn over_merges_setting_by_setting_groups_included() {
        let high = Test {
            poll_ms: Some(1),
            http: crate::HttpSettings {
                max_connections: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        let low = Test {
            poll_ms: Some(10),
            bind: Some("low".into()),
            http: crate::HttpSettings {
                max_connections: Some(20),
                idle_timeout_ms: Some(30),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = high.over(low);
        assert_eq!((s.poll_ms, s.bind.as_deref()), (Some(1), Some("low")));
        assert_eq!(
            (s.http.max_connections, s.http.idle_timeout_ms),
            (Some(2), Some(30))
        );
    }
}
