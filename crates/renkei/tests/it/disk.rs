//! SQLite when the disk fills up and when another process holds the database locked, under a running
//! `renkei serve`: ingress answers 503 and stores nothing it did not acknowledge; every event it did acknowledge
//! is delivered once there is room again. The disk is "full" at `max_size` of the storage URL (SQLite's
//! `max_page_count`), which fails writes exactly as a full file system does (SQLITE_FULL).

use std::time::Duration;

use serde_json::json;

use crate::multinode::{until, Node, Sink};

fn config(db: &str, sink: &str) -> String {
    format!(
        r#"
storage: "sqlite://{db}"
network: {{ allow_private: ["127.0.0.0/8"], allow_http: true }}
worker: {{ poll: 50ms }}
sources:
  in: {{}}
destinations:
  sink: {{ type: http, base_url: "{sink}" }}
flows:
  forward:
    source: in
    retry: {{ max_attempts: 100, initial: 50ms, max: 200ms }}
    steps: [ {{ to: sink, path: /in, body: {{ key: 1, n: "{{{{ body.n }}}}" }} }} ]
"#
    )
}

#[tokio::test]
async fn a_full_disk_answers_503_and_loses_nothing_acknowledged() {
    let (sink, sink_url) = Sink::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("renkei.db");
    let cfg = dir.path().join("renkei.yaml");
    std::fs::write(&cfg, config(&format!("{}?max_size=1MiB", db.display()), &sink_url)).unwrap();
    let http = reqwest::Client::new();
    let node = Node::start("full", &cfg, dir.path());
    node.ready(&http).await;

    // Events of 16 KiB until the database is full.
    let filler = "あ".repeat(16 * 1024 / 3);
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for n in 0..400i64 {
        let (status, body) = node.post(&http, json!({ "n": n, "filler": filler })).await;
        match status {
            202 => acknowledged.push(n),
            503 => {
                refused = Some(body);
                break;
            }
            other => panic!("event {n}: {other} {body}\n{}", node.log()),
        }
    }
    let refused = refused.expect("a 1 MiB database fills up with 400 events of 16 KiB");
    assert_eq!(refused["error"]["code"], "storage_unavailable", "{refused}");
    assert!(acknowledged.len() > 5, "{} acknowledged", acknowledged.len());
    // Still full: refused again, nothing stored.
    assert_eq!(node.post(&http, json!({ "n": 9999, "filler": filler })).await.0, 503);

    // Room again (a bigger cap, as after freeing disk space): every acknowledged event is delivered, nothing else.
    drop(node);
    std::fs::write(&cfg, config(&format!("{}?max_size=64MiB", db.display()), &sink_url)).unwrap();
    let node = Node::start("room", &cfg, dir.path());
    node.ready(&http).await;
    let want = acknowledged.len();
    until(Duration::from_secs(30), "every acknowledged event to be delivered", &[&node], || async {
        node.count(&http, "succeeded").await == want
    })
    .await;
    let mut got: Vec<i64> = sink.got().iter().map(|(_, n)| *n).collect();
    got.sort();
    got.dedup();
    assert_eq!(got, acknowledged, "delivered: exactly the acknowledged events");
}

#[tokio::test]
async fn a_database_locked_by_another_process_answers_503_then_recovers() {
    let (_sink, sink_url) = Sink::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("renkei.db");
    let cfg = dir.path().join("renkei.yaml");
    std::fs::write(&cfg, config(&format!("{}?busy_timeout=300ms", db.display()), &sink_url)).unwrap();
    let http = reqwest::Client::new();
    let node = Node::start("locked", &cfg, dir.path());
    node.ready(&http).await;
    assert_eq!(node.post(&http, json!({ "n": 1 })).await.0, 202);

    // Another process (a backup tool, a careless sqlite3 shell) takes the write lock and keeps it.
    use sqlx::{Connection, Executor};
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    other.execute("BEGIN EXCLUSIVE").await.unwrap();
    let (status, body) = node.post(&http, json!({ "n": 2 })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("storage_unavailable")), "{body}");
    other.execute("ROLLBACK").await.unwrap();
    drop(other);

    // The lock gone, the next request is stored; the refused one was not.
    assert_eq!(node.post(&http, json!({ "n": 3 })).await.0, 202);
    let events = node.api(&http, "/events?source=in&status=accepted").await;
    let ns: Vec<i64> = events["items"].as_array().unwrap().iter().map(|e| e["body"]["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, [3, 1]);
}
