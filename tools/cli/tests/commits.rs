//! How many group commits a request costs (issue 12, SPEC §5 and §10): an action without
//! effects (the built-in `echo`) is claimed and settled with its receipt in one commit, since
//! running it twice cannot be observed; an action with effects (`sleep`) is claimed durably
//! before its handler starts, then its receipt is committed: two commits. Either way a replay
//! costs none, and the answer is the same stored one.

mod common;

use common::*;
use serde_json::json;

/// Group commits of request writes the server made so far (its writer's batch count).
async fn commits(s: &Server) -> u64 {
    s.http().metric("openexec_store_batch_size_count").await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_action_without_effects_costs_one_commit_one_with_effects_two() {
    let s = Server::start(&[]);
    // Warm the server up: its first request may write more than a request's rows.
    let (st, b) = s
        .execute(&json!({"action": "echo", "payload": {"w": 0}, "nonce": "warm"}))
        .await;
    assert_eq!(st, 200, "{b}");

    let before = commits(&s).await;
    let echo = json!({"action": "echo", "payload": {"msg": "one"}, "nonce": "c-echo"});
    let (st, b) = s.execute(&echo).await;
    assert_eq!((st, &b["status"]), (200, &json!("executed")), "{b}");
    assert_eq!(
        commits(&s).await - before,
        1,
        "echo: claim and receipt in one commit"
    );
    assert!(b["evidence"]["log_index"].is_u64(), "{b}");
    let first_echo = b;

    let before = commits(&s).await;
    let sleep = json!({"action": "sleep", "payload": {"ms": 0}, "nonce": "c-sleep"});
    let (st, b) = s.execute(&sleep).await;
    assert_eq!((st, &b["status"]), (200, &json!("executed")), "{b}");
    assert_eq!(
        commits(&s).await - before,
        2,
        "sleep: the claim, then the receipt"
    );

    // A replay is found by its write (the fast path reads nothing first): one commit that
    // stores nothing, and the stored answer. echo's handler may run again — nothing of that run
    // is kept, and it is counted apart; sleep's never runs again (its claim comes first).
    let before = commits(&s).await;
    let (st, again) = s.execute(&echo).await;
    assert_eq!((st, &again["replayed"]), (200, &json!(true)), "{again}");
    assert_eq!(
        again["receipt"], first_echo["receipt"],
        "the stored answer: {again}"
    );
    assert_eq!(
        again["evidence"]["log_index"],
        first_echo["evidence"]["log_index"]
    );
    let (st, again_sleep) = s.execute(&sleep).await;
    assert_eq!(
        (st, &again_sleep["replayed"]),
        (200, &json!(true)),
        "{again_sleep}"
    );
    assert_eq!(
        commits(&s).await - before,
        2,
        "one write each, finding the nonce taken"
    );
    assert_eq!(
        s.handler_runs("echo").await,
        2,
        "runs whose outcome is stored"
    );
    assert_eq!(
        s.http()
            .metric("openexec_handler_discarded_total{action=\"echo\"}")
            .await,
        1,
        "the replay's run of echo was dropped"
    );
    assert_eq!(s.handler_runs("sleep").await, 1);
}
