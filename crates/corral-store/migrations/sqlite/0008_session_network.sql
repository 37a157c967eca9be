-- Each session's network policy (JSON: "none" or {"allow": [...]}), fixed at creation.
ALTER TABLE sessions ADD COLUMN network TEXT NOT NULL DEFAULT '"none"';
