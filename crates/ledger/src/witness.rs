//! The witnessing loop of one watched log: pull the checkpoint, check its signature, the
//! consistency proof from what was last verified, and the new entries against the new root;
//! cosign only when all of it holds, and deliver the cosignature to the log.
//!
//! New entries are caught up in chunks of at most `chunk` entries (fetched in the pages the log
//! serves): each chunk is appended to the frontier and stored, with the progress, in one
//! transaction, so memory stays bounded and a restart resumes after the last stored chunk. That
//! progress is *pending*: the verified state (size, root, frontier), what is cosigned and what
//! `GET /evidence` serves advance only once the frontier after the last chunk gives the
//! checkpoint's root. When it does not, or the log serves malformed entries, the pending
//! progress and its entries are discarded and the round is an `entry_mismatch` alert.
//!
//! Everything read from the log is bounded (see [`Limits`]): each answer is read as a stream up
//! to its cap and refused at once when its Content-Length is over it, and each request, body
//! included, must finish within the fetch timeout. An answer over its cap is a
//! `response_too_large` alert, a body that does not finish in time (a trickle) a
//! `response_timeout` alert; neither allocates more than the cap, the state stays at the last
//! verified checkpoint and the next round tries again. A log that cannot be reached, or sends no
//! answer in time, is a retry, as before: that is an outage, not a hostile answer.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use openexec_log::note::{self, Checkpoint, Cosigner, SignatureLine, Verifier};
use openexec_log::{leaf_hash, verify_consistency, Frontier, Hash, NodeId};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::store::{Advance, Chunk, LogState, Store};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Default most bytes of a `GET /log/checkpoint` answer (`CLAWLEDGER_MAX_CHECKPOINT_BYTES`):
/// a checkpoint is three short lines and a signature line, plus one line of about 100 bytes per
/// witness cosignature the log serves beside it.
pub const DEFAULT_MAX_CHECKPOINT_BYTES: u64 = 64 * 1024;
/// Default most bytes of one `GET /log/entries` answer (`CLAWLEDGER_MAX_ENTRIES_BYTES`): a page
/// is at most 1,000 entries, each the base64 of a leaf; a receipt leaf is a few KiB at most
/// (SPEC §2 bounds its identifiers), so a legitimate page stays under about 6 MiB.
pub const DEFAULT_MAX_ENTRIES_BYTES: u64 = 16 * 1024 * 1024;
/// Default longest time one request to a watched log may take, its whole body included
/// (`CLAWLEDGER_FETCH_TIMEOUT_MS`).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of a consistency proof answer: a proof is at most about 64 hashes, some 3 KiB of
/// JSON.
pub const MAX_PROOF_BYTES: u64 = 64 * 1024;
/// Most bytes of the log's answer to a cosignature delivery (`{"stored": n}`, or an error).
pub const MAX_REPLY_BYTES: u64 = 64 * 1024;
/// How much of an error answer (a status other than 2xx) is read, for the message.
const ERROR_PREFIX_BYTES: u64 = 1024;

/// The alert kinds of an answer refused for its size or its slowness (not for its content).
const RESPONSE_ALERTS: [&str; 2] = ["response_too_large", "response_timeout"];

/// What one round may read from a watched log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of a checkpoint answer.
    pub checkpoint_bytes: u64,
    /// Most bytes of one entries answer; a catch-up chunk also ends after the page that brings
    /// its data to this many bytes, so one chunk holds less than twice this in memory.
    pub entries_bytes: u64,
    /// Longest time one request may take, from sending it to the end of its body.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            checkpoint_bytes: DEFAULT_MAX_CHECKPOINT_BYTES,
            entries_bytes: DEFAULT_MAX_ENTRIES_BYTES,
            timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }
}

/// Why a response body was not read whole.
enum BodyError {
    /// Over the cap: declared so by Content-Length (not read at all), or streamed past it.
    TooLarge { declared: Option<u64> },
    /// Not finished before the deadline.
    Timeout,
    /// The connection failed.
    Transport(reqwest::Error),
}

/// Read a body of at most `cap` bytes, chunk by chunk (each as the connection delivers it),
/// before `deadline`. Nothing beyond the cap is ever buffered.
async fn read_body(
    r: &mut reqwest::Response,
    cap: u64,
    deadline: Instant,
) -> Result<Vec<u8>, BodyError> {
    let declared = r.content_length();
    if let Some(n) = declared.filter(|n| *n > cap) {
        return Err(BodyError::TooLarge { declared: Some(n) });
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(cap) as usize);
    loop {
        let chunk = match tokio::time::timeout_at(deadline, r.chunk()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(Err(e)) if e.is_timeout() => return Err(BodyError::Timeout),
            Ok(Err(e)) => return Err(BodyError::Transport(e)),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(c))) => c,
        };
        if body.len() as u64 + chunk.len() as u64 > cap {
            return Err(BodyError::TooLarge { declared: None });
        }
        body.extend_from_slice(&chunk);
    }
}

/// The first `n` bytes of a body (less if it ends, fails or runs out of time first), as text.
async fn read_prefix(r: &mut reqwest::Response, n: u64, deadline: Instant) -> String {
    let mut body = Vec::new();
    while (body.len() as u64) < n {
        match tokio::time::timeout_at(deadline, r.chunk()).await {
            Ok(Ok(Some(c))) => body.extend_from_slice(&c[..c.len().min(n as usize - body.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// A 2xx answer's whole body, or another status and the start of its body.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    /// The body as text (invalid UTF-8 replaced), without a copy when it is valid.
    fn into_text(self) -> String {
        String::from_utf8(self.body)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// One log to watch: where it is and the key its checkpoints must be signed with (whose name is
/// the log's origin).
#[derive(Clone, Debug)]
pub struct Watch {
    pub url: String,
    pub verifier: Verifier,
}

impl Watch {
    /// `URL=VERIFIER_KEY`.
    pub fn parse(text: &str) -> anyhow::Result<Watch> {
        let (url, key) = text
            .trim()
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--watch '{text}': expected URL=VERIFIER_KEY"))?;
        let url = url.trim().trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!("--watch '{text}': the URL must start with http:// or https://");
        }
        let verifier = note::parse_verifier_key(key.trim())
            .map_err(|e| anyhow::anyhow!("--watch '{text}': verifier key: {e}"))?;
        Ok(Watch { url, verifier })
    }

    /// The log's origin: the verifier key's name.
    pub fn origin(&self) -> &str {
        self.verifier.name()
    }
}

/// Why a round stopped.
enum Stop {
    /// The log is wrong: raise an alert of this kind; never cosign.
    Alert {
        kind: &'static str,
        detail: String,
        size: Option<u64>,
        root: Option<Hash>,
    },
    /// Could not talk to the log: try again next round.
    Transient(anyhow::Error),
    /// Our own database failed: try again next round.
    Store(anyhow::Error),
}

fn store_err(e: anyhow::Error) -> Stop {
    Stop::Store(e)
}

/// What one round did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing new to verify (no checkpoint yet, or the same one; re-checked a page).
    Quiet,
    /// Verified, stored and cosigned a checkpoint of this size.
    Cosigned(u64),
    /// Raised (or repeated) an alert of this kind; nothing was cosigned.
    Alert(&'static str),
    /// Could not complete (the log or our database unavailable); the next round tries again.
    Retry(String),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Transient(e)
    }
}

fn alert(kind: &'static str, detail: String, size: Option<u64>, root: Option<Hash>) -> Stop {
    Stop::Alert {
        kind,
        detail,
        size,
        root,
    }
}

#[derive(Deserialize)]
struct Hashes {
    hashes: Vec<String>,
}

pub struct Witness {
    watch: Watch,
    cosigner: Cosigner,
    store: Arc<Store>,
    http: reqwest::Client,
    poll: Duration,
    /// Most entries caught up (held in memory, stored in one transaction) per chunk.
    chunk: u64,
    /// Where the next re-check of already mirrored entries starts.
    recheck_from: std::sync::atomic::AtomicU64,
    /// What a round may read from the log.
    limits: Limits,
}

/// How many mirrored entries one quiet round re-checks against what the log serves now.
const RECHECK_PAGE: u64 = 64;

impl Witness {
    pub fn new(
        watch: Watch,
        cosigner: Cosigner,
        store: Arc<Store>,
        http: reqwest::Client,
        poll: Duration,
        chunk: u64,
    ) -> Witness {
        Witness {
            watch,
            cosigner,
            store,
            http,
            poll,
            chunk: chunk.max(1),
            recheck_from: std::sync::atomic::AtomicU64::new(0),
            limits: Limits::default(),
        }
    }

    /// Read the log within these limits instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Witness {
        self.limits = limits;
        self
    }

    /// Run rounds every `poll` until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            self.step().await;
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// One round, its alert recorded and its problems logged.
    pub async fn step(&self) -> Outcome {
        let origin = self.watch.origin().to_string();
        match self.round().await {
            Ok(o) => o,
            Err(Stop::Transient(e)) => {
                tracing::warn!(%origin, url = %self.watch.url, error = %format!("{e:#}"), "round not completed; retrying");
                Outcome::Retry(format!("{e:#}"))
            }
            Err(Stop::Store(e)) => {
                tracing::error!(%origin, error = %format!("{e:#}"), "database error: round not completed; retrying");
                Outcome::Retry(format!("{e:#}"))
            }
            Err(Stop::Alert {
                kind,
                detail,
                size,
                root,
            }) => {
                self.raise(kind, &detail, size, root).await;
                Outcome::Alert(kind)
            }
        }
    }

    /// Record an alert (logged at error and counted the first time; the same alert as the last
    /// one of this log is not stored again).
    async fn raise(&self, kind: &'static str, detail: &str, size: Option<u64>, root: Option<Hash>) {
        let origin = self.watch.origin().to_string();
        let root = root.map(|r| B64.encode(r));
        match self
            .store
            .add_alert(&origin, kind, detail, size, root.as_deref())
            .await
        {
            Ok(true) => {
                tracing::error!(%origin, kind, size, detail, "ALERT: not cosigned");
                metrics::counter!("clawledger_alerts_total", "origin" => origin.clone(), "kind" => kind)
                    .increment(1);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(%origin, kind, detail, error = %format!("{e:#}"), "ALERT (could not be stored)");
                metrics::counter!("clawledger_alerts_total", "origin" => origin.clone(), "kind" => kind)
                    .increment(1);
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.watch.url, path)
    }

    /// Send `req` (`what` names it in messages) and read its answer within the limits: a 2xx
    /// body of at most `cap` bytes, or another status with the start of its body. An answer over
    /// its cap or not finished within the fetch timeout is an alert (about `cp`, when the
    /// answer serves one); failing to reach the log is a retry.
    async fn fetch(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
        cap: u64,
        cp: Option<&Checkpoint>,
    ) -> Result<Answer, Stop> {
        let timeout = self.limits.timeout;
        let deadline = Instant::now() + timeout;
        let mut r = req
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Stop::Transient(anyhow::anyhow!("{what}: {e}")))?;
        let status = r.status();
        if !status.is_success() {
            let body = read_prefix(&mut r, ERROR_PREFIX_BYTES, deadline)
                .await
                .into_bytes();
            return Ok(Answer { status, body });
        }
        let refused = |kind, detail: String| {
            alert(
                kind,
                format!("{what}: {detail}"),
                cp.map(|c| c.size),
                cp.map(|c| c.root),
            )
        };
        match read_body(&mut r, cap, deadline).await {
            Ok(body) => Ok(Answer { status, body }),
            Err(BodyError::TooLarge { declared: Some(n) }) => Err(refused(
                "response_too_large",
                format!("the answer declares {n} bytes (Content-Length), over the cap of {cap} bytes; not read"),
            )),
            Err(BodyError::TooLarge { declared: None }) => Err(refused(
                "response_too_large",
                format!("the answer runs past the cap of {cap} bytes; reading stopped there"),
            )),
            Err(BodyError::Timeout) => Err(refused(
                "response_timeout",
                format!(
                    "the answer did not finish within the fetch timeout of {} ms; reading stopped",
                    timeout.as_millis()
                ),
            )),
            Err(BodyError::Transport(e)) => Err(Stop::Transient(anyhow::anyhow!(
                "{what}: reading the answer: {e}"
            ))),
        }
    }

    /// GET `path`: its 2xx body as text (at most `cap` bytes); any other status is a retry.
    async fn get_text(&self, path: &str, cap: u64, cp: &Checkpoint) -> Result<String, Stop> {
        let what = format!("GET {path}");
        let a = self
            .fetch(self.http.get(self.url(path)), &what, cap, Some(cp))
            .await?;
        if !a.status.is_success() {
            let status = a.status;
            return Err(Stop::Transient(anyhow::anyhow!(
                "{what}: {status}: {}",
                a.into_text().chars().take(300).collect::<String>()
            )));
        }
        Ok(a.into_text())
    }

    /// One round: see the doc of the module. The verified state is read from the database
    /// each round: it is the only source of truth.
    async fn round(&self) -> Result<Outcome, Stop> {
        let origin = self.watch.origin();
        let state = self.store.state(origin).await.map_err(store_err)?;
        let a = self
            .fetch(
                self.http.get(self.url("/log/checkpoint")),
                "GET /log/checkpoint",
                self.limits.checkpoint_bytes,
                None,
            )
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            tracing::debug!(%origin, "the log has no checkpoint yet");
            return Ok(Outcome::Quiet);
        }
        let status = a.status;
        let text = a.into_text();
        if !status.is_success() {
            return Err(Stop::Transient(anyhow::anyhow!(
                "GET /log/checkpoint: {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        let opened = note::open_note(&text, &self.watch.verifier).map_err(|e| {
            alert(
                "bad_signature",
                format!("the checkpoint does not open with the log's key: {e}"),
                None,
                None,
            )
        })?;
        let cp = Checkpoint::parse_body(&opened.body).map_err(|e| {
            alert(
                "bad_checkpoint",
                format!("signed note is not a checkpoint: {e}"),
                None,
                None,
            )
        })?;
        if cp.origin != origin {
            return Err(alert(
                "wrong_origin",
                format!("checkpoint origin '{}' is not '{origin}'", cp.origin),
                Some(cp.size),
                Some(cp.root),
            ));
        }
        let base = match state.as_ref() {
            None => {
                if cp.size == 0 {
                    return Ok(Outcome::Quiet);
                }
                Frontier::empty()
            }
            Some(last) => {
                if cp.size < last.size {
                    return Err(alert(
                        "shrink",
                        format!(
                            "checkpoint of size {} after a verified checkpoint of size {}",
                            cp.size, last.size
                        ),
                        Some(cp.size),
                        Some(cp.root),
                    ));
                }
                if cp.size == last.size {
                    if cp.root != last.root {
                        return Err(alert(
                            "fork",
                            format!(
                                "checkpoint of size {} with root {} after one of the same size with root {}",
                                cp.size,
                                B64.encode(cp.root),
                                B64.encode(last.root)
                            ),
                            Some(cp.size),
                            Some(cp.root),
                        ));
                    }
                    self.redeliver(&opened, &cp).await;
                    self.recheck(&cp).await?;
                    return Ok(Outcome::Quiet);
                }
                let proof = self
                    .get_text(
                        &format!(
                            "/log/proof/consistency?first={}&second={}",
                            last.size, cp.size
                        ),
                        MAX_PROOF_BYTES,
                        &cp,
                    )
                    .await?;
                let hashes = parse_hashes(&proof).map_err(|e| {
                    alert(
                        "bad_proof",
                        format!(
                            "consistency proof {}→{} is malformed: {e}",
                            last.size, cp.size
                        ),
                        Some(cp.size),
                        Some(cp.root),
                    )
                })?;
                verify_consistency(last.size, cp.size, &last.root, &cp.root, &hashes).map_err(
                    |e| {
                        alert(
                            "bad_proof",
                            format!(
                                "consistency proof {}→{} does not verify: {e}",
                                last.size, cp.size
                            ),
                            Some(cp.size),
                            Some(cp.root),
                        )
                    },
                )?;
                last.frontier.clone()
            }
        };
        // The new entries, chunk by chunk: each appended to the frontier and stored as pending
        // progress; the frontier after the last one must give the new root.
        let first = base.size();
        let frontier = match self.catch_up(base, &cp).await {
            // An answer refused for its size or slowness says nothing of the entries stored so
            // far: they stay pending (never trusted before the root check) for the next round.
            Err(a @ Stop::Alert { kind, .. }) if !RESPONSE_ALERTS.contains(&kind) => {
                self.discard(origin).await;
                return Err(a);
            }
            r => r?,
        };
        if frontier.root() != cp.root {
            self.discard(origin).await;
            return Err(alert(
                "entry_mismatch",
                format!(
                    "entries [{first}, {}) do not hash into the checkpoint's root {} (they give {})",
                    cp.size,
                    B64.encode(cp.root),
                    B64.encode(frontier.root())
                ),
                Some(cp.size),
                Some(cp.root),
            ));
        }
        // All holds: store, cosign, deliver.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let line = self
            .cosigner
            .cosign(&opened.body, now)
            .map_err(|e| Stop::Transient(e.into()))?;
        let mut note_text = opened.body.clone();
        note_text.push('\n');
        for l in &opened.signatures {
            if SignatureLine::parse(l).is_ok_and(|p| self.watch.verifier.is_signer_of(&p)) {
                note_text.push_str(l);
                note_text.push('\n');
            }
        }
        note_text.push_str(&line);
        note_text.push('\n');
        let new_state = LogState {
            size: cp.size,
            root: cp.root,
            frontier,
        };
        self.store
            .advance(Advance {
                origin,
                base_size: first,
                state: &new_state,
                note: &note_text,
                line: &line,
            })
            .await
            .map_err(store_err)?;
        metrics::gauge!("clawledger_catchup_size", "origin" => origin.to_string()).set(0.0);
        metrics::counter!("clawledger_cosignatures_total", "origin" => origin.to_string())
            .increment(1);
        metrics::gauge!("clawledger_verified_size", "origin" => origin.to_string())
            .set(cp.size as f64);
        tracing::info!(%origin, size = cp.size, "checkpoint verified and cosigned");
        self.deliver(&line, &cp).await;
        Ok(Outcome::Cosigned(cp.size))
    }

    /// Append entries [base.size(), cp.size) to `base`, in chunks, each stored with the progress
    /// before the next is fetched; resume from stored progress that started at the same verified
    /// size and does not go beyond `cp` (any other is discarded). The frontier at `cp.size`.
    async fn catch_up(&self, base: Frontier, cp: &Checkpoint) -> Result<Frontier, Stop> {
        let origin = self.watch.origin();
        let base_size = base.size();
        let mut frontier = match self.store.catchup(origin).await.map_err(store_err)? {
            Some(c) if c.base_size == base_size && c.frontier.size() <= cp.size => {
                if c.frontier.size() > base_size {
                    tracing::info!(%origin, from = base_size, at = c.frontier.size(), to = cp.size, "resuming the catch-up after its last stored chunk");
                }
                c.frontier
            }
            Some(c) => {
                tracing::warn!(%origin, from = c.base_size, at = c.frontier.size(), verified = base_size, checkpoint = cp.size, "stored catch-up progress does not fit this checkpoint; discarding it");
                self.store
                    .discard_catchup(origin)
                    .await
                    .map_err(store_err)?;
                base
            }
            None => base,
        };
        while frontier.size() < cp.size {
            let start = frontier.size();
            let end = cp.size.min(start.saturating_add(self.chunk));
            let entries = self.fetch_entries(start, end, cp).await?;
            // Fewer when the pages' data reached the entries cap first.
            let end = start + entries.len() as u64;
            let mut nodes: Vec<(NodeId, Hash)> = Vec::with_capacity(entries.len() * 2);
            for data in &entries {
                let created = frontier
                    .append(leaf_hash(data))
                    .map_err(|e| Stop::Transient(e.into()))?;
                nodes.extend(created);
            }
            self.store
                .store_chunk(Chunk {
                    origin,
                    base_size,
                    first_index: start,
                    entries: &entries,
                    nodes: &nodes,
                    frontier: &frontier,
                    target_size: cp.size,
                    target_root: &cp.root,
                })
                .await
                .map_err(store_err)?;
            metrics::gauge!("clawledger_catchup_size", "origin" => origin.to_string())
                .set(end as f64);
            tracing::debug!(%origin, start, end, target = cp.size, "catch-up chunk stored (not verified yet)");
        }
        Ok(frontier)
    }

    /// Forget pending progress after an alert. A failure is logged: the progress can never be
    /// cosigned anyway (the next catch-up's root check covers it) and the next alert retries.
    async fn discard(&self, origin: &str) {
        match self.store.discard_catchup(origin).await {
            Ok(n) => {
                metrics::gauge!("clawledger_catchup_size", "origin" => origin.to_string()).set(0.0);
                tracing::warn!(%origin, entries = n, "discarded the unverified catch-up");
            }
            Err(e) => {
                tracing::error!(%origin, error = %format!("{e:#}"), "cannot discard the unverified catch-up; the next round retries")
            }
        }
    }

    /// Entries [start, end), in pages as the log serves them; it stops early (at least one page)
    /// once their data reaches the entries cap, so that a chunk holds less than twice the cap.
    async fn fetch_entries(
        &self,
        start: u64,
        end: u64,
        cp: &Checkpoint,
    ) -> Result<Vec<Vec<u8>>, Stop> {
        let mut out = Vec::with_capacity((end - start).min(1000) as usize);
        let mut bytes = 0u64;
        let mut next = start;
        while next < end && bytes < self.limits.entries_bytes {
            let text = self
                .get_text(
                    &format!("/log/entries?start={next}&end={end}"),
                    self.limits.entries_bytes,
                    cp,
                )
                .await?;
            let at = next;
            let bad = |why: String| {
                alert(
                    "entry_mismatch",
                    format!("GET /log/entries?start={at}&end={end}: {why}"),
                    Some(cp.size),
                    Some(cp.root),
                )
            };
            let items: Vec<String> =
                serde_json::from_str(&text).map_err(|e| bad(format!("not a JSON array: {e}")))?;
            if items.is_empty() || items.len() as u64 > end - next {
                return Err(bad(format!("{} entries", items.len())));
            }
            for item in items {
                let data = B64
                    .decode(&item)
                    .map_err(|e| bad(format!("an entry is not base64: {e}")))?;
                bytes += data.len() as u64;
                out.push(data);
                next += 1;
            }
        }
        Ok(out)
    }

    /// On a quiet round, compare a page of entries the log serves now with what was mirrored
    /// when they were verified (pages rotate through the whole log): an entry rewritten or gone
    /// behind a checkpoint that still verifies is an alert.
    async fn recheck(&self, cp: &Checkpoint) -> Result<(), Stop> {
        use std::sync::atomic::Ordering;
        if cp.size == 0 {
            return Ok(());
        }
        let start = self.recheck_from.load(Ordering::Relaxed) % cp.size;
        let end = (start + RECHECK_PAGE).min(cp.size);
        self.recheck_from.store(end % cp.size, Ordering::Relaxed);
        let path = format!("/log/entries?start={start}&end={end}");
        let a = self
            .fetch(
                self.http.get(self.url(&path)),
                &format!("GET {path}"),
                self.limits.entries_bytes,
                Some(cp),
            )
            .await?;
        let status = a.status;
        let text = a.into_text();
        if status.is_client_error() {
            // The log will not serve entries its own signed checkpoint covers.
            return Err(alert(
                "entries_unavailable",
                format!(
                    "GET {path} answered {status} although the checkpoint covers {} entries: {}",
                    cp.size,
                    text.chars().take(200).collect::<String>()
                ),
                Some(cp.size),
                Some(cp.root),
            ));
        }
        if !status.is_success() {
            return Err(Stop::Transient(anyhow::anyhow!("GET {path}: {status}")));
        }
        let items: Vec<String> = serde_json::from_str(&text)
            .map_err(|e| Stop::Transient(anyhow::anyhow!("GET {path}: not a JSON array: {e}")))?;
        let ids: Vec<NodeId> = (start..start + items.len() as u64)
            .map(NodeId::leaf)
            .collect();
        let mirrored = self
            .store
            .nodes(self.watch.origin(), &ids)
            .await
            .map_err(store_err)?;
        for (i, item) in items.iter().enumerate() {
            let index = start + i as u64;
            let Some(want) = mirrored.get(&NodeId::leaf(index)) else {
                continue;
            };
            let got = B64.decode(item).map(|d| leaf_hash(&d)).ok();
            if got.as_ref() != Some(want) {
                return Err(alert(
                    "entry_changed",
                    format!(
                        "entry {index} no longer hashes to the leaf verified under the checkpoint of size {}",
                        cp.size
                    ),
                    Some(cp.size),
                    Some(cp.root),
                ));
            }
        }
        Ok(())
    }

    /// POST our cosignature line (for `cp`) to the log. A failure is logged and the next round
    /// tries again; an answer over its cap or too slow is also an alert.
    async fn deliver(&self, line: &str, cp: &Checkpoint) {
        let origin = self.watch.origin();
        let req = self
            .http
            .post(self.url("/log/cosignatures"))
            .header("content-type", "text/plain")
            .body(format!("{line}\n"));
        match self
            .fetch(req, "POST /log/cosignatures", MAX_REPLY_BYTES, Some(cp))
            .await
        {
            Ok(a) if a.status.is_success() => {
                tracing::info!(%origin, "cosignature delivered");
            }
            Ok(a) => {
                let status = a.status;
                tracing::warn!(%origin, %status, body = %a.into_text().chars().take(300).collect::<String>(), "cosignature not accepted; retrying next round");
            }
            Err(Stop::Alert {
                kind,
                detail,
                size,
                root,
            }) => self.raise(kind, &detail, size, root).await,
            Err(Stop::Transient(e) | Stop::Store(e)) => {
                tracing::warn!(%origin, error = %format!("{e:#}"), "cosignature not delivered; retrying next round");
            }
        }
    }

    /// The checkpoint is the one we cosigned: deliver our line again if the log does not serve it.
    async fn redeliver(&self, opened: &note::OpenedNote, cp: &Checkpoint) {
        let ours = self.cosigner.verifier();
        if opened
            .signatures
            .iter()
            .any(|l| note::verify_cosignature(l, &opened.body, &ours).is_ok())
        {
            return;
        }
        match self.store.latest_cosigned(self.watch.origin()).await {
            Ok(Some(c)) if c.note.starts_with(&opened.body) => self.deliver(&c.line, cp).await,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the cosigned checkpoint")
            }
        }
    }
}

fn parse_hashes(text: &str) -> Result<Vec<Hash>, String> {
    let h: Hashes = serde_json::from_str(text).map_err(|e| e.to_string())?;
    h.hashes
        .iter()
        .map(|s| {
            let raw = B64
                .decode(s)
                .map_err(|e| format!("'{s}' is not base64: {e}"))?;
            <Hash>::try_from(raw.as_slice()).map_err(|_| format!("'{s}' is not 32 bytes"))
        })
        .collect()
}
