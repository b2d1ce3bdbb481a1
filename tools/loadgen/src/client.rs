//! The HTTP client: N workers, each with one HTTP/1.1 keep-alive connection (hyper's low-level
//! `client::conn::http1` over a `TcpStream` with `TCP_NODELAY`), sending one request at a time
//! until the window closes.
//!
//! A request counts when it started after the warmup and its whole answer was read before the
//! end of the window. Every body is read in full; a few 200 bodies are kept for the sanity check.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;

use crate::bodies::BodySource;

/// Which endpoint a phase drives.
#[derive(Clone)]
pub enum Endpoint {
    /// `GET /health`: the trivial endpoint of the same server.
    Health,
    /// `POST /execute` with bodies from the source.
    Execute(Arc<BodySource>),
    /// `GET /log/proof/inclusion?index=I&tree_size=S` for a uniformly random I in `0..S`.
    Inclusion { tree_size: u64 },
    /// `POST /v1/proposals` (ClawShield) with bodies from the source and this `Authorization`
    /// header (`Bearer <the agent's token>`).
    Propose {
        bodies: Arc<BodySource>,
        authorization: HeaderValue,
    },
}

impl Endpoint {
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::Health => "GET /health",
            Endpoint::Execute(_) => "POST /execute",
            Endpoint::Inclusion { .. } => "GET /log/proof/inclusion",
            Endpoint::Propose { .. } => "POST /v1/proposals",
        }
    }
}

/// When a phase measures.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Requests started before this are warmup.
    pub measure_from: Instant,
    /// No request starts at or after this; answers after it are not counted.
    pub end: Instant,
}

/// What a phase (or one worker of it) saw inside the window.
pub struct Outcome {
    /// Latency of each 200 answer, in µs.
    pub hist: Histogram<u64>,
    /// Answers with status 200.
    pub ok: u64,
    /// Other answers, by status.
    pub non_ok: BTreeMap<u16, u64>,
    /// The first body of each non-200 status (for the report).
    pub non_ok_examples: BTreeMap<u16, Bytes>,
    /// Connections that failed mid-request (then reopened).
    pub transport_errors: u64,
    /// A few 200 bodies, for the sanity check.
    pub samples: Vec<Bytes>,
    /// The pool of bodies ran out (the phase ended early for that worker).
    pub exhausted_at: Option<Instant>,
    /// Every answer of the whole phase (warmup and answers after the window included), for
    /// checks against the server's own counters.
    pub total: Totals,
}

/// Counts over a whole phase, inside the window or not.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Answers with status 200.
    pub ok: u64,
    /// Of those, answers of /execute that say `"replayed": true`.
    pub replayed: u64,
    /// Answers with another status.
    pub non_ok: u64,
    /// Requests whose connection failed before the answer was read.
    pub transport: u64,
}

impl Totals {
    fn add(&mut self, o: Totals) {
        self.ok += o.ok;
        self.replayed += o.replayed;
        self.non_ok += o.non_ok;
        self.transport += o.transport;
    }
}

/// Whether an `/execute` answer says `"replayed": true` (a byte search, no JSON parse: the
/// client shares the CPU with the server).
pub fn says_replayed(body: &[u8]) -> bool {
    const KEY: &[u8] = b"\"replayed\"";
    let Some(at) = body.windows(KEY.len()).position(|w| w == KEY) else {
        return false;
    };
    let rest = &body[at + KEY.len()..];
    let rest = rest.trim_ascii_start();
    let Some(rest) = rest.strip_prefix(b":") else {
        return false;
    };
    rest.trim_ascii_start().starts_with(b"true")
}

/// A latency histogram from 1 µs to one hour with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that `new_with_bounds` accepts.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|e| panic!("histogram: {e}"))
}

impl Outcome {
    /// The non-200 answers by status, with the requests lost to transport errors under 0.
    pub fn non_ok_all(&self) -> BTreeMap<u16, u64> {
        let mut non_ok = self.non_ok.clone();
        if self.transport_errors > 0 {
            non_ok.insert(0, self.transport_errors);
        }
        non_ok
    }

    fn new() -> Outcome {
        Outcome {
            hist: new_histogram(),
            ok: 0,
            non_ok: BTreeMap::new(),
            non_ok_examples: BTreeMap::new(),
            transport_errors: 0,
            samples: Vec::new(),
            exhausted_at: None,
            total: Totals::default(),
        }
    }

    fn merge(&mut self, o: Outcome) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&o.hist);
        self.ok += o.ok;
        for (s, n) in o.non_ok {
            *self.non_ok.entry(s).or_default() += n;
        }
        for (s, b) in o.non_ok_examples {
            self.non_ok_examples.entry(s).or_insert(b);
        }
        self.transport_errors += o.transport_errors;
        self.samples.extend(o.samples);
        self.exhausted_at = match (self.exhausted_at, o.exhausted_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.total.add(o.total);
    }
}

/// Keep every `SAMPLE_EVERY`-th 200 body of a worker, at most `SAMPLES_PER_WORKER` of them.
const SAMPLE_EVERY: u64 = 101;
const SAMPLES_PER_WORKER: usize = 8;

/// One step of SplitMix64: a fast, well-mixed pseudo-random sequence (not for cryptography).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The path of an inclusion-proof request for `index` in a tree of `tree_size` leaves.
pub fn inclusion_path(index: u64, tree_size: u64) -> String {
    format!("/log/proof/inclusion?index={index}&tree_size={tree_size}")
}

pub async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        // The connection ends when the worker drops its sender or the server closes it.
        let _ = conn.await;
    });
    Ok(sender)
}

async fn worker(
    addr: SocketAddr,
    host: HeaderValue,
    endpoint: Endpoint,
    window: Window,
    seed: u64,
) -> anyhow::Result<Outcome> {
    let mut rng = seed;
    let mut out = Outcome::new();
    let json = HeaderValue::from_static("application/json");
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut failed_connects = 0u32;
    let mut ok_seen = 0u64;
    loop {
        if Instant::now() >= window.end {
            break;
        }
        let s = match &mut sender {
            Some(s) => s,
            None => match connect(addr).await {
                Ok(s) => {
                    failed_connects = 0;
                    sender.insert(s)
                }
                Err(e) => {
                    failed_connects += 1;
                    if failed_connects >= 20 {
                        return Err(e.context("20 connection attempts in a row failed"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let req = match &endpoint {
            Endpoint::Health => Request::builder()
                .method(Method::GET)
                .uri(Uri::from_static("/health"))
                .header(HOST, host.clone())
                .body(Full::new(Bytes::new()))?,
            Endpoint::Execute(src) => {
                let Some(body) = src.next() else {
                    out.exhausted_at = Some(Instant::now());
                    break;
                };
                Request::builder()
                    .method(Method::POST)
                    .uri(Uri::from_static("/execute"))
                    .header(HOST, host.clone())
                    .header(CONTENT_TYPE, json.clone())
                    .body(Full::new(body))?
            }
            Endpoint::Propose {
                bodies,
                authorization,
            } => {
                let Some(body) = bodies.next() else {
                    out.exhausted_at = Some(Instant::now());
                    break;
                };
                Request::builder()
                    .method(Method::POST)
                    .uri(Uri::from_static("/v1/proposals"))
                    .header(HOST, host.clone())
                    .header(CONTENT_TYPE, json.clone())
                    .header(AUTHORIZATION, authorization.clone())
                    .body(Full::new(body))?
            }
            Endpoint::Inclusion { tree_size } => {
                let index = splitmix64(&mut rng) % (*tree_size).max(1);
                Request::builder()
                    .method(Method::GET)
                    .uri(Uri::try_from(inclusion_path(index, *tree_size))?)
                    .header(HOST, host.clone())
                    .body(Full::new(Bytes::new()))?
            }
        };
        if s.ready().await.is_err() {
            out.transport_errors += 1;
            sender = None;
            continue;
        }
        let t0 = Instant::now();
        let answer = match s.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                resp.into_body()
                    .collect()
                    .await
                    .map(|b| (status, b.to_bytes()))
            }
            Err(e) => Err(e),
        };
        let t1 = Instant::now();
        let counted = t0 >= window.measure_from && t1 <= window.end;
        match &answer {
            Ok((200, body)) => {
                out.total.ok += 1;
                if matches!(endpoint, Endpoint::Execute(_)) && says_replayed(body) {
                    out.total.replayed += 1;
                }
            }
            Ok(_) => out.total.non_ok += 1,
            Err(_) => out.total.transport += 1,
        }
        match answer {
            Ok((200, body)) => {
                if counted {
                    out.ok += 1;
                    let us = t1.duration_since(t0).as_micros() as u64;
                    out.hist.saturating_record(us.max(1));
                    ok_seen += 1;
                    if ok_seen % SAMPLE_EVERY == 1 && out.samples.len() < SAMPLES_PER_WORKER {
                        out.samples.push(body);
                    }
                }
            }
            Ok((status, body)) => {
                if counted {
                    *out.non_ok.entry(status).or_default() += 1;
                    out.non_ok_examples.entry(status).or_insert(body);
                }
            }
            Err(_) => {
                if counted {
                    out.transport_errors += 1;
                }
                sender = None;
            }
        }
    }
    Ok(out)
}

/// Run one phase: `connections` workers against `addr` for `warmup + duration`, on the current
/// Tokio runtime. Returns the merged outcome of the measured window.
pub async fn run_phase(
    addr: SocketAddr,
    endpoint: Endpoint,
    connections: usize,
    window: Window,
) -> anyhow::Result<Outcome> {
    run_phase_spread(&[addr], endpoint, connections, window).await
}

/// The server (index into the list of `servers`) that connection `i` talks to: round-robin by
/// connection, so `connections` split as evenly as they can.
pub fn server_of(i: usize, servers: usize) -> usize {
    i % servers.max(1)
}

/// [`run_phase`] over several servers: connection `i` goes to `addrs[server_of(i, n)]` (a
/// connection-level round-robin, as a TCP load balancer would spread keep-alive clients).
pub async fn run_phase_spread(
    addrs: &[SocketAddr],
    endpoint: Endpoint,
    connections: usize,
    window: Window,
) -> anyhow::Result<Outcome> {
    if addrs.is_empty() {
        bail!("no server address to drive");
    }
    let hosts = addrs
        .iter()
        .map(|a| HeaderValue::from_str(&a.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let k = server_of(i, addrs.len());
        tasks.push(tokio::spawn(worker(
            addrs[k],
            hosts[k].clone(),
            endpoint.clone(),
            window,
            0x5EED_0000_0000_0000 ^ i as u64,
        )));
    }
    let mut all = Outcome::new();
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(o)) => all.merge(o),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(anyhow::anyhow!("a worker panicked: {e}"));
            }
        }
    }
    if let Some(e) = first_err {
        bail!("{} phase failed: {e:#}", endpoint.label());
    }
    Ok(all)
}
