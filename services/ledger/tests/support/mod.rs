//! Shared by the ledger's integration tests (databases of both backends come from
//! `openexec-testkit`): a fake log served over HTTP in-process
//! (a real RFC 6962 tree with signed checkpoints, whose entries can be withheld or altered), and
//! ClawLedger's HTTP API served in-process over a store.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use openexec_ledger::store::{parse_db_url, DbConfig};
use openexec_ledger::{Store, Watch, Witness};
use openexec_log::note::{self, Checkpoint, Cosigner, CosignerVerifier, Signer, Verifier};
use openexec_log::{leaf_hash, plan_consistency, verify_inclusion, Frontier, Hash, NodeId};
use serde_json::{json, Value};

pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
pub const ORIGIN: &str = "example.com/fake-log";
pub const WITNESS: &str = "clawledger/test";

pub async fn open(url: &str) -> Arc<Store> {
    let cfg = DbConfig::new(parse_db_url(url).unwrap());
    Arc::new(Store::open(&cfg).await.unwrap())
}

pub fn cosigner() -> Cosigner {
    Cosigner::new(WITNESS, openexec_core::keys::signing_key_from_seed([7; 32])).unwrap()
}

pub fn witness(log: &FakeLog, store: Arc<Store>, chunk: u64) -> Witness {
    Witness::new(
        Watch::parse(&format!("{}={}", log.url, log.verifier_key)).unwrap(),
        cosigner(),
        store,
        reqwest::Client::new(),
        Duration::from_millis(50),
        chunk,
    )
}

/// The data of entry `i` of the fake log.
pub fn entry(i: u64) -> Vec<u8> {
    format!("{{\"entry\":{i}}}").into_bytes()
}

struct Inner {
    leaves: Vec<Vec<u8>>,
    nodes: HashMap<NodeId, Hash>,
    frontier: Frontier,
    /// The size of the checkpoint served (0: none, 404).
    published: u64,
    /// Most entries per GET /log/entries answer.
    page: u64,
    /// Entries from this index on answer 503.
    fail_from: Option<u64>,
    /// Entries served with other data than the tree holds.
    tampered: HashMap<u64, Vec<u8>>,
    /// Every GET /log/entries range asked for.
    requests: Vec<(u64, u64)>,
    /// Every body POSTed to /log/cosignatures.
    posted: Vec<String>,
}

/// A log over HTTP (checkpoint, entries, consistency proofs, cosignatures) whose tree is real.
#[derive(Clone)]
pub struct FakeLog {
    pub url: String,
    pub verifier_key: String,
    signer: Arc<Signer>,
    inner: Arc<Mutex<Inner>>,
}

type Q = Query<HashMap<String, String>>;

fn num(q: &HashMap<String, String>, k: &str) -> Option<u64> {
    q.get(k)?.parse().ok()
}

async fn get_checkpoint(State(f): State<FakeLog>) -> (StatusCode, String) {
    let size = f.inner.lock().unwrap().published;
    if size == 0 {
        return (StatusCode::NOT_FOUND, String::new());
    }
    (StatusCode::OK, f.checkpoint(size))
}

async fn get_entries(State(f): State<FakeLog>, Query(q): Q) -> (StatusCode, String) {
    let (Some(start), Some(end)) = (num(&q, "start"), num(&q, "end")) else {
        return (StatusCode::BAD_REQUEST, String::new());
    };
    let mut g = f.inner.lock().unwrap();
    g.requests.push((start, end));
    if start >= end || end > g.published {
        return (StatusCode::BAD_REQUEST, String::new());
    }
    let mut end = end.min(start + g.page);
    if let Some(n) = g.fail_from {
        if start >= n {
            return (StatusCode::SERVICE_UNAVAILABLE, "down".into());
        }
        end = end.min(n);
    }
    let items: Vec<String> = (start..end)
        .map(|i| {
            let data = g
                .tampered
                .get(&i)
                .cloned()
                .unwrap_or_else(|| g.leaves[i as usize].clone());
            B64.encode(data)
        })
        .collect();
    (StatusCode::OK, json!(items).to_string())
}

async fn get_consistency(State(f): State<FakeLog>, Query(q): Q) -> (StatusCode, String) {
    let (Some(first), Some(second)) = (num(&q, "first"), num(&q, "second")) else {
        return (StatusCode::BAD_REQUEST, String::new());
    };
    let g = f.inner.lock().unwrap();
    let Ok(plan) = plan_consistency(first, second) else {
        return (StatusCode::BAD_REQUEST, String::new());
    };
    let hashes = plan.assemble_from_map(&g.nodes).unwrap();
    let hashes: Vec<String> = hashes.iter().map(|h| B64.encode(h)).collect();
    (StatusCode::OK, json!({ "hashes": hashes }).to_string())
}

async fn post_cosignature(State(f): State<FakeLog>, body: String) -> StatusCode {
    f.inner.lock().unwrap().posted.push(body);
    StatusCode::OK
}

impl FakeLog {
    pub async fn start() -> FakeLog {
        let signer =
            Signer::new(ORIGIN, openexec_core::keys::signing_key_from_seed([3; 32])).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let log = FakeLog {
            url: format!("http://{}", listener.local_addr().unwrap()),
            verifier_key: signer.verifier_key(),
            signer: Arc::new(signer),
            inner: Arc::new(Mutex::new(Inner {
                leaves: Vec::new(),
                nodes: HashMap::new(),
                frontier: Frontier::empty(),
                published: 0,
                page: 1000,
                fail_from: None,
                tampered: HashMap::new(),
                requests: Vec::new(),
                posted: Vec::new(),
            })),
        };
        let app = axum::Router::new()
            .route("/log/checkpoint", axum::routing::get(get_checkpoint))
            .route("/log/entries", axum::routing::get(get_entries))
            .route(
                "/log/proof/consistency",
                axum::routing::get(get_consistency),
            )
            .route("/log/cosignatures", axum::routing::post(post_cosignature))
            .with_state(log.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        log
    }

    pub fn verifier(&self) -> Verifier {
        note::parse_verifier_key(&self.verifier_key).unwrap()
    }

    /// Grow the tree to `size` entries ([`entry`]) and serve a checkpoint of that size.
    pub fn grow_to(&self, size: u64) {
        let mut g = self.inner.lock().unwrap();
        while (g.leaves.len() as u64) < size {
            let data = entry(g.leaves.len() as u64);
            let created = g.frontier.append(leaf_hash(&data)).unwrap();
            g.nodes.extend(created);
            g.leaves.push(data);
        }
        g.published = size;
    }

    pub fn root(&self, size: u64) -> Hash {
        let g = self.inner.lock().unwrap();
        let mut f = Frontier::empty();
        for d in &g.leaves[..size as usize] {
            f.append(leaf_hash(d)).unwrap();
        }
        f.root()
    }

    pub fn body(&self, size: u64) -> String {
        Checkpoint::new(ORIGIN, size, self.root(size))
            .unwrap()
            .body()
    }

    pub fn checkpoint(&self, size: u64) -> String {
        note::sign_note(&self.body(size), &[&*self.signer]).unwrap()
    }

    pub fn set_page(&self, page: u64) {
        self.inner.lock().unwrap().page = page;
    }

    pub fn fail_from(&self, index: Option<u64>) {
        self.inner.lock().unwrap().fail_from = index;
    }

    pub fn tamper(&self, index: u64, data: Option<&[u8]>) {
        let mut g = self.inner.lock().unwrap();
        match data {
            Some(d) => g.tampered.insert(index, d.to_vec()),
            None => g.tampered.remove(&index),
        };
    }

    /// The entry ranges asked for since the last call.
    pub fn take_requests(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.inner.lock().unwrap().requests)
    }

    pub fn posted(&self) -> Vec<String> {
        self.inner.lock().unwrap().posted.clone()
    }

    /// Whether a cosignature of the checkpoint of `size` by our witness was delivered.
    pub fn cosigned(&self, size: u64) -> bool {
        let body = self.body(size);
        let w = cosigner().verifier();
        self.posted()
            .iter()
            .flat_map(|b| b.lines().map(str::to_string).collect::<Vec<_>>())
            .any(|l| note::verify_cosignature(&l, &body, &w).is_ok())
    }
}

/// ClawLedger's HTTP API over `store`, served in-process; its base URL.
pub async fn serve_api(store: Arc<Store>) -> String {
    let c = cosigner();
    let app = openexec_ledger::http::router(openexec_ledger::http::AppState {
        store,
        name: c.name().to_string(),
        verifier_key: c.verifier_key(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

pub async fn get(base: &str, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let st = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        st,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Check a `GET /evidence` answer: entry `index` is `entry(index)`, included in a checkpoint of
/// `size` the log signed and our witness cosigned.
pub fn check_evidence(ev: &Value, log: &Verifier, index: u64, size: u64) {
    let data = B64.decode(ev["entry"].as_str().unwrap()).unwrap();
    assert_eq!(data, entry(index), "{ev}");
    assert_eq!(ev["leaf_index"], index, "{ev}");
    assert_eq!(ev["tree_size"], size, "{ev}");
    let opened = note::open_note(ev["checkpoint"].as_str().unwrap(), log).unwrap();
    let w: CosignerVerifier = cosigner().verifier();
    assert_eq!(note::count_cosignatures(&opened, &[w]), 1, "{ev}");
    let cp = Checkpoint::parse_body(&opened.body).unwrap();
    assert_eq!(cp.size, size);
    let hashes: Vec<Hash> = ev["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    verify_inclusion(&leaf_hash(&data), index, size, &hashes, &cp.root).unwrap();
}
