//! The gate's decisions: proposals through policy and the breakers, votes to a quorum (or a
//! denial), expiry, freezes, policy activation, and the artifacts and decision log entries they
//! produce. Only [`crate::http`] knows about routes; only [`crate::store`] about the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use openexec_core::keys::{key_id, SigningKey};
use openexec_kit::clock::Clock;
use openexec_kit::ApiError;
use openexec_policy::{Bundle, Decision, Effect};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::identity::{Identities, Identity, Kind};
use crate::log::DecisionLog;
use crate::model::{
    derived_id, entry, entry_id, DecisionView, EntryFields, Needs, Proposal, VoteView,
    ACTIVATE_ACTION,
};
use crate::store::{
    Breakers, LoopCount, NewEntry, NewProposal, ProposalRow, Proposed, Reserve, Store, StoreError,
    Update, VoteRow,
};

/// A refusal: its error answer and, for a rate limit, when to come back.
#[derive(Debug)]
pub struct Refusal {
    pub error: ApiError,
    pub retry_after: Option<u64>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Refusal {
        Refusal {
            error,
            retry_after: None,
        }
    }
}

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
    ApiError::new(status, code, message).into()
}

fn store_err(e: StoreError) -> Refusal {
    tracing::error!(error = %e, "store error");
    let status = match e {
        StoreError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    refuse(status, "store_unavailable", e.to_string())
}

pub type Answer = Result<(StatusCode, Value), Refusal>;

/// The policy in force.
#[derive(Clone)]
pub struct ActivePolicy {
    pub bundle: Arc<Bundle>,
    pub version: i64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    tripped: bool,
}

/// Token buckets per key (this process's: with N replicas each allows the rate, N× in all).
struct Rates {
    per_second: f64,
    capacity: f64,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

impl Rates {
    fn new(per_second: u32, burst_seconds: u32) -> Rates {
        Rates {
            per_second: per_second as f64,
            capacity: (per_second as f64 * burst_seconds as f64).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take a token: `Ok(())`, or `Err((retry_after_seconds, first_trip))`.
    fn take(&self, key: (String, String)) -> Result<(), (u64, bool)> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let Ok(mut map) = self.buckets.lock() else {
            return Err((1, false));
        };
        if map.len() > 100_000 {
            map.retain(|_, b| now.duration_since(b.at).as_secs_f64() < 60.0);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
            tripped: false,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_second)
            .min(self.capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.tripped = false;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / self.per_second).ceil().max(1.0) as u64;
            let first = !b.tripped;
            b.tripped = true;
            Err((wait, first))
        }
    }

    /// Give back the token a call took (it turned out to be a repeat).
    fn refund(&self, key: (String, String)) {
        if self.per_second <= 0.0 {
            return;
        }
        if let Ok(mut map) = self.buckets.lock() {
            if let Some(b) = map.get_mut(&key) {
                b.tokens = (b.tokens + 1.0).min(self.capacity);
            }
        }
    }

    fn left(&self, key: &(String, String)) -> Option<f64> {
        if self.per_second <= 0.0 {
            return None;
        }
        let map = self.buckets.lock().ok()?;
        Some(map.get(key).map_or(self.capacity, |b| b.tokens).floor())
    }
}

pub struct Engine {
    cfg: Config,
    store: Arc<Store>,
    ids: Identities,
    key: SigningKey,
    log: Arc<DecisionLog>,
    clock: Arc<dyn Clock>,
    policy: RwLock<Option<ActivePolicy>>,
    /// Why no policy is in force, when none is.
    policy_problem: RwLock<Option<String>>,
    agent_rates: Rates,
    action_rates: Rates,
    /// Bumped on every change this process makes (long polls wake on it).
    changes: tokio::sync::watch::Sender<u64>,
    roster: Value,
}

fn now_secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn seconds_text(t: DateTime<Utc>) -> String {
    openexec_core::time::format_rfc3339(t)
}

/// The bundle as stored (`policy_bundles.bundle`): `{"files", "data"}`, the bytes its hash covers.
pub fn bundle_json(b: &Bundle) -> String {
    json!({"files": b.files(), "data": b.data()}).to_string()
}

fn bundle_from_json(text: &str) -> Result<Bundle, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let files: std::collections::BTreeMap<String, String> =
        serde_json::from_value(v.get("files").cloned().unwrap_or(Value::Null))
            .map_err(|e| e.to_string())?;
    let data = v.get("data").cloned().filter(|d| !d.is_null());
    Bundle::from_parts(files, data).map_err(|e| e.to_string())
}

fn unknown_fields(obj: &Map<String, Value>, known: &[&str]) -> Result<(), Refusal> {
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "unknown_field",
            format!("unknown field '{k}' (known: {})", known.join(", ")),
        ));
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, "invalid_request", message)
}

fn row_of(p: &Proposal, version: i64, pending_until: i64) -> ProposalRow {
    ProposalRow {
        proposal_id: p.proposal_id.clone(),
        tenant_id: p.tenant_id.clone(),
        nonce: p.nonce.clone(),
        agent_id: p.agent_id.clone(),
        action: p.action.clone(),
        request_hash: p.request_hash.clone(),
        status: p.status.clone(),
        version,
        pending_until,
        created_at: p.created_at.clone(),
        doc: serde_json::to_string(p).unwrap_or_default(),
    }
}

fn parse_doc(r: &ProposalRow) -> Result<Proposal, Refusal> {
    serde_json::from_str(&r.doc).map_err(|e| {
        store_err(StoreError::Corrupt(format!(
            "proposal {}: {e}",
            r.proposal_id
        )))
    })
}

impl Engine {
    pub fn new(
        cfg: Config,
        store: Arc<Store>,
        ids: Identities,
        key: SigningKey,
        log: Arc<DecisionLog>,
        clock: Arc<dyn Clock>,
        roster: Value,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            agent_rates: Rates::new(cfg.rate_per_agent, cfg.rate_burst_seconds),
            action_rates: Rates::new(cfg.rate_per_action, cfg.rate_burst_seconds),
            cfg,
            store,
            ids,
            key,
            log,
            clock,
            policy: RwLock::new(None),
            policy_problem: RwLock::new(Some("no policy has been loaded yet".into())),
            changes: tokio::sync::watch::channel(0).0,
            roster,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn log(&self) -> &Arc<DecisionLog> {
        &self.log
    }

    pub fn identities(&self) -> &Identities {
        &self.ids
    }

    pub fn roster(&self) -> &Value {
        &self.roster
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The policy in force, if any.
    pub fn active_policy(&self) -> Option<ActivePolicy> {
        self.policy.read().ok().and_then(|p| p.clone())
    }

    /// Why no policy is in force.
    pub fn policy_problem(&self) -> Option<String> {
        self.policy_problem.read().ok().and_then(|p| p.clone())
    }

    fn set_policy(&self, p: Option<ActivePolicy>, problem: Option<String>) {
        if let Ok(mut g) = self.policy.write() {
            *g = p;
        }
        if let Ok(mut g) = self.policy_problem.write() {
            *g = problem;
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// At start: with an empty store, the configured bundle becomes the first policy (logged);
    /// otherwise the stored one is in force, and a configured bundle that differs is only
    /// staged (it needs an approved activation).
    pub async fn load_policy(&self) -> anyhow::Result<()> {
        let state = self.store.policy_state().await?;
        if state.is_none() {
            let Some(dir) = &self.cfg.policy else {
                self.set_policy(
                    None,
                    Some("no policy bundle is configured (CLAWSHIELD_POLICY)".into()),
                );
                tracing::error!(
                    "no policy bundle configured: every proposal is denied policy_error"
                );
                return Ok(());
            };
            match Bundle::load(dir) {
                Ok(b) => {
                    let now = self.clock.now();
                    let id = derived_id("d_", &["initial-policy", b.policy_hash()]);
                    let e = entry(
                        None,
                        EntryFields {
                            decision_id: &id,
                            kind: "policy",
                            effect: Some("allow"),
                            code: Some("initial_policy"),
                            policy_hash: Some(b.policy_hash()),
                            logged_at: &text(now),
                            ..Default::default()
                        },
                    );
                    let first = self
                        .store
                        .initial_policy(b.policy_hash(), &bundle_json(&b), e)
                        .await?;
                    if first {
                        tracing::info!(policy_hash = b.policy_hash(), dir = %dir.display(), "first policy in force");
                    }
                }
                Err(e) => {
                    let why = format!("the policy bundle {} does not load: {e}", dir.display());
                    tracing::error!("{why}: every proposal is denied policy_error");
                    self.set_policy(None, Some(why));
                    return Ok(());
                }
            }
        }
        self.refresh_policy().await?;
        if let (Some(dir), Some(active)) = (&self.cfg.policy, self.active_policy()) {
            match Bundle::load(dir) {
                Ok(b) if b.policy_hash() != active.bundle.policy_hash() => tracing::warn!(
                    staged = b.policy_hash(),
                    active = active.bundle.policy_hash(),
                    "the configured bundle is not the policy in force: propose {ACTIVATE_ACTION} with its policy_hash to activate it"
                ),
                Err(e) => tracing::warn!(error = %e, "the configured bundle does not load (the stored policy stays in force)"),
                _ => {}
            }
        }
        Ok(())
    }

    /// Follow the policy state in the store (another replica may have activated a bundle).
    pub async fn refresh_policy(&self) -> Result<(), StoreError> {
        let Some(state) = self.store.policy_state().await? else {
            return Ok(());
        };
        if self
            .active_policy()
            .is_some_and(|a| a.version == state.version)
        {
            return Ok(());
        }
        let Some(text) = self.store.bundle(&state.policy_hash).await? else {
            self.set_policy(
                None,
                Some(format!(
                    "the policy in force ({}) is missing from the store",
                    state.policy_hash
                )),
            );
            return Ok(());
        };
        match bundle_from_json(&text) {
            Ok(b) if b.policy_hash() == state.policy_hash => {
                let b = b.with_time_limit(self.cfg.policy_time_limit);
                tracing::info!(policy_hash = %state.policy_hash, version = state.version, "policy in force");
                self.set_policy(
                    Some(ActivePolicy {
                        bundle: Arc::new(b),
                        version: state.version,
                    }),
                    None,
                );
            }
            Ok(b) => self.set_policy(
                None,
                Some(format!(
                    "the stored bundle of {} hashes to {}",
                    state.policy_hash,
                    b.policy_hash()
                )),
            ),
            Err(e) => self.set_policy(
                None,
                Some(format!(
                    "the policy in force ({}) does not load: {e}",
                    state.policy_hash
                )),
            ),
        }
        Ok(())
    }

    /// Refresh the policy and expire what is due, until the process stops.
    pub async fn background(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.expiry_interval);
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh_policy().await {
                tracing::warn!(error = %e, "cannot read the policy state");
            }
            if let Err(e) = self.expire_due().await {
                tracing::warn!(error = ?e.error, "expiry round failed");
            }
        }
    }

    fn identity<'a>(&self, who: &'a Identity, kind: Kind) -> Result<&'a Identity, Refusal> {
        if who.kind != kind {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "wrong_identity_kind",
                format!(
                    "this call needs an {} token; '{}' is an {}",
                    kind.as_str(),
                    who.id,
                    who.kind.as_str()
                ),
            ));
        }
        Ok(who)
    }

    // ---- proposals -------------------------------------------------------------------

    /// `POST /v1/proposals`.
    pub async fn propose(&self, who: &Identity, body: Value) -> Answer {
        let agent = self.identity(who, Kind::Agent)?;
        let tenant = agent.tenant.clone().unwrap_or_default();
        let Value::Object(obj) = body else {
            return Err(invalid("the request body must be a JSON object"));
        };
        unknown_fields(
            &obj,
            &["action", "payload", "nonce", "tenant_id", "context"],
        )?;
        let s = |k: &str| -> Result<Option<String>, Refusal> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(invalid(format!("field '{k}' must be a string"))),
            }
        };
        let action = s("action")?.ok_or_else(|| invalid("field 'action' is required"))?;
        openexec_core::request::check_action(&action).map_err(|e| invalid(e.0))?;
        let nonce = s("nonce")?.ok_or_else(|| invalid("field 'nonce' is required"))?;
        openexec_core::request::check_nonce(&nonce).map_err(|e| invalid(e.0))?;
        if let Some(t) = s("tenant_id")? {
            // A malformed tenant is the request's mistake (400), not another tenant (403).
            openexec_core::request::check_tenant(&t).map_err(|e| invalid(e.0))?;
            if t != tenant {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    "tenant_mismatch",
                    format!(
                        "agent '{}' belongs to tenant '{tenant}', not '{t}'",
                        agent.id
                    ),
                ));
            }
        }
        let payload = openexec_core::payload::normalize(obj.get("payload"), self.cfg.max_depth)
            .map_err(|m| refuse(StatusCode::BAD_REQUEST, "invalid_payload", m))?;
        let context = obj.get("context").cloned().unwrap_or(Value::Null);
        let intent_hash = openexec_core::hash::intent_hash(&action, &payload);
        let request_hash = openexec_core::hash::request_hash(&action, &nonce, &payload, &tenant);

        // The same agent proposing the same request again gets the same proposal: the writer
        // finds it (no read here, which every new proposal would pay for) and nothing of the
        // repeat is counted or logged; its rate token is given back.

        let now = self.clock.now();
        let proposal_id = derived_id("p_", &[&tenant, &nonce]);
        let mut p = Proposal {
            proposal_id,
            status: String::new(),
            tenant_id: tenant.clone(),
            agent_id: agent.id.clone(),
            on_behalf_of: agent.on_behalf_of.clone(),
            action: action.clone(),
            payload,
            context,
            nonce: nonce.clone(),
            intent_hash: intent_hash.clone(),
            request_hash: request_hash.clone(),
            decision: DecisionView {
                decision_id: String::new(),
                effect: String::new(),
                code: String::new(),
                reasons: Vec::new(),
                rules: Vec::new(),
                policy_hash: None,
            },
            needs: None,
            expires_at: None,
            artifact: None,
            created_at: text(now),
            reserved: None,
            cost: 0,
            artifact_ttl_seconds: self.cfg.artifact_ttl_seconds,
            votes: Vec::new(),
            entries: 0,
        };

        // Rate limits (this process's buckets).
        let rate = self
            .agent_rates
            .take((tenant.clone(), agent.id.clone()))
            .and_then(|()| self.action_rates.take((tenant.clone(), action.clone())));
        if let Err((wait, first)) = rate {
            metrics::counter!("clawshield_breaker_trips_total", "breaker" => "rate").increment(1);
            if first {
                let id = entry_id("d_", now, &[&p.proposal_id, "rate"]);
                let e = entry(
                    Some(&p),
                    EntryFields {
                        decision_id: &id,
                        kind: "decision",
                        effect: Some("deny"),
                        code: Some("rate_limited"),
                        logged_at: &text(now),
                        ..Default::default()
                    },
                );
                if let Err(e) = self.store.append_entries(vec![e]).await {
                    tracing::warn!(error = %e, "cannot log a rate limit trip");
                }
            }
            return Err(Refusal {
                error: ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many proposals: try again in {wait} s"),
                ),
                retry_after: Some(wait),
            });
        }

        // What the breakers say now (the writer checks them again, exactly).
        let secs = now_secs(now);
        // A freeze is not read here: the writer checks it in the batch that stores the
        // proposal (exact, and one read less for every proposal that is not frozen).
        let loop_window = secs - secs.rem_euclid(self.cfg.loop_window_seconds as i64);
        let (loop_count, blocked_until) = if self.cfg.loop_max > 0 {
            match self
                .store
                .loop_state(&tenant, &agent.id, &intent_hash)
                .await
                .map_err(store_err)?
            {
                Some((w, n, b)) if w == loop_window => (n, b),
                Some((_, _, b)) => (0, b),
                None => (0, 0),
            }
        } else {
            (0, 0)
        };
        let budget_window = secs - secs.rem_euclid(self.cfg.budget_window_seconds as i64);
        let used = if self.cfg.budget > 0 {
            self.store
                .reserved(&tenant, budget_window)
                .await
                .map_err(store_err)?
        } else {
            0
        };

        // Activation proposals: the bundle must be the configured one, with that hash.
        let mut bundle_rec: Option<(String, String)> = None;
        let mut activation_problem: Option<(String, String)> = None;
        if action == ACTIVATE_ACTION {
            match p.payload.get("policy_hash").and_then(Value::as_str) {
                None => {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "invalid_payload",
                        format!("{ACTIVATE_ACTION} needs a payload {{\"policy_hash\": \"<hash of the bundle>\"}}"),
                    ))
                }
                Some(h) => match self.cfg.policy.as_ref().map(Bundle::load) {
                    Some(Ok(b)) if b.policy_hash() == h => {
                        bundle_rec = Some((h.to_string(), bundle_json(&b)));
                    }
                    Some(Ok(b)) => {
                        activation_problem = Some((
                            "policy_unknown".into(),
                            format!(
                                "the configured bundle has policy_hash {}, not {h}",
                                b.policy_hash()
                            ),
                        ))
                    }
                    Some(Err(e)) => {
                        activation_problem = Some((
                            "policy_error".into(),
                            format!("the configured bundle does not load: {e}"),
                        ))
                    }
                    None => {
                        activation_problem = Some((
                            "policy_unknown".into(),
                            "no policy bundle is configured to activate".into(),
                        ))
                    }
                },
            }
        }

        let limits = json!({
            "rate": {
                "agent_per_second": self.cfg.rate_per_agent,
                "action_per_second": self.cfg.rate_per_action,
                "agent_tokens_left": self.agent_rates.left(&(tenant.clone(), agent.id.clone())),
            },
            "loop": {
                "count": loop_count,
                "max": self.cfg.loop_max,
                "window_seconds": self.cfg.loop_window_seconds,
                "blocked": blocked_until > secs,
            },
            "budget": {
                "used": used,
                "limit": (self.cfg.budget > 0).then_some(self.cfg.budget),
                "left": (self.cfg.budget > 0).then(|| (self.cfg.budget as i64 - used).max(0)),
                "window_seconds": self.cfg.budget_window_seconds,
            },
        });
        let input = json!({
            "action": action,
            "payload": p.payload,
            "tenant_id": tenant,
            "nonce": nonce,
            "intent_hash": intent_hash,
            "request_hash": request_hash,
            "context": p.context,
            "agent": {"id": agent.id, "tenant_id": tenant, "on_behalf_of": agent.on_behalf_of},
            "limits": limits,
        });
        let policy = self.active_policy();
        let decision = if self.cfg.loop_max > 0
            && (blocked_until > secs || loop_count >= self.cfg.loop_max as i64)
        {
            breaker_decision(
                "loop_detected",
                "the same request was proposed too often in the loop window",
            )
        } else if let Some((code, why)) = activation_problem {
            let mut d = Decision::policy_error(why, None);
            d.code = code;
            d
        } else {
            match &policy {
                None => Decision::policy_error(
                    self.policy_problem()
                        .unwrap_or_else(|| "no policy is in force".into()),
                    None,
                ),
                Some(a) => {
                    let b = a.bundle.clone();
                    let input = input.clone();
                    tokio::task::spawn_blocking(move || b.evaluate(&input))
                        .await
                        .unwrap_or_else(|_| Decision::policy_error("evaluation panicked", None))
                }
            }
        };
        if decision.is_policy_error() {
            metrics::counter!("clawshield_policy_errors_total").increment(1);
        }
        metrics::counter!("clawshield_decisions_total", "effect" => decision.effect.as_str())
            .increment(1);

        let decision_id = entry_id("d_", now, &[&p.proposal_id, "0"]);
        p.decision = DecisionView {
            decision_id: decision_id.clone(),
            effect: decision.effect.as_str().into(),
            code: decision.code.clone(),
            reasons: decision.reasons.clone(),
            rules: decision.rules.clone(),
            policy_hash: decision.policy_hash.clone(),
        };
        p.cost = decision.cost;
        if let Some(ttl) = decision.expires_in_seconds {
            p.artifact_ttl_seconds = ttl.clamp(1, 86_400);
        }
        p.entries = 1;
        let mut pending_until = 0;
        let mut extra = Vec::new();
        let mut activate = None;
        match decision.effect {
            Effect::Allow => {
                p.status = "approved".into();
                self.issue(&mut p, now, &decision_id, None);
                if action == ACTIVATE_ACTION {
                    if let Some((h, _)) = &bundle_rec {
                        activate = Some(h.clone());
                        extra.push(self.policy_entry(&mut p, h, now));
                    }
                }
            }
            Effect::RequireApproval => {
                let a = decision
                    .approval
                    .clone()
                    .unwrap_or(openexec_policy::Approval {
                        min: 1,
                        groups: Vec::new(),
                        deny_threshold: 1,
                        ttl_seconds: self.cfg.pending_ttl_seconds,
                        reason_required: false,
                    });
                p.status = "pending".into();
                let ttl = if a.ttl_seconds == 0 {
                    self.cfg.pending_ttl_seconds
                } else {
                    a.ttl_seconds
                };
                pending_until = secs + ttl as i64;
                p.expires_at = Some(seconds_text(now + chrono::Duration::seconds(ttl as i64)));
                p.needs = Some(Needs {
                    min: a.min.max(1),
                    groups: a.groups,
                    approvals: 0,
                    denials: 0,
                    deny_threshold: a.deny_threshold.max(1),
                    reason_required: a.reason_required,
                });
            }
            Effect::Deny => {
                p.status = "denied".into();
            }
        }
        let reserve =
            (self.cfg.budget > 0 && p.cost > 0 && p.status != "denied").then(|| Reserve {
                window_start: budget_window,
                cost: p.cost.min(i64::MAX as u64) as i64,
                limit: self.cfg.budget as i64,
            });
        if let Some(r) = &reserve {
            p.reserved = Some((r.window_start, r.cost));
        }
        let logged_at = text(now);
        let first_entry = decision_entry(&p, &logged_at);
        let breakers = Breakers {
            freeze: true,
            // A proposal denied because the agent is frozen is not counted as a loop (the writer
            // checks the freeze first): an agent repeating itself while frozen keeps being
            // answered `frozen`, and is not loop-blocked for the cool-down once unfrozen.
            loop_count: (self.cfg.loop_max > 0).then(|| LoopCount {
                intent_hash: intent_hash.clone(),
                window_start: loop_window,
                max: self.cfg.loop_max as i64,
                now: secs,
                cooldown: self.cfg.loop_cooldown_seconds as i64,
            }),
            budget: reserve,
        };
        // What the writer stores instead when a breaker trips (built only then).
        let row = row_of(&p, 1, pending_until);
        let ours = row.doc.clone();
        let p = Arc::new(p);
        let denial: crate::store::Denial = {
            let p = p.clone();
            std::sync::Arc::new(move |code: &str| {
                let d = denied(&p, code);
                let e = decision_entry(&d, &logged_at);
                (row_of(&d, 1, 0), NewEntry::of(&e))
            })
        };
        let new = NewProposal {
            row,
            entry: NewEntry::of(&first_entry),
            breakers,
            denial,
            bundle: bundle_rec,
            extra: extra.iter().map(NewEntry::of).collect(),
            activate,
        };
        let stored = self.store.propose(new).await.map_err(store_err)?;
        match stored {
            Proposed::Existing(r) => {
                self.agent_rates.refund((tenant.clone(), agent.id.clone()));
                self.action_rates.refund((tenant.clone(), action.clone()));
                self.replay(agent, r, &request_hash)
            }
            Proposed::New(r) => {
                // As stored: ours, unless a breaker turned it into a denial.
                let p = if r.doc == ours {
                    p
                } else {
                    Arc::new(parse_doc(&r)?)
                };
                if p.decision.code == "budget_exceeded"
                    || p.decision.code == "loop_detected"
                    || p.decision.code == "frozen"
                {
                    let breaker = p.decision.code.clone();
                    metrics::counter!("clawshield_breaker_trips_total", "breaker" => breaker)
                        .increment(1);
                }
                if p.status == "approved" && p.action == ACTIVATE_ACTION {
                    let _ = self.refresh_policy().await;
                }
                self.changed();
                Ok((status_of(&p), p.answer()))
            }
        }
    }

    fn replay(&self, agent: &Identity, r: ProposalRow, request_hash: &str) -> Answer {
        if r.agent_id != agent.id || r.request_hash != request_hash {
            return Err(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "nonce_conflict",
                format!(
                    "nonce '{}' was already used by another proposal of tenant '{}'",
                    r.nonce, r.tenant_id
                ),
            ));
        }
        let p = parse_doc(&r)?;
        Ok((status_of(&p), p.answer()))
    }

    /// Sign the artifact of an approved proposal (its approvers are its approve votes).
    fn issue(
        &self,
        p: &mut Proposal,
        now: DateTime<Utc>,
        decision_id: &str,
        quorum: Option<&Needs>,
    ) {
        let issued = now;
        let expires = now + chrono::Duration::seconds(p.artifact_ttl_seconds as i64);
        let approval_id = derived_id("a_", &[&p.proposal_id, decision_id]);
        let approvers: Vec<Value> = p
            .votes
            .iter()
            .filter(|v| v.vote == "approve")
            .map(|v| {
                let mut a = json!({"id": v.voter});
                if let (Some(k), Some(s)) = (&v.key_id, &v.signature) {
                    a["key_id"] = json!(k);
                    a["signature"] = json!(s);
                }
                a
            })
            .collect();
        let mut m = Map::new();
        m.insert("v".into(), json!(1));
        m.insert("approval_id".into(), json!(approval_id));
        m.insert("tenant_id".into(), json!(p.tenant_id));
        m.insert("action".into(), json!(p.action));
        m.insert("request_hash".into(), json!(p.request_hash));
        m.insert("intent_hash".into(), json!(p.intent_hash));
        m.insert("nonce".into(), json!(p.nonce));
        m.insert("issued_at".into(), json!(seconds_text(issued)));
        m.insert("expires_at".into(), json!(seconds_text(expires)));
        m.insert("decision_id".into(), json!(decision_id));
        m.insert("policy_hash".into(), json!(p.decision.policy_hash));
        m.insert("approvers".into(), Value::Array(approvers));
        if let Some(q) = quorum {
            m.insert("quorum".into(), json!({"min": q.min, "groups": q.groups}));
        }
        p.artifact = Some(openexec_core::artifact::sign_v1_object(m, &self.key));
        p.expires_at = Some(seconds_text(expires));
    }

    fn policy_entry(&self, p: &mut Proposal, hash: &str, now: DateTime<Utc>) -> Value {
        let id = entry_id("d_", now, &[&p.proposal_id, &p.entries.to_string()]);
        p.entries += 1;
        let approval_id = p
            .artifact
            .as_ref()
            .and_then(|a| a.get("approval_id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        entry(
            Some(p),
            EntryFields {
                decision_id: &id,
                kind: "policy",
                effect: Some("allow"),
                code: Some("policy_activated"),
                policy_hash: Some(hash),
                approval_id: approval_id.as_deref(),
                logged_at: &text(now),
                ..Default::default()
            },
        )
    }

    /// Who may read a proposal (SPEC §9): the agent that made it, or an approver who may vote
    /// on it (of its tenant, in a required group, not its requester) — whether or not it has
    /// voted yet or the proposal is still pending.
    fn may_read(&self, who: &Identity, p: &Proposal) -> bool {
        match who.kind {
            Kind::Agent => who.id == p.agent_id,
            Kind::Approver => self.ineligible(who, p).is_none(),
            Kind::Admin => false,
        }
    }

    async fn read(&self, who: &Identity, id: &str) -> Result<(ProposalRow, Proposal), Refusal> {
        if who.kind == Kind::Admin {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "wrong_identity_kind",
                format!(
                    "proposals are read with the agent's or an approver's token; '{}' is an admin",
                    who.id
                ),
            ));
        }
        let (r, p) = self.read_any(id).await?;
        if !self.may_read(who, &p) {
            return Err(unknown_proposal(id));
        }
        Ok((r, p))
    }

    /// A proposal whoever asks (a voter's eligibility is [`Engine::ineligible`]'s to judge).
    async fn read_any(&self, id: &str) -> Result<(ProposalRow, Proposal), Refusal> {
        let r = self.store.proposal(id).await.map_err(store_err)?;
        let r = r.ok_or_else(|| unknown_proposal(id))?;
        let p = parse_doc(&r)?;
        Ok((r, p))
    }

    /// `GET /v1/proposals/{id}?wait=S`.
    pub async fn get(&self, who: &Identity, id: &str, wait: Option<u64>) -> Answer {
        let (_, p) = self.read(who, id).await?;
        // Only a pending proposal's status can still change: a decided one is answered at once
        // (a client long-polling an approved proposal must not hang for its whole wait).
        let Some(wait) = wait.filter(|w| *w > 0 && p.status == "pending") else {
            return Ok((StatusCode::OK, p.answer()));
        };
        let until = Instant::now() + std::time::Duration::from_secs(wait.min(60));
        let status = p.status.clone();
        let mut changes = self.changes.subscribe();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Woken by this process's changes, or every 250 ms for other replicas'.
            let _ = tokio::time::timeout(
                left.min(std::time::Duration::from_millis(250)),
                changes.changed(),
            )
            .await;
            let (_, now) = self.read(who, id).await?;
            if now.status != status {
                return Ok((StatusCode::OK, now.answer()));
            }
        }
        let (_, p) = self.read(who, id).await?;
        Ok((StatusCode::OK, p.answer()))
    }

    /// Why `approver` may not vote on `p`, if it may not.
    fn ineligible(&self, approver: &Identity, p: &Proposal) -> Option<Refusal> {
        if approver.tenant.as_deref() != Some(p.tenant_id.as_str()) {
            return Some(refuse(
                StatusCode::FORBIDDEN,
                "not_eligible",
                format!(
                    "approver '{}' is not of tenant '{}'",
                    approver.id, p.tenant_id
                ),
            ));
        }
        if approver.id == p.agent_id || p.on_behalf_of.as_deref() == Some(approver.id.as_str()) {
            return Some(refuse(
                StatusCode::FORBIDDEN,
                "self_approval",
                format!(
                    "'{}' is the requester of this proposal (or the human its agent acts for) and may not vote on it",
                    approver.id
                ),
            ));
        }
        if let Some(n) = &p.needs {
            if !n.groups.is_empty() && !n.groups.iter().any(|g| approver.groups.contains(g)) {
                return Some(refuse(
                    StatusCode::FORBIDDEN,
                    "not_eligible",
                    format!(
                        "approver '{}' is in none of the required groups ({})",
                        approver.id,
                        n.groups.join(", ")
                    ),
                ));
            }
        }
        None
    }

    /// `GET /v1/proposals?status=pending`.
    pub async fn list(&self, who: &Identity, status: Option<&str>) -> Answer {
        let approver = self.identity(who, Kind::Approver)?;
        let status = status.unwrap_or("pending");
        if status != "pending" {
            return Err(invalid(format!(
                "status '{status}': only status=pending can be listed"
            )));
        }
        let tenant = approver.tenant.clone().unwrap_or_default();
        let rows = self
            .store
            .proposals_of(&tenant, "pending", 500)
            .await
            .map_err(store_err)?;
        let mut out = Vec::new();
        for r in rows {
            let p = parse_doc(&r)?;
            if self.ineligible(approver, &p).is_none()
                && !p.votes.iter().any(|v| v.voter == approver.id)
            {
                out.push(p.answer());
            }
        }
        Ok((StatusCode::OK, json!({"proposals": out})))
    }

    /// `POST /v1/proposals/{id}/votes`.
    pub async fn vote(&self, who: &Identity, id: &str, body: Value) -> Answer {
        let approver = self.identity(who, Kind::Approver)?;
        let Value::Object(obj) = body else {
            return Err(invalid("the request body must be a JSON object"));
        };
        unknown_fields(&obj, &["vote", "reason", "signature"])?;
        let vote = match obj.get("vote") {
            Some(Value::String(v)) if v == "approve" || v == "deny" => v.clone(),
            Some(_) => return Err(invalid("field 'vote' must be \"approve\" or \"deny\"")),
            None => return Err(invalid("field 'vote' is required")),
        };
        let reason = match obj.get("reason") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) if s.chars().count() <= 2000 => s.clone(),
            Some(Value::String(_)) => {
                return Err(invalid("field 'reason' is longer than 2000 characters"))
            }
            Some(_) => return Err(invalid("field 'reason' must be a string")),
        };
        let signature = match obj.get("signature") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("field 'signature' must be a string")),
        };
        for _attempt in 0..8 {
            // An approver of another tenant is told not_eligible (SPEC §9), not 404.
            let (r, mut p) = self.read_any(id).await?;
            if let Some(refusal) = self.ineligible(approver, &p) {
                return Err(refusal);
            }
            let now = self.clock.now();
            if p.status != "pending" || (r.pending_until > 0 && r.pending_until <= now_secs(now)) {
                return Err(refuse(
                    StatusCode::CONFLICT,
                    "not_pending",
                    format!(
                        "proposal '{id}' is {}, not pending",
                        if p.status == "pending" {
                            "expired"
                        } else {
                            p.status.as_str()
                        }
                    ),
                ));
            }
            if p.votes.iter().any(|v| v.voter == approver.id) {
                return Err(refuse(
                    StatusCode::CONFLICT,
                    "already_voted",
                    format!("'{}' already voted on proposal '{id}'", approver.id),
                ));
            }
            let needs = p.needs.clone().unwrap_or(Needs {
                min: 1,
                groups: Vec::new(),
                approvals: 0,
                denials: 0,
                deny_threshold: 1,
                reason_required: false,
            });
            if needs.reason_required && reason.trim().is_empty() {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "reason_required",
                    "this proposal's policy requires a reason with every vote",
                ));
            }
            let key_id_of = match (&approver.key, &signature) {
                (Some(k), Some(sig)) => {
                    let msg = openexec_core::artifact::vote_message_for(
                        &vote,
                        &p.request_hash,
                        &approver.id,
                    );
                    if !openexec_core::keys::verify_b64(k, &msg, sig) {
                        return Err(refuse(
                            StatusCode::BAD_REQUEST,
                            "bad_vote_signature",
                            format!(
                                "the signature does not verify with {}'s key over clawshield-vote-v1: ‖ JCS({{\"decision\": \"{vote}\", \"request_hash\", \"approver\"}})",
                                approver.id
                            ),
                        ));
                    }
                    Some(key_id(k))
                }
                (Some(_), None) => {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "bad_vote_signature",
                        format!(
                            "approver '{}' holds a key: the vote must carry its signature (openexec vote --key …)",
                            approver.id
                        ),
                    ))
                }
                (None, Some(_)) => {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "bad_vote_signature",
                        format!(
                            "approver '{}' has no key configured to check a signature with",
                            approver.id
                        ),
                    ))
                }
                (None, None) => None,
            };
            let at = text(now);
            p.votes.push(VoteView {
                voter: approver.id.clone(),
                vote: vote.clone(),
                reason: reason.clone(),
                at: at.clone(),
                key_id: key_id_of,
                signature: signature.clone(),
            });
            let mut n = needs.clone();
            if vote == "approve" {
                n.approvals += 1;
            } else {
                n.denials += 1;
            }
            let vote_id = entry_id("v_", now, &[&p.proposal_id, &approver.id]);
            p.entries += 1;
            let mut entries = vec![entry(
                Some(&p),
                EntryFields {
                    decision_id: &vote_id,
                    kind: "vote",
                    voter: Some(&approver.id),
                    vote: Some(&vote),
                    policy_hash: p.decision.policy_hash.as_deref(),
                    logged_at: &at,
                    ..Default::default()
                },
            )];
            let mut release = None;
            let mut activate = None;
            let mut pending_until = r.pending_until;
            if n.denials >= n.deny_threshold || n.approvals >= n.min {
                let decision_id = entry_id("d_", now, &[&p.proposal_id, &p.entries.to_string()]);
                p.entries += 1;
                pending_until = 0;
                if n.denials >= n.deny_threshold {
                    p.status = "denied".into();
                    p.decision = DecisionView {
                        decision_id: decision_id.clone(),
                        effect: "deny".into(),
                        code: "denied_by_approvers".into(),
                        reasons: vec![format!(
                            "{} of {} denials needed to deny",
                            n.denials, n.deny_threshold
                        )],
                        rules: p.decision.rules.clone(),
                        policy_hash: p.decision.policy_hash.clone(),
                    };
                    p.expires_at = None;
                    release = p.reserved.take();
                } else {
                    p.status = "approved".into();
                    p.decision = DecisionView {
                        decision_id: decision_id.clone(),
                        effect: "allow".into(),
                        code: "quorum_met".into(),
                        reasons: vec![format!("{} of {} approvals", n.approvals, n.min)],
                        rules: p.decision.rules.clone(),
                        policy_hash: p.decision.policy_hash.clone(),
                    };
                    self.issue(&mut p, now, &decision_id, Some(&n));
                }
                let approval_id = p
                    .artifact
                    .as_ref()
                    .and_then(|a| a.get("approval_id"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                entries.push(entry(
                    Some(&p),
                    EntryFields {
                        decision_id: &decision_id,
                        kind: "decision",
                        effect: Some(&p.decision.effect),
                        code: Some(&p.decision.code),
                        rules: Some(&p.decision.rules),
                        policy_hash: p.decision.policy_hash.as_deref(),
                        approval_id: approval_id.as_deref(),
                        logged_at: &at,
                        ..Default::default()
                    },
                ));
                if p.status == "approved" && p.action == ACTIVATE_ACTION {
                    if let Some(h) = p.payload.get("policy_hash").and_then(Value::as_str) {
                        let h = h.to_string();
                        entries.push(self.policy_entry(&mut p, &h, now));
                        activate = Some(h);
                    }
                }
            }
            p.needs = Some(n);
            let update = Update {
                expected_version: r.version,
                row: row_of(&p, r.version + 1, pending_until),
                vote: Some(VoteRow {
                    voter: approver.id.clone(),
                    vote: vote.clone(),
                    reason: reason.clone(),
                    signature: signature.clone(),
                }),
                entries: entries.iter().map(NewEntry::of).collect(),
                release,
                activate: activate.clone(),
            };
            if self.store.update(update).await.map_err(store_err)? {
                metrics::counter!("clawshield_votes_total", "vote" => vote.clone()).increment(1);
                if activate.is_some() {
                    let _ = self.refresh_policy().await;
                }
                self.changed();
                return Ok((StatusCode::OK, p.answer()));
            }
            // Changed meanwhile (another vote, an expiry): read it again.
        }
        Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the proposal kept changing while this vote was counted; try again",
        ))
    }

    /// Expire pending proposals whose time is up (any replica may; each expiry is one
    /// compare-and-set, so it happens once).
    pub async fn expire_due(&self) -> Result<usize, Refusal> {
        let now = self.clock.now();
        let due = self
            .store
            .due(now_secs(now), 100)
            .await
            .map_err(store_err)?;
        let mut n = 0;
        for r in due {
            let mut p = parse_doc(&r)?;
            let id = entry_id("d_", now, &[&p.proposal_id, &p.entries.to_string()]);
            p.entries += 1;
            p.status = "expired".into();
            p.decision = DecisionView {
                decision_id: id.clone(),
                effect: "deny".into(),
                code: "expired".into(),
                reasons: vec!["no quorum before the proposal's time ran out".into()],
                rules: p.decision.rules.clone(),
                policy_hash: p.decision.policy_hash.clone(),
            };
            let release = p.reserved.take();
            let e = entry(
                Some(&p),
                EntryFields {
                    decision_id: &id,
                    kind: "expiry",
                    effect: Some("deny"),
                    code: Some("expired"),
                    policy_hash: p.decision.policy_hash.as_deref(),
                    logged_at: &text(now),
                    ..Default::default()
                },
            );
            let update = Update {
                expected_version: r.version,
                row: row_of(&p, r.version + 1, 0),
                vote: None,
                entries: vec![NewEntry::of(&e)],
                release,
                activate: None,
            };
            if self.store.update(update).await.map_err(store_err)? {
                n += 1;
                metrics::counter!("clawshield_expired_total").increment(1);
            }
        }
        if n > 0 {
            self.changed();
        }
        Ok(n)
    }

    /// `POST /v1/admin/freeze` and `/unfreeze`.
    pub async fn freeze(&self, who: &Identity, body: Value, on: bool) -> Answer {
        let admin = self.identity(who, Kind::Admin)?;
        let Value::Object(obj) = body else {
            return Err(invalid("the request body must be a JSON object"));
        };
        unknown_fields(&obj, &["tenant_id", "agent_id"])?;
        let tenant = match obj.get("tenant_id") {
            Some(Value::String(t)) => t.clone(),
            _ => return Err(invalid("field 'tenant_id' (a string) is required")),
        };
        openexec_core::request::check_tenant(&tenant).map_err(|e| invalid(e.0))?;
        let agent = match obj.get("agent_id") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(a)) if !a.is_empty() => a.clone(),
            Some(_) => return Err(invalid("field 'agent_id' must be a non-empty string")),
        };
        let changed = self
            .store
            .freeze(&tenant, &agent, &admin.id, on)
            .await
            .map_err(store_err)?;
        tracing::warn!(tenant = %tenant, agent = %agent, by = %admin.id, frozen = on, changed, "kill switch");
        metrics::counter!("clawshield_freezes_total", "frozen" => on.to_string()).increment(1);
        Ok((
            StatusCode::OK,
            json!({"tenant_id": tenant, "agent_id": (!agent.is_empty()).then_some(agent), "frozen": on, "changed": changed}),
        ))
    }

    /// `GET /v1/decisions/{id}`.
    pub async fn decision(&self, who: &Identity, id: &str) -> Answer {
        let e = self.store.entry(id).await.map_err(store_err)?;
        let not_found = || {
            refuse(
                StatusCode::NOT_FOUND,
                "unknown_decision",
                format!("no decision '{id}' of this identity's tenant"),
            )
        };
        let e = e.ok_or_else(not_found)?;
        if who.kind != Kind::Admin && e.tenant_id.as_deref() != who.tenant.as_deref() {
            return Err(not_found());
        }
        let entry: Value = serde_json::from_str(&e.entry)
            .map_err(|err| store_err(StoreError::Corrupt(err.to_string())))?;
        let inclusion = self
            .log
            .inclusion(&*self.store, e.log_index, &e.logged_at)
            .await
            .map_err(store_err)?;
        let mut v = json!({"decision": entry, "log_index": e.log_index});
        if let Some(i) = inclusion {
            v["inclusion"] = i;
        }
        Ok((StatusCode::OK, v))
    }
}

fn unknown_proposal(id: &str) -> Refusal {
    refuse(
        StatusCode::NOT_FOUND,
        "unknown_proposal",
        format!("no proposal '{id}' that this identity may read"),
    )
}

fn breaker_decision(code: &str, why: &str) -> Decision {
    Decision {
        effect: Effect::Deny,
        code: code.into(),
        reasons: vec![why.into()],
        rules: vec![format!("breaker.{code}")],
        approval: None,
        cost: 0,
        expires_in_seconds: None,
        policy_hash: None,
    }
}

fn status_of(p: &Proposal) -> StatusCode {
    if p.status == "pending" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    }
}

/// The first decision entry of a proposal.
fn decision_entry(p: &Proposal, logged_at: &str) -> Value {
    entry(
        Some(p),
        EntryFields {
            decision_id: &p.decision.decision_id,
            kind: "decision",
            effect: Some(&p.decision.effect),
            code: Some(&p.decision.code),
            rules: Some(&p.decision.rules),
            policy_hash: p.decision.policy_hash.as_deref(),
            approval_id: p
                .artifact
                .as_ref()
                .and_then(|a| a.get("approval_id"))
                .and_then(Value::as_str),
            logged_at,
            ..Default::default()
        },
    )
}

/// `p` denied by the breaker `code` (`frozen`, `loop_detected`, `budget_exceeded`).
fn denied(p: &Proposal, code: &str) -> Proposal {
    let why = match code {
        "frozen" => "the tenant or the agent is frozen by an admin",
        "loop_detected" => "the same request was proposed too often in the loop window",
        _ => "the tenant's budget for this window would be exceeded",
    };
    let mut d = p.clone();
    d.status = "denied".into();
    d.decision.effect = "deny".into();
    d.decision.code = code.into();
    d.decision.reasons = vec![why.into()];
    d.decision.rules = vec![format!("breaker.{code}")];
    d.needs = None;
    d.expires_at = None;
    d.artifact = None;
    d.reserved = None;
    d
}
