//! The node network part: every other node's pod range reachable from
//! this node, over VXLAN or by direct routes (host-gw), as flannel makes
//! it and interoperable with it: same VNI, port, device addresses and Node
//! annotations. A pure planner ([`plan()`]) and an applier by netlink diff
//! ([`apply()`]), joined as a [`Part`] of the node agent.

mod apply;
mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use strait_linux::Netlink;
use strait_model::{ChangeSet, ClusterState, Kind};

pub use apply::{
    apply, device_action, observe, steps, Applied, DeviceAction, Observed, Step, ROUTE_PROTOCOL,
};
pub use plan::{
    annotations, annotations_to_publish, local_node, node_pod_cidr, plan, vtep_mac_for, Backend,
    LocalNode, NodeProblem, OverlayConfig, OverlayPlan, Remote, BACKEND_DATA, BACKEND_TYPE,
    KUBE_SUBNET_MANAGER, PUBLIC_IP, PUBLIC_IP_OVERWRITE,
};

use crate::agent::Part;
use crate::{Error, Result};

/// The annotations this node should carry, once known: the part fills it
/// after each sync, whoever can write the Node (cluster mode: the agent's
/// API client) publishes it.
pub type Published = Arc<Mutex<Option<BTreeMap<String, String>>>>;

/// The overlay of one node, applied in the network namespace of the
/// thread that syncs it (a netlink socket opened there on first use).
pub struct OverlayPart {
    config: OverlayConfig,
    node_name: String,
    /// `--node-ip`: the underlay address, when not the Node's own.
    node_ip: Option<Ipv4Addr>,
    runtime: tokio::runtime::Runtime,
    netlink: Option<Netlink>,
    published: Published,
    /// What was last said, so that each problem is logged once.
    reported: BTreeSet<String>,
    last: Option<Applied>,
}

impl OverlayPart {
    pub fn new(
        config: OverlayConfig,
        node_name: String,
        node_ip: Option<Ipv4Addr>,
    ) -> Result<OverlayPart> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Part {
                part: "overlay",
                message: format!("cannot start a netlink runtime: {e}"),
            })?;
        Ok(OverlayPart {
            config,
            node_name,
            node_ip,
            runtime,
            netlink: None,
            published: Published::default(),
            reported: BTreeSet::new(),
            last: None,
        })
    }

    /// Where the annotations to publish appear after each sync.
    pub fn published(&self) -> Published {
        self.published.clone()
    }

    /// What the last sync did.
    pub fn last_applied(&self) -> Option<&Applied> {
        self.last.as_ref()
    }

    /// Say each problem once (and again after it went away and came back).
    fn report(&mut self, lines: BTreeSet<String>) {
        for line in lines.difference(&self.reported) {
            tracing::error!("overlay: {line}");
        }
        self.reported = lines;
    }

    fn sync(&mut self, state: &ClusterState) -> Result<()> {
        let fail = |message: String| Error::Part {
            part: "overlay",
            message,
        };
        let local = match local_node(state, &self.node_name, self.node_ip) {
            Ok(l) => l,
            Err(p) => {
                // Nothing can be built before this node has a range and an address.
                self.report(BTreeSet::from([p.to_string()]));
                return Ok(());
            }
        };
        let planned = plan(state, &local, &self.config);
        let mut lines: BTreeSet<String> =
            planned.problems.iter().map(ToString::to_string).collect();
        if self.netlink.is_none() {
            let nl = self
                .runtime
                .block_on(async { Netlink::connect() })
                .map_err(|e| fail(e.to_string()))?;
            self.netlink = Some(nl);
        }
        let nl = self.netlink.as_ref().expect("connected above");
        let result = self
            .runtime
            .block_on(apply(nl, &self.config, &local, &planned.remotes));
        let applied = match result {
            Ok(a) => a,
            Err(e) => {
                self.report(lines);
                self.last = None;
                return Err(fail(e));
            }
        };
        if applied.changes > 0 {
            tracing::info!(
                remotes = planned.remotes.len(),
                pending = planned.pending.len(),
                changes = applied.changes,
                "overlay synced"
            );
        }
        let want = annotations(&self.config, &local, applied.vtep_mac);
        if let Ok(mut slot) = self.published.lock() {
            *slot = Some(want);
        }
        for (node, why) in &applied.failures {
            lines.insert(match node {
                Some(n) => format!("Node {n:?}: {why}"),
                None => why.clone(),
            });
        }
        self.report(lines);
        let failures = applied.failures.len();
        self.last = Some(applied);
        if failures > 0 {
            return Err(fail(format!(
                "{failures} change(s) refused by the kernel (logged per Node); retried on the next sync"
            )));
        }
        Ok(())
    }
}

/// Remove the overlay from the calling thread's network namespace, as
/// `strait agent --cleanup` does: strait's routes (protocol
/// [`ROUTE_PROTOCOL`]) and the VXLAN device `config.device` (its routes,
/// neighbour and forwarding entries go with it). A link of that name that
/// is no VXLAN device is left alone. Returns how many things were removed.
pub fn cleanup(config: &OverlayConfig) -> Result<usize> {
    let fail = |message: String| Error::Part {
        part: "overlay",
        message,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start a netlink runtime: {e}")))?;
    runtime
        .block_on(async {
            let nl = Netlink::connect()?;
            let mut removed = 0;
            for r in nl.routes_v4_main().await? {
                if let (true, Some(out)) = (r.protocol == ROUTE_PROTOCOL, r.output) {
                    nl.del_route_v4(r.destination, out).await?;
                    removed += 1;
                }
            }
            if let Some(link) = nl.link_by_name(&config.device).await? {
                if nl.vxlan_of(link.index).await?.is_some() {
                    nl.del_link(link.index).await?;
                    removed += 1;
                }
            }
            Ok::<usize, strait_linux::Error>(removed)
        })
        .map_err(|e| fail(e.to_string()))
}

impl Part for OverlayPart {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn sync_all(&mut self, state: &ClusterState) -> Result<()> {
        self.sync(state)
    }

    fn sync_changes(
        &mut self,
        _old: &ClusterState,
        new: &ClusterState,
        changes: &ChangeSet,
    ) -> Result<()> {
        // Only Nodes shape the overlay; a sync that failed (in whole or in
        // part) is retried on any change.
        let nodes = changes.changes.iter().any(|c| c.key().kind == Kind::Node);
        let failed = self.last.as_ref().is_none_or(|a| !a.failures.is_empty());
        if nodes || failed {
            self.sync(new)
        } else {
            Ok(())
        }
    }
}
