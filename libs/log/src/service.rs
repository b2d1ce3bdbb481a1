//! A log as a service runs it, over any storage: the [`LogStore`] trait that a service's
//! database implements (SQLite, PostgreSQL, …), and [`LogService`], which signs checkpoints
//! without ever contradicting an earlier one, serves proofs and entries, and takes witnesses'
//! cosignatures. OpenExec's receipt log and ClawShield's decision log are both a `LogService`
//! over their own store.
//!
//! Appending is not part of the trait: a service appends a leaf in the same transaction as the
//! record it logs (so a receipt and its leaf are durable together), with [`crate::Frontier`],
//! storing the nodes `append` hands back. The trait is what the log needs afterwards.
//!
//! No runtime is used here: the trait's futures are run by whatever runtime the service has.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use crate::note::{self, CosignerVerifier, Signer, Verifier};
use crate::{plan_consistency, plan_inclusion, Hash, NodeId, ProofPlan};

/// A signed checkpoint as a store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    /// The signed note text (the log's own signature only).
    pub note: String,
}

/// The storage a log needs, implemented by each service for each database it runs on.
///
/// Contract (tested for every implementation in the services' store tests):
/// - `head` is the size and root over every entry committed so far, by any writer.
/// - `nodes` returns the stored complete nodes among `ids` (missing ones are simply absent).
/// - `add_checkpoint` refuses, atomically with respect to every other writer, a checkpoint of a
///   smaller size than the latest stored one, or of the same size with another root; storing the
///   same checkpoint again is not an error.
/// - `add_cosignature` keeps one line per witness and checkpoint size: the one with the newest
///   timestamp. It stores a line only when none is stored for that witness and size or the stored
///   one is older, atomically with respect to every other writer (so an older line replayed never
///   replaces a newer one, and the same line twice is stored once), and says whether it stored it.
pub trait LogStore: Send + Sync {
    /// The store's error: storage that is unavailable, refused or corrupt.
    type Error: std::fmt::Display + Send + 'static;

    /// The committed head: how many entries the log holds and the root over them.
    fn head(&self) -> impl Future<Output = Result<(u64, Hash), Self::Error>> + Send;

    /// A size the log is known to hold without asking the database (e.g. the head as of this
    /// process's last commit): never more than `head`'s. Range checks of requests use it first,
    /// and ask `head` only for a request beyond it.
    fn known_size(&self) -> u64;

    /// Why the stored log cannot be trusted (its start-up check failed), if it cannot. A log
    /// with a problem signs nothing.
    fn problem(&self) -> Option<String>;

    /// Stored complete nodes by id.
    fn nodes(
        &self,
        ids: &[NodeId],
    ) -> impl Future<Output = Result<HashMap<NodeId, Hash>, Self::Error>> + Send;

    /// The leaf data of entries `[start, end)`, in order.
    fn leaves(
        &self,
        start: u64,
        end: u64,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, Self::Error>> + Send;

    /// The latest stored checkpoint and the witness cosignature lines delivered for it.
    fn latest_checkpoint(
        &self,
    ) -> impl Future<Output = Result<Option<(StoredCheckpoint, Vec<String>)>, Self::Error>> + Send;

    /// Store a signed checkpoint (see the contract above).
    fn add_checkpoint(
        &self,
        cp: &StoredCheckpoint,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Store a witness's cosignature line, made at `timestamp`, for the checkpoint of `size`,
    /// unless a line of that witness for that size with a timestamp at least as new is stored
    /// (see the contract above); whether it was stored.
    fn add_cosignature(
        &self,
        size: u64,
        witness: &str,
        timestamp: u64,
        line: &str,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;
}

/// Why a log request was not served.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError<E> {
    /// The request asks for something the log cannot give (sizes out of range…).
    #[error("{0}")]
    BadRequest(String),
    /// Cosignatures arrived before any checkpoint was signed.
    #[error("the log has not signed a checkpoint yet")]
    NoCheckpoint,
    /// A cosignature line that no configured witness made for the latest checkpoint.
    #[error("{0}")]
    CosignatureRejected(String),
    /// More cosignature lines in one request than there are configured witnesses.
    #[error("{lines} cosignature lines in one request; at most {max} are taken (one per configured witness)")]
    TooManyCosignatures { lines: usize, max: usize },
    /// Signing would contradict an earlier checkpoint, or the stored log failed its check.
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error("{0}")]
    Store(E),
}

/// The inclusion of one entry in the latest signed checkpoint, as evidence carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inclusion {
    pub leaf_index: u64,
    pub tree_size: u64,
    pub hashes: Vec<Hash>,
    /// The checkpoint note with the witnesses' cosignature lines after the log's signature.
    pub checkpoint: String,
}

#[derive(Clone)]
struct Signed {
    cp: StoredCheckpoint,
    cosignatures: Vec<String>,
}

impl Signed {
    fn text(&self) -> String {
        let mut t = self.cp.note.clone();
        for l in &self.cosignatures {
            t.push_str(l.trim_end_matches('\n'));
            t.push('\n');
        }
        t
    }
}

/// Nodes at this level and above are cached: there are few of them (one per 2^level entries),
/// every proof needs some, and a complete node never changes.
const CACHED_LEVEL: u8 = 8;

/// The most cached nodes (about 32 bytes each, plus the map's overhead).
const MAX_CACHED: usize = 1 << 20;

/// The most entries one [`LogService::entries`] call returns.
pub const MAX_ENTRIES: u64 = 1000;

/// One log: its origin and key, the witnesses it accepts, and what it last signed.
pub struct LogService {
    signer: Signer,
    witnesses: Vec<CosignerVerifier>,
    latest: Mutex<Option<Signed>>,
    cache: Mutex<HashMap<NodeId, Hash>>,
}

impl LogService {
    /// A log named `origin`, signing with `key`, accepting cosignatures from `witnesses`.
    pub fn new(
        origin: &str,
        key: ed25519_dalek::SigningKey,
        witnesses: Vec<CosignerVerifier>,
    ) -> Result<LogService, note::NoteError> {
        let signer = Signer::new(origin, key)?;
        Ok(LogService {
            signer,
            witnesses,
            latest: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// The log's note verifier.
    pub fn verifier(&self) -> Verifier {
        self.signer.verifier()
    }

    /// The note verifier key (`<origin>+<hex key hash>+<base64(0x01 ‖ key)>`).
    pub fn verifier_key(&self) -> String {
        self.signer.verifier_key()
    }

    /// The witnesses whose cosignatures this log accepts.
    pub fn witnesses(&self) -> &[CosignerVerifier] {
        &self.witnesses
    }

    fn latest(&self) -> Option<Signed> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }

    /// The size of the latest checkpoint this service knows of (0 for none).
    pub fn signed_size(&self) -> u64 {
        self.latest().map(|s| s.cp.size).unwrap_or(0)
    }

    /// The latest checkpoint with the witnesses' cosignature lines after its own signature.
    pub fn checkpoint_text(&self) -> Option<String> {
        self.latest().map(|s| s.text())
    }

    /// Read the latest checkpoint from the store (at start-up, and on replicas that do not sign,
    /// to follow the one that does). Never goes back to a smaller checkpoint.
    pub async fn load<S: LogStore>(&self, store: &S) -> Result<(), S::Error> {
        let stored = store.latest_checkpoint().await?;
        if let (Some((cp, cosignatures)), Ok(mut l)) = (stored, self.latest.lock()) {
            let newer = match l.as_ref() {
                None => true,
                Some(s) => {
                    cp.size > s.cp.size
                        || (cp.size == s.cp.size && cosignatures.len() >= s.cosignatures.len())
                }
            };
            if newer {
                *l = Some(Signed { cp, cosignatures });
            }
        }
        Ok(())
    }

    /// Sign a checkpoint for the store's head if it moved past the last one; returns the size
    /// signed. Refuses when the stored log failed its check, or when the head would contradict
    /// the last checkpoint (smaller, or same size with another root).
    pub async fn sign_head<S: LogStore>(
        &self,
        store: &S,
    ) -> Result<Option<u64>, ServiceError<S::Error>> {
        if let Some(p) = store.problem() {
            return Err(ServiceError::Refused(format!("the log will not sign: {p}")));
        }
        let (size, root) = store.head().await.map_err(ServiceError::Store)?;
        if let Some(l) = self.latest() {
            if size < l.cp.size || (size == l.cp.size && root != l.cp.root) {
                return Err(ServiceError::Refused(format!(
                    "refusing to sign size {size} after a checkpoint of size {}",
                    l.cp.size
                )));
            }
            if size == l.cp.size {
                return Ok(None);
            }
        } else if size == 0 {
            return Ok(None);
        }
        let body = note::Checkpoint {
            origin: self.origin().to_string(),
            size,
            root,
            extensions: Vec::new(),
        }
        .body();
        let text = note::sign_note(&body, &[&self.signer])
            .map_err(|e| ServiceError::Refused(format!("cannot sign the checkpoint: {e}")))?;
        let cp = StoredCheckpoint {
            size,
            root,
            note: text,
        };
        store
            .add_checkpoint(&cp)
            .await
            .map_err(ServiceError::Store)?;
        if let Ok(mut l) = self.latest.lock() {
            if l.as_ref().is_none_or(|s| s.cp.size < size) {
                *l = Some(Signed {
                    cp,
                    cosignatures: Vec::new(),
                });
            }
        }
        Ok(Some(size))
    }

    /// The log's size for a request that needs `wanted` entries: the store's free lower bound
    /// when it suffices, else its committed head.
    async fn size_for<S: LogStore>(
        &self,
        store: &S,
        wanted: u64,
    ) -> Result<u64, ServiceError<S::Error>> {
        let known = store.known_size();
        if wanted <= known {
            return Ok(known);
        }
        Ok(store.head().await.map_err(ServiceError::Store)?.0)
    }

    /// Fetch the nodes a plan needs, the upper levels from the cache.
    async fn assemble<S: LogStore>(
        &self,
        store: &S,
        plan: &ProofPlan,
    ) -> Result<Vec<Hash>, String> {
        let wanted = plan.nodes();
        let mut found: HashMap<NodeId, Hash> = HashMap::with_capacity(wanted.len());
        let mut missing = Vec::new();
        if let Ok(cache) = self.cache.lock() {
            for id in &wanted {
                match cache.get(id) {
                    Some(h) => {
                        found.insert(*id, *h);
                    }
                    None => missing.push(*id),
                }
            }
        } else {
            missing = wanted;
        }
        if !missing.is_empty() {
            let got = store.nodes(&missing).await.map_err(|e| e.to_string())?;
            if let Ok(mut cache) = self.cache.lock() {
                if cache.len() < MAX_CACHED {
                    cache.extend(got.iter().filter(|(id, _)| id.level >= CACHED_LEVEL));
                }
            }
            found.extend(got);
        }
        plan.assemble_from_map(&found).map_err(|e| e.to_string())
    }

    /// The inclusion of entry `index` in the latest checkpoint; `None` while no checkpoint
    /// covers it yet.
    pub async fn inclusion<S: LogStore>(
        &self,
        store: &S,
        index: u64,
    ) -> Result<Option<Inclusion>, ServiceError<S::Error>> {
        let Some(latest) = self.latest() else {
            return Ok(None);
        };
        if index >= latest.cp.size {
            return Ok(None);
        }
        let plan = plan_inclusion(index, latest.cp.size)
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        let hashes = self
            .assemble(store, &plan)
            .await
            .map_err(ServiceError::Refused)?;
        Ok(Some(Inclusion {
            leaf_index: index,
            tree_size: latest.cp.size,
            hashes,
            checkpoint: latest.text(),
        }))
    }

    /// An inclusion proof of entry `index` in the tree of `size` entries.
    pub async fn proof_inclusion<S: LogStore>(
        &self,
        store: &S,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, ServiceError<S::Error>> {
        let head = self.size_for(store, size).await?;
        if size == 0 || size > head || index >= size {
            return Err(ServiceError::BadRequest(format!(
                "need index < tree_size <= {head} (the log's size), got index {index}, tree_size {size}"
            )));
        }
        let plan =
            plan_inclusion(index, size).map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        self.assemble(store, &plan)
            .await
            .map_err(ServiceError::Refused)
    }

    /// A consistency proof from the tree of `first` entries to the tree of `second`.
    pub async fn proof_consistency<S: LogStore>(
        &self,
        store: &S,
        first: u64,
        second: u64,
    ) -> Result<Vec<Hash>, ServiceError<S::Error>> {
        let head = self.size_for(store, second).await?;
        if first > second || second > head {
            return Err(ServiceError::BadRequest(format!(
                "need first <= second <= {head} (the log's size), got first {first}, second {second}"
            )));
        }
        if first == 0 || first == second {
            return Ok(Vec::new());
        }
        let plan =
            plan_consistency(first, second).map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        self.assemble(store, &plan)
            .await
            .map_err(ServiceError::Refused)
    }

    /// Leaf data of `[start, min(end, start + MAX_ENTRIES, size))`.
    pub async fn entries<S: LogStore>(
        &self,
        store: &S,
        start: u64,
        end: u64,
    ) -> Result<Vec<Vec<u8>>, ServiceError<S::Error>> {
        let head = self
            .size_for(store, end.min(start.saturating_add(MAX_ENTRIES)))
            .await?;
        if start >= end || start >= head {
            return Err(ServiceError::BadRequest(format!(
                "need start < end and start < {head} (the log's size), got start {start}, end {end}"
            )));
        }
        let end = end.min(head).min(start + MAX_ENTRIES);
        store.leaves(start, end).await.map_err(ServiceError::Store)
    }

    /// Most cosignature lines one request may carry: one per configured witness (at least 1,
    /// so that a line from an unknown witness gets its own refusal).
    pub fn max_cosignature_lines(&self) -> usize {
        self.witnesses.len().max(1)
    }

    /// Take witnesses' cosignature lines for the latest checkpoint. A request of more lines than
    /// [`Self::max_cosignature_lines`] is refused before any is checked; every line must be a
    /// configured witness's valid cosignature of the latest checkpoint, else nothing is stored.
    /// Of one witness's lines only the newest is taken; the store keeps the newest per witness
    /// and checkpoint, so a line seen before, or older than the stored one, changes nothing.
    /// Returns how many lines were stored (new, or newer than the stored one).
    pub async fn add_cosignatures<S: LogStore>(
        &self,
        store: &S,
        text: &str,
    ) -> Result<usize, ServiceError<S::Error>> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let max = self.max_cosignature_lines();
        if lines.len() > max {
            return Err(ServiceError::TooManyCosignatures {
                lines: lines.len(),
                max,
            });
        }
        let Some(latest) = self.latest() else {
            return Err(ServiceError::NoCheckpoint);
        };
        let opened = note::open_note(&latest.cp.note, &self.signer.verifier())
            .map_err(|e| ServiceError::Refused(format!("the stored checkpoint: {e}")))?;
        // Every line checked before anything is stored; per witness, the newest line.
        let mut newest: Vec<(&str, u64, &str)> = Vec::with_capacity(lines.len());
        for line in lines {
            let (witness, timestamp) = self
                .witnesses
                .iter()
                .find_map(|w| {
                    note::verify_cosignature(line, &opened.body, w)
                        .ok()
                        .map(|t| (w.name(), t))
                })
                .ok_or_else(|| {
                    ServiceError::CosignatureRejected(format!(
                        "'{line}' is not a valid cosignature of the checkpoint of size {} by a configured witness",
                        latest.cp.size
                    ))
                })?;
            match newest.iter_mut().find(|(w, _, _)| *w == witness) {
                Some(n) if n.1 < timestamp => *n = (witness, timestamp, line),
                Some(_) => {}
                None => newest.push((witness, timestamp, line)),
            }
        }
        let mut stored = 0;
        for (witness, timestamp, line) in newest {
            if !store
                .add_cosignature(latest.cp.size, witness, timestamp, line)
                .await
                .map_err(ServiceError::Store)?
            {
                continue;
            }
            stored += 1;
            if let Ok(mut l) = self.latest.lock() {
                if let Some(s) = l.as_mut().filter(|s| s.cp.size == latest.cp.size) {
                    let prefix = format!("— {witness} ");
                    let held = s.cosignatures.iter().position(|c| c.starts_with(&prefix));
                    match held {
                        // Another request may have stored a newer one meanwhile.
                        Some(i) if line_timestamp(&s.cosignatures[i]) >= Some(timestamp) => {}
                        Some(i) => s.cosignatures[i] = line.to_string(),
                        None => s.cosignatures.push(line.to_string()),
                    }
                }
            }
        }
        Ok(stored)
    }
}

/// The timestamp a cosignature line carries (unverified: for lines verified when they were taken).
fn line_timestamp(line: &str) -> Option<u64> {
    let parsed = note::SignatureLine::parse(line).ok()?;
    Some(u64::from_be_bytes(
        parsed.signature.get(..8)?.try_into().ok()?,
    ))
}
