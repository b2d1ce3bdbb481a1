//! One policy evaluation, as ClawShield runs it for every proposal: the example bundle of SPEC
//! §9 (`examples/policy`) deciding a small payment (allowed) and a large one (two approvals).
//!
//! `cargo bench -p openexec-policy`

use criterion::{criterion_group, criterion_main, Criterion};
use openexec_policy::Bundle;
use serde_json::json;
use std::hint::black_box;

fn input(amount: u64) -> serde_json::Value {
    json!({
        "action": "charge_card",
        "payload": {"amount": amount, "currency": "EUR", "to": "acct-1"},
        "tenant_id": "default",
        "nonce": "n-1",
        "intent_hash": "0".repeat(64),
        "request_hash": "1".repeat(64),
        "context": {"reason": "monthly invoice"},
        "agent": {"id": "agent", "tenant_id": "default", "on_behalf_of": "erin"},
        "limits": {"rate": {}, "loop": {"count": 0}, "budget": {"used": 0, "limit": 100000000, "left": 100000000}},
    })
}

fn benches(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policy");
    let b = Bundle::load(dir).expect("the example bundle loads");
    let small = input(500);
    let large = input(25_000);
    assert_eq!(b.evaluate(&small).effect.as_str(), "allow");
    assert_eq!(b.evaluate(&large).effect.as_str(), "require_approval");
    c.bench_function("evaluate/example/small_payment", |x| {
        x.iter(|| b.evaluate(black_box(&small)))
    });
    c.bench_function("evaluate/example/large_payment", |x| {
        x.iter(|| b.evaluate(black_box(&large)))
    });
}

criterion_group!(g, benches);
criterion_main!(g);
