//! Record names: whatever `valid_record_name` accepts is DESIGN.md's pattern and a clean relative
//! path (no empty, `.` or `..` segment), needing no percent-encoding in a URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zkvault::vault::valid_record_name;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else { return };
    if !valid_record_name(name) {
        return;
    }
    let b = name.as_bytes();
    assert!((1..=128).contains(&b.len()));
    assert!(b[0].is_ascii_lowercase() || b[0].is_ascii_digit());
    assert!(b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'/' | b'-')));
    assert!(!name.ends_with('/') && !name.contains("//"));
    assert!(name.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
});
