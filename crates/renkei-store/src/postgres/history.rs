//! Reads: history listings with filters and keyset paging, single records, queue figures. Reads take no locks
//! and see the last committed state; the listings are the SQLite ones with numbered placeholders.

use sqlx::PgPool;

use super::rows::*;
use super::{db, from_ms, ms};
use crate::*;

const MAX_PAGE: u32 = 500;

fn limit(l: u32) -> i64 {
    i64::from(if l == 0 { 50 } else { l.min(MAX_PAGE) })
}

pub(super) async fn list_events(pool: &PgPool, f: &EventFilter) -> Result<Vec<EventRecord>> {
    let mut clauses = vec!["1 = 1".to_owned()];
    let mut args = Args::after(0);
    for (col, v) in [("source", &f.source), ("event_type", &f.event_type), ("status", &f.status)] {
        if let Some(v) = v {
            clauses.push(format!("{col} = {}", args.text(v)));
        }
    }
    if let Some(b) = &f.before {
        // Byte order (the column is COLLATE "C"), as SQLite compares.
        clauses.push(format!("id < {}", args.text(b)));
    }
    if let Some(s) = f.since {
        clauses.push(format!("received_at >= {}", args.int(ms(s))));
    }
    if let Some(u) = f.until {
        clauses.push(format!("received_at < {}", args.int(ms(u))));
    }
    if let Some(q) = &f.q {
        let id = args.text(q);
        let p = args.text(&contains(q));
        clauses.push(format!(
            "(id = {id} OR {} OR {} OR {})",
            like("event_type", &p),
            like("body", &p),
            like("reason", &p)
        ));
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE {} ORDER BY id DESC LIMIT {}",
        clauses.join(" AND "),
        limit(f.limit)
    );
    let q = args.bind_all(sqlx::query(&sql));
    q.fetch_all(pool).await.map_err(db)?.iter().map(event_from_row).collect()
}

pub(super) async fn get_event(pool: &PgPool, id: &str) -> Result<EventRecord> {
    let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    event_from_row(&row.ok_or(StoreError::NotFound)?)
}

/// The WHERE clause (over `deliveries d JOIN events e`) for a delivery filter, with its binds, which follow
/// the `first` placeholders the statement binds itself.
pub(super) fn delivery_where(f: &DeliveryFilter, first: usize) -> (String, Args) {
    let mut clauses = vec!["1 = 1".to_owned()];
    let mut args = Args::after(first);
    if let Some(v) = &f.flow {
        clauses.push(format!("d.flow = {}", args.text(v)));
    }
    if let Some(v) = &f.source {
        clauses.push(format!("e.source = {}", args.text(v)));
    }
    if let Some(v) = f.status {
        clauses.push(format!("d.status = {}", args.text(v.as_str())));
    }
    if let Some(v) = &f.event_id {
        clauses.push(format!("d.event_id = {}", args.text(v)));
    }
    if let Some(v) = f.before {
        clauses.push(format!("d.id < {}", args.int(v)));
    }
    if let Some(s) = f.since {
        clauses.push(format!("d.created_at >= {}", args.int(ms(s))));
    }
    if let Some(u) = f.until {
        clauses.push(format!("d.created_at < {}", args.int(ms(u))));
    }
    if let Some(q) = &f.q {
        let p = args.text(&contains(q));
        clauses.push(format!(
            "({} OR {} OR {})",
            like("d.last_error", &p),
            like("d.order_key", &p),
            like("e.body", &p)
        ));
    }
    (clauses.join(" AND "), args)
}

pub(super) async fn list_deliveries(pool: &PgPool, f: &DeliveryFilter) -> Result<Vec<DeliveryRecord>> {
    let (clause, args) = delivery_where(f, 0);
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {clause} ORDER BY d.id DESC LIMIT {}",
        limit(f.limit)
    );
    let q = args.bind_all(sqlx::query(&sql));
    q.fetch_all(pool).await.map_err(db)?.iter().map(delivery_from_row).collect()
}

pub(super) async fn get_delivery(pool: &PgPool, id: i64) -> Result<DeliveryRecord> {
    let row = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    delivery_from_row(&row.ok_or(StoreError::NotFound)?)
}

pub(super) async fn list_attempts(pool: &PgPool, f: &AttemptFilter) -> Result<Vec<AttemptRecord>> {
    let mut clauses = vec!["1 = 1".to_owned()];
    let mut args = Args::after(0);
    if let Some(v) = f.delivery_id {
        clauses.push(format!("a.delivery_id = {}", args.int(v)));
    }
    if let Some(v) = &f.flow {
        clauses.push(format!("d.flow = {}", args.text(v)));
    }
    if let Some(v) = &f.outcome {
        clauses.push(format!("a.outcome = {}", args.text(v)));
    }
    if let Some(v) = f.since {
        clauses.push(format!("a.started_at >= {}", args.int(ms(v))));
    }
    if let Some(v) = f.before {
        clauses.push(format!("a.id < {}", args.int(v)));
    }
    // One delivery's attempts read best oldest first; a cross-delivery listing newest first.
    let order = if f.delivery_id.is_some() { "a.id ASC" } else { "a.id DESC" };
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE {} ORDER BY {order} LIMIT {}",
        clauses.join(" AND "),
        limit(f.limit)
    );
    let q = args.bind_all(sqlx::query(&sql));
    q.fetch_all(pool).await.map_err(db)?.iter().map(attempt_from_row).collect()
}

pub(super) async fn queue_stats(pool: &PgPool) -> Result<QueueStats> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, COUNT(*) FROM deliveries WHERE status IN ('pending', 'retrying', 'in_flight', 'dead') GROUP BY status",
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut stats = QueueStats::default();
    for (status, n) in rows {
        let n = n as u64;
        match status.as_str() {
            "pending" => stats.pending = n,
            "retrying" => stats.retrying = n,
            "in_flight" => stats.in_flight = n,
            _ => stats.dead = n,
        }
    }
    let oldest: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(created_at) FROM deliveries WHERE status IN ('pending', 'retrying', 'in_flight')",
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    stats.oldest_open_at = oldest.map(from_ms);
    Ok(stats)
}
