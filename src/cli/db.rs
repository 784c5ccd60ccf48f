//! `zkvault db`: database maintenance.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use zkvault::app;

use super::output::emit;
use super::{config, Cli};

#[derive(Subcommand)]
pub(super) enum DbCommand {
    /// Apply pending migrations.
    Migrate,
}

pub(super) fn run(cli: &Cli, command: &DbCommand) -> Result<()> {
    match command {
        DbCommand::Migrate => {
            app::open_store(&config(cli)?)?;
            emit(json!({"migrated": true}), || "database migrated".into());
            Ok(())
        }
    }
}
