//! What only the PostgreSQL backend does: several nodes on one database, its error mapping, and where
//! PostgreSQL itself differs from SQLite. The conformance suite (tests/conformance) covers the rest.
//!
//! Tests that need a server use `RENKEI_TEST_POSTGRES_URL`, as the conformance suite does, and are skipped
//! (with a line saying so) when it is unset.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{Duration, TimeZone, Utc};
use renkei_core::delivery::Status;
use serde_json::json;

use super::*;
use crate::sqlite::SqliteStore;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap()
}

fn test_url(test: &str) -> Option<String> {
    let url = std::env::var("RENKEI_TEST_POSTGRES_URL").ok();
    if url.is_none() {
        println!("skipped postgres::tests::{test}: RENKEI_TEST_POSTGRES_URL is not set");
    }
    url
}

/// `n` nodes opened at the same time on one fresh schema.
async fn nodes(url: &str, n: usize) -> (Vec<PgStore>, String) {
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    let opening = (0..n).map(|_| {
        let (url, schema) = (url.to_owned(), schema.clone());
        async move { PgStore::open_in_schema(&url, &schema, t0()).await }
    });
    let stores = futures_join_all(opening).await.into_iter().collect::<Result<Vec<_>>>().unwrap();
    (stores, schema)
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn drop_schema(store: &PgStore, schema: &str) {
    sqlx::query(&format!("DROP SCHEMA {} CASCADE", quote_ident(schema))).execute(&store.pool).await.unwrap();
}

fn ev(id: &str, deliveries: Vec<NewDelivery>) -> NewEvent {
    NewEvent {
        id: id.into(),
        source: "src".into(),
        event_type: "t".into(),
        received_at: t0(),
        request_id: format!("req-{id}"),
        row: None,
        content_type: None,
        headers: json!({}),
        query: json!({}),
        body: json!({"id": id}),
        body_text: None,
        dedupe: None,
        deliveries,
    }
}

fn pending(key: Option<&str>) -> NewDelivery {
    NewDelivery { flow: "f".into(), status: Status::Pending, order_key: key.map(Into::into), error: None }
}

fn attempt(delivery_id: i64) -> NewAttempt {
    NewAttempt {
        delivery_id,
        step: 0,
        try_no: 1,
        started_at: t0(),
        duration_ms: 1,
        outcome: "success",
        method: "POST".into(),
        url: "http://x/".into(),
        request_headers: vec![],
        request_body: vec![],
        response: None,
        error: None,
    }
}

#[test]
fn sqlstates_that_mean_the_database_is_unavailable() {
    for code in ["08006", "08001", "53100", "53300", "57P01", "57P03", "58030", "25006"] {
        assert!(is_unavailable_code(Some(code)), "{code}");
    }
    for code in ["23505", "40P01", "57014", "42P01"] {
        assert!(!is_unavailable_code(Some(code)), "{code}");
    }
    assert!(!is_unavailable_code(None));
}

#[tokio::test]
async fn the_password_is_never_shown() {
    let url = "postgres://renkei:s3cret-pw@127.0.0.1:1/hub";
    let opts = PgConnectOptions::from_str(url).unwrap();
    let store =
        PgStore { pool: PgPoolOptions::new().connect_lazy_with(opts.clone()), target: describe(&opts), schema: None };
    let shown = format!("{store:?}");
    assert_eq!(shown, r#"PgStore { target: "renkei@127.0.0.1:1/hub", schema: None }"#);
    // Nothing listens on port 1: the open gives up after the acquire timeout, as a 503 would.
    let err = PgStore::open(url, t0()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
}

#[tokio::test]
async fn nodes_starting_together_migrate_once() {
    let Some(url) = test_url("nodes_starting_together_migrate_once") else { return };
    let (stores, schema) = nodes(&url, 4).await;
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM renkei_migrations").fetch_one(&stores[3].pool).await.unwrap();
    assert_eq!(applied, MIGRATIONS.len() as i64);
    // Each node keeps the config it loaded only when it differs from the last one kept.
    futures_join_all(stores.iter().map(|s| {
        let pool = s.pool.clone();
        async move { queue::save_config(&pool, "a: 1", t0()).await }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>>>()
    .unwrap();
    let kept: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM config_revisions").fetch_one(&stores[0].pool).await.unwrap();
    assert_eq!(kept, 1);
    drop_schema(&stores[0], &schema).await;
}

#[tokio::test]
async fn concurrent_claims_never_share_a_delivery_or_overtake_a_key() {
    let Some(url) = test_url("concurrent_claims_never_share_a_delivery_or_overtake_a_key") else { return };
    let (stores, schema) = nodes(&url, 3).await;
    let events = (0..150)
        .map(|i| ev(&format!("e{i:03}"), vec![pending(None), pending((i % 3 == 0).then_some("K"))]))
        .collect::<Vec<_>>();
    stores[0].ingest(events, t0()).await.unwrap();

    let stores: Vec<Arc<PgStore>> = stores.into_iter().map(Arc::new).collect();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    // The key's delivery in flight now, and the key's deliveries in the order they were claimed.
    let key_in_flight = Arc::new(Mutex::new(None::<i64>));
    let key_order = Arc::new(Mutex::new(Vec::new()));
    let workers = stores.iter().enumerate().map(|(n, store)| {
        let (store, seen) = (store.clone(), seen.clone());
        let (key_in_flight, key_order) = (key_in_flight.clone(), key_order.clone());
        async move {
            let owner = format!("node{n}");
            let mut idle = 0;
            while idle < 3 {
                let claimed = store.claim(&owner, t0(), t0() + Duration::minutes(5), 7, &[]).await.unwrap();
                idle = if claimed.is_empty() { idle + 1 } else { 0 };
                for c in claimed {
                    let id = c.delivery.id;
                    assert!(seen.lock().unwrap().insert(id), "delivery {id} claimed twice");
                    if c.delivery.order_key.is_some() {
                        let before = key_in_flight.lock().unwrap().replace(id);
                        assert_eq!(before, None, "two deliveries of key K in flight at once");
                        key_order.lock().unwrap().push(id);
                        // Cleared before the write that lets the next one go.
                        *key_in_flight.lock().unwrap() = None;
                    }
                    let done = Transition::Succeeded { outputs: json!([]) };
                    store.record_attempt(&owner, attempt(id), done, t0()).await.unwrap();
                }
                tokio::task::yield_now().await;
            }
        }
    });
    futures_join_all(workers).await;

    assert_eq!(seen.lock().unwrap().len(), 300);
    let order = key_order.lock().unwrap().clone();
    assert_eq!(order.len(), 50);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "key K out of order: {order:?}");
    let stats = stores[1].queue_stats(t0()).await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (0, 0));
    drop_schema(&stores[0], &schema).await;
}

/// One node ingests deliveries of two keys while two others claim and close them (succeeded, or dead and
/// retried): each key's head moves on every close, in a race with the ingests behind it. A head lost there
/// would leave the key's later deliveries held with nothing to free them; a second head would let one overtake.
#[tokio::test]
async fn a_key_s_head_moves_on_while_its_next_deliveries_arrive() {
    let Some(url) = test_url("a_key_s_head_moves_on_while_its_next_deliveries_arrive") else { return };
    let (stores, schema) = nodes(&url, 3).await;
    let stores: Vec<Arc<PgStore>> = stores.into_iter().map(Arc::new).collect();
    const EVENTS: usize = 240;
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let ingesting = {
        let store = stores[0].clone();
        tokio::spawn(async move {
            for i in 0..EVENTS / 2 {
                let batch = vec![
                    ev(&format!("a{i:03}"), vec![pending(Some(["K", "L"][i % 2]))]),
                    ev(&format!("b{i:03}"), vec![pending(Some(["L", "K"][i % 2]))]),
                ];
                store.ingest(batch, t0()).await.unwrap();
            }
        })
    };
    let workers = stores[1..].iter().enumerate().map(|(n, store)| {
        let (store, delivered) = (store.clone(), delivered.clone());
        async move {
            let owner = format!("node{n}");
            for turn in 0.. {
                assert!(turn < 100_000, "not all delivered: {} of {EVENTS}", delivered.lock().unwrap().len());
                if delivered.lock().unwrap().len() == EVENTS {
                    break;
                }
                let claimed = store.claim(&owner, t0(), t0() + Duration::minutes(5), 4, &[]).await.unwrap();
                for c in claimed {
                    let id = c.delivery.id;
                    if id % 5 == 0 && c.delivery.attempts == 0 {
                        // Dead first, then retried: the key's head leaves and comes back.
                        let dead = Transition::Dead { tries: 1, error: "x".into() };
                        store.record_attempt(&owner, attempt(id), dead, t0()).await.unwrap();
                        store.retry_delivery(id, t0()).await.unwrap();
                        continue;
                    }
                    let key = c.delivery.order_key.clone().unwrap();
                    delivered.lock().unwrap().push((key, id));
                    let done = Transition::Succeeded { outputs: json!([]) };
                    store.record_attempt(&owner, attempt(id), done, t0()).await.unwrap();
                }
                tokio::task::yield_now().await;
            }
        }
    });
    let workers = futures_join_all(workers);
    let (_, ingested) = tokio::join!(workers, ingesting);
    ingested.unwrap();

    let delivered = delivered.lock().unwrap().clone();
    for key in ["K", "L"] {
        let ids: Vec<i64> = delivered.iter().filter(|(k, _)| k == key).map(|(_, id)| *id).collect();
        assert_eq!(ids.len(), EVENTS / 2);
        // A dead delivery lets the next go; retried, it goes when it is the oldest again: the others in order.
        let kept: Vec<i64> = ids.iter().copied().filter(|id| id % 5 != 0).collect();
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "key {key} out of order: {ids:?}");
    }
    let stats = stores[1].queue_stats(t0()).await.unwrap();
    assert_eq!((stats.pending, stats.in_flight), (0, 0));
    drop_schema(&stores[0], &schema).await;
}

#[tokio::test]
async fn a_later_ingest_of_a_key_waits_for_the_earlier_one_to_commit() {
    let Some(url) = test_url("a_later_ingest_of_a_key_waits_for_the_earlier_one_to_commit") else { return };
    let (stores, schema) = nodes(&url, 2).await;
    let [first, second]: [PgStore; 2] = stores.try_into().unwrap();
    let second = Arc::new(second);

    // Node 1 is inside its ingest of e1 (key K): inserted, not yet committed.
    let mut tx = first.pool.begin().await.unwrap();
    queue::ingest_in(&mut tx, &[ev("e1", vec![pending(Some("K"))])], t0()).await.unwrap();
    // Node 2's ingest of e2 (key K) waits for it instead of taking an id and committing first.
    let later = {
        let second = second.clone();
        tokio::spawn(async move { second.ingest(vec![ev("e2", vec![pending(Some("K"))])], t0()).await })
    };
    let mut waiting = 0;
    for _ in 0..500 {
        waiting = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
               AND classid = hashtext('renkei:order_key:' || current_schema())::oid",
        )
        .fetch_one(&second.pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(waiting, 1, "the second ingest waits on the key's lock");
    assert!(!later.is_finished());
    assert!(second.claim("w", t0(), t0() + Duration::minutes(1), 10, &[]).await.unwrap().is_empty());

    tx.commit().await.unwrap();
    later.await.unwrap().unwrap();
    let all = second.list_deliveries(&DeliveryFilter::default()).await.unwrap();
    let ids: Vec<(&str, i64)> = all.iter().map(|d| (d.event_id.as_str(), d.id)).collect();
    assert!(ids[0].0 == "e2" && ids[1].0 == "e1" && ids[0].1 > ids[1].1, "ids in commit order: {ids:?}");
    let c = second.claim("w", t0(), t0() + Duration::minutes(1), 10, &[]).await.unwrap();
    assert_eq!(c.iter().map(|c| c.event.id.as_str()).collect::<Vec<_>>(), ["e1"]);
    drop_schema(&first, &schema).await;
}

#[tokio::test]
async fn purge_leaves_an_event_being_replayed() {
    let Some(url) = test_url("purge_leaves_an_event_being_replayed") else { return };
    let (stores, schema) = nodes(&url, 1).await;
    let s = &stores[0];
    let skipped = NewDelivery { flow: "f".into(), status: Status::Skipped, order_key: None, error: None };
    s.ingest(vec![ev("e1", vec![skipped.clone()]), ev("e2", vec![skipped])], t0()).await.unwrap();
    // A replay of e1 is in progress (it holds the event row), so purge skips e1 rather than wait or delete it.
    let mut replay = s.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM events WHERE id = 'e1' FOR SHARE").execute(&mut *replay).await.unwrap();
    let later = t0() + Duration::days(40);
    assert_eq!(s.purge(later, later).await.unwrap(), 1);
    assert!(s.get_event("e1").await.is_ok());
    replay.rollback().await.unwrap();
    assert_eq!(s.purge(later, later).await.unwrap(), 1);
    drop_schema(s, &schema).await;
}

#[tokio::test]
async fn text_search_and_nul_as_sqlite_has_them() {
    let Some(url) = test_url("text_search_and_nul_as_sqlite_has_them") else { return };
    let (stores, schema) = nodes(&url, 1).await;
    let pg = &stores[0];
    let lite = SqliteStore::open("sqlite::memory:", t0()).await.unwrap();
    let mut e = ev("e1", vec![pending(Some("order\0 7"))]);
    e.body = json!({"name": "Yamada ÄBC", "note": "50%_off"});
    e.event_type = "form\0submit".into();
    let both = [("postgres", pg as &dyn Store), ("sqlite", &lite)];
    for (_, s) in both {
        s.ingest(vec![e.clone()], t0()).await.unwrap();
    }
    // SQLite's LIKE folds ASCII case only; the PostgreSQL backend matches it.
    for (q, hits) in [("yamada", 1), ("YAMADA", 1), ("äbc", 0), ("ÄBC", 1), ("50%_", 1), ("50%x", 0), ("e1", 1)] {
        let f = EventFilter { q: Some(q.into()), ..Default::default() };
        for (backend, s) in both {
            assert_eq!(s.list_events(&f).await.unwrap().len(), hits, "{q} on {backend}");
        }
    }
    // PostgreSQL text cannot hold U+0000: it is kept as U+FFFD instead of refusing the event.
    let stored = pg.get_event("e1").await.unwrap();
    assert_eq!(stored.event_type, "form\u{FFFD}submit");
    let d = pg.list_deliveries(&DeliveryFilter::default()).await.unwrap();
    assert_eq!(d[0].order_key.as_deref(), Some("order\u{FFFD} 7"));
    drop_schema(pg, &schema).await;
}

/// `sslmode=require` in the URL: the connection is encrypted (the test server offers TLS, as Debian's does
/// by default); `sslmode=verify-full` checks the certificate, which a self-signed test certificate fails.
#[tokio::test]
async fn tls_is_required_when_the_url_says_so() {
    let Some(url) = test_url("tls_is_required_when_the_url_says_so") else { return };
    let sep = if url.contains('?') { '&' } else { '?' };
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    let store = PgStore::open_in_schema(&format!("{url}{sep}sslmode=require"), &schema, t0()).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert!(ssl, "the connection is encrypted");
    let plain = PgStore::open_in_schema(&format!("{url}{sep}sslmode=disable"), &schema, t0()).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&plain.pool)
        .await
        .unwrap();
    assert!(!ssl, "sslmode=disable: not encrypted");
    let verified = PgStore::open_in_schema(&format!("{url}{sep}sslmode=verify-full"), &schema, t0()).await;
    let e = verified.expect_err("a self-signed certificate does not verify").to_string();
    assert!(e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"), "{e}");
}

/// A schema of version 6 (before `held`) with deliveries queued behind ordering-key heads: opening it applies
/// migration 7, which holds every open delivery of a key but the oldest, and a claim then takes only the heads.
#[tokio::test]
async fn a_version_6_schema_opens_with_its_queued_deliveries_held_behind_their_heads() {
    let Some(url) = test_url("a_version_6_schema_opens_with_its_queued_deliveries_held_behind_their_heads") else {
        return;
    };
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    {
        let old = PgStore::open_in_schema_at(&url, &schema, t0(), 6).await.unwrap();
        let mut tx = old.pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO events (id, source, event_type, status, http_status, received_at, request_id, headers, query, body)
             VALUES ('e1', 's', 't', 'accepted', 202, $1, 'r', '{}', '{}', '{}')",
        )
        .bind(ms(t0()))
        .execute(&mut *tx)
        .await
        .unwrap();
        let later = ms(t0() + Duration::days(1));
        for (id, flow, status, key, due) in crate::fixtures::QUEUED_BEFORE_HELD {
            sqlx::query(
                "INSERT INTO deliveries (id, event_id, flow, status, order_key, next_at, created_at, updated_at)
                 VALUES ($1, 'e1', $2, $3, $4, $5, $5, $5)",
            )
            .bind(id)
            .bind(flow)
            .bind(status)
            .bind(key)
            .bind(if due { ms(t0()) } else { later })
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let s = PgStore::open_in_schema(&url, &schema, t0()).await.unwrap();
    let version: i64 =
        sqlx::query_scalar("SELECT max(version) FROM renkei_migrations").fetch_one(&s.pool).await.unwrap();
    assert_eq!(version, MIGRATIONS.last().unwrap().0);
    let held: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM deliveries WHERE held ORDER BY id").fetch_all(&s.pool).await.unwrap();
    assert_eq!(held, crate::fixtures::HELD_AFTER_MIGRATION);
    let claimed = s.claim("w1", t0(), t0() + Duration::seconds(10), 10, &[]).await.unwrap();
    let mut ids: Vec<i64> = claimed.iter().map(|c| c.delivery.id).collect();
    ids.sort();
    assert_eq!(ids, crate::fixtures::CLAIMED_AFTER_MIGRATION);
    drop_schema(&s, &schema).await;
}
