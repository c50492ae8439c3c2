//! Polling triggers: kintone records changed since the last look become events.
//!
//! kintone sends no webhook for CSV imports or bulk API writes, so a flow that must see every change also
//! pulls: `records.json` with `<updated time> >= cursor`, oldest first, page by page. The cursor (the newest
//! update time seen) is kept in the store, so a restart neither misses nor repeats changes; records at the
//! cursor's instant are read again and recognised by their dedupe key (record id and revision). The first
//! look only sets the cursor: like a webhook, a poller sees what happens after it was set up (seed 001).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use renkei_connectors::http::HttpClient;
use renkei_connectors::kintone::api;
use renkei_core::config::{Destination, KintonePoll};
use renkei_core::types::Name;
use serde_json::{json, Value};

use crate::app::App;
use crate::ingest::{accept, Arrival};

/// kintone's largest page, and the deepest offset it allows.
const PAGE: usize = 500;
const MAX_OFFSET: usize = 10_000;

/// Looks once for changes of a polling source; returns how many new events were stored.
pub async fn poll_once(app: &App, client: &HttpClient, source: &str) -> Result<usize, String> {
    let loaded = app.loaded();
    let cfg = &loaded.config;
    let (name, src) = cfg.sources.get_key_value(source).ok_or_else(|| format!("there is no source `{source}`"))?;
    let poll = src.poll.as_ref().ok_or_else(|| format!("source `{source}` does not poll"))?;
    let Some(Destination::Kintone(dest)) = cfg.destinations.get(poll.destination.as_str()) else {
        return Err(format!("`{}` is not a kintone destination", poll.destination));
    };
    let key = format!("poll:{source}");
    let now = app.clock.now();
    let Some(cursor) = app.store.get_state(&key).await.map_err(|e| e.to_string())? else {
        let start = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        app.store.put_state(&key, &start, now).await.map_err(|e| e.to_string())?;
        return Ok(0);
    };
    let mut newest = cursor.clone();
    let mut stored = 0;
    let mut offset = 0;
    loop {
        let records = fetch(app, client, poll, dest, &cursor, offset).await?;
        let n = records.len();
        let mut rows = Vec::with_capacity(n);
        for record in records {
            if let Some(t) = record.get(&poll.field).and_then(|f| f.get("value")).and_then(|v| v.as_str()) {
                if t > newest.as_str() {
                    newest = t.to_owned();
                }
            }
            rows.push((None, src.reshape(event_body(dest.app, record))));
        }
        // Each record is an event of its own (one request id per page).
        let arrival = Arrival {
            headers: serde_json::Map::from_iter([("x-renkei-poll".to_owned(), json!("kintone"))]),
            query: serde_json::Map::new(),
            content_type: Some("application/json".into()),
            received_at: app.clock.now(),
            body_text: None,
        };
        if !rows.is_empty() {
            let (_, outcomes) = accept(app, name, src, rows, arrival).await.map_err(|e| e.to_string())?;
            stored += outcomes.iter().filter(|o| matches!(o, renkei_store::Ingested::Stored { .. })).count();
        }
        offset += n;
        if n < PAGE || offset >= MAX_OFFSET {
            break;
        }
    }
    if newest != cursor {
        app.store.put_state(&key, &newest, app.clock.now()).await.map_err(|e| e.to_string())?;
    }
    Ok(stored)
}

async fn fetch(
    app: &App,
    client: &HttpClient,
    poll: &KintonePoll,
    dest: &renkei_core::config::KintoneDestination,
    cursor: &str,
    offset: usize,
) -> Result<Vec<Value>, String> {
    let query = format!(
        "{field} >= {cursor} order by {field} asc, $id asc limit {PAGE} offset {offset}",
        field = poll.field,
        cursor = api::quote(cursor)
    );
    let mut req = api::lookup_request(dest, poll.destination.as_str(), "$id", "0");
    let params = form_urlencoded::Serializer::new(String::new())
        .append_pair("app", &dest.app.to_string())
        .append_pair("query", &query)
        .finish();
    req.url = format!("{}?{params}", dest.api_path("records"));
    let resp = client.send(&req).await.map_err(|e| app.loaded().redactor.text(&e.to_string()).into_owned())?;
    app.metrics.kintone_request(poll.destination.as_str(), dest.app);
    let counter = crate::metrics::kintone_counter(app.clock.now(), poll.destination.as_str(), dest.app);
    if let Err(e) = app.store.add_count(&counter, 1).await {
        tracing::warn!(error = %e, "counting a kintone request failed");
    }
    if resp.status != 200 {
        let reason = match api::KintoneError::parse(&resp.body) {
            Some(e) => e.describe(),
            None => format!("HTTP {}", resp.status),
        };
        return Err(format!("polling kintone app {}: {reason}", dest.app));
    }
    let body: Value = serde_json::from_slice(&resp.body).map_err(|e| e.to_string())?;
    Ok(body.get("records").and_then(|r| r.as_array()).cloned().unwrap_or_default())
}

/// A polled record in the shape of kintone's webhook body, so one flow serves both; the notification id is
/// `poll:<record id>:<revision>`, which makes a re-read record a duplicate.
fn event_body(app: u64, record: Value) -> Value {
    let field_of = |kind: &str| {
        record
            .as_object()
            .and_then(|r| r.values().find(|f| f.get("type").and_then(|t| t.as_str()) == Some(kind)))
            .and_then(|f| f.get("value"))
            .cloned()
    };
    let id = field_of("__ID__").unwrap_or_default();
    let revision = field_of("__REVISION__").unwrap_or_default();
    let text = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    // kintone's times are to the minute, so a record's first revision is the reliable sign it is new.
    let kind = if text(&revision) == "1" { "ADD_RECORD" } else { "UPDATE_RECORD" };
    json!({
        "id": format!("poll:{}:{}", text(&id), text(&revision)),
        "type": kind,
        "app": { "id": app.to_string() },
        "record": record,
        "polled": true,
    })
}

/// Runs every polling source at its interval until `shutdown`. The sources are read from the running config
/// before each wait, so a source added, changed or removed by an edit is polled (or not) without a restart.
pub async fn run(app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let mut next: HashMap<Name, tokio::time::Instant> = HashMap::new();
    let mut client: Option<(i64, HttpClient)> = None;
    tokio::pin!(shutdown);
    loop {
        let loaded = app.loaded();
        let sources: HashMap<Name, Duration> =
            loaded.config.sources.iter().filter_map(|(n, s)| s.poll.as_ref().map(|p| (n.clone(), p.every.0))).collect();
        drop(loaded);
        next.retain(|n, _| sources.contains_key(n));
        let now = tokio::time::Instant::now();
        for n in sources.keys() {
            next.entry(n.clone()).or_insert(now);
        }
        let due = next.iter().min_by_key(|(_, t)| **t).map(|(n, t)| (n.clone(), *t));
        let wake =
            due.as_ref().map_or(now + crate::live::RELOAD_EVERY, |(_, t)| (*t).min(now + crate::live::RELOAD_EVERY));
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
        let Some((name, at)) = due else { continue };
        if at > tokio::time::Instant::now() {
            continue;
        }
        let revision = app.revision();
        if client.as_ref().is_none_or(|(r, _)| *r != revision) {
            let policy = renkei_connectors::http::Policy::from_network(&app.loaded().config.network);
            client = Some((revision, HttpClient::new(policy)));
        }
        let (_, http) = client.as_ref().expect("made above");
        match poll_once(&app, http, name.as_str()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(source = %name, events = n, "polled changes"),
            Err(e) => tracing::warn!(source = %name, error = %e, "polling failed; will try again"),
        }
        next.insert(name.clone(), tokio::time::Instant::now() + sources[&name]);
    }
}
