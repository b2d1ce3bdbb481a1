-- Which log this database holds (see migrations/sqlite/0003_log_identity.sql): every replica
-- must present the same origin and log key.
CREATE TABLE log_identity (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    origin       TEXT NOT NULL,
    verifier_key TEXT NOT NULL
);
