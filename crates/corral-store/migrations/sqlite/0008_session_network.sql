-- Each session's network policy (JSON: "none" or {"allow": [...]}), fixed at creation.
ALTER TABLE sessions ADD COLUMN network TEXT NOT NULL DEFAULT '"none"';
-- The session's name proxy ports (JSON: [[session port, server listener port], ...]).
ALTER TABLE sessions ADD COLUMN egress_ports TEXT NOT NULL DEFAULT '[]';
