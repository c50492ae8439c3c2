//! Writes: ingest, claim, attempts and transitions, retries, purge. All on the single writer connection.

use chrono::{DateTime, Utc};
use renkei_core::delivery::Status;
use sqlx::sqlite::SqliteRow;
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::rows::{delivery_from_row, event_from_row, DELIVERY_COLUMNS, EVENT_COLUMNS};
use super::{db, ms};
use crate::*;

/// An event to store, its JSON columns already written out: by the caller's task, so the writer's thread only
/// binds them.
pub(super) struct EventRow {
    event: NewEvent,
    pub headers: String,
    pub query: String,
    pub body: String,
}

impl EventRow {
    pub(super) fn new(mut event: NewEvent) -> EventRow {
        let take = |v: &mut serde_json::Value| std::mem::take(v).to_string();
        EventRow {
            headers: take(&mut event.headers),
            query: take(&mut event.query),
            body: take(&mut event.body),
            event,
        }
    }
}

impl std::ops::Deref for EventRow {
    type Target = NewEvent;
    fn deref(&self) -> &NewEvent {
        &self.event
    }
}

/// Stores one request's events and deliveries inside the caller's transaction (see `group.rs`).
pub(super) async fn ingest_in(
    tx: &mut Transaction<'_, Sqlite>,
    events: &[EventRow],
    now: DateTime<Utc>,
) -> Result<Vec<Ingested>> {
    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        if let Some(d) = &ev.dedupe {
            // Claim the key unless a live one exists; an expired one is taken over.
            let won: Option<String> = sqlx::query_scalar(
                "INSERT INTO dedupe (source, key, event_id, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (source, key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at
                 WHERE dedupe.expires_at <= ?5
                 RETURNING event_id",
            )
            .bind(&ev.source)
            .bind(&d.key)
            .bind(&ev.id)
            .bind(ms(d.expires_at))
            .bind(ms(now))
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?;
            if won.is_none() {
                let first: String = sqlx::query_scalar("SELECT event_id FROM dedupe WHERE source = ?1 AND key = ?2")
                    .bind(&ev.source)
                    .bind(&d.key)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(db)?;
                out.push(Ingested::Duplicate { event_id: first });
                continue;
            }
        }
        sqlx::query(
            "INSERT INTO events (id, source, event_type, status, http_status, received_at, request_id, row_no,
                                 content_type, headers, query, body, dedupe_key)
             VALUES (?1, ?2, ?3, 'accepted', 202, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
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
        .bind(ev.dedupe.as_ref().map(|d| d.key.as_str()))
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        insert_deliveries(tx, &ev.id, &ev.deliveries, now).await?;
        out.push(Ingested::Stored { event_id: ev.id.clone(), deliveries: ev.deliveries.len() });
    }
    Ok(out)
}

async fn insert_deliveries(
    tx: &mut Transaction<'_, Sqlite>,
    event_id: &str,
    deliveries: &[NewDelivery],
    now: DateTime<Utc>,
) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO deliveries (event_id, flow, status, order_key, next_at, last_error, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?5) RETURNING id",
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
    .bind(r.headers.to_string())
    .bind(r.query.to_string())
    .bind(&r.raw)
    .bind(r.raw_truncated)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

/// Claims up to `limit` due deliveries inside the caller's transaction (see `group.rs`: a claim shares the
/// commit of the ingests and attempt records around it). Returns the rows as read: the caller decodes them
/// ([`ClaimedRows::decode`]) on its own task, not on the writer's thread, where every microsecond is one the
/// next commit waits for.
pub(super) async fn claim_in(
    tx: &mut Transaction<'_, Sqlite>,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: usize,
) -> Result<ClaimedRows> {
    // Due: pending or retrying whose time has come, or in flight with an expired lease. With an ordering key,
    // only the oldest open delivery of that key and flow is eligible, so a later event never overtakes.
    // `INDEXED BY deliveries_queue`: walked in due order, the scan stops after `limit` due rows. Left to
    // itself (no ANALYZE statistics) SQLite took `deliveries_status` and sorted every open delivery on each
    // claim, which made a claim cost as much as the backlog was long.
    let ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE deliveries SET status = 'in_flight', lease_owner = ?1, lease_until = ?2, updated_at = ?3
         WHERE id IN (
             SELECT d.id FROM deliveries d INDEXED BY deliveries_queue
             WHERE d.status IN ('pending', 'retrying', 'in_flight')
               AND ((d.status != 'in_flight' AND d.next_at <= ?3) OR (d.status = 'in_flight' AND d.lease_until <= ?3))
               AND (d.order_key IS NULL OR NOT EXISTS (
                   SELECT 1 FROM deliveries p
                   WHERE p.flow = d.flow AND p.order_key = d.order_key AND p.id < d.id
                     AND p.status IN ('pending', 'retrying', 'in_flight')))
             ORDER BY d.next_at, d.id
             LIMIT ?4)
         RETURNING id",
    )
    .bind(owner)
    .bind(ms(lease_until))
    .bind(ms(now))
    .bind(limit as i64)
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    if ids.is_empty() {
        return Ok(ClaimedRows::default());
    }
    // The ids as one JSON parameter: the statements' text is the same for every claim (sqlx caches them).
    let list = serde_json::to_string(&ids).expect("ids serialise");
    let drows = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.id IN (SELECT value FROM json_each(?1)) ORDER BY d.id"
    ))
    .bind(&list)
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    let erows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE id IN (SELECT event_id FROM deliveries WHERE id IN (SELECT value FROM json_each(?1)))"
    ))
    .bind(&list)
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    Ok(ClaimedRows { deliveries: drows, events: erows })
}

/// Claimed deliveries and their events, as rows.
#[derive(Default)]
pub(super) struct ClaimedRows {
    deliveries: Vec<SqliteRow>,
    events: Vec<SqliteRow>,
}

impl ClaimedRows {
    pub(super) fn decode(self) -> Result<Vec<Claimed>> {
        let mut events: std::collections::HashMap<String, EventRecord> =
            self.events.iter().map(event_from_row).map(|e| e.map(|e| (e.id.clone(), e))).collect::<Result<_>>()?;
        let deliveries = self.deliveries.iter().map(delivery_from_row).collect::<Result<Vec<_>>>()?;
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

/// Records an attempt and its transition inside the caller's transaction (see `group.rs`).
pub(super) async fn record_attempt_in(
    tx: &mut Transaction<'_, Sqlite>,
    owner: &str,
    a: &NewAttempt,
    t: &Transition,
    now: DateTime<Utc>,
) -> Result<Recorded> {
    let holder: Option<Option<String>> =
        sqlx::query_scalar("SELECT lease_owner FROM deliveries WHERE id = ?1 AND status = 'in_flight'")
            .bind(a.delivery_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?;
    if holder.flatten().as_deref() != Some(owner) {
        // The lease ran out and another worker took the delivery: its result is the one that counts. The
        // attempt is still history, so keep it.
        insert_attempt(tx, a).await?;
        return Ok(Recorded::TakenOver(format!("delivery {} is no longer held by {owner}", a.delivery_id)));
    }
    insert_attempt(tx, a).await?;
    let q = match t {
        Transition::Advance { step, outputs } => sqlx::query(
            "UPDATE deliveries SET step = ?2, tries = 0, outputs = ?3, attempts = attempts + 1, updated_at = ?4, last_error = NULL WHERE id = ?1",
        )
        .bind(a.delivery_id)
        .bind(i64::from(*step))
        .bind(outputs.to_string())
        .bind(ms(now)),
        Transition::Succeeded { outputs } => sqlx::query(
            "UPDATE deliveries SET status = 'succeeded', step = step + 1, tries = 0, outputs = ?2, attempts = attempts + 1,
                 lease_owner = NULL, lease_until = NULL, last_error = NULL, updated_at = ?3 WHERE id = ?1",
        )
        .bind(a.delivery_id)
        .bind(outputs.to_string())
        .bind(ms(now)),
        Transition::Retry { at, tries, error } => sqlx::query(
            "UPDATE deliveries SET status = 'retrying', tries = ?2, next_at = ?3, last_error = ?4, attempts = attempts + 1,
                 lease_owner = NULL, lease_until = NULL, updated_at = ?5 WHERE id = ?1",
        )
        .bind(a.delivery_id)
        .bind(i64::from(*tries))
        .bind(ms(*at))
        .bind(error)
        .bind(ms(now)),
        Transition::Dead { tries, error } => sqlx::query(
            "UPDATE deliveries SET status = 'dead', tries = ?2, last_error = ?3, attempts = attempts + 1,
                 lease_owner = NULL, lease_until = NULL, updated_at = ?4 WHERE id = ?1",
        )
        .bind(a.delivery_id)
        .bind(i64::from(*tries))
        .bind(error)
        .bind(ms(now)),
    };
    q.execute(&mut **tx).await.map_err(db)?;
    Ok(Recorded::Applied)
}

async fn insert_attempt(tx: &mut Transaction<'_, Sqlite>, a: &NewAttempt) -> Result<()> {
    let headers = |h: &[(String, String)]| serde_json::to_string(h).unwrap_or_else(|_| "[]".into());
    sqlx::query(
        "INSERT INTO attempts (delivery_id, step, try_no, started_at, duration_ms, outcome, method, url, request_headers,
                               request_body, response_status, response_headers, response_body, response_truncated, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )
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
    .bind(&a.error)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

pub(super) async fn release(pool: &SqlitePool, owner: &str, now: DateTime<Utc>) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE deliveries SET status = CASE WHEN tries > 0 THEN 'retrying' ELSE 'pending' END,
             lease_owner = NULL, lease_until = NULL, next_at = MIN(next_at, ?2), updated_at = ?2
         WHERE status = 'in_flight' AND lease_owner = ?1",
    )
    .bind(owner)
    .bind(ms(now))
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
                     WHERE status IN ('pending', 'retrying', 'in_flight') AND status != 'in_flight'
                     ORDER BY next_at LIMIT 1) AS at
             UNION ALL
             SELECT (SELECT MIN(lease_until) FROM deliveries WHERE status = 'in_flight'))",
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
