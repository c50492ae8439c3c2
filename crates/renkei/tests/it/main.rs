//! renkei's integration tests: the real server on port 0, a real SQLite file, a recording receiver.
//! One binary, one harness (`harness.rs`); a file per part of the engine.

mod harness;

mod access;
mod cli;
mod config_edit;
mod console;
mod delivery;
mod disk;
mod ingress;
mod kintone;
mod malformed;
mod multinode;
mod ops;
mod outage;
mod recipes;
mod security;
