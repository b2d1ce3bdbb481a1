//! The operational routes every service answers the same way: `/health` (liveness and a
//! summary of the service's configuration), `/ready` (whether it can do its work now, check by
//! check: 200 or 503), `/version` and `/metrics` (the process's one Prometheus recorder). A
//! service says what its checks are ([`Probes`]); the kit owns the routes, the shapes and the
//! statuses, and their OpenAPI operations ([`ProbeApi`], merged into the service's document).

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

/// What `/ready` found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readiness {
    /// Each check by name, in order; ready when all hold.
    pub checks: Vec<(&'static str, bool)>,
    /// Why it is not ready, when a check says more than its name.
    pub detail: Option<String>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|(_, ok)| *ok)
    }
}

/// A service's side of the operational routes.
pub trait Probes: Send + Sync + 'static {
    /// Its name as `/version` gives it (`OpenExec`, `ClawLedger`).
    fn service(&self) -> &'static str;
    /// Its version.
    fn version(&self) -> &'static str;
    /// The `/health` answer: its status and body (the kit adds nothing, so that each service
    /// keeps the shape its clients know).
    fn health(&self) -> impl Future<Output = (StatusCode, Value)> + Send;
    /// What `/ready` checks.
    fn readiness(&self) -> impl Future<Output = Readiness> + Send;
}

/// The routes `/health`, `/ready`, `/version` and `/metrics` over `probes`. Installs the
/// process's recorder now, so that what the service counts from its first request on is served.
pub fn router<P: Probes>(probes: Arc<P>) -> Router {
    crate::metrics::handle();
    Router::new()
        .route("/health", get(health::<P>))
        .route("/ready", get(ready::<P>))
        .route("/version", get(version::<P>))
        .route("/metrics", get(metrics_text))
        .with_state(probes)
}

async fn health<P: Probes>(State(p): State<Arc<P>>) -> Response {
    let (status, body) = p.health().await;
    (status, Json(body)).into_response()
}

/// `{"ready": bool, "checks": {name: bool, …}, "detail"?: why}`: 200 when ready, else 503.
async fn ready<P: Probes>(State(p): State<Arc<P>>) -> Response {
    let r = p.readiness().await;
    let ok = r.ready();
    let checks: Map<String, Value> = r
        .checks
        .iter()
        .map(|(k, v)| (k.to_string(), Value::Bool(*v)))
        .collect();
    let mut body = json!({"ready": ok, "checks": checks});
    if let Some(d) = r.detail {
        body["detail"] = json!(d);
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn version<P: Probes>(State(p): State<Arc<P>>) -> Json<Value> {
    Json(json!({"service": p.service(), "version": p.version()}))
}

async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::handle().render(),
    )
        .into_response()
}

// The OpenAPI operations of the routes above (the handlers are generic; these document them).
#[utoipa::path(get, path = "/health", responses((status = 200, description = "Liveness and configuration summary"), (status = 503, description = "Alive but cannot work (where the service says so)")))]
#[allow(dead_code)]
fn health_doc() {}
#[utoipa::path(get, path = "/ready", responses((status = 200, description = "Ready"), (status = 503, description = "Not ready: see checks and detail")))]
#[allow(dead_code)]
fn ready_doc() {}
#[utoipa::path(get, path = "/version", responses((status = 200, description = "Service name and version")))]
#[allow(dead_code)]
fn version_doc() {}
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
#[allow(dead_code)]
fn metrics_doc() {}

/// The OpenAPI document of the operational routes, to merge into a service's.
#[derive(utoipa::OpenApi)]
#[openapi(paths(health_doc, ready_doc, version_doc, metrics_doc))]
pub struct ProbeApi;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    use utoipa::OpenApi;

    struct Fake {
        db: bool,
    }

    impl Probes for Fake {
        fn service(&self) -> &'static str {
            "Fake"
        }
        fn version(&self) -> &'static str {
            "1.2.3"
        }
        async fn health(&self) -> (StatusCode, Value) {
            (StatusCode::OK, json!({"status": "healthy"}))
        }
        async fn readiness(&self) -> Readiness {
            Readiness {
                checks: vec![("database", self.db), ("key", true)],
                detail: (!self.db).then(|| "the database is down".to_string()),
            }
        }
    }

    async fn get(r: &Router, path: &str) -> (u16, Value) {
        let res = r
            .clone()
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let st = res.status().as_u16();
        let b = res.into_body().collect().await.unwrap().to_bytes();
        (
            st,
            serde_json::from_slice(&b).unwrap_or(Value::String(String::from_utf8_lossy(&b).into())),
        )
    }

    #[tokio::test]
    async fn the_routes_answer_in_their_shapes() {
        let up = router(Arc::new(Fake { db: true }));
        assert_eq!(
            get(&up, "/ready").await,
            (
                200,
                json!({"ready": true, "checks": {"database": true, "key": true}})
            )
        );
        assert_eq!(
            get(&up, "/version").await,
            (200, json!({"service": "Fake", "version": "1.2.3"}))
        );
        assert_eq!(
            get(&up, "/health").await,
            (200, json!({"status": "healthy"}))
        );
        assert_eq!(get(&up, "/metrics").await.0, 200);
        let down = router(Arc::new(Fake { db: false }));
        assert_eq!(
            get(&down, "/ready").await,
            (
                503,
                json!({"ready": false, "checks": {"database": false, "key": true}, "detail": "the database is down"})
            )
        );
    }

    #[test]
    fn the_document_has_every_route() {
        let doc = ProbeApi::openapi();
        for p in ["/health", "/ready", "/version", "/metrics"] {
            assert!(doc.paths.paths.contains_key(p), "{p}");
        }
    }
}
