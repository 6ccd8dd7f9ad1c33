//! The service table as typed nftables ([`strait_nft`]): a fixed skeleton,
//! shared DNAT chains, per-service chains where needed, and the elements of
//! a few large maps. [`Ruleset`] keeps them apart so that the applier can
//! send only what changed; [`to_table`] assembles the whole table, whose
//! text ([`render_full`]) is what `--dry-run` prints and a full sync loads.
//!
//! Only values are built here: chain and set names are made of ids and
//! parsed addresses, elements of parsed addresses and numbers. No input
//! text reaches a rule, and no text is parsed back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use strait_nft::{
    addr_type, ct_state, ct_status, protocol, Chain, ChainType, DataType, Element, ElementValue,
    Expr, Field, Hook, MapData, MarkOp, Priority, Reject, Set, Table, Value, Verdict, L3,
};

use crate::plan::{Endpoint, Family, Protocol, ServicePort, ServiceTable, MASQUERADE_MARK};

/// The IPv4 table strait owns: `nft list table ip strait` shows it.
pub const TABLE: &str = "ip strait";

/// The name of strait's table in both families.
pub const TABLE_NAME: &str = "strait";

/// The table of a family: `ip strait` or `ip6 strait`.
pub fn table(family: Family) -> &'static str {
    match family {
        Family::V4 => TABLE,
        Family::V6 => "ip6 strait",
    }
}

/// The nftables family of a family's table.
pub fn nft_family(family: Family) -> strait_nft::Family {
    match family {
        Family::V4 => strait_nft::Family::Ip,
        Family::V6 => strait_nft::Family::Ip6,
    }
}

fn l3(family: Family) -> L3 {
    match family {
        Family::V4 => L3::V4,
        Family::V6 => L3::V6,
    }
}

/// A protocol as a value to match or store.
fn proto(p: Protocol) -> Value {
    Value::Proto(match p {
        Protocol::Tcp => protocol::TCP,
        Protocol::Udp => protocol::UDP,
        Protocol::Sctp => protocol::SCTP,
    })
}

/// The elements of one set or map: key → value (`None` in sets).
pub type Elements = BTreeMap<Vec<Value>, Option<ElementValue>>;

/// A rendered table, in parts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub family: Family,
    /// Per-service and shared chains by name. A per-service chain's note
    /// says which Service it is for (see [`label`]): an nft comment line in
    /// `--dry-run` and full syncs, for people only.
    pub chains: BTreeMap<String, Chain>,
    /// Session-affinity sets: name → timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
    /// Elements of the named sets and maps of the skeleton.
    pub elements: BTreeMap<&'static str, Elements>,
}

/// The named sets and maps of the skeleton, in the order they are declared.
const SET_NAMES: [&str; 13] = [
    "cluster-cidrs",
    "service-cidrs",
    "nodeport-addresses",
    "cluster-ips",
    "service-ips",
    "service-nodeports",
    "no-endpoint-services",
    "no-endpoint-nodeports",
    "hairpin",
    "firewall-ips",
    "firewall-allow",
    "service-endpoints",
    "nodeport-endpoints",
];

/// The declaration of a named set or map of the skeleton.
fn skeleton_set(name: &str, family: Family) -> Set {
    use DataType::{InetProto as P, InetService as S, Slot};
    let a = DataType::addr(l3(family));
    let verdicts = |key: &[DataType]| Set::map(key, MapData::Verdict);
    // address . port of an endpoint.
    let endpoint = || MapData::Value(vec![a, S]);
    match name {
        "cluster-cidrs" | "service-cidrs" | "nodeport-addresses" => Set::new(&[a]).interval(),
        "cluster-ips" => Set::new(&[a]),
        "service-ips" | "no-endpoint-services" => verdicts(&[a, P, S]),
        "service-nodeports" | "no-endpoint-nodeports" => verdicts(&[P, S]),
        "hairpin" => Set::new(&[a, a]),
        "firewall-ips" => Set::new(&[a, P, S]),
        "firewall-allow" => Set::new(&[a, P, S, a]).interval(),
        // Endpoints by slot: a Service's N endpoints are slots 0..N-1 under
        // each of its addresses, and one shared rule per N picks a slot at
        // random. Endpoint changes are then element changes, which the
        // kernel applies without re-validating the table (rule changes cost
        // ~15 ms at 10k Services here; see the README).
        "service-endpoints" => Set::map(&[a, P, S, Slot], endpoint()),
        // "nodeport-endpoints"
        _ => Set::map(&[P, S, Slot], endpoint()),
    }
}

/// The declaration of a session-affinity set: client addresses that expire.
pub fn affinity_set(family: Family, timeout: u32) -> Set {
    let mut set = Set::new(&[DataType::addr(l3(family))]);
    set.flags.dynamic = true;
    set.flags.timeout = true;
    set.timeout = Some(timeout);
    set
}

/// `ip daddr . meta l4proto . th dport`: what the dispatch maps are keyed by.
fn dispatch_key(l3: L3) -> [Field; 3] {
    [Field::daddr(l3), Field::L4Proto, Field::ThDport]
}

/// A new connection (`ct state new`).
fn new_connection() -> Expr {
    Expr::eq(Field::CtState, Value::CtState(ct_state::NEW))
}

/// The fixed chains: hooks, dispatch, checks, masquerading.
fn skeleton_chains(family: Family) -> Vec<(&'static str, Chain)> {
    let l3 = l3(family);
    let (saddr, daddr) = (Field::saddr(l3), Field::daddr(l3));
    let dispatch = dispatch_key(l3);
    let port = [Field::L4Proto, Field::ThDport];
    let loopback = match family {
        Family::V4 => Value::Net(IpNet::V4(Ipv4Net::new_assert(
            Ipv4Addr::new(127, 0, 0, 0),
            8,
        ))),
        Family::V6 => Value::Addr(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    };
    // A NodePort: to a local address on --nodeport-addresses (default: the
    // node's primary IPs), not loopback.
    let on_nodeport_address = || {
        vec![
            Expr::eq(Field::FibDaddrType, Value::AddrType(addr_type::LOCAL)),
            Expr::ne(daddr, loopback.clone()),
            Expr::lookup(&[daddr], "nodeport-addresses"),
        ]
    };
    let with = |chain: Chain, rules: Vec<Vec<Expr>>| {
        let mut chain = chain;
        for rule in rules {
            chain.rule(rule);
        }
        chain
    };
    let hooked =
        |kind, hook, priority, rule: Vec<Expr>| with(Chain::base(kind, hook, priority), vec![rule]);
    let m = MASQUERADE_MARK;
    vec![
        (
            "nat-prerouting",
            hooked(
                ChainType::Nat,
                Hook::Prerouting,
                Priority::Dstnat,
                vec![Expr::jump("services")],
            ),
        ),
        // nft 1.0.6 needs a numeric priority in output chains.
        (
            "nat-output",
            hooked(
                ChainType::Nat,
                Hook::Output,
                Priority::Value(-100),
                vec![Expr::jump("services")],
            ),
        ),
        (
            "nat-postrouting",
            hooked(
                ChainType::Nat,
                Hook::Postrouting,
                Priority::Srcnat,
                vec![Expr::jump("masquerading")],
            ),
        ),
        // Before DNAT: loadBalancerSourceRanges.
        (
            "filter-prerouting",
            hooked(
                ChainType::Filter,
                Hook::Prerouting,
                Priority::Value(-110),
                vec![new_connection(), Expr::jump("firewall-check")],
            ),
        ),
        // After DNAT: what was not translated has no endpoint (or no such port).
        (
            "filter-input",
            hooked(
                ChainType::Filter,
                Hook::Input,
                Priority::Value(0),
                vec![new_connection(), Expr::jump("endpoints-check")],
            ),
        ),
        (
            "filter-forward",
            hooked(
                ChainType::Filter,
                Hook::Forward,
                Priority::Value(0),
                vec![new_connection(), Expr::jump("endpoints-check")],
            ),
        ),
        (
            "filter-output",
            hooked(
                ChainType::Filter,
                Hook::Output,
                Priority::Value(0),
                vec![new_connection(), Expr::jump("endpoints-check")],
            ),
        ),
        // Before DNAT too: the node's own connections to an LB IP obey
        // loadBalancerSourceRanges, as in kube-proxy.
        (
            "filter-output-pre-dnat",
            hooked(
                ChainType::Filter,
                Hook::Output,
                Priority::Value(-110),
                vec![new_connection(), Expr::jump("firewall-check")],
            ),
        ),
        (
            "firewall-check",
            with(
                Chain::regular(),
                vec![vec![
                    Expr::lookup(&dispatch, "firewall-ips"),
                    Expr::not_in(
                        &[daddr, Field::L4Proto, Field::ThDport, saddr],
                        "firewall-allow",
                    ),
                    Expr::drop(),
                ]],
            ),
        ),
        (
            "endpoints-check",
            with(
                Chain::regular(),
                vec![
                    vec![Expr::vmap(&dispatch, "no-endpoint-services")],
                    [
                        on_nodeport_address(),
                        vec![Expr::vmap(&port, "no-endpoint-nodeports")],
                    ]
                    .concat(),
                    // A ClusterIP on a port the Service does not have.
                    vec![
                        Expr::lookup(&[daddr], "cluster-ips"),
                        Expr::goto("reject-chain"),
                    ],
                    // An address of the Service network no Service holds: not
                    // sent out by the default route (kube-proxy drops it too).
                    vec![Expr::lookup(&[daddr], "service-cidrs"), Expr::drop()],
                ],
            ),
        ),
        (
            "services",
            with(
                Chain::regular(),
                vec![
                    vec![Expr::vmap(&dispatch, "service-ips")],
                    // NodePorts only on --nodeport-addresses (default: the node's primary IPs).
                    [
                        on_nodeport_address(),
                        vec![Expr::vmap(&port, "service-nodeports")],
                    ]
                    .concat(),
                ],
            ),
        ),
        (
            "masquerading",
            with(
                Chain::regular(),
                vec![
                    // A pod that reached itself through its Service.
                    vec![
                        Expr::eq(Field::CtStatus, Value::CtStatus(ct_status::DNAT)),
                        Expr::lookup(&[saddr, daddr], "hairpin"),
                        Expr::Masquerade {
                            fully_random: false,
                        },
                    ],
                    vec![
                        Expr::Masked {
                            field: Field::Mark,
                            mask: m,
                            op: strait_nft::CmpOp::Eq,
                            value: 0,
                        },
                        Expr::ret(),
                    ],
                    vec![Expr::SetMark(MarkOp::Xor(m))],
                    vec![Expr::Masquerade { fully_random: true }],
                ],
            ),
        ),
        (
            "mark-for-masquerade",
            with(Chain::regular(), vec![vec![Expr::SetMark(MarkOp::Or(m))]]),
        ),
        // A TCP reset reaches the client at once; an ICMPv6 error sent from
        // the forward path arrives only for the retransmitted SYN (measured:
        // 1 s), so TCP is reset in both families, the rest gets ICMP (for
        // IPv6 nft's default would be "no route", which clients read
        // otherwise than "connection refused").
        (
            "reject-chain",
            with(
                Chain::regular(),
                vec![
                    vec![
                        Expr::eq(Field::L4Proto, Value::TCP),
                        Expr::Reject(Reject::TcpReset),
                    ],
                    vec![Expr::Reject(match family {
                        Family::V4 => Reject::Default,
                        Family::V6 => Reject::Icmpv6PortUnreachable,
                    })],
                ],
            ),
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
    l3: L3,
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
            l3: l3(sp.family),
        }
    }

    fn endpoint_chain(&self, e: &Endpoint) -> String {
        format!("ep-{}-{}/{}", self.id, name_part(e.ip), e.port)
    }

    fn affinity_set(&self, e: &Endpoint) -> String {
        format!("aff-{}-{}/{}", self.id, name_part(e.ip), e.port)
    }
}

/// `meta l4proto P dnat to ADDR:PORT`.
fn dnat_to(protocol: Protocol, e: &Endpoint) -> Vec<Expr> {
    vec![
        Expr::eq(Field::L4Proto, proto(protocol)),
        Expr::Dnat {
            to: e.ip,
            port: Some(e.port),
        },
    ]
}

/// Rules that pick one of `endpoints` at random, evenly: rule i matches with
/// probability 1/(n-i) of what reaches it, so each endpoint gets 1/n.
fn cascade(
    chain: &mut Chain,
    endpoints: &[Endpoint],
    protocol: Protocol,
    affinity: bool,
    names: &Names,
) {
    let n = endpoints.len();
    let target = |e: &Endpoint| {
        if affinity {
            vec![Expr::goto(&names.endpoint_chain(e))]
        } else {
            dnat_to(protocol, e)
        }
    };
    if affinity {
        for e in endpoints {
            chain.rule(vec![
                Expr::lookup(&[Field::saddr(names.l3)], &names.affinity_set(e)),
                Expr::goto(&names.endpoint_chain(e)),
            ]);
        }
    }
    for (i, e) in endpoints.iter().enumerate() {
        if i + 1 < n {
            let modulus = u32::try_from(n - i).unwrap_or(u32::MAX);
            let mut rule = vec![Expr::eq(Field::NumgenRandom { modulus }, Value::Number(0))];
            rule.extend(target(e));
            chain.rule(rule);
        } else {
            chain.rule(target(e));
        }
    }
}

/// An empty ruleset: every named set declared, no element.
fn empty(family: Family) -> Ruleset {
    let mut rs = Ruleset {
        family,
        ..Ruleset::default()
    };
    for name in SET_NAMES {
        rs.elements.insert(name, Elements::new());
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

/// Add an element to one of the skeleton's sets.
fn add(rs: &mut Ruleset, set: &'static str, key: Vec<Value>, value: Option<ElementValue>) {
    rs.elements.entry(set).or_default().insert(key, value);
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
        for net in intervals(networks, family) {
            add(&mut rs, set, vec![Value::Net(net)], None);
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
fn masquerade_outsiders_rule(l3: L3) -> Vec<Expr> {
    vec![
        Expr::not_in(&[Field::saddr(l3)], "cluster-cidrs"),
        Expr::jump("mark-for-masquerade"),
    ]
}

fn slot_chain(kind: SlotChain, n: usize, masquerade_outsiders: bool, l3: L3) -> (String, Chain) {
    let modulus = u32::try_from(n).unwrap_or(u32::MAX);
    let slot = Field::NumgenRandom { modulus };
    let [daddr, l4proto, dport] = dispatch_key(l3);
    let by_address = vec![Expr::DnatMap {
        l3,
        key: vec![daddr, l4proto, dport, slot],
        map: "service-endpoints".into(),
    }];
    let mut chain = Chain::regular();
    let name = match kind {
        SlotChain::Cluster => {
            if masquerade_outsiders {
                chain.rule(masquerade_outsiders_rule(l3));
            }
            chain.rule(by_address);
            format!("cluster-dnat-{n}")
        }
        SlotChain::External => {
            chain.rule(vec![Expr::jump("mark-for-masquerade")]);
            chain.rule(by_address);
            format!("external-dnat-{n}")
        }
        SlotChain::NodePort => {
            chain.rule(vec![Expr::jump("mark-for-masquerade")]);
            chain.rule(vec![Expr::DnatMap {
                l3,
                key: vec![l4proto, dport, slot],
                map: "nodeport-endpoints".into(),
            }]);
            format!("nodeport-dnat-{n}")
        }
    };
    (name, chain)
}

fn goto(chain: &str) -> Option<ElementValue> {
    Some(ElementValue::Verdict(Verdict::Goto(chain.to_owned())))
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
    let slots = |rs: &mut Ruleset, set: &'static str, key: &[Value], endpoints: &[Endpoint]| {
        for (i, e) in endpoints.iter().enumerate() {
            let mut slot = key.to_vec();
            slot.push(Value::Number(u32::try_from(i).unwrap_or(u32::MAX)));
            let value = ElementValue::Data(vec![Value::Addr(e.ip), Value::Port(e.port)]);
            add(rs, set, slot, Some(value));
        }
    };
    let names = Names::of(sp);
    let shared = |rs: &mut Ruleset, kind: SlotChain, n: usize| -> String {
        let (name, chain) = slot_chain(kind, n, masquerade_outsiders, names.l3);
        rs.chains.insert(name.clone(), chain);
        name
    };
    let p = proto(sp.protocol);
    // `address . protocol . port`: a key of the dispatch maps.
    let dispatch = |ip: IpAddr| vec![Value::Addr(ip), p.clone(), Value::Port(sp.port)];
    let affinity = sp.affinity_timeout.is_some();
    let per_service_chains = affinity || (sp.external_local && sp.has_external());
    let by_slots = !per_service_chains;
    let mut used_endpoints: BTreeSet<Endpoint> = BTreeSet::new();

    // Cluster chain: ClusterIP traffic (and pod/node traffic to external
    // addresses of externalTrafficPolicy: Local Services).
    if !sp.cluster_endpoints.is_empty() && !by_slots {
        let mut chain = Chain::regular();
        if masquerade_outsiders {
            chain.rule(masquerade_outsiders_rule(names.l3));
        }
        cascade(
            &mut chain,
            &sp.cluster_endpoints,
            sp.protocol,
            affinity,
            &names,
        );
        used_endpoints.extend(sp.cluster_endpoints.iter().cloned());
        rs.chains.insert(names.svc.clone(), chain);
    }
    if let Some(cip) = sp.cluster_ip {
        add(&mut rs, "cluster-ips", vec![Value::Addr(cip)], None);
        let key = dispatch(cip);
        if !sp.cluster_endpoints.is_empty() {
            let target = if by_slots {
                slots(&mut rs, "service-endpoints", &key, &sp.cluster_endpoints);
                shared(&mut rs, SlotChain::Cluster, sp.cluster_endpoints.len())
            } else {
                names.svc.clone()
            };
            add(&mut rs, "service-ips", key, goto(&target));
        } else if sp.has_endpoints {
            // internalTrafficPolicy: Local without a local endpoint.
            let drop = Some(ElementValue::Verdict(Verdict::Drop));
            add(&mut rs, "no-endpoint-services", key, drop);
        } else {
            add(&mut rs, "no-endpoint-services", key, goto("reject-chain"));
        }
    }

    if sp.has_external() {
        let externals: Vec<IpAddr> = sp
            .external_ips
            .iter()
            .chain(&sp.load_balancer_ips)
            .copied()
            .collect();
        let nodeport_key = |np: u16| vec![p.clone(), Value::Port(np)];
        if sp.has_endpoints && by_slots {
            // externalTrafficPolicy: Cluster; internalTrafficPolicy: Local
            // does not bind external traffic, so every endpoint serves it.
            let n = sp.all_endpoints.len();
            for ip in &externals {
                let key = dispatch(*ip);
                slots(&mut rs, "service-endpoints", &key, &sp.all_endpoints);
                let chain = shared(&mut rs, SlotChain::External, n);
                add(&mut rs, "service-ips", key, goto(&chain));
            }
            if let Some(np) = sp.node_port {
                let key = nodeport_key(np);
                slots(&mut rs, "nodeport-endpoints", &key, &sp.all_endpoints);
                let chain = shared(&mut rs, SlotChain::NodePort, n);
                add(&mut rs, "service-nodeports", key, goto(&chain));
            }
        } else if sp.has_endpoints {
            let mut chain = Chain::regular();
            if sp.external_local {
                // Pods and the node itself may use any endpoint; the
                // world only this node's, keeping the client's address.
                if !sp.cluster_endpoints.is_empty() {
                    if masquerade_outsiders {
                        chain.rule(vec![
                            Expr::lookup(&[Field::saddr(names.l3)], "cluster-cidrs"),
                            Expr::goto(&names.svc),
                        ]);
                    }
                    let from_node =
                        || Expr::eq(Field::FibSaddrType, Value::AddrType(addr_type::LOCAL));
                    chain.rule(vec![from_node(), Expr::jump("mark-for-masquerade")]);
                    chain.rule(vec![from_node(), Expr::goto(&names.svc)]);
                }
                if sp.local_endpoints.is_empty() {
                    chain.rule(vec![Expr::drop()]);
                } else {
                    chain.rule(vec![Expr::goto(&names.local)]);
                    let mut local = Chain::regular();
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
                chain.rule(vec![Expr::jump("mark-for-masquerade")]);
                if sp.cluster_endpoints == sp.all_endpoints {
                    chain.rule(vec![Expr::goto(&names.svc)]);
                } else {
                    // internalTrafficPolicy: Local does not bind external traffic.
                    cascade(&mut chain, &sp.all_endpoints, sp.protocol, affinity, &names);
                    used_endpoints.extend(sp.all_endpoints.iter().cloned());
                }
            }
            rs.chains.insert(names.ext.clone(), chain);
            for ip in &externals {
                add(&mut rs, "service-ips", dispatch(*ip), goto(&names.ext));
            }
            if let Some(np) = sp.node_port {
                add(
                    &mut rs,
                    "service-nodeports",
                    nodeport_key(np),
                    goto(&names.ext),
                );
            }
        } else {
            for ip in &externals {
                add(
                    &mut rs,
                    "no-endpoint-services",
                    dispatch(*ip),
                    goto("reject-chain"),
                );
            }
            if let Some(np) = sp.node_port {
                add(
                    &mut rs,
                    "no-endpoint-nodeports",
                    nodeport_key(np),
                    goto("reject-chain"),
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
            add(&mut rs, "firewall-ips", dispatch(*lb), None);
            for range in &allowed {
                let mut key = dispatch(*lb);
                key.push(Value::Net(*range));
                add(&mut rs, "firewall-allow", key, None);
            }
        }
    }

    for e in &used_endpoints {
        if affinity {
            let set = names.affinity_set(e);
            let mut chain = Chain::regular();
            chain.rule(vec![Expr::UpdateSet {
                set: set.clone(),
                key: vec![Field::saddr(names.l3)],
            }]);
            chain.rule(dnat_to(sp.protocol, e));
            rs.chains.insert(names.endpoint_chain(e), chain);
            rs.affinity_sets
                .insert(set, sp.affinity_timeout.unwrap_or(10800));
        }
    }
    if rs.chains.keys().any(|n| !is_shared_chain(n)) {
        let text = label(sp);
        for (_, chain) in rs.chains.iter_mut().filter(|(n, _)| !is_shared_chain(n)) {
            chain.note = Some(text.clone());
        }
    }
    for e in sp.all_endpoints.iter().filter(|e| e.local) {
        add(
            &mut rs,
            "hairpin",
            vec![Value::Addr(e.ip), Value::Addr(e.ip)],
            None,
        );
    }
    rs
}

/// The text order of a chain that is not in the skeleton: endpoint chains
/// first (service chains jump to them), then service, local and shared
/// chains, then external chains (they go to service chains).
fn text_rank(name: &str) -> u8 {
    if name.starts_with("ep-") {
        0
    } else if name.starts_with("ext-") {
        2
    } else {
        1
    }
}

/// The whole table of `family`: the skeleton with `parts` (the table-wide
/// part and Service fragments) in it. Where two parts hold the same chain
/// or element the later one wins.
pub fn to_table<'a>(family: Family, parts: impl IntoIterator<Item = &'a Ruleset>) -> Table {
    into_table(family, parts.into_iter().cloned())
}

/// [`to_table`] of parts given away: their chains and elements are moved
/// into the table, not copied (the full sync at 10k Services would hold
/// both copies at once).
pub fn into_table(family: Family, parts: impl IntoIterator<Item = Ruleset>) -> Table {
    let mut t = Table::new(nft_family(family), TABLE_NAME);
    let mut chains: BTreeMap<String, Chain> = BTreeMap::new();
    let mut affinity_sets: BTreeMap<String, u32> = BTreeMap::new();
    let mut elements: BTreeMap<&str, Vec<(Vec<Value>, Element)>> = BTreeMap::new();
    for part in parts {
        for (name, part_elements) in part.elements {
            elements
                .entry(name)
                .or_default()
                .extend(part_elements.into_iter().map(|(key, value)| {
                    let element = Element {
                        value,
                        comment: None,
                    };
                    (key, element)
                }));
        }
        chains.extend(part.chains);
        affinity_sets.extend(part.affinity_sets);
    }
    for name in SET_NAMES {
        let set = t.set(name, skeleton_set(name, family));
        // Built at once from the sorted elements (much faster than one
        // insert at a time); of equal keys the last part's wins.
        set.elements = elements
            .remove(name)
            .unwrap_or_default()
            .into_iter()
            .collect();
    }
    for (name, timeout) in affinity_sets {
        t.set(&name, affinity_set(family, timeout));
    }
    for (name, chain) in skeleton_chains(family) {
        t.chain(name, chain);
    }
    let mut ranked: [Vec<(String, Chain)>; 3] = Default::default();
    for (name, chain) in chains {
        let rank = usize::from(text_rank(&name)).min(2);
        ranked[rank].push((name, chain));
    }
    for (name, chain) in ranked.into_iter().flatten() {
        t.chain(&name, chain);
    }
    t
}

/// The whole table as one transaction that replaces whatever is there:
/// exactly what the first sync applies, and what `--dry-run` prints.
pub fn render_full(rs: &Ruleset) -> String {
    strait_nft::text::table_script(&to_table(rs.family, [rs]))
}
