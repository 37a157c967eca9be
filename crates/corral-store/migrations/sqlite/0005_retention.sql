-- Retention: the reaper removes closed and dead sessions some time after they ended (their
-- last_activity_at), oldest first.
CREATE INDEX sessions_ended_by_time ON sessions (last_activity_at) WHERE state IN ('closed', 'dead');
