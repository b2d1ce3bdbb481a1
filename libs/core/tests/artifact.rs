//! v1 (and v0) approval artifacts: minting, parsing, every check of SPEC §4.

use chrono::{DateTime, Duration, Utc};
use openexec_core::artifact::{
    self, sign_v0, sign_v1, sign_v1_object, verify, vote_message, ApprovalRef, Artifact, Format,
    Rejection, RequestBinding, V1Params,
};
use openexec_core::hash::{intent_hash, request_hash};
use openexec_core::json::{canonicalize, parse_ijson};
use openexec_core::keys::{key_id, sign_b64, signing_key_from_seed, SigningKey, VerifyingKey};
use serde_json::{json, Value};

const TENANT: &str = "tenant-001";
const ACTION: &str = "charge_card";
const NONCE: &str = "n-123";

fn now() -> DateTime<Utc> {
    "2026-11-21T10:02:00Z".parse().unwrap()
}

fn shield() -> SigningKey {
    signing_key_from_seed([42; 32])
}

fn payload() -> Value {
    json!({"amount": 12.5, "currency": "EUR", "to": "acct_42"})
}

struct Req {
    payload: Value,
    rh: String,
    ih: String,
}

impl Req {
    fn new() -> Self {
        let payload = payload();
        Req {
            rh: request_hash(ACTION, NONCE, &payload, TENANT),
            ih: intent_hash(ACTION, &payload),
            payload,
        }
    }
    fn binding(&self) -> RequestBinding<'_> {
        RequestBinding {
            tenant_id: TENANT,
            action: ACTION,
            nonce: NONCE,
            payload: &self.payload,
            request_hash: &self.rh,
            intent_hash: &self.ih,
        }
    }
}

fn mint(sk: &SigningKey) -> Value {
    let p = payload();
    sign_v1(
        &V1Params {
            approval_id: "appr-1",
            tenant_id: TENANT,
            action: ACTION,
            payload: &p,
            nonce: NONCE,
            issued_at: "2026-11-21T10:00:00Z".parse().unwrap(),
            expires_at: "2026-11-21T10:05:00Z".parse().unwrap(),
            decision_id: Some("dec-9"),
            policy_hash: None,
        },
        sk,
    )
}

fn check(v: &Value, keys: &[VerifyingKey], at: DateTime<Utc>) -> Result<ApprovalRef, Rejection> {
    let art = artifact::parse(v).map_err(Rejection::Malformed)?;
    let req = Req::new();
    verify(&art, keys, &req.binding(), at, 30, true)
}

#[test]
fn v1_round_trip() {
    let sk = shield();
    let pk = sk.verifying_key();
    let v = mint(&sk);
    let o = v.as_object().unwrap();
    // all SPEC fields present
    for f in [
        "v",
        "approval_id",
        "tenant_id",
        "action",
        "request_hash",
        "intent_hash",
        "nonce",
        "issued_at",
        "expires_at",
        "decision_id",
        "policy_hash",
        "approvers",
        "key_id",
        "signature",
    ] {
        assert!(o.contains_key(f), "{f}");
    }
    assert_eq!(v["v"], json!(1));
    assert_eq!(v["issued_at"], json!("2026-11-21T10:00:00Z"));
    assert_eq!(v["policy_hash"], Value::Null);
    assert_eq!(v["key_id"], json!(key_id(&pk)));
    // the signature covers context ‖ JCS(artifact without signature)
    let mut unsigned = o.clone();
    unsigned.remove("signature");
    let mut msg = b"openexec-approval-v1:".to_vec();
    msg.extend(canonicalize(&Value::Object(unsigned)));
    assert!(openexec_core::keys::verify_b64(
        &pk,
        &msg,
        v["signature"].as_str().unwrap()
    ));

    let art = artifact::parse(&v).unwrap();
    assert_eq!(art.format(), Format::V1);
    assert_eq!(art.format().as_str(), "v1");
    assert_eq!(art.approval_id(), "appr-1");
    assert_eq!(art.tenant_id(), TENANT);
    assert_eq!(art.key_id(), Some(key_id(&pk).as_str()));
    assert_eq!(art.decision_id(), Some("dec-9"));
    assert_eq!(
        art.issued_at(),
        "2026-11-21T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    let r = check(&v, &[pk], now()).unwrap();
    assert_eq!(
        r,
        ApprovalRef {
            approval_id: "appr-1".into(),
            format: "v1".into(),
            key_id: key_id(&pk),
            decision_id: Some("dec-9".into()),
        }
    );
    // key rotation: the right key is found among several
    let other = signing_key_from_seed([1; 32]).verifying_key();
    assert!(check(&v, &[other, pk], now()).is_ok());
    // the serialized artifact survives a trip through the wire reader
    let wire = serde_json::to_vec_pretty(&v).unwrap();
    let back = parse_ijson(&wire, 64).unwrap();
    assert!(check(&back, &[pk], now()).is_ok());
}

#[test]
fn unknown_key() {
    let v = mint(&shield());
    let other = signing_key_from_seed([1; 32]).verifying_key();
    let e = check(&v, &[other], now()).unwrap_err();
    assert_eq!(e, Rejection::UnknownKey(key_id(&shield().verifying_key())));
    assert_eq!(e.code(), "approval_unknown_key");
    assert_eq!(
        e.message(),
        format!(
            "Approval signed by unknown key {}",
            key_id(&shield().verifying_key())
        )
    );
    assert_eq!(
        check(&v, &[], now()).unwrap_err().code(),
        "approval_unknown_key"
    );
}

/// Change one field without re-signing: every signed field change breaks the signature.
#[test]
fn each_field_tampered_breaks_signature() {
    let sk = shield();
    let pk = sk.verifying_key();
    let v = mint(&sk);
    let tamper: Vec<(&str, Value)> = vec![
        ("approval_id", json!("appr-2")),
        ("tenant_id", json!("tenant-002")),
        ("action", json!("echo")),
        ("request_hash", json!("0".repeat(64))),
        ("intent_hash", json!("0".repeat(64))),
        ("nonce", json!("n-124")),
        ("issued_at", json!("2026-11-21T10:00:01Z")),
        ("expires_at", json!("2027-11-21T10:05:00Z")),
        ("decision_id", json!("dec-10")),
        ("decision_id", Value::Null),
        ("policy_hash", json!("abc")),
        ("approvers", json!([{"id": "mallory"}])),
        ("extra", json!(true)),
    ];
    for (field, val) in tamper {
        let mut t = v.clone();
        t[field] = val;
        assert_eq!(
            check(&t, &[pk], now()),
            Err(Rejection::BadSignature),
            "{field}"
        );
    }
    // a changed signature
    let mut t = v.clone();
    let sig = t["signature"].as_str().unwrap().to_string();
    let mut bytes = base64_decode(&sig);
    bytes[10] ^= 1;
    t["signature"] = json!(base64_encode(&bytes));
    assert_eq!(check(&t, &[pk], now()), Err(Rejection::BadSignature));
    t["signature"] = json!("not base64");
    assert_eq!(check(&t, &[pk], now()), Err(Rejection::BadSignature));
    // a key_id of another known key: that key does not verify it
    let other = signing_key_from_seed([1; 32]).verifying_key();
    let mut t = v.clone();
    t["key_id"] = json!(key_id(&other));
    assert_eq!(check(&t, &[pk, other], now()), Err(Rejection::BadSignature));
    // removing a field that may be absent (decision_id) also breaks the signature
    let mut t = v.clone();
    t.as_object_mut().unwrap().remove("policy_hash");
    assert_eq!(check(&t, &[pk], now()), Err(Rejection::BadSignature));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Change one field and re-sign with the real key: the later checks catch it.
#[test]
fn each_field_tampered_and_resigned() {
    let sk = shield();
    let pk = sk.verifying_key();
    let v = mint(&sk);
    let resigned = |field: &str, val: Value| {
        let mut m = v.as_object().unwrap().clone();
        m.insert(field.into(), val);
        sign_v1_object(m, &sk)
    };
    assert_eq!(
        check(&resigned("tenant_id", json!("tenant-999")), &[pk], now()),
        Err(Rejection::TenantMismatch {
            expected: TENANT.into(),
            got: "tenant-999".into()
        })
    );
    let e = check(&resigned("tenant_id", json!("tenant-999")), &[pk], now()).unwrap_err();
    assert_eq!(e.code(), "approval_tenant_mismatch");
    assert_eq!(
        e.message(),
        "Tenant mismatch: expected tenant-001, got tenant-999"
    );
    for (field, val) in [
        ("action", json!("echo")),
        ("nonce", json!("n-other")),
        (
            "request_hash",
            json!(request_hash(ACTION, "n-other", &payload(), TENANT)),
        ),
        ("intent_hash", json!(intent_hash(ACTION, &json!({})))),
    ] {
        let e = check(&resigned(field, val), &[pk], now()).unwrap_err();
        assert_eq!(e, Rejection::RequestMismatch, "{field}");
        assert_eq!(e.code(), "approval_request_mismatch");
        assert_eq!(
            e.message(),
            "Action hash mismatch: approval does not match this request"
        );
    }
    // fields not bound to the request can change freely when ClawShield signs them
    assert!(check(&resigned("approval_id", json!("appr-7")), &[pk], now()).is_ok());
    assert!(check(&resigned("policy_hash", json!("p")), &[pk], now()).is_ok());
    let r = check(&resigned("decision_id", Value::Null), &[pk], now()).unwrap();
    assert_eq!(r.decision_id, None);
    // time window
    let e = check(
        &resigned("expires_at", json!("2026-11-21T10:01:29Z")),
        &[pk],
        now(),
    )
    .unwrap_err();
    assert_eq!(e, Rejection::Expired);
    assert_eq!(e.code(), "approval_expired");
    assert_eq!(e.message(), "Approval artifact expired");
    assert!(check(
        &resigned("expires_at", json!("2026-11-21T10:01:30Z")),
        &[pk],
        now()
    )
    .is_ok());
    let e = check(
        &resigned("issued_at", json!("2026-11-21T10:02:31Z")),
        &[pk],
        now(),
    )
    .unwrap_err();
    assert_eq!(e, Rejection::NotYetValid);
    assert_eq!(e.code(), "approval_not_yet_valid");
    assert_eq!(e.message(), "Approval artifact is not yet valid");
    assert!(check(
        &resigned("issued_at", json!("2026-11-21T10:02:30Z")),
        &[pk],
        now()
    )
    .is_ok());
    // unparseable timestamps are malformed, before any key or signature check
    let e = check(&resigned("expires_at", json!("soon")), &[], now()).unwrap_err();
    assert_eq!(
        e,
        Rejection::Malformed("Invalid expires_at timestamp".into())
    );
    assert_eq!(e.code(), "approval_malformed");
    assert_eq!(e.message(), "Invalid expires_at timestamp");
    let e = check(&resigned("issued_at", json!("")), &[], now()).unwrap_err();
    assert_eq!(e.message(), "Invalid issued_at timestamp");
}

#[test]
fn time_check_can_be_skipped() {
    let sk = shield();
    let v = mint(&sk);
    let art = artifact::parse(&v).unwrap();
    let req = Req::new();
    let later = now() + Duration::days(365);
    assert_eq!(
        verify(&art, &[sk.verifying_key()], &req.binding(), later, 30, true),
        Err(Rejection::Expired)
    );
    assert!(verify(
        &art,
        &[sk.verifying_key()],
        &req.binding(),
        later,
        30,
        false
    )
    .is_ok());
    // but the binding is still checked
    let mut other = Req::new();
    other.rh = "x".into();
    assert_eq!(
        verify(
            &art,
            &[sk.verifying_key()],
            &other.binding(),
            later,
            30,
            false
        ),
        Err(Rejection::RequestMismatch)
    );
}

#[test]
fn check_order() {
    // wrong tenant AND wrong request AND expired AND bad signature → bad signature first
    let sk = shield();
    let pk = sk.verifying_key();
    let mut m = mint(&sk).as_object().unwrap().clone();
    m.insert("tenant_id".into(), json!("t-x"));
    m.insert("nonce".into(), json!("other"));
    m.insert("issued_at".into(), json!("1999-12-31T23:55:00Z"));
    m.insert("expires_at".into(), json!("2000-01-01T00:00:00Z"));
    let signed = sign_v1_object(m.clone(), &sk);
    let mut unsigned_change = signed.clone();
    unsigned_change["approval_id"] = json!("zzz");
    assert_eq!(
        check(&unsigned_change, &[pk], now()),
        Err(Rejection::BadSignature)
    );
    // signed: tenant before request binding before time
    assert!(matches!(
        check(&signed, &[pk], now()),
        Err(Rejection::TenantMismatch { .. })
    ));
    m.insert("tenant_id".into(), json!(TENANT));
    assert_eq!(
        check(&sign_v1_object(m.clone(), &sk), &[pk], now()),
        Err(Rejection::RequestMismatch)
    );
    m.insert("nonce".into(), json!(NONCE));
    assert_eq!(
        check(&sign_v1_object(m, &sk), &[pk], now()),
        Err(Rejection::Expired)
    );
}

fn malformed(v: &Value) -> String {
    match artifact::parse(v) {
        Err(m) => m,
        Ok(a) => panic!("accepted {a:?}"),
    }
}

#[test]
fn v1_well_formedness() {
    let v = mint(&shield());
    for f in [
        "approval_id",
        "tenant_id",
        "action",
        "request_hash",
        "intent_hash",
        "nonce",
        "issued_at",
        "expires_at",
        "key_id",
        "signature",
        "approvers",
    ] {
        let mut t = v.clone();
        t.as_object_mut().unwrap().remove(f);
        assert_eq!(
            malformed(&t),
            format!("approval artifact is malformed: missing field '{f}'")
        );
        let mut t = v.clone();
        t[f] = json!(7);
        assert!(malformed(&t).contains(&format!("'{f}'")), "{f}");
    }
    // decision_id / policy_hash: absent = null, but not another type
    for f in ["decision_id", "policy_hash"] {
        let mut t = v.clone();
        t.as_object_mut().unwrap().remove(f);
        assert!(artifact::parse(&t).is_ok());
        t[f] = json!(1);
        assert_eq!(
            malformed(&t),
            format!("approval artifact is malformed: field '{f}' must be a string or null")
        );
    }
    // approvers
    let mut t = v.clone();
    t["approvers"] = json!([{"id": "alice", "key_id": "k", "signature": "s"}, {"id": "bob"}, {"id": "carol", "key_id": null}]);
    let a = artifact::parse(&t).unwrap();
    assert_eq!(a.approvers().len(), 3);
    assert_eq!(a.approvers()[0].key_id.as_deref(), Some("k"));
    for bad in [
        json!([{"key_id": "k"}]),
        json!([{"id": 1}]),
        json!(["alice"]),
        json!([{"id": "a", "signature": 5}]),
        json!({"id": "a"}),
    ] {
        let mut t = v.clone();
        t["approvers"] = bad.clone();
        assert!(malformed(&t).contains("approvers"), "{bad}");
    }
    // versions
    for bad_v in [json!(2), json!("1"), json!(null), json!(0), json!(1.5)] {
        let mut t = v.clone();
        t["v"] = bad_v.clone();
        assert!(malformed(&t).contains("unsupported version"), "{bad_v}");
    }
    // 1.0 is the number 1
    let mut t = v.clone();
    t["v"] = json!(1.0);
    assert_eq!(artifact::parse(&t).unwrap().format(), Format::V1);
    assert!(check(&t, &[shield().verifying_key()], now()).is_ok());
    // not an object
    assert_eq!(
        malformed(&json!([1])),
        "approval artifact is malformed: not a JSON object"
    );
    assert!(artifact::parse(&json!("x")).is_err());
}

#[test]
fn v0_well_formedness() {
    let sk = shield();
    let v = sign_v0(
        "a-1",
        TENANT,
        ACTION,
        &payload(),
        "2026-11-21T10:00:00",
        "2026-11-21T10:05:00",
        &sk,
    );
    let art: Artifact = artifact::parse(&v).unwrap();
    assert_eq!(art.format(), Format::V0);
    assert_eq!(art.key_id(), None);
    assert_eq!(art.decision_id(), None);
    let req = Req::new();
    let r = verify(&art, &[sk.verifying_key()], &req.binding(), now(), 30, true).unwrap();
    assert_eq!(r.format, "v0");
    assert_eq!(r.key_id, key_id(&sk.verifying_key()));
    // a v0 artifact with no keys configured: nothing can verify it
    assert_eq!(
        verify(&art, &[], &req.binding(), now(), 30, true),
        Err(Rejection::BadSignature)
    );
    for f in [
        "approval_id",
        "tenant_id",
        "action_hash",
        "issued_at",
        "expires_at",
        "signature",
    ] {
        let mut t = v.clone();
        t.as_object_mut().unwrap().remove(f);
        assert_eq!(
            malformed(&t),
            format!("approval artifact is malformed: missing field '{f}'")
        );
        let mut t = v.clone();
        t[f] = json!(null);
        assert_eq!(
            malformed(&t),
            format!("approval artifact is malformed: field '{f}' must be a string")
        );
    }
    let mut t = v.clone();
    t["expires_at"] = json!("tomorrow");
    assert_eq!(malformed(&t), "Invalid expires_at timestamp");
    let mut t = v.clone();
    t["issued_at"] = json!("yesterday");
    assert_eq!(malformed(&t), "Invalid issued_at timestamp");
    // v0 issued in the future
    let fut = sign_v0(
        "a-2",
        TENANT,
        ACTION,
        &payload(),
        "2026-11-21T11:00:00",
        "2026-11-21T12:00:00",
        &sk,
    );
    let art = artifact::parse(&fut).unwrap();
    assert_eq!(
        verify(&art, &[sk.verifying_key()], &req.binding(), now(), 30, true),
        Err(Rejection::NotYetValid)
    );
    // the signature covers the exact strings received: an equivalent timestamp spelled
    // differently does not verify
    let mut t = v.clone();
    t["issued_at"] = json!("2026-11-21T10:00:00Z");
    let art = artifact::parse(&t).unwrap();
    assert_eq!(
        verify(&art, &[sk.verifying_key()], &req.binding(), now(), 30, true),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn votes() {
    let m = vote_message("abc", "alice");
    assert_eq!(
        m,
        b"clawshield-vote-v1:{\"approver\":\"alice\",\"decision\":\"approve\",\"request_hash\":\"abc\"}"
            .to_vec()
    );
    let alice = signing_key_from_seed([8; 32]);
    let sig = sign_b64(&alice, &m);
    assert!(artifact::verify_vote(
        &alice.verifying_key(),
        "abc",
        "alice",
        &sig
    ));
    assert!(!artifact::verify_vote(
        &alice.verifying_key(),
        "abc",
        "bob",
        &sig
    ));
}

#[test]
fn rejection_codes() {
    let all = [
        (Rejection::Malformed("m".into()), "approval_malformed", "m"),
        (
            Rejection::UnknownKey("k".into()),
            "approval_unknown_key",
            "Approval signed by unknown key k",
        ),
        (
            Rejection::BadSignature,
            "approval_bad_signature",
            "Invalid signature: approval artifact is not authentic",
        ),
        (
            Rejection::TenantMismatch {
                expected: "a".into(),
                got: "b".into(),
            },
            "approval_tenant_mismatch",
            "Tenant mismatch: expected a, got b",
        ),
        (
            Rejection::RequestMismatch,
            "approval_request_mismatch",
            "Action hash mismatch: approval does not match this request",
        ),
        (
            Rejection::Expired,
            "approval_expired",
            "Approval artifact expired",
        ),
        (
            Rejection::NotYetValid,
            "approval_not_yet_valid",
            "Approval artifact is not yet valid",
        ),
    ];
    for (r, code, msg) in all {
        assert_eq!(r.code(), code);
        assert_eq!(r.message(), msg);
        assert_eq!(r.to_string(), msg);
    }
}

#[test]
fn approval_ref_json_shape() {
    let r = ApprovalRef {
        approval_id: "a".into(),
        format: "v0".into(),
        key_id: "k".into(),
        decision_id: None,
    };
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        json!({"approval_id": "a", "format": "v0", "key_id": "k", "decision_id": null})
    );
}

#[test]
fn time_window_rules() {
    use chrono::TimeZone;
    use openexec_core::artifact::{check_window, Window};
    let sk = shield();
    let at = |issued: &str, expires: &str| {
        let mut m = mint(&sk).as_object().unwrap().clone();
        m.insert("issued_at".into(), json!(issued));
        m.insert("expires_at".into(), json!(expires));
        artifact::parse(&sign_v1_object(m, &sk)).unwrap()
    };
    let now = chrono::Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
    let day = Window {
        skew: chrono::Duration::seconds(30),
        max_ttl: chrono::Duration::seconds(86_400),
    };
    let malformed = |r: Result<(), Rejection>| match r {
        Err(Rejection::Malformed(m)) => m,
        other => panic!("not malformed: {other:?}"),
    };
    // inside the window
    assert_eq!(
        check_window(
            &at("2026-06-01T11:59:00Z", "2026-06-01T12:04:00Z"),
            now,
            &day
        ),
        Ok(())
    );
    // exactly the longest validity passes; a second more does not
    assert_eq!(
        check_window(
            &at("2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z"),
            now,
            &day
        ),
        Ok(())
    );
    let m = malformed(check_window(
        &at("2026-06-01T00:00:00Z", "2026-06-02T00:00:01Z"),
        now,
        &day,
    ));
    assert!(m.contains("86401") && m.contains("86400"), "{m}");
    // issued after it expires
    let m = malformed(check_window(
        &at("2026-06-01T12:01:00Z", "2026-06-01T12:00:30Z"),
        now,
        &day,
    ));
    assert!(m.contains("after expires_at"), "{m}");
    // an approval that never ends, even under the built-in default
    let m = malformed(check_window(
        &at("2026-06-01T12:00:00Z", "9999-12-31T23:59:59Z"),
        now,
        &Window::with_skew(30),
    ));
    assert!(m.contains("longer than"), "{m}");
    // expired and not yet valid, each beyond the skew only
    assert_eq!(
        check_window(
            &at("2026-06-01T11:50:00Z", "2026-06-01T11:59:31Z"),
            now,
            &day
        ),
        Ok(())
    );
    assert_eq!(
        check_window(
            &at("2026-06-01T11:50:00Z", "2026-06-01T11:59:29Z"),
            now,
            &day
        ),
        Err(Rejection::Expired)
    );
    assert_eq!(
        check_window(
            &at("2026-06-01T12:00:30Z", "2026-06-01T12:05:00Z"),
            now,
            &day
        ),
        Ok(())
    );
    assert_eq!(
        check_window(
            &at("2026-06-01T12:00:31Z", "2026-06-01T12:05:00Z"),
            now,
            &day
        ),
        Err(Rejection::NotYetValid)
    );
}

#[test]
fn v0_single_use_is_keyed_on_the_signed_bytes() {
    // ("appr-42", "acme") and ("appr-42a", "cme") sign the same bytes: one approval, one key.
    let sk = shield();
    let payload = json!({"m": 1});
    let a = artifact::sign_v0(
        "appr-42",
        "acme",
        "echo",
        &payload,
        "2026-01-01T00:00:00",
        "2026-01-01T00:05:00",
        &sk,
    );
    let mut b = a.clone();
    b["approval_id"] = json!("appr-42a");
    b["tenant_id"] = json!("cme");
    let mut c = a.clone();
    c["approval_id"] = json!("");
    c["tenant_id"] = json!("appr-42acme");
    let (a, b, c) = (
        artifact::parse(&a).unwrap(),
        artifact::parse(&b).unwrap(),
        artifact::parse(&c).unwrap(),
    );
    assert_eq!(a.signed_message(), b.signed_message());
    let k = a.single_use_key("kid");
    assert!(k.starts_with("v0:"), "{k}");
    assert_eq!(k, b.single_use_key("kid"));
    assert_eq!(k, c.single_use_key("kid"));
    // another approval is another key
    let d = artifact::parse(&artifact::sign_v0(
        "appr-43",
        "acme",
        "echo",
        &payload,
        "2026-01-01T00:00:00",
        "2026-01-01T00:05:00",
        &sk,
    ))
    .unwrap();
    assert_ne!(k, d.single_use_key("kid"));
    // v1 keeps key id and approval id
    let v1 = artifact::parse(&mint(&sk)).unwrap();
    assert_eq!(
        v1.single_use_key("kid"),
        format!("kid:{}", v1.approval_id())
    );
}
