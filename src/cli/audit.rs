//! `zkvault audit`: verify and checkpoint the tamper-evident audit trail.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use super::output::{emit, emit_pretty};
use super::{config, exit, open_vault, Cli};

#[derive(Subcommand)]
pub(super) enum AuditCommand {
    /// Walk every hash chain and check every keystore-MACed checkpoint; exits non-zero and names
    /// the first entry that was edited, deleted, inserted or reordered.
    Verify,
    /// MAC the current chain heads now (the service also does it every scheduler tick).
    Checkpoint,
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
