-- Console sessions, shared by every node (a load balancer may send each request elsewhere). The session id
-- is kept only as its SHA-256: reading the table gives nothing to sign in with.
CREATE TABLE console_sessions (
    id_hash    TEXT PRIMARY KEY,
    -- JSON: who signed in (name, audit name, role, how) and the session's CSRF token.
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen);
