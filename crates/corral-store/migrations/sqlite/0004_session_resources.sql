-- Each session's sandbox resource limits (JSON: memory_bytes, max_processes, cpu_millicores,
-- workspace_bytes, max_open_files), fixed at creation.
ALTER TABLE sessions ADD COLUMN resources TEXT NOT NULL DEFAULT '{}';
