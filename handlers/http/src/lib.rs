//! # openexec-handler-http: the `http` handler kind (SPEC §10)
//!
//! An action of the registry file whose run is one HTTP request to a URL its configuration
//! fixes, and whose result is the JSON the server answers.
//!
//! ```toml
//! [actions.charge_card]
//! kind = "http"
//! timeout_ms = 5000                   # the request's timeout (the action's common key)
//!
//! [actions.charge_card.http]
//! url = "https://pay.internal:9000/cards/{card_id}/charge?currency={currency}"
//! method = "POST"
//! headers = { Authorization = { env = "PAY_TOKEN" }, X-Client = "openexec" }
//! body_template = { amount = "{amount}", memo = "charge for {card_id}" }
//! max_response_bytes = 65536
//! ```
//!
//! ## Settings (`[actions.<name>.http]`; any other key refuses start-up, naming it)
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `url` | required | `http://` or `https://` only; no user information (`user:pass@`), no fragment. The scheme, host and port are fixed: a `{field}` slot is allowed only in the path and the query, anywhere else refuses start-up. A slot names a top-level payload field (ASCII letters, digits, `_` or `-`) and is filled with its text ([`openexec_handler::slots::scalar_text`]: a string as it is, a number or a boolean as its canonical JSON text, RFC 8785, as the receipt hashes it, so `1.0` is sent as `1` and `1e300` as `1e+300`), percent-encoded: every byte but ASCII letters, digits, `-`, `_` and `~` is sent as `%XX` (`.` `/` `?` `#` `&` `=` `%` included), so a value can never add a path segment, a query parameter, a fragment or a dot-segment. A path segment that filled values would make `.`, `..` (also as `%2E`) or empty is refused as an invalid payload. The fixed parts must be written as they are sent (percent-encoded, no `.`/`..` segments; `{{`/`}}` for literal braces). |
//! | `method` | `"POST"` | `GET`, `POST`, `PUT`, `PATCH` or `DELETE`. |
//! | `headers` | none | A table of header names to values: `"literal"`, `{ env = "NAME" }` or `{ file = "path" }` (relative to the registry file's folder; a trailing newline is trimmed). Env variables and files are read at start-up; a missing, empty or invalid one refuses start-up naming the header and the variable or file, never the value. Every value is treated as a secret (see below). `Host`, `Content-Length`, `Transfer-Encoding`, `Connection` and the other hop-by-hop headers are the client's and cannot be set. |
//! | `body_template` | none | A JSON value (a TOML table, array, string…). A string that is exactly `"{field}"` becomes that payload field's JSON value, keeping its type; other strings with slots are filled as text, as URL slots are but not percent-encoded (the fields must be strings, numbers or booleans); keys are never filled. With it, the filled template is the body, and the payload reaches the request in no other way (besides URL slots). |
//! | `max_response_bytes` | 1048576 (1 MiB) | The largest response body read, from 1 to 64 MiB; larger (by `Content-Length`, or while reading) is `http_response_too_large`. |
//!
//! The body: without `body_template`, `POST`, `PUT` and `PATCH` send the payload as canonical
//! JSON (RFC 8785), `GET` and `DELETE` send no body; with it, every method sends the filled
//! template. A body goes with `Content-Type: application/json` unless `headers` sets one. The
//! request's timeout is the action's `timeout_ms` ([`Spec::timeout`]), cut short by the
//! invocation's deadline; connecting has at most [`CONNECT_TIMEOUT`] of it.
//!
//! ## The client
//!
//! One `reqwest` client per action: rustls with the Mozilla roots compiled in (certificates are
//! always verified; there is no setting to turn that off), redirects never followed, no proxy
//! from the environment (`HTTP_PROXY` and the like are ignored: the only connection made is to
//! the configured host and port, which [`Handler::destinations`] lists for `/health`).
//!
//! ## Outcomes
//!
//! | what happened | outcome | code |
//! | --- | --- | --- |
//! | 2xx with an I-JSON body | executed, that JSON is the result | |
//! | 2xx with an empty body (204, or any 2xx without content) | executed, the result is `null` | |
//! | 2xx whose body is not I-JSON (not JSON, duplicate keys, numbers beyond ±(2^53−1), too deep) | failed | `http_bad_response` |
//! | 3xx (not followed) | failed | `http_redirect_refused` |
//! | any other status (the response body is not read nor shown) | failed | `http_status` |
//! | a body over `max_response_bytes` | failed | `http_response_too_large` |
//! | no connection could be made (refused, DNS, TLS handshake or certificate, connect timeout): nothing was sent | failed | `http_connect_failed` |
//! | the request was sent (or may have been) and no complete answer came: timeout, connection lost, cancellation | interrupted | `outcome_unknown` |
//! | the payload's values do not fit the URL or template (only if the validation in front was bypassed) | failed | `invalid_payload` |
//! | cancelled or out of time before anything was sent | failed | `http_cancelled` / `http_timeout` |
//!
//! The deadline reached while still connecting is counted as outcome unknown too: from outside
//! the client one cannot tell whether the request had been written.
//!
//! ## Secrets
//!
//! Header values (literal ones too) are held as [`Secret`]s: `Debug` and `Display` print
//! `[redacted]`, the `HeaderValue` is marked sensitive, and no message this crate builds
//! includes one. Messages name the destination (`scheme://host:port`) and the method, never the
//! filled path or query (payload values) nor any response body.
//!
//! What it leaves to others: the payload's JSON Schema is checked by the registry loader in
//! front of it ([`Handler::validate`] here checks only what the URL and template need); claims,
//! receipts, and what a timeout means for the request (SPEC §5) are the execution service's.
#![forbid(unsafe_code)]

mod settings;
mod template;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use openexec_handler::{
    Handler, HandlerError, HandlerFuture, Invalid, Invocation, Kind, Spec, Violation,
};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;

use settings::Settings;
pub use settings::{Header, Secret, Source, DEFAULT_MAX_RESPONSE_BYTES, MAX_RESPONSE_BYTES_LIMIT};
use template::{check_fields, Need};

/// The longest a connection may take to open (TCP and TLS), unless the action's timeout is
/// shorter.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `http` kind of the registry file (`kind = "http"`).
pub struct HttpKind;

impl Kind for HttpKind {
    fn name(&self) -> &'static str {
        "http"
    }

    /// An HTTP request may always be observed outside: true.
    fn default_effects(&self, _settings: &Value) -> bool {
        true
    }

    fn build(&self, spec: &Spec<'_>) -> Result<Arc<dyn Handler>, String> {
        Ok(Arc::new(HttpAction::new(spec)?))
    }
}

/// One action of the `http` kind: its checked settings and its client.
pub struct HttpAction {
    name: String,
    digest: String,
    effects: bool,
    timeout: Duration,
    settings: Settings,
    /// Every payload field the URL or the template names, and what it must be.
    uses: BTreeMap<String, Need>,
    destination: String,
    client: reqwest::Client,
}

impl fmt::Debug for HttpAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpAction")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("effects", &self.effects)
            .field("timeout", &self.timeout)
            .field("settings", &self.settings)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

impl HttpAction {
    /// Build the action from its spec, reading header values from the process environment.
    pub fn new(spec: &Spec<'_>) -> Result<HttpAction, String> {
        HttpAction::with_env(spec, &|name| std::env::var_os(name))
    }

    /// Build the action, reading `{ env = "NAME" }` header values through `env`.
    pub fn with_env(
        spec: &Spec<'_>,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<HttpAction, String> {
        let settings = Settings::read(spec, env)?;
        let mut uses = BTreeMap::new();
        for f in settings.url.fields() {
            uses.insert(f.to_string(), Need::Scalar);
        }
        if let Some(t) = &settings.body_template {
            t.uses(&mut uses);
        }
        if spec.timeout.is_zero() {
            return Err("timeout_ms: an http action needs a timeout above 0".into());
        }
        let builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(true)
            .https_only(settings.url.is_https())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .referer(false)
            .connect_timeout(CONNECT_TIMEOUT.min(spec.timeout))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("openexec-handler-http/", env!("CARGO_PKG_VERSION")));
        let client = builder
            .build()
            .map_err(|e| format!("the HTTP client could not be built: {e}"))?;
        Ok(HttpAction {
            name: format!("http:{}", spec.action),
            digest: spec.digest.to_string(),
            effects: spec.effects,
            timeout: spec.timeout,
            destination: settings.url.destination(),
            settings,
            uses,
            client,
        })
    }

    /// The headers configured for this action, values redacted in `Debug`.
    pub fn headers(&self) -> &[Header] {
        &self.settings.headers
    }

    /// The request for `payload`: URL and body filled; violations when the payload does not fit.
    fn request(&self, payload: &Value) -> Result<reqwest::RequestBuilder, Vec<Violation>> {
        let mut problems = check_fields(payload, &self.uses);
        if !problems.is_empty() {
            return Err(problems);
        }
        let url = match self.settings.url.fill(payload) {
            Ok(u) => Some(u),
            Err(e) => {
                problems.extend(e);
                None
            }
        };
        let body = match &self.settings.body_template {
            Some(t) => match t.fill(payload) {
                Ok(b) => Some(b),
                Err(e) => {
                    problems.extend(e);
                    None
                }
            },
            None if matches!(self.settings.method, Method::GET | Method::DELETE) => None,
            None => Some(payload.clone()),
        };
        let Some(url) = url.filter(|_| problems.is_empty()) else {
            template::dedupe(&mut problems);
            return Err(problems);
        };

        let mut headers = HeaderMap::new();
        for h in &self.settings.headers {
            headers.insert(h.name.clone(), h.value.header_value());
        }
        let mut req = self.client.request(self.settings.method.clone(), url);
        if let Some(body) = body {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            req = req.body(openexec_core::json::canonicalize(&body));
        }
        Ok(req.headers(headers))
    }

    /// `METHOD scheme://host:port`, how messages name the request (never its path or query,
    /// which hold payload values).
    fn what(&self) -> String {
        format!("{} {}", self.settings.method, self.destination)
    }

    /// Send the request and read its answer (no deadline here: the caller bounds it).
    async fn exchange(&self, req: reqwest::RequestBuilder) -> Result<Value, HandlerError> {
        let mut resp = req.send().await.map_err(|e| self.send_error(e))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(HandlerError::new(
                "http_redirect_refused",
                format!(
                    "{} answered {status}, a redirect; redirects are never followed (set url to the final address)",
                    self.what()
                ),
            ));
        }
        if !status.is_success() {
            return Err(HandlerError::new(
                "http_status",
                format!("{} answered {status}", self.what()),
            ));
        }
        let max = self.settings.max_response_bytes;
        let too_large = |declared: Option<u64>| {
            let size = match declared {
                Some(n) => format!("a body of {n} bytes (Content-Length)"),
                None => "a body longer than that (reading stopped there)".to_string(),
            };
            HandlerError::new(
                "http_response_too_large",
                format!(
                    "{} answered {status}, over max_response_bytes ({max}) with {size}",
                    self.what()
                ),
            )
        };
        if let Some(n) = resp.content_length().filter(|n| *n > max) {
            return Err(too_large(Some(n)));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            HandlerError::outcome_unknown(format!(
                "{} answered {status} but its body was cut off ({}); the request may have taken effect",
                self.what(),
                cause(&e)
            ))
        })? {
            if body.len() as u64 + chunk.len() as u64 > max {
                return Err(too_large(None));
            }
            body.extend_from_slice(&chunk);
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        openexec_core::json::parse_ijson(&body, openexec_core::json::DEFAULT_MAX_DEPTH).map_err(
            |e| {
                HandlerError::new(
                    "http_bad_response",
                    format!(
                        "{} answered {status} with a body that is not I-JSON: {e}",
                        self.what()
                    ),
                )
            },
        )
    }

    /// What a failed send means: nothing sent (connect) or unknown.
    fn send_error(&self, e: reqwest::Error) -> HandlerError {
        let why = cause(&e);
        if e.is_connect() {
            HandlerError::new(
                "http_connect_failed",
                format!(
                    "{}: could not connect ({why}); nothing was sent",
                    self.what()
                ),
            )
        } else if e.is_builder() {
            HandlerError::new(
                "http_request_invalid",
                format!("{}: the request could not be built ({why})", self.what()),
            )
        } else {
            HandlerError::outcome_unknown(format!(
                "{}: the request was sent but no answer came ({why}); it may have taken effect",
                self.what()
            ))
        }
    }
}

/// An error and its sources, without the URL (which holds payload values).
fn cause(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    if parts.is_empty() {
        // reqwest's own text names the URL; keep only its kind
        return if e.is_timeout() {
            "timed out".into()
        } else {
            "transport error".into()
        };
    }
    parts.join(": ")
}

fn invalid(problems: Vec<Violation>) -> Invalid {
    let message = problems
        .iter()
        .map(|v| v.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Invalid {
        message,
        details: problems,
    }
}

impl Handler for HttpAction {
    fn name(&self) -> &str {
        &self.name
    }

    fn digest(&self) -> &str {
        &self.digest
    }

    fn effects(&self) -> bool {
        self.effects
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn kind(&self) -> &str {
        "http"
    }

    fn destinations(&self) -> Vec<String> {
        vec![self.destination.clone()]
    }

    /// Every field the URL or `body_template` names is present and of a kind its slots take,
    /// and the filled URL keeps to the configured path: one [`Violation`] per failing field.
    fn validate(&self, payload: &Value) -> Result<(), Invalid> {
        self.request(payload).map(|_| ()).map_err(invalid)
    }

    fn run<'a>(&'a self, inv: &'a Invocation<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            if inv.cancel.is_cancelled() {
                return Err(HandlerError::new(
                    "http_cancelled",
                    format!("{}: cancelled before the request was sent", self.what()),
                ));
            }
            let req = self
                .request(inv.payload)
                .map_err(|p| HandlerError::new("invalid_payload", invalid(p).message))?;
            let now = tokio::time::Instant::now();
            let deadline = inv.deadline.min(now + self.timeout);
            if deadline <= now {
                return Err(HandlerError::new(
                    "http_timeout",
                    format!(
                        "{}: no time was left to send the request; nothing was sent",
                        self.what()
                    ),
                ));
            }
            // Dropping the exchange (on cancel or timeout) closes its connection.
            tokio::select! {
                biased;
                () = inv.cancel.cancelled() => Err(HandlerError::outcome_unknown(format!(
                    "{}: cancelled while the request was in flight; it may have taken effect",
                    self.what()
                ))),
                r = tokio::time::timeout_at(deadline, self.exchange(req)) => match r {
                    Ok(r) => r,
                    Err(_) => Err(HandlerError::outcome_unknown(format!(
                        "{}: no complete answer within {} ms; the request may have taken effect",
                        self.what(),
                        (deadline - now).as_millis()
                    ))),
                },
            }
        })
    }
}
