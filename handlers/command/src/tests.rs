//! Tests of the sandbox seam: what happens when bubblewrap is missing or does not work. The
//! behaviour of real runs is tested in `tests/`.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::*;

const DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn spec<'a>(settings: &'a Value, dir: &'a Path) -> Spec<'a> {
    Spec {
        action: "act",
        settings,
        base_dir: dir,
        timeout: Duration::from_secs(5),
        effects: true,
        digest: DIGEST,
    }
}

#[test]
fn sandbox_refuses_to_build_when_bwrap_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-bwrap");
    let availability = sandbox::probe(&missing);
    let Availability::Unavailable(reason) = &availability else {
        panic!("a missing bwrap was found available: {availability:?}");
    };
    assert!(reason.contains("no-such-bwrap"), "{reason}");
    assert_eq!(
        availability.health(),
        json!({"sandbox": {"available": false, "reason": reason}})
    );

    let settings = json!({"argv": ["/bin/true"], "sandbox": true});
    let e = build_with(&spec(&settings, dir.path()), &|| availability.clone())
        .err()
        .expect("sandbox = true built without a sandbox");
    assert!(e.starts_with("sandbox:"), "{e}");
    assert!(e.contains(reason.as_str()), "{e}");

    // The same action without the sandbox builds, and never asks for it.
    let settings = json!({"argv": ["/bin/true"]});
    let asked = std::sync::atomic::AtomicBool::new(false);
    build_with(&spec(&settings, dir.path()), &|| {
        asked.store(true, std::sync::atomic::Ordering::SeqCst);
        availability.clone()
    })
    .unwrap();
    assert!(!asked.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn a_bwrap_that_does_not_work_is_unavailable_with_its_reason() {
    // Installed but failing (as bwrap does in a container that forbids namespaces).
    let availability = sandbox::probe(Path::new("/bin/false"));
    let Availability::Unavailable(reason) = availability else {
        panic!("/bin/false passed for a working sandbox");
    };
    assert!(reason.contains("/bin/false"), "{reason}");
    assert!(reason.contains("exit status: 1"), "{reason}");
}

#[test]
fn the_system_sandbox_is_probed_for_real() {
    match sandbox::system() {
        Availability::Available(p) => {
            // What was found really sandboxes.
            assert_eq!(sandbox::probe(p), Availability::Available(p.clone()));
            assert_eq!(
                CommandKind.health().unwrap(),
                json!({"sandbox": {"available": true, "bwrap": p.display().to_string()}})
            );
        }
        Availability::Unavailable(reason) => {
            println!("skipping the positive half: the sandbox is not available here: {reason}");
            assert_eq!(
                CommandKind.health().unwrap()["sandbox"]["available"],
                json!(false)
            );
        }
    }
}
