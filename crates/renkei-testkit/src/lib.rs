//! renkei-testkit: fakes of the systems renkei talks to, for tests only.

pub mod kintone;
