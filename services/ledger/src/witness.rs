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
use openexec_logstore::{ClientError, LogClient};
use tokio::sync::watch;

use crate::store::{Advance, Chunk, LogState, Store};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What one round may read from a watched log (the client's limits): the checkpoint
/// (`CLAWLEDGER_MAX_CHECKPOINT_BYTES`), one entries page (`CLAWLEDGER_MAX_ENTRIES_BYTES`; a
/// catch-up chunk also ends after the page that brings its data to this many bytes, so one
/// chunk holds less than twice this in memory) and the time of one request
/// (`CLAWLEDGER_FETCH_TIMEOUT_MS`); proofs and the answer to a delivery are capped at
/// [`MAX_PROOF_BYTES`] and [`MAX_REPLY_BYTES`].
pub use openexec_logstore::client::Limits;
pub use openexec_logstore::client::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_CHECKPOINT_BYTES, DEFAULT_MAX_ENTRIES_BYTES,
    MAX_PROOF_BYTES, MAX_REPLY_BYTES,
};

/// The alert kinds of an answer refused for its size or its slowness (not for its content).
const RESPONSE_ALERTS: [&str; 2] = ["response_too_large", "response_timeout"];

/// What a failed request to the log means for the round: an answer over its cap is a
/// `response_too_large` alert and one too slow a `response_timeout` alert (about `cp`, when the
/// answer serves one); anything else is a retry (an outage, or an answer the caller judges).
fn client_stop(e: ClientError, cp: Option<&Checkpoint>) -> Stop {
    let kind = match &e {
        ClientError::TooLarge { .. } => "response_too_large",
        ClientError::Timeout { .. } => "response_timeout",
        _ => return Stop::Transient(anyhow::Error::new(e)),
    };
    alert(kind, e.to_string(), cp.map(|c| c.size), cp.map(|c| c.root))
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

pub struct Witness {
    watch: Watch,
    cosigner: Cosigner,
    store: Arc<Store>,
    http: reqwest::Client,
    /// The log's public endpoints, read within the limits.
    client: LogClient,
    poll: Duration,
    /// Most entries caught up (held in memory, stored in one transaction) per chunk.
    chunk: u64,
    /// Where the next re-check of already mirrored entries starts.
    recheck_from: std::sync::atomic::AtomicU64,
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
        let client = LogClient::new(http.clone(), &watch.url, Limits::default());
        Witness {
            watch,
            cosigner,
            store,
            http,
            client,
            poll,
            chunk: chunk.max(1),
            recheck_from: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Read the log within these limits instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Witness {
        self.client = LogClient::new(self.http.clone(), &self.watch.url, limits);
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

    /// One round: see the doc of the module. The verified state is read from the database
    /// each round: it is the only source of truth.
    async fn round(&self) -> Result<Outcome, Stop> {
        let origin = self.watch.origin();
        let state = self.store.state(origin).await.map_err(store_err)?;
        let Some(text) = self
            .client
            .checkpoint()
            .await
            .map_err(|e| client_stop(e, None))?
        else {
            tracing::debug!(%origin, "the log has no checkpoint yet");
            return Ok(Outcome::Quiet);
        };
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
                let hashes = match self.client.consistency(last.size, cp.size).await {
                    Ok(h) => h,
                    Err(ClientError::Malformed { detail, .. }) => {
                        return Err(alert(
                            "bad_proof",
                            format!(
                                "consistency proof {}→{} is malformed: {detail}",
                                last.size, cp.size
                            ),
                            Some(cp.size),
                            Some(cp.root),
                        ))
                    }
                    Err(e) => return Err(client_stop(e, Some(&cp))),
                };
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
        while next < end && bytes < self.client.limits().entries_bytes {
            let at = next;
            let bad = |why: String| {
                alert(
                    "entry_mismatch",
                    format!("GET /log/entries?start={at}&end={end}: {why}"),
                    Some(cp.size),
                    Some(cp.root),
                )
            };
            let page = match self.client.entries(next, end).await {
                Ok(p) => p,
                Err(ClientError::Malformed { detail, .. }) => return Err(bad(detail)),
                Err(e) => return Err(client_stop(e, Some(cp))),
            };
            if page.is_empty() || page.len() as u64 > end - next {
                return Err(bad(format!("{} entries", page.len())));
            }
            for data in page {
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
        let entries_unavailable = |status: reqwest::StatusCode, body: &str| {
            alert(
                "entries_unavailable",
                format!(
                    "GET {path} answered {status} although the checkpoint covers {} entries: {}",
                    cp.size,
                    body.chars().take(200).collect::<String>()
                ),
                Some(cp.size),
                Some(cp.root),
            )
        };
        let entry_changed = |index: u64| {
            alert(
                "entry_changed",
                format!(
                    "entry {index} no longer hashes to the leaf verified under the checkpoint of size {}",
                    cp.size
                ),
                Some(cp.size),
                Some(cp.root),
            )
        };
        let page = self.client.entries(start, end).await;
        let ids: Vec<NodeId> = match &page {
            Ok(items) => (start..start + items.len() as u64)
                .map(NodeId::leaf)
                .collect(),
            Err(ClientError::Malformed { entry: Some(i), .. }) => {
                vec![NodeId::leaf(start + *i as u64)]
            }
            Err(_) => Vec::new(),
        };
        let mirrored = if ids.is_empty() {
            Default::default()
        } else {
            self.store
                .nodes(self.watch.origin(), &ids)
                .await
                .map_err(store_err)?
        };
        let items = match page {
            Ok(items) => items,
            // The log will not serve entries its own signed checkpoint covers.
            Err(ClientError::Status { status, body, .. }) if status.is_client_error() => {
                return Err(entries_unavailable(status, &body))
            }
            Err(ClientError::Status { status, .. }) => {
                return Err(Stop::Transient(anyhow::anyhow!("GET {path}: {status}")))
            }
            // An entry that is not base64 no longer hashes to the leaf mirrored for it.
            Err(ClientError::Malformed { entry: Some(i), .. })
                if mirrored.contains_key(&NodeId::leaf(start + i as u64)) =>
            {
                return Err(entry_changed(start + i as u64))
            }
            Err(e @ ClientError::Malformed { .. }) => {
                return Err(Stop::Transient(anyhow::Error::new(e)))
            }
            Err(e) => return Err(client_stop(e, Some(cp))),
        };
        for (i, data) in items.iter().enumerate() {
            let index = start + i as u64;
            let Some(want) = mirrored.get(&NodeId::leaf(index)) else {
                continue;
            };
            if leaf_hash(data) != *want {
                return Err(entry_changed(index));
            }
        }
        Ok(())
    }

    /// POST our cosignature line (for `cp`) to the log. A failure is logged and the next round
    /// tries again; an answer over its cap or too slow is also an alert.
    async fn deliver(&self, line: &str, cp: &Checkpoint) {
        let origin = self.watch.origin();
        match self.client.post_cosignatures(&format!("{line}\n")).await {
            Ok(_) => tracing::info!(%origin, "cosignature delivered"),
            Err(ClientError::Status { status, body, .. }) => {
                tracing::warn!(%origin, %status, %body, "cosignature not accepted; retrying next round");
            }
            Err(ClientError::Malformed { detail, .. }) => {
                tracing::warn!(%origin, %detail, "cosignature delivered, but the log's answer is not {{\"stored\": n}}");
            }
            Err(e) => match client_stop(e, Some(cp)) {
                Stop::Alert {
                    kind,
                    detail,
                    size,
                    root,
                } => self.raise(kind, &detail, size, root).await,
                Stop::Transient(e) | Stop::Store(e) => {
                    tracing::warn!(%origin, error = %format!("{e:#}"), "cosignature not delivered; retrying next round");
                }
            },
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
