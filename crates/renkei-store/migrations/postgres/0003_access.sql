-- Who may use the admin API (tokens) and the console (users), and what was done (the audit log).
CREATE TABLE api_tokens (
    name       TEXT COLLATE "C" PRIMARY KEY,
    role       TEXT NOT NULL,
    -- SHA-256 of the token, hex: the token itself is never stored.
    hash       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE TABLE users (
    name          TEXT COLLATE "C" PRIMARY KEY,
    role          TEXT NOT NULL,
    -- argon2id, PHC string.
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE TABLE audit_log (
    id     BIGSERIAL PRIMARY KEY,
    at     BIGINT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
