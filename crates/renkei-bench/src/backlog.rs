//! A backlog filled while nothing delivers, then drained; and the memory of an idle hub.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::hub::{db_size, own_usage, sample_rss, Hub, Mode, Usage};
use crate::load::{closed_loop, Sink, Timeline};
use crate::report::Row;
use crate::scenarios::{ceiling_sqlite, cpu_rows, target, write_config, Ceilings};
use crate::{BacklogArgs, IdleArgs};

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Samples RSS while `phase` runs; returns its output and the samples (KiB).
async fn sampled<T>(pid: u32, phase: impl std::future::Future<Output = T>) -> (T, Vec<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(pid, Duration::from_millis(500), stop.clone());
    let out = phase.await;
    stop.store(true, Ordering::Relaxed);
    (out, sampler.await.unwrap_or_default())
}

fn spread(samples: &[u64]) -> String {
    let (min, max) = (samples.iter().min().copied().unwrap_or(0), samples.iter().max().copied().unwrap_or(0));
    let at = |f: f64| samples.get(((samples.len() as f64 * f) as usize).min(samples.len().saturating_sub(1)));
    let quarter = [0.0, 0.25, 0.5, 0.75, 1.0]
        .iter()
        .filter_map(|f| at(*f))
        .map(|kb| format!("{:.0}", mb(*kb)))
        .collect::<Vec<_>>()
        .join(" → ");
    format!("RSS {:.0}–{:.0} MB over {} samples (0/25/50/75/100%: {quarter} MB)", mb(min), mb(max), samples.len())
}

/// Fill: renkei with the worker off takes `events` webhooks. Drain: renkei restarted on the same file with
/// the worker on and the sink listening, until the sink has every event.
pub async fn backlog(args: &BacklogArgs) -> anyhow::Result<Vec<Row>> {
    let (mut rows, one) = ceiling_sqlite(2000, 0, 60).await?;
    rows.truncate(1);
    let ceilings = Ceilings { http: None, sqlite_one: Some(one) };
    let limit = Duration::from_secs(args.max_secs);
    let n = args.events;
    let dir = TempDir::new()?;
    let db = dir.path().join("renkei.db");
    let tl = Timeline::new(n as usize);
    let sink = Sink::start(tl.clone()).await?;
    let config = write_config(dir.path(), &sink.url)?;

    // Fill.
    let hub = Hub::start(&Mode::Renkei { config: config.clone(), db: db.clone(), worker: false }).await?;
    let before = (hub.usage(), own_usage());
    let t = target(&hub, &args.load, 202, "m", None);
    let (run, fill_rss) = sampled(hub.pid, closed_loop(&t, args.load.connections, n, limit)).await;
    let after = (hub.usage(), own_usage());
    let fill = hub.stop().await?;
    let filled = run.ok;
    rows.push(
        Row::new("backlog fill: 202/s (worker off)", run.rate(), "events/s")
            .ratio(run.rate(), ceilings.sqlite_one)
            .note(format!(
                "ratio to SQLite one-transaction-per-insert; {filled} of {n} events in {:.0} s{}",
                run.elapsed.as_secs_f64(),
                if run.failed.is_empty() { String::new() } else { format!("; failed: {}", run.failures()) }
            )),
    );
    rows.push(Row::new("backlog fill: hub peak RSS", mb(fill.hwm_kb), "MB").note(spread(&fill_rss)));
    rows.extend(cpu_rows("backlog fill", &before, &after, run.elapsed, filled).into_iter().take(1));
    let filled_size = db_size(&db);
    rows.push(
        Row::new("backlog: database size per queued event", filled_size as f64 / filled.max(1) as f64, "bytes").note(
            format!(
                "{:.0} MB for {filled} events of {} B bodies (WAL checkpointed at stop)",
                filled_size as f64 / 1e6,
                args.load.body_bytes
            ),
        ),
    );

    // Drain.
    let started = Instant::now();
    let hub = Hub::start(&Mode::Renkei { config, db: db.clone(), worker: true }).await?;
    let before = (Usage::default(), own_usage());
    let (all, drain_rss) = sampled(hub.pid, tl.wait_for(filled, limit)).await;
    let elapsed = started.elapsed();
    let after = (hub.usage(), own_usage());
    let drain = hub.stop().await?;
    let got = tl.received.load(Ordering::Relaxed);
    rows.push(Row::new("backlog drain: delivered/s", got as f64 / elapsed.as_secs_f64(), "events/s").note(format!(
        "{got} of {filled} delivered in {:.0} s, including renkei's start{}{}; duplicates {}",
        elapsed.as_secs_f64(),
        if all { "" } else { " (STOPPED at --max-secs)" },
        crate::load::keys_note(),
        tl.duplicates.load(Ordering::Relaxed)
    )));
    let first = drain_rss.first().copied().unwrap_or(0);
    rows.push(
        Row::new(format!("backlog drain: hub RSS with {filled} waiting (first sample)"), mb(first), "MB")
            .note("target: flat while a million events wait"),
    );
    rows.push(Row::new("backlog drain: hub peak RSS", mb(drain.hwm_kb), "MB").note(spread(&drain_rss)));
    rows.extend(cpu_rows("backlog drain", &before, &after, elapsed, got).into_iter().take(2));
    rows.push(
        Row::new("backlog: database size per event after drain", db_size(&db) as f64 / filled.max(1) as f64, "bytes")
            .note("with each delivery's attempt (request and response) kept"),
    );
    drop(sink);
    Ok(rows)
}

/// renkei with the example config, started and left alone; and the bare axum server for comparison.
pub async fn idle(args: &IdleArgs) -> anyhow::Result<Vec<Row>> {
    let dir = TempDir::new()?;
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/renkei.yaml"));
    let wait = Duration::from_secs(args.secs);
    let hub =
        Hub::start(&Mode::Renkei { config: config.clone(), db: dir.path().join("renkei.db"), worker: true }).await?;
    let before = hub.usage();
    tokio::time::sleep(wait).await;
    let after = hub.stop().await?;
    let bare = Hub::start(&Mode::Bare).await?;
    tokio::time::sleep(wait).await;
    let bare = bare.stop().await?;
    let name = config.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(vec![
        Row::new("idle: hub RSS", mb(after.rss_kb), "MB")
            .note(format!("target < 50 MB; {name} (quickstart), worker on, no traffic, after {} s", args.secs)),
        Row::new("idle: hub peak RSS (VmHWM)", mb(after.hwm_kb), "MB").note("includes start-up"),
        Row::new("idle: hub CPU while idle", (after.cpu_ms - before.cpu_ms) / args.secs as f64, "ms/s"),
        Row::new("idle: bare axum server RSS, for comparison", mb(bare.rss_kb), "MB"),
    ])
}
