//! The seed inputs under `fuzz/seeds/<target>/`, made from the fixtures of this crate and from
//! `shared/vectors/*.json`. The test checks that the committed seeds are the ones made here;
//! `OPENEXEC_WRITE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml --lib` rewrites them (it
//! reads the vectors from `$SHARED_DIR/vectors`, default `../shared/vectors` beside the
//! repository).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::Duration;
use openexec_core::artifact::{sign_v0, sign_v1, sign_v1_object, vote_message, V1Params};
use openexec_core::hash::{intent_hash, request_hash};
use openexec_core::json::{jcs_sha256, sha256_hex};
use openexec_core::keys::{key_id, sign_b64, signing_key_from_seed};
use openexec_core::receipt::{self, log_leaf, Evidence, HandlerRef, Receipt, Status};
use openexec_log::note::{sign_note, Checkpoint, Cosigner, Signer};
use openexec_log::{leaf_hash, plan_inclusion, Frontier, Hash, NodeId, EMPTY_ROOT};
use serde_json::{json, Value};

use crate::*;

type Seeds = BTreeMap<(&'static str, String), Vec<u8>>;

fn add(out: &mut Seeds, target: &'static str, name: impl Into<String>, bytes: impl Into<Vec<u8>>) {
    let prev = out.insert((target, name.into()), bytes.into());
    assert!(prev.is_none(), "two seeds with one name");
}

fn compact(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialises")
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("serialises");
    b.push(b'\n');
    b
}

fn vectors_dir() -> PathBuf {
    match std::env::var_os("SHARED_DIR") {
        Some(d) => PathBuf::from(d).join("vectors"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"),
    }
}

fn vector(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set SHARED_DIR)", path.display()));
    serde_json::from_str(&text).expect("a vector file is JSON")
}

fn request_body(out: &mut Seeds) {
    const T: &str = "request_body";
    let cases = vector("intent_v1.json")["cases"]
        .as_array()
        .expect("cases")
        .clone();
    for (i, c) in cases.iter().enumerate() {
        let (action, payload) = (&c["action"], &c["payload"]);
        let nonce = format!("nonce-{i:02}");
        add(
            out,
            T,
            format!("intent_v1_{i:02}.json"),
            compact(&json!({"action": action, "nonce": nonce, "payload": payload})),
        );
        add(
            out,
            T,
            format!("intent_v1_{i:02}_string_payload.json"),
            pretty(&json!({
                "action": action, "nonce": nonce, "tenant_id": "tenant-001",
                "payload": serde_json::to_string(payload).expect("serialises"),
            })),
        );
        if let Some(jcs) = c["jcs"].as_str() {
            add(out, T, format!("intent_v1_{i:02}_jcs.json"), jcs);
        }
    }
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let hand: &[(&str, &str)] = &[
        ("no_payload.json", r#"{"action":"echo","nonce":"n1"}"#),
        (
            "nulls.json",
            r#"{"action":"echo","nonce":"n1","payload":null,"tenant_id":null,"approval_artifact":null}"#,
        ),
        (
            "plain_string_payload.json",
            r#"{"action":"echo","nonce":"n1","payload":"hello"}"#,
        ),
        (
            "object_string_payload.json",
            r#"{"action":"echo","nonce":"n1","payload":"  {\"a\": [1, 2.5, {\"b\": null}]}"}"#,
        ),
        (
            "bad_string_payload.json",
            r#"{"action":"echo","nonce":"n1","payload":"{oops"}"#,
        ),
        (
            "array_string_payload.json",
            r#"{"action":"echo","nonce":"n1","payload":"[1,2]"}"#,
        ),
        (
            "numbers.json",
            r#"{"action":"add","nonce":"n2","payload":{"a":9007199254740991,"b":-9007199254740991,"c":1e21,"d":1e20,"e":-0,"f":5e-324,"g":1.7976931348623157e308,"h":0.1,"i":-0.0,"j":1E-7,"k":123456789012.5}}"#,
        ),
        (
            "integer_too_big.json",
            r#"{"action":"add","nonce":"n3","payload":{"a":9007199254740992}}"#,
        ),
        (
            "float_overflow.json",
            r#"{"action":"add","nonce":"n3","payload":{"a":1e400}}"#,
        ),
        (
            "duplicate_key.json",
            r#"{"action":"echo","nonce":"n4","payload":{"a":1,"a":2}}"#,
        ),
        (
            "escapes.json",
            r#"{"action":"echo","nonce":"n\u00e9\ud83d\ude00","payload":{"s":"\u0000\u001f\u007f\u2028\/\"\\","\ud83d\ude00":"\uffff"}}"#,
        ),
        (
            "lone_surrogate.json",
            r#"{"action":"echo","nonce":"n5","payload":"\ud800"}"#,
        ),
        ("trailing_data.json", r#"{"action":"echo","nonce":"n6"} x"#),
        ("not_object.json", r#"["action","echo"]"#),
        (
            "with_artifact.json",
            r#"{"action":"echo","nonce":"fuzz-nonce-0001","tenant_id":"tenant-001","payload":{"msg":"hello"},"approval_artifact":{"v":1,"approval_id":"a1"}}"#,
        ),
        (
            "whitespace.json",
            " \t\r\n{ \"action\" : \"echo\" , \"nonce\" : \"n7\" } \n",
        ),
        ("empty.json", ""),
    ];
    for (name, text) in hand {
        add(out, T, *name, *text);
    }
    add(out, T, "depth_64.json", deep(64));
    add(out, T, "depth_65.json", deep(65));
    let payload_64 = format!(r#"{{"action":"echo","nonce":"n8","payload":{}}}"#, deep(63));
    add(out, T, "payload_depth_64.json", payload_64);
}

fn artifacts(out: &mut Seeds) {
    const T: &str = "artifact_v0_v1";
    let legacy = vector("legacy_v0.json");
    for a in legacy["artifacts"].as_array().expect("artifacts") {
        let name = a["name"].as_str().expect("a name");
        add(
            out,
            T,
            format!("legacy_v0_{name}.json"),
            pretty(&a["artifact"]),
        );
    }
    let req = Request::fixed();
    let sk = approval_key();
    let t = now();
    let v1 = |approval_id: &str, issued: Duration, expires: Duration, tenant: &str| {
        sign_v1(
            &V1Params {
                approval_id,
                tenant_id: tenant,
                action: ACTION,
                payload: &req.payload,
                nonce: NONCE,
                issued_at: t + issued,
                expires_at: t + expires,
                decision_id: Some("dec-1"),
                policy_hash: None,
            },
            &sk,
        )
    };
    let m = Duration::minutes;
    add(
        out,
        T,
        "v1_valid.json",
        pretty(&v1("ap-1", m(-2), m(5), TENANT)),
    );
    add(
        out,
        T,
        "v1_valid_compact.json",
        compact(&v1("ap-2", m(-2), m(5), TENANT)),
    );
    add(
        out,
        T,
        "v1_expired.json",
        pretty(&v1("ap-3", m(-20), m(-10), TENANT)),
    );
    add(
        out,
        T,
        "v1_not_yet_valid.json",
        pretty(&v1("ap-4", m(10), m(20), TENANT)),
    );
    add(
        out,
        T,
        "v1_other_tenant.json",
        pretty(&v1("ap-5", m(-2), m(5), "tenant-002")),
    );
    let other = sign_v1(
        &V1Params {
            approval_id: "ap-6",
            tenant_id: TENANT,
            action: ACTION,
            payload: &req.payload,
            nonce: NONCE,
            issued_at: t - m(1),
            expires_at: t + m(1),
            decision_id: None,
            policy_hash: None,
        },
        &signing_key_from_seed([0x09; 32]),
    );
    add(out, T, "v1_unknown_key.json", pretty(&other));
    // Approvers with vote signatures, a quorum, `"v": 1.0` and an offset timestamp.
    let alice = signing_key_from_seed([0x21; 32]);
    let vote = sign_b64(&alice, &vote_message(&req.request_hash, "alice"));
    let Value::Object(base) = v1("ap-7", m(-2), m(5), TENANT) else {
        unreachable!()
    };
    let mut rich = base.clone();
    rich.insert("v".into(), json!(1.0));
    rich.insert("issued_at".into(), json!("2026-06-01T01:58:00+02:00"));
    rich.insert("policy_hash".into(), json!(sha256_hex(b"policy")));
    rich.insert(
        "approvers".into(),
        json!([
            {"id": "alice", "key_id": key_id(&alice.verifying_key()), "signature": vote},
            {"id": "bob", "key_id": null, "signature": null},
            {"id": "carol"}
        ]),
    );
    rich.insert("quorum".into(), json!({"min": 2, "groups": ["finance"]}));
    add(
        out,
        T,
        "v1_approvers_quorum.json",
        pretty(&sign_v1_object(rich, &sk)),
    );
    let v0 = |id: &str, issued: &str, expires: &str| {
        sign_v0(id, TENANT, ACTION, &req.payload, issued, expires, &sk)
    };
    add(
        out,
        T,
        "v0_valid_z.json",
        pretty(&v0("v0-1", "2026-05-31T23:58:00Z", "2026-06-01T00:05:00Z")),
    );
    add(
        out,
        T,
        "v0_valid_naive.json",
        compact(&v0(
            "v0-2",
            "2026-05-31 23:58:00.123456",
            "2026-06-01T00:05",
        )),
    );
    add(
        out,
        T,
        "v0_date_only.json",
        compact(&v0("v0-3", "2026-05-31", "2026-06-02")),
    );
    for (name, text) in [
        ("v2.json", r#"{"v":2}"#),
        ("v_string.json", r#"{"v":"1","approval_id":"x"}"#),
        ("v1_empty.json", r#"{"v":1}"#),
        ("array.json", r#"[]"#),
        (
            "v0_bad_time.json",
            r#"{"approval_id":"a","tenant_id":"tenant-001","action_hash":"h","issued_at":"2026-13-01","expires_at":"soon","signature":"AA=="}"#,
        ),
    ] {
        add(out, T, name, text);
    }
}

/// The fixed checkpoint of the cosignature target, and a log of five receipts for evidence.
fn checkpoint_5() -> Checkpoint {
    Checkpoint::new(LOG_ORIGIN, 5, leaf_hash(b"five")).expect("a valid origin")
}

fn notes(out: &mut Seeds) {
    const T: &str = "note";
    let log = log_signer();
    let [a, b] = cosigners();
    let empty = Checkpoint::new(LOG_ORIGIN, 0, EMPTY_ROOT).expect("a valid origin");
    let mut ext = checkpoint_5();
    ext.extensions.push("fuzz extension line".into());
    for (name, cp) in [
        ("size_0", &empty),
        ("size_5", &checkpoint_5()),
        ("extension", &ext),
    ] {
        let body = cp.body();
        add(out, T, format!("body_{name}.txt"), body.clone());
        let signed = sign_note(&body, &[&log]).expect("signs");
        add(out, T, format!("note_{name}.txt"), signed.clone());
        let cosigned = format!(
            "{signed}{}\n{}\n",
            a.cosign(&body, 1_700_000_000).expect("cosigns"),
            b.cosign(&body, 1_700_000_001).expect("cosigns")
        );
        add(out, T, format!("note_{name}_cosigned.txt"), cosigned);
    }
    let stranger = Signer::new("stranger.example", signing_key_from_seed([0x31; 32])).unwrap();
    let two = sign_note(&checkpoint_5().body(), &[&stranger, &log]).expect("signs");
    add(out, T, "note_two_signers.txt", two);
    add(
        out,
        T,
        "note_not_a_checkpoint.txt",
        sign_note("hello\n\nworld\n", &[&log]).unwrap(),
    );
    add(out, T, "vkey_log.txt", log.verifier_key());
    add(out, T, "vkey_cosigner.txt", a.verifier_key());
    // Go's sumdb/note documentation example.
    add(
        out,
        T,
        "vkey_go_example.txt",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    );
    add(
        out,
        T,
        "vkey_go_example_upper.txt",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    );
}

fn cosignatures(out: &mut Seeds) {
    const T: &str = "cosignature";
    let [a, b] = cosigners();
    let body = checkpoint_5().body();
    let la = a.cosign(&body, 1_700_000_000).expect("cosigns");
    let lb = b.cosign(&body, i64::MAX as u64).expect("cosigns");
    add(out, T, "line_a.txt", format!("{la}\n"));
    add(out, T, "lines_a_b.txt", format!("{la}\n  {lb}  \n\n"));
    let stranger =
        Cosigner::new("witness.fuzz.example/a", signing_key_from_seed([0x32; 32])).unwrap();
    add(
        out,
        T,
        "line_same_name_other_key.txt",
        format!("{}\n", stranger.cosign(&body, 1).expect("cosigns")),
    );
    add(out, T, "body_5.txt", body.clone());
    let mut ext = checkpoint_5();
    ext.extensions.push("ext".into());
    add(out, T, "body_extension.txt", ext.body());
    add(out, T, "not_a_checkpoint.txt", "hello\n");
}

fn receipt_n(i: u64) -> Receipt {
    let payload = json!({"msg": format!("hello {i}")});
    let nonce = format!("nonce-{i}");
    let rh = request_hash(ACTION, &nonce, &payload, TENANT);
    Receipt {
        v: 1,
        exec_id: rh.clone(),
        tenant_id: TENANT.into(),
        action: ACTION.into(),
        nonce,
        intent_hash: intent_hash(ACTION, &payload),
        request_hash: rh,
        mode: "demo".into(),
        approval: None,
        status: Status::Executed,
        code: None,
        result_hash: Some(jcs_sha256(&json!({"echo": payload}))),
        handler: Some(HandlerRef {
            name: "builtin:echo".into(),
            digest: sha256_hex(b"builtin:echo"),
        }),
    }
}

fn evidence(out: &mut Seeds) {
    const T: &str = "evidence";
    let sk = receipt_key();
    let kid = key_id(&sk.verifying_key());
    let logged_at = "2026-06-01T00:00:00Z";
    let mut log = Frontier::empty();
    let mut stored: HashMap<NodeId, Hash> = HashMap::new();
    let mut all = Vec::new();
    for i in 0..5 {
        let r = receipt_n(i);
        let h = r.hash();
        let sig = receipt::sign(&h, &sk);
        stored.extend(
            log.append(leaf_hash(&log_leaf(&r.to_value(), &sig, &kid, logged_at)))
                .expect("appends"),
        );
        all.push((r, h, sig));
    }
    let cp = Checkpoint::new(LOG_ORIGIN, 5, log.root()).expect("a valid origin");
    let body = cp.body();
    let signed = sign_note(&body, &[&log_signer()]).expect("signs");
    let [a, b] = cosigners();
    let one = format!("{signed}{}\n", a.cosign(&body, 1_700_000_000).unwrap());
    let both = format!("{one}{}\n", b.cosign(&body, 1_700_000_000).unwrap());
    let ev = |i: usize, checkpoint: Option<&str>| {
        let (r, h, sig) = &all[i];
        let inclusion = checkpoint.map(|c| {
            let hashes = plan_inclusion(i as u64, 5)
                .and_then(|p| p.assemble_from_map(&stored))
                .expect("stored");
            json!({
                "leaf_index": i,
                "tree_size": 5,
                "logged_at": logged_at,
                "hashes": hashes.iter().map(|h| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.encode(h)
                }).collect::<Vec<_>>(),
                "checkpoint": c,
            })
        });
        serde_json::to_value(Evidence {
            receipt: r.to_value(),
            receipt_hash: h.clone(),
            signature: sig.clone(),
            key_id: kid.clone(),
            log_index: Some(i as u64),
            logged: None,
            inclusion,
        })
        .expect("serialises")
    };
    add(out, T, "no_inclusion.json", pretty(&ev(0, None)));
    add(
        out,
        T,
        "inclusion_no_cosignature.json",
        pretty(&ev(2, Some(&signed))),
    );
    add(
        out,
        T,
        "inclusion_one_witness.json",
        compact(&ev(4, Some(&one))),
    );
    add(
        out,
        T,
        "wrapped_two_witnesses.json",
        pretty(&json!({"evidence": ev(3, Some(&both))})),
    );
    add(
        out,
        T,
        "triple.json",
        compact(&json!({"exec_id": all[1].0.exec_id, "receipt": all[1].1, "result": "{}"})),
    );
}

fn proofs(out: &mut Seeds) {
    const T: &str = "proof";
    add(out, T, "zeros_64.bin", vec![0u8; 64]);
    add(out, T, "ones_256.bin", vec![0xffu8; 256]);
    add(
        out,
        T,
        "counting_512.bin",
        (0..512u32).map(|i| i as u8).collect::<Vec<u8>>(),
    );
}

fn all_seeds() -> Seeds {
    let mut out = Seeds::new();
    request_body(&mut out);
    artifacts(&mut out);
    notes(&mut out);
    cosignatures(&mut out);
    evidence(&mut out);
    proofs(&mut out);
    out
}

#[test]
fn seeds_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let seeds = all_seeds();
    let write = std::env::var_os("OPENEXEC_WRITE_SEEDS").is_some();
    let mut stale = Vec::new();
    let targets: std::collections::BTreeSet<&str> = seeds.keys().map(|(t, _)| *t).collect();
    for t in &targets {
        let dir = root.join(t);
        if write {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("creates the seed folder");
        }
        let on_disk: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for f in on_disk {
            if !seeds.contains_key(&(*t, f.clone())) {
                stale.push(format!("{t}/{f} is not made by seeds.rs"));
            }
        }
    }
    for ((t, name), bytes) in &seeds {
        let path = root.join(t).join(name);
        if write {
            std::fs::write(&path, bytes).expect("writes a seed");
        } else if std::fs::read(&path).ok().as_ref() != Some(bytes) {
            stale.push(format!("{t}/{name} differs or is missing"));
        }
    }
    assert!(
        stale.is_empty(),
        "seeds are stale (rerun with OPENEXEC_WRITE_SEEDS=1):\n{}",
        stale.join("\n")
    );
}

/// The seeds reach the accepting paths of each target, where most properties are checked.
#[test]
fn seeds_reach_the_accepting_paths() {
    use openexec_core::artifact;
    use openexec_core::evidence::{verify_full, LogTrust};
    use openexec_core::json::parse_ijson;
    use openexec_log::note::{count_cosignatures, open_note, verify_cosignature};

    let seeds = all_seeds();
    let get = |t: &'static str, n: &str| -> &[u8] {
        seeds
            .get(&(t, n.to_string()))
            .unwrap_or_else(|| panic!("no seed {t}/{n}"))
    };
    let req = Request::fixed();
    for n in [
        "legacy_v0_valid.json",
        "legacy_v0_valid_tz_aware_expiry.json",
        "v1_valid.json",
        "v1_valid_compact.json",
        "v1_approvers_quorum.json",
        "v0_valid_z.json",
        "v0_valid_naive.json",
        "v0_date_only.json",
    ] {
        let v = parse_ijson(get("artifact_v0_v1", n), MAX_DEPTH).expect("parses");
        let a = artifact::parse(&v).unwrap_or_else(|e| panic!("{n}: {e}"));
        artifact::verify(&a, &approval_keys(), &req.binding(), now(), SKEW_SECS, true)
            .unwrap_or_else(|e| panic!("{n}: {e}"));
    }

    let keys = [receipt_key().verifying_key()];
    let (log, ws) = (log_verifier(), witnesses());
    let valid = |n: &str, k: usize| {
        let v = parse_ijson(get("evidence", n), MAX_DEPTH).expect("parses");
        let ev = v.get("evidence").unwrap_or(&v);
        let trust = LogTrust {
            log: Some(&log),
            witnesses: &ws,
            k,
            require_inclusion: k > 0,
        };
        verify_full(ev, &keys, &trust).valid
    };
    for n in [
        "no_inclusion.json",
        "inclusion_no_cosignature.json",
        "inclusion_one_witness.json",
        "wrapped_two_witnesses.json",
    ] {
        assert!(valid(n, 0), "{n}");
    }
    assert!(!valid("no_inclusion.json", 1));
    assert!(!valid("inclusion_no_cosignature.json", 1));
    assert!(valid("inclusion_one_witness.json", 1));
    assert!(!valid("inclusion_one_witness.json", 2));
    assert!(valid("wrapped_two_witnesses.json", 2));

    for n in ["size_0", "size_5", "extension"] {
        open_note(get("note", &format!("note_{n}.txt")), &log).expect("opens");
        let cosigned =
            open_note(get("note", &format!("note_{n}_cosigned.txt")), &log).expect("opens");
        assert_eq!(count_cosignatures(&cosigned, &ws), 2);
    }
    open_note(get("note", "note_two_signers.txt"), &log).expect("opens");

    let body = checkpoint_5().body();
    let line = std::str::from_utf8(get("cosignature", "line_a.txt")).expect("UTF-8");
    assert_eq!(verify_cosignature(line, &body, &ws[0]), Ok(1_700_000_000));
}
