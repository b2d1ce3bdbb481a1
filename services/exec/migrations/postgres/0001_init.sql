-- OpenExec on PostgreSQL: the same tables as on SQLite (migrations/sqlite), shared by every
-- replica, plus what many replicas need: the log's head row (its lock orders all appends) and
-- the replicas' heartbeats (owner liveness).

-- One row per (tenant, nonce) that was claimed: the claim is what makes execution at-most-once.
CREATE TABLE executions (
    tenant_id    TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    exec_id      TEXT NOT NULL,
    action       TEXT NOT NULL,
    -- running | executed | failed | interrupted
    status       TEXT NOT NULL,
    -- the receipt this attempt will carry, minus its outcome
    template     TEXT NOT NULL,
    receipt_hash TEXT,
    -- the replica that claimed it (see replicas): only a claim whose owner is gone can become
    -- `interrupted`
    owner        TEXT NOT NULL,
    claimed_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, nonce)
);
CREATE UNIQUE INDEX executions_exec_id ON executions (exec_id);
CREATE INDEX executions_running ON executions (status) WHERE status = 'running';

-- Approval artifacts are single use: one row per approval ever accepted.
CREATE TABLE approvals_used (
    approval_key TEXT PRIMARY KEY,
    exec_id      TEXT NOT NULL
);

-- Every receipt ever written, in log order. log_index is dense: 0, 1, 2, ... with no gaps.
CREATE TABLE receipts (
    log_index    BIGINT PRIMARY KEY,
    receipt_hash TEXT NOT NULL UNIQUE,
    exec_id      TEXT NOT NULL,
    receipt      TEXT NOT NULL,
    signature    TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    result       TEXT,
    message      TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX receipts_exec_id ON receipts (exec_id, log_index);

-- The receipt log (SPEC §7): see migrations/sqlite/0002_log.sql.
CREATE TABLE log_nodes (
    level INTEGER NOT NULL,
    idx   BIGINT NOT NULL,
    hash  TEXT NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE log_checkpoints (
    size       BIGINT PRIMARY KEY,
    root       TEXT NOT NULL,
    note       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE log_cosignatures (
    size    BIGINT NOT NULL,
    witness TEXT NOT NULL,
    line    TEXT NOT NULL,
    PRIMARY KEY (size, witness)
);

-- The log's head: every append locks this row (SELECT ... FOR UPDATE), so the receipts of all
-- replicas enter one log in one order.
CREATE TABLE log_state (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL,
    root TEXT NOT NULL
);
INSERT INTO log_state (id, size, root)
VALUES (1, 0, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');

-- Live replicas: each renews its heartbeat every second.
CREATE TABLE replicas (
    owner        TEXT PRIMARY KEY,
    started_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);
