//! NetworkPolicy as a part of the node agent: `strait_policy`'s planner and
//! applier for this node's pods.

use strait_model::{ChangeSet, ClusterState, Kind};
use strait_policy::{PolicyApplier, Sync};

use crate::agent::Part;
use crate::Result;

/// The NetworkPolicy tables of one node.
pub struct PolicyPart {
    applier: PolicyApplier,
    /// The problems last logged, so that each is said once.
    reported: Vec<String>,
    last: Option<Sync>,
}

impl PolicyPart {
    /// The part for the node named `node` (its pods are the ones judged).
    pub fn new(node: &str) -> PolicyPart {
        PolicyPart {
            applier: PolicyApplier::new(node),
            reported: Vec::new(),
            last: None,
        }
    }

    /// Remove the policy tables from this network namespace (missing is
    /// fine): `strait agent --cleanup`.
    pub fn cleanup() -> Result<()> {
        PolicyApplier::new("").cleanup()?;
        Ok(())
    }

    pub fn applier(&self) -> &PolicyApplier {
        &self.applier
    }

    /// What the last sync did (`None` before the first, or when it failed).
    pub fn last_sync(&self) -> Option<Sync> {
        self.last
    }

    fn record(&mut self, sync: Sync) {
        self.last = Some(sync);
        let problems: Vec<String> = self
            .applier
            .problems()
            .iter()
            .map(ToString::to_string)
            .collect();
        for p in problems.iter().filter(|p| !self.reported.contains(p)) {
            // Such a policy isolates what it selects and opens nothing it
            // could not read: fail closed, said once.
            tracing::error!("{p} (it allows nothing for this)");
        }
        self.reported = problems;
        let stats = self.applier.stats();
        match sync {
            Sync::Full(d) => tracing::info!(
                isolated_ingress = stats.isolated_ingress,
                isolated_egress = stats.isolated_egress,
                classes = stats.classes,
                elements = stats.elements,
                elapsed = ?d,
                via = self.applier.last_path(),
                "policy: full sync"
            ),
            Sync::Partial(d, steps) => tracing::info!(
                steps,
                classes = stats.classes,
                elements = stats.elements,
                elapsed = ?d,
                via = self.applier.last_path(),
                "policy: partial sync"
            ),
            Sync::Unchanged => tracing::debug!("policy: no change"),
        }
    }
}

impl Part for PolicyPart {
    fn name(&self) -> &'static str {
        "network policy"
    }

    fn sync_all(&mut self, state: &ClusterState) -> Result<()> {
        self.last = None;
        let sync = self.applier.full_sync(state)?;
        self.record(sync);
        Ok(())
    }

    fn sync_changes(
        &mut self,
        _old: &ClusterState,
        new: &ClusterState,
        changes: &ChangeSet,
    ) -> Result<()> {
        // Only pods, namespaces (their labels) and policies change what
        // is allowed; Nodes (their addresses) only where a
        // ClusterNetworkPolicy names `nodes` peers: their status changes
        // with every heartbeat.
        let relevant = [
            Kind::Pod,
            Kind::Namespace,
            Kind::NetworkPolicy,
            Kind::ClusterNetworkPolicy,
        ]
        .into_iter()
        .any(|k| changes.touches(k))
            || (changes.touches(Kind::Node) && names_nodes(new));
        if !relevant {
            return Ok(());
        }
        self.last = None;
        let sync = self.applier.apply_changes(new, changes)?;
        self.record(sync);
        Ok(())
    }
}

/// Whether a ClusterNetworkPolicy has a `nodes` peer.
fn names_nodes(state: &ClusterState) -> bool {
    state.cluster_network_policies.iter().any(|c| {
        c.spec
            .egress
            .iter()
            .flat_map(|r| &r.to)
            .any(|p| p.nodes.is_some())
    })
}
