-- Small named values kept across restarts (polling cursors), and counters (kintone requests per app per day).
CREATE TABLE kv_state (
    key        TEXT COLLATE "C" PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE counters (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value BIGINT NOT NULL
);
