//! What the store alone costs per event on the way through (no HTTP, no worker): ingest of a batch of events
//! with the bench's ~1 KB order bodies, a claim of them, and an attempt recorded for each (request and response
//! bodies of the same size), on a SQLite file. One call at a time, so every run issues the same statements in the
//! same batches: under `valgrind --tool=callgrind` its instruction counts repeat, which the timed figures on a
//! busy machine do not (BENCHMARKS.md, "Profiling").

use std::time::Instant;

use chrono::{Duration, Utc};
use renkei_store::sqlite::SqliteStore;
use renkei_store::{NewAttempt, NewEvent, RecordedResponse, Store, Transition};
use serde_json::json;

use crate::report::Row;
use crate::StoreArgs;

pub async fn store(args: &StoreArgs) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let now = Utc::now();
    let url = format!("sqlite://{}", dir.path().join("renkei.db").display());
    let store = SqliteStore::open(&url, now).await?;
    let body = |i: u64| crate::load::body("store", i, args.body_bytes);
    let headers = json!({ "content-type": "application/json", "user-agent": "renkei-bench", "x-request-id": "r" });
    let (mut ingest, mut claim, mut record) = (0.0, 0.0, 0.0);
    let mut n = 0;
    while n < args.events {
        let take = (args.events - n).min(args.batch);
        let events: Vec<NewEvent> = (n..n + take)
            .map(|i| NewEvent {
                source: "orders".into(),
                event_type: "order.created".into(),
                received_at: now,
                request_id: format!("r{i}"),
                content_type: Some("application/json".into()),
                headers: headers.clone(),
                body: serde_json::from_slice(&body(i)).expect("the bench body is JSON"),
                body_text: None,
                ..crate::blocked::event(format!("ev{i:010}"), "orders-to-sink", None)
            })
            .collect();
        let t = Instant::now();
        store.ingest(events, now).await?;
        ingest += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let claimed = store.claim("bench", now, now + Duration::minutes(10), take as usize, &[]).await?;
        claim += t.elapsed().as_secs_f64();
        anyhow::ensure!(claimed.len() == take as usize, "claimed {} of {take}", claimed.len());
        let t = Instant::now();
        for c in claimed {
            let attempt = NewAttempt {
                delivery_id: c.delivery.id,
                step: 0,
                try_no: 1,
                started_at: now,
                duration_ms: 1,
                outcome: "success",
                method: "POST".into(),
                url: "http://127.0.0.1/orders".into(),
                request_headers: vec![("content-type".into(), "application/json".into())],
                request_body: c.event.body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
                response: Some(RecordedResponse {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: body(c.delivery.id as u64).to_vec(),
                    truncated: false,
                }),
                error: None,
            };
            let done = Transition::Succeeded { outputs: json!([{ "status": 200 }]) };
            store.record_attempt("bench", attempt, done, now).await?;
        }
        record += t.elapsed().as_secs_f64();
        n += take;
    }
    let per = |secs: f64| secs * 1e6 / args.events.max(1) as f64;
    let note =
        format!("{} events, {} per ingest and claim, one attempt per call; SQLite file", args.events, args.batch);
    Ok(vec![
        Row::new("store: ingest, per event", per(ingest), "µs").note(&note),
        Row::new("store: claim, per event claimed", per(claim), "µs").note(&note),
        Row::new("store: attempt recorded, per attempt", per(record), "µs").note(&note),
    ])
}
