//! Writes: ingest, claim, attempts and transitions, retries, purge. All on the single writer connection.

use chrono::{DateTime, Utc};
use renkei_core::delivery::Status;
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::rows::{delivery_from_row, event_from_row, JsonRow};
use super::{batch, db, ms};
use crate::*;

/// An event to store with its JSON columns written out as text, by the caller's task, so the writer only
/// binds them.
pub(super) struct EventRow {
    event: NewEvent,
    /// The three JSON columns as text: headers, query, body.
    pub texts: [String; 3],
}

impl EventRow {
    pub(super) fn new(mut event: NewEvent) -> EventRow {
        // Into bytes, not through `Display`, which writes every token through a formatter (twice the cost).
        let text = |v: &mut serde_json::Value| json_text(&std::mem::take(v));
        let body = match event.body_text.take() {
            Some(as_sent) => {
                debug_assert_eq!(
                    serde_json::from_str::<serde_json::Value>(&as_sent).ok().as_ref(),
                    Some(&event.body),
                    "an event's body_text is its body as text"
                );
                as_sent
            }
            None => text(&mut event.body),
        };
        let texts = [text(&mut event.headers), text(&mut event.query), body];
        EventRow { event, texts }
    }
}

/// A JSON value as compact text, as `to_string` writes it.
pub(super) fn json_text(v: &serde_json::Value) -> String {
    serde_json::to_string(v).expect("a JSON value with string keys always serialises")
}

impl std::ops::Deref for EventRow {
    type Target = NewEvent;
    fn deref(&self) -> &NewEvent {
        &self.event
    }
}

/// Stores one request's events and deliveries inside the caller's transaction (see `group.rs`): a batch of
/// one job.
pub(super) async fn ingest_in(
    tx: &mut Transaction<'_, Sqlite>,
    events: &[EventRow],
    now: DateTime<Utc>,
) -> Result<Vec<Ingested>> {
    let mut answers = batch::ingest(tx, &[batch::IngestJob { events, now }]).await?;
    Ok(answers.pop().unwrap_or_default())
}

/// Inserts one event's deliveries (a replay's); their ids in order.
async fn insert_deliveries(
    tx: &mut Transaction<'_, Sqlite>,
    event_id: &str,
    deliveries: &[NewDelivery],
    now: DateTime<Utc>,
) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO deliveries (event_id, flow, status, order_key, next_at, last_error, created_at, updated_at,
                                     held)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?5,
                     ?4 IS NOT NULL AND ?3 IN ('pending', 'retrying', 'in_flight')
                     AND EXISTS (SELECT 1 FROM deliveries p
                                 WHERE p.flow = ?2 AND p.order_key = ?4
                                   AND p.status IN ('pending', 'retrying', 'in_flight')))
             RETURNING id",
        )
        .bind(event_id)
        .bind(&d.flow)
        .bind(d.status.as_str())
        .bind(&d.order_key)
        .bind(ms(now))
        .bind(&d.error)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?;
        ids.push(id);
    }
    Ok(ids)
}

pub(super) async fn record_rejected(pool: &SqlitePool, r: Rejected) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (id, source, event_type, status, reason, http_status, received_at, request_id,
                             content_type, headers, query, raw, raw_truncated)
         VALUES (?1, ?2, '', 'rejected', ?3, ?4, ?5, ?1, ?6, ?7, ?8, ?9, ?10)",
    )
    .bind(&r.id)
    .bind(&r.source)
    .bind(&r.reason)
    .bind(i64::from(r.http_status))
    .bind(ms(r.received_at))
    .bind(&r.content_type)
    .bind(json_text(&r.headers))
    .bind(r.query.to_string())
    .bind(&r.raw)
    .bind(r.raw_truncated)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

/// Claimed deliveries and their events, as read: JSON arrays of rows, each row an array of its columns
/// (`batch::claimed_delivery_columns`, `batch::claimed_event_columns`), several arrays when the rows are large
/// (`batch::CLAIM_CHUNK_BYTES`; the deliveries' in id order). An event's headers, query and body are not in its
/// row but in the chunk's texts, one after the other in the order of the rows, each row giving their lengths in
/// bytes (`texts`, `null` for a NULL body): a ~1 KB body inside the row was escaped into a JSON string by SQLite,
/// unescaped by serde, copied, and only then parsed; now it is only parsed.
#[derive(Default)]
pub(super) struct ClaimedRows {
    pub deliveries: Vec<String>,
    /// Per chunk, its rows and its texts.
    pub events: Vec<(String, String)>,
}

fn unreadable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("claimed rows do not read: {e}").into())
}

/// The claimed events of one chunk, their headers, query and body taken from its texts, in the order of
/// `batch::CLAIMED_EVENT_TEXTS`. Texts out of step with the rows (a length past the end or through a character,
/// texts left over) fail the claim rather than give an event another's body.
fn claimed_events(rows: &str, texts: &str) -> Result<Vec<EventRecord>> {
    let rows: Vec<Vec<serde_json::Value>> = serde_json::from_str(rows).map_err(unreadable)?;
    let out_of_step = || unreadable("an event's texts are out of step with its row");
    let mut at = 0;
    let mut take = |len: Option<usize>| -> Result<Option<serde_json::Value>> {
        let Some(len) = len else { return Ok(None) };
        let text = texts.get(at..at + len).ok_or_else(out_of_step)?;
        at += len;
        // Not JSON (stored so by hand, say): null, as `rows::event_from_row` reads it, not a claim that fails.
        Ok(Some(serde_json::from_str(text).unwrap_or(serde_json::Value::Null)))
    };
    let mut events = Vec::with_capacity(rows.len());
    for values in rows {
        let row = JsonRow::new(batch::claimed_event_columns(), values)?;
        let [headers, query, body]: [Option<usize>; 3] =
            serde::Deserialize::deserialize(row.get("texts")?).map_err(unreadable)?;
        let mut event = event_from_row(&row)?;
        event.headers = take(headers)?.unwrap_or_default();
        event.query = take(query)?.unwrap_or_default();
        event.body = take(body)?;
        events.push(event);
    }
    if at != texts.len() {
        return Err(out_of_step());
    }
    Ok(events)
}

impl ClaimedRows {
    pub(super) fn decode(self) -> Result<Vec<Claimed>> {
        let mut events = std::collections::HashMap::new();
        for (rows, texts) in &self.events {
            for event in claimed_events(rows, texts)? {
                events.insert(event.id.clone(), event);
            }
        }
        let mut deliveries = Vec::new();
        for chunk in &self.deliveries {
            let rows: Vec<Vec<serde_json::Value>> = serde_json::from_str(chunk).map_err(unreadable)?;
            for values in rows {
                deliveries.push(delivery_from_row(&JsonRow::new(batch::claimed_delivery_columns(), values)?)?);
            }
        }
        // An event's last delivery takes it; the others get a copy (usually there is one delivery per event).
        let mut left: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for d in &deliveries {
            *left.entry(d.event_id.clone()).or_default() += 1;
        }
        deliveries
            .into_iter()
            .map(|delivery| {
                let n = left.get_mut(&delivery.event_id).ok_or(StoreError::NotFound)?;
                *n -= 1;
                let event =
                    if *n == 0 { events.remove(&delivery.event_id) } else { events.get(&delivery.event_id).cloned() };
                Ok(Claimed { event: event.ok_or(StoreError::NotFound)?, delivery })
            })
            .collect()
    }
}

/// Whether an attempt's transition was applied, or the delivery had been taken over (the attempt is kept).
pub(super) enum Recorded {
    Applied,
    TakenOver(String),
}

/// Records an attempt and its transition inside the caller's transaction (see `group.rs`): a batch of one.
pub(super) async fn record_attempt_in(
    tx: &mut Transaction<'_, Sqlite>,
    owner: &str,
    attempt: &NewAttempt,
    transition: &Transition,
    now: DateTime<Utc>,
) -> Result<Recorded> {
    let job = batch::AttemptJob { owner, attempt, transition, now };
    let recorded = batch::attempts(tx, &[job]).await?;
    // `None` is for two attempts of one delivery in a batch, which one attempt cannot be.
    recorded.and_then(|mut r| r.pop()).ok_or_else(|| StoreError::Other("an attempt recorded no answer".into()))
}

/// Gives back what `owner` holds: every delivery, or only `ids`.
pub(super) async fn release(pool: &SqlitePool, owner: &str, ids: Option<&[i64]>, now: DateTime<Utc>) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE deliveries SET status = CASE WHEN tries > 0 THEN 'retrying' ELSE 'pending' END,
             lease_owner = NULL, lease_until = NULL, next_at = MIN(next_at, ?2), updated_at = ?2
         WHERE status = 'in_flight' AND lease_owner = ?1
           AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3)))",
    )
    .bind(owner)
    .bind(ms(now))
    .bind(ids.map(|ids| serde_json::to_string(ids).expect("ids serialise")))
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(r.rows_affected())
}

pub(super) async fn renew_leases(pool: &SqlitePool, owner: &str, ids: &[i64], until: DateTime<Utc>) -> Result<u64> {
    let ids = serde_json::to_string(ids).expect("ids serialise");
    let r = sqlx::query(
        "UPDATE deliveries SET lease_until = ?3
         WHERE status = 'in_flight' AND lease_owner = ?1 AND id IN (SELECT value FROM json_each(?2))",
    )
    .bind(owner)
    .bind(ids)
    .bind(ms(until))
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(r.rows_affected())
}

pub(super) async fn next_due(pool: &SqlitePool) -> Result<Option<DateTime<Utc>>> {
    // The earliest waiting delivery (first in `deliveries_queue` that is not in flight) and the earliest lease
    // to run out (among the few in flight): two short index walks, not a pass over every open delivery.
    let at: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(at) FROM (
             SELECT (SELECT next_at FROM deliveries INDEXED BY deliveries_queue
                     WHERE status IN ('pending', 'retrying', 'in_flight') AND held = 0 AND status != 'in_flight'
                     ORDER BY next_at LIMIT 1) AS at
             UNION ALL
             SELECT (SELECT MIN(lease_until) FROM deliveries WHERE status = 'in_flight' AND held = 0))",
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    Ok(at.map(super::from_ms))
}

pub(super) async fn retry_delivery(pool: &SqlitePool, id: i64, now: DateTime<Utc>) -> Result<()> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM deliveries WHERE id = ?1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    let status = status.ok_or(StoreError::NotFound)?;
    if !matches!(Status::parse(&status), Some(Status::Dead | Status::Retrying)) {
        return Err(StoreError::Conflict(format!(
            "delivery {id} is {status}; only dead or retrying deliveries can be retried"
        )));
    }
    sqlx::query(
        "UPDATE deliveries SET status = 'pending', tries = 0, next_at = ?2, updated_at = ?2
         WHERE id = ?1 AND status IN ('dead', 'retrying')",
    )
    .bind(id)
    .bind(ms(now))
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub(super) async fn retry_dead(pool: &SqlitePool, f: &DeliveryFilter, now: DateTime<Utc>) -> Result<u64> {
    let mut f = f.clone();
    f.status = Some(Status::Dead);
    let (clause, binds) = super::history::delivery_where(&f);
    let sql = format!(
        "UPDATE deliveries SET status = 'pending', tries = 0, next_at = ?, updated_at = ?
         WHERE id IN (SELECT d.id FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {clause})"
    );
    let mut q = sqlx::query(&sql).bind(ms(now)).bind(ms(now));
    for b in binds {
        q = b.bind_to(q);
    }
    Ok(q.execute(pool).await.map_err(db)?.rows_affected())
}

pub(super) async fn add_deliveries(
    pool: &SqlitePool,
    event_id: &str,
    deliveries: &[NewDelivery],
    now: DateTime<Utc>,
) -> Result<Vec<i64>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM events WHERE id = ?1")
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    match status.as_deref() {
        None => return Err(StoreError::NotFound),
        Some("accepted") => {}
        Some(_) => {
            return Err(StoreError::Conflict(format!("event {event_id} was rejected; it has no parsed body to replay")))
        }
    }
    let ids = insert_deliveries(&mut tx, event_id, deliveries, now).await?;
    tx.commit().await.map_err(db)?;
    Ok(ids)
}

pub(super) async fn purge(pool: &SqlitePool, before: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
    // Attempts and deliveries go with their event (ON DELETE CASCADE).
    let r = sqlx::query(
        "DELETE FROM events WHERE received_at < ?1 AND NOT EXISTS (
             SELECT 1 FROM deliveries d WHERE d.event_id = events.id AND d.status IN ('pending', 'retrying', 'in_flight'))",
    )
    .bind(ms(before))
    .execute(pool)
    .await
    .map_err(db)?;
    sqlx::query("DELETE FROM dedupe WHERE expires_at <= ?1").bind(ms(now)).execute(pool).await.map_err(db)?;
    // Loop-guard marks (`echo:` state) older than the history kept are of no use to anyone.
    sqlx::query("DELETE FROM kv_state WHERE key LIKE 'echo:%' AND updated_at < ?1")
        .bind(ms(before))
        .execute(pool)
        .await
        .map_err(db)?;
    // Give freed pages back in bounded steps (8 MB each), so other writes interleave with a large purge.
    for _ in 0..10_000 {
        sqlx::query("PRAGMA incremental_vacuum(2000)").execute(pool).await.map_err(db)?;
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count").fetch_one(pool).await.map_err(db)?;
        if free == 0 {
            break;
        }
    }
    Ok(r.rows_affected())
}
