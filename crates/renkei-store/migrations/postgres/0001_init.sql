-- The SQLite schema (../sqlite/0001_init.sql) in PostgreSQL types; the same columns, so rows map the same.
-- Times are Unix milliseconds (BIGINT). Counters are BIGINT: they hold u32 values. JSON is TEXT, not JSONB:
-- JSONB reorders object keys, and key order is what users see and what orders CSV columns.
-- Text that is sorted or paged on (event ids) is COLLATE "C": byte order, as SQLite's BINARY, whatever the
-- database's locale.

-- Events: every request received, accepted or rejected.
CREATE TABLE events (
    id            TEXT COLLATE "C" PRIMARY KEY,   -- UUIDv7: sorts by arrival
    source        TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    status        TEXT NOT NULL,                  -- accepted | rejected
    reason        TEXT,                           -- why rejected
    http_status   INTEGER NOT NULL,               -- what the sender was answered
    received_at   BIGINT NOT NULL,
    request_id    TEXT NOT NULL,                  -- rows of one split request share it
    row_no        BIGINT,
    content_type  TEXT,
    headers       TEXT NOT NULL,                  -- JSON object, credentials removed
    query         TEXT NOT NULL,                  -- JSON object, token removed
    body          TEXT,                           -- parsed body (JSON), accepted events
    raw           BYTEA,                          -- bytes as sent, rejected events (up to a limit)
    raw_truncated BOOLEAN NOT NULL DEFAULT FALSE,
    dedupe_key    TEXT
);
CREATE INDEX events_received ON events (received_at);
CREATE INDEX events_source ON events (source, id);

-- Dedupe keys of a source, live until expires_at.
CREATE TABLE dedupe (
    source     TEXT NOT NULL,
    key        TEXT NOT NULL,
    event_id   TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (source, key)
);

-- Deliveries: one flow run for one event. The open ones are the queue.
-- The id sequence keeps the default CACHE 1: values are then handed out in call order across sessions, which
-- the ordering-key lock relies on (see src/postgres/mod.rs).
CREATE TABLE deliveries (
    id          BIGSERIAL PRIMARY KEY,               -- arrival order, the ordering-key tie-break
    event_id    TEXT COLLATE "C" NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    flow        TEXT NOT NULL,
    status      TEXT NOT NULL,           -- pending | in_flight | retrying | succeeded | dead | skipped
    order_key   TEXT,
    step        BIGINT NOT NULL DEFAULT 0,           -- next step to run
    tries       BIGINT NOT NULL DEFAULT 0,           -- failed tries of that step
    attempts    BIGINT NOT NULL DEFAULT 0,           -- all tries of all steps
    outputs     TEXT NOT NULL DEFAULT '[]',          -- finished steps' responses (JSON array)
    next_at     BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    last_error  TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX deliveries_queue ON deliveries (next_at) WHERE status IN ('pending', 'retrying', 'in_flight');
CREATE INDEX deliveries_key ON deliveries (flow, order_key, id)
    WHERE order_key IS NOT NULL AND status IN ('pending', 'retrying', 'in_flight');
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_flow ON deliveries (flow, id);
CREATE INDEX deliveries_status ON deliveries (status, id);

-- Attempts: each HTTP try of each step, as sent and as answered (secrets redacted before storing).
CREATE TABLE attempts (
    id                 BIGSERIAL PRIMARY KEY,
    delivery_id        BIGINT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    step               BIGINT NOT NULL,
    try_no             BIGINT NOT NULL,
    started_at         BIGINT NOT NULL,
    duration_ms        BIGINT NOT NULL,
    outcome            TEXT NOT NULL,    -- success | transient | permanent
    method             TEXT NOT NULL,
    url                TEXT NOT NULL,
    request_headers    TEXT NOT NULL,
    request_body       BYTEA,
    response_status    INTEGER,
    response_headers   TEXT,
    response_body      BYTEA,
    response_truncated BOOLEAN NOT NULL DEFAULT FALSE,
    error              TEXT
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, id);

-- Config as loaded, one row per change.
CREATE TABLE config_revisions (
    id        BIGSERIAL PRIMARY KEY,
    loaded_at BIGINT NOT NULL,
    text      TEXT NOT NULL
);
