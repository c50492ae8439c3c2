//! `renkei migrate-store`'s copy (`renkei_store::migrate`): a SQLite installation filled through the Store trait
//! reads back the same through the Store trait on PostgreSQL, and work continues there where it stopped.
//!
//! Needs `RENKEI_TEST_POSTGRES_URL` (as the conformance suite); skipped with a printed line when it is unset.
//! The target is a fresh schema (`m_<uuid>`), named by the URL's `schema` parameter, dropped when the test passes.

use chrono::{DateTime, Duration, Utc};
use renkei_core::delivery::Status;
use renkei_store::migrate::{self, Options, Progress};
use renkei_store::postgres::PgStore;
use renkei_store::sqlite::SqliteStore;
use renkei_store::*;
use serde_json::json;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z").unwrap().with_timezone(&Utc)
}

fn ev(id: &str, deliveries: Vec<NewDelivery>) -> NewEvent {
    NewEvent {
        id: id.into(),
        source: "shop".into(),
        event_type: "order.created".into(),
        received_at: t0(),
        request_id: format!("req-{id}"),
        row: None,
        content_type: Some("application/json".into()),
        headers: json!({"user-agent": "test", "x-b": "2", "x-a": "1"}),
        query: json!({"tag": ["a", "b"]}),
        body: json!({"id": id, "name": "山田 太郎", "z": 1, "a": [1, 2]}),
        body_text: None,
        dedupe: None,
        deliveries,
    }
}

fn delivery(flow: &str, status: Status, key: Option<&str>) -> NewDelivery {
    NewDelivery { flow: flow.into(), status, order_key: key.map(Into::into), error: None }
}

fn attempt(delivery_id: i64, step: u32, try_no: u32, status: Option<u16>) -> NewAttempt {
    NewAttempt {
        delivery_id,
        step,
        try_no,
        started_at: t0() + Duration::milliseconds(i64::from(try_no)),
        duration_ms: 40 + u64::from(try_no),
        outcome: match status {
            Some(200) => "success",
            Some(404) => "permanent",
            _ => "transient",
        },
        method: "POST".into(),
        url: format!("https://example.test/in/{delivery_id}?token=[REDACTED]"),
        request_headers: vec![("authorization".into(), "[REDACTED]".into()), ("x-id".into(), "7".into())],
        // Shift_JIS "申請" and a byte that is no text at all.
        request_body: vec![0x90, 0x5c, 0x90, 0xbf, 0xff],
        response: status.map(|s| RecordedResponse {
            status: s,
            headers: vec![("content-type".into(), "application/json".into())],
            body: format!("{{\"status\":{s}}}").into_bytes(),
            truncated: s == 503,
        }),
        error: status.is_none().then(|| "connection refused".to_owned()),
    }
}

/// Deliveries claimed by `owner` at `now`, by flow.
async fn claim(s: &dyn Store, owner: &str, now: DateTime<Utc>) -> Vec<(String, i64)> {
    let mut c: Vec<_> = s
        .claim(owner, now, now + Duration::minutes(2), 100, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.delivery.flow, c.delivery.id))
        .collect();
    c.sort();
    c
}

fn id_of(claimed: &[(String, i64)], flow: &str) -> i64 {
    claimed.iter().find(|(f, _)| f == flow).unwrap_or_else(|| panic!("{flow} not in {claimed:?}")).1
}

/// An installation with history of every kind: a retrying delivery holding its ordering key and a later one
/// waiting behind it, a skipped one, a dead one with its attempts, one dead at ingest, a finished two-step one,
/// one left in flight, a split request, a rejected request, a dedupe key, config revisions, state and counters,
/// a token, a user and their audit entries.
async fn fill(s: &dyn Store) {
    let session = SessionRecord { id_hash: "ab12".into(), data: "{}".into(), created_at: t0(), last_seen: t0() };
    s.put_session(&session, t0() - Duration::hours(12)).await.unwrap();
    let mut e1 = ev("e1", vec![delivery("keyed", Status::Pending, Some("A")), delivery("skip", Status::Skipped, None)]);
    e1.dedupe = Some(Dedupe { key: "1001:submit".into(), expires_at: t0() + Duration::days(7) });
    let e2 = ev("e2", vec![delivery("keyed", Status::Pending, Some("A"))]);
    let mut rows = Vec::new();
    for (row, flow) in [(1, "dies"), (2, "steps")] {
        let mut e = ev(&format!("e3-{row}"), vec![delivery(flow, Status::Pending, None)]);
        e.request_id = "req-e3".into();
        e.row = Some(row);
        e.content_type = Some("text/csv; charset=Shift_JIS".into());
        e.body = json!({"顧客コード": format!("C{row}"), "金額": "1,200"});
        rows.push(e);
    }
    let e4 = ev(
        "e4",
        vec![NewDelivery {
            flow: "broken".into(),
            status: Status::Dead,
            order_key: None,
            error: Some("template: undefined value body.x".into()),
        }],
    );
    let e5 = ev("e5", vec![delivery("held", Status::Pending, None)]);
    s.ingest(vec![e1, e2], t0()).await.unwrap();
    s.ingest(rows, t0()).await.unwrap();
    s.ingest(vec![e4, e5], t0()).await.unwrap();
    s.record_rejected(Rejected {
        id: "r1".into(),
        source: "shop".into(),
        received_at: t0() + Duration::seconds(1),
        http_status: 401,
        reason: "bad token".into(),
        content_type: Some("text/csv".into()),
        headers: json!({"user-agent": "curl"}),
        query: json!({}),
        raw: vec![0x82, 0xa0, 0x00, 0xff],
        raw_truncated: true,
    })
    .await
    .unwrap();

    let claimed = claim(s, "w1", t0()).await;
    assert_eq!(claimed.len(), 4, "keyed (first of A), dies, steps, held: {claimed:?}");
    let keyed = id_of(&claimed, "keyed");
    let retry = Transition::Retry { at: t0() + Duration::seconds(30), tries: 1, error: "HTTP 503".into() };
    s.record_attempt("w1", attempt(keyed, 0, 1, Some(503)), retry, t0()).await.unwrap();

    let dies = id_of(&claimed, "dies");
    let soon = Transition::Retry { at: t0(), tries: 1, error: "connection refused".into() };
    s.record_attempt("w1", attempt(dies, 0, 1, None), soon, t0()).await.unwrap();
    let again = claim(s, "w1", t0() + Duration::seconds(1)).await;
    assert_eq!(again, [("dies".to_owned(), dies)]);
    let dead = Transition::Dead { tries: 2, error: "HTTP 404".into() };
    s.record_attempt("w1", attempt(dies, 0, 2, Some(404)), dead, t0() + Duration::seconds(1)).await.unwrap();

    let steps = id_of(&claimed, "steps");
    let out1 = json!([{"status": 200, "body": {"id": "7", "revision": "1"}}]);
    let advance = Transition::Advance { step: 1, outputs: out1 };
    s.record_attempt("w1", attempt(steps, 0, 1, Some(200)), advance, t0()).await.unwrap();
    let out2 = json!([{"status": 200, "body": {"id": "7", "revision": "1"}}, {"status": 200, "body": {}}]);
    s.record_attempt("w1", attempt(steps, 1, 1, Some(200)), Transition::Succeeded { outputs: out2 }, t0())
        .await
        .unwrap();

    s.save_config("storage: sqlite://renkei.db\n", t0()).await.unwrap();
    s.save_config("storage: sqlite://renkei.db\nworker: { poll: 2s }\n", t0() + Duration::minutes(1)).await.unwrap();
    s.put_state("poll:kintone-orders", "{\"revision\": 12}", t0()).await.unwrap();
    s.add_count("kintone:requests:2026-11-22:example.cybozu.com:12", 3).await.unwrap();
    s.add_count("kintone:requests:2026-11-22:example.cybozu.com:13", 1).await.unwrap();

    let audit = |action: &str, target: &str| NewAudit {
        at: t0(),
        actor: "cli".into(),
        action: action.into(),
        target: target.into(),
        detail: json!({"role": "viewer", "z": 1, "a": 2}),
    };
    let token = NewToken {
        name: "ci".into(),
        role: "viewer".into(),
        hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        created_at: t0(),
        expires_at: Some(t0() + Duration::days(90)),
    };
    s.create_token(token, audit("token.created", "ci")).await.unwrap();
    let user = NewUser {
        name: "山田".into(),
        role: "admin".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: t0(),
    };
    s.add_user(user, audit("user.added", "山田")).await.unwrap();
    s.append_audit(audit("delivery.retried", "3")).await.unwrap();
}

/// Everything the Store trait shows of a store, bytes included.
async fn snapshot(s: &dyn Store) -> serde_json::Value {
    let events = s.list_events(&EventFilter { limit: 1000, ..Default::default() }).await.unwrap();
    let mut raw = Vec::new();
    for e in &events {
        raw.push(json!({"id": e.id, "raw": s.get_event(&e.id).await.unwrap().raw}));
    }
    let deliveries = s.list_deliveries(&DeliveryFilter { limit: 1000, ..Default::default() }).await.unwrap();
    let attempts = s.list_attempts(&AttemptFilter { limit: 1000, ..Default::default() }).await.unwrap();
    let bodies: Vec<_> =
        attempts.iter().map(|a| json!([a.request.body, a.response.as_ref().map(|r| r.body.clone())])).collect();
    json!({
        "events": events,
        "raw": raw,
        "deliveries": deliveries,
        "attempts": attempts,
        "bodies": bodies,
        "state": s.get_state("poll:kintone-orders").await.unwrap(),
        "tokens": s.list_tokens().await.unwrap(),
        "users": s.list_users().await.unwrap(),
        "password": s.get_user("山田").await.unwrap().password_hash,
        "audit": s.list_audit(&AuditFilter { limit: 1000, ..Default::default() }).await.unwrap(),
        "config": s.config_revisions().await.unwrap().into_iter().map(|r| (r.id, r.loaded_at, r.text)).collect::<Vec<_>>(),
        "counts": s.counts("").await.unwrap(),
        "queue": s.queue_stats(t0()).await.unwrap(),
        "next_due": s.next_due().await.unwrap(),
    })
}

/// The tables of the SQLite schema, but the migrations' own bookkeeping.
async fn sqlite_tables(file: &std::path::Path) -> Vec<String> {
    let url = format!("sqlite://{}?mode=ro", file.display());
    let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let mut names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('renkei_migrations', 'sqlite_sequence')",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    names.sort();
    names
}

fn with_param(url: &str, k: &str, v: &str) -> String {
    format!("{url}{}{k}={v}", if url.contains('?') { '&' } else { '?' })
}

#[tokio::test]
async fn sqlite_history_moves_to_postgres_as_it_was_and_work_continues_there() {
    let Ok(url) = std::env::var("RENKEI_TEST_POSTGRES_URL") else {
        println!("skipped migrate: RENKEI_TEST_POSTGRES_URL is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("renkei.db");
    let src = SqliteStore::open(&format!("sqlite://{}", file.display()), t0()).await.unwrap();
    fill(&src).await;

    let schema = format!("m_{}", uuid::Uuid::now_v7().simple());
    let dst = PgStore::open(&with_param(&url, "schema", &schema), t0()).await.unwrap();
    let mut seen: Vec<Progress> = Vec::new();
    // Two rows a batch: every table takes several.
    let opts = Options { batch: 2, replace: false };
    let report = migrate::sqlite_to_postgres(&src, &dst, &opts, &mut |p| seen.push(p)).await.unwrap();
    assert_eq!(
        report.tables,
        [
            ("events", 7),
            ("dedupe", 1),
            ("deliveries", 7),
            ("attempts", 5),
            ("config_revisions", 2),
            ("kv_state", 1),
            ("console_sessions", 1),
            ("counters", 2),
            ("api_tokens", 1),
            ("users", 1),
            ("audit_log", 3)
        ]
    );
    let mut copied: Vec<String> = report.tables.iter().map(|(t, _)| t.to_string()).collect();
    copied.sort();
    assert_eq!(copied, sqlite_tables(&file).await, "every table of the schema is copied");
    for (table, n) in &report.tables {
        let last = seen.iter().rev().find(|p| p.table == *table).unwrap();
        assert_eq!((last.copied, last.total), (*n, *n), "{table}");
    }
    assert!(seen.iter().filter(|p| p.table == "events").count() > 3, "copied in batches");

    let before = snapshot(&src).await;
    assert_eq!(snapshot(&dst).await, before);
    assert_eq!(
        before["queue"],
        json!({"pending": 1, "retrying": 1, "in_flight": 1, "dead": 2, "oldest_open_at": t0()})
    );

    // Work continues on PostgreSQL where it stopped. The dedupe key holds:
    let mut dup = ev("e9", vec![delivery("keyed", Status::Pending, Some("A"))]);
    dup.dedupe = Some(Dedupe { key: "1001:submit".into(), expires_at: t0() + Duration::days(7) });
    let out = dst.ingest(vec![dup], t0() + Duration::seconds(5)).await.unwrap();
    assert_eq!(out, [Ingested::Duplicate { event_id: "e1".into() }]);
    // the retrying delivery waits for its time and then still holds key A (the later one stays behind it),
    assert!(claim(&dst, "pg", t0() + Duration::seconds(29)).await.is_empty());
    let first = claim(&dst, "pg", t0() + Duration::seconds(30)).await;
    assert_eq!(first.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["keyed"]);
    let keyed = dst.get_delivery(first[0].1).await.unwrap();
    assert_eq!((keyed.event_id.as_str(), keyed.tries, keyed.attempts), ("e1", 1, 1));
    // the delivery left in flight returns when its lease runs out,
    let held = claim(&dst, "pg", t0() + Duration::minutes(2)).await;
    assert_eq!(held.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["held"]);
    // and new rows take ids after the copied ones.
    let max = before["deliveries"].as_array().unwrap().iter().map(|d| d["id"].as_i64().unwrap()).max().unwrap();
    dst.ingest(vec![ev("e10", vec![delivery("new", Status::Pending, None)])], t0()).await.unwrap();
    let new = dst
        .list_deliveries(&DeliveryFilter { event_id: Some("e10".into()), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(new[0].id, max + 1);
    let a = attempt(first[0].1, 0, 2, Some(200));
    dst.record_attempt("pg", a, Transition::Succeeded { outputs: json!([{}]) }, t0() + Duration::minutes(2))
        .await
        .unwrap();
    let attempts = dst.list_attempts(&AttemptFilter { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(attempts.iter().map(|a| a.id).max(), Some(6), "attempt ids continue too");
    dst.save_config("third\n", t0()).await.unwrap();
    assert_eq!(dst.config_revisions().await.unwrap().last().unwrap().id, 3, "config revision ids continue");
    dst.append_audit(NewAudit {
        at: t0(),
        actor: "cli".into(),
        action: "x".into(),
        target: "y".into(),
        detail: json!({}),
    })
    .await
    .unwrap();
    let audit = dst.list_audit(&AuditFilter { limit: 1, ..Default::default() }).await.unwrap();
    assert_eq!(audit[0].id, 4, "audit ids continue");

    // A target that holds rows is refused, whole; with `replace` it is emptied and copied again.
    let refused = migrate::sqlite_to_postgres(&src, &dst, &Options::default(), &mut |_| {}).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Conflict(m) if m.contains("events 8") && m.contains("deliveries 8")),
        "{refused}"
    );
    let replace = Options { replace: true, ..Options::default() };
    let again = migrate::sqlite_to_postgres(&src, &dst, &replace, &mut |_| {}).await.unwrap();
    assert_eq!(again, report);
    assert_eq!(snapshot(&dst).await, before);

    drop(dst);
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE")).execute(&mut c).await.unwrap();
}
