-- The receipt log (SPEC §7): an RFC 6962 Merkle tree over the receipts in log_index order.
-- Leaf i is JCS({"key_id", "logged_at", "receipt", "signature"}) of receipts row i, with
-- logged_at = receipts.created_at.

-- Every complete subtree's hash: leaves [idx * 2^level, (idx + 1) * 2^level). Level 0 holds the
-- leaf hashes. Proofs read O(log n) rows from here; nothing is ever rebuilt.
CREATE TABLE log_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  TEXT NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Every checkpoint the log signed. Never a smaller size than the last, never the same size with
-- another root.
CREATE TABLE log_checkpoints (
    size       INTEGER PRIMARY KEY,
    root       TEXT NOT NULL,
    note       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Witness cosignature lines delivered for a checkpoint (POST /log/cosignatures).
CREATE TABLE log_cosignatures (
    size    INTEGER NOT NULL,
    witness TEXT NOT NULL,
    line    TEXT NOT NULL,
    PRIMARY KEY (size, witness)
);
