//! Key states and credential roles: plain data that storage keeps in rows and the vault decides
//! on (DESIGN.md "Key states"). Each is stored as the text of its `as_str`, roles as their names
//! joined by commas; text that names no value is refused, never defaulted.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use diesel::sql_types::Text;
use diesel::{AsExpression, FromSqlRow};

/// Stored text that names no value of its type (a damaged or tampered row).
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} {text:?}")]
pub struct Unknown {
    what: &'static str,
    text: String,
}

/// `Display` and `FromStr` as the stored text, for a type whose `ALL` lists every value.
macro_rules! text_enum {
    ($t:ty, $what:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = Unknown;

            fn from_str(s: &str) -> Result<Self, Unknown> {
                <$t>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| Unknown {
                        what: $what,
                        text: s.to_owned(),
                    })
            }
        }
    };
}

/// A derivation master's place in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, AsExpression, FromSqlRow)]
#[serde(rename_all = "snake_case")]
#[diesel(sql_type = Text)]
pub enum MasterState {
    /// New writes go here; exactly one per namespace.
    Active,
    /// Still opens its records; takes no new ones.
    DecryptOnly,
    /// No records left.
    Retired,
    /// Material deleted: its remaining records are crypto-shredded.
    Destroyed,
}

impl MasterState {
    const ALL: [MasterState; 4] = [
        MasterState::Active,
        MasterState::DecryptOnly,
        MasterState::Retired,
        MasterState::Destroyed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MasterState::Active => "active",
            MasterState::DecryptOnly => "decrypt_only",
            MasterState::Retired => "retired",
            MasterState::Destroyed => "destroyed",
        }
    }

    /// Opens records: active or decrypt-only.
    pub fn is_live(self) -> bool {
        matches!(self, MasterState::Active | MasterState::DecryptOnly)
    }
}

text_enum!(MasterState, "master state");

/// What a record write or move needs of a master. Storage checks it on the master's row inside
/// the write's own transaction; the rule is the key lifecycle's, so it lives beside the states.
#[derive(Clone, Copy)]
pub(crate) enum MasterUse {
    /// New ciphertext goes under it: it must be the active master.
    WriteTo,
    /// A DEK is rewrapped away from it: live and not compromised (a compromised master's DEKs
    /// may be known, so its records must be re-keyed instead).
    RewrapFrom,
    /// A record is re-keyed away from it: live.
    RekeyFrom,
}

impl MasterUse {
    pub(crate) fn allows(self, state: MasterState, compromised: bool) -> bool {
        match self {
            MasterUse::WriteTo => state == MasterState::Active,
            MasterUse::RewrapFrom => state.is_live() && !compromised,
            MasterUse::RekeyFrom => state.is_live(),
        }
    }
}

/// A KEK's place in its lifecycle: `active` → `retired` → `destroyed`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    AsExpression,
    FromSqlRow,
)]
#[serde(rename_all = "snake_case")]
#[diesel(sql_type = Text)]
pub enum KekState {
    /// Wraps and unwraps. At most one version is active.
    Active,
    /// Unwraps only: kept until nothing wrapped under it remains.
    Retired,
    /// Material deleted: can do nothing.
    Destroyed,
}

impl KekState {
    const ALL: [KekState; 3] = [KekState::Active, KekState::Retired, KekState::Destroyed];

    pub fn as_str(self) -> &'static str {
        match self {
            KekState::Active => "active",
            KekState::Retired => "retired",
            KekState::Destroyed => "destroyed",
        }
    }
}

text_enum!(KekState, "KEK state");

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Writer,
    Reader,
    Reencrypt,
    Operator,
    Auditor,
    /// Signs (and verifies) with the signers its credential lists.
    Signer,
    /// Verifies tokens only.
    Verifier,
    /// Keeps trust domains: anchors, CRLs, partner certificates and their revocation.
    TrustAdmin,
    /// Shares records, encrypted to a registered partner (namespace-scoped).
    Sharer,
}

impl Role {
    // New roles go last: a credential's stored roles are written in this order, inside its MAC.
    pub const ALL: [Role; 10] = [
        Role::Admin,
        Role::Writer,
        Role::Reader,
        Role::Reencrypt,
        Role::Operator,
        Role::Auditor,
        Role::Signer,
        Role::Verifier,
        Role::TrustAdmin,
        Role::Sharer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Writer => "writer",
            Role::Reader => "reader",
            Role::Reencrypt => "reencrypt",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Signer => "signer",
            Role::Verifier => "verifier",
            Role::TrustAdmin => "trust_admin",
            Role::Sharer => "sharer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A signing key's state (DESIGN.md "Signing (v1)"): `pending` (published, not yet signing) →
/// `active` (exactly one per signer) → `verify_only` → `retired` (out of the JWKS) →
/// `destroyed`; `compromised` from any state before `destroyed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, AsExpression, FromSqlRow)]
#[serde(rename_all = "snake_case")]
#[diesel(sql_type = Text)]
pub enum SignerState {
    Pending,
    Active,
    VerifyOnly,
    Retired,
    Compromised,
    Destroyed,
}

impl SignerState {
    const ALL: [SignerState; 6] = [
        SignerState::Pending,
        SignerState::Active,
        SignerState::VerifyOnly,
        SignerState::Retired,
        SignerState::Compromised,
        SignerState::Destroyed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignerState::Pending => "pending",
            SignerState::Active => "active",
            SignerState::VerifyOnly => "verify_only",
            SignerState::Retired => "retired",
            SignerState::Compromised => "compromised",
            SignerState::Destroyed => "destroyed",
        }
    }

    /// In the JWKS, and valid for verification.
    pub fn is_published(self) -> bool {
        matches!(
            self,
            SignerState::Pending | SignerState::Active | SignerState::VerifyOnly
        )
    }
}

text_enum!(SignerState, "signer key state");

/// A credential's roles, written in `Role` order (`writer,reader`); read in any order.
#[derive(Debug, Clone, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct Roles(pub BTreeSet<Role>);

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|r| r.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for Roles {
    type Err = Unknown;

    fn from_str(s: &str) -> Result<Self, Unknown> {
        s.split(',')
            .map(|r| {
                Role::parse(r).ok_or_else(|| Unknown {
                    what: "role",
                    text: r.to_owned(),
                })
            })
            .collect::<Result<_, _>>()
            .map(Roles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_round_trips_and_unknown_text_is_refused() {
        for s in MasterState::ALL {
            assert_eq!(s.to_string().parse::<MasterState>().unwrap(), s);
        }
        for s in KekState::ALL {
            assert_eq!(s.to_string().parse::<KekState>().unwrap(), s);
        }
        for s in SignerState::ALL {
            assert_eq!(s.to_string().parse::<SignerState>().unwrap(), s);
        }
        let roles: Roles = "reader,writer".parse().unwrap();
        assert_eq!(roles.to_string(), "writer,reader");
        assert!("Active".parse::<MasterState>().is_err());
        assert!("decrypt-only".parse::<MasterState>().is_err());
        assert!("".parse::<KekState>().is_err());
        assert!("reader,root".parse::<Roles>().is_err());
        assert!("".parse::<Roles>().is_err());
    }
}
