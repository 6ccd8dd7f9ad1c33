//! The cluster's names, built from a ClusterState snapshot: the Kubernetes
//! DNS-Based Service Discovery specification 1.1.0, plus what CoreDNS users
//! rely on (pod A records, SOA in negative answers). Immutable; the server
//! swaps in a new one when the cluster changes.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use strait_model::k8s_openapi::api::core::v1::Service;
use strait_model::k8s_openapi::api::discovery::v1::EndpointSlice;
use strait_model::ClusterState;

/// One SRV target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Lowercase, without the trailing dot; shared with the name's own key.
    pub target: Arc<str>,
}

/// One record's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rr {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv(Srv),
    Txt(Box<str>),
    /// ExternalName target (as written, without the trailing dot).
    Cname(Box<str>),
}

impl Rr {
    /// The A or AAAA record of an address.
    pub fn address(ip: IpAddr) -> Rr {
        match ip {
            IpAddr::V4(v4) => Rr::A(v4),
            IpAddr::V6(v6) => Rr::Aaaa(v6),
        }
    }
}

/// CoreDNS's SRV weight when `count` records share priority 0.
fn weight(count: usize) -> u16 {
    (100 / count.max(1)).max(1) as u16
}

/// `_<port>._<proto>.<service name>`, lowercase.
fn srv_name(port_name: &str, protocol: Option<&str>, base: &str) -> String {
    format!("_{port_name}._{}.{base}", protocol.unwrap_or("TCP")).to_ascii_lowercase()
}

/// The records of one name, packed: a zone holds hundreds of thousands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records(Box<[Rr]>);

impl Records {
    pub fn new(rrs: Vec<Rr>) -> Records {
        Records(rrs.into_boxed_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn a(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.0.iter().filter_map(|r| match r {
            Rr::A(ip) => Some(*ip),
            _ => None,
        })
    }

    pub fn aaaa(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.0.iter().filter_map(|r| match r {
            Rr::Aaaa(ip) => Some(*ip),
            _ => None,
        })
    }

    pub fn srv(&self) -> impl Iterator<Item = &Srv> + '_ {
        self.0.iter().filter_map(|r| match r {
            Rr::Srv(s) => Some(s),
            _ => None,
        })
    }

    pub fn txt(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.iter().filter_map(|r| match r {
            Rr::Txt(s) => Some(&**s),
            _ => None,
        })
    }

    pub fn cname(&self) -> Option<&str> {
        self.0.iter().find_map(|r| match r {
            Rr::Cname(s) => Some(&**s),
            _ => None,
        })
    }
}

/// Everything the server answers with authority.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    /// The cluster domain, lowercase, no trailing dot (`cluster.local`).
    pub domain: String,
    pub ttl: u32,
    /// Serial for the SOA: changes with every rebuild.
    pub serial: u32,
    /// Lowercase names without the trailing dot. A name with no records
    /// exists (it has names below it): asked for, it is NODATA, not NXDOMAIN.
    pub names: HashMap<Arc<str>, Records>,
    /// PTR targets by address: reverse names are derived from the address
    /// asked for, not stored (they would double the zone's size).
    pub reverse: HashMap<IpAddr, Box<[Arc<str>]>>,
}

/// `10.244.1.2` → `10-244-1-2`; IPv6 with `-` for `:`, and a `0` after a
/// trailing `-` (`fd00::` → `fd00--0`), as CoreDNS names them: a label may
/// not end with a hyphen.
pub fn dashed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let mut name = v6.to_string().replace(':', "-");
            if name.ends_with('-') {
                name.push('0');
            }
            name
        }
    }
}

/// Whether an endpoint is published: `ready` unset counts as ready (the
/// EndpointSlice API's rule). The controller already marks not-ready
/// endpoints ready when their Service sets `publishNotReadyAddresses`.
fn ready(endpoint: &strait_model::k8s_openapi::api::discovery::v1::Endpoint) -> bool {
    endpoint
        .conditions
        .as_ref()
        .and_then(|c| c.ready)
        .unwrap_or(true)
}

/// `<hostname or dashed address>.<service name>`, lowercase.
fn host_name(hostname: Option<&str>, ip: &IpAddr, base: &str) -> String {
    let host = hostname
        .filter(|h| !h.is_empty())
        .map_or_else(|| dashed(ip), str::to_owned);
    format!("{host}.{base}").to_ascii_lowercase()
}

/// The address of a reverse name (`2.1.244.10.in-addr.arpa` → 10.244.1.2).
pub fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        let octets: Option<Vec<u8>> = parts.iter().rev().map(|p| p.parse().ok()).collect();
        let o = octets?;
        return Some(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = rest.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, n) in nibbles.iter().rev().enumerate() {
        let v = u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1)?;
        bytes[i / 2] |= if i % 2 == 0 { v << 4 } else { v };
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

/// The reverse name of an address (`2.1.244.10.in-addr.arpa`).
pub fn reverse_name(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut parts = Vec::with_capacity(32);
            for byte in v6.octets().iter().rev() {
                parts.push(format!("{:x}", byte & 0xf));
                parts.push(format!("{:x}", byte >> 4));
            }
            format!("{}.ip6.arpa", parts.join("."))
        }
    }
}

/// A zone being built: records still growing.
struct Builder {
    domain: String,
    names: HashMap<Arc<str>, Vec<Rr>>,
    reverse: HashMap<IpAddr, Vec<Arc<str>>>,
}

impl Builder {
    /// The one shared copy of a (lowercase) name: keys, PTR and SRV targets
    /// point to the same string.
    fn intern(&mut self, name: &str) -> Arc<str> {
        let name = name.to_ascii_lowercase();
        match self.names.get_key_value(name.as_str()) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = name.into();
                self.names.insert(k.clone(), Vec::new());
                k
            }
        }
    }

    fn entry(&mut self, name: &str) -> &mut Vec<Rr> {
        let key = self.intern(name);
        self.names.get_mut(&key).expect("interned")
    }

    /// The names of a ClusterIP Service's ready endpoints,
    /// `<hostname or dashed IP>.<service name>`, and their PTR records:
    /// CoreDNS answers endpoint names (and reverse lookups of endpoint
    /// addresses) for every Service, not only headless ones. The Service's
    /// own name keeps its cluster IPs.
    fn add_endpoint_names(&mut self, base: &str, slices: &[&EndpointSlice]) {
        let mut endpoints: BTreeMap<IpAddr, String> = BTreeMap::new();
        for slice in slices {
            for endpoint in slice.endpoints.iter().filter(|e| ready(e)) {
                for ip in endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                {
                    endpoints.insert(ip, host_name(endpoint.hostname.as_deref(), &ip, base));
                }
            }
        }
        for (ip, name) in endpoints {
            let rr = Rr::address(ip);
            let records = self.entry(&name);
            if !records.contains(&rr) {
                records.push(rr);
            }
            let target = self.intern(&name);
            self.reverse.entry(ip).or_default().push(target);
        }
    }

    fn add_service(&mut self, service: &Service, slices: &[&EndpointSlice]) {
        let Some(spec) = &service.spec else { return };
        let ns = service.metadata.namespace.as_deref().unwrap_or_default();
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let base = format!("{name}.{ns}.svc.{}", self.domain).to_ascii_lowercase();
        if spec.type_.as_deref() == Some("ExternalName") {
            // CoreDNS makes no record of an ExternalName that is an IP
            // address (a CNAME must name a name): the name does not exist.
            if let Some(target) = spec
                .external_name
                .as_deref()
                .map(|t| t.trim_end_matches('.'))
                .filter(|t| !t.is_empty() && t.parse::<IpAddr>().is_err())
            {
                self.entry(&base).push(Rr::Cname(target.into()));
            }
            return;
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        let ports = spec.ports.clone().unwrap_or_default();
        if !headless {
            self.entry(&base);
            let mut seen: Vec<IpAddr> = Vec::new();
            for ip in spec
                .cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse::<IpAddr>().ok())
            {
                if seen.contains(&ip) {
                    continue;
                }
                seen.push(ip);
                let rr = Rr::address(ip);
                self.entry(&base).push(rr);
                let target = self.intern(&base);
                self.reverse.entry(ip).or_default().push(target);
            }
            // CoreDNS makes one SRV per (address, port) and splits the
            // weight 100 over them, then drops duplicates: a dual-stack
            // Service's SRV records weigh 50.
            let families = seen.len().max(1);
            let target: Arc<str> = self.intern(&base);
            let bare_weight = weight(families * ports.len());
            for port in &ports {
                let srv = Srv {
                    priority: 0,
                    weight: bare_weight,
                    port: port.port as u16,
                    target: target.clone(),
                };
                let records = self.entry(&base);
                if !records.contains(&Rr::Srv(srv.clone())) {
                    records.push(Rr::Srv(srv));
                }
                let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let srv_name = srv_name(port_name, port.protocol.as_deref(), &base);
                let srv = Srv {
                    priority: 0,
                    weight: weight(families),
                    port: port.port as u16,
                    target: target.clone(),
                };
                self.entry(&srv_name).push(Rr::Srv(srv));
            }
            self.add_endpoint_names(&base, slices);
            return;
        }

        // Headless: the ready endpoints themselves. EndpointSlices already
        // mark not-ready endpoints ready when the Service publishes them.
        let mut endpoints: BTreeMap<IpAddr, String> = BTreeMap::new();
        let mut srv: BTreeMap<String, Vec<(u16, String)>> = BTreeMap::new();
        // The bare name's SRV: every (address, port), named or not; an
        // address without ports counts towards the split (CoreDNS's port -1).
        let mut bare: Vec<Option<(u16, String)>> = Vec::new();
        for slice in slices {
            for endpoint in &slice.endpoints {
                if !ready(endpoint) {
                    continue;
                }
                for address in &endpoint.addresses {
                    let Ok(ip) = address.parse::<IpAddr>() else {
                        continue;
                    };
                    let host_name = host_name(endpoint.hostname.as_deref(), &ip, &base);
                    endpoints.insert(ip, host_name.clone());
                    let mut any_port = false;
                    for port in slice.ports.iter().flatten() {
                        if let Some(number) = port.port {
                            any_port = true;
                            bare.push(Some((number as u16, host_name.clone())));
                        }
                        let (Some(port_name), Some(number)) =
                            (port.name.as_deref().filter(|n| !n.is_empty()), port.port)
                        else {
                            continue;
                        };
                        let srv_name = srv_name(port_name, port.protocol.as_deref(), &base);
                        srv.entry(srv_name)
                            .or_default()
                            .push((number as u16, host_name.clone()));
                    }
                    if !any_port {
                        bare.push(None);
                    }
                }
            }
        }
        for (ip, host_name) in &endpoints {
            let rr = Rr::address(*ip);
            self.entry(&base).push(rr.clone());
            self.entry(host_name).push(rr);
            let target = self.intern(host_name);
            self.reverse.entry(*ip).or_default().push(target);
        }
        // A headless Service without ready endpoints has no name at all
        // (CoreDNS: NXDOMAIN, not NODATA).
        if endpoints.is_empty() {
            return;
        }
        let named = srv
            .into_iter()
            .map(|(name, targets)| (name, targets.len(), targets));
        let bare = (
            base.clone(),
            bare.len(),
            bare.into_iter().flatten().collect(),
        );
        for (srv_name, count, targets) in named.chain(std::iter::once(bare)) {
            // CoreDNS spreads the weight: 100 split over the targets.
            let weight = weight(count);
            let records = self.entry(&srv_name);
            for (port, target) in targets {
                let record = Rr::Srv(Srv {
                    priority: 0,
                    weight,
                    port,
                    target: target.into(),
                });
                if !records.contains(&record) {
                    records.push(record);
                }
            }
        }
    }
}

impl Zone {
    /// Build the zone for `domain` from `state`; `nameservers` are the
    /// cluster DNS Service's addresses (`ns.dns.<domain>`, the SOA's primary
    /// and the apex's NS).
    pub fn build(
        state: &ClusterState,
        domain: &str,
        ttl: u32,
        serial: u32,
        nameservers: &[IpAddr],
    ) -> Zone {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut b = Builder {
            domain: domain.clone(),
            names: HashMap::new(),
            reverse: HashMap::new(),
        };
        b.entry(&format!("dns-version.{domain}"))
            .push(Rr::Txt("1.1.0".into()));
        let ns_dns = b.entry(&format!("ns.dns.{domain}"));
        for ip in nameservers {
            let rr = Rr::address(*ip);
            if !ns_dns.contains(&rr) {
                ns_dns.push(rr);
            }
        }
        // Every namespace exists under svc and pod (names below them
        // answer), even with nothing in it: NODATA, not NXDOMAIN. Those the
        // API server always has, those declared, those objects live in.
        let always = ["default", "kube-system", "kube-public", "kube-node-lease"];
        let namespaces: std::collections::BTreeSet<&str> = always
            .into_iter()
            .chain(
                state
                    .namespaces
                    .iter()
                    .filter_map(|n| n.metadata.name.as_deref()),
            )
            .chain(
                state
                    .services
                    .iter()
                    .filter_map(|o| o.metadata.namespace.as_deref()),
            )
            .chain(
                state
                    .pods
                    .iter()
                    .filter_map(|o| o.metadata.namespace.as_deref()),
            )
            .chain(
                state
                    .endpoint_slices
                    .iter()
                    .filter_map(|o| o.metadata.namespace.as_deref()),
            )
            .collect();
        for ns in namespaces {
            b.intern(&format!("{ns}.svc.{domain}"));
            b.intern(&format!("{ns}.pod.{domain}"));
        }
        let mut slices: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in state.endpoint_slices.iter() {
            let Some(svc) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
            else {
                continue;
            };
            slices
                .entry((
                    slice.metadata.namespace.as_deref().unwrap_or_default(),
                    svc.as_str(),
                ))
                .or_default()
                .push(slice);
        }
        for service in state.services.iter() {
            let ns = service.metadata.namespace.as_deref().unwrap_or_default();
            let name = service.metadata.name.as_deref().unwrap_or_default();
            let svc_slices = slices
                .get(&(ns, name))
                .map(Vec::as_slice)
                .unwrap_or_default();
            b.add_service(service, svc_slices);
        }
        // Every ancestor of a name exists too (RFC 8020: NXDOMAIN means
        // nothing below), up to the cluster domain.
        let names: Vec<Arc<str>> = b.names.keys().cloned().collect();
        for name in names {
            let mut rest = &*name;
            while let Some((_, parent)) = rest.split_once('.') {
                if !parent.ends_with(&domain) {
                    break;
                }
                b.intern(parent);
                if parent == domain {
                    break;
                }
                rest = parent;
            }
        }
        b.intern(&domain.clone());
        let mut names: HashMap<Arc<str>, Records> = b
            .names
            .into_iter()
            .map(|(k, v)| (k, Records::new(v)))
            .collect();
        names.shrink_to_fit();
        let reverse = b
            .reverse
            .into_iter()
            .map(|(ip, v)| (ip, v.into_boxed_slice()))
            .collect();
        Zone {
            domain,
            ttl,
            serial,
            names,
            reverse,
        }
    }

    /// A deep copy made of fresh allocations (strings still shared within
    /// it): how a zone built on another thread moves into this one's memory.
    pub fn compact(&self) -> Zone {
        fn own<'z>(strings: &mut HashMap<&'z str, Arc<str>>, s: &'z str) -> Arc<str> {
            strings.entry(s).or_insert_with(|| Arc::from(s)).clone()
        }
        let mut strings: HashMap<&str, Arc<str>> = HashMap::with_capacity(self.names.len());
        let mut names = HashMap::with_capacity(self.names.len());
        for (k, v) in &self.names {
            let rrs: Vec<Rr> =
                v.0.iter()
                    .map(|r| match r {
                        Rr::Srv(srv) => Rr::Srv(Srv {
                            target: own(&mut strings, &srv.target),
                            ..srv.clone()
                        }),
                        other => other.clone(),
                    })
                    .collect();
            names.insert(own(&mut strings, k), Records::new(rrs));
        }
        let reverse = self
            .reverse
            .iter()
            .map(|(ip, targets)| (*ip, targets.iter().map(|t| own(&mut strings, t)).collect()))
            .collect();
        Zone {
            domain: self.domain.clone(),
            ttl: self.ttl,
            serial: self.serial,
            names,
            reverse,
        }
    }

    /// Whether `name` (lowercase, no trailing dot) is inside the cluster domain.
    pub fn is_cluster_name(&self, name: &str) -> bool {
        name == self.domain || name.ends_with(&format!(".{}", self.domain))
    }

    /// `a-b-c-d.<ns>.pod.<domain>`: CoreDNS's `pods insecure` answers any
    /// well-formed dashed address in a namespace that exists.
    pub fn pod_address(&self, name: &str) -> Option<IpAddr> {
        let rest = name.strip_suffix(&format!(".pod.{}", self.domain))?;
        let (host, ns) = rest.split_once('.')?;
        if ns.is_empty() || ns.contains('.') {
            return None;
        }
        if !self.names.contains_key(&name[host.len() + 1..]) {
            return None;
        }
        if let Ok(v4) = host.replace('-', ".").parse::<Ipv4Addr>() {
            return Some(IpAddr::V4(v4));
        }
        host.replace('-', ":")
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6)
    }
}

/// The one-name zone the crate's unit tests answer from.
#[cfg(test)]
pub(crate) fn test_zone() -> Zone {
    let mut zone = Zone {
        domain: "cluster.local".into(),
        ttl: 5,
        serial: 1,
        ..Default::default()
    };
    zone.names.insert(
        "web.default.svc.cluster.local".into(),
        Records::new(vec![Rr::A("10.96.0.20".parse().unwrap())]),
    );
    zone
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn reverse_names_round_trip(v4 in any::<u32>(), v6 in any::<u128>()) {
            for ip in [IpAddr::V4(Ipv4Addr::from(v4)), IpAddr::V6(Ipv6Addr::from(v6))] {
                prop_assert_eq!(parse_reverse(&reverse_name(&ip)), Some(ip));
            }
        }
    }

    #[test]
    fn malformed_reverse_names_are_not_addresses() {
        assert_eq!(parse_reverse("1.2.3.in-addr.arpa"), None);
        assert_eq!(parse_reverse("256.2.3.4.in-addr.arpa"), None);
        assert_eq!(parse_reverse("1.ip6.arpa"), None);
        assert_eq!(parse_reverse("example.org"), None);
    }
}
