-- Each session states how long its heartbeat holds: a worker is presumed dead
-- once `lease_expires_at` (its last heartbeat plus its own --lease-seconds) has
-- passed, whatever lease the process looking at it was started with. NULL for
-- sessions written before this migration: those fall back to the reader's lease.
ALTER TABLE sessions ADD COLUMN lease_expires_at TEXT;
