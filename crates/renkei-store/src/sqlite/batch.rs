//! The group commit's statements (`group.rs`): a whole batch of ingests, attempt records and a claim, its
//! `BEGIN` and its `COMMIT` in one SQL text, so one round trip to SQLite whatever the batch's size.
//!
//! sqlx runs SQLite on a thread of its own and every statement sent there is a round trip: two thread
//! wake-ups, each of which, on a machine whose cores are busy serving HTTP, waits for a core (measured: 150-250
//! µs for a `BEGIN`, which does next to nothing). With one statement per table and chunk of rows, a batch of 30
//! ingests was some twenty round trips, and the writer spent more of a commit waiting for wake-ups than writing
//! (BENCHMARKS.md, "Fourth session").
//!
//! The text is written for the batch's rows ([`Sql`]): each table's rows are a `VALUES` list of plain `?`, every
//! value bound as itself, up to [`ROWS_PER_STATEMENT`] rows to a statement. The rows used to travel as one JSON
//! array per table, bound to one parameter and read with `json_each` and `->>`, so that every text was fixed;
//! but taking some 60 values per event out of JSON (about 1,400 instructions each) was more than a tenth of all
//! the hub did (BENCHMARKS.md, "Ninth session"). A text written for its rows would have to be prepared for its
//! batch, which for a batch of 32 events cost more than the JSON had (~3 M instructions), so a statement's rows
//! are padded to a power of two with rows of NULLs that it leaves out: the texts come in few shapes, each
//! prepared once and kept in sqlx's statement cache, and a padding row costs a few hundred instructions.
//!
//! Parameters are plain `?`, bound in the order they appear across a text's statements: sqlx numbers a text's
//! anonymous parameters on from one statement to the next. [`Sql`] writes a statement's text and binds its
//! values in the same step, so the two cannot drift apart. Rows that come back carry a `kind` column saying which
//! statement they are from.
//!
//! The events' headers, queries and bodies are written out as JSON text by the caller's task, not by the
//! writer's ([`EventRow::new`]): the writer only binds them.
//!
//! The meaning is that of running the jobs one after the other, each a batch of one (`queue::ingest_in`,
//! `queue::record_attempt_in`, what `group.rs` falls back to), with the claim last: a dedupe key taken by an
//! earlier event of the batch makes a later one a duplicate (SQLite inserts the rows of a `VALUES` list in
//! order and applies a multi-row upsert row by row, and the statements follow one another), an attempt's lease
//! is checked before any transition of the batch (no two attempts of one delivery share a batch: such a batch
//! goes the slow way), and the claim sees what the batch stored and freed.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, Executor, Row, Sqlite, Transaction};

use super::queue::{ClaimedRows, EventRow, Recorded};
use super::rows::{column_names, DELIVERY_COLUMNS, EVENT_COLUMNS};
use super::{db, ms};
use crate::*;

/// At most this many rows in one statement's `VALUES`: a text's parameters stay far below SQLite's limit
/// whatever the batch (an upload of 10,000 CSV rows is one job), and a statement's plan stays small.
pub(super) const ROWS_PER_STATEMENT: usize = 256;

/// A text whose statements have at most this many rows each is kept prepared in the writer's statement cache;
/// a wider one, of a large batch, is prepared for its batch and dropped. A text of statements of 256 rows holds
/// some 0.5 MB of plan: kept, the few dozen shapes of large batches that a burst sends (`renkei-bench e2e`) held
/// the hub's peak RSS 30 MB higher. Prepared each time, they cost about what reading their rows out of JSON did.
const PREPARED_ROWS: usize = 32;

/// A batch's SQL text, written for its rows, and its parameters in the order the text takes them.
struct Sql<'a> {
    text: String,
    args: SqliteArguments<'a>,
    /// The most rows, padding included, of any of its statements.
    widest: usize,
}

impl<'a> Sql<'a> {
    fn new() -> Sql<'a> {
        Sql { text: String::with_capacity(4096), args: SqliteArguments::default(), widest: 0 }
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: sqlx::Encode<'a, Sqlite> + sqlx::Type<Sqlite> + 'a,
    {
        // Encoding a string, a number, bytes or a NULL into SQLite's arguments cannot fail.
        self.args.add(value).expect("a batch's value encodes");
        self
    }

    /// One statement per [`ROWS_PER_STATEMENT`] of `rows`: the head, `VALUES (?, …), …` with a parameter a
    /// column, the tail; `bind` binds a row's values, in its columns' order, then `after` what the tail takes.
    fn statements<R>(
        &mut self,
        rows: &[R],
        &Values { head, tail, columns }: &Values,
        mut bind: impl FnMut(&mut Self, &R),
        mut after: impl FnMut(&mut Self),
    ) {
        let row = format!("({})", vec!["?"; columns].join(", "));
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            self.push(head).push("VALUES ");
            // Padded to a power of two (ROWS_PER_STATEMENT is one) with rows of NULLs, which the statements
            // leave out, so the batches' texts come in few shapes.
            let padded = chunk.len().next_power_of_two();
            self.widest = self.widest.max(padded);
            for i in 0..padded {
                if i > 0 {
                    self.push(", ");
                }
                self.push(&row);
                let bound = self.args.len();
                match chunk.get(i) {
                    Some(r) => bind(self, r),
                    None => (0..columns).for_each(|_| {
                        self.bind(None::<i64>);
                    }),
                }
                debug_assert_eq!(self.args.len() - bound, columns, "a row of `{head}` binds one value a column");
            }
            self.push(tail);
            after(self);
        }
    }
}

/// A statement around a `VALUES` list: its head, `WITH v (a, b, …) AS (`, which names the columns, and its tail.
struct Values {
    head: &'static str,
    tail: &'static str,
    /// How many columns the head names.
    columns: usize,
}

impl Values {
    const fn new(head: &'static str, tail: &'static str) -> Values {
        // The names between the head's first `(` and the next `)`, counted at compile time.
        let bytes = head.as_bytes();
        let (mut i, mut columns, mut open) = (0, 1, false);
        while i < bytes.len() {
            match bytes[i] {
                b'(' if !open => open = true,
                b')' if open => return Values { head, tail, columns },
                b',' if open => columns += 1,
                _ => {}
            }
            i += 1;
        }
        panic!("a VALUES statement's head names its columns: `WITH v (a, b, …) AS (`")
    }
}

/// One ingest job's events and its `now`.
pub(super) struct IngestJob<'a> {
    pub events: &'a [EventRow],
    pub now: DateTime<Utc>,
}

/// Written once before an ingest's statements. Which events took their key is what temp triggers on `dedupe`
/// write down in `temp.took` (the upsert takes the key row by row): the key's holder after the statement is not
/// enough, since with a window of 0 (or one shorter than the batch's spread of `now`s) a later event takes the
/// key over from an earlier one that took it too, and both are stored, as one after the other would be.
const INGEST_SETUP: &str = "
CREATE TEMP TABLE IF NOT EXISTS took (event_id TEXT PRIMARY KEY);
DELETE FROM temp.took;
CREATE TEMP TRIGGER IF NOT EXISTS took_key AFTER INSERT ON dedupe
    BEGIN INSERT OR IGNORE INTO took (event_id) VALUES (NEW.event_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS took_key_over AFTER UPDATE ON dedupe
    BEGIN INSERT OR IGNORE INTO took (event_id) VALUES (NEW.event_id); END;
";

/// The dedupe keys (rows `(source, key, event_id, expires_at)`; a key that expired before the newest `now` of
/// the batch is taken over, the jobs' `now`s differing by the milliseconds the batch took to gather).
const DEDUPE: Values = Values::new(
    "WITH v (source, key, event_id, expires_at) AS (",
    ")
INSERT INTO dedupe (source, key, event_id, expires_at)
    SELECT source, key, event_id, expires_at FROM v WHERE source IS NOT NULL
    ON CONFLICT (source, key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at
        WHERE dedupe.expires_at <= ?;
",
);

/// The events that took their key or have none.
const EVENTS: Values = Values::new(
    "WITH v (id, source, event_type, received_at, request_id, row_no, content_type, dedupe_key, headers, query,
       body) AS (",
    ")
INSERT INTO events (id, source, event_type, status, http_status, received_at, request_id, row_no,
                    content_type, headers, query, body, dedupe_key)
    SELECT id, source, event_type, 'accepted', 202, received_at, request_id, row_no, content_type, headers, query,
           body, dedupe_key
    FROM v
    WHERE id IS NOT NULL AND (dedupe_key IS NULL OR id IN (SELECT event_id FROM temp.took));
",
);

/// Their deliveries. A delivery is inserted `held` when it is open, keyed, and an open delivery of its key was
/// there before the statement; the `held` trigger settles the key all the same (and alone decides for two of one
/// key in one batch, which this does not see), but finds nothing to change instead of writing the new row a
/// second time: an ingest behind an open delivery of its key 31 → 19 µs (`renkei-bench blocked`).
const DELIVERIES: Values = Values::new(
    "WITH v (event_id, flow, status, order_key, last_error, now) AS (",
    ")
INSERT INTO deliveries (event_id, flow, status, order_key, next_at, last_error, created_at, updated_at, held)
    SELECT event_id, flow, status, order_key, now, last_error, now, now,
           order_key IS NOT NULL AND status IN ('pending', 'retrying', 'in_flight')
               AND EXISTS (SELECT 1 FROM deliveries p
                           WHERE p.flow = v.flow AND p.order_key = v.order_key
                             AND p.status IN ('pending', 'retrying', 'in_flight'))
    FROM v
    WHERE EXISTS (SELECT 1 FROM events e WHERE e.id = v.event_id);
",
);

/// Per keyed event in order, which event holds its key for it: the event itself when it took the key, the
/// holder when it is a duplicate.
const HOLDERS: Values = Values::new(
    "WITH k (n, source, key, event_id) AS (",
    ")
SELECT 2 AS kind, json_group_array(
           CASE WHEN k.event_id IN (SELECT event_id FROM temp.took) THEN k.event_id ELSE x.event_id END
           ORDER BY k.n) AS answer
    FROM k JOIN dedupe x ON x.source = k.source AND x.key = k.key;
",
);

/// Writes the ingest part; false when no job has an event.
fn write_ingest<'a>(sql: &mut Sql<'a>, jobs: &'a [IngestJob<'a>]) -> bool {
    let events: Vec<&'a EventRow> = jobs.iter().flat_map(|j| j.events.iter()).collect();
    if events.is_empty() {
        return false;
    }
    let latest = ms(jobs.iter().map(|j| j.now).max().unwrap_or_default());
    let keyed: Vec<(&'a EventRow, &'a Dedupe)> =
        events.iter().filter_map(|e| e.dedupe.as_ref().map(|d| (*e, d))).collect();
    sql.push(INGEST_SETUP);
    sql.statements(
        &keyed,
        &DEDUPE,
        |sql, (e, d)| {
            sql.bind(e.source.as_str()).bind(d.key.as_str()).bind(e.id.as_str()).bind(ms(d.expires_at));
        },
        |sql| {
            sql.bind(latest);
        },
    );
    sql.statements(
        &events,
        &EVENTS,
        |sql, e| {
            let [headers, query, body] = &e.texts;
            sql.bind(e.id.as_str()).bind(e.source.as_str()).bind(e.event_type.as_str()).bind(ms(e.received_at));
            sql.bind(e.request_id.as_str()).bind(e.row).bind(e.content_type.as_deref());
            sql.bind(e.dedupe.as_ref().map(|d| d.key.as_str()));
            sql.bind(headers.as_str()).bind(query.as_str()).bind(body.as_str());
        },
        |_| {},
    );
    let deliveries: Vec<(&'a EventRow, &'a NewDelivery, i64)> = jobs
        .iter()
        .flat_map(|j| j.events.iter().flat_map(move |e| e.deliveries.iter().map(move |d| (e, d, ms(j.now)))))
        .collect();
    sql.statements(
        &deliveries,
        &DELIVERIES,
        |sql, (e, d, now)| {
            sql.bind(e.id.as_str()).bind(d.flow.as_str()).bind(d.status.as_str()).bind(d.order_key.as_deref());
            sql.bind(d.error.as_deref()).bind(*now);
        },
        |_| {},
    );
    let numbered: Vec<(i64, &(&'a EventRow, &'a Dedupe))> = (0..).zip(&keyed).collect();
    sql.statements(
        &numbered,
        &HOLDERS,
        |sql, (n, (e, d))| {
            sql.bind(*n).bind(e.source.as_str()).bind(d.key.as_str()).bind(e.id.as_str());
        },
        |_| {},
    );
    true
}

/// Per job, what `queue::ingest_in` would have answered, from the key holders [`HOLDERS`] read.
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

/// The deliveries still in flight under the job's owner (rows `(id, owner)`), answering their ids.
/// `+d.status`: without it SQLite walks every in-flight delivery through `deliveries_status` (a claim holds up to
/// 128 at once) instead of finding each row by its id.
const HELD: Values = Values::new(
    "WITH v (id, owner) AS (",
    ")
SELECT 3 AS kind, json_group_array(d.id) AS answer
    FROM v JOIN deliveries d ON d.id = v.id AND +d.status = 'in_flight' AND d.lease_owner = v.owner;
",
);

/// Their transitions (rows as [`TransitionRow`]). NULL keeps a column as it is; `step_inc` moves to the next
/// step.
const TRANSITIONS: Values = Values::new(
    "WITH t (id, owner, status, step, step_inc, tries, outputs, next_at, last_error, keep_lease, now) AS (",
    ")
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
FROM t
WHERE deliveries.id = t.id AND +deliveries.status = 'in_flight' AND deliveries.lease_owner = t.owner;
",
);

/// Every attempt, applied or not: an attempt is history either way. Bodies are bytes, kept as they are (an empty
/// one a BLOB of no bytes); the response's columns NULL when there was none.
const ATTEMPTS: Values = Values::new(
    "WITH v (delivery_id, step, try_no, started_at, duration_ms, outcome, method, url, request_headers,
       request_body, response_status, response_headers, response_body, response_truncated, error) AS (",
    ")
INSERT INTO attempts (delivery_id, step, try_no, started_at, duration_ms, outcome, method, url,
                      request_headers, request_body, response_status, response_headers, response_body,
                      response_truncated, error)
    SELECT * FROM v WHERE delivery_id IS NOT NULL;
",
);

/// Writes the attempts part; false when there is none.
fn write_attempts<'a>(sql: &mut Sql<'a>, jobs: &'a [AttemptJob<'a>]) -> bool {
    if jobs.is_empty() {
        return false;
    }
    let delivery_and_owner = |sql: &mut Sql<'a>, j: &AttemptJob<'a>| {
        sql.bind(j.attempt.delivery_id).bind(j.owner);
    };
    sql.statements(jobs, &HELD, delivery_and_owner, |_| {});
    sql.statements(
        jobs,
        &TRANSITIONS,
        |sql, j| {
            let t = TransitionRow::of(j.transition);
            delivery_and_owner(sql, j);
            sql.bind(t.status).bind(t.step).bind(t.step_inc).bind(t.tries).bind(t.outputs).bind(t.next_at);
            sql.bind(t.last_error).bind(t.keep_lease).bind(ms(j.now));
        },
        |_| {},
    );
    let headers = |h: &[(String, String)]| serde_json::to_string(h).unwrap_or_else(|_| "[]".to_owned());
    sql.statements(
        jobs,
        &ATTEMPTS,
        |sql, j| {
            let a = j.attempt;
            let response = a.response.as_ref();
            sql.bind(a.delivery_id).bind(a.step).bind(a.try_no).bind(ms(a.started_at));
            sql.bind(i64::try_from(a.duration_ms).unwrap_or(i64::MAX)).bind(a.outcome).bind(a.method.as_str());
            sql.bind(a.url.as_str()).bind(headers(&a.request_headers)).bind(a.request_body.as_slice());
            sql.bind(response.map(|r| r.status)).bind(response.map(|r| headers(&r.headers)));
            sql.bind(response.map(|r| r.body.as_slice())).bind(response.is_some_and(|r| r.truncated));
            sql.bind(a.error.as_deref());
        },
        |_| {},
    );
    true
}

/// Per job, what `queue::record_attempt_in` would have answered, from the deliveries whose transition
/// [`TRANSITIONS`] applied.
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
        let mut sql = Sql::new();
        if whole {
            sql.push("BEGIN IMMEDIATE;\n");
        }
        let mut any = write_ingest(&mut sql, self.ingests);
        any |= write_attempts(&mut sql, self.attempts);
        if let Some(c) = &self.claim {
            any = true;
            sql.push(claim_sql());
            sql.bind(ms(c.now)).bind(ms(c.now)).bind(c.skip).bind(c.limit as i64);
            sql.bind(c.owner).bind(ms(c.lease_until)).bind(ms(c.now));
        }
        if !any {
            return Ok(Some(Answers {
                ingested: self.ingests.iter().map(|_| Vec::new()).collect(),
                ..Answers::default()
            }));
        }
        if whole {
            sql.push("\nCOMMIT;");
        }
        let persistent = sql.widest <= PREPARED_ROWS;
        let rows: Vec<SqliteRow> =
            sqlx::query_with(&sql.text, sql.args).persistent(persistent).fetch_all(conn).await.map_err(db)?;
        // With `whole`, the batch is committed now: an answer that does not read must not send the caller back
        // to run the jobs again (they would be stored twice). Unavailable fails them all, as an unknown outcome:
        // a sender tries again (its dedupe key, if any, catches the repeat), a delivery runs again after its
        // lease, as after a crash.
        let answers = self.answers(rows).map_err(|e| match e {
            StoreError::Unavailable(_) => e,
            e if whole => StoreError::Unavailable(format!("a batch was committed but its answer does not read: {e}")),
            e => e,
        })?;
        Ok(Some(answers))
    }

    /// What the rows a batch's text returned say: one row per statement that answers, a JSON array each (rows
    /// one by one would each be a hand-off between threads).
    fn answers(&self, rows: Vec<SqliteRow>) -> Result<Answers> {
        let mut holders: Vec<String> = Vec::new();
        let mut applied: HashSet<i64> = HashSet::new();
        let mut claimed = ClaimedRows::default();
        for row in rows {
            let answer: String = row.try_get("answer").map_err(db)?;
            let bad = |e: serde_json::Error| StoreError::Other(format!("a batch's answer does not read: {e}").into());
            match row.try_get::<i64, _>("kind").map_err(db)? {
                0 => claimed.deliveries.push(answer),
                1 => claimed.events.push((answer, row.try_get("texts").map_err(db)?)),
                2 => holders.extend(serde_json::from_str::<Vec<String>>(&answer).map_err(bad)?),
                _ => applied.extend(serde_json::from_str::<Vec<i64>>(&answer).map_err(bad)?),
            }
        }
        Ok(Answers {
            ingested: ingest_answers(self.ingests, holders)?,
            recorded: attempt_answers(self.attempts, &applied),
            claimed,
        })
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
