//! Reads: history listings with filters and keyset paging, single records, queue figures.

use sqlx::SqlitePool;

use super::rows::*;
use super::{db, from_ms, ms};
use crate::*;

const MAX_PAGE: u32 = 500;

fn limit(l: u32) -> i64 {
    i64::from(if l == 0 { 50 } else { l.min(MAX_PAGE) })
}

pub(super) async fn list_events(pool: &SqlitePool, f: &EventFilter) -> Result<Vec<EventRecord>> {
    let mut clauses = vec!["1 = 1".to_owned()];
    let mut binds = Vec::new();
    let mut eq = |col: &str, v: &Option<String>, clauses: &mut Vec<String>| {
        if let Some(v) = v {
            clauses.push(format!("{col} = ?"));
            binds.push(Bind::Text(v.clone()));
        }
    };
    eq("source", &f.source, &mut clauses);
    eq("event_type", &f.event_type, &mut clauses);
    eq("status", &f.status, &mut clauses);
    if let Some(b) = &f.before {
        clauses.push("id < ?".into());
        binds.push(Bind::Text(b.clone()));
    }
    if let Some(s) = f.since {
        clauses.push("received_at >= ?".into());
        binds.push(Bind::Int(ms(s)));
    }
    if let Some(u) = f.until {
        clauses.push("received_at < ?".into());
        binds.push(Bind::Int(ms(u)));
    }
    if let Some(q) = &f.q {
        clauses.push(
            "(id = ? OR event_type LIKE ? ESCAPE '\\' OR body LIKE ? ESCAPE '\\' OR reason LIKE ? ESCAPE '\\')".into(),
        );
        binds.push(Bind::Text(q.clone()));
        for _ in 0..3 {
            binds.push(Bind::Text(contains(q)));
        }
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE {} ORDER BY id DESC LIMIT {}",
        clauses.join(" AND "),
        limit(f.limit)
    );
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = b.bind_to(q);
    }
    q.fetch_all(pool).await.map_err(db)?.iter().map(event_from_row).collect()
}

pub(super) async fn get_event(pool: &SqlitePool, id: &str) -> Result<EventRecord> {
    let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"))
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    event_from_row(&row.ok_or(StoreError::NotFound)?)
}

/// The WHERE clause (over `deliveries d JOIN events e`) for a delivery filter, with its binds in order.
pub(super) fn delivery_where(f: &DeliveryFilter) -> (String, Vec<Bind>) {
    let mut clauses = vec!["1 = 1".to_owned()];
    let mut binds = Vec::new();
    if let Some(v) = &f.flow {
        clauses.push("d.flow = ?".into());
        binds.push(Bind::Text(v.clone()));
    }
    if let Some(v) = &f.source {
        clauses.push("e.source = ?".into());
        binds.push(Bind::Text(v.clone()));
    }
    if let Some(v) = f.status {
        clauses.push("d.status = ?".into());
        binds.push(Bind::Text(v.as_str().into()));
    }
    if let Some(v) = &f.event_id {
        clauses.push("d.event_id = ?".into());
        binds.push(Bind::Text(v.clone()));
    }
    if let Some(v) = f.before {
        clauses.push("d.id < ?".into());
        binds.push(Bind::Int(v));
    }
    if let Some(s) = f.since {
        clauses.push("d.created_at >= ?".into());
        binds.push(Bind::Int(ms(s)));
    }
    if let Some(u) = f.until {
        clauses.push("d.created_at < ?".into());
        binds.push(Bind::Int(ms(u)));
    }
    if let Some(q) = &f.q {
        clauses.push(
            "(d.last_error LIKE ? ESCAPE '\\' OR d.order_key LIKE ? ESCAPE '\\' OR e.body LIKE ? ESCAPE '\\')".into(),
        );
        for _ in 0..3 {
            binds.push(Bind::Text(contains(q)));
        }
    }
    (clauses.join(" AND "), binds)
}

pub(super) async fn list_deliveries(pool: &SqlitePool, f: &DeliveryFilter) -> Result<Vec<DeliveryRecord>> {
    let (clause, binds) = delivery_where(f);
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {clause} ORDER BY d.id DESC LIMIT {}",
        limit(f.limit)
    );
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = b.bind_to(q);
    }
    q.fetch_all(pool).await.map_err(db)?.iter().map(delivery_from_row).collect()
}

pub(super) async fn get_delivery(pool: &SqlitePool, id: i64) -> Result<DeliveryRecord> {
    let row = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = ?1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    delivery_from_row(&row.ok_or(StoreError::NotFound)?)
}

pub(super) async fn list_attempts(pool: &SqlitePool, f: &AttemptFilter) -> Result<Vec<AttemptRecord>> {
    let mut clauses = vec!["1 = 1".to_owned()];
    let mut binds = Vec::new();
    if let Some(v) = f.delivery_id {
        clauses.push("a.delivery_id = ?".into());
        binds.push(Bind::Int(v));
    }
    if let Some(v) = &f.flow {
        clauses.push("d.flow = ?".into());
        binds.push(Bind::Text(v.clone()));
    }
    if let Some(v) = &f.outcome {
        clauses.push("a.outcome = ?".into());
        binds.push(Bind::Text(v.clone()));
    }
    if let Some(v) = f.since {
        clauses.push("a.started_at >= ?".into());
        binds.push(Bind::Int(ms(v)));
    }
    if let Some(v) = f.before {
        clauses.push("a.id < ?".into());
        binds.push(Bind::Int(v));
    }
    // One delivery's attempts read best oldest first; a cross-delivery listing newest first.
    let order = if f.delivery_id.is_some() { "a.id ASC" } else { "a.id DESC" };
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE {} ORDER BY {order} LIMIT {}",
        clauses.join(" AND "),
        limit(f.limit)
    );
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = b.bind_to(q);
    }
    q.fetch_all(pool).await.map_err(db)?.iter().map(attempt_from_row).collect()
}

pub(super) async fn queue_stats(pool: &SqlitePool) -> Result<QueueStats> {
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
