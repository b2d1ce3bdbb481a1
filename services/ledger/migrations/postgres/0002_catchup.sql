-- A catch-up in progress (one row per origin at most): the entries [base_size, size) are
-- mirrored in `leaves`/`nodes` but NOT verified yet; `frontier` is the log's frontier at `size`
-- (concatenated 32-byte hashes, largest subtree first). Only when the frontier after the last
-- chunk gives the root of the checkpoint being verified does `logs` advance (and this row go, in
-- the same transaction); a mismatch deletes the row and every leaf/node beyond `logs.size`.
-- `target_size`/`target_root` (base64) name the checkpoint the catch-up was started for.
CREATE TABLE catchup (
    origin      TEXT PRIMARY KEY,
    base_size   BIGINT NOT NULL,
    size        BIGINT NOT NULL,
    frontier    BYTEA NOT NULL,
    target_size BIGINT NOT NULL,
    target_root TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
