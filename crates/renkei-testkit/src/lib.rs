//! renkei-testkit: fakes of the systems renkei talks to, for tests only.

mod shared;

pub mod esm;
pub mod kintone;
pub mod questetra;
pub mod rakuraku;
pub mod shopran;
