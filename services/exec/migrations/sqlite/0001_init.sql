-- One row per (tenant, nonce) that was claimed: the claim is what makes execution at-most-once.
CREATE TABLE executions (
    tenant_id    TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    exec_id      TEXT NOT NULL,
    action       TEXT NOT NULL,
    -- running | executed | failed | interrupted
    status       TEXT NOT NULL,
    -- the receipt this attempt will carry, minus its outcome (used to write an `interrupted`
    -- receipt if the process dies while the handler runs)
    template     TEXT NOT NULL,
    receipt_hash TEXT,
    -- the process that claimed it (see Store::owner_alive): only a claim whose owner is gone can
    -- become `interrupted`
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
    log_index    INTEGER PRIMARY KEY,
    receipt_hash TEXT NOT NULL UNIQUE,
    exec_id      TEXT NOT NULL,
    receipt      TEXT NOT NULL,
    signature    TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    -- the handler's result (executed) as JSON text, for replays
    result       TEXT,
    -- the message of a failure or rejection, for replays
    message      TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX receipts_exec_id ON receipts (exec_id, log_index);
