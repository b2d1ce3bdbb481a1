//! What the tests of real runs share: the programs they configure (scripts written once per
//! test process, before any test spawns anything, so no forked child can hold one open for
//! writing when it is executed — `ETXTBSY`), building an action through the public
//! [`CommandKind`], running it, and waiting for processes to be gone.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openexec_handler::{CancellationToken, Handler, HandlerError, Invocation, Kind, Spec};
use openexec_handler_command::CommandKind;
use serde_json::Value;

pub const DIGEST: &str = "4c0ffee0000000000000000000000000000000000000000000000000000000ab";

/// The test programs, by name, and where they are.
const SCRIPTS: &[(&str, &str)] = &[
    (
        "argv.py",
        "#!/usr/bin/python3\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n",
    ),
    (
        // The environment the process was started with (Python itself adds LC_CTYPE to
        // os.environ when no locale is set; /proc shows what execve passed).
        "env.py",
        "#!/usr/bin/python3\nimport json\nraw = open('/proc/self/environ', 'rb').read()\n\
         env = dict(kv.decode().split('=', 1) for kv in raw.split(b'\\0') if kv)\n\
         print(json.dumps(env))\n",
    ),
    (
        "cwd.py",
        "#!/usr/bin/python3\nimport json, os\nentries = sorted(os.listdir('.'))\n\
         try:\n    open('scratch.txt', 'w').write('x')\n    wrote = True\nexcept OSError as e:\n    wrote = str(e)\n\
         print(json.dumps({'cwd': os.getcwd(), 'entries': entries, 'wrote': wrote}))\n",
    ),
    (
        // argv: pidfile mode. Starts a grandchild (`sleep 300`), writes both pids to the
        // pidfile (atomically), then: sleep | flood (stdout forever) | exit (print {} and exit 0,
        // leaving the grandchild behind, holding stdout open).
        "group.py",
        "#!/usr/bin/python3\nimport json, os, subprocess, sys, time\n\
         p = subprocess.Popen(['/bin/sleep', '300'])\n\
         tmp = sys.argv[1] + '.tmp'\n\
         with open(tmp, 'w') as f:\n    json.dump({'grandchild': p.pid, 'leader': os.getpid()}, f)\n\
         os.rename(tmp, sys.argv[1])\n\
         mode = sys.argv[2]\n\
         if mode == 'sleep':\n    time.sleep(300)\n\
         elif mode == 'flood':\n    while True:\n        sys.stdout.write('x' * 65536)\n        sys.stdout.flush()\n\
         else:\n    print('{}')\n",
    ),
    (
        // argv: code. Writes a secret to stderr, then exits with the code, or kills itself.
        "exit.sh",
        "#!/bin/sh\necho \"SECRET-in-stderr\" >&2\nif [ \"$1\" = kill ]; then kill -9 $$; fi\nexit \"$1\"\n",
    ),
    (
        // argv: text. Writes it to stdout as it is.
        "out.py",
        "#!/usr/bin/python3\nimport sys\nsys.stdout.write(sys.argv[1])\n",
    ),
    (
        // argv: n. Writes n bytes of 'x' to stdout.
        "big.py",
        "#!/usr/bin/python3\nimport sys\nsys.stdout.write('x' * int(sys.argv[1]))\n",
    ),
    (
        // argv: port. Tries a TCP connection to 127.0.0.1:port.
        "net.py",
        "#!/usr/bin/python3\nimport json, socket, sys\n\
         try:\n    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3).close()\n    r = {'connected': True}\n\
         except OSError as e:\n    r = {'connected': False, 'error': str(e)}\nprint(json.dumps(r))\n",
    ),
    (
        // argv: paths. Tries writing "hi" to each; answers path -> "ok" or the error.
        "write.py",
        "#!/usr/bin/python3\nimport json, sys\nr = {}\nfor p in sys.argv[1:]:\n\
         \x20   try:\n        with open(p, 'w') as f:\n            f.write('hi')\n        r[p] = 'ok'\n\
         \x20   except OSError as e:\n        r[p] = str(e)\nprint(json.dumps(r))\n",
    ),
    (
        // argv: file. Starts a grandchild appending a line to the file every 20 ms, then sleeps.
        "ticks.py",
        "#!/usr/bin/python3\nimport subprocess, sys, time\n\
         subprocess.Popen(['/usr/bin/python3', '-c', 'import sys, time\\nwhile True:\\n    open(sys.argv[1], \"a\").write(\"t\\\\n\")\\n    time.sleep(0.02)', sys.argv[1]])\n\
         time.sleep(300)\n",
    ),
];

const PREFIX: &str = "openexec-command-tests-";

/// The folder holding the test programs (under the system's temporary folder, which the
/// sandbox hides behind its own `/tmp`: runs there show that the program is bound back in).
pub fn scripts() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = std::env::temp_dir();
        // Folders of earlier test processes that are gone.
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix(PREFIX) {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, body) in SCRIPTS {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    })
}

/// The path of a test program.
pub fn script(name: &str) -> String {
    scripts().join(name).display().to_string()
}

pub fn build(settings: Value) -> Result<Arc<dyn Handler>, String> {
    build_with(settings, true, Duration::from_secs(20))
}

pub fn build_with(
    settings: Value,
    effects: bool,
    timeout: Duration,
) -> Result<Arc<dyn Handler>, String> {
    scripts();
    let base = std::env::temp_dir();
    CommandKind.build(&Spec {
        action: "act",
        settings: &settings,
        base_dir: &base,
        timeout,
        effects,
        digest: DIGEST,
    })
}

/// Validate, then run with a deadline of the handler's timeout from now.
pub async fn run(h: &Arc<dyn Handler>, payload: Value) -> Result<Value, HandlerError> {
    h.validate(&payload)
        .unwrap_or_else(|e| panic!("payload refused: {e} {:?}", e.details));
    let inv = invocation(h, &payload, CancellationToken::new());
    h.run(&inv).await
}

pub fn invocation<'a>(
    h: &Arc<dyn Handler>,
    payload: &'a Value,
    cancel: CancellationToken,
) -> Invocation<'a> {
    Invocation {
        exec_id: "exec",
        tenant_id: "tenant",
        action: "act",
        nonce: "nonce",
        payload,
        deadline: tokio::time::Instant::now() + h.timeout(),
        cancel,
    }
}

/// A fresh folder for one test (removed when dropped).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Whether a process no longer runs: no such pid, or a zombie (dead, waiting to be reaped).
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

/// Polls until `ok()` holds, failing the test with `what` if it does not within `within`.
pub async fn eventually(what: &str, within: Duration, ok: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still not so after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pids the `group.py` program wrote, once it wrote them.
pub async fn pids(pidfile: &Path) -> (u32, u32) {
    eventually(
        "the program wrote its pids",
        Duration::from_secs(10),
        || pidfile.exists(),
    )
    .await;
    let v: Value = serde_json::from_str(&std::fs::read_to_string(pidfile).unwrap()).unwrap();
    let pid = |k: &str| v[k].as_u64().unwrap() as u32;
    (pid("leader"), pid("grandchild"))
}

/// Both processes are gone within a few seconds.
pub async fn all_gone(leader: u32, grandchild: u32) {
    eventually(
        &format!("the leader {leader} and grandchild {grandchild} are killed"),
        Duration::from_secs(5),
        || gone(leader) && gone(grandchild),
    )
    .await;
}

/// Whether the sandbox is available here; prints why not when it is not (the test then skips).
/// Where `OPENEXEC_TEST_SANDBOX_REQUIRED=1` (set by `.ci/run`, which installs bubblewrap) an
/// unavailable sandbox fails the test instead: CI never skips these.
pub fn sandbox_available() -> bool {
    let h = CommandKind.health().unwrap();
    if h["sandbox"]["available"] == Value::Bool(true) {
        return true;
    }
    if std::env::var("OPENEXEC_TEST_SANDBOX_REQUIRED").is_ok_and(|v| v == "1") {
        panic!(
            "OPENEXEC_TEST_SANDBOX_REQUIRED=1 but the sandbox is not available: {}",
            h["sandbox"]["reason"]
        );
    }
    println!(
        "skipping: the sandbox is not available here: {}",
        h["sandbox"]["reason"]
    );
    false
}
