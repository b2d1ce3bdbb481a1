//! The SQL side of a [`LogStore`](openexec_log::LogStore).

use openexec_log::{Frontier, Hash};

/// The head of a log: how many entries it holds and the root over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHead {
    pub size: u64,
    pub root: Hash,
}

impl LogHead {
    pub fn of(tree: &Frontier) -> LogHead {
        LogHead {
            size: tree.size(),
            root: tree.root(),
        }
    }

    /// Publish `tree`'s head after a commit (watchers wake only when it moved).
    pub fn publish(head: &tokio::sync::watch::Sender<LogHead>, tree: &Frontier) {
        head.send_if_modified(|h| {
            let new = LogHead::of(tree);
            let changed = *h != new;
            *h = new;
            changed
        });
    }
}
