//! A fourth review: PKCS#11 objects made without the PIN, and `audit verify` beside live traffic.
//! Each test failed when the review was written, and is written as what should happen.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::app::TestApp;
use support::db::TestDb;
use support::writer::verify;

on_both_backends!(audit_verify_beside_ordinary_record_writes_reports_no_break,);

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::Session;
use cryptoki::types::Ulong;
use zkvault::keystore::pkcs11::{module_context, Pkcs11Config, Pkcs11Keystore};
use zkvault::keystore::{KekInfo, KekState, Keystore};
use zkvault_core::{KeyKind, Secret32, WrapContext};

/// A session on the test token that never logs in: what anything sharing the token can open
/// without the PIN. It can make public token objects.
fn public_session(config: &Pkcs11Config) -> Session {
    let ctx = module_context(&config.module).unwrap();
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == config.token_label)
        .unwrap();
    ctx.open_rw_session(slot).unwrap()
}

fn dm(version: u32) -> WrapContext {
    WrapContext::new("rp", KeyKind::DerivationMaster, version)
}

fn secret(byte: u8) -> Secret32 {
    Secret32::from_bytes([byte; 32])
}

/// A public `CKO_DATA` object labelled like a KEK tombstone needs no PIN. The ledger of
/// destroyed masters and the audit anchor ignore such objects; the KEK tombstones do not: the
/// active KEK then counts as destroyed, nothing wrapped under it opens, and the keystore
/// reports the deployment's only KEK as destroyed.
#[test]
fn a_public_kek_tombstone_made_without_the_pin_destroys_nothing() {
    let Some(config) = support::softhsm::new_token() else {
        return;
    };
    let ks = Pkcs11Keystore::open(&config).unwrap();
    let v = ks.create_kek().unwrap();
    let wrapped = ks.wrap(v, &dm(1), &secret(5)).unwrap();
    public_session(&config)
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(b"zkvault-kek-destroyed".to_vec()),
            Attribute::Value(v.to_be_bytes().to_vec()),
        ])
        .expect("a public token object needs no PIN");
    // A fresh handle, as a restarted instance sees the token.
    let ks = Pkcs11Keystore::open(&config).unwrap();
    assert_eq!(
        ks.list_keks().unwrap(),
        vec![KekInfo {
            version: v,
            state: KekState::Active
        }],
        "a public object counted as a KEK tombstone"
    );
    assert!(ks.unwrap(v, &dm(1), &wrapped).unwrap() == secret(5));
}

/// A public AES key object labelled `zkvault-kek-v{n}` with a value its maker chose needs no
/// PIN. The keystore lists it as the newest active KEK: opening the keystore retires the real
/// KEK on the token, and the next master is wrapped under a key the token's other user knows.
#[test]
fn a_public_aes_key_made_without_the_pin_never_becomes_the_active_kek() {
    let Some(config) = support::softhsm::new_token() else {
        return;
    };
    let ks = Pkcs11Keystore::open(&config).unwrap();
    let real = ks.create_kek().unwrap();
    let planted = real + 1;
    let known = [0x42u8; 32];
    public_session(&config)
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Value(known.to_vec()),
            Attribute::Label(format!("zkvault-kek-v{planted}").into_bytes()),
            Attribute::Id(planted.to_be_bytes().to_vec()),
        ])
        .expect("a public token key needs no PIN");
    // A restarted instance.
    let ks = Pkcs11Keystore::open(&config).unwrap();
    let active = ks.active_kek().unwrap();
    // What the attack gives, if it worked: a master wrapped under the planted key opens with
    // the known value, outside the HSM.
    if active == Some(planted) {
        let wrapped = ks.wrap(planted, &dm(2), &secret(7)).unwrap();
        let mut iv: [u8; 12] = wrapped[..12].try_into().unwrap();
        let aad = dm(2).aad();
        let s = public_session(&config);
        let k = s
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Value(known.to_vec()),
                Attribute::Decrypt(true),
            ])
            .unwrap();
        let params = GcmParams::new(&mut iv, &aad, Ulong::from(128)).unwrap();
        let plain = s
            .decrypt(&Mechanism::AesGcm(params), k, &wrapped[12..])
            .unwrap();
        assert_eq!(
            plain, [7u8; 32],
            "the planted key does not open what it wrapped"
        );
    }
    assert_eq!(
        active,
        Some(real),
        "a public key object made without the PIN became the active KEK"
    );
    assert!(
        ks.wrap(real, &dm(3), &secret(9)).is_ok(),
        "the real KEK was retired on the token because of a public key object"
    );
}

/// `zkvault audit verify` is run on a schedule beside the service (docs/threat-model.md): it
/// walks the chains first and reads the records table afterwards, so a record written (or
/// deleted) through zkvault in between holds a revision and ETag the walk never saw, and is
/// reported as "written outside zkvault". Ordinary traffic, no writer, no tampering.
async fn audit_verify_beside_ordinary_record_writes_reports_no_break(db: TestDb) {
    const ID: &str = "4930098371";
    let app = Arc::new(TestApp::start(db).await);
    for i in 0..50 {
        assert!(app
            .put("rp", &format!("r{i}"), ID, b"\"v\"")
            .await
            .status()
            .is_success());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (app, stop) = (app.clone(), stop.clone());
        async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = app.put("rp", &format!("r{}", n % 50), ID, b"\"w\"").await;
                assert!(r.status().is_success(), "{}", r.status());
                n += 1;
            }
            n
        }
    });
    let mut breaks = Vec::new();
    for _ in 0..20 {
        if let Some(b) = verify(&app).await.first_break {
            breaks.push(b);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 0);
    // The trail itself is intact once traffic stops.
    assert_eq!(verify(&app).await.first_break, None);
    assert!(
        breaks.is_empty(),
        "{} of 20 verifications beside {writes} ordinary writes reported a break, e.g. {:?}",
        breaks.len(),
        breaks[0]
    );
}
