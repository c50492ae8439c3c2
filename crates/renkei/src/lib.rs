//! renkei, the binary's library: CLI commands, the HTTP server (ingress, admin API, operations), the
//! delivery worker, metrics and logging.
//!
//! Invariants: only the worker talks to destinations (the API and ingress only enqueue); every write goes
//! through the [`renkei_store::Store`]; what a request or a flow means is decided in `renkei-core`.

/// mimalloc, not glibc's malloc: the hub allocates per request and per delivery on several threads at once, and
/// glibc's malloc and free were ~17% of the hub's CPU at saturation (BENCHMARKS.md, "Third session"). Here, so
/// every binary that runs the hub (`renkei`, `renkei-bench`, the tests) runs it with the same allocator.
///
/// Built with `no_thp` (workspace `Cargo.toml`): mimalloc asks for transparent huge pages otherwise, and every
/// page touched again after a purge zeroed 2 MiB (8.8% of the hub's CPU at 1,000 events/s; idle RSS 28 → 18 MB,
/// BENCHMARKS.md, "Eleventh session").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod access;
pub mod app;
pub mod cli;
pub mod clock;
pub mod connection;
pub mod console;
pub mod health;
pub mod ingest;
pub mod live;
pub mod manage;
pub mod metrics;
pub mod poll;
pub mod sched;
pub mod secrets;
pub mod server;
pub mod telemetry;
pub mod worker;
