//! Slow, idle, numerous and foreign clients against the real `openexec serve` and
//! `openexec ledger serve` processes (openexec-kit's `serve` and guard): partial headers and
//! trickled bodies are cut off at their timeouts, idle keep-alive connections at theirs, a flood
//! of connections (beyond the connection limit, or beyond the process's file descriptors) does
//! not stop `/health` and `/execute` from answering, SIGTERM ends in bounded time with requests
//! held open, and requests naming a foreign Host or Origin (DNS rebinding, cross-site pages) are
//! refused before any handler runs.

mod common;

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use openexec_testkit::eventually;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Slack on every timing bound: the machine is shared and the suite runs in parallel.
const MARGIN: Duration = Duration::from_secs(2);

/// A partial request head, as a slowloris client sends it.
const PARTIAL_HEAD: &[u8] =
    b"POST /execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn echo_body(nonce: &str) -> Value {
    json!({"action": "echo", "payload": {"m": 1}, "nonce": nonce})
}

/// A client that opens a new connection for every request: what a new client gets.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `GET /health` and `POST /execute` (demo mode) from a new client each answer 200 within
/// `within`.
async fn assert_served(base: &str, within: Duration, when: &str) {
    let c = fresh_client();
    let t0 = Instant::now();
    let r = c.get(format!("{base}/health")).send().await;
    let took = t0.elapsed();
    let st = r.map(|r| r.status().as_u16());
    assert!(
        matches!(st, Ok(200)) && took < within,
        "{when}: GET /health gave {st:?} after {took:?} (wanted 200 within {within:?})"
    );
    let t0 = Instant::now();
    let r = c
        .post(format!("{base}/execute"))
        .header("content-type", "application/json")
        .body(echo_body(&unique("served")).to_string())
        .send()
        .await;
    let took = t0.elapsed();
    let st = r.map(|r| r.status().as_u16());
    assert!(
        matches!(st, Ok(200)) && took < within,
        "{when}: POST /execute gave {st:?} after {took:?} (wanted 200 within {within:?})"
    );
}

/// An answer read off a raw connection.
struct Reply {
    status: u16,
    /// Status line and headers, header names lower-cased.
    head: String,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == name).then(|| v.trim())
        })
    }
}

fn parse_reply(got: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(got);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let head: String = head
        .lines()
        .map(|l| match l.split_once(':') {
            Some((k, v)) => format!("{}:{v}\n", k.to_ascii_lowercase()),
            None => format!("{l}\n"),
        })
        .collect();
    let len = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    })?;
    if body.len() < len {
        return None;
    }
    let body = serde_json::from_str(&body[..len]).unwrap_or(Value::String(body[..len].into()));
    Some(Reply { status, head, body })
}

/// Read one complete answer (with a Content-Length) from `rd`, at most `within`.
async fn read_reply(rd: &mut (impl AsyncReadExt + Unpin), within: Duration) -> Reply {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(r) = parse_reply(&got) {
            return r;
        }
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => panic!(
                "connection closed before a whole answer: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "no whole answer within {within:?}: {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// Send `request` on a new connection and read the answer.
async fn exchange(addr: &str, request: String) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    read_reply(&mut s, Duration::from_secs(20)).await
}

/// A POST with these extra header lines (each `Name: value`).
fn post(path: &str, host: &str, extra: &[&str], body: &str) -> String {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in extra {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body);
    r
}

/// Wait until the server closes `rd` (EOF or reset): how long it took. Panics if any bytes
/// arrive or it is still open after `give_up`.
async fn closed_within(rd: &mut (impl AsyncReadExt + Unpin), give_up: Duration) -> Duration {
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(give_up, rd.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => t0.elapsed(),
        Ok(Ok(n)) => panic!(
            "an answer where none was due: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(_) => panic!("the connection is still open after {give_up:?}"),
    }
}

/// A slowloris client: sends `head` one byte every `gap`, then header padding forever, and never
/// ends its headers. How long until the server closed the connection.
async fn slowloris(addr: String, gap: Duration, give_up: Duration) -> Duration {
    let stream = TcpStream::connect(&addr).await.unwrap();
    let t0 = Instant::now();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let pad = b"X-Pad: 1\r\n";
        for b in PARTIAL_HEAD.iter().chain(pad.iter().cycle()) {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(gap).await;
        }
    });
    closed_within(&mut rd, give_up).await;
    writer.abort();
    t0.elapsed()
}

/// `n` connections (blocking sockets, then non-blocking) that each sent `partial` and wait.
fn flood(addr: &str, n: usize, partial: &[u8]) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(addr)
                .unwrap_or_else(|e| panic!("connection {i} of the flood: {e}"));
            // The server may already have closed it (reclaimed): a failed write is fine.
            let _ = s.write_all(partial);
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect()
}

/// How many of `conns` the server still holds open (no EOF, no reset).
fn still_open(conns: &[std::net::TcpStream]) -> usize {
    conns
        .iter()
        .filter(|s| {
            let mut b = [0u8; 64];
            match s.peek(&mut b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                Ok(0) | Err(_) => false,
                Ok(_) => panic!("an answer to a partial request"),
            }
        })
        .count()
}

/// Poll `still_open(conns)` until it is at most `n`; panics with `what` after `within`.
async fn wait_open_at_most(conns: &[std::net::TcpStream], n: usize, within: Duration, what: &str) {
    let seen = Seen::default();
    let _context = OnPanic(|| format!("{what}: {seen} connections still open"));
    let awaited = format!("{what}: at most {n} connections open");
    eventually(within, &awaited, || async {
        let open = still_open(conns);
        seen.set(open);
        (open <= n).then_some(())
    })
    .await;
}

/// The sockets a process holds (its listening socket included).
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/<pid>/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().starts_with("socket:"))
        .count()
}

fn accept_errors(log: &str) -> usize {
    log.lines().filter(|l| l.contains("accept error")).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_heads_and_trickled_bodies_are_cut_off_while_others_are_served() {
    let header = Duration::from_millis(1000);
    let body = Duration::from_millis(2500);
    let s = Server::start(&[
        ("OPENEXEC_HEADER_TIMEOUT_MS", "1000"),
        ("OPENEXEC_BODY_TIMEOUT_MS", "2500"),
    ]);
    let addr = s.addr();

    // 20 clients sending their headers one byte every 100 ms, forever.
    let lorises: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(slowloris(
                addr.clone(),
                Duration::from_millis(100),
                Duration::from_secs(20),
            ))
        })
        .collect();

    // A body trickled one byte a second: each gap is well inside the body timeout, the whole
    // is not. It must get a 408 at the timeout, and the connection closed.
    let trickled = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let body = echo_body(&unique("trickled")).to_string();
            let stream = TcpStream::connect(&addr).await.unwrap();
            let (mut rd, mut wr) = stream.into_split();
            let head = format!(
                "POST /execute HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            wr.write_all(head.as_bytes()).await.unwrap();
            let t0 = Instant::now();
            let writer = tokio::spawn(async move {
                for b in body.bytes() {
                    if wr.write_all(&[b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                wr
            });
            let reply = read_reply(&mut rd, Duration::from_secs(20)).await;
            let answered = t0.elapsed();
            closed_within(&mut rd, Duration::from_secs(5)).await;
            writer.abort();
            (reply, answered)
        })
    };

    // Meanwhile new clients are served at once, several times over.
    for i in 0..5 {
        assert_served(&s.base, MARGIN, &format!("round {i} under slowloris")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for l in lorises {
        let took = l.await.unwrap();
        assert!(
            took < header + MARGIN,
            "a partial head was held {took:?} (header timeout {header:?})"
        );
    }
    let (reply, answered) = trickled.await.unwrap();
    assert_eq!(reply.status, 408, "{}", reply.body);
    assert_eq!(code(&reply.body), "body_timeout", "{}", reply.body);
    assert_eq!(
        detail(&reply.body),
        reply.body["error"]["message"].as_str().unwrap()
    );
    assert!(
        answered >= body - Duration::from_millis(200) && answered < body + MARGIN,
        "the trickled body was answered after {answered:?} (body timeout {body:?})"
    );
    // The trickled request never ran: 5 rounds, 5 echoes.
    assert_eq!(s.handler_runs("echo").await, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_header_flood_beyond_the_file_descriptors_leaves_the_service_answering() {
    // 256 descriptors, 300 connections: without reclaiming, accept fails with EMFILE and every
    // new client waits (forever: partial heads were never closed) — the reviewed failure.
    let s = Server::start_with_fd_limit(&[("OPENEXEC_HEADER_TIMEOUT_MS", "2000")], 256);
    let conns = flood(&s.addr(), 300, PARTIAL_HEAD);
    assert_served(
        &s.base,
        Duration::from_secs(2) + MARGIN,
        "300 partial heads, 256 descriptors",
    )
    .await;
    let log = s.log();
    let errors = accept_errors(&log);
    assert!(
        errors >= 1,
        "the flood did not exhaust the descriptors, so this test shows nothing; log:\n{log}"
    );
    assert!(
        errors <= 3,
        "accept errors are logged {errors} times (a spin?); log:\n{log}"
    );
    // And the partial heads are all closed by their timeout.
    wait_open_at_most(&conns, 0, Duration::from_secs(2) + MARGIN, "header timeout").await;
    assert_served(&s.base, MARGIN, "after the flood").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn more_connections_than_the_limit_are_never_held() {
    // A header timeout long enough not to matter here: only the limit closes connections.
    let s = Server::start(&[
        ("OPENEXEC_MAX_CONNECTIONS", "50"),
        ("OPENEXEC_HEADER_TIMEOUT_MS", "60000"),
    ]);
    let baseline = sockets(s.pid());
    let conns = flood(&s.addr(), 300, PARTIAL_HEAD);
    wait_open_at_most(&conns, 50, Duration::from_secs(10), "limit 50").await;
    let held = sockets(s.pid()).saturating_sub(baseline);
    // At most the limit, plus one accepted connection waiting for a slot.
    assert!(held <= 51, "{held} connections held (limit 50)");
    assert_served(&s.base, MARGIN, "300 partial heads, limit 50").await;
    assert!(still_open(&conns) <= 50);
    let held = sockets(s.pid()).saturating_sub(baseline);
    assert!(held <= 51, "{held} connections held (limit 50)");
    assert_eq!(accept_errors(&s.log()), 0, "{}", s.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // Idle 1.5 s, headers 5 s: the close must come from the idle timeout.
    let idle = Duration::from_millis(1500);
    let s = Server::start(&[
        ("OPENEXEC_IDLE_TIMEOUT_MS", "1500"),
        ("OPENEXEC_HEADER_TIMEOUT_MS", "5000"),
    ]);
    let mut c = TcpStream::connect(s.addr()).await.unwrap();
    let req = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr());
    for _ in 0..2 {
        // Kept alive between requests less than the idle timeout apart.
        c.write_all(req.as_bytes()).await.unwrap();
        let r = read_reply(&mut c, Duration::from_secs(5)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // 700 ms of the idle spell are gone.
    let took = closed_within(&mut c, Duration::from_secs(10)).await + Duration::from_millis(700);
    assert!(
        took >= idle - Duration::from_millis(200) && took < idle + MARGIN,
        "the idle connection was closed after {took:?} (idle timeout {idle:?})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_requests_held_open_exits_within_the_grace() {
    let grace = Duration::from_millis(2000);
    // Timeouts far beyond the grace: only the grace can end these connections.
    let mut s = Server::start(&[
        ("OPENEXEC_SHUTDOWN_GRACE_MS", "2000"),
        ("OPENEXEC_HEADER_TIMEOUT_MS", "60000"),
        ("OPENEXEC_BODY_TIMEOUT_MS", "60000"),
        ("OPENEXEC_IDLE_TIMEOUT_MS", "60000"),
    ]);
    let addr = s.addr();
    // A partial head.
    let mut head = TcpStream::connect(&addr).await.unwrap();
    head.write_all(PARTIAL_HEAD).await.unwrap();
    // An idle keep-alive connection.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_reply(&mut idle, Duration::from_secs(5)).await.status,
        200
    );
    // A request whose handler is reading a body that never ends: the 100 Continue says the
    // server is reading it.
    let mut busy = TcpStream::connect(&addr).await.unwrap();
    busy.write_all(
        format!(
            "POST /execute HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), busy.read(&mut buf))
        .await
        .expect("100 Continue")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    busy.write_all(b"{\"action\": \"echo\"").await.unwrap();

    let t0 = Instant::now();
    let status = s.term();
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status}; log:\n{}", s.log());
    assert!(
        took < grace + MARGIN,
        "SIGTERM took {took:?} with requests held open (grace {grace:?})"
    );
    for c in [&mut head, &mut idle, &mut busy] {
        closed_within(c, Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_hosts_and_cross_site_requests_are_refused_before_anything_runs() {
    let s = Server::start(&[]);
    let addr = s.addr();
    let nonce = unique("rebind");
    let body = echo_body(&nonce).to_string();

    // DNS rebinding: the page's name in Host.
    let r = exchange(&addr, post("/execute", "evil.example", &[], &body)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(code(&r.body), "host_not_allowed", "{}", r.body);
    assert_eq!(
        detail(&r.body),
        r.body["error"]["message"].as_str().unwrap()
    );
    let r = exchange(
        &addr,
        post(
            "/execute",
            "evil.example:5000",
            &["Origin: http://evil.example:5000"],
            &body,
        ),
    )
    .await;
    assert_eq!(
        (r.status, code(&r.body)),
        (403, "host_not_allowed"),
        "{}",
        r.body
    );
    // Cross-site: our Host, another page's Origin; or the browser's Sec-Fetch-Site.
    for extra in [
        vec!["Origin: http://evil.example"],
        vec!["Origin: null"],
        vec!["Sec-Fetch-Site: cross-site"],
        vec!["Origin: http://localhost:1"],
    ] {
        let r = exchange(&addr, post("/execute", &addr, &extra, &body)).await;
        assert_eq!(
            (r.status, code(&r.body)),
            (403, "origin_not_allowed"),
            "{extra:?}: {}",
            r.body
        );
    }
    // The preflight of a cross-origin fetch is refused the same way.
    let r = exchange(
        &addr,
        format!(
            "OPTIONS /execute HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(
        (r.status, code(&r.body)),
        (403, "origin_not_allowed"),
        "{}",
        r.body
    );
    assert!(r.header("access-control-allow-origin").is_none());
    // Every route is covered, unknown ones too.
    let r = exchange(
        &addr,
        "GET /health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".to_string(),
    )
    .await;
    assert_eq!((r.status, code(&r.body)), (403, "host_not_allowed"));
    let r = exchange(
        &addr,
        "GET /nowhere HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".to_string(),
    )
    .await;
    assert_eq!((r.status, code(&r.body)), (403, "host_not_allowed"));

    // Nothing ran and nothing was recorded for that request.
    let id = openexec_core::hash::request_hash("echo", &nonce, &json!({"m": 1}), "default");
    let (st, b) = s.get(&format!("/receipts/{id}")).await;
    assert_eq!(st, 404, "a receipt for a refused request: {b}");
    assert_eq!(s.handler_runs("echo").await, 0);

    // Our own names and origin are fine: loopback names on any port, same-origin pages.
    let port = addr.rsplit(':').next().unwrap();
    for (host, extra) in [
        (addr.clone(), vec![]),
        (format!("localhost:{port}"), vec![]),
        (format!("[::1]:{port}"), vec![]),
        (addr.clone(), vec![format!("Origin: http://{addr}")]),
        (
            addr.clone(),
            vec!["Sec-Fetch-Site: same-origin".to_string()],
        ),
    ] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let r = exchange(
            &addr,
            post(
                "/execute",
                &host,
                &extra,
                &echo_body(&unique("own")).to_string(),
            ),
        )
        .await;
        assert_eq!(r.status, 200, "Host {host} {extra:?}: {}", r.body);
    }
    // And so are ordinary clients (reqwest to 127.0.0.1).
    let (st, b) = s.execute(&echo_body(&unique("reqwest"))).await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s.get("/health").await;
    assert_eq!(st, 200, "{b}");
    // Exactly the 200s ran.
    assert_eq!(s.handler_runs("echo").await, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_hosts_and_origins_are_let_through() {
    let s = Server::start(&[
        ("OPENEXEC_ALLOWED_HOSTS", "evil.example, 127.0.0.1"),
        ("OPENEXEC_ALLOWED_ORIGINS", "http://evil.example"),
    ]);
    let addr = s.addr();
    let r = exchange(
        &addr,
        post(
            "/execute",
            "evil.example",
            &[],
            &echo_body(&unique("h")).to_string(),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = exchange(
        &addr,
        post(
            "/execute",
            &addr,
            &["Origin: http://evil.example", "Sec-Fetch-Site: cross-site"],
            &echo_body(&unique("o")).to_string(),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://evil.example")
    );
    // Its preflight is answered, for the browser to send the request.
    let r = exchange(
        &addr,
        format!(
            "OPTIONS /execute HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://evil.example")
    );
    assert!(
        r.header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST")),
        "{}",
        r.head
    );
    // Other origins still are not; the list replaces the loopback default.
    let r = exchange(
        &addr,
        post(
            "/execute",
            &addr,
            &["Origin: http://other.example"],
            &echo_body(&unique("x")).to_string(),
        ),
    )
    .await;
    assert_eq!((r.status, code(&r.body)), (403, "origin_not_allowed"));
    let r = exchange(
        &addr,
        post(
            "/execute",
            "localhost",
            &[],
            &echo_body(&unique("l")).to_string(),
        ),
    )
    .await;
    assert_eq!((r.status, code(&r.body)), (403, "host_not_allowed"));
    let (st, b) = s.execute(&echo_body(&unique("reqwest"))).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(s.handler_runs("echo").await, 3);
}

#[test]
fn bad_http_settings_stop_the_start_naming_the_setting() {
    for (k, v) in [
        ("OPENEXEC_HEADER_TIMEOUT_MS", "0"),
        ("OPENEXEC_MAX_CONNECTIONS", "0"),
        ("OPENEXEC_ALLOWED_ORIGINS", "evil.example"),
        ("OPENEXEC_ALLOWED_HOSTS", "bad host"),
    ] {
        let f = match Server::try_start(&[(k, v)]) {
            Ok(_) => panic!("{k}={v} was accepted"),
            Err(f) => f,
        };
        assert_eq!(
            f.status.and_then(|s| s.code()),
            Some(2),
            "{k}={v}: {}",
            f.log
        );
        assert!(f.log.contains(k), "{k}={v}: {}", f.log);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clawledger_cuts_off_slow_idle_and_surplus_clients_and_refuses_foreign_hosts() {
    let header = Duration::from_millis(1000);
    let idle = Duration::from_millis(1500);
    let l = LedgerServer::start(&[
        ("CLAWLEDGER_HEADER_TIMEOUT_MS", "1000"),
        ("CLAWLEDGER_IDLE_TIMEOUT_MS", "1500"),
        ("CLAWLEDGER_MAX_CONNECTIONS", "20"),
    ]);
    let addr = l.addr();
    let health = |within: Duration, when: &'static str| {
        let url = l.url("/health");
        async move {
            let t0 = Instant::now();
            let r = fresh_client().get(url).send().await;
            let took = t0.elapsed();
            let st = r.map(|r| r.status().as_u16());
            assert!(
                matches!(st, Ok(200)) && took < within,
                "{when}: GET /health gave {st:?} after {took:?}"
            );
        }
    };

    // A flood of partial heads, five times the limit: at most the limit is held, /health is
    // served at once, and the rest are closed by the header timeout.
    let conns = flood(&addr, 100, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    wait_open_at_most(&conns, 20, Duration::from_secs(5), "limit 20").await;
    health(MARGIN, "100 partial heads, limit 20").await;
    wait_open_at_most(&conns, 0, header + MARGIN, "header timeout").await;

    // A slowloris client.
    let took = slowloris(
        addr.clone(),
        Duration::from_millis(100),
        Duration::from_secs(20),
    )
    .await;
    assert!(took < header + MARGIN, "a partial head was held {took:?}");

    // An idle keep-alive connection.
    let mut c = TcpStream::connect(&addr).await.unwrap();
    c.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut c, Duration::from_secs(5)).await.status, 200);
    let took = closed_within(&mut c, Duration::from_secs(10)).await;
    assert!(
        took >= idle - Duration::from_millis(200) && took < idle + MARGIN,
        "idle connection closed after {took:?} (idle timeout {idle:?})"
    );

    // DNS rebinding.
    let r = exchange(
        &addr,
        "GET /health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".to_string(),
    )
    .await;
    assert_eq!(
        (r.status, code(&r.body)),
        (403, "host_not_allowed"),
        "{}",
        r.body
    );
    let r = exchange(
        &addr,
        format!("GET /alerts HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(
        (r.status, code(&r.body)),
        (403, "origin_not_allowed"),
        "{}",
        r.body
    );
    health(MARGIN, "at the end").await;
    assert_eq!(accept_errors(&l.log()), 0, "{}", l.log());
}
