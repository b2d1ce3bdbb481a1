-- Which log this database holds: its origin and the note verifier key that signs its
-- checkpoints, recorded by the first process that opens it. Every later process (a restart, or
-- another replica) must present the same, or it refuses to start: two keys or two origins must
-- never sign one log.
CREATE TABLE log_identity (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    origin       TEXT NOT NULL,
    verifier_key TEXT NOT NULL
);
