//! The HTTP API (SPEC §8). Handlers extract, call one engine or store function, and map the
//! result; JSON error shapes live here and nowhere else.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openexec_core::json;
use openexec_core::keys::{key_id, verifying_key_b64, verifying_key_to_pem, VerifyingKey};
use openexec_core::receipt::{verify_evidence, Evidence};
use openexec_kit::ApiError;
use serde_json::{json, Value};
use utoipa::OpenApi;

use crate::config::Mode;
use crate::engine::{Engine, ExecRequest, Outcome, RefusalCode};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// `GET /actions` in its three forms, built once: the registry does not change while the
    /// process runs.
    actions: Arc<ActionLists>,
}

/// The bodies of `GET /actions` (SPEC §10).
struct ActionLists {
    native: Value,
    openai: Value,
    mcp: Value,
}

impl ActionLists {
    fn of(engine: &Engine) -> ActionLists {
        let (mut native, mut openai, mut mcp) = (Vec::new(), Vec::new(), Vec::new());
        for (name, a) in engine.runnable() {
            let h = &a.handler;
            let schema = h.input_schema();
            native.push(json!({
                "name": name,
                "description": h.description(),
                "kind": h.kind(),
                "input_schema": schema,
                "digest": h.digest(),
                "effects": h.effects(),
                "min_approvers": a.min_approvers,
            }));
            openai.push(json!({"type": "function", "function": {
                "name": name, "description": h.description(), "parameters": schema,
            }}));
            mcp.push(json!({"name": name, "description": h.description(), "inputSchema": schema}));
        }
        ActionLists {
            native: Value::Array(native),
            openai: Value::Array(openai),
            mcp: json!({ "tools": mcp }),
        }
    }
}

/// What `/health` adds about the actions: every outbound destination a runnable action may
/// connect to, and what each handler kind in use says of itself (the command kind: whether its
/// sandbox is available). Built once.
fn handler_health(engine: &Engine) -> Value {
    let mut destinations: Vec<String> = engine
        .runnable()
        .flat_map(|(_, a)| a.handler.destinations())
        .collect();
    destinations.sort();
    destinations.dedup();
    let kinds: serde_json::Map<String, Value> = engine
        .handlers()
        .kind_health()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    json!({"outbound": destinations, "handler_kinds": kinds})
}

#[derive(serde::Deserialize)]
struct ActionsQuery {
    format: Option<String>,
}

#[utoipa::path(get, path = "/actions", params(("format" = Option<String>, Query, description = "`openai` (the OpenAI tool list) or `mcp` (an MCP tools/list result); absent: OpenExec's own list")),
    responses((status = 200, description = "Every action that may run here (after the allow-list): name, description, kind, input_schema, digest, effects, min_approvers"),
              (status = 400, description = "invalid_request: an unknown format", body = ErrorBody)))]
async fn actions(
    State(s): State<AppState>,
    q: Result<axum::extract::Query<ActionsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let format = match q {
        Ok(q) => q.0.format,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("bad query: {e}"),
            )
        }
    };
    let body = match format.as_deref() {
        None | Some("") | Some("openexec") => &s.actions.native,
        Some("openai") => &s.actions.openai,
        Some("mcp") => &s.actions.mcp,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("format must be openai or mcp (or absent), not '{other}'"),
            )
        }
    };
    Json(body.clone()).into_response()
}

pub fn router(engine: Arc<Engine>) -> Router {
    // The receipt log's `/log/*` routes (SPEC §7) are `openexec_logstore`'s.
    let log_routes = openexec_logstore::router(
        engine.log().service(),
        engine.store_arc(),
        crate::log::WITNESS_SETTING,
    );
    let probes = openexec_kit::probe::router(Arc::new(ExecProbes {
        handlers: handler_health(&engine),
        engine: engine.clone(),
    }));
    let state = AppState {
        actions: Arc::new(ActionLists::of(&engine)),
        engine,
    };
    Router::new()
        .route("/", get(root))
        .route("/keys", get(keys))
        .route("/actions", get(actions))
        .route("/openapi.json", get(openapi))
        .route("/execute", post(execute))
        .route("/receipts/verify", post(verify_receipt))
        .route("/receipts/{exec_id}", get(get_receipt))
        .with_state(state)
        .merge(probes)
        .merge(log_routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::disable())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "Not Found")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method Not Allowed",
    )
}

/// Read a JSON body as I-JSON within the size and depth limits (the kit's body rules).
async fn read_json(engine: &Engine, headers: &HeaderMap, body: Body) -> Result<Value, Response> {
    let cfg = engine.config();
    openexec_kit::read_ijson(
        headers,
        body,
        openexec_kit::JsonLimits {
            max_bytes: cfg.max_body_bytes,
            max_depth: cfg.max_depth,
        },
    )
    .await
}

fn field_str(
    obj: &serde_json::Map<String, Value>,
    name: &str,
    required: bool,
) -> Result<Option<String>, String> {
    match obj.get(name) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(format!("field '{name}' is required")),
        Some(Value::String(s)) if s.is_empty() => Err(format!("field '{name}' must not be empty")),
        Some(Value::String(s)) if s.len() > 1024 => {
            Err(format!("field '{name}' is longer than 1024 bytes"))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("field '{name}' must be a string")),
    }
}

/// The status each refusal is answered with (SPEC §4, §5).
fn refusal_status(code: RefusalCode) -> StatusCode {
    use RefusalCode as C;
    match code {
        C::UnknownAction | C::InvalidPayload => StatusCode::BAD_REQUEST,
        C::ApprovalReused => StatusCode::CONFLICT,
        C::NonceConflict => StatusCode::UNPROCESSABLE_ENTITY,
        C::TenantNotServed
        | C::ActionNotAllowed
        | C::ApprovalNotConfigured
        | C::ApprovalRequired
        | C::ApprovalMalformed
        | C::ApprovalUnknownKey
        | C::ApprovalBadSignature
        | C::ApprovalTenantMismatch
        | C::ApprovalRequestMismatch
        | C::ApprovalExpired
        | C::ApprovalNotYetValid
        | C::ApprovalQuorumUnmet => StatusCode::FORBIDDEN,
    }
}

/// An error body in the original's shape plus the structured error, with the receipt's
/// evidence (and its `id`) when one was written.
fn error_body(code: &str, message: &str, evidence: Option<&Evidence>) -> Value {
    // The status is the caller's (`outcome_response`); only the body shape is taken here.
    let mut body = ApiError::new(StatusCode::OK, code, message).body();
    if let Some(ev) = evidence {
        body["id"] = ev.receipt.get("exec_id").cloned().unwrap_or(Value::Null);
        body["evidence"] = serde_json::to_value(ev).unwrap_or(Value::Null);
    }
    body
}

/// The status and JSON body of an engine outcome: the only place `/execute`'s wire shapes live.
pub fn outcome_response(o: &Outcome) -> (StatusCode, Value) {
    match o {
        Outcome::Executed {
            result,
            evidence,
            replayed,
        } => (
            StatusCode::OK,
            json!({
                "id": evidence.receipt.get("exec_id").cloned().unwrap_or(Value::Null),
                "action": evidence.receipt.get("action").cloned().unwrap_or(Value::Null),
                "result": result,
                "approved": true,
                "receipt": evidence.receipt_hash,
                "status": "executed",
                "replayed": replayed,
                "evidence": evidence,
            }),
        ),
        Outcome::Failed {
            message,
            evidence,
            replayed,
        } => {
            let mut b = error_body("handler_failed", message, Some(evidence));
            b["status"] = json!("failed");
            b["replayed"] = json!(replayed);
            (StatusCode::BAD_GATEWAY, b)
        }
        Outcome::Interrupted {
            message,
            evidence,
            replayed,
        } => {
            let mut b = error_body("outcome_unknown", message, Some(evidence));
            b["status"] = json!("interrupted");
            b["replayed"] = json!(replayed);
            (StatusCode::CONFLICT, b)
        }
        Outcome::Refused {
            code,
            message,
            details,
            evidence,
            receipt_error,
        } => {
            let mut b = error_body(code.as_str(), message, evidence.as_deref());
            if !details.is_empty() {
                b["error"]["details"] = json!(details);
            }
            if let Some(e) = receipt_error {
                b["receipt_error"] = json!(e);
            }
            (refusal_status(*code), b)
        }
        Outcome::InProgress { exec_id } => {
            let mut b = error_body(
                "in_progress",
                "An identical request with this nonce is still running; ask again later for its outcome",
                None,
            );
            b["id"] = json!(exec_id);
            (StatusCode::CONFLICT, b)
        }
        Outcome::StoreUnavailable { message } => (
            StatusCode::SERVICE_UNAVAILABLE,
            error_body("store_unavailable", message, None),
        ),
        Outcome::Internal => (
            StatusCode::INTERNAL_SERVER_ERROR,
            error_body(
                "internal_error",
                "the execution task failed; see the server log",
                None,
            ),
        ),
    }
}

fn answer(o: Outcome) -> Response {
    let (status, body) = outcome_response(&o);
    (status, Json(body)).into_response()
}

#[utoipa::path(post, path = "/execute", request_body(content = ExecuteBody, content_type = "application/json"),
    responses((status = 200, description = "Executed (or replayed): result and signed evidence", body = ExecuteOk),
              (status = 400, description = "Bad input (invalid_json, duplicate_key, number_out_of_range, too_deep, invalid_request, unknown_action, invalid_payload)", body = ErrorBody),
              (status = 403, description = "Refused: tenant_not_served, action_not_allowed, or an approval check", body = ErrorBody),
              (status = 409, description = "approval_reused, in_progress or outcome_unknown", body = ErrorBody),
              (status = 413, description = "body_too_large", body = ErrorBody),
              (status = 415, description = "unsupported_media_type: the body is not declared as application/json", body = ErrorBody),
              (status = 422, description = "nonce_conflict", body = ErrorBody),
              (status = 502, description = "The handler failed", body = ErrorBody),
              (status = 503, description = "store_unavailable: nothing ran", body = ErrorBody)))]
async fn execute(State(s): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let v = match read_json(&s.engine, &parts.headers, body).await {
        Ok(v) => v,
        Err(r) => {
            metrics::counter!("openexec_requests_total", "code" => "bad_request").increment(1);
            return r;
        }
    };
    match ExecRequest::from_value(v) {
        Ok(er) => answer(s.engine.execute(er).await),
        Err(e) => {
            metrics::counter!("openexec_requests_total", "code" => "invalid_request").increment(1);
            error(StatusCode::BAD_REQUEST, "invalid_request", &e.0)
        }
    }
}

#[utoipa::path(get, path = "/", responses((status = 200, description = "Service banner")))]
async fn root(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "service": "OpenExec",
        "version": VERSION,
        "status": "running",
        "exec_mode": s.engine.config().mode.as_str(),
        "endpoints": ["/health", "/ready", "/version", "/keys", "/actions", "/execute", "/receipts/verify",
                      "/receipts/{exec_id}", "/metrics", "/openapi.json"],
    }))
}

/// OpenExec's side of the kit's `/health`, `/ready` and `/version`.
struct ExecProbes {
    engine: Arc<Engine>,
    /// The actions' part of `/health` ([`handler_health`]).
    handlers: Value,
}

impl openexec_kit::Probes for ExecProbes {
    fn service(&self) -> &'static str {
        "OpenExec"
    }

    fn version(&self) -> &'static str {
        VERSION
    }

    async fn health(&self) -> (StatusCode, Value) {
        let cfg = self.engine.config();
        let mut h = json!({
            "status": "healthy",
            "service": "OpenExec",
            "version": VERSION,
            "exec_mode": cfg.mode.as_str(),
            "signature_verification": if cfg.mode == Mode::Clawshield { "enabled" } else { "disabled" },
        });
        match &cfg.allowed_actions {
            Some(list) => {
                h["restriction"] = json!("restricted");
                h["allow_list"] = json!(list);
            }
            None => {
                h["restriction"] = json!("open");
                h["warning"] = json!("No allow-list configured (OPENEXEC_ALLOWED_ACTIONS): every registered action may run");
            }
        }
        h["outbound"] = self.handlers["outbound"].clone();
        h["handler_kinds"] = self.handlers["handler_kinds"].clone();
        (StatusCode::OK, h)
    }

    async fn readiness(&self) -> openexec_kit::Readiness {
        let e = &self.engine;
        let database = e.store().ping().await;
        let approval_keys = e.config().mode == Mode::Demo || !e.keys().approval.is_empty();
        let log_problem = e.store().log_problem();
        let mut detail =
            (!approval_keys).then(|| "CLAWSHIELD_PUBLIC_KEY not configured".to_string());
        if let Some(p) = &log_problem {
            detail = Some(format!(
                "the receipt log does not match its last signed checkpoint: {p}"
            ));
        }
        openexec_kit::Readiness {
            checks: vec![
                ("database", database),
                ("receipt_key", true),
                ("approval_keys", approval_keys),
                ("log", log_problem.is_none()),
            ],
            detail,
        }
    }
}

fn key_entry(k: &VerifyingKey) -> Value {
    json!({"key_id": key_id(k), "public_key": verifying_key_b64(k), "pem": verifying_key_to_pem(k)})
}

#[utoipa::path(get, path = "/keys", responses((status = 200, description = "Receipt and approval public keys")))]
async fn keys(State(s): State<AppState>) -> Json<Value> {
    let k = s.engine.keys();
    let log = s.engine.log();
    Json(json!({
        "receipt_keys": k.receipt_verifying().iter().map(key_entry).collect::<Vec<_>>(),
        "approval_keys": k.approval.iter().map(key_entry).collect::<Vec<_>>(),
        "log": {"origin": log.origin(), "verifier_key": log.verifier_key()},
    }))
}

#[utoipa::path(get, path = "/receipts/{exec_id}", params(("exec_id" = String, Path, description = "The request hash")),
    responses((status = 200, description = "The evidence of the latest receipt"),
              (status = 400, description = "invalid_request: exec_id is not 64 lowercase hex characters", body = ErrorBody),
              (status = 404, description = "No receipt", body = ErrorBody),
              (status = 503, description = "store_unavailable", body = ErrorBody)))]
async fn get_receipt(State(s): State<AppState>, Path(exec_id): Path<String>) -> Response {
    if exec_id.len() != 64
        || !exec_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "exec_id must be 64 lowercase hex characters",
        );
    }
    match s.engine.evidence_for(&exec_id).await {
        Ok(Some(ev)) => Json(json!({"evidence": ev})).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("No receipt for {exec_id}"),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            &e.to_string(),
        ),
    }
}

#[utoipa::path(post, path = "/receipts/verify", request_body(content = VerifyBody, content_type = "application/json"),
    responses((status = 200, description = "{valid, checks, errors, kind}"),
              (status = 400, description = "Bad input (invalid_json, duplicate_key, number_out_of_range, too_deep, invalid_request)", body = ErrorBody),
              (status = 413, description = "body_too_large", body = ErrorBody),
              (status = 415, description = "unsupported_media_type", body = ErrorBody),
              (status = 503, description = "store_unavailable (the seed's triple needs the stored receipt)", body = ErrorBody)))]
async fn verify_receipt(State(s): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let v = match read_json(&s.engine, &parts.headers, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Value::Object(obj) = &v else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request body must be a JSON object",
        );
    };
    let keys = s.engine.keys().receipt_verifying();
    // A whole evidence object, bare or under "evidence": checked offline.
    let evidence = match obj.get("evidence") {
        Some(e) if e.is_object() => Some(e),
        _ if obj.get("receipt").is_some_and(Value::is_object) => Some(&v),
        _ => None,
    };
    if let Some(ev) = evidence {
        let log = s.engine.log();
        let verifier = log.verifier();
        let trust = openexec_core::evidence::LogTrust {
            log: Some(&verifier),
            witnesses: log.witnesses(),
            ..Default::default()
        };
        let report = openexec_core::evidence::verify_full(ev, &keys, &trust);
        return Json(json!({"valid": report.valid, "checks": report.checks, "errors": report.errors, "kind": "evidence"}))
            .into_response();
    }
    // The seed's triple: checked against the stored receipt.
    let exec_id = match field_str(obj, "exec_id", true) {
        Ok(x) => x.unwrap_or_default(),
        Err(m) => return error(StatusCode::BAD_REQUEST, "invalid_request", &m),
    };
    let receipt_hash = match field_str(obj, "receipt", true) {
        Ok(x) => x.unwrap_or_default(),
        Err(m) => return error(StatusCode::BAD_REQUEST, "invalid_request", &m),
    };
    let Some(result) = obj.get("result") else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "field 'result' is required",
        );
    };
    // The seed sends the result as a JSON string; a value is accepted as it is.
    let result = match result {
        Value::String(s) => json::parse_ijson(s.as_bytes(), json::DEFAULT_MAX_DEPTH)
            .unwrap_or_else(|_| result.clone()),
        other => other.clone(),
    };
    let stored = match s.engine.store().receipt_by_hash(&receipt_hash).await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                &e.to_string(),
            )
        }
    };
    let mut checks = serde_json::Map::new();
    let mut errors = Vec::new();
    let mut valid = true;
    let mut check = |name: &str, ok: bool, why: String| {
        checks.insert(name.into(), Value::Bool(ok));
        if !ok {
            valid = false;
            errors.push(why);
        }
    };
    match stored {
        None => check(
            "receipt_known",
            false,
            format!("no receipt with hash {receipt_hash} was issued here"),
        ),
        Some(r) => {
            check("receipt_known", true, String::new());
            check(
                "exec_id",
                r.exec_id == exec_id,
                format!("the receipt is for {}, not {exec_id}", r.exec_id),
            );
            let want = r
                .receipt
                .get("result_hash")
                .and_then(Value::as_str)
                .map(str::to_string);
            let got = json::jcs_sha256(&result);
            check(
                "result_hash",
                want.as_deref() == Some(got.as_str()),
                "the result does not hash to the receipt's result_hash".into(),
            );
            let report = verify_evidence(&json!(crate::engine::evidence_of(&r)), &keys);
            check(
                "signature",
                report.valid,
                format!(
                    "stored evidence does not verify: {}",
                    report.errors.join("; ")
                ),
            );
        }
    }
    Json(json!({"valid": valid, "checks": checks, "errors": errors, "kind": "triple"}))
        .into_response()
}

#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "This document")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.merge(openexec_kit::probe::ProbeApi::openapi());
    doc.merge(openexec_logstore::LogApi::openapi());
    // After the merge, so the log's routes get the guard's answers too.
    utoipa::Modify::modify(
        &openexec_kit::openapi::GuardStatuses {
            not_json: &["/log/cosignatures"],
        },
        &mut doc,
    );
    Json(doc)
}

/// The `/execute` request body (identifier limits of SPEC §2).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ExecuteBody {
    /// The action to run.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9_.:/-]{1,128}$",
        example = "echo"
    )]
    action: String,
    /// The action's input: any JSON value; a string holding a JSON object is decoded first.
    #[schema(value_type = Object, example = json!({"msg": "hi"}))]
    payload: Option<Value>,
    /// Unique per tenant: the idempotency key of this attempt. No control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,256}$",
        example = "n-1"
    )]
    nonce: String,
    /// Defaults to CLAWSHIELD_TENANT_ID, else "default"; must be one of OPENEXEC_TENANTS.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    tenant_id: Option<String>,
    /// A v0 or v1 approval artifact (clawshield mode). Alias: `approval`.
    #[schema(value_type = Option<Object>)]
    approval_artifact: Option<Value>,
}

/// The seed's check of a result against a stored receipt.
#[derive(utoipa::ToSchema, serde::Serialize)]
#[allow(dead_code)]
struct VerifyTriple {
    /// The execution id (`id` of the /execute answer).
    #[schema(min_length = 64, max_length = 64, pattern = "^[0-9a-f]{64}$")]
    exec_id: String,
    /// The result, as a JSON string (what the seed sent) or as a value.
    #[schema(value_type = Object)]
    result: Value,
    /// The receipt hash (`receipt` of the /execute answer).
    #[schema(min_length = 64, max_length = 64, pattern = "^[0-9a-f]{64}$")]
    receipt: String,
}

/// An evidence object, checked offline: receipt hash, signature, and the inclusion proof when
/// present. It may also be sent wrapped as `{"evidence": {...}}`.
#[derive(utoipa::ToSchema, serde::Serialize)]
#[allow(dead_code)]
struct EvidenceBody {
    #[schema(value_type = Object)]
    receipt: Value,
    #[schema(min_length = 64, max_length = 64, pattern = "^[0-9a-f]{64}$")]
    receipt_hash: String,
    signature: String,
    key_id: String,
    /// Null for a rejection that was signed but not logged.
    log_index: Option<u64>,
    /// False for a rejection that was signed but not logged.
    logged: Option<bool>,
    #[schema(value_type = Option<Object>)]
    inclusion: Option<Value>,
}

/// The body of `POST /receipts/verify`: the seed's triple or an evidence object.
#[derive(utoipa::ToSchema, serde::Serialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum VerifyBody {
    Triple(VerifyTriple),
    Evidence(EvidenceBody),
}

/// A successful execution.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ExecuteOk {
    /// exec_id = request_hash
    id: String,
    action: String,
    result: Value,
    approved: bool,
    /// The receipt hash.
    receipt: String,
    status: String,
    replayed: bool,
    /// {receipt, receipt_hash, signature, key_id, log_index}
    evidence: Value,
}

/// An error: the original's `detail` plus a code, and evidence when a receipt was written.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ErrorBody {
    detail: String,
    error: Value,
    evidence: Option<Value>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "OpenExec",
        description = "Runs only what was approved, at most once, and signs a receipt for every attempt."
    ),
    paths(execute, root, keys, actions, get_receipt, verify_receipt, openapi),
    components(schemas(
        ExecuteBody,
        ExecuteOk,
        ErrorBody,
        VerifyBody,
        VerifyTriple,
        EvidenceBody
    ))
)]
struct ApiDoc;
