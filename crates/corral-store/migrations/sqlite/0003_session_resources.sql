-- Each session's sandbox resource limits (JSON: memory_bytes, max_processes, cpu_millicores,
-- workspace_bytes, max_open_files), fixed at creation. Numbered 0003 so a parallel 0002 can
-- land without renumbering.
ALTER TABLE sessions ADD COLUMN resources TEXT NOT NULL DEFAULT '{}';
