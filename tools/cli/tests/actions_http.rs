//! An `http` action through `openexec serve` against a real local upstream (SPEC §10, §5):
//! success, a non-2xx status, a timeout after the request was sent (`interrupted`, asked again:
//! 409 `outcome_unknown`, the upstream saw one request), an oversized reply, a redirect refused,
//! a payload that tries to change host, path or scheme, and the secret header value in none of
//! the logs, receipts, answers or `/metrics`. The kind's own tests (`handlers/http`) go further.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "s3cr3t-t0ken-9f2c";

/// One request the upstream got: path and query, its `X-Token`, its body.
type Request = (String, Option<String>, Vec<u8>);

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Request>>>);

impl Seen {
    fn all(&self) -> Vec<Request> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self, path_prefix: &str) -> usize {
        self.all()
            .iter()
            .filter(|(p, _, _)| p.starts_with(path_prefix))
            .count()
    }
}

async fn record(
    State(seen): State<Seen>,
    uri: axum::http::Uri,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let token = h
        .get("x-token")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    seen.0
        .lock()
        .unwrap()
        .push((path.clone(), token, body.to_vec()));
    if path.starts_with("/pay") {
        let p: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return axum::Json(json!({"paid": p["amount"]})).into_response();
    }
    if path.starts_with("/fail") {
        return (StatusCode::SERVICE_UNAVAILABLE, "upstream down").into_response();
    }
    if path.starts_with("/hang") {
        tokio::time::sleep(Duration::from_secs(30)).await;
        return StatusCode::OK.into_response();
    }
    if path.starts_with("/big") {
        return axum::Json(json!({"blob": "x".repeat(10_000)})).into_response();
    }
    if path.starts_with("/redirect") {
        return (StatusCode::FOUND, [("location", "/pay")]).into_response();
    }
    if path.starts_with("/items") {
        return axum::Json(json!({"ok": true})).into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

async fn start_upstream(seen: Seen) -> String {
    let app = Router::new()
        .route("/{*rest}", any(record))
        .with_state(seen);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("127.0.0.1:{}", addr.port())
}

fn registry(up: &str) -> String {
    let schema = "schema = { type = \"object\" }";
    let mut out = String::new();
    for (name, path, extra) in [
        ("pay", "/pay", ""),
        ("fail", "/fail", ""),
        ("hang", "/hang", "timeout_ms = 400\n"),
        ("big", "/big", ""),
        ("redirect", "/redirect", ""),
    ] {
        out += &format!(
            "[actions.{name}]\nkind = \"http\"\n{schema}\n{extra}[actions.{name}.http]\nurl = \"http://{up}{path}\"\nheaders = {{ X-Token = {{ env = \"UP_TOKEN\" }} }}\nmax_response_bytes = 4096\n\n"
        );
    }
    out += &format!(
        "[actions.item]\nkind = \"http\"\nschema = {{ type = \"object\", required = [\"id\"], properties = {{ id = {{ type = \"string\" }} }} }}\n[actions.item.http]\nurl = \"http://{up}/items/{{id}}/view\"\nmethod = \"GET\"\nheaders = {{ X-Token = {{ env = \"UP_TOKEN\" }} }}\n"
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_action_reaches_only_its_url_and_keeps_its_secret() {
    let seen = Seen::default();
    let up = start_upstream(seen.clone()).await;
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("actions.toml");
    std::fs::write(&file, registry(&up)).unwrap();
    let s = Server::start(&[
        ("OPENEXEC_ACTIONS", file.to_str().unwrap()),
        ("UP_TOKEN", SECRET),
        ("OPENEXEC_LOG", "debug"),
    ]);
    let mut answers: Vec<Value> = Vec::new();

    // Success: the 2xx JSON body is the result; the upstream got the secret header.
    let (st, r) = s
        .execute(&json!({"action": "pay", "payload": {"amount": 7}, "nonce": "p1"}))
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["result"], json!({"paid": 7}));
    assert_eq!(r["evidence"]["receipt"]["handler"]["name"], "http:pay");
    let got = seen.all();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.as_deref(), Some(SECRET));
    assert_eq!(got[0].2, br#"{"amount":7}"#);
    answers.push(r);

    // Another status: failed, naming it.
    let (st, r) = s
        .execute(&json!({"action": "fail", "payload": {}, "nonce": "f1"}))
        .await;
    assert_eq!(st, 502, "{r}");
    assert_eq!(r["evidence"]["receipt"]["status"], "failed");
    assert_eq!(r["evidence"]["receipt"]["code"], "http_status");
    assert!(detail(&r).contains("503"), "{r}");
    answers.push(r);

    // Sent, and no answer within the timeout: interrupted; asked again, 409 outcome_unknown;
    // the upstream saw exactly one request.
    let hang = json!({"action": "hang", "payload": {}, "nonce": "h1"});
    let (st, r) = s.execute(&hang).await;
    assert_eq!(st, 409, "{r}");
    assert_eq!(r["status"], "interrupted", "{r}");
    assert_eq!(r["evidence"]["receipt"]["code"], "outcome_unknown");
    answers.push(r);
    let (st, r) = s.execute(&hang).await;
    assert_eq!(st, 409, "{r}");
    assert_eq!(code(&r), "outcome_unknown");
    answers.push(r);
    assert_eq!(seen.count("/hang"), 1);

    // An oversized reply, and a redirect, are failed; the redirect is not followed.
    let (st, r) = s
        .execute(&json!({"action": "big", "payload": {}, "nonce": "b1"}))
        .await;
    assert_eq!(st, 502, "{r}");
    assert_eq!(r["evidence"]["receipt"]["code"], "http_response_too_large");
    answers.push(r);
    let before = seen.count("/pay");
    let (st, r) = s
        .execute(&json!({"action": "redirect", "payload": {}, "nonce": "r1"}))
        .await;
    assert_eq!(st, 502, "{r}");
    assert_eq!(r["evidence"]["receipt"]["code"], "http_redirect_refused");
    assert_eq!(seen.count("/pay"), before, "the redirect was followed");
    answers.push(r);

    // A payload cannot change host, path or scheme: its value lands percent-encoded in its slot.
    for (i, id) in [
        "../admin",
        "http://evil.example:1/x",
        "a/../../b?c=d#e",
        "%2e%2e",
    ]
    .iter()
    .enumerate()
    {
        let (st, r) = s
            .execute(&json!({"action": "item", "payload": {"id": id}, "nonce": format!("i{i}")}))
            .await;
        assert_eq!(st, 200, "{id}: {r}");
        answers.push(r);
    }
    let items: Vec<String> = seen
        .all()
        .into_iter()
        .map(|(p, _, _)| p)
        .filter(|p| p.starts_with("/items/"))
        .collect();
    assert_eq!(
        items,
        [
            "/items/%2E%2E%2Fadmin/view",
            "/items/http%3A%2F%2Fevil%2Eexample%3A1%2Fx/view",
            "/items/a%2F%2E%2E%2F%2E%2E%2Fb%3Fc%3Dd%23e/view",
            "/items/%252e%252e/view",
        ]
    );
    assert!(seen.all().iter().all(|(p, _, _)| !p.starts_with("/admin")));

    // The secret is nowhere but at the upstream: not in answers (receipts included), the
    // stored receipts, /metrics, /health, /actions, or the server's log.
    let (_, metrics) = s.get_text("/metrics").await;
    let (_, health) = s.get_text("/health").await;
    let (_, actions) = s.get_text("/actions").await;
    assert!(health.contains(&format!("http://{up}")), "{health}");
    for (what, text) in [
        ("answers", serde_json::to_string(&answers).unwrap()),
        ("/metrics", metrics),
        ("/health", health),
        ("/actions", actions),
        ("the log", s.log()),
    ] {
        assert!(!text.contains(SECRET), "the secret is in {what}");
    }
    for r in &answers {
        let id = r["evidence"]["receipt"]["exec_id"].as_str().unwrap();
        let (_, stored) = s.get_text(&format!("/receipts/{id}")).await;
        assert!(
            !stored.contains(SECRET),
            "the secret is in a stored receipt"
        );
    }
    let db = std::fs::read(s.db_path()).unwrap();
    assert!(
        !db.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the secret is in the database"
    );
}
