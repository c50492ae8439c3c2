//! What only the SQLite backend does: one process per file, and giving space back.

use chrono::{Duration, Utc};
use renkei_core::delivery::Status;
use serde_json::json;

use super::*;

#[tokio::test]
async fn a_second_process_cannot_open_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let first = SqliteStore::open(&url, Utc::now()).await.unwrap();
    let second = SqliteStore::open(&url, Utc::now()).await;
    let err = second.unwrap_err().to_string();
    assert!(err.contains("in use by another renkei process"), "{err}");
    drop(first);
    SqliteStore::open(&url, Utc::now()).await.expect("free again once the first is gone");
}

async fn file_pages(s: &SqliteStore) -> (i64, i64) {
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&s.writer).await.unwrap();
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count").fetch_one(&s.writer).await.unwrap();
    (pages, free)
}

#[tokio::test]
async fn purge_gives_the_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let now = Utc::now();
    let s = SqliteStore::open(&url, now).await.unwrap();
    let big = "x".repeat(20_000);
    let events = (0..200)
        .map(|i| NewEvent {
            id: format!("e{i:04}"),
            source: "s".into(),
            event_type: "t".into(),
            received_at: now,
            request_id: "r".into(),
            row: None,
            content_type: None,
            headers: json!({}),
            query: json!({}),
            body: json!({ "big": big }),
            dedupe: None,
            deliveries: vec![NewDelivery { flow: "f".into(), status: Status::Skipped, order_key: None, error: None }],
        })
        .collect();
    s.ingest(events, now).await.unwrap();
    let (full, _) = file_pages(&s).await;
    let purged = s.purge(now + Duration::days(31) - Duration::days(30), now + Duration::days(31)).await.unwrap();
    assert_eq!(purged, 200);
    let (after, free) = file_pages(&s).await;
    assert!(after < full / 4, "file did not shrink: {full} pages before, {after} after");
    assert_eq!(free, 0, "free pages returned to the file system");
}

#[tokio::test]
async fn concurrent_ingests_share_commits_and_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let now = Utc::now();
    let store = std::sync::Arc::new(SqliteStore::open(&url, now).await.unwrap());
    let event = move |id: String| NewEvent {
        id,
        source: "s".into(),
        event_type: "t".into(),
        received_at: now,
        request_id: "r".into(),
        row: None,
        content_type: None,
        headers: json!({}),
        query: json!({}),
        body: json!({}),
        dedupe: None,
        deliveries: vec![NewDelivery {
            flow: "f".into(),
            status: Status::Pending,
            order_key: Some("k".into()),
            error: None,
        }],
    };
    store.ingest(vec![event("taken".into())], now).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = store.clone();
        // Request 100 reuses an id: its insert fails, and only it.
        let id = if i == 100 { "taken".to_owned() } else { format!("e{i:03}") };
        tasks.push(tokio::spawn(async move { s.ingest(vec![event(id)], now).await }));
    }
    let mut failed = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(out) => assert!(matches!(out[0], Ingested::Stored { .. }), "{i}"),
            Err(_) => {
                assert_eq!(i, 100);
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 1);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries").fetch_one(&store.writer).await.unwrap();
    assert_eq!(n, 200, "199 new deliveries and the first one");
}
