//! Derivation-master states (DESIGN.md "Key states").

use super::VaultError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
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
    pub fn as_str(self) -> &'static str {
        match self {
            MasterState::Active => "active",
            MasterState::DecryptOnly => "decrypt_only",
            MasterState::Retired => "retired",
            MasterState::Destroyed => "destroyed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, VaultError> {
        Ok(match s {
            "active" => MasterState::Active,
            "decrypt_only" => MasterState::DecryptOnly,
            "retired" => MasterState::Retired,
            "destroyed" => MasterState::Destroyed,
            other => {
                return Err(VaultError::Internal(format!(
                    "unknown master state {other:?} in database"
                )))
            }
        })
    }
}
