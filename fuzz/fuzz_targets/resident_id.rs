//! Resident-ID normalisation and the Verhoeff scheme: any string, never a panic, and whatever is
//! accepted matches DESIGN.md's pattern and is the input trimmed of ASCII whitespace.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zkvault_core::{verhoeff, ChecksumScheme, ResidentId};

fuzz_target!(|data: &[u8]| {
    // The HTTP layer hands over only visible ASCII, but the parser must hold for any string.
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let plain = ResidentId::parse(raw);
    let checked = ResidentId::parse_with(raw, ChecksumScheme::Verhoeff);
    match &plain {
        Ok(id) => {
            let s = id.as_str();
            assert_eq!(s, raw.trim_matches(|c: char| c.is_ascii_whitespace()));
            assert!((1..=64).contains(&s.len()));
            assert!(s.as_bytes()[0].is_ascii_alphanumeric());
            assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')));
            assert_eq!(ResidentId::parse(s).expect("normal form re-parses").as_bytes(), id.as_bytes());
            assert_eq!(checked.is_ok(), verhoeff::validate(s));
        }
        Err(_) => assert!(checked.is_err()),
    }
    let _ = verhoeff::validate(raw);
    if let Some(d) = verhoeff::check_digit(raw) {
        assert!(d < 10);
        assert!(verhoeff::validate(&format!("{raw}{d}")));
    }
});
