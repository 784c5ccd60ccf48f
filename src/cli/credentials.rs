//! `zkvault credentials`: API credentials, managed directly on the database.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use zkvault::vault::Role;

use super::output::{cli_grant, emit, json_output};
use super::{config, exit, open_vault, Cli};

#[derive(Subcommand)]
pub(super) enum CredentialCommand {
    /// Issue a credential and print its token once.
    Create {
        #[arg(long)]
        label: String,
        /// Role(s): admin, writer, reader, reencrypt, operator, auditor.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Namespace(s) the credential may use; none = all.
        #[arg(long = "ns")]
        namespaces: Vec<String>,
    },
    /// List credentials (no secrets).
    List,
    /// Revoke a credential by id.
    Revoke { id: String },
    /// Issue a successor (same label, roles, namespaces; token printed once) and let the old
    /// credential expire after the overlap, so clients switch without an outage.
    Rotate {
        id: String,
        /// How long the old token keeps working (never past its own expiry): e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h", value_parser = zkvault::duration::parse)]
        overlap: std::time::Duration,
    },
}

pub(super) fn run(cli: &Cli, command: &CredentialCommand) -> Result<()> {
    let config = config(cli)?;
    let (vault, _) = open_vault(cli, &config)?;
    match command {
        CredentialCommand::Create {
            label,
            roles,
            namespaces,
        } => {
            let roles = roles
                .iter()
                .map(|r| Role::parse(r).ok_or_else(|| exit::fail(exit::Exit::Usage, format!("unknown role {r:?}: expected admin, writer, reader, reencrypt, operator, auditor, signer, verifier, trust_admin or sharer"))))
                .collect::<Result<Vec<_>>>()?;
            let issued = vault.create_credential(
                &cli_grant(&vault, "credential issued", Role::Admin, None)?,
                label,
                &roles,
                namespaces,
            )?;
            if !json_output() {
                eprintln!(
                    "credential {} created; the token below is shown once:",
                    issued.id
                );
            }
            emit(
                json!({"id": issued.id, "token": issued.token.expose()}),
                || issued.token.expose().to_owned(),
            );
        }
        CredentialCommand::List => {
            let list = vault.list_credentials(&cli_grant(&vault, "", Role::Admin, None)?)?;
            emit(serde_json::to_value(&list)?, || {
                list.iter()
                    .map(|c| serde_json::to_string(c).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        CredentialCommand::Rotate { id, overlap } => {
            let issued = vault.rotate_credential(
                &cli_grant(&vault, "credential rotated", Role::Admin, None)?,
                id,
                *overlap,
            )?;
            // Report the expiry the old credential really has now, not the requested overlap.
            let expires = vault
                .store()
                .credential(id)?
                .and_then(|c| c.expires_at)
                .unwrap_or_default();
            let left = std::time::Duration::from_millis(
                (expires - zkvault::vault::now_ms()).max(0) as u64,
            );
            let at = zkvault::time::rfc3339(expires);
            if !json_output() {
                eprintln!(
                    "credential {} issued as successor of {id}, which expires at {at} (in {}); the token below is shown once:",
                    issued.id,
                    zkvault::duration::format(left)
                );
            }
            emit(
                json!({"id": issued.id, "token": issued.token.expose(), "predecessor": id, "predecessor_expires_at": at}),
                || issued.token.expose().to_owned(),
            );
        }
        CredentialCommand::Revoke { id } => {
            vault.revoke_credential(
                &cli_grant(&vault, "credential revoked", Role::Admin, None)?,
                id,
            )?;
            emit(json!({"revoked": id}), || {
                format!("credential {id} revoked")
            });
        }
    }
    Ok(())
}
