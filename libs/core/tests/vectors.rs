//! Every case of `shared/vectors/intent_v1.json` and `shared/vectors/legacy_v0.json`.

mod common;

use chrono::{DateTime, Utc};
use common::{cases, load, s};
use openexec_core::artifact::{self, Format, Rejection, RequestBinding};
use openexec_core::hash::{intent_hash, legacy_action_hash, legacy_canonical, request_hash};
use openexec_core::json::{canonicalize, jcs_sha256};
use openexec_core::keys::{
    key_id, parse_signing_key, parse_verifying_key, signing_key_from_seed, verifying_key_b64,
    verifying_key_to_pem,
};

fn now() -> DateTime<Utc> {
    "2026-11-21T12:00:00Z".parse().unwrap()
}

#[test]
fn intent_v1_jcs_and_hash() {
    let v = load("intent_v1.json");
    let all = cases(&v, "cases");
    assert!(all.len() >= 10);
    for c in all {
        let action = s(c, "action");
        let payload = &c["payload"];
        let obj = serde_json::json!({"action": action, "payload": payload});
        let jcs = String::from_utf8(canonicalize(&obj)).unwrap();
        assert_eq!(jcs, s(c, "jcs"), "jcs for {c}");
        assert_eq!(jcs_sha256(&obj), s(c, "intent_hash"));
        assert_eq!(intent_hash(action, payload), s(c, "intent_hash"), "{c}");
    }
}

#[test]
fn legacy_hash_cases() {
    let v = load("legacy_v0.json");
    let all = cases(&v, "hash_cases");
    assert!(all.len() >= 10);
    for c in all {
        let action = s(c, "action");
        let payload = &c["payload"];
        assert_eq!(
            legacy_canonical(action, payload),
            s(c, "legacy_canonical"),
            "{c}"
        );
        assert_eq!(
            legacy_action_hash(action, payload),
            s(c, "legacy_action_hash"),
            "{c}"
        );
    }
}

#[test]
fn vector_keys_agree() {
    let v = load("legacy_v0.json");
    let pem = parse_verifying_key(s(&v, "public_key_pem")).unwrap();
    let raw = parse_verifying_key(s(&v, "public_key_raw_b64")).unwrap();
    assert_eq!(pem, raw);
    let seed: [u8; 32] = hex::decode(s(&v, "private_key_seed_hex"))
        .unwrap()
        .try_into()
        .unwrap();
    let sk = signing_key_from_seed(seed);
    assert_eq!(sk.verifying_key(), pem);
    assert_eq!(verifying_key_b64(&pem), s(&v, "public_key_raw_b64"));
    assert_eq!(verifying_key_to_pem(&pem), s(&v, "public_key_pem"));
    // the env-var form with literal "\n"
    let escaped = s(&v, "public_key_pem").replace('\n', "\\n");
    assert_eq!(parse_verifying_key(&escaped).unwrap(), pem);
    // seed as raw base64
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(seed);
    assert_eq!(parse_signing_key(&b64).unwrap().to_bytes(), seed);
    assert_eq!(key_id(&pem).len(), 16);
}

fn expected(expect: &str) -> Result<(), Rejection> {
    match expect {
        "accepted" => Ok(()),
        "rejected:expired" => Err(Rejection::Expired),
        "rejected:request_mismatch" => Err(Rejection::RequestMismatch),
        "rejected:bad_signature" => Err(Rejection::BadSignature),
        "rejected:tenant_mismatch" => Err(Rejection::TenantMismatch {
            expected: "tenant-001".into(),
            got: String::new(), // filled in below
        }),
        other => panic!("unknown expectation {other}"),
    }
}

#[test]
fn legacy_artifacts() {
    let v = load("legacy_v0.json");
    let pk = parse_verifying_key(s(&v, "public_key_pem")).unwrap();
    let all = cases(&v, "artifacts");
    assert!(all.len() >= 7);
    for c in all {
        let name = s(c, "name");
        let action = s(c, "action");
        let payload = &c["payload"];
        let nonce = format!("nonce-{name}");
        let rh = request_hash(action, &nonce, payload, "tenant-001");
        let ih = intent_hash(action, payload);
        let binding = RequestBinding {
            tenant_id: "tenant-001",
            action,
            nonce: &nonce,
            payload,
            request_hash: &rh,
            intent_hash: &ih,
        };
        let art = artifact::parse(&c["artifact"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(art.format(), Format::V0);
        assert_eq!(art.key_id(), None);
        assert_eq!(art.approval_id(), s(&c["artifact"], "approval_id"));
        let got = artifact::verify(&art, &[pk], &binding, now(), 30, true);
        let want = match expected(s(c, "expect")) {
            Err(Rejection::TenantMismatch { expected, .. }) => Err(Rejection::TenantMismatch {
                expected,
                got: art.tenant_id().to_string(),
            }),
            other => other,
        };
        match (&got, &want) {
            (Ok(r), Ok(())) => {
                assert_eq!(r.approval_id, art.approval_id());
                assert_eq!(r.format, "v0");
                assert_eq!(r.key_id, key_id(&pk));
                assert_eq!(r.decision_id, None);
            }
            (Err(g), Err(w)) => assert_eq!(g, w, "{name}"),
            _ => panic!("{name}: got {got:?}, want {want:?}"),
        }
        if let Err(r) = &got {
            // the original's wording
            let msg = r.message();
            match r {
                Rejection::Expired => assert_eq!(msg, "Approval artifact expired"),
                Rejection::RequestMismatch => assert_eq!(
                    msg,
                    "Action hash mismatch: approval does not match this request"
                ),
                Rejection::BadSignature => {
                    assert_eq!(msg, "Invalid signature: approval artifact is not authentic")
                }
                Rejection::TenantMismatch { .. } => {
                    assert_eq!(msg, "Tenant mismatch: expected tenant-001, got tenant-999")
                }
                _ => unreachable!(),
            }
        }
        // With the time check off, the expired artifact passes everything else.
        if name == "expired" {
            assert!(artifact::verify(&art, &[pk], &binding, now(), 30, false).is_ok());
        }
    }
}

#[test]
fn vector_seed_reproduces_v0_signatures() {
    let v = load("legacy_v0.json");
    let seed: [u8; 32] = hex::decode(s(&v, "private_key_seed_hex"))
        .unwrap()
        .try_into()
        .unwrap();
    let sk = signing_key_from_seed(seed);
    let mut checked = 0;
    for c in cases(&v, "artifacts") {
        let a = &c["artifact"];
        // Only artifacts the vector key signed over a matching hash can be re-minted.
        if s(c, "name") == "wrong_key" || s(c, "name") == "payload_mutated" {
            continue;
        }
        let minted = artifact::sign_v0(
            s(a, "approval_id"),
            s(a, "tenant_id"),
            s(c, "action"),
            &c["payload"],
            s(a, "issued_at"),
            s(a, "expires_at"),
            &sk,
        );
        assert_eq!(&minted, a, "{}", s(c, "name"));
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn legacy_wrong_key_is_not_signed_by_vector_key_but_payload_mutated_is() {
    // payload_mutated was signed by the vector key over the unmutated payload's hash.
    let v = load("legacy_v0.json");
    let pk = parse_verifying_key(s(&v, "public_key_pem")).unwrap();
    for c in cases(&v, "artifacts") {
        let art = artifact::parse(&c["artifact"]).unwrap();
        let ok = openexec_core::keys::verify_b64(&pk, &art.signed_message(), art.signature());
        assert_eq!(ok, s(c, "name") != "wrong_key", "{}", s(c, "name"));
    }
}
