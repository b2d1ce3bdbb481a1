//! The engine enforces each handler's timeout and bounds the shutdown drain, whatever the
//! handler does with its deadline and cancellation token (SPEC §5): a handler without effects
//! that overruns is `failed` (`handler_timeout`), one with effects is `interrupted` (its outcome
//! is unknown, never re-run), and a graceful stop cuts off what still runs after its grace.
//! Embedders' handlers run behind the same trait as the built-ins: these tests register their
//! own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openexec_exec::handler::{Handler, HandlerFuture, Invocation};
use openexec_exec::{Config, Registry, Service, Settings};
use openexec_testkit::{eventually, Serving};
use serde_json::{json, Value};

/// Sleeps `ms` and ignores its deadline and token: only the engine can stop it.
struct Stubborn {
    effects: bool,
    timeout: Duration,
    ms: u64,
    runs: Arc<AtomicUsize>,
}

impl Handler for Stubborn {
    fn name(&self) -> &str {
        "test:stubborn"
    }
    fn digest(&self) -> &str {
        "0000000000000000000000000000000000000000000000000000000000000000"
    }
    fn effects(&self) -> bool {
        self.effects
    }
    fn timeout(&self) -> Duration {
        self.timeout
    }
    fn validate(&self, _: &Value) -> Result<(), openexec_exec::handler::Invalid> {
        Ok(())
    }
    fn run<'a>(&'a self, _: &'a Invocation<'a>) -> HandlerFuture<'a> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(self.ms)).await;
            Ok(json!({"done": true}))
        })
    }
}

type Running = Serving<anyhow::Error>;

async fn start(dir: &std::path::Path, reg: Registry, grace: Duration) -> Running {
    let cfg = Config::from_settings(Settings {
        bind: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        db_url: Some(format!("sqlite:///{}", dir.join("openexec.db").display())),
        ..Default::default()
    })
    .unwrap();
    let svc = Service::start(cfg, reg)
        .await
        .unwrap()
        .with_shutdown_grace(grace);
    Serving::spawn(svc.local_addr().unwrap(), |stop| svc.run(stop))
}

async fn execute(base: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/execute"))
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn registry(runs: &Arc<AtomicUsize>) -> Registry {
    let mut reg = openexec_builtin::registry();
    for (name, effects, timeout, ms) in [
        ("pure_slow", false, 200, 5_000),
        ("effect_slow", true, 200, 5_000),
        ("stuck", true, 60_000, 30_000),
    ] {
        reg.register(
            name,
            Arc::new(Stubborn {
                effects,
                timeout: Duration::from_millis(timeout),
                ms,
                runs: runs.clone(),
            }),
        );
    }
    reg
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_past_its_timeout_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let s = start(dir.path(), registry(&runs), Duration::from_secs(5)).await;

    let t0 = Instant::now();
    let (st, b) = execute(
        &s.base,
        &json!({"action": "pure_slow", "payload": {}, "nonce": "p1"}),
    )
    .await;
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(st, 502, "{b}");
    assert_eq!(b["error"]["code"], "handler_failed", "{b}");
    assert_eq!(b["evidence"]["receipt"]["status"], "failed", "{b}");
    assert_eq!(b["evidence"]["receipt"]["code"], "handler_timeout", "{b}");

    let t0 = Instant::now();
    let (st, b) = execute(
        &s.base,
        &json!({"action": "effect_slow", "payload": {}, "nonce": "e1"}),
    )
    .await;
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(st, 409, "{b}");
    assert_eq!(b["error"]["code"], "outcome_unknown", "{b}");
    assert_eq!(b["evidence"]["receipt"]["status"], "interrupted", "{b}");
    // Asking again answers the same; the handler is never run again by itself.
    let (st, again) = execute(
        &s.base,
        &json!({"action": "effect_slow", "payload": {}, "nonce": "e1"}),
    )
    .await;
    assert_eq!((st, &again["replayed"]), (409, &json!(true)), "{again}");
    assert_eq!(
        again["evidence"]["receipt_hash"],
        b["evidence"]["receipt_hash"]
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_cuts_off_what_still_runs_after_its_grace() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let s = start(dir.path(), registry(&runs), Duration::from_millis(500)).await;
    let base = s.base.clone();
    let inflight = tokio::spawn(async move {
        execute(
            &base,
            &json!({"action": "stuck", "payload": {}, "nonce": "s1"}),
        )
        .await
    });
    eventually(Duration::from_secs(10), "the handler starts", || async {
        (runs.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let t0 = Instant::now();
    s.stop().await.unwrap();
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with a 30 s handler"
    );
    // The waiting client got the interrupted answer, not a dropped connection.
    let (st, b) = inflight.await.unwrap();
    assert_eq!(
        (st, &b["error"]["code"]),
        (409, &json!("outcome_unknown")),
        "{b}"
    );
    assert_eq!(b["evidence"]["receipt"]["status"], "interrupted", "{b}");

    // The receipt was written at shutdown: a new process answers it from the store.
    let s2 = start(dir.path(), registry(&runs), Duration::from_secs(5)).await;
    let (st, b2) = execute(
        &s2.base,
        &json!({"action": "stuck", "payload": {}, "nonce": "s1"}),
    )
    .await;
    assert_eq!((st, &b2["replayed"]), (409, &json!(true)), "{b2}");
    assert_eq!(
        b2["evidence"]["receipt_hash"],
        b["evidence"]["receipt_hash"]
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "never re-run");
    s2.stop().await.unwrap();
}

/// Answers "outcome unknown" (a request sent, no answer) and lists each failing place of a bad
/// payload: the two ways a handler tells the engine more than pass or fail.
struct Unsure {
    runs: Arc<AtomicUsize>,
}

impl Handler for Unsure {
    fn name(&self) -> &str {
        "test:unsure"
    }
    fn digest(&self) -> &str {
        "1111111111111111111111111111111111111111111111111111111111111111"
    }
    fn effects(&self) -> bool {
        true
    }
    fn validate(&self, p: &Value) -> Result<(), openexec_exec::handler::Invalid> {
        if p.get("bad").is_none() {
            return Ok(());
        }
        let v = |path: &str, rule: &str| openexec_exec::handler::Violation {
            path: path.into(),
            rule: rule.into(),
            message: format!("{path} breaks {rule}"),
        };
        Err(openexec_exec::handler::Invalid {
            message: "payload does not match".into(),
            details: vec![v("/bad", "type"), v("", "required")],
        })
    }
    fn run<'a>(&'a self, _: &'a Invocation<'a>) -> HandlerFuture<'a> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            Err(openexec_exec::handler::HandlerError::outcome_unknown(
                "the request was sent and no answer came",
            ))
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_outcome_is_interrupted_and_invalid_payloads_list_details() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut reg = openexec_builtin::registry();
    reg.register("unsure", Arc::new(Unsure { runs: runs.clone() }));
    let s = start(dir.path(), reg, Duration::from_secs(5)).await;

    let (st, b) = execute(
        &s.base,
        &json!({"action": "unsure", "payload": {"bad": 1}, "nonce": "u0"}),
    )
    .await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(b["error"]["code"], "invalid_payload", "{b}");
    assert_eq!(
        b["error"]["details"],
        json!([
            {"path": "/bad", "rule": "type", "message": "/bad breaks type"},
            {"path": "", "rule": "required", "message": " breaks required"}
        ]),
        "{b}"
    );
    assert_eq!(b["evidence"]["receipt"]["status"], "rejected", "{b}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    let body = json!({"action": "unsure", "payload": {}, "nonce": "u1"});
    let (st, b) = execute(&s.base, &body).await;
    assert_eq!(st, 409, "{b}");
    assert_eq!(b["status"], "interrupted", "{b}");
    assert_eq!(b["evidence"]["receipt"]["status"], "interrupted", "{b}");
    assert_eq!(b["evidence"]["receipt"]["code"], "outcome_unknown", "{b}");
    // Asking again answers the stored outcome; the handler is not run again.
    let (st, b) = execute(&s.base, &body).await;
    assert_eq!(st, 409, "{b}");
    assert_eq!(b["error"]["code"], "outcome_unknown", "{b}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    s.stop().await.unwrap();
}
