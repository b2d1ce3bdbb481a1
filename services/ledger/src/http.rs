//! ClawLedger's HTTP API: health, metrics, alerts, its key, the checkpoints it cosigned and the
//! evidence it mirrored.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use openexec_log::plan_inclusion;
use serde_json::{json, Value};

use crate::store::Store;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub name: String,
    pub verifier_key: String,
}

/// ClawLedger's routes, with the kit's `/health`, `/ready`, `/version` and `/metrics`.
pub fn router(state: AppState) -> Router {
    let probes = openexec_kit::probe::router(Arc::new(LedgerProbes(state.clone())));
    Router::new()
        .route("/alerts", get(alerts))
        .route("/keys", get(keys))
        .route("/checkpoint/{*origin}", get(checkpoint))
        .route("/evidence/{*rest}", get(evidence))
        .with_state(state)
        .merge(probes)
}

/// Errors have the one shape of every service (`openexec_kit::error_response`):
/// `{"detail", "error": {"code", "message"}}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    openexec_kit::ApiError::new(status, code, message).into_response()
}

/// A database error: 503, so that clients and load balancers retry (the database may be back
/// soon; nothing here is the client's fault).
fn internal(e: anyhow::Error) -> Response {
    tracing::error!(error = %format!("{e:#}"), "request failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        format!("{e:#}"),
    )
}

/// The mirror cannot prove what it cosigned (a node below its cosigned checkpoint is missing
/// or unreadable): 500, a fault of this ledger's data that no retry fixes, not an outage.
fn mirror_corrupt(origin: &str, index: u64, size: u64, e: impl std::fmt::Display) -> Response {
    tracing::error!(%origin, index, size, error = %e, "the mirror cannot prove an entry it cosigned");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "mirror_corrupt",
        format!("the mirror of '{origin}' cannot prove entry {index} in its cosigned checkpoint of size {size}: {e}"),
    )
}

/// ClawLedger's side of the kit's `/health`, `/ready`, `/version` and `/metrics`.
struct LedgerProbes(AppState);

impl openexec_kit::Probes for LedgerProbes {
    fn service(&self) -> &'static str {
        "ClawLedger"
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    /// Liveness and readiness in one: 200 when the database answers, else 503 with its error.
    async fn health(&self) -> (StatusCode, Value) {
        let s = &self.0;
        match s.store.check().await {
            Ok(()) => (
                StatusCode::OK,
                json!({"status": "ok", "name": s.name, "database": "ok"}),
            ),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({
                    "status": "unavailable",
                    "name": s.name,
                    "database": "unavailable",
                    "error": format!("{e:#}"),
                }),
            ),
        }
    }

    async fn readiness(&self) -> openexec_kit::Readiness {
        let db = self.0.store.check().await;
        openexec_kit::Readiness {
            checks: vec![("database", db.is_ok())],
            detail: db
                .err()
                .map(|e| format!("the database is unavailable: {e:#}")),
        }
    }
}

async fn alerts(State(s): State<AppState>) -> Response {
    match s.store.alerts().await {
        Ok(a) => Json(a).into_response(),
        Err(e) => internal(e),
    }
}

async fn keys(State(s): State<AppState>) -> Response {
    Json(json!({"name": s.name, "verifier_key": s.verifier_key})).into_response()
}

async fn checkpoint(State(s): State<AppState>, Path(origin): Path<String>) -> Response {
    let origin = origin.trim_start_matches('/');
    match s.store.latest_cosigned(origin).await {
        Ok(Some(c)) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            c.note,
        )
            .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no cosigned checkpoint for origin '{origin}'"),
        ),
        Err(e) => internal(e),
    }
}

async fn evidence(State(s): State<AppState>, Path(rest): Path<String>) -> Response {
    let rest = rest.trim_start_matches('/');
    let Some((origin, index)) = rest.rsplit_once('/') else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "expected /evidence/{origin}/{index}",
        );
    };
    let Ok(index) = index.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("index '{index}' is not a number"),
        );
    };
    let cosigned = match s.store.latest_cosigned(origin).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no cosigned checkpoint for origin '{origin}'"),
            )
        }
        Err(e) => return internal(e),
    };
    if index >= cosigned.size {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "entry {index} is not in the latest cosigned checkpoint (size {})",
                cosigned.size
            ),
        );
    }
    let data = match s.store.leaf(origin, index).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("entry {index} of '{origin}' is not mirrored"),
            )
        }
        Err(e) => return internal(e),
    };
    let plan = match plan_inclusion(index, cosigned.size) {
        Ok(p) => p,
        Err(e) => return mirror_corrupt(origin, index, cosigned.size, e),
    };
    let nodes = match s.store.nodes(origin, &plan.nodes()).await {
        Ok(n) => n,
        Err(e) => return internal(e),
    };
    let hashes = match plan.assemble_from_map(&nodes) {
        Ok(h) => h,
        Err(e) => return mirror_corrupt(origin, index, cosigned.size, e),
    };
    Json(json!({
        "origin": origin,
        "entry": B64.encode(&data),
        "leaf_index": index,
        "tree_size": cosigned.size,
        "hashes": hashes.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
        "checkpoint": cosigned.note,
    }))
    .into_response()
}
