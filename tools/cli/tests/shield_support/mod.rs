//! The harness of ClawShield's black-box tests (`shield.rs`): a fixture directory per test
//! (identities with fresh tokens and approver keys, the gate's two keys, a policy bundle), the
//! real `openexec shield serve` started on it as a process (one or several, on SQLite or
//! PostgreSQL), and the calls a client makes, each answering `(status, headers, JSON)`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use openexec_core::keys::{self, SigningKey, VerifyingKey};
use openexec_testkit::{eventually, Process, ProcessSpec};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_openexec");

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The tenant of the fixture's agents and approvers, and another one.
pub const TENANT: &str = "acme";
pub const OTHER_TENANT: &str = "globex";

/// The example bundle of the repository.
pub fn example_policy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/policy")
}

/// One identity of the fixture: its id, its bearer token and (approvers) its vote key.
#[derive(Clone)]
pub struct Who {
    pub id: String,
    pub token: String,
    pub key: Option<SigningKey>,
}

impl Who {
    pub fn public_key(&self) -> VerifyingKey {
        self.key
            .as_ref()
            .expect("an approver with a key")
            .verifying_key()
    }
}

fn new_token(id: &str) -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    format!("tok-{id}-{}", hex::encode(b))
}

/// A test's directory: `identities.toml`, `gate-key.pem`, `log-key.pem`, and `policy/` (a copy
/// of the example bundle unless the test writes its own).
pub struct Fixture {
    dir: tempfile::TempDir,
    /// Agent of `acme` acting on behalf of `erin`.
    pub agent: Who,
    /// Another agent of `acme` (on behalf of nobody).
    pub agent2: Who,
    /// An agent of `globex`.
    pub other_agent: Who,
    /// Approvers of `acme`: alice, bob, frank (finance), erin (finance: the human `agent` acts
    /// for), carol, dave (ops); all with keys.
    pub alice: Who,
    pub bob: Who,
    pub frank: Who,
    pub erin: Who,
    pub carol: Who,
    pub dave: Who,
    /// A finance approver of `globex`.
    pub mallory: Who,
    pub admin: Who,
}

impl Fixture {
    /// A fixture with the example policy bundle in `policy/`.
    pub fn new() -> Fixture {
        let fx = Fixture::without_policy();
        copy_dir(&example_policy(), &fx.policy_dir());
        fx
    }

    /// A fixture whose `policy/` directory is empty (the test writes its bundle).
    pub fn without_policy() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("clawshield-fixture-")
            .tempdir()
            .expect("tempdir");
        let who = |id: &str, key: bool| Who {
            id: id.into(),
            token: new_token(id),
            key: key.then(openexec_kit::keys::generate),
        };
        let fx = Fixture {
            agent: who("agent", false),
            agent2: who("agent2", false),
            other_agent: who("globex-agent", false),
            alice: who("alice", true),
            bob: who("bob", true),
            frank: who("frank", true),
            erin: who("erin", true),
            carol: who("carol", true),
            dave: who("dave", true),
            mallory: who("mallory", true),
            admin: who("root", false),
            dir,
        };
        let h = |w: &Who| openexec_shield::token_hash_hex(&w.token);
        let mut ids = format!(
            "[[agent]]\nid = \"agent\"\ntenant = \"{TENANT}\"\ntoken_sha256 = \"{}\"\non_behalf_of = \"erin\"\n\n\
             [[agent]]\nid = \"agent2\"\ntenant = \"{TENANT}\"\ntoken_sha256 = \"{}\"\n\n\
             [[agent]]\nid = \"globex-agent\"\ntenant = \"{OTHER_TENANT}\"\ntoken_sha256 = \"{}\"\n\n\
             [[admin]]\nid = \"root\"\ntoken_sha256 = \"{}\"\n",
            h(&fx.agent),
            h(&fx.agent2),
            h(&fx.other_agent),
            h(&fx.admin),
        );
        for (w, tenant, group) in [
            (&fx.alice, TENANT, "finance"),
            (&fx.bob, TENANT, "finance"),
            (&fx.frank, TENANT, "finance"),
            (&fx.erin, TENANT, "finance"),
            (&fx.carol, TENANT, "ops"),
            (&fx.dave, TENANT, "ops"),
            (&fx.mallory, OTHER_TENANT, "finance"),
        ] {
            ids.push_str(&format!(
                "\n[[approver]]\nid = \"{}\"\ntenant = \"{tenant}\"\ngroups = [\"{group}\"]\ntoken_sha256 = \"{}\"\npublic_key = \"{}\"\n",
                w.id,
                h(w),
                keys::verifying_key_b64(&w.public_key()),
            ));
        }
        std::fs::write(fx.path().join("identities.toml"), ids).expect("write identities");
        for name in ["gate-key.pem", "log-key.pem"] {
            let pem = keys::signing_key_to_pem(&openexec_kit::keys::generate());
            openexec_kit::keys::write_private(&fx.path().join(name), &pem).expect("write key");
        }
        std::fs::create_dir_all(fx.policy_dir()).expect("policy dir");
        fx
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.path().join("policy")
    }

    /// Write (or replace) one file of the bundle in `policy/`.
    pub fn write_policy(&self, name: &str, text: &str) {
        std::fs::write(self.policy_dir().join(name), text).expect("write policy file");
    }

    /// The policy_hash of `policy/` as it is now.
    pub fn policy_hash(&self) -> String {
        openexec_policy::Bundle::load(self.policy_dir())
            .expect("the bundle loads")
            .policy_hash()
            .to_string()
    }

    /// The environment every gate of this fixture runs with (identities, keys, policy).
    fn env(&self) -> Vec<(String, String)> {
        let p = |n: &str| self.path().join(n).display().to_string();
        vec![
            ("CLAWSHIELD_IDENTITIES".into(), p("identities.toml")),
            ("CLAWSHIELD_KEY".into(), p("gate-key.pem")),
            ("CLAWSHIELD_LOG_KEY".into(), p("log-key.pem")),
            ("CLAWSHIELD_POLICY".into(), p("policy")),
        ]
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read example policy") {
        let e = e.expect("dir entry");
        if e.file_type().expect("file type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// One running `openexec shield serve` (killed when dropped).
pub struct Gate {
    pub proc: Process,
    pub base: String,
    pub client: reqwest::Client,
}

/// What a call answered.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        code(&self.body)
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

/// `error.code` of an error answer ("" when absent).
pub fn code(body: &Value) -> &str {
    body.pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// A call's body.
pub enum Body<'a> {
    None,
    Json(&'a Value),
    /// Exact bytes with this Content-Type (None: no Content-Type header).
    Raw(Option<&'a str>, Vec<u8>),
}

impl Gate {
    /// Start a gate of `fx` on the database `db_url` (`{dir}` stands for the process's own
    /// directory), with `extra` settings on top; panics with its log if it does not come up.
    pub fn start(fx: &Fixture, db_url: &str, extra: &[(&str, &str)]) -> Gate {
        Gate::try_start(fx, db_url, extra).unwrap_or_else(|f| {
            panic!(
                "clawshield did not start (status {:?}); log:\n{}",
                f.status, f.log
            )
        })
    }

    pub fn try_start(
        fx: &Fixture,
        db_url: &str,
        extra: &[(&str, &str)],
    ) -> Result<Gate, openexec_testkit::StartFailure> {
        let mut spec = ProcessSpec::new(BIN, &["shield", "serve"], "clawshield: listening on ")
            .clear_env("CLAWSHIELD_")
            .clear_env("OPENEXEC_")
            .log_file("clawshield.log")
            .dir_prefix("clawshield-e2e-")
            .env("CLAWSHIELD_BIND", "127.0.0.1:0")
            .env("CLAWSHIELD_DATA_DIR", "{dir}/data")
            .env("CLAWSHIELD_DB_URL", db_url)
            .env("CLAWSHIELD_LOG_INTERVAL_MS", "100")
            .env("CLAWSHIELD_DB_POOL_SIZE", "4")
            .env("CLAWSHIELD_LOG", "info");
        for (k, v) in fx.env() {
            spec = spec.env(&k, &v);
        }
        // Later settings win (Command::env keeps the last value of a name).
        let proc = Process::try_start(spec.envs(extra))?;
        Ok(Gate {
            base: proc.base.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            proc,
        })
    }

    /// The gate's log so far.
    pub fn log(&self) -> String {
        self.proc.full_log()
    }

    /// Stop it with SIGTERM (a clean stop) and start it again on the same state.
    pub fn restart(&mut self) {
        let st = self.proc.term();
        assert!(st.success(), "clawshield exited {st}; log:\n{}", self.log());
        self.proc.restart();
        self.base = self.proc.base.clone();
    }

    /// Any call: `method path` with a bearer token (or none) and a body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Body<'_>,
    ) -> Reply {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.client.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb = match body {
            Body::None => rb,
            Body::Json(v) => rb
                .header("content-type", "application/json")
                .body(serde_json::to_vec(v).expect("serialise")),
            Body::Raw(ct, bytes) => {
                let rb = match ct {
                    Some(ct) => rb.header("content-type", ct),
                    None => rb,
                };
                rb.body(bytes)
            }
        };
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, who: &Who, path: &str) -> Reply {
        self.call("GET", path, Some(&who.token), Body::None).await
    }

    pub async fn get_open(&self, path: &str) -> Reply {
        self.call("GET", path, None, Body::None).await
    }

    pub async fn post(&self, who: &Who, path: &str, body: &Value) -> Reply {
        self.call("POST", path, Some(&who.token), Body::Json(body))
            .await
    }

    /// `POST /v1/proposals`.
    pub async fn propose(&self, who: &Who, body: &Value) -> Reply {
        self.post(who, "/v1/proposals", body).await
    }

    /// `POST /v1/proposals` of `{"action", "payload", "nonce"}`.
    pub async fn propose3(&self, who: &Who, action: &str, payload: Value, nonce: &str) -> Reply {
        self.propose(
            who,
            &json!({"action": action, "payload": payload, "nonce": nonce}),
        )
        .await
    }

    /// `GET /v1/proposals/{id}` as `who`, expecting 200.
    pub async fn proposal(&self, who: &Who, id: &str) -> Value {
        let r = self.get(who, &format!("/v1/proposals/{id}")).await;
        assert_eq!(r.status, 200, "GET proposal {id}: {r:?}");
        r.body
    }

    /// A vote signed with the approver's key over SPEC §4's vote message for `request_hash`.
    pub async fn vote(&self, who: &Who, proposal: &Value, vote: &str, reason: &str) -> Reply {
        let rh = proposal["request_hash"].as_str().expect("request_hash");
        let sig = sign_vote(who, vote, rh);
        self.vote_body(
            who,
            proposal,
            &json!({"vote": vote, "reason": reason, "signature": sig}),
        )
        .await
    }

    pub async fn vote_body(&self, who: &Who, proposal: &Value, body: &Value) -> Reply {
        let id = proposal["proposal_id"].as_str().expect("proposal_id");
        self.post(who, &format!("/v1/proposals/{id}/votes"), body)
            .await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Value {
        let r = self.get_open("/health").await;
        assert_eq!(r.status, 200, "GET /health: {r:?}");
        r.body
    }

    /// The decision log's size as the gate has committed it (`/health`'s `log.size`).
    pub async fn log_size(&self) -> u64 {
        self.health().await["log"]["size"]
            .as_u64()
            .expect("log.size")
    }

    /// Every decision log entry so far (`/log/entries`), decoded.
    pub async fn log_entries(&self) -> Vec<Value> {
        let size = self.log_size().await;
        self.log_entries_to(size).await
    }

    /// The first `size` decision log entries, decoded (another replica's appends included).
    pub async fn log_entries_to(&self, size: u64) -> Vec<Value> {
        if size == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut start = 0;
        while start < size {
            let r = self
                .get_open(&format!("/log/entries?start={start}&end={size}"))
                .await;
            assert_eq!(r.status, 200, "GET /log/entries: {r:?}");
            let page = r.body.as_array().expect("an array of leaves").clone();
            assert!(!page.is_empty(), "an empty page of entries");
            for leaf in page {
                let bytes = B64.decode(leaf.as_str().expect("base64")).expect("base64");
                out.push(serde_json::from_slice(&bytes).expect("a JSON leaf"));
                start += 1;
            }
        }
        out
    }

    /// The gate's approval key (the first of `/keys`).
    pub async fn approval_key(&self) -> VerifyingKey {
        let r = self.get_open("/keys").await;
        assert_eq!(r.status, 200, "GET /keys: {r:?}");
        let k = &r.body["approval_keys"][0];
        let pk = keys::parse_verifying_key(k["public_key"].as_str().expect("public_key"))
            .expect("a public key");
        assert_eq!(k["key_id"], keys::key_id(&pk), "key_id of /keys");
        pk
    }

    /// Poll `GET /v1/proposals/{id}` until `pred` holds.
    pub async fn wait_proposal(
        &self,
        who: &Who,
        id: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(within, what, || async {
            let p = self.proposal(who, id).await;
            pred(&p).then_some(p)
        })
        .await
    }
}

/// An approver's vote signature: Ed25519 over `clawshield-vote-v1:` ‖ JCS({"decision",
/// "request_hash", "approver"}).
pub fn sign_vote(who: &Who, vote: &str, request_hash: &str) -> String {
    let msg = openexec_core::artifact::vote_message_for(vote, request_hash, &who.id);
    keys::sign_b64(who.key.as_ref().expect("an approver with a key"), &msg)
}

/// Check a v1 artifact's signature offline: Ed25519 with `pk` over `openexec-approval-v1:` ‖
/// JCS(artifact without `signature`), and its key_id.
pub fn check_artifact_signature(art: &Value, pk: &VerifyingKey) {
    let mut unsigned = art.as_object().expect("an artifact object").clone();
    let sig = unsigned
        .remove("signature")
        .and_then(|s| s.as_str().map(str::to_string))
        .expect("signature");
    assert_eq!(art["key_id"], keys::key_id(pk), "artifact key_id");
    let mut msg = b"openexec-approval-v1:".to_vec();
    msg.extend_from_slice(&openexec_core::json::canonicalize(&Value::Object(unsigned)));
    assert!(
        keys::verify_b64(pk, &msg, &sig),
        "the artifact's signature does not verify: {art}"
    );
}

/// The fields of a decision log entry (SPEC §9).
pub const ENTRY_FIELDS: [&str; 18] = [
    "v",
    "decision_id",
    "kind",
    "proposal_id",
    "tenant_id",
    "agent_id",
    "action",
    "intent_hash",
    "request_hash",
    "nonce",
    "effect",
    "code",
    "rules",
    "policy_hash",
    "approval_id",
    "voter",
    "vote",
    "logged_at",
];

/// `needs.approvals`, `needs.denials` and the number of votes of a proposal.
pub fn counts(p: &Value) -> (u64, u64, usize) {
    (
        p["needs"]["approvals"].as_u64().unwrap_or(0),
        p["needs"]["denials"].as_u64().unwrap_or(0),
        p["votes"].as_array().map_or(0, Vec::len),
    )
}
