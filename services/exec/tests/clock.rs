//! Approval time windows are checked against the service's clock, which tests set instead of
//! waiting for it (SPEC §4–5): an honest retry of an executed request after its artifact expired
//! is a replay, while the same expired artifact for a new nonce is `approval_expired`; an
//! artifact not yet valid becomes usable when the clock reaches it.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use openexec_core::artifact::{sign_v0, sign_v1, V1Params};
use openexec_core::keys::{signing_key_from_seed, verifying_key_b64};
use openexec_exec::{Config, Service, Settings};
use openexec_kit::clock::ManualClock;
use openexec_testkit::{Http, Serving};
use serde_json::{json, Value};

/// A v0 timestamp as the original's Python wrote it (naive UTC).
fn naive(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

async fn start(dir: &std::path::Path, clock: Arc<ManualClock>) -> Serving<anyhow::Error> {
    let sk = signing_key_from_seed([9; 32]);
    let cfg = Config::from_settings(Settings {
        mode: Some("clawshield".into()),
        clawshield_public_key: Some(verifying_key_b64(&sk.verifying_key())),
        clawshield_tenant_id: Some("tenant-001".into()),
        clock_skew_seconds: Some(0),
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        db_url: Some(format!("sqlite:///{}", dir.join("openexec.db").display())),
        ..Default::default()
    })
    .unwrap();
    let svc = Service::start_with_clock(cfg, openexec_builtin::registry(), clock)
        .await
        .unwrap();
    Serving::spawn(svc.local_addr().unwrap(), |stop| svc.run(stop))
}

fn code(b: &Value) -> &str {
    b["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_honest_retry_after_expiry_is_a_replay_and_a_new_nonce_is_expired() {
    let dir = tempfile::tempdir().unwrap();
    // Far from today: only the service's clock can make these artifacts current.
    let t0 = Utc.with_ymd_and_hms(2031, 5, 1, 12, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    let s = start(dir.path(), clock.clone()).await;
    let http = Http::new(s.base.clone());
    let sk = signing_key_from_seed([9; 32]);
    let p = json!({"msg": "short-lived"});
    let art = sign_v0(
        "ap-short",
        "tenant-001",
        "echo",
        &p,
        &naive(t0 - Duration::minutes(1)),
        &naive(t0 + Duration::seconds(2)),
        &sk,
    );
    let body = json!({"action": "echo", "payload": p, "nonce": "hr-1", "approval_artifact": art});
    let (st, first) = http.post("/execute", &body).await;
    assert_eq!(st, 200, "{first}");

    // Three seconds later the artifact has been expired for one (no skew configured).
    clock.advance(Duration::seconds(3));
    let (st, b) = http.post("/execute", &body).await;
    assert_eq!(st, 200, "honest retry after expiry: {b}");
    assert_eq!(b["replayed"], true);
    assert_eq!(b["receipt"], first["receipt"]);
    // A new nonce with the expired artifact: expired (the time window comes before single use).
    let mut fresh = body.clone();
    fresh["nonce"] = json!("hr-2");
    let (st, b) = http.post("/execute", &fresh).await;
    assert_eq!((st, code(&b)), (403, "approval_expired"), "{b}");
    // The retry must still be authentic and bound: without the artifact it is refused...
    let mut bare = body.clone();
    bare.as_object_mut().unwrap().remove("approval_artifact");
    let (st, b) = http.post("/execute", &bare).await;
    assert_eq!((st, code(&b)), (403, "approval_required"), "{b}");
    // ...and with a forged one too.
    let mut forged = body.clone();
    forged["approval_artifact"]["expires_at"] = json!(naive(t0 + Duration::days(1)));
    let (st, b) = http.post("/execute", &forged).await;
    assert_eq!((st, code(&b)), (403, "approval_bad_signature"), "{b}");
    let runs = http
        .metric("openexec_handler_runs_total{action=\"echo\"}")
        .await;
    assert_eq!(runs, 1);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_artifact_not_yet_valid_becomes_usable_when_the_clock_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc.with_ymd_and_hms(2031, 5, 1, 12, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(t0));
    let s = start(dir.path(), clock.clone()).await;
    let http = Http::new(s.base.clone());
    let sk = signing_key_from_seed([9; 32]);
    // `add`, not `echo`: the other test counts echo runs in the process-wide metrics.
    let p = json!({"a": 1, "b": 2});
    let art = sign_v1(
        &V1Params {
            approval_id: "ap-later",
            tenant_id: "tenant-001",
            action: "add",
            payload: &p,
            nonce: "later-1",
            issued_at: t0 + Duration::minutes(10),
            expires_at: t0 + Duration::minutes(15),
            decision_id: None,
            policy_hash: None,
        },
        &sk,
    );
    let body = json!({"action": "add", "payload": p, "nonce": "later-1", "tenant_id": "tenant-001", "approval_artifact": art});
    let (st, b) = http.post("/execute", &body).await;
    assert_eq!(st, 403, "{b}");
    assert!(code(&b).starts_with("approval_"), "{b}");
    clock.set(t0 + Duration::minutes(11));
    let (st, b) = http.post("/execute", &body).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["result"], json!({"sum": 3}), "{b}");
    clock.set(t0 + Duration::minutes(16));
    let mut fresh = body.clone();
    fresh["nonce"] = json!("later-2");
    let (st, b) = http.post("/execute", &fresh).await;
    assert_eq!(st, 403, "{b}");
    s.stop().await.unwrap();
}
