//! The ClusterNetworkPolicy conformance scenarios of sig-network-policy-api
//! (kubernetes-sigs/network-policy-api, `conformance/tests/*.go`, the
//! `policy.networking.k8s.io/v1alpha2` suite): their topology, policies,
//! mutations and probes, our own code. Every probe is asserted twice: on
//! the reference reading ([`semantics::allowed`]) and on the planner's
//! tables traced packet by packet ([`traced_matrix`]).
//!
//! The topology is theirs: namespaces `network-policy-conformance-<house>`
//! for gryffindor, slytherin, hufflepuff and ravenclaw, labelled
//! `conformance-house=<house>`, each with two pods (`harry-potter-0/1`,
//! `draco-malfoy-0/1`, `cedric-diggory-0/1`, `luna-lovegood-0/1`) labelled
//! the same, whose containers name TCP 80 `web` and UDP 53 `dns`; plus the
//! forbidden-forrest namespace of hostNetwork pods. Pods are spread over two
//! nodes so that both same-node and cross-node paths are traced.
//!
//! A conformance test applies its manifest to a fresh cluster; its subtests
//! run in order on the same objects, and a subtest's patch (rules swapped,
//! an action or a priority changed, a rule prepended, a namespace relabelled,
//! a NetworkPolicy deleted) stays for the subtests after it. Here one
//! [`World`] per test, mutated in the same order.
//!
//! Ported: 22 of the 24 tests, 87 of their 92 subtests —
//!
//! - Admin tier: IngressTCP (6), IngressUDP (6), IngressSCTP (6),
//!   IngressNamedPort (1), EgressTCP (6), EgressUDP (6), EgressSCTP (6),
//!   EgressNamedPort (1), Gress (6), EgressInlineCIDRPeers (2),
//!   PriorityField (3), Integration (6);
//! - Baseline tier: IngressTCP (4), IngressUDP (4), IngressSCTP (4),
//!   IngressNamedPort (1), EgressTCP (4), EgressUDP (4), EgressSCTP (4),
//!   EgressNamedPort (1), Gress (4), EgressInlineCIDRPeers (2).
//!
//! Not ported: `CNPAdminTierEgressNodePeers` (3 subtests) and
//! `CNPBaselineTierEgressNodePeers` (2). They probe hostNetwork pods at
//! their node's address: not a pod-to-pod cell of either reading (the
//! matrix leaves hostNetwork pods out, and traffic to the local node goes
//! through the `input` hook, which strait's policy table does not judge).
//! `nodes` peers are read by both readings (the Nodes' addresses) and held
//! to each other by a unit test, not by these scenarios.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};
use strait_policy::fixture::Cluster;
use strait_policy::plan::traced_matrix;
use strait_policy::{semantics, PodRef, Protocol};

const HOUSES: [(&str, &str); 4] = [
    ("gryffindor", "harry-potter"),
    ("slytherin", "draco-malfoy"),
    ("hufflepuff", "cedric-diggory"),
    ("ravenclaw", "luna-lovegood"),
];

/// Every port a probe uses.
const PORTS: [u16; 6] = [80, 8080, 53, 5353, 9003, 9005];

fn namespace(house: &str) -> String {
    format!("network-policy-conformance-{house}")
}

fn house_index(house: &str) -> usize {
    HOUSES
        .iter()
        .position(|(h, _)| *h == house)
        .unwrap_or_else(|| panic!("no house {house}"))
}

/// The address of pod `i` of `house`.
fn pod_ip(house: &str, i: usize) -> String {
    format!("10.1.{}.{}", house_index(house) + 1, 10 + i)
}

fn pod_ref(house: &str, i: usize) -> PodRef {
    PodRef {
        namespace: namespace(house),
        name: format!("{}-{i}", HOUSES[house_index(house)].1),
    }
}

/// The objects of one conformance test, as its subtests change them.
struct World {
    /// Namespace labels by house (the name label is always added).
    labels: BTreeMap<&'static str, Json>,
    /// ClusterNetworkPolicies by name.
    cnps: BTreeMap<String, Json>,
    /// NetworkPolicies by (house, name).
    nps: BTreeMap<(String, String), Json>,
}

impl World {
    fn new() -> World {
        World {
            labels: HOUSES
                .iter()
                .map(|(h, _)| (*h, json!({"conformance-house": h})))
                .collect(),
            cnps: BTreeMap::new(),
            nps: BTreeMap::new(),
        }
    }

    fn with(mut self, name: &str, spec: Json) -> World {
        self.cnps.insert(name.to_owned(), spec);
        self
    }

    fn cnp(&mut self, name: &str) -> &mut Json {
        self.cnps
            .get_mut(name)
            .unwrap_or_else(|| panic!("no policy {name}"))
    }

    /// Swap rules `i` and `j` of `direction` ("ingress"/"egress").
    fn swap(&mut self, name: &str, direction: &str, i: usize, j: usize) {
        let rules = self.cnp(name)[direction].as_array_mut().expect("rules");
        rules.swap(i, j);
    }

    fn cluster(&self) -> Cluster {
        let mut c = Cluster::default();
        for (i, (house, stem)) in HOUSES.iter().enumerate() {
            c.namespace(&namespace(house), self.labels[house].clone());
            for k in 0..2 {
                let node = if (i + k) % 2 == 0 { "node-a" } else { "node-b" };
                c.pod(
                    &namespace(house),
                    &format!("{stem}-{k}"),
                    json!({"conformance-house": house}),
                    node,
                    &pod_ip(house, k),
                    &[("web", "TCP", 80), ("dns", "UDP", 53)],
                );
            }
        }
        // The hostNetwork pods: never a subject nor a pod peer.
        let forest = namespace("forbidden-forrest");
        c.namespace(&forest, json!({"conformance-house": "forbidden-forrest"}));
        for (k, (node, address)) in [("node-a", "192.168.0.1"), ("node-b", "192.168.0.2")]
            .into_iter()
            .enumerate()
        {
            c.node(node, json!({}), address);
            c.pod_with(
                &forest,
                &format!("centaur-{k}"),
                json!({"conformance-house": "forbidden-forrest"}),
                node,
                address,
                &[],
                true,
            );
        }
        for (name, spec) in &self.cnps {
            c.cluster_policy(name, spec.clone());
        }
        for ((house, name), spec) in &self.nps {
            c.policy(&namespace(house), name, spec.clone());
        }
        c
    }

    /// Run one subtest's probes on both readings; every mismatch is named.
    fn check(&self, subtest: &str, probes: &[Probe]) {
        let c = self.cluster();
        let protocols = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
        let traced = traced_matrix(&c.state, &PORTS, &protocols)
            .unwrap_or_else(|e| panic!("{subtest}: tracing failed: {e}"));
        let mut wrong = Vec::new();
        for &(from, to, proto, port, expected) in probes {
            let (from, to) = (pod_ref(from.0, from.1), pod_ref(to.0, to.1));
            let protocol = match proto {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "sctp" => Protocol::Sctp,
                other => panic!("no protocol {other}"),
            };
            assert!(PORTS.contains(&port), "port {port} is not traced");
            let reference = semantics::allowed(&c.state, &from, &to, port, protocol);
            let cell = traced
                .cells
                .iter()
                .find(|cell| {
                    cell.from == from.to_string()
                        && cell.to == to.to_string()
                        && cell.port == port
                        && cell.protocol == protocol
                })
                .unwrap_or_else(|| panic!("{subtest}: no traced cell {from} -> {to}"));
            for (reading, got) in [("reference", reference), ("traced", cell.allowed)] {
                if got != expected {
                    wrong.push(format!(
                        "{reading}: {from} -> {to} {proto}/{port}: got {got}, expected {expected}"
                    ));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{subtest}:\n  {}\npolicies: {:#}",
            wrong.join("\n  "),
            json!(self.cnps)
        );
    }
}

/// (from (house, pod), to (house, pod), protocol, port, allowed).
type Probe = (
    (&'static str, usize),
    (&'static str, usize),
    &'static str,
    u16,
    bool,
);

const G: &str = "gryffindor";
const S: &str = "slytherin";
const H: &str = "hufflepuff";
const R: &str = "ravenclaw";

/// Pods of a namespace chosen by its name label.
fn by_name(house: &str) -> Json {
    json!({"matchLabels": {"kubernetes.io/metadata.name": namespace(house)}})
}

fn by_house(house: &str) -> Json {
    json!({"matchLabels": {"conformance-house": house}})
}

/// `{proto: {destinationPort: {number}}}`.
fn port(proto: &str, number: u16) -> Json {
    json!({(proto): {"destinationPort": {"number": number}}})
}

fn rule(direction: &str, action: &str, house: &str, protocols: Option<&[Json]>) -> Json {
    let peer_key = if direction == "ingress" { "from" } else { "to" };
    let mut r = json!({"action": action, (peer_key): [{"namespaces": by_name(house)}]});
    if let Some(p) = protocols {
        r["protocols"] = json!(p);
    }
    r
}

/// The rules of the Admin-tier protocol manifests: all of `a` accepted,
/// denied, passed (in that order); `b` denied then passed on `b_ports`;
/// `c` accepted on `c_ports`, denied otherwise.
fn admin_rules(direction: &str, a: &str, b: (&str, &[Json]), c: (&str, &[Json])) -> Json {
    json!([
        rule(direction, "Accept", a, None),
        rule(direction, "Deny", a, None),
        rule(direction, "Pass", a, None),
        rule(direction, "Deny", b.0, Some(b.1)),
        rule(direction, "Pass", b.0, Some(b.1)),
        rule(direction, "Accept", c.0, Some(c.1)),
        rule(direction, "Deny", c.0, None),
    ])
}

/// The Baseline-tier version: the same without the Pass rules.
fn baseline_rules(direction: &str, a: &str, b: (&str, &[Json]), c: (&str, &[Json])) -> Json {
    json!([
        rule(direction, "Accept", a, None),
        rule(direction, "Deny", a, None),
        rule(direction, "Deny", b.0, Some(b.1)),
        rule(direction, "Accept", c.0, Some(c.1)),
        rule(direction, "Deny", c.0, None),
    ])
}

fn policy(tier: &str, priority: i32, subject_house: &str, direction: &str, rules: Json) -> Json {
    json!({
        "tier": tier,
        "priority": priority,
        "subject": {"namespaces": by_name(subject_house)},
        (direction): rules,
    })
}

// ---------------------------------------------------------------- Admin tier

#[test]
fn admin_ingress_tcp() {
    let mut w = World::new().with(
        "ingress-tcp",
        policy(
            "Admin",
            3,
            G,
            "ingress",
            admin_rules(
                "ingress",
                R,
                (S, &[port("tcp", 80)]),
                (H, &[port("tcp", 80)]),
            ),
        ),
    );
    w.check(
        "allow-ingress TCP, rule order",
        &[
            ((R, 0), (G, 0), "tcp", 80, true),
            ((R, 1), (G, 0), "tcp", 8080, true),
        ],
    );
    w.check(
        "allow-ingress TCP at the port",
        &[
            ((H, 0), (G, 1), "tcp", 80, true),
            ((H, 1), (G, 1), "tcp", 8080, false),
        ],
    );
    w.swap("ingress-tcp", "ingress", 0, 1);
    w.check(
        "deny-ingress TCP, rule order",
        &[
            ((R, 0), (G, 1), "tcp", 80, false),
            ((R, 1), (G, 1), "tcp", 8080, false),
        ],
    );
    w.check(
        "deny-ingress TCP at the port",
        &[
            ((S, 0), (G, 0), "tcp", 80, false),
            ((S, 1), (G, 0), "tcp", 8080, true),
        ],
    );
    w.swap("ingress-tcp", "ingress", 0, 2);
    w.check(
        "pass-ingress TCP, rule order",
        &[
            ((R, 0), (G, 0), "tcp", 80, true),
            ((R, 1), (G, 0), "tcp", 8080, true),
        ],
    );
    w.swap("ingress-tcp", "ingress", 3, 4);
    w.check(
        "pass-ingress TCP at the port",
        &[
            ((S, 0), (G, 0), "tcp", 80, true),
            ((S, 1), (G, 0), "tcp", 8080, true),
        ],
    );
}

fn admin_ingress_udp_world() -> World {
    World::new().with(
        "ingress-udp",
        policy(
            "Admin",
            4,
            H,
            "ingress",
            admin_rules(
                "ingress",
                R,
                (S, &[port("udp", 5353)]),
                (G, &[port("udp", 53)]),
            ),
        ),
    )
}

#[test]
fn admin_ingress_udp() {
    let mut w = admin_ingress_udp_world();
    w.check(
        "allow-ingress UDP, rule order",
        &[
            ((R, 0), (H, 0), "udp", 53, true),
            ((R, 1), (H, 0), "udp", 5353, true),
        ],
    );
    w.check(
        "allow-ingress UDP at the port",
        &[
            ((G, 0), (H, 1), "udp", 53, true),
            ((G, 1), (H, 1), "udp", 5353, false),
        ],
    );
    w.swap("ingress-udp", "ingress", 0, 1);
    w.check(
        "deny-ingress UDP, rule order",
        &[
            ((R, 0), (H, 1), "udp", 53, false),
            ((R, 1), (H, 1), "udp", 5353, false),
        ],
    );
    w.check(
        "deny-ingress UDP at the port",
        &[
            ((S, 0), (H, 0), "udp", 5353, false),
            ((S, 1), (H, 0), "udp", 53, true),
        ],
    );
    w.swap("ingress-udp", "ingress", 0, 2);
    w.check(
        "pass-ingress UDP, rule order",
        &[
            ((R, 0), (H, 1), "udp", 5353, true),
            ((R, 1), (H, 1), "udp", 53, true),
        ],
    );
    w.swap("ingress-udp", "ingress", 3, 4);
    w.check(
        "pass-ingress UDP at the port",
        &[
            ((S, 0), (H, 0), "udp", 5353, true),
            ((S, 1), (H, 0), "udp", 53, true),
        ],
    );
}

#[test]
fn admin_ingress_named_port() {
    let mut w = admin_ingress_udp_world();
    w.cnp("ingress-udp")["ingress"][5]["protocols"] = json!([{"destinationNamedPort": "dns"}]);
    w.check(
        "allow-ingress on a named port",
        &[
            ((G, 0), (H, 1), "udp", 53, true),
            ((G, 1), (H, 1), "udp", 5353, false),
        ],
    );
}

#[test]
fn admin_ingress_sctp() {
    let mut w = World::new().with(
        "ingress-sctp",
        policy(
            "Admin",
            5,
            R,
            "ingress",
            admin_rules(
                "ingress",
                G,
                (S, &[port("sctp", 9003)]),
                (H, &[port("sctp", 9003)]),
            ),
        ),
    );
    w.check(
        "allow-ingress SCTP, rule order",
        &[
            ((G, 0), (R, 0), "sctp", 9003, true),
            ((G, 1), (R, 0), "sctp", 9005, true),
        ],
    );
    w.check(
        "allow-ingress SCTP at the port",
        &[
            ((H, 0), (R, 1), "sctp", 9003, true),
            ((H, 1), (R, 1), "sctp", 9005, false),
        ],
    );
    w.swap("ingress-sctp", "ingress", 0, 1);
    w.check(
        "deny-ingress SCTP, rule order",
        &[
            ((G, 0), (R, 1), "sctp", 9003, false),
            ((G, 1), (R, 1), "sctp", 9005, false),
        ],
    );
    w.check(
        "deny-ingress SCTP at the port",
        &[
            ((S, 0), (R, 0), "sctp", 9003, false),
            ((S, 1), (R, 0), "sctp", 9005, true),
        ],
    );
    w.swap("ingress-sctp", "ingress", 0, 2);
    w.check(
        "pass-ingress SCTP, rule order",
        &[
            ((G, 0), (R, 1), "sctp", 9003, true),
            ((G, 1), (R, 1), "sctp", 9005, true),
        ],
    );
    w.swap("ingress-sctp", "ingress", 3, 4);
    w.check(
        "pass-ingress SCTP at the port",
        &[
            ((S, 0), (R, 0), "sctp", 9003, true),
            ((S, 1), (R, 0), "sctp", 9005, true),
        ],
    );
}

fn admin_egress_tcp_world() -> World {
    World::new().with(
        "egress-tcp",
        policy(
            "Admin",
            6,
            G,
            "egress",
            admin_rules(
                "egress",
                R,
                (S, &[port("tcp", 80)]),
                (H, &[port("tcp", 8080)]),
            ),
        ),
    )
}

#[test]
fn admin_egress_tcp() {
    let mut w = admin_egress_tcp_world();
    w.check(
        "allow-egress TCP, rule order",
        &[
            ((G, 0), (R, 0), "tcp", 80, true),
            ((G, 1), (R, 0), "tcp", 8080, true),
        ],
    );
    w.check(
        "allow-egress TCP at the port",
        &[
            ((G, 0), (H, 1), "tcp", 8080, true),
            ((G, 1), (H, 1), "tcp", 80, false),
        ],
    );
    w.swap("egress-tcp", "egress", 0, 1);
    w.check(
        "deny-egress TCP, rule order",
        &[
            ((G, 0), (R, 1), "tcp", 80, false),
            ((G, 1), (R, 1), "tcp", 8080, false),
        ],
    );
    w.check(
        "deny-egress TCP at the port",
        &[
            ((G, 0), (S, 0), "tcp", 80, false),
            ((G, 1), (S, 0), "tcp", 8080, true),
        ],
    );
    w.swap("egress-tcp", "egress", 0, 2);
    w.check(
        "pass-egress TCP, rule order",
        &[
            ((G, 0), (R, 0), "tcp", 80, true),
            ((G, 1), (R, 0), "tcp", 8080, true),
        ],
    );
    w.swap("egress-tcp", "egress", 3, 4);
    w.check(
        "pass-egress TCP at the port",
        &[
            ((G, 0), (S, 0), "tcp", 80, true),
            ((G, 1), (S, 0), "tcp", 8080, true),
        ],
    );
}

#[test]
fn admin_egress_named_port() {
    let mut w = admin_egress_tcp_world();
    w.cnp("egress-tcp")["egress"][5]["protocols"] = json!([{"destinationNamedPort": "web"}]);
    w.check(
        "allow-egress on a named port",
        &[
            ((G, 0), (H, 1), "tcp", 80, true),
            ((G, 1), (H, 1), "tcp", 8080, false),
        ],
    );
}

#[test]
fn admin_egress_udp() {
    let mut w = World::new().with(
        "egress-udp",
        policy(
            "Admin",
            7,
            H,
            "egress",
            admin_rules(
                "egress",
                R,
                (S, &[port("udp", 5353)]),
                (G, &[port("udp", 53)]),
            ),
        ),
    );
    w.check(
        "allow-egress UDP, rule order",
        &[
            ((H, 0), (R, 0), "udp", 53, true),
            ((H, 1), (R, 0), "udp", 5353, true),
        ],
    );
    w.check(
        "allow-egress UDP at the port",
        &[
            ((H, 0), (G, 1), "udp", 53, true),
            ((H, 1), (G, 1), "udp", 5353, false),
        ],
    );
    w.swap("egress-udp", "egress", 0, 1);
    w.check(
        "deny-egress UDP, rule order",
        &[
            ((H, 0), (R, 1), "udp", 53, false),
            ((H, 1), (R, 1), "udp", 5353, false),
        ],
    );
    w.check(
        "deny-egress UDP at the port",
        &[
            ((H, 0), (S, 0), "udp", 5353, false),
            ((H, 1), (S, 0), "udp", 53, true),
        ],
    );
    w.swap("egress-udp", "egress", 0, 2);
    w.check(
        "pass-egress UDP, rule order",
        &[
            ((H, 0), (R, 1), "udp", 5353, true),
            ((H, 1), (R, 1), "udp", 53, true),
        ],
    );
    w.swap("egress-udp", "egress", 3, 4);
    w.check(
        "pass-egress UDP at the port",
        &[
            ((H, 0), (S, 0), "udp", 5353, true),
            ((H, 1), (S, 0), "udp", 53, true),
        ],
    );
}

#[test]
fn admin_egress_sctp() {
    let mut w = World::new().with(
        "egress-sctp",
        policy(
            "Admin",
            8,
            R,
            "egress",
            admin_rules(
                "egress",
                G,
                (S, &[port("sctp", 9003)]),
                (H, &[port("sctp", 9003)]),
            ),
        ),
    );
    w.check(
        "allow-egress SCTP, rule order",
        &[
            ((R, 0), (G, 0), "sctp", 9003, true),
            ((R, 1), (G, 0), "sctp", 9005, true),
        ],
    );
    w.check(
        "allow-egress SCTP at the port",
        &[
            ((R, 0), (H, 1), "sctp", 9003, true),
            ((R, 1), (H, 1), "sctp", 9005, false),
        ],
    );
    w.swap("egress-sctp", "egress", 0, 1);
    w.check(
        "deny-egress SCTP, rule order",
        &[
            ((R, 0), (G, 1), "sctp", 9003, false),
            ((R, 1), (G, 1), "sctp", 9005, false),
        ],
    );
    w.check(
        "deny-egress SCTP at the port",
        &[
            ((R, 0), (S, 0), "sctp", 9003, false),
            ((R, 1), (S, 0), "sctp", 9005, true),
        ],
    );
    w.swap("egress-sctp", "egress", 0, 2);
    w.check(
        "pass-egress SCTP, rule order",
        &[
            ((R, 0), (G, 1), "sctp", 9003, true),
            ((R, 1), (G, 1), "sctp", 9005, true),
        ],
    );
    w.swap("egress-sctp", "egress", 3, 4);
    w.check(
        "pass-egress SCTP at the port",
        &[
            ((R, 0), (S, 0), "sctp", 9003, true),
            ((R, 1), (S, 0), "sctp", 9005, true),
        ],
    );
}

/// The three-protocol ports of the "gress" manifests.
fn gress_ports(tcp: u16, udp: u16) -> [Json; 3] {
    [port("tcp", tcp), port("udp", udp), port("sctp", 9003)]
}

/// The "gress" tests' probes shared by both tiers: subtests 1-4.
fn gress_first_four(w: &mut World, name: &str) {
    w.check(
        "allow-gress across protocols",
        &[
            ((G, 0), (R, 0), "tcp", 80, true),
            ((G, 1), (R, 0), "udp", 53, true),
            ((G, 0), (R, 0), "sctp", 9003, true),
            ((R, 0), (G, 0), "tcp", 80, true),
            ((R, 1), (G, 0), "udp", 53, true),
            ((R, 1), (G, 0), "sctp", 9003, true),
        ],
    );
    w.check(
        "allow-gress across protocols at the ports",
        &[
            ((G, 0), (H, 1), "tcp", 8080, true),
            ((G, 1), (H, 1), "tcp", 80, false),
            ((G, 0), (H, 1), "udp", 5353, true),
            ((G, 1), (H, 1), "udp", 53, false),
            ((G, 0), (H, 1), "sctp", 9003, true),
            ((G, 1), (H, 1), "sctp", 9005, false),
            ((H, 0), (G, 1), "tcp", 80, true),
            ((H, 1), (G, 1), "tcp", 8080, false),
            ((H, 0), (G, 1), "udp", 5353, true),
            ((H, 1), (G, 1), "udp", 53, false),
            ((H, 0), (G, 1), "sctp", 9003, true),
            ((H, 1), (G, 1), "sctp", 9005, false),
        ],
    );
    w.swap(name, "egress", 0, 1);
    w.swap(name, "ingress", 0, 1);
    w.check(
        "deny-gress across protocols",
        &[
            ((G, 0), (R, 1), "tcp", 80, false),
            ((G, 1), (R, 1), "udp", 53, false),
            ((G, 0), (R, 1), "sctp", 9003, false),
            ((R, 0), (G, 1), "tcp", 80, false),
            ((R, 1), (G, 1), "udp", 53, false),
            ((R, 1), (G, 1), "sctp", 9003, false),
        ],
    );
    w.check(
        "deny-gress across protocols at the ports",
        &[
            ((G, 0), (S, 0), "tcp", 80, false),
            ((G, 1), (S, 0), "tcp", 8080, true),
            ((G, 0), (S, 0), "udp", 53, false),
            ((G, 1), (S, 0), "udp", 5353, true),
            ((G, 0), (S, 0), "sctp", 9003, false),
            ((G, 1), (S, 0), "sctp", 9005, true),
            ((S, 0), (G, 0), "tcp", 80, false),
            ((S, 1), (G, 0), "tcp", 8080, true),
            ((S, 0), (G, 0), "udp", 53, false),
            ((S, 1), (G, 0), "udp", 5353, true),
            ((S, 0), (G, 0), "sctp", 9003, false),
            ((S, 1), (G, 0), "sctp", 9005, true),
        ],
    );
}

#[test]
fn admin_gress() {
    let mut spec = policy(
        "Admin",
        15,
        G,
        "ingress",
        admin_rules(
            "ingress",
            R,
            (S, &gress_ports(80, 53)),
            (H, &gress_ports(80, 5353)),
        ),
    );
    spec["egress"] = admin_rules(
        "egress",
        R,
        (S, &gress_ports(80, 53)),
        (H, &gress_ports(8080, 5353)),
    );
    let mut w = World::new().with("gress-rules", spec);
    gress_first_four(&mut w, "gress-rules");
    w.swap("gress-rules", "egress", 0, 2);
    w.swap("gress-rules", "ingress", 0, 2);
    w.check(
        "pass-gress across protocols",
        &[
            ((G, 0), (R, 0), "tcp", 80, true),
            ((G, 0), (R, 0), "udp", 5353, true),
            ((G, 0), (R, 0), "sctp", 9003, true),
            ((R, 0), (G, 0), "tcp", 80, true),
            ((R, 1), (G, 0), "udp", 53, true),
            ((R, 1), (G, 0), "sctp", 9003, true),
        ],
    );
    w.swap("gress-rules", "egress", 3, 4);
    w.swap("gress-rules", "ingress", 3, 4);
    let mut probes: Vec<Probe> = Vec::new();
    for (proto, ports) in [
        ("tcp", [80, 8080]),
        ("udp", [53, 5353]),
        ("sctp", [9003, 9005]),
    ] {
        for (k, p) in ports.into_iter().enumerate() {
            probes.push(((G, k), (S, 0), proto, p, true));
            probes.push(((S, k), (G, 0), proto, p, true));
        }
    }
    w.check("pass-gress across protocols at the ports", &probes);
}

/// The inline-CIDR tests of both tiers: the subject may reach slytherin's
/// pods and nothing else; then two pod addresses are accepted first.
fn inline_cidr(mut w: World, name: &str) {
    let all = |to: (&'static str, usize), allowed: bool| -> Vec<Probe> {
        vec![
            ((G, 1), to, "tcp", 80, allowed),
            ((G, 1), to, "udp", 53, allowed),
            ((G, 1), to, "sctp", 9003, allowed),
        ]
    };
    let mut probes = all((R, 0), false);
    probes.extend(all((H, 0), false));
    probes.extend(all((S, 0), true));
    w.check("deny-egress to networks, pods accepted first", &probes);
    w.labels
        .insert(S, json!({"conformance-house": "denied-namespace-label"}));
    w.check(
        "deny-egress once slytherin's namespace no longer matches",
        &all((S, 0), false),
    );
    w.labels
        .insert(S, json!({"conformance-house": "slytherin"}));
    w.check("accepted again once relabelled back", &all((S, 0), true));

    let rule = json!({"action": "Accept", "to": [{"networks": [
        format!("{}/32", pod_ip(R, 0)),
        format!("{}/32", pod_ip(H, 0)),
    ]}]});
    let egress = w.cnp(name)["egress"].as_array_mut().expect("rules");
    egress.insert(0, rule);
    let mut probes = all((R, 0), true);
    probes.extend(all((H, 0), true));
    probes.extend(all((R, 1), false));
    probes.extend(all((H, 1), false));
    w.check("allow-egress to two pod addresses", &probes);
}

fn inline_cidr_rules() -> Json {
    json!([
        {"action": "Accept", "to": [{"pods": {
            "namespaceSelector": by_house(S), "podSelector": by_house(S)}}]},
        {"action": "Deny", "to": [{"networks": ["0.0.0.0/0", "::/0"]}]},
    ])
}

#[test]
fn admin_egress_inline_cidr_peers() {
    let w = World::new().with(
        "inline-cidr-as-peers-example",
        json!({
            "tier": "Admin",
            "priority": 85,
            "subject": {"pods": {"namespaceSelector": by_house(G), "podSelector": by_house(G)}},
            "egress": inline_cidr_rules(),
        }),
    );
    inline_cidr(w, "inline-cidr-as-peers-example");
}

/// A policy of gryffindor's pods toward slytherin's pods, both directions.
fn g_to_s(tier: &str, priority: i32, action: &str) -> Json {
    let peer = json!({"pods": {"namespaceSelector": by_house(S), "podSelector": by_house(S)}});
    json!({
        "tier": tier,
        "priority": priority,
        "subject": {"pods": {"namespaceSelector": by_house(G), "podSelector": by_house(G)}},
        "ingress": [{"action": action, "from": [peer.clone()]}],
        "egress": [{"action": action, "to": [peer]}],
    })
}

#[test]
fn admin_priority_field() {
    let mut w = World::new()
        .with("priority-50-example", g_to_s("Admin", 50, "Deny"))
        .with(
            "old-priority-60-new-priority-40-example",
            g_to_s("Admin", 60, "Pass"),
        )
        .with("default", g_to_s("Baseline", 10, "Accept"));
    w.check(
        "the Deny at 50 wins over the Pass at 60 (ingress)",
        &[
            ((S, 0), (G, 0), "tcp", 80, false),
            ((S, 1), (G, 0), "tcp", 8080, false),
        ],
    );
    w.check(
        "the Deny at 50 wins over the Pass at 60 (egress)",
        &[
            ((G, 0), (S, 0), "tcp", 80, false),
            ((G, 1), (S, 0), "tcp", 8080, false),
        ],
    );
    w.cnp("old-priority-60-new-priority-40-example")["priority"] = json!(40);
    w.check(
        "the Pass now at 40 hands both directions to the Baseline Accept",
        &[
            ((S, 0), (G, 0), "tcp", 80, true),
            ((S, 1), (G, 0), "tcp", 8080, true),
            ((G, 0), (S, 0), "tcp", 80, true),
            ((G, 1), (S, 0), "tcp", 8080, true),
        ],
    );
}

#[test]
fn admin_integration_with_network_policy_and_baseline() {
    let ns_rule = |direction: &str, action: &str| {
        let key = if direction == "ingress" { "from" } else { "to" };
        json!([{"action": action, (key): [{"namespaces": by_house(S)}]}])
    };
    let tiered = |tier: &str| {
        json!({
            "tier": tier,
            "priority": 10,
            "subject": {"namespaces": by_house(G)},
            "ingress": ns_rule("ingress", "Deny"),
            "egress": ns_rule("egress", "Deny"),
        })
    };
    let mut w = World::new()
        .with("pass-example", tiered("Admin"))
        .with("default", tiered("Baseline"));
    w.nps.insert(
        (
            G.to_owned(),
            "allow-gress-from-to-slytherin-to-gryffindor".to_owned(),
        ),
        json!({
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"namespaceSelector": by_house(S)}]}],
            "egress": [{"to": [{"namespaceSelector": by_house(S)}]}],
        }),
    );
    w.check(
        "the Admin Deny wins over the NetworkPolicy (ingress)",
        &[
            ((S, 0), (G, 0), "tcp", 80, false),
            ((S, 1), (G, 0), "tcp", 8080, false),
        ],
    );
    w.check(
        "the Admin Deny wins over the NetworkPolicy (egress)",
        &[
            ((G, 0), (S, 0), "tcp", 80, false),
            ((G, 1), (S, 0), "tcp", 8080, false),
        ],
    );
    w.cnp("pass-example")["ingress"][0]["action"] = json!("Pass");
    w.check(
        "Pass (ingress): the NetworkPolicy allows",
        &[
            ((S, 0), (G, 0), "tcp", 80, true),
            ((S, 1), (G, 0), "tcp", 8080, true),
        ],
    );
    w.cnp("pass-example")["egress"][0]["action"] = json!("Pass");
    w.check(
        "Pass (egress): the NetworkPolicy allows",
        &[
            ((G, 0), (S, 0), "tcp", 80, true),
            ((G, 1), (S, 0), "tcp", 8080, true),
        ],
    );
    w.nps.clear();
    w.check(
        "Pass (ingress) without the NetworkPolicy: the Baseline Deny",
        &[
            ((S, 0), (G, 0), "tcp", 80, false),
            ((S, 1), (G, 0), "tcp", 8080, false),
        ],
    );
    w.check(
        "Pass (egress) without the NetworkPolicy: the Baseline Deny",
        &[
            ((G, 0), (S, 0), "tcp", 80, false),
            ((G, 1), (S, 0), "tcp", 8080, false),
        ],
    );
}

// ------------------------------------------------------------- Baseline tier

#[test]
fn baseline_ingress_tcp() {
    let mut w = baseline_ingress_tcp_world();
    w.check(
        "allow-ingress TCP, rule order",
        &[
            ((R, 0), (G, 0), "tcp", 80, true),
            ((R, 1), (G, 0), "tcp", 8080, true),
        ],
    );
    w.check(
        "allow-ingress TCP at the port",
        &[
            ((H, 0), (G, 1), "tcp", 80, true),
            ((H, 1), (G, 1), "tcp", 8080, false),
        ],
    );
    w.swap("default", "ingress", 0, 1);
    w.check(
        "deny-ingress TCP, rule order",
        &[
            ((R, 0), (G, 1), "tcp", 80, false),
            ((R, 1), (G, 1), "tcp", 8080, false),
        ],
    );
    w.check(
        "deny-ingress TCP at the port",
        &[
            ((S, 0), (G, 0), "tcp", 80, false),
            ((S, 1), (G, 0), "tcp", 8080, true),
        ],
    );
}

fn baseline_ingress_tcp_world() -> World {
    World::new().with(
        "default",
        policy(
            "Baseline",
            10,
            G,
            "ingress",
            baseline_rules(
                "ingress",
                R,
                (S, &[port("tcp", 80)]),
                (H, &[port("tcp", 80)]),
            ),
        ),
    )
}

#[test]
fn baseline_ingress_named_port() {
    let mut w = baseline_ingress_tcp_world();
    w.cnp("default")["ingress"][3]["protocols"] = json!([{"destinationNamedPort": "web"}]);
    w.check(
        "allow-ingress on a named port",
        &[
            ((H, 0), (G, 1), "tcp", 80, true),
            ((H, 1), (G, 1), "tcp", 8080, false),
        ],
    );
}

#[test]
fn baseline_ingress_udp() {
    let mut w = World::new().with(
        "default",
        policy(
            "Baseline",
            10,
            H,
            "ingress",
            baseline_rules(
                "ingress",
                R,
                (S, &[port("udp", 5353)]),
                (G, &[port("udp", 53)]),
            ),
        ),
    );
    w.check(
        "allow-ingress UDP, rule order",
        &[
            ((R, 0), (H, 0), "udp", 53, true),
            ((R, 1), (H, 0), "udp", 5353, true),
        ],
    );
    w.check(
        "allow-ingress UDP at the port",
        &[
            ((G, 0), (H, 1), "udp", 53, true),
            ((G, 1), (H, 1), "udp", 5353, false),
        ],
    );
    w.swap("default", "ingress", 0, 1);
    w.check(
        "deny-ingress UDP, rule order",
        &[
            ((R, 0), (H, 1), "udp", 53, false),
            ((R, 1), (H, 1), "udp", 5353, false),
        ],
    );
    w.check(
        "deny-ingress UDP at the port",
        &[
            ((S, 0), (H, 0), "udp", 5353, false),
            ((S, 1), (H, 0), "udp", 53, true),
        ],
    );
}

#[test]
fn baseline_ingress_sctp() {
    let mut w = World::new().with(
        "default",
        policy(
            "Baseline",
            10,
            R,
            "ingress",
            baseline_rules(
                "ingress",
                G,
                (S, &[port("sctp", 9003)]),
                (H, &[port("sctp", 9003)]),
            ),
        ),
    );
    w.check(
        "allow-ingress SCTP, rule order",
        &[
            ((G, 0), (R, 0), "sctp", 9003, true),
            ((G, 1), (R, 0), "sctp", 9005, true),
        ],
    );
    w.check(
        "allow-ingress SCTP at the port",
        &[
            ((H, 0), (R, 1), "sctp", 9003, true),
            ((H, 1), (R, 1), "sctp", 9005, false),
        ],
    );
    w.swap("default", "ingress", 0, 1);
    w.check(
        "deny-ingress SCTP, rule order",
        &[
            ((G, 0), (R, 1), "sctp", 9003, false),
            ((G, 1), (R, 1), "sctp", 9005, false),
        ],
    );
    w.check(
        "deny-ingress SCTP at the port",
        &[
            ((S, 0), (R, 0), "sctp", 9003, false),
            ((S, 1), (R, 0), "sctp", 9005, true),
        ],
    );
}

#[test]
fn baseline_egress_tcp() {
    let mut w = World::new().with(
        "default",
        policy(
            "Baseline",
            10,
            G,
            "egress",
            baseline_rules(
                "egress",
                R,
                (S, &[port("tcp", 80)]),
                (H, &[port("tcp", 8080)]),
            ),
        ),
    );
    w.check(
        "allow-egress TCP, rule order",
        &[
            ((G, 0), (R, 0), "tcp", 80, true),
            ((G, 1), (R, 0), "tcp", 8080, true),
        ],
    );
    w.check(
        "allow-egress TCP at the port",
        &[
            ((G, 0), (H, 1), "tcp", 8080, true),
            ((G, 1), (H, 1), "tcp", 80, false),
        ],
    );
    w.swap("default", "egress", 0, 1);
    w.check(
        "deny-egress TCP, rule order",
        &[
            ((G, 0), (R, 1), "tcp", 80, false),
            ((G, 1), (R, 1), "tcp", 8080, false),
        ],
    );
    w.check(
        "deny-egress TCP at the port",
        &[
            ((G, 0), (S, 0), "tcp", 80, false),
            ((G, 1), (S, 0), "tcp", 8080, true),
        ],
    );
}

fn baseline_egress_udp_world() -> World {
    World::new().with(
        "default",
        policy(
            "Baseline",
            10,
            H,
            "egress",
            baseline_rules(
                "egress",
                R,
                (S, &[port("udp", 5353)]),
                (G, &[port("udp", 53)]),
            ),
        ),
    )
}

#[test]
fn baseline_egress_udp() {
    let mut w = baseline_egress_udp_world();
    w.check(
        "allow-egress UDP, rule order",
        &[
            ((H, 0), (R, 0), "udp", 53, true),
            ((H, 1), (R, 0), "udp", 5353, true),
        ],
    );
    w.check(
        "allow-egress UDP at the port",
        &[
            ((H, 0), (G, 1), "udp", 53, true),
            ((H, 1), (G, 1), "udp", 5353, false),
        ],
    );
    w.swap("default", "egress", 0, 1);
    w.check(
        "deny-egress UDP, rule order",
        &[
            ((H, 0), (R, 1), "udp", 53, false),
            ((H, 1), (R, 1), "udp", 5353, false),
        ],
    );
    w.check(
        "deny-egress UDP at the port",
        &[
            ((H, 0), (S, 0), "udp", 5353, false),
            ((H, 1), (S, 0), "udp", 53, true),
        ],
    );
}

#[test]
fn baseline_egress_named_port() {
    let mut w = baseline_egress_udp_world();
    w.cnp("default")["egress"][3]["protocols"] = json!([{"destinationNamedPort": "dns"}]);
    w.check(
        "allow-egress on a named port",
        &[
            ((H, 0), (G, 1), "udp", 53, true),
            ((H, 1), (G, 1), "udp", 5353, false),
        ],
    );
}

#[test]
fn baseline_egress_sctp() {
    let mut w = World::new().with(
        "default",
        policy(
            "Baseline",
            10,
            R,
            "egress",
            baseline_rules(
                "egress",
                G,
                (S, &[port("sctp", 9003)]),
                (H, &[port("sctp", 9003)]),
            ),
        ),
    );
    w.check(
        "allow-egress SCTP, rule order",
        &[
            ((R, 0), (G, 0), "sctp", 9003, true),
            ((R, 1), (G, 0), "sctp", 9005, true),
        ],
    );
    w.check(
        "allow-egress SCTP at the port",
        &[
            ((R, 0), (H, 1), "sctp", 9003, true),
            ((R, 1), (H, 1), "sctp", 9005, false),
        ],
    );
    w.swap("default", "egress", 0, 1);
    w.check(
        "deny-egress SCTP, rule order",
        &[
            ((R, 0), (G, 1), "sctp", 9003, false),
            ((R, 1), (G, 1), "sctp", 9005, false),
        ],
    );
    w.check(
        "deny-egress SCTP at the port",
        &[
            ((R, 0), (S, 0), "sctp", 9003, false),
            ((R, 1), (S, 0), "sctp", 9005, true),
        ],
    );
}

#[test]
fn baseline_gress() {
    let mut spec = policy(
        "Baseline",
        10,
        G,
        "ingress",
        baseline_rules(
            "ingress",
            R,
            (S, &gress_ports(80, 53)),
            (H, &gress_ports(80, 5353)),
        ),
    );
    spec["egress"] = baseline_rules(
        "egress",
        R,
        (S, &gress_ports(80, 53)),
        (H, &gress_ports(8080, 5353)),
    );
    let mut w = World::new().with("default", spec);
    gress_first_four(&mut w, "default");
}

#[test]
fn baseline_egress_inline_cidr_peers() {
    let w = World::new().with(
        "default",
        json!({
            "tier": "Baseline",
            "priority": 10,
            "subject": {"namespaces": by_name(G)},
            "egress": inline_cidr_rules(),
        }),
    );
    inline_cidr(w, "default");
}

/// Not an upstream scenario: where two policies of one tier share a
/// priority and both match, the API lets implementations choose; strait's
/// documented choice (by name) decides, in both readings.
#[test]
fn equal_priorities_are_ordered_by_name_in_both_readings() {
    let deny = g_to_s("Admin", 20, "Deny");
    let accept = g_to_s("Admin", 20, "Accept");
    let w = World::new()
        .with("a-deny", deny.clone())
        .with("b-accept", accept.clone());
    w.check(
        "a-deny before b-accept",
        &[
            ((S, 0), (G, 0), "tcp", 80, false),
            ((G, 1), (S, 1), "udp", 53, false),
        ],
    );
    let w = World::new().with("a-accept", accept).with("b-deny", deny);
    w.check(
        "a-accept before b-deny",
        &[
            ((S, 0), (G, 0), "tcp", 80, true),
            ((G, 1), (S, 1), "udp", 53, true),
        ],
    );
}
