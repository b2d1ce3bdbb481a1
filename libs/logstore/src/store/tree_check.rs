//! The start-up check both backends run: recompute the tree from the stored records (whatever
//! a service logs, read by its [`LeafSource`]) and compare it with the last signed checkpoint,
//! naming the entry that differs.
//!
//! Trust boundary: the database is not trusted to stay as the log wrote it. Any difference is
//! reported with the first index that differs, and the log then refuses to sign.

use openexec_log::{leaf_hash, Frontier, Hash, NodeId, StoredCheckpoint};

use super::{corrupt, hash_hex, StoreError};

/// Where a log's leaves come from: the service's table of logged records.
#[derive(Clone, Copy, Debug)]
pub struct LeafSource {
    /// Every logged record in log order: its log index (an integer) first, then the text
    /// columns `leaf` reads (e.g. `SELECT log_index, receipt, signature, key_id, created_at
    /// FROM receipts ORDER BY log_index`, the same text on both backends).
    pub query: &'static str,
    /// The leaf data of one record, from its text columns in the query's order.
    pub leaf: fn(&[String]) -> Result<Vec<u8>, String>,
    /// What an entry is called in a problem ("receipt log entry").
    pub entry: &'static str,
    /// What a record is called ("receipt").
    pub record: &'static str,
}

/// The check, fed the stored records in log order by each backend.
pub struct TreeCheck {
    source: LeafSource,
    last: Option<StoredCheckpoint>,
    /// Nodes of leaves at or past this index are collected (to store those a database lacks).
    collect_from: u64,
    pub tree: Frontier,
    leaves: Vec<Hash>,
    pub new_nodes: Vec<(NodeId, Hash)>,
    pub problem: Option<String>,
    root_at_checkpoint: Option<Hash>,
}

impl TreeCheck {
    pub fn new(source: LeafSource, last: Option<StoredCheckpoint>, collect_from: u64) -> TreeCheck {
        TreeCheck {
            source,
            last,
            collect_from,
            tree: Frontier::empty(),
            leaves: Vec::new(),
            new_nodes: Vec::new(),
            problem: None,
            root_at_checkpoint: None,
        }
    }

    /// The next stored record's index and leaf data; `false` once the check has seen enough
    /// (a gap).
    pub fn push(&mut self, idx: i64, data: &[u8]) -> Result<bool, StoreError> {
        if idx < 0 || idx as u64 != self.tree.size() {
            self.problem.get_or_insert(format!(
                "{} {} is missing (found {idx} after {})",
                self.source.entry,
                self.tree.size(),
                self.tree.size() as i64 - 1
            ));
            return Ok(false);
        }
        let leaf = leaf_hash(data);
        if self.last.as_ref().is_some_and(|c| (idx as u64) < c.size) {
            self.leaves.push(leaf);
        }
        let nodes = self.tree.append(leaf).map_err(corrupt)?;
        if (idx as u64) >= self.collect_from {
            self.new_nodes.extend(nodes);
        }
        if let Some(c) = &self.last {
            if self.tree.size() == c.size {
                self.root_at_checkpoint = Some(self.tree.root());
            }
        }
        Ok(true)
    }

    /// The next row of the source's query (either backend).
    pub fn push_row<R: sqlx::Row>(&mut self, r: &R) -> Result<bool, StoreError>
    where
        usize: sqlx::ColumnIndex<R>,
        String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    {
        let idx: i64 = r.try_get(0).map_err(corrupt)?;
        let columns = (1..r.len())
            .map(|i| r.try_get::<String, _>(i).map_err(corrupt))
            .collect::<Result<Vec<_>, _>>()?;
        let data = (self.source.leaf)(&columns)
            .map_err(|e| corrupt(format!("{} {idx}: {e}", self.source.entry)))?;
        self.push(idx, &data)
    }

    /// After the last record: the size of the checkpoint whose root must be explained, if the
    /// recomputed tree does not match it (the caller then reads the stored leaf hashes below
    /// that size and calls [`TreeCheck::explain`]).
    pub fn finish(&mut self) -> Option<u64> {
        let c = self.last.as_ref()?;
        if self.problem.is_none() && self.tree.size() < c.size {
            self.problem = Some(format!(
                "the log holds {} entries but its last checkpoint was signed at {}: entries {}..{} are gone",
                self.tree.size(),
                c.size,
                self.tree.size(),
                c.size
            ));
        }
        (self.problem.is_none() && self.root_at_checkpoint != Some(c.root)).then_some(c.size)
    }

    /// Name the entry whose recomputed leaf hash is not the one stored when it was appended.
    pub fn explain(&mut self, stored_leaves: &[(i64, String)]) {
        let size = self.last.as_ref().map(|c| c.size).unwrap_or(0);
        let differs = stored_leaves
            .iter()
            .find(|(i, h)| self.leaves.get(*i as usize).map(hash_hex).as_deref() != Some(h));
        let (entry, record) = (self.source.entry, self.source.record);
        self.problem = Some(match differs {
            Some((i, _)) => format!(
                "{entry} {i} does not hash to the leaf that was logged: the stored {record} was changed; the root at size {size} no longer matches the signed checkpoint"
            ),
            None => format!(
                "the root recomputed at size {size} does not match the signed checkpoint"
            ),
        });
    }
}

/// What start-up found.
pub struct Opened {
    pub tree: Frontier,
    /// Set when the stored log does not match its last checkpoint: the log must not sign.
    pub problem: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: LeafSource = LeafSource {
        query: "",
        leaf: |c| Ok(c.concat().into_bytes()),
        entry: "test log entry",
        record: "record",
    };

    fn checkpoint_of(leaves: &[&[u8]]) -> StoredCheckpoint {
        let mut t = Frontier::empty();
        for l in leaves {
            t.append(leaf_hash(l)).unwrap();
        }
        StoredCheckpoint {
            size: t.size(),
            root: t.root(),
            note: String::new(),
        }
    }

    #[test]
    fn a_matching_log_has_no_problem_and_collects_nodes_from_where_asked() {
        let cp = checkpoint_of(&[b"a", b"b", b"c"]);
        let mut check = TreeCheck::new(SOURCE, Some(cp), 2);
        for (i, d) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            assert!(check.push(i as i64, *d).unwrap());
        }
        assert_eq!(check.finish(), None);
        assert_eq!(check.problem, None);
        assert_eq!(check.tree.size(), 4);
        // Leaves 2 and 3 and the nodes they complete (each ends at leaf 2 or later).
        assert_eq!(check.new_nodes.len(), 4);
        assert!(check
            .new_nodes
            .iter()
            .all(|(n, _)| ((n.index + 1) << n.level) > 2));
        assert!(check.new_nodes.iter().any(|(n, _)| n.level == 2));
    }

    #[test]
    fn a_gap_a_loss_and_a_change_are_named_with_the_sources_words() {
        let cp = checkpoint_of(&[b"a", b"b", b"c"]);
        let mut gap = TreeCheck::new(SOURCE, Some(cp.clone()), u64::MAX);
        assert!(gap.push(0, b"a").unwrap());
        assert!(!gap.push(2, b"c").unwrap());
        assert_eq!(
            gap.problem.as_deref(),
            Some("test log entry 1 is missing (found 2 after 0)")
        );

        let mut lost = TreeCheck::new(SOURCE, Some(cp.clone()), u64::MAX);
        lost.push(0, b"a").unwrap();
        assert_eq!(lost.finish(), None);
        assert!(lost.problem.unwrap().contains("entries 1..3 are gone"));

        let mut changed = TreeCheck::new(SOURCE, Some(cp), u64::MAX);
        for (i, d) in [b"a", b"X", b"c"].iter().enumerate() {
            changed.push(i as i64, *d).unwrap();
        }
        assert_eq!(changed.finish(), Some(3));
        let stored: Vec<(i64, String)> = [b"a", b"b", b"c"]
            .iter()
            .enumerate()
            .map(|(i, d)| (i as i64, hash_hex(&leaf_hash(*d))))
            .collect();
        changed.explain(&stored);
        assert!(changed
            .problem
            .unwrap()
            .starts_with("test log entry 1 does not hash to the leaf that was logged: the stored record was changed"));
    }
}
