//! `[signers.NAME]`: a signing key's algorithm, rotation, publication and verify window.

use std::time::Duration;

use serde::Deserialize;

use super::DAY;

/// The algorithms a signer may declare. ES256 runs on every keystore (a P-256 key pair on the
/// token, or sealed by the soft keystore). EdDSA is not offered yet: it is refused by name.
pub const SIGNER_ALGS: [&str; 1] = ["ES256"];

/// The longest token lifetime a signer may declare: a year.
const MAX_TOKEN_TTL_SECS: i64 = 365 * 24 * 60 * 60;

/// The subject attributes a CSR may carry, by their short names.
pub const SUBJECT_ATTRIBUTES: [&str; 6] = ["CN", "O", "OU", "C", "ST", "L"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerPolicy {
    pub name: String,
    pub alg: String,
    /// A new key becomes active this often.
    pub rotation: Duration,
    /// How long before its activation a new key is in the JWKS (`pending`).
    pub publish_ahead: Duration,
    /// How long a demoted key stays in the JWKS (`verify_only`) before it is retired.
    pub verify_window: Duration,
    /// The longest lifetime of a JWT this signer issues (`exp - iat`); the verify window
    /// must cover it.
    pub max_token_ttl: Duration,
    /// The CSR subject, as `(attribute, value)` pairs in order.
    pub subject: Vec<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignerDoc {
    alg: String,
    rotation_days: i64,
    publish_ahead_days: i64,
    verify_window_days: i64,
    max_token_ttl_secs: i64,
    subject: String,
}

/// Validates one signer table; every problem is reported through `issue(field, reason)`.
pub(super) fn signer(
    name: &str,
    doc: SignerDoc,
    issue: &mut dyn FnMut(&str, String),
) -> SignerPolicy {
    if !SIGNER_ALGS.contains(&doc.alg.as_str()) {
        let hint = if doc.alg == "EdDSA" {
            "EdDSA is not supported by this version's keystores"
        } else {
            "unknown algorithm"
        };
        issue(
            "alg",
            format!("{hint}: {:?}; expected one of {SIGNER_ALGS:?}", doc.alg),
        );
    }
    if doc.rotation_days <= 0 {
        issue(
            "rotation_days",
            format!(
                "must be a positive number of days, got {}",
                doc.rotation_days
            ),
        );
    }
    if doc.publish_ahead_days < 0 || doc.publish_ahead_days >= doc.rotation_days.max(1) {
        issue(
            "publish_ahead_days",
            format!(
                "must be 0 or more and less than rotation_days ({}), got {}: the next key is published within the active one's rotation period",
                doc.rotation_days, doc.publish_ahead_days
            ),
        );
    }
    if !(1..=MAX_TOKEN_TTL_SECS).contains(&doc.max_token_ttl_secs) {
        issue(
            "max_token_ttl_secs",
            format!(
                "must be 1-{MAX_TOKEN_TTL_SECS} seconds, got {}",
                doc.max_token_ttl_secs
            ),
        );
    }
    if doc.verify_window_days <= 0 {
        issue(
            "verify_window_days",
            format!(
                "must be a positive number of days, got {}",
                doc.verify_window_days
            ),
        );
    } else if doc.verify_window_days.saturating_mul(DAY as i64) < doc.max_token_ttl_secs {
        issue(
            "verify_window_days",
            format!(
                "{} days is shorter than max_token_ttl_secs ({} s): a token signed just before its key is demoted would outlive the key in the JWKS",
                doc.verify_window_days, doc.max_token_ttl_secs
            ),
        );
    }
    let subject = match parse_subject(&doc.subject) {
        Ok(subject) => subject,
        Err(reason) => {
            issue("subject", reason);
            Vec::new()
        }
    };
    let days = |d: i64| Duration::from_secs(d.max(0) as u64 * DAY);
    SignerPolicy {
        name: name.to_owned(),
        alg: doc.alg,
        rotation: days(doc.rotation_days),
        publish_ahead: days(doc.publish_ahead_days),
        verify_window: days(doc.verify_window_days),
        max_token_ttl: Duration::from_secs(doc.max_token_ttl_secs.max(0) as u64),
        subject,
    }
}

/// `"CN=zkvault credentials, O=Example, C=IN"`: comma-separated `ATTR=value` pairs of
/// [`SUBJECT_ATTRIBUTES`], a `CN` among them; no value may hold a comma, `=` or a control
/// character.
fn parse_subject(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut subject = Vec::new();
    for part in text.split(',') {
        let Some((attr, value)) = part.split_once('=') else {
            return Err("must be comma-separated ATTR=value pairs, e.g. \"CN=credential signer, O=Example\"".into());
        };
        let (attr, value) = (attr.trim(), value.trim());
        if !SUBJECT_ATTRIBUTES.contains(&attr) {
            return Err(format!(
                "unknown attribute {attr:?}; expected one of {SUBJECT_ATTRIBUTES:?}"
            ));
        }
        if value.is_empty()
            || value.len() > 64
            || value.contains(|c: char| c == '=' || c.is_control())
        {
            return Err(format!(
                "{attr}'s value must be 1-64 characters without '=' or control characters"
            ));
        }
        if attr == "C" && !(value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err("C must be a two-letter country code".into());
        }
        subject.push((attr.to_owned(), value.to_owned()));
    }
    if !subject.iter().any(|(a, _)| a == "CN") {
        return Err("must include a CN".into());
    }
    Ok(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(alg: &str, rotation: i64, ahead: i64, window: i64, ttl: i64) -> SignerDoc {
        SignerDoc {
            alg: alg.into(),
            rotation_days: rotation,
            publish_ahead_days: ahead,
            verify_window_days: window,
            max_token_ttl_secs: ttl,
            subject: "CN=test".into(),
        }
    }

    fn fields(d: SignerDoc) -> Vec<String> {
        let mut found = Vec::new();
        signer("s", d, &mut |f, _| found.push(f.to_owned()));
        found
    }

    #[test]
    fn a_verify_window_shorter_than_a_token_is_refused_by_name() {
        assert!(fields(doc("ES256", 90, 7, 30, 86_400)).is_empty());
        assert_eq!(
            fields(doc("ES256", 90, 7, 1, 2 * 86_400)),
            ["verify_window_days"]
        );
        assert_eq!(fields(doc("EdDSA", 90, 7, 30, 60)), ["alg"]);
        assert_eq!(fields(doc("ES256", 90, 90, 30, 60)), ["publish_ahead_days"]);
        assert_eq!(
            fields(doc("ES256", 0, 0, 0, 0)),
            ["rotation_days", "max_token_ttl_secs", "verify_window_days"]
        );
    }

    #[test]
    fn subjects_parse_or_name_the_problem() {
        assert_eq!(
            parse_subject("CN=credential signer, O=Example, C=IN").unwrap(),
            [
                ("CN".to_owned(), "credential signer".to_owned()),
                ("O".to_owned(), "Example".to_owned()),
                ("C".to_owned(), "IN".to_owned())
            ]
        );
        for bad in [
            "O=Example",
            "CN",
            "CN=a, X=b",
            "CN=",
            "CN=a, C=India",
            "CN=a\nb",
        ] {
            assert!(parse_subject(bad).is_err(), "{bad:?}");
        }
    }
}
