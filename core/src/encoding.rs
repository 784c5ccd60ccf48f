//! The `lp(x)` length-prefix encoding that every v1 label, info string and AAD is built from.

/// Appends `lp(x)`: the 2-byte big-endian length of `x`, then `x`.
///
/// Every input reaching here is bounded far below 65 535 bytes (namespaces and record names by
/// their patterns, resident IDs to 64 bytes, blind indexes to 32), so overflow is a bug.
pub(crate) fn push_lp(out: &mut Vec<u8>, x: &[u8]) {
    let len = u16::try_from(x.len()).expect("lp() field longer than 65535 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(x);
}

/// Builds `label || lp(f1) || lp(f2) ...`.
pub(crate) fn labelled(label: &str, fields: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(label.len() + fields.iter().map(|f| f.len() + 2).sum::<usize>() + 4);
    out.extend_from_slice(label.as_bytes());
    for field in fields {
        push_lp(&mut out, field);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lp_is_big_endian_length_then_bytes() {
        let mut out = Vec::new();
        push_lp(&mut out, b"abc");
        assert_eq!(out, [0, 3, b'a', b'b', b'c']);
        assert_eq!(labelled("L", &[b"", b"x"]), [b'L', 0, 0, 0, 1, b'x']);
    }
}
