//! renkei-bench: how fast and how big renkei is on this machine, next to what the machine itself can do.
//!
//! Everything runs on loopback (127.0.0.1): renkei in a child process of its own (this executable re-run as
//! `renkei-bench hub`), the load generator and the recording sink in this one. Every phase is bounded in count
//! and in time (`--max-secs`), and children stop when this process ends. See BENCHMARKS.md.

mod backlog;
mod blocked;
mod hub;
mod kintone;
mod load;
mod report;
mod scenarios;
mod store;
mod tables;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::report::{Machine, Report, Row};
use crate::scenarios::Ceilings;

#[derive(Debug, Parser)]
#[command(
    name = "renkei-bench",
    version,
    about = "Benchmarks renkei on this machine (loopback only) and prints a Markdown table or JSON",
    long_about = "Benchmarks renkei on this machine, on loopback only, and prints one row per measurement as a \
                  Markdown table (or JSON with --json), with the machine's ceilings for comparison.\n\n\
                  renkei runs in a child process (this executable as `renkei-bench hub`) with a fresh SQLite \
                  file in a temporary directory and crates/renkei-bench/bench.yaml; the load generator \
                  (reqwest, keep-alive connections) and the recording sink run in this process. Build with \
                  --release: debug figures mean nothing."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print JSON instead of a Markdown table.
    #[arg(long, global = true)]
    json: bool,
    /// Run renkei with this `worker.concurrency` instead of its default.
    #[arg(long, global = true, value_name = "N")]
    worker_concurrency: Option<usize>,
    /// Give the bench flow an ordering key (`order_key: "{{ body.customer.code }}"`) and spread the webhooks
    /// over this many keys: deliveries of one key go one at a time, in order, and every one behind an open
    /// delivery of its key waits held. Unkeyed unless given.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    order_keys: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// This machine's ceilings: a bare axum server that only answers 200 (same load generator), and raw SQLite
    /// inserts of ~1 KB rows with renkei's durability (WAL, synchronous=FULL), one and 100 per transaction, and
    /// renkei's own tables written straight (--connections events per commit): ingest alone, and ingest, claim
    /// and attempt record.
    Ceiling(CeilingArgs),
    /// Webhooks acknowledged per second (202 after the durable commit) and their latency; as a ratio to the
    /// bare-HTTP ceiling, which it measures first. The worker is off unless --worker.
    Ingest(IngestArgs),
    /// Events per second from ingress to a recording sink's receipt and their latency: at a fixed offered
    /// rate (open loop, latency from each request's scheduled send time), then at saturation.
    E2e(E2eArgs),
    /// --events queued with the worker off, then renkei restarted with the worker on and the backlog drained:
    /// fill and drain rates, RSS during each, database size per event.
    Backlog(BacklogArgs),
    /// RSS and CPU of renkei started with the quickstart example config and no traffic.
    Idle(IdleArgs),
    /// Events per second written into a kintone fake, with and without batching, and requests per 1,000 events.
    Kintone(KintoneArgs),
    /// What a claim and the next due time cost with --behind deliveries waiting behind one ordering-key head
    /// that is retrying, as many due later, and as many due at a step the claim leaves out: the store alone, on
    /// SQLite and (with --postgres-url) PostgreSQL.
    Blocked(BlockedArgs),
    /// The store alone, per event: ingest, claim and an attempt recorded, on SQLite, one call at a time (its
    /// instruction counts repeat under callgrind).
    Store(StoreArgs),
    /// Everything above, in one run, with their default sizes (a few minutes).
    All(AllArgs),
    /// (internal) The process under test.
    #[command(hide = true)]
    Hub(HubArgs),
}

#[derive(Args, Clone, Debug)]
pub struct KintoneArgs {
    /// Events written (each an upsert of one record).
    #[arg(long, default_value_t = 2_000)]
    pub events: usize,
}

#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// Events stored, claimed and recorded.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Events per ingest, and per claim.
    #[arg(long, default_value_t = 32)]
    pub batch: u64,
    /// Size of each event's body (JSON), and of each attempt's response body, bytes.
    #[arg(long, default_value_t = 1024)]
    pub body_bytes: usize,
}

#[derive(Args, Clone, Debug)]
pub struct BlockedArgs {
    /// Deliveries of the key queued behind its retrying head.
    #[arg(long, default_value_t = 100_000)]
    pub behind: u64,
    /// Claims timed in each of the two cases.
    #[arg(long, default_value_t = 200)]
    pub claims: usize,
    /// Measure PostgreSQL too, in a fresh schema of this database (dropped after).
    #[arg(long, value_name = "URL")]
    pub postgres_url: Option<String>,
}

#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// Concurrent keep-alive connections of the load generator.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Size of each webhook body (JSON), bytes.
    #[arg(long, default_value_t = 1024)]
    pub body_bytes: usize,
}

#[derive(Args, Clone, Debug)]
pub struct CeilingArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Requests sent to the bare HTTP server (after a tenth as many for warm-up).
    #[arg(long, default_value_t = 50_000)]
    pub requests: u64,
    /// Rows inserted one transaction each.
    #[arg(long, default_value_t = 2_000)]
    pub sqlite_rows: u64,
    /// Rows inserted 100 per transaction.
    #[arg(long, default_value_t = 100_000)]
    pub sqlite_batched_rows: u64,
    /// Upper bound of each phase, seconds.
    #[arg(long, default_value_t = 60)]
    pub max_secs: u64,
}

#[derive(Args, Clone, Debug)]
pub struct IngestArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Webhooks sent and measured.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Webhooks sent first and not measured.
    #[arg(long, default_value_t = 1_000)]
    pub warmup: u64,
    /// Run the worker too (delivering to a loopback sink), instead of measuring ingest alone.
    #[arg(long)]
    pub worker: bool,
    /// Skip the bare-HTTP and SQLite ceilings (no ratios then).
    #[arg(long)]
    pub no_ceiling: bool,
    /// Upper bound of each phase, seconds.
    #[arg(long, default_value_t = 120)]
    pub max_secs: u64,
}

#[derive(Args, Clone, Debug)]
pub struct E2eArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Offered rate of the fixed-rate phase, events per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Length of the fixed-rate phase, seconds (after one second of warm-up at the same rate).
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Requests in flight at most in the fixed-rate phase (later ones wait, and their latency shows it).
    #[arg(long, default_value_t = 512)]
    pub max_inflight: usize,
    /// Events sent as fast as --connections allow in the saturation phase.
    #[arg(long, default_value_t = 20_000)]
    pub saturation_events: u64,
    /// Write each fixed-rate event's send and receipt times (ms since start) to this CSV file.
    #[arg(long)]
    pub dump: Option<PathBuf>,
    /// Upper bound of each phase, seconds.
    #[arg(long, default_value_t = 120)]
    pub max_secs: u64,
}

#[derive(Args, Clone, Debug)]
pub struct BacklogArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Events queued while nothing delivers (issue 8 asks for 1000000: about 1 GB of disk and many minutes).
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Upper bound of the fill and of the drain, seconds each.
    #[arg(long, default_value_t = 1800)]
    pub max_secs: u64,
}

#[derive(Args, Clone, Debug)]
pub struct IdleArgs {
    /// The config to start renkei with [default: examples/quickstart/renkei.yaml of this repository].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// How long to leave it alone before reading its memory, seconds.
    #[arg(long, default_value_t = 5)]
    pub secs: u64,
}

#[derive(Args, Clone, Debug)]
struct AllArgs {
    /// Events for the backlog phase.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
}

#[derive(Args, Clone, Debug)]
struct HubArgs {
    /// Run the bare HTTP server instead of renkei.
    #[arg(long)]
    bare: bool,
    #[arg(long, required_unless_present = "bare")]
    config: Option<PathBuf>,
    #[arg(long, required_unless_present = "bare")]
    db: Option<PathBuf>,
    #[arg(long)]
    no_worker: bool,
}

/// Default values of an argument group, as if given no flags.
fn defaults<T: Args>() -> T {
    #[derive(Parser)]
    struct Wrap<T: Args> {
        #[command(flatten)]
        inner: T,
    }
    Wrap::<T>::parse_from(["renkei-bench"]).inner
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Hub(_)) {
        // The hub runs as `renkei serve` does (renkei/src/sched.rs), the bare ceiling too: the same stack.
        renkei::sched::prefer_throughput();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let result = runtime.block_on(async {
        if let Command::Hub(h) = cli.command {
            let mode = match (h.bare, h.config, h.db) {
                (false, Some(config), Some(db)) => hub::Mode::Renkei { config, db, worker: !h.no_worker },
                _ => hub::Mode::Bare,
            };
            return hub::child_main(mode).await;
        }
        if let Some(n) = cli.worker_concurrency {
            scenarios::WORKER_CONCURRENCY.set(n).expect("set once");
        }
        if let Some(n) = cli.order_keys {
            load::ORDER_KEYS.set(n).expect("set once");
        }
        let machine = Machine::probe();
        if cfg!(debug_assertions) {
            eprintln!("# warning: a debug build; run with --release for figures that mean something");
        }
        let rows = run(cli.command).await?;
        Report { machine, rows }.print(cli.json);
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<Vec<Row>> {
    Ok(match command {
        Command::Ceiling(a) => {
            let mut rows = scenarios::ceiling(&a).await?.0;
            // Not part of `all`'s ceiling: ingest and e2e measure it after their runs.
            rows.extend(tables::ceiling(&a.load).await?.0);
            rows
        }
        Command::Ingest(a) => scenarios::ingest(&a, Ceilings::default()).await?.0,
        Command::E2e(a) => scenarios::e2e(&a).await?,
        Command::Backlog(a) => backlog::backlog(&a).await?,
        Command::Idle(a) => backlog::idle(&a).await?,
        Command::Kintone(a) => kintone::kintone(&a).await?,
        Command::Blocked(a) => blocked::blocked(&a).await?,
        Command::Store(a) => store::store(&a).await?,
        Command::All(all) => {
            let mut rows = Vec::new();
            eprintln!("# idle");
            rows.extend(backlog::idle(&defaults()).await?);
            eprintln!("# ceiling");
            let (r, ceilings) = scenarios::ceiling(&defaults()).await?;
            rows.extend(r);
            eprintln!("# ingest");
            // The disk is shared: each phase measures its SQLite ceiling again, just before it runs.
            rows.extend(scenarios::ingest(&defaults(), Ceilings { sqlite_one: None, ..ceilings }).await?.0);
            eprintln!("# e2e");
            rows.extend(scenarios::e2e(&defaults()).await?);
            eprintln!("# backlog");
            let b = BacklogArgs { events: all.events, ..defaults() };
            rows.extend(backlog::backlog(&b).await?);
            rows
        }
        Command::Hub(_) => unreachable!("handled in main"),
    })
}
