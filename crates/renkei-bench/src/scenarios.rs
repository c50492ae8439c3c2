//! The ceilings of this machine, ingest, and end to end.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tempfile::TempDir;

use crate::hub::{own_usage, Hub, Mode, Usage};
use crate::load::{closed_loop, open_loop, Sink, Target, Timeline};
use crate::report::{latency_rows, Row};
use crate::{CeilingArgs, E2eArgs, IngestArgs, LoadArgs};

/// What the other measurements are compared with.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ceilings {
    /// Bare axum server, requests/s with the same load generator, connections and body size.
    pub http: Option<f64>,
    /// SQLite inserts of a ~1 KB row, one transaction each, WAL + synchronous=FULL.
    pub sqlite_one: Option<f64>,
}

/// `--worker-concurrency`: renkei's `worker.concurrency` for this run, when not its default.
pub static WORKER_CONCURRENCY: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// The bench config, pointing at `sink`, written into `dir`.
pub fn write_config(dir: &Path, sink: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("renkei.yaml");
    let mut yaml = include_str!("../bench.yaml").replace("__SINK_URL__", sink);
    if crate::load::ORDER_KEYS.get().is_some() {
        let retry = "    retry: {";
        assert!(yaml.contains(retry), "bench.yaml's flow has a retry line");
        yaml = yaml.replacen(retry, &format!("    order_key: \"{{{{ body.customer.code }}}}\"\n{retry}"), 1);
    }
    if let Some(n) = WORKER_CONCURRENCY.get() {
        yaml.push_str(&format!("\nworker: {{ concurrency: {n} }}\n"));
    }
    std::fs::write(&path, yaml)?;
    Ok(path)
}

pub fn target(
    hub: &Hub,
    load: &LoadArgs,
    expect: u16,
    run: &'static str,
    tl: Option<&std::sync::Arc<Timeline>>,
) -> Target {
    Target { url: hub.url("/hooks/orders"), expect, body_size: load.body_bytes, run, timeline: tl.cloned() }
}

/// CPU rows for a phase of `events` events that took `elapsed`: per 1,000 events, cores busy, the busiest
/// thread groups of the hub, and the bench's own share (load generator and sink).
pub fn cpu_rows(
    what: &str,
    before: &(Usage, Usage),
    after: &(Usage, Usage),
    elapsed: Duration,
    events: u64,
) -> Vec<Row> {
    let ms = elapsed.as_secs_f64() * 1000.0;
    let hub = after.0.cpu_ms - before.0.cpu_ms;
    let mut rows = vec![
        Row::new(format!("{what}: hub CPU per 1,000 events"), hub / events.max(1) as f64 * 1000.0, "ms"),
        Row::new(format!("{what}: hub CPU busy"), hub / ms, "cores"),
    ];
    let (groups, busiest) = after.0.threads_since(&before.0);
    for (name, d) in groups.iter().filter(|g| g.1 / ms >= 0.005).take(3) {
        rows.push(Row::new(format!("{what}: hub threads `{name}`"), d / ms, "cores"));
    }
    rows.push(
        Row::new(format!("{what}: busiest hub thread (`{}`)", busiest.0), busiest.1 / ms, "cores")
            .note("near 1.0: this one thread is the bottleneck"),
    );
    let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / events.max(1) as f64;
    let (a, b) = (&after.0, &before.0);
    rows.push(
        Row::new(
            format!("{what}: hub disk writes per event"),
            per(a.disk_write_bytes, b.disk_write_bytes) / 1024.0,
            "KiB",
        )
        .note("/proc/<pid>/io write_bytes: WAL frames (whole 4 KiB pages) and checkpoints"),
    );
    rows.push(Row::new(format!("{what}: hub write calls per event"), per(a.write_calls, b.write_calls), "calls"));
    rows.push(
        Row::new(
            format!("{what}: hub context switches per event"),
            per(a.context_switches, b.context_switches),
            "switches",
        )
        .note("all threads; mostly hand-offs to and from the SQLite worker thread"),
    );
    rows.push(Row::new(
        format!("{what}: load generator + sink CPU busy"),
        (after.1.cpu_ms - before.1.cpu_ms) / ms,
        "cores",
    ));
    rows
}

fn usage(hub: &Hub) -> (Usage, Usage) {
    (hub.usage(), own_usage())
}

fn failures(run: &crate::load::Run) -> String {
    if run.failed.is_empty() {
        String::new()
    } else {
        format!("failed: {}", run.failures())
    }
}

pub async fn ceiling(args: &CeilingArgs) -> anyhow::Result<(Vec<Row>, Ceilings)> {
    let (mut rows, http) = ceiling_http(&args.load, args.requests, args.max_secs).await?;
    let (sql, one) = ceiling_sqlite(args.sqlite_rows, args.sqlite_batched_rows, args.max_secs).await?;
    rows.extend(sql);
    Ok((rows, Ceilings { http: Some(http), sqlite_one: Some(one) }))
}

/// A bare axum server (own process, same runtime settings) answering 200, driven like renkei's ingress.
pub async fn ceiling_http(load: &LoadArgs, requests: u64, max_secs: u64) -> anyhow::Result<(Vec<Row>, f64)> {
    let limit = Duration::from_secs(max_secs);
    let hub = Hub::start(&Mode::Bare).await?;
    let t = target(&hub, load, 200, "w", None);
    closed_loop(&t, load.connections, (requests / 10).max(1000), limit).await;
    let before = usage(&hub);
    let run = closed_loop(&t, load.connections, requests, limit).await;
    let after = usage(&hub);
    hub.stop().await?;
    let c = load.connections;
    let mut rows = vec![Row::new("ceiling: bare HTTP (axum, answers 200)", run.rate(), "req/s").note(format!(
        "{c} keep-alive connections, {} B bodies, {} requests {}",
        load.body_bytes,
        run.ok,
        failures(&run)
    ))];
    rows.extend(latency_rows("ceiling: bare HTTP", run.latencies.clone(), ""));
    let ms = run.elapsed.as_secs_f64() * 1000.0;
    rows.push(Row::new("ceiling: bare HTTP server CPU busy", (after.0.cpu_ms - before.0.cpu_ms) / ms, "cores"));
    rows.push(Row::new("ceiling: load generator CPU busy", (after.1.cpu_ms - before.1.cpu_ms) / ms, "cores"));
    Ok((rows, run.rate()))
}

/// A SQLite file opened with renkei's durability: WAL, `synchronous=FULL`.
pub fn durable(file: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new().filename(file).journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Full)
}

/// Raw inserts of a ~1 KB row with renkei's durability (WAL, synchronous=FULL, `BEGIN IMMEDIATE`, one
/// connection): one transaction per row, then 100 rows per transaction.
pub async fn ceiling_sqlite(one: u64, batched: u64, max_secs: u64) -> anyhow::Result<(Vec<Row>, f64)> {
    let dir = TempDir::new()?;
    let opts = durable(&dir.path().join("raw.db")).create_if_missing(true);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
    sqlx::query("CREATE TABLE raw (id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL, body TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    let limit = Duration::from_secs(max_secs);
    let mut rates = Vec::new();
    for (rows, per_tx) in [(one, 1u64), (batched, 100)] {
        let start = std::time::Instant::now();
        let mut done = 0;
        while done < rows && start.elapsed() < limit {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            for _ in 0..per_tx.min(rows - done) {
                let body = String::from_utf8(crate::load::body("m", done, 1024)).expect("UTF-8");
                sqlx::query("INSERT INTO raw (received_at, body) VALUES (?1, ?2)")
                    .bind(chrono::Utc::now().timestamp_millis())
                    .bind(body)
                    .execute(&mut *tx)
                    .await?;
                done += 1;
            }
            tx.commit().await?;
        }
        rates.push((done as f64 / start.elapsed().as_secs_f64(), done));
    }
    pool.close().await;
    let rows = vec![
        Row::new("ceiling: SQLite insert, 1 transaction per row", rates[0].0, "rows/s")
            .note(format!("~1 KB rows, WAL, synchronous=FULL; {} rows; one fsync-bound commit each", rates[0].1)),
        Row::new("ceiling: SQLite insert, 100 rows per transaction", rates[1].0, "rows/s").note(format!(
            "same, {} rows, each its own statement (a round trip to sqlx's SQLite thread): below what SQLite \
                 can do; see the next two rows",
            rates[1].1
        )),
    ];
    Ok((rows, rates[0].0))
}

/// `POST /hooks/orders` with N keep-alive connections, worker off unless asked.
pub async fn ingest(args: &IngestArgs, ceilings: Ceilings) -> anyhow::Result<(Vec<Row>, Ceilings)> {
    let mut rows = Vec::new();
    let mut ceilings = ceilings;
    if !args.no_ceiling && ceilings.http.is_none() {
        let (r, http) = ceiling_http(&args.load, args.requests, args.max_secs).await?;
        rows.extend(r.into_iter().take(3));
        ceilings.http = Some(http);
    }
    if !args.no_ceiling && ceilings.sqlite_one.is_none() {
        let (r, one) = ceiling_sqlite(2000, 0, args.max_secs).await?;
        rows.extend(r.into_iter().take(1));
        ceilings.sqlite_one = Some(one);
    }
    let limit = Duration::from_secs(args.max_secs);
    let dir = TempDir::new()?;
    let tl = Timeline::new(0);
    let sink = Sink::start(tl).await?;
    let config = write_config(dir.path(), &sink.url)?;
    let db = dir.path().join("renkei.db");
    let hub = Hub::start(&Mode::Renkei { config, db: db.clone(), worker: args.worker }).await?;
    let warm = target(&hub, &args.load, 202, "w", None);
    closed_loop(&warm, args.load.connections, args.warmup, limit).await;
    let before = usage(&hub);
    let run = closed_loop(&target(&hub, &args.load, 202, "m", None), args.load.connections, args.requests, limit).await;
    let after = usage(&hub);
    let worker = if args.worker { "worker on, delivering to a loopback sink" } else { "worker off: ingest alone" };
    rows.push(Row::new("ingest: 202/s", run.rate(), "req/s").ratio(run.rate(), ceilings.http).note(format!(
        "ratio to bare HTTP (target ≥ 40%); {worker}; {} connections, {} events{} {}",
        args.load.connections,
        run.ok,
        crate::load::keys_note(),
        failures(&run)
    )));
    rows.push(
        Row::new("ingest: 202/s vs SQLite one-transaction-per-insert", run.rate(), "req/s")
            .ratio(run.rate(), ceilings.sqlite_one)
            .note("ratio to the raw SQLite ceiling (each ingest is one durable commit)"),
    );
    rows.extend(latency_rows("ingest", run.latencies.clone(), ""));
    rows.extend(cpu_rows("ingest", &before, &after, run.elapsed, run.ok));
    let last = hub.stop().await?;
    rows.push(Row::new("ingest: hub peak RSS", last.hwm_kb as f64 / 1024.0, "MB"));
    let events = args.warmup + run.ok;
    rows.push(
        Row::new("ingest: database size per event", crate::hub::db_size(&db) as f64 / events as f64, "bytes")
            .note(format!("{} B bodies; event + delivery rows and indexes", args.load.body_bytes)),
    );
    if !args.no_ceiling {
        // Measured after renkei's run, not before: its writes would still be reaching the disk during it.
        let (r, schema) = crate::tables::ceiling(&args.load).await?;
        rows.extend(r.into_iter().take(1));
        rows.push(
            Row::new("ingest: 202/s vs SQLite with renkei's tables", run.rate(), "req/s")
                .ratio(run.rate(), Some(schema.ingest))
                .note("ratio to the same rows written straight, as many to a commit as there are connections"),
        );
    }
    Ok((rows, ceilings))
}

/// End to end at a fixed offered rate (open loop), then at saturation (closed loop).
pub async fn e2e(args: &E2eArgs) -> anyhow::Result<Vec<Row>> {
    let limit = Duration::from_secs(args.max_secs);
    // Each delivered event costs at least two durable commits (ingest, then the attempt): the disk's commit
    // rate, measured just before, bounds what follows.
    let (mut rows, _) = ceiling_sqlite(1000, 0, 30).await?;
    rows.truncate(1);

    // 1. Fixed rate.
    let n = (args.rate * args.secs as f64) as u64;
    let (dir, tl, sink, hub) = start_with_sink(n).await?;
    open_loop(&target(&hub, &args.load, 202, "w", None), args.rate, args.rate as u64, limit, args.max_inflight).await;
    let before = usage(&hub);
    let began = std::time::Instant::now();
    let t = target(&hub, &args.load, 202, "m", Some(&tl));
    let run = open_loop(&t, args.rate, n, limit, args.max_inflight).await;
    let all = tl.wait_for(run.ok, Duration::from_secs(30)).await;
    let after = usage(&hub);
    let span = began.elapsed();
    if let Some(path) = &args.dump {
        tl.dump(path, n as usize)?;
    }
    let what = format!("e2e at {}/s", args.rate);
    rows.push(Row::new(format!("{what}: delivered"), tl.received.load(Ordering::Relaxed) as f64, "events").note(
        format!(
            "of {} accepted, {n} offered over {} s (open loop){}{}; duplicates {} {}",
            run.ok,
            args.secs,
            if all { "" } else { "; NOT ALL DELIVERED within 30 s" },
            crate::load::keys_note(),
            tl.duplicates.load(Ordering::Relaxed),
            failures(&run)
        ),
    ));
    rows.extend(latency_rows(&format!("{what}: ingress → sink"), tl.latencies(0..n as usize), "target < 25 ms"));
    rows.extend(latency_rows(&format!("{what}: ingest (202)"), run.latencies.clone(), "").into_iter().skip(1).take(1));
    rows.extend(cpu_rows(&what, &before, &after, span, run.ok));
    let last = hub.stop().await?;
    rows.push(Row::new(format!("{what}: hub peak RSS"), last.hwm_kb as f64 / 1024.0, "MB"));
    drop((sink, dir));

    // 2. Saturation: as fast as the connections go; the worker delivers what it can meanwhile.
    let n = args.saturation_events;
    let (dir, tl, sink, hub) = start_with_sink(n).await?;
    closed_loop(&target(&hub, &args.load, 202, "w", None), args.load.connections, 1000, limit).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // let the warm-up drain
    let before = usage(&hub);
    let start = tl.now();
    let t = target(&hub, &args.load, 202, "m", Some(&tl));
    let run = closed_loop(&t, args.load.connections, n, limit).await;
    let all = tl.wait_for(run.ok, limit).await;
    let after = usage(&hub);
    let got = tl.received.load(Ordering::Relaxed);
    let span = Duration::from_nanos(tl.last_recv.load(Ordering::Relaxed).saturating_sub(start));
    let rate = got as f64 / span.as_secs_f64().max(1e-9);
    rows.push(Row::new("e2e at saturation: delivered/s", rate, "events/s").note(format!(
        "target ≥ 10,000/s; {got} of {} accepted delivered{}, first send to last receipt; {} connections{}; duplicates {} {}",
        run.ok,
        if all { "" } else { " (NOT ALL within the limit)" },
        args.load.connections,
        crate::load::keys_note(),
        tl.duplicates.load(Ordering::Relaxed),
        failures(&run)
    )));
    rows.push(
        Row::new("e2e at saturation: ingest 202/s meanwhile", run.rate(), "req/s")
            .note("the queue grows when this is above the delivered rate"),
    );
    rows.extend(latency_rows("e2e at saturation: ingress → sink", tl.latencies(0..n as usize), "mostly queueing"));
    rows.extend(cpu_rows("e2e at saturation", &before, &after, span, got));
    let last = hub.stop().await?;
    rows.push(Row::new("e2e at saturation: hub peak RSS", last.hwm_kb as f64 / 1024.0, "MB"));
    drop((sink, dir));
    // What these tables allow, measured last: its writes would still be reaching the disk during a run that
    // followed it (the fixed rate's p99 read 19-391 ms right after it, against 5-8 ms).
    let (r, schema) = crate::tables::ceiling(&args.load).await?;
    rows.extend(r);
    rows.push(
        Row::new("e2e at saturation: delivered/s vs SQLite with renkei's tables", rate, "events/s")
            .ratio(rate, Some(schema.cycle))
            .note("ratio to the same rows written, claimed and recorded straight, three commits per batch"),
    );
    Ok(rows)
}

/// A fresh directory, a timeline for `n` ids, a sink, and renkei with the worker on.
async fn start_with_sink(n: u64) -> anyhow::Result<(TempDir, std::sync::Arc<Timeline>, Sink, Hub)> {
    let dir = TempDir::new()?;
    let tl = Timeline::new(n as usize);
    let sink = Sink::start(tl.clone()).await?;
    let config = write_config(dir.path(), &sink.url)?;
    let hub = Hub::start(&Mode::Renkei { config, db: dir.path().join("renkei.db"), worker: true })
        .await
        .context("starting renkei")?;
    Ok((dir, tl, sink, hub))
}
