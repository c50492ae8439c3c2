//! The load generator (closed loop over N keep-alive connections, or open loop at a fixed rate), the
//! recording sink, and latency percentiles.
//!
//! Every webhook body carries `id` (its index) and `run` (`"m"` when measured, `"w"` for warm-up); the bench
//! flow passes both through to the sink, which stamps the receipt time of each measured id. Times are
//! nanoseconds since the [`Timeline`]'s start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub const TOKEN: &str = "bench-token";

/// `--order-keys`: how many ordering keys (customer codes) the webhooks are spread over, when the bench flow
/// has one.
pub static ORDER_KEYS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// `; ordering key over N customers` when `--order-keys` is given, for a row's note.
pub fn keys_note() -> String {
    ORDER_KEYS.get().map(|n| format!("; ordering key over {n} customers")).unwrap_or_default()
}

/// A webhook body of about `size` bytes: an order with a few fields and a padding note. Its customer code is
/// the ordering key under `--order-keys`.
pub fn body(run: &str, id: u64, size: usize) -> Vec<u8> {
    let customers = ORDER_KEYS.get().copied().unwrap_or(100_000);
    let head = format!(
        r#"{{"id":{id},"run":"{run}","type":"order.created","customer":{{"code":"C{:05}","name":"株式会社サンプル"}},"total":{},"items":[{{"sku":"A-1","qty":2}},{{"sku":"B-7","qty":1}}],"note":""#,
        id % customers,
        1000 + id % 9000
    );
    let pad = size.saturating_sub(head.len() + 2);
    let mut s = head.into_bytes();
    s.extend(std::iter::repeat_n(b'x', pad));
    s.extend_from_slice(b"\"}");
    s
}

/// Send and receipt times of the measured ids.
pub struct Timeline {
    pub t0: Instant,
    pub sent: Vec<AtomicU64>,
    pub recv: Vec<AtomicU64>,
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
    pub last_recv: AtomicU64,
}

impl Timeline {
    pub fn new(n: usize) -> Arc<Timeline> {
        let zeros = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        Arc::new(Timeline {
            t0: Instant::now(),
            sent: zeros(n),
            recv: zeros(n),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            last_recv: AtomicU64::new(0),
        })
    }

    pub fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// Waits until `n` measured ids have arrived or `limit` passes; returns whether all arrived.
    pub async fn wait_for(&self, n: u64, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while self.received.load(Ordering::Relaxed) < n {
            if Instant::now() > end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Writes `id,sent_ms,received_ms,latency_ms` for the first `n` ids (0 when not sent or not received).
    pub fn dump(&self, path: &std::path::Path, n: usize) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(out, "id,sent_ms,received_ms,latency_ms")?;
        for i in 0..n.min(self.sent.len()) {
            let (s, r) = (self.sent[i].load(Ordering::Relaxed), self.recv[i].load(Ordering::Relaxed));
            let lat = if s > 0 && r > 0 { r.saturating_sub(s) as f64 / 1e6 } else { 0.0 };
            writeln!(out, "{i},{:.3},{:.3},{lat:.3}", s as f64 / 1e6, r as f64 / 1e6)?;
        }
        out.flush()
    }

    /// Send-to-receipt latencies (ns) of the ids in `range` that were both sent and received.
    pub fn latencies(&self, range: std::ops::Range<usize>) -> Vec<u64> {
        range
            .filter_map(|i| {
                let (s, r) = (self.sent[i].load(Ordering::Relaxed), self.recv[i].load(Ordering::Relaxed));
                (s > 0 && r > 0).then(|| r.saturating_sub(s))
            })
            .collect()
    }
}

/// What one load run saw.
#[derive(Debug, Default)]
pub struct Run {
    /// Answers with the expected status.
    pub ok: u64,
    /// Other answers and transport errors, e.g. `503` or `error`.
    pub failed: Vec<(String, u64)>,
    pub elapsed: Duration,
    /// Request latencies in nanoseconds (open loop: from the scheduled send time).
    pub latencies: Vec<u64>,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, other: Run) {
        self.ok += other.ok;
        for (k, n) in other.failed {
            match self.failed.iter_mut().find(|(j, _)| *j == k) {
                Some((_, m)) => *m += n,
                None => self.failed.push((k, n)),
            }
        }
        self.latencies.extend(other.latencies);
    }

    pub fn failures(&self) -> String {
        self.failed.iter().map(|(k, n)| format!("{n}× {k}")).collect::<Vec<_>>().join(", ")
    }
}

/// Where to send and what counts as success.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub expect: u16,
    pub body_size: usize,
    pub run: &'static str,
    /// Stamp send times of measured ids here.
    pub timeline: Option<Arc<Timeline>>,
}

fn client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("fixed client settings")
}

async fn send(client: &reqwest::Client, t: &Target, id: u64, run: &mut Run, started: u64, clock: Instant) {
    if let Some(tl) = &t.timeline {
        tl.sent[id as usize].store(started.max(1), Ordering::Relaxed);
    }
    let r = client
        .post(&t.url)
        .header("content-type", "application/json")
        .header("x-renkei-token", TOKEN)
        .body(body(t.run, id, t.body_size))
        .send()
        .await;
    let outcome = match r {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            if status == t.expect {
                None
            } else {
                Some(status.to_string())
            }
        }
        Err(e) => Some(if e.is_timeout() { "timeout".into() } else { "error".into() }),
    };
    match outcome {
        None => {
            run.ok += 1;
            run.latencies.push((clock.elapsed().as_nanos() as u64).saturating_sub(started));
        }
        Some(k) => run.merge(Run { failed: vec![(k, 1)], ..Run::default() }),
    }
}

/// Closed loop: `connections` tasks, each sending its next request as soon as the last is answered, until
/// `count` requests are sent or `limit` has passed.
pub async fn closed_loop(t: &Target, connections: usize, count: u64, limit: Duration) -> Run {
    let client = client(connections);
    let next = Arc::new(AtomicU64::new(0));
    let clock = t.timeline.as_ref().map_or_else(Instant::now, |tl| tl.t0);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..connections {
        let (client, next, t) = (client.clone(), next.clone(), t.clone());
        set.spawn(async move {
            let mut run = Run::default();
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= count || start.elapsed() > limit {
                    return run;
                }
                let started = clock.elapsed().as_nanos() as u64;
                send(&client, &t, id, &mut run, started, clock).await;
            }
        });
    }
    let mut total = Run::default();
    while let Some(r) = set.join_next().await {
        total.merge(r.expect("a load task panicked"));
    }
    total.elapsed = start.elapsed();
    total
}

/// Open loop: request `i` is due at `start + i / rate`, sent then whatever the earlier ones are doing (at most
/// `max_inflight` at once), and its latency counts from when it was due.
pub async fn open_loop(t: &Target, rate: f64, count: u64, limit: Duration, max_inflight: usize) -> Run {
    let client = client(max_inflight);
    let clock = t.timeline.as_ref().map_or_else(Instant::now, |tl| tl.t0);
    let start = tokio::time::Instant::now();
    let slots = Arc::new(Semaphore::new(max_inflight));
    let mut set = JoinSet::new();
    let mut total = Run::default();
    for id in 0..count {
        let due = start + Duration::from_secs_f64(id as f64 / rate);
        tokio::time::sleep_until(due).await;
        if start.elapsed() > limit {
            break;
        }
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let due_ns = due.into_std().saturating_duration_since(clock).as_nanos() as u64;
        let (client, t) = (client.clone(), t.clone());
        set.spawn(async move {
            let mut run = Run::default();
            send(&client, &t, id, &mut run, due_ns, clock).await;
            drop(permit);
            run
        });
        while let Some(r) = set.try_join_next() {
            total.merge(r.expect("a load task panicked"));
        }
    }
    while let Some(r) = set.join_next().await {
        total.merge(r.expect("a load task panicked"));
    }
    total.elapsed = start.elapsed();
    total
}

/// A recording sink on loopback: answers 200 and stamps the receipt of each measured id.
pub struct Sink {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Sink {
    pub async fn start(timeline: Arc<Timeline>) -> anyhow::Result<Sink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let router = axum::Router::new().fallback(receive).with_state(timeline);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Sink { url, stop: Some(stop) })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

#[derive(serde::Deserialize)]
struct Delivered {
    id: u64,
    run: String,
}

async fn receive(State(tl): State<Arc<Timeline>>, body: Bytes) -> StatusCode {
    let now = tl.now();
    let Ok(d) = serde_json::from_slice::<Delivered>(&body) else { return StatusCode::BAD_REQUEST };
    if d.run != "m" {
        return StatusCode::OK;
    }
    let Some(slot) = tl.recv.get(d.id as usize) else { return StatusCode::OK };
    if slot.compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tl.received.fetch_add(1, Ordering::Relaxed);
        tl.last_recv.fetch_max(now, Ordering::Relaxed);
    } else {
        tl.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    StatusCode::OK
}

/// p50, p99, p99.9 and max of latencies in nanoseconds, as milliseconds (nearest-rank on the sorted samples).
pub fn percentiles(mut v: Vec<u64>) -> Option<[f64; 4]> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1e6;
    Some([at(0.5), at(0.99), at(0.999), *v.last().expect("not empty") as f64 / 1e6])
}
