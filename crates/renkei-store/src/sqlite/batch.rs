//! Multi-row statements for the group commit (`group.rs`): a batch of ingests and attempt records in a
//! handful of statements instead of several per event.
//!
//! sqlx runs SQLite on a thread of its own and every statement is a round trip to it (two thread wake-ups).
//! Per event that was a dedupe upsert, an event insert, a delivery insert and a savepoint pair: the writer spent
//! its time waking threads, not writing. Here a batch costs a fixed number of statements: the dedupe keys in one
//! upsert, the events in one insert, the deliveries in one, the attempts in one, and every transition in one
//! `UPDATE … FROM`. Statements are cut into chunks of [`CHUNKS`] rows so there are only four shapes of each,
//! all of which stay in sqlx's statement cache.
//!
//! The meaning is that of running the jobs one after the other, each a batch of one (`queue::ingest_in`,
//! `queue::record_attempt_in`, what `group.rs` falls back to): a dedupe key taken by an earlier event of the batch
//! makes a later one a duplicate (SQLite applies a multi-row upsert row by row), and an attempt's lease is checked
//! before any transition of the batch (no two attempts of one delivery share a batch: such a batch goes the slow
//! way).

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use chrono::{DateTime, Utc};
use sqlx::{Sqlite, Transaction};

use super::queue::{EventRow, Recorded};
use super::{db, ms};
use crate::*;

/// Rows per multi-row statement, largest first. 64 rows of the widest statement (attempts, 15 values) are
/// 960 parameters, far below SQLite's 32,766.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// Cuts `0..n` into ranges whose lengths are all in [`CHUNKS`].
fn chunks(n: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    for size in CHUNKS {
        while n - at >= size {
            out.push(at..at + size);
            at += size;
        }
    }
    out
}

/// `head VALUES row, row, … tail` with `n` copies of `row`.
fn values(head: &str, row: &str, n: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + tail.len() + n * (row.len() + 2) + 8);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    sql.push(' ');
    sql.push_str(tail);
    sql
}

/// One ingest job's events and its `now`.
pub(super) struct IngestJob<'a> {
    pub events: &'a [EventRow],
    pub now: DateTime<Utc>,
}

/// Stores the events of every job; per job, what `queue::ingest_in` would have answered.
pub(super) async fn ingest(tx: &mut Transaction<'_, Sqlite>, jobs: &[IngestJob<'_>]) -> Result<Vec<Vec<Ingested>>> {
    let latest = jobs.iter().map(|j| j.now).max().unwrap_or_default();
    // Dedupe keys first: the events that lose are not stored.
    let keyed: Vec<&EventRow> = jobs.iter().flat_map(|j| j.events).filter(|e| e.dedupe.is_some()).collect();
    let mut won: HashSet<String> = HashSet::new();
    for range in chunks(keyed.len()) {
        let sql = values(
            "INSERT INTO dedupe (source, key, event_id, expires_at)",
            "(?, ?, ?, ?)",
            range.len(),
            // An expired key is taken over. `latest`: the newest `now` of the batch (they differ by the
            // milliseconds the batch took to gather).
            "ON CONFLICT (source, key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at
             WHERE dedupe.expires_at <= ? RETURNING event_id",
        );
        let mut q = sqlx::query_scalar::<_, String>(&sql);
        for ev in &keyed[range] {
            let d = ev.dedupe.as_ref().expect("keyed events have a key");
            q = q.bind(&ev.source).bind(&d.key).bind(&ev.id).bind(ms(d.expires_at));
        }
        won.extend(q.bind(ms(latest)).fetch_all(&mut **tx).await.map_err(db)?);
    }

    let mut out = Vec::with_capacity(jobs.len());
    let mut stored: Vec<(&EventRow, DateTime<Utc>)> = Vec::new();
    for job in jobs {
        let mut answers = Vec::with_capacity(job.events.len());
        for ev in job.events {
            match &ev.dedupe {
                Some(d) if !won.contains(&ev.id) => {
                    let first: String =
                        sqlx::query_scalar("SELECT event_id FROM dedupe WHERE source = ?1 AND key = ?2")
                            .bind(&ev.source)
                            .bind(&d.key)
                            .fetch_one(&mut **tx)
                            .await
                            .map_err(db)?;
                    answers.push(Ingested::Duplicate { event_id: first });
                }
                _ => {
                    answers.push(Ingested::Stored { event_id: ev.id.clone(), deliveries: ev.deliveries.len() });
                    stored.push((ev, job.now));
                }
            }
        }
        out.push(answers);
    }

    for range in chunks(stored.len()) {
        let sql = values(
            "INSERT INTO events (id, source, event_type, status, http_status, received_at, request_id, row_no,
                                 content_type, headers, query, body, dedupe_key)",
            "(?, ?, ?, 'accepted', 202, ?, ?, ?, ?, ?, ?, ?, ?)",
            range.len(),
            "",
        );
        let mut q = sqlx::query(&sql);
        for (ev, _) in &stored[range] {
            q = q
                .bind(&ev.id)
                .bind(&ev.source)
                .bind(&ev.event_type)
                .bind(ms(ev.received_at))
                .bind(&ev.request_id)
                .bind(ev.row.map(i64::from))
                .bind(&ev.content_type)
                .bind(&ev.headers)
                .bind(&ev.query)
                .bind(&ev.body)
                .bind(ev.dedupe.as_ref().map(|d| d.key.as_str()));
        }
        q.execute(&mut **tx).await.map_err(db)?;
    }

    let deliveries: Vec<(&str, &NewDelivery, i64)> =
        stored.iter().flat_map(|(ev, now)| ev.deliveries.iter().map(move |d| (ev.id.as_str(), d, ms(*now)))).collect();
    for range in chunks(deliveries.len()) {
        let sql = values(
            "INSERT INTO deliveries (event_id, flow, status, order_key, next_at, last_error, created_at, updated_at)",
            "(?, ?, ?, ?, ?, ?, ?, ?)",
            range.len(),
            "",
        );
        let mut q = sqlx::query(&sql);
        for (event_id, d, now) in &deliveries[range] {
            q = q
                .bind(*event_id)
                .bind(&d.flow)
                .bind(d.status.as_str())
                .bind(&d.order_key)
                .bind(*now)
                .bind(&d.error)
                .bind(*now)
                .bind(*now);
        }
        q.execute(&mut **tx).await.map_err(db)?;
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

/// Records every attempt and applies the transitions of those whose worker still holds the lease; per job,
/// what `queue::record_attempt_in` would have answered. `None` when two attempts are for one delivery (the
/// caller then runs them one by one).
pub(super) async fn attempts(
    tx: &mut Transaction<'_, Sqlite>,
    jobs: &[AttemptJob<'_>],
) -> Result<Option<Vec<Recorded>>> {
    let ids: Vec<i64> = jobs.iter().map(|j| j.attempt.delivery_id).collect();
    if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
        return Ok(None);
    }
    let holders: HashMap<i64, Option<String>> = if ids.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as(
            "SELECT id, lease_owner FROM deliveries
             WHERE status = 'in_flight' AND id IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::to_string(&ids).expect("ids serialise"))
        .fetch_all(&mut **tx)
        .await
        .map_err(db)?
        .into_iter()
        .collect()
    };

    for range in chunks(jobs.len()) {
        let sql = values(
            "INSERT INTO attempts (delivery_id, step, try_no, started_at, duration_ms, outcome, method, url,
                                   request_headers, request_body, response_status, response_headers, response_body,
                                   response_truncated, error)",
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            range.len(),
            "",
        );
        let headers = |h: &[(String, String)]| serde_json::to_string(h).unwrap_or_else(|_| "[]".into());
        let mut q = sqlx::query(&sql);
        for j in &jobs[range] {
            let a = j.attempt;
            q = q
                .bind(a.delivery_id)
                .bind(i64::from(a.step))
                .bind(i64::from(a.try_no))
                .bind(ms(a.started_at))
                .bind(a.duration_ms as i64)
                .bind(a.outcome)
                .bind(&a.method)
                .bind(&a.url)
                .bind(headers(&a.request_headers))
                .bind(&a.request_body)
                .bind(a.response.as_ref().map(|r| i64::from(r.status)))
                .bind(a.response.as_ref().map(|r| headers(&r.headers)))
                .bind(a.response.as_ref().map(|r| r.body.as_slice()))
                .bind(a.response.as_ref().is_some_and(|r| r.truncated))
                .bind(&a.error);
        }
        q.execute(&mut **tx).await.map_err(db)?;
    }

    let mut out = Vec::with_capacity(jobs.len());
    let mut applied = Vec::new();
    for j in jobs {
        let id = j.attempt.delivery_id;
        if holders.get(&id).and_then(|h| h.as_deref()) == Some(j.owner) {
            applied.push(j);
            out.push(Recorded::Applied);
        } else {
            // The lease ran out and another worker took the delivery: its result is the one that counts. The
            // attempt is history all the same (stored above).
            out.push(Recorded::TakenOver(format!("delivery {id} is no longer held by {}", j.owner)));
        }
    }
    for range in chunks(applied.len()) {
        // One row per transition: NULL keeps the column as it is; `step_inc` moves to the next step.
        let sql = values(
            "WITH t (id, status, step, step_inc, tries, outputs, next_at, last_error, keep_lease, now) AS (",
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            range.len(),
            ") UPDATE deliveries SET
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
             FROM t WHERE deliveries.id = t.id",
        );
        let mut q = sqlx::query(&sql);
        for j in &applied[range] {
            let row = TransitionRow::of(j.transition);
            q = q
                .bind(j.attempt.delivery_id)
                .bind(row.status)
                .bind(row.step)
                .bind(row.step_inc)
                .bind(row.tries)
                .bind(row.outputs)
                .bind(row.next_at)
                .bind(row.last_error)
                .bind(row.keep_lease)
                .bind(ms(j.now));
        }
        q.execute(&mut **tx).await.map_err(db)?;
    }
    Ok(Some(out))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_once_in_four_shapes() {
        for n in 0..300 {
            let c = chunks(n);
            assert_eq!(c.iter().map(|r| r.len()).sum::<usize>(), n);
            assert!(c.windows(2).all(|w| w[0].end == w[1].start));
            assert!(c.iter().all(|r| CHUNKS.contains(&r.len())));
        }
        assert_eq!(chunks(85).iter().map(|r| r.len()).collect::<Vec<_>>(), vec![64, 16, 4, 1]);
    }
}
