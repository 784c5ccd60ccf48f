//! The stored-record format: arbitrary column bytes through `SealedRecord::from_stored`, then
//! open, rewrap and re-key with fixed keys. Never a panic; only the untouched record opens, and
//! then to exactly its body (never silently different data); only its untouched DEK envelope
//! rewraps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zkvault_core::{open, rekey, rewrap, SealedRecord};
use zkvault_fuzz::{context, decode, keys, valid_record, BODY};

fuzz_target!(|data: &[u8]| {
    let Some(s) = decode(data) else { return };
    let Ok(sealed) = SealedRecord::from_stored(s.format, s.master_version, s.dek_nonce, s.wrapped_dek, s.body_nonce, s.body_ciphertext.to_vec())
    else {
        return;
    };
    let k = keys();
    let ctx = context(k);
    let opened = open(&k.rk, &ctx, &sealed);
    // Rewrap reads only the DEK envelope: it may succeed on a record whose body is damaged, but
    // never fails on one that opens.
    let moved = rewrap(&k.rk, &k.rk2, 2, &ctx, &sealed.dek);
    let rekeyed = rekey(&k.rk, &k.rk2, 2, &ctx, &sealed);
    assert!(moved.is_ok() || opened.is_err());
    assert_eq!(opened.is_ok(), rekeyed.is_ok());
    if let Ok(env) = &moved {
        assert_eq!(&sealed.dek.wrapped[..], &zkvault_fuzz::valid_envelope()[..], "only the untouched envelope unwraps");
        assert!(rewrap(&k.rk, &k.rk2, 2, &ctx, env).is_err(), "the moved envelope is bound to the new master");
    }
    assert!(open(&k.rk2, &ctx, &sealed).is_err(), "another master's key never opens it");
    if let Ok(body) = opened {
        assert_eq!(&body[..], BODY);
        assert_eq!(data, &valid_record()[..], "only the untouched record authenticates");
    }
});
