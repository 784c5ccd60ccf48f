//! BENCH-ONLY no-encryption baseline for `loadtest/run.sh`. NEVER a mode of the product: it
//! stores resident IDs and record bodies IN CLEAR.
//!
//! It is zkvault's own server (`zkvault::app::serve_with`: the same routes, extractors, bearer
//! check, body limits and deadlines, telemetry, background work) with one part replaced: the
//! record use cases behind the data-plane routes ([`DataPlane`]). Those do what the vault's do
//! (validate name, ID and size, the same `Store` and schema, the same read-then-write
//! optimistic PUT, the same audit entries) and leave out exactly the cost the ratio measures:
//! blind index (HMAC), resident key (HKDF), DEK generation, wrapping and the body AEAD. Rows go
//! to the same `records` table: `blind_index` holds the normalised resident ID,
//! `body_ciphertext` the body, nonces and wrapped DEK are zero bytes of the real lengths.
//!
//! Point it only at a database of its own (`loadtest/run.sh` makes a fresh one): on a database
//! holding real data it would write clear-text bodies and IDs beside the sealed records, and ID
//! prefixes into the append-only audit trail.
//!
//! ```text
//! cargo run --release --example baseline -- serve            # same ZKVAULT_* variables as zkvault
//! cargo run --release --example baseline -- seed --count N   # same UINs and bodies as `zkvault seed`
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use zkvault::app;
use zkvault::config::Config;
use zkvault::embedded::EmbeddedLayout;
use zkvault::http::DataPlane;
use zkvault::storage::{AuditEntry, RecordMeta, RecordRow, StorageError, Store};
use zkvault::vault::{
    now_ms, seed_body, seed_uin, valid_record_name, Grant, Precondition, PutOutcome, Record,
    RecordWrite, Role, Vault, VaultError,
};
use zkvault_core::ResidentId;

#[derive(Parser)]
#[command(
    about = "BENCH-ONLY no-encryption baseline of zkvault's data plane (stores IDs and bodies in clear)"
)]
struct Cli {
    #[arg(
        long,
        global = true,
        default_value = "zkvault-baseline-data",
        env = "ZKVAULT_DATA_DIR"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Serve,
    Seed {
        #[arg(long, default_value = "resident-portal")]
        ns: String,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        #[arg(long, default_value_t = 0)]
        start: u64,
        #[arg(long, default_value = "demographics")]
        name: String,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::load(None, &cli.data_dir)?;
    // The real vault serves credentials, policy and the key plane; no key touches a record.
    let layout = EmbeddedLayout {
        dir: cli.data_dir.clone(),
    };
    layout.prepare(&config)?;
    let vault = app::open_vault(&config, true)?;
    match cli.command {
        Command::Serve => {
            eprintln!(
                "\n  !! BASELINE (bench only): resident IDs and bodies are stored IN CLEAR.\n"
            );
            layout.issue_first_credentials(&vault)?;
            let clear = Arc::new(ClearRecords {
                vault: vault.clone(),
                audit_reads: config.audit_reads,
            });
            actix_web::rt::System::new().block_on(async move {
                let service = app::serve_with(vault, clear, &config)?;
                tracing::info!(addr = %service.addr, "baseline listening");
                Ok(service.server.await?)
            })
        }
        Command::Seed {
            ns,
            count,
            start,
            name,
            batch,
        } => seed(&vault, &ns, start, count, &name, batch),
    }
}

fn seed(
    vault: &Vault,
    ns: &str,
    start: u64,
    count: u64,
    name: &str,
    batch: usize,
) -> anyhow::Result<()> {
    let master = vault.keyring().active_version(ns)?;
    let started = Instant::now();
    let mut inserted = 0;
    let mut i = start;
    while i < start + count {
        let hi = (i + batch.max(1) as u64).min(start + count);
        let rows: Vec<RecordRow> = (i..hi)
            .map(|k| {
                let uin = seed_uin(k);
                let body = seed_body(k, &uin);
                let row = Clear {
                    ns,
                    resident: uin.as_bytes(),
                    name,
                    content_type: "application/json",
                    body: &body,
                };
                row.into_row(master, *uuid::Uuid::new_v4().as_bytes(), 1, now_ms())
            })
            .collect();
        inserted += vault.store().insert_records(&rows)?;
        i = hi;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"namespace": ns, "count": count, "inserted": inserted, "seconds": seconds})
    );
    Ok(())
}

/// A record as the baseline stores it: everything in clear.
struct Clear<'a> {
    ns: &'a str,
    resident: &'a [u8],
    name: &'a str,
    content_type: &'a str,
    body: &'a [u8],
}

impl Clear<'_> {
    /// The row, labelled with the namespace's active master as the vault's are (storage refuses
    /// a record under any other), though nothing is sealed under it.
    fn into_row(self, master: u32, id: [u8; 16], revision: i64, created_at: i64) -> RecordRow {
        RecordRow {
            id: id.to_vec(),
            namespace: self.ns.to_owned(),
            blind_index: self.resident.to_vec(),
            name: self.name.to_owned(),
            format: 0,
            master_version: master as i32,
            dek_nonce: vec![0; 24],
            wrapped_dek: vec![0; 48],
            body_nonce: vec![0; 24],
            plaintext_len: self.body.len() as i64,
            body_ciphertext: self.body.to_vec(),
            content_type: self.content_type.to_owned(),
            revision,
            etag: hex::encode(zkvault_core::random::array::<8>().expect("OS randomness")),
            created_at,
            updated_at: now_ms(),
        }
    }
}

/// The record use cases without cryptography.
struct ClearRecords {
    vault: Arc<Vault>,
    audit_reads: bool,
}

impl ClearRecords {
    fn store(&self) -> &Store {
        self.vault.store()
    }

    /// The normalised ID, validated as the vault validates it (the policy's checksum).
    fn resident(&self, ns: &str, raw_id: &str) -> Result<Vec<u8>, VaultError> {
        let policy = self
            .vault
            .policy()
            .namespace(ns)
            .ok_or(VaultError::UnknownNamespace)?;
        let id = ResidentId::parse_with(raw_id, policy.id_checksum)
            .map_err(|e| VaultError::BadInput(e.to_string()))?;
        Ok(id.as_bytes().to_vec())
    }

    /// An entry like the vault's, its 16-hex-character resident tag not keyed (bench only).
    fn entry(grant: &Grant, op: &str, ns: &str, target: &str, resident: &[u8]) -> AuditEntry {
        let mut entry = grant.actor().entry(op, ns, target);
        entry.resident_tag = format!(
            "{:0>16}",
            String::from_utf8_lossy(&resident[..resident.len().min(16)])
        );
        entry
    }

    /// Like the vault's `audited`/`audited_read`: changes carry their entry into their own
    /// transaction, reads append it after success when `append` (the `audit_reads` setting),
    /// failures always append it with the error code.
    fn audited<T>(
        &self,
        entry: AuditEntry,
        append: bool,
        f: impl FnOnce(&AuditEntry) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        match f(&entry) {
            Ok(v) => {
                if append {
                    self.store().append_audit(&entry)?;
                }
                Ok(v)
            }
            Err(e) => {
                let mut failed = entry;
                failed.outcome = e.code().to_owned();
                let _ = self.store().append_audit(&failed);
                Err(e)
            }
        }
    }
}

fn check_name(name: &str) -> Result<(), VaultError> {
    if valid_record_name(name) {
        Ok(())
    } else {
        Err(VaultError::BadInput("bad record name".into()))
    }
}

impl DataPlane for ClearRecords {
    fn put_record(
        &self,
        grant: &Grant,
        raw_id: &str,
        write: &RecordWrite,
    ) -> Result<PutOutcome, VaultError> {
        let ns = grant.namespace(Role::Writer)?;
        check_name(write.name)?;
        let limit = self.vault.max_record_bytes(grant)?;
        if write.body.len() > limit {
            return Err(VaultError::TooLarge {
                size: write.body.len(),
                limit,
            });
        }
        let resident = self.resident(ns, raw_id)?;
        let entry = Self::entry(grant, "record.put", ns, write.name, &resident);
        let store = self.store();
        self.audited(entry, false, |entry| {
            for _ in 0..5 {
                let master = self.vault.keyring().active_version(ns)?;
                let existing = store.record(ns, &resident, write.name)?;
                match (write.precondition, &existing) {
                    (Precondition::Never, _) | (Precondition::IfNoneMatch, Some(_)) => {
                        return Err(VaultError::PreconditionFailed)
                    }
                    (Precondition::IfMatch(_) | Precondition::IfExists, None) => {
                        return Err(VaultError::PreconditionFailed)
                    }
                    (Precondition::IfMatch(tag), Some(row)) if *tag != row.etag => {
                        return Err(VaultError::PreconditionFailed)
                    }
                    _ => {}
                }
                let id: [u8; 16] = match &existing {
                    Some(r) => {
                        r.id.as_slice()
                            .try_into()
                            .map_err(|_| VaultError::Integrity)?
                    }
                    None => *uuid::Uuid::new_v4().as_bytes(),
                };
                let revision = existing.as_ref().map_or(1, |r| r.revision + 1);
                let created_at = existing.as_ref().map_or(now_ms(), |r| r.created_at);
                let row = Clear {
                    ns,
                    resident: &resident,
                    name: write.name,
                    content_type: write.content_type,
                    body: write.body,
                }
                .into_row(master, id, revision, created_at);
                let written = match &existing {
                    None => store.insert_record(&row, entry).map(|()| true),
                    Some(old) => store.replace_record(&row, old.revision, entry),
                };
                // A concurrent create won, or the active master changed: go round again.
                let written = match written {
                    Ok(w) => w,
                    Err(StorageError::Conflict | StorageError::MasterChanged) => false,
                    Err(e) => return Err(e.into()),
                };
                if written {
                    return Ok(PutOutcome {
                        created: existing.is_none(),
                        revision,
                        etag: row.etag,
                        master_version: master,
                    });
                }
            }
            Err(VaultError::Conflict(
                "record is being written concurrently; retry".into(),
            ))
        })
    }

    fn get_record(&self, grant: &Grant, raw_id: &str, name: &str) -> Result<Record, VaultError> {
        let ns = grant.namespace(Role::Reader)?;
        check_name(name)?;
        let resident = self.resident(ns, raw_id)?;
        let entry = Self::entry(grant, "record.get", ns, name, &resident);
        self.audited(entry, self.audit_reads, |_| {
            let row = self
                .store()
                .record(ns, &resident, name)?
                .ok_or(VaultError::NotFound)?;
            Ok(Record {
                body: row.body_ciphertext.into(),
                content_type: row.content_type,
                etag: row.etag,
                revision: row.revision,
            })
        })
    }

    fn delete_record(&self, grant: &Grant, raw_id: &str, name: &str) -> Result<(), VaultError> {
        let ns = grant.namespace(Role::Writer)?;
        check_name(name)?;
        let resident = self.resident(ns, raw_id)?;
        let entry = Self::entry(grant, "record.delete", ns, name, &resident);
        self.audited(entry, false, |entry| {
            if self.store().delete_record(ns, &resident, name, entry)? {
                Ok(())
            } else {
                Err(VaultError::NotFound)
            }
        })
    }

    fn list_records(&self, grant: &Grant, raw_id: &str) -> Result<Vec<RecordMeta>, VaultError> {
        let ns = grant.namespace(Role::Reader)?;
        let resident = self.resident(ns, raw_id)?;
        let entry = Self::entry(grant, "record.list", ns, "", &resident);
        self.audited(entry, self.audit_reads, |_| {
            Ok(self.store().list_records(ns, &resident)?)
        })
    }

    fn erase_resident(&self, grant: &Grant, raw_id: &str) -> Result<u64, VaultError> {
        let ns = grant.namespace(Role::Writer)?;
        let resident = self.resident(ns, raw_id)?;
        let entry = Self::entry(grant, "resident.erase", ns, "", &resident);
        self.audited(entry, false, |entry| {
            Ok(self.store().erase_resident(ns, &resident, entry)?)
        })
    }
}
