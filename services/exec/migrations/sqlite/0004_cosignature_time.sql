-- The timestamp (POSIX seconds) each stored cosignature line carries: a line replaces the stored
-- one of its witness and checkpoint only when it is newer, so an older line replayed never
-- replaces a newer one. Lines stored before this column count as 0: the next valid line of that
-- witness for that checkpoint replaces them.
ALTER TABLE log_cosignatures ADD COLUMN cosigned_at INTEGER NOT NULL DEFAULT 0;
