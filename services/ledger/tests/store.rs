//! The store's behaviour, the same on SQLite and on PostgreSQL: verified state and pending
//! catch-up progress are kept apart, a step is recorded only when its progress covers it, a
//! discarded catch-up takes exactly its own entries and nodes, alerts are deduplicated.

mod support;

use openexec_ledger::store::{Advance, Chunk, LogState};
use openexec_log::{leaf_hash, plan_inclusion, verify_inclusion, Frontier, Hash, NodeId};
use openexec_testkit::{both_backends, Db};
use support::*;

/// Append entries [from, to) to `f`: their data and the nodes they complete.
fn append(f: &mut Frontier, from: u64, to: u64) -> (Vec<Vec<u8>>, Vec<(NodeId, Hash)>) {
    let mut entries = Vec::new();
    let mut nodes = Vec::new();
    for i in from..to {
        let d = entry(i);
        nodes.extend(f.append(leaf_hash(&d)).unwrap());
        entries.push(d);
    }
    (entries, nodes)
}

fn chunk<'a>(
    origin: &'a str,
    target: &'a Hash,
    first: u64,
    entries: &'a [Vec<u8>],
    nodes: &'a [(NodeId, Hash)],
    frontier: &'a Frontier,
    base: u64,
) -> Chunk<'a> {
    Chunk {
        origin,
        base_size: base,
        first_index: first,
        entries,
        nodes,
        frontier,
        target_size: 10,
        target_root: target,
    }
}

fn step<'a>(origin: &'a str, state: &'a LogState, base: u64) -> Advance<'a> {
    Advance {
        origin,
        base_size: base,
        state,
        note: "note",
        line: "line",
    }
}

async fn verified_and_pending_are_kept_apart(db: Db) {
    let url = &db.url();
    let store = open(url).await;
    let o = "example.com/store-test";
    assert!(store.state(o).await.unwrap().is_none());
    assert!(store.catchup(o).await.unwrap().is_none());
    assert!(store.alerts().await.unwrap().is_empty());
    store.check().await.unwrap();

    let target = [9u8; 32];
    let chunk = |first, entries, nodes, f, base| chunk(o, &target, first, entries, nodes, f, base);
    let mut f = Frontier::empty();
    let (e1, n1) = append(&mut f, 0, 6);
    let f6 = f.clone();
    // A first chunk must start at the verified size (0).
    let err = store
        .store_chunk(chunk(1, &e1[1..], &n1, &f6, 0))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("ends at 0"), "{err:#}");
    store.store_chunk(chunk(0, &e1, &n1, &f6, 0)).await.unwrap();
    let (e2, n2) = append(&mut f, 6, 10);
    // A gap, or a frontier that does not match, is refused.
    let mut g = f6.clone();
    let (e3, n3) = append(&mut g, 7, 10);
    assert!(store.store_chunk(chunk(7, &e3, &n3, &g, 0)).await.is_err());
    assert!(store.store_chunk(chunk(6, &e2, &n2, &f6, 0)).await.is_err());
    store.store_chunk(chunk(6, &e2, &n2, &f, 0)).await.unwrap();
    let c = store.catchup(o).await.unwrap().unwrap();
    assert_eq!((c.base_size, c.frontier.clone()), (0, f.clone()));
    assert_eq!((c.target_size, c.target_root), (10, target));

    // A step is recorded only when the stored progress covers it exactly.
    let state = |f: &Frontier| LogState {
        size: f.size(),
        root: f.root(),
        frontier: f.clone(),
    };
    let s6 = state(&f6);
    let step = |s, base| step(o, s, base);
    assert!(store.advance(step(&s6, 0)).await.is_err());
    let s10 = state(&f);
    assert!(store.advance(step(&s10, 3)).await.is_err());
    assert!(store.state(o).await.unwrap().is_none());
    store.advance(step(&s10, 0)).await.unwrap();
    let got = store.state(o).await.unwrap().unwrap();
    assert_eq!(
        (got.size, got.root, got.frontier),
        (10, f.root(), f.clone())
    );
    assert!(store.catchup(o).await.unwrap().is_none());
    let cs = store.latest_cosigned(o).await.unwrap().unwrap();
    assert_eq!(
        (cs.size, cs.note.as_str(), cs.line.as_str()),
        (10, "note", "line")
    );

    // The stored nodes prove inclusion at the verified size.
    for i in 0..10 {
        let plan = plan_inclusion(i, 10).unwrap();
        let nodes = store.nodes(o, &plan.nodes()).await.unwrap();
        let proof = plan.assemble_from_map(&nodes).unwrap();
        verify_inclusion(&leaf_hash(&entry(i)), i, 10, &proof, &f.root()).unwrap();
    }

    // Pending progress beyond 10, then discarded: exactly its entries and nodes go.
    let mut p = f.clone();
    let (e4, n4) = append(&mut p, 10, 13);
    assert!(n4
        .iter()
        .any(|(id, _)| *id == NodeId { level: 2, index: 2 }));
    // A chunk from a base that is not the verified size is refused.
    assert!(store.store_chunk(chunk(10, &e4, &n4, &p, 0)).await.is_err());
    store
        .store_chunk(chunk(10, &e4, &n4, &p, 10))
        .await
        .unwrap();
    assert_eq!(store.leaf(o, 12).await.unwrap(), Some(entry(12)));
    assert_eq!(store.discard_catchup(o).await.unwrap(), 3);
    assert!(store.catchup(o).await.unwrap().is_none());
    assert_eq!(store.leaf(o, 12).await.unwrap(), None);
    assert_eq!(store.leaf(o, 10).await.unwrap(), None);
    assert_eq!(store.leaf(o, 9).await.unwrap(), Some(entry(9)));
    let gone = [
        NodeId::leaf(10),
        NodeId { level: 1, index: 5 }, // [10, 12)
        NodeId { level: 2, index: 2 }, // [8, 12)
    ];
    assert!(store.nodes(o, &gone).await.unwrap().is_empty());
    let kept = [
        NodeId::leaf(9),
        NodeId { level: 1, index: 4 }, // [8, 10)
        NodeId { level: 3, index: 0 }, // [0, 8)
    ];
    assert_eq!(store.nodes(o, &kept).await.unwrap().len(), 3);
    assert_eq!(store.state(o).await.unwrap().unwrap().size, 10);
    // Discarding with nothing pending is harmless.
    assert_eq!(store.discard_catchup(o).await.unwrap(), 0);

    // Alerts: the same (kind, size, root) twice in a row is recorded once.
    assert!(store
        .add_alert(o, "fork", "d1", Some(5), Some("r"))
        .await
        .unwrap());
    assert!(!store
        .add_alert(o, "fork", "d2", Some(5), Some("r"))
        .await
        .unwrap());
    assert!(store
        .add_alert(o, "fork", "d3", Some(6), Some("r"))
        .await
        .unwrap());
    assert!(store
        .add_alert(o, "shrink", "d4", None, None)
        .await
        .unwrap());
    assert!(!store
        .add_alert(o, "shrink", "d5", None, None)
        .await
        .unwrap());
    assert!(store
        .add_alert("other", "shrink", "d6", None, None)
        .await
        .unwrap());
    let a = store.alerts().await.unwrap();
    let seen: Vec<(&str, &str, &str)> = a
        .iter()
        .map(|x| (x.origin.as_str(), x.kind.as_str(), x.detail.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (o, "fork", "d1"),
            (o, "fork", "d3"),
            (o, "shrink", "d4"),
            ("other", "shrink", "d6")
        ]
    );
    assert!(a.windows(2).all(|w| w[0].id < w[1].id), "{a:?}");

    // Everything survives a reopen.
    store.close().await;
    let store = open(url).await;
    assert_eq!(store.state(o).await.unwrap().unwrap().frontier, f);
    assert_eq!(store.alerts().await.unwrap().len(), 4);
    store.close().await;
}
both_backends!(verified_and_pending_are_kept_apart);
