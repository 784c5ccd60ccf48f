//! What the resident data-plane routes ask of the service behind them. The vault answers in
//! production; the no-encryption baseline (`examples/baseline.rs`) answers with the same
//! storage minus the cryptography, so a benchmark of the two compares exactly that and runs
//! the same HTTP stack around it.

use crate::storage::RecordMeta;
use crate::vault::{Grant, PutOutcome, Record, RecordWrite, Vault, VaultError};

/// The five record use cases, as [`Vault`] offers them. Blocking: called off the executor.
pub trait DataPlane: Send + Sync {
    fn put_record(
        &self,
        grant: &Grant,
        raw_id: &str,
        write: &RecordWrite,
    ) -> Result<PutOutcome, VaultError>;
    fn get_record(&self, grant: &Grant, raw_id: &str, name: &str) -> Result<Record, VaultError>;
    fn delete_record(&self, grant: &Grant, raw_id: &str, name: &str) -> Result<(), VaultError>;
    fn list_records(&self, grant: &Grant, raw_id: &str) -> Result<Vec<RecordMeta>, VaultError>;
    fn erase_resident(&self, grant: &Grant, raw_id: &str) -> Result<u64, VaultError>;
}

impl DataPlane for Vault {
    fn put_record(
        &self,
        grant: &Grant,
        raw_id: &str,
        write: &RecordWrite,
    ) -> Result<PutOutcome, VaultError> {
        Vault::put_record(self, grant, raw_id, write)
    }
    fn get_record(&self, grant: &Grant, raw_id: &str, name: &str) -> Result<Record, VaultError> {
        Vault::get_record(self, grant, raw_id, name)
    }
    fn delete_record(&self, grant: &Grant, raw_id: &str, name: &str) -> Result<(), VaultError> {
        Vault::delete_record(self, grant, raw_id, name)
    }
    fn list_records(&self, grant: &Grant, raw_id: &str) -> Result<Vec<RecordMeta>, VaultError> {
        Vault::list_records(self, grant, raw_id)
    }
    fn erase_resident(&self, grant: &Grant, raw_id: &str) -> Result<u64, VaultError> {
        Vault::erase_resident(self, grant, raw_id)
    }
}
