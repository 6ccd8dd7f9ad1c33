//! The planner: cluster state and this node's name to one nftables table
//! per address family (`ip strait-policy`, `ip6 strait-policy`).
//!
//! # Shape of the table
//!
//! ```text
//! chain forward { type filter hook forward priority filter; policy accept;
//!     ct state established,related accept
//!     jump egress-admin            # the tiers of each direction (see `tiers`):
//!     jump ingress-admin           # Admin CNPs, then these, then Baseline CNPs
//! }
//! chain egress-np {
//!     ip saddr vmap @egress        # local pod isolated for egress  -> goto its class
//!     goto egress-baseline         # not isolated: the Baseline tier decides
//! }
//! chain egress-<hash> {            # one per policy class
//!     ip daddr @egress-<hash>-any return                               # peers on every port
//!     ip daddr . meta l4proto . th dport @egress-<hash>-nets return     # ipBlocks x ports
//!     ip daddr @egress-<hash>-pods-ports-<p1> meta l4proto . th dport @ports-<p1> return
//!     ip daddr @egress-<hash>-pods-ports-<p2> meta l4proto . th dport @ports-<p2> return
//!     drop                         # one rule per port set the class's peer pods use
//! }
//! set ports-<p1> { type inet_proto . inet_service; flags interval; }   # shared by the table
//! set egress-<hash>-pods-ports-<p1> { type ipv4_addr; }                 # peer pods, no verdicts
//! ```
//!
//! Why this shape (measured: see `tests/scale.rs` and the report):
//!
//! - **Cost per packet does not grow with the number of policies.** A
//!   packet meets one verdict-map lookup per direction keyed on the local
//!   pod's address and, when that pod is isolated, at most three lookups
//!   in its class chain (a hash lookup for peer pods, interval lookups for
//!   networks) and one in a small port set. No chain has a rule per policy
//!   or per peer: everything that grows with the cluster is an element.
//! - **No peers x ports product.** A first cut kept one
//!   `peer . protocol . port` set per class; at 10,000 policies over 10,000
//!   pods that is millions of elements (the peers of a class times its
//!   ports, again per class). Peer pods are grouped by the set of ports
//!   they are allowed (port sets are shared by the whole table), so a class
//!   costs one element per peer pod. Only ipBlocks (few, and networks) keep
//!   the concatenation, which needs interval (pipapo) sets.
//! - **No verdicts in the big sets.** The peer-pod sets are plain address
//!   sets. A second cut mapped each peer to `goto ports-<hash>` in a
//!   verdict map per class: then every transaction that adds an element
//!   with a jump or goto makes the kernel validate the whole table at
//!   commit (`nf_tables_validate` walks every verdict-map element, ~200,000
//!   at the scale test: 15–80 ms for one element). Verdicts are now only in
//!   the `ingress`/`egress` maps (one element per local pod) and the tiers,
//!   so that walk is a few hundred elements. The price is a rule per port
//!   set in a class chain instead of one lookup; one lookup of `(peer map
//!   value . protocol . port)` would keep it at one, but nft 1.0.6 has no
//!   text for a map inside a concatenation, and `nft list` of such a rule
//!   loaded over netlink aborts (`netlink_parse_concat_expr: Assertion
//!   consumed > 0`), which would break `nft list ruleset` on the node.
//! - **ClusterNetworkPolicy tiers** wrap this: see [`tiers`] (an Admin
//!   tier chain before `egress-np`/`ingress-np`, a Baseline one after,
//!   first-match resolved while planning into per-class interval maps).
//! - **Policy classes.** Pods selected by the same policies (and, for
//!   ingress, mapping the named ports those policies use to the same
//!   numbers) are allowed exactly the same peers, so they share one chain
//!   and its sets. A class is named from a hash of what defines it, not
//!   from its position, so a pod whose labels change moves between existing
//!   classes by one verdict-map element; only a combination never seen
//!   before adds a chain.
//! - **Service traffic is judged after DNAT**: the chain hooks `forward` at
//!   priority `filter` (0), after NAT's prerouting (-100), so it sees the
//!   chosen endpoint, never the ClusterIP.
//! - **Replies pass** through `ct state established,related accept`; a
//!   connection allowed once stays allowed while conntrack keeps it (the
//!   common choice: a policy change does not cut an established one).
//! - **Traffic from the pod's own node** (kubelet probes) is sent by the
//!   host and goes through `output`, not `forward`: it is never judged.
//! - **hostNetwork pods** are neither selected nor peers: they carry their
//!   node's address.
//!
//! Named ports are resolved per destination pod: for ingress against the
//! local pod (part of its class), for egress against every peer pod (its
//! own port set); a named port toward an address that is no pod cannot be
//! resolved and stays denied.
//!
//! Interval sets (`ipBlock`, port ranges) must not overlap in the kernel
//! (nft 1.0.6 and the pipapo/rbtree backends refuse it), so the elements
//! of a class are made disjoint here: port ranges are cut at every
//! boundary, the addresses of each piece aggregated, and equal
//! neighbouring pieces joined again.
//!
//! What cannot be honoured as written (an unknown protocol, a broken
//! selector, an `endPort` below its port) is reported as an [`Error`] and
//! grants nothing, while the policy still isolates the pods it selects
//! (fail closed). A broken `podSelector` isolates every pod of the
//! policy's namespace.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use strait_model::k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use strait_model::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use strait_model::{ClusterState, CompactPod, Selector};
use strait_nft::trace::{trace, Node, Packet};
use strait_nft::{
    ct_state, Chain, ChainType, DataType, ElementValue, Expr, Family, Field, Hook, MapData,
    Priority, Set, Table, Value, Verdict, L3,
};

use crate::{Cell, Error, Matrix, PodRef, Protocol, Result};

/// The name of the policy table in both families.
pub const TABLE_NAME: &str = "strait-policy";

/// The label every namespace carries with its own name (the API server
/// sets it; a namespace missing from the state is known by it alone).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A direction of traffic, seen from the selected pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// One node's planned tables and what could not be honoured.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `ip strait-policy`.
    pub v4: Table,
    /// `ip6 strait-policy`.
    pub v6: Table,
    pub stats: Stats,
    /// What each class chain stands for, by chain name: the direction and
    /// the policies that made it (`strait trace` names them).
    pub chains: BTreeMap<String, String>,
}

impl Plan {
    pub fn tables(&self) -> [&Table; 2] {
        [&self.v4, &self.v6]
    }
}

/// How big a plan is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Local pod addresses isolated for ingress / egress.
    pub isolated_ingress: usize,
    pub isolated_egress: usize,
    /// Policy classes (one chain each), both families.
    pub classes: usize,
    /// Set and map elements, both families.
    pub elements: usize,
}

/// Plan the tables of `node`. Problems with policies are in
/// [`Analysis::problems`]; they never open traffic.
pub fn plan(state: &ClusterState, node: &str) -> Plan {
    Analysis::new(state).plan(node)
}

/// A pod that takes part in policy: it has an address and its own network.
#[derive(Debug)]
struct PodInfo<'a> {
    namespace: &'a str,
    name: &'a str,
    node: &'a str,
    ips: Vec<IpAddr>,
    labels: Option<&'a BTreeMap<String, String>>,
    pod: &'a CompactPod,
}

/// A pod as policy sees it; `None` when it takes no part (hostNetwork,
/// finished, or no address yet).
fn read_pod(pod: &CompactPod) -> Option<PodInfo<'_>> {
    if pod.host_network() || matches!(pod.phase(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let mut ips: Vec<IpAddr> = pod.pod_ips().filter_map(|ip| ip.parse().ok()).collect();
    if ips.is_empty() {
        ips.extend(pod.pod_ip().and_then(|ip| ip.parse::<IpAddr>().ok()));
    }
    if ips.is_empty() {
        return None;
    }
    Some(PodInfo {
        namespace: pod.metadata.namespace.as_deref().unwrap_or("default"),
        name: pod.metadata.name.as_deref().unwrap_or(""),
        node: pod.node_name().unwrap_or(""),
        ips,
        labels: pod.metadata.labels.as_ref(),
        pod,
    })
}

/// A namespace's labels with the name label every namespace has (only
/// that when the namespace is not in the state).
fn namespace_labels(state: &ClusterState, namespace: &str) -> BTreeMap<String, String> {
    let mut labels = state
        .namespaces
        .get("", namespace)
        .and_then(|ns| ns.metadata.labels.clone())
        .unwrap_or_default();
    labels.insert(NAMESPACE_NAME_LABEL.to_owned(), namespace.to_owned());
    labels
}

/// Which peers a rule names.
#[derive(Clone, Debug)]
enum Peers {
    /// Every address (`from`/`to` absent or empty).
    Any,
    /// These networks (ipBlocks, exceptions cut out) and the pods of these
    /// groups (one per peer; groups are shared between rules that name the
    /// same selectors, so that 10,000 rules do not copy the same pods).
    Some {
        nets: Vec<IpNet>,
        groups: Vec<Arc<[usize]>>,
        /// What made each group (same order as `groups`): the incremental
        /// planner asks whether one changed pod belongs, without the
        /// cluster-wide lists.
        sels: Vec<Arc<GroupSel>>,
    },
}

/// The selectors of a peer group: pods in `namespace` (no
/// namespaceSelector) or in the namespaces `namespaces` selects, and that
/// `pods` selects (absent: all of them).
#[derive(Debug)]
pub(crate) struct GroupSel {
    namespace: String,
    namespaces: Option<Selector>,
    pods: Option<Selector>,
}

impl GroupSel {
    /// Whether a pod of `namespace` (labelled `ns_labels`) with `labels`
    /// is in the group.
    fn matches(
        &self,
        namespace: &str,
        ns_labels: &BTreeMap<String, String>,
        labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        let in_namespace = match &self.namespaces {
            None => namespace == self.namespace,
            Some(sel) => sel.matches(ns_labels),
        };
        in_namespace && self.matches_pod(labels)
    }

    /// Whether a pod so labelled is in the group, its namespace covered
    /// ([`Self::covers`]; the two together are [`Self::matches`]).
    fn matches_pod(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.pods.as_ref().is_none_or(|s| s.matches_opt(labels))
    }

    /// Whether the group can hold pods of a namespace so labelled.
    fn covers(&self, namespace: &str, ns_labels: &BTreeMap<String, String>) -> bool {
        match &self.namespaces {
            None => namespace == self.namespace,
            Some(sel) => sel.matches(ns_labels),
        }
    }
}

#[derive(Clone, Debug)]
enum PortEntry {
    Range { proto: u8, lo: u16, hi: u16 },
    Named { proto: Protocol, name: String },
}

#[derive(Clone, Debug)]
enum Ports {
    /// Every port and protocol (`ports` absent or empty).
    All,
    Listed(Vec<PortEntry>),
}

#[derive(Clone, Debug)]
struct RuleInfo {
    peers: Peers,
    ports: Ports,
}

#[derive(Debug)]
struct PolicyInfo {
    namespace: String,
    name: String,
    /// `Some` when the policy isolates the direction (its rules, maybe none).
    ingress: Option<Vec<RuleInfo>>,
    egress: Option<Vec<RuleInfo>>,
    /// Indexes of the pods it selects.
    selected: Vec<usize>,
    /// Its podSelector; `None` when broken (it then selects every pod of
    /// its namespace, fail closed).
    pod_selector: Option<Selector>,
}

impl PolicyInfo {
    fn rules(&self, d: Direction) -> Option<&Vec<RuleInfo>> {
        match d {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }
}

/// The cluster-wide reading of every policy (selections resolved), from
/// which each node's tables are cut.
pub struct Analysis<'a> {
    pods: Vec<PodInfo<'a>>,
    policies: Vec<PolicyInfo>,
    /// ClusterNetworkPolicies, in the order the tiers consult them.
    cnps: Vec<tiers::CnpInfo>,
    problems: Vec<Error>,
}

impl<'a> Analysis<'a> {
    pub fn new(state: &'a ClusterState) -> Analysis<'a> {
        let mut pods: Vec<PodInfo<'a>> = state.pods.iter().filter_map(|p| read_pod(p)).collect();
        pods.sort_by(|a, b| (a.namespace, a.name).cmp(&(b.namespace, b.name)));

        let mut by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, p) in pods.iter().enumerate() {
            by_namespace.entry(p.namespace).or_default().push(i);
        }
        // Namespace labels, with the name label every namespace has.
        let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for ns in state.namespaces.iter() {
            let name = ns.metadata.name.clone().unwrap_or_default();
            let mut labels = ns.metadata.labels.clone().unwrap_or_default();
            labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
            namespaces.insert(name, labels);
        }
        for p in &pods {
            namespaces.entry(p.namespace.to_owned()).or_insert_with(|| {
                BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), p.namespace.to_owned())])
            });
        }

        let mut problems = Vec::new();
        let mut policies = Vec::new();
        let ctx = Ctx {
            pods: &pods,
            by_namespace: &by_namespace,
            namespaces: &namespaces,
            groups: RefCell::new(HashMap::new()),
            sels: RefCell::new(HashMap::new()),
        };
        for np in state.network_policies.iter() {
            policies.push(ctx.policy(np, &mut problems));
        }
        // Nodes' labels and addresses, for `nodes` peers.
        let nodes: Vec<(BTreeMap<String, String>, Vec<IpAddr>)> = state
            .nodes
            .iter()
            .map(|n| {
                (
                    n.metadata.labels.clone().unwrap_or_default(),
                    n.status
                        .iter()
                        .flat_map(|s| s.addresses.iter().flatten())
                        .filter_map(|a| a.address.parse().ok())
                        .collect(),
                )
            })
            .collect();
        let cnps = tiers::read_all(
            &ctx,
            state.cluster_network_policies.iter().map(|c| &**c),
            &nodes,
            &mut problems,
        );
        Analysis {
            pods,
            policies,
            cnps,
            problems,
        }
    }

    /// What could not be honoured, per policy and field.
    pub fn problems(&self) -> &[Error] {
        &self.problems
    }

    /// The problems, for keeping after the analysis is gone.
    pub fn into_problems(self) -> Vec<Error> {
        self.problems
    }

    /// The tables of `node`.
    pub fn plan(&self, node: &str) -> Plan {
        self.plan_parts(node).0
    }

    /// The tables of `node`, with the classes (key, chain name, local
    /// members) and the port sets of each family, which the
    /// incremental planner keeps.
    fn plan_parts(&self, node: &str) -> (Plan, Vec<(ClassKey, String)>, [PortSets; 2]) {
        // Per local pod and direction, the policies isolating it.
        let mut isolating: BTreeMap<(usize, Direction), Vec<usize>> = BTreeMap::new();
        for (pi, policy) in self.policies.iter().enumerate() {
            for &pod in &policy.selected {
                if self.pods[pod].node != node {
                    continue;
                }
                for d in [Direction::Ingress, Direction::Egress] {
                    if policy.rules(d).is_some() {
                        isolating.entry((pod, d)).or_default().push(pi);
                    }
                }
            }
        }
        let mut classes: BTreeMap<ClassKey, Vec<usize>> = BTreeMap::new();
        for ((pod, d), list) in isolating {
            let named = if d == Direction::Ingress {
                named_ports(&self.policies, self.pods[pod].pod, &list)
            } else {
                Vec::new()
            };
            let key = ClassKey {
                direction: d,
                policies: list,
                named,
            };
            classes.entry(key).or_default().push(pod);
        }
        let mut v4 = skeleton(Family::Ip, L3::V4);
        let mut v6 = skeleton(Family::Ip6, L3::V6);
        let mut stats = Stats::default();
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut chains = BTreeMap::new();
        let (mut ports4, mut ports6) = (PortSets::new(), PortSets::new());
        let mut keys = Vec::with_capacity(classes.len());
        for (key, members) in &classes {
            let name = class_name(&self.policies, key, &mut names);
            keys.push((key.clone(), name.clone()));
            chains.insert(
                name.clone(),
                format!(
                    "{} of pods isolated by NetworkPolicy {}",
                    key.direction.as_str(),
                    describe(key.policies.iter().map(|&pi| format!(
                        "{}/{}",
                        self.policies[pi].namespace, self.policies[pi].name
                    )))
                ),
            );
            let grants = self.grants(key, members[0]);
            for (table, l3, port_sets) in [
                (&mut v4, L3::V4, &mut ports4),
                (&mut v6, L3::V6, &mut ports6),
            ] {
                let map = key.direction.as_str();
                let mut count = 0;
                for &m in members {
                    for ip in self.pods[m].ips.iter().filter(|ip| L3::of(**ip) == l3) {
                        // `goto`: the class's `return` ends the direction.
                        table.sets[map].insert(
                            vec![Value::Addr(*ip)],
                            Some(ElementValue::Verdict(Verdict::Goto(name.clone()))),
                        );
                        count += 1;
                    }
                }
                if count == 0 {
                    continue;
                }
                match key.direction {
                    Direction::Ingress => stats.isolated_ingress += count,
                    Direction::Egress => stats.isolated_egress += count,
                }
                stats.classes += 1;
                stats.elements += render_class(
                    table,
                    l3,
                    &name,
                    key.direction,
                    &grants,
                    &self.pods,
                    port_sets,
                );
            }
        }
        stats.elements += stats.isolated_ingress + stats.isolated_egress;
        self.plan_tiers(node, &mut v4, &mut v6, &mut stats, &mut names, &mut chains);
        (
            Plan {
                v4,
                v6,
                stats,
                chains,
            },
            keys,
            [ports4, ports6],
        )
    }

    /// What a class allows. `member` is one pod of the class (for
    /// ingress, named ports resolve against it; all members agree).
    fn grants(&self, key: &ClassKey, member: usize) -> Grants {
        let mut g = Grants::default();
        for &pi in &key.policies {
            for rule in self.policies[pi].rules(key.direction).into_iter().flatten() {
                let (nets, groups): (Vec<IpNet>, &[Arc<[usize]>]) = match &rule.peers {
                    Peers::Any => (
                        vec![IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())],
                        &[],
                    ),
                    Peers::Some { nets, groups, .. } => (nets.clone(), groups),
                };
                let pods = || groups.iter().flat_map(|grp| grp.iter().copied());
                let entries = match &rule.ports {
                    Ports::All => {
                        g.any.extend(nets);
                        for p in pods() {
                            g.any.extend(self.pods[p].ips.iter().map(host));
                        }
                        continue;
                    }
                    Ports::Listed(entries) => entries,
                };
                for e in entries {
                    let range = match e {
                        PortEntry::Range { proto, lo, hi } => Some((*proto, *lo, *hi)),
                        PortEntry::Named { proto, name } if key.direction == Direction::Ingress => {
                            // The destination is the local pod itself.
                            match resolve(self.pods[member].pod, name, *proto) {
                                Some(p) => Some((proto.number(), p, p)),
                                None => continue,
                            }
                        }
                        PortEntry::Named { proto, name } => {
                            // Each destination pod's own number; a
                            // destination that is no pod has none.
                            for p in self.peer_pods(&rule.peers) {
                                if let Some(port) = resolve(self.pods[p].pod, name, *proto) {
                                    g.pods
                                        .entry(p)
                                        .or_default()
                                        .push((proto.number(), port, port));
                                }
                            }
                            None
                        }
                    };
                    if let Some((proto, lo, hi)) = range {
                        if !nets.is_empty() {
                            g.nets.push((proto, nets.clone(), lo, hi));
                        }
                        for p in pods() {
                            g.pods.entry(p).or_default().push((proto, lo, hi));
                        }
                    }
                }
            }
        }
        g
    }

    /// The pods a rule's peers reach: the pods named, and every pod with an
    /// address inside its networks (the only destinations a named port can
    /// be resolved against).
    fn peer_pods(&self, peers: &Peers) -> Vec<usize> {
        match peers {
            Peers::Any => (0..self.pods.len()).collect(),
            Peers::Some { nets, groups, .. } => {
                let mut out: BTreeSet<usize> =
                    groups.iter().flat_map(|g| g.iter().copied()).collect();
                if !nets.is_empty() {
                    for (i, p) in self.pods.iter().enumerate() {
                        if p.ips.iter().any(|ip| nets.iter().any(|n| n.contains(ip))) {
                            out.insert(i);
                        }
                    }
                }
                out.into_iter().collect()
            }
        }
    }
}

/// For ingress classes: how the local pod maps the named ports the
/// policies' ingress rules use.
fn named_ports(
    all: &[PolicyInfo],
    pod: &CompactPod,
    policies: &[usize],
) -> Vec<(Protocol, String, Option<u16>)> {
    let mut names: BTreeSet<(Protocol, &str)> = BTreeSet::new();
    for &pi in policies {
        for rule in all[pi].ingress.iter().flatten() {
            if let Ports::Listed(entries) = &rule.ports {
                for e in entries {
                    if let PortEntry::Named { proto, name } = e {
                        names.insert((*proto, name));
                    }
                }
            }
        }
    }
    names
        .into_iter()
        .map(|(proto, name)| (proto, name.to_owned(), resolve(pod, name, proto)))
        .collect()
}

/// Names for a description: all of them up to a handful, then a count.
fn describe(names: impl Iterator<Item = String>) -> String {
    const SHOWN: usize = 5;
    let names: Vec<String> = names.collect();
    if names.len() <= SHOWN {
        return names.join(", ");
    }
    format!(
        "{} and {} more",
        names[..SHOWN].join(", "),
        names.len() - SHOWN
    )
}

/// A host route as a network.
fn host(ip: &IpAddr) -> IpNet {
    IpNet::from(*ip)
}

/// The port a pod gives a name for a protocol (1-65535 only).
fn resolve(pod: &CompactPod, name: &str, proto: Protocol) -> Option<u16> {
    pod.container_port_by_name(name, proto.as_str())
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// What defines a policy class.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ClassKey {
    direction: Direction,
    /// Indexes into [`Analysis::policies`], ascending.
    policies: Vec<usize>,
    /// Ingress only: the named ports of those policies as the pods map them.
    named: Vec<(Protocol, String, Option<u16>)>,
}

/// A class chain's name: the direction and a hash of the policies (by
/// namespace/name) and named ports, so that it does not move when other
/// classes come and go. A collision gets a suffix.
fn class_name(policies: &[PolicyInfo], key: &ClassKey, taken: &mut BTreeSet<String>) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for &pi in &key.policies {
        let p = &policies[pi];
        (p.namespace.as_str(), p.name.as_str()).hash(&mut h);
    }
    key.named.hash(&mut h);
    let base = format!("{}-{:016x}", key.direction.as_str(), h.finish());
    let mut name = base.clone();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// What a class allows, before it is cut into disjoint elements.
#[derive(Default)]
struct Grants {
    /// Peers allowed on every port and protocol.
    any: Vec<IpNet>,
    /// Networks allowed on some ports: (protocol, networks, first, last).
    nets: Vec<(u8, Vec<IpNet>, u16, u16)>,
    /// Pods allowed on some ports: (protocol, first, last) each.
    pods: PodMap<Vec<(u8, u16, u16)>>,
}

/// A map keyed by pod index. Planning 10,000 policies pushes millions of
/// (pod, ports) entries; the default SipHash was a tenth of the plan, and
/// these keys are our own small integers (nothing for an attacker to pick).
type PodMap<V> = HashMap<usize, V, std::hash::BuildHasherDefault<IndexHasher>>;

/// Fibonacci hashing of an index (multiply by 2^64/φ).
#[derive(Default)]
struct IndexHasher(u64);

impl Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The base chain and the two verdict maps.
fn skeleton(family: Family, l3: L3) -> Table {
    let mut t = Table::new(family, TABLE_NAME);
    let addr = DataType::addr(l3);
    t.set("egress", Set::map(&[addr], MapData::Verdict));
    t.set("ingress", Set::map(&[addr], MapData::Verdict));
    let forward = t.chain(
        "forward",
        Chain::base(ChainType::Filter, Hook::Forward, Priority::Filter)
            .with_note("NetworkPolicy: judged after DNAT, replies pass"),
    );
    forward.rule(vec![
        Expr::eq(
            Field::CtState,
            Value::CtState(ct_state::ESTABLISHED | ct_state::RELATED),
        ),
        Expr::accept(),
    ]);
    // Each direction through its tiers; a `return` ends one direction.
    forward.rule(vec![Expr::jump("egress-admin")]);
    forward.rule(vec![Expr::jump("ingress-admin")]);
    tiers::skeleton(&mut t, l3, Direction::Egress);
    tiers::skeleton(&mut t, l3, Direction::Ingress);
    t
}

/// Add one class's chain and sets to `table`; returns the element count.
/// Port sets (`ports-<hash>`) are shared by every class of the table.
fn render_class(
    table: &mut Table,
    l3: L3,
    name: &str,
    d: Direction,
    g: &Grants,
    pods: &[PodInfo],
    port_sets: &mut PortSets,
) -> usize {
    let in_family = |n: &IpNet| L3::of(n.addr()) == l3;
    let addr = DataType::addr(l3);
    let any_name = format!("{name}-any");
    let nets_name = format!("{name}-nets");

    let mut any = Set::new(&[addr]).interval();
    let any_nets: Vec<IpNet> = g.any.iter().copied().filter(in_family).collect();
    for net in IpNet::aggregate(&any_nets) {
        any.insert(vec![Value::Net(net)], None);
    }

    let mut nets = Set::new(&[addr, DataType::InetProto, DataType::InetService]).interval();
    let protos: BTreeSet<u8> = g.nets.iter().map(|p| p.0).collect();
    for proto in protos {
        let pieces: Vec<(Vec<IpNet>, u16, u16)> = g
            .nets
            .iter()
            .filter(|p| p.0 == proto)
            .map(|p| (p.1.iter().copied().filter(in_family).collect(), p.2, p.3))
            .filter(|p: &(Vec<IpNet>, u16, u16)| !p.0.is_empty())
            .collect();
        for (nets_of, lo, hi) in disjoint(&pieces) {
            for net in nets_of {
                nets.insert(
                    vec![Value::Net(net), Value::Proto(proto), port(lo, hi)],
                    None,
                );
            }
        }
    }

    // Peer pods by the port set they are allowed: one plain set of
    // addresses per (class, port set), no verdict in any element (an
    // element with a jump or goto makes the kernel validate the whole
    // table when it is added). In pod order, so that port-set names
    // (suffixes on a hash collision) do not depend on a hash map's order.
    let mut by_ports: BTreeMap<String, Set> = BTreeMap::new();
    let mut peers: Vec<_> = g.pods.iter().collect();
    peers.sort_unstable_by_key(|(p, _)| **p);
    for (&p, ranges) in peers {
        // Only for a peer of this family: a port set exists while a peer
        // element goes with it (what the incremental planner counts).
        if !pods[p].ips.iter().any(|ip| L3::of(*ip) == l3) {
            continue;
        }
        let ports = port_set(table, port_sets, ranges);
        let set = by_ports.entry(ports).or_insert_with(|| Set::new(&[addr]));
        for ip in pods[p].ips.iter().filter(|ip| L3::of(**ip) == l3) {
            set.insert(vec![Value::Addr(*ip)], None);
        }
    }

    let count = any.elements.len()
        + nets.elements.len()
        + by_ports.values().map(|s| s.elements.len()).sum::<usize>();
    table.set(&any_name, any);
    table.set(&nets_name, nets);
    let ports: Vec<String> = by_ports.keys().cloned().collect();
    for (p, set) in by_ports {
        table.set(&pods_set(name, &p), set);
    }
    class_chain(table, l3, name, d, &ports);
    count
}

/// The set of a class's peer pods allowed on port set `ports`.
fn pods_set(class: &str, ports: &str) -> String {
    format!("{class}-pods-{ports}")
}

/// The port sets a class's peer pods go with in `table` (the names after
/// `<class>-pods-`), sorted.
fn class_port_sets(table: &Table, class: &str) -> Vec<String> {
    let prefix = format!("{class}-pods-");
    let mut out: Vec<String> = table
        .sets
        .keys()
        .filter_map(|s| s.strip_prefix(prefix.as_str()))
        .map(str::to_owned)
        .collect();
    out.sort_unstable();
    out
}

/// (Re)write a class's chain: peers on every port, networks on some
/// ports, then one rule per port set its peer pods go with, in name order.
fn class_chain(table: &mut Table, l3: L3, name: &str, d: Direction, ports: &[String]) {
    let peer = match d {
        Direction::Ingress => Field::saddr(l3),
        Direction::Egress => Field::daddr(l3),
    };
    let chain = table.chain(
        name,
        Chain::regular().with_note(format!("NetworkPolicy {} class", d.as_str())),
    );
    chain.rule(vec![
        Expr::lookup(&[peer], &format!("{name}-any")),
        Expr::ret(),
    ]);
    chain.rule(vec![
        Expr::lookup(
            &[peer, Field::L4Proto, Field::ThDport],
            &format!("{name}-nets"),
        ),
        Expr::ret(),
    ]);
    // A peer pod on one of its ports returns to the forward chain.
    for p in ports {
        chain.rule(vec![
            Expr::lookup(&[peer], &pods_set(name, p)),
            Expr::lookup(&[Field::L4Proto, Field::ThDport], p),
            Expr::ret(),
        ]);
    }
    chain.rule(vec![Expr::drop()]);
}

fn port(lo: u16, hi: u16) -> Value {
    if lo == hi {
        Value::Port(lo)
    } else {
        Value::PortRange(lo, hi)
    }
}

/// The port sets of a table, by their merged ranges.
type PortSets = HashMap<Vec<(u8, u16, u16)>, String>;

/// The set of these (protocol, first, last) ports, added to `table` once;
/// its name.
fn port_set(table: &mut Table, known: &mut PortSets, ranges: &[(u8, u16, u16)]) -> String {
    // Merged per protocol: sorted, overlapping and touching ranges joined.
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut merged: Vec<(u8, u16, u16)> = Vec::with_capacity(sorted.len());
    for (proto, lo, hi) in sorted {
        match merged.last_mut() {
            Some(last) if last.0 == proto && u32::from(lo) <= u32::from(last.2) + 1 => {
                last.2 = last.2.max(hi)
            }
            _ => merged.push((proto, lo, hi)),
        }
    }
    if let Some(name) = known.get(&merged) {
        return name.clone();
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    merged.hash(&mut h);
    let base = format!("ports-{:016x}", h.finish());
    // Another set of ports with the same hash gets a suffix.
    let mut name = base.clone();
    let mut n = 2;
    while table.sets.contains_key(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    let mut set = Set::new(&[DataType::InetProto, DataType::InetService]).interval();
    for (proto, lo, hi) in &merged {
        set.insert(vec![Value::Proto(*proto), port(*lo, *hi)], None);
    }
    table.set(&name, set);
    known.insert(merged, name.clone());
    name
}

/// Cut (peers, port range) pieces into pieces whose port ranges do not
/// overlap and whose peers are aggregated (disjoint networks), so that no
/// two elements of an interval set overlap.
fn disjoint(pieces: &[(Vec<IpNet>, u16, u16)]) -> Vec<(Vec<IpNet>, u16, u16)> {
    let mut cuts: BTreeSet<u32> = BTreeSet::new();
    for (_, lo, hi) in pieces {
        cuts.insert(u32::from(*lo));
        cuts.insert(u32::from(*hi) + 1);
    }
    let cuts: Vec<u32> = cuts.into_iter().collect();
    let mut out: Vec<(Vec<IpNet>, u16, u16)> = Vec::new();
    for w in cuts.windows(2) {
        let (lo, hi) = (w[0], w[1] - 1);
        let mut nets: Vec<IpNet> = Vec::new();
        for (n, plo, phi) in pieces {
            if u32::from(*plo) <= lo && hi <= u32::from(*phi) {
                nets.extend(n.iter().copied());
            }
        }
        if nets.is_empty() {
            continue;
        }
        let nets = IpNet::aggregate(&nets);
        // Both ends came from u16 ports, so they fit.
        let (lo, hi) = (lo as u16, hi as u16);
        match out.last_mut() {
            Some(last) if last.0 == nets && u32::from(last.2) + 1 == u32::from(lo) => last.2 = hi,
            _ => out.push((nets, lo, hi)),
        }
    }
    out
}

/// `net` without the networks of `except`, as prefixes.
fn subtract(net: IpNet, except: &[IpNet]) -> Vec<IpNet> {
    if except.iter().any(|e| e.contains(&net)) {
        return Vec::new();
    }
    if !except.iter().any(|e| net.contains(e)) {
        return vec![net];
    }
    match net.subnets(net.prefix_len() + 1) {
        Ok(halves) => halves.flat_map(|h| subtract(h, except)).collect(),
        Err(_) => Vec::new(),
    }
}

/// A rule as written: its peers and its ports.
type RawRule = (
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
);

/// Looking things up while reading policies.
struct Ctx<'c, 'a> {
    pods: &'c [PodInfo<'a>],
    by_namespace: &'c HashMap<&'a str, Vec<usize>>,
    namespaces: &'c BTreeMap<String, BTreeMap<String, String>>,
    /// Pods by peer selectors (see [`Peers::Some`]).
    groups: RefCell<HashMap<String, Arc<[usize]>>>,
    /// The selectors of those groups, by the same keys.
    sels: RefCell<HashMap<String, Arc<GroupSel>>>,
}

impl Ctx<'_, '_> {
    fn policy(&self, np: &NetworkPolicy, problems: &mut Vec<Error>) -> PolicyInfo {
        let namespace = np
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let name = np.metadata.name.clone().unwrap_or_default();
        let mut problem = |field: String, why: String| {
            problems.push(Error::Policy {
                namespace: namespace.clone(),
                name: name.clone(),
                field,
                why,
            })
        };
        let spec = np.spec.clone().unwrap_or_default();
        let in_ns: &[usize] = self
            .by_namespace
            .get(namespace.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let empty = LabelSelector::default();
        let pod_selector =
            match Selector::from_label_selector(spec.pod_selector.as_ref().unwrap_or(&empty)) {
                Ok(sel) => Some(sel),
                Err(e) => {
                    // Fail closed: isolate the whole namespace.
                    problem("spec.podSelector".into(), e.to_string());
                    None
                }
            };
        let selected: Vec<usize> = in_ns
            .iter()
            .copied()
            .filter(|&i| {
                pod_selector
                    .as_ref()
                    .is_none_or(|s| s.matches_opt(self.pods[i].labels))
            })
            .collect();
        let (mut ingress_on, mut egress_on) = (false, false);
        match &spec.policy_types {
            Some(types) if !types.is_empty() => {
                for (i, t) in types.iter().enumerate() {
                    match t.as_str() {
                        "Ingress" => ingress_on = true,
                        "Egress" => egress_on = true,
                        other => {
                            // Fail closed: isolate both directions.
                            problem(
                                format!("spec.policyTypes[{i}]"),
                                format!("{other:?} is not Ingress or Egress"),
                            );
                            ingress_on = true;
                            egress_on = true;
                        }
                    }
                }
            }
            _ => {
                ingress_on = true;
                egress_on = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
            }
        }
        let mut read_rules = |dir: &str, rules: Vec<RawRule>| {
            let peer_field = if dir == "ingress" { "from" } else { "to" };
            rules
                .into_iter()
                .enumerate()
                .map(|(r, (peers, ports))| RuleInfo {
                    peers: self.peers(
                        &namespace,
                        peers.as_deref().unwrap_or(&[]),
                        &format!("spec.{dir}[{r}].{peer_field}"),
                        &mut problem,
                    ),
                    ports: read_ports(
                        ports.as_deref().unwrap_or(&[]),
                        &format!("spec.{dir}[{r}].ports"),
                        &mut problem,
                    ),
                })
                .collect::<Vec<_>>()
        };
        let ingress = ingress_on.then(|| {
            read_rules(
                "ingress",
                spec.ingress
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| (r.from, r.ports))
                    .collect(),
            )
        });
        let egress = egress_on.then(|| {
            read_rules(
                "egress",
                spec.egress
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| (r.to, r.ports))
                    .collect(),
            )
        });
        PolicyInfo {
            namespace,
            name,
            ingress,
            egress,
            selected,
            pod_selector,
        }
    }

    fn peers(
        &self,
        namespace: &str,
        peers: &[NetworkPolicyPeer],
        at: &str,
        problem: &mut impl FnMut(String, String),
    ) -> Peers {
        if peers.is_empty() {
            return Peers::Any;
        }
        let mut nets: Vec<IpNet> = Vec::new();
        let mut groups: Vec<Arc<[usize]>> = Vec::new();
        let mut sels: Vec<Arc<GroupSel>> = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            let at = format!("{at}[{i}]");
            match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
                (Some(block), None, None) => {
                    let Ok(cidr) = block.cidr.parse::<IpNet>() else {
                        problem(
                            format!("{at}.ipBlock.cidr"),
                            format!("{:?} is not an IP range", block.cidr),
                        );
                        continue;
                    };
                    let mut except = Vec::new();
                    let mut bad = false;
                    for (e, x) in block.except.iter().flatten().enumerate() {
                        match x.parse::<IpNet>() {
                            Ok(x) => except.push(x.trunc()),
                            Err(_) => {
                                problem(
                                    format!("{at}.ipBlock.except[{e}]"),
                                    format!("{x:?} is not an IP range"),
                                );
                                bad = true;
                            }
                        }
                    }
                    if !bad {
                        nets.extend(subtract(cidr.trunc(), &except));
                    }
                }
                (None, pod_sel, ns_sel) if pod_sel.is_some() || ns_sel.is_some() => {
                    // The same selectors select the same pods: read once.
                    let key = format!(
                        "{}|{pod_sel:?}|{ns_sel:?}",
                        if ns_sel.is_some() { "" } else { namespace }
                    );
                    if let Some(group) = self.groups.borrow().get(&key) {
                        groups.push(group.clone());
                        sels.push(self.sels.borrow()[&key].clone());
                        continue;
                    }
                    let pod_sel = match pod_sel.as_ref().map(Selector::from_label_selector) {
                        None => None,
                        Some(Ok(s)) => Some(s),
                        Some(Err(e)) => {
                            problem(format!("{at}.podSelector"), e.to_string());
                            continue;
                        }
                    };
                    let ns_sel = match ns_sel.as_ref().map(Selector::from_label_selector) {
                        None => None,
                        Some(Ok(s)) => Some(s),
                        Some(Err(e)) => {
                            problem(format!("{at}.namespaceSelector"), e.to_string());
                            continue;
                        }
                    };
                    let namespaces: Vec<&str> = match &ns_sel {
                        None => vec![namespace],
                        Some(sel) => self
                            .namespaces
                            .iter()
                            .filter(|(_, labels)| sel.matches(labels))
                            .map(|(n, _)| n.as_str())
                            .collect(),
                    };
                    let mut pods: Vec<usize> = Vec::new();
                    for ns in namespaces {
                        for &p in self.by_namespace.get(ns).into_iter().flatten() {
                            if pod_sel
                                .as_ref()
                                .is_none_or(|s| s.matches_opt(self.pods[p].labels))
                            {
                                pods.push(p);
                            }
                        }
                    }
                    let group: Arc<[usize]> = pods.into();
                    let sel = Arc::new(GroupSel {
                        namespace: namespace.to_owned(),
                        namespaces: ns_sel,
                        pods: pod_sel,
                    });
                    self.sels.borrow_mut().insert(key.clone(), sel.clone());
                    self.groups.borrow_mut().insert(key, group.clone());
                    groups.push(group);
                    sels.push(sel);
                }
                _ => problem(
                    at,
                    "a peer names either an ipBlock, or a podSelector and/or a namespaceSelector"
                        .into(),
                ),
            }
        }
        Peers::Some { nets, groups, sels }
    }
}

fn read_ports(
    ports: &[NetworkPolicyPort],
    at: &str,
    problem: &mut impl FnMut(String, String),
) -> Ports {
    if ports.is_empty() {
        return Ports::All;
    }
    let mut out = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let proto = match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => {
                problem(
                    format!("{at}.protocol"),
                    format!("{other:?} is not TCP, UDP or SCTP"),
                );
                continue;
            }
        };
        match (&p.port, p.end_port) {
            (None, None) => out.push(PortEntry::Range {
                proto: proto.number(),
                lo: 0,
                hi: u16::MAX,
            }),
            (None, Some(_)) => problem(
                format!("{at}.endPort"),
                "endPort needs a numeric port".into(),
            ),
            (Some(IntOrString::Int(n)), end) => {
                let lo = u16::try_from(*n).ok().filter(|n| *n != 0);
                let hi = match end {
                    None => lo,
                    Some(e) => u16::try_from(e).ok().filter(|e| Some(*e) >= lo),
                };
                match (lo, hi) {
                    (Some(lo), Some(hi)) => out.push(PortEntry::Range {
                        proto: proto.number(),
                        lo,
                        hi,
                    }),
                    (None, _) => problem(format!("{at}.port"), format!("{n} is not a port")),
                    (_, None) => problem(
                        format!("{at}.endPort"),
                        format!("{:?} is not a port at or above {n}", end),
                    ),
                }
            }
            (Some(IntOrString::String(name)), None) => out.push(PortEntry::Named {
                proto,
                name: name.clone(),
            }),
            (Some(IntOrString::String(_)), Some(_)) => problem(
                format!("{at}.endPort"),
                "endPort cannot go with a named port".into(),
            ),
        }
    }
    Ports::Listed(out)
}

/// The matrix as the kernel would decide it: every probe traced through
/// the planned table of the source pod's node (egress) and of the
/// destination pod's node (ingress).
pub fn traced_matrix(
    state: &ClusterState,
    ports: &[u16],
    protocols: &[Protocol],
) -> Result<Matrix> {
    let analysis = Analysis::new(state);
    let mut plans: BTreeMap<&str, Plan> = BTreeMap::new();
    for p in &analysis.pods {
        if !plans.contains_key(p.node) {
            plans.insert(p.node, analysis.plan(p.node));
        }
    }
    let nodes: BTreeMap<&str, Node> = plans.keys().map(|n| (*n, Node::default())).collect();
    let mut matrix = Matrix {
        pods: analysis
            .pods
            .iter()
            .map(|p| PodRef {
                namespace: p.namespace.to_owned(),
                name: p.name.to_owned(),
            })
            .collect(),
        cells: Vec::new(),
    };
    for from in &analysis.pods {
        for to in &analysis.pods {
            for &protocol in protocols {
                for &port in ports {
                    // A pod's connection to its own address is traced too,
                    // as the reference reading judges it: in the kernel it
                    // stays inside the pod's namespace (never judged), but
                    // through a Service (hairpin) it crosses the node.
                    let probe = |node: &str| -> Result<bool> {
                        passes(&plans[node], &nodes[node], from, to, protocol, port)
                    };
                    let allowed = probe(from.node)? && (from.node == to.node || probe(to.node)?);
                    matrix.cells.push(Cell {
                        from: format!("{}/{}", from.namespace, from.name),
                        to: format!("{}/{}", to.namespace, to.name),
                        port,
                        protocol,
                        allowed,
                    });
                }
            }
        }
    }
    Ok(matrix)
}

/// Whether a new connection from `from` to `to` passes `plan`: to the
/// destination's first address, from the source's address of the same
/// family (none: no connection).
fn passes(
    plan: &Plan,
    node: &Node,
    from: &PodInfo,
    to: &PodInfo,
    protocol: Protocol,
    port: u16,
) -> Result<bool> {
    let Some(&daddr) = to.ips.first() else {
        return Ok(false);
    };
    let Some(&saddr) = from.ips.iter().find(|s| L3::of(**s) == L3::of(daddr)) else {
        return Ok(false);
    };
    let packet = Packet::new("pod", protocol.number(), saddr, 40000, daddr, port);
    let outcomes = trace(&plan.tables(), node, &packet)?;
    Ok(!outcomes.is_empty() && outcomes.iter().all(|o| o.fate.passes()))
}

mod incremental;
mod tiers;

pub use incremental::Incremental;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod prop;
