//! Two services in one process (an embedder's setup): each `/metrics` renders the process's one
//! recorder, so what either service counts is served, whichever started first.

use std::time::Duration;

use openexec_exec::{Config, Service, Settings};
use openexec_testkit::eventually;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn both_services_serve_the_counters_of_the_one_recorder() {
    let tmp = tempfile::tempdir().unwrap();
    // ClawLedger first: it takes the recorder before OpenExec asks for one.
    let lcfg = openexec_ledger::Config::from_settings(openexec_ledger::Settings {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(tmp.path().join("ledger")),
        db_url: Some(format!(
            "sqlite:///{}",
            tmp.path().join("ledger.db").display()
        )),
        ..Default::default()
    })
    .unwrap();
    let ledger = openexec_ledger::Ledger::start(lcfg).await.unwrap();
    let lbase = format!("http://{}", ledger.local_addr().unwrap());
    let (lstop, lrx) = tokio::sync::oneshot::channel::<()>();
    let ldone = tokio::spawn(ledger.run(async move {
        let _ = lrx.await;
    }));

    let cfg = Config::from_settings(Settings {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(tmp.path().join("exec")),
        db_url: Some(format!(
            "sqlite:///{}",
            tmp.path().join("exec.db").display()
        )),
        ..Default::default()
    })
    .unwrap();
    let svc = Service::start(cfg, openexec_builtin::registry())
        .await
        .unwrap();
    let ebase = format!("http://{}", svc.local_addr().unwrap());
    let (estop, erx) = tokio::sync::oneshot::channel::<()>();
    let edone = tokio::spawn(svc.run(async move {
        let _ = erx.await;
    }));

    let c = reqwest::Client::new();
    let r = c
        .post(format!("{ebase}/execute"))
        .json(&json!({"action": "echo", "payload": {}, "nonce": "one-process"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for base in [&ebase, &lbase] {
        let what = format!("{base}/metrics has OpenExec's counter");
        eventually(Duration::from_secs(10), &what, || async {
            let text = c
                .get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.contains("openexec_requests_total{code=\"executed\"}")
                .then_some(())
        })
        .await;
    }
    let _ = estop.send(());
    let _ = lstop.send(());
    edone.await.unwrap().unwrap();
    ldone.await.unwrap().unwrap();
}
