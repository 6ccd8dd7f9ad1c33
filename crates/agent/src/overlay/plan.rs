//! The overlay's planner: from this node and the cluster's Nodes to the
//! remote pod ranges this node must reach and how (pure: no I/O).
//!
//! The Node annotations are flannel's (`pkg/subnet/kube`): a node takes
//! part once it says `kube-subnet-manager: "true"`, and is reached through
//! `public-ip` (its underlay address) and, for VXLAN, the `VtepMAC` of its
//! `backend-data`. strait writes the same annotations with the same
//! values, so flannel's nodes and strait's route to each other.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use strait_linux::{mac_string, parse_mac};
use strait_model::k8s_openapi::api::core::v1::Node;
use strait_model::ClusterState;

/// The annotations flannel writes on each Node and reads from the others.
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
/// Set by a user on a Node to choose its underlay address (flannel then
/// publishes it as `public-ip`).
pub const PUBLIC_IP_OVERWRITE: &str = "flannel.alpha.coreos.com/public-ip-overwrite";
pub const KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// How pod ranges of other nodes are reached: flannel's two backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Encapsulated in VXLAN to the remote node (any underlay).
    Vxlan,
    /// Routed directly via the remote node (one L2 underlay).
    HostGw,
}

impl Backend {
    /// The `backend-type` annotation's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }

    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "vxlan" => Some(Backend::Vxlan),
            "host-gw" => Some(Backend::HostGw),
            _ => None,
        }
    }
}

/// What the overlay is made of, as flannel's `net-conf.json` says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayConfig {
    pub backend: Backend,
    /// flannel's default VNI is 1; nodes must agree on it.
    pub vni: u32,
    /// flannel's default (the kernel's) VXLAN port, 8472, not IANA's 4789.
    pub port: u16,
    /// The VXLAN device: flannel's name by default, so that a node moving
    /// from flannel to strait adopts its device (and its MAC, which the
    /// other nodes know) instead of making a second one.
    pub device: String,
}

impl OverlayConfig {
    pub fn new(backend: Backend) -> OverlayConfig {
        OverlayConfig {
            backend,
            vni: 1,
            port: 8472,
            device: "flannel.1".into(),
        }
    }
}

/// This node, as the overlay needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    /// The underlay address other nodes send to (flannel's public IP).
    pub public_ip: Ipv4Addr,
    /// This node's IPv4 pod range.
    pub pod_cidr: Ipv4Net,
}

/// One other node this node routes to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Remote {
    pub node: String,
    pub pod_cidr: Ipv4Net,
    pub public_ip: Ipv4Addr,
    /// The remote VTEP's MAC (VXLAN only).
    pub vtep_mac: Option<[u8; 6]>,
}

impl Remote {
    /// The next hop of the route to the remote pod range: for VXLAN the
    /// remote VTEP's address, which is the range's first address (flannel
    /// puts it on its device as a /32), for host-gw the node itself.
    pub fn gateway(&self, backend: Backend) -> Ipv4Addr {
        match backend {
            Backend::Vxlan => self.pod_cidr.network(),
            Backend::HostGw => self.public_ip,
        }
    }
}

/// Why a Node is left out: the Node, the field, what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeProblem {
    pub node: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for NodeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node {:?}: {}: {}", self.node, self.field, self.message)
    }
}

fn problem(node: &str, field: impl Into<String>, message: impl Into<String>) -> NodeProblem {
    NodeProblem {
        node: node.to_owned(),
        field: field.into(),
        message: message.into(),
    }
}

fn annotation_field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// What the node should have: the remote nodes it routes to, in name
/// order, and the Nodes it leaves out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverlayPlan {
    pub remotes: Vec<Remote>,
    /// Nodes with something malformed or contradictory: left out, each
    /// hurting only itself.
    pub problems: Vec<NodeProblem>,
    /// Nodes that have not published their overlay yet (no
    /// `kube-subnet-manager: "true"`): left out until they do.
    pub pending: Vec<String>,
}

/// The first IPv4 pod range of a Node (`spec.podCIDRs`, else the older
/// `spec.podCIDR`); `Ok(None)` when it has none (yet).
pub fn node_pod_cidr(node: &Node) -> Result<Option<Ipv4Net>, NodeProblem> {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let spec = node.spec.as_ref();
    let (field, list): (&str, Vec<&String>) = match spec.and_then(|s| s.pod_cidrs.as_ref()) {
        Some(list) if !list.is_empty() => ("spec.podCIDRs", list.iter().collect()),
        _ => (
            "spec.podCIDR",
            spec.and_then(|s| s.pod_cidr.as_ref()).into_iter().collect(),
        ),
    };
    for (i, text) in list.iter().enumerate() {
        let field = if field == "spec.podCIDRs" {
            format!("{field}[{i}]")
        } else {
            field.to_owned()
        };
        let net: IpNet = text
            .parse()
            .map_err(|_| problem(name, &field, format!("{text:?} is not a CIDR")))?;
        if net.trunc() != net {
            return Err(problem(
                name,
                &field,
                format!(
                    "{text:?} has host bits set (the network is {})",
                    net.trunc()
                ),
            ));
        }
        if let IpNet::V4(v4) = net {
            if v4.prefix_len() > 30 {
                return Err(problem(
                    name,
                    &field,
                    format!("{text:?} is too small for a node's pods"),
                ));
            }
            return Ok(Some(v4));
        }
    }
    Ok(None)
}

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// A unicast address another node can send to.
fn usable_ip(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast())
}

fn parse_public_ip(name: &str, key: &str, text: &str) -> Result<Ipv4Addr, NodeProblem> {
    let ip: Ipv4Addr = text.parse().map_err(|_| {
        problem(
            name,
            annotation_field(key),
            format!("{text:?} is not an IPv4 address"),
        )
    })?;
    if !usable_ip(ip) {
        return Err(problem(
            name,
            annotation_field(key),
            format!("{ip} is not a unicast address another node can reach"),
        ));
    }
    Ok(ip)
}

/// This node for the overlay: its pod range, and its underlay address —
/// the `public-ip-overwrite` annotation if a user set one (as flannel
/// honours it), else `node_ip` (the agent's `--node-ip`), else the Node's
/// InternalIP, else its ExternalIP.
pub fn local_node(
    state: &ClusterState,
    name: &str,
    node_ip: Option<Ipv4Addr>,
) -> Result<LocalNode, NodeProblem> {
    let node = state
        .nodes
        .get("", name)
        .ok_or_else(|| problem(name, "metadata.name", "no such Node in the cluster (yet)"))?;
    let pod_cidr = node_pod_cidr(node)?
        .ok_or_else(|| problem(name, "spec.podCIDRs", "no IPv4 pod range assigned (yet)"))?;
    let overwrite = annotation(node, PUBLIC_IP_OVERWRITE).filter(|s| !s.is_empty());
    let public_ip = if let Some(text) = overwrite {
        parse_public_ip(name, PUBLIC_IP_OVERWRITE, text)?
    } else if let Some(ip) = node_ip {
        ip
    } else {
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let pick = |kind: &str| {
            addresses.iter().filter(|a| a.type_ == kind).find_map(|a| {
                a.address
                    .parse::<Ipv4Addr>()
                    .ok()
                    .filter(|ip| usable_ip(*ip))
            })
        };
        pick("InternalIP")
            .or_else(|| pick("ExternalIP"))
            .ok_or_else(|| {
                problem(
                    name,
                    "status.addresses",
                    "no IPv4 InternalIP or ExternalIP (give the agent --node-ip)",
                )
            })?
    };
    Ok(LocalNode {
        name: name.to_owned(),
        public_ip,
        pod_cidr,
    })
}

/// The VTEP MAC of a `backend-data` annotation (`{"VNI":1,"VtepMAC":"…"}`),
/// checking the VNI agrees with ours when it is given.
fn vtep_of(name: &str, text: &str, vni: u32) -> Result<[u8; 6], NodeProblem> {
    let field = annotation_field(BACKEND_DATA);
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| problem(name, &field, format!("not JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(problem(name, &field, "not a JSON object"));
    };
    if let Some(v) = object.get("VNI") {
        match v.as_u64() {
            Some(n) if n == u64::from(vni) => {}
            _ => {
                return Err(problem(
                    name,
                    format!("{field}.VNI"),
                    format!("{v} differs from this node's VNI {vni}: the tunnels cannot meet"),
                ))
            }
        }
    }
    let mac = object
        .get("VtepMAC")
        .and_then(|m| m.as_str())
        .ok_or_else(|| problem(name, format!("{field}.VtepMAC"), "missing"))?;
    let bytes = parse_mac(mac).ok_or_else(|| {
        problem(
            name,
            format!("{field}.VtepMAC"),
            format!("{mac:?} is not a MAC address"),
        )
    })?;
    // A group address (low bit of the first byte) or zero would flood.
    if bytes[0] & 1 == 1 || bytes == [0; 6] {
        return Err(problem(
            name,
            format!("{field}.VtepMAC"),
            format!("{mac} is not a unicast MAC address"),
        ));
    }
    Ok(bytes)
}

/// One other Node as a remote, or why not (`Ok(None)`: not published yet).
fn remote_of(
    node: &Node,
    local: &LocalNode,
    config: &OverlayConfig,
) -> Result<Option<Remote>, NodeProblem> {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if annotation(node, KUBE_SUBNET_MANAGER) != Some("true") {
        return Ok(None);
    }
    let backend = annotation(node, BACKEND_TYPE).unwrap_or_default();
    if backend != config.backend.as_str() {
        return Err(problem(
            name,
            annotation_field(BACKEND_TYPE),
            format!(
                "{backend:?} differs from this node's {:?}: no way to reach it",
                config.backend.as_str()
            ),
        ));
    }
    let public_ip = parse_public_ip(
        name,
        PUBLIC_IP,
        annotation(node, PUBLIC_IP).unwrap_or_default(),
    )?;
    if public_ip == local.public_ip {
        return Err(problem(
            name,
            annotation_field(PUBLIC_IP),
            format!("{public_ip} is this node's own address"),
        ));
    }
    let pod_cidr = node_pod_cidr(node)?
        .ok_or_else(|| problem(name, "spec.podCIDRs", "no IPv4 pod range assigned"))?;
    if pod_cidr.contains(&local.pod_cidr) || local.pod_cidr.contains(&pod_cidr) {
        return Err(problem(
            name,
            "spec.podCIDRs",
            format!(
                "{pod_cidr} overlaps this node's own pod range {}",
                local.pod_cidr
            ),
        ));
    }
    let vtep_mac = match config.backend {
        Backend::Vxlan => Some(vtep_of(
            name,
            annotation(node, BACKEND_DATA).unwrap_or_default(),
            config.vni,
        )?),
        Backend::HostGw => None,
    };
    Ok(Some(Remote {
        node: name.to_owned(),
        pod_cidr,
        public_ip,
        vtep_mac,
    }))
}

/// Plan the overlay of `local` from every other Node: each remote pod
/// range once, never one that overlaps this node's own or an earlier
/// (by name) remote's, never two remotes with one VTEP MAC.
pub fn plan(state: &ClusterState, local: &LocalNode, config: &OverlayConfig) -> OverlayPlan {
    let mut out = OverlayPlan::default();
    let mut nodes: Vec<&Node> = state.nodes.iter().map(|n| &**n).collect();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if name == local.name {
            continue;
        }
        let remote = match remote_of(node, local, config) {
            Ok(Some(r)) => r,
            Ok(None) => {
                out.pending.push(name.to_owned());
                continue;
            }
            Err(p) => {
                out.problems.push(p);
                continue;
            }
        };
        let clash = out.remotes.iter().find_map(|r| {
            if r.pod_cidr.contains(&remote.pod_cidr) || remote.pod_cidr.contains(&r.pod_cidr) {
                Some(problem(
                    name,
                    "spec.podCIDRs",
                    format!(
                        "{} overlaps Node {:?}'s {}",
                        remote.pod_cidr, r.node, r.pod_cidr
                    ),
                ))
            } else if remote.vtep_mac.is_some() && r.vtep_mac == remote.vtep_mac {
                Some(problem(
                    name,
                    format!("{}.VtepMAC", annotation_field(BACKEND_DATA)),
                    format!(
                        "{} is Node {:?}'s VTEP MAC too",
                        mac_string(&remote.vtep_mac.unwrap_or_default()),
                        r.node
                    ),
                ))
            } else {
                None
            }
        });
        match clash {
            Some(p) => out.problems.push(p),
            None => out.remotes.push(remote),
        }
    }
    out
}

/// The annotations this node publishes, with flannel's exact values (its
/// `backend-data` is Go's JSON of `{VNI, VtepMAC}`; host-gw has none,
/// which Go writes as `null`).
pub fn annotations(
    config: &OverlayConfig,
    local: &LocalNode,
    vtep_mac: Option<[u8; 6]>,
) -> BTreeMap<String, String> {
    let data = match (config.backend, vtep_mac) {
        (Backend::Vxlan, Some(mac)) => {
            format!(
                "{{\"VNI\":{},\"VtepMAC\":\"{}\"}}",
                config.vni,
                mac_string(&mac)
            )
        }
        _ => "null".to_owned(),
    };
    BTreeMap::from([
        (BACKEND_TYPE.to_owned(), config.backend.as_str().to_owned()),
        (BACKEND_DATA.to_owned(), data),
        (PUBLIC_IP.to_owned(), local.public_ip.to_string()),
        (KUBE_SUBNET_MANAGER.to_owned(), "true".to_owned()),
    ])
}

/// The annotations of `want` that the Node `name` lacks or has otherwise
/// (empty: nothing to publish).
pub fn annotations_to_publish(
    state: &ClusterState,
    name: &str,
    want: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let have = state
        .nodes
        .get("", name)
        .and_then(|n| n.metadata.annotations.clone())
        .unwrap_or_default();
    want.iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A VTEP MAC for a new device, derived from the node's address so that a
/// device made again (a restart that found none) gets the same one and
/// the published annotation stays true: `0a:58` and the IPv4 address, as
/// the CNI plugins derive veth MACs (node addresses are never pod ones).
pub fn vtep_mac_for(public_ip: Ipv4Addr) -> [u8; 6] {
    let o = public_ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

#[cfg(test)]
mod tests;
