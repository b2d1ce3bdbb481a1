//! Serving an axum [`Router`] over HTTP/1.1 so that slow, idle or numerous clients cannot hold
//! the service: [`serve`] under [`HttpLimits`].
//!
//! Every connection is in one of three phases, and its phase says how long it may stay:
//!
//! | phase | from | until | at most |
//! |---|---|---|---|
//! | *head* | accepted, or the first byte after an idle spell | the request's headers are complete | `header_timeout` |
//! | *busy* | the request is handed to the router | its response body is produced | no connection limit; the body must arrive within `body_timeout` |
//! | *idle* | the response is produced (keep-alive) | the next byte arrives | `idle_timeout` |
//!
//! Why not hyper's `header_read_timeout`: hyper starts that timer whenever it waits for a request
//! head, which includes the whole wait for the next request on a keep-alive connection
//! (`proto/h1/conn.rs`, `poll_read_head`, hyper 1.x), so it would also be the keep-alive idle
//! timeout, and a head trickled after an idle spell would get whatever was left of it. Here the
//! head clock starts at the accept or at the first byte of the next request, and the idle clock
//! is separate. Hyper still parses everything; the kit only watches the bytes go by and the
//! requests go in and out.
//!
//! Why not tower-http's `RequestBodyTimeoutLayer`: its timer restarts at every frame, so a body
//! trickled one byte every few seconds never times out. Here the body has one deadline,
//! `body_timeout` after its headers; past it, reading the body fails and the answer is a 408
//! `body_timeout` (with `Connection: close`), whatever the handler made of the failed read.
//!
//! When all `max_connections` slots are taken, the next accepted connection takes the slot of the
//! connection that has been in the *head* or *idle* phase the longest (which is closed): those
//! hold a slot without a request being served, so a new client (a health check) is served at
//! once instead of waiting in the kernel's accept queue behind the attacker's connections until
//! their timeouts free slots one batch at a time; shedding the new connection instead would
//! refuse exactly the clients we want to serve. Only when every slot serves a request does
//! accepting pause until one frees. The same reclaim runs when `accept` fails for want of file
//! descriptors (then accepting is retried after 1 ms); when nothing can be reclaimed, accepting
//! backs off (10 ms, doubling, at most 1 s). The error is logged at most every 10 s.
//!
//! On shutdown: the listener is closed at once; connections in the *head* or *idle* phase are
//! closed; those serving a request finish it (no keep-alive) and close; after `shutdown_grace`
//! whatever is left is dropped, so the stop takes bounded time even with a client holding a
//! request open. A handler that must outlive its connection (OpenExec's claimed executions) runs
//! in a task of its own, which dropping the connection does not cancel.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, sleep_until, Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long and how many: the limits [`serve`] holds every client to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must be complete this long after the connection was accepted, or
    /// after the first byte following an idle keep-alive spell; else the connection is closed
    /// (no answer: there is no request to answer). Default 10 s.
    pub header_timeout: Duration,
    /// A request's body must be complete this long after its headers; else reading it fails and
    /// the answer is a 408 `body_timeout` with `Connection: close`. Default 30 s (1 MiB at
    /// 35 KB/s).
    pub body_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed. Default 60 s (clients'
    /// pools and load balancers should drop idle connections sooner, as usual).
    pub idle_timeout: Duration,
    /// Most connections served at once. Default 1024. Keep it below the process's file
    /// descriptor limit (`ulimit -n`) minus what the service itself needs; when descriptors run
    /// out first, idle and head-phase connections are reclaimed as when the limit is reached.
    pub max_connections: usize,
    /// After the shutdown signal, how long requests being served may take to finish before
    /// their connections are dropped. Default 15 s.
    pub shutdown_grace: Duration,
}

impl HttpLimits {
    /// The defaults: headers 10 s, body 30 s, idle 60 s, 1024 connections, grace 15 s.
    pub const DEFAULT: HttpLimits = HttpLimits {
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        max_connections: 1024,
        shutdown_grace: Duration::from_secs(15),
    };
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::DEFAULT
    }
}

/// Accepting backs off this long after a first failure...
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// ...doubling up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// An accept error is logged at most this often (with the count of those not logged).
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// After reclaiming a connection for its file descriptor, accept again this soon.
const RECLAIMED_RETRY: Duration = Duration::from_millis(1);
/// While every slot is busy, look again for one to reclaim this often.
const RECLAIM_RETRY: Duration = Duration::from_millis(50);

/// Serve `router` on `listener` under `limits` until `shutdown` resolves; then stop accepting,
/// let the requests being served finish for at most `limits.shutdown_grace`, drop what is left,
/// and return. Never fails: accept errors are logged and retried (see the module docs).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let server = Arc::new(Server {
        limits,
        conns: Mutex::new(HashMap::new()),
        stopping: CancellationToken::new(),
        hard_stop: CancellationToken::new(),
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tasks = TaskTracker::new();
    let mut errors = AcceptErrors::default();
    let mut next_id: u64 = 0;
    tokio::pin!(shutdown);

    'accept: loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                errors.succeeded();
                stream
            }
            // The client gave up before we took its connection: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Most likely out of file descriptors (EMFILE/ENFILE): the pending connection
                // stays in the kernel's queue. Free a descriptor if a connection holds one
                // without serving a request, and try again shortly.
                let mut wait = errors.failed(&e);
                if server.reclaim_one() {
                    // The reclaimed connection's task closes its socket at its next turn.
                    wait = wait.min(RECLAIMED_RETRY);
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = sleep(wait) => continue,
                }
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => loop {
                // Full: take the slot of the connection that has waited longest without a
                // request; if every slot serves one, wait for the first to finish.
                server.reclaim_one();
                tokio::select! {
                    biased;
                    () = &mut shutdown => break 'accept,
                    p = slots.clone().acquire_owned() => {
                        break p.expect("the semaphore is never closed");
                    }
                    () = sleep(RECLAIM_RETRY) => {}
                }
            },
        };
        next_id += 1;
        let conn = Arc::new(Conn::new());
        server.lock_conns().insert(next_id, conn.clone());
        let registered = Registered {
            server: server.clone(),
            id: next_id,
            _slot: permit,
        };
        tasks.spawn(serve_connection(stream, router.clone(), conn, registered));
    }

    drop(listener);
    server.stopping.cancel();
    tasks.close();
    if tokio::time::timeout(limits.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = tasks.len(),
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "shutdown grace is over: dropping the connections still open"
        );
        server.hard_stop.cancel();
        tasks.wait().await;
    }
}

/// What the accept loop and the connection tasks share.
struct Server {
    limits: HttpLimits,
    /// Every connection being served, by id (for reclaiming slots).
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Set when shutdown starts: close what serves no request, finish the rest.
    stopping: CancellationToken,
    /// Set when the grace is over: drop everything.
    hard_stop: CancellationToken,
}

impl Server {
    fn lock_conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask the connection that has been in the head or idle phase the longest to close; false
    /// when every connection is serving a request (or already asked).
    fn reclaim_one(&self) -> bool {
        let conns = self.lock_conns();
        let victim = conns
            .values()
            .filter(|c| !c.reclaim.load(Ordering::Relaxed))
            .filter_map(|c| match c.phase() {
                (Phase::Busy, _) => None,
                (_, since) => Some((since, c)),
            })
            .min_by_key(|(since, _)| *since);
        match victim {
            Some((_, c)) => {
                c.reclaim.store(true, Ordering::Relaxed);
                c.wake.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection's registration: removed, and its slot freed, when its task ends however it ends.
struct Registered {
    server: Arc<Server>,
    id: u64,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.server.lock_conns().remove(&self.id);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request's headers.
    Head,
    /// A request is with the router, or its response is being produced.
    Busy,
    /// Keep-alive, nothing received since the last response.
    Idle,
}

/// One connection's phase, shared by its task, its I/O and its requests.
struct Conn {
    state: Mutex<(Phase, Instant)>,
    /// The accept loop wants this connection's slot.
    reclaim: AtomicBool,
    /// Wakes the connection's task to look at its phase and deadline again.
    wake: Notify,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            state: Mutex::new((Phase::Head, Instant::now())),
            reclaim: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn phase(&self) -> (Phase, Instant) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Move to `to` (from `from`, or from anything when `from` is `None`).
    fn enter(&self, from: Option<Phase>, to: Phase) {
        {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if from.is_some_and(|f| s.0 != f) || s.0 == to {
                return;
            }
            *s = (to, Instant::now());
        }
        self.wake.notify_one();
    }

    fn deadline(&self, limits: &HttpLimits) -> Option<(Instant, &'static str)> {
        match self.phase() {
            (Phase::Head, since) => Some((
                since + limits.header_timeout,
                "request headers not complete within the header timeout",
            )),
            (Phase::Idle, since) => Some((
                since + limits.idle_timeout,
                "keep-alive connection idle past the idle timeout",
            )),
            (Phase::Busy, _) => None,
        }
    }
}

async fn serve_connection(stream: TcpStream, router: Router, conn: Arc<Conn>, reg: Registered) {
    let server = reg.server.clone();
    let limits = server.limits;
    let io = TokioIo::new(Watched {
        io: stream,
        conn: conn.clone(),
    });
    let request_conn = conn.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        // Called when a request's headers are complete.
        request_conn.enter(None, Phase::Busy);
        let conn = request_conn.clone();
        let router = router.clone();
        async move {
            let timed_out = Arc::new(AtomicBool::new(false));
            let deadline = Instant::now() + limits.body_timeout;
            let req =
                req.map(|b| Body::new(DeadlineBody::new(b, deadline, timed_out.clone(), limits)));
            let resp = match router.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let resp = if timed_out.load(Ordering::Relaxed) {
                body_timeout_response(limits.body_timeout)
            } else {
                resp
            };
            Ok::<_, Infallible>(resp.map(|body| Tracked {
                body,
                conn: Some(conn),
            }))
        }
    });
    let mut builder = http1::Builder::new();
    // The kit times request heads itself (see the module docs); without a timer hyper would
    // also warn about its default one on every connection.
    builder.header_read_timeout(None);
    let http = builder.serve_connection(io, service);
    tokio::pin!(http);
    let mut finishing = false;
    loop {
        let deadline = conn.deadline(&limits);
        let expiry = async move {
            match deadline {
                Some((at, _)) => sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = server.hard_stop.cancelled() => break,
            r = http.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = server.stopping.cancelled(), if !finishing => {
                if conn.phase().0 != Phase::Busy {
                    break;
                }
                // Finish the request being served, then close (no keep-alive).
                finishing = true;
                http.as_mut().graceful_shutdown();
            }
            () = conn.wake.notified() => {
                // A phase change (the deadline is recomputed above), or the accept loop wants
                // the slot. (When finishing, hyper closes the connection itself once the
                // response is written: the phase turns idle before the last bytes are out.)
                if conn.reclaim.load(Ordering::Relaxed) {
                    if conn.phase().0 != Phase::Busy {
                        tracing::debug!("closing a connection serving no request to free its slot");
                        break;
                    }
                    // A request started after the accept loop chose this one: it chooses again.
                    conn.reclaim.store(false, Ordering::Relaxed);
                }
            }
            () = expiry => {
                if let Some((at, why)) = conn.deadline(&limits) {
                    if at <= Instant::now() {
                        tracing::debug!("closing a connection: {why}");
                        break;
                    }
                }
            }
        }
    }
    drop(reg);
}

/// The answer to a request whose body did not arrive in time.
fn body_timeout_response(limit: Duration) -> Response {
    let mut r = crate::error_response(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        &format!(
            "The request body did not arrive within {} ms",
            limit.as_millis()
        ),
    );
    // The rest of the body is not read, so this connection cannot be reused.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The socket, watched: the first byte after an idle spell starts a request head.
struct Watched {
    io: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.conn.enter(Some(Phase::Idle), Phase::Head);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    body: Incoming,
    deadline: Instant,
    /// Created the first time the body is not ready.
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
    limit: Duration,
}

impl DeadlineBody {
    fn new(
        body: Incoming,
        deadline: Instant,
        timed_out: Arc<AtomicBool>,
        limits: HttpLimits,
    ) -> DeadlineBody {
        DeadlineBody {
            body,
            deadline,
            sleep: None,
            timed_out,
            limit: limits.body_timeout,
        }
    }

    fn expired(&self) -> Poll<Option<Result<Frame<Bytes>, BodyTimeout>>> {
        self.timed_out.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(BodyTimeout(self.limit))))
    }
}

/// The request body did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .0.as_millis())]
pub struct BodyTimeout(Duration);

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.body.is_end_stream() {
            return Pin::new(&mut this.body)
                .poll_frame(cx)
                .map_err(BodyError::Read);
        }
        if Instant::now() >= this.deadline {
            return this.expired().map_err(BodyError::Timeout);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::Read)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => this.expired().map_err(BodyError::Timeout),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why reading a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Timeout(#[from] BodyTimeout),
    #[error(transparent)]
    Read(#[from] hyper::Error),
}

/// A response body that moves its connection to the idle phase once it is produced (or dropped).
struct Tracked {
    body: Body,
    conn: Option<Arc<Conn>>,
}

impl Tracked {
    fn done(&mut self) {
        if let Some(c) = self.conn.take() {
            c.enter(Some(Phase::Busy), Phase::Idle);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.done();
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if frame.is_none() || self.body.is_end_stream() {
            self.done();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Errors that concern one connection only: the client left before we accepted it.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Backoff and rate-limited reporting of accept errors.
#[derive(Default)]
struct AcceptErrors {
    backoff: Duration,
    last_report: Option<Instant>,
    not_reported: u64,
}

impl AcceptErrors {
    fn succeeded(&mut self) {
        self.backoff = Duration::ZERO;
    }

    /// Record a failure; how long to wait before the next try.
    fn failed(&mut self, e: &io::Error) -> Duration {
        self.backoff = (self.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        let now = Instant::now();
        if self
            .last_report
            .is_some_and(|t| now.duration_since(t) < REPORT_EVERY)
        {
            self.not_reported += 1;
        } else {
            tracing::error!(
                error = %e,
                since_last_report = self.not_reported,
                "accept error: backing off (idle connections are closed to free descriptors)"
            );
            self.last_report = Some(now);
            self.not_reported = 0;
        }
        self.backoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let mut e = AcceptErrors::default();
        let err = io::Error::from_raw_os_error(24);
        assert_eq!(e.failed(&err), MIN_BACKOFF);
        assert_eq!(e.failed(&err), MIN_BACKOFF * 2);
        for _ in 0..20 {
            e.failed(&err);
        }
        assert_eq!(e.backoff, MAX_BACKOFF);
        // Only the first was reported; the rest are counted for the next report.
        assert_eq!(e.not_reported, 21);
        e.succeeded();
        assert_eq!(e.failed(&err), MIN_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn phases_give_deadlines() {
        let limits = HttpLimits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            ..HttpLimits::DEFAULT
        };
        let c = Conn::new();
        let t0 = Instant::now();
        assert_eq!(c.deadline(&limits).unwrap().0, t0 + limits.header_timeout);
        c.enter(None, Phase::Busy);
        assert!(c.deadline(&limits).is_none());
        // A byte while busy (body) does not start a head.
        c.enter(Some(Phase::Idle), Phase::Head);
        assert_eq!(c.phase().0, Phase::Busy);
        tokio::time::advance(Duration::from_secs(2)).await;
        c.enter(Some(Phase::Busy), Phase::Idle);
        assert_eq!(
            c.deadline(&limits).unwrap().0,
            t0 + Duration::from_secs(2) + limits.idle_timeout
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        c.enter(Some(Phase::Idle), Phase::Head);
        assert_eq!(
            c.deadline(&limits).unwrap().0,
            t0 + Duration::from_secs(5) + limits.header_timeout
        );
    }
}
