//! `zkvault keystore`: create the configured keystore, or move every master to another.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use zkvault::app;
use zkvault::config::Config;
use zkvault::vault::Role;

use super::output::{cli_grant, emit, emit_pretty};
use super::{config, embedded_layout, guard, open_vault, Cli};

#[derive(Subcommand)]
pub(super) enum KeystoreCommand {
    /// Create the configured keystore (soft: a new sealed file) with its first KEK.
    Init,
    /// Move every master to another keystore (its config file's [keystore] table); records are
    /// untouched. Restart every instance with that keystore configuration afterwards.
    Migrate {
        #[arg(long)]
        to: PathBuf,
        /// Print what would happen; change nothing (the target keystore is not touched).
        #[arg(long)]
        dry_run: bool,
    },
}

pub(super) fn run(cli: &Cli, command: &KeystoreCommand) -> Result<()> {
    match command {
        KeystoreCommand::Migrate { to, dry_run } => {
            let (vault, _) = open_vault(cli, &config(cli)?)?;
            if *dry_run {
                emit_pretty(&guard::migrate(&vault, to)?)?;
                return Ok(());
            }
            let target = Config::load(Some(to), &cli.data_dir)?;
            let target = app::open_keystore(&target.keystore, true)?;
            let grant = cli_grant(&vault, "keystore migration", Role::Operator, None)?;
            let report = vault.migrate_keystore(&grant, target.as_ref())?;
            emit_pretty(&report)?;
            eprintln!(
                "now restart every instance with the keystore configuration of {}",
                to.display()
            );
            Ok(())
        }
        KeystoreCommand::Init => {
            let config = config(cli)?;
            if cli.config.is_none() {
                embedded_layout(cli)?.prepare(&config)?;
            }
            let keystore = app::open_keystore(&config.keystore, true)?;
            let kek = match keystore.active_kek()? {
                Some(v) => v,
                None => keystore.create_kek()?,
            };
            emit(
                json!({"keystore": keystore.kind(), "active_kek": kek}),
                || format!("{} keystore ready; active KEK v{kek}", keystore.kind()),
            );
            Ok(())
        }
    }
}
