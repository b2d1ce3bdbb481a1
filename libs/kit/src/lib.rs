//! # openexec-kit: the service kit
//!
//! What every service of the workspace (OpenExec, ClawLedger, and later ClawShield) needs around
//! its HTTP API and must not get wrong on its own:
//!
//! - [`config`]: settings declared once. A service writes one [`settings!`](macro@settings) declaration, and
//!   each setting's line there gives its long flag (`--header-timeout-ms`), environment variable
//!   (`OPENEXEC_HEADER_TIMEOUT_MS`, or an explicit one such as `CLAWSHIELD_PUBLIC_KEY`), TOML key
//!   (`header_timeout_ms`), help and default (shown in `--help`). [`Layers`] is what a binary
//!   flattens into its subcommand (every flag, and `--config FILE` / `<PREFIX>_CONFIG`);
//!   [`Layers::load`] merges flags > environment > file > default, an unknown key in the file
//!   being an error that names it. A group declared once ([`HttpSettings`]) is embedded by each
//!   service under its own prefix. A new setting is one line in its service's declaration.
//! - [`run`]: start-up plumbing of a service binary — [`run::init_logging`], the SIGTERM/SIGINT
//!   [`run::stop_signal`], and [`run::until_stopped`], the runtime that takes the signals before
//!   the service can announce its address.
//! - [`serve()`]: HTTP/1.1 on a TCP listener under [`HttpLimits`] — request headers must arrive
//!   within `header_timeout`, a request body within `body_timeout` (else 408 `body_timeout`),
//!   idle keep-alive connections close after `idle_timeout`, at most `max_connections` are served
//!   at once, accept errors (file descriptors exhausted) back off instead of spinning, and a
//!   graceful stop ends within `shutdown_grace` whatever the clients do.
//! - [`guard`]: the [`Guard`] against DNS rebinding and cross-site requests — a `Host` that is not
//!   allowed is a 403 `host_not_allowed`, an `Origin` that is neither the request's own nor
//!   configured (or `Sec-Fetch-Site: cross-site`) a 403 `origin_not_allowed`.
//! - [`keys`]: key settings with one meaning everywhere (a key file's path or the key itself;
//!   readable private key files refused; generated keys 0600; values never echoed), and private
//!   state (directories 0700, database files 0600).
//! - [`clock`]: the [`Clock`] services read the time from (the system's, or one tests set).
//! - [`metrics`]: the one Prometheus recorder of the process, which every service renders.
//! - [`body`]: request bodies as every service reads them — JSON declared as such (415), within
//!   a size (413) and depth, parsed as I-JSON (400 naming what is wrong).
//! - [`openapi`]: the answers of the guard and the body rules, added to every operation of a
//!   service's OpenAPI document ([`openapi::GuardStatuses`]).
//! - [`probe`]: the operational routes `/health`, `/ready`, `/version`, `/metrics` over a
//!   service's [`Probes`], with their OpenAPI operations.
//! - [`settings`](mod@settings): the HTTP settings of every service ([`HttpSettings`], declared with
//!   [`settings!`](macro@settings), each optional) validated by [`HttpSettings::validate`], the one validator,
//!   into an [`HttpConfig`], with errors that name the service's setting
//!   (`OPENEXEC_HEADER_TIMEOUT_MS`, `CLAWLEDGER_ALLOWED_HOSTS`, …).
//!
//! What it leaves to the services: their routes, their own error answers, what each of their own
//! settings may be (their `Config::from_settings`), the binary's exit codes, and logging what the
//! guard's defaults mean for them.
//! The kit's own answers (403, 408) use the error shape of OpenExec's API,
//! `{"detail": msg, "error": {"code": code, "message": msg}}` ([`ApiError`], which implements
//! `IntoResponse`, and [`error_response`]), the one shape every service answers errors in.
//!
//! *Dependency rule*: services depend on the kit; the kit depends on no service. Of the pure
//! libraries it uses only core's key parsing: it knows nothing of receipts or logs.
#![forbid(unsafe_code)]

pub mod body;
pub mod clock;
pub mod config;
pub mod guard;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod probe;
pub mod run;
pub mod serve;
pub mod settings;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

pub use body::{read_ijson, JsonLimits};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Layers, ServiceSettings};
pub use guard::{Guard, GuardConfig, HostCheck};
pub use probe::{Probes, Readiness};
pub use serve::{serve, HttpLimits};
pub use settings::{HttpConfig, HttpSettings, HttpValues, SettingError};

/// An error answer in the shape of OpenExec's API:
/// `{"detail": message, "error": {"code": code, "message": message}}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// The one error shape of every service, as a value a handler can return (`Result<_, ApiError>`)
/// or build and turn into its answer: `{"detail": message, "error": {"code": code, "message":
/// message}}` with `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Machine-readable, stable (`store_unavailable`, `invalid_request`, …).
    pub code: String,
    /// For people; never holds a secret.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The answer's JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "detail": self.message,
            "error": {"code": self.code, "message": self.message},
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn the_one_error_shape() {
        let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "down");
        let r = e.clone().into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let b = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"detail": "down", "error": {"code": "store_unavailable", "message": "down"}})
        );
        assert_eq!(v, e.body());
        let r = error_response(StatusCode::BAD_REQUEST, "invalid_request", "x");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}
