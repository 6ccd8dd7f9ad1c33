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
    /// Per part: its last sync failed, so the next one plans everything
    /// (a change set is relative to a state it never reached).
    failed: Vec<bool>,
    last: Option<Arc<ClusterState>>,
}

impl Agent {
    pub fn new(parts: Vec<Box<dyn Part>>) -> Agent {
        let failed = vec![false; parts.len()];
        Agent {
            parts,
            failed,
            last: None,
        }
    }

    /// The parts whose last sync failed: they are retried with a full sync
    /// on the next snapshot, or by [`Agent::retry`].
    pub fn failing(&self) -> Vec<&'static str> {
        self.parts
            .iter()
            .zip(&self.failed)
            .filter(|(_, f)| **f)
            .map(|(p, _)| p.name())
            .collect()
    }

    /// Sync again, fully, every part whose last sync failed, on the last
    /// snapshot (a failed part is retried on a timer when nothing changes,
    /// as kube-proxy retries a failed sync).
    pub fn retry(&mut self) -> Vec<Error> {
        let Some(state) = self.last.clone() else {
            return Vec::new();
        };
        let mut errors = Vec::new();
        for (part, failed) in self.parts.iter_mut().zip(&mut self.failed) {
            if *failed {
                let result = part.sync_all(&state);
                *failed = result.is_err();
                if let Err(e) = result {
                    errors.push(named(part.name(), e));
                }
            }
        }
        errors
    }

    /// The last snapshot applied.
    pub fn state(&self) -> Option<&Arc<ClusterState>> {
        self.last.as_ref()
    }

    /// Give one snapshot to every part in order. A part that fails does not
    /// stop the others; its errors are returned (named by part). The
    /// snapshot becomes the last one either way: a part keeps what it could
    /// not apply to retry it (the proxy retries refused Services), and a
    /// part that failed as a whole plans everything next time.
    pub fn apply(&mut self, update: &Update) -> Vec<Error> {
        let mut errors = Vec::new();
        for (part, failed) in self.parts.iter_mut().zip(&mut self.failed) {
            let result = match (&self.last, &update.changes, *failed) {
                (Some(old), Changes::Set(changes), false) => {
                    part.sync_changes(old, &update.state, changes)
                }
                _ => part.sync_all(&update.state),
            };
            *failed = result.is_err();
            if let Err(e) = result {
                errors.push(named(part.name(), e));
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

fn named(part: &'static str, e: Error) -> Error {
    match e {
        Error::Part { .. } => e,
        other => Error::Part {
            part,
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A part that records how it was called and fails while told to.
    struct Flaky {
        calls: Arc<Mutex<Vec<&'static str>>>,
        fail: Arc<Mutex<bool>>,
    }

    impl Part for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn sync_all(&mut self, _: &ClusterState) -> Result<()> {
            self.calls.lock().unwrap().push("all");
            self.outcome()
        }
        fn sync_changes(
            &mut self,
            _: &ClusterState,
            _: &ClusterState,
            _: &ChangeSet,
        ) -> Result<()> {
            self.calls.lock().unwrap().push("changes");
            self.outcome()
        }
    }

    impl Flaky {
        fn outcome(&self) -> Result<()> {
            if *self.fail.lock().unwrap() {
                Err(Error::Part {
                    part: "flaky",
                    message: "the kernel said no".into(),
                })
            } else {
                Ok(())
            }
        }
    }

    fn update(changes: Changes) -> Update {
        Update {
            state: Arc::new(ClusterState::default()),
            changes,
        }
    }

    #[test]
    fn a_failed_part_is_synced_fully_next_time_and_on_retry_and_the_others_go_on() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let fail = Arc::new(Mutex::new(true));
        let other_calls = Arc::new(Mutex::new(Vec::new()));
        let mut agent = Agent::new(vec![
            Box::new(Flaky {
                calls: calls.clone(),
                fail: fail.clone(),
            }),
            Box::new(Flaky {
                calls: other_calls.clone(),
                fail: Arc::new(Mutex::new(false)),
            }),
        ]);
        let errors = agent.apply(&update(Changes::Everything));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("the kernel said no"));
        assert_eq!(agent.failing(), vec!["flaky"]);
        // Still failing: a change set is not enough, it syncs everything.
        agent.apply(&update(Changes::Set(Arc::new(ChangeSet::default()))));
        assert_eq!(*calls.lock().unwrap(), ["all", "all"]);
        // The kernel takes it now: a retry on the last snapshot.
        *fail.lock().unwrap() = false;
        assert!(agent.retry().is_empty());
        assert!(agent.failing().is_empty());
        assert!(agent.retry().is_empty(), "nothing left to retry");
        agent.apply(&update(Changes::Set(Arc::new(ChangeSet::default()))));
        assert_eq!(*calls.lock().unwrap(), ["all", "all", "all", "changes"]);
        // The healthy part went on with change sets throughout.
        assert_eq!(*other_calls.lock().unwrap(), ["all", "changes", "changes"]);
    }
}
