//! The service table as nftables: a fixed skeleton, one chain per service
//! port (plus external, local and per-endpoint chains where needed), and the
//! elements of a few large maps. [`Ruleset`] keeps them apart so that the
//! applier can send only what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::plan::{Endpoint, Family, Protocol, ServicePort, ServiceTable, MASQUERADE_MARK};

/// The IPv4 table strait owns: `nft list table ip strait` shows it.
pub const TABLE: &str = "ip strait";

/// The table of a family: `ip strait` or `ip6 strait`.
pub fn table(family: Family) -> &'static str {
    match family {
        Family::V4 => TABLE,
        Family::V6 => "ip6 strait",
    }
}

/// Fill a rule or type template: `{ip}` is the protocol keyword (`ip`,
/// `ip6`), `{addr}` the address type, `{loopback}` the loopback network,
/// `{reject}` a rejection the client reads as "connection refused" (for
/// IPv6 nft's default would be "no route", which clients read otherwise).
fn words(family: Family, template: &str) -> String {
    let (ip, addr, loopback, reject) = match family {
        Family::V4 => ("ip", "ipv4_addr", "127.0.0.0/8", "reject"),
        Family::V6 => (
            "ip6",
            "ipv6_addr",
            "::1",
            "reject with icmpv6 port-unreachable",
        ),
    };
    template
        .replace("{ip}", ip)
        .replace("{addr}", addr)
        .replace("{loopback}", loopback)
        .replace("{reject}", reject)
}

/// A rendered table, in parts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub family: Family,
    /// Per-service chains: name → rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Which Service a chain is for, sanitised (see [`label`]): an nft
    /// comment line in `--dry-run` and full syncs, for people only.
    pub labels: BTreeMap<String, String>,
    /// Session-affinity sets: name → timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
    /// Elements of the named sets and maps: set → key → value ("" for sets).
    pub elements: BTreeMap<&'static str, BTreeMap<String, String>>,
}

/// Named sets and maps of the skeleton, with their type templates.
const SETS: &[(&str, &str)] = &[
    ("cluster-cidrs", "type {addr}; flags interval;"),
    ("service-cidrs", "type {addr}; flags interval;"),
    ("nodeport-addresses", "type {addr}; flags interval;"),
    ("cluster-ips", "type {addr};"),
    (
        "service-ips",
        "type {addr} . inet_proto . inet_service : verdict;",
    ),
    (
        "service-nodeports",
        "type inet_proto . inet_service : verdict;",
    ),
    (
        "no-endpoint-services",
        "type {addr} . inet_proto . inet_service : verdict;",
    ),
    (
        "no-endpoint-nodeports",
        "type inet_proto . inet_service : verdict;",
    ),
    ("hairpin", "type {addr} . {addr};"),
    (
        "firewall-ips",
        "type {addr} . inet_proto . inet_service;",
    ),
    (
        "firewall-allow",
        "type {addr} . inet_proto . inet_service . {addr}; flags interval;",
    ),
    // Endpoints by slot: a Service's N endpoints are slots 0..N-1 under each
    // of its addresses, and one shared rule per N picks a slot at random.
    // Endpoint changes are then element changes, which the kernel applies
    // without re-validating the table (rule changes cost ~15 ms at 10k
    // Services here; see the README).
    (
        "service-endpoints",
        "typeof {ip} daddr . meta l4proto . th dport . numgen random mod 1 : {ip} daddr . th dport;",
    ),
    (
        "nodeport-endpoints",
        "typeof meta l4proto . th dport . numgen random mod 1 : {ip} daddr . th dport;",
    ),
];

fn set_kind(name: &str) -> &'static str {
    if SETS.iter().any(|(n, ty)| *n == name && ty.contains(" : ")) {
        "map"
    } else {
        "set"
    }
}

/// The fixed chains: hooks, dispatch, checks, masquerading.
fn skeleton_chains(family: Family) -> Vec<(&'static str, Option<&'static str>, Vec<String>)> {
    let m = MASQUERADE_MARK;
    vec![
        ("nat-prerouting", Some("type nat hook prerouting priority dstnat; policy accept;"), vec!["jump services".into()]),
        // nft 1.0.6 needs a numeric priority in output chains.
        ("nat-output", Some("type nat hook output priority -100; policy accept;"), vec!["jump services".into()]),
        ("nat-postrouting", Some("type nat hook postrouting priority srcnat; policy accept;"), vec!["jump masquerading".into()]),
        // Before DNAT: loadBalancerSourceRanges.
        ("filter-prerouting", Some("type filter hook prerouting priority -110; policy accept;"), vec!["ct state new jump firewall-check".into()]),
        // After DNAT: what was not translated has no endpoint (or no such port).
        ("filter-input", Some("type filter hook input priority 0; policy accept;"), vec!["ct state new jump endpoints-check".into()]),
        ("filter-forward", Some("type filter hook forward priority 0; policy accept;"), vec!["ct state new jump endpoints-check".into()]),
        ("filter-output", Some("type filter hook output priority 0; policy accept;"), vec!["ct state new jump endpoints-check".into()]),
        // Before DNAT too: the node's own connections to an LB IP obey
        // loadBalancerSourceRanges, as in kube-proxy.
        ("filter-output-pre-dnat", Some("type filter hook output priority -110; policy accept;"), vec!["ct state new jump firewall-check".into()]),
        (
            "firewall-check",
            None,
            vec![words(family, "{ip} daddr . meta l4proto . th dport @firewall-ips {ip} daddr . meta l4proto . th dport . {ip} saddr != @firewall-allow drop")],
        ),
        (
            "endpoints-check",
            None,
            vec![
                words(family, "{ip} daddr . meta l4proto . th dport vmap @no-endpoint-services"),
                words(family, "fib daddr type local {ip} daddr != {loopback} {ip} daddr @nodeport-addresses meta l4proto . th dport vmap @no-endpoint-nodeports"),
                // A ClusterIP on a port the Service does not have.
                words(family, "{ip} daddr @cluster-ips goto reject-chain"),
                // An address of the Service network no Service holds: not
                // sent out by the default route (kube-proxy drops it too).
                words(family, "{ip} daddr @service-cidrs drop"),
            ],
        ),
        (
            "services",
            None,
            vec![
                words(family, "{ip} daddr . meta l4proto . th dport vmap @service-ips"),
                // NodePorts only on --nodeport-addresses (default: the node's primary IPs).
                words(family, "fib daddr type local {ip} daddr != {loopback} {ip} daddr @nodeport-addresses meta l4proto . th dport vmap @service-nodeports"),
            ],
        ),
        (
            "masquerading",
            None,
            vec![
                // A pod that reached itself through its Service.
                words(family, "ct status dnat {ip} saddr . {ip} daddr @hairpin masquerade"),
                format!("meta mark & {m:#x} == 0 return"),
                format!("meta mark set meta mark xor {m:#x}"),
                "masquerade fully-random".into(),
            ],
        ),
        ("mark-for-masquerade", None, vec![format!("meta mark set meta mark or {m:#x}")]),
        // A TCP reset reaches the client at once; an ICMPv6 error sent from
        // the forward path arrives only for the retransmitted SYN (measured:
        // 1 s), so TCP is reset in both families, the rest gets ICMP.
        (
            "reject-chain",
            None,
            vec![
                "meta l4proto tcp reject with tcp reset".into(),
                words(family, "{reject}"),
            ],
        ),
    ]
}

/// A short stable id for a service port. Chain and set names are made of
/// ids and parsed addresses only: a Service's namespace, name and port name
/// are input and never reach nft text (a quote, a space or 300 characters
/// there once broke or escaped the ruleset). 64 bits of FNV-1a over the
/// length-prefixed fields; the applier checks that ids do not collide.
pub fn port_id(sp: &ServicePort) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for field in [
        sp.namespace.as_str(),
        sp.name.as_str(),
        sp.protocol.nft(),
        sp.port_name.as_str(),
    ] {
        for b in (field.len() as u64)
            .to_le_bytes()
            .iter()
            .chain(field.as_bytes())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..13)
        .map(|i| ALPHABET[((h >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// `ns/name:port/protocol` of a service port for an nft comment line: only
/// characters Kubernetes names may hold, everything else `_`, at most 63
/// of each part. For people reading `--dry-run`; never parsed.
pub fn label(sp: &ServicePort) -> String {
    fn clean(text: &str) -> String {
        let mut out: String = text
            .chars()
            .take(63)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if text.chars().count() > 63 {
            out.push_str("...");
        }
        out
    }
    format!(
        "{}/{}:{}/{}",
        clean(&sp.namespace),
        clean(&sp.name),
        clean(&sp.port_name),
        sp.protocol.nft()
    )
}

struct Names {
    svc: String,
    ext: String,
    local: String,
    id: String,
    /// `ip` or `ip6`.
    ip: &'static str,
}

/// An address as a chain or set name may contain it (no colons).
fn name_part(ip: IpAddr) -> String {
    ip.to_string().replace(':', ".")
}

impl Names {
    fn of(sp: &ServicePort) -> Names {
        let id = port_id(sp);
        Names {
            svc: format!("svc-{id}"),
            ext: format!("ext-{id}"),
            local: format!("local-{id}"),
            id,
            ip: match sp.family {
                Family::V4 => "ip",
                Family::V6 => "ip6",
            },
        }
    }

    fn endpoint_chain(&self, e: &Endpoint) -> String {
        format!("ep-{}-{}/{}", self.id, name_part(e.ip), e.port)
    }

    fn affinity_set(&self, e: &Endpoint) -> String {
        format!("aff-{}-{}/{}", self.id, name_part(e.ip), e.port)
    }
}

/// Rules that pick one of `endpoints` at random, evenly: rule i matches with
/// probability 1/(n-i) of what reaches it, so each endpoint gets 1/n.
fn cascade(
    rules: &mut Vec<String>,
    endpoints: &[Endpoint],
    protocol: Protocol,
    affinity: bool,
    names: &Names,
) {
    let n = endpoints.len();
    let target = |e: &Endpoint| {
        if affinity {
            format!("goto {}", names.endpoint_chain(e))
        } else {
            format!(
                "meta l4proto {} dnat to {}",
                protocol.nft(),
                SocketAddr::new(e.ip, e.port)
            )
        }
    };
    if affinity {
        for e in endpoints {
            rules.push(format!(
                "{} saddr @{} goto {}",
                names.ip,
                names.affinity_set(e),
                names.endpoint_chain(e)
            ));
        }
    }
    for (i, e) in endpoints.iter().enumerate() {
        if i + 1 < n {
            rules.push(format!("numgen random mod {} == 0 {}", n - i, target(e)));
        } else {
            rules.push(target(e));
        }
    }
}

/// An empty ruleset: every named set declared, no element.
fn empty(family: Family) -> Ruleset {
    let mut rs = Ruleset {
        family,
        ..Ruleset::default()
    };
    for (name, _) in SETS {
        rs.elements.insert(name, BTreeMap::new());
    }
    rs
}

/// The networks of an interval set, those of `family`, merged: an
/// interval set refuses overlapping elements (`File exists`).
fn intervals(networks: &[IpNet], family: Family) -> Vec<IpNet> {
    IpNet::aggregate(
        &networks
            .iter()
            .filter(|c| Family::of(c.addr()) == family)
            .map(IpNet::trunc)
            .collect(),
    )
}

/// The table-wide part (those of `family`): the pod network, the Service
/// network, and where NodePorts answer.
pub fn render_base(
    cluster_cidrs: &[IpNet],
    service_cidrs: &[IpNet],
    nodeport_networks: &[IpNet],
    family: Family,
) -> Ruleset {
    let mut rs = empty(family);
    for (set, networks) in [
        ("cluster-cidrs", cluster_cidrs),
        ("service-cidrs", service_cidrs),
        ("nodeport-addresses", nodeport_networks),
    ] {
        let elements = rs.elements.get_mut(set).expect("declared");
        for net in intervals(networks, family) {
            elements.insert(net.to_string(), String::new());
        }
    }
    rs
}

/// Render the table of one family. Service ports whose chain names would
/// collide with another's are left out (see [`colliding_ports`]).
pub fn render(table: &ServiceTable, family: Family) -> Ruleset {
    let mut rs = render_base(
        &table.cluster_cidrs,
        &table.service_cidrs,
        &table.nodeport_networks,
        family,
    );
    let masquerade_outsiders = rs
        .elements
        .get("cluster-cidrs")
        .is_some_and(|c| !c.is_empty());
    let colliding = colliding_ports(table);
    for sp in table
        .ports
        .iter()
        .filter(|sp| sp.family == family && !colliding.contains(&port_id(sp)))
    {
        merge(&mut rs, render_port(sp, masquerade_outsiders));
    }
    rs
}

/// Ids that two different service ports share (never seen: 64-bit hashes;
/// checked all the same, since a shared chain would mix two Services).
pub fn colliding_ports(table: &ServiceTable) -> BTreeSet<String> {
    let mut owners: BTreeMap<String, (&str, &str, Protocol, &str)> = BTreeMap::new();
    let mut colliding = BTreeSet::new();
    for sp in &table.ports {
        let who = (
            sp.namespace.as_str(),
            sp.name.as_str(),
            sp.protocol,
            sp.port_name.as_str(),
        );
        let id = port_id(sp);
        if let Some(owner) = owners.get(&id) {
            if *owner != who {
                colliding.insert(id);
            }
        } else {
            owners.insert(id, who);
        }
    }
    colliding
}

/// Whether `family` needs a table at all: a pod network or a Service in it.
pub fn family_in_use(table: &ServiceTable, family: Family) -> bool {
    table
        .cluster_cidrs
        .iter()
        .any(|c| Family::of(c.addr()) == family)
        || table.ports.iter().any(|sp| sp.family == family)
}

/// Add `fragment` to `into`; elements are a union.
pub fn merge(into: &mut Ruleset, fragment: Ruleset) {
    into.chains.extend(fragment.chains);
    into.labels.extend(fragment.labels);
    into.affinity_sets.extend(fragment.affinity_sets);
    for (set, elements) in fragment.elements {
        into.elements.entry(set).or_default().extend(elements);
    }
}

/// The shared chains that DNAT through the endpoint maps, one per kind of
/// traffic and endpoint count.
#[derive(Clone, Copy)]
enum SlotChain {
    /// ClusterIP traffic: masqueraded only from outside the pod network.
    Cluster,
    /// externalIPs and LoadBalancer IPs (`externalTrafficPolicy: Cluster`).
    External,
    /// NodePorts (`externalTrafficPolicy: Cluster`).
    NodePort,
}

/// Shared chains are named by what they do, not by a Service: several
/// Services use each, so partial syncs add them but never delete them.
pub fn is_shared_chain(name: &str) -> bool {
    ["cluster-dnat-", "external-dnat-", "nodeport-dnat-"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// ClusterIP traffic from outside the pod network is masqueraded.
fn masquerade_outsiders_rule(ip: &str) -> String {
    format!("{ip} saddr != @cluster-cidrs jump mark-for-masquerade")
}

fn slot_chain(
    kind: SlotChain,
    n: usize,
    masquerade_outsiders: bool,
    ip: &str,
) -> (String, Vec<String>) {
    let by_address = format!(
        "dnat {ip} to {ip} daddr . meta l4proto . th dport . numgen random mod {n} map @service-endpoints"
    );
    match kind {
        SlotChain::Cluster => {
            let mut rules = Vec::new();
            if masquerade_outsiders {
                rules.push(masquerade_outsiders_rule(ip));
            }
            rules.push(by_address);
            (format!("cluster-dnat-{n}"), rules)
        }
        SlotChain::External => (
            format!("external-dnat-{n}"),
            vec!["jump mark-for-masquerade".into(), by_address],
        ),
        SlotChain::NodePort => (
            format!("nodeport-dnat-{n}"),
            vec![
                "jump mark-for-masquerade".into(),
                format!("dnat {ip} to meta l4proto . th dport . numgen random mod {n} map @nodeport-endpoints"),
            ],
        ),
    }
}

/// The chains, sets and elements of one service port.
///
/// Most service ports need no chain of their own: their addresses dispatch
/// to a shared `*-dnat-N` chain and their endpoints are slots in the
/// endpoint maps. Session affinity (an update per endpoint) and
/// `externalTrafficPolicy: Local` with external addresses (two endpoint
/// lists behind one address) keep per-service chains with a random cascade.
pub fn render_port(sp: &ServicePort, masquerade_outsiders: bool) -> Ruleset {
    let mut rs = empty(sp.family);
    let add = |rs: &mut Ruleset, set: &'static str, key: String, value: String| {
        rs.elements
            .get_mut(set)
            .expect("declared")
            .insert(key, value);
    };
    let slots = |rs: &mut Ruleset, set: &'static str, key: &str, endpoints: &[Endpoint]| {
        for (i, e) in endpoints.iter().enumerate() {
            rs.elements
                .get_mut(set)
                .expect("declared")
                .insert(format!("{key} . {i}"), format!("{} . {}", e.ip, e.port));
        }
    };
    let names = Names::of(sp);
    let shared = |rs: &mut Ruleset, kind: SlotChain, n: usize| -> String {
        let (name, rules) = slot_chain(kind, n, masquerade_outsiders, names.ip);
        rs.chains.insert(name.clone(), rules);
        name
    };
    let p = sp.protocol.nft();
    let affinity = sp.affinity_timeout.is_some();
    let per_service_chains = affinity || (sp.external_local && sp.has_external());
    let by_slots = !per_service_chains;
    let mut used_endpoints: BTreeSet<Endpoint> = BTreeSet::new();

    // Cluster chain: ClusterIP traffic (and pod/node traffic to external
    // addresses of externalTrafficPolicy: Local Services).
    if !sp.cluster_endpoints.is_empty() && !by_slots {
        let mut rules = Vec::new();
        if masquerade_outsiders {
            rules.push(masquerade_outsiders_rule(names.ip));
        }
        cascade(
            &mut rules,
            &sp.cluster_endpoints,
            sp.protocol,
            affinity,
            &names,
        );
        used_endpoints.extend(sp.cluster_endpoints.iter().cloned());
        rs.chains.insert(names.svc.clone(), rules);
    }
    if let Some(cip) = sp.cluster_ip {
        add(&mut rs, "cluster-ips", cip.to_string(), String::new());
        let key = format!("{cip} . {p} . {}", sp.port);
        if !sp.cluster_endpoints.is_empty() {
            let target = if by_slots {
                slots(&mut rs, "service-endpoints", &key, &sp.cluster_endpoints);
                shared(&mut rs, SlotChain::Cluster, sp.cluster_endpoints.len())
            } else {
                names.svc.clone()
            };
            add(&mut rs, "service-ips", key, format!("goto {target}"));
        } else if sp.has_endpoints {
            // internalTrafficPolicy: Local without a local endpoint.
            add(&mut rs, "no-endpoint-services", key, "drop".into());
        } else {
            add(
                &mut rs,
                "no-endpoint-services",
                key,
                "goto reject-chain".into(),
            );
        }
    }

    if sp.has_external() {
        let externals: Vec<IpAddr> = sp
            .external_ips
            .iter()
            .chain(&sp.load_balancer_ips)
            .copied()
            .collect();
        if sp.has_endpoints && by_slots {
            // externalTrafficPolicy: Cluster; internalTrafficPolicy: Local
            // does not bind external traffic, so every endpoint serves it.
            let n = sp.all_endpoints.len();
            for ip in &externals {
                let key = format!("{ip} . {p} . {}", sp.port);
                slots(&mut rs, "service-endpoints", &key, &sp.all_endpoints);
                let chain = shared(&mut rs, SlotChain::External, n);
                add(&mut rs, "service-ips", key, format!("goto {chain}"));
            }
            if let Some(np) = sp.node_port {
                let key = format!("{p} . {np}");
                slots(&mut rs, "nodeport-endpoints", &key, &sp.all_endpoints);
                let chain = shared(&mut rs, SlotChain::NodePort, n);
                add(&mut rs, "service-nodeports", key, format!("goto {chain}"));
            }
        } else if sp.has_endpoints {
            let mut rules = Vec::new();
            if sp.external_local {
                // Pods and the node itself may use any endpoint; the
                // world only this node's, keeping the client's address.
                if !sp.cluster_endpoints.is_empty() {
                    if masquerade_outsiders {
                        rules.push(format!(
                            "{} saddr @cluster-cidrs goto {}",
                            names.ip, names.svc
                        ));
                    }
                    rules.push("fib saddr type local jump mark-for-masquerade".into());
                    rules.push(format!("fib saddr type local goto {}", names.svc));
                }
                if sp.local_endpoints.is_empty() {
                    rules.push("drop".into());
                } else {
                    rules.push(format!("goto {}", names.local));
                    let mut local = Vec::new();
                    cascade(
                        &mut local,
                        &sp.local_endpoints,
                        sp.protocol,
                        affinity,
                        &names,
                    );
                    used_endpoints.extend(sp.local_endpoints.iter().cloned());
                    rs.chains.insert(names.local.clone(), local);
                }
            } else {
                rules.push("jump mark-for-masquerade".into());
                if sp.cluster_endpoints == sp.all_endpoints {
                    rules.push(format!("goto {}", names.svc));
                } else {
                    // internalTrafficPolicy: Local does not bind external traffic.
                    cascade(&mut rules, &sp.all_endpoints, sp.protocol, affinity, &names);
                    used_endpoints.extend(sp.all_endpoints.iter().cloned());
                }
            }
            rs.chains.insert(names.ext.clone(), rules);
            for ip in &externals {
                add(
                    &mut rs,
                    "service-ips",
                    format!("{ip} . {p} . {}", sp.port),
                    format!("goto {}", names.ext),
                );
            }
            if let Some(np) = sp.node_port {
                add(
                    &mut rs,
                    "service-nodeports",
                    format!("{p} . {np}"),
                    format!("goto {}", names.ext),
                );
            }
        } else {
            for ip in &externals {
                add(
                    &mut rs,
                    "no-endpoint-services",
                    format!("{ip} . {p} . {}", sp.port),
                    "goto reject-chain".into(),
                );
            }
            if let Some(np) = sp.node_port {
                add(
                    &mut rs,
                    "no-endpoint-nodeports",
                    format!("{p} . {np}"),
                    "goto reject-chain".into(),
                );
            }
        }
        // loadBalancerSourceRanges: the LB IPs take only these sources
        // (none when the ranges could not be read: closed, never open).
        let mut allowed = sp.source_ranges.clone();
        if sp.lb_ips_as_sources {
            allowed.extend(sp.load_balancer_ips.iter().map(|ip| IpNet::from(*ip)));
        }
        let allowed = intervals(&allowed, sp.family);
        for lb in sp.load_balancer_ips.iter().filter(|_| sp.firewall) {
            add(
                &mut rs,
                "firewall-ips",
                format!("{lb} . {p} . {}", sp.port),
                String::new(),
            );
            for range in &allowed {
                add(
                    &mut rs,
                    "firewall-allow",
                    format!("{lb} . {p} . {} . {range}", sp.port),
                    String::new(),
                );
            }
        }
    }

    for e in &used_endpoints {
        if affinity {
            let set = names.affinity_set(e);
            rs.chains.insert(
                names.endpoint_chain(e),
                vec![
                    format!("update @{set} {{ {} saddr }}", names.ip),
                    format!("meta l4proto {p} dnat to {}", SocketAddr::new(e.ip, e.port)),
                ],
            );
            rs.affinity_sets
                .insert(set, sp.affinity_timeout.unwrap_or(10800));
        }
    }
    if rs.chains.keys().any(|c| !is_shared_chain(c)) {
        let text = label(sp);
        for chain in rs.chains.keys().filter(|c| !is_shared_chain(c)) {
            rs.labels.insert(chain.clone(), text.clone());
        }
    }
    for e in sp.all_endpoints.iter().filter(|e| e.local) {
        add(
            &mut rs,
            "hairpin",
            format!("{} . {}", e.ip, e.ip),
            String::new(),
        );
    }
    rs
}

fn element_text(key: &str, value: &str) -> String {
    if value.is_empty() {
        key.to_owned()
    } else {
        format!("{key} : {value}")
    }
}

/// The whole table as one transaction that replaces whatever is there:
/// exactly what the first sync applies, and what `--dry-run` prints.
pub fn render_full(rs: &Ruleset) -> String {
    let mut out = String::new();
    let table = table(rs.family);
    let _ = writeln!(out, "add table {table}");
    let _ = writeln!(out, "delete table {table}");
    let _ = writeln!(out, "table {table} {{");
    for (name, ty) in SETS {
        let _ = writeln!(
            out,
            "\t{} {name} {{ {} }}",
            set_kind(name),
            words(rs.family, ty)
        );
    }
    for (name, timeout) in &rs.affinity_sets {
        let _ = writeln!(
            out,
            "\tset {name} {{ {} }}",
            affinity_set_type(rs.family, *timeout)
        );
    }
    for (name, hook, rules) in skeleton_chains(rs.family) {
        write_chain(&mut out, name, hook, &rules, None);
    }
    // Endpoint chains first: service chains jump to them.
    for (name, rules) in rs.chains.iter().filter(|(n, _)| n.starts_with("ep-")) {
        write_chain(&mut out, name, None, rules, rs.labels.get(name));
    }
    for (name, rules) in rs
        .chains
        .iter()
        .filter(|(n, _)| !n.starts_with("ep-") && !n.starts_with("ext-"))
    {
        write_chain(&mut out, name, None, rules, rs.labels.get(name));
    }
    for (name, rules) in rs.chains.iter().filter(|(n, _)| n.starts_with("ext-")) {
        write_chain(&mut out, name, None, rules, rs.labels.get(name));
    }
    let _ = writeln!(out, "}}");
    for (set, elements) in &rs.elements {
        if elements.is_empty() {
            continue;
        }
        let list: Vec<String> = elements.iter().map(|(k, v)| element_text(k, v)).collect();
        let _ = writeln!(out, "add element {table} {set} {{ {} }}", list.join(", "));
    }
    out
}

/// The declaration of a session-affinity set: client addresses that expire.
pub fn affinity_set_type(family: Family, timeout: u32) -> String {
    words(
        family,
        &format!("type {{addr}}; flags dynamic,timeout; timeout {timeout}s;"),
    )
}

fn write_chain(
    out: &mut String,
    name: &str,
    hook: Option<&str>,
    rules: &[String],
    label: Option<&String>,
) {
    let _ = writeln!(out, "\tchain {name} {{");
    if let Some(label) = label {
        let _ = writeln!(out, "\t\t# {label}");
    }
    if let Some(hook) = hook {
        let _ = writeln!(out, "\t\t{hook}");
    }
    for rule in rules {
        let _ = writeln!(out, "\t\t{rule}");
    }
    let _ = writeln!(out, "\t}}");
}
