//! renkei-core: what renkei means, with no I/O.
//!
//! The config model, inbound body parsing, templates, flow planning and rendering, the retry policy and
//! the delivery state machine. Nothing here opens a socket, a file or a database, or reads the clock:
//! callers pass in bytes, text and `now`. That keeps every rule here testable with plain values, and is
//! why this crate does not depend on tokio, sqlx or reqwest.

pub mod body;
pub mod config;
pub mod dates;
pub mod delivery;
pub mod event;
pub mod flow;
pub mod message;
pub mod net;
pub mod presets;
pub mod redact;
pub mod signing;
pub mod template;
pub mod types;

pub use message::{Lang, Msg};
