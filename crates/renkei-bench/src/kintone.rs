//! kintone writes: events per second into the kintone fake with and without batching, and requests per 1,000
//! events (kintone counts requests per app per day, so this is the figure an admin watches).
//!
//! Runs in this process: renkei's app and worker (as `renkei serve` assembles them, minus the HTTP server:
//! the events go straight through ingest) against `renkei-testkit`'s kintone fake on loopback.

use std::sync::Arc;
use std::time::Instant;

use renkei::app::App;
use renkei::clock::SystemClock;
use renkei::worker::Worker;
use renkei_testkit::kintone::{FakeKintone, Field, FieldType, Rights};

use crate::report::Row;
use crate::KintoneArgs;

const TOKEN: &str = "bench-token";

pub async fn kintone(args: &KintoneArgs) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for batch in [true, false] {
        let (rate, requests) = run(args.events, batch).await?;
        let mode = if batch { "batched (up to 100 records a request)" } else { "one record a request" };
        rows.push(
            Row::new(format!("kintone upsert, {mode}: events/s"), rate, "events/s")
                .note(format!("{} events, worker.concurrency 200, destination concurrency 10", args.events)),
        );
        rows.push(Row::new(
            format!("kintone upsert, {mode}: requests per 1,000 events"),
            requests as f64 * 1000.0 / args.events as f64,
            "requests",
        ));
    }
    Ok(rows)
}

async fn run(events: usize, batch: bool) -> anyhow::Result<(f64, u64)> {
    let k = FakeKintone::start().await;
    k.add_app(
        12,
        vec![
            Field::new("code", "コード", FieldType::SingleLineText).unique(),
            Field::new("name", "名前", FieldType::SingleLineText),
            Field::new("amount", "金額", FieldType::Number),
        ],
    )
    .add_token(TOKEN, Rights::RECORDS);
    let dir = tempfile::tempdir()?;
    let config = format!(
        r#"
network: {{ allow_private: ["127.0.0.0/8"], allow_http: true }}
worker: {{ concurrency: 200 }}
sources:
  in: {{ json: {{ split: rows }} }}
destinations:
  crm: {{ type: kintone, base_url: "{}", app: 12, api_token: "{TOKEN}", batch: {{ enabled: {batch} }} }}
flows:
  upsert:
    source: in
    steps:
      - to: crm
        action: upsert
        key: {{ field: code, value: "{{{{ body.code }}}}" }}
        record: {{ code: "{{{{ body.code }}}}", name: "{{{{ body.name }}}}", amount: "{{{{ body.amount }}}}" }}
"#,
        k.base_url()
    );
    let loaded = renkei_core::config::load(&config, &|_| None, &|_| Err("no files".into()))
        .map_err(|p| anyhow::anyhow!("bench config: {p:?}"))?;
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    let store = renkei::cli::open_store(&url, chrono::Utc::now()).await?;
    let app = App::new(loaded, store, Arc::new(SystemClock), None);
    // Queue the events in requests of 100 rows (a CSV file's worth), then time the writes alone.
    let src_name = renkei_core::types::Name::parse("in").expect("a valid name");
    let src = app.loaded().config.sources["in"].clone();
    for chunk in (0..events).collect::<Vec<_>>().chunks(100) {
        let rows = chunk
            .iter()
            .map(|i| (None, serde_json::json!({"code": format!("C{i:06}"), "name": format!("顧客{i}"), "amount": i})))
            .collect();
        let arrival = renkei::ingest::Arrival {
            headers: Default::default(),
            query: Default::default(),
            content_type: Some("application/json".into()),
            received_at: chrono::Utc::now(),
            body_text: None,
        };
        renkei::ingest::accept(&app, &src_name, &src, rows, arrival).await?;
    }
    let worker = Arc::new(Worker::new(app.clone()));
    let started = Instant::now();
    let done = worker.drain().await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(done == events, "{done} of {events} delivered");
    anyhow::ensure!(k.records(12).len() == events, "{} records in the fake", k.records(12).len());
    let writes =
        k.requests().iter().filter(|r| r.path.ends_with("/records.json") || r.path.ends_with("/record.json")).count();
    Ok((events as f64 / secs, writes as u64))
}
