-- Concurrency limits that hold across nodes: a destination (or a kintone domain) allowed N requests at once
-- has N slots; a node takes one for each request and gives it back after. A slot held past `until` (its node
-- died mid-request) is free again.
CREATE TABLE limit_slots (
    key   TEXT NOT NULL,
    slot  INTEGER NOT NULL,
    owner TEXT NOT NULL,
    until BIGINT NOT NULL,
    PRIMARY KEY (key, slot)
);
