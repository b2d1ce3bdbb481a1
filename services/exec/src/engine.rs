//! The execution state machine of SPEC §4–§6: checks in order, nonce claim, handler, receipt.
//!
//! Every path ends in an [`Answer`]. Paths that change state (claim, handler, receipt) run in a
//! task of their own, so a client that hangs up cannot cancel a handler half way or leave it
//! without its receipt; shutdown waits for those tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openexec_core::artifact::{self, ApprovalRef, Format, RequestBinding};
use openexec_core::keys::{key_id, SigningKey, VerifyingKey};
use openexec_core::receipt::{Evidence, HandlerRef, Receipt, Status};
use openexec_core::{hash, json, payload};
use openexec_kit::clock::Clock;

pub use openexec_core::request::ExecRequest;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Mode};
use crate::handler::{Handler, Invocation, Registry, Violation};
use crate::log::ReceiptLog;
use crate::store::{
    Claim, ClaimResult, ClaimRow, ClaimStatus, NewReceipt, Settled, Store, StoreError,
    StoredReceipt,
};

/// Why a request was refused before any handler ran: the codes of SPEC §4–§5. What status
/// each is answered with is the HTTP layer's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    TenantNotServed,
    ActionNotAllowed,
    UnknownAction,
    InvalidPayload,
    ApprovalNotConfigured,
    ApprovalRequired,
    ApprovalMalformed,
    ApprovalUnknownKey,
    ApprovalBadSignature,
    ApprovalTenantMismatch,
    ApprovalRequestMismatch,
    ApprovalExpired,
    ApprovalNotYetValid,
    ApprovalQuorumUnmet,
    ApprovalReused,
    NonceConflict,
}

impl RefusalCode {
    /// The SPEC code, as answers and receipts carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::TenantNotServed => "tenant_not_served",
            RefusalCode::ActionNotAllowed => "action_not_allowed",
            RefusalCode::UnknownAction => "unknown_action",
            RefusalCode::InvalidPayload => "invalid_payload",
            RefusalCode::ApprovalNotConfigured => "approval_not_configured",
            RefusalCode::ApprovalRequired => "approval_required",
            RefusalCode::ApprovalMalformed => "approval_malformed",
            RefusalCode::ApprovalUnknownKey => "approval_unknown_key",
            RefusalCode::ApprovalBadSignature => "approval_bad_signature",
            RefusalCode::ApprovalTenantMismatch => "approval_tenant_mismatch",
            RefusalCode::ApprovalRequestMismatch => "approval_request_mismatch",
            RefusalCode::ApprovalExpired => "approval_expired",
            RefusalCode::ApprovalNotYetValid => "approval_not_yet_valid",
            RefusalCode::ApprovalQuorumUnmet => "approval_quorum_unmet",
            RefusalCode::ApprovalReused => "approval_reused",
            RefusalCode::NonceConflict => "nonce_conflict",
        }
    }

    fn of(r: &artifact::Rejection) -> RefusalCode {
        use artifact::Rejection as R;
        match r {
            R::Malformed(_) => RefusalCode::ApprovalMalformed,
            R::UnknownKey(_) => RefusalCode::ApprovalUnknownKey,
            R::BadSignature => RefusalCode::ApprovalBadSignature,
            R::TenantMismatch { .. } => RefusalCode::ApprovalTenantMismatch,
            R::RequestMismatch => RefusalCode::ApprovalRequestMismatch,
            R::Expired => RefusalCode::ApprovalExpired,
            R::NotYetValid => RefusalCode::ApprovalNotYetValid,
        }
    }
}

/// What the engine decided for one `POST /execute`. Only the HTTP layer turns it into a status
/// and a JSON body (`http::outcome_response`).
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The handler ran to a result and its receipt is durable (or this answers a replay of it).
    Executed {
        result: Value,
        evidence: Evidence,
        replayed: bool,
    },
    /// The handler ran and failed; the receipt's `code` says how.
    Failed {
        message: String,
        evidence: Evidence,
        replayed: bool,
    },
    /// Whether the handler took effect is unknown; it is never run again by itself.
    Interrupted {
        message: String,
        evidence: Evidence,
        replayed: bool,
    },
    /// Refused before any handler ran. `evidence` is the rejected receipt; `None` only when it
    /// could not be stored, and `receipt_error` then says why.
    Refused {
        code: RefusalCode,
        message: String,
        /// For `invalid_payload`: each failing place and rule (SPEC §10).
        details: Vec<Violation>,
        evidence: Option<Box<Evidence>>,
        receipt_error: Option<String>,
    },
    /// An identical request is still running after the replay wait.
    InProgress { exec_id: String },
    /// The store could not make this durable; the message says whether anything ran.
    StoreUnavailable { message: String },
    /// The execution task itself failed (a bug; the server log says more).
    Internal,
}

impl Outcome {
    /// The code counted in metrics: `executed`, `replayed`, or the error code.
    pub fn code(&self) -> &'static str {
        match self {
            Outcome::Executed {
                replayed: false, ..
            } => "executed",
            Outcome::Executed { replayed: true, .. } => "replayed",
            Outcome::Failed { .. } => "handler_failed",
            Outcome::Interrupted { .. } => "outcome_unknown",
            Outcome::Refused { code, .. } => code.as_str(),
            Outcome::InProgress { .. } => "in_progress",
            Outcome::StoreUnavailable { .. } => "store_unavailable",
            Outcome::Internal => "internal_error",
        }
    }

    /// The receipt evidence this outcome carries, if any.
    pub fn evidence_mut(&mut self) -> Option<&mut Evidence> {
        match self {
            Outcome::Executed { evidence, .. }
            | Outcome::Failed { evidence, .. }
            | Outcome::Interrupted { evidence, .. } => Some(evidence),
            Outcome::Refused { evidence, .. } => evidence.as_deref_mut(),
            _ => None,
        }
    }

    fn as_replay(&self) -> Outcome {
        let mut o = self.clone();
        if let Outcome::Executed { replayed, .. }
        | Outcome::Failed { replayed, .. }
        | Outcome::Interrupted { replayed, .. } = &mut o
        {
            *replayed = true;
        }
        o
    }
}

/// One well-formed attempt and its hashes.
struct Attempt {
    tenant_id: String,
    action: String,
    nonce: String,
    payload: Value,
    payload_error: Option<String>,
    intent_hash: String,
    request_hash: String,
    artifact: Option<Value>,
}

/// A refusal: its code, message, and the approval when it was authentic.
struct Refusal {
    code: RefusalCode,
    message: String,
    /// Each failing place of an `invalid_payload` (SPEC §10); empty otherwise.
    details: Vec<Violation>,
    approval: Option<Box<ApprovalRef>>,
}

impl Refusal {
    fn new(code: RefusalCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            details: Vec::new(),
            approval: None,
        }
    }

    fn rejection(r: &artifact::Rejection) -> Refusal {
        Refusal::new(RefusalCode::of(r), r.message())
    }
}

/// An artifact that passed every check: what the receipt records, and the key that makes it
/// single use ([`artifact::Artifact::single_use_key`]).
#[derive(Debug, Clone)]
struct Approved {
    approval: ApprovalRef,
    single_use: String,
}

/// Token buckets, one per tenant, for rejections that enter the log (SPEC §6,
/// `OPENEXEC_REJECTION_LOG_RATE`): a burst of one second's worth, refilled at `rate` per second.
struct RejectionBudget {
    rate: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RejectionBudget {
    fn new(rate: u32) -> RejectionBudget {
        RejectionBudget {
            rate: f64::from(rate),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token of `tenant`'s bucket at `now`; `false` when it is empty.
    fn take(&self, tenant: &str, now: Instant) -> bool {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = b.entry(tenant.to_string()).or_insert((self.rate, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The bucket that rejections of tenants not served here share: their names are the requester's
/// choice, so they never get a bucket each.
const UNSERVED_TENANTS: &str = "";

type Answered = Arc<Outcome>;

/// How a handler run ended, as the engine saw it.
enum Ran {
    Done(Result<Result<Value, openexec_handler::HandlerError>, tokio::task::JoinError>),
    /// Its timeout passed first.
    TimedOut,
    /// Shutdown's drain ended first.
    Stopped,
}

#[derive(Clone)]
struct Inflight {
    exec_id: String,
    done: watch::Receiver<Option<Answered>>,
}

enum Existing {
    /// Running in this process.
    Here(Inflight),
    Stored(Box<ClaimRow>),
}

/// Keys the service holds.
pub struct Keys {
    /// The key signing receipts now.
    pub receipt: SigningKey,
    pub receipt_key_id: String,
    /// Earlier receipt keys: published and trusted for verification, never used to sign.
    pub previous_receipt: Vec<VerifyingKey>,
    pub approval: Vec<VerifyingKey>,
    /// The pinned approver roster (`OPENEXEC_APPROVER_ROSTER`), verified against `approval`.
    pub roster: Option<openexec_core::roster::Roster>,
}

impl Keys {
    pub fn new(receipt: SigningKey, approval: Vec<VerifyingKey>) -> Keys {
        Keys {
            receipt_key_id: key_id(&receipt.verifying_key()),
            receipt,
            previous_receipt: Vec::new(),
            approval,
            roster: None,
        }
    }

    /// Every receipt key that verifies, the signing one first.
    pub fn receipt_verifying(&self) -> Vec<VerifyingKey> {
        let mut v = vec![self.receipt.verifying_key()];
        v.extend(self.previous_receipt.iter().copied());
        v
    }
}

pub struct Engine {
    cfg: Config,
    store: Arc<Store>,
    log: Arc<ReceiptLog>,
    handlers: Registry,
    keys: Keys,
    inflight: Mutex<HashMap<(String, String), Inflight>>,
    tasks: TaskTracker,
    /// Claims whose receipt could not be written; turned into `interrupted` once the store is back.
    orphaned: Mutex<Vec<(String, String)>>,
    /// Claims this process made whose outcome is not stored yet: their handler is running (or
    /// their receipt is being written). Recovery never touches these.
    claimed: Mutex<std::collections::HashSet<(String, String)>>,
    rejections: RejectionBudget,
    /// Cancelled when shutdown stops waiting for running handlers.
    stop_handlers: tokio_util::sync::CancellationToken,
    /// The time approval windows are checked against.
    clock: Arc<dyn Clock>,
}

const POLL: Duration = Duration::from_millis(20);

impl Engine {
    pub fn new(
        cfg: Config,
        store: Store,
        log: ReceiptLog,
        handlers: Registry,
        keys: Keys,
        clock: Arc<dyn Clock>,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            clock,
            store: Arc::new(store),
            log: Arc::new(log),
            handlers,
            keys,
            inflight: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            orphaned: Mutex::new(Vec::new()),
            claimed: Mutex::new(std::collections::HashSet::new()),
            rejections: RejectionBudget::new(cfg.rejection_log_rate),
            stop_handlers: tokio_util::sync::CancellationToken::new(),
            cfg,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store, shared (the log's routes hold it).
    pub fn store_arc(&self) -> Arc<Store> {
        self.store.clone()
    }

    pub fn log(&self) -> &ReceiptLog {
        &self.log
    }

    /// Sign checkpoints until the store closes.
    pub async fn log_loop(self: Arc<Self>) {
        self.log.clone().run(self.store.clone()).await
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn handlers(&self) -> &Registry {
        &self.handlers
    }

    /// The actions that may run here: registered and, when there is an allow-list, on it
    /// (`GET /actions`, SPEC §10), sorted by name.
    pub fn runnable(&self) -> impl Iterator<Item = (&str, &crate::handler::Action)> {
        self.handlers.entries().filter(|(name, _)| {
            self.cfg
                .allowed_actions
                .as_ref()
                .is_none_or(|list| list.iter().any(|a| a == name))
        })
    }

    /// Turn claims left `running` by a process that died into `interrupted` receipts. Run at
    /// start-up before serving, and again whenever a receipt could not be written.
    pub async fn recover_interrupted(&self) -> Result<usize, StoreError> {
        let rows = self.store.running().await?;
        let mut n = 0;
        let mut dead_owners = std::collections::BTreeSet::new();
        for row in rows {
            let key = (row.tenant_id.clone(), row.nonce.clone());
            if row.owner == self.store.owner() {
                if self
                    .claimed
                    .lock()
                    .map(|c| c.contains(&key))
                    .unwrap_or(true)
                {
                    continue; // still running here
                }
            } else if self.store.owner_alive(&row.owner).await {
                continue; // running in another live process on this database
            } else {
                dead_owners.insert(row.owner.clone());
            }
            let mut receipt: Receipt = serde_json::from_str(&row.template).map_err(|e| {
                StoreError::Corrupt(format!("claim template of {}: {e}", row.exec_id))
            })?;
            receipt.status = Status::Interrupted;
            receipt.code = Some("outcome_unknown".into());
            receipt.result_hash = None;
            let rec = self.seal(&receipt, None, Some(INTERRUPTED_MESSAGE.into()));
            self.store
                .complete(&row.tenant_id, &row.nonce, ClaimStatus::Interrupted, rec.0)
                .await?;
            tracing::warn!(exec_id = %row.exec_id, tenant = %row.tenant_id, nonce = %row.nonce,
                "a handler was interrupted (the process stopped while it ran); its request now answers 409 outcome_unknown");
            n += 1;
        }
        for owner in dead_owners {
            self.store.forget_owner(&owner).await;
        }
        if let Ok(mut o) = self.orphaned.lock() {
            o.clear();
        }
        Ok(n)
    }

    /// Retry writing `interrupted` receipts for claims whose receipt write failed, until the
    /// store takes them, and (every few seconds) for claims of other processes on the same
    /// database that died. Runs until the process ends.
    pub async fn repair_loop(self: Arc<Self>) {
        let mut tick: u64 = 0;
        let mut failing = false;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tick += 1;
            let pending = self.orphaned.lock().map(|o| !o.is_empty()).unwrap_or(false);
            if pending || failing || tick.is_multiple_of(5) {
                match self.recover_interrupted().await {
                    // Said only when something happened: a quiet loop logs nothing.
                    Ok(n) if failing || n > 0 => {
                        failing = false;
                        tracing::info!(recovered = n, "store is back; interrupted receipts written")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failing = true;
                        tracing::warn!(error = %e, "store still unavailable; will retry")
                    }
                }
            }
        }
    }

    /// Stop waiting for running handlers: each is told (its cancellation token) and dropped, and
    /// its request becomes `interrupted`.
    pub fn cut_off_handlers(&self) {
        if !self.stop_handlers.is_cancelled() {
            tracing::warn!(
                running = self.tasks.len(),
                "cutting off running handlers; their requests become interrupted"
            );
            self.stop_handlers.cancel();
        }
    }

    /// Graceful shutdown: wait up to `grace` for running executions to finish; then cut off
    /// what still runs (those requests become `interrupted`, their receipts written now), sign
    /// a last checkpoint and close the store.
    pub async fn shutdown(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            self.cut_off_handlers();
            // What remains is writing receipts; a store that does not take them leaves the
            // claims running, and the next start turns them into `interrupted`.
            if tokio::time::timeout(Duration::from_secs(10), self.tasks.wait())
                .await
                .is_err()
            {
                tracing::error!("receipts of cut-off handlers not written within 10 s; the next start records them as interrupted");
            }
        }
        // The last receipts get a checkpoint before the store closes (from the sequencer; on
        // PostgreSQL another replica signs them otherwise).
        if matches!(self.store.sequencer().await, Ok(true)) {
            if let Err(e) = self.log.sign_head(&*self.store).await {
                tracing::warn!(error = %e, "no final checkpoint");
            }
        }
        self.store.close().await;
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Inflight>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handle one request to `POST /execute`.
    pub async fn execute(self: &Arc<Self>, req: ExecRequest) -> Outcome {
        let answer = self.execute_inner(req).await;
        metrics::counter!("openexec_requests_total", "code" => answer.code()).increment(1);
        answer
    }

    async fn execute_inner(self: &Arc<Self>, req: ExecRequest) -> Outcome {
        let tenant_id = req
            .tenant_id
            .unwrap_or_else(|| self.cfg.default_tenant().to_string());
        let (payload, payload_error) =
            match payload::normalize(req.payload.as_ref(), self.cfg.max_depth) {
                Ok(p) => (p, None),
                // The rejected receipt hashes the payload as the string that was sent.
                Err(m) => (req.payload.clone().unwrap_or(Value::Null), Some(m)),
            };
        let att = Attempt {
            intent_hash: hash::intent_hash(&req.action, &payload),
            request_hash: hash::request_hash(&req.action, &req.nonce, &payload, &tenant_id),
            tenant_id,
            action: req.action,
            nonce: req.nonce,
            payload,
            payload_error,
            artifact: match self.cfg.mode {
                Mode::Demo => None, // demo mode ignores an artifact, as the original did
                Mode::Clawshield => req.artifact,
            },
        };

        if !self.cfg.serves(&att.tenant_id) {
            let msg = format!(
                "Tenant '{}' is not served here (OPENEXEC_TENANTS)",
                att.tenant_id
            );
            return self
                .refuse(&att, None, Refusal::new(RefusalCode::TenantNotServed, msg))
                .await;
        }
        if let Some(list) = &self.cfg.allowed_actions {
            if !list.iter().any(|a| a == &att.action) {
                let msg = format!("Action '{}' is not in the execution allow-list", att.action);
                return self
                    .refuse(&att, None, Refusal::new(RefusalCode::ActionNotAllowed, msg))
                    .await;
            }
        }
        let Some(handler) = self.handlers.get(&att.action).cloned() else {
            let msg = format!("Unknown action: {}", att.action);
            return self
                .refuse(&att, None, Refusal::new(RefusalCode::UnknownAction, msg))
                .await;
        };

        // The nonce comes next in SPEC order. A duplicate running in this process is found in
        // memory; one stored earlier is found by the claim itself (it reads back the row that
        // holds the nonce), so the fast path makes no separate read. Before a refusal is given,
        // the store is asked, so a request identical to a stored one still gets its stored answer.
        let running_here = self
            .lock_inflight()
            .get(&(att.tenant_id.clone(), att.nonce.clone()))
            .cloned();
        if let Some(f) = running_here {
            return self
                .answer_existing(&att, &handler, Existing::Here(f))
                .await;
        }

        let checked = self.check_request(&att, &handler);
        let approval = match checked {
            Ok(approval) => approval,
            Err(refusal) => {
                return match self.store.lookup(&att.tenant_id, &att.nonce).await {
                    Err(e) => store_unavailable(&e),
                    Ok(Some(row)) => {
                        self.answer_existing(&att, &handler, Existing::Stored(Box::new(row)))
                            .await
                    }
                    Ok(None) => self.refuse(&att, Some(&handler), refusal).await,
                };
            }
        };
        self.claim_and_run(att, handler, approval).await
    }

    /// The checks after the nonce lookup, in SPEC order: payload, then (clawshield mode) the
    /// approval with its time window. `Ok` carries the approval to record.
    fn check_request(
        &self,
        att: &Attempt,
        handler: &Arc<dyn Handler>,
    ) -> Result<Option<Approved>, Refusal> {
        if let Some(m) = &att.payload_error {
            let msg = format!(
                "payload is a string that starts like a JSON object but does not parse: {m}"
            );
            return Err(Refusal::new(RefusalCode::InvalidPayload, msg));
        }
        handler.validate(&att.payload).map_err(|i| Refusal {
            details: i.details,
            ..Refusal::new(RefusalCode::InvalidPayload, i.message)
        })?;
        match self.cfg.mode {
            Mode::Demo => Ok(None),
            Mode::Clawshield => self.check_approval(att, true).map(Some),
        }
    }

    /// The nonce is taken: a conflict, a replay, or a wait for the running first attempt.
    async fn answer_existing(
        &self,
        att: &Attempt,
        handler: &Arc<dyn Handler>,
        ex: Existing,
    ) -> Outcome {
        let exec_id = match &ex {
            Existing::Here(f) => &f.exec_id,
            Existing::Stored(r) => &r.exec_id,
        };
        if self.cfg.mode == Mode::Clawshield {
            // Only a request whose artifact is authentic and bound to it learns anything about
            // the nonce (SPEC §4): anyone else gets the artifact's own refusal, so the answer
            // never tells a stranger which nonces exist. An honest retry of an approved request
            // gets its stored answer: its time window and single use are not checked again.
            if let Err(r) = self.check_approval(att, false) {
                return self.refuse(att, Some(handler), r).await;
            }
        }
        if *exec_id != att.request_hash {
            let msg = format!(
                "Nonce '{}' was already used for a different request (tenant '{}'); use a new nonce",
                att.nonce, att.tenant_id
            );
            return self
                .refuse(
                    att,
                    Some(handler),
                    Refusal::new(RefusalCode::NonceConflict, msg),
                )
                .await;
        }
        let deadline = Instant::now() + self.cfg.replay_wait;
        match ex {
            Existing::Here(mut f) => {
                let waited = tokio::time::timeout_at(deadline.into(), async {
                    // Clone out of the watch guard at once: it must not be held across an await.
                    f.done.wait_for(Option::is_some).await.map(|a| a.clone())
                })
                .await;
                match waited {
                    Ok(Ok(a)) => match a {
                        Some(a) => a.as_replay(),
                        None => in_progress(att),
                    },
                    // The first attempt's task ended without an answer: read what the store says.
                    Ok(Err(_)) => self.poll_stored(att, deadline).await,
                    Err(_) => in_progress(att),
                }
            }
            Existing::Stored(row) => match stored_answer(&row, true) {
                Some(a) => self.with_inclusion(&row, a).await,
                None => self.poll_stored(att, deadline).await,
            },
        }
    }

    /// A stored answer's evidence gets its inclusion proof and checkpoint once a signed
    /// checkpoint covers it (a store error leaves the evidence as it is: the answer stands).
    async fn with_inclusion(&self, row: &ClaimRow, mut a: Outcome) -> Outcome {
        if let Some(r) = &row.receipt {
            if let Ok(Some(inc)) = self
                .log
                .inclusion(&*self.store, r.log_index, &r.logged_at)
                .await
            {
                if let Some(ev) = a.evidence_mut() {
                    ev.inclusion = Some(inc);
                }
            }
        }
        a
    }

    /// Wait for a claim held elsewhere (another process, or a receipt write that failed) to get
    /// its outcome.
    async fn poll_stored(&self, att: &Attempt, deadline: Instant) -> Outcome {
        loop {
            match self.store.lookup(&att.tenant_id, &att.nonce).await {
                Err(e) => return store_unavailable(&e),
                Ok(Some(row)) => {
                    if let Some(a) = stored_answer(&row, true) {
                        return self.with_inclusion(&row, a).await;
                    }
                }
                Ok(None) => {
                    return store_unavailable(&StoreError::Unavailable(
                        "the claim of this nonce was not found".into(),
                    ))
                }
            }
            if Instant::now() + POLL > deadline {
                return in_progress(att);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The artifact checks of SPEC §4 from "artifact present" on. With `fresh`, also the time
    /// window (single use is the claim's).
    fn check_approval(&self, att: &Attempt, fresh: bool) -> Result<Approved, Refusal> {
        if self.keys.approval.is_empty() {
            // 403 as the original answered; `/ready` fails in this state.
            return Err(Refusal::new(
                RefusalCode::ApprovalNotConfigured,
                "CLAWSHIELD_PUBLIC_KEY not configured",
            ));
        }
        let Some(raw) = &att.artifact else {
            return Err(Refusal::new(
                RefusalCode::ApprovalRequired,
                "ClawShield mode requires an approval artifact",
            ));
        };
        let art =
            artifact::parse(raw).map_err(|m| Refusal::new(RefusalCode::ApprovalMalformed, m))?;
        // A v0 artifact names no nonce and was only ever issued for the configured tenant (as
        // in the original): its tenant is checked against that one, whatever the request says.
        let configured = self.cfg.default_tenant();
        let v0 = art.format() == Format::V0;
        let binding = RequestBinding {
            tenant_id: if v0 { configured } else { &att.tenant_id },
            action: &att.action,
            nonce: &att.nonce,
            payload: &att.payload,
            request_hash: &att.request_hash,
            intent_hash: &att.intent_hash,
        };
        let now = self.clock.now();
        let approval = artifact::verify(
            &art,
            &self.keys.approval,
            &binding,
            now,
            self.cfg.clock_skew_seconds,
            false,
        )
        .map_err(|r| Refusal::rejection(&r))?;
        if v0 && att.tenant_id != configured {
            let r = artifact::Rejection::TenantMismatch {
                expected: configured.to_string(),
                got: att.tenant_id.clone(),
            };
            return Err(Refusal::rejection(&r));
        }
        if fresh {
            if let Err(r) = artifact::check_window(&art, now, &self.cfg.approval_window()) {
                return Err(Refusal {
                    approval: Some(Box::new(approval)),
                    ..Refusal::rejection(&r)
                });
            }
            // The action's floor (SPEC §4: `min_approvers` in the registry file, or
            // OPENEXEC_MIN_APPROVERS; the higher counts) and the artifact's own quorum need
            // valid signatures of distinct approvers of the pinned roster. Without a roster no
            // artifact meets a floor above 0: one gate key must never approve such an action.
            let floor = self
                .handlers
                .entry(&att.action)
                .map_or(0, |a| a.min_approvers)
                .max(
                    self.cfg
                        .min_approvers
                        .get(&att.action)
                        .copied()
                        .unwrap_or(0),
                );
            let unmet = match &self.keys.roster {
                Some(roster) => openexec_core::roster::check_quorum(&art, roster, floor).err(),
                None if floor > 0 => Some(format!(
                    "Action '{}' needs {floor} approver signatures checked against a pinned approver roster (min_approvers); this OpenExec has no approver roster (OPENEXEC_APPROVER_ROSTER), so no artifact meets the floor",
                    att.action
                )),
                None => None,
            };
            if let Some(msg) = unmet {
                return Err(Refusal {
                    approval: Some(Box::new(approval)),
                    ..Refusal::new(RefusalCode::ApprovalQuorumUnmet, msg)
                });
            }
        }
        Ok(Approved {
            single_use: art.single_use_key(&approval.key_id),
            approval,
        })
    }

    async fn claim_and_run(
        self: &Arc<Self>,
        att: Attempt,
        handler: Arc<dyn Handler>,
        approval: Option<Approved>,
    ) -> Outcome {
        let key = (att.tenant_id.clone(), att.nonce.clone());
        let (tx, rx) = watch::channel(None);
        let running_here = {
            let mut map = self.lock_inflight();
            match map.get(&key) {
                Some(f) => Some(f.clone()),
                None => {
                    map.insert(
                        key.clone(),
                        Inflight {
                            exec_id: att.request_hash.clone(),
                            done: rx,
                        },
                    );
                    None
                }
            }
        };
        if let Some(f) = running_here {
            return self
                .answer_existing(&att, &handler, Existing::Here(f))
                .await;
        }
        let this = self.clone();
        let task = self.tasks.spawn(async move {
            let answer = this.run_claimed(&att, &handler, approval).await;
            let answer = Arc::new(answer);
            let _ = tx.send(Some(answer.clone()));
            this.lock_inflight().remove(&key);
            answer
        });
        match task.await {
            Ok(a) => (*a).clone(),
            Err(e) => {
                tracing::error!(error = %e, "execution task failed");
                Outcome::Internal
            }
        }
    }

    async fn run_claimed(
        self: &Arc<Self>,
        att: &Attempt,
        handler: &Arc<dyn Handler>,
        approved: Option<Approved>,
    ) -> Outcome {
        let (approval, approval_key) = match approved {
            Some(a) => (Some(a.approval), Some(a.single_use)),
            None => (None, None),
        };
        if !handler.effects() {
            return self.run_settled(att, handler, approval, approval_key).await;
        }
        let template = self.receipt(
            att,
            Some(handler),
            approval.clone(),
            Status::Executed,
            None,
            None,
        );
        let template =
            String::from_utf8(json::canonicalize(&template.to_value())).unwrap_or_default();
        let claim = claim_of(att, template, approval_key);
        // Marked before the claim is sent: recovery must never see our own fresh claim unmarked.
        let key = (att.tenant_id.clone(), att.nonce.clone());
        if let Ok(mut c) = self.claimed.lock() {
            c.insert(key.clone());
        }
        let claimed = self.store.claim(claim).await;
        if !matches!(claimed, Ok(ClaimResult::Claimed)) {
            if let Ok(mut c) = self.claimed.lock() {
                c.remove(&key);
            }
        }
        match claimed {
            Err(e) => return self.after_failed_claim(att, handler, &e).await,
            Ok(ClaimResult::Claimed) => {}
            Ok(c) => return self.not_claimed(att, handler, approval, c).await,
        }

        // The claim is durable: run the handler, at most once.
        metrics::counter!("openexec_handler_runs_total", "action" => att.action.clone())
            .increment(1);
        let (receipt, result, message, status) =
            self.run_handler(att, handler, approval.clone()).await;
        let (rec, evidence) = self.seal(&receipt, result.as_ref(), message.clone());
        let stored = self
            .store
            .complete(&att.tenant_id, &att.nonce, status, rec)
            .await;
        if let Ok(mut c) = self.claimed.lock() {
            c.remove(&(att.tenant_id.clone(), att.nonce.clone()));
        }
        match stored {
            Ok(log_index) => fresh_answer(status, result, message, evidence, log_index),
            Err(e) => {
                // The handler ran but its receipt is not durable: never report success. The claim
                // stays `running` and becomes `interrupted` once the store takes writes again.
                tracing::error!(error = %e, exec_id = %att.request_hash, "receipt could not be stored after the handler ran");
                if let Ok(mut o) = self.orphaned.lock() {
                    o.push((att.tenant_id.clone(), att.nonce.clone()));
                }
                Outcome::StoreUnavailable {
                    message: format!(
                        "The handler ran but its receipt could not be stored ({e}); this request will answer 409 outcome_unknown once the store is back"
                    ),
                }
            }
        }
    }

    /// The answer when a claim could not be written (writes are failing): a request answered
    /// before can still be answered from a read; anything else runs nothing.
    async fn after_failed_claim(
        &self,
        att: &Attempt,
        handler: &Arc<dyn Handler>,
        e: &StoreError,
    ) -> Outcome {
        match self.store.lookup(&att.tenant_id, &att.nonce).await {
            Ok(Some(row)) => {
                self.answer_existing(att, handler, Existing::Stored(Box::new(row)))
                    .await
            }
            _ => store_unavailable(e),
        }
    }

    /// The answer when the claim was not ours: the nonce's stored answer, or the refusal of an
    /// approval already used.
    async fn not_claimed(
        &self,
        att: &Attempt,
        handler: &Arc<dyn Handler>,
        approval: Option<ApprovalRef>,
        c: ClaimResult,
    ) -> Outcome {
        match c {
            ClaimResult::NonceTaken(row) => {
                self.answer_existing(att, handler, Existing::Stored(row))
                    .await
            }
            ClaimResult::ApprovalReused { exec_id } => {
                let id = approval.as_ref().map(|a| a.approval_id.as_str());
                let msg = format!(
                    "Approval '{}' has already been used (by execution {exec_id}); each approval runs one request",
                    id.unwrap_or_default()
                );
                let r = Refusal {
                    approval: approval.map(Box::new),
                    ..Refusal::new(RefusalCode::ApprovalReused, msg)
                };
                self.refuse(att, Some(handler), r).await
            }
            ClaimResult::Claimed => {
                tracing::error!(exec_id = %att.request_hash, "a claim answered as not claimed");
                Outcome::Internal
            }
        }
    }

    /// An action without effects (SPEC §10): run it first, then claim the nonce and store its
    /// receipt in one commit. Running it twice cannot be observed, so a nonce found taken (or an
    /// approval found used) at the commit only means its result is dropped and the stored
    /// answer (or the refusal) is given instead; nothing is answered before the commit.
    async fn run_settled(
        self: &Arc<Self>,
        att: &Attempt,
        handler: &Arc<dyn Handler>,
        approval: Option<ApprovalRef>,
        approval_key: Option<String>,
    ) -> Outcome {
        let (receipt, result, message, status) =
            self.run_handler(att, handler, approval.clone()).await;
        let (rec, evidence) = self.seal(&receipt, result.as_ref(), message.clone());
        // No template: a settled claim is never running, so never recovered from it.
        let claim = claim_of(att, String::new(), approval_key);
        let settled = self.store.settle(claim, status, rec).await;
        // `openexec_handler_runs_total` counts the runs whose outcome is recorded (for an
        // action with effects, every run: its claim came first); a run of an action without
        // effects whose result was dropped at the commit is counted apart.
        let counter = match settled {
            Ok(Settled::Logged(_)) => "openexec_handler_runs_total",
            _ => "openexec_handler_discarded_total",
        };
        metrics::counter!(counter, "action" => att.action.clone()).increment(1);
        match settled {
            Ok(Settled::Logged(log_index)) => {
                fresh_answer(status, result, message, evidence, log_index)
            }
            Ok(Settled::Refused(c)) => self.not_claimed(att, handler, approval, c).await,
            // Nothing is stored; a request answered before can still be answered from a read.
            Err(e) => self.after_failed_claim(att, handler, &e).await,
        }
    }

    /// Run a claimed (or, without effects, about to be settled) request's handler once, within
    /// its timeout: the receipt of its outcome, its result or message, and the claim's status.
    /// It runs in a task of its own so that a panic inside it is a `failed` outcome, not a lost
    /// receipt.
    async fn run_handler(
        &self,
        att: &Attempt,
        handler: &Arc<dyn Handler>,
        approval: Option<ApprovalRef>,
    ) -> (Receipt, Option<Value>, Option<String>, ClaimStatus) {
        let started = Instant::now();
        let h = handler.clone();
        let (exec_id, tenant, action, nonce, payload) = (
            att.request_hash.clone(),
            att.tenant_id.clone(),
            att.action.clone(),
            att.nonce.clone(),
            att.payload.clone(),
        );
        let timeout = handler.timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let cancel = self.stop_handlers.child_token();
        let token = cancel.clone();
        let mut task = tokio::spawn(async move {
            let inv = Invocation {
                exec_id: &exec_id,
                tenant_id: &tenant,
                action: &action,
                nonce: &nonce,
                payload: &payload,
                deadline,
                cancel: token,
            };
            h.run(&inv).await
        });
        // The service stops waiting at the deadline, or when shutdown's drain is over; the
        // handler is then told (its token) and its task dropped.
        let ran = tokio::select! {
            r = &mut task => Ran::Done(r),
            _ = tokio::time::sleep_until(deadline) => Ran::TimedOut,
            _ = self.stop_handlers.cancelled() => Ran::Stopped,
        };
        if !matches!(ran, Ran::Done(_)) {
            cancel.cancel();
            task.abort();
        }
        metrics::histogram!("openexec_handler_seconds", "action" => att.action.clone())
            .record(started.elapsed().as_secs_f64());

        let finish = |status: Status, code: Option<String>, rh: Option<String>| {
            self.receipt(att, Some(handler), approval.clone(), status, code, rh)
        };
        let (receipt, result, message, status) = match ran {
            Ran::Done(Ok(Ok(result))) => {
                let rh = json::jcs_sha256(&result);
                let r = finish(Status::Executed, None, Some(rh));
                (r, Some(result), None, ClaimStatus::Executed)
            }
            Ran::Done(Ok(Err(e))) if e.unknown => {
                // The handler cannot tell whether it took effect (a request sent, no answer):
                // SPEC §5 — interrupted, never retried by itself.
                tracing::warn!(action = %att.action, exec_id = %att.request_hash, code = %e.code,
                    "handler could not tell whether it took effect; the request is interrupted");
                let r = finish(Status::Interrupted, Some(e.code.clone()), None);
                let m = format!(
                    "{}; whether it took effect is unknown. It will not be run again.",
                    e.message
                );
                (r, None, Some(m), ClaimStatus::Interrupted)
            }
            Ran::Done(Ok(Err(e))) => {
                let r = finish(Status::Failed, Some(e.code.clone()), None);
                (r, None, Some(e.message), ClaimStatus::Failed)
            }
            Ran::Done(Err(e)) => {
                tracing::error!(error = %e, action = %att.action, "handler panicked");
                let r = finish(Status::Failed, Some("handler_panicked".into()), None);
                let m = "the handler panicked".to_string();
                (r, None, Some(m), ClaimStatus::Failed)
            }
            Ran::TimedOut if !handler.effects() => {
                tracing::warn!(action = %att.action, timeout_ms = timeout.as_millis() as u64,
                    "handler timed out; it has no effects, so the request is failed");
                let r = finish(Status::Failed, Some("handler_timeout".into()), None);
                let m = format!(
                    "the handler did not finish within its timeout of {} ms",
                    timeout.as_millis()
                );
                (r, None, Some(m), ClaimStatus::Failed)
            }
            Ran::TimedOut | Ran::Stopped => {
                let why = if matches!(ran, Ran::Stopped) {
                    "the service shut down before the handler finished".to_string()
                } else {
                    format!(
                        "the handler did not finish within its timeout of {} ms",
                        timeout.as_millis()
                    )
                };
                tracing::warn!(action = %att.action, exec_id = %att.request_hash, "{why}; the request is interrupted");
                let r = finish(Status::Interrupted, Some("outcome_unknown".into()), None);
                let m =
                    format!("{why}; whether it took effect is unknown. It will not be run again.");
                (r, None, Some(m), ClaimStatus::Interrupted)
            }
        };
        (receipt, result, message, status)
    }

    fn receipt(
        &self,
        att: &Attempt,
        handler: Option<&Arc<dyn Handler>>,
        approval: Option<ApprovalRef>,
        status: Status,
        code: Option<String>,
        result_hash: Option<String>,
    ) -> Receipt {
        Receipt {
            v: 1,
            exec_id: att.request_hash.clone(),
            tenant_id: att.tenant_id.clone(),
            action: att.action.clone(),
            nonce: att.nonce.clone(),
            intent_hash: att.intent_hash.clone(),
            request_hash: att.request_hash.clone(),
            mode: self.cfg.mode.as_str().to_string(),
            approval,
            status,
            code,
            result_hash,
            handler: handler.map(|h| HandlerRef {
                name: h.name().to_string(),
                digest: h.digest().to_string(),
            }),
        }
    }

    /// Hash and sign a receipt; the evidence's log index is filled in once stored.
    fn seal(
        &self,
        receipt: &Receipt,
        result: Option<&Value>,
        message: Option<String>,
    ) -> (NewReceipt, Evidence) {
        let value = receipt.to_value();
        let text = String::from_utf8(json::canonicalize(&value)).unwrap_or_default();
        let receipt_hash = json::sha256_hex(text.as_bytes());
        let signature = openexec_core::receipt::sign(&receipt_hash, &self.keys.receipt);
        let rec = NewReceipt {
            receipt_hash: receipt_hash.clone(),
            exec_id: receipt.exec_id.clone(),
            receipt: text,
            signature: signature.clone(),
            key_id: self.keys.receipt_key_id.clone(),
            result: result.map(|r| String::from_utf8(json::canonicalize(r)).unwrap_or_default()),
            message,
        };
        let ev = Evidence {
            receipt: value,
            receipt_hash,
            signature,
            key_id: self.keys.receipt_key_id.clone(),
            log_index: None,
            logged: None,
            inclusion: None,
        };
        (rec, ev)
    }

    /// Answer a refusal, with a `rejected` receipt. The same verdict given before is answered
    /// with the evidence stored then (as signed then, never re-signed: its log entry is what that
    /// signature covers). A new rejection that carries no verified artifact enters the log only
    /// within the tenant's `OPENEXEC_REJECTION_LOG_RATE`; past it the answer still carries the
    /// signed receipt, with `"log_index": null, "logged": false`, and nothing is stored.
    async fn refuse(
        &self,
        att: &Attempt,
        handler: Option<&Arc<dyn Handler>>,
        r: Refusal,
    ) -> Outcome {
        let verified = r.approval.is_some();
        let receipt = self.receipt(
            att,
            handler,
            r.approval.map(|a| *a),
            Status::Rejected,
            Some(r.code.as_str().to_string()),
            None,
        );
        let (rec, ev) = self.seal(&receipt, None, Some(r.message.clone()));
        let refused =
            |evidence: Option<Evidence>, receipt_error: Option<String>| Outcome::Refused {
                code: r.code,
                message: r.message.clone(),
                details: r.details.clone(),
                evidence: evidence.map(Box::new),
                receipt_error,
            };
        let unstored = |e: StoreError| {
            // The verdict stands; only its receipt is missing. Say so rather than hide it.
            tracing::error!(error = %e, code = r.code.as_str(), "rejected receipt could not be stored");
            refused(None, Some(e.to_string()))
        };
        match self.store.receipt_by_hash(&ev.receipt_hash).await {
            Ok(Some(stored)) => {
                let mut ev = evidence_of(&stored);
                ev.inclusion = self
                    .log
                    .inclusion(&*self.store, stored.log_index, &stored.logged_at)
                    .await
                    .unwrap_or(None);
                return refused(Some(ev), None);
            }
            Ok(None) => {}
            Err(e) => return unstored(e),
        }
        if !verified {
            let bucket = if self.cfg.serves(&att.tenant_id) {
                att.tenant_id.as_str()
            } else {
                UNSERVED_TENANTS
            };
            if !self.rejections.take(bucket, Instant::now()) {
                metrics::counter!("openexec_rejections_unlogged_total").increment(1);
                let ev = Evidence {
                    logged: Some(false),
                    ..ev
                };
                return refused(Some(ev), None);
            }
        }
        match self.store.add_receipt(rec).await {
            Ok(log_index) => refused(
                Some(Evidence {
                    log_index: Some(log_index),
                    ..ev
                }),
                None,
            ),
            Err(e) => unstored(e),
        }
    }

    /// Evidence for an execution, as `GET /receipts/{exec_id}` serves it: with its inclusion
    /// proof and checkpoint once a signed checkpoint covers it.
    pub async fn evidence_for(&self, exec_id: &str) -> Result<Option<Evidence>, StoreError> {
        let Some(r) = self.store.receipt_for(exec_id).await? else {
            return Ok(None);
        };
        let mut ev = evidence_of(&r);
        ev.inclusion = self
            .log
            .inclusion(&*self.store, r.log_index, &r.logged_at)
            .await?;
        Ok(Some(ev))
    }
}

const INTERRUPTED_MESSAGE: &str =
    "The process stopped while the handler ran; whether it took effect is unknown. It will not be run again.";

pub fn evidence_of(r: &StoredReceipt) -> Evidence {
    Evidence {
        receipt: r.receipt.clone(),
        receipt_hash: r.receipt_hash.clone(),
        signature: r.signature.clone(),
        key_id: r.key_id.clone(),
        log_index: Some(r.log_index),
        logged: None,
        inclusion: None,
    }
}

/// The stored answer of a finished claim; `None` while it is still running.
fn stored_answer(row: &ClaimRow, replayed: bool) -> Option<Outcome> {
    let r = row.receipt.as_ref()?;
    if row.status == ClaimStatus::Running {
        return None;
    }
    Some(outcome_answer(
        row.status,
        r.result.clone(),
        r.message.clone(),
        evidence_of(r),
        replayed,
    ))
}

/// The claim of `att` (its nonce, exec_id and action) with `template` and the approval to use.
fn claim_of(att: &Attempt, template: String, approval_key: Option<String>) -> Claim {
    Claim {
        tenant_id: att.tenant_id.clone(),
        nonce: att.nonce.clone(),
        exec_id: att.request_hash.clone(),
        action: att.action.clone(),
        template,
        approval_key,
    }
}

/// The answer of an outcome just stored at `log_index` (not a replay).
fn fresh_answer(
    status: ClaimStatus,
    result: Option<Value>,
    message: Option<String>,
    evidence: Evidence,
    log_index: u64,
) -> Outcome {
    let evidence = Evidence {
        log_index: Some(log_index),
        ..evidence
    };
    outcome_answer(status, result, message, evidence, false)
}

fn outcome_answer(
    status: ClaimStatus,
    result: Option<Value>,
    message: Option<String>,
    evidence: Evidence,
    replayed: bool,
) -> Outcome {
    match status {
        ClaimStatus::Executed | ClaimStatus::Running => Outcome::Executed {
            result: result.unwrap_or(Value::Null),
            evidence,
            replayed,
        },
        ClaimStatus::Failed => {
            let code = evidence
                .receipt
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or("handler_failed");
            let message = format!(
                "The handler failed ({code}): {}",
                message.unwrap_or_else(|| "no detail".into())
            );
            Outcome::Failed {
                message,
                evidence,
                replayed,
            }
        }
        ClaimStatus::Interrupted => Outcome::Interrupted {
            message: message.unwrap_or_else(|| INTERRUPTED_MESSAGE.into()),
            evidence,
            replayed,
        },
    }
}

fn store_unavailable(e: &StoreError) -> Outcome {
    Outcome::StoreUnavailable {
        message: format!("The store cannot make this durable, so nothing was run: {e}"),
    }
}

fn in_progress(att: &Attempt) -> Outcome {
    Outcome::InProgress {
        exec_id: att.request_hash.clone(),
    }
}
