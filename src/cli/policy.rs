//! `zkvault policy`: check a policy directory, and plan what it will do.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};
use zkvault::policy;

use super::output::emit;
use super::{config, exit, open_vault, Cli};

#[derive(Subcommand)]
pub(super) enum PolicyCommand {
    /// Validate a policy directory; prints every problem with file, field and reason.
    Check { dir: PathBuf },
    /// The coming rotations, window ends, destructions and credential expiries, from the
    /// current key state in the database, as a dated timeline.
    Plan {
        dir: PathBuf,
        /// How far ahead: e.g. 90d, 1y, 3y.
        #[arg(long, default_value = "1y", value_parser = zkvault::duration::parse)]
        horizon: std::time::Duration,
    },
}

pub(super) fn run(cli: &Cli, command: &PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::Check { dir } => check(dir),
        PolicyCommand::Plan { dir, horizon } => plan(cli, dir, *horizon),
    }
}

fn plan(cli: &Cli, dir: &Path, horizon: std::time::Duration) -> Result<()> {
    let mut config = config(cli)?;
    config.policy_dir = Some(dir.to_path_buf());
    let (vault, _) = open_vault(cli, &config)?;
    let events = vault.plan(zkvault::vault::now_ms(), horizon)?;
    let date = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .format("%Y-%m-%d")
            .to_string()
    };
    let as_json = events
        .iter()
        .map(|e| json!({"date": date(e.at_ms), "at": zkvault::time::rfc3339(e.at_ms), "what": e.what}))
        .collect();
    emit(Value::Array(as_json), || {
        events
            .iter()
            .map(|e| format!("{}  {}", date(e.at_ms), e.what))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

fn check(dir: &Path) -> Result<()> {
    match policy::load_dir(dir) {
        Ok(p) => {
            let names: Vec<&String> = p.namespaces.keys().collect();
            emit(json!({"valid": true, "namespaces": names}), || {
                format!(
                    "{}: valid ({} namespaces: {})",
                    dir.display(),
                    names.len(),
                    names
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
            Ok(())
        }
        Err(errors) => {
            let issues: Vec<Value> = errors
                .0
                .iter()
                .map(|i| json!({"file": i.file, "field": i.field, "reason": i.reason}))
                .collect();
            emit(json!({"valid": false, "issues": issues}), || {
                errors
                    .0
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Err(exit::fail(
                exit::Exit::Config,
                format!("{} problem(s) in {}", errors.0.len(), dir.display()),
            ))
        }
    }
}
