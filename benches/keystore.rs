//! Unwrapping one 32-byte master: the soft keystore vs PKCS#11 (SoftHSM2).
//! `cargo bench --bench keystore`; the PKCS#11 half is skipped when SoftHSM2 is missing.

#[path = "../tests/support/softhsm.rs"]
mod softhsm;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use zkvault::keystore::pkcs11::Pkcs11Keystore;
use zkvault::keystore::soft::{SoftKeystore, SoftKeystoreOptions};
use zkvault::keystore::Keystore;
use zkvault_core::{KeyKind, Secret32, WrapContext};

fn bench_store(c: &mut Criterion, name: &str, ks: &dyn Keystore) {
    let ctx = WrapContext::new("uin", KeyKind::DerivationMaster, 1);
    let v = ks.create_kek().unwrap();
    let secret = Secret32::random().unwrap();
    let wrapped = ks.wrap(v, &ctx, &secret).unwrap();
    let mut group = c.benchmark_group("keystore");
    group.bench_function(format!("{name}/unwrap_32B"), |b| {
        b.iter(|| ks.unwrap(v, black_box(&ctx), black_box(&wrapped)).unwrap())
    });
    group.bench_function(format!("{name}/wrap_32B"), |b| {
        b.iter(|| ks.wrap(v, black_box(&ctx), black_box(&secret)).unwrap())
    });
    group.finish();
}

fn keystores(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let pass = zkvault::secret::SecretString::new("bench passphrase");
    // Argon2 runs only at open: its parameters do not affect wrap/unwrap.
    let soft = SoftKeystore::create(
        &dir.path().join("ks"),
        &pass,
        SoftKeystoreOptions::for_tests(),
    )
    .unwrap();
    bench_store(c, "soft", &soft);
    if let Some(config) = softhsm::new_token() {
        let hsm = Pkcs11Keystore::open(&config).unwrap();
        bench_store(c, "pkcs11", &hsm);
    }
}

criterion_group!(benches, keystores);
criterion_main!(benches);
