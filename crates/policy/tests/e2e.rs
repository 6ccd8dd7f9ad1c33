//! The upstream Kubernetes e2e NetworkPolicy cases
//! (kubernetes/kubernetes `test/e2e/network/netpol/network_policy.go`),
//! ported as scenarios — our own code, their topology, policies and
//! expected truth tables. The cases themselves are data in
//! `strait_policy::e2e`, shared with the lab's suite (`strait lab policy
//! matrix` against real connections, `crates/strait/tests/lab_policy.rs`).
//!
//! The topology is upstream's model: namespaces x, y, z (upstream adds a
//! generated prefix; here they are the plain names) labelled `ns=<name>`
//! plus `kubernetes.io/metadata.name`, each with pods a, b, c labelled
//! `pod=<name>`, each pod serving ports 80 and 81 over TCP, UDP and SCTP in
//! containers whose ports are named as upstream names them
//! (`serve-80-tcp`, …). Upstream's newer cases create only the pods a case
//! needs; these run every case on the whole 3 × 3 topology, with the
//! expectations of upstream's full-topology version of each case.
//!
//! Expected reachability is written the upstream way: a default for every
//! pair, then `expect`, `expect_all_ingress`, `expect_all_egress` and
//! `expect_peer` overrides, in order. [`check`] is generic over how the
//! matrix is computed: the reference reading ([`semantics::matrix`]) and
//! the planner's traced matrix (`plan::traced_matrix`).
//!
//! Expectations that depend on a choice the API leaves to implementations:
//!
//! - Loopback (a pod to its own address). Upstream ignores these cells
//!   (kubernetes#95879: plugins differ). Here they are compared and follow
//!   the upstream expectation, which is the reference reading's: the pod's
//!   own policies judge it like any other connection. A kernel data path
//!   may never see such a packet (it stays inside the pod's network
//!   namespace); a reading that allows loopback fails only those cells, and
//!   [`check`] marks them "loopback".
//! - ipBlock matching pod addresses (the three CIDR cases): the API leaves
//!   it open for traffic whose addresses are rewritten; between pods, as
//!   here, upstream expects the block to apply, and so does strait.

use std::sync::Arc;

use strait_model::k8s_openapi::api::core::v1::Pod;
use strait_model::{parse_str, ClusterState, CompactPod, Format, Kind, Object, ObjectKey};
use strait_policy::e2e::{
    all_pods, any, np, ns, t, Action, Case, Event, Reach, NAMESPACES, PODS, PORTS, PROTOCOLS,
};
use strait_policy::{semantics, Matrix, Protocol};

use Protocol::{Tcp, Udp};

/// The upstream cases with this topology's addresses.
fn cases() -> Vec<Case> {
    strait_policy::e2e::cases(&ip)
}

// ---------------------------------------------------------------------------
// The topology

/// Where pod `ns/pod` lives: pods alternate between two nodes, each with its
/// own /24 of 10.244.0.0/16, as the lab's nodes do.
fn placement(ns: &str, pod: &str) -> (String, String) {
    let n = NAMESPACES.iter().position(|x| *x == ns).unwrap_or(0);
    let p = PODS.iter().position(|x| *x == pod).unwrap_or(0);
    let index = n * PODS.len() + p;
    let node = index % 2 + 1;
    (
        format!("node-{node}"),
        format!("10.244.{node}.{}", 10 + index),
    )
}

fn ip(pod: &str) -> String {
    let (ns, name) = pod.split_once('/').expect("ns/pod");
    placement(ns, name).1
}

/// Upstream's model as manifests: nodes, namespaces, pods with their
/// containers and addresses.
fn topology_yaml() -> String {
    let mut docs = Vec::new();
    for node in [1, 2] {
        docs.push(format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: node-{node}}}\nspec: {{podCIDR: 10.244.{node}.0/24, podCIDRs: [10.244.{node}.0/24]}}\nstatus:\n  addresses: [{{type: InternalIP, address: 192.168.50.{node}}}]\n"
        ));
    }
    for ns in NAMESPACES {
        docs.push(format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: \"{ns}\"\n  labels: {{ns: \"{ns}\"}}\n"
        ));
        for pod in PODS {
            docs.push(pod_yaml(ns, pod, |port| port));
        }
    }
    docs.join("---\n")
}

/// Pod `ns/pod` as upstream's model makes it: one container per port and
/// protocol, its port named `serve-<port>-<protocol>`. `number` maps the
/// port a name stands for to the port the container serves it on (upstream:
/// the same number).
fn pod_yaml(ns: &str, pod: &str, number: impl Fn(u16) -> u16) -> String {
    let (node, ip) = placement(ns, pod);
    let mut containers = String::new();
    for port in PORTS {
        for protocol in PROTOCOLS {
            let p = protocol.as_str();
            let l = p.to_ascii_lowercase();
            let served = number(port);
            containers.push_str(&format!(
                "  - name: cont-{port}-{l}\n    image: agnhost\n    ports: [{{containerPort: {served}, name: serve-{port}-{l}, protocol: {p}}}]\n"
            ));
        }
    }
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: \"{ns}\"\n  labels: {{pod: {pod}}}\nspec:\n  nodeName: {node}\n  containers:\n{containers}status:\n  phase: Running\n  podIP: {ip}\n  podIPs: [{{ip: {ip}}}]\n  conditions: [{{type: Ready, status: \"True\"}}]\n"
    )
}

/// Objects of YAML text, admitted as `strait render -f` admits them.
fn objects(text: &str) -> Vec<Object> {
    parse_str("case.yaml", text, Format::Yaml)
        .unwrap_or_else(|e| panic!("the case's manifests are refused: {e}"))
        .objects
        .into_iter()
        .map(|(o, _)| o)
        .collect()
}

fn topology() -> ClusterState {
    ClusterState::from_objects(objects(&topology_yaml()).into_iter().map(|o| (o, None)))
        .expect("the topology loads")
}

fn act(state: &mut ClusterState, action: &Action) {
    match action {
        Action::Apply(yaml) => {
            for o in objects(yaml) {
                state.insert(o);
            }
        }
        Action::DeletePolicies => {
            let keys: Vec<ObjectKey> = state
                .network_policies
                .iter()
                .map(|p| {
                    ObjectKey::new(
                        Kind::NetworkPolicy,
                        p.metadata.namespace.clone().unwrap_or_default(),
                        p.metadata.name.clone().unwrap_or_default(),
                    )
                })
                .collect();
            for key in keys {
                state.remove(&key);
            }
        }
        Action::LabelNamespace(name, k, v) => {
            let mut ns = (**state.namespaces.get("", name).expect("namespace")).clone();
            ns.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(k.to_string(), v.to_string());
            state.insert(Object::Namespace(Arc::new(ns)));
        }
        Action::LabelPod(namespace, name, labels) => {
            let mut p: Pod = state
                .pods
                .get(namespace, name)
                .expect("pod")
                .to_pod()
                .expect("pod reads back");
            let l = p.metadata.labels.get_or_insert_with(Default::default);
            for (k, v) in labels {
                l.insert(k.to_string(), v.to_string());
            }
            state.insert(Object::Pod(Arc::new(CompactPod::new(p))));
        }
    }
}

/// Run `case` from a fresh topology; each probe's matrix comes from
/// `compute`. Returns what failed, one line per wrong cell (with the
/// expected and computed tables), empty when the case passes.
fn check(
    case: &Case,
    compute: impl Fn(&ClusterState, &[u16], &[Protocol]) -> Matrix,
) -> Vec<String> {
    let mut state = topology();
    let mut failures = Vec::new();
    let mut probe = 0;
    for event in &case.events {
        match event {
            Event::Act(a) => act(&mut state, a),
            Event::Probe(port, protocol, reach) => {
                probe += 1;
                let computed = compute(&state, &[*port], &[*protocol]);
                let expected = expected_matrix(&computed, reach, *port, *protocol);
                let names: Vec<String> = computed.pods.iter().map(ToString::to_string).collect();
                if names != all_pods() {
                    failures.push(format!(
                        "probe {probe} ({}/{port}): the matrix has pods {names:?}",
                        protocol.as_str()
                    ));
                    continue;
                }
                let diff = expected.differences(&computed);
                if !diff.is_empty() {
                    for d in &diff {
                        // Loopback is compared, but said to be loopback:
                        // upstream ignores these cells (see the module doc).
                        let note = if d.from == d.to {
                            " (loopback: upstream ignores it)"
                        } else {
                            ""
                        };
                        failures.push(format!("probe {probe}: expected vs computed: {d}{note}"));
                    }
                    failures.push(format!(
                        "probe {probe} expected:\n{}computed:\n{}",
                        expected.to_text(),
                        computed.to_text()
                    ));
                }
            }
        }
    }
    failures
}

fn expected_matrix(like: &Matrix, reach: &Reach, port: u16, protocol: Protocol) -> Matrix {
    let mut m = Matrix {
        pods: like.pods.clone(),
        cells: Vec::new(),
    };
    for ((from, to), allowed) in &reach.expected {
        m.cells.push(strait_policy::Cell {
            from: from.clone(),
            to: to.clone(),
            port,
            protocol,
            allowed: *allowed,
        });
    }
    m
}

/// strait's own cases beyond upstream's: what users of other plugins report
/// broken (named ports mapped differently per pod, `endPort` ignored).
fn strait_cases() -> Vec<Case> {
    vec![
        Case::new("strait: endPort opens the range, and only the range")
            .apply(np("x", "allow-81-to-90", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]\ningress: [{ports: [{port: 81, endPort: 90}]}]"))
            .probe(80, Tcp, t().expect_all_ingress("x/a", false))
            .probe(81, Tcp, t())
            .probe(81, Udp, t().expect_all_ingress("x/a", false)),
        // x/b serves the port named serve-80-tcp on 81 and serve-81-tcp on
        // 80: the name resolves per destination pod.
        Case::new("strait: a named port resolves on each destination pod")
            .apply(pod_yaml("x", "b", |port| if port == 80 { 81 } else { 80 }))
            .apply(np("x", "allow-serve-80-tcp", "podSelector: {}\npolicyTypes: [Ingress]\ningress: [{ports: [{port: serve-80-tcp}]}]"))
            .probe(80, Tcp, t().expect_all_ingress("x/b", false))
            .probe(81, Tcp, t().expect_peer(any(), ns("x"), false).expect_all_ingress("x/b", true)),
        Case::new("strait: a named egress port resolves on each destination pod")
            .apply(pod_yaml("y", "b", |port| if port == 80 { 81 } else { 80 }))
            .apply(np("x", "egress-serve-80-tcp", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress: [{ports: [{port: serve-80-tcp, protocol: TCP}]}]"))
            .probe(80, Tcp, t().expect("x/a", "y/b", false))
            .probe(81, Tcp, t().expect_all_egress("x/a", false).expect("x/a", "y/b", true)),
    ]
}

/// Runs every case with `compute`, prints each case's outcome (every
/// failure in full) and fails naming the cases that failed.
fn run_all(
    reading: &str,
    cases: Vec<Case>,
    compute: impl Fn(&ClusterState, &[u16], &[Protocol]) -> Matrix,
) {
    let mut failed = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let failures = check(case, &compute);
        if failures.is_empty() {
            println!("ok   {:2} {}", i + 1, case.name);
        } else {
            println!("FAIL {:2} {}", i + 1, case.name);
            for f in &failures {
                println!("       {f}");
            }
            failed.push(case.name.as_str());
        }
    }
    println!(
        "{reading}: {} of {} cases pass",
        cases.len() - failed.len(),
        cases.len()
    );
    assert!(failed.is_empty(), "{reading}: failing cases: {failed:#?}");
}

#[test]
fn upstream_cases_hold_for_the_reference_reading() {
    run_all("reference reading", cases(), semantics::matrix);
}

#[test]
fn strait_cases_hold_for_the_reference_reading() {
    run_all("reference reading", strait_cases(), semantics::matrix);
}

#[test]
fn upstream_cases_hold_for_the_traced_plan() {
    let all = cases().into_iter().chain(strait_cases()).collect();
    run_all("traced plan", all, |state, ports, protocols| {
        // An error fails the probe (an empty matrix), not the run: every
        // case is still tried and reported.
        strait_policy::plan::traced_matrix(state, ports, protocols).unwrap_or_else(|e| {
            println!("       traced_matrix failed: {e}");
            Matrix::default()
        })
    });
}

/// Every upstream traffic case is here: 42 of the main suite, 3 over UDP,
/// 3 over SCTP (network_policy_api.go's cases test the API, not traffic:
/// their admission checks are in strait-model's validation tests).
#[test]
fn the_case_list_is_complete_and_names_are_unique() {
    let cases = cases();
    assert_eq!(cases.len(), 48);
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len());
    assert!(cases
        .iter()
        .all(|c| c.events.iter().any(|e| matches!(e, Event::Probe(..)))));
}

/// `check` can fail: a wrong expectation is reported, cell by cell.
#[test]
fn check_reports_a_wrong_expectation() {
    let wrong = Case::new("deny-ingress, expected open")
        .apply(np(
            "x",
            "deny-ingress",
            "podSelector: {}\npolicyTypes: [Ingress]\ningress: []",
        ))
        .probe(80, Tcp, t());
    let failures = check(&wrong, semantics::matrix);
    // 9 sources × 3 pods of x, plus the two tables.
    assert_eq!(failures.len(), 28, "{failures:#?}");
    assert!(
        failures[0].contains("x/a -> x/a TCP/80: allowed vs denied"),
        "{}",
        failures[0]
    );
}

#[test]
fn the_topology_is_upstreams_model() {
    let state = topology();
    let m = semantics::matrix(&state, &[80], &[Tcp]);
    assert_eq!(
        m.pods.iter().map(ToString::to_string).collect::<Vec<_>>(),
        all_pods()
    );
    let y = state.namespaces.get("", "y").expect("namespace y");
    let labels = y.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("ns").map(String::as_str), Some("y"));
    assert_eq!(
        labels
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("y")
    );
    let b = state.pods.get("z", "b").expect("pod z/b");
    assert_eq!(
        b.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod"))
            .map(String::as_str),
        Some("b")
    );
    assert_eq!(b.container_port_by_name("serve-81-udp", "UDP"), Some(81));
    assert_eq!(b.container_port_by_name("serve-81-udp", "TCP"), None);
    assert_eq!(b.pod_ip(), Some(ip("z/b").as_str()));
    // With no policy, everything is open.
    assert!(m.cells.iter().all(|c| c.allowed));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// One random NetworkPolicy spec of the forms the API allows.
    fn spec() -> impl Strategy<Value = String> {
        let selector = prop_oneof![
            Just("{}".to_owned()),
            Just("{matchLabels: {pod: a}}".to_owned()),
            Just("{matchExpressions: [{key: pod, operator: NotIn, values: [b]}]}".to_owned()),
        ];
        let peer = prop_oneof![
            Just("{podSelector: {matchLabels: {pod: b}}}".to_owned()),
            Just("{namespaceSelector: {matchLabels: {ns: z}}}".to_owned()),
            Just("{namespaceSelector: {}, podSelector: {matchLabels: {pod: c}}}".to_owned()),
            Just(format!(
                "{{ipBlock: {{cidr: 10.244.0.0/16, except: [{}/32]}}}}",
                ip("y/a")
            )),
        ];
        let port = prop_oneof![
            Just("{port: 80}".to_owned()),
            Just("{port: 81, protocol: UDP}".to_owned()),
            Just("{port: serve-81-tcp}".to_owned()),
            Just("{port: 80, endPort: 81, protocol: SCTP}".to_owned()),
            Just("{protocol: UDP}".to_owned()),
        ];
        let rule = (
            proptest::collection::vec(peer, 0..3),
            proptest::collection::vec(port, 0..3),
        );
        let types = prop_oneof![
            Just("[Ingress]"),
            Just("[Egress]"),
            Just("[Ingress, Egress]"),
        ];
        (selector, types, proptest::collection::vec(rule, 0..3)).prop_map(|(sel, types, rules)| {
            // The same rules read for each direction: `from` for ingress,
            // `to` for egress.
            let direction = |peers_field: &str| -> String {
                let rules: Vec<String> = rules
                    .iter()
                    .map(|(peers, ports)| {
                        format!(
                            "{{{peers_field}: [{}], ports: [{}]}}",
                            peers.join(", "),
                            ports.join(", ")
                        )
                    })
                    .collect();
                format!("[{}]", rules.join(", "))
            };
            format!(
                "podSelector: {sel}\npolicyTypes: {types}\ningress: {}\negress: {}",
                direction("from"),
                direction("to")
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// A policy governs the pods of its own namespace only: cells with
        /// neither end in x keep their answer (open, with no other policy).
        #[test]
        fn a_policy_governs_only_its_own_namespace(spec in spec()) {
            let mut state = topology();
            act(&mut state, &Action::Apply(np("x", "random", &spec)));
            let m = semantics::matrix(&state, &PORTS, &PROTOCOLS);
            for c in &m.cells {
                if !c.from.starts_with("x/") && !c.to.starts_with("x/") {
                    prop_assert!(c.allowed, "{spec}\n{c:?}");
                }
            }
        }

        /// Rules add up: an allow-all policy beside any policies opens
        /// everything again, whatever the others isolate.
        #[test]
        fn an_allow_all_policy_beside_any_others_opens_everything(specs in proptest::collection::vec(spec(), 1..4)) {
            let mut state = topology();
            for (i, spec) in specs.iter().enumerate() {
                let namespace = NAMESPACES[i % NAMESPACES.len()];
                act(&mut state, &Action::Apply(np(namespace, &format!("random-{i}"), spec)));
            }
            for namespace in NAMESPACES {
                act(&mut state, &Action::Apply(np(namespace, "allow-all", "podSelector: {}\npolicyTypes: [Ingress, Egress]\ningress: [{}]\negress: [{}]")));
            }
            let m = semantics::matrix(&state, &PORTS, &PROTOCOLS);
            prop_assert!(m.cells.iter().all(|c| c.allowed), "{specs:#?}");
        }
    }
}
