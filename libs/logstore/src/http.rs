//! The `/log/*` routes of SPEC §7 over a [`LogService`] and any [`LogStore`]: what OpenExec
//! serves for its receipt log, and ClawShield for its decision log. Only this file knows their
//! statuses, codes and JSON shapes; errors have the service kit's shape
//! (`{"detail", "error": {"code", "message"}}`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /log/checkpoint` | the signed note with witness cosignatures (`text/plain`), 404 `no_checkpoint` |
//! | `GET /log/entries?start=&end=` | JSON array of standard base64 leaf data, at most 1,000 |
//! | `GET /log/proof/inclusion?index=&tree_size=` | `{"hashes": [base64]}` |
//! | `GET /log/proof/consistency?first=&second=` | `{"hashes": [base64]}` |
//! | `POST /log/cosignatures` | body ≤ 64 KiB of lines; `{"stored": n}`, 403 `cosignature_rejected`, 413 `too_many_cosignatures` |
//!
//! The store is erased behind a trait object, so the handlers (and their OpenAPI paths) are
//! not generic.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures_util::future::BoxFuture;
use openexec_kit::ApiError;
use openexec_log::{Hash, LogService, LogStore, ServiceError};
use serde_json::json;
use utoipa::OpenApi;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The most bytes of a `POST /log/cosignatures` body.
pub const COSIGNATURE_BODY_LIMIT: usize = 64 * 1024;

/// A refusal of a log request, with the HTTP status it deserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRefusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn refusal(status: u16, code: &'static str, message: impl Into<String>) -> LogRefusal {
    LogRefusal {
        status,
        code,
        message: message.into(),
    }
}

/// The refusal of a failed log request. A store error is 503 `store_unavailable` (clients
/// retry); `witness_setting` names the setting that lists the witnesses, for a cosignature
/// refused.
pub fn service_refusal<E: std::fmt::Display>(
    e: ServiceError<E>,
    witness_setting: &str,
) -> LogRefusal {
    match e {
        ServiceError::BadRequest(m) => refusal(400, "invalid_request", m),
        ServiceError::NoCheckpoint => refusal(409, "no_checkpoint", e.to_string()),
        ServiceError::CosignatureRejected(m) => refusal(
            403,
            "cosignature_rejected",
            format!("{m} ({witness_setting})"),
        ),
        ServiceError::TooManyCosignatures { .. } => refusal(
            413,
            "too_many_cosignatures",
            format!("{e}; nothing was stored"),
        ),
        ServiceError::Refused(m) => refusal(500, "internal_error", m),
        ServiceError::Store(e) => refusal(503, "store_unavailable", e.to_string()),
    }
}

/// Standard base64 of each hash, as proofs are served.
pub fn b64_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h)).collect()
}

/// What the routes need of a log, its store erased.
trait Served: Send + Sync {
    fn checkpoint_text(&self) -> Option<String>;
    fn entries(&self, start: u64, end: u64) -> BoxFuture<'_, Result<Vec<String>, LogRefusal>>;
    fn inclusion(&self, index: u64, size: u64) -> BoxFuture<'_, Result<Vec<String>, LogRefusal>>;
    fn consistency(
        &self,
        first: u64,
        second: u64,
    ) -> BoxFuture<'_, Result<Vec<String>, LogRefusal>>;
    fn cosignatures<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<usize, LogRefusal>>;
}

struct Bound<S> {
    log: Arc<LogService>,
    store: Arc<S>,
    witness_setting: &'static str,
}

impl<S: LogStore + 'static> Served for Bound<S> {
    fn checkpoint_text(&self) -> Option<String> {
        self.log.checkpoint_text()
    }

    fn entries(&self, start: u64, end: u64) -> BoxFuture<'_, Result<Vec<String>, LogRefusal>> {
        Box::pin(async move {
            let leaves = self
                .log
                .entries(&*self.store, start, end)
                .await
                .map_err(|e| service_refusal(e, self.witness_setting))?;
            Ok(leaves.iter().map(|d| B64.encode(d)).collect())
        })
    }

    fn inclusion(&self, index: u64, size: u64) -> BoxFuture<'_, Result<Vec<String>, LogRefusal>> {
        Box::pin(async move {
            self.log
                .proof_inclusion(&*self.store, index, size)
                .await
                .map(|h| b64_hashes(&h))
                .map_err(|e| service_refusal(e, self.witness_setting))
        })
    }

    fn consistency(
        &self,
        first: u64,
        second: u64,
    ) -> BoxFuture<'_, Result<Vec<String>, LogRefusal>> {
        Box::pin(async move {
            self.log
                .proof_consistency(&*self.store, first, second)
                .await
                .map(|h| b64_hashes(&h))
                .map_err(|e| service_refusal(e, self.witness_setting))
        })
    }

    fn cosignatures<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<usize, LogRefusal>> {
        Box::pin(async move {
            self.log
                .add_cosignatures(&*self.store, text)
                .await
                .map_err(|e| service_refusal(e, self.witness_setting))
        })
    }
}

type Shared = Arc<dyn Served>;

/// The `/log/*` routes of `log` over `store`. `witness_setting` names the service's setting
/// of witness keys (`OPENEXEC_WITNESS_KEYS`) in the message of a cosignature refused. Merge
/// the result into the service's router before its fallbacks; document it with [`LogApi`].
pub fn router<S: LogStore + 'static>(
    log: Arc<LogService>,
    store: Arc<S>,
    witness_setting: &'static str,
) -> Router {
    let state: Shared = Arc::new(Bound {
        log,
        store,
        witness_setting,
    });
    Router::new()
        .route("/log/checkpoint", get(log_checkpoint))
        .route("/log/entries", get(log_entries))
        .route("/log/proof/inclusion", get(log_inclusion))
        .route("/log/proof/consistency", get(log_consistency))
        .route("/log/cosignatures", post(log_cosignatures))
        .with_state(state)
}

fn refused(r: LogRefusal) -> Response {
    error(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        r.code,
        &r.message,
    )
}

type Params = Query<HashMap<String, String>>;

/// An error answer in the one shape of every service ([`ApiError`]).
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// 413 `body_too_large`, closing the connection: the kit's answer, which every service gives.
pub use openexec_kit::body::body_too_large;

/// Two required whole-number query parameters; a 400 naming the one at fault.
fn params(q: &Params, a: &str, b: &str) -> Result<(u64, u64), Box<Response>> {
    let get = |name: &str| -> Result<u64, Box<Response>> {
        let bad = |m: String| Box::new(error(StatusCode::BAD_REQUEST, "invalid_request", &m));
        let v = q
            .get(name)
            .ok_or_else(|| bad(format!("query parameter '{name}' is required")))?;
        v.parse::<u64>().map_err(|_| {
            bad(format!(
                "query parameter '{name}' must be a whole number, got '{v}'"
            ))
        })
    };
    Ok((get(a)?, get(b)?))
}

/// An error answer (the service kit's shape).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ErrorBody {
    detail: String,
    error: serde_json::Value,
}

#[utoipa::path(get, path = "/log/checkpoint", responses((status = 200, description = "The latest signed checkpoint (C2SP signed note, text/plain) with witness cosignatures"), (status = 404, description = "No checkpoint yet", body = ErrorBody)))]
async fn log_checkpoint(State(s): State<Shared>) -> Response {
    match s.checkpoint_text() {
        Some(t) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], t).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no_checkpoint",
            "the log has not signed a checkpoint yet",
        ),
    }
}

#[utoipa::path(get, path = "/log/entries", params(("start" = u64, Query, description = "first index"), ("end" = u64, Query, description = "one past the last index (at most 1000 per answer)")),
    responses((status = 200, description = "JSON array: standard base64 of each leaf's data"), (status = 400, description = "Bad range", body = ErrorBody)))]
async fn log_entries(State(s): State<Shared>, q: Params) -> Response {
    let (start, end) = match params(&q, "start", "end") {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match s.entries(start, end).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => refused(r),
    }
}

#[utoipa::path(get, path = "/log/proof/inclusion", params(("index" = u64, Query, description = "leaf index"), ("tree_size" = u64, Query, description = "tree size")),
    responses((status = 200, description = "{hashes: [base64]}"), (status = 400, description = "Bad parameters", body = ErrorBody)))]
async fn log_inclusion(State(s): State<Shared>, q: Params) -> Response {
    let (index, size) = match params(&q, "index", "tree_size") {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match s.inclusion(index, size).await {
        Ok(h) => Json(json!({"hashes": h})).into_response(),
        Err(r) => refused(r),
    }
}

#[utoipa::path(get, path = "/log/proof/consistency", params(("first" = u64, Query, description = "older size"), ("second" = u64, Query, description = "newer size")),
    responses((status = 200, description = "{hashes: [base64]}"), (status = 400, description = "Bad parameters", body = ErrorBody)))]
async fn log_consistency(State(s): State<Shared>, q: Params) -> Response {
    let (first, second) = match params(&q, "first", "second") {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match s.consistency(first, second).await {
        Ok(h) => Json(json!({"hashes": h})).into_response(),
        Err(r) => refused(r),
    }
}

#[utoipa::path(post, path = "/log/cosignatures", request_body(content = String, content_type = "text/plain", description = "one or more C2SP tlog-cosignature lines for the latest checkpoint"),
    responses((status = 200, description = "{stored: n}: lines stored (new, or newer than the stored line of their witness)"), (status = 403, description = "Not a configured witness's valid cosignature; nothing stored", body = ErrorBody), (status = 413, description = "too_many_cosignatures: more lines than configured witnesses; nothing stored", body = ErrorBody)))]
async fn log_cosignatures(State(s): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match openexec_kit::body::read_limited(
        &parts.headers,
        body,
        COSIGNATURE_BODY_LIMIT,
        "invalid_request",
    )
    .await
    {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be UTF-8 text",
        );
    };
    match s.cosignatures(text).await {
        Ok(n) => Json(json!({"stored": n})).into_response(),
        Err(r) => refused(r),
    }
}

/// The OpenAPI paths of [`router`]: merge it into the service's document
/// (`doc.merge(LogApi::openapi())`; the service's own components of the same name win).
#[derive(OpenApi)]
#[openapi(
    paths(
        log_checkpoint,
        log_entries,
        log_inclusion,
        log_consistency,
        log_cosignatures
    ),
    components(schemas(ErrorBody))
)]
pub struct LogApi;
