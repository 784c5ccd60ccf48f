//! Trust domains' rows: anchors, CRLs and partner certificates (MACed), anchor proposals
//! waiting for dual control, share receipts and the expiry warnings given.

use std::fmt;

use diesel::dsl::{count, count_star, max, min};
use diesel::prelude::*;

use super::conn::{on_backend, AnyConnection};
use super::row_macs::{first_locked, MacedRow};
use super::schema::{
    audit, share_receipts, trust_anchor_proposals, trust_anchors, trust_crls,
    trust_expiry_warnings, trust_partners,
};
use super::{AuditEntry, StorageError, Store};

/// A domain's anchor bundle (PEM roots and intermediates).
#[derive(Clone, PartialEq, Eq, Debug, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = trust_anchors)]
pub struct AnchorRow {
    pub domain: String,
    pub pem: String,
    pub updated_at: i64,
}

/// An anchor bundle waiting for its dual-control approval.
#[derive(Clone, PartialEq, Eq, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = trust_anchor_proposals)]
pub struct AnchorProposal {
    pub approval: String,
    pub domain: String,
    pub pem: String,
}

/// The CRL of one of a domain's CAs (`issuer`: SHA-256 of that CA's certificate, hex).
#[derive(Clone, PartialEq, Eq, Debug, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = trust_crls)]
pub struct CrlRow {
    pub domain: String,
    pub issuer: String,
    pub der: Vec<u8>,
    pub this_update: i64,
    pub updated_at: i64,
}

/// One certificate registered for a partner id.
#[derive(Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = trust_partners, treat_none_as_null = true)]
pub struct PartnerRow {
    pub domain: String,
    pub partner_id: String,
    pub version: i32,
    /// PEM: the partner's certificate, then the intermediates it was registered with.
    pub chain: String,
    /// `x5t#S256` of the partner's certificate.
    pub thumbprint: String,
    /// "EC P-256" or "RSA <bits>".
    pub key_desc: String,
    pub not_before: i64,
    pub not_after: i64,
    pub created_at: i64,
    pub revoked_reason: Option<String>,
    pub revoked_at: Option<i64>,
}

impl fmt::Debug for PartnerRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartnerRow")
            .field("domain", &self.domain)
            .field("partner_id", &self.partner_id)
            .field("version", &self.version)
            .field("revoked_reason", &self.revoked_reason)
            .finish_non_exhaustive()
    }
}

/// What was shared with whom: never the resident's ID, only its keyed audit tag.
#[derive(Clone, Debug, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = share_receipts)]
pub struct ShareReceipt {
    pub jti: String,
    pub domain: String,
    pub partner_id: String,
    pub version: i32,
    pub thumbprint: String,
    pub namespace: String,
    pub resident_tag: String,
    pub record_name: String,
    pub revision: i64,
    pub created_at: i64,
}

/// Shares of one partner version and one record name: `(version, record name, shares,
/// first, last)`.
pub type ShareCount = (i32, String, i64, Option<i64>, Option<i64>);

/// A row as read: authentic, or refused with what it claims to be (for logs).
pub type Checked<R> = Result<R, String>;

impl Store {
    fn checked_rows<R: MacedRow>(
        &self,
        rows: Vec<(R, Option<Vec<u8>>)>,
    ) -> Result<Vec<Checked<R>>, StorageError> {
        rows.into_iter()
            .map(|r| match self.checked(r) {
                Ok(row) => Ok(Ok(row)),
                Err(StorageError::Integrity(what)) => Ok(Err(what)),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// Each domain's anchors, with the domain even when the row is forged (the domain then
    /// trusts nothing).
    pub fn trust_anchors(&self) -> Result<Vec<(String, Checked<AnchorRow>)>, StorageError> {
        let mut conn = self.conn()?;
        let rows: Vec<(AnchorRow, Option<Vec<u8>>)> = trust_anchors::table
            .order(trust_anchors::domain.asc())
            .select((AnchorRow::as_select(), trust_anchors::mac))
            .load(&mut *conn)?;
        let domains: Vec<String> = rows.iter().map(|r| r.0.domain.clone()).collect();
        Ok(domains.into_iter().zip(self.checked_rows(rows)?).collect())
    }

    /// Every CRL, with its domain even when the row is forged.
    pub fn trust_crls(&self) -> Result<Vec<(String, Checked<CrlRow>)>, StorageError> {
        let mut conn = self.conn()?;
        let rows: Vec<(CrlRow, Option<Vec<u8>>)> = trust_crls::table
            .order((trust_crls::domain.asc(), trust_crls::issuer.asc()))
            .select((CrlRow::as_select(), trust_crls::mac))
            .load(&mut *conn)?;
        let domains: Vec<String> = rows.iter().map(|r| r.0.domain.clone()).collect();
        Ok(domains.into_iter().zip(self.checked_rows(rows)?).collect())
    }

    pub fn trust_partners(&self) -> Result<Vec<Checked<PartnerRow>>, StorageError> {
        let mut conn = self.conn()?;
        let rows = trust_partners::table
            .order((
                trust_partners::domain.asc(),
                trust_partners::partner_id.asc(),
                trust_partners::version.asc(),
            ))
            .select((PartnerRow::as_select(), trust_partners::mac))
            .load(&mut *conn)?;
        self.checked_rows(rows)
    }

    /// Replaces a domain's anchors.
    pub fn set_trust_anchors(
        &self,
        row: &AnchorRow,
        audit: &AuditEntry,
    ) -> Result<(), StorageError> {
        let mac = self.mac_of(row)?;
        self.write(audit, |c| {
            on_backend!(c, |c| diesel::insert_into(trust_anchors::table)
                .values((row, trust_anchors::mac.eq(&mac)))
                .on_conflict(trust_anchors::domain)
                .do_update()
                .set((row, trust_anchors::mac.eq(&mac)))
                .execute(c))?;
            Ok(())
        })
    }

    /// Keeps a proposed anchor bundle until its approval is decided.
    pub fn propose_trust_anchors(&self, row: &AnchorProposal) -> Result<(), StorageError> {
        let mac = self.mac_of(row)?;
        let mut conn = self.conn()?;
        on_backend!(&mut *conn, |c| diesel::insert_into(
            trust_anchor_proposals::table
        )
        .values((row, trust_anchor_proposals::mac.eq(&mac)))
        .execute(c))?;
        Ok(())
    }

    /// The bundle proposed under `approval`, checked.
    pub fn trust_anchor_proposal(
        &self,
        approval: &str,
    ) -> Result<Option<AnchorProposal>, StorageError> {
        let mut conn = self.conn()?;
        trust_anchor_proposals::table
            .find(approval)
            .select((AnchorProposal::as_select(), trust_anchor_proposals::mac))
            .first(&mut *conn)
            .optional()?
            .map(|r| self.checked(r))
            .transpose()
    }

    /// Stores a CRL, replacing the one of the same issuer unless that one is newer
    /// (`Conflict`): an older CRL must not lift a newer one's revocations.
    pub fn put_trust_crl(&self, row: &CrlRow, audit: &AuditEntry) -> Result<(), StorageError> {
        let mac = self.mac_of(row)?;
        self.write(audit, |c| {
            let stored = first_locked!(
                c,
                trust_crls::table
                    .find((&row.domain, &row.issuer))
                    .select((CrlRow::as_select(), trust_crls::mac))
            )?;
            if let Some(stored) = stored {
                // A forged stored row does not block a genuine newer CRL.
                if self
                    .checked(stored)
                    .is_ok_and(|s| s.this_update > row.this_update)
                {
                    return Err(StorageError::Conflict);
                }
            }
            on_backend!(c, |c| diesel::insert_into(trust_crls::table)
                .values((row, trust_crls::mac.eq(&mac)))
                .on_conflict((trust_crls::domain, trust_crls::issuer))
                .do_update()
                .set((row, trust_crls::mac.eq(&mac)))
                .execute(c))?;
            Ok(())
        })
    }

    /// Inserts a partner version (`Conflict` if that version exists: another instance
    /// registered first).
    pub fn add_partner(&self, row: &PartnerRow, audit: &AuditEntry) -> Result<(), StorageError> {
        let mac = self.mac_of(row)?;
        self.write(audit, |c| {
            on_backend!(c, |c| diesel::insert_into(trust_partners::table)
                .values((row, trust_partners::mac.eq(&mac)))
                .execute(c))?;
            Ok(())
        })
    }

    /// Replaces partner version `to` if it still is `from` (checked and locked; `Conflict`
    /// otherwise).
    pub fn change_partner(
        &self,
        from: &PartnerRow,
        to: &PartnerRow,
        audit: &AuditEntry,
    ) -> Result<(), StorageError> {
        let mac = self.mac_of(to)?;
        self.write(audit, |c| {
            let key = (&to.domain, &to.partner_id, to.version);
            let stored = first_locked!(
                c,
                trust_partners::table
                    .find(key)
                    .select((PartnerRow::as_select(), trust_partners::mac))
            )?
            .map(|r| self.checked(r))
            .transpose()?;
            if stored.as_ref() != Some(from) {
                return Err(StorageError::Conflict);
            }
            on_backend!(c, |c| diesel::update(trust_partners::table.find(key))
                .set((to, trust_partners::mac.eq(&mac)))
                .execute(c))?;
            Ok(())
        })
    }

    /// Records a share and its audit entry together.
    pub fn add_share(
        &self,
        receipt: &ShareReceipt,
        audit: &AuditEntry,
    ) -> Result<(), StorageError> {
        self.write(audit, |c| {
            on_backend!(c, |c| diesel::insert_into(share_receipts::table)
                .values(receipt)
                .execute(c))?;
            Ok(())
        })
    }

    /// Shares made to a partner, per version and record name.
    pub fn share_counts(&self, domain: &str, id: &str) -> Result<Vec<ShareCount>, StorageError> {
        let mut conn = self.conn()?;
        Ok(share_receipts::table
            .filter(share_receipts::domain.eq(domain))
            .filter(share_receipts::partner_id.eq(id))
            .group_by((share_receipts::version, share_receipts::record_name))
            .select((
                share_receipts::version,
                share_receipts::record_name,
                count_star(),
                min(share_receipts::created_at),
                max(share_receipts::created_at),
            ))
            .order((share_receipts::version, share_receipts::record_name))
            .load(&mut *conn)?)
    }

    /// Distinct residents whose records went to the given versions of a partner.
    pub fn shared_residents(
        &self,
        domain: &str,
        id: &str,
        versions: &[i32],
    ) -> Result<i64, StorageError> {
        let mut conn = self.conn()?;
        Ok(share_receipts::table
            .filter(share_receipts::domain.eq(domain))
            .filter(share_receipts::partner_id.eq(id))
            .filter(share_receipts::version.eq_any(versions))
            .select(count(share_receipts::resident_tag).aggregate_distinct())
            .first(&mut *conn)?)
    }

    /// What the audit trail says was shared to each of `targets` (a `trust.share` entry's
    /// target, `partner DOMAIN/id vN`): `(target, shares, distinct residents)`. A scan of the
    /// trail's share entries, for exposure reports (rare), not a request path.
    pub fn audited_shares(
        &self,
        targets: &[String],
    ) -> Result<Vec<(String, i64, i64)>, StorageError> {
        let mut conn = self.conn()?;
        Ok(audit::table
            .filter(audit::operation.eq("trust.share"))
            .filter(audit::outcome.eq("ok"))
            .filter(audit::target.eq_any(targets))
            .group_by(audit::target)
            .select((
                audit::target,
                count_star(),
                count(audit::resident_tag).aggregate_distinct(),
            ))
            .load(&mut *conn)?)
    }

    /// Every share of one resident's records in `namespace`, newest first.
    pub fn resident_shares(
        &self,
        namespace: &str,
        resident_tag: &str,
    ) -> Result<Vec<ShareReceipt>, StorageError> {
        let mut conn = self.conn()?;
        Ok(share_receipts::table
            .filter(share_receipts::namespace.eq(namespace))
            .filter(share_receipts::resident_tag.eq(resident_tag))
            .order((share_receipts::created_at.desc(), share_receipts::jti.asc()))
            .select(ShareReceipt::as_select())
            .load(&mut *conn)?)
    }

    /// Every expiry warning given: `(domain, partner, version, days)`.
    pub fn expiry_warnings(&self) -> Result<Vec<(String, String, i32, i32)>, StorageError> {
        let mut conn = self.conn()?;
        Ok(trust_expiry_warnings::table
            .select((
                trust_expiry_warnings::domain,
                trust_expiry_warnings::partner_id,
                trust_expiry_warnings::version,
                trust_expiry_warnings::days,
            ))
            .load(&mut *conn)?)
    }

    /// Records that the `days` warning of a partner version was given, with its audit entry;
    /// `false` (and nothing written) if it already was, here or on another instance.
    pub fn note_expiry_warning(
        &self,
        domain: &str,
        id: &str,
        version: i32,
        days: i32,
        audit: &AuditEntry,
    ) -> Result<bool, StorageError> {
        self.write_if_any(audit, |c| {
            Ok(on_backend!(c, |c| diesel::insert_into(
                trust_expiry_warnings::table
            )
            .values((
                trust_expiry_warnings::domain.eq(domain),
                trust_expiry_warnings::partner_id.eq(id),
                trust_expiry_warnings::version.eq(version),
                trust_expiry_warnings::days.eq(days),
            ))
            .on_conflict_do_nothing()
            .execute(c))?)
        })
    }
}
