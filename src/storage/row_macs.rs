//! MACed rows: the rows that grant power — credentials, derivation masters, KEK metadata —
//! carry an HMAC under the deployment's integrity key, which the database never sees (it is
//! stored only wrapped under a KEK). A database writer can edit, insert or restore such a row
//! but cannot make it authentic. Storage checks the MAC on every read, and on the row an
//! update starts from, so a change the service makes never re-MACs (launders) a forged row.

use std::sync::{Arc, RwLock};

use diesel::prelude::*;
use zkvault_core::IntegrityKey;

use super::conn::AnyConnection;
use super::schema::{approvals, audit_heads, credentials, keks, masters};
use super::{ApprovalRow, AuditHead, CredentialRow, KekRow, MasterRow, StorageError, Store};

/// Makes and checks row MACs; the vault hands storage its integrity key as one.
pub trait RowKey: Send + Sync {
    fn mac(&self, kind: &str, row: &[u8]) -> [u8; 32];
    fn verify(&self, kind: &str, row: &[u8], mac: &[u8]) -> bool;
}

impl RowKey for IntegrityKey {
    fn mac(&self, kind: &str, row: &[u8]) -> [u8; 32] {
        IntegrityKey::mac(self, kind, row)
    }

    fn verify(&self, kind: &str, row: &[u8], mac: &[u8]) -> bool {
        IntegrityKey::verify(self, kind, row, mac)
    }
}

/// `$query`'s first row, if any. On PostgreSQL it stays locked (`FOR UPDATE`) until the
/// transaction ends, so the row an update checked is the row it changes: a writer's edit made
/// while the update waited is read (and refused), not overwritten and re-MACed. SQLite's
/// write transactions already exclude every other writer.
macro_rules! first_locked {
    ($conn:expr, $query:expr) => {
        match $conn {
            AnyConnection::Pg(c) => $query.for_update().first(c).optional(),
            AnyConnection::Sqlite(c) => $query.first(c).optional(),
        }
    };
}

pub(super) use first_locked;

/// The store's row key, shared by its clones; none until the vault loads the integrity key.
pub(super) type RowKeySlot = Arc<RwLock<Option<Arc<dyn RowKey>>>>;

/// A row of one of the MACed tables, encoded field by field (length-prefixed, so no two rows
/// encode alike) for its MAC.
pub(super) trait MacedRow {
    const KIND: &'static str;
    fn describe(&self) -> String;
    fn encode(&self) -> Vec<u8>;
}

#[derive(Default)]
struct Fields(Vec<u8>);

impl Fields {
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn text(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }
    fn int(self, i: i64) -> Self {
        self.bytes(&i.to_be_bytes())
    }
    fn opt_int(self, i: Option<i64>) -> Self {
        match i {
            Some(i) => self.bytes(&[1]).int(i),
            None => self.bytes(&[0]),
        }
    }
    fn opt_bytes(self, b: Option<&[u8]>) -> Self {
        match b {
            Some(b) => self.bytes(&[1]).bytes(b),
            None => self.bytes(&[0]),
        }
    }
}

impl MacedRow for MasterRow {
    const KIND: &'static str = "row:master";
    fn describe(&self) -> String {
        format!("master {} v{}", self.namespace, self.version)
    }
    fn encode(&self) -> Vec<u8> {
        Fields::default()
            .text(&self.namespace)
            .int(self.version.into())
            .text(self.state.as_str())
            .opt_int(self.compromised_at)
            .int(self.kek_version.into())
            .opt_bytes(self.wrapped.as_deref())
            .bytes(&self.salt)
            .int(self.created_at)
            .int(self.updated_at)
            .0
    }
}

impl MacedRow for super::AnchorRow {
    const KIND: &'static str = "row:trust-anchors";
    fn describe(&self) -> String {
        format!("trust anchors of {}", self.domain)
    }
    fn encode(&self) -> Vec<u8> {
        Fields::default()
            .text(&self.domain)
            .text(&self.pem)
            .int(self.updated_at)
            .0
    }
}

impl MacedRow for super::AnchorProposal {
    const KIND: &'static str = "row:trust-anchor-proposal";
    fn describe(&self) -> String {
        format!(
            "proposed trust anchors of {} ({})",
            self.domain, self.approval
        )
    }
    fn encode(&self) -> Vec<u8> {
        Fields::default()
            .text(&self.approval)
            .text(&self.domain)
            .text(&self.pem)
            .0
    }
}

impl MacedRow for super::CrlRow {
    const KIND: &'static str = "row:trust-crl";
    fn describe(&self) -> String {
        format!("CRL of {} issuer {}", self.domain, self.issuer)
    }
    fn encode(&self) -> Vec<u8> {
        Fields::default()
            .text(&self.domain)
            .text(&self.issuer)
            .bytes(&self.der)
            .int(self.this_update)
            .int(self.updated_at)
            .0
    }
}

impl MacedRow for super::PartnerRow {
    const KIND: &'static str = "row:trust-partner";
    fn describe(&self) -> String {
        format!(
            "partner {}/{} v{}",
            self.domain, self.partner_id, self.version
        )
    }
    fn encode(&self) -> Vec<u8> {
        Fields::default()
            .text(&self.domain)
            .text(&self.partner_id)
            .int(self.version.into())
            .text(&self.chain)
            .text(&self.thumbprint)
            .text(&self.key_desc)
            .int(self.not_before)
            .int(self.not_after)
            .int(self.created_at)
            .opt_bytes(self.revoked_reason.as_deref().map(str::as_bytes))
            .opt_int(self.revoked_at)
            .0
    }
}

impl MacedRow for super::SignerKeyRow {
    const KIND: &'static str = "row:signer-key";
    fn describe(&self) -> String {
        format!("signer {} v{}", self.signer, self.version)
    }
    fn encode(&self) -> Vec<u8> {
        Fields::default()
            .text(&self.signer)
            .int(self.version.into())
            .text(&self.alg)
            .text(&self.kid)
            .bytes(&self.public_key)
            .opt_bytes(self.token_id.as_deref())
            .opt_int(self.kek_version.map(i64::from))
            .opt_bytes(self.wrapped.as_deref())
            .text(self.state.as_str())
            .int(self.created_at)
            .int(self.activate_at)
            .int(self.updated_at)
            .opt_int(self.retire_at)
            .opt_bytes(self.certificate.as_deref().map(str::as_bytes))
            .0
    }
}

impl MacedRow for KekRow {
    const KIND: &'static str = "row:kek";
    fn describe(&self) -> String {
        format!("KEK v{}", self.version)
    }
    fn encode(&self) -> Vec<u8> {
        Fields::default()
            .int(self.version.into())
            .text(self.state.as_str())
            .int(self.created_at)
            .opt_int(self.retired_at)
            .opt_int(self.destroyed_at)
            .text(&self.keystore)
            .0
    }
}

impl MacedRow for AuditHead {
    const KIND: &'static str = "row:audit-head";
    fn describe(&self) -> String {
        format!("audit chain {} head", self.chain)
    }
    fn encode(&self) -> Vec<u8> {
        Fields::default()
            .text(&self.chain)
            .int(self.seq)
            .bytes(&self.hash)
            .0
    }
}

impl MacedRow for ApprovalRow {
    const KIND: &'static str = "row:approval";
    fn describe(&self) -> String {
        format!("approval {}", self.id)
    }
    fn encode(&self) -> Vec<u8> {
        Fields::default()
            .text(&self.id)
            .text(&self.operation)
            .text(&self.namespace)
            .int(self.version)
            .text(&self.requested_by)
            .int(self.requested_at)
            .int(self.expires_at)
            .opt_bytes(self.decided_by.as_deref().map(str::as_bytes))
            .opt_int(self.decided_at)
            .0
    }
}

impl MacedRow for CredentialRow {
    const KIND: &'static str = "row:credential";
    fn describe(&self) -> String {
        format!("credential {}", self.id)
    }
    fn encode(&self) -> Vec<u8> {
        Fields::default()
            .text(&self.id)
            .text(&self.label)
            .text(&self.roles.to_string())
            .text(&self.namespaces)
            .text(&self.secret_hash)
            .int(self.created_at)
            .opt_int(self.expires_at)
            .opt_int(self.revoked_at)
            .opt_bytes(self.rotated_from.as_deref().map(str::as_bytes))
            .0
    }
}

impl Store {
    /// MACs and checks rows with `key` from now on (the vault's integrity key, once loaded).
    pub fn set_row_key(&self, key: Arc<dyn RowKey>) {
        *self.row_key.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }

    pub(super) fn row_key(&self) -> Result<Arc<dyn RowKey>, StorageError> {
        self.row_key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                StorageError::Integrity("MACed rows need the integrity key, not loaded".into())
            })
    }

    /// Whether `mac` is `row`'s MAC (no MAC at all is not).
    pub(super) fn authentic<R: MacedRow>(
        &self,
        row: &R,
        mac: Option<&[u8]>,
    ) -> Result<bool, StorageError> {
        let key = self.row_key()?;
        Ok(mac.is_some_and(|mac| key.verify(R::KIND, &row.encode(), mac)))
    }

    /// `row` as read, if its MAC holds; else `Integrity`, logged loudly.
    pub(super) fn checked<R: MacedRow>(
        &self,
        (row, mac): (R, Option<Vec<u8>>),
    ) -> Result<R, StorageError> {
        if self.authentic(&row, mac.as_deref())? {
            return Ok(row);
        }
        let what = row.describe();
        tracing::error!(row = %what, "a MACed row failed authentication: edited, inserted or restored outside zkvault; refused");
        Err(StorageError::Integrity(what))
    }

    pub(super) fn mac_of<R: MacedRow>(&self, row: &R) -> Result<Vec<u8>, StorageError> {
        Ok(self.row_key()?.mac(R::KIND, &row.encode()).to_vec())
    }

    /// Master `(namespace, version)` as stored, checked; `None` if absent.
    pub(super) fn master_in(
        &self,
        c: &mut AnyConnection,
        namespace: &str,
        version: i32,
    ) -> Result<Option<MasterRow>, StorageError> {
        first_locked!(
            c,
            masters::table
                .find((namespace, version))
                .select((MasterRow::as_select(), masters::mac))
        )?
        .map(|r| self.checked(r))
        .transpose()
    }

    /// MACs master `(namespace, version)` as it now stands (after an insert or an update
    /// whose starting row was checked).
    pub(super) fn remac_master(
        &self,
        c: &mut AnyConnection,
        namespace: &str,
        version: i32,
    ) -> Result<(), StorageError> {
        let row: MasterRow = masters::table
            .find((namespace, version))
            .select(MasterRow::as_select())
            .first(c)?;
        diesel::update(masters::table.find((namespace, version)))
            .set(masters::mac.eq(self.mac_of(&row)?))
            .execute(c)?;
        Ok(())
    }

    pub(super) fn kek_in(
        &self,
        c: &mut AnyConnection,
        version: i32,
    ) -> Result<Option<KekRow>, StorageError> {
        first_locked!(
            c,
            keks::table
                .find(version)
                .select((KekRow::as_select(), keks::mac))
        )?
        .map(|r| self.checked(r))
        .transpose()
    }

    pub(super) fn remac_kek(
        &self,
        c: &mut AnyConnection,
        version: i32,
    ) -> Result<(), StorageError> {
        let row: KekRow = keks::table
            .find(version)
            .select(KekRow::as_select())
            .first(c)?;
        diesel::update(keks::table.find(version))
            .set(keks::mac.eq(self.mac_of(&row)?))
            .execute(c)?;
        Ok(())
    }

    pub(super) fn credential_in(
        &self,
        c: &mut AnyConnection,
        id: &str,
    ) -> Result<Option<CredentialRow>, StorageError> {
        first_locked!(
            c,
            credentials::table
                .find(id)
                .select((CredentialRow::as_select(), credentials::mac))
        )?
        .map(|r| self.checked(r))
        .transpose()
    }

    pub(super) fn remac_credential(
        &self,
        c: &mut AnyConnection,
        id: &str,
    ) -> Result<(), StorageError> {
        let row: CredentialRow = credentials::table
            .find(id)
            .select(CredentialRow::as_select())
            .first(c)?;
        diesel::update(credentials::table.find(id))
            .set(credentials::mac.eq(self.mac_of(&row)?))
            .execute(c)?;
        Ok(())
    }

    /// Approval `id` as stored, checked (locked on PostgreSQL); `None` if absent.
    pub(super) fn approval_in(
        &self,
        c: &mut AnyConnection,
        id: &str,
    ) -> Result<Option<ApprovalRow>, StorageError> {
        first_locked!(
            c,
            approvals::table
                .find(id)
                .select((ApprovalRow::as_select(), approvals::mac))
        )?
        .map(|r| self.checked(r))
        .transpose()
    }

    pub(super) fn remac_approval(
        &self,
        c: &mut AnyConnection,
        id: &str,
    ) -> Result<(), StorageError> {
        let row: ApprovalRow = approvals::table
            .find(id)
            .select(ApprovalRow::as_select())
            .first(c)?;
        diesel::update(approvals::table.find(id))
            .set(approvals::mac.eq(self.mac_of(&row)?))
            .execute(c)?;
        Ok(())
    }

    /// MACs every credential, master, KEK, approval and audit head row as it stands, in `c`'s
    /// transaction: once, when the deployment's integrity key is created (rows written before
    /// row MACs existed).
    pub(super) fn mac_all_in(&self, c: &mut AnyConnection) -> Result<usize, StorageError> {
        let mut maced = 0;
        let ids: Vec<String> = credentials::table.select(credentials::id).load(c)?;
        for id in &ids {
            self.remac_credential(c, id)?;
        }
        maced += ids.len();
        let keys: Vec<(String, i32)> = masters::table
            .select((masters::namespace, masters::version))
            .load(c)?;
        for (ns, version) in &keys {
            self.remac_master(c, ns, *version)?;
        }
        maced += keys.len();
        let versions: Vec<i32> = keks::table.select(keks::version).load(c)?;
        for version in &versions {
            self.remac_kek(c, *version)?;
        }
        maced += versions.len();
        let pending: Vec<String> = approvals::table.select(approvals::id).load(c)?;
        for id in &pending {
            self.remac_approval(c, id)?;
        }
        maced += pending.len();
        let heads: Vec<AuditHead> = audit_heads::table.select(AuditHead::as_select()).load(c)?;
        for head in &heads {
            diesel::update(audit_heads::table.find(&head.chain))
                .set(audit_heads::mac.eq(self.mac_of(head)?))
                .execute(c)?;
        }
        Ok(maced + heads.len())
    }
}
