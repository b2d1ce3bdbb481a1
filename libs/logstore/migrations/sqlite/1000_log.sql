-- The log tables of openexec-logstore (SQLite), for a service that keeps a log and was not
-- created by OpenExec's migrations (OpenExec's 0002–0004 built the same tables step by step).
-- Versions 1000 and up belong to this crate; a service's own migrations stay below 1000, and
-- both migrators run with ignore_missing on the one _sqlx_migrations table.

CREATE TABLE log_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  TEXT NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

CREATE TABLE log_checkpoints (
    size       INTEGER PRIMARY KEY,
    root       TEXT NOT NULL,
    note       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE log_cosignatures (
    size        INTEGER NOT NULL,
    witness     TEXT NOT NULL,
    line        TEXT NOT NULL,
    cosigned_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (size, witness)
);

CREATE TABLE log_identity (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    origin       TEXT NOT NULL,
    verifier_key TEXT NOT NULL
);
