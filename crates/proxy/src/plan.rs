//! Services → a table of service ports with the endpoints each kind of
//! traffic may use. All Kubernetes semantics live here, as in kube-proxy:
//! usable endpoints (ready, else serving-and-terminating), traffic policies,
//! who is masqueraded, session affinity, what is rejected or dropped.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use strait_model::k8s_openapi::api::core::v1::Service;
use strait_model::k8s_openapi::api::discovery::v1::EndpointSlice;
use strait_model::ClusterState;

/// The mark bit that asks postrouting to masquerade (kube-proxy's 0x4000).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Services labelled with this belong to another proxy.
const LABEL_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Where the proxy runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeContext {
    pub node_name: String,
    /// The node's primary addresses: where NodePorts answer unless
    /// `nodeport_addresses` says otherwise, and which loadBalancerSourceRanges
    /// count as holding the node.
    pub node_ips: Vec<IpAddr>,
    /// The pod network. Traffic to a ClusterIP from outside it is
    /// masqueraded; without it nothing is (as kube-proxy without --cluster-cidr).
    pub cluster_cidrs: Vec<IpNet>,
    /// The Service network (`--service-cidr`): new connections to an
    /// address in it that no Service holds are dropped, as kube-proxy does,
    /// instead of leaving by the default route.
    pub service_cidrs: Vec<IpNet>,
    /// `--nodeport-addresses`: NodePorts answer on the local addresses in
    /// these networks. Empty means kube-proxy's default `primary`: the node's
    /// primary IPs (`node_ips`) only.
    pub nodeport_addresses: Vec<IpNet>,
}

impl NodeContext {
    /// The networks whose local addresses answer NodePorts.
    pub fn nodeport_networks(&self) -> Vec<IpNet> {
        if !self.nodeport_addresses.is_empty() {
            return self.nodeport_addresses.clone();
        }
        self.node_ips.iter().map(|ip| IpNet::from(*ip)).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn from_k8s(p: Option<&str>) -> Option<Protocol> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// As nft spells it.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// An address family: each has its own table (`ip strait`, `ip6 strait`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    #[default]
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// As EndpointSlice `addressType` spells it.
    pub fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn parse(self, text: &str) -> Option<IpAddr> {
        text.trim()
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| Family::of(*ip) == self)
    }
}

/// One backend address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    /// On this node.
    pub local: bool,
}

/// One port of one Service, with everything the ruleset needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name, or its number when unnamed.
    pub port_name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub family: Family,
    pub cluster_ip: Option<IpAddr>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` (not those with `ipMode: Proxy`).
    pub load_balancer_ips: Vec<IpAddr>,
    pub node_port: Option<u16>,
    /// `loadBalancerSourceRanges` of this family, merged: with `firewall`,
    /// only these clients may use the LB IPs.
    pub source_ranges: Vec<IpNet>,
    /// The LB IPs accept only `source_ranges` (empty: nobody). Set when the
    /// Service has source ranges, and also when its ranges or LB ingress
    /// cannot be read: such a load balancer stays closed, never open.
    pub firewall: bool,
    /// A source range holds a node IP: the LB IPs themselves are accepted as
    /// sources too (a cloud LB that hairpins keeps its own address), as in
    /// kube-proxy.
    pub lb_ips_as_sources: bool,
    /// `sessionAffinity: ClientIP` timeout.
    pub affinity_timeout: Option<u32>,
    pub internal_local: bool,
    pub external_local: bool,
    /// Endpoints for traffic to the ClusterIP (and for pod/node traffic to
    /// external addresses): after `internalTrafficPolicy`.
    pub cluster_endpoints: Vec<Endpoint>,
    /// This node's usable endpoints (for `externalTrafficPolicy: Local`).
    pub local_endpoints: Vec<Endpoint>,
    /// Every usable endpoint, whatever the policies (external traffic with
    /// `externalTrafficPolicy: Cluster` uses these).
    pub all_endpoints: Vec<Endpoint>,
    /// Whether the Service has any usable endpoint anywhere.
    pub has_endpoints: bool,
    /// Where load balancers ask whether this node has local endpoints
    /// (LoadBalancer with `externalTrafficPolicy: Local`).
    pub health_check_node_port: Option<u16>,
}

impl ServicePort {
    /// `ns/name:port` — how logs and comments name it.
    pub fn display(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.name, self.port_name)
    }

    /// Reached from outside the cluster network: NodePort, externalIPs, LB.
    pub fn has_external(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }
}

/// Every service port this node programs, sorted by namespace, name, port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceTable {
    pub ports: Vec<ServicePort>,
    pub cluster_cidrs: Vec<IpNet>,
    pub service_cidrs: Vec<IpNet>,
    /// Where NodePorts answer (see [`NodeContext::nodeport_networks`]).
    pub nodeport_networks: Vec<IpNet>,
    /// What was wrong with Services, one line each (`Service ns/name: field: why`).
    pub problems: Vec<String>,
}

/// Plan the Services of `state` for the node `ctx`.
pub fn plan(state: &ClusterState, ctx: &NodeContext) -> ServiceTable {
    let mut slices_by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    let families = [Family::V4.address_type(), Family::V6.address_type()];
    for slice in state.endpoint_slices.iter() {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE_NAME))
        else {
            continue;
        };
        if !families.contains(&slice.address_type.as_str()) {
            continue;
        }
        let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
        slices_by_service
            .entry((ns, service.as_str()))
            .or_default()
            .push(slice);
    }
    let mut ports = Vec::new();
    let mut problems = Vec::new();
    for service in state.services.iter() {
        let ns = service.metadata.namespace.as_deref().unwrap_or_default();
        let name = service.metadata.name.as_deref().unwrap_or_default();
        for p in service_problems(service) {
            problems.push(format!("Service {ns:?}/{name:?}: {p}"));
        }
        let slices = slices_by_service
            .get(&(ns, name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        ports.extend(plan_service(service, slices, ctx));
    }
    ServiceTable {
        ports,
        cluster_cidrs: ctx.cluster_cidrs.clone(),
        service_cidrs: ctx.service_cidrs.clone(),
        nodeport_networks: ctx.nodeport_networks(),
        problems,
    }
}

/// What the proxy cannot read in a Service it programs, as `field: why`.
/// kube-apiserver refuses such Services; the proxy does not trust that it
/// did: a load balancer with an unreadable source range or ingress address
/// is kept closed (see [`ServicePort::firewall`]) and the problem reported.
pub fn service_problems(service: &Service) -> Vec<String> {
    let mut out = Vec::new();
    if !is_proxied(service) {
        return out;
    }
    let spec = service.spec.as_ref().expect("checked by is_proxied");
    if spec.type_.as_deref() == Some("LoadBalancer") {
        for (i, r) in spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .enumerate()
        {
            if r.trim().parse::<IpNet>().is_err() {
                out.push(format!(
                    "spec.loadBalancerSourceRanges[{i}]: {r:?} is not a CIDR; its load balancer stays closed"
                ));
            }
        }
    }
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for (i, ing) in ingress.into_iter().flatten().enumerate() {
        if let Some(ip) = &ing.ip {
            if ip.trim().parse::<IpAddr>().is_err() {
                out.push(format!(
                    "status.loadBalancer.ingress[{i}].ip: {ip:?} is not an IP address; its load balancer stays closed"
                ));
            }
        }
    }
    out
}

fn is_proxied(service: &Service) -> bool {
    let labels = service.metadata.labels.as_ref();
    if labels.is_some_and(|l| l.contains_key(LABEL_PROXY_NAME) || l.contains_key(LABEL_HEADLESS)) {
        return false;
    }
    let Some(spec) = &service.spec else {
        return false;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return false;
    }
    !matches!(spec.cluster_ip.as_deref(), None | Some("" | "None"))
}

/// The service ports of one Service, from its EndpointSlices.
pub fn plan_service(
    service: &Service,
    slices: &[&EndpointSlice],
    ctx: &NodeContext,
) -> Vec<ServicePort> {
    Family::ALL
        .into_iter()
        .flat_map(|family| plan_family(service, slices, ctx, family))
        .collect()
}

/// The service ports of one Service in one address family: a dual-stack
/// Service is programmed in both tables, a single-stack one in its own.
pub fn plan_family(
    service: &Service,
    slices: &[&EndpointSlice],
    ctx: &NodeContext,
    family: Family,
) -> Vec<ServicePort> {
    if !is_proxied(service) {
        return Vec::new();
    }
    let spec = service.spec.as_ref().expect("checked by is_proxied");
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let Some(cluster_ip) = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .find_map(|ip| family.parse(ip))
    else {
        return Vec::new();
    };
    let slices: Vec<&EndpointSlice> = slices
        .iter()
        .filter(|s| s.address_type == family.address_type())
        .copied()
        .collect();
    let external_ips: Vec<IpAddr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| family.parse(ip))
        .collect();
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    // An address that cannot be read may be one the ranges should guard:
    // the whole load balancer stays closed rather than half open.
    let unreadable_ingress = ingress
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref())
        .any(|ip| ip.trim().parse::<IpAddr>().is_err());
    let load_balancer_ips: Vec<IpAddr> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|i| i.ip.as_deref().and_then(|ip| family.parse(ip)))
        .collect();
    let is_lb = spec.type_.as_deref() == Some("LoadBalancer");
    let ranges: &[String] = if is_lb {
        spec.load_balancer_source_ranges
            .as_deref()
            .unwrap_or_default()
    } else {
        &[]
    };
    let parsed: Vec<Option<IpNet>> = ranges
        .iter()
        .map(|r| r.trim().parse::<IpNet>().ok().map(|n| n.trunc()))
        .collect();
    // Overlapping ranges are valid (10.0.0.0/8 and 10.1.0.0/16) but an
    // interval set refuses them: merged here, once.
    let source_ranges: Vec<IpNet> = IpNet::aggregate(
        &parsed
            .iter()
            .flatten()
            .filter(|n| Family::of(n.addr()) == family)
            .copied()
            .collect(),
    );
    // Ranges only of the other family still restrict this one: closed.
    let firewall = !ranges.is_empty() || unreadable_ingress;
    let source_ranges = if parsed.iter().any(Option::is_none) || unreadable_ingress {
        Vec::new()
    } else {
        source_ranges
    };
    let lb_ips_as_sources = source_ranges
        .iter()
        .any(|r| ctx.node_ips.iter().any(|ip| r.contains(ip)));
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(10800)
            .clamp(1, 86400) as u32
    });
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");

    let mut out = Vec::new();
    for sp in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::from_k8s(sp.protocol.as_deref()) else {
            continue;
        };
        let Ok(port) = u16::try_from(sp.port) else {
            continue;
        };
        let sp_name = sp.name.clone().unwrap_or_default();
        let all = endpoints_for(
            &slices,
            &sp_name,
            sp.protocol.as_deref().unwrap_or("TCP"),
            &ctx.node_name,
        );
        let usable_all = usable(&all);
        let local: Vec<Candidate> = all.iter().filter(|c| c.endpoint.local).cloned().collect();
        let usable_local = usable(&local);
        let cluster_endpoints = if internal_local {
            usable_local.clone()
        } else {
            usable_all.clone()
        };
        out.push(ServicePort {
            namespace: namespace.clone(),
            name: name.clone(),
            port_name: if sp_name.is_empty() {
                port.to_string()
            } else {
                sp_name
            },
            protocol,
            port,
            family,
            cluster_ip: Some(cluster_ip),
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            node_port: sp
                .node_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0),
            source_ranges: source_ranges.clone(),
            firewall,
            lb_ips_as_sources,
            affinity_timeout,
            internal_local,
            external_local,
            cluster_endpoints,
            local_endpoints: usable_local,
            has_endpoints: !usable_all.is_empty(),
            all_endpoints: usable_all,
            health_check_node_port: spec
                .health_check_node_port
                .filter(|_| is_lb && external_local)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0),
        });
    }
    out
}

#[derive(Clone, Debug)]
struct Candidate {
    endpoint: Endpoint,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// The endpoints of one service port from its slices, deduplicated.
fn endpoints_for(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: &str,
    node: &str,
) -> Vec<Candidate> {
    let mut found: BTreeMap<(IpAddr, u16), Candidate> = BTreeMap::new();
    for slice in slices {
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == protocol
        });
        // Port 0 is no port: kube-proxy skips it too.
        let Some(port) = port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        for e in &slice.endpoints {
            let Some(ip) = e.addresses.first().and_then(|a| a.trim().parse().ok()) else {
                continue;
            };
            let c = e.conditions.as_ref();
            // Unset conditions mean ready and serving, not terminating (the
            // API's defaults, as kube-proxy reads them: `serving` unset is
            // true even when `ready` is false).
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(true);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let local = !node.is_empty() && e.node_name.as_deref() == Some(node);
            let candidate = Candidate {
                endpoint: Endpoint { ip, port, local },
                ready,
                serving,
                terminating,
            };
            // The same address twice (a pod moving between slices, or a new
            // pod given the address of one still terminating): the one not
            // terminating wins, whatever the order of the slices.
            match found.entry((ip, port)) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(candidate);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    if o.get().terminating && !terminating {
                        o.insert(candidate);
                    }
                }
            }
        }
    }
    found.into_values().collect()
}

/// kube-proxy's rule: the ready endpoints; if there are none, those that are
/// serving while terminating (so a rolling update never drops traffic).
fn usable(candidates: &[Candidate]) -> Vec<Endpoint> {
    let ready: Vec<Endpoint> = candidates
        .iter()
        .filter(|c| c.ready)
        .map(|c| c.endpoint.clone())
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    candidates
        .iter()
        .filter(|c| c.serving && c.terminating)
        .map(|c| c.endpoint.clone())
        .collect()
}

/// The EndpointSlices of the Service `namespace/name`, found through the
/// label index.
pub fn slices_of<'a>(
    state: &'a ClusterState,
    namespace: &str,
    name: &str,
) -> Vec<&'a EndpointSlice> {
    let selector = strait_model::Selector::from_map(
        &[(LABEL_SERVICE_NAME.to_owned(), name.to_owned())].into(),
    );
    match selector {
        Ok(selector) => state
            .endpoint_slices
            .select(namespace, &selector)
            .into_iter()
            .map(|s| &**s)
            .collect(),
        // A name no label value can hold (kube-apiserver refuses such a
        // Service; the proxy does not count on it): found without the index.
        Err(_) => state
            .endpoint_slices
            .in_namespace(namespace)
            .filter(|s| service_of(s).is_some_and(|(_, n)| n == name))
            .map(|s| &**s)
            .collect(),
    }
}

/// The Service an EndpointSlice belongs to.
pub fn service_of(slice: &EndpointSlice) -> Option<(String, String)> {
    let name = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    Some((
        slice.metadata.namespace.clone().unwrap_or_default(),
        name.clone(),
    ))
}

#[cfg(test)]
mod tests;
