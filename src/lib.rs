//! zkvault: the service around [`zkvault_core`].
//!
//! Dependencies point one way: `zkvault_core` (pure crypto) ← `keystore` ← `vault` (use cases,
//! over `storage`) ← `http` (transport) and the `cli`. `policy`, `config` and `states` (the key
//! states and roles that rows hold) are plain data.

pub mod app;
pub mod config;
pub mod duration;
pub mod embedded;
pub mod hardening;
pub mod http;
pub mod keystore;
pub mod lockfile;
pub mod policy;
pub mod secret;
pub mod states;
pub mod storage;
pub mod time;
pub mod vault;
