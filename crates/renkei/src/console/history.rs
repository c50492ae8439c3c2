//! History: events and deliveries with filters and keyset paging (the store's `before` cursors, so a page
//! costs the same on the millionth row as on the first), a delivery's every attempt with its request and
//! response (seed 003's `</>`), and the actions the admin API offers: retry a delivery, replay an event,
//! retry the dead deliveries of a filter. Actions write through the same store operations as the API and
//! ring the worker's bell; the worker sends.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use chrono::{DateTime, Utc};
use minijinja::context;
use renkei_core::delivery::Status;
use renkei_core::types::Name;
use renkei_core::Msg;
use renkei_store::{AttemptFilter, DeliveryFilter, EventFilter, EventRecord};
use serde::Deserialize;

use super::page::{Answer, Page, Posted, Signed};
use super::view;
use crate::access::Role;

const PAGE: u32 = 50;

/// The filters of both listings, as the form sends them.
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    source: Option<String>,
    flow: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    before: Option<String>,
}

/// Filters read and checked; what could not be read is said, not silently dropped.
struct Checked {
    source: Option<String>,
    flow: Option<String>,
    status: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    q: Option<String>,
    before: Option<String>,
    problems: Vec<String>,
    /// The filter as a query string (without the cursor), for paging links and the bulk retry form.
    query: String,
}

fn check(p: &Page, f: &Filters, statuses: &[&str]) -> Checked {
    let mut problems = Vec::new();
    let mut time = |name: &str, v: &Option<String>| {
        let v = view::given(v)?;
        let t = view::parse_time(&v);
        if t.is_none() {
            problems.push(
                p.t(&Msg::new(
                    format!("`{v}` in {name} is not a date and time; the filter was not applied."),
                    format!("{name} の `{v}` は日時として読めないため、条件に使っていません。"),
                ))
                .to_owned(),
            );
        }
        t
    };
    let since = time("since", &f.since);
    let until = time("until", &f.until);
    let mut status = view::given(&f.status);
    if let Some(s) = &status {
        if !statuses.contains(&s.as_str()) {
            problems
                .push(p.t(&Msg::new(format!("Unknown status `{s}`."), format!("不明な状態 `{s}` です。"))).to_owned());
            status = None;
        }
    }
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("source", &f.source),
        ("flow", &f.flow),
        ("status", &f.status),
        ("since", &f.since),
        ("until", &f.until),
        ("q", &f.q),
    ] {
        if let Some(v) = view::given(v) {
            q.append_pair(k, &v);
        }
    }
    Checked {
        source: view::given(&f.source),
        flow: view::given(&f.flow),
        status,
        since,
        until,
        q: view::given(&f.q),
        before: view::given(&f.before),
        problems,
        query: q.finish(),
    }
}

/// The values the filter form shows back.
fn form_values(f: &Filters, c: &Checked) -> minijinja::Value {
    context! {
        source => view::given(&f.source).unwrap_or_default(),
        flow => view::given(&f.flow).unwrap_or_default(),
        status => c.status.clone().unwrap_or_default(),
        since => c.since.map(view::jst_input).unwrap_or_else(|| view::given(&f.since).unwrap_or_default()),
        until => c.until.map(view::jst_input).unwrap_or_else(|| view::given(&f.until).unwrap_or_default()),
        q => view::given(&f.q).unwrap_or_default(),
    }
}

fn next_link(base: &str, c: &Checked, cursor: Option<String>) -> Option<String> {
    let cursor = cursor?;
    let sep = if c.query.is_empty() { "" } else { "&" };
    Some(format!(
        "{base}?{}{sep}before={}",
        c.query,
        form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>()
    ))
}

pub async fn events(Signed(p): Signed, Query(f): Query<Filters>) -> Answer {
    let c = check(&p, &f, &["accepted", "rejected"]);
    let app = p.app();
    let r = &app.loaded().redactor;
    let filter = EventFilter {
        source: c.source.clone(),
        event_type: None,
        status: c.status.clone(),
        since: c.since,
        until: c.until,
        q: c.q.clone(),
        before: c.before.clone(),
        limit: PAGE + 1,
    };
    let mut items = app.store.list_events(&filter).await.map_err(|e| p.store_fail(e))?;
    // One more than shown tells whether an older page exists.
    let more = items.len() > PAGE as usize;
    items.truncate(PAGE as usize);
    let next = next_link("/console/events", &c, more.then(|| items.last().map(|e| e.id.clone())).flatten());
    let show_raw = p.principal().is_some_and(|who| who.may(Role::Editor));
    let rows: Vec<_> = items.iter().map(|e| event_row(r, e, show_raw)).collect();
    let loaded = app.loaded();
    let sources: Vec<&str> = loaded.config.sources.keys().map(Name::as_str).collect();
    Ok(p.render(
        "events.html",
        "events",
        context! {
            rows => rows, next => next, paged => c.before.is_some(), newest => format!("/console/events?{}", c.query),
            form => form_values(&f, &c), problems => c.problems, sources => sources,
        },
    ))
}

/// An event for listings; `raw` (a refused request's bytes) previewed only when `show_raw`.
pub fn event_row(r: &renkei_core::redact::Redactor, e: &EventRecord, show_raw: bool) -> minijinja::Value {
    context! {
        id => e.id, source => e.source, event_type => view::text(r, &e.event_type), status => e.status,
        http_status => e.http_status, reason => e.reason.as_deref().map(|x| view::one_line(r, &x.into(), 160)),
        received_at => e.received_at, row => e.row,
        preview => e.body.as_ref().map(|b| view::one_line(r, b, 100))
            .or_else(|| e.raw.as_ref().filter(|_| show_raw).map(|raw| view::one_line(r, &String::from_utf8_lossy(raw).into(), 100))),
    }
}

/// A stored body for reading: UTF-8 as it is, Shift_JIS when it decodes cleanly, else its size.
fn bytes_text(b: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(b) {
        return s.to_owned();
    }
    let (text, bad) = encoding_rs::SHIFT_JIS.decode_without_bom_handling(b);
    if bad {
        format!("[{} bytes, not text]", b.len())
    } else {
        text.into_owned()
    }
}

pub async fn event(Signed(p): Signed, Path(id): Path<String>) -> Answer {
    let app = p.app();
    let r = &app.loaded().redactor;
    let e = match app.store.get_event(&id).await {
        Ok(e) => e,
        Err(renkei_store::StoreError::NotFound) => return Err(p.not_found("Event", "イベント")),
        Err(e) => return Err(p.store_fail(e)),
    };
    let deliveries = app
        .store
        .list_deliveries(&DeliveryFilter { event_id: Some(id.clone()), limit: 500, ..Default::default() })
        .await
        .map_err(|e| p.store_fail(e))?;
    let deliveries: Vec<_> = deliveries.iter().map(|d| delivery_row(r, d)).collect();
    let replayable = e.status == "accepted" && app.loaded().config.sources.contains_key(e.source.as_str());
    // As in the API: a refused request's bytes came from an unauthenticated sender and may hold credentials
    // renkei does not know to mask, so only those who may act on them see them.
    let may_see_raw = p.principal().is_some_and(|who| who.may(Role::Editor));
    let withheld = e.raw.is_some() && !may_see_raw;
    Ok(p.render(
        "event.html",
        "events",
        context! {
            e => event_row(r, &e, may_see_raw),
            request_id => e.request_id,
            content_type => e.content_type.as_deref().map(|c| view::text(r, c)),
            dedupe_key => e.dedupe_key.as_deref().map(|k| view::text(r, k)),
            headers => view::json_pairs(r, &e.headers),
            query => view::json_pairs(r, &e.query),
            body => e.body.as_ref().map(|b| view::json_text(r, b)),
            raw => e.raw.as_ref().filter(|_| may_see_raw).map(|b| view::body_text(r, &bytes_text(b))),
            raw_withheld => withheld,
            raw_truncated => e.raw_truncated,
            deliveries => deliveries,
            replayable => replayable && may_see_raw,
        },
    ))
}

fn delivery_row(r: &renkei_core::redact::Redactor, d: &renkei_store::DeliveryRecord) -> minijinja::Value {
    context! {
        id => d.id, event_id => d.event_id, flow => d.flow, source => d.source,
        event_type => view::text(r, &d.event_type), status => d.status.as_str(), step => d.step,
        tries => d.tries, attempts => d.attempts, next_at => d.next_at, created_at => d.created_at,
        updated_at => d.updated_at, order_key => d.order_key.as_deref().map(|k| view::text(r, k)),
        error => d.last_error.as_deref().map(|x| view::one_line(r, &x.into(), 200)),
        open => d.status.is_open(),
        retryable => matches!(d.status, Status::Dead | Status::Retrying),
    }
}

/// Runs a stored event through the current flows again, as the API's replay does.
pub async fn replay(Path(id): Path<String>, posted: Posted) -> Answer {
    let p = &posted.page;
    let app = p.app();
    let event = match app.store.get_event(&id).await {
        Ok(e) => e,
        Err(renkei_store::StoreError::NotFound) => return Err(p.not_found("Event", "イベント")),
        Err(e) => return Err(p.store_fail(e)),
    };
    let ids = match crate::ingest::replay(app, &event).await {
        Ok(ids) => ids,
        Err(crate::ingest::ReplayError::Rejected) => {
            return Err(p.fail(
                StatusCode::CONFLICT,
                Msg::new(
                    "A rejected event has no parsed body to replay; ask the sender to send it again.",
                    "拒否されたイベントは再実行できません。送信元から再送してください。",
                ),
            ))
        }
        Err(crate::ingest::ReplayError::UnknownSource(source)) => {
            return Err(p.fail(
                StatusCode::CONFLICT,
                Msg::new(
                    format!("Source `{source}` is no longer configured."),
                    format!("受信元 `{source}` は現在の設定にありません。"),
                ),
            ))
        }
        Err(crate::ingest::ReplayError::Store(e)) => return Err(p.store_fail(e)),
    };
    if let Some(who) = p.principal() {
        super::audit(app, who, "event.replayed", id.clone(), serde_json::json!({ "delivery_ids": ids })).await;
    }
    Ok(Redirect::to(&format!("/console/events/{}?done=replayed&n={}", enc(&id), ids.len())).into_response())
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub async fn deliveries(Signed(p): Signed, Query(f): Query<Filters>) -> Answer {
    let statuses = Status::ALL.map(Status::as_str);
    let c = check(&p, &f, &statuses);
    let app = p.app();
    let r = &app.loaded().redactor;
    let before = match c.before.as_deref().map(str::parse::<i64>) {
        Some(Ok(b)) => Some(b),
        Some(Err(_)) => {
            return Err(
                p.fail(StatusCode::BAD_REQUEST, Msg::new("Bad page cursor.", "ページの指定が正しくありません。"))
            )
        }
        None => None,
    };
    let filter = DeliveryFilter {
        flow: c.flow.clone(),
        source: c.source.clone(),
        status: c.status.as_deref().and_then(Status::parse),
        event_id: None,
        since: c.since,
        until: c.until,
        q: c.q.clone(),
        before,
        limit: PAGE + 1,
    };
    let mut items = app.store.list_deliveries(&filter).await.map_err(|e| p.store_fail(e))?;
    let more = items.len() > PAGE as usize;
    items.truncate(PAGE as usize);
    let next = next_link("/console/deliveries", &c, more.then(|| items.last().map(|d| d.id.to_string())).flatten());
    let rows: Vec<_> = items.iter().map(|d| delivery_row(r, d)).collect();
    let cfg = &app.loaded().config;
    let flows: Vec<&str> = cfg.flows.keys().map(Name::as_str).collect();
    let sources: Vec<&str> = cfg.sources.keys().map(Name::as_str).collect();
    // The bulk retry acts on dead deliveries only, whatever status the listing shows.
    let bulk = matches!(c.status.as_deref(), None | Some("dead"));
    Ok(p.render(
        "deliveries.html",
        "deliveries",
        context! {
            rows => rows, next => next, paged => c.before.is_some(),
            newest => format!("/console/deliveries?{}", c.query),
            form => form_values(&f, &c), problems => c.problems, flows => flows, sources => sources,
            statuses => statuses, bulk => bulk,
            bulk_fields => context! {
                flow => c.flow, source => c.source,
                since => c.since.map(|t| t.to_rfc3339()), until => c.until.map(|t| t.to_rfc3339()), q => c.q,
            },
        },
    ))
}

pub async fn delivery(Signed(p): Signed, Path(id): Path<i64>) -> Answer {
    let app = p.app();
    let r = &app.loaded().redactor;
    let d = match app.store.get_delivery(id).await {
        Ok(d) => d,
        Err(renkei_store::StoreError::NotFound) => return Err(p.not_found("Delivery", "配信")),
        Err(e) => return Err(p.store_fail(e)),
    };
    let attempts = app
        .store
        .list_attempts(&AttemptFilter { delivery_id: Some(id), limit: 500, ..Default::default() })
        .await
        .map_err(|e| p.store_fail(e))?;
    let loaded = app.loaded();
    let flow = loaded.config.flows.get(d.flow.as_str());
    let attempts: Vec<_> = attempts
        .iter()
        .map(|a| {
            let to = flow.and_then(|f| f.steps.get(a.step as usize)).map(|s| s.to.to_string());
            context! {
                id => a.id, step => a.step, try_no => a.try_no, started_at => a.started_at,
                duration_ms => a.duration_ms, outcome => a.outcome, to => to,
                error => a.error.as_deref().map(|e| view::text(r, e)),
                request => context! {
                    method => a.request.method, url => view::text(r, &a.request.url),
                    headers => view::headers(r, &a.request.headers),
                    body => view::body_text(r, &bytes_text(&a.request.body)),
                },
                response => a.response.as_ref().map(|resp| context! {
                    status => resp.status,
                    headers => view::headers(r, &resp.headers),
                    body => view::body_text(r, &bytes_text(&resp.body)),
                    truncated => resp.truncated,
                }),
            }
        })
        .collect();
    let replayable = app.loaded().config.sources.contains_key(d.source.as_str());
    Ok(p.render(
        "delivery.html",
        "deliveries",
        context! {
            d => delivery_row(r, &d),
            error => d.last_error.as_deref().map(|e| view::text(r, e)),
            lease_owner => d.lease_owner, lease_until => d.lease_until,
            steps => flow.map(|f| f.steps.len()),
            outputs => (!d.outputs.is_null() && d.outputs != serde_json::json!([])).then(|| view::json_text(r, &d.outputs)),
            attempts => attempts,
            replayable => replayable,
        },
    ))
}

/// Makes a dead or retrying delivery due now, from the step it stopped at.
pub async fn retry(Path(id): Path<i64>, posted: Posted) -> Answer {
    let p = &posted.page;
    let app = p.app();
    let d = app.store.retry_delivery(id, app.clock.now()).await.map_err(|e| p.store_fail(e))?;
    app.wake.notify_one();
    if let Some(who) = p.principal() {
        let detail = serde_json::json!({ "flow": d.flow, "event_id": d.event_id, "step": d.step });
        super::audit(app, who, "delivery.retried", id.to_string(), detail).await;
    }
    Ok(Redirect::to(&format!("/console/deliveries/{id}?done=retried&n={id}")).into_response())
}

/// Retries every dead delivery matching the listing's filter (flow, source, time, text).
pub async fn retry_dead(posted: Posted) -> Answer {
    let p = &posted.page;
    let app = p.app();
    let time =
        |k: &str| posted.field(k).and_then(|v| DateTime::parse_from_rfc3339(&v).ok()).map(|t| t.with_timezone(&Utc));
    let filter = DeliveryFilter {
        flow: posted.field("flow"),
        source: posted.field("source"),
        since: time("since"),
        until: time("until"),
        q: posted.field("q"),
        ..Default::default()
    };
    let n = app.store.retry_dead(&filter, app.clock.now()).await.map_err(|e| p.store_fail(e))?;
    app.wake.notify_one();
    if let Some(who) = p.principal() {
        let asked = serde_json::json!({
            "flow": filter.flow, "source": filter.source, "since": filter.since, "until": filter.until, "q": filter.q,
        });
        super::audit(
            app,
            who,
            "deliveries.retried",
            String::new(),
            serde_json::json!({ "filter": asked, "retried": n }),
        )
        .await;
    }
    let mut back = form_urlencoded::Serializer::new(String::new());
    for k in ["flow", "source", "q"] {
        if let Some(v) = posted.field(k) {
            back.append_pair(k, &v);
        }
    }
    for k in ["since", "until"] {
        if let Some(t) = time(k) {
            back.append_pair(k, &view::jst_input(t));
        }
    }
    back.append_pair("done", "bulk").append_pair("n", &n.to_string());
    Ok(Redirect::to(&format!("/console/deliveries?{}", back.finish())).into_response())
}
