//! Record names: `^[a-z0-9][a-z0-9._/-]{0,127}$`, and no path tricks inside that pattern.

/// Every name [`valid_record_name`] accepts, as a regular expression (with a maximum length of
/// 128): segments separated by `/`, none empty, `.` or `..`, the first starting with `[a-z0-9]`.
pub const RECORD_NAME_PATTERN: &str =
    r"^[a-z0-9][a-z0-9._-]*(/([a-z0-9_-][a-z0-9._-]*|\.[a-z0-9_-][a-z0-9._-]*|\.\.[a-z0-9._-]+))*$";

/// True for a name the contract's pattern accepts that is also a clean relative path: no empty,
/// `.` or `..` segment, no trailing `/`. Proxies and clients normalise such paths differently,
/// so a name that could be rewritten in transit is refused rather than stored.
pub fn valid_record_name(name: &str) -> bool {
    let b = name.as_bytes();
    let pattern = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'/' | b'-')
        });
    pattern
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// A record name as the audit trail shows it: an invalid name (a resident ID pasted into a URL,
/// a 5 KB string) is never stored, only its length.
pub fn audit_name(name: &str) -> String {
    if valid_record_name(name) {
        name.to_owned()
    } else {
        format!("<invalid name, {} bytes>", name.len())
    }
}

#[cfg(test)]
mod tests {
    use super::{valid_record_name, RECORD_NAME_PATTERN};
    use proptest::prelude::*;

    proptest! {
        /// The published pattern (with its 128-byte maximum) accepts exactly the names the
        /// service accepts: a client generated from the OpenAPI document sends no name that is
        /// then refused, and is told of every one that is.
        #[test]
        fn the_published_pattern_is_the_check(name in "[a-z0-9._/A%-]{0,140}") {
            let re = regex::Regex::new(RECORD_NAME_PATTERN).unwrap();
            prop_assert_eq!(re.is_match(&name) && name.len() <= 128, valid_record_name(&name), "{}", name);
        }
    }

    #[test]
    fn accepts_the_pattern() {
        for ok in [
            "demographics",
            "a",
            "bio/finger/left-thumb.iso",
            "0.v2_x",
            &"a".repeat(128),
        ] {
            assert!(valid_record_name(ok), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "A",
            "-a",
            ".a",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            "a/./b",
            "a/..",
            "a%2fb",
            "a b",
            "é",
            &"a".repeat(129),
        ] {
            assert!(!valid_record_name(bad), "{bad}");
        }
    }
}
