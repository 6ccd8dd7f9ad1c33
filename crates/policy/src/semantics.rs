//! The reference reading of NetworkPolicy and ClusterNetworkPolicy:
//! whether one connection is allowed, straight from the API references
//! (networking.k8s.io/v1, policy.networking.k8s.io/v1alpha2), with no
//! kernel in it. Slow on purpose and written to be read beside the
//! reference: it is the oracle the planner's tables are held to.
//!
//! The reading, clause by clause:
//!
//! - A connection from pod A to pod B is allowed when A's *egress* allows it
//!   and B's *ingress* allows it: both ends must agree.
//! - A pod is isolated for a direction when at least one NetworkPolicy of
//!   its namespace selects it (`spec.podSelector`, empty = every pod) and
//!   has that direction in `spec.policyTypes`. A pod not isolated for a
//!   direction allows everything in that direction.
//! - `policyTypes`, when not given, is `[Ingress]` plus `Egress` when
//!   `spec.egress` has at least one rule (kube-apiserver's defaulting:
//!   `egress: []` alone does not make a policy govern egress).
//! - An isolated pod allows a connection in that direction when any rule of
//!   any policy that isolates it matches: rules add up, nothing denies.
//! - A rule matches when one of its peers (`from`/`to`; none = every
//!   peer) matches the other end and one of its ports (none = every port
//!   and protocol) matches the connection's destination port and protocol.
//! - A peer is `podSelector` (pods of the policy's namespace),
//!   `namespaceSelector` (every pod of the selected namespaces), both (the
//!   selected pods of the selected namespaces), or `ipBlock` (`cidr` minus
//!   each `except`; it is matched against pod addresses too).
//! - A port is a protocol (default TCP) with a number, a number range
//!   (`port`..=`endPort`), a name, or no port (every port of the protocol).
//!   A name is looked up among the *destination* pod's container ports of
//!   that protocol — each pod may map it differently — and a pod without it
//!   matches nothing for that entry.
//!
//! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`) wraps that
//! reading in tiers, each direction on its own (egress at the source, ingress
//! at the destination; both must let the connection through):
//!
//! - **Admin tier** first: the Admin policies whose `subject` selects the
//!   pod, lowest `priority` first, each policy's rules of the direction in
//!   the order written. The first rule whose peers (`from`/`to`) and
//!   `protocols` match decides: `Accept` (this direction allows, no
//!   NetworkPolicy is consulted), `Deny`, or `Pass` (leave the tier).
//! - **NetworkPolicy** next, as above: a pod isolated for the direction is
//!   decided here (allowed when a rule allows, else denied).
//! - **Baseline tier** then, as the Admin tier; `Pass` there leaves it too.
//! - Nothing decided: allowed (the default of Kubernetes).
//!
//! Two policies of one tier with the same priority: the API lets the
//! implementation choose; strait orders them by name (then the rules of the
//! first come first), so the outcome is stable and the same in the kernel.
//! A CNP peer is `namespaces` (every pod of the selected namespaces), `pods`
//! (namespace selector and pod selector), `networks` (CIDRs, matched against
//! pod addresses too), `nodes` (the addresses in the selected Nodes'
//! `status.addresses`) or `domainNames` (not enforced: strait does not follow
//! DNS answers, so such an Accept rule matches nothing). `protocols` absent
//! is all traffic; an entry is TCP, UDP or SCTP with every port, one port or
//! a range, or a `destinationNamedPort` looked up on the destination pod
//! (with the protocol its container port declares).
//!
//! A CNP that admission would refuse still gets a reading, closed as the API
//! asks: a rule that cannot be read (no or two peer fields, a bad selector
//! or CIDR, a bad protocol entry, an unknown action, a named port beside a
//! non-pod peer) matches nothing when it accepts and denies everything when
//! it denies or passes; an unreadable `subject` selects every pod and keeps
//! only the policy's Deny rules; an unknown `tier` is read as Admin.
//!
//! Where the API leaves the choice to implementations, the common one:
//! hostNetwork pods are never selected by `podSelector` (neither as the
//! policy's target nor as a peer); they are reached and seen by address
//! only (`ipBlock`). Where the input is not valid (admission refuses it, but
//! a reading must still answer), the reading fails closed: an unreadable
//! selector of a policy's target selects every pod of the namespace, an
//! unreadable peer or port matches nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use strait_model::cnp::{ClusterNetworkPolicy, Peer, ProtocolMatch};
use strait_model::k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use strait_model::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use strait_model::{ClusterState, CompactPod, Selector};

use crate::{Cell, Matrix, PodRef, Protocol};

/// The label every Namespace carries with its own name.
const METADATA_NAME: &str = "kubernetes.io/metadata.name";

/// Which end of a connection a policy is read for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }
}

/// One end of a connection, with what the reading needs of the pod.
struct End<'a> {
    namespace: &'a str,
    pod: &'a CompactPod,
    host_network: bool,
    /// The labels of its namespace.
    namespace_labels: &'a BTreeMap<String, String>,
    /// The policies of its namespace that isolate it, per direction.
    ingress: &'a [&'a NetworkPolicy],
    egress: &'a [&'a NetworkPolicy],
    /// The ClusterNetworkPolicies whose subject selects it, per tier, in
    /// the order they are consulted.
    admin: &'a [Subjected<'a>],
    baseline: &'a [Subjected<'a>],
    /// The address this end uses for the connection.
    ip: Option<IpAddr>,
}

/// A ClusterNetworkPolicy that selects a pod, and whether it did so only
/// because its subject could not be read (then only its Deny rules count).
#[derive(Clone, Copy)]
struct Subjected<'a> {
    cnp: &'a ClusterNetworkPolicy,
    broken_subject: bool,
}

/// Whether a new connection from `from` to `to` on `port`/`protocol` is
/// allowed by the NetworkPolicies of `state`. A pod that is not in the
/// state, or has no address to connect with, gets `false`.
pub fn allowed(
    state: &ClusterState,
    from: &PodRef,
    to: &PodRef,
    port: u16,
    protocol: Protocol,
) -> bool {
    let (Some(src), Some(dst)) = (Known::of(state, from), Known::of(state, to)) else {
        return false;
    };
    allowed_between(&nodes(state), &src, &dst, port, protocol)
}

/// A Node's labels and addresses (`nodes` peers).
struct NodeInfo {
    labels: BTreeMap<String, String>,
    addresses: Vec<IpAddr>,
}

fn nodes(state: &ClusterState) -> Vec<NodeInfo> {
    state
        .nodes
        .iter()
        .map(|n| NodeInfo {
            labels: n.metadata.labels.clone().unwrap_or_default(),
            addresses: n
                .status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter_map(|a| a.address.parse().ok())
                .collect(),
        })
        .collect()
}

/// A pod with what the reading needs of it, read once (a matrix asks
/// about every pod many times).
struct Known<'a> {
    namespace: &'a str,
    pod: &'a CompactPod,
    host_network: bool,
    addresses: Vec<IpAddr>,
    namespace_labels: BTreeMap<String, String>,
    ingress: Vec<&'a NetworkPolicy>,
    egress: Vec<&'a NetworkPolicy>,
    admin: Vec<Subjected<'a>>,
    baseline: Vec<Subjected<'a>>,
}

impl<'a> Known<'a> {
    fn of(state: &'a ClusterState, pod: &'a PodRef) -> Option<Known<'a>> {
        let p = state.pods.get(&pod.namespace, &pod.name)?;
        let host_network = host_network(p);
        let namespace_labels = namespace_labels(state, &pod.namespace);
        let (admin, baseline) = subjected(state, p, &namespace_labels, host_network);
        Some(Known {
            namespace: &pod.namespace,
            pod: p,
            host_network,
            addresses: addresses(p),
            ingress: isolating(state, Direction::Ingress, &pod.namespace, p, host_network),
            egress: isolating(state, Direction::Egress, &pod.namespace, p, host_network),
            namespace_labels,
            admin,
            baseline,
        })
    }

    fn end(&self, ip: IpAddr) -> End<'_> {
        End {
            namespace: self.namespace,
            pod: self.pod,
            host_network: self.host_network,
            namespace_labels: &self.namespace_labels,
            ingress: &self.ingress,
            egress: &self.egress,
            admin: &self.admin,
            baseline: &self.baseline,
            ip: Some(ip),
        }
    }
}

/// The policies of the pod's namespace that isolate it for `direction`:
/// they select it and govern that direction.
fn isolating<'a>(
    state: &'a ClusterState,
    direction: Direction,
    namespace: &str,
    pod: &CompactPod,
    host_network: bool,
) -> Vec<&'a NetworkPolicy> {
    state
        .network_policies
        .in_namespace(namespace)
        .map(|np| &**np)
        .filter(|np| governs(np, direction) && selects_target(np, pod, host_network))
        .collect()
}

fn allowed_between(
    nodes: &[NodeInfo],
    from: &Known<'_>,
    to: &Known<'_>,
    port: u16,
    protocol: Protocol,
) -> bool {
    // The connection goes to the destination's first address; the source
    // uses its address of the same family.
    let Some(dst_ip) = to.addresses.first().copied() else {
        return false;
    };
    let Some(src_ip) = from
        .addresses
        .iter()
        .copied()
        .find(|ip| ip.is_ipv4() == dst_ip.is_ipv4())
    else {
        return false;
    };
    let src = from.end(src_ip);
    let dst = to.end(dst_ip);
    direction_allows(nodes, Direction::Egress, &src, &dst, port, protocol)
        && direction_allows(nodes, Direction::Ingress, &src, &dst, port, protocol)
}

/// The whole table: pods are those of `state` with an address that are not
/// hostNetwork, by namespace then name; cells are ordered by source pod,
/// destination pod, protocol (in the order given), port (in the order given).
pub fn matrix(state: &ClusterState, ports: &[u16], protocols: &[Protocol]) -> Matrix {
    let pods = matrix_pods(state);
    let nodes = nodes(state);
    let known: Vec<Known<'_>> = pods.iter().filter_map(|p| Known::of(state, p)).collect();
    let mut cells = Vec::with_capacity(pods.len() * pods.len() * ports.len() * protocols.len());
    for from in &known {
        for to in &known {
            for &protocol in protocols {
                for &port in ports {
                    cells.push(Cell {
                        from: format!("{}/{}", from.namespace, name_of(from.pod)),
                        to: format!("{}/{}", to.namespace, name_of(to.pod)),
                        port,
                        protocol,
                        allowed: allowed_between(&nodes, from, to, port, protocol),
                    });
                }
            }
        }
    }
    Matrix { pods, cells }
}

fn name_of(pod: &CompactPod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

/// The pods a matrix has rows and columns for: with an address, not
/// hostNetwork (they share the node's address: not a pod of the table),
/// ordered by namespace then name (the state's order).
pub fn matrix_pods(state: &ClusterState) -> Vec<PodRef> {
    state
        .pods
        .iter()
        .filter(|p| !addresses(p).is_empty() && !host_network(p))
        .map(|p| PodRef {
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            name: p.metadata.name.clone().unwrap_or_default(),
        })
        .collect()
}

/// The pod's addresses, `status.podIPs` first then `status.podIP`;
/// what does not parse is no address.
fn addresses(pod: &CompactPod) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in pod.pod_ips().chain(pod.pod_ip()) {
        if let Ok(ip) = ip.parse::<IpAddr>() {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// `spec.hostNetwork`. Not among the compact pod's decoded facts, so read
/// from the spec; a spec that does not read back counts as not hostNetwork.
fn host_network(pod: &CompactPod) -> bool {
    pod.to_pod()
        .ok()
        .and_then(|p| p.spec)
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// Whether the end governed in `direction` (the source for egress, the
/// destination for ingress) lets the connection through.
fn direction_allows(
    nodes: &[NodeInfo],
    direction: Direction,
    src: &End<'_>,
    dst: &End<'_>,
    port: u16,
    protocol: Protocol,
) -> bool {
    let (subject, peer) = match direction {
        Direction::Egress => (src, dst),
        Direction::Ingress => (dst, src),
    };
    let tier = |policies: &[Subjected<'_>]| {
        tier_verdict(policies, nodes, direction, peer, dst, port, protocol)
    };
    // The Admin tier: a final Accept or Deny; Pass goes on.
    match tier(subject.admin) {
        Some(Action::Accept) => return true,
        Some(Action::Deny) => return false,
        Some(Action::Pass) | None => {}
    }
    let isolating = match direction {
        Direction::Ingress => subject.ingress,
        Direction::Egress => subject.egress,
    };
    // NetworkPolicy decides for the pods it isolates.
    if !isolating.is_empty() {
        return isolating
            .iter()
            .any(|np| rule_allows(np, direction, peer, dst, port, protocol));
    }
    // The Baseline tier, then the default: allowed.
    tier(subject.baseline) != Some(Action::Deny)
}

/// `spec.policyTypes` after defaulting has `direction`.
fn governs(np: &NetworkPolicy, direction: Direction) -> bool {
    let Some(spec) = &np.spec else {
        // No spec: defaulting gives `[Ingress]` with no rules.
        return direction == Direction::Ingress;
    };
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => types.iter().any(|t| t == direction.as_str()),
        _ => match direction {
            Direction::Ingress => true,
            Direction::Egress => spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
        },
    }
}

/// `spec.podSelector` selects the pod (policies apply within their own
/// namespace, which the caller has settled).
fn selects_target(np: &NetworkPolicy, pod: &CompactPod, host_network: bool) -> bool {
    if host_network {
        return false;
    }
    let selector = np.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
    match selector.map(Selector::from_label_selector) {
        None => true,
        Some(Ok(s)) => s.matches_opt(pod.metadata.labels.as_ref()),
        // Unreadable: fail closed, the policy isolates every pod.
        Some(Err(_)) => true,
    }
}

/// One rule's peers (`from`/`to`) and ports, whichever the direction.
type Rule<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

/// Any rule of `np` for `direction` matches the connection: its peers
/// match `peer` and its ports match (names resolved on `dst`).
fn rule_allows(
    np: &NetworkPolicy,
    direction: Direction,
    peer: &End<'_>,
    dst: &End<'_>,
    port: u16,
    protocol: Protocol,
) -> bool {
    let Some(spec) = &np.spec else {
        return false;
    };
    let policy_namespace = np.metadata.namespace.as_deref().unwrap_or_default();
    let rules: Vec<Rule<'_>> = match direction {
        Direction::Ingress => spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_ref(), r.ports.as_ref()))
            .collect(),
        Direction::Egress => spec
            .egress
            .iter()
            .flatten()
            .map(|r| (r.to.as_ref(), r.ports.as_ref()))
            .collect(),
    };
    rules.into_iter().any(|(peers, ports)| {
        let peer_ok = match peers {
            None => true,
            Some(peers) if peers.is_empty() => true,
            Some(peers) => peers
                .iter()
                .any(|p| peer_matches(policy_namespace, p, peer)),
        };
        let port_ok = match ports {
            None => true,
            Some(ports) if ports.is_empty() => true,
            Some(ports) => ports.iter().any(|p| port_matches(p, dst, port, protocol)),
        };
        peer_ok && port_ok
    })
}

/// One `from`/`to` entry matches the other end of the connection.
fn peer_matches(policy_namespace: &str, peer: &NetworkPolicyPeer, other: &End<'_>) -> bool {
    if let Some(block) = &peer.ip_block {
        // ipBlock with a selector beside it is refused by admission; read
        // as matching nothing (fail closed).
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            return false;
        }
        return other
            .ip
            .is_some_and(|ip| in_block(ip, &block.cidr, block.except.as_deref()));
    }
    if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
        // An empty peer is refused by admission: matches nothing.
        return false;
    }
    // Selectors choose pods; a hostNetwork pod is the node, not a pod.
    if other.host_network {
        return false;
    }
    let namespace_ok = match &peer.namespace_selector {
        // No namespaceSelector: the policy's own namespace.
        None => other.namespace == policy_namespace,
        Some(sel) => selector_matches(sel, Some(other.namespace_labels)),
    };
    let pod_ok = match &peer.pod_selector {
        None => true,
        Some(sel) => selector_matches(sel, other.pod.metadata.labels.as_ref()),
    };
    namespace_ok && pod_ok
}

/// A peer's selector; unreadable matches nothing (fail closed).
fn selector_matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    Selector::from_label_selector(sel).is_ok_and(|s| s.matches_opt(labels))
}

/// The labels of namespace `name`. A namespace the state does not hold
/// (manifests without Namespace objects) has the one label the API server
/// gives every namespace: its name.
fn namespace_labels(state: &ClusterState, name: &str) -> BTreeMap<String, String> {
    let mut labels = state
        .namespaces
        .get("", name)
        .and_then(|ns| ns.metadata.labels.clone())
        .unwrap_or_default();
    labels
        .entry(METADATA_NAME.to_owned())
        .or_insert_with(|| name.to_owned());
    labels
}

/// `ip` is inside `cidr` and outside every `except`. A CIDR that does not
/// parse matches nothing; an `except` that does not parse excepts
/// everything of the block (fail closed).
fn in_block(ip: IpAddr, cidr: &str, except: Option<&[String]>) -> bool {
    let Ok(net) = cidr.parse::<IpNet>() else {
        return false;
    };
    if !net.trunc().contains(&ip) {
        return false;
    }
    except
        .into_iter()
        .flatten()
        .all(|e| match e.parse::<IpNet>() {
            Ok(e) => !e.trunc().contains(&ip),
            Err(_) => false,
        })
}

/// One `ports` entry matches the connection's destination port and
/// protocol; a named port is looked up on the destination pod.
fn port_matches(entry: &NetworkPolicyPort, dst: &End<'_>, port: u16, protocol: Protocol) -> bool {
    let entry_protocol = entry.protocol.as_deref().unwrap_or("TCP");
    if entry_protocol != protocol.as_str() {
        // Includes an unknown protocol: it matches no connection.
        return false;
    }
    let port = i32::from(port);
    match (&entry.port, entry.end_port) {
        (None, None) => true,
        // endPort without port is refused by admission: matches nothing.
        (None, Some(_)) => false,
        (Some(IntOrString::Int(first)), None) => port == *first,
        (Some(IntOrString::Int(first)), Some(last)) => (*first..=last).contains(&port),
        (Some(IntOrString::String(name)), None) => {
            // A number written as a string is still a name to the API
            // (validation requires names to hold a letter): no such port.
            dst.pod.container_port_by_name(name, entry_protocol) == Some(port)
        }
        // endPort with a named port is refused by admission.
        (Some(IntOrString::String(_)), Some(_)) => false,
    }
}

/// What a ClusterNetworkPolicy rule does to the traffic it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Accept,
    Deny,
    Pass,
}

/// The ClusterNetworkPolicies selecting the pod, Admin tier and Baseline
/// tier, each in the order consulted: priority, then name.
fn subjected<'a>(
    state: &'a ClusterState,
    pod: &CompactPod,
    namespace_labels: &BTreeMap<String, String>,
    host_network: bool,
) -> (Vec<Subjected<'a>>, Vec<Subjected<'a>>) {
    let (mut admin, mut baseline) = (Vec::new(), Vec::new());
    if host_network {
        // Not selected by any subject (the API says so).
        return (admin, baseline);
    }
    for cnp in state.cluster_network_policies.iter() {
        let cnp: &ClusterNetworkPolicy = cnp;
        let subject = &cnp.spec.subject;
        let selected = match (&subject.namespaces, &subject.pods) {
            (Some(ns), None) => Selector::from_label_selector(ns)
                .map(|s| s.matches(namespace_labels))
                .map_err(|_| ()),
            (None, Some(pods)) => match (
                Selector::from_label_selector(&pods.namespace_selector),
                Selector::from_label_selector(&pods.pod_selector),
            ) {
                (Ok(n), Ok(p)) => {
                    Ok(n.matches(namespace_labels) && p.matches_opt(pod.metadata.labels.as_ref()))
                }
                _ => Err(()),
            },
            _ => Err(()),
        };
        let entry = match selected {
            Ok(false) => continue,
            Ok(true) => Subjected {
                cnp,
                broken_subject: false,
            },
            // Unreadable: every pod, with only the Deny rules.
            Err(()) => Subjected {
                cnp,
                broken_subject: true,
            },
        };
        if cnp.spec.tier == "Baseline" {
            baseline.push(entry);
        } else {
            // Admin, and (fail closed) a tier that is neither.
            admin.push(entry);
        }
    }
    let order = |s: &Subjected<'_>| (s.cnp.spec.priority, s.cnp.metadata.name.clone());
    admin.sort_by_key(order);
    baseline.sort_by_key(order);
    (admin, baseline)
}

/// A CNP rule as written: action, peers, protocols.
type CnpRule<'a> = (&'a str, &'a [Peer], Option<&'a [ProtocolMatch]>);

/// The first rule of the tier's policies that matches the connection, in
/// order; `None` when none does.
fn tier_verdict(
    policies: &[Subjected<'_>],
    nodes: &[NodeInfo],
    direction: Direction,
    peer: &End<'_>,
    dst: &End<'_>,
    port: u16,
    protocol: Protocol,
) -> Option<Action> {
    for s in policies {
        let spec = &s.cnp.spec;
        let rules: Vec<CnpRule<'_>> = match direction {
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
        for (action, peers, protocols) in rules {
            let action = match action {
                "Accept" => Some(Action::Accept),
                "Deny" => Some(Action::Deny),
                "Pass" => Some(Action::Pass),
                _ => None,
            };
            let peers_match = peers_match(peers, direction, nodes, peer);
            let ports_match = protocols_match(protocols, dst, port, protocol);
            let named = protocols
                .into_iter()
                .flatten()
                .any(|p| p.destination_named_port.is_some());
            let not_pods = peers
                .iter()
                .any(|p| p.pods.is_none() && p.namespaces.is_none());
            let readable = action.is_some()
                && peers_match.is_some()
                && ports_match.is_some()
                && !(named && not_pods);
            if !readable {
                // Fail closed: an Accept matches nothing, the rest deny all.
                if action == Some(Action::Accept) {
                    continue;
                }
                return Some(Action::Deny);
            }
            let action = action?;
            if s.broken_subject && action != Action::Deny {
                continue;
            }
            if peers_match == Some(true) && ports_match == Some(true) {
                return Some(action);
            }
        }
    }
    None
}

/// Whether one of the rule's peers is the other end; `None` when a peer
/// cannot be read.
fn peers_match(
    peers: &[Peer],
    direction: Direction,
    nodes: &[NodeInfo],
    other: &End<'_>,
) -> Option<bool> {
    if peers.is_empty() {
        return None;
    }
    let mut any = false;
    for p in peers {
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
            return None;
        }
        let pod_peer = p.namespaces.is_some() || p.pods.is_some();
        if direction == Direction::Ingress && !pod_peer {
            return None;
        }
        let hit = if let Some(ns) = &p.namespaces {
            let sel = Selector::from_label_selector(ns).ok()?;
            !other.host_network && sel.matches(other.namespace_labels)
        } else if let Some(pods) = &p.pods {
            let n = Selector::from_label_selector(&pods.namespace_selector).ok()?;
            let s = Selector::from_label_selector(&pods.pod_selector).ok()?;
            !other.host_network
                && n.matches(other.namespace_labels)
                && s.matches_opt(other.pod.metadata.labels.as_ref())
        } else if let Some(networks) = &p.networks {
            if networks.is_empty() {
                return None;
            }
            let mut hit = false;
            for cidr in networks {
                let net = cidr.parse::<IpNet>().ok()?;
                hit |= other.ip.is_some_and(|ip| net.trunc().contains(&ip));
            }
            hit
        } else if let Some(sel) = &p.nodes {
            let sel = Selector::from_label_selector(sel).ok()?;
            other.ip.is_some_and(|ip| {
                nodes
                    .iter()
                    .any(|n| sel.matches(&n.labels) && n.addresses.contains(&ip))
            })
        } else {
            // domainNames: not enforced, matches no connection.
            false
        };
        any |= hit;
    }
    Some(any)
}

/// Whether the rule's `protocols` match the connection (absent: all
/// traffic); `None` when an entry cannot be read.
fn protocols_match(
    protocols: Option<&[ProtocolMatch]>,
    dst: &End<'_>,
    port: u16,
    protocol: Protocol,
) -> Option<bool> {
    let Some(list) = protocols else {
        return Some(true);
    };
    if list.is_empty() {
        return None;
    }
    let mut any = false;
    for p in list {
        let entries = [
            (Protocol::Tcp, &p.tcp),
            (Protocol::Udp, &p.udp),
            (Protocol::Sctp, &p.sctp),
        ];
        let set = entries.iter().filter(|(_, m)| m.is_some()).count()
            + usize::from(p.destination_named_port.is_some());
        if set != 1 {
            return None;
        }
        if let Some(name) = &p.destination_named_port {
            if name.is_empty() {
                return None;
            }
            // The name's own protocol, from the destination's container port.
            any |= dst.pod.container_port_by_name(name, protocol.as_str()) == Some(i32::from(port));
            continue;
        }
        for (proto, m) in entries {
            let Some(m) = m else { continue };
            let (first, last) = match &m.destination_port {
                None => (1, 65535),
                Some(spec) => match (spec.number, &spec.range) {
                    (Some(n), None) => (n, n),
                    (None, Some(r)) => (r.start, r.end),
                    _ => return None,
                },
            };
            if !(1..=65535).contains(&first) || !(first..=65535).contains(&last) {
                return None;
            }
            any |= proto == protocol && (first..=last).contains(&i32::from(port));
        }
    }
    Some(any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use strait_model::k8s_openapi::api::core::v1::{
        Container, ContainerPort, Namespace, Pod, PodIP, PodSpec, PodStatus,
    };
    use strait_model::k8s_openapi::api::networking::v1::NetworkPolicySpec;
    use strait_model::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use strait_model::Object;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pod(ns: &str, name: &str, ip: &str, ports: &[(&str, &str, i32)]) -> Object {
        Object::Pod(Arc::new(CompactPod::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(labels(&[("app", name)])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(
                        ports
                            .iter()
                            .map(|(n, proto, p)| ContainerPort {
                                name: Some(n.to_string()),
                                protocol: Some(proto.to_string()),
                                container_port: *p,
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                pod_ips: Some(vec![PodIP { ip: ip.into() }]),
                ..Default::default()
            }),
        })))
    }

    fn namespace(name: &str, extra: &[(&str, &str)]) -> Object {
        let mut l = labels(extra);
        l.insert(METADATA_NAME.into(), name.into());
        Object::Namespace(Arc::new(Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(l),
                ..Default::default()
            },
            ..Default::default()
        }))
    }

    fn policy(ns: &str, name: &str, yaml_spec: &str) -> Object {
        let spec: NetworkPolicySpec = serde_saphyr::from_str(yaml_spec).unwrap();
        Object::NetworkPolicy(Arc::new(NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(spec),
        }))
    }

    fn state(objects: Vec<Object>) -> ClusterState {
        ClusterState::from_objects(objects.into_iter().map(|o| (o, None))).unwrap()
    }

    fn r(ns: &str, name: &str) -> PodRef {
        PodRef {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    /// web (10.0.0.1) names `http` 8080, api (10.0.0.2) names `http` 9090,
    /// client (10.0.1.1) in namespace `other`.
    fn base() -> Vec<Object> {
        vec![
            namespace("shop", &[("team", "a")]),
            namespace("other", &[("team", "b")]),
            pod("shop", "web", "10.0.0.1", &[("http", "TCP", 8080)]),
            pod("shop", "api", "10.0.0.2", &[("http", "TCP", 9090)]),
            pod("other", "client", "10.0.1.1", &[]),
        ]
    }

    fn with(extra: Vec<Object>) -> ClusterState {
        let mut all = base();
        all.extend(extra);
        state(all)
    }

    #[test]
    fn no_policy_allows_everything() {
        let s = with(vec![]);
        assert!(allowed(
            &s,
            &r("other", "client"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
        assert!(allowed(
            &s,
            &r("shop", "web"),
            &r("shop", "web"),
            1,
            Protocol::Sctp
        ));
        assert!(!allowed(
            &s,
            &r("shop", "gone"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
    }

    #[test]
    fn empty_ingress_isolates_selected_pods_only() {
        let s = with(vec![policy(
            "shop",
            "deny",
            "podSelector: {matchLabels: {app: web}}",
        )]);
        assert!(!allowed(
            &s,
            &r("shop", "api"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
        assert!(allowed(
            &s,
            &r("shop", "web"),
            &r("shop", "api"),
            80,
            Protocol::Tcp
        ));
        // Egress is not governed: web can still reach everyone.
        assert!(allowed(
            &s,
            &r("shop", "web"),
            &r("other", "client"),
            80,
            Protocol::Tcp
        ));
    }

    #[test]
    fn policy_types_default_from_egress_rules() {
        // `egress: []` alone does not govern egress (kube-apiserver's defaulting).
        let s = with(vec![policy("shop", "p", "podSelector: {}\negress: []")]);
        assert!(allowed(
            &s,
            &r("shop", "web"),
            &r("other", "client"),
            80,
            Protocol::Tcp
        ));
        assert!(!allowed(
            &s,
            &r("other", "client"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
        // One egress rule does: Ingress and Egress.
        let s = with(vec![policy(
            "shop",
            "p",
            "podSelector: {}\negress: [{ports: [{port: 53, protocol: UDP}]}]",
        )]);
        assert!(!allowed(
            &s,
            &r("shop", "web"),
            &r("other", "client"),
            80,
            Protocol::Tcp
        ));
        assert!(allowed(
            &s,
            &r("shop", "web"),
            &r("other", "client"),
            53,
            Protocol::Udp
        ));
        assert!(!allowed(
            &s,
            &r("other", "client"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
        // Explicit Egress only: ingress stays open.
        let s = with(vec![policy(
            "shop",
            "p",
            "podSelector: {}\npolicyTypes: [Egress]",
        )]);
        assert!(allowed(
            &s,
            &r("other", "client"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
        assert!(!allowed(
            &s,
            &r("shop", "web"),
            &r("other", "client"),
            80,
            Protocol::Tcp
        ));
    }

    #[test]
    fn peers_pod_namespace_and_both() {
        let pod_only = with(vec![policy(
            "shop",
            "p",
            "podSelector: {}\ningress: [{from: [{podSelector: {matchLabels: {app: api}}}]}]",
        )]);
        assert!(allowed(
            &pod_only,
            &r("shop", "api"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
        assert!(!allowed(
            &pod_only,
            &r("other", "client"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
        let ns_only = with(vec![policy(
            "shop",
            "p",
            "podSelector: {}\ningress: [{from: [{namespaceSelector: {matchLabels: {team: b}}}]}]",
        )]);
        assert!(allowed(
            &ns_only,
            &r("other", "client"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
        assert!(!allowed(
            &ns_only,
            &r("shop", "api"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
        let both = with(vec![policy(
            "shop",
            "p",
            "podSelector: {}\ningress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: api}}}]}]",
        )]);
        assert!(allowed(
            &both,
            &r("shop", "api"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
        assert!(!allowed(
            &both,
            &r("other", "client"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
        // A namespace without a Namespace object still has its name label.
        let s = state(vec![
            pod("loose", "a", "10.0.2.1", &[]),
            pod("loose", "b", "10.0.2.2", &[]),
            policy(
                "loose",
                "p",
                "podSelector: {}\ningress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: loose}}}]}]",
            ),
        ]);
        assert!(allowed(
            &s,
            &r("loose", "a"),
            &r("loose", "b"),
            80,
            Protocol::Tcp
        ));
    }

    #[test]
    fn ip_block_with_except_applies_to_pod_addresses() {
        let s = with(vec![policy(
            "shop",
            "p",
            "podSelector: {matchLabels: {app: web}}\npolicyTypes: [Egress]\negress: [{to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}}]}]",
        )]);
        assert!(allowed(
            &s,
            &r("shop", "web"),
            &r("shop", "api"),
            80,
            Protocol::Tcp
        ));
        assert!(!allowed(
            &s,
            &r("shop", "web"),
            &r("other", "client"),
            80,
            Protocol::Tcp
        ));
    }

    #[test]
    fn named_ports_resolve_on_each_destination() {
        // `http` is 8080 on web and 9090 on api.
        let s = with(vec![policy(
            "shop",
            "p",
            "podSelector: {}\ningress: [{ports: [{port: http}]}]",
        )]);
        let c = r("other", "client");
        assert!(allowed(&s, &c, &r("shop", "web"), 8080, Protocol::Tcp));
        assert!(!allowed(&s, &c, &r("shop", "web"), 9090, Protocol::Tcp));
        assert!(allowed(&s, &c, &r("shop", "api"), 9090, Protocol::Tcp));
        assert!(!allowed(&s, &c, &r("shop", "api"), 8080, Protocol::Tcp));
        // The name is looked up with the entry's protocol.
        assert!(!allowed(&s, &c, &r("shop", "web"), 8080, Protocol::Udp));
        // Egress names resolve on the destination too.
        let s = with(vec![policy(
            "other",
            "p",
            "podSelector: {}\npolicyTypes: [Egress]\negress: [{ports: [{port: http}]}]",
        )]);
        assert!(allowed(&s, &c, &r("shop", "api"), 9090, Protocol::Tcp));
        assert!(!allowed(&s, &c, &r("shop", "web"), 9090, Protocol::Tcp));
    }

    #[test]
    fn port_ranges_and_protocols() {
        let s = with(vec![policy(
            "shop",
            "p",
            "podSelector: {}\ningress: [{ports: [{port: 8000, endPort: 8100}, {protocol: UDP}]}]",
        )]);
        let c = r("other", "client");
        let w = r("shop", "web");
        assert!(allowed(&s, &c, &w, 8000, Protocol::Tcp));
        assert!(allowed(&s, &c, &w, 8100, Protocol::Tcp));
        assert!(!allowed(&s, &c, &w, 8101, Protocol::Tcp));
        assert!(!allowed(&s, &c, &w, 8050, Protocol::Sctp));
        assert!(allowed(&s, &c, &w, 1, Protocol::Udp));
        // An unknown protocol matches nothing; it does not fall back to TCP.
        let s = with(vec![policy(
            "shop",
            "p",
            "podSelector: {}\ningress: [{ports: [{port: 80, protocol: ICMP}]}]",
        )]);
        assert!(!allowed(&s, &c, &w, 80, Protocol::Tcp));
    }

    #[test]
    fn rules_and_policies_add_up_and_both_ends_must_agree() {
        let s = with(vec![
            policy(
                "shop",
                "a",
                "podSelector: {}\ningress: [{ports: [{port: 80}]}]",
            ),
            policy(
                "shop",
                "b",
                "podSelector: {}\ningress: [{ports: [{port: 81}]}]",
            ),
            policy(
                "other",
                "c",
                "podSelector: {}\npolicyTypes: [Egress]\negress: [{ports: [{port: 81}]}]",
            ),
        ]);
        let c = r("other", "client");
        let w = r("shop", "web");
        assert!(!allowed(&s, &c, &w, 80, Protocol::Tcp), "egress denies 80");
        assert!(allowed(&s, &c, &w, 81, Protocol::Tcp));
        assert!(!allowed(&s, &c, &w, 82, Protocol::Tcp));
    }

    #[test]
    fn host_network_pods_are_not_selected_and_not_in_the_matrix() {
        let mut objects = base();
        objects.push(Object::Pod(Arc::new(CompactPod::new(Pod {
            metadata: ObjectMeta {
                name: Some("node-agent".into()),
                namespace: Some("shop".into()),
                labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                host_network: Some(true),
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some("192.168.0.10".into()),
                ..Default::default()
            }),
        }))));
        objects.push(policy(
            "shop",
            "p",
            "podSelector: {matchLabels: {app: web}}",
        ));
        let s = state(objects);
        assert!(allowed(
            &s,
            &r("other", "client"),
            &r("shop", "node-agent"),
            80,
            Protocol::Tcp
        ));
        let m = matrix(&s, &[80], &[Protocol::Tcp]);
        assert_eq!(
            m.pods.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["other/client", "shop/api", "shop/web"]
        );
        assert_eq!(m.cells.len(), 9);
        let denied: Vec<_> = m
            .cells
            .iter()
            .filter(|c| !c.allowed)
            .map(|c| (&*c.from, &*c.to))
            .collect();
        assert_eq!(
            denied,
            [
                ("other/client", "shop/web"),
                ("shop/api", "shop/web"),
                ("shop/web", "shop/web")
            ]
        );
    }

    #[test]
    fn unreadable_input_fails_closed() {
        // A bad target selector isolates the whole namespace.
        let s = with(vec![policy(
            "shop",
            "p",
            "podSelector: {matchExpressions: [{key: app, operator: Bogus}]}\ningress: [{}]",
        )]);
        assert!(allowed(
            &s,
            &r("other", "client"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
        let s = with(vec![policy(
            "shop",
            "p",
            "podSelector: {matchExpressions: [{key: app, operator: Bogus}]}",
        )]);
        assert!(!allowed(
            &s,
            &r("other", "client"),
            &r("shop", "api"),
            80,
            Protocol::Tcp
        ));
        // A bad peer selector and a bad CIDR match nothing.
        let s = with(vec![policy(
            "shop",
            "p",
            "podSelector: {}\ningress: [{from: [{podSelector: {matchExpressions: [{key: app, operator: In}]}}, {ipBlock: {cidr: nonsense}}]}]",
        )]);
        assert!(!allowed(
            &s,
            &r("shop", "api"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
        assert!(!allowed(
            &s,
            &r("other", "client"),
            &r("shop", "web"),
            80,
            Protocol::Tcp
        ));
    }
}
