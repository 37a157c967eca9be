-- Per-session time-to-live: closed after idle_ttl_ms without activity and max_ttl_ms after
-- creation. Sessions stored before this migration get 0 (they ended with their server).
ALTER TABLE sessions ADD COLUMN idle_ttl_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN max_ttl_ms INTEGER NOT NULL DEFAULT 0;
