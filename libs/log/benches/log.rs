//! Log maths at scale: appends per second, and inclusion proofs in a log of 1M entries (plan,
//! fetch from a node map standing in for the database, assemble, verify).
//!
//! `cargo bench -p openexec-log --bench log`

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use openexec_log::{leaf_hash, plan_inclusion, verify_inclusion, Frontier};

fn benches(c: &mut Criterion) {
    let leaves: Vec<_> = (0u64..1_000_000)
        .map(|i| leaf_hash(&i.to_be_bytes()))
        .collect();

    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000 appends to a log of 1M", |b| {
        let mut base = Frontier::empty();
        for l in &leaves {
            base.append(*l).unwrap();
        }
        b.iter(|| {
            let mut f = base.clone();
            for l in &leaves[..1000] {
                black_box(f.append(*l).unwrap());
            }
            f.root()
        })
    });
    g.finish();

    let mut tree = Frontier::empty();
    let mut nodes = HashMap::new();
    for l in &leaves {
        nodes.extend(tree.append(*l).unwrap());
    }
    let size = tree.size();
    let root = tree.root();
    let mut i = 0u64;
    c.bench_function("inclusion proof at 1M: plan + assemble", |b| {
        b.iter(|| {
            i = (i + 7919) % size;
            let plan = plan_inclusion(i, size).unwrap();
            plan.assemble_from_map(&nodes).unwrap()
        })
    });
    let proof = plan_inclusion(123_457, size)
        .unwrap()
        .assemble_from_map(&nodes)
        .unwrap();
    c.bench_function("inclusion proof at 1M: verify", |b| {
        b.iter(|| {
            verify_inclusion(&leaves[123_457], 123_457, size, black_box(&proof), &root).unwrap()
        })
    });
}

criterion_group!(log, benches);
criterion_main!(log);
