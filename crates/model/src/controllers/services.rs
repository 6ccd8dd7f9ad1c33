//! Service address allocation, as the API server does it: cluster IPs from the
//! service CIDR, NodePorts from the NodePort range, health-check NodePorts.
//!
//! Both ranges are split the way Kubernetes splits them (KEP-3070, KEP-3668):
//! a small lower band that dynamic allocation avoids while it can, so that
//! addresses users pick by hand (`10.96.0.10`) stay free. Dynamic choices
//! start at a hash of the Service's name and probe upwards: the same input
//! always gets the same addresses, and the previous snapshot's allocations are
//! kept, so unrelated changes never move a Service.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};

use super::{family_of, object_error};
use crate::hash::fnv1a;
use crate::object::{Kind, Object, ObjectKey};
use crate::state::ClusterState;
use crate::{Error, Result};

/// A service CIDR (`--service-cluster-ip-range`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceCidr {
    net: IpNet,
    size: u128,
}

impl ServiceCidr {
    /// At most 2^24 addresses, at least 8, as the API server requires of its ranges.
    pub fn new(net: IpNet) -> Result<ServiceCidr> {
        let net = net.trunc();
        let bits = u32::from(net.max_prefix_len() - net.prefix_len());
        if !(3..=24).contains(&bits) {
            return Err(Error::Config {
                setting: "service CIDR".into(),
                message: format!("{net} has 2^{bits} addresses; use a range of 8 to 2^24 addresses (such as a /12 for IPv4, a /108 for IPv6)"),
            });
        }
        Ok(ServiceCidr {
            net,
            size: 1u128 << bits,
        })
    }

    pub fn is_ipv4(&self) -> bool {
        matches!(self.net, IpNet::V4(_))
    }

    pub fn family(&self) -> &'static str {
        if self.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        }
    }

    pub fn net(&self) -> IpNet {
        self.net
    }

    /// The address at `offset` from the network address.
    pub fn nth(&self, offset: u128) -> IpAddr {
        match self.net {
            IpNet::V4(n) => IpAddr::V4((u32::from(n.network()) + offset as u32).into()),
            IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + offset).into()),
        }
    }

    fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        if !self.net.contains(&ip) {
            return None;
        }
        Some(match (ip, self.net) {
            (IpAddr::V4(ip), IpNet::V4(n)) => u128::from(u32::from(ip) - u32::from(n.network())),
            (IpAddr::V6(ip), IpNet::V6(n)) => u128::from(ip) - u128::from(n.network()),
            _ => return None,
        })
    }

    /// The last offset handed out: IPv4 keeps its broadcast address free.
    fn last(&self) -> u128 {
        if self.is_ipv4() {
            self.size - 2
        } else {
            self.size - 1
        }
    }

    /// Offsets 1..=band are preferred for addresses chosen by hand.
    fn static_band(&self) -> u128 {
        (self.size / 16).clamp(16, 256).min(self.last())
    }

    /// The first address: the `kubernetes` Service.
    pub fn kubernetes_ip(&self) -> IpAddr {
        self.nth(1)
    }

    /// The tenth address: the cluster DNS Service `kube-system/kube-dns`.
    pub fn dns_ip(&self) -> IpAddr {
        self.nth(10)
    }
}

/// `--service-node-port-range`, 30000-32767 by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePortRange {
    pub first: i32,
    pub last: i32,
}

impl Default for NodePortRange {
    fn default() -> Self {
        NodePortRange {
            first: 30000,
            last: 32767,
        }
    }
}

impl std::str::FromStr for NodePortRange {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Config {
            setting: "NodePort range".into(),
            message: format!("{s:?} is not a range such as 30000-32767"),
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let first: i32 = a.trim().parse().map_err(|_| bad())?;
        let last: i32 = b.trim().parse().map_err(|_| bad())?;
        if !(1..=65535).contains(&first) || !(first..=65535).contains(&last) || last - first < 15 {
            return Err(bad());
        }
        Ok(NodePortRange { first, last })
    }
}

impl NodePortRange {
    fn contains(&self, port: i32) -> bool {
        (self.first..=self.last).contains(&port)
    }

    fn static_band(&self) -> i32 {
        let size = self.last - self.first + 1;
        (size / 32).clamp(16, 128).min(size)
    }

    fn describe(&self) -> String {
        format!("{}-{}", self.first, self.last)
    }
}

fn key_of(svc: &Service) -> ObjectKey {
    ObjectKey::new(
        Kind::Service,
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// What Services outside the state being allocated hold. The API server's
/// allocator gives one Service at a time ([`allocate_service`]) and answers
/// here for the others: each returns who holds the address or port
/// (`Service ns/name`), if anyone but the Service being allocated.
pub struct Held<'a> {
    pub cluster_ip: &'a dyn Fn(IpAddr) -> Option<String>,
    pub node_port: &'a dyn Fn(i32) -> Option<String>,
}

struct IpPool<'a> {
    cidr: &'a ServiceCidr,
    used: HashMap<u128, ObjectKey>,
    held: Option<&'a Held<'a>>,
}

impl IpPool<'_> {
    /// Who holds the address at `offset`: a Service of this state, or one
    /// outside it.
    fn owner(&self, offset: u128) -> Option<String> {
        if let Some(owner) = self.used.get(&offset) {
            return Some(owner.to_string());
        }
        self.held
            .and_then(|held| (held.cluster_ip)(self.cidr.nth(offset)))
    }

    fn take_dynamic(&mut self, key: &ObjectKey) -> Option<u128> {
        let band = self.cidr.static_band();
        let dns = ObjectKey::new(Kind::Service, "kube-system", "kube-dns");
        let seed = fnv1a(&[
            key.namespace.as_bytes(),
            key.name.as_bytes(),
            self.cidr.family().as_bytes(),
        ]);
        // Upper band first, then the lower one; each probed from a hashed start.
        for (lo, hi) in [(band + 1, self.cidr.last()), (1, band)] {
            if lo > hi {
                continue;
            }
            let len = hi - lo + 1;
            let start = u128::from(seed) % len;
            for i in 0..len {
                let offset = lo + (start + i) % len;
                let reserved = offset == 10 && *key != dns;
                if !reserved && self.owner(offset).is_none() {
                    self.used.insert(offset, key.clone());
                    return Some(offset);
                }
            }
        }
        None
    }
}

fn is_external_name(spec: &ServiceSpec) -> bool {
    spec.type_.as_deref() == Some("ExternalName")
}

fn is_headless(spec: &ServiceSpec) -> bool {
    spec.cluster_ip.as_deref() == Some("None")
}

/// The addresses a Service asks for: its own, else what it had before.
fn requested_ips(spec: &ServiceSpec, previous: Option<&Service>) -> Vec<String> {
    let own: Vec<String> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.clone(),
        (_, Some(ip)) if !ip.is_empty() => vec![ip.clone()],
        _ => Vec::new(),
    };
    if !own.is_empty() {
        return own;
    }
    previous
        .and_then(|p| p.spec.as_ref())
        .filter(|p| !is_external_name(p) && !is_headless(p))
        .and_then(|p| p.cluster_ips.clone())
        .unwrap_or_default()
}

pub fn allocate(
    state: &mut ClusterState,
    previous: Option<&ClusterState>,
    config: &super::ClusterConfig,
) -> Result<()> {
    allocate_with(state, previous, config, None)
}

/// One Service's addresses and NodePorts at its create or update, as
/// kube-apiserver allocates them in the write: the same rules (and the same
/// choices, given the same free addresses) as the controllers' allocation.
/// `old` is the stored version, whose allocations the Service keeps; `held`
/// answers for every other Service. The error names the field.
pub fn allocate_service(
    service: Service,
    old: Option<&Service>,
    config: &super::ClusterConfig,
    held: &Held<'_>,
) -> Result<Service> {
    let key = key_of(&service);
    let mut state = ClusterState::default();
    state.insert(Object::Service(service.into()));
    let previous = old.map(|old| {
        let mut previous = ClusterState::default();
        previous.insert(Object::Service(old.clone().into()));
        previous
    });
    allocate_with(&mut state, previous.as_ref(), config, Some(held))?;
    state
        .services
        .get(&key.namespace, &key.name)
        .map(|s| (**s).clone())
        .ok_or_else(|| object_error(&state, &key, "metadata.name", "the Service went missing"))
}

fn allocate_with(
    state: &mut ClusterState,
    previous: Option<&ClusterState>,
    config: &super::ClusterConfig,
    held: Option<&Held<'_>>,
) -> Result<()> {
    let mut services: BTreeMap<ObjectKey, Service> = state
        .services
        .iter()
        .map(|s| (key_of(s), (**s).clone()))
        .collect();
    let previous_of = |key: &ObjectKey| {
        previous
            .and_then(|p| p.services.get(&key.namespace, &key.name))
            .map(|s| &**s)
    };

    allocate_cluster_ips(state, &mut services, &previous_of, config, held)?;
    allocate_node_ports(
        state,
        &mut services,
        &previous_of,
        config.node_port_range,
        held,
    )?;

    for (key, svc) in services {
        let unchanged = state
            .services
            .get(&key.namespace, &key.name)
            .is_some_and(|old| **old == svc);
        if unchanged {
            continue;
        }
        // The same allocation as last time: share the previous object, so
        // that comparing the two snapshots is a pointer comparison.
        let same = previous
            .and_then(|p| p.services.get(&key.namespace, &key.name))
            .filter(|old| ***old == svc)
            .cloned();
        match same {
            Some(old) => state.insert(Object::Service(old)),
            None => state.insert(Object::Service(svc.into())),
        };
    }
    Ok(())
}

fn allocate_cluster_ips<'p>(
    state: &ClusterState,
    services: &mut BTreeMap<ObjectKey, Service>,
    previous_of: &dyn Fn(&ObjectKey) -> Option<&'p Service>,
    config: &super::ClusterConfig,
    held: Option<&Held<'_>>,
) -> Result<()> {
    let mut pools: Vec<IpPool> = config
        .service_cidrs
        .iter()
        .map(|cidr| IpPool {
            cidr,
            used: HashMap::new(),
            held,
        })
        .collect();
    let kubernetes = ObjectKey::new(Kind::Service, "default", "kubernetes");
    let dns = ObjectKey::new(Kind::Service, "kube-system", "kube-dns");
    let primary = &config.service_cidrs[0];
    let mut pending = Vec::new();
    let mut dns_default = false;

    // First every address that is asked for, so that dynamic choices never
    // take an address that a later Service names explicitly.
    for (key, svc) in services.iter_mut() {
        let Some(spec) = svc.spec.as_mut() else {
            continue;
        };
        if is_external_name(spec) {
            continue;
        }
        let err = |field: &str, msg: String| object_error(state, key, field, msg);
        let field = if spec.cluster_ips.as_ref().is_some_and(|v| !v.is_empty()) {
            "spec.clusterIPs"
        } else {
            "spec.clusterIP"
        };
        if is_headless(spec) && spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
            crate::validate::selectorless_headless_families(spec, primary.family());
            spec.cluster_ips = Some(vec!["None".into()]);
            continue;
        }
        if is_headless(spec) {
            let families = families_for(state, key, spec, config)?;
            spec.cluster_ips = Some(vec!["None".into()]);
            spec.ip_families = Some(families);
            spec.ip_family_policy
                .get_or_insert_with(|| "SingleStack".into());
            continue;
        }
        let mut wanted = requested_ips(spec, previous_of(key));
        if wanted.is_empty() && *key == kubernetes {
            wanted.push(primary.kubernetes_ip().to_string());
        }
        if wanted.is_empty() && *key == dns {
            // After every address asked for: another cluster DNS Service
            // (RKE2's, OpenShift's) may hold the tenth address itself.
            dns_default = true;
            continue;
        }
        if wanted.is_empty() {
            pending.push(key.clone());
            continue;
        }
        if wanted.len() > 2 {
            return Err(err(field, "at most two addresses, one per family".into()));
        }
        let mut families = Vec::new();
        for text in &wanted {
            let ip: IpAddr = text
                .parse()
                .map_err(|_| err(field, format!("{text:?} is not an IP address")))?;
            let family = family_of(&ip);
            if families.contains(&family.to_owned()) {
                return Err(err(
                    field,
                    format!("two {family} addresses; a dual-stack Service has one of each family"),
                ));
            }
            families.push(family.to_owned());
            let pool = pools
                .iter_mut()
                .find(|p| p.cidr.family() == family)
                .ok_or_else(|| {
                    err(
                        field,
                        format!("{ip} is {family}, but the cluster has no {family} service CIDR"),
                    )
                })?;
            let offset = pool.cidr.offset_of(ip).ok_or_else(|| {
                err(
                    field,
                    format!("{ip} is not in the service CIDR {}", pool.cidr.net()),
                )
            })?;
            if offset == 0 || offset > pool.cidr.last() {
                return Err(err(
                    field,
                    format!(
                        "{ip} is the network or broadcast address of {}",
                        pool.cidr.net()
                    ),
                ));
            }
            if let Some(owner) = pool.owner(offset) {
                return Err(err(field, format!("{ip} is already allocated to {owner}")));
            }
            pool.used.insert(offset, key.clone());
        }
        if let Some(declared) = &spec.ip_families {
            if !declared.is_empty() && declared != &families {
                return Err(err(
                    "spec.ipFamilies",
                    format!("{declared:?} does not match the families of {field} {families:?}"),
                ));
            }
        }
        if families.len() == 2
            && spec.ip_family_policy.as_deref().unwrap_or("SingleStack") == "SingleStack"
        {
            return Err(err(
                "spec.ipFamilyPolicy",
                "SingleStack allows one address; use PreferDualStack or RequireDualStack".into(),
            ));
        }
        spec.cluster_ip = Some(wanted[0].clone());
        spec.cluster_ips = Some(wanted);
        spec.ip_families = Some(families);
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".into());
    }

    // kube-dns without an address of its own: the tenth, unless a Service
    // asked for it, then one as for any other Service.
    if dns_default {
        let pool = pools
            .iter_mut()
            .find(|p| p.cidr.family() == primary.family())
            .expect("the primary family has a pool");
        if pool.owner(10).is_none() {
            pool.used.insert(10, dns.clone());
            let spec = services
                .get_mut(&dns)
                .and_then(|s| s.spec.as_mut())
                .expect("kube-dns was seen with a spec");
            let ip = primary.dns_ip().to_string();
            spec.cluster_ip = Some(ip.clone());
            spec.cluster_ips = Some(vec![ip]);
            spec.ip_families = Some(vec![primary.family().to_owned()]);
            spec.ip_family_policy
                .get_or_insert_with(|| "SingleStack".into());
        } else {
            pending.insert(0, dns.clone());
        }
    }

    for key in pending {
        let svc = services
            .get_mut(&key)
            .expect("pending keys come from the map");
        let spec = svc.spec.as_mut().expect("pending services have a spec");
        let families = families_for(state, &key, spec, config)?;
        let mut ips = Vec::new();
        for family in &families {
            let pool = pools
                .iter_mut()
                .find(|p| p.cidr.family() == family)
                .expect("families_for checks CIDRs");
            let offset = pool.take_dynamic(&key).ok_or_else(|| {
                object_error(
                    state,
                    &key,
                    "spec.clusterIP",
                    format!(
                        "the service CIDR {} is full: no address left",
                        pool.cidr.net()
                    ),
                )
            })?;
            ips.push(pool.cidr.nth(offset).to_string());
        }
        spec.cluster_ip = Some(ips[0].clone());
        spec.cluster_ips = Some(ips);
        spec.ip_families = Some(families);
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".into());
    }
    Ok(())
}

/// Which address families a Service gets, from `ipFamilies` and `ipFamilyPolicy`.
fn families_for(
    state: &ClusterState,
    key: &ObjectKey,
    spec: &ServiceSpec,
    config: &super::ClusterConfig,
) -> Result<Vec<String>> {
    let configured: Vec<&str> = config.service_cidrs.iter().map(|c| c.family()).collect();
    let declared = spec.ip_families.clone().unwrap_or_default();
    for (i, f) in declared.iter().enumerate() {
        let field = format!("spec.ipFamilies[{i}]");
        if f != "IPv4" && f != "IPv6" {
            return Err(object_error(
                state,
                key,
                field,
                format!("{f:?} is not IPv4 or IPv6"),
            ));
        }
        if !configured.contains(&f.as_str()) {
            return Err(object_error(
                state,
                key,
                field,
                format!("the cluster has no {f} service CIDR"),
            ));
        }
    }
    if declared.len() > 2 || (declared.len() == 2 && declared[0] == declared[1]) {
        return Err(object_error(
            state,
            key,
            "spec.ipFamilies",
            "at most one of each family",
        ));
    }
    let policy = spec.ip_family_policy.as_deref().unwrap_or("SingleStack");
    let mut families: Vec<String> = if declared.is_empty() {
        configured.iter().map(|f| f.to_string()).collect()
    } else {
        let mut d = declared.clone();
        for f in &configured {
            if !d.iter().any(|x| x == f) {
                d.push(f.to_string());
            }
        }
        d
    };
    match policy {
        "SingleStack" => families.truncate(1),
        "PreferDualStack" => families.truncate(2),
        "RequireDualStack" if families.len() < 2 => {
            return Err(object_error(
                state,
                key,
                "spec.ipFamilyPolicy",
                "RequireDualStack, but the cluster has a service CIDR of one family only",
            ));
        }
        "RequireDualStack" => families.truncate(2),
        other => {
            return Err(object_error(
                state,
                key,
                "spec.ipFamilyPolicy",
                format!("{other:?} is not SingleStack, PreferDualStack or RequireDualStack"),
            ));
        }
    }
    if declared.len() == 2 && policy == "SingleStack" {
        return Err(object_error(
            state,
            key,
            "spec.ipFamilyPolicy",
            "SingleStack allows one family, but spec.ipFamilies lists two",
        ));
    }
    Ok(families)
}

fn allocate_node_ports<'p>(
    state: &ClusterState,
    services: &mut BTreeMap<ObjectKey, Service>,
    previous_of: &dyn Fn(&ObjectKey) -> Option<&'p Service>,
    range: NodePortRange,
    held: Option<&Held<'_>>,
) -> Result<()> {
    let mut used: HashMap<i32, ObjectKey> = HashMap::new();
    // Who holds `port`, other than `key`: a Service of this state or one
    // outside it.
    let owner = |used: &HashMap<i32, ObjectKey>, port: i32, key: &ObjectKey| -> Option<String> {
        match used.get(&port) {
            Some(o) if o != key => Some(o.to_string()),
            Some(_) => None,
            None => held.and_then(|h| (h.node_port)(port)),
        }
    };
    let wants_node_ports = |spec: &ServiceSpec| match spec.type_.as_deref() {
        Some("NodePort") => true,
        Some("LoadBalancer") => spec.allocate_load_balancer_node_ports != Some(false),
        _ => false,
    };
    let needs_health_check = |spec: &ServiceSpec| {
        spec.type_.as_deref() == Some("LoadBalancer")
            && spec.external_traffic_policy.as_deref() == Some("Local")
    };

    // Pass 1: ports given by the user, then ports this Service had before.
    for (key, svc) in services.iter_mut() {
        let Some(spec) = svc.spec.as_mut() else {
            continue;
        };
        if !matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
            continue;
        }
        let mut own: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
        for (i, port) in spec.ports.iter().flatten().enumerate() {
            let Some(node_port) = port.node_port else {
                continue;
            };
            let field = format!("spec.ports[{i}].nodePort");
            if !range.contains(node_port) {
                return Err(object_error(
                    state,
                    key,
                    field,
                    format!(
                        "{node_port} is outside the NodePort range {}",
                        range.describe()
                    ),
                ));
            }
            if let Some(owner) = owner(&used, node_port, key) {
                return Err(object_error(
                    state,
                    key,
                    field,
                    format!("{node_port} is already allocated to {owner}"),
                ));
            }
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            if !own.entry(node_port).or_default().insert(protocol.clone()) {
                return Err(object_error(
                    state,
                    key,
                    field,
                    format!("{node_port}/{protocol} is used by another port of this Service"),
                ));
            }
            used.insert(node_port, key.clone());
        }
        if let Some(hc) = spec.health_check_node_port.filter(|p| *p != 0) {
            if !range.contains(hc) {
                return Err(object_error(
                    state,
                    key,
                    "spec.healthCheckNodePort",
                    format!("{hc} is outside the NodePort range {}", range.describe()),
                ));
            }
            if let Some(owner) = used
                .get(&hc)
                .map(ToString::to_string)
                .or_else(|| owner(&used, hc, key))
            {
                return Err(object_error(
                    state,
                    key,
                    "spec.healthCheckNodePort",
                    format!("{hc} is already allocated to {owner}"),
                ));
            }
            used.insert(hc, key.clone());
        }
        let Some(before) = previous_of(key).and_then(|p| p.spec.as_ref()) else {
            continue;
        };
        if wants_node_ports(spec) {
            for port in spec
                .ports
                .iter_mut()
                .flatten()
                .filter(|p| p.node_port.is_none())
            {
                let had = before
                    .ports
                    .iter()
                    .flatten()
                    .find(|b| b.port == port.port && b.protocol == port.protocol)
                    .and_then(|b| b.node_port);
                if let Some(np) =
                    had.filter(|np| range.contains(*np) && owner(&used, *np, key).is_none())
                {
                    port.node_port = Some(np);
                    used.insert(np, key.clone());
                }
            }
        }
        if needs_health_check(spec) && spec.health_check_node_port.is_none() {
            if let Some(hc) = before.health_check_node_port.filter(|p| {
                range.contains(*p) && owner(&used, *p, key).is_none() && !used.contains_key(p)
            }) {
                spec.health_check_node_port = Some(hc);
                used.insert(hc, key.clone());
            }
        }
    }

    // Pass 2: everything still missing, from a hashed start in the upper band.
    let band = range.static_band();
    let take = |key: &ObjectKey, what: &str, used: &mut HashMap<i32, ObjectKey>| -> Result<i32> {
        let seed = fnv1a(&[
            key.namespace.as_bytes(),
            key.name.as_bytes(),
            what.as_bytes(),
        ]);
        for (lo, hi) in [
            (range.first + band, range.last),
            (range.first, range.first + band - 1),
        ] {
            if lo > hi {
                continue;
            }
            let len = (hi - lo + 1) as u64;
            let start = seed % len;
            for i in 0..len {
                let port = lo + ((start + i) % len) as i32;
                if !used.contains_key(&port) && held.is_none_or(|h| (h.node_port)(port).is_none()) {
                    used.insert(port, key.clone());
                    return Ok(port);
                }
            }
        }
        Err(object_error(
            state,
            key,
            "spec.ports",
            format!("the NodePort range {} is full", range.describe()),
        ))
    };
    for (key, svc) in services.iter_mut() {
        let Some(spec) = svc.spec.as_mut() else {
            continue;
        };
        if wants_node_ports(spec) {
            let ports = spec.ports.get_or_insert_with(Vec::new);
            for i in 0..ports.len() {
                if ports[i].node_port.is_some() {
                    continue;
                }
                // The same port over TCP and UDP shares one NodePort, as in Kubernetes.
                let sibling = ports
                    .iter()
                    .find(|p| {
                        p.port == ports[i].port
                            && p.protocol != ports[i].protocol
                            && p.node_port.is_some()
                    })
                    .and_then(|p| p.node_port);
                let port = match sibling {
                    Some(np) => np,
                    None => take(
                        key,
                        &format!(
                            "port/{}/{}",
                            ports[i].port,
                            ports[i].protocol.as_deref().unwrap_or("TCP")
                        ),
                        &mut used,
                    )?,
                };
                ports[i].node_port = Some(port);
            }
        }
        if needs_health_check(spec) && spec.health_check_node_port.is_none() {
            spec.health_check_node_port = Some(take(key, "healthCheckNodePort", &mut used)?);
        }
    }
    Ok(())
}
