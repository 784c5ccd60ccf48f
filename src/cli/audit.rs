//! `zkvault audit`: verify and checkpoint the tamper-evident audit trail, and accept a
//! database restored from a backup.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use zkvault::vault::Role;

use super::output::{cli_grant, emit, emit_pretty};
use super::{config, exit, open_vault, Cli};

#[derive(Subcommand)]
pub(super) enum AuditCommand {
    /// Walk every hash chain and check every keystore-MACed checkpoint; exits non-zero and names
    /// the first entry that was edited, deleted, inserted or reordered.
    Verify,
    /// Write a chained checkpoint now (the service also does it every scheduler tick).
    Checkpoint,
    /// After restoring a database backup on purpose: accept that the database is older than
    /// the keystore's newest checkpoint, so checkpoints resume. Recorded in the trail.
    AcceptRollback {
        /// Why (the restore's ticket or incident), recorded in the audit entry.
        #[arg(long)]
        reason: String,
    },
}

pub(super) fn run(cli: &Cli, command: &AuditCommand) -> Result<()> {
    let (vault, _) = open_vault(cli, &config(cli)?)?;
    match command {
        AuditCommand::Checkpoint => {
            let n = vault.checkpoint_audit()?;
            emit(json!({"checkpoints_written": n}), || {
                format!("{n} checkpoint(s) written")
            });
        }
        AuditCommand::AcceptRollback { reason } => {
            let from =
                vault.accept_audit_rollback(&cli_grant(&vault, reason, Role::Operator, None)?)?;
            emit(json!({"rolled_back_from": from}), || {
                format!("rollback from checkpoint {from} accepted; checkpoints resume")
            });
        }
        AuditCommand::Verify => {
            let report = vault.verify_audit()?;
            emit_pretty(&report)?;
            if let Some(b) = report.first_break {
                return Err(exit::fail(
                    exit::Exit::Integrity,
                    format!(
                        "audit trail broken at chain {} entry {}: {}",
                        b.chain, b.seq, b.reason
                    ),
                ));
            }
        }
    }
    Ok(())
}
