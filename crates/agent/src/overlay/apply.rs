//! The overlay's applier: what the kernel has, diffed against the plan,
//! and the smallest set of netlink calls that makes them agree.
//!
//! What is strait's: routes marked with [`ROUTE_PROTOCOL`], and every
//! route, neighbour and forwarding entry of the VXLAN device (flannel's
//! too, when strait took its device over). What a previous run (or
//! flannel) left is adopted where it is already right and changed only
//! where it differs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use strait_linux::{mac_string, NeighbourEntry, Netlink, RouteEntry, Vxlan};

use super::plan::{Backend, LocalNode, OverlayConfig, Remote};

/// The `proto` strait's overlay routes carry (`ip route` shows the
/// number): how a restarted agent knows which host-gw routes are its own.
/// Unassigned in iproute2's `rt_protos`.
pub const ROUTE_PROTOCOL: u8 = 83;

/// What the kernel has that concerns the overlay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Routes of the main table (all of them: the diff picks its own).
    pub routes: Vec<RouteEntry>,
    /// Neighbour entries of the VXLAN device.
    pub neighbours: Vec<NeighbourEntry>,
    /// Forwarding entries of the VXLAN device: MAC, remote.
    pub fdb: Vec<([u8; 6], Option<Ipv4Addr>)>,
}

/// One netlink change, with the Node it is for (`None`: removal of what
/// no Node wants any more).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    DelRoute {
        destination: Ipv4Net,
        output: u32,
    },
    DelNeighbour {
        ip: Ipv4Addr,
    },
    DelFdb {
        mac: [u8; 6],
        dst: Option<Ipv4Addr>,
    },
    SetNeighbour {
        node: String,
        ip: Ipv4Addr,
        mac: [u8; 6],
    },
    AddFdb {
        node: String,
        mac: [u8; 6],
        dst: Ipv4Addr,
    },
    SetRoute {
        node: String,
        destination: Ipv4Net,
        gateway: Ipv4Addr,
        output: u32,
        onlink: bool,
    },
}

impl Step {
    /// The Node a failure of this step is reported on.
    pub fn node(&self) -> Option<&str> {
        match self {
            Step::SetNeighbour { node, .. }
            | Step::AddFdb { node, .. }
            | Step::SetRoute { node, .. } => Some(node),
            _ => None,
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::DelRoute { destination, .. } => write!(f, "remove route {destination}"),
            Step::DelNeighbour { ip } => write!(f, "remove neighbour {ip}"),
            Step::DelFdb { mac, dst } => {
                write!(f, "remove fdb {}", mac_string(mac))?;
                if let Some(d) = dst {
                    write!(f, " dst {d}")?;
                }
                Ok(())
            }
            Step::SetNeighbour { ip, mac, .. } => {
                write!(f, "set neighbour {ip} lladdr {}", mac_string(mac))
            }
            Step::AddFdb { mac, dst, .. } => write!(f, "add fdb {} dst {dst}", mac_string(mac)),
            Step::SetRoute {
                destination,
                gateway,
                onlink,
                ..
            } => write!(
                f,
                "set route {destination} via {gateway}{}",
                if *onlink { " onlink" } else { "" }
            ),
        }
    }
}

/// The steps from `observed` to `remotes`, in an order that never routes
/// to a VTEP the device cannot reach yet: removals first (routes before
/// the entries they used), then neighbour and forwarding entries, then
/// routes. `vtep` is the VXLAN device (VXLAN), `underlay` the link host-gw
/// routes leave by.
pub fn steps(
    backend: Backend,
    remotes: &[Remote],
    vtep: Option<u32>,
    underlay: u32,
    observed: &Observed,
) -> Vec<Step> {
    let output = match backend {
        Backend::Vxlan => vtep.unwrap_or(underlay),
        Backend::HostGw => underlay,
    };
    let onlink = backend == Backend::Vxlan;
    let wanted: BTreeMap<Ipv4Net, &Remote> = remotes.iter().map(|r| (r.pod_cidr, r)).collect();
    let ours =
        |r: &RouteEntry| r.protocol == ROUTE_PROTOCOL || (vtep.is_some() && r.output == vtep);
    let mut out = Vec::new();
    // Routes: ours that no Node wants go; a wanted one that is already
    // exactly right (whoever made it) stays.
    let mut right: BTreeSet<Ipv4Net> = BTreeSet::new();
    for r in &observed.routes {
        match wanted.get(&r.destination) {
            Some(remote)
                if r.gateway == Some(remote.gateway(backend))
                    && r.output == Some(output)
                    && r.onlink == onlink =>
            {
                right.insert(r.destination);
            }
            Some(_) => {}
            None if ours(r) => {
                if let Some(o) = r.output {
                    out.push(Step::DelRoute {
                        destination: r.destination,
                        output: o,
                    });
                }
            }
            None => {}
        }
    }
    if backend == Backend::Vxlan && vtep.is_some() {
        let want_neigh: BTreeMap<Ipv4Addr, (&str, [u8; 6])> = remotes
            .iter()
            .filter_map(|r| Some((r.gateway(backend), (r.node.as_str(), r.vtep_mac?))))
            .collect();
        let want_fdb: BTreeMap<([u8; 6], Ipv4Addr), &str> = remotes
            .iter()
            .filter_map(|r| Some(((r.vtep_mac?, r.public_ip), r.node.as_str())))
            .collect();
        let mut have_neigh: BTreeMap<Ipv4Addr, &NeighbourEntry> = BTreeMap::new();
        for n in &observed.neighbours {
            have_neigh.insert(n.ip, n);
            if n.permanent && !want_neigh.contains_key(&n.ip) {
                out.push(Step::DelNeighbour { ip: n.ip });
            }
        }
        let mut have_fdb = BTreeSet::new();
        for (mac, dst) in &observed.fdb {
            let Some(d) = dst else { continue };
            have_fdb.insert((*mac, *d));
            if !want_fdb.contains_key(&(*mac, *d)) {
                out.push(Step::DelFdb {
                    mac: *mac,
                    dst: Some(*d),
                });
            }
        }
        for (ip, (node, mac)) in &want_neigh {
            let fine = have_neigh
                .get(ip)
                .is_some_and(|n| n.permanent && n.mac == Some(*mac));
            if !fine {
                out.push(Step::SetNeighbour {
                    node: (*node).to_owned(),
                    ip: *ip,
                    mac: *mac,
                });
            }
        }
        for ((mac, dst), node) in &want_fdb {
            if !have_fdb.contains(&(*mac, *dst)) {
                out.push(Step::AddFdb {
                    node: (*node).to_owned(),
                    mac: *mac,
                    dst: *dst,
                });
            }
        }
    }
    for remote in remotes {
        if !right.contains(&remote.pod_cidr) {
            out.push(Step::SetRoute {
                node: remote.node.clone(),
                destination: remote.pod_cidr,
                gateway: remote.gateway(backend),
                output,
                onlink,
            });
        }
    }
    out
}

/// What to do about the VXLAN device, given what has its name now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceAction {
    /// It is right (its MAC is kept: the other nodes know it).
    Keep,
    /// Right but for its MTU or state.
    Fix { mtu: bool, up: bool },
    /// Missing: create it.
    Create,
    /// Something else has the name, or a VXLAN device that cannot meet
    /// the others (VNI, port, local address, underlay, learning): remove
    /// and create, as flannel does with a device it cannot use.
    Recreate,
}

/// Compare the device found (`None`: no link of that name; `Some(None)`:
/// a link that is no VXLAN device) with the one wanted.
pub fn device_action(found: Option<Option<(&Vxlan, bool)>>, want: &Vxlan) -> DeviceAction {
    match found {
        None => DeviceAction::Create,
        Some(None) => DeviceAction::Recreate,
        Some(Some((have, up))) => {
            if have.vni != want.vni
                || have.dstport != want.dstport
                || have.local != want.local
                || have.dev != want.dev
                || have.learning != want.learning
            {
                DeviceAction::Recreate
            } else if have.mtu != want.mtu || !up {
                DeviceAction::Fix {
                    mtu: have.mtu != want.mtu,
                    up: !up,
                }
            } else {
                DeviceAction::Keep
            }
        }
    }
}

/// What one apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The VTEP MAC this node publishes (VXLAN).
    pub vtep_mac: Option<[u8; 6]>,
    /// Netlink changes made.
    pub changes: usize,
    /// Failures: the Node concerned (if any) and what failed. The rest
    /// was applied.
    pub failures: Vec<(Option<String>, String)>,
}

/// Bring the kernel (the namespace `nl` was opened in) in line with the
/// plan. An error: the node's own part (underlay, device) could not be
/// made; per-remote failures are in [`Applied::failures`].
pub async fn apply(
    nl: &Netlink,
    config: &OverlayConfig,
    local: &LocalNode,
    remotes: &[Remote],
) -> Result<Applied, String> {
    let mut applied = Applied::default();
    let underlay = underlay_of(nl, local.public_ip).await?;
    let vtep = match config.backend {
        Backend::Vxlan => {
            let (index, mac) = ensure_device(nl, config, local, underlay, &mut applied).await?;
            applied.vtep_mac = Some(mac);
            Some(index)
        }
        Backend::HostGw => None,
    };
    let observed = observe(nl, vtep).await.map_err(|e| e.to_string())?;
    for step in steps(config.backend, remotes, vtep, underlay.0, &observed) {
        let result = run(nl, vtep, &step).await;
        match result {
            Ok(()) => applied.changes += 1,
            Err(e) => applied
                .failures
                .push((step.node().map(str::to_owned), format!("{step}: {e}"))),
        }
    }
    Ok(applied)
}

/// What the kernel has now.
pub async fn observe(nl: &Netlink, vtep: Option<u32>) -> strait_linux::Result<Observed> {
    let routes = nl.routes_v4_main().await?;
    let (neighbours, fdb) = match vtep {
        Some(index) => (nl.neighbours_v4(index).await?, nl.fdb_of(index).await?),
        None => (Vec::new(), Vec::new()),
    };
    Ok(Observed {
        routes,
        neighbours,
        fdb,
    })
}

async fn run(nl: &Netlink, vtep: Option<u32>, step: &Step) -> strait_linux::Result<()> {
    let dev = vtep.unwrap_or_default();
    match step {
        Step::DelRoute {
            destination,
            output,
        } => nl.del_route_v4(*destination, *output).await,
        Step::DelNeighbour { ip } => nl.del_neighbour(dev, *ip).await,
        Step::DelFdb { mac, dst } => nl.del_fdb(dev, *mac, *dst).await,
        Step::SetNeighbour { ip, mac, .. } => nl.replace_neighbour(dev, *ip, *mac).await,
        Step::AddFdb { mac, dst, .. } => nl.append_fdb(dev, *mac, *dst).await,
        Step::SetRoute {
            destination,
            gateway,
            output,
            onlink,
            ..
        } => {
            nl.replace_route_v4(*destination, *gateway, *output, *onlink, ROUTE_PROTOCOL)
                .await
        }
    }
}

/// The link that holds the node's public address, and its MTU.
async fn underlay_of(nl: &Netlink, ip: Ipv4Addr) -> Result<(u32, u32), String> {
    let addresses = nl.addresses(None).await.map_err(|e| e.to_string())?;
    let index = addresses
        .iter()
        .find(|(_, net)| net.addr() == std::net::IpAddr::V4(ip))
        .map(|(i, _)| *i)
        .ok_or_else(|| {
            format!("no link has this node's address {ip}: the overlay needs it on the underlay (give --node-ip)")
        })?;
    let link = nl
        .link_by_index(index)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("link {index} (with {ip}) vanished"))?;
    Ok((index, link.mtu))
}

/// The VXLAN device as wanted, adopted when it is already right: its
/// index and MAC.
async fn ensure_device(
    nl: &Netlink,
    config: &OverlayConfig,
    local: &LocalNode,
    (underlay, underlay_mtu): (u32, u32),
    applied: &mut Applied,
) -> Result<(u32, [u8; 6]), String> {
    let fail = |e: strait_linux::Error| format!("VXLAN device {}: {e}", config.device);
    let mut want = Vxlan {
        name: config.device.clone(),
        vni: config.vni,
        dstport: config.port,
        dev: underlay,
        local: local.public_ip,
        learning: false,
        mac: super::plan::vtep_mac_for(local.public_ip),
        // VXLAN over IPv4 costs 50 bytes of the underlay's MTU.
        mtu: underlay_mtu.saturating_sub(50).max(68),
    };
    let link = nl.link_by_name(&config.device).await.map_err(fail)?;
    let found = match &link {
        None => None,
        Some(l) => Some(nl.vxlan_of(l.index).await.map_err(fail)?.map(|v| (v, l.up))),
    };
    let action = device_action(
        found.as_ref().map(|f| f.as_ref().map(|(v, up)| (v, *up))),
        &want,
    );
    let index = match (action, &link, &found) {
        (DeviceAction::Keep, Some(l), Some(Some((have, _)))) => {
            want.mac = have.mac;
            l.index
        }
        (DeviceAction::Fix { mtu, up }, Some(l), Some(Some((have, _)))) => {
            want.mac = have.mac;
            if mtu {
                nl.set_mtu(l.index, want.mtu).await.map_err(fail)?;
                applied.changes += 1;
            }
            if up {
                nl.set_up(l.index).await.map_err(fail)?;
                applied.changes += 1;
            }
            l.index
        }
        (_, link, _) => {
            if let Some(l) = link {
                tracing::warn!(device = %config.device, "replacing a link that cannot serve as the VXLAN device");
                nl.del_link(l.index).await.map_err(fail)?;
                applied.changes += 1;
            }
            applied.changes += 1;
            nl.add_vxlan(&want).await.map_err(fail)?
        }
    };
    // The device's address: this node's VTEP address (the first of its
    // pod range, as a /32, as flannel has it); any other goes.
    let own = Ipv4Net::new(local.pod_cidr.network(), 32).map_err(|e| e.to_string())?;
    let addresses = nl.addresses(Some(index)).await.map_err(fail)?;
    for (_, net) in &addresses {
        // IPv6 link-local addresses are the kernel's, not ours to judge.
        if matches!(net, ipnet::IpNet::V4(_)) && *net != ipnet::IpNet::V4(own) {
            nl.del_address(index, *net).await.map_err(fail)?;
            applied.changes += 1;
        }
    }
    if !addresses
        .iter()
        .any(|(_, net)| *net == ipnet::IpNet::V4(own))
    {
        nl.add_address_without_broadcast(index, own.into())
            .await
            .map_err(fail)?;
        applied.changes += 1;
    }
    Ok((index, want.mac))
}

#[cfg(test)]
mod tests;
