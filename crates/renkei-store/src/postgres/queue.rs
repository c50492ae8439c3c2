//! Writes: ingest, claim, attempts and transitions, retries, purge, config. Each is one transaction (or one
//! statement); the row and advisory locks that make it safe next to other nodes are named where they are taken
//! (the reasons are in the module doc of `postgres`).

use chrono::{DateTime, Utc};
use renkei_core::delivery::Status;
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::rows::{delivery_from_row, event_from_row, DELIVERY_COLUMNS, EVENT_COLUMNS};
use super::{db, is_retryable, ms, opt_text, text};
use crate::*;

/// How often an ingest is run again after losing a deadlock to another one.
const INGEST_TRIES: u32 = 3;
/// Events deleted per purge transaction, so a large purge does not hold its locks for long.
const PURGE_BATCH: i64 = 1000;

/// The deliveries that can still be sent: the queue.
const OPEN: &str = "('pending', 'retrying', 'in_flight')";

pub(super) async fn ingest(pool: &PgPool, events: Vec<NewEvent>, now: DateTime<Utc>) -> Result<Vec<Ingested>> {
    let mut tries = 1;
    loop {
        let mut tx = pool.begin().await.map_err(db)?;
        let result = match ingest_in(&mut tx, &events, now).await {
            Ok(out) => tx.commit().await.map(|()| out),
            Err(e) => Err(e),
        };
        match result {
            Err(e) if tries < INGEST_TRIES && (is_retryable(&e) || matches!(e, sqlx::Error::RowNotFound)) => {
                tracing::debug!(error = %e, tries, "ingest ran into another transaction; running it again");
                tries += 1;
            }
            r => return r.map_err(db),
        }
    }
}

/// The work of [`ingest`] inside `tx`. A dedupe key that vanishes between its two statements (purged as expired
/// by another node) gives `RowNotFound`, which [`ingest`] answers by running again.
pub(super) async fn ingest_in(
    tx: &mut Transaction<'_, Postgres>,
    events: &[NewEvent],
    now: DateTime<Utc>,
) -> Result<Vec<Ingested>, sqlx::Error> {
    lock_order_keys(tx, events.iter().flat_map(|e| &e.deliveries)).await?;
    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        if let Some(d) = &ev.dedupe {
            // Claim the key unless a live one exists; an expired one is taken over. A key another node is
            // inserting right now makes this wait for that transaction, then see its row.
            let won: Option<String> = sqlx::query_scalar(
                "INSERT INTO dedupe (source, key, event_id, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (source, key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at
                 WHERE dedupe.expires_at <= $5
                 RETURNING event_id",
            )
            .bind(&ev.source)
            .bind(text(&d.key))
            .bind(&ev.id)
            .bind(ms(d.expires_at))
            .bind(ms(now))
            .fetch_optional(&mut **tx)
            .await?;
            if won.is_none() {
                let first: String = sqlx::query_scalar("SELECT event_id FROM dedupe WHERE source = $1 AND key = $2")
                    .bind(&ev.source)
                    .bind(text(&d.key))
                    .fetch_one(&mut **tx)
                    .await?;
                out.push(Ingested::Duplicate { event_id: first });
                continue;
            }
        }
        sqlx::query(
            "INSERT INTO events (id, source, event_type, status, http_status, received_at, request_id, row_no,
                                 content_type, headers, query, body, dedupe_key)
             VALUES ($1, $2, $3, 'accepted', 202, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&ev.id)
        .bind(&ev.source)
        .bind(text(&ev.event_type))
        .bind(ms(ev.received_at))
        .bind(&ev.request_id)
        .bind(ev.row.map(i64::from))
        .bind(opt_text(&ev.content_type))
        .bind(ev.headers.to_string())
        .bind(ev.query.to_string())
        .bind(ev.body.to_string())
        .bind(ev.dedupe.as_ref().map(|d| text(&d.key)))
        .execute(&mut **tx)
        .await?;
        insert_deliveries(tx, &ev.id, &ev.deliveries, now).await?;
        out.push(Ingested::Stored { event_id: ev.id.clone(), deliveries: ev.deliveries.len() });
    }
    Ok(out)
}

/// The advisory lock of the ordering key hashed as `h`: the schema, then `hashtext(flow || chr(31) || key)`.
/// The `held` trigger (0007_held.sql) takes the same lock.
const KEY_LOCK: &str = "pg_advisory_xact_lock(hashtext('renkei:order_key:' || COALESCE(current_schema(), '')), h)";

/// Takes the advisory lock of every (flow, order key) among `deliveries`, held to commit, so that deliveries of
/// one key get their ids in commit order. One statement, in lock order: PostgreSQL evaluates a volatile function
/// of the select list after the ORDER BY, so two batches never wait for each other in a cycle. The first half
/// of the lock is the schema, so hubs in different schemas of one database do not wait for each other.
async fn lock_order_keys<'a>(
    tx: &mut Transaction<'_, Postgres>,
    deliveries: impl Iterator<Item = &'a NewDelivery>,
) -> Result<(), sqlx::Error> {
    let (flows, keys): (Vec<String>, Vec<String>) =
        deliveries.filter_map(|d| Some((d.flow.clone(), text(d.order_key.as_deref()?).into_owned()))).unzip();
    if flows.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "SELECT {KEY_LOCK} FROM (SELECT DISTINCT hashtext(f || chr(31) || k) AS h
                                 FROM unnest($1::text[], $2::text[]) AS t (f, k)) keys
         ORDER BY h"
    ))
    .bind(flows)
    .bind(keys)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes the ordering-key locks of these deliveries (see lock_order_keys), in the same order. A change that
/// opens or closes a keyed delivery takes its key's lock in the `held` trigger, after the row's lock; taking it
/// here first, before the rows', keeps two such changes from waiting for each other in a cycle.
async fn lock_keys_of(tx: &mut Transaction<'_, Postgres>, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {KEY_LOCK} FROM (SELECT DISTINCT hashtext(flow || chr(31) || order_key) AS h
                                 FROM deliveries WHERE id = ANY($1) AND order_key IS NOT NULL) keys
         ORDER BY h"
    ))
    .bind(ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One delivery, `held` when it is open, keyed, and behind an open delivery of its key (which the caller's key
/// lock keeps still). The `held` trigger settles the key all the same; with `held` set here it finds nothing to
/// change, where it would otherwise write the new row again (a new version of it in every index).
const INSERT_DELIVERY: &str =
    "INSERT INTO deliveries (event_id, flow, status, order_key, next_at, last_error, created_at, updated_at, held)
     VALUES ($1, $2, $3, $4, $5, $6, $5, $5,
             $4::text IS NOT NULL AND $3::text IN ('pending', 'retrying', 'in_flight')
             AND EXISTS (SELECT 1 FROM deliveries p
                         WHERE p.flow = $2 AND p.order_key = $4 AND p.status IN ('pending', 'retrying', 'in_flight')))
     RETURNING id";

/// Inserts deliveries one by one, so their ids follow the order given. The caller holds their key locks.
async fn insert_deliveries(
    tx: &mut Transaction<'_, Postgres>,
    event_id: &str,
    deliveries: &[NewDelivery],
    now: DateTime<Utc>,
) -> Result<Vec<i64>, sqlx::Error> {
    let mut ids = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        let id: i64 = sqlx::query_scalar(INSERT_DELIVERY)
            .bind(event_id)
            .bind(&d.flow)
            .bind(d.status.as_str())
            .bind(opt_text(&d.order_key))
            .bind(ms(now))
            .bind(opt_text(&d.error))
            .fetch_one(&mut **tx)
            .await?;
        ids.push(id);
    }
    Ok(ids)
}

pub(super) async fn record_rejected(pool: &PgPool, r: Rejected) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (id, source, event_type, status, reason, http_status, received_at, request_id,
                             content_type, headers, query, raw, raw_truncated)
         VALUES ($1, $2, '', 'rejected', $3, $4, $5, $1, $6, $7, $8, $9, $10)",
    )
    .bind(&r.id)
    .bind(&r.source)
    .bind(text(&r.reason))
    .bind(i32::from(r.http_status))
    .bind(ms(r.received_at))
    .bind(opt_text(&r.content_type))
    .bind(r.headers.to_string())
    .bind(r.query.to_string())
    .bind(&r.raw)
    .bind(r.raw_truncated)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub(super) async fn claim(
    pool: &PgPool,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: usize,
    skip: &[FlowStep],
) -> Result<Vec<Claimed>> {
    let skip_flows: Vec<&str> = skip.iter().map(|s| s.flow.as_str()).collect();
    let skip_steps: Vec<i64> = skip.iter().map(|s| i64::from(s.step)).collect();
    let mut tx = pool.begin().await.map_err(db)?;
    // Due: pending or retrying whose time has come, or in flight with an expired lease. With an ordering key,
    // only the oldest open delivery of that key and flow is eligible, so a later event never overtakes: the
    // others are `held`, kept so by a trigger (0007_held.sql), and not in `deliveries_queue` at all.
    // SKIP LOCKED: rows another node is claiming are left to it; its LIMIT counts only the rows locked here.
    let ids: Vec<i64> = sqlx::query_scalar(&format!(
        "WITH picked AS MATERIALIZED (
             SELECT d.id FROM deliveries d
             WHERE d.status IN {OPEN} AND NOT d.held
               AND ((d.status <> 'in_flight' AND d.next_at <= $3) OR (d.status = 'in_flight' AND d.lease_until <= $3))
               AND (d.flow, d.step) NOT IN (SELECT * FROM unnest($5::text[], $6::bigint[]))
             ORDER BY d.next_at, d.id
             LIMIT $4
             FOR UPDATE OF d SKIP LOCKED)
         UPDATE deliveries SET status = 'in_flight', lease_owner = $1, lease_until = $2, updated_at = $3
         FROM picked WHERE deliveries.id = picked.id
         RETURNING deliveries.id"
    ))
    .bind(owner)
    .bind(ms(lease_until))
    .bind(ms(now))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(&skip_flows)
    .bind(&skip_steps)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    if ids.is_empty() {
        tx.commit().await.map_err(db)?;
        return Ok(Vec::new());
    }
    let drows = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = ANY($1) ORDER BY d.id"
    ))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let erows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE id IN (SELECT event_id FROM deliveries WHERE id = ANY($1))"
    ))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    let events: std::collections::HashMap<String, EventRecord> =
        erows.iter().map(event_from_row).map(|e| e.map(|e| (e.id.clone(), e))).collect::<Result<_>>()?;
    drows
        .iter()
        .map(|r| {
            let delivery = delivery_from_row(r)?;
            let event = events.get(&delivery.event_id).cloned().ok_or(StoreError::NotFound)?;
            Ok(Claimed { delivery, event })
        })
        .collect()
}

pub(super) async fn record_attempt(
    pool: &PgPool,
    owner: &str,
    a: NewAttempt,
    t: Transition,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db)?;
    if matches!(t, Transition::Succeeded { .. } | Transition::Dead { .. }) {
        // Closing the delivery moves its key's head: the key's lock before the row's (see lock_keys_of).
        lock_keys_of(&mut tx, &[a.delivery_id]).await.map_err(db)?;
    }
    // FOR UPDATE: waits for a takeover in progress and reads the owner as committed, and keeps the row ours
    // until the transition below is written.
    let holder: Option<Option<String>> =
        sqlx::query_scalar("SELECT lease_owner FROM deliveries WHERE id = $1 AND status = 'in_flight' FOR UPDATE")
            .bind(a.delivery_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
    if holder.flatten().as_deref() != Some(owner) {
        // The lease ran out and another worker took the delivery: its result is the one that counts. The
        // attempt is still history, so keep it.
        insert_attempt(&mut tx, &a).await?;
        tx.commit().await.map_err(db)?;
        return Err(StoreError::Conflict(format!("delivery {} is no longer held by {owner}", a.delivery_id)));
    }
    insert_attempt(&mut tx, &a).await?;
    let q = match &t {
        Transition::Advance { step, outputs } => sqlx::query(
            "UPDATE deliveries SET step = $2, tries = 0, outputs = $3, attempts = attempts + 1, updated_at = $4, last_error = NULL WHERE id = $1",
        )
        .bind(a.delivery_id)
        .bind(i64::from(*step))
        .bind(outputs.to_string())
        .bind(ms(now)),
        Transition::Succeeded { outputs } => sqlx::query(
            "UPDATE deliveries SET status = 'succeeded', step = step + 1, tries = 0, outputs = $2, attempts = attempts + 1,
                 lease_owner = NULL, lease_until = NULL, last_error = NULL, updated_at = $3 WHERE id = $1",
        )
        .bind(a.delivery_id)
        .bind(outputs.to_string())
        .bind(ms(now)),
        Transition::Retry { at, tries, error } => sqlx::query(
            "UPDATE deliveries SET status = 'retrying', tries = $2, next_at = $3, last_error = $4, attempts = attempts + 1,
                 lease_owner = NULL, lease_until = NULL, updated_at = $5 WHERE id = $1",
        )
        .bind(a.delivery_id)
        .bind(i64::from(*tries))
        .bind(ms(*at))
        .bind(text(error))
        .bind(ms(now)),
        Transition::Dead { tries, error } => sqlx::query(
            "UPDATE deliveries SET status = 'dead', tries = $2, last_error = $3, attempts = attempts + 1,
                 lease_owner = NULL, lease_until = NULL, updated_at = $4 WHERE id = $1",
        )
        .bind(a.delivery_id)
        .bind(i64::from(*tries))
        .bind(text(error))
        .bind(ms(now)),
    };
    q.execute(&mut *tx).await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(())
}

async fn insert_attempt(tx: &mut Transaction<'_, Postgres>, a: &NewAttempt) -> Result<()> {
    let headers = |h: &[(String, String)]| serde_json::to_string(h).unwrap_or_else(|_| "[]".into());
    sqlx::query(
        "INSERT INTO attempts (delivery_id, step, try_no, started_at, duration_ms, outcome, method, url, request_headers,
                               request_body, response_status, response_headers, response_body, response_truncated, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(a.delivery_id)
    .bind(i64::from(a.step))
    .bind(i64::from(a.try_no))
    .bind(ms(a.started_at))
    .bind(i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
    .bind(a.outcome)
    .bind(text(&a.method))
    .bind(text(&a.url))
    .bind(headers(&a.request_headers))
    .bind(&a.request_body)
    .bind(a.response.as_ref().map(|r| i32::from(r.status)))
    .bind(a.response.as_ref().map(|r| headers(&r.headers)))
    .bind(a.response.as_ref().map(|r| r.body.as_slice()))
    .bind(a.response.as_ref().is_some_and(|r| r.truncated))
    .bind(opt_text(&a.error))
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// Gives back what `owner` holds: every delivery, or only `ids`.
pub(super) async fn release(pool: &PgPool, owner: &str, ids: Option<&[i64]>, now: DateTime<Utc>) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE deliveries SET status = CASE WHEN tries > 0 THEN 'retrying' ELSE 'pending' END,
             lease_owner = NULL, lease_until = NULL, next_at = LEAST(next_at, $2), updated_at = $2
         WHERE status = 'in_flight' AND lease_owner = $1 AND ($3::bigint[] IS NULL OR id = ANY($3))",
    )
    .bind(owner)
    .bind(ms(now))
    .bind(ids)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(r.rows_affected())
}

pub(super) async fn renew_leases(pool: &PgPool, owner: &str, ids: &[i64], until: DateTime<Utc>) -> Result<u64> {
    let r = sqlx::query(
        "UPDATE deliveries SET lease_until = $3 WHERE status = 'in_flight' AND lease_owner = $1 AND id = ANY($2)",
    )
    .bind(owner)
    .bind(ids)
    .bind(ms(until))
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(r.rows_affected())
}

pub(super) async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>> {
    // The earliest waiting delivery (first in `deliveries_queue` that is not in flight) and the earliest lease
    // to run out (among the few in flight, by `deliveries_status`): two short index walks, not a pass over every
    // open delivery (20 ms with 100,000 waiting, BENCHMARKS.md "Seventh session"). `held` of the in-flight rows
    // is looked at after the walk: written in the WHERE, it let the planner (before statistics) AND the walk
    // with all of `deliveries_queue`. LEAST ignores a NULL.
    let at: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT LEAST(
             (SELECT next_at FROM deliveries WHERE status IN {OPEN} AND NOT held AND status <> 'in_flight'
              ORDER BY next_at LIMIT 1),
             (SELECT MIN(CASE WHEN NOT held THEN lease_until END) FROM deliveries WHERE status = 'in_flight'))"
    ))
    .fetch_one(pool)
    .await
    .map_err(db)?;
    Ok(at.map(super::from_ms))
}

pub(super) async fn retry_delivery(pool: &PgPool, id: i64, now: DateTime<Utc>) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db)?;
    // The event row first (FOR SHARE), so a purge in progress is waited for and a later one leaves it alone;
    // always the event before the delivery, as purge takes them, so the two never deadlock.
    let found: Option<String> = sqlx::query_scalar(
        "SELECT e.id FROM events e JOIN deliveries d ON d.event_id = e.id WHERE d.id = $1 FOR SHARE OF e",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    if found.is_none() {
        return Err(StoreError::NotFound);
    }
    lock_keys_of(&mut tx, &[id]).await.map_err(db)?;
    // Check and change in one statement: a claim between the two cannot slip in.
    let changed = sqlx::query(
        "UPDATE deliveries SET status = 'pending', tries = 0, next_at = $2, updated_at = $2
         WHERE id = $1 AND status IN ('dead', 'retrying')",
    )
    .bind(id)
    .bind(ms(now))
    .execute(&mut *tx)
    .await
    .map_err(db)?
    .rows_affected();
    if changed == 0 {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM deliveries WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let status = status.ok_or(StoreError::NotFound)?;
        return Err(StoreError::Conflict(format!(
            "delivery {id} is {status}; only dead or retrying deliveries can be retried"
        )));
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}

pub(super) async fn retry_dead(pool: &PgPool, f: &DeliveryFilter, now: DateTime<Utc>) -> Result<u64> {
    let mut f = f.clone();
    f.status = Some(Status::Dead);
    let (clause, args) = super::history::delivery_where(&f, 0);
    // FOR SHARE OF e: see retry_delivery. Then the keys' locks, in order, before any delivery row's, so two
    // retries (or a retry and a closing attempt) never wait for each other in a cycle. `status = 'dead'` again
    // in the update: a delivery another admin retried meanwhile is left alone.
    let mut tx = pool.begin().await.map_err(db)?;
    let sql = format!("SELECT d.id FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {clause} FOR SHARE OF e");
    let rows = args.bind_all(sqlx::query(&sql)).fetch_all(&mut *tx).await.map_err(db)?;
    let ids: Vec<i64> = rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>().map_err(db)?;
    lock_keys_of(&mut tx, &ids).await.map_err(db)?;
    let r = sqlx::query(
        "UPDATE deliveries SET status = 'pending', tries = 0, next_at = $1, updated_at = $1
         WHERE status = 'dead' AND id = ANY($2)",
    )
    .bind(ms(now))
    .bind(&ids)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(r.rows_affected())
}

pub(super) async fn add_deliveries(
    pool: &PgPool,
    event_id: &str,
    deliveries: Vec<NewDelivery>,
    now: DateTime<Utc>,
) -> Result<Vec<i64>> {
    let mut tx = pool.begin().await.map_err(db)?;
    // FOR SHARE: a purge of this event waits for the replay, or the replay for the purge (and then finds nothing).
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM events WHERE id = $1 FOR SHARE")
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
    lock_order_keys(&mut tx, deliveries.iter()).await.map_err(db)?;
    let ids = insert_deliveries(&mut tx, event_id, &deliveries, now).await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(ids)
}

pub(super) async fn purge(pool: &PgPool, before: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
    let mut purged = 0;
    loop {
        let mut tx = pool.begin().await.map_err(db)?;
        // Lock the candidates (skipping events a retry or replay holds), then delete them in a new statement,
        // whose fresh snapshot sees any delivery reopened before the lock. Attempts and deliveries go with
        // their event (ON DELETE CASCADE).
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM events WHERE received_at < $1
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id AND d.status IN {OPEN})
             LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind(ms(before))
        .bind(PURGE_BATCH)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let deleted = if ids.is_empty() {
            0
        } else {
            sqlx::query(&format!(
                "DELETE FROM events WHERE id = ANY($1)
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id AND d.status IN {OPEN})"
            ))
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected()
        };
        tx.commit().await.map_err(db)?;
        purged += deleted;
        if ids.len() < PURGE_BATCH as usize || deleted == 0 {
            break;
        }
    }
    sqlx::query("DELETE FROM dedupe WHERE expires_at <= $1").bind(ms(now)).execute(pool).await.map_err(db)?;
    // Loop-guard marks (`echo:` state) older than the history kept are of no use to anyone.
    sqlx::query("DELETE FROM kv_state WHERE key LIKE 'echo:%' AND updated_at < $1")
        .bind(ms(before))
        .execute(pool)
        .await
        .map_err(db)?;
    // No VACUUM: autovacuum reclaims the dead rows, and a VACUUM FULL would lock out every node.
    Ok(purged)
}

pub(super) async fn save_config(pool: &PgPool, config: &str, now: DateTime<Utc>) -> Result<()> {
    let config = text(config);
    let mut tx = pool.begin().await.map_err(db)?;
    // Nodes starting together load the same config: the lock makes the second see the first's row.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('renkei:config'), hashtext(COALESCE(current_schema(), '')))")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let last: Option<String> = sqlx::query_scalar("SELECT text FROM config_revisions ORDER BY id DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    if last.as_deref() != Some(&*config) {
        sqlx::query("INSERT INTO config_revisions (loaded_at, text) VALUES ($1, $2)")
            .bind(ms(now))
            .bind(&config)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}

pub(super) async fn take_slot(
    pool: &PgPool,
    key: &str,
    cap: u32,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Option<u32>> {
    // The lowest free slot (held by nobody, or past its `until`), locked with SKIP LOCKED so that nodes taking
    // slots at the same moment take different ones instead of colliding. The slots' rows are made the first
    // time a key is used (and when its limit grows).
    for first in [true, false] {
        let slot: Option<i32> = sqlx::query_scalar(
            "UPDATE limit_slots SET owner = $3, until = $5
             FROM (SELECT slot FROM limit_slots WHERE key = $1 AND slot < $2 AND until <= $4
                   ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED) AS free
             WHERE limit_slots.key = $1 AND limit_slots.slot = free.slot
             RETURNING limit_slots.slot",
        )
        .bind(super::text(key))
        .bind(cap as i32)
        .bind(super::text(owner))
        .bind(ms(now))
        .bind(ms(until))
        .fetch_optional(pool)
        .await
        .map_err(db)?;
        if slot.is_some() || !first {
            return Ok(slot.map(|s| s as u32));
        }
        sqlx::query(
            "INSERT INTO limit_slots (key, slot, owner, until)
             SELECT $1, s, '', 0 FROM generate_series(0, $2 - 1) AS s ON CONFLICT (key, slot) DO NOTHING",
        )
        .bind(super::text(key))
        .bind(cap as i32)
        .execute(pool)
        .await
        .map_err(db)?;
    }
    Ok(None)
}

pub(super) async fn free_slot(pool: &PgPool, key: &str, slot: u32, owner: &str) -> Result<()> {
    sqlx::query("UPDATE limit_slots SET owner = '', until = 0 WHERE key = $1 AND slot = $2 AND owner = $3")
        .bind(super::text(key))
        .bind(slot as i32)
        .bind(super::text(owner))
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}

/// Gives back every slot `owner` holds: those of requests cut off at shutdown, which never reached their own
/// `free_slot` (without this they stay taken until their `until`, the request's timeout plus 10 s).
pub(super) async fn free_slots_of(pool: &PgPool, owner: &str) -> Result<()> {
    sqlx::query("UPDATE limit_slots SET owner = '', until = 0 WHERE owner = $1")
        .bind(super::text(owner))
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(())
}
