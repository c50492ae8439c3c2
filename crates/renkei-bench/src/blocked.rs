//! What a claim costs while many deliveries wait behind one ordering key whose head is retrying, what the
//! idle worker's look for the next due time costs with as many waiting, and what a claim costs that walks past
//! as many due at a step it leaves out: the store alone (no HTTP), on a SQLite file and, with --postgres-url,
//! in a fresh PostgreSQL schema.

use std::time::Instant;

use chrono::{Duration, Utc};
use renkei_core::delivery::Status;
use renkei_store::postgres::PgStore;
use renkei_store::sqlite::SqliteStore;
use renkei_store::{FlowStep, NewAttempt, NewDelivery, NewEvent, Store, Transition};
use serde_json::json;

use crate::report::Row;
use crate::BlockedArgs;

/// An event of source `bench` with one pending delivery to `flow`, keyed by `key`, and a tiny body.
pub(crate) fn event(id: String, flow: &str, key: Option<&str>) -> NewEvent {
    NewEvent {
        id,
        source: "bench".into(),
        event_type: "t".into(),
        received_at: Utc::now(),
        request_id: "r".into(),
        row: None,
        content_type: None,
        headers: json!({}),
        query: json!({}),
        body: json!({ "n": 1 }),
        body_text: None,
        dedupe: None,
        deliveries: vec![NewDelivery {
            flow: flow.into(),
            status: Status::Pending,
            order_key: key.map(Into::into),
            error: None,
        }],
    }
}

/// Ingests `count` events of one delivery each to `flow` (ids named after it), 1,000 per ingest, at `at`;
/// the mean time per event, µs.
async fn fill(
    store: &dyn Store,
    flow: &str,
    key: Option<&str>,
    count: u64,
    at: chrono::DateTime<Utc>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut n = 0;
    while n < count {
        let take = (count - n).min(1000);
        let events = (n..n + take).map(|i| event(format!("{flow}{i:08}"), flow, key)).collect();
        store.ingest(events, at).await?;
        n += take;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / count.max(1) as f64)
}

pub async fn blocked(args: &BlockedArgs) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let now = Utc::now();
    let url = format!("sqlite://{}", dir.path().join("renkei.db").display());
    let mut rows = measure("SQLite", &SqliteStore::open(&url, now).await?, args).await?;
    if let Some(url) = &args.postgres_url {
        let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
        let store = PgStore::open_in_schema(url, &schema, now).await?;
        let measured = measure("PostgreSQL", &store, args).await;
        drop(store);
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE")).execute(&mut conn).await?;
        rows.extend(measured?);
    }
    Ok(rows)
}

async fn measure(backend: &str, store: &dyn Store, args: &BlockedArgs) -> anyhow::Result<Vec<Row>> {
    let now = Utc::now();
    let lease = now + Duration::minutes(10);
    // The head of key "k", then --behind more of it; claimed and sent to retry in a day.
    let keyed = fill(store, "f", Some("k"), args.behind + 1, now).await?;
    let head = store.claim("bench", now, lease, 1, &[]).await?;
    anyhow::ensure!(head.len() == 1, "the head of the key was not claimed");
    let attempt = NewAttempt {
        delivery_id: head[0].delivery.id,
        step: 0,
        try_no: 1,
        started_at: now,
        duration_ms: 1,
        outcome: "transient",
        method: "POST".into(),
        url: "http://127.0.0.1/".into(),
        request_headers: Vec::new(),
        request_body: Vec::new(),
        response: None,
        error: Some("bench".into()),
    };
    let retry = Transition::Retry { at: now + Duration::days(1), tries: 1, error: "bench".into() };
    store.record_attempt("bench", attempt, retry, now).await?;

    let timed = |samples: &mut Vec<f64>, t: Instant| samples.push(t.elapsed().as_secs_f64() * 1e3);
    // Nothing else due: what an idle worker's look costs.
    let mut empty = Vec::new();
    for _ in 0..args.claims {
        let t = Instant::now();
        let got = store.claim("bench", now, lease, 10, &[]).await?;
        timed(&mut empty, t);
        anyhow::ensure!(got.is_empty(), "a delivery behind the retrying head was claimed");
    }
    // 100 unkeyed deliveries of another flow due: claim ten, give them back, again.
    fill(store, "g", None, 100, now).await?;
    let mut ten = Vec::new();
    for _ in 0..args.claims {
        let t = Instant::now();
        let got = store.claim("bench", now, lease, 10, &[]).await?;
        timed(&mut ten, t);
        anyhow::ensure!(got.len() == 10, "claimed {} of 10", got.len());
        let ids: Vec<i64> = got.iter().map(|c| c.delivery.id).collect();
        store.give_back("bench", &ids, now).await?;
    }
    // As many unkeyed deliveries waiting a day (a backlog behind a destination that is down): what an idle
    // worker's look for the next due time costs.
    let unkeyed = fill(store, "h", None, args.behind, now + Duration::days(1)).await?;
    let mut looks = Vec::new();
    for _ in 0..args.claims {
        let t = Instant::now();
        let due = store.next_due().await?;
        timed(&mut looks, t);
        let due = due.map(|d| d.timestamp_millis());
        anyhow::ensure!(due == Some(now.timestamp_millis()), "next due {due:?}, not the 100 of the other flow");
    }
    // As many due a day ago at a step the claim leaves out (a destination whose limit is full: it hangs), older
    // than the 100 others: each claim of 10 walks past them.
    fill(store, "x", None, args.behind, now - Duration::days(1)).await?;
    let skip = [FlowStep { flow: "x".into(), step: 0 }];
    let mut past = Vec::new();
    for _ in 0..args.claims {
        let t = Instant::now();
        let got = store.claim("bench", now, lease, 10, &skip).await?;
        timed(&mut past, t);
        anyhow::ensure!(got.len() == 10 && got.iter().all(|c| c.delivery.flow == "g"), "claimed {} of 10", got.len());
        let ids: Vec<i64> = got.iter().map(|c| c.delivery.id).collect();
        store.give_back("bench", &ids, now).await?;
    }
    let note =
        format!("{} deliveries behind one retrying ordering-key head; mean of {} claims", args.behind, args.claims);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    Ok(vec![
        Row::new(format!("blocked key, {backend}: ingest of a delivery behind an open one of its key"), keyed, "µs")
            .note(format!("{} events of one key, 1,000 per ingest; the held trigger's work included", args.behind + 1)),
        Row::new(format!("blocked key, {backend}: ingest of an unkeyed delivery"), unkeyed, "µs")
            .note(format!("{} events, 1,000 per ingest, into the same table", args.behind)),
        Row::new(format!("blocked key, {backend}: a claim finding nothing due"), mean(&empty), "ms").note(&note),
        Row::new(format!("blocked key, {backend}: a claim of 10 other deliveries"), mean(&ten), "ms").note(note),
        Row::new(format!("blocked key, {backend}: the next due time"), mean(&looks), "ms").note(format!(
            "the same, and {} unkeyed deliveries due in a day; mean of {} looks",
            args.behind, args.claims
        )),
        Row::new(format!("blocked key, {backend}: a claim of 10 past a left-out step"), mean(&past), "ms").note(format!(
            "the same, and {} deliveries due a day ago at a step the claim leaves out (a full limit's); mean of {} claims",
            args.behind, args.claims
        )),
    ])
}
