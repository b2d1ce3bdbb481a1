//! Property tests of canonical form and hashes.

use openexec_core::hash::request_hash;
use openexec_core::json::{canonicalize, parse_ijson};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// I-JSON values: safe integers, finite doubles, arbitrary strings, nested arrays/objects.
fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-9007199254740991i64..=9007199254740991i64).prop_map(|n| Value::Number(n.into())),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
        any::<String>().prop_map(Value::String),
        "[a-zé😀\u{ffff}\u{1f}\"\\\\/ ]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner.clone(), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            prop::collection::btree_map("[a-cé😀\u{ffff}]{0,3}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Write `v` as JSON text with object members in an order decided by `seed`, compact or with
/// whitespace.
fn write_shuffled(v: &Value, seed: u64, pretty: bool, out: &mut String, indent: usize) {
    let nl = |out: &mut String, n: usize| {
        if pretty {
            out.push('\n');
            out.push_str(&" ".repeat(n));
        }
    };
    match v {
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                nl(out, indent + 2);
                write_shuffled(
                    x,
                    seed.wrapping_mul(31).wrapping_add(i as u64),
                    pretty,
                    out,
                    indent + 2,
                );
            }
            nl(out, indent);
            out.push(']');
        }
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            // deterministic shuffle
            let mut s = seed | 1;
            for i in (1..entries.len()).rev() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                entries.swap(i, (s % (i as u64 + 1)) as usize);
            }
            out.push('{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                nl(out, indent + 2);
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push_str(if pretty { " : " } else { ":" });
                write_shuffled(
                    x,
                    seed.wrapping_mul(17).wrapping_add(i as u64),
                    pretty,
                    out,
                    indent + 2,
                );
            }
            nl(out, indent);
            out.push('}');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn canonical_form_ignores_order_and_whitespace(v in arb_value(), seed in any::<u64>()) {
        let want = canonicalize(&v);
        let mut compact = String::new();
        write_shuffled(&v, seed, false, &mut compact, 0);
        let mut pretty = String::new();
        write_shuffled(&v, seed.rotate_left(7), true, &mut pretty, 0);
        let a = parse_ijson(compact.as_bytes(), 64).unwrap();
        let b = parse_ijson(pretty.as_bytes(), 64).unwrap();
        prop_assert_eq!(&canonicalize(&a), &want);
        prop_assert_eq!(&canonicalize(&b), &want);
        let std_pretty = serde_json::to_vec_pretty(&v).unwrap();
        prop_assert_eq!(canonicalize(&parse_ijson(&std_pretty, 64).unwrap()), want);
    }

    #[test]
    fn canonical_output_reparses_to_equal_value(v in arb_value()) {
        let c = canonicalize(&v);
        // Not parse_ijson: JCS writes doubles below 1e21 in integer notation
        // ("100000000000000000000"), which the I-JSON reader refuses as an integer literal
        // beyond 2^53-1. Such canonical text is for hashing, not for sending.
        let back: Value = serde_json::from_slice(&c).unwrap();
        // equal as canonical bytes (numbers like 1.0 and 1 are one JCS number) …
        prop_assert_eq!(&canonicalize(&back), &c);
        // … and as values once numbers are compared as doubles
        prop_assert!(same_json(&v, &back), "{} vs {}", v, back);
    }

    #[test]
    fn request_hash_binds_every_part(
        action in "[a-z_]{1,8}",
        nonce in any::<String>(),
        tenant in "[a-z0-9-]{1,12}",
        payload in arb_value(),
        other in arb_value(),
        suffix in "[a-z0-9]{1,3}",
    ) {
        let h = request_hash(&action, &nonce, &payload, &tenant);
        prop_assert_eq!(&h, &request_hash(&action, &nonce, &payload, &tenant));
        prop_assert_ne!(&h, &request_hash(&format!("{action}{suffix}"), &nonce, &payload, &tenant));
        prop_assert_ne!(&h, &request_hash(&action, &format!("{nonce}{suffix}"), &payload, &tenant));
        prop_assert_ne!(&h, &request_hash(&action, &nonce, &payload, &format!("{tenant}{suffix}")));
        if canonicalize(&other) != canonicalize(&payload) {
            prop_assert_ne!(&h, &request_hash(&action, &nonce, &other, &tenant));
        }
        let wrapped = Value::Array(vec![payload.clone()]);
        prop_assert_ne!(&h, &request_hash(&action, &nonce, &wrapped, &tenant));
    }

    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_ijson(&bytes, 64);
    }

    #[test]
    fn parse_never_panics_on_jsonish(s in "[\\[\\]{}\":,0-9eE.+\\-a-z\\\\ ]{0,40}") {
        let _ = parse_ijson(s.as_bytes(), 8);
    }
}

fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn key_parsing_never_panics(s in any::<String>(), t in "(-----(BEGIN|END) (PUBLIC|PRIVATE) KEY-----|[A-Za-z0-9+/=]{0,50}|\\\\n|,|\n){0,8}") {
        let _ = openexec_core::keys::parse_verifying_keys(&s);
        let _ = openexec_core::keys::parse_verifying_keys(&t);
        let _ = openexec_core::keys::parse_signing_key(&t);
    }

    #[test]
    fn artifact_and_evidence_checks_never_panic(v in arb_value(), ts in any::<String>()) {
        let _ = openexec_core::artifact::parse(&v);
        let _ = openexec_core::time::parse_timestamp(&ts);
        let keys = [openexec_core::keys::signing_key_from_seed([3; 32]).verifying_key()];
        let rep = openexec_core::receipt::verify_evidence(&v, &keys);
        prop_assert!(!rep.valid);
        let _ = openexec_core::payload::normalize(Some(&Value::String(ts)), 64);
    }
}
