//! `strait agent --overlay`: the node network part, and the publishing of
//! this node's VTEP in its Node's flannel annotations through the API.

use std::collections::BTreeMap;

use strait_agent::overlay::{self, Backend, OverlayConfig, OverlayPart, Published};
use strait_kube::KubeSource;
use strait_model::ClusterState;

use crate::cli::{AgentArgs, OverlayMode};
use crate::error::Error;

/// `--cleanup --overlay vxlan|host-gw`: remove the overlay too.
pub fn cleanup(args: &AgentArgs) -> Result<(), Error> {
    let backend = match args.overlay {
        OverlayMode::None => return Ok(()),
        OverlayMode::Vxlan => Backend::Vxlan,
        OverlayMode::HostGw => Backend::HostGw,
    };
    let removed = overlay::cleanup(&OverlayConfig::new(backend))?;
    println!("removed the overlay ({removed} routes and devices)");
    Ok(())
}

/// The overlay part the flags ask for, with its publisher (`None`:
/// `--overlay none`).
pub fn part(args: &AgentArgs, node: &str) -> Result<Option<(OverlayPart, Publisher)>, Error> {
    let backend = match args.overlay {
        OverlayMode::None => return Ok(None),
        OverlayMode::Vxlan => Backend::Vxlan,
        OverlayMode::HostGw => Backend::HostGw,
    };
    let mut config = OverlayConfig::new(backend);
    config.vni = args.overlay_vni;
    config.port = args.overlay_port;
    // An explicit --node-ip is the underlay address; else the Node says.
    let node_ip = args.node_ips.iter().find_map(|t| t.parse().ok());
    let part = OverlayPart::new(config, node.to_owned(), node_ip)?;
    let publisher = Publisher {
        slot: part.published(),
        in_flight: None,
    };
    Ok(Some((part, publisher)))
}

/// Writes the annotations the overlay part wants onto this node's Node
/// when the Node lacks them (once per change; again after a failure).
pub struct Publisher {
    slot: Published,
    /// What was sent and is not yet seen back through the watch.
    in_flight: Option<BTreeMap<String, String>>,
}

impl Publisher {
    pub fn publish(&mut self, source: &KubeSource, state: &ClusterState, node: &str) {
        let Some(want) = self.slot.lock().ok().and_then(|s| s.clone()) else {
            return;
        };
        let missing = overlay::annotations_to_publish(state, node, &want);
        if missing.is_empty() {
            self.in_flight = None;
            return;
        }
        // Sent already and the watch has not brought it back yet.
        if self.in_flight.as_ref() == Some(&want) {
            return;
        }
        match source.patch_node_annotations(node, &missing) {
            Ok(()) => {
                tracing::info!(node, annotations = ?missing, "published this node's overlay");
                self.in_flight = Some(want);
            }
            Err(e) => {
                tracing::error!("{e} (the other nodes cannot reach this node's pods until it is)");
                self.in_flight = None;
            }
        }
    }
}
