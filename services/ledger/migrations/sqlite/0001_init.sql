-- ClawLedger's own state: what it verified of each watched log, the entries and complete tree
-- nodes it mirrored, the checkpoints it cosigned, and the alerts it raised.

-- Per watched origin: the last checkpoint that verified (size, base64 root) and the log's
-- frontier at that size (the concatenated 32-byte hashes of its complete subtrees, largest first).
CREATE TABLE logs (
    origin     TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    root       TEXT NOT NULL,
    frontier   BLOB NOT NULL,
    updated_at TEXT NOT NULL
);

-- Mirrored entries: the leaf data bytes, as the log served them.
CREATE TABLE leaves (
    origin TEXT NOT NULL,
    idx    INTEGER NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (origin, idx)
) WITHOUT ROWID;

-- Mirrored complete subtrees (what Frontier::append hands back): enough for every proof.
CREATE TABLE nodes (
    origin TEXT NOT NULL,
    level  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hash   BLOB NOT NULL,
    PRIMARY KEY (origin, level, idx)
) WITHOUT ROWID;

-- Checkpoints ClawLedger cosigned: the note text (the log's signature and our cosignature line).
CREATE TABLE cosigned (
    origin     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    root       TEXT NOT NULL,
    note       TEXT NOT NULL,
    line       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (origin, size)
);

-- Everything that was wrong with a log: never cosigned.
CREATE TABLE alerts (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    kind   TEXT NOT NULL,
    detail TEXT NOT NULL,
    size   INTEGER,
    root   TEXT,
    at     TEXT NOT NULL
);
