-- A caller-chosen identity a live session holds within its tenant (a Jupyter path, an agent
-- identifier: the engine's SessionClaim, as one text key). NULL for sessions without one.
-- Unique among the live sessions of a tenant: a claim is given back when its session ends
-- (closed or dead), with nothing to clean up.
ALTER TABLE sessions ADD COLUMN claim TEXT;
CREATE UNIQUE INDEX sessions_live_claims ON sessions (tenant, claim)
    WHERE claim IS NOT NULL AND state NOT IN ('closed', 'dead');
