//! The dashboard: what came in and went out over the last day, per source and flow; dead deliveries that
//! need someone; the queue; kintone requests used today per app.
//!
//! The store has no aggregate query yet, so the day's figures are counted from the newest [`SCAN`] events
//! and deliveries of the window; past that, the page says "at least".

use std::collections::BTreeMap;

use chrono::{Duration, DurationRound};
use minijinja::context;
use renkei_core::delivery::Status;
use renkei_store::{DeliveryFilter, EventFilter};
use serde::Serialize;

use super::page::{Answer, Signed};
use super::view;

/// How far back the figures go.
const WINDOW_HOURS: i64 = 24;
/// Rows read per kind for the figures (pages of 500).
const SCAN: usize = 2000;
/// kintone's daily request limit per app on the Standard course.
const KINTONE_DAILY: i64 = 10_000;

#[derive(Default, Serialize)]
struct SourceRow {
    name: String,
    last_hour: u64,
    accepted: u64,
    rejected: u64,
}

#[derive(Default, Serialize)]
struct FlowRow {
    name: String,
    source: String,
    succeeded: u64,
    open: u64,
    retrying: u64,
    dead: u64,
    skipped: u64,
}

#[derive(Serialize)]
struct Hour {
    label: String,
    count: u64,
    /// 0 to 10: the bar's height class (the page's style sheet has no inline styles).
    level: u64,
}

pub async fn show(Signed(p): Signed) -> Answer {
    let app = p.app();
    let cfg = &app.loaded().config;
    let now = app.clock.now();
    let since = now - Duration::hours(WINDOW_HOURS);
    let this_hour = now.duration_trunc(Duration::hours(1)).unwrap_or(now);

    // Events per source, and per hour for the chart.
    let mut sources: BTreeMap<String, SourceRow> =
        cfg.sources.keys().map(|n| (n.to_string(), SourceRow { name: n.to_string(), ..Default::default() })).collect();
    let mut hours = vec![0u64; WINDOW_HOURS as usize];
    let mut seen_events = 0;
    let mut before = None;
    loop {
        let f = EventFilter { since: Some(since), before: before.clone(), limit: 500, ..Default::default() };
        let page = app.store.list_events(&f).await.map_err(|e| p.store_fail(e))?;
        for e in &page {
            let row = sources
                .entry(e.source.clone())
                .or_insert_with(|| SourceRow { name: e.source.clone(), ..Default::default() });
            if e.status == "accepted" {
                row.accepted += 1;
                if now - e.received_at < Duration::hours(1) {
                    row.last_hour += 1;
                }
            } else {
                row.rejected += 1;
            }
            let back =
                (this_hour - e.received_at.duration_trunc(Duration::hours(1)).unwrap_or(e.received_at)).num_hours();
            if let Some(slot) = usize::try_from(WINDOW_HOURS - 1 - back).ok().and_then(|i| hours.get_mut(i)) {
                *slot += 1;
            }
        }
        seen_events += page.len();
        before = page.last().map(|e| e.id.clone());
        if page.len() < 500 || seen_events >= SCAN {
            break;
        }
    }

    // Deliveries per flow.
    let mut flows: BTreeMap<String, FlowRow> = cfg
        .flows
        .iter()
        .map(|(n, f)| {
            (n.to_string(), FlowRow { name: n.to_string(), source: f.source.to_string(), ..Default::default() })
        })
        .collect();
    let mut seen_deliveries = 0;
    let mut before = None;
    loop {
        let f = DeliveryFilter { since: Some(since), before, limit: 500, ..Default::default() };
        let page = app.store.list_deliveries(&f).await.map_err(|e| p.store_fail(e))?;
        for d in &page {
            let row = flows.entry(d.flow.clone()).or_insert_with(|| FlowRow {
                name: d.flow.clone(),
                source: d.source.clone(),
                ..Default::default()
            });
            match d.status {
                Status::Succeeded => row.succeeded += 1,
                Status::Pending | Status::InFlight => row.open += 1,
                Status::Retrying => row.retrying += 1,
                Status::Dead => row.dead += 1,
                Status::Skipped => row.skipped += 1,
            }
        }
        seen_deliveries += page.len();
        before = page.last().map(|d| d.id);
        if page.len() < 500 || seen_deliveries >= SCAN {
            break;
        }
    }

    let max = hours.iter().copied().max().unwrap_or(0).max(1);
    let chart: Vec<Hour> = hours
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let at = this_hour - Duration::hours(WINDOW_HOURS - 1 - i as i64);
            Hour {
                label: at.with_timezone(&renkei_core::dates::jst()).format("%H:00").to_string(),
                count,
                level: if count == 0 { 0 } else { (count * 10).div_ceil(max) },
            }
        })
        .collect();

    let queue = app.store.queue_stats(now).await.map_err(|e| p.store_fail(e))?;
    let oldest = queue.oldest_open_at.map(|t| view::age((now - t).num_seconds(), p.lang));
    let dead = app
        .store
        .list_deliveries(&DeliveryFilter { status: Some(Status::Dead), limit: 10, ..Default::default() })
        .await
        .map_err(|e| p.store_fail(e))?;
    let r = &app.loaded().redactor;
    let dead: Vec<_> = dead
        .iter()
        .map(|d| {
            context! {
                id => d.id, flow => d.flow, source => d.source, event_type => d.event_type,
                updated_at => d.updated_at, attempts => d.attempts,
                error => d.last_error.as_deref().map(|e| view::one_line(r, &e.into(), 160)),
            }
        })
        .collect();

    let day = crate::metrics::jst_day(now);
    let counts = app.store.counts(&format!("kintone:{day}:")).await.map_err(|e| p.store_fail(e))?;
    let kintone: Vec<_> = counts
        .into_iter()
        .filter_map(|(key, n)| {
            let mut parts = key.splitn(4, ':').skip(2);
            let destination = parts.next()?.to_owned();
            let app_id = parts.next()?.to_owned();
            Some(context! {
                destination => destination, app => app_id, requests => n,
                percent => (n * 100 / KINTONE_DAILY).min(100), level => ((n * 10 + KINTONE_DAILY - 1) / KINTONE_DAILY).clamp(0, 10),
            })
        })
        .collect();

    // Subscriptions renkei turned off after their endpoint failed for days (their audit entries say why).
    let disabled_log = app
        .store
        .list_audit(&renkei_store::AuditFilter {
            action: Some("subscription.disabled".into()),
            limit: 50,
            ..Default::default()
        })
        .await
        .map_err(|e| p.store_fail(e))?;
    let loaded = app.loaded();
    let disabled: Vec<_> = loaded
        .config
        .subscriptions
        .iter()
        .filter(|(_, s)| !s.enabled)
        .filter_map(|(name, _)| {
            let target = format!("subscriptions/{name}");
            let entry = disabled_log.iter().find(|a| a.target == target)?;
            Some(context! {
                name => name.as_str(), at => entry.at,
                since => entry.detail["why"]["failing_since"].as_str().map(str::to_owned),
                error => entry.detail["why"]["last_error"].as_str().map(|e| loaded.redactor.text(e).into_owned()),
            })
        })
        .collect();

    Ok(p.render(
        "dashboard.html",
        "dashboard",
        context! {
            disabled_subscriptions => disabled,
            window_hours => WINDOW_HOURS,
            sources => sources.into_values().collect::<Vec<_>>(),
            flows => flows.into_values().collect::<Vec<_>>(),
            events_capped => seen_events >= SCAN,
            deliveries_capped => seen_deliveries >= SCAN,
            scan => SCAN,
            chart => chart,
            queue => queue,
            oldest => oldest,
            dead => dead,
            kintone => kintone,
            kintone_daily => KINTONE_DAILY,
            kintone_day => day,
        },
    ))
}
