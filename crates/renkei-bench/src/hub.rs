//! The process under test. The bench re-runs its own executable as `renkei-bench hub ...`, so renkei (or the
//! bare HTTP server) lives in a process of its own, like `renkei serve`, and its CPU time and memory can be read
//! from `/proc/<pid>` without counting the load generator or the sink.
//!
//! The child prints `listening <addr>` on stdout once it accepts connections, and stops gracefully when its
//! stdin closes (so it also stops when the bench dies).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use axum::body::Bytes;
use axum::http::StatusCode;
use renkei::app::App;
use renkei::clock::SystemClock;
use renkei::worker::Worker;
use renkei_store::sqlite::SqliteStore;
use renkei_store::Store;

/// What the child runs.
#[derive(Clone, Debug)]
pub enum Mode {
    /// renkei with this config and SQLite file; the worker only when `worker` is set.
    Renkei { config: PathBuf, db: PathBuf, worker: bool },
    /// An axum server that reads the body and answers 200 to `POST /hooks/{source}`: the HTTP ceiling.
    Bare,
}

/// The child's entry point (`renkei-bench hub`).
pub async fn child_main(mode: Mode) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Stop when the parent closes our stdin (or dies).
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    match mode {
        Mode::Bare => {
            let router = axum::Router::new()
                .route("/hooks/{source}", axum::routing::post(|_body: Bytes| async { StatusCode::OK }));
            announce(addr)?;
            axum::serve(listener, router).with_graceful_shutdown(stopped(stop_rx)).await?;
        }
        Mode::Renkei { config, db, worker } => {
            // Like `renkei serve`, minus signals and the hourly purge (which does nothing on a fresh file).
            renkei::telemetry::init(false);
            let loaded = renkei::cli::load_file(&config).map_err(|p| anyhow!("{}", p.join("\n")))?;
            let now = chrono::Utc::now();
            let store = SqliteStore::open(&format!("sqlite://{}", db.display()), now).await?;
            store.save_config(&loaded.text, now).await?;
            let app = App::new(loaded, Arc::new(store), Arc::new(SystemClock), None);
            let worker = worker.then(|| tokio::spawn(Arc::new(Worker::new(app.clone())).run(stopped(stop_rx.clone()))));
            announce(addr)?;
            renkei::server::serve(listener, app, stopped(stop_rx)).await?;
            if let Some(w) = worker {
                w.await?;
            }
        }
    }
    Ok(())
}

fn announce(addr: SocketAddr) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening {addr}")?;
    out.flush()
}

/// A running child, seen from the bench.
pub struct Hub {
    pub addr: SocketAddr,
    pub pid: u32,
    child: Child,
}

impl Hub {
    pub async fn start(mode: &Mode) -> anyhow::Result<Hub> {
        // RENKEI_BENCH_HUB_WRAP runs the child under another program, as in
        // `RENKEI_BENCH_HUB_WRAP="valgrind --tool=callgrind"` (BENCHMARKS.md, "Profiling").
        let wrap = std::env::var("RENKEI_BENCH_HUB_WRAP").unwrap_or_default();
        let mut wrap = wrap.split_whitespace();
        let mut cmd = match wrap.next() {
            Some(program) => {
                let mut cmd = Command::new(program);
                cmd.args(wrap).arg(std::env::current_exe()?);
                cmd
            }
            None => Command::new(std::env::current_exe()?),
        };
        cmd.arg("hub");
        match mode {
            Mode::Bare => {
                cmd.arg("--bare");
            }
            Mode::Renkei { config, db, worker } => {
                cmd.arg("--config").arg(config).arg("--db").arg(db);
                if !worker {
                    cmd.arg("--no-worker");
                }
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped");
        let line = tokio::task::spawn_blocking(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let got = r.read_line(&mut line);
            // Keep draining, so a chatty child never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()));
            got.map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(60), line).await.context("the hub did not start")???;
        let Some(addr) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            bail!("the hub did not start (said {line:?})");
        };
        let addr = addr.parse().context("the hub's address")?;
        eprintln!("# {} started: pid {pid}, {addr}", mode.label());
        Ok(Hub { addr, pid, child })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn usage(&self) -> Usage {
        Usage::of(self.pid)
    }

    /// Closes the child's stdin and waits (30 s at most, then kills it). Returns its usage just before the end.
    pub async fn stop(mut self) -> anyhow::Result<Usage> {
        let last = self.usage();
        drop(self.child.stdin.take());
        let pid = self.pid;
        let mut child = self.child;
        tokio::task::spawn_blocking(move || {
            for _ in 0..300 {
                if let Some(status) = child.try_wait()? {
                    return Ok::<_, std::io::Error>(status);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("# hub {pid} did not stop within 30 s; killing it");
            child.kill()?;
            child.wait()
        })
        .await??;
        Ok(last)
    }
}

impl Mode {
    fn label(&self) -> &'static str {
        match self {
            Mode::Bare => "bare HTTP server",
            Mode::Renkei { worker: true, .. } => "renkei (worker on)",
            Mode::Renkei { worker: false, .. } => "renkei (worker off)",
        }
    }
}

/// CPU time and memory of a process, from `/proc/<pid>/stat`, `/proc/<pid>/status` and its threads.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// User + system CPU time, milliseconds.
    pub cpu_ms: f64,
    pub rss_kb: u64,
    /// Peak RSS since the process started.
    pub hwm_kb: u64,
    /// CPU milliseconds per thread id, with the thread's name.
    pub threads: HashMap<u32, (String, f64)>,
    /// Bytes the process caused to be written to storage (`write_bytes` of `/proc/<pid>/io`).
    pub disk_write_bytes: u64,
    /// Write-type system calls (`syscw`: file and socket writes alike).
    pub write_calls: u64,
    /// Context switches of all threads, voluntary and not.
    pub context_switches: u64,
}

impl Usage {
    pub fn of(pid: u32) -> Usage {
        let base = PathBuf::from(format!("/proc/{pid}"));
        let (_, cpu_ms) = stat(&base.join("stat")).unwrap_or_default();
        let status = std::fs::read_to_string(base.join("status")).unwrap_or_default();
        let mut threads = HashMap::new();
        let mut context_switches = 0;
        if let Ok(dir) = std::fs::read_dir(base.join("task")) {
            for t in dir.flatten() {
                let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) else { continue };
                if let Some(s) = stat(&t.path().join("stat")) {
                    threads.insert(tid, s);
                }
                let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                context_switches += kb(&st, "voluntary_ctxt_switches:") + kb(&st, "nonvoluntary_ctxt_switches:");
            }
        }
        let io = std::fs::read_to_string(base.join("io")).unwrap_or_default();
        Usage {
            cpu_ms,
            rss_kb: kb(&status, "VmRSS:"),
            hwm_kb: kb(&status, "VmHWM:"),
            threads,
            disk_write_bytes: kb(&io, "write_bytes:"),
            write_calls: kb(&io, "syscw:"),
            context_switches,
        }
    }

    /// CPU used since `before`, per thread name (names are cut to 15 characters by the kernel), largest first,
    /// plus the busiest single thread.
    pub fn threads_since(&self, before: &Usage) -> (Vec<(String, f64)>, (String, f64)) {
        let mut groups: HashMap<String, f64> = HashMap::new();
        let mut busiest = (String::new(), 0.0);
        for (tid, (name, ms)) in &self.threads {
            let d = ms - before.threads.get(tid).map_or(0.0, |t| t.1);
            *groups.entry(name.clone()).or_default() += d;
            if d > busiest.1 {
                busiest = (name.clone(), d);
            }
        }
        let mut v: Vec<_> = groups.into_iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        (v, busiest)
    }
}

/// The number after `key` on its line of a `/proc` key-value file.
fn kb(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A `stat` file's name and utime + stime in milliseconds.
fn stat(path: &Path) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_owned();
    let f: Vec<&str> = text[close + 2..].split_whitespace().collect();
    // After the name: field 3 (state) is f[0], so utime (14) and stime (15) are f[11] and f[12].
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some((name, ticks * 1000.0 / clock_ticks()))
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Sum of the database file and its WAL and shared-memory files, bytes.
pub fn db_size(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", db.display())).ok())
        .map(|m| m.len())
        .sum()
}

/// The bench's own usage (load generator and sink).
pub fn own_usage() -> Usage {
    Usage::of(std::process::id())
}

/// Samples a process's RSS (KiB) every `every` until `stop` is set.
pub fn sample_rss(
    pid: u32,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let u = Usage::of(pid);
            if u.rss_kb > 0 {
                samples.push(u.rss_kb);
            }
            tokio::time::sleep(every).await;
        }
        samples
    })
}
