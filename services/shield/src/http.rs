//! ClawShield's HTTP API (SPEC §9): `/v1/*` behind bearer tokens, and the open routes —
//! `/keys`, `/v1/roster`, `/log/*`, `/health`, `/ready`, `/version`, `/metrics`,
//! `/openapi.json`. Errors have the one shape of every service (`openexec_kit::ApiError`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openexec_core::keys::{key_id, verifying_key_b64, verifying_key_to_pem};
use openexec_kit::{ApiError, JsonLimits};
use serde_json::{json, Value};
use utoipa::OpenApi;

use crate::engine::{Answer, Engine, Refusal};
use crate::identity::Identity;

type S = Arc<Engine>;

fn answer(a: Answer) -> Response {
    match a {
        Ok((status, body)) => (status, Json(body)).into_response(),
        Err(r) => refusal(r),
    }
}

fn refusal(r: Refusal) -> Response {
    let unauthorized = r.error.status == StatusCode::UNAUTHORIZED;
    let mut resp = r.error.into_response();
    if unauthorized {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(s) = r.retry_after {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

/// The caller's identity from `Authorization: Bearer <token>`: 401 without one or with one
/// that belongs to nobody (answered with `WWW-Authenticate: Bearer`, see [`refusal`]).
fn unauthorized(m: &str) -> Response {
    refusal(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m).into())
}

fn identify<'a>(e: &'a Engine, headers: &HeaderMap) -> Result<&'a Identity, &'static str> {
    let v = headers
        .get(header::AUTHORIZATION)
        .ok_or("this call needs Authorization: Bearer <token>")?;
    let token = v
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or("the Authorization header must be 'Bearer <token>'")?;
    e.identities()
        .authenticate(token)
        .ok_or("the token belongs to no identity")
}

/// The `{id}` of a route; a 400 in the one error shape when it cannot be read (axum's own
/// rejection is plain text), e.g. for a percent-encoding that is not UTF-8.
macro_rules! path_id {
    ($id:expr) => {
        match $id {
            Ok(Path(id)) => id,
            Err(e) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("the id in the path: {}", e.body_text()),
                )
                .into_response()
            }
        }
    };
}

async fn body_of(e: &Engine, headers: &HeaderMap, body: Body) -> Result<Value, Response> {
    openexec_kit::read_ijson(
        headers,
        body,
        JsonLimits {
            max_bytes: e.config().max_body_bytes,
            max_depth: e.config().max_depth,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/proposals",
    responses((status = 200, description = "approved (with its artifact) or denied"), (status = 202, description = "pending: needs votes"),
        (status = 400, description = "invalid_request, invalid_payload, unknown_field, invalid_json"), (status = 401, description = "unauthorized"),
        (status = 403, description = "wrong_identity_kind, tenant_mismatch"), (status = 422, description = "nonce_conflict"),
        (status = 429, description = "rate_limited, with Retry-After"), (status = 503, description = "store_unavailable")))]
async fn propose(State(e): State<S>, headers: HeaderMap, body: Body) -> Response {
    let who = match identify(&e, &headers) {
        Ok(w) => w,
        Err(m) => return unauthorized(m),
    };
    let body = match body_of(&e, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    answer(e.propose(who, body).await)
}

#[utoipa::path(get, path = "/v1/proposals", params(("status" = Option<String>, Query, description = "pending (the only one listed)")),
    responses((status = 200, description = "{\"proposals\": [...]}: the pending proposals this approver may vote on"), (status = 401, description = "unauthorized"), (status = 403, description = "wrong_identity_kind")))]
async fn list(
    State(e): State<S>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = match identify(&e, &headers) {
        Ok(w) => w,
        Err(m) => return unauthorized(m),
    };
    if let Some(k) = q.keys().find(|k| *k != "status") {
        return refusal(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("unknown query parameter '{k}'"),
            )
            .into(),
        );
    }
    answer(e.list(who, q.get("status").map(String::as_str)).await)
}

#[utoipa::path(get, path = "/v1/proposals/{id}", params(("id" = String, Path, description = "The proposal id"), ("wait" = Option<u64>, Query, description = "Hold up to this many seconds (at most 60) until the status changes")),
    responses((status = 200, description = "The proposal"), (status = 401, description = "unauthorized"), (status = 404, description = "unknown_proposal")))]
async fn get_proposal(
    State(e): State<S>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = match identify(&e, &headers) {
        Ok(w) => w,
        Err(m) => return unauthorized(m),
    };
    let id = path_id!(id);
    if let Some(k) = q.keys().find(|k| *k != "wait") {
        return refusal(
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("unknown query parameter '{k}'"),
            )
            .into(),
        );
    }
    let wait = match q.get("wait").map(|w| w.parse::<u64>()) {
        None => None,
        Some(Ok(w)) => Some(w.min(60)),
        Some(Err(_)) => {
            return refusal(
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "wait must be a whole number of seconds (at most 60)",
                )
                .into(),
            )
        }
    };
    answer(e.get(who, &id, wait).await)
}

#[utoipa::path(post, path = "/v1/proposals/{id}/votes", params(("id" = String, Path, description = "The proposal id")),
    responses((status = 200, description = "The updated proposal (the vote that meets the quorum issues the artifact)"),
        (status = 400, description = "reason_required, bad_vote_signature, invalid_request, unknown_field"), (status = 401, description = "unauthorized"),
        (status = 403, description = "wrong_identity_kind, not_eligible, self_approval"), (status = 404, description = "unknown_proposal"),
        (status = 409, description = "already_voted, not_pending")))]
async fn vote(
    State(e): State<S>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    let who = match identify(&e, &headers) {
        Ok(w) => w,
        Err(m) => return unauthorized(m),
    };
    let id = path_id!(id);
    let body = match body_of(&e, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    answer(e.vote(who, &id, body).await)
}

#[utoipa::path(get, path = "/v1/decisions/{id}", params(("id" = String, Path, description = "The decision id")),
    responses((status = 200, description = "{\"decision\": <log entry>, \"inclusion\": <proof, once a checkpoint covers it>}"), (status = 401, description = "unauthorized"), (status = 404, description = "unknown_decision")))]
async fn decision(
    State(e): State<S>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let who = match identify(&e, &headers) {
        Ok(w) => w,
        Err(m) => return unauthorized(m),
    };
    let id = path_id!(id);
    answer(e.decision(who, &id).await)
}

async fn admin(e: S, headers: HeaderMap, body: Body, on: bool) -> Response {
    let who = match identify(&e, &headers) {
        Ok(w) => w,
        Err(m) => return unauthorized(m),
    };
    let body = match body_of(&e, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    answer(e.freeze(who, body, on).await)
}

#[utoipa::path(post, path = "/v1/admin/freeze", responses((status = 200, description = "Frozen: every proposal of the tenant (or agent) is denied `frozen`"), (status = 401, description = "unauthorized"), (status = 403, description = "wrong_identity_kind")))]
async fn freeze(State(e): State<S>, headers: HeaderMap, body: Body) -> Response {
    admin(e, headers, body, true).await
}

#[utoipa::path(post, path = "/v1/admin/unfreeze", responses((status = 200, description = "Lifted"), (status = 401, description = "unauthorized"), (status = 403, description = "wrong_identity_kind")))]
async fn unfreeze(State(e): State<S>, headers: HeaderMap, body: Body) -> Response {
    admin(e, headers, body, false).await
}

#[utoipa::path(get, path = "/v1/roster", responses((status = 200, description = "The signed approver roster (SPEC §4)")))]
async fn roster(State(e): State<S>) -> Response {
    Json(e.roster().clone()).into_response()
}

#[utoipa::path(get, path = "/keys", responses((status = 200, description = "The gate's approval key and the decision log's verifier key")))]
async fn keys(State(e): State<S>) -> Response {
    let pk = e.signing_key().verifying_key();
    Json(json!({
        "approval_keys": [{"key_id": key_id(&pk), "public_key": verifying_key_b64(&pk), "pem": verifying_key_to_pem(&pk)}],
        "log": {"origin": e.log().origin(), "verifier_key": e.log().verifier_key()},
    }))
    .into_response()
}

#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "This document")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.merge(openexec_kit::probe::ProbeApi::openapi());
    doc.merge(openexec_logstore::LogApi::openapi());
    utoipa::Modify::modify(
        &openexec_kit::openapi::GuardStatuses {
            not_json: &["/log/cosignatures"],
        },
        &mut doc,
    );
    Json(doc)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ClawShield",
        description = "The governance gate: policy as code, M-of-N human approval, circuit breakers; signs approval artifacts and logs every decision."
    ),
    paths(
        propose,
        list,
        get_proposal,
        vote,
        decision,
        freeze,
        unfreeze,
        roster,
        keys,
        openapi
    )
)]
struct ApiDoc;

async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
    .into_response()
}

/// ClawShield's side of the kit's `/health`, `/ready`, `/version` and `/metrics`.
struct ShieldProbes(S);

impl openexec_kit::Probes for ShieldProbes {
    fn service(&self) -> &'static str {
        "ClawShield"
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    async fn health(&self) -> (StatusCode, Value) {
        let e = &self.0;
        let db = e.store().ping().await;
        let policy = e.active_policy();
        // The log's size in the database (every replica's appends), not only this process's
        // commits; this process's view when the database does not answer.
        let size = match openexec_log::LogStore::head(&**e.store()).await {
            Ok((size, _)) => size,
            Err(_) => e.store().watch_head().borrow().size,
        };
        (
            if db {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            json!({
                "status": if db { "ok" } else { "unavailable" },
                "service": "ClawShield",
                "database": e.store().backend(),
                "policy_hash": policy.as_ref().map(|p| p.bundle.policy_hash().to_string()),
                "policy_problem": e.policy_problem(),
                "identities": e.identities().len(),
                "log": {"origin": e.log().origin(), "size": size},
            }),
        )
    }

    async fn readiness(&self) -> openexec_kit::Readiness {
        let e = &self.0;
        let db = e.store().ping().await;
        let policy = e.active_policy().is_some();
        let log = e.store().log_problem();
        let detail = if !db {
            Some("the database is unavailable".to_string())
        } else if !policy {
            Some(
                e.policy_problem()
                    .unwrap_or_else(|| "no policy is in force".into()),
            )
        } else {
            log.clone()
        };
        openexec_kit::Readiness {
            checks: vec![("database", db), ("policy", policy), ("log", log.is_none())],
            detail,
        }
    }
}

pub fn router(engine: S) -> Router {
    let log_routes = openexec_logstore::router(
        engine.log().service(),
        engine.store().clone(),
        crate::log::WITNESS_SETTING,
    );
    let probes = openexec_kit::probe::router(Arc::new(ShieldProbes(engine.clone())));
    Router::new()
        .route("/v1/proposals", post(propose).get(list))
        .route("/v1/proposals/{id}", get(get_proposal))
        .route("/v1/proposals/{id}/votes", post(vote))
        .route("/v1/decisions/{id}", get(decision))
        .route("/v1/admin/freeze", post(freeze))
        .route("/v1/admin/unfreeze", post(unfreeze))
        .route("/v1/roster", get(roster))
        .route("/keys", get(keys))
        .route("/openapi.json", get(openapi))
        .with_state(engine)
        .merge(log_routes)
        .merge(probes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}
