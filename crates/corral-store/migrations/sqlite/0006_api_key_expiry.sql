-- Optional expiry of an API key: after it the key authenticates nobody.
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
