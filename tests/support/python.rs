//! The independent checkers' runner: Python (`ZKVAULT_TEST_PYTHON`, default `python3`) with
//! `cryptography` and `jwcrypto`, JSON on its standard output. Under `CI=true` a missing
//! interpreter or module fails the test; elsewhere the test is skipped, loudly.

use serde_json::Value;

/// Runs Python with `args`, `stdin` on its standard input; its output as JSON, or `None`
/// when skipped. A script that fails for any other reason fails the test. `what` names the
/// checker in messages.
pub fn run_json(what: &str, args: &[&str], stdin: &[u8]) -> Option<Value> {
    let python = std::env::var("ZKVAULT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let child = std::process::Command::new(&python)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return skipped(what, &format!("{python}: {e}")),
    };
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named") {
        return skipped(what, &stderr);
    }
    assert!(out.status.success(), "{what} failed: {stderr}");
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The path of a script in tests/fixtures.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn skipped(what: &str, why: &str) -> Option<Value> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but the independent checker ({what}) cannot run: {why}"
    );
    eprintln!("\n!!!!! SKIPPED independent check ({what}): {why} !!!!!\n");
    None
}
