//! The cluster's names, built from a ClusterState snapshot: the Kubernetes
//! DNS-Based Service Discovery specification 1.1.0, plus what CoreDNS users
//! rely on (pod A records, SOA in negative answers). Immutable; the server
//! swaps in a new one when the cluster changes.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use strait_model::k8s_openapi::api::core::v1::Service;
use strait_model::k8s_openapi::api::discovery::v1::EndpointSlice;
use strait_model::ClusterState;

/// One SRV target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Lowercase, without the trailing dot.
    pub target: String,
}

/// The records of one name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    pub srv: Vec<Srv>,
    pub ptr: Vec<String>,
    pub txt: Vec<String>,
    /// ExternalName target (as written, without the trailing dot).
    pub cname: Option<String>,
}

impl Records {
    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
            && self.aaaa.is_empty()
            && self.srv.is_empty()
            && self.ptr.is_empty()
            && self.txt.is_empty()
            && self.cname.is_none()
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
    /// Lowercase names without the trailing dot. A name with empty records
    /// exists (it has names below it): asked for, it is NODATA, not NXDOMAIN.
    pub names: HashMap<String, Records>,
}

/// `10.244.1.2` → `10-244-1-2`; IPv6 with `-` for `:`.
pub fn dashed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
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

impl Zone {
    /// Build the zone for `domain` from `state`.
    pub fn build(state: &ClusterState, domain: &str, ttl: u32, serial: u32) -> Zone {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut zone = Zone {
            domain: domain.clone(),
            ttl,
            serial,
            names: HashMap::new(),
        };
        zone.entry(&format!("dns-version.{domain}"))
            .txt
            .push("1.1.0".into());
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
            zone.add_service(service, svc_slices);
        }
        // Every ancestor of a name exists too (RFC 8020: NXDOMAIN means
        // nothing below), up to the cluster domain.
        let names: Vec<String> = zone.names.keys().cloned().collect();
        for name in names {
            let mut rest = name.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if !parent.ends_with(&domain) {
                    break;
                }
                zone.names.entry(parent.to_owned()).or_default();
                if parent == domain {
                    break;
                }
                rest = parent;
            }
        }
        zone.names.entry(domain.clone()).or_default();
        zone
    }

    fn entry(&mut self, name: &str) -> &mut Records {
        self.names.entry(name.to_ascii_lowercase()).or_default()
    }

    fn add_service(&mut self, service: &Service, slices: &[&EndpointSlice]) {
        let Some(spec) = &service.spec else { return };
        let ns = service.metadata.namespace.as_deref().unwrap_or_default();
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let base = format!("{name}.{ns}.svc.{}", self.domain).to_ascii_lowercase();
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = &spec.external_name {
                self.entry(&base).cname = Some(target.trim_end_matches('.').to_owned());
            }
            return;
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        let ports = spec.ports.clone().unwrap_or_default();
        if !headless {
            let ips: Vec<IpAddr> = spec
                .cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse().ok())
                .collect();
            let mut seen = Vec::new();
            for ip in ips {
                if seen.contains(&ip) {
                    continue;
                }
                seen.push(ip);
                match ip {
                    IpAddr::V4(v4) => self.entry(&base).a.push(v4),
                    IpAddr::V6(v6) => self.entry(&base).aaaa.push(v6),
                }
                self.entry(&reverse_name(&ip)).ptr.push(base.clone());
            }
            self.entry(&base);
            for port in &ports {
                let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let proto = port
                    .protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .to_ascii_lowercase();
                let srv_name = format!("_{port_name}._{proto}.{base}").to_ascii_lowercase();
                self.entry(&srv_name).srv.push(Srv {
                    priority: 0,
                    weight: 100,
                    port: port.port as u16,
                    target: base.clone(),
                });
            }
            return;
        }

        // Headless: the ready endpoints themselves.
        self.entry(&base);
        let mut endpoints: BTreeMap<IpAddr, String> = BTreeMap::new();
        let mut srv: BTreeMap<String, Vec<(u16, String)>> = BTreeMap::new();
        for slice in slices {
            for endpoint in &slice.endpoints {
                // EndpointSlices already mark not-ready endpoints ready when
                // the Service publishes them.
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    let Ok(ip) = address.parse::<IpAddr>() else {
                        continue;
                    };
                    let host = endpoint
                        .hostname
                        .clone()
                        .unwrap_or_else(|| dashed(&ip))
                        .to_ascii_lowercase();
                    let host_name = format!("{host}.{base}");
                    endpoints.insert(ip, host_name.clone());
                    for port in slice.ports.iter().flatten() {
                        let (Some(port_name), Some(number)) =
                            (port.name.as_deref().filter(|n| !n.is_empty()), port.port)
                        else {
                            continue;
                        };
                        let proto = port
                            .protocol
                            .as_deref()
                            .unwrap_or("TCP")
                            .to_ascii_lowercase();
                        let srv_name = format!("_{port_name}._{proto}.{base}").to_ascii_lowercase();
                        srv.entry(srv_name)
                            .or_default()
                            .push((number as u16, host_name.clone()));
                    }
                }
            }
        }
        for (ip, host_name) in &endpoints {
            match ip {
                IpAddr::V4(v4) => {
                    self.entry(&base).a.push(*v4);
                    self.entry(host_name).a.push(*v4);
                }
                IpAddr::V6(v6) => {
                    self.entry(&base).aaaa.push(*v6);
                    self.entry(host_name).aaaa.push(*v6);
                }
            }
            self.entry(&reverse_name(ip)).ptr.push(host_name.clone());
        }
        for (srv_name, targets) in srv {
            // CoreDNS spreads the weight: 100 split over the targets.
            let weight = (100 / targets.len().max(1)).max(1) as u16;
            let records = &mut self.entry(&srv_name).srv;
            for (port, target) in targets {
                let record = Srv {
                    priority: 0,
                    weight,
                    port,
                    target,
                };
                if !records.contains(&record) {
                    records.push(record);
                }
            }
        }
    }

    /// Whether `name` (lowercase, no trailing dot) is inside the cluster domain.
    pub fn is_cluster_name(&self, name: &str) -> bool {
        name == self.domain || name.ends_with(&format!(".{}", self.domain))
    }

    /// `a-b-c-d.<ns>.pod.<domain>`: CoreDNS's `pods insecure` answers any
    /// well-formed dashed address.
    pub fn pod_address(&self, name: &str) -> Option<IpAddr> {
        let rest = name.strip_suffix(&format!(".pod.{}", self.domain))?;
        let (host, ns) = rest.split_once('.')?;
        if ns.is_empty() || ns.contains('.') {
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
