//! One node's runtime: parts applied in order on each snapshot a source gives.

use std::sync::Arc;

use strait_model::{ChangeSet, ClusterState};

use crate::source::{Changes, Source, Update};
use crate::{Error, Result};

/// One part of a node's network: a pure planner (cluster state → what the
/// node should have) plus an applier that makes the node have it.
pub trait Part: Send {
    fn name(&self) -> &'static str;
    /// The first snapshot, or one after the source lost track: plan and
    /// apply everything.
    fn sync_all(&mut self, state: &ClusterState) -> Result<()>;
    /// `changes` made `new` from `old` (the last snapshot this part got):
    /// plan and apply only what they touch.
    fn sync_changes(
        &mut self,
        old: &ClusterState,
        new: &ClusterState,
        changes: &ChangeSet,
    ) -> Result<()>;
}

/// The parts of one node, fed in order from one source, on the calling
/// thread (which is inside the node's network namespace).
pub struct Agent {
    parts: Vec<Box<dyn Part>>,
    last: Option<Arc<ClusterState>>,
}

impl Agent {
    pub fn new(parts: Vec<Box<dyn Part>>) -> Agent {
        Agent { parts, last: None }
    }

    /// The last snapshot applied.
    pub fn state(&self) -> Option<&Arc<ClusterState>> {
        self.last.as_ref()
    }

    /// Give one snapshot to every part in order. A part that fails does not
    /// stop the others; its errors are returned (named by part). The
    /// snapshot becomes the last one either way: a part keeps what it could
    /// not apply to retry it (the proxy retries refused Services).
    pub fn apply(&mut self, update: &Update) -> Vec<Error> {
        let mut errors = Vec::new();
        for part in &mut self.parts {
            let result = match (&self.last, &update.changes) {
                (Some(old), Changes::Set(changes)) => {
                    part.sync_changes(old, &update.state, changes)
                }
                _ => part.sync_all(&update.state),
            };
            if let Err(e) = result {
                errors.push(match e {
                    Error::Part { .. } => e,
                    other => Error::Part {
                        part: part.name(),
                        message: other.to_string(),
                    },
                });
            }
        }
        self.last = Some(update.state.clone());
        errors
    }

    /// Apply every snapshot of `source` until it ends; `after` hears how
    /// each went (the errors of the parts, empty when all went well).
    pub fn run(
        &mut self,
        source: &mut dyn Source,
        mut after: impl FnMut(&Update, &[Error]),
    ) -> Result<()> {
        while let Some(update) = source.next()? {
            let errors = self.apply(&update);
            after(&update, &errors);
        }
        Ok(())
    }
}
