-- corral's schema on PostgreSQL: the same tables and columns as the SQLite migrations
-- 0001-0007 reach, with PostgreSQL's types (timestamps with time zone, booleans, bigints).
-- JSON columns stay text, written and read by corral alone.
CREATE TABLE sessions (
    id                   TEXT        PRIMARY KEY NOT NULL, -- UUID v7: id order is creation order
    name                 TEXT,
    runtime              TEXT        NOT NULL,
    state                TEXT        NOT NULL,
    state_reason         TEXT,
    created_at           TIMESTAMPTZ NOT NULL,
    last_activity_at     TIMESTAMPTZ NOT NULL,
    execution_count      BIGINT      NOT NULL DEFAULT 0,
    metadata             TEXT        NOT NULL DEFAULT '{}',
    accepting_executions BOOLEAN     NOT NULL DEFAULT TRUE,
    idle_ttl_ms          BIGINT      NOT NULL DEFAULT 0,
    max_ttl_ms           BIGINT      NOT NULL DEFAULT 0,
    tenant               TEXT        NOT NULL DEFAULT 'default',
    resources            TEXT        NOT NULL DEFAULT '{}',
    owner_node           TEXT
);
CREATE INDEX sessions_by_state ON sessions (state, id);
CREATE INDEX sessions_by_tenant ON sessions (tenant, id);
CREATE INDEX sessions_ended_by_time ON sessions (last_activity_at) WHERE state IN ('closed', 'dead');
CREATE INDEX sessions_by_owner ON sessions (owner_node) WHERE state NOT IN ('closed', 'dead');
CREATE INDEX sessions_live_by_tenant ON sessions (tenant) WHERE state NOT IN ('closed', 'dead');

CREATE TABLE executions (
    session_id      TEXT        NOT NULL REFERENCES sessions (id),
    execution_count BIGINT      NOT NULL,
    code            TEXT        NOT NULL,
    status          TEXT        NOT NULL,
    result          TEXT,
    stdout          TEXT        NOT NULL,
    stderr          TEXT        NOT NULL,
    outputs         TEXT        NOT NULL,
    error           TEXT,
    duration_ms     BIGINT      NOT NULL,
    truncated       BOOLEAN     NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, execution_count)
);

CREATE TABLE tenants (
    name       TEXT        PRIMARY KEY NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT        PRIMARY KEY NOT NULL,
    name          TEXT,
    scope         TEXT        NOT NULL,
    tenant        TEXT        REFERENCES tenants (name),
    session_id    TEXT        REFERENCES sessions (id),
    secret_sha256 TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    expires_at    TIMESTAMPTZ
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant, id);

CREATE TABLE nodes (
    id                     TEXT        PRIMARY KEY NOT NULL,
    advertise_url          TEXT        NOT NULL,
    started_at             TIMESTAMPTZ NOT NULL,
    renewed_at             TIMESTAMPTZ NOT NULL,
    lease_expires_at       TIMESTAMPTZ NOT NULL,
    lost_at                TIMESTAMPTZ,
    live_sessions          BIGINT      NOT NULL DEFAULT 0,
    max_sessions           BIGINT      NOT NULL DEFAULT 0,
    available_memory_bytes BIGINT,
    worker_memory_bytes    BIGINT      NOT NULL DEFAULT 0
);
