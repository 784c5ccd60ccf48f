//! Helpers shared by integration tests and benches.

pub mod app;
pub mod db;
pub mod softhsm;
