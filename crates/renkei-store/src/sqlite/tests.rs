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
            body_text: None,
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
        body_text: None,
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

/// The group writer keeps the connection from batch to batch while jobs wait (`group::HOLD`); a write of
/// another kind still gets its turn while the queue never runs dry. 300 senders keep more jobs queued than a batch
/// takes (256), so the writer always finds some waiting: only the bound on holding lets `put_state` in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_of_another_kind_gets_its_turn_while_ingests_keep_coming() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("h.db").display());
    let now = Utc::now();
    let store = std::sync::Arc::new(SqliteStore::open(&url, now).await.unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for t in 0..300 {
        let (s, stop) = (store.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                s.ingest(vec![keyed(&format!("t{t}-{n}"), None, now)], now).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    // The senders are under way: some of their events are stored.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(&store.reader).await.unwrap();
        if n >= 1000 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the senders stored only {n} events");
    }
    for i in 0..5 {
        let value = i.to_string();
        let put = store.put_state("k", &value, now);
        tokio::time::timeout(std::time::Duration::from_secs(20), put)
            .await
            .unwrap_or_else(|_| panic!("put_state {i} never had its turn while ingests kept coming"))
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for t in senders {
        sent += t.await.unwrap();
    }
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(&store.reader).await.unwrap();
    assert_eq!(stored as u64, sent, "every ingest answered is stored");
    assert_eq!(store.get_state("k").await.unwrap().as_deref(), Some("4"));
}

/// Everything the queue keeps, as text, to compare two stores row for row.
async fn dump(s: &SqliteStore) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT json_array(id, source, status, received_at, body, headers, query, dedupe_key) FROM events ORDER BY id",
        "SELECT json_array(source, key, event_id, expires_at) FROM dedupe ORDER BY source, key",
        "SELECT json_array(id, event_id, flow, status, order_key, step, tries, attempts, outputs, next_at,
                lease_owner, lease_until, last_error, created_at, updated_at) FROM deliveries ORDER BY id",
        "SELECT json_array(id, delivery_id, step, try_no, outcome, url, request_headers, hex(request_body),
                response_status, response_headers, hex(response_body), response_truncated, error)
         FROM attempts ORDER BY id",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(&s.writer).await.unwrap();
        out.extend(rows);
    }
    out
}

fn keyed(id: &str, key: Option<&str>, at: chrono::DateTime<Utc>) -> NewEvent {
    NewEvent {
        id: id.into(),
        source: "s".into(),
        event_type: "t".into(),
        received_at: at,
        request_id: format!("r-{id}"),
        row: None,
        content_type: Some("application/json".into()),
        headers: json!({ "x-n": id }),
        query: json!({}),
        body: json!({ "id": id, "名前": "山田" }),
        body_text: None,
        dedupe: key.map(|k| Dedupe { key: k.into(), expires_at: at + Duration::hours(1) }),
        deliveries: vec![
            NewDelivery { flow: "f".into(), status: Status::Pending, order_key: None, error: None },
            NewDelivery { flow: "g".into(), status: Status::Dead, order_key: None, error: Some("bad".into()) },
        ],
    }
}

/// An attempt's request headers, request body, response headers, response body and error, as stored.
type StoredAttempt = (String, Vec<u8>, Option<String>, Option<Vec<u8>>, Option<String>);

fn tried(delivery_id: i64, status: u16) -> NewAttempt {
    NewAttempt {
        delivery_id,
        step: 0,
        try_no: 1,
        started_at: Utc::now(),
        duration_ms: 3,
        outcome: if status == 200 { "success" } else { "transient" },
        method: "POST".into(),
        url: format!("http://127.0.0.1/{delivery_id}"),
        request_headers: vec![("x".into(), "1".into())],
        request_body: vec![0x90, 0x5c],
        response: Some(RecordedResponse { status, headers: vec![], body: b"{}".to_vec(), truncated: false }),
        error: None,
    }
}

/// The jobs as one multi-row batch (`batch.rs`) and one at a time (`queue.rs`, each a batch of one, as the group
/// commit's fallback runs them) leave the same rows and give the same answers: dedupe within the batch and against live and expired keys, every kind of transition, an
/// attempt whose lease another worker took.
#[tokio::test]
async fn a_batch_stores_what_the_jobs_one_by_one_would() {
    let t0 = Utc::now();
    let mut dumps = Vec::new();
    let mut answers = Vec::new();
    for batched in [true, false] {
        let s = SqliteStore::open("sqlite::memory:", t0).await.unwrap();
        // Before the batch: a live key C, an expired key D, four deliveries claimed by w1, one of them (the
        // fourth) then taken over by w2 after its lease ran out.
        let mut live = keyed("old-c", Some("C"), t0);
        live.dedupe.as_mut().unwrap().expires_at = t0 + Duration::hours(2);
        let mut expired = keyed("old-d", Some("D"), t0 - Duration::hours(3));
        expired.dedupe.as_mut().unwrap().expires_at = t0 - Duration::hours(2);
        s.ingest(vec![live, expired], t0).await.unwrap();
        for i in 0..4 {
            s.ingest(vec![keyed(&format!("w{i}"), None, t0)], t0).await.unwrap();
        }
        let claimed = s.claim("w1", t0, t0 + Duration::seconds(10), 10, &[]).await.unwrap();
        assert_eq!(claimed.len(), 6);
        let ids: Vec<i64> = claimed.iter().map(|c| c.delivery.id).collect();
        let later = t0 + Duration::seconds(20);
        let w2 = s.claim("w2", later, later + Duration::seconds(10), 1, &[]).await.unwrap();
        assert_eq!(w2[0].delivery.id, ids[0]);

        let jobs_events: Vec<Vec<queue::EventRow>> = [
            vec![keyed("a1", Some("A"), later), keyed("a2", Some("A"), later)],
            vec![keyed("n1", None, later)],
            vec![keyed("c1", Some("C"), later), keyed("d1", Some("D"), later)],
        ]
        .into_iter()
        .map(|events| events.into_iter().map(queue::EventRow::new).collect())
        .collect();
        let transitions = [
            Transition::Succeeded { outputs: json!([{ "ok": 1 }]) },
            Transition::Retry { at: later + Duration::seconds(30), tries: 1, error: "503".into() },
            Transition::Dead { tries: 3, error: "gone".into() },
            Transition::Advance { step: 1, outputs: json!([{ "step": 0 }]) },
        ];
        // The first delivery was taken over by w2; the next four get one transition each. Their headers and
        // bodies differ in length and bytes, and one has no response.
        let mut attempts: Vec<(NewAttempt, &Transition)> = std::iter::once((tried(ids[0], 200), &transitions[0]))
            .chain(ids[1..5].iter().zip(&transitions).map(|(id, t)| (tried(*id, 200), t)))
            .collect();
        for (i, (a, _)) in attempts.iter_mut().enumerate() {
            a.request_headers.push(("x-i".into(), "値".repeat(i)));
            a.request_body = [a.request_body.as_slice(), "山田".repeat(i * 100).as_bytes()].concat();
            if let Some(r) = &mut a.response {
                r.headers = vec![("x-r".into(), i.to_string()); i];
                r.body = vec![b'r'; i * 7];
            }
        }
        attempts[2].0.response = None;
        attempts[2].0.error = Some("connection reset".into());

        use sqlx::Connection;
        let mut conn = s.writer.acquire().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        let (ingested, recorded): (Vec<Vec<Ingested>>, Vec<String>) = if batched {
            let ij: Vec<batch::IngestJob> =
                jobs_events.iter().map(|e| batch::IngestJob { events: e, now: later }).collect();
            let aj: Vec<batch::AttemptJob> = attempts
                .iter()
                .map(|(a, t)| batch::AttemptJob { owner: "w1", attempt: a, transition: t, now: later })
                .collect();
            let ingested = batch::ingest(&mut tx, &ij).await.unwrap();
            let recorded = batch::attempts(&mut tx, &aj).await.unwrap().expect("no delivery twice");
            (ingested, recorded.iter().map(describe).collect())
        } else {
            let mut ingested = Vec::new();
            for e in &jobs_events {
                ingested.push(queue::ingest_in(&mut tx, e, later).await.unwrap());
            }
            let mut recorded = Vec::new();
            for (a, t) in &attempts {
                recorded.push(describe(&queue::record_attempt_in(&mut tx, "w1", a, t, later).await.unwrap()));
            }
            (ingested, recorded)
        };
        tx.commit().await.unwrap();
        drop(conn);
        assert_eq!(ingested[0][1], Ingested::Duplicate { event_id: "a1".into() });
        assert_eq!(ingested[2][0], Ingested::Duplicate { event_id: "old-c".into() });
        assert!(matches!(&ingested[2][1], Ingested::Stored { event_id, .. } if event_id == "d1"));
        assert!(recorded[0].starts_with("taken over"), "{recorded:?}");
        assert!(recorded[1..].iter().all(|r| r == "applied"), "{recorded:?}");
        answers.push((ingested, recorded));
        dumps.push(dump(&s).await);
        let stored: Vec<StoredAttempt> = sqlx::query_as(
            "SELECT request_headers, request_body, response_headers, response_body, error FROM attempts
             ORDER BY id DESC LIMIT 5",
        )
        .fetch_all(&s.writer)
        .await
        .unwrap();
        let sent: Vec<_> = attempts
            .iter()
            .rev()
            .map(|(a, _)| {
                let response = a.response.as_ref();
                (
                    serde_json::to_string(&a.request_headers).unwrap(),
                    a.request_body.clone(),
                    response.map(|r| serde_json::to_string(&r.headers).unwrap()),
                    response.map(|r| r.body.clone()),
                    a.error.clone(),
                )
            })
            .collect();
        assert_eq!(stored, sent, "batched: {batched}");
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(dumps[0], dumps[1]);
}

fn describe(r: &queue::Recorded) -> String {
    match r {
        queue::Recorded::Applied => "applied".into(),
        queue::Recorded::TakenOver(m) => format!("taken over: {m}"),
    }
}

/// Two attempts for one delivery in one batch are not merged: the batch says so and the jobs run one by one.
#[tokio::test]
async fn a_batch_with_two_attempts_of_one_delivery_runs_one_by_one() {
    let t0 = Utc::now();
    let s = SqliteStore::open("sqlite::memory:", t0).await.unwrap();
    s.ingest(vec![keyed("x", None, t0)], t0).await.unwrap();
    let id = s.claim("w1", t0, t0 + Duration::seconds(10), 1, &[]).await.unwrap()[0].delivery.id;
    let (a, b) = (tried(id, 500), tried(id, 200));
    let retry = Transition::Retry { at: t0, tries: 1, error: "500".into() };
    let done = Transition::Succeeded { outputs: json!([]) };
    let jobs = [
        batch::AttemptJob { owner: "w1", attempt: &a, transition: &retry, now: t0 },
        batch::AttemptJob { owner: "w1", attempt: &b, transition: &done, now: t0 },
    ];
    use sqlx::Connection;
    let mut conn = s.writer.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    assert!(batch::attempts(&mut tx, &jobs).await.unwrap().is_none());
}

/// The writer never checkpoints inside a commit; the checkpointer beside it copies the WAL into the file
/// (without it, with `wal_autocheckpoint=0`, the file would stay as small as the empty schema until close).
#[tokio::test]
async fn the_wal_is_copied_into_the_file_beside_the_writes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.db");
    let now = Utc::now();
    let s = SqliteStore::open(&format!("sqlite://{}", file.display()), now).await.unwrap();
    let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(&s.writer).await.unwrap();
    assert_eq!(autocheckpoint, 0, "the writer leaves checkpoints to the checkpointer");
    let empty = std::fs::metadata(&file).unwrap().len();
    let big = "x".repeat(100_000);
    for i in 0..100 {
        s.ingest(
            vec![keyed(&format!("b{i:03}"), None, now)]
                .into_iter()
                .map(|mut e| {
                    e.body = json!({ "big": big });
                    e
                })
                .collect(),
            now,
        )
        .await
        .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let len = std::fs::metadata(&file).unwrap().len();
        if len > empty + 10_000_000 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the file is still {len} bytes (empty: {empty})");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Under writes that never pause, the WAL still starts over (the writer finishes a checkpoint between two
/// batches every quarter second), so it stays the size of a fraction of a second of writes instead of growing with
/// all of them.
#[tokio::test]
async fn the_wal_starts_over_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.db");
    let wal = dir.path().join("w.db-wal");
    let now = Utc::now();
    let s = SqliteStore::open(&format!("sqlite://{}", file.display()), now).await.unwrap();
    let big = "x".repeat(200_000);
    let started = std::time::Instant::now();
    let mut written = 0u64;
    let mut i = 0;
    // Four seconds of writes without a pause: many chances for the writer to finish a checkpoint.
    while started.elapsed() < std::time::Duration::from_secs(4) {
        let mut e = keyed(&format!("w{i:06}"), None, now);
        e.body = json!({ "big": big });
        s.ingest(vec![e], now).await.unwrap();
        written += big.len() as u64;
        i += 1;
    }
    let wal_len = std::fs::metadata(&wal).unwrap().len();
    assert!(written > 10_000_000, "too little written to tell: {written} bytes");
    assert!(
        wal_len < written * 7 / 10,
        "the WAL grew with the writes: {wal_len} bytes of WAL for {written} bytes of bodies"
    );
}

/// Rows travel to the writer as parameters of a batch's text, padded with NULL rows (`batch.rs`): what is stored
/// must have the columns' own types and bytes: times and numbers as integers, JSON columns as text, bodies as
/// blobs byte for byte (UTF-8, Shift_JIS, NUL, empty), absent values as NULL.
#[tokio::test]
async fn rows_of_a_batch_are_stored_with_their_types_and_bytes() {
    let t0 = Utc::now();
    let s = SqliteStore::open("sqlite::memory:", t0).await.unwrap();
    let mut split = keyed("row-3", Some("K"), t0);
    split.row = Some(3);
    split.content_type = None;
    s.ingest(vec![split, keyed("plain", None, t0)], t0).await.unwrap();
    s.ingest(vec![keyed("more-1", None, t0), keyed("more-2", None, t0)], t0).await.unwrap();
    let claimed = s.claim("w1", t0, t0 + Duration::seconds(10), 10, &[]).await.unwrap();
    assert_eq!(claimed[0].event.row, Some(3));
    assert_eq!(claimed[0].event.body, Some(json!({ "id": "row-3", "名前": "山田" })));
    let bodies: [&[u8]; 4] = ["山田".as_bytes(), &[0x8e, 0x52, 0x93, 0x63], b"a\0b", b""];
    for (c, body) in claimed.iter().zip(bodies) {
        let mut a = tried(c.delivery.id, 200);
        a.request_body = body.to_vec();
        a.response = Some(RecordedResponse { status: 200, headers: vec![], body: body.to_vec(), truncated: true });
        s.record_attempt("w1", a, Transition::Succeeded { outputs: json!([]) }, t0).await.unwrap();
    }
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT json_array(typeof(received_at), typeof(row_no), typeof(content_type), typeof(headers),
                typeof(body), typeof(dedupe_key), http_status) FROM events WHERE id IN ('row-3', 'plain')
         ORDER BY id DESC",
    )
    .fetch_all(&s.writer)
    .await
    .unwrap();
    assert_eq!(
        types,
        [
            r#"["integer","integer","null","text","text","text",202]"#,
            r#"["integer","null","text","text","text","null",202]"#
        ]
    );
    let attempts: Vec<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT json_array(typeof(delivery_id), typeof(started_at), typeof(duration_ms), typeof(request_body),
                typeof(response_status), typeof(response_body), response_truncated, typeof(error)),
                request_body, response_body
         FROM attempts ORDER BY id",
    )
    .fetch_all(&s.writer)
    .await
    .unwrap();
    assert_eq!(attempts.len(), 4);
    for ((types, request, response), body) in attempts.into_iter().zip(bodies) {
        assert_eq!(types, r#"["integer","integer","integer","blob","integer","blob",1,"null"]"#);
        assert_eq!((request.as_slice(), response.as_slice()), (body, body));
    }
}

/// Claimed rows come back as JSON arrays (`batch.rs`), read by column name: a blob column as hex, read back
/// byte for byte; a missing or mistyped column is an error, not a default, and so is a row of the wrong length.
#[test]
fn json_rows_read_blobs_as_hex_and_refuse_what_is_not_there() {
    use crate::rows::Columns;
    const NAMES: &[&str] = &["raw", "none", "n", "t", "flag"];
    let values = vec![json!("00ff8e52"), json!(null), json!(7), json!("x"), json!(1)];
    let row = rows::JsonRow::new(NAMES, values).unwrap();
    assert_eq!(row.opt_bytes("raw").unwrap(), Some(vec![0x00, 0xff, 0x8e, 0x52]));
    assert_eq!(row.opt_bytes("none").unwrap(), None);
    assert_eq!((row.int("n").unwrap(), row.text("t").unwrap(), row.flag("flag").unwrap()), (7, "x".into(), true));
    assert!(row.text("missing").is_err());
    assert!(row.int("t").is_err());
    assert!(row.text("none").is_err());
    let odd = rows::JsonRow::new(&NAMES[..1], vec![json!("abc")]).unwrap();
    assert!(odd.opt_bytes("raw").is_err());
    assert!(rows::JsonRow::new(NAMES, vec![json!(1)]).is_err());
}

/// Each event of a multi-event batch gets its own headers, query and body, cut out of the batch's BLOB of each
/// column by byte offsets (`batch.rs`), and stored as TEXT: multibyte characters, an empty object, a body larger
/// than the rest together. A claim gives them back the same way, cut out of one text by lengths.
#[tokio::test]
async fn every_event_of_a_batch_keeps_its_own_texts() {
    let t0 = Utc::now();
    let s = SqliteStore::open("sqlite::memory:", t0).await.unwrap();
    let mut sent = Vec::new();
    for (i, body) in [json!({ "名前": "山田", "n": 1 }), json!({}), json!({ "text": "x".repeat(5000) }), json!("😀")]
        .into_iter()
        .enumerate()
    {
        let mut ev = keyed(&format!("e{i}"), None, t0);
        ev.headers = json!({ "x-n": "値".repeat(i) });
        ev.query = if i == 1 { json!({}) } else { json!({ "q": [i.to_string()] }) };
        ev.body = body;
        sent.push(ev);
    }
    s.ingest(sent.clone(), t0).await.unwrap();
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT id, headers, query, body, typeof(headers) || typeof(query) || typeof(body) FROM events ORDER BY id",
    )
    .fetch_all(&s.writer)
    .await
    .unwrap();
    assert_eq!(rows.len(), sent.len());
    for ((id, headers, query, body, types), ev) in rows.into_iter().zip(&sent) {
        assert_eq!(id, ev.id);
        assert_eq!(types, "texttexttext");
        assert_eq!((headers, query, body), (ev.headers.to_string(), ev.query.to_string(), ev.body.to_string()));
    }
    // And a claim reads each back from its chunk's texts (`ClaimedRows`), in the events' order or not.
    let claimed = s.claim("w1", t0, t0 + Duration::seconds(10), 10, &[]).await.unwrap();
    assert_eq!(claimed.len(), sent.len());
    for (c, ev) in claimed.iter().zip(&sent) {
        let e = &c.event;
        assert_eq!((&e.id, &e.headers, &e.query, e.body.as_ref()), (&ev.id, &ev.headers, &ev.query, Some(&ev.body)));
    }
}

/// A body given as the sender wrote it (`NewEvent::body_text`) is stored as that text, spacing, key order and
/// escapes kept, and reads back as the body; an event without one has its body written out.
#[tokio::test]
async fn a_body_as_sent_is_stored_as_sent_and_reads_back_as_the_body() {
    let t0 = Utc::now();
    let s = SqliteStore::open("sqlite::memory:", t0).await.unwrap();
    let as_sent = "{\n  \"z\": 1,\n  \"a\": \"\\u3042\",  \"n\": 1.50 }\n";
    let mut raw = keyed("raw", None, t0);
    raw.body = serde_json::from_str(as_sent).unwrap();
    raw.body_text = Some(as_sent.to_owned());
    let mut plain = keyed("plain", None, t0);
    plain.body = raw.body.clone();
    s.ingest(vec![raw.clone(), plain], t0).await.unwrap();
    let bodies: Vec<(String, String)> =
        sqlx::query_as("SELECT id, body FROM events ORDER BY id").fetch_all(&s.writer).await.unwrap();
    assert_eq!(bodies, vec![("plain".into(), raw.body.to_string()), ("raw".into(), as_sent.to_owned())]);
    let claimed = s.claim("w1", t0, t0 + Duration::seconds(10), 10, &[]).await.unwrap();
    assert_eq!(claimed.len(), 2);
    for c in &claimed {
        assert_eq!(c.event.body.as_ref(), Some(&raw.body), "{}", c.event.id);
    }
}

/// A job of more rows than one statement takes (`batch::ROWS_PER_STATEMENT`): its rows are cut into statements,
/// the last padded with NULL rows, and it stores what one statement would: every event once, a key taken in one
/// statement making a duplicate of an event in a later one, the deliveries in the events' order.
#[tokio::test]
async fn a_job_wider_than_a_statement_is_stored_whole_and_in_order() {
    let t0 = Utc::now();
    let s = SqliteStore::open("sqlite::memory:", t0).await.unwrap();
    let n = 2 * batch::ROWS_PER_STATEMENT + 50;
    let half = n / 2;
    // Event i < half takes key i (every third has none); event half + i repeats event i's key.
    let key = |i: usize| (!(i % half).is_multiple_of(3)).then(|| format!("k{}", i % half));
    let events: Vec<NewEvent> = (0..n).map(|i| keyed(&format!("e{i:04}"), key(i).as_deref(), t0)).collect();
    let answers = s.ingest(events, t0).await.unwrap();
    assert_eq!(answers.len(), n);
    for (i, a) in answers.iter().enumerate() {
        let expected = match key(i) {
            Some(_) if i >= half => Ingested::Duplicate { event_id: format!("e{:04}", i - half) },
            _ => Ingested::Stored { event_id: format!("e{i:04}"), deliveries: 2 },
        };
        assert_eq!(a, &expected, "event {i}");
    }
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT id FROM events ORDER BY id").fetch_all(&s.writer).await.unwrap();
    let expected: Vec<String> = (0..n).filter(|&i| i < half || key(i).is_none()).map(|i| format!("e{i:04}")).collect();
    assert_eq!(stored, expected);
    let deliveries: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, flow FROM deliveries ORDER BY id").fetch_all(&s.writer).await.unwrap();
    let in_order: Vec<(String, String)> =
        expected.iter().flat_map(|id| [(id.clone(), "f".to_owned()), (id.clone(), "g".to_owned())]).collect();
    assert_eq!(deliveries, in_order);
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dedupe").fetch_one(&s.writer).await.unwrap();
    assert_eq!(keys as usize, (0..half).filter(|&i| key(i).is_some()).count());
}

/// An event without a body (NULL) among claimed ones: its body comes back as none, and the texts of the events
/// after it in the chunk stay in step (`group_concat` leaves a NULL out).
#[tokio::test]
async fn a_claimed_event_without_a_body_keeps_the_others_in_step() {
    let t0 = Utc::now();
    let s = SqliteStore::open("sqlite::memory:", t0).await.unwrap();
    let mut first = keyed("e0", None, t0);
    first.deliveries.truncate(1);
    s.ingest(vec![first.clone()], t0).await.unwrap();
    sqlx::query(
        "INSERT INTO events (id, source, event_type, status, http_status, received_at, request_id, headers, query)
         VALUES ('e1', 's', 't', 'accepted', 202, ?1, 'r-e1', '{\"x-n\":\"e1\"}', '{}');
         INSERT INTO deliveries (event_id, flow, status, next_at, created_at, updated_at)
         VALUES ('e1', 'f', 'pending', ?1, ?1, ?1);",
    )
    .bind(t0.timestamp_millis())
    .execute(&s.writer)
    .await
    .unwrap();
    let mut last = keyed("e2", None, t0);
    last.deliveries.truncate(1);
    last.headers = json!({ "x-n": "e2", "x-long": "値".repeat(50) });
    s.ingest(vec![last.clone()], t0).await.unwrap();
    let claimed = s.claim("w1", t0, t0 + Duration::seconds(10), 10, &[]).await.unwrap();
    let events: Vec<_> =
        claimed.iter().map(|c| (c.event.id.as_str(), &c.event.headers, c.event.body.as_ref())).collect();
    assert_eq!(
        events,
        [
            ("e0", &first.headers, Some(&first.body)),
            ("e1", &json!({ "x-n": "e1" }), None),
            ("e2", &last.headers, Some(&last.body))
        ]
    );
}

/// Values that JSON carries in more than one way (escapes, control characters, characters beyond the BMP,
/// integers beyond 2^53, numbers with fractions, nested containers, empty strings) come back from a batch
/// as they went in: each is written out as JSON text, bound as a parameter of the batch's text (`batch.rs`) and
/// read back by serde, and none of it may change a value.
#[tokio::test]
async fn awkward_values_come_back_from_a_batch_unchanged() {
    let t0 = Utc::now();
    let s = SqliteStore::open("sqlite::memory:", t0).await.unwrap();
    let awkward = "\"quoted\" back\\slash\nline\ttab \u{1} 😀 \u{fffd} 山田";
    let mut ev = keyed("awkward", Some(awkward), t0);
    ev.source = "s\"1".into();
    ev.event_type = awkward.into();
    ev.headers = json!({ "x-a": awkward, "": "" });
    ev.query = json!({ "q": ["1", "", awkward] });
    ev.body = json!({
        "big": 12345678901234567890u64, "neg": -9007199254740993i64, "fraction": 0.1, "exp": 1e300,
        "nested": { "list": [[], {}, [null, true, false]], "empty": "" }, "text": awkward,
    });
    ev.deliveries[0].order_key = Some(awkward.into());
    let sent = ev.clone();
    s.ingest(vec![ev], t0).await.unwrap();
    let claimed = s.claim("w1", t0, t0 + Duration::seconds(10), 10, &[]).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let (d, e) = (&claimed[0].delivery, &claimed[0].event);
    assert_eq!((e.source.as_str(), e.event_type.as_str()), (sent.source.as_str(), sent.event_type.as_str()));
    assert_eq!((&e.headers, &e.query, e.body.as_ref()), (&sent.headers, &sent.query, Some(&sent.body)));
    assert_eq!(e.dedupe_key.as_deref(), Some(awkward));
    assert_eq!(d.order_key.as_deref(), Some(awkward));
    let outputs = json!([{ "big": 12345678901234567890u64, "text": awkward }]);
    let retry = Transition::Retry { at: t0, tries: 1, error: awkward.into() };
    s.record_attempt("w1", tried(d.id, 500), retry, t0).await.unwrap();
    let again = s.claim("w1", t0, t0 + Duration::seconds(10), 10, &[]).await.unwrap();
    assert_eq!(again[0].delivery.last_error.as_deref(), Some(awkward));
    let advance = Transition::Advance { step: 1, outputs: outputs.clone() };
    s.record_attempt("w1", tried(d.id, 200), advance, t0).await.unwrap();
    let stored: String = sqlx::query_scalar("SELECT outputs FROM deliveries WHERE id = ?")
        .bind(d.id)
        .fetch_one(&s.writer)
        .await
        .unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stored).unwrap(), outputs);
}

/// A claim's rows come back in chunks of about `CLAIM_CHUNK_BYTES` (SQLite refuses a text over 10^9 bytes,
/// so one JSON array of every claimed event could make a claim of large events fail on every try), in order.
#[tokio::test]
async fn a_claim_of_large_events_comes_back_in_chunks_in_order() {
    use sqlx::Connection;
    let t0 = Utc::now();
    let s = SqliteStore::open("sqlite::memory:", t0).await.unwrap();
    // About 11 MB each as stored (quotes and backslashes are escaped), so the three need two chunks or more.
    let big = |i: usize| format!("{i}いう\"\\").repeat(1 << 20);
    for i in 0..3 {
        let mut e = keyed(&format!("big-{i}"), None, t0);
        e.body = json!({ "i": i, "text": big(i) });
        e.deliveries.truncate(1);
        s.ingest(vec![e], t0).await.unwrap();
    }
    let mut conn = s.writer.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let job = batch::ClaimJob { owner: "w1", now: t0, lease_until: t0 + Duration::seconds(10), limit: 10, skip: "[]" };
    let rows = batch::claim(&mut tx, job).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(rows.deliveries.len(), 1);
    assert!(rows.events.len() >= 2, "{} chunk(s) of events", rows.events.len());
    let claimed = rows.decode().unwrap();
    assert_eq!(claimed.len(), 3);
    for (i, c) in claimed.iter().enumerate() {
        assert_eq!(c.event.id, format!("big-{i}"));
        assert_eq!(c.event.body, Some(json!({ "i": i, "text": big(i) })));
    }
}

/// A database of schema version 5 (before `held`) with deliveries queued behind ordering-key heads: opening it
/// applies migration 6, which holds every open delivery of a key but the oldest, and a claim then takes only
/// the heads.
#[tokio::test]
async fn a_version_5_database_opens_with_its_queued_deliveries_held_behind_their_heads() {
    use std::str::FromStr;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("v5.db").display());
    let t0 = Utc::now();
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.unwrap();
        migrate(&pool, &MIGRATIONS[..MIGRATIONS.partition_point(|(v, _)| *v <= 5)]).await.unwrap();
        sqlx::query(
            "INSERT INTO events (id, source, event_type, status, http_status, received_at, request_id, headers, query, body)
             VALUES ('e1', 's', 't', 'accepted', 202, ?1, 'r', '{}', '{}', '{}')",
        )
        .bind(ms(t0))
        .execute(&pool)
        .await
        .unwrap();
        let later = ms(t0 + Duration::days(1));
        for (id, flow, status, key, due) in crate::fixtures::QUEUED_BEFORE_HELD {
            sqlx::query(
                "INSERT INTO deliveries (id, event_id, flow, status, order_key, next_at, created_at, updated_at)
                 VALUES (?1, 'e1', ?2, ?3, ?4, ?5, ?5, ?5)",
            )
            .bind(id)
            .bind(flow)
            .bind(status)
            .bind(key)
            .bind(if due { ms(t0) } else { later })
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
    let s = SqliteStore::open(&url, t0).await.unwrap();
    let version: i64 =
        sqlx::query_scalar("SELECT max(version) FROM renkei_migrations").fetch_one(&s.writer).await.unwrap();
    assert_eq!(version, MIGRATIONS.last().unwrap().0);
    let held: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM deliveries WHERE held = 1 ORDER BY id").fetch_all(&s.writer).await.unwrap();
    assert_eq!(held, crate::fixtures::HELD_AFTER_MIGRATION);
    let claimed = s.claim("w1", t0, t0 + Duration::seconds(10), 10, &[]).await.unwrap();
    let mut ids: Vec<i64> = claimed.iter().map(|c| c.delivery.id).collect();
    ids.sort();
    assert_eq!(ids, crate::fixtures::CLAIMED_AFTER_MIGRATION);
}
