//! One conformance suite, run against both keystores: `soft` (a temp file) and `pkcs11`
//! (SoftHSM2, a fresh token per test; skipped loudly when SoftHSM is missing, failed under CI).

mod support;

use std::sync::Arc;

use zkvault::keystore::pkcs11::{Pkcs11Config, Pkcs11Keystore};
use zkvault::keystore::soft::{SoftKeystore, SoftKeystoreOptions};
use zkvault::keystore::{
    AuditAnchor, KekInfo, KekState, Keystore, KeystoreError, SigningKeyRef, EC_POINT_LEN,
};
use zkvault_core::{KeyKind, Secret32, WrapContext};

use support::softhsm;

/// A keystore implementation under test: a fresh empty store, and the same store reopened as
/// after a process restart.
trait Backend {
    type Store: Keystore + 'static;
    fn create(&self) -> Self::Store;
    fn reopen(&self) -> Self::Store;
}

struct SoftBackend {
    dir: tempfile::TempDir,
    passphrase: zkvault::secret::SecretString,
}

impl SoftBackend {
    fn new() -> Option<Self> {
        Some(SoftBackend {
            dir: tempfile::tempdir().unwrap(),
            passphrase: zkvault::secret::SecretString::new("correct horse"),
        })
    }
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("keystore.zkv")
    }
}

impl Backend for SoftBackend {
    type Store = SoftKeystore;
    fn create(&self) -> SoftKeystore {
        SoftKeystore::create(
            &self.path(),
            &self.passphrase,
            SoftKeystoreOptions::for_tests(),
        )
        .unwrap()
    }
    fn reopen(&self) -> SoftKeystore {
        SoftKeystore::open(&self.path(), &self.passphrase).unwrap()
    }
}

struct Pkcs11Backend {
    config: Pkcs11Config,
}

impl Pkcs11Backend {
    fn new() -> Option<Self> {
        softhsm::new_token().map(|config| Pkcs11Backend { config })
    }
}

impl Backend for Pkcs11Backend {
    type Store = Pkcs11Keystore;
    fn create(&self) -> Pkcs11Keystore {
        Pkcs11Keystore::open(&self.config).unwrap()
    }
    fn reopen(&self) -> Pkcs11Keystore {
        Pkcs11Keystore::open(&self.config).unwrap()
    }
}

fn ctx(ns: &str, kind: KeyKind, version: u32) -> WrapContext {
    WrapContext::new(ns, kind, version)
}

fn dm(version: u32) -> WrapContext {
    ctx("uin", KeyKind::DerivationMaster, version)
}

fn secret(byte: u8) -> Secret32 {
    Secret32::from_bytes([byte; 32])
}

fn info(version: u32, state: KekState) -> KekInfo {
    KekInfo { version, state }
}

fn assert_state<T>(r: Result<T, KeystoreError>, version: u32, state: KekState) {
    match r {
        Err(KeystoreError::State {
            version: v,
            state: s,
        }) => assert_eq!((v, s), (version, state)),
        Err(e) => panic!("expected State({version}, {state:?}), got {e}"),
        Ok(_) => panic!("expected State({version}, {state:?}), got Ok"),
    }
}

fn anchor(counter: u64, byte: u8) -> AuditAnchor {
    AuditAnchor {
        counter,
        digest: [byte; 32],
    }
}

fn assert_regression(r: Result<(), KeystoreError>, recorded: u64) {
    match r {
        Err(KeystoreError::AnchorRegression { recorded: r }) => assert_eq!(r, recorded),
        Err(e) => panic!("expected AnchorRegression({recorded}), got {e}"),
        Ok(()) => panic!("expected AnchorRegression({recorded}), got Ok"),
    }
}

fn assert_unwrap_fails<T>(r: Result<T, KeystoreError>) {
    match r {
        Err(KeystoreError::Unwrap) => {}
        Err(e) => panic!("expected Unwrap, got {e}"),
        Ok(_) => panic!("expected Unwrap, got Ok"),
    }
}

mod cases {
    use super::*;

    pub fn create_and_list(b: &impl Backend) {
        let ks = b.create();
        assert!(ks.list_keks().unwrap().is_empty());
        assert_eq!(ks.active_kek().unwrap(), None);
        assert_eq!(ks.create_kek().unwrap(), 1);
        assert_eq!(ks.list_keks().unwrap(), vec![info(1, KekState::Active)]);
        assert_eq!(ks.create_kek().unwrap(), 2);
        assert_eq!(
            ks.list_keks().unwrap(),
            vec![info(1, KekState::Retired), info(2, KekState::Active)]
        );
        assert_eq!(ks.active_kek().unwrap(), Some(2));
        ks.check().unwrap();
        assert!(matches!(ks.kind(), "soft" | "pkcs11"));
    }

    pub fn round_trip(b: &impl Backend) {
        let ks = b.create();
        let v = ks.create_kek().unwrap();
        let s = Secret32::random().unwrap();
        let a = ks.wrap(v, &dm(1), &s).unwrap();
        let again = ks.wrap(v, &dm(1), &s).unwrap();
        assert_ne!(a, again, "every wrap draws a fresh nonce");
        assert!(ks.unwrap(v, &dm(1), &a).unwrap() == s);
        assert!(ks.unwrap(v, &dm(1), &again).unwrap() == s);
        let ik = ctx("uin", KeyKind::IndexKey, 0);
        assert!(
            ks.unwrap(v, &ik, &ks.wrap(v, &ik, &secret(9)).unwrap())
                .unwrap()
                == secret(9)
        );
    }

    pub fn aad_mismatch(b: &impl Backend) {
        let ks = b.create();
        let v1 = ks.create_kek().unwrap();
        let wrapped = ks.wrap(v1, &dm(3), &secret(1)).unwrap();
        assert_unwrap_fails(ks.unwrap(
            v1,
            &ctx("other-ns", KeyKind::DerivationMaster, 3),
            &wrapped,
        ));
        assert_unwrap_fails(ks.unwrap(v1, &ctx("uin", KeyKind::IndexKey, 3), &wrapped));
        assert_unwrap_fails(ks.unwrap(v1, &dm(4), &wrapped));
        // Under another KEK version the bytes fail too.
        let v2 = ks.create_kek().unwrap();
        assert_unwrap_fails(ks.unwrap(v2, &dm(3), &wrapped));
        assert!(ks.unwrap(v1, &dm(3), &wrapped).unwrap() == secret(1));
    }

    pub fn altered_bytes(b: &impl Backend) {
        let ks = b.create();
        let v = ks.create_kek().unwrap();
        let wrapped = ks.wrap(v, &dm(1), &secret(2)).unwrap();
        for i in 0..wrapped.len() {
            let mut bad = wrapped.clone();
            bad[i] ^= 0x01;
            assert_unwrap_fails(ks.unwrap(v, &dm(1), &bad));
        }
        assert_unwrap_fails(ks.unwrap(v, &dm(1), &wrapped[..wrapped.len() - 1]));
        assert_unwrap_fails(ks.unwrap(v, &dm(1), &[wrapped.as_slice(), &[0]].concat()));
        assert_unwrap_fails(ks.unwrap(v, &dm(1), &[]));
    }

    pub fn retired_unwraps_only(b: &impl Backend) {
        let ks = b.create();
        let v1 = ks.create_kek().unwrap();
        let wrapped = ks.wrap(v1, &dm(1), &secret(3)).unwrap();
        let v2 = ks.create_kek().unwrap();
        assert_state(ks.wrap(v1, &dm(1), &secret(3)), v1, KekState::Retired);
        assert!(ks.unwrap(v1, &dm(1), &wrapped).unwrap() == secret(3));
        // Rewrap under the new KEK: what KEK rotation does.
        let rewrapped = ks
            .wrap(v2, &dm(1), &ks.unwrap(v1, &dm(1), &wrapped).unwrap())
            .unwrap();
        assert!(ks.unwrap(v2, &dm(1), &rewrapped).unwrap() == secret(3));
        // Explicit retirement of the active KEK leaves none active.
        ks.retire_kek(v2).unwrap();
        assert_eq!(ks.active_kek().unwrap(), None);
        assert_state(ks.wrap(v2, &dm(1), &secret(3)), v2, KekState::Retired);
        assert!(ks.unwrap(v2, &dm(1), &rewrapped).unwrap() == secret(3));
    }

    pub fn destroyed_cannot_unwrap(b: &impl Backend) {
        let ks = b.create();
        let v1 = ks.create_kek().unwrap();
        let wrapped = ks.wrap(v1, &dm(1), &secret(4)).unwrap();
        ks.create_kek().unwrap();
        ks.destroy_kek(v1).unwrap();
        assert_state(ks.unwrap(v1, &dm(1), &wrapped), v1, KekState::Destroyed);
        assert_state(ks.wrap(v1, &dm(1), &secret(4)), v1, KekState::Destroyed);
        assert_eq!(
            ks.list_keks().unwrap(),
            vec![info(1, KekState::Destroyed), info(2, KekState::Active)]
        );
        // Versions are never reused after destruction.
        assert_eq!(ks.create_kek().unwrap(), 3);
    }

    pub fn invalid_transitions(b: &impl Backend) {
        let ks = b.create();
        for r in [ks.retire_kek(1), ks.destroy_kek(1)] {
            assert!(matches!(r, Err(KeystoreError::UnknownVersion(1))), "{r:?}");
        }
        assert!(matches!(
            ks.wrap(1, &dm(1), &secret(0)),
            Err(KeystoreError::UnknownVersion(1))
        ));
        assert!(matches!(
            ks.unwrap(1, &dm(1), &[0; 60]),
            Err(KeystoreError::UnknownVersion(1))
        ));
        let v1 = ks.create_kek().unwrap();
        assert_state(ks.destroy_kek(v1), v1, KekState::Active);
        ks.retire_kek(v1).unwrap();
        assert_state(ks.retire_kek(v1), v1, KekState::Retired);
        ks.destroy_kek(v1).unwrap();
        assert_state(ks.destroy_kek(v1), v1, KekState::Destroyed);
        assert_state(ks.retire_kek(v1), v1, KekState::Destroyed);
        assert_eq!(ks.list_keks().unwrap(), vec![info(1, KekState::Destroyed)]);
    }

    pub fn concurrent_use(b: &impl Backend) {
        let ks = Arc::new(b.create());
        let v1 = ks.create_kek().unwrap();
        let old = ks.wrap(v1, &dm(0), &secret(0xAA)).unwrap();
        std::thread::scope(|scope| {
            for t in 0..8u8 {
                let ks = Arc::clone(&ks);
                let old = &old;
                scope.spawn(move || {
                    for i in 0..150u32 {
                        // Thread 0 rotates the KEK now and then while the others work.
                        if t == 0 && i % 50 == 25 {
                            ks.create_kek().unwrap();
                        }
                        let c = ctx(&format!("ns{t}"), KeyKind::DerivationMaster, i);
                        let s = secret(t.wrapping_mul(31).wrapping_add(i as u8));
                        // The active version can change between reading and wrapping.
                        let (v, wrapped) = loop {
                            let v = ks.active_kek().unwrap().unwrap();
                            match ks.wrap(v, &c, &s) {
                                Ok(w) => break (v, w),
                                Err(KeystoreError::State {
                                    state: KekState::Retired,
                                    ..
                                }) => continue,
                                Err(e) => panic!("wrap: {e}"),
                            }
                        };
                        assert!(ks.unwrap(v, &c, &wrapped).unwrap() == s);
                        assert!(ks.unwrap(v1, &dm(0), old).unwrap() == secret(0xAA));
                    }
                });
            }
        });
        let keks = ks.list_keks().unwrap();
        assert_eq!(keks.len(), 4);
        assert_eq!(
            keks.iter().filter(|k| k.state == KekState::Active).count(),
            1
        );
    }

    pub fn reopen_sees_same_keys(b: &impl Backend) {
        let (w1, w2, w3);
        {
            let ks = b.create();
            let v1 = ks.create_kek().unwrap();
            w1 = ks.wrap(v1, &dm(1), &secret(1)).unwrap();
            let v2 = ks.create_kek().unwrap();
            w2 = ks.wrap(v2, &dm(2), &secret(2)).unwrap();
            let v3 = ks.create_kek().unwrap();
            w3 = ks.wrap(v3, &dm(3), &secret(3)).unwrap();
            ks.destroy_kek(v1).unwrap();
        }
        let ks = b.reopen();
        assert_eq!(
            ks.list_keks().unwrap(),
            vec![
                info(1, KekState::Destroyed),
                info(2, KekState::Retired),
                info(3, KekState::Active)
            ]
        );
        assert_state(ks.unwrap(1, &dm(1), &w1), 1, KekState::Destroyed);
        assert!(ks.unwrap(2, &dm(2), &w2).unwrap() == secret(2));
        assert!(ks.unwrap(3, &dm(3), &w3).unwrap() == secret(3));
        assert_state(ks.wrap(2, &dm(2), &secret(2)), 2, KekState::Retired);
        // A second handle on the same store, e.g. while the first is still open, agrees.
        let again = b.reopen();
        assert_eq!(again.list_keks().unwrap(), ks.list_keks().unwrap());
        assert!(
            again
                .unwrap(3, &dm(3), &ks.wrap(3, &dm(3), &secret(7)).unwrap())
                .unwrap()
                == secret(7)
        );
    }

    /// Two handles on one store, as the service and the CLI (or two instances) hold: each sees
    /// the other's changes at once, and a change made from a stale view loses nothing.
    pub fn two_handles_share_changes(b: &impl Backend) {
        let a = b.create();
        let c = b.reopen();
        assert_eq!(a.id(), c.id(), "one store, one identity");
        assert_eq!(a.create_kek().unwrap(), 1);
        assert_eq!(
            c.create_kek().unwrap(),
            2,
            "c sees a's KEK before numbering its own"
        );
        assert_eq!(a.create_kek().unwrap(), 3, "a sees c's KEK");
        let expected = vec![
            info(1, KekState::Retired),
            info(2, KekState::Retired),
            info(3, KekState::Active),
        ];
        assert_eq!(a.list_keks().unwrap(), expected);
        assert_eq!(c.list_keks().unwrap(), expected);
        assert_state(c.wrap(2, &dm(1), &secret(1)), 2, KekState::Retired);
        assert!(
            c.unwrap(3, &dm(1), &a.wrap(3, &dm(1), &secret(4)).unwrap())
                .unwrap()
                == secret(4)
        );
        c.destroy_kek(1).unwrap();
        assert_state(a.unwrap(1, &dm(1), &[0; 60]), 1, KekState::Destroyed);
        // Numbers continue above a floor the caller knows of (versions used in other keystores).
        assert_eq!(a.create_kek_after(10).unwrap(), 11);
        assert_eq!(c.create_kek_after(2).unwrap(), 12);
        assert_eq!(
            b.reopen().list_keks().unwrap().last(),
            Some(&info(12, KekState::Active))
        );
    }

    /// Two handles creating KEKs at the same time never make two keys under one version.
    pub fn concurrent_creators_lose_no_kek(b: &impl Backend) {
        let (a, c) = (Arc::new(b.create()), Arc::new(b.reopen()));
        let made: Vec<u32> = [a.clone(), c.clone()]
            .into_iter()
            .map(|ks| {
                std::thread::spawn(move || {
                    (0..4).map(|_| ks.create_kek().unwrap()).collect::<Vec<_>>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let mut sorted = made.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 8, "duplicate versions handed out: {made:?}");
        let listed = b.reopen().list_keks().unwrap();
        assert_eq!(listed.len(), 8, "{listed:?}");
        assert_eq!(
            listed
                .iter()
                .filter(|k| k.state == KekState::Active)
                .count(),
            1
        );
        for v in made {
            if listed
                .iter()
                .any(|k| k.version == v && k.state == KekState::Active)
            {
                assert!(
                    a.unwrap(v, &dm(1), &c.wrap(v, &dm(1), &secret(9)).unwrap())
                        .unwrap()
                        == secret(9)
                );
            }
        }
    }

    /// The keystore's ledger of destroyed masters: what a restored database cannot undo.
    /// Recording is idempotent, survives a reopen, reaches another handle, and keeps the KEKs.
    pub fn destroyed_masters_are_remembered(b: &impl Backend) {
        let ks = b.create();
        let v = ks.create_kek().unwrap();
        assert!(ks.destroyed_masters().unwrap().is_empty());
        let other = b.reopen();
        ks.record_destroyed("rp", 1).unwrap();
        ks.record_destroyed("uin", 3).unwrap();
        ks.record_destroyed("rp", 1).unwrap();
        let expected: std::collections::BTreeSet<(String, u32)> =
            [("rp".to_string(), 1), ("uin".to_string(), 3)].into();
        assert_eq!(ks.destroyed_masters().unwrap(), expected);
        assert_eq!(
            other.destroyed_masters().unwrap(),
            expected,
            "another handle"
        );
        assert_eq!(
            b.reopen().destroyed_masters().unwrap(),
            expected,
            "after a reopen"
        );
        assert!(matches!(
            ks.record_destroyed("", 1),
            Err(KeystoreError::Config(_))
        ));
        assert!(matches!(
            ks.record_destroyed(&"n".repeat(256), 1),
            Err(KeystoreError::Config(_))
        ));
        // The KEKs are untouched.
        assert_eq!(b.reopen().active_kek().unwrap(), Some(v));
        let w = ks.wrap(v, &dm(1), &secret(5)).unwrap();
        assert!(b.reopen().unwrap(v, &dm(1), &w).unwrap() == secret(5));
    }

    /// The audit anchor, what a rolled-back database cannot rewind: none at first, then only
    /// forward; the same anchor again changes nothing; it survives a reopen and leaves the KEKs
    /// and the ledger alone.
    pub fn audit_anchor_only_moves_forward(b: &impl Backend) {
        let ks = b.create();
        let v = ks.create_kek().unwrap();
        ks.record_destroyed("rp", 1).unwrap();
        assert_eq!(ks.audit_anchor().unwrap(), None);
        ks.advance_audit_anchor(&anchor(1, 1)).unwrap();
        assert_eq!(ks.audit_anchor().unwrap(), Some(anchor(1, 1)));
        ks.advance_audit_anchor(&anchor(5, 5)).unwrap();
        assert_eq!(ks.audit_anchor().unwrap(), Some(anchor(5, 5)));
        ks.advance_audit_anchor(&anchor(5, 5)).unwrap();
        assert_eq!(ks.audit_anchor().unwrap(), Some(anchor(5, 5)), "idempotent");
        assert_regression(ks.advance_audit_anchor(&anchor(4, 4)), 5);
        assert_regression(ks.advance_audit_anchor(&anchor(0, 5)), 5);
        assert_regression(ks.advance_audit_anchor(&anchor(5, 6)), 5);
        assert_eq!(ks.audit_anchor().unwrap(), Some(anchor(5, 5)), "unchanged");
        let again = b.reopen();
        assert_eq!(
            again.audit_anchor().unwrap(),
            Some(anchor(5, 5)),
            "reopened"
        );
        assert_regression(again.advance_audit_anchor(&anchor(4, 4)), 5);
        again.advance_audit_anchor(&anchor(u64::MAX, 0)).unwrap();
        assert_eq!(
            b.reopen().audit_anchor().unwrap(),
            Some(anchor(u64::MAX, 0))
        );
        // The KEKs and the ledger are untouched, and a ledger write keeps the anchor.
        ks.record_destroyed("uin", 2).unwrap();
        let reopened = b.reopen();
        assert_eq!(reopened.audit_anchor().unwrap(), Some(anchor(u64::MAX, 0)));
        assert_eq!(
            reopened.destroyed_masters().unwrap(),
            [("rp".to_string(), 1), ("uin".to_string(), 2)].into()
        );
        assert_eq!(reopened.active_kek().unwrap(), Some(v));
        let w = ks.wrap(v, &dm(1), &secret(5)).unwrap();
        assert!(reopened.unwrap(v, &dm(1), &w).unwrap() == secret(5));
    }

    /// Two handles on one store: what one records, the other sees at once, and cannot undo
    /// from the view it had before.
    pub fn two_handles_share_the_anchor(b: &impl Backend) {
        let a = b.create();
        let c = b.reopen();
        assert_eq!(c.audit_anchor().unwrap(), None);
        a.advance_audit_anchor(&anchor(5, 5)).unwrap();
        assert_regression(c.advance_audit_anchor(&anchor(4, 4)), 5);
        assert_regression(c.advance_audit_anchor(&anchor(5, 6)), 5);
        assert_eq!(c.audit_anchor().unwrap(), Some(anchor(5, 5)));
        c.advance_audit_anchor(&anchor(6, 6)).unwrap();
        assert_eq!(a.audit_anchor().unwrap(), Some(anchor(6, 6)));
        assert_regression(a.advance_audit_anchor(&anchor(5, 5)), 6);
        assert_eq!(b.reopen().audit_anchor().unwrap(), Some(anchor(6, 6)));
    }

    /// Two handles advancing at once, each with its own digests, as two instances
    /// checkpointing: each call records its anchor or is refused, never two at one counter,
    /// and the newest recorded is what remains.
    pub fn racing_anchors_keep_the_newest(b: &impl Backend) {
        const N: u64 = 10;
        let stores = [Arc::new(b.create()), Arc::new(b.reopen())];
        let recorded: Vec<(u64, u8)> = stores
            .into_iter()
            .zip([1u8, 2])
            .map(|(ks, who)| {
                std::thread::spawn(move || {
                    let mut won = Vec::new();
                    for n in 1..=N {
                        match ks.advance_audit_anchor(&anchor(n, who)) {
                            Ok(()) => won.push((n, who)),
                            Err(KeystoreError::AnchorRegression { recorded }) => {
                                assert!(recorded >= n, "refused {n} below {recorded}")
                            }
                            Err(e) => panic!("advance {n}: {e}"),
                        }
                    }
                    won
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let mut counters: Vec<u64> = recorded.iter().map(|r| r.0).collect();
        counters.sort();
        counters.dedup();
        assert_eq!(
            counters.len(),
            recorded.len(),
            "two at one counter: {recorded:?}"
        );
        let (n, who) = *recorded.iter().max().expect("some anchor recorded");
        assert_eq!(b.reopen().audit_anchor().unwrap(), Some(anchor(n, who)));
    }
}

/// The ES256 signature check of an independent implementation (RustCrypto's p256, which the
/// PKCS#11 path does not use) over `digest`.
fn verifies(public: &[u8], digest: &[u8; 32], sig: &[u8; 64]) -> bool {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(public).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(sig).unwrap();
    key.verify_prehash(digest, &sig).is_ok()
}

mod signing_cases {
    use super::*;

    fn sig_ctx(version: u32) -> WrapContext {
        ctx("credential", KeyKind::SigningKey, version)
    }

    /// A new key pair signs digests its public key verifies, after a restart too; another
    /// digest or key does not verify; a destroyed key signs no more.
    pub fn sign_verify_destroy(b: &impl Backend) {
        let ks = b.create();
        let kek = ks.create_kek().unwrap();
        let one = ks.generate_signing_key(kek, &sig_ctx(1)).unwrap();
        let two = ks.generate_signing_key(kek, &sig_ctx(2)).unwrap();
        assert_eq!(one.public.len(), EC_POINT_LEN);
        assert_eq!(one.public[0], 0x04);
        assert_ne!(one.public, two.public);
        let digest = [7u8; 32];
        let sig = ks.sign_digest(&sig_ctx(1), &one.key, &digest).unwrap();
        assert!(verifies(&one.public, &digest, &sig));
        assert!(!verifies(&one.public, &[8u8; 32], &sig));
        assert!(!verifies(&two.public, &digest, &sig));
        // Nonces are RFC 6979's in the soft keystore, the token's own on PKCS#11: either way
        // every signature verifies.
        let again = ks.sign_digest(&sig_ctx(1), &one.key, &digest).unwrap();
        assert!(verifies(&one.public, &digest, &again));

        let reopened = b.reopen();
        let sig = reopened
            .sign_digest(&sig_ctx(1), &one.key, &digest)
            .unwrap();
        assert!(verifies(&one.public, &digest, &sig));

        reopened.destroy_signing_key(&one.key).unwrap();
        reopened.destroy_signing_key(&one.key).unwrap(); // idempotent
        if matches!(one.key, SigningKeyRef::Token { .. }) {
            assert!(reopened
                .sign_digest(&sig_ctx(1), &one.key, &digest)
                .is_err());
            assert!(b
                .reopen()
                .sign_digest(&sig_ctx(1), &one.key, &digest)
                .is_err());
        }
        // The other key is untouched.
        let sig = reopened
            .sign_digest(&sig_ctx(2), &two.key, &digest)
            .unwrap();
        assert!(verifies(&two.public, &digest, &sig));
    }

    /// A sealed key opens only in its own signer and version; a token key's private half
    /// never leaves the token (the soft keystore seals instead of holding it in its file).
    pub fn keys_stay_in_their_place(b: &impl Backend) {
        let ks = b.create();
        let kek = ks.create_kek().unwrap();
        let key = ks.generate_signing_key(kek, &sig_ctx(1)).unwrap();
        match &key.key {
            SigningKeyRef::Sealed { wrapped, .. } => {
                assert!(!wrapped.windows(32).any(|w| key.public[1..33] == *w));
                assert_unwrap_fails(ks.sign_digest(&sig_ctx(2), &key.key, &[1; 32]));
                assert_unwrap_fails(ks.sign_digest(
                    &ctx("other", KeyKind::SigningKey, 1),
                    &key.key,
                    &[1; 32],
                ));
            }
            SigningKeyRef::Token { id } => assert_eq!(id.len(), 16),
        }
    }
}

macro_rules! conformance {
    ($name:ident, $backend:expr) => {
        mod $name {
            use super::*;

            conformance!(@cases $backend;
                create_and_list, round_trip, aad_mismatch, altered_bytes, retired_unwraps_only,
                destroyed_cannot_unwrap, invalid_transitions, concurrent_use, reopen_sees_same_keys,
                two_handles_share_changes, concurrent_creators_lose_no_kek,
                destroyed_masters_are_remembered, audit_anchor_only_moves_forward,
                two_handles_share_the_anchor, racing_anchors_keep_the_newest);

            #[test]
            fn sign_verify_destroy() {
                match $backend {
                    Some(backend) => signing_cases::sign_verify_destroy(&backend),
                    None => eprintln!("SKIPPED sign_verify_destroy"),
                }
            }

            #[test]
            fn keys_stay_in_their_place() {
                match $backend {
                    Some(backend) => signing_cases::keys_stay_in_their_place(&backend),
                    None => eprintln!("SKIPPED keys_stay_in_their_place"),
                }
            }
        }
    };
    (@cases $backend:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                match $backend {
                    Some(backend) => cases::$case(&backend),
                    None => eprintln!("SKIPPED {}", stringify!($case)),
                }
            }
        )*
    };
}

conformance!(soft, SoftBackend::new());
conformance!(pkcs11, Pkcs11Backend::new());

/// What only the sealed file can get wrong.
mod soft_file {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use zkvault::keystore::soft::{passphrase_from_env_or_file, Argon2Params};

    fn populated() -> (SoftBackend, Vec<u8>) {
        let b = SoftBackend::new().unwrap();
        let ks = b.create();
        ks.create_kek().unwrap();
        ks.create_kek().unwrap();
        let bytes = std::fs::read(b.path()).unwrap();
        (b, bytes)
    }

    fn open_err(b: &SoftBackend, pass: &str) -> KeystoreError {
        match SoftKeystore::open(&b.path(), &zkvault::secret::SecretString::new(pass)) {
            Err(e) => e,
            Ok(_) => panic!("open should fail"),
        }
    }

    /// A keystore written by an earlier release (file format 1, no ledger of destroyed
    /// masters; `tests/fixtures/keystore-format1.zks`, made by `zkvault keystore init` at commit
    /// 5512b31, passphrase `format-one-fixture`) opens with its KEK, and its first change writes
    /// the current format with the ledger and the anchor.
    #[test]
    fn a_format_1_file_opens_and_is_upgraded_on_its_first_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keystore.zks");
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/keystore-format1.zks"
            ),
            &path,
        )
        .unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap()[6],
            1,
            "the fixture is format 1"
        );
        let pass = zkvault::secret::SecretString::new("format-one-fixture");
        let ks = SoftKeystore::open(&path, &pass).unwrap();
        assert_eq!(ks.list_keks().unwrap(), vec![info(1, KekState::Active)]);
        assert!(ks.destroyed_masters().unwrap().is_empty());
        assert_eq!(ks.audit_anchor().unwrap(), None);
        let w = ks.wrap(1, &dm(1), &secret(3)).unwrap();
        ks.record_destroyed("rp", 2).unwrap();
        assert_eq!(std::fs::read(&path).unwrap()[6], 3, "rewritten as format 3");
        ks.advance_audit_anchor(&anchor(7, 7)).unwrap();
        let again = SoftKeystore::open(&path, &pass).unwrap();
        assert!(again.unwrap(1, &dm(1), &w).unwrap() == secret(3));
        assert_eq!(
            again.destroyed_masters().unwrap(),
            [("rp".to_string(), 2)].into()
        );
        assert_eq!(again.audit_anchor().unwrap(), Some(anchor(7, 7)));
    }

    /// An anchor that does not advance (the same one again, or a regression) leaves the file
    /// as it was: not even rewritten.
    #[test]
    fn an_anchor_that_does_not_advance_leaves_the_file_alone() {
        let (b, _) = populated();
        let ks = b.reopen();
        ks.advance_audit_anchor(&anchor(3, 3)).unwrap();
        let before = std::fs::read(b.path()).unwrap();
        ks.advance_audit_anchor(&anchor(3, 3)).unwrap();
        assert_regression(ks.advance_audit_anchor(&anchor(2, 2)), 3);
        assert_regression(ks.advance_audit_anchor(&anchor(3, 4)), 3);
        assert_eq!(std::fs::read(b.path()).unwrap(), before);
    }

    #[test]
    fn wrong_passphrase_is_refused_and_file_unchanged() {
        let (b, before) = populated();
        assert!(matches!(
            open_err(&b, "wrong horse"),
            KeystoreError::BadPassphrase
        ));
        assert_eq!(std::fs::read(b.path()).unwrap(), before);
    }

    #[test]
    fn damaged_files_are_corrupt_and_left_alone() {
        let (b, good) = populated();
        let header_len = 6 + 1 + 12 + 32 + 32 + 24;
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            good[..10].to_vec(),
            good[..header_len + 5].to_vec(),
            good[..good.len() - 1].to_vec(),
        ];
        for at in [0, 6, header_len, header_len + 20, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            cases.push(bad);
        }
        for bad in cases {
            std::fs::write(b.path(), &bad).unwrap();
            let e = open_err(&b, "correct horse");
            assert!(
                matches!(e, KeystoreError::Corrupt(_)),
                "{} bytes: {e}",
                bad.len()
            );
            assert_eq!(std::fs::read(b.path()).unwrap(), bad);
        }
        // A flip in the salt or verifier changes what the passphrase must derive: it cannot be
        // told from a wrong passphrase, but it never opens.
        for at in [20, 60] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            std::fs::write(b.path(), &bad).unwrap();
            assert!(matches!(
                open_err(&b, "correct horse"),
                KeystoreError::BadPassphrase
            ));
        }
        std::fs::write(b.path(), &good).unwrap();
        assert_eq!(b.reopen().list_keks().unwrap().len(), 2);
    }

    #[test]
    fn file_is_private_and_writes_leave_no_temp_files() {
        let (b, _) = populated();
        let mut names: Vec<_> = std::fs::read_dir(b.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        // The keystore, and the (empty) file whose lock serialises writers across processes.
        assert_eq!(names, vec!["keystore.zkv", "keystore.zkv.lock"]);
        for name in names {
            let mode = std::fs::metadata(b.dir.path().join(&name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        assert_eq!(
            std::fs::metadata(b.dir.path().join("keystore.zkv.lock"))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn create_refuses_an_existing_file() {
        let (b, before) = populated();
        let r = SoftKeystore::create(&b.path(), &b.passphrase, SoftKeystoreOptions::for_tests());
        assert!(matches!(r, Err(KeystoreError::Unavailable(_))));
        assert_eq!(std::fs::read(b.path()).unwrap(), before);
    }

    #[test]
    fn header_carries_the_argon2_parameters() {
        let (b, bytes) = populated();
        assert_eq!(&bytes[..7], b"ZKVKS1\x03");
        assert_eq!(b.reopen().argon2_params(), Argon2Params::FLOOR);
        assert_eq!(
            u32::from_be_bytes(bytes[7..11].try_into().unwrap()),
            8 * 1024
        );
    }

    #[test]
    fn passphrase_file_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pass");
        std::fs::write(&f, "s3cret pass\n").unwrap();
        assert_eq!(
            passphrase_from_env_or_file(Some(&f)).unwrap().expose(),
            "s3cret pass"
        );
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(
            passphrase_from_env_or_file(Some(&f)),
            Err(KeystoreError::Config(_))
        ));
        let missing = passphrase_from_env_or_file(Some(&dir.path().join("nope")));
        assert!(matches!(missing, Err(KeystoreError::Config(_))));
    }
}

/// What only the HSM can get wrong: the attributes the keys are born with.
mod pkcs11_token {
    use super::*;
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    use zkvault::keystore::pkcs11::module_context;

    /// A session of our own on the token, logged in (the keystore's login is shared by the
    /// application's sessions, so logging in again may find it already done).
    fn user_session(config: &Pkcs11Config) -> cryptoki::session::Session {
        let ctx = module_context(&config.module).unwrap();
        let slot = ctx
            .get_slots_with_initialized_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label() == config.token_label)
            .unwrap();
        let session = ctx.open_rw_session(slot).unwrap();
        match session.login(UserType::User, Some(&AuthPin::from(config.pin.expose()))) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => panic!("{e}"),
        }
        session
    }

    #[test]
    fn keks_are_sensitive_token_keys_that_never_leave() {
        let Some(config) = softhsm::new_token() else {
            return;
        };
        let ks = Pkcs11Keystore::open(&config).unwrap();
        ks.create_kek().unwrap();
        let session = user_session(&config);
        let keys = session
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
            .unwrap();
        assert_eq!(keys.len(), 1);
        let attrs = session
            .get_attributes(
                keys[0],
                &[
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::ValueLen,
                    AttributeType::Label,
                    AttributeType::Id,
                    AttributeType::Value,
                ],
            )
            .unwrap();
        let mut seen = 0;
        for a in attrs {
            match a {
                Attribute::Token(v) | Attribute::Private(v) | Attribute::Sensitive(v) => assert!(v),
                Attribute::Extractable(v) => assert!(!v),
                Attribute::ValueLen(n) => assert_eq!(u64::from(n), 32),
                Attribute::Label(l) => assert_eq!(l, b"zkvault-kek-v1"),
                Attribute::Id(id) => assert_eq!(id, 1u32.to_be_bytes()),
                Attribute::Value(v) => {
                    panic!("a sensitive key's value was readable ({} bytes)", v.len())
                }
                _ => continue,
            }
            seen += 1;
        }
        assert_eq!(seen, 7);
    }

    /// Two service instances on one token (here two keystores, each with its own sessions)
    /// rotating at the same moment: every call gets its own version, the token holds exactly one
    /// key object per version, and one version ends active.
    #[test]
    fn two_instances_racing_create_kek_never_share_a_version() {
        const N: usize = 12;
        let Some(config) = softhsm::new_token() else {
            return;
        };
        let a = Pkcs11Keystore::open(&config).unwrap();
        let b = Pkcs11Keystore::open(&config).unwrap();
        let start = std::sync::Barrier::new(2);
        // Errors are collected, not unwrapped: a racer that panicked would leave the other
        // waiting at the barrier for ever.
        let results: Vec<Result<u32, KeystoreError>> = std::thread::scope(|scope| {
            let racers = [&a, &b].map(|ks| {
                let start = &start;
                scope.spawn(move || {
                    (0..N)
                        .map(|_| {
                            start.wait();
                            ks.create_kek()
                        })
                        .collect::<Vec<_>>()
                })
            });
            racers.into_iter().flat_map(|r| r.join().unwrap()).collect()
        });
        let returned: Vec<u32> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("create_kek: {e}")))
            .collect();
        let distinct: std::collections::BTreeSet<u32> = returned.iter().copied().collect();
        assert_eq!(distinct.len(), 2 * N, "versions handed out: {returned:?}");

        // One key object per version, all of them finished KEKs.
        let session = user_session(&config);
        let mut per_version = std::collections::BTreeMap::<Vec<u8>, usize>::new();
        for h in session
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
            .unwrap()
        {
            let (mut id, mut label) = (Vec::new(), Vec::new());
            for a in session
                .get_attributes(h, &[AttributeType::Id, AttributeType::Label])
                .unwrap()
            {
                match a {
                    Attribute::Id(i) => id = i,
                    Attribute::Label(l) => label = l,
                    _ => {}
                }
            }
            let v = u32::from_be_bytes(id.as_slice().try_into().unwrap());
            assert_eq!(label, format!("zkvault-kek-v{v}").into_bytes());
            *per_version.entry(id).or_default() += 1;
        }
        assert!(
            per_version.values().all(|&n| n == 1),
            "versions with more than one key object: {:?}",
            per_version
                .iter()
                .filter(|(_, &n)| n > 1)
                .map(|(id, n)| (u32::from_be_bytes(id.as_slice().try_into().unwrap()), n))
                .collect::<Vec<_>>()
        );
        assert_eq!(per_version.len(), 2 * N);

        for ks in [&a, &b] {
            let keks = ks.list_keks().unwrap();
            let listed: std::collections::BTreeSet<u32> = keks.iter().map(|k| k.version).collect();
            assert_eq!(listed, distinct);
            let active: Vec<u32> = keks
                .iter()
                .filter(|k| k.state == KekState::Active)
                .map(|k| k.version)
                .collect();
            assert_eq!(active, vec![*distinct.last().unwrap()], "{keks:?}");
        }
        // And the keys work from either instance.
        let v = *distinct.last().unwrap();
        let w = a.wrap(v, &dm(1), &secret(8)).unwrap();
        assert!(b.unwrap(v, &dm(1), &w).unwrap() == secret(8));
    }

    /// A crash between generating a KEK and claiming its version leaves a pending key object:
    /// it is neither listed nor usable, and its version is skipped rather than fought over.
    #[test]
    fn a_pending_leftover_is_skipped() {
        let Some(config) = softhsm::new_token() else {
            return;
        };
        let ks = Pkcs11Keystore::open(&config).unwrap();
        assert_eq!(ks.create_kek().unwrap(), 1);
        user_session(&config)
            .generate_key(
                &cryptoki::mechanism::Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(cryptoki::object::KeyType::AES),
                    Attribute::ValueLen(32u64.into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(b"zkvault-kek-pending-v2".to_vec()),
                    Attribute::Id(2u32.to_be_bytes().to_vec()),
                ],
            )
            .unwrap();
        assert_eq!(ks.list_keks().unwrap(), vec![info(1, KekState::Active)]);
        assert!(matches!(
            ks.wrap(2, &dm(1), &secret(1)),
            Err(KeystoreError::UnknownVersion(2))
        ));
        assert_eq!(ks.create_kek().unwrap(), 3);
        assert_eq!(
            Pkcs11Keystore::open(&config).unwrap().list_keks().unwrap(),
            vec![info(1, KekState::Retired), info(3, KekState::Active)]
        );
    }

    /// The anchor objects on the token, as `(private, value)`.
    fn anchor_objects(session: &cryptoki::session::Session) -> Vec<(bool, Vec<u8>)> {
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Label(b"zkvault-audit-anchor".to_vec()),
            ])
            .unwrap();
        found
            .into_iter()
            .map(|h| {
                let (mut private, mut value) = (false, Vec::new());
                for a in session
                    .get_attributes(h, &[AttributeType::Private, AttributeType::Value])
                    .unwrap()
                {
                    match a {
                        Attribute::Private(p) => private = p,
                        Attribute::Value(v) => value = v,
                        _ => {}
                    }
                }
                (private, value)
            })
            .collect()
    }

    fn anchor_value(a: AuditAnchor) -> Vec<u8> {
        [&a.counter.to_be_bytes()[..], &a.digest].concat()
    }

    fn create_anchor_object(session: &cryptoki::session::Session, private: bool, a: AuditAnchor) {
        session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(private),
                Attribute::Label(b"zkvault-audit-anchor".to_vec()),
                Attribute::Value(anchor_value(a)),
            ])
            .unwrap();
    }

    /// One private object holds the anchor; advancing replaces it, and what does not advance
    /// leaves the token as it was.
    #[test]
    fn the_anchor_is_one_private_data_object() {
        let Some(config) = softhsm::new_token() else {
            return;
        };
        let ks = Pkcs11Keystore::open(&config).unwrap();
        let session = user_session(&config);
        assert!(anchor_objects(&session).is_empty());
        for n in 1..=3 {
            ks.advance_audit_anchor(&anchor(n, n as u8)).unwrap();
            assert_eq!(
                anchor_objects(&session),
                vec![(true, anchor_value(anchor(n, n as u8)))]
            );
        }
        ks.advance_audit_anchor(&anchor(3, 3)).unwrap();
        assert_regression(ks.advance_audit_anchor(&anchor(2, 2)), 3);
        assert_regression(ks.advance_audit_anchor(&anchor(3, 4)), 3);
        assert_eq!(
            anchor_objects(&session),
            vec![(true, anchor_value(anchor(3, 3)))]
        );
    }

    /// A public object with the anchor's label needs no PIN (anyone sharing the token can make
    /// one): it is ignored, and cannot block the anchor.
    #[test]
    fn a_public_anchor_object_is_ignored() {
        let Some(config) = softhsm::new_token() else {
            return;
        };
        let ks = Pkcs11Keystore::open(&config).unwrap();
        create_anchor_object(&user_session(&config), false, anchor(u64::MAX, 9));
        assert_eq!(ks.audit_anchor().unwrap(), None);
        ks.advance_audit_anchor(&anchor(2, 2)).unwrap();
        assert_eq!(ks.audit_anchor().unwrap(), Some(anchor(2, 2)));
    }

    /// A crash between creating the new anchor and destroying the old leaves both: the newest
    /// counts, and the next advance clears the older ones.
    #[test]
    fn of_several_anchor_objects_the_newest_counts() {
        let Some(config) = softhsm::new_token() else {
            return;
        };
        let ks = Pkcs11Keystore::open(&config).unwrap();
        let session = user_session(&config);
        for a in [anchor(3, 3), anchor(7, 7), anchor(5, 5)] {
            create_anchor_object(&session, true, a);
        }
        assert_eq!(ks.audit_anchor().unwrap(), Some(anchor(7, 7)));
        assert_regression(ks.advance_audit_anchor(&anchor(6, 6)), 7);
        ks.advance_audit_anchor(&anchor(7, 7)).unwrap();
        ks.advance_audit_anchor(&anchor(8, 8)).unwrap();
        assert_eq!(
            anchor_objects(&session),
            vec![(true, anchor_value(anchor(8, 8)))]
        );
    }

    #[test]
    fn recovers_when_the_login_is_lost() {
        let Some(config) = softhsm::new_token() else {
            return;
        };
        let ks = Pkcs11Keystore::open(&config).unwrap();
        let v = ks.create_kek().unwrap();
        let wrapped = ks.wrap(v, &dm(1), &secret(5)).unwrap();
        // Logging out from any session logs the whole application out, as an HSM restart would.
        let ctx = module_context(&config.module).unwrap();
        let slot = ctx
            .get_slots_with_initialized_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label() == config.token_label)
            .unwrap();
        ctx.open_ro_session(slot).unwrap().logout().unwrap();
        assert_eq!(ks.list_keks().unwrap(), vec![info(v, KekState::Active)]);
        assert!(ks.unwrap(v, &dm(1), &wrapped).unwrap() == secret(5));
        ctx.open_ro_session(slot).unwrap().logout().unwrap();
        assert!(
            ks.unwrap(v, &dm(1), &ks.wrap(v, &dm(1), &secret(6)).unwrap())
                .unwrap()
                == secret(6)
        );
    }

    /// A restart for real: another process opens the token from SoftHSM's files.
    #[test]
    fn another_process_sees_the_same_keys_and_states() {
        let Some(config) = softhsm::new_token() else {
            return;
        };
        let (w2, w3);
        {
            let ks = Pkcs11Keystore::open(&config).unwrap();
            ks.create_kek().unwrap();
            ks.create_kek().unwrap();
            w2 = ks.wrap(2, &dm(2), &secret(2)).unwrap();
            ks.create_kek().unwrap();
            w3 = ks.wrap(3, &dm(3), &secret(3)).unwrap();
            ks.destroy_kek(1).unwrap();
        }
        // SOFTHSM2_CONF, set by the helper, is inherited.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "pkcs11_token::child_process_check",
                "--ignored",
                "--test-threads=1",
            ])
            .env(
                "ZKVAULT_TEST_CHILD",
                format!(
                    "{} {} {}",
                    config.token_label,
                    hex::encode(&w2),
                    hex::encode(&w3)
                ),
            )
            .env("ZKVAULT_PKCS11_PIN", config.pin.expose())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run in a child process by another_process_sees_the_same_keys_and_states"]
    fn child_process_check() {
        let spec = std::env::var("ZKVAULT_TEST_CHILD").expect("ZKVAULT_TEST_CHILD");
        let mut parts = spec.split(' ');
        let label = parts.next().unwrap().to_owned();
        let w2 = hex::decode(parts.next().unwrap()).unwrap();
        let w3 = hex::decode(parts.next().unwrap()).unwrap();
        let config = Pkcs11Config {
            module: Pkcs11Config::module_from_env(),
            token_label: label,
            pin: Pkcs11Config::pin_from_env_or_file(None).unwrap(),
        };
        let ks = Pkcs11Keystore::open(&config).unwrap();
        assert_eq!(
            ks.list_keks().unwrap(),
            vec![
                info(1, KekState::Destroyed),
                info(2, KekState::Retired),
                info(3, KekState::Active)
            ]
        );
        assert!(ks.unwrap(2, &dm(2), &w2).unwrap() == secret(2));
        assert!(ks.unwrap(3, &dm(3), &w3).unwrap() == secret(3));
        assert_state(ks.wrap(2, &dm(2), &secret(2)), 2, KekState::Retired);
    }
}
