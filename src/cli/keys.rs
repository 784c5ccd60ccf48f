//! `zkvault keys`: the key lifecycle (rotation, compromise response, destruction).

use anyhow::Result;
use clap::Subcommand;

use zkvault::vault::{Decision, Role};

use super::output::{cli_grant, emit_pretty};
use super::{config, guard, open_vault, Cli};

#[derive(Subcommand)]
pub(super) enum KeysCommand {
    /// KEK versions, and per namespace each master's state and record count (JSON).
    List,
    /// New KEK version; every master and index key rewrapped; the old KEK retired.
    RotateKek,
    /// New active master for a namespace; the previous one becomes decrypt-only.
    RotateMaster {
        #[arg(long)]
        ns: String,
    },
    /// Mark a master compromised (rotates first if active); its records are re-keyed first.
    Compromise {
        #[arg(long)]
        ns: String,
        #[arg(long)]
        version: u32,
    },
    /// Suspected KEK/HSM exposure: rotate the KEK, mark every live master compromised and rotate.
    CompromiseKek {
        /// Print what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Destroy a master's material; refused while records remain unless --shred.
    Destroy {
        #[arg(long)]
        ns: String,
        #[arg(long)]
        version: u32,
        /// Destroy it even though records remain: they become unreadable forever (asks first).
        #[arg(long)]
        shred: bool,
        /// Print what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask before --shred.
        #[arg(long)]
        yes: bool,
    },
    /// Destroy a retired KEK in the keystore once nothing is wrapped under it (asks first).
    DestroyKek {
        version: u32,
        /// Print what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Run the policy's due rotations, retirements and destructions now.
    RunDue,
    /// Dual control: carry out another operator's request (printed by `destroy --shred` or
    /// `destroy-kek` when the policy sets dual_control). Run as a different --actor.
    Approve { approval: String },
}

pub(super) fn run(cli: &Cli, command: &KeysCommand) -> Result<()> {
    let (vault, _) = open_vault(cli, &config(cli)?)?;
    let out = match command {
        KeysCommand::List => serde_json::to_value(guard::overview(&vault)?)?,
        KeysCommand::RotateKek => serde_json::to_value(vault.rotate_kek(&cli_grant(
            &vault,
            "KEK rotation",
            Role::Operator,
            None,
        )?)?)?,
        KeysCommand::RotateMaster { ns } => serde_json::to_value(vault.rotate_master(
            &cli_grant(&vault, "master rotation", Role::Operator, Some(ns))?,
        )?)?,
        KeysCommand::Compromise { ns, version } => serde_json::to_value(vault.compromise_master(
            &cli_grant(
                &vault,
                "suspected master compromise",
                Role::Operator,
                Some(ns),
            )?,
            *version,
        )?)?,
        KeysCommand::CompromiseKek { dry_run: true } => guard::compromise_kek(&vault)?,
        KeysCommand::CompromiseKek { dry_run: false } => {
            serde_json::to_value(vault.compromise_kek(&cli_grant(
                &vault,
                "suspected KEK/HSM compromise",
                Role::Operator,
                None,
            )?)?)?
        }
        KeysCommand::Destroy {
            ns,
            version,
            shred,
            dry_run: true,
            ..
        } => guard::destroy(&vault, ns, *version, *shred)?,
        KeysCommand::Destroy {
            ns,
            version,
            shred,
            dry_run: false,
            yes,
        } => {
            if *shred {
                guard::confirm(
                    &format!("Shredding {ns} v{version} (its records become unreadable forever)"),
                    *yes,
                )?;
            }
            serde_json::to_value(vault.destroy_master(
                &cli_grant(&vault, "destruction", Role::Operator, Some(ns))?,
                *version,
                *shred,
            )?)?
        }
        KeysCommand::DestroyKek {
            version,
            dry_run: true,
            ..
        } => guard::destroy_kek(&vault, *version)?,
        KeysCommand::DestroyKek {
            version,
            dry_run: false,
            yes,
        } => {
            guard::confirm(&format!("Destroying KEK v{version}"), *yes)?;
            let grant = cli_grant(&vault, "KEK destruction", Role::Operator, None)?;
            match vault.destroy_kek(&grant, *version)? {
                Decision::Done(()) => serde_json::json!({"destroyed_kek": version}),
                pending => serde_json::to_value(pending)?,
            }
        }
        KeysCommand::Approve { approval } => serde_json::to_value(vault.approve(
            &cli_grant(&vault, "dual-control approval", Role::Operator, None)?,
            approval,
        )?)?,
        KeysCommand::RunDue => {
            serde_json::to_value(vault.run_due_lifecycle(zkvault::vault::now_ms())?)?
        }
    };
    emit_pretty(&out)?;
    Ok(())
}
