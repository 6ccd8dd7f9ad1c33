//! ClusterNetworkPolicy in the planned table: the Admin tier before the
//! NetworkPolicy verdicts, the Baseline tier after them.
//!
//! # A tier chain per direction, Pass as a `goto` to the next tier
//!
//! ```text
//! chain forward { ...; ct state established,related accept
//!     jump egress-admin ; jump ingress-admin }      # both directions must pass
//! chain egress-admin    { ip saddr vmap @egress-admin-classes    ; goto egress-np }
//! chain egress-np       { ip saddr vmap @egress                  ; goto egress-baseline }
//! chain egress-baseline { ip saddr vmap @egress-baseline-classes }   # end: allowed
//! chain cnp-admin-egress-<hash> {          # one per tier class (the CNPs selecting a pod)
//!     ip daddr vmap @cnp-admin-egress-<hash>-peers     # interval map: peer -> its verdicts
//!     goto egress-np                                   # no rule names this peer
//! }
//! chain cnp-ports-<hash> {                 # one per distinct verdict function, shared
//!     meta l4proto . th dport @cnp-ports-<hash>-accept return        # Accept: direction done
//!     meta l4proto . th dport @cnp-ports-<hash>-deny drop
//!     meta l4proto . th dport @cnp-ports-<hash>-pass goto egress-np  # Pass: the next tier
//!     <the verdict of the first rule without protocols, or goto egress-np>
//! }
//! ```
//!
//! Every chain of a direction is entered by `goto` from the one `jump` of
//! the forward chain, so `return` anywhere (an Accept, a NetworkPolicy
//! allowance, the end of the Baseline tier) ends that direction only and
//! the other direction is judged next, as the API asks (an egress Accept
//! does not skip the destination's ingress rules).
//!
//! **First match is resolved while planning, not per packet.** The rules
//! of a class (its policies by priority, then name; each one's rules in
//! order) are cut into disjoint peer address intervals (pod addresses,
//! network edges); for each interval the rules naming it are folded into
//! one verdict function of protocol and port (disjoint port ranges per
//! verdict, and a fallback). Equal neighbouring intervals are joined, and
//! equal functions share one chain. A packet thus meets, per tier, one
//! verdict-map lookup on the local pod, one interval lookup on the peer and
//! at most three set lookups on its port: the cost does not grow with the
//! number of policies or rules, only the number of elements does.
//!
//! Named ports resolve on the destination: for ingress on the local pod
//! (part of its class, as for NetworkPolicy), for egress on each peer pod
//! (its own interval).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use strait_model::cnp::{ClusterNetworkPolicy, Peer, ProtocolMatch};
use strait_model::Selector;
use strait_nft::{
    Chain, DataType, ElementValue, Expr, Field, MapData, Set, Table, Value, Verdict, L3,
};

use super::{resolve, Analysis, Ctx, Direction, PodInfo, Stats};
use crate::{Error, Protocol};

/// The two tiers a ClusterNetworkPolicy can be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Tier {
    Admin,
    Baseline,
}

impl Tier {
    fn as_str(self) -> &'static str {
        match self {
            Tier::Admin => "admin",
            Tier::Baseline => "baseline",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Action {
    Accept,
    Deny,
    Pass,
}

/// A rule's peers: every address, or these networks and pods.
#[derive(Debug)]
enum RulePeers {
    All,
    Some {
        nets: Vec<IpNet>,
        groups: Vec<std::sync::Arc<[usize]>>,
    },
}

/// A rule's traffic: everything, or these (protocol, first, last) ranges
/// and named ports (a name for each protocol it may be declared with).
#[derive(Debug)]
enum RulePorts {
    All,
    Listed {
        ranges: Vec<(u8, u16, u16)>,
        named: Vec<(Protocol, String)>,
    },
}

#[derive(Debug)]
struct CnpRule {
    action: Action,
    peers: RulePeers,
    ports: RulePorts,
}

/// A ClusterNetworkPolicy as the planner reads it.
#[derive(Debug)]
pub(super) struct CnpInfo {
    name: String,
    tier: Tier,
    priority: i32,
    /// Indexes of the pods its subject selects.
    selected: Vec<usize>,
    ingress: Vec<CnpRule>,
    egress: Vec<CnpRule>,
}

impl CnpInfo {
    fn rules(&self, d: Direction) -> &[CnpRule] {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// Read every ClusterNetworkPolicy, in the order the tiers consult them
/// (tier, priority, name).
pub(super) fn read_all<'s>(
    ctx: &Ctx<'_, '_>,
    policies: impl Iterator<Item = &'s ClusterNetworkPolicy>,
    nodes: &[(BTreeMap<String, String>, Vec<IpAddr>)],
    problems: &mut Vec<Error>,
) -> Vec<CnpInfo> {
    let mut out: Vec<CnpInfo> = policies.map(|c| ctx.cnp(c, nodes, problems)).collect();
    out.sort_by(|a, b| (a.tier, a.priority, &a.name).cmp(&(b.tier, b.priority, &b.name)));
    out
}

impl Ctx<'_, '_> {
    fn cnp(
        &self,
        cnp: &ClusterNetworkPolicy,
        nodes: &[(BTreeMap<String, String>, Vec<IpAddr>)],
        problems: &mut Vec<Error>,
    ) -> CnpInfo {
        let name = cnp.metadata.name.clone().unwrap_or_default();
        let mut problem = |field: String, why: String| {
            problems.push(Error::ClusterPolicy {
                name: name.clone(),
                field,
                why,
            })
        };
        let spec = &cnp.spec;
        let tier = match spec.tier.as_str() {
            "Baseline" => Tier::Baseline,
            "Admin" => Tier::Admin,
            other => {
                // Fail closed: where nothing overrides its Deny rules.
                problem(
                    "spec.tier".into(),
                    format!("{other:?} is not Admin or Baseline; read as Admin"),
                );
                Tier::Admin
            }
        };
        let selected = match self.subject(cnp) {
            Ok(pods) => Some(pods),
            Err(why) => {
                problem(
                    "spec.subject".into(),
                    format!("{why}; every pod is selected, by the Deny rules only"),
                );
                None
            }
        };
        let broken_subject = selected.is_none();
        let mut rules = |dir: Direction| -> Vec<CnpRule> {
            let raw: Vec<RawRule<'_>> = match dir {
                Direction::Ingress => spec
                    .ingress
                    .iter()
                    .map(|r| (r.action.as_str(), r.from.as_slice(), r.protocols.as_deref()))
                    .collect(),
                Direction::Egress => spec
                    .egress
                    .iter()
                    .map(|r| (r.action.as_str(), r.to.as_slice(), r.protocols.as_deref()))
                    .collect(),
            };
            let mut out = Vec::new();
            for (i, (action, peers, protocols)) in raw.into_iter().enumerate() {
                let at = format!("spec.{}[{i}]", dir.as_str());
                let action = match action {
                    "Accept" => Ok(Action::Accept),
                    "Deny" => Ok(Action::Deny),
                    "Pass" => Ok(Action::Pass),
                    other => Err((
                        format!("{at}.action"),
                        format!("{other:?} is not Accept, Deny or Pass"),
                    )),
                };
                let accept = action == Ok(Action::Accept);
                let read = action.and_then(|action| {
                    let field = if dir == Direction::Ingress {
                        "from"
                    } else {
                        "to"
                    };
                    let peers_read = self.cnp_peers(peers, dir, nodes, &format!("{at}.{field}"))?;
                    let ports = cnp_ports(protocols, &format!("{at}.protocols"))?;
                    let named =
                        matches!(&ports, RulePorts::Listed { named, .. } if !named.is_empty());
                    if named
                        && peers
                            .iter()
                            .any(|p| p.pods.is_none() && p.namespaces.is_none())
                    {
                        return Err((
                            at.clone(),
                            "a named port needs pod peers (namespaces or pods)".into(),
                        ));
                    }
                    Ok(CnpRule {
                        action,
                        peers: peers_read,
                        ports,
                    })
                });
                let rule = match read {
                    Ok(rule) => rule,
                    // Fail closed: an Accept matches nothing, a Deny or
                    // Pass denies everything.
                    Err((field, why)) if accept => {
                        problem(field, format!("{why}; the rule matches nothing"));
                        continue;
                    }
                    Err((field, why)) => {
                        problem(field, format!("{why}; the rule denies everything"));
                        CnpRule {
                            action: Action::Deny,
                            peers: RulePeers::All,
                            ports: RulePorts::All,
                        }
                    }
                };
                if broken_subject && rule.action != Action::Deny {
                    continue;
                }
                out.push(rule);
            }
            out
        };
        let ingress = rules(Direction::Ingress);
        let egress = rules(Direction::Egress);
        CnpInfo {
            name: name.clone(),
            tier,
            priority: spec.priority,
            selected: selected.unwrap_or_else(|| (0..self.pods.len()).collect()),
            ingress,
            egress,
        }
    }

    /// The pods `spec.subject` selects (never hostNetwork: they are not
    /// among the planner's pods).
    fn subject(&self, cnp: &ClusterNetworkPolicy) -> std::result::Result<Vec<usize>, String> {
        let s = &cnp.spec.subject;
        let (ns, pod) = match (&s.namespaces, &s.pods) {
            (Some(ns), None) => (
                Selector::from_label_selector(ns).map_err(|e| e.to_string())?,
                None,
            ),
            (None, Some(p)) => (
                Selector::from_label_selector(&p.namespace_selector).map_err(|e| e.to_string())?,
                Some(Selector::from_label_selector(&p.pod_selector).map_err(|e| e.to_string())?),
            ),
            _ => return Err("exactly one of namespaces or pods must be set".into()),
        };
        Ok(self.select_pods(&ns, pod.as_ref()))
    }

    /// Pods of the namespaces `ns` selects that `pod` selects (absent: all).
    fn select_pods(&self, ns: &Selector, pod: Option<&Selector>) -> Vec<usize> {
        let mut out = Vec::new();
        for (name, labels) in self.namespaces {
            if !ns.matches(labels) {
                continue;
            }
            for &p in self.by_namespace.get(name.as_str()).into_iter().flatten() {
                if pod.is_none_or(|s| s.matches_opt(self.pods[p].labels)) {
                    out.push(p);
                }
            }
        }
        out.sort_unstable();
        out
    }

    fn cnp_peers(
        &self,
        peers: &[Peer],
        dir: Direction,
        nodes: &[(BTreeMap<String, String>, Vec<IpAddr>)],
        at: &str,
    ) -> std::result::Result<RulePeers, (String, String)> {
        if peers.is_empty() {
            return Err((at.to_owned(), "no peer".into()));
        }
        let mut nets = Vec::new();
        let mut groups = Vec::new();
        for (i, p) in peers.iter().enumerate() {
            let at = format!("{at}[{i}]");
            let set = [
                p.namespaces.is_some(),
                p.pods.is_some(),
                p.nodes.is_some(),
                p.networks.is_some(),
                p.domain_names.is_some(),
            ]
            .into_iter()
            .filter(|s| *s)
            .count();
            if set != 1 {
                return Err((at, "exactly one peer field must be set".into()));
            }
            let pod_peer = p.namespaces.is_some() || p.pods.is_some();
            if dir == Direction::Ingress && !pod_peer {
                return Err((at, "ingress peers may only be namespaces or pods".into()));
            }
            let sel = |s: &strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
                       field: &str| {
                Selector::from_label_selector(s).map_err(|e| (format!("{at}.{field}"), e.to_string()))
            };
            if let Some(ns) = &p.namespaces {
                let key = format!("cnp|ns|{ns:?}");
                let ns = sel(ns, "namespaces")?;
                groups.push(self.group(key, || self.select_pods(&ns, None)));
            } else if let Some(pods) = &p.pods {
                let key = format!(
                    "cnp|pods|{:?}|{:?}",
                    pods.namespace_selector, pods.pod_selector
                );
                let n = sel(&pods.namespace_selector, "pods.namespaceSelector")?;
                let s = sel(&pods.pod_selector, "pods.podSelector")?;
                groups.push(self.group(key, || self.select_pods(&n, Some(&s))));
            } else if let Some(networks) = &p.networks {
                if networks.is_empty() {
                    return Err((format!("{at}.networks"), "no network".into()));
                }
                for (k, cidr) in networks.iter().enumerate() {
                    let net = cidr.parse::<IpNet>().map_err(|_| {
                        (
                            format!("{at}.networks[{k}]"),
                            format!("{cidr:?} is not a CIDR"),
                        )
                    })?;
                    nets.push(net.trunc());
                }
            } else if let Some(node_sel) = &p.nodes {
                let s = sel(node_sel, "nodes")?;
                for (labels, addresses) in nodes {
                    if s.matches(labels) {
                        nets.extend(addresses.iter().map(|a| IpNet::from(*a)));
                    }
                }
            }
            // domainNames: not enforced; such a peer matches nothing.
        }
        Ok(RulePeers::Some { nets, groups })
    }

    /// A group of pods by its key, computed once.
    fn group(&self, key: String, pods: impl FnOnce() -> Vec<usize>) -> std::sync::Arc<[usize]> {
        if let Some(g) = self.groups.borrow().get(&key) {
            return g.clone();
        }
        let g: std::sync::Arc<[usize]> = pods().into();
        self.groups.borrow_mut().insert(key, g.clone());
        g
    }
}

fn cnp_ports(
    protocols: Option<&[ProtocolMatch]>,
    at: &str,
) -> std::result::Result<RulePorts, (String, String)> {
    let Some(list) = protocols else {
        return Ok(RulePorts::All);
    };
    if list.is_empty() {
        return Err((at.to_owned(), "an empty list".into()));
    }
    let mut ranges = Vec::new();
    let mut named = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let entries = [
            (Protocol::Tcp, "tcp", &p.tcp),
            (Protocol::Udp, "udp", &p.udp),
            (Protocol::Sctp, "sctp", &p.sctp),
        ];
        let set = entries.iter().filter(|e| e.2.is_some()).count()
            + usize::from(p.destination_named_port.is_some());
        if set != 1 {
            return Err((
                at,
                "exactly one of tcp, udp, sctp or destinationNamedPort must be set".into(),
            ));
        }
        if let Some(name) = &p.destination_named_port {
            if name.is_empty() {
                return Err((format!("{at}.destinationNamedPort"), "empty".into()));
            }
            // The name carries its protocol on the pod: any of them.
            for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                named.push((proto, name.clone()));
            }
            continue;
        }
        for (proto, field, m) in entries {
            let Some(m) = m else { continue };
            let (first, last) = match &m.destination_port {
                None => (1, 65535),
                Some(spec) => match (spec.number, &spec.range) {
                    (Some(n), None) => (n, n),
                    (None, Some(r)) => (r.start, r.end),
                    _ => {
                        return Err((
                            format!("{at}.{field}.destinationPort"),
                            "exactly one of number or range must be set".into(),
                        ))
                    }
                },
            };
            match (u16::try_from(first), u16::try_from(last)) {
                (Ok(lo), Ok(hi)) if lo >= 1 && lo <= hi => {
                    ranges.push((proto.number(), lo, hi));
                }
                _ => {
                    return Err((
                        format!("{at}.{field}.destinationPort"),
                        format!("{first}..{last} is not a port range within 1-65535"),
                    ))
                }
            }
        }
    }
    Ok(RulePorts::Listed { ranges, named })
}

/// A rule as written: action, peers, protocols.
type RawRule<'c> = (&'c str, &'c [Peer], Option<&'c [ProtocolMatch]>);

/// A rule that names a peer: its action and (protocol, first, last)
/// ranges, `None` for all traffic.
type Matched = (Action, Option<Vec<(u8, u16, u16)>>);

/// A rule's peers in one family: networks as address ranges, pod addresses.
type Shape = (Vec<(u128, u128)>, HashSet<u128>);

/// What defines a tier class: the policies of one tier selecting a pod
/// that have rules for the direction, in order, and (ingress) how the pod
/// maps the named ports they use.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ClassKey {
    tier: Tier,
    direction: Direction,
    policies: Vec<usize>,
    named: Vec<(Protocol, String, Option<u16>)>,
}

/// The verdict of every (protocol, port) toward one peer interval: the
/// ranges whose verdict differs from the fallback, and the fallback (the
/// first rule without protocols; `None`: on to the next tier).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PortFn {
    pieces: Vec<(u8, u16, u16, Action)>,
    fallback: Option<Action>,
}

impl PortFn {
    fn is_nothing(&self) -> bool {
        self.pieces.is_empty() && self.fallback.is_none()
    }
}

/// First match over `rules` (action, resolved ranges; `None` = all
/// traffic), per protocol and port.
fn port_fn(rules: &[Matched]) -> PortFn {
    let stop = rules.iter().position(|r| r.1.is_none());
    let fallback = stop.map(|i| rules[i].0);
    let relevant = &rules[..stop.unwrap_or(rules.len())];
    let mut pieces: Vec<(u8, u16, u16, Action)> = Vec::new();
    let protos: BTreeSet<u8> = relevant
        .iter()
        .flat_map(|r| r.1.iter().flatten().map(|p| p.0))
        .collect();
    for proto in protos {
        let mut cuts: BTreeSet<u32> = BTreeSet::new();
        for r in relevant {
            for &(p, lo, hi) in r.1.iter().flatten() {
                if p == proto {
                    cuts.insert(u32::from(lo));
                    cuts.insert(u32::from(hi) + 1);
                }
            }
        }
        let cuts: Vec<u32> = cuts.into_iter().collect();
        for w in cuts.windows(2) {
            let (lo, hi) = (w[0], w[1] - 1);
            let first = relevant.iter().find(|r| {
                r.1.iter()
                    .flatten()
                    .any(|&(p, a, b)| p == proto && u32::from(a) <= lo && hi <= u32::from(b))
            });
            let Some(&(action, _)) = first else { continue };
            if Some(action) == fallback {
                continue;
            }
            // Both ends came from u16 ports.
            let (lo, hi) = (lo as u16, hi as u16);
            match pieces.last_mut() {
                Some(last)
                    if last.0 == proto
                        && last.3 == action
                        && u32::from(last.2) + 1 == u32::from(lo) =>
                {
                    last.2 = hi
                }
                _ => pieces.push((proto, lo, hi, action)),
            }
        }
    }
    PortFn { pieces, fallback }
}

/// Addresses of a family as numbers, for cutting intervals.
fn addr_num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn family_max(l3: L3) -> u128 {
    match l3 {
        L3::V4 => u128::from(u32::MAX),
        L3::V6 => u128::MAX,
    }
}

fn net_range(n: &IpNet) -> (u128, u128) {
    (addr_num(n.network()), addr_num(n.broadcast()))
}

/// The prefixes covering [lo, hi].
fn prefixes(l3: L3, lo: u128, hi: u128) -> Vec<IpNet> {
    match l3 {
        // Both ends are v4 addresses: they fit.
        L3::V4 => Ipv4Subnets::new(Ipv4Addr::from(lo as u32), Ipv4Addr::from(hi as u32), 0)
            .map(IpNet::V4)
            .collect(),
        L3::V6 => Ipv6Subnets::new(Ipv6Addr::from(lo), Ipv6Addr::from(hi), 0)
            .map(IpNet::V6)
            .collect(),
    }
}

/// The chain a tier falls through to: the next tier of the direction, or
/// (after the Baseline tier) none: the direction is allowed.
fn next_chain(tier: Tier, d: Direction) -> Option<String> {
    match tier {
        Tier::Admin => Some(format!("{}-np", d.as_str())),
        Tier::Baseline => None,
    }
}

/// The verdict that goes on to `next` (or ends the direction, allowed).
fn onward(next: &Option<String>) -> Expr {
    match next {
        Some(c) => Expr::goto(c),
        None => Expr::ret(),
    }
}

/// The name of the verdict map of a tier for a direction.
pub(super) fn classes_map(tier: Tier, d: Direction) -> String {
    format!("{}-{}-classes", d.as_str(), tier.as_str())
}

/// The tier chains of one direction and their maps (see the module doc).
pub(super) fn skeleton(t: &mut Table, l3: L3, d: Direction) {
    let addr = DataType::addr(l3);
    let local = match d {
        Direction::Ingress => Field::daddr(l3),
        Direction::Egress => Field::saddr(l3),
    };
    let dir = d.as_str();
    for tier in [Tier::Admin, Tier::Baseline] {
        t.set(&classes_map(tier, d), Set::map(&[addr], MapData::Verdict));
    }
    let admin = t.chain(
        &format!("{dir}-admin"),
        Chain::regular().with_note("ClusterNetworkPolicy Admin tier"),
    );
    admin.rule(vec![Expr::vmap(&[local], &classes_map(Tier::Admin, d))]);
    admin.rule(vec![Expr::goto(&format!("{dir}-np"))]);
    let np = t.chain(
        &format!("{dir}-np"),
        Chain::regular().with_note("NetworkPolicy"),
    );
    np.rule(vec![Expr::vmap(&[local], dir)]);
    np.rule(vec![Expr::goto(&format!("{dir}-baseline"))]);
    let baseline = t.chain(
        &format!("{dir}-baseline"),
        Chain::regular().with_note("ClusterNetworkPolicy Baseline tier; then allowed"),
    );
    baseline.rule(vec![Expr::vmap(&[local], &classes_map(Tier::Baseline, d))]);
}

/// The chains of one table's verdict functions, by content.
type PortFns = HashMap<(PortFn, Option<String>), String>;

impl Analysis<'_> {
    /// Render the tier classes of the pods of `node` into both tables.
    pub(super) fn plan_tiers(
        &self,
        node: &str,
        v4: &mut Table,
        v6: &mut Table,
        stats: &mut Stats,
        names: &mut BTreeSet<String>,
        chains: &mut BTreeMap<String, String>,
    ) {
        let mut lists: BTreeMap<(Tier, Direction, usize), Vec<usize>> = BTreeMap::new();
        for (ci, c) in self.cnps.iter().enumerate() {
            for &pod in &c.selected {
                if self.pods[pod].node != node {
                    continue;
                }
                for d in [Direction::Ingress, Direction::Egress] {
                    if !c.rules(d).is_empty() {
                        lists.entry((c.tier, d, pod)).or_default().push(ci);
                    }
                }
            }
        }
        let mut classes: BTreeMap<ClassKey, Vec<usize>> = BTreeMap::new();
        for ((tier, direction, pod), policies) in lists {
            let named = if direction == Direction::Ingress {
                let mut names: BTreeSet<(Protocol, &str)> = BTreeSet::new();
                for &ci in &policies {
                    for r in &self.cnps[ci].ingress {
                        if let RulePorts::Listed { named, .. } = &r.ports {
                            names.extend(named.iter().map(|(p, n)| (*p, n.as_str())));
                        }
                    }
                }
                names
                    .into_iter()
                    .map(|(p, n)| (p, n.to_owned(), resolve(self.pods[pod].pod, n, p)))
                    .collect()
            } else {
                Vec::new()
            };
            let key = ClassKey {
                tier,
                direction,
                policies,
                named,
            };
            classes.entry(key).or_default().push(pod);
        }
        let mut fns4 = PortFns::new();
        let mut fns6 = PortFns::new();
        for (key, members) in &classes {
            let name = self.tier_class_name(key, names);
            chains.insert(
                name.clone(),
                format!(
                    "{} of pods selected by ClusterNetworkPolicy {} ({} tier)",
                    key.direction.as_str(),
                    super::describe(key.policies.iter().map(|&ci| self.cnps[ci].name.clone())),
                    key.tier.as_str()
                ),
            );
            for (table, l3, fns) in [(&mut *v4, L3::V4, &mut fns4), (&mut *v6, L3::V6, &mut fns6)] {
                let map = classes_map(key.tier, key.direction);
                let mut count = 0;
                for &m in members {
                    for ip in self.pods[m].ips.iter().filter(|ip| L3::of(**ip) == l3) {
                        table.sets[map.as_str()].insert(
                            vec![Value::Addr(*ip)],
                            Some(ElementValue::Verdict(Verdict::Goto(name.clone()))),
                        );
                        count += 1;
                    }
                }
                if count == 0 {
                    continue;
                }
                stats.classes += 1;
                stats.elements += count;
                let pieces = self.peer_pieces(key, members[0], l3);
                stats.elements += render_tier_class(table, l3, &name, key, &pieces, fns);
            }
        }
    }

    /// The disjoint peer intervals of a class in one family, each with its
    /// verdict function; intervals no rule names are left out.
    fn peer_pieces(&self, key: &ClassKey, member: usize, l3: L3) -> Vec<(u128, u128, PortFn)> {
        let rules: Vec<&CnpRule> = key
            .policies
            .iter()
            .flat_map(|&ci| self.cnps[ci].rules(key.direction))
            .collect();
        let max = family_max(l3);
        let in_family = |ip: &IpAddr| L3::of(*ip) == l3;
        // Per rule: its networks as ranges, its pods' addresses.
        let mut shapes: Vec<Shape> = Vec::with_capacity(rules.len());
        let mut cuts: BTreeSet<u128> = BTreeSet::new();
        let cut = |lo: u128, hi: u128, cuts: &mut BTreeSet<u128>| {
            cuts.insert(lo);
            if hi < max {
                cuts.insert(hi + 1);
            }
        };
        for r in &rules {
            let (nets, addrs) = match &r.peers {
                RulePeers::All => (vec![(0, max)], HashSet::new()),
                RulePeers::Some { nets, groups } => {
                    let nets: Vec<(u128, u128)> = nets
                        .iter()
                        .filter(|n| in_family(&n.addr()))
                        .map(net_range)
                        .collect();
                    let addrs: HashSet<u128> = groups
                        .iter()
                        .flat_map(|g| g.iter())
                        .flat_map(|&p| self.pods[p].ips.iter().filter(|ip| in_family(ip)))
                        .map(|ip| addr_num(*ip))
                        .collect();
                    (nets, addrs)
                }
            };
            for &(lo, hi) in &nets {
                cut(lo, hi, &mut cuts);
            }
            for &a in &addrs {
                cut(a, a, &mut cuts);
            }
            shapes.push((nets, addrs));
        }
        // Pods by address: named ports of egress rules resolve on them.
        let pod_at: HashMap<u128, &PodInfo> = self
            .pods
            .iter()
            .flat_map(|p| {
                p.ips
                    .iter()
                    .filter(|ip| in_family(ip))
                    .map(move |ip| (addr_num(*ip), p))
            })
            .collect();
        let cuts: Vec<u128> = cuts.into_iter().collect();
        // Which rules name an address as a pod, and which have networks:
        // an interval looks at those only (not at every rule).
        let mut by_addr: HashMap<u128, Vec<usize>> = HashMap::new();
        let mut with_nets: Vec<usize> = Vec::new();
        for (ri, (nets, addrs)) in shapes.iter().enumerate() {
            for &a in addrs {
                by_addr.entry(a).or_default().push(ri);
            }
            if !nets.is_empty() {
                with_nets.push(ri);
            }
        }
        let mut out: Vec<(u128, u128, PortFn)> = Vec::new();
        for (i, &lo) in cuts.iter().enumerate() {
            let hi = cuts.get(i + 1).map_or(max, |next| next - 1);
            // The rules naming [lo, hi], in rule order.
            let mut hits: Vec<usize> = with_nets
                .iter()
                .copied()
                .filter(|&ri| shapes[ri].0.iter().any(|&(a, b)| a <= lo && hi <= b))
                .collect();
            if lo == hi {
                hits.extend(by_addr.get(&lo).into_iter().flatten().copied());
            }
            hits.sort_unstable();
            hits.dedup();
            let mut matched: Vec<Matched> = Vec::new();
            for ri in hits {
                let r = rules[ri];
                let ports = match &r.ports {
                    RulePorts::All => None,
                    RulePorts::Listed { ranges, named } => {
                        let mut all = ranges.clone();
                        let dst = match key.direction {
                            Direction::Ingress => Some(self.pods[member].pod),
                            Direction::Egress if lo == hi => pod_at.get(&lo).map(|p| p.pod),
                            Direction::Egress => None,
                        };
                        for (proto, name) in named {
                            if let Some(port) = dst.and_then(|d| resolve(d, name, *proto)) {
                                all.push((proto.number(), port, port));
                            }
                        }
                        Some(all)
                    }
                };
                matched.push((r.action, ports));
            }
            if matched.is_empty() {
                continue;
            }
            let f = port_fn(&matched);
            if f.is_nothing() {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.2 == f && last.1 + 1 == lo => last.1 = hi,
                _ => out.push((lo, hi, f)),
            }
        }
        out
    }

    /// A tier class chain's name: tier, direction, and a hash of its
    /// policies (by name) and named ports. A collision gets a suffix.
    fn tier_class_name(&self, key: &ClassKey, taken: &mut BTreeSet<String>) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for &ci in &key.policies {
            self.cnps[ci].name.hash(&mut h);
        }
        key.named.hash(&mut h);
        let base = format!(
            "cnp-{}-{}-{:016x}",
            key.tier.as_str(),
            key.direction.as_str(),
            h.finish()
        );
        let mut name = base.clone();
        let mut n = 2;
        while !taken.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        name
    }
}

/// One tier class: its chain, its peer map, and the verdict-function
/// chains it needs (shared). Returns the element count.
fn render_tier_class(
    table: &mut Table,
    l3: L3,
    name: &str,
    key: &ClassKey,
    pieces: &[(u128, u128, PortFn)],
    fns: &mut PortFns,
) -> usize {
    let next = next_chain(key.tier, key.direction);
    let peer = match key.direction {
        Direction::Ingress => Field::saddr(l3),
        Direction::Egress => Field::daddr(l3),
    };
    let mut peers = Set::map(&[DataType::addr(l3)], MapData::Verdict).interval();
    let mut count = 0;
    for (lo, hi, f) in pieces {
        let chain = port_fn_chain(table, fns, f, &next, &mut count);
        for net in prefixes(l3, *lo, *hi) {
            peers.insert(
                vec![Value::Net(net)],
                Some(ElementValue::Verdict(Verdict::Goto(chain.clone()))),
            );
        }
    }
    count += peers.elements.len();
    let peers_name = format!("{name}-peers");
    table.set(&peers_name, peers);
    let chain = table.chain(
        name,
        Chain::regular().with_note(format!(
            "ClusterNetworkPolicy {} tier {} class",
            key.tier.as_str(),
            key.direction.as_str()
        )),
    );
    chain.rule(vec![Expr::vmap(&[peer], &peers_name)]);
    chain.rule(vec![onward(&next)]);
    count
}

/// The chain of verdict function `f` (falling through to `next`), added
/// once per table; its name.
fn port_fn_chain(
    table: &mut Table,
    fns: &mut PortFns,
    f: &PortFn,
    next: &Option<String>,
    count: &mut usize,
) -> String {
    let key = (f.clone(), next.clone());
    if let Some(name) = fns.get(&key) {
        return name.clone();
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let base = format!("cnp-ports-{:016x}", h.finish());
    let mut name = base.clone();
    let mut n = 2;
    while table.chains.contains_key(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    let mut rules: Vec<Vec<Expr>> = Vec::new();
    for (action, suffix) in [
        (Action::Accept, "accept"),
        (Action::Deny, "deny"),
        (Action::Pass, "pass"),
    ] {
        let mut set = Set::new(&[DataType::InetProto, DataType::InetService]).interval();
        for &(proto, lo, hi, a) in &f.pieces {
            if a == action {
                set.insert(vec![Value::Proto(proto), super::port(lo, hi)], None);
            }
        }
        if set.elements.is_empty() {
            continue;
        }
        *count += set.elements.len();
        let set_name = format!("{name}-{suffix}");
        table.set(&set_name, set);
        rules.push(vec![
            Expr::lookup(&[Field::L4Proto, Field::ThDport], &set_name),
            verdict(action, next),
        ]);
    }
    rules.push(vec![match f.fallback {
        Some(a) => verdict(a, next),
        None => onward(next),
    }]);
    let chain = table.chain(
        &name,
        Chain::regular().with_note("ClusterNetworkPolicy verdicts by port"),
    );
    for r in rules {
        chain.rule(r);
    }
    fns.insert(key, name.clone());
    name
}

fn verdict(a: Action, next: &Option<String>) -> Expr {
    match a {
        // The direction is allowed: back to the forward chain.
        Action::Accept => Expr::ret(),
        Action::Deny => Expr::drop(),
        Action::Pass => onward(next),
    }
}
