//! renkei, the binary's library: CLI commands, the HTTP server (ingress, admin API, operations), the
//! delivery worker, metrics and logging.
//!
//! Invariants: only the worker talks to destinations (the API and ingress only enqueue); every write goes
//! through the [`renkei_store::Store`]; what a request or a flow means is decided in `renkei-core`.

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
pub mod secrets;
pub mod server;
pub mod telemetry;
pub mod worker;
