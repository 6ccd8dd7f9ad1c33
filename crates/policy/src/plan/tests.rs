//! The planner held to hand-worked cases on the 3×3 cluster (namespaces
//! x, y, z; pods a, b, c; b maps `serve` to 80, c to 81), each traced
//! through the planned tables.

use serde_json::json;

use super::*;
use crate::fixture::Cluster;

const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

fn matrix(c: &Cluster) -> Matrix {
    traced_matrix(&c.state, &[80, 81], &ALL).expect("traced")
}

/// Whether `from` may open a connection to `to` on `port`/`protocol`.
fn allowed(m: &Matrix, from: &str, to: &str, port: u16, protocol: Protocol) -> bool {
    m.cells
        .iter()
        .find(|c| c.from == from && c.to == to && c.port == port && c.protocol == protocol)
        .unwrap_or_else(|| panic!("no cell {from} -> {to} {port}/{protocol:?}"))
        .allowed
}

/// The cells that are denied, as `from->to:port/proto`.
fn denied(m: &Matrix) -> Vec<String> {
    m.cells
        .iter()
        .filter(|c| !c.allowed)
        .map(|c| format!("{}->{}:{}/{}", c.from, c.to, c.port, c.protocol.as_str()))
        .collect()
}

#[test]
fn without_policies_everything_is_allowed_and_cells_come_in_matrix_order() {
    let c = Cluster::three_by_three();
    let m = matrix(&c);
    assert_eq!(m.pods.len(), 9);
    assert_eq!(m.cells.len(), 9 * 9 * 3 * 2);
    assert!(denied(&m).is_empty());
    // rows x cols x protocol x port
    let first: Vec<(String, String, Protocol, u16)> = m.cells[..7]
        .iter()
        .map(|c| (c.from.clone(), c.to.clone(), c.protocol, c.port))
        .collect();
    assert_eq!(first[0], ("x/a".into(), "x/a".into(), Protocol::Tcp, 80));
    assert_eq!(first[1], ("x/a".into(), "x/a".into(), Protocol::Tcp, 81));
    assert_eq!(first[2], ("x/a".into(), "x/a".into(), Protocol::Udp, 80));
    assert_eq!(first[6], ("x/a".into(), "x/b".into(), Protocol::Tcp, 80));
}

#[test]
fn deny_all_ingress_isolates_only_the_namespace_and_only_ingress() {
    let mut c = Cluster::three_by_three();
    c.policy("x", "deny", json!({"podSelector": {}}));
    let m = matrix(&c);
    for from in ["x/a", "y/b", "z/c"] {
        for to in ["x/a", "x/b", "x/c"] {
            assert!(!allowed(&m, from, to, 80, Protocol::Tcp), "{from}->{to}");
        }
    }
    // Its own address too (as the reference reading judges it); x's pods
    // still send out.
    assert!(!allowed(&m, "x/a", "x/a", 80, Protocol::Tcp));
    assert!(allowed(&m, "x/a", "y/a", 81, Protocol::Udp));
    assert_eq!(denied(&m).len(), 3 * 9 * 3 * 2);
}

#[test]
fn rules_add_up_and_ports_and_protocols_are_exact() {
    let mut c = Cluster::three_by_three();
    c.policy(
        "x",
        "web",
        json!({"podSelector": {"matchLabels": {"pod": "b"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}],
                            "ports": [{"port": 80}]}]}),
    );
    c.policy(
        "x",
        "udp",
        json!({"podSelector": {"matchLabels": {"pod": "b"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                            "ports": [{"port": 81, "protocol": "UDP"}]}]}),
    );
    let m = matrix(&c);
    assert!(allowed(&m, "x/a", "x/b", 80, Protocol::Tcp));
    assert!(!allowed(&m, "x/a", "x/b", 81, Protocol::Tcp));
    assert!(!allowed(&m, "x/a", "x/b", 80, Protocol::Udp));
    assert!(!allowed(&m, "x/c", "x/b", 80, Protocol::Tcp));
    // The podSelector alone means the policy's own namespace.
    assert!(!allowed(&m, "y/a", "x/b", 80, Protocol::Tcp));
    // The second policy adds y's pods on 81/UDP.
    assert!(allowed(&m, "y/a", "x/b", 81, Protocol::Udp));
    assert!(allowed(&m, "y/c", "x/b", 81, Protocol::Udp));
    assert!(!allowed(&m, "y/c", "x/b", 80, Protocol::Udp));
    assert!(!allowed(&m, "z/c", "x/b", 81, Protocol::Udp));
    // Others are not isolated.
    assert!(allowed(&m, "z/c", "x/a", 81, Protocol::Sctp));
}

#[test]
fn a_peer_with_both_selectors_is_an_and_and_two_peers_an_or() {
    let mut c = Cluster::three_by_three();
    c.policy(
        "x",
        "and",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                      "podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
    );
    c.policy(
        "x",
        "or",
        json!({"podSelector": {"matchLabels": {"pod": "b"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                                     {"podSelector": {"matchLabels": {"pod": "c"}}}]}]}),
    );
    let m = matrix(&c);
    assert!(allowed(&m, "y/c", "x/a", 80, Protocol::Tcp));
    assert!(!allowed(&m, "y/a", "x/a", 80, Protocol::Tcp));
    assert!(!allowed(&m, "x/c", "x/a", 80, Protocol::Tcp));
    assert!(!allowed(&m, "z/c", "x/a", 80, Protocol::Tcp));
    assert!(allowed(&m, "y/a", "x/b", 80, Protocol::Tcp));
    assert!(allowed(&m, "x/c", "x/b", 80, Protocol::Udp));
    assert!(!allowed(&m, "z/c", "x/b", 80, Protocol::Tcp));
    assert!(!allowed(&m, "x/a", "x/b", 80, Protocol::Tcp));
}

#[test]
fn ip_blocks_cut_out_their_exceptions() {
    let mut c = Cluster::three_by_three();
    // y is 10.0.2.0/24: allow it but y/b (10.0.2.3).
    c.policy(
        "x",
        "cidr",
        json!({"podSelector": {},
               "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.2.0/24",
                                                   "except": ["10.0.2.3/32"]}}]}]}),
    );
    let m = matrix(&c);
    assert!(allowed(&m, "y/a", "x/a", 80, Protocol::Tcp));
    assert!(allowed(&m, "y/c", "x/c", 81, Protocol::Sctp));
    assert!(!allowed(&m, "y/b", "x/a", 80, Protocol::Tcp));
    assert!(!allowed(&m, "z/a", "x/a", 80, Protocol::Tcp));
}

#[test]
fn named_ports_are_resolved_per_destination_pod() {
    let mut c = Cluster::three_by_three();
    c.policy(
        "x",
        "serve",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve"}]}]}),
    );
    // Egress from y/a to pods by name: each destination's own number.
    c.policy(
        "y",
        "out",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"port": "serve", "protocol": "TCP"}]}]}),
    );
    let m = matrix(&c);
    assert!(allowed(&m, "z/a", "x/b", 80, Protocol::Tcp));
    assert!(!allowed(&m, "z/a", "x/b", 81, Protocol::Tcp));
    assert!(allowed(&m, "z/a", "x/c", 81, Protocol::Tcp));
    assert!(!allowed(&m, "z/a", "x/c", 80, Protocol::Tcp));
    // x/a has no port of that name: nothing reaches it.
    assert!(!allowed(&m, "z/a", "x/a", 80, Protocol::Tcp));
    assert!(!allowed(&m, "z/a", "x/b", 80, Protocol::Udp));
    assert!(allowed(&m, "y/a", "z/b", 80, Protocol::Tcp));
    assert!(!allowed(&m, "y/a", "z/b", 81, Protocol::Tcp));
    assert!(allowed(&m, "y/a", "z/c", 81, Protocol::Tcp));
    assert!(!allowed(&m, "y/a", "z/a", 80, Protocol::Tcp));
    assert!(!allowed(&m, "y/a", "z/c", 81, Protocol::Udp));
}

#[test]
fn end_port_opens_a_range_and_egress_defaults_from_its_rules() {
    let mut c = Cluster::three_by_three();
    // No policyTypes: Ingress, and Egress because there are egress rules.
    c.policy(
        "z",
        "range",
        json!({"podSelector": {"matchLabels": {"pod": "c"}},
               "egress": [{"to": [{"namespaceSelector": {}}],
                           "ports": [{"port": 81, "endPort": 90, "protocol": "UDP"}]}]}),
    );
    let m = matrix(&c);
    assert!(allowed(&m, "z/c", "x/a", 81, Protocol::Udp));
    assert!(!allowed(&m, "z/c", "x/a", 80, Protocol::Udp));
    assert!(!allowed(&m, "z/c", "x/a", 81, Protocol::Tcp));
    // Ingress is isolated too, with no rule: nothing comes in.
    assert!(!allowed(&m, "x/a", "z/c", 81, Protocol::Udp));
    assert!(allowed(&m, "x/a", "z/b", 81, Protocol::Udp));
}

#[test]
fn what_cannot_be_honoured_is_reported_and_opens_nothing() {
    let mut c = Cluster::three_by_three();
    c.policy(
        "x",
        "bad",
        json!({"podSelector": {},
               "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}),
    );
    let analysis = Analysis::new(&c.state);
    let problems: Vec<String> = analysis.problems().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        problems,
        ["NetworkPolicy x/bad: spec.ingress[0].ports[0].protocol: \"ICMP\" is not TCP, UDP or SCTP"]
    );
    let m = matrix(&c);
    assert!(!allowed(&m, "y/a", "x/a", 80, Protocol::Tcp));
    assert!(!allowed(&m, "y/a", "x/b", 80, Protocol::Udp));
}

#[test]
fn host_network_pods_are_not_selected() {
    let mut c = Cluster::three_by_three();
    c.pod_with(
        "x",
        "h",
        json!({"pod": "a"}),
        "n0",
        "192.168.0.1",
        &[],
        true,
    );
    c.policy(
        "x",
        "deny",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}}),
    );
    let analysis = Analysis::new(&c.state);
    let plan = analysis.plan("n0");
    let ingress = &plan.v4.sets["ingress"];
    let keys: Vec<&Vec<Value>> = ingress.elements.keys().collect();
    assert_eq!(keys, [&vec![Value::Addr("10.0.1.2".parse().unwrap())]]);
}

#[test]
fn a_label_change_moves_a_pod_by_one_map_element() {
    let mut c = Cluster::three_by_three();
    c.policy(
        "x",
        "a-only",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"podSelector": {}}]}]}),
    );
    c.policy("x", "deny", json!({"podSelector": {}}));
    // x/d keeps the class x/c leaves (the last member leaving takes the
    // class's chain and sets with it).
    c.pod("x", "d", json!({"pod": "d"}), "n0", "10.0.1.9", &[]);
    let before = plan(&c.state, "n0");
    // x/c (n0) becomes an `a`: it joins x/a's class.
    c.pod(
        "x",
        "c",
        json!({"pod": "a"}),
        "n0",
        "10.0.1.4",
        &[("serve", "TCP", 81)],
    );
    let after = plan(&c.state, "n0");
    let tx = strait_nft::diff::diff(&before.v4, &after.v4);
    let summary: Vec<String> = tx
        .ops
        .iter()
        .map(|op| match op {
            strait_nft::Op::AddElements { set, elements } => {
                format!("add {set} {}", elements.len())
            }
            strait_nft::Op::DeleteElements { set, keys } => format!("delete {set} {}", keys.len()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(summary, ["delete ingress 1", "add ingress 1"], "{tx:#?}");
}

#[test]
fn elements_of_interval_sets_never_overlap() {
    let mut c = Cluster::three_by_three();
    c.policy(
        "x",
        "many",
        json!({"podSelector": {},
               "ingress": [
                   {"from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}], "ports": [{"port": 80, "endPort": 100}]},
                   {"from": [{"podSelector": {}}], "ports": [{"port": 90, "endPort": 200}, {"port": 95}]},
                   {"from": [{"ipBlock": {"cidr": "10.0.1.0/24"}}], "ports": [{"protocol": "TCP"}]}
               ]}),
    );
    let plan = plan(&c.state, "n0");
    for (name, set) in &plan.v4.sets {
        if !set.flags.interval {
            continue;
        }
        let keys: Vec<&Vec<Value>> = set.elements.keys().collect();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                let overlap = a.iter().zip(b.iter()).all(|(x, y)| overlaps(x, y));
                assert!(!overlap, "{name}: {a:?} and {b:?} overlap");
            }
        }
    }
    let m = matrix(&c);
    assert!(allowed(&m, "x/b", "x/a", 81, Protocol::Tcp));
    assert!(!allowed(&m, "x/b", "x/a", 81, Protocol::Udp));
    assert!(allowed(&m, "y/b", "x/a", 81, Protocol::Tcp));
}

fn overlaps(a: &Value, b: &Value) -> bool {
    let range = |v: &Value| -> (u128, u128) {
        match v {
            Value::Net(n) => match n {
                IpNet::V4(n) => (
                    u128::from(u32::from(n.network())),
                    u128::from(u32::from(n.broadcast())),
                ),
                IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
            },
            Value::Port(p) => (u128::from(*p), u128::from(*p)),
            Value::PortRange(lo, hi) => (u128::from(*lo), u128::from(*hi)),
            Value::Proto(p) => (u128::from(*p), u128::from(*p)),
            other => panic!("unexpected {other:?}"),
        }
    };
    let (a, b) = (range(a), range(b));
    a.0 <= b.1 && b.0 <= a.1
}

// ------------------------------------------------- ClusterNetworkPolicy tiers

/// Every cell of the traced matrix equals the reference reading's.
fn agrees_with_reference(c: &Cluster) -> Matrix {
    let traced = matrix(c);
    let reference = crate::semantics::matrix(&c.state, &[80, 81], &ALL);
    let differ: Vec<String> = traced
        .cells
        .iter()
        .zip(&reference.cells)
        .filter(|(t, r)| t != r)
        .map(|(t, r)| {
            format!(
                "{} -> {} {}/{}: traced {} reference {}",
                t.from,
                t.to,
                t.port,
                t.protocol.as_str(),
                t.allowed,
                r.allowed
            )
        })
        .collect();
    assert!(differ.is_empty(), "{differ:#?}");
    traced
}

#[test]
fn admin_deny_beats_network_policy_and_pass_hands_over_to_it() {
    let mut c = Cluster::three_by_three();
    // x's NetworkPolicy lets y in on every port.
    c.policy(
        "x",
        "from-y",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    c.cluster_policy(
        "admin",
        json!({"tier": "Admin", "priority": 1,
               "subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
               "ingress": [
                   {"action": "Pass", "from": [{"pods": {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "a"}}}}]},
                   {"action": "Deny", "from": [{"namespaces": {"matchLabels": {"ns": "y"}}}],
                    "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]},
                   {"action": "Accept", "from": [{"namespaces": {"matchLabels": {"ns": "z"}}}],
                    "protocols": [{"udp": {"destinationPort": {"range": {"start": 80, "end": 81}}}}]}
               ]}),
    );
    let m = agrees_with_reference(&c);
    // y/a is passed: the NetworkPolicy allows it everywhere.
    assert!(allowed(&m, "y/a", "x/b", 80, Protocol::Tcp));
    // y/b: denied on TCP 80 by the Admin tier, else the NetworkPolicy.
    assert!(!allowed(&m, "y/b", "x/b", 80, Protocol::Tcp));
    assert!(allowed(&m, "y/b", "x/b", 81, Protocol::Tcp));
    // z is accepted on UDP 80-81 though the NetworkPolicy isolates x.
    assert!(allowed(&m, "z/c", "x/a", 81, Protocol::Udp));
    assert!(!allowed(&m, "z/c", "x/a", 81, Protocol::Tcp));
}

#[test]
fn baseline_applies_only_where_no_network_policy_isolates() {
    let mut c = Cluster::three_by_three();
    c.cluster_policy(
        "baseline",
        json!({"tier": "Baseline", "priority": 5,
               "subject": {"namespaces": {}},
               "egress": [{"action": "Deny", "to": [{"networks": ["10.0.2.0/24"]}]}]}),
    );
    // z/a's egress is isolated by a NetworkPolicy that allows y: the
    // Baseline tier does not apply to it.
    c.policy(
        "z",
        "to-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    let m = agrees_with_reference(&c);
    assert!(!allowed(&m, "x/a", "y/b", 80, Protocol::Tcp));
    assert!(allowed(&m, "x/a", "z/b", 80, Protocol::Tcp));
    assert!(allowed(&m, "z/a", "y/b", 80, Protocol::Tcp));
    assert!(!allowed(&m, "z/a", "x/b", 80, Protocol::Tcp));
}

#[test]
fn an_egress_accept_still_meets_the_destinations_ingress() {
    let mut c = Cluster::three_by_three();
    c.cluster_policy(
        "out",
        json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
               "egress": [{"action": "Accept", "to": [{"networks": ["0.0.0.0/0"]}]}]}),
    );
    c.cluster_policy(
        "in",
        json!({"tier": "Admin", "priority": 2, "subject": {"namespaces": {"matchLabels": {"ns": "y"}}},
               "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"ns": "x"}}}]}]}),
    );
    let m = agrees_with_reference(&c);
    assert!(!allowed(&m, "x/a", "y/a", 80, Protocol::Tcp));
    assert!(allowed(&m, "x/a", "z/a", 80, Protocol::Tcp));
}

#[test]
fn named_ports_resolve_on_each_destination_in_both_directions() {
    let mut c = Cluster::three_by_three();
    // b serves `serve` on 80, c on 81, a has none.
    c.cluster_policy(
        "named",
        json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
               "ingress": [
                   {"action": "Accept", "from": [{"namespaces": {}}], "protocols": [{"destinationNamedPort": "serve"}]},
                   {"action": "Deny", "from": [{"namespaces": {}}]}],
               "egress": [
                   {"action": "Deny", "to": [{"namespaces": {"matchLabels": {"ns": "y"}}}], "protocols": [{"destinationNamedPort": "serve"}]}]}),
    );
    let m = agrees_with_reference(&c);
    assert!(allowed(&m, "z/a", "x/b", 80, Protocol::Tcp));
    assert!(!allowed(&m, "z/a", "x/b", 81, Protocol::Tcp));
    assert!(allowed(&m, "z/a", "x/c", 81, Protocol::Tcp));
    assert!(!allowed(&m, "z/a", "x/a", 80, Protocol::Tcp));
    assert!(!allowed(&m, "x/a", "y/b", 80, Protocol::Tcp));
    assert!(allowed(&m, "x/a", "y/b", 81, Protocol::Tcp));
    assert!(!allowed(&m, "x/a", "y/c", 81, Protocol::Tcp));
}

#[test]
fn unreadable_cluster_policies_fail_closed_alike_in_both_readings() {
    let mut c = Cluster::three_by_three();
    // A bad peer selector in an Accept: the rule matches nothing.
    c.cluster_policy(
        "bad-accept",
        json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
               "ingress": [
                   {"action": "Accept", "from": [{"namespaces": {"matchExpressions": [{"key": "ns", "operator": "Bogus"}]}}]},
                   {"action": "Deny", "from": [{"namespaces": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    // A bad port in a Pass: the rule denies everything.
    c.cluster_policy(
        "bad-pass",
        json!({"tier": "Baseline", "priority": 1, "subject": {"namespaces": {"matchLabels": {"ns": "z"}}},
               "egress": [{"action": "Pass", "to": [{"namespaces": {}}],
                           "protocols": [{"tcp": {"destinationPort": {"number": 0}}}]}]}),
    );
    // No subject: every pod, with its Deny rules only.
    c.cluster_policy(
        "no-subject",
        json!({"tier": "Platform", "priority": 3, "subject": {},
               "ingress": [
                   {"action": "Accept", "from": [{"namespaces": {}}]},
                   {"action": "Deny", "from": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "c"}}}}],
                    "protocols": [{"udp": {}}]}]}),
    );
    let analysis = Analysis::new(&c.state);
    let problems: Vec<String> = analysis.problems().iter().map(|e| e.to_string()).collect();
    for expected in [
        "ClusterNetworkPolicy bad-accept: spec.ingress[0].from[0].namespaces:",
        "ClusterNetworkPolicy bad-pass: spec.egress[0].protocols[0].tcp.destinationPort: 0..0 is not a port range",
        "ClusterNetworkPolicy no-subject: spec.tier:",
        "ClusterNetworkPolicy no-subject: spec.subject:",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected}\n{problems:#?}"
        );
    }
    let m = agrees_with_reference(&c);
    assert!(!allowed(&m, "y/a", "x/a", 80, Protocol::Tcp));
    assert!(allowed(&m, "x/b", "x/a", 80, Protocol::Tcp));
    assert!(!allowed(&m, "z/a", "x/b", 80, Protocol::Tcp));
    assert!(!allowed(&m, "x/c", "y/a", 80, Protocol::Udp));
    assert!(allowed(&m, "x/c", "y/a", 80, Protocol::Tcp));
}

#[test]
fn node_peers_are_the_nodes_addresses() {
    let mut c = Cluster::three_by_three();
    c.node("n0", json!({"role": "infra"}), "192.168.0.1");
    c.node("n1", json!({}), "192.168.0.2");
    c.cluster_policy(
        "no-infra",
        json!({"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
               "egress": [{"action": "Deny", "to": [{"nodes": {"matchLabels": {"role": "infra"}}}]}]}),
    );
    let plan = plan(&c.state, "n1");
    let node = Node::default();
    let through = |daddr: &str| {
        // x/b (10.0.1.3) is on n1.
        let packet = Packet::new(
            "pod",
            Protocol::Tcp.number(),
            "10.0.1.3".parse().unwrap(),
            40000,
            daddr.parse().unwrap(),
            80,
        );
        let outcomes = trace(&plan.tables(), &node, &packet).expect("traced");
        outcomes.iter().all(|o| o.fate.passes())
    };
    assert!(!through("192.168.0.1"));
    assert!(through("192.168.0.2"));
    // The reference reading agrees, seen from a hostNetwork pod on n0.
    c.pod_with("x", "agent", json!({}), "n0", "192.168.0.1", &[], true);
    c.pod_with("x", "agent-2", json!({}), "n1", "192.168.0.2", &[], true);
    let to = |name: &str| PodRef {
        namespace: "x".into(),
        name: name.into(),
    };
    let from = to("b");
    assert!(!crate::semantics::allowed(
        &c.state,
        &from,
        &to("agent"),
        80,
        Protocol::Tcp
    ));
    assert!(crate::semantics::allowed(
        &c.state,
        &from,
        &to("agent-2"),
        80,
        Protocol::Tcp
    ));
}

#[test]
fn the_cost_per_packet_does_not_grow_with_the_number_of_cluster_policies() {
    // 1 and 200 Admin policies over the same pods: the forward chain and
    // every chain a packet can go through keep their number of rules.
    let rules_on_the_longest_path = |n: usize| {
        let mut c = Cluster::three_by_three();
        for i in 0..n {
            let action = ["Accept", "Deny", "Pass"][i % 3];
            let pod = ["a", "b", "c"][i % 3];
            c.cluster_policy(
                &format!("p{i:03}"),
                json!({"tier": if i % 2 == 0 { "Admin" } else { "Baseline" }, "priority": i % 7,
                       "subject": {"namespaces": {}},
                       "ingress": [{"action": action,
                                    "from": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": pod}}}}],
                                    "protocols": [{"tcp": {"destinationPort": {"number": 1000 + i as i32}}}]}]}),
            );
        }
        let plan = plan(&c.state, "n0");
        plan.v4
            .chains
            .values()
            .map(|chain| chain.rules.len())
            .max()
            .unwrap_or(0)
    };
    assert_eq!(rules_on_the_longest_path(1), rules_on_the_longest_path(200));
}
