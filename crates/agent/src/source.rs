//! The interface every source of cluster state offers: snapshots, each with
//! the change set that produced it.

use std::collections::BTreeSet;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use strait_model::{ChangeSet, ClusterState, ObjectKey};

use crate::Result;

/// What changed to make a snapshot.
#[derive(Clone, Debug)]
pub enum Changes {
    /// A first snapshot, or one after the source lost track (an inotify
    /// queue overflow): every part plans everything.
    Everything,
    /// These objects changed since the source's previous snapshot.
    Set(Arc<ChangeSet>),
}

/// One snapshot of the cluster and how it came about.
#[derive(Clone, Debug)]
pub struct Update {
    pub state: Arc<ClusterState>,
    pub changes: Changes,
}

/// A source of cluster state: manifest files, the lab's controller, and
/// (next) the Kubernetes API. Sources coalesce bursts: `next` gives the
/// newest snapshot with the union of what changed since the one before.
pub trait Source {
    /// Block until there is a new snapshot. `Ok(None)`: the source ended.
    /// Bad input is the source's to report; it yields nothing for it (the
    /// last good snapshot stays), so `Err` means the source itself broke.
    fn next(&mut self) -> Result<Option<Update>>;
}

/// The changes from `old` to `new` when several change sets happened in
/// between: only the keys they name are compared, so an object changed and
/// changed back is no change.
pub fn merge_changes<'a>(
    old: &ClusterState,
    new: &ClusterState,
    sets: impl IntoIterator<Item = &'a ChangeSet>,
) -> ChangeSet {
    let keys: BTreeSet<&ObjectKey> = sets
        .into_iter()
        .flat_map(|s| s.changes.iter().map(|c| c.key()))
        .collect();
    old.diff_keys(new, keys)
}

/// Updates sent over a channel by whoever computes them (the lab's
/// controller, one channel per node); bursts are merged.
pub struct ChannelSource {
    rx: Receiver<Update>,
    last: Option<Arc<ClusterState>>,
}

impl ChannelSource {
    pub fn new(rx: Receiver<Update>) -> ChannelSource {
        ChannelSource { rx, last: None }
    }
}

impl Source for ChannelSource {
    fn next(&mut self) -> Result<Option<Update>> {
        let Ok(first) = self.rx.recv() else {
            return Ok(None);
        };
        let mut pending = vec![first];
        while let Ok(more) = self.rx.try_recv() {
            pending.push(more);
        }
        let newest = pending.last().map(|u| u.state.clone()).expect("one");
        let changes = match (&self.last, pending.len()) {
            (_, 1) => pending.pop().expect("one").changes,
            (None, _) => Changes::Everything,
            (Some(last), _) => {
                let mut sets = Vec::new();
                let mut everything = false;
                for u in &pending {
                    match &u.changes {
                        Changes::Everything => everything = true,
                        Changes::Set(s) => sets.push(s.clone()),
                    }
                }
                if everything {
                    Changes::Everything
                } else {
                    Changes::Set(Arc::new(merge_changes(
                        last,
                        &newest,
                        sets.iter().map(|s| &**s),
                    )))
                }
            }
        };
        self.last = Some(newest.clone());
        Ok(Some(Update {
            state: newest,
            changes,
        }))
    }
}
