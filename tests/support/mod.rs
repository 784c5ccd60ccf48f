//! Helpers shared by integration tests and benches.

pub mod app;
pub mod db;
// Only the binaries that run `zkvault` as operators do use it.
#[allow(dead_code)]
pub mod deployment;
// Only the binaries with independent checkers in Python use it.
#[allow(dead_code)]
pub mod python;
pub mod raw;
// Not every test binary that includes `support` uses SoftHSM.
#[allow(dead_code)]
pub mod softhsm;
// Only the signing tests use it.
#[allow(dead_code)]
pub mod signing;
// Only the trust tests use it.
#[allow(dead_code)]
pub mod trust;
pub mod writer;
