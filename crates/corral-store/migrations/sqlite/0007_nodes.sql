-- Fleets: the nodes sharing a store, their leases, and the node that owns each session.
CREATE TABLE nodes (
    id                     TEXT    PRIMARY KEY NOT NULL,
    advertise_url          TEXT    NOT NULL,
    started_at             TEXT    NOT NULL,
    renewed_at             TEXT    NOT NULL,
    lease_expires_at       TEXT    NOT NULL,
    lost_at                TEXT,
    live_sessions          INTEGER NOT NULL DEFAULT 0,
    max_sessions           INTEGER NOT NULL DEFAULT 0,
    available_memory_bytes INTEGER,
    worker_memory_bytes    INTEGER NOT NULL DEFAULT 0
);

-- NULL for sessions of a single-node server that predates fleets.
ALTER TABLE sessions ADD COLUMN owner_node TEXT;
CREATE INDEX sessions_by_owner ON sessions (owner_node) WHERE state NOT IN ('closed', 'dead');
CREATE INDEX sessions_live_by_tenant ON sessions (tenant) WHERE state NOT IN ('closed', 'dead');
