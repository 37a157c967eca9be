-- Sessions and their execution history.
CREATE TABLE sessions (
    id                   TEXT    PRIMARY KEY NOT NULL, -- UUID v7, so ordering by id is ordering by creation
    name                 TEXT,
    runtime              TEXT    NOT NULL,
    state                TEXT    NOT NULL,
    state_reason         TEXT,
    created_at           TEXT    NOT NULL,
    last_activity_at     TEXT    NOT NULL,
    execution_count      INTEGER NOT NULL DEFAULT 0,
    metadata             TEXT    NOT NULL DEFAULT '{}', -- JSON object
    accepting_executions INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX sessions_by_state ON sessions (state, id);

CREATE TABLE executions (
    session_id      TEXT    NOT NULL REFERENCES sessions (id),
    execution_count INTEGER NOT NULL,
    code            TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    result          TEXT,            -- JSON MIME bundle
    stdout          TEXT    NOT NULL,
    stderr          TEXT    NOT NULL,
    outputs         TEXT    NOT NULL, -- JSON array of output items
    error           TEXT,            -- JSON {ename, evalue, traceback}
    duration_ms     INTEGER NOT NULL,
    truncated       INTEGER NOT NULL,
    started_at      TEXT    NOT NULL,
    finished_at     TEXT    NOT NULL,
    PRIMARY KEY (session_id, execution_count)
);
