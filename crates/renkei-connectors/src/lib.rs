//! renkei-connectors: how a rendered request reaches a destination, and what came back.
//!
//! Connectors take finished requests ([`renkei_core::flow::Request`]) and return what happened; they do
//! not render templates, decide retries or touch the store. Only the worker calls them.

pub mod http;
pub mod kintone;
