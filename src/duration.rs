//! The one duration syntax of every CLI flag: a whole number and a unit, `30s`, `30m`
//! (minutes), `12h`, `90d`, `1y` (365 days). There are no months: `m` is minutes, as in most
//! tools, and an ambiguous `18m` must not silently mean a year and a half.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("duration {0:?}: expected a whole number and a unit s, m (minutes), h, d or y, e.g. 30m, 12h, 90d, 1y")]
pub struct DurationError(String);

const UNITS: [(&str, u64); 5] = [
    ("y", 365 * 86_400),
    ("d", 86_400),
    ("h", 3_600),
    ("m", 60),
    ("s", 1),
];

pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(s.to_owned());
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().map_err(|_| err())?;
    let &(_, secs) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(err)?;
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(err)
}

/// `d` in the same syntax, exactly: the largest units first (`1d 2h 30m`); `0s` for zero.
pub fn format(d: Duration) -> String {
    let mut left = d.as_secs();
    let mut parts = Vec::new();
    for (unit, secs) in UNITS {
        if left >= secs {
            parts.push(format!("{}{unit}", left / secs));
            left %= secs;
        }
    }
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_their_meaning() {
        let s = Duration::from_secs;
        assert_eq!(parse("30s"), Ok(s(30)));
        assert_eq!(parse("30m"), Ok(s(30 * 60)), "m is minutes, never months");
        assert_eq!(parse("12h"), Ok(s(12 * 3600)));
        assert_eq!(parse("90d"), Ok(s(90 * 86_400)));
        assert_eq!(parse("1y"), Ok(s(365 * 86_400)));
        assert_eq!(parse("0h"), Ok(Duration::ZERO));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "h",
            "30",
            "30M",
            "1mo",
            "-1h",
            "+1h",
            "1.5h",
            " 1h",
            "1h ",
            "1h30m",
            "99999999999999999999s",
            "60000000000000000y",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn format_reads_back() {
        for text in ["0s", "30s", "30m", "1d 2h 30m", "1y 1s"] {
            let d: Duration = text.split(' ').map(|p| parse(p).unwrap()).sum();
            assert_eq!(format(d), text);
        }
    }
}
