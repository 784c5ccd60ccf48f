//! Any change to a stored record, or to where it claims to live, fails with the one opaque
//! integrity error; rewrap and re-key keep the plaintext and behave as DESIGN.md says.

use proptest::prelude::*;
use zkvault_core::*;

struct Fixture {
    dm: DerivationMaster,
    dm2: DerivationMaster,
    ik: IndexKey,
}

fn fixture() -> Fixture {
    Fixture {
        dm: DerivationMaster::generate().unwrap(),
        dm2: DerivationMaster::generate().unwrap(),
        ik: IndexKey::generate().unwrap(),
    }
}

const NS: &str = "resident-portal";
const RECORD_ID: [u8; 16] = [7; 16];

fn seal_one(f: &Fixture, id: &str, body: &[u8]) -> SealedRecord {
    let rid = ResidentId::parse(id).unwrap();
    let bi = f.ik.blind_index(NS, &rid);
    let ctx = RecordContext {
        namespace: NS,
        blind_index: &bi,
        record_name: "demographics",
        record_id: &RECORD_ID,
    };
    seal(&f.dm.resident_key(NS, &rid), 1, &ctx, body).unwrap()
}

/// Opens `sealed` as resident `id` in namespace `ns` under record `name`/`record_id`.
fn open_as(
    f: &Fixture,
    ns: &str,
    id: &str,
    name: &str,
    record_id: &[u8; 16],
    sealed: &SealedRecord,
) -> Result<Vec<u8>, IntegrityError> {
    let rid = ResidentId::parse(id).unwrap();
    let bi = f.ik.blind_index(ns, &rid);
    let ctx = RecordContext {
        namespace: ns,
        blind_index: &bi,
        record_name: name,
        record_id,
    };
    open(&f.dm.resident_key(ns, &rid), &ctx, sealed).map(|b| b.to_vec())
}

#[test]
fn every_flipped_byte_is_an_integrity_error() {
    let f = fixture();
    let body = b"{\"name\":\"Asha\",\"dob\":\"1990-01-01\"}";
    let sealed = seal_one(&f, "4930098371", body);
    assert_eq!(
        open_as(&f, NS, "4930098371", "demographics", &RECORD_ID, &sealed).unwrap(),
        body
    );

    for i in 0..sealed.dek.nonce.len() {
        let mut s = sealed.clone();
        s.dek.nonce[i] ^= 1;
        assert_eq!(
            open_as(&f, NS, "4930098371", "demographics", &RECORD_ID, &s),
            Err(IntegrityError)
        );
    }
    for i in 0..sealed.dek.wrapped.len() {
        let mut s = sealed.clone();
        s.dek.wrapped[i] ^= 0x80;
        assert_eq!(
            open_as(&f, NS, "4930098371", "demographics", &RECORD_ID, &s),
            Err(IntegrityError)
        );
    }
    for i in 0..sealed.body_nonce.len() {
        let mut s = sealed.clone();
        s.body_nonce[i] ^= 1;
        assert_eq!(
            open_as(&f, NS, "4930098371", "demographics", &RECORD_ID, &s),
            Err(IntegrityError)
        );
    }
    for i in 0..sealed.body_ciphertext.len() {
        let mut s = sealed.clone();
        s.body_ciphertext[i] ^= 1;
        assert_eq!(
            open_as(&f, NS, "4930098371", "demographics", &RECORD_ID, &s),
            Err(IntegrityError)
        );
    }
}

#[test]
fn a_moved_record_fails_to_open() {
    let f = fixture();
    let sealed = seal_one(&f, "4930098371", b"body");
    let other_id = [8u8; 16];
    assert_eq!(
        open_as(&f, NS, "4930098372", "demographics", &RECORD_ID, &sealed),
        Err(IntegrityError),
        "other resident"
    );
    assert_eq!(
        open_as(&f, NS, "4930098371", "photo", &RECORD_ID, &sealed),
        Err(IntegrityError),
        "other name"
    );
    assert_eq!(
        open_as(
            &f,
            "biometrics",
            "4930098371",
            "demographics",
            &RECORD_ID,
            &sealed
        ),
        Err(IntegrityError),
        "other namespace"
    );
    assert_eq!(
        open_as(&f, NS, "4930098371", "demographics", &other_id, &sealed),
        Err(IntegrityError),
        "other record id"
    );

    let mut s = sealed.clone();
    s.dek.master_version = 2;
    assert_eq!(
        open_as(&f, NS, "4930098371", "demographics", &RECORD_ID, &s),
        Err(IntegrityError),
        "other master version"
    );
}

#[test]
fn rewrap_keeps_the_body_bytes_and_binds_the_new_master() {
    let f = fixture();
    let rid = ResidentId::parse("4930098371").unwrap();
    let bi = f.ik.blind_index(NS, &rid);
    let ctx = RecordContext {
        namespace: NS,
        blind_index: &bi,
        record_name: "demographics",
        record_id: &RECORD_ID,
    };
    let (rk1, rk2) = (f.dm.resident_key(NS, &rid), f.dm2.resident_key(NS, &rid));
    let sealed = seal(&rk1, 1, &ctx, b"payload").unwrap();

    let moved = SealedRecord {
        dek: rewrap(&rk1, &rk2, 2, &ctx, &sealed.dek).unwrap(),
        ..sealed.clone()
    };
    assert_eq!(moved.body_ciphertext, sealed.body_ciphertext);
    assert_eq!(moved.body_nonce, sealed.body_nonce);
    assert_eq!(moved.dek.master_version, 2);
    assert_eq!(*open(&rk2, &ctx, &moved).unwrap(), b"payload");
    assert!(
        open(&rk1, &ctx, &moved).is_err(),
        "old master no longer opens it"
    );
    assert!(
        rewrap(&rk2, &rk1, 1, &ctx, &sealed.dek).is_err(),
        "rewrap needs the right source key"
    );
}

#[test]
fn rekey_draws_a_fresh_dek_and_body() {
    let f = fixture();
    let rid = ResidentId::parse("4930098371").unwrap();
    let bi = f.ik.blind_index(NS, &rid);
    let ctx = RecordContext {
        namespace: NS,
        blind_index: &bi,
        record_name: "demographics",
        record_id: &RECORD_ID,
    };
    let (rk1, rk2) = (f.dm.resident_key(NS, &rid), f.dm2.resident_key(NS, &rid));
    let sealed = seal(&rk1, 1, &ctx, b"payload").unwrap();
    let rekeyed = rekey(&rk1, &rk2, 2, &ctx, &sealed).unwrap();
    assert_ne!(rekeyed.body_ciphertext, sealed.body_ciphertext);
    assert_ne!(rekeyed.body_nonce, sealed.body_nonce);
    assert_eq!(*open(&rk2, &ctx, &rekeyed).unwrap(), b"payload");
    // The old DEK no longer opens the new body: prove it by grafting the old DEK envelope on.
    let graft = SealedRecord {
        dek: sealed.dek.clone(),
        ..rekeyed
    };
    assert!(open(&rk1, &ctx, &graft).is_err());
}

#[test]
fn stored_form_rejects_unknown_versions_and_bad_lengths() {
    let f = fixture();
    let s = seal_one(&f, "4930098371", b"x");
    let ok = SealedRecord::from_stored(
        FORMAT_V1,
        1,
        &s.dek.nonce,
        &s.dek.wrapped,
        &s.body_nonce,
        s.body_ciphertext.clone(),
    );
    assert!(ok.unwrap() == s);
    assert_eq!(
        SealedRecord::from_stored(
            2,
            1,
            &s.dek.nonce,
            &s.dek.wrapped,
            &s.body_nonce,
            s.body_ciphertext.clone()
        )
        .err(),
        Some(CryptoError::UnsupportedFormat(2))
    );
    assert!(SealedRecord::from_stored(
        FORMAT_V1,
        1,
        &s.dek.nonce[1..],
        &s.dek.wrapped,
        &s.body_nonce,
        s.body_ciphertext.clone()
    )
    .is_err());
    assert!(SealedRecord::from_stored(
        FORMAT_V1,
        1,
        &s.dek.nonce,
        &s.dek.wrapped[..47],
        &s.body_nonce,
        s.body_ciphertext.clone()
    )
    .is_err());
    assert!(SealedRecord::from_stored(
        FORMAT_V1,
        1,
        &s.dek.nonce,
        &s.dek.wrapped,
        &s.body_nonce,
        vec![0; 15]
    )
    .is_err());
}

fn resident_id_strategy() -> impl Strategy<Value = String> {
    "[0-9A-Za-z][0-9A-Za-z._-]{0,63}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn seal_open_round_trip(id in resident_id_strategy(), name in "[a-z0-9][a-z0-9._/-]{0,127}",
                            body in proptest::collection::vec(any::<u8>(), 0..4096), version in any::<u32>()) {
        let f = fixture();
        let rid = ResidentId::parse(&id).unwrap();
        let bi = f.ik.blind_index(NS, &rid);
        let ctx = RecordContext { namespace: NS, blind_index: &bi, record_name: &name, record_id: &RECORD_ID };
        let rk = f.dm.resident_key(NS, &rid);
        let sealed = seal(&rk, version, &ctx, &body).unwrap();
        prop_assert_eq!(sealed.body_ciphertext.len(), body.len() + 16);
        prop_assert_eq!(&*open(&rk, &ctx, &sealed).unwrap(), &body);
    }

    #[test]
    fn rewrap_round_trip(id in resident_id_strategy(), body in proptest::collection::vec(any::<u8>(), 0..1024),
                         v1 in any::<u32>(), v2 in any::<u32>()) {
        let f = fixture();
        let rid = ResidentId::parse(&id).unwrap();
        let bi = f.ik.blind_index(NS, &rid);
        let ctx = RecordContext { namespace: NS, blind_index: &bi, record_name: "r", record_id: &RECORD_ID };
        let (rk1, rk2) = (f.dm.resident_key(NS, &rid), f.dm2.resident_key(NS, &rid));
        let sealed = seal(&rk1, v1, &ctx, &body).unwrap();
        let moved = SealedRecord { dek: rewrap(&rk1, &rk2, v2, &ctx, &sealed.dek).unwrap(), ..sealed.clone() };
        prop_assert_eq!(&moved.body_ciphertext, &sealed.body_ciphertext);
        prop_assert_eq!(&*open(&rk2, &ctx, &moved).unwrap(), &body);
    }

    #[test]
    fn normalisation_is_idempotent(raw in "\\PC{0,80}") {
        if let Ok(id) = ResidentId::parse(&raw) {
            let again = ResidentId::parse(id.as_str()).unwrap();
            prop_assert_eq!(again.as_str(), id.as_str());
            prop_assert!(id.as_str().len() <= 64);
        }
    }
}
