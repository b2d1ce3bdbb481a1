-- The log's frontier (the hashes of its complete subtrees, at most 64, as concatenated hex) kept
-- in the head row: a replica whose tree is behind reads it with the lock it takes anyway,
-- instead of looking up nodes while every other replica waits for that lock.
ALTER TABLE log_state ADD COLUMN frontier TEXT NOT NULL DEFAULT '';
