//! Guards for the sweeping and irreversible commands: `--dry-run` says what would happen from
//! the current key state and changes nothing; the irreversible ones ask for confirmation
//! unless `--yes`, and without a terminal to ask on they refuse.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use serde_json::{json, Value};
use zkvault::keystore::KekState;
use zkvault::vault::{KeyOverview, MasterState, Role, Vault};

use super::exit::{fail, Exit};
use super::output::cli_grant;

/// The key overview, as the local operator sees it.
pub fn overview(vault: &Vault) -> Result<KeyOverview> {
    Ok(vault.key_overview(&cli_grant(vault, "", Role::Operator, None)?)?)
}

/// What `keys destroy` would do to master `ns` v`version`.
pub fn destroy(vault: &Vault, ns: &str, version: u32, shred: bool) -> Result<Value> {
    let keys = overview(vault)?;
    let m = keys
        .namespaces
        .iter()
        .find(|n| n.namespace == ns)
        .and_then(|n| n.masters.iter().find(|m| m.version as u32 == version))
        .ok_or_else(|| fail(Exit::NotFound, format!("no master {ns} v{version}")))?;
    let outcome = match (m.state, m.records, shred) {
        (MasterState::Destroyed, ..) => "nothing: already destroyed".to_owned(),
        (MasterState::Active, ..) => {
            "refused: the active master cannot be destroyed; rotate first".to_owned()
        }
        (_, 0, _) => "the master's material is destroyed".to_owned(),
        (_, n, false) => {
            format!("refused: {n} record(s) remain (--shred would make them unreadable forever)")
        }
        (_, n, true) => format!(
            "the master's material is destroyed and {n} record(s) become unreadable forever"
        ),
    };
    Ok(
        json!({"dry_run": true, "command": "keys destroy", "namespace": ns, "version": version, "state": m.state, "records": m.records, "shred": shred, "would": outcome}),
    )
}

/// What `keys destroy-kek` would do.
pub fn destroy_kek(vault: &Vault, version: u32) -> Result<Value> {
    let keys = overview(vault)?;
    let kek = keys
        .keks
        .iter()
        .find(|k| k.version as u32 == version)
        .ok_or_else(|| fail(Exit::NotFound, format!("no KEK v{version}")))?;
    let wrapped = wrapped_under(&keys, version);
    let outcome = match (kek.state, wrapped) {
        (KekState::Destroyed, _) => "nothing: already destroyed".to_owned(),
        (KekState::Active, _) => {
            "refused: the active KEK cannot be destroyed; rotate first".to_owned()
        }
        (_, 0) => "the KEK is destroyed in the keystore".to_owned(),
        (_, n) => format!("refused: {n} master(s) are still wrapped under it"),
    };
    Ok(
        json!({"dry_run": true, "command": "keys destroy-kek", "version": version, "state": kek.state, "masters_wrapped": wrapped, "would": outcome}),
    )
}

/// What `keys compromise-kek` would do.
pub fn compromise_kek(vault: &Vault) -> Result<Value> {
    let keys = overview(vault)?;
    let active = keys
        .keks
        .iter()
        .find(|k| k.state == KekState::Active)
        .map(|k| k.version);
    let live: Vec<Value> = keys
        .namespaces
        .iter()
        .flat_map(|n| n.masters.iter().filter(|m| m.state.is_live()).map(move |m| json!({"namespace": n.namespace, "version": m.version, "records": m.records})))
        .collect();
    Ok(
        json!({"dry_run": true, "command": "keys compromise-kek", "active_kek": active,
        "would": "rotate the KEK, mark every live master below compromised and rotate each namespace; their records are re-keyed by reencrypt", "live_masters": live}),
    )
}

/// What `keystore migrate` would do.
pub fn migrate(vault: &Vault, to: &std::path::Path) -> Result<Value> {
    let keys = overview(vault)?;
    let masters = keys
        .namespaces
        .iter()
        .flat_map(|n| &n.masters)
        .filter(|m| m.state != MasterState::Destroyed)
        .count();
    Ok(
        json!({"dry_run": true, "command": "keystore migrate", "from": keys.keystore, "to": to.display().to_string(), "masters": masters,
        "would": "rewrap every master and index key under a new KEK of the target keystore, in one transaction; records are untouched"}),
    )
}

fn wrapped_under(keys: &KeyOverview, kek: u32) -> usize {
    keys.namespaces
        .iter()
        .flat_map(|n| &n.masters)
        .filter(|m| m.kek_version as u32 == kek && m.state != MasterState::Destroyed)
        .count()
}

/// Asks before an irreversible `what`, unless `yes`. Without a terminal on stdin, refuses.
pub fn confirm(what: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(fail(Exit::Refused, format!("{what} cannot be undone: pass --yes to confirm (or --dry-run to see what it would do)")));
    }
    eprint!("{what} cannot be undone. Type \"yes\" to go on: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        return Err(fail(Exit::Refused, "not confirmed; nothing changed"));
    }
    Ok(())
}
