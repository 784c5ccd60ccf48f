//! Helpers shared by integration tests and benches.

pub mod db;
pub mod softhsm;
