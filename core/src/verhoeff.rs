//! The Verhoeff check digit (dihedral group D5), as used by MOSIP's UIN and Aadhaar.

const D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];
/// Row 1 of the permutation table. The other rows are generated, p(i+1)[j] = p(i)[p(1)[j]], not
/// typed: a typed copy once had rows 4 and 5 wrong and agreed only with itself.
const P1: [u8; 10] = [1, 5, 7, 6, 2, 8, 3, 0, 9, 4];
const P: [[u8; 10]; 8] = permutations();

const fn permutations() -> [[u8; 10]; 8] {
    let mut p = [[0u8; 10]; 8];
    let mut i = 0;
    while i < 8 {
        let mut j = 0;
        while j < 10 {
            p[i][j] = if i == 0 {
                j as u8
            } else {
                p[i - 1][P1[j] as usize]
            };
            j += 1;
        }
        i += 1;
    }
    p
}
const INV: [u8; 10] = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];

fn digits(s: &str) -> Option<Vec<u8>> {
    s.bytes()
        .map(|b| b.is_ascii_digit().then(|| b - b'0'))
        .collect()
}

/// True when `s` is all digits (at least two) and its last digit checks the rest.
pub fn validate(s: &str) -> bool {
    let Some(ds) = digits(s) else { return false };
    ds.len() >= 2
        && ds.iter().rev().enumerate().fold(0u8, |c, (i, &d)| {
            D[c as usize][P[i % 8][d as usize] as usize]
        }) == 0
}

/// The check digit to append to the all-digit string `payload`, or `None` if it is not digits
/// or is empty (a lone check digit is no valid number: [`validate`] wants two digits or more).
pub fn check_digit(payload: &str) -> Option<u8> {
    let ds = digits(payload).filter(|ds| !ds.is_empty())?;
    let c = ds.iter().rev().enumerate().fold(0u8, |c, (i, &d)| {
        D[c as usize][P[(i + 1) % 8][d as usize] as usize]
    });
    Some(INV[c as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // The textbook example: 236 -> check digit 3.
        assert_eq!(check_digit("236"), Some(3));
        assert!(validate("2363"));
        assert!(!validate("2364"));
        assert!(!validate("23a3"));
        // Found by fuzz/resident_id: an empty payload had a "check digit" that never validates.
        assert_eq!(check_digit(""), None);
        assert!(!validate("0"));
    }

    #[test]
    fn permutation_table_is_the_standard_one() {
        // The standard rows 4 and 5, as published: the ones a typed copy once got wrong.
        assert_eq!(P[4], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0]);
        assert_eq!(P[5], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1]);
        // p(1) has order 8, which is why positions index the table `% 8`.
        assert_eq!(P[7].map(|d| P1[d as usize]), P[0]);
        // INV[c] is c's inverse in D5.
        assert!((0..10).all(|c| D[c][INV[c] as usize] == 0));
    }

    #[test]
    fn catches_every_single_digit_error_and_adjacent_swap() {
        let payload = "493009837149192";
        let full = format!("{payload}{}", check_digit(payload).unwrap());
        assert!(validate(&full));
        let b = full.as_bytes();
        for i in 0..b.len() {
            for d in b'0'..=b'9' {
                if d != b[i] {
                    let mut m = b.to_vec();
                    m[i] = d;
                    assert!(!validate(std::str::from_utf8(&m).unwrap()));
                }
            }
            if i + 1 < b.len() && b[i] != b[i + 1] {
                let mut m = b.to_vec();
                m.swap(i, i + 1);
                assert!(!validate(std::str::from_utf8(&m).unwrap()));
            }
        }
    }
}
