//! `GET /v1/keys`: what keys exist, in which state, protecting how many records. No key material.

use serde::Serialize;

use super::{Grant, MasterState, Role, Vault, VaultError};
use crate::keystore::KekState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KekView {
    pub version: i32,
    #[schema(value_type = String)]
    pub state: KekState,
    #[serde(serialize_with = "crate::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retired_at: Option<i64>,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub destroyed_at: Option<i64>,
    /// The keystore holding this version (`soft:<file id>`, `pkcs11:<token label>:<serial>`).
    pub keystore: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MasterView {
    pub version: i32,
    #[schema(value_type = String)]
    pub state: MasterState,
    pub compromised: bool,
    pub kek_version: i32,
    #[serde(serialize_with = "crate::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(serialize_with = "crate::time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    /// Records still sealed under this master.
    pub records: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NamespaceView {
    pub namespace: String,
    pub masters: Vec<MasterView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyOverview {
    /// The keystore in use, as in [`KekView::keystore`].
    pub keystore: String,
    pub keks: Vec<KekView>,
    pub namespaces: Vec<NamespaceView>,
}

impl Vault {
    /// The KEKs, and the masters of the namespaces the caller may see.
    pub fn key_overview(&self, grant: &Grant) -> Result<KeyOverview, VaultError> {
        grant.check(Role::Operator)?;
        let counts = self.store().count_records_by_master()?;
        let keks = self
            .store()
            .keks()?
            .into_iter()
            .map(|k| KekView {
                version: k.version,
                state: k.state,
                created_at: k.created_at,
                retired_at: k.retired_at,
                destroyed_at: k.destroyed_at,
                keystore: k.keystore,
            })
            .collect();
        let namespaces = self
            .policy()
            .namespaces
            .keys()
            .filter(|ns| grant.covers(ns))
            .map(|ns| {
                let masters = self
                    .store()
                    .masters(ns)?
                    .into_iter()
                    .map(|m| MasterView {
                        records: counts
                            .iter()
                            .find(|(n, v, _)| n == ns && *v == m.version)
                            .map_or(0, |c| c.2),
                        version: m.version,
                        state: m.state,
                        compromised: m.compromised_at.is_some(),
                        kek_version: m.kek_version,
                        created_at: m.created_at,
                        updated_at: m.updated_at,
                    })
                    .collect();
                Ok(NamespaceView {
                    namespace: ns.clone(),
                    masters,
                })
            })
            .collect::<Result<_, VaultError>>()?;
        Ok(KeyOverview {
            keystore: self.keyring().keystore().id(),
            keks,
            namespaces,
        })
    }
}
