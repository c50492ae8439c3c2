//! The group commit's statements (`group.rs`): a whole batch of ingests, attempt records and a claim, its
//! `BEGIN` and its `COMMIT` in one SQL text, so one round trip to SQLite whatever the batch's size.
//!
//! sqlx runs SQLite on a thread of its own and every statement sent there is a round trip: two thread
//! wake-ups, each of which, on a machine whose cores are busy serving HTTP, waits for a core (measured: 150-250
//! µs for a `BEGIN`, which does next to nothing). With one statement per table and chunk of rows, a batch of 30
//! ingests was some twenty round trips, and the writer spent more of a commit waiting for wake-ups than writing
//! (BENCHMARKS.md, "Fourth session"). Here the rows of a batch travel as one JSON array per table, bound to one
//! parameter, and the statements read them with `json_each`. Every text is fixed (one per combination of the
//! parts a batch has), so each is prepared once and stays in sqlx's statement cache.
//!
//! A statement that reads many columns of each row first turns the rows into JSONB in a materialized CTE
//! (`WITH j AS MATERIALIZED (SELECT key, jsonb(value) …)`): `json_each`'s `value` is text, made anew at each
//! mention and parsed again by each `->>`, which for an event row of thirteen columns was most of SQLite's work
//! on it (with the database on tmpfs: ingest 8,300-9,100 → 9,500-10,200/s, hub CPU per event −9%).
//!
//! Parameters are plain `?`, bound in the order they appear across a text's statements: sqlx numbers a text's
//! anonymous parameters on from one statement to the next, while a numbered `?N` that leaves a gap in a
//! statement (`?3` alone, say) shifts that numbering and can leave a later parameter unbound (NULL). Rows that
//! come back carry a `kind` column saying which statement they are from.
//!
//! The large texts of an event (headers, query, body) do not travel in its JSON row: each column of the batch's
//! events goes one after the other into a BLOB parameter of its own, which the rows point into
//! (`CAST(substr(?, at, len) AS TEXT)`: a copy); the same for attempts' headers and bodies. Inside the row, a
//! ~1 KB body was escaped into a JSON string by serde, parsed by `json_each`, written out again as the array
//! element's text, parsed again into JSONB and unescaped by `->>`: four passes over it, and JSON was over half
//! of what SQLite did for an ingest (callgrind: BENCHMARKS.md, "Eighth session").
//!
//! Each event row is written out as JSON by the caller's task, not by the writer's thread ([`EventRow::new`]):
//! the writer only joins them.
//!
//! The meaning is that of running the jobs one after the other, each a batch of one (`queue::ingest_in`,
//! `queue::record_attempt_in`, what `group.rs` falls back to), with the claim last: a dedupe key taken by an
//! earlier event of the batch makes a later one a duplicate (`json_each` gives the rows in order, and SQLite
//! applies a multi-row upsert row by row), an attempt's lease is checked before any transition of the batch (no
//! two attempts of one delivery share a batch: such a batch goes the slow way), and the claim sees what the batch
//! stored and freed.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Executor, Row, Sqlite, Transaction};

use super::queue::{ClaimedRows, EventRow, Recorded};
use super::rows::{column_names, DELIVERY_COLUMNS, EVENT_COLUMNS};
use super::{db, ms};
use crate::*;

/// `[a, b, …]` of rows already written out as JSON.
fn array<'a>(rows: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, row) in rows.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(row);
    }
    out.push(']');
    out
}

/// One ingest job's events and its `now`.
pub(super) struct IngestJob<'a> {
    pub events: &'a [EventRow],
    pub now: DateTime<Utc>,
}

/// The dedupe keys (rows `[source, key, event_id, expires_at]`; a key that expired before the newest `now` of
/// the batch is taken over, the jobs' `now`s differing by the milliseconds the batch took to gather), then the
/// events (rows as [`IngestParams::events`], their headers, queries and bodies cut out of a BLOB each) that took
/// their key or have none, then their deliveries (rows `[event_id, flow, status, order_key, error, now]`), then,
/// per keyed event in order, which event holds its key for it: the event itself when it took the key, the
/// holder when it is a duplicate (the keys are bound a second time).
///
/// Which events took their key is what temp triggers on `dedupe` write down in `temp.took` (the upsert takes the
/// key row by row): the key's holder after the statement is not enough, since with a window of 0 (or one shorter
/// than the batch's spread of `now`s) a later event takes the key over from an earlier one that took it too, and
/// both are stored, as one after the other would be.
///
/// A delivery is inserted `held` when it is open, keyed, and an open delivery of its key was there before the
/// statement; the `held` trigger settles the key all the same (and alone decides for two of one key in one
/// batch, which this does not see), but finds nothing to change instead of writing the new row a second time:
/// an ingest behind an open delivery of its key 31 → 19 µs (`renkei-bench blocked`).
const INGEST: &str = "
CREATE TEMP TABLE IF NOT EXISTS took (event_id TEXT PRIMARY KEY);
DELETE FROM temp.took;
CREATE TEMP TRIGGER IF NOT EXISTS took_key AFTER INSERT ON dedupe
    BEGIN INSERT OR IGNORE INTO took (event_id) VALUES (NEW.event_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS took_key_over AFTER UPDATE ON dedupe
    BEGIN INSERT OR IGNORE INTO took (event_id) VALUES (NEW.event_id); END;
WITH j AS MATERIALIZED (SELECT key, jsonb(value) AS value FROM json_each(?))
INSERT INTO dedupe (source, key, event_id, expires_at)
    SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3 FROM j WHERE true ORDER BY j.key
    ON CONFLICT (source, key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at
        WHERE dedupe.expires_at <= ?;
WITH j AS MATERIALIZED (SELECT key, jsonb(value) AS value FROM json_each(?))
INSERT INTO events (id, source, event_type, status, http_status, received_at, request_id, row_no,
                    content_type, headers, query, body, dedupe_key)
    SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, 'accepted', 202, j.value ->> 3, j.value ->> 4,
           j.value ->> 5, j.value ->> 6,
           CAST(substr(?, j.value ->> 8, j.value ->> 9) AS TEXT),
           CAST(substr(?, j.value ->> 10, j.value ->> 11) AS TEXT),
           CAST(substr(?, j.value ->> 12, j.value ->> 13) AS TEXT),
           j.value ->> 7
    FROM j
    WHERE j.value ->> 7 IS NULL OR j.value ->> 0 IN (SELECT event_id FROM temp.took)
    ORDER BY j.key;
WITH j AS MATERIALIZED (SELECT key, jsonb(value) AS value FROM json_each(?))
INSERT INTO deliveries (event_id, flow, status, order_key, next_at, last_error, created_at, updated_at, held)
    SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 5, j.value ->> 4,
           j.value ->> 5, j.value ->> 5,
           j.value ->> 3 IS NOT NULL AND j.value ->> 2 IN ('pending', 'retrying', 'in_flight')
               AND EXISTS (SELECT 1 FROM deliveries p
                           WHERE p.flow = j.value ->> 1 AND p.order_key = j.value ->> 3
                             AND p.status IN ('pending', 'retrying', 'in_flight'))
    FROM j
    WHERE EXISTS (SELECT 1 FROM events e WHERE e.id = j.value ->> 0)
    ORDER BY j.key;
SELECT 2 AS kind, json_group_array(
           CASE WHEN j.value ->> 2 IN (SELECT event_id FROM temp.took) THEN j.value ->> 2 ELSE x.event_id END
           ORDER BY j.key) AS answer
    FROM json_each(?) j JOIN dedupe x ON x.source = j.value ->> 0 AND x.key = j.value ->> 1;";

/// The ingest part's parameters, in the order [`INGEST`] takes them; `None` when no job has an event.
fn ingest_params(jobs: &[IngestJob<'_>]) -> Option<IngestParams> {
    use std::fmt::Write;
    let latest = jobs.iter().map(|j| j.now).max().unwrap_or_default();
    let all = || jobs.iter().flat_map(|j| j.events.iter());
    all().next()?;
    let keys = array(all().filter_map(|e| e.dedupe_row.as_deref()));
    let mut events = String::from("[");
    let mut texts: [Vec<u8>; 3] = Default::default();
    for (i, t) in texts.iter_mut().enumerate() {
        t.reserve(all().map(|e| e.texts[i].len()).sum());
    }
    for e in all() {
        if events.len() > 1 {
            events.push(',');
        }
        events.push_str(&e.head);
        // Where each text starts in its column's BLOB (1-based, as `substr` counts) and its length.
        for (column, text) in texts.iter_mut().zip(&e.texts) {
            let _ = write!(events, ",{},{}", column.len() + 1, text.len());
            column.extend_from_slice(text.as_bytes());
        }
        events.push(']');
    }
    events.push(']');
    let mut deliveries = String::from("[");
    for job in jobs {
        let now = ms(job.now);
        for ev in job.events {
            for d in &ev.deliveries {
                if deliveries.len() > 1 {
                    deliveries.push(',');
                }
                let row = (&ev.id, &d.flow, d.status.as_str(), &d.order_key, &d.error, now);
                deliveries.push_str(&serde_json::to_string(&row).expect("a delivery row serialises"));
            }
        }
    }
    deliveries.push(']');
    Some(IngestParams { keys, latest: ms(latest), events, texts, deliveries })
}

/// [`INGEST`]'s parameters.
struct IngestParams {
    keys: String,
    latest: i64,
    /// Rows `[id, source, event_type, received_at, request_id, row_no, content_type, dedupe_key, headers_at,
    /// headers_len, query_at, query_len, body_at, body_len]`.
    events: String,
    /// Every event's headers, all their queries, all their bodies: three BLOBs of UTF-8 bytes (`substr` counts
    /// a BLOB's bytes), each cast back to text. One per column, each bound once: sqlx copies every argument it
    /// sends to SQLite's thread and SQLite copies it again, so a BLOB cut from by three `?` would be six copies.
    texts: [Vec<u8>; 3],
    deliveries: String,
}

/// Per job, what `queue::ingest_in` would have answered, from the key holders [`INGEST`] read.
fn ingest_answers(jobs: &[IngestJob<'_>], holders: Vec<String>) -> Result<Vec<Vec<Ingested>>> {
    let mut holders = holders.into_iter();
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut answers = Vec::with_capacity(job.events.len());
        for ev in job.events {
            let holder = match &ev.dedupe {
                Some(_) => holders.next().ok_or_else(|| StoreError::Other("a dedupe key was not stored".into()))?,
                None => ev.id.clone(),
            };
            answers.push(if holder == ev.id {
                Ingested::Stored { event_id: ev.id.clone(), deliveries: ev.deliveries.len() }
            } else {
                Ingested::Duplicate { event_id: holder }
            });
        }
        out.push(answers);
    }
    Ok(out)
}

/// One attempt to record.
pub(super) struct AttemptJob<'a> {
    pub owner: &'a str,
    pub attempt: &'a NewAttempt,
    pub transition: &'a Transition,
    pub now: DateTime<Utc>,
}

/// The transitions (rows `[id, owner, status, step, step_inc, tries, outputs, next_at, last_error,
/// keep_lease, now]`) of the deliveries still in flight under the job's owner, answering their ids; then every
/// attempt, applied or not: an attempt is history either way. NULL keeps a column as it is; `step_inc`
/// moves to the next step. `+deliveries.status`: without it SQLite walks every in-flight delivery through
/// `deliveries_status` and reads the whole JSON array once for each (a claim holds up to 128 at once), instead
/// of the array once, finding each row by its id. The attempts' headers and bodies are cut out of a BLOB per
/// column, as an ingest's texts are ([`attempt_rows`]): bodies are bytes, kept as they are. An empty body is
/// `x''` by name: `substr` of a BLOB of no bytes (every body of the batch empty) is NULL.
const ATTEMPTS: &str = "
SELECT 3 AS kind, json_group_array(d.id) AS answer FROM json_each(?) j
    JOIN deliveries d ON d.id = j.value ->> 0 AND +d.status = 'in_flight' AND d.lease_owner = j.value ->> 1;
WITH j AS MATERIALIZED (SELECT key, jsonb(value) AS value FROM json_each(?))
UPDATE deliveries SET
    status = COALESCE(t.status, deliveries.status),
    step = COALESCE(t.step, deliveries.step + t.step_inc),
    tries = t.tries,
    outputs = COALESCE(t.outputs, deliveries.outputs),
    next_at = COALESCE(t.next_at, deliveries.next_at),
    last_error = t.last_error,
    attempts = deliveries.attempts + 1,
    lease_owner = CASE WHEN t.keep_lease THEN deliveries.lease_owner END,
    lease_until = CASE WHEN t.keep_lease THEN deliveries.lease_until END,
    updated_at = t.now
FROM (SELECT j.value ->> 0 AS id, j.value ->> 1 AS owner, j.value ->> 2 AS status, j.value ->> 3 AS step,
             j.value ->> 4 AS step_inc, j.value ->> 5 AS tries, j.value ->> 6 AS outputs, j.value ->> 7 AS next_at,
             j.value ->> 8 AS last_error, j.value ->> 9 AS keep_lease, j.value ->> 10 AS now
      FROM j) AS t
WHERE deliveries.id = t.id AND +deliveries.status = 'in_flight' AND deliveries.lease_owner = t.owner;
WITH j AS MATERIALIZED (SELECT key, jsonb(value) AS value FROM json_each(?))
INSERT INTO attempts (delivery_id, step, try_no, started_at, duration_ms, outcome, method, url,
                      request_headers, request_body, response_status, response_headers, response_body,
                      response_truncated, error)
    SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5,
           j.value ->> 6, j.value ->> 7,
           CAST(substr(?, j.value ->> 11, j.value ->> 12) AS TEXT),
           CASE WHEN j.value ->> 14 = 0 THEN x'' ELSE substr(?, j.value ->> 13, j.value ->> 14) END,
           j.value ->> 8,
           CAST(substr(?, j.value ->> 15, j.value ->> 16) AS TEXT),
           CASE WHEN j.value ->> 18 = 0 THEN x'' ELSE substr(?, j.value ->> 17, j.value ->> 18) END,
           j.value ->> 9, j.value ->> 10
    FROM j ORDER BY j.key;";

/// Per job, what `queue::record_attempt_in` would have answered, from the deliveries whose transition
/// [`ATTEMPTS`] applied.
fn attempt_answers(jobs: &[AttemptJob<'_>], applied: &HashSet<i64>) -> Vec<Recorded> {
    jobs.iter()
        .map(|j| {
            let id = j.attempt.delivery_id;
            if applied.contains(&id) {
                Recorded::Applied
            } else {
                // The lease ran out and another worker took the delivery: its result is the one that counts.
                // The attempt is history all the same (stored above).
                Recorded::TakenOver(format!("delivery {id} is no longer held by {}", j.owner))
            }
        })
        .collect()
}

/// The attempts' rows (`[delivery_id, step, try_no, started_at, duration_ms, outcome, method, url,
/// response_status, response_truncated, error, then where each of request_headers, request_body,
/// response_headers, response_body starts (1-based) in its column's BLOB and its length]`, the response's NULL
/// when there is none) and those four BLOBs, each one column of every attempt one after the other.
fn attempt_rows(jobs: &[AttemptJob<'_>]) -> (String, [Vec<u8>; 4]) {
    let headers = |h: &[(String, String)]| serde_json::to_vec(h).unwrap_or_else(|_| b"[]".to_vec());
    let mut rows = String::from("[");
    let mut texts: [Vec<u8>; 4] = Default::default();
    let cut = |column: &mut Vec<u8>, bytes: &[u8]| {
        let at = column.len() + 1;
        column.extend_from_slice(bytes);
        (Some(at), Some(bytes.len()))
    };
    for (i, job) in jobs.iter().enumerate() {
        let a = job.attempt;
        let response = a.response.as_ref();
        let [request_headers, request_body, response_headers, response_body] = &mut texts;
        let request_headers = cut(request_headers, &headers(&a.request_headers));
        let request_body = cut(request_body, &a.request_body);
        let (response_headers, response_body) = match response {
            Some(r) => (cut(response_headers, &headers(&r.headers)), cut(response_body, &r.body)),
            None => ((None, None), (None, None)),
        };
        if i > 0 {
            rows.push(',');
        }
        let mut row = JsonArray::new(&mut rows);
        row.push(&a.delivery_id).push(&a.step).push(&a.try_no).push(&ms(a.started_at)).push(&a.duration_ms);
        row.push(&a.outcome).push(&a.method).push(&a.url);
        row.push(&response.map(|r| r.status)).push(&response.is_some_and(|r| r.truncated)).push(&a.error);
        for (at, len) in [request_headers, request_body, response_headers, response_body] {
            row.push(&at).push(&len);
        }
        row.end();
    }
    rows.push(']');
    (rows, texts)
}

/// A JSON array written element by element, of values of any types (serde's tuples stop at 16).
pub(super) struct JsonArray<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> JsonArray<'a> {
    pub(super) fn new(out: &'a mut String) -> JsonArray<'a> {
        out.push('[');
        JsonArray { out, first: true }
    }

    pub(super) fn push(&mut self, value: &impl serde::Serialize) -> &mut Self {
        if !std::mem::take(&mut self.first) {
            self.out.push(',');
        }
        self.out.push_str(&serde_json::to_string(value).expect("a row's value serialises"));
        self
    }

    fn end(self) {
        self.out.push(']');
    }
}

fn transition_row(j: &AttemptJob<'_>) -> String {
    let t = TransitionRow::of(j.transition);
    let row = (
        j.attempt.delivery_id,
        j.owner,
        t.status,
        t.step,
        t.step_inc,
        t.tries,
        t.outputs,
        t.next_at,
        t.last_error,
        t.keep_lease,
        ms(j.now),
    );
    serde_json::to_string(&row).expect("a transition row serialises")
}

/// A transition as the columns it sets (`None`: left as it is).
struct TransitionRow<'a> {
    status: Option<&'static str>,
    step: Option<i64>,
    step_inc: i64,
    tries: i64,
    outputs: Option<String>,
    next_at: Option<i64>,
    last_error: Option<&'a str>,
    keep_lease: bool,
}

impl<'a> TransitionRow<'a> {
    fn of(t: &'a Transition) -> TransitionRow<'a> {
        let base = TransitionRow {
            status: None,
            step: None,
            step_inc: 0,
            tries: 0,
            outputs: None,
            next_at: None,
            last_error: None,
            keep_lease: false,
        };
        match t {
            Transition::Advance { step, outputs } => TransitionRow {
                step: Some(i64::from(*step)),
                outputs: Some(outputs.to_string()),
                keep_lease: true,
                ..base
            },
            Transition::Succeeded { outputs } => {
                TransitionRow { status: Some("succeeded"), step_inc: 1, outputs: Some(outputs.to_string()), ..base }
            }
            Transition::Retry { at, tries, error } => TransitionRow {
                status: Some("retrying"),
                tries: i64::from(*tries),
                next_at: Some(ms(*at)),
                last_error: Some(error),
                ..base
            },
            Transition::Dead { tries, error } => {
                TransitionRow { status: Some("dead"), tries: i64::from(*tries), last_error: Some(error), ..base }
            }
        }
    }
}

/// `name, …` for `json_array` over the result of `SELECT` of a column list ([`column_names`]), NULL for those
/// sent another way; blobs as hex (JSON has no bytes; `rows::JsonRow` reads them back).
fn json_array_args(names: &[&str], sent_apart: &[&str]) -> String {
    let arg = |name: &&str| match *name {
        name if sent_apart.contains(&name) => "NULL".to_owned(),
        "raw" => "CASE WHEN raw IS NOT NULL THEN hex(raw) END".to_owned(),
        name => name.to_owned(),
    };
    names.iter().map(arg).collect::<Vec<_>>().join(", ")
}

/// The columns of a claimed delivery's row, in [`claim_sql`]'s order.
pub(super) fn claimed_delivery_columns() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| column_names(DELIVERY_COLUMNS))
}

/// An event's columns that a claim sends in its chunk's texts, not in its row (where they are NULL), in the
/// order they follow one another there (`queue::claimed_events` reads them in this order).
pub(super) const CLAIMED_EVENT_TEXTS: [&str; 3] = ["headers", "query", "body"];

/// The columns of a claimed event's row, in [`claim_sql`]'s order, then `texts`: the lengths of its
/// [`CLAIMED_EVENT_TEXTS`].
pub(super) fn claimed_event_columns() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| column_names(EVENT_COLUMNS).into_iter().chain(["texts"]).collect())
}

/// How many bytes of claimed rows' large columns go into one answer row at most (a row alone may be larger).
/// SQLite refuses a text longer than `SQLITE_LIMIT_LENGTH` (10^9 bytes) with "string or blob too big": one
/// JSON array of every claimed event would pass that with ~100 events of 10 MiB, and the claim would fail
/// again on every try. In a row's JSON a byte becomes at most six (`\u0001`), a byte of `raw` two (hex), and the
/// texts go as they are, so a chunk's answer and its texts each stay under 100 MB.
const CLAIM_CHUNK_BYTES: i64 = 16 << 20;

/// The claim part: due deliveries into `temp.claimed` (pending or retrying whose time has come, or in flight
/// with an expired lease; with an ordering key, only the oldest open delivery of that key and flow, so a later
/// event never overtakes: the others are `held`, kept so by triggers, see `0006_held.sql`, and not in
/// `deliveries_queue` at all; none whose next step is one of those left out), claimed by the owner until the
/// lease's end, then read with their events: `kind` 0 rows the deliveries, `kind` 1 rows their events, each row
/// a JSON array of up to [`CLAIM_CHUNK_BYTES`] of them (one row for ordinary sizes), the deliveries' rows in id
/// order.
///
/// `INDEXED BY deliveries_queue`: walked in due order, the scan stops after `limit` due rows (rows of steps left
/// out are walked past, one by one: the worker spaces its claims while it leaves any out). Left to itself (no
/// ANALYZE statistics) SQLite took `deliveries_status` and sorted every open delivery on each claim, which made
/// a claim cost as much as the backlog was long. `temp.claimed` lives on the writer connection only, in memory
/// (`temp_store=memory`).
///
/// The events' chunks are numbered over their ids and lengths alone, then the rows joined back: the window
/// keeps every row it numbers, and kept whole that was each event's body copied once more. Their aggregates
/// have no `ORDER BY`: the events' order does not matter (the deliveries name theirs), and both aggregates take
/// each row in the same step, so the texts follow the rows whatever the order; an `ORDER BY`, `DISTINCT` or
/// `FILTER` on one of them alone would put them out of step (`ClaimedRows` then refuses the chunk). The two
/// copies an `ORDER BY` made per event: store bench −2.7% instructions, the narrow window −1.1% more.
fn claim_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS claimed (id INTEGER PRIMARY KEY);
             DELETE FROM temp.claimed;
             INSERT INTO temp.claimed (id)
                 SELECT d.id FROM deliveries d INDEXED BY deliveries_queue
                 WHERE d.status IN ('pending', 'retrying', 'in_flight') AND d.held = 0
                   AND ((d.status != 'in_flight' AND d.next_at <= ?) OR (d.status = 'in_flight' AND d.lease_until <= ?))
                   AND (d.flow, d.step) NOT IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))
                 ORDER BY d.next_at, d.id
                 LIMIT ?;
             UPDATE deliveries SET status = 'in_flight', lease_owner = ?, lease_until = ?, updated_at = ?
                 WHERE id IN (SELECT id FROM temp.claimed);
             SELECT 0 AS kind, json_group_array(json_array({delivery_row}) ORDER BY id) AS answer FROM (
                 SELECT {delivery_columns},
                        SUM(ifnull(octet_length(d.outputs), 0) + ifnull(octet_length(d.last_error), 0))
                            OVER (ORDER BY d.id) / {chunk} AS chunk
                 FROM deliveries d JOIN events e ON e.id = d.event_id
                 WHERE d.id IN (SELECT id FROM temp.claimed))
                 GROUP BY chunk ORDER BY chunk;
             SELECT 1 AS kind,
                    json_group_array(json_array({event_row}, json_array({text_lengths}))) AS answer,
                    group_concat({texts}, '') AS texts
                 FROM (SELECT id AS claimed_id,
                              SUM(ifnull(octet_length(body), 0) + 2 * ifnull(octet_length(raw), 0)
                                  + ifnull(octet_length(headers), 0) + ifnull(octet_length(query), 0))
                                  OVER (ORDER BY id) / {chunk} AS chunk
                       FROM events
                       WHERE id IN (SELECT event_id FROM deliveries WHERE id IN (SELECT id FROM temp.claimed))) c
                 JOIN events ON events.id = c.claimed_id
                 GROUP BY c.chunk ORDER BY c.chunk;",
            delivery_row = json_array_args(claimed_delivery_columns(), &[]),
            event_row = json_array_args(&column_names(EVENT_COLUMNS), &CLAIMED_EVENT_TEXTS),
            text_lengths = CLAIMED_EVENT_TEXTS.map(|c| format!("octet_length({c})")).join(", "),
            // `ifnull`: `group_concat` leaves out a NULL, and a NULL body would put every later text out of step.
            texts = CLAIMED_EVENT_TEXTS.map(|c| format!("ifnull({c}, '')")).join(" || "),
            delivery_columns = DELIVERY_COLUMNS,
            chunk = CLAIM_CHUNK_BYTES,
        )
    })
}

/// A claim in a batch.
pub(super) struct ClaimJob<'a> {
    pub owner: &'a str,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    pub limit: usize,
    /// The steps left out, as a JSON array of `[flow, step]` pairs.
    pub skip: &'a str,
}

/// What a batch stores and claims, all of it optional.
#[derive(Default)]
pub(super) struct Batch<'a> {
    pub ingests: &'a [IngestJob<'a>],
    pub attempts: &'a [AttemptJob<'a>],
    pub claim: Option<ClaimJob<'a>>,
}

/// What a batch answered: per ingest job, per attempt job, and the claimed rows.
#[derive(Default)]
pub(super) struct Answers {
    pub ingested: Vec<Vec<Ingested>>,
    pub recorded: Vec<Recorded>,
    pub claimed: ClaimedRows,
}

/// The SQL text of a batch with these parts; `whole`: with its `BEGIN IMMEDIATE` and `COMMIT`.
fn text(ingest: bool, attempts: bool, claim: bool, whole: bool) -> &'static str {
    static TEXTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        (0..16)
            .map(|bits| {
                let mut sql = String::new();
                let parts = [(8, "BEGIN IMMEDIATE;"), (1, INGEST), (2, ATTEMPTS), (4, claim_sql()), (8, "COMMIT;")];
                for (bit, part) in parts {
                    if bits & bit != 0 {
                        sql.push_str(part);
                        sql.push('\n');
                    }
                }
                sql
            })
            .collect()
    });
    &texts[usize::from(ingest) | usize::from(attempts) << 1 | usize::from(claim) << 2 | usize::from(whole) << 3]
}

impl Batch<'_> {
    /// Runs the batch as one SQL text, in one round trip. `whole`: the text begins and commits its own
    /// transaction (`conn` must have none open; on an error the caller rolls back whatever is left); otherwise it
    /// runs inside the caller's. `None` when two attempts are for one delivery: nothing was run, and the caller
    /// runs the jobs one by one.
    pub(super) async fn run<'c, E>(&self, conn: E, whole: bool) -> Result<Option<Answers>>
    where
        E: Executor<'c, Database = Sqlite>,
    {
        let ids: Vec<i64> = self.attempts.iter().map(|j| j.attempt.delivery_id).collect();
        if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
            return Ok(None);
        }
        let ingest = ingest_params(self.ingests);
        let has_attempts = !self.attempts.is_empty();
        let sql = text(ingest.is_some(), has_attempts, self.claim.is_some(), whole);
        if sql.is_empty() {
            return Ok(Some(Answers {
                ingested: self.ingests.iter().map(|_| Vec::new()).collect(),
                ..Answers::default()
            }));
        }
        let mut q = sqlx::query(sql);
        if let Some(p) = ingest {
            let [headers, query, body] = p.texts;
            q = q.bind(p.keys.clone()).bind(p.latest).bind(p.events).bind(headers).bind(query).bind(body);
            q = q.bind(p.deliveries).bind(p.keys);
        }
        if has_attempts {
            let transitions: Vec<String> = self.attempts.iter().map(transition_row).collect();
            let transitions = array(transitions.iter().map(String::as_str));
            let (rows, [request_headers, request_body, response_headers, response_body]) = attempt_rows(self.attempts);
            q = q.bind(transitions.clone()).bind(transitions).bind(rows);
            q = q.bind(request_headers).bind(request_body).bind(response_headers).bind(response_body);
        }
        if let Some(c) = &self.claim {
            q = q
                .bind(ms(c.now))
                .bind(ms(c.now))
                .bind(c.skip)
                .bind(c.limit as i64)
                .bind(c.owner)
                .bind(ms(c.lease_until))
                .bind(ms(c.now));
        }
        let rows: Vec<SqliteRow> = q.fetch_all(conn).await.map_err(db)?;
        // With `whole`, the batch is committed now: an answer that does not read must not send the caller back
        // to run the jobs again (they would be stored twice). Unavailable fails them all, as an unknown outcome:
        // a sender tries again (its dedupe key, if any, catches the repeat), a delivery runs again after its
        // lease, as after a crash.
        self.answers(rows).map_err(|e| match e {
            StoreError::Unavailable(_) => e,
            e if whole => StoreError::Unavailable(format!("a batch was committed but its answer does not read: {e}")),
            e => e,
        })
    }

    /// What the rows a batch's text returned say: one row per part, a JSON array each (rows one by one would
    /// each be a hand-off between threads).
    fn answers(&self, rows: Vec<SqliteRow>) -> Result<Option<Answers>> {
        let mut holders = Vec::new();
        let mut applied = HashSet::new();
        let mut claimed = ClaimedRows::default();
        for row in rows {
            let answer: String = row.try_get("answer").map_err(db)?;
            let bad = |e: serde_json::Error| StoreError::Other(format!("a batch's answer does not read: {e}").into());
            match row.try_get::<i64, _>("kind").map_err(db)? {
                0 => claimed.deliveries.push(answer),
                1 => claimed.events.push((answer, row.try_get("texts").map_err(db)?)),
                2 => holders = serde_json::from_str(&answer).map_err(bad)?,
                _ => applied = serde_json::from_str(&answer).map_err(bad)?,
            }
        }
        Ok(Some(Answers {
            ingested: ingest_answers(self.ingests, holders)?,
            recorded: attempt_answers(self.attempts, &applied),
            claimed,
        }))
    }
}

/// Stores the events of every job inside the caller's transaction; per job, what `queue::ingest_in` would
/// have answered.
pub(super) async fn ingest(tx: &mut Transaction<'_, Sqlite>, jobs: &[IngestJob<'_>]) -> Result<Vec<Vec<Ingested>>> {
    let batch = Batch { ingests: jobs, ..Batch::default() };
    Ok(batch.run(&mut **tx, false).await?.map(|a| a.ingested).unwrap_or_default())
}

/// Records every attempt and applies the transitions of those whose worker still holds the lease, inside the
/// caller's transaction; per job, what `queue::record_attempt_in` would have answered. `None` when two attempts
/// are for one delivery (the caller then runs them one by one).
pub(super) async fn attempts(
    tx: &mut Transaction<'_, Sqlite>,
    jobs: &[AttemptJob<'_>],
) -> Result<Option<Vec<Recorded>>> {
    let batch = Batch { attempts: jobs, ..Batch::default() };
    Ok(batch.run(&mut **tx, false).await?.map(|a| a.recorded))
}

/// Claims up to `limit` due deliveries inside the caller's transaction (see `group.rs`: a claim shares the
/// commit of the ingests and attempt records around it). Returns the rows as read: the caller decodes them
/// ([`ClaimedRows::decode`]) on its own task, not on the writer's thread, where every microsecond is one the
/// next commit waits for.
pub(super) async fn claim(tx: &mut Transaction<'_, Sqlite>, job: ClaimJob<'_>) -> Result<ClaimedRows> {
    let batch = Batch { claim: Some(job), ..Batch::default() };
    Ok(batch.run(&mut **tx, false).await?.map(|a| a.claimed).unwrap_or_default())
}
