//! The soft keystore's two parsers of untrusted bytes, without Argon2: the file header (first
//! byte even) and the decrypted contents, KEK table, destruction ledger and audit anchor (first
//! byte odd).
//! Never a panic; whatever parses obeys the file's rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zkvault::keystore::soft::{untrusted, Argon2Params};
use zkvault::keystore::KekState;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    if which % 2 == 0 {
        if let Ok(p) = untrusted::header(rest) {
            let (lo, hi) = (Argon2Params::FLOOR, Argon2Params::CEILING);
            assert!((lo.m_cost_kib..=hi.m_cost_kib).contains(&p.m_cost_kib));
            assert!((lo.t_cost..=hi.t_cost).contains(&p.t_cost));
            assert!((lo.p_cost..=hi.p_cost).contains(&p.p_cost));
        }
    } else if let Ok((rows, destroyed, anchor)) = untrusted::contents(rest) {
        assert!(rows.iter().filter(|r| r.1 == KekState::Active).count() <= 1);
        assert!(rows.iter().all(|&(_, state, has_key)| has_key == (state != KekState::Destroyed)));
        assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "versions unique");
        assert!(destroyed.windows(2).all(|w| w[0] < w[1]), "ledger entries unique");
        let anchor_len = 1 + anchor.map_or(0, |_| 8 + 32);
        assert!(4 + rows.len() * 5 + 4 + destroyed.len() * 5 + anchor_len <= rest.len());
    }
});
