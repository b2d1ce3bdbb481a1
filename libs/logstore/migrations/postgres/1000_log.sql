-- The log tables of openexec-logstore (PostgreSQL), for a service that keeps a log and was not
-- created by OpenExec's migrations (OpenExec's 0001–0004 built the same tables step by step).
-- Versions 1000 and up belong to this crate; a service's own migrations stay below 1000, and
-- both migrators run with ignore_missing on the one _sqlx_migrations table.

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
    size        BIGINT NOT NULL,
    witness     TEXT NOT NULL,
    line        TEXT NOT NULL,
    cosigned_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (size, witness)
);

-- The head every replica appends under (row lock): size, root and the frontier's hashes.
CREATE TABLE log_state (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    size     BIGINT NOT NULL,
    root     TEXT NOT NULL,
    frontier TEXT NOT NULL DEFAULT ''
);
INSERT INTO log_state (id, size, root)
VALUES (1, 0, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');

CREATE TABLE log_identity (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    origin       TEXT NOT NULL,
    verifier_key TEXT NOT NULL
);
