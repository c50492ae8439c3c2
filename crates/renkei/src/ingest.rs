//! Turning received bodies into stored events: classified, planned and committed in one transaction.
//!
//! Shared by the webhook ingress and the kintone poller, so an event means the same whichever way it came.

use chrono::{DateTime, Utc};
use renkei_core::config::Source;
use renkei_core::delivery::Status;
use renkei_core::event::EventView;
use renkei_core::flow::{classify, classify_and_plan, plan, Decision};
use renkei_core::types::Name;
use renkei_store::{Dedupe, Ingested, NewDelivery, NewEvent, StoreError};

use crate::app::App;

/// A delivery (by index in its event) whose flow checks the loop guard, with the flow and the rendered key.
type Echo = (usize, Name, String);

/// Where a request's bodies came from, as stored with each event.
pub struct Arrival {
    /// Lower-case names, credentials removed.
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// `token` removed.
    pub query: serde_json::Map<String, serde_json::Value>,
    pub content_type: Option<String>,
    pub received_at: DateTime<Utc>,
    /// The body's JSON text as it came, when the request is one event whose body is that JSON unchanged.
    pub body_text: Option<String>,
}

/// Stores the events `rows` become (one per row; `row` numbers a split file's rows) with their deliveries, in
/// one transaction, then wakes the worker. Returns the request id and one outcome per row.
pub async fn accept(
    app: &App,
    name: &Name,
    src: &Source,
    rows: Vec<(Option<u32>, serde_json::Value)>,
    mut arrival: Arrival,
) -> Result<(String, Vec<Ingested>), StoreError> {
    let request_id = uuid::Uuid::now_v7().to_string();
    let now = arrival.received_at;
    let count = rows.len();
    let built: Vec<(NewEvent, Vec<Echo>)> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (row, body))| {
            // Each event keeps the request's headers and query; the last takes them.
            let (headers, query) = if i + 1 == count {
                (std::mem::take(&mut arrival.headers), std::mem::take(&mut arrival.query))
            } else {
                (arrival.headers.clone(), arrival.query.clone())
            };
            let view = EventView {
                id: uuid::Uuid::now_v7().to_string(),
                event_type: String::new(),
                source: name.to_string(),
                received_at: now,
                body,
                row,
                headers,
                query,
            };
            let body_text = if count == 1 { arrival.body_text.take() } else { None };
            let (mut event, echoes) = new_event(app, name, src, view, &request_id, arrival.content_type.clone(), now);
            event.body_text = body_text;
            (event, echoes)
        })
        .collect();
    let mut events = Vec::with_capacity(built.len());
    for (mut event, echoes) in built {
        for (i, flow, key) in echoes {
            if let Some(reason) = echo_of(app, &flow, &key).await? {
                let d = &mut event.deliveries[i];
                d.status = Status::Skipped;
                d.error = Some(reason);
            }
        }
        events.push(event);
    }
    let outcomes = app.store.ingest(events, now).await?;
    app.wake.notify_one();
    for o in &outcomes {
        app.metrics
            .event(name.as_str(), if matches!(o, Ingested::Duplicate { .. }) { "duplicate" } else { "accepted" });
    }
    Ok((request_id, outcomes))
}

/// Whether `key` (a flow's `skip_echo`) names a change renkei itself wrote within the flow's window: the
/// reason to record, if so.
async fn echo_of(app: &App, flow: &Name, key: &str) -> Result<Option<String>, StoreError> {
    let Some(stored) = app.store.get_state(&renkei_core::flow::echo_state_key(key)).await? else { return Ok(None) };
    let v: serde_json::Value = serde_json::from_str(&stored).unwrap_or_default();
    let at = v["at"].as_i64().and_then(DateTime::from_timestamp_millis);
    let window = app.loaded().config.flows.get(flow.as_str()).map(|f| f.echo_window.0).unwrap_or_default();
    let fresh = at.is_some_and(|at| {
        app.clock.now() - at <= chrono::Duration::from_std(window).unwrap_or(chrono::Duration::hours(1))
    });
    Ok(fresh.then(|| {
        format!(
            "loop guard: renkei wrote this change itself (flow `{}`, delivery {}), so it is not sent back",
            v["flow"].as_str().unwrap_or("?"),
            v["delivery"]
        )
    }))
}

/// Classifies and plans one event; a template failure here still stores the event, with dead deliveries
/// that say why, so nothing is lost and the event can be replayed once the config is fixed.
fn new_event(
    app: &App,
    name: &Name,
    src: &Source,
    mut view: EventView,
    request_id: &str,
    content_type: Option<String>,
    now: DateTime<Utc>,
) -> (NewEvent, Vec<Echo>) {
    let loaded = &*app.loaded();
    let mut echoes = Vec::new();
    let (deliveries, dedupe) = match classify_and_plan(loaded, name, &mut view) {
        Ok((dedupe, plans)) => {
            for (i, p) in plans.iter().enumerate() {
                if let Some(k) = &p.echo {
                    echoes.push((i, p.flow.clone(), k.clone()));
                }
            }
            let deliveries = plans.into_iter().map(new_delivery).collect();
            let window = chrono::Duration::from_std(src.dedupe_window.0).unwrap_or(chrono::Duration::days(7));
            (deliveries, dedupe.filter(|k| !k.is_empty()).map(|key| Dedupe { key, expires_at: now + window }))
        }
        Err(e) => {
            let deliveries = loaded
                .config
                .flows
                .iter()
                .filter(|(_, f)| f.enabled && f.source == *name)
                .map(|(flow, _)| NewDelivery {
                    flow: flow.to_string(),
                    status: Status::Dead,
                    order_key: None,
                    error: Some(e.clone()),
                })
                .collect();
            (deliveries, None)
        }
    };
    let event = NewEvent {
        id: view.id,
        source: view.source,
        event_type: view.event_type,
        received_at: now,
        request_id: request_id.to_owned(),
        row: view.row,
        content_type,
        headers: serde_json::Value::Object(view.headers),
        query: serde_json::Value::Object(view.query),
        body: view.body,
        body_text: None,
        dedupe,
        deliveries,
    };
    (event, echoes)
}

pub fn new_delivery(p: renkei_core::flow::Plan) -> NewDelivery {
    let (status, error) = match p.decision {
        Decision::Deliver => (Status::Pending, None),
        Decision::Skip => (Status::Skipped, None),
        Decision::Fail(e) => (Status::Dead, Some(e)),
    };
    NewDelivery { flow: p.flow.to_string(), status, order_key: p.order_key, error }
}

/// Why an event could not be replayed.
#[derive(Debug)]
pub enum ReplayError {
    /// A rejected event has no parsed body.
    Rejected,
    /// Its source is no longer in the config.
    UnknownSource(String),
    Store(StoreError),
}

/// Runs a stored event through the current flows again, as new deliveries (the API's and the console's
/// replay), and wakes the worker. Returns the new deliveries' ids.
pub async fn replay(app: &App, event: &renkei_store::EventRecord) -> Result<Vec<i64>, ReplayError> {
    if event.status != "accepted" {
        return Err(ReplayError::Rejected);
    }
    let loaded = &*app.loaded();
    let source = match Name::parse(&event.source) {
        Ok(s) if loaded.config.sources.contains_key(s.as_str()) => s,
        _ => return Err(ReplayError::UnknownSource(event.source.clone())),
    };
    let mut view = crate::worker::event_view(event);
    if let Ok((event_type, _)) = classify(loaded, &source, &view) {
        view.event_type = event_type;
    }
    let deliveries: Vec<_> = plan(loaded, &view).into_iter().map(new_delivery).collect();
    let ids = app.store.add_deliveries(&event.id, deliveries, app.clock.now()).await.map_err(ReplayError::Store)?;
    app.wake.notify_one();
    Ok(ids)
}
