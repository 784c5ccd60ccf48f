//! What a command prints and who it says ran it: one JSON document on stdout with `--json`,
//! human text otherwise; the actor the audit trail records (`cli:<name>`).

use std::sync::OnceLock;

use anyhow::Result;
use serde_json::Value;
use zkvault::vault::{Actor, Caller, Grant, Role, Vault};

static ACTOR: OnceLock<String> = OnceLock::new();
static JSON: OnceLock<bool> = OnceLock::new();

/// Called once, before any command runs: `--actor` (default the OS user) and `--json`.
pub(super) fn init(actor: Option<String>, json: bool) {
    ACTOR.get_or_init(|| actor.unwrap_or_else(os_user));
    JSON.get_or_init(|| json);
}

pub(super) fn json_output() -> bool {
    JSON.get().copied().unwrap_or(false)
}

/// A command's result on stdout: `json` (one line) with --json, else `human`.
pub(super) fn emit(json: Value, human: impl FnOnce() -> String) {
    if json_output() {
        println!("{json}");
    } else {
        let text = human();
        if !text.is_empty() {
            println!("{text}");
        }
    }
}

/// A result that is JSON either way: one line with --json, indented for people otherwise.
pub(super) fn emit_pretty(value: &impl serde::Serialize) -> Result<()> {
    let value = serde_json::to_value(value)?;
    let pretty = serde_json::to_string_pretty(&value)?;
    emit(value, || pretty);
    Ok(())
}

/// The vault's grant to this operator, acting locally as `role` (in `ns`) for `why`.
pub(super) fn cli_grant(vault: &Vault, why: &str, role: Role, ns: Option<&str>) -> Result<Grant> {
    Ok(vault.authorize(&Caller::local(cli_actor(why)), role, ns)?)
}

pub(super) fn cli_actor(why: &str) -> Actor {
    Actor::new(
        format!("cli:{}", ACTOR.get().map_or("?", String::as_str)),
        why,
    )
}

pub(super) fn parse_actor(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    ok.then(|| s.to_owned())
        .ok_or_else(|| "1 to 64 characters of A-Z a-z 0-9 . _ @ -".into())
}

/// The OS user running the command: `$USER`/`$LOGNAME` if set, else the password database's
/// name for the real uid, else `uid<N>`. Never "unknown": the audit trail must name someone.
fn os_user() -> String {
    let from_env = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| parse_actor(u).is_ok());
    from_env.unwrap_or_else(|| {
        // SAFETY: getuid cannot fail; getpwuid's result is read before any other passwd call.
        let uid = unsafe { libc::getuid() };
        let pw = unsafe { libc::getpwuid(uid) };
        let name = (!pw.is_null()).then(|| {
            unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }
                .to_string_lossy()
                .into_owned()
        });
        name.filter(|n| parse_actor(n).is_ok())
            .unwrap_or(format!("uid{uid}"))
    })
}
