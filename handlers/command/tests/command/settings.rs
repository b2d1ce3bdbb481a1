//! Settings refused at start-up, each naming its key.

use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};

use crate::common::*;

fn refused(settings: Value) -> String {
    match build(settings.clone()) {
        Ok(_) => panic!("built: {settings}"),
        Err(e) => e,
    }
}

#[test]
fn bad_settings_refuse_to_build_naming_the_key() {
    let dir = tempdir();
    let not_exec = dir.path().join("data.txt");
    std::fs::write(&not_exec, "x").unwrap();
    std::fs::set_permissions(&not_exec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let missing = dir.path().join("missing");
    let argv = script("argv.py");
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"argv": ["bin/tool"]}),
            "argv[0]",
            "not an absolute path",
        ),
        (json!({"argv": ["tool"]}), "argv[0]", "not an absolute path"),
        (json!({"argv": []}), "argv", "at least one"),
        (json!({}), "argv", "missing field"),
        (json!({"argv": "/bin/true"}), "argv", "invalid type"),
        (json!({"argv": [1]}), "argv[0]", "invalid type"),
        (json!({"argv": [missing]}), "argv[0]", "No such file"),
        (
            json!({"argv": [not_exec]}),
            "argv[0]",
            "not an executable file",
        ),
        (
            json!({"argv": [dir.path()]}),
            "argv[0]",
            "not an executable file",
        ),
        (
            json!({"argv": ["/bin/{tool}"]}),
            "argv[0]",
            "cannot hold a slot",
        ),
        (
            json!({"argv": [argv, "ok", "{unterminated"]}),
            "argv[2]",
            "not closed",
        ),
        (json!({"argv": [argv, "a}b"]}), "argv[1]", "lone '}'"),
        (json!({"argv": [argv, "{}"]}), "argv[1]", "names no field"),
        (
            json!({"argv": [argv], "shell": true}),
            "unknown field `shell`",
            "",
        ),
        (
            json!({"argv": [argv], "env": ["A=B"]}),
            "env[0]",
            "not a variable name",
        ),
        (
            json!({"argv": [argv], "env": "PATH"}),
            "env",
            "invalid type",
        ),
        (
            json!({"argv": [argv], "cwd": missing}),
            "cwd",
            "No such file",
        ),
        (
            json!({"argv": [argv], "cwd": not_exec}),
            "cwd",
            "not a directory",
        ),
        (
            json!({"argv": [argv], "writable": [dir.path()]}),
            "writable",
            "only allowed with sandbox = true",
        ),
        (
            json!({"argv": [argv], "sandbox": false, "writable": []}),
            "writable",
            "only allowed with sandbox = true",
        ),
        (
            json!({"argv": [argv], "sandbox": true, "writable": [missing]}),
            "writable[0]",
            "No such file",
        ),
        (
            json!({"argv": [argv], "sandbox": "yes"}),
            "sandbox",
            "invalid type",
        ),
        (
            json!({"argv": [argv], "max_output_bytes": 0}),
            "max_output_bytes",
            "from 1 to",
        ),
        (
            json!({"argv": [argv], "max_output_bytes": -1}),
            "max_output_bytes",
            "invalid value",
        ),
    ];
    for (settings, key, why) in cases {
        let e = refused(settings.clone());
        assert!(e.contains(key), "{settings}: {e:?} does not name {key}");
        assert!(e.contains(why), "{settings}: {e:?} does not say {why}");
    }
}

#[test]
fn good_settings_build() {
    let dir = tempdir();
    // Relative cwd: relative to the registry file's folder (the tests use the temp folder).
    let name = dir.path().file_name().unwrap().to_str().unwrap();
    build(json!({
        "argv": [script("argv.py"), "--{{not a slot}}", "{a}"],
        "env": ["LANG", "LANG"],
        "cwd": name,
        "max_output_bytes": 10,
    }))
    .unwrap();
}
