//! Costs of the per-request primitives: `cargo bench -p zkvault-core`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use zkvault_core::*;

fn primitives(c: &mut Criterion) {
    let dm = DerivationMaster::generate().unwrap();
    let dm2 = DerivationMaster::generate().unwrap();
    let ik = IndexKey::generate().unwrap();
    let id = ResidentId::parse("4930098371491928").unwrap();
    let ns = "resident-portal";
    let record_id = [3u8; 16];

    c.bench_function("derive_resident_key", |b| {
        b.iter(|| dm.resident_key(black_box(ns), black_box(&id)))
    });
    c.bench_function("blind_index", |b| {
        b.iter(|| ik.blind_index(black_box(ns), black_box(&id)))
    });
    c.bench_function("parse_resident_id", |b| {
        b.iter(|| ResidentId::parse(black_box(" 4930098371491928 ")))
    });

    let bi = ik.blind_index(ns, &id);
    let ctx = RecordContext {
        namespace: ns,
        blind_index: &bi,
        record_name: "demographics",
        record_id: &record_id,
    };
    let (rk, rk2) = (dm.resident_key(ns, &id), dm2.resident_key(ns, &id));

    let mut group = c.benchmark_group("record");
    for size in [2 * 1024, 64 * 1024] {
        let body = vec![0x5au8; size];
        let sealed = seal(&rk, 1, &ctx, &body).unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("seal", size), &body, |b, body| {
            b.iter(|| seal(&rk, 1, &ctx, body).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, s| {
            b.iter(|| open(&rk, &ctx, s).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("rewrap", size), &sealed, |b, s| {
            b.iter(|| rewrap(&rk, &rk2, 2, &ctx, &s.dek).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("rekey", size), &sealed, |b, s| {
            b.iter(|| rekey(&rk, &rk2, 2, &ctx, s).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, primitives);
criterion_main!(benches);
