//! `LogService` over an in-memory `LogStore` that keeps the trait's contract: signing never
//! contradicts an earlier checkpoint, proofs verify (also from the upper-level cache), entries are
//! paged, and only configured witnesses' cosignatures are taken.

use std::collections::HashMap;
use std::sync::Mutex;

use ed25519_dalek::SigningKey;
use futures_executor::block_on;
use openexec_log::note::{self, Cosigner};
use openexec_log::*;

#[derive(Default)]
struct Mem {
    inner: Mutex<MemInner>,
    problem: Option<String>,
}

#[derive(Default)]
struct MemInner {
    tree: Option<Frontier>,
    leaves: Vec<Vec<u8>>,
    nodes: HashMap<NodeId, Hash>,
    checkpoints: Vec<StoredCheckpoint>,
    /// (size, witness) → (timestamp, line).
    cosignatures: HashMap<(u64, String), (u64, String)>,
    node_reads: usize,
    /// When set, `head` reports this instead of the truth (a store gone wrong).
    fake_head: Option<(u64, Hash)>,
    /// When set, `known_size` reports this (a process that has not seen others' appends).
    known: Option<u64>,
    head_reads: usize,
}

impl Mem {
    fn append(&self, data: &[u8]) {
        let mut m = self.inner.lock().unwrap();
        let tree = m.tree.get_or_insert_with(Frontier::empty);
        let nodes = tree.append(leaf_hash(data)).unwrap();
        m.nodes.extend(nodes);
        m.leaves.push(data.to_vec());
    }
}

impl LogStore for Mem {
    type Error = String;

    async fn head(&self) -> Result<(u64, Hash), String> {
        let mut m = self.inner.lock().unwrap();
        m.head_reads += 1;
        if let Some(h) = m.fake_head {
            return Ok(h);
        }
        let t = m.tree.clone().unwrap_or_else(Frontier::empty);
        Ok((t.size(), t.root()))
    }

    fn known_size(&self) -> u64 {
        let m = self.inner.lock().unwrap();
        m.known
            .unwrap_or_else(|| m.tree.as_ref().map(Frontier::size).unwrap_or(0))
    }

    fn problem(&self) -> Option<String> {
        self.problem.clone()
    }

    async fn nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, String> {
        let mut m = self.inner.lock().unwrap();
        m.node_reads += ids.len();
        Ok(ids
            .iter()
            .filter_map(|id| m.nodes.get(id).map(|h| (*id, *h)))
            .collect())
    }

    async fn leaves(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, String> {
        let m = self.inner.lock().unwrap();
        Ok(m.leaves[start as usize..end as usize].to_vec())
    }

    async fn latest_checkpoint(&self) -> Result<Option<(StoredCheckpoint, Vec<String>)>, String> {
        let m = self.inner.lock().unwrap();
        Ok(m.checkpoints.last().map(|c| {
            let lines = m
                .cosignatures
                .iter()
                .filter(|((s, _), _)| *s == c.size)
                .map(|(_, (_, l))| l.clone())
                .collect();
            (c.clone(), lines)
        }))
    }

    async fn add_checkpoint(&self, cp: &StoredCheckpoint) -> Result<(), String> {
        let mut m = self.inner.lock().unwrap();
        if let Some(last) = m.checkpoints.last() {
            if cp.size < last.size || (cp.size == last.size && cp.root != last.root) {
                return Err(format!("refused: size {} after {}", cp.size, last.size));
            }
            if cp.size == last.size {
                return Ok(());
            }
        }
        m.checkpoints.push(cp.clone());
        Ok(())
    }

    async fn add_cosignature(
        &self,
        size: u64,
        witness: &str,
        timestamp: u64,
        line: &str,
    ) -> Result<bool, String> {
        let mut m = self.inner.lock().unwrap();
        let held = m.cosignatures.entry((size, witness.to_string()));
        match held {
            std::collections::hash_map::Entry::Occupied(mut e) if e.get().0 < timestamp => {
                e.insert((timestamp, line.to_string()));
                Ok(true)
            }
            std::collections::hash_map::Entry::Occupied(_) => Ok(false),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((timestamp, line.to_string()));
                Ok(true)
            }
        }
    }
}

fn key(b: u8) -> SigningKey {
    SigningKey::from_bytes(&[b; 32])
}

fn service(witnesses: Vec<note::CosignerVerifier>) -> LogService {
    LogService::new("example.com/test-log", key(1), witnesses).unwrap()
}

fn filled(n: u64) -> Mem {
    let m = Mem::default();
    for i in 0..n {
        m.append(format!("entry {i}").as_bytes());
    }
    m
}

#[test]
fn signs_only_when_the_head_moved_and_the_note_opens() {
    let store = filled(0);
    let log = service(vec![]);
    assert_eq!(
        block_on(log.sign_head(&store)).unwrap(),
        None,
        "nothing to sign"
    );
    store.append(b"a");
    store.append(b"b");
    assert_eq!(block_on(log.sign_head(&store)).unwrap(), Some(2));
    assert_eq!(block_on(log.sign_head(&store)).unwrap(), None, "same head");
    let text = log.checkpoint_text().unwrap();
    let opened = note::open_note(&text, &log.verifier()).unwrap();
    let cp = note::Checkpoint::parse_body(&opened.body).unwrap();
    assert_eq!((cp.size, cp.origin.as_str()), (2, "example.com/test-log"));
    assert_eq!(cp.root, block_on(store.head()).unwrap().1);
}

#[test]
fn never_signs_a_smaller_size_or_another_root_at_the_same_size() {
    let store = filled(5);
    let log = service(vec![]);
    block_on(log.sign_head(&store)).unwrap();
    store.inner.lock().unwrap().fake_head = Some((4, [7; 32]));
    let e = block_on(log.sign_head(&store)).unwrap_err();
    assert!(
        matches!(e, ServiceError::Refused(ref m) if m.contains("size 4 after a checkpoint of size 5")),
        "{e}"
    );
    store.inner.lock().unwrap().fake_head = Some((5, [7; 32]));
    let e = block_on(log.sign_head(&store)).unwrap_err();
    assert!(matches!(e, ServiceError::Refused(_)), "{e}");
    assert_eq!(store.inner.lock().unwrap().checkpoints.len(), 1);

    // A second service over the same store (another replica) that has not loaded the latest
    // checkpoint is stopped by the store's own check.
    let other = service(vec![]);
    store.inner.lock().unwrap().fake_head = Some((3, [9; 32]));
    let e = block_on(other.sign_head(&store)).unwrap_err();
    assert!(
        matches!(e, ServiceError::Store(ref m) if m.contains("refused")),
        "{e}"
    );
}

#[test]
fn a_store_with_a_problem_signs_nothing() {
    let store = Mem {
        problem: Some("entry 3 was changed".into()),
        ..filled(5)
    };
    let e = block_on(service(vec![]).sign_head(&store)).unwrap_err();
    assert!(e.to_string().contains("entry 3 was changed"), "{e}");
    assert!(store.inner.lock().unwrap().checkpoints.is_empty());
}

#[test]
fn proofs_verify_for_every_index_and_the_cache_saves_reads() {
    let store = filled(1000);
    let log = service(vec![]);
    block_on(log.sign_head(&store)).unwrap();
    let (size, root) = block_on(store.head()).unwrap();
    for i in (0..size).step_by(7) {
        let inc = block_on(log.inclusion(&store, i)).unwrap().unwrap();
        assert_eq!((inc.leaf_index, inc.tree_size), (i, size));
        let leaf = leaf_hash(format!("entry {i}").as_bytes());
        verify_inclusion(&leaf, i, size, &inc.hashes, &root).unwrap();
        let p = block_on(log.proof_inclusion(&store, i, size)).unwrap();
        assert_eq!(p, inc.hashes);
    }
    // The upper levels now come from the cache: a proof reads only its lower nodes.
    let before = store.inner.lock().unwrap().node_reads;
    block_on(log.proof_inclusion(&store, 500, size)).unwrap();
    let read = store.inner.lock().unwrap().node_reads - before;
    let all = plan_inclusion(500, size).unwrap().nodes().len();
    assert!(read < all, "read {read} of {all} nodes");

    // Consistency from every earlier size, checked against roots recomputed independently.
    let small = filled(0);
    let mut roots = vec![EMPTY_ROOT];
    for i in 0..size {
        small.append(format!("entry {i}").as_bytes());
        roots.push(block_on(small.head()).unwrap().1);
    }
    for first in 1..size {
        let p = block_on(log.proof_consistency(&store, first, size)).unwrap();
        verify_consistency(first, size, &roots[first as usize], &root, &p).unwrap();
    }
}

#[test]
fn out_of_range_requests_are_bad_requests() {
    let store = filled(10);
    let log = service(vec![]);
    for (i, s) in [(0, 0), (10, 10), (0, 11), (5, 3)] {
        let e = block_on(log.proof_inclusion(&store, i, s)).unwrap_err();
        assert!(matches!(e, ServiceError::BadRequest(_)), "{i},{s}: {e}");
    }
    for (a, b) in [(5, 4), (1, 11)] {
        let e = block_on(log.proof_consistency(&store, a, b)).unwrap_err();
        assert!(matches!(e, ServiceError::BadRequest(_)), "{a},{b}: {e}");
    }
    assert!(block_on(log.proof_consistency(&store, 0, 10))
        .unwrap()
        .is_empty());
    let e = block_on(log.entries(&store, 10, 12)).unwrap_err();
    assert!(matches!(e, ServiceError::BadRequest(_)), "{e}");
    let got = block_on(log.entries(&store, 8, 100)).unwrap();
    assert_eq!(got, vec![b"entry 8".to_vec(), b"entry 9".to_vec()]);
    assert_eq!(
        block_on(log.inclusion(&store, 0)).unwrap(),
        None,
        "no checkpoint yet"
    );
}

#[test]
fn entries_are_paged() {
    let store = filled(2500);
    let got = block_on(service(vec![]).entries(&store, 100, 5000)).unwrap();
    assert_eq!(got.len() as u64, service::MAX_ENTRIES);
    assert_eq!(got[0], b"entry 100".to_vec());
}

#[test]
fn only_configured_witnesses_cosign_the_latest_checkpoint() {
    let w1 = Cosigner::new("witness.example/one", key(2)).unwrap();
    let stranger = Cosigner::new("witness.example/two", key(3)).unwrap();
    let store = filled(3);
    let log = service(vec![w1.verifier()]);
    assert!(matches!(
        block_on(log.add_cosignatures(&store, "x")),
        Err(ServiceError::NoCheckpoint)
    ));
    block_on(log.sign_head(&store)).unwrap();
    let body = note::open_note(log.checkpoint_text().unwrap(), &log.verifier())
        .unwrap()
        .body;
    let good = w1.cosign(&body, 1_700_000_000).unwrap();
    let bad = stranger.cosign(&body, 1_700_000_000).unwrap();
    let e = block_on(log.add_cosignatures(&store, &bad)).unwrap_err();
    assert!(matches!(e, ServiceError::CosignatureRejected(_)), "{e}");
    assert_eq!(block_on(log.add_cosignatures(&store, &good)).unwrap(), 1);
    let text = log.checkpoint_text().unwrap();
    let opened = note::open_note(&text, &log.verifier()).unwrap();
    assert_eq!(note::count_cosignatures(&opened, &[w1.verifier()]), 1);

    // Another replica loading from the store sees the cosignature too.
    let replica = service(vec![w1.verifier()]);
    block_on(replica.load(&store)).unwrap();
    assert_eq!(replica.checkpoint_text().unwrap(), text);
}

#[test]
fn cosignature_requests_are_capped_checked_whole_and_keep_the_newest_line_per_witness() {
    let w1 = Cosigner::new("witness.example/one", key(2)).unwrap();
    let w2 = Cosigner::new("witness.example/two", key(4)).unwrap();
    let stranger = Cosigner::new("witness.example/two", key(3)).unwrap();
    let store = filled(3);
    let log = service(vec![w1.verifier(), w2.verifier()]);
    assert_eq!(log.max_cosignature_lines(), 2);
    block_on(log.sign_head(&store)).unwrap();
    let body = note::open_note(log.checkpoint_text().unwrap(), &log.verifier())
        .unwrap()
        .body;
    let served = |log: &LogService| -> Vec<String> {
        let text = log.checkpoint_text().unwrap();
        text.lines().skip(5).map(str::to_string).collect()
    };
    let (old, new, newer) = (
        w1.cosign(&body, 10).unwrap(),
        w1.cosign(&body, 20).unwrap(),
        w1.cosign(&body, 30).unwrap(),
    );
    // More lines than witnesses: refused before any is checked, nothing stored.
    let e = block_on(log.add_cosignatures(&store, &format!("{new}\n").repeat(448))).unwrap_err();
    assert!(
        matches!(e, ServiceError::TooManyCosignatures { lines: 448, max: 2 }),
        "{e}"
    );
    assert!(served(&log).is_empty());
    // A bad line anywhere: none stored.
    let e = block_on(log.add_cosignatures(
        &store,
        &format!(
            "{}\n{}",
            w2.cosign(&body, 5).unwrap(),
            stranger.cosign(&body, 5).unwrap()
        ),
    ))
    .unwrap_err();
    assert!(matches!(e, ServiceError::CosignatureRejected(_)), "{e}");
    assert!(served(&log).is_empty());
    assert!(block_on(store.latest_checkpoint())
        .unwrap()
        .unwrap()
        .1
        .is_empty());
    // The same line twice: stored once. Of one witness's lines in a request, the newest.
    assert_eq!(
        block_on(log.add_cosignatures(&store, &format!("{new}\n{new}"))).unwrap(),
        1
    );
    assert_eq!(served(&log), [new.as_str()]);
    assert_eq!(
        block_on(log.add_cosignatures(&store, &format!("{old}\n{new}"))).unwrap(),
        0
    );
    assert_eq!(block_on(log.add_cosignatures(&store, &old)).unwrap(), 0);
    assert_eq!(served(&log), [new.as_str()]);
    assert_eq!(
        block_on(store.latest_checkpoint()).unwrap().unwrap().1,
        [new.as_str()]
    );
    assert_eq!(
        block_on(log.add_cosignatures(&store, &format!("{newer}\n{old}"))).unwrap(),
        1
    );
    assert_eq!(served(&log), [newer.as_str()]);
    // A replica that stored an older line than the store holds keeps serving the newest after
    // it loads, and never overwrites the stored one.
    let replica = service(vec![w1.verifier(), w2.verifier()]);
    block_on(replica.load(&store)).unwrap();
    assert_eq!(block_on(replica.add_cosignatures(&store, &new)).unwrap(), 0);
    assert_eq!(served(&replica), [newer.as_str()]);
    assert_eq!(
        block_on(store.latest_checkpoint()).unwrap().unwrap().1,
        [newer]
    );
}

#[test]
fn requests_within_the_known_size_ask_no_head_and_beyond_it_ask_the_store() {
    let store = filled(100);
    let log = service(vec![]);
    let reads = |s: &Mem| s.inner.lock().unwrap().head_reads;
    block_on(log.proof_inclusion(&store, 3, 100)).unwrap();
    block_on(log.proof_consistency(&store, 10, 100)).unwrap();
    block_on(log.entries(&store, 0, 50)).unwrap();
    assert_eq!(reads(&store), 0, "within the known size: no head read");

    // Another writer appended: this process only knows 40 entries, the store holds 100.
    store.inner.lock().unwrap().known = Some(40);
    let (_, root) = block_on(store.head()).unwrap();
    let p = block_on(log.proof_inclusion(&store, 70, 100)).unwrap();
    verify_inclusion(&leaf_hash(b"entry 70"), 70, 100, &p, &root).unwrap();
    assert_eq!(block_on(log.entries(&store, 30, 60)).unwrap().len(), 30);
    assert!(block_on(log.proof_consistency(&store, 20, 100)).is_ok());
    // Beyond what the store holds: still refused, naming the store's size.
    let e = block_on(log.proof_inclusion(&store, 0, 101)).unwrap_err();
    assert!(
        matches!(e, ServiceError::BadRequest(ref m) if m.contains("<= 100")),
        "{e}"
    );
}
