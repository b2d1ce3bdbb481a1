//! The `http` kind against real local servers (axum, raw TCP, and a TLS listener), all on
//! 127.0.0.1: what reaches the server, and what each way a request can end becomes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use openexec_handler::{CancellationToken, Handler, HandlerError, Invocation, Kind, Spec};
use openexec_handler_http::{HttpAction, HttpKind};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// A recording server

/// One request as the server received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// The request target exactly as sent (path and query), before any decoding.
    target: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Clone)]
enum Behave {
    /// Answer this status, content type and body.
    Answer(u16, &'static str, String),
    /// 302 to this location.
    Redirect(String),
    /// Take the request and never answer.
    Never,
}

struct Recorder {
    seen: Mutex<Vec<Seen>>,
    behave: Behave,
}

struct Server {
    addr: SocketAddr,
    rec: Arc<Recorder>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    fn seen(&self) -> Vec<Seen> {
        self.rec.seen.lock().unwrap().clone()
    }
}

async fn record(State(rec): State<Arc<Recorder>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    rec.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        headers: parts.headers,
        body,
    });
    match &rec.behave {
        Behave::Answer(status, ctype, body) => (
            StatusCode::from_u16(*status).unwrap(),
            [("content-type", *ctype)],
            body.clone(),
        )
            .into_response(),
        Behave::Redirect(to) => {
            (StatusCode::FOUND, [("location", to.as_str())], "").into_response()
        }
        Behave::Never => std::future::pending().await,
    }
}

async fn server(behave: Behave) -> Server {
    let rec = Arc::new(Recorder {
        seen: Mutex::new(Vec::new()),
        behave,
    });
    let app = axum::Router::new().fallback(record).with_state(rec.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { addr, rec }
}

async fn json_server(body: Value) -> Server {
    server(Behave::Answer(200, "application/json", body.to_string())).await
}

/// A raw TCP server: reads one request head per connection, then does `what`. Counts requests.
#[derive(Clone, Copy)]
enum RawReply {
    /// Close the connection without a word.
    Close,
    /// Write these bytes, then hold the connection open (up to 30 s).
    WriteAndHold(&'static str),
    /// A 200 with a chunked body that never ends (bounded to 256 MiB).
    EndlessChunks,
}

async fn raw_server(reply: RawReply) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
                match reply {
                    RawReply::Close => drop(sock),
                    RawReply::WriteAndHold(s) => {
                        let _ = sock.write_all(s.as_bytes()).await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    RawReply::EndlessChunks => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                        if sock.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let piece = format!("400\r\n{}\r\n", "1".repeat(1024));
                        for _ in 0..256 * 1024 {
                            if sock.write_all(piece.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, count)
}

/// An address nothing listens on (bound, then closed).
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

// ---------------------------------------------------------------------------------------------
// Building and running actions

const DIGEST: &str = "4f1c0de0000000000000000000000000000000000000000000000000000000aa";

fn spec_in<'a>(settings: &'a Value, dir: &'a Path, timeout: Duration) -> Spec<'a> {
    Spec {
        action: "act",
        settings,
        base_dir: dir,
        timeout,
        effects: true,
        digest: DIGEST,
    }
}

fn build_in(settings: Value, dir: &Path, timeout: Duration) -> Result<HttpAction, String> {
    // every action of these tests is built with proxy variables set, which it must ignore
    init_env();
    HttpAction::new(&spec_in(&settings, dir, timeout))
}

fn build(settings: Value) -> HttpAction {
    build_in(settings, Path::new("/nonexistent"), Duration::from_secs(10)).unwrap()
}

async fn run_with(
    h: &HttpAction,
    payload: &Value,
    cancel: CancellationToken,
) -> Result<Value, HandlerError> {
    let inv = Invocation {
        exec_id: "e",
        tenant_id: "t",
        action: "act",
        nonce: "n",
        payload,
        deadline: Instant::now() + h.timeout(),
        cancel,
    };
    h.run(&inv).await
}

async fn run(h: &HttpAction, payload: Value) -> Result<Value, HandlerError> {
    run_with(h, &payload, CancellationToken::new()).await
}

fn failed(r: Result<Value, HandlerError>, code: &str) -> HandlerError {
    let e = r.expect_err("the run should fail");
    assert_eq!(e.code, code, "{e:?}");
    assert_eq!(e.unknown, code == "outcome_unknown", "{e:?}");
    e
}

const SECRET_ENV: &str = "OPENEXEC_HTTP_TEST_TOKEN_7f3a";
const SECRET_ENV_VALUE: &str = "Bearer env-secret-9b41c2";
const SECRET_FILE_VALUE: &str = "file-secret-55d0e7";

/// Variables the tests read from the real environment, set once. The proxy variables point at
/// a recording server, so any request that took them would be seen there.
fn init_env() -> &'static Server {
    static PROXY: OnceLock<Server> = OnceLock::new();
    PROXY.get_or_init(|| {
        // A server on its own runtime thread, living as long as the test process.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let s = json_server(json!({"via": "proxy"})).await;
                tx.send(s).unwrap();
                std::future::pending::<()>().await
            })
        });
        let proxy = rx.recv().unwrap();
        std::env::set_var(SECRET_ENV, SECRET_ENV_VALUE);
        for v in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            std::env::set_var(v, proxy.url(""));
        }
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
        proxy
    })
}

// ---------------------------------------------------------------------------------------------
// Success

#[tokio::test]
async fn post_sends_the_payload_and_answers_the_json_reply() {
    let proxy = init_env();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{SECRET_FILE_VALUE}\n")).unwrap();
    let srv = json_server(json!({"charged": true, "id": "ch_1"})).await;
    let h = build_in(
        json!({
            "url": srv.url("/v1/charge"),
            "headers": {
                "Authorization": {"env": SECRET_ENV},
                "X-Api-Key": {"file": "token"},
                "X-Client": "openexec",
            },
        }),
        dir.path(),
        Duration::from_secs(10),
    )
    .unwrap();
    let payload = json!({"to": "bob", "amount": 5, "memo": {"z": 1, "a": [true, null]}});
    assert_eq!(h.validate(&payload), Ok(()));
    let r = run(&h, payload.clone()).await.unwrap();
    assert_eq!(r, json!({"charged": true, "id": "ch_1"}));

    let seen = srv.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.target, "/v1/charge");
    assert_eq!(s.headers["authorization"], SECRET_ENV_VALUE);
    assert_eq!(s.headers["x-api-key"], SECRET_FILE_VALUE); // the file's newline trimmed
    assert_eq!(s.headers["x-client"], "openexec");
    assert_eq!(s.headers["content-type"], "application/json");
    assert!(s.headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("openexec-handler-http/"));
    // the payload, as canonical JSON
    assert_eq!(s.body, openexec_core::json::canonicalize(&payload));
    // the ambient proxy variables were not used
    assert!(proxy.seen().is_empty(), "a request went through HTTP_PROXY");
}

#[tokio::test]
async fn get_fills_query_slots_and_sends_no_body() {
    let srv = json_server(json!([1, 2, 3])).await;
    let h = build(json!({
        "url": srv.url("/items/{id}?fmt=json&q={q}"),
        "method": "GET",
    }));
    let r = run(&h, json!({"id": 42, "q": "a b&c=d"})).await.unwrap();
    assert_eq!(r, json!([1, 2, 3]));
    let s = &srv.seen()[0];
    assert_eq!(s.method, "GET");
    assert_eq!(s.target, "/items/42?fmt=json&q=a%20b%26c%3Dd");
    assert!(s.body.is_empty());
    assert!(s.headers.get("content-type").is_none());
}

#[tokio::test]
async fn body_template_is_the_only_way_the_payload_reaches_the_body() {
    let srv = json_server(json!({"ok": 1})).await;
    let h = build(json!({
        "url": srv.url("/t"),
        "method": "PUT",
        "headers": {"Content-Type": "application/vnd.test+json"},
        "body_template": {
            "amount": "{amount}",
            "meta": "{meta}",
            "memo": "pay {to} {amount}",
            "fixed": [1, "two", {"three": 3.5}],
            "braces": "{{to}}",
        },
    }));
    let payload = json!({"amount": 7, "meta": {"k": [1, "x"]}, "to": "bob", "extra": "not sent"});
    run(&h, payload).await.unwrap();
    let s = &srv.seen()[0];
    assert_eq!(s.method, "PUT");
    assert_eq!(s.headers["content-type"], "application/vnd.test+json");
    let body: Value = serde_json::from_slice(&s.body).unwrap();
    assert_eq!(
        body,
        json!({
            "amount": 7,
            "meta": {"k": [1, "x"]},
            "memo": "pay bob 7",
            "fixed": [1, "two", {"three": 3.5}],
            "braces": "{to}",
        })
    );
    assert!(!String::from_utf8_lossy(&s.body).contains("not sent"));

    // DELETE with a template sends it; without one, nothing
    let h =
        build(json!({"url": srv.url("/d"), "method": "DELETE", "body_template": {"id": "{id}"}}));
    run(&h, json!({"id": "x"})).await.unwrap();
    let h = build(json!({"url": srv.url("/d"), "method": "DELETE"}));
    run(&h, json!({"id": "x"})).await.unwrap();
    let seen = srv.seen();
    assert_eq!(seen[1].body, br#"{"id":"x"}"#);
    assert!(seen[2].body.is_empty());
}

#[tokio::test]
async fn empty_2xx_bodies_are_null() {
    let srv = server(Behave::Answer(204, "application/json", String::new())).await;
    assert_eq!(
        run(&build(json!({"url": srv.url("/")})), json!({}))
            .await
            .unwrap(),
        Value::Null
    );
    let srv = server(Behave::Answer(202, "text/plain", String::new())).await;
    assert_eq!(
        run(&build(json!({"url": srv.url("/")})), json!({}))
            .await
            .unwrap(),
        Value::Null
    );
}

// ---------------------------------------------------------------------------------------------
// Failures

#[tokio::test]
async fn non_2xx_is_http_status_without_the_body() {
    for status in [400, 404, 500, 503] {
        let srv = server(Behave::Answer(
            status,
            "text/plain",
            "secret-body-text".into(),
        ))
        .await;
        let e = failed(
            run(&build(json!({"url": srv.url("/x")})), json!({})).await,
            "http_status",
        );
        assert!(e.message.contains(&status.to_string()), "{e:?}");
        assert!(
            e.message.contains(&format!("POST http://{}", srv.addr)),
            "{e:?}"
        );
        assert!(!e.message.contains("secret-body-text"), "{e:?}");
        assert_eq!(srv.seen().len(), 1);
    }
}

#[tokio::test]
async fn a_2xx_that_is_not_ijson_is_a_bad_response() {
    for body in [
        "not json",
        r#"{"a": 1, "a": 2}"#,
        "[9007199254740993]",
        r#"{"a": 1} x"#,
    ] {
        let srv = server(Behave::Answer(200, "application/json", body.into())).await;
        let e = failed(
            run(&build(json!({"url": srv.url("/")})), json!({})).await,
            "http_bad_response",
        );
        assert!(e.message.contains("not I-JSON"), "{body}: {e:?}");
    }
}

#[tokio::test]
async fn a_server_that_never_answers_is_outcome_unknown_after_one_request() {
    let srv = server(Behave::Never).await;
    let h = build_in(
        json!({"url": srv.url("/slow")}),
        Path::new("/"),
        Duration::from_millis(300),
    )
    .unwrap();
    let started = Instant::now();
    let e = failed(run(&h, json!({"n": 1})).await, "outcome_unknown");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(e.message.contains("may have taken effect"), "{e:?}");
    assert_eq!(srv.seen().len(), 1, "sent once, never retried");
}

#[tokio::test]
async fn a_connection_lost_after_sending_is_outcome_unknown() {
    let (addr, count) = raw_server(RawReply::Close).await;
    let h = build(json!({"url": format!("http://{addr}/x")}));
    failed(run(&h, json!({"n": 1})).await, "outcome_unknown");
    assert_eq!(count.load(Ordering::SeqCst), 1, "sent once, never retried");
}

#[tokio::test]
async fn an_oversized_reply_is_refused() {
    // by Content-Length, from a real server
    let srv = server(Behave::Answer(
        200,
        "application/json",
        format!("\"{}\"", "x".repeat(200)),
    ))
    .await;
    let h = build(json!({"url": srv.url("/"), "max_response_bytes": 201}));
    let e = failed(run(&h, json!({})).await, "http_response_too_large");
    assert!(
        e.message
            .contains("over max_response_bytes (201) with a body of 202 bytes (Content-Length)"),
        "{e:?}"
    );
    // exactly at the cap is fine
    let h = build(json!({"url": srv.url("/"), "max_response_bytes": 202}));
    assert_eq!(run(&h, json!({})).await.unwrap(), json!("x".repeat(200)));

    // a declared length over the cap is refused at once, without waiting for the body
    let (addr, _) = raw_server(RawReply::WriteAndHold(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n[1",
    ))
    .await;
    let h = build(json!({"url": format!("http://{addr}/")}));
    let started = Instant::now();
    failed(run(&h, json!({})).await, "http_response_too_large");
    assert!(started.elapsed() < Duration::from_secs(2));

    // no Content-Length: cut off while streaming, long before the endless body ends
    let (addr, count) = raw_server(RawReply::EndlessChunks).await;
    let h = build(json!({"url": format!("http://{addr}/"), "max_response_bytes": 10000}));
    let started = Instant::now();
    let e = failed(run(&h, json!({})).await, "http_response_too_large");
    assert!(
        e.message
            .contains("over max_response_bytes (10000) with a body longer"),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn redirects_are_refused_and_never_followed() {
    let other = json_server(json!({"followed": true})).await;
    let srv = server(Behave::Redirect(other.url("/elsewhere"))).await;
    let e = failed(
        run(&build(json!({"url": srv.url("/start")})), json!({})).await,
        "http_redirect_refused",
    );
    assert!(e.message.contains("302"), "{e:?}");
    assert_eq!(srv.seen().len(), 1);
    assert!(other.seen().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn payload_values_only_ever_reach_the_configured_path() {
    let srv = json_server(json!({})).await;
    let h = build(json!({
        "url": srv.url("/api/items/{id}/view?q={q}"),
        "method": "GET",
    }));
    let cases = [
        ("../admin", "%2E%2E%2Fadmin"),
        ("x/../../y", "x%2F%2E%2E%2F%2E%2E%2Fy"),
        ("?a=b#c", "%3Fa%3Db%23c"),
        ("http://evil:1/", "http%3A%2F%2Fevil%3A1%2F"),
        ("%2e%2e", "%252e%252e"),
        ("...", "%2E%2E%2E"),
        ("a\\b", "a%5Cb"),
        ("é", "%C3%A9"),
    ];
    for (value, encoded) in cases {
        run(&h, json!({"id": value, "q": value})).await.unwrap();
        let s = srv.seen().pop().unwrap();
        assert_eq!(
            s.target,
            format!("/api/items/{encoded}/view?q={encoded}"),
            "value {value:?}"
        );
    }
    let n = srv.seen().len();
    assert_eq!(n, cases.len());

    // values that would make the segment '.', '..' or empty are refused before anything is sent
    for value in [".", "..", ""] {
        let p = json!({"id": value, "q": "x"});
        let inv = h.validate(&p).unwrap_err();
        assert_eq!(inv.details.len(), 1, "{value:?}: {inv:?}");
        assert_eq!(inv.details[0].path, "/id");
        failed(run(&h, p).await, "invalid_payload");
    }
    assert_eq!(srv.seen().len(), n, "a refused payload reached the server");
}

#[tokio::test]
async fn a_refused_connection_is_connect_failed() {
    let addr = closed_port().await;
    let h = build(json!({"url": format!("http://{addr}/x")}));
    let e = failed(run(&h, json!({})).await, "http_connect_failed");
    assert!(e.message.contains("nothing was sent"), "{e:?}");
    assert!(e.message.contains(&addr.to_string()), "{e:?}");
}

#[tokio::test]
async fn cancellation_in_flight_is_outcome_unknown_at_once() {
    let srv = server(Behave::Never).await;
    let h = build_in(
        json!({"url": srv.url("/")}),
        Path::new("/"),
        Duration::from_secs(30),
    )
    .unwrap();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.cancel();
    });
    let started = Instant::now();
    let e = failed(run_with(&h, &json!({}), cancel).await, "outcome_unknown");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(e.message.contains("cancelled"), "{e:?}");
    assert_eq!(srv.seen().len(), 1);

    // cancelled before it starts: nothing is sent, and that is a plain failure
    let cancel = CancellationToken::new();
    cancel.cancel();
    failed(run_with(&h, &json!({}), cancel).await, "http_cancelled");
    assert_eq!(srv.seen().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Secrets

#[tokio::test]
async fn header_secrets_reach_the_server_and_nothing_else() {
    init_env();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("key.txt"),
        format!("{SECRET_FILE_VALUE}\r\n"),
    )
    .unwrap();
    let literal = "literal-secret-0c9e";
    let headers = json!({
        "Authorization": {"env": SECRET_ENV},
        "X-Key": {"file": "key.txt"},
        "X-Literal": literal,
    });
    let secrets = [
        SECRET_ENV_VALUE,
        "env-secret-9b41c2",
        SECRET_FILE_VALUE,
        literal,
    ];
    let clean = |what: &str, text: &str| {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows a secret: {text}");
        }
    };

    let srv = server(Behave::Answer(500, "text/plain", "no".into())).await;
    let h = build_in(
        json!({"url": srv.url("/p?x={x}"), "headers": headers.clone()}),
        dir.path(),
        Duration::from_secs(10),
    )
    .unwrap();
    let debug = format!("{h:?}");
    clean("Debug of the action", &debug);
    assert!(debug.contains("[redacted]"), "{debug}");
    assert!(
        debug.contains(SECRET_ENV),
        "the source is shown, not the value: {debug}"
    );
    clean("Debug of the headers", &format!("{:?}", h.headers()));
    for hd in h.headers() {
        assert_eq!(hd.value.to_string(), "[redacted]");
    }
    let e = failed(run(&h, json!({"x": 1})).await, "http_status");
    clean("an http_status error", &format!("{e} {e:?}"));
    let s = &srv.seen()[0];
    assert_eq!(s.headers["authorization"], SECRET_ENV_VALUE);
    assert_eq!(s.headers["x-key"], SECRET_FILE_VALUE);
    assert_eq!(s.headers["x-literal"], literal);

    // nor in a connect failure, a timeout, or an invalid payload
    let addr = closed_port().await;
    let h = build_in(
        json!({"url": format!("http://{addr}/p?x={{x}}"), "headers": headers.clone()}),
        dir.path(),
        Duration::from_secs(10),
    )
    .unwrap();
    let e = failed(run(&h, json!({"x": 1})).await, "http_connect_failed");
    clean("an http_connect_failed error", &format!("{e} {e:?}"));
    let e = failed(run(&h, json!({"x": [1]})).await, "invalid_payload");
    clean("an invalid_payload error", &format!("{e} {e:?}"));
    let never = server(Behave::Never).await;
    let h = build_in(
        json!({"url": never.url("/"), "headers": headers.clone()}),
        dir.path(),
        Duration::from_millis(200),
    )
    .unwrap();
    let e = failed(run(&h, json!({})).await, "outcome_unknown");
    clean("an outcome_unknown error", &format!("{e} {e:?}"));

    // nor in a start-up error about a bad value
    let bad_env = |name: &str| {
        (name == "BAD_TOKEN").then(|| std::ffi::OsString::from("line1-secret\nline2-secret"))
    };
    let settings =
        json!({"url": "http://127.0.0.1:1/", "headers": {"Authorization": {"env": "BAD_TOKEN"}}});
    let e = HttpAction::with_env(
        &spec_in(&settings, dir.path(), Duration::from_secs(1)),
        &bad_env,
    )
    .unwrap_err();
    assert!(
        e.starts_with("headers.Authorization: the value of environment variable BAD_TOKEN"),
        "{e}"
    );
    assert!(!e.contains("secret"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Settings

#[test]
fn bad_settings_refuse_to_build_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"url": "http://{host}/x"}), "url: a {field} slot is allowed only in the path and the query"),
        (json!({"url": "http://127.0.0.1:{port}/x"}), "url: a {field} slot is allowed only"),
        (json!({"url": "{scheme}://127.0.0.1/x"}), "url: a {field} slot is allowed only"),
        (json!({"url": "ftp://127.0.0.1/x"}), "url: scheme 'ftp' is not allowed"),
        (json!({"url": "file:///etc/passwd"}), "url: scheme 'file' is not allowed"),
        (json!({"url": "http://user:pw@127.0.0.1/x"}), "url: user information"),
        (json!({"url": "http://127.0.0.1/x#frag"}), "url: a fragment"),
        (json!({"url": "http://127.0.0.1/a/../b"}), "url: write the path and query exactly"),
        (json!({"url": "http://127.0.0.1/{a"}), "url: path: a '{' at character"),
        (json!({"url": 5}), "url: expected a string"),
        (json!({"method": "GET"}), "missing field `url`"),
        (json!({"url": "http://127.0.0.1/", "bogus": 1}), "unknown field `bogus`"),
        (json!({"url": "http://127.0.0.1/", "timeout_ms": 5}), "unknown field `timeout_ms`"),
        (json!({"url": "http://127.0.0.1/", "method": "get"}), "method: 'get' is not one of"),
        (json!({"url": "http://127.0.0.1/", "method": "TRACE"}), "method: 'TRACE'"),
        (json!({"url": "http://127.0.0.1/", "max_response_bytes": 0}), "max_response_bytes: 0"),
        (json!({"url": "http://127.0.0.1/", "max_response_bytes": "1k"}), "max_response_bytes: expected"),
        (json!({"url": "http://127.0.0.1/", "headers": {"Bad Name": "v"}}), "headers.Bad Name: 'Bad Name' is not a valid header name"),
        (json!({"url": "http://127.0.0.1/", "headers": {"X-A": "a\u{1}b"}}), "headers.X-A: the literal value is not a valid header value"),
        (json!({"url": "http://127.0.0.1/", "headers": {"Host": "evil"}}), "headers.Host: the Host header is managed"),
        (json!({"url": "http://127.0.0.1/", "headers": {"X-A": "1", "x-a": "2"}}), "configured twice"),
        (json!({"url": "http://127.0.0.1/", "headers": {"X-A": 5}}), "headers.X-A: expected \"literal\""),
        (json!({"url": "http://127.0.0.1/", "headers": {"X-A": {"env": "A", "file": "b"}}}), "headers.X-A: expected"),
        (json!({"url": "http://127.0.0.1/", "headers": {"X-A": {"value": "v"}}}), "headers.X-A: expected"),
        (json!({"url": "http://127.0.0.1/", "headers": {"Authorization": {"env": "OPENEXEC_HTTP_TEST_SURELY_UNSET_5c1e"}}}),
            "headers.Authorization: environment variable OPENEXEC_HTTP_TEST_SURELY_UNSET_5c1e is not set"),
        (json!({"url": "http://127.0.0.1/", "headers": {"X-Key": {"file": "missing.txt"}}}), "headers.X-Key: cannot read file "),
        (json!({"url": "http://127.0.0.1/", "headers": "Authorization: x"}), "headers: expected a table"),
        (json!({"url": "http://127.0.0.1/", "body_template": {"a": "{x"}}), "body_template/a: "),
        (json!("http://127.0.0.1/"), "the [actions.act.http] table"),
    ];
    for (settings, want) in cases {
        let e = build_in(settings.clone(), dir.path(), Duration::from_secs(1))
            .expect_err(&format!("{settings} should be refused"));
        assert!(e.contains(want), "{settings}: got {e:?}, want {want:?}");
    }
    // the file is looked for next to the registry file, and named in full
    let e = build_in(
        json!({"url": "http://127.0.0.1/", "headers": {"X-Key": {"file": "missing.txt"}}}),
        dir.path(),
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(
        e.contains(&dir.path().join("missing.txt").display().to_string()),
        "{e}"
    );
    // an empty file or variable is refused too
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let e = build_in(
        json!({"url": "http://127.0.0.1/", "headers": {"X-Key": {"file": "empty"}}}),
        dir.path(),
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(
        e.starts_with("headers.X-Key: file ") && e.ends_with(" is empty"),
        "{e}"
    );
}

#[test]
fn the_kind_builds_a_handler_that_describes_itself() {
    assert_eq!(HttpKind.name(), "http");
    assert!(HttpKind.default_effects(&json!({})));
    let settings = json!({"url": "http://127.0.0.1:9000/charge/{id}?c={cur}", "body_template": {"a": "{amount}", "m": "for {who}"}});
    let spec = Spec {
        action: "charge",
        settings: &settings,
        base_dir: Path::new("/"),
        timeout: Duration::from_millis(5000),
        effects: true,
        digest: DIGEST,
    };
    let h = HttpKind.build(&spec).unwrap();
    assert_eq!(h.name(), "http:charge");
    assert_eq!(h.kind(), "http");
    assert_eq!(h.digest(), DIGEST);
    assert!(h.effects());
    assert_eq!(h.timeout(), Duration::from_millis(5000));
    assert_eq!(h.destinations(), ["http://127.0.0.1:9000"]);
    let h2 = HttpKind
        .build(&Spec {
            settings: &json!({"url": "https://Example.org/x"}),
            ..spec.clone()
        })
        .unwrap();
    assert_eq!(h2.destinations(), ["https://example.org:443"]);

    // validate: one violation per field the url or template needs
    let ok = json!({"id": "c1", "cur": "EUR", "amount": {"v": 5}, "who": true});
    assert_eq!(h.validate(&ok), Ok(()));
    let inv = h
        .validate(&json!({"id": {"x": 1}, "cur": null, "who": [1]}))
        .unwrap_err();
    let got: Vec<(&str, &str)> = inv
        .details
        .iter()
        .map(|v| (v.path.as_str(), v.rule.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("/amount", "required"),
            ("/cur", "type"),
            ("/id", "type"),
            ("/who", "type")
        ]
    );
    for v in &inv.details {
        assert!(v.message.contains(&format!("'{}'", &v.path[1..])), "{v:?}");
    }
    let inv = h.validate(&json!([1])).unwrap_err();
    assert_eq!(inv.details.len(), 1);
    assert_eq!(
        (inv.details[0].path.as_str(), inv.details[0].rule.as_str()),
        ("", "type")
    );
    // without slots, any payload will do (it is the body)
    let plain = HttpKind
        .build(&Spec {
            settings: &json!({"url": "http://127.0.0.1:1/"}),
            ..spec
        })
        .unwrap();
    assert_eq!(plain.validate(&json!([1, "x"])), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// TLS

// A self-signed P-256 certificate for 127.0.0.1 and localhost, valid until 2126, and its key
// (test-only, trusted by nothing), made with:
//   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500 \
//     -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
//     -addext basicConstraints=critical,CA:FALSE -keyout key.pem -out cert.pem
//   openssl x509 -in cert.pem -outform DER -out self-signed-cert.der
//   openssl pkcs8 -topk8 -nocrypt -in key.pem -outform DER -out self-signed-key.der
const CERT: &[u8] = include_bytes!("fixtures/self-signed-cert.der");
const KEY: &[u8] = include_bytes!("fixtures/self-signed-key.der");

#[tokio::test]
async fn https_verifies_certificates() {
    use tokio_rustls::rustls::{self, pki_types};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki_types::CertificateDer::from(CERT.to_vec())],
            pki_types::PrivateKeyDer::Pkcs8(pki_types::PrivatePkcs8KeyDer::from(KEY.to_vec())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(Mutex::new(Vec::<Result<(), String>>::new()));
    let hs = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let r = match acceptor.accept(sock).await {
                Ok(mut tls) => {
                    // answer any request with a JSON body, so a client that got through succeeds
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            };
            hs.lock().unwrap().push(r);
        }
    });

    // The control: a client that trusts this certificate completes the handshake, so the
    // listener is a working TLS server.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pki_types::CertificateDer::from(CERT.to_vec()))
        .unwrap();
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("the control handshake");
    tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    // The handler does not trust a self-signed certificate: nothing is sent.
    let h = build(json!({"url": format!("https://127.0.0.1:{}/pay", addr.port())}));
    assert_eq!(
        h.destinations(),
        [format!("https://127.0.0.1:{}", addr.port())]
    );
    let e = failed(run(&h, json!({"amount": 1})).await, "http_connect_failed");
    assert!(e.message.to_lowercase().contains("certificate"), "{e:?}");
    // the server saw the control's handshake succeed and the handler's fail
    let mut waited = 0;
    while handshakes.lock().unwrap().len() < 2 && waited < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    let hs = handshakes.lock().unwrap().clone();
    assert_eq!(hs.len(), 2, "{hs:?}");
    assert!(hs[0].is_ok(), "{hs:?}");
    assert!(
        hs[1].is_err(),
        "the handler completed a handshake with an untrusted server: {hs:?}"
    );
}
