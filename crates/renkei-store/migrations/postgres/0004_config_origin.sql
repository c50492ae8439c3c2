-- Config revisions come from the file at start, or from an edit (console, API, `renkei apply`). At start the
-- file wins only when it changed since the last revision it gave; otherwise the newest revision runs.
ALTER TABLE config_revisions ADD COLUMN origin TEXT NOT NULL DEFAULT 'file';
