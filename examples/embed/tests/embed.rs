//! The example binary end to end: the embedder's own handler is listed, validated, run once and
//! receipted like the built-ins, with the configuration `openexec serve` reads.

use openexec_testkit::{Http, Process, ProcessSpec};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_openexec-embed-example");

#[tokio::test]
async fn the_embedders_handler_runs_behind_the_same_boundary() {
    let p = Process::start(
        ProcessSpec::new(BIN, &[], "openexec-embed-example: listening on ")
            .clear_env("OPENEXEC_")
            .clear_env("CLAWSHIELD_")
            .env("OPENEXEC_BIND", "127.0.0.1:0")
            .env("OPENEXEC_DATA_DIR", "{dir}")
            .env("OPENEXEC_DB_URL", "sqlite:///{dir}/openexec.db"),
    );
    let http = Http::new(p.base.clone());

    let (st, list) = http.get("/actions").await;
    assert_eq!(st, 200, "{list}");
    let slug = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "slugify")
        .unwrap_or_else(|| panic!("slugify not listed: {list}"));
    assert_eq!(slug["kind"], "example");
    assert_eq!(slug["effects"], false);
    assert_eq!(slug["input_schema"]["required"], json!(["title"]));

    let body =
        json!({"action": "slugify", "payload": {"title": "Hello, Embedded World"}, "nonce": "s1"});
    let (st, r) = http.post("/execute", &body).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["result"], json!({"slug": "hello-embedded-world"}));
    assert_eq!(
        r["evidence"]["receipt"]["handler"],
        json!({"name": "example:slugify", "digest": slug["digest"]})
    );
    let (st, again) = http.post("/execute", &body).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["receipt"], r["receipt"]);

    let (st, bad) = http
        .post(
            "/execute",
            &json!({"action": "slugify", "payload": {"title": 7}, "nonce": "s2"}),
        )
        .await;
    assert_eq!(st, 400, "{bad}");
    assert_eq!(bad["error"]["code"], "invalid_payload");
    assert_eq!(bad["error"]["details"][0]["path"], "/title");
    assert_eq!(bad["evidence"]["receipt"]["status"], "rejected");

    // The built-ins are there beside it.
    let (st, e) = http
        .post(
            "/execute",
            &json!({"action": "echo", "payload": {"a": 1}, "nonce": "e1"}),
        )
        .await;
    assert_eq!(st, 200, "{e}");
}
