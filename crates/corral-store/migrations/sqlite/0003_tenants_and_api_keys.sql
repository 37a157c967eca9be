-- Tenants, API keys (secrets stored only as SHA-256 hashes) and the tenant of each session.
CREATE TABLE tenants (
    name       TEXT PRIMARY KEY NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY NOT NULL, -- public part of the key: corral_<id>_<secret>
    name          TEXT,
    scope         TEXT NOT NULL,              -- admin, tenant or session
    tenant        TEXT REFERENCES tenants (name),
    session_id    TEXT REFERENCES sessions (id),
    secret_sha256 TEXT NOT NULL,              -- lowercase hex
    created_at    TEXT NOT NULL,
    revoked_at    TEXT
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant, id);

-- Sessions stored before tenants existed belong to the default tenant.
ALTER TABLE sessions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
CREATE INDEX sessions_by_tenant ON sessions (tenant, id);
