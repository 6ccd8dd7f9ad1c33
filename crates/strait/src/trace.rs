//! `strait trace`: a packet's way through the cluster, explained from the
//! same plan the kernel runs. The name is resolved from the DNS zone the
//! DNS server would serve; the Service proxy's tables for each node on the
//! way are planned and rendered as `strait proxy` would program them, and
//! the packet tracer walks them hook by hook (every random choice with its
//! probability); the nodes' addresses and pod ranges give the routing and
//! the overlay hop.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;
use serde::Serialize;
use strait_dns::Zone;
use strait_model::ClusterState;
use strait_nft::trace::{self as tracer, Fate, Node as TraceNode, Origin, Outcome, Packet, Route};
use strait_nft::{protocol, Table};
use strait_proxy::{Family, NodeContext};

use crate::cli::{LabBackend, PacketArgs, TraceArgs, TraceOutput};
use crate::error::Error;
use crate::state::{cluster_config, load};

/// `strait trace -f MANIFESTS …`.
pub fn run(args: &TraceArgs) -> Result<(), Error> {
    let config = cluster_config(&args.cluster)?;
    let state = load(
        &args.manifests.files,
        args.manifests.recursive,
        &config,
        None,
    )?;
    let nodes = Topology::from_state(&state);
    let mut cluster_cidrs = Vec::new();
    for c in &args.cluster_cidrs {
        cluster_cidrs.push(c.parse::<IpNet>().map_err(|_| Error::Flag {
            flag: "--cluster-cidr",
            message: format!("{c:?} is not a CIDR"),
        })?);
    }
    if cluster_cidrs.is_empty() {
        cluster_cidrs = nodes.iter().flat_map(|n| n.pod_cidrs.clone()).collect();
    }
    let topology = Topology {
        nodes,
        cluster_cidrs,
        service_cidrs: config.service_cidrs.iter().map(|c| c.net()).collect(),
        backend: match args.backend {
            LabBackend::Vxlan => Backend::Vxlan,
            LabBackend::HostGw => Backend::HostGw,
        },
        extra_tables: Vec::new(),
    };
    print(
        &state,
        &topology,
        &args.cluster_domain,
        &args.packet,
        args.node.as_deref(),
    )
}

/// Trace and print, as text or JSON.
pub fn print(
    state: &ClusterState,
    topology: &Topology,
    domain: &str,
    packet: &PacketArgs,
    node: Option<&str>,
) -> Result<(), Error> {
    if let Some(n) = node {
        if topology.node(n).is_none() {
            return Err(Error::Trace(format!("--node: no node {n:?}")));
        }
    }
    let dns_ips: Vec<IpAddr> = topology
        .service_cidrs
        .iter()
        .filter_map(|c| strait_model::controllers::ServiceCidr::new(*c).ok())
        .map(|c| c.dns_ip())
        .collect();
    let zone = Zone::build(state, domain, 5, 1, &dns_ips);
    let policy_chains = RefCell::new(BTreeMap::new());
    let tables = |n: &NodeInfo| node_tables(state, topology, n, &policy_chains);
    let cluster = Cluster {
        state,
        zone: &zone,
        topology,
        tables: &tables,
        policy_chains: &policy_chains,
    };
    let from = source(state, topology, &packet.from, node)?;
    let from = Source {
        node: node.map(str::to_owned).or(from.node.clone()),
        ..from
    };
    let report = trace(&cluster, &from, &packet.to, &packet.protocol)?;
    match packet.output {
        TraceOutput::Text => print!("{}", text(&report)),
        TraceOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| Error::Output(e.to_string()))?
        ),
    }
    Ok(())
}

/// How pod ranges of different nodes reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// flannel's VXLAN: `flannel.1`, VNI 1, UDP 8472.
    Vxlan,
    /// Plain routes to the other nodes' addresses.
    HostGw,
}

/// The bridge pods are attached to (the CNI configuration's `bridge`).
pub const BRIDGE: &str = "cni0";
/// The node's underlay interface.
pub const UPLINK: &str = "eth0";
/// flannel's VXLAN device, VNI and port.
pub const VXLAN_DEVICE: &str = "flannel.1";
pub const VXLAN_VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;

/// One node as the trace sees it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub pod_cidrs: Vec<IpNet>,
}

/// The cluster's network: its nodes, the pod network, how nodes are joined.
pub struct Topology {
    pub nodes: Vec<NodeInfo>,
    pub cluster_cidrs: Vec<IpNet>,
    pub service_cidrs: Vec<IpNet>,
    pub backend: Backend,
    /// Tables besides the proxy's on every node (the lab's masquerade).
    pub extra_tables: Vec<Table>,
}

impl Topology {
    /// Nodes from the Node objects: InternalIP (else ExternalIP) addresses
    /// and spec.podCIDRs.
    pub fn from_state(state: &ClusterState) -> Vec<NodeInfo> {
        let mut nodes = Vec::new();
        for n in state.nodes.iter() {
            let name = n.metadata.name.clone().unwrap_or_default();
            let addresses = crate::proxy::node_addresses(state, &name);
            let spec = n.spec.as_ref();
            let mut pod_cidrs: Vec<IpNet> = spec
                .and_then(|s| s.pod_cidrs.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| c.parse().ok())
                .collect();
            if pod_cidrs.is_empty() {
                pod_cidrs.extend(
                    spec.and_then(|s| s.pod_cidr.as_deref())
                        .and_then(|c| c.parse::<IpNet>().ok()),
                );
            }
            nodes.push(NodeInfo {
                name,
                addresses,
                pod_cidrs,
            });
        }
        nodes
    }

    fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node whose pod range holds `ip`.
    fn node_of_pod_ip(&self, ip: IpAddr) -> Option<&NodeInfo> {
        self.nodes
            .iter()
            .find(|n| n.pod_cidrs.iter().any(|c| c.contains(&ip)))
    }

    /// The node that has `ip` as its own address.
    fn node_with_address(&self, ip: IpAddr) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.addresses.contains(&ip))
    }

    /// What the tracer needs of `node`: its addresses (its own, the
    /// bridge's gateway and the VXLAN device's), and its routes: its pod
    /// range on the bridge, the other nodes' ranges over the overlay (or
    /// via their address), everything else out of the uplink.
    fn trace_node(&self, node: &NodeInfo) -> TraceNode {
        let mut local = node.addresses.clone();
        let mut routes = Vec::new();
        for c in &node.pod_cidrs {
            let gateway = gateway(c);
            local.push(gateway);
            routes.push(Route {
                to: *c,
                oif: BRIDGE.into(),
                src: Some(gateway),
            });
            if self.backend == Backend::Vxlan {
                local.push(c.network());
            }
        }
        for other in self.nodes.iter().filter(|o| o.name != node.name) {
            for c in &other.pod_cidrs {
                let (oif, src) = match self.backend {
                    Backend::Vxlan => (
                        VXLAN_DEVICE,
                        node.pod_cidrs
                            .iter()
                            .find(|own| own.addr().is_ipv4() == c.addr().is_ipv4())
                            .map(|own| own.network()),
                    ),
                    Backend::HostGw => (UPLINK, first_of_family(&node.addresses, c.addr())),
                };
                routes.push(Route {
                    to: *c,
                    oif: oif.into(),
                    src,
                });
            }
        }
        for default in ["0.0.0.0/0", "::/0"] {
            let to: IpNet = default.parse().expect("a network");
            routes.push(Route {
                to,
                oif: UPLINK.into(),
                src: first_of_family(&node.addresses, to.addr()),
            });
        }
        TraceNode {
            local,
            routes,
            ..TraceNode::default()
        }
    }
}

/// The bridge's address in a pod range: its first host address, as the CNI
/// bridge plugin's `isGateway` takes it.
fn gateway(range: &IpNet) -> IpAddr {
    match range.network() {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) + 1)),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) + 1).into()),
    }
}

fn first_of_family(addresses: &[IpAddr], like: IpAddr) -> Option<IpAddr> {
    addresses
        .iter()
        .copied()
        .find(|a| a.is_ipv4() == like.is_ipv4())
}

/// Where the packet starts.
#[derive(Clone, Debug, Serialize)]
pub struct Source {
    pub address: IpAddr,
    /// `ns/name` of the pod that sends it.
    pub pod: Option<String>,
    /// The node whose kernel it meets first.
    pub node: Option<String>,
    /// How it meets that kernel: from a pod on the bridge, from the node
    /// itself, or from outside the cluster through the uplink.
    pub enters: Entry,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Entry {
    Pod,
    Node,
    Outside,
}

/// `--from`: `ns/pod`, a pod's or node's address, or any other address
/// (a client outside the cluster, entering `--node`).
pub fn source(
    state: &ClusterState,
    topology: &Topology,
    from: &str,
    node: Option<&str>,
) -> Result<Source, Error> {
    if let Some((ns, name)) = from.split_once('/') {
        let pod = state
            .pods
            .get(ns, name)
            .ok_or_else(|| Error::Trace(format!("--from: no pod {ns}/{name}")))?;
        let address: IpAddr = pod
            .pod_ip()
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| Error::Trace(format!("--from: pod {ns}/{name} has no IP yet")))?;
        // A pod with its node's address is on the node's network.
        let enters = if topology.node_with_address(address).is_some() {
            Entry::Node
        } else {
            Entry::Pod
        };
        return Ok(Source {
            address,
            pod: Some(format!("{ns}/{name}")),
            node: pod.node_name().map(str::to_owned),
            enters,
        });
    }
    let address: IpAddr = from.parse().map_err(|_| {
        Error::Trace(format!(
            "--from: {from:?} is neither namespace/pod nor an IP address"
        ))
    })?;
    if let Some(n) = topology.node_with_address(address) {
        return Ok(Source {
            address,
            pod: None,
            node: Some(n.name.clone()),
            enters: Entry::Node,
        });
    }
    if let Some((pod, _)) = pod_with_ip(state, address) {
        return source(state, topology, &pod, node);
    }
    Ok(Source {
        address,
        pod: None,
        node: node.map(str::to_owned),
        enters: Entry::Outside,
    })
}

/// What the DNS server answers for a name, followed through CNAMEs in the
/// zone.
#[derive(Clone, Debug, Serialize)]
pub struct Resolution {
    /// The name as asked, and the name that answered (after the search path).
    pub asked: String,
    pub answered: Option<String>,
    pub cnames: Vec<String>,
    pub addresses: Vec<IpAddr>,
    /// A CNAME out of the cluster domain: the upstream servers answer it.
    pub external: Option<String>,
}

/// Resolve `name` as a pod in `namespace` would, with the search path the
/// kubelet writes (`ns.svc.D svc.D D`, `ndots:5`).
pub fn resolve(zone: &Zone, name: &str, namespace: Option<&str>) -> Resolution {
    let asked = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = zone.domain.clone();
    let mut candidates = Vec::new();
    let absolute = name.ends_with('.') || asked.matches('.').count() >= 5;
    if !absolute {
        if let Some(ns) = namespace {
            candidates.push(format!("{asked}.{ns}.svc.{domain}"));
        }
        candidates.push(format!("{asked}.svc.{domain}"));
        candidates.push(format!("{asked}.{domain}"));
    }
    candidates.push(asked.clone());
    let mut out = Resolution {
        asked: name.to_owned(),
        answered: None,
        cnames: Vec::new(),
        addresses: Vec::new(),
        external: None,
    };
    for candidate in candidates {
        let Some(records) = zone.names.get(candidate.as_str()) else {
            continue;
        };
        if records.is_empty() {
            continue;
        }
        out.answered = Some(candidate.clone());
        let mut current = records;
        // A CNAME chain inside the zone is followed as the server does.
        for _ in 0..8 {
            if let Some(target) = current.cname() {
                let target = target.trim_end_matches('.').to_ascii_lowercase();
                out.cnames.push(target.clone());
                match zone.names.get(target.as_str()) {
                    Some(next) => current = next,
                    None => {
                        out.external = Some(target);
                        break;
                    }
                }
                continue;
            }
            out.addresses.extend(current.a().map(IpAddr::V4));
            out.addresses.extend(current.aaaa().map(IpAddr::V6));
            break;
        }
        break;
    }
    out
}

/// What one hop (one node's kernel) did with the packet.
#[derive(Clone, Debug, Serialize)]
pub struct Hop {
    pub node: String,
    /// The packet as it meets this node.
    pub packet: String,
    pub enters: String,
    pub outcomes: Vec<Way>,
}

/// One possible way through a node, with its probability.
#[derive(Clone, Debug, Serialize)]
pub struct Way {
    pub probability: f64,
    pub fate: String,
    pub destination: String,
    pub dnat: bool,
    pub masquerade: bool,
    pub source_after: Option<IpAddr>,
    pub out_interface: Option<String>,
    /// The pod the destination is (`ns/name`), and its node.
    pub pod: Option<String>,
    pub pod_node: Option<String>,
    /// The overlay hop to another node, when there is one.
    pub overlay: Option<String>,
    /// The rule that dropped or rejected the packet.
    pub stopped_by: Option<String>,
    /// Every rule evaluated, in order.
    pub rules: Vec<RuleStep>,
    /// What the next node did, when the packet crosses to one.
    pub next: Option<Box<Hop>>,
    /// The reply's way back, as conntrack rewrites it.
    pub reply: Option<String>,
}

/// One rule the packet met (or a base chain's policy: no index).
#[derive(Clone, Debug, Serialize)]
pub struct RuleStep {
    pub hook: String,
    pub family: String,
    pub table: String,
    pub chain: String,
    pub index: Option<usize>,
    pub rule: String,
    /// Whether all its matches held (its statements ran).
    pub matched: bool,
    /// In a policy class chain: the policies it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// A whole trace.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub from: Source,
    pub to: String,
    pub protocol: String,
    pub dns: Option<Resolution>,
    pub destination: Option<SocketAddr>,
    pub service: Option<String>,
    pub first_hop: Option<Hop>,
    pub notes: Vec<String>,
}

fn protocol_number(p: &str) -> Result<u8, Error> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok(protocol::TCP),
        "udp" => Ok(protocol::UDP),
        "sctp" => Ok(protocol::SCTP),
        other => Err(Error::Trace(format!(
            "--protocol: {other:?} is not tcp, udp or sctp"
        ))),
    }
}

/// An ephemeral source port, as a client's kernel would pick one.
const CLIENT_PORT: u16 = 40000;

/// The pod that has `ip`, as `ns/name`, with its node.
fn pod_with_ip(state: &ClusterState, ip: IpAddr) -> Option<(String, Option<String>)> {
    let text = ip.to_string();
    state
        .pods
        .iter()
        .find(|p| p.pod_ips().any(|a| a == text))
        .map(|p| {
            (
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default()
                ),
                p.node_name().map(str::to_owned),
            )
        })
}

/// The Service that holds `ip:port` as a ClusterIP, external IP or LB IP.
fn service_at(state: &ClusterState, ip: IpAddr, port: u16) -> Option<String> {
    let text = ip.to_string();
    state.services.iter().find_map(|s| {
        let spec = s.spec.as_ref()?;
        let mut ips: Vec<&str> = spec
            .cluster_ips
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        ips.extend(spec.external_ips.iter().flatten().map(String::as_str));
        ips.extend(
            s.status
                .as_ref()
                .and_then(|st| st.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()),
        );
        let has_port = spec
            .ports
            .iter()
            .flatten()
            .any(|p| p.port == i32::from(port));
        (ips.contains(&text.as_str()) && has_port).then(|| {
            format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default()
            )
        })
    })
}

/// Everything `trace` needs besides the request.
pub struct Cluster<'a> {
    pub state: &'a ClusterState,
    pub zone: &'a Zone,
    pub topology: &'a Topology,
    /// The proxy's tables of a node, as it would program them.
    pub tables: &'a dyn Fn(&NodeInfo) -> Result<Vec<Table>, Error>,
    /// The policy tables' class chains, by name: what each stands for
    /// (filled by `tables` for the nodes it plans; a chain's name is a
    /// hash of its policies, the same on every node).
    pub policy_chains: &'a RefCell<BTreeMap<String, String>>,
}

/// Trace a packet from `from` to `to` (`NAME[:PORT]` or `IP:PORT`).
pub fn trace(
    cluster: &Cluster<'_>,
    from: &Source,
    to: &str,
    protocol_name: &str,
) -> Result<Report, Error> {
    let proto = protocol_number(protocol_name)?;
    let mut report = Report {
        from: from.clone(),
        to: to.to_owned(),
        protocol: protocol_name.to_ascii_lowercase(),
        dns: None,
        destination: None,
        service: None,
        first_hop: None,
        notes: Vec::new(),
    };
    let destination = match to.parse::<SocketAddr>() {
        Ok(sa) => sa,
        Err(_) => {
            let (name, port) = to.rsplit_once(':').ok_or_else(|| {
                Error::Trace(format!("--to: {to:?} needs a port (NAME:PORT or IP:PORT)"))
            })?;
            let port: u16 = port
                .parse()
                .map_err(|_| Error::Trace(format!("--to: {port:?} is not a port")))?;
            let namespace = from.pod.as_deref().and_then(|p| p.split('/').next());
            let resolution = resolve(cluster.zone, name, namespace);
            let first = resolution.addresses.first().copied();
            let external = resolution.external.clone();
            report.dns = Some(resolution);
            match (first, external) {
                (Some(ip), _) => SocketAddr::new(ip, port),
                (None, Some(target)) => {
                    report.notes.push(format!(
                        "{name} is a CNAME to {target}, outside the cluster: the upstream servers answer it; trace its address with --to IP:{port}"
                    ));
                    return Ok(report);
                }
                (None, None) => {
                    report
                        .notes
                        .push(format!("{name}: no such name in the cluster (NXDOMAIN)"));
                    return Ok(report);
                }
            }
        }
    };
    report.destination = Some(destination);
    report.service = service_at(cluster.state, destination.ip(), destination.port());
    let Some(node_name) = from.node.clone() else {
        report.notes.push(
            "the source is not on a node of the cluster: give --node, the node it enters".into(),
        );
        return Ok(report);
    };
    let node = cluster
        .topology
        .node(&node_name)
        .ok_or_else(|| Error::Trace(format!("--node: no node {node_name:?}")))?;
    let iif = match from.enters {
        Entry::Pod => BRIDGE,
        Entry::Outside => UPLINK,
        Entry::Node => "",
    };
    let mut packet = Packet::new(
        iif,
        proto,
        from.address,
        CLIENT_PORT,
        destination.ip(),
        destination.port(),
    );
    if from.enters == Entry::Node {
        packet = packet.local();
    }
    report.first_hop = Some(hop(cluster, node, &packet, from, 0)?);
    Ok(report)
}

/// Trace `packet` through `node` and, for ways that cross to another node,
/// through that one too.
fn hop(
    cluster: &Cluster<'_>,
    node: &NodeInfo,
    packet: &Packet,
    from: &Source,
    depth: usize,
) -> Result<Hop, Error> {
    let tables = (cluster.tables)(node)?;
    let mut all: Vec<&Table> = tables.iter().collect();
    all.extend(cluster.topology.extra_tables.iter());
    let trace_node = cluster.topology.trace_node(node);
    let outcomes = tracer::trace(&all, &trace_node, packet)
        .map_err(|e| Error::Trace(format!("node {}: {e}", node.name)))?;
    let mut ways = Vec::new();
    for o in &outcomes {
        ways.push(way(cluster, node, packet, from, o, depth)?);
    }
    let enters = match &packet.origin {
        Origin::Interface(i) => format!("in from {i}"),
        Origin::Local => "sent by the node itself".into(),
    };
    Ok(Hop {
        node: node.name.clone(),
        packet: format!(
            "{} -> {} {}",
            SocketAddr::new(packet.saddr, packet.sport.unwrap_or(0)),
            SocketAddr::new(packet.daddr, packet.dport.unwrap_or(0)),
            proto_name(packet.protocol)
        ),
        enters,
        outcomes: ways,
    })
}

fn proto_name(p: u8) -> String {
    strait_nft::text::value(&strait_nft::Value::Proto(p))
}

fn fate_name(f: &Fate) -> String {
    match f {
        Fate::Local => "delivered to the node".into(),
        Fate::Forwarded => "forwarded".into(),
        Fate::Sent => "sent".into(),
        Fate::Dropped => "dropped".into(),
        Fate::Rejected(r) => format!(
            "rejected ({})",
            strait_nft::text::expr(&strait_nft::Expr::Reject(*r), strait_nft::Family::Ip)
        ),
        Fate::NoRoute => "no route (host unreachable)".into(),
    }
}

fn way(
    cluster: &Cluster<'_>,
    node: &NodeInfo,
    packet: &Packet,
    from: &Source,
    o: &Outcome,
    depth: usize,
) -> Result<Way, Error> {
    let destination = SocketAddr::new(o.daddr, o.dport.unwrap_or(0)).to_string();
    let pod = pod_with_ip(cluster.state, o.daddr);
    let pod_node = pod.as_ref().and_then(|(_, n)| n.clone()).or_else(|| {
        cluster
            .topology
            .node_of_pod_ip(o.daddr)
            .map(|n| n.name.clone())
    });
    let rules = o
        .path
        .iter()
        .map(|s| RuleStep {
            hook: format!("{:?}", s.hook).to_ascii_lowercase(),
            family: strait_nft::text::family(s.family).into(),
            table: s.table.clone(),
            chain: s.chain.clone(),
            index: s.rule,
            rule: s.text.clone(),
            matched: s.matched,
            policy: (s.table == strait_policy::plan::TABLE_NAME)
                .then(|| cluster.policy_chains.borrow().get(&s.chain).cloned())
                .flatten(),
        })
        .collect();
    let stopped_by = o.stopped_by().map(|s| {
        let by = format!(
            "{} {} chain {}: {}",
            strait_nft::text::family(s.family),
            s.table,
            s.chain,
            s.text
        );
        match cluster.policy_chains.borrow().get(&s.chain) {
            Some(p) if s.table == strait_policy::plan::TABLE_NAME => format!("{by} ({p})"),
            _ => by,
        }
    });
    let source_after = if o.masquerade || o.snat.is_some() {
        o.snat.or(Some(packet.saddr))
    } else {
        None
    };
    let mut overlay = None;
    let mut next = None;
    let remote = pod_node
        .as_deref()
        .filter(|n| *n != node.name && o.fate == Fate::Forwarded);
    if let Some(remote_name) = remote {
        if let Some(remote_node) = cluster.topology.node(remote_name) {
            let outer_src = first_of_family(&node.addresses, o.daddr);
            let outer_dst = first_of_family(&remote_node.addresses, o.daddr);
            overlay = Some(match cluster.topology.backend {
                Backend::Vxlan => format!(
                    "VXLAN {} -> {} (udp/{VXLAN_PORT}, VNI {VXLAN_VNI}) to node {remote_name}",
                    show(outer_src),
                    show(outer_dst)
                ),
                Backend::HostGw => format!(
                    "routed via {} (node {remote_name}), no encapsulation",
                    show(outer_dst)
                ),
            });
            if depth < 2 {
                let inner_src = o.snat.unwrap_or(packet.saddr);
                let mut arriving = Packet::new(
                    match cluster.topology.backend {
                        Backend::Vxlan => VXLAN_DEVICE,
                        Backend::HostGw => UPLINK,
                    },
                    packet.protocol,
                    inner_src,
                    packet.sport.unwrap_or(CLIENT_PORT),
                    o.daddr,
                    o.dport.unwrap_or(0),
                );
                arriving.mark = 0;
                next = Some(Box::new(hop(
                    cluster,
                    remote_node,
                    &arriving,
                    from,
                    depth + 1,
                )?));
            }
        }
    }
    let reply = o.fate.passes().then(|| {
        let client = SocketAddr::new(packet.saddr, packet.sport.unwrap_or(0));
        let seen_src = SocketAddr::new(o.snat.unwrap_or(packet.saddr), packet.sport.unwrap_or(0));
        let mut text = format!("{destination} -> {seen_src}");
        let original = SocketAddr::new(packet.daddr, packet.dport.unwrap_or(0));
        let mut rewrites = Vec::new();
        if o.dnat {
            rewrites.push(format!("source back to {original}"));
        }
        if o.snat.is_some() || o.masquerade {
            rewrites.push(format!("destination back to {client}"));
        }
        if !rewrites.is_empty() {
            text.push_str(&format!(
                "; conntrack on {} rewrites the {}",
                node.name,
                rewrites.join(" and the ")
            ));
        }
        text
    });
    Ok(Way {
        probability: o.probability,
        fate: fate_name(&o.fate),
        destination,
        dnat: o.dnat,
        masquerade: o.masquerade,
        source_after,
        out_interface: o.oif.clone(),
        pod: pod.map(|(p, _)| p),
        pod_node,
        overlay,
        stopped_by,
        rules,
        next,
        reply,
    })
}

fn show(ip: Option<IpAddr>) -> String {
    ip.map(|i| i.to_string()).unwrap_or_else(|| "?".into())
}

/// The report as people read it.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let from = match (&report.from.pod, &report.from.node) {
        (Some(p), Some(n)) => format!("pod {p} ({}, node {n})", report.from.address),
        (None, Some(n)) if report.from.enters == Entry::Node => {
            format!("node {n} ({})", report.from.address)
        }
        (None, Some(n)) => format!("{} (outside, entering node {n})", report.from.address),
        _ => report.from.address.to_string(),
    };
    out.push_str(&format!(
        "trace {from} -> {} ({})\n",
        report.to, report.protocol
    ));
    if let Some(dns) = &report.dns {
        let answered = dns.answered.as_deref().unwrap_or("(no answer)");
        let mut line = format!("dns: {} -> {answered}", dns.asked);
        for c in &dns.cnames {
            line.push_str(&format!(" CNAME {c}"));
        }
        if !dns.addresses.is_empty() {
            let list: Vec<String> = dns.addresses.iter().map(|a| a.to_string()).collect();
            line.push_str(&format!(" -> {}", list.join(", ")));
        }
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(d) = report.destination {
        match &report.service {
            Some(s) => out.push_str(&format!("destination: {d} (Service {s})\n")),
            None => out.push_str(&format!("destination: {d}\n")),
        }
    }
    if let Some(hop) = &report.first_hop {
        write_hop(&mut out, hop, 0);
    }
    for n in &report.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

fn write_hop(out: &mut String, hop: &Hop, indent: usize) {
    let pad = "  ".repeat(indent);
    out.push_str(&format!(
        "{pad}node {}: {} ({})\n",
        hop.node, hop.packet, hop.enters
    ));
    for w in &hop.outcomes {
        let mut line = format!("{pad}  {:5.1}%  {}", w.probability * 100.0, w.fate);
        if w.dnat {
            line.push_str(&format!(", DNAT to {}", w.destination));
        } else if w.fate != "dropped" && !w.fate.starts_with("rejected") {
            line.push_str(&format!(" to {}", w.destination));
        }
        if let Some(p) = &w.pod {
            line.push_str(&format!(" (pod {p}"));
            if let Some(n) = &w.pod_node {
                line.push_str(&format!(" on {n}"));
            }
            line.push(')');
        }
        let passes = w.fate != "dropped" && !w.fate.starts_with("rejected");
        if let Some(i) = w.out_interface.as_ref().filter(|_| passes) {
            line.push_str(&format!(" out of {i}"));
        }
        if w.masquerade {
            line.push_str(&format!(", masqueraded to {}", show(w.source_after)));
        } else if let Some(s) = w.source_after {
            line.push_str(&format!(", source NAT to {s}"));
        } else if w.fate != "dropped" && !w.fate.starts_with("rejected") {
            line.push_str(", source kept");
        }
        out.push_str(&line);
        out.push('\n');
        if let Some(o) = &w.overlay {
            out.push_str(&format!("{pad}         overlay: {o}\n"));
        }
        if let Some(s) = &w.stopped_by {
            out.push_str(&format!("{pad}         by rule: {s}\n"));
        }
        if let Some(r) = &w.reply {
            out.push_str(&format!("{pad}         reply: {r}\n"));
        }
        out.push_str(&format!("{pad}         rules:\n"));
        for r in w.rules.iter().filter(|r| r.matched && r.index.is_some()) {
            let at = r.index.map(|i| format!("#{i}")).unwrap_or("policy".into());
            out.push_str(&format!(
                "{pad}           {} {} {} {} {at}: {}\n",
                r.hook, r.family, r.table, r.chain, r.rule
            ));
            if let Some(p) = &r.policy {
                out.push_str(&format!("{pad}             ({p})\n"));
            }
        }
        if let Some(next) = &w.next {
            write_hop(out, next, indent + 3);
        }
    }
}

/// The proxy's context on `node` (as `strait proxy --node` takes it).
pub fn node_context(topology: &Topology, node: &NodeInfo) -> NodeContext {
    NodeContext {
        node_name: node.name.clone(),
        node_ips: node.addresses.clone(),
        cluster_cidrs: topology.cluster_cidrs.clone(),
        service_cidrs: topology.service_cidrs.clone(),
        ..NodeContext::default()
    }
}

/// The tables on `node`: the proxy's, for both families that are in use,
/// and, when the cluster has NetworkPolicies, the policy part's (so a
/// trace shows which policy class and rule let a packet pass or dropped
/// it); what the policy class chains stand for goes into `policy_chains`.
pub fn node_tables(
    state: &ClusterState,
    topology: &Topology,
    node: &NodeInfo,
    policy_chains: &RefCell<BTreeMap<String, String>>,
) -> Result<Vec<Table>, Error> {
    let ctx = node_context(topology, node);
    let planned = strait_proxy::plan(state, &ctx);
    let mut tables = Vec::new();
    for family in [Family::V4, Family::V6] {
        // The IPv4 table always exists (as `strait proxy` makes it); the
        // IPv6 one once something uses it.
        if family == Family::V4 || strait_proxy::family_in_use(&planned, family) {
            let ruleset = strait_proxy::render(&planned, family);
            tables.push(strait_proxy::to_table(family, [&ruleset]));
        }
    }
    if !state.network_policies.is_empty() || !state.cluster_network_policies.is_empty() {
        let policy = strait_policy::plan::plan(state, &node.name);
        policy_chains.borrow_mut().extend(policy.chains);
        tables.push(policy.v4);
        tables.push(policy.v6);
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_model::controllers::{reconcile, ClusterConfig};
    use strait_model::{parse_str, Format};

    fn fixture() -> ClusterState {
        let text = include_str!("../../../tests/fixtures/cluster-dump.yaml");
        let loaded = parse_str("cluster-dump.yaml", text, Format::Yaml).unwrap();
        let desired = ClusterState::from_objects(
            loaded
                .objects
                .into_iter()
                .map(|(o, origin)| (o, Some(origin))),
        )
        .unwrap();
        reconcile(desired, None, &ClusterConfig::default()).unwrap()
    }

    fn topology(state: &ClusterState) -> Topology {
        Topology {
            nodes: Topology::from_state(state),
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
            backend: Backend::Vxlan,
            extra_tables: Vec::new(),
        }
    }

    #[test]
    fn names_resolve_through_the_pods_search_path() {
        let state = fixture();
        let zone = Zone::build(&state, "cluster.local", 5, 1, &[]);
        let r = resolve(&zone, "web", Some("shop"));
        assert_eq!(r.answered.as_deref(), Some("web.shop.svc.cluster.local"));
        assert_eq!(r.addresses, vec!["10.101.23.45".parse::<IpAddr>().unwrap()]);
        // From another namespace the short name is not found; the longer one is.
        assert!(resolve(&zone, "web", Some("default")).addresses.is_empty());
        let r = resolve(&zone, "web.shop", Some("default"));
        assert_eq!(r.answered.as_deref(), Some("web.shop.svc.cluster.local"));
        let r = resolve(&zone, "kubernetes.default.svc.cluster.local.", None);
        assert_eq!(r.addresses, vec!["10.96.0.1".parse::<IpAddr>().unwrap()]);
        assert!(resolve(&zone, "nope", Some("shop")).answered.is_none());
    }

    #[test]
    fn sources_are_pods_nodes_or_outsiders() {
        let state = fixture();
        let t = topology(&state);
        let pod = source(&state, &t, "10.244.0.5", None).unwrap();
        assert_eq!(pod.enters, Entry::Pod);
        assert_eq!(pod.node.as_deref(), Some("node-1"));
        assert!(pod.pod.as_deref().unwrap().starts_with("shop/web-"));
        let node = source(&state, &t, "172.18.0.3", None).unwrap();
        assert_eq!(
            (node.enters, node.node.as_deref()),
            (Entry::Node, Some("node-2"))
        );
        let outside = source(&state, &t, "192.0.2.9", Some("node-1")).unwrap();
        assert_eq!(outside.enters, Entry::Outside);
        assert!(source(&state, &t, "shop/nope", None).is_err());
        assert!(source(&state, &t, "not an address", None).is_err());
    }

    #[test]
    fn a_node_routes_its_pods_to_the_bridge_and_others_over_the_overlay() {
        let state = fixture();
        let mut t = topology(&state);
        let n1 = t.node("node-1").unwrap().clone();
        let tn = t.trace_node(&n1);
        assert!(tn.local.contains(&"172.18.0.2".parse().unwrap()));
        assert!(tn.local.contains(&"10.244.0.1".parse().unwrap()));
        let oif = |tn: &TraceNode, ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            tn.routes
                .iter()
                .filter(|r| r.to.contains(&ip))
                .max_by_key(|r| r.to.prefix_len())
                .map(|r| r.oif.clone())
        };
        assert_eq!(oif(&tn, "10.244.0.9").as_deref(), Some(BRIDGE));
        assert_eq!(oif(&tn, "10.244.1.8").as_deref(), Some(VXLAN_DEVICE));
        assert_eq!(oif(&tn, "192.0.2.1").as_deref(), Some(UPLINK));
        t.backend = Backend::HostGw;
        let tn = t.trace_node(&n1);
        assert_eq!(oif(&tn, "10.244.1.8").as_deref(), Some(UPLINK));
    }
}
