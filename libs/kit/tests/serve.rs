//! `serve` and the guard in-process, over real loopback sockets: each limit closes what it
//! should, when it should, and leaves well-behaved clients alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::{get, post};
use axum::Router;
use openexec_kit::{serve, GuardConfig, HttpLimits};
use openexec_testkit::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

fn started() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// Poll until `counter` reaches `n` (at most 5 s).
async fn wait_started(counter: &AtomicUsize, n: usize) {
    eventually(
        Duration::from_secs(5),
        "the requests reach their handler",
        || async { (counter.load(Ordering::SeqCst) >= n).then_some(()) },
    )
    .await;
}

fn app() -> Router {
    app_counting(started())
}

fn app_counting(counter: Arc<AtomicUsize>) -> Router {
    let hang = counter.clone();
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/echo",
            post(|body: Bytes| async move { format!("got {} bytes", body.len()) }),
        )
        .route(
            "/slow",
            get(move || async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(800)).await;
                "slow done"
            }),
        )
        .route(
            "/hang",
            get(move || async move {
                hang.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(60)).await;
                "never"
            }),
        )
}

struct Running {
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

async fn start(limits: HttpLimits, router: Router) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(serve(listener, router, limits, async {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        done,
    }
}

fn limits() -> HttpLimits {
    HttpLimits {
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(700),
        idle_timeout: Duration::from_millis(900),
        max_connections: 64,
        shutdown_grace: Duration::from_millis(600),
    }
}

/// Read until the server closes (EOF or reset); what was read and when it closed. Panics after
/// `within`.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> (String, Duration) {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(t0 + within, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into(), t0.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {within:?}; read so far: {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// One request on a fresh connection; the whole answer.
async fn get_once(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    read_to_close(&mut s, Duration::from_secs(5)).await.0
}

#[tokio::test]
async fn a_partial_head_is_closed_at_the_header_timeout() {
    let r = start(limits(), app()).await;
    let mut s = TcpStream::connect(&r.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (got, after) = read_to_close(&mut s, Duration::from_secs(3)).await;
    assert_eq!(got, "", "no answer to half a request");
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_millis(1500),
        "{after:?}"
    );
    assert!(get_once(&r.addr, "/health").await.ends_with("ok"));
}

#[tokio::test]
async fn a_trickled_body_gets_408_at_the_body_timeout() {
    let r = start(limits(), app()).await;
    let mut s = TcpStream::connect(&r.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if wr.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no answer: {}", String::from_utf8_lossy(&got)),
        }
    }
    trickle.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"body_timeout""#), "{text}");
    assert!(text.contains(r#""detail":"#), "{text}");
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    // A body sent at once is fine.
    let mut s = TcpStream::connect(&r.addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .await
    .unwrap();
    let (got, _) = read_to_close(&mut s, Duration::from_secs(3)).await;
    assert!(got.ends_with("got 3 bytes"), "{got}");
}

#[tokio::test]
async fn keep_alive_lasts_the_idle_timeout_not_the_header_timeout() {
    let r = start(limits(), app()).await;
    let mut s = TcpStream::connect(&r.addr).await.unwrap();
    let req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = [0u8; 4096];
    // Two requests 700 ms apart: longer than the header timeout, shorter than the idle one.
    for _ in 0..2 {
        s.write_all(req).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("ok"));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // Then idle: closed 900 ms after the last answer (700 ms of it gone already).
    let (_, after) = read_to_close(&mut s, Duration::from_secs(3)).await;
    assert!(after < Duration::from_millis(800), "{after:?}");
}

#[tokio::test]
async fn at_the_connection_limit_the_longest_waiting_idle_connection_makes_room() {
    let r = start(
        HttpLimits {
            max_connections: 8,
            header_timeout: Duration::from_secs(30),
            ..limits()
        },
        app(),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(&r.addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    // A new client is served at once.
    let t0 = Instant::now();
    assert!(get_once(&r.addr, "/health").await.ends_with("ok"));
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // And at most 8 of the partial ones are still open, the newest ones.
    let mut open = 0;
    for s in &mut held {
        let mut b = [0u8; 16];
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await {
            Err(_) => open += 1,
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(_)) => panic!("an answer to half a request"),
        }
    }
    assert!(open <= 8, "{open} held open");
}

#[tokio::test]
async fn busy_connections_are_not_reclaimed_and_accepting_waits() {
    let n = started();
    let r = start(
        HttpLimits {
            max_connections: 2,
            ..limits()
        },
        app_counting(n.clone()),
    )
    .await;
    let a = tokio::spawn(get_once_owned(r.addr.clone(), "/slow"));
    let b = tokio::spawn(get_once_owned(r.addr.clone(), "/slow"));
    wait_started(&n, 2).await;
    let t0 = Instant::now();
    assert!(get_once(&r.addr, "/health").await.ends_with("ok"));
    // Waited for a slow one to finish rather than cutting it off.
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    assert!(a.await.unwrap().ends_with("slow done"));
    assert!(b.await.unwrap().ends_with("slow done"));
}

async fn get_once_owned(addr: String, path: &'static str) -> String {
    get_once(&addr, path).await
}

#[tokio::test]
async fn shutdown_closes_what_serves_no_request_and_finishes_the_rest() {
    let grace = HttpLimits {
        shutdown_grace: Duration::from_secs(2),
        ..limits()
    };
    let n = started();
    let mut r = start(grace, app_counting(n.clone())).await;
    // A partial head and an idle keep-alive connection (both closed at once), a slow request
    // (finishes within the grace).
    let mut head = TcpStream::connect(&r.addr).await.unwrap();
    head.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let mut idle = TcpStream::connect(&r.addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let _ = idle.read(&mut buf).await.unwrap();
    let slow = tokio::spawn(get_once_owned(r.addr.clone(), "/slow"));
    wait_started(&n, 1).await;

    let t0 = Instant::now();
    r.stop.take().unwrap().send(()).unwrap();
    let (_, h) = read_to_close(&mut head, Duration::from_secs(2)).await;
    let (_, i) = read_to_close(&mut idle, Duration::from_secs(2)).await;
    assert!(h < Duration::from_millis(200), "{h:?}");
    assert!(i < Duration::from_millis(200), "{i:?}");
    assert!(slow.await.unwrap().ends_with("slow done"));
    tokio::time::timeout(Duration::from_secs(2), r.done)
        .await
        .expect("serve returned")
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // The listener is closed.
    assert!(TcpStream::connect(&r.addr).await.is_err());
}

#[tokio::test]
async fn shutdown_grace_bounds_a_request_held_open() {
    let n = started();
    let mut r = start(limits(), app_counting(n.clone())).await;
    let mut s = TcpStream::connect(&r.addr).await.unwrap();
    s.write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    wait_started(&n, 1).await;
    let t0 = Instant::now();
    r.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(3), r.done)
        .await
        .expect("serve returned within the grace")
        .unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let (got, _) = read_to_close(&mut s, Duration::from_secs(1)).await;
    assert_eq!(got, "");
}

#[tokio::test]
async fn the_guard_covers_every_route_and_the_fallback() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let guard = GuardConfig::defaults("TEST").for_addr(addr);
    let router = guard.apply(app());
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, router, limits(), async {
        let _ = rx.await;
    }));
    let addr = addr.to_string();
    for (path, method) in [
        ("/health", "GET"),
        ("/nowhere", "GET"),
        ("/health", "DELETE"),
    ] {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let (got, _) = read_to_close(&mut s, Duration::from_secs(2)).await;
        assert!(got.starts_with("HTTP/1.1 403"), "{method} {path}: {got}");
        assert!(got.contains(r#""code":"host_not_allowed""#), "{got}");
    }
    assert!(get_once(&addr, "/health").await.ends_with("ok"));
}
