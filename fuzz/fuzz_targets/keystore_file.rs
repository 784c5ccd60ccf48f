//! The whole soft keystore file: arbitrary bytes opened with the seed's passphrase. Never a
//! panic; a file that opens has a consistent KEK table.
//!
//! Argon2 parameters the header may legally carry reach up to 2 GiB and 64 passes, which would
//! make single runs take minutes and trip the fuzzer's memory limit. Parameters inside the allowed
//! range are therefore replaced by the floor (8 MiB, t = 1) before opening, so every run stays
//! at one cheap Argon2id; parameters outside it are left as they are, to exercise the range check.
//! `keystore_parse` fuzzes the header's parameters themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zkvault::keystore::soft::{untrusted, Argon2Params, SoftKeystore};
use zkvault::keystore::{KekState, Keystore, KeystoreError};
use zkvault_fuzz::PASSPHRASE;

/// Where the parameters sit in the header: after the 6-byte magic and the format byte.
const PARAMS: std::ops::Range<usize> = 7..19;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if untrusted::header(&bytes).is_ok() {
        let f = Argon2Params::FLOOR;
        let floor: Vec<u8> = [f.m_cost_kib, f.t_cost, f.p_cost].iter().flat_map(|v| v.to_be_bytes()).collect();
        bytes[PARAMS].copy_from_slice(&floor);
    }
    let path = std::env::temp_dir().join(format!("zkvault-fuzz-{}.zks", std::process::id()));
    std::fs::write(&path, &bytes).expect("write temp keystore");
    let pass = zkvault::secret::SecretString::new(PASSPHRASE);
    // The file stays until the keystore is done with it: an open keystore rereads a file that
    // changed (another process may have rewritten it), and a deleted one is an error.
    match SoftKeystore::open(&path, &pass) {
        Ok(ks) => {
            let keks = ks.list_keks().expect("listing an open keystore");
            assert!(keks.iter().filter(|k| k.state == KekState::Active).count() <= 1);
        }
        Err(KeystoreError::Corrupt(_) | KeystoreError::BadPassphrase) => {}
        Err(e) => panic!("unexpected error opening a damaged keystore: {e}"),
    }
    let _ = std::fs::remove_file(&path);
});
