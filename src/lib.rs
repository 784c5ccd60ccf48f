//! zkvault: the service around [`zkvault_core`]. Layers point one way:
//! `keystore` ← `vault` (use cases) ← `storage`, `http`, `cli`.

pub mod keystore;
