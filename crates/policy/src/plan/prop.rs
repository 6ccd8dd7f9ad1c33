//! Property test: for random small clusters and random policies
//! (NetworkPolicies and ClusterNetworkPolicies of both tiers, with equal
//! priorities on purpose), the matrix traced through the planned tables
//! equals the reference reading ([`crate::semantics::matrix`]), cell for
//! cell.

use proptest::prelude::*;
use serde_json::{json, Value as Json};

use super::traced_matrix;
use crate::fixture::Cluster;
use crate::Protocol;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];

/// A pod: (namespace index, name index, node, app, named ports).
type PodSpec = (usize, usize, usize, usize, Vec<(usize, usize, usize)>);

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    (
        0..3usize,
        0..3usize,
        0..2usize,
        0..2usize,
        prop::collection::vec((0..2usize, 0..3usize, 0..2usize), 0..3),
    )
}

fn selector() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(json!({})),
        (0..3usize).prop_map(|p| json!({"matchLabels": {"pod": (["a", "b", "c"][p])}})),
        Just(json!({"matchLabels": {"app": "web"}})),
        Just(json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]})),
        Just(json!({"matchExpressions": [{"key": "team", "operator": "Exists"}]})),
    ]
}

fn ns_selector() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(json!({})),
        (0..3usize).prop_map(|n| json!({"matchLabels": {"ns": NAMESPACES[n]}})),
        Just(json!({"matchLabels": {"team": "a"}})),
        Just(
            json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["x", "z"]}]})
        ),
    ]
}

fn peer() -> impl Strategy<Value = Json> {
    prop_oneof![
        1 => selector().prop_map(|s| json!({"podSelector": s})),
        1 => ns_selector().prop_map(|s| json!({"namespaceSelector": s})),
        1 => (selector(), ns_selector())
            .prop_map(|(p, n)| json!({"podSelector": p, "namespaceSelector": n})),
        2 => (0..4usize, prop::option::of((1..4u8, 2..5u8))).prop_map(|(c, except)| {
            let cidr = if c == 0 {
                "10.0.0.0/16".to_owned()
            } else {
                format!("10.0.{c}.0/24")
            };
            let mut block = json!({"cidr": cidr});
            if let Some((n, m)) = except {
                let inside = if c == 0 { n } else { c as u8 };
                block["except"] = json!([format!("10.0.{inside}.{m}/32")]);
            }
            json!({"ipBlock": block})
        }),
    ]
}

fn port() -> impl Strategy<Value = Json> {
    let protocol = prop_oneof![
        Just(None),
        Just(Some("TCP")),
        Just(Some("UDP")),
        Just(Some("SCTP"))
    ];
    let number = prop_oneof![
        Just(json!(null)),
        Just(json!(80)),
        Just(json!(81)),
        Just(json!("serve")),
        Just(json!("alt")),
    ];
    (protocol, number, any::<bool>()).prop_map(|(proto, number, end)| {
        let mut p = json!({});
        if let Some(proto) = proto {
            p["protocol"] = json!(proto);
        }
        if !number.is_null() {
            if end && number == json!(80) {
                p["endPort"] = json!(81);
            }
            p["port"] = number;
        }
        p
    })
}

fn rule(peer_key: &'static str) -> impl Strategy<Value = Json> {
    (
        prop::option::of(prop::collection::vec(peer(), 0..3)),
        prop::option::of(prop::collection::vec(port(), 0..3)),
    )
        .prop_map(move |(peers, ports)| {
            let mut r = json!({});
            if let Some(peers) = peers {
                r[peer_key] = json!(peers);
            }
            if let Some(ports) = ports {
                r["ports"] = json!(ports);
            }
            r
        })
}

fn policy() -> impl Strategy<Value = (usize, Json)> {
    let types = prop_oneof![
        Just(None),
        Just(Some(json!(["Ingress"]))),
        Just(Some(json!(["Egress"]))),
        Just(Some(json!(["Ingress", "Egress"]))),
    ];
    (
        0..3usize,
        selector(),
        types,
        prop::option::of(prop::collection::vec(rule("from"), 0..3)),
        prop::option::of(prop::collection::vec(rule("to"), 0..3)),
    )
        .prop_map(|(ns, sel, types, ingress, egress)| {
            let mut spec = json!({"podSelector": sel});
            if let Some(t) = types {
                spec["policyTypes"] = t;
            }
            if let Some(i) = ingress {
                spec["ingress"] = json!(i);
            }
            if let Some(e) = egress {
                spec["egress"] = json!(e);
            }
            (ns, spec)
        })
}

fn cnp_peer(egress: bool) -> impl Strategy<Value = Json> {
    let pod_peers = prop_oneof![
        ns_selector().prop_map(|n| json!({"namespaces": n})),
        (ns_selector(), selector())
            .prop_map(|(n, p)| json!({"pods": {"namespaceSelector": n, "podSelector": p}})),
    ];
    let networks = prop::collection::vec(
        prop_oneof![
            Just("10.0.0.0/16"),
            Just("10.0.2.0/24"),
            Just("10.0.1.3/32"),
            Just("10.0.3.2/31"),
            Just("0.0.0.0/0"),
            Just("::/0"),
        ],
        1..3,
    )
    .prop_map(|n| json!({"networks": n}));
    if egress {
        prop_oneof![2 => pod_peers, 1 => networks].boxed()
    } else {
        pod_peers.boxed()
    }
}

fn cnp_protocol() -> impl Strategy<Value = Json> {
    let port = prop_oneof![
        Just(None),
        Just(Some(json!({"number": 80}))),
        Just(Some(json!({"number": 81}))),
        Just(Some(json!({"range": {"start": 79, "end": 80}}))),
        Just(Some(json!({"range": {"start": 80, "end": 81}}))),
    ];
    prop_oneof![
        3 => (0..3usize, port).prop_map(|(p, port)| {
            let mut m = json!({});
            if let Some(port) = port {
                m["destinationPort"] = port;
            }
            json!({(["tcp", "udp", "sctp"][p]): m})
        }),
        1 => (0..2usize).prop_map(|n| json!({"destinationNamedPort": (["serve", "alt"][n])})),
    ]
}

fn cnp_rule(egress: bool) -> impl Strategy<Value = Json> {
    (
        0..3usize,
        prop::collection::vec(cnp_peer(egress), 1..3),
        prop::option::of(prop::collection::vec(cnp_protocol(), 1..3)),
    )
        .prop_map(move |(action, peers, protocols)| {
            let mut r = json!({"action": (["Accept", "Deny", "Pass"][action])});
            r[if egress { "to" } else { "from" }] = json!(peers);
            if let Some(mut protocols) = protocols {
                // Admission refuses named ports beside networks.
                if peers.iter().any(|p| p.get("networks").is_some()) {
                    protocols.retain(|p| p.get("destinationNamedPort").is_none());
                }
                if !protocols.is_empty() {
                    r["protocols"] = json!(protocols);
                }
            }
            r
        })
}

/// A ClusterNetworkPolicy spec; priorities 0..3 so that ties happen.
fn cnp() -> impl Strategy<Value = Json> {
    let subject = prop_oneof![
        ns_selector().prop_map(|n| json!({"namespaces": n})),
        (ns_selector(), selector())
            .prop_map(|(n, p)| json!({"pods": {"namespaceSelector": n, "podSelector": p}})),
    ];
    (
        any::<bool>(),
        0..3i32,
        subject,
        prop::collection::vec(cnp_rule(false), 0..3),
        prop::collection::vec(cnp_rule(true), 0..3),
    )
        .prop_map(|(admin, priority, subject, ingress, egress)| {
            json!({
                "tier": if admin { "Admin" } else { "Baseline" },
                "priority": priority,
                "subject": subject,
                "ingress": ingress,
                "egress": egress,
            })
        })
}

/// The cluster: pods by (namespace, name), later specs winning.
fn cluster(
    pods: &[PodSpec],
    teams: &[bool; 3],
    policies: &[(usize, Json)],
    cnps: &[Json],
) -> Cluster {
    let mut c = Cluster::default();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        c.namespace(
            ns,
            json!({"ns": ns, "team": if teams[i] { "a" } else { "b" }}),
        );
    }
    for (ns, name, node, app, ports) in pods {
        let names = ["a", "b", "c"];
        let ports: Vec<(&str, &str, i32)> = ports
            .iter()
            .map(|(n, p, num)| {
                (
                    ["serve", "alt"][*n],
                    ["TCP", "UDP", "SCTP"][*p],
                    [80, 81][*num],
                )
            })
            .collect();
        // One name per protocol: the API refuses duplicates.
        let mut seen = std::collections::BTreeSet::new();
        let ports: Vec<(&str, &str, i32)> =
            ports.into_iter().filter(|p| seen.insert(p.0)).collect();
        c.pod(
            NAMESPACES[*ns],
            names[*name],
            json!({"pod": names[*name], "app": (["web", "db"][*app])}),
            ["n0", "n1"][*node],
            &format!("10.0.{}.{}", ns + 1, name + 2),
            &ports,
        );
    }
    for (i, (ns, spec)) in policies.iter().enumerate() {
        c.policy(NAMESPACES[*ns], &format!("p{i}"), spec.clone());
    }
    for (i, spec) in cnps.iter().enumerate() {
        c.cluster_policy(&format!("c{i}"), spec.clone());
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_traced_matrix_is_the_reference_reading(
        pods in prop::collection::vec(pod_spec(), 1..7),
        teams in any::<[bool; 3]>(),
        policies in prop::collection::vec(policy(), 0..4),
        cnps in prop::collection::vec(cnp(), 0..4),
    ) {
        let c = cluster(&pods, &teams, &policies, &cnps);
        let ports = [80, 81];
        let protocols = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
        let traced = traced_matrix(&c.state, &ports, &protocols).expect("traced");
        let reference = crate::semantics::matrix(&c.state, &ports, &protocols);
        prop_assert_eq!(&traced.pods, &reference.pods);
        let differ: Vec<String> = traced
            .cells
            .iter()
            .zip(&reference.cells)
            .filter(|(t, r)| t != r)
            .map(|(t, r)| format!("{} -> {} {}/{}: traced {} reference {}",
                t.from, t.to, t.port, t.protocol.as_str(), t.allowed, r.allowed))
            .collect();
        prop_assert!(
            differ.is_empty(),
            "{:#?}\npolicies: {:#}\ncluster policies: {:#}",
            differ,
            json!(policies),
            json!(cnps)
        );
    }
}

/// One change to the cluster, for the incremental planner.
#[derive(Clone, Debug)]
enum Step {
    /// (namespace, name index 0..5, node, app, address: 0 its own v4, 1
    /// its own v6, 2 one shared by every pod that draws it, extra label,
    /// named ports).
    Put(
        usize,
        usize,
        usize,
        usize,
        usize,
        bool,
        Vec<(usize, usize, usize)>,
    ),
    Remove(usize, usize),
    /// A namespace's team label, and whether it carries another label.
    Namespace(usize, bool, bool),
    DeleteNamespace(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (
            0..3usize,
            0..5usize,
            0..2usize,
            0..3usize,
            prop_oneof![6 => Just(0usize), 2 => Just(1usize), 1 => Just(2usize)],
            any::<bool>(),
            prop::collection::vec((0..2usize, 0..3usize, 0..2usize), 0..3),
        )
            .prop_map(|(ns, n, node, app, v6, extra, ports)| {
                Step::Put(ns, n, node, app, v6, extra, ports)
            }),
        1 => (0..3usize, 0..5usize).prop_map(|(ns, n)| Step::Remove(ns, n)),
        1 => (0..3usize, any::<bool>(), any::<bool>()).prop_map(|(ns, t, e)| Step::Namespace(ns, t, e)),
        1 => (0..3usize).prop_map(Step::DeleteNamespace),
    ]
}

/// Apply `step` to `c`; the keys of the objects it touched.
fn apply_step(c: &mut Cluster, step: &Step) -> Vec<strait_model::ObjectKey> {
    use strait_model::{Kind, ObjectKey};
    let names = ["a", "b", "c", "d", "e"];
    match step {
        Step::Put(ns, n, node, app, v6, extra, ports) => {
            let ports: Vec<(&str, &str, i32)> = ports
                .iter()
                .map(|(n, p, num)| {
                    (
                        ["serve", "alt"][*n],
                        ["TCP", "UDP", "SCTP"][*p],
                        [80, 81][*num],
                    )
                })
                .collect();
            let mut seen = std::collections::BTreeSet::new();
            let ports: Vec<(&str, &str, i32)> =
                ports.into_iter().filter(|p| seen.insert(p.0)).collect();
            let mut labels = json!({"pod": names[*n], "app": (["web", "db", "cache"][*app])});
            if *extra {
                labels["team"] = json!("x");
            }
            let ip = match v6 {
                0 => format!("10.0.{}.{}", ns + 1, n + 2),
                1 => format!("fd00::{}:{}", ns + 1, n + 2),
                _ => "10.0.9.9".to_owned(),
            };
            c.pod(
                NAMESPACES[*ns],
                names[*n],
                labels,
                ["n0", "n1"][*node],
                &ip,
                &ports,
            );
            vec![ObjectKey {
                kind: Kind::Pod,
                namespace: NAMESPACES[*ns].into(),
                name: names[*n].into(),
            }]
        }
        Step::Remove(ns, n) => {
            let key = ObjectKey {
                kind: Kind::Pod,
                namespace: NAMESPACES[*ns].into(),
                name: names[*n].into(),
            };
            c.state.remove(&key);
            vec![key]
        }
        Step::Namespace(ns, team, extra) => {
            let mut labels = json!({"ns": NAMESPACES[*ns], "team": if *team { "a" } else { "b" }});
            if *extra {
                labels["extra"] = json!("yes");
            }
            c.namespace(NAMESPACES[*ns], labels);
            vec![ObjectKey {
                kind: Kind::Namespace,
                namespace: String::new(),
                name: NAMESPACES[*ns].into(),
            }]
        }
        Step::DeleteNamespace(ns) => {
            let key = ObjectKey {
                kind: Kind::Namespace,
                namespace: String::new(),
                name: NAMESPACES[*ns].into(),
            };
            c.state.remove(&key);
            vec![key]
        }
    }
}

/// `table` with `tx` applied, as the kernel would hold it (notes aside).
fn applied(table: &strait_nft::Table, tx: &strait_nft::Transaction) -> strait_nft::Table {
    use strait_nft::{Chain, Op};
    let mut t = table.clone();
    for op in &tx.ops {
        match op {
            Op::AddTable => {}
            Op::DeleteTable => {
                t.sets.clear();
                t.chains.clear();
            }
            Op::AddSet { name, set } => {
                t.sets.entry(name.clone()).or_insert_with(|| {
                    let mut s = set.clone();
                    s.elements.clear();
                    s
                });
            }
            Op::DeleteSet(name) => {
                t.sets.shift_remove(name);
            }
            Op::AddChain { name, base } => {
                t.chains.entry(name.clone()).or_insert_with(|| Chain {
                    base: *base,
                    ..Chain::default()
                });
            }
            Op::FlushChain(name) => t.chains[name.as_str()].rules.clear(),
            Op::DeleteChain(name) => {
                t.chains.shift_remove(name);
            }
            Op::AddRule { chain, rule } => t.chains[chain.as_str()].rules.push(rule.clone()),
            Op::AddElements { set, elements } => {
                for (k, e) in elements {
                    t.sets[set.as_str()].elements.insert(k.clone(), e.clone());
                }
            }
            Op::DeleteElements { set, keys } => {
                for k in keys {
                    t.sets[set.as_str()].elements.remove(k);
                }
            }
        }
    }
    t
}

fn without_notes(t: &strait_nft::Table) -> strait_nft::Table {
    let mut t = t.clone();
    for c in t.chains.values_mut() {
        c.note = None;
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random pod and namespace changes applied one by one through the
    /// incremental planner give exactly the full plan of the same state
    /// (tables, stats, chain descriptions), and its transactions bring the
    /// previous tables to it.
    #[test]
    fn incremental_changes_give_the_full_plan(
        pods in prop::collection::vec(pod_spec(), 0..7),
        teams in any::<[bool; 3]>(),
        policies in prop::collection::vec(policy(), 0..4),
        steps in prop::collection::vec(step(), 1..12),
    ) {
        use super::Incremental;
        let mut c = cluster(&pods, &teams, &policies, &[]);
        let mut planners: Vec<Incremental> =
            ["n0", "n1"].iter().map(|n| Incremental::new(&c.state, n)).collect();
        for (i, s) in steps.iter().enumerate() {
            let keys = apply_step(&mut c, s);
            for planner in &mut planners {
                let before = [planner.plan().v4.clone(), planner.plan().v6.clone()];
                let Some(txs) = planner.update(&c.state, &keys) else {
                    // Planned in full, as the applier then does: only
                    // once an address has been shared, and before the
                    // planner changed anything.
                    prop_assert!(!planner.spoilt(), "step {} {:?}: spoilt", i, s);
                    prop_assert!(
                        steps[..=i].iter().any(|s| matches!(s, Step::Put(_, _, _, _, 2, _, _))),
                        "step {} {:?}: no incremental path", i, s
                    );
                    *planner = Incremental::new(&c.state, planner.node());
                    continue;
                };
                let full = Incremental::new(&c.state, planner.node());
                let (inc, reference) = (planner.plan(), full.plan());
                for (j, (got, want)) in inc.tables().into_iter().zip(reference.tables()).enumerate() {
                    prop_assert_eq!(got, want, "step {} {:?} node {} family {}", i, s, planner.node(), j);
                    let kernel = applied(&before[j], &txs[j]);
                    prop_assert_eq!(without_notes(&kernel), without_notes(want),
                        "the transaction, step {} {:?} node {} family {}: {:#?}", i, s, planner.node(), j, txs[j].ops);
                }
                prop_assert_eq!(inc.stats, reference.stats, "stats, step {} {:?}", i, s);
                prop_assert_eq!(&inc.chains, &reference.chains, "descriptions, step {} {:?}", i, s);
            }
        }
    }
}
