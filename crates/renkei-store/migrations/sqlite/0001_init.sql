-- Events: every request received, accepted or rejected. Times are Unix milliseconds.
CREATE TABLE events (
    id            TEXT PRIMARY KEY,          -- UUIDv7: sorts by arrival
    source        TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    status        TEXT NOT NULL,             -- accepted | rejected
    reason        TEXT,                      -- why rejected
    http_status   INTEGER NOT NULL,          -- what the sender was answered
    received_at   INTEGER NOT NULL,
    request_id    TEXT NOT NULL,             -- rows of one split request share it
    row_no        INTEGER,
    content_type  TEXT,
    headers       TEXT NOT NULL,             -- JSON object, credentials removed
    query         TEXT NOT NULL,             -- JSON object, token removed
    body          TEXT,                      -- parsed body (JSON), accepted events
    raw           BLOB,                      -- bytes as sent, rejected events (up to a limit)
    raw_truncated INTEGER NOT NULL DEFAULT 0,
    dedupe_key    TEXT
);
CREATE INDEX events_received ON events (received_at);
CREATE INDEX events_source ON events (source, id);

-- Dedupe keys of a source, live until expires_at.
CREATE TABLE dedupe (
    source     TEXT NOT NULL,
    key        TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (source, key)
);

-- Deliveries: one flow run for one event. The open ones are the queue.
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,   -- arrival order, the ordering-key tie-break
    event_id    TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    flow        TEXT NOT NULL,
    status      TEXT NOT NULL,           -- pending | in_flight | retrying | succeeded | dead | skipped
    order_key   TEXT,
    step        INTEGER NOT NULL DEFAULT 0,          -- next step to run
    tries       INTEGER NOT NULL DEFAULT 0,          -- failed tries of that step
    attempts    INTEGER NOT NULL DEFAULT 0,          -- all tries of all steps
    outputs     TEXT NOT NULL DEFAULT '[]',          -- finished steps' responses (JSON array)
    next_at     INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX deliveries_queue ON deliveries (next_at) WHERE status IN ('pending', 'retrying', 'in_flight');
CREATE INDEX deliveries_key ON deliveries (flow, order_key, id)
    WHERE order_key IS NOT NULL AND status IN ('pending', 'retrying', 'in_flight');
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_flow ON deliveries (flow, id);
CREATE INDEX deliveries_status ON deliveries (status, id);

-- Attempts: each HTTP try of each step, as sent and as answered (secrets redacted before storing).
CREATE TABLE attempts (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id        INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    step               INTEGER NOT NULL,
    try_no             INTEGER NOT NULL,
    started_at         INTEGER NOT NULL,
    duration_ms        INTEGER NOT NULL,
    outcome            TEXT NOT NULL,    -- success | transient | permanent
    method             TEXT NOT NULL,
    url                TEXT NOT NULL,
    request_headers    TEXT NOT NULL,
    request_body       BLOB,
    response_status    INTEGER,
    response_headers   TEXT,
    response_body      BLOB,
    response_truncated INTEGER NOT NULL DEFAULT 0,
    error              TEXT
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, id);

-- Config as loaded, one row per change.
CREATE TABLE config_revisions (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    loaded_at INTEGER NOT NULL,
    text      TEXT NOT NULL
);
