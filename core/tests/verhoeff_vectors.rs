//! Known-answer tests for the Verhoeff digit, from an independent implementation: a table copied
//! between our own Rust and JavaScript agrees with itself, not with MOSIP.
//!
//! The file is `$ZKVAULT_VERHOEFF_VECTORS` (a relative path is taken from the repository root),
//! or the in-repo `tests/vectors/verhoeff.json`. The JavaScript copy used by the load tests
//! (`loadtest/lib/verhoeff.js`) is checked against the same file through `node`.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use zkvault_core::verhoeff::{check_digit, validate};

#[derive(Deserialize)]
struct Vectors {
    valid: Vec<String>,
    invalid: Vec<String>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vectors_path() -> PathBuf {
    match std::env::var_os("ZKVAULT_VERHOEFF_VECTORS") {
        Some(p) => repo_root().join(p), // an absolute path replaces the root
        None => repo_root().join("tests/vectors/verhoeff.json"),
    }
}

fn vectors() -> Vectors {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let v: Vectors = serde_json::from_str(&text).expect("verhoeff vectors have {valid, invalid}");
    assert!(
        !v.valid.is_empty() && !v.invalid.is_empty(),
        "{} has an empty section",
        path.display()
    );
    v
}

#[test]
fn every_vector_validates_or_is_refused() {
    let v = vectors();
    // Collect every miss so a wrong table reports how wrong it is, not just the first case.
    let refused: Vec<_> = v.valid.iter().filter(|s| !validate(s)).collect();
    let wrong_digit: Vec<_> = v
        .valid
        .iter()
        .filter(|s| {
            let (payload, last) = s.split_at(s.len() - 1);
            check_digit(payload).map(|d| d.to_string()) != Some(last.to_owned())
        })
        .collect();
    let accepted: Vec<_> = v.invalid.iter().filter(|s| validate(s)).collect();
    assert!(
        refused.is_empty() && wrong_digit.is_empty() && accepted.is_empty(),
        "valid refused {}/{}, wrong check digit {}/{}, invalid accepted {}/{}; first: {:?} {:?} {:?}",
        refused.len(),
        v.valid.len(),
        wrong_digit.len(),
        v.valid.len(),
        accepted.len(),
        v.invalid.len(),
        refused.first(),
        wrong_digit.first(),
        accepted.first(),
    );
}

/// The load-test library must agree too. Without node this skips loudly, except under CI=true.
#[test]
fn javascript_copy_agrees_through_node() {
    let script = repo_root().join("loadtest/lib/verhoeff.test.mjs");
    let out = match Command::new("node")
        .arg(&script)
        .arg(vectors_path())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but node is not installed"
            );
            // Straight to stderr, not eprintln!: libtest would swallow that for a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED javascript_copy_agrees_through_node: node is not installed"
            );
            return;
        }
        Err(e) => panic!("cannot run node: {e}"),
    };
    assert!(
        out.status.success(),
        "node {} failed:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The README's example resident ID must pass the `biometrics` namespace's Verhoeff check too.
#[test]
fn readme_example_ids_are_verhoeff_valid() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let ids: Vec<_> = readme
        .split("Resident-Id: ")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert!(!ids.is_empty(), "README.md has no Resident-Id example");
    for id in ids {
        assert!(
            validate(id),
            "README example Resident-Id {id} fails Verhoeff"
        );
    }
}
