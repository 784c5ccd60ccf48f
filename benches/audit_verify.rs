//! `zkvault audit verify` over a large trail: appends N entries (default 1,000,000; set
//! `AUDIT_BENCH_ENTRIES`) to a fresh SQLite deployment through the store, checkpointing C times
//! along the way (default 1,000, `AUDIT_BENCH_CHECKPOINTS`; the scheduler checkpoints once a
//! minute), then times one full verification, and a second one to show it is not a cold-cache
//! effect. `cargo bench --bench audit_verify`. One run of minutes, so not a criterion loop.

use std::time::Instant;

use zkvault::config::{Config, KeystoreConfig};
use zkvault::keystore::soft::{SoftKeystore, SoftKeystoreOptions};
use zkvault::storage::AuditEntry;

fn main() {
    let setting = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = setting("AUDIT_BENCH_ENTRIES", 1_000_000);
    let every = (n / setting("AUDIT_BENCH_CHECKPOINTS", 1_000).max(1)).max(1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policy")).unwrap();
    std::fs::write(dir.path().join("policy/p.toml"), zkvault::policy::BUILT_IN).unwrap();
    std::fs::write(dir.path().join("passphrase"), "bench").unwrap();
    SoftKeystore::create(
        &dir.path().join("keystore.zks"),
        &zkvault::secret::SecretString::new("bench"),
        SoftKeystoreOptions::for_tests(),
    )
    .unwrap();
    let mut config = Config::embedded(dir.path());
    config.embedded = false;
    config.policy_dir = Some(dir.path().join("policy"));
    config.keystore = KeystoreConfig::Soft {
        path: dir.path().join("keystore.zks"),
        passphrase_file: Some(dir.path().join("passphrase")),
    };
    let vault = zkvault::app::open_vault(&config, false).unwrap();

    let started = Instant::now();
    let entry = AuditEntry {
        actor: "bench".into(),
        operation: "record.get".into(),
        namespace: "resident-portal".into(),
        target: "demographics".into(),
        resident_tag: "0123456789abcdef".into(),
        outcome: "ok".into(),
        ..AuditEntry::default()
    };
    for i in 0..n {
        let e = AuditEntry {
            at: i as i64,
            request_id: format!("{i:016x}"),
            ..entry.clone()
        };
        vault.store().append_audit(&e).unwrap();
        if (i + 1) % every == 0 {
            vault.checkpoint_audit().unwrap();
        }
    }
    let appended = started.elapsed().as_secs_f64();
    vault.checkpoint_audit().unwrap();
    for round in 1..=2 {
        let started = Instant::now();
        let v = vault.verify_audit().unwrap();
        let seconds = started.elapsed().as_secs_f64();
        assert!(v.first_break.is_none(), "{:?}", v.first_break);
        println!(
            "{}",
            serde_json::json!({
                "round": round,
                "entries": v.entries,
                "chains": v.chains,
                "checkpoints": v.checkpoints,
                "verify_seconds": seconds,
                "entries_per_second": v.entries as f64 / seconds,
                "append_seconds": appended,
            })
        );
    }
}
