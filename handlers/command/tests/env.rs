//! The environment a command gets: only the variables named. A test binary of its own, since it
//! sets variables of the test process (and nothing else may run beside it then).

mod common;

use serde_json::json;

use common::*;

#[tokio::test]
async fn only_the_named_variables_are_passed() {
    // Set before anything is spawned in this process.
    std::env::set_var("OPENEXEC_TEST_CANARY", "must-not-leak");
    std::env::set_var("OPENEXEC_TEST_NAMED", "passed through");
    assert!(
        std::env::var_os("PATH").is_some(),
        "the test needs a PATH to hide"
    );

    let h = build(json!({
        "argv": [script("env.py")],
        "env": ["OPENEXEC_TEST_NAMED", "OPENEXEC_TEST_UNSET"],
    }))
    .unwrap();
    let out = run(&h, json!({})).await.unwrap();
    assert_eq!(out, json!({"OPENEXEC_TEST_NAMED": "passed through"}));

    let none = build(json!({"argv": [script("env.py")]})).unwrap();
    assert_eq!(run(&none, json!({})).await.unwrap(), json!({}));

    if sandbox_available() {
        let boxed = build(json!({
            "argv": [script("env.py")],
            "env": ["OPENEXEC_TEST_NAMED"],
            "sandbox": true,
        }))
        .unwrap();
        let mut out = run(&boxed, json!({})).await.unwrap();
        // bwrap itself sets PWD to the working directory (the run's scratch folder here).
        let pwd = out.as_object_mut().unwrap().remove("PWD");
        if let Some(pwd) = pwd {
            let scratch = std::env::temp_dir().join("openexec-command-");
            assert!(
                pwd.as_str().unwrap().starts_with(scratch.to_str().unwrap()),
                "{pwd}"
            );
        }
        assert_eq!(out, json!({"OPENEXEC_TEST_NAMED": "passed through"}));
    }
}
