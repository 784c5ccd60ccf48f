//! `[trust.DOMAIN]`: what a partner certificate in a trust domain (AUTH, DEVICE, FTM, …) must
//! satisfy, when its expiry is warned about, and how long a record shared with it is offered.

use std::time::Duration;

use serde::Deserialize;

use super::DAY;

/// Domain names: upper case, as MOSIP spells them.
pub const DOMAIN_PATTERN: &str = "^[A-Z][A-Z0-9_]{0,31}$";

/// No RSA key below this is accepted, whatever a policy says.
pub const MIN_RSA_BITS_FLOOR: u32 = 2048;

/// The longest a shared record's `exp` may be ahead: a day.
const MAX_SHARE_TTL_SECS: i64 = 24 * 60 * 60;

pub fn valid_domain_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_uppercase()
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustDomainPolicy {
    pub name: String,
    /// RSA partner keys below this many bits are refused.
    pub min_rsa_bits: u32,
    /// A certificate must stay valid at least this long when it is registered.
    pub min_remaining: Duration,
    /// Days before a partner certificate's expiry at which an audit entry warns, largest first.
    pub expiry_warn_days: Vec<u32>,
    /// The default and longest lifetime of a shared record (`exp - iat`).
    pub max_share_ttl: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrustDoc {
    #[serde(default = "default_min_rsa_bits")]
    min_rsa_bits: i64,
    #[serde(default)]
    min_remaining_days: i64,
    #[serde(default = "default_warn_days")]
    expiry_warn_days: Vec<i64>,
    #[serde(default = "default_share_ttl")]
    max_share_ttl_secs: i64,
}

fn default_min_rsa_bits() -> i64 {
    MIN_RSA_BITS_FLOOR.into()
}

fn default_warn_days() -> Vec<i64> {
    vec![30, 7, 1]
}

fn default_share_ttl() -> i64 {
    3600
}

/// Validates one domain table; every problem is reported through `issue(field, reason)`.
pub(super) fn domain(
    name: &str,
    doc: TrustDoc,
    issue: &mut dyn FnMut(&str, String),
) -> TrustDomainPolicy {
    if !(i64::from(MIN_RSA_BITS_FLOOR)..=16384).contains(&doc.min_rsa_bits) {
        issue(
            "min_rsa_bits",
            format!(
                "must be {MIN_RSA_BITS_FLOOR}-16384, got {}",
                doc.min_rsa_bits
            ),
        );
    }
    if !(0..=3650).contains(&doc.min_remaining_days) {
        issue(
            "min_remaining_days",
            format!("must be 0-3650 days, got {}", doc.min_remaining_days),
        );
    }
    let mut warn: Vec<u32> = Vec::new();
    for d in &doc.expiry_warn_days {
        match u32::try_from(*d) {
            Ok(d) if (1..=3650).contains(&d) && !warn.contains(&d) => warn.push(d),
            _ => issue(
                "expiry_warn_days",
                format!("each must be a distinct number of days 1-3650, got {d}"),
            ),
        }
    }
    warn.sort_unstable_by(|a, b| b.cmp(a));
    if !(1..=MAX_SHARE_TTL_SECS).contains(&doc.max_share_ttl_secs) {
        issue(
            "max_share_ttl_secs",
            format!(
                "must be 1-{MAX_SHARE_TTL_SECS} seconds, got {}",
                doc.max_share_ttl_secs
            ),
        );
    }
    TrustDomainPolicy {
        name: name.to_owned(),
        min_rsa_bits: doc.min_rsa_bits.clamp(0, 16384) as u32,
        min_remaining: Duration::from_secs(doc.min_remaining_days.max(0) as u64 * DAY),
        expiry_warn_days: warn,
        max_share_ttl: Duration::from_secs(doc.max_share_ttl_secs.max(1) as u64),
    }
}
