//! Declarative key policy: `keys-policy/*.toml`, validated once into typed parameters.
//!
//! Every error names the file, the field and the reason, so `zkvault policy check` output can be
//! acted on without reading code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zkvault_core::ChecksumScheme;

mod signers;
mod trust;
pub use signers::{SignerPolicy, SIGNER_ALGS};
pub use trust::{valid_domain_name, TrustDomainPolicy, DOMAIN_PATTERN};

pub(crate) const DAY: u64 = 24 * 60 * 60;

/// Namespace names: short, lowercase, safe in URLs and logs.
/// What a namespace name must match (a regular expression; [`valid_namespace_name`] checks it).
pub const NAMESPACE_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";

pub fn valid_namespace_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

#[derive(Debug, Clone, PartialEq)]
pub struct NamespacePolicy {
    pub name: String,
    pub max_record_bytes: usize,
    pub id_checksum: ChecksumScheme,
    pub dm_rotation: Duration,
    pub decrypt_only_max: Duration,
    pub destroy_after_retired: Duration,
    pub lazy_reencrypt: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub kek_rotation: Duration,
    pub credential_max_age: Duration,
    /// The irreversible operations (shredding a master's records, destroying a KEK) take two
    /// different operators.
    pub dual_control: bool,
    /// How long a dual-control request waits for its second operator.
    pub approval_ttl: Duration,
    pub namespaces: BTreeMap<String, NamespacePolicy>,
    pub signers: BTreeMap<String, SignerPolicy>,
    pub trust: BTreeMap<String, TrustDomainPolicy>,
}

impl Policy {
    pub fn namespace(&self, name: &str) -> Option<&NamespacePolicy> {
        self.namespaces.get(name)
    }

    pub fn signer(&self, name: &str) -> Option<&SignerPolicy> {
        self.signers.get(name)
    }

    pub fn trust_domain(&self, name: &str) -> Option<&TrustDomainPolicy> {
        self.trust.get(name)
    }
}

/// One problem found in a policy directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyIssue {
    pub file: PathBuf,
    pub field: String,
    pub reason: String,
}

impl fmt::Display for PolicyIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.file.display(),
            self.field,
            self.reason
        )
    }
}

/// Every problem found, not just the first.
#[derive(Debug, thiserror::Error)]
#[error("invalid key policy:\n{}", .0.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
pub struct PolicyErrors(pub Vec<PolicyIssue>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    global: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    namespaces: BTreeMap<String, toml::Spanned<toml::Value>>,
    #[serde(default)]
    signers: BTreeMap<String, toml::Spanned<toml::Value>>,
    #[serde(default)]
    trust: BTreeMap<String, toml::Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GlobalDoc {
    kek_rotation_days: i64,
    credential_max_age_days: i64,
    #[serde(default)]
    dual_control: bool,
    #[serde(default = "default_approval_minutes")]
    approval_minutes: i64,
}

fn default_approval_minutes() -> i64 {
    60
}

/// The longest a dual-control request may wait: a week.
const MAX_APPROVAL_MINUTES: i64 = 7 * 24 * 60;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceDoc {
    max_record_bytes: i64,
    #[serde(default = "default_checksum")]
    id_checksum: String,
    dm_rotation_days: i64,
    decrypt_only_max_days: i64,
    destroy_after_retired_days: i64,
    #[serde(default = "default_true")]
    lazy_reencrypt: bool,
}

fn default_checksum() -> String {
    "none".into()
}

fn default_true() -> bool {
    true
}

/// The policy built into the binary (`keys-policy/example.toml`), so the embedded default
/// starts from any directory with nothing installed beside it.
pub const BUILT_IN: &str = include_str!("../../keys-policy/example.toml");

/// Where the policy comes from: a directory, or the one built into the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    Dir(PathBuf),
    BuiltIn,
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySource::Dir(d) => write!(f, "{}", d.display()),
            PolicySource::BuiltIn => f.write_str("the built-in default policy"),
        }
    }
}

/// Loads the policy from `source`.
pub fn load(source: &PolicySource) -> Result<Policy, PolicyErrors> {
    match source {
        PolicySource::Dir(dir) => load_dir(dir),
        PolicySource::BuiltIn => load_files(
            Path::new("<built-in>"),
            vec![(
                PathBuf::from("<built-in>/example.toml"),
                Ok(BUILT_IN.to_owned()),
            )],
        ),
    }
}

/// Reads and validates every `*.toml` in `dir`.
pub fn load_dir(dir: &Path) -> Result<Policy, PolicyErrors> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            return Err(PolicyErrors(vec![PolicyIssue {
                file: dir.into(),
                field: "-".into(),
                reason: format!("cannot read directory: {e}"),
            }]))
        }
    };
    files.sort();
    let files = files.into_iter().map(|f| {
        let text = std::fs::read_to_string(&f).map_err(|e| e.to_string());
        (f, text)
    });
    load_files(dir, files.collect())
}

/// Validates the policy files `(path, text or read error)` of `dir`, in order.
fn load_files(
    dir: &Path,
    files: Vec<(PathBuf, Result<String, String>)>,
) -> Result<Policy, PolicyErrors> {
    let mut issues = Vec::new();
    let issue = |file: &Path, field: &str, reason: String| PolicyIssue {
        file: file.to_path_buf(),
        field: field.to_owned(),
        reason,
    };
    if files.is_empty() {
        return Err(PolicyErrors(vec![issue(
            dir,
            "-",
            "no *.toml policy files".into(),
        )]));
    }

    let mut global: Option<(PathBuf, GlobalDoc)> = None;
    let mut namespaces = BTreeMap::new();
    let mut signers = BTreeMap::new();
    let mut trust = BTreeMap::new();
    // A file that could not be read at all, or a table that did not parse: "nothing defines
    // [global]" or "no namespace" would then be a false follow-on claim.
    let mut unreadable = false;
    let (mut invalid_global, mut invalid_namespaces) = (false, BTreeSet::new());
    for (file, text) in &files {
        let parsed = text
            .clone()
            .and_then(|t| match toml::from_str::<FileDoc>(&t) {
                Ok(doc) => Ok((doc, t)),
                Err(e) => Err(e.message().trim().to_owned() + &span_hint(&t, e.span())),
            });
        let (doc, text) = match parsed {
            Ok(parsed) => parsed,
            Err(reason) => {
                unreadable = true;
                issues.push(issue(file, "-", reason));
                continue;
            }
        };
        if let Some(g) = doc.global {
            match (&global, table::<GlobalDoc>(&text, g)) {
                (Some((first, _)), _) => issues.push(issue(
                    file,
                    "global",
                    format!("already defined in {}", first.display()),
                )),
                (None, Ok(g)) => global = Some((file.clone(), g)),
                (None, Err(reason)) => {
                    invalid_global = true;
                    issues.push(issue(file, "global", reason));
                }
            }
        }
        for (name, ns) in doc.namespaces {
            let field = |f: &str| format!("namespaces.{name}.{f}");
            if !valid_namespace_name(&name) {
                issues.push(issue(
                    file,
                    &format!("namespaces.{name}"),
                    format!("name must match {NAMESPACE_PATTERN}"),
                ));
            }
            if namespaces.contains_key(&name) || invalid_namespaces.contains(&name) {
                issues.push(issue(
                    file,
                    &format!("namespaces.{name}"),
                    "namespace defined twice".into(),
                ));
                continue;
            }
            let ns: NamespaceDoc = match table(&text, ns) {
                Ok(ns) => ns,
                Err(reason) => {
                    issues.push(issue(file, &format!("namespaces.{name}"), reason));
                    invalid_namespaces.insert(name);
                    continue;
                }
            };
            let mut days = |f: &str, v: i64| -> Duration {
                if v <= 0 {
                    issues.push(issue(
                        file,
                        &field(f),
                        format!("must be a positive number of days, got {v}"),
                    ));
                }
                Duration::from_secs(v.max(0) as u64 * DAY)
            };
            let dm_rotation = days("dm_rotation_days", ns.dm_rotation_days);
            let decrypt_only_max = days("decrypt_only_max_days", ns.decrypt_only_max_days);
            let destroy_after_retired =
                days("destroy_after_retired_days", ns.destroy_after_retired_days);
            if ns.decrypt_only_max_days > 0 && ns.decrypt_only_max_days < ns.dm_rotation_days {
                issues.push(issue(
                    file,
                    &field("decrypt_only_max_days"),
                    format!("{} is shorter than dm_rotation_days ({}): records could not all move before the next rotation", ns.decrypt_only_max_days, ns.dm_rotation_days),
                ));
            }
            if ns.max_record_bytes <= 0 || ns.max_record_bytes > 64 * 1024 * 1024 {
                issues.push(issue(
                    file,
                    &field("max_record_bytes"),
                    format!("must be 1..=67108864, got {}", ns.max_record_bytes),
                ));
            }
            let id_checksum = match ns.id_checksum.as_str() {
                "none" => ChecksumScheme::None,
                "verhoeff" => ChecksumScheme::Verhoeff,
                other => {
                    issues.push(issue(
                        file,
                        &field("id_checksum"),
                        format!("unknown scheme {other:?}; expected \"none\" or \"verhoeff\""),
                    ));
                    ChecksumScheme::None
                }
            };
            namespaces.insert(
                name.clone(),
                NamespacePolicy {
                    name,
                    max_record_bytes: ns.max_record_bytes.max(0) as usize,
                    id_checksum,
                    dm_rotation,
                    decrypt_only_max,
                    destroy_after_retired,
                    lazy_reencrypt: ns.lazy_reencrypt,
                },
            );
        }
        for (name, doc) in doc.signers {
            let table_name = format!("signers.{name}");
            if !valid_namespace_name(&name) {
                issues.push(issue(
                    file,
                    &table_name,
                    format!("name must match {NAMESPACE_PATTERN}"),
                ));
            }
            if signers.contains_key(&name) {
                issues.push(issue(file, &table_name, "signer defined twice".into()));
                continue;
            }
            match table(&text, doc) {
                Ok(doc) => {
                    let policy = signers::signer(&name, doc, &mut |f, reason| {
                        issues.push(issue(file, &format!("{table_name}.{f}"), reason))
                    });
                    signers.insert(name, policy);
                }
                Err(reason) => issues.push(issue(file, &table_name, reason)),
            }
        }
        for (name, doc) in doc.trust {
            let table_name = format!("trust.{name}");
            if !valid_domain_name(&name) {
                issues.push(issue(
                    file,
                    &table_name,
                    format!("name must match {DOMAIN_PATTERN}"),
                ));
            }
            if trust.contains_key(&name) {
                issues.push(issue(
                    file,
                    &table_name,
                    "trust domain defined twice".into(),
                ));
                continue;
            }
            match table(&text, doc) {
                Ok(doc) => {
                    let policy = trust::domain(&name, doc, &mut |f, reason| {
                        issues.push(issue(file, &format!("{table_name}.{f}"), reason))
                    });
                    trust.insert(name, policy);
                }
                Err(reason) => issues.push(issue(file, &table_name, reason)),
            }
        }
    }

    let (mut dual_control, mut approval_ttl) = (false, Duration::ZERO);
    let (kek_rotation, credential_max_age) = match global {
        Some((file, g)) => {
            for (f, v) in [
                ("kek_rotation_days", g.kek_rotation_days),
                ("credential_max_age_days", g.credential_max_age_days),
            ] {
                if v <= 0 {
                    issues.push(issue(
                        &file,
                        &format!("global.{f}"),
                        format!("must be a positive number of days, got {v}"),
                    ));
                }
            }
            if !(1..=MAX_APPROVAL_MINUTES).contains(&g.approval_minutes) {
                issues.push(issue(
                    &file,
                    "global.approval_minutes",
                    format!(
                        "must be 1-{MAX_APPROVAL_MINUTES} minutes, got {}",
                        g.approval_minutes
                    ),
                ));
            }
            dual_control = g.dual_control;
            approval_ttl = Duration::from_secs(g.approval_minutes.max(0) as u64 * 60);
            (
                Duration::from_secs(g.kek_rotation_days.max(0) as u64 * DAY),
                Duration::from_secs(g.credential_max_age_days.max(0) as u64 * DAY),
            )
        }
        None => {
            if !unreadable && !invalid_global {
                issues.push(issue(dir, "global", "no file defines [global]".into()));
            }
            (Duration::ZERO, Duration::ZERO)
        }
    };
    for name in signers.keys().filter(|s| namespaces.contains_key(*s)) {
        issues.push(issue(
            dir,
            &format!("signers.{name}"),
            "a namespace has the same name: a credential's scope lists both by name".into(),
        ));
    }
    if namespaces.is_empty() && !unreadable && invalid_namespaces.is_empty() {
        issues.push(issue(dir, "namespaces", "no namespace is defined".into()));
    }
    if issues.is_empty() {
        Ok(Policy {
            kek_rotation,
            credential_max_age,
            dual_control,
            approval_ttl,
            namespaces,
            signers,
            trust,
        })
    } else {
        Err(PolicyErrors(issues))
    }
}

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|s| format!(" (line {})", line_at(text, s.start)))
        .unwrap_or_default()
}

/// 1-based line of byte `offset`.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Deserializes one table of a file on its own, so that one table's mistake hides no other.
/// The reason names a line: an unknown key's own, else the table's.
fn table<T: serde::de::DeserializeOwned>(
    text: &str,
    value: toml::Spanned<toml::Value>,
) -> Result<T, String> {
    let start = value.span().start;
    value.into_inner().try_into().map_err(|e: toml::de::Error| {
        let message = e.message().trim().to_owned();
        let key = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next());
        let at = key
            .and_then(|k| key_offset(text, start, k))
            .unwrap_or(start);
        format!("{message} (line {})", line_at(text, at))
    })
}

/// Offset of the first line at or after `from` that assigns `key`.
fn key_offset(text: &str, from: usize, key: &str) -> Option<usize> {
    let line_start = text[..from.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let mut offset = line_start;
    for line in text[line_start..].split_inclusive('\n') {
        let rest = line.trim_start().strip_prefix(key).map(str::trim_start);
        if rest.is_some_and(|r| r.starts_with('=')) {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    const GLOBAL: &str = "[global]\nkek_rotation_days = 365\ncredential_max_age_days = 90\n";
    const NS: &str = "[namespaces.a]\nmax_record_bytes = 1024\ndm_rotation_days = 90\ndecrypt_only_max_days = 365\ndestroy_after_retired_days = 30\n";

    #[test]
    fn the_shipped_examples_are_valid() {
        let policy = load_dir(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/keys-policy"
        )))
        .unwrap();
        assert!(policy.namespace("resident-portal").is_some());
        assert_eq!(
            policy.namespace("biometrics").unwrap().id_checksum,
            ChecksumScheme::Verhoeff
        );
        assert_eq!(
            load(&PolicySource::BuiltIn).unwrap(),
            policy,
            "the built-in policy is the example"
        );
    }

    #[test]
    fn a_minimal_policy_loads() {
        let dir = dir_with(&[("p.toml", &format!("{GLOBAL}{NS}"))]);
        let p = load_dir(dir.path()).unwrap();
        assert_eq!(p.namespace("a").unwrap().max_record_bytes, 1024);
        assert!(p.namespace("a").unwrap().lazy_reencrypt);
    }

    fn issues_of(files: &[(&str, &str)]) -> Vec<PolicyIssue> {
        load_dir(dir_with(files).path()).unwrap_err().0
    }

    #[test]
    fn every_error_names_file_field_and_reason() {
        let bad = "[namespaces.b]\nmax_record_bytes = 0\nid_checksum = \"luhn\"\ndm_rotation_days = -1\ndecrypt_only_max_days = 10\ndestroy_after_retired_days = 0\n";
        let issues = issues_of(&[("g.toml", GLOBAL), ("b.toml", bad)]);
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        for f in [
            "max_record_bytes",
            "id_checksum",
            "dm_rotation_days",
            "destroy_after_retired_days",
        ] {
            assert!(
                fields.contains(&format!("namespaces.b.{f}").as_str()),
                "missing {f}: {fields:?}"
            );
        }
        assert!(issues.iter().all(|i| i.file.ends_with("b.toml")));
    }

    #[test]
    fn decrypt_only_window_shorter_than_rotation_is_refused() {
        let ns = NS.replace("decrypt_only_max_days = 365", "decrypt_only_max_days = 30");
        let issues = issues_of(&[("p.toml", &format!("{GLOBAL}{ns}"))]);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].field, "namespaces.a.decrypt_only_max_days");
    }

    #[test]
    fn unknown_keys_duplicates_and_missing_global_are_refused() {
        let typo = format!("{GLOBAL}{NS}lazy_reencrpyt = true\n");
        let issues = issues_of(&[("p.toml", &typo)]);
        assert!(issues[0].reason.contains("lazy_reencrpyt"), "{issues:?}");

        let issues = issues_of(&[
            ("a.toml", &format!("{GLOBAL}{NS}")),
            ("b.toml", &format!("{GLOBAL}{NS}")),
        ]);
        assert!(issues
            .iter()
            .any(|i| i.field == "global" && i.file.ends_with("b.toml")));
        assert!(issues.iter().any(|i| i.field == "namespaces.a"));

        let issues = issues_of(&[("p.toml", NS)]);
        assert_eq!(issues[0].field, "global");
    }

    /// One file with two mistakes in different tables: both reported, each on its own line,
    /// and no false "no file defines [global]" or "no namespace is defined" after them.
    #[test]
    fn every_table_is_checked_and_lines_are_right() {
        let ns_b = NS
            .replace("[namespaces.a]", "[namespaces.b]")
            .replace("max_record_bytes", "max_record_bites");
        let text = format!("{GLOBAL}{NS}lazy_reencrpyt = true\n{ns_b}");
        let issues = issues_of(&[("p.toml", &text)]);
        let line = |needle: &str| text.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert_eq!(issues[0].field, "namespaces.a");
        assert!(
            issues[0].reason.contains(&format!(
                "lazy_reencrpyt` (line {})",
                line("lazy_reencrpyt")
            )) || issues[0]
                .reason
                .ends_with(&format!("(line {})", line("lazy_reencrpyt"))),
            "{issues:?}"
        );
        assert_eq!(issues[1].field, "namespaces.b");
        assert!(
            issues[1]
                .reason
                .ends_with(&format!("(line {})", line("max_record_bites"))),
            "{issues:?}"
        );

        // A syntax error's line is its own line, not the one before.
        let issues = issues_of(&[("p.toml", &format!("{GLOBAL}{NS}oops\n"))]);
        assert!(
            issues[0].reason.ends_with(&format!(
                "(line {})",
                GLOBAL.lines().count() + NS.lines().count() + 1
            )),
            "{issues:?}"
        );
        assert_eq!(issues.len(), 1, "no follow-on claims: {issues:?}");
    }
}
