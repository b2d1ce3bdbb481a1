-- ClawShield's own tables (PostgreSQL). The decision log's tree tables are openexec-logstore's
-- (migration 1000 and up, run beside these).

-- One row per proposal. proposal_id is derived from (tenant_id, nonce) (SHA-256, 128 bits), so
-- its primary key is what makes (tenant_id, nonce) unique and proposing again idempotent: no
-- second index on them (each index of random keys costs a page write per proposal).
-- `doc` is the whole proposal as JSON (payload, context, decision, needs, artifact, votes);
-- the other columns are what queries select on. `version` counts the proposal's changes: every
-- update is a compare-and-set on it, so replicas never lose one another's votes.
CREATE TABLE proposals (
    proposal_id   TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    action        TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        TEXT NOT NULL,
    version       BIGINT NOT NULL,
    -- POSIX seconds after which a pending proposal expires (0 once it is not pending)
    pending_until BIGINT NOT NULL,
    created_at    TEXT NOT NULL,
    doc           TEXT NOT NULL
);
CREATE INDEX proposals_pending ON proposals (pending_until) WHERE status = 'pending';
-- Only pending proposals are listed (per tenant): the index holds only those.
CREATE INDEX proposals_tenant_pending ON proposals (tenant_id, created_at) WHERE status = 'pending';

-- Counted votes, one per approver and proposal.
CREATE TABLE votes (
    proposal_id TEXT NOT NULL,
    voter       TEXT NOT NULL,
    vote        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    signature   TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (proposal_id, voter)
);

-- The decision log's entries, in log order (dense indices 0, 1, 2, ...). Leaf i is `entry`
-- of row i as stored (JCS, SPEC §9).
CREATE TABLE decisions (
    log_index   BIGINT PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE,
    tenant_id   TEXT,
    entry       TEXT NOT NULL,
    logged_at   TEXT NOT NULL
);

-- Budget reservations per tenant and window (window_start in POSIX seconds).
CREATE TABLE budgets (
    tenant_id    TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    reserved     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, window_start)
);

-- Loop detection: proposals of one intent by one agent in the current window, and until when
-- that intent is refused after a trip.
CREATE TABLE loop_counts (
    tenant_id     TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    intent_hash   TEXT NOT NULL,
    window_start  BIGINT NOT NULL,
    n             BIGINT NOT NULL,
    blocked_until BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, intent_hash)
);

-- Kill switch: a frozen tenant (agent_id '') or agent.
CREATE TABLE freezes (
    tenant_id TEXT NOT NULL,
    agent_id  TEXT NOT NULL,
    frozen_by TEXT NOT NULL,
    frozen_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
);

-- Policy bundles the gate has seen (by hash), and which one is in force.
CREATE TABLE policy_bundles (
    policy_hash TEXT PRIMARY KEY,
    bundle      TEXT NOT NULL
);
CREATE TABLE policy_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    policy_hash TEXT NOT NULL,
    version     BIGINT NOT NULL,
    activated_at TEXT NOT NULL
);

-- Roster versions: a new version whenever the approvers' ids, groups or keys change.
CREATE TABLE roster_versions (
    version     BIGINT PRIMARY KEY,
    roster_hash TEXT NOT NULL UNIQUE
);
